/*
 * CUDA kernels of the CUDA backends: every stage of docs/semantics.md in
 * f32, written for evident correctness rather than speed.
 *
 * Weights of a block format (Q4_K, MXFP4, ...) are read packed, as
 * uploaded: each element is decoded in registers where it is used, by the
 * formulas the C reference decodes with (src/format_decode.h); nothing is
 * dequantised to memory, except by the cuBLAS backends' dequantize(), one
 * expert matrix at a time.
 *
 * Rules every kernel follows:
 *  - one thread per output element (or per token / per expert where a stage
 *    is sequential by nature), loops in a fixed order, no floating-point
 *    atomics: the same input gives bitwise the same output;
 *  - elementwise kernels use grid-stride loops, so any size launches;
 *  - NaN propagates as in the reference (src/ref): comparisons are written
 *    so that NaN falls through clamps and maxima, and selection ranks NaN
 *    below every number.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"
#include "format_decode.h"

namespace mvkcu {
namespace {

constexpr uint32_t NONE = 0xffffffffu;
constexpr int BLOCK = 256;
constexpr size_t MAX_BLOCKS = 1u << 20;

/* Blocks of BLOCK threads for n elements (grid-stride loops do the rest). */
unsigned blocks_for(size_t n)
{
    size_t b = (n + BLOCK - 1) / BLOCK;
    if (b == 0)
        b = 1;
    return (unsigned)(b < MAX_BLOCKS ? b : MAX_BLOCKS);
}

#define GRID_STRIDE(i, n)                                                                     \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                  \
         i += (size_t)gridDim.x * blockDim.x)

/* ---- number formats (bit conversions of src/format_decode.h, exact) ---- */

/* Element i of an array of dtype DT (f32, f16 or bf16), as float. */
template <int DT> __device__ __forceinline__ float load(const void *p, size_t i)
{
    if (DT == MOEVK_DTYPE_F32)
        return ((const float *)p)[i];
    if (DT == MOEVK_DTYPE_F16)
        return mvk_dq_half(((const uint16_t *)p)[i]);
    return mvk_dq_bfloat(((const uint16_t *)p)[i]);
}

/* The template dtype of the expert kernels for weights of any block
 * format: the format itself (WFormat::dt) is read at run time. */
constexpr int BLOCKS = -1;

/* Row `row` (of `cols` elements, whole blocks) of a weight stack in format
 * f, to read with wload. Rows of all experts are consecutive. */
template <int DT>
__device__ __forceinline__ const void *wrow(const WFormat &f, const void *p, size_t row,
                                            uint32_t cols)
{
    if constexpr (DT == BLOCKS)
        return (const uint8_t *)p + row * (cols / f.block_elems) * f.block_bytes;
    else
        return (const uint8_t *)p + row * cols * (DT == MOEVK_DTYPE_F32 ? 4u : 2u);
}

/* Element c of a row in format f: f32/f16/bf16 by their template, block
 * formats decoded from their block (src/format_decode.h). */
template <int DT>
__device__ __forceinline__ float wload(const WFormat &f, const void *row, uint32_t c)
{
    if constexpr (DT == BLOCKS)
        return mvk_dq_element(f.dt, (const uint8_t *)row + c / f.block_elems * f.block_bytes,
                              c % f.block_elems);
    else
        return load<DT>(row, c);
}

/* Store v rounded to nearest even in dtype DT. */
template <int DT> __device__ __forceinline__ void store(void *p, size_t i, float v)
{
    if (DT == MOEVK_DTYPE_F32)
        ((float *)p)[i] = v;
    else if (DT == MOEVK_DTYPE_F16)
        ((__half *)p)[i] = __float2half_rn(v);
    else
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
}

/* ---- activations (the formulas of src/ref/ref_layer.c, in f32) ---------- */

__device__ __forceinline__ float sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* sigmoid_grouped's score: sigmoid, or sqrt(softplus) as docs/semantics.md
 * writes it, max(x, 0) + log1p(e^-|x|) */
__device__ __forceinline__ float group_score(int score_fn, float x)
{
    if (score_fn == MOEVK_SCORE_SQRTSOFTPLUS)
        return sqrtf(fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))));
    return sigmoid(x);
}

