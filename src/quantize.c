/*
 * The quantisers of quantize.h.
 *
 * Every computation is in float, one IEEE operation at a time in the order
 * written (the library builds as ISO C11, where GCC does not contract a * b
 * + c into a fused multiply-add), because that order is what makes the
 * bytes equal those of gguf-py (numpy float32, elementwise) and ggml's C:
 *   - the block scale in f32, stored as f16 rounding to nearest even;
 *   - codes by truncation (Q4_0, Q4_1, Q5_0, Q5_1: v + 8.5 etc.) or by
 *     rounding half away from zero (Q8_0);
 *   - the element of largest magnitude is the first of equals (numpy's
 *     argmax, ggml's strict >), min and max by strict comparison, the
 *     first of equals as in ggml's C (numpy's vectorised min/max may keep
 *     another of a +0/-0 pair: gguf-py's Q4_1/Q5_1 bytes then differ in
 *     the sign of a zero d or m, never in a decoded value);
 *   - MXFP4: the exponent from floorf(log2f(amax)) (glibc's log2f and
 *     numpy's float32 log2 floor alike on every positive float), the code
 *     of least |d * k - x|, the first of equals.
 * The K-quants and IQ4 formats have no gguf-py quantiser; they implement
 * the algorithms of llama.cpp's reference quantisers (ggml-quants.c, the
 * paths without an importance matrix: a scale fit per group by weighted
 * least squares over a few candidate scales, the group scales quantised
 * against a super-block scale, the codes chosen again against the stored
 * scales) with the same float operations in the same order, so that their
 * bytes match ggml's too (tools/quant_error.py --compare measures it).
 */
#include "quantize.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "formats.h"
#include "ref/ref.h"

#define QK_K 256
/* A group whose largest magnitude is below this is quantised as zeros. */
#define GROUP_ZERO 1e-15f

/* ---- small helpers ------------------------------------------------------------- */

static void put_f16(uint8_t *p, float f)
{
    const uint16_t h = moevk_float_to_half(f);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

/* The value of the f16 at p, as a decoder reads it. */
static float get_f16(const uint8_t *p)
{
    return moevk_half_to_float((uint16_t)(p[0] | p[1] << 8));
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Round to the nearest integer, ties to even (ggml's nearest_int). Adding
 * 1.5 * 2^23 puts a float of magnitude below 2^22 where the float spacing
 * is 1, so that the addition itself rounds; the assignments keep each step
 * in float. Out of range (not for finite quantiser inputs): saturated. */
static int round_even(float v)
{
    if (!(v > -4194304.0f && v < 4194304.0f))
        return v > 0.0f ? 4194303 : -4194303;
    float t = v + 12582912.0f;
    t = t - 12582912.0f;
    return (int)t;
}

/* A code by truncation of v (>= 0 when the scale is finite and nonzero),
 * capped at hi, as gguf-py's astype(uint8).clip(0, hi). NaN and infinities
 * (only in a block whose scale is below 2^-126, where 1/d overflows) give 0,
 * as numpy's cast does on x86. */
static int trunc_code(float v, int hi)
{
    if (!(v >= 0.0f && v < 256.0f))
        return 0;
    const int q = (int)v;
    return q < hi ? q : hi;
}

/* The element of largest magnitude (its sign kept), the first of equals. */
static float signed_absmax(const float *x, int n)
{
    int k = 0;
    for (int i = 1; i < n; i++)
        if (fabsf(x[i]) > fabsf(x[k]))
            k = i;
    return x[k];
}

static float absmax(const float *x, int n)
{
    float m = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > m)
            m = fabsf(x[i]);
    return m;
}

static void min_max(const float *x, int n, float *lo, float *hi)
{
    float a = x[0], b = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < a)
            a = x[i];
        if (x[i] > b)
            b = x[i];
    }
    *lo = a;
    *hi = b;
}

/* ---- 32-element blocks ------------------------------------------------------------
 * Nibble order as in the decoders: byte j holds element j (low nibble) and
 * element j + 16 (high nibble). */

static void quant_q8_0(const float *x, uint8_t *b)
{
    const float d = absmax(x, 32) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int j = 0; j < 32; j++) {
        const float v = x[j] * id;
        /* |v| <= 127 up to rounding; NaN (0 * inf) gives 0 as in numpy */
        const int q = fabsf(v) < 127.5f ? (int)roundf(v) : 0;
        b[2 + j] = (uint8_t)(int8_t)q;
    }
}

