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
#include <stdio.h>
#include <string.h>

#include "formats.h"
#include "random_layer.h"
#include "quantize.h"
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

/* ---- formats per matrix ------------------------------------------------------ */

/* GGUF's Q4_K_M keeps gate/up in q4_k and down in q6_k: per-matrix formats
 * (MOEVK_LAYER_MATRIX_DTYPES) on every path, against the reference. */
Test(formats, formats_per_matrix_on_every_path, .timeout = 600)
{
    const uint64_t seed = mvkt_base_seed() ^ 0x5151;
    moevk_context *ctx = mvkt_context();
    static const moevk_dtype pairs[][2] = {
        {MOEVK_DTYPE_Q4_K, MOEVK_DTYPE_Q6_K},
        {MOEVK_DTYPE_BF16, MOEVK_DTYPE_Q8_0},
    };
    for (int pi = 0; pi < 2; pi++) {
        mvkt_rng r = mvkt_rng_make(seed + (uint64_t)pi);
        rlayer_spec sp = {
            .H = 512, .F = 256, .E = 3, .K = 2, .activation = (moevk_activation)(seed % 6),
            .dtype = pairs[pi][0], .per_matrix = 1, .down_dtype = pairs[pi][1], .shared = 1,
        };
        rlayer rl;
        rlayer_make(&r, &rl, &sp);
        const uint32_t T = 5;
        float *x = random_x(&r, T, sp.H), *ref = malloc(sizeof(float) * T * sp.H);
        cr_assert_eq(moevk_ref_layer_forward(&rl.d, T, x, ref, NULL, NULL, NULL, NULL), 0);
        for (int path = -1; path < 3; path++) {
            cr_assert_eq(moevk_testing_force_path(ctx, path), MOEVK_SUCCESS);
            moevk_layer *L;
            cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS, "%s",
                         moevk_context_last_error(ctx));
            const moevk_layer_desc *ld = moevk_layer_get_desc(L);
            cr_assert_eq(ld->experts.gate_up_dtype, pairs[pi][0]);
            cr_assert_eq(ld->experts.down_dtype, pairs[pi][1]);
            cr_assert_eq(ld->shared.down_dtype, pairs[pi][1]);
            uint64_t wb = 0;
            moevk_layer_memory(L, &wb, NULL);
            const uint64_t FS = rl.d.shared_ffn, F = sp.F, H = sp.H;
            /* gate and up, or up alone */
            const uint64_t ups = moevk_activation_is_gated(sp.activation) ? 2 : 1;
            const uint64_t want =
                sp.E * (ups * F * moevk_dtype_row_bytes(pairs[pi][0], H) +
                        H * moevk_dtype_row_bytes(pairs[pi][1], F)) +
                ups * FS * moevk_dtype_row_bytes(pairs[pi][0], H) +
                H * moevk_dtype_row_bytes(pairs[pi][1], FS);
            cr_assert_geq(wb, want, "%llu weight bytes, the packed matrices are %llu",
                          (unsigned long long)wb, (unsigned long long)want);
            cr_assert_lt(wb, want + 65536, "%llu weight bytes for %llu packed",
                         (unsigned long long)wb, (unsigned long long)want);
            pass_out o;
            forward(ctx, L, x, T, &o);
            const double err = mvkt_rel_l2(o.y, ref, (size_t)T * sp.H);
            cr_assert_leq(err, 1e-5, "seed %llu %s/%s path %d: rel. error %g",
                          (unsigned long long)seed, moevk_dtype_name(pairs[pi][0]),
                          moevk_dtype_name(pairs[pi][1]), path, err);
            pass_free(&o);
            moevk_layer_destroy(L);
        }
        free(x);
        free(ref);
        rlayer_free(&rl);
    }
    cr_assert_eq(moevk_testing_force_path(ctx, -1), MOEVK_SUCCESS);
    mvkt_context_end(ctx);
}

/* ---- quantise at create ---------------------------------------------------------- */

typedef struct log_capture {
    char text[8192];
    size_t len;
    int info_lines;
} log_capture;

static void capture(void *user, moevk_log_level level, const char *msg)
{
    log_capture *c = user;
    if (level == MOEVK_LOG_INFO)
        c->info_lines++;
    int n = snprintf(c->text + c->len, sizeof c->text - c->len, "%d %s\n", (int)level, msg);
    if (n > 0 && (size_t)n < sizeof c->text - c->len)
        c->len += (size_t)n;
    if (level <= MOEVK_LOG_WARN)
        fprintf(stderr, "[moevk %d] %s\n", (int)level, msg);
}

