#version 450
// Router logits: logits[t, e] = x[t, :] . w[e, :] (+ bias[e]).
// One workgroup per (expert, tile of TOKENS tokens); threads stride over H and
// reduce in shared memory in a fixed tree order (deterministic).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint WDTYPE = 0;
const uint TOKENS = 4;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { uint w[]; };
layout(std430, binding = 2) readonly buffer B { float bias[]; };
layout(std430, binding = 3) writeonly buffer L { float logits[]; };

layout(push_constant) uniform P {
    uint T, H, E, has_bias, tok0;
} p;

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
        logits[(t0 + lid) * p.E + e] = v;
    }
}