/* Q4_0 (levels 16, offset 8) and Q5_0 (32, 16): d = max / -offset, where
 * max is the element of largest magnitude, so that max is code 0. */
static void quant_sym(const float *x, uint8_t *b, int levels)
{
    const int half = levels / 2;
    const float d = signed_absmax(x, 32) / (float)-half;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const float bias = (float)half + 0.5f;
    int q[32];
    for (int j = 0; j < 32; j++) {
        const float v = x[j] * id;
        q[j] = trunc_code(v + bias, levels - 1);
    }
    put_f16(b, d);
    uint8_t *qs = b + 2;
    if (levels == 32) {
        uint32_t qh = 0;
        for (int j = 0; j < 32; j++)
            qh |= (uint32_t)(q[j] >> 4) << j;
        for (int k = 0; k < 4; k++)
            b[2 + k] = (uint8_t)(qh >> (8 * k));
        qs = b + 6;
    }
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((q[j] & 0xF) | (q[j + 16] & 0xF) << 4);
}

/* Q4_1 (levels 16) and Q5_1 (32): d = (max - min) / (levels - 1), m = min. */
static void quant_affine(const float *x, uint8_t *b, int levels)
{
    float lo, hi;
    min_max(x, 32, &lo, &hi);
    const float d = (hi - lo) / (float)(levels - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int q[32];
    for (int j = 0; j < 32; j++) {
        const float v = (x[j] - lo) * id;
        q[j] = trunc_code(v + 0.5f, levels - 1);
    }
    put_f16(b, d);
    put_f16(b + 2, lo);
    uint8_t *qs = b + 4;
    if (levels == 32) {
        uint32_t qh = 0;
        for (int j = 0; j < 32; j++)
            qh |= (uint32_t)(q[j] >> 4) << j;
        for (int k = 0; k < 4; k++)
            b[4 + k] = (uint8_t)(qh >> (8 * k));
        qs = b + 8;
    }
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((q[j] & 0xF) | (q[j + 16] & 0xF) << 4);
}

/* E2M1 values, doubled, in code order (as the decoder's table) */
static const int8_t fp4_doubled[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* 2^(e - 128): the E8M0 scale halved, to go with the doubled values */
static float e8m0_half_value(int e)
{
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static void quant_mxfp4(const float *x, uint8_t *b)
{
    const float amax = absmax(x, 32);
    /* the largest magnitude's binary exponent, 2 below, biased by 127; below
     * 2^-125 it would be negative: the smallest scale instead (see quantize.h) */
    int e = 0;
    if (amax > 0.0f) {
        e = (int)floorf(log2f(amax)) - 2 + 127;
        if (e < 0)
            e = 0;
    }
    const float d = e8m0_half_value(e);
    int q[32];
    for (int j = 0; j < 32; j++) {
        int best = 0;
        float best_err = fabsf(d * (float)fp4_doubled[0] - x[j]);
        for (int k = 1; k < 16; k++) {
            const float err = fabsf(d * (float)fp4_doubled[k] - x[j]);
            if (err < best_err) {
                best_err = err;
                best = k;
            }
        }
        q[j] = best;
    }
    b[0] = (uint8_t)e;
    for (int j = 0; j < 16; j++)
        b[1 + j] = (uint8_t)(q[j] | q[j + 16] << 4);
}

/* ---- group fits of the K-quants --------------------------------------------------- */

/* Weighted sums of a symmetric fit x ~ s * l with codes l = round(inv * x)
 * in [-nmax, nmax - 1] and weights x^2. */
static void signed_fit_sums(const float *x, int n, int nmax, float inv, int8_t *l_out,
                            float *sum_xl, float *sum_ll)
{
    float a = 0.0f, c = 0.0f;
    for (int i = 0; i < n; i++) {
        const int l = clampi(round_even(inv * x[i]), -nmax, nmax - 1);
        const float w = x[i] * x[i];
        const float fl = (float)l;
        l_out[i] = (int8_t)l;
        a += w * x[i] * fl;
        c += w * fl * fl;
    }
    *sum_xl = a;
    *sum_ll = c;
}

/* Q6_K's group fit (llama.cpp's make_qx_quants, weights x^2): the scale
 * s of x ~ s * l, l in [-nmax, nmax), by least squares for the codes of
 * the inverse scales -(nmax + t/10) / max, t = 0, -9..9 (max: the element
 * of largest magnitude), keeping the fit of largest sum_xl^2 / sum_ll.
 * codes get l + nmax; an all-zero group gets codes 0 and scale 0. */
static float fit_signed(const float *x, int n, int nmax, int8_t *codes)
{
    const float max = signed_absmax(x, n);
    if (fabsf(max) < GROUP_ZERO) {
        memset(codes, 0, (size_t)n);
        return 0.0f;
    }
    float sxl, sll;
    signed_fit_sums(x, n, nmax, -(float)nmax / max, codes, &sxl, &sll);
    float scale = sll != 0.0f ? sxl / sll : 0.0f;
    float best = scale * sxl;
    int8_t trial[32];
    for (int t = -9; t <= 9; t++) {
        if (t == 0)
            continue;
        const float inv = -((float)nmax + 0.1f * (float)t) / max;
        signed_fit_sums(x, n, nmax, inv, trial, &sxl, &sll);
        if (sll > 0.0f && sxl * sxl > best * sll) {
            memcpy(codes, trial, (size_t)n);
            scale = sxl / sll;
            best = scale * sxl;
        }
    }
    for (int i = 0; i < n; i++)
        codes[i] = (int8_t)(codes[i] + nmax);
    return scale;
}

/* Q3_K's group fit (llama.cpp's make_q3_quants with its refinement): 16
 * values, codes l in [-4, 3] from the inverse scale -4 / max, then up to 5
 * sweeps that move single codes to where the current fit puts them when
 * that raises sum_xl^2 / sum_ll (weights x^2). codes get l + 4; an all-zero
 * group gets codes 0 and scale 0. */
static float fit_q3(const float *x, int8_t *codes)
{
    const int n = 16, nmax = 4;
    const float max = signed_absmax(x, n);
    if (fabsf(max) < GROUP_ZERO) {
        memset(codes, 0, (size_t)n);
        return 0.0f;
    }
    float sxl, sll;
    signed_fit_sums(x, n, nmax, -(float)nmax / max, codes, &sxl, &sll);
    for (int sweep = 0; sweep < 5; sweep++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            const float li = (float)codes[i];
            float sxl_i = sxl - w * x[i] * li;
            if (!(sxl_i > 0.0f))
                continue;
            float sll_i = sll - w * li * li;
            const int l = clampi(round_even(x[i] * sll_i / sxl_i), -nmax, nmax - 1);
            if (l == codes[i])
                continue;
            const float fl = (float)l;
            sxl_i += w * x[i] * fl;
            sll_i += w * fl * fl;
            if (sll_i > 0.0f && sxl_i * sxl_i * sll > sxl * sxl * sll_i) {
                codes[i] = (int8_t)l;
                sxl = sxl_i;
                sll = sll_i;
                changed++;
            }
        }
        if (!changed)
            break;
    }
    for (int i = 0; i < n; i++)
        codes[i] = (int8_t)(codes[i] + nmax);
    return sll > 0.0f ? sxl / sll : 0.0f;
}

/* The fit of Q2_K, Q4_K and Q5_K groups (llama.cpp's make_qkx2_quants):
 * x ~ s * l - m with l in [0, nmax] and m >= 0, minimising the weighted
 * squared (or, mad, absolute) error. Starts from the range [min(x, 0),
 * max(x)], then for the inverse scales (nmax + rmin + rdelta * t) / range,
 * t = 0..nstep, solves the weighted least squares for s and m given the
 * codes (m forced to 0 where it would be negative) and keeps the fit of
 * least error; the range's low end follows the kept fit. Returns s, *m_out
 * = m; codes get l. */
static float fit_offset(const float *x, const float *w, int n, int nmax, float rmin,
                        float rdelta, int nstep, bool mad, uint8_t *codes, float *m_out)
{
    float lo = x[0], hi = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < lo)
            lo = x[i];
        if (x[i] > hi)
            hi = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (lo > 0.0f)
        lo = 0.0f;
    if (hi == lo) {
        memset(codes, 0, (size_t)n);
        *m_out = -lo;
        return 0.0f;
    }
    float inv = (float)nmax / (hi - lo);
    float scale = 1.0f / inv;
    float best_err = 0.0f;
    for (int i = 0; i < n; i++) {
        const int l = clampi(round_even(inv * (x[i] - lo)), 0, nmax);
        codes[i] = (uint8_t)l;
        float diff = scale * (float)l + lo - x[i];
        diff = mad ? fabsf(diff) : diff * diff;
        best_err += w[i] * diff;
    }
    uint8_t trial[32];
    for (int t = 0; t <= nstep; t++) {
        inv = (rmin + rdelta * (float)t + (float)nmax) / (hi - lo);
        float sl = 0.0f, sll = 0.0f, sxl = 0.0f;
        for (int i = 0; i < n; i++) {
            const int l = clampi(round_even(inv * (x[i] - lo)), 0, nmax);
            const float fl = (float)l;
            trial[i] = (uint8_t)l;
            sl += w[i] * fl;
            sll += w[i] * fl * fl;
            sxl += w[i] * fl * x[i];
        }
        const float det = sum_w * sll - sl * sl;
        if (!(det > 0.0f))
            continue;
        float s = (sum_w * sxl - sum_x * sl) / det;
        float m = (sll * sum_x - sl * sxl) / det;
        if (m > 0.0f) {
            m = 0.0f;
            s = sxl / sll;
        }
        float err = 0.0f;
        for (int i = 0; i < n; i++) {
            float diff = s * (float)trial[i] + m - x[i];
            diff = mad ? fabsf(diff) : diff * diff;
            err += w[i] * diff;
        }
        if (err < best_err) {
            memcpy(codes, trial, (size_t)n);
            best_err = err;
            scale = s;
            lo = m;
        }
    }
    *m_out = -lo;
    return scale;
}

/* The 2-bit planes of Q2_K and Q3_K: element e at byte 32 * (e / 128) +
 * e % 32, bits 2 * ((e % 128) / 32). */
static void pack_2bit(const uint8_t *codes, uint8_t *qs)
{
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *c = codes + 128 * h + l;
            qs[32 * h + l] = (uint8_t)(c[0] | c[32] << 2 | c[64] << 4 | c[96] << 6);
        }
}

