/*
 * MoE layers: weight upload (chunked within device limits), the workspace
 * a layer's passes use, and the public pass calls (forward, record, and
 * reading back results). The pass itself is src/pass.c.
 */
#include <string.h>

#include "cache.h"
#include "formats.h"
#include "interface.h"
#include "layer.h"
#include "layer_quantize.h"
#include "pass.h"
#include "ref/ref.h"
#include "workspace.h"

/* ---- weights ------------------------------------------------------------ */

/* A weight buffer on the device, or in host-visible memory (the host copy
 * of a budgeted layer's experts), filled from src if given. */
static moevk_status upload_in(moevk_layer *L, const void *src, uint64_t bytes, bool host,
                              moevk_buffer **out)
{
    moevk_status st = host ? mvk_host_buffer_create(L->ctx, bytes, out)
                           : moevk_buffer_create(L->ctx, bytes, out);
    if (st)
        return st;
    if (host)
        L->host_weight_bytes += (*out)->alloc_bytes;
    else
        L->weight_bytes += bytes;
    return src ? moevk_buffer_upload(*out, 0, src, bytes) : MOEVK_SUCCESS;
}

static moevk_status upload_new(moevk_layer *L, const void *src, uint64_t bytes,
                               moevk_buffer **out)
{
    return upload_in(L, src, bytes, false, out);
}

/* Blocks of a format that no kernel may read (mvk_format_check: MXFP4's
 * NaN scale, a gptq4 zero point over 16, an fp8 NaN code, ...): refused,
 * naming the expert, the matrix, the block and what is wrong with it. */
static moevk_status check_blocks(moevk_layer *L, moevk_dtype dt, const void *data,
                                 uint64_t bytes, const char *set, int m, uint32_t expert)
{
    const mvk_format *f = mvk_format_get(dt);
    uint64_t bad = 0;
    char why[96];
    if (f->block_elems == 1 ||
        mvk_format_check(f->dtype, data, bytes / f->block_bytes, &bad, why, sizeof why))
        return MOEVK_SUCCESS;
    return mvk_fail(L->ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                    "%s %u's %s matrix: %s block %llu is not valid (%s)", set, expert,
                    m == 0 ? "gate" : m == 1 ? "up" : "down", f->name, (unsigned long long)bad,
                    why);
}

/* How one matrix of a set goes to the device: its rows in the host format
 * and in the device format (the same unless quantised at create). */
typedef struct matrix_plan {
    const char *set, *label; /* "experts" / "shared", "expert" / "shared expert" */
    moevk_dtype src, dst;
    uint32_t rows, row_elems;
    uint64_t src_bytes, dst_bytes; /* of one expert's matrix */
} matrix_plan;

/* Upload experts [first, first+count) of matrix m (0 gate, 1 up, 2 down) of
 * a weight stack into one buffer; quantised one expert at a time when the
 * plan says so. */
