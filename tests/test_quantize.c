/*
 * The quantisers (src/quantize.h) on their own, CPU only, no Python:
 * quantise -> decode round trips in which every value is the nearest of
 * its group's levels (read from the block's own scale fields, independently
 * of the decoders; up to the f16 rounding of a scale the codes were chosen
 * against), so within half a step inside the group's range and clipped to
 * the nearer end outside it (MXFP4 exactly the nearest), exact zeros kept,
 * power-of-two scaling commuting with quantisation, a row quantised as its
 * blocks one by one, MXFP4 output always valid, the fallback rule, and the
 * refusals (rows that are not whole blocks, non-finite values, index and
 * unknown dtypes, NULL pointers) leaving dst untouched. The comparison
 * with gguf-py and ggml is tests/test_formats.py.
 */
#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "formats.h"
#include "quantize.h"
#include "ref/ref.h"

static const moevk_dtype block_formats[] = {
    MOEVK_DTYPE_Q8_0, MOEVK_DTYPE_Q4_0, MOEVK_DTYPE_Q4_1, MOEVK_DTYPE_Q5_0, MOEVK_DTYPE_Q5_1,
    MOEVK_DTYPE_Q2_K, MOEVK_DTYPE_Q3_K, MOEVK_DTYPE_Q4_K, MOEVK_DTYPE_Q5_K, MOEVK_DTYPE_Q6_K,
    MOEVK_DTYPE_IQ4_NL, MOEVK_DTYPE_IQ4_XS, MOEVK_DTYPE_MXFP4,
};
#define NFORMATS (sizeof(block_formats) / sizeof(block_formats[0]))

/* ---- random rows ------------------------------------------------------------------ */

