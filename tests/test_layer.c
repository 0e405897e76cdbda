/*
 * The whole MoE layer on the GPU against the CPU reference:
 *  - random configurations from the harness (src/harness: the same cases as
 *    `moevk check --against cpu --seed S`), run on the vulkan backend of the
 *    table and compared under the harness's tolerance policy;
 *  - directed cases: T = 1, 7, 129, 1000; E not a power of two; k = 1 and
 *    k = E; idle experts; all tokens to one expert; capacity drops; exact
 *    score ties (lower index wins); NaN and Inf inputs;
 *  - bitwise determinism over 100 runs;
 *  - moevk_layer_record into the caller's command buffer on an imported
 *    device, bitwise equal to moevk_layer_forward;
 *  - bad descriptions and tensors: the right status, a message naming the
 *    field, nothing leaked, the context still usable.
 *
 * Seeds derive from mvkt_base_seed() (MOEVK_TEST_SEED to replay); every
 * failure message carries the case seed and the command that reproduces it.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>
#include <dlfcn.h>

#include "common.h"
#include "formats.h"
#include "harness/harness.h"
#include "host_app.h"
#include "ref/ref.h"
#include "testing.h"

/* ---- running one case ------------------------------------------------------ */

/* The vulkan backend of the table on the test's (validated) context. */
static mvkc_target vulkan_target(moevk_context *ctx)
{
    mvkc_target t;
    const mvk_backend_opts o = {.native = ctx};
    char err[512] = "";
    moevk_status st = mvkc_target_open(&t, mvk_backend_find("vulkan"), &o, NULL, err, sizeof err);
    cr_assert_eq(st, MOEVK_SUCCESS, "vulkan backend: %s", err);
    return t;
}

/* Build the case of `seed`, run it on the GPU, compare with the reference
 * and assert that it passes. */
static void run_case(moevk_context *ctx, uint64_t seed, const mvkc_limits *lim, mvkc_check *r)
{
    mvkc_target t = vulkan_target(ctx);
    int ok = mvkc_check_seed(&t, NULL, seed, lim, r);
    char repro[256];
    if (!mvkc_repro(&t, NULL, seed, lim, repro, sizeof repro))
        snprintf(repro, sizeof repro, "limits of this test: MOEVK_TEST_SEED replays it");
    mvkc_target_close(&t);
    cr_assert(ok, "seed %llu (%s) [%s]: %s", (unsigned long long)seed, repro, r->desc,
              r->rep.reason);
}

static void run_free(mvkc_check *r)
{
    mvkc_check_free(r);
}

static void check_seed(moevk_context *ctx, uint64_t seed, const mvkc_limits *lim)
{
    mvkc_check r;
    run_case(ctx, seed, lim, &r);
    run_free(&r);
}

/* ---- random configurations ----------------------------------------------------- */

/* 5 blocks of 40 cases; MOEVK_TEST_CASES_SCALE scales the 40 (the sanitizer
 * and second-driver passes run fewer; `moevk check --cases N` runs any
 * number) */
#define RANDOM_PER_TEST 40

static void random_block(int block)
{
    moevk_context *ctx = mvkt_context();
    uint64_t base = mvkt_base_seed() + 100000ull * (uint64_t)block;
    int n = mvkt_scaled(RANDOM_PER_TEST, 1);
    /* MOEVK_TEST_MAX_WORK caps each case's multiply-adds (the sanitizer
     * pass, where the reference runs instrumented): the generator shrinks
     * the sizes it drew to fit, as it does for its own default */
    mvkc_limits l;
    memset(&l, 0, sizeof l);
    l.max_work = mvkt_env_u64("MOEVK_TEST_MAX_WORK", 0);
    l.max_weights = l.max_work;
    for (int i = 0; i < n; i++)
        check_seed(ctx, base + (uint64_t)i, l.max_work ? &l : NULL);
    mvkt_context_end(ctx);
}

Test(layer_random, block_0, .timeout = 600) { random_block(0); }
Test(layer_random, block_1, .timeout = 600) { random_block(1); }
Test(layer_random, block_2, .timeout = 600) { random_block(2); }
Test(layer_random, block_3, .timeout = 600) { random_block(3); }
Test(layer_random, block_4, .timeout = 600) { random_block(4); }

/* ---- directed cases ------------------------------------------------------------ */

static mvkc_limits limits(void)
{
    mvkc_limits l;
    memset(&l, 0, sizeof l);
    return l;
}

Test(layer, token_counts_and_odd_expert_counts)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed() ^ 0x1000;
    static const uint32_t Ts[] = {1, 7, 129, 1000};
    static const uint32_t Es[] = {3, 60, 100, 257};
    for (int i = 0; i < 4; i++) {
        for (uint32_t routing = 0; routing < 3; routing++) {
            mvkc_limits l = limits();
            l.tokens = Ts[i];
            l.experts = Es[(i + routing) % 4];
            l.routing = MVKC_PICK(routing);
            l.scenarios_off = MVKC_SC_ALL;
            mvkc_check r;
            run_case(ctx, seed + 10 * i + routing, &l, &r);
            cr_assert_eq(r.c.T, Ts[i]);
            cr_assert_eq(r.rep.compared + r.rep.near_ties, Ts[i],
                         "seed %llu: every token is compared or a near-tie",
                         (unsigned long long)r.c.seed);
            run_free(&r);
        }
    }
    mvkt_context_end(ctx);
}

Test(layer, k_one_and_k_equal_to_e)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed() ^ 0x2000;
    static const uint32_t Es[] = {1, 2, 3, 7, 24, 32};
    for (int i = 0; i < 6; i++) {
        for (int all = 0; all < 2; all++) {
            mvkc_limits l = limits();
            l.experts = Es[i];
            l.top_k = all ? MVKC_K_ALL : 1;
            l.tokens = 1 + 37 * (uint32_t)i;
            l.routing = MVKC_PICK((i + all) % 3);
            l.scenarios_off = MVKC_SC_NONFINITE; /* covered by nan_and_inf_inputs */
            mvkc_check r;
            run_case(ctx, seed + 2 * i + all, &l, &r);
            cr_assert_eq(r.c.desc.top_k, all ? Es[i] : 1u);
            /* k = E: every token uses every expert, in score order */
            if (all && !r.c.desc.capacity_factor && !r.c.desc.capacity_fraction)
                for (uint32_t e = 0; e < Es[i]; e++)
                    cr_assert_eq(r.res.tpe[e], r.c.T, "seed %llu: expert %u",
                                 (unsigned long long)r.c.seed, e);
            run_free(&r);
        }
    }
    /* larger E with k = 32 (the maximum) */
    mvkc_limits l = limits();
    l.experts = 600;
    l.top_k = MVKC_K_ALL;
    l.tokens = 40;
    l.scenarios_off = MVKC_SC_NONFINITE;
    check_seed(ctx, seed + 100, &l);
    mvkt_context_end(ctx);
}

Test(layer, experts_without_tokens)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed() ^ 0x3000;
    for (int i = 0; i < 6; i++) {
        mvkc_limits l = limits();
        l.scenarios_on = MVKC_SC_IDLE;
        l.scenarios_off = MVKC_SC_NONFINITE;
        l.routing = MVKC_PICK(i % 3);
        mvkc_check r;
        run_case(ctx, seed + i, &l, &r);
        uint32_t E = r.c.desc.num_experts, idle = 0;
        for (uint32_t e = 0; e < E; e++)
            idle += r.res.tpe[e] == 0;
        cr_assert_geq(idle, E - r.c.T * r.c.desc.top_k, "seed %llu", (unsigned long long)r.c.seed);
        cr_assert_gt(idle, 0);
        run_free(&r);
    }
    mvkt_context_end(ctx);
}

Test(layer, all_tokens_to_one_expert)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed() ^ 0x4000;
    for (int i = 0; i < 6; i++) {
        mvkc_limits l = limits();
        l.scenarios_on = MVKC_SC_ONE_EXPERT;
        l.scenarios_off = MVKC_SC_TIES | MVKC_SC_NONFINITE;
        l.capacity_factor = -1;
        l.routing = MVKC_PICK(i % 3);
        l.tokens = i < 3 ? 129 : 1000;
        mvkc_check r;
        run_case(ctx, seed + i, &l, &r);
        cr_assert_eq(r.res.tpe[r.c.dominant], r.c.T, "seed %llu: expert %u got %u of %u tokens",
                     (unsigned long long)r.c.seed, r.c.dominant, r.res.tpe[r.c.dominant], r.c.T);
        for (uint32_t t = 0; t < r.c.T; t++)
            cr_assert_eq(r.res.ids[(size_t)t * r.c.desc.top_k], r.c.dominant);
        run_free(&r);
    }
    mvkt_context_end(ctx);
}