static moevk_status upload_matrix(moevk_layer *L, const moevk_expert_weights *w, int m,
                                  const matrix_plan *pl, uint32_t first, uint32_t count,
                                  bool host, mvk_quant_progress *prog, moevk_buffer **out,
                                  uint64_t *off)
{
    static const char *const names[3] = {"gate", "up", "down"};
    const void *whole = m == 0 ? w->gate : m == 1 ? w->up : w->down;
    const void *const *per = m == 0 ? w->gate_experts : m == 1 ? w->up_experts : w->down_experts;
    moevk_status st;
    for (uint32_t i = 0; !whole && i < count; i++)
        if (!per[first + i])
            return mvk_fail(L->ctx, MOEVK_ERROR_INVALID_ARGUMENT, "%s.%s_experts[%u] is NULL",
                            pl->set, names[m], first + i);
    if (pl->src == pl->dst) {
        for (uint32_t i = 0; i < count; i++) {
            const void *src = whole ? (const uint8_t *)whole + (first + i) * pl->dst_bytes
                                    : per[first + i];
            if ((st = check_blocks(L, pl->dst, src, pl->dst_bytes, pl->label, m, first + i)))
                return st;
        }
        /* the host copy of a budgeted layer: the caller's own memory where
         * the device imports it (MOEVK_LAYER_IMPORT_HOST_EXPERTS) */
        if (whole && host && (L->desc.flags & MOEVK_LAYER_IMPORT_HOST_EXPERTS)) {
            st = mvk_host_buffer_import(L->ctx, (const uint8_t *)whole + first * pl->dst_bytes,
                                        count * pl->dst_bytes, out, off);
            if (st != MOEVK_ERROR_UNSUPPORTED) {
                if (!st) {
                    L->host_weight_bytes += (*out)->host_import;
                    L->host_imported_bytes += (*out)->host_import;
                }
                return st;
            }
        }
        if (whole)
            return upload_in(L, (const uint8_t *)whole + first * pl->dst_bytes,
                             count * pl->dst_bytes, host, out);
        st = upload_in(L, NULL, count * pl->dst_bytes, host, out);
        for (uint32_t i = 0; !st && i < count; i++)
            st = moevk_buffer_upload(*out, i * pl->dst_bytes, per[first + i], pl->dst_bytes);
        return st;
    }
    /* quantise at create: one expert's packed matrix on the host at a time */
    if ((st = upload_in(L, NULL, count * pl->dst_bytes, host, out)))
        return st;
    uint8_t *staging = mvk_alloc(L->ctx, pl->dst_bytes);
    if (!staging)
        return mvk_fail(L->ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY,
                        "%llu bytes to quantise one expert matrix into",
                        (unsigned long long)pl->dst_bytes);
    const mvk_quant_matrix qm = {
        .src_dtype = pl->src, .dtype = pl->dst, .rows = pl->rows, .row_elems = pl->row_elems,
        .threads = L->desc.quantize_threads, .set = pl->label, .matrix = names[m],
    };
    for (uint32_t i = 0; !st && i < count; i++) {
        const void *src = whole ? (const uint8_t *)whole + (first + i) * pl->src_bytes
                                : per[first + i];
        mvk_quant_matrix q = qm;
        q.expert = first + i;
        st = mvk_quantize_matrix(L->ctx, prog, &q, src, staging);
        if (!st)
            st = check_blocks(L, pl->dst, staging, pl->dst_bytes, pl->label, m, first + i);
        if (!st)
            st = moevk_buffer_upload(*out, i * pl->dst_bytes, staging, pl->dst_bytes);
    }
    mvk_free(L->ctx, staging);
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
    /* chunks may be NULL with nchunks set: its allocation failed */
    for (uint32_t c = 0; s->chunks && c < s->nchunks; c++)
        for (int m = 0; m < 3; m++)
            moevk_buffer_destroy(s->chunks[c].w[m]);
    mvk_free(L->ctx, s->chunks);
    for (int m = 0; m < 3; m++)
        moevk_buffer_destroy(s->bias[m]);
    moevk_buffer_destroy(s->input_perm);
    moevk_buffer_destroy(s->table);
    memset(s, 0, sizeof(*s));
}

/* Bytes of the device allocations of chunks [0, n) of a set. */
static uint64_t chunk_alloc_bytes(const mvk_expert_set *s, uint32_t n)
{
    uint64_t b = 0;
    for (uint32_t c = 0; c < n; c++)
        for (int m = 0; m < 3; m++)
            b += s->chunks[c].w[m] ? s->chunks[c].w[m]->alloc_bytes : 0;
    return b;
}

/* Fill device slots [first, first + count) (which hold experts of the same
 * numbers when a layer is created) from the host chunks, on the GPU. */
static moevk_status fill_slots(moevk_layer *L, const mvk_chunk *dev, uint32_t nhost,
                               const mvk_chunk *host, const matrix_plan plan[2])
{
    mvk_cmd c;
    moevk_status st = mvk_cmd_begin(L->ctx, &c);
    if (st)
        return st;
    for (uint32_t v = dev->first; v < dev->first + dev->count; v++)
        for (uint32_t h = 0; h < nhost; h++) {
            if (v < host[h].first || v - host[h].first >= host[h].count)
                continue;
            for (int m = L->gated ? 0 : 1; m < 3; m++) {
                const uint64_t b = plan[m == 2].dst_bytes;
                mvk_cmd_copy(&c, host[h].w[m]->buffer, host[h].off[m] + (v - host[h].first) * b,
                             dev->w[m]->buffer, (v - dev->first) * b, b);
            }
        }
    mvk_cmd_barrier(&c);
    return mvk_cmd_submit_wait(&c);
}

