/*
 * Tests of the CPU reference itself (src/ref), against expectations derived
 * independently: by hand (in the comments), from exact small-integer
 * arithmetic, or from a second, naive formulation. The reference is the
 * oracle for every GPU test, so it gets no benefit of the doubt.
 *
 * Depends only on src/ref and the types of moevk.h.
 */
#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../src/ref/ref.h" /* relative: builds with -Isrc or -Isrc/ref */

static float f_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* A half's value computed from its fields, independently of the code under
 * test: (-1)^s * 2^(e-15) * (1 + m/1024), or 2^-14 * m/1024 for e == 0. */
static double half_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* ---- number formats ------------------------------------------------------ */

Test(numbers, half_exact_values)
{
    cr_assert_eq(moevk_float_to_half(0.0f), 0x0000);
    cr_assert_eq(moevk_float_to_half(-0.0f), 0x8000);
    cr_assert_eq(moevk_float_to_half(1.0f), 0x3c00);
    cr_assert_eq(moevk_float_to_half(-2.0f), 0xc000);
    cr_assert_eq(moevk_float_to_half(0.5f), 0x3800);
    cr_assert_eq(moevk_float_to_half(65504.0f), 0x7bff);       /* largest half */
    cr_assert_eq(moevk_float_to_half(ldexpf(1, -14)), 0x0400); /* smallest normal */
    cr_assert_eq(moevk_float_to_half(ldexpf(1, -24)), 0x0001); /* smallest subnormal */
    cr_assert_eq(moevk_float_to_half(ldexpf(1023, -24)), 0x03ff);
    cr_assert_eq(moevk_float_to_half(INFINITY), 0x7c00);
    cr_assert_eq(moevk_float_to_half(-INFINITY), 0xfc00);
    cr_assert_eq(moevk_half_to_float(0x3c00), 1.0f);
    cr_assert_eq(moevk_half_to_float(0x0001), ldexpf(1, -24));
    cr_assert_eq(moevk_half_to_float(0x7bff), 65504.0f);
    cr_assert(isinf(moevk_half_to_float(0xfc00)) && moevk_half_to_float(0xfc00) < 0);
    cr_assert(signbit(moevk_half_to_float(0x8000)) && moevk_half_to_float(0x8000) == 0.0f);
}

Test(numbers, half_every_pattern_round_trips)
{
    /* every non-NaN half widens to its exact value and narrows back */
    for (uint32_t h = 0; h <= 0xffff; h++) {
        uint16_t b = (uint16_t)h;
        float f = moevk_half_to_float(b);
        if ((b & 0x7c00) == 0x7c00 && (b & 0x3ff)) {
            cr_assert(isnan(f), "0x%04x should be NaN", h);
            cr_assert(isnan(moevk_half_to_float(moevk_float_to_half(f))));
            continue;
        }
        if ((b & 0x7c00) != 0x7c00)
            cr_assert_eq((double)f, half_value(b), "value of 0x%04x", h);
        cr_assert_eq(moevk_float_to_half(f), b, "round trip of 0x%04x", h);
    }
}

Test(numbers, half_rounds_halfway_to_even)
{
    /* between 1 (0x3c00) and 1 + 2^-10 (0x3c01) the midpoint is 1 + 2^-11 */
    cr_assert_eq(moevk_float_to_half(1.0f + ldexpf(1, -11)), 0x3c00);      /* to even */
    cr_assert_eq(moevk_float_to_half(1.0f + 3 * ldexpf(1, -11)), 0x3c02);  /* to even */
    cr_assert_eq(moevk_float_to_half(1.0f + ldexpf(1, -11) + ldexpf(1, -20)), 0x3c01);
    cr_assert_eq(moevk_float_to_half(1.0f + ldexpf(1, -11) - ldexpf(1, -20)), 0x3c00);
    cr_assert_eq(moevk_float_to_half(-(1.0f + 3 * ldexpf(1, -11))), 0xbc02);
    /* overflow: the midpoint of 65504 and 65536 goes to the even one, inf */
    cr_assert_eq(moevk_float_to_half(65519.0f), 0x7bff);
    cr_assert_eq(moevk_float_to_half(65520.0f), 0x7c00);
    cr_assert_eq(moevk_float_to_half(1e9f), 0x7c00);
    cr_assert_eq(moevk_float_to_half(FLT_MAX), 0x7c00);
    /* carry out of the mantissa: 2047/1024 + 2^-11 rounds up to 2.0 */
    cr_assert_eq(moevk_float_to_half(2.0f - ldexpf(1, -11)), 0x4000);
    /* subnormals: unit 2^-24 */
    cr_assert_eq(moevk_float_to_half(ldexpf(1, -25)), 0x0000);     /* tie -> 0 */
    cr_assert_eq(moevk_float_to_half(ldexpf(3, -25)), 0x0002);     /* tie -> 2 */
    cr_assert_eq(moevk_float_to_half(ldexpf(5, -25)), 0x0002);     /* tie -> 2 */
    cr_assert_eq(moevk_float_to_half(ldexpf(1, -25) + ldexpf(1, -35)), 0x0001);
    cr_assert_eq(moevk_float_to_half(ldexpf(1, -26)), 0x0000);
    cr_assert_eq(moevk_float_to_half(-ldexpf(1, -30)), 0x8000);
    cr_assert_eq(moevk_float_to_half(ldexpf(1, -140)), 0x0000); /* float subnormal */
    /* the largest subnormal plus half a unit rounds up into the normals */
    cr_assert_eq(moevk_float_to_half(ldexpf(2047, -25)), 0x0400);
}

Test(numbers, half_rounding_is_nearest_on_a_sweep)
{
    /* For floats across the whole half range, the result must be a nearest
     * half, ties to the even pattern. Neighbours are judged by their exact
     * values from half_value(), not by the code under test. */
    uint32_t state = 12345;
    for (int i = 0; i < 200000; i++) {
        state = state * 1664525u + 1013904223u;
        /* exponents from 2^-27 to 2^16 */
        uint32_t exp = 100 + (state >> 8) % 44;
        uint32_t u = (exp << 23) | ((state * 2654435761u) & 0x7fffff);
        float f = f_from_bits(u);
        uint16_t h = moevk_float_to_half(f);
        if (f >= 65520.0f) {
            cr_assert_eq(h, 0x7c00, "%a", (double)f);
            continue;
        }
        cr_assert(h < 0x7c00, "%a -> 0x%04x", (double)f, h);
        double err = fabs((double)f - half_value(h));
        if (h > 0) {
            double e_lo = fabs((double)f - half_value((uint16_t)(h - 1)));
            cr_assert(err < e_lo || (err == e_lo && (h & 1) == 0), "%a -> 0x%04x", (double)f, h);
        }
        if (h < 0x7bff) {
            double e_hi = fabs((double)f - half_value((uint16_t)(h + 1)));
            cr_assert(err < e_hi || (err == e_hi && (h & 1) == 0), "%a -> 0x%04x", (double)f, h);
        }
    }
}

Test(numbers, half_nan_stays_nan)
{
    uint16_t h = moevk_float_to_half(NAN);
    cr_assert_eq(h & 0x7c00, 0x7c00);
    cr_assert_neq(h & 0x3ff, 0);
    /* a NaN whose payload lives only in the low bits must not become inf */
    h = moevk_float_to_half(f_from_bits(0x7f800001u));
    cr_assert_eq(h & 0x7c00, 0x7c00);
    cr_assert_neq(h & 0x3ff, 0);
    cr_assert_eq(moevk_float_to_half(f_from_bits(0xff800001u)) & 0x8000, 0x8000);
}

Test(numbers, bf16)
{
    cr_assert_eq(moevk_float_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(moevk_float_to_bf16(-2.0f), 0xc000);
    cr_assert_eq(moevk_bf16_to_float(0x3f80), 1.0f);
    cr_assert_eq(moevk_bf16_to_float(0x4049), 3.140625f);
    /* every non-NaN bf16 round-trips */
    for (uint32_t b = 0; b <= 0xffff; b++) {
        float f = moevk_bf16_to_float((uint16_t)b);
        cr_assert_eq(f_bits(f), b << 16);
        if (!isnan(f))
            cr_assert_eq(moevk_float_to_bf16(f), b, "0x%04x", b);
    }
    /* ties: bf16 keeps 7 mantissa bits; the midpoint of 1 and 1 + 2^-7 */
    cr_assert_eq(moevk_float_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);
    cr_assert_eq(moevk_float_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);
    cr_assert_eq(moevk_float_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)), 0x3f81);
    cr_assert_eq(moevk_float_to_bf16(FLT_MAX), 0x7f80); /* above the last midpoint */
    cr_assert_eq(moevk_float_to_bf16(-INFINITY), 0xff80);
    /* NaN stays NaN, even with payload only in the low 16 bits */
    uint16_t n = moevk_float_to_bf16(f_from_bits(0x7f800001u));
    cr_assert(isnan(moevk_bf16_to_float(n)));
    n = moevk_float_to_bf16(f_from_bits(0xffffffffu));
    cr_assert(isnan(moevk_bf16_to_float(n)));
    cr_assert_eq(n & 0x8000, 0x8000);
}

