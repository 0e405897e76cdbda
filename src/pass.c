/*
 * One forward pass, composed from the ops (src/ops/), in four phases:
 *
 *   1 routing, per routing chunk (one unless T x E logits exceed a buffer):
 *       router   logits = x Wr^T (+ b)
 *       route    per token: scores, top-k ids, weights; softmax statistics
 *       stats    per-block expert probability mass
 *     then, for expert choice, per expert over all T tokens: its C tokens
 *   2 permute over all T tokens: admission in priority order (capacity),
 *       rows, per-expert counts, the tile schedule and indirect arguments
 *   3 per expert chunk (one unless the activations exceed a buffer or the
 *       GEMM grid): a permute of the chunk's admitted assignments (several
 *       chunks only), grouped GEMM up (+ activation) and down per weight
 *       chunk, dispatched indirectly from the GPU-written schedule; the
 *       shared experts; combine y = sum_j w_j o[row_j] in slot order + gated
 *       shared outputs
 *   4 statistics: the losses and counts, into the layer's results
 *
 * A memory barrier separates dependent steps; nothing returns to the host.
 * Chunking changes no result: every token's logits, routing, expert rows
 * and combine are computed alone (a row's dot products run in the same
 * order wherever the row lies in a tile), admission is decided once over
 * all tokens, and the statistics' reductions are blocked by
 * MVK_STATS_BLOCK tokens, which chunks never split.
 */
#include <math.h>
#include <string.h>

#include "cache.h"
#include "ops/ops.h"
#include "pass.h"
#include "ref/ref.h"

static mvk_binding whole(const moevk_buffer *b)
{
    return (mvk_binding){b ? b->buffer : VK_NULL_HANDLE, 0, VK_WHOLE_SIZE};
}

/* A buffer from an offset on (an imported host chunk's pages start before
 * its data). */
static mvk_binding from(const moevk_buffer *b, uint64_t offset)
{
    return (mvk_binding){b ? b->buffer : VK_NULL_HANDLE, b ? offset : 0, VK_WHOLE_SIZE};
}

static mvk_binding or_slot(const moevk_workspace *ws, mvk_binding given, int slot)
{
    return given.buffer ? given : mvk_ws_binding(ws, slot);
}

/* ---- timestamps ----------------------------------------------------------------- */

uint32_t mvk_pass_queries(const mvk_pass_geometry *g)
{
    /* input norms; per routing chunk: router, route, stats; expert choice;
     * permute; per expert chunk: permute, up, down, shared, combine; stats */
    return 2u * (1u + 3u * g->nroute + 2u + 5u * g->nexpert + 1u);
}

static void timer_begin(mvk_cmd *c, mvk_pass_timer *tm)
{
    if (tm && tm->pool && tm->next + 2 <= tm->cap)
        mvk_cmd_timestamp(c, tm->pool, tm->next);
}

static void timer_end(mvk_cmd *c, mvk_pass_timer *tm, moevk_stage stage)
{
    if (tm && tm->pool && tm->next + 2 <= tm->cap) {
        mvk_cmd_timestamp(c, tm->pool, tm->next + 1);
        tm->stage_of_pair[tm->next / 2] = (uint8_t)stage;
        tm->next += 2;
    }
}

void mvk_pass_timer_read(moevk_context *ctx, const mvk_pass_timer *tm,
                         double ms[MOEVK_STAGE_COUNT])
{
    for (int i = 0; i < MOEVK_STAGE_COUNT; i++)
        ms[i] = 0;
    if (!tm->pool || !tm->next)
        return;
    uint64_t t[2];
    uint64_t mask = ctx->info.timestamp_valid_bits >= 64
                        ? ~0ull
                        : (1ull << ctx->info.timestamp_valid_bits) - 1;
    for (uint32_t q = 0; q < tm->next; q += 2) {
        VkResult r = ctx->vk.vkGetQueryPoolResults(ctx->device, tm->pool, q, 2, sizeof(t), t,
                                                   sizeof(t[0]), VK_QUERY_RESULT_64_BIT);
        if (r != VK_SUCCESS)
            return;
        ms[tm->stage_of_pair[q / 2]] +=
            (double)((t[1] - t[0]) & mask) * ctx->info.timestamp_period_ns * 1e-6;
    }
}