/* The routed experts under a budget of `slots` whole experts (< count):
 * host chunks with every expert, then device chunks of the slots, which
 * start with experts 0 .. slots - 1; the slot tables and the cache
 * (src/cache.h). The chunk table lists the device chunks first. */
static moevk_status budget_chunks(moevk_layer *L, const moevk_expert_weights *w,
                                  const matrix_plan plan[2], uint32_t per_chunk, uint32_t slots,
                                  mvk_quant_progress *prog)
{
    moevk_context *ctx = L->ctx;
    mvk_expert_set *s = &L->routed;
    const uint32_t count = s->count;
    const uint32_t nhost = (count + per_chunk - 1) / per_chunk;
    /* at most this many device chunks */
    const uint32_t ndev_max = (slots + per_chunk - 1) / per_chunk;
    s->chunks = mvk_alloc(ctx, sizeof(*s->chunks) * (ndev_max + nhost));
    if (!s->chunks)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "chunk table");
    mvk_chunk *host = s->chunks + ndev_max;
    moevk_status st = MOEVK_SUCCESS;
    for (uint32_t c = 0; c < nhost && !st; c++) {
        mvk_chunk *ch = &host[c];
        ch->first = c * per_chunk;
        ch->count = MVK_MIN(per_chunk, count - ch->first);
        ch->host = true;
        for (int m = L->gated ? 0 : 1; m < 3 && !st; m++)
            st = upload_matrix(L, w, m, &plan[m == 2], ch->first, ch->count, true, prog,
                               &ch->w[m], &ch->off[m]);
    }
    s->nchunks = ndev_max + nhost; /* every buffer is in the table: freed on failure */
    if (st)
        return st;
    /* device slots: allocations rounded up by the driver must still fit
     * the budget, so fewer slots if they do not */
    uint32_t ndev = 0;
    for (;;) {
        ndev = (slots + per_chunk - 1) / per_chunk;
        for (uint32_t c = 0; c < ndev && !st; c++) {
            mvk_chunk *ch = &s->chunks[c];
            ch->first = c * per_chunk;
            ch->count = MVK_MIN(per_chunk, slots - ch->first);
            for (int m = L->gated ? 0 : 1; m < 3 && !st; m++)
                st = moevk_buffer_create(ctx, ch->count * plan[m == 2].dst_bytes, &ch->w[m]);
        }
        if (st || chunk_alloc_bytes(s, ndev) <= L->desc.vram_budget || slots == 0)
            break;
        for (uint32_t c = 0; c < ndev; c++)
            for (int m = 0; m < 3; m++) {
                moevk_buffer_destroy(s->chunks[c].w[m]);
                s->chunks[c].w[m] = NULL;
            }
        slots--;
    }
    if (st)
        return st;
    /* the chunk table without the unused device entries */
    if (ndev < ndev_max)
        memmove(s->chunks + ndev, host, sizeof(*host) * nhost);
    s->nchunks = ndev + nhost;
    L->slot_bytes = chunk_alloc_bytes(s, ndev);
    L->weight_bytes += L->slot_bytes;
    for (uint32_t c = 0; c < ndev && !st; c++)
        st = fill_slots(L, &s->chunks[c], nhost, s->chunks + ndev, plan);
    if (!st)
        st = mvk_cache_create(L, slots, ndev);
    return st;
}

