#version 450
// Router logits: logits[t - out_tok0, e] = x[t, :] . w[e, :] (+ bias[e]).
// One workgroup per (expert, tile of TOKENS tokens); threads stride over H and
// reduce in shared memory in a fixed tree order (deterministic).
#extension GL_GOOGLE_include_directive : require
#define MVK_KERNEL_ROUTER_LOGITS
#include "interface.h"
#include "common.glsl"
#include "formats.glsl"

layout(local_size_x_id = MVK_SPEC_WG) in;
layout(constant_id = MVK_ROUTER_SPEC_WFMT) const uint WDTYPE = 0;
const uint TOKENS = MVK_ROUTER_TOKENS;

layout(std430, binding = MVK_ROUTER_BIND_X) readonly buffer X { float x[]; };
layout(std430, binding = MVK_ROUTER_BIND_W) readonly buffer W { uint w[]; };
layout(std430, binding = MVK_ROUTER_BIND_BIAS) readonly buffer B { float bias[]; };
layout(std430, binding = MVK_ROUTER_BIND_LOGITS) writeonly buffer L { float logits[]; };

shared float red[TOKENS][gl_WorkGroupSize.x];

DEFINE_LOADER(load_w, w, WDTYPE)

void main()
{
    const uint e = gl_WorkGroupID.x;
    const uint t0 = p.tok0 + gl_WorkGroupID.y * TOKENS;
    const uint lid = gl_LocalInvocationID.x;
    const uint WG = gl_WorkGroupSize.x;
    float acc[TOKENS];
    for (uint j = 0; j < TOKENS; j++)
        acc[j] = 0.0;
    const uint wrow = e * p.H;
    for (uint h = lid; h < p.H; h += WG) {
        float wv = load_w(wrow + h);
        for (uint j = 0; j < TOKENS; j++)
            if (t0 + j < p.T)
                acc[j] = fma(x[(t0 + j) * p.H + h], wv, acc[j]);
    }
    for (uint j = 0; j < TOKENS; j++)
        red[j][lid] = acc[j];
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            for (uint j = 0; j < TOKENS; j++)
                red[j][lid] += red[j][lid + s];
        barrier();
    }
    if (lid < TOKENS && t0 + lid < p.T) {
        float v = red[lid][0];
        if (p.has_bias != 0u)
            v += bias[e];
        logits[(t0 + lid - p.out_tok0) * p.E + e] = v;
    }
}
