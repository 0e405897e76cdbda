/*
 * Expert-parallel layers (moevk.h, moevk_ep_layer; design in
 * docs/architecture.md, "Expert parallelism").
 *
 * A rank holds two ordinary layers on its context:
 *   tok  the token side: the whole layer with MOEVK_LAYER_NO_ROUTED_EXPERTS
 *        (router, shared experts and their gate, output bias), replicated on
 *        every rank and run on the rank's own tokens;
 *   exp  the expert side: the rank's routed experts as a layer of their own
 *        (top_k 1, dropless, a zero router that never runs), whose
 *        moevk_layer_experts runs the received rows through the same
 *        kernels a single-device layer runs (batch invariant: a row's
 *        output does not depend on the other rows).
 * A forward pass:
 *   1 route the local tokens (tok; per routing chunk, whose logits also give
 *     the statistics' partial sums on the host); under expert choice the
 *     route leaves every token's p, and ep_choose makes each expert's
 *     choice over every rank's p (all-to-all-v) for the local tokens;
 *   2 agree; allgather every rank's token count and per-slot per-expert
 *     counts; admission on the host: an assignment's rank among those to
 *     its expert is what one device computes over the concatenation of all
 *     ranks' tokens in rank order (slot 0 of every rank's tokens, then slot
 *     1, ...), so capacity drops the same assignments;
 *   3 all-to-all of row counts (checked against what the counts imply),
 *     all-to-all-v of the admitted rows of x to the experts' ranks, sorted
 *     by expert (ranks own consecutive experts, so that is by rank);
 *   4 the local experts on the received rows (exp), the outputs sent back
 *     by all-to-all-v in the order they came;
 *   5 combine on the local tokens with the shared experts in the same sum
 *     (moevk_layer_combine_shared, forward's combine);
 *   6 the statistics: counts from step 2, the losses' partial sums
 *     allgathered and summed in rank order (the same on every rank).
 * Rows are staged through host memory. With device-to-device transports
 * (NCCL, CUDA-aware MPI, Vulkan external memory) steps 3 and 4 would send
 * from and receive into device buffers: the gather of the admitted rows, the
 * expert rows and the combine's expert_out are device tensors already.
 * Every rank makes the same sequence of transport calls whatever fails
 * locally: a local failure is carried to the next agreement, where every
 * rank learns it and returns an error.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layer.h"
#include "pass.h"
#include "ref/ref.h"
#include "workspace.h"

struct moevk_ep_layer {
    moevk_context *ctx;
    moevk_transport tr;
    moevk_layer_desc d; /* the token side's desc (defaults applied) */
    moevk_layer *tok, *exp;
    uint32_t R, rank, E, K, H;
    bool ec;         /* expert choice: the choice over every rank's tokens (ep_choose) */
    uint32_t nffn;   /* the FFN experts, 0 .. nffn - 1 (then the identity ones) */
    uint32_t *first; /* [R + 1]: rank r holds experts first[r] .. first[r + 1] - 1 */
    /* device staging, grown on demand: tokens of one batch */
    uint32_t cap_tok, cap_rows;
    moevk_tensor x, ids, w, row_of, eo, y; /* [cap_tok, ...] */
    moevk_tensor rx, rids, ro;             /* [cap_rows, ...] expert side */
    moevk_ep_times times;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---- transport calls, each timed and its failure named ------------------- */

static moevk_status tr_fail(moevk_ep_layer *L, moevk_status st, const char *what,
                            const char *msg)
{
    return mvk_fail(L->ctx, st ? st : MOEVK_ERROR_INTERNAL, "rank %u of %u: transport %s: %s",
                    L->rank, L->R, what, msg[0] ? msg : "failed");
}

/* Agreement on st: every rank returns an error when any rank failed. The
 * failing rank keeps its own message; the others name it. */
static moevk_status ep_sync(moevk_ep_layer *L, moevk_status st)
{
    char msg[256] = "";
    uint32_t who = 0;
    moevk_status theirs = MOEVK_SUCCESS;
    double t0 = now_ms();
    moevk_status ts = L->tr.agree(L->tr.user, st, &who, &theirs, msg, sizeof msg);
    L->times.exchange_ms += now_ms() - t0;
    if (ts)
        return st ? st : tr_fail(L, ts, "agreement", msg);
    if (st)
        return st;
    if (who < L->R)
        return mvk_fail(L->ctx, theirs,
                        "rank %u of %u failed (%s); every rank returns an error", who, L->R,
                        moevk_status_string(theirs));
    return MOEVK_SUCCESS;
}

static moevk_status ep_allgather(moevk_ep_layer *L, const void *send, uint64_t bytes,
                                 void *recv)
{
    char msg[256] = "";
    double t0 = now_ms();
    moevk_status st = L->tr.allgather(L->tr.user, send, bytes, recv, msg, sizeof msg);
    L->times.exchange_ms += now_ms() - t0;
    L->times.bytes_sent += bytes * (L->R - 1);
    L->times.bytes_received += bytes * (L->R - 1);
    return st ? tr_fail(L, st, "allgather", msg) : MOEVK_SUCCESS;
}

static moevk_status ep_alltoall(moevk_ep_layer *L, const uint64_t *send, uint64_t *recv)
{
    char msg[256] = "";
    double t0 = now_ms();
    moevk_status st = L->tr.alltoall_counts(L->tr.user, send, recv, msg, sizeof msg);
    L->times.exchange_ms += now_ms() - t0;
    L->times.bytes_sent += 8ull * (L->R - 1);
    L->times.bytes_received += 8ull * (L->R - 1);
    return st ? tr_fail(L, st, "all-to-all of counts", msg) : MOEVK_SUCCESS;
}