__device__ __forceinline__ float gelu_erf(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

__device__ __forceinline__ float gelu_tanh(float x)
{
    /* 0.5 x (1 + tanh(y)) as x sigmoid(2y): no cancellation for negative x */
    return x / (1.0f + expf(-2.0f * 0.79788456080286536f * (x + 0.044715f * x * x * x)));
}

__device__ __forceinline__ bool is_gated(int act)
{
    return act == MOEVK_ACT_SWIGLU || act == MOEVK_ACT_GEGLU || act == MOEVK_ACT_GEGLU_TANH ||
           act == MOEVK_ACT_SWIGLU_OAI || act == MOEVK_ACT_SWIGLU_CLAMP ||
           act == MOEVK_ACT_SWIGLU_SOFTCAP || act == MOEVK_ACT_SWIGLU_POSTCLAMP;
}

/* h = act(g, u); g unused by the non-gated activations. */
/* The clamps of the limited SwiGLUs, written so that NaN passes through. */
__device__ __forceinline__ void clamp_gate_up(float &g, float &u, float limit)
{
    if (g > limit)
        g = limit;
    if (u > limit)
        u = limit;
    if (u < -limit)
        u = -limit;
}

__device__ float activation(int act, float g, float u, float alpha, float limit)
{
    switch (act) {
    case MOEVK_ACT_SWIGLU:
        return g / (1.0f + expf(-g)) * u; /* silu(g) * u */
    case MOEVK_ACT_GEGLU:
        return gelu_erf(g) * u;
    case MOEVK_ACT_GEGLU_TANH:
        return gelu_tanh(g) * u;
    case MOEVK_ACT_SWIGLU_OAI:
        clamp_gate_up(g, u, limit);
        return (u + 1.0f) * g * sigmoid(alpha * g);
    case MOEVK_ACT_RELU:
        return u < 0.0f ? 0.0f : u; /* NaN passes */
    case MOEVK_ACT_GELU:
        return gelu_erf(u);
    case MOEVK_ACT_RELU2:
        u = u < 0.0f ? 0.0f : u; /* NaN passes */
        return u * u;
    case MOEVK_ACT_SWIGLU_CLAMP:
        clamp_gate_up(g, u, limit);
        return g / (1.0f + expf(-g)) * u;
    case MOEVK_ACT_SWIGLU_SOFTCAP: /* alpha, limit: the gate's and up's soft caps */
        return alpha * tanhf(g / alpha) * sigmoid(g) * (limit * tanhf(u / limit));
    case MOEVK_ACT_SWIGLU_POSTCLAMP: {
        float s = g / (1.0f + expf(-g)); /* the clamp after the silu */
        clamp_gate_up(s, u, limit);
        return s * u;
    }
    default:
        return __int_as_float(0x7fc00000); /* unknown activation: NaN */
    }
}

/* ---- router ------------------------------------------------------------- */

template <int DT>
__global__ void k_router_logits(const float *x, const void *w, const float *bias, uint32_t T,
                                uint32_t H, uint32_t E, float *logits)
{
    GRID_STRIDE(i, (size_t)T * E)
    {
        uint32_t t = (uint32_t)(i / E), e = (uint32_t)(i % E);
        const float *xr = x + (size_t)t * H;
        size_t wo = (size_t)e * H;
        float acc = 0.0f;
        for (uint32_t h = 0; h < H; h++)
            acc = fmaf(xr[h], load<DT>(w, wo + h), acc);
        if (bias)
            acc += bias[e];
        logits[i] = acc;
    }
}

/* ---- routing -------------------------------------------------------------- */

/* Whether score a of index ia ranks ahead of score b of index ib: larger
 * wins, equal -> lower index, NaN below every number (NaNs by index). */
__device__ __forceinline__ bool ranks_before(float a, uint32_t ia, float b, uint32_t ib)
{
    bool na = isnan(a), nb = isnan(b);
    if (na || nb) {
        if (na && nb)
            return ia < ib;
        return nb;
    }
    if (a != b)
        return a > b;
    return ia < ib;
}

/* The best index i < n (with elig[i], if elig) ranking strictly after prev
 * (any, if prev == NONE); NONE if none. Walks the ranking in order. */
__device__ uint32_t next_best(const float *score, const uint8_t *elig, uint32_t n, uint32_t prev)
{
    uint32_t best = NONE;
    for (uint32_t i = 0; i < n; i++) {
        if (elig && !elig[i])
            continue;
        if (prev != NONE && !ranks_before(score[prev], prev, score[i], i))
            continue;
        if (best == NONE || ranks_before(score[i], i, score[best], best))
            best = i;
    }
    return best;
}

__global__ void k_route(RouteParams p, float *logits, float *score_all, float *gscore_all,
                        uint8_t *elig_all, uint32_t *ids, float *weights)
{
    const uint32_t t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= p.T)
        return;
    const uint32_t E = p.E, K = p.K;
    const bool grouped = p.grouped != 0;
    const bool sig = p.routing == MOEVK_ROUTING_SIGMOID_GROUPED;
    float *lw = logits + (size_t)t * E;
    /* router_softcap: l = c tanh(l / c), in place (the statistics read it) */
    if (p.softcap > 0.0f)
        for (uint32_t e = 0; e < E; e++)
            lw[e] = p.softcap * tanhf(lw[e] / p.softcap);
    const float *l = lw;
    float *score = score_all + (size_t)t * E;
    float *gscore = gscore_all + (size_t)t * E;
    uint8_t *elig = elig_all + (size_t)t * E;
    uint32_t *tid = ids + (size_t)t * K;
    float *tw = weights + (size_t)t * K;

    /* softmax over all E (max skips NaN; a NaN then poisons the sum) */
    float m = -INFINITY, s = 0.0f;
    for (uint32_t e = 0; e < E; e++)
        if (l[e] > m)
            m = l[e];
    for (uint32_t e = 0; e < E; e++)
        s += expf(l[e] - m);

    if (p.routing == MOEVK_ROUTING_EXPERT_CHOICE) {
        /* p for k_expert_choice, which chooses once every token's is there */
        for (uint32_t e = 0; e < E; e++)
            score[e] = expf(l[e] - m) / s;
        return;
    }

    for (uint32_t e = 0; e < E; e++) {
        float c = l[e];
        if (p.sel_logits)
            c = l[e] + (p.corr ? p.corr[e] : 0.0f);
        else if (sig || p.sel_probs)
            c = (sig ? group_score(p.score_fn, l[e]) : expf(l[e] - m) / s) +
                (p.corr ? p.corr[e] : 0.0f);
        score[e] = c;
    }

    if (grouped) {
        /* groups of `size` contiguous experts, scored by their two best (or
         * their best) */
        const uint32_t size = E / p.n_group;
        for (uint32_t g = 0; g < p.n_group; g++) {
            const float *cg = score + (size_t)g * size;
            uint32_t first = next_best(cg, nullptr, size, NONE);
            uint32_t second =
                first == NONE || p.group_max ? NONE : next_best(cg, nullptr, size, first);
            if (first == NONE)
                gscore[g] = __int_as_float(0x7fc00000);
            else if (second == NONE)
                gscore[g] = cg[first];
            else
                gscore[g] = cg[first] + cg[second];
        }
        for (uint32_t e = 0; e < E; e++)
            elig[e] = 0;
        uint32_t g = NONE;
        for (uint32_t i = 0; i < p.topk_group; i++) {
            g = next_best(gscore, nullptr, p.n_group, g);
            if (g == NONE)
                break;
            for (uint32_t e = g * size; e < (g + 1) * size; e++)
                elig[e] = 1;
        }
    }

    /* top-k in ranking order */
    uint32_t prev = NONE;
    bool complete = true;
    for (uint32_t j = 0; j < K; j++) {
        uint32_t id = complete ? next_best(score, grouped ? elig : nullptr, E, prev) : NONE;
        if (id == NONE)
            complete = false;
        tid[j] = id;
        prev = id;
    }
    if (!complete) { /* only for an invalid desc */
        for (uint32_t j = 0; j < K; j++)
            tw[j] = __int_as_float(0x7fc00000);
        return;
    }

    if (p.routing == MOEVK_ROUTING_SPARSEMIXER) {
        /* slot j: the softmax at tid[j] over the experts not chosen before
         * it whose gap (mj - l) / max(|l|, mj) is not above 2 jitter_eps (a
         * NaN gap keeps the expert); NaN when mj is infinite */
        const float thr = 2.0f * p.jitter_eps;
        for (uint32_t j = 0; j < K; j++) {
            const float mj = l[tid[j]];
            float js = 0.0f;
            for (uint32_t e = 0; e < E; e++) {
                bool earlier = false;
                for (uint32_t i = 0; i < j; i++)
                    earlier = earlier || tid[i] == e;
                if (earlier)
                    continue;
                const float le = l[e];
                const float f = fabsf(le) > mj ? fabsf(le) : mj;
                const float gap = (mj - le) / f;
                if (!isnan(gap) && gap > thr)
                    continue;
                js += isnan(le) ? le : expf(le - mj);
            }
            tw[j] = (isinf(mj) || isnan(mj) ? __int_as_float(0x7fc00000) : 1.0f / js) *
                    (p.escale ? p.escale[tid[j]] : 1.0f) * p.scale;
        }
        return;
    }
    if (p.routing == MOEVK_ROUTING_TOPK_SOFTMAX) {
        /* softmax over the k selected logits */
        float km = -INFINITY, ks = 0.0f;
        for (uint32_t j = 0; j < K; j++)
            if (l[tid[j]] > km)
                km = l[tid[j]];
        for (uint32_t j = 0; j < K; j++)
            ks += expf(l[tid[j]] - km);
        for (uint32_t j = 0; j < K; j++)
            tw[j] = expf(l[tid[j]] - km) / ks * (p.escale ? p.escale[tid[j]] : 1.0f) * p.scale;
        return;
    }
    /* w = sigmoid(l) or the probability over all E, optionally normalised
     * (docs/semantics.md: the sum or p-norm, then max with norm_min, or
     * + norm_eps, or + 1e-20 for sigmoid), then scaled */
    float wsum = 0.0f;
    for (uint32_t j = 0; j < K; j++) {
        float w = sig ? group_score(p.score_fn, l[tid[j]]) : expf(l[tid[j]] - m) / s;
        tw[j] = w;
        wsum += w;
    }
    float den = wsum;
    if (p.norm_p != 0.0f && p.norm_p != 1.0f) {
        float acc = 0.0f;
        for (uint32_t j = 0; j < K; j++)
            acc += powf(fabsf(tw[j]), p.norm_p);
        den = powf(acc, 1.0f / p.norm_p);
    }
    if (p.norm_min > 0.0f)
        den = den < p.norm_min ? p.norm_min : den;
    else if (p.norm_eps > 0.0f)
        den = den + p.norm_eps;
    else if (sig && !p.n_sink)
        den = den + 1e-20f;
    /* shared_sink: the shared gates join the sum, in order; their final
     * gates replace their logits */
    if (p.n_sink) {
        float *sk = p.sink + (size_t)t * p.n_sink;
        for (uint32_t i = 0; i < p.n_sink; i++)
            den += sigmoid(sk[i]);
        for (uint32_t i = 0; i < p.n_sink; i++)
            sk[i] = sigmoid(sk[i]) / den * p.scale;
    }
    for (uint32_t j = 0; j < K; j++)
        tw[j] = (p.norm ? tw[j] / den : tw[j]) * (p.escale ? p.escale[tid[j]] : 1.0f) * p.scale;
}

