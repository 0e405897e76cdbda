/*
 * The stages called on their own (route, permute, experts, combine, shared
 * experts) compose to the same result as the whole forward pass, and reject
 * bad routing input from the caller.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ref/ref.h"

typedef struct stage_layer {
    moevk_layer_desc d;
    float *router, *sgate_w;
    void *w[6];
} stage_layer;

static void make_layer(mvkt_rng *r, stage_layer *s, uint32_t H, uint32_t F, uint32_t E,
                       uint32_t K, uint32_t ns, float cf)
{
    memset(s, 0, sizeof(*s));
    s->router = mvkt_random_weights(r, MOEVK_DTYPE_F32, (size_t)E * H, 1.0f);
    s->sgate_w = ns ? mvkt_random_weights(r, MOEVK_DTYPE_F32, (size_t)ns * H, 0.3f) : NULL;
    float sc = 1.0f / sqrtf((float)H);
    for (int i = 0; i < 3; i++)
        s->w[i] = mvkt_random_weights(r, MOEVK_DTYPE_F16, (size_t)E * F * H, sc);
    for (int i = 3; i < 6; i++)
        s->w[i] = ns ? mvkt_random_weights(r, MOEVK_DTYPE_F16, (size_t)ns * F * H, sc) : NULL;
    s->d = (moevk_layer_desc){
        .hidden = H, .ffn = F, .num_experts = E, .top_k = K,
        .routing = MOEVK_ROUTING_SOFTMAX_TOPK, .activation = MOEVK_ACT_SWIGLU,
        .norm_topk_prob = 1, .capacity_factor = cf, .weight_dtype = MOEVK_DTYPE_F16,
        .router_weight = s->router,
        .experts = {.gate = s->w[0], .up = s->w[1], .down = s->w[2]},
        .num_shared = ns,
        .shared = {.gate = s->w[3], .up = s->w[4], .down = s->w[5]},
        .shared_gate = s->sgate_w,
    };
}

static void free_layer(stage_layer *s)
{
    free(s->router);
    free(s->sgate_w);
    for (int i = 0; i < 6; i++)
        free(s->w[i]);
}

static moevk_tensor tensor(moevk_context *ctx, moevk_dtype dt, uint64_t a, uint64_t b)
{
    moevk_tensor t;
    uint64_t shape[2] = {a, b};
    cr_assert_eq(moevk_tensor_create(ctx, dt, b ? 2 : 1, shape, &t), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    mvkt_poison_tensor(&t);
    return t;
}

Test(stages, compose_to_the_forward_pass)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed);
    const uint32_t T = 37, H = 40, F = 24, E = 6, K = 2, NS = 1;
    stage_layer s;
    make_layer(&r, &s, H, F, E, K, NS, 0.75f); /* capacity drops some */
    /* an output bias and a shared-output factor: each counted once in the
     * stages (the bias with the combine, the factor with the shared ones) */
    float *ob = mvkt_random_weights(&r, MOEVK_DTYPE_F32, H, 0.5f);
    s.d.output_bias = ob;
    s.d.shared_scale = 0.5f;
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &s.d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    float *x = mvkt_random_weights(&r, MOEVK_DTYPE_F32, (size_t)T * H, 1.0f);
    moevk_tensor tx = tensor(ctx, MOEVK_DTYPE_F32, T, H), ty = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    moevk_routing_stats stats = {0};
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, &stats), MOEVK_SUCCESS);
    cr_assert_gt(stats.dropped, 0, "seed %llu: the case should drop assignments",
                 (unsigned long long)seed);
    float *y = malloc(sizeof(float) * T * H);
    uint32_t *fids = malloc(4 * T * K);
    int32_t *frow = malloc(4 * T * K);
    float *fw = malloc(4 * T * K);
    cr_assert_eq(moevk_tensor_download(&ty, y), 0);
    cr_assert_eq(moevk_layer_read_routing(L, T, fids, fw, frow), 0);

    moevk_tensor ids = tensor(ctx, MOEVK_DTYPE_I32, T, K), w = tensor(ctx, MOEVK_DTYPE_F32, T, K);
    moevk_tensor rows = tensor(ctx, MOEVK_DTYPE_I32, T, K), cnt = tensor(ctx, MOEVK_DTYPE_I32, E, 0);
    moevk_tensor eo = tensor(ctx, MOEVK_DTYPE_F32, (uint64_t)T * K, H);
    moevk_tensor y1 = tensor(ctx, MOEVK_DTYPE_F32, T, H), y2 = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    cr_assert_eq(moevk_layer_route(L, &tx, &ids, &w), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_permute(L, &ids, &rows, &cnt), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_experts(L, &tx, &ids, &eo), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_combine(L, &eo, &rows, &w, &y1), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_shared_experts(L, &tx, &y2), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));

    uint32_t *sids = malloc(4 * T * K);
    int32_t *srow = malloc(4 * T * K), *scnt = malloc(4 * E);
    float *sw = malloc(4 * T * K), *a = malloc(4 * T * H), *b = malloc(4 * T * H);
    cr_assert_eq(moevk_tensor_download(&ids, sids), 0);
    cr_assert_eq(moevk_tensor_download(&w, sw), 0);
    cr_assert_eq(moevk_tensor_download(&rows, srow), 0);
    cr_assert_eq(moevk_tensor_download(&cnt, scnt), 0);
    cr_assert_eq(moevk_tensor_download(&y1, a), 0);
    cr_assert_eq(moevk_tensor_download(&y2, b), 0);
    cr_assert(memcmp(sids, fids, 4 * T * K) == 0, "seed %llu: route ids differ from forward",
              (unsigned long long)seed);
    cr_assert(memcmp(sw, fw, 4 * T * K) == 0, "route weights differ from forward");
    cr_assert(memcmp(srow, frow, 4 * T * K) == 0, "permute rows differ from forward");
    /* counts and rows agree with the reference permutation */
    uint32_t rc[16], ro[17];
    int32_t rrow[256];
    uint64_t dropped = moevk_ref_permute(&s.d, T, sids, rc, ro, rrow);
    cr_assert_eq(dropped, stats.dropped);
    for (uint32_t e = 0; e < E; e++)
        cr_assert_eq((uint32_t)scnt[e], rc[e], "counts[%u]", e);
    cr_assert(memcmp(srow, rrow, 4 * T * K) == 0, "rows differ from the reference");
    for (uint32_t i = 0; i < T * H; i++)
        a[i] += b[i];
    double err = mvkt_rel_l2(a, y, T * H);
    cr_assert_leq(err, 1e-6, "seed %llu: stages vs forward %g", (unsigned long long)seed, err);

    /* bad routing input from the caller */
    sids[3] = E; /* out of range */
    cr_assert_eq(moevk_tensor_upload(&ids, sids), 0);
    cr_assert_eq(moevk_layer_permute(L, &ids, &rows, &cnt), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "ids[1, 1]"), "%s",
              moevk_context_last_error(ctx));
    sids[3] = sids[2]; /* repeated within token 1 */
    cr_assert_eq(moevk_tensor_upload(&ids, sids), 0);
    cr_assert_eq(moevk_layer_experts(L, &tx, &ids, &eo), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "repeats"), "%s",
              moevk_context_last_error(ctx));
    srow[0] = (int32_t)(T * K);
    cr_assert_eq(moevk_tensor_upload(&rows, srow), 0);
    cr_assert_eq(moevk_layer_combine(L, &eo, &rows, &w, &y1), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "row_of[0, 0]"), "%s",
              moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_combine(L, &eo, &rows, &w, &tx), MOEVK_ERROR_INVALID_ARGUMENT);
    /* still usable */
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, NULL), MOEVK_SUCCESS);

    moevk_tensor *all[] = {&tx, &ty, &ids, &w, &rows, &cnt, &eo, &y1, &y2};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        moevk_tensor_destroy(all[i]);
    moevk_layer_destroy(L);
    free_layer(&s);
    free(x), free(y), free(fids), free(frow), free(fw), free(sids), free(srow), free(scnt);
    free(sw), free(a), free(b), free(ob);
    mvkt_context_end(ctx);
}

