/*
 * Workspaces (workspace.h): the geometry of a pass, slot sizing, growth,
 * and the public workspace calls.
 */
#include <string.h>

#include "interface.h"
#include "layer.h"
#include "ops/ops.h"
#include "ref/ref.h"
#include "workspace.h"

static const char *const slot_names[MVK_WS_COUNT] = {
    [MVK_WS_IDS] = "routing ids [T, k]",
    [MVK_WS_WEIGHTS] = "routing weights [T, k]",
    [MVK_WS_TOKSTATS] = "token statistics [T, 3]",
    [MVK_WS_ROW_OF] = "rows [T, k]",
    [MVK_WS_TILE_RANK] = "tile ranks [T * k]",
    [MVK_WS_TILE_COUNT] = "tile counts",
    [MVK_WS_TILE_OFF] = "tile offsets",
    [MVK_WS_META] = "expert counts",
    [MVK_WS_SCHEDULE] = "tile schedule",
    [MVK_WS_ROW_TOKEN] = "row tokens [T * k]",
    [MVK_WS_STATS_PART] = "statistics partial sums",
    [MVK_WS_LOGITS] = "router logits",
    [MVK_WS_H] = "expert hidden activations",
    [MVK_WS_O] = "expert outputs",
    [MVK_WS_HS] = "shared hidden activations",
    [MVK_WS_XS] = "scaled expert inputs",
    [MVK_WS_OS] = "shared outputs",
    [MVK_WS_SG_LOGITS] = "shared gate logits",
    [MVK_WS_L_ROW_OF] = "chunk rows",
    [MVK_WS_L_ROW_TOKEN] = "chunk row tokens",
    [MVK_WS_L_TILE_RANK] = "chunk tile ranks",
    [MVK_WS_L_TILE_COUNT] = "chunk tile counts",
    [MVK_WS_L_TILE_OFF] = "chunk tile offsets",
    [MVK_WS_L_META] = "chunk expert counts",
    [MVK_WS_L_SCHEDULE] = "chunk tile schedule",
    [MVK_WS_XR] = "router input rows [T, H]",
    [MVK_WS_XE] = "expert input rows [T, H]",
    [MVK_WS_SINK] = "shared gates [T, n_shared]",
};

/* Bytes of the permute stage's buffers for A assignments of E experts. */
static void permute_sizes(const moevk_context *ctx, uint64_t A, uint32_t E, uint64_t *rank,
                          uint64_t *tiles, uint64_t *meta, uint64_t *schedule)
{
    uint32_t tile_len, ntiles;
    mvk_permute_geometry(A, E, mvk_max_range(ctx), &tile_len, &ntiles);
    *rank = A * 4;
    *tiles = (uint64_t)ntiles * E * 4;
    *meta = (uint64_t)MVK_META_WORDS(E) * 4;
    (void)ctx;
    *schedule = ((uint64_t)MVK_SCHEDULE_ENTRIES(A, E) + 1) * 8;
}

/* The most expert rows a pass of T tokens has: T k, or the C E of expert
 * choice (its E slots per token hold C E assignments in all). */
static uint64_t rows_of_pass(const moevk_layer_desc *d, uint32_t T)
{
    return moevk_ref_assignments(d, T);
}

/* Largest expert chunk whose buffers and grids fit; 0 when not one token.
 * A chunk of tc tokens has at most min(tc K, rows_of_pass) expert rows. */
