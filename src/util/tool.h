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

/* A weight format's name (moevk_dtype_name: "f32", "bf16", "q4_k", ...)
 * that may hold expert weights (expert = 1) or router weights (expert =
 * 0): 0 and *dt set; else -1. */
int mvk_dtype_parse(const char *s, int expert, moevk_dtype *dt);
/* The names of the formats for `expert` (as mvk_dtype_parse), joined by
 * '|' into buf (n bytes). */
const char *mvk_dtype_names(int expert, char *buf, size_t n);
/* The formats of a layer's expert matrices in words, into buf (n bytes):
 * "q4_k", or "q4_k gate/up, q6_k down", with the shared experts' where
 * they differ. */
const char *mvk_desc_formats(const moevk_layer_desc *d, char *buf, size_t n);
/* Bytes of the expert weights of d (routed and shared, packed). */
double mvk_desc_expert_bytes(const moevk_layer_desc *d);
/* Bytes of the routed experts of d only (packed, in the formats of d). */
double mvk_desc_routed_bytes(const moevk_layer_desc *d);
/* A device-memory budget as the tool takes it (--vram-budget): bytes with
 * an optional K, M, G or T suffix (powers of 1024), or a percentage of
 * `of` bytes ("25%"). 0 and *out set; else -1 and why (n bytes). */
int mvk_parse_budget(const char *s, double of, uint64_t *out, char *why, size_t n);
/* Turn a parsed --vram-budget into the desc's flags and vram_budget. */
void mvk_desc_set_budget(moevk_layer_desc *d, uint64_t budget);
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
