#!/usr/bin/env python3
"""Print the closing line of a test run from meson's testlog.json.

Counts the Criterion test cases inside each test program (from its
"Synthesis" line; skipped ones from their [SKIP] lines, as the tests run
with --verbose; the ones --filter leaves to another test program say
"Test is disabled" and are not counted) as well as the non-Criterion tests,
and prints
`N passed, M failed, K skipped` (one failure when there is no log: the
run never started).
"""
import json
import re
import sys

passed = failed = skipped = 0
synth = re.compile(r"Synthesis: Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) \| Crashing: (\d+)")
try:
    f = open(sys.argv[1])
except OSError as e:  # the run never started (a failed build): one failure
    print(f"0 passed, 1 failed, 0 skipped (no test log: {e.strerror})")
    sys.exit(0)
with f:
    for line in f:
        t = json.loads(line)
        out = (t.get("stdout") or "") + (t.get("stderr") or "")
        m = synth.search(out)
        # a test another program runs (--filter) shows as "disabled": not a skip
        skips = len(re.findall(r"^\[SKIP\](?!.*: Test is disabled$)", out, re.M))
        if m:
            tested, passing, failing, crashing = map(int, m.groups())
            passed += passing  # Criterion leaves skipped tests out of "Tested"/"Passing"
            skipped += skips
            failed += failing  # Criterion's "Failing" already counts the crashed ones
            if t["result"] not in ("OK", "SKIP") and failing == 0:
                failed += 1  # the program itself failed (timeout, crash at exit)
        elif t["result"] == "OK":
            passed += 1
        elif t["result"] == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
