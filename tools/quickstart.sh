#!/bin/sh
# moevk quick start: installs what is missing (Debian packages), builds, and
#   main  - runs the main job on the best available device (lavapipe when
#           there is no GPU)
#   test  - runs the whole test suite (validation layers on, no device = fail)
#           on the default Vulkan device, the GPU suites again on Mesa 25
#           lavapipe (tools/mesa25.sh: bookworm-backports, beside the system's
#           Mesa), the whole suite under ASan + UBSan (tools/sanitize.sh),
#           then a bounded fuzz run of the checkpoint parsers; each part
#           prints its counts and time, the last line, "N passed, M failed,
#           K skipped", adds them all up. MOEVK_SKIP_MESA25, _SANITIZERS,
#           _FUZZ=1 leave a part out.
# usage: sh tools/quickstart.sh main|test [extra meson test args]
set -eu
cd "$(dirname "$0")/.."
what=${1:-main}
[ $# -gt 0 ] && shift

t_start=$(date +%s)
sh tools/ensure_packages.sh quickstart build-essential pkg-config meson ninja-build python3 glslang-tools spirv-tools \
    libvulkan-dev libvulkan-volk-dev mesa-vulkan-drivers vulkan-validationlayers vulkan-tools \
    libcriterion-dev libcjson-dev python3-dev python3-numpy python3-pytest

build=${MOEVK_BUILD_DIR:-build}
# the test command also builds the cooperative-matrix kernel variant (a
# glslang from PyPI that knows the extension; left out if PyPI is not there)
[ "$what" = test ] && sh tools/coopmat_tools.sh
# and gguf-py (PyPI gguf 0.19.0), the oracle of the format decoders and
# quantisers (meson test formats-gguf)
[ "$what" = test ] && sh tools/py_tools.sh
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Dwerror=true -Drequire_device=true
fi
meson compile -C "$build"

case "$what" in
main)
    "$build/src/moevk" info
    echo
    # a 4-bit Mixtral-8x7B-shaped layer under a device-memory budget of half
    # its experts (the rest read from host memory, the hot ones cached),
    # checked and timed; then, at the real shapes, what one layer weighs at
    # each format and how many fit the device
    "$build/src/moevk" demo --preset mixtral-8x7b --scale 8 --tokens 64 --dtype q4_k \
        --vram-budget 50% "$@" || exit $?
    exec "$build/src/moevk" bench --fit --preset mixtral-8x7b,qwen3-30b-a3b,deepseek-v3 \
        --dtype q4_k --tokens 64
    ;;