#include "testing.h"

/* A forward pass checked against the reference, on a context of the given
 * validation flags, optionally with weights split into chunks. */
static void forward_vs_reference(uint32_t flags, uint64_t max_range)
{
    moevk_context *ctx = mvkt_context_flags(flags, 0);
    uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed);
    const uint32_t T = 29, H = 48, F = 40, E = 7, K = 3, NS = 2;
    stage_layer s;
    make_layer(&r, &s, H, F, E, K, NS, 0.0f);
    s.d.shared_ffn = 0; /* = F */
    if (max_range)
        moevk_testing_set_max_buffer_range(ctx, max_range);
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &s.d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    float *x = mvkt_random_weights(&r, MOEVK_DTYPE_F32, (size_t)T * H, 1.0f),
          *y = malloc(sizeof(float) * T * H), *ref = malloc(sizeof(float) * T * H);
    moevk_tensor tx = tensor(ctx, MOEVK_DTYPE_F32, T, H), ty = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, NULL), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_tensor_download(&ty, y), 0);
    uint8_t near[64];
    cr_assert_eq(moevk_ref_layer_forward(&s.d, T, x, ref, NULL, NULL, near, NULL), 0);
    for (uint32_t t = 0; t < T; t++)
        if (near[t])
            for (uint32_t h = 0; h < H; h++)
                y[t * H + h] = ref[t * H + h]; /* near-tied tokens are not compared */
    double err = mvkt_rel_l2(y, ref, T * H);
    cr_assert_leq(err, 1e-4, "seed %llu: error %g (max range %llu)", (unsigned long long)seed,
                  err, (unsigned long long)max_range);
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
    moevk_layer_destroy(L);
    free_layer(&s);
    free(x), free(y), free(ref);
    mvkt_context_end(ctx);
}

/* Weight stacks larger than a storage buffer are split into chunks of
 * experts: pretend buffers hold two experts' matrices (f16 40x48 = 3840 B). */
Test(stages, weights_split_into_chunks)
{
    forward_vs_reference(MOEVK_CONTEXT_VALIDATION, 2 * 3840 + 16);
    /* one expert matrix larger than the range is a clear error */
    moevk_context *ctx = mvkt_context();
    mvkt_rng r = mvkt_rng_make(1);
    stage_layer s;
    make_layer(&r, &s, 48, 40, 3, 1, 0, 0.0f);
    moevk_testing_set_max_buffer_range(ctx, 1000);
    moevk_layer *L = (moevk_layer *)0x1;
    cr_assert_eq(moevk_layer_create(ctx, &s.d, &L), MOEVK_ERROR_LIMIT_EXCEEDED);
    cr_assert_null(L);
    cr_assert(strstr(moevk_context_last_error(ctx), "storage buffer range"), "%s",
              moevk_context_last_error(ctx));
    free_layer(&s);
    mvkt_context_end(ctx);
}

/* GPU-assisted validation (out-of-bounds buffer accesses inside shaders);
 * it cannot run together with synchronization validation. */
Test(stages, gpu_assisted_validation_is_clean)
{
    forward_vs_reference(MOEVK_CONTEXT_GPU_ASSISTED_VALIDATION, 2 * 3840 + 16);
}

/* Grouped routing keeping more than 32 groups (a bitmask of groups, no
 * fixed-size list), against the reference. */
Test(stages, many_kept_groups)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed);
    const uint32_t T = 19, H = 24, F = 8, E = 128, K = 8;
    stage_layer s;
    make_layer(&r, &s, H, F, E, K, 0, 0.0f);
    s.d.routing = MOEVK_ROUTING_SIGMOID_GROUPED;
    s.d.n_group = 64;
    s.d.topk_group = 40;
    s.d.routed_scaling_factor = 2.5f;
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &s.d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    float *x = mvkt_random_weights(&r, MOEVK_DTYPE_F32, (size_t)T * H, 1.0f);
    moevk_tensor tx = tensor(ctx, MOEVK_DTYPE_F32, T, H), ty = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, NULL), MOEVK_SUCCESS);
    uint32_t ids[T * K], rids[T * K];
    uint8_t near[T];
    float *ref = malloc(sizeof(float) * T * H);
    cr_assert_eq(moevk_layer_read_routing(L, T, ids, NULL, NULL), 0);
    cr_assert_eq(moevk_ref_layer_forward(&s.d, T, x, ref, rids, NULL, near, NULL), 0);
    /* The reference flags only the k-th vs (k+1)-th gap (and the last kept
     * group's): for the other tokens the set of 8 ids is exact. Within the
     * 8, scores of ~0.9 lie ~6e-8 apart in fp32, so the GPU may find two
     * equal and put the lower index first: the slot order is required only
     * between scores more than 1e-6 relative apart. Each run of reference
     * slots whose adjacent scores are closer than that must hold the same
     * ids on the GPU, in any order. */
    float *logits = malloc(sizeof(float) * T * E);
    cr_assert_not_null(logits);
    moevk_ref_router_logits(x, T, H, s.d.router_weight, s.d.router_dtype, E, NULL, logits);
    for (uint32_t t = 0; t < T; t++) {
        if (near[t])
            continue;
        const uint32_t *g = ids + t * K, *rf = rids + t * K;
        for (uint32_t j0 = 0, j1; j0 < K; j0 = j1) {
            /* the run rf[j0..j1-1]: adjacent scores within 1e-6 relative */
            double prev = 1.0 / (1.0 + exp(-(double)logits[t * E + rf[j0]]));
            for (j1 = j0 + 1; j1 < K; j1++) {
                double sc = 1.0 / (1.0 + exp(-(double)logits[t * E + rf[j1]]));
                if (prev - sc > 1e-6 * fmax(fabs(prev), fabs(sc)))
                    break;
                prev = sc;
            }
            for (uint32_t j = j0; j < j1; j++) {
                int found = 0;
                for (uint32_t i = j0; i < j1; i++)
                    found |= g[i] == rf[j];
                cr_assert(found, "seed %llu token %u: reference slot %u (expert %u) is not in the "
                          "GPU's slots %u..%u (expert %u at slot %u)", (unsigned long long)seed,
                          t, j, rf[j], j0, j1 - 1, g[j], j);
            }
        }
    }
    free(logits);
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
    moevk_layer_destroy(L);
    free_layer(&s);
    free(x), free(ref);
    mvkt_context_end(ctx);
}

/* SparseMixer (PhiMoE) on hand-built logits, on the GPU's route (fused, for
 * T <= 16, and unfused) and the reference, against closed forms. The router
 * is the identity (H = E), so the logits are x exactly; jitter_eps = 0.05:
 * an expert stays in slot j's softmax when (m - l) / max(|l|, m) <= 0.1.
 *   t0 [2, 1.85, 1, 0.5]: slot 0 keeps {0, 1}, leaves 2 and 3 out; slot 1
 *      (m = 1.85) keeps only itself.
 *   t1 [1, 0.98, 0.95, 0.92]: slot 0 keeps every expert; slot 1 (m = 0.98)
 *      keeps 1, 2, 3.
 *   t2 [-1, -1.05, -1.2, -3]: negative m (the gap over |l|): slot 0 keeps
 *      {0, 1}; slot 1 keeps only itself.
 *   t3 [4, 1, 0.95, 0.5]: slot 0 keeps only itself; slot 1, with expert 0
 *      left out, keeps {1, 2}.
 * With jitter_eps = 0 every weight is 1 (no ties); with 10 every set keeps
 * all the experts left. */
