/*
 * Random MoE layer cases and their comparison with the CPU reference.
 *
 * Shared by `moevk check` and tests/test_layer.c: a case is fully
 * determined by (seed, limits), so a failure anywhere is reproduced with
 * `moevk check --against cpu --seed SEED --cases 1`.
 *
 * Comparison policy (mvkc_compare; DESIGN.md "Tolerances", made precise):
 *  - The reference runs on the very same rounded f16/bf16 weights as the GPU,
 *    so differences come only from fp32 (GPU) versus double (reference)
 *    accumulation. y must be within a relative L2 error of 1e-5 for f32
 *    weights and 1e-4 for f16/bf16 weights (looser than f32 only to leave
 *    room for GPU paths that round activations to 16 bits, e.g. matrix
 *    units), over the tokens that are neither near-tied nor non-finite.
 *    Each such token's own error must also stay below 100x that tolerance
 *    relative to (its norm + the average token norm), so that one wrong
 *    token cannot hide in the norm of a thousand right ones.
 *  - Tokens whose y holds a NaN or Inf must be exactly the reference's
 *    (inputs with NaN/Inf); they are left out of the norm.
 *  - Routing ids must equal the reference's exactly, except for near-ties:
 *    tokens the reference flags (k-th vs (k+1)-th score gap below 1e-6
 *    relative), and tokens whose GPU choice is a valid ranking of the
 *    reference scores within the fp32 accumulation error of the router
 *    (bound: 4e-6 * sum_h |x_h w_eh| plus 2e-6 relative; this covers
 *    order swaps between slots, which the reference does not flag). Such
 *    tokens are counted and excluded from the weights and y comparisons.
 *  - Weights: relative L2 error <= 1e-5 over the compared tokens, and no
 *    single weight off by more than 1e-4 relative (+1e-7 absolute).
 *  - Rows, tokens_per_expert and dropped must equal exactly what
 *    moevk_ref_permute (admission order) gives for the GPU's own ids (which
 *    are the reference's ids unless near-tied). Under capacity a near-tie
 *    can move admissions of other tokens; y is then checked against a
 *    reference recomputed with the GPU's admissions.
 *  - Losses within 1e-4 relative (+1e-5 absolute); NaN exactly where the
 *    reference is NaN. The statistics from moevk_layer_forward and
 *    moevk_layer_read_stats must be identical.
 */
#ifndef MOEVK_CHECK_CASES_H
#define MOEVK_CHECK_CASES_H

#include <stddef.h>
#include <stdint.h>

#include "moevk/moevk.h"

/* Special scenarios a case may contain (mvkc_case.scenarios). */
enum mvkc_scenario {
    MVKC_SC_ONE_EXPERT = 1u << 0, /* one router row dominates (large bias):
                                     every token's first choice is one expert */
    MVKC_SC_IDLE = 1u << 1,       /* E large, T*k small: most experts idle   */
    MVKC_SC_TIES = 1u << 2,       /* duplicated router rows: exact score ties */
    MVKC_SC_NONFINITE = 1u << 3,  /* NaN / +Inf / -Inf in a few tokens of x  */
    MVKC_SC_TINY = 1u << 4,       /* a few tokens of tiny magnitude          */
    MVKC_SC_PER_EXPERT = 1u << 5, /* weights as per-expert pointers (stored
                                     in reverse expert order)               */
    MVKC_SC_ALL = (1u << 6) - 1,
};

/* Forced enum choices are stored as value + 1 (0 = random). */
#define MVKC_PICK(v) ((uint32_t)(v) + 1u)
/* mvkc_limits.top_k: k = min(E, 32). */
#define MVKC_K_ALL UINT32_MAX

/* Options of the generator. All-zero means "everything random, default
 * size budget". */
typedef struct mvkc_limits {
    /* Multiply-adds of one forward pass (router + routed + shared experts);
     * 0 = 12M. Sizes are shrunk (H, F first, then T) until they fit; forced
     * sizes are never changed. */
    uint64_t max_work;
    /* Weight elements of the layer (router + all experts); 0 = 4M. */
    uint64_t max_weights;
    /* Forced sizes (0 = random). top_k may be MVKC_K_ALL. */
    uint32_t tokens, hidden, ffn, experts, top_k;
    /* Forced enums, MVKC_PICK(value) (0 = random). */
    uint32_t routing, activation, weight_dtype, router_dtype;
    /* 0 = random; < 0 = dropless; > 0 = this capacity factor. */
    float capacity_factor;
    /* MVKC_PICK(number of shared experts) (0 = random 0..2). */
    uint32_t num_shared;
    uint32_t scenarios_on;  /* MVKC_SC_* always applied */
    uint32_t scenarios_off; /* MVKC_SC_* never applied */
} mvkc_limits;