/* ---- phases ---------------------------------------------------------------------- */

/* The permutation's capacity: moevk_ref_capacity (none for expert choice,
 * whose experts took at most C tokens each) */
static uint32_t capacity_of(const moevk_layer_desc *d, uint32_t T)
{
    return moevk_ref_capacity(d, T);
}

static void phase_route(moevk_layer *L, mvk_cmd *c, const mvk_pass_geometry *g,
                        const mvk_pass_io *io, mvk_pass_timer *tm)
{
    const moevk_layer_desc *d = &L->desc;
    const moevk_workspace *ws = L->ws;
    const mvk_binding logits = mvk_ws_binding(ws, MVK_WS_LOGITS);
    const mvk_stats_args sa = {
        .logits = logits, .tokstats = mvk_ws_binding(ws, MVK_WS_TOKSTATS),
        .meta = mvk_ws_binding(ws, MVK_WS_META), .part = mvk_ws_binding(ws, MVK_WS_STATS_PART),
        .results = whole(L->results), .T = g->T, .E = d->num_experts,
        .assignments = (uint32_t)moevk_ref_assignments(d, g->T),
    };
    /* a small pass computes its logits in the route dispatch (same bits) */
    const bool fused = g->T <= MVK_ROUTE_FUSED_MAX_TOKENS;
    for (uint32_t t0 = 0; t0 < g->T; t0 += g->route_chunk) {
        const uint32_t t1 = (uint32_t)MVK_MIN((uint64_t)t0 + g->route_chunk, (uint64_t)g->T);
        if (!fused) {
            timer_begin(c, tm);
            mvk_router_args ra = {
                .x = io->x, .w = whole(L->router_w), .bias = whole(L->router_b),
                .logits = logits, .tok0 = t0, .T = t1, .out_tok0 = t0, .H = d->hidden,
                .E = d->num_experts, .w_fmt = L->r_fmt,
            };
            mvk_op_router_logits(c, &ra);
            mvk_cmd_barrier(c);
            timer_end(c, tm, MOEVK_STAGE_ROUTER);
        }
        timer_begin(c, tm);
        const bool sink = d->shared_sink != 0;
        if (sink) {
            /* shared_sink: the shared gates' logits, from the router's
             * input, at the tokens' global rows */
            mvk_router_args ra = {
                .x = io->x, .w = whole(L->shared_gate), .logits = mvk_ws_binding(ws, MVK_WS_SINK),
                .tok0 = t0, .T = t1, .out_tok0 = 0, .H = d->hidden, .E = d->num_shared,
                .w_fmt = L->r_fmt,
            };
            mvk_op_router_logits(c, &ra);
            mvk_cmd_barrier(c);
        }
        mvk_route_args ro = {
            .logits = logits, .corr_bias = whole(L->corr_b),
            .ids = or_slot(ws, io->ids, MVK_WS_IDS),
            .weights = or_slot(ws, io->weights, MVK_WS_WEIGHTS),
            .tokstats = mvk_ws_binding(ws, MVK_WS_TOKSTATS),
            .tok0 = t0, .T = t1, .logit_tok0 = t0, .E = d->num_experts,
            .K = moevk_routing_slots(d),
            .routing = (uint32_t)d->routing, .norm = d->norm_topk_prob != 0,
            .n_group = d->n_group, .topk_group = d->topk_group,
            .scale = d->routed_scaling_factor,
            /* moevk_ref_selects_on_probs (the layer's desc no longer holds
             * the host bias pointer) */
            .sel_probs = d->routing == MOEVK_ROUTING_SOFTMAX_TOPK && !d->select_on_logits &&
                         (L->corr_b || moevk_ref_grouped(d)),
            .group_max = d->group_score == MOEVK_GROUP_MAX, .norm_p = d->norm_p,
            .norm_min = d->norm_min, .norm_eps = d->norm_eps,
            .softcap = d->router_softcap, .sel_logits = d->select_on_logits != 0,
            .jitter_eps = d->jitter_eps, .score_fn = (uint32_t)d->score_fn,
            .fused = fused, .x = io->x, .router_w = whole(L->router_w),
            .router_b = whole(L->router_b), .H = d->hidden, .w_fmt = L->r_fmt,
            .expert_scale = whole(L->ew_s),
            .sink = sink ? mvk_ws_binding(ws, MVK_WS_SINK) : (mvk_binding){0},
            .n_sink = sink ? d->num_shared : 0,
        };
        mvk_op_route(c, &ro);
        mvk_cmd_barrier(c);
        timer_end(c, tm, MOEVK_STAGE_ROUTE);
        if (io->stats) {
            timer_begin(c, tm);
            mvk_op_stats_partial(c, &sa, t0, t1, t0);
            mvk_cmd_barrier(c); /* before the next chunk's logits */
            timer_end(c, tm, MOEVK_STAGE_STATS);
        }
    }
    if (d->routing == MOEVK_ROUTING_EXPERT_CHOICE && !io->no_choice) {
        /* every token's p is there: each expert takes its tokens */
        timer_begin(c, tm);
        mvk_ec_args ea = {
            .ids = or_slot(ws, io->ids, MVK_WS_IDS),
            .weights = or_slot(ws, io->weights, MVK_WS_WEIGHTS), .T = g->T,
            .E = d->num_experts, .C = moevk_ref_expert_choice_capacity(d, g->T),
            .scale = d->routed_scaling_factor,
        };
        mvk_op_expert_choice(c, &ea);
        mvk_cmd_barrier(c);
        timer_end(c, tm, MOEVK_STAGE_ROUTE);
    }
}

