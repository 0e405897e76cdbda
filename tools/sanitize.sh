#!/bin/sh
# The whole test suite again under AddressSanitizer + UndefinedBehaviorSanitizer
# (LeakSanitizer included); any report fails the test it came from:
#   - each Criterion test runs in a process of its own; a leak found when that
#     process exits changes only its exit status, which the report hook in
#     tests/common.c turns into a failed test;
#   - leaks are suppressed only when a frame of their allocation stack is in
#     the Vulkan driver, its LLVM or the validation layer (tools/lsan.supp).
#     Those libraries are unloaded before exit, where LeakSanitizer could not
#     name them, so every process here gets lsan_keep_loaded.c preloaded
#     (dlclose does nothing);
#   - the negative control (leak-control: tests/leak_control.c) plants leaks
#     and must see them fail, next to the same GPU work passing.
# Every suite runs, with fewer random cases (MOEVK_TEST_CASES_SCALE, 0.1
# unless set) of at most MOEVK_TEST_MAX_WORK multiply-adds (2 M unless set). install-consumer is left out: the
# program it builds has no sanitizer runtime.
# usage: sh tools/sanitize.sh [test names]
set -eu
cd "$(dirname "$0")/.."
build=${MOEVK_ASAN_BUILD_DIR:-build-asan}
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Db_sanitize=address,undefined -Dbuildtype=debug -Dwerror=true \
        -Drequire_device=true >/dev/null
fi
meson compile -C "$build" >/dev/null
keep=$(pwd)/$build/lsan-keep-loaded.so
${CC:-cc} -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC tools/lsan_keep_loaded.c -o "$keep"
# the preloaded library comes before the sanitizer runtime: allowed
# (verify_asan_link_order=0), as it defines nothing the runtime intercepts
export LD_PRELOAD="$keep${LD_PRELOAD:+ $LD_PRELOAD}"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:verify_asan_link_order=0
export LSAN_OPTIONS="suppressions=$(pwd)/tools/lsan.supp:print_suppressions=0:exitcode=23"
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export MOEVK_TEST_CASES_SCALE="${MOEVK_TEST_CASES_SCALE:-0.1}"
# and smaller random cases: the CPU reference runs instrumented here
export MOEVK_TEST_MAX_WORK="${MOEVK_TEST_MAX_WORK:-2097152}"
if [ $# -eq 0 ]; then
    set -- $(meson test -C "$build" --list 2>/dev/null | sed 's/.* \/ //' | grep -vx -e install-consumer)
fi
meson test -C "$build" --no-rebuild --print-errorlogs "$@"
