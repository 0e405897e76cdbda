/*
 * The checkasm-style harness: random MoE layer cases, run on any backend of
 * the table (src/backend/backend.h) and compared with the CPU reference.
 *
 * Used by `moevk check` and by the tests (tests/test_layer.c,
 * tests/test_cuda.c). One file per role:
 *   case.c       the generator: a case is fully determined by (seed,
 *                limits), so a failure anywhere is reproduced with
 *                `moevk check --against cpu --seed SEED --cases 1`
 *                (mvkc_repro gives the command);
 *   reference.c  the CPU reference of a case;
 *   runner.c     a case on a backend, and the whole check of one seed;
 *   compare.c    the comparison policy below.
 *
 * Comparison policy (mvkc_compare; docs/semantics.md "Tolerances", made
 * precise):
 *  - The reference runs on the very same rounded f16/bf16 weights as the
 *    backend (block formats: the same blocks, dequantised by the same
 *    decoders, src/format_decode.h), so differences come only from fp32
 *    (backend) versus double (reference) accumulation. y must be within a
 *    relative L2 error of 1e-5 when every expert matrix is f32 or a block
 *    format, and 1e-4 when one is f16/bf16 (looser only to leave room for
 *    GPU paths that round activations to 16 bits, e.g. matrix units), over
 *    the tokens that are neither near-tied nor non-finite. The formats are
 *    those on the device: per matrix (MOEVK_LAYER_MATRIX_DTYPES), after
 *    quantising at create (MOEVK_LAYER_QUANTIZE). A backend flagged
 *    MVK_BACKEND_ROUNDS_ACTIVATIONS (cuBLAS in the weight dtype, f16 for
 *    block formats) gets 4 units of its coarsest rounding instead (4 * 2^-8
 *    with a bf16 matrix, else 4 * 2^-11 with an f16 or block-format one).
 *    Each such token's own error must also stay below 100x
 *    the tolerance relative to (its norm + the average token norm), so that
 *    one wrong token cannot hide in the norm of a thousand right ones.
 *  - Tokens whose y holds a NaN or Inf must be exactly the reference's
 *    (inputs with NaN/Inf); they are left out of the norm.
 *  - Routing ids must equal the reference's exactly, except for near-ties:
 *    tokens the reference flags (k-th vs (k+1)-th score gap below 1e-6
 *    relative), and tokens whose backend's choice is a valid ranking of the
 *    reference scores within the fp32 accumulation error of the router
 *    (bound: 4e-6 * sum_h |x_h w_eh| plus 2e-6 relative; this covers
 *    order swaps between slots, which the reference does not flag). Such
 *    tokens are counted and excluded from the weights and y comparisons.
 *  - Weights: relative L2 error <= 1e-5 over the compared tokens, and no
 *    single weight off by more than 1e-4 relative (+1e-7 absolute).
 *  - Rows, tokens_per_expert and dropped must equal exactly what
 *    moevk_ref_permute (admission order) gives for the backend's own ids (which
 *    are the reference's ids unless near-tied). Under capacity a near-tie
 *    can move admissions of other tokens; y is then checked against a
 *    reference recomputed with the backend's admissions.
 *  - Losses within 1e-4 relative (+1e-5 absolute); NaN exactly where the
 *    reference is NaN. The statistics of the pass and those read back on
 *    their own (vulkan: moevk_layer_read_stats) must be identical.
 */
#ifndef MOEVK_HARNESS_H
#define MOEVK_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "moevk/moevk.h"

