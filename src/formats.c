/*
 * The weight-format table (formats.h) and its reference decoders.
 *
 * The decoders apply the per-element formulas of format_decode.h (shared
 * with the CUDA kernels) to whole blocks: float arithmetic, operation by
 * operation, products rounded on their own (the library builds as ISO C,
 * where GCC does not contract), so that they are bit for bit what gguf-py's
 * dequantize gives (tests/test_formats.py).
 */
#include "formats.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "format_decode.h"
#include "interface.h"
#include "ref/ref.h"

#define QK_K 256

/* ---- plain types ----------------------------------------------------------- */

static void decode_f32(const void *src, size_t n, float *dst)
{
    memcpy(dst, src, n * sizeof(float));
}

static void decode_f16(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 2)
        dst[i] = mvk_dq_f16(b, 0);
}

static void decode_bf16(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 2)
        dst[i] = mvk_dq_bf16(b, 0);
}

/* ---- block formats ----------------------------------------------------------
 * Every element by its formula in format_decode.h (mvk_dq_<name>), blocks
 * as the table's row lays them out. */

#define BLOCK_DECODER(name, DT)                                                              \
    static void decode_##name(const void *src, size_t n, float *dst)                         \
    {                                                                                        \
        const mvk_format *f = mvk_format_get(DT);                                            \
        const uint32_t be = f->block_elems, bb = f->block_bytes;                             \
        const uint8_t *b = src;                                                              \
        for (size_t i = 0; i < n; i++, b += bb, dst += be)                                   \
            for (uint32_t j = 0; j < be; j++)                                                \
                dst[j] = mvk_dq_##name(b, j);                                                \
    }

BLOCK_DECODER(q8_0, MOEVK_DTYPE_Q8_0)
BLOCK_DECODER(q4_0, MOEVK_DTYPE_Q4_0)
BLOCK_DECODER(q4_1, MOEVK_DTYPE_Q4_1)
BLOCK_DECODER(q5_0, MOEVK_DTYPE_Q5_0)
BLOCK_DECODER(q5_1, MOEVK_DTYPE_Q5_1)
BLOCK_DECODER(q2_k, MOEVK_DTYPE_Q2_K)
BLOCK_DECODER(q3_k, MOEVK_DTYPE_Q3_K)
BLOCK_DECODER(q4_k, MOEVK_DTYPE_Q4_K)
BLOCK_DECODER(q5_k, MOEVK_DTYPE_Q5_K)
BLOCK_DECODER(q6_k, MOEVK_DTYPE_Q6_K)
BLOCK_DECODER(iq4_nl, MOEVK_DTYPE_IQ4_NL)
BLOCK_DECODER(iq4_xs, MOEVK_DTYPE_IQ4_XS)
BLOCK_DECODER(mxfp4, MOEVK_DTYPE_MXFP4)
BLOCK_DECODER(gptq4, MOEVK_DTYPE_GPTQ4)
BLOCK_DECODER(nf4, MOEVK_DTYPE_NF4)
BLOCK_DECODER(fp8_e4m3, MOEVK_DTYPE_FP8_E4M3)

float mvk_nf4_value(unsigned code)
{
    return mvk_dq_nf4_value(code);
}

float mvk_e4m3_value(uint8_t v)
{
    return mvk_dq_e4m3(v);
}

/* ---- the table ----------------------------------------------------------------- */

#define EXPERT MVK_FORMAT_EXPERT
#define ROUTER MVK_FORMAT_ROUTER

static const mvk_format formats[] = {
    {MOEVK_DTYPE_F32, "f32", 1, 4, EXPERT | ROUTER, MVK_WFMT_F32, decode_f32},
    {MOEVK_DTYPE_F16, "f16", 1, 2, EXPERT | ROUTER, MVK_WFMT_F16, decode_f16},
    {MOEVK_DTYPE_BF16, "bf16", 1, 2, EXPERT | ROUTER, MVK_WFMT_BF16, decode_bf16},
    {MOEVK_DTYPE_I32, "i32", 1, 4, MVK_FORMAT_INDEX, 0, NULL},
    {MOEVK_DTYPE_Q8_0, "q8_0", 32, 34, EXPERT, MVK_WFMT_Q8_0, decode_q8_0},
    {MOEVK_DTYPE_Q4_0, "q4_0", 32, 18, EXPERT, MVK_WFMT_Q4_0, decode_q4_0},
    {MOEVK_DTYPE_Q4_1, "q4_1", 32, 20, EXPERT, MVK_WFMT_Q4_1, decode_q4_1},
    {MOEVK_DTYPE_Q5_0, "q5_0", 32, 22, EXPERT, MVK_WFMT_Q5_0, decode_q5_0},
    {MOEVK_DTYPE_Q5_1, "q5_1", 32, 24, EXPERT, MVK_WFMT_Q5_1, decode_q5_1},
    {MOEVK_DTYPE_Q2_K, "q2_k", QK_K, 84, EXPERT, MVK_WFMT_Q2_K, decode_q2_k},
    {MOEVK_DTYPE_Q3_K, "q3_k", QK_K, 110, EXPERT, MVK_WFMT_Q3_K, decode_q3_k},
    {MOEVK_DTYPE_Q4_K, "q4_k", QK_K, 144, EXPERT, MVK_WFMT_Q4_K, decode_q4_k},
    {MOEVK_DTYPE_Q5_K, "q5_k", QK_K, 176, EXPERT, MVK_WFMT_Q5_K, decode_q5_k},
    {MOEVK_DTYPE_Q6_K, "q6_k", QK_K, 210, EXPERT, MVK_WFMT_Q6_K, decode_q6_k},
    {MOEVK_DTYPE_IQ4_NL, "iq4_nl", 32, 18, EXPERT, MVK_WFMT_IQ4_NL, decode_iq4_nl},
    {MOEVK_DTYPE_IQ4_XS, "iq4_xs", QK_K, 136, EXPERT, MVK_WFMT_IQ4_XS, decode_iq4_xs},
    {MOEVK_DTYPE_MXFP4, "mxfp4", 32, 17, EXPERT, MVK_WFMT_MXFP4, decode_mxfp4},
    {MOEVK_DTYPE_GPTQ4, "gptq4", 32, 19, EXPERT, MVK_WFMT_GPTQ4, decode_gptq4},
    {MOEVK_DTYPE_NF4, "nf4", 64, 36, EXPERT, MVK_WFMT_NF4, decode_nf4},
    {MOEVK_DTYPE_FP8_E4M3, "fp8_e4m3", 128, 132, EXPERT, MVK_WFMT_FP8_E4M3, decode_fp8_e4m3},
};

