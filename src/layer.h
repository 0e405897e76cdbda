/*
 * Internal layout of a layer: device weights (split into chunks within the
 * device's buffer range) and the scratch of a forward pass.
 */
#ifndef MOEVK_LAYER_H
#define MOEVK_LAYER_H

#include "internal.h"

/* A run of consecutive experts whose gate/up/down matrices each fit in one
 * storage buffer. */
typedef struct mvk_chunk {
    uint32_t first, count;
    moevk_buffer *w[3]; /* gate (NULL if not gated), up, down */
} mvk_chunk;

/* A stack of experts of one width: the routed experts or the shared ones. */
typedef struct mvk_expert_set {
    uint32_t count, ffn;
    uint32_t nchunks;
    mvk_chunk *chunks;
    moevk_buffer *bias[3]; /* all NULL, or all set (zeros where absent) */
} mvk_expert_set;

/* Scratch buffers of a forward pass, sized for `tokens` tokens. */
enum mvk_scratch {
    MVK_S_LOGITS,     /* [T, E] f32 */
    MVK_S_IDS,        /* [T, k] u32 */
    MVK_S_WEIGHTS,    /* [T, k] f32 */
    MVK_S_TOKSTATS,   /* [T, 3] f32: softmax max, sum, entropy */
    MVK_S_TILE_RANK,  /* [T*k] u32 */
    MVK_S_TILE_COUNT, /* [ntiles, E] u32 */
    MVK_S_TILE_OFF,   /* [ntiles, E] u32 */
    MVK_S_META,       /* totals, counts, offsets, dropped, indirect args */
    MVK_S_SCHEDULE,   /* [T*k/BM + E] uvec2 */
    MVK_S_ROW_OF,     /* [T*k] i32 */
    MVK_S_ROW_TOKEN,  /* [T*k] u32 */
    MVK_S_H,          /* [T*k, F] f32 */
    MVK_S_O,          /* [T*k, H] f32 */
    MVK_S_SG_LOGITS,  /* [T, n_shared] f32 */
    MVK_S_HS,         /* [T, shared F] f32 */
    MVK_S_OS,         /* [n_shared, T, H] f32 */
    MVK_S_PE,         /* [E] f32 */
    MVK_S_STATS,      /* 4 f32 */
    MVK_S_COUNT
};

struct moevk_layer {
    moevk_context *ctx;
    moevk_layer_desc desc; /* defaults applied; host pointers cleared */
    bool gated;
    moevk_buffer *router_w, *router_b, *corr_b, *shared_gate;
    mvk_expert_set routed, shared;
    moevk_buffer *dummy;

    uint32_t reserved_tokens;
    moevk_buffer *s[MVK_S_COUNT];
    /* Caller tensors standing in for scratch slots during a standalone stage
     * call (buffer == VK_NULL_HANDLE: use the scratch). */
    mvk_binding bind[MVK_S_COUNT];
    uint64_t weight_bytes, scratch_bytes;

    mvk_arena arena; /* descriptor sets of moevk_layer_record */
    VkQueryPool timestamps;
    double stage_ms[MOEVK_STAGE_COUNT];
    uint32_t last_tokens;
};

void mvk_layer_desc_defaults(const moevk_layer_desc *in, moevk_layer_desc *out);

#endif
