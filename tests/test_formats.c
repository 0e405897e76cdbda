/*
 * Block weight formats on the GPU: every format of src/formats.c through
 * every expert kernel path (skinny, 16-row and 64-row tiles, the emulated
 * matrix units), routed and shared experts, against the CPU reference on
 * the same dequantised weights (relative L2 <= 1e-5: f32 activations).
 * The reference decoders themselves are checked bit for bit against
 * gguf-py in tests/test_formats.py.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "random_layer.h"
#include "ref/ref.h"
#include "testing.h"

static const moevk_dtype block_formats[] = {
    MOEVK_DTYPE_Q8_0, MOEVK_DTYPE_Q4_0, MOEVK_DTYPE_Q4_1, MOEVK_DTYPE_Q5_0, MOEVK_DTYPE_Q5_1,
    MOEVK_DTYPE_Q2_K, MOEVK_DTYPE_Q3_K, MOEVK_DTYPE_Q4_K, MOEVK_DTYPE_Q5_K, MOEVK_DTYPE_Q6_K,
    MOEVK_DTYPE_IQ4_NL, MOEVK_DTYPE_IQ4_XS, MOEVK_DTYPE_MXFP4,
    MOEVK_DTYPE_GPTQ4, MOEVK_DTYPE_NF4, MOEVK_DTYPE_FP8_E4M3,
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
        .H = be == 32 ? 96 : 2 * be, .F = be == 32 ? 160 : be == 64 ? 192 : be, .E = 3, .K = 2,
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
        cr_assert(be == 32 || be == 64 || be == 128 || be == 256, "%s: %u elements per block",
                  name, be);
        cr_assert_eq(moevk_dtype_row_bytes(dt, be - 1), 0, "%s: a partial block", name);
        cr_assert_eq(moevk_dtype_row_bytes(dt, 3 * (uint64_t)be),
                     3 * moevk_dtype_row_bytes(dt, be));
    }
    cr_assert_eq(moevk_dtype_from_name("Q4_K"), MOEVK_DTYPE_Q4_K, "case-insensitive");
    cr_assert_eq(moevk_dtype_from_name("q4_k_m"), -1);
    cr_assert_eq(moevk_dtype_row_bytes(MOEVK_DTYPE_Q4_K, 256), 144);
    cr_assert_eq(moevk_dtype_row_bytes(MOEVK_DTYPE_MXFP4, 64), 34);
    cr_assert_eq(moevk_dtype_row_bytes(MOEVK_DTYPE_Q6_K, 512), 420);
    cr_assert_eq(moevk_dtype_row_bytes(MOEVK_DTYPE_GPTQ4, 64), 38);
    cr_assert_eq(moevk_dtype_row_bytes(MOEVK_DTYPE_NF4, 128), 72);
    cr_assert_eq(moevk_dtype_row_bytes(MOEVK_DTYPE_FP8_E4M3, 256), 264);
    cr_assert_eq(moevk_dtype_from_name("awq4"), MOEVK_DTYPE_GPTQ4, "AWQ repacks into gptq4");
    cr_assert_eq(moevk_dtype_from_name("AWQ4"), MOEVK_DTYPE_GPTQ4);
    cr_assert_eq(moevk_dtype_from_name("awq"), -1);
    cr_assert_str_eq(moevk_dtype_name(MOEVK_DTYPE_FP8_E4M3), "fp8_e4m3");
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

/* moevk's own blocks (gptq4, nf4, fp8_e4m3) decode as docs/semantics.md
 * writes them: every e4m3fn code against its value computed in double,
 * every NF4 code against bitsandbytes' literals, gptq4 over every
 * quant and zero point. */
