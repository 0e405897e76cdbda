/*
 * Quantise at load (MOEVK_LAYER_QUANTIZE): one expert matrix of host rows
 * in f32/f16/bf16 into its device format, rows split over host threads,
 * with progress through the log callback for large layers. The row
 * quantisers are src/quantize.c; layer.c uploads what this produces, one
 * matrix at a time (the only host copy is that one matrix's packed bytes).
 *
 * Rows are quantised independently, so the bytes do not depend on the
 * thread count.
 */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "formats.h"
#include "layer.h"
#include "layer_quantize.h"
#include "quantize.h"
#include "ref/ref.h"

#define MAX_THREADS 64
/* below this many elements a matrix is quantised on the calling thread */
#define PARALLEL_ELEMS (1u << 16)
/* layers whose host weights exceed this report progress */
#define PROGRESS_BYTES (64ull << 20)

typedef struct job {
    const uint8_t *src;
    uint8_t *dst;
    moevk_dtype src_dt, dt;
    uint64_t row0, rows, elems, src_row_bytes, dst_row_bytes;
    float *scratch; /* elems floats */
    uint64_t bad_row; /* first row that failed, UINT64_MAX if none */
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    j->bad_row = UINT64_MAX;
    for (uint64_t r = j->row0; r < j->row0 + j->rows; r++) {
        const uint8_t *s = j->src + r * j->src_row_bytes;
        const float *row = (const float *)(const void *)s;
        if (j->src_dt != MOEVK_DTYPE_F32) {
            for (uint64_t i = 0; i < j->elems; i++) {
                const uint16_t h = (uint16_t)(s[2 * i] | s[2 * i + 1] << 8);
                j->scratch[i] = j->src_dt == MOEVK_DTYPE_F16 ? moevk_half_to_float(h)
                                                             : moevk_bf16_to_float(h);
            }
            row = j->scratch;
        } else if ((uintptr_t)s % sizeof(float)) {
            memcpy(j->scratch, s, j->elems * sizeof(float));
            row = j->scratch;
        }
        if (mvk_quantize_row(j->dt, row, j->elems, j->dst + r * j->dst_row_bytes)) {
            j->bad_row = r;
            break;
        }
    }
    return NULL;
}

uint32_t mvk_quantize_threads(uint32_t asked)
{
    long n = asked ? (long)asked : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1u : n > MAX_THREADS ? MAX_THREADS : (uint32_t)n;
}

void mvk_quant_progress_begin(mvk_quant_progress *p, uint64_t total_src_bytes)
{
    memset(p, 0, sizeof(*p));
    p->total = total_src_bytes;
    p->report = total_src_bytes > PROGRESS_BYTES;
}

moevk_status mvk_quantize_matrix(moevk_context *ctx, mvk_quant_progress *p,
                                 const mvk_quant_matrix *m, const void *src, void *dst)
{
    const uint64_t src_row = moevk_dtype_size(m->src_dtype) * m->row_elems;
    const uint64_t dst_row = mvk_format_row_bytes(m->dtype, m->row_elems);
    uint32_t nt = mvk_quantize_threads(m->threads);
    if ((uint64_t)m->rows * m->row_elems < PARALLEL_ELEMS)
        nt = 1;
    if (nt > m->rows)
        nt = m->rows ? m->rows : 1;
    job jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    bool started[MAX_THREADS] = {false};
    moevk_status st = MOEVK_SUCCESS;
    float *scratch = mvk_alloc(ctx, sizeof(float) * m->row_elems * nt);
    if (!scratch)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "quantisation scratch");
    for (uint32_t t = 0; t < nt; t++) {
        const uint64_t r0 = (uint64_t)m->rows * t / nt, r1 = (uint64_t)m->rows * (t + 1) / nt;
        jobs[t] = (job){
            .src = src, .dst = dst, .src_dt = m->src_dtype, .dt = m->dtype, .row0 = r0,
            .rows = r1 - r0, .elems = m->row_elems, .src_row_bytes = src_row,
            .dst_row_bytes = dst_row, .scratch = scratch + (size_t)t * m->row_elems,
        };
    }
    /* thread 0's share runs here; a thread that cannot start runs here too */
    for (uint32_t t = 1; t < nt; t++)
        started[t] = pthread_create(&tid[t], NULL, run_job, &jobs[t]) == 0;
    run_job(&jobs[0]);
    for (uint32_t t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            run_job(&jobs[t]);
    }
    mvk_free(ctx, scratch);
    for (uint32_t t = 0; t < nt && !st; t++)
        if (jobs[t].bad_row != UINT64_MAX)
            st = mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                          "%s %u's %s matrix, row %llu: not finite, cannot be quantised to %s",
                          m->set, m->expert, m->matrix, (unsigned long long)jobs[t].bad_row,
                          moevk_dtype_name(m->dtype));
    if (st)
        return st;
    p->done += (uint64_t)m->rows * src_row;
    if (p->report) {
        const uint32_t tenth = (uint32_t)(p->done * 10 / (p->total ? p->total : 1));
        if (tenth > p->reported) {
            p->reported = tenth;
            mvk_log(ctx, MOEVK_LOG_INFO, "quantising the expert weights: %u%% (%.1f of %.1f MiB)",
                    tenth * 10, (double)p->done / 1048576.0, (double)p->total / 1048576.0);
        }
    }
    return MOEVK_SUCCESS;
}

