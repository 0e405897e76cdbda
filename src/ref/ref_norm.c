/*
 * The reference of the input norms (Gemma 4): the router's input
 *   r = x (mean x^2 + router_norm_eps)^-1/2 * router_input_scale * factor
 * (the norm only when router_norm_eps > 0) and the experts' input
 *   e = x (mean x^2 + expert_norm_eps)^-1/2 * expert_norm_weight,
 * each element computed in double and rounded to float once.
 */
#include <math.h>

#include "ref.h"

int moevk_ref_has_router_input(const moevk_layer_desc *desc)
{
    return desc->router_norm_eps > 0.0f || desc->router_input_scale ||
           (desc->router_input_factor != 0.0f && desc->router_input_factor != 1.0f);
}

int moevk_ref_has_expert_input(const moevk_layer_desc *desc)
{
    return desc->expert_norm_eps > 0.0f;
}

/* (mean_h x[h]^2 + eps)^-1/2, or 1 when eps is 0 (no norm) */
static double inv_rms(const float *x, uint32_t H, float eps)
{
    if (!(eps > 0.0f))
        return 1.0;
    double ss = 0.0;
    for (uint32_t h = 0; h < H; h++)
        ss += (double)x[h] * (double)x[h];
    return 1.0 / sqrt(ss / (double)H + (double)eps);
}

void moevk_ref_router_input(const moevk_layer_desc *desc, uint32_t T, const float *x,
                            float *out)
{
    const uint32_t H = desc->hidden;
    const double f = desc->router_input_factor != 0.0f ? (double)desc->router_input_factor : 1.0;
    for (uint32_t t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * H;
        const double inv = inv_rms(xt, H, desc->router_norm_eps);
        for (uint32_t h = 0; h < H; h++) {
            const double s = desc->router_input_scale ? (double)desc->router_input_scale[h] : 1.0;
            out[(size_t)t * H + h] = (float)((double)xt[h] * inv * s * f);
        }
    }
}

void moevk_ref_expert_input(const moevk_layer_desc *desc, uint32_t T, const float *x,
                            float *out)
{
    const uint32_t H = desc->hidden;
    for (uint32_t t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * H;
        const double inv = inv_rms(xt, H, desc->expert_norm_eps);
        for (uint32_t h = 0; h < H; h++) {
            const double w = desc->expert_norm_weight ? (double)desc->expert_norm_weight[h] : 1.0;
            out[(size_t)t * H + h] = (float)((double)xt[h] * inv * w);
        }
    }
}
