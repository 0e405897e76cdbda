/*
 * Presets: shapes and routing of published MoE models (from their
 * Hugging Face config.json files).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "presets/presets.h"
#include "quantize.h"
#include "util/rng.h"
#include "util/tool.h"

static const mvk_preset presets[] = {
    /* name              H     F      E    k  routing                        activation */
    {"mixtral-8x7b", 4096, 14336, 8, 2, MOEVK_ROUTING_SOFTMAX_TOPK, MOEVK_ACT_SWIGLU, 1},
    {"mixtral-8x22b", 6144, 16384, 8, 2, MOEVK_ROUTING_SOFTMAX_TOPK, MOEVK_ACT_SWIGLU, 1},
    {"qwen3-30b-a3b", 2048, 768, 128, 8, MOEVK_ROUTING_SOFTMAX_TOPK, MOEVK_ACT_SWIGLU, 1},
    {"qwen3-235b-a22b", 4096, 1536, 128, 8, MOEVK_ROUTING_SOFTMAX_TOPK, MOEVK_ACT_SWIGLU, 1},
    {"deepseek-v3", 7168, 2048, 256, 8, MOEVK_ROUTING_SIGMOID_GROUPED, MOEVK_ACT_SWIGLU, 1,
     .n_group = 8, .topk_group = 4, .routed_scaling_factor = 2.5f, .num_shared = 1,
     .shared_ffn = 2048, .correction_bias = 1},
    {"olmoe-1b-7b", 2048, 1024, 64, 8, MOEVK_ROUTING_SOFTMAX_TOPK, MOEVK_ACT_SWIGLU, 0},
    {"gpt-oss-20b", 2880, 2880, 32, 4, MOEVK_ROUTING_TOPK_SOFTMAX, MOEVK_ACT_SWIGLU_OAI, 0,
     .router_bias = 1, .expert_bias = 1},
    {"gpt-oss-120b", 2880, 2880, 128, 4, MOEVK_ROUTING_TOPK_SOFTMAX, MOEVK_ACT_SWIGLU_OAI, 0,
     .router_bias = 1, .expert_bias = 1},
    {"switch-base-128", 768, 3072, 128, 1, MOEVK_ROUTING_SOFTMAX_TOPK, MOEVK_ACT_RELU, 0,
     .capacity_factor = 1.25f},
    {"qwen1.5-moe-a2.7b", 2048, 1408, 60, 4, MOEVK_ROUTING_SOFTMAX_TOPK, MOEVK_ACT_SWIGLU, 0,
     .num_shared = 1, .shared_ffn = 5632, .shared_gate = 1},
};

const mvk_preset *mvk_preset_find(const char *name)
{
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++)
        if (!strcmp(presets[i].name, name))
            return &presets[i];
    return NULL;
}

const mvk_preset *mvk_preset_at(uint32_t i)
{
    return i < sizeof(presets) / sizeof(presets[0]) ? &presets[i] : NULL;
}

void mvk_weights_free(mvk_layer_weights *w)
{
    free(w->router), free(w->gate), free(w->up), free(w->down);
    free(w->sgate), free(w->sup), free(w->sdown), free(w->shared_gate);
    free(w->router_bias), free(w->corr_bias), free(w->gate_bias), free(w->up_bias),
        free(w->down_bias);
    memset(w, 0, sizeof(*w));
}

/* count blocks of n elements; with `repeat`, one random block copied. */
static void *random_blocks(mvk_rng *r, moevk_dtype dt, size_t count, size_t n, float scale,
                           bool repeat)
{
    if (!repeat || count <= 1)
        return mvk_rng_array(r, dt, count * n, scale);
    uint8_t *p = mvk_rng_array(r, dt, n, scale);
    size_t bytes = (size_t)moevk_dtype_row_bytes(dt, n);
    uint8_t *all = p ? realloc(p, bytes * count) : NULL;
    if (!all) {
        free(p);
        return NULL;
    }
    for (size_t i = 1; i < count; i++)
        memcpy(all + i * bytes, all, bytes);
    return all;
}

int mvk_weights_make(const mvk_preset *p, uint32_t scale, moevk_dtype dt, uint64_t seed,
                     mvk_layer_weights *w)
{
    return mvk_weights_make_ex(p, scale, dt, seed, false, w);
}

