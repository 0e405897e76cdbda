/*
 * Quantisers: rows of floats into the weight formats of src/formats.h, the
 * inverse of the table's reference decoders.
 *
 * Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and MXFP4 give the bytes of gguf-py's
 * quantize (ggml's reference quantisers) bit for bit; Q2_K..Q6_K, IQ4_NL
 * and IQ4_XS follow llama.cpp's reference algorithms (the paths it takes
 * without an importance matrix). tests/test_formats.py compares them with
 * gguf-py, tests/test_quantize.c checks their error bounds, and
 * tools/quant_error.py measures their error on whole tensors.
 */
#ifndef MOEVK_QUANTIZE_H
#define MOEVK_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "moevk/moevk.h"

/* Quantise the n floats of src into mvk_format_row_bytes(dtype, n) bytes at
 * dst. dtype is a weight format (f32, f16 and bf16 are converted, rounding
 * to nearest even); n must be a whole number of its blocks (0 writes
 * nothing). MOEVK_ERROR_INVALID_ARGUMENT, dst untouched, for an index or
 * unknown dtype, an n that is not a whole number of blocks, NULL pointers
 * with n > 0, or, for a block format, an input that is not finite (ggml's
 * quantisers have no defined result for inf or NaN).
 *
 * Deliberate difference from gguf-py/ggml: an MXFP4 block whose largest
 * magnitude is below 2^-125 gets the smallest scale (E8M0 = 0), where
 * theirs wraps the exponent to 255 (NaN, which mvk_format_validate refuses)
 * or to another huge scale.
 *
 * Pure: no global state, no allocation (a few KiB of stack). */
moevk_status mvk_quantize_row(moevk_dtype dtype, const float *src, uint64_t n, void *dst);

/* Whether mvk_quantize_row can produce dtype: the plain types and the ggml
 * blocks; not gptq4, nf4 or fp8_e4m3, which checkpoints quantised by other
 * libraries are repacked into (src/model/hf_quant.c). */
bool mvk_quantize_supported(moevk_dtype dtype);

/* The format llama.cpp's quantiser (src/llama-quant.cpp) uses for a row of
 * row_elems elements when dtype was asked for: dtype itself when row_elems
 * is a whole number of its blocks (and for a plain or unknown dtype, which
 * is returned as is); otherwise Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0
 * and Q2_K, Q3_K, IQ4_XS -> IQ4_NL. MOEVK_DTYPE_F16 means that no quantised
 * format fits: the fallback does not divide the row either, or dtype is a
 * 32-element format (llama.cpp has no fallback for those). */
moevk_dtype mvk_quantize_fallback(moevk_dtype dtype, uint64_t row_elems);

#endif
