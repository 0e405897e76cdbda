#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "ref/ref.h"

/* Criterion runs each test in a process of its own and judges the test on
 * what it reported before that process exits. A sanitizer report at exit
 * (LeakSanitizer's leak check, an error in a destructor) changes only the
 * process's exit status, which Criterion records but does not count: a test
 * that leaks would pass. Count it here, in the runner, before the closing
 * "Synthesis" line and the program's exit status are decided. */
ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    for (struct criterion_suite_stats *s = stats->suites; s; s = s->next)
        for (struct criterion_test_stats *t = s->tests; t; t = t->next) {
            if (t->test_status != CR_STATUS_PASSED || t->exit_code == t->test->data->exit_code)
                continue;
            t->test_status = CR_STATUS_FAILED;
            s->tests_passed--;
            s->tests_failed++;
            stats->tests_passed--;
            stats->tests_failed++;
            fprintf(stderr,
                    "[FAIL] %s::%s: its process exited with status %d after the test passed "
                    "(a sanitizer report above: a leak, or an error at exit)\n",
                    t->test->category, t->test->name, t->exit_code);
        }
}

uint64_t mvkt_base_seed(void)
{
    const char *s = getenv("MOEVK_TEST_SEED");
    if (s && *s)
        return strtoull(s, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
}

int mvkt_scaled(int n, int min)
{
    const char *s = getenv("MOEVK_TEST_CASES_SCALE");
    double f = s && *s ? strtod(s, NULL) : 1.0;
    if (!(f > 0.0 && f <= 100.0))
        f = 1.0;
    double v = (double)n * f + 0.5;
    int k = v >= 2147483647.0 ? 2147483647 : (int)v;
    return k < min ? min : k;
}

static void test_log(void *user, moevk_log_level level, const char *msg)
{
    (void)user;
    fprintf(stderr, "[moevk %d] %s\n", (int)level, msg);
}

moevk_context *mvkt_context_flags(uint32_t flags, uint32_t timeout_ms)
{
    char err[512] = "";
    moevk_context_desc d = {
        .flags = flags,
        .log = test_log,
        .log_level = MOEVK_LOG_WARN,
        .timeout_ms = timeout_ms,
        .error_message = err,
        .error_message_size = sizeof(err),
    };
    moevk_context *ctx = NULL;
    moevk_status st = moevk_context_create(&d, &ctx);
    const char *req = getenv("MOEVK_REQUIRE_DEVICE");
    bool required = req && *req && strcmp(req, "0") != 0;
    if ((st == MOEVK_ERROR_NO_VULKAN || st == MOEVK_ERROR_NO_DEVICE) && !required)
        cr_skip_test("no Vulkan device: %s", err);
    cr_assert_eq(st, MOEVK_SUCCESS, "context creation failed: %s: %s", moevk_status_string(st),
                 err);
    return ctx;
}

moevk_context *mvkt_context(void)
{
    return mvkt_context_flags(MOEVK_CONTEXT_VALIDATION, 0);
}

void mvkt_context_end(moevk_context *ctx)
{
    uint32_t n = moevk_context_validation_messages(ctx);
    moevk_context_destroy(ctx);
    cr_assert_eq(n, 0, "%u validation-layer messages (see the log above)", n);
}

void mvkt_poison(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
}

void mvkt_poison_tensor(moevk_tensor *t)
{
    uint64_t bytes = (moevk_tensor_bytes(t) + 3) & ~3ull;
    moevk_status st = moevk_buffer_fill(t->buffer, t->offset, bytes, 0x7fc00000u);
    cr_assert_eq(st, MOEVK_SUCCESS, "poisoning a tensor failed");
}

double mvkt_rel_l2(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * (double)ref[i];
    }
    if (isnan(num) || isnan(den))
        return NAN;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The scale fields of a block: byte offsets of its f16 scales (-1 ends),
 * of an E8M0 exponent (MXFP4) and of an f32 scale (nf4, fp8_e4m3). The rest
 * of a block is random bits: every quant pattern, signs and sub-scales
 * occur (less what a format refuses: mvkt_random_weights). */
static void block_fields(moevk_dtype dt, int f16_at[3], int *e8m0_at, int *f32_at)
{
    f16_at[0] = f16_at[1] = f16_at[2] = -1;
    *e8m0_at = -1;
    *f32_at = -1;
    switch (dt) {
    case MOEVK_DTYPE_Q8_0: case MOEVK_DTYPE_Q4_0: case MOEVK_DTYPE_Q5_0:
    case MOEVK_DTYPE_IQ4_NL: case MOEVK_DTYPE_IQ4_XS: case MOEVK_DTYPE_GPTQ4:
        f16_at[0] = 0;
        break;
    case MOEVK_DTYPE_NF4: case MOEVK_DTYPE_FP8_E4M3:
        *f32_at = 0;
        break;
    case MOEVK_DTYPE_Q4_1: case MOEVK_DTYPE_Q5_1: case MOEVK_DTYPE_Q4_K: case MOEVK_DTYPE_Q5_K:
        f16_at[0] = 0, f16_at[1] = 2;
        break;
    case MOEVK_DTYPE_Q2_K: f16_at[0] = 80, f16_at[1] = 82; break;
    case MOEVK_DTYPE_Q3_K: f16_at[0] = 108; break;
    case MOEVK_DTYPE_Q6_K: f16_at[0] = 208; break;
    case MOEVK_DTYPE_MXFP4: *e8m0_at = 0; break;
    default: break;
    }
}

void *mvkt_random_weights(mvkt_rng *r, moevk_dtype dt, size_t n, float scale)
{
    const uint32_t be = moevk_dtype_block_elems(dt);
    if (be > 1) {
        /* random blocks whose values are about +-scale */
        size_t nb = n / be, bb = moevk_dtype_row_bytes(dt, be);
        cr_assert_eq(n % be, 0, "%zu elements are not whole %s blocks", n, moevk_dtype_name(dt));
        uint8_t *w = malloc(nb * bb + 1);
        cr_assert_not_null(w);
        int f16_at[3], e8m0_at, f32_at;
        block_fields(dt, f16_at, &e8m0_at, &f32_at);
        /* the quant values reach about 8..127 (K-quants: scale x sub-scale
         * up to 63 x 31; NF4 1, e4m3 448 at most, mostly below 16): scales
         * that keep values near +-scale */
        const float unit = be == 256                      ? scale / 400.0f
                           : dt == MOEVK_DTYPE_Q8_0       ? scale / 127.0f
                           : dt == MOEVK_DTYPE_NF4        ? scale
                           : dt == MOEVK_DTYPE_FP8_E4M3   ? scale / 64.0f
                                                          : scale / 12.0f;
        for (size_t b = 0; b < nb; b++) {
            uint8_t *p = w + b * bb;
            for (size_t i = 0; i < bb; i++)
                p[i] = (uint8_t)mvkt_next(r);
            for (int f = 0; f < 3 && f16_at[f] >= 0; f++) {
                uint16_t h = moevk_float_to_half(mvkt_uniform(r, -unit, unit));
                p[f16_at[f]] = (uint8_t)h;
                p[f16_at[f] + 1] = (uint8_t)(h >> 8);
            }
            if (e8m0_at >= 0) /* 2^(e - 127) about scale / 6 */
                p[e8m0_at] = (uint8_t)(127 + (int)floorf(log2f(scale / 6.0f)) +
                                       (int)(mvkt_next(r) % 3) - 1);
            if (f32_at >= 0) {
                float f = mvkt_uniform(r, -unit, unit);
                memcpy(p + f32_at, &f, sizeof f);
            }
            if (dt == MOEVK_DTYPE_GPTQ4) /* zero points 0..16 */
                p[2] = (uint8_t)(mvkt_next(r) % 17);
            if (dt == MOEVK_DTYPE_FP8_E4M3) /* no NaN codes (0x7f, 0xff) */
                for (size_t i = 4; i < bb; i++)
                    if ((p[i] & 0x7f) == 0x7f)
                        p[i] ^= (uint8_t)(1u << (mvkt_next(r) % 7));
        }
        return w;
    }
    void *w = mvk_rng_array(r, dt, n, scale);
    cr_assert_not_null(w);
    return w;
}
