#version 450
// Gather and weighted combine, one thread per output element:
//   y[t, h] = sum_{j = 0..k-1} w[t, j] * o[row(t, j), h]   (slot order,
//             dropped assignments skipped; with renorm_eps > 0 each w over
//             max(sum of the token's admitted w / renorm_scale, renorm_eps))
// for the T tokens tok0 .. tok0 + T - 1: y and the weights are indexed by
// token, row_of, the shared outputs and their gate logits by token - tok0.
//           + sum_i gate_i(t) * shared_out[i, t, h]        (shared experts)
// with gate_i(t) = sigmoid(shared_gate_logit[t, i]) when the layer has a
// shared-expert gate (gate_mode LOGITS), the gate itself at the token's
// global row (FINAL: shared_sink, from route), else 1. No atomics:
// deterministic.
#extension GL_GOOGLE_include_directive : require
#define MVK_KERNEL_COMBINE
#include "interface.h"
#include "common.glsl"

layout(local_size_x_id = MVK_SPEC_WG) in;

layout(std430, binding = MVK_COMBINE_BIND_O) readonly buffer O { float o_rows[]; };
layout(std430, binding = MVK_COMBINE_BIND_ROW_OF) readonly buffer R { int row_of[]; };
layout(std430, binding = MVK_COMBINE_BIND_WEIGHTS) readonly buffer W { float weights[]; };
layout(std430, binding = MVK_COMBINE_BIND_SHARED_OUT) readonly buffer SO { float shared_out[]; };
layout(std430, binding = MVK_COMBINE_BIND_SHARED_GATE) readonly buffer SG { float shared_gate[]; };
layout(std430, binding = MVK_COMBINE_BIND_Y) writeonly buffer Y { float y[]; };
layout(std430, binding = MVK_COMBINE_BIND_OUT_BIAS) readonly buffer OB { float out_bias[]; };

void main()
{
    const uint i = p.elem0 + gl_GlobalInvocationID.x +
                   gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (i >= p.T * p.H)
        return;
    const uint t = i / p.H, h = i - t * p.H;
    // drop_renorm_eps: the admitted weights over their sum (unscaled), at
    // least renorm_eps, in slot order (a NaN stays)
    float den = 1.0;
    if (p.renorm_eps > 0.0) {
        float sum = 0.0;
        for (uint j = 0; j < p.K; j++)
            if (row_of[t * p.K + j] >= 0)
                sum += weights[(p.tok0 + t) * p.K + j];
        sum = sum / p.renorm_scale;
        den = sum < p.renorm_eps ? p.renorm_eps : sum;
    }
    float acc = 0.0;
    for (uint j = 0; j < p.K; j++) {
        int r = row_of[t * p.K + j];
        if (r >= 0)
            acc = p.unit_weights != 0u ? acc + o_rows[uint(r) * p.H + h]
                                       : fma(weights[(p.tok0 + t) * p.K + j] / den,
                                             o_rows[uint(r) * p.H + h], acc);
    }
    for (uint s = 0; s < p.n_shared; s++) {
        float v = shared_out[(s * p.T + t) * p.H + h];
        if (p.gate_mode == MVK_GATE_LOGITS)
            v *= sigmoid(shared_gate[t * p.n_shared + s]);
        else if (p.gate_mode == MVK_GATE_FINAL)
            v *= shared_gate[(p.tok0 + t) * p.n_shared + s];
        acc = fma(p.shared_scale, v, acc);
    }
    if (p.has_out_bias != 0u)
        acc += out_bias[h];
    y[p.tok0 * p.H + i] = acc;
}