/* ---- 256-element super-blocks --------------------------------------------------------- */

static void quant_q2_k(const float *x, uint8_t *b)
{
    uint8_t codes[QK_K];
    float scale[16], mins[16], w[16];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++)
            w[l] = fabsf(x[16 * j + l]);
        scale[j] = fit_offset(x + 16 * j, w, 16, 3, -0.5f, 0.1f, 15, true, codes + 16 * j, &mins[j]);
        if (scale[j] > max_scale)
            max_scale = scale[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    uint8_t *sc = b; /* scales[16] (low nibble scale, high nibble min), qs[64], d, dmin */
    memset(sc, 0, 16);
    if (max_scale > 0.0f) {
        const float inv = 15.0f / max_scale;
        for (int j = 0; j < 16; j++)
            sc[j] = (uint8_t)clampi(round_even(inv * scale[j]), 0, 15);
        put_f16(b + 80, max_scale / 15.0f);
    } else {
        put_f16(b + 80, 0.0f);
    }
    if (max_min > 0.0f) {
        const float inv = 15.0f / max_min;
        for (int j = 0; j < 16; j++)
            sc[j] = (uint8_t)(sc[j] | clampi(round_even(inv * mins[j]), 0, 15) << 4);
        put_f16(b + 82, max_min / 15.0f);
    } else {
        put_f16(b + 82, 0.0f);
    }
    /* the codes again, against the scales as stored */
    const float d = get_f16(b + 80), dmin = get_f16(b + 82);
    for (int j = 0; j < 16; j++) {
        const float dj = d * (float)(sc[j] & 0xF);
        if (dj == 0.0f)
            continue;
        const float mj = dmin * (float)(sc[j] >> 4);
        for (int l = 0; l < 16; l++)
            codes[16 * j + l] = (uint8_t)clampi(round_even((x[16 * j + l] + mj) / dj), 0, 3);
    }
    pack_2bit(codes, b + 16);
}