Test(numbers, load)
{
    const float f32[] = {1.5f, -3.25f};
    const uint16_t f16[] = {0x3c00, 0xc500}; /* 1, -5 */
    const uint16_t b16[] = {0x3f80, 0x4049}; /* 1, 3.140625 */
    cr_assert_eq(moevk_ref_load(f32, MOEVK_DTYPE_F32, 1), -3.25);
    cr_assert_eq(moevk_ref_load(f16, MOEVK_DTYPE_F16, 1), -5.0);
    cr_assert_eq(moevk_ref_load(b16, MOEVK_DTYPE_BF16, 1), 3.140625);
    cr_assert_eq(moevk_ref_load(f16, MOEVK_DTYPE_F16, 0), 1.0);
}

/* ---- router logits and scores ------------------------------------------- */

Test(router, logits_with_bias_and_dtypes)
{
    /* x [2, 3], w [2, 3]: logits = x w^T + b, by hand:
     * t0: [1*1 + 2*0 + 3*(-1), 1*2 + 2*2 + 3*2] + [0.5, -1] = [-1.5, 11]
     * t1: [-1*1 + 0.5*0 + 4*(-1), -1*2 + 0.5*2 + 4*2] + [0.5, -1] = [-4.5, 6] */
    const float x[] = {1, 2, 3, -1, 0.5f, 4};
    const float w[] = {1, 0, -1, 2, 2, 2};
    const float b[] = {0.5f, -1};
    const float expect[] = {-1.5f, 11, -4.5f, 6};
    uint16_t w16[6], wb[6];
    for (int i = 0; i < 6; i++) {
        w16[i] = moevk_float_to_half(w[i]);
        wb[i] = moevk_float_to_bf16(w[i]);
    }
    float l[4];
    moevk_ref_router_logits(x, 2, 3, w, MOEVK_DTYPE_F32, 2, b, l);
    cr_assert_arr_eq(l, expect, sizeof expect);
    memset(l, 0, sizeof l);
    moevk_ref_router_logits(x, 2, 3, w16, MOEVK_DTYPE_F16, 2, b, l);
    cr_assert_arr_eq(l, expect, sizeof expect);
    memset(l, 0, sizeof l);
    moevk_ref_router_logits(x, 2, 3, wb, MOEVK_DTYPE_BF16, 2, b, l);
    cr_assert_arr_eq(l, expect, sizeof expect);
    moevk_ref_router_logits(x, 2, 3, w, MOEVK_DTYPE_F32, 2, NULL, l);
    cr_assert_eq(l[1], 12.0f);
}

Test(router, logits_round_once)
{
    /* 1 + 2^-30 - 1 in double is 2^-30; summing in float would lose it */
    const float x[] = {1, 1, 1};
    const float w[] = {1, ldexpf(1, -30), -1};
    float l;
    moevk_ref_router_logits(x, 1, 3, w, MOEVK_DTYPE_F32, 1, NULL, &l);
    cr_assert_eq(l, ldexpf(1, -30));
}

Test(router, softmax_scores)
{
    /* [0, ln 3] -> [1/4, 3/4] */
    const float l2[] = {0, (float)log(3.0)};
    float s[3];
    moevk_ref_scores(l2, 1, 2, MOEVK_SCORING_SOFTMAX, s);
    cr_assert_float_eq(s[0], 0.25f, 1e-7);
    cr_assert_float_eq(s[1], 0.75f, 1e-7);

    /* row 0 sums to 1 and the max-subtraction keeps a large logit finite;
     * row 1 holds a NaN: the whole row is NaN, row 0 unaffected */
    const float l[] = {-2.0f, 50.0f, 0.0f, 0.0f, NAN, 1.0f};
    float p[6];
    moevk_ref_scores(l, 2, 3, MOEVK_SCORING_SOFTMAX, p);
    cr_assert_float_eq((double)p[0] + p[1] + p[2], 1.0, 1e-6);
    cr_assert_float_eq(p[1], 1.0 / (1.0 + exp(-52.0) + exp(-50.0)), 1e-7);
    cr_assert_float_eq(p[0], exp(-52.0), 1e-30);
    cr_assert(p[0] > 0.0f);
    cr_assert(isnan(p[3]) && isnan(p[4]) && isnan(p[5]));

    /* identical logits: exactly uniform */
    const float u[] = {7, 7, 7, 7};
    float q[4];
    moevk_ref_scores(u, 1, 4, MOEVK_SCORING_SOFTMAX, q);
    for (int e = 0; e < 4; e++)
        cr_assert_eq(q[e], 0.25f);
}

Test(router, sigmoid_scores)
{
    const float l[] = {0, (float)log(3.0), -INFINITY, INFINITY, NAN};
    float s[5];
    moevk_ref_scores(l, 1, 5, MOEVK_SCORING_SIGMOID, s);
    cr_assert_eq(s[0], 0.5f);
    cr_assert_float_eq(s[1], 0.75f, 1e-7);
    cr_assert_eq(s[2], 0.0f);
    cr_assert_eq(s[3], 1.0f);
    cr_assert(isnan(s[4]));
}

/* ---- routing ------------------------------------------------------------- */

static moevk_layer_desc route_desc(moevk_routing routing, uint32_t E, uint32_t k)
{
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.num_experts = E;
    d.top_k = k;
    d.routing = routing;
    return d;
}

Test(route, softmax_topk_ties_and_weights)
{
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 4, 2);
    /* t0: 1 and 2 tie at 3: the lower index first. t1: all equal -> 0, 1.
     * t2: the best is last. */
    const float l[] = {1, 3, 3, 0, 5, 5, 5, 5, -1, -2, 0, 4};
    uint32_t ids[6];
    float w[6];
    uint8_t tie[3];
    cr_assert_eq(moevk_ref_route(&d, 3, l, ids, w, tie), MOEVK_SUCCESS);
    const uint32_t expect[] = {1, 2, 0, 1, 3, 2};
    cr_assert_arr_eq(ids, expect, sizeof expect);
    /* t0: p = e^3 / (2 e^3 + e^1 + e^0) for each of the two */
    double p = exp(3.0) / (2 * exp(3.0) + exp(1.0) + 1.0);
    cr_assert_float_eq(w[0], p, 1e-7);
    cr_assert_float_eq(w[1], p, 1e-7);
    cr_assert_eq(w[2], 0.25f);
    cr_assert_eq(w[3], 0.25f);
    cr_assert_float_eq(w[4], exp(4.0) / (exp(-1.0) + exp(-2.0) + 1 + exp(4.0)), 1e-7);
    cr_assert_float_eq(w[5], 1.0 / (exp(-1.0) + exp(-2.0) + 1 + exp(4.0)), 1e-7);
    /* exact ties are resolved by index, not flagged */
    cr_assert_eq(tie[0], 0);
    cr_assert_eq(tie[1], 0);
    cr_assert_eq(tie[2], 0);

    /* with normalisation the two weights sum to 1: t0 -> 1/2 each;
     * t2 -> e^4 / (e^4 + 1), 1 / (e^4 + 1) */
    d.norm_topk_prob = 1;
    cr_assert_eq(moevk_ref_route(&d, 3, l, ids, w, NULL), MOEVK_SUCCESS);
    cr_assert_float_eq(w[0], 0.5f, 1e-7);
    cr_assert_float_eq(w[1], 0.5f, 1e-7);
    cr_assert_float_eq(w[4], exp(4.0) / (exp(4.0) + 1), 1e-7);
    cr_assert_float_eq(w[5], 1 / (exp(4.0) + 1), 1e-7);
}

Test(route, nan_ranks_last)
{
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_TOPK_SOFTMAX, 4, 2);
    /* t0: NaN at 0 and 2 -> the numbers 1 then 3.
     * t1: NaN vs -inf: -inf is still a number -> 1, 3.
     * t2: all NaN -> by index 0, 1.
     * t3: one number -> it, then the first NaN (index 0). */
    const float l[] = {NAN, 1,         NAN, 0,   NAN, -INFINITY, NAN, -INFINITY,
                       NAN, NAN,       NAN, NAN, NAN, NAN,       NAN, -3};
    uint32_t ids[8];
    float w[8];
    cr_assert_eq(moevk_ref_route(&d, 4, l, ids, w, NULL), MOEVK_SUCCESS);
    const uint32_t expect[] = {1, 3, 1, 3, 0, 1, 3, 0};
    cr_assert_arr_eq(ids, expect, sizeof expect);
    /* softmax([1, 0]) over the two chosen */
    cr_assert_float_eq(w[0], exp(1.0) / (exp(1.0) + 1), 1e-7);
    cr_assert(isnan(w[4]) && isnan(w[5]));
    cr_assert(isnan(w[6]) && isnan(w[7]));
}

/* sparsemixer's non-finite rules (docs/semantics.md), its near-ties at the
 * threshold, and k > 2 (the same iteration continued), on the reference.
 * jitter_eps 0.05: threshold 0.1. */
