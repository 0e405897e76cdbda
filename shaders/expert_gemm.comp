#version 450
// Grouped expert GEMM: out[r, n] = act(A[r, :] . B0[e, n, :] (+ bias0),
//                                      A[r, :] . B1[e, n, :] (+ bias1))
// for the rows r of each expert e (B as nn.Linear weights, [N, K] per
// expert). One workgroup computes a BM x BN tile of one expert; which expert
// and which rows come from the GPU-written tile schedule (SCHED = 1), so an
// expert without tokens costs nothing, or from the grid (SCHED = 0: dense
// rows 0..M-1 of one expert, for shared experts and routers).
//
// The portable kernel: shared-memory tiling, each output accumulated in the
// canonical order of interface.h (k chunks of MVK_KCHUNK): deterministic
// and the same bits as the skinny kernel (expert_gemv.comp) for the same
// row.
//
// Matrix-unit variants (BM = BN = 64, 256 invocations), the same source with
// the same staging, edge handling, epilogue and stores; only the inner
// product differs:
//   MVK_COOPMAT          VK_KHR_cooperative_matrix, f16 x f16 -> f32
//                        16x16x16 (a glslang that knows the extension)
//   MVK_COOPMAT_EMULATE  the three intrinsics (load, multiply-add, store)
//                        emulated with plain shared-memory loops, for the
//                        tests on devices without matrix units
// The 4 x 4 blocks of 16 x 16 of a tile are split among the 8 subgroups of
// 32 invocations, two each (the emulation: 8 virtual subgroups of 32
// invocations); accumulators are
// stored to shared memory at the end and read back in the portable
// kernel's thread layout, so the epilogue is the same code. These variants
// accumulate in the matrix units' order: not batch invariant.
#extension GL_GOOGLE_include_directive : require
#if defined(MVK_COOPMAT)
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif
#define MVK_KERNEL_EXPERT_GEMM
#include "interface.h"
#include "common.glsl"
#include "formats.glsl"

#if defined(MVK_COOPMAT) || defined(MVK_COOPMAT_EMULATE)
#define MATRIX_UNITS 1
#endif

layout(local_size_x_id = MVK_SPEC_WG) in;
layout(constant_id = MVK_GEMM_SPEC_BM) const uint BM = 64;
layout(constant_id = MVK_GEMM_SPEC_BN) const uint BN = MVK_GEMM_BN;
layout(constant_id = MVK_GEMM_SPEC_WFMT) const uint WDTYPE = MVK_WFMT_F32;
layout(constant_id = MVK_GEMM_SPEC_GATED) const uint GATED = 0;
// scheduled or dense, gathered A rows or not: push constants (uniform
// branches), not specialization constants, so one pipeline serves the
// routed experts' up and down projections and the shared experts
#define SCHED (p.sched)
#define GATHER (p.gather)
layout(constant_id = MVK_GEMM_SPEC_PERM) const uint PERM = 0;
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
#include "expert_output.glsl"

// Staging element type: f16 for the matrix units, else f32.
#if defined(MVK_COOPMAT)
#define ST float16_t
#else
#define ST float
#endif

// The k x rows tile of A and the k x columns tiles of B0/B1, k-major.
shared ST As[BK * BM];
shared ST Bs0[BK * BN];
shared ST Bs1[BK * (GATED != 0u ? BN : 1u)];
#define AS(kk, r) As[(kk) * BM + (r)]
#define BS0(kk, n) Bs0[(kk) * BN + (n)]
#define BS1(kk, n) Bs1[(kk) * BN + (n)]

#if defined(MATRIX_UNITS)
const uint FRAG = 16;                    // fragment edge
shared float Cs[BM * BN];                // one accumulator tile at a time

