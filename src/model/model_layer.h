/*
 * One checkpoint MoE block -> a moevk_layer_desc.
 *
 * Finds the block's tensors under a name prefix, by the names its
 * architecture's descriptor gives (arch.h: router, biases, the layouts
 * probed in order, shared expert and gate), checks their shapes against
 * config.json, and describes them in moevk's canonical layout (gate/up
 * [E, F, H], down [E, H, F], router [E, H], f32 biases). By layout kind:
 *  - per-expert tensors (experts.{i}.w1/w3/w2, experts.{i}.gate_proj/up_proj/
 *    down_proj, experts.expert_{i}.wi/wo) are passed zero-copy through the
 *    desc's per-expert pointer arrays, pointing into the memory map;
 *  - transformers-5 stacked experts.gate_up_proj [E, 2F, H] (gate rows first)
 *    and experts.down_proj [E, H, F] are passed zero-copy too (expert i's
 *    gate is rows i*2F .. i*2F+F-1, its up the next F rows);
 *  - gpt-oss experts.gate_up_proj [E, H, 2F] (gate and up interleaved along
 *    the last axis) and experts.down_proj [E, F, H] are transposed into
 *    owned copies, their biases de-interleaved.
 * A tensor whose data is not aligned to its element size in the file is
 * copied. Quantised checkpoints (config.json's quantization_config: GPTQ,
 * AWQ, bitsandbytes NF4, FP8; hf_quant.h) are read in the per-expert
 * layouts: each quantised expert matrix is repacked into its moevk block
 * format (gptq4, nf4, fp8_e4m3) with the same dequantised values; a GPTQ
 * matrix in act-order has its input axis sorted by group: for a down
 * projection the expert's gate and up rows are reordered the same way
 * (ffn_perm), for gate and up (one order for both) the order is the
 * expert's input_perm in the desc. A quantised router or shared-expert
 * gate is dequantised to f32. All expert weights (routed and shared) share one dtype: when the
 * file mixes dtypes, every expert weight is converted to f32; the router
 * and the shared-expert gate likewise (f32 if they differ). Biases are
 * converted to f32.
 */
#ifndef MOEVK_MODEL_LAYER_H
#define MOEVK_MODEL_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "hf_config.h"
#include "moevk/moevk.h"
#include "safetensors.h"

typedef struct mvk_model_layer {
    moevk_layer_desc desc;      /* capacity_factor is left 0: see below   */
    const mvk_arch *arch;       /* NULL for a GGUF block (gguf_layer.h)  */
    const char *arch_name;      /* GGUF: general.architecture            */
    char prefix[MVK_PREFIX_LEN];
    const char *layout;         /* a description of the layout found     */
    int converted;              /* expert weights converted to f32       */
    moevk_dtype file_dtype;     /* expert weights' dtype in the file (if one) */
    char quant[192];            /* how quantised weights were repacked, or "" */
    /* act-order GPTQ: NULL, or per routed expert NULL or F entries: the
     * expert's canonical intermediate index j is the checkpoint's
     * ffn_perm[e][j] (gate/up row, down column); likewise the shared
     * expert's shared_ffn_perm */
    uint32_t **ffn_perm;
    uint32_t *shared_ffn_perm;
    /* switch_transformers: at most expert_capacity tokens per expert per
     * sequence (a dropped token's output is 0, as in transformers 5; the
     * caller may set dropped_passthrough for transformers 4, which returned
     * the routing probability times the unchanged input). */
    uint64_t expert_capacity;
    int dropped_passthrough;
    /* owned memory */
    void **owned;
    size_t nowned, capowned;
} mvk_model_layer;

/* Build the layer from the tensors named prefix + suffix. On failure the
 * message names the missing or offending tensor. */
int mvk_model_layer_build(const mvk_moe_config *cfg, mvk_st_set *set, const char *prefix,
                          mvk_model_layer *out, char *err, size_t errsz);
/* The same, trying each prefix in turn: the first whose router tensor
 * exists is used. */
int mvk_model_layer_build_any(const mvk_moe_config *cfg, mvk_st_set *set,
                              const char *const *prefixes, int nprefix, mvk_model_layer *out,
                              char *err, size_t errsz);
/* Memory the layer owns (freed by mvk_model_layer_free): a zeroed block of
 * size bytes (NULL when out of memory), or p (malloc'd) taken over (-1, and
 * p freed, when it cannot be). */
void *mvk_model_layer_own(mvk_model_layer *L, size_t size);
int mvk_model_layer_adopt(mvk_model_layer *L, void *p);
void mvk_model_layer_free(mvk_model_layer *L);

/* The capacity factor that makes moevk's C = ceil(cf * T * k / E) equal
 * expert_capacity for a pass of T tokens (0 = dropless when it cannot bind). */
float mvk_model_capacity_factor(const mvk_model_layer *L, uint32_t T);

/* Convert n elements of a file dtype (F32/F16/BF16, any alignment) to f32. */
void mvk_model_to_f32(const void *src, int dtype, size_t n, float *dst);
/* NaN and +-Inf among n elements of dtype (F32/F16/BF16, any alignment). */
uint64_t mvk_model_count_nonfinite(const void *src, int dtype, size_t n);
/* NaN and +-Inf among every weight the layer's desc hands to moevk (router,
 * biases, routed and shared experts, shared gate): the count, and where the
 * first is ("the up matrix of expert 3") in `first` when there is one. One
 * pass over the weights. */
uint64_t mvk_model_layer_nonfinite(const mvk_model_layer *L, char *first, size_t firstsz);

#endif
