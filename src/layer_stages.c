/*
 * The stages of the forward pass as standalone synchronous calls on caller
 * tensors: the same pass recorder (src/pass.c) with the caller's tensors
 * standing in for workspace slots, or one op on caller tensors.
 */
#include <string.h>

#include "ops/ops.h"
#include "pass.h"

#define DT(x) (1u << MOEVK_DTYPE_##x)

static moevk_status check_shape2(moevk_context *ctx, const moevk_tensor *t, const char *name,
                                 moevk_dtype dt, uint64_t rows, uint64_t cols)
{
    moevk_status st = mvk_check_tensor(ctx, t, name, 1u << dt, cols ? 2 : 1);
    if (st)
        return st;
    if (t->shape[0] != rows || (cols && t->shape[1] != cols))
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "%s has shape [%llu, %llu], expected [%llu, %llu]", name,
                        (unsigned long long)t->shape[0],
                        (unsigned long long)(cols ? t->shape[1] : 0), (unsigned long long)rows,
                        (unsigned long long)cols);
    return MOEVK_SUCCESS;
}

/* T from the first dimension of a 2-D tensor (of dtype bit mask `dt`). */
static moevk_status tokens_of(moevk_layer *L, const moevk_tensor *t, const char *name,
                              uint32_t dt, uint32_t *T)
{
    moevk_status st = mvk_check_tensor(L->ctx, t, name, dt, 2);
    return st ? st : mvk_tokens_of(L->ctx, t, name, T);
}

/* T from x [T, H] (f32). */
static moevk_status tokens_of_x(moevk_layer *L, const moevk_tensor *x, uint32_t *T)
{
    moevk_status st = tokens_of(L, x, "x", DT(F32), T);
    if (!st && x->shape[1] != L->desc.hidden)
        return mvk_fail(L->ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "x.shape[1] = %llu differs from the layer's hidden = %u",
                        (unsigned long long)x->shape[1], L->desc.hidden);
    return st;
}

/* Caller routing ids are untrusted: range and uniqueness per token. */
static moevk_status check_ids(moevk_layer *L, const moevk_tensor *ids, uint32_t T)
{
    moevk_context *ctx = L->ctx;
    const uint32_t K = moevk_routing_slots(&L->desc), E = L->desc.num_experts;
    moevk_status st = check_shape2(ctx, ids, "ids", MOEVK_DTYPE_I32, T, K);
    if (st)
        return st;
    int32_t *h = mvk_alloc(ctx, (size_t)T * K * 4);
    if (!h)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "ids check");
    st = moevk_tensor_download(ids, h);
    const bool ec = L->desc.routing == MOEVK_ROUTING_EXPERT_CHOICE;
    for (uint32_t t = 0; !st && t < T; t++)
        for (uint32_t j = 0; !st && j < K; j++) {
            int32_t v = h[t * K + j];
            /* expert choice: slot j holds expert j or nothing (-1) */
            if (ec && v != (int32_t)j && v != -1)
                st = mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                              "ids[%u, %u] = %d: under expert choice slot %u holds expert %u "
                              "or -1",
                              t, j, v, j, j);
            else if (ec)
                continue;
            else if (v < 0 || (uint32_t)v >= E)
                st = mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                              "ids[%u, %u] = %d is not an expert index in 0..%u", t, j, v, E - 1);
            for (uint32_t i = 0; !st && i < j; i++)
                if (h[t * K + i] == v)
                    st = mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                                  "ids[%u, %u] = %d repeats ids[%u, %u]", t, j, v, t, i);
        }
    mvk_free(ctx, h);
    return st;
}

static moevk_status check_rows(moevk_layer *L, const moevk_tensor *row_of, uint32_t T)
{
    moevk_context *ctx = L->ctx;
    const uint32_t K = moevk_routing_slots(&L->desc);
    moevk_status st = check_shape2(ctx, row_of, "row_of", MOEVK_DTYPE_I32, T, K);
    if (st)
        return st;
    int32_t *h = mvk_alloc(ctx, (size_t)T * K * 4);
    if (!h)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "row_of check");
    st = moevk_tensor_download(row_of, h);
    for (uint64_t i = 0; !st && i < (uint64_t)T * K; i++)
        if (h[i] < -1 || h[i] >= (int64_t)T * K)
            st = mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                          "row_of[%llu, %llu] = %d is neither -1 nor a row in 0..%llu",
                          (unsigned long long)(i / K), (unsigned long long)(i % K), h[i],
                          (unsigned long long)T * K - 1);
    mvk_free(ctx, h);
    return st;
}

