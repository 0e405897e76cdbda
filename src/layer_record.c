/*
 * One forward pass, stage by stage, recorded into a command buffer:
 *
 *   router   logits = x Wr^T (+ b); shared-gate logits = x Wsg^T
 *   route    per token: scores, top-k ids, weights; softmax statistics
 *   permute  per-tile ranks -> per-expert prefix, capacity, offsets, tile
 *            schedule + indirect args -> row of each assignment
 *   experts  grouped GEMM up (+ activation), grouped GEMM down, per chunk of
 *            experts, dispatched indirectly from the GPU-written schedule
 *   shared   dense GEMMs of the shared experts
 *   combine  y = sum_j w_j o[row_j] in slot order + gated shared outputs
 *   stats    per-expert probability mass, then the three losses
 *
 * A memory barrier separates dependent stages; nothing returns to the host.
 */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "layer_record.h"
#include "ops.h"

#define ROUTE_WG 128u
#define ELEM_WG 256u
#define STATS_WG 256u
#define GEMM_BN MVK_GEMM_BN

static mvk_binding whole(const moevk_buffer *b)
{
    return (mvk_binding){b->buffer, 0, VK_WHOLE_SIZE};
}

/* The buffer a stage reads or writes for scratch slot i: the layer's own
 * scratch, unless a standalone stage call bound a caller tensor there. */
static mvk_binding scratch(const moevk_layer *L, int i)
{
    if (L->bind[i].buffer)
        return L->bind[i];
    return whole(L->s[i] ? L->s[i] : L->dummy);
}

static uint32_t gemm_bm(const moevk_context *ctx)
{
    return ctx->info.max_workgroup_invocations >= 256 ? 64u : 32u;
}

void mvk_gemm_spec(const moevk_context *ctx, moevk_dtype wdtype, bool gated, uint32_t act,
                   bool scheduled, bool gather, uint32_t spec[MVK_GEMM_NSPEC])
{
    const uint32_t bm = gemm_bm(ctx);
    const uint32_t s[MVK_GEMM_NSPEC] = {(bm / 4) * (GEMM_BN / 4), bm, GEMM_BN, (uint32_t)wdtype,
                                        gated, act, scheduled, gather};
    memcpy(spec, s, sizeof(s));
}

typedef struct gemm_push {
    uint32_t M, N, K, E;
    uint32_t e_first, e_count, has_bias, dense_expert;
    float alpha, limit;
    uint32_t out_offset;
} gemm_push;

enum { GEMM_UP, GEMM_DOWN };

/* One grouped or dense GEMM over one chunk of a weight stack. */
static void record_gemm(moevk_layer *L, mvk_cmd *c, const mvk_expert_set *set,
                        const mvk_chunk *ch, int which, bool dense, mvk_binding a,
                        mvk_binding out, uint32_t rows, uint32_t dense_expert,
                        uint32_t out_offset)
{
    const moevk_layer_desc *d = &L->desc;
    const uint32_t bm = gemm_bm(c->ctx);
    const bool up = which == GEMM_UP;
    const bool gated = up && L->gated;
    const uint32_t act = up ? (uint32_t)d->activation + 1u : 0u;
    uint32_t spec[MVK_GEMM_NSPEC];
    mvk_gemm_spec(c->ctx, d->weight_dtype, gated, act, !dense, !dense && up, spec);
    const uint32_t N = up ? set->ffn : d->hidden, K = up ? d->hidden : set->ffn;
    gemm_push p = {
        .M = rows, .N = N, .K = K, .E = d->num_experts,
        .e_first = ch->first, .e_count = ch->count,
        .has_bias = set->bias[0] != NULL,
        .dense_expert = dense_expert,
        .alpha = d->swiglu_alpha, .limit = d->swiglu_limit,
        .out_offset = out_offset,
    };
    moevk_buffer *b0 = up ? (gated ? ch->w[0] : ch->w[1]) : ch->w[2];
    moevk_buffer *b1 = gated ? ch->w[1] : b0;
    moevk_buffer *bias0 = set->bias[0] ? (up ? (gated ? set->bias[0] : set->bias[1]) : set->bias[2])
                                       : L->dummy;
    moevk_buffer *bias1 = set->bias[0] ? set->bias[1] : L->dummy;
    mvk_binding b[9] = {
        a, scratch(L, MVK_S_ROW_TOKEN), scratch(L, MVK_S_SCHEDULE), scratch(L, MVK_S_META),
        whole(b0), whole(b1), whole(bias0), whole(bias1), out,
    };
    if (dense) {
        mvk_cmd_dispatch(c, MVK_K_EXPERT_GEMM, spec, 8, b, 9, &p, sizeof(p), (rows + bm - 1) / bm,
                         (N + GEMM_BN - 1) / GEMM_BN, 1);
    } else {
        /* args: {tiles, N tiles, 1} written by the permute stage */
        uint64_t off = (3ull * d->num_experts + (up ? 2u : 5u)) * 4u;
        mvk_cmd_dispatch_indirect(c, MVK_K_EXPERT_GEMM, spec, 8, b, 9, &p, sizeof(p),
                                  L->s[MVK_S_META]->buffer, off);
    }
}

