/*
 * config.json of the supported Hugging Face MoE architectures.
 *
 * Field names and defaults follow transformers' configuration classes
 * (MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig, DeepseekV3Config,
 * OlmoeConfig, GptOssConfig, SwitchTransformersConfig). A field that is
 * absent or null takes the class default; a field of the wrong type is an
 * error naming it.
 */
#include "hf_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_util.h"

static const char *const arch_names[MVK_ARCH_COUNT] = {
    "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "olmoe", "gpt_oss", "switch_transformers",
};

const char *mvk_arch_name(mvk_arch a)
{
    return (unsigned)a < MVK_ARCH_COUNT ? arch_names[a] : "unknown";
}

typedef struct cfg_reader {
    const cJSON *root;
    const char *what;
    char *err;
    size_t errsz;
    int failed;
} cfg_reader;

/* The first of the names present with a non-null value, or NULL. */
static const cJSON *field(cfg_reader *r, const char *const *names, const char **found)
{
    for (; *names; names++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, *names);
        if (v && !cJSON_IsNull(v)) {
            *found = *names;
            return v;
        }
    }
    return NULL;
}

#define NAMES(...) ((const char *const[]){__VA_ARGS__, NULL})

static uint64_t get_uint(cfg_reader *r, const char *const *names, uint64_t def, uint64_t max)
{
    const char *name = NULL;
    const cJSON *v = field(r, names, &name);
    if (!v || r->failed)
        return def;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= 0) || d > (double)max || d != floor(d)) {
        if (cJSON_IsNumber(v))
            mvk_errf(r->err, r->errsz, "%s: \"%s\" = %g is not an integer in 0..%llu", r->what,
                     name, d, (unsigned long long)max);
        else
            mvk_errf(r->err, r->errsz, "%s: \"%s\" is not a number", r->what, name);
        r->failed = 1;
        return def;
    }
    return (uint64_t)d;
}

static uint32_t get_u32(cfg_reader *r, const char *const *names, uint32_t def)
{
    return (uint32_t)get_uint(r, names, def, UINT32_MAX);
}

static int get_bool(cfg_reader *r, const char *name, int def)
{
    const char *found;
    const cJSON *v = field(r, NAMES(name), &found);
    if (!v || r->failed)
        return def;
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v);
    if (cJSON_IsNumber(v) && (v->valuedouble == 0 || v->valuedouble == 1))
        return v->valuedouble != 0;
    mvk_errf(r->err, r->errsz, "%s: \"%s\" is not true or false", r->what, name);
    r->failed = 1;
    return def;
}

static float get_float(cfg_reader *r, const char *name, float def)
{
    const char *found;
    const cJSON *v = field(r, NAMES(name), &found);
    if (!v || r->failed)
        return def;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || fabs(v->valuedouble) > 3e38) {
        mvk_errf(r->err, r->errsz, "%s: \"%s\" is not a finite number", r->what, name);
        r->failed = 1;
        return def;
    }
    return (float)v->valuedouble;
}

static const char *get_str(cfg_reader *r, const char *name, const char *def)
{
    const char *found;
    const cJSON *v = field(r, NAMES(name), &found);
    if (!v || r->failed)
        return def;
    if (!cJSON_IsString(v) || !v->valuestring) {
        mvk_errf(r->err, r->errsz, "%s: \"%s\" is not a string", r->what, name);
        r->failed = 1;
        return def;
    }
    return v->valuestring;
}

static int gated_act(cfg_reader *r, const char *name, const char *def, mvk_moe_config *c)
{
    const char *a = get_str(r, name, def);
    if (r->failed)
        return -1;
    snprintf(c->act_name, sizeof c->act_name, "%s", a);
    if (!strcmp(a, "silu") || !strcmp(a, "swish"))
        c->activation = MOEVK_ACT_SWIGLU;
    else if (!strcmp(a, "gelu"))
        c->activation = MOEVK_ACT_GEGLU;
    else if (!strcmp(a, "gelu_pytorch_tanh") || !strcmp(a, "gelu_new") || !strcmp(a, "gelu_fast"))
        c->activation = MOEVK_ACT_GEGLU_TANH;
    else
        return mvk_errf(r->err, r->errsz,
                        "%s: \"%s\" = \"%.32s\" is not supported (silu, gelu, gelu_new, "
                        "gelu_pytorch_tanh)",
                        r->what, name, a);
    return 0;
}