Test(route, sparsemixer_non_finite_near_ties_and_k3)
{
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SPARSEMIXER, 4, 2);
    d.jitter_eps = 0.05f;
    /* t0: a NaN (ranked last, kept in both sets): both weights NaN.
     * t1: +inf picked first: its weight NaN (inf - inf); slot 1 no longer
     *     sees it: m = 1 keeps 0.99 (gap 0.01), not -5.
     * t2: one finite logit: slot 0 keeps the -inf ones at weight 0 (their
     *     gap inf / inf is NaN), w = 1; slot 1's logits are all -inf: NaN.
     * t3: 0.9f's gap (1 - 0.9f) / 1 is 2.2e-8 above 0.1 (2 x 0.05f): out,
     *     and a near-tie. */
    const float l[] = {NAN, 1,     0.5f, 0,          INFINITY, 1,          0.99f,      -5,
                       1,   -INFINITY, -INFINITY, -INFINITY, 1, 0.9f, -3, -4};
    uint32_t ids[8];
    float w[8];
    uint8_t tie[4];
    cr_assert_eq(moevk_ref_route(&d, 4, l, ids, w, tie), MOEVK_SUCCESS);
    const uint32_t expect[] = {1, 2, 0, 1, 0, 1, 0, 1};
    cr_assert_arr_eq(ids, expect, sizeof expect);
    cr_assert(isnan(w[0]) && isnan(w[1]));
    cr_assert(isnan(w[2]));
    cr_assert_float_eq(w[3], 1.0 / (1.0 + exp(0.99f - 1.0)), 1e-7);
    cr_assert_eq(w[4], 1.0f);
    cr_assert(isnan(w[5]));
    cr_assert_eq(w[6], 1.0f); /* 0.9f left out, by 2.2e-8 */
    cr_assert_eq(w[7], 1.0f);
    cr_assert_eq(tie[0], 0);
    cr_assert_eq(tie[1], 0);
    cr_assert_eq(tie[2], 0);
    cr_assert_eq(tie[3], 1);

    /* k = 3 continues the iteration: slot 2 of [1, 0.95, 0.9, 0.5] takes
     * 0.9 with 0.5 left (gap 0.44: out); slot 1 (m = 0.95) keeps 0.9 (gap
     * 0.053); slot 0 keeps 0.95 (gap 0.05), not 0.9 (as in t3) */
    d = route_desc(MOEVK_ROUTING_SPARSEMIXER, 4, 3);
    d.jitter_eps = 0.05f;
    d.routed_scaling_factor = 2.0f;
    const float l3[] = {1, 0.95f, 0.9f, 0.5f};
    cr_assert_eq(moevk_ref_route(&d, 1, l3, ids, w, NULL), MOEVK_SUCCESS);
    cr_assert_eq(ids[0], 0);
    cr_assert_eq(ids[1], 1);
    cr_assert_eq(ids[2], 2);
    cr_assert_float_eq(w[0], 2.0 / (1.0 + exp(0.95f - 1.0)), 1e-6);
    cr_assert_float_eq(w[1], 2.0 / (1.0 + exp((double)0.9f - 0.95f)), 1e-6);
    cr_assert_float_eq(w[2], 2.0f, 1e-6);
}

Test(route, k_equals_e_gives_every_expert)
{
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 5, 5);
    const float l[] = {0.1f, 0.4f, 0.2f, 0.3f, 0.2f};
    uint32_t ids[5];
    float w[5];
    uint8_t tie = 7;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, &tie), MOEVK_SUCCESS);
    const uint32_t expect[] = {1, 3, 2, 4, 0};
    cr_assert_arr_eq(ids, expect, sizeof expect);
    double sum = 0;
    for (int j = 0; j < 5; j++) {
        sum += w[j];
        if (j)
            cr_assert(w[j] <= w[j - 1]);
    }
    cr_assert_float_eq(sum, 1.0, 1e-6);
    cr_assert_eq(tie, 0); /* no (k+1)-th candidate: never a near-tie */

    /* E = 1, k = 1 */
    d = route_desc(MOEVK_ROUTING_TOPK_SOFTMAX, 1, 1);
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, &tie), MOEVK_SUCCESS);
    cr_assert_eq(ids[0], 0);
    cr_assert_eq(w[0], 1.0f);
}

Test(route, topk_softmax_weights)
{
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_TOPK_SOFTMAX, 4, 2);
    /* top-2: expert 3 (2 + ln 3) then 1 (2); softmax of those = [3/4, 1/4] */
    const float l[] = {1, 2, 0, 2 + (float)log(3.0)};
    uint32_t ids[2];
    float w[2];
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    cr_assert_eq(ids[0], 3);
    cr_assert_eq(ids[1], 1);
    cr_assert_float_eq(w[0], 0.75f, 1e-6);
    cr_assert_float_eq(w[1], 0.25f, 1e-6);
}

Test(route, near_tie_flag)
{
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 3, 1);
    float one_below = nextafterf(1.0f, 0.0f); /* relative gap 6e-8 */
    const float l[] = {
        1.0f, one_below, 0.0f, /* near-tie between 1st and 2nd: flagged */
        1.0f, 1.0f,      0.0f, /* exact tie: resolved by index, not flagged */
        1.0f, 0.99f,     0.0f, /* clear gap */
        1.0f, NAN,       NAN,  /* next is NaN: not finite, not flagged */
        0.0f, 1e-30f,    -1.0f /* 1e-30 vs 0: relative gap 1: not flagged */
    };
    uint32_t ids[5];
    float w[5];
    uint8_t tie[5];
    cr_assert_eq(moevk_ref_route(&d, 5, l, ids, w, tie), MOEVK_SUCCESS);
    cr_assert_eq(tie[0], 1);
    cr_assert_eq(tie[1], 0);
    cr_assert_eq(tie[2], 0);
    cr_assert_eq(tie[3], 0);
    cr_assert_eq(tie[4], 0);
    cr_assert_eq(ids[0], 0);
    cr_assert_eq(ids[4], 1);
}

/* The hand-worked grouped example. E = 8, n_group = 4 (groups of 2),
 * topk_group = 2, correction bias 0.5 on expert 6 only.
 *
 *   expert   0     1     2     3     4     5     6     7
 *   logit    3    -2     1     1     2     0     0     0
 *   s      .9526 .1192 .7311 .7311 .8808  .5    .5    .5
 *   c = s + bias                              1.0
 *   group      g0=1.0718   g1=1.4622   g2=1.3808   g3=1.5
 *
 * Kept groups: g3 (1.5) and g1 (1.4622); g2 and g0 are dropped, so expert 0,
 * the best single score, is out (its partner drags its group down).
 * Candidates: 2 (.7311), 3 (.7311), 6 (c 1.0), 7 (.5).
 * k = 3: 6, then 2 and 3 (equal c: lower index first) -> ids 6, 2, 3.
 * Weights are s without the bias: .5, .7311, .7311; normalised by their sum
 * 1.9622 and scaled by 2.5. */
Test(route, sigmoid_grouped_hand_example)
{
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SIGMOID_GROUPED, 8, 3);
    const float bias[8] = {0, 0, 0, 0, 0, 0, 0.5f, 0};
    const float l[8] = {3, -2, 1, 1, 2, 0, 0, 0};
    d.n_group = 4;
    d.topk_group = 2;
    d.correction_bias = bias;
    uint32_t ids[3];
    float w[3];
    uint8_t tie;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, &tie), MOEVK_SUCCESS);
    const uint32_t expect[] = {6, 2, 3};
    cr_assert_arr_eq(ids, expect, sizeof expect);
    cr_assert_eq(tie, 0);
    double s1 = 1 / (1 + exp(-1.0));
    cr_assert_eq(w[0], 0.5f); /* s, not c */
    cr_assert_float_eq(w[1], s1, 1e-7);
    cr_assert_float_eq(w[2], s1, 1e-7);

    d.norm_topk_prob = 1;
    d.routed_scaling_factor = 2.5f;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, &tie), MOEVK_SUCCESS);
    double sum = 0.5 + 2 * s1;
    cr_assert_float_eq(w[0], 2.5 * 0.5 / sum, 1e-6);
    cr_assert_float_eq(w[1], 2.5 * s1 / sum, 1e-6);
    cr_assert_float_eq((double)w[0] + w[1] + w[2], 2.5, 1e-6);

    /* topk_group = 0 means all groups: then c alone decides: 6 (1.0),
     * 0 (.9526), 4 (.8808) */
    d.topk_group = 0;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, &tie), MOEVK_SUCCESS);
    const uint32_t all[] = {6, 0, 4};
    cr_assert_arr_eq(ids, all, sizeof all);

    /* one group per expert (n_group = 8, topk_group = 2): a group's score is
     * its only c, so the kept groups are experts 6 and 0 */
    d.n_group = 8;
    d.topk_group = 2;
    d.top_k = 2;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, &tie), MOEVK_SUCCESS);
    cr_assert_eq(ids[0], 6);
    cr_assert_eq(ids[1], 0);

    /* without bias and with topk_group = 1 of 4 groups: g1 (1.4622) beats
     * g2 (1.3808) and g0 (1.0718); within g1: 2, 3 */
    d.n_group = 4;
    d.topk_group = 1;
    d.correction_bias = NULL;
    d.routed_scaling_factor = 0; /* means 1 */
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, &tie), MOEVK_SUCCESS);
    cr_assert_eq(ids[0], 2);
    cr_assert_eq(ids[1], 3);
    cr_assert_float_eq(w[0], 0.5f, 1e-7); /* normalised: equal halves */
}

