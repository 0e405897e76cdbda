/*
 * The CPU reference: the specification of every stage, in plain C with
 * double accumulation. Simple and obviously right rather than fast. The
 * Vulkan (and CUDA) paths are tested against it.
 *
 * Stage functions take the previous stage's output as floats, so a test can
 * feed a GPU stage's own output into the next reference stage and compare
 * each stage on its own.
 */
#ifndef MOEVK_REF_H
#define MOEVK_REF_H

#include <stdint.h>
#include <stddef.h>

#include "moevk/moevk.h"

#ifdef __cplusplus
extern "C" { /* the CUDA backends call the capacity rules */
#endif

/* Relative gap below which two routing scores count as a near-tie. */
#define MOEVK_REF_NEAR_TIE 1e-6

/* ---- number formats ---------------------------------------------------- */
float moevk_half_to_float(uint16_t h);
uint16_t moevk_float_to_half(float f);  /* round to nearest even */
float moevk_bf16_to_float(uint16_t b);
uint16_t moevk_float_to_bf16(float f);  /* round to nearest even, NaN kept */
/* Element i of an array of `dtype`, widened to double. */
double moevk_ref_load(const void *data, moevk_dtype dtype, size_t i);

/* ---- router -------------------------------------------------------------- */
/* logits[t*E + e] = sum_h x[t*H + h] * w[e*H + h] (+ bias[e]), double
 * accumulation, rounded to float at the end. bias may be NULL. */
void moevk_ref_router_logits(const float *x, uint32_t T, uint32_t H, const void *w,
                             moevk_dtype w_dtype, uint32_t E, const float *bias,
                             float *logits);
/* The input norms (docs/semantics.md, "Input norms"): the rows [T, H] the
 * router reads (router_norm_eps, router_input_scale, router_input_factor)
 * and those the experts read (expert_norm_eps, expert_norm_weight), in
 * double, each rounded to float. Without the layer's transform the row is
 * x itself. moevk_ref_has_*_input: 1 when the layer transforms it. */
int moevk_ref_has_router_input(const moevk_layer_desc *desc);
int moevk_ref_has_expert_input(const moevk_layer_desc *desc);
void moevk_ref_router_input(const moevk_layer_desc *desc, uint32_t T, const float *x,
                            float *out);
void moevk_ref_expert_input(const moevk_layer_desc *desc, uint32_t T, const float *x,
                            float *out);
/* Row-wise softmax (max-subtracted) or sigmoid, in double, stored as float. */
void moevk_ref_scores(const float *logits, uint32_t T, uint32_t E, moevk_scoring scoring,
                      float *scores);

/* ---- routing (scoring + top-k + weights) -------------------------------- */
/* For each token t: ids[t*k + j] and weights[t*k + j] for slot j = 0..k-1
 * (k = moevk_routing_slots: under expert choice slot e holds e and p[t, e]
 * when expert e took t, else UINT32_MAX and 0; near_tie marks the tokens
 * of an expert's near-tied last taken and best untaken pair),
 * slots ordered by decreasing selection score (ties: lower expert index;
 * NaN ranks below every number); the selection score of each expert is
 * moevk_ref_selection_scores'. near_tie (optional, [T]) is set to 1 for a
 * token whose k-th and (k+1)-th selection scores (or last kept and best
 * dropped group scores) differ by a nonzero relative gap below
 * MOEVK_REF_NEAR_TIE (a tiebreak that rounding may flip; sparsemixer also:
 * an expert's gap to a slot's top logit within that of the threshold 2
 * jitter_eps), else 0. Uses from
 * desc: num_experts, top_k, routing, norm_topk_prob, n_group, topk_group,
 * group_score, norm_p, norm_min, norm_eps, routed_scaling_factor,
 * correction_bias, router_softcap, select_on_logits, jitter_eps. logits are the router
 * logits before the soft cap (router_softcap applies it here, and in
 * moevk_ref_selection_scores and moevk_ref_stats).
 * Returns MOEVK_ERROR_OUT_OF_HOST_MEMORY if its scratch cannot be allocated
 * (the outputs are then unspecified), else MOEVK_SUCCESS. */
moevk_status moevk_ref_route(const moevk_layer_desc *desc, uint32_t T, const float *logits,
                             uint32_t *ids, float *weights, uint8_t *near_tie);
/* moevk_ref_route with shared_sink's gates: gate_logits [T, num_shared] (f32,
 * from the router's input rows; NULL: the weights of a shared_sink layer
 * are NaN, its ids as ever) join each token's normalisation, and gammas
 * [T, num_shared] (optional) receive the shared experts' final gates g_i /
 * D * routed_scaling_factor. Without shared_sink both are unused. */
moevk_status moevk_ref_route_sink(const moevk_layer_desc *desc, uint32_t T, const float *logits,
                                  const float *gate_logits, uint32_t *ids, float *weights,
                                  float *gammas, uint8_t *near_tie);
/* shared_sink: one token's shared gates gammas [num_shared] from its router
 * input row xr [H] and its top_k ids, as moevk_ref_route_sink gives them
 * (the router and gate logits computed again, the same f32 values). */
moevk_status moevk_ref_shared_gammas(const moevk_layer_desc *desc, const float *xr,
                                     const uint32_t *ids, float *gammas);

/* 1 when the desc keeps only some expert groups (n_group > 1, topk_group <
 * n_group, a mode that scores groups). */
int moevk_ref_grouped(const moevk_layer_desc *desc);
/* 1 when softmax_topk selects on the probabilities (plus correction_bias)
 * rather than on the logits: with a correction bias or kept groups, unless
 * select_on_logits (the same choice as on the logits otherwise, without
 * rounding); always for expert choice (experts compare tokens' p). */
int moevk_ref_selects_on_probs(const moevk_layer_desc *desc);
/* The selection score c[e] of every expert for one token's logits l[E]
 * (soft-capped here with router_softcap): the logit (topk_softmax,
 * sparsemixer;
 * softmax_topk unless it selects on the probabilities), l +
 * correction_bias (select_on_logits), softmax(l) + correction_bias, or
 * sigmoid(l) + correction_bias (sigmoid_grouped). */
void moevk_ref_selection_scores(const moevk_layer_desc *desc, const float *l, double *c);
/* sigmoid_grouped's score function (desc->score_fn) of a routing logit. */
double moevk_ref_score_fn(const moevk_layer_desc *desc, double x);
/* A group's score from its experts' selection scores cg[0..size-1]: the
 * sum of its two best (its only one when size is 1), or its best
 * (MOEVK_GROUP_MAX), in the selection order (a NaN counts only when fewer
 * numbers are there). */
double moevk_ref_group_score(const moevk_layer_desc *desc, const double *cg, uint32_t size);

/* ---- counting, capacity, permutation ------------------------------------- */
/* Capacity per expert for T tokens in the permutation: UINT32_MAX when
 * capacity_factor is 0 or the routing is expert choice (whose capacity is
 * in the choice), else ceil(capacity_factor * T * k / E). */
uint32_t moevk_ref_capacity(const moevk_layer_desc *desc, uint32_t T);
/* The tokens each expert takes under expert choice: min(T, ceil(cf * T * k
 * / E)), cf = capacity_factor (0 means 1). */
uint32_t moevk_ref_expert_choice_capacity(const moevk_layer_desc *desc, uint32_t T);
/* The assignments of a pass of T tokens, the load-balancing loss's
 * denominator: T k, or C E under expert choice. */
uint64_t moevk_ref_assignments(const moevk_layer_desc *desc, uint32_t T);
/* Admission in priority order (all slot-0 assignments in token order, then
 * slot 1 in token order, ...). counts[e] = admitted assignments of expert e;
 * offsets[e] = exclusive prefix sum of counts (offsets has E+1 entries).
 * row[t*k + j] is the admitted assignment's row in the expert-sorted order,
 * or -1 if dropped. The rows of expert e are offsets[e] .. offsets[e+1]-1 in
 * ADMISSION order: its slot-0 assignments by token, then its slot-1
 * assignments by token, ... (not token-then-slot). Returns the number of
 * dropped assignments. */
uint64_t moevk_ref_permute(const moevk_layer_desc *desc, uint32_t T, const uint32_t *ids,
                           uint32_t *counts, uint32_t *offsets, int32_t *row);

/* ---- experts ------------------------------------------------------------- */
/* The router experts that have weights: num_experts - num_zero_experts.
 * Experts from there to num_experts - 1 are identity ("zero") experts. */
static inline uint32_t moevk_ref_ffn_experts(const moevk_layer_desc *desc)
{
    return desc->num_experts - desc->num_zero_experts;
}

/* out[r*H + :] = FFN of expert `expert` (of the weights in w, count experts of
 * width ffn) applied to in[r*H + :], for r = 0..rows-1; double accumulation,
 * the hidden activation kept in double (w = &desc->shared: the shared
 * experts' activation, which MOEVK_LAYER_SHARED_ACTIVATION may set). Returns
 * MOEVK_ERROR_OUT_OF_HOST_MEMORY if its scratch cannot be allocated (out is
 * then unspecified), else MOEVK_SUCCESS. */
moevk_status moevk_ref_expert_ffn(const moevk_layer_desc *desc, const moevk_expert_weights *w,
                          uint32_t ffn, uint32_t expert, const float *in, uint32_t rows,
                          float *out);

/* ---- statistics ---------------------------------------------------------- */
/* Fills stats (tokens_per_expert if non-NULL, dropped, the three losses)
 * from logits [T, E] (float), the routing ids and the admission counts.
 * Returns MOEVK_ERROR_OUT_OF_HOST_MEMORY if its scratch cannot be allocated
 * (the losses are then unspecified), else MOEVK_SUCCESS. */
moevk_status moevk_ref_stats(const moevk_layer_desc *desc, uint32_t T, const float *logits,
                             const uint32_t *ids, const uint32_t *counts, uint64_t dropped,
                             moevk_routing_stats *stats);

/* ---- whole layer --------------------------------------------------------- */
/* y [T, H] = the MoE layer on x [T, H]: router, routing, capacity, experts,
 * combine in slot order, plus shared experts. ids/weights ([T*k]) and
 * near_tie ([T]) and stats are optional outputs. Returns
 * MOEVK_ERROR_OUT_OF_HOST_MEMORY if scratch cannot be allocated, else
 * MOEVK_SUCCESS. The desc must be valid (see moevk_layer_desc_validate). */
/* One token's output y [H] given its k slots: ids, weights and rows (a row
 * < 0 is a dropped slot), as moevk_ref_layer_forward computes it after
 * routing and admission (the harness's y under another admission). xt is
 * the experts' input row (moevk_ref_expert_input of the token). gammas
 * [num_shared]: the shared experts' gates (shared_sink's, from
 * moevk_ref_shared_gammas); NULL: sigmoid(xt . shared_gate[i]), or 1 without
 * a shared gate. */
moevk_status moevk_ref_token_output(const moevk_layer_desc *desc, const float *xt,
                                    const uint32_t *ids, const float *weights,
                                    const int32_t *rows, const float *gammas, float *y);

moevk_status moevk_ref_layer_forward(const moevk_layer_desc *desc, uint32_t T, const float *x,
                                     float *y, uint32_t *ids, float *weights,
                                     uint8_t *near_tie, moevk_routing_stats *stats);

#ifdef __cplusplus
}
#endif

#endif