__global__ void k_input_norm(const float *x, uint32_t T, uint32_t H, float eps, const float *w,
                             float factor, float *out)
{
    const uint32_t t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T)
        return;
    const float *xt = x + (size_t)t * H;
    float ss = 0.0f;
    for (uint32_t h = 0; h < H; h++)
        ss += xt[h] * xt[h];
    const float n = eps > 0.0f ? 1.0f / sqrtf(ss / (float)H + eps) : 1.0f;
    for (uint32_t h = 0; h < H; h++) {
        float v = xt[h] * n;
        if (w)
            v = v * w[h];
        out[(size_t)t * H + h] = v * factor;
    }
}

/* Expert choice, one thread per (token, expert): the token's rank in the
 * expert's column of p (the number of tokens ranking before it; ties: the
 * lower token) decides; slot e of token t gets e and p * scale, or NONE and
 * 0. O(T) per thread: plain, as a cross-check should be. */
__global__ void k_expert_choice(const float *p, uint32_t T, uint32_t E, uint32_t C, float scale,
                                uint32_t *ids, float *weights)
{
    GRID_STRIDE(i, (size_t)T * E)
    {
        const uint32_t t = (uint32_t)(i / E), e = (uint32_t)(i % E);
        const float v = p[i];
        uint32_t rank = 0;
        for (uint32_t u = 0; u < T && rank < C; u++)
            rank += u != t && ranks_before(p[(size_t)u * E + e], u, v, t) ? 1u : 0u;
        const bool take = rank < C;
        ids[i] = take ? e : NONE;
        weights[i] = take ? v * scale : 0.0f;
    }
}

