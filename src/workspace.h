/*
 * Workspaces: the per-pass buffers of forward passes, shared by any number
 * of layers (each slot is sized for the largest need among the layers and
 * token counts reserved), and the geometry of one pass: how its tokens are
 * cut into routing chunks and expert chunks so that every buffer and grid
 * fits the device's limits.
 */
#ifndef MOEVK_WORKSPACE_H
#define MOEVK_WORKSPACE_H

#include "internal.h"

/* Per-pass buffers. Global ones hold all T tokens of a pass; routing-chunk
 * ones Tr tokens; expert-chunk ones Tc tokens (Ac = Tc * k assignments);
 * the local permute slots are used only when a pass has several expert
 * chunks. */
enum mvk_slot {
    /* global */
    MVK_WS_IDS,        /* [T, k] u32 */
    MVK_WS_WEIGHTS,    /* [T, k] f32 */
    MVK_WS_TOKSTATS,   /* [T, 3] f32: softmax max, sum, entropy */
    MVK_WS_ROW_OF,     /* [T, k] i32: row in expert-sorted order, -1 dropped */
    MVK_WS_TILE_RANK,  /* [T * k] u32 */
    MVK_WS_TILE_COUNT, /* [ntiles, E] u32 */
    MVK_WS_TILE_OFF,   /* [ntiles, E] u32 */
    MVK_WS_META,       /* MVK_META_WORDS(E) */
    MVK_WS_SCHEDULE,   /* [T*k/bm + E + 1] uvec2 */
    MVK_WS_ROW_TOKEN,  /* [T * k] u32 */
    MVK_WS_STATS_PART, /* [T / MVK_STATS_BLOCK, E] f32 */
    /* per routing chunk */
    MVK_WS_LOGITS,     /* [Tr, E] f32 */
    /* per expert chunk */
    MVK_WS_H,          /* [Ac, F] f32 */
    MVK_WS_O,          /* [Ac, H] f32 */
    MVK_WS_HS,         /* [Tc, shared F] f32 */
    MVK_WS_OS,         /* [n_shared, Tc, H] f32 */
    MVK_WS_SG_LOGITS,  /* [Tc, n_shared] f32 */
    MVK_WS_XS,         /* [Ac, H] f32: scaled expert inputs (MOEVK_LAYER_WEIGHTS_ON_INPUT) */
    /* local permute of an expert chunk */
    MVK_WS_L_ROW_OF,
    MVK_WS_L_ROW_TOKEN,
    MVK_WS_L_TILE_RANK,
    MVK_WS_L_TILE_COUNT,
    MVK_WS_L_TILE_OFF,
    MVK_WS_L_META,
    MVK_WS_L_SCHEDULE,
    MVK_WS_XR, /* [T, H] f32: the router's input rows (input norm) */
    MVK_WS_XE, /* [T, H] f32: the experts' input rows (input norm) */
    MVK_WS_SINK, /* [T, n_shared] f32: the shared gates (shared_sink), from route */
    MVK_WS_COUNT
};

/* How one pass of a layer over T tokens is cut. */
typedef struct mvk_pass_geometry {
    uint32_t T;
    uint32_t route_chunk;  /* Tr: tokens per routing chunk */
    uint32_t expert_chunk; /* Tc: tokens per expert chunk */
    uint32_t nroute, nexpert;
    uint64_t size[MVK_WS_COUNT]; /* bytes each slot needs */
} mvk_pass_geometry;

struct moevk_workspace {
    moevk_context *ctx;
    uint32_t refs;         /* the owner's (caller or context) + one per layer */
    uint32_t chunk_tokens; /* moevk_workspace_desc.chunk_tokens */
    moevk_buffer *s[MVK_WS_COUNT];
    uint64_t bytes;
    mvk_desc_cache cache;  /* descriptor sets of recorded passes */
    VkQueryPool timestamps;
    uint32_t query_count;
    /* the last pass recorded or run through this workspace */
    const moevk_layer *last_layer;
    uint32_t last_tokens;
};

/* The geometry of a pass of L over T tokens with ws's chunk cap; a
 * LIMIT_EXCEEDED error naming the buffer when no cut fits. */
moevk_status mvk_pass_geometry_of(const moevk_layer *L, const moevk_workspace *ws, uint32_t T,
                                  mvk_pass_geometry *g);
/* Grow the slots of ws that are smaller than g needs. */
moevk_status mvk_workspace_fit(moevk_workspace *ws, const mvk_pass_geometry *g);
/* true when every slot of ws is large enough for g */
bool mvk_workspace_fits(const moevk_workspace *ws, const mvk_pass_geometry *g);
/* A slot's binding (the dummy when it has no buffer). */
mvk_binding mvk_ws_binding(const moevk_workspace *ws, int slot);
/* References: a layer takes one for its lifetime. */
void mvk_workspace_ref(moevk_workspace *ws);
void mvk_workspace_unref(moevk_workspace *ws);
/* The context's default workspace, created on first use. */
moevk_status mvk_context_workspace(moevk_context *ctx, moevk_workspace **out);
/* A timestamp pool of at least `queries` queries. */
moevk_status mvk_workspace_timestamps(moevk_workspace *ws, uint32_t queries);

#endif
