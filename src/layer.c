/*
 * MoE layers: weight upload (chunked within device limits), scratch, and the
 * forward pass recorded stage by stage (src/layer_record.c). One pass has no
 * host round trip: sizes only the GPU knows (per-expert counts) reach the
 * expert GEMMs through a GPU-written tile schedule and indirect dispatches.
 */
#include <string.h>

#include "kernels.h"
#include "layer.h"
#include "layer_record.h"

/* ---- weights ------------------------------------------------------------ */

static moevk_status upload_new(moevk_layer *L, const void *src, uint64_t bytes,
                               moevk_buffer **out)
{
    moevk_status st = moevk_buffer_create(L->ctx, bytes, out);
    if (st)
        return st;
    L->weight_bytes += bytes;
    return src ? moevk_buffer_upload(*out, 0, src, bytes) : MOEVK_SUCCESS;
}

/* Largest storage buffer the device allows. */
static uint64_t max_range(const moevk_context *ctx)
{
    uint64_t r = ctx->info.max_storage_buffer_range;
    if (ctx->info.max_allocation_size)
        r = MVK_MIN(r, ctx->info.max_allocation_size);
    return r & ~3ull;
}

/* Largest weight chunk (a test knob can lower it to exercise chunking). */
static uint64_t max_weight_range(const moevk_context *ctx)
{
    uint64_t r = max_range(ctx);
    if (ctx->testing_max_range)
        r = MVK_MIN(r, ctx->testing_max_range & ~3ull);
    return r;
}

/* Upload experts [first, first+count) of matrix m (0 gate, 1 up, 2 down) of
 * a weight stack into one buffer. */
static moevk_status upload_matrix(moevk_layer *L, const moevk_expert_weights *w, int m,
                                  uint64_t expert_elems, uint32_t first, uint32_t count,
                                  moevk_buffer **out)
{
    const void *whole = m == 0 ? w->gate : m == 1 ? w->up : w->down;
    const void *const *per = m == 0 ? w->gate_experts : m == 1 ? w->up_experts : w->down_experts;
    size_t es = moevk_dtype_size(L->desc.weight_dtype);
    uint64_t expert_bytes = expert_elems * es;
    if (whole)
        return upload_new(L, (const uint8_t *)whole + first * expert_bytes, count * expert_bytes,
                          out);
    moevk_status st = upload_new(L, NULL, count * expert_bytes, out);
    for (uint32_t i = 0; !st && i < count; i++) {
        if (!per[first + i])
            return mvk_fail(L->ctx, MOEVK_ERROR_INVALID_ARGUMENT, "%s_experts[%u] is NULL",
                            m == 0 ? "gate" : m == 1 ? "up" : "down", first + i);
        st = moevk_buffer_upload(*out, i * expert_bytes, per[first + i], expert_bytes);
    }
    return st;
}

static moevk_status upload_bias(moevk_layer *L, const float *src, uint64_t n, moevk_buffer **out)
{
    moevk_status st = upload_new(L, NULL, n * 4, out);
    if (st)
        return st;
    if (src)
        return moevk_buffer_upload(*out, 0, src, n * 4);
    return moevk_buffer_fill(*out, 0, n * 4, 0);
}

static void set_destroy(moevk_layer *L, mvk_expert_set *s)
{
    for (uint32_t c = 0; c < s->nchunks; c++)
        for (int m = 0; m < 3; m++)
            moevk_buffer_destroy(s->chunks[c].w[m]);
    mvk_free(L->ctx, s->chunks);
    for (int m = 0; m < 3; m++)
        moevk_buffer_destroy(s->bias[m]);
    memset(s, 0, sizeof(*s));
}