/* select_on_logits: c = l + bias instead of sigmoid(l) + bias or p + bias.
 *
 *   expert   0      1      2      3
 *   logit    1    -0.5    -3     0.5
 *   bias     0     0.9     0      0
 *   s + b  .7311  1.2775 .0474  .6225   -> ids 1, 0
 *   l + b    1     0.4    -3     0.5    -> ids 0, 3
 *
 * The weights stay the mode's: sigmoid(l[ids]) or the softmax over all E. */
Test(route, select_on_logits_hand_example)
{
    const float l[4] = {1.0f, -0.5f, -3.0f, 0.5f};
    const float bias[4] = {0, 0.9f, 0, 0};
    uint32_t ids[2];
    float w[2];
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SIGMOID_GROUPED, 4, 2);
    d.correction_bias = bias;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    const uint32_t on_s[] = {1, 0};
    cr_assert_arr_eq(ids, on_s, sizeof on_s);

    d.select_on_logits = 1;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    const uint32_t on_l[] = {0, 3};
    cr_assert_arr_eq(ids, on_l, sizeof on_l);
    cr_assert_float_eq(w[0], 1 / (1 + exp(-1.0)), 1e-7);
    cr_assert_float_eq(w[1], 1 / (1 + exp(-0.5)), 1e-7);
    d.norm_topk_prob = 1;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    double s0 = 1 / (1 + exp(-1.0)), s3 = 1 / (1 + exp(-0.5));
    cr_assert_float_eq(w[0], s0 / (s0 + s3), 1e-7);
    cr_assert_float_eq(w[1], s3 / (s0 + s3), 1e-7);

    /* softmax_topk: p + b picks 1 first (p_1 + 0.9 beats every p); on the
     * logits 0 and 3, weighted by their probabilities over all four */
    d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 4, 2);
    d.correction_bias = bias;
    cr_assert(moevk_ref_selects_on_probs(&d));
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    cr_assert_eq(ids[0], 1);
    d.select_on_logits = 1;
    cr_assert(!moevk_ref_selects_on_probs(&d));
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    cr_assert_arr_eq(ids, on_l, sizeof on_l);
    double z = exp(1.0) + exp(-0.5) + exp(-3.0) + exp(0.5);
    cr_assert_float_eq(w[0], exp(1.0) / z, 1e-7);
    cr_assert_float_eq(w[1], exp(0.5) / z, 1e-7);

    /* groups of two scored on l + b (top-2 sums 1.4 and -2.5): the first
     * group is kept, so 0 and 1 */
    d = route_desc(MOEVK_ROUTING_SIGMOID_GROUPED, 4, 2);
    d.correction_bias = bias;
    d.select_on_logits = 1;
    d.n_group = 2;
    d.topk_group = 1;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    const uint32_t grouped[] = {0, 1};
    cr_assert_arr_eq(ids, grouped, sizeof grouped);
}

/* score_fn sqrtsoftplus (DeepSeek-V4): s = sqrt(softplus(l)) grows with l
 * where the sigmoid saturates.
 *
 *   expert          0       1      2       3
 *   logit           6       2     -30      0
 *   bias            0      0.5     0       0
 *   sigmoid + b   .9975  1.3808  ~0      .5      -> ids 1, 0
 *   sqrtsp + b   2.4503  1.9584  3.1e-7  .8326   -> ids 0, 1 */
Test(route, sqrtsoftplus_hand_example)
{
    const float l[4] = {6.0f, 2.0f, -30.0f, 0.0f};
    const float bias[4] = {0, 0.5f, 0, 0};
    uint32_t ids[2];
    float w[2];
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SIGMOID_GROUPED, 4, 2);
    d.correction_bias = bias;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    const uint32_t on_sigmoid[] = {1, 0};
    cr_assert_arr_eq(ids, on_sigmoid, sizeof on_sigmoid);

    d.score_fn = MOEVK_SCORE_SQRTSOFTPLUS;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    const uint32_t on_sqrtsp[] = {0, 1};
    cr_assert_arr_eq(ids, on_sqrtsp, sizeof on_sqrtsp);
    const double s0 = sqrt(log1p(exp(6.0))), s1 = sqrt(log1p(exp(2.0)));
    cr_assert_float_eq(w[0], s0, 1e-6);
    cr_assert_float_eq(w[1], s1, 1e-6);
    d.norm_topk_prob = 1;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    cr_assert_float_eq(w[0], s0 / (s0 + s1), 1e-7);
    cr_assert_float_eq(w[1], s1 / (s0 + s1), 1e-7);

    /* the tails: e^(l/2) far below 0, sqrt(l) far above, and the limits */
    cr_assert_float_eq(moevk_ref_score_fn(&d, -30.0) / exp(-15.0), 1.0, 1e-9);
    cr_assert_float_eq(moevk_ref_score_fn(&d, 40.0) / sqrt(40.0), 1.0, 1e-12);
    cr_assert_eq(moevk_ref_score_fn(&d, -INFINITY), 0.0);
    cr_assert(isinf(moevk_ref_score_fn(&d, INFINITY)));
    cr_assert(isnan(moevk_ref_score_fn(&d, NAN)));
}

/* router_softcap c: every use of the logits sees c tanh(l / c) */
Test(route, router_softcap)
{
    const float l[3] = {3.0f, 2.0f, -1.0f};
    const double c[3] = {tanh(3.0), tanh(2.0), tanh(-1.0)}; /* cap 1 */
    uint32_t ids[2];
    float w[2];
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 3, 2);
    d.router_softcap = 1.0f;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    const uint32_t expect[] = {0, 1};
    cr_assert_arr_eq(ids, expect, sizeof expect);
    double z = exp(c[0]) + exp(c[1]) + exp(c[2]);
    cr_assert_float_eq(w[0], exp(c[0]) / z, 1e-7);
    cr_assert_float_eq(w[1], exp(c[1]) / z, 1e-7);

    d.routing = MOEVK_ROUTING_TOPK_SOFTMAX;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    cr_assert_float_eq(w[0], exp(c[0]) / (exp(c[0]) + exp(c[1])), 1e-7);

    d.routing = MOEVK_ROUTING_SIGMOID_GROUPED;
    d.router_softcap = 2.0f;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
    cr_assert_float_eq(w[0], 1 / (1 + exp(-2 * tanh(1.5))), 1e-7);
    cr_assert_float_eq(w[1], 1 / (1 + exp(-2 * tanh(1.0))), 1e-7);

    /* +inf is capped to c: the softmax stays finite (NaN without the cap) */
    const float inf[2] = {INFINITY, 0.0f};
    d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 2, 1);
    cr_assert_eq(moevk_ref_route(&d, 1, inf, ids, w, NULL), MOEVK_SUCCESS);
    cr_assert(isnan(w[0]));
    d.router_softcap = 2.0f;
    cr_assert_eq(moevk_ref_route(&d, 1, inf, ids, w, NULL), MOEVK_SUCCESS);
    cr_assert_eq(ids[0], 0);
    cr_assert_float_eq(w[0], exp(2.0) / (exp(2.0) + 1), 1e-7);
}

Test(route, sigmoid_grouped_group_near_tie)
{
    /* E = 4, groups {0,1} and {2,3}, keep 1, k = 1. Group 0 = {0, 0} scores
     * s(0) + s(0) = 1 exactly. Group 1 = {2, -2 + d}, d one float ulp of 2:
     * s(2) + s(-2) = 1, so group 1 scores 1 + s'(-2) d ~ 1 + 2.5e-8 and wins
     * by a near-tie. Inside group 1 the experts are far apart (.88 vs .12),
     * so the flag comes from the group choice alone. */
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SIGMOID_GROUPED, 4, 1);
    d.n_group = 2;
    d.topk_group = 1;
    const float l[] = {0, 0, 2, nextafterf(-2.0f, 0.0f)};
    uint32_t ids[1];
    float w[1];
    uint8_t tie = 0;
    cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, &tie), MOEVK_SUCCESS);
    cr_assert_eq(ids[0], 2);
    cr_assert_eq(tie, 1);

    /* group 1 = {2, -1}: 1.15, clearly ahead; within group 0 nothing is
     * close either -> not flagged */
    const float l2[] = {0, 0, 2, -1};
    tie = 1;
    cr_assert_eq(moevk_ref_route(&d, 1, l2, ids, w, &tie), MOEVK_SUCCESS);
    cr_assert_eq(ids[0], 2);
    cr_assert_eq(tie, 0);
}

