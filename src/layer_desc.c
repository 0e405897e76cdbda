/*
 * Layer description checks and defaults. Every rejection names the field.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "formats.h"
#include "internal.h"
#include "layer.h"
#include "quantize.h"
#include "ref/ref.h"

int moevk_activation_is_gated(moevk_activation act)
{
    return act == MOEVK_ACT_SWIGLU || act == MOEVK_ACT_GEGLU || act == MOEVK_ACT_GEGLU_TANH ||
           act == MOEVK_ACT_SWIGLU_OAI || act == MOEVK_ACT_SWIGLU_CLAMP ||
           act == MOEVK_ACT_SWIGLU_SOFTCAP || act == MOEVK_ACT_SWIGLU_POSTCLAMP;
}

const char *moevk_stage_name(moevk_stage stage)
{
    static const char *const names[MOEVK_STAGE_COUNT] = {
        "router", "route", "permute", "experts_up", "experts_down", "shared", "combine", "stats",
    };
    return (unsigned)stage < MOEVK_STAGE_COUNT ? names[stage] : "unknown";
}

static bool format_ok(moevk_dtype d, uint32_t use)
{
    const mvk_format *f = mvk_format_get(d);
    return f && (f->uses & use);
}

/* Each expert's input_perm is a permutation of 0 .. H - 1. */
static moevk_status check_input_perm(moevk_context *ctx, const moevk_expert_weights *w,
                                     const char *set, uint32_t count, uint32_t H)
{
    if (!w->input_perm)
        return MOEVK_SUCCESS;
    uint8_t *seen = mvk_alloc(ctx, H ? H : 1);
    if (!seen)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "checking %s.input_perm", set);
    moevk_status st = MOEVK_SUCCESS;
    for (uint32_t e = 0; e < count && !st; e++) {
        memset(seen, 0, H);
        for (uint32_t k = 0; k < H && !st; k++) {
            const uint32_t v = w->input_perm[(size_t)e * H + k];
            if (v >= H || seen[v])
                st = mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                              "%s.input_perm[%u * hidden + %u] = %u: expert %u's input order is "
                              "not a permutation of 0..%u (%s)",
                              set, e, k, v, e, H - 1, v >= H ? "out of range" : "repeated");
            else
                seen[v] = 1;
        }
    }
    mvk_free(ctx, seen);
    return st;
}

static moevk_status check_weights(moevk_context *ctx, const moevk_expert_weights *w,
                                  const char *set, bool gated)
{
    if (gated && !w->gate && !w->gate_experts)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "%s.gate is NULL (and %s.gate_experts too): a gated activation needs "
                        "gate weights", set, set);
    if (!w->up && !w->up_experts)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "%s.up is NULL (and %s.up_experts too)", set, set);
    if (!w->down && !w->down_experts)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "%s.down is NULL (and %s.down_experts too)", set, set);
    return MOEVK_SUCCESS;
}

/* Normalise zero-means-default fields into *out (host pointers kept). */
void mvk_layer_desc_defaults(const moevk_layer_desc *in, moevk_layer_desc *out)
{
    *out = *in;
    if (!out->n_group)
        out->n_group = 1;
    if (!out->topk_group)
        out->topk_group = out->n_group;
    if (out->routed_scaling_factor == 0.0f)
        out->routed_scaling_factor = 1.0f;
    if (out->shared_scale == 0.0f)
        out->shared_scale = 1.0f;
    if (out->swiglu_alpha == 0.0f)
        out->swiglu_alpha = 1.702f;
    if (out->swiglu_limit == 0.0f)
        out->swiglu_limit = 7.0f;
    if (out->softcap_gate == 0.0f)
        out->softcap_gate = 4.0f;
    if (out->softcap_up == 0.0f)
        out->softcap_up = 25.0f;
    if (!(out->flags & MOEVK_LAYER_SHARED_ACTIVATION)) {
        out->shared_activation = out->activation;
        out->shared_swiglu_limit = 0.0f;
    }
    if (out->shared_swiglu_limit == 0.0f)
        out->shared_swiglu_limit = out->swiglu_limit;
    if (out->num_shared && !out->shared_ffn)
        out->shared_ffn = out->ffn;
    if (!(out->flags & MOEVK_LAYER_MATRIX_DTYPES)) {
        out->experts.gate_up_dtype = out->experts.down_dtype = out->weight_dtype;
        out->shared.gate_up_dtype = out->shared.down_dtype = out->weight_dtype;
        out->flags |= MOEVK_LAYER_MATRIX_DTYPES;
    }
    if (!out->num_shared)
        out->shared.gate_up_dtype = out->shared.down_dtype = out->experts.gate_up_dtype;
}