static moevk_context *capturing_context(log_capture *c)
{
    memset(c, 0, sizeof *c);
    moevk_context_desc cd = {
        .flags = MOEVK_CONTEXT_VALIDATION, .log = capture, .log_user = c,
        .log_level = MOEVK_LOG_INFO,
    };
    moevk_context *ctx = NULL;
    moevk_status st = moevk_context_create(&cd, &ctx);
    const char *req = getenv("MOEVK_REQUIRE_DEVICE");
    if ((st == MOEVK_ERROR_NO_VULKAN || st == MOEVK_ERROR_NO_DEVICE) && !(req && *req && strcmp(req, "0")))
        cr_skip_test("no Vulkan device");
    cr_assert_eq(st, MOEVK_SUCCESS);
    return ctx;
}

/* The host weights quantised by the test itself, row by row, with the
 * quantiser the layer uses (src/quantize.c, compared with gguf-py in
 * tests/test_formats.py): into a per-matrix desc of packed weights. */
static void *quantise_matrix(const void *src, moevk_dtype src_dt, uint64_t rows, uint64_t cols,
                             moevk_dtype dt)
{
    const uint64_t rb = moevk_dtype_row_bytes(dt, cols);
    uint8_t *out = malloc(rows * rb + 1);
    float *row = malloc(sizeof(float) * cols);
    for (uint64_t r = 0; r < rows; r++) {
        for (uint64_t c = 0; c < cols; c++) {
            const uint64_t i = r * cols + c;
            row[c] = src_dt == MOEVK_DTYPE_F32 ? ((const float *)src)[i]
                                               : moevk_bf16_to_float(((const uint16_t *)src)[i]);
        }
        cr_assert_eq(mvk_quantize_row(dt, row, cols, out + r * rb), MOEVK_SUCCESS);
    }
    free(row);
    return out;
}

/* Quantise-at-create into q4_k with down rows of ffn = 96 (no whole
 * 256-blocks): gate/up in q4_k, down in llama.cpp's fallback q5_0, the
 * shared expert's down rows of 99 in f16 (no block fits; both said in the
 * log); the pass is bitwise the pass of the layer
 * made from the test's own quantisation, the same for 1 and 3 threads, and
 * within 1e-5 of the reference on the quantised weights. */