static int parse_mlp_only(cfg_reader *r, mvk_moe_config *c)
{
    const char *found;
    const cJSON *v = field(r, NAMES("mlp_only_layers"), &found);
    if (!v)
        return 0;
    if (!cJSON_IsArray(v))
        return mvk_errf(r->err, r->errsz, "%s: \"mlp_only_layers\" is not a list", r->what);
    int n = cJSON_GetArraySize(v);
    c->mlp_only_layers = calloc(n ? (size_t)n : 1, sizeof(uint32_t));
    if (!c->mlp_only_layers)
        return mvk_errf(r->err, r->errsz, "out of host memory");
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        double d = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (!(d >= 0) || d > UINT32_MAX || d != floor(d))
            return mvk_errf(r->err, r->errsz,
                            "%s: \"mlp_only_layers\"[%d] is not a layer index", r->what, i);
        c->mlp_only_layers[i] = (uint32_t)d;
    }
    c->n_mlp_only_layers = (uint32_t)n;
    return 0;
}

static int parse_arch(cfg_reader *r, mvk_moe_config *c)
{
    /* defaults shared by the softmax-routed decoders */
    c->routing = MOEVK_ROUTING_SOFTMAX_TOPK;
    c->decoder_sparse_step = 1;
    switch (c->arch) {
    case MVK_ARCH_MIXTRAL:
        c->hidden = get_u32(r, NAMES("hidden_size"), 4096);
        c->ffn = get_u32(r, NAMES("intermediate_size"), 14336);
        c->num_experts = get_u32(r, NAMES("num_local_experts"), 8);
        c->top_k = get_u32(r, NAMES("num_experts_per_tok"), 2);
        c->num_layers = get_u32(r, NAMES("num_hidden_layers"), 32);
        c->norm_topk_prob = 1; /* MixtralSparseMoeBlock always renormalises */
        return gated_act(r, "hidden_act", "silu", c);
    case MVK_ARCH_QWEN2_MOE:
        c->hidden = get_u32(r, NAMES("hidden_size"), 2048);
        c->ffn = get_u32(r, NAMES("moe_intermediate_size"), 1408);
        c->num_experts = get_u32(r, NAMES("num_experts", "num_local_experts"), 60);
        c->top_k = get_u32(r, NAMES("num_experts_per_tok"), 4);
        c->norm_topk_prob = get_bool(r, "norm_topk_prob", 0);
        c->shared_ffn = get_u32(r, NAMES("shared_expert_intermediate_size"), 5632);
        c->shared_gate = c->shared_ffn != 0;
        c->num_layers = get_u32(r, NAMES("num_hidden_layers"), 24);
        c->decoder_sparse_step = get_u32(r, NAMES("decoder_sparse_step"), 1);
        if (parse_mlp_only(r, c))
            return -1;
        return gated_act(r, "hidden_act", "silu", c);
    case MVK_ARCH_QWEN3_MOE:
        c->hidden = get_u32(r, NAMES("hidden_size"), 2048);
        c->ffn = get_u32(r, NAMES("moe_intermediate_size"), 768);
        c->num_experts = get_u32(r, NAMES("num_experts", "num_local_experts"), 128);
        c->top_k = get_u32(r, NAMES("num_experts_per_tok"), 8);
        c->norm_topk_prob = get_bool(r, "norm_topk_prob", 0);
        c->num_layers = get_u32(r, NAMES("num_hidden_layers"), 24);
        c->decoder_sparse_step = get_u32(r, NAMES("decoder_sparse_step"), 1);
        if (parse_mlp_only(r, c))
            return -1;
        return gated_act(r, "hidden_act", "silu", c);
    case MVK_ARCH_DEEPSEEK_V3: {
        c->routing = MOEVK_ROUTING_SIGMOID_GROUPED;
        c->hidden = get_u32(r, NAMES("hidden_size"), 7168);
        c->ffn = get_u32(r, NAMES("moe_intermediate_size"), 2048);
        c->num_experts = get_u32(r, NAMES("n_routed_experts", "num_local_experts"), 256);
        c->top_k = get_u32(r, NAMES("num_experts_per_tok"), 8);
        c->n_group = get_u32(r, NAMES("n_group"), 8);
        c->topk_group = get_u32(r, NAMES("topk_group"), 4);
        c->routed_scaling_factor = get_float(r, "routed_scaling_factor", 2.5f);
        c->norm_topk_prob = get_bool(r, "norm_topk_prob", 1);
        uint32_t ns = get_u32(r, NAMES("n_shared_experts"), 1);
        uint64_t sf = (uint64_t)ns * c->ffn;
        if (sf > UINT32_MAX)
            return mvk_errf(r->err, r->errsz,
                            "%s: n_shared_experts x moe_intermediate_size overflows", r->what);
        c->shared_ffn = (uint32_t)sf;
        c->correction_bias = 1;
        c->first_k_dense_replace = get_u32(r, NAMES("first_k_dense_replace"), 3);
        c->num_layers = get_u32(r, NAMES("num_hidden_layers"), 61);
        return gated_act(r, "hidden_act", "silu", c);
    }
    case MVK_ARCH_OLMOE:
        c->hidden = get_u32(r, NAMES("hidden_size"), 2048);
        c->ffn = get_u32(r, NAMES("intermediate_size"), 2048);
        c->num_experts = get_u32(r, NAMES("num_experts", "num_local_experts"), 64);
        c->top_k = get_u32(r, NAMES("num_experts_per_tok"), 8);
        c->norm_topk_prob = get_bool(r, "norm_topk_prob", 0);
        c->num_layers = get_u32(r, NAMES("num_hidden_layers"), 16);
        return gated_act(r, "hidden_act", "silu", c);
    case MVK_ARCH_GPT_OSS:
        c->routing = MOEVK_ROUTING_TOPK_SOFTMAX;
        c->activation = MOEVK_ACT_SWIGLU_OAI;
        snprintf(c->act_name, sizeof c->act_name, "swiglu_oai");
        c->hidden = get_u32(r, NAMES("hidden_size"), 2880);
        c->ffn = get_u32(r, NAMES("intermediate_size"), 2880);
        c->num_experts = get_u32(r, NAMES("num_local_experts", "num_experts"), 128);
        c->top_k = get_u32(r, NAMES("num_experts_per_tok", "experts_per_token"), 4);
        c->swiglu_limit = get_float(r, "swiglu_limit", 7.0f);
        c->swiglu_alpha = get_float(r, "swiglu_alpha", 1.702f);
        c->router_bias = 1;
        c->expert_bias = 1;
        c->num_layers = get_u32(r, NAMES("num_hidden_layers"), 36);
        if (!r->failed && !(c->swiglu_limit > 0))
            return mvk_errf(r->err, r->errsz, "%s: \"swiglu_limit\" must be positive", r->what);
        return 0;
    case MVK_ARCH_SWITCH: {
        c->hidden = get_u32(r, NAMES("d_model", "hidden_size"), 768);
        c->ffn = get_u32(r, NAMES("d_ff"), 2048);
        c->num_experts = get_u32(r, NAMES("num_experts"), 8);
        c->top_k = 1;
        c->norm_topk_prob = 0;
        c->expert_capacity = get_uint(r, NAMES("expert_capacity"), 64, UINT32_MAX);
        c->router_bias = get_bool(r, "router_bias", 0);
        c->num_layers = get_u32(r, NAMES("num_layers", "num_hidden_layers"), 12);
        c->num_decoder_layers = get_u32(r, NAMES("num_decoder_layers"), c->num_layers);
        uint32_t se = get_u32(r, NAMES("num_sparse_encoder_layers"), 3);
        uint32_t sd = get_u32(r, NAMES("num_sparse_decoder_layers"), 3);
        /* SwitchTransformersConfig derives the steps, then stored values win */
        c->encoder_sparse_step = se ? c->num_layers / se : 0;
        c->decoder_sparse_step_sw = sd ? c->num_decoder_layers / sd : 0;
        c->encoder_sparse_step = get_u32(r, NAMES("encoder_sparse_step"), c->encoder_sparse_step);
        c->decoder_sparse_step_sw =
            get_u32(r, NAMES("decoder_sparse_step"), c->decoder_sparse_step_sw);
        const char *a = get_str(r, "dense_act_fn", "relu");
        if (r->failed)
            return -1;
        snprintf(c->act_name, sizeof c->act_name, "%s", a);
        if (!strcmp(a, "relu"))
            c->activation = MOEVK_ACT_RELU;
        else if (!strcmp(a, "gelu"))
            c->activation = MOEVK_ACT_GELU;
        else
            return mvk_errf(r->err, r->errsz,
                            "%s: \"dense_act_fn\" = \"%.32s\" is not supported (relu, gelu)",
                            r->what, a);
        if (c->expert_capacity == 0)
            return mvk_errf(r->err, r->errsz,
                            "%s: \"expert_capacity\" = 0 drops every token; not supported",
                            r->what);
        return 0;
    }
    default:
        return -1;
    }
}