static uint64_t max_expert_chunk(const moevk_layer *L, uint64_t range, uint32_t T)
{
    const moevk_layer_desc *d = &L->desc;
    const moevk_context *ctx = L->ctx;
    const uint64_t K = moevk_routing_slots(d), ns = d->num_shared, FS = ns ? d->shared_ffn : 0;
    const uint64_t row_bytes = MVK_MAX((uint64_t)d->ffn, (uint64_t)d->hidden) * 4;
    /* the activations of all the pass's rows fit: they bound no chunk */
    const bool rows_fit = rows_of_pass(d, T) * row_bytes <= range;
    uint64_t per = rows_fit ? 0 : K * row_bytes / 4;
    per = MVK_MAX(per, MVK_MAX(FS, ns * d->hidden));
    per = MVK_MAX(per, MVK_MAX(ns, K)) * 4;
    uint64_t tc = range / per;
    /* the chunk's schedule: one workgroup per row tile along x, the
     * skinny path's 8-row tiles the most numerous */
    uint64_t maxx = ctx->info.max_workgroup_count[0];
    uint64_t tiles = maxx > d->num_experts + 1 ? maxx - d->num_experts - 1 : 0;
    tc = MVK_MIN(tc, tiles * MVK_SKINNY_ROWS / K);
    return tc;
}

moevk_status mvk_pass_geometry_of(const moevk_layer *L, const moevk_workspace *ws, uint32_t T,
                                  mvk_pass_geometry *g)
{
    moevk_context *ctx = L->ctx;
    const moevk_layer_desc *d = &L->desc;
    const uint64_t E = d->num_experts, K = moevk_routing_slots(d), H = d->hidden, F = d->ffn;
    const uint64_t ns = d->num_shared, FS = ns ? d->shared_ffn : 0;
    const uint64_t range = mvk_max_range(ctx);
    const uint64_t A = (uint64_t)T * K;
    memset(g, 0, sizeof(*g));
    g->T = T;

    /* routing chunks: logits [Tr, E], Tr a multiple of the statistics block */
    uint64_t tr = range / (E * 4);
    if (tr < T) {
        tr -= tr % MVK_STATS_BLOCK;
        if (tr == 0)
            return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                            "%u router logits per %u tokens exceed the device's storage buffer "
                            "range of %llu bytes",
                            (unsigned)E, MVK_STATS_BLOCK, (unsigned long long)range);
    }
    g->route_chunk = (uint32_t)MVK_MIN(tr, (uint64_t)T);

    uint64_t tc = max_expert_chunk(L, range, T);
    if (ws->chunk_tokens)
        tc = MVK_MIN(tc, ws->chunk_tokens);
    if (tc == 0)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                        "one token's expert activations (k = %u x max(ffn = %u, hidden = %u) "
                        "floats) exceed the device's storage buffer range of %llu bytes",
                        (unsigned)K, d->ffn, d->hidden, (unsigned long long)range);
    g->expert_chunk = (uint32_t)MVK_MIN(tc, (uint64_t)T);
    g->nroute = (T + g->route_chunk - 1) / g->route_chunk;
    g->nexpert = (T + g->expert_chunk - 1) / g->expert_chunk;

    uint64_t *sz = g->size;
    const uint64_t tr_ = g->route_chunk, tc_ = g->expert_chunk, Ac = tc_ * K;
    const uint64_t rows = MVK_MIN(Ac, rows_of_pass(d, T)); /* a chunk's expert rows */
    sz[MVK_WS_IDS] = A * 4;
    sz[MVK_WS_WEIGHTS] = A * 4;
    sz[MVK_WS_TOKSTATS] = (uint64_t)T * 12;
    sz[MVK_WS_ROW_OF] = A * 4;
    permute_sizes(ctx, A, (uint32_t)E, &sz[MVK_WS_TILE_RANK], &sz[MVK_WS_TILE_COUNT],
                  &sz[MVK_WS_META], &sz[MVK_WS_SCHEDULE]);
    sz[MVK_WS_TILE_OFF] = sz[MVK_WS_TILE_COUNT];
    sz[MVK_WS_ROW_TOKEN] = A * 4;
    sz[MVK_WS_STATS_PART] = ((uint64_t)T + MVK_STATS_BLOCK - 1) / MVK_STATS_BLOCK * E * 4;
    sz[MVK_WS_LOGITS] = tr_ * E * 4;
    sz[MVK_WS_H] = rows * F * 4;
    sz[MVK_WS_O] = rows * H * 4;
    sz[MVK_WS_HS] = tc_ * FS * 4;
    sz[MVK_WS_OS] = ns * tc_ * H * 4;
    sz[MVK_WS_SG_LOGITS] = L->shared_gate ? tc_ * ns * 4 : 0;
    sz[MVK_WS_XS] = (d->flags & MOEVK_LAYER_WEIGHTS_ON_INPUT) ? rows * H * 4 : 0;
    sz[MVK_WS_XR] = mvk_layer_router_input(L) ? (uint64_t)T * H * 4 : 0;
    sz[MVK_WS_XE] = mvk_layer_expert_input(L) ? (uint64_t)T * H * 4 : 0;
    sz[MVK_WS_SINK] = d->shared_sink ? (uint64_t)T * ns * 4 : 0;
    if (g->nexpert > 1) {
        sz[MVK_WS_L_ROW_OF] = Ac * 4;
        sz[MVK_WS_L_ROW_TOKEN] = Ac * 4;
        permute_sizes(ctx, Ac, (uint32_t)E, &sz[MVK_WS_L_TILE_RANK], &sz[MVK_WS_L_TILE_COUNT],
                      &sz[MVK_WS_L_META], &sz[MVK_WS_L_SCHEDULE]);
        sz[MVK_WS_L_TILE_OFF] = sz[MVK_WS_L_TILE_COUNT];
    }
    for (int i = 0; i < MVK_WS_COUNT; i++)
        if (sz[i] > range)
            return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                            "%u tokens need %llu bytes of %s, beyond the device's storage "
                            "buffer range of %llu bytes; run fewer tokens per pass",
                            T, (unsigned long long)sz[i], slot_names[i],
                            (unsigned long long)range);
    return MOEVK_SUCCESS;
}

