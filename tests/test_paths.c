/*
 * The expert kernel paths (skinny GEMV, 16-row tiles, 64-row tiles) and
 * batch invariance:
 *  - a token's output is bitwise the same alone as inside a batch of
 *    T = 7, 64, 513 (every routing mode, activation and weight dtype,
 *    shared experts and biases, capacity off), whichever path its experts
 *    took in either run;
 *  - forcing every expert onto one path gives bitwise the result of the
 *    path chosen by row count, for each path, and the result is right
 *    against the reference.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "random_layer.h"
#include "ref/ref.h"
#include "testing.h"

static const char *const path_names[3] = {"skinny", "16-row tiles", "64-row tiles"};

Test(paths, a_token_alone_is_bitwise_the_token_in_a_batch, .timeout = 900)
{
    static const uint32_t Ts[] = {7, 64, 513};
    const uint64_t base = mvkt_base_seed() ^ 0xba7c;
    moevk_context *ctx = mvkt_context();
    int cases = 0;
    for (uint32_t i = 0; i < 18; i++) {
        const uint64_t seed = base + i;
        mvkt_rng r = mvkt_rng_make(seed);
        const uint32_t T = Ts[i % 3];
        rlayer_spec sp = {
            .H = 24 + (uint32_t)(mvkt_next(&r) % 40), .F = 8 + (uint32_t)(mvkt_next(&r) % 90),
            .E = 4 + i % 5, .K = 1 + i % 3,
            .routing = (moevk_routing)(i % 3),
            .activation = (moevk_activation)(i % 10),
            .dtype = (moevk_dtype)((i / 3) % 3),
            .shared = i % 4 == 1 ? 1 : 0,
            .biases = i % 5 == 2,
        };
        rlayer rl;
        rlayer_make(&r, &rl, &sp);
        moevk_layer *L;
        cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        float *x = random_x(&r, T, sp.H);
        pass_out batch;
        forward(ctx, L, x, T, &batch);
        const uint32_t step = T > 40 ? T / 19 : 1;
        for (uint32_t t = 0; t < T; t += step) {
            pass_out solo;
            forward(ctx, L, x + (size_t)t * sp.H, 1, &solo);
            cr_assert(memcmp(solo.y, batch.y + (size_t)t * sp.H, sizeof(float) * sp.H) == 0,
                      "seed %llu: token %u of %u (routing %d, activation %d, %s weights): y "
                      "alone differs from y in the batch",
                      (unsigned long long)seed, t, T, (int)sp.routing, (int)sp.activation,
                      moevk_dtype_name(sp.dtype));
            cr_assert(memcmp(solo.ids, batch.ids + (size_t)t * sp.K, 4 * sp.K) == 0);
            cr_assert(memcmp(solo.w, batch.w + (size_t)t * sp.K, 4 * sp.K) == 0);
            pass_free(&solo);
        }
        pass_free(&batch);
        moevk_layer_destroy(L);
        rlayer_free(&rl);
        free(x);
        cases++;
    }
    cr_assert_eq(cases, 18);
    mvkt_context_end(ctx);
}

Test(paths, every_path_gives_the_same_bits, .timeout = 900)
{
    static const uint32_t Ts[] = {1, 5, 40, 300};
    const uint64_t base = mvkt_base_seed() ^ 0x9a75;
    moevk_context *ctx = mvkt_context();
    for (uint32_t i = 0; i < 8; i++) {
        const uint64_t seed = base + i;
        mvkt_rng r = mvkt_rng_make(seed);
        const uint32_t T = Ts[i % 4];
        rlayer_spec sp = {
            /* K and F off the chunk and tile sizes: remainders everywhere */
            .H = 20 + 67 * (i % 3), .F = 9 + 50 * (i % 4), .E = 3 + i % 4, .K = 1 + i % 2,
            .routing = (moevk_routing)(i % 3), .activation = (moevk_activation)(i % 8),
            .dtype = (moevk_dtype)(i % 3), .cf = i % 4 == 3 ? 1.0f : 0.0f,
            .shared = i % 2, .biases = i % 3 == 1,
        };
        rlayer rl;
        rlayer_make(&r, &rl, &sp);
        float *x = random_x(&r, T, sp.H), *ref = malloc(sizeof(float) * T * sp.H);
        moevk_layer *L;
        cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        pass_out autop;
        cr_assert_eq(moevk_testing_force_path(ctx, -1), MOEVK_SUCCESS);
        forward(ctx, L, x, T, &autop);
        cr_assert_eq(moevk_ref_layer_forward(&rl.d, T, x, ref, NULL, NULL, NULL, NULL), 0);
        double tol = sp.dtype == MOEVK_DTYPE_F32 ? 1e-5 : 1e-4;
        double err = mvkt_rel_l2(autop.y, ref, (size_t)T * sp.H);
        cr_assert_leq(err, tol, "seed %llu: rel. error %g", (unsigned long long)seed, err);
        for (int path = 0; path < 3; path++) {
            pass_out forced;
            cr_assert_eq(moevk_testing_force_path(ctx, path), MOEVK_SUCCESS);
            forward(ctx, L, x, T, &forced);
            char what[96];
            snprintf(what, sizeof what, "T = %u, every expert on %s", T, path_names[path]);
            assert_same(&autop, &forced, T, &rl.d, what, seed);
            pass_free(&forced);
        }
        cr_assert_eq(moevk_testing_force_path(ctx, -1), MOEVK_SUCCESS);
        pass_free(&autop);
        moevk_layer_destroy(L);
        rlayer_free(&rl);
        free(x);
        free(ref);
    }
    cr_assert_eq(moevk_testing_force_path(ctx, 3), MOEVK_ERROR_INVALID_ARGUMENT);
    mvkt_context_end(ctx);
}