static moevk_status ep_alltoallv(moevk_ep_layer *L, const void *send, const uint64_t *sb,
                                 void *recv, const uint64_t *rb)
{
    char msg[256] = "";
    double t0 = now_ms();
    moevk_status st = L->tr.alltoallv(L->tr.user, send, sb, recv, rb, msg, sizeof msg);
    L->times.exchange_ms += now_ms() - t0;
    for (uint32_t r = 0; r < L->R; r++)
        if (r != L->rank) {
            L->times.bytes_sent += sb[r];
            L->times.bytes_received += rb[r];
        }
    return st ? tr_fail(L, st, "all-to-all-v", msg) : MOEVK_SUCCESS;
}

/* ---- create ---------------------------------------------------------------- */

static void staging_free(moevk_ep_layer *L)
{
    moevk_tensor *t[] = {&L->x, &L->ids, &L->w, &L->row_of, &L->eo, &L->y,
                         &L->rx, &L->rids, &L->ro};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        moevk_tensor_destroy(t[i]);
        memset(t[i], 0, sizeof *t[i]);
    }
    L->cap_tok = L->cap_rows = 0;
}

static void ep_free(moevk_ep_layer *L)
{
    staging_free(L);
    moevk_layer_destroy(L->exp);
    moevk_layer_destroy(L->tok);
    mvk_free(L->ctx, L->first);
    mvk_free(L->ctx, L);
}

void moevk_ep_layer_destroy(moevk_ep_layer *L)
{
    if (!L)
        return;
    moevk_context *ctx = L->ctx;
    if (mvk_enter(ctx))
        return;
    ep_free(L);
    mvk_leave(ctx);
}

static const uint8_t *offset_ptr(const void *p, uint64_t bytes)
{
    return p ? (const uint8_t *)p + bytes : NULL;
}

/* The expert side's desc: experts first .. first + n - 1 of d, top_k 1,
 * dropless, a zero router (router points at n * H zero floats). */
static void expert_desc(const moevk_layer_desc *din, const moevk_layer_desc *d, uint32_t first,
                        uint32_t n, const float *router, moevk_layer_desc *x)
{
    mvk_matrix_kind kind[4];
    mvk_layer_matrices(d, kind);
    const uint64_t H = d->hidden, F = d->ffn;
    const uint64_t gu = F * moevk_dtype_row_bytes(kind[0].dtype, H);
    const uint64_t dn = H * moevk_dtype_row_bytes(kind[1].dtype, F);
    const moevk_expert_weights *w = &din->experts;
    *x = (moevk_layer_desc){
        .hidden = d->hidden, .ffn = d->ffn, .num_experts = n, .top_k = 1,
        .routing = MOEVK_ROUTING_SOFTMAX_TOPK, .activation = d->activation,
        .swiglu_alpha = din->swiglu_alpha, .swiglu_limit = din->swiglu_limit,
        .weight_dtype = din->weight_dtype, .router_dtype = MOEVK_DTYPE_F32,
        .router_weight = router, .workspace = din->workspace,
        .flags = (din->flags & (MOEVK_LAYER_MATRIX_DTYPES | MOEVK_LAYER_QUANTIZE |
                                MOEVK_LAYER_VRAM_BUDGET | MOEVK_LAYER_CACHE_STATIC |
                                MOEVK_LAYER_IMPORT_HOST_EXPERTS)) |
                 MOEVK_LAYER_BATCH_INVARIANT,
        .quantize_dtype = din->quantize_dtype, .quantize_threads = din->quantize_threads,
        .vram_budget = din->vram_budget, .softcap_gate = din->softcap_gate,
        .softcap_up = din->softcap_up,
    };
    x->experts = (moevk_expert_weights){
        .gate = offset_ptr(w->gate, first * gu), .up = offset_ptr(w->up, first * gu),
        .down = offset_ptr(w->down, first * dn),
        .gate_experts = w->gate_experts ? w->gate_experts + first : NULL,
        .up_experts = w->up_experts ? w->up_experts + first : NULL,
        .down_experts = w->down_experts ? w->down_experts + first : NULL,
        .gate_bias = w->gate_bias ? w->gate_bias + first * F : NULL,
        .up_bias = w->up_bias ? w->up_bias + first * F : NULL,
        .down_bias = w->down_bias ? w->down_bias + first * H : NULL,
        .gate_up_dtype = w->gate_up_dtype, .down_dtype = w->down_dtype,
        .input_perm = w->input_perm ? w->input_perm + first * H : NULL,
    };
}

