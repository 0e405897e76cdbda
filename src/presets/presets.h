/*
 * MoE layer shapes of real models (the routed-expert block of one layer),
 * and random host weights for them (moevk demo, moevk bench).
 */
#ifndef MOEVK_PRESETS_H
#define MOEVK_PRESETS_H

#include <stdbool.h>
#include <stdint.h>

#include "moevk/moevk.h"

typedef struct mvk_preset {
    const char *name;
    uint32_t hidden, ffn, experts, top_k;
    moevk_routing routing;
    moevk_activation activation;
    int norm_topk_prob;
    uint32_t n_group, topk_group;
    float routed_scaling_factor, capacity_factor;
    uint32_t num_shared, shared_ffn;
    int shared_gate, router_bias, expert_bias, correction_bias;
} mvk_preset;

const mvk_preset *mvk_preset_find(const char *name);
const mvk_preset *mvk_preset_at(uint32_t i); /* NULL past the end */

/* Host weights for a preset, random, in weight dtype `dt` (router in f32),
 * with H and F divided by `scale` (>= 1). Owns every array. */
typedef struct mvk_layer_weights {
    moevk_layer_desc desc;
    void *router, *gate, *up, *down, *sgate, *sup, *sdown, *shared_gate;
    float *router_bias, *corr_bias, *gate_bias, *up_bias, *down_bias;
} mvk_layer_weights;

int mvk_weights_make(const mvk_preset *p, uint32_t scale, moevk_dtype dt, uint64_t seed,
                     mvk_layer_weights *out);
/* The same; with repeat_experts, every expert gets the first expert's
 * random values (fast to make; for timing, where values do not matter). */
int mvk_weights_make_ex(const mvk_preset *p, uint32_t scale, moevk_dtype dt, uint64_t seed,
                        bool repeat_experts, mvk_layer_weights *out);
void mvk_weights_free(mvk_layer_weights *w);

#endif
