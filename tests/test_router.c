/*
 * Router logits and scoring on the GPU against the CPU reference: random
 * shapes (H not a multiple of the workgroup, E from 1 to 1024, T from 1),
 * every weight dtype, bias on and off, NaN-poisoned outputs, NaN/Inf inputs,
 * bitwise repeatability and bad arguments.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ref/ref.h"

typedef struct router_case {
    uint32_t T, H, E;
    moevk_dtype dt;
    int bias;
} router_case;

/* Runs logits + softmax + sigmoid for one case and compares with the
 * reference (which sees the same rounded weights, so 1e-5 holds for every
 * dtype). */
static void run_case(moevk_context *ctx, const router_case *c, uint64_t seed)
{
    mvkt_rng r = mvkt_rng_make(seed);
    size_t TH = (size_t)c->T * c->H, TE = (size_t)c->T * c->E;
    float *x = malloc(sizeof(float) * TH), *bias = malloc(sizeof(float) * c->E);
    for (size_t i = 0; i < TH; i++)
        x[i] = mvkt_uniform(&r, -1, 1);
    for (uint32_t e = 0; e < c->E; e++)
        bias[e] = mvkt_uniform(&r, -0.5f, 0.5f);
    void *w = mvkt_random_weights(&r, c->dt, (size_t)c->E * c->H, 3.0f / sqrtf((float)c->H));
    float *out = malloc(sizeof(float) * TE), *ref = malloc(sizeof(float) * TE);
    float *sc = malloc(sizeof(float) * TE), *ref_sc = malloc(sizeof(float) * TE);

    moevk_tensor tx, tw, tb, tl, ts;
    uint64_t sx[2] = {c->T, c->H}, sw[2] = {c->E, c->H}, sb[1] = {c->E}, sl[2] = {c->T, c->E};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sx, &tx), 0);
    cr_assert_eq(moevk_tensor_create(ctx, c->dt, 2, sw, &tw), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 1, sb, &tb), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sl, &tl), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sl, &ts), 0);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    cr_assert_eq(moevk_tensor_upload(&tw, w), 0);
    cr_assert_eq(moevk_tensor_upload(&tb, bias), 0);

    mvkt_poison_tensor(&tl);
    moevk_status st = moevk_router_logits(ctx, &tx, &tw, c->bias ? &tb : NULL, &tl);
    cr_assert_eq(st, 0, "seed %llu: %s", (unsigned long long)seed, moevk_context_last_error(ctx));
    cr_assert_eq(moevk_tensor_download(&tl, out), 0);
    moevk_ref_router_logits(x, c->T, c->H, w, c->dt, c->E, c->bias ? bias : NULL, ref);
    double err = mvkt_rel_l2(out, ref, TE);
    cr_assert_leq(err, 1e-5, "seed %llu T=%u H=%u E=%u %s bias=%d: logits error %g",
                  (unsigned long long)seed, c->T, c->H, c->E, moevk_dtype_name(c->dt), c->bias,
                  err);

    for (int s = 0; s < 2; s++) {
        moevk_scoring scoring = s ? MOEVK_SCORING_SIGMOID : MOEVK_SCORING_SOFTMAX;
        mvkt_poison_tensor(&ts);
        st = moevk_router_scores(ctx, &tl, scoring, &ts);
        cr_assert_eq(st, 0, "seed %llu: %s", (unsigned long long)seed,
                     moevk_context_last_error(ctx));
        cr_assert_eq(moevk_tensor_download(&ts, sc), 0);
        moevk_ref_scores(out, c->T, c->E, scoring, ref_sc);
        err = mvkt_rel_l2(sc, ref_sc, TE);
        cr_assert_leq(err, 1e-5, "seed %llu T=%u H=%u E=%u: %s scores error %g",
                      (unsigned long long)seed, c->T, c->H, c->E, s ? "sigmoid" : "softmax", err);
    }
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&tw);
    moevk_tensor_destroy(&tb);
    moevk_tensor_destroy(&tl);
    moevk_tensor_destroy(&ts);
    free(x), free(bias), free(w), free(out), free(ref), free(sc), free(ref_sc);
}

Test(router, edge_shapes)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed();
    const router_case cases[] = {
        {1, 1, 1, MOEVK_DTYPE_F32, 0},     {1, 7, 1024, MOEVK_DTYPE_F16, 1},
        {7, 129, 3, MOEVK_DTYPE_BF16, 1},  {129, 64, 8, MOEVK_DTYPE_F32, 1},
        {3, 1000, 1000, MOEVK_DTYPE_BF16, 0}, {1000, 33, 2, MOEVK_DTYPE_F16, 0},
        {2, 5, 1023, MOEVK_DTYPE_F16, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(ctx, &cases[i], seed + i);
    mvkt_context_end(ctx);
}

Test(router, random_shapes)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed);
    for (int i = 0; i < 24; i++) {
        router_case c = {
            .T = mvkt_range(&r, 1, 200),
            .H = mvkt_range(&r, 1, 700),
            .E = mvkt_range(&r, 1, 1024),
            .dt = (moevk_dtype)mvkt_range(&r, 0, 2),
            .bias = (int)mvkt_range(&r, 0, 1),
        };
        run_case(ctx, &c, seed ^ (0x1000u + (uint64_t)i));
    }
    mvkt_context_end(ctx);
}

