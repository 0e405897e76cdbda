#version 450
// Gather and weighted combine, one thread per output element:
//   y[t, h] = sum_{j = 0..k-1} w[t, j] * o[row(t, j), h]   (slot order,
//             dropped assignments skipped)
//           + sum_i gate_i(t) * shared_out[i, t, h]        (shared experts)
// with gate_i(t) = sigmoid(shared_gate_logit[t, i]) when the layer has a
// shared-expert gate, else 1. No atomics: deterministic.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer O { float o_rows[]; };
layout(std430, binding = 1) readonly buffer R { int row_of[]; };
layout(std430, binding = 2) readonly buffer W { float weights[]; };
layout(std430, binding = 3) readonly buffer SO { float shared_out[]; };
layout(std430, binding = 4) readonly buffer SG { float shared_gate[]; };
layout(std430, binding = 5) writeonly buffer Y { float y[]; };

layout(push_constant) uniform P {
    uint T, H, K, n_shared, has_gate, elem0;
} p;

void main()
{
    const uint i = p.elem0 + gl_GlobalInvocationID.x +
                   gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (i >= p.T * p.H)
        return;
    const uint t = i / p.H, h = i - t * p.H;
    float acc = 0.0;
    for (uint j = 0; j < p.K; j++) {
        int r = row_of[t * p.K + j];
        if (r >= 0)
            acc = fma(weights[t * p.K + j], o_rows[uint(r) * p.H + h], acc);
    }
    for (uint s = 0; s < p.n_shared; s++) {
        float v = shared_out[(s * p.T + t) * p.H + h];
        if (p.has_gate != 0u)
            v *= sigmoid(shared_gate[t * p.n_shared + s]);
        acc += v;
    }
    y[i] = acc;
}
