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

out=$("$moevk" check --against cuda --cases 2) || fail "check --against cuda: $out"
echo "$out" | grep -Eq "^(2 passed, 0 failed|0 passed, 0 failed, 2 skipped)$" ||
    fail "check --against cuda summary: $out"

out=$("$moevk" demo --preset qwen3-30b-a3b --scale 16 --tokens 9 --runs 2 --validate) ||
    fail "demo: $out"
echo "$out" | grep -q "^OK$" || fail "demo: $out"
echo "$out" | grep -q "experts_up" || fail "demo prints no stage times: $out"

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

# A layer too large for the device: 1024 experts of 8192 x 4096 bf16 matrices
# (192 GiB; each matrix within a 128 MiB storage buffer range). Not a preset:
# lavapipe's device memory is the host's, and Mesa 25 reports all of it (a
# deepseek-v3 layer, 21 GiB, "fits" a 24 GiB machine there, and then does not).
mem=$("$moevk" info | sed -n 's/^  device-local memory *\([0-9]*\).*/\1/p' | head -n 1)
if [ -n "$mem" ] && [ "$mem" -lt 150 ]; then
    out=$("$moevk" bench --custom 8192,4096,1024,8 --tokens 1 --no-ceilings 2>"$tmp/err") ||
        fail "bench of a layer that does not fit: $(cat "$tmp/err")"
    echo "$out" | grep -q "does not fit: needs 192.03 GiB, the device has .* GiB" ||
        fail "a layer too large for the device: $out"
else
    echo "skipped: the does-not-fit bench (the device reports ${mem:-no} GiB, a 192 GiB layer could fit)"
fi

# a usage error exits 2 (not 0, and not a sanitizer's status: a leak on the
# error path fails here too)
rc=0
"$moevk" bench --tokens 0 >/dev/null 2>&1 || rc=$?
[ $rc -eq 2 ] || fail "bench --tokens 0 exited $rc, not 2"
rc=0
"$moevk" check --against gpu >/dev/null 2>&1 || rc=$?
[ $rc -eq 2 ] || fail "check --against gpu exited $rc, not 2"
echo "ok"
