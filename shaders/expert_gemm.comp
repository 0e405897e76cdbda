#version 450
// Grouped expert GEMM: out[r, n] = act(A[r, :] . B0[e, n, :] (+ bias0),
//                                      A[r, :] . B1[e, n, :] (+ bias1))
// for the rows r of each expert e (B as nn.Linear weights, [N, K] per
// expert). One workgroup computes a BM x BN tile of one expert; which expert
// and which rows come from the GPU-written tile schedule (SCHED = 1), so an
// expert without tokens costs nothing, or from the grid (SCHED = 0: dense
// rows 0..M-1 of one expert, for shared experts and routers).
// Shared-memory tiling, each output accumulated in the canonical order of
// interface.h (k chunks of MVK_KCHUNK): deterministic and the same bits as
// the skinny kernel (expert_gemv.comp) for the same row.
#extension GL_GOOGLE_include_directive : require
#define MVK_KERNEL_EXPERT_GEMM
#include "interface.h"
#include "common.glsl"
#include "formats.glsl"

layout(local_size_x_id = MVK_SPEC_WG) in;
layout(constant_id = MVK_GEMM_SPEC_BM) const uint BM = 64;
layout(constant_id = MVK_GEMM_SPEC_BN) const uint BN = MVK_GEMM_BN;
layout(constant_id = MVK_GEMM_SPEC_WFMT) const uint WDTYPE = MVK_WFMT_F32;
layout(constant_id = MVK_GEMM_SPEC_GATED) const uint GATED = 0;
layout(constant_id = MVK_GEMM_SPEC_ACT) const uint ACT = MVK_ACT_NONE;
layout(constant_id = MVK_GEMM_SPEC_SCHED) const uint SCHED = 1;
layout(constant_id = MVK_GEMM_SPEC_GATHER) const uint GATHER = 1;
const uint BK = 16;
const uint TM = MVK_GEMM_TM;
const uint TN = MVK_GEMM_TN;

layout(std430, binding = MVK_GEMM_BIND_A) readonly buffer A { float a_rows[]; };
layout(std430, binding = MVK_GEMM_BIND_ROW_TOKEN) readonly buffer RT { uint row_token[]; };
layout(std430, binding = MVK_GEMM_BIND_SCHEDULE) readonly buffer SC { uvec2 schedule[]; };
layout(std430, binding = MVK_GEMM_BIND_META) readonly buffer M { uint meta[]; };
layout(std430, binding = MVK_GEMM_BIND_W0) readonly buffer B0 { uint w0[]; };
layout(std430, binding = MVK_GEMM_BIND_W1) readonly buffer B1 { uint w1[]; };
layout(std430, binding = MVK_GEMM_BIND_BIAS0) readonly buffer BB0 { float bias0[]; };
layout(std430, binding = MVK_GEMM_BIND_BIAS1) readonly buffer BB1 { float bias1[]; };
layout(std430, binding = MVK_GEMM_BIND_OUT) writeonly buffer O { float outv[]; };

DEFINE_LOADER(load_w0, w0, WDTYPE)
DEFINE_LOADER(load_w1, w1, WDTYPE)
#include "expert_output.glsl"

shared float As[BK][BM];
shared float Bs0[BK][BN];
shared float Bs1[BK][GATED != 0u ? BN : 1u];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint WG = gl_WorkGroupSize.x;
    const uint TX = BN / TN; // threads along N
    const uint tx = lid % TX, ty = lid / TX;

    uint e, row0, row_end;
    if (SCHED != 0u) {
        uvec2 s = schedule[meta[MVK_META_SCHED_BASE(p.E, p.path)] + gl_WorkGroupID.x];
        e = s.x;
        if (e < p.e_first || e >= p.e_first + p.e_count)
            return; // another weight chunk's expert
        uint base = meta[MVK_META_OFFSETS(p.E) + e];
        row0 = base + s.y * BM;
        row_end = base + meta[MVK_META_COUNTS(p.E) + e];
    } else {
        e = p.dense_expert;
        row0 = gl_WorkGroupID.x * BM;
        row_end = p.M;
    }
    const uint n0 = gl_WorkGroupID.y * BN;
    const uint wbase = (e - p.e_first) * p.N * p.K;

    // The canonical order (interface.h): a chunk's fma chain in acc*, the
    // chunk partials added in order into sum*.
    float acc0[TM][TN], acc1[TM][TN], sum0[TM][TN], sum1[TM][TN];
    for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) {
            acc0[i][j] = 0.0;
            acc1[i][j] = 0.0;
            sum0[i][j] = 0.0;
            sum1[i][j] = 0.0;
        }

    for (uint k0 = 0; k0 < p.K; k0 += BK) {
        for (uint idx = lid; idx < BM * BK; idx += WG) {
            uint r = idx / BK, kk = idx % BK;
            uint row = row0 + r, k = k0 + kk;
            float v = 0.0;
            if (row < row_end && k < p.K) {
                uint src = GATHER != 0u ? row_token[row] : (SCHED != 0u ? row : p.a_row0 + row);
                v = a_rows[src * p.K + k];
            }
            As[kk][r] = v;
        }
        for (uint idx = lid; idx < BN * BK; idx += WG) {
            uint n = idx / BK, kk = idx % BK;
            uint nn = n0 + n, k = k0 + kk;
            bool ok = nn < p.N && k < p.K;
            uint wi = wbase + nn * p.K + k;
            Bs0[kk][n] = ok ? load_w0(wi) : 0.0;
            if (GATED != 0u)
                Bs1[kk][n] = ok ? load_w1(wi) : 0.0;
        }
        barrier();
        for (uint kk = 0; kk < BK; kk++) {
            float a[TM], b0[TN], b1[TN];
            for (uint i = 0; i < TM; i++)
                a[i] = As[kk][ty + i * (BM / TM)];
            for (uint j = 0; j < TN; j++) {
                b0[j] = Bs0[kk][tx + j * TX];
                if (GATED != 0u)
                    b1[j] = Bs1[kk][tx + j * TX];
            }
            for (uint i = 0; i < TM; i++)
                for (uint j = 0; j < TN; j++) {
                    acc0[i][j] = fma(a[i], b0[j], acc0[i][j]);
                    if (GATED != 0u)
                        acc1[i][j] = fma(a[i], b1[j], acc1[i][j]);
                }
        }
        barrier();
        if ((k0 + BK) % MVK_KCHUNK == 0u || k0 + BK >= p.K) {
            for (uint i = 0; i < TM; i++)
                for (uint j = 0; j < TN; j++) {
                    sum0[i][j] += acc0[i][j];
                    acc0[i][j] = 0.0;
                    if (GATED != 0u) {
                        sum1[i][j] += acc1[i][j];
                        acc1[i][j] = 0.0;
                    }
                }
        }
    }

    for (uint i = 0; i < TM; i++) {
        uint row = row0 + ty + i * (BM / TM);
        if (row >= row_end)
            continue;
        for (uint j = 0; j < TN; j++) {
            uint n = n0 + tx + j * TX;
            if (n >= p.N)
                continue;
            outv[p.out_offset + row * p.N + n] = expert_output(e, n, sum0[i][j], sum1[i][j]);
        }
    }
}
