#include "util/tool.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int mvk_dtype_parse(const char *s, moevk_dtype *dt)
{
    static const moevk_dtype known[] = {MOEVK_DTYPE_F32, MOEVK_DTYPE_F16, MOEVK_DTYPE_BF16};
    for (size_t i = 0; s && i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(s, moevk_dtype_name(known[i]))) {
            *dt = known[i];
            return 0;
        }
    return -1;
}

double mvk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void mvk_tool_log(void *user, moevk_log_level level, const char *msg)
{
    (void)user;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "moevk %s: %s\n", names[level <= MOEVK_LOG_DEBUG ? level : 0], msg);
}

moevk_status mvk_tool_context(const char *device, int validate, moevk_context **out, char *err,
                              size_t n)
{
    moevk_context_desc d = {
        .device = device,
        .flags = validate ? MOEVK_CONTEXT_VALIDATION : 0,
        .log = mvk_tool_log,
        .log_level = MOEVK_LOG_WARN,
        .error_message = err,
        .error_message_size = n,
    };
    *out = NULL;
    return moevk_context_create(&d, out);
}
