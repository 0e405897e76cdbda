/*
 * The supported Hugging Face MoE architectures: one descriptor each.
 *
 * Keys, names and defaults follow transformers' configuration classes
 * (MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig, DeepseekV3Config,
 * Glm4MoeConfig, Dots1Config, OlmoeConfig, FlexOlmoConfig, GptOssConfig,
 * SwitchTransformersConfig) and modeling files (the tensor names of each
 * published layout). The types are in arch.h. A block that computes what a
 * listed one does under another model_type is an alias (flex_olmo) or one
 * line of a shared macro (DEEPSEEK_V3_BLOCK); tests/fixtures/hf_blocks
 * holds transformers' own output for each.
 *
 * Adding an architecture (one descriptor here, plus tests):
 *  1. model_types: config.json's model_type, then any alias.
 *  2. keys, in the order transformers' config class reads them: at least
 *     HIDDEN, FFN (the routed expert's width: moe_intermediate_size where
 *     the config has both), EXPERTS, TOP_K and NUM_LAYERS, each with the
 *     class default; a value the model fixes is a key without names
 *     (Mixtral's NORM_TOPK 1). A default computed from other fields is a
 *     def_of function (switch_transformers' sparse steps); keys it reads
 *     come before it.
 *  3. routing, and act: the activation key, its default and its names
 *     (gated_acts, ffn_acts, or a new list), or `fixed`; shared_act when
 *     the shared experts' activation is another (HY-V4), and
 *     zero_limit_unclamped when a limit of 0 means no clamp (Step-3.7).
 *  4. sparse, layer_prefixes (and decoder_prefix): which layers are MoE
 *     blocks and where their tensors are ("model.layers.{N}.mlp.").
 *  5. router (and router_bias, correction_bias): names under the prefix;
 *     router_alt when another published layout names the router otherwise.
 *  6. layouts, in the order they are probed (a layout is chosen by its
 *     first tensor: expert 0's gate, or up when not gated; none there: the
 *     only readable one, else an error naming each): reuse
 *     per_expert_w123, per_expert_proj, stacked, or write a new
 *     mvk_arch_layout of one of the kinds; a form that is recognised but
 *     not readable is a MVK_LAYOUT_REFUSED entry saying why.
 *     A decoder-only block in transformers' usual form (router
 *     "gate.weight", those three layouts, hidden_act) is HF_DECODER_BLOCK
 *     for 3 to 6, less the routing and the layer prefixes.
 *  7. shared and shared_gate when a SHARED_FFN or SHARED_EXPERTS key can
 *     make shared_ffn > 0 (the same name for gate and up: one [2F, H]
 *     tensor, gate rows first; a name "../x" is x beside the block, under
 *     the layer prefix less its last component: Granite's shared_mlp).
 *  8. Tests (tests/test_model.c): a config_rows row (fields and defaults),
 *     layer_rows rows (which layers, which prefixes), an arch_rows row per
 *     layout (the desc and every weight, then `moevk run` on every
 *     backend); descriptors_are_complete checks the table itself. Then the
 *     architecture list in README.md.
 * A layout that none of the kinds describes is a new mvk_layout_kind and
 * one case in model_layer.c's routed_experts(); a new way of choosing the
 * MoE layers is a new mvk_sparse_rule in mvk_hf_layer_prefixes().
 */
#include "arch.h"

#include <stdio.h>
#include <string.h>

#include "hf_config.h"

/* ---- activations -------------------------------------------------------- */

/* hidden_act of the gated (SwiGLU-family) experts */
static const mvk_act_name gated_acts[] = {
    {"silu", MOEVK_ACT_SWIGLU},
    {"swish", MOEVK_ACT_SWIGLU},
    {"gelu", MOEVK_ACT_GEGLU},
    {"gelu_pytorch_tanh", MOEVK_ACT_GEGLU_TANH},
    {"gelu_new", MOEVK_ACT_GEGLU_TANH},
    {"gelu_fast", MOEVK_ACT_GEGLU_TANH},
    {NULL, MOEVK_ACT_SWIGLU},
};

/* dense_act_fn of non-gated experts */
static const mvk_act_name ffn_acts[] = {
    {"relu", MOEVK_ACT_RELU},
    {"gelu", MOEVK_ACT_GELU},
    {"relu2", MOEVK_ACT_RELU2},
    {NULL, MOEVK_ACT_RELU},
};

#define HIDDEN_ACT {.key = "hidden_act", .def = "silu", .names = gated_acts}

/* hidden_act of experts whose SwiGLU is clamped (silu(min(g, limit)) *
 * clamp(u, +-limit)): only silu (DeepSeek-V4) */
static const mvk_act_name clamped_acts[] = {
    {"silu", MOEVK_ACT_SWIGLU_CLAMP},
    {"swish", MOEVK_ACT_SWIGLU_CLAMP},
    {NULL, MOEVK_ACT_SWIGLU_CLAMP},
};

/* ---- expert layouts --------------------------------------------------------- */

static const mvk_arch_layout per_expert_w123 = {
    .kind = MVK_LAYOUT_PER_EXPERT,
    .what = "per-expert experts.{i}.w1/w3/w2",
    .gate = "experts.{i}.w1.weight",
    .up = "experts.{i}.w3.weight",
    .down = "experts.{i}.w2.weight",
};

static const mvk_arch_layout per_expert_proj = {
    .kind = MVK_LAYOUT_PER_EXPERT,
    .what = "per-expert experts.{i}.gate_proj/up_proj/down_proj",
    .gate = "experts.{i}.gate_proj.weight",
    .up = "experts.{i}.up_proj.weight",
    .down = "experts.{i}.down_proj.weight",
};

/* transformers 5 */
static const mvk_arch_layout stacked = {
    .kind = MVK_LAYOUT_STACKED,
    .what = "stacked experts.gate_up_proj [E, 2F, H] + experts.down_proj [E, H, F]",
    .gate = "experts.gate_up_proj",
    .down = "experts.down_proj",
};

static const mvk_arch_layout gpt_oss_interleaved = {
    .kind = MVK_LAYOUT_INTERLEAVED,
    .what = "stacked gpt-oss experts.gate_up_proj [E, H, 2F] (interleaved)",
    .gate = "experts.gate_up_proj",
    .down = "experts.down_proj",
    .gate_bias = "experts.gate_up_proj_bias",
    .down_bias = "experts.down_proj_bias",
};

/* NLLB-MoE: non-gated experts.expert_{i}.fc1 (up) and fc2 (down), with
 * biases */
static const mvk_arch_layout nllb_fc12 = {
    .kind = MVK_LAYOUT_PER_EXPERT,
    .what = "per-expert experts.expert_{i}.fc1/fc2 with biases",
    .up = "experts.expert_{i}.fc1.weight",
    .down = "experts.expert_{i}.fc2.weight",
    .up_bias_i = "experts.expert_{i}.fc1.bias",
    .down_bias_i = "experts.expert_{i}.fc2.bias",
};

/* LongCat-Flash: stacked, gate_up_proj [E + zero experts, 2F, H] */
static const mvk_arch_layout longcat_stacked = {
    .kind = MVK_LAYOUT_STACKED,
    .what = "stacked experts.gate_up_proj [E + zero experts, 2F, H] + experts.down_proj "
            "[E, H, F]",
    .gate = "experts.gate_up_proj",
    .down = "experts.down_proj",
    .gate_up_all = 1,
};

static const mvk_arch_layout llama4_transposed = {
    .kind = MVK_LAYOUT_TRANSPOSED,
    .what = "stacked Llama 4 experts.gate_up_proj [E, H, 2F] (gate, then up) + "
            "experts.down_proj [E, F, H]",
    .gate = "experts.gate_up_proj",
    .down = "experts.down_proj",
};

/* non-gated, transformers 5 */
static const mvk_arch_layout stacked_up = {
    .kind = MVK_LAYOUT_STACKED,
    .what = "stacked experts.up_proj [E, F, H] + experts.down_proj [E, H, F]",
    .up = "experts.up_proj",
    .down = "experts.down_proj",
};

static const mvk_arch_layout per_expert_up_down = {
    .kind = MVK_LAYOUT_PER_EXPERT,
    .what = "per-expert experts.{i}.up_proj/down_proj",
    .up = "experts.{i}.up_proj.weight",
    .down = "experts.{i}.down_proj.weight",
};

/* JetMoE: its experts' names (gate then up in input_linear) */
static const mvk_arch_layout jetmoe_linear = {
    .kind = MVK_LAYOUT_STACKED,
    .what = "stacked input_linear.weight [E, 2F, H] + output_linear.weight [E, H, F]",
    .gate = "input_linear.weight",
    .down = "output_linear.weight",
};

/* DBRX: three [E·F, H] matrices, w2 applied as x · w2 (transposed) */
static const mvk_arch_layout dbrx_rows = {
    .kind = MVK_LAYOUT_ROWS,
    .what = "DBRX experts.mlp.w1/v1/w2 [E·F, H] (w2 transposed)",
    .gate = "experts.mlp.w1",
    .up = "experts.mlp.v1",
    .down = "experts.mlp.w2",
};

/* OpenAI's privacy filter: Llama 4's transposed layout with gpt-oss's
 * biases, gate and up concatenated (not interleaved) */
static const mvk_arch_layout privacy_filter_transposed = {
    .kind = MVK_LAYOUT_TRANSPOSED,
    .what = "stacked experts.gate_up_proj [E, H, 2F] (gate, then up) and its bias + "
            "experts.down_proj [E, F, H]",
    .gate = "experts.gate_up_proj",
    .down = "experts.down_proj",
    .gate_bias = "experts.gate_up_proj_bias",
    .down_bias = "experts.down_proj_bias",
};

static const mvk_arch_layout gpt_oss_mxfp4 = {
    .kind = MVK_LAYOUT_REFUSED,
    .gate = "experts.gate_up_proj_blocks",
    .why = "the experts are MXFP4-quantized (_blocks/_scales); use a checkpoint dequantized "
           "to bf16",
};

static const mvk_arch_layout switch_wi_wo = {
    .kind = MVK_LAYOUT_PER_EXPERT,
    .what = "per-expert experts.expert_{i}.wi/wo",
    .up = "experts.expert_{i}.wi.weight",
    .down = "experts.expert_{i}.wo.weight",
};

/* ---- switch_transformers' derived defaults ---------------------------------- */

/* SwitchTransformersConfig: num_decoder_layers defaults to num_layers, and
 * each stack's sparse step to its layers // its sparse layers (0 when there
 * are none); stored values win. */
static uint64_t switch_decoder_layers(const mvk_moe_config *c)
{
    return c->num_layers;
}

static uint64_t switch_encoder_step(const mvk_moe_config *c)
{
    return c->num_sparse_encoder_layers ? c->num_layers / c->num_sparse_encoder_layers : 0;
}

static uint64_t switch_decoder_step(const mvk_moe_config *c)
{
    return c->num_sparse_decoder_layers ? c->num_decoder_layers / c->num_sparse_decoder_layers
                                        : 0;
}