static float gaussian(mvkt_rng *r)
{
    /* Box-Muller on two uniforms in (0, 1] */
    const double u = 1.0 - (double)(mvkt_next(r) >> 11) * 0x1p-53;
    const double v = (double)(mvkt_next(r) >> 11) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

enum { ROW_GAUSS, ROW_UNIFORM, ROW_HEAVY, ROW_ZEROS, ROW_SCALES, ROW_KINDS };
static const char *const row_kind_name[ROW_KINDS] = {
    "gaussian", "uniform", "heavy-tailed", "gaussian with exact zeros", "gaussian, scale per block"};

/* n values of a kind: gaussian (sigma 1), uniform in [-1, 1), heavy-tailed
 * (a gaussian over the square root of a uniform: student-t-like tails),
 * gaussian with a third exact zeros, gaussian scaled per block of `block`
 * elements by 2^-8..2^8. */
static void fill_row(mvkt_rng *r, int kind, float *x, size_t n, uint32_t block)
{
    float s = 1.0f;
    for (size_t i = 0; i < n; i++) {
        if (i % block == 0 && kind == ROW_SCALES)
            s = ldexpf(1.0f, (int)mvkt_range(r, 0, 16) - 8);
        switch (kind) {
        case ROW_UNIFORM: x[i] = mvkt_uniform(r, -1.0f, 1.0f); break;
        case ROW_HEAVY: x[i] = gaussian(r) / sqrtf(mvkt_uniform(r, 0.01f, 1.0f)); break;
        case ROW_ZEROS: x[i] = mvkt_range(r, 0, 2) == 0 ? 0.0f : gaussian(r); break;
        default: x[i] = s * gaussian(r); break;
        }
    }
}

/* ---- the levels of each group, from the block's own fields ------------------------ */

static float f16_at(const uint8_t *p)
{
    return moevk_half_to_float((uint16_t)(p[0] | p[1] << 8));
}

static const int8_t iq4_grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                    1,    13,   25,  38,  53,  69,  89,  113};
static const int8_t fp4_doubled[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* How much an f16 scale may be off the f32 scale it was rounded from. */
static double f16_error(float h)
{
    return fabs((double)h) * 0x1p-11 + 0x1p-25;
}

/* The values group j of a block can decode to, read from the block's scale
 * fields (independently of src/formats.c), into lv; returns their number
 * and the group size (*elems), and in *slack how much farther than the
 * nearest of them a value may land because its code was chosen against the
 * unrounded f32 scale (Q8_0..Q5_1, IQ4), twice the shift of the levels by
 * the f16 rounding; the K-quants choose codes against the stored scales
 * (slack 0). */
static int group_levels(moevk_dtype dt, const uint8_t *b, int j, float *lv, int *elems,
                        double *slack)
{
    int n = 0;
    *slack = 0.0;
    switch (dt) {
    case MOEVK_DTYPE_Q8_0:
    case MOEVK_DTYPE_Q4_0:
    case MOEVK_DTYPE_Q5_0: {
        const int half = dt == MOEVK_DTYPE_Q8_0 ? 128 : dt == MOEVK_DTYPE_Q4_0 ? 8 : 16;
        const float d = f16_at(b);
        for (int q = -half; q < half; q++)
            lv[n++] = d * (float)q;
        *slack = 2.0 * (half == 128 ? 127 : half) * f16_error(d);
        *elems = 32;
        return n;
    }
    case MOEVK_DTYPE_Q4_1:
    case MOEVK_DTYPE_Q5_1: {
        const int levels = dt == MOEVK_DTYPE_Q4_1 ? 16 : 32;
        const float d = f16_at(b), m = f16_at(b + 2);
        for (int q = 0; q < levels; q++)
            lv[n++] = d * (float)q + m;
        *slack = 2.0 * ((levels - 1) * f16_error(d) + f16_error(m));
        *elems = 32;
        return n;
    }
    case MOEVK_DTYPE_MXFP4: {
        const float d = ldexpf(1.0f, (int)b[0] - 128);
        for (int k = 0; k < 16; k++)
            lv[n++] = d * (float)fp4_doubled[k];
        *elems = 32;
        return n;
    }
    case MOEVK_DTYPE_IQ4_NL: {
        const float d = f16_at(b);
        for (int k = 0; k < 16; k++)
            lv[n++] = d * (float)iq4_grid[k];
        *slack = 2.0 * 127 * f16_error(d);
        *elems = 32;
        return n;
    }
    case MOEVK_DTYPE_IQ4_XS: { /* d, scales_h, scales_l[4], qs[128] */
        const float d = f16_at(b);
        const unsigned sh = (unsigned)(b[2] | b[3] << 8);
        const int ls = (((b[4 + j / 2] >> (4 * (j % 2))) & 0xF) | ((sh >> (2 * j)) & 3) << 4) - 32;
        const float dl = d * (float)ls;
        for (int k = 0; k < 16; k++)
            lv[n++] = dl * (float)iq4_grid[k];
        *slack = 2.0 * 127 * abs(ls) * f16_error(d);
        *elems = 32;
        return n;
    }
    case MOEVK_DTYPE_Q2_K: { /* scales[16], qs[64], d, dmin */
        const float dl = f16_at(b + 80) * (float)(b[j] & 0xF);
        const float ml = f16_at(b + 82) * (float)(b[j] >> 4);
        for (int q = 0; q < 4; q++)
            lv[n++] = dl * (float)q - ml;
        *elems = 16;
        return n;
    }
    case MOEVK_DTYPE_Q3_K: { /* hmask[32], qs[64], scales[12], d */
        const uint8_t *sc = b + 96;
        const int lo = (j < 8 ? sc[j] : sc[j - 8] >> 4) & 0xF;
        const int hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
        const float dl = f16_at(b + 108) * (float)((lo | hi << 4) - 32);
        for (int q = -4; q < 4; q++)
            lv[n++] = dl * (float)q;
        *elems = 16;
        return n;
    }
    case MOEVK_DTYPE_Q4_K:
    case MOEVK_DTYPE_Q5_K: { /* d, dmin, scales[12], ... */
        const uint8_t *s = b + 4;
        const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 0xF) | (s[j - 4] >> 6) << 4;
        const int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
        const float dl = f16_at(b) * (float)sc, ml = f16_at(b + 2) * (float)m;
        for (int q = 0; q < (dt == MOEVK_DTYPE_Q4_K ? 16 : 32); q++)
            lv[n++] = dl * (float)q - ml;
        *elems = 32;
        return n;
    }
    case MOEVK_DTYPE_Q6_K: { /* ql[128], qh[64], scales[16] (int8), d */
        const float dl = f16_at(b + 208) * (float)(int8_t)b[192 + j];
        for (int q = -32; q < 32; q++)
            lv[n++] = dl * (float)q;
        *elems = 16;
        return n;
    }
    default:
        cr_assert_fail("no levels for %s", moevk_dtype_name(dt));
        return 0;
    }
}