/* The permute of the given assignments into the given slots. */
static void permute_into(moevk_layer *L, mvk_cmd *c, uint32_t T, uint32_t tok0, bool masked,
                         mvk_binding ids, mvk_binding mask, mvk_binding row_of, const int *slot,
                         uint32_t capacity)
{
    const moevk_layer_desc *d = &L->desc;
    const moevk_workspace *ws = L->ws;
    mvk_permute_args pa = {
        .ids = ids, .tile_rank = mvk_ws_binding(ws, slot[0]),
        .tile_count = mvk_ws_binding(ws, slot[1]), .tile_off = mvk_ws_binding(ws, slot[2]),
        .meta = mvk_ws_binding(ws, slot[3]), .schedule = mvk_ws_binding(ws, slot[4]),
        .row_of = row_of, .row_token = mvk_ws_binding(ws, slot[5]), .mask = mask,
        .T = T, .K = moevk_routing_slots(d), .E = d->num_experts, .tok0 = tok0,
        .capacity = capacity,
        .ffn = d->ffn, .hidden = d->hidden, .masked = masked,
        .n_ffn = moevk_ref_ffn_experts(d),
    };
    mvk_op_permute(c, &pa); /* ends with a barrier */
}

static const int global_slots[6] = {MVK_WS_TILE_RANK, MVK_WS_TILE_COUNT, MVK_WS_TILE_OFF,
                                    MVK_WS_META, MVK_WS_SCHEDULE, MVK_WS_ROW_TOKEN};
static const int local_slots[6] = {MVK_WS_L_TILE_RANK, MVK_WS_L_TILE_COUNT, MVK_WS_L_TILE_OFF,
                                   MVK_WS_L_META, MVK_WS_L_SCHEDULE, MVK_WS_L_ROW_TOKEN};

/* Where an expert chunk's rows, schedule and counts are. */
typedef struct chunk_rows {
    mvk_binding row_of, row_token, schedule, meta;
    VkBuffer meta_buffer;
} chunk_rows;

/* The up projection's activation (MVK_ACT_*) and its two parameters for the
 * routed or the shared experts: swiglu_alpha and the limit, or the soft
 * caps of swiglu_softcap (the desc's defaults already applied). */
