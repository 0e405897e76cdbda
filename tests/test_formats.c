/*
 * Block weight formats on the GPU: every format of src/formats.c through
 * every expert kernel path (skinny, 16-row and 64-row tiles, the emulated
 * matrix units), routed and shared experts, against the CPU reference on
 * the same dequantised weights (relative L2 <= 1e-5: f32 activations).
 * The reference decoders themselves are checked bit for bit against
 * gguf-py in tests/test_formats.py.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "random_layer.h"
#include "ref/ref.h"
#include "testing.h"

static const moevk_dtype block_formats[] = {
    MOEVK_DTYPE_Q8_0, MOEVK_DTYPE_Q4_0, MOEVK_DTYPE_Q4_1, MOEVK_DTYPE_Q5_0, MOEVK_DTYPE_Q5_1,
    MOEVK_DTYPE_Q2_K, MOEVK_DTYPE_Q3_K, MOEVK_DTYPE_Q4_K, MOEVK_DTYPE_Q5_K, MOEVK_DTYPE_Q6_K,
    MOEVK_DTYPE_IQ4_NL, MOEVK_DTYPE_IQ4_XS, MOEVK_DTYPE_MXFP4,
};

#define NFORMATS (sizeof(block_formats) / sizeof(block_formats[0]))

/* One format against the reference: at T = 3 on the path chosen by row
 * count and forced onto each path (skinny, 16-row, 64-row, the 64-row tile
 * on the emulated matrix units); at T = 130 (several tiles per expert) on
 * the chosen paths. Pipelines are compiled per format and path, which is
 * most of the time on lavapipe, so the forced paths run on the few tokens. */
static void check_format(moevk_context *ctx, moevk_dtype dt, uint64_t seed)
{
    mvkt_rng r = mvkt_rng_make(seed);
    const uint32_t be = moevk_dtype_block_elems(dt);
    rlayer_spec sp = {
        .H = be == 256 ? 512 : 96, .F = be == 256 ? 256 : 160, .E = 3, .K = 2,
        .routing = (moevk_routing)(seed % 3), .activation = (moevk_activation)(seed % 6),
        .dtype = dt, .shared = 1, .biases = seed % 2 == 0,
    };
    rlayer rl;
    rlayer_make(&r, &rl, &sp);
    static const uint32_t Ts[] = {3, 130};
    for (int ti = 0; ti < 2; ti++) {
        const uint32_t T = Ts[ti];
        float *x = random_x(&r, T, sp.H), *ref = malloc(sizeof(float) * T * sp.H);
        cr_assert_eq(moevk_ref_layer_forward(&rl.d, T, x, ref, NULL, NULL, NULL, NULL), 0);
        for (int variant = -1; variant < (T < 16 ? 4 : 0); variant++) {
            const int path = variant < 3 ? variant : 2;
            cr_assert_eq(moevk_testing_force_path(ctx, path), MOEVK_SUCCESS);
            cr_assert_eq(moevk_testing_matrix_units(ctx, variant == 3), MOEVK_SUCCESS);
            moevk_layer *L;
            cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS, "%s: %s",
                         moevk_dtype_name(dt), moevk_context_last_error(ctx));
            uint64_t wb = 0;
            moevk_layer_memory(L, &wb, NULL);
            const uint64_t packed =
                (uint64_t)(sp.E + 1) * 3 * moevk_dtype_row_bytes(dt, sp.H) * sp.F;
            cr_assert_lt(wb, packed * 2, "%s: %llu weight bytes on the device", moevk_dtype_name(dt),
                         (unsigned long long)wb);
            pass_out o;
            forward(ctx, L, x, T, &o);
            double err = mvkt_rel_l2(o.y, ref, (size_t)T * sp.H);
            cr_assert_leq(err, 1e-5, "seed %llu %s T = %u variant %d: rel. error %g",
                          (unsigned long long)seed, moevk_dtype_name(dt), T, variant, err);
            pass_free(&o);
            moevk_layer_destroy(L);
        }
        free(x);
        free(ref);
    }
    cr_assert_eq(moevk_testing_force_path(ctx, -1), MOEVK_SUCCESS);
    cr_assert_eq(moevk_testing_matrix_units(ctx, 0), MOEVK_SUCCESS);
    rlayer_free(&rl);
}

Test(formats, every_format_on_every_path, .timeout = 900)
{
    const uint64_t base = mvkt_base_seed() ^ 0xf0f0;
    moevk_context *ctx = mvkt_context();
    /* MOEVK_TEST_CASES_SCALE below 1 (the sanitizer and second-driver
     * passes) takes a run of consecutive formats from a seeded start, so
     * that runs with different seeds cover them all in turn. */
    const size_t n = (size_t)mvkt_scaled((int)NFORMATS, 3) < NFORMATS ? (size_t)mvkt_scaled((int)NFORMATS, 3)
                                                                       : NFORMATS;
    const size_t first = n < NFORMATS ? (size_t)(base % NFORMATS) : 0;
    for (size_t j = 0; j < n; j++) {
        const size_t i = (first + j) % NFORMATS;
        check_format(ctx, block_formats[i], base + i);
    }
    mvkt_context_end(ctx);
}

Test(formats, names_and_sizes)
{
    for (size_t i = 0; i < NFORMATS; i++) {
        moevk_dtype dt = block_formats[i];
        const char *name = moevk_dtype_name(dt);
        cr_assert_eq(moevk_dtype_from_name(name), (int)dt, "%s", name);
        cr_assert_eq(moevk_dtype_size(dt), 0, "%s has no element size", name);
        const uint32_t be = moevk_dtype_block_elems(dt);
        cr_assert(be == 32 || be == 256, "%s: %u elements per block", name, be);
        cr_assert_eq(moevk_dtype_row_bytes(dt, be - 1), 0, "%s: a partial block", name);
        cr_assert_eq(moevk_dtype_row_bytes(dt, 3 * (uint64_t)be),
                     3 * moevk_dtype_row_bytes(dt, be));
    }
    cr_assert_eq(moevk_dtype_from_name("Q4_K"), MOEVK_DTYPE_Q4_K, "case-insensitive");
    cr_assert_eq(moevk_dtype_from_name("q4_k_m"), -1);
    cr_assert_eq(moevk_dtype_row_bytes(MOEVK_DTYPE_Q4_K, 256), 144);
    cr_assert_eq(moevk_dtype_row_bytes(MOEVK_DTYPE_MXFP4, 64), 34);
    cr_assert_eq(moevk_dtype_row_bytes(MOEVK_DTYPE_Q6_K, 512), 420);
}

/* A block format is for expert weights only, and a row that is not whole
 * blocks is refused naming the format and the size. */
Test(formats, bad_uses_are_refused)
{
    moevk_context *ctx = mvkt_context();
    mvkt_rng r = mvkt_rng_make(7);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){.H = 64, .F = 96, .E = 2, .K = 1,
                                         .dtype = MOEVK_DTYPE_Q4_0});
    moevk_layer_desc d = rl.d;
    d.router_dtype = MOEVK_DTYPE_Q4_0;
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "router_dtype"), "%s",
              moevk_context_last_error(ctx));
    d = rl.d;
    d.weight_dtype = MOEVK_DTYPE_Q4_K; /* 64 and 96 are no whole 256-blocks */
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "q4_k"), "%s", moevk_context_last_error(ctx));
    cr_assert(strstr(moevk_context_last_error(ctx), "256"), "%s", moevk_context_last_error(ctx));
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}