static moevk_status set_create(moevk_layer *L, const moevk_expert_weights *w, uint32_t count,
                               uint32_t ffn, const mvk_matrix_kind kind[2],
                               mvk_quant_progress *prog, mvk_expert_set *s)
{
    moevk_context *ctx = L->ctx;
    const uint32_t H = L->desc.hidden;
    const char *name = kind[0].set;
    const bool routed = !strcmp(name, "experts");
    const uint64_t slot_base = L->weight_bytes;
    s->count = count;
    s->ffn = ffn;
    matrix_plan plan[2];
    for (int i = 0; i < 2; i++) {
        const uint32_t rows = i ? H : ffn, elems = i ? ffn : H;
        plan[i] = (matrix_plan){
            .set = name, .label = routed ? "expert" : "shared expert", .src = kind[i].dtype, .dst = kind[i].target, .rows = rows,
            .row_elems = elems, .src_bytes = rows * mvk_format_row_bytes(kind[i].dtype, elems),
            .dst_bytes = rows * mvk_format_row_bytes(kind[i].target, elems),
        };
        s->dtype[i] = kind[i].target;
        s->w_fmt[i] = mvk_format_get(kind[i].target)->shader_fmt;
    }
    /* the bigger of gate/up [ffn, H] and down [H, ffn] on the device */
    const int big = plan[1].dst_bytes > plan[0].dst_bytes;
    const uint64_t bytes = plan[big].dst_bytes;
    uint64_t range = mvk_weight_range(ctx);
    if (bytes > range)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                        "one %s expert matrix (%u x %u %s = %llu bytes) exceeds the device's "
                        "storage buffer range of %llu bytes",
                        routed ? "routed" : "shared", plan[big].rows, plan[big].row_elems,
                        moevk_dtype_name(plan[big].dst), (unsigned long long)bytes,
                        (unsigned long long)range);
    const uint32_t per_chunk = (uint32_t)MVK_MIN((uint64_t)count, range / bytes);
    /* device slots: every expert, or as many as the budget holds */
    uint32_t slots = count;
    if (routed && (L->desc.flags & MOEVK_LAYER_VRAM_BUDGET)) {
        const uint64_t eb = (L->gated ? 2 : 1) * plan[0].dst_bytes + plan[1].dst_bytes;
        slots = (uint32_t)MVK_MIN((uint64_t)count, L->desc.vram_budget / eb);
    }
    moevk_status st = MOEVK_SUCCESS;
    if (slots == count) {
        s->nchunks = (count + per_chunk - 1) / per_chunk;
        s->chunks = mvk_alloc(ctx, sizeof(*s->chunks) * s->nchunks);
        if (!s->chunks)
            return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "chunk table");
        for (uint32_t c = 0; c < s->nchunks && !st; c++) {
            mvk_chunk *ch = &s->chunks[c];
            ch->first = c * per_chunk;
            ch->count = MVK_MIN(per_chunk, count - ch->first);
            for (int m = L->gated ? 0 : 1; m < 3 && !st; m++)
                st = upload_matrix(L, w, m, &plan[m == 2], ch->first, ch->count, false, prog,
                                   &ch->w[m], &ch->off[m]);
        }
        if (!st && routed)
            L->slot_bytes = L->weight_bytes - slot_base;
        /* a budget that every expert fits, but not the driver's rounding */
        if (!st && routed && (L->desc.flags & MOEVK_LAYER_VRAM_BUDGET) &&
            chunk_alloc_bytes(s, s->nchunks) > L->desc.vram_budget) {
            for (uint32_t c = 0; c < s->nchunks; c++)
                for (int m = 0; m < 3; m++)
                    moevk_buffer_destroy(s->chunks[c].w[m]);
            mvk_free(ctx, s->chunks);
            s->chunks = NULL;
            s->nchunks = 0;
            L->weight_bytes = slot_base;
            st = budget_chunks(L, w, plan, per_chunk, count - 1, prog);
        }
    } else {
        st = budget_chunks(L, w, plan, per_chunk, slots, prog);
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
    if (w->input_perm && (st = upload_new(L, w->input_perm, (uint64_t)count * H * 4,
                                          &s->input_perm)))
        return st;
    return MOEVK_SUCCESS;
}

/* ---- create / destroy ------------------------------------------------------- */

