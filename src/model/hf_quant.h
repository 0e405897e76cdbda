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
 *  - compressed-tensors FP8 (quant_method "compressed-tensors", format
 *    "float-quantized" or "naive-quantized", as llm-compressor writes it):
 *    the module of base is quantised by the config_groups scheme whose
 *    targets match it (an exact name, "re:" + a regular expression matched
 *    at the start of the name, or the class "Linear") unless an "ignore"
 *    entry matches it; base.weight F8_E4M3 [rows, cols], base.weight_scale
 *    (F32, F16 or BF16) by the scheme's strategy: "tensor" [1] (or []),
 *    "channel" [rows, 1], "group" [rows, ceil(cols/G)] (G a multiple of
 *    128), "block" [ceil(rows/b0), ceil(cols/b1)] (block_structure
 *    [b0, b1], b1 a multiple of 128); element (r, c) is fp8 x the scale of
 *    its tile. Activation quantisation is not applied (moevk computes
 *    activations in f32): dynamic input_activations are accepted, static
 *    ones (input_scale) refused. -> fp8_e4m3.
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
    MVK_HFQ_CT_FP8, /* compressed-tensors float-quantized */
} mvk_hfq_method;

/* compressed-tensors: one config_groups scheme, as moevk reads it */
typedef struct mvk_hfq_ct_scheme {
    char *name;           /* its config_groups key                                    */
    char *why;            /* NULL, or why its weights cannot be read (names the key) */
    const char *strategy; /* "tensor", "channel", "group", "block" (static text)      */
    uint32_t tile[2];     /* the rows and inputs of one scale; 0: the whole axis      */
    int dynamic_inputs;   /* input_activations dynamic: FP8 activations not applied  */
} mvk_hfq_ct_scheme;

/* a target or ignore entry of compressed-tensors */
typedef struct mvk_hfq_ct_pattern {
    char *text;           /* as written                                               */
    int kind;             /* 0 an exact module name, 1 "re:" regex, 2 class "Linear", 3 another class */
    void *re;             /* kind 1: the compiled expression (regex_t, malloc'd)      */
    uint32_t scheme;      /* targets: index into schemes                              */
} mvk_hfq_ct_pattern;

typedef struct mvk_hfq_ct {
    char format[32];      /* the top-level "format"                                    */
    mvk_hfq_ct_scheme *schemes;
    mvk_hfq_ct_pattern *targets, *ignore;
    uint32_t n_schemes, n_targets, n_ignore;
} mvk_hfq_ct;

typedef struct mvk_hfq_config {
    mvk_hfq_method method;
    uint32_t bits;          /* gptq, awq: 4                                     */
    int64_t group_size;     /* gptq, awq: inputs per group; -1 = the whole row  */
    int sym, desc_act;      /* gptq: as written (g_idx decides the groups)      */
    int gptq_v2;            /* gptq: checkpoint_format "gptq_v2" (zero = stored) */
    uint32_t fp8_block[2];  /* fp8: weight_block_size [rows, cols]              */
    int double_quant;       /* bitsandbytes: bnb_4bit_use_double_quant          */
    mvk_hfq_ct ct;          /* compressed-tensors (malloc'd: mvk_hfq_config_free) */
} mvk_hfq_config;

struct cJSON;
/* Read config.json's "quantization_config" (absent or null: method NONE).
 * Refuses what cannot be repacked exactly, naming the key and its value:
 * bits other than 4, a group size that is not -1 or a multiple of 32, an
 * AWQ version other than gemm, 8-bit or FP4 bitsandbytes, an FP8 block
 * whose input size is not a multiple of 128, an unknown method;
 * compressed-tensors: malformed config_groups / targets / ignore, a
 * regular expression moevk cannot match as Python's re does, a sparsity or
 * transform config. A compressed-tensors scheme moevk cannot read (int8,
 * int4 pack-quantized, static input scales, ...) is refused by
 * mvk_hfq_load when a matrix uses it, naming the tensor and the key. */
int mvk_hfq_config_read(const struct cJSON *root, const char *what, mvk_hfq_config *q, char *err,
                        size_t errsz);
/* What mvk_hfq_config_read allocated (compressed-tensors' groups); q is
 * then method NONE. */
void mvk_hfq_config_free(mvk_hfq_config *q);
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
