/*
 * Hugging Face MoE architectures as data: one descriptor (mvk_arch) per
 * config.json `model_type`, in one const table (arch.c). A descriptor says
 * which config keys hold which hyperparameter (and their defaults), how the
 * block routes and which activation it uses, which layers hold a MoE block
 * and under which tensor-name prefix, and the tensor names of every layout
 * the architecture is published in. One generic reader (hf_config.c) and
 * one generic loader (model_layer.c) handle every descriptor; nothing else
 * knows an architecture by name. The checklist for adding one is in arch.c.
 *
 * Name patterns: "{N}" in a layer prefix is the layer index, "{i}" in an
 * expert tensor name the expert index. Tensor names are relative to the
 * layer prefix ("model.layers.{N}.mlp." + "gate.weight").
 */
#ifndef MOEVK_MODEL_ARCH_H
#define MOEVK_MODEL_ARCH_H

#include <stddef.h>
#include <stdint.h>

#include "moevk/moevk.h"

#define MVK_MAX_PREFIXES 3  /* layer prefixes tried in turn               */
#define MVK_PREFIX_LEN 160
#define MVK_ARCH_NAMES 4    /* model_type and its aliases                  */
#define MVK_ARCH_KEYS 18    /* config keys of one architecture             */
#define MVK_ARCH_LAYOUTS 4  /* tensor layouts of one architecture          */
#define MVK_KEY_NAMES 3     /* a key and its aliases, NULL-terminated       */

struct mvk_moe_config;

/* The mvk_moe_config field a config key sets; its JSON type follows from
 * the field (see the table in hf_config.c). MVK_CFG_END ends a key list. */