void mvk_record_router(moevk_layer *L, mvk_cmd *c, mvk_binding x, uint32_t T)
{
    const moevk_layer_desc *d = &L->desc;
    mvk_router_args a = {
        .x = x, .w = whole(L->router_w),
        .bias = L->router_b ? whole(L->router_b) : x,
        .logits = scratch(L, MVK_S_LOGITS),
        .T = T, .H = d->hidden, .E = d->num_experts,
        .has_bias = L->router_b != NULL, .w_dtype = (uint32_t)d->router_dtype,
    };
    mvk_record_router_logits(c, &a);
    if (L->shared_gate) {
        mvk_router_args g = a;
        g.w = whole(L->shared_gate);
        g.bias = x;
        g.has_bias = 0;
        g.E = d->num_shared;
        g.logits = scratch(L, MVK_S_SG_LOGITS);
        mvk_record_router_logits(c, &g);
    }
}

void mvk_record_route(moevk_layer *L, mvk_cmd *c, uint32_t T)
{
    const moevk_layer_desc *d = &L->desc;
    const uint32_t spec[3] = {ROUTE_WG, (uint32_t)d->routing, d->norm_topk_prob ? 1u : 0u};
    const uint32_t chunk = c->ctx->info.max_workgroup_count[0];
    mvk_binding b[5] = {
        scratch(L, MVK_S_LOGITS), L->corr_b ? whole(L->corr_b) : whole(L->dummy),
        scratch(L, MVK_S_IDS), scratch(L, MVK_S_WEIGHTS), scratch(L, MVK_S_TOKSTATS),
    };
    for (uint32_t t0 = 0; t0 < T; t0 += chunk) {
        struct { uint32_t T, E, K, n_group, topk_group, has_bias, tok0; float scale; } p = {
            T, d->num_experts, d->top_k, d->n_group, d->topk_group, L->corr_b != NULL, t0,
            d->routed_scaling_factor,
        };
        mvk_cmd_dispatch(c, MVK_K_ROUTE, spec, 3, b, 5, &p, sizeof(p),
                         MVK_MIN(chunk, T - t0), 1, 1);
    }
}

static uint32_t capacity(const moevk_layer_desc *d, uint32_t T)
{
    if (d->capacity_factor <= 0.0f)
        return UINT32_MAX;
    double c = (double)d->capacity_factor * T * d->top_k / d->num_experts;
    double cc = ceil(c);
    return cc >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)cc;
}