Test(formats, hf_blocks_decode_as_specified)
{
    /* fp8_e4m3: scale 1 then codes 0..127; scale -2 then 128..255 */
    uint8_t fb[2][132];
    float fv[256];
    for (int h = 0; h < 2; h++) {
        float s = h ? -2.0f : 1.0f;
        memcpy(fb[h], &s, 4);
        for (int j = 0; j < 128; j++)
            fb[h][4 + j] = (uint8_t)(128 * h + j);
    }
    mvk_format_decode(MOEVK_DTYPE_FP8_E4M3, fb, 0, 256, fv);
    for (int c = 0; c < 256; c++) {
        const int e = (c >> 3) & 15, m = c & 7, neg = c >> 7;
        double want = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
        want = (neg ? -want : want) * (c >= 128 ? -2.0 : 1.0);
        if ((c & 0x7f) == 0x7f)
            cr_assert(isnan(fv[c]), "code 0x%02x is NaN", c);
        else
            cr_assert_eq((double)fv[c], want, "e4m3 code 0x%02x: %.9g, want %.9g", c, fv[c], want);
    }
    cr_assert_eq(fv[0x7e], 448.0f, "the largest e4m3fn value");
    /* nf4: absmax 3, byte j = (code 2j % 16) << 4 | (code 2j + 1) % 16 */
    static const double nf4[16] = {-1.0, -0.6961928009986877, -0.5250730514526367,
                                   -0.39491748809814453, -0.28444138169288635,
                                   -0.18477343022823334, -0.09105003625154495, 0.0,
                                   0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                                   0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                                   0.7229568362236023, 1.0};
    uint8_t nb[36];
    float nv[64], a = 3.0f;
    memcpy(nb, &a, 4);
    for (int j = 0; j < 32; j++)
        nb[4 + j] = (uint8_t)(((2 * j) % 16) << 4 | (2 * j + 1) % 16);
    mvk_format_decode(MOEVK_DTYPE_NF4, nb, 0, 64, nv);
    for (int i = 0; i < 64; i++)
        cr_assert_eq(nv[i], (float)nf4[i % 16] * 3.0f, "nf4 element %d", i);
    /* gptq4: every zero point 0..16 against every quant, d = 0.75 */
    for (int z = 0; z <= 16; z++) {
        uint8_t gb[19];
        float gv[32];
        const uint16_t d = moevk_float_to_half(0.75f);
        gb[0] = (uint8_t)d, gb[1] = (uint8_t)(d >> 8), gb[2] = (uint8_t)z;
        for (int j = 0; j < 16; j++)
            gb[3 + j] = (uint8_t)(j | (15 - j) << 4);
        mvk_format_decode(MOEVK_DTYPE_GPTQ4, gb, 0, 32, gv);
        for (int j = 0; j < 16; j++) {
            cr_assert_eq(gv[j], 0.75f * (float)(j - z), "z %d element %d", z, j);
            cr_assert_eq(gv[j + 16], 0.75f * (float)(15 - j - z), "z %d element %d", z, j + 16);
        }
    }
}

/* Blocks no kernel reads are refused at layer create, the message naming
 * the matrix, the block and what is wrong: a gptq4 zero point over 16, an
 * fp8 NaN code, a non-finite nf4 absmax. */
Test(formats, hf_blocks_refused)
{
    static const struct {
        moevk_dtype dt;
        uint32_t byte; /* of block 1 of the up matrix of expert 1 */
        uint8_t value;
        const char *msg;
    } bad[] = {
        {MOEVK_DTYPE_GPTQ4, 2, 17, "zero point 17 is not in 0..16"},
        {MOEVK_DTYPE_FP8_E4M3, 4 + 5, 0xff, "element 5 is the e4m3fn NaN code 0xff"},
        {MOEVK_DTYPE_FP8_E4M3, 4 + 9, 0x7f, "NaN code 0x7f"},
        {MOEVK_DTYPE_NF4, 3, 0x7f, "f32 scale is not finite"},
    };
    moevk_context *ctx = mvkt_context();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mvkt_rng r = mvkt_rng_make(11 + i);
        rlayer rl;
        rlayer_make(&r, &rl, &(rlayer_spec){.H = 256, .F = 128, .E = 2, .K = 1, .dtype = bad[i].dt});
        moevk_layer *L;
        cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        moevk_layer_destroy(L);
        const uint64_t bb = moevk_dtype_row_bytes(bad[i].dt, moevk_dtype_block_elems(bad[i].dt));
        uint8_t *up = (uint8_t *)rl.up + moevk_dtype_row_bytes(bad[i].dt, 256) * 128;
        up[bb + bad[i].byte] = bad[i].value;
        if (bad[i].dt == MOEVK_DTYPE_NF4)
            up[bb + 2] |= 0x80; /* exponent all ones: NaN or Inf */
        cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_ERROR_INVALID_ARGUMENT, "%s",
                     moevk_dtype_name(bad[i].dt));
        const char *e = moevk_context_last_error(ctx);
        cr_assert(strstr(e, "expert 1's up matrix") && strstr(e, "block 1 ") &&
                      strstr(e, bad[i].msg),
                  "%s", e);
        rlayer_free(&rl);
    }
    mvkt_context_end(ctx);
}
