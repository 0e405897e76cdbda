#version 450
// Row-wise scoring of router logits: softmax (max-subtracted) or sigmoid.
// One workgroup per token row; reductions in shared memory, fixed order.
// A row holding a NaN gets NaN softmax scores throughout.
#extension GL_GOOGLE_include_directive : require
#define MVK_KERNEL_ROUTER_SCORES
#include "interface.h"
#include "common.glsl"

layout(local_size_x_id = MVK_SPEC_WG) in;
layout(constant_id = MVK_SCORES_SPEC_SCORING) const uint SCORING = MVK_SCORING_SOFTMAX;

layout(std430, binding = MVK_SCORES_BIND_LOGITS) readonly buffer L { float logits[]; };
layout(std430, binding = MVK_SCORES_BIND_SCORES) writeonly buffer S { float scores[]; };

shared float red[gl_WorkGroupSize.x];
shared uint nan_seen;

void main()
{
    const uint t = p.tok0 + gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    const uint lid = gl_LocalInvocationID.x;
    const uint WG = gl_WorkGroupSize.x;
    if (t >= p.T)
        return;
    const uint row = t * p.E;
    if (SCORING == MVK_SCORING_SIGMOID) {
        for (uint e = lid; e < p.E; e += WG)
            scores[row + e] = 1.0 / (1.0 + exp(-logits[row + e]));
        return;
    }
    if (lid == 0)
        nan_seen = 0;
    float m = -1.0 / 0.0;
    bool any_nan = false;
    for (uint e = lid; e < p.E; e += WG) {
        float v = logits[row + e];
        any_nan = any_nan || isnan(v);
        m = isnan(v) ? m : max(m, v);
    }
    red[lid] = m;
    barrier();
    if (any_nan)
        atomicOr(nan_seen, 1u);
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] = max(red[lid], red[lid + s]);
        barrier();
    }
    m = red[0];
    barrier();
    float sum = 0.0;
    for (uint e = lid; e < p.E; e += WG)
        sum += exp(logits[row + e] - m);
    red[lid] = sum;
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] += red[lid + s];
        barrier();
    }
    const float inv = 1.0 / red[0];
    const bool poisoned = nan_seen != 0u;
    for (uint e = lid; e < p.E; e += WG)
        scores[row + e] = poisoned ? (0.0 / 0.0) : exp(logits[row + e] - m) * inv;
}