static moevk_status set_create(moevk_layer *L, const moevk_expert_weights *w, uint32_t count,
                               uint32_t ffn, const char *name, mvk_expert_set *s)
{
    moevk_context *ctx = L->ctx;
    const uint32_t H = L->desc.hidden;
    s->count = count;
    s->ffn = ffn;
    uint64_t elems = (uint64_t)H * ffn;
    uint64_t bytes = elems * moevk_dtype_size(L->desc.weight_dtype);
    uint64_t range = max_weight_range(ctx);
    if (bytes + 4 > range)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                        "one %s expert matrix (%u x %u %s = %llu bytes) exceeds the device's "
                        "storage buffer range of %llu bytes",
                        name, ffn, H, moevk_dtype_name(L->desc.weight_dtype),
                        (unsigned long long)bytes, (unsigned long long)range);
    uint32_t per_chunk = (uint32_t)MVK_MIN((uint64_t)count, (range - 4) / bytes);
    s->nchunks = (count + per_chunk - 1) / per_chunk;
    s->chunks = mvk_alloc(ctx, sizeof(*s->chunks) * s->nchunks);
    if (!s->chunks)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "chunk table");
    moevk_status st = MOEVK_SUCCESS;
    for (uint32_t c = 0; c < s->nchunks && !st; c++) {
        mvk_chunk *ch = &s->chunks[c];
        ch->first = c * per_chunk;
        ch->count = MVK_MIN(per_chunk, count - ch->first);
        for (int m = L->gated ? 0 : 1; m < 3 && !st; m++)
            st = upload_matrix(L, w, m, elems, ch->first, ch->count, &ch->w[m]);
    }
    if (st)
        return st;
    if (w->gate_bias || w->up_bias || w->down_bias) {
        if ((st = upload_bias(L, L->gated ? w->gate_bias : NULL, (uint64_t)count * ffn,
                              &s->bias[0])) ||
            (st = upload_bias(L, w->up_bias, (uint64_t)count * ffn, &s->bias[1])) ||
            (st = upload_bias(L, w->down_bias, (uint64_t)count * H, &s->bias[2])))
            return st;
    }
    return MOEVK_SUCCESS;
}

/* ---- scratch ------------------------------------------------------------- */

static void scratch_release(moevk_layer *L)
{
    for (int i = 0; i < MVK_S_COUNT; i++) {
        moevk_buffer_destroy(L->s[i]);
        L->s[i] = NULL;
    }
    L->scratch_bytes = 0;
    L->reserved_tokens = 0;
    L->last_tokens = 0; /* nothing left to read back */
}

moevk_status moevk_layer_reserve(moevk_layer *L, uint32_t T)
{
    if (!L)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *ctx = L->ctx;
    if (T == 0)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "max_tokens is 0");
    if (T <= L->reserved_tokens)
        return MOEVK_SUCCESS;
    moevk_status st = mvk_wait_idle(ctx);
    if (st)
        return st;
    const moevk_layer_desc *d = &L->desc;
    const uint64_t E = d->num_experts, K = d->top_k, H = d->hidden, F = d->ffn;
    const uint64_t A = (uint64_t)T * K;
    const uint64_t ntiles = (A + MVK_PERMUTE_WG - 1) / MVK_PERMUTE_WG;
    const uint64_t ns = d->num_shared, FS = d->shared_ffn;
    uint64_t size[MVK_S_COUNT] = {
        [MVK_S_LOGITS] = T * E * 4,
        [MVK_S_IDS] = A * 4,
        [MVK_S_WEIGHTS] = A * 4,
        [MVK_S_TOKSTATS] = T * 12ull,
        [MVK_S_TILE_RANK] = A * 4,
        [MVK_S_TILE_COUNT] = ntiles * E * 4,
        [MVK_S_TILE_OFF] = ntiles * E * 4,
        [MVK_S_META] = (3 * E + 8) * 4,
        [MVK_S_SCHEDULE] = (A / MVK_GEMM_BM + E + 1) * 8,
        [MVK_S_ROW_OF] = A * 4,
        [MVK_S_ROW_TOKEN] = A * 4,
        [MVK_S_H] = A * F * 4,
        [MVK_S_O] = A * H * 4,
        [MVK_S_SG_LOGITS] = L->shared_gate ? T * ns * 4 : 0,
        [MVK_S_HS] = T * FS * 4,
        [MVK_S_OS] = ns * T * H * 4,
        [MVK_S_PE] = E * 4,
        [MVK_S_STATS] = 16,
    };
    /* Everything is indexed with 32-bit element indices in the shaders. */
    static const char *const names[MVK_S_COUNT] = {
        "router logits", "ids", "weights", "token statistics", "tile ranks", "tile counts",
        "tile offsets", "counts", "tile schedule", "rows", "row tokens",
        "expert hidden activations [T*k, F]", "expert outputs [T*k, H]", "shared gate logits",
        "shared hidden activations", "shared outputs", "expert probabilities", "statistics",
    };
    uint64_t range = max_range(ctx);
    for (int i = 0; i < MVK_S_COUNT; i++)
        if (size[i] > range || size[i] / 4 > UINT32_MAX)
            return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                            "%u tokens need %llu bytes of %s, beyond the device's storage "
                            "buffer range of %llu bytes; run fewer tokens per pass",
                            T, (unsigned long long)size[i], names[i],
                            (unsigned long long)range);
    if (A / MVK_GEMM_BM + E > ctx->info.max_workgroup_count[0])
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                        "%u tokens give more expert tiles than the device's workgroup count", T);
    scratch_release(L);
    for (int i = 0; i < MVK_S_COUNT; i++) {
        if (!size[i])
            continue;
        if ((st = moevk_buffer_create(ctx, size[i], &L->s[i]))) {
            scratch_release(L);
            return st;
        }
        L->scratch_bytes += size[i];
    }
    L->reserved_tokens = T;
    return MOEVK_SUCCESS;
}

