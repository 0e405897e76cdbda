/*
 * Preloaded (LD_PRELOAD) into every process of the sanitizer pass by
 * tools/sanitize.sh: dlclose() does nothing, so the Vulkan loader, the driver
 * (lavapipe, its LLVM) and the validation layer stay mapped until the process
 * exits. LeakSanitizer runs at exit; a frame in a library that was unloaded
 * before then shows as "<unknown module>" and no suppression by library name
 * (tools/lsan.supp) can match it. Built without the sanitizer runtime, as it is
 * also preloaded into sh, python3 and the other tools the test scripts run.
 */
#include <dlfcn.h>

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