bool mvk_workspace_fits(const moevk_workspace *ws, const mvk_pass_geometry *g)
{
    for (int i = 0; i < MVK_WS_COUNT; i++)
        if (g->size[i] && (!ws->s[i] || moevk_buffer_size(ws->s[i]) < g->size[i]))
            return false;
    return true;
}

moevk_status mvk_workspace_fit(moevk_workspace *ws, const mvk_pass_geometry *g)
{
    if (mvk_workspace_fits(ws, g))
        return MOEVK_SUCCESS;
    moevk_context *ctx = ws->ctx;
    moevk_status st = mvk_wait_idle(ctx);
    if (st)
        return st;
    /* The descriptor sets of recorded passes name the buffers replaced. */
    mvk_desc_cache_clear(ctx, &ws->cache);
    for (int i = 0; i < MVK_WS_COUNT; i++) {
        if (!g->size[i] || (ws->s[i] && moevk_buffer_size(ws->s[i]) >= g->size[i]))
            continue;
        moevk_buffer *b = NULL;
        if ((st = moevk_buffer_create(ctx, g->size[i], &b)))
            return st; /* the slots grown so far stay: still a valid workspace */
        if (ws->s[i]) {
            ws->bytes -= moevk_buffer_size(ws->s[i]);
            moevk_buffer_destroy(ws->s[i]);
        }
        ws->s[i] = b;
        ws->bytes += g->size[i];
    }
    ws->last_layer = NULL; /* the last pass's routing is gone */
    return MOEVK_SUCCESS;
}

mvk_binding mvk_ws_binding(const moevk_workspace *ws, int slot)
{
    if (!ws->s[slot])
        return (mvk_binding){VK_NULL_HANDLE, 0, VK_WHOLE_SIZE};
    return (mvk_binding){ws->s[slot]->buffer, 0, VK_WHOLE_SIZE};
}