int mvk_weights_make_ex(const mvk_preset *p, uint32_t scale, moevk_dtype dt, uint64_t seed,
                        bool repeat_experts, mvk_layer_weights *w)
{
    memset(w, 0, sizeof(*w));
    if (scale < 1)
        scale = 1;
    const uint32_t H = MVK_MAX(p->hidden / scale, 1u), F = MVK_MAX(p->ffn / scale, 1u);
    const uint32_t FS = MVK_MAX(p->shared_ffn / scale, 1u);
    const uint32_t E = p->experts;
    mvk_rng r = mvk_rng_seed(seed, 7);
    const float sh = 1.0f / sqrtf((float)H), sf = 1.0f / sqrtf((float)F);
    const bool gated = moevk_activation_is_gated(p->activation);
    const size_t fh = (size_t)F * H;
    const bool rep = repeat_experts;
    /* a block format: random valid blocks, in llama.cpp's fallback format
     * where rows are not whole blocks (as quantising at create does) */
    const moevk_dtype gu = mvk_quantize_fallback(dt, H), dn = mvk_quantize_fallback(dt, F);
    const moevk_dtype sdn = mvk_quantize_fallback(dt, FS);
    w->router = mvk_rng_array(&r, MOEVK_DTYPE_F32, (size_t)E * H, 2.0f * sh);
    w->gate = gated ? random_blocks(&r, gu, E, fh, sh, rep) : NULL;
    w->up = random_blocks(&r, gu, E, fh, sh, rep);
    w->down = random_blocks(&r, dn, E, fh, sf, rep);
    bool ok = w->router && w->up && w->down && (!gated || w->gate);
    if (p->num_shared) {
        size_t sfh = (size_t)p->num_shared * FS * H;
        w->sgate = gated ? mvk_rng_array(&r, gu, sfh, sh) : NULL;
        w->sup = mvk_rng_array(&r, gu, sfh, sh);
        w->sdown = mvk_rng_array(&r, sdn, sfh, 1.0f / sqrtf((float)FS));
        ok = ok && w->sup && w->sdown && (!gated || w->sgate);
        if (p->shared_gate)
            ok = ok && (w->shared_gate = mvk_rng_array(&r, MOEVK_DTYPE_F32,
                                                      (size_t)p->num_shared * H, sh));
    }
    if (p->router_bias)
        ok = ok && (w->router_bias = mvk_rng_array(&r, MOEVK_DTYPE_F32, E, 0.1f));
    if (p->correction_bias)
        ok = ok && (w->corr_bias = mvk_rng_array(&r, MOEVK_DTYPE_F32, E, 0.05f));
    if (p->expert_bias) {
        ok = ok && (w->gate_bias = mvk_rng_array(&r, MOEVK_DTYPE_F32, (size_t)E * F, 0.1f));
        ok = ok && (w->up_bias = mvk_rng_array(&r, MOEVK_DTYPE_F32, (size_t)E * F, 0.1f));
        ok = ok && (w->down_bias = mvk_rng_array(&r, MOEVK_DTYPE_F32, (size_t)E * H, 0.1f));
    }
    if (!ok) {
        mvk_weights_free(w);
        return -1;
    }
    w->desc = (moevk_layer_desc){
        .hidden = H, .ffn = F, .num_experts = E, .top_k = p->top_k,
        .routing = p->routing, .activation = p->activation,
        .norm_topk_prob = p->norm_topk_prob, .n_group = p->n_group,
        .topk_group = p->topk_group, .routed_scaling_factor = p->routed_scaling_factor,
        .capacity_factor = p->capacity_factor,
        .weight_dtype = dt, .router_dtype = MOEVK_DTYPE_F32,
        .router_weight = w->router, .router_bias = w->router_bias,
        .correction_bias = w->corr_bias,
        .experts = {.gate = w->gate, .up = w->up, .down = w->down, .gate_bias = w->gate_bias,
                    .up_bias = w->up_bias, .down_bias = w->down_bias,
                    .gate_up_dtype = gu, .down_dtype = dn},
        .flags = MOEVK_LAYER_MATRIX_DTYPES,
        .num_shared = p->num_shared, .shared_ffn = FS,
        .shared = {.gate = w->sgate, .up = w->sup, .down = w->sdown, .gate_up_dtype = gu,
                   .down_dtype = sdn},
        .shared_gate = w->shared_gate,
    };
    return 0;
}