static void quant_q3_k(const float *x, uint8_t *b)
{
    int8_t codes[QK_K];
    float scale[16];
    float max_scale = 0.0f, amax = 0.0f;
    for (int j = 0; j < 16; j++) {
        scale[j] = fit_q3(x + 16 * j, codes + 16 * j);
        if (fabsf(scale[j]) > amax) {
            amax = fabsf(scale[j]);
            max_scale = scale[j];
        }
    }
    memset(b, 0, 110); /* hmask[32], qs[64], scales[12], d */
    uint8_t *hmask = b, *sc = b + 96;
    if (max_scale != 0.0f) {
        /* 6-bit group scales, offset 32: low nibbles in bytes 0..7 (groups
         * 8..15 in the high halves), the top two bits in bytes 8..11 */
        const float inv = -32.0f / max_scale;
        for (int j = 0; j < 16; j++) {
            const int l = clampi(round_even(inv * scale[j]), -32, 31) + 32;
            if (j < 8)
                sc[j] = (uint8_t)(l & 0xF);
            else
                sc[j - 8] = (uint8_t)(sc[j - 8] | (l & 0xF) << 4);
            sc[8 + j % 4] = (uint8_t)(sc[8 + j % 4] | (l >> 4) << (2 * (j / 4)));
        }
        put_f16(b + 108, 1.0f / inv);
    } else {
        put_f16(b + 108, 0.0f);
    }
    const float d = get_f16(b + 108);
    for (int j = 0; j < 16; j++) {
        const int low = (j < 8 ? sc[j] : sc[j - 8] >> 4) & 0xF;
        const int high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
        const float dj = d * (float)((low | high << 4) - 32);
        if (dj == 0.0f)
            continue;
        for (int l = 0; l < 16; l++)
            codes[16 * j + l] = (int8_t)(clampi(round_even(x[16 * j + l] / dj), -4, 3) + 4);
    }
    /* bit 2 of a code: hmask byte e % 32, bit e / 32 */
    uint8_t low2[QK_K];
    for (int e = 0; e < QK_K; e++) {
        int c = codes[e];
        if (c > 3) {
            hmask[e % 32] = (uint8_t)(hmask[e % 32] | 1u << (e / 32));
            c -= 4;
        }
        low2[e] = (uint8_t)c;
    }
    pack_2bit(low2, b + 32);
}