void mvk_layer_matrices(const moevk_layer_desc *d, mvk_matrix_kind out[4])
{
    const uint32_t fs = d->num_shared ? d->shared_ffn : 0;
    const mvk_matrix_kind k[4] = {
        {"experts", "gate_up_dtype", d->experts.gate_up_dtype, d->hidden, "hidden"},
        {"experts", "down_dtype", d->experts.down_dtype, d->ffn, "ffn"},
        {"shared", "gate_up_dtype", d->shared.gate_up_dtype, fs ? d->hidden : 0, "hidden"},
        {"shared", "down_dtype", d->shared.down_dtype, fs, "shared_ffn"},
    };
    for (int i = 0; i < 4; i++) {
        out[i] = k[i];
        out[i].target = k[i].dtype;
        if ((d->flags & MOEVK_LAYER_QUANTIZE) && k[i].row)
            out[i].target = mvk_quantize_fallback(d->quantize_dtype, k[i].row);
    }
}

/* The formats of the four kinds of rows: each an expert format, whole
 * blocks per row; quantising at create reads f32/f16/bf16 host rows. */
static moevk_status check_formats(moevk_context *ctx, const moevk_layer_desc *in,
                                  const moevk_layer_desc *d)
{
    const moevk_status bad = MOEVK_ERROR_INVALID_ARGUMENT;
    const bool per = (in->flags & MOEVK_LAYER_MATRIX_DTYPES) != 0;
    const bool quant = (d->flags & MOEVK_LAYER_QUANTIZE) != 0;
    if (quant && !format_ok(d->quantize_dtype, MVK_FORMAT_EXPERT))
        return mvk_fail(ctx, bad, "quantize_dtype = %d (%s) is not an expert weight format",
                        (int)d->quantize_dtype, moevk_dtype_name(d->quantize_dtype));
    if (quant && !mvk_quantize_supported(d->quantize_dtype))
        return mvk_fail(ctx, bad,
                        "quantize_dtype = %d (%s): moevk has no quantiser for it (a format "
                        "that quantised checkpoints are repacked into; quantise to a ggml "
                        "format such as q4_k or q8_0)",
                        (int)d->quantize_dtype, moevk_dtype_name(d->quantize_dtype));
    mvk_matrix_kind k[4];
    mvk_layer_matrices(d, k);
    for (int i = 0; i < 4; i++) {
        if (!k[i].row)
            continue;
        char field[48];
        snprintf(field, sizeof field, per ? "%s.%s" : "weight_dtype", k[i].set, k[i].field);
        if (!format_ok(k[i].dtype, MVK_FORMAT_EXPERT))
            return mvk_fail(ctx, bad, "%s = %d (%s) is not an expert weight format", field,
                            (int)k[i].dtype, moevk_dtype_name(k[i].dtype));
        if (quant && moevk_dtype_block_elems(k[i].dtype) != 1)
            return mvk_fail(ctx, bad,
                            "%s = %s: quantising at create (MOEVK_LAYER_QUANTIZE) reads f32, "
                            "f16 or bf16 host weights",
                            field, moevk_dtype_name(k[i].dtype));
        const uint32_t be = moevk_dtype_block_elems(k[i].target);
        if (k[i].row % be)
            return mvk_fail(ctx, bad,
                            "%s = %u is not a whole number of %s blocks (%u elements): the rows "
                            "of the %s expert matrices (%s) must be",
                            k[i].row_name, k[i].row, moevk_dtype_name(k[i].target), be,
                            k[i].set, i % 2 ? "down" : "gate and up");
    }
    return MOEVK_SUCCESS;
}