void moevk_layer_memory(const moevk_layer *L, uint64_t *weight_bytes, uint64_t *scratch_bytes)
{
    if (weight_bytes)
        *weight_bytes = L ? L->weight_bytes : 0;
    if (scratch_bytes)
        *scratch_bytes = L ? L->scratch_bytes : 0;
}

/* ---- create / destroy ------------------------------------------------------- */

void moevk_layer_destroy(moevk_layer *L)
{
    if (!L)
        return;
    moevk_context *ctx = L->ctx;
    mvk_wait_before_free(ctx);
    scratch_release(L);
    set_destroy(L, &L->routed);
    set_destroy(L, &L->shared);
    moevk_buffer_destroy(L->router_w);
    moevk_buffer_destroy(L->router_b);
    moevk_buffer_destroy(L->corr_b);
    moevk_buffer_destroy(L->shared_gate);
    moevk_buffer_destroy(L->dummy);
    mvk_arena_destroy(ctx, &L->arena);
    if (L->timestamps)
        ctx->vk.vkDestroyQueryPool(ctx->device, L->timestamps, NULL);
    mvk_free(ctx, L);
}

/* Limits of the device that the layer's grids depend on. */
static moevk_status check_device_limits(moevk_context *ctx, const moevk_layer_desc *d)
{
    const moevk_device_info *info = &ctx->info;
    if (info->max_workgroup_invocations < 256)
        return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED,
                        "the device runs at most %u invocations per workgroup; moevk needs 256",
                        info->max_workgroup_invocations);
    const uint32_t maxy = info->max_workgroup_count[1];
    const struct { const char *name; uint32_t v; } dims[] = {
        {"hidden", d->hidden}, {"ffn", d->ffn}, {"shared_ffn", d->num_shared ? d->shared_ffn : 0},
    };
    for (size_t i = 0; i < sizeof(dims) / sizeof(dims[0]); i++)
        if ((dims[i].v + MVK_GEMM_BN - 1) / MVK_GEMM_BN > maxy)
            return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                            "%s = %u needs %u workgroups along y, beyond the device's %u",
                            dims[i].name, dims[i].v, (dims[i].v + MVK_GEMM_BN - 1) / MVK_GEMM_BN,
                            maxy);
    return MOEVK_SUCCESS;
}

