#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

uint64_t mvkt_base_seed(void)
{
    const char *s = getenv("MOEVK_TEST_SEED");
    if (s && *s)
        return strtoull(s, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
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

void *mvkt_random_weights(mvkt_rng *r, moevk_dtype dt, size_t n, float scale)
{
    void *w = mvk_rng_array(r, dt, n, scale);
    cr_assert_not_null(w);
    return w;
}
