/*
 * The CUDA backends of the table (cuda-ref, cuda-cublas, cuda-cublas-f32:
 * src/cuda behind src/backend/backend.h) on the harness's random layers
 * (src/harness: every routing mode, activation and weight format (f32,
 * f16, bf16 and, in a quarter of the cases, block formats per matrix),
 * shared experts (gated or not), capacity, biases, per-expert weight
 * pointers, ties, NaN/Inf inputs), compared with the CPU reference (on the
 * very weights given, block formats decoded) under the harness's policy
 * (harness.h; cuda-cublas, which rounds activations to a 16-bit GEMM
 * dtype, at 4 units of that rounding). Every weight format runs on every
 * backend, formats per matrix (MOEVK_LAYER_MATRIX_DTYPES) and quantising
 * at create (MOEVK_LAYER_QUANTIZE) too, the f32 GEMMs within 1e-5. On
 * top, what is the CUDA path's own: finite stage times, a second pass
 * bitwise the same, weights held packed as given, one layer reused with
 * growing and shrinking T, the bench entry, memory figures, invalid blocks
 * and rows that are not whole blocks refused.
 *
 * Without a usable CUDA device the device tests skip (never pass) with the
 * reason; MOEVK_REQUIRE_CUDA=1 turns that into a failure (for runs on a GPU
 * machine). The no-device and bad-argument tests run everywhere.
 * src/cuda/emu/run_tests.sh runs this file on a CPU emulation of CUDA.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cuda/moevk_cuda.h"
#include "formats.h"
#include "harness/harness.h"

/* The three entries of the table, in mvk_cuda_backend order. */
static const char *const cuda_names[MVK_CUDA_BACKEND_COUNT] = {"cuda-ref", "cuda-cublas",
                                                               "cuda-cublas-f32"};

/* Size budget of a random case: keeps the CPU reference and the emulation
 * (which runs every GPU thread on the host) quick. */
#define CASE_WORK (3u << 20)
#define CASE_TOKENS 128
#define CASE_EXPERTS 160

/* ---- device --------------------------------------------------------------- */

static bool env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

static const mvk_backend *backend(int b)
{
    const mvk_backend *be = mvk_backend_find(cuda_names[b]);
    cr_assert_not_null(be, "%s is not in the backend table", cuda_names[b]);
    return be;
}

static void need_device(void)
{
    char msg[512] = "";
    if (backend(MVK_CUDA_REF)->available(msg, sizeof msg))
        return;
    cr_assert(!env_flag("MOEVK_REQUIRE_CUDA"),
              "MOEVK_REQUIRE_CUDA is set but no CUDA device is usable: %s", msg);
    cr_skip_test("%s", msg); /* "no CUDA device: ..." */
}

/* Backend b opened; a cuBLAS backend on a machine without libcublas skips
 * (unless MOEVK_REQUIRE_CUDA). */
static mvkc_target open_backend(int b)
{
    need_device();
    mvkc_target t;
    char err[512] = "";
    moevk_status st = mvkc_target_open(&t, backend(b), NULL, NULL, err, sizeof err);
    cr_assert_eq(st, MOEVK_SUCCESS, "open %s: %s: %s", cuda_names[b], moevk_status_string(st),
                 err);
    /* a tiny layer tells whether cuBLAS loads */
    mvkc_limits l;
    memset(&l, 0, sizeof l);
    l.tokens = l.hidden = l.ffn = 4;
    l.experts = 2;
    mvkc_case c;
    cr_assert_eq(mvkc_case_random(1, &l, &c), MOEVK_SUCCESS);
    void *L = NULL;
    st = t.backend->create(t.dev, &c.desc, NULL, &L, err, sizeof err);
    mvkc_case_free(&c);
    if (st == MOEVK_ERROR_UNSUPPORTED && b != MVK_CUDA_REF && strstr(err, "cuBLAS") &&
        !env_flag("MOEVK_REQUIRE_CUDA")) {
        mvkc_target_close(&t);
        cr_skip_test("%s", err); /* no libcublas on this machine */
    }
    cr_assert_eq(st, MOEVK_SUCCESS, "%s: create: %s: %s", cuda_names[b], moevk_status_string(st),
                 err);
    t.backend->destroy(L);
    return t;
}

/* ---- running and checking one case ----------------------------------------------- */

static mvkc_limits limits(void)
{
    return (mvkc_limits){.max_work = CASE_WORK, .max_tokens = CASE_TOKENS,
                         .max_experts = CASE_EXPERTS};
}

static void *create_layer(const mvkc_target *t, const moevk_layer_desc *d, const char *what)
{
    char err[512] = "";
    void *L = NULL;
    moevk_status st = t->backend->create(t->dev, d, NULL, &L, err, sizeof err);
    cr_assert_eq(st, MOEVK_SUCCESS, "%s: create: %s: %s", what, moevk_status_string(st), err);
    cr_assert_not_null(L);
    return L;
}

/* One pass of the case on layer L into g (allocated, poisoned). */
static void forward(const mvkc_target *t, void *L, const mvkc_case *c, mvkc_result *g,
                    double *stage_ms, double *total_ms, const char *what)
{
    cr_assert_eq(mvkc_result_alloc(c, g), MOEVK_SUCCESS);
    g->flags = t->backend->flags;
    const mvk_backend_out o = {.y = g->y,
                               .ids = g->ids,
                               .weights = g->weights,
                               .rows = g->rows,
                               .stats = &g->stats,
                               .stats_read = &g->stats_read,
                               .stage_ms = stage_ms,
                               .total_ms = total_ms};
    char err[512] = "";
    moevk_status st = t->backend->forward(L, c->T, c->x, &o, err, sizeof err);
    cr_assert_eq(st, MOEVK_SUCCESS, "%s: forward: %s: %s", what, moevk_status_string(st), err);
}