typedef struct mvkc_case {
    uint64_t seed;
    uint32_t T;
    moevk_layer_desc desc; /* its pointers point into this case's arrays */
    float *x;              /* [T * H] */
    uint32_t scenarios;    /* MVKC_SC_* applied */
    uint32_t dominant;     /* MVKC_SC_ONE_EXPERT: the dominant expert */
    uint32_t n_ties;       /* MVKC_SC_TIES: pairs with identical router rows */
    uint32_t tie[4][2];    /* (lower, higher) expert index of each pair */
    uint32_t x_resamples;  /* x redrawn to avoid near-ties under capacity */
    int capacity_removed;  /* capacity given up after 10 redraws */

    /* storage (owned) */
    void *router, *shared_gate;
    float *router_bias, *correction_bias;
    void *mat[2][3];        /* [routed, shared][gate, up, down] */
    float *bias[2][3];
    const void **ptrs[2][3]; /* per-expert pointer arrays */
} mvkc_case;

/* Build the case of `seed` (lim may be NULL). Returns
 * MOEVK_ERROR_OUT_OF_HOST_MEMORY on allocation failure (the case is then
 * freed), else MOEVK_SUCCESS. */
moevk_status mvkc_case_random(uint64_t seed, const mvkc_limits *lim, mvkc_case *out);
void mvkc_case_free(mvkc_case *c);
/* One-line summary, e.g. "T=129 H=37 F=200 E=96 k=4 softmax_topk+norm
 * swiglu w=bf16 r=f16 cf=1.25 shared=1x64+gate bias=rgud [ties,nan]". */
void mvkc_case_describe(const mvkc_case *c, char *buf, size_t n);
/* Multiply-adds of one forward pass of the case. */
uint64_t mvkc_case_work(const mvkc_case *c);

/* The CPU reference of a case. */
typedef struct mvkc_ref {
    float *y;          /* [T * H] */
    uint32_t *ids;     /* [T * k] */
    float *weights;    /* [T * k] */
    uint8_t *near_tie; /* [T] */
    int32_t *rows;     /* [T * k], moevk_ref_permute of ids */
    uint32_t *counts;  /* [E] */
    uint32_t *offsets; /* [E + 1] */
    uint64_t dropped;
    uint32_t *tpe;     /* [E], stats.tokens_per_expert */
    moevk_routing_stats stats;
} mvkc_ref;

moevk_status mvkc_reference(const mvkc_case *c, mvkc_ref *out);
void mvkc_ref_free(mvkc_ref *r);

/* What the GPU produced for a case. */
typedef struct mvkc_gpu {
    float *y;          /* [T * H] */
    uint32_t *ids;     /* [T * k], moevk_layer_read_routing */
    float *weights;    /* [T * k] */
    int32_t *rows;     /* [T * k] */
    uint32_t *tpe;     /* [E], from moevk_layer_forward's stats */
    moevk_routing_stats stats;      /* from moevk_layer_forward */
    uint32_t *tpe_read;             /* [E], from moevk_layer_read_stats */
    moevk_routing_stats stats_read; /* from moevk_layer_read_stats */
} mvkc_gpu;

/* Create the layer of a case on ctx, run moevk_layer_forward once on its x
 * (y NaN-poisoned first), read routing and statistics back, destroy the
 * layer. On failure returns the status; `what` (optional, n bytes) names
 * the call that failed, followed by the context's last error. */
moevk_status mvkc_gpu_run(moevk_context *ctx, const mvkc_case *c, mvkc_gpu *out, char *what,
                          size_t n);
/* Allocate the host arrays of a result (for callers that run the GPU
 * themselves), filled with poison. */
moevk_status mvkc_gpu_alloc(const mvkc_case *c, mvkc_gpu *out);
void mvkc_gpu_free(mvkc_gpu *g);

typedef struct mvkc_report {
    int pass;
    char reason[512];   /* why it failed ("" when it passed) */
    double y_err;       /* relative L2 error of y over the compared tokens */
    double y_tol;
    double w_err;       /* relative L2 error of the routing weights */
    uint32_t compared;  /* tokens in the y norm */
    uint32_t near_ties; /* tokens excluded as near-ties */
    uint32_t swapped;   /* of those, tokens whose GPU ids differ */
    uint32_t nonfinite; /* tokens with NaN/Inf in y (both sides) */
    uint64_t dropped;   /* assignments dropped by capacity */
} mvkc_report;

/* Compare a GPU result with the reference under the policy above.
 * Returns rep->pass (1 pass, 0 fail). */
int mvkc_compare(const mvkc_case *c, const mvkc_ref *ref, const mvkc_gpu *gpu,
                 mvkc_report *rep);

#endif