Test(route, ids_never_repeat_and_sorted)
{
    /* a pseudo-random sweep over shapes: ids distinct, in range, sorted by
     * decreasing logit (ties by index) */
    uint32_t state = 99;
    float l[37];
    uint32_t ids[37];
    float w[37];
    for (uint32_t E = 1; E <= 37; E += 3) {
        for (uint32_t k = 1; k <= E; k += 2) {
            for (uint32_t e = 0; e < E; e++) {
                state = state * 1664525u + 1013904223u;
                l[e] = (float)((state >> 20) % 7); /* many ties */
            }
            moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, E, k);
            cr_assert_eq(moevk_ref_route(&d, 1, l, ids, w, NULL), MOEVK_SUCCESS);
            for (uint32_t j = 0; j < k; j++) {
                cr_assert(ids[j] < E);
                for (uint32_t i = 0; i < j; i++)
                    cr_assert_neq(ids[i], ids[j]);
                if (j)
                    cr_assert(l[ids[j - 1]] > l[ids[j]] ||
                              (l[ids[j - 1]] == l[ids[j]] && ids[j - 1] < ids[j]));
            }
            /* nothing left out ranks above the last chosen */
            for (uint32_t e = 0; e < E; e++) {
                int chosen = 0;
                for (uint32_t j = 0; j < k; j++)
                    chosen |= ids[j] == e;
                if (!chosen)
                    cr_assert(l[e] < l[ids[k - 1]] ||
                              (l[e] == l[ids[k - 1]] && e > ids[k - 1]));
            }
        }
    }
}

/* ---- capacity and permutation ------------------------------------------- */

Test(permute, capacity)
{
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 2, 1);
    cr_assert_eq(moevk_ref_capacity(&d, 4), UINT32_MAX); /* dropless */
    d.capacity_factor = 1.0f;
    cr_assert_eq(moevk_ref_capacity(&d, 4), 2);  /* 1 * 4 * 1 / 2 */
    cr_assert_eq(moevk_ref_capacity(&d, 5), 3);  /* ceil(2.5) */
    cr_assert_eq(moevk_ref_capacity(&d, 0), 0);
    d.num_experts = 4;
    d.top_k = 2;
    d.capacity_factor = 1.25f;
    cr_assert_eq(moevk_ref_capacity(&d, 3), 2); /* ceil(1.875) */
    cr_assert_eq(moevk_ref_capacity(&d, 8), 5); /* exactly 5: no extra ceil */
}

Test(permute, capacity_drops_the_expected_assignment)
{
    /* T = 4, E = 2, k = 1, cf 1 -> C = 2. Tokens 0, 1, 2 pick expert 0,
     * token 3 picks 1: token 2 is expert 0's third and is dropped. */
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 2, 1);
    d.capacity_factor = 1.0f;
    const uint32_t ids[] = {0, 0, 0, 1};
    uint32_t counts[2], offsets[3];
    int32_t row[4];
    uint64_t dropped = moevk_ref_permute(&d, 4, ids, counts, offsets, row);
    cr_assert_eq(dropped, 1);
    cr_assert_eq(counts[0], 2);
    cr_assert_eq(counts[1], 1);
    const uint32_t eo[] = {0, 2, 3};
    cr_assert_arr_eq(offsets, eo, sizeof eo);
    const int32_t er[] = {0, 1, -1, 2};
    cr_assert_arr_eq(row, er, sizeof er);
}

Test(permute, priority_and_rows_follow_admission_order)
{
    /* Dropless, T = 2, k = 2, E = 2: t0 -> [1, 0], t1 -> [0, 1].
     * Admission order: (t0, s0) -> e1, (t1, s0) -> e0, (t0, s1) -> e0,
     * (t1, s1) -> e1. Rows of an expert follow that order (slot 0 by token,
     * then slot 1 by token), not token-then-slot: expert 0 gets
     * (t1, s0) -> row 0 and (t0, s1) -> row 1; expert 1 (offset 2) gets
     * (t0, s0) -> 2 and (t1, s1) -> 3. */
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 2, 2);
    const uint32_t ids[] = {1, 0, 0, 1};
    uint32_t counts[2], offsets[3];
    int32_t row[4];
    cr_assert_eq(moevk_ref_permute(&d, 2, ids, counts, offsets, row), 0);
    const int32_t er[] = {2, 1, 0, 3};
    cr_assert_arr_eq(row, er, sizeof er);

    /* T = 3, k = 2, E = 2: t0 [0, 1], t1 [1, 0], t2 [0, 1].
     * Slot 0: t0 -> e0, t1 -> e1, t2 -> e0; slot 1: t0 -> e1, t1 -> e0,
     * t2 -> e1. Expert 0 rows: (t0,s0) 0, (t2,s0) 1, (t1,s1) 2; expert 1
     * (offset 3): (t1,s0) 3, (t0,s1) 4, (t2,s1) 5. Token-then-slot order
     * would have given expert 0: t0, t1, t2 -> 0, 1, 2 instead. */
    const uint32_t ids3[] = {0, 1, 1, 0, 0, 1};
    int32_t row3[6];
    cr_assert_eq(moevk_ref_permute(&d, 3, ids3, counts, offsets, row3), 0);
    const int32_t er3[] = {0, 4, 3, 2, 1, 5};
    cr_assert_arr_eq(row3, er3, sizeof er3);
    cr_assert_eq(counts[0], 3);
    cr_assert_eq(counts[1], 3);
    const uint32_t eo3[] = {0, 3, 6};
    cr_assert_arr_eq(offsets, eo3, sizeof eo3);

    /* With capacity the slot priority decides who stays: T = 4, k = 2,
     * E = 2, cf 0.5 -> C = 2. ids t0 [1,0], t1 [0,1], t2 [0,1], t3 [1,0].
     * Slot 0 fills both experts (e0: t1, t2; e1: t0, t3), so every slot-1
     * assignment is dropped, although t0's slot 1 comes first by token. */
    d.capacity_factor = 0.5f;
    const uint32_t ids2[] = {1, 0, 0, 1, 0, 1, 1, 0};
    int32_t row2[8];
    cr_assert_eq(moevk_ref_permute(&d, 4, ids2, counts, offsets, row2), 4);
    const int32_t er2[] = {2, -1, 0, -1, 1, -1, 3, -1};
    cr_assert_arr_eq(row2, er2, sizeof er2);
    cr_assert_eq(counts[0], 2);
    cr_assert_eq(counts[1], 2);
    cr_assert_eq(offsets[2], 4);

    /* capacity 3 of 4 per expert (cf 0.75, T = 4, k = 2, E = 2 -> C = 3),
     * same ids: slot 0 admits e0: t1, t2 (rows 0, 1); e1: t0, t3 (rows
     * 3, 4). Slot 1 by token: t0 -> e0 admitted (row 2, e0 full), t1 -> e1
     * admitted (row 5, e1 full), t2 -> e1 dropped, t3 -> e0 dropped. */
    d.capacity_factor = 0.75f;
    cr_assert_eq(moevk_ref_permute(&d, 4, ids2, counts, offsets, row2), 2);
    const int32_t er4[] = {3, 2, 0, 5, 1, -1, 4, -1};
    cr_assert_arr_eq(row2, er4, sizeof er4);
}

/* Rows are a bijection onto 0..admitted-1, each expert's rows are its
 * segment, and within a segment the admission order (slot, then token) is
 * increasing; checked on pseudo-random routings with and without capacity. */
Test(permute, rows_are_admission_ordered_segments)
{
    uint32_t state = 7;
    enum { MAXT = 40, MAXK = 4, MAXE = 9 };
    for (int iter = 0; iter < 200; iter++) {
        state = state * 1664525u + 1013904223u;
        uint32_t T = 1 + (state >> 8) % MAXT;
        uint32_t E = 1 + (state >> 16) % MAXE;
        uint32_t k = 1 + (state >> 24) % (E < MAXK ? E : MAXK);
        moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, E, k);
        d.capacity_factor = iter % 2 ? 0.0f : 0.25f * (float)(1 + iter % 7);
        uint32_t ids[MAXT * MAXK];
        for (uint32_t a = 0; a < T * k; a++) {
            state = state * 1664525u + 1013904223u;
            ids[a] = (state >> 12) % E; /* repeats within a token are fine here */
        }
        uint32_t counts[MAXE], offsets[MAXE + 1];
        int32_t row[MAXT * MAXK];
        uint64_t dropped = moevk_ref_permute(&d, T, ids, counts, offsets, row);
        uint32_t cap = moevk_ref_capacity(&d, T);
        uint32_t admitted = 0;
        uint8_t seen[MAXT * MAXK] = {0};
        for (uint32_t e = 0; e < E; e++) {
            cr_assert_leq(counts[e], cap);
            admitted += counts[e];
        }
        cr_assert_eq(dropped + admitted, (uint64_t)T * k);
        int32_t last[MAXE];
        for (uint32_t e = 0; e < E; e++)
            last[e] = -1;
        for (uint32_t j = 0; j < k; j++) {
            for (uint32_t t = 0; t < T; t++) {
                int32_t r = row[t * k + j];
                if (r < 0)
                    continue;
                uint32_t e = ids[t * k + j];
                cr_assert((uint32_t)r >= offsets[e] && (uint32_t)r < offsets[e + 1]);
                cr_assert_gt(r, last[e], "iter %d: rows of expert %u not in admission order",
                             iter, e);
                last[e] = r;
                cr_assert(!seen[r]);
                seen[r] = 1;
            }
        }
    }
}

