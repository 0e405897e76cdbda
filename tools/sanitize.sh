#!/bin/sh
# The test suite again under AddressSanitizer + UndefinedBehaviorSanitizer
# (any report fails). Leaks are checked everywhere except inside the Vulkan
# driver, its LLVM JIT and the validation layer (tools/lsan.supp).
# The long random-case and CLI suites (layer, cli) run only in the plain
# pass, to keep CI short, and install-consumer (its program is built
# without the sanitizer runtime); everything else runs here too.
# usage: sh tools/sanitize.sh [test names]
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
if [ $# -eq 0 ]; then
    set -- $(meson test -C "$build" --list 2>/dev/null | sed 's/.* \/ //' | grep -vx -e layer -e cli -e install-consumer)
fi
meson test -C "$build" --no-rebuild --print-errorlogs "$@"