/* Quantising at create: the fallbacks said in the log, the progress total. */
static void quant_begin(moevk_layer *L, const mvk_matrix_kind kind[4], mvk_quant_progress *p)
{
    const moevk_layer_desc *d = &L->desc;
    uint64_t total = 0;
    for (int i = 0; i < 4 && (d->flags & MOEVK_LAYER_QUANTIZE); i++) {
        if (!kind[i].row)
            continue;
        const bool down = i % 2;
        const uint64_t count = i < 2 ? moevk_ref_ffn_experts(d) : d->num_shared;
        const uint64_t ffn = i < 2 ? d->ffn : d->shared_ffn;
        total += count * (down ? 1 : L->gated ? 2 : 1) * ffn * d->hidden *
                 moevk_dtype_size(kind[i].dtype);
        if (kind[i].target != d->quantize_dtype)
            mvk_log(L->ctx, MOEVK_LOG_WARN,
                    "%s %s rows: %s = %u is not a whole number of %s blocks (%u elements); "
                    "quantised to %s instead, %s",
                    kind[i].set, down ? "down" : "gate/up", kind[i].row_name, kind[i].row,
                    moevk_dtype_name(d->quantize_dtype),
                    moevk_dtype_block_elems(d->quantize_dtype), moevk_dtype_name(kind[i].target),
                    moevk_dtype_block_elems(kind[i].target) > 1 ? "as llama.cpp does"
                                                                : "as no block format fits");
    }
    mvk_quant_progress_begin(p, total);
}

static void layer_free(moevk_layer *L)
{
    moevk_context *ctx = L->ctx;
    mvk_wait_before_free(ctx);
    mvk_cache_destroy(L);
    set_destroy(L, &L->routed);
    set_destroy(L, &L->shared);
    moevk_buffer_destroy(L->router_w);
    moevk_buffer_destroy(L->router_b);
    moevk_buffer_destroy(L->corr_b);
    moevk_buffer_destroy(L->out_b);
    moevk_buffer_destroy(L->rin_s);
    moevk_buffer_destroy(L->ein_w);
    moevk_buffer_destroy(L->ew_s);
    moevk_buffer_destroy(L->shared_gate);
    moevk_buffer_destroy(L->results);
    if (L->ws) {
        if (L->ws->last_layer == L)
            L->ws->last_layer = NULL;
        mvk_workspace_unref(L->ws);
    }
    mvk_free(ctx, L);
}

