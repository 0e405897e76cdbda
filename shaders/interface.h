/*
 * The interface between moevk's C recorders and its GLSL kernels, in one
 * place: push-constant blocks, binding indices and counts, specialization-
 * constant ids, enum values the shaders switch on, and the layout of the
 * permute stage's META buffer. Included by the kernels (`#include
 * "interface.h"`, MVK_GLSL defined by tools/compile_shader.py) and by C
 * (src/ops/, src/kernels.c), where every push block also gets its size and
 * member offsets checked by static assertions.
 *
 * A test (tests/test_kernels.c) reflects every embedded SPIR-V module and
 * compares its push-constant block size, its bindings and its
 * specialization-constant ids with what the kernel table derives from this
 * header, so a shader and its recorder cannot drift apart silently.
 *
 * A kernel defines MVK_KERNEL_<NAME> before including this header, so that
 * in GLSL it declares its own push-constant block (named p) and no other.
 *
 * Rules: push-block members are 32-bit scalars only (no vectors, no
 * padding), so the GLSL std430/push layout and the C struct agree by
 * construction; constant_id 0 is always the workgroup size.
 */
#ifndef MVK_INTERFACE_H
#define MVK_INTERFACE_H

#ifdef MVK_GLSL
#define MVK_U32 uint
#define MVK_F32 float
#define MVK_PUSH_BEGIN(name) layout(push_constant) uniform name {
#define MVK_PUSH_END(name) } p;
#else
#include <stdint.h>
#define MVK_U32 uint32_t
#define MVK_F32 float
#define MVK_PUSH_BEGIN(name) typedef struct name {
#define MVK_PUSH_END(name) } name;
#endif

/* ---- weight formats (the WFMT specialization constant; src/formats.c maps
 * each moevk_dtype to one of these) ---------------------------------------- */
#define MVK_WFMT_F32 0u
#define MVK_WFMT_F16 1u
#define MVK_WFMT_BF16 2u
/* block formats (the ggml layouts; = the moevk_dtype values) */
#define MVK_WFMT_Q8_0 16u
#define MVK_WFMT_Q4_0 17u
#define MVK_WFMT_Q4_1 18u
#define MVK_WFMT_Q5_0 19u
#define MVK_WFMT_Q5_1 20u
#define MVK_WFMT_Q2_K 21u
#define MVK_WFMT_Q3_K 22u
#define MVK_WFMT_Q4_K 23u
#define MVK_WFMT_Q5_K 24u
#define MVK_WFMT_Q6_K 25u
#define MVK_WFMT_IQ4_NL 26u
#define MVK_WFMT_IQ4_XS 27u
#define MVK_WFMT_MXFP4 28u
#define MVK_WFMT_GPTQ4 29u
#define MVK_WFMT_NF4 30u
#define MVK_WFMT_FP8_E4M3 31u

/* ---- activations (mvk_gemm_push.act of expert_gemm and expert_gemv) -----
 * MVK_ACT_NONE is a plain linear output (the down projection); the others
 * are moevk_activation + 1 (checked in src/ops/expert_gemm.c). */
#define MVK_ACT_NONE 0u
#define MVK_ACT_SWIGLU 1u
#define MVK_ACT_GEGLU 2u
#define MVK_ACT_GEGLU_TANH 3u
#define MVK_ACT_SWIGLU_OAI 4u
#define MVK_ACT_RELU 5u
#define MVK_ACT_GELU 6u
#define MVK_ACT_RELU2 7u
#define MVK_ACT_SWIGLU_CLAMP 8u
#define MVK_ACT_SWIGLU_SOFTCAP 9u
#define MVK_ACT_SWIGLU_POSTCLAMP 10u

/* ---- routing modes (the ROUTING constant of route); = moevk_routing ---- */
#define MVK_ROUTING_SOFTMAX_TOPK 0u
#define MVK_ROUTING_TOPK_SOFTMAX 1u
#define MVK_ROUTING_SIGMOID_GROUPED 2u
#define MVK_ROUTING_EXPERT_CHOICE 3u /* route writes p [T, E] into weights */
#define MVK_ROUTING_SPARSEMIXER 4u