static int check_sizes(cfg_reader *r, const mvk_moe_config *c)
{
    const char *hn = c->arch == MVK_ARCH_SWITCH ? "d_model" : "hidden_size";
    const char *fn = c->arch == MVK_ARCH_SWITCH ? "d_ff"
                     : (c->arch == MVK_ARCH_QWEN2_MOE || c->arch == MVK_ARCH_QWEN3_MOE ||
                        c->arch == MVK_ARCH_DEEPSEEK_V3)
                         ? "moe_intermediate_size"
                         : "intermediate_size";
    if (c->hidden == 0)
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is 0", r->what, hn);
    if (c->ffn == 0)
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is 0", r->what, fn);
    if (c->num_experts == 0 || c->num_experts > MOEVK_MAX_EXPERTS)
        return mvk_errf(r->err, r->errsz, "%s: %u experts is not in 1..%d", r->what,
                        c->num_experts, MOEVK_MAX_EXPERTS);
    if (c->top_k == 0 || c->top_k > c->num_experts || c->top_k > MOEVK_MAX_TOP_K)
        return mvk_errf(r->err, r->errsz,
                        "%s: \"num_experts_per_tok\" = %u is not in 1..min(%u experts, %d)",
                        r->what, c->top_k, c->num_experts, MOEVK_MAX_TOP_K);
    if ((uint64_t)c->hidden * c->ffn > UINT32_MAX ||
        (uint64_t)c->hidden * (c->shared_ffn ? c->shared_ffn : 1) > UINT32_MAX)
        return mvk_errf(r->err, r->errsz, "%s: %s x %s is too large for one expert matrix",
                        r->what, hn, fn);
    if (c->arch == MVK_ARCH_DEEPSEEK_V3) {
        if (c->n_group == 0 || c->num_experts % c->n_group)
            return mvk_errf(r->err, r->errsz, "%s: \"n_group\" = %u does not divide %u experts",
                            r->what, c->n_group, c->num_experts);
        if (c->topk_group == 0 || c->topk_group > c->n_group)
            return mvk_errf(r->err, r->errsz, "%s: \"topk_group\" = %u is not in 1..n_group",
                            r->what, c->topk_group);
        if ((uint64_t)c->topk_group * (c->num_experts / c->n_group) < c->top_k)
            return mvk_errf(r->err, r->errsz,
                            "%s: \"num_experts_per_tok\" = %u exceeds the experts of the "
                            "topk_group kept groups",
                            r->what, c->top_k);
        if (c->num_experts / c->n_group < 2)
            return mvk_errf(r->err, r->errsz,
                            "%s: groups of one expert (n_group = %u): transformers scores a "
                            "group by its top-2 experts",
                            r->what, c->n_group);
    }
    if ((c->arch == MVK_ARCH_QWEN2_MOE || c->arch == MVK_ARCH_QWEN3_MOE) &&
        c->decoder_sparse_step == 0)
        return mvk_errf(r->err, r->errsz, "%s: \"decoder_sparse_step\" is 0", r->what);
    return 0;
}

