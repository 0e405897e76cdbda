#include "util/rng.h"

#include <stdlib.h>

#include "formats.h"
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

void mvk_rng_fill(mvk_rng *r, moevk_dtype dt, void *dst, size_t n, float scale)
{
    const uint32_t be = moevk_dtype_block_elems(dt);
    if (be > 1) {
        /* random bits shaped into valid blocks (formats.c) */
        const size_t bb = (size_t)moevk_dtype_row_bytes(dt, be), nb = n / be;
        uint8_t *p = dst;
        for (size_t b = 0; b < nb; b++, p += bb) {
            for (size_t i = 0; i < bb; i += 8) {
                uint64_t v = mvk_rng_next(r);
                for (size_t j = i; j < bb && j < i + 8; j++, v >>= 8)
                    p[j] = (uint8_t)v;
            }
            mvk_format_shape_block(dt, p, scale, mvk_rng_next(r));
        }
        return;
    }
    for (size_t i = 0; i < n; i++)
        mvk_store_dtype(dst, dt, i, mvk_rng_uniform(r, -scale, scale));
}

void *mvk_rng_array(mvk_rng *r, moevk_dtype dt, size_t n, float scale)
{
    const uint32_t be = moevk_dtype_block_elems(dt);
    const size_t bytes = be > 1 ? (size_t)moevk_dtype_row_bytes(dt, n) : moevk_dtype_size(dt) * n;
    if (be > 1 && n % be)
        return NULL;
    void *p = malloc(bytes ? bytes : 4);
    if (p)
        mvk_rng_fill(r, dt, p, n, scale);
    return p;
}