/* ---- sigmoid_grouped's score function (route's score_fn); = moevk_score_fn */
#define MVK_SCORE_SIGMOID 0u
#define MVK_SCORE_SQRTSOFTPLUS 1u

/* ---- scoring (router_scores); = moevk_scoring --------------------------- */
#define MVK_SCORING_SOFTMAX 0u
#define MVK_SCORING_SIGMOID 1u

#define MVK_SPEC_WG 0 /* constant_id 0 of every kernel: workgroup size */

/* ---- router_logits: logits[t - out_tok0, e] = x[t, :] . w[e, :] (+ b[e]),
 * for tokens tok0 + 4 * gl_WorkGroupID.y + 0..3 below T ------------------- */
#define MVK_ROUTER_TOKENS 4u /* tokens per workgroup */
#define MVK_ROUTER_WG 128u    /* its size (route.comp FUSED depends on it) */
#define MVK_ROUTER_BIND_X 0
#define MVK_ROUTER_BIND_W 1
#define MVK_ROUTER_BIND_BIAS 2
#define MVK_ROUTER_BIND_LOGITS 3
#define MVK_ROUTER_BINDINGS 4
#define MVK_ROUTER_SPEC_WFMT 1
#define MVK_ROUTER_NSPEC 2
#if !defined(MVK_GLSL) || defined(MVK_KERNEL_ROUTER_LOGITS)
MVK_PUSH_BEGIN(mvk_router_push)
    MVK_U32 T, H, E, has_bias, tok0;
    MVK_U32 out_tok0; /* logits row of token t is t - out_tok0 */
MVK_PUSH_END(mvk_router_push)
#endif

/* ---- router_scores: row-wise softmax or sigmoid ------------------------- */
#define MVK_SCORES_BIND_LOGITS 0
#define MVK_SCORES_BIND_SCORES 1
#define MVK_SCORES_BINDINGS 2
#define MVK_SCORES_SPEC_SCORING 1
#define MVK_SCORES_NSPEC 2
#if !defined(MVK_GLSL) || defined(MVK_KERNEL_ROUTER_SCORES)
MVK_PUSH_BEGIN(mvk_scores_push)
    MVK_U32 T, E, tok0;
MVK_PUSH_END(mvk_scores_push)
#endif

/* ---- route: scoring, top-k and weights, one token per workgroup ---------
 * FUSED: the workgroup computes its token's router logits itself (and
 * writes them), in exactly router_logits' order (the same workgroup size,
 * the same strided chains and reduction tree), so fusing changes no bit. */
#define MVK_ROUTE_WG 128u /* = the router's workgroup, for FUSED */
#define MVK_ROUTE_BIND_LOGITS 0
#define MVK_ROUTE_BIND_CORR_BIAS 1
#define MVK_ROUTE_BIND_IDS 2
#define MVK_ROUTE_BIND_WEIGHTS 3
#define MVK_ROUTE_BIND_TOKSTATS 4 /* [T, 3]: softmax max, sum, entropy */
#define MVK_ROUTE_BIND_X 5        /* FUSED: x, router weight and bias */
#define MVK_ROUTE_BIND_ROUTER_W 6
#define MVK_ROUTE_BIND_ROUTER_B 7
#define MVK_ROUTE_BIND_EXPERT_SCALE 8 /* [E]: per-expert weight scale, when has_expert_scale */
/* [T, n_sink] (global token rows), when n_sink > 0: the shared gates' logits
 * in, their final gates g_i / D * scale out (shared_sink) */
