#!/bin/sh
# The command-line tool end to end: check, demo, bench (every output format,
# and a preset that does not fit), with the validation layer where offered.
# MOEVK_TEST_CASES_SCALE (a factor, default 1) scales the 12 random cases of
# `moevk check` (the sanitizer pass runs fewer).
# usage: test_cli.sh MOEVK_BINARY
set -eu
moevk=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

cases=$(awk -v f="${MOEVK_TEST_CASES_SCALE:-1}" \
    'BEGIN { if (!(f > 0 && f <= 100)) f = 1; n = int(12 * f + 0.5); print n < 1 ? 1 : n }')
out=$("$moevk" check --against cpu --cases "$cases" --seed 77 --validate) || fail "check: $out"
echo "$out" | tail -n 1 | grep -qx "$cases passed, 0 failed" || fail "check summary: $out"

# any backend of the table goes through the same harness: the reference
# against itself, and an unknown name refused
out=$("$moevk" check --backend cpu --against cpu --cases 3 --seed 5) ||
    fail "check --backend cpu: $out"
echo "$out" | tail -n 1 | grep -qx "3 passed, 0 failed" || fail "check --backend cpu summary: $out"
# --digest: a case's output bits; a rerun gives the same digests, and
# another case a different one
d1=$("$moevk" check --against cpu --cases 3 --seed 41 --digest) || fail "check --digest: $d1"
d2=$("$moevk" check --against cpu --cases 3 --seed 41 --digest) || fail "check --digest: $d2"
[ "$(echo "$d1" | grep -c '^digest seed ')" -eq 3 ] || fail "check --digest: not one per case: $d1"
[ "$(echo "$d1" | grep '^digest')" = "$(echo "$d2" | grep '^digest')" ] ||
    fail "check --digest differs between two runs: $d1 / $d2"
[ "$(echo "$d1" | grep '^digest seed ' | awk '{print $4}' | sort -u | wc -l)" -eq 3 ] ||
    fail "check --digest: cases of other seeds share a digest: $d1"
"$moevk" check --against cpu --backend nosuch >/dev/null 2>&1 &&
    fail "check accepted an unknown backend"
# --routing: every case in that mode (the verbose rows say it); a name that
# is not a mode refused
out=$("$moevk" check --against cpu --routing sparsemixer --cases 3 --seed 11 --verbose) ||
    fail "check --routing sparsemixer: $out"
[ "$(echo "$out" | grep -c '^ok .* sparsemixer(')" -eq 3 ] ||
    fail "check --routing sparsemixer: not every case in the mode: $out"
"$moevk" check --against cpu --routing topk >/dev/null 2>&1 &&
    fail "check accepted an unknown routing mode"
"$moevk" help | grep -q "^  cuda-cublas-f32 " || fail "moevk help lists no backends"

out=$("$moevk" check --against cuda --cases 2) || fail "check --against cuda: $out"
echo "$out" | grep -Eq "^(2 passed, 0 failed|0 passed, 0 failed, 2 skipped)$" ||
    fail "check --against cuda summary: $out"

out=$("$moevk" demo --preset qwen3-30b-a3b --scale 16 --tokens 9 --runs 2 --validate) ||
    fail "demo: $out"
echo "$out" | grep -q "^OK$" || fail "demo: $out"
echo "$out" | grep -q "experts_up" || fail "demo prints no stage times: $out"
# a block format: the rows of qwen3-30b-a3b at 1/16 (H = 128, F = 48) are
# no whole q4_k blocks: llama.cpp's fallback q5_0 for gate/up, f16 for down
out=$("$moevk" demo --preset qwen3-30b-a3b --scale 16 --tokens 5 --runs 1 --dtype q4_k --validate) ||
    fail "demo --dtype q4_k: $out"
echo "$out" | grep -q "^OK$" || fail "demo --dtype q4_k: $out"
echo "$out" | grep -q "q5_0 gate/up, f16 down weights" || fail "demo --dtype q4_k formats: $out"
out=$("$moevk" demo --preset mixtral-8x7b --scale 8 --tokens 3 --runs 1 --dtype mxfp4) ||
    fail "demo --dtype mxfp4: $out"
