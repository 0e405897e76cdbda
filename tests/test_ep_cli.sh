#!/bin/sh
# moevk run --expert-parallel --ranks N (ranks as threads, no MPI) writes the
# file the single process writes with --batch-invariant, for checkpoint
# fixtures and 1 to 3 ranks, under the validation layer; moevk bench
# --expert-parallel --ranks N reports every rank; bad uses are refused.
# usage: test_ep_cli.sh MOEVK_EXE FIXTURES_DIR
moevk=$1
fixtures=$2
fail() { echo "test_ep_cli: $*"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for arch in mixtral deepseek_v3 qwen2_moe; do
    m=$fixtures/$arch
    "$moevk" run --model "$m" --layer 0 --input "$m/x.safetensors" --output "$tmp/y1.st" \
        --batch-invariant >"$tmp/log" 2>&1 || { cat "$tmp/log"; fail "$arch: single run failed"; }
    for R in 1 2 3; do
        "$moevk" run --model "$m" --layer 0 --input "$m/x.safetensors" --output "$tmp/y$R.st" \
            --stats "$tmp/s$R.json" --expert-parallel --ranks "$R" --validate >"$tmp/log" 2>&1 ||
            { cat "$tmp/log"; fail "$arch: $R thread ranks failed"; }
        grep -q "expert parallel over $R threads" "$tmp/log" || { cat "$tmp/log"; fail "$arch: no rank count"; }
        cmp "$tmp/y1.st" "$tmp/y$R.st" || fail "$arch: $R thread ranks wrote another y"
    done
    # the statistics of the whole pass, whatever the ranks: counts exactly,
    # the losses (sums of per-rank partial sums in double) within 1e-12
    for R in 1 3; do grep -v '_loss\|_entropy' "$tmp/s$R.json" >"$tmp/c$R"; done
    cmp "$tmp/c1" "$tmp/c3" || fail "$arch: the counts differ between 1 and 3 ranks"
    for key in load_balancing_loss router_z_loss routing_entropy; do
        a=$(grep "\"$key\"" "$tmp/s1.json" | sed 's/.*:[[:space:]]*//; s/,$//')
        b=$(grep "\"$key\"" "$tmp/s3.json" | sed 's/.*:[[:space:]]*//; s/,$//')
        [ -n "$a" ] && [ -n "$b" ] || fail "$arch: no $key in the statistics"
        awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a + 0 != 0 && d <= 1e-12 * (a < 0 ? -a : a)) }' ||
            fail "$arch: $key $a on 1 rank, $b on 3"
    done
    echo "moevk run --expert-parallel --ranks 1..3 $arch: the single process's y"
done
"$moevk" bench --expert-parallel --ranks 3 --preset mixtral-8x7b --scale 64 --tokens 8 --iters 2 \
    >"$tmp/log" 2>&1 || { cat "$tmp/log"; fail "bench failed"; }
cat "$tmp/log"
for r in 0 1 2; do
    grep -Eq "^ +$r +[0-9]+\.\.[0-9]+ " "$tmp/log" || fail "bench: no row of rank $r"
done
m=$fixtures/mixtral
for bad in "--ranks 2" "--expert-parallel --ranks 0" "--expert-parallel --backend cpu" "--expert-parallel --check"; do
    # shellcheck disable=SC2086
    "$moevk" run --model "$m" --layer 0 --input "$m/x.safetensors" $bad >"$tmp/log" 2>&1
    [ $? -eq 2 ] || { cat "$tmp/log"; fail "run $bad was not refused"; }
done
echo "test_ep_cli: ok"