Test(layer, capacity_drops)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed() ^ 0x5000;
    for (int i = 0; i < 8; i++) {
        mvkc_limits l = limits();
        /* one dominant expert overflows any capacity; Switch-style top-1
         * with 1.25; GShard-style top-2 with 0.5; and random factors */
        if (i < 3) {
            /* C = ceil(cf * T * k / E) < T for the dominant expert */
            l.scenarios_on = MVKC_SC_ONE_EXPERT;
            l.capacity_factor = 1.0f + 0.5f * (float)i;
            l.routing = MVKC_PICK(i % 3);
            l.top_k = 1 + (uint32_t)i % 2;
            l.experts = 16 + 7 * (uint32_t)i;
        } else if (i < 5) {
            l.routing = MVKC_PICK(i % 3); /* top-k modes: expert choice drops nothing */
            l.top_k = 1;
            l.capacity_factor = 1.25f;
            l.experts = i == 3 ? 8 : 61;
            l.tokens = 1000;
        } else {
            l.routing = MVKC_PICK(i % 3);
            l.top_k = 2;
            l.capacity_factor = 0.5f;
            l.experts = 5 + 11 * (uint32_t)i;
        }
        /* TINY off: a tiny token's sigmoids (sigmoid_grouped) are all ~0.5, near-tied, in
         * every redraw of x, so the generator gave up the capacity and the
         * drops went unchecked */
        l.scenarios_off |= MVKC_SC_NONFINITE | MVKC_SC_TINY;
        /* no soft cap: a small one squeezes 1000 tokens' logits into near-ties
         * in every redraw of x (seed 1796226985440668: cap 0.264) */
        l.router_softcap = -1;
        if (!l.tokens)
            l.tokens = 129 + (uint32_t)i;
        mvkc_check r;
        run_case(ctx, seed + i, &l, &r);
        cr_assert(!r.c.capacity_removed, "seed %llu [%s]: no x without near-ties in 11 draws",
                  (unsigned long long)r.c.seed, r.desc);
        /* What must be dropped follows from the ids alone: every expert
         * keeps min(load, C) of its load. Random routing (i = 3..7) may
         * overflow no expert, so drops are required only where a load
         * exceeds C; the dominant-expert cases (i < 3) always overflow. */
        const uint32_t E = r.c.desc.num_experts, K = r.c.desc.top_k;
        const uint32_t cap = moevk_ref_capacity(&r.c.desc, r.c.T);
        uint64_t must_drop = 0;
        for (uint32_t e = 0; e < E; e++) {
            uint64_t load = 0;
            for (size_t a = 0; a < (size_t)r.c.T * K; a++)
                load += r.res.ids[a] == e;
            must_drop += load > cap ? load - cap : 0;
            cr_assert_eq(r.res.tpe[e], load > cap ? cap : load,
                         "seed %llu [%s]: expert %u admitted %u of %llu with C = %u",
                         (unsigned long long)r.c.seed, r.desc, e, r.res.tpe[e],
                         (unsigned long long)load, cap);
        }
        cr_assert_eq(r.res.stats.dropped, must_drop, "seed %llu [%s]: dropped %llu, expected %llu",
                     (unsigned long long)r.c.seed, r.desc,
                     (unsigned long long)r.res.stats.dropped, (unsigned long long)must_drop);
        if (i < 3)
            cr_assert_gt(must_drop, 0, "seed %llu [%s]: the dominant expert did not overflow",
                         (unsigned long long)r.c.seed, r.desc);
        if (!r.rep.swapped)
            cr_assert_eq(r.res.stats.dropped, r.ref.out.stats.dropped);
        uint64_t minus = 0;
        for (size_t a = 0; a < (size_t)r.c.T * K; a++)
            minus += r.res.rows[a] < 0;
        cr_assert_eq(minus, r.res.stats.dropped, "rows of -1 must be the dropped ones");
        run_free(&r);
    }
    mvkt_context_end(ctx);
}

/* Copy expert a's router row and bias onto expert b (bitwise-equal logits). */
static void make_tie(mvkc_case *c, uint32_t a, uint32_t b)
{
    size_t rs = moevk_dtype_size(c->desc.router_dtype) * c->desc.hidden;
    memcpy((char *)c->router + b * rs, (char *)c->router + a * rs, rs);
    if (c->router_bias)
        c->router_bias[b] = c->router_bias[a];
    if (c->correction_bias)
        c->correction_bias[b] = c->correction_bias[a];
    /* and its per-expert weight scale (Gemma 4's, stream 21), so the twins'
     * weights are equal too */
    if (c->desc.expert_weight_scale)
        c->norm_arrays[2 * (size_t)c->desc.hidden + b] =
            c->norm_arrays[2 * (size_t)c->desc.hidden + a];
}

Test(layer, exact_ties_lower_index_wins)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed() ^ 0x6000;
    for (int i = 0; i < 9; i++) {
        mvkc_limits l = limits();
        l.scenarios_on = MVKC_SC_ONE_EXPERT;
        /* TINY off: a tiny token's logits (~1e-12) make every sigmoid 0.5
         * in fp32, so the GPU's slot after the pair is the lowest index
         * while the reference's is the largest logit (a near-tie it flags) */
        l.scenarios_off = MVKC_SC_NONFINITE | MVKC_SC_TIES | MVKC_SC_TINY;
        l.routing = MVKC_PICK(i % 3);
        l.experts = 2 + 13 * (uint32_t)i;
        l.top_k = 1 + (uint32_t)i % 3;
        l.tokens = 64;
        l.capacity_factor = -1;
        mvkc_check r;
        memset(&r, 0, sizeof r);
        cr_assert_eq(mvkc_case_random(seed + i, &l, &r.c), MOEVK_SUCCESS);
        /* one group: the pair competes directly (kept groups, which
         * softmax_topk draws too, can drop one twin's group) */
        r.c.desc.n_group = 0;
        r.c.desc.topk_group = 0;
        /* the dominant expert and a twin: both at the top of every token */
        uint32_t E = r.c.desc.num_experts, dom = r.c.dominant;
        uint32_t twin = (dom + E / 2) % E;
        make_tie(&r.c, dom, twin);
        uint32_t lo = dom < twin ? dom : twin, hi = dom < twin ? twin : dom;
        mvkc_case_describe(&r.c, r.desc, sizeof r.desc);
        char what[512] = "";
        mvkc_target vk = vulkan_target(ctx);
        cr_assert_eq(mvkc_run(&vk, &r.c, &r.res, what, sizeof what), MOEVK_SUCCESS, "%s", what);
        mvkc_target_close(&vk);
        cr_assert_eq(mvkc_reference(&r.c, &r.ref), MOEVK_SUCCESS);
        cr_assert(mvkc_compare(&r.c, &r.ref, &r.res, &r.rep), "seed %llu [%s]: %s",
                  (unsigned long long)r.c.seed, r.desc, r.rep.reason);
        /* The tied pair's slots exactly (no tolerance for a bitwise tie),
         * on the GPU and in the reference; the slots after the pair are
         * ordinary routing, which mvkc_compare judged above (its near-ties
         * and fp32 tolerance included). */
        uint32_t k = r.c.desc.top_k;
        for (uint32_t t = 0; t < r.c.T; t++) {
            const uint32_t *g = r.res.ids + (size_t)t * k, *rf = r.ref.out.ids + (size_t)t * k;
            cr_assert_eq(rf[0], lo, "seed %llu [%s] token %u: reference slot 0 is %u, the lower "
                         "twin is %u", (unsigned long long)r.c.seed, r.desc, t, rf[0], lo);
            cr_assert_eq(g[0], lo, "seed %llu token %u: slot 0 is %u, the lower twin is %u",
                         (unsigned long long)r.c.seed, t, g[0], lo);
            if (k > 1) {
                cr_assert_eq(rf[1], hi, "seed %llu token %u: reference slot 1 is %u, the higher "
                             "twin is %u", (unsigned long long)r.c.seed, t, rf[1], hi);
                cr_assert_eq(g[1], hi, "seed %llu token %u: slot 1 is %u, the higher twin is %u",
                             (unsigned long long)r.c.seed, t, g[1], hi);
                float *w = r.res.weights + (size_t)t * k;
                cr_assert_eq(memcmp(&w[0], &w[1], sizeof(float)), 0,
                             "token %u: tied experts got weights %.9g and %.9g", t, w[0], w[1]);
            }
        }
        run_free(&r);
    }
    /* random cases with duplicated rows anywhere in the ranking */
    for (int i = 0; i < 6; i++) {
        mvkc_limits l = limits();
        l.scenarios_on = MVKC_SC_TIES;
        l.routing = MVKC_PICK(i % 3);
        check_seed(ctx, seed + 100 + i, &l);
    }
    mvkt_context_end(ctx);
}

/* Dropless: under capacity a NaN token (ids 0..k-1, its logits all NaN) can
 * have every assignment dropped, and its y is then exactly 0. Without drops
 * every token with a NaN or Inf in x has a non-finite reference y in the
 * cases below: a NaN makes its logits NaN, hence its weights and y; an Inf
 * makes every logit +-Inf (or NaN), so the softmax weights (softmax_topk,
 * topk_softmax: i % 3 = 0, 1) are NaN; sigmoid_grouped (i = 2, 5, 8) gives
 * finite weights, but every pre-activation of the experts is +-Inf or NaN,
 * and its activations there (geglu_tanh, gelu) map -Inf to NaN, +Inf to Inf. */
Test(layer, nan_and_inf_inputs)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed() ^ 0x7000;
    for (int i = 0; i < 9; i++) {
        mvkc_limits l = limits();
        l.scenarios_on = MVKC_SC_NONFINITE | (i % 2 ? MVKC_SC_TINY : 0);
        l.routing = MVKC_PICK(i % 3);
        l.activation = MVKC_PICK(i % 6);
        l.capacity_factor = -1; /* dropless */
        mvkc_check r;
        run_case(ctx, seed + i, &l, &r);
        /* the comparison counted exactly the compared tokens (not near-tied,
         * the reference's ids) whose reference y is not finite */
        const uint32_t H = r.c.desc.hidden, k = r.c.desc.top_k;
        uint32_t want = 0;
        for (uint32_t t = 0; t < r.c.T; t++) {
            if (r.ref.near_tie[t] ||
                memcmp(r.res.ids + (size_t)t * k, r.ref.out.ids + (size_t)t * k, 4 * k))
                continue;
            int bad = 0;
            for (uint32_t h = 0; h < H; h++)
                bad |= !isfinite(r.ref.out.y[(size_t)t * H + h]);
            want += bad;
        }
        cr_assert_eq(r.rep.nonfinite, want, "seed %llu [%s]: %u non-finite tokens, expected %u",
                     (unsigned long long)r.c.seed, r.desc, r.rep.nonfinite, want);
        cr_assert_gt(r.rep.nonfinite, 0, "seed %llu [%s]: no non-finite token",
                     (unsigned long long)r.c.seed, r.desc);
        run_free(&r);
    }
    mvkt_context_end(ctx);
}

/* ---- determinism ------------------------------------------------------------------ */