typedef enum mvk_cfg_field {
    MVK_CFG_END = 0,
    MVK_CFG_HIDDEN,           /* hidden: H                                   */
    MVK_CFG_FFN,              /* ffn: F of a routed expert                   */
    MVK_CFG_EXPERTS,          /* num_experts: E                              */
    MVK_CFG_TOP_K,            /* top_k                                       */
    MVK_CFG_NORM_TOPK,        /* norm_topk_prob (true/false)                 */
    MVK_CFG_N_GROUP,          /* n_group: expert groups (grouped routing)    */
    MVK_CFG_TOPK_GROUP,       /* topk_group: groups kept                     */
    MVK_CFG_SCALING,          /* routed_scaling_factor (a number)            */
    MVK_CFG_SHARED_FFN,       /* shared_ffn: the shared expert's F           */
    MVK_CFG_SHARED_EXPERTS,   /* a count n: shared_ffn = n x ffn (DeepSeek's
                                 n shared experts run as one n x F wide)     */
    MVK_CFG_CAPACITY,         /* expert_capacity: tokens per expert per
                                 sequence (0 is refused)                    */
    MVK_CFG_ROUTER_BIAS,      /* router_bias (true/false): the router bias
                                 tensor is there                            */
    MVK_CFG_SWIGLU_ALPHA,     /* swiglu_alpha (a number)                     */
    MVK_CFG_SWIGLU_LIMIT,     /* swiglu_limit (a positive number)            */
    MVK_CFG_NUM_LAYERS,       /* num_layers: decoder layers (the encoder's
                                 for MVK_SPARSE_ENCODER_DECODER)            */
    MVK_CFG_SPARSE_STEP,      /* decoder_sparse_step (0 is refused)          */
    MVK_CFG_MLP_ONLY,         /* mlp_only_layers (a list of layer indices)   */
    MVK_CFG_FIRST_K_DENSE,    /* first_k_dense_replace                       */
    MVK_CFG_NUM_DECODER_LAYERS,
    MVK_CFG_SPARSE_ENCODER_LAYERS, /* num_sparse_encoder_layers              */
    MVK_CFG_SPARSE_DECODER_LAYERS, /* num_sparse_decoder_layers              */
    MVK_CFG_ENCODER_STEP,     /* encoder_sparse_step                         */
    MVK_CFG_DECODER_STEP,     /* decoder_sparse_step of the decoder stack    */
    MVK_CFG_TOPK_METHOD,      /* DeepSeek-V2's topk_method: "greedy" (no
                                 groups: n_group and topk_group are then
                                 ignored) or "group_limited_greedy"
                                 (MOEVK_GROUP_MAX); def 0 or 1 for them    */
    MVK_CFG_NORM_P,           /* a p-norm order (DBRX's
                                 moe_normalize_expert_weights): a number sets
                                 norm_topk_prob and norm_p, an explicit null
                                 turns the normalisation off               */
    MVK_CFG_NORM_MIN,         /* norm_min: the normalisation's clamp         */
    MVK_CFG_LAYER_TYPES,      /* mlp_layer_types: "dense" / "sparse" per
                                 layer; when given, it alone says which
                                 layers are MoE                            */
    MVK_CFG_LAST_MOE_LAYER,   /* the last MoE layer (ERNIE's
                                 moe_layer_end_index; -1: the last layer)  */
    MVK_CFG_EXPERT_PERIOD,    /* layer N is MoE when N % period == offset    */
    MVK_CFG_EXPERT_OFFSET,    /*   (Jamba's expert_layer_period / _offset)   */
    MVK_CFG_MOE_LAYERS,       /* moe_layers: the MoE layers' indices; when
                                 given, it alone says which layers are MoE  */
    MVK_CFG_SELECTION_FN,     /* Cohere2-MoE's expert_selection_fn: "softmax"
                                 (topk_softmax) or "sigmoid" (sigmoid of the
                                 top-k logits); def 0 or 1 for them         */
    MVK_CFG_SHARED_COMBINE,   /* shared_expert_combination_strategy: "sum"
                                 or "average" (both halved: routed scale and
                                 shared_scale 0.5); def 0 or 1 for them     */
    MVK_CFG_LATENT,           /* a latent size the experts would run in
                                 (Nemotron-H's moe_latent_size): refused
                                 unless 0 / null                            */
    MVK_CFG_NORM_EPS,         /* norm_eps: added to the normalisation's
                                 denominator (LFM2-MoE's fixed 1e-6)       */
    MVK_CFG_CORRECTION_BIAS,  /* correction_bias (true/false): the
                                 correction-bias tensor is there (LFM2-MoE's
                                 use_expert_bias)                          */
    MVK_CFG_SOFTCAP_GATE,     /* softcap_gate, softcap_up: swiglu_softcap's  */
    MVK_CFG_SOFTCAP_UP,       /*   caps (positive numbers; Inkling-2)        */
    MVK_CFG_SHARED_SWIGLU_LIMIT, /* the shared experts' limit (with
                                 shared_act; Step-3.7's swiglu_limits_shared) */
    MVK_CFG_SCORE_FN,         /* the router's score function: only "sigmoid"
                                 is read (Inkling-2's scoring_func)         */
    MVK_CFG_MLP_BIAS,         /* mlp_bias (true/false): biases on the shared
                                 expert, refused when true (Step-3.7)       */
    MVK_CFG_ZERO_EXPERTS,     /* identity experts beside num_experts FFN
                                 experts (LongCat-Flash's zero_expert_num):
                                 the router scores both                     */
    MVK_CFG_TOKEN_DROPOUT,    /* NLLB-MoE's moe_token_dropout p: its experts'
                                 outputs are scaled by 1 - p at inference
                                 (routed_scaling_factor)                    */
    MVK_CFG_EVAL_CAPACITY,    /* moe_eval_capacity_token_fraction: below 1
                                 capacity ceil(f T) drops tokens (a double:
                                 moevk_layer_desc.capacity_fraction); <= 0
                                 (expert_capacity) is refused               */
    MVK_CFG_NORM_BEFORE_DROP, /* normalize_router_prob_before_dropping: false
                                 renormalises over what dropping leaves
                                 (drop_renorm_eps)                          */
    MVK_CFG_BATCH_PRIORITY,   /* batch_prioritized_routing: refused with
                                 drops (confidence order, not token order)  */
    MVK_CFG_SECOND_EXPERT,    /* second_expert_policy: only "all" (the other
                                 policies draw random numbers)              */
    MVK_CFG_ROUTER_DTYPE,     /* router_dtype: only "float32" (moevk's router
                                 computes in f32)                           */
    MVK_CFG_SHARED_COUNT,     /* an integer n, read after SHARED_FFN:
                                 shared_ffn = n x shared_ffn (n shared
                                 experts of their own width as one:
                                 Dots3-Note)                                */
    MVK_CFG_ROUTER_SOFTCAP,   /* a soft cap c on the router logits, l = c
                                 tanh(l / c) (Laguna's
                                 moe_router_logit_softcapping; none unless
                                 > 0, as in transformers)                   */
    MVK_CFG_SELECT_ON_LOGITS, /* 1: choose on the logits plus the correction
                                 bias, not on the scores (Kolibri-1; an
                                 architecture fixes it)                     */
    MVK_CFG_JITTER_EPS,       /* sparsemixer's jitter_eps (PhiMoE's
                                 router_jitter_noise: a number >= 0)        */
    MVK_CFG_RMS_EPS,          /* rms_norm_eps: the epsilon of the block's
                                 input norms (Gemma 4; a positive number)   */
    MVK_CFG_SCORING,          /* scoring_func "sigmoid" or "sqrtsoftplus"
                                 (DeepSeek-V4; moevk_layer_desc.score_fn)   */
    MVK_CFG_HASH_LAYERS,      /* num_hash_layers: without mlp_layer_types
                                 the first N layers are hash-routed and
                                 refused (DeepSeek-V4)                      */
    MVK_CFG_SINK_SHARED,      /* the number of shared experts, each of the
                                 routed width and with its own gate from
                                 the router's extra rows (the arch's
                                 shared_sink: Inkling's n_shared_experts);
                                 at least 1                                 */
    MVK_CFG_MOE_BLOCK,        /* enable_moe_block (true/false): false, the
                                 model has no MoE block and is refused      */
    MVK_CFG_FIELD_COUNT
} mvk_cfg_field;

