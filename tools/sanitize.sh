#!/bin/sh
# The test suite again under AddressSanitizer + UndefinedBehaviorSanitizer
# (any report fails). Leaks are checked everywhere except inside the Vulkan
# driver, its LLVM JIT and the validation layer (tools/lsan.supp).
# usage: sh tools/sanitize.sh [extra meson test args]
set -eu
cd "$(dirname "$0")/.."
build=${MOEVK_ASAN_BUILD_DIR:-build-asan}
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Db_sanitize=address,undefined -Dbuildtype=debug -Dwerror=true \
        -Drequire_device=true >/dev/null
fi
meson compile -C "$build" >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export LSAN_OPTIONS=suppressions=$(pwd)/tools/lsan.supp
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
meson test -C "$build" --no-rebuild --print-errorlogs --suite cpu --suite gpu "$@"
