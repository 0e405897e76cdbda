/*
 * Router stages as standalone ops: logits (x · Wr^T + b) and row scoring.
 */
#include "internal.h"
#include "kernels.h"
#include "ops.h"

#define DT_F32 (1u << MOEVK_DTYPE_F32)
#define DT_ANY ((1u << MOEVK_DTYPE_F32) | (1u << MOEVK_DTYPE_F16) | (1u << MOEVK_DTYPE_BF16))

#define ROUTER_WG 128u
#define ROUTER_TOKENS 4u /* TOKENS in router_logits.comp */
#define SCORES_WG 128u

/* Tokens per dispatch so that no grid dimension passes the device limit. */
static uint32_t token_chunk(const moevk_context *ctx, uint32_t tokens_per_group)
{
    uint64_t groups = MVK_MIN(ctx->info.max_workgroup_count[1], 65535u);
    return (uint32_t)MVK_MIN(groups * tokens_per_group, (uint64_t)UINT32_MAX);
}

void mvk_record_router_logits(mvk_cmd *c, const mvk_router_args *a)
{
    const uint32_t spec[2] = {ROUTER_WG, a->w_dtype};
    const uint32_t chunk = token_chunk(c->ctx, ROUTER_TOKENS);
    if (a->E > c->ctx->info.max_workgroup_count[0]) {
        if (!c->status)
            c->status = mvk_fail(c->ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                                 "router: E = %u exceeds the device's workgroup count", a->E);
        return;
    }
    for (uint32_t t0 = 0; t0 < a->T; t0 += chunk) {
        uint32_t n = MVK_MIN(chunk, a->T - t0);
        uint32_t push[5] = {a->T, a->H, a->E, a->has_bias, t0};
        mvk_binding b[4] = {a->x, a->w, a->has_bias ? a->bias : a->x, a->logits};
        mvk_cmd_dispatch(c, MVK_K_ROUTER_LOGITS, spec, 2, b, 4, push, sizeof(push), a->E,
                         (n + ROUTER_TOKENS - 1) / ROUTER_TOKENS, 1);
    }
}

void mvk_record_router_scores(mvk_cmd *c, mvk_binding logits, mvk_binding scores, uint32_t T,
                              uint32_t E, moevk_scoring scoring)
{
    const uint32_t spec[2] = {SCORES_WG, (uint32_t)scoring};
    const uint32_t chunk = c->ctx->info.max_workgroup_count[0];
    for (uint32_t t0 = 0; t0 < T; t0 += chunk) {
        uint32_t n = MVK_MIN(chunk, T - t0);
        uint32_t push[3] = {T, E, t0};
        mvk_binding b[2] = {logits, scores};
        mvk_cmd_dispatch(c, MVK_K_ROUTER_SCORES, spec, 2, b, 2, push, sizeof(push), n, 1, 1);
    }
}

moevk_status moevk_router_logits(moevk_context *ctx, const moevk_tensor *x, const moevk_tensor *w,
                                 const moevk_tensor *bias, moevk_tensor *logits)
{
    if (!ctx)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    mvk_clear_error(ctx);
    moevk_status st;
    if ((st = mvk_check_tensor(ctx, x, "x", DT_F32, 2)) ||
        (st = mvk_check_tensor(ctx, w, "w", DT_ANY, 2)) ||
        (st = mvk_check_tensor(ctx, logits, "logits", DT_F32, 2)))
        return st;
    if (bias && (st = mvk_check_tensor(ctx, bias, "bias", DT_F32, 1)))
        return st;
    uint64_t T = x->shape[0], H = x->shape[1], E = w->shape[0];
    if (w->shape[1] != H)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "w.shape[1] = %llu does not match x.shape[1] = %llu",
                        (unsigned long long)w->shape[1], (unsigned long long)H);
    if (E > MOEVK_MAX_EXPERTS)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "w.shape[0] = E = %llu exceeds %d",
                        (unsigned long long)E, MOEVK_MAX_EXPERTS);
    if (logits->shape[0] != T || logits->shape[1] != E)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "logits shape [%llu, %llu] is not [T, E] = [%llu, %llu]",
                        (unsigned long long)logits->shape[0], (unsigned long long)logits->shape[1],
                        (unsigned long long)T, (unsigned long long)E);
    if (bias && bias->shape[0] != E)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "bias.shape[0] = %llu, expected E = %llu",
                        (unsigned long long)bias->shape[0], (unsigned long long)E);
    if (T > UINT32_MAX || H > UINT32_MAX || T * H > UINT32_MAX || T * E > UINT32_MAX)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                        "router: T*H = %llu or T*E elements exceed 32-bit indexing",
                        (unsigned long long)(T * H));
    mvk_router_args a = {
        .x = mvk_tensor_binding(x),
        .w = mvk_tensor_binding(w),
        .bias = bias ? mvk_tensor_binding(bias) : (mvk_binding){0},
        .logits = mvk_tensor_binding(logits),
        .T = (uint32_t)T, .H = (uint32_t)H, .E = (uint32_t)E,
        .has_bias = bias != NULL,
        .w_dtype = (uint32_t)w->dtype,
    };
    mvk_cmd c;
    if ((st = mvk_cmd_begin(ctx, &c)))
        return st;
    mvk_cmd_barrier(&c);
    mvk_record_router_logits(&c, &a);
    mvk_cmd_barrier(&c);
    return mvk_cmd_submit_wait(&c);
}

moevk_status moevk_router_scores(moevk_context *ctx, const moevk_tensor *logits,
                                 moevk_scoring scoring, moevk_tensor *scores)
{
    if (!ctx)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    mvk_clear_error(ctx);
    moevk_status st;
    if ((st = mvk_check_tensor(ctx, logits, "logits", DT_F32, 2)) ||
        (st = mvk_check_tensor(ctx, scores, "scores", DT_F32, 2)))
        return st;
    if (scoring != MOEVK_SCORING_SOFTMAX && scoring != MOEVK_SCORING_SIGMOID)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "scoring %d is unknown", (int)scoring);
    uint64_t T = logits->shape[0], E = logits->shape[1];
    if (scores->shape[0] != T || scores->shape[1] != E)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "scores shape [%llu, %llu] differs from logits [%llu, %llu]",
                        (unsigned long long)scores->shape[0], (unsigned long long)scores->shape[1],
                        (unsigned long long)T, (unsigned long long)E);
    if (T * E > UINT32_MAX)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED, "scores: T*E exceeds 32-bit indexing");
    mvk_cmd c;
    if ((st = mvk_cmd_begin(ctx, &c)))
        return st;
    mvk_cmd_barrier(&c);
    mvk_record_router_scores(&c, mvk_tensor_binding(logits), mvk_tensor_binding(scores),
                             (uint32_t)T, (uint32_t)E, scoring);
    mvk_cmd_barrier(&c);
    return mvk_cmd_submit_wait(&c);
}
