#version 450
// Device read bandwidth probe: every thread streams vec4s through a large
// buffer with a grid-sized stride and writes one sum per workgroup (so the
// reads cannot be optimised away). Bytes read / time is the ceiling that
// memory-bound stages are measured against.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer S { vec4 src[]; };
layout(std430, binding = 1) writeonly buffer D { float sums[]; };

layout(push_constant) uniform P {
    uint n_vec4;
} p;

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
