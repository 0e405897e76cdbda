/*
 * The weight-format table (formats.h) and its reference decoders.
 *
 * Each decoder turns whole blocks into floats with the format's formula in
 * float arithmetic, operation by operation as written in docs/semantics.md
 * (products first, then the offset; no contraction: the library builds as
 * ISO C, where GCC does not fuse), so that it is bit for bit what gguf-py's
 * dequantize gives (tests/test_formats.py).
 */
#include "formats.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "interface.h"
#include "ref/ref.h"

#define QK_K 256

static float f16(const uint8_t *p)
{
    return moevk_half_to_float((uint16_t)(p[0] | p[1] << 8));
}

static uint32_t u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- plain types ----------------------------------------------------------- */

static void decode_f32(const void *src, size_t n, float *dst)
{
    memcpy(dst, src, n * sizeof(float));
}

static void decode_f16(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = f16(b + 2 * i);
}

static void decode_bf16(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = moevk_bf16_to_float((uint16_t)(b[2 * i] | b[2 * i + 1] << 8));
}

/* ---- 32-element blocks --------------------------------------------------------
 * Nibble order of the 16-byte quants: byte j holds element j (low nibble)
 * and element j + 16 (high nibble). */

static void decode_q8_0(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 34, dst += 32) {
        const float d = f16(b);
        for (int j = 0; j < 32; j++)
            dst[j] = d * (float)(int8_t)b[2 + j];
    }
}

static void decode_q4_0(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 18, dst += 32) {
        const float d = f16(b);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)((b[2 + j] & 0xF) - 8);
            dst[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
        }
    }
}

static void decode_q4_1(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 20, dst += 32) {
        const float d = f16(b), m = f16(b + 2);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)(b[4 + j] & 0xF) + m;
            dst[j + 16] = d * (float)(b[4 + j] >> 4) + m;
        }
    }
}

static void decode_q5_0(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 22, dst += 32) {
        const float d = f16(b);
        const uint32_t qh = u32le(b + 2);
        for (int j = 0; j < 16; j++) {
            int q0 = (b[6 + j] & 0xF) | (int)((qh >> j) & 1) << 4;
            int q1 = (b[6 + j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = d * (float)(q0 - 16);
            dst[j + 16] = d * (float)(q1 - 16);
        }
    }
}

static void decode_q5_1(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 24, dst += 32) {
        const float d = f16(b), m = f16(b + 2);
        const uint32_t qh = u32le(b + 4);
        for (int j = 0; j < 16; j++) {
            int q0 = (b[8 + j] & 0xF) | (int)((qh >> j) & 1) << 4;
            int q1 = (b[8 + j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = d * (float)q0 + m;
            dst[j + 16] = d * (float)q1 + m;
        }
    }
}

static const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

static void decode_iq4_nl(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 18, dst += 32) {
        const float d = f16(b);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)iq4nl_values[b[2 + j] & 0xF];
            dst[j + 16] = d * (float)iq4nl_values[b[2 + j] >> 4];
        }
    }
}

/* E8M0 scale, halved (2^(e - 128)) to go with the doubled E2M1 values; e =
 * 0 and 1 are the fp32 subnormals 2^-128 and 2^-127. */
static float e8m0_half(uint8_t e)
{
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* E2M1 values, doubled */
static const int8_t e2m1_doubled[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static void decode_mxfp4(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 17, dst += 32) {
        const float d = e8m0_half(b[0]);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)e2m1_doubled[b[1 + j] & 0xF];
            dst[j + 16] = d * (float)e2m1_doubled[b[1 + j] >> 4];
        }
    }
}

/* ---- moevk's blocks for the Hugging Face quantised formats ----------------------
 * Repacked at load from GPTQ/AWQ, bitsandbytes and FP8 checkpoints
 * (src/model/hf_quant.c) so that every value is the one those libraries'
 * dequantisers compute in f32 (docs/semantics.md). */

/* gptq4: f16 d, u8 zero z (0..16), qs[16] (byte j: element j low, j + 16
 * high); d * (q - z), exact in f32. */
static void decode_gptq4(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 19, dst += 32) {
        const float d = f16(b);
        const int z = b[2];
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)((b[3 + j] & 0xF) - z);
            dst[j + 16] = d * (float)((b[3 + j] >> 4) - z);
        }
    }
}