/* The local part of create: checks and the two layers. */
static moevk_status ep_create_local(moevk_ep_layer *L, const moevk_ep_desc *desc)
{
    moevk_context *ctx = L->ctx;
    const moevk_layer_desc *din = desc->layer;
    moevk_status st = moevk_layer_desc_validate(ctx, din);
    if (st)
        return st;
    mvk_layer_desc_defaults(din, &L->d);
    const moevk_layer_desc *d = &L->d;
    const moevk_status bad = MOEVK_ERROR_INVALID_ARGUMENT;
    if (d->flags & MOEVK_LAYER_NO_ROUTED_EXPERTS)
        return mvk_fail(ctx, bad,
                        "MOEVK_LAYER_NO_ROUTED_EXPERTS: an expert-parallel layer needs its "
                        "routed experts");
    if (d->expert_norm_eps > 0.0f)
        return mvk_fail(ctx, bad,
                        "expert_norm_eps = %g: an expert-parallel layer sends x's rows to the "
                        "experts' ranks, not the experts' normed input (not supported yet)",
                        (double)d->expert_norm_eps);
    L->E = d->num_experts;
    /* identity experts have no weights: every rank computes them for its
     * own tokens; the FFN experts are split */
    L->nffn = d->num_experts - d->num_zero_experts;
    L->K = moevk_routing_slots(d); /* E slots under expert choice */
    L->ec = d->routing == MOEVK_ROUTING_EXPERT_CHOICE;
    L->H = d->hidden;
    L->first = mvk_alloc(ctx, sizeof(uint32_t) * (L->R + 1));
    if (!L->first)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "expert placement");
    if (desc->expert_rank) {
        for (uint32_t e = 0; e < L->nffn; e++) {
            const uint32_t r = desc->expert_rank[e];
            if (r >= L->R)
                return mvk_fail(ctx, bad, "expert_rank[%u] = %u is not a rank in 0..%u", e, r,
                                L->R - 1);
            if (e && r < desc->expert_rank[e - 1])
                return mvk_fail(ctx, bad,
                                "expert_rank[%u] = %u after expert_rank[%u] = %u: each rank's "
                                "experts must be consecutive, in rank order",
                                e, r, e - 1, desc->expert_rank[e - 1]);
        }
        for (uint32_t r = 0, e = 0; r <= L->R; r++) {
            while (e < L->nffn && desc->expert_rank[e] < r)
                e++;
            L->first[r] = r == L->R ? L->nffn : e;
        }
    } else {
        for (uint32_t r = 0; r <= L->R; r++)
            L->first[r] = (uint32_t)((uint64_t)r * L->nffn / L->R);
    }

    moevk_layer_desc td = *din;
    td.flags = (din->flags & ~(uint32_t)(MOEVK_LAYER_VRAM_BUDGET | MOEVK_LAYER_CACHE_STATIC |
                                         MOEVK_LAYER_IMPORT_HOST_EXPERTS)) |
               (L->ec ? 0u : (uint32_t)MOEVK_LAYER_BATCH_INVARIANT) |
               MOEVK_LAYER_NO_ROUTED_EXPERTS;
    td.vram_budget = 0;
    if ((st = moevk_layer_create(ctx, &td, &L->tok)))
        return st;
    L->d = *moevk_layer_get_desc(L->tok);
    const uint32_t f0 = L->first[L->rank], n = L->first[L->rank + 1] - f0;
    if (!n)
        return MOEVK_SUCCESS;
    float *zeros = mvk_alloc(ctx, (size_t)n * L->H * sizeof(float));
    if (!zeros)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "the expert side's router");
    moevk_layer_desc d_def;
    mvk_layer_desc_defaults(din, &d_def);
    moevk_layer_desc xd;
    expert_desc(din, &d_def, f0, n, zeros, &xd);
    st = moevk_layer_create(ctx, &xd, &L->exp);
    mvk_free(ctx, zeros);
    return st;
}

static moevk_status ep_create(moevk_context *ctx, const moevk_ep_desc *desc,
                              moevk_ep_layer **out)
{
    if (!out)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!desc || !desc->layer || !desc->transport)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "desc, desc->layer or desc->transport "
                                                           "is NULL");
    const moevk_transport *tr = desc->transport;
    if (!tr->alltoall_counts || !tr->alltoallv || !tr->allgather || !tr->agree)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "the transport lacks a function (alltoall_counts, alltoallv, allgather "
                        "and agree are required)");
    if (!tr->size || tr->rank >= tr->size)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "transport rank %u is not in 0..size - 1 (size %u)", tr->rank,
                        tr->size);
    moevk_ep_layer *L = mvk_alloc(ctx, sizeof(*L));
    if (!L) {
        /* still at the agreement the other ranks wait in */
        moevk_status st = mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "expert-parallel layer");
        uint32_t who;
        moevk_status theirs;
        char msg[8];
        tr->agree(tr->user, st, &who, &theirs, msg, sizeof msg);
        return st;
    }
    L->ctx = ctx;
    L->tr = *tr;
    L->R = tr->size;
    L->rank = tr->rank;
    moevk_status st = ep_create_local(L, desc);
    st = ep_sync(L, st);
    /* every rank has the same shape and placement */
    uint32_t mine[6] = {L->E, L->K, L->H, L->d.ffn, L->first ? L->first[L->rank] : 0,
                        L->first ? L->first[L->rank + 1] : 0};
    uint32_t *all = NULL;
    if (!st) {
        all = mvk_alloc(ctx, sizeof mine * L->R);
        moevk_status lst = all ? MOEVK_SUCCESS
                               : mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "shape check");
        lst = ep_sync(L, lst);
        if (!lst)
            lst = ep_allgather(L, mine, sizeof mine, all);
        for (uint32_t r = 0; !lst && r < L->R; r++)
            if (memcmp(all + 6 * r, mine, 4 * sizeof(uint32_t)) ||
                all[6 * r + 4] != L->first[r] || all[6 * r + 5] != L->first[r + 1])
                lst = mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                               "rank %u describes another layer (E %u, k %u, H %u, F %u, experts "
                               "%u..%u) than rank %u (E %u, k %u, H %u, F %u, experts %u..%u)",
                               r, all[6 * r], all[6 * r + 1], all[6 * r + 2], all[6 * r + 3],
                               all[6 * r + 4], all[6 * r + 5], L->rank, L->E, L->K, L->H,
                               L->d.ffn, L->first[r], L->first[r + 1]);
        st = lst;
    }
    mvk_free(ctx, all);
    if (st) {
        ep_free(L);
        return st;
    }
    memset(&L->times, 0, sizeof L->times);
    *out = L;
    return MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_ep_layer_create,
               (moevk_context *ctx, const moevk_ep_desc *desc, moevk_ep_layer **out), ctx,
               ep_create(ctx, desc, out))

void moevk_ep_layer_experts(const moevk_ep_layer *L, uint32_t *first, uint32_t *count)
{
    if (first)
        *first = L ? L->first[L->rank] : 0;
    if (count)
        *count = L ? L->first[L->rank + 1] - L->first[L->rank] : 0;
}

moevk_status moevk_ep_layer_times(const moevk_ep_layer *L, moevk_ep_times *t)
{
    if (!L || !t)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    *t = L->times;
    return MOEVK_SUCCESS;
}