static uint8_t *quantize(moevk_dtype dt, const float *x, size_t n)
{
    const uint64_t bytes = mvk_format_row_bytes(dt, n);
    cr_assert_gt(bytes, 0);
    uint8_t *q = malloc(bytes);
    cr_assert_not_null(q);
    cr_assert_eq(mvk_quantize_row(dt, x, n, q), MOEVK_SUCCESS, "%s", moevk_dtype_name(dt));
    return q;
}

static float *decode(moevk_dtype dt, const uint8_t *q, size_t n)
{
    float *y = malloc(sizeof(float) * n);
    cr_assert_not_null(y);
    mvk_format_decode(dt, q, 0, n, y);
    return y;
}

/* Every value of a quantised row is the level of its group nearest to its
 * input (up to the scale's f16 rounding where the codes were chosen
 * against the unrounded scale, and float rounding of the code's quotient),
 * so within half a step where the input lies inside the group's range and
 * at the nearer end where it lies outside. Returns the largest error of an
 * in-range value in steps (the largest spacing of the group's levels). */
static double check_levels(moevk_dtype dt, const float *x, size_t n, const uint8_t *q,
                           const float *y, const char *what, uint64_t seed)
{
    const mvk_format *f = mvk_format_get(dt);
    double worst = 0.0;
    for (size_t blk = 0; blk < n / f->block_elems; blk++) {
        const uint8_t *b = q + blk * f->block_bytes;
        for (uint32_t i = 0; i < f->block_elems;) {
            float lv[256];
            int elems;
            double slack;
            const int gsize = dt == MOEVK_DTYPE_Q2_K || dt == MOEVK_DTYPE_Q3_K ||
                                      dt == MOEVK_DTYPE_Q6_K ? 16 : 32;
            const int nl = group_levels(dt, b, (int)i / gsize, lv, &elems, &slack);
            cr_assert_eq(elems, gsize);
            float lo = lv[0], hi = lv[0], gap = 0.0f;
            for (int k = 0; k < nl; k++) {
                lo = fminf(lo, lv[k]);
                hi = fmaxf(hi, lv[k]);
            }
            for (int k = 0; k < nl; k++) { /* the largest spacing of the sorted levels */
                float next = INFINITY;
                for (int l = 0; l < nl; l++)
                    if (lv[l] > lv[k] && lv[l] < next)
                        next = lv[l];
                if (isfinite(next) && next - lv[k] > gap)
                    gap = next - lv[k];
            }
            for (int k = 0; k < elems; k++, i++) {
                const size_t e = blk * f->block_elems + i;
                double nearest = INFINITY;
                for (int l = 0; l < nl; l++)
                    nearest = fmin(nearest, fabs((double)lv[l] - (double)x[e]));
                const double err = fabs((double)y[e] - (double)x[e]);
                /* MXFP4 picks the code of least |d * k - x| in float: exactly the nearest */
                const double tol = dt == MOEVK_DTYPE_MXFP4
                                       ? 0.0
                                       : slack + 4.0 * FLT_EPSILON * (fabs((double)x[e]) + hi - lo);
                cr_assert_leq(err, nearest + tol,
                              "%s, %s, seed %llu: element %zu (%a) decodes to %a, off by %g; its "
                              "group's nearest level is %g away (tolerance %g)",
                              moevk_dtype_name(dt), what, (unsigned long long)seed, e, (double)x[e],
                              (double)y[e], err, nearest, tol);
                if (x[e] >= lo && x[e] <= hi && gap > 0 && err / gap > worst)
                    worst = err / gap;
            }
        }
    }
    return worst;
}

