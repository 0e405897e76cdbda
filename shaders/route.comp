#version 450
// Scoring, top-k selection and routing weights, one token per workgroup.
//
// Selection score per mode (ROUTING specialization constant):
//   0 softmax_topk   : the logit (softmax is strictly monotonic), or with
//                      sel_probs p + bias; w = p[id]
//   1 topk_softmax   : the logit; w = softmax over the k selected logits
//   2 sigmoid_grouped: c = s(l) + bias; w = s(l[id]), s = sigmoid or
//                      sqrt_softplus (score_fn)
//   3 expert_choice  : no selection here: p = softmax(l) into weights [T, E]
//                      for the expert_choice kernel
//   4 sparsemixer    : the logit; slot j's w = softmax at id_j over the
//                      experts not chosen before it whose gap (m - l) /
//                      max(|l|, m) to its logit m = l[id_j] is not above 2
//                      jitter_eps (a NaN gap keeps the expert)
// With sel_logits (modes 0 and 2) the selection score is l + bias.
// With router_softcap c > 0 the logits are first soft-capped, l = c tanh(l /
// c), and the capped ones written back for the statistics.
// Modes 0 and 2 with topk_group < n_group: groups scored by the sum of
// their two best c (or their best, group_max); topk_group kept; top-k c
// among the kept experts. Then the optional normalisation and the scale.
// Ties: the larger score wins, equal scores go to the lower index, NaN ranks
// below every number (ranks_before in common.glsl). Excluded experts (in a
// dropped group, or already chosen) are never selected.
// With shared_sink (n_sink > 0) the shared gates sigmoid(sink logit) join
// the normalisation's sum, and their final gates g / D * scale replace the
// logits in sink.
// Also writes per-token softmax statistics {max, sum, entropy} over all E
// logits for the statistics stage.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#define MVK_KERNEL_ROUTE
#include "interface.h"
#include "common.glsl"
#include "formats.glsl"

layout(local_size_x_id = MVK_SPEC_WG) in;
layout(constant_id = MVK_ROUTE_SPEC_ROUTING) const uint ROUTING = 0;
layout(constant_id = MVK_ROUTE_SPEC_NORM) const uint NORM = 0;
layout(constant_id = MVK_ROUTE_SPEC_FUSED) const uint FUSED = 0;
layout(constant_id = MVK_ROUTE_SPEC_WFMT) const uint WDTYPE = MVK_WFMT_F32;

layout(std430, binding = MVK_ROUTE_BIND_LOGITS) buffer L { float logits[]; };
layout(std430, binding = MVK_ROUTE_BIND_CORR_BIAS) readonly buffer B { float corr_bias[]; };
layout(std430, binding = MVK_ROUTE_BIND_IDS) writeonly buffer I { uint ids[]; };
layout(std430, binding = MVK_ROUTE_BIND_WEIGHTS) writeonly buffer W { float weights[]; };
layout(std430, binding = MVK_ROUTE_BIND_TOKSTATS) writeonly buffer S { float tokstats[]; };
layout(std430, binding = MVK_ROUTE_BIND_X) readonly buffer X { float x[]; };
layout(std430, binding = MVK_ROUTE_BIND_ROUTER_W) readonly buffer RW { uint rw[]; };
layout(std430, binding = MVK_ROUTE_BIND_ROUTER_B) readonly buffer RB { float rbias[]; };
layout(std430, binding = MVK_ROUTE_BIND_EXPERT_SCALE) readonly buffer ES { float expert_scale[]; };
layout(std430, binding = MVK_ROUTE_BIND_SINK) buffer SK { float sink[]; };

DEFINE_LOADER(load_rw, rw, WDTYPE)

// sigmoid_grouped's score function (score_fn)
float group_score_fn(float l)
{
    return p.score_fn == MVK_SCORE_SQRTSOFTPLUS ? sqrt_softplus(l) : 1.0 / (1.0 + exp(-l));
}