/* ---- forward ----------------------------------------------------------------- */

static moevk_status tensor2(moevk_context *ctx, moevk_dtype dt, uint64_t rows, uint64_t cols,
                            moevk_tensor *t)
{
    const uint64_t shape[2] = {rows, cols};
    return moevk_tensor_create(ctx, dt, 2, shape, t);
}

/* The view of t's first `rows` rows. */
static moevk_tensor rows_of(const moevk_tensor *t, uint64_t rows)
{
    moevk_tensor v = *t;
    v.shape[0] = rows;
    return v;
}

static moevk_status grow_tokens(moevk_ep_layer *L, uint32_t n)
{
    if (n <= L->cap_tok)
        return MOEVK_SUCCESS;
    moevk_context *ctx = L->ctx;
    moevk_tensor *t[] = {&L->x, &L->ids, &L->w, &L->row_of, &L->eo, &L->y};
    for (size_t i = 0; i < 6; i++) {
        moevk_tensor_destroy(t[i]);
        memset(t[i], 0, sizeof *t[i]);
    }
    L->cap_tok = 0;
    moevk_status st;
    if ((st = tensor2(ctx, MOEVK_DTYPE_F32, n, L->H, &L->x)) ||
        (st = tensor2(ctx, MOEVK_DTYPE_I32, n, L->K, &L->ids)) ||
        (st = tensor2(ctx, MOEVK_DTYPE_F32, n, L->K, &L->w)) ||
        (st = tensor2(ctx, MOEVK_DTYPE_I32, n, L->K, &L->row_of)) ||
        (st = tensor2(ctx, MOEVK_DTYPE_F32, (uint64_t)n * L->K, L->H, &L->eo)) ||
        (st = tensor2(ctx, MOEVK_DTYPE_F32, n, L->H, &L->y)))
        return st;
    L->cap_tok = n;
    return MOEVK_SUCCESS;
}

static moevk_status grow_rows(moevk_ep_layer *L, uint32_t n)
{
    if (n <= L->cap_rows)
        return MOEVK_SUCCESS;
    moevk_context *ctx = L->ctx;
    moevk_tensor *t[] = {&L->rx, &L->rids, &L->ro};
    for (size_t i = 0; i < 3; i++) {
        moevk_tensor_destroy(t[i]);
        memset(t[i], 0, sizeof *t[i]);
    }
    L->cap_rows = 0;
    moevk_status st;
    if ((st = tensor2(ctx, MOEVK_DTYPE_F32, n, L->H, &L->rx)) ||
        (st = tensor2(ctx, MOEVK_DTYPE_I32, n, 1, &L->rids)) ||
        (st = tensor2(ctx, MOEVK_DTYPE_F32, n, L->H, &L->ro)))
        return st;
    L->cap_rows = n;
    return MOEVK_SUCCESS;
}

/* Host arrays of one forward pass (freed together). */
typedef struct ep_pass {
    int32_t *ids;      /* [T K] */
    float *w;          /* [T K] */
    float *logits;     /* [batch E] */
    int64_t *pos;      /* [T K]: the assignment's row in the send buffer, -1 dropped */
    int64_t *counts;   /* [R (2 + K E)]: status, T, then counts[j][e] of each rank */
    int64_t *hdr;      /* [2 + K E]: this rank's, sent */
    uint64_t *sb, *rb; /* [R] bytes sent to / received from each rank */
    uint64_t *srows, *rrows; /* [R] rows */
    uint64_t *rexp;    /* [R * n]: rows from rank s for each local expert */
    float *send, *recv; /* [rows H] */
    float *xs, *xo;    /* [N H] rows in expert order and their outputs */
    float *eo;         /* [batch K H] the combine's expert rows */
    int32_t *tmp;      /* [max(batch K, N)] */
    double *part, *parts; /* [E + 2], [R (E + 2)] */
} ep_pass;

static void pass_free(moevk_context *ctx, ep_pass *p)
{
    void *v[] = {p->ids, p->w, p->logits, p->pos, p->counts, p->hdr, p->sb, p->rb, p->srows, p->rrows,
                 p->rexp, p->send, p->recv, p->xs, p->xo, p->eo, p->tmp, p->part, p->parts};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        mvk_free(ctx, v[i]);
}

static void *alloc_n(moevk_context *ctx, uint64_t n, size_t size, moevk_status *st)
{
    if (*st)
        return NULL;
    void *p = n ? mvk_alloc(ctx, (size_t)(n * size)) : mvk_alloc(ctx, 1);
    if (!p)
        *st = mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY,
                       "%llu bytes of expert-parallel staging", (unsigned long long)(n * size));
    return p;
}

/* Tokens per device batch of the token side: one routing chunk and one
 * expert chunk (route and combine_shared then run whole). */
static moevk_status batch_of(moevk_ep_layer *L, uint32_t T, uint32_t *B)
{
    mvk_pass_geometry g;
    moevk_status st = mvk_pass_geometry_of(L->tok, L->tok->ws, T ? T : 1, &g);
    if (st)
        return st;
    uint32_t b = MVK_MIN(g.route_chunk, g.expert_chunk);
    *B = MVK_MAX(1u, MVK_MIN(b, T ? T : 1));
    return MOEVK_SUCCESS;
}

/* An expert's input row for token row x and routing weight w: x, or
 * w * x with MOEVK_LAYER_WEIGHTS_ON_INPUT (the f32 product scale_rows.comp
 * computes, rounded once; bitwise unless a device flushes denormal
 * products). An identity expert's output is the same row. */
static void expert_input(const moevk_ep_layer *L, const float *x, float w, float *out)
{
    if (!(L->d.flags & MOEVK_LAYER_WEIGHTS_ON_INPUT)) {
        memcpy(out, x, (size_t)L->H * sizeof(float));
        return;
    }
    for (uint32_t h = 0; h < L->H; h++)
        out[h] = w * x[h];
}