echo "$out" | grep -q "mxfp4 weights" || fail "demo --dtype mxfp4 formats: $out"
echo "$out" | grep -q "4.25 bits a weight" || fail "demo --dtype mxfp4 packed size: $out"
echo "$out" | grep -q "same dequantised mxfp4 weights" || fail "demo --dtype mxfp4 check: $out"
"$moevk" demo --dtype q4_k_m >/dev/null 2>"$tmp/err" && fail "demo accepted --dtype q4_k_m"
grep -q "unknown dtype 'q4_k_m'" "$tmp/err" || fail "demo --dtype q4_k_m: $(cat "$tmp/err")"
# a device-memory budget: half the experts on the device, checked against the
# reference; the budget curve of bench, its table, JSON and SVG
out=$("$moevk" demo --preset qwen3-30b-a3b --scale 16 --tokens 9 --runs 3 --dtype q4_k \
    --vram-budget 25% --validate) || fail "demo --vram-budget: $out"
echo "$out" | grep -q "^OK$" || fail "demo --vram-budget: $out"
echo "$out" | grep -Eq "^budget .*: 32 device slots for 128 experts" || fail "demo budget line: $out"
"$moevk" demo --vram-budget 120% >/dev/null 2>"$tmp/err" && fail "demo took a budget of 120%"
grep -q "a percentage is at most 100%" "$tmp/err" || fail "demo --vram-budget 120%: $(cat "$tmp/err")"
"$moevk" demo --vram-budget 3Q >/dev/null 2>"$tmp/err" && fail "demo took a budget of 3Q"
grep -q "unknown unit 'Q'" "$tmp/err" || fail "demo --vram-budget 3Q: $(cat "$tmp/err")"
out=$("$moevk" bench --preset olmoe-1b-7b --scale 32 --tokens 1,8 --dtype q4_0 --dist zipf \
    --vram-budget 0,25%,100% --runs 2 --warmup 2 --no-ceilings --json "$tmp/b.json" \
    --plot "$tmp/b.svg" 2>/dev/null) || fail "bench --vram-budget: $out"
echo "$out" | grep -q "^throughput against the device-memory budget" || fail "bench budget table: $out"
[ "$(echo "$out" | grep -Ec "^olmoe-1b-7b +vulkan +q4_0 +zipf +[18] +(0|25%|100%) ")" -eq 6 ] ||
    fail "bench budget rows: $out"
grep -q '"vram_budget": {"asked": "25%"' "$tmp/b.json" || fail "bench budget JSON: $(cat "$tmp/b.json")"
grep -q "throughput against the experts' device-memory budget" "$tmp/b.svg" ||
    fail "bench budget SVG"
# the fit check at every format, at the real shapes, running nothing
out=$("$moevk" bench --fit --preset deepseek-v3 --dtype q4_k --device-memory 24 --tokens 1) ||
    fail "bench --fit: $out"
echo "$out" | grep -q "deepseek-v3 .* q4_k 5.94 GiB (4), bf16 21.09 GiB (1)," ||
    fail "bench --fit figures: $out"
"$moevk" bench --dtype q4_k,nosuch --fit >/dev/null 2>"$tmp/err" && fail "bench took nosuch"
grep -q "unknown dtype 'nosuch' (f32|f16|bf16|q8_0|" "$tmp/err" ||
    fail "bench --dtype nosuch: $(cat "$tmp/err")"
"$moevk" bench --fit --tokens 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17 >/dev/null 2>"$tmp/err" &&
    fail "bench took 17 token counts"
grep -q "more than 16 items" "$tmp/err" || fail "bench list overflow: $(cat "$tmp/err")"
# `moevk check` draws block formats among its cases
out=$("$moevk" check --against cpu --cases 6 --seed 128 --verbose) || fail "check formats: $out"
echo "$out" | grep -Eq " w=(q[0-9]|iq4|mxfp4)[^ ]*/" || fail "check drew no block format: $out"

out=$("$moevk" demo --backend cpu --preset olmoe-1b-7b --scale 32 --tokens 3 --runs 1) ||
    fail "demo --backend cpu: $out"
echo "$out" | grep -q "^OK$" || fail "demo --backend cpu: $out"

"$moevk" bench --custom 64,48,8,2 --preset switch-base-128 --scale 8 --tokens 1,7 --runs 2 \
    --warmup 1 --dist router,uniform,one --backend vulkan,cpu \
    --json "$tmp/b.json" --csv "$tmp/b.csv" --plot "$tmp/b.svg" >"$tmp/table" 2>"$tmp/err" ||
    fail "bench: $(cat "$tmp/err")"