Test(layer, bitwise_deterministic, .timeout = 600)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed() ^ 0x8000;
    mvkc_limits l = limits();
    l.tokens = 129;
    l.experts = 60;
    l.top_k = 4;
    l.num_shared = MVKC_PICK(1);
    l.capacity_factor = 1.0f;
    l.scenarios_off = MVKC_SC_NONFINITE;
    mvkc_case c;
    cr_assert_eq(mvkc_case_random(seed, &l, &c), MOEVK_SUCCESS);
    uint32_t T = c.T, H = c.desc.hidden, E = c.desc.num_experts, k = moevk_routing_slots(&c.desc);
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &c.desc, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_tensor tx, ty;
    uint64_t shape[2] = {T, H};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &tx), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &ty), 0);
    cr_assert_eq(moevk_tensor_upload(&tx, c.x), 0);
    size_t TH = (size_t)T * H, TK = (size_t)T * k;
    float *y0 = malloc(sizeof(float) * TH), *y = malloc(sizeof(float) * TH);
    uint32_t *tpe0 = malloc(sizeof(uint32_t) * E), *tpe = malloc(sizeof(uint32_t) * E);
    uint32_t *ids0 = malloc(4 * TK), *ids = malloc(4 * TK);
    int32_t *rows0 = malloc(4 * TK), *rows = malloc(4 * TK);
    float *w0 = malloc(4 * TK), *w = malloc(4 * TK);
    moevk_routing_stats s0 = {.tokens_per_expert = tpe0}, s = {.tokens_per_expert = tpe};
    int runs = mvkt_scaled(100, 2); /* 100 unless MOEVK_TEST_CASES_SCALE says otherwise */
    for (int run_i = 0; run_i < runs; run_i++) {
        int first = run_i == 0;
        mvkt_poison_tensor(&ty);
        moevk_routing_stats *sp = first ? &s0 : &s;
        cr_assert_eq(moevk_layer_forward(L, &tx, &ty, sp), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        cr_assert_eq(moevk_tensor_download(&ty, first ? y0 : y), 0);
        cr_assert_eq(moevk_layer_read_routing(L, T, first ? ids0 : ids, first ? w0 : w,
                                              first ? rows0 : rows), 0);
        if (first)
            continue;
        cr_assert(memcmp(y0, y, sizeof(float) * TH) == 0, "seed %llu: run %d: y differs bitwise",
                  (unsigned long long)seed, run_i);
        cr_assert(memcmp(tpe0, tpe, sizeof(uint32_t) * E) == 0, "run %d: counts differ", run_i);
        cr_assert(memcmp(ids0, ids, 4 * TK) == 0, "run %d: ids differ", run_i);
        cr_assert(memcmp(rows0, rows, 4 * TK) == 0, "run %d: rows differ", run_i);
        cr_assert(memcmp(w0, w, 4 * TK) == 0, "run %d: weights differ", run_i);
        cr_assert_eq(s.dropped, s0.dropped);
        cr_assert(memcmp(&s.load_balancing_loss, &s0.load_balancing_loss, sizeof(double)) == 0 &&
                      memcmp(&s.router_z_loss, &s0.router_z_loss, sizeof(double)) == 0 &&
                      memcmp(&s.routing_entropy, &s0.routing_entropy, sizeof(double)) == 0,
                  "run %d: losses differ bitwise", run_i);
    }
    /* and the first run was right */
    mvkc_ref ref;
    mvkc_result g;
    mvkc_report rep;
    cr_assert_eq(mvkc_reference(&c, &ref), MOEVK_SUCCESS);
    cr_assert_eq(mvkc_result_alloc(&c, &g), MOEVK_SUCCESS);
    memcpy(g.y, y0, sizeof(float) * TH);
    memcpy(g.ids, ids0, 4 * TK);
    memcpy(g.weights, w0, 4 * TK);
    memcpy(g.rows, rows0, 4 * TK);
    memcpy(g.tpe, tpe0, 4 * E);
    memcpy(g.tpe_read, tpe0, 4 * E);
    g.stats = s0;
    g.stats.tokens_per_expert = g.tpe;
    g.stats_read = s0;
    g.stats_read.tokens_per_expert = g.tpe_read;
    cr_assert(mvkc_compare(&c, &ref, &g, &rep), "seed %llu: %s", (unsigned long long)seed,
              rep.reason);
    mvkc_result_free(&g);
    mvkc_ref_free(&ref);
    free(y0), free(y), free(tpe0), free(tpe), free(ids0), free(ids), free(rows0), free(rows);
    free(w0), free(w);
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
    moevk_layer_destroy(L);
    mvkc_case_free(&c);
    mvkt_context_end(ctx);
}

/* ---- recording into the caller's command buffer ----------------------------------- */


/* Record the layer into the host's command buffer, submit it on the host's
 * queue, wait; then y, routing and stats must equal moevk_layer_forward's
 * bitwise, and be right against the reference. */
static void record_case(host_app *h, moevk_context *ctx, uint64_t seed, const mvkc_limits *l)
{
    mvkc_check r;
    memset(&r, 0, sizeof r);
    cr_assert_eq(mvkc_case_random(seed, l, &r.c), MOEVK_SUCCESS);
    mvkc_case_describe(&r.c, r.desc, sizeof r.desc);
    uint32_t T = r.c.T, H = r.c.desc.hidden, E = r.c.desc.num_experts, k = moevk_routing_slots(&r.c.desc);
    size_t TH = (size_t)T * H, TK = (size_t)T * k;

    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &r.c.desc, &L), MOEVK_SUCCESS, "seed %llu [%s]: %s",
                 (unsigned long long)seed, r.desc, moevk_context_last_error(ctx));
    moevk_tensor tx, ty;
    uint64_t shape[2] = {T, H};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &tx), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &ty), 0);
    cr_assert_eq(moevk_tensor_upload(&tx, r.c.x), 0);

    /* recording requires reserved scratch */
    moevk_status st = moevk_layer_record(L, (void *)(uintptr_t)1, &tx, &ty);
    cr_assert_neq(st, MOEVK_SUCCESS, "recording without moevk_layer_reserve must fail");
    cr_assert(strstr(moevk_context_last_error(ctx), "reserve"), "message: %s",
              moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_reserve(L, T), MOEVK_SUCCESS, "%s", moevk_context_last_error(ctx));

    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                   .queueFamilyIndex = h->fam};
    VkCommandPool pool;
    cr_assert_eq(h->CreateCommandPool(h->dev, &pci, NULL, &pool), VK_SUCCESS);
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    VkCommandBuffer cb;
    cr_assert_eq(h->AllocateCommandBuffers(h->dev, &ai, &cb), VK_SUCCESS);
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence;
    cr_assert_eq(h->CreateFence(h->dev, &fci, NULL, &fence), VK_SUCCESS);

    cr_assert_eq(r.res.y == NULL, 1);
    cr_assert_eq(mvkc_result_alloc(&r.c, &r.res), MOEVK_SUCCESS);
    float *y_rec = malloc(sizeof(float) * TH);
    uint32_t *ids_rec = malloc(4 * TK);
    float *w_rec = malloc(4 * TK);
    int32_t *rows_rec = malloc(4 * TK);
    uint32_t *tpe_rec = malloc(4 * (size_t)E);
    moevk_routing_stats s_rec = {.tokens_per_expert = tpe_rec};

    /* twice: the second recording reuses the layer after its submission
     * completed, into a re-recorded command buffer */
    for (int pass = 0; pass < 2; pass++) {
        mvkt_poison_tensor(&ty);
        VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                       .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
        cr_assert_eq(h->ResetCommandBuffer(cb, 0), VK_SUCCESS);
        cr_assert_eq(h->BeginCommandBuffer(cb, &bi), VK_SUCCESS);
        /* before: x's upload and y's poisoning (transfers) visible to compute */
        host_barrier(h, cb, VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_WRITE_BIT,
                VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
        st = moevk_layer_record(L, cb, &tx, &ty);
        cr_assert_eq(st, MOEVK_SUCCESS, "seed %llu: %s", (unsigned long long)seed,
                     moevk_context_last_error(ctx));
        /* after: y (and moevk's results) written by compute shaders */
        host_barrier(h, cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_HOST_BIT |
                    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_HOST_READ_BIT |
                    VK_ACCESS_SHADER_READ_BIT);
        cr_assert_eq(h->EndCommandBuffer(cb), VK_SUCCESS);
        VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                           .commandBufferCount = 1,
                           .pCommandBuffers = &cb};
        cr_assert_eq(h->ResetFences(h->dev, 1, &fence), VK_SUCCESS);
        cr_assert_eq(h->QueueSubmit(h->queue, 1, &si, fence), VK_SUCCESS);
        cr_assert_eq(h->WaitForFences(h->dev, 1, &fence, VK_TRUE, 60ull * 1000000000ull),
                     VK_SUCCESS);
        cr_assert_eq(moevk_tensor_download(&ty, y_rec), 0);
        cr_assert_eq(moevk_layer_read_routing(L, T, ids_rec, w_rec, rows_rec), 0, "%s",
                     moevk_context_last_error(ctx));
        cr_assert_eq(moevk_layer_read_stats(L, &s_rec), 0);
        if (pass == 0) {
            memcpy(r.res.y, y_rec, sizeof(float) * TH);
            memcpy(r.res.ids, ids_rec, 4 * TK);
            memcpy(r.res.weights, w_rec, 4 * TK);
            memcpy(r.res.rows, rows_rec, 4 * TK);
            memcpy(r.res.tpe, tpe_rec, 4 * (size_t)E);
            r.res.stats = s_rec;
            r.res.stats.tokens_per_expert = r.res.tpe;
        } else {
            cr_assert(memcmp(r.res.y, y_rec, sizeof(float) * TH) == 0,
                      "second recording: y differs");
        }
    }

    /* the same layer through moevk_layer_forward: bitwise equal */
    mvkt_poison_tensor(&ty);
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, &r.res.stats_read), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_tensor_download(&ty, y_rec), 0);
    cr_assert_eq(moevk_layer_read_routing(L, T, ids_rec, w_rec, rows_rec), 0);
    cr_assert(memcmp(r.res.y, y_rec, sizeof(float) * TH) == 0,
              "seed %llu [%s]: recorded y differs from moevk_layer_forward's",
              (unsigned long long)seed, r.desc);
    cr_assert(memcmp(r.res.ids, ids_rec, 4 * TK) == 0, "recorded ids differ");
    cr_assert(memcmp(r.res.weights, w_rec, 4 * TK) == 0, "recorded weights differ");
    cr_assert(memcmp(r.res.rows, rows_rec, 4 * TK) == 0, "recorded rows differ");

    /* stats of the recorded pass vs the forward's (compare() checks the
     * two are identical) and everything vs the reference */
    cr_assert_eq(mvkc_reference(&r.c, &r.ref), MOEVK_SUCCESS);
    cr_assert(mvkc_compare(&r.c, &r.ref, &r.res, &r.rep), "seed %llu [%s]: %s",
              (unsigned long long)seed, r.desc, r.rep.reason);

    free(y_rec), free(ids_rec), free(w_rec), free(rows_rec), free(tpe_rec);
    h->DestroyFence(h->dev, fence, NULL);
    h->DestroyCommandPool(h->dev, pool, NULL);
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
    moevk_layer_destroy(L);
    run_free(&r);
}