/* ---- permutation ------------------------------------------------------------
 * Priority order: index q = j*T + t is assignment a = t*K + j (all slot-0
 * choices by token, then slot 1, ...). One block per expert. */

__global__ void k_count(const uint32_t *ids, uint32_t T, uint32_t K, uint32_t cap,
                        uint32_t *totals, uint32_t *counts)
{
    __shared__ uint32_t part[BLOCK];
    const uint32_t e = blockIdx.x;
    const size_t A = (size_t)T * K;
    uint32_t n = 0;
    for (size_t a = threadIdx.x; a < A; a += blockDim.x)
        n += ids[a] == e ? 1u : 0u;
    part[threadIdx.x] = n;
    __syncthreads();
    for (uint32_t s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        totals[e] = part[0];
        counts[e] = part[0] < cap ? part[0] : cap;
    }
}

__global__ void k_offsets(const uint32_t *totals, const uint32_t *counts, uint32_t E,
                          uint32_t *offsets, unsigned long long *dropped)
{
    uint32_t run = 0;
    unsigned long long over = 0;
    for (uint32_t e = 0; e < E; e++) {
        offsets[e] = run;
        run += counts[e];
        over += totals[e] - counts[e];
    }
    offsets[E] = run;
    /* over capacity (an empty slot, NONE, is no assignment) */
    *dropped = over;
}

/* Rank of each assignment of expert e among its earlier ones (priority
 * order), by chunks of blockDim.x with warp ballots: admitted when rank <
 * cap, at row offsets[e] + rank. row_of was preset to -1. */
__global__ void k_assign(const uint32_t *ids, uint32_t T, uint32_t K, uint32_t cap,
                         const uint32_t *offsets, int32_t *row_of, uint32_t *row_token,
                         uint32_t *row_expert)
{
    __shared__ uint32_t wcount[BLOCK / 32];
    const uint32_t e = blockIdx.x;
    const uint32_t lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const uint32_t nwarps = blockDim.x >> 5;
    const size_t A = (size_t)T * K;
    const uint32_t off = offsets[e];
    uint32_t base = 0; /* assignments of e before this chunk (same in every thread) */
    for (size_t q0 = 0; q0 < A; q0 += blockDim.x) {
        const size_t q = q0 + threadIdx.x;
        bool mine = false;
        size_t a = 0;
        uint32_t t = 0;
        if (q < A) {
            uint32_t j = (uint32_t)(q / T);
            t = (uint32_t)(q - (size_t)j * T);
            a = (size_t)t * K + j;
            mine = ids[a] == e;
        }
        const unsigned bal = __ballot_sync(0xffffffffu, mine);
        if (lane == 0)
            wcount[warp] = (uint32_t)__popc(bal);
        __syncthreads();
        uint32_t rank = base, chunk = 0;
        for (uint32_t w = 0; w < nwarps; w++) {
            if (w < warp)
                rank += wcount[w];
            chunk += wcount[w];
        }
        rank += (uint32_t)__popc(bal & ((1u << lane) - 1u));
        if (mine) {
            if (rank < cap) {
                uint32_t row = off + rank;
                row_of[a] = (int32_t)row;
                row_token[row] = t;
                row_expert[row] = e;
            } else {
                row_of[a] = -1;
            }
        }
        base += chunk;
        __syncthreads(); /* wcount is rewritten by the next chunk */
    }
}