moevk_status moevk_layer_desc_validate(moevk_context *ctx, const moevk_layer_desc *desc_in)
{
    if (!desc_in)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "desc is NULL");
    moevk_layer_desc d;
    mvk_layer_desc_defaults(desc_in, &d);
    const moevk_status bad = MOEVK_ERROR_INVALID_ARGUMENT;
    if (d.hidden == 0)
        return mvk_fail(ctx, bad, "hidden (H) is 0");
    if (d.ffn == 0)
        return mvk_fail(ctx, bad, "ffn (F) is 0");
    if (d.num_experts == 0 || d.num_experts > MOEVK_MAX_EXPERTS)
        return mvk_fail(ctx, bad, "num_experts (E) = %u is not in 1..%d", d.num_experts,
                        MOEVK_MAX_EXPERTS);
    if (d.top_k == 0 || d.top_k > d.num_experts || d.top_k > MOEVK_MAX_TOP_K)
        return mvk_fail(ctx, bad, "top_k (k) = %u is not in 1..min(num_experts = %u, %d)",
                        d.top_k, d.num_experts, MOEVK_MAX_TOP_K);
    if (d.num_zero_experts >= d.num_experts)
        return mvk_fail(ctx, bad,
                        "num_zero_experts = %u leaves no FFN expert (num_experts = %u counts "
                        "them too)",
                        d.num_zero_experts, d.num_experts);
    const uint32_t n_ffn = moevk_ref_ffn_experts(&d);
    if ((unsigned)d.routing > MOEVK_ROUTING_SPARSEMIXER)
        return mvk_fail(ctx, bad, "routing = %d is not a moevk_routing value", (int)d.routing);
    if ((unsigned)d.activation > MOEVK_ACT_SWIGLU_POSTCLAMP)
        return mvk_fail(ctx, bad, "activation = %d is not a moevk_activation value",
                        (int)d.activation);
    if ((unsigned)d.shared_activation > MOEVK_ACT_SWIGLU_POSTCLAMP)
        return mvk_fail(ctx, bad, "shared_activation = %d is not a moevk_activation value",
                        (int)d.shared_activation);
    if (moevk_activation_is_gated(d.shared_activation) != moevk_activation_is_gated(d.activation))
        return mvk_fail(ctx, bad,
                        "shared_activation = %d is %sgated but activation = %d is %s: the "
                        "shared experts' activation must be gated like the routed one",
                        (int)d.shared_activation,
                        moevk_activation_is_gated(d.shared_activation) ? "" : "not ",
                        (int)d.activation,
                        moevk_activation_is_gated(d.activation) ? "gated" : "not");
    if (!format_ok(d.router_dtype, MVK_FORMAT_ROUTER))
        return mvk_fail(ctx, bad, "router_dtype = %d (%s) is not a router weight format",
                        (int)d.router_dtype, moevk_dtype_name(d.router_dtype));
    const bool logit_mode =
        d.routing == MOEVK_ROUTING_TOPK_SOFTMAX || d.routing == MOEVK_ROUTING_SPARSEMIXER;
    const char *mode_name =
        d.routing == MOEVK_ROUTING_SPARSEMIXER ? "sparsemixer" : "topk_softmax";
    if (d.routing == MOEVK_ROUTING_EXPERT_CHOICE) {
        /* each expert takes its tokens: nothing of the per-token top-k */
        if (desc_in->n_group > 1 || desc_in->topk_group > 1)
            return mvk_fail(ctx, bad,
                            "n_group/topk_group are not for expert_choice routing (each "
                            "expert chooses its tokens; no expert groups)");
        if (d.correction_bias)
            return mvk_fail(ctx, bad,
                            "correction_bias is not for expert_choice routing (experts choose "
                            "on the probabilities)");
        if (d.select_on_logits)
            return mvk_fail(ctx, bad,
                            "select_on_logits = %d is not for expert_choice routing (experts "
                            "choose on the probabilities)",
                            d.select_on_logits);
        if (d.norm_topk_prob)
            return mvk_fail(ctx, bad,
                            "norm_topk_prob = %d is not for expert_choice routing (a token's "
                            "weights are its probabilities)",
                            d.norm_topk_prob);
        if (d.flags & MOEVK_LAYER_BATCH_INVARIANT)
            return mvk_fail(ctx, bad,
                            "MOEVK_LAYER_BATCH_INVARIANT with expert_choice routing: a "
                            "token's experts depend on the other tokens of its pass");
    } else if (!logit_mode) {
        if (d.num_experts % d.n_group)
            return mvk_fail(ctx, bad, "n_group = %u does not divide num_experts = %u", d.n_group,
                            d.num_experts);
        if (d.topk_group > d.n_group)
            return mvk_fail(ctx, bad, "topk_group = %u exceeds n_group = %u", d.topk_group,
                            d.n_group);
        if ((uint64_t)d.topk_group * (d.num_experts / d.n_group) < d.top_k)
            return mvk_fail(ctx, bad,
                            "top_k = %u exceeds the experts of the kept groups "
                            "(topk_group %u x %u per group)",
                            d.top_k, d.topk_group, d.num_experts / d.n_group);
    } else {
        if (desc_in->n_group > 1 || desc_in->topk_group > 1)
            return mvk_fail(ctx, bad,
                            "n_group = %u / topk_group = %u are not for %s routing (it scores "
                            "no groups)",
                            desc_in->n_group, desc_in->topk_group, mode_name);
        if (d.correction_bias)
            return mvk_fail(ctx, bad,
                            "correction_bias is not for %s routing (it selects on the logits)",
                            mode_name);
        if (d.select_on_logits)
            return mvk_fail(ctx, bad,
                            "select_on_logits = %d is not for %s routing (it always selects "
                            "on the logits, with no correction bias)",
                            d.select_on_logits, mode_name);
    }
    if (d.routing == MOEVK_ROUTING_SPARSEMIXER) {
        if (d.norm_topk_prob)
            return mvk_fail(ctx, bad,
                            "norm_topk_prob = %d is not for sparsemixer routing (its weights "
                            "are not normalised)",
                            d.norm_topk_prob);
        if (!(d.jitter_eps >= 0.0f) || !isfinite(d.jitter_eps))
            return mvk_fail(ctx, bad, "jitter_eps = %g must be finite and >= 0",
                            (double)d.jitter_eps);
    } else if (d.jitter_eps != 0.0f) {
        return mvk_fail(ctx, bad,
                        "jitter_eps = %g is only for sparsemixer routing (routing = %d): it "
                        "must be 0",
                        (double)d.jitter_eps, (int)d.routing);
    }
    if (d.score_fn != MOEVK_SCORE_SIGMOID) {
        if (d.score_fn != MOEVK_SCORE_SQRTSOFTPLUS)
            return mvk_fail(ctx, bad,
                            "score_fn = %d is not a score function (0 sigmoid, 1 sqrtsoftplus)",
                            (int)d.score_fn);
        if (d.routing != MOEVK_ROUTING_SIGMOID_GROUPED)
            return mvk_fail(ctx, bad,
                            "score_fn = %d is only for sigmoid_grouped routing (routing = %d): "
                            "it must be 0",
                            (int)d.score_fn, (int)d.routing);
    }
    if (!(d.capacity_fraction >= 0.0) || !isfinite(d.capacity_fraction))
        return mvk_fail(ctx, bad, "capacity_fraction = %g must be 0 (none) or finite and > 0",
                        d.capacity_fraction);
    if (d.capacity_fraction > 0.0 && d.capacity_factor != 0.0f)
        return mvk_fail(ctx, bad,
                        "capacity_fraction = %g and capacity_factor = %g: give one capacity",
                        d.capacity_fraction, (double)d.capacity_factor);
    if (!(d.drop_renorm_eps >= 0.0f) || !isfinite(d.drop_renorm_eps))
        return mvk_fail(ctx, bad, "drop_renorm_eps = %g must be 0 (none) or finite and > 0",
                        (double)d.drop_renorm_eps);
    if (d.drop_renorm_eps > 0.0f && (d.flags & MOEVK_LAYER_WEIGHTS_ON_INPUT))
        return mvk_fail(ctx, bad,
                        "drop_renorm_eps = %g with MOEVK_LAYER_WEIGHTS_ON_INPUT: the experts "
                        "read the weights before the renormalisation",
                        (double)d.drop_renorm_eps);
    if (d.routing == MOEVK_ROUTING_EXPERT_CHOICE &&
        (d.capacity_fraction > 0.0 || d.drop_renorm_eps > 0.0f))
        return mvk_fail(ctx, bad,
                        "capacity_fraction / drop_renorm_eps are not for expert_choice routing "
                        "(its experts take C tokens each and drop nothing)");
    if (d.shared_sink) {
        if (d.routing != MOEVK_ROUTING_SIGMOID_GROUPED || !d.norm_topk_prob)
            return mvk_fail(ctx, bad,
                            "shared_sink = %d needs sigmoid_grouped routing with norm_topk_prob "
                            "(routing = %d, norm_topk_prob = %d): the shared gates join that "
                            "normalisation",
                            d.shared_sink, (int)d.routing, d.norm_topk_prob);
        if (!d.num_shared || !desc_in->shared_gate)
            return mvk_fail(ctx, bad,
                            "shared_sink = %d needs shared experts with a shared_gate "
                            "(num_shared = %u, shared_gate %s)",
                            d.shared_sink, d.num_shared, desc_in->shared_gate ? "set" : "NULL");
        if ((d.norm_p != 0.0f && d.norm_p != 1.0f) || d.norm_min != 0.0f || d.norm_eps != 0.0f)
            return mvk_fail(ctx, bad,
                            "shared_sink = %d normalises by the plain sum: norm_p = %g, norm_min "
                            "= %g and norm_eps = %g must be 0",
                            d.shared_sink, (double)d.norm_p, (double)d.norm_min,
                            (double)d.norm_eps);
    }
    if (!(d.router_softcap >= 0.0f) || !isfinite(d.router_softcap))
        return mvk_fail(ctx, bad, "router_softcap = %g must be 0 (no cap) or finite and > 0",
                        (double)d.router_softcap);
    if (!(d.router_norm_eps >= 0.0f) || !isfinite(d.router_norm_eps))
        return mvk_fail(ctx, bad, "router_norm_eps = %g must be 0 (no norm) or finite and > 0",
                        (double)d.router_norm_eps);
    if (!isfinite(d.router_input_factor))
        return mvk_fail(ctx, bad, "router_input_factor = %g is not finite",
                        (double)d.router_input_factor);
    if (!(d.expert_norm_eps >= 0.0f) || !isfinite(d.expert_norm_eps))
        return mvk_fail(ctx, bad, "expert_norm_eps = %g must be 0 (no norm) or finite and > 0",
                        (double)d.expert_norm_eps);
    if (d.expert_norm_weight && !(d.expert_norm_eps > 0.0f))
        return mvk_fail(ctx, bad,
                        "expert_norm_weight is given but expert_norm_eps = %g: the weight "
                        "scales the expert input norm, which needs expert_norm_eps > 0",
                        (double)d.expert_norm_eps);
    if (d.expert_weight_scale && d.routing == MOEVK_ROUTING_EXPERT_CHOICE)
        return mvk_fail(ctx, bad,
                        "expert_weight_scale is for the top-k routing modes, not "
                        "expert_choice (routing = %d)",
                        (int)d.routing);
    if ((unsigned)d.group_score > MOEVK_GROUP_MAX)
        return mvk_fail(ctx, bad, "group_score = %d is not a moevk_group_score value",
                        (int)d.group_score);
    if (!(d.norm_p >= 0.0f) || !isfinite(d.norm_p))
        return mvk_fail(ctx, bad, "norm_p = %g must be 0 (the sum) or a positive p",
                        (double)d.norm_p);
    if (!(d.norm_min >= 0.0f) || !isfinite(d.norm_min))
        return mvk_fail(ctx, bad, "norm_min = %g must be 0 (none) or positive",
                        (double)d.norm_min);
    if (!(d.norm_eps >= 0.0f) || !isfinite(d.norm_eps))
        return mvk_fail(ctx, bad, "norm_eps = %g must be 0 (the mode's) or positive",
                        (double)d.norm_eps);
    if (d.norm_eps > 0.0f && d.norm_min > 0.0f)
        return mvk_fail(ctx, bad,
                        "norm_eps = %g and norm_min = %g: the denominator takes one of them",
                        (double)d.norm_eps, (double)d.norm_min);
    if (!isfinite(d.routed_scaling_factor))
        return mvk_fail(ctx, bad, "routed_scaling_factor is not finite");
    if (!isfinite(d.shared_scale))
        return mvk_fail(ctx, bad, "shared_scale = %g is not finite", (double)d.shared_scale);
    if (!(d.capacity_factor >= 0.0f) || !isfinite(d.capacity_factor))
        return mvk_fail(ctx, bad, "capacity_factor = %g must be 0 (dropless) or positive",
                        (double)d.capacity_factor);
    if (!isfinite(d.swiglu_alpha) || !(d.swiglu_limit > 0.0f))
        return mvk_fail(ctx, bad, "swiglu_alpha / swiglu_limit must be finite and limit > 0");
    if (!(d.shared_swiglu_limit > 0.0f))
        return mvk_fail(ctx, bad, "shared_swiglu_limit = %g must be 0 (swiglu_limit) or > 0",
                        (double)d.shared_swiglu_limit);
    if (!(d.softcap_gate > 0.0f) || !isfinite(d.softcap_gate) || !(d.softcap_up > 0.0f) ||
        !isfinite(d.softcap_up))
        return mvk_fail(ctx, bad,
                        "softcap_gate = %g / softcap_up = %g must be 0 (the default) or finite "
                        "and > 0",
                        (double)d.softcap_gate, (double)d.softcap_up);
    if (!d.router_weight)
        return mvk_fail(ctx, bad, "router_weight is NULL");
    if (d.flags & ~(uint32_t)(MOEVK_LAYER_BATCH_INVARIANT | MOEVK_LAYER_RECORD_NO_STATS |
                              MOEVK_LAYER_MATRIX_DTYPES | MOEVK_LAYER_QUANTIZE |
                              MOEVK_LAYER_VRAM_BUDGET | MOEVK_LAYER_CACHE_STATIC |
                              MOEVK_LAYER_IMPORT_HOST_EXPERTS | MOEVK_LAYER_WEIGHTS_ON_INPUT |
                              MOEVK_LAYER_SHARED_ACTIVATION | MOEVK_LAYER_NO_ROUTED_EXPERTS))
        return mvk_fail(ctx, bad, "flags 0x%x has unknown bits", d.flags);
    const bool no_routed = (d.flags & MOEVK_LAYER_NO_ROUTED_EXPERTS) != 0;
    if (no_routed && (d.flags & MOEVK_LAYER_VRAM_BUDGET))
        return mvk_fail(ctx, bad,
                        "flags: MOEVK_LAYER_NO_ROUTED_EXPERTS with MOEVK_LAYER_VRAM_BUDGET (a "
                        "budget of routed experts the layer does not hold)");
    if ((d.flags & MOEVK_LAYER_CACHE_STATIC) && !(d.flags & MOEVK_LAYER_VRAM_BUDGET))
        return mvk_fail(ctx, bad, "flags: MOEVK_LAYER_CACHE_STATIC needs MOEVK_LAYER_VRAM_BUDGET");
    if ((d.flags & MOEVK_LAYER_IMPORT_HOST_EXPERTS) && !(d.flags & MOEVK_LAYER_VRAM_BUDGET))
        return mvk_fail(ctx, bad,
                        "flags: MOEVK_LAYER_IMPORT_HOST_EXPERTS needs MOEVK_LAYER_VRAM_BUDGET");
    if (d.vram_budget && !(d.flags & MOEVK_LAYER_VRAM_BUDGET))
        return mvk_fail(ctx, bad,
                        "vram_budget = %llu is set but flags lack MOEVK_LAYER_VRAM_BUDGET",
                        (unsigned long long)d.vram_budget);
    bool gated = moevk_activation_is_gated(d.activation);
    moevk_status st = no_routed ? MOEVK_SUCCESS : check_weights(ctx, &d.experts, "experts", gated);
    if (st)
        return st;
    if (d.num_shared) {
        if (d.num_shared > MOEVK_MAX_SHARED)
            return mvk_fail(ctx, bad, "num_shared = %u exceeds %d", d.num_shared,
                            MOEVK_MAX_SHARED);
        if ((st = check_weights(ctx, &d.shared, "shared", gated)))
            return st;
    } else if (d.shared_gate) {
        return mvk_fail(ctx, bad, "shared_gate is set but num_shared is 0");
    }
    if ((!no_routed && (st = check_input_perm(ctx, &d.experts, "experts", n_ffn, d.hidden))) ||
        (d.num_shared && (st = check_input_perm(ctx, &d.shared, "shared", d.num_shared, d.hidden))))
        return st;
    if ((st = check_formats(ctx, desc_in, &d)))
        return st;
    /* Sizes: a whole matrix stack must be addressable (no 64-bit overflow). */
    uint64_t per_expert = (uint64_t)d.hidden * d.ffn;
    if (per_expert > (UINT64_MAX / 4) / n_ffn)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                        "hidden x ffn x FFN experts = %u x %u x %u overflows", d.hidden, d.ffn,
                        n_ffn);
    if (per_expert > UINT32_MAX)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                        "hidden x ffn = %llu elements per expert matrix exceed 32-bit indexing",
                        (unsigned long long)per_expert);
    if (d.num_shared && (uint64_t)d.hidden * d.shared_ffn > UINT32_MAX)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                        "hidden x shared_ffn exceeds 32-bit indexing");
    return MOEVK_SUCCESS;
}

moevk_status moevk_layer_desc_check(const moevk_layer_desc *desc, char *msg, size_t n)
{
    moevk_context scratch = {0}; /* only its message buffer is used */
    moevk_status st = moevk_layer_desc_validate(&scratch, desc);
    if (msg && n) {
        size_t len = strlen(scratch.last_error);
        len = len < n - 1 ? len : n - 1;
        memcpy(msg, scratch.last_error, len);
        msg[len] = '\0';
    }
    return st;
}
