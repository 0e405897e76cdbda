/*
 * One forward pass of a layer (or a part of one, for the standalone stage
 * calls), recorded from the ops into a command buffer (src/pass.c).
 */
#ifndef MOEVK_PASS_H
#define MOEVK_PASS_H

#include "layer.h"
#include "workspace.h"

typedef struct mvk_pass_io {
    mvk_binding x, y;
    /* the parts to record, in pass order */
    bool route;   /* router logits, scoring, top-k, weights */
    bool permute; /* admission over all tokens: rows, counts */
    bool experts; /* grouped expert GEMMs */
    bool shared;  /* shared experts */
    bool combine; /* y = weighted sum (+ shared) */
    bool stats;   /* routing statistics into the layer's results */
    /* the admitted rows per expert copied into the expert cache's host
     * buffer at the end (a synchronous pass of a budgeted layer), for the
     * cache to read after the fence without another transfer */
    bool cache_counts;
    /* the routed slots' expert rows are the caller's expert_out (combine
     * without the expert stage: moevk_layer_combine_shared) */
    bool routed_given;
    /* expert choice: stop after route, p [T, E] in weights (the choice over
     * every rank's tokens is the caller's: moevk_ep_layer) */
    bool no_choice;
    /* caller tensors standing in for workspace slots (buffer NULL: the
     * workspace's own): ids, weights, row_of [T, k]; expert_out [T*k, H]
     * (one expert chunk only) */
    mvk_binding ids, weights, row_of, expert_out;
} mvk_pass_io;

/* Timestamps around each stage of a pass, summed per moevk_stage. */
typedef struct mvk_pass_timer {
    VkQueryPool pool;
    uint32_t next, cap;     /* queries used / available */
    uint8_t *stage_of_pair; /* [cap / 2] */
} mvk_pass_timer;

/* Route x [T, H] into weights [T, slots] (f32) without the expert-choice
 * phase: under MOEVK_ROUTING_EXPERT_CHOICE every token's p over all E (the
 * choice is the caller's), else ids [T, k] too (as moevk_layer_route). For
 * moevk_ep_layer (src/layer_stages.c). */
moevk_status mvk_layer_route_scores(moevk_layer *L, const moevk_tensor *x, moevk_tensor *ids,
                                    moevk_tensor *weights);

/* Queries a timed pass of geometry g needs. */
uint32_t mvk_pass_queries(const mvk_pass_geometry *g);
void mvk_pass_record(moevk_layer *L, mvk_cmd *c, const mvk_pass_geometry *g,
                     const mvk_pass_io *io, mvk_pass_timer *tm);
/* After the timed pass completed: per-stage milliseconds into ms. */
void mvk_pass_timer_read(moevk_context *ctx, const mvk_pass_timer *tm,
                         double ms[MOEVK_STAGE_COUNT]);

#endif