Test(quantize, round_trip_within_steps)
{
    const uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed ^ 0x51);
    const size_t n = 256 * (size_t)mvkt_scaled(64, 8);
    float *x = malloc(sizeof(float) * n);
    cr_assert_not_null(x);
    for (size_t fi = 0; fi < NFORMATS; fi++) {
        const moevk_dtype dt = block_formats[fi];
        double worst = 0.0;
        for (int kind = 0; kind < ROW_KINDS; kind++) {
            fill_row(&r, kind, x, n, moevk_dtype_block_elems(dt));
            uint8_t *q = quantize(dt, x, n);
            float *y = decode(dt, q, n);
            const double w = check_levels(dt, x, n, q, y, row_kind_name[kind], seed);
            worst = w > worst ? w : worst;
            cr_assert(mvk_format_validate(dt, q, n / moevk_dtype_block_elems(dt), NULL));
            free(q);
            free(y);
        }
        cr_log_info("%-6s: largest error of a value inside its group's range: %.3f steps",
                    moevk_dtype_name(dt), worst);
    }
    free(x);
}

/* Zeros, of either sign and in part of a row, decode to zeros; a row of
 * tiny values (below any f16 scale, MXFP4 below 2^-125) stays valid and
 * tiny. */
Test(quantize, zeros_and_tiny_values)
{
    float x[512];
    for (size_t fi = 0; fi < NFORMATS; fi++) {
        const moevk_dtype dt = block_formats[fi];
        for (int i = 0; i < 512; i++)
            x[i] = i % 3 == 0 ? -0.0f : 0.0f;
        uint8_t *q = quantize(dt, x, 512);
        float *y = decode(dt, q, 512);
        for (int i = 0; i < 512; i++)
            cr_assert_eq(y[i], 0.0f, "%s: zero row element %d decodes to %g", moevk_dtype_name(dt),
                         i, (double)y[i]);
        free(q);
        free(y);
        /* the second half nonzero: the zeros of the first half stay zero */
        mvkt_rng r = mvkt_rng_make(fi);
        for (int i = 256; i < 512; i++)
            x[i] = gaussian(&r);
        q = quantize(dt, x, 512);
        y = decode(dt, q, 512);
        for (int i = 0; i < 256; i++)
            cr_assert_eq(y[i], 0.0f, "%s: element %d of a zero half decodes to %g",
                         moevk_dtype_name(dt), i, (double)y[i]);
        free(q);
        free(y);
        for (int i = 0; i < 512; i++)
            x[i] = ldexpf((float)(i % 7) - 3.0f, -130 - i % 12);
        q = quantize(dt, x, 512);
        y = decode(dt, q, 512);
        cr_assert(mvk_format_validate(dt, q, 512 / moevk_dtype_block_elems(dt), NULL), "%s",
                  moevk_dtype_name(dt));
        for (int i = 0; i < 512; i++)
            cr_assert_leq(fabsf(y[i] - x[i]), 0x1p-126f, "%s: tiny element %d: %a -> %a",
                          moevk_dtype_name(dt), i, (double)x[i], (double)y[i]);
        if (dt == MOEVK_DTYPE_MXFP4)
            for (int b = 0; b < 512 / 32; b++)
                cr_assert_eq(q[b * 17], 0, "mxfp4 block %d below 2^-125: E8M0 %d", b, q[b * 17]);
        free(q);
        free(y);
    }
}

/* Scaling a row by 4 or 1/4 scales what it decodes to by exactly that (every
 * step of the quantisers is a float operation that commutes with a power of
 * two away from overflow and subnormals); a row quantises as its blocks one
 * at a time; a second run gives the same bytes. */
