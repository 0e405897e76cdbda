// Shared helpers for all moevk kernels (interface.h comes first).

// NaN-aware ordering used by every selection: larger wins, NaN ranks below
// every number, equal scores go to the lower index.
bool ranks_before(float a, uint ia, float b, uint ib)
{
    bool na = isnan(a), nb = isnan(b);
    if (na != nb)
        return nb;
    if (!na && a != b)
        return a > b;
    return ia < ib;
}

// erf with fractional error below 1.2e-7 everywhere (Chebyshev fit of erfc,
// Numerical Recipes 6.2); GLSL has no built-in erf.
float erf_approx(float x)
{
    float z = abs(x);
    float t = 1.0 / (1.0 + 0.5 * z);
    float r = t * exp(-z * z - 1.26551223 +
                      t * (1.00002368 +
                      t * (0.37409196 +
                      t * (0.09678418 +
                      t * (-0.18628806 +
                      t * (0.27886807 +
                      t * (-1.13520398 +
                      t * (1.48851587 +
                      t * (-0.82215223 +
                      t * 0.17087277)))))))));
    float e = 1.0 - r;
    return x >= 0.0 ? e : (isnan(x) ? x : -e);
}

float sigmoid(float x) { return 1.0 / (1.0 + exp(-x)); }

// sqrt(softplus(x)), softplus(x) = max(x, 0) + log1p(e^-|x|): log1p(y) for
// y in [0, 1] as 2 atanh(z), z = y / (2 + y) <= 1/3, by its series to z^15
// (relative error < 2e-9): no log, whose precision near 1 Vulkan leaves
// loose. NaN stays NaN; +-inf give inf and 0.
float sqrt_softplus(float x)
{
    const float y = exp(-abs(x));
    const float z = y / (2.0 + y), z2 = z * z;
    float s = 1.0 / 15.0;
    s = fma(s, z2, 1.0 / 13.0);
    s = fma(s, z2, 1.0 / 11.0);
    s = fma(s, z2, 1.0 / 9.0);
    s = fma(s, z2, 1.0 / 7.0);
    s = fma(s, z2, 1.0 / 5.0);
    s = fma(s, z2, 1.0 / 3.0);
    s = fma(s, z2, 1.0);
    return sqrt(max(x, 0.0) + 2.0 * z * s);
}

float gelu_erf(float x) { return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752)); }

// 0.5 x (1 + tanh(y)) written as x sigmoid(2y): the same function, without
// the cancellation of 1 + tanh(y) for negative x.
float gelu_tanh(float x)
{
    float y = 0.79788456080286536 * (x + 0.044715 * x * x * x);
    return x / (1.0 + exp(-2.0 * y));
}

// tanh(y) to a few ulp everywhere: its Taylor series through y^11 where
// |y| < 0.3 (the next term is below 3e-9 |y|), else (1 - e) / (1 + e) with
// e = exp(-2|y|) <= 0.55 (no overflow, no cancellation); NaN stays NaN.
float tanh_approx(float y)
{
    float a = abs(y);
    if (a < 0.3) {
        float z = y * y;
        return y + y * z * (-0.33333333333333333 + z * (0.13333333333333333 +
                            z * (-0.053968253968253968 + z * (0.021869488536155203 +
                            z * -0.0088632355299021966))));
    }
    float e = exp(-2.0 * a);
    float t = (1.0 - e) / (1.0 + e);
    return y < 0.0 ? -t : t;
}

// c tanh(x / c): x softly capped at +-c
float softcap(float x, float c) { return c * tanh_approx(x / c); }

// The expert activation h = act(g, u); g is unused by non-gated ones.
// Clamps let NaN through, as the reference does.
float activate(uint act, float g, float u, float alpha, float limit)
{
    if (act == MVK_ACT_SWIGLU)
        return g * sigmoid(g) * u;
    if (act == MVK_ACT_GEGLU)
        return gelu_erf(g) * u;
    if (act == MVK_ACT_GEGLU_TANH)
        return gelu_tanh(g) * u;
    if (act == MVK_ACT_SWIGLU_OAI) {
        float gc = isnan(g) ? g : min(g, limit);
        float uc = isnan(u) ? u : clamp(u, -limit, limit);
        return (uc + 1.0) * gc * sigmoid(alpha * gc);
    }
    if (act == MVK_ACT_RELU)
        return (u > 0.0 || isnan(u)) ? u : 0.0;
    if (act == MVK_ACT_GELU)
        return gelu_erf(u);
    if (act == MVK_ACT_RELU2) {
        float r = (u > 0.0 || isnan(u)) ? u : 0.0;
        return r * r;
    }
    if (act == MVK_ACT_SWIGLU_CLAMP) {
        float gc = isnan(g) ? g : min(g, limit);
        float uc = isnan(u) ? u : clamp(u, -limit, limit);
        return gc * sigmoid(gc) * uc;
    }
    if (act == MVK_ACT_SWIGLU_SOFTCAP) // alpha, limit: the gate's and up's caps
        return softcap(g, alpha) * sigmoid(g) * softcap(u, limit);
    if (act == MVK_ACT_SWIGLU_POSTCLAMP) {
        float s = g * sigmoid(g);
        float sc = isnan(s) ? s : min(s, limit);
        float uc = isnan(u) ? u : clamp(u, -limit, limit);
        return sc * uc;
    }
    return u;
}
