/*
 * Fault injection: make the n-th host allocation or Vulkan call fail, for
 * every n along a whole workload. Each run must return an error (never
 * crash), free what it took, and leave the context usable.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ref/ref.h"
#include "testing.h"

enum { T = 9, H = 40, E = 7 };

/* The workload: tensors, upload, router logits + scores, download. */
static moevk_status workload(moevk_context *ctx, const float *x, const float *w, float *out)
{
    moevk_tensor tx = {0}, tw = {0}, tl = {0}, ts = {0};
    uint64_t sx[2] = {T, H}, sw[2] = {E, H}, sl[2] = {T, E};
    moevk_status st;
    if ((st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sx, &tx)) ||
        (st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sw, &tw)) ||
        (st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sl, &tl)) ||
        (st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sl, &ts)) ||
        (st = moevk_tensor_upload(&tx, x)) || (st = moevk_tensor_upload(&tw, w)) ||
        (st = moevk_router_logits(ctx, &tx, &tw, NULL, &tl)) ||
        (st = moevk_router_scores(ctx, &tl, MOEVK_SCORING_SOFTMAX, &ts)) ||
        (st = moevk_tensor_download(&ts, out))) {
        /* st holds the first failure */
    }
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&tw);
    moevk_tensor_destroy(&tl);
    moevk_tensor_destroy(&ts);
    return st;
}

Test(faults, every_failure_point_is_clean)
{
    moevk_context *ctx = mvkt_context();
    mvkt_rng r = mvkt_rng_make(mvkt_base_seed());
    float x[T * H], w[E * H], ref_l[T * E], ref[T * E], out[T * E];
    for (int i = 0; i < T * H; i++) x[i] = mvkt_uniform(&r, -1, 1);
    for (int i = 0; i < E * H; i++) w[i] = mvkt_uniform(&r, -1, 1);
    moevk_ref_router_logits(x, T, H, w, MOEVK_DTYPE_F32, E, NULL, ref_l);
    moevk_ref_scores(ref_l, T, E, MOEVK_SCORING_SOFTMAX, ref);

    /* Warm up once so pipelines and staging exist, then count from a fresh
     * context too (the first run creates them: more failure points). */
    int failures = 0;
    for (int fresh = 0; fresh < 2; fresh++) {
        if (fresh) {
            mvkt_context_end(ctx);
            ctx = mvkt_context();
        } else {
            cr_assert_eq(workload(ctx, x, w, out), MOEVK_SUCCESS);
        }
        int64_t baseline = moevk_testing_live_objects(ctx);
        for (int n = 1; n < 400; n++) {
            moevk_testing_fail_after(ctx, n);
            mvkt_poison(out, T * E);
            moevk_status st = workload(ctx, x, w, out);
            moevk_testing_fail_after(ctx, 0);
            if (st == MOEVK_SUCCESS) {
                cr_assert_leq(mvkt_rel_l2(out, ref, T * E), 1e-5);
                break; /* n passed the last failure point */
            }
            failures++;
            cr_assert(st == MOEVK_ERROR_OUT_OF_HOST_MEMORY ||
                      st == MOEVK_ERROR_OUT_OF_DEVICE_MEMORY,
                      "failure point %d: unexpected status %s (%s)", n, moevk_status_string(st),
                      moevk_context_last_error(ctx));
            cr_assert_neq(strlen(moevk_context_last_error(ctx)), 0);
            if (fresh == 0)
                cr_assert_eq(moevk_testing_live_objects(ctx), baseline,
                             "failure point %d leaked %lld objects", n,
                             (long long)(moevk_testing_live_objects(ctx) - baseline));
            /* the context still works */
            mvkt_poison(out, T * E);
            cr_assert_eq(workload(ctx, x, w, out), MOEVK_SUCCESS, "after failure point %d: %s",
                         n, moevk_context_last_error(ctx));
            cr_assert_leq(mvkt_rel_l2(out, ref, T * E), 1e-5);
        }
    }
    cr_assert_gt(failures, 20, "only %d failure points were exercised", failures);
    mvkt_context_end(ctx);
}