#define MVK_ROUTE_BIND_SINK 9
#define MVK_ROUTE_BINDINGS 10
#define MVK_ROUTE_SPEC_ROUTING 1
#define MVK_ROUTE_SPEC_NORM 2
#define MVK_ROUTE_SPEC_FUSED 3
#define MVK_ROUTE_SPEC_WFMT 4 /* FUSED: the router weight's format */
#define MVK_ROUTE_NSPEC 5
#define MVK_ROUTE_MAX_EXPERTS 1024u
#define MVK_ROUTE_FUSED_MAX_TOKENS 16u /* passes of at most this many fuse */
#if !defined(MVK_GLSL) || defined(MVK_KERNEL_ROUTE)
MVK_PUSH_BEGIN(mvk_route_push)
    MVK_U32 T, E, K, n_group, topk_group, has_bias;
    MVK_U32 tok0;      /* token of workgroup 0 */
    MVK_F32 scale;     /* routed_scaling_factor */
    MVK_U32 logit_tok0; /* logits row of token t is t - logit_tok0 */
    MVK_U32 H, has_router_bias; /* FUSED */
    MVK_U32 sel_probs;  /* softmax_topk: select on p (+ bias), not on l */
    MVK_U32 group_max;  /* a group scores its best c, not its best two */
    MVK_F32 norm_p;     /* 0 or 1: normalise by the sum; else the p-norm */
    MVK_F32 norm_min;   /* > 0: the denominator is max(norm, norm_min) */
    MVK_F32 norm_eps;   /* > 0 (norm_min 0): the denominator is norm + norm_eps */
    MVK_F32 router_softcap; /* c > 0: l = c tanh(l / c), written back to
                             * logits (for the statistics) */
    MVK_U32 sel_logits; /* modes 0 and 2: select on l + bias (select_on_logits) */
    MVK_F32 jitter_eps; /* sparsemixer: the threshold is 2 jitter_eps */
    MVK_U32 has_expert_scale; /* w *= expert_scale[id] after the normalisation */
    MVK_U32 score_fn;   /* sigmoid_grouped: MVK_SCORE_SIGMOID or _SQRTSOFTPLUS */
    MVK_U32 n_sink;     /* shared_sink: the shared experts whose gates join D */
MVK_PUSH_END(mvk_route_push)
#endif

/* ---- expert_choice: each expert takes its C best tokens -----------------
 * One workgroup per expert e, over all T tokens of the pass: route (mode
 * MVK_ROUTING_EXPERT_CHOICE) left p[t, e] in weights[t * E + e]; the
 * kernel finds the C-th largest p of column e (ties: the lower token; NaN
 * below every number) by a radix select on order-preserving keys, then
 * writes ids[t * E + e] = e and weights[t * E + e] = p * scale for the
 * tokens it takes, and NONE (0xffffffff) and 0 for the others. Integer
 * counts only: deterministic. */
#define MVK_EC_WG 256u
#define MVK_EC_BIND_IDS 0
#define MVK_EC_BIND_WEIGHTS 1
#define MVK_EC_BINDINGS 2
#define MVK_EC_NSPEC 1
#if !defined(MVK_GLSL) || defined(MVK_KERNEL_EXPERT_CHOICE)
MVK_PUSH_BEGIN(mvk_ec_push)
    MVK_U32 T, E;
    MVK_U32 C;     /* tokens per expert, <= T */
    MVK_F32 scale; /* routed_scaling_factor */
    MVK_U32 e0;    /* expert of workgroup 0 (grids of more than the limit) */
MVK_PUSH_END(mvk_ec_push)
#endif

/* ---- permute: counting, capacity, prefix sums, the tile schedule --------
 * Assignments in priority order a = j * T + t. Tiles of tile_len
 * assignments (a multiple of the workgroup size), one workgroup each. With
 * `masked`, assignments whose mask_row_of entry is -1 (dropped by an earlier
 * admission over more tokens) take part in nothing; ids, mask_row_of and
 * row_of are then indexed from token tok0 (T tokens tok0 .. tok0 + T - 1),
 * and row_token holds tok0 + the local token. */