/* The host format of kind m (0 gate/up, 1 down) of an expert set. */
static moevk_dtype host_format(const moevk_layer_desc *d, int shared, int m)
{
    const moevk_expert_weights *w = shared ? &d->shared : &d->experts;
    if (!(d->flags & MOEVK_LAYER_MATRIX_DTYPES))
        return d->weight_dtype;
    return m ? w->down_dtype : w->gate_up_dtype;
}

/* Device bytes of the weights of desc on backend `name`: every array as
 * given (block formats packed, each kind of matrix in its own format),
 * except that cuda-cublas-f32 widens f16/bf16 expert matrices to f32. */
static uint64_t expected_weight_bytes(const moevk_layer_desc *d, const char *name)
{
    const uint64_t H = d->hidden, E = d->num_experts, rs = moevk_dtype_size(d->router_dtype);
    const int gated = moevk_activation_is_gated(d->activation);
    const int widen = !strcmp(name, "cuda-cublas-f32");
    uint64_t b = E * H * rs + (d->router_bias ? 4 * E : 0);
    if (d->routing != MOEVK_ROUTING_TOPK_SOFTMAX && d->correction_bias)
        b += 4 * E;
    for (int s = 0; s < 2; s++) {
        const moevk_expert_weights *w = s ? &d->shared : &d->experts;
        /* identity experts have no weights */
        const uint64_t n = s ? d->num_shared : E - d->num_zero_experts;
        const uint64_t F = s && d->shared_ffn ? d->shared_ffn : d->ffn;
        for (int m = 0; m < 2; m++) {
            const moevk_dtype dt = host_format(d, s, m);
            const moevk_dtype held =
                widen && (dt == MOEVK_DTYPE_F16 || dt == MOEVK_DTYPE_BF16) ? MOEVK_DTYPE_F32
                                                                           : dt;
            b += (uint64_t)(m ? 1 : gated ? 2 : 1) * n * moevk_dtype_row_bytes(held, F * H);
        }
        b += (gated && w->gate_bias ? 4 * n * F : 0) + (w->up_bias ? 4 * n * F : 0) +
             (w->down_bias ? 4 * n * H : 0);
    }
    if (d->num_shared && d->shared_gate)
        b += d->num_shared * H * rs;
    if (d->output_bias)
        b += 4 * H;
    /* the input norms' vectors and the per-expert scale */
    b += (d->router_input_scale ? 4 * H : 0) + (d->expert_norm_weight ? 4 * H : 0) +
         (d->expert_weight_scale ? 4 * E : 0);
    return b;
}

typedef struct tally {
    uint32_t cases, swapped, near, dropped_cases, nonfinite;
    double worst_y;
} tally;

/* The case of `seed` on t against the reference (the harness's policy),
 * with finite stage times, a second pass bitwise equal to the first, and
 * the weights held as given (block formats packed). */
static void check_case(const mvkc_target *t, uint64_t seed, const mvkc_limits *lim, tally *tl,
                       mvkc_report *out)
{
    mvkc_case c;
    cr_assert_eq(mvkc_case_random(seed, lim, &c), MOEVK_SUCCESS, "seed %llu: out of memory",
                 (unsigned long long)seed);
    char desc[384], repro[256], what[800];
    mvkc_case_describe(&c, desc, sizeof desc);
    if (!mvkc_repro(t, NULL, seed, lim, repro, sizeof repro))
        snprintf(repro, sizeof repro, "limits of this test: MOEVK_TEST_SEED replays it");
    snprintf(what, sizeof what, "[%s] seed %llu (%s) %s", t->backend->name,
             (unsigned long long)seed, repro, desc);
    const uint32_t T = c.T, H = c.desc.hidden, k = moevk_routing_slots(&c.desc);

    void *L = create_layer(t, &c.desc, what);
    mvk_backend_memory mem;
    t->backend->memory(L, T, &mem);
    cr_assert_eq(mem.weights, (double)expected_weight_bytes(&c.desc, t->backend->name),
                 "%s: %.0f weight bytes on the device, %llu given", what, mem.weights,
                 (unsigned long long)expected_weight_bytes(&c.desc, t->backend->name));
    mvkc_result g, g2;
    double stage[MOEVK_STAGE_COUNT], total = -1;
    for (int s = 0; s < MOEVK_STAGE_COUNT; s++)
        stage[s] = -1;
    forward(t, L, &c, &g, stage, &total, what);
    mvkc_ref ref;
    mvkc_report rep;
    cr_assert_eq(mvkc_reference(&c, &ref), MOEVK_SUCCESS);
    cr_assert(mvkc_compare(&c, &ref, &g, &rep), "%s: %s", what, rep.reason);

    for (int s = 0; s < MOEVK_STAGE_COUNT; s++)
        cr_assert(isfinite(stage[s]) && stage[s] >= 0.0, "%s: stage %s time %g", what,
                  moevk_stage_name((moevk_stage)s), stage[s]);
    cr_assert(isfinite(total) && total >= 0.0, "%s: total time %g", what, total);

    /* a second pass on the same layer is bitwise the same */
    forward(t, L, &c, &g2, NULL, NULL, what);
    cr_assert(memcmp(g.ids, g2.ids, sizeof(uint32_t) * T * k) == 0, "%s: ids not repeatable",
              what);
    cr_assert(memcmp(g.rows, g2.rows, sizeof(int32_t) * T * k) == 0, "%s: rows not repeatable",
              what);
    cr_assert(memcmp(g.weights, g2.weights, sizeof(float) * T * k) == 0,
              "%s: weights not repeatable", what);
    cr_assert(memcmp(g.y, g2.y, sizeof(float) * T * H) == 0, "%s: y not bitwise repeatable",
              what);

    tl->cases++;
    tl->swapped += rep.swapped;
    tl->near += rep.near_ties;
    tl->dropped_cases += rep.dropped > 0;
    tl->nonfinite += rep.nonfinite;
    if (rep.y_err > tl->worst_y)
        tl->worst_y = rep.y_err;
    if (out) {
        *out = rep;
        out->pass = c.capacity_removed ? -1 : 1; /* -1: no capacity left to drop with */
    }
    t->backend->destroy(L);
    mvkc_result_free(&g);
    mvkc_result_free(&g2);
    mvkc_ref_free(&ref);
    mvkc_case_free(&c);
}