/* One config key: the first of `names` present with a non-null value is
 * read (a name "a.b" is key b of the object a: DBRX's ffn_config; "a.b.c"
 * goes one object deeper); absent (or null) it takes the default: def_of(config so far) when
 * set, else def. No names: the field is always the default (a value the
 * architecture fixes). `required`: absent is an error. Defaults of float
 * fields are written as float literals (1.702f) so that they convert
 * exactly. */
typedef struct mvk_arch_key {
    mvk_cfg_field field;
    const char *names[MVK_KEY_NAMES];
    double def;
    uint64_t (*def_of)(const struct mvk_moe_config *c);
    int required;
    /* a list with one value per layer is read too (Hunyuan's moe_topk): the
     * chosen layer's entry is the value (mvk_hf_layer_prefixes); for a
     * number field each entry is a number or null (0). A first name with
     * "{N}" is read for each layer N < num_layers (read before it), the
     * other names standing in where it is absent (dots3-note's vision
     * per_layer_config.{N}.num_local_experts, else num_local_experts) */
    int per_layer;
} mvk_arch_key;

/* An activation function's name in config.json and moevk's activation. */
typedef struct mvk_act_name {
    const char *name;
    moevk_activation activation;
} mvk_act_name;

/* The activation: read from `key` (default `def`) and looked up in `names`
 * (ended by {NULL}); without a key it is always `fixed`, named `def`. */
typedef struct mvk_arch_act {
    const char *key;
    const char *def;
    const mvk_act_name *names;
    moevk_activation fixed;
} mvk_arch_act;

