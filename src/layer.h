/*
 * A layer: its description and its device weights (split into chunks of
 * consecutive experts within the device's buffer range), nothing that a
 * pass changes except its results (statistics of its last pass and stage
 * times). Per-pass buffers live in the workspace the layer uses
 * (src/workspace.h); the pass itself is src/pass.c.
 */
#ifndef MOEVK_LAYER_H
#define MOEVK_LAYER_H

#include "internal.h"
#include "ref/ref.h"

/* A run of consecutive experts whose gate/up/down matrices each fit in one
 * storage buffer. */
typedef struct mvk_chunk {
    uint32_t first, count; /* experts; a budgeted set's device chunk: slots */
    moevk_buffer *w[3]; /* gate (NULL if not gated), up, down */
    uint64_t off[3];    /* where each matrix starts in its buffer (imported
                         * host memory: the page offset; else 0) */
    bool host;          /* a budgeted set's host copy (src/cache.h) */
} mvk_chunk;

/* A stack of experts of one width: the routed experts or the shared ones. */
typedef struct mvk_expert_set {
    uint32_t count, ffn;
    moevk_dtype dtype[2];  /* formats on the device: gate/up rows, down rows */
    uint32_t w_fmt[2];     /* their MVK_WFMT_* */
    uint32_t nchunks;
    mvk_chunk *chunks;
    moevk_buffer *bias[3]; /* all NULL, or all set (zeros where absent) */
    moevk_buffer *input_perm; /* [count, H] u32, or NULL (the identity) */
    /* Under a budget (src/cache.h): the slot tables [nchunks, count] u32;
     * NULL when chunk i simply holds experts first .. first + count - 1 */
    moevk_buffer *table;
} mvk_expert_set;

typedef struct mvk_cache mvk_cache;

struct moevk_layer {
    moevk_context *ctx;
    moevk_layer_desc desc; /* defaults applied; host pointers cleared */
    bool gated;
    uint32_t r_fmt;        /* MVK_WFMT_* of the router weights */
    moevk_buffer *router_w, *router_b, *corr_b, *shared_gate;
    moevk_buffer *out_b; /* desc.output_bias [H] */
    /* desc.router_input_scale, expert_norm_weight [H], expert_weight_scale [E] */
    moevk_buffer *rin_s, *ein_w, *ew_s;
    mvk_expert_set routed, shared;
    uint64_t weight_bytes;      /* device memory of all weights */
    uint64_t host_weight_bytes; /* host-visible expert copies (a budget) */
    uint64_t host_imported_bytes; /* of those: the caller's memory, imported */
    uint64_t slot_bytes;        /* of weight_bytes: the routed experts' */
    mvk_cache *cache;           /* under a budget that not all experts fit */
    moevk_workspace *ws; /* per-pass buffers (a reference held) */

    /* Results of the last pass: MVK_RESULTS_* words written on the GPU,
     * valid once that pass has completed. */
    moevk_buffer *results;
    bool has_results;
    double stage_ms[MOEVK_STAGE_COUNT];
    /* how the last pass was recorded (moevk_layer_pass_info) */
    uint32_t last_route_chunks, last_expert_chunks, last_expert_chunk_tokens;
    uint32_t last_dispatches, last_barriers, last_force_path;
    bool last_fused_route;
};

void mvk_layer_desc_defaults(const moevk_layer_desc *in, moevk_layer_desc *out);

/* The four kinds of expert rows of a (defaulted) desc: routed gate/up
 * (rows of hidden), routed down (rows of ffn), shared gate/up and shared
 * down (row 0 when there are no shared experts); dtype is the host format,
 * target the device format (the quantisation target after llama.cpp's
 * fallback with MOEVK_LAYER_QUANTIZE, else dtype). */
typedef struct mvk_matrix_kind {
    const char *set, *field; /* "experts" / "shared", "gate_up_dtype" / "down_dtype" */
    moevk_dtype dtype;
    uint32_t row;
    const char *row_name;
    moevk_dtype target;
} mvk_matrix_kind;
void mvk_layer_matrices(const moevk_layer_desc *d, mvk_matrix_kind out[4]);

/* Tokens of a [T, ...] tensor's first dimension, range-checked. */
moevk_status mvk_tokens_of(moevk_context *ctx, const moevk_tensor *t, const char *name,
                           uint32_t *T);

/* The layer's router / experts read normed rows (desc's input norms; the
 * desc's host pointers are gone after create, the device copies stay). */
static inline bool mvk_layer_router_input(const moevk_layer *L)
{
    return moevk_ref_has_router_input(&L->desc) || L->rin_s != NULL;
}
static inline bool mvk_layer_expert_input(const moevk_layer *L)
{
    return moevk_ref_has_expert_input(&L->desc);
}

#endif
