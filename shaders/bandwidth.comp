#version 450
// Device read bandwidth probe: every thread streams vec4s through a large
// buffer with a grid-sized stride and writes one sum per workgroup (so the
// reads cannot be optimised away). Bytes read / time is the ceiling that
// memory-bound stages are measured against.
#extension GL_GOOGLE_include_directive : require
#define MVK_KERNEL_BANDWIDTH
#include "interface.h"

layout(local_size_x_id = MVK_SPEC_WG) in;

layout(std430, binding = MVK_BANDWIDTH_BIND_SRC) readonly buffer S { vec4 src[]; };
layout(std430, binding = MVK_BANDWIDTH_BIND_SUMS) writeonly buffer D { float sums[]; };

shared float red[gl_WorkGroupSize.x];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    vec4 acc = vec4(0.0);
    for (uint i = gl_GlobalInvocationID.x; i < p.n_vec4; i += stride)
        acc += src[i];
    red[lid] = acc.x + acc.y + acc.z + acc.w;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] += red[lid + s];
        barrier();
    }
    if (lid == 0)
        sums[gl_WorkGroupID.x] = red[0];
}