Test(layer, record_into_host_command_buffer, .timeout = 600)
{
    moevk_context *probe = mvkt_context(); /* skips when there is no device */
    mvkt_context_end(probe);
    host_app h;
    host_create(&h);
    moevk_vulkan_import im = host_import(&h);
    moevk_context_desc d = {.import = &im};
    moevk_context *ctx = NULL;
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_SUCCESS);

    uint64_t seed = mvkt_base_seed() ^ 0x9000;
    for (int i = 0; i < 4; i++) {
        mvkc_limits l = limits();
        l.weight_dtype = MVKC_PICK(i % 3); /* f16/bf16 on a device without 16-bit features */
        l.router_dtype = MVKC_PICK((i + 1) % 3);
        l.routing = MVKC_PICK(i % 3);
        l.capacity_factor = i == 3 ? 0.75f : -1.0f;
        l.num_shared = MVKC_PICK(i % 2);
        l.tokens = i == 0 ? 1 : 50 + 40 * (uint32_t)i;
        l.scenarios_off = MVKC_SC_NONFINITE;
        record_case(&h, ctx, seed + i, &l);
    }
    moevk_context_destroy(ctx);
    host_destroy(&h);
    unsigned msgs = atomic_load(&h.messages);
    cr_assert_eq(msgs, 0, "%u validation messages on the host's instance", msgs);
}

/* ---- bad input ------------------------------------------------------------------ */

/* A small valid description over static weights (E = 4, H = 8, F = 6). */
enum { BH = 8, BF = 6, BE = 4 };
static float b_router[BE * BH], b_gate[BE * BF * BH], b_up[BE * BF * BH], b_down[BE * BH * BF];