python3 - "$tmp/b.json" <<'PY' || fail "bench JSON"
import json, sys
d = json.load(open(sys.argv[1]))
rows = d["rows"]
ok = [r for r in rows if r["ok"]]
assert len(rows) == 2 * 3 * 2 * 2, len(rows)
assert len(ok) >= 8, [r.get("note") for r in rows if not r["ok"]]
for r in ok:
    assert r["ms"] > 0 and r["bytes"] > 0 and r["flops"] > 0, r
    if r["backend"] == "vulkan":
        assert abs(sum(r["stage_ms"].values()) - r["ms"]) <= 1e-3 * r["ms"] + 1e-3, r
    if r["routing"] == "one":
        assert r["experts_touched"] == r["k"], r
PY
[ "$(wc -l <"$tmp/b.csv")" -eq 25 ] || fail "bench CSV rows"
grep -q "</svg>" "$tmp/b.svg" || fail "bench SVG"
grep -q "Fraction of the floor" "$tmp/b.svg" || fail "bench SVG content"

# The fit check, with the memory sizes given (so that no answer depends on
# this machine): deepseek-v3's routed experts are 21.0 GiB in bf16, for the
# host copy of the weights and again for the device copy.
bench_fit() {
    "$moevk" bench --preset deepseek-v3 --tokens 1 --no-ceilings --runs 1 --warmup 0 "$@" \
        2>"$tmp/err"
}
out=$(bench_fit --host-memory 16 --device-memory 1000) || fail "bench: $(cat "$tmp/err")"
echo "$out" | grep -Eq "does not fit: needs 21\.[0-9]+ GiB of system RAM for the host copy of the weights, 16\.00 GiB available" ||
    fail "the host copy of a preset too large for system RAM: $out"
out=$(bench_fit --host-memory 1000 --device-memory 16) || fail "bench: $(cat "$tmp/err")"
echo "$out" | grep -Eq "does not fit: needs 21\.[0-9]+ GiB of device memory, the device has 16\.00 GiB" ||
    fail "a preset too large for the device: $out"
# 30 GiB holds one copy but not two: a device whose memory is system RAM
# (lavapipe, an integrated GPU) cannot take it; any other device could, so
# that case is left to a CPU device (0.1 GiB of weights: it would run).
type=$("$moevk" info | sed -n 's/^  type  *//p' | head -n 1)
if [ "$type" = CPU ] || [ "$type" = "integrated GPU" ]; then
    out=$(bench_fit --host-memory 30 --device-memory 1000 --device 0) ||
        fail "bench: $(cat "$tmp/err")"
    echo "$out" | grep -Eq "does not fit: needs 42\.[0-9]+ GiB of system RAM \(host copy 21\.[0-9]+ \+ device copy 21\.[0-9]+ GiB: (a CPU device|an integrated GPU) shares it\), 30\.00 GiB available" ||
        fail "host and device copies on a device sharing system RAM: $out"
    # copies for the cache are bounded by system RAM too: 0.1 GiB each,
    # 0.45 GiB assumed = 1 host + at most 3 device copies (90%)
    "$moevk" bench --custom 1024,1024,16,2 --tokens 1 --runs 1 --warmup 0 --no-ceilings \
        --device 0 --host-memory 0.45 --device-memory 1000 --json "$tmp/c.json" \
        >/dev/null 2>"$tmp/err" || fail "bench: $(cat "$tmp/err")"
    python3 - "$tmp/c.json" <<'PY' || fail "weight copies on a CPU device"
import json, sys
r = json.load(open(sys.argv[1]))["rows"][0]
assert r["ok"] and r["copies"] == 3, r
PY
fi

# a usage error exits 2 (not 0, and not a sanitizer's status: a leak on the
# error path fails here too)
usage_error() {
    rc=0
    "$moevk" "$@" >/dev/null 2>&1 || rc=$?
    [ $rc -eq 2 ] || fail "moevk $* exited $rc, not 2"
}
usage_error bench --tokens 0
usage_error bench --host-memory 0
usage_error bench --device-memory 2x
usage_error check --against gpu
usage_error bench --vram-budget 5x
echo "ok"
