/*
 * Helpers shared by the tool's commands (src/cli), bench and the Vulkan
 * backend: a monotonic clock, the log callback and a context on a chosen
 * device.
 */
#ifndef MOEVK_UTIL_TOOL_H
#define MOEVK_UTIL_TOOL_H

#include <stddef.h>

#include "moevk/moevk.h"

#define MVK_MAX(a, b) ((a) > (b) ? (a) : (b))

/* "f32", "f16" or "bf16": 0 and *dt set; else -1. */
int mvk_dtype_parse(const char *s, moevk_dtype *dt);
/* Milliseconds of CLOCK_MONOTONIC. */
double mvk_now_ms(void);
/* moevk_log_fn writing "moevk LEVEL: msg" to stderr. */
void mvk_tool_log(void *user, moevk_log_level level, const char *msg);
/* A context on `device` (index or name; NULL: MOEVK_DEVICE or the best),
 * with the validation layer when `validate`, logging warnings to stderr.
 * On failure *out is NULL and err (n bytes) says why. */
moevk_status mvk_tool_context(const char *device, int validate, moevk_context **out, char *err,
                              size_t n);

#endif