#define MVK_PERMUTE_WG 256u /* workgroup size */
#define MVK_PERMUTE_BIND_IDS 0
#define MVK_PERMUTE_BIND_TILE_RANK 1   /* [A] */
#define MVK_PERMUTE_BIND_TILE_COUNT 2  /* [ntiles, E] */
#define MVK_PERMUTE_BIND_TILE_OFF 3    /* [ntiles, E] */
#define MVK_PERMUTE_BIND_META 4        /* MVK_META_* */
#define MVK_PERMUTE_BIND_SCHEDULE 5    /* [tiles] uvec2 (expert, m tile) */
#define MVK_PERMUTE_BIND_ROW_OF 6      /* [T, K] int: row, or -1 dropped */
#define MVK_PERMUTE_BIND_ROW_TOKEN 7   /* [rows] token of each row */
#define MVK_PERMUTE_BIND_MASK 8        /* [T, K] int (masked only) */
#define MVK_PERMUTE_BINDINGS 9
#define MVK_PERMUTE_SPEC_PASS 1
#define MVK_PERMUTE_NSPEC 2
#define MVK_PERMUTE_MAX_EXPERTS 1024u
#if !defined(MVK_GLSL) || defined(MVK_KERNEL_PERMUTE)
MVK_PUSH_BEGIN(mvk_permute_push)
    MVK_U32 T, K, E, capacity, ntiles;
    MVK_U32 tile_len;        /* assignments per counting tile */
    MVK_U32 masked, tok0;
    /* column groups of the up and down projections (indirect args y) of
     * the skinny kernel and of the tiled ones */
    MVK_U32 skinny_up, skinny_down, tiled_up, tiled_down;
    MVK_U32 force_path;      /* 0: by row count; 1 + p: every expert to path p */
    MVK_U32 n_ffn;           /* experts n_ffn .. E - 1 are identity experts: rows
                              * but no tiles in the schedule */
MVK_PUSH_END(mvk_permute_push)
#endif

/* ---- expert kernel paths ----------------------------------------------------
 * Each expert's admitted rows go to one path, chosen on the GPU by permute
 * pass 1 from its row count: the skinny kernel (expert_gemv.comp: every
 * weight read once, the rows in registers) for at most MVK_SKINNY_ROWS
 * rows, 16-row tiles up to MVK_SMALL_TILE_MAX_ROWS rows, 64-row tiles
 * beyond. Every path accumulates each output's dot product in the same
 * canonical order: k cut into chunks of MVK_KCHUNK (the last may be
 * shorter), each chunk a sequential fma chain from 0, the chunk partials
 * added in chunk order to a sum that starts at 0. So a row's result does
 * not depend on the path its expert took, nor on the other rows. */
#define MVK_PATH_SKINNY 0u
#define MVK_PATH_SMALL 1u
#define MVK_PATH_LARGE 2u
#define MVK_PATHS 3u
#define MVK_KCHUNK 64u
#define MVK_SKINNY_ROWS 8u          /* rows of a skinny workgroup */
#define MVK_SMALL_TILE 16u          /* rows of a small tile */
#define MVK_LARGE_TILE 64u          /* rows of a large tile */
#define MVK_SMALL_TILE_MAX_ROWS 64u /* experts with more rows take large tiles */

/* META buffer (uint words), written by permute pass 1, read by the expert
 * kernels, the statistics and the host:
 *   [0, E)        total assignments per expert (before capacity)
 *   [E, 2E)       admitted rows per expert
 *   [2E, 3E]      row offset of each expert (3E holds the total rows)
 *   3E + 1        dropped assignments
 *   ARGS(E, p, d) VkDispatchIndirectCommand of path p, projection d (0 up,
 *                 1 down): {tiles of path p, column groups, 1}
 *   SCHED_BASE(E, p)  first schedule entry of path p
 *   TILES(E, p)       schedule entries (row tiles) of path p
 * The schedule holds (expert, row tile) pairs, path by path. */
#define MVK_META_TOTALS(E) 0u
#define MVK_META_COUNTS(E) (E)
#define MVK_META_OFFSETS(E) (2u * (E))
#define MVK_META_ROWS(E) (3u * (E))
#define MVK_META_DROPPED(E) (3u * (E) + 1u)
#define MVK_META_ARGS(E, p, d) (3u * (E) + 2u + 3u * (2u * (p) + (d)))
#define MVK_META_SCHED_BASE(E, p) (3u * (E) + 20u + (p))
#define MVK_META_TILES(E, p) (3u * (E) + 23u + (p))
#define MVK_META_WORDS(E) (3u * (E) + 26u)
/* Schedule entries for A assignments over E experts: path p has at most
 * A / height_p + E row tiles. */
