#version 450
// The experts' inputs of a layer whose routing weights scale them (Llama 4),
// one thread per element of x:
//   xs[row(t, j), h] = w[t, j] * x[t, h]   for every admitted slot j
// for the T tokens tok0 .. tok0 + T - 1 (x and the weights indexed by token,
// row_of by token - tok0). Each xs element has one writer. With id_first,
// the identity experts' outputs: o[row(t, j)] = x[t] (or w x[t]) for the
// slots whose expert is an identity one (interface.h).
#extension GL_GOOGLE_include_directive : require
#define MVK_KERNEL_SCALE_ROWS
#include "interface.h"

layout(local_size_x_id = MVK_SPEC_WG) in;

layout(std430, binding = MVK_SCALE_BIND_X) readonly buffer X { float x[]; };
layout(std430, binding = MVK_SCALE_BIND_ROW_OF) readonly buffer R { int row_of[]; };
layout(std430, binding = MVK_SCALE_BIND_WEIGHTS) readonly buffer W { float weights[]; };
layout(std430, binding = MVK_SCALE_BIND_XS) writeonly buffer XS { float xs[]; };
layout(std430, binding = MVK_SCALE_BIND_IDS) readonly buffer I { uint ids[]; };

void main()
{
    const uint i = p.elem0 + gl_GlobalInvocationID.x;
    if (i >= p.T * p.H)
        return;
    const uint t = i / p.H, h = i - t * p.H;
    const float v = x[p.tok0 * p.H + i];
    for (uint j = 0; j < p.K; j++) {
        int r = row_of[t * p.K + j];
        if (r < 0 || (p.id_first > 0u && ids[(p.tok0 + t) * p.K + j] < p.id_first))
            continue;
        xs[uint(r) * p.H + h] = p.unit != 0u ? v : weights[(p.tok0 + t) * p.K + j] * v;
    }
}
