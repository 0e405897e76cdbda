/*
 * Hugging Face config.json -> the hyperparameters of one MoE block, read
 * under the names transformers uses, with transformers' defaults when a
 * field is absent (or null).
 */
#ifndef MOEVK_MODEL_HF_CONFIG_H
#define MOEVK_MODEL_HF_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "moevk/moevk.h"

typedef enum mvk_arch {
    MVK_ARCH_MIXTRAL = 0,
    MVK_ARCH_QWEN2_MOE,
    MVK_ARCH_QWEN3_MOE,
    MVK_ARCH_DEEPSEEK_V3,
    MVK_ARCH_OLMOE,
    MVK_ARCH_GPT_OSS,
    MVK_ARCH_SWITCH,
    MVK_ARCH_COUNT
} mvk_arch;

/* The model_type string of an architecture ("mixtral", ...). */
const char *mvk_arch_name(mvk_arch a);

typedef struct mvk_moe_config {
    mvk_arch arch;
    uint32_t hidden, ffn, num_experts, top_k;
    moevk_routing routing;
    moevk_activation activation;
    char act_name[32];        /* hidden_act / dense_act_fn as written */
    int norm_topk_prob;
    uint32_t n_group, topk_group;   /* deepseek_v3 */
    float routed_scaling_factor;    /* deepseek_v3 */
    float swiglu_alpha, swiglu_limit; /* gpt_oss */
    uint32_t shared_ffn;      /* width of the one shared expert; 0 = none  */
    int shared_gate;          /* qwen2_moe: sigmoid gate on the shared expert */
    int router_bias;          /* gpt_oss; switch with router_bias          */
    int correction_bias;      /* deepseek_v3 e_score_correction_bias       */
    int expert_bias;          /* gpt_oss expert biases                     */
    /* which layers hold a MoE block */
    uint32_t num_layers;      /* num_hidden_layers / num_layers            */
    uint32_t decoder_sparse_step; /* qwen2_moe, qwen3_moe                  */
    uint32_t *mlp_only_layers;
    uint32_t n_mlp_only_layers;
    uint32_t first_k_dense_replace; /* deepseek_v3                         */
    /* switch_transformers */
    uint64_t expert_capacity; /* tokens per expert per sequence            */
    uint32_t num_decoder_layers, encoder_sparse_step, decoder_sparse_step_sw;
} mvk_moe_config;

/* Parse config.json text (strict JSON: nothing after the value, no key
 * twice in an object; mvk_json_parse). `what` names it in messages. */
int mvk_hf_config_parse(const char *text, size_t len, const char *what, mvk_moe_config *out,
                        char *err, size_t errsz);
void mvk_hf_config_free(mvk_moe_config *c);

#define MVK_MAX_PREFIXES 2
#define MVK_PREFIX_LEN 160

/* Tensor-name prefixes under which layer `layer`'s MoE block may be stored
 * (Mixtral: "model.layers.N.block_sparse_moe." then "model.layers.N.mlp.").
 * `decoder` picks the decoder stack (switch_transformers only). Fails with a
 * message when that layer has no MoE block or is out of range. */
int mvk_hf_layer_prefixes(const mvk_moe_config *c, uint32_t layer, int decoder,
                          char prefixes[MVK_MAX_PREFIXES][MVK_PREFIX_LEN], int *count,
                          char *err, size_t errsz);

#endif