/* The structure of small passes on a Mixtral-shaped layer (H and F scaled
 * by 1/8): how many dispatches and barriers, and the multiply-adds and
 * weight bytes launched against those the routing needs. With at most 16
 * tokens no expert has more than 16 rows, so one row tile at most: the
 * bounds below hold for any routing. */
Test(paths, small_passes_launch_what_they_need, .timeout = 300)
{
    const uint64_t seed = mvkt_base_seed() ^ 0x5ca1e;
    mvkt_rng r = mvkt_rng_make(seed);
    rlayer_spec sp = {.H = 512, .F = 1792, .E = 8, .K = 2, .dtype = MOEVK_DTYPE_BF16};
    rlayer rl;
    rlayer_make(&r, &rl, &sp);
    moevk_context *ctx = mvkt_context();
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS);
    static const uint32_t Ts[] = {1, 16};
    static const double max_macs[] = {1.25, 2.0};
    for (int i = 0; i < 2; i++) {
        const uint32_t T = Ts[i];
        float *x = random_x(&r, T, sp.H);
        moevk_tensor tx = tensor2(ctx, T, sp.H), ty = tensor2(ctx, T, sp.H);
        cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
        for (int stats = 0; stats < 2; stats++) {
            moevk_routing_stats st = {0};
            cr_assert_eq(moevk_layer_forward(L, &tx, &ty, stats ? &st : NULL), MOEVK_SUCCESS);
            moevk_pass_info in;
            cr_assert_eq(moevk_layer_pass_info(L, &in), MOEVK_SUCCESS, "%s",
                         moevk_context_last_error(ctx));
            cr_assert_eq(in.tokens, T);
            cr_assert_eq(in.route_chunks, 1);
            cr_assert_eq(in.expert_chunks, 1);
            /* route (fused router), permute (one dispatch), up and down per
             * possible path (T = 1: the skinny one; 16: + 16-row tiles),
             * combine; statistics: 2 more */
            const uint32_t paths = T <= 8 ? 1 : 2;
            cr_assert_eq(in.dispatches, 1 + 1 + 2 * paths + 1 + (stats ? 2 : 0),
                         "T = %u, stats %d: %u dispatches", T, stats, in.dispatches);
            cr_assert_leq(in.barriers, in.dispatches + 1, "T = %u: %u barriers", T, in.barriers);
            for (int s = MOEVK_STAGE_EXPERTS_UP; s <= MOEVK_STAGE_EXPERTS_DOWN; s++) {
                double macs = in.macs_launched[s] / in.macs_useful[s];
                double bytes = in.weight_bytes_fetched[s] / in.weight_bytes_needed[s];
                cr_assert_leq(macs, max_macs[i], "seed %llu T = %u %s: %.3fx the useful MACs",
                              (unsigned long long)seed, T, moevk_stage_name(s), macs);
                cr_assert_leq(bytes, 1.05, "seed %llu T = %u %s: %.3fx the needed bytes",
                              (unsigned long long)seed, T, moevk_stage_name(s), bytes);
            }
            if (T == 1) {
                cr_assert_eq(in.experts_per_path[0], sp.K, "one row each: the skinny path");
                cr_assert_eq(in.macs_launched[MOEVK_STAGE_EXPERTS_UP],
                             in.macs_useful[MOEVK_STAGE_EXPERTS_UP]);
                cr_assert_eq(in.macs_useful[MOEVK_STAGE_EXPERTS_UP],
                             (double)sp.K * sp.F * sp.H * 2, "k rows x F x H x (gate + up)");
                cr_assert_eq(in.weight_bytes_needed[MOEVK_STAGE_EXPERTS_DOWN],
                             (double)sp.K * sp.H * sp.F * 2, "k bf16 down matrices");
            }
        }
        /* every path forced: the GPU's schedule agrees with the count */
        for (int path = 0; path < 3; path++) {
            cr_assert_eq(moevk_testing_force_path(ctx, path), 0);
            cr_assert_eq(moevk_layer_forward(L, &tx, &ty, NULL), MOEVK_SUCCESS);
            moevk_pass_info in;
            cr_assert_eq(moevk_layer_pass_info(L, &in), MOEVK_SUCCESS, "%s",
                         moevk_context_last_error(ctx));
            uint32_t n = in.experts_per_path[0] + in.experts_per_path[1] + in.experts_per_path[2];
            cr_assert_eq(in.experts_per_path[path], n, "forced path %d", path);
        }
        cr_assert_eq(moevk_testing_force_path(ctx, -1), 0);
        moevk_tensor_destroy(&tx);
        moevk_tensor_destroy(&ty);
        free(x);
    }
    moevk_layer_destroy(L);
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}