#define MVK_SCHEDULE_ENTRIES(A, E) \
    ((A) / MVK_SKINNY_ROWS + (A) / MVK_SMALL_TILE + (A) / MVK_LARGE_TILE + 3u * (E))

/* ---- expert_gemm: out = act(A B0^T (+ bias0), A B1^T (+ bias1)) ---------
 * Scheduled (SCHED = 1): tiles from the schedule, rows of expert e are
 * META offsets[e] ... + counts[e], A rows gathered by row_token (GATHER).
 * Dense (SCHED = 0): rows 0..M-1 of expert dense_expert, reading A rows
 * a_row0 .. a_row0 + M - 1. */
#define MVK_GEMM_BIND_A 0
#define MVK_GEMM_BIND_ROW_TOKEN 1
#define MVK_GEMM_BIND_SCHEDULE 2
#define MVK_GEMM_BIND_META 3
#define MVK_GEMM_BIND_W0 4
#define MVK_GEMM_BIND_W1 5
#define MVK_GEMM_BIND_BIAS0 6
#define MVK_GEMM_BIND_BIAS1 7
#define MVK_GEMM_BIND_OUT 8
#define MVK_GEMM_BIND_PERM 9 /* PERM: [experts, K] u32, A column of input k */
#define MVK_GEMM_BIND_SLOTS 10 /* slot_base != MVK_NO_TABLE: [.., E] u32 slot tables */
#define MVK_GEMM_BINDINGS 11
/* Where expert e's matrices are in the bound weight buffers W0/W1: with
 * slot_base = MVK_NO_TABLE, slot e - e_first when e_first <= e < e_first +
 * e_count (a chunk of consecutive experts); else slot slot_of[slot_base +
 * e] of the SLOTS table, MVK_NO_SLOT when the bound buffers do not hold
 * expert e (a layer under a device-memory budget: its device cache and its
 * host copy are separate buffers, each with its table; src/cache.c). A
 * workgroup whose expert is not in the bound buffers returns at once. */
#define MVK_NO_TABLE 0xFFFFFFFFu
#define MVK_NO_SLOT 0xFFFFFFFFu
#define MVK_GEMM_SPEC_BM 1
#define MVK_GEMM_SPEC_BN 2
#define MVK_GEMM_SPEC_WFMT 3
#define MVK_GEMM_SPEC_GATED 4
#define MVK_GEMM_SPEC_PERM 5 /* 1: input k of expert e reads A column perm[e * K + k] */
#define MVK_GEMM_NSPEC 6
#define MVK_GEMM_BN 64u /* column tile */
#define MVK_GEMM_TM 4u  /* rows per thread */
#define MVK_GEMM_TN 4u  /* columns per thread */
#if !defined(MVK_GLSL) || defined(MVK_KERNEL_EXPERT_GEMM) || defined(MVK_KERNEL_EXPERT_GEMV)
MVK_PUSH_BEGIN(mvk_gemm_push)
    MVK_U32 M, N, K, E;
    MVK_U32 e_first, e_count; /* experts in the bound weight chunk */
    MVK_U32 slot_base;        /* MVK_NO_TABLE, or the SLOTS table's first word */
    MVK_U32 has_bias, dense_expert;
    MVK_F32 alpha, limit;     /* swiglu_oai, the clamps' limit; the soft caps
                                 of swiglu_softcap (gate, up)               */
    MVK_U32 out_offset;       /* elements added to every output index */
    MVK_U32 a_row0;           /* dense: A row of output row r is a_row0 + r */
    MVK_U32 path;             /* scheduled: the MVK_PATH_* whose tiles to run */
    MVK_U32 act;              /* MVK_ACT_*: a push constant, not a specialization
                               * constant, so one pipeline serves every
                               * activation (a uniform branch in the epilogue;
                               * drivers that compile each variant on first use
                               * compile a sixth as many) */
    MVK_U32 sched;            /* 1: tiles from the schedule (SCHED); 0: dense */
    MVK_U32 gather;           /* sched: A rows through row_token (GATHER) */
MVK_PUSH_END(mvk_gemm_push)
#endif

