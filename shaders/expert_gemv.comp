#version 450
// The skinny expert kernel: up to MVK_SKINNY_ROWS rows of one expert,
//   out[r, n] = act(A[r, :] . B0[e, n, :] (+ bias0), A[r, :] . B1[e, n, :] (+ bias1))
// for COLS output columns per workgroup. Every weight element is read once
// (f32/f16/bf16 with 128-bit loads where the rows allow; block formats
// decoded from their packed bytes), whatever the row count, and
// all the rows accumulate in registers: a decode step is bound by the
// weights' bytes, not by padding.
//
// The workgroup's threads are COLS columns x LANES chunk lanes. K is walked
// in steps of LANES * MVK_KCHUNK: the step's x rows are staged in shared
// memory, lane l accumulates chunk l of the step for its column (a
// sequential fma chain from 0), and the lanes' partials are added into the
// column's sum in lane order -- the canonical order of interface.h, so the
// result is bitwise the tiled kernel's (expert_gemm.comp) for the same row.
#extension GL_GOOGLE_include_directive : require
#define MVK_KERNEL_EXPERT_GEMV
#include "interface.h"
#include "common.glsl"
#include "formats.glsl"

layout(local_size_x_id = MVK_SPEC_WG) in;
layout(constant_id = MVK_GEMV_SPEC_COLS) const uint COLS = MVK_GEMV_COLS;
layout(constant_id = MVK_GEMV_SPEC_WFMT) const uint WDTYPE = MVK_WFMT_F32;
layout(constant_id = MVK_GEMV_SPEC_GATED) const uint GATED = 0;
// scheduled or dense, gathered A rows or not: push constants (uniform
// branches), not specialization constants, so one pipeline serves the
// routed experts' up and down projections and the shared experts
#define SCHED (p.sched)
#define GATHER (p.gather)
layout(constant_id = MVK_GEMV_SPEC_PERM) const uint PERM = 0;
const uint ROWS = MVK_SKINNY_ROWS;
const uint LANES = gl_WorkGroupSize.x / COLS;
const uint KC = MVK_KCHUNK;

layout(std430, binding = MVK_GEMM_BIND_A) readonly buffer A { float a_rows[]; };
layout(std430, binding = MVK_GEMM_BIND_ROW_TOKEN) readonly buffer RT { uint row_token[]; };
layout(std430, binding = MVK_GEMM_BIND_SCHEDULE) readonly buffer SC { uvec2 schedule[]; };
layout(std430, binding = MVK_GEMM_BIND_META) readonly buffer M { uint meta[]; };
layout(std430, binding = MVK_GEMM_BIND_W0) readonly buffer B0 { uint w0[]; };
layout(std430, binding = MVK_GEMM_BIND_W0) readonly buffer B0V { uvec4 w0v[]; };
layout(std430, binding = MVK_GEMM_BIND_W1) readonly buffer B1 { uint w1[]; };
layout(std430, binding = MVK_GEMM_BIND_W1) readonly buffer B1V { uvec4 w1v[]; };
layout(std430, binding = MVK_GEMM_BIND_BIAS0) readonly buffer BB0 { float bias0[]; };
layout(std430, binding = MVK_GEMM_BIND_BIAS1) readonly buffer BB1 { float bias1[]; };
layout(std430, binding = MVK_GEMM_BIND_OUT) writeonly buffer O { float outv[]; };
layout(std430, binding = MVK_GEMM_BIND_PERM) readonly buffer PM { uint perm[]; };
layout(std430, binding = MVK_GEMM_BIND_SLOTS) readonly buffer SL { uint slot_of[]; };

// Expert e's slot in the bound weights (interface.h), MVK_NO_SLOT if absent.
uint weight_slot(uint e)
{
    if (p.slot_base == MVK_NO_TABLE)
        return e >= p.e_first && e - p.e_first < p.e_count ? e - p.e_first : MVK_NO_SLOT;
    return slot_of[p.slot_base + e];
}

DEFINE_WEIGHT_LOADER(load_w0, w0, WDTYPE)
DEFINE_WEIGHT_LOADER(load_w1, w1, WDTYPE)
DEFINE_VEC_LOADER(load_w0_vec, w0v, WDTYPE)
DEFINE_VEC_LOADER(load_w1_vec, w1v, WDTYPE)
#include "expert_output.glsl"