/* The matrix-unit variant of the 64-row tiles, with its intrinsics
 * emulated: right against the reference (remainders in every dimension,
 * every dtype, gated and not), its self-check passing, a planted self-check
 * failure falling back to the portable kernel, and batch-invariant layers
 * never using it. */
Test(paths, emulated_matrix_units, .timeout = 600)
{
    const uint64_t base = mvkt_base_seed() ^ 0xc0e1;
    moevk_context *ctx = mvkt_context();
    cr_assert_eq(moevk_context_device_info(ctx)->matrix_units, 0, "lavapipe has none");
    int differ = 0; /* cases where the matrix-unit order changed bits */
    for (uint32_t i = 0; i < 6; i++) {
        const uint64_t seed = base + i;
        mvkt_rng r = mvkt_rng_make(seed);
        const uint32_t T = 230 + 31 * i;
        rlayer_spec sp = {
            .H = 77 + 16 * i, .F = 70 + 9 * i, .E = 3, .K = 2,
            .routing = (moevk_routing)(i % 3), .activation = (moevk_activation)(i % 8),
            .dtype = (moevk_dtype)(i % 3), .shared = i % 2, .biases = i == 4,
        };
        rlayer rl;
        rlayer_make(&r, &rl, &sp);
        float *x = random_x(&r, T, sp.H), *ref = malloc(sizeof(float) * T * sp.H);
        cr_assert_eq(moevk_ref_layer_forward(&rl.d, T, x, ref, NULL, NULL, NULL, NULL), 0);

        /* portable */
        cr_assert_eq(moevk_testing_matrix_units(ctx, 0), MOEVK_SUCCESS);
        moevk_layer *L;
        cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS);
        pass_out portable;
        forward(ctx, L, x, T, &portable);
        moevk_pass_info in;
        cr_assert_eq(moevk_layer_pass_info(L, &in), MOEVK_SUCCESS);
        cr_assert_gt(in.experts_per_path[2], 0, "seed %llu: no expert on 64-row tiles",
                     (unsigned long long)seed);
        moevk_layer_destroy(L);

        /* emulated matrix units */
        cr_assert_eq(moevk_testing_matrix_units(ctx, 1), MOEVK_SUCCESS);
        cr_assert_eq(moevk_context_device_info(ctx)->matrix_units, 1, "self-check passed");
        cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS);
        pass_out mu;
        forward(ctx, L, x, T, &mu);
        double tol = sp.dtype == MOEVK_DTYPE_F32 ? 1e-5 : 1e-4;
        double err = mvkt_rel_l2(mu.y, ref, (size_t)T * sp.H);
        cr_assert_leq(err, tol, "seed %llu: emulated matrix units, rel. error %g",
                      (unsigned long long)seed, err);
        cr_assert(memcmp(mu.ids, portable.ids, 4 * T * sp.K) == 0, "routing is not theirs");
        differ += memcmp(mu.y, portable.y, sizeof(float) * T * sp.H) != 0;
        moevk_layer_destroy(L);

        /* a batch-invariant layer keeps the portable kernel */
        moevk_layer_desc d = rl.d;
        d.flags = MOEVK_LAYER_BATCH_INVARIANT;
        cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_SUCCESS);
        pass_out inv;
        forward(ctx, L, x, T, &inv);
        assert_same(&portable, &inv, T, &rl.d, "batch-invariant layer beside matrix units",
                    seed);
        moevk_layer_destroy(L);

        /* a failing self-check: the portable kernel, bit for bit */
        cr_assert_eq(moevk_testing_matrix_units(ctx, 2), MOEVK_SUCCESS);
        cr_assert_eq(moevk_context_device_info(ctx)->matrix_units, -1);
        cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS);
        pass_out fallback;
        forward(ctx, L, x, T, &fallback);
        assert_same(&portable, &fallback, T, &rl.d, "after a failed self-check", seed);
        moevk_layer_destroy(L);

        pass_free(&portable);
        pass_free(&mu);
        pass_free(&inv);
        pass_free(&fallback);
        rlayer_free(&rl);
        free(x);
        free(ref);
    }
    /* the emulated kernel ran: it sums k in its own order (not the
     * portable chunks), which changes low bits of long dot products */
    cr_assert_gt(differ, 0, "the matrix-unit kernel never ran");
    cr_assert_eq(moevk_testing_matrix_units(ctx, 0), MOEVK_SUCCESS);
    mvkt_context_end(ctx);
}
