#!/bin/sh
# Negative control of the sanitizer pass: the planted leaks of leak_control.c
# must be reported by LeakSanitizer and counted as failed tests by Criterion,
# with the driver-only suppressions and the sanitizer settings of
# tools/sanitize.sh in force, while the same GPU work without a leak passes.
# (Excerpts of the control's output are printed with "Synthesis:" renamed, so
# that tools/test_summary.py counts this test once, as the script's result.)
# usage: leak_control.sh TEST_BINARY
set -u
bin=$1
fail() { echo "FAIL: $*" | sed 's/Synthesis:/its synthesis:/'; exit 1; }
run() {
    out=$("$bin" --jobs 1 --verbose --filter "control/$1" 2>&1)
    rc=$?
}

run gpu_clean
[ $rc -eq 0 ] || fail "gpu_clean (no leak) failed, exit $rc: the suppressions do not cover the driver and layer:
$out"
echo "$out" | grep -q "Synthesis: Tested: 1 | Passing: 1 | Failing: 0 | Crashing: 0" ||
    fail "gpu_clean: $out"
echo "$out" | grep -q "LeakSanitizer" && fail "gpu_clean: a leak report: $out"
echo "control::gpu_clean: passed, no leak report (exit $rc)"

run leaks_64_bytes
[ $rc -ne 0 ] || fail "a planted 64-byte leak passed (exit 0):
$out"
echo "$out" | grep -q "Synthesis: Tested: 1 | Passing: 0 | Failing: 1 | Crashing: 0" ||
    fail "leaks_64_bytes: not counted as one failed test: $out"
echo "$out" | grep -q "Direct leak of 64 byte(s) in 1 object(s)" || fail "leaks_64_bytes: $out"
echo "$out" | grep -Eq "in control_leaks_64_bytes_impl .*leak_control\.c:[0-9]+" ||
    fail "leaks_64_bytes: the report does not name the leaking line: $out"
echo "control::leaks_64_bytes: caught (exit $rc):"
echo "$out" | grep -E "^Direct leak|leak_control\.c|process exited|Synthesis" | sed 's/Synthesis:/its synthesis:/'

run leaks_a_layer_case
[ $rc -ne 0 ] || fail "a leaked layer case passed (exit 0):
$out"
echo "$out" | grep -q "Synthesis: Tested: 1 | Passing: 0 | Failing: 1 | Crashing: 0" ||
    fail "leaks_a_layer_case: not counted as one failed test: $out"
echo "$out" | grep -q "^Direct leak of .* byte(s)" || fail "leaks_a_layer_case: $out"
echo "$out" | grep -Eq "in mvkc_case_random .*harness/case\.c:[0-9]+" ||
    fail "leaks_a_layer_case: the report does not name the generator's allocation: $out"
echo "control::leaks_a_layer_case: caught (exit $rc):"
echo "$out" | grep -E "^(Direct|Indirect) leak" | head -3
echo "$out" | grep -E "process exited|Synthesis" | sed 's/Synthesis:/its synthesis:/'
echo "ok"