#if defined(MVK_COOPMAT)
#define FRAG_A coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>
#define FRAG_B coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseB>
#define FRAG_C coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>
uint subgroup_id() { return gl_SubgroupID; }
#else
// Emulation. A and B "fragments" are views of the staging tiles; an
// accumulator holds 8 of the 16 x 16 elements in each of 32 invocations
// (element lane + 32 i: row lane / 16 + 2 i, column lane % 16).
struct FRAG_A { uint off; };  // As index of (k = 0, row 0)
struct FRAG_B { uint off; };  // Bs index of (k = 0, column 0)
struct FRAG_C { float v[8]; };
uint subgroup_id() { return gl_LocalInvocationID.x / 32u; }
uint lane() { return gl_LocalInvocationID.x % 32u; }
FRAG_C emu_zero()
{
    FRAG_C c;
    for (uint i = 0; i < 8u; i++)
        c.v[i] = 0.0;
    return c;
}
// c += a (16 rows x 16 k of As) * b (16 k x 16 columns of Bs0 or Bs1)
FRAG_C emu_muladd(FRAG_A a, FRAG_B b, FRAG_C c, bool second)
{
    for (uint i = 0; i < 8u; i++) {
        uint r = lane() / 16u + 2u * i, col = lane() % 16u;
        float acc = c.v[i];
        for (uint kk = 0; kk < FRAG; kk++) {
            float bv = second ? Bs1[b.off + kk * BN + col] : Bs0[b.off + kk * BN + col];
            acc = fma(As[a.off + kk * BM + r], bv, acc);
        }
        c.v[i] = acc;
    }
    return c;
}
void emu_store(FRAG_C c, uint off)
{
    for (uint i = 0; i < 8u; i++)
        Cs[off + (lane() / 16u + 2u * i) * BN + lane() % 16u] = c.v[i];
}
#endif
#endif

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
        uint base = meta[MVK_META_OFFSETS(p.E) + e];
        row0 = base + s.y * BM;
        row_end = base + meta[MVK_META_COUNTS(p.E) + e];
    } else {
        e = p.dense_expert;
        row0 = gl_WorkGroupID.x * BM;
        row_end = p.M;
    }
    const uint n0 = gl_WorkGroupID.y * BN;
    const uint slot = weight_slot(e);
    if (slot == MVK_NO_SLOT)
        return; // another weight buffer's expert
    const uint wrow0 = slot * p.N; // the expert's first row in the bound weights

    // The portable order (interface.h): a chunk's fma chain in acc*, the
    // chunk partials added in order into sum*, which end as the outputs.
    float acc0[TM][TN], acc1[TM][TN], sum0[TM][TN], sum1[TM][TN];
    for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) {
            acc0[i][j] = 0.0;
            acc1[i][j] = 0.0;
            sum0[i][j] = 0.0;
            sum1[i][j] = 0.0;
        }
#if defined(MATRIX_UNITS)
    // Two fragments per subgroup: 8 subgroups (32 invocations each; the
    // host requires that subgroup size for the hardware variant). Named
    // variables, one per declaration: glslang 13 drops the matrix use of
    // arrays and of further declarators.
    const uint sg = subgroup_id();
#if defined(MVK_COOPMAT)
    FRAG_C c0a = FRAG_C(0.0);
    FRAG_C c0b = FRAG_C(0.0);
    FRAG_C c1a = FRAG_C(0.0);
    FRAG_C c1b = FRAG_C(0.0);
#else
    FRAG_C c0a = emu_zero();
    FRAG_C c0b = emu_zero();
    FRAG_C c1a = emu_zero();
    FRAG_C c1b = emu_zero();
