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
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "random_layer.h"
#include "quantize.h"
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