const uint MAXE = MVK_ROUTE_MAX_EXPERTS;
const uint NONE = 0xffffffffu;
shared float lg[MAXE];       // the token's logits
shared float sc[MAXE];       // selection score per expert
shared float gs[MAXE];       // score per group
shared uint live[MAXE / 32]; // selectable experts (bit set)
shared uint glive[MAXE / 32];
shared uint gkeep[MAXE / 32]; // groups chosen so far
shared float red_v[gl_WorkGroupSize.x];
shared uint red_i[gl_WorkGroupSize.x];
shared float sel_v[32];
shared uint sel_i[32];

bool bit(uint e, bool group)
{
    uint w = group ? glive[e >> 5] : live[e >> 5];
    return ((w >> (e & 31u)) & 1u) != 0u;
}

// Workgroup argmax over selectable entries 0..n-1 of sc (or gs); the winner
// ends in red_v[0]/red_i[0] (NONE when nothing is selectable).
void argmax(uint n, bool group)
{
    const uint lid = gl_LocalInvocationID.x, WG = gl_WorkGroupSize.x;
    float bv = 0.0;
    uint bi = NONE;
    for (uint e = lid; e < n; e += WG) {
        if (!bit(e, group))
            continue;
        float v = group ? gs[e] : sc[e];
        if (bi == NONE || ranks_before(v, e, bv, bi)) {
            bv = v;
            bi = e;
        }
    }
    red_v[lid] = bv;
    red_i[lid] = bi;
    barrier();
    [[dont_unroll]] for (uint s = WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
            uint oi = red_i[lid + s];
            if (oi != NONE &&
                (red_i[lid] == NONE || ranks_before(red_v[lid + s], oi, red_v[lid], red_i[lid]))) {
                red_v[lid] = red_v[lid + s];
                red_i[lid] = oi;
            }
        }
        barrier();
    }
}

float wg_reduce(float v, bool is_max)
{
    const uint lid = gl_LocalInvocationID.x, WG = gl_WorkGroupSize.x;
    red_v[lid] = v;
    barrier();
    [[dont_unroll]] for (uint s = WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            red_v[lid] = is_max ? max(red_v[lid], red_v[lid + s]) : red_v[lid] + red_v[lid + s];
        barrier();
    }
    float r = red_v[0];
    barrier();
    return r;
}