static void sparsemixer_case(moevk_context *ctx, float eps, uint32_t reps)
{
    enum { E = 4, K = 2, F = 8 };
    static const float l[4][E] = {
        {2.0f, 1.85f, 1.0f, 0.5f},
        {1.0f, 0.98f, 0.95f, 0.92f},
        {-1.0f, -1.05f, -1.2f, -3.0f},
        {4.0f, 1.0f, 0.95f, 0.5f},
    };
    static const uint32_t want_ids[4][K] = {{0, 1}, {0, 1}, {0, 1}, {0, 1}};
    /* the kept sets per (token, slot) at eps 0.05, as bit masks of experts */
    static const unsigned kept[4][K] = {{0x3, 0x2}, {0xf, 0xe}, {0x3, 0x2}, {0x1, 0x6}};
    const uint32_t T = 4 * reps;
    mvkt_rng r = mvkt_rng_make(7);
    stage_layer s;
    make_layer(&r, &s, E, F, E, K, 0, 0.0f);
    for (uint32_t i = 0; i < E * E; i++)
        s.router[i] = i % (E + 1) == 0 ? 1.0f : 0.0f;
    s.d.routing = MOEVK_ROUTING_SPARSEMIXER;
    s.d.norm_topk_prob = 0;
    s.d.jitter_eps = eps;
    float *x = malloc(sizeof(float) * T * E);
    for (uint32_t t = 0; t < T; t++)
        memcpy(x + t * E, l[t % 4], sizeof l[0]);
    double want[4][K];
    for (uint32_t t = 0; t < 4; t++)
        for (uint32_t j = 0; j < K; j++) {
            /* a softmax over the kept set, at the slot's own expert */
            const uint32_t id = want_ids[t][j];
            unsigned set = eps == 0.0f ? 1u << id : eps > 1.0f ? 0xfu & ~((1u << j) - 1u)
                                                               : kept[t][j];
            double sum = 0.0;
            for (uint32_t e = 0; e < E; e++)
                if (set >> e & 1u)
                    sum += exp((double)l[t][e] - (double)l[t][id]);
            want[t][j] = 1.0 / sum;
        }
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &s.d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_tensor tx = tensor(ctx, MOEVK_DTYPE_F32, T, E), ty = tensor(ctx, MOEVK_DTYPE_F32, T, E);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, NULL), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    uint32_t *ids = malloc(sizeof(uint32_t) * T * K), *rids = malloc(sizeof(uint32_t) * T * K);
    float *w = malloc(sizeof(float) * T * K), *rw = malloc(sizeof(float) * T * K);
    uint8_t *near = malloc(T);
    cr_assert_eq(moevk_layer_read_routing(L, T, ids, w, NULL), MOEVK_SUCCESS);
    float *logits = malloc(sizeof(float) * T * E);
    moevk_ref_router_logits(x, T, E, s.router, MOEVK_DTYPE_F32, E, NULL, logits);
    cr_assert_eq(moevk_ref_route(&s.d, T, logits, rids, rw, near), MOEVK_SUCCESS);
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t j = 0; j < K; j++) {
            const uint32_t a = t * K + j;
            const double wt = want[t % 4][j];
            cr_assert_eq(near[t], 0, "eps %g token %u flagged near the threshold", eps, t);
            cr_assert_eq(rids[a], want_ids[t % 4][j], "eps %g token %u slot %u", eps, t, j);
            cr_assert_eq(ids[a], want_ids[t % 4][j], "eps %g T %u token %u slot %u: GPU id",
                         eps, T, t, j);
            cr_assert(fabs(rw[a] - wt) <= 1e-7 * wt, "eps %g token %u slot %u: reference %.9g, "
                      "expected %.9g", eps, t, j, rw[a], wt);
            cr_assert(fabs(w[a] - wt) <= 2e-6 * wt, "eps %g T %u token %u slot %u: GPU %.9g, "
                      "expected %.9g", eps, T, t, j, w[a], wt);
        }
    /* the threshold matters: at eps 0.05, t0's first weight is below 1 and
     * t3's is 1; t1's sets are the widest */
    if (eps == 0.05f)
        cr_assert(want[0][0] < 0.6 && want[3][0] == 1.0 && want[1][0] < 0.3);
    free(logits), free(ids), free(rids), free(w), free(rw), free(near), free(x);
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
    moevk_layer_destroy(L);
    free_layer(&s);
}

Test(stages, sparsemixer_threshold)
{
    moevk_context *ctx = mvkt_context();
    static const float eps[] = {0.05f, 0.0f, 10.0f};
    for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
        sparsemixer_case(ctx, eps[i], 1); /* T = 4: the fused route */
        sparsemixer_case(ctx, eps[i], 5); /* T = 20: logits, then route */
    }
    mvkt_context_end(ctx);
}

/* Grids that would pass the device's workgroup-count limit are refused
 * before any weight is read. */
Test(stages, grid_limits)
{
    moevk_context *ctx = mvkt_context();
    static const float dummy[4];
    /* ffn one 64-wide tile past the device's y limit (hidden 1 keeps H*F in range) */
    const uint64_t maxy = moevk_context_device_info(ctx)->max_workgroup_count[1];
    const uint64_t ffn = (maxy + 1) * 64;
    cr_assert_leq(ffn, UINT32_MAX, "the device's y limit is too large to exceed here");
    moevk_layer_desc d = {
        .hidden = 1, .ffn = (uint32_t)ffn, .num_experts = 1, .top_k = 1,
        .router_weight = dummy, .experts = {.gate = dummy, .up = dummy, .down = dummy},
    };
    moevk_layer *L = (moevk_layer *)0x1;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_ERROR_LIMIT_EXCEEDED, "%s",
                 moevk_context_last_error(ctx));
    cr_assert(strstr(moevk_context_last_error(ctx), "ffn"), "%s", moevk_context_last_error(ctx));
    cr_assert_null(L);
    mvkt_context_end(ctx);
}

/* MOEVK_LAYER_WEIGHTS_ON_INPUT (Llama 4): the forward pass gives the
 * reference's output, bit for bit the same in expert chunks of 5 tokens as
 * in one; moevk_layer_experts, which takes no weights, refuses the layer. */