test)
    status=0
    np=0 nf=0 ns=0
    results=""
    # part LABEL SUMMARY SECONDS: add "N passed, M failed, K skipped" to the totals
    part() {
        line="$1: $2 ($3 s)"
        echo "$line"
        results="$results
  $line"
        set -- $(echo "$2" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 \2 \3/p')
        if [ $# -eq 3 ]; then
            np=$((np + $1)) nf=$((nf + $2)) ns=$((ns + $3))
        else
            nf=$((nf + 1))
        fi
    }
    # the default device's driver, e.g. "lavapipe (Mesa 22.3.6)"
    driver() {
        info=$("$@" "$build/src/moevk" info 2>&1) || { echo "no Vulkan device"; return; }
        echo "$info" | sed -n '2,6p' | grep -E "^(device 0:|  Vulkan |  driver )" >&2 || true
        mesa=$(echo "$info" | sed -n 's/^  driver  *llvmpipe .*(Mesa \([0-9][0-9.]*\).*/\1/p' | head -n 1)
        if [ -n "$mesa" ]; then
            echo "lavapipe (Mesa $mesa)"
        else
            echo "$info" | sed -n 's/^device 0: //p'
        fi
    }
    echo "quickstart: packages and build took $(($(date +%s) - t_start)) s"

    t=$(date +%s)
    drv0=$(driver)
    echo "quickstart: the suite on $drv0"
    meson test -C "$build" --print-errorlogs "$@" || status=$?
    part "$drv0" "$(python3 tools/test_summary.py "$build/meson-logs/testlog.json")" $(($(date +%s) - t))

    if [ -z "${MOEVK_SKIP_MESA25:-}" ]; then
        # the GPU suites again on Mesa 25 lavapipe (bookworm-backports, unpacked
        # beside the system's Mesa): a second driver generation, Vulkan 1.4,
        # and a second subgroup size: 128-bit vectors (LP_NATIVE_VECTOR_WIDTH),
        # so subgroups of 4 where the first pass has 8. Its LLVM also
        # compiles each kernel variant about 3x faster at that width; with a
        # cold shader cache compiling is most of this pass's time, so a
        # sixth of the random cases (MOEVK_TEST_CASES_SCALE 0.15), other seeds
        # than the first pass; not the suites of file readers, the tool and
        # the Python package (suite checkpoints), whose layers run the
        # kernels the other suites cover
        t=$(date +%s)
        if sh tools/mesa25.sh install; then
            vw=${MOEVK_MESA25_VECTOR_WIDTH:-128}
            drv=$(driver env LP_NATIVE_VECTOR_WIDTH="$vw" sh tools/mesa25.sh run)
            echo "quickstart: the GPU suites on $drv, $vw-bit vectors"
            [ $# -gt 0 ] || set -- --suite gpu --no-suite checkpoints
            LP_NATIVE_VECTOR_WIDTH="$vw" MOEVK_TEST_CASES_SCALE="${MOEVK_TEST_CASES_SCALE:-0.15}" \
                sh tools/mesa25.sh run meson test -C "$build" --no-rebuild --print-errorlogs \
                --logbase testlog-mesa25 "$@" || status=$?
            part "$drv" "$(python3 tools/test_summary.py "$build/meson-logs/testlog-mesa25.json")" \
                $(($(date +%s) - t))
        else
            status=1
            part "lavapipe (Mesa 25)" "0 passed, 1 failed, 0 skipped" $(($(date +%s) - t))
            echo "quickstart: Mesa 25 lavapipe could not be installed (see above): counted as failed"
        fi
    fi
    if [ -z "${MOEVK_SKIP_SANITIZERS:-}" ]; then
        echo "quickstart: the suite again under ASan + UBSan"
        t=$(date +%s)
        sanitizer=0
        sh tools/sanitize.sh || sanitizer=$?
        [ $sanitizer -eq 0 ] || status=$sanitizer
        part "ASan+UBSan on $drv0" \
            "$(python3 tools/test_summary.py "${MOEVK_ASAN_BUILD_DIR:-build-asan}/meson-logs/testlog.json")" \
            $(($(date +%s) - t))
    fi
    if [ -z "${MOEVK_SKIP_FUZZ:-}" ]; then
        echo "quickstart: bounded libFuzzer run of the checkpoint parsers"
        t=$(date +%s)
        fuzz=0
        sh fuzz/run.sh "${MOEVK_FUZZ_SECONDS:-20}" >"$build/fuzz.log" 2>&1 || fuzz=$?
        cat "$build/fuzz.log"
        fp=$(grep -c "^fuzz_[a-z]*: .*no crash$" "$build/fuzz.log" || true)
        ff=$(grep -c "^fuzz_[a-z]*: FAILED$" "$build/fuzz.log" || true)
        if [ $fuzz -ne 0 ]; then
            status=$fuzz
            [ "$ff" -gt 0 ] || ff=1
            echo "fuzz: FAILED"
        fi
        part "fuzz (${MOEVK_FUZZ_SECONDS:-20} s a target)" "$fp passed, $ff failed, 0 skipped" \
            $(($(date +%s) - t))
    fi
    echo "quickstart: results (whole run $(($(date +%s) - t_start)) s)$results"
    echo "$np passed, $nf failed, $ns skipped"
    exit $status
    ;;
*)
    echo "usage: sh tools/quickstart.sh main|test" >&2
    exit 2
    ;;
esac