/* Step 1: route, and the statistics' partial sums (over the local tokens,
 * in double: sum_t p_e, sum_t lse^2, sum_t entropy). */
static moevk_status ep_route(moevk_ep_layer *L, uint32_t T, const float *x, uint32_t B,
                             ep_pass *p)
{
    const uint32_t K = L->K, H = L->H, E = L->E;
    moevk_status st = MOEVK_SUCCESS;
    for (uint32_t t0 = 0; t0 < T && !st; t0 += B) {
        const uint32_t b = MVK_MIN(B, T - t0);
        moevk_tensor xv = rows_of(&L->x, b), iv = rows_of(&L->ids, b), wv = rows_of(&L->w, b);
        if ((st = moevk_buffer_upload(xv.buffer, 0, x + (size_t)t0 * H, (uint64_t)b * H * 4)) ||
            (st = mvk_layer_route_scores(L->tok, &xv, &iv, &wv)) ||
            (st = moevk_buffer_download(iv.buffer, 0, p->ids + (size_t)t0 * K,
                                        (uint64_t)b * K * 4)) ||
            (st = moevk_buffer_download(wv.buffer, 0, p->w + (size_t)t0 * K,
                                        (uint64_t)b * K * 4)) ||
            /* the capped logits route left for the statistics */
            (st = moevk_buffer_download(L->tok->ws->s[MVK_WS_LOGITS], 0, p->logits,
                                        (uint64_t)b * E * 4)))
            break;
        for (uint32_t t = 0; t < b; t++) {
            const float *l = p->logits + (size_t)t * E;
            double m = -INFINITY, s = 0, ent = 0;
            for (uint32_t e = 0; e < E; e++)
                m = (double)l[e] > m || isnan(l[e]) ? (double)l[e] : m;
            for (uint32_t e = 0; e < E; e++)
                s += exp((double)l[e] - m);
            for (uint32_t e = 0; e < E; e++) {
                const double q = exp((double)l[e] - m) / s;
                p->part[e] += q;
                if (q > 0)
                    ent -= q * log(q);
            }
            const double lse = m + log(s);
            p->part[E] += lse * lse;
            p->part[E + 1] += ent;
        }
    }
    return st;
}

/* The ranking key of expert_choice.comp: larger scores larger keys, -0 as
 * +0, NaN the smallest (0). */
static uint32_t ec_key(float v)
{
    if (isnan(v))
        return 0u;
    if (v == 0.0f)
        v = 0.0f;
    uint32_t b;
    memcpy(&b, &v, 4);
    b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return b > 1u ? b : 1u;
}

static int ec_key_desc(const void *a, const void *b)
{
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x > y ? -1 : x < y;
}

/* Expert choice over every rank's tokens: every rank's p [T_r, E] to every
 * rank (all-to-all-v), then on each rank, for each expert, the choice
 * expert_choice.comp makes over the concatenation in rank order (its C
 * largest keys, those at the C-th key by token), kept for the local
 * tokens: ids[t, e] = e or -1, weights[t, e] = p * routed_scaling_factor or
 * 0. Collective (every rank makes the same calls). */
static moevk_status ep_choose(moevk_ep_layer *L, uint32_t T, ep_pass *p)
{
    moevk_context *ctx = L->ctx;
    const uint32_t R = L->R, E = L->E, me = L->rank;
    moevk_status st = MOEVK_SUCCESS;
    uint64_t mine = T;
    uint64_t *Ts = alloc_n(ctx, R, 8, &st), *sb = alloc_n(ctx, R, 8, &st),
             *rb = alloc_n(ctx, R, 8, &st);
    float *send = alloc_n(ctx, (uint64_t)R * T * E, 4, &st), *all = NULL;
    uint32_t *keys = NULL;
    if ((st = ep_sync(L, st)) || (st = ep_allgather(L, &mine, 8, Ts)))
        goto out;
    uint64_t T_all = 0, T0 = 0;
    for (uint32_t r = 0; r < R; r++) {
        if (r == me)
            T0 = T_all;
        T_all += Ts[r];
        sb[r] = (uint64_t)T * E * 4;
        rb[r] = Ts[r] * E * 4;
        memcpy(send + (size_t)r * T * E, p->w, (size_t)T * E * 4);
    }
    if (T_all > UINT32_MAX)
        st = mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                      "the ranks' tokens total %llu, beyond a pass's 32-bit token count",
                      (unsigned long long)T_all);
    all = alloc_n(ctx, T_all * E, 4, &st);
    keys = alloc_n(ctx, T_all, 4, &st);
    if ((st = ep_sync(L, st)) || (st = ep_alltoallv(L, send, sb, all, rb)))
        goto out;
    const uint32_t C = moevk_ref_expert_choice_capacity(&L->d, (uint32_t)T_all);
    const float scale = L->d.routed_scaling_factor;
    for (uint32_t e = 0; e < E; e++) {
        for (uint64_t g = 0; g < T_all; g++)
            keys[g] = ec_key(all[g * E + e]);
        qsort(keys, T_all, 4, ec_key_desc);
        const uint32_t kstar = C ? keys[C - 1] : 0;
        uint64_t above = 0;
        while (above < C && keys[above] > kstar)
            above++;
        const uint64_t want = C - above; /* of the tokens at K*, the first want */
        uint64_t at = 0;
        for (uint64_t g = 0; g < T0 + T; g++) {
            const float v = all[g * E + e];
            const uint32_t k = ec_key(v);
            const bool is_at = k == kstar;
            const bool take = C > 0 && (k > kstar || (is_at && at < want));
            at += is_at;
            if (g >= T0) {
                const size_t i = (size_t)(g - T0) * E + e;
                p->ids[i] = take ? (int32_t)e : -1;
                p->w[i] = take ? v * scale : 0.0f;
            }
        }
    }
