/*
 * The decode formulas of the weight formats, one function per format giving
 * element j of one block: the one home shared by the C reference decoders
 * (src/formats.c builds its block decoders from them) and the CUDA kernels
 * (src/cuda/cuda_kernels.cu reads packed blocks through them). The GLSL
 * decoders (shaders/formats.glsl) cannot include C and mirror these
 * functions formula by formula.
 *
 * Each value is computed in float, operation by operation as written here:
 * products first, then the offset, each product rounded on its own
 * (mvk_dq_mul: never contracted into an FMA with the following add, on the
 * host or on the GPU), so that the result is bit for bit what gguf-py's
 * dequantize gives (tests/test_formats.py) wherever it is computed.
 *
 * Block geometry (elements and bytes per block) lives in the format table
 * (src/formats.h), not here. Adding a format: one mvk_dq_<name>(b, j) below
 * and its case in mvk_dq_element; its row in the table (src/formats.c); its
 * branch in shaders/formats.glsl.
 *
 * Usable from C11 and from C++/CUDA: compiled by nvcc the functions are
 * __host__ __device__. Lookup tables are packed into integer constants, so
 * device code needs no table in memory.
 */
#ifndef MOEVK_FORMAT_DECODE_H
#define MOEVK_FORMAT_DECODE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "moevk/moevk.h"

#if defined(__CUDACC__)
#define MVK_DQ_FN static __host__ __device__ __forceinline__
#else
#define MVK_DQ_FN static inline
#endif

/* ---- helpers ------------------------------------------------------------ */