/* ---- a whole description at once ------------------------------------------ */

void mvk_layer_desc_quantized_free(moevk_context *ctx, void *storage)
{
    mvk_free(ctx, storage);
}

moevk_status mvk_layer_desc_quantized(moevk_context *ctx, const moevk_layer_desc *in,
                                      moevk_layer_desc *out, void **storage)
{
    *storage = NULL;
    moevk_status st = moevk_layer_desc_validate(ctx, in);
    if (st)
        return st;
    moevk_layer_desc d;
    mvk_layer_desc_defaults(in, &d);
    *out = d;
    if (!(d.flags & MOEVK_LAYER_QUANTIZE))
        return MOEVK_SUCCESS;
    mvk_matrix_kind kind[4];
    mvk_layer_matrices(&d, kind);
    const bool gated = moevk_activation_is_gated(d.activation);
    /* one allocation: every packed matrix of both sets */
    uint64_t off[4][3], total = 0, src_total = 0;
    for (int s = 0; s < 2; s++) {
        const uint64_t count = s ? d.num_shared : moevk_ref_ffn_experts(&d);
        const uint32_t ffn = s ? d.shared_ffn : d.ffn;
        for (int m = gated ? 0 : 1; count && m < 3; m++) {
            const mvk_matrix_kind *k = &kind[2 * s + (m == 2)];
            const uint64_t rows = m == 2 ? d.hidden : ffn;
            off[2 * s][m] = total;
            total += count * rows * mvk_format_row_bytes(k->target, k->row);
            src_total += count * rows * k->row * moevk_dtype_size(k->dtype);
        }
    }
    uint8_t *buf = mvk_alloc(ctx, total ? total : 1);
    if (!buf)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY,
                        "%llu bytes for the quantised weights", (unsigned long long)total);
    mvk_quant_progress prog;
    mvk_quant_progress_begin(&prog, src_total);
    static const char *const names[3] = {"gate", "up", "down"};
    for (int s = 0; s < 2 && !st; s++) {
        const uint32_t count = s ? d.num_shared : moevk_ref_ffn_experts(&d);
        const uint32_t ffn = s ? d.shared_ffn : d.ffn;
        const moevk_expert_weights *w = s ? &in->shared : &in->experts;
        moevk_expert_weights *o = s ? &out->shared : &out->experts;
        for (int m = gated ? 0 : 1; count && m < 3 && !st; m++) {
            const mvk_matrix_kind *k = &kind[2 * s + (m == 2)];
            const uint32_t rows = m == 2 ? d.hidden : ffn;
            const uint64_t sb = (uint64_t)rows * k->row * moevk_dtype_size(k->dtype);
            const uint64_t db = rows * mvk_format_row_bytes(k->target, k->row);
            const void *whole = m == 0 ? w->gate : m == 1 ? w->up : w->down;
            const void *const *per = m == 0   ? w->gate_experts
                                     : m == 1 ? w->up_experts
                                              : w->down_experts;
            for (uint32_t e = 0; e < count && !st; e++) {
                const void *src = whole ? (const uint8_t *)whole + e * sb : per[e];
                const mvk_quant_matrix q = {
                    .src_dtype = k->dtype, .dtype = k->target, .rows = rows,
                    .row_elems = k->row, .threads = d.quantize_threads,
                    .set = s ? "shared expert" : "expert", .matrix = names[m], .expert = e,
                };
                st = mvk_quantize_matrix(ctx, &prog, &q, src, buf + off[2 * s][m] + e * db);
            }
            const void *packed = buf + off[2 * s][m];
            if (m == 0)
                o->gate = packed, o->gate_experts = NULL;
            else if (m == 1)
                o->up = packed, o->up_experts = NULL;
            else
                o->down = packed, o->down_experts = NULL;
        }
        o->gate_up_dtype = kind[2 * s].target;
        o->down_dtype = kind[2 * s + 1].target;
    }
    if (st) {
        mvk_free(ctx, buf);
        return st;
    }
    out->flags &= ~(uint32_t)MOEVK_LAYER_QUANTIZE;
    out->weight_dtype = kind[0].target;
    *storage = buf;
    return MOEVK_SUCCESS;
}