Test(quantize, scaling_and_blocks)
{
    const uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed ^ 0x52);
    enum { N = 2048 };
    static float x[N], xs[N];
    for (size_t fi = 0; fi < NFORMATS; fi++) {
        const moevk_dtype dt = block_formats[fi];
        const mvk_format *f = mvk_format_get(dt);
        fill_row(&r, (int)(fi % 3), x, N, f->block_elems);
        for (int i = 0; i < N; i++)
            x[i] *= 4.0f; /* every f16 scale well above the subnormals, also at x / 4 */
        uint8_t *q = quantize(dt, x, N);
        float *y = decode(dt, q, N);
        for (int k = -1; k <= 1; k += 2) {
            for (int i = 0; i < N; i++)
                xs[i] = ldexpf(x[i], 2 * k);
            uint8_t *qs = quantize(dt, xs, N);
            float *ys = decode(dt, qs, N);
            for (int i = 0; i < N; i++)
                cr_assert_eq(ys[i], ldexpf(y[i], 2 * k), "%s, seed %llu: element %d of x * 2^%d: %a, "
                             "not 2^%d * %a", moevk_dtype_name(dt), (unsigned long long)seed, i,
                             2 * k, (double)ys[i], 2 * k, (double)y[i]);
            free(qs);
            free(ys);
        }
        uint8_t *one = malloc(f->block_bytes);
        for (size_t b = 0; b < N / f->block_elems; b++) {
            cr_assert_eq(mvk_quantize_row(dt, x + b * f->block_elems, f->block_elems, one), 0);
            cr_assert_eq(memcmp(one, q + b * f->block_bytes, f->block_bytes), 0,
                         "%s: block %zu alone differs", moevk_dtype_name(dt), b);
        }
        uint8_t *again = quantize(dt, x, N);
        cr_assert_eq(memcmp(again, q, mvk_format_row_bytes(dt, N)), 0);
        free(again);
        free(one);
        free(q);
        free(y);
    }
}

Test(quantize, plain_types)
{
    const float x[6] = {1.0f, -2.5f, 65519.0f, 1e-8f, INFINITY, 3.14159265f};
    uint8_t b[24];
    cr_assert_eq(mvk_quantize_row(MOEVK_DTYPE_F32, x, 6, b), MOEVK_SUCCESS);
    cr_assert_eq(memcmp(b, x, sizeof x), 0);
    cr_assert_eq(mvk_quantize_row(MOEVK_DTYPE_F16, x, 6, b), MOEVK_SUCCESS);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(b[2 * i] | b[2 * i + 1] << 8, moevk_float_to_half(x[i]));
    cr_assert_eq(mvk_quantize_row(MOEVK_DTYPE_BF16, x, 6, b), MOEVK_SUCCESS);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(b[2 * i] | b[2 * i + 1] << 8, moevk_float_to_bf16(x[i]));
}