MVK_DQ_FN float mvk_dq_bits(uint32_t u)
{
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

/* a * b, rounded once and kept apart from any add that follows: nvcc fuses
 * a * b + c into an FMA unless told not to (__fmul_rn); the C library
 * builds as ISO C, where GCC does not contract. */
MVK_DQ_FN float mvk_dq_mul(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

MVK_DQ_FN uint32_t mvk_dq_u16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

MVK_DQ_FN uint32_t mvk_dq_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A byte as a signed 8-bit integer (two's complement). */
MVK_DQ_FN int mvk_dq_i8(uint32_t byte)
{
    return (int)(byte & 0xffu) - (int)((byte & 0x80u) << 1);
}

/* Byte k (0..7) of a packed table, as a signed 8-bit value. */
MVK_DQ_FN int mvk_dq_table8(uint64_t table, uint32_t k)
{
    return mvk_dq_i8((uint32_t)(table >> (8u * k)));
}

/* IEEE binary16 bits to float, exactly (subnormals: mant * 2^-24, exact;
 * inf and NaN payloads kept). */
MVK_DQ_FN float mvk_dq_half(uint32_t h)
{
    const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        const float mag = (float)mant * 5.9604644775390625e-8f;
        return sign ? -mag : mag;
    }
    if (exp == 31)
        return mvk_dq_bits(sign | 0x7f800000u | mant << 13);
    return mvk_dq_bits(sign | (exp - 15u + 127u) << 23 | mant << 13);
}

MVK_DQ_FN float mvk_dq_bfloat(uint32_t b)
{
    return mvk_dq_bits((b & 0xffffu) << 16);
}

/* The f16 at byte p of a block. */
MVK_DQ_FN float mvk_dq_f16_at(const uint8_t *p)
{
    return mvk_dq_half(mvk_dq_u16(p));
}

/* Nibble of element j (0..31) of 16 quant bytes at q: byte j holds element
 * j (low nibble) and element j + 16 (high nibble). */
MVK_DQ_FN uint32_t mvk_dq_nibble(const uint8_t *q, uint32_t j)
{
    return (uint32_t)(q[j & 15u] >> ((j >> 4) << 2)) & 0xfu;
}

/* IQ4_NL's 16 values (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25,
 * 38, 53, 69, 89, 113), as two packed tables of 8 signed bytes. */
MVK_DQ_FN int mvk_dq_iq4nl_value(uint32_t k)
{
    return k < 8u ? mvk_dq_table8(0xf6eaddcfbfad9881ull, k)
                  : mvk_dq_table8(0x7159453526190d01ull, k - 8u);
}

/* E2M1 values, doubled: 0, 1, 2, 3, 4, 6, 8, 12, then the same negated
 * (index 8 is 0, not -0). */
MVK_DQ_FN int mvk_dq_e2m1_doubled(uint32_t k)
{
    const int mag = mvk_dq_table8(0x0c08060403020100ull, k & 7u);
    return k & 8u ? -mag : mag;
}

/* E8M0 scale, halved (2^(e - 128)) to go with the doubled E2M1 values; e =
 * 0 and 1 are the fp32 subnormals 2^-128 and 2^-127. */
MVK_DQ_FN float mvk_dq_e8m0_half(uint32_t e)
{
    return mvk_dq_bits(e < 2u ? 0x00200000u << e : (e - 1u) << 23);
}

/* The 6-bit scale (j < 4: byte j; else nibbles and top bits) and min of
 * sub-block j (0..7) of Q4_K/Q5_K, from its 12 scale bytes s. */
MVK_DQ_FN uint32_t mvk_dq_k_scale(const uint8_t *s, uint32_t j)
{
    return j < 4u ? s[j] & 63u : (uint32_t)(s[j + 4u] & 0xfu) | (uint32_t)(s[j - 4u] >> 6) << 4;
}

MVK_DQ_FN uint32_t mvk_dq_k_min(const uint8_t *s, uint32_t j)
{
    return j < 4u ? s[j + 4u] & 63u : (uint32_t)(s[j + 4u] >> 4) | (uint32_t)(s[j] >> 6) << 4;
}

/* ---- plain types: the element at b (j is 0) ------------------------------- */

MVK_DQ_FN float mvk_dq_f32(const uint8_t *b, uint32_t j)
{
    return mvk_dq_bits(mvk_dq_u32(b + 4u * j));
}

MVK_DQ_FN float mvk_dq_f16(const uint8_t *b, uint32_t j)
{
    return mvk_dq_f16_at(b + 2u * j);
}

MVK_DQ_FN float mvk_dq_bf16(const uint8_t *b, uint32_t j)
{
    return mvk_dq_bfloat(mvk_dq_u16(b + 2u * j));
}

/* ---- 32-element blocks: element j (0..31) of the block at b --------------- */

/* d (f16), qs[32] (int8): d * q */
MVK_DQ_FN float mvk_dq_q8_0(const uint8_t *b, uint32_t j)
{
    return mvk_dq_mul(mvk_dq_f16_at(b), (float)mvk_dq_i8(b[2u + j]));
}

/* d, qs[16]: d * (q - 8) */
MVK_DQ_FN float mvk_dq_q4_0(const uint8_t *b, uint32_t j)
{
    return mvk_dq_mul(mvk_dq_f16_at(b), (float)((int)mvk_dq_nibble(b + 2, j) - 8));
}

/* d, m, qs[16]: d * q + m */
MVK_DQ_FN float mvk_dq_q4_1(const uint8_t *b, uint32_t j)
{
    return mvk_dq_mul(mvk_dq_f16_at(b), (float)mvk_dq_nibble(b + 4, j)) + mvk_dq_f16_at(b + 2);
}

/* d, qh (u32: bit j is element j's fifth bit), qs[16]: d * (q - 16) */
MVK_DQ_FN float mvk_dq_q5_0(const uint8_t *b, uint32_t j)
{
    const uint32_t q = mvk_dq_nibble(b + 6, j) | ((mvk_dq_u32(b + 2) >> j) & 1u) << 4;
    return mvk_dq_mul(mvk_dq_f16_at(b), (float)((int)q - 16));
}

/* d, m, qh, qs[16]: d * q + m */
MVK_DQ_FN float mvk_dq_q5_1(const uint8_t *b, uint32_t j)
{
    const uint32_t q = mvk_dq_nibble(b + 8, j) | ((mvk_dq_u32(b + 4) >> j) & 1u) << 4;
    return mvk_dq_mul(mvk_dq_f16_at(b), (float)q) + mvk_dq_f16_at(b + 2);
}

/* d, qs[16] (indices into the IQ4_NL values): d * value */
MVK_DQ_FN float mvk_dq_iq4_nl(const uint8_t *b, uint32_t j)
{
    return mvk_dq_mul(mvk_dq_f16_at(b), (float)mvk_dq_iq4nl_value(mvk_dq_nibble(b + 2, j)));
}

/* e (E8M0), qs[16] (E2M1): 2^(e-128) * doubled value */
MVK_DQ_FN float mvk_dq_mxfp4(const uint8_t *b, uint32_t j)
{
    return mvk_dq_mul(mvk_dq_e8m0_half(b[0]), (float)mvk_dq_e2m1_doubled(mvk_dq_nibble(b + 1, j)));
}

/* ---- moevk's blocks for the Hugging Face quantised formats ------------------
 * Repacked at load from GPTQ/AWQ, bitsandbytes and FP8 checkpoints
 * (src/model/hf_quant.c), so that every value is the one those libraries'
 * dequantisers compute in f32 (docs/semantics.md). */

/* gptq4: d (f16), z (u8, 0..16), qs[16]: d * (q - z), exact in f32 */
MVK_DQ_FN float mvk_dq_gptq4(const uint8_t *b, uint32_t j)
{
    return mvk_dq_mul(mvk_dq_f16_at(b), (float)((int)mvk_dq_nibble(b + 3, j) - (int)b[2]));
}

/* The 16 NF4 values of bitsandbytes (its table of f32 literals), by bits. */
MVK_DQ_FN float mvk_dq_nf4_value(uint32_t k)
{
    switch (k & 15u) {
    case 0: return mvk_dq_bits(0xbf800000u);
    case 1: return mvk_dq_bits(0xbf3239b1u);
    case 2: return mvk_dq_bits(0xbf066b30u);
    case 3: return mvk_dq_bits(0xbeca32a0u);
    case 4: return mvk_dq_bits(0xbe91a24du);
    case 5: return mvk_dq_bits(0xbe3d353fu);
    case 6: return mvk_dq_bits(0xbdba7871u);
    case 7: return mvk_dq_bits(0x00000000u);
    case 8: return mvk_dq_bits(0x3da2faffu);
    case 9: return mvk_dq_bits(0x3e24cae3u);
    case 10: return mvk_dq_bits(0x3e7c04ddu);
    case 11: return mvk_dq_bits(0x3ead033au);
    case 12: return mvk_dq_bits(0x3ee1a4b8u);
    case 13: return mvk_dq_bits(0x3f1007abu);
    case 14: return mvk_dq_bits(0x3f3913b3u);
    default: return mvk_dq_bits(0x3f800000u);
    }
}

/* nf4: absmax (f32), qs[32] (byte j: element 2j high nibble, 2j + 1 low,
 * as bitsandbytes packs): NF4[q] * absmax */
MVK_DQ_FN float mvk_dq_nf4(const uint8_t *b, uint32_t j)
{
    const uint32_t q = (uint32_t)(b[4u + j / 2u] >> ((j & 1u) ? 0u : 4u)) & 0xfu;
    return mvk_dq_mul(mvk_dq_nf4_value(q), mvk_dq_bits(mvk_dq_u32(b)));
}

/* float8 e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits, no
 * infinities; 0x7f and 0xff are NaN (refused by mvk_format_check). */
MVK_DQ_FN float mvk_dq_e4m3(uint32_t v)
{
    const uint32_t s = (v >> 7 & 1u) << 31, e = (v >> 3) & 15u, m = v & 7u;
    if (e == 15u && m == 7u)
        return mvk_dq_bits(s | 0x7fc00000u);
    if (e == 0u) /* m x 2^-9, exact (and -0.0 for 0x80) */
        return mvk_dq_mul((float)m, s ? -0.001953125f : 0.001953125f);
    return mvk_dq_bits(s | (e + 120u) << 23 | m << 20);
}

/* fp8_e4m3: scale (f32), 128 e4m3fn bytes: value * scale (rounded once) */
MVK_DQ_FN float mvk_dq_fp8_e4m3(const uint8_t *b, uint32_t j)
{
    return mvk_dq_mul(mvk_dq_e4m3(b[4u + j]), mvk_dq_bits(mvk_dq_u32(b)));
}

/* ---- 256-element super-blocks (K-quants): element e (0..255) ---------------
 * Positions: element e has h = e / 128 (half), g = (e % 128) / 32 (2-bit
 * plane), l = e % 32. */

/* scales[16] (low nibble scale, high nibble min), qs[64], d, dmin:
 * (d * sc) * q - dmin * m */
MVK_DQ_FN float mvk_dq_q2_k(const uint8_t *b, uint32_t e)
{
    const uint32_t sc = b[e / 16u];
    const float dl = mvk_dq_mul(mvk_dq_f16_at(b + 80), (float)(sc & 0xfu));
    const float ml = mvk_dq_mul(mvk_dq_f16_at(b + 82), (float)(sc >> 4));
    const uint32_t q = (uint32_t)(b[16u + 32u * (e / 128u) + e % 32u] >> (2u * ((e % 128u) / 32u))) & 3u;
    return mvk_dq_mul(dl, (float)q) - ml;
}

/* hmask[32], qs[64], scales[12] (6-bit, packed), d:
 * (d * (sc - 32)) * (q2 - (hbit ? 0 : 4)) */
MVK_DQ_FN float mvk_dq_q3_k(const uint8_t *b, uint32_t e)
{
    const uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
    const uint32_t s = e / 16u;
    const uint32_t low = (uint32_t)(s < 8u ? sc[s] : sc[s - 8u] >> 4) & 0xfu;
    const uint32_t high = (uint32_t)(sc[8u + s % 4u] >> (2u * (s / 4u))) & 3u;
    const float dl = mvk_dq_mul(mvk_dq_f16_at(b + 108), (float)((int)(low | high << 4) - 32));
    const int q2 = (qs[32u * (e / 128u) + e % 32u] >> (2u * ((e % 128u) / 32u))) & 3;
    const int hbit = (hmask[e % 32u] >> (e / 32u)) & 1;
    return mvk_dq_mul(dl, (float)(q2 - (hbit ? 0 : 4)));
}

/* d, dmin, scales[12], qs[128]: (d * sc) * q - dmin * m, sub-block e / 32 */
MVK_DQ_FN float mvk_dq_q4_k(const uint8_t *b, uint32_t e)
{
    const uint32_t j = e / 32u, l = e % 32u;
    const float d1 = mvk_dq_mul(mvk_dq_f16_at(b), (float)mvk_dq_k_scale(b + 4, j));
    const float m1 = mvk_dq_mul(mvk_dq_f16_at(b + 2), (float)mvk_dq_k_min(b + 4, j));
    const uint32_t q = (uint32_t)(b[16u + 32u * (j / 2u) + l] >> (4u * (j % 2u))) & 0xfu;
    return mvk_dq_mul(d1, (float)q) - m1;
}

/* d, dmin, scales[12], qh[32], qs[128]: as Q4_K with a fifth bit */
MVK_DQ_FN float mvk_dq_q5_k(const uint8_t *b, uint32_t e)
{
    const uint32_t j = e / 32u, l = e % 32u;
    const float d1 = mvk_dq_mul(mvk_dq_f16_at(b), (float)mvk_dq_k_scale(b + 4, j));
    const float m1 = mvk_dq_mul(mvk_dq_f16_at(b + 2), (float)mvk_dq_k_min(b + 4, j));
    const uint32_t q = ((uint32_t)(b[48u + 32u * (j / 2u) + l] >> (4u * (j % 2u))) & 0xfu) |
                       ((uint32_t)(b[16u + l] >> j) & 1u) << 4;
    return mvk_dq_mul(d1, (float)q) - m1;
}

/* ql[128], qh[64], scales[16] (int8), d: (d * sc) * (q - 32) */
MVK_DQ_FN float mvk_dq_q6_k(const uint8_t *b, uint32_t e)
{
    const uint32_t h = e / 128u, g = (e % 128u) / 32u, l = e % 32u;
    const uint32_t low = (uint32_t)(b[64u * h + l + 32u * (g & 1u)] >> (4u * (g / 2u))) & 0xfu;
    const uint32_t high = (uint32_t)(b[128u + 32u * h + l] >> (2u * g)) & 3u;
    const float ds = mvk_dq_mul(mvk_dq_f16_at(b + 208), (float)mvk_dq_i8(b[192u + e / 16u]));
    return mvk_dq_mul(ds, (float)((int)(low | high << 4) - 32));
}

/* d, scales_h (u16), scales_l[4], qs[128] (IQ4_NL indices, 16 bytes per
 * sub-block of 32): (d * (ls - 32)) * value */
MVK_DQ_FN float mvk_dq_iq4_xs(const uint8_t *b, uint32_t e)
{
    const uint32_t ib = e / 32u;
    const uint32_t ls = ((uint32_t)(b[4u + ib / 2u] >> (4u * (ib % 2u))) & 0xfu) |
                        ((mvk_dq_u16(b + 2) >> (2u * ib)) & 3u) << 4;
    const float dl = mvk_dq_mul(mvk_dq_f16_at(b), (float)((int)ls - 32));
    return mvk_dq_mul(dl, (float)mvk_dq_iq4nl_value(mvk_dq_nibble(b + 8u + 16u * ib, e % 32u)));
}

/* ---- any format ------------------------------------------------------------- */

/* Element j of the block at b of weight format dt (NaN for a dtype that is
 * not a weight format). A constant dt folds the switch away. */
MVK_DQ_FN float mvk_dq_element(moevk_dtype dt, const uint8_t *b, uint32_t j)
{
    switch (dt) {
    case MOEVK_DTYPE_F32: return mvk_dq_f32(b, j);
    case MOEVK_DTYPE_F16: return mvk_dq_f16(b, j);
    case MOEVK_DTYPE_BF16: return mvk_dq_bf16(b, j);
    case MOEVK_DTYPE_Q8_0: return mvk_dq_q8_0(b, j);
    case MOEVK_DTYPE_Q4_0: return mvk_dq_q4_0(b, j);
    case MOEVK_DTYPE_Q4_1: return mvk_dq_q4_1(b, j);
    case MOEVK_DTYPE_Q5_0: return mvk_dq_q5_0(b, j);
    case MOEVK_DTYPE_Q5_1: return mvk_dq_q5_1(b, j);
    case MOEVK_DTYPE_Q2_K: return mvk_dq_q2_k(b, j);
    case MOEVK_DTYPE_Q3_K: return mvk_dq_q3_k(b, j);
    case MOEVK_DTYPE_Q4_K: return mvk_dq_q4_k(b, j);
    case MOEVK_DTYPE_Q5_K: return mvk_dq_q5_k(b, j);
    case MOEVK_DTYPE_Q6_K: return mvk_dq_q6_k(b, j);
    case MOEVK_DTYPE_IQ4_NL: return mvk_dq_iq4_nl(b, j);
    case MOEVK_DTYPE_IQ4_XS: return mvk_dq_iq4_xs(b, j);
    case MOEVK_DTYPE_MXFP4: return mvk_dq_mxfp4(b, j);
    case MOEVK_DTYPE_GPTQ4: return mvk_dq_gptq4(b, j);
    case MOEVK_DTYPE_NF4: return mvk_dq_nf4(b, j);
    case MOEVK_DTYPE_FP8_E4M3: return mvk_dq_fp8_e4m3(b, j);
    default: return mvk_dq_bits(0x7fc00000u);
    }
}

/* Element i of an array of blocks of dt (block_elems elements in
 * block_bytes bytes each, from the format table): rows that are whole
 * blocks make element (r, c) of a matrix element r * cols + c. */
MVK_DQ_FN float mvk_dq_at(moevk_dtype dt, uint32_t block_elems, uint32_t block_bytes,
                          const void *base, size_t i)
{
    const uint8_t *b = (const uint8_t *)base + i / block_elems * block_bytes;
    return mvk_dq_element(dt, b, (uint32_t)(i % block_elems));
}

#endif