/* Record the parts of a pass that io names, on T tokens, and run it. */
static moevk_status run_parts(moevk_layer *L, uint32_t T, const mvk_pass_io *io,
                              bool one_chunk)
{
    moevk_context *ctx = L->ctx;
    mvk_pass_geometry g;
    moevk_status st;
    if ((st = mvk_pass_geometry_of(L, L->ws, T, &g)))
        return st;
    if (one_chunk && g.nexpert > 1)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                        "moevk_layer_experts writes all %u tokens' expert rows at once, but "
                        "their activations exceed the device's buffers: call it with at most "
                        "%u tokens",
                        T, g.expert_chunk);
    if ((st = mvk_workspace_fit(L->ws, &g)))
        return st;
    mvk_cmd c;
    if ((st = mvk_cmd_begin(ctx, &c)))
        return st;
    mvk_pass_record(L, &c, &g, io, NULL);
    mvk_cmd_barrier(&c);
    st = mvk_cmd_submit_wait(&c);
    /* the workspace does not hold a whole pass's routing of this layer */
    L->ws->last_layer = NULL;
    return st;
}

static moevk_status layer_route(moevk_layer *L, const moevk_tensor *x, moevk_tensor *ids,
                                moevk_tensor *weights)
{
    moevk_context *ctx = L->ctx;
    uint32_t T = 0;
    moevk_status st;
    if ((st = tokens_of_x(L, x, &T)) ||
        (st = check_shape2(ctx, ids, "ids", MOEVK_DTYPE_I32, T, moevk_routing_slots(&L->desc))) ||
        (st = check_shape2(ctx, weights, "weights", MOEVK_DTYPE_F32, T, moevk_routing_slots(&L->desc))))
        return st;
    mvk_pass_io io = {
        .x = mvk_tensor_binding(x), .route = true,
        .ids = mvk_tensor_binding(ids), .weights = mvk_tensor_binding(weights),
    };
    return run_parts(L, T, &io, false);
}

MVK_PUBLIC_CTX(moevk_layer_route,
               (moevk_layer *L, const moevk_tensor *x, moevk_tensor *ids, moevk_tensor *weights),
               L ? L->ctx : NULL, layer_route(L, x, ids, weights))

static moevk_status layer_permute(moevk_layer *L, const moevk_tensor *ids, moevk_tensor *row_of,
                                  moevk_tensor *counts)
{
    moevk_context *ctx = L->ctx;
    const uint32_t E = L->desc.num_experts;
    uint32_t T = 0;
    mvk_pass_geometry g;
    moevk_status st;
    if ((st = tokens_of(L, ids, "ids", DT(I32), &T)) || (st = check_ids(L, ids, T)) ||
        (st = check_shape2(ctx, row_of, "row_of", MOEVK_DTYPE_I32, T, moevk_routing_slots(&L->desc))) ||
        (st = check_shape2(ctx, counts, "counts", MOEVK_DTYPE_I32, E, 0)) ||
        (st = mvk_pass_geometry_of(L, L->ws, T, &g)) || (st = mvk_workspace_fit(L->ws, &g)))
        return st;
    mvk_pass_io io = {
        .permute = true, .ids = mvk_tensor_binding(ids), .row_of = mvk_tensor_binding(row_of),
    };
    mvk_cmd c;
    if ((st = mvk_cmd_begin(ctx, &c)))
        return st;
    mvk_pass_record(L, &c, &g, &io, NULL);
    mvk_cmd_copy(&c, L->ws->s[MVK_WS_META]->buffer, MVK_META_COUNTS(E) * 4ull,
                 counts->buffer->buffer, counts->offset, (uint64_t)E * 4);
    mvk_cmd_barrier(&c);
    st = mvk_cmd_submit_wait(&c);
    L->ws->last_layer = NULL;
    return st;
}

MVK_PUBLIC_CTX(moevk_layer_permute,
               (moevk_layer *L, const moevk_tensor *ids, moevk_tensor *row_of,
                moevk_tensor *counts),
               L ? L->ctx : NULL, layer_permute(L, ids, row_of, counts))