out:
    mvk_free(ctx, Ts), mvk_free(ctx, sb), mvk_free(ctx, rb);
    mvk_free(ctx, send), mvk_free(ctx, all), mvk_free(ctx, keys);
    return st;
}

static moevk_status ep_forward(moevk_ep_layer *L, uint32_t T, const float *x, float *y,
                               moevk_routing_stats *stats)
{
    moevk_context *ctx = L->ctx;
    const uint32_t R = L->R, me = L->rank, K = L->K, H = L->H, E = L->E;
    const uint32_t f0 = L->first[me], nloc = L->first[me + 1] - f0;
    const uint64_t row_bytes = (uint64_t)H * 4;
    ep_pass p = {0};
    memset(&L->times, 0, sizeof L->times);
    double t_start = now_ms();
    uint32_t B = 1;
    moevk_status st = MOEVK_SUCCESS;
    if (T && (!x || !y))
        st = mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "x or y is NULL with T = %u tokens", T);
    if (!st)
        st = batch_of(L, T, &B);
    p.ids = alloc_n(ctx, (uint64_t)T * K, 4, &st);
    p.w = alloc_n(ctx, (uint64_t)T * K, 4, &st);
    p.logits = alloc_n(ctx, (uint64_t)B * E, 4, &st);
    p.pos = alloc_n(ctx, (uint64_t)T * K, 8, &st);
    p.counts = alloc_n(ctx, (uint64_t)R * (2 + K * E), 8, &st);
    p.hdr = alloc_n(ctx, 2 + (uint64_t)K * E, 8, &st);
    p.sb = alloc_n(ctx, R, 8, &st);
    p.rb = alloc_n(ctx, R, 8, &st);
    p.srows = alloc_n(ctx, R, 8, &st);
    p.rrows = alloc_n(ctx, R, 8, &st);
    p.rexp = alloc_n(ctx, (uint64_t)R * (nloc ? nloc : 1), 8, &st);
    p.part = alloc_n(ctx, E + 2, 8, &st);
    p.parts = alloc_n(ctx, (uint64_t)R * (E + 2), 8, &st);
    p.tmp = alloc_n(ctx, (uint64_t)B * K, 4, &st);
    p.eo = alloc_n(ctx, T ? (uint64_t)B * K * H : 0, 4, &st);
    if (!st && T)
        st = grow_tokens(L, B);
    if (!st)
        st = ep_route(L, T, x, B, &p);

    /* 2: agree, allgather the counts */
    int64_t *mine = p.counts ? p.counts + (size_t)me * (2 + K * E) : NULL;
    /* (under expert choice the ids come from ep_choose, below) */
    for (uint64_t i = 0; !st && !L->ec && i < (uint64_t)T * K; i++) {
        if ((uint32_t)p.ids[i] >= E)
            st = mvk_fail(ctx, MOEVK_ERROR_INTERNAL, "route gave ids[%llu, %llu] = %d",
                          (unsigned long long)(i / K), (unsigned long long)(i % K), p.ids[i]);
        else
            mine[2 + (i % K) * E + (uint32_t)p.ids[i]]++;
    }
    if (!st)
        mine[1] = T;
    L->times.compute_ms += now_ms() - t_start;
    if ((st = ep_sync(L, st)))
        goto done;
    if (L->ec) {
        /* the experts choose over every rank's tokens; then the counts */
        if ((st = ep_choose(L, T, &p)))
            goto done;
        for (uint64_t i = 0; i < (uint64_t)T * K; i++)
            if (p.ids[i] != -1)
                mine[2 + (i % K) * E + (uint32_t)p.ids[i]]++;
    }
    /* (sent from a copy: the receive buffer holds this rank's block too) */
    memcpy(p.hdr, mine, (2 + (size_t)K * E) * 8);
    if ((st = ep_allgather(L, p.hdr, (2 + (uint64_t)K * E) * 8, p.counts)))
        goto done;
    const size_t stride = 2 + (size_t)K * E;
    uint64_t T_all = 0;
    for (uint32_t r = 0; r < R; r++)
        T_all += (uint64_t)p.counts[r * stride + 1];
    if (T_all > UINT32_MAX)
        st = mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                      "the ranks' tokens total %llu, beyond a pass's 32-bit token count",
                      (unsigned long long)T_all);
    const uint32_t C = T_all ? moevk_ref_capacity(&L->d, (uint32_t)T_all) : 0;
    /* base[j][e] for rank s: assignments to e before rank s's slot-j ones */
#define CNT(r, j, e) ((uint64_t)p.counts[(size_t)(r) * stride + 2 + (size_t)(j) * E + (e)])
    uint64_t *tot = alloc_n(ctx, (uint64_t)E * K, 8, &st); /* tot[j * E + e] over ranks */
    uint64_t *local_off = alloc_n(ctx, (uint64_t)E + 1, 8, &st);
    uint64_t *fill = alloc_n(ctx, E, 8, &st);
    if (st) {
        mvk_free(ctx, tot);
        mvk_free(ctx, local_off);
        mvk_free(ctx, fill);
        st = ep_sync(L, st);
        goto done;
    }
    for (uint32_t r = 0; r < R; r++)
        for (uint32_t j = 0; j < K; j++)
            for (uint32_t e = 0; e < E; e++)
                tot[j * E + e] += CNT(r, j, e);
    /* the admitted assignments of rank s to expert e at slot j */