Test(permute, experts_with_no_token)
{
    /* E = 5, only experts 1 and 3 are used */
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 5, 1);
    const uint32_t ids[] = {3, 1, 3};
    uint32_t counts[5], offsets[6];
    int32_t row[3];
    cr_assert_eq(moevk_ref_permute(&d, 3, ids, counts, offsets, row), 0);
    const uint32_t ec[] = {0, 1, 0, 2, 0};
    const uint32_t eo[] = {0, 0, 1, 1, 3, 3};
    const int32_t er[] = {1, 0, 2};
    cr_assert_arr_eq(counts, ec, sizeof ec);
    cr_assert_arr_eq(offsets, eo, sizeof eo);
    cr_assert_arr_eq(row, er, sizeof er);
}

/* ---- experts -------------------------------------------------------------- */

/* Integer test weights: E = 2 experts, H = 3, F = 2. */
enum { TH = 3, TF = 2, TE = 2 };
static const float t_gate[TE * TF * TH] = {1, 0, -1, 2, 1, 0, /**/ 0, 1, 1, -1, -1, 2};
static const float t_up[TE * TF * TH] = {1, 2, 3, -1, 0, 1, /**/ 2, -2, 1, 0, 3, -1};
static const float t_down[TE * TH * TF] = {1, 1, 0, 2, -1, 3, /**/ 2, 0, 1, -1, 0, 1};
static const float t_upb[TE * TF] = {1, -2, 0, 3};
static const float t_downb[TE * TH] = {0, 0, 0, 1, -1, 2};

/* A second, naive FFN for the non-gated RELU case, directly from the
 * layouts documented in moevk.h. */
static void naive_relu_ffn(uint32_t e, const float *x, double *out)
{
    double h[TF];
    for (int f = 0; f < TF; f++) {
        double u = t_upb[e * TF + f];
        for (int c = 0; c < TH; c++)
            u += x[c] * t_up[e * TF * TH + f * TH + c];
        h[f] = u > 0 ? u : 0;
    }
    for (int c = 0; c < TH; c++) {
        out[c] = t_downb[e * TH + c];
        for (int f = 0; f < TF; f++)
            out[c] += h[f] * t_down[e * TH * TF + c * TF + f];
    }
}

Test(experts, relu_integer_exact)
{
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.hidden = TH;
    d.ffn = TF;
    d.num_experts = TE;
    d.activation = MOEVK_ACT_RELU;
    moevk_expert_weights w = {0};
    w.up = t_up;
    w.down = t_down;
    w.up_bias = t_upb;
    w.down_bias = t_downb;
    const float x[2 * TH] = {1, -2, 3, 0, 1, 1};
    float out[2 * TH];
    /* by hand, expert 1, row 0: u = [2+4+3+0, 0-6-3+3] = [9, -6] -> h [9, 0];
     * down rows [2, 0], [1, -1], [0, 1]: out = [18, 9, 0] + [1, -1, 2]
     * = [19, 8, 2] */
    cr_assert_eq(moevk_ref_expert_ffn(&d, &w, TF, 1, x, 2, out), MOEVK_SUCCESS);
    cr_assert_eq(out[0], 19.0f);
    cr_assert_eq(out[1], 8.0f);
    cr_assert_eq(out[2], 2.0f);
    for (uint32_t e = 0; e < TE; e++) {
        cr_assert_eq(moevk_ref_expert_ffn(&d, &w, TF, e, x, 2, out), MOEVK_SUCCESS);
        for (int r = 0; r < 2; r++) {
            double ex[TH];
            naive_relu_ffn(e, x + r * TH, ex);
            for (int c = 0; c < TH; c++)
                cr_assert_eq(out[r * TH + c], (float)ex[c], "e%u r%d c%d", e, r, c);
        }
    }

    /* f16 and bf16 hold these integers exactly, and per-expert pointers
     * address the same matrices as the contiguous arrays: same results */
    uint16_t up16[TE * TF * TH], down16[TE * TH * TF];
    uint16_t upb16[TE * TF * TH], downb16[TE * TH * TF];
    for (int i = 0; i < TE * TF * TH; i++) {
        up16[i] = moevk_float_to_half(t_up[i]);
        upb16[i] = moevk_float_to_bf16(t_up[i]);
        down16[i] = moevk_float_to_half(t_down[i]);
        downb16[i] = moevk_float_to_bf16(t_down[i]);
    }
    float ref[2 * TH], out2[2 * TH];
    cr_assert_eq(moevk_ref_expert_ffn(&d, &w, TF, 1, x, 2, ref), MOEVK_SUCCESS);

    const void *ups[TE] = {up16, up16 + TF * TH};
    const void *downs[TE] = {down16, down16 + TH * TF};
    moevk_expert_weights w16 = {0};
    w16.up_experts = ups;
    w16.down_experts = downs;
    w16.up_bias = t_upb;
    w16.down_bias = t_downb;
    d.weight_dtype = MOEVK_DTYPE_F16;
    memset(out2, 0, sizeof out2);
    cr_assert_eq(moevk_ref_expert_ffn(&d, &w16, TF, 1, x, 2, out2), MOEVK_SUCCESS);
    cr_assert_arr_eq(ref, out2, sizeof ref);

    moevk_expert_weights wb = {0};
    wb.up = upb16;
    wb.down = downb16;
    wb.up_bias = t_upb;
    wb.down_bias = t_downb;
    d.weight_dtype = MOEVK_DTYPE_BF16;
    memset(out2, 0, sizeof out2);
    cr_assert_eq(moevk_ref_expert_ffn(&d, &wb, TF, 1, x, 2, out2), MOEVK_SUCCESS);
    cr_assert_arr_eq(ref, out2, sizeof ref);
}

Test(experts, gated_activations_match_formulas)
{
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.hidden = TH;
    d.ffn = TF;
    d.num_experts = TE;
    moevk_expert_weights w = {0};
    w.gate = t_gate;
    w.up = t_up;
    w.down = t_down;
    const float x[TH] = {0.5f, -0.25f, 1.0f};
    const moevk_activation acts[] = {MOEVK_ACT_SWIGLU, MOEVK_ACT_GEGLU, MOEVK_ACT_GEGLU_TANH,
                                     MOEVK_ACT_SWIGLU_OAI, MOEVK_ACT_GELU};
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        d.activation = acts[a];
        for (uint32_t e = 0; e < TE; e++) {
            double h[TF];
            for (int f = 0; f < TF; f++) {
                double g = 0, u = 0;
                for (int c = 0; c < TH; c++) {
                    g += x[c] * t_gate[e * TF * TH + f * TH + c];
                    u += x[c] * t_up[e * TF * TH + f * TH + c];
                }
                switch (acts[a]) {
                case MOEVK_ACT_SWIGLU:
                    h[f] = g / (1 + exp(-g)) * u;
                    break;
                case MOEVK_ACT_GEGLU:
                    h[f] = 0.5 * g * (1 + erf(g / sqrt(2.0))) * u;
                    break;
                case MOEVK_ACT_GEGLU_TANH:
                    h[f] = 0.5 * g * (1 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g))) * u;
                    break;
                case MOEVK_ACT_SWIGLU_OAI: /* far inside the clamps here */
                    h[f] = (u + 1) * g / (1 + exp(-1.702 * g));
                    break;
                default: /* GELU: non-gated, on u */
                    h[f] = 0.5 * u * (1 + erf(u / sqrt(2.0)));
                    break;
                }
            }
            float out[TH];
            cr_assert_eq(moevk_ref_expert_ffn(&d, &w, TF, e, x, 1, out), MOEVK_SUCCESS);
            for (int c = 0; c < TH; c++) {
                double ex = h[0] * t_down[e * TH * TF + c * TF] +
                            h[1] * t_down[e * TH * TF + c * TF + 1];
                cr_assert_float_eq(out[c], ex, 1e-6 * (1 + fabs(ex)), "act %d e%u c%d",
                                   (int)acts[a], e, c);
            }
        }
    }
}