/* ---- expert_gemv: the skinny path, the same bindings and push block as
 * expert_gemm (MVK_GEMM_BIND_*, mvk_gemm_push); workgroup = MVK_GEMV_COLS
 * output columns x (WG / MVK_GEMV_COLS) chunk lanes, up to MVK_SKINNY_ROWS
 * rows of one expert. Scheduled: the skinny tiles; dense: rows a_row0 +
 * 8 * gl_WorkGroupID.x ... of expert dense_expert. */
#define MVK_GEMV_SPEC_COLS 1
#define MVK_GEMV_SPEC_WFMT 2
#define MVK_GEMV_SPEC_GATED 3
#define MVK_GEMV_SPEC_PERM 4
#define MVK_GEMV_NSPEC 5
#define MVK_GEMV_WG 256u
#define MVK_GEMV_COLS 64u /* output columns per workgroup (default) */

/* ---- scale_rows: xs[row(t, j)] = w[t, j] * x[t] (MOEVK_LAYER_WEIGHTS_ON_INPUT)
 * for the T tokens tok0 .. tok0 + T - 1 of an expert chunk: x, ids and the
 * weights indexed by token, row_of by token - tok0; one thread per element
 * of x, dropped assignments
 * skipped. The up projection then reads xs row by row instead of gathering
 * x. The same kernel writes the identity experts' outputs: with id_first >
 * 0 only slots whose expert id is >= id_first are written, and with unit
 * the row is x itself (w not read). */
#define MVK_SCALE_WG 256u
#define MVK_SCALE_BIND_X 0
#define MVK_SCALE_BIND_ROW_OF 1
#define MVK_SCALE_BIND_WEIGHTS 2
#define MVK_SCALE_BIND_XS 3
#define MVK_SCALE_BIND_IDS 4 /* [.., K] u32, read when id_first > 0 */
#define MVK_SCALE_BINDINGS 5
#define MVK_SCALE_NSPEC 1
#if !defined(MVK_GLSL) || defined(MVK_KERNEL_SCALE_ROWS)
MVK_PUSH_BEGIN(mvk_scale_push)
    MVK_U32 T, H, K, elem0, tok0;
    MVK_U32 id_first; /* > 0: only slots of experts id_first .. (identity) */
    MVK_U32 unit;     /* 1: the row is x (no weight) */
MVK_PUSH_END(mvk_scale_push)
#endif

/* ---- input_norm: the rows the router and the experts read (Gemma 4) -----
 * One workgroup per token t (tok0 + workgroup): the sum of x[t]^2 in a fixed
 * order (each thread its strided elements in order, then a tree), then
 *   xr[t, h] = x[t, h] * n_r * rscale[h] * r_factor   (when do_router;
 *              n_r = 1 / sqrt(sum / H + r_eps), or 1 when r_eps is 0)
 *   xe[t, h] = x[t, h] * n_e * eweight[h]            (when do_expert)
 * rscale / eweight read only when has_rscale / has_eweight. */
#define MVK_NORM_WG 128u
#define MVK_NORM_BIND_X 0
#define MVK_NORM_BIND_RSCALE 1  /* [H] */
#define MVK_NORM_BIND_EWEIGHT 2 /* [H] */
#define MVK_NORM_BIND_XR 3      /* [T, H] */
#define MVK_NORM_BIND_XE 4      /* [T, H] */
#define MVK_NORM_BINDINGS 5
#define MVK_NORM_NSPEC 1
#if !defined(MVK_GLSL) || defined(MVK_KERNEL_INPUT_NORM)
MVK_PUSH_BEGIN(mvk_norm_push)
    MVK_U32 T, H, tok0;
    MVK_U32 do_router, has_rscale;
    MVK_F32 r_eps, r_factor;
    MVK_U32 do_expert, has_eweight;
    MVK_F32 e_eps;
MVK_PUSH_END(mvk_norm_push)
#endif

