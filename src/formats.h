/*
 * Weight formats as data: one row per moevk_dtype that can hold weights,
 * with its block geometry, its name, the kernels' loader (the MVK_WFMT_*
 * specialization constant of shaders/formats.glsl) and the reference
 * decoder. Sizes, uploads and weight chunking (src/layer.c), validation
 * (src/layer_desc.c), the CPU reference (src/ref/) and the kernels' loader
 * choice all read this table; adding a format is one row here (src/formats.c,
 * with its block decoder), its element formula in src/format_decode.h
 * (shared by the C reference and the CUDA kernels) and its branch in GLSL
 * (shaders/formats.glsl).
 */
#ifndef MOEVK_FORMATS_H
#define MOEVK_FORMATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moevk/moevk.h"

#ifdef __cplusplus
extern "C" {
#endif

enum mvk_format_use {
    MVK_FORMAT_EXPERT = 1u << 0, /* routed and shared expert matrices */
    MVK_FORMAT_ROUTER = 1u << 1, /* router and shared-gate rows */
    MVK_FORMAT_INDEX = 1u << 2,  /* index tensors (not a weight) */
};

typedef struct mvk_format {
    moevk_dtype dtype;
    const char *name;       /* as moevk_dtype_name prints it */
    uint32_t block_elems;   /* elements per block (1 for plain types) */
    uint32_t block_bytes;   /* bytes per block */
    uint32_t uses;          /* mvk_format_use bits */
    uint32_t shader_fmt;    /* MVK_WFMT_* (weights only) */
    /* Reference decoder: n blocks from src into n * block_elems floats
     * (NULL for index types). */
    void (*decode)(const void *src, size_t nblocks, float *dst);
} mvk_format;

/* The row of a dtype, or NULL for an unknown one. */
const mvk_format *mvk_format_get(moevk_dtype dtype);
/* Bit mask (1 << dtype) of the formats with any of `uses`. */
uint64_t mvk_formats_mask(uint32_t uses);
/* Row i of the table (NULL past the end), to list the formats. */
const mvk_format *mvk_format_at(size_t i);
/* Bytes of a row of `elems` elements (0 if elems is not a whole number of
 * blocks or the dtype is unknown). */
uint64_t mvk_format_row_bytes(moevk_dtype dtype, uint64_t elems);
/* Whether blocks of a format are acceptable weights: MXFP4 refuses an
 * E8M0 scale of 255 (NaN); gptq4 a zero point over 16 or a non-finite
 * scale; nf4 and fp8_e4m3 a non-finite scale, fp8_e4m3 the e4m3fn NaN
 * codes 0x7f and 0xff. On false, *bad (optional) is the first bad block
 * and why (optional) says what is wrong with it ("its zero point 17 is not
 * in 0..16"). */
bool mvk_format_check(moevk_dtype dtype, const void *blocks, uint64_t nblocks, uint64_t *bad,
                      char *why, size_t whysz);
bool mvk_format_validate(moevk_dtype dtype, const void *blocks, uint64_t nblocks, uint64_t *bad);
/* Element decoders shared with the checkpoint repacking: the NF4 value of
 * a 4-bit code (bitsandbytes' table) and the f32 value of a float8 e4m3fn
 * byte (NaN for 0x7f and 0xff). */
float mvk_nf4_value(unsigned code);
float mvk_e4m3_value(uint8_t v);
/* Make blk (block_bytes random bytes, as the caller filled it) a valid
 * block of the format whose values are about +-scale: its scale fields are
 * set from the random bits rnd, every other bit (quants, sub-scales, signs)
 * is left as it was, so every pattern occurs. Random weights of the tool,
 * bench and tests come from here (util/rng.c). */
void mvk_format_shape_block(moevk_dtype dtype, uint8_t *blk, float scale, uint64_t rnd);
/* Decode `elems` elements (a whole number of blocks) starting at element
 * `first` (a multiple of the block) of `src` into floats. */
void mvk_format_decode(moevk_dtype dtype, const void *src, uint64_t first, uint64_t elems,
                       float *dst);

#ifdef __cplusplus
}
#endif

#endif
