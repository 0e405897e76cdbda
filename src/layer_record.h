/*
 * Recording of one forward pass of a layer (src/layer_record.c).
 */
#ifndef MOEVK_LAYER_RECORD_H
#define MOEVK_LAYER_RECORD_H

#include "layer.h"

#define MVK_PERMUTE_WG 256u /* assignments per counting tile */
#define MVK_GEMM_BM_MIN 32u /* smallest GEMM row tile (sizes the schedule) */
#define MVK_GEMM_BM MVK_GEMM_BM_MIN

void mvk_layer_record_pass(moevk_layer *L, mvk_cmd *c, const moevk_tensor *x, moevk_tensor *y,
                           uint32_t T, VkQueryPool timestamps);
/* Per-stage milliseconds of the last synchronous pass into L->stage_ms. */
void mvk_layer_read_timestamps(moevk_layer *L);

#endif