/* Nemotron-H's layer count is its layers_block_type's */
static uint64_t nemotron_layers(const mvk_moe_config *c)
{
    return c->n_layer_types;
}

/* Llama 4's and Hunyuan's shared expert is as wide as a routed one */
static uint64_t llama4_shared_ffn(const mvk_moe_config *c)
{
    return c->ffn;
}

/* ---- the table ----------------------------------------------------------- */

#define KEY(f, d, ...) {.field = MVK_CFG_##f, .def = (d), .names = {__VA_ARGS__}}
#define FIXED(f, d) {.field = MVK_CFG_##f, .def = (d)}
/* a key that may be a list, one value per layer */
#define PER_LAYER(f, d, ...) {.field = MVK_CFG_##f, .def = (d), .names = {__VA_ARGS__}, .per_layer = 1}
#define DERIVED(f, fn, ...) {.field = MVK_CFG_##f, .def_of = (fn), .names = {__VA_ARGS__}}

#define DECODER_LAYER "model.layers.{N}.mlp."

/* What the decoder-only blocks share: the "gate" router, the published
 * layouts (transformers 5 stacked first), hidden_act, one layer stack. */
#define HF_DECODER_BLOCK                                                                        \
    .act = HIDDEN_ACT, .sparse = MVK_SPARSE_DECODER, .router = "gate.weight",                  \
    .layouts = {&stacked, &per_expert_w123, &per_expert_proj}

/* Qwen2MoeSparseMoeBlock: softmax top-k (renormalised if norm_topk_prob)
 * and a shared expert gated by sigmoid(x . shared_expert_gate); MoE layers
 * every decoder_sparse_step but mlp_only_layers. Its keys (the class
 * defaults given) and its parts. */
#define QWEN2_MOE_KEYS(hidden, ffn, experts, top_k, norm, shared_ffn, layers)                  \
    KEY(HIDDEN, hidden, "hidden_size"), KEY(FFN, ffn, "moe_intermediate_size"),                \
        KEY(EXPERTS, experts, "num_experts", "num_local_experts"),                             \
        KEY(TOP_K, top_k, "num_experts_per_tok"), KEY(NORM_TOPK, norm, "norm_topk_prob"),      \
        KEY(SHARED_FFN, shared_ffn, "shared_expert_intermediate_size"),                        \
        KEY(NUM_LAYERS, layers, "num_hidden_layers"), KEY(SPARSE_STEP, 1, "decoder_sparse_step"), \
        KEY(MLP_ONLY, 0, "mlp_only_layers")
#define QWEN2_MOE_PARTS QWEN2_MOE_PARTS_AT(DECODER_LAYER)
#define QWEN2_MOE_PARTS_AT(prefix)                                                              \
    .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK, .layer_prefixes = {prefix},        \
    .shared = {"shared_expert.gate_proj.weight", "shared_expert.up_proj.weight",                \
               "shared_expert.down_proj.weight"},                                               \
    .shared_gate = "shared_expert_gate.weight"

/* DeepseekV3MoE: sigmoid scores plus the correction bias choose groups
 * and experts, the weights are the sigmoid scores (normalised) times the
 * scaling factor, shared experts beside; first_k_dense_replace dense
 * layers first. Its keys (the class defaults given) and its parts. */
#define DEEPSEEK_V3_KEYS(hidden, ffn, experts, top_k, n_group, topk_group, scaling, norm,     \
                         n_shared, first_dense, layers)                                       \
    DEEPSEEK_V3_KEYS_AS("n_routed_experts", "n_shared_experts", hidden, ffn, experts, top_k,    \
                        n_group, topk_group, scaling, norm, n_shared, first_dense, layers)
/* the same with the names of the expert count and the shared count
 * (NULL: no shared experts) */
#define DEEPSEEK_V3_KEYS_AS(experts_key, shared_key, hidden, ffn, experts, top_k, n_group,     \
                            topk_group, scaling, norm, n_shared, first_dense, layers)          \
    KEY(HIDDEN, hidden, "hidden_size"), KEY(FFN, ffn, "moe_intermediate_size"),                \
        KEY(EXPERTS, experts, experts_key, "num_local_experts"),                               \
        KEY(TOP_K, top_k, "num_experts_per_tok", "num_experts_per_token"),                    \
        KEY(N_GROUP, n_group, "n_group", "num_expert_group"),                                 \
        KEY(TOPK_GROUP, topk_group, "topk_group"),                                            \
        KEY(SCALING, scaling, "routed_scaling_factor", "router_scaling_factor"),              \
        KEY(NORM_TOPK, norm, "norm_topk_prob", "moe_renormalize"),                            \
        KEY(SHARED_EXPERTS, n_shared, shared_key),                                            \
        KEY(FIRST_K_DENSE, first_dense, "first_k_dense_replace"),                              \
        KEY(NUM_LAYERS, layers, "num_hidden_layers"), KEY(LAYER_TYPES, 0, "mlp_layer_types")
/* the parts, with the correction bias under `bias` (most: in the router) */
#define DEEPSEEK_V3_PARTS_BIAS(bias, ...)                                                       \
    .routing = MOEVK_ROUTING_SIGMOID_GROUPED, HF_DECODER_BLOCK, .layer_prefixes = {__VA_ARGS__}, \
    .correction_bias = bias,                                                                   \
    .shared = {"shared_experts.gate_proj.weight", "shared_experts.up_proj.weight",              \
               "shared_experts.down_proj.weight"}
#define DEEPSEEK_V3_PARTS(...) DEEPSEEK_V3_PARTS_BIAS("gate.e_score_correction_bias", __VA_ARGS__)
#define DEEPSEEK_SHARED                                                                         \
    .shared = {"shared_experts.gate_proj.weight", "shared_experts.up_proj.weight",              \
               "shared_experts.down_proj.weight"}
/* GraniteMoE's block with the shared MLP of the decoder layer (beside the
 * block: "../"), the class default of shared_intermediate_size given */
#define GRANITE_SHARED_KEYS(shared_ffn)                                                        \
    KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 11008, "intermediate_size"),                    \
        KEY(EXPERTS, 8, "num_local_experts"), KEY(TOP_K, 2, "num_experts_per_tok"),             \
        KEY(SHARED_FFN, shared_ffn, "shared_intermediate_size"),                                \
        KEY(NUM_LAYERS, 32, "num_hidden_layers")
#define GRANITE_SHARED_PARTS                                                                    \
    .routing = MOEVK_ROUTING_TOPK_SOFTMAX, .act = HIDDEN_ACT, .sparse = MVK_SPARSE_DECODER,    \
    .layer_prefixes = {"model.layers.{N}.block_sparse_moe."}, .router = "router.weight",       \
    .layouts = {&stacked},                                                                      \
    .shared = {"../shared_mlp.input_linear.weight", "../shared_mlp.input_linear.weight",        \
               "../shared_mlp.output_linear.weight"}
/* a key the class has no default for (None): the config must give it */
#define REQUIRED(f, ...) {.field = MVK_CFG_##f, .names = {__VA_ARGS__}, .required = 1}