void moevk_layer_destroy(moevk_layer *L)
{
    if (!L)
        return;
    moevk_context *ctx = L->ctx;
    if (mvk_enter(ctx))
        return; /* another thread is inside a call: a misuse; nothing is touched */
    layer_free(L);
    mvk_leave(ctx);
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

static moevk_status layer_create(moevk_context *ctx, const moevk_layer_desc *desc,
                                 moevk_layer **out)
{
    if (!out)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    moevk_status st = moevk_layer_desc_validate(ctx, desc);
    if (st)
        return st;
    if ((st = check_device_limits(ctx, desc)))
        return st;
    if (desc->workspace && desc->workspace->ctx != ctx)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "workspace belongs to another context");
    moevk_workspace *ws = desc->workspace;
    if (!ws && (st = mvk_context_workspace(ctx, &ws)))
        return st;
    if (!(desc->flags & MOEVK_LAYER_BATCH_INVARIANT) && (st = mvk_matrix_units_prepare(ctx)))
        return st;
    moevk_layer *L = mvk_alloc(ctx, sizeof(*L));
    if (!L)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "layer allocation");
    L->ctx = ctx;
    L->ws = ws;
    mvk_workspace_ref(ws);
    mvk_layer_desc_defaults(desc, &L->desc);
    L->gated = moevk_activation_is_gated(L->desc.activation);
    const moevk_layer_desc *d = &L->desc;
    L->r_fmt = mvk_format_get(d->router_dtype)->shader_fmt;
    const uint64_t E = d->num_experts, H = d->hidden;
    const uint64_t router_row = mvk_format_row_bytes(d->router_dtype, H);

    st = upload_new(L, d->router_weight, E * router_row, &L->router_w);
    if (!st && d->router_bias)
        st = upload_new(L, d->router_bias, E * 4, &L->router_b);
    if (!st && d->correction_bias)
        st = upload_new(L, d->correction_bias, E * 4, &L->corr_b);
    if (!st && d->output_bias)
        st = upload_new(L, d->output_bias, (uint64_t)d->hidden * 4, &L->out_b);
    if (!st && d->router_input_scale)
        st = upload_new(L, d->router_input_scale, (uint64_t)d->hidden * 4, &L->rin_s);
    if (!st && d->expert_norm_weight)
        st = upload_new(L, d->expert_norm_weight, (uint64_t)d->hidden * 4, &L->ein_w);
    if (!st && d->expert_weight_scale)
        st = upload_new(L, d->expert_weight_scale, E * 4, &L->ew_s);
    if (!st && d->shared_gate)
        st = upload_new(L, d->shared_gate, (uint64_t)d->num_shared * router_row, &L->shared_gate);
    mvk_matrix_kind kind[4];
    mvk_layer_matrices(d, kind);
    mvk_quant_progress prog;
    quant_begin(L, kind, &prog);
    /* the token side of an expert-parallel layer holds no routed experts */
    if (!st && !(d->flags & MOEVK_LAYER_NO_ROUTED_EXPERTS))
        st = set_create(L, &d->experts, moevk_ref_ffn_experts(d), d->ffn, kind, &prog,
                        &L->routed);
    if (!st && d->num_shared)
        st = set_create(L, &d->shared, d->num_shared, d->shared_ffn, kind + 2, &prog,
                        &L->shared);

    if (!st) {
        st = moevk_buffer_create(ctx, (uint64_t)MVK_RESULTS_WORDS(E) * 4, &L->results);
        if (st)
            L->results = NULL;
    }
    /* Host pointers are only valid during this call. */
    memset(&L->desc.experts, 0, sizeof(L->desc.experts));
    memset(&L->desc.shared, 0, sizeof(L->desc.shared));
    /* the description says what is on the device */
    L->desc.experts.gate_up_dtype = kind[0].target;
    L->desc.experts.down_dtype = kind[1].target;
    L->desc.shared.gate_up_dtype = kind[2].target;
    L->desc.shared.down_dtype = kind[3].target;
    L->desc.weight_dtype = kind[0].target;
    L->desc.flags &= ~(uint32_t)MOEVK_LAYER_QUANTIZE;
    L->desc.router_weight = NULL;
    L->desc.router_bias = NULL;
    L->desc.correction_bias = NULL;
    L->desc.output_bias = NULL;
    L->desc.router_input_scale = NULL;
    L->desc.expert_norm_weight = NULL;
    L->desc.expert_weight_scale = NULL;
    L->desc.shared_gate = NULL;
    if (st) {
        layer_free(L);
        return st;
    }
    *out = L;
    return MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_layer_create,
               (moevk_context *ctx, const moevk_layer_desc *desc, moevk_layer **out), ctx,
               layer_create(ctx, desc, out))

const moevk_layer_desc *moevk_layer_get_desc(const moevk_layer *L)
{
    return L ? &L->desc : NULL;
}

MVK_PUBLIC_CTX(moevk_layer_reserve, (moevk_layer *L, uint32_t max_tokens), L ? L->ctx : NULL,
               moevk_workspace_reserve(L->ws, L, max_tokens))

void moevk_layer_memory(const moevk_layer *L, uint64_t *weight_bytes, uint64_t *scratch_bytes)
{
    if (weight_bytes)
        *weight_bytes = L ? L->weight_bytes : 0;
    if (scratch_bytes)
        *scratch_bytes = L ? L->ws->bytes : 0;
}

moevk_workspace *moevk_layer_workspace(const moevk_layer *L)
{
    return L ? L->ws : NULL;
}

/* ---- passes ------------------------------------------------------------------ */

moevk_status mvk_tokens_of(moevk_context *ctx, const moevk_tensor *t, const char *name,
                           uint32_t *T)
{
    if (t->shape[0] > UINT32_MAX / MOEVK_MAX_TOP_K)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED, "%s has too many tokens (%llu)", name,
                        (unsigned long long)t->shape[0]);
    *T = (uint32_t)t->shape[0];
    return MOEVK_SUCCESS;
}