Test(formats, quantise_at_create, .timeout = 600)
{
    const uint64_t seed = mvkt_base_seed() ^ 0x9a9a;
    log_capture lc;
    moevk_context *ctx = capturing_context(&lc);
    for (int src = 0; src < 2; src++) {
        const moevk_dtype sdt = src ? MOEVK_DTYPE_BF16 : MOEVK_DTYPE_F32;
        mvkt_rng r = mvkt_rng_make(seed + (uint64_t)src);
        rlayer_spec sp = {.H = 512, .F = 96, .E = 4, .K = 2, .dtype = sdt, .shared = 1,
                          .activation = (moevk_activation)(seed % 6)};
        rlayer rl;
        rlayer_make(&r, &rl, &sp);
        const uint32_t FS = rl.d.shared_ffn, H = sp.H, F = sp.F, E = sp.E;
        moevk_layer_desc q = rl.d;
        q.flags |= MOEVK_LAYER_QUANTIZE;
        q.quantize_dtype = MOEVK_DTYPE_Q4_K;
        q.quantize_threads = 1;
        lc.len = 0;
        lc.text[0] = '\0';
        moevk_layer *L1, *L3, *Lp;
        cr_assert_eq(moevk_layer_create(ctx, &q, &L1), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        cr_assert(strstr(lc.text, "experts down rows: ffn = 96 is not a whole number of q4_k "
                                  "blocks (256 elements); quantised to q5_0"),
                  "log: %s", lc.text);
        const moevk_layer_desc *ld = moevk_layer_get_desc(L1);
        cr_assert_eq(ld->experts.gate_up_dtype, MOEVK_DTYPE_Q4_K);
        cr_assert_eq(ld->experts.down_dtype, MOEVK_DTYPE_Q5_0);
        cr_assert_eq(ld->shared.gate_up_dtype, MOEVK_DTYPE_Q4_K);
        /* shared_ffn = 99 divides into no block: f16 */
        cr_assert_eq(ld->shared.down_dtype, MOEVK_DTYPE_F16, "shared_ffn = %u", FS);
        cr_assert(strstr(lc.text, "shared down rows: shared_ffn = 99 is not a whole number of "
                                  "q4_k blocks (256 elements); quantised to f16"),
                  "log: %s", lc.text);
        cr_assert(ld->flags & MOEVK_LAYER_MATRIX_DTYPES);
        cr_assert(!(ld->flags & MOEVK_LAYER_QUANTIZE));
        q.quantize_threads = 3;
        cr_assert_eq(moevk_layer_create(ctx, &q, &L3), MOEVK_SUCCESS);

        /* the test's own quantisation of the same weights */
        moevk_layer_desc p = rl.d;
        p.flags |= MOEVK_LAYER_MATRIX_DTYPES;
        p.experts.gate_up_dtype = p.shared.gate_up_dtype = MOEVK_DTYPE_Q4_K;
        p.experts.down_dtype = MOEVK_DTYPE_Q5_0;
        p.shared.down_dtype = MOEVK_DTYPE_F16;
        void *qg = quantise_matrix(rl.gate, sdt, (uint64_t)E * F, H, MOEVK_DTYPE_Q4_K);
        void *qu = quantise_matrix(rl.up, sdt, (uint64_t)E * F, H, MOEVK_DTYPE_Q4_K);
        void *qd = quantise_matrix(rl.down, sdt, (uint64_t)E * H, F, MOEVK_DTYPE_Q5_0);
        void *sg = quantise_matrix(rl.sgate, sdt, FS, H, MOEVK_DTYPE_Q4_K);
        void *su = quantise_matrix(rl.sup, sdt, FS, H, MOEVK_DTYPE_Q4_K);
        void *sd = quantise_matrix(rl.sdown, sdt, H, FS, MOEVK_DTYPE_F16);
        p.experts.gate = p.experts.gate ? qg : NULL;
        p.experts.up = qu;
        p.experts.down = qd;
        p.shared.gate = p.shared.gate ? sg : NULL;
        p.shared.up = su;
        p.shared.down = sd;
        cr_assert_eq(moevk_layer_create(ctx, &p, &Lp), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        uint64_t w1 = 0, wp = 0;
        moevk_layer_memory(L1, &w1, NULL);
        moevk_layer_memory(Lp, &wp, NULL);
        cr_assert_eq(w1, wp, "packed bytes on the device");

        const uint32_t T = 7;
        float *x = random_x(&r, T, H), *ref = malloc(sizeof(float) * T * H);
        cr_assert_eq(moevk_ref_layer_forward(&q, T, x, ref, NULL, NULL, NULL, NULL), 0);
        pass_out o1, o3, op;
        forward(ctx, L1, x, T, &o1);
        forward(ctx, L3, x, T, &o3);
        forward(ctx, Lp, x, T, &op);
        assert_same(&o1, &op, T, &p, "quantised at create vs by the test", seed);
        assert_same(&o1, &o3, T, &p, "1 thread vs 3", seed);
        const double err = mvkt_rel_l2(o1.y, ref, (size_t)T * H);
        cr_assert_leq(err, 1e-5, "seed %llu from %s: rel. error %g", (unsigned long long)seed,
                      moevk_dtype_name(sdt), err);
        pass_free(&o1), pass_free(&o3), pass_free(&op);
        free(x), free(ref);
        free(qg), free(qu), free(qd), free(sg), free(su), free(sd);
        moevk_layer_destroy(L1), moevk_layer_destroy(L3), moevk_layer_destroy(Lp);
        rlayer_free(&rl);
    }
    mvkt_context_end(ctx);
}

/* A random permutation of 0 .. n - 1 into p. */
static void random_perm(mvkt_rng *r, uint32_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        p[i] = i;
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = mvkt_range(r, 0, i), t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

/* The same experts in f32 with the gate/up columns put where input_perm
 * reads them from (W'[r][perm[k]] = W[r][k]) and no permutation. */
static float *unpermuted(moevk_dtype dt, const void *w, uint32_t count, uint32_t rows,
                         uint32_t cols, const uint32_t *perm)
{
    float *out = malloc(sizeof(float) * count * rows * cols), *row = malloc(sizeof(float) * cols);
    cr_assert(out && row);
    const uint64_t rb = moevk_dtype_row_bytes(dt, cols);
    for (uint32_t e = 0; e < count; e++)
        for (uint32_t r = 0; r < rows; r++) {
            mvk_format_decode(dt, (const uint8_t *)w + ((uint64_t)e * rows + r) * rb, 0, cols, row);
            for (uint32_t k = 0; k < cols; k++)
                out[((size_t)e * rows + r) * cols + (perm ? perm[(size_t)e * cols + k] : k)] = row[k];
        }
    free(row);
    return out;
}

/* input_perm (act-order experts): every kernel path reads each expert's
 * gate/up inputs in its order, routed and shared, against the reference;
 * the reference itself against the same layer with the columns put back
 * in place. A repeated index is refused, naming it. */
Test(formats, input_permutations_on_every_path, .timeout = 300)
{
    const uint64_t seed = mvkt_base_seed() ^ 0x9e77;
    mvkt_rng r = mvkt_rng_make(seed);
    moevk_context *ctx = mvkt_context();
    const moevk_dtype dt = MOEVK_DTYPE_GPTQ4;
    rlayer_spec sp = {.H = 96, .F = 64, .E = 3, .K = 2, .routing = (moevk_routing)(seed % 3),
                      .activation = (moevk_activation)(seed % 6), .dtype = dt, .shared = 1,
                      .biases = seed % 2 == 0};
    rlayer rl;
    rlayer_make(&r, &rl, &sp);
    uint32_t *pe = malloc(sizeof(uint32_t) * sp.E * sp.H), *ps = malloc(sizeof(uint32_t) * sp.H);
    cr_assert(pe && ps);
    for (uint32_t e = 0; e < sp.E; e++)
        random_perm(&r, pe + e * sp.H, sp.H);
    random_perm(&r, ps, sp.H);
    rl.d.experts.input_perm = pe;
    rl.d.shared.input_perm = ps;
    /* the reference's permutation against the layer without one */
    moevk_layer_desc eq = rl.d;
    const int gated = moevk_activation_is_gated(sp.activation);
    float *g = gated ? unpermuted(dt, rl.gate, sp.E, sp.F, sp.H, pe) : NULL;
    float *u = unpermuted(dt, rl.up, sp.E, sp.F, sp.H, pe);
    float *dn = unpermuted(dt, rl.down, sp.E, sp.H, sp.F, NULL);
    const uint32_t FS = rl.d.shared_ffn;
    float *sg = gated ? unpermuted(dt, rl.sgate, 1, FS, sp.H, ps) : NULL;
    float *su = unpermuted(dt, rl.sup, 1, FS, sp.H, ps);
    float *sd = unpermuted(dt, rl.sdown, 1, sp.H, FS, NULL);
    eq.weight_dtype = MOEVK_DTYPE_F32;
    eq.experts.gate = g, eq.experts.up = u, eq.experts.down = dn, eq.experts.input_perm = NULL;
    eq.shared.gate = sg, eq.shared.up = su, eq.shared.down = sd, eq.shared.input_perm = NULL;
    /* a few tokens, each path forced (pipelines are most of the time) */
    {
        const uint32_t T = 5;
        float *x = random_x(&r, T, sp.H), *ref = malloc(sizeof(float) * T * sp.H),
              *ref2 = malloc(sizeof(float) * T * sp.H);
        cr_assert(ref && ref2);
        cr_assert_eq(moevk_ref_layer_forward(&rl.d, T, x, ref, NULL, NULL, NULL, NULL), 0);
        cr_assert_eq(moevk_ref_layer_forward(&eq, T, x, ref2, NULL, NULL, NULL, NULL), 0);
        double e2 = mvkt_rel_l2(ref, ref2, (size_t)T * sp.H);
        cr_assert_leq(e2, 1e-6, "seed %llu: the reference's input_perm: %g", (unsigned long long)seed,
                      e2);
        for (int variant = 0; variant < 4; variant++) {
            const int path = variant < 3 ? variant : 2;
            cr_assert_eq(moevk_testing_force_path(ctx, path), MOEVK_SUCCESS);
            cr_assert_eq(moevk_testing_matrix_units(ctx, variant == 3), MOEVK_SUCCESS);
            moevk_layer *L;
            cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS, "%s",
                         moevk_context_last_error(ctx));
            pass_out o;
            forward(ctx, L, x, T, &o);
            double err = mvkt_rel_l2(o.y, ref, (size_t)T * sp.H);
            cr_assert_leq(err, 1e-5, "seed %llu variant %d: rel. error %g",
                          (unsigned long long)seed, variant, err);
            pass_free(&o);
            moevk_layer_destroy(L);
        }
        free(x), free(ref), free(ref2);
    }
    cr_assert_eq(moevk_testing_force_path(ctx, -1), MOEVK_SUCCESS);
    cr_assert_eq(moevk_testing_matrix_units(ctx, 0), MOEVK_SUCCESS);
    /* not a permutation: refused naming the entry */
    pe[1 * sp.H + 5] = pe[1 * sp.H + 6];
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "experts.input_perm[1 * hidden + 6]") &&
                  strstr(moevk_context_last_error(ctx), "repeated"),
              "%s", moevk_context_last_error(ctx));
    ps[3] = sp.H;
    rl.d.experts.input_perm = NULL;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "shared.input_perm[0 * hidden + 3] = 96") &&
                  strstr(moevk_context_last_error(ctx), "out of range"),
              "%s", moevk_context_last_error(ctx));
    free(g), free(u), free(dn), free(sg), free(su), free(sd), free(pe), free(ps);
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}