static moevk_layer_desc good_desc(void)
{
    for (int i = 0; i < BE * BH; i++)
        b_router[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    for (int i = 0; i < BE * BF * BH; i++) {
        b_gate[i] = (float)((i * 13) % 7) / 7.0f - 0.5f;
        b_up[i] = (float)((i * 17) % 5) / 5.0f - 0.5f;
        b_down[i] = (float)((i * 19) % 9) / 9.0f - 0.5f;
    }
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.hidden = BH;
    d.ffn = BF;
    d.num_experts = BE;
    d.top_k = 2;
    d.routing = MOEVK_ROUTING_SOFTMAX_TOPK;
    d.activation = MOEVK_ACT_SWIGLU;
    d.router_weight = b_router;
    d.experts.gate = b_gate;
    d.experts.up = b_up;
    d.experts.down = b_down;
    return d;
}

/* desc must be rejected by moevk_layer_create with `want` and a message
 * containing `field`, leaking nothing. */
static void expect_bad(moevk_context *ctx, const moevk_layer_desc *d, moevk_status want,
                       const char *field, const char *what)
{
    int64_t live = moevk_testing_live_objects(ctx);
    moevk_layer *L = (moevk_layer *)(uintptr_t)0x1;
    moevk_status st = moevk_layer_create(ctx, d, &L);
    const char *msg = moevk_context_last_error(ctx);
    cr_assert_eq(st, want, "%s: status %s, expected %s (message: %s)", what,
                 moevk_status_string(st), moevk_status_string(want), msg);
    cr_assert_null(L, "%s: the out handle must be NULL after a failure", what);
    cr_assert(strstr(msg, field), "%s: message '%s' should name '%s'", what, msg, field);
    cr_assert_eq(moevk_testing_live_objects(ctx), live, "%s: leaked %lld objects", what,
                 (long long)(moevk_testing_live_objects(ctx) - live));
    /* the validator alone agrees */
    cr_assert_eq(moevk_layer_desc_validate(NULL, d), want, "%s: moevk_layer_desc_validate", what);
}

/* the context still runs a valid layer (checked against the reference) */
static void still_works(moevk_context *ctx)
{
    mvkc_limits l = limits();
    l.tokens = 9;
    l.experts = 12;
    l.hidden = 24;
    l.ffn = 20;
    check_seed(ctx, mvkt_base_seed() ^ 0xa000, &l);
}

Test(layer_bad, descriptions_name_the_field)
{
    moevk_context *ctx = mvkt_context();
    moevk_layer_desc d;
#define BAD(mutation, want, field)                                                              \
    do {                                                                                        \
        d = good_desc();                                                                        \
        mutation;                                                                               \
        expect_bad(ctx, &d, want, field, #mutation);                                            \
    } while (0)
    const moevk_status INV = MOEVK_ERROR_INVALID_ARGUMENT;
    BAD(d.top_k = 5, INV, "top_k");               /* k > E */
    BAD(d.top_k = 0, INV, "top_k");
    BAD((d.num_experts = 40, d.top_k = 33), INV, "top_k"); /* k > 32 */
    BAD(d.hidden = 0, INV, "hidden");
    BAD(d.ffn = 0, INV, "ffn");
    BAD(d.num_experts = 0, INV, "num_experts");
    BAD(d.num_experts = 1025, INV, "num_experts");
    BAD((d.routing = MOEVK_ROUTING_SIGMOID_GROUPED, d.n_group = 3), INV, "n_group");
    BAD((d.routing = MOEVK_ROUTING_SIGMOID_GROUPED, d.n_group = 2, d.topk_group = 3), INV,
        "topk_group");
    BAD((d.routing = MOEVK_ROUTING_SIGMOID_GROUPED, d.n_group = 4, d.topk_group = 1), INV,
        "top_k"); /* one kept group of 1 expert cannot hold k = 2 */
    BAD(d.routing = (moevk_routing)17, INV, "routing");
    BAD(d.routing = (moevk_routing)-1, INV, "routing");
    BAD(d.activation = (moevk_activation)(MOEVK_ACT_SWIGLU_POSTCLAMP + 1), INV, "activation");
    BAD((d.flags = MOEVK_LAYER_SHARED_ACTIVATION,
         d.shared_activation = (moevk_activation)(MOEVK_ACT_SWIGLU_POSTCLAMP + 1)),
        INV, "shared_activation");
    BAD((d.flags = MOEVK_LAYER_SHARED_ACTIVATION, d.shared_activation = MOEVK_ACT_RELU), INV,
        "shared_activation"); /* not gated like the routed swiglu */
    BAD((d.flags = MOEVK_LAYER_SHARED_ACTIVATION, d.shared_swiglu_limit = -1.0f), INV,
        "shared_swiglu_limit");
    BAD((d.activation = MOEVK_ACT_SWIGLU_SOFTCAP, d.softcap_up = -2.0f), INV, "softcap_up");
    BAD((d.activation = MOEVK_ACT_SWIGLU_SOFTCAP, d.softcap_gate = INFINITY), INV,
        "softcap_gate");
    BAD(d.weight_dtype = (moevk_dtype)7, INV, "weight_dtype");
    BAD(d.weight_dtype = MOEVK_DTYPE_I32, INV, "weight_dtype");
    BAD(d.router_dtype = (moevk_dtype)9, INV, "router_dtype");
    BAD(d.router_weight = NULL, INV, "router_weight");
    BAD(d.experts.gate = NULL, INV, "gate");
    BAD(d.experts.up = NULL, INV, "up");
    BAD(d.experts.down = NULL, INV, "down");
    BAD((d.activation = MOEVK_ACT_RELU, d.experts.up = NULL), INV, "up");
    BAD((d.activation = MOEVK_ACT_GELU, d.experts.down = NULL), INV, "down");
    BAD((d.num_shared = 1, d.shared.up = b_up, d.shared.down = b_down), INV, "gate");
    BAD(d.capacity_factor = -1.0f, INV, "capacity_factor");
    BAD(d.capacity_factor = NAN, INV, "capacity_factor");
    BAD(d.norm_eps = -1e-6f, INV, "norm_eps");
    BAD(d.norm_eps = NAN, INV, "norm_eps");
    BAD((d.norm_eps = 1e-6f, d.norm_min = 0.5f), INV, "norm_eps"); /* one of the two */
    BAD(d.router_softcap = -1.0f, INV, "router_softcap");
    BAD(d.router_softcap = INFINITY, INV, "router_softcap");
    BAD(d.router_softcap = NAN, INV, "router_softcap");
    BAD((d.routing = MOEVK_ROUTING_TOPK_SOFTMAX, d.select_on_logits = 1), INV,
        "select_on_logits");
    BAD(d.routing = (moevk_routing)5, INV, "routing");
#define SPARSEMIXER(...) (d.routing = MOEVK_ROUTING_SPARSEMIXER, d.norm_topk_prob = 0, __VA_ARGS__)
    BAD(SPARSEMIXER(d.jitter_eps = -0.01f), INV, "jitter_eps");
    BAD(SPARSEMIXER(d.jitter_eps = NAN), INV, "jitter_eps");
    BAD(SPARSEMIXER(d.jitter_eps = INFINITY), INV, "jitter_eps");
    BAD(SPARSEMIXER(d.norm_topk_prob = 1), INV, "norm_topk_prob");
    BAD(SPARSEMIXER(d.n_group = 2), INV, "n_group");
    BAD(SPARSEMIXER(d.select_on_logits = 1), INV, "select_on_logits");
    BAD(SPARSEMIXER(d.correction_bias = b_router), INV, "correction_bias");
#undef SPARSEMIXER
    BAD(d.jitter_eps = 0.01f, INV, "jitter_eps"); /* only for sparsemixer */
    BAD(d.score_fn = MOEVK_SCORE_SQRTSOFTPLUS, INV, "score_fn = 1 is only for sigmoid_grouped");
    BAD(d.capacity_fraction = -0.5, INV, "capacity_fraction = -0.5");
    BAD(d.capacity_fraction = INFINITY, INV, "capacity_fraction");
    BAD((d.capacity_fraction = 0.5, d.capacity_factor = 1.0f), INV, "give one capacity");
    BAD(d.drop_renorm_eps = NAN, INV, "drop_renorm_eps");
    BAD((d.drop_renorm_eps = 1e-7f, d.flags |= MOEVK_LAYER_WEIGHTS_ON_INPUT), INV,
        "drop_renorm_eps");
    BAD((d.routing = MOEVK_ROUTING_EXPERT_CHOICE, d.norm_topk_prob = 0, d.capacity_fraction = 0.5),
        INV, "capacity_fraction");
    BAD((d.routing = MOEVK_ROUTING_SIGMOID_GROUPED, d.score_fn = (moevk_score_fn)2), INV,
        "score_fn = 2 is not a score function");
    BAD(d.router_norm_eps = -1e-6f, INV, "router_norm_eps");
    BAD(d.router_norm_eps = NAN, INV, "router_norm_eps");
    BAD(d.router_input_factor = INFINITY, INV, "router_input_factor");
    BAD(d.expert_norm_eps = -1.0f, INV, "expert_norm_eps");
    BAD(d.expert_norm_eps = INFINITY, INV, "expert_norm_eps");
    BAD(d.expert_norm_weight = b_up, INV, "expert_norm_weight"); /* without its norm */
    BAD((d.routing = MOEVK_ROUTING_EXPERT_CHOICE, d.norm_topk_prob = 0,
         d.expert_weight_scale = b_up),
        INV, "expert_weight_scale");
    /* sizes whose buffers overflow 64 bits or pass the device's limits (the
     * weights are never read: validation comes first) */
    BAD((d.hidden = 1u << 31, d.ffn = 1u << 31, d.num_experts = 1024), MOEVK_ERROR_LIMIT_EXCEEDED,
        "hidden");
    BAD((d.hidden = 1u << 20, d.ffn = 1u << 14), MOEVK_ERROR_LIMIT_EXCEEDED, "hidden");
#undef BAD

    /* a non-gated activation needs no gate */
    d = good_desc();
    d.activation = MOEVK_ACT_RELU;
    d.experts.gate = NULL;
    moevk_layer *L = NULL;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_layer_destroy(L);
    /* (that first upload also created the context's staging buffer, which
     * it keeps: live-object counts below start after it) */

    /* one expert matrix beyond the device's maxStorageBufferRange: a valid
     * description the device cannot hold (only the router array, uploaded
     * first, is read) */
    const moevk_device_info *info = moevk_context_device_info(ctx);
    uint32_t bigH = 4096;
    uint64_t bigF = info->max_storage_buffer_range / (4ull * bigH) + 1;
    if (bigF * bigH <= UINT32_MAX) {
        float *router = calloc(bigH, sizeof(float));
        cr_assert_not_null(router);
        d = good_desc();
        d.hidden = bigH;
        d.ffn = (uint32_t)bigF;
        d.num_experts = 1;
        d.top_k = 1;
        d.router_weight = router;
        cr_assert_eq(moevk_layer_desc_validate(NULL, &d), MOEVK_SUCCESS);
        int64_t live0 = moevk_testing_live_objects(ctx);
        L = (moevk_layer *)(uintptr_t)0x1;
        moevk_status st = moevk_layer_create(ctx, &d, &L);
        cr_assert_eq(st, MOEVK_ERROR_LIMIT_EXCEEDED, "%s: %s", moevk_status_string(st),
                     moevk_context_last_error(ctx));
        cr_assert_null(L);
        cr_assert(strstr(moevk_context_last_error(ctx), "storage buffer range"), "message: %s",
                  moevk_context_last_error(ctx));
        cr_assert_eq(moevk_testing_live_objects(ctx), live0, "leaked %lld objects after LIMIT_EXCEEDED",
                     (long long)(moevk_testing_live_objects(ctx) - live0));
        free(router);
    }

    /* NULL pointers */
    int64_t live = moevk_testing_live_objects(ctx);
    d = good_desc();
    L = NULL;
    cr_assert_eq(moevk_layer_create(NULL, &d, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_null(L);
    cr_assert_eq(moevk_layer_create(ctx, NULL, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "desc"));
    cr_assert_eq(moevk_layer_create(ctx, &d, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "out"));
    cr_assert_eq(moevk_layer_desc_validate(NULL, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    moevk_layer_destroy(NULL);
    cr_assert_eq(moevk_testing_live_objects(ctx), live);

    still_works(ctx);
    mvkt_context_end(ctx);
}

Test(layer_bad, tensors_and_calls)
{
    moevk_context *ctx = mvkt_context();
    moevk_layer_desc d = good_desc();
    moevk_layer *L = NULL;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    enum { T = 5 };
    moevk_tensor x, y, y_short, x_wide, y_wide, x16;
    uint64_t s[2] = {T, BH}, s_short[2] = {T - 1, BH}, s_wide[2] = {T, BH + 1};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, s, &x), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, s, &y), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, s_short, &y_short), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, s_wide, &x_wide), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, s_wide, &y_wide), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F16, 2, s, &x16), 0);
    float xv[T * BH];
    for (int i = 0; i < T * BH; i++)
        xv[i] = (float)(i % 7) / 7.0f - 0.4f;
    cr_assert_eq(moevk_tensor_upload(&x, xv), 0);

    /* reading before any pass */
    moevk_routing_stats st = {0};
    cr_assert_eq(moevk_layer_read_stats(L, &st), MOEVK_ERROR_INVALID_ARGUMENT);
    uint32_t ids[T * 2];
    cr_assert_eq(moevk_layer_read_routing(L, T, ids, NULL, NULL), MOEVK_ERROR_INVALID_ARGUMENT);

    int64_t live = moevk_testing_live_objects(ctx);
    struct {
        const moevk_tensor *x, *y;
        const char *field;
    } bad[] = {
        {&x_wide, &y_wide, "hidden"}, /* H mismatch */
        {&x, &y_short, "y shape"},    /* T mismatch between x and y */
        {&x, &y_wide, "y shape"},     /* y's H mismatch */
        {&x16, &y, "x.dtype"},        /* f16 x */
        {&x, &x16, "y.dtype"},        /* f16 y */
        {&x, &x, "overlap"},          /* in place */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        moevk_status r = moevk_layer_forward(L, bad[i].x, (moevk_tensor *)bad[i].y, NULL);
        cr_assert_eq(r, MOEVK_ERROR_INVALID_ARGUMENT, "case %zu: %s", i,
                     moevk_status_string(r));
        cr_assert(strstr(moevk_context_last_error(ctx), bad[i].field),
                  "case %zu: message '%s' should name '%s'", i, moevk_context_last_error(ctx),
                  bad[i].field);
    }
    moevk_tensor x3 = x;
    x3.ndim = 3;
    cr_assert_eq(moevk_layer_forward(L, &x3, &y, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "x"));
    moevk_tensor xnb = x;
    xnb.buffer = NULL;
    cr_assert_eq(moevk_layer_forward(L, &xnb, &y, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_layer_forward(L, NULL, &y, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_layer_forward(L, &x, NULL, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_layer_forward(NULL, &x, &y, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_layer_record(NULL, (void *)(uintptr_t)1, &x, &y),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_layer_record(L, NULL, &x, &y), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "vk_command_buffer"));
    cr_assert_eq(moevk_layer_reserve(L, 0), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_layer_reserve(NULL, 4), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_layer_read_stats(NULL, &st), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_layer_read_stats(L, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_layer_read_routing(NULL, T, ids, NULL, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    double ms[MOEVK_STAGE_COUNT];
    cr_assert_eq(moevk_layer_stage_times(NULL, ms), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_layer_stage_times(L, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_null(moevk_layer_get_desc(NULL));
    cr_assert_eq(moevk_testing_live_objects(ctx), live, "failed calls leaked objects");

    /* the layer still runs, and a wrong T for read_routing is refused */
    mvkt_poison_tensor(&y);
    cr_assert_eq(moevk_layer_forward(L, &x, &y, &st), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_read_routing(L, T + 1, ids, NULL, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_layer_read_routing(L, T, ids, NULL, NULL), MOEVK_SUCCESS);
    float yv[T * BH], yr[T * BH];
    cr_assert_eq(moevk_tensor_download(&y, yv), 0);
    cr_assert_eq(moevk_ref_layer_forward(&d, T, xv, yr, NULL, NULL, NULL, NULL), MOEVK_SUCCESS);
    cr_assert_leq(mvkt_rel_l2(yv, yr, T * BH), 1e-5);
    /* the desc returned has its defaults filled and no host pointers */
    const moevk_layer_desc *gd = moevk_layer_get_desc(L);
    cr_assert_not_null(gd);
    cr_assert_eq(gd->hidden, BH);
    cr_assert_eq(gd->top_k, 2);

    moevk_tensor_destroy(&x);
    moevk_tensor_destroy(&y);
    moevk_tensor_destroy(&y_short);
    moevk_tensor_destroy(&x_wide);
    moevk_tensor_destroy(&y_wide);
    moevk_tensor_destroy(&x16);
    moevk_layer_destroy(L);
    still_works(ctx);
    mvkt_context_end(ctx);
}

/* ---- the comparison itself (CPU only) ---------------------------------------------- */

/* A result that is the reference itself: the case on the cpu backend of
 * the table (the reference behind the backend interface), which must give
 * the reference's arrays bitwise. */
static void result_from_ref(const mvkc_case *c, const mvkc_ref *ref, mvkc_result *g)
{
    size_t TH = (size_t)c->T * c->desc.hidden, TK = (size_t)c->T * c->desc.top_k;
    mvkc_target cpu;
    char what[512] = "";
    cr_assert_eq(mvkc_target_open(&cpu, mvk_backend_reference(), NULL, NULL, what, sizeof what),
                 MOEVK_SUCCESS, "%s", what);
    cr_assert_eq(mvkc_run(&cpu, c, g, what, sizeof what), MOEVK_SUCCESS, "%s", what);
    mvkc_target_close(&cpu);
    cr_assert(memcmp(g->y, ref->out.y, sizeof(float) * TH) == 0, "cpu backend: y differs");
    cr_assert(memcmp(g->ids, ref->out.ids, 4 * TK) == 0, "cpu backend: ids differ");
    cr_assert(memcmp(g->weights, ref->out.weights, 4 * TK) == 0, "cpu backend: weights differ");
    cr_assert(memcmp(g->rows, ref->out.rows, 4 * TK) == 0, "cpu backend: rows differ");
    cr_assert(memcmp(g->tpe, ref->out.tpe, 4 * (size_t)c->desc.num_experts) == 0,
              "cpu backend: counts differ");
    cr_assert_eq(g->stats.dropped, ref->out.stats.dropped);
}

/* The comparison must catch each kind of error (a checker that cannot fail
 * proves nothing), and accept what the policy allows. */
Test(layer_compare, catches_every_kind_of_error)
{
    mvkc_limits l = limits();
    l.tokens = 50;
    l.experts = 12;
    l.top_k = 3;
    l.capacity_factor = 0.75f;
    l.scenarios_off = MVKC_SC_ALL;
    l.routing = MVKC_PICK(MOEVK_ROUTING_SOFTMAX_TOPK);
    mvkc_case c;
    mvkc_ref ref;
    mvkc_result g;
    mvkc_report rep;
    uint64_t seed = mvkt_base_seed();
    cr_assert_eq(mvkc_case_random(seed, &l, &c), MOEVK_SUCCESS);
    cr_assert_eq(mvkc_reference(&c, &ref), MOEVK_SUCCESS);
    cr_assert_gt(ref.dropped, 0, "seed %llu: the case should drop", (unsigned long long)seed);
    uint32_t k = c.desc.top_k, H = c.desc.hidden;
    /* The token of the route mutants: not a near-tie, slot 0 admitted, of the clearest
     * ranking (largest min(l0 - l1, l2 - l3) of its sorted logits), so that
     * swapping slots 0 and 1, or taking another expert for slot 2, is not a
     * ranking the comparison tolerates (fp32 error ~1e-5 of the logits):
     * the first non-near-tie token could have slots 0 and 1 that close. */
    const uint32_t E = c.desc.num_experts;
    float *lg = malloc(sizeof(float) * c.T * E);
    cr_assert_not_null(lg);
    moevk_ref_router_logits(c.x, c.T, H, c.desc.router_weight, c.desc.router_dtype, E,
                            c.desc.router_bias, lg);
    uint32_t t = 0;
    double t_margin = -1;
    for (uint32_t u = 0; u < c.T; u++) {
        const uint32_t *r = ref.out.ids + u * k;
        double rest = -INFINITY;
        for (uint32_t e = 0; e < E; e++)
            if (e != r[0] && e != r[1] && e != r[2] && lg[u * E + e] > rest)
                rest = lg[u * E + e];
        double m = fmin(lg[u * E + r[0]] - lg[u * E + r[1]], lg[u * E + r[2]] - rest);
        /* slot 0 admitted, for the dropped-row mutant */
        if (!ref.near_tie[u] && ref.out.rows[u * k] >= 0 && m > t_margin) {
            t = u;
            t_margin = m;
        }
    }
    free(lg);
    cr_assert_gt(t_margin, 1e-3, "seed %llu: no token with a clear ranking",
                 (unsigned long long)seed);
    /* the compared token of the largest ||y_t||: scaled by 1.05 its error
     * (>= 0.0499 ||y_t||) is beyond 100x the tolerance relative to its norm
     * plus the average token norm (<= 2e-2 ||y_t||, as that average is at
     * most ||y_t||); a token whose y is ~0 (H = 1, a relu FFN) would not be */
    uint32_t ty = t;
    double ty_norm = -1;
    for (uint32_t u = 0; u < c.T; u++) {
        double n2 = 0;
        for (uint32_t h = 0; h < H; h++)
            n2 += (double)ref.out.y[u * H + h] * ref.out.y[u * H + h];
        if (!ref.near_tie[u] && n2 > ty_norm) {
            ty = u;
            ty_norm = n2;
        }
    }
    cr_assert_gt(ty_norm, 0, "seed %llu: every compared token's y is 0", (unsigned long long)seed);
    /* all of y scaled by 1 + 1.5 tol: the error, 1.5 tol - 1.2e-7 relative
     * at least (the factor's and each product's rounding), is beyond the
     * tolerance however few the values (1 + 1e-4f with f16 weights cleared
     * the 1e-4 tolerance by 1.7e-4 relative of it: rounding could eat that) */
    const double tol = mvkc_y_tolerance(&c.desc, mvk_backend_reference()->flags);
    const float over = (float)(1.0 + 1.5 * tol);

    result_from_ref(&c, &ref, &g);
    cr_assert(mvkc_compare(&c, &ref, &g, &rep), "identical result rejected: %s", rep.reason);
    cr_assert_eq(rep.compared + rep.near_ties, c.T);
    mvkc_result_free(&g);

#define MUTANT(mutation, prefix)                                                                \
    do {                                                                                       \
        result_from_ref(&c, &ref, &g);                                                         \
        mutation;                                                                              \
        cr_assert(!mvkc_compare(&c, &ref, &g, &rep), "seed %llu: '%s' passed",                 \
                  (unsigned long long)seed, #mutation);                                        \
        cr_assert(strncmp(rep.reason, prefix, strlen(prefix)) == 0,                            \
                  "'%s': reason '%s' should start with '%s'", #mutation, rep.reason, prefix);  \
        mvkc_result_free(&g);                                                                     \
    } while (0)
    /* slot order of a clear ranking swapped; a wrong expert */
    MUTANT((g.ids[t * k] = ref.out.ids[t * k + 1], g.ids[t * k + 1] = ref.out.ids[t * k]), "route:");
    MUTANT(g.ids[t * k + 2] = (ref.out.ids[t * k + 2] + 1) % c.desc.num_experts, "route:");
    MUTANT(g.weights[t * k + 1] *= 1.001f, "route:");
    MUTANT(g.weights[t * k] = NAN, "route:");
    MUTANT((g.rows[0] = ref.out.rows[1], g.rows[1] = ref.out.rows[0]), "permute:");
    MUTANT(g.rows[t * k] = -1, "permute:");
    MUTANT(g.tpe[3] += 1, "stats:");
    MUTANT(g.tpe_read[2] += 1, "stats:");
    MUTANT(g.stats.dropped += 1, "stats:");
    MUTANT(g.stats.load_balancing_loss *= 1.001, "stats:");
    MUTANT(g.stats.router_z_loss = NAN, "stats:");
    MUTANT(g.stats.routing_entropy += 1e-3, "stats:");
    MUTANT(g.y[t * H + H / 2] += 1.0f, "y:");
    MUTANT(for (uint32_t h = 0; h < H; h++) g.y[ty * H + h] *= 1.05f, "y:"); /* one token */
    MUTANT(g.y[(c.T - 1) * H] = NAN, "y:");
    MUTANT(g.y[t * H] = INFINITY, "y:");
    MUTANT(for (uint32_t i = 0; i < c.T * H; i++) g.y[i] *= over, "y:");
#undef MUTANT
    /* relative 1e-6 everywhere is within the f32 tolerance */
    result_from_ref(&c, &ref, &g);
    for (uint32_t i = 0; i < c.T * H; i++)
        g.y[i] *= 1.0f + 1e-6f;
    cr_assert(mvkc_compare(&c, &ref, &g, &rep), "1e-6 relative rejected: %s", rep.reason);
    mvkc_result_free(&g);
    mvkc_ref_free(&ref);
    mvkc_case_free(&c);
}

/* A backend that chose the ids g->ids (tolerated where they differ from the
 * reference): its rows, counts, drops and statistics from those ids, and
 * its y recomputed, from the reference's experts with its admissions, for
 * every token whose ids or admissions differ from the reference's (the
 * case has no shared experts; tied experts have equal weights). Returns
 * the number of tokens other than those in `swapped` (T flags) whose
 * admissions moved. */
static uint32_t as_backend_with_ids(const mvkc_case *c, const mvkc_ref *ref, mvkc_result *g,
                                    const uint8_t *swapped)
{
    const moevk_layer_desc *d = &c->desc;
    const uint32_t T = c->T, H = d->hidden, E = d->num_experts, k = d->top_k;
    cr_assert_eq(d->num_shared, 0);
    uint32_t *offsets = malloc(sizeof(uint32_t) * (E + 1));
    float *lg = malloc(sizeof(float) * T * E);
    cr_assert(offsets && lg);
    g->stats.dropped = moevk_ref_permute(d, T, g->ids, g->tpe, offsets, g->rows);
    memcpy(g->tpe_read, g->tpe, sizeof(uint32_t) * E);
    moevk_ref_router_logits(c->x, T, H, d->router_weight, d->router_dtype, E, d->router_bias, lg);
    moevk_routing_stats st = {.tokens_per_expert = NULL};
    cr_assert_eq(moevk_ref_stats(d, T, lg, g->ids, g->tpe, g->stats.dropped, &st), 0);
    g->stats.load_balancing_loss = st.load_balancing_loss;
    g->stats.router_z_loss = st.router_z_loss;
    g->stats.routing_entropy = st.routing_entropy;
    g->stats_read = g->stats;
    uint32_t moved = 0;
    for (uint32_t t = 0; t < T; t++) {
        int differs = 0;
        for (uint32_t j = 0; j < k; j++) {
            size_t a = (size_t)t * k + j;
            differs |= g->ids[a] != ref->out.ids[a] || (g->rows[a] < 0) != (ref->out.rows[a] < 0);
        }
        if (!differs)
            continue;
        moved += !swapped[t];
        /* the token's y as the reference computes it from these slots */
        const size_t a = (size_t)t * k;
        float gam[MOEVK_MAX_SHARED];
        if (d->shared_sink)
            cr_assert_eq(moevk_ref_shared_gammas(d, c->x + (size_t)t * H, g->ids + a, gam), 0);
        cr_assert_eq(moevk_ref_token_output(d, c->x + (size_t)t * H, g->ids + a, g->weights + a,
                                            g->rows + a, d->shared_sink ? gam : NULL,
                                            g->y + (size_t)t * H),
                     0);
    }
    free(offsets);
    free(lg);
    return moved;
}

/* The tied-expert cases below: E = 10, k = 2, T = 40, the dominant expert
 * (router bias +20) with twins, no shared experts, softmax_topk, and a
 * capacity factor of 2.5: C = ceil(2.5 * 40 * 2 / 10) = 20 < T, so the
 * top experts overflow. */
static mvkc_limits tie_limits(void)
{
    mvkc_limits l = limits();
    l.tokens = 40;
    l.experts = 10;
    l.top_k = 2;
    l.capacity_factor = 2.5f;
    l.num_shared = MVKC_PICK(0);
    l.scenarios_on = MVKC_SC_ONE_EXPERT;
    l.scenarios_off = MVKC_SC_ALL & ~(uint32_t)MVKC_SC_ONE_EXPERT;
    l.routing = MVKC_PICK(MOEVK_ROUTING_SOFTMAX_TOPK);
    /* a smooth gated activation: a moved admission must change y (relu
     * family experts of a few columns can output exactly 0) */
    l.activation = MVKC_PICK(MOEVK_ACT_SWIGLU);
    /* the test's stand-in backends (result_from_ref, as_backend_with_ids)
     * compute the router and the experts on x itself */
    l.no_input_norms = 1;
    return l;
}

/* The tie tests' premise, the lowest tied index first at every token, holds
 * only when every expert competes: kept expert groups (which the random
 * softmax_topk case may draw) can drop a tied expert's group. */
static void all_groups(mvkc_case *c)
{
    c->desc.n_group = c->desc.topk_group = 0;
}

/* Two experts with bitwise-equal router rows: the GPU putting the higher
 * index first is a tolerated swap (its fp32 logits may differ by rounding);
 * under capacity it moves other tokens' admissions, and y is then checked
 * against the reference recomputed with the GPU's admissions. */
Test(layer_compare, tolerated_swap_under_capacity)
{
    const mvkc_limits l = tie_limits();
    mvkc_case c;
    mvkc_ref ref;
    mvkc_result g;
    mvkc_report rep;
    const uint64_t seed = mvkt_base_seed();
    cr_assert_eq(mvkc_case_random(seed, &l, &c), MOEVK_SUCCESS);
    all_groups(&c);
    uint32_t dom = c.dominant, twin = (dom + 5) % 10, k = 2;
    make_tie(&c, dom, twin);
    cr_assert_eq(mvkc_reference(&c, &ref), MOEVK_SUCCESS);
    uint32_t lo = dom < twin ? dom : twin, hi = dom ^ twin ^ lo;
    cr_assert_eq(ref.out.ids[0], lo);
    cr_assert_eq(ref.out.ids[1], hi);
    cr_assert_eq(moevk_ref_capacity(&c.desc, c.T), 20);
    cr_assert_gt(ref.dropped, 0, "seed %llu: the pair should overflow", (unsigned long long)seed);

    result_from_ref(&c, &ref, &g);
    uint32_t t = 3;
    g.ids[t * k] = hi;
    g.ids[t * k + 1] = lo;
    uint8_t swapped[40] = {0};
    swapped[t] = 1;
    uint32_t moved = as_backend_with_ids(&c, &ref, &g, swapped);
    /* token 3's hi in slot 0 takes one of hi's places: a later token's
     * slot 0 (lo) is admitted in its stead */
    cr_assert_gt(moved, 0, "seed %llu: the swap moved no admission", (unsigned long long)seed);
    cr_assert(mvkc_compare(&c, &ref, &g, &rep), "tolerated swap rejected: %s", rep.reason);
    cr_assert_eq(rep.swapped, 1);
    cr_assert_eq(rep.near_ties, 1);
    cr_assert_eq(rep.compared, c.T - 1);
    cr_assert_eq(rep.dropped, g.stats.dropped);
    /* ... y of the moved tokens must be the one with the GPU's admissions */
    mvkc_result_free(&g);
    result_from_ref(&c, &ref, &g);
    g.ids[t * k] = hi;
    g.ids[t * k + 1] = lo;
    as_backend_with_ids(&c, &ref, &g, swapped);
    memcpy(g.y, ref.out.y, sizeof(float) * c.T * c.desc.hidden);
    char desc[384];
    mvkc_case_describe(&c, desc, sizeof desc);
    cr_assert(!mvkc_compare(&c, &ref, &g, &rep),
              "seed %llu (%s): y of the reference's admissions accepted",
              (unsigned long long)seed, desc);
    cr_assert(strncmp(rep.reason, "y:", 2) == 0, "%s", rep.reason);
    /* ... and the rows must follow the GPU's own ids */
    as_backend_with_ids(&c, &ref, &g, swapped);
    memcpy(g.rows, ref.out.rows, sizeof(int32_t) * c.T * k);
    cr_assert(!mvkc_compare(&c, &ref, &g, &rep));
    cr_assert(strncmp(rep.reason, "permute:", 8) == 0, "%s", rep.reason);
    mvkc_result_free(&g);
    mvkc_ref_free(&ref);
    mvkc_case_free(&c);
}

/* Two backends that both passed the reference agree (mvkc_agree) even
 * when one made tolerated choices under capacity: three experts with equal
 * router rows, the reference taking the two lowest (a, b); the other
 * backend puts b first at one token and takes c instead of b at another.
 * Both move later tokens' admissions: those tokens' y and the counts are
 * not compared, nor the load-balancing loss, which depends on the ids (a
 * near-tie between experts of different mean probabilities P_b, P_c moves
 * it by E (P_c - P_b) / (T k), 1e-2 relative here; exact twins have equal
 * P, so the test sets it apart by hand). The rest still is compared. */
Test(layer_compare, agreement_after_tolerated_swaps)
{
    const mvkc_limits l = tie_limits();
    mvkc_case c;
    mvkc_ref ref;
    mvkc_result a, g;
    mvkc_report rep;
    const uint64_t seed = mvkt_base_seed();
    cr_assert_eq(mvkc_case_random(seed, &l, &c), MOEVK_SUCCESS);
    all_groups(&c);
    const uint32_t dom = c.dominant, k = 2, H = c.desc.hidden;
    make_tie(&c, dom, (dom + 3) % 10);
    make_tie(&c, dom, (dom + 6) % 10);
    uint32_t tri[3] = {dom, (dom + 3) % 10, (dom + 6) % 10};
    for (int i = 0; i < 3; i++) /* sorted */
        for (int j = i + 1; j < 3; j++)
            if (tri[j] < tri[i]) {
                uint32_t v = tri[i];
                tri[i] = tri[j];
                tri[j] = v;
            }
    cr_assert_eq(mvkc_reference(&c, &ref), MOEVK_SUCCESS);
    char desc[384];
    mvkc_case_describe(&c, desc, sizeof desc);
    cr_assert_eq(ref.out.ids[0], tri[0], "seed %llu (%s): slot 0 is %u, not %u",
                 (unsigned long long)seed, desc, ref.out.ids[0], tri[0]);
    cr_assert_eq(ref.out.ids[1], tri[1], "seed %llu (%s)", (unsigned long long)seed, desc);
    cr_assert_gt(ref.dropped, 0, "seed %llu: the triple should overflow",
                 (unsigned long long)seed);
    char why[256] = "";
    double err;

    result_from_ref(&c, &ref, &a);
    result_from_ref(&c, &ref, &g);
    cr_assert(mvkc_agree(&c, &ref, &a, &g, &err, why, sizeof why), "%s", why);
    cr_assert_eq(err, 0.0);
    /* the other backend: b first at token 3, c instead of b at token 7 */
    uint8_t swapped[40] = {0};
    g.ids[3 * k] = tri[1];
    g.ids[3 * k + 1] = tri[0];
    g.ids[7 * k + 1] = tri[2];
    swapped[3] = swapped[7] = 1;
    uint32_t moved = as_backend_with_ids(&c, &ref, &g, swapped);
    cr_assert_gt(moved, 0, "seed %llu: the swaps moved no admission", (unsigned long long)seed);
    cr_assert(mvkc_compare(&c, &ref, &g, &rep), "tolerated swaps rejected: %s", rep.reason);
    cr_assert_eq(rep.swapped, 2);
    g.stats.load_balancing_loss *= 1.01;
    cr_assert(mvkc_agree(&c, &ref, &a, &g, &err, why, sizeof why),
              "seed %llu: backends that both passed disagree: %s", (unsigned long long)seed, why);
    cr_assert(mvkc_agree(&c, &ref, &g, &a, &err, why, sizeof why), "%s", why);

    /* what is still compared: y of a token neither moved nor swapped, ... */
    uint32_t u = 0;
    while (u < c.T && (swapped[u] || g.rows[u * k] != a.rows[u * k] ||
                       g.rows[u * k + 1] != a.rows[u * k + 1]))
        u++;
    cr_assert_lt(u, c.T);
    for (uint32_t h = 0; h < H; h++)
        g.y[u * H + h] += 1.0f;
    cr_assert(!mvkc_agree(&c, &ref, &a, &g, &err, why, sizeof why), "y off at token %u agreed",
              u);
    cr_assert(strncmp(why, "y differs", 9) == 0, "%s", why);
    for (uint32_t h = 0; h < H; h++)
        g.y[u * H + h] -= 1.0f;
    /* ... the z-loss (logits only) whatever the ids, ... */
    g.stats.router_z_loss *= 1.001;
    cr_assert(!mvkc_agree(&c, &ref, &a, &g, &err, why, sizeof why), "z-loss off agreed");
    cr_assert(strncmp(why, "z-loss", 6) == 0, "%s", why);
    mvkc_result_free(&g);
    /* ... and counts, drops and the load-balancing loss when the ids are
     * the same */
    result_from_ref(&c, &ref, &g);
    g.tpe[tri[2]] += 1;
    cr_assert(!mvkc_agree(&c, &ref, &a, &g, &err, why, sizeof why), "counts off agreed");
    cr_assert(strncmp(why, "tokens_per_expert", 17) == 0, "%s", why);
    g.tpe[tri[2]] -= 1;
    g.stats.dropped += 1;
    cr_assert(!mvkc_agree(&c, &ref, &a, &g, &err, why, sizeof why), "drops off agreed");
    cr_assert(strncmp(why, "dropped", 7) == 0, "%s", why);
    g.stats.dropped -= 1;
    g.stats.load_balancing_loss *= 1.001;
    cr_assert(!mvkc_agree(&c, &ref, &a, &g, &err, why, sizeof why), "loss off agreed");
    cr_assert(strncmp(why, "load-balancing", 14) == 0, "%s", why);
    mvkc_result_free(&g);
    mvkc_result_free(&a);
    mvkc_ref_free(&ref);
    mvkc_case_free(&c);
}

/* ---- the runner on backends of the test's own (CPU only) --------------------------- */

/* A backend of the test's own: the reference behind the backend
 * interface, with every y value 1% off. The harness must catch it like any
 * wrong backend. */
typedef struct wrong_layer {
    void *ref;
    uint32_t H;
} wrong_layer;

static moevk_status wrong_create(void *dev, const moevk_layer_desc *d, const mvk_layer_opts *o,
                                 void **layer, char *err, size_t n)
{
    wrong_layer *w = malloc(sizeof *w);
    cr_assert_not_null(w);
    w->H = d->hidden;
    moevk_status st = mvk_backend_reference()->create(dev, d, o, &w->ref, err, n);
    *layer = st ? NULL : w;
    if (st)
        free(w);
    return st;
}

static void wrong_destroy(void *layer)
{
    wrong_layer *w = layer;
    if (w)
        mvk_backend_reference()->destroy(w->ref);
    free(w);
}

static moevk_status wrong_forward(void *layer, uint32_t T, const float *x,
                                  const mvk_backend_out *o, char *err, size_t n)
{
    wrong_layer *w = layer;
    moevk_status st = mvk_backend_reference()->forward(w->ref, T, x, o, err, n);
    for (size_t i = 0; !st && o->y && i < (size_t)T * w->H; i++)
        o->y[i] *= 1.01f;
    return st;
}

Test(layer_compare, a_wrong_backend_fails_with_its_reproduction)
{
    mvk_backend wrong = *mvk_backend_reference();
    wrong.name = "wrong";
    wrong.flags = 0;
    wrong.create = wrong_create;
    wrong.destroy = wrong_destroy;
    wrong.forward = wrong_forward;
    mvkc_target bad, cpu;
    char err[256] = "";
    cr_assert_eq(mvkc_target_open(&bad, &wrong, NULL, NULL, err, sizeof err), MOEVK_SUCCESS);
    cr_assert_eq(mvkc_target_open(&cpu, mvk_backend_reference(), NULL, NULL, err, sizeof err),
                 MOEVK_SUCCESS);
    mvkc_limits l = limits();
    l.tokens = 40;
    l.scenarios_off = MVKC_SC_NONFINITE;
    const uint64_t seed = mvkt_base_seed();
    mvkc_check k;

    /* the reference against itself passes, and agrees with itself exactly */
    cr_assert(mvkc_check_seed(&cpu, &cpu, seed, &l, &k), "seed %llu: %s",
              (unsigned long long)seed, k.rep.reason);
    cr_assert_eq(k.cross_err, 0.0);
    mvkc_check_free(&k);
    /* the wrong backend fails, on y, alone or as the second backend */
    cr_assert(!mvkc_check_seed(&bad, NULL, seed, &l, &k), "a backend 1%% off passed");
    cr_assert(strncmp(k.rep.reason, "y:", 2) == 0, "reason: %s", k.rep.reason);
    mvkc_check_free(&k);
    cr_assert(!mvkc_check_seed(&cpu, &bad, seed, &l, &k), "a backend 1%% off passed");
    cr_assert(strncmp(k.rep.reason, "wrong vs cpu: y:", 16) == 0, "reason: %s", k.rep.reason);
    mvkc_check_free(&k);

    /* the command that replays a case alone names the backends and the seed;
     * limits the command cannot express give none */
    char cmd[256];
    cr_assert(mvkc_repro(&bad, NULL, 42, NULL, cmd, sizeof cmd));
    cr_assert_str_eq(cmd, "moevk check --backend wrong --against cpu --seed 42 --cases 1");
    mvkc_limits w = limits();
    w.max_work = 1000;
    cr_assert(mvkc_repro(&cpu, &bad, 7, &w, cmd, sizeof cmd));
    cr_assert_str_eq(cmd, "moevk check --backend cpu --against wrong --seed 7 --cases 1 "
                          "--max-work 1000");
    w.routing = MVKC_PICK(MOEVK_ROUTING_SPARSEMIXER);
    cr_assert(mvkc_repro(&cpu, NULL, 7, &w, cmd, sizeof cmd));
    cr_assert_str_eq(cmd, "moevk check --backend cpu --against cpu --seed 7 --cases 1 "
                          "--max-work 1000 --routing sparsemixer");
    cr_assert(!mvkc_repro(&bad, NULL, 42, &l, cmd, sizeof cmd));
    cr_assert_str_eq(cmd, "");
    mvkc_target_close(&bad);
    mvkc_target_close(&cpu);
}

/* The generator's block formats (limits.blocks > 0: always): gate/up and
 * down rows each in a block format of the table (per matrix, the same for
 * the shared experts), rows whole blocks, a valid layer that the reference
 * runs on the cpu backend of the table; every block format is drawn. Never
 * with blocks < 0, nor when weight_dtype is forced. The policy's
 * tolerances per format mix: 1e-5 for f32 and block formats, 1e-4 with an
 * f16/bf16 matrix; for a backend that rounds activations, 4 units of its
 * coarsest rounding (f16 for block formats). */
Test(layer_compare, generator_draws_block_formats_per_matrix, .timeout = 300)
{
    const uint64_t base = mvkt_base_seed();
    uint64_t blocks = 0;
    for (size_t i = 0; mvk_format_at(i); i++)
        if (mvk_format_at(i)->block_elems > 1 && (mvk_format_at(i)->uses & MVK_FORMAT_EXPERT))
            blocks |= 1ull << mvk_format_at(i)->dtype;
    mvkc_limits l = limits();
    l.blocks = 1;
    l.max_work = 1u << 20;
    l.max_weights = 1u << 18; /* the draws are the point, not the sizes */
    l.max_experts = 24;
    uint64_t seen = 0;
    mvkc_target cpu;
    char err[256] = "";
    cr_assert_eq(mvkc_target_open(&cpu, mvk_backend_reference(), NULL, NULL, err, sizeof err),
                 MOEVK_SUCCESS, "%s", err);
    for (uint32_t i = 0; i < 120; i++) {
        const uint64_t seed = base + i;
        mvkc_case c;
        cr_assert_eq(mvkc_case_random(seed, &l, &c), MOEVK_SUCCESS);
        const moevk_layer_desc *d = &c.desc;
        char desc[384], why[512];
        mvkc_case_describe(&c, desc, sizeof desc);
        cr_assert(d->flags & MOEVK_LAYER_MATRIX_DTYPES, "seed %llu: %s: no formats per matrix",
                  (unsigned long long)seed, desc);
        const moevk_dtype gu = d->experts.gate_up_dtype, dn = d->experts.down_dtype;
        cr_assert(blocks >> gu & 1 && blocks >> dn & 1, "seed %llu: %s: %s / %s",
                  (unsigned long long)seed, desc, moevk_dtype_name(gu), moevk_dtype_name(dn));
        cr_assert(!d->num_shared ||
                      (d->shared.gate_up_dtype == gu && d->shared.down_dtype == dn),
                  "seed %llu: %s: shared formats differ", (unsigned long long)seed, desc);
        seen |= 1ull << gu | 1ull << dn;
        const uint32_t bgu = moevk_dtype_block_elems(gu), bdn = moevk_dtype_block_elems(dn);
        cr_assert(d->hidden % bgu == 0 && d->ffn % bdn == 0 && d->shared_ffn % bdn == 0,
                  "seed %llu: %s: rows are not whole blocks", (unsigned long long)seed, desc);
        cr_assert_eq(moevk_layer_desc_check(d, why, sizeof why), MOEVK_SUCCESS,
                     "seed %llu: %s: %s", (unsigned long long)seed, desc, why);
        cr_assert_eq(mvkc_y_tolerance(d, 0), 1e-5, "seed %llu", (unsigned long long)seed);
        cr_assert_eq(mvkc_y_tolerance(d, MVK_BACKEND_ROUNDS_ACTIVATIONS), 4.0 / 2048.0,
                     "seed %llu", (unsigned long long)seed);
        if (i % 8 == 0) { /* the reference through the table */
            mvkc_ref ref;
            mvkc_result g;
            cr_assert_eq(mvkc_reference(&c, &ref), MOEVK_SUCCESS);
            result_from_ref(&c, &ref, &g);
            mvkc_result_free(&g);
            mvkc_ref_free(&ref);
        }
        mvkc_case_free(&c);
    }
    cr_assert_eq(seen, blocks, "formats drawn 0x%llx of 0x%llx", (unsigned long long)seen,
                 (unsigned long long)blocks);
    mvkc_target_close(&cpu);

    for (int forced = 0; forced < 2; forced++) {
        mvkc_limits n = limits();
        n.blocks = forced ? 0 : -1;
        n.weight_dtype = forced ? MVKC_PICK(MOEVK_DTYPE_BF16) : 0;
        n.max_work = 1u << 20; /* the draws are the point, not the sizes */
        n.max_weights = 1u << 18;
        for (uint32_t i = 0; i < 40; i++) {
            mvkc_case c;
            cr_assert_eq(mvkc_case_random(base + i, &n, &c), MOEVK_SUCCESS);
            cr_assert(!(c.desc.flags & MOEVK_LAYER_MATRIX_DTYPES) &&
                          c.desc.weight_dtype <= MOEVK_DTYPE_BF16,
                      "seed %llu", (unsigned long long)(base + i));
            mvkc_case_free(&c);
        }
    }

    /* the policy on format mixes */
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.hidden = 256;
    d.ffn = 256;
    d.weight_dtype = MOEVK_DTYPE_Q4_K;
    const uint32_t R = MVK_BACKEND_ROUNDS_ACTIVATIONS;
    cr_assert_eq(mvkc_y_tolerance(&d, 0), 1e-5);
    cr_assert_eq(mvkc_y_tolerance(&d, R), 4.0 / 2048.0);
    d.weight_dtype = MOEVK_DTYPE_F32;
    cr_assert_eq(mvkc_y_tolerance(&d, R), 1e-5);
    d.flags = MOEVK_LAYER_MATRIX_DTYPES;
    d.experts.gate_up_dtype = MOEVK_DTYPE_Q6_K;
    d.experts.down_dtype = MOEVK_DTYPE_BF16;
    cr_assert_eq(mvkc_y_tolerance(&d, 0), 1e-4);
    cr_assert_eq(mvkc_y_tolerance(&d, R), 4.0 / 256.0);
    d.experts.down_dtype = MOEVK_DTYPE_F32;
    d.num_shared = 1;
    d.shared.gate_up_dtype = d.shared.down_dtype = MOEVK_DTYPE_F16;
    cr_assert_eq(mvkc_y_tolerance(&d, 0), 1e-4);
    cr_assert_eq(mvkc_y_tolerance(&d, R), 4.0 / 2048.0);
    d.num_shared = 0; /* the shared formats are then not read */
    cr_assert_eq(mvkc_y_tolerance(&d, 0), 1e-5);
    /* quantised at create: the formats it gives (q4_k; f16 where no block
     * format divides the rows), not the host f32 */
    d.flags = MOEVK_LAYER_QUANTIZE;
    d.quantize_dtype = MOEVK_DTYPE_Q4_K;
    cr_assert_eq(mvkc_y_tolerance(&d, R), 4.0 / 2048.0);
    cr_assert_eq(mvkc_y_tolerance(&d, 0), 1e-5);
    d.hidden = 100;
    cr_assert_eq(mvkc_y_tolerance(&d, 0), 1e-4);
}
