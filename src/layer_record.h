/*
 * Recording of one forward pass of a layer (src/layer_record.c).
 */
#ifndef MOEVK_LAYER_RECORD_H
#define MOEVK_LAYER_RECORD_H

#include "layer.h"

#define MVK_PERMUTE_WG 256u /* assignments per counting tile */
#define MVK_GEMM_BM_MIN 32u /* smallest GEMM row tile (sizes the schedule) */
#define MVK_GEMM_BM MVK_GEMM_BM_MIN

#define MVK_GEMM_NSPEC 8
#define MVK_GEMM_BN 64u
/* Specialization constants of expert_gemm.comp (act: 0 none, else
 * moevk_activation + 1). */
void mvk_gemm_spec(const moevk_context *ctx, moevk_dtype wdtype, bool gated, uint32_t act,
                   bool scheduled, bool gather, uint32_t spec[MVK_GEMM_NSPEC]);

void mvk_layer_record_pass(moevk_layer *L, mvk_cmd *c, const moevk_tensor *x, moevk_tensor *y,
                           uint32_t T, VkQueryPool timestamps);
/* The stages, for the standalone stage calls (layer_stages.c). Each reads
 * and writes L's scratch slots, or the caller tensors bound in L->bind. */
void mvk_record_router(moevk_layer *L, mvk_cmd *c, mvk_binding x, uint32_t T);
void mvk_record_route(moevk_layer *L, mvk_cmd *c, uint32_t T);
void mvk_record_permute(moevk_layer *L, mvk_cmd *c, uint32_t T);
/* Both grouped GEMMs; a timestamp after each when q is non-NULL. */
void mvk_record_experts(moevk_layer *L, mvk_cmd *c, mvk_binding x, VkQueryPool ts, uint32_t *q);
void mvk_record_shared(moevk_layer *L, mvk_cmd *c, mvk_binding x, uint32_t T);
void mvk_record_combine(moevk_layer *L, mvk_cmd *c, mvk_binding y, uint32_t T, uint32_t K,
                        uint32_t n_shared);
void mvk_record_stats(moevk_layer *L, mvk_cmd *c, uint32_t T);

/* Per-stage milliseconds of the last synchronous pass into L->stage_ms. */
void mvk_layer_read_timestamps(moevk_layer *L);

#endif
