#version 450
// Routing statistics, in two passes (PASS specialization constant), with
// fixed-order reductions (deterministic, and the same for a pass run in
// routing chunks as for one run over all tokens: blocks of
// MVK_STATS_BLOCK tokens never straddle a chunk):
// PASS 0, one workgroup per (expert e, block b):
//   part[b, e] = sum over the block's tokens t of softmax(l_t)[e], from the
//   per-token max and sum the route stage stored.
// PASS 1, one workgroup: P[e] = part[0, e] + part[1, e] + ... (block
//   order), then the layer's results {admitted counts, dropped,
//   load-balancing loss, router z-loss, routing entropy} with
//   lb = E * sum_e f_e * P_e / T,  f_e = totals[e] / (T * k)
//   z  = mean_t (max_t + log sum_t)^2,  entropy = mean_t entropy_t
#extension GL_GOOGLE_include_directive : require
#define MVK_KERNEL_STATS
#include "interface.h"
#include "common.glsl"

layout(local_size_x_id = MVK_SPEC_WG) in;
layout(constant_id = MVK_STATS_SPEC_PASS) const uint PASS = 0;

layout(std430, binding = MVK_STATS_BIND_LOGITS) readonly buffer L { float logits[]; };
layout(std430, binding = MVK_STATS_BIND_TOKSTATS) readonly buffer TS { float tokstats[]; };
layout(std430, binding = MVK_STATS_BIND_META) readonly buffer M { uint meta[]; };
layout(std430, binding = MVK_STATS_BIND_PART) buffer PE { float part[]; };
layout(std430, binding = MVK_STATS_BIND_RESULTS) writeonly buffer OUT { uint results[]; };

shared float red[gl_WorkGroupSize.x];

float wg_sum(float v)
{
    const uint lid = gl_LocalInvocationID.x;
    red[lid] = v;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] += red[lid + s];
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

void main()
{
    const uint lid = gl_LocalInvocationID.x, WG = gl_WorkGroupSize.x;
    const uint E = p.E;
    if (PASS == 0u) {
        const uint e = gl_WorkGroupID.x;
        const uint t0 = p.tok0 + gl_WorkGroupID.y * MVK_STATS_BLOCK;
        const uint t1 = min(t0 + MVK_STATS_BLOCK, p.T);
        float acc = 0.0;
        for (uint t = t0 + lid; t < t1; t += WG)
            acc += exp(logits[(t - p.logit_tok0) * E + e] - tokstats[3u * t]) /
                   tokstats[3u * t + 1u];
        acc = wg_sum(acc);
        if (lid == 0)
            part[(t0 / MVK_STATS_BLOCK) * E + e] = acc;
        return;
    }
    const uint nblocks = (p.T + MVK_STATS_BLOCK - 1u) / MVK_STATS_BLOCK;
    float lb = 0.0;
    for (uint e = lid; e < E; e += WG) {
        float pe = part[e];
        for (uint b = 1u; b < nblocks; b++)
            pe += part[b * E + e];
        lb += float(meta[MVK_META_TOTALS(E) + e]) * pe;
        results[MVK_RESULTS_COUNTS(E) + e] = meta[MVK_META_COUNTS(E) + e];
    }
    lb = wg_sum(lb);
    float z = 0.0, ent = 0.0;
    for (uint t = lid; t < p.T; t += WG) {
        float lse = tokstats[3u * t] + log(tokstats[3u * t + 1u]);
        z += lse * lse;
        ent += tokstats[3u * t + 2u];
    }
    z = wg_sum(z);
    ent = wg_sum(ent);
    if (lid == 0) {
        float T = float(p.T);
        results[MVK_RESULTS_DROPPED(E)] = meta[MVK_META_DROPPED(E)];
        results[MVK_RESULTS_LOSSES(E) + 0u] =
            floatBitsToUint(float(E) * lb / (float(p.assignments) * T));
        results[MVK_RESULTS_LOSSES(E) + 1u] = floatBitsToUint(z / T);
        results[MVK_RESULTS_LOSSES(E) + 2u] = floatBitsToUint(ent / T);
    }
}