static void act_push(const moevk_layer_desc *d, bool shared, uint32_t *act, float *alpha,
                     float *limit)
{
    const bool own = shared && (d->flags & MOEVK_LAYER_SHARED_ACTIVATION);
    const moevk_activation a = own ? d->shared_activation : d->activation;
    *act = (uint32_t)a + 1u;
    *alpha = d->swiglu_alpha;
    *limit = own ? d->shared_swiglu_limit : d->swiglu_limit;
    if (a == MOEVK_ACT_SWIGLU_SOFTCAP) {
        *alpha = d->softcap_gate;
        *limit = d->softcap_up;
    }
}

static void experts_chunk(moevk_layer *L, mvk_cmd *c, const mvk_pass_io *io,
                          const chunk_rows *cr, mvk_binding o, uint32_t tokens,
                          mvk_pass_timer *tm)
{
    const moevk_layer_desc *d = &L->desc;
    const mvk_expert_set *set = &L->routed;
    const uint32_t E = d->num_experts;
    const mvk_binding h = mvk_ws_binding(L->ws, MVK_WS_H);
    /* weights on the input: the up projection reads the scaled rows xs in
     * row order (scaled just before, from this chunk's rows) */
    const bool scaled = (d->flags & MOEVK_LAYER_WEIGHTS_ON_INPUT) != 0;
    const mvk_binding xin = scaled ? mvk_ws_binding(L->ws, MVK_WS_XS) : io->x;
    mvk_cmd_barrier_transfers(c); /* the expert cache's copies and tables */
    uint32_t act;
    float alpha, limit;
    act_push(d, false, &act, &alpha, &limit);
    for (int down = 0; down < 2; down++) {
        timer_begin(c, tm);
        for (uint32_t i = 0; i < set->nchunks; i++) {
            const mvk_chunk *ch = &set->chunks[i];
            const bool gated = !down && L->gated;
            mvk_gemm_args ga = {
                .a = down ? h : xin, .row_token = cr->row_token, .schedule = cr->schedule,
                .meta = cr->meta,
                .w0 = from(down ? ch->w[2] : (gated ? ch->w[0] : ch->w[1]),
                           ch->off[down ? 2 : gated ? 0 : 1]),
                .w1 = from(gated ? ch->w[1] : NULL, ch->off[1]),
                .bias0 = whole(down ? set->bias[2] : (gated ? set->bias[0] : set->bias[1])),
                .bias1 = whole(gated ? set->bias[1] : NULL),
                .out = down ? o : h,
                .perm = whole(down ? NULL : set->input_perm),
                .permuted = !down && set->input_perm,
                .N = down ? d->hidden : set->ffn, .K = down ? set->ffn : d->hidden, .E = E,
                .e_first = ch->first, .e_count = ch->count,
                /* the cache's tables cover the FFN experts */
                .slots = whole(set->table), .slot_base = i * moevk_ref_ffn_experts(d),
                .has_table = set->table != NULL,
                .alpha = alpha, .limit = limit,
                .w_fmt = set->w_fmt[down], .act = down ? MVK_ACT_NONE : act,
                .gated = gated, .has_bias = set->bias[0] != NULL,
                .batch_invariant = (d->flags & MOEVK_LAYER_BATCH_INVARIANT) != 0,
                .scheduled = true, .gather = !down && !scaled,
                .max_rows = tokens, /* an expert has at most one row per token */
                .args = cr->meta_buffer,
                .args_offset = 4ull * MVK_META_ARGS(E, 0, down ? 1u : 0u),
            };
            mvk_op_expert_gemm(c, &ga);
        }
        mvk_cmd_barrier(c);
        timer_end(c, tm, down ? MOEVK_STAGE_EXPERTS_DOWN : MOEVK_STAGE_EXPERTS_UP);
    }
}

/* The shared experts of tokens t0 .. t0 + n - 1 into OS [n_shared, n, H]
 * (and their gate logits into SG). */