/* ---- case.c: the generator ------------------------------------------------ */

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
    /* Caps of the random T and E (0 = none): drawn as usual, then capped,
     * so every other draw of the case stays the same. */
    uint32_t max_tokens, max_experts;
    /* Forced sizes (0 = random). top_k may be MVKC_K_ALL. */
    uint32_t tokens, hidden, ffn, experts, top_k;
    /* Forced enums, MVKC_PICK(value) (0 = random). A weight_dtype of a
     * block format makes the random hidden, ffn and shared_ffn whole
     * blocks of it (forced ones must be). */
    uint32_t routing, activation, weight_dtype, router_dtype;
    /* 0 = random; < 0 = dropless; > 0 = this capacity factor. */
    float capacity_factor;
    /* 0 = random (a fifth of the cases); < 0 = no router soft cap. */
    float router_softcap;
    /* 1: no input norms or per-expert weight scale (Gemma 4's parts) */
    int no_input_norms;
    /* Expert matrices in block formats (gate/up and down rows each in one,
     * drawn from the format table): 0 = in a quarter of the cases unless
     * weight_dtype is forced, < 0 = never, > 0 = always. */
    int blocks;
    /* 1: no device-memory budget (MOEVK_LAYER_VRAM_BUDGET) on any case */
    int no_budget;
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
    /* the rows the router and the experts read ([T * H]; x itself without
     * the layer's input norms) */
    const float *xr, *xe;
    uint32_t scenarios;    /* MVKC_SC_* applied */
    uint32_t dominant;     /* MVKC_SC_ONE_EXPERT: the dominant expert */
    uint32_t n_ties;       /* MVKC_SC_TIES: pairs with identical router rows */
    uint32_t tie[4][2];    /* (lower, higher) expert index of each pair */
    uint32_t x_resamples;  /* x redrawn to avoid near-ties under capacity */
    int capacity_removed;  /* capacity given up after 10 redraws */

    /* storage (owned) */
    void *router, *shared_gate;
    float *router_bias, *correction_bias, *output_bias;
    float *norm_arrays; /* router_input_scale [H], expert_norm_weight [H], scale [E] */
    float *rows_own;    /* xr, xe when normed [2, T * H] */
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
/* A routing mode's name as the descriptions (and moevk check --routing)
 * write it ("routing?" for a value that is not one). */
const char *mvkc_routing_name(moevk_routing r);
/* Multiply-adds of one forward pass of the case. */
uint64_t mvkc_case_work(const mvkc_case *c);

/* ---- the result of a case on a backend (runner.c) ---------------------------- */

/* What a backend produced for a case. */
typedef struct mvkc_result {
    float *y;          /* [T * H] */
    uint32_t *ids;     /* [T * k] */
    float *weights;    /* [T * k] */
    int32_t *rows;     /* [T * k] */
    uint32_t *tpe;     /* [E], from the forward pass's stats */
    moevk_routing_stats stats;      /* from the forward pass */
    uint32_t *tpe_read;             /* [E], read back on their own */
    moevk_routing_stats stats_read; /* (vulkan: moevk_layer_read_stats) */
    uint32_t flags;    /* the backend's MVK_BACKEND_*: the y tolerance follows them */
    moevk_pass_info pass; /* what the pass launched (backends that can say) */
} mvkc_result;

/* ---- reference.c ---------------------------------------------------------- */

/* The CPU reference of a case: its result (flags MVK_BACKEND_REFERENCE;
 * rows, by moevk_ref_permute of its ids; stats_read a copy of stats), and
 * what only the reference knows. */
typedef struct mvkc_ref {
    mvkc_result out;
    uint8_t *near_tie; /* [T] */
    uint32_t *counts;  /* [E], admitted assignments per expert */
    uint32_t *offsets; /* [E + 1] */
    uint64_t dropped;
} mvkc_ref;

moevk_status mvkc_reference(const mvkc_case *c, mvkc_ref *out);
void mvkc_ref_free(mvkc_ref *r);

/* ---- runner.c: a case on a backend ---------------------------------------- */

/* Allocate the host arrays of a result (for callers that run a backend
 * themselves), filled with poison: NaN floats, ids and counts 0xffffffff,
 * rows -2, losses -1, dropped UINT64_MAX (no valid result has them). */
moevk_status mvkc_result_alloc(const mvkc_case *c, mvkc_result *out);
void mvkc_result_free(mvkc_result *r);

/* A backend of the table with its open device. */
typedef struct mvkc_target {
    const mvk_backend *backend;
    void *dev;
    uint32_t flags; /* MVK_BACKEND_* the open device adds (mvk_backend_info.flags) */
} mvkc_target;