static void report(const char *name, const tally *tl)
{
    cr_log_info("%s: %u cases, %u swapped and %u near-tied tokens, %u cases with drops, "
                "worst y error vs the reference %.3g",
                name, tl->cases, tl->swapped, tl->near, tl->dropped_cases, tl->worst_y);
}

/* n random cases (a quarter in block formats per matrix: the harness's
 * draw). */
static void random_cases(int b, uint32_t n, uint64_t salt)
{
    mvkc_target t = open_backend(b);
    const uint64_t base = mvkt_base_seed();
    const mvkc_limits l = limits();
    tally tl = {0};
    for (uint32_t i = 0; i < n; i++)
        check_case(&t, base ^ (salt * 0x9e3779b97f4a7c15ull + i), &l, &tl, NULL);
    report(cuda_names[b], &tl);
    mvkc_target_close(&t);
}

/* ---- tests that run everywhere ------------------------------------------------- */

/* A small valid layer (weights are static zeros: nothing is computed). */
static moevk_layer_desc tiny_desc(void)
{
    static float router[4 * 8], mats[3][4 * 6 * 8];
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.hidden = 8;
    d.ffn = 6;
    d.num_experts = 4;
    d.top_k = 2;
    d.router_weight = router;
    d.experts.gate = mats[0];
    d.experts.up = mats[1];
    d.experts.down = mats[2];
    return d;
}