void mvk_record_permute(moevk_layer *L, mvk_cmd *c, uint32_t T)
{
    const moevk_layer_desc *d = &L->desc;
    const uint32_t A = T * d->top_k;
    const uint32_t ntiles = (A + MVK_PERMUTE_WG - 1) / MVK_PERMUTE_WG;
    const uint32_t bm = gemm_bm(c->ctx);
    struct { uint32_t T, K, E, capacity, ntiles, tile_m, n_up, n_down; } p = {
        T, d->top_k, d->num_experts, capacity(d, T), ntiles, bm,
        (d->ffn + GEMM_BN - 1) / GEMM_BN, (d->hidden + GEMM_BN - 1) / GEMM_BN,
    };
    mvk_binding b[8] = {
        scratch(L, MVK_S_IDS), scratch(L, MVK_S_TILE_RANK), scratch(L, MVK_S_TILE_COUNT),
        scratch(L, MVK_S_TILE_OFF), scratch(L, MVK_S_META), scratch(L, MVK_S_SCHEDULE),
        scratch(L, MVK_S_ROW_OF), scratch(L, MVK_S_ROW_TOKEN),
    };
    for (uint32_t pass = 0; pass < 3; pass++) {
        const uint32_t spec[2] = {MVK_PERMUTE_WG, pass};
        mvk_cmd_dispatch(c, MVK_K_PERMUTE, spec, 2, b, 8, &p, sizeof(p), pass == 1 ? 1 : ntiles,
                         1, 1);
        mvk_cmd_barrier(c);
    }
}

void mvk_record_combine(moevk_layer *L, mvk_cmd *c, mvk_binding y, uint32_t T, uint32_t K,
                        uint32_t n_shared)
{
    const moevk_layer_desc *d = &L->desc;
    const uint64_t n = (uint64_t)T * d->hidden;
    const uint32_t spec[1] = {ELEM_WG};
    mvk_binding b[6] = {
        scratch(L, MVK_S_O), scratch(L, MVK_S_ROW_OF), scratch(L, MVK_S_WEIGHTS),
        scratch(L, MVK_S_OS), scratch(L, MVK_S_SG_LOGITS), y,
    };
    const uint64_t per = (uint64_t)c->ctx->info.max_workgroup_count[0] * ELEM_WG;
    for (uint64_t e0 = 0; e0 < n; e0 += per) {
        uint64_t cnt = MVK_MIN(per, n - e0);
        struct { uint32_t T, H, K, n_shared, has_gate, elem0; } p = {
            T, d->hidden, K, n_shared, L->shared_gate != NULL, (uint32_t)e0,
        };
        mvk_cmd_dispatch(c, MVK_K_COMBINE, spec, 1, b, 6, &p, sizeof(p),
                         (uint32_t)((cnt + ELEM_WG - 1) / ELEM_WG), 1, 1);
    }
}

void mvk_record_stats(moevk_layer *L, mvk_cmd *c, uint32_t T)
{
    const moevk_layer_desc *d = &L->desc;
    struct { uint32_t T, E, K; } p = {T, d->num_experts, d->top_k};
    mvk_binding b[5] = {
        scratch(L, MVK_S_LOGITS), scratch(L, MVK_S_TOKSTATS), scratch(L, MVK_S_META),
        scratch(L, MVK_S_PE), scratch(L, MVK_S_STATS),
    };
    const uint32_t s0[2] = {STATS_WG, 0}, s1[2] = {STATS_WG, 1};
    mvk_cmd_dispatch(c, MVK_K_STATS, s0, 2, b, 5, &p, sizeof(p), d->num_experts, 1, 1);
    mvk_cmd_barrier(c);
    mvk_cmd_dispatch(c, MVK_K_STATS, s1, 2, b, 5, &p, sizeof(p), 1, 1, 1);
}

void mvk_record_experts(moevk_layer *L, mvk_cmd *c, mvk_binding xb, VkQueryPool ts, uint32_t *q)
{
    for (uint32_t i = 0; i < L->routed.nchunks; i++)
        record_gemm(L, c, &L->routed, &L->routed.chunks[i], GEMM_UP, false, xb,
                    scratch(L, MVK_S_H), 0, 0, 0);
    mvk_cmd_barrier(c);
    if (q)
        mvk_cmd_timestamp(c, ts, (*q)++);
    for (uint32_t i = 0; i < L->routed.nchunks; i++)
        record_gemm(L, c, &L->routed, &L->routed.chunks[i], GEMM_DOWN, false,
                    scratch(L, MVK_S_H), scratch(L, MVK_S_O), 0, 0, 0);
    mvk_cmd_barrier(c);
    if (q)
        mvk_cmd_timestamp(c, ts, (*q)++);
}