/* How the experts' tensors are stored. */
typedef enum mvk_layout_kind {
    /* gate [F, H], up [F, H], down [H, F] per expert: patterns with {i};
     * gate NULL for a non-gated FFN. Passed zero-copy. */
    MVK_LAYOUT_PER_EXPERT,
    /* gate = the stacked gate_up [E, 2F, H] (expert i: F gate rows, then
     * F up rows), down [E, H, F]; for a non-gated FFN gate NULL and up the
     * stacked up [E, F, H]. Passed zero-copy. */
    MVK_LAYOUT_STACKED,
    /* gpt-oss: gate = gate_up [E, H, 2F] (gate and up interleaved along the
     * last axis), down [E, F, H]; transposed into owned copies. With
     * gate_bias ([E, 2F], interleaved) and down_bias ([E, H]). */
    MVK_LAYOUT_INTERLEAVED,
    /* Llama 4: gate = gate_up [E, H, 2F] (the F gate columns, then the F up
     * columns), down [E, F, H]; transposed into owned copies. Optionally
     * gate_bias ([E, 2F]: F gate biases, then F up biases) and down_bias
     * ([E, H]): OpenAI's privacy filter. */
    MVK_LAYOUT_TRANSPOSED,
    /* DBRX: gate, up and down each [E·F, H] (expert i: rows iF .. iF + F - 1),
     * the gate and up rows passed zero-copy, down (x · W, not x · W^T)
     * transposed into owned copies. */
    MVK_LAYOUT_ROWS,
    /* gate names a tensor that marks a form moevk cannot read: refused
     * with "tensor '<it>' has unsupported dtype <its dtype>: <why>". */
    MVK_LAYOUT_REFUSED,
} mvk_layout_kind;

typedef struct mvk_arch_layout {
    mvk_layout_kind kind;
    const char *what;              /* described in `moevk run`'s output    */
    const char *gate, *up, *down;  /* tensor names (see the kinds)          */
    const char *gate_bias, *down_bias; /* INTERLEAVED, TRANSPOSED            */
    const char *why;               /* MVK_LAYOUT_REFUSED                    */
    /* STACKED: gate_up has a (never read) row block for each identity
     * expert too, after the FFN experts' (LongCat-Flash) */
    int gate_up_all;
    /* PER_EXPERT: each expert's up and down bias vectors ({i}; NLLB-MoE's
     * fc1.bias [F] and fc2.bias [H]), or NULL */
    const char *up_bias_i, *down_bias_i;
} mvk_arch_layout;

/* Which layers hold a MoE block. */
typedef enum mvk_sparse_rule {
    /* layers 0 .. num_layers - 1 of one stack: those mlp_layer_types
     * says "sparse" or moe_layers lists when one is given; else all less the first
     * first_k_dense_replace, those past the last MoE layer, those in
     * mlp_only_layers, those with (N + 1) % decoder_sparse_step != 0 and
     * those with N % expert period != offset (each a no-op when not
     * read) */
    MVK_SPARSE_DECODER,
    /* an encoder (num_layers, encoder_sparse_step) and a decoder stack
     * (num_decoder_layers, decoder step): block N of a stack with step s is
     * sparse when s == 1 or N % s == 1 (s == 0: none) */
    MVK_SPARSE_ENCODER_DECODER,
} mvk_sparse_rule;