int mvk_hf_config_parse(const char *text, size_t len, const char *what, mvk_moe_config *out,
                        char *err, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    if (!what)
        what = "config.json";
    cJSON *root;
    if (mvk_json_parse(text, len, what, &root, err, errsz))
        return -1;
    cfg_reader r = {root, what, err, errsz, 0};
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = mvk_errf(err, errsz, "%s is not a JSON object", what);
        goto done;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt) || !mt->valuestring) {
        rc = mvk_errf(err, errsz, "%s has no \"model_type\" string", what);
        goto done;
    }
    int a = -1;
    for (int i = 0; i < MVK_ARCH_COUNT; i++)
        if (!strcmp(mt->valuestring, arch_names[i]))
            a = i;
    if (a < 0) {
        rc = mvk_errf(err, errsz,
                      "%s: model_type \"%.64s\" is not supported (mixtral, qwen2_moe, qwen3_moe, "
                      "deepseek_v3, olmoe, gpt_oss, switch_transformers)",
                      what, mt->valuestring);
        goto done;
    }
    out->arch = (mvk_arch)a;
    rc = parse_arch(&r, out);
    if (r.failed)
        rc = -1;
    if (!rc)
        rc = check_sizes(&r, out);
done:
    cJSON_Delete(root);
    if (rc)
        mvk_hf_config_free(out);
    return rc;
}