void main()
{
    const uint t = p.tok0 + gl_WorkGroupID.x;
    const uint lid = gl_LocalInvocationID.x, WG = gl_WorkGroupSize.x;
    const uint E = p.E, K = p.K;
    if (t >= p.T)
        return;
    const uint row = (t - p.logit_tok0) * E;

    // The token's logits into lg: computed here (FUSED, router_logits'
    // order: lane l's chain over h = l, l + WG, ..., then the same tree; 8
    // experts at a time, gs as the reduction buffer) or read.
    if (FUSED != 0u) {
        for (uint e0 = 0; e0 < E; e0 += 8u) {
            float acc[8];
            for (uint j = 0; j < 8u; j++)
                acc[j] = 0.0;
            for (uint h = lid; h < p.H; h += WG) {
                float xv = x[t * p.H + h];
                for (uint j = 0; j < 8u; j++)
                    if (e0 + j < E)
                        acc[j] = fma(xv, load_rw((e0 + j) * p.H + h), acc[j]);
            }
            for (uint j = 0; j < 8u; j++)
                gs[j * WG + lid] = acc[j];
            barrier();
            [[dont_unroll]] for (uint s = WG / 2; s > 0; s >>= 1) {
                if (lid < s)
                    for (uint j = 0; j < 8u; j++)
                        gs[j * WG + lid] += gs[j * WG + lid + s];
                barrier();
            }
            if (lid < 8u && e0 + lid < E) {
                float v = gs[lid * WG];
                if (p.has_router_bias != 0u)
                    v += rbias[e0 + lid];
                if (p.router_softcap > 0.0)
                    v = softcap(v, p.router_softcap);
                lg[e0 + lid] = v;
                logits[row + e0 + lid] = v; // for the statistics
            }
            barrier();
        }
    } else {
        for (uint e = lid; e < E; e += WG) {
            float v = logits[row + e];
            if (p.router_softcap > 0.0) {
                v = softcap(v, p.router_softcap);
                logits[row + e] = v; // for the statistics
            }
            lg[e] = v;
        }
        barrier();
    }

    // Softmax statistics over all E logits. The max skips NaN; a NaN logit
    // then makes the sum (and everything derived) NaN, as in the reference.
    float m = -1.0 / 0.0;
    for (uint e = lid; e < E; e += WG) {
        float l = lg[e];
        m = isnan(l) ? m : max(m, l);
    }
    m = wg_reduce(m, true);
    float s = 0.0;
    for (uint e = lid; e < E; e += WG)
        s += exp(lg[e] - m);
    s = wg_reduce(s, false);
    const float lse = m + log(s);
    float ent = 0.0; // sum_e p_e (lse - l_e); p_e = 0 terms add nothing
    for (uint e = lid; e < E; e += WG) {
        float l = lg[e];
        float pe = exp(l - m) / s;
        ent += (pe == 0.0) ? 0.0 : pe * (lse - l);
    }
    ent = wg_reduce(ent, false);
    if (lid == 0) {
        tokstats[3u * t + 0u] = m;
        tokstats[3u * t + 1u] = s;
        tokstats[3u * t + 2u] = ent;
    }

    // Expert choice: p over all E for the expert_choice kernel, which
    // chooses (and writes ids) once every token's p is there.
    if (ROUTING == MVK_ROUTING_EXPERT_CHOICE) {
        for (uint e = lid; e < E; e += WG)
            weights[t * E + e] = exp(lg[e] - m) / s;
        return;
    }

    // Selection scores; everything selectable.
    for (uint e = lid; e < E; e += WG) {
        float l = lg[e];
        float v = l;
        if (p.sel_logits != 0u) {
            if (p.has_bias != 0u)
                v += corr_bias[e];
        } else if (ROUTING == MVK_ROUTING_SIGMOID_GROUPED || p.sel_probs != 0u) {
            v = ROUTING == MVK_ROUTING_SIGMOID_GROUPED ? group_score_fn(l) : exp(l - m) / s;
            if (p.has_bias != 0u)
                v += corr_bias[e];
        }
        sc[e] = v;
    }
    for (uint w = lid; w < MAXE / 32; w += WG) {
        live[w] = 0u;
        glive[w] = 0u;
    }
    barrier();
    for (uint e = lid; e < E; e += WG)
        atomicOr(live[e >> 5], 1u << (e & 31u));
    barrier();

    if (ROUTING != MVK_ROUTING_TOPK_SOFTMAX && p.topk_group < p.n_group) {
        // Score each group by its two best experts (or its best), keep
        // topk_group groups.
        const uint gsize = E / p.n_group;
        for (uint g = lid; g < p.n_group; g += WG) {
            uint b0 = NONE, b1 = NONE;
            for (uint e = g * gsize; e < (g + 1u) * gsize; e++) {
                if (b0 == NONE || ranks_before(sc[e], e, sc[b0], b0)) {
                    b1 = b0;
                    b0 = e;
                } else if (b1 == NONE || ranks_before(sc[e], e, sc[b1], b1)) {
                    b1 = e;
                }
            }
            gs[g] = (b1 == NONE || p.group_max != 0u) ? sc[b0] : sc[b0] + sc[b1];
            atomicOr(glive[g >> 5], 1u << (g & 31u));
        }
        barrier();
        // Choose the kept groups (any number, as a bitmask); glive ends
        // holding only them.
        for (uint w = lid; w < MAXE / 32; w += WG)
            gkeep[w] = 0u;
        barrier();
        for (uint r = 0; r < p.topk_group; r++) {
            argmax(p.n_group, true);
            if (lid == 0) {
                uint g = red_i[0];
                atomicAnd(glive[g >> 5], ~(1u << (g & 31u)));
                gkeep[g >> 5] |= 1u << (g & 31u);
            }
            barrier();
        }
        for (uint w = lid; w < MAXE / 32; w += WG)
            glive[w] = gkeep[w];
        barrier();
        for (uint e = lid; e < E; e += WG)
            if (!bit(e / gsize, true))
                atomicAnd(live[e >> 5], ~(1u << (e & 31u)));
        barrier();
    }

    // Top-k by repeated argmax.
    for (uint j = 0; j < K; j++) {
        argmax(E, false);
        if (lid == 0) {
            uint e = red_i[0];
            sel_i[j] = e;
            if (e != NONE)
                atomicAnd(live[e >> 5], ~(1u << (e & 31u)));
        }
        barrier();
    }

    // sparsemixer: each slot's softmax denominator over its thresholded
    // set, summed by the workgroup; sel_v[j] = its weight (NaN when the
    // slot's logit m is infinite, exp(m - m) in the reference).
    if (ROUTING == MVK_ROUTING_SPARSEMIXER) {
        const float thr = 2.0 * p.jitter_eps;
        for (uint j = 0; j < K; j++) {
            const float mj = lg[sel_i[j]];
            float acc = 0.0;
            for (uint e = lid; e < E; e += WG) {
                bool earlier = false;
                for (uint i = 0; i < j; i++)
                    earlier = earlier || sel_i[i] == e;
                if (earlier)
                    continue;
                const float l = lg[e];
                const float gap = (mj - l) / max(abs(l), mj);
                if (!isnan(gap) && gap > thr)
                    continue;
                acc += isnan(l) ? l : exp(l - mj);
            }
            const float sj = wg_reduce(acc, false);
            if (lid == 0)
                sel_v[j] = (isinf(mj) || isnan(mj)) ? (0.0 / 0.0) : 1.0 / sj;
        }
    }

    if (lid == 0) {
        // Weights, summed in slot order.
        float wsum = 0.0;
        // topk_softmax: a NaN among the chosen logits, or a +inf/-inf top
        // logit, makes the k-way softmax NaN (as max-subtraction does in the
        // reference); written out because compilers fold l - l to 0.
        const float top = lg[sel_i[0]];
        bool bad = isinf(top);
        for (uint j = 0; j < K; j++)
            bad = bad || isnan(lg[sel_i[j]]);
        for (uint j = 0; j < K; j++) {
            uint e = sel_i[j];
            float l = lg[e];
            float w;
            if (ROUTING == MVK_ROUTING_SPARSEMIXER)
                w = sel_v[j];
            else if (ROUTING == MVK_ROUTING_SOFTMAX_TOPK)
                w = exp(l - m) / s;
            else if (ROUTING == MVK_ROUTING_TOPK_SOFTMAX)
                w = exp(l - lg[sel_i[0]]);
            else
                w = group_score_fn(l);
            sel_v[j] = w;
            wsum += w;
        }
        // norm_topk_prob's denominator: the sum (+ 1e-20 for sigmoid), or
        // the p-norm; max(., norm_min) when norm_min > 0, else + norm_eps
        // when norm_eps > 0 (a NaN stays).
        float den = wsum;
        if (p.norm_p != 0.0 && p.norm_p != 1.0) {
            float acc = 0.0;
            for (uint j = 0; j < K; j++)
                acc += pow(abs(sel_v[j]), p.norm_p);
            den = pow(acc, 1.0 / p.norm_p);
        }
        if (p.n_sink > 0u) {
            // shared_sink: the shared gates join the sum, in order (no 1e-20)
            for (uint i = 0; i < p.n_sink; i++)
                den += sigmoid(sink[t * p.n_sink + i]);
        } else if (p.norm_min > 0.0)
            den = den < p.norm_min ? p.norm_min : den;
        else if (p.norm_eps > 0.0)
            den = den + p.norm_eps;
        else if (ROUTING == MVK_ROUTING_SIGMOID_GROUPED)
            den = den + 1e-20;
        for (uint i = 0; i < p.n_sink; i++)
            sink[t * p.n_sink + i] = sigmoid(sink[t * p.n_sink + i]) / den * p.scale;
        for (uint j = 0; j < K; j++) {
            float w = sel_v[j];
            if (ROUTING == MVK_ROUTING_TOPK_SOFTMAX)
                w = bad ? (0.0 / 0.0) : w / wsum;
            else if (NORM != 0u && ROUTING != MVK_ROUTING_SPARSEMIXER)
                w = w / den;
            if (p.has_expert_scale != 0u)
                w *= expert_scale[sel_i[j]];
            w *= p.scale;
            ids[t * K + j] = sel_i[j];
            weights[t * K + j] = w;
        }
    }
}
