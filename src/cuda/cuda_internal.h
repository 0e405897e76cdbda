/*
 * Internal interface between the CUDA kernels (cuda_kernels.cu) and the
 * host side of the CUDA backends (cuda_layer.cu). C++ (nvcc) only.
 *
 * Every launcher enqueues its kernels on `s` and returns the launch's
 * cudaError_t (cudaGetLastError). Sizes are element counts; all arrays are
 * device pointers unless named h_*.
 */
#ifndef MOEVK_CUDA_INTERNAL_H
#define MOEVK_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <stdint.h>

#include "moevk/moevk.h"

namespace mvkcu {

/* Routing parameters (desc defaults already applied). */
struct RouteParams {
    uint32_t T, E, K;
    int routing;         /* moevk_routing */
    int norm;            /* norm_topk_prob */
    uint32_t n_group, topk_group;
    float scale;         /* routed_scaling_factor */
    const float *corr;   /* [E] correction bias or NULL */
    int grouped;         /* topk_group < n_group (moevk_ref_grouped) */
    int sel_probs;       /* softmax_topk selects on p + corr (moevk_ref_selects_on_probs) */
    int group_max;       /* MOEVK_GROUP_MAX */
    float norm_p, norm_min, norm_eps;
    float softcap;       /* router_softcap: > 0 caps the logits in place */
    int sel_logits;      /* select_on_logits: c = l + corr (modes 0 and 2) */
    float jitter_eps;    /* sparsemixer: the threshold is 2 jitter_eps */
    int score_fn;        /* sigmoid_grouped: moevk_score_fn */
    /* shared_sink: [T, n_sink] shared gate logits, replaced by the final
     * gates g_i / D * scale; n_sink 0 = none */
    float *sink;
    uint32_t n_sink;
    const float *escale; /* [E] expert_weight_scale or NULL: w *= escale[id] after
                            the normalisation, before scale */
};

/* The format of one kind of expert matrix on the device: f32, f16, bf16
 * or a block format (packed as uploaded; block_elems elements in
 * block_bytes bytes per block, from the format table; 1 and the element
 * size for the plain types). Rows are whole blocks. */
struct WFormat {
    moevk_dtype dt;
    uint32_t block_elems, block_bytes;
};

/* One stack of FFN experts on the device: gate and up rows in format gu,
 * down rows in format dn (MOEVK_LAYER_MATRIX_DTYPES; both the layer's
 * weight_dtype otherwise). */
struct FfnWeights {
    WFormat gu, dn;
    uint32_t H, F;       /* hidden, this stack's ffn */
    int act;             /* moevk_activation */
    float alpha, limit;  /* swiglu_oai */
    const void *gate, *up, *down; /* [n, F, H], [n, F, H], [n, H, F]; gate NULL if not gated */
    const float *bg, *bu, *bd;    /* [n, F], [n, F], [n, H] or NULL */
};

/* logits[t*E + e] = x[t] . w[e] (+ bias[e]); f32 accumulation in h order. */
cudaError_t router_logits(cudaStream_t s, moevk_dtype wdt, const float *x, const void *w,
                          const float *bias, uint32_t T, uint32_t H, uint32_t E, float *logits);

/* One thread per token: selection, ids [T*K], weights [T*K]. score/gscore
 * are f32 scratch [T*E], elig u8 scratch [T*E]. With p.softcap > 0 the
 * logits are soft-capped in place first (the statistics read them). */
cudaError_t route(cudaStream_t s, const RouteParams &p, float *logits, float *score,
                  float *gscore, uint8_t *elig, uint32_t *ids, float *weights);
/* Expert choice after route in that mode (which leaves p [T*E] in score):
 * expert e takes the C tokens ranking first on p[., e]; ids and weights
 * [T*E], slot e holding e and p * scale, or NONE and 0. */
cudaError_t expert_choice(cudaStream_t s, const float *p, uint32_t T, uint32_t E, uint32_t C,
                          float scale, uint32_t *ids, float *weights);

/* Counting, capacity (cap = UINT32_MAX: dropless) and rows in priority
 * order: totals[E] (assignments before dropping), counts[E] (admitted),
 * offsets[E+1], *dropped, row_of[T*K] (-1 when dropped), and per row
 * row_token / row_expert ([T*K], entries past offsets[E] unspecified). */
cudaError_t permute(cudaStream_t s, const uint32_t *ids, uint32_t T, uint32_t K, uint32_t E,
                    uint32_t cap, uint32_t *totals, uint32_t *counts, uint32_t *offsets,
                    unsigned long long *dropped, int32_t *row_of, uint32_t *row_token,
                    uint32_t *row_expert);

/* Rows of an FFN pass: either the routed rows (row_token/row_expert of the
 * permutation, their number read on the device from *dev_rows, at most
 * max_rows) or dense rows 0..max_rows-1 of one expert (row_token ==
 * row_expert == dev_rows == NULL, expert `fixed_expert`, token = row). */
struct Rows {
    const uint32_t *row_token, *row_expert, *dev_rows;
    uint32_t max_rows, fixed_expert;
};

/* h[r*F + n] = act(x[tok(r)] . gate[e, n] (+bg), x[tok(r)] . up[e, n] (+bu)) */
cudaError_t ffn_up(cudaStream_t s, const FfnWeights &w, const Rows &rows, const float *x,
                   float *h);

/* o = h[r] . down[e, c] (+bd). mode 0: out[r*H + c] = o;
 * mode 1: out = g * o; mode 2: out += g * o, with g = sigmoid(gate_logits[r *
 * gate_stride + gate_index]) if gate_logits (that value itself with
 * gate_final: shared_sink's gates), else 1. */
cudaError_t ffn_down(cudaStream_t s, const FfnWeights &w, const Rows &rows, const float *h,
                     float *out, int mode, const float *gate_logits, uint32_t gate_stride,
                     uint32_t gate_index, int gate_final);

/* y[t*H + c] = sum_j w[t, j] * o[row_of[t, j], c] (slot order, fma, rows of
 * -1 skipped) (+ shared[t*H + c] if shared). */
cudaError_t combine(cudaStream_t s, const int32_t *row_of, const float *weights, const float *o,
                    const float *shared, uint32_t T, uint32_t H, uint32_t K, int unit_weights,
                    float shared_scale, const float *out_bias, float renorm_eps,
                    float renorm_scale, float *y);
/* MOEVK_LAYER_WEIGHTS_ON_INPUT: xs[row_of[t, j]] = weights[t, j] * x[t] for
 * every admitted slot (the up projection then reads xs row by row). With
 * id_first > 0 only the slots whose ids[t, j] >= id_first (identity
 * experts), and with unit the row is x[t] itself. */
cudaError_t scale_rows(cudaStream_t s, const int32_t *row_of, const float *weights,
                       const float *x, uint32_t T, uint32_t H, uint32_t K, const uint32_t *ids,
                       uint32_t id_first, int unit, float *xs);
/* The input norms (Gemma 4), one thread per token: out[t, h] = x[t, h] * n *
 * w[h] * factor with n = 1 / sqrt(mean_h x[t, h]^2 + eps) (1 when eps is
 * 0) and w optional. */
cudaError_t input_norm(cudaStream_t s, const float *x, uint32_t T, uint32_t H, float eps,
                       const float *w, float factor, float *out);

/* Statistics: tok [3T] f32 scratch, prob [E] f64 scratch, out [3] f64 =
 * {load-balancing loss, z-loss, entropy}; assignments: moevk_ref_assignments. */
cudaError_t stats(cudaStream_t s, const float *logits, const uint32_t *totals, uint32_t T,
                  uint32_t E, double assignments, float *tok, double *prob, double *out);

/* ---- cuBLAS pipeline helpers ------------------------------------------- */

/* xq[r*H + c] = x[tok(r)*H + c] converted to dt (f32/f16/bf16). */
cudaError_t gather_convert(cudaStream_t s, moevk_dtype dt, const Rows &rows, const float *x,
                           uint32_t H, void *xq);

/* hq[r*F + n] = act(G + bg, U + bu) converted to dt (f32/f16/bf16; G
 * unused when not gated). */
cudaError_t activate(cudaStream_t s, moevk_dtype dt, const FfnWeights &w, const Rows &rows,
                     const float *G, const float *U, void *hq);

/* dst[i] (i < n) = element i of the blocks of format fmt at src (elements
 * and bytes per block from the format table), decoded by
 * src/format_decode.h and rounded to dt (f32/f16/bf16). */
cudaError_t dequantize(cudaStream_t s, moevk_dtype fmt, uint32_t block_elems,
                       uint32_t block_bytes, const void *src, size_t n, moevk_dtype dt,
                       void *dst);

/* o[r*H + c] += bd[e(r)*H + c] over the rows. */
cudaError_t add_row_bias(cudaStream_t s, const Rows &rows, const float *bd, uint32_t H, float *o);

/* acc[t*H + c] (= if first, else +=) g * (o[t*H + c] (+ bd[c])), g as in
 * ffn_down. */
cudaError_t shared_accumulate(cudaStream_t s, const float *o, const float *bd, uint32_t T,
                              uint32_t H, int first, const float *gate_logits,
                              uint32_t gate_stride, uint32_t gate_index, int gate_final,
                              float *acc);

} /* namespace mvkcu */

#endif