void mvk_hf_config_free(mvk_moe_config *c)
{
    if (!c)
        return;
    free(c->mlp_only_layers);
    c->mlp_only_layers = NULL;
    c->n_mlp_only_layers = 0;
}

int mvk_hf_layer_prefixes(const mvk_moe_config *c, uint32_t layer, int decoder,
                          char prefixes[MVK_MAX_PREFIXES][MVK_PREFIX_LEN], int *count,
                          char *err, size_t errsz)
{
    *count = 0;
    const char *arch = mvk_arch_name(c->arch);
    if (decoder && c->arch != MVK_ARCH_SWITCH)
        return mvk_errf(err, errsz, "--decoder is only for switch_transformers");
    if (c->arch == MVK_ARCH_SWITCH) {
        uint32_t n = decoder ? c->num_decoder_layers : c->num_layers;
        uint32_t step = decoder ? c->decoder_sparse_step_sw : c->encoder_sparse_step;
        const char *stack = decoder ? "decoder" : "encoder";
        if (layer >= n)
            return mvk_errf(err, errsz, "%s layer %u is out of range: the %s has %u blocks",
                            stack, layer, stack, n);
        int sparse = step > 0 && (layer % step == 1 || step == 1);
        if (!sparse)
            return mvk_errf(err, errsz,
                            "%s block %u is a dense layer, not a MoE layer (sparse step %u: "
                            "blocks 1, 1 + %u, ... are sparse)",
                            stack, layer, step, step);
        snprintf(prefixes[0], MVK_PREFIX_LEN, "%s.block.%u.layer.%u.mlp.", stack, layer,
                 decoder ? 2u : 1u);
        *count = 1;
        return 0;
    }
    if (layer >= c->num_layers)
        return mvk_errf(err, errsz, "layer %u is out of range: %s has num_hidden_layers = %u",
                        layer, arch, c->num_layers);
    if (c->arch == MVK_ARCH_QWEN2_MOE || c->arch == MVK_ARCH_QWEN3_MOE) {
        for (uint32_t i = 0; i < c->n_mlp_only_layers; i++)
            if (c->mlp_only_layers[i] == layer)
                return mvk_errf(err, errsz,
                                "layer %u is a dense MLP layer (listed in mlp_only_layers), not "
                                "a MoE layer",
                                layer);
        if ((layer + 1) % c->decoder_sparse_step)
            return mvk_errf(err, errsz,
                            "layer %u is a dense MLP layer (decoder_sparse_step = %u: layers "
                            "with (N + 1) %% %u == 0 are MoE)",
                            layer, c->decoder_sparse_step, c->decoder_sparse_step);
    }
    if (c->arch == MVK_ARCH_DEEPSEEK_V3 && layer < c->first_k_dense_replace)
        return mvk_errf(err, errsz,
                        "layer %u is a dense MLP layer (first_k_dense_replace = %u), not a MoE "
                        "layer",
                        layer, c->first_k_dense_replace);
    if (c->arch == MVK_ARCH_MIXTRAL) {
        /* published checkpoints (transformers 4), then transformers 5 naming */
        snprintf(prefixes[0], MVK_PREFIX_LEN, "model.layers.%u.block_sparse_moe.", layer);
        snprintf(prefixes[1], MVK_PREFIX_LEN, "model.layers.%u.mlp.", layer);
        *count = 2;
        return 0;
    }
    snprintf(prefixes[0], MVK_PREFIX_LEN, "model.layers.%u.mlp.", layer);
    *count = 1;
    return 0;
}