static void shared_chunk(moevk_layer *L, mvk_cmd *c, const mvk_pass_io *io, uint32_t t0,
                         uint32_t n, mvk_pass_timer *tm)
{
    const moevk_layer_desc *d = &L->desc;
    const moevk_workspace *ws = L->ws;
    const mvk_expert_set *set = &L->shared;
    timer_begin(c, tm);
    uint32_t act;
    float alpha, limit;
    act_push(d, true, &act, &alpha, &limit);
    if (L->shared_gate && !d->shared_sink) { /* (a sink's gates come from route) */
        mvk_router_args ra = {
            .x = io->x, .w = whole(L->shared_gate), .logits = mvk_ws_binding(ws, MVK_WS_SG_LOGITS),
            .tok0 = t0, .T = t0 + n, .out_tok0 = t0, .H = d->hidden, .E = d->num_shared,
            .w_fmt = L->r_fmt,
        };
        mvk_op_router_logits(c, &ra);
    }
    for (uint32_t s = 0; s < d->num_shared; s++) {
        const mvk_chunk *ch = NULL;
        for (uint32_t i = 0; i < set->nchunks; i++)
            if (s >= set->chunks[i].first && s < set->chunks[i].first + set->chunks[i].count)
                ch = &set->chunks[i];
        for (int down = 0; down < 2; down++) {
            const bool gated = !down && L->gated;
            mvk_gemm_args ga = {
                .a = down ? mvk_ws_binding(ws, MVK_WS_HS) : io->x,
                .w0 = whole(down ? ch->w[2] : (gated ? ch->w[0] : ch->w[1])),
                .w1 = whole(gated ? ch->w[1] : NULL),
                .bias0 = whole(down ? set->bias[2] : (gated ? set->bias[0] : set->bias[1])),
                .bias1 = whole(gated ? set->bias[1] : NULL),
                .out = mvk_ws_binding(ws, down ? MVK_WS_OS : MVK_WS_HS),
                .perm = whole(down ? NULL : set->input_perm),
                .permuted = !down && set->input_perm,
                .M = n, .N = down ? d->hidden : set->ffn, .K = down ? set->ffn : d->hidden,
                .E = d->num_shared, .e_first = ch->first, .e_count = ch->count,
                .dense_expert = s, .a_row0 = down ? 0 : t0,
                .out_offset = down ? s * n * d->hidden : 0,
                .alpha = alpha, .limit = limit,
                .w_fmt = set->w_fmt[down], .act = down ? MVK_ACT_NONE : act,
                .gated = gated, .has_bias = set->bias[0] != NULL,
                .batch_invariant = (d->flags & MOEVK_LAYER_BATCH_INVARIANT) != 0,
            };
            mvk_op_expert_gemm(c, &ga);
            mvk_cmd_barrier(c);
        }
    }
    timer_end(c, tm, MOEVK_STAGE_SHARED);
}