static float f32le(const uint8_t *p)
{
    uint32_t u = u32le(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The 16 NF4 values of bitsandbytes (its table of f32 literals), as bits. */
static const uint32_t nf4_bits[16] = {
    0xbf800000u, 0xbf3239b1u, 0xbf066b30u, 0xbeca32a0u, 0xbe91a24du, 0xbe3d353fu,
    0xbdba7871u, 0x00000000u, 0x3da2faffu, 0x3e24cae3u, 0x3e7c04ddu, 0x3ead033au,
    0x3ee1a4b8u, 0x3f1007abu, 0x3f3913b3u, 0x3f800000u,
};

float mvk_nf4_value(unsigned code)
{
    float f;
    memcpy(&f, &nf4_bits[code & 15u], sizeof f);
    return f;
}

/* nf4: f32 absmax, qs[32] (byte j: element 2j high, 2j + 1 low, as
 * bitsandbytes packs); NF4[q] * absmax. */
static void decode_nf4(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 36, dst += 64) {
        const float a = f32le(b);
        for (int j = 0; j < 32; j++) {
            dst[2 * j] = mvk_nf4_value(b[4 + j] >> 4) * a;
            dst[2 * j + 1] = mvk_nf4_value(b[4 + j] & 0xF) * a;
        }
    }
}

float mvk_e4m3_value(uint8_t v)
{
    /* float8 e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits, no
     * infinities; 0x7f and 0xff are NaN (refused by mvk_format_check). */
    const uint32_t s = (uint32_t)(v >> 7) << 31, e = (v >> 3) & 15u, m = v & 7u;
    uint32_t bits;
    if (e == 15 && m == 7)
        bits = s | 0x7fc00000u;
    else if (e == 0) {
        float f = (float)m * 0.001953125f; /* m x 2^-9, exact */
        memcpy(&bits, &f, sizeof bits);
        bits |= s;
    } else
        bits = s | (e + 120u) << 23 | m << 20;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* fp8_e4m3: f32 scale, 128 e4m3fn bytes; value x scale (rounded once, in
 * f32). */
static void decode_fp8_e4m3(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++, b += 132, dst += 128) {
        const float s = f32le(b);
        for (int j = 0; j < 128; j++)
            dst[j] = mvk_e4m3_value(b[4 + j]) * s;
    }
}

/* ---- 256-element super-blocks (K-quants) ----------------------------------------
 * Positions: element e of a super-block has h = e / 128 (half), g = (e %
 * 128) / 32 (2-bit plane), l = e % 32. */

static void decode_q2_k(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src; /* scales[16], qs[64], d, dmin */
    for (size_t i = 0; i < n; i++, b += 84, dst += QK_K) {
        const float d = f16(b + 80), dmin = f16(b + 82);
        for (int e = 0; e < QK_K; e++) {
            const uint8_t sc = b[e / 16];
            const float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
            const int q = (b[16 + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            dst[e] = dl * (float)q - ml;
        }
    }
}

static void decode_q3_k(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src; /* hmask[32], qs[64], scales[12], d */
    for (size_t i = 0; i < n; i++, b += 110, dst += QK_K) {
        const uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
        const float d = f16(b + 108);
        for (int e = 0; e < QK_K; e++) {
            const int s = e / 16;
            const int low = (s < 8 ? sc[s] : sc[s - 8] >> 4) & 0xF;
            const int high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
            const float dl = d * (float)((low | high << 4) - 32);
            const int q2 = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            const int hbit = (hmask[e % 32] >> (e / 32)) & 1;
            dst[e] = dl * (float)(q2 - (hbit ? 0 : 4));
        }
    }
}

/* The 6-bit scale and min of sub-block j (0..7) of Q4_K/Q5_K. */
static void k_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

static void decode_q4_k(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src; /* d, dmin, scales[12], qs[128] */
    for (size_t i = 0; i < n; i++, b += 144, dst += QK_K) {
        const float d = f16(b), dmin = f16(b + 2);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            k_scale_min(b + 4, j, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            for (int l = 0; l < 32; l++) {
                const int q = (b[16 + 32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
                dst[32 * j + l] = d1 * (float)q - m1;
            }
        }
    }
}

static void decode_q5_k(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src; /* d, dmin, scales[12], qh[32], qs[128] */
    for (size_t i = 0; i < n; i++, b += 176, dst += QK_K) {
        const float d = f16(b), dmin = f16(b + 2);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            k_scale_min(b + 4, j, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            for (int l = 0; l < 32; l++) {
                const int q = ((b[48 + 32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF) |
                              ((b[16 + l] >> j) & 1) << 4;
                dst[32 * j + l] = d1 * (float)q - m1;
            }
        }
    }
}

static void decode_q6_k(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src; /* ql[128], qh[64], scales[16] (int8), d */
    for (size_t i = 0; i < n; i++, b += 210, dst += QK_K) {
        const float d = f16(b + 208);
        for (int e = 0; e < QK_K; e++) {
            const int h = e / 128, g = (e % 128) / 32, l = e % 32;
            const int low = (b[64 * h + l + 32 * (g & 1)] >> (4 * (g / 2))) & 0xF;
            const int high = (b[128 + 32 * h + l] >> (2 * g)) & 3;
            const float ds = d * (float)(int8_t)b[192 + e / 16];
            dst[e] = ds * (float)((low | high << 4) - 32);
        }
    }
}

static void decode_iq4_xs(const void *src, size_t n, float *dst)
{
    const uint8_t *b = src; /* d, scales_h (u16), scales_l[4], qs[128] */
    for (size_t i = 0; i < n; i++, b += 136, dst += QK_K) {
        const float d = f16(b);
        const unsigned sh = (unsigned)(b[2] | b[3] << 8);
        for (int ib = 0; ib < 8; ib++) {
            const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | ((sh >> (2 * ib)) & 3) << 4;
            const float dl = d * (float)(ls - 32);
            for (int j = 0; j < 16; j++) {
                const uint8_t q = b[8 + 16 * ib + j];
                dst[32 * ib + j] = dl * (float)iq4nl_values[q & 0xF];
                dst[32 * ib + j + 16] = dl * (float)iq4nl_values[q >> 4];
            }
        }
    }
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
    return (u32le(p) & 0x7f800000u) != 0x7f800000u;
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
                            (unsigned)u32le(p)),
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