/* ---- experts ---------------------------------------------------------------- */

__device__ __forceinline__ uint32_t rows_of(const Rows &r)
{
    if (!r.dev_rows)
        return r.max_rows;
    uint32_t n = *r.dev_rows;
    return n < r.max_rows ? n : r.max_rows;
}

template <int DT> __global__ void k_ffn_up(FfnWeights w, Rows rows, const float *x, float *h)
{
    const uint32_t nrows = rows_of(rows);
    const bool gated = is_gated(w.act);
    GRID_STRIDE(i, (size_t)nrows * w.F)
    {
        uint32_t r = (uint32_t)(i / w.F), f = (uint32_t)(i % w.F);
        uint32_t tok = rows.row_token ? rows.row_token[r] : r;
        uint32_t e = rows.row_expert ? rows.row_expert[r] : rows.fixed_expert;
        const float *xr = x + (size_t)tok * w.H;
        const size_t row = (size_t)e * w.F + f;
        const void *up = wrow<DT>(w.gu, w.up, row, w.H);
        float u = 0.0f, g = 0.0f;
        for (uint32_t c = 0; c < w.H; c++)
            u = fmaf(xr[c], wload<DT>(w.gu, up, c), u);
        if (w.bu)
            u += w.bu[(size_t)e * w.F + f];
        if (gated) {
            const void *gate = wrow<DT>(w.gu, w.gate, row, w.H);
            for (uint32_t c = 0; c < w.H; c++)
                g = fmaf(xr[c], wload<DT>(w.gu, gate, c), g);
            if (w.bg)
                g += w.bg[(size_t)e * w.F + f];
        }
        h[i] = activation(w.act, g, u, w.alpha, w.limit);
    }
}

template <int DT>
__global__ void k_ffn_down(FfnWeights w, Rows rows, const float *h, float *out, int mode,
                           const float *gate_logits, uint32_t gate_stride, uint32_t gate_index,
                           int gate_final)
{
    const uint32_t nrows = rows_of(rows);
    GRID_STRIDE(i, (size_t)nrows * w.H)
    {
        uint32_t r = (uint32_t)(i / w.H), c = (uint32_t)(i % w.H);
        uint32_t e = rows.row_expert ? rows.row_expert[r] : rows.fixed_expert;
        const float *hr = h + (size_t)r * w.F;
        const void *down = wrow<DT>(w.dn, w.down, (size_t)e * w.H + c, w.F);
        float o = 0.0f;
        for (uint32_t f = 0; f < w.F; f++)
            o = fmaf(hr[f], wload<DT>(w.dn, down, f), o);
        if (w.bd)
            o += w.bd[(size_t)e * w.H + c];
        if (mode == 0) {
            out[i] = o;
        } else {
            const float gl = gate_logits ? gate_logits[(size_t)r * gate_stride + gate_index]
                                         : 0.0f;
            float g = gate_logits ? (gate_final ? gl : sigmoid(gl)) : 1.0f;
            out[i] = mode == 1 ? g * o : out[i] + g * o;
        }
    }
}

/* ---- combine ------------------------------------------------------------------ */

__global__ void k_scale_rows(const int32_t *row_of, const float *weights, const float *x,
                             uint32_t T, uint32_t H, uint32_t K, const uint32_t *ids,
                             uint32_t id_first, int unit, float *xs)
{
    GRID_STRIDE(i, (size_t)T * H)
    {
        uint32_t t = (uint32_t)(i / H), c = (uint32_t)(i % H);
        for (uint32_t j = 0; j < K; j++) {
            int32_t r = row_of[(size_t)t * K + j];
            if (r < 0 || (id_first && ids[(size_t)t * K + j] < id_first))
                continue;
            xs[(size_t)r * H + c] = unit ? x[i] : weights[(size_t)t * K + j] * x[i];
        }
    }
}

__global__ void k_combine(const int32_t *row_of, const float *weights, const float *o,
                          const float *shared, uint32_t T, uint32_t H, uint32_t K,
                          int unit_weights, float shared_scale, const float *out_bias,
                          float renorm_eps, float renorm_scale, float *y)
{
    GRID_STRIDE(i, (size_t)T * H)
    {
        uint32_t t = (uint32_t)(i / H), c = (uint32_t)(i % H);
        /* drop_renorm_eps: over the admitted weights' sum (unscaled) */
        float den = 1.0f;
        if (renorm_eps > 0.0f) {
            float sum = 0.0f;
            for (uint32_t j = 0; j < K; j++)
                if (row_of[(size_t)t * K + j] >= 0)
                    sum += weights[(size_t)t * K + j];
            sum = sum / renorm_scale;
            den = sum < renorm_eps ? renorm_eps : sum;
        }
        float acc = 0.0f;
        for (uint32_t j = 0; j < K; j++) {
            int32_t r = row_of[(size_t)t * K + j];
            if (r >= 0)
                acc = unit_weights ? acc + o[(size_t)r * H + c]
                                   : fmaf(weights[(size_t)t * K + j] / den, o[(size_t)r * H + c],
                                          acc);
        }
        if (shared)
            acc = fmaf(shared_scale, shared[i], acc);
        if (out_bias)
            acc += out_bias[c];
        y[i] = acc;
    }
}

