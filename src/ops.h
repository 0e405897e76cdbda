/*
 * Recording functions of the individual stages, shared by the standalone op
 * entry points and the layer's forward pass.
 */
#ifndef MOEVK_OPS_H
#define MOEVK_OPS_H

#include "internal.h"

typedef struct mvk_router_args {
    mvk_binding x, w, bias, logits;
    uint32_t T, H, E, has_bias, w_dtype;
} mvk_router_args;

void mvk_record_router_logits(mvk_cmd *c, const mvk_router_args *a);
void mvk_record_router_scores(mvk_cmd *c, mvk_binding logits, mvk_binding scores, uint32_t T,
                              uint32_t E, moevk_scoring scoring);

#endif
