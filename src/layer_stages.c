/*
 * The stages of the forward pass as standalone synchronous calls on caller
 * tensors. They record the same stage code as moevk_layer_forward, with the
 * caller's tensors bound in place of the layer's scratch slots.
 */
#include <string.h>

#include "layer_record.h"

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
    moevk_context *ctx = L->ctx;
    moevk_status st = mvk_check_tensor(ctx, t, name, dt, 2);
    if (st)
        return st;
    if (t->shape[0] > UINT32_MAX / MOEVK_MAX_TOP_K)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED, "%s has too many tokens (%llu)", name,
                        (unsigned long long)t->shape[0]);
    *T = (uint32_t)t->shape[0];
    return MOEVK_SUCCESS;
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
    const uint32_t K = L->desc.top_k, E = L->desc.num_experts;
    moevk_status st = check_shape2(ctx, ids, "ids", MOEVK_DTYPE_I32, T, K);
    if (st)
        return st;
    int32_t *h = mvk_alloc(ctx, (size_t)T * K * 4);
    if (!h)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "ids check");
    st = moevk_tensor_download(ids, h);
    for (uint32_t t = 0; !st && t < T; t++)
        for (uint32_t j = 0; !st && j < K; j++) {
            int32_t v = h[t * K + j];
            if (v < 0 || (uint32_t)v >= E)
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
    const uint32_t K = L->desc.top_k;
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

static moevk_status stage_begin(moevk_layer *L, uint32_t T, mvk_cmd *c)
{
    memset(L->bind, 0, sizeof(L->bind));
    moevk_status st = moevk_layer_reserve(L, T);
    if (!st)
        st = mvk_cmd_begin(L->ctx, c);
    if (!st)
        mvk_cmd_barrier(c);
    return st;
}

static moevk_status stage_end(moevk_layer *L, mvk_cmd *c)
{
    mvk_cmd_barrier(c);
    moevk_status st = mvk_cmd_submit_wait(c);
    memset(L->bind, 0, sizeof(L->bind));
    return st;
}

moevk_status moevk_layer_route(moevk_layer *L, const moevk_tensor *x, moevk_tensor *ids,
                               moevk_tensor *weights)
{
    if (!L)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *ctx = L->ctx;
    mvk_clear_error(ctx);
    uint32_t T = 0;
    moevk_status st;
    if ((st = tokens_of_x(L, x, &T)) ||
        (st = check_shape2(ctx, ids, "ids", MOEVK_DTYPE_I32, T, L->desc.top_k)) ||
        (st = check_shape2(ctx, weights, "weights", MOEVK_DTYPE_F32, T, L->desc.top_k)))
        return st;
    mvk_cmd c;
    if ((st = stage_begin(L, T, &c)))
        return st;
    L->bind[MVK_S_IDS] = mvk_tensor_binding(ids);
    L->bind[MVK_S_WEIGHTS] = mvk_tensor_binding(weights);
    mvk_record_router(L, &c, mvk_tensor_binding(x), T);
    mvk_cmd_barrier(&c);
    mvk_record_route(L, &c, T);
    return stage_end(L, &c);
}

moevk_status moevk_layer_permute(moevk_layer *L, const moevk_tensor *ids, moevk_tensor *row_of,
                                 moevk_tensor *counts)
{
    if (!L)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *ctx = L->ctx;
    mvk_clear_error(ctx);
    const uint32_t E = L->desc.num_experts;
    uint32_t T = 0;
    moevk_status st;
    if ((st = tokens_of(L, ids, "ids", DT(I32), &T)) || (st = check_ids(L, ids, T)) ||
        (st = check_shape2(ctx, row_of, "row_of", MOEVK_DTYPE_I32, T, L->desc.top_k)) ||
        (st = check_shape2(ctx, counts, "counts", MOEVK_DTYPE_I32, E, 0)))
        return st;
    mvk_cmd c;
    if ((st = stage_begin(L, T, &c)))
        return st;
    L->bind[MVK_S_IDS] = mvk_tensor_binding(ids);
    L->bind[MVK_S_ROW_OF] = mvk_tensor_binding(row_of);
    mvk_record_permute(L, &c, T);
    mvk_cmd_copy(&c, L->s[MVK_S_META]->buffer, (uint64_t)E * 4, counts->buffer->buffer,
                 counts->offset, (uint64_t)E * 4);
    return stage_end(L, &c);
}

moevk_status moevk_layer_experts(moevk_layer *L, const moevk_tensor *x, const moevk_tensor *ids,
                                 moevk_tensor *expert_out)
{
    if (!L)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *ctx = L->ctx;
    mvk_clear_error(ctx);
    uint32_t T = 0;
    moevk_status st;
    if ((st = tokens_of_x(L, x, &T)) || (st = check_ids(L, ids, T)) ||
        (st = check_shape2(ctx, expert_out, "expert_out", MOEVK_DTYPE_F32,
                           (uint64_t)T * L->desc.top_k, L->desc.hidden)))
        return st;
    mvk_cmd c;
    if ((st = stage_begin(L, T, &c)))
        return st;
    L->bind[MVK_S_IDS] = mvk_tensor_binding(ids);
    L->bind[MVK_S_O] = mvk_tensor_binding(expert_out);
    mvk_record_permute(L, &c, T);
    mvk_record_experts(L, &c, mvk_tensor_binding(x), VK_NULL_HANDLE, NULL);
    return stage_end(L, &c);
}

moevk_status moevk_layer_combine(moevk_layer *L, const moevk_tensor *expert_out,
                                 const moevk_tensor *row_of, const moevk_tensor *weights,
                                 moevk_tensor *y)
{
    if (!L)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *ctx = L->ctx;
    mvk_clear_error(ctx);
    const uint32_t K = L->desc.top_k, H = L->desc.hidden;
    uint32_t T = 0;
    moevk_status st;
    if ((st = tokens_of(L, y, "y", DT(F32), &T)) ||
        (st = check_shape2(ctx, y, "y", MOEVK_DTYPE_F32, T, H)) ||
        (st = check_shape2(ctx, expert_out, "expert_out", MOEVK_DTYPE_F32, (uint64_t)T * K, H)) ||
        (st = check_shape2(ctx, weights, "weights", MOEVK_DTYPE_F32, T, K)) ||
        (st = check_rows(L, row_of, T)))
        return st;
    mvk_cmd c;
    if ((st = stage_begin(L, T, &c)))
        return st;
    L->bind[MVK_S_O] = mvk_tensor_binding(expert_out);
    L->bind[MVK_S_ROW_OF] = mvk_tensor_binding(row_of);
    L->bind[MVK_S_WEIGHTS] = mvk_tensor_binding(weights);
    mvk_record_combine(L, &c, mvk_tensor_binding(y), T, K, 0);
    return stage_end(L, &c);
}

moevk_status moevk_layer_shared_experts(moevk_layer *L, const moevk_tensor *x, moevk_tensor *y)
{
    if (!L)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *ctx = L->ctx;
    mvk_clear_error(ctx);
    uint32_t T = 0;
    moevk_status st;
    if ((st = tokens_of_x(L, x, &T)) ||
        (st = check_shape2(ctx, y, "y", MOEVK_DTYPE_F32, T, L->desc.hidden)))
        return st;
    mvk_cmd c;
    if ((st = stage_begin(L, T, &c)))
        return st;
    const mvk_binding xb = mvk_tensor_binding(x);
    mvk_record_router(L, &c, xb, T); /* for the shared gate's logits */
    mvk_cmd_barrier(&c);
    mvk_record_shared(L, &c, xb, T);
    mvk_record_combine(L, &c, mvk_tensor_binding(y), T, 0, L->desc.num_shared);
    return stage_end(L, &c);
}