/* What quantising at create refuses, each naming the bad value; the
 * context stays usable. */
Test(formats, quantise_at_create_refusals)
{
    moevk_context *ctx = mvkt_context();
    mvkt_rng r = mvkt_rng_make(11);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){.H = 64, .F = 32, .E = 2, .K = 1});
    moevk_layer *L = NULL;
    moevk_layer_desc d = rl.d;
    d.flags |= MOEVK_LAYER_QUANTIZE;
    d.quantize_dtype = MOEVK_DTYPE_I32;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "quantize_dtype = 3 (i32)"), "%s",
              moevk_context_last_error(ctx));
    /* formats moevk only repacks into: no quantiser, said at once */
    const moevk_dtype repack_only[] = {MOEVK_DTYPE_GPTQ4, MOEVK_DTYPE_NF4, MOEVK_DTYPE_FP8_E4M3};
    for (int i = 0; i < 3; i++) {
        d.quantize_dtype = repack_only[i];
        cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_ERROR_INVALID_ARGUMENT);
        cr_assert(strstr(moevk_context_last_error(ctx), "no quantiser for it") &&
                      strstr(moevk_context_last_error(ctx), moevk_dtype_name(repack_only[i])),
                  "%s", moevk_context_last_error(ctx));
    }
    /* a non-finite weight: expert, matrix and row named */
    d.quantize_dtype = MOEVK_DTYPE_Q8_0;
    ((float *)rl.up)[(size_t)1 * 32 * 64 + 5 * 64 + 3] = INFINITY;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "expert 1's up matrix, row 5: not finite"),
              "%s", moevk_context_last_error(ctx));
    cr_assert_null(L);
    ((float *)rl.up)[(size_t)1 * 32 * 64 + 5 * 64 + 3] = 0.5f;
    /* packed host weights cannot be quantised again */
    void *packed = mvkt_random_weights(&r, MOEVK_DTYPE_Q8_0, (size_t)2 * 32 * 64, 0.5f);
    moevk_layer_desc b = d;
    b.flags |= MOEVK_LAYER_MATRIX_DTYPES;
    b.experts.gate_up_dtype = MOEVK_DTYPE_Q8_0;
    b.experts.down_dtype = MOEVK_DTYPE_F32;
    b.experts.gate = b.experts.up = packed;
    cr_assert_eq(moevk_layer_create(ctx, &b, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "experts.gate_up_dtype = q8_0"), "%s",
              moevk_context_last_error(ctx));
    /* the context still works */
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_get_desc(L)->experts.down_dtype, MOEVK_DTYPE_Q8_0);
    moevk_layer_destroy(L);
    free(packed);
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}

/* A layer of over 64 MiB of host weights reports its quantisation in
 * tenths through the log. */
Test(formats, quantise_at_create_reports_progress, .timeout = 600)
{
    log_capture lc;
    moevk_context *ctx = capturing_context(&lc);
    mvkt_rng r = mvkt_rng_make(mvkt_base_seed() ^ 0x77);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){.H = 1024, .F = 1024, .E = 6, .K = 2});
    moevk_layer_desc d = rl.d;
    d.flags |= MOEVK_LAYER_QUANTIZE;
    d.quantize_dtype = MOEVK_DTYPE_Q8_0;
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_geq(lc.info_lines, 10, "%d progress lines: %s", lc.info_lines, lc.text);
    cr_assert(strstr(lc.text, "quantising the expert weights: 100% (72.0 of 72.0 MiB)"), "%s",
              lc.text);
    uint64_t wb = 0;
    moevk_layer_memory(L, &wb, NULL);
    cr_assert_lt(wb, 6ull * 3 * 1024 * moevk_dtype_row_bytes(MOEVK_DTYPE_Q8_0, 1024) + 65536);
    moevk_layer_destroy(L);
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}