static moevk_status check_io(moevk_layer *L, const moevk_tensor *x, const moevk_tensor *y,
                             uint32_t *T)
{
    moevk_context *ctx = L->ctx;
    moevk_status st;
    if (L->desc.flags & MOEVK_LAYER_NO_ROUTED_EXPERTS)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "the layer has MOEVK_LAYER_NO_ROUTED_EXPERTS: it holds no routed experts "
                        "to run a whole pass with (it is the token side of an expert-parallel "
                        "layer: route, then combine)");
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
    if (x->buffer == y->buffer && x->offset < y->offset + moevk_tensor_bytes(y) &&
        y->offset < x->offset + moevk_tensor_bytes(x))
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "x and y overlap");
    return mvk_tokens_of(ctx, x, "x", T);
}

/* The expert cache observes the admitted rows per expert of the last
 * pass (E words at word `at` of b). */
static moevk_status observe_counts(moevk_layer *L, const moevk_buffer *b, uint32_t at)
{
    const uint32_t E = L->desc.num_experts;
    if (L->cache->observed == L->cache->recorded)
        return MOEVK_SUCCESS;
    uint32_t *counts = mvk_alloc(L->ctx, sizeof(uint32_t) * E);
    if (!counts)
        return mvk_fail(L->ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "expert counts");
    moevk_status st = moevk_buffer_download(b, at * 4ull, counts, (uint64_t)E * 4);
    if (!st)
        mvk_cache_observe(L, counts);
    mvk_free(L->ctx, counts);
    return st;
}

static mvk_pass_io full_pass(const moevk_tensor *x, const moevk_tensor *y, bool stats)
{
    return (mvk_pass_io){
        .x = mvk_tensor_binding(x), .y = mvk_tensor_binding(y),
        .route = true, .permute = true, .experts = true, .shared = true, .combine = true,
        .stats = stats,
    };
}

static moevk_status layer_forward(moevk_layer *L, const moevk_tensor *x, moevk_tensor *y,
                                  moevk_routing_stats *stats)
{
    moevk_context *ctx = L->ctx;
    uint32_t T;
    mvk_pass_geometry g;
    moevk_status st;
    if ((st = check_io(L, x, y, &T)) || (st = mvk_pass_geometry_of(L, L->ws, T, &g)) ||
        (st = mvk_workspace_fit(L->ws, &g)))
        return st;
    mvk_pass_timer tm = {0};
    if (ctx->info.timestamps) {
        uint32_t q = mvk_pass_queries(&g);
        if ((st = mvk_workspace_timestamps(L->ws, q)))
            return st;
        tm.pool = L->ws->timestamps;
        tm.cap = q;
        if (!(tm.stage_of_pair = mvk_alloc(ctx, q / 2 + 1)))
            return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "timestamp table");
    }
    mvk_cmd c;
    if (!(st = mvk_cmd_begin(ctx, &c))) {
        mvk_pass_io io = full_pass(x, y, stats != NULL);
        io.cache_counts = L->cache != NULL;
        L->has_results = false;
        mvk_pass_record(L, &c, &g, &io, tm.pool ? &tm : NULL);
        st = mvk_cmd_submit_wait(&c);
    }
    if (!st) {
        L->has_results = stats != NULL;
        mvk_pass_timer_read(ctx, &tm, L->stage_ms);
        if (L->cache) /* the counts the pass copied into host memory */
            mvk_cache_observe(L, mvk_cache_host_counts(L));
    } else {
        L->ws->last_layer = NULL;
        mvk_cache_pass_failed(L);
    }
    mvk_free(ctx, tm.stage_of_pair);
    if (st)
        return st;
    return stats ? moevk_layer_read_stats(L, stats) : MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_layer_forward,
               (moevk_layer *L, const moevk_tensor *x, moevk_tensor *y,
                moevk_routing_stats *stats),
               L ? L->ctx : NULL, layer_forward(L, x, y, stats))