Test(experts, swiglu_oai_clamps)
{
    /* H = 1, F = 1, down = 1: out = h. With gate weight 10 and up weight 20
     * on x = 1: g = min(10, 7) = 7, u = clamp(20) = 7, h = 8 * 7 * sig(1.702*7).
     * With x = -1: g = -10 (no lower clamp), u = -7 -> h = -6 * -10 * sig(-17.02). */
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.hidden = 1;
    d.ffn = 1;
    d.num_experts = 1;
    d.activation = MOEVK_ACT_SWIGLU_OAI;
    const float gw = 10, uw = 20, dw = 1;
    moevk_expert_weights w = {0};
    w.gate = &gw;
    w.up = &uw;
    w.down = &dw;
    const float x[2] = {1, -1};
    float out[2];
    cr_assert_eq(moevk_ref_expert_ffn(&d, &w, 1, 0, x, 2, out), MOEVK_SUCCESS);
    cr_assert_float_eq(out[0], 8.0 * 7.0 / (1 + exp(-1.702 * 7)), 1e-5);
    cr_assert_float_eq(out[1], 60.0 / (1 + exp(17.02)), 1e-9);
    /* custom alpha and limit */
    d.swiglu_alpha = 1.0f;
    d.swiglu_limit = 2.0f;
    cr_assert_eq(moevk_ref_expert_ffn(&d, &w, 1, 0, x, 1, out), MOEVK_SUCCESS);
    cr_assert_float_eq(out[0], 3.0 * 2.0 / (1 + exp(-2.0)), 1e-6);
}

Test(experts, softcapped_and_postclamped_swiglu)
{
    /* H = F = 1, down = 1: out = h. Gate weight 10, up weight 20 on x = 1
     * and x = -0.1: g = 10 / -1, u = 20 / -2. */
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.hidden = 1;
    d.ffn = 1;
    d.num_experts = 1;
    const float gw = 10, uw = 20, dw = 1;
    moevk_expert_weights w = {0};
    w.gate = &gw;
    w.up = &uw;
    w.down = &dw;
    const float x[2] = {1, -0.1f};
    float out[2];
    /* soft caps 4 and 25 by default: 4 tanh(g/4) sig(g) 25 tanh(u/25) */
    d.activation = MOEVK_ACT_SWIGLU_SOFTCAP;
    cr_assert_eq(moevk_ref_expert_ffn(&d, &w, 1, 0, x, 2, out), MOEVK_SUCCESS);
    cr_assert_float_eq(out[0], 4 * tanh(2.5) / (1 + exp(-10.0)) * 25 * tanh(0.8), 1e-5);
    const double g1 = (double)x[1] * 10, u1 = (double)x[1] * 20;
    cr_assert_float_eq(out[1], 4 * tanh(g1 / 4) / (1 + exp(-g1)) * 25 * tanh(u1 / 25), 1e-6);
    d.softcap_gate = 1.0f;
    d.softcap_up = 2.0f;
    cr_assert_eq(moevk_ref_expert_ffn(&d, &w, 1, 0, x, 1, out), MOEVK_SUCCESS);
    cr_assert_float_eq(out[0], tanh(10.0) / (1 + exp(-10.0)) * 2 * tanh(10.0), 1e-6);
    /* the clamp after the silu: min(silu(10), 3) = 3, clamp(20) = 3 -> 9;
     * the plain clamp would give silu(3) * 3 instead */
    d.activation = MOEVK_ACT_SWIGLU_POSTCLAMP;
    d.swiglu_limit = 3.0f;
    cr_assert_eq(moevk_ref_expert_ffn(&d, &w, 1, 0, x, 2, out), MOEVK_SUCCESS);
    cr_assert_float_eq(out[0], 9.0, 1e-6);
    cr_assert_float_eq(out[1], g1 / (1 + exp(-g1)) * u1, 1e-6); /* inside the clamps */
    d.swiglu_limit = 0.0f; /* 7 */
    cr_assert_eq(moevk_ref_expert_ffn(&d, &w, 1, 0, x, 1, out), MOEVK_SUCCESS);
    cr_assert_float_eq(out[0], 49.0, 1e-5);
    /* the shared experts' own activation and limit: the routed experts
     * keep theirs */
    d.flags = MOEVK_LAYER_SHARED_ACTIVATION;
    d.shared_activation = MOEVK_ACT_SWIGLU;
    d.num_shared = 1;
    d.shared = w;
    cr_assert_eq(moevk_ref_expert_ffn(&d, &d.shared, 1, 0, x, 1, out), MOEVK_SUCCESS);
    cr_assert_float_eq(out[0], 10.0 / (1 + exp(-10.0)) * 20.0, 1e-5);
    cr_assert_eq(moevk_ref_expert_ffn(&d, &w, 1, 0, x, 1, out), MOEVK_SUCCESS);
    cr_assert_float_eq(out[0], 49.0, 1e-5);
    d.shared_activation = MOEVK_ACT_SWIGLU_CLAMP;
    d.shared_swiglu_limit = 2.0f; /* silu(min(10, 2)) * 2 */
    cr_assert_eq(moevk_ref_expert_ffn(&d, &d.shared, 1, 0, x, 1, out), MOEVK_SUCCESS);
    cr_assert_float_eq(out[0], 2.0 / (1 + exp(-2.0)) * 2.0, 1e-6);
    d.shared_swiglu_limit = 0.0f; /* swiglu_limit's 7 */
    cr_assert_eq(moevk_ref_expert_ffn(&d, &d.shared, 1, 0, x, 1, out), MOEVK_SUCCESS);
    cr_assert_float_eq(out[0], 7.0 / (1 + exp(-7.0)) * 7.0, 1e-5);
}

Test(experts, missing_weights_give_nan)
{
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.hidden = TH;
    d.ffn = TF;
    d.num_experts = TE;
    d.activation = MOEVK_ACT_SWIGLU; /* needs gate, which is absent */
    moevk_expert_weights w = {0};
    w.up = t_up;
    w.down = t_down;
    const float x[TH] = {1, 1, 1};
    float out[TH] = {0};
    cr_assert_eq(moevk_ref_expert_ffn(&d, &w, TF, 0, x, 1, out), MOEVK_SUCCESS);
    cr_assert(isnan(out[0]) && isnan(out[2]));
}

/* ---- statistics ------------------------------------------------------------ */

Test(stats, uniform_balanced)
{
    /* E = 4, T = 4, k = 1, equal logits, each token to a different expert:
     * f = P = 1/4 -> lb = 4 * 4 * 1/16 = 1; entropy = log 4; lse = 2 + log 4 */
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 4, 1);
    float l[16];
    for (int i = 0; i < 16; i++)
        l[i] = 2.0f;
    const uint32_t ids[] = {0, 1, 2, 3};
    const uint32_t counts[] = {1, 1, 1, 1};
    uint32_t tpe[4] = {0};
    moevk_routing_stats s = {.tokens_per_expert = tpe};
    cr_assert_eq(moevk_ref_stats(&d, 4, l, ids, counts, 3, &s), MOEVK_SUCCESS);
    cr_assert_float_eq(s.load_balancing_loss, 1.0, 1e-12);
    cr_assert_float_eq(s.routing_entropy, log(4.0), 1e-12);
    cr_assert_float_eq(s.router_z_loss, pow(2 + log(4.0), 2), 1e-12);
    cr_assert_eq(s.dropped, 3);
    cr_assert_arr_eq(tpe, counts, sizeof counts);
}

/* The statistics read the soft-capped logits: T = 1, E = 2, logits [10, 0]
 * with cap 1 are [tanh 10, 0]; the token chose expert 0. */
Test(stats, router_softcap)
{
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 2, 1);
    d.router_softcap = 1.0f;
    const float l[2] = {10.0f, 0.0f};
    const uint32_t ids[] = {0};
    const uint32_t counts[] = {1, 0};
    moevk_routing_stats s = {0};
    cr_assert_eq(moevk_ref_stats(&d, 1, l, ids, counts, 0, &s), MOEVK_SUCCESS);
    double a = (double)(float)tanh(10.0), lse = log(exp(a) + 1.0), q = exp(a) / (exp(a) + 1.0);
    cr_assert_float_eq(s.router_z_loss, lse * lse, 1e-12);
    cr_assert_float_eq(s.load_balancing_loss, 2 * q, 1e-12);
    cr_assert_float_eq(s.routing_entropy, -(q * log(q) + (1 - q) * log(1 - q)), 1e-12);
}

Test(stats, skewed)
{
    /* E = 2, T = 2, k = 1, logits [l, 0] with l = (float)ln 3 on both tokens,
     * both choosing expert 0: p = [q, 1-q], q = e^l / (e^l + 1) ~ 3/4.
     * f = [1, 0] -> lb = 2 * q. z = log(e^l + 1)^2 ~ log(4)^2. */
    moevk_layer_desc d = route_desc(MOEVK_ROUTING_SOFTMAX_TOPK, 2, 1);
    float l3 = (float)log(3.0);
    const float l[] = {l3, 0, l3, 0};
    const uint32_t ids[] = {0, 0};
    const uint32_t counts[] = {2, 0};
    moevk_routing_stats s = {0};
    cr_assert_eq(moevk_ref_stats(&d, 2, l, ids, counts, 0, &s), MOEVK_SUCCESS);
    double q = exp((double)l3) / (exp((double)l3) + 1);
    cr_assert_float_eq(s.load_balancing_loss, 2 * q, 1e-12);
    cr_assert_float_eq(s.load_balancing_loss, 1.5, 1e-6);
    cr_assert_float_eq(s.routing_entropy, -(q * log(q) + (1 - q) * log(1 - q)), 1e-12);
    cr_assert_float_eq(s.router_z_loss, pow(log(exp((double)l3) + 1), 2), 1e-12);

    /* a probability that underflows to 0 adds 0 to the entropy, not NaN */
    const float l2[] = {0, -2000.0f};
    cr_assert_eq(moevk_ref_stats(&d, 1, l2, ids, counts, 0, &s), MOEVK_SUCCESS);
    cr_assert_eq(s.routing_entropy, 0.0);
    cr_assert_float_eq(s.load_balancing_loss, 2.0, 1e-12);
}