Test(router, nan_and_inf_inputs)
{
    moevk_context *ctx = mvkt_context();
    enum { T = 4, E = 5 };
    const float l[T * E] = {
        0, 1, NAN, 2, 3,              /* NaN anywhere: softmax row is NaN    */
        INFINITY, 0, 1, 2, 3,         /* +inf: inf - inf = NaN, row NaN      */
        -INFINITY, 0, 1, 2, 3,        /* -inf: probability 0                 */
        80, 81, -80, -100, 0,         /* large values: stable, no overflow   */
    };
    float out[T * E], ref[T * E];
    moevk_tensor tl, ts;
    uint64_t shape[2] = {T, E};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &tl), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &ts), 0);
    cr_assert_eq(moevk_tensor_upload(&tl, l), 0);
    for (int s = 0; s < 2; s++) {
        moevk_scoring sc = s ? MOEVK_SCORING_SIGMOID : MOEVK_SCORING_SOFTMAX;
        mvkt_poison_tensor(&ts);
        cr_assert_eq(moevk_router_scores(ctx, &tl, sc, &ts), 0);
        cr_assert_eq(moevk_tensor_download(&ts, out), 0);
        moevk_ref_scores(l, T, E, sc, ref);
        for (int i = 0; i < T * E; i++) {
            cr_assert_eq(isnan(out[i]), isnan(ref[i]), "%s [%d]: gpu %g ref %g",
                         s ? "sigmoid" : "softmax", i, out[i], ref[i]);
            if (!isnan(ref[i]))
                cr_assert_leq(fabsf(out[i] - ref[i]), 1e-6f + 1e-5f * fabsf(ref[i]),
                              "%s [%d]: gpu %g ref %g", s ? "sigmoid" : "softmax", i, out[i],
                              ref[i]);
        }
    }
    /* the finite softmax rows sum to one */
    mvkt_poison_tensor(&ts);
    cr_assert_eq(moevk_router_scores(ctx, &tl, MOEVK_SCORING_SOFTMAX, &ts), 0);
    cr_assert_eq(moevk_tensor_download(&ts, out), 0);
    for (int t = 2; t < 4; t++) {
        double sum = 0;
        for (int e = 0; e < E; e++)
            sum += out[t * E + e];
        cr_assert_float_eq(sum, 1.0, 1e-6);
    }
    moevk_tensor_destroy(&tl);
    moevk_tensor_destroy(&ts);
    mvkt_context_end(ctx);
}

Test(router, bitwise_repeatable)
{
    moevk_context *ctx = mvkt_context();
    mvkt_rng r = mvkt_rng_make(mvkt_base_seed());
    enum { T = 33, H = 300, E = 64 };
    float *x = malloc(sizeof(float) * T * H);
    for (int i = 0; i < T * H; i++)
        x[i] = mvkt_uniform(&r, -1, 1);
    void *w = mvkt_random_weights(&r, MOEVK_DTYPE_BF16, (size_t)E * H, 0.1f);
    moevk_tensor tx, tw, tl;
    uint64_t sx[2] = {T, H}, sw[2] = {E, H}, sl[2] = {T, E};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sx, &tx), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_BF16, 2, sw, &tw), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sl, &tl), 0);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    cr_assert_eq(moevk_tensor_upload(&tw, w), 0);
    float first[T * E], again[T * E];
    for (int run = 0; run < 10; run++) {
        mvkt_poison_tensor(&tl);
        cr_assert_eq(moevk_router_logits(ctx, &tx, &tw, NULL, &tl), 0);
        cr_assert_eq(moevk_tensor_download(&tl, run ? again : first), 0);
        if (run)
            cr_assert(memcmp(first, again, sizeof(first)) == 0, "run %d differs bitwise", run);
    }
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&tw);
    moevk_tensor_destroy(&tl);
    free(x);
    free(w);
    mvkt_context_end(ctx);
}

Test(router, bad_arguments_name_the_field)
{
    moevk_context *ctx = mvkt_context();
    moevk_tensor tx, tw, tl, tw16;
    uint64_t sx[2] = {4, 16}, sw[2] = {3, 16}, sl[2] = {4, 3};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sx, &tx), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sw, &tw), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sl, &tl), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F16, 2, sx, &tw16), 0);
    struct { const char *field; moevk_tensor x, w, l; } bad[6];
    bad[0].field = "x.dtype"; bad[0].x = tw16; bad[0].w = tw; bad[0].l = tl;
    bad[1].field = "w.shape[1]"; bad[1].x = tx; bad[1].w = tw; bad[1].l = tl;
    bad[1].w.shape[1] = 15;
    bad[2].field = "logits shape"; bad[2].x = tx; bad[2].w = tw; bad[2].l = tl;
    bad[2].l.shape[1] = 2;
    bad[3].field = "x.ndim"; bad[3].x = tx; bad[3].w = tw; bad[3].l = tl; bad[3].x.ndim = 3;
    bad[4].field = "w.buffer"; bad[4].x = tx; bad[4].w = tw; bad[4].l = tl;
    bad[4].w.buffer = NULL;
    bad[5].field = "x: "; bad[5].x = tx; bad[5].w = tw; bad[5].l = tl; bad[5].x.shape[0] = 5;
    for (int i = 0; i < 6; i++) {
        moevk_status st = moevk_router_logits(ctx, &bad[i].x, &bad[i].w, NULL, &bad[i].l);
        cr_assert_eq(st, MOEVK_ERROR_INVALID_ARGUMENT, "case %d", i);
        cr_assert(strstr(moevk_context_last_error(ctx), bad[i].field),
                  "case %d: message '%s' should name '%s'", i, moevk_context_last_error(ctx),
                  bad[i].field);
    }
    cr_assert_eq(moevk_router_logits(ctx, NULL, &tw, NULL, &tl), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_router_scores(ctx, &tl, (moevk_scoring)5, &tl),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "scoring"));
    /* still usable */
    cr_assert_eq(moevk_router_logits(ctx, &tx, &tw, NULL, &tl), MOEVK_SUCCESS);
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&tw);
    moevk_tensor_destroy(&tl);
    moevk_tensor_destroy(&tw16);
    mvkt_context_end(ctx);
}