/* ---- combine: y[t] = sum_j w[t, j] o[row(t, j)] + shared outputs ------- */
#define MVK_GATE_NONE 0u
#define MVK_GATE_LOGITS 1u
#define MVK_GATE_FINAL 2u
#define MVK_COMBINE_WG 256u
#define MVK_COMBINE_BIND_O 0
#define MVK_COMBINE_BIND_ROW_OF 1
#define MVK_COMBINE_BIND_WEIGHTS 2
#define MVK_COMBINE_BIND_SHARED_OUT 3
#define MVK_COMBINE_BIND_SHARED_GATE 4
#define MVK_COMBINE_BIND_Y 5
#define MVK_COMBINE_BIND_OUT_BIAS 6 /* [H], when has_out_bias */
#define MVK_COMBINE_BINDINGS 7
#define MVK_COMBINE_NSPEC 1
#if !defined(MVK_GLSL) || defined(MVK_KERNEL_COMBINE)
MVK_PUSH_BEGIN(mvk_combine_push)
    MVK_U32 T, H, K, n_shared, elem0;
    /* the shared outputs' gates: MVK_GATE_NONE, MVK_GATE_LOGITS (sigmoid
     * of shared_gate[t * n_shared + s], local rows) or MVK_GATE_FINAL (the
     * gate itself at global row tok0 + t: shared_sink) */
    MVK_U32 gate_mode;
    MVK_U32 tok0; /* weights row of local token t is tok0 + t */
    MVK_U32 unit_weights; /* 1: every weight is 1 (MOEVK_LAYER_WEIGHTS_ON_INPUT) */
    MVK_F32 shared_scale; /* the shared outputs' factor (1: none) */
    MVK_U32 has_out_bias; /* the layer's output bias is added */
    /* > 0 (drop_renorm_eps): w_j / max(sum of the admitted w / renorm_scale,
     * renorm_eps) */
    MVK_F32 renorm_eps, renorm_scale;
MVK_PUSH_END(mvk_combine_push)
#endif

/* ---- stats: routing statistics ------------------------------------------
 * PASS 0, one workgroup per (expert, block of MVK_STATS_BLOCK tokens):
 *   part[block, e] = sum over the block's tokens of softmax(l_t)[e].
 * PASS 1, one workgroup: P[e] = sum of part[., e] in block order, then
 *   results = {counts[E], dropped, load-balancing loss, z-loss, entropy}. */
#define MVK_STATS_WG 256u
#define MVK_STATS_BLOCK 1024u
#define MVK_STATS_BIND_LOGITS 0
#define MVK_STATS_BIND_TOKSTATS 1
#define MVK_STATS_BIND_META 2
#define MVK_STATS_BIND_PART 3
#define MVK_STATS_BIND_RESULTS 4
#define MVK_STATS_BINDINGS 5
#define MVK_STATS_SPEC_PASS 1
#define MVK_STATS_NSPEC 2
#if !defined(MVK_GLSL) || defined(MVK_KERNEL_STATS)
MVK_PUSH_BEGIN(mvk_stats_push)
    MVK_U32 T, E;
    MVK_U32 assignments; /* the load-balancing loss's: T k, or C E (expert choice) */
    MVK_U32 tok0;       /* PASS 0: first token of block 0 of this dispatch */
    MVK_U32 logit_tok0; /* logits row of token t is t - logit_tok0 */
MVK_PUSH_END(mvk_stats_push)
#endif

/* Layer results (uint/float words), written by stats pass 1 */
#define MVK_RESULTS_COUNTS(E) 0u
#define MVK_RESULTS_DROPPED(E) (E)
#define MVK_RESULTS_LOSSES(E) ((E) + 1u) /* lb, z, entropy as float bits */
#define MVK_RESULTS_WORDS(E) ((E) + 4u)

/* ---- bandwidth: streaming vec4 reads ------------------------------------ */
#define MVK_BANDWIDTH_BIND_SRC 0
#define MVK_BANDWIDTH_BIND_SUMS 1
#define MVK_BANDWIDTH_BINDINGS 2
#define MVK_BANDWIDTH_NSPEC 1
#if !defined(MVK_GLSL) || defined(MVK_KERNEL_BANDWIDTH)
MVK_PUSH_BEGIN(mvk_bandwidth_push)
    MVK_U32 n_vec4;
MVK_PUSH_END(mvk_bandwidth_push)
#endif

#endif
