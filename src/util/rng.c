#include "util/rng.h"

#include <math.h>
#include <stdlib.h>

#include "ref/ref.h"

mvk_rng mvk_rng_seed(uint64_t seed, uint64_t stream)
{
    mvk_rng r = {seed ^ (stream * 0xd1342543de82ef95ull)};
    mvk_rng_next(&r);
    return r;
}

uint64_t mvk_rng_next(mvk_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint32_t mvk_rng_range(mvk_rng *r, uint32_t lo, uint32_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + (uint32_t)(mvk_rng_next(r) % ((uint64_t)hi - lo + 1));
}

float mvk_rng_uniform(mvk_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((mvk_rng_next(r) >> 40) * (1.0 / 16777216.0));
}

int mvk_rng_chance(mvk_rng *r, double p)
{
    return (double)(mvk_rng_next(r) >> 11) * (1.0 / 9007199254740992.0) < p;
}

void mvk_store_dtype(void *dst, moevk_dtype dt, size_t i, float v)
{
    if (dt == MOEVK_DTYPE_F32)
        ((float *)dst)[i] = v;
    else if (dt == MOEVK_DTYPE_F16)
        ((uint16_t *)dst)[i] = moevk_float_to_half(v);
    else
        ((uint16_t *)dst)[i] = moevk_float_to_bf16(v);
}

/* The scale fields of a block: byte offsets of its f16 scales (-1 ends),
 * and of an E8M0 exponent (MXFP4). The rest of a block is random bits: every
 * quant pattern, signs and sub-scales occur. */
static void block_fields(moevk_dtype dt, int f16_at[3], int *e8m0_at)
{
    f16_at[0] = f16_at[1] = f16_at[2] = -1;
    *e8m0_at = -1;
    switch (dt) {
    case MOEVK_DTYPE_Q8_0: case MOEVK_DTYPE_Q4_0: case MOEVK_DTYPE_Q5_0:
    case MOEVK_DTYPE_IQ4_NL: case MOEVK_DTYPE_IQ4_XS:
        f16_at[0] = 0;
        break;
    case MOEVK_DTYPE_Q4_1: case MOEVK_DTYPE_Q5_1: case MOEVK_DTYPE_Q4_K: case MOEVK_DTYPE_Q5_K:
        f16_at[0] = 0, f16_at[1] = 2;
        break;
    case MOEVK_DTYPE_Q2_K: f16_at[0] = 80, f16_at[1] = 82; break;
    case MOEVK_DTYPE_Q3_K: f16_at[0] = 108; break;
    case MOEVK_DTYPE_Q6_K: f16_at[0] = 208; break;
    case MOEVK_DTYPE_MXFP4: *e8m0_at = 0; break;
    default: break;
    }
}

/* n / block_elems random blocks of dt whose values are about +-scale. */
static void fill_blocks(mvk_rng *r, moevk_dtype dt, void *dst, size_t n, float scale)
{
    const uint32_t be = moevk_dtype_block_elems(dt);
    const size_t nb = n / be, bb = (size_t)moevk_dtype_row_bytes(dt, be);
    int f16_at[3], e8m0_at;
    block_fields(dt, f16_at, &e8m0_at);
    /* the quant values reach about 8..127 (K-quants: scale x sub-scale up
     * to 63 x 31): scales that keep values near +-scale */
    const float unit = be == 256 ? scale / 400.0f : dt == MOEVK_DTYPE_Q8_0 ? scale / 127.0f
                                                                          : scale / 12.0f;
    for (size_t b = 0; b < nb; b++) {
        uint8_t *p = (uint8_t *)dst + b * bb;
        for (size_t i = 0; i < bb; i++)
            p[i] = (uint8_t)mvk_rng_next(r);
        for (int f = 0; f < 3 && f16_at[f] >= 0; f++) {
            uint16_t h = moevk_float_to_half(mvk_rng_uniform(r, -unit, unit));
            p[f16_at[f]] = (uint8_t)h;
            p[f16_at[f] + 1] = (uint8_t)(h >> 8);
        }
        if (e8m0_at >= 0) /* 2^(e - 127) about scale / 6 */
            p[e8m0_at] = (uint8_t)(127 + (int)floorf(log2f(scale / 6.0f)) +
                                   (int)(mvk_rng_next(r) % 3) - 1);
    }
}

void mvk_rng_fill(mvk_rng *r, moevk_dtype dt, void *dst, size_t n, float scale)
{
    if (moevk_dtype_block_elems(dt) > 1) {
        fill_blocks(r, dt, dst, n, scale);
        return;
    }
    for (size_t i = 0; i < n; i++)
        mvk_store_dtype(dst, dt, i, mvk_rng_uniform(r, -scale, scale));
}

void *mvk_rng_array(mvk_rng *r, moevk_dtype dt, size_t n, float scale)
{
    const uint32_t be = moevk_dtype_block_elems(dt);
    const uint64_t bytes = be ? moevk_dtype_row_bytes(dt, n ? n : be) : 0;
    if (!bytes) /* an unknown dtype, or not whole blocks */
        return NULL;
    void *p = malloc((size_t)bytes);
    if (p)
        mvk_rng_fill(r, dt, p, n, scale);
    return p;
}
