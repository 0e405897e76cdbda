/*
 * CPU reference, number formats: IEEE binary16 (f16) and bfloat16 (bf16)
 * conversions, both directions, rounding to nearest even; and the widening
 * load of one element of any weight format (src/formats.h) to double.
 *
 * The conversions work on bit patterns (memcpy for the type pun) so they do
 * not depend on the compiler's _Float16 support or the FPU rounding mode;
 * the widening ones are those of format_decode.h, which the decoders and
 * the CUDA kernels share.
 */
#include "ref.h"
#include "format_decode.h"
#include "formats.h"

#include <math.h>
#include <string.h>

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float moevk_half_to_float(uint16_t h)
{
    return mvk_dq_half(h); /* exact: zero, subnormals, inf and NaN payloads too */
}

/* Shift `m` right by `shift` (1..31) bits, rounding to nearest, ties to even. */
static uint32_t shift_round_even(uint32_t m, uint32_t shift)
{
    uint32_t kept = m >> shift;
    uint32_t rest = m & ((1u << shift) - 1u);
    uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (kept & 1u)))
        kept++;
    return kept;
}

uint16_t moevk_float_to_half(float f)
{
    uint32_t u = float_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t fexp = (u >> 23) & 0xffu;
    uint32_t fmant = u & 0x7fffffu;

    if (fexp == 0xff) { /* inf, or NaN: keep the top payload bits, stay NaN */
        if (fmant == 0)
            return (uint16_t)(sign | 0x7c00u);
        return (uint16_t)(sign | 0x7e00u | (fmant >> 13));
    }
    if (fexp == 0) /* float zero or subnormal (< 2^-126): rounds to zero */
        return sign;

    /* f = m * 2^(e - 15 - 10 - 13) with m the 24-bit significand and e the
     * exponent rebiased for half. */
    int32_t e = (int32_t)fexp - 127 + 15;
    uint32_t m = fmant | 0x800000u;

    if (e >= 31) /* >= 65536: beyond the largest half even before rounding */
        return (uint16_t)(sign | 0x7c00u);
    if (e >= 1) {
        /* Normal half: drop 13 bits. A carry out of the mantissa bumps the
         * exponent field, which is exactly the right encoding (up to inf). */
        uint32_t r = shift_round_even(m, 13); /* 11 bits, or 0x800 on carry */
        return (uint16_t)(sign | (((uint32_t)e << 10) + (r - 0x400u)));
    }
    /* Subnormal half: value / 2^-24 = m * 2^(e - 14). */
    uint32_t shift = (uint32_t)(14 - e); /* >= 14 */
    if (shift > 24) /* below 2^-25: rounds to zero */
        return sign;
    /* A carry to 0x400 yields the smallest normal, again the right bits. */
    return (uint16_t)(sign | shift_round_even(m, shift));
}

float moevk_bf16_to_float(uint16_t b)
{
    return mvk_dq_bfloat(b);
}

uint16_t moevk_float_to_bf16(float f)
{
    uint32_t u = float_bits(f);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu) != 0)
        return (uint16_t)((u >> 16) | 0x40u); /* NaN: quiet, sign kept */
    /* Round to nearest even on the low 16 bits; a carry into the exponent
     * is the right result (up to infinity). */
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(r >> 16);
}

double moevk_ref_load(const void *data, moevk_dtype dtype, size_t i)
{
    const mvk_format *f = mvk_format_get(dtype);
    if (!f || !data)
        return NAN; /* unknown dtype: a value no comparison can pass */
    if (dtype == MOEVK_DTYPE_I32)
        return (double)((const int32_t *)data)[i];
    float block[256];
    size_t b = i / f->block_elems;
    if (f->block_elems > sizeof(block) / sizeof(block[0]))
        return NAN;
    f->decode((const uint8_t *)data + b * f->block_bytes, 1, block);
    return (double)block[i % f->block_elems];
}