moevk_status mvk_workspace_timestamps(moevk_workspace *ws, uint32_t queries)
{
    moevk_context *ctx = ws->ctx;
    if (!ctx->info.timestamps || queries <= ws->query_count)
        return MOEVK_SUCCESS;
    moevk_status st = mvk_wait_idle(ctx);
    if (st)
        return st;
    if (ws->timestamps)
        ctx->vk.vkDestroyQueryPool(ctx->device, ws->timestamps, NULL);
    ws->timestamps = VK_NULL_HANDLE;
    ws->query_count = 0;
    VkQueryPoolCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
        .queryType = VK_QUERY_TYPE_TIMESTAMP,
        .queryCount = queries,
    };
    VkResult r = MVK_VK(ctx, ctx->vk.vkCreateQueryPool(ctx->device, &qci, NULL, &ws->timestamps));
    if (r != VK_SUCCESS) {
        ws->timestamps = VK_NULL_HANDLE;
        return mvk_vk_fail(ctx, r, "vkCreateQueryPool");
    }
    ws->query_count = queries;
    return MOEVK_SUCCESS;
}

/* ---- lifetime ---------------------------------------------------------------- */

static void workspace_free(moevk_workspace *ws)
{
    moevk_context *ctx = ws->ctx;
    mvk_wait_before_free(ctx);
    for (int i = 0; i < MVK_WS_COUNT; i++)
        moevk_buffer_destroy(ws->s[i]);
    mvk_desc_cache_clear(ctx, &ws->cache);
    if (ws->timestamps)
        ctx->vk.vkDestroyQueryPool(ctx->device, ws->timestamps, NULL);
    mvk_free(ctx, ws);
}

void mvk_workspace_ref(moevk_workspace *ws)
{
    ws->refs++;
}

void mvk_workspace_unref(moevk_workspace *ws)
{
    if (ws && --ws->refs == 0)
        workspace_free(ws);
}

static moevk_status workspace_create(moevk_context *ctx, const moevk_workspace_desc *desc,
                                     moevk_workspace **out)
{
    if (!out)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    moevk_workspace *ws = mvk_alloc(ctx, sizeof(*ws));
    if (!ws)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "workspace allocation");
    ws->ctx = ctx;
    ws->refs = 1;
    ws->chunk_tokens = desc ? desc->chunk_tokens : 0;
    *out = ws;
    return MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_workspace_create,
               (moevk_context *ctx, const moevk_workspace_desc *desc, moevk_workspace **out),
               ctx, workspace_create(ctx, desc, out))

void moevk_workspace_destroy(moevk_workspace *ws)
{
    if (!ws)
        return;
    moevk_context *ctx = ws->ctx;
    if (mvk_enter(ctx))
        return; /* another thread is inside a call: a misuse; nothing is touched */
    mvk_workspace_unref(ws);
    mvk_leave(ctx);
}

moevk_status mvk_context_workspace(moevk_context *ctx, moevk_workspace **out)
{
    if (!ctx->workspace) {
        moevk_status st = workspace_create(ctx, NULL, &ctx->workspace);
        if (st)
            return st;
    }
    *out = ctx->workspace;
    return MOEVK_SUCCESS;
}

static moevk_status workspace_reserve(moevk_workspace *ws, const moevk_layer *L, uint32_t T)
{
    moevk_context *ctx = ws->ctx;
    if (!L)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "layer is NULL");
    if (L->ctx != ctx)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "the layer belongs to another context than the workspace");
    if (T == 0)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "max_tokens is 0");
    if ((uint64_t)T * MVK_MAX(moevk_routing_slots(&L->desc), MOEVK_MAX_TOP_K) > UINT32_MAX)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED, "max_tokens = %u is too many", T);
    mvk_pass_geometry g;
    moevk_status st = mvk_pass_geometry_of(L, ws, T, &g);
    return st ? st : mvk_workspace_fit(ws, &g);
}

MVK_PUBLIC_CTX(moevk_workspace_reserve,
               (moevk_workspace *ws, const moevk_layer *layer, uint32_t max_tokens),
               ws ? ws->ctx : NULL, workspace_reserve(ws, layer, max_tokens))

uint64_t moevk_workspace_bytes(const moevk_workspace *ws)
{
    return ws ? ws->bytes : 0;
}
