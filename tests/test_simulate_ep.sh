#!/bin/sh
# moevk simulate-ep: the cost model's figures where they are known in
# closed form (uniform routing: a fraction (R-1)/R of the assignments is
# remote; one rank exchanges nothing; DeepSeek-V3's 4 of 8 groups on 8
# ranks of one group each touch at most 4 ranks a token), skew raising the
# imbalance, a capacity dropping, bad options refused.
# usage: test_simulate_ep.sh MOEVK_EXE
exe=$1
fail() { echo "test_simulate_ep: $*"; exit 1; }
out=$("$exe" simulate-ep --preset deepseek-v3,mixtral-8x7b --ranks 1,2,8 --tokens 2048) || fail "run failed"
echo "$out"
row() { echo "$out" | awk -v p="$1" -v r="$2" '$1 == p && $2 == r'; }
row deepseek-v3 1 | awk '{ if ($3 != "0.0%" || $5 != "0.00") exit 1 }' || fail "one rank exchanges"
row mixtral-8x7b 2 | awk '{ v = $3 + 0; if (v < 48.5 || v > 51.5) exit 1 }' || fail "mixtral on 2 ranks: remote not 50 %"
row deepseek-v3 8 | awk '{ v = $3 + 0; if (v < 86.5 || v > 88.5 || $4 > 4.0) exit 1 }' ||
    fail "deepseek-v3 on 8 ranks: remote not 87.5 % or more than 4 ranks a token"
u=$("$exe" simulate-ep --preset qwen3-235b-a22b --ranks 8 --tokens 1024 | awk '$1 == "qwen3-235b-a22b" { print $10 }')
z=$("$exe" simulate-ep --preset qwen3-235b-a22b --ranks 8 --tokens 1024 --dist zipf --skew 1.2 | awk '$1 == "qwen3-235b-a22b" { print $10 }')
awk -v u="$u" -v z="$z" 'BEGIN { if (!(z > u + 0.2)) exit 1 }' || fail "zipf imbalance $z not above uniform $u"
"$exe" simulate-ep --preset switch-base-128 --ranks 4 --tokens 1024 --dist zipf |
    awk '$1 == "switch-base-128" { if ($11 + 0 <= 0) exit 1; found = 1 } END { exit !found }' ||
    fail "capacity 1.25 under skew dropped nothing"
for bad in "--ranks 0" "--ranks 9 --preset mixtral-8x7b" "--preset nope" "--dist normal" "--tokens 0" "--bandwidth -1"; do
    # shellcheck disable=SC2086
    "$exe" simulate-ep $bad >/dev/null 2>&1
    [ $? -eq 2 ] || fail "simulate-ep $bad was not refused"
done
echo "test_simulate_ep: ok"