#define BASE(s, j, e, out)                                                                 \
    do {                                                                                   \
        uint64_t b_ = 0;                                                                   \
        for (uint32_t jj = 0; jj < (j); jj++)                                              \
            b_ += tot[jj * E + (e)];                                                       \
        for (uint32_t rr = 0; rr < (s); rr++)                                              \
            b_ += CNT(rr, j, e);                                                           \
        (out) = b_;                                                                        \
    } while (0)
    uint64_t *adm = fill; /* admitted local assignments per expert (reused below) */
    for (uint32_t j = 0; j < K; j++)
        for (uint32_t e = 0; e < E; e++) {
            uint64_t base;
            BASE(me, j, e, base);
            const uint64_t c = CNT(me, j, e);
            adm[e] += base >= C || e >= L->nffn ? 0 : MVK_MIN(c, (uint64_t)C - base);
        }
    for (uint32_t e = 0; e < E; e++)
        local_off[e + 1] = local_off[e] + adm[e];
    memset(fill, 0, (size_t)E * 8);
    {
        /* each assignment's position: priority order (slot, token), rank
         * base[j][e] + its place among this rank's slot-j ones */
        uint64_t *seen = alloc_n(ctx, (uint64_t)E * K, 8, &st);
        for (uint32_t j = 0; !st && j < K; j++)
            for (uint32_t t = 0; t < T; t++) {
                if (p.ids[(size_t)t * K + j] == -1) { /* expert choice: not taken */
                    p.pos[(size_t)t * K + j] = -1;
                    continue;
                }
                const uint32_t e = (uint32_t)p.ids[(size_t)t * K + j];
                uint64_t base;
                BASE(me, j, e, base);
                const uint64_t rank_e = base + seen[j * E + e]++;
                /* -1 dropped, -2 an identity expert (computed here) */
                p.pos[(size_t)t * K + j] = rank_e >= C        ? -1
                                           : e >= L->nffn ? -2
                                                          : (int64_t)(local_off[e] + fill[e]++);
            }
        mvk_free(ctx, seen);
    }
    /* rows to each rank; rows from each rank for each local expert */
    for (uint32_t r = 0; r < R; r++) {
        p.srows[r] = local_off[L->first[r + 1]] - local_off[L->first[r]];
        p.sb[r] = p.srows[r] * row_bytes;
        uint64_t sum = 0;
        for (uint32_t i = 0; i < nloc; i++) {
            const uint32_t e = f0 + i;
            uint64_t a = 0;
            for (uint32_t j = 0; j < K; j++) {
                uint64_t base;
                BASE(r, j, e, base);
                const uint64_t c = CNT(r, j, e);
                a += base >= C ? 0 : MVK_MIN(c, (uint64_t)C - base);
            }
            p.rexp[(size_t)r * nloc + i] = a;
            sum += a;
        }
        p.rb[r] = sum * row_bytes;
    }
    /* statistics: every expert's assignments before dropping (the
     * load-balancing loss's f_e), exact */
    uint64_t *totals = alloc_n(ctx, E, 8, &st);
    for (uint32_t e = 0; !st && e < E; e++)
        for (uint32_t j = 0; j < K; j++)
            totals[e] += tot[j * E + e];
