#!/bin/sh
# Bounded libFuzzer run of the checkpoint parsers (safetensors reader with
# the layer builder, config.json and index parsing, the GGUF reader with its
# block loader) under ASan/UBSan: any crash, leak or sanitizer report fails.
# The targets run in parallel.
# usage: sh fuzz/run.sh [SECONDS per target, default 60]
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}

sh tools/ensure_packages.sh fuzz clang libclang-rt-dev libcjson-dev

build=${MOEVK_FUZZ_BUILD_DIR:-build-fuzz}
if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" -Dfuzz=true -Dbuildtype=debugoptimized >/dev/null
fi
ninja -C "$build" src/fuzz_safetensors src/fuzz_config src/fuzz_gguf >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 fuzz/make_seeds.py "$work/seeds"
status=0
pids=""
for t in safetensors config gguf; do
    mkdir -p "$work/corpus-$t"
    dict=safetensors.dict
    [ "$t" = gguf ] && dict=gguf.dict
    (
        cd "$work"
        "$OLDPWD/$build/src/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            -max_len=65536 -dict="$OLDPWD/fuzz/$dict" -print_final_stats=1 \
            "corpus-$t" "seeds/$t" >"$work/log-$t" 2>&1
    ) &
    pids="$pids $!"
done
i=0
for pid in $pids; do
    i=$((i + 1))
    t=$(echo "safetensors config gguf" | cut -d' ' -f$i)
    if wait "$pid"; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log-$t" | grep -o '[0-9]*$' || echo '?')
        cov=$(grep -o 'cov: [0-9]*' "$work/log-$t" | tail -1 || true)
        echo "fuzz_$t: ${secs}s, $runs inputs, $cov, no crash"
    else
        echo "fuzz_$t: FAILED"
        tail -60 "$work/log-$t"
        mkdir -p "$build/fuzz-artifacts"
        cp "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* \
            "$build/fuzz-artifacts/" 2>/dev/null || true
        status=1
    fi
done
exit $status