/* ---- whole layer ------------------------------------------------------------ */

Test(layer, forward_by_hand)
{
    /* H = 3, F = 2, E = 2, k = 1, RELU with the integer test weights.
     * Router rows: expert 0 = [1, 0, 0], expert 1 = [0, 1, 0]: a token goes
     * to 0 when x0 > x1. Softmax of the two logits gives the weight.
     * One shared expert (= routed expert 0's weights), gated by
     * sigmoid(x . [0, 0, 1]). */
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.hidden = TH;
    d.ffn = TF;
    d.num_experts = TE;
    d.top_k = 1;
    d.routing = MOEVK_ROUTING_SOFTMAX_TOPK;
    d.activation = MOEVK_ACT_RELU;
    const float router[TE * TH] = {1, 0, 0, 0, 1, 0};
    d.router_weight = router;
    d.experts.up = t_up;
    d.experts.down = t_down;
    d.experts.up_bias = t_upb;
    d.experts.down_bias = t_downb;
    d.num_shared = 1;
    d.shared.up = t_up;
    d.shared.down = t_down;
    d.shared.up_bias = t_upb;
    d.shared.down_bias = t_downb;
    const float sgate[TH] = {0, 0, 1};
    d.shared_gate = sgate;

    const float x[3 * TH] = {1, -2, 3, 0, 1, 1, 2, 0, -1};
    float y[3 * TH];
    uint32_t ids[3];
    float w[3];
    uint8_t tie[3];
    uint32_t tpe[TE];
    moevk_routing_stats st = {.tokens_per_expert = tpe};
    cr_assert_eq(moevk_ref_layer_forward(&d, 3, x, y, ids, w, tie, &st), MOEVK_SUCCESS);
    const uint32_t eids[] = {0, 1, 0};
    cr_assert_arr_eq(ids, eids, sizeof eids);
    cr_assert_eq(tpe[0], 2);
    cr_assert_eq(tpe[1], 1);
    cr_assert_eq(st.dropped, 0);
    for (int t = 0; t < 3; t++) {
        const float *xt = x + t * TH;
        double l0 = xt[0], l1 = xt[1];
        double p = exp(ids[t] == 0 ? l0 : l1) / (exp(l0) + exp(l1));
        cr_assert_float_eq(w[t], p, 1e-7);
        double routed[TH], shared[TH];
        naive_relu_ffn(ids[t], xt, routed);
        naive_relu_ffn(0, xt, shared);
        double g = 1 / (1 + exp(-(double)xt[2]));
        for (int c = 0; c < TH; c++) {
            double ex = (double)w[t] * routed[c] + g * shared[c];
            cr_assert_float_eq(y[t * TH + c], ex, 1e-6 * (1 + fabs(ex)), "t%d c%d", t, c);
        }
    }

    /* capacity 0.5 -> C = ceil(0.5 * 3 * 1 / 2) = 1: token 2 (expert 0's
     * second) is dropped and keeps only the shared expert */
    d.capacity_factor = 0.5f;
    cr_assert_eq(moevk_ref_layer_forward(&d, 3, x, y, NULL, NULL, NULL, &st), MOEVK_SUCCESS);
    cr_assert_eq(st.dropped, 1);
    cr_assert_eq(tpe[0], 1);
    double shared[TH];
    naive_relu_ffn(0, x + 2 * TH, shared);
    double g = 1 / (1 + exp(1.0));
    for (int c = 0; c < TH; c++)
        cr_assert_float_eq(y[2 * TH + c], g * shared[c], 1e-6 * (1 + fabs(g * shared[c])));

    /* no shared expert, k = 2 = E, normalised: y = sum of both experts
     * weighted by the full softmax (which sums to 1) */
    d.capacity_factor = 0;
    d.num_shared = 0;
    d.top_k = 2;
    d.norm_topk_prob = 1;
    uint32_t ids2[6];
    float w2[6];
    cr_assert_eq(moevk_ref_layer_forward(&d, 3, x, y, ids2, w2, NULL, NULL), MOEVK_SUCCESS);
    for (int t = 0; t < 3; t++) {
        double o0[TH], o1[TH];
        naive_relu_ffn(ids2[2 * t], x + t * TH, o0);
        naive_relu_ffn(ids2[2 * t + 1], x + t * TH, o1);
        cr_assert_neq(ids2[2 * t], ids2[2 * t + 1]);
        cr_assert_float_eq((double)w2[2 * t] + w2[2 * t + 1], 1.0, 1e-6);
        for (int c = 0; c < TH; c++) {
            double ex = (double)w2[2 * t] * o0[c] + (double)w2[2 * t + 1] * o1[c];
            cr_assert_float_eq(y[t * TH + c], ex, 1e-6 * (1 + fabs(ex)));
        }
    }
}

/* Expert choice on hand-built logits: E = 2, T = 5, k = 1, cf 0 (means 1):
 * C = ceil(5 / 2) = 3. p(t, 0) = sigmoid(l0 - l1): l0 - l1 is 2, 0, 0, -3,
 * 1 for t0..t4, so expert 0 ranks t0, t4, t1 = t2 (t1 wins the exact
 * tie): takes t0, t4, t1; expert 1 ranks t3, then t1 = t2, then t4:
 * takes t3, t1, t2. The boundary pairs (t1 | t2 for expert 0: an exact tie,
 * no near-tie; t2 | t4 for expert 1: far apart) set no near-tie flag; a
 * second case moves t2 within 1e-7 of t1 for expert 0 and flags both. */
Test(ref, expert_choice)
{
    moevk_layer_desc d = {.num_experts = 2, .top_k = 1, .capacity_factor = 0.0f,
                          .routing = MOEVK_ROUTING_EXPERT_CHOICE, .routed_scaling_factor = 2.0f};
    cr_assert_eq(moevk_ref_expert_choice_capacity(&d, 5), 3u);
    cr_assert_eq(moevk_ref_capacity(&d, 5), UINT32_MAX, "admission drops nothing");
    cr_assert_eq(moevk_ref_assignments(&d, 5), 6u);
    float l[10] = {2, 0, 0, 0, 0, 0, -3, 0, 1, 0};
    uint32_t ids[10];
    float w[10];
    uint8_t tie[5];
    cr_assert_eq(moevk_ref_route(&d, 5, l, ids, w, tie), MOEVK_SUCCESS);
    const uint32_t N = UINT32_MAX;
    const uint32_t want[10] = {0, N, 0, 1, N, 1, N, 1, 0, N};
    for (int a = 0; a < 10; a++) {
        cr_assert_eq(ids[a], want[a], "token %d slot %d: %u", a / 2, a % 2, ids[a]);
        double p0 = 1.0 / (1.0 + exp(-(double)(l[a / 2 * 2] - l[a / 2 * 2 + 1])));
        double pe = a % 2 ? 1.0 - p0 : p0;
        cr_assert_float_eq(w[a], want[a] == N ? 0.0 : 2.0 * pe, 1e-6, "token %d slot %d: %g",
                           a / 2, a % 2, w[a]);
    }
    for (int t = 0; t < 5; t++)
        cr_assert_eq(tie[t], 0, "token %d", t);
    uint32_t counts[2], offsets[3];
    int32_t rows[10];
    cr_assert_eq(moevk_ref_permute(&d, 5, ids, counts, offsets, rows), 0, "nothing dropped");
    cr_assert(counts[0] == 3 && counts[1] == 3);
    for (int a = 0; a < 10; a++)
        cr_assert_eq(rows[a] < 0, want[a] == N, "token %d slot %d", a / 2, a % 2);
    moevk_routing_stats st = {0};
    cr_assert_eq(moevk_ref_stats(&d, 5, l, ids, counts, 0, &st), MOEVK_SUCCESS);
    cr_assert_float_eq(st.load_balancing_loss, 1.0, 1e-12, "f_e = 3 / 6: %g",
                       st.load_balancing_loss);
    /* t2 a hair below t1 for expert 0 (it is not taken; a near-tie) */
    l[4] = -1e-7f;
    cr_assert_eq(moevk_ref_route(&d, 5, l, ids, w, tie), MOEVK_SUCCESS);
    cr_assert(tie[1] && tie[2], "the boundary pair is a near-tie: %d %d", tie[1], tie[2]);
    cr_assert(!tie[0] && !tie[3] && !tie[4]);
}