/* The 6-bit scale and min of group j of Q4_K/Q5_K, packed as the decoder
 * reads them: groups 0..3 in the low 6 bits of bytes j (scale) and j + 4
 * (min); groups 4..7 as nibbles of byte j + 4, their top two bits in the
 * high bits of bytes j - 4 (scale) and j (min). */
static void pack_scale_min(uint8_t *s, int j, int ls, int lm)
{
    if (j < 4) {
        s[j] = (uint8_t)(s[j] | ls);
        s[j + 4] = (uint8_t)(s[j + 4] | lm);
    } else {
        s[j + 4] = (uint8_t)((ls & 0xF) | (lm & 0xF) << 4);
        s[j - 4] = (uint8_t)(s[j - 4] | (ls >> 4) << 6);
        s[j] = (uint8_t)(s[j] | (lm >> 4) << 6);
    }
}

static void unpack_scale_min(const uint8_t *s, int j, int *ls, int *lm)
{
    if (j < 4) {
        *ls = s[j] & 63;
        *lm = s[j + 4] & 63;
    } else {
        *ls = (s[j + 4] & 0xF) | (s[j - 4] >> 6) << 4;
        *lm = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): eight groups of 32, x ~ d * sc * l -
 * dmin * m with 6-bit sc and m; group weights mean(x^2)^(1/2) + |x|. */
static void quant_q45_k(const float *x, uint8_t *b, int nmax)
{
    uint8_t codes[QK_K];
    float scale[8], mins[8], w[32];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; j++) {
        const float *xg = x + 32 * j;
        float sum_x2 = 0.0f;
        for (int l = 0; l < 32; l++)
            sum_x2 += xg[l] * xg[l];
        const float rms = sqrtf(sum_x2 / 32.0f);
        for (int l = 0; l < 32; l++)
            w[l] = rms + fabsf(xg[l]);
        if (nmax == 15)
            scale[j] = fit_offset(xg, w, 32, 15, -1.0f, 0.1f, 20, false, codes + 32 * j, &mins[j]);
        else
            scale[j] = fit_offset(xg, w, 32, 31, -0.5f, 0.1f, 15, false, codes + 32 * j, &mins[j]);
        if (scale[j] > max_scale)
            max_scale = scale[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    uint8_t *sc = b + 4; /* d, dmin, scales[12], (Q5_K: qh[32]), qs[128] */
    memset(sc, 0, 12);
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < 8; j++)
        pack_scale_min(sc, j, clampi(round_even(inv_scale * scale[j]), 0, 63),
                       clampi(round_even(inv_min * mins[j]), 0, 63));
    put_f16(b, max_scale / 63.0f);
    put_f16(b + 2, max_min / 63.0f);
    const float d = get_f16(b), dmin = get_f16(b + 2);
    for (int j = 0; j < 8; j++) {
        int ls, lm;
        unpack_scale_min(sc, j, &ls, &lm);
        const float dj = d * (float)ls;
        if (dj == 0.0f)
            continue;
        const float mj = dmin * (float)lm;
        for (int l = 0; l < 32; l++)
            codes[32 * j + l] = (uint8_t)clampi(round_even((x[32 * j + l] + mj) / dj), 0, nmax);
    }
    /* group 2g in the low nibbles, 2g + 1 in the high nibbles of qs[32g..];
     * Q5_K: bit 4 of group j's codes in bit j of qh[l] */
    uint8_t *qh = b + 16, *qs = nmax == 15 ? b + 16 : b + 48;
    if (nmax == 31)
        memset(qh, 0, 32);
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            int c0 = codes[64 * g + l], c1 = codes[64 * g + 32 + l];
            if (nmax == 31) {
                qh[l] = (uint8_t)(qh[l] | (c0 >> 4) << (2 * g) | (c1 >> 4) << (2 * g + 1));
                c0 &= 0xF;
                c1 &= 0xF;
            }
            qs[32 * g + l] = (uint8_t)(c0 | c1 << 4);
        }
}