#endif
#endif

    for (uint k0 = 0; k0 < p.K; k0 += BK) {
        for (uint idx = lid; idx < BM * BK; idx += WG) {
            uint r = idx / BK, kk = idx % BK;
            uint row = row0 + r, k = k0 + kk;
            float v = 0.0;
            if (row < row_end && k < p.K) {
                uint src = GATHER != 0u ? row_token[row] : (SCHED != 0u ? row : p.a_row0 + row);
                v = a_rows[src * p.K + (PERM != 0u ? perm[e * p.K + k] : k)];
            }
            AS(kk, r) = ST(v);
        }
        for (uint idx = lid; idx < BN * BK; idx += WG) {
            uint n = idx / BK, kk = idx % BK;
            uint nn = n0 + n, k = k0 + kk;
            bool ok = nn < p.N && k < p.K;
            BS0(kk, n) = ST(ok ? load_w0(wrow0 + nn, k) : 0.0);
            if (GATED != 0u)
                BS1(kk, n) = ST(ok ? load_w1(wrow0 + nn, k) : 0.0);
        }
        barrier();
#if defined(MATRIX_UNITS)
        {
            // subgroup sg: blocks 2 sg and 2 sg + 1 (row-major over the 4 x 4)
            const uint ba = 2u * sg, bb = 2u * sg + 1u;
            const uint ra = (ba / (BN / FRAG)) * FRAG, ca = (ba % (BN / FRAG)) * FRAG;
            const uint rb = (bb / (BN / FRAG)) * FRAG, cb = (bb % (BN / FRAG)) * FRAG;
#if defined(MVK_COOPMAT)
            FRAG_A fa;
            FRAG_B fb;
            coopMatLoad(fa, As, ra, BM, gl_CooperativeMatrixLayoutColumnMajor);
            coopMatLoad(fb, Bs0, ca, BN, gl_CooperativeMatrixLayoutRowMajor);
            c0a = coopMatMulAdd(fa, fb, c0a);
            if (GATED != 0u) {
                coopMatLoad(fb, Bs1, ca, BN, gl_CooperativeMatrixLayoutRowMajor);
                c1a = coopMatMulAdd(fa, fb, c1a);
            }
            coopMatLoad(fa, As, rb, BM, gl_CooperativeMatrixLayoutColumnMajor);
            coopMatLoad(fb, Bs0, cb, BN, gl_CooperativeMatrixLayoutRowMajor);
            c0b = coopMatMulAdd(fa, fb, c0b);
            if (GATED != 0u) {
                coopMatLoad(fb, Bs1, cb, BN, gl_CooperativeMatrixLayoutRowMajor);
                c1b = coopMatMulAdd(fa, fb, c1b);
            }
#else
            c0a = emu_muladd(FRAG_A(ra), FRAG_B(ca), c0a, false);
            c0b = emu_muladd(FRAG_A(rb), FRAG_B(cb), c0b, false);
            if (GATED != 0u) {
                c1a = emu_muladd(FRAG_A(ra), FRAG_B(ca), c1a, true);
                c1b = emu_muladd(FRAG_A(rb), FRAG_B(cb), c1b, true);
            }
#endif
        }
#else
        for (uint kk = 0; kk < BK; kk++) {
            float a[TM], b0[TN], b1[TN];
            for (uint i = 0; i < TM; i++)
                a[i] = AS(kk, ty + i * (BM / TM));
            for (uint j = 0; j < TN; j++) {
                b0[j] = BS0(kk, tx + j * TX);
                if (GATED != 0u)
                    b1[j] = BS1(kk, tx + j * TX);
            }
            for (uint i = 0; i < TM; i++)
                for (uint j = 0; j < TN; j++) {
                    acc0[i][j] = fma(a[i], b0[j], acc0[i][j]);
                    if (GATED != 0u)
                        acc1[i][j] = fma(a[i], b1[j], acc1[i][j]);
                }
        }
#endif
        barrier();
#if !defined(MATRIX_UNITS)
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
#endif
    }

#if defined(MATRIX_UNITS)
    // The accumulators through shared memory into the portable layout.
    for (uint m = 0; m < (GATED != 0u ? 2u : 1u); m++) {
        const uint ba = 2u * sg, bb = 2u * sg + 1u;
        const uint oa = (ba / (BN / FRAG)) * FRAG * BN + (ba % (BN / FRAG)) * FRAG;
        const uint ob = (bb / (BN / FRAG)) * FRAG * BN + (bb % (BN / FRAG)) * FRAG;
#if defined(MVK_COOPMAT)
        if (m == 0u) { // (no select of matrix values: not a SPIR-V operand type)
            coopMatStore(c0a, Cs, oa, BN, gl_CooperativeMatrixLayoutRowMajor);
            coopMatStore(c0b, Cs, ob, BN, gl_CooperativeMatrixLayoutRowMajor);
        } else {
            coopMatStore(c1a, Cs, oa, BN, gl_CooperativeMatrixLayoutRowMajor);
            coopMatStore(c1b, Cs, ob, BN, gl_CooperativeMatrixLayoutRowMajor);
        }
#else
        emu_store(m == 0u ? c0a : c1a, oa);
        emu_store(m == 0u ? c0b : c1b, ob);
#endif
        barrier();
        for (uint i = 0; i < TM; i++)
            for (uint j = 0; j < TN; j++) {
                float v = Cs[(ty + i * (BM / TM)) * BN + tx + j * TX];
                if (m == 0u)
                    sum0[i][j] = v;
                else
                    sum1[i][j] = v;
            }
        barrier();
    }
#endif

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
