#!/bin/sh
# Run tests/test_cuda.c on the CPU emulation of the CUDA backends (emu.h):
# the real cuda_kernels.cu / cuda_layer.cu compiled as C++ for the host, a
# fake CUDA runtime (emu.cpp) and a fake libcublas (fake_cublas.c), behind
# the real backend table (src/backend, src/cuda/cuda_backend.c) and
# harness (src/harness). Checks the backends' logic (routing, permutation,
# FFNs, cuBLAS call layout, statistics) on machines without an NVIDIA GPU.
#
# usage: src/cuda/emu/run_tests.sh [BUILD_DIR] [criterion args...]
#   BUILD_DIR (default: build) must hold src/libmoevk.a.
# Needs g++, the CUDA headers (CUDA_HOME, default /usr/local/cuda) and
# Criterion. Extra arguments go to the test binary (e.g. --filter 'cuda/edge*').
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${1:-$root/build}
[ $# -gt 0 ] && shift
case $build in /*) ;; *) build=$(pwd)/$build ;; esac
cuda=${CUDA_HOME:-/usr/local/cuda}
out=${MVKEMU_OUT:-$build/cuda-emu}
mkdir -p "$out"

cxx=${CXX:-g++}
cc=${CC:-gcc}
san=${MVKEMU_SANITIZE:--fsanitize=undefined -fno-sanitize-recover=undefined}
cxxflags="-std=c++17 -O1 -g -Wall -Wextra -Werror -isystem $cuda/include -I$root/include -I$root/src $san"
cflags="-std=c11 -O1 -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
 -Wno-missing-field-initializers -D_POSIX_C_SOURCE=200809L -I$root/include -I$root/src $san"

$cxx $cxxflags -include "$here/emu.h" -x c++ -c "$root/src/cuda/cuda_kernels.cu" -o "$out/kernels.o"
$cxx $cxxflags -include "$here/emu.h" -x c++ -c "$root/src/cuda/cuda_layer.cu" -o "$out/layer.o"
$cxx $cxxflags -c "$here/emu.cpp" -o "$out/emu.o"
$cc -std=c11 -O1 -g -Wall -Wextra -Werror -shared -fPIC "$here/fake_cublas.c" \
    -o "$out/libfakecublas.so" -lm
# the C side, with the backend table listing the CUDA entries
objs=""
for src in "$root"/tests/test_cuda.c "$root"/tests/common.c "$root"/src/util/*.c \
           "$root"/src/backend/*.c "$root"/src/cuda/cuda_backend.c "$root"/src/harness/*.c; do
    obj="$out/$(echo "${src#"$root"/}" | tr / _ | sed 's/\.c$/.o/')"
    $cc $cflags -DMOEVK_HAVE_CUDA=1 -c "$src" -o "$obj"
    objs="$objs $obj"
done
# shellcheck disable=SC2086
$cxx $san -o "$out/test_cuda" $objs "$out/kernels.o" "$out/layer.o" "$out/emu.o" \
    "$build/src/libmoevk.a" -lcriterion -ldl -lm

# The device tests must run (not skip); the no-device test is covered below.
echo "== emulated device"
MOEVK_CUBLAS="$out/libfakecublas.so" MOEVK_REQUIRE_CUDA=1 "$out/test_cuda" --jobs 1 "$@"
echo "== emulated: no device"
MVKEMU_NO_DEVICE=1 "$out/test_cuda" --jobs 1 --filter 'cuda/no_device*'
MVKEMU_NO_DEVICE=1 "$out/test_cuda" --jobs 1 --filter 'cuda/bad_arguments*'
