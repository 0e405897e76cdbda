#!/bin/sh
# moevk quick start: installs what is missing (Debian packages), builds, and
#   main  - runs the main job on the best available device (lavapipe when
#           there is no GPU)
#   test  - runs the whole test suite (validation layers on, no device = fail),
#           then again under ASan + UBSan, then a bounded fuzz run of the
#           checkpoint parsers; the last line is "N passed, M failed, K skipped"
# usage: sh tools/quickstart.sh main|test [extra meson test args]
set -eu
cd "$(dirname "$0")/.."
what=${1:-main}
[ $# -gt 0 ] && shift

sh tools/ensure_packages.sh quickstart build-essential pkg-config meson ninja-build python3 glslang-tools spirv-tools \
    libvulkan-dev libvulkan-volk-dev mesa-vulkan-drivers vulkan-validationlayers vulkan-tools \
    libcriterion-dev libcjson-dev

build=${MOEVK_BUILD_DIR:-build}
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Dwerror=true -Drequire_device=true
fi
meson compile -C "$build"

case "$what" in
main)
    "$build/src/moevk" info
    echo
    exec "$build/src/moevk" demo --preset mixtral-8x7b --scale 8 --tokens 64 --dtype bf16 "$@"
    ;;
test)
    status=0
    meson test -C "$build" --print-errorlogs "$@" || status=$?
    summary=$(python3 tools/test_summary.py "$build/meson-logs/testlog.json")
    if [ -z "${MOEVK_SKIP_SANITIZERS:-}" ]; then
        echo "quickstart: the suite again under ASan + UBSan"
        sanitizer=0
        sh tools/sanitize.sh || sanitizer=$?
        [ $sanitizer -eq 0 ] || status=$sanitizer
        echo "sanitizers: $(python3 tools/test_summary.py build-asan/meson-logs/testlog.json)"
    fi
    if [ -z "${MOEVK_SKIP_FUZZ:-}" ]; then
        echo "quickstart: bounded libFuzzer run of the checkpoint parsers"
        fuzz=0
        sh fuzz/run.sh "${MOEVK_FUZZ_SECONDS:-60}" || fuzz=$?
        [ $fuzz -eq 0 ] || { status=$fuzz; echo "fuzz: FAILED"; }
    fi
    echo "$summary"
    exit $status
    ;;
*)
    echo "usage: sh tools/quickstart.sh main|test" >&2
    exit 2
    ;;
esac
