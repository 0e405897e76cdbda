/*
 * Router op: logits = x · Wr^T (+ b), and row scoring (softmax or sigmoid);
 * plus the public standalone router calls.
 */
#include "ops.h"
#include "formats.h"
#include "kernels.h"

#define SCORES_WG 128u

void mvk_op_router_logits(mvk_cmd *c, const mvk_router_args *a)
{
    const moevk_context *ctx = c->ctx;
    if (a->E > ctx->info.max_workgroup_count[0]) {
        if (!c->status)
            c->status = mvk_fail(c->ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                                 "router: E = %u exceeds the device's workgroup count", a->E);
        return;
    }
    const uint32_t spec[MVK_ROUTER_NSPEC] = {MVK_ROUTER_WG, a->w_fmt};
    /* tokens per dispatch so that the grid's y stays within the limit */
    const uint64_t per = (uint64_t)MVK_MIN(ctx->info.max_workgroup_count[1], 65535u) *
                         MVK_ROUTER_TOKENS;
    mvk_binding b[MVK_ROUTER_BINDINGS];
    b[MVK_ROUTER_BIND_X] = a->x;
    b[MVK_ROUTER_BIND_W] = a->w;
    b[MVK_ROUTER_BIND_BIAS] = a->bias;
    b[MVK_ROUTER_BIND_LOGITS] = a->logits;
    for (uint64_t t0 = a->tok0; t0 < a->T; t0 += per) {
        uint32_t n = (uint32_t)MVK_MIN(per, a->T - t0);
        mvk_router_push p = {
            .T = a->T, .H = a->H, .E = a->E, .has_bias = a->bias.buffer != VK_NULL_HANDLE,
            .tok0 = (uint32_t)t0, .out_tok0 = a->out_tok0,
        };
        mvk_cmd_dispatch(c, MVK_K_ROUTER_LOGITS, spec, MVK_ROUTER_NSPEC, b, MVK_ROUTER_BINDINGS,
                         &p, sizeof(p), a->E, (n + MVK_ROUTER_TOKENS - 1) / MVK_ROUTER_TOKENS, 1);
    }
}

void mvk_op_router_scores(mvk_cmd *c, const mvk_scores_args *a)
{
    const uint32_t spec[MVK_SCORES_NSPEC] = {SCORES_WG, a->scoring};
    const uint32_t per = c->ctx->info.max_workgroup_count[0];
    mvk_binding b[MVK_SCORES_BINDINGS];
    b[MVK_SCORES_BIND_LOGITS] = a->logits;
    b[MVK_SCORES_BIND_SCORES] = a->scores;
    for (uint32_t t0 = 0; t0 < a->T; t0 += per) {
        uint32_t n = MVK_MIN(per, a->T - t0);
        mvk_scores_push p = {.T = a->T, .E = a->E, .tok0 = t0};
        mvk_cmd_dispatch(c, MVK_K_ROUTER_SCORES, spec, MVK_SCORES_NSPEC, b, MVK_SCORES_BINDINGS,
                         &p, sizeof(p), n, 1, 1);
    }
}

/* ---- public standalone calls ----------------------------------------------- */

#define DT_F32 (1u << MOEVK_DTYPE_F32)

static moevk_status router_logits(moevk_context *ctx, const moevk_tensor *x,
                                  const moevk_tensor *w, const moevk_tensor *bias,
                                  moevk_tensor *logits)
{
    moevk_status st;
    if ((st = mvk_check_tensor(ctx, x, "x", DT_F32, 2)) ||
        (st = mvk_check_tensor(ctx, w, "w", (uint32_t)mvk_formats_mask(MVK_FORMAT_ROUTER), 2)) ||
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
        .w_fmt = mvk_format_get(w->dtype)->shader_fmt,
    };
    mvk_cmd c;
    if ((st = mvk_cmd_begin(ctx, &c)))
        return st;
    mvk_cmd_barrier(&c);
    mvk_op_router_logits(&c, &a);
    mvk_cmd_barrier(&c);
    return mvk_cmd_submit_wait(&c);
}

MVK_PUBLIC_CTX(moevk_router_logits,
               (moevk_context *ctx, const moevk_tensor *x, const moevk_tensor *w,
                const moevk_tensor *bias, moevk_tensor *logits),
               ctx, router_logits(ctx, x, w, bias, logits))

static moevk_status router_scores(moevk_context *ctx, const moevk_tensor *logits,
                                  moevk_scoring scoring, moevk_tensor *scores)
{
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
    _Static_assert(MOEVK_SCORING_SOFTMAX == MVK_SCORING_SOFTMAX &&
                       MOEVK_SCORING_SIGMOID == MVK_SCORING_SIGMOID,
                   "moevk_scoring mirrors interface.h");
    mvk_scores_args a = {
        .logits = mvk_tensor_binding(logits), .scores = mvk_tensor_binding(scores),
        .T = (uint32_t)T, .E = (uint32_t)E, .scoring = (uint32_t)scoring,
    };
    mvk_cmd c;
    if ((st = mvk_cmd_begin(ctx, &c)))
        return st;
    mvk_cmd_barrier(&c);
    mvk_op_router_scores(&c, &a);
    mvk_cmd_barrier(&c);
    return mvk_cmd_submit_wait(&c);
}

MVK_PUBLIC_CTX(moevk_router_scores,
               (moevk_context *ctx, const moevk_tensor *logits, moevk_scoring scoring,
                moevk_tensor *scores),
               ctx, router_scores(ctx, logits, scoring, scores))