static void quant_q6_k(const float *x, uint8_t *b)
{
    int8_t codes[QK_K];
    float scale[16];
    float max_scale = 0.0f, amax = 0.0f;
    for (int j = 0; j < 16; j++) {
        scale[j] = fit_signed(x + 16 * j, 16, 32, codes + 16 * j);
        if (fabsf(scale[j]) > amax) {
            amax = fabsf(scale[j]);
            max_scale = scale[j];
        }
    }
    memset(b, 0, 210); /* ql[128], qh[64], scales[16] (int8), d */
    if (amax < GROUP_ZERO)
        return;
    const float inv = -128.0f / max_scale;
    put_f16(b + 208, 1.0f / inv);
    int8_t *sc = (int8_t *)(b + 192);
    for (int j = 0; j < 16; j++)
        sc[j] = (int8_t)clampi(round_even(inv * scale[j]), -128, 127);
    const float d = get_f16(b + 208);
    for (int j = 0; j < 16; j++) {
        const float dj = d * (float)sc[j];
        if (dj == 0.0f)
            continue;
        for (int l = 0; l < 16; l++)
            codes[16 * j + l] = (int8_t)(clampi(round_even(x[16 * j + l] / dj), -32, 31) + 32);
    }
    /* element e (h = e / 128, g = (e % 128) / 32, l = e % 32): low nibble in
     * ql[64h + 32(g & 1) + l] (bits 4 * (g / 2)), top two bits in qh[32h + l]
     * (bits 2g) */
    uint8_t *ql = b, *qh = b + 128;
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const int8_t *c = codes + 128 * h + l;
            ql[64 * h + l] = (uint8_t)((c[0] & 0xF) | (c[64] & 0xF) << 4);
            ql[64 * h + 32 + l] = (uint8_t)((c[32] & 0xF) | (c[96] & 0xF) << 4);
            qh[32 * h + l] = (uint8_t)(c[0] >> 4 | (c[32] >> 4) << 2 | (c[64] >> 4) << 4 |
                                       (c[96] >> 4) << 6);
        }
}

/* ---- IQ4_NL and IQ4_XS ------------------------------------------------------------------ */

