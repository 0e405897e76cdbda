#version 450
// Routing statistics, in two passes (PASS specialization constant), with
// fixed-order reductions (deterministic):
// PASS 0, one workgroup per expert e: P[e] = sum_t softmax(l_t)[e], from the
//   per-token max and sum the route stage stored.
// PASS 1, one workgroup: out = {load-balancing loss, router z-loss,
//   routing entropy} with
//   lb = E * sum_e f_e * P_e / T,  f_e = totals[e] / (T * k)
//   z  = mean_t (max_t + log sum_t)^2,  entropy = mean_t entropy_t
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint PASS = 0;

layout(std430, binding = 0) readonly buffer L { float logits[]; };
layout(std430, binding = 1) readonly buffer TS { float tokstats[]; };
layout(std430, binding = 2) readonly buffer M { uint meta[]; };
layout(std430, binding = 3) buffer PE { float pe[]; };
layout(std430, binding = 4) writeonly buffer OUT { float outv[]; };

layout(push_constant) uniform P {
    uint T, E, K;
} p;

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
    if (PASS == 0u) {
        const uint e = gl_WorkGroupID.x;
        float acc = 0.0;
        for (uint t = lid; t < p.T; t += WG)
            acc += exp(logits[t * p.E + e] - tokstats[3u * t]) / tokstats[3u * t + 1u];
        acc = wg_sum(acc);
        if (lid == 0)
            pe[e] = acc;
        return;
    }
    float lb = 0.0;
    for (uint e = lid; e < p.E; e += WG)
        lb += float(meta[e]) * pe[e];
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
        outv[0] = float(p.E) * lb / (T * float(p.K) * T);
        outv[1] = z / T;
        outv[2] = ent / T;
    }
}
