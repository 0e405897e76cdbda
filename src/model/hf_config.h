/*
 * Hugging Face config.json -> the hyperparameters of one MoE block, read
 * under the names transformers uses, with transformers' defaults when a
 * field is absent (or null). What each architecture reads is its
 * descriptor (arch.h, arch.c); the reader here is generic.
 */
#ifndef MOEVK_MODEL_HF_CONFIG_H
#define MOEVK_MODEL_HF_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "arch.h"
#include "hf_quant.h"
#include "moevk/moevk.h"

typedef struct mvk_moe_config {
    const mvk_arch *arch;
    uint32_t hidden, ffn, num_experts, top_k;
    moevk_routing routing;
    moevk_activation activation;
    char act_name[32];        /* hidden_act / dense_act_fn as written */
    int norm_topk_prob;
    uint32_t n_group, topk_group;   /* grouped routing (deepseek_v3) */
    float routed_scaling_factor;    /* deepseek_v3 */
    float swiglu_alpha, swiglu_limit; /* gpt_oss */
    float softcap_gate, softcap_up; /* swiglu_softcap (inkling2)           */
    int shared_act;           /* the shared experts' own activation:       */
    moevk_activation shared_activation; /* (arch's shared_act)             */
    char shared_act_name[32];
    float shared_swiglu_limit; /* its limit (step3p5)                      */
    int score_fn;             /* scoring_func: 0 = sigmoid, the only one   */
    int mlp_bias;             /* mlp_bias: refused when set                */
    int sqrtsoftplus;         /* scoring_func "sqrtsoftplus" (DeepSeek-V4)  */
    uint32_t hash_layers;     /* num_hash_layers (without mlp_layer_types)  */
    uint32_t sink_shared;     /* shared experts with sink gates (Inkling)   */
    uint32_t shared_ffn;      /* width of the one shared expert; 0 = none  */
    int shared_gate;          /* sigmoid gate on the shared expert (qwen2_moe) */
    int router_bias;          /* the router has a bias (gpt_oss; switch with router_bias) */
    int correction_bias;      /* e_score_correction_bias (deepseek_v3)     */
    int expert_bias;          /* expert biases (gpt_oss)                   */
    /* which layers hold a MoE block */
    uint32_t num_layers;      /* num_hidden_layers / num_layers            */
    uint32_t decoder_sparse_step; /* qwen2_moe, qwen3_moe; else 1          */
    uint32_t *mlp_only_layers;
    uint32_t n_mlp_only_layers;
    uint32_t first_k_dense_replace; /* deepseek_v3                         */
    uint8_t *layer_types;     /* mlp_layer_types: 1 = sparse, 2 = hash-routed
                                 ("hash_moe", refused) (NULL: none)         */
    uint32_t n_layer_types;
    uint32_t *moe_layers;     /* moe_layers: MoE layer indices (NULL: none) */
    uint32_t latent;          /* moe_latent_size: refused when not 0       */
    float router_softcap;     /* > 0: the router logits' soft cap           */
    float rms_norm_eps;       /* the input norms' epsilon (Gemma 4)         */
    int moe_block;            /* enable_moe_block (refused when false)      */
    int select_on_logits;     /* choose on l + correction bias (Kolibri-1)  */
    float jitter_eps;         /* sparsemixer's threshold epsilon (PhiMoE)   */
    uint32_t zero_experts;    /* identity experts after the num_experts FFN
                                 experts (the router has both)              */
    float token_dropout;      /* NLLB-MoE: outputs x (1 - p) at inference   */
    double eval_capacity;     /* moe_eval_capacity_token_fraction            */
    int norm_before_drop;     /* normalize_router_prob_before_dropping       */
    int batch_priority;       /* batch_prioritized_routing (refused with drops) */
    double capacity_fraction; /* NLLB-MoE below 1: C = ceil(f T)             */
    float drop_renorm_eps;    /* > 0: renormalised after dropping            */
    int second_all, router_f32; /* (one-choice keys: "all", "float32")       */
    int selection_sigmoid;    /* expert_selection_fn "sigmoid"             */
    int shared_average;       /* shared_expert_combination_strategy "average" */
    float shared_scale;       /* moevk_layer_desc's (0: 1)                 */
    uint32_t n_moe_layers;
    uint32_t last_moe_layer;  /* UINT32_MAX: none                          */
    uint32_t expert_period, expert_offset; /* 1, 0 unless read             */
    /* routing refinements (moevk_layer_desc's) */
    moevk_group_score group_score;
    float norm_p, norm_min, norm_eps;
    int group_limited;        /* topk_method "group_limited_greedy" (else
                                 greedy: groups ignored)                   */
    /* switch_transformers */
    uint64_t expert_capacity; /* tokens per expert per sequence            */
    uint32_t num_decoder_layers, encoder_sparse_step, decoder_sparse_step_sw;
    uint32_t num_sparse_encoder_layers, num_sparse_decoder_layers;
    /* per-layer values (a per_layer key given as a list): the field's list
     * (NULL: none), set into the field for the layer mvk_hf_layer_prefixes
     * chooses */
    uint32_t *layer_values[MVK_CFG_FIELD_COUNT];
    uint32_t n_layer_values[MVK_CFG_FIELD_COUNT];
    /* quantization_config (method NONE when absent) */
    mvk_hfq_config quant;
} mvk_moe_config;

/* Parse config.json text (strict JSON: nothing after the value, no key
 * twice in an object; mvk_json_parse) as the architecture its model_type
 * names. `what` names it in messages. */
int mvk_hf_config_parse(const char *text, size_t len, const char *what, mvk_moe_config *out,
                        char *err, size_t errsz);
/* The same for a second model of the checkpoint, `part` (NULL: the main
 * one, as mvk_hf_config_parse): its config is "<part>_config", or that
 * object's text_config when it has one (Qwen3-Omni-MoE's "talker":
 * talker_config.text_config), read as the architecture its model_type
 * names. */
int mvk_hf_config_parse_part(const char *text, size_t len, const char *what, const char *part,
                             mvk_moe_config *out, char *err, size_t errsz);
/* The same as architecture `arch`, whatever the model_type (which may be
 * absent): a descriptor that is not in the table (tests) reads the same
 * way. */
int mvk_hf_config_parse_as(const mvk_arch *arch, const char *text, size_t len, const char *what,
                           mvk_moe_config *out, char *err, size_t errsz);
void mvk_hf_config_free(mvk_moe_config *c);

/* Tensor-name prefixes under which layer `layer`'s MoE block may be stored
 * (the architecture's layer_prefixes, in order: Mixtral
 * "model.layers.N.block_sparse_moe." then "model.layers.N.mlp."). `decoder`
 * picks the decoder stack (architectures that have one). Fails with a
 * message when that layer has no MoE block or is out of range. The
 * per-layer values of the config (layer_values) become that layer's. */
int mvk_hf_layer_prefixes(mvk_moe_config *c, uint32_t layer, int decoder,
                          char prefixes[MVK_MAX_PREFIXES][MVK_PREFIX_LEN], int *count,
                          char *err, size_t errsz);

#endif