/* Open b (opts may be NULL; info optional). On failure t->dev is NULL. */
moevk_status mvkc_target_open(mvkc_target *t, const mvk_backend *b, const mvk_backend_opts *opts,
                              mvk_backend_info *info, char *err, size_t n);
void mvkc_target_close(mvkc_target *t);

/* Create the layer of a case on t, run one forward pass on its x (outputs
 * poisoned first), read routing and statistics back, destroy the layer.
 * On failure returns the status; `what` (optional, n bytes) says which
 * step failed and why. */
moevk_status mvkc_run(const mvkc_target *t, const mvkc_case *c, mvkc_result *out, char *what,
                      size_t n);

/* ---- compare.c: the policy ------------------------------------------------- */

typedef struct mvkc_report {
    int pass;
    char reason[512];   /* why it failed ("" when it passed) */
    double y_err;       /* relative L2 error of y over the compared tokens */
    double y_tol;
    double w_err;       /* relative L2 error of the routing weights */
    uint32_t compared;  /* tokens in the y norm */
    uint32_t near_ties; /* tokens excluded as near-ties */
    uint32_t swapped;   /* of those, tokens whose ids differ */
    uint32_t nonfinite; /* tokens with NaN/Inf in y (both sides) */
    uint64_t dropped;   /* assignments dropped by capacity */
} mvkc_report;

/* The relative L2 tolerance of y for a case's weight dtype on a backend
 * with `flags` (MVK_BACKEND_*). */
double mvkc_y_tolerance(const moevk_layer_desc *d, uint32_t flags);

/* Compare a backend's result with the reference under the policy above.
 * Returns rep->pass (1 pass, 0 fail). */
int mvkc_compare(const mvkc_case *c, const mvkc_ref *ref, const mvkc_result *res,
                 mvkc_report *rep);

/* Direct agreement of two backends on a case (both already passed the
 * reference): y within the sum of their tolerances over the tokens where
 * both chose the reference's ids and admitted the same slots (not
 * near-ties; non-finite values identical); counts, drops and the
 * load-balancing loss only when both chose the same ids everywhere (they
 * follow from the ids, and each backend's were checked for its own); the
 * z-loss and entropy (logits only) always; losses within 2e-4 relative
 * (+2e-5), what passing one reference implies. 1 when they agree; else 0
 * and `why`. */
int mvkc_agree(const mvkc_case *c, const mvkc_ref *ref, const mvkc_result *a,
               const mvkc_result *b, double *y_err, char *why, size_t n);

/* ---- runner.c: the whole check of one seed ---------------------------------- */

typedef struct mvkc_check {
    mvkc_case c;
    mvkc_ref ref;
    mvkc_result res;   /* the target's */
    mvkc_result other; /* the second backend's (mvkc_check_seed's `against`) */
    mvkc_report rep;   /* res against the reference; rep.reason says why it failed */
    double cross_err;  /* y of res against other's */
    double run_ms;     /* the target's pass (create to destroy), wall clock */
    double ref_ms;     /* the reference and the comparisons */
    char desc[384];    /* mvkc_case_describe */
    int pass;
} mvkc_check;

/* Build the case of `seed`, run it on t, compare it with the reference;
 * with `against` (optional), run it there too: both must pass and agree
 * (mvkc_agree). A validation message of either device during the case
 * fails it. Returns out->pass; free out with mvkc_check_free either way. */
int mvkc_check_seed(const mvkc_target *t, const mvkc_target *against, uint64_t seed,
                    const mvkc_limits *lim, mvkc_check *out);
void mvkc_check_free(mvkc_check *chk);

/* The `moevk check` command that runs the case of seed alone, into buf.
 * Returns 0 (buf "") when lim forces more than the command can say. */
int mvkc_repro(const mvkc_target *t, const mvkc_target *against, uint64_t seed,
               const mvkc_limits *lim, char *buf, size_t n);

#endif