/* ---- statistics ---------------------------------------------------------------- */

/* Per token: max (NaN skipped), sum of exp(l - max), entropy. */
__global__ void k_token_stats(const float *logits, uint32_t T, uint32_t E, float *tok)
{
    const uint32_t t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T)
        return;
    const float *l = logits + (size_t)t * E;
    float m = -INFINITY, s = 0.0f, h = 0.0f;
    for (uint32_t e = 0; e < E; e++)
        if (l[e] > m)
            m = l[e];
    for (uint32_t e = 0; e < E; e++)
        s += expf(l[e] - m);
    for (uint32_t e = 0; e < E; e++) {
        float p = expf(l[e] - m) / s;
        if (p != 0.0f) /* 0 log 0 = 0; NaN stays */
            h -= p * logf(p);
    }
    tok[3u * t + 0u] = m;
    tok[3u * t + 1u] = s;
    tok[3u * t + 2u] = h;
}

/* Fixed-shape tree sum of part[0..BLOCK) into part[0] (deterministic). */
__device__ void tree_sum(double *part)
{
    __syncthreads();
    for (uint32_t s = BLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
}

/* prob[e] = sum_t softmax(l_t)[e], one block per expert. */
__global__ void k_expert_prob(const float *logits, const float *tok, uint32_t T, uint32_t E,
                              double *prob)
{
    __shared__ double part[BLOCK];
    const uint32_t e = blockIdx.x;
    double acc = 0.0;
    for (uint32_t t = threadIdx.x; t < T; t += BLOCK)
        acc += (double)(expf(logits[(size_t)t * E + e] - tok[3u * t]) / tok[3u * t + 1u]);
    part[threadIdx.x] = acc;
    tree_sum(part);
    if (threadIdx.x == 0)
        prob[e] = part[0];
}

__global__ void k_stats_final(const float *tok, const double *prob, const uint32_t *totals,
                              uint32_t T, uint32_t E, double assignments, double *out)
{
    __shared__ double part[BLOCK];
    const double TK = assignments;
    double lb = 0.0, z = 0.0, ent = 0.0;
    for (uint32_t e = threadIdx.x; e < E; e += BLOCK)
        lb += ((double)totals[e] / TK) * (prob[e] / T);
    for (uint32_t t = threadIdx.x; t < T; t += BLOCK) {
        double lse = (double)tok[3u * t] + log((double)tok[3u * t + 1u]);
        z += lse * lse;
        ent += (double)tok[3u * t + 2u];
    }
    part[threadIdx.x] = lb;
    tree_sum(part);
    if (threadIdx.x == 0)
        out[0] = (double)E * part[0];
    __syncthreads();
    part[threadIdx.x] = z;
    tree_sum(part);
    if (threadIdx.x == 0)
        out[1] = part[0] / T;
    __syncthreads();
    part[threadIdx.x] = ent;
    tree_sum(part);
    if (threadIdx.x == 0)
        out[2] = part[0] / T;
}

/* ---- cuBLAS pipeline helpers ------------------------------------------------- */

template <int DT>
__global__ void k_gather_convert(Rows rows, const float *x, uint32_t H, void *xq)
{
    const uint32_t nrows = rows_of(rows);
    GRID_STRIDE(i, (size_t)nrows * H)
    {
        uint32_t r = (uint32_t)(i / H), c = (uint32_t)(i % H);
        uint32_t tok = rows.row_token ? rows.row_token[r] : r;
        store<DT>(xq, i, x[(size_t)tok * H + c]);
    }
}

/* dst[i] = element i of the packed blocks at src, rounded to DT. */
template <int DT>
__global__ void k_dequantize(moevk_dtype fmt, uint32_t be, uint32_t bb, const void *src, size_t n,
                             void *dst)
{
    GRID_STRIDE(i, n)
    store<DT>(dst, i, mvk_dq_at(fmt, be, bb, src, i));
}

template <int DT>
__global__ void k_activate(FfnWeights w, Rows rows, const float *G, const float *U, void *hq)
{
    const uint32_t nrows = rows_of(rows);
    const bool gated = is_gated(w.act);
    GRID_STRIDE(i, (size_t)nrows * w.F)
    {
        uint32_t r = (uint32_t)(i / w.F), f = (uint32_t)(i % w.F);
        uint32_t e = rows.row_expert ? rows.row_expert[r] : rows.fixed_expert;
        float u = U[i], g = 0.0f;
        if (w.bu)
            u += w.bu[(size_t)e * w.F + f];
        if (gated) {
            g = G[i];
            if (w.bg)
                g += w.bg[(size_t)e * w.F + f];
        }
        store<DT>(hq, i, activation(w.act, g, u, w.alpha, w.limit));
    }
}

__global__ void k_add_row_bias(Rows rows, const float *bd, uint32_t H, float *o)
{
    const uint32_t nrows = rows_of(rows);
    GRID_STRIDE(i, (size_t)nrows * H)
    {
        uint32_t r = (uint32_t)(i / H), c = (uint32_t)(i % H);
        uint32_t e = rows.row_expert ? rows.row_expert[r] : rows.fixed_expert;
        o[i] += bd[(size_t)e * H + c];
    }
}

__global__ void k_shared_accumulate(const float *o, const float *bd, uint32_t T, uint32_t H,
                                    int first, const float *gate_logits, uint32_t gate_stride,
                                    uint32_t gate_index, int gate_final, float *acc)
{
    GRID_STRIDE(i, (size_t)T * H)
    {
        uint32_t t = (uint32_t)(i / H), c = (uint32_t)(i % H);
        float v = o[i];
        if (bd)
            v += bd[c];
        const float gl = gate_logits ? gate_logits[(size_t)t * gate_stride + gate_index] : 0.0f;
        float g = gate_logits ? (gate_final ? gl : sigmoid(gl)) : 1.0f;
        acc[i] = first ? g * v : acc[i] + g * v;
    }
}

} /* namespace */

