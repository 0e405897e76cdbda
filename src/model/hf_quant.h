/*
 * Quantised Hugging Face checkpoints: config.json's quantization_config and
 * the repacking of one quantised matrix into a moevk block format, exactly
 * (every dequantised value is the f32 value the checkpoint's own library
 * computes before rounding to its compute dtype; docs/semantics.md).
 *
 * A matrix is named by its base: the checkpoint name less ".weight"
 * ("model.layers.0.block_sparse_moe.experts.3.w1"), of `rows` outputs and
 * `cols` inputs (nn.Linear's [out, in]). By method:
 *  - GPTQ (quant_method "gptq", 4 bits): base.qweight I32 [cols/8, rows]
 *    (input i in word i/8, bits 4(i%8)), base.qzeros I32 [G, rows/8]
 *    (output o in word o/8, bits 4(o%8)), base.scales F16 [G, rows],
 *    optional base.g_idx I32 [cols]; checkpoint_format "gptq" (v1: zero =
 *    stored nibble + 1, so 1..16) or "gptq_v2" (zero = stored). Each
 *    32-element block of a row takes the scale and zero of its group; a
 *    g_idx that puts one block in two groups (act-order) is resolved by
 *    sorting the input axis by group (stable, into col_perm) when the
 *    caller may reorder it (`may_permute`), or by the caller's `order`
 *    (the order of the expert's other projection on the same input), else
 *    refused. -> gptq4.
 *  - AWQ (quant_method "awq", version "gemm", 4 bits): base.qweight I32
 *    [cols, rows/8], base.qzeros I32 [cols/G, rows/8] (output 8c + j in
 *    nibble [0,4,1,5,2,6,3,7][j] of word c), base.scales F16 [cols/G,
 *    rows]; zero = stored. -> gptq4 (the same block).
 *  - bitsandbytes 4-bit NF4: base.weight U8 (the [rows, cols] tensor
 *    flattened, element 2i in the high nibble of byte i), base.weight.absmax
 *    (F32 per block, or U8 codes with base.weight.nested_absmax F32 and
 *    base.weight.nested_quant_map F32 [256] when double-quantised: absmax
 *    = nested_quant_map[code] * nested_absmax[block / nested_blocksize] +
 *    nested_offset, in f32, in that order), and the JSON of
 *    base.weight.quant_state.bitsandbytes__nf4 (quant_type, blocksize,
 *    shape, nested_blocksize, nested_dtype, nested_offset). -> nf4.
 *  - FP8 (quant_method "fp8", weight_block_size [bo, bi], bi a multiple of
 *    128): base.weight F8_E4M3 [rows, cols], base.weight_scale_inv F32
 *    [ceil(rows/bo), ceil(cols/bi)]; element (r, c) is
 *    fp8 x scale_inv[r/bo][c/bi]. -> fp8_e4m3.
 * Every refusal names the tensor and the value.
 */
#ifndef MOEVK_MODEL_HF_QUANT_H
#define MOEVK_MODEL_HF_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "moevk/moevk.h"
#include "safetensors.h"

typedef enum mvk_hfq_method {
    MVK_HFQ_NONE = 0,
    MVK_HFQ_GPTQ,
    MVK_HFQ_AWQ,
    MVK_HFQ_BNB4,
    MVK_HFQ_FP8,
} mvk_hfq_method;

typedef struct mvk_hfq_config {
    mvk_hfq_method method;
    uint32_t bits;          /* gptq, awq: 4                                     */
    int64_t group_size;     /* gptq, awq: inputs per group; -1 = the whole row  */
    int sym, desc_act;      /* gptq: as written (g_idx decides the groups)      */
    int gptq_v2;            /* gptq: checkpoint_format "gptq_v2" (zero = stored) */
    uint32_t fp8_block[2];  /* fp8: weight_block_size [rows, cols]              */
    int double_quant;       /* bitsandbytes: bnb_4bit_use_double_quant          */
} mvk_hfq_config;

struct cJSON;
/* Read config.json's "quantization_config" (absent or null: method NONE).
 * Refuses what cannot be repacked exactly, naming the key and its value:
 * bits other than 4, a group size that is not -1 or a multiple of 32, an
 * AWQ version other than gemm, 8-bit or FP4 bitsandbytes, an FP8 block
 * whose input size is not a multiple of 128, an unknown method. */
int mvk_hfq_config_read(const struct cJSON *root, const char *what, mvk_hfq_config *q, char *err,
                        size_t errsz);
/* "GPTQ 4-bit, group 128, checkpoint format v1" and the like. */
const char *mvk_hfq_describe(const mvk_hfq_config *q, char *buf, size_t bufsz);
/* The moevk block format the method's matrices are repacked into (F32 for
 * NONE). */
moevk_dtype mvk_hfq_dtype(const mvk_hfq_config *q);

/* 1 when the matrix `base` is stored quantised by the configured method
 * (its quantised tensors are there), 0 when it is a plain float tensor
 * base.weight (a module the quantiser left out). */
int mvk_hfq_is_quantized(const mvk_hfq_config *q, mvk_st_set *set, const char *base);

typedef struct mvk_hfq_matrix {
    moevk_dtype dtype;    /* gptq4, nf4 or fp8_e4m3                                */
    void *blocks;         /* rows x moevk_dtype_row_bytes(dtype, cols), malloc'd  */
    /* NULL, or (act-order) cols entries: column j of `blocks` is column
     * col_perm[j] of the checkpoint's matrix (malloc'd) */
    uint32_t *col_perm;
} mvk_hfq_matrix;

/* Repack the quantised matrix `base` ([rows, cols]). With `order` (cols
 * entries, GPTQ only), column j of the blocks is checkpoint column
 * order[j] (out->col_perm stays NULL); else with may_permute the columns
 * are sorted by group when that is needed (out->col_perm). */
int mvk_hfq_load(const mvk_hfq_config *q, mvk_st_set *set, const char *base, uint64_t rows,
                 uint64_t cols, int may_permute, const uint32_t *order, mvk_hfq_matrix *out,
                 char *err, size_t errsz);
/* The same matrix dequantised to f32 [rows, cols] in the checkpoint's
 * column order (for routers and gates, which moevk keeps in a float
 * dtype): malloc'd into *out. */
int mvk_hfq_load_f32(const mvk_hfq_config *q, mvk_st_set *set, const char *base, uint64_t rows,
                     uint64_t cols, float **out, char *err, size_t errsz);
void mvk_hfq_matrix_free(mvk_hfq_matrix *m);

#endif