/* Whether a 32-bit float field (little-endian) is finite. */
static bool finite32(const uint8_t *p)
{
    return (mvk_dq_u32(p) & 0x7f800000u) != 0x7f800000u;
}

/* What is wrong with one block (into why), or false when nothing is. */
static bool bad_block(moevk_dtype dtype, const uint8_t *p, char *why, size_t whysz)
{
    if (dtype == MOEVK_DTYPE_MXFP4 && p[0] == 0xff) /* as ggml's row check does */
        return snprintf(why, whysz, "its E8M0 scale is 255 (NaN)"), true;
    if (dtype == MOEVK_DTYPE_GPTQ4) {
        const unsigned h = (unsigned)(p[0] | p[1] << 8);
        if (p[2] > 16)
            return snprintf(why, whysz, "its zero point %u is not in 0..16", p[2]), true;
        if ((h & 0x7c00u) == 0x7c00u)
            return snprintf(why, whysz, "its f16 scale is not finite (bits 0x%04x)", h), true;
    }
    if (dtype == MOEVK_DTYPE_NF4 || dtype == MOEVK_DTYPE_FP8_E4M3) {
        if (!finite32(p))
            return snprintf(why, whysz, "its f32 scale is not finite (bits 0x%08x)",
                            (unsigned)mvk_dq_u32(p)),
                   true;
        for (uint32_t j = 0; dtype == MOEVK_DTYPE_FP8_E4M3 && j < 128; j++)
            if ((p[4 + j] & 0x7f) == 0x7f)
                return snprintf(why, whysz, "element %u is the e4m3fn NaN code 0x%02x", j,
                                p[4 + j]),
                       true;
    }
    return false;
}

bool mvk_format_check(moevk_dtype dtype, const void *blocks, uint64_t nblocks, uint64_t *bad,
                      char *why, size_t whysz)
{
    const mvk_format *f = mvk_format_get(dtype);
    if (!f)
        return false;
    char scratch[1];
    if (!why || !whysz)
        why = scratch, whysz = sizeof scratch;
    const uint8_t *b = blocks;
    for (uint64_t i = 0; i < nblocks; i++)
        if (bad_block(dtype, b + i * f->block_bytes, why, whysz)) {
            if (bad)
                *bad = i;
            return false;
        }
    return true;
}

bool mvk_format_validate(moevk_dtype dtype, const void *blocks, uint64_t nblocks, uint64_t *bad)
{
    return mvk_format_check(dtype, blocks, nblocks, bad, NULL, 0);
}

/* A uniform in [-1, 1) from 24 bits of r. */
static float unit_from(uint64_t r)
{
    return (float)(r & 0xffffff) * (2.0f / 16777216.0f) - 1.0f;
}