moevk_status moevk_layer_create(moevk_context *ctx, const moevk_layer_desc *desc,
                                moevk_layer **out)
{
    if (!ctx)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    mvk_clear_error(ctx);
    if (!out)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    moevk_status st = moevk_layer_desc_validate(ctx, desc);
    if (st)
        return st;
    if ((st = check_device_limits(ctx, desc)))
        return st;
    moevk_layer *L = mvk_alloc(ctx, sizeof(*L));
    if (!L)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "layer allocation");
    L->ctx = ctx;
    mvk_layer_desc_defaults(desc, &L->desc);
    L->gated = moevk_activation_is_gated(L->desc.activation);
    const moevk_layer_desc *d = &L->desc;
    const uint64_t E = d->num_experts, H = d->hidden;
    size_t rs = moevk_dtype_size(d->router_dtype);

    st = upload_new(L, d->router_weight, E * H * rs, &L->router_w);
    if (!st && d->router_bias)
        st = upload_new(L, d->router_bias, E * 4, &L->router_b);
    if (!st && d->correction_bias)
        st = upload_new(L, d->correction_bias, E * 4, &L->corr_b);
    if (!st && d->shared_gate)
        st = upload_new(L, d->shared_gate, (uint64_t)d->num_shared * H * rs, &L->shared_gate);
    if (!st)
        st = upload_new(L, NULL, 16, &L->dummy);
    if (!st)
        st = set_create(L, &d->experts, d->num_experts, d->ffn, "routed", &L->routed);
    if (!st && d->num_shared)
        st = set_create(L, &d->shared, d->num_shared, d->shared_ffn, "shared", &L->shared);
    if (!st && ctx->info.timestamps) {
        VkQueryPoolCreateInfo qci = {
            .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
            .queryType = VK_QUERY_TYPE_TIMESTAMP,
            .queryCount = MOEVK_STAGE_COUNT + 1,
        };
        VkResult r = MVK_VK(ctx, ctx->vk.vkCreateQueryPool(ctx->device, &qci, NULL,
                                                            &L->timestamps));
        if (r != VK_SUCCESS) {
            L->timestamps = VK_NULL_HANDLE;
            st = mvk_vk_fail(ctx, r, "vkCreateQueryPool");
        }
    }
    /* Host pointers are only valid during this call. */
    memset(&L->desc.experts, 0, sizeof(L->desc.experts));
    memset(&L->desc.shared, 0, sizeof(L->desc.shared));
    L->desc.router_weight = L->desc.router_bias = NULL;
    L->desc.correction_bias = NULL;
    L->desc.router_bias = NULL;
    L->desc.shared_gate = NULL;
    if (st) {
        moevk_layer_destroy(L);
        return st;
    }
    *out = L;
    return MOEVK_SUCCESS;
}

const moevk_layer_desc *moevk_layer_get_desc(const moevk_layer *L)
{
    return L ? &L->desc : NULL;
}

/* ---- passes ------------------------------------------------------------------ */

static moevk_status check_io(moevk_layer *L, const moevk_tensor *x, const moevk_tensor *y,
                             uint32_t *T)
{
    moevk_context *ctx = L->ctx;
    moevk_status st;
    if ((st = mvk_check_tensor(ctx, x, "x", 1u << MOEVK_DTYPE_F32, 2)) ||
        (st = mvk_check_tensor(ctx, y, "y", 1u << MOEVK_DTYPE_F32, 2)))
        return st;
    if (x->shape[1] != L->desc.hidden)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "x.shape[1] = %llu differs from the layer's hidden = %u",
                        (unsigned long long)x->shape[1], L->desc.hidden);
    if (y->shape[0] != x->shape[0] || y->shape[1] != x->shape[1])
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "y shape [%llu, %llu] differs from x shape [%llu, %llu]",
                        (unsigned long long)y->shape[0], (unsigned long long)y->shape[1],
                        (unsigned long long)x->shape[0], (unsigned long long)x->shape[1]);
    if (x->shape[0] > UINT32_MAX / MOEVK_MAX_TOP_K)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED, "x.shape[0] = %llu tokens is too many",
                        (unsigned long long)x->shape[0]);
    if (x->buffer == y->buffer && x->offset < y->offset + moevk_tensor_bytes(y) &&
        y->offset < x->offset + moevk_tensor_bytes(x))
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "x and y overlap");
    *T = (uint32_t)x->shape[0];
    return MOEVK_SUCCESS;
}