static moevk_status layer_record(moevk_layer *L, void *vk_command_buffer, const moevk_tensor *x,
                                 moevk_tensor *y)
{
    moevk_context *ctx = L->ctx;
    if (!vk_command_buffer)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "vk_command_buffer is NULL");
    uint32_t T;
    mvk_pass_geometry g;
    moevk_status st;
    if ((st = check_io(L, x, y, &T)) || (st = mvk_pass_geometry_of(L, L->ws, T, &g)))
        return st;
    if (!mvk_workspace_fits(L->ws, &g))
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "x has %u tokens but the layer's workspace is not reserved for that "
                        "many: call moevk_layer_reserve (or moevk_workspace_reserve) first",
                        T);
    mvk_cmd c;
    mvk_cmd_external(ctx, (VkCommandBuffer)vk_command_buffer, &L->ws->cache, &c);
    const bool stats = !(L->desc.flags & MOEVK_LAYER_RECORD_NO_STATS);
    const mvk_pass_io io = full_pass(x, y, stats);
    mvk_pass_record(L, &c, &g, &io, NULL);
    if (c.status) {
        L->ws->last_layer = NULL;
        mvk_cache_pass_failed(L);
        return c.status;
    }
    L->has_results = stats; /* valid once the caller's submission completed */
    return MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_layer_record,
               (moevk_layer *L, void *vk_command_buffer, const moevk_tensor *x, moevk_tensor *y),
               L ? L->ctx : NULL, layer_record(L, vk_command_buffer, x, y))

static moevk_status read_stats(moevk_layer *L, moevk_routing_stats *stats)
{
    moevk_context *ctx = L->ctx;
    if (!stats)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "stats is NULL");
    if (!L->has_results)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "the layer's last pass computed no statistics (it has not run, or ran "
                        "without: moevk_layer_forward with stats NULL, or a recorded pass with "
                        "MOEVK_LAYER_RECORD_NO_STATS)");
    const uint32_t E = L->desc.num_experts;
    uint32_t tail[4];
    moevk_status st =
        moevk_buffer_download(L->results, MVK_RESULTS_DROPPED(E) * 4ull, tail, sizeof(tail));
    if (st)
        return st;
    if (stats->tokens_per_expert &&
        (st = moevk_buffer_download(L->results, MVK_RESULTS_COUNTS(E) * 4ull,
                                    stats->tokens_per_expert, (uint64_t)E * 4)))
        return st;
    /* the expert cache learns from a recorded pass whose statistics are read */
    if (L->cache && (st = observe_counts(L, L->results, MVK_RESULTS_COUNTS(E))))
        return st;
    float f[3];
    memcpy(f, tail + 1, sizeof(f));
    stats->dropped = tail[0];
    stats->load_balancing_loss = f[0];
    stats->router_z_loss = f[1];
    stats->routing_entropy = f[2];
    return MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_layer_read_stats, (moevk_layer *L, moevk_routing_stats *stats),
               L ? L->ctx : NULL, read_stats(L, stats))

static moevk_status read_routing(moevk_layer *L, uint32_t T, uint32_t *ids, float *weights,
                                 int32_t *row)
{
    moevk_context *ctx = L->ctx;
    const moevk_workspace *ws = L->ws;
    if (ws->last_layer != L)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "the layer's workspace holds no routing of this layer: it has not run, "
                        "or another layer ran through the same workspace since");
    if (T == 0 || T != ws->last_tokens)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "T = %u differs from the last pass's %u tokens", T, ws->last_tokens);
    uint64_t bytes = (uint64_t)T * moevk_routing_slots(&L->desc) * 4;
    moevk_status st = MOEVK_SUCCESS;
    if (ids)
        st = moevk_buffer_download(ws->s[MVK_WS_IDS], 0, ids, bytes);
    if (!st && weights)
        st = moevk_buffer_download(ws->s[MVK_WS_WEIGHTS], 0, weights, bytes);
    if (!st && row)
        st = moevk_buffer_download(ws->s[MVK_WS_ROW_OF], 0, row, bytes);
    return st;
}

MVK_PUBLIC_CTX(moevk_layer_read_routing,
               (moevk_layer *L, uint32_t T, uint32_t *ids, float *weights, int32_t *row),
               L ? L->ctx : NULL, read_routing(L, T, ids, weights, row))

moevk_status moevk_layer_stage_times(const moevk_layer *L, double ms[MOEVK_STAGE_COUNT])
{
    if (!L || !ms)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    memcpy(ms, L->stage_ms, sizeof(L->stage_ms));
    return MOEVK_SUCCESS;
}