static void put_f16(uint8_t *p, float v)
{
    const uint16_t h = moevk_float_to_half(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

void mvk_format_shape_block(moevk_dtype dtype, uint8_t *blk, float scale, uint64_t rnd)
{
    /* Offsets of the f16 scales (-1 ends) and the quant magnitude they
     * multiply: K-quants reach about scale x sub-scale 63 x 31 (or 32 x 32
     * for Q6_K), Q8_0 127, the 4/5-bit formats about 12. */
    int f16_at[2] = {-1, -1};
    float unit = scale / 12.0f;
    switch (dtype) {
    case MOEVK_DTYPE_Q8_0: f16_at[0] = 0, unit = scale / 127.0f; break;
    case MOEVK_DTYPE_Q4_0: case MOEVK_DTYPE_Q5_0: case MOEVK_DTYPE_IQ4_NL:
        f16_at[0] = 0, unit = dtype == MOEVK_DTYPE_IQ4_NL ? scale / 127.0f : unit;
        break;
    case MOEVK_DTYPE_Q4_1: case MOEVK_DTYPE_Q5_1: f16_at[0] = 0, f16_at[1] = 2; break;
    case MOEVK_DTYPE_Q4_K: case MOEVK_DTYPE_Q5_K:
        f16_at[0] = 0, f16_at[1] = 2, unit = scale / 400.0f;
        break;
    case MOEVK_DTYPE_IQ4_XS: f16_at[0] = 0, unit = scale / 2000.0f; break;
    case MOEVK_DTYPE_Q2_K: f16_at[0] = 80, f16_at[1] = 82, unit = scale / 40.0f; break;
    case MOEVK_DTYPE_Q3_K: f16_at[0] = 108, unit = scale / 128.0f; break;
    case MOEVK_DTYPE_Q6_K: f16_at[0] = 208, unit = scale / 1000.0f; break;
    case MOEVK_DTYPE_MXFP4: {
        /* 2^(e - 127) about scale / 6 (E2M1 values reach 6), e within 1 */
        const int e = 127 + (int)floorf(log2f(scale / 6.0f)) + (int)(rnd % 3) - 1;
        blk[0] = (uint8_t)(e < 0 ? 0 : e > 254 ? 254 : e);
        return;
    }
    case MOEVK_DTYPE_GPTQ4: /* |q - z| up to 16; zero points 0..16 */
        f16_at[0] = 0;
        blk[2] = (uint8_t)((rnd >> 40) % 17);
        break;
    case MOEVK_DTYPE_NF4: case MOEVK_DTYPE_FP8_E4M3: {
        /* an f32 scale: NF4 values reach 1, e4m3 448 (mostly below 16) */
        const float f = (dtype == MOEVK_DTYPE_NF4 ? scale : scale / 64.0f) * unit_from(rnd);
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        for (int i = 0; i < 4; i++)
            blk[i] = (uint8_t)(u >> (8 * i));
        for (uint32_t j = 0; dtype == MOEVK_DTYPE_FP8_E4M3 && j < 128; j++)
            if ((blk[4 + j] & 0x7f) == 0x7f) /* no NaN codes */
                blk[4 + j] ^= (uint8_t)(1u << (j % 7));
        return;
    }
    default: return;
    }
    for (int i = 0; i < 2 && f16_at[i] >= 0; i++, rnd >>= 24)
        put_f16(blk + f16_at[i], unit * unit_from(rnd));
}

const mvk_format *mvk_format_get(moevk_dtype dtype)
{
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        if (formats[i].dtype == dtype)
            return &formats[i];
    return NULL;
}

const mvk_format *mvk_format_at(size_t i)
{
    return i < sizeof(formats) / sizeof(formats[0]) ? &formats[i] : NULL;
}

uint64_t mvk_formats_mask(uint32_t uses)
{
    uint64_t m = 0;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        if (formats[i].uses & uses)
            m |= 1ull << formats[i].dtype;
    return m;
}

uint64_t mvk_format_row_bytes(moevk_dtype dtype, uint64_t elems)
{
    const mvk_format *f = mvk_format_get(dtype);
    if (!f || elems % f->block_elems)
        return 0;
    return elems / f->block_elems * f->block_bytes;
}

void mvk_format_decode(moevk_dtype dtype, const void *src, uint64_t first, uint64_t elems,
                       float *dst)
{
    const mvk_format *f = mvk_format_get(dtype);
    const uint8_t *s = (const uint8_t *)src + first / f->block_elems * f->block_bytes;
    f->decode(s, (size_t)(elems / f->block_elems), dst);
}

size_t moevk_dtype_size(moevk_dtype dtype)
{
    const mvk_format *f = mvk_format_get(dtype);
    return f && f->block_elems == 1 ? f->block_bytes : 0;
}

uint64_t moevk_dtype_row_bytes(moevk_dtype dtype, uint64_t elems)
{
    return mvk_format_row_bytes(dtype, elems);
}

uint32_t moevk_dtype_block_elems(moevk_dtype dtype)
{
    const mvk_format *f = mvk_format_get(dtype);
    return f ? f->block_elems : 0;
}

static bool moevk_dtype_from_name_alias(const char *name)
{
    const char *a = "awq4";
    while (*a && *name && tolower((unsigned char)*name) == *a)
        a++, name++;
    return !*a && !*name;
}

const char *moevk_dtype_name(moevk_dtype dtype)
{
    const mvk_format *f = mvk_format_get(dtype);
    return f ? f->name : "unknown";
}

int moevk_dtype_from_name(const char *name)
{
    if (!name)
        return -1;
    /* AWQ's 4-bit weights are repacked into the GPTQ block: one home */
    if (moevk_dtype_from_name_alias(name))
        return (int)MOEVK_DTYPE_GPTQ4;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        const char *a = formats[i].name, *b = name;
        while (*a && *b && tolower((unsigned char)*b) == *a)
            a++, b++;
        if (!*a && !*b)
            return (int)formats[i].dtype;
    }
    return -1;
}
