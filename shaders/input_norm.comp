#version 450
// The input norms of a layer (Gemma 4), one workgroup per token: the rows the
// router reads (xr) and the rows the experts read (xe), interface.h.
#extension GL_GOOGLE_include_directive : require
#define MVK_KERNEL_INPUT_NORM
#include "interface.h"

layout(local_size_x_id = MVK_SPEC_WG) in;

layout(std430, binding = MVK_NORM_BIND_X) readonly buffer X { float x[]; };
layout(std430, binding = MVK_NORM_BIND_RSCALE) readonly buffer RS { float rscale[]; };
layout(std430, binding = MVK_NORM_BIND_EWEIGHT) readonly buffer EW { float eweight[]; };
layout(std430, binding = MVK_NORM_BIND_XR) writeonly buffer XR { float xr[]; };
layout(std430, binding = MVK_NORM_BIND_XE) writeonly buffer XE { float xe[]; };

shared float part[MVK_NORM_WG];

void main()
{
    const uint t = p.tok0 + gl_WorkGroupID.x;
    const uint lid = gl_LocalInvocationID.x, n = gl_WorkGroupSize.x;
    if (t >= p.T)
        return; // uniform per workgroup
    const uint base = t * p.H;
    float acc = 0.0;
    for (uint h = lid; h < p.H; h += n) {
        precise float v = x[base + h] * x[base + h];
        acc += v;
    }
    part[lid] = acc;
    barrier();
    for (uint s = n / 2u; s > 0u; s >>= 1) {
        if (lid < s)
            part[lid] = part[lid] + part[lid + s];
        barrier();
    }
    const float mean = part[0] / float(p.H);
    const float nr = p.r_eps > 0.0 ? 1.0 / sqrt(mean + p.r_eps) : 1.0;
    const float ne = p.e_eps > 0.0 ? 1.0 / sqrt(mean + p.e_eps) : 1.0;
    for (uint h = lid; h < p.H; h += n) {
        const float v = x[base + h];
        if (p.do_router != 0u) {
            float r = v * nr;
            if (p.has_rscale != 0u)
                r = r * rscale[h];
            xr[base + h] = r * p.r_factor;
        }
        if (p.do_expert != 0u) {
            float e = v * ne;
            if (p.has_eweight != 0u)
                e = e * eweight[h];
            xe[base + h] = e;
        }
    }
}