/* ---- launchers ---------------------------------------------------------------- */

/* kernel<<<grid, block, 0, stream>>>(args); the CPU emulation of the tests
 * (src/cuda/emu) defines its own LAUNCH. */
#ifndef LAUNCH
#define LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif

/* LAUNCH(kernel<dt>, ...) for a runtime dtype of f32, f16 or bf16. */
#define DISPATCH_DT(dt, KERNEL, ...)                                                          \
    do {                                                                                      \
        switch (dt) {                                                                         \
        case MOEVK_DTYPE_F32: LAUNCH(KERNEL<MOEVK_DTYPE_F32>, __VA_ARGS__); break;            \
        case MOEVK_DTYPE_F16: LAUNCH(KERNEL<MOEVK_DTYPE_F16>, __VA_ARGS__); break;            \
        case MOEVK_DTYPE_BF16: LAUNCH(KERNEL<MOEVK_DTYPE_BF16>, __VA_ARGS__); break;          \
        default: return cudaErrorInvalidValue;                                                \
        }                                                                                     \
    } while (0)

/* The same for expert weights in format f: f32/f16/bf16 by their
 * template, every block format through KERNEL<BLOCKS>. */
#define DISPATCH_W(f, KERNEL, ...)                                                            \
    do {                                                                                      \
        switch ((f).dt) {                                                                     \
        case MOEVK_DTYPE_F32: LAUNCH(KERNEL<MOEVK_DTYPE_F32>, __VA_ARGS__); break;            \
        case MOEVK_DTYPE_F16: LAUNCH(KERNEL<MOEVK_DTYPE_F16>, __VA_ARGS__); break;            \
        case MOEVK_DTYPE_BF16: LAUNCH(KERNEL<MOEVK_DTYPE_BF16>, __VA_ARGS__); break;          \
        default:                                                                              \
            if ((f).block_elems <= 1 || (f).block_bytes == 0)                                 \
                return cudaErrorInvalidValue;                                                 \
            LAUNCH(KERNEL<BLOCKS>, __VA_ARGS__);                                              \
        }                                                                                     \
    } while (0)

cudaError_t router_logits(cudaStream_t s, moevk_dtype wdt, const float *x, const void *w,
                          const float *bias, uint32_t T, uint32_t H, uint32_t E, float *logits)
{
    unsigned g = blocks_for((size_t)T * E);
    DISPATCH_DT(wdt, k_router_logits, g, BLOCK, s, x, w, bias, T, H, E, logits);
    return cudaGetLastError();
}

cudaError_t route(cudaStream_t s, const RouteParams &p, float *logits, float *score,
                  float *gscore, uint8_t *elig, uint32_t *ids, float *weights)
{
    const unsigned tb = 64; /* one thread per token, each doing O(k E) work */
    LAUNCH(k_route, (p.T + tb - 1) / tb, tb, s, p, logits, score, gscore, elig, ids, weights);
    return cudaGetLastError();
}

cudaError_t expert_choice(cudaStream_t s, const float *p, uint32_t T, uint32_t E, uint32_t C,
                          float scale, uint32_t *ids, float *weights)
{
    LAUNCH(k_expert_choice, blocks_for((size_t)T * E), BLOCK, s, p, T, E, C, scale, ids,
           weights);
    return cudaGetLastError();
}

cudaError_t permute(cudaStream_t s, const uint32_t *ids, uint32_t T, uint32_t K, uint32_t E,
                    uint32_t cap, uint32_t *totals, uint32_t *counts, uint32_t *offsets,
                    unsigned long long *dropped, int32_t *row_of, uint32_t *row_token,
                    uint32_t *row_expert)
{
    cudaError_t err = cudaMemsetAsync(row_of, 0xff, sizeof(int32_t) * (size_t)T * K, s);
    if (err != cudaSuccess)
        return err;
    LAUNCH(k_count, E, BLOCK, s, ids, T, K, cap, totals, counts);
    LAUNCH(k_offsets, 1, 1, s, totals, counts, E, offsets, dropped);
    LAUNCH(k_assign, E, BLOCK, s, ids, T, K, cap, offsets, row_of, row_token, row_expert);
    return cudaGetLastError();
}