moevk_status moevk_layer_forward(moevk_layer *L, const moevk_tensor *x, moevk_tensor *y,
                                 moevk_routing_stats *stats)
{
    if (!L)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *ctx = L->ctx;
    mvk_clear_error(ctx);
    uint32_t T;
    moevk_status st = check_io(L, x, y, &T);
    if (!st)
        st = moevk_layer_reserve(L, T);
    if (st)
        return st;
    mvk_cmd c;
    if ((st = mvk_cmd_begin(ctx, &c)))
        return st;
    mvk_layer_record_pass(L, &c, x, y, T, L->timestamps);
    if ((st = mvk_cmd_submit_wait(&c)))
        return st;
    L->last_tokens = T;
    mvk_layer_read_timestamps(L);
    return stats ? moevk_layer_read_stats(L, stats) : MOEVK_SUCCESS;
}

moevk_status moevk_layer_record(moevk_layer *L, void *vk_command_buffer, const moevk_tensor *x,
                                moevk_tensor *y)
{
    if (!L)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *ctx = L->ctx;
    mvk_clear_error(ctx);
    if (!vk_command_buffer)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "vk_command_buffer is NULL");
    uint32_t T;
    moevk_status st = check_io(L, x, y, &T);
    if (st)
        return st;
    if (T > L->reserved_tokens)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "x has %u tokens but the layer reserved scratch for %u: call "
                        "moevk_layer_reserve first",
                        T, L->reserved_tokens);
    if ((st = mvk_arena_reset(ctx, &L->arena)))
        return st;
    mvk_cmd c = {.ctx = ctx, .cb = (VkCommandBuffer)vk_command_buffer, .arena = &L->arena};
    mvk_layer_record_pass(L, &c, x, y, T, VK_NULL_HANDLE);
    if (c.status)
        return c.status;
    L->last_tokens = T;
    return MOEVK_SUCCESS;
}

moevk_status moevk_layer_read_stats(moevk_layer *L, moevk_routing_stats *stats)
{
    if (!L)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *ctx = L->ctx;
    if (!stats)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "stats is NULL");
    if (!L->last_tokens)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "the layer has not run yet");
    const uint32_t E = L->desc.num_experts;
    uint32_t meta_tail[2];
    float f[3];
    moevk_status st;
    if ((st = moevk_buffer_download(L->s[MVK_S_META], (3ull * E + 1) * 4, meta_tail, 4)) ||
        (st = moevk_buffer_download(L->s[MVK_S_STATS], 0, f, sizeof(f))))
        return st;
    if (stats->tokens_per_expert &&
        (st = moevk_buffer_download(L->s[MVK_S_META], (uint64_t)E * 4, stats->tokens_per_expert,
                                    (uint64_t)E * 4)))
        return st;
    stats->dropped = meta_tail[0];
    stats->load_balancing_loss = f[0];
    stats->router_z_loss = f[1];
    stats->routing_entropy = f[2];
    return MOEVK_SUCCESS;
}

moevk_status moevk_layer_read_routing(moevk_layer *L, uint32_t T, uint32_t *ids, float *weights,
                                      int32_t *row)
{
    if (!L)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *ctx = L->ctx;
    if (T == 0 || T != L->last_tokens)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "T = %u differs from the last pass's %u tokens", T, L->last_tokens);
    uint64_t bytes = (uint64_t)T * L->desc.top_k * 4;
    moevk_status st = MOEVK_SUCCESS;
    if (ids)
        st = moevk_buffer_download(L->s[MVK_S_IDS], 0, ids, bytes);
    if (!st && weights)
        st = moevk_buffer_download(L->s[MVK_S_WEIGHTS], 0, weights, bytes);
    if (!st && row)
        st = moevk_buffer_download(L->s[MVK_S_ROW_OF], 0, row, bytes);
    return st;
}

moevk_status moevk_layer_stage_times(const moevk_layer *L, double ms[MOEVK_STAGE_COUNT])
{
    if (!L || !ms)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    memcpy(ms, L->stage_ms, sizeof(L->stage_ms));
    return MOEVK_SUCCESS;
}
