#!/bin/sh
# Expert parallelism over MPI: tests/ep_mpi.c under mpirun with 1 to 4
# ranks (oversubscribed: more ranks than cores is fine, each rank is mostly
# waiting on lavapipe). Skips (77) when mpirun is missing.
# Then `moevk run --expert-parallel` on checkpoint fixtures writes the file
# the single process writes with --batch-invariant, and `moevk bench
# --expert-parallel` reports every rank.
# usage: test_ep_mpi.sh EP_MPI_EXE [MOEVK_EXE FIXTURES_DIR]
exe=$1
moevk=${2:-}
fixtures=${3:-}
command -v mpirun >/dev/null 2>&1 || { echo "mpirun not found: skipped"; exit 77; }
# Open MPI refuses to run as root without these
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# one node, shared memory: no network interfaces probed
export OMPI_MCA_btl=self,vader OMPI_MCA_plm_rsh_agent=
# Under the sanitizer pass: Open MPI's runtime keeps allocations until exit
# whose stacks LeakSanitizer cannot unwind (no module to suppress), so leak
# detection is off for the MPI ranks here; ASan and UBSan still check every
# access, and the ep suite checks the expert-parallel layer for leaks over
# the thread transport.
if [ -n "${ASAN_OPTIONS:-}" ]; then
    export ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0"
fi
for R in 1 2 3 4; do
    timeout 120 mpirun --oversubscribe --allow-run-as-root -np "$R" "$exe"
    rc=$?
    [ "$rc" -eq 77 ] && exit 77
    [ "$rc" -eq 0 ] || { echo "test_ep_mpi: $R ranks failed (exit $rc)"; exit 1; }
done

[ -n "$moevk" ] || exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for arch in mixtral deepseek_v3; do
    m=$fixtures/$arch
    "$moevk" run --model "$m" --layer 0 --input "$m/x.safetensors" --output "$tmp/y1.st" \
        --batch-invariant >"$tmp/log" 2>&1 || { cat "$tmp/log"; echo "test_ep_mpi: $arch: single run failed"; exit 1; }
    for R in 2 4; do
        timeout 120 mpirun --oversubscribe --allow-run-as-root -np "$R" "$moevk" run --model "$m" \
            --layer 0 --input "$m/x.safetensors" --output "$tmp/y$R.st" --expert-parallel \
            >"$tmp/log" 2>&1 || { cat "$tmp/log"; echo "test_ep_mpi: $arch: $R ranks failed"; exit 1; }
        grep -q "expert parallel over $R MPI ranks" "$tmp/log" || { cat "$tmp/log"; exit 1; }
        cmp "$tmp/y1.st" "$tmp/y$R.st" || { echo "test_ep_mpi: $arch: $R ranks wrote another y"; exit 1; }
    done
    echo "moevk run --expert-parallel $arch: 2 and 4 ranks write the single process's y"
done
timeout 120 mpirun --oversubscribe --allow-run-as-root -np 3 "$moevk" bench --expert-parallel \
    --preset mixtral-8x7b --scale 64 --tokens 8 --iters 2 >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
cat "$tmp/log"
for r in 0 1 2; do
    grep -Eq "^ +$r +[0-9]+\.\.[0-9]+ " "$tmp/log" || { echo "test_ep_mpi: bench: no row of rank $r"; exit 1; }
done
