/*
 * Quantise at load (MOEVK_LAYER_QUANTIZE): src/layer_quantize.c.
 */
#ifndef MOEVK_LAYER_QUANTIZE_H
#define MOEVK_LAYER_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "moevk/moevk.h"

/* Progress over a layer's matrices (logged in tenths when it is large). */
typedef struct mvk_quant_progress {
    uint64_t total, done; /* host bytes */
    uint32_t reported;    /* tenths logged */
    bool report;
} mvk_quant_progress;

/* One expert matrix: rows x row_elems host values in src_dtype (f32, f16
 * or bf16) into dtype; set/expert/matrix name it in errors. */
typedef struct mvk_quant_matrix {
    moevk_dtype src_dtype, dtype;
    uint32_t rows, row_elems, threads;
    const char *set, *matrix;
    uint32_t expert;
} mvk_quant_matrix;

/* Threads to use when `asked` (0 = one per online CPU), 1..64. */
uint32_t mvk_quantize_threads(uint32_t asked);
void mvk_quant_progress_begin(mvk_quant_progress *p, uint64_t total_src_bytes);
/* Quantise m from src into dst (rows * row bytes of dtype). A non-finite
 * value fails naming the expert, matrix and row; dst is then partly
 * written. */
moevk_status mvk_quantize_matrix(moevk_context *ctx, mvk_quant_progress *p,
                                 const mvk_quant_matrix *m, const void *src, void *dst);

/* The whole of a MOEVK_LAYER_QUANTIZE description quantised on the host:
 * *out is `in` with its defaults, its expert weights packed in *storage
 * (one allocation, free with mvk_free(ctx, *storage)), the formats per
 * matrix (MOEVK_LAYER_MATRIX_DTYPES) and MOEVK_LAYER_QUANTIZE cleared. A
 * description without that flag is only defaulted (*storage NULL). ctx
 * may be NULL (the CPU reference). */
moevk_status mvk_layer_desc_quantized(moevk_context *ctx, const moevk_layer_desc *in,
                                      moevk_layer_desc *out, void **storage);
/* Release the *storage of mvk_layer_desc_quantized (NULL is a no-op), for
 * callers outside the library's internals (the CUDA backends). */
void mvk_layer_desc_quantized_free(moevk_context *ctx, void *storage);

#endif