static const int8_t iq4_grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                    1,    13,   25,  38,  53,  69,  89,  113};

/* The code of the grid value nearest to v (a tie: the larger value). */
static int iq4_code(float v)
{
    if (v <= (float)iq4_grid[0])
        return 0;
    if (v >= (float)iq4_grid[15])
        return 15;
    int lo = 0, hi = 15; /* grid[lo] <= v < grid[hi] */
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (v < (float)iq4_grid[mid])
            hi = mid;
        else
            lo = mid;
    }
    return v - (float)iq4_grid[lo] < (float)iq4_grid[hi] - v ? lo : hi;
}

/* Weighted sums of the fit x ~ s * grid[code] with codes nearest to inv * x
 * and weights x^2. */
static void iq4_sums(const float *x, float inv, float *sum_qx, float *sum_qq)
{
    float a = 0.0f, c = 0.0f;
    for (int j = 0; j < 32; j++) {
        const float q = (float)iq4_grid[iq4_code(inv * x[j])];
        const float w = x[j] * x[j];
        a += w * q * x[j];
        c += w * q * q;
    }
    *sum_qx = a;
    *sum_qq = c;
}

/* The scale of a group of 32 (llama.cpp's IQ4 fit without importance
 * weights, as llama-quantize runs it: 7 tries each way): the least-squares
 * scale for the codes of max / 127, then of the inverse scales (t - 127) /
 * max, t = -7..7, keeping the fit of largest sum_qx^2 / sum_qq. 0 for an
 * all-zero group. */
static float iq4_fit(const float *x)
{
    const float max = signed_absmax(x, 32);
    if (fabsf(max) < GROUP_ZERO)
        return 0.0f;
    const float d0 = -max / (float)iq4_grid[0];
    float sqx, sqq;
    iq4_sums(x, 1.0f / d0, &sqx, &sqq);
    float d = sqq > 0.0f ? sqx / sqq : 0.0f;
    float best = d * sqx;
    for (int t = -7; t <= 7; t++) {
        iq4_sums(x, (float)(t + iq4_grid[0]) / max, &sqx, &sqq);
        if (sqq > 0.0f && sqx * sqx > best * sqq) {
            d = sqx / sqq;
            best = d * sqx;
        }
    }
    return d;
}

static void iq4_pack(const float *x, float inv, uint8_t *qs)
{
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(iq4_code(inv * x[j]) | iq4_code(inv * x[j + 16]) << 4);
}

static void quant_iq4_nl(const float *x, uint8_t *b)
{
    const float d = iq4_fit(x);
    put_f16(b, d);
    /* the codes against the fitted scale (not its f16), as llama.cpp */
    iq4_pack(x, d != 0.0f ? 1.0f / d : 0.0f, b + 2);
}

static void quant_iq4_xs(const float *x, uint8_t *b)
{
    float scale[8];
    float max_scale = 0.0f, amax = 0.0f;
    for (int g = 0; g < 8; g++) {
        scale[g] = iq4_fit(x + 32 * g);
        if (fabsf(scale[g]) > amax) {
            amax = fabsf(scale[g]);
            max_scale = scale[g];
        }
    }
    /* d, scales_h (2 bits a group), scales_l (a nibble a group), qs */
    const float d = -max_scale / 32.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    unsigned sh = 0;
    memset(b + 4, 0, 4);
    for (int g = 0; g < 8; g++) {
        const int l = clampi(round_even(id * scale[g]), -32, 31);
        /* the group's codes against d * l with d as fitted, as llama.cpp */
        const float dl = d * (float)l;
        iq4_pack(x + 32 * g, dl != 0.0f ? 1.0f / dl : 0.0f, b + 8 + 16 * g);
        const int ls = l + 32;
        b[4 + g / 2] = (uint8_t)(b[4 + g / 2] | (ls & 0xF) << (4 * (g % 2)));
        sh |= (unsigned)(ls >> 4) << (2 * g);
    }
    b[2] = (uint8_t)(sh & 0xff);
    b[3] = (uint8_t)(sh >> 8);
}

/* ---- rows ------------------------------------------------------------------------------------ */

static void quant_q4_0(const float *x, uint8_t *b)
{
    quant_sym(x, b, 16);
}