static moevk_status layer_experts(moevk_layer *L, const moevk_tensor *x, const moevk_tensor *ids,
                                  moevk_tensor *expert_out)
{
    moevk_context *ctx = L->ctx;
    uint32_t T = 0;
    moevk_status st;
    if (L->desc.flags & MOEVK_LAYER_WEIGHTS_ON_INPUT)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "the layer has MOEVK_LAYER_WEIGHTS_ON_INPUT: its experts' inputs are "
                        "scaled by the routing weights, which moevk_layer_experts does not "
                        "take; run moevk_layer_forward");
    if ((st = tokens_of_x(L, x, &T)) || (st = check_ids(L, ids, T)) ||
        (st = check_shape2(ctx, expert_out, "expert_out", MOEVK_DTYPE_F32,
                           (uint64_t)T * moevk_routing_slots(&L->desc), L->desc.hidden)))
        return st;
    mvk_pass_io io = {
        .x = mvk_tensor_binding(x), .permute = true, .experts = true,
        .ids = mvk_tensor_binding(ids), .expert_out = mvk_tensor_binding(expert_out),
    };
    return run_parts(L, T, &io, true);
}

MVK_PUBLIC_CTX(moevk_layer_experts,
               (moevk_layer *L, const moevk_tensor *x, const moevk_tensor *ids,
                moevk_tensor *expert_out),
               L ? L->ctx : NULL, layer_experts(L, x, ids, expert_out))

static moevk_status layer_combine(moevk_layer *L, const moevk_tensor *expert_out,
                                  const moevk_tensor *row_of, const moevk_tensor *weights,
                                  moevk_tensor *y)
{
    moevk_context *ctx = L->ctx;
    const uint32_t K = moevk_routing_slots(&L->desc), H = L->desc.hidden;
    uint32_t T = 0;
    moevk_status st;
    if ((st = tokens_of(L, y, "y", DT(F32), &T)) ||
        (st = check_shape2(ctx, y, "y", MOEVK_DTYPE_F32, T, H)) ||
        (st = check_shape2(ctx, expert_out, "expert_out", MOEVK_DTYPE_F32, (uint64_t)T * K, H)) ||
        (st = check_shape2(ctx, weights, "weights", MOEVK_DTYPE_F32, T, K)) ||
        (st = check_rows(L, row_of, T)))
        return st;
    mvk_combine_args ca = {
        .o = mvk_tensor_binding(expert_out), .row_of = mvk_tensor_binding(row_of),
        .weights = mvk_tensor_binding(weights), .y = mvk_tensor_binding(y),
        .T = T, .H = H, .K = K,
        .unit_weights = (L->desc.flags & MOEVK_LAYER_WEIGHTS_ON_INPUT) != 0,
        .out_bias = {L->out_b ? L->out_b->buffer : VK_NULL_HANDLE, 0, VK_WHOLE_SIZE},
    };
    mvk_cmd c;
    if ((st = mvk_cmd_begin(ctx, &c)))
        return st;
    mvk_cmd_barrier(&c);
    mvk_op_combine(&c, &ca);
    mvk_cmd_barrier(&c);
    return mvk_cmd_submit_wait(&c);
}

MVK_PUBLIC_CTX(moevk_layer_combine,
               (moevk_layer *L, const moevk_tensor *expert_out, const moevk_tensor *row_of,
                const moevk_tensor *weights, moevk_tensor *y),
               L ? L->ctx : NULL, layer_combine(L, expert_out, row_of, weights, y))

static moevk_status layer_shared(moevk_layer *L, const moevk_tensor *x, moevk_tensor *y)
{
    moevk_context *ctx = L->ctx;
    uint32_t T = 0;
    moevk_status st;
    if ((st = tokens_of_x(L, x, &T)) ||
        (st = check_shape2(ctx, y, "y", MOEVK_DTYPE_F32, T, L->desc.hidden)))
        return st;
    mvk_pass_io io = {
        .x = mvk_tensor_binding(x), .y = mvk_tensor_binding(y), .shared = true, .combine = true,
    };
    return run_parts(L, T, &io, false);
}

MVK_PUBLIC_CTX(moevk_layer_shared_experts, (moevk_layer *L, const moevk_tensor *x, moevk_tensor *y),
               L ? L->ctx : NULL, layer_shared(L, x, y))
