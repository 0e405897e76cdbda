#include "util/tool.h"

#include "formats.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int mvk_dtype_parse(const char *s, int expert, moevk_dtype *dt)
{
    const int v = moevk_dtype_from_name(s);
    const mvk_format *f = v < 0 ? NULL : mvk_format_get((moevk_dtype)v);
    if (!f || !(f->uses & (expert ? MVK_FORMAT_EXPERT : MVK_FORMAT_ROUTER)))
        return -1;
    *dt = f->dtype;
    return 0;
}

const char *mvk_dtype_names(int expert, char *buf, size_t n)
{
    size_t p = 0;
    if (n)
        buf[0] = '\0';
    for (size_t i = 0; mvk_format_at(i); i++) {
        const mvk_format *f = mvk_format_at(i);
        if (!(f->uses & (expert ? MVK_FORMAT_EXPERT : MVK_FORMAT_ROUTER)))
            continue;
        int k = snprintf(buf + p, n - p, "%s%s", p ? "|" : "", f->name);
        if (k < 0 || (size_t)k >= n - p)
            break;
        p += (size_t)k;
    }
    return buf;
}

static void matrix_dtypes(const moevk_layer_desc *d, int shared, moevk_dtype *gu, moevk_dtype *dn)
{
    const moevk_expert_weights *w = shared ? &d->shared : &d->experts;
    const int per = (d->flags & MOEVK_LAYER_MATRIX_DTYPES) != 0;
    *gu = per ? w->gate_up_dtype : d->weight_dtype;
    *dn = per ? w->down_dtype : d->weight_dtype;
}

const char *mvk_desc_formats(const moevk_layer_desc *d, char *buf, size_t n)
{
    moevk_dtype gu, dn, sgu, sdn;
    matrix_dtypes(d, 0, &gu, &dn);
    matrix_dtypes(d, 1, &sgu, &sdn);
    int k = gu == dn ? snprintf(buf, n, "%s", moevk_dtype_name(gu))
                     : snprintf(buf, n, "%s gate/up, %s down", moevk_dtype_name(gu),
                                moevk_dtype_name(dn));
    if (d->num_shared && (sgu != gu || sdn != dn) && k >= 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, " (shared: %s gate/up, %s down)", moevk_dtype_name(sgu),
                 moevk_dtype_name(sdn));
    return buf;
}

double mvk_desc_expert_bytes(const moevk_layer_desc *d)
{
    const double mats_up = moevk_activation_is_gated(d->activation) ? 2 : 1;
    double total = 0;
    for (int s = 0; s < 2; s++) {
        const double count = s ? d->num_shared : d->num_experts - d->num_zero_experts;
        const uint32_t ffn = s ? (d->shared_ffn ? d->shared_ffn : d->ffn) : d->ffn;
        moevk_dtype gu, dn;
        matrix_dtypes(d, s, &gu, &dn);
        total += count * ((double)mats_up * ffn * (double)moevk_dtype_row_bytes(gu, d->hidden) +
                          (double)d->hidden * (double)moevk_dtype_row_bytes(dn, ffn));
    }
    return total;
}

double mvk_desc_routed_bytes(const moevk_layer_desc *d)
{
    moevk_layer_desc r = *d;
    r.num_shared = 0;
    return mvk_desc_expert_bytes(&r);
}

int mvk_parse_budget(const char *s, double of, uint64_t *out, char *why, size_t n)
{
    char *end = NULL;
    const double v = s ? strtod(s, &end) : 0;
    if (!s || end == s || !(v >= 0) || !isfinite(v)) {
        snprintf(why, n, "'%s' is not a size (bytes, K/M/G/T, or a percentage like 25%%)",
                 s ? s : "");
        return -1;
    }
    double bytes = v;
    if (!strcmp(end, "%")) {
        if (v > 100) {
            snprintf(why, n, "'%s': a percentage is at most 100%%", s);
            return -1;
        }
        bytes = floor(v / 100.0 * of);
    } else if (*end) {
        static const char units[] = "KMGT";
        const char *u = strchr(units, toupper((unsigned char)end[0]));
        const bool ok = u && *u && (!end[1] || ((end[1] == 'i' && (end[2] == 'B' || !end[2])) ||
                                                (end[1] == 'B' && !end[2])));
        if (!ok) {
            snprintf(why, n, "'%s': unknown unit '%s' (K, M, G, T or %%)", s, end);
            return -1;
        }
        bytes = floor(v * pow(1024.0, (double)(u - units + 1)));
    } else if (v != floor(v)) {
        snprintf(why, n, "'%s': a byte count is a whole number", s);
        return -1;
    }
    if (bytes > 1.8e19) {
        snprintf(why, n, "'%s' is too large", s);
        return -1;
    }
    *out = (uint64_t)bytes;
    return 0;
}

void mvk_desc_set_budget(moevk_layer_desc *d, uint64_t budget)
{
    d->flags |= MOEVK_LAYER_VRAM_BUDGET;
    d->vram_budget = budget;
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
