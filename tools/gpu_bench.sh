#!/bin/sh
# The GPU measurement of docs/benchmarks.md in one script (about 10 minutes on
# an H100/H200): the device's ceilings, the real shapes of Mixtral-8x7B,
# Qwen3-30B-A3B and DeepSeek-V3 at T = 1, 16, 128, 512, 4096 in bf16 and in
# q4_k and q8_0, Vulkan beside cuBLAS, a cross-check of every kernel variant
# (cooperative matrices included) against the CPU reference, and the budget
# curve of Qwen3-30B-A3B and Mixtral (q4_k, T = 1 and 16, 10-100 % of the
# experts on the device).
#
#   sh tools/gpu_bench.sh prepare   here: the loader packages (.gl/) and a
#                                   release build in build-gpu/ (git-ignored)
#   sh tools/gpu_bench.sh run       on the GPU machine, from the repository
#                                   root, with .gl and build-gpu carried;
#                                   results go to $OUT (or ./gpu-out)
#
# ../shared/device/README.md says how the GPU machine is reached; there is no
# Vulkan loader, glslang or package registry there, so everything is built
# here. Each step is bounded by `timeout` so that one slow step cannot eat
# the rest; what finished is in $OUT whatever happens after.
#
# A rehearsal on lavapipe (no .gl needed) checks the script end to end:
#   MOEVK_BENCH_EXTRA="--scale 32" MOEVK_BENCH_TOKENS=1,16 \
#   MOEVK_BUILD=build VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json \
#   sh tools/gpu_bench.sh run
set -u
cmd=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

case $cmd in
prepare)
    set -e
    fetch=${MOEVK_FETCH_DEBS:-../shared/device/fetch-debs.sh}
    [ -x "$fetch" ] || fetch="bash $fetch"
    $fetch
    [ -d build-gpu ] || meson setup build-gpu -Dbuildtype=release
    meson compile -C build-gpu
    ldd build-gpu/src/moevk | grep "not found" && { echo "missing libraries"; exit 1; }
    echo "ready: carry .gl and build-gpu, run 'sh tools/gpu_bench.sh run'"
    ;;
run)
    out=${OUT:-$root/gpu-out}
    mkdir -p "$out"
    for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
    ldconfig
    extra=${MOEVK_BENCH_EXTRA:-}
    tokens=${MOEVK_BENCH_TOKENS:-1,16,128,512,4096}
    export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
    moevk=${MOEVK_BUILD:-build-gpu}/src/moevk
    log=$out/log.txt
    step() { # step SECONDS NAME command...
        limit=$1 name=$2
        shift 2
        t0=$(date +%s)
        echo "== $name: $*" >>"$log"
        timeout "$limit" "$@" >>"$log" 2>&1
        rc=$?
        echo "== $name: exit $rc after $(($(date +%s) - t0)) s" >>"$log"
    }
    {
        vulkaninfo --summary 2>&1 | head -n 40
        nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,clocks.max.sm --format=csv
    } >"$out/device.txt" 2>&1
    step 30 info "$moevk" info
    # every kernel variant against the reference on random cases (matrix
    # units and their emulation included), and the CUDA backends too
    step 120 check "$moevk" check --against cpu --cases 40 --seed 1 --path all
    step 60 check-cuda "$moevk" check --backend cuda-ref --against cpu --cases 20 --seed 2
    # the bench: ceilings, then every row; JSON, CSV and the plot come back
    step 330 bench "$moevk" bench --preset mixtral-8x7b,qwen3-30b-a3b,deepseek-v3 \
        --dtype bf16,q4_k,q8_0 --tokens "$tokens" --backend vulkan,cuda-cublas \
        --runs 10 --warmup 2 --json "$out/bench.json" --csv "$out/bench.csv" \
        --plot "$out/bench.svg" $extra
    # decode with a hot-expert distribution, Vulkan only
    step 60 bench-zipf "$moevk" bench --preset mixtral-8x7b,deepseek-v3 --dtype bf16,q4_k \
        --tokens 1,16 --dist zipf --runs 10 --warmup 2 --json "$out/bench-zipf.json" $extra
    # layers larger than VRAM: throughput against the experts' device-memory
    # budget (the rest read from host memory over PCIe, hot ones cached), the
    # figure of docs/benchmarks.md "Budget curve"
    step 120 bench-budget "$moevk" bench --preset qwen3-30b-a3b,mixtral-8x7b --dtype q4_k \
        --tokens 1,16 --dist router,zipf --vram-budget 10%,25%,50%,100% --runs 10 \
        --warmup 4 --no-ceilings --json "$out/bench-budget.json" \
        --plot "$out/bench-budget.svg" $extra
    grep -E "^== .*exit" "$log"
    ;;
*)
    echo "usage: sh tools/gpu_bench.sh prepare|run" >&2
    exit 2
    ;;
esac