Test(stages, weights_on_the_input)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed);
    const uint32_t T = 23, H = 40, F = 24, E = 6, K = 2, NS = 1;
    stage_layer s;
    make_layer(&r, &s, H, F, E, K, NS, 0.0f);
    s.d.flags = MOEVK_LAYER_WEIGHTS_ON_INPUT;
    moevk_workspace *ws;
    moevk_workspace_desc wd = {.chunk_tokens = 5};
    cr_assert_eq(moevk_workspace_create(ctx, &wd, &ws), MOEVK_SUCCESS);
    moevk_layer *L, *Lc;
    cr_assert_eq(moevk_layer_create(ctx, &s.d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_layer_desc dc = s.d;
    dc.workspace = ws;
    cr_assert_eq(moevk_layer_create(ctx, &dc, &Lc), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    float *x = mvkt_random_weights(&r, MOEVK_DTYPE_F32, (size_t)T * H, 1.0f);
    moevk_tensor tx = tensor(ctx, MOEVK_DTYPE_F32, T, H), ty = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    moevk_tensor tyc = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, NULL), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_forward(Lc, &tx, &tyc, NULL), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    float *y = malloc(sizeof(float) * T * H), *yc = malloc(sizeof(float) * T * H);
    float *want = malloc(sizeof(float) * T * H), *plain = malloc(sizeof(float) * T * H);
    cr_assert_eq(moevk_tensor_download(&ty, y), 0);
    cr_assert_eq(moevk_tensor_download(&tyc, yc), 0);
    cr_assert(memcmp(y, yc, sizeof(float) * T * H) == 0,
              "seed %llu: chunks of 5 tokens change the bits", (unsigned long long)seed);
    cr_assert_eq(moevk_ref_layer_forward(&s.d, T, x, want, NULL, NULL, NULL, NULL), 0);
    double err = mvkt_rel_l2(y, want, T * H);
    cr_assert_leq(err, 1e-5, "seed %llu: against the reference %g", (unsigned long long)seed,
                  err);
    /* the flag changes the result (it is not ignored somewhere) */
    s.d.flags = 0;
    cr_assert_eq(moevk_ref_layer_forward(&s.d, T, x, plain, NULL, NULL, NULL, NULL), 0);
    cr_assert_gt(mvkt_rel_l2(plain, want, T * H), 1e-3, "seed %llu", (unsigned long long)seed);

    moevk_tensor ids = tensor(ctx, MOEVK_DTYPE_I32, T, K), w = tensor(ctx, MOEVK_DTYPE_F32, T, K);
    moevk_tensor eo = tensor(ctx, MOEVK_DTYPE_F32, (uint64_t)T * K, H);
    cr_assert_eq(moevk_layer_route(L, &tx, &ids, &w), MOEVK_SUCCESS);
    cr_assert_eq(moevk_layer_experts(L, &tx, &ids, &eo), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "MOEVK_LAYER_WEIGHTS_ON_INPUT"), "%s",
              moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, NULL), MOEVK_SUCCESS); /* still usable */

    moevk_tensor *all[] = {&tx, &ty, &tyc, &ids, &w, &eo};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        moevk_tensor_destroy(all[i]);
    moevk_layer_destroy(L);
    moevk_layer_destroy(Lc);
    moevk_workspace_destroy(ws);
    free(x);
    free(y);
    free(yc);
    free(want);
    free(plain);
    free_layer(&s);
    mvkt_context_end(ctx);
}

/* Identity ("zero") experts (LongCat-Flash): the last Z router experts have
 * no weights and give their input back. The forward pass gives the
 * reference's output (in expert chunks of 5 tokens bit for bit as in one,
 * and with every FFN expert in host memory); a token routed to identity
 * experts only gets y = sum_j w_j x (computed here, not by the reference);
 * moevk_layer_experts writes x itself into an identity expert's rows. */