/* Refusals leave dst as it was. */
Test(quantize, refusals)
{
    static float x[257];
    static uint8_t dst[512], before[512];
    for (int i = 0; i < 257; i++)
        x[i] = (float)i / 100.0f - 1.0f;
    memset(dst, 0xAB, sizeof dst);
    memcpy(before, dst, sizeof dst);
    for (size_t fi = 0; fi < NFORMATS; fi++) {
        const moevk_dtype dt = block_formats[fi];
        const uint32_t be = moevk_dtype_block_elems(dt);
        const uint64_t bad_n[] = {1, be - 1, be + 1, 2 * be - 16, 100};
        for (size_t k = 0; k < sizeof bad_n / sizeof bad_n[0]; k++) {
            if (bad_n[k] % be == 0)
                continue;
            cr_assert_eq(mvk_quantize_row(dt, x, bad_n[k], dst), MOEVK_ERROR_INVALID_ARGUMENT,
                         "%s: n = %llu accepted", moevk_dtype_name(dt),
                         (unsigned long long)bad_n[k]);
        }
        cr_assert_eq(mvk_quantize_row(dt, NULL, be, dst), MOEVK_ERROR_INVALID_ARGUMENT);
        cr_assert_eq(mvk_quantize_row(dt, x, be, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
        cr_assert_eq(mvk_quantize_row(dt, NULL, 0, NULL), MOEVK_SUCCESS);
        const float specials[3] = {INFINITY, -INFINITY, NAN};
        for (int s = 0; s < 3; s++) {
            float y[256];
            memcpy(y, x, sizeof y);
            y[be - 1] = specials[s];
            cr_assert_eq(mvk_quantize_row(dt, y, be, dst), MOEVK_ERROR_INVALID_ARGUMENT,
                         "%s accepted %g", moevk_dtype_name(dt), (double)specials[s]);
        }
        cr_assert_eq(memcmp(dst, before, sizeof dst), 0, "%s: dst written by a refusal",
                     moevk_dtype_name(dt));
    }
    cr_assert_eq(mvk_quantize_row(MOEVK_DTYPE_I32, x, 4, dst), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(mvk_quantize_row((moevk_dtype)99, x, 4, dst), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(memcmp(dst, before, sizeof dst), 0);
}

/* llama.cpp's rule (src/llama-quant.cpp): 256-element formats fall back to
 * a 32-element one, F16 when that does not divide either; 32-element
 * formats have no fallback (F16). */
Test(quantize, fallback_rule)
{
    static const struct {
        moevk_dtype dt, at_32; /* the fallback for rows of 32k (not 256k) elements */
    } rule[] = {
        {MOEVK_DTYPE_Q2_K, MOEVK_DTYPE_IQ4_NL}, {MOEVK_DTYPE_Q3_K, MOEVK_DTYPE_IQ4_NL},
        {MOEVK_DTYPE_IQ4_XS, MOEVK_DTYPE_IQ4_NL}, {MOEVK_DTYPE_Q4_K, MOEVK_DTYPE_Q5_0},
        {MOEVK_DTYPE_Q5_K, MOEVK_DTYPE_Q5_1}, {MOEVK_DTYPE_Q6_K, MOEVK_DTYPE_Q8_0},
        {MOEVK_DTYPE_Q8_0, MOEVK_DTYPE_Q8_0}, {MOEVK_DTYPE_Q4_0, MOEVK_DTYPE_Q4_0},
        {MOEVK_DTYPE_Q4_1, MOEVK_DTYPE_Q4_1}, {MOEVK_DTYPE_Q5_0, MOEVK_DTYPE_Q5_0},
        {MOEVK_DTYPE_Q5_1, MOEVK_DTYPE_Q5_1}, {MOEVK_DTYPE_IQ4_NL, MOEVK_DTYPE_IQ4_NL},
        {MOEVK_DTYPE_MXFP4, MOEVK_DTYPE_MXFP4},
    };
    for (size_t i = 0; i < sizeof rule / sizeof rule[0]; i++) {
        const moevk_dtype dt = rule[i].dt;
        const char *name = moevk_dtype_name(dt);
        cr_assert_eq(mvk_quantize_fallback(dt, 4096), dt, "%s at 4096", name);
        cr_assert_eq(mvk_quantize_fallback(dt, 14336), dt, "%s at 14336", name);
        cr_assert_eq(mvk_quantize_fallback(dt, 0), dt, "%s at 0", name);
        cr_assert_eq(mvk_quantize_fallback(dt, 2880), rule[i].at_32, "%s at 2880", name);
        cr_assert_eq(mvk_quantize_fallback(dt, 32), rule[i].at_32, "%s at 32", name);
        cr_assert_eq(mvk_quantize_fallback(dt, 100), MOEVK_DTYPE_F16, "%s at 100", name);
        cr_assert_eq(mvk_quantize_fallback(dt, 4097), MOEVK_DTYPE_F16, "%s at 4097", name);
        /* whatever it returns fits the row */
        static const uint64_t rows[] = {1, 31, 32, 96, 255, 256, 288, 4128, 5000};
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
            const moevk_dtype fb = mvk_quantize_fallback(dt, rows[k]);
            cr_assert_eq(rows[k] % moevk_dtype_block_elems(fb), 0, "%s at %llu: %s", name,
                         (unsigned long long)rows[k], moevk_dtype_name(fb));
        }
    }
    /* plain and unknown dtypes are returned as they are */
    cr_assert_eq(mvk_quantize_fallback(MOEVK_DTYPE_F32, 7), MOEVK_DTYPE_F32);
    cr_assert_eq(mvk_quantize_fallback(MOEVK_DTYPE_BF16, 7), MOEVK_DTYPE_BF16);
    cr_assert_eq(mvk_quantize_fallback(MOEVK_DTYPE_F16, 7), MOEVK_DTYPE_F16);
    cr_assert_eq(mvk_quantize_fallback(MOEVK_DTYPE_I32, 7), MOEVK_DTYPE_I32);
    cr_assert_eq(mvk_quantize_fallback((moevk_dtype)99, 7), (moevk_dtype)99);
}