cudaError_t ffn_up(cudaStream_t s, const FfnWeights &w, const Rows &rows, const float *x,
                   float *h)
{
    unsigned g = blocks_for((size_t)rows.max_rows * w.F);
    DISPATCH_W(w.gu, k_ffn_up, g, BLOCK, s, w, rows, x, h);
    return cudaGetLastError();
}

cudaError_t ffn_down(cudaStream_t s, const FfnWeights &w, const Rows &rows, const float *h,
                     float *out, int mode, const float *gate_logits, uint32_t gate_stride,
                     uint32_t gate_index, int gate_final)
{
    unsigned g = blocks_for((size_t)rows.max_rows * w.H);
    DISPATCH_W(w.dn, k_ffn_down, g, BLOCK, s, w, rows, h, out, mode, gate_logits, gate_stride,
               gate_index, gate_final);
    return cudaGetLastError();
}

cudaError_t combine(cudaStream_t s, const int32_t *row_of, const float *weights, const float *o,
                    const float *shared, uint32_t T, uint32_t H, uint32_t K, int unit_weights,
                    float shared_scale, const float *out_bias, float renorm_eps,
                    float renorm_scale, float *y)
{
    LAUNCH(k_combine, blocks_for((size_t)T * H), BLOCK, s, row_of, weights, o, shared, T, H, K,
           unit_weights, shared_scale, out_bias, renorm_eps, renorm_scale, y);
    return cudaGetLastError();
}

cudaError_t input_norm(cudaStream_t s, const float *x, uint32_t T, uint32_t H, float eps,
                       const float *w, float factor, float *out)
{
    LAUNCH(k_input_norm, blocks_for(T), BLOCK, s, x, T, H, eps, w, factor, out);
    return cudaGetLastError();
}

cudaError_t scale_rows(cudaStream_t s, const int32_t *row_of, const float *weights,
                       const float *x, uint32_t T, uint32_t H, uint32_t K, const uint32_t *ids,
                       uint32_t id_first, int unit, float *xs)
{
    LAUNCH(k_scale_rows, blocks_for((size_t)T * H), BLOCK, s, row_of, weights, x, T, H, K, ids,
           id_first, unit, xs);
    return cudaGetLastError();
}

cudaError_t stats(cudaStream_t s, const float *logits, const uint32_t *totals, uint32_t T,
                  uint32_t E, double assignments, float *tok, double *prob, double *out)
{
    LAUNCH(k_token_stats, (T + 127) / 128, 128, s, logits, T, E, tok);
    LAUNCH(k_expert_prob, E, BLOCK, s, logits, tok, T, E, prob);
    LAUNCH(k_stats_final, 1, BLOCK, s, tok, prob, totals, T, E, assignments, out);
    return cudaGetLastError();
}

cudaError_t gather_convert(cudaStream_t s, moevk_dtype dt, const Rows &rows, const float *x,
                           uint32_t H, void *xq)
{
    unsigned g = blocks_for((size_t)rows.max_rows * H);
    DISPATCH_DT(dt, k_gather_convert, g, BLOCK, s, rows, x, H, xq);
    return cudaGetLastError();
}

cudaError_t dequantize(cudaStream_t s, moevk_dtype fmt, uint32_t block_elems,
                       uint32_t block_bytes, const void *src, size_t n, moevk_dtype dt, void *dst)
{
    if (block_elems == 0 || block_bytes == 0)
        return cudaErrorInvalidValue;
    DISPATCH_DT(dt, k_dequantize, blocks_for(n), BLOCK, s, fmt, block_elems, block_bytes, src, n,
                dst);
    return cudaGetLastError();
}

cudaError_t activate(cudaStream_t s, moevk_dtype dt, const FfnWeights &w, const Rows &rows,
                     const float *G, const float *U, void *hq)
{
    unsigned g = blocks_for((size_t)rows.max_rows * w.F);
    DISPATCH_DT(dt, k_activate, g, BLOCK, s, w, rows, G, U, hq);
    return cudaGetLastError();
}

cudaError_t add_row_bias(cudaStream_t s, const Rows &rows, const float *bd, uint32_t H, float *o)
{
    LAUNCH(k_add_row_bias, blocks_for((size_t)rows.max_rows * H), BLOCK, s, rows, bd, H, o);
    return cudaGetLastError();
}

cudaError_t shared_accumulate(cudaStream_t s, const float *o, const float *bd, uint32_t T,
                              uint32_t H, int first, const float *gate_logits,
                              uint32_t gate_stride, uint32_t gate_index, int gate_final,
                              float *acc)
{
    LAUNCH(k_shared_accumulate, blocks_for((size_t)T * H), BLOCK, s, o, bd, T, H, first,
           gate_logits, gate_stride, gate_index, gate_final, acc);
    return cudaGetLastError();
}

} /* namespace mvkcu */