void mvk_record_shared(moevk_layer *L, mvk_cmd *c, mvk_binding xb, uint32_t T)
{
    const moevk_layer_desc *d = &L->desc;
    for (uint32_t s = 0; s < d->num_shared; s++) {
        const mvk_chunk *ch = NULL;
        for (uint32_t i = 0; i < L->shared.nchunks; i++)
            if (s >= L->shared.chunks[i].first &&
                s < L->shared.chunks[i].first + L->shared.chunks[i].count)
                ch = &L->shared.chunks[i];
        record_gemm(L, c, &L->shared, ch, GEMM_UP, true, xb, scratch(L, MVK_S_HS), T, s, 0);
        mvk_cmd_barrier(c);
        record_gemm(L, c, &L->shared, ch, GEMM_DOWN, true, scratch(L, MVK_S_HS),
                    scratch(L, MVK_S_OS), T, s, s * T * d->hidden);
        mvk_cmd_barrier(c);
    }
}

void mvk_layer_record_pass(moevk_layer *L, mvk_cmd *c, const moevk_tensor *x, moevk_tensor *y,
                           uint32_t T, VkQueryPool ts)
{
    const moevk_layer_desc *d = &L->desc;
    const mvk_binding xb = mvk_tensor_binding(x), yb = mvk_tensor_binding(y);
    uint32_t q = 0;

    mvk_cmd_reset_queries(c, ts, MOEVK_STAGE_COUNT + 1);
    mvk_cmd_barrier(c); /* the previous pass's use of the scratch */
    mvk_cmd_timestamp(c, ts, q++);

    mvk_record_router(L, c, xb, T);
    mvk_cmd_barrier(c);
    mvk_cmd_timestamp(c, ts, q++);

    mvk_record_route(L, c, T);
    mvk_cmd_barrier(c);
    mvk_cmd_timestamp(c, ts, q++);

    mvk_record_permute(L, c, T); /* ends with a barrier */
    mvk_cmd_timestamp(c, ts, q++);

    mvk_record_experts(L, c, xb, ts, &q);
    mvk_record_shared(L, c, xb, T);
    mvk_cmd_timestamp(c, ts, q++);

    mvk_record_combine(L, c, yb, T, d->top_k, d->num_shared);
    mvk_cmd_barrier(c);
    mvk_cmd_timestamp(c, ts, q++);

    mvk_record_stats(L, c, T);
    mvk_cmd_barrier(c);
    mvk_cmd_timestamp(c, ts, q++);
}

void mvk_layer_read_timestamps(moevk_layer *L)
{
    moevk_context *ctx = L->ctx;
    uint64_t t[MOEVK_STAGE_COUNT + 1];
    for (int i = 0; i < MOEVK_STAGE_COUNT; i++)
        L->stage_ms[i] = 0;
    if (!L->timestamps)
        return;
    VkResult r = ctx->vk.vkGetQueryPoolResults(ctx->device, L->timestamps, 0,
                                               MOEVK_STAGE_COUNT + 1, sizeof(t), t, sizeof(t[0]),
                                               VK_QUERY_RESULT_64_BIT);
    if (r != VK_SUCCESS)
        return;
    uint64_t mask = ctx->info.timestamp_valid_bits >= 64
                        ? ~0ull
                        : (1ull << ctx->info.timestamp_valid_bits) - 1;
    for (int i = 0; i < MOEVK_STAGE_COUNT; i++)
        L->stage_ms[i] = (double)((t[i + 1] - t[i]) & mask) * ctx->info.timestamp_period_ns * 1e-6;
}