static void quant_q5_0(const float *x, uint8_t *b)
{
    quant_sym(x, b, 32);
}

static void quant_q4_1(const float *x, uint8_t *b)
{
    quant_affine(x, b, 16);
}

static void quant_q5_1(const float *x, uint8_t *b)
{
    quant_affine(x, b, 32);
}

static void quant_q4_k(const float *x, uint8_t *b)
{
    quant_q45_k(x, b, 15);
}

static void quant_q5_k(const float *x, uint8_t *b)
{
    quant_q45_k(x, b, 31);
}

/* The block quantiser of a format (NULL for a plain or unknown one). */
static void (*block_quantiser(moevk_dtype dtype))(const float *, uint8_t *)
{
    switch (dtype) {
    case MOEVK_DTYPE_Q8_0: return quant_q8_0;
    case MOEVK_DTYPE_Q4_0: return quant_q4_0;
    case MOEVK_DTYPE_Q4_1: return quant_q4_1;
    case MOEVK_DTYPE_Q5_0: return quant_q5_0;
    case MOEVK_DTYPE_Q5_1: return quant_q5_1;
    case MOEVK_DTYPE_MXFP4: return quant_mxfp4;
    case MOEVK_DTYPE_Q2_K: return quant_q2_k;
    case MOEVK_DTYPE_Q3_K: return quant_q3_k;
    case MOEVK_DTYPE_Q4_K: return quant_q4_k;
    case MOEVK_DTYPE_Q5_K: return quant_q5_k;
    case MOEVK_DTYPE_Q6_K: return quant_q6_k;
    case MOEVK_DTYPE_IQ4_NL: return quant_iq4_nl;
    case MOEVK_DTYPE_IQ4_XS: return quant_iq4_xs;
    default: return NULL;
    }
}

bool mvk_quantize_supported(moevk_dtype dtype)
{
    const mvk_format *f = mvk_format_get(dtype);
    return f && (f->block_elems == 1 || block_quantiser(dtype) != NULL);
}

moevk_status mvk_quantize_row(moevk_dtype dtype, const float *src, uint64_t n, void *dst)
{
    const mvk_format *f = mvk_format_get(dtype);
    if (!f || !f->decode || n % f->block_elems)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    if (n == 0)
        return MOEVK_SUCCESS;
    if (!src || !dst)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    uint8_t *out = dst;
    if (f->block_elems == 1) {
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            switch (dtype) {
            case MOEVK_DTYPE_F32:
                memcpy(out + 4 * i, src + i, 4);
                continue;
            case MOEVK_DTYPE_F16:
                h = moevk_float_to_half(src[i]);
                break;
            default:
                h = moevk_float_to_bf16(src[i]);
                break;
            }
            out[2 * i] = (uint8_t)(h & 0xff);
            out[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return MOEVK_SUCCESS;
    }
    void (*quant)(const float *, uint8_t *) = block_quantiser(dtype);
    if (!quant)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(src[i]))
            return MOEVK_ERROR_INVALID_ARGUMENT;
    const uint64_t blocks = n / f->block_elems;
    for (uint64_t i = 0; i < blocks; i++)
        quant(src + i * f->block_elems, out + i * f->block_bytes);
    return MOEVK_SUCCESS;
}

moevk_dtype mvk_quantize_fallback(moevk_dtype dtype, uint64_t row_elems)
{
    const mvk_format *f = mvk_format_get(dtype);
    if (!f || f->block_elems == 1 || row_elems % f->block_elems == 0)
        return dtype;
    moevk_dtype next;
    switch (dtype) {
    case MOEVK_DTYPE_Q2_K:
    case MOEVK_DTYPE_Q3_K:
    case MOEVK_DTYPE_IQ4_XS: next = MOEVK_DTYPE_IQ4_NL; break;
    case MOEVK_DTYPE_Q4_K: next = MOEVK_DTYPE_Q5_0; break;
    case MOEVK_DTYPE_Q5_K: next = MOEVK_DTYPE_Q5_1; break;
    case MOEVK_DTYPE_Q6_K: next = MOEVK_DTYPE_Q8_0; break;
    default: return MOEVK_DTYPE_F16;
    }
    return row_elems % moevk_dtype_block_elems(next) == 0 ? next : MOEVK_DTYPE_F16;
}