Test(cuda, no_device_is_a_clean_error)
{
    char msg[512] = "";
    if (mvk_cuda_device_available(msg, sizeof msg))
        cr_skip_test("a CUDA device is present (%s): the no-device path is not reachable", msg);
    cr_assert(strlen(msg) > 0, "mvk_cuda_device_available gave no reason");
    cr_assert_eq(mvk_cuda_device_available(NULL, 0), 0, "the answer changed");
    moevk_layer_desc d = tiny_desc();
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++) {
        char err[512] = "";
        mvk_cuda_layer *L = (mvk_cuda_layer *)&d; /* must be overwritten with NULL */
        moevk_status st = mvk_cuda_layer_create(&d, (mvk_cuda_backend)b, &L, err, sizeof err);
        /* UNSUPPORTED: a device exists but is older than sm_90 */
        cr_assert(st == MOEVK_ERROR_NO_DEVICE || st == MOEVK_ERROR_UNSUPPORTED,
                  "backend %s: %s (%s)", mvk_cuda_backend_name((mvk_cuda_backend)b),
                  moevk_status_string(st), err);
        if (strstr(msg, "no CUDA device"))
            cr_assert_eq(st, MOEVK_ERROR_NO_DEVICE, "%s", err);
        cr_assert_null(L);
        cr_assert(strlen(err) > 0, "no message");
        /* no buffer for the message is fine too */
        cr_assert_eq(mvk_cuda_layer_create(&d, (mvk_cuda_backend)b, &L, NULL, 0), st);
    }
    /* the same through the backend table: cannot run, cannot open */
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++) {
        char why[512] = "", err[512] = "";
        cr_assert_eq(backend(b)->available(why, sizeof why), 0, "%s", cuda_names[b]);
        cr_assert(strlen(why) > 0, "%s: no reason", cuda_names[b]);
        void *dev = &d; /* must be overwritten with NULL */
        mvk_backend_info info;
        moevk_status st = backend(b)->open(NULL, &dev, &info, err, sizeof err);
        cr_assert(st == MOEVK_ERROR_NO_DEVICE || st == MOEVK_ERROR_UNSUPPORTED, "%s: %s (%s)",
                  cuda_names[b], moevk_status_string(st), err);
        cr_assert_null(dev);
        cr_assert(strstr(err, "CUDA"), "%s: unclear message '%s'", cuda_names[b], err);
    }
    /* every entry point is safe without a layer */
    char err[256];
    float x[8] = {0}, y[8];
    double ms[MOEVK_STAGE_COUNT], total;
    cr_assert_eq(mvk_cuda_layer_forward(NULL, 1, x, y, NULL, NULL, NULL, NULL, NULL, NULL, err,
                                        sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(err, "layer"), "%s", err);
    cr_assert_eq(mvk_cuda_layer_bench(NULL, 1, x, 0, 1, ms, &total, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    mvk_cuda_layer_destroy(NULL);
    uint64_t wb = 1, sb = 1;
    mvk_cuda_layer_memory(NULL, &wb, &sb);
    cr_assert(wb == 0 && sb == 0);
}

Test(cuda, bad_arguments_are_rejected_before_the_device)
{
    char err[512];
    mvk_cuda_layer *L = NULL;
    moevk_layer_desc d = tiny_desc();
    d.top_k = 0;
    cr_assert_eq(mvk_cuda_layer_create(&d, MVK_CUDA_REF, &L, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_null(L);
    cr_assert(strstr(err, "top_k"), "the message should name the field: %s", err);
    d = tiny_desc();
    d.experts.down = NULL;
    cr_assert_eq(mvk_cuda_layer_create(&d, MVK_CUDA_CUBLAS, &L, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    d = tiny_desc();
    cr_assert_eq(mvk_cuda_layer_create(&d, (mvk_cuda_backend)7, &L, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(err, "backend"), "%s", err);
    cr_assert_eq(mvk_cuda_layer_create(NULL, MVK_CUDA_REF, &L, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(mvk_cuda_layer_create(&d, MVK_CUDA_REF, NULL, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_str_eq(mvk_cuda_backend_name(MVK_CUDA_REF), "ref");
    cr_assert_str_eq(mvk_cuda_backend_name(MVK_CUDA_CUBLAS), "cublas");
    cr_assert_str_eq(mvk_cuda_backend_name(MVK_CUDA_CUBLAS_F32), "cublas-f32");
    cr_assert_str_eq(mvk_cuda_backend_name((mvk_cuda_backend)9), "unknown");
}

/* Block formats: rows that are not whole blocks, a router in a block
 * format and MXFP4 blocks with a NaN scale are refused with a message that
 * names them, before any device work (so this runs without a device). */
Test(cuda, bad_arguments_block_formats)
{
    const uint64_t seed = mvkt_base_seed() ^ 0xb10c00u;
    mvkt_rng r = mvkt_rng_make(seed);
    enum { H = 64, F = 32, E = 4, NS = 2, FS = 96 };
    float *router = mvkt_random_weights(&r, MOEVK_DTYPE_F32, (size_t)E * H, 1.0f);
    void *m[3], *sm[3];
    for (int i = 0; i < 3; i++) {
        m[i] = mvkt_random_weights(&r, MOEVK_DTYPE_MXFP4, (size_t)E * F * H, 0.5f);
        sm[i] = mvkt_random_weights(&r, MOEVK_DTYPE_MXFP4, (size_t)NS * FS * H, 0.5f);
    }
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.hidden = H;
    d.ffn = F;
    d.num_experts = E;
    d.top_k = 2;
    d.weight_dtype = MOEVK_DTYPE_MXFP4;
    d.router_weight = router;
    d.experts.gate = m[0];
    d.experts.up = m[1];
    d.experts.down = m[2];
    d.num_shared = NS;
    d.shared_ffn = FS;
    const void *per[3][NS];
    for (int i = 0; i < 3; i++)
        for (int e = 0; e < NS; e++)
            per[i][e] = (const uint8_t *)sm[i] + (size_t)e * moevk_dtype_row_bytes(
                                                                 MOEVK_DTYPE_MXFP4, FS * H);
    d.shared.gate_experts = per[0];
    d.shared.up_experts = per[1];
    d.shared.down_experts = per[2];
    cr_assert_eq(moevk_layer_desc_check(&d, NULL, 0), MOEVK_SUCCESS, "seed %llu: the base desc",
                 (unsigned long long)seed);

    char err[512];
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++) {
        const char *bn = mvk_cuda_backend_name((mvk_cuda_backend)b);
        mvk_cuda_layer *L = (mvk_cuda_layer *)&d;
        /* rows that are not whole blocks: each of the three sizes */
        const struct { const char *field; uint32_t H, F, FS; } rows[] = {
            {"hidden", 48, F, FS}, {"ffn", H, 40, FS}, {"shared_ffn", H, F, 33}};
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
            moevk_layer_desc bad = d;
            bad.hidden = rows[i].H;
            bad.ffn = rows[i].F;
            bad.shared_ffn = rows[i].FS;
            moevk_status st = mvk_cuda_layer_create(&bad, (mvk_cuda_backend)b, &L, err,
                                                    sizeof err);
            cr_assert_eq(st, MOEVK_ERROR_INVALID_ARGUMENT, "%s: %s: %s", bn, rows[i].field,
                         moevk_status_string(st));
            cr_assert_null(L);
            cr_assert(strstr(err, rows[i].field) && strstr(err, "mxfp4") &&
                          strstr(err, "whole number"),
                      "%s: the message should name %s and the format: %s", bn, rows[i].field,
                      err);
        }
        /* per matrix: down rows (ffn) that are not whole q4_k blocks, named
         * by field; quantising at create asked of the CUDA layer itself */
        moevk_layer_desc pm = d;
        pm.flags = MOEVK_LAYER_MATRIX_DTYPES;
        pm.experts.gate_up_dtype = pm.shared.gate_up_dtype = MOEVK_DTYPE_MXFP4;
        pm.experts.down_dtype = pm.shared.down_dtype = MOEVK_DTYPE_Q4_K;
        cr_assert_eq(mvk_cuda_layer_create(&pm, (mvk_cuda_backend)b, &L, err, sizeof err),
                     MOEVK_ERROR_INVALID_ARGUMENT, "%s", bn);
        cr_assert_null(L);
        cr_assert(strstr(err, "ffn") && strstr(err, "q4_k"), "%s: %s", bn, err);
        pm = d;
        pm.flags = MOEVK_LAYER_QUANTIZE;
        pm.weight_dtype = MOEVK_DTYPE_F32;
        pm.quantize_dtype = MOEVK_DTYPE_Q8_0;
        cr_assert_eq(mvk_cuda_layer_create(&pm, (mvk_cuda_backend)b, &L, err, sizeof err),
                     MOEVK_ERROR_UNSUPPORTED, "%s", bn);
        cr_assert_null(L);
        cr_assert(strstr(err, "MOEVK_LAYER_QUANTIZE") && strstr(err, "q8_0"), "%s: %s", bn, err);
        /* a router in a block format */
        moevk_layer_desc bad = d;
        bad.router_dtype = MOEVK_DTYPE_Q8_0;
        cr_assert_eq(mvk_cuda_layer_create(&bad, (mvk_cuda_backend)b, &L, err, sizeof err),
                     MOEVK_ERROR_INVALID_ARGUMENT, "%s", bn);
        cr_assert(strstr(err, "router_dtype") && strstr(err, "q8_0"), "%s: %s", bn, err);
        /* an E8M0 scale of 255 (NaN): in a routed matrix, then in a shared
         * expert given by its own pointer */
        const struct { uint8_t *mat; int expert; uint32_t block; const char *name; } nan[] = {
            {(uint8_t *)m[1], 3, 5, "experts.up of expert 3"},
            {(uint8_t *)sm[2], 1, 0, "shared.down of expert 1"},
        };
        for (size_t i = 0; i < sizeof nan / sizeof nan[0]; i++) {
            const uint64_t mb = moevk_dtype_row_bytes(MOEVK_DTYPE_MXFP4, i ? FS * H : F * H);
            uint8_t *at = nan[i].mat + nan[i].expert * mb + nan[i].block * 17u;
            const uint8_t keep = *at;
            *at = 0xff;
            moevk_status st = mvk_cuda_layer_create(&d, (mvk_cuda_backend)b, &L, err,
                                                    sizeof err);
            *at = keep;
            char block[32];
            snprintf(block, sizeof block, "block %u ", nan[i].block);
            cr_assert_eq(st, MOEVK_ERROR_INVALID_ARGUMENT, "%s: %s: %s (%s)", bn, nan[i].name,
                         moevk_status_string(st), err);
            cr_assert_null(L);
            cr_assert(strstr(err, nan[i].name) && strstr(err, block) && strstr(err, "255"),
                      "%s: the message should name %s, %s and the scale: %s", bn, nan[i].name,
                      block, err);
        }
    }
    free(router);
    for (int i = 0; i < 3; i++)
        free(m[i]), free(sm[i]);
}

/* ---- device tests ----------------------------------------------------------------- */

Test(cuda, ref_backend_random_layers, .timeout = 280)
{
    random_cases(MVK_CUDA_REF, 40, 1);
}

Test(cuda, cublas_backend_random_layers, .timeout = 280)
{
    random_cases(MVK_CUDA_CUBLAS, 40, 2);
}

Test(cuda, cublas_f32_backend_random_layers, .timeout = 280)
{
    random_cases(MVK_CUDA_CUBLAS_F32, 25, 3);
}

/* Every weight format of the table (plain and block) on every backend,
 * against the reference on the decoded weights: a gated layer with a shared
 * expert of its own width, every bias and per-expert pointers, and a
 * non-gated one. The f32 GEMMs (cuda-ref, cuda-cublas-f32) are within
 * 1e-5; cuda-cublas, which runs block formats in f16, within the policy's
 * 4 units of f16 rounding. */
static int every_format(int b, uint32_t i, mvkc_limits *l, uint64_t *salt)
{
    const mvk_format *f = NULL;
    uint32_t n = 0;
    for (size_t k = 0; mvk_format_at(k) && !f; k++)
        if ((mvk_format_at(k)->uses & MVK_FORMAT_EXPERT) && n++ == i / 2)
            f = mvk_format_at(k);
    if (!f)
        return 0;
    const uint32_t be = f->block_elems;
    const int gated = i % 2 == 0;
    l->weight_dtype = MVKC_PICK(f->dtype);
    l->tokens = 7;
    l->experts = 6;
    l->top_k = 2;
    l->hidden = be == 1 ? 40 : be < 256 ? 2 * be : be;
    l->ffn = be == 1 ? 24 : be < 256 ? 3 * be : be;
    l->activation = MVKC_PICK(gated ? MOEVK_ACT_SWIGLU_OAI : MOEVK_ACT_GELU);
    l->num_shared = MVKC_PICK(gated ? 1 : 0);
    l->scenarios_on = gated ? MVKC_SC_PER_EXPERT : 0;
    l->scenarios_off = MVKC_SC_NONFINITE | (gated ? 0 : MVKC_SC_PER_EXPERT);
    *salt = 0xf0a700u + 64u * (uint64_t)b + i;
    return 1;
}

static void format_within(int b, uint32_t i, const mvkc_report *rep)
{
    cr_assert_gt(rep->compared, 0, "[%s] case %u: no token compared", cuda_names[b], i);
    if (b != MVK_CUDA_CUBLAS)
        cr_assert_leq(rep->y_err, 1e-5, "[%s] case %u: y off by %g (f32 GEMMs: 1e-5)",
                      cuda_names[b], i, rep->y_err);
}

/* A directed test: make(b, i, l, salt) sets the limits of its i-th case on
 * backend b (0 past the last one) and a salt for its seed; after (may be
 * NULL) checks the case's report. */
typedef int (*case_fn)(int b, uint32_t i, mvkc_limits *l, uint64_t *salt);
typedef void (*after_fn)(int b, uint32_t i, const mvkc_report *rep);

static tally directed(const char *name, case_fn make, after_fn after)
{
    const uint64_t base = mvkt_base_seed();
    tally tl = {0};
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++) {
        mvkc_target t = open_backend(b);
        mvkc_limits l = limits();
        uint64_t salt = 0;
        for (uint32_t i = 0; make(b, i, &l, &salt); i++, l = limits()) {
            mvkc_report rep;
            check_case(&t, base ^ salt, &l, &tl, &rep);
            if (after)
                after(b, i, &rep);
        }
        mvkc_target_close(&t);
    }
    report(name, &tl);
    return tl;
}

/* Every routing mode x activation x weight dtype, each backend, small. */
static int every_mode(int b, uint32_t i, mvkc_limits *l, uint64_t *salt)
{
    l->routing = MVKC_PICK(i / 18);
    l->activation = MVKC_PICK(i / 3 % 6);
    l->weight_dtype = MVKC_PICK(i % 3);
    l->tokens = 12;
    l->hidden = 24;
    l->ffn = 20;
    l->experts = 8;
    l->top_k = 3;
    *salt = 0xe0de00u + 64u * (uint64_t)b + i;
    return i < 3 * 6 * 3;
}

Test(cuda, every_mode_activation_and_dtype, .timeout = 280)
{
    directed("every mode", every_mode, NULL);
}

Test(cuda, every_weight_format, .timeout = 280)
{
    directed("every weight format", every_format, format_within);
}

/* Formats per matrix (MOEVK_LAYER_MATRIX_DTYPES): the harness's block
 * formats for gate/up and for down (often two different ones, the shared
 * experts in the same), with shared experts half of the time, on every
 * backend; the f32 GEMMs within 1e-5. */
static int per_matrix(int b, uint32_t i, mvkc_limits *l, uint64_t *salt)
{
    l->blocks = 1;
    l->tokens = 9;
    l->max_experts = 8;
    l->num_shared = MVKC_PICK(i % 2);
    l->scenarios_off = MVKC_SC_NONFINITE;
    *salt = 0x9e7a00u + 64u * (uint64_t)b + i;
    return i < 12;
}

Test(cuda, formats_per_matrix, .timeout = 280)
{
    directed("formats per matrix", per_matrix, format_within);
}

/* Quantising at create (MOEVK_LAYER_QUANTIZE) through the table: the f32
 * host weights quantised on the host as the reference does, each kind of
 * matrix to what it gets (q4_k gate/up rows of 256, llama.cpp's fallback
 * q5_0 for down rows of 96), packed on the device; the result against the
 * reference on the same quantisation. */
Test(cuda, quantize_at_create, .timeout = 280)
{
    const uint64_t seed = mvkt_base_seed() ^ 0x9a4700u;
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++) {
        mvkc_target t = open_backend(b);
        mvkc_limits l = limits();
        l.weight_dtype = MVKC_PICK(MOEVK_DTYPE_F32);
        l.tokens = 9;
        l.hidden = 256;
        l.ffn = 96;
        l.experts = 6;
        l.top_k = 2;
        l.num_shared = MVKC_PICK(1);
        l.activation = MVKC_PICK(MOEVK_ACT_SWIGLU);
        l.scenarios_off = MVKC_SC_NONFINITE;
        mvkc_case c;
        cr_assert_eq(mvkc_case_random(seed, &l, &c), MOEVK_SUCCESS);
        c.desc.flags |= MOEVK_LAYER_QUANTIZE;
        c.desc.quantize_dtype = MOEVK_DTYPE_Q4_K;
        c.desc.quantize_threads = 2;
        char what[128];
        snprintf(what, sizeof what, "[%s] seed %llu, quantised to q4_k", cuda_names[b],
                 (unsigned long long)seed);
        void *L = create_layer(&t, &c.desc, what);
        mvk_backend_memory mem;
        t.backend->memory(L, c.T, &mem);
        moevk_layer_desc packed = c.desc;
        packed.flags = MOEVK_LAYER_MATRIX_DTYPES;
        packed.experts.gate_up_dtype = packed.shared.gate_up_dtype = MOEVK_DTYPE_Q4_K;
        packed.experts.down_dtype = MOEVK_DTYPE_Q5_0;
        /* the shared experts' width is drawn: their down rows get q4_k when
         * whole blocks of 256, q5_0 when of 32 (llama.cpp's fallback), else
         * f16 (no block format fits) */
        const uint32_t fs = c.desc.shared_ffn ? c.desc.shared_ffn : c.desc.ffn;
        packed.shared.down_dtype = fs % 256 == 0  ? MOEVK_DTYPE_Q4_K
                                   : fs % 32 == 0 ? MOEVK_DTYPE_Q5_0
                                                  : MOEVK_DTYPE_F16;
        cr_assert_eq(mem.weights, (double)expected_weight_bytes(&packed, t.backend->name),
                     "%s: %.0f weight bytes on the device", what, mem.weights);
        mvkc_result g;
        forward(&t, L, &c, &g, NULL, NULL, what);
        mvkc_ref ref;
        mvkc_report rep;
        cr_assert_eq(mvkc_reference(&c, &ref), MOEVK_SUCCESS);
        cr_assert(mvkc_compare(&c, &ref, &g, &rep), "%s: %s", what, rep.reason);
        cr_assert_gt(rep.compared, 0, "%s: no token compared", what);
        if (b != MVK_CUDA_CUBLAS)
            cr_assert_leq(rep.y_err, 1e-5, "%s: y off by %g", what, rep.y_err);
        t.backend->destroy(L);
        mvkc_result_free(&g);
        mvkc_ref_free(&ref);
        mvkc_case_free(&c);
        mvkc_target_close(&t);
    }
}

/* Capacity that drops assignments, with shared experts, on every backend:
 * C = ceil(0.5 * 40 * 2 / 6) = 7 of 80 assignments per expert. */
static int capacity(int b, uint32_t i, mvkc_limits *l, uint64_t *salt)
{
    l->capacity_factor = 0.5f;
    l->routing = MVKC_PICK(i % 3); /* a top-k mode: expert choice drops nothing */
    l->num_shared = MVKC_PICK(1 + i % 2);
    l->tokens = 40;
    l->experts = 6;
    l->top_k = 2;
    *salt = 0xcafe00u + 16u * (uint64_t)b + i;
    return i < 6;
}

static void something_drops(int b, uint32_t i, const mvkc_report *rep)
{
    /* (unless near-ties made the generator give the capacity up: pass -1) */
    if (rep->pass > 0)
        cr_assert_gt(rep->dropped, 0, "[%s] case %u should drop assignments", cuda_names[b], i);
}

Test(cuda, capacity_drops, .timeout = 280)
{
    directed("capacity", capacity, something_drops);
}

/* The i-th of 9 cases with scenario sc always on, 3 per routing mode. */
static int scenario_case(uint32_t sc, uint64_t salt_base, int b, uint32_t i, mvkc_limits *l,
                         uint64_t *salt)
{
    l->routing = MVKC_PICK(i / 3);
    l->scenarios_on = sc;
    *salt = salt_base + 16u * (uint64_t)b + i;
    return i < 9;
}

/* Duplicated router rows: exact score ties, decided by the tie rule (the
 * lower expert index first) identically on both sides. */
static int ties(int b, uint32_t i, mvkc_limits *l, uint64_t *salt)
{
    l->tokens = 24;
    l->experts = 4 + 2 * (i % 3);
    return scenario_case(MVKC_SC_TIES, 0x71e00u, b, i, l, salt);
}

Test(cuda, exact_ties, .timeout = 280)
{
    directed("exact ties", ties, NULL);
}

/* NaN, +inf or -inf in a few tokens' x: their logits are NaN or +-inf, so
 * their weights and y are non-finite exactly where the reference's are; the
 * other tokens are unaffected; the losses are NaN as in the reference. */
static int nonfinite(int b, uint32_t i, mvkc_limits *l, uint64_t *salt)
{
    l->tokens = 9;
    return scenario_case(MVKC_SC_NONFINITE, 0xbad00u, b, i, l, salt);
}

Test(cuda, nonfinite_tokens, .timeout = 280)
{
    /* One case's non-finite inputs may all give finite outputs (an
     * infinite input element can end as relu(-inf) = 0, capacity may drop
     * the token's slots):
     * each case agrees with the reference token by token, and over the
     * cases some tokens must be non-finite. */
    tally tl = directed("nonfinite tokens", nonfinite, NULL);
    cr_assert_gt(tl.nonfinite, 0, "no case had a non-finite token");
}

/* Extreme shapes: one expert, 1024 experts with k = 32, H = F = 1, one
 * token, many tokens. */
static int edge_shape(int b, uint32_t i, mvkc_limits *l, uint64_t *salt)
{
    static const struct { uint32_t T, H, F, E, K, routing; } shapes[] = {
        {5, 16, 8, 1, 1, 0},     {3, 8, 4, 1024, 32, 0}, {4, 8, 4, 1024, 32, 2},
        {7, 1, 1, 5, 2, 1},      {1, 33, 17, 9, 4, 2},   {600, 8, 6, 16, 2, 0},
        {300, 12, 10, 64, 8, 1},
    };
    if (i >= sizeof shapes / sizeof shapes[0])
        return 0;
    l->tokens = shapes[i].T;
    l->hidden = shapes[i].H;
    l->ffn = shapes[i].F;
    l->experts = shapes[i].E;
    l->top_k = shapes[i].K;
    l->routing = MVKC_PICK(shapes[i].routing);
    *salt = 0xed9e00u + 16u * (uint64_t)b + i;
    return 1;
}

Test(cuda, edge_shapes, .timeout = 280)
{
    directed("edge shapes", edge_shape, NULL);
}

/* sparsemixer (PhiMoE): 6 cases per backend, k = 2 and k = 5 over 16 and
 * 64 experts, with exact ties, non-finite tokens or neither (its jitter_eps
 * drawn by the generator: PhiMoE's 0.01, 0, small or large thresholds). */
static int sparsemixer_cases(int b, uint32_t i, mvkc_limits *l, uint64_t *salt)
{
    static const uint32_t sc[3] = {0, MVKC_SC_TIES, MVKC_SC_NONFINITE};
    l->routing = MVKC_PICK(MOEVK_ROUTING_SPARSEMIXER);
    l->tokens = 40;
    l->experts = i % 2 ? 64 : 16;
    l->top_k = i < 3 ? 2 : 5;
    l->scenarios_on = sc[i % 3];
    *salt = 0x5ba2e00u + 16u * (uint64_t)b + i;
    return i < 6;
}

Test(cuda, sparsemixer, .timeout = 280)
{
    directed("sparsemixer", sparsemixer_cases, NULL);
}

/* One layer used with growing and shrinking T, its memory figures, and the
 * bench entry, through the backend interface. */
Test(cuda, reuse_and_bench, .timeout = 280)
{
    const uint64_t seed = mvkt_base_seed();
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++) {
        mvkc_target t = open_backend(b);
        const mvk_backend *be = t.backend;
        mvkc_limits l = limits();
        l.tokens = 64;
        l.num_shared = MVKC_PICK(1);
        l.scenarios_off = MVKC_SC_NONFINITE; /* every y value is finite */
        mvkc_case c;
        cr_assert_eq(mvkc_case_random(seed ^ (0xbe0c00u + (uint64_t)b), &l, &c), MOEVK_SUCCESS);
        char desc[512];
        mvkc_case_describe(&c, desc, sizeof desc);
        void *L = create_layer(&t, &c.desc, desc);
        const uint32_t H = c.desc.hidden, k = moevk_routing_slots(&c.desc);
        mvk_backend_memory m;
        be->memory(L, c.T, &m);
        cr_assert_gt(m.weights, 0);
        cr_assert_eq(m.scratch, 0, "no scratch before the first pass");
        cr_assert_eq(m.copies, 1);
        /* the full-T pass is the reference for every prefix: rows of a
         * prefix differ only through capacity, so compare dropless ids */
        float *y_full = malloc(sizeof(float) * c.T * H), *y = malloc(sizeof(float) * c.T * H);
        uint32_t *ids_full = malloc(4 * c.T * k), *ids = malloc(4 * c.T * k);
        cr_assert(y_full && y && ids_full && ids);
        char err[512];
        moevk_status st;
        double scratch = 0;
        const uint32_t Ts[] = {c.T, 5, 1, c.T, 17};
        for (size_t i = 0; i < sizeof Ts / sizeof Ts[0]; i++) {
            uint32_t T = Ts[i];
            mvkt_poison(y, (size_t)c.T * H);
            const mvk_backend_out o = {.y = y, .ids = ids};
            st = be->forward(L, T, c.x, &o, err, sizeof err);
            cr_assert_eq(st, MOEVK_SUCCESS, "%s: T=%u: %s", desc, T, err);
            if (i == 0) {
                memcpy(y_full, y, sizeof(float) * c.T * H);
                memcpy(ids_full, ids, 4 * c.T * k);
                be->memory(L, c.T, &m);
                cr_assert_gt(m.scratch, 0);
                scratch = m.scratch;
            }
            /* routing is per token (not under expert choice, whose experts
             * choose among the pass's tokens): the ids of a prefix are the
             * full pass's */
            const bool per_token = c.desc.routing != MOEVK_ROUTING_EXPERT_CHOICE;
            cr_assert(!per_token || memcmp(ids, ids_full, 4 * (size_t)T * k) == 0,
                      "%s: T=%u ids", desc, T);
            /* dropless, a prefix's y is the full pass's: bitwise for the
             * per-element kernels; cuBLAS may pick other GEMM kernels for
             * other row counts (same inputs, other summation order) */
            const bool dropless =
                c.desc.capacity_factor == 0.0f && c.desc.capacity_fraction == 0.0;
            if (dropless && b == MVK_CUDA_REF && per_token)
                cr_assert(memcmp(y, y_full, sizeof(float) * T * H) == 0,
                          "%s: T=%u: y of a prefix differs (dropless)", desc, T);
            if (dropless && b != MVK_CUDA_REF && per_token) {
                double e = mvkt_rel_l2(y, y_full, (size_t)T * H);
                cr_assert_leq(e, 1e-5, "%s: T=%u: y of a prefix differs by %g", desc, T, e);
            }
            for (size_t j = 0; j < (size_t)T * H; j++)
                cr_assert(!isnan(y[j]), "%s: T=%u: y[%zu] not written", desc, T, j);
        }
        be->memory(L, c.T, &m);
        cr_assert_eq(m.scratch, scratch, "scratch should not grow for smaller T");
        cr_assert_eq(m.peak, m.weights + m.scratch);

        /* Each column is its own median over the timed passes, so the
         * total's median is not bounded by the sum of the stages' medians
         * (a slow stage in a different pass each time slows every total
         * and no stage's median). One timed pass: the events bracket the
         * stages back to back, so its total is the sum of its stages, up to
         * the rounding of each elapsed time (a float; ~0.5 us resolution on
         * a device). Three: finite and non-negative times. */
        for (uint32_t iters = 1; iters <= 3; iters += 2) {
            mvk_backend_times tm;
            tm.total_ms = -1;
            for (int s = 0; s < MOEVK_STAGE_COUNT; s++)
                tm.stage_ms[s] = -1;
            st = be->bench(L, c.T, c.x, 1, iters, &tm, err, sizeof err);
            cr_assert_eq(st, MOEVK_SUCCESS, "%s: bench: %s", desc, err);
            double sum = 0;
            for (int s = 0; s < MOEVK_STAGE_COUNT; s++) {
                cr_assert(isfinite(tm.stage_ms[s]) && tm.stage_ms[s] >= 0,
                          "%s: bench (%u passes) stage %d: %g", desc, iters, s, tm.stage_ms[s]);
                sum += tm.stage_ms[s];
            }
            cr_assert(isfinite(tm.total_ms) && tm.total_ms >= 0, "%s: bench (%u passes) total %g",
                      desc, iters, tm.total_ms);
            if (iters == 1)
                cr_assert(fabs(tm.total_ms - sum) <= 1e-3 * (MOEVK_STAGE_COUNT + 1) + 1e-5 * sum,
                          "%s: bench (one pass): total %.6f ms, its stages sum to %.6f ms", desc,
                          tm.total_ms, sum);
        }
        mvk_backend_times tm;
        cr_assert_eq(be->bench(L, c.T, c.x, 0, 0, &tm, err, sizeof err),
                     MOEVK_ERROR_INVALID_ARGUMENT);
        const mvk_backend_out o = {.y = y};
        cr_assert_eq(be->forward(L, 0, c.x, &o, err, sizeof err), MOEVK_ERROR_INVALID_ARGUMENT);
        /* still usable, and the same as before */
        st = be->forward(L, c.T, c.x, &o, err, sizeof err);
        cr_assert_eq(st, MOEVK_SUCCESS, "%s", err);
        cr_assert(memcmp(y, y_full, sizeof(float) * c.T * H) == 0, "%s: y changed", desc);
        be->destroy(L);
        free(y_full), free(y), free(ids_full), free(ids);
        mvkc_case_free(&c);
        mvkc_target_close(&t);
    }
}