typedef struct mvk_arch {
    const char *model_types[MVK_ARCH_NAMES]; /* [0] is its name, then aliases */
    /* config.json: read in this order, each into its field */
    mvk_arch_key keys[MVK_ARCH_KEYS];
    moevk_routing routing;
    int weights_on_input;    /* MOEVK_LAYER_WEIGHTS_ON_INPUT (Llama 4)      */
    mvk_arch_act act;
    /* the shared experts' own activation (MOEVK_LAYER_SHARED_ACTIVATION,
     * limit MVK_CFG_SHARED_SWIGLU_LIMIT) when its def is set (HY-V4: the
     * routed experts clamped, the shared one hidden_act); else `act` */
    mvk_arch_act shared_act;
    /* a swiglu limit of 0 (absent, null or 0) is no clamp: a layer whose
     * routed (or shared) limit is 0 runs the plain SwiGLU there (Step-3.7's
     * per-layer swiglu_limits); otherwise a limit must be positive */
    int zero_limit_unclamped;
    /* layers */
    mvk_sparse_rule sparse;
    const char *layer_prefixes[MVK_MAX_PREFIXES]; /* tried in order: the first
                                                     holding `router` is used */
    const char *decoder_prefix;                   /* MVK_SPARSE_ENCODER_DECODER */
    /* MVK_SPARSE_ENCODER_DECODER: block N of a stack with step s is sparse
     * when (N + 1) % s == 0 (NLLB-MoE) instead of N % s == 1 */
    int sparse_last_of_step;
    /* tensors, relative to the layer prefix. router_bias and
     * correction_bias are required when named (a MVK_CFG_ROUTER_BIAS key
     * may say the router has none). */
    const char *router, *router_bias, *correction_bias;
    /* the router's name where a prefix does not hold `router` (PhiMoE's
     * published block_sparse_moe.gate.weight beside transformers 5's
     * mlp.router.weight), or NULL */
    const char *router_alt;
    const char *output_bias; /* [H] added once to the block's output (JetMoE) */
    /* Gemma 4's input norms (moevk_layer_desc's, eps MVK_CFG_RMS_EPS): with
     * router_norm the router norms its input, times the [H] tensor
     * router_input_scale (when named) and hidden^-1/2; expert_norm names the
     * [H] weight of the experts' input norm; expert_weight_scale the [E]
     * per-expert scale of the routing weights. NULL / 0: none. */
    int router_norm;
    const char *router_input_scale, *expert_norm, *expert_weight_scale;
    const mvk_arch_layout *layouts[MVK_ARCH_LAYOUTS]; /* probed in order */
    const char *shared[3];   /* the shared expert's gate, up, down          */
    /* Inkling: the MVK_CFG_SINK_SHARED shared experts are stacked in
     * `shared` ([S, F, H] gate and up, [S, H, F] down; F the routed width),
     * the router has num_experts + S rows, its last S the shared experts'
     * gates, which join the normalisation (moevk_layer_desc.shared_sink);
     * router_scale names a [1] tensor multiplied into routed_scaling_factor
     * (its gate.global_scale), or NULL */
    int shared_sink;
    const char *router_scale;
    const char *shared_gate; /* its [1, H] sigmoid gate (when shared_ffn > 0) */
    /* a part (`--part`) whose keys are another object of the checkpoint's
     * config.json: ERNIE-4.5-VL's vision expert set, named by vision_config's
     * model_type, sits in the text model's layers and reads text_config.
     * NULL: the part's own config */
    const char *config_from;
} mvk_arch;

/* The architecture whose model_type (or alias) is `model_type`, or NULL. */
const mvk_arch *mvk_arch_find(const char *model_type);
/* The i-th architecture of the table, NULL past its end. */
const mvk_arch *mvk_arch_get(size_t i);
/* Its name: model_types[0] ("unknown" for NULL). */
const char *mvk_arch_name(const mvk_arch *a);
/* The key that sets `field` (NULL when the architecture reads none). */
const mvk_arch_key *mvk_arch_key_of(const mvk_arch *a, mvk_cfg_field field);
/* Features a message may list the architectures of. */
int mvk_arch_has_decoder(const mvk_arch *a);  /* a decoder stack (--decoder) */
int mvk_arch_has_capacity(const mvk_arch *a); /* an expert_capacity          */
/* "mixtral, qwen2_moe, ...": the names of the architectures `has` holds
 * for (NULL: all), into buf. Returns buf. */
const char *mvk_arch_list(char *buf, size_t bufsz, int (*has)(const mvk_arch *a));
/* prefix + pattern into buf with "{N}" and "{i}" replaced by v; -1 when it
 * does not fit. */
int mvk_arch_expand(char *buf, size_t bufsz, const char *prefix, const char *pattern,
                    uint32_t v);

#endif
