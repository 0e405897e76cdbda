/*
 * Negative control of the sanitizer pass (run by leak_control.sh, built only
 * with -Db_sanitize=address...): each test does the same small GPU round trip
 * on a validated context, so the Vulkan driver and the validation layer are
 * loaded and the driver-only leak suppressions are in force; then
 *   - gpu_clean leaks nothing and must pass (driver and layer leaks are
 *     suppressed),
 *   - leaks_64_bytes leaks one 64-byte block of this file's and must fail,
 *   - leaks_a_layer_case never frees a random layer case of the generator
 *     shared with `moevk check` (src/harness/case.c) and must fail.
 * (A moevk context that is never destroyed is not a leak LeakSanitizer can
 * see: the live validation layer still points at it.)
 * Not part of the ordinary suite: a leak is only seen by LeakSanitizer.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../src/harness/harness.h"
#include "common.h"

static void *volatile sink;

static moevk_context *gpu_round_trip(void)
{
    moevk_context *ctx = mvkt_context();
    uint8_t src[257], dst[257];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (uint8_t)(i * 7 + 1);
    memset(dst, 0, sizeof dst);
    moevk_buffer *b;
    cr_assert_eq(moevk_buffer_create(ctx, sizeof src, &b), MOEVK_SUCCESS);
    cr_assert_eq(moevk_buffer_upload(b, 0, src, sizeof src), MOEVK_SUCCESS);
    cr_assert_eq(moevk_buffer_download(b, 0, dst, sizeof dst), MOEVK_SUCCESS);
    cr_assert(memcmp(src, dst, sizeof src) == 0, "round trip differs");
    moevk_buffer_destroy(b);
    return ctx;
}

Test(control, gpu_clean)
{
    mvkt_context_end(gpu_round_trip());
}

Test(control, leaks_64_bytes)
{
    mvkt_context_end(gpu_round_trip());
    char *p = malloc(64);
    cr_assert_not_null(p);
    memset(p, 0x5a, 64);
    sink = p; /* the last pointer to it is overwritten: a direct leak */
    sink = NULL;
}

Test(control, leaks_a_layer_case)
{
    mvkt_context_end(gpu_round_trip());
    mvkc_limits l;
    memset(&l, 0, sizeof l);
    mvkc_case *c = malloc(sizeof *c);
    cr_assert_not_null(c);
    cr_assert_eq(mvkc_case_random(mvkt_base_seed(), &l, c), MOEVK_SUCCESS);
    cr_assert_gt(c->T, 0);
    sink = c; /* neither the case nor its arrays are freed */
    sink = NULL;
}