Test(stages, identity_experts)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed);
    const uint32_t T = 23, H = 40, F = 24, E = 8, Z = 3, K = 3, NS = 0;
    stage_layer s;
    make_layer(&r, &s, H, F, E, K, NS, 0.0f);
    s.d.num_zero_experts = Z;
    /* a router bias, zero at first; later large on the identity experts */
    float *rb = calloc(E, sizeof(float));
    s.d.router_bias = rb;
    moevk_workspace *ws;
    moevk_workspace_desc wd = {.chunk_tokens = 5};
    cr_assert_eq(moevk_workspace_create(ctx, &wd, &ws), MOEVK_SUCCESS);
    moevk_layer *L, *Lc, *Lb;
    cr_assert_eq(moevk_layer_create(ctx, &s.d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_layer_desc dc = s.d;
    dc.workspace = ws;
    cr_assert_eq(moevk_layer_create(ctx, &dc, &Lc), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_layer_desc db = s.d;
    db.flags = MOEVK_LAYER_VRAM_BUDGET; /* vram_budget 0: every FFN expert on the host */
    cr_assert_eq(moevk_layer_create(ctx, &db, &Lb), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    float *x = mvkt_random_weights(&r, MOEVK_DTYPE_F32, (size_t)T * H, 1.0f);
    moevk_tensor tx = tensor(ctx, MOEVK_DTYPE_F32, T, H), ty = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    moevk_tensor tyc = tensor(ctx, MOEVK_DTYPE_F32, T, H), tyb = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    moevk_routing_stats st = {0};
    uint32_t tpe[8];
    st.tokens_per_expert = tpe;
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, &st), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_forward(Lc, &tx, &tyc, NULL), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_forward(Lb, &tx, &tyb, NULL), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    float *y = malloc(sizeof(float) * T * H), *yc = malloc(sizeof(float) * T * H);
    float *yb = malloc(sizeof(float) * T * H), *want = malloc(sizeof(float) * T * H);
    cr_assert_eq(moevk_tensor_download(&ty, y), 0);
    cr_assert_eq(moevk_tensor_download(&tyc, yc), 0);
    cr_assert_eq(moevk_tensor_download(&tyb, yb), 0);
    cr_assert(memcmp(y, yc, sizeof(float) * T * H) == 0,
              "seed %llu: chunks of 5 tokens change the bits", (unsigned long long)seed);
    uint32_t rids[23 * 3];
    moevk_routing_stats rst = {0};
    uint32_t rtpe[8];
    rst.tokens_per_expert = rtpe;
    cr_assert_eq(moevk_ref_layer_forward(&s.d, T, x, want, rids, NULL, NULL, &rst), 0);
    double err = mvkt_rel_l2(y, want, T * H), errb = mvkt_rel_l2(yb, want, T * H);
    cr_assert_leq(err, 1e-5, "seed %llu: against the reference %g", (unsigned long long)seed,
                  err);
    cr_assert_leq(errb, 1e-5, "seed %llu: FFN experts on the host: %g",
                  (unsigned long long)seed, errb);
    /* identity experts are counted as experts */
    uint32_t zero_slots = 0;
    for (uint32_t a = 0; a < T * K; a++)
        zero_slots += rids[a] >= E - Z;
    cr_assert_gt(zero_slots, 0, "seed %llu: no slot chose an identity expert", (unsigned long long)seed);
    for (uint32_t e = 0; e < E; e++)
        cr_assert_eq(tpe[e], rtpe[e], "seed %llu: tokens_per_expert[%u]", (unsigned long long)seed, e);
    /* the reference is not fooled either: the same layer without identity
     * experts (expert ids >= E - Z then run FFN weights) differs */
    moevk_layer_desc plain = s.d;
    plain.num_zero_experts = 0;
    float *yp = malloc(sizeof(float) * T * H);
    cr_assert_eq(moevk_ref_layer_forward(&plain, T, x, yp, NULL, NULL, NULL, NULL), 0);
    cr_assert_gt(mvkt_rel_l2(yp, want, T * H), 1e-3, "seed %llu", (unsigned long long)seed);

    /* every slot on an identity expert: y = sum_j w_j x exactly as f32 */
    for (uint32_t e = E - Z; e < E; e++)
        rb[e] = 100.0f;
    moevk_layer *Li;
    cr_assert_eq(moevk_layer_create(ctx, &s.d, &Li), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_tensor ids = tensor(ctx, MOEVK_DTYPE_I32, T, K), w = tensor(ctx, MOEVK_DTYPE_F32, T, K);
    cr_assert_eq(moevk_layer_forward(Li, &tx, &ty, NULL), MOEVK_SUCCESS);
    cr_assert_eq(moevk_layer_route(Li, &tx, &ids, &w), MOEVK_SUCCESS);
    int32_t hid[23 * 3];
    float hw[23 * 3];
    cr_assert_eq(moevk_tensor_download(&ids, hid), 0);
    cr_assert_eq(moevk_tensor_download(&w, hw), 0);
    cr_assert_eq(moevk_tensor_download(&ty, y), 0);
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t c = 0; c < H; c++) {
            double acc = 0.0;
            for (uint32_t j = 0; j < K; j++) {
                cr_assert_geq((uint32_t)hid[t * K + j], E - Z, "seed %llu", (unsigned long long)seed);
                acc += (double)hw[t * K + j] * x[t * H + c];
            }
            cr_assert_leq(fabs(y[t * H + c] - acc), 1e-6 * (1.0 + fabs(acc)),
                          "seed %llu: y[%u, %u] = %g, sum_j w_j x = %g", (unsigned long long)seed,
                          t, c, y[t * H + c], acc);
        }
    /* moevk_layer_experts on those ids: each row is x of its token */
    moevk_tensor eo = tensor(ctx, MOEVK_DTYPE_F32, (uint64_t)T * K, H);
    moevk_tensor rowt = tensor(ctx, MOEVK_DTYPE_I32, T, K), cnt = tensor(ctx, MOEVK_DTYPE_I32, E, 0);
    cr_assert_eq(moevk_layer_experts(Li, &tx, &ids, &eo), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_permute(Li, &ids, &rowt, &cnt), MOEVK_SUCCESS);
    float *o = malloc(sizeof(float) * T * K * H);
    int32_t row[23 * 3];
    cr_assert_eq(moevk_tensor_download(&eo, o), 0);
    cr_assert_eq(moevk_tensor_download(&rowt, row), 0);
    for (uint32_t a = 0; a < T * K; a++)
        cr_assert(memcmp(o + (size_t)row[a] * H, x + (size_t)(a / K) * H, sizeof(float) * H) == 0,
                  "seed %llu: the identity row of slot %u is not x", (unsigned long long)seed, a);

    /* no FFN expert left: refused, naming the field */
    moevk_layer *bad = NULL;
    s.d.num_zero_experts = E;
    cr_assert_eq(moevk_layer_create(ctx, &s.d, &bad), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "num_zero_experts"), "%s",
              moevk_context_last_error(ctx));
    cr_assert_null(bad);

    moevk_tensor *all[] = {&tx, &ty, &tyc, &tyb, &ids, &w, &eo, &rowt, &cnt};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        moevk_tensor_destroy(all[i]);
    moevk_layer_destroy(L);
    moevk_layer_destroy(Lc);
    moevk_layer_destroy(Lb);
    moevk_layer_destroy(Li);
    moevk_workspace_destroy(ws);
    free(x);
    free(y);
    free(yc);
    free(yb);
    free(yp);
    free(o);
    free(want);
    free(rb);
    free_layer(&s);
    mvkt_context_end(ctx);
}

/* Expert choice (docs/semantics.md): each expert takes the C tokens with
 * the largest p[t, e]; a token gets any number of experts, ids and weights
 * have one slot per expert. */
Test(stages, expert_choice)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed);

    /* By hand: E = 2, router = identity (the logits are x), T = 4, k = 1,
     * cf 0 (means 1): C = ceil(4 / 2) = 2. p(t0) = softmax(2, 0), p(t1) =
     * p(t2) = (1/2, 1/2), p(t3) = softmax(0, 3). Expert 0 ranks t0, then
     * t1 = t2 (the lower token wins), t3: takes t0, t1. Expert 1 ranks t3,
     * t1 = t2, t0: takes t3, t1. So t2 gets no expert, t1 both. */
    {
        const uint32_t T = 4, H = 2, F = 8, E = 2;
        stage_layer s;
        make_layer(&r, &s, H, F, E, 1, 0, 0.0f);
        s.d.routing = MOEVK_ROUTING_EXPERT_CHOICE;
        s.d.norm_topk_prob = 0;
        float id[4] = {1, 0, 0, 1};
        memcpy(s.router, id, sizeof id);
        float x[8] = {2, 0, 0, 0, 0, 0, 0, 3};
        moevk_layer *L;
        cr_assert_eq(moevk_layer_create(ctx, &s.d, &L), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        moevk_tensor tx = tensor(ctx, MOEVK_DTYPE_F32, T, H), ty = tensor(ctx, MOEVK_DTYPE_F32, T, H);
        moevk_tensor ids = tensor(ctx, MOEVK_DTYPE_I32, T, E), w = tensor(ctx, MOEVK_DTYPE_F32, T, E);
        cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
        moevk_routing_stats st = {0};
        uint32_t tpe[2];
        st.tokens_per_expert = tpe;
        cr_assert_eq(moevk_layer_forward(L, &tx, &ty, &st), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        cr_assert_eq(moevk_layer_route(L, &tx, &ids, &w), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        int32_t hid[8];
        float hw[8], y[8], want[8];
        cr_assert_eq(moevk_tensor_download(&ids, hid), 0);
        cr_assert_eq(moevk_tensor_download(&w, hw), 0);
        cr_assert_eq(moevk_tensor_download(&ty, y), 0);
        const int32_t want_ids[8] = {0, -1, 0, 1, -1, -1, -1, 1};
        const double s2 = 1.0 / (1.0 + exp(-2.0)), s3 = 1.0 / (1.0 + exp(-3.0));
        const double want_w[8] = {s2, 0, 0.5, 0.5, 0, 0, 0, s3};
        for (int a = 0; a < 8; a++) {
            cr_assert_eq(hid[a], want_ids[a], "token %d slot %d: expert %d, expected %d", a / 2,
                         a % 2, hid[a], want_ids[a]);
            cr_assert_float_eq(hw[a], want_w[a], 1e-6, "token %d slot %d: weight %g, expected %g",
                               a / 2, a % 2, hw[a], want_w[a]);
        }
        cr_assert_eq(tpe[0], 2);
        cr_assert_eq(tpe[1], 2);
        cr_assert_eq(st.dropped, 0);
        /* f_e = 2 / (C E) = 1/2 each: E sum_e f_e P_e = sum_e P_e = 1 */
        cr_assert_float_eq(st.load_balancing_loss, 1.0, 1e-5, "%g", st.load_balancing_loss);
        /* no expert took token 2: it gets nothing (no shared experts) */
        cr_assert(y[4] == 0.0f && y[5] == 0.0f, "token 2: %g %g", y[4], y[5]);
        cr_assert(y[0] != 0.0f || y[1] != 0.0f);
        cr_assert_eq(moevk_ref_layer_forward(&s.d, T, x, want, NULL, NULL, NULL, NULL), 0);
        cr_assert_leq(mvkt_rel_l2(y, want, T * H), 1e-5, "seed %llu", (unsigned long long)seed);
        /* the standalone permute takes those ids: empty slots get no row */
        moevk_tensor rowt = tensor(ctx, MOEVK_DTYPE_I32, T, E), cnt = tensor(ctx, MOEVK_DTYPE_I32, E, 0);
        cr_assert_eq(moevk_layer_permute(L, &ids, &rowt, &cnt), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        int32_t hrow[8], hcnt[2];
        cr_assert_eq(moevk_tensor_download(&rowt, hrow), 0);
        cr_assert_eq(moevk_tensor_download(&cnt, hcnt), 0);
        cr_assert(hcnt[0] == 2 && hcnt[1] == 2, "counts %d %d", hcnt[0], hcnt[1]);
        /* expert 0's rows 0, 1 (tokens 0, 1), expert 1's rows 2, 3 (1, 3) */
        const int32_t want_rows[8] = {0, -1, 1, 2, -1, -1, -1, 3};
        for (int a = 0; a < 8; a++)
            cr_assert_eq(hrow[a], want_rows[a], "token %d slot %d: row %d, expected %d", a / 2,
                         a % 2, hrow[a], want_rows[a]);
        /* a slot holding another expert than its own is refused */
        int32_t bad_ids[8] = {0, -1, 1, 1, -1, -1, -1, 1};
        cr_assert_eq(moevk_tensor_upload(&ids, bad_ids), 0);
        cr_assert_eq(moevk_layer_permute(L, &ids, &rowt, &cnt), MOEVK_ERROR_INVALID_ARGUMENT);
        cr_assert(strstr(moevk_context_last_error(ctx), "ids[1, 0] = 1"), "%s",
                  moevk_context_last_error(ctx));
        moevk_tensor *all[] = {&tx, &ty, &ids, &w, &rowt, &cnt};
        for (size_t i = 0; i < 6; i++)
            moevk_tensor_destroy(all[i]);
        moevk_layer_destroy(L);
        free_layer(&s);
    }

    /* Random: C = ceil(1.5 * 37 * 2 / 8) = 14 tokens per expert; the same
     * bits in chunks of 5 tokens (the choice is made over all 37 first). */
    {
        const uint32_t T = 37, H = 40, F = 24, E = 8, K = 2, C = 14;
        stage_layer s;
        make_layer(&r, &s, H, F, E, K, 1, 1.5f);
        s.d.routing = MOEVK_ROUTING_EXPERT_CHOICE;
        s.d.norm_topk_prob = 0;
        s.d.routed_scaling_factor = 2.5f;
        moevk_workspace *ws;
        moevk_workspace_desc wd = {.chunk_tokens = 5};
        cr_assert_eq(moevk_workspace_create(ctx, &wd, &ws), MOEVK_SUCCESS);
        moevk_layer_desc dc = s.d;
        dc.workspace = ws;
        moevk_layer *L, *Lc;
        cr_assert_eq(moevk_layer_create(ctx, &s.d, &L), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        cr_assert_eq(moevk_layer_create(ctx, &dc, &Lc), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        float *x = mvkt_random_weights(&r, MOEVK_DTYPE_F32, (size_t)T * H, 1.0f);
        moevk_tensor tx = tensor(ctx, MOEVK_DTYPE_F32, T, H), ty = tensor(ctx, MOEVK_DTYPE_F32, T, H);
        moevk_tensor tyc = tensor(ctx, MOEVK_DTYPE_F32, T, H);
        moevk_tensor ids = tensor(ctx, MOEVK_DTYPE_I32, T, E), w = tensor(ctx, MOEVK_DTYPE_F32, T, E);
        cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
        moevk_routing_stats st = {0};
        uint32_t tpe[8];
        st.tokens_per_expert = tpe;
        cr_assert_eq(moevk_layer_forward(L, &tx, &ty, &st), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        cr_assert_eq(moevk_layer_forward(Lc, &tx, &tyc, NULL), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        cr_assert_eq(moevk_layer_route(L, &tx, &ids, &w), MOEVK_SUCCESS);
        float *y = malloc(sizeof(float) * T * H), *yc = malloc(sizeof(float) * T * H);
        float *want = malloc(sizeof(float) * T * H), *rw = malloc(sizeof(float) * T * E);
        int32_t *hid = malloc(sizeof(int32_t) * T * E);
        uint32_t *rids = malloc(sizeof(uint32_t) * T * E);
        uint8_t tie[37];
        cr_assert_eq(moevk_tensor_download(&ty, y), 0);
        cr_assert_eq(moevk_tensor_download(&tyc, yc), 0);
        cr_assert_eq(moevk_tensor_download(&ids, hid), 0);
        cr_assert(memcmp(y, yc, sizeof(float) * T * H) == 0,
                  "seed %llu: chunks of 5 tokens change the bits", (unsigned long long)seed);
        cr_assert_eq(moevk_ref_layer_forward(&s.d, T, x, want, rids, rw, tie, NULL), 0);
        uint32_t none = 0, several = 0;
        for (uint32_t e = 0; e < E; e++)
            cr_assert_eq(tpe[e], C, "seed %llu: expert %u took %u tokens",
                         (unsigned long long)seed, e, tpe[e]);
        for (uint32_t t = 0; t < T; t++) {
            uint32_t n = 0;
            for (uint32_t e = 0; e < E; e++) {
                int32_t g = hid[t * E + e];
                cr_assert(g == (int32_t)e || g == -1, "seed %llu: token %u slot %u: %d",
                          (unsigned long long)seed, t, e, g);
                n += g >= 0;
                if (!tie[t])
                    cr_assert_eq((uint32_t)g, rids[t * E + e], "seed %llu: token %u slot %u",
                                 (unsigned long long)seed, t, e);
            }
            none += n == 0;
            several += n > 2;
            if (!tie[t]) {
                double e2 = 0, r2 = 0;
                for (uint32_t h = 0; h < H; h++) {
                    double dlt = (double)y[t * H + h] - want[t * H + h];
                    e2 += dlt * dlt;
                    r2 += (double)want[t * H + h] * want[t * H + h];
                }
                cr_assert_leq(sqrt(e2), 1e-5 * sqrt(r2) + 1e-7, "seed %llu: token %u",
                              (unsigned long long)seed, t);
            }
        }
        /* 112 assignments over 37 tokens: the choice is uneven */
        cr_assert_gt(none + several, 0, "seed %llu: every token got exactly 2 or 1 experts",
                     (unsigned long long)seed);
        cr_assert_eq(st.dropped, 0);

        /* refused: a batch-invariant layer, normalisation, groups */
        moevk_layer *bad = NULL;
        moevk_layer_desc db = s.d;
        db.flags = MOEVK_LAYER_BATCH_INVARIANT;
        cr_assert_eq(moevk_layer_create(ctx, &db, &bad), MOEVK_ERROR_INVALID_ARGUMENT);
        cr_assert(strstr(moevk_context_last_error(ctx), "MOEVK_LAYER_BATCH_INVARIANT"), "%s",
                  moevk_context_last_error(ctx));
        db = s.d;
        db.norm_topk_prob = 1;
        cr_assert_eq(moevk_layer_create(ctx, &db, &bad), MOEVK_ERROR_INVALID_ARGUMENT);
        cr_assert(strstr(moevk_context_last_error(ctx), "norm_topk_prob"), "%s",
                  moevk_context_last_error(ctx));
        db = s.d;
        db.n_group = 2;
        db.topk_group = 1;
        cr_assert_eq(moevk_layer_create(ctx, &db, &bad), MOEVK_ERROR_INVALID_ARGUMENT);
        cr_assert(strstr(moevk_context_last_error(ctx), "n_group"), "%s",
                  moevk_context_last_error(ctx));
        cr_assert_null(bad);

        moevk_tensor *all[] = {&tx, &ty, &tyc, &ids, &w};
        for (size_t i = 0; i < 5; i++)
            moevk_tensor_destroy(all[i]);
        moevk_layer_destroy(L);
        moevk_layer_destroy(Lc);
        moevk_workspace_destroy(ws);
        free(x);
        free(y);
        free(yc);
        free(want);
        free(rw);
        free(hid);
        free(rids);
        free_layer(&s);
    }
    mvkt_context_end(ctx);
}

/* The input norms and the per-expert weight scale (Gemma 4), on hand-built
 * inputs: the router reads x / rms(x) * scale * factor, each choice's
 * renormalised weight is times expert_weight_scale[id], and the experts read
 * x / rms(x) * weight; the identity expert (the last) shows that input. The
 * expected values are computed here; the device and the reference both give
 * them. Then a random layer with every part: the forward pass is the
 * reference's (fused and unfused routing; chunks of 5 tokens bit for bit),
 * and each part changes the result. */
Test(stages, input_norms_and_expert_scales)
{
    moevk_context *ctx = mvkt_context();
    enum { T = 2, H = 4, E = 3, K = 2, F = 2 };
    const float x[T * H] = {1, 2, 4, 1, -2, 0.5f, 0.25f, 1};
    const float rw[E * H] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
    const float rscale[H] = {0.5f, 1, 1, 1}, ew[H] = {1, -1, 2, 0.5f};
    const float pes[E] = {0.5f, 2, 3};
    float g[2 * F * H], u[2 * F * H], dn[2 * H * F];
    for (int i = 0; i < 2 * F * H; i++)
        g[i] = u[i] = 0.25f * (float)(i % 5) - 0.5f;
    memset(dn, 0, sizeof dn); /* expert 1 gives 0: y is the identity expert's part */
    for (int i = 0; i < H * F; i++)
        dn[i] = 0.125f * (float)(i % 3);
    const float eps = 1e-6f;
    moevk_layer_desc d = {
        .hidden = H, .ffn = F, .num_experts = E, .top_k = K,
        .routing = MOEVK_ROUTING_SOFTMAX_TOPK, .activation = MOEVK_ACT_GEGLU_TANH,
        .norm_topk_prob = 1, .weight_dtype = MOEVK_DTYPE_F32, .router_dtype = MOEVK_DTYPE_F32,
        .router_weight = rw, .experts = {.gate = g, .up = u, .down = dn},
        .num_zero_experts = 1, .router_norm_eps = eps, .router_input_scale = rscale,
        .router_input_factor = 0.5f, .expert_norm_eps = eps, .expert_norm_weight = ew,
        .expert_weight_scale = pes,
    };
    /* by hand: ids and weights of each token, and y = w(identity) e_t */
    uint32_t want_ids[T * K];
    float want_w[T * K], want_y[T * H];
    for (int t = 0; t < T; t++) {
        const float *xt = x + t * H;
        double ss = 0;
        for (int h = 0; h < H; h++)
            ss += (double)xt[h] * xt[h];
        const double inv = 1.0 / sqrt(ss / H + eps);
        double l[E], p[E], sum = 0;
        for (int e = 0; e < E; e++) /* rw picks element e */
            l[e] = xt[e] * inv * rscale[e] * 0.5;
        for (int e = 0; e < E; e++)
            sum += p[e] = exp(l[e]);
        for (int e = 0; e < E; e++)
            p[e] /= sum;
        /* the two largest of three, by hand */
        int lo = 0;
        for (int e = 1; e < E; e++)
            if (p[e] < p[lo])
                lo = e;
        int a = lo == 0 ? 1 : 0, b = lo == 2 ? 1 : 2;
        if (p[b] > p[a]) {
            int tmp = a;
            a = b;
            b = tmp;
        }
        want_ids[t * K] = (uint32_t)a;
        want_ids[t * K + 1] = (uint32_t)b;
        want_w[t * K] = (float)(p[a] / (p[a] + p[b]) * pes[a]);
        want_w[t * K + 1] = (float)(p[b] / (p[a] + p[b]) * pes[b]);
        cr_assert(a == 2 || b == 2, "the hand-built routing takes the identity expert");
        cr_assert(a != 0 && b != 0, "and expert 1, whose output is 0");
        const double wid = a == 2 ? want_w[t * K] : want_w[t * K + 1];
        for (int h = 0; h < H; h++)
            want_y[t * H + h] = (float)(wid * xt[h] * inv * ew[h]);
    }
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_tensor tx = tensor(ctx, MOEVK_DTYPE_F32, T, H), ty = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    moevk_tensor ids = tensor(ctx, MOEVK_DTYPE_I32, T, K), w = tensor(ctx, MOEVK_DTYPE_F32, T, K);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    cr_assert_eq(moevk_layer_route(L, &tx, &ids, &w), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, NULL), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    uint32_t gi[T * K];
    float gw[T * K], gy[T * H], ry[T * H], rwt[T * K];
    uint32_t rid[T * K];
    cr_assert_eq(moevk_tensor_download(&ids, gi), 0);
    cr_assert_eq(moevk_tensor_download(&w, gw), 0);
    cr_assert_eq(moevk_tensor_download(&ty, gy), 0);
    cr_assert_eq(moevk_ref_layer_forward(&d, T, x, ry, rid, rwt, NULL, NULL), 0);
    for (int i = 0; i < T * K; i++) {
        cr_assert_eq(gi[i], want_ids[i], "slot %d: device id %u, by hand %u", i, gi[i],
                     want_ids[i]);
        cr_assert_eq(rid[i], want_ids[i], "slot %d: reference id %u, by hand %u", i, rid[i],
                     want_ids[i]);
        cr_assert_float_eq(gw[i], want_w[i], 1e-6f * 4, "slot %d: device weight %.9g, by hand %.9g",
                           i, gw[i], want_w[i]);
        cr_assert_float_eq(rwt[i], want_w[i], 1e-7f * 4, "slot %d: reference %.9g, by hand %.9g",
                           i, rwt[i], want_w[i]);
    }
    for (int i = 0; i < T * H; i++) {
        cr_assert_float_eq(gy[i], want_y[i], 1e-5f, "y[%d]: device %.9g, by hand %.9g", i, gy[i],
                           want_y[i]);
        cr_assert_float_eq(ry[i], want_y[i], 1e-6f, "y[%d]: reference %.9g, by hand %.9g", i,
                           ry[i], want_y[i]);
    }
    moevk_tensor *all[] = {&tx, &ty, &ids, &w};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        moevk_tensor_destroy(all[i]);
    moevk_layer_destroy(L);

    /* a random layer with every part */
    uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed);
    const uint32_t T2 = 37, H2 = 40, F2 = 24, E2 = 6, K2 = 2, NS = 1;
    stage_layer s;
    make_layer(&r, &s, H2, F2, E2, K2, NS, 0.0f);
    float *rs = mvkt_random_weights(&r, MOEVK_DTYPE_F32, H2, 1.0f);
    float *nw = mvkt_random_weights(&r, MOEVK_DTYPE_F32, H2, 1.0f);
    float *es = mvkt_random_weights(&r, MOEVK_DTYPE_F32, E2, 1.0f);
    s.d.router_norm_eps = 1e-6f;
    s.d.router_input_scale = rs;
    s.d.router_input_factor = 1.0f / sqrtf((float)H2);
    s.d.expert_norm_eps = 1e-6f;
    s.d.expert_norm_weight = nw;
    s.d.expert_weight_scale = es;
    float *x2 = mvkt_random_weights(&r, MOEVK_DTYPE_F32, (size_t)T2 * H2, 3.0f);
    float *y2 = malloc(sizeof(float) * T2 * H2), *yc = malloc(sizeof(float) * T2 * H2);
    float *want = malloc(sizeof(float) * T2 * H2), *other = malloc(sizeof(float) * T2 * H2);
    moevk_workspace *ws;
    moevk_workspace_desc wd = {.chunk_tokens = 5};
    cr_assert_eq(moevk_workspace_create(ctx, &wd, &ws), MOEVK_SUCCESS);
    moevk_layer *Lc;
    cr_assert_eq(moevk_layer_create(ctx, &s.d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_layer_desc dc = s.d;
    dc.workspace = ws;
    cr_assert_eq(moevk_layer_create(ctx, &dc, &Lc), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    const uint32_t Ts[2] = {T2, 9}; /* unfused and fused routing */
    for (int i = 0; i < 2; i++) {
        const uint32_t n = Ts[i];
        moevk_tensor ax = tensor(ctx, MOEVK_DTYPE_F32, n, H2);
        moevk_tensor ay = tensor(ctx, MOEVK_DTYPE_F32, n, H2);
        moevk_tensor ac = tensor(ctx, MOEVK_DTYPE_F32, n, H2);
        cr_assert_eq(moevk_tensor_upload(&ax, x2), 0);
        cr_assert_eq(moevk_layer_forward(L, &ax, &ay, NULL), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        cr_assert_eq(moevk_layer_forward(Lc, &ax, &ac, NULL), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        cr_assert_eq(moevk_tensor_download(&ay, y2), 0);
        cr_assert_eq(moevk_tensor_download(&ac, yc), 0);
        cr_assert(memcmp(y2, yc, sizeof(float) * n * H2) == 0,
                  "seed %llu, T = %u: chunks of 5 tokens change the bits",
                  (unsigned long long)seed, n);
        cr_assert_eq(moevk_ref_layer_forward(&s.d, n, x2, want, NULL, NULL, NULL, NULL), 0);
        double err = mvkt_rel_l2(y2, want, (size_t)n * H2);
        cr_assert_leq(err, 1e-5, "seed %llu, T = %u: against the reference %g",
                      (unsigned long long)seed, n, err);
        moevk_tensor_destroy(&ax);
        moevk_tensor_destroy(&ay);
        moevk_tensor_destroy(&ac);
    }
    /* each part counts */
    for (int part = 0; part < 4; part++) {
        moevk_layer_desc o = s.d;
        if (part == 0)
            o.router_norm_eps = 0.0f;
        else if (part == 1)
            o.router_input_scale = NULL;
        else if (part == 2)
            o.expert_norm_eps = 0.0f, o.expert_norm_weight = NULL;
        else
            o.expert_weight_scale = NULL;
        cr_assert_eq(moevk_ref_layer_forward(&o, T2, x2, other, NULL, NULL, NULL, NULL), 0);
        cr_assert_gt(mvkt_rel_l2(other, want, (size_t)T2 * H2), 1e-3, "seed %llu: part %d",
                     (unsigned long long)seed, part);
    }
    /* a weight without its norm is refused, naming the field */
    moevk_layer_desc bad = s.d;
    bad.expert_norm_eps = 0.0f;
    moevk_layer *Lb = NULL;
    cr_assert_eq(moevk_layer_create(ctx, &bad, &Lb), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "expert_norm_weight"), "%s",
              moevk_context_last_error(ctx));
    moevk_layer_destroy(L);
    moevk_layer_destroy(Lc);
    moevk_workspace_destroy(ws);
    free(rs);
    free(nw);
    free(es);
    free(x2);
    free(y2);
    free(yc);
    free(want);
    free(other);
    free_layer(&s);
    mvkt_context_end(ctx);
}

/* The shared gates as a sink of the normalisation (Inkling): forward
 * against the reference; the weights plus the gates sum to the scale; the
 * stage calls (route, permute, experts, combine_shared) give forward's y
 * bit for bit, though combine_shared has to route again for the gates
 * (from the router's own input rows when it norms them: router_norm_eps). */
static void shared_sink_case(float router_norm_eps)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed);
    const uint32_t T = 23, H = 40, F = 24, E = 8, K = 3, NS = 2;
    stage_layer s;
    make_layer(&r, &s, H, F, E, K, NS, 0.0f);
    s.d.routing = MOEVK_ROUTING_SIGMOID_GROUPED;
    s.d.routed_scaling_factor = 2.5f;
    s.d.shared_sink = 1;
    s.d.router_norm_eps = router_norm_eps;
    float *x = mvkt_random_weights(&r, MOEVK_DTYPE_F32, (size_t)T * H, 1.0f);
    float *y = malloc(4 * T * H), *ref = malloc(4 * T * H), *yc = malloc(4 * T * H);
    float *xr = malloc(4 * T * H); /* the router's rows */
    moevk_ref_router_input(&s.d, T, x, xr);
    uint32_t *rids = malloc(4 * T * K), *fids = malloc(4 * T * K);
    float *rw = malloc(4 * T * K), *fw = malloc(4 * T * K), *gam = malloc(4 * T * NS);
    int32_t *frow = malloc(4 * T * K);
    uint8_t near[64];
    cr_assert_eq(moevk_ref_layer_forward(&s.d, T, x, ref, rids, rw, near, NULL), 0);
    /* the reference's own sum: the k weights and the gates make the scale */
    for (uint32_t t = 0; t < T; t++) {
        cr_assert_eq(moevk_ref_shared_gammas(&s.d, xr + (size_t)t * H, rids + (size_t)t * K,
                                             gam + (size_t)t * NS),
                     0);
        double sum = 0.0;
        for (uint32_t j = 0; j < K; j++)
            sum += rw[t * K + j];
        for (uint32_t i = 0; i < NS; i++) {
            cr_assert_gt(gam[t * NS + i], 0.0f);
            sum += gam[t * NS + i];
        }
        cr_assert_float_eq(sum, 2.5, 1e-5, "seed %llu token %u: weights and gates sum to %g",
                           (unsigned long long)seed, t, sum);
    }
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &s.d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_tensor tx = tensor(ctx, MOEVK_DTYPE_F32, T, H), ty = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, NULL), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_tensor_download(&ty, y), 0);
    cr_assert_eq(moevk_layer_read_routing(L, T, fids, fw, frow), 0);
    float *yr = malloc(4 * T * H);
    memcpy(yr, y, 4 * T * H);
    for (uint32_t t = 0; t < T; t++) {
        if (near[t]) { /* near-tied tokens are not compared */
            memcpy(yr + (size_t)t * H, ref + (size_t)t * H, 4 * H);
            continue;
        }
        for (uint32_t j = 0; j < K; j++) {
            cr_assert_eq(fids[t * K + j], rids[t * K + j], "seed %llu: ids", (unsigned long long)seed);
            cr_assert_float_eq(fw[t * K + j], rw[t * K + j], 2e-6, "seed %llu: weights",
                               (unsigned long long)seed);
        }
    }
    double err = mvkt_rel_l2(yr, ref, T * H);
    cr_assert_leq(err, 1e-5, "seed %llu: forward vs reference %g", (unsigned long long)seed, err);

    moevk_tensor ids = tensor(ctx, MOEVK_DTYPE_I32, T, K), w = tensor(ctx, MOEVK_DTYPE_F32, T, K);
    moevk_tensor rows = tensor(ctx, MOEVK_DTYPE_I32, T, K), cnt = tensor(ctx, MOEVK_DTYPE_I32, E, 0);
    moevk_tensor eo = tensor(ctx, MOEVK_DTYPE_F32, (uint64_t)T * K, H);
    moevk_tensor y3 = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    cr_assert_eq(moevk_layer_route(L, &tx, &ids, &w), MOEVK_SUCCESS);
    cr_assert_eq(moevk_layer_permute(L, &ids, &rows, &cnt), MOEVK_SUCCESS);
    cr_assert_eq(moevk_layer_experts(L, &tx, &ids, &eo), MOEVK_SUCCESS);
    /* a pass on other tokens through the workspace first: combine_shared
     * must not rely on the routing a previous call left there */
    float *x2 = mvkt_random_weights(&r, MOEVK_DTYPE_F32, (size_t)T * H, 1.0f);
    moevk_tensor tx2 = tensor(ctx, MOEVK_DTYPE_F32, T, H);
    cr_assert_eq(moevk_tensor_upload(&tx2, x2), 0);
    cr_assert_eq(moevk_layer_forward(L, &tx2, &ty, NULL), MOEVK_SUCCESS);
    cr_assert_eq(moevk_layer_combine_shared(L, &tx, &eo, &rows, &w, &y3), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_tensor_destroy(&tx2);
    free(x2);
    cr_assert_eq(moevk_tensor_download(&y3, yc), 0);
    cr_assert(memcmp(yc, y, 4 * T * H) == 0,
              "seed %llu: route + permute + experts + combine_shared is not forward's y",
              (unsigned long long)seed);

    moevk_tensor *all[] = {&tx, &ty, &ids, &w, &rows, &cnt, &eo, &y3};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        moevk_tensor_destroy(all[i]);
    moevk_layer_destroy(L);
    free_layer(&s);
    free(x), free(y), free(ref), free(yc), free(yr), free(rids), free(fids), free(rw), free(fw);
    free(gam), free(frow), free(xr);
    mvkt_context_end(ctx);
}

Test(stages, shared_sink)
{
    shared_sink_case(0.0f);
}

Test(stages, shared_sink_with_a_router_norm)
{
    shared_sink_case(1e-6f);
}
