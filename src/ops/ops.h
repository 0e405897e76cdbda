/*
 * The ops: one recorder per kernel family, each taking explicit bindings
 * and sizes (no layer, no scratch). The layer's forward pass (src/pass.c),
 * the standalone stage calls (src/layer_stages.c), the router ops and the
 * measurements compose them. A binding whose buffer is VK_NULL_HANDLE is
 * an unused input: the context's dummy buffer is bound there.
 *
 * Every recorder checks the device limits it depends on (grid sizes) and
 * leaves an error in c->status instead of recording an invalid dispatch.
 * Push blocks, binding indices and constants come from shaders/interface.h.
 */
#ifndef MOEVK_OPS_H
#define MOEVK_OPS_H

#include "internal.h"
#include "interface.h"

/* ---- router (src/ops/router.c) ------------------------------------------ */
typedef struct mvk_router_args {
    mvk_binding x, w, bias, logits;
    uint32_t tok0, T;  /* tokens tok0 .. T-1 of x */
    uint32_t out_tok0; /* logits row of token t is t - out_tok0 */
    uint32_t H, E;
    uint32_t w_fmt;    /* MVK_WFMT_* of w */
} mvk_router_args;
void mvk_op_router_logits(mvk_cmd *c, const mvk_router_args *a);

typedef struct mvk_scores_args {
    mvk_binding logits, scores;
    uint32_t T, E;
    uint32_t scoring; /* MVK_SCORING_* */
} mvk_scores_args;
void mvk_op_router_scores(mvk_cmd *c, const mvk_scores_args *a);

/* ---- route (src/ops/route.c) -------------------------------------------- */
typedef struct mvk_route_args {
    mvk_binding logits, corr_bias, ids, weights, tokstats;
    uint32_t tok0, T;    /* tokens tok0 .. T-1 */
    uint32_t logit_tok0; /* logits row of token t is t - logit_tok0 */
    uint32_t E, K, routing, norm, n_group, topk_group;
    float scale;
    bool sel_probs, group_max; /* mvk_route_push */
    float norm_p, norm_min, norm_eps;
    float softcap;   /* router_softcap (mvk_route_push) */
    bool sel_logits; /* select_on_logits, in modes 0 and 2 */
    float jitter_eps; /* sparsemixer (mvk_route_push) */
    uint32_t score_fn; /* sigmoid_grouped's score function (mvk_route_push) */
    mvk_binding expert_scale;
    /* shared_sink: [T, n_sink] gate logits in, final gates out (global
     * token rows); n_sink 0 = none */
    mvk_binding sink;
    uint32_t n_sink; /* [E] per-expert weight scale, or none */
    /* fused: the router logits computed in the same dispatch (written to
     * logits too), from x [T, H] and the router weight/bias */
    bool fused;
    mvk_binding x, router_w, router_b;
    uint32_t H, w_fmt;
} mvk_route_args;
void mvk_op_route(mvk_cmd *c, const mvk_route_args *a);

/* Expert choice over all T tokens of a pass (after mvk_op_route in mode
 * MVK_ROUTING_EXPERT_CHOICE over all of them, and a barrier): ids and
 * weights [T, E] (interface.h). */
typedef struct mvk_ec_args {
    mvk_binding ids, weights;
    uint32_t T, E, C;
    float scale;
} mvk_ec_args;
void mvk_op_expert_choice(mvk_cmd *c, const mvk_ec_args *a);

/* ---- permute (src/ops/permute.c) ---------------------------------------- */
/* Counting-tile geometry for A assignments over E experts: the tile length
 * (a multiple of MVK_PERMUTE_WG) is the smallest for which the per-tile
 * count arrays ([ntiles, E] words) fit max_bytes. */
void mvk_permute_geometry(uint64_t A, uint32_t E, uint64_t max_bytes, uint32_t *tile_len,
                          uint32_t *ntiles);
typedef struct mvk_permute_args {
    mvk_binding ids, tile_rank, tile_count, tile_off, meta, schedule, row_of, row_token;
    mvk_binding mask;  /* masked only: row_of of the admission over all tokens */
    uint32_t T, K, E;
    uint32_t tok0;     /* masked only: first token of ids/mask */
    uint32_t capacity; /* UINT32_MAX: no capacity */
    uint32_t ffn, hidden; /* the expert GEMMs' N (column groups per path) */
    uint32_t n_ffn;    /* experts with weights (0: all E); the others are identity */
    bool masked;
} mvk_permute_args;
/* The three passes, each followed by a barrier (one dispatch for at most
 * MVK_PERMUTE_WG assignments). The tile geometry is
 * mvk_permute_geometry(T * K, E, mvk_max_range(ctx)). */
void mvk_op_permute(mvk_cmd *c, const mvk_permute_args *a);