// x rows of the current step, [row][lane][k in chunk] (+1 against bank
// conflicts between lanes), and each column's sums.
shared float x_s[ROWS][LANES][KC + 1];
shared float sum_s0[ROWS][COLS];
shared float sum_s1[GATED != 0u ? ROWS : 1][GATED != 0u ? COLS : 1];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint WG = gl_WorkGroupSize.x;
    const uint col = lid / LANES, lane = lid % LANES;

    uint e, row0, nrows;
    if (SCHED != 0u) {
        uvec2 s = schedule[meta[MVK_META_SCHED_BASE(p.E, p.path)] + gl_WorkGroupID.x];
        e = s.x;
        row0 = meta[MVK_META_OFFSETS(p.E) + e] + s.y * ROWS;
        nrows = min(ROWS, meta[MVK_META_COUNTS(p.E) + e] - s.y * ROWS);
    } else {
        e = p.dense_expert;
        row0 = gl_WorkGroupID.x * ROWS;
        nrows = min(ROWS, p.M - row0);
    }
    const uint n = gl_WorkGroupID.y * COLS + col;
    const uint slot = weight_slot(e);
    if (slot == MVK_NO_SLOT)
        return; // another weight buffer's expert
    const uint wr = slot * p.N + n; // the row of W[e, n, :] in the bound weights
    const uint wrow = wr * p.K;                // its first element (plain formats)
    const bool vec = WFMT_BLOCK_ELEMS(WDTYPE) == 1u && (p.K % VEC_ELEMS(WDTYPE)) == 0u;

    for (uint i = lid; i < ROWS * COLS; i += WG) {
        sum_s0[i / COLS][i % COLS] = 0.0;
        if (GATED != 0u)
            sum_s1[i / COLS][i % COLS] = 0.0;
    }
    for (uint ks = 0; ks < p.K; ks += LANES * KC) {
        barrier(); // the previous step's x rows are consumed
        for (uint i = lid; i < ROWS * LANES * KC; i += WG) {
            uint r = i / (LANES * KC), kk = i % (LANES * KC), k = ks + kk;
            float v = 0.0;
            if (r < nrows && k < p.K) {
                uint row = row0 + r;
                uint src = GATHER != 0u ? row_token[row] : (SCHED != 0u ? row : p.a_row0 + row);
                v = a_rows[src * p.K + (PERM != 0u ? perm[e * p.K + k] : k)];
            }
            x_s[r][kk / KC][kk % KC] = v;
        }
        barrier();

        const uint kbeg = ks + lane * KC, kend = min(kbeg + KC, p.K);
        const bool mine = n < p.N && kbeg < p.K;
        float part0[ROWS], part1[ROWS];
        for (uint r = 0; r < ROWS; r++) {
            part0[r] = 0.0;
            part1[r] = 0.0;
        }
        if (mine) {
            if (vec) {
                for (uint k = kbeg; k < kend; k += VEC_ELEMS(WDTYPE)) {
                    float wa[8], wb[8];
                    load_w0_vec(wrow + k, wa);
                    if (GATED != 0u)
                        load_w1_vec(wrow + k, wb);
                    for (uint j = 0; j < VEC_ELEMS(WDTYPE); j++) {
                        const uint kk = k - kbeg + j;
                        for (uint r = 0; r < ROWS; r++) {
                            if (r < nrows) {
                                float xv = x_s[r][lane][kk];
                                part0[r] = fma(xv, wa[j], part0[r]);
                                if (GATED != 0u)
                                    part1[r] = fma(xv, wb[j], part1[r]);
                            }
                        }
                    }
                }
            } else {
                for (uint k = kbeg; k < kend; k++) {
                    float wa = load_w0(wr, k), wb = GATED != 0u ? load_w1(wr, k) : 0.0;
                    for (uint r = 0; r < ROWS; r++) {
                        if (r < nrows) {
                            float xv = x_s[r][lane][k - kbeg];
                            part0[r] = fma(xv, wa, part0[r]);
                            if (GATED != 0u)
                                part1[r] = fma(xv, wb, part1[r]);
                        }
                    }
                }
            }
        }
        // chunk partials into the sums, in chunk (lane) order
        for (uint l = 0; l < LANES; l++) {
            barrier();
            if (lane == l && mine) {
                for (uint r = 0; r < ROWS; r++) {
                    if (r < nrows) {
                        sum_s0[r][col] += part0[r];
                        if (GATED != 0u)
                            sum_s1[r][col] += part1[r];
                    }
                }
            }
        }
    }
    barrier();
    for (uint i = lid; i < ROWS * COLS; i += WG) {
        const uint r = i / COLS, c = i % COLS, nn = gl_WorkGroupID.y * COLS + c;
        if (r < nrows && nn < p.N)
            outv[p.out_offset + (row0 + r) * p.N + nn] =
                expert_output(e, nn, sum_s0[r][c], GATED != 0u ? sum_s1[r][c] : 0.0);
    }
}