#undef BASE
#undef CNT
    mvk_free(ctx, tot);
    mvk_free(ctx, fill);
    const uint64_t send_rows = local_off[E];
    mvk_free(ctx, local_off);

    /* 3: counts, then rows */
    uint64_t recv_rows = 0;
    for (uint32_t r = 0; r < R; r++)
        recv_rows += p.rb[r] / row_bytes;
    p.send = alloc_n(ctx, send_rows * H, 4, &st);
    p.recv = alloc_n(ctx, recv_rows * H, 4, &st);
    p.xs = alloc_n(ctx, recv_rows * H, 4, &st);
    p.xo = alloc_n(ctx, recv_rows * H, 4, &st);
    for (uint32_t t = 0; !st && t < T; t++)
        for (uint32_t j = 0; j < K; j++)
            if (p.pos[(size_t)t * K + j] >= 0)
                expert_input(L, x + (size_t)t * H, p.w[(size_t)t * K + j],
                             p.send + (size_t)p.pos[(size_t)t * K + j] * H);
    if ((st = ep_sync(L, st)))
        goto free_totals;
    if ((st = ep_alltoall(L, p.srows, p.rrows)))
        goto free_totals;
    for (uint32_t r = 0; r < R && !st; r++)
        if (p.rrows[r] * row_bytes != p.rb[r])
            st = mvk_fail(ctx, MOEVK_ERROR_INTERNAL,
                          "rank %u sends %llu rows to rank %u, whose counts say %llu", r,
                          (unsigned long long)p.rrows[r], me,
                          (unsigned long long)(p.rb[r] / row_bytes));
    if ((st = ep_sync(L, st)))
        goto free_totals;
    if ((st = ep_alltoallv(L, p.send, p.sb, p.recv, p.rb)))
        goto free_totals;
    for (uint32_t r = 0; r < R; r++)
        if (r != me) {
            L->times.rows_sent += p.srows[r];
            L->times.rows_received += p.rrows[r];
        }

    /* 4: the local experts on the received rows, in expert order */
    t_start = now_ms();
    L->times.expert_rows = recv_rows;
    if (recv_rows) {
        /* received: by source rank, within it by expert; to expert order */
        uint64_t *src_at = alloc_n(ctx, R, 8, &st);
        int32_t *eid = alloc_n(ctx, recv_rows, 4, &st);
        if (!st) {
            uint64_t at = 0;
            for (uint32_t r = 0; r < R; r++) {
                src_at[r] = at;
                at += p.rrows[r];
            }
            uint64_t out = 0;
            for (uint32_t i = 0; i < nloc; i++)
                for (uint32_t r = 0; r < R; r++) {
                    const uint64_t n = p.rexp[(size_t)r * nloc + i];
                    memcpy(p.xs + out * H, p.recv + src_at[r] * H, n * row_bytes);
                    for (uint64_t q = 0; q < n; q++)
                        eid[out + q] = (int32_t)i;
                    src_at[r] += n;
                    out += n;
                }
        }
        /* in batches of the expert side's one-chunk limit */
        uint32_t XB = 1;
        mvk_pass_geometry g;
        if (!st && !(st = mvk_pass_geometry_of(L->exp, L->exp->ws,
                                                (uint32_t)MVK_MIN(recv_rows, (uint64_t)UINT32_MAX),
                                                &g)))
            XB = (uint32_t)MVK_MIN((uint64_t)g.expert_chunk, recv_rows);
        if (!st)
            st = grow_rows(L, XB);
        for (uint64_t r0 = 0; !st && r0 < recv_rows; r0 += XB) {
            const uint32_t n = (uint32_t)MVK_MIN((uint64_t)XB, recv_rows - r0);
            moevk_tensor xv = rows_of(&L->rx, n), iv = rows_of(&L->rids, n),
                         ov = rows_of(&L->ro, n);
            if ((st = moevk_buffer_upload(xv.buffer, 0, p.xs + r0 * H, n * row_bytes)) ||
                (st = moevk_buffer_upload(iv.buffer, 0, eid + r0, (uint64_t)n * 4)) ||
                (st = moevk_layer_experts(L->exp, &xv, &iv, &ov)) ||
                (st = moevk_buffer_download(ov.buffer, 0, p.xo + r0 * H, n * row_bytes)))
                break;
        }
        /* back to the order they came in */
        if (!st) {
            uint64_t at = 0;
            for (uint32_t r = 0; r < R; r++) {
                src_at[r] = at;
                at += p.rrows[r];
            }
            uint64_t in = 0;
            for (uint32_t i = 0; i < nloc; i++)
                for (uint32_t r = 0; r < R; r++) {
                    const uint64_t n = p.rexp[(size_t)r * nloc + i];
                    memcpy(p.recv + src_at[r] * H, p.xo + in * H, n * row_bytes);
                    src_at[r] += n;
                    in += n;
                }
        }
        mvk_free(ctx, src_at);
        mvk_free(ctx, eid);
    }
    L->times.compute_ms += now_ms() - t_start;
    if ((st = ep_sync(L, st)))
        goto free_totals;
    /* outputs back: what came from rank r returns to it */
    if ((st = ep_alltoallv(L, p.recv, p.rb, p.send, p.sb)))
        goto free_totals;

    /* 5: combine on the local tokens */
    t_start = now_ms();
    for (uint32_t t0 = 0; !st && t0 < T; t0 += B) {
        const uint32_t b = MVK_MIN(B, T - t0);
        moevk_tensor xv = rows_of(&L->x, b), wv = rows_of(&L->w, b), rv = rows_of(&L->row_of, b),
                     ev = rows_of(&L->eo, (uint64_t)b * K), yv = rows_of(&L->y, b);
        for (uint32_t i = 0; i < b * K; i++) {
            const int64_t q = p.pos[(size_t)t0 * K + i];
            p.tmp[i] = q != -1 ? (int32_t)i : -1;
            if (q >= 0)
                memcpy(p.eo + (size_t)i * H, p.send + (size_t)q * H, row_bytes);
            else if (q == -2) /* an identity expert's output is its input */
                expert_input(L, x + ((size_t)t0 + i / K) * H, p.w[(size_t)t0 * K + i],
                             p.eo + (size_t)i * H);
        }
        if ((st = moevk_buffer_upload(ev.buffer, 0, p.eo, (uint64_t)b * K * row_bytes)) ||
            (st = moevk_buffer_upload(xv.buffer, 0, x + (size_t)t0 * H, (uint64_t)b * row_bytes)) ||
            (st = moevk_buffer_upload(wv.buffer, 0, p.w + (size_t)t0 * K, (uint64_t)b * K * 4)) ||
            (st = moevk_buffer_upload(rv.buffer, 0, p.tmp, (uint64_t)b * K * 4)) ||
            (st = moevk_layer_combine_shared(L->tok, &xv, &ev, &rv, &wv, &yv)) ||
            (st = moevk_buffer_download(yv.buffer, 0, y + (size_t)t0 * H, (uint64_t)b * row_bytes)))
            break;
    }
    L->times.compute_ms += now_ms() - t_start;
    if ((st = ep_sync(L, st)))
        goto free_totals;

    /* 6: the losses over every token, summed in rank order (exchanged
     * whether this rank asked for statistics or not: every rank makes the
     * same calls) */
    if ((st = ep_allgather(L, p.part, (uint64_t)(E + 2) * 8, p.parts)))
        goto free_totals;
    if (stats) {
        double P[MOEVK_MAX_EXPERTS + 2] = {0};
        for (uint32_t r = 0; r < R; r++)
            for (uint32_t i = 0; i < E + 2; i++)
                P[i] += p.parts[(size_t)r * (E + 2) + i];
        double lb = 0;
        const double A = (double)moevk_ref_assignments(&L->d, (uint32_t)T_all);
        for (uint32_t e = 0; e < E; e++)
            lb += ((double)totals[e] / A) * (P[e] / (double)T_all);
        uint64_t dropped = 0;
        for (uint32_t e = 0; e < E; e++) {
            const uint64_t a = MVK_MIN(totals[e], (uint64_t)C);
            dropped += totals[e] - a;
            if (stats->tokens_per_expert)
                stats->tokens_per_expert[e] = (uint32_t)a;
        }
        stats->dropped = dropped;
        stats->load_balancing_loss = T_all ? (double)E * lb : 0;
        stats->router_z_loss = T_all ? P[E] / (double)T_all : 0;
        stats->routing_entropy = T_all ? P[E + 1] / (double)T_all : 0;
    }
free_totals:
    mvk_free(ctx, totals);
done:
    pass_free(ctx, &p);
    return st;
}

MVK_PUBLIC_CTX(moevk_ep_layer_forward,
               (moevk_ep_layer *L, uint32_t T, const float *x, float *y,
                moevk_routing_stats *stats),
               L ? L->ctx : NULL, ep_forward(L, T, x, y, stats))