/* ---- expert GEMM (src/ops/expert_gemm.c) -------------------------------- */
/* Rows of a row tile of a kernel path (MVK_PATH_*), and its output
 * columns per workgroup. */
uint32_t mvk_path_height(uint32_t path);
uint32_t mvk_path_columns(uint32_t path);
typedef struct mvk_gemm_args {
    mvk_binding a, row_token, schedule, meta, w0, w1, bias0, bias1, out;
    mvk_binding perm;  /* permuted: [experts, K] u32, the A column of input k */
    uint32_t M, N, K, E;
    uint32_t e_first, e_count; /* experts held by w0/w1 (no slot table) */
    mvk_binding slots;         /* has_table: the slot tables (MVK_GEMM_BIND_SLOTS) */
    uint32_t slot_base;        /* has_table: w0/w1's table's first word */
    bool has_table;
    uint32_t dense_expert;     /* dense only */
    uint32_t a_row0;           /* dense only: first A row */
    uint32_t out_offset;
    float alpha, limit;
    uint32_t w_fmt;   /* MVK_WFMT_* */
    uint32_t act;     /* MVK_ACT_* */
    bool gated, has_bias;
    bool batch_invariant; /* no matrix-unit kernel (MOEVK_LAYER_BATCH_INVARIANT) */
    uint32_t kernel_override; /* 64-row tiles: this MVK_K_* (0 = choose) */
    bool scheduled;   /* tiles from the schedule, grids from META's args */
    bool gather;      /* A rows by row_token (scheduled only) */
    bool permuted;    /* A columns through perm (the gate/up of act-order experts) */
    uint32_t max_rows; /* scheduled: an upper bound on any expert's rows,
                          so that paths no expert can take are not dispatched */
    VkBuffer args;    /* scheduled: the META buffer */
    VkDeviceSize args_offset; /* bytes to MVK_META_ARGS(E, 0, projection) */
} mvk_gemm_args;
void mvk_op_expert_gemm(mvk_cmd *c, const mvk_gemm_args *a);

/* The matrix-unit kernel the 64-row tiles of weights in format w_fmt use
 * on this context, or MVK_K_EXPERT_GEMM (the portable kernel). */
uint32_t mvk_matrix_unit_kernel(const moevk_context *ctx, uint32_t w_fmt);

/* ---- combine (src/ops/combine.c) ---------------------------------------- */
typedef struct mvk_combine_args {
    mvk_binding o, row_of, weights, shared_out, shared_gate, y;
    uint32_t tok0, T; /* tokens tok0 .. tok0 + T - 1 */
    uint32_t H, K, n_shared;
    uint32_t gate_mode; /* MVK_GATE_* (mvk_combine_push) */
    bool unit_weights; /* MOEVK_LAYER_WEIGHTS_ON_INPUT: the weights are not read */
    float shared_scale; /* the shared outputs' factor */
    mvk_binding out_bias; /* [H] or none */
    float renorm_eps, renorm_scale; /* drop_renorm_eps (mvk_combine_push) */
} mvk_combine_args;
void mvk_op_combine(mvk_cmd *c, const mvk_combine_args *a);

/* ---- scale_rows (src/ops/combine.c): xs[row(t, j)] = w[t, j] x[t] ------- */
typedef struct mvk_scale_args {
    mvk_binding x, row_of, weights, xs, ids;
    uint32_t tok0, T; /* tokens tok0 .. tok0 + T - 1 */
    uint32_t H, K;
    uint32_t id_first; /* > 0: only the slots of experts >= id_first (identity) */
    bool unit;         /* the row is x itself */
} mvk_scale_args;
void mvk_op_scale_rows(mvk_cmd *c, const mvk_scale_args *a);

/* ---- input_norm (src/ops/combine.c): the router's and experts' rows ----- */
typedef struct mvk_norm_args {
    mvk_binding x, rscale, eweight, xr, xe; /* xr / xe: none = not written */
    uint32_t T, H;
    float r_eps, r_factor, e_eps;
} mvk_norm_args;
void mvk_op_input_norm(mvk_cmd *c, const mvk_norm_args *a);

/* ---- statistics (src/ops/stats.c) --------------------------------------- */
typedef struct mvk_stats_args {
    mvk_binding logits, tokstats, meta, part, results;
    uint32_t T, E;
    uint32_t assignments; /* moevk_ref_assignments */
} mvk_stats_args;
/* Pass 0 over tokens tok0 .. tok1-1 (tok0 a multiple of MVK_STATS_BLOCK),
 * logits row of token t being t - logit_tok0. */
void mvk_op_stats_partial(mvk_cmd *c, const mvk_stats_args *a, uint32_t tok0, uint32_t tok1,
                          uint32_t logit_tok0);
void mvk_op_stats_final(mvk_cmd *c, const mvk_stats_args *a);

#endif