static const mvk_arch archs[] = {
    {
        /* MiniMaxSparseMoeBlock is MixtralSparseMoeBlock (its jitter only
         * in training), with the same defaults */
        .model_types = {"mixtral", "minimax"},
        .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 14336, "intermediate_size"),
                 KEY(EXPERTS, 8, "num_local_experts"), KEY(TOP_K, 2, "num_experts_per_tok"),
                 KEY(NUM_LAYERS, 32, "num_hidden_layers"),
                 FIXED(NORM_TOPK, 1) /* MixtralSparseMoeBlock always renormalises */},
        .routing = MOEVK_ROUTING_SOFTMAX_TOPK,
        HF_DECODER_BLOCK,
        /* published checkpoints (transformers 4), then transformers 5 naming */
        .layer_prefixes = {"model.layers.{N}.block_sparse_moe.", DECODER_LAYER},
    },
    {.model_types = {"qwen2_moe"},
     .keys = {QWEN2_MOE_KEYS(2048, 1408, 60, 4, 0, 5632, 24)},
     QWEN2_MOE_PARTS},
    /* Qwen3NextSparseMoeBlock is Qwen2MoeSparseMoeBlock, other defaults */
    {.model_types = {"qwen3_next"},
     .keys = {QWEN2_MOE_KEYS(2048, 512, 512, 10, 1, 512, 48)},
     QWEN2_MOE_PARTS},
    /* the text models of Qwen3.5-MoE (always renormalised) and Qwen4-Exp:
     * Qwen2-MoE blocks under model.language_model. */
    {.model_types = {"qwen3_5_moe_text"},
     .keys = {QWEN2_MOE_KEYS(2048, 512, 256, 8, 1, 512, 40)},
     QWEN2_MOE_PARTS_AT("model.language_model.layers.{N}.mlp.")},
    {.model_types = {"qwen4_exp_text"},
     .keys = {QWEN2_MOE_KEYS(2048, 512, 512, 10, 1, 512, 40)},
     QWEN2_MOE_PARTS_AT("model.language_model.layers.{N}.mlp.")},
    {
        .model_types = {"qwen3_moe"},
        .keys = {KEY(HIDDEN, 2048, "hidden_size"), KEY(FFN, 768, "moe_intermediate_size"),
                 KEY(EXPERTS, 128, "num_experts", "num_local_experts"),
                 KEY(TOP_K, 8, "num_experts_per_tok"), KEY(NORM_TOPK, 0, "norm_topk_prob"),
                 KEY(NUM_LAYERS, 24, "num_hidden_layers"),
                 KEY(SPARSE_STEP, 1, "decoder_sparse_step"), KEY(MLP_ONLY, 0, "mlp_only_layers")},
        .routing = MOEVK_ROUTING_SOFTMAX_TOPK,
        HF_DECODER_BLOCK,
        .layer_prefixes = {DECODER_LAYER},
    },
    /* MellumSparseMoeBlock: Qwen3-MoE's, MoE layers by mlp_layer_types */
    {.model_types = {"mellum"},
     .keys = {KEY(HIDDEN, 2304, "hidden_size"), KEY(FFN, 896, "moe_intermediate_size"),
              KEY(EXPERTS, 64, "num_local_experts", "num_experts"),
              KEY(TOP_K, 8, "num_experts_per_tok"), KEY(NORM_TOPK, 1, "norm_topk_prob"),
              KEY(NUM_LAYERS, 28, "num_hidden_layers"), KEY(LAYER_TYPES, 0, "mlp_layer_types")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK, .layer_prefixes = {DECODER_LAYER}},
    /* JambaSparseMoeBlock: softmax top-k, not renormalised, in the layers
     * with N % expert_layer_period == expert_layer_offset */
    {.model_types = {"jamba"},
     .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 14336, "intermediate_size"),
              KEY(EXPERTS, 16, "num_experts"), KEY(TOP_K, 2, "num_experts_per_tok"),
              FIXED(NORM_TOPK, 0), KEY(NUM_LAYERS, 32, "num_hidden_layers"),
              KEY(EXPERT_PERIOD, 2, "expert_layer_period"),
              KEY(EXPERT_OFFSET, 1, "expert_layer_offset")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, .act = HIDDEN_ACT, .sparse = MVK_SPARSE_DECODER,
     .layer_prefixes = {"model.layers.{N}.feed_forward."}, .router = "router.weight",
     .layouts = {&stacked, &per_expert_proj}},
    {
        /* the text model of Qwen3-VL-MoE (config.json's text_config; its
         * tensors under model.language_model.): Qwen3-MoE experts, the top
         * k always renormalised */
        .model_types = {"qwen3_vl_moe_text"},
        .keys = {KEY(HIDDEN, 2048, "hidden_size"), KEY(FFN, 1408, "moe_intermediate_size"),
                 KEY(EXPERTS, 60, "num_local_experts", "num_experts"),
                 KEY(TOP_K, 4, "num_experts_per_tok"), FIXED(NORM_TOPK, 1),
                 KEY(NUM_LAYERS, 24, "num_hidden_layers"),
                 KEY(SPARSE_STEP, 1, "decoder_sparse_step"), KEY(MLP_ONLY, 0, "mlp_only_layers")},
        .routing = MOEVK_ROUTING_SOFTMAX_TOPK,
        HF_DECODER_BLOCK,
        .layer_prefixes = {"model.language_model.layers.{N}.mlp."},
    },
    /* (also the text model of Kimi-K2.5, under model.language_model.) */
    {.model_types = {"deepseek_v3"},
     .keys = {DEEPSEEK_V3_KEYS(7168, 2048, 256, 8, 8, 4, 2.5f, 1, 1, 3, 61)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER, "model.language_model.layers.{N}.mlp.")},
    /* DeepseekV32MoE, GlmMoeDsaMoE, Glm4MoeLiteMoE, ExaoneMoeSparseMoEBlock,
     * SolarOpenMoE, KimiLinearMoE, BailingHybridMoE, MiMoV2FlashMoE (no
     * shared experts), BeamMoE (none either; its scale multiplies the
     * combined output, which is the weights' scale), AXK2MoE (no groups by
     * default) and the configuration-only sarvam_mla are DeepseekV3MoE
     * under their names and defaults; their MoE layers are mlp_layer_types'
     * "sparse" ones */
    {.model_types = {"deepseek_v32"},
     .keys = {DEEPSEEK_V3_KEYS(7168, 2048, 256, 8, 8, 4, 2.5f, 1, 1, 3, 61)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    {.model_types = {"glm_moe_dsa"},
     .keys = {DEEPSEEK_V3_KEYS(6144, 2048, 256, 8, 1, 1, 2.5f, 1, 1, 3, 78)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    {.model_types = {"glm4_moe_lite"},
     .keys = {DEEPSEEK_V3_KEYS(2048, 1536, 64, 4, 1, 1, 1.8f, 1, 1, 1, 47)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    {.model_types = {"exaone_moe"},
     .keys = {DEEPSEEK_V3_KEYS_AS("num_experts", "num_shared_experts", 4096, 1024, 64, 8, 1, 1,
                                  2.5f, 1, 1, 1, 32)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    {.model_types = {"solar_open"},
     .keys = {DEEPSEEK_V3_KEYS(4096, 1280, 128, 8, 1, 1, 1.0f, 1, 1, 0, 48)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    {.model_types = {"kimi_linear"},
     .keys = {DEEPSEEK_V3_KEYS_AS("num_experts", "num_shared_experts", 2304, 1024, 256, 8, 1, 1,
                                  2.446f, 1, 1, 1, 27)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    {.model_types = {"bailing_hybrid"},
     .keys = {DEEPSEEK_V3_KEYS_AS("num_experts", "num_shared_experts", 2560, 768, 512, 8, 8, 4,
                                  2.5f, 1, 1, 2, 42)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    {.model_types = {"mimo_v2_flash"},
     .keys = {DEEPSEEK_V3_KEYS_AS("n_routed_experts", NULL, 4096, 2048, 256, 8, 1, 1, 1.0f, 1, 0,
                                  1, 48)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    {.model_types = {"beam"},
     .keys = {DEEPSEEK_V3_KEYS_AS("num_experts", NULL, 5120, 2560, 256, 8, 8, 4, 2.5f, 1, 0, 3,
                                  52)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    {.model_types = {"axk2"},
     .keys = {DEEPSEEK_V3_KEYS(2048, 512, 128, 8, 1, 1, 2.5f, 1, 1, 1, 48)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    {.model_types = {"sarvam_mla"},
     .keys = {DEEPSEEK_V3_KEYS(4096, 2048, 128, 8, 1, 1, 2.5f, 1, 1, 1, 32)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    /* HYV3MoE: DeepseekV3MoE without groups, its correction bias in the
     * block (mlp.e_score_correction_bias), always normalised */
    {.model_types = {"hy_v3"},
     .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 1536, "moe_intermediate_size"),
              KEY(EXPERTS, 192, "num_experts"), KEY(TOP_K, 8, "num_experts_per_tok"),
              KEY(SCALING, 2.826f, "router_scaling_factor"), FIXED(NORM_TOPK, 1),
              KEY(SHARED_EXPERTS, 1, "num_shared_experts"),
              KEY(NUM_LAYERS, 80, "num_hidden_layers"), KEY(LAYER_TYPES, 0, "mlp_layer_types")},
     DEEPSEEK_V3_PARTS_BIAS("e_score_correction_bias", DECODER_LAYER)},
    /* Llama4TextMoe: the top-k logits' sigmoids scale the experts' inputs
     * (MOEVK_LAYER_WEIGHTS_ON_INPUT), no normalisation; a shared expert of
     * the same width; MoE layers listed in moe_layers (else every
     * interleave_moe_layer_step-th) */
    {.model_types = {"llama4_text"},
     .keys = {KEY(HIDDEN, 5120, "hidden_size"), KEY(FFN, 8192, "intermediate_size"),
              KEY(EXPERTS, 16, "num_local_experts"), KEY(TOP_K, 1, "num_experts_per_tok"),
              FIXED(NORM_TOPK, 0), KEY(NUM_LAYERS, 48, "num_hidden_layers"),
              KEY(MOE_LAYERS, 0, "moe_layers"), KEY(SPARSE_STEP, 1, "interleave_moe_layer_step"),
              DERIVED(SHARED_FFN, llama4_shared_ffn)},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .weights_on_input = 1, .act = HIDDEN_ACT,
     .sparse = MVK_SPARSE_DECODER,
     .layer_prefixes = {"language_model.model.layers.{N}.feed_forward.",
                        "model.layers.{N}.feed_forward."},
     .router = "router.weight", .layouts = {&llama4_transposed},
     .shared = {"shared_expert.gate_proj.weight", "shared_expert.up_proj.weight",
                "shared_expert.down_proj.weight"}},
    /* NemotronHMoE (the "moe" blocks of layers_block_type): DeepSeek-V3's
     * router, non-gated relu^2 experts and shared expert; experts in a
     * latent space (moe_latent_size) are refused */
    {.model_types = {"nemotron_h"},
     .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 7688, "moe_intermediate_size"),
              KEY(EXPERTS, 8, "n_routed_experts"), KEY(TOP_K, 2, "num_experts_per_tok"),
              KEY(N_GROUP, 1, "n_group"), KEY(TOPK_GROUP, 1, "topk_group"),
              KEY(SCALING, 1.0f, "routed_scaling_factor"), KEY(NORM_TOPK, 1, "norm_topk_prob"),
              KEY(SHARED_FFN, 7688, "moe_shared_expert_intermediate_size"),
              KEY(LAYER_TYPES, 0, "layers_block_type"),
              DERIVED(NUM_LAYERS, nemotron_layers, "num_hidden_layers"),
              KEY(LATENT, 0, "moe_latent_size")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED,
     .act = {.key = "mlp_hidden_act", .def = "relu2", .names = ffn_acts},
     .sparse = MVK_SPARSE_DECODER,
     /* the third: Nemotron-H-Omni's language model */
     .layer_prefixes = {"model.layers.{N}.mixer.", "backbone.layers.{N}.mixer.",
                        "language_model.model.layers.{N}.mixer."},
     .router = "gate.weight", .correction_bias = "gate.e_score_correction_bias",
     .layouts = {&stacked_up, &per_expert_up_down},
     .shared = {NULL, "shared_experts.up_proj.weight", "shared_experts.down_proj.weight"}},
    /* the text model of GLM-5-Next: DeepseekV3MoE with clamped SwiGLU
     * experts (silu(min(g, swiglu_limit)) * clamp(u, +-swiglu_limit)),
     * routed and shared */
    {.model_types = {"glm5_next_text"},
     .keys = {DEEPSEEK_V3_KEYS(4096, 2048, 288, 8, 1, 1, 2.5f, 1, 1, 3, 46),
              KEY(SWIGLU_LIMIT, 10.0f, "swiglu_limit")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED,
     .act = {.def = "silu (clamped)", .fixed = MOEVK_ACT_SWIGLU_CLAMP},
     .sparse = MVK_SPARSE_DECODER, .router = "gate.weight",
     .layouts = {&stacked, &per_expert_w123, &per_expert_proj},
     .layer_prefixes = {"model.language_model.layers.{N}.mlp."},
     .correction_bias = "gate.e_score_correction_bias", DEEPSEEK_SHARED},
    /* HYV4MoE (and the text model of HY-V4-VL, under model.language_model.):
     * DeepseekV3MoE's router (the correction bias in the router, groups),
     * routed experts with the clamped SwiGLU (silu(min(g, swiglu_limit)) *
     * clamp(u, +-swiglu_limit)), a shared expert with the plain hidden_act;
     * MoE layers by mlp_layer_types (by default all but the first) */
#define HY_V4(name, hidden, ffn, layers, prefix)                                               \
    {.model_types = {name},                                                                     \
     .keys = {KEY(HIDDEN, hidden, "hidden_size"), KEY(FFN, ffn, "moe_intermediate_size"),     \
              KEY(EXPERTS, 256, "n_routed_experts", "num_local_experts"),                      \
              KEY(TOP_K, 8, "num_experts_per_tok"), KEY(N_GROUP, 1, "n_group"),               \
              KEY(TOPK_GROUP, 1, "topk_group"), KEY(SCALING, 2.827f, "routed_scaling_factor"),  \
              KEY(NORM_TOPK, 1, "norm_topk_prob"), KEY(SHARED_EXPERTS, 1, "n_shared_experts"), \
              FIXED(FIRST_K_DENSE, 1), KEY(NUM_LAYERS, layers, "num_hidden_layers"),           \
              KEY(LAYER_TYPES, 0, "mlp_layer_types"), KEY(SWIGLU_LIMIT, 10.0f, "swiglu_limit")}, \
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED,                                                  \
     .act = {.def = "silu (clamped)", .fixed = MOEVK_ACT_SWIGLU_CLAMP}, .shared_act = HIDDEN_ACT, \
     .sparse = MVK_SPARSE_DECODER, .router = "gate.weight",                                     \
     .layouts = {&stacked, &per_expert_w123, &per_expert_proj}, .layer_prefixes = {prefix},     \
     .correction_bias = "gate.e_score_correction_bias", DEEPSEEK_SHARED}
    /* DeepseekV4SparseMoeBlock: scoring_func's scores (sqrt(softplus(l)) by
     * default, or sigmoid) plus the correction bias choose the top k (no
     * groups); the weights are the scores, always normalised (+ 1e-20),
     * times routed_scaling_factor; routed experts and one shared expert of
     * the same width (n_shared_experts is not read), both with the SwiGLU
     * clamped at swiglu_limit. Layers "hash_moe" in mlp_layer_types (or
     * below num_hash_layers without it) choose experts by token id and
     * are refused. */
    {.model_types = {"deepseek_v4"},
     .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 2048, "moe_intermediate_size"),
              KEY(EXPERTS, 256, "n_routed_experts", "num_local_experts"),
              KEY(TOP_K, 6, "num_experts_per_tok"), FIXED(NORM_TOPK, 1),
              KEY(SCORING, 1, "scoring_func"), KEY(SCALING, 1.5f, "routed_scaling_factor"),
              FIXED(SHARED_EXPERTS, 1), KEY(MLP_BIAS, 0, "mlp_bias"),
              KEY(NUM_LAYERS, 43, "num_hidden_layers"), KEY(LAYER_TYPES, 0, "mlp_layer_types"),
              KEY(HASH_LAYERS, 3, "num_hash_layers"), KEY(SWIGLU_LIMIT, 10.0f, "swiglu_limit")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED,
     .act = {.key = "hidden_act", .def = "silu", .names = clamped_acts},
     .sparse = MVK_SPARSE_DECODER, .router = "gate.weight",
     .layouts = {&stacked, &per_expert_w123, &per_expert_proj}, .layer_prefixes = {DECODER_LAYER},
     .correction_bias = "gate.e_score_correction_bias", DEEPSEEK_SHARED},
    HY_V4("hy_v4", 2816, 768, 34, DECODER_LAYER),
    HY_V4("hy_v4_vl_text", 6144, 2048, 78, "model.language_model.layers.{N}.mlp."),
#undef HY_V4
    /* Step3p7SparseMoeBlock (the text model of Step-3.7, model_type step3p5,
     * under model.language_model.): sigmoid scores plus the correction bias
     * choose the top k, always normalised, the routed output times
     * moe_router_scaling_factor; the SwiGLU clamped after its silu
     * (min(silu(g), l) * clamp(u, +-l)) with a limit per layer for the
     * routed experts (swiglu_limits) and for the shared one
     * (swiglu_limits_shared), 0 or null: not clamped; hidden_act is
     * always silu; MoE layers by mlp_layer_types (by default from the
     * fourth) */
    {.model_types = {"step3p5"},
     .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 1280, "moe_intermediate_size"),
              KEY(EXPERTS, 288, "n_routed_experts", "moe_num_experts"),
              KEY(TOP_K, 8, "num_experts_per_tok", "moe_top_k"), FIXED(NORM_TOPK, 1),
              KEY(SCALING, 1.0f, "moe_router_scaling_factor"),
              KEY(SHARED_FFN, 1280, "share_expert_dim", "share_expert_dims"),
              KEY(MLP_BIAS, 0, "mlp_bias"), FIXED(FIRST_K_DENSE, 3),
              KEY(NUM_LAYERS, 45, "num_hidden_layers"), KEY(LAYER_TYPES, 0, "mlp_layer_types"),
              PER_LAYER(SWIGLU_LIMIT, 0.0f, "swiglu_limits"),
              PER_LAYER(SHARED_SWIGLU_LIMIT, 0.0f, "swiglu_limits_shared")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED,
     .act = {.def = "silu (clamped after)", .fixed = MOEVK_ACT_SWIGLU_POSTCLAMP},
     .shared_act = {.def = "silu (clamped after)", .fixed = MOEVK_ACT_SWIGLU_POSTCLAMP},
     .zero_limit_unclamped = 1, .sparse = MVK_SPARSE_DECODER, .router = "gate.weight",
     .layouts = {&stacked, &per_expert_proj},
     .layer_prefixes = {"model.language_model.layers.{N}.mlp."},
     .correction_bias = "gate.e_score_correction_bias", DEEPSEEK_SHARED},
    /* InklingMoE (the text model of Inkling, under model.language_model. in
     * the multimodal model): sigmoid scores plus the correction bias choose
     * the top k of the router's first n_routed_experts rows; its last
     * n_shared_experts rows gate as many shared experts of the routed
     * width, and their sigmoids join the normalisation as a sink (a softmax
     * over the log-sigmoids of the k routed and the shared logits); the
     * weights and gates times route_scale times gate.global_scale.
     * shared_expert_sink is not read (transformers always sinks);
     * MoE layers by mlp_layer_types */
    {.model_types = {"inkling_text"},
     .keys = {KEY(HIDDEN, 6144, "hidden_size"), KEY(FFN, 3072, "moe_intermediate_size"),
              KEY(EXPERTS, 256, "n_routed_experts", "num_local_experts"),
              KEY(TOP_K, 6, "num_experts_per_tok"), FIXED(NORM_TOPK, 1),
              KEY(SINK_SHARED, 2, "n_shared_experts"), KEY(SCALING, 8.0f, "route_scale"),
              KEY(NUM_LAYERS, 48, "num_hidden_layers"),
              KEY(LAYER_TYPES, 0, "mlp_layer_types")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .act = HIDDEN_ACT, .sparse = MVK_SPARSE_DECODER,
     .router = "gate.weight", .correction_bias = "gate.e_score_correction_bias",
     .router_scale = "gate.global_scale", .layouts = {&stacked},
     .layer_prefixes = {"model.language_model.layers.{N}.mlp.", "model.layers.{N}.mlp."},
     .shared = {"shared_experts.gate_proj", "shared_experts.up_proj", "shared_experts.down_proj"},
     .shared_sink = 1},
    /* Inkling2SparseMoeBlock (the text models of Inkling-2 and
     * Inkling-2-Loop; under model.language_model. in the multimodal
     * models): sigmoid scores (scoring_func) plus the correction bias
     * choose the top k, always normalised, times route_scale; the
     * soft-capped SwiGLU mlp_gate_softcap tanh(g / mlp_gate_softcap)
     * sigmoid(g) * mlp_up_softcap tanh(u / mlp_up_softcap); no shared
     * expert; every layer MoE */
#define INKLING2(name, hidden, ffn, experts, layers)                                           \
    {.model_types = {name},                                                                     \
     .keys = {KEY(HIDDEN, hidden, "hidden_size"), KEY(FFN, ffn, "moe_intermediate_size"),     \
              KEY(EXPERTS, experts, "n_routed_experts", "num_local_experts"),                  \
              KEY(TOP_K, 8, "num_experts_per_tok"), FIXED(NORM_TOPK, 1),                       \
              KEY(SCALING, 8.0f, "route_scale", "routed_scaling_factor"),                      \
              KEY(SCORE_FN, 0, "scoring_func"), KEY(SOFTCAP_GATE, 4.0f, "mlp_gate_softcap"),   \
              KEY(SOFTCAP_UP, 25.0f, "mlp_up_softcap"), KEY(NUM_LAYERS, layers, "num_hidden_layers")}, \
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED,                                                  \
     .act = {.def = "silu (soft-capped)", .fixed = MOEVK_ACT_SWIGLU_SOFTCAP},                  \
     .sparse = MVK_SPARSE_DECODER, .router = "gate.weight", .layouts = {&stacked},              \
     .layer_prefixes = {DECODER_LAYER, "model.language_model.layers.{N}.mlp."},                 \
     .correction_bias = "gate.e_score_correction_bias"}
    INKLING2("inkling2_text", 4608, 2304, 384, 48),
    INKLING2("inkling2_loop_text", 2304, 1152, 128, 24),
#undef INKLING2
    /* AfmoeSparseMoeBlock: sigmoid scores plus the block's expert_bias
     * choose, always normalised, times route_scale; shared experts; the
     * first num_dense_layers layers dense */
    {.model_types = {"afmoe"},
     .keys = {KEY(HIDDEN, 2048, "hidden_size"), KEY(FFN, 1408, "moe_intermediate_size"),
              KEY(EXPERTS, 64, "num_experts"), KEY(TOP_K, 6, "num_experts_per_tok"),
              FIXED(NORM_TOPK, 1), KEY(SCALING, 1.0f, "route_scale"),
              KEY(SHARED_EXPERTS, 2, "num_shared_experts"),
              KEY(FIRST_K_DENSE, 1, "num_dense_layers"), KEY(NUM_LAYERS, 32, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .act = HIDDEN_ACT, .sparse = MVK_SPARSE_DECODER,
     .layer_prefixes = {DECODER_LAYER}, .router = "router.gate.weight",
     .correction_bias = "expert_bias", .layouts = {&stacked, &per_expert_proj}, DEEPSEEK_SHARED},
    /* LaraMiniSparseMoeBlock: Qwen3-MoE's routing and an ungated shared
     * expert */
    {.model_types = {"lara_mini"},
     .keys = {KEY(HIDDEN, 1024, "hidden_size"), KEY(FFN, 512, "moe_intermediate_size"),
              KEY(EXPERTS, 128, "num_experts"), KEY(TOP_K, 4, "num_experts_per_tok"),
              KEY(NORM_TOPK, 1, "norm_topk_prob"),
              KEY(SHARED_FFN, 512, "shared_expert_intermediate_size"),
              KEY(NUM_LAYERS, 34, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK, .layer_prefixes = {DECODER_LAYER},
     .shared = {"shared_expert.gate_proj.weight", "shared_expert.up_proj.weight",
                "shared_expert.down_proj.weight"}},
    /* FlintSparseMoeBlock: the top-k sigmoids (no bias, no groups),
     * optionally normalised, an ungated shared expert; MoE layers every
     * decoder_sparse_step but mlp_only_layers (the class default [0, 1]
     * is only taken from a config that writes it) */
    {.model_types = {"flint"},
     .keys = {KEY(HIDDEN, 2048, "hidden_size"), KEY(FFN, 512, "moe_intermediate_size"),
              KEY(EXPERTS, 256, "num_experts"), KEY(TOP_K, 6, "num_experts_per_tok"),
              KEY(NORM_TOPK, 1, "norm_topk_prob"),
              KEY(SHARED_FFN, 1024, "shared_expert_intermediate_size"),
              KEY(NUM_LAYERS, 49, "num_hidden_layers"), KEY(SPARSE_STEP, 1, "decoder_sparse_step"),
              KEY(MLP_ONLY, 0, "mlp_only_layers")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED, HF_DECODER_BLOCK, .layer_prefixes = {DECODER_LAYER},
     .shared = {"shared_expert.gate_proj.weight", "shared_expert.up_proj.weight",
                "shared_expert.down_proj.weight"}},
    /* the text model of Aria: top-k on the logits, softmax over the k,
     * experts stored transposed (Llama 4's layout), silu whatever
     * hidden_act says, shared experts */
    {.model_types = {"aria_text"},
     .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 4096, "intermediate_size"),
              KEY(EXPERTS, 8, "moe_num_experts"), KEY(TOP_K, 2, "moe_topk"),
              KEY(SHARED_EXPERTS, 2, "moe_num_shared_experts"),
              KEY(NUM_LAYERS, 32, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_TOPK_SOFTMAX, .act = {.def = "silu", .fixed = MOEVK_ACT_SWIGLU},
     .sparse = MVK_SPARSE_DECODER,
     .layer_prefixes = {"model.language_model.layers.{N}.mlp.", DECODER_LAYER},
     .router = "router.weight", .layouts = {&llama4_transposed}, DEEPSEEK_SHARED},
    /* the text model of Mistral Large 3/4: Mistral 4's block, always
     * normalised, under model.language_model. */
    {.model_types = {"mistral_large4_text"},
     .keys = {KEY(HIDDEN, 6144, "hidden_size"), KEY(FFN, 6144, "moe_intermediate_size"),
              KEY(EXPERTS, 128, "n_routed_experts", "num_local_experts"),
              KEY(TOP_K, 4, "num_experts_per_tok"), KEY(N_GROUP, 1, "n_group"),
              KEY(TOPK_GROUP, 1, "topk_group"), KEY(SCALING, 1.0f, "routed_scaling_factor"),
              FIXED(NORM_TOPK, 1), KEY(SHARED_EXPERTS, 1, "n_shared_experts"),
              KEY(FIRST_K_DENSE, 1, "first_k_dense_replace"),
              KEY(NUM_LAYERS, 72, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK,
     .layer_prefixes = {"model.language_model.layers.{N}.mlp."}, DEEPSEEK_SHARED},
    /* JetMoeMoE: GraniteMoE's routing (top-k on the logits, softmax over
     * the k), SwiGLU experts, one bias added to the block's output (its
     * mixture of attention experts is not an FFN block) */
    {.model_types = {"jetmoe"},
     .keys = {KEY(HIDDEN, 2048, "hidden_size"), KEY(FFN, 5632, "intermediate_size"),
              KEY(EXPERTS, 8, "num_local_experts"), KEY(TOP_K, 2, "num_experts_per_tok"),
              KEY(NUM_LAYERS, 12, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_TOPK_SOFTMAX,
     .act = {.key = "activation_function", .def = "silu", .names = gated_acts},
     .sparse = MVK_SPARSE_DECODER, .layer_prefixes = {DECODER_LAYER},
     .router = "router.layer.weight", .output_bias = "bias", .layouts = {&jetmoe_linear}},
    /* Cohere2MoeSparseMoeBlock: top-k on the logits, then softmax over the
     * k or (expert_selection_fn "sigmoid") their sigmoids, optionally
     * normalised; a shared expert of num_shared_experts x intermediate_size,
     * by default averaged with the routed output */
    {.model_types = {"cohere2_moe"},
     .keys = {KEY(HIDDEN, 8192, "hidden_size"), KEY(FFN, 22528, "intermediate_size"),
              KEY(EXPERTS, 8, "num_experts", "num_local_experts"),
              KEY(TOP_K, 2, "num_experts_per_tok"), KEY(NORM_TOPK, 1, "norm_topk_prob"),
              KEY(SELECTION_FN, 0, "expert_selection_fn"),
              KEY(SHARED_EXPERTS, 0, "num_shared_experts"),
              KEY(SHARED_COMBINE, 1, "shared_expert_combination_strategy"),
              KEY(NUM_LAYERS, 32, "num_hidden_layers"), KEY(LAYER_TYPES, 0, "mlp_layer_types")},
     .routing = MOEVK_ROUTING_TOPK_SOFTMAX, HF_DECODER_BLOCK, .layer_prefixes = {DECODER_LAYER},
     DEEPSEEK_SHARED},
    /* MiniMaxM2SparseMoeBlock: sigmoid scores plus the block's correction
     * bias choose the top k, no groups, always normalised */
    {.model_types = {"minimax_m2"},
     .keys = {KEY(HIDDEN, 3072, "hidden_size"), KEY(FFN, 1536, "intermediate_size"),
              KEY(EXPERTS, 256, "num_local_experts"), KEY(TOP_K, 8, "num_experts_per_tok"),
              FIXED(NORM_TOPK, 1), KEY(NUM_LAYERS, 62, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED, HF_DECODER_BLOCK,
     .layer_prefixes = {"model.layers.{N}.block_sparse_moe.", DECODER_LAYER},
     .correction_bias = "e_score_correction_bias"},
    /* DeepseekV2Moe: softmax probabilities, greedy top-k or (topk_method
     * group_limited_greedy) groups scored by their best expert, times the
     * scaling factor, never renormalised (the router does not read
     * norm_topk_prob); shared experts beside */
    {.model_types = {"deepseek_v2"},
     .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 1407, "moe_intermediate_size"),
              KEY(EXPERTS, 64, "n_routed_experts", "num_experts"),
              REQUIRED(TOP_K, "num_experts_per_tok"), KEY(N_GROUP, 1, "n_group"),
              KEY(TOPK_GROUP, 1, "topk_group"), KEY(TOPK_METHOD, 0, "topk_method"),
              KEY(SCALING, 1.0f, "routed_scaling_factor"), FIXED(NORM_TOPK, 0),
              KEY(SHARED_EXPERTS, 2, "n_shared_experts"),
              KEY(FIRST_K_DENSE, 0, "first_k_dense_replace"),
              KEY(NUM_LAYERS, 32, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK, .layer_prefixes = {DECODER_LAYER},
     DEEPSEEK_SHARED},
    /* Mistral4MoE: softmax probabilities, DeepSeek-V3's groups (the sum of
     * the two best), optionally normalised, times the scaling factor */
    {.model_types = {"mistral4"},
     .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 2048, "moe_intermediate_size"),
              KEY(EXPERTS, 128, "n_routed_experts", "num_local_experts"),
              KEY(TOP_K, 4, "num_experts_per_tok"), KEY(N_GROUP, 1, "n_group"),
              KEY(TOPK_GROUP, 1, "topk_group"), KEY(SCALING, 1.0f, "routed_scaling_factor"),
              KEY(NORM_TOPK, 1, "norm_topk_prob"), KEY(SHARED_EXPERTS, 1, "n_shared_experts"),
              KEY(FIRST_K_DENSE, 0, "first_k_dense_replace"),
              KEY(NUM_LAYERS, 36, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK, .layer_prefixes = {DECODER_LAYER},
     DEEPSEEK_SHARED},
    /* Ernie4_5_MoeSparseMoeBlock: the correction bias is added to the
     * softmax probabilities to choose, the weights are the probabilities
     * over max(their sum, moe_norm_min); MoE layers from
     * moe_layer_start_index to moe_layer_end_index every
     * moe_layer_interval */
    {.model_types = {"ernie4_5_moe"},
     .keys = {KEY(HIDDEN, 2560, "hidden_size"), KEY(FFN, 1536, "moe_intermediate_size"),
              KEY(EXPERTS, 64, "moe_num_experts", "num_experts"),
              KEY(TOP_K, 6, "moe_k", "num_experts_per_tok"), FIXED(NORM_TOPK, 1),
              KEY(NORM_MIN, 1e-12f, "moe_norm_min"),
              KEY(SHARED_EXPERTS, 2, "moe_num_shared_experts"),
              KEY(NUM_LAYERS, 28, "num_hidden_layers"),
              KEY(FIRST_K_DENSE, 1, "moe_layer_start_index"),
              KEY(LAST_MOE_LAYER, -1, "moe_layer_end_index"),
              KEY(SPARSE_STEP, 1, "moe_layer_interval")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK, .layer_prefixes = {DECODER_LAYER},
     .correction_bias = "gate.moe_statics.e_score_correction_bias", DEEPSEEK_SHARED},
    /* Ernie4_5_VLMoeMoeBlock on text tokens (the text model of ERNIE-4.5-VL,
     * under model.language_model.): its text expert set (text_moe, width
     * moe_intermediate_size[0]) routed as ERNIE-4.5's block, plus the shared
     * experts beside it (moe_num_shared_experts x that width). Its vision
     * expert set (vision_moe) runs only on image and video tokens, chosen
     * by moe_mm_token_type_ids, which a block given hidden states does not
     * have: moevk runs the block as transformers does for text (no token
     * types). MoE layers by mlp_layer_types (by default all but the
     * first) */
    {.model_types = {"ernie4_5_vl_moe_text"},
     .keys = {KEY(HIDDEN, 2560, "hidden_size"), KEY(FFN, 1536, "moe_intermediate_size[0]"),
              KEY(EXPERTS, 64, "moe_num_experts", "num_experts"),
              KEY(TOP_K, 6, "moe_k", "num_experts_per_tok"), FIXED(NORM_TOPK, 1),
              KEY(NORM_MIN, 1e-12f, "moe_norm_min"),
              KEY(SHARED_EXPERTS, 2, "moe_num_shared_experts"), KEY(MLP_BIAS, 0, "use_bias"),
              KEY(NUM_LAYERS, 28, "num_hidden_layers"), FIXED(FIRST_K_DENSE, 1),
              KEY(LAYER_TYPES, 0, "mlp_layer_types")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK,
     .layer_prefixes = {"model.language_model.layers.{N}.mlp.text_moe.",
                        "model.layers.{N}.mlp.text_moe."},
     .correction_bias = "gate.moe_statics.e_score_correction_bias",
     .shared = {"../shared_experts.gate_proj.weight", "../shared_experts.up_proj.weight",
                "../shared_experts.down_proj.weight"}},
    /* Ernie4_5_VLMoeMoeBlock on image and video tokens (`--part vision`,
     * named by vision_config's model_type; its keys are text_config's): the
     * vision expert set (vision_moe, width moe_intermediate_size[1]) routed
     * as the text set is, plus the same shared experts (moe_num_shared_experts
     * x moe_intermediate_size[0]). The block runs a token through one set or
     * the other by its moe_mm_token_type_ids, and each token alone: the
     * vision tokens' block is this one */
    {.model_types = {"ernie4_5_vl_moe_vision"},
     .keys = {KEY(HIDDEN, 2560, "hidden_size"), KEY(FFN, 512, "moe_intermediate_size[1]"),
              KEY(EXPERTS, 64, "moe_num_experts", "num_experts"),
              KEY(TOP_K, 6, "moe_k", "num_experts_per_tok"), FIXED(NORM_TOPK, 1),
              KEY(NORM_MIN, 1e-12f, "moe_norm_min"),
              KEY(SHARED_FFN, 1536, "moe_intermediate_size[0]"),
              KEY(SHARED_COUNT, 2, "moe_num_shared_experts"), KEY(MLP_BIAS, 0, "use_bias"),
              KEY(NUM_LAYERS, 28, "num_hidden_layers"), FIXED(FIRST_K_DENSE, 1),
              KEY(LAYER_TYPES, 0, "mlp_layer_types")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK,
     .layer_prefixes = {"model.language_model.layers.{N}.mlp.vision_moe.",
                        "model.layers.{N}.mlp.vision_moe."},
     .correction_bias = "gate.moe_statics.e_score_correction_bias",
     .shared = {"../shared_experts.gate_proj.weight", "../shared_experts.up_proj.weight",
                "../shared_experts.down_proj.weight"},
     .config_from = "text_config"},
    /* NllbMoeSparseMLP at inference: top-2 of the softmax (the second
     * choice over the logits without the first), the two renormalised over
     * max(sum, float32 eps), each expert's output times 1 -
     * moe_token_dropout; non-gated ReLU experts with biases. With
     * moe_eval_capacity_token_fraction >= 1 no token is dropped (an expert
     * takes at most one assignment per token); below, capacity ceil(f T)
     * (capacity_fraction), the top-1 choices admitted first, the weights
     * renormalised over what dropping leaves (drop_renorm_eps; before
     * dropping with normalize_router_prob_before_dropping). transformers
     * 5.24's NllbMoeExperts.forward runs only experts 0 and 1 (a one-hot of
     * the router mask): moevk computes the router's dispatch as transformers
     * 4 and fairseq did (tests/fixtures/make_hf_blocks.py). */
    {.model_types = {"nllb-moe", "nllb_moe"},
     .keys = {KEY(HIDDEN, 1024, "d_model"), KEY(FFN, 4096, "encoder_ffn_dim"),
              KEY(EXPERTS, 128, "num_experts"), FIXED(TOP_K, 2), FIXED(NORM_TOPK, 1),
              FIXED(NORM_MIN, 1.1920928955078125e-07f), KEY(ROUTER_BIAS, 0, "router_bias"),
              KEY(TOKEN_DROPOUT, 0.2f, "moe_token_dropout"),
              KEY(EVAL_CAPACITY, 1.0f, "moe_eval_capacity_token_fraction"),
              KEY(NORM_BEFORE_DROP, 0, "normalize_router_prob_before_dropping"),
              KEY(BATCH_PRIORITY, 0, "batch_prioritized_routing"),
              KEY(SECOND_EXPERT, 0, "second_expert_policy"),
              KEY(ROUTER_DTYPE, 0, "router_dtype"),
              KEY(NUM_LAYERS, 12, "encoder_layers"),
              KEY(NUM_DECODER_LAYERS, 12, "decoder_layers"),
              KEY(ENCODER_STEP, 4, "encoder_sparse_step"),
              KEY(DECODER_STEP, 4, "decoder_sparse_step")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK,
     .act = {.key = "activation_function", .def = "relu", .names = ffn_acts},
     .sparse = MVK_SPARSE_ENCODER_DECODER, .sparse_last_of_step = 1,
     .layer_prefixes = {"model.encoder.layers.{N}.ffn."},
     .decoder_prefix = "model.decoder.layers.{N}.ffn.",
     .router = "router.classifier.weight", .router_bias = "router.classifier.bias",
     .layouts = {&nllb_fc12}},
    /* LongcatFlashMoE: softmax over the n_routed_experts FFN experts and
     * the zero_expert_num identity experts after them, selection on p + the
     * correction bias, weights p x routed_scaling_factor (no
     * normalisation); an identity expert's output is its input. The
     * stacked gate_up_proj holds a (never read) block for each identity
     * expert too. */
    {.model_types = {"longcat_flash"},
     .keys = {KEY(HIDDEN, 6144, "hidden_size"),
              KEY(FFN, 2048, "expert_ffn_hidden_size", "moe_intermediate_size"),
              KEY(EXPERTS, 512, "n_routed_experts", "num_local_experts"),
              KEY(ZERO_EXPERTS, 256, "zero_expert_num"),
              KEY(TOP_K, 12, "moe_topk", "num_experts_per_tok"),
              KEY(SCALING, 6.0f, "routed_scaling_factor"), FIXED(NORM_TOPK, 0),
              KEY(NUM_LAYERS, 28, "num_layers")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, .act = HIDDEN_ACT, .sparse = MVK_SPARSE_DECODER,
     .layer_prefixes = {DECODER_LAYER}, .router = "router.classifier.weight",
     .correction_bias = "router.e_score_correction_bias",
     .layouts = {&longcat_stacked, &per_expert_proj}},
    /* Glm4MoeMoE and Dots1MoE are DeepseekV3MoE (router, groups, shared
     * experts) under their own names and defaults */
    /* (sarvam_moe: a configuration that runs Glm4MoeModel) */
    {.model_types = {"glm4_moe", "sarvam_moe"},
     .keys = {DEEPSEEK_V3_KEYS(4096, 1408, 128, 8, 1, 1, 1.0f, 1, 1, 1, 46)},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    /* the text model of GLM-4.5V (text_config; under model.language_model.) */
    {.model_types = {"glm4v_moe_text"},
     .keys = {DEEPSEEK_V3_KEYS(4096, 1408, 128, 8, 1, 1, 1.0f, 1, 1, 1, 46)},
     DEEPSEEK_V3_PARTS("model.language_model.layers.{N}.mlp.")},
    {.model_types = {"dots1"},
     .keys = {KEY(HIDDEN, 4608, "hidden_size"), KEY(FFN, 1408, "moe_intermediate_size"),
              REQUIRED(EXPERTS, "n_routed_experts"), REQUIRED(TOP_K, "num_experts_per_tok"),
              KEY(N_GROUP, 1, "n_group"), KEY(TOPK_GROUP, 1, "topk_group"),
              KEY(SCALING, 1.0f, "routed_scaling_factor"), KEY(NORM_TOPK, 0, "norm_topk_prob"),
              REQUIRED(SHARED_EXPERTS, "n_shared_experts"),
              KEY(FIRST_K_DENSE, 0, "first_k_dense_replace"),
              KEY(NUM_LAYERS, 62, "num_hidden_layers")},
     DEEPSEEK_V3_PARTS(DECODER_LAYER)},
    {
        /* GraniteMoeMoE: top-k on the logits, softmax over the k (gpt-oss's
         * routing), SwiGLU experts; transformers 5's names (it converts the
         * published input_linear / output_linear / router.layer at load) */
        .model_types = {"granitemoe"},
        .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 11008, "intermediate_size"),
                 KEY(EXPERTS, 8, "num_local_experts"), KEY(TOP_K, 2, "num_experts_per_tok"),
                 KEY(NUM_LAYERS, 32, "num_hidden_layers")},
        .routing = MOEVK_ROUTING_TOPK_SOFTMAX,
        .act = HIDDEN_ACT,
        .sparse = MVK_SPARSE_DECODER,
        .layer_prefixes = {"model.layers.{N}.block_sparse_moe."},
        .router = "router.weight",
        .layouts = {&stacked},
    },
    {
        /* FlexOlmoSparseMoeBlock is OlmoeSparseMoeBlock */
        .model_types = {"olmoe", "flex_olmo"},
        .keys = {KEY(HIDDEN, 2048, "hidden_size"), KEY(FFN, 2048, "intermediate_size"),
                 KEY(EXPERTS, 64, "num_experts", "num_local_experts"),
                 KEY(TOP_K, 8, "num_experts_per_tok"), KEY(NORM_TOPK, 0, "norm_topk_prob"),
                 KEY(NUM_LAYERS, 16, "num_hidden_layers")},
        .routing = MOEVK_ROUTING_SOFTMAX_TOPK,
        HF_DECODER_BLOCK,
        .layer_prefixes = {DECODER_LAYER},
    },
    {
        .model_types = {"gpt_oss"},
        .keys = {KEY(HIDDEN, 2880, "hidden_size"), KEY(FFN, 2880, "intermediate_size"),
                 KEY(EXPERTS, 128, "num_local_experts", "num_experts"),
                 KEY(TOP_K, 4, "num_experts_per_tok", "experts_per_token"),
                 KEY(SWIGLU_LIMIT, 7.0f, "swiglu_limit"), KEY(SWIGLU_ALPHA, 1.702f, "swiglu_alpha"),
                 KEY(NUM_LAYERS, 36, "num_hidden_layers")},
        .routing = MOEVK_ROUTING_TOPK_SOFTMAX,
        .act = {.def = "swiglu_oai", .fixed = MOEVK_ACT_SWIGLU_OAI},
        .sparse = MVK_SPARSE_DECODER,
        .layer_prefixes = {DECODER_LAYER},
        .router = "router.weight",
        .router_bias = "router.bias",
        .layouts = {&gpt_oss_interleaved, &gpt_oss_mxfp4},
    },
    {
        .model_types = {"switch_transformers"},
        .keys = {KEY(HIDDEN, 768, "d_model", "hidden_size"), KEY(FFN, 2048, "d_ff"),
                 KEY(EXPERTS, 8, "num_experts"), FIXED(TOP_K, 1),
                 KEY(CAPACITY, 64, "expert_capacity"), KEY(ROUTER_BIAS, 0, "router_bias"),
                 KEY(NUM_LAYERS, 12, "num_layers", "num_hidden_layers"),
                 DERIVED(NUM_DECODER_LAYERS, switch_decoder_layers, "num_decoder_layers"),
                 KEY(SPARSE_ENCODER_LAYERS, 3, "num_sparse_encoder_layers"),
                 KEY(SPARSE_DECODER_LAYERS, 3, "num_sparse_decoder_layers"),
                 DERIVED(ENCODER_STEP, switch_encoder_step, "encoder_sparse_step"),
                 DERIVED(DECODER_STEP, switch_decoder_step, "decoder_sparse_step")},
        .routing = MOEVK_ROUTING_SOFTMAX_TOPK,
        .act = {.key = "dense_act_fn", .def = "relu", .names = ffn_acts},
        .sparse = MVK_SPARSE_ENCODER_DECODER,
        .layer_prefixes = {"encoder.block.{N}.layer.1.mlp."},
        .decoder_prefix = "decoder.block.{N}.layer.2.mlp.",
        .router = "router.classifier.weight",
        .router_bias = "router.classifier.bias",
        .layouts = {&switch_wi_wo},
    },
    /* DbrxFFN: softmax probabilities, the top k over their p-norm (p =
     * moe_normalize_expert_weights; null: not normalised), the experts as
     * three [E·F, H] matrices; the FFN's keys in ffn_config */
    {.model_types = {"dbrx"},
     .keys = {KEY(HIDDEN, 2048, "d_model"), KEY(FFN, 3584, "ffn_config.ffn_hidden_size"),
              KEY(EXPERTS, 4, "ffn_config.moe_num_experts"),
              KEY(TOP_K, 1, "ffn_config.moe_top_k"),
              KEY(NORM_P, 1.0f, "ffn_config.moe_normalize_expert_weights"),
              KEY(NUM_LAYERS, 24, "n_layers")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK,
     .act = {.key = "ffn_config.ffn_act_fn.name", .def = "silu", .names = gated_acts},
     .sparse = MVK_SPARSE_DECODER, .layer_prefixes = {"transformer.blocks.{N}.ffn."},
     .router = "router.layer.weight", .layouts = {&dbrx_rows}},
    /* HunYuanMoEV1Moe: softmax top-k, always renormalised (moe_topk may be
     * one value per layer), an ungated shared MLP as wide as an expert
     * (intermediate_size both) */
    {.model_types = {"hunyuan_v1_moe"},
     .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 11008, "intermediate_size"),
              KEY(EXPERTS, 1, "num_experts"), PER_LAYER(TOP_K, 1, "moe_topk"),
              FIXED(NORM_TOPK, 1), DERIVED(SHARED_FFN, llama4_shared_ffn),
              KEY(NUM_LAYERS, 32, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, .act = HIDDEN_ACT, .sparse = MVK_SPARSE_DECODER,
     .layer_prefixes = {DECODER_LAYER}, .router = "gate.wg.weight",
     .layouts = {&stacked, &per_expert_proj},
     .shared = {"shared_mlp.gate_proj.weight", "shared_mlp.up_proj.weight",
                "shared_mlp.down_proj.weight"}},
    /* GraniteMoeSharedMoE, GraniteMoeSWAMoE, GraniteMoeHybridMoE:
     * GraniteMoE's block, and a shared MLP beside it in the decoder layer
     * (shared_mlp, its gate and up in one input_linear) whose output is
     * added (none when shared_intermediate_size is 0) */
    {.model_types = {"granitemoeshared", "granitemoe_swa"},
     .keys = {GRANITE_SHARED_KEYS(0)}, GRANITE_SHARED_PARTS},
    {.model_types = {"granitemoehybrid"},
     .keys = {GRANITE_SHARED_KEYS(1024)}, GRANITE_SHARED_PARTS},
    /* the text model of MiniMax-M3-VL: MiniMax-M2's routing (sigmoid plus
     * the correction bias choose, normalised) times routed_scaling_factor,
     * gpt-oss's clamped SwiGLU with gate and up concatenated (the stacked
     * layout), on the routed and the shared experts */
    {.model_types = {"minimax_m3_vl_text"},
     .keys = {KEY(HIDDEN, 6144, "hidden_size"), KEY(FFN, 3072, "intermediate_size"),
              KEY(EXPERTS, 128, "num_local_experts"), KEY(TOP_K, 4, "num_experts_per_tok"),
              FIXED(NORM_TOPK, 1), KEY(SCALING, 2.0f, "routed_scaling_factor"),
              KEY(SHARED_FFN, 3072, "shared_intermediate_size"),
              KEY(SWIGLU_LIMIT, 7.0f, "swiglu_limit"), KEY(SWIGLU_ALPHA, 1.702f, "swiglu_alpha"),
              KEY(NUM_LAYERS, 60, "num_hidden_layers"), KEY(LAYER_TYPES, 0, "mlp_layer_types")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED,
     .act = {.def = "swiglu_oai", .fixed = MOEVK_ACT_SWIGLU_OAI}, .sparse = MVK_SPARSE_DECODER,
     .layer_prefixes = {"model.language_model.layers.{N}.mlp.", DECODER_LAYER},
     .router = "gate.weight", .correction_bias = "gate.e_score_correction_bias",
     .layouts = {&stacked},
     .shared = {"shared_experts.gate_up_proj.weight", "shared_experts.gate_up_proj.weight",
                "shared_experts.down_proj.weight"}},
    /* Lfm2MoeSparseMoeBlock: DeepSeek-V3's routing without groups (sigmoid
     * plus the block's expert_bias choose, when use_expert_bias), the weights
     * over their sum + 1e-6, times routed_scaling_factor; silu experts
     * whatever hidden_act says; the first num_dense_layers layers dense */
    {.model_types = {"lfm2_moe"},
     .keys = {KEY(HIDDEN, 2048, "hidden_size"), KEY(FFN, 1792, "moe_intermediate_size"),
              KEY(EXPERTS, 32, "num_experts"), KEY(TOP_K, 4, "num_experts_per_tok"),
              KEY(NORM_TOPK, 1, "norm_topk_prob"), FIXED(NORM_EPS, 1e-6f),
              KEY(SCALING, 1.0f, "routed_scaling_factor"),
              KEY(CORRECTION_BIAS, 1, "use_expert_bias"),
              KEY(FIRST_K_DENSE, 2, "num_dense_layers"),
              KEY(NUM_LAYERS, 32, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .act = {.def = "silu", .fixed = MOEVK_ACT_SWIGLU},
     .sparse = MVK_SPARSE_DECODER, .layer_prefixes = {"model.layers.{N}.feed_forward."},
     .router = "gate.weight", .correction_bias = "expert_bias",
     .layouts = {&stacked, &per_expert_w123, &per_expert_proj}},
    /* the text model of dots3-note: DeepseekV3MoE with n_shared_experts
     * shared experts of shared_experts_intermediate_size each; MoE layers
     * by mlp_layer_types (by default all but the first
     * first_k_dense_replace); its vision encoder's MoE is the next one */
    {.model_types = {"dots3_note_text"},
     .keys = {KEY(HIDDEN, 5120, "hidden_size"), KEY(FFN, 1536, "moe_intermediate_size"),
              KEY(EXPERTS, 256, "n_routed_experts", "num_local_experts"),
              KEY(TOP_K, 8, "num_experts_per_tok"), KEY(N_GROUP, 1, "n_group"),
              KEY(TOPK_GROUP, 1, "topk_group"), KEY(SCALING, 1.0f, "routed_scaling_factor"),
              KEY(NORM_TOPK, 1, "norm_topk_prob"),
              KEY(SHARED_FFN, 1536, "shared_experts_intermediate_size"),
              KEY(SHARED_COUNT, 1, "n_shared_experts"),
              KEY(FIRST_K_DENSE, 1, "first_k_dense_replace"),
              KEY(NUM_LAYERS, 46, "num_hidden_layers"), KEY(LAYER_TYPES, 0, "mlp_layer_types")},
     DEEPSEEK_V3_PARTS("model.language_model.layers.{N}.mlp.", DECODER_LAYER)},
    /* Dots3NoteVisionMoE (dots3-note's vision encoder, vision_config: `--part
     * vision`): sigmoid scores plus the block's correction bias choose the
     * top k, always normalised (+ 1e-20), times router_scaling_factor; no
     * shared expert. Its "pyramid": each sparse layer's expert count, k and
     * width from per_layer_config.{N} (else the config's own) */
    {.model_types = {"dots3_note_vision_encoder"},
     .keys = {KEY(HIDDEN, 1536, "hidden_size"), KEY(NUM_LAYERS, 42, "num_hidden_layers"),
              PER_LAYER(FFN, 2112, "per_layer_config.{N}.moe_intermediate_size",
                        "moe_intermediate_size"),
              PER_LAYER(EXPERTS, 64, "per_layer_config.{N}.num_local_experts", "num_local_experts"),
              PER_LAYER(TOP_K, 2, "per_layer_config.{N}.num_experts_per_tok",
                        "num_experts_per_tok"),
              FIXED(NORM_TOPK, 1),
              PER_LAYER(SCALING, 1.0f, "per_layer_config.{N}.router_scaling_factor",
                        "router_scaling_factor"),
              KEY(MLP_BIAS, 0, "mlp_bias"), KEY(LAYER_TYPES, 0, "mlp_layer_types")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED, HF_DECODER_BLOCK,
     .layer_prefixes = {"model.vision_tower.blocks.{N}.mlp."},
     .correction_bias = "e_score_correction_bias"},
    /* LagunaSparseMoeBlock: sigmoid plus the correction bias choose (no
     * groups), always normalised, times moe_routed_scaling_factor, a
     * shared expert of its own width; MoE layers by mlp_layer_types (by
     * default all but the first); the router logits soft-capped when
     * moe_router_logit_softcapping > 0 */
    {.model_types = {"laguna"},
     .keys = {KEY(HIDDEN, 2048, "hidden_size"), KEY(FFN, 512, "moe_intermediate_size"),
              KEY(EXPERTS, 256, "num_experts"), KEY(TOP_K, 8, "num_experts_per_tok"),
              FIXED(NORM_TOPK, 1), KEY(SCALING, 1.0f, "moe_routed_scaling_factor"),
              KEY(SHARED_FFN, 512, "shared_expert_intermediate_size"),
              KEY(ROUTER_SOFTCAP, 0, "moe_router_logit_softcapping"), FIXED(FIRST_K_DENSE, 1),
              KEY(NUM_LAYERS, 40, "num_hidden_layers"), KEY(LAYER_TYPES, 0, "mlp_layer_types")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED, HF_DECODER_BLOCK, .layer_prefixes = {DECODER_LAYER},
     .correction_bias = "gate.e_score_correction_bias", DEEPSEEK_SHARED},
    /* Kolibri1SparseMoeBlock: the logits plus the correction bias choose
     * (top-k, no groups), the weights are sigmoid(l[ids]), normalised when
     * norm_topk_prob; a shared expert of its own width on every layer */
    {.model_types = {"kolibri1"},
     .keys = {KEY(HIDDEN, 2560, "hidden_size"), KEY(FFN, 512, "moe_intermediate_size"),
              KEY(TOP_K, 6, "num_experts_per_tok"),
              KEY(EXPERTS, 384, "num_local_experts", "num_experts"),
              KEY(NORM_TOPK, 0, "norm_topk_prob"),
              KEY(SHARED_FFN, 512, "shared_expert_intermediate_size"),
              FIXED(SELECT_ON_LOGITS, 1), KEY(NUM_LAYERS, 50, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_SIGMOID_GROUPED, HF_DECODER_BLOCK, .layer_prefixes = {DECODER_LAYER},
     .correction_bias = "gate.e_score_correction_bias", DEEPSEEK_SHARED},
    /* the text models of DeepSeek-OCR-2 (mlp_layer_types required: the
     * class has no default) and Unlimited-OCR (by default all but the
     * first first_k_dense_replace): DeepseekV2Moe under
     * model.language_model. */
    {.model_types = {"deepseek_ocr2_text"},
     .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 1407, "moe_intermediate_size"),
              KEY(EXPERTS, 64, "n_routed_experts", "num_experts"),
              REQUIRED(TOP_K, "num_experts_per_tok"), KEY(N_GROUP, 1, "n_group"),
              KEY(TOPK_GROUP, 1, "topk_group"), KEY(TOPK_METHOD, 0, "topk_method"),
              KEY(SCALING, 1.0f, "routed_scaling_factor"), FIXED(NORM_TOPK, 0),
              KEY(SHARED_EXPERTS, 2, "n_shared_experts"), KEY(NUM_LAYERS, 32, "num_hidden_layers"),
              REQUIRED(LAYER_TYPES, "mlp_layer_types")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK,
     .layer_prefixes = {"model.language_model.layers.{N}.mlp."}, DEEPSEEK_SHARED},
    {.model_types = {"unlimited_ocr_text"},
     .keys = {KEY(HIDDEN, 1280, "hidden_size"), KEY(FFN, 896, "moe_intermediate_size"),
              KEY(EXPERTS, 64, "n_routed_experts", "num_experts"),
              KEY(TOP_K, 6, "num_experts_per_tok"), KEY(N_GROUP, 1, "n_group"),
              KEY(TOPK_GROUP, 1, "topk_group"), KEY(TOPK_METHOD, 0, "topk_method"),
              KEY(SCALING, 1.0f, "routed_scaling_factor"), FIXED(NORM_TOPK, 0),
              KEY(SHARED_EXPERTS, 2, "n_shared_experts"),
              KEY(FIRST_K_DENSE, 1, "first_k_dense_replace"),
              KEY(NUM_LAYERS, 12, "num_hidden_layers"), KEY(LAYER_TYPES, 0, "mlp_layer_types")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK,
     .layer_prefixes = {"model.language_model.layers.{N}.mlp."}, DEEPSEEK_SHARED},
    /* the text model of Qwen3-Omni-MoE's thinker (thinker_config's
     * text_config): Qwen3-MoE's block under thinker.model.language_model. */
    {.model_types = {"qwen3_omni_moe_text"},
     .keys = {KEY(HIDDEN, 2048, "hidden_size"), KEY(FFN, 768, "moe_intermediate_size"),
              KEY(EXPERTS, 128, "num_experts", "num_local_experts"),
              KEY(TOP_K, 8, "num_experts_per_tok"), KEY(NORM_TOPK, 1, "norm_topk_prob"),
              KEY(NUM_LAYERS, 28, "num_hidden_layers"),
              KEY(SPARSE_STEP, 1, "decoder_sparse_step"), KEY(MLP_ONLY, 0, "mlp_only_layers")},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK, HF_DECODER_BLOCK,
     .layer_prefixes = {"thinker.model.language_model.layers.{N}.mlp."}},
    /* the text model of Qwen3-Omni-MoE's talker (talker_config's
     * text_config; `--part talker`): Qwen2-MoE's block (softmax top-k,
     * renormalised if norm_topk_prob, a shared expert gated by
     * sigmoid(x . shared_expert_gate)) under talker.model.; every layer is
     * one (its decoder layer replaces the MLP it builds whatever
     * decoder_sparse_step and mlp_only_layers say) */
    {.model_types = {"qwen3_omni_moe_talker_text"},
     .keys = {KEY(HIDDEN, 1024, "hidden_size"), KEY(FFN, 384, "moe_intermediate_size"),
              KEY(EXPERTS, 128, "num_experts", "num_local_experts"),
              KEY(TOP_K, 8, "num_experts_per_tok"), KEY(NORM_TOPK, 0, "norm_topk_prob"),
              /* (no class default: the released config gives it) */
              REQUIRED(SHARED_FFN, "shared_expert_intermediate_size"),
              KEY(NUM_LAYERS, 20, "num_hidden_layers")},
     QWEN2_MOE_PARTS_AT("talker.model.layers.{N}.mlp.")},
    /* OpenAIPrivacyFilterMLP: gpt-oss's routing (its scores over k, the
     * output times k: the same) and clamped SwiGLU, gate and up
     * concatenated in the transposed layout, with biases */
    {.model_types = {"openai_privacy_filter"},
     .keys = {KEY(HIDDEN, 640, "hidden_size"), KEY(FFN, 640, "intermediate_size"),
              KEY(EXPERTS, 128, "num_local_experts"), KEY(TOP_K, 4, "num_experts_per_tok"),
              KEY(SWIGLU_LIMIT, 7.0f, "swiglu_limit"), KEY(SWIGLU_ALPHA, 1.702f, "swiglu_alpha"),
              KEY(NUM_LAYERS, 8, "num_hidden_layers")},
     .routing = MOEVK_ROUTING_TOPK_SOFTMAX,
     .act = {.def = "swiglu_oai", .fixed = MOEVK_ACT_SWIGLU_OAI}, .sparse = MVK_SPARSE_DECODER,
     .layer_prefixes = {DECODER_LAYER}, .router = "router.weight", .router_bias = "router.bias",
     .layouts = {&privacy_filter_transposed}},
    /* PhimoeSparseMoeBlock: SparseMixer's inference routing (the top two
     * logits, each weighted by a softmax over the experts within
     * 2 router_jitter_noise of it, relatively; the first one left out of
     * the second's), always two experts whatever num_experts_per_tok says;
     * transformers 5's names (mlp.router, stacked experts) or the published
     * checkpoints' (block_sparse_moe.gate, per-expert w1/w3/w2) */
    {.model_types = {"phimoe"},
     .keys = {KEY(HIDDEN, 4096, "hidden_size"), KEY(FFN, 6400, "intermediate_size"),
              KEY(NUM_LAYERS, 32, "num_hidden_layers"), FIXED(TOP_K, 2),
              KEY(EXPERTS, 16, "num_local_experts"),
              KEY(JITTER_EPS, 0.01f, "router_jitter_noise")},
     .routing = MOEVK_ROUTING_SPARSEMIXER, .act = HIDDEN_ACT, .sparse = MVK_SPARSE_DECODER,
     .layer_prefixes = {DECODER_LAYER, "model.layers.{N}.block_sparse_moe."},
     .router = "router.weight", .router_alt = "gate.weight",
     .layouts = {&stacked, &per_expert_w123}},
    /* Gemma 4's text model (Gemma4TextDecoderLayer with enable_moe_block;
     * config.json's text_config of gemma4, tensors under
     * model.language_model.): the MoE branch beside the dense MLP, both on
     * the residual. Gemma4TextRouter norms the residual (no weight), times
     * router.scale and hidden^-1/2, softmax, top-k renormalised, times
     * per_expert_scale; the experts read pre_feedforward_layernorm_2 of the
     * residual. The block ends at the experts' sum: the caller applies
     * post_feedforward_layernorm_2 (docs/semantics.md). */
    {.model_types = {"gemma4_text"},
     .keys = {KEY(HIDDEN, 2304, "hidden_size"), KEY(NUM_LAYERS, 30, "num_hidden_layers"),
              KEY(RMS_EPS, 1e-6f, "rms_norm_eps"), KEY(MOE_BLOCK, 0, "enable_moe_block"),
              REQUIRED(EXPERTS, "num_experts"), REQUIRED(TOP_K, "top_k_experts"),
              REQUIRED(FFN, "moe_intermediate_size"), FIXED(NORM_TOPK, 1)},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK,
     .act = {.key = "hidden_activation", .def = "gelu_pytorch_tanh", .names = gated_acts},
     .sparse = MVK_SPARSE_DECODER,
     .layer_prefixes = {"model.language_model.layers.{N}.", "model.layers.{N}."},
     .router = "router.proj.weight", .router_norm = 1, .router_input_scale = "router.scale",
     .expert_norm = "pre_feedforward_layernorm_2.weight",
     .expert_weight_scale = "router.per_expert_scale", .layouts = {&stacked}},
    /* DiffusionGemma's text model: Gemma 4's routed branch in every layer of
     * its encoder and its diffusion decoder, which share the block's weights
     * (saved under model.decoder.layers.; the encoder's names tried next) */
    {.model_types = {"diffusion_gemma_text"},
     .keys = {KEY(HIDDEN, 2304, "hidden_size"), KEY(NUM_LAYERS, 30, "num_hidden_layers"),
              KEY(RMS_EPS, 1e-6f, "rms_norm_eps"), REQUIRED(EXPERTS, "num_experts"),
              REQUIRED(TOP_K, "top_k_experts"), REQUIRED(FFN, "moe_intermediate_size"),
              FIXED(NORM_TOPK, 1)},
     .routing = MOEVK_ROUTING_SOFTMAX_TOPK,
     .act = {.key = "hidden_activation", .def = "gelu_pytorch_tanh", .names = gated_acts},
     .sparse = MVK_SPARSE_DECODER,
     .layer_prefixes = {"model.decoder.layers.{N}.", "model.encoder.language_model.layers.{N}."},
     .router = "router.proj.weight", .router_norm = 1, .router_input_scale = "router.scale",
     .expert_norm = "pre_feedforward_layernorm_2.weight",
     .expert_weight_scale = "router.per_expert_scale", .layouts = {&stacked}},
};

#define N_ARCHS (sizeof archs / sizeof archs[0])

/* ---- lookups ---------------------------------------------------------------- */

const mvk_arch *mvk_arch_find(const char *model_type)
{
    for (size_t i = 0; model_type && i < N_ARCHS; i++)
        for (size_t n = 0; n < MVK_ARCH_NAMES && archs[i].model_types[n]; n++)
            if (!strcmp(model_type, archs[i].model_types[n]))
                return &archs[i];
    return NULL;
}

const mvk_arch *mvk_arch_get(size_t i)
{
    return i < N_ARCHS ? &archs[i] : NULL;
}

const char *mvk_arch_name(const mvk_arch *a)
{
    return a && a->model_types[0] ? a->model_types[0] : "unknown";
}

const mvk_arch_key *mvk_arch_key_of(const mvk_arch *a, mvk_cfg_field field)
{
    for (size_t i = 0; i < MVK_ARCH_KEYS && a->keys[i].field != MVK_CFG_END; i++)
        if (a->keys[i].field == field)
            return &a->keys[i];
    return NULL;
}

int mvk_arch_has_decoder(const mvk_arch *a)
{
    return a->decoder_prefix != NULL;
}

int mvk_arch_has_capacity(const mvk_arch *a)
{
    return mvk_arch_key_of(a, MVK_CFG_CAPACITY) != NULL;
}

const char *mvk_arch_list(char *buf, size_t bufsz, int (*has)(const mvk_arch *a))
{
    size_t o = 0;
    if (!bufsz)
        return buf;
    buf[0] = 0;
    for (size_t i = 0; i < N_ARCHS; i++) {
        if (has && !has(&archs[i]))
            continue;
        int n = snprintf(buf + o, bufsz - o, "%s%s", o ? ", " : "", mvk_arch_name(&archs[i]));
        if (n < 0 || (size_t)n >= bufsz - o) {
            buf[o] = 0; /* whole names only */
            break;
        }
        o += (size_t)n;
    }
    return buf;
}

int mvk_arch_expand(char *buf, size_t bufsz, const char *prefix, const char *pattern,
                    uint32_t v)
{
    char num[16];
    const size_t nl = (size_t)snprintf(num, sizeof num, "%u", v);
    size_t o = 0;
    for (int part = 0; part < 2; part++)
        for (const char *p = part ? pattern : prefix; p && *p;) {
            /* the prefix is taken as it is: only the pattern has variables */
            const int var = part && p[0] == '{' && (p[1] == 'N' || p[1] == 'i') && p[2] == '}';
            const char *src = var ? num : p;
            const size_t n = var ? nl : 1;
            if (o + n >= bufsz) {
                if (bufsz)
                    buf[0] = 0;
                return -1;
            }
            memcpy(buf + o, src, n);
            o += n;
            p += var ? 3 : 1;
        }
    if (!bufsz)
        return -1;
    buf[o] = 0;
    return 0;
}