void mvk_pass_record(moevk_layer *L, mvk_cmd *c, const mvk_pass_geometry *g,
                     const mvk_pass_io *io, mvk_pass_timer *tm)
{
    const moevk_layer_desc *d = &L->desc;
    moevk_workspace *ws = L->ws;
    c->dispatches = c->barriers = 0; /* counted for moevk_layer_pass_info */
    if (tm && tm->pool)
        mvk_cmd_reset_queries(c, tm->pool, tm->cap);
    mvk_cmd_barrier(c); /* the previous pass's use of the workspace */
    if (io->experts && L->cache)
        mvk_cache_record(L, c); /* tables; this pass's promotions (copied after its experts) */

    /* the input norms: the router and the experts read their own rows */
    mvk_pass_io rio = *io, eio = *io;
    /* shared_sink without the routing stage (the shared experts on their
     * own, moevk_layer_combine_shared): the shared gates need the token's
     * routing, computed again into the workspace's slots (the caller's ids
     * and weights untouched), from the router's own input rows */
    const bool sink_route = !io->route && io->shared && d->shared_sink;
    const bool rn = (io->route || sink_route) && mvk_layer_router_input(L);
    const bool en = (io->experts || io->shared) && mvk_layer_expert_input(L);
    if (rn || en) {
        timer_begin(c, tm);
        mvk_norm_args na = {
            .x = io->x, .rscale = whole(L->rin_s), .eweight = whole(L->ein_w),
            .xr = rn ? mvk_ws_binding(ws, MVK_WS_XR) : (mvk_binding){0},
            .xe = en ? mvk_ws_binding(ws, MVK_WS_XE) : (mvk_binding){0}, .T = g->T,
            .H = d->hidden, .r_eps = d->router_norm_eps, .r_factor = d->router_input_factor,
            .e_eps = d->expert_norm_eps,
        };
        mvk_op_input_norm(c, &na);
        mvk_cmd_barrier(c);
        timer_end(c, tm, rn ? MOEVK_STAGE_ROUTER : MOEVK_STAGE_EXPERTS_UP);
        if (rn)
            rio.x = na.xr;
        if (en)
            eio.x = na.xe;
    }
    io = &eio; /* the experts' side from here */

    if (rio.route) {
        phase_route(L, c, g, &rio, tm);
    } else if (sink_route) {
        mvk_pass_io sio = rio;
        sio.route = true;
        sio.stats = false;
        sio.no_choice = false;
        sio.ids = sio.weights = (mvk_binding){0};
        phase_route(L, c, g, &sio, tm);
    }

    const mvk_binding ids = or_slot(ws, io->ids, MVK_WS_IDS);
    const mvk_binding row_of = or_slot(ws, io->row_of, MVK_WS_ROW_OF);
    if (io->permute) {
        timer_begin(c, tm);
        permute_into(L, c, g->T, 0, false, ids, (mvk_binding){0}, row_of, global_slots,
                     capacity_of(d, g->T));
        timer_end(c, tm, MOEVK_STAGE_PERMUTE);
    }

    if (io->experts || io->shared || io->combine) {
        const bool chunked = g->nexpert > 1;
        for (uint32_t t0 = 0; t0 < g->T; t0 += g->expert_chunk) {
            const uint32_t n = (uint32_t)MVK_MIN((uint64_t)g->expert_chunk, (uint64_t)g->T - t0);
            chunk_rows cr = {
                .row_of = row_of, .row_token = mvk_ws_binding(ws, MVK_WS_ROW_TOKEN),
                .schedule = mvk_ws_binding(ws, MVK_WS_SCHEDULE),
                .meta = mvk_ws_binding(ws, MVK_WS_META),
                .meta_buffer = ws->s[MVK_WS_META] ? ws->s[MVK_WS_META]->buffer : VK_NULL_HANDLE,
            };
            if (chunked && (io->experts || io->combine)) {
                cr.row_of = mvk_ws_binding(ws, MVK_WS_L_ROW_OF);
                cr.row_token = mvk_ws_binding(ws, MVK_WS_L_ROW_TOKEN);
                cr.schedule = mvk_ws_binding(ws, MVK_WS_L_SCHEDULE);
                cr.meta = mvk_ws_binding(ws, MVK_WS_L_META);
                cr.meta_buffer = ws->s[MVK_WS_L_META]->buffer;
                timer_begin(c, tm);
                permute_into(L, c, n, t0, true, ids, row_of, cr.row_of, local_slots, UINT32_MAX);
                timer_end(c, tm, MOEVK_STAGE_PERMUTE);
            }
            const mvk_binding o = or_slot(ws, io->expert_out, MVK_WS_O);
            if (io->experts && (d->flags & MOEVK_LAYER_WEIGHTS_ON_INPUT)) {
                mvk_scale_args sa = {
                    .x = io->x, .row_of = cr.row_of,
                    .weights = or_slot(ws, io->weights, MVK_WS_WEIGHTS),
                    .xs = mvk_ws_binding(ws, MVK_WS_XS), .tok0 = t0, .T = n, .H = d->hidden,
                    .K = moevk_routing_slots(d),
                };
                mvk_op_scale_rows(c, &sa);
                mvk_cmd_barrier(c);
            }
            if (io->experts && d->num_zero_experts) {
                /* the identity experts' rows of o: x (or w x on the input) */
                mvk_scale_args sa = {
                    .x = io->x, .row_of = cr.row_of,
                    .weights = or_slot(ws, io->weights, MVK_WS_WEIGHTS), .xs = o, .ids = ids,
                    .tok0 = t0, .T = n, .H = d->hidden, .K = moevk_routing_slots(d),
                    .id_first = moevk_ref_ffn_experts(d),
                    .unit = !(d->flags & MOEVK_LAYER_WEIGHTS_ON_INPUT),
                };
                mvk_op_scale_rows(c, &sa);
                mvk_cmd_barrier(c);
            }
            if (io->experts)
                experts_chunk(L, c, io, &cr, o, n, tm);
            if (io->experts && L->cache && t0 + n >= g->T)
                mvk_cache_record_copies(L, c); /* after the last expert stage */
            if (io->shared && d->num_shared)
                shared_chunk(L, c, io, t0, n, tm);
            if (io->combine) {
                timer_begin(c, tm);
                mvk_combine_args ca = {
                    .o = o, .row_of = cr.row_of,
                    .weights = or_slot(ws, io->weights, MVK_WS_WEIGHTS),
                    .shared_out = mvk_ws_binding(ws, MVK_WS_OS),
                    .shared_gate = mvk_ws_binding(ws, d->shared_sink ? MVK_WS_SINK
                                                                     : MVK_WS_SG_LOGITS),
                    .y = io->y,
                    .tok0 = t0, .T = n, .H = d->hidden, .K = io->experts || io->routed_given ? moevk_routing_slots(d) : 0,
                    .n_shared = io->shared ? d->num_shared : 0,
                    .gate_mode = !io->shared || !L->shared_gate ? MVK_GATE_NONE
                                 : d->shared_sink                 ? MVK_GATE_FINAL
                                                                  : MVK_GATE_LOGITS,
                    .unit_weights = (d->flags & MOEVK_LAYER_WEIGHTS_ON_INPUT) != 0,
                    /* the output bias goes with the routed part (the shared
                     * experts' stage leaves it to moevk_layer_combine) */
                    .shared_scale = d->shared_scale,
                    .out_bias = io->experts || io->routed_given ? whole(L->out_b)
                                                               : (mvk_binding){0},
                    .renorm_eps = d->drop_renorm_eps,
                    .renorm_scale = d->routed_scaling_factor != 0.0f ? d->routed_scaling_factor
                                                                     : 1.0f,
                };
                mvk_op_combine(c, &ca);
                mvk_cmd_barrier(c);
                timer_end(c, tm, MOEVK_STAGE_COMBINE);
            }
        }
    }

    if (io->stats) {
        timer_begin(c, tm);
        mvk_stats_args sa = {
            .logits = mvk_ws_binding(ws, MVK_WS_LOGITS),
            .tokstats = mvk_ws_binding(ws, MVK_WS_TOKSTATS),
            .meta = mvk_ws_binding(ws, MVK_WS_META),
            .part = mvk_ws_binding(ws, MVK_WS_STATS_PART), .results = whole(L->results),
            .T = g->T, .E = d->num_experts,
            .assignments = (uint32_t)moevk_ref_assignments(d, g->T),
        };
        mvk_op_stats_final(c, &sa);
        mvk_cmd_barrier(c);
        timer_end(c, tm, MOEVK_STAGE_STATS);
    }
    if (io->cache_counts && L->cache && io->permute)
        mvk_cache_record_counts(L, c, ws->s[MVK_WS_META]->buffer,
                                4ull * MVK_META_COUNTS(d->num_experts));
    ws->last_layer = L;
    ws->last_tokens = g->T;
    L->last_route_chunks = io->route ? g->nroute : 0;
    L->last_expert_chunks = g->nexpert;
    L->last_expert_chunk_tokens = g->expert_chunk;
    L->last_fused_route = io->route && g->T <= MVK_ROUTE_FUSED_MAX_TOKENS;
    L->last_dispatches = c->dispatches;
    L->last_barriers = c->barriers;
    L->last_force_path = c->ctx->testing_force_path;
}
