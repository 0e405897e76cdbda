/*
 * config.json of the supported Hugging Face MoE architectures, read as each
 * architecture's descriptor says (arch.c): its keys in order, each into its
 * field, with the descriptor's default when a key is absent or null; a key
 * of the wrong type is an error naming it.
 */
#include "hf_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_util.h"

/* ---- fields -------------------------------------------------------------- */

typedef enum value_type {
    V_U32,       /* an integer in 0..UINT32_MAX into a uint32_t                  */
    V_U64,       /* the same into a uint64_t                                     */
    V_BOOL,      /* true/false (or 0/1) into an int                              */
    V_F32,       /* a finite number into a float                                 */
    V_LIST,      /* a list of layer indices: mlp_only_layers                     */
    V_TIMES_FFN, /* an integer n: the uint32_t field = n x ffn                   */
    V_TIMES_SHARED, /* an integer n: shared_ffn = n x shared_ffn                 */
    V_NORM_P,    /* a number, or null: off (MVK_CFG_NORM_P)                      */
    V_LAYER_TYPES, /* a list of "dense" / "sparse" (mlp_layer_types)             */
    V_MOE_LAYERS, /* a list of layer indices: moe_layers                           */
    V_LAST_LAYER, /* an integer >= -1 into a uint32_t, -1 as UINT32_MAX          */
    V_CHOICE2,   /* one of two strings (the field's choices[]): 0 or 1 into an int */
    V_F64,       /* a finite number into a double (read as JSON wrote it)        */
} value_type;

typedef struct field_info {
    value_type type;
    size_t offset;     /* in mvk_moe_config */
    const char *label; /* named in messages when the architecture has no key for it */
    const char *choices[2]; /* V_CHOICE2: the strings read as 0 and 1 */
} field_info;

#define AT(f) offsetof(mvk_moe_config, f)

static const field_info fields[MVK_CFG_FIELD_COUNT] = {
    [MVK_CFG_HIDDEN] = {V_U32, AT(hidden), "hidden_size"},
    [MVK_CFG_FFN] = {V_U32, AT(ffn), "intermediate_size"},
    [MVK_CFG_EXPERTS] = {V_U32, AT(num_experts), "num_experts"},
    [MVK_CFG_TOP_K] = {V_U32, AT(top_k), "num_experts_per_tok"},
    [MVK_CFG_NORM_TOPK] = {V_BOOL, AT(norm_topk_prob), "norm_topk_prob"},
    [MVK_CFG_N_GROUP] = {V_U32, AT(n_group), "n_group"},
    [MVK_CFG_TOPK_GROUP] = {V_U32, AT(topk_group), "topk_group"},
    [MVK_CFG_SCALING] = {V_F32, AT(routed_scaling_factor), "routed_scaling_factor"},
    [MVK_CFG_SHARED_FFN] = {V_U32, AT(shared_ffn), "shared_expert_intermediate_size"},
    [MVK_CFG_SHARED_EXPERTS] = {V_TIMES_FFN, AT(shared_ffn), "n_shared_experts"},
    [MVK_CFG_CAPACITY] = {V_U64, AT(expert_capacity), "expert_capacity"},
    [MVK_CFG_ROUTER_BIAS] = {V_BOOL, AT(router_bias), "router_bias"},
    [MVK_CFG_SWIGLU_ALPHA] = {V_F32, AT(swiglu_alpha), "swiglu_alpha"},
    [MVK_CFG_SWIGLU_LIMIT] = {V_F32, AT(swiglu_limit), "swiglu_limit"},
    [MVK_CFG_NUM_LAYERS] = {V_U32, AT(num_layers), "num_hidden_layers"},
    [MVK_CFG_SPARSE_STEP] = {V_U32, AT(decoder_sparse_step), "decoder_sparse_step"},
    [MVK_CFG_MLP_ONLY] = {V_LIST, AT(mlp_only_layers), "mlp_only_layers"},
    [MVK_CFG_FIRST_K_DENSE] = {V_U32, AT(first_k_dense_replace), "first_k_dense_replace"},
    [MVK_CFG_NUM_DECODER_LAYERS] = {V_U32, AT(num_decoder_layers), "num_decoder_layers"},
    [MVK_CFG_SPARSE_ENCODER_LAYERS] = {V_U32, AT(num_sparse_encoder_layers),
                                       "num_sparse_encoder_layers"},
    [MVK_CFG_SPARSE_DECODER_LAYERS] = {V_U32, AT(num_sparse_decoder_layers),
                                       "num_sparse_decoder_layers"},
    [MVK_CFG_ENCODER_STEP] = {V_U32, AT(encoder_sparse_step), "encoder_sparse_step"},
    [MVK_CFG_DECODER_STEP] = {V_U32, AT(decoder_sparse_step_sw), "decoder_sparse_step"},
    [MVK_CFG_TOPK_METHOD] = {V_CHOICE2, AT(group_limited), "topk_method",
                             {"greedy", "group_limited_greedy"}},
    [MVK_CFG_NORM_P] = {V_NORM_P, AT(norm_p), "moe_normalize_expert_weights"},
    [MVK_CFG_NORM_MIN] = {V_F32, AT(norm_min), "moe_norm_min"},
    [MVK_CFG_LAYER_TYPES] = {V_LAYER_TYPES, AT(layer_types), "mlp_layer_types"},
    [MVK_CFG_LAST_MOE_LAYER] = {V_LAST_LAYER, AT(last_moe_layer), "moe_layer_end_index"},
    [MVK_CFG_EXPERT_PERIOD] = {V_U32, AT(expert_period), "expert_layer_period"},
    [MVK_CFG_EXPERT_OFFSET] = {V_U32, AT(expert_offset), "expert_layer_offset"},
    [MVK_CFG_MOE_LAYERS] = {V_MOE_LAYERS, AT(moe_layers), "moe_layers"},
    [MVK_CFG_LATENT] = {V_U32, AT(latent), "moe_latent_size"},
    [MVK_CFG_SHARED_COUNT] = {V_TIMES_SHARED, AT(shared_ffn), "n_shared_experts"},
    [MVK_CFG_ROUTER_SOFTCAP] = {V_F32, AT(router_softcap), "moe_router_logit_softcapping"},
    [MVK_CFG_ZERO_EXPERTS] = {V_U32, AT(zero_experts), "zero_expert_num"},
    [MVK_CFG_TOKEN_DROPOUT] = {V_F32, AT(token_dropout), "moe_token_dropout"},
    [MVK_CFG_EVAL_CAPACITY] = {V_F64, AT(eval_capacity), "moe_eval_capacity_token_fraction"},
    [MVK_CFG_NORM_BEFORE_DROP] = {V_BOOL, AT(norm_before_drop),
                                  "normalize_router_prob_before_dropping"},
    [MVK_CFG_BATCH_PRIORITY] = {V_BOOL, AT(batch_priority), "batch_prioritized_routing"},
    [MVK_CFG_SECOND_EXPERT] = {V_CHOICE2, AT(second_all), "second_expert_policy", {"all", NULL}},
    [MVK_CFG_ROUTER_DTYPE] = {V_CHOICE2, AT(router_f32), "router_dtype", {"float32", NULL}},
    [MVK_CFG_SELECTION_FN] = {V_CHOICE2, AT(selection_sigmoid), "expert_selection_fn",
                              {"softmax", "sigmoid"}},
    [MVK_CFG_SHARED_COMBINE] = {V_CHOICE2, AT(shared_average),
                                "shared_expert_combination_strategy", {"sum", "average"}},
    [MVK_CFG_NORM_EPS] = {V_F32, AT(norm_eps), "norm_eps"},
    [MVK_CFG_CORRECTION_BIAS] = {V_BOOL, AT(correction_bias), "use_expert_bias"},
    [MVK_CFG_SOFTCAP_GATE] = {V_F32, AT(softcap_gate), "mlp_gate_softcap"},
    [MVK_CFG_SOFTCAP_UP] = {V_F32, AT(softcap_up), "mlp_up_softcap"},
    [MVK_CFG_SHARED_SWIGLU_LIMIT] = {V_F32, AT(shared_swiglu_limit), "swiglu_limits_shared"},
    [MVK_CFG_SCORE_FN] = {V_CHOICE2, AT(score_fn), "scoring_func", {"sigmoid", NULL}},
    [MVK_CFG_MLP_BIAS] = {V_BOOL, AT(mlp_bias), "mlp_bias"},
    [MVK_CFG_SELECT_ON_LOGITS] = {V_BOOL, AT(select_on_logits), "select_on_logits"},
    [MVK_CFG_JITTER_EPS] = {V_F32, AT(jitter_eps), "router_jitter_noise"},
    [MVK_CFG_RMS_EPS] = {V_F32, AT(rms_norm_eps), "rms_norm_eps"},
    [MVK_CFG_MOE_BLOCK] = {V_BOOL, AT(moe_block), "enable_moe_block"},
    [MVK_CFG_SCORING] = {V_CHOICE2, AT(sqrtsoftplus), "scoring_func", {"sigmoid", "sqrtsoftplus"}},
    [MVK_CFG_HASH_LAYERS] = {V_U32, AT(hash_layers), "num_hash_layers"},
    [MVK_CFG_SINK_SHARED] = {V_U32, AT(sink_shared), "n_shared_experts"},
};

/* The name messages give a field: its key's, else the field's label. */
static const char *key_name(const mvk_arch *a, mvk_cfg_field f)
{
    const mvk_arch_key *k = mvk_arch_key_of(a, f);
    return k && k->names[0] ? k->names[0] : fields[f].label;
}

/* ---- reading values ---------------------------------------------------------- */

typedef struct cfg_reader {
    const cJSON *root; /* the keys' object: the config, or its text_config */
    const char *what;
    char *err;
    size_t errsz;
    const cJSON *top;  /* the whole config (quantization_config lives there) */
} cfg_reader;

/* The item a name names: a key of the root, or "a.b": key b of the object
 * a, "a.b.c" key c of that one's object b, ...; a last component "b[i]" is
 * entry i of the list b (ERNIE-4.5-VL's moe_intermediate_size, one width
 * per expert set; a value that is not a list stands for itself). NULL when
 * one of them is absent or not an object (or the list is too short). */
static const cJSON *item(const cfg_reader *r, const char *name)
{
    const char *br = strchr(name, '[');
    if (br && !strchr(br, '.')) {
        char key[64];
        size_t n = (size_t)(br - name);
        char *end;
        const long i = strtol(br + 1, &end, 10);
        if (n >= sizeof key || i < 0 || *end != ']' || end[1])
            return NULL;
        memcpy(key, name, n);
        key[n] = 0;
        const cJSON *list = item(r, key);
        /* not a list: the value itself (a number is then the width of
         * every set; anything else fails the field's type check) */
        return cJSON_IsArray(list) ? cJSON_GetArrayItem(list, (int)i) : list;
    }
    const cJSON *o = r->root;
    for (const char *dot; (dot = strchr(name, '.')); name = dot + 1) {
        char outer[64];
        size_t n = (size_t)(dot - name);
        if (n >= sizeof outer)
            return NULL;
        memcpy(outer, name, n);
        outer[n] = 0;
        o = cJSON_GetObjectItemCaseSensitive(o, outer);
        if (!cJSON_IsObject(o))
            return NULL;
    }
    return cJSON_GetObjectItemCaseSensitive(o, name);
}

/* The first of the names present with a non-null value (its name in
 * *found), or NULL. */
static const cJSON *lookup(const cfg_reader *r, const char *const *names, size_t n,
                           const char **found)
{
    for (size_t i = 0; i < n && names[i]; i++) {
        const cJSON *v = item(r, names[i]);
        if (v && !cJSON_IsNull(v)) {
            *found = names[i];
            return v;
        }
    }
    return NULL;
}

/* 1 when the first of the names present holds an explicit null. */
static int explicit_null(const cfg_reader *r, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n && names[i]; i++) {
        const cJSON *v = item(r, names[i]);
        if (v)
            return cJSON_IsNull(v);
    }
    return 0;
}

static int uint_value(const cfg_reader *r, const cJSON *v, const char *name, uint64_t max,
                      uint64_t *out)
{
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= 0) || d > (double)max || d != floor(d)) {
        if (cJSON_IsNumber(v))
            return mvk_errf(r->err, r->errsz, "%s: \"%s\" = %g is not an integer in 0..%llu",
                            r->what, name, d, (unsigned long long)max);
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is not a number", r->what, name);
    }
    *out = (uint64_t)d;
    return 0;
}

static int bool_value(const cfg_reader *r, const cJSON *v, const char *name, int *out)
{
    if (cJSON_IsBool(v))
        *out = cJSON_IsTrue(v);
    else if (cJSON_IsNumber(v) && (v->valuedouble == 0 || v->valuedouble == 1))
        *out = v->valuedouble != 0;
    else
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is not true or false", r->what, name);
    return 0;
}

static int float_value(const cfg_reader *r, const cJSON *v, const char *name, float *out)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || fabs(v->valuedouble) > 3e38)
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is not a finite number", r->what, name);
    *out = (float)v->valuedouble;
    return 0;
}

/* A list of layer indices into *out (allocated) and *n. */
static int index_list(const cfg_reader *r, const cJSON *v, const char *name, uint32_t **out,
                      uint32_t *count)
{
    if (!cJSON_IsArray(v))
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is not a list", r->what, name);
    int n = cJSON_GetArraySize(v);
    *out = calloc(n ? (size_t)n : 1, sizeof(uint32_t));
    if (!*out)
        return mvk_errf(r->err, r->errsz, "out of host memory");
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        double d = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (!(d >= 0) || d > UINT32_MAX || d != floor(d))
            return mvk_errf(r->err, r->errsz, "%s: \"%s\"[%d] is not a layer index", r->what,
                            name, i);
        (*out)[i] = (uint32_t)d;
    }
    *count = (uint32_t)n;
    return 0;
}

/* A per-layer list (at least one entry) into *out (allocated): integers in
 * 0..UINT32_MAX, or with `floats` numbers >= 0 or nulls (0) as float bits. */
static int per_layer_values(const cfg_reader *r, const cJSON *v, const char *name, int floats,
                            uint32_t **out, uint32_t *count)
{
    const int n = cJSON_GetArraySize(v);
    if (n < 1)
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is an empty list", r->what, name);
    free(*out);
    *out = calloc((size_t)n, sizeof(uint32_t));
    if (!*out)
        return mvk_errf(r->err, r->errsz, "out of host memory");
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        const double d = floats && cJSON_IsNull(e) ? 0.0
                         : cJSON_IsNumber(e)        ? e->valuedouble
                                                    : -1;
        if (!floats && (!(d >= 0) || d > UINT32_MAX || d != floor(d)))
            return mvk_errf(r->err, r->errsz, "%s: \"%s\"[%d] is not an integer in 0..%u",
                            r->what, name, i, UINT32_MAX);
        if (floats && (!(d >= 0) || d > 3e38))
            return mvk_errf(r->err, r->errsz, "%s: \"%s\"[%d] is not a number >= 0 or null",
                            r->what, name, i);
        if (floats) {
            const float f = (float)d;
            memcpy(&(*out)[i], &f, sizeof f);
        } else {
            (*out)[i] = (uint32_t)d;
        }
    }
    *count = (uint32_t)n;
    return 0;
}

static int list_value(const cfg_reader *r, const cJSON *v, const char *name, mvk_moe_config *c)
{
    return index_list(r, v, name, &c->mlp_only_layers, &c->n_mlp_only_layers);
}

static int layer_types_value(const cfg_reader *r, const cJSON *v, const char *name,
                             mvk_moe_config *c)
{
    if (!cJSON_IsArray(v))
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is not a list", r->what, name);
    int n = cJSON_GetArraySize(v);
    c->layer_types = calloc(n ? (size_t)n : 1, 1);
    if (!c->layer_types)
        return mvk_errf(r->err, r->errsz, "out of host memory");
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        const char *t = cJSON_IsString(e) ? e->valuestring : NULL;
        if (!t)
            return mvk_errf(r->err, r->errsz, "%s: \"%s\"[%d] is not a string", r->what, name,
                            i);
        /* "sparse" (mlp_layer_types) or "moe" (Nemotron-H's
         * layers_block_type, DeepSeek-V4's mlp_layer_types) is a MoE layer;
         * "hash_moe" (DeepSeek-V4) a hash-routed one; "dense", "mlp",
         * attention or Mamba blocks are not */
        c->layer_types[i] = !strcmp(t, "sparse") || !strcmp(t, "moe") ? 1
                            : !strcmp(t, "hash_moe")                   ? 2
                                                                       : 0;
    }
    c->n_layer_types = (uint32_t)n;
    return 0;
}

static int read_key(const cfg_reader *r, const mvk_arch *a, const mvk_arch_key *k,
                    mvk_moe_config *c);

/* A per-layer key whose first name holds "{N}": each layer's value (its
 * entry, else the key's other names, else the default) into the field's
 * per-layer list, layer 0's in the field until a layer is chosen. */
static int layer_keyed(const cfg_reader *r, const mvk_arch *a, const mvk_arch_key *k,
                       mvk_moe_config *c)
{
    const field_info *fi = &fields[k->field];
    if (fi->type != V_U32 && fi->type != V_F32)
        return mvk_errf(r->err, r->errsz, "%s: a per-layer key \"%s\" of a field that is not a "
                        "number", r->what, k->names[0]);
    const uint32_t n = c->num_layers ? c->num_layers : 1;
    uint32_t *vals = calloc(n, sizeof *vals);
    if (!vals)
        return mvk_errf(r->err, r->errsz, "out of host memory");
    for (uint32_t layer = 0; layer < n; layer++) {
        char name[128];
        if (mvk_arch_expand(name, sizeof name, "", k->names[0], layer)) {
            free(vals);
            return mvk_errf(r->err, r->errsz, "%s: the key \"%s\" is too long", r->what,
                            k->names[0]);
        }
        mvk_arch_key one = *k;
        one.per_layer = 0;
        one.names[0] = name;
        if (read_key(r, a, &one, c)) {
            free(vals);
            return -1;
        }
        memcpy(&vals[layer], (char *)c + fi->offset, sizeof(uint32_t));
    }
    memcpy((char *)c + fi->offset, &vals[0], sizeof(uint32_t));
    free(c->layer_values[k->field]);
    c->layer_values[k->field] = vals;
    c->n_layer_values[k->field] = n;
    return 0;
}

/* One key of the descriptor into its field: the value, or the default. */
static int read_key(const cfg_reader *r, const mvk_arch *a, const mvk_arch_key *k,
                    mvk_moe_config *c)
{
    if (k->per_layer && k->names[0] && strstr(k->names[0], "{N}"))
        return layer_keyed(r, a, k, c);
    const field_info *fi = &fields[k->field];
    void *dst = (char *)c + fi->offset;
    const char *name = k->names[0] ? k->names[0] : fi->label;
    const cJSON *v = lookup(r, k->names, MVK_KEY_NAMES, &name);
    if (!v && k->required)
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is required (%s has no default for it)",
                        r->what, name, mvk_arch_name(a));
    const double def = k->def_of ? (double)k->def_of(c) : k->def;
    /* (a negative default, -1 for "the last layer", is no unsigned value) */
    uint64_t u = def > 0 ? (uint64_t)def : 0;
    int b = def != 0;
    float f = (float)def;
    switch (fi->type) {
    case V_U32:
    case V_U64:
    case V_TIMES_FFN:
        if (v && k->per_layer && fi->type == V_U32 && cJSON_IsArray(v)) {
            /* one value per layer: the first until a layer is chosen */
            uint32_t **list = &c->layer_values[k->field], *n = &c->n_layer_values[k->field];
            if (per_layer_values(r, v, name, 0, list, n))
                return -1;
            memcpy(dst, &(*list)[0], sizeof(uint32_t));
            return 0;
        }
        if (v && uint_value(r, v, name, UINT32_MAX, &u))
            return -1;
        if (fi->type == V_TIMES_FFN) {
            u *= c->ffn;
            if (u > UINT32_MAX)
                return mvk_errf(r->err, r->errsz, "%s: %s x %s overflows", r->what, name,
                                key_name(a, MVK_CFG_FFN));
        }
        if (fi->type == V_U64) {
            memcpy(dst, &u, sizeof u);
        } else {
            uint32_t u32 = (uint32_t)u;
            memcpy(dst, &u32, sizeof u32);
        }
        return 0;
    case V_TIMES_SHARED:
        if (v && uint_value(r, v, name, UINT32_MAX, &u))
            return -1;
        u *= c->shared_ffn;
        if (u > UINT32_MAX)
            return mvk_errf(r->err, r->errsz, "%s: %s x %s overflows", r->what, name,
                            key_name(a, MVK_CFG_SHARED_FFN));
        c->shared_ffn = (uint32_t)u;
        return 0;
    case V_BOOL:
        if (v && bool_value(r, v, name, &b))
            return -1;
        memcpy(dst, &b, sizeof b);
        return 0;
    case V_F32:
        if (v && k->per_layer && cJSON_IsArray(v)) {
            /* one number (or null) per layer: the first until a layer is
             * chosen */
            uint32_t **list = &c->layer_values[k->field], *n = &c->n_layer_values[k->field];
            if (per_layer_values(r, v, name, 1, list, n))
                return -1;
            memcpy(dst, &(*list)[0], sizeof(float));
            return 0;
        }
        if (v && float_value(r, v, name, &f))
            return -1;
        memcpy(dst, &f, sizeof f);
        return 0;
    case V_LIST:
        return v ? list_value(r, v, name, c) : 0;
    case V_LAYER_TYPES:
        return v ? layer_types_value(r, v, name, c) : 0;
    case V_MOE_LAYERS:
        return v ? index_list(r, v, name, &c->moe_layers, &c->n_moe_layers) : 0;
    case V_CHOICE2: {
        int m = def != 0;
        if (v) {
            const char *t = cJSON_IsString(v) ? v->valuestring : NULL;
            /* (a field with one choice reads only choices[0]) */
            m = t && !strcmp(t, fi->choices[0])                    ? 0
                : t && fi->choices[1] && !strcmp(t, fi->choices[1]) ? 1
                                                                    : -1;
            if (m < 0)
                return mvk_errf(r->err, r->errsz,
                                "%s: \"%s\" = \"%.32s\" is not supported (%s%s%s)", r->what,
                                name, t ? t : "(not a string)", fi->choices[0],
                                fi->choices[1] ? ", " : "",
                                fi->choices[1] ? fi->choices[1] : "");
        }
        memcpy(dst, &m, sizeof m);
        return 0;
    }
    case V_F64: {
        double x = def;
        if (v) {
            if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
                return mvk_errf(r->err, r->errsz, "%s: \"%s\" is not a finite number", r->what,
                                name);
            x = v->valuedouble;
        }
        memcpy(dst, &x, sizeof x);
        return 0;
    }
    case V_NORM_P:
        /* a number: normalise by that p-norm; null: do not normalise */
        if (v && float_value(r, v, name, &f))
            return -1;
        if (v && !(f > 0))
            return mvk_errf(r->err, r->errsz, "%s: \"%s\" = %g is not a positive p", r->what,
                            name, (double)f);
        c->norm_topk_prob = !explicit_null(r, k->names, MVK_KEY_NAMES);
        c->norm_p = c->norm_topk_prob ? f : 0.0f;
        return 0;
    case V_LAST_LAYER: {
        double x = v && cJSON_IsNumber(v) ? v->valuedouble : def;
        if ((v && !cJSON_IsNumber(v)) || !(x >= -1) || x > UINT32_MAX - 1.0 || x != floor(x))
            return mvk_errf(r->err, r->errsz, "%s: \"%s\" is not a layer index or -1", r->what,
                            name);
        c->last_moe_layer = x < 0 ? UINT32_MAX : (uint32_t)x;
        return 0;
    }
    }
    return mvk_errf(r->err, r->errsz, "%s: key \"%s\" has an unknown field type", r->what, name);
}

/* The activation: the descriptor's key looked up in its names, or fixed. */
static int read_act(const cfg_reader *r, const mvk_arch_act *act, mvk_moe_config *c)
{
    if (!act->key) {
        c->activation = act->fixed;
        snprintf(c->act_name, sizeof c->act_name, "%s", act->def);
        return 0;
    }
    const char *found, *a = act->def;
    const cJSON *v = lookup(r, &act->key, 1, &found);
    if (v && (!cJSON_IsString(v) || !v->valuestring))
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is not a string", r->what, act->key);
    if (v)
        a = v->valuestring;
    snprintf(c->act_name, sizeof c->act_name, "%s", a);
    for (const mvk_act_name *n = act->names; n->name; n++)
        if (!strcmp(a, n->name)) {
            c->activation = n->activation;
            return 0;
        }
    char list[1024];
    size_t o = 0;
    list[0] = 0;
    for (const mvk_act_name *n = act->names; n->name && o < sizeof list; n++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "", n->name);
    return mvk_errf(r->err, r->errsz, "%s: \"%s\" = \"%.32s\" is not supported (%s)", r->what,
                    act->key, a, list);
}

/* What moevk and the layer rules need of the values read. */
static int check_values(const cfg_reader *r, const mvk_moe_config *c)
{
    const mvk_arch *a = c->arch;
    const char *hn = key_name(a, MVK_CFG_HIDDEN), *fn = key_name(a, MVK_CFG_FFN);
    if (c->hidden == 0)
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is 0", r->what, hn);
    if (c->ffn == 0)
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is 0", r->what, fn);
    if (c->num_experts == 0 || c->num_experts > MOEVK_MAX_EXPERTS)
        return mvk_errf(r->err, r->errsz, "%s: %u experts is not in 1..%d", r->what,
                        c->num_experts, MOEVK_MAX_EXPERTS);
    if (c->zero_experts > MOEVK_MAX_EXPERTS - c->num_experts)
        return mvk_errf(r->err, r->errsz,
                        "%s: \"%s\" = %u identity experts beside %u FFN experts exceed %d",
                        r->what, key_name(a, MVK_CFG_ZERO_EXPERTS), c->zero_experts,
                        c->num_experts, MOEVK_MAX_EXPERTS);
    const uint32_t routable = c->num_experts + c->zero_experts;
    if (c->top_k == 0 || c->top_k > routable || c->top_k > MOEVK_MAX_TOP_K)
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" = %u is not in 1..min(%u experts, %d)",
                        r->what, key_name(a, MVK_CFG_TOP_K), c->top_k, routable,
                        MOEVK_MAX_TOP_K);
    for (uint32_t i = 0; i < c->n_layer_values[MVK_CFG_TOP_K]; i++) {
        const uint32_t k = c->layer_values[MVK_CFG_TOP_K][i];
        if (k == 0 || k > c->num_experts || k > MOEVK_MAX_TOP_K)
            return mvk_errf(r->err, r->errsz,
                            "%s: \"%s\"[%u] = %u is not in 1..min(%u experts, %d)", r->what,
                            key_name(a, MVK_CFG_TOP_K), i, k, c->num_experts, MOEVK_MAX_TOP_K);
    }
    if ((uint64_t)c->hidden * c->ffn > UINT32_MAX ||
        (uint64_t)c->hidden * (c->shared_ffn ? c->shared_ffn : 1) > UINT32_MAX)
        return mvk_errf(r->err, r->errsz, "%s: %s x %s is too large for one expert matrix",
                        r->what, hn, fn);
    if (mvk_arch_key_of(a, MVK_CFG_N_GROUP)) {
        const char *gn = key_name(a, MVK_CFG_N_GROUP), *tn = key_name(a, MVK_CFG_TOPK_GROUP);
        if (c->n_group == 0 || c->num_experts % c->n_group)
            return mvk_errf(r->err, r->errsz, "%s: \"%s\" = %u does not divide %u experts",
                            r->what, gn, c->n_group, c->num_experts);
        if (c->topk_group == 0 || c->topk_group > c->n_group)
            return mvk_errf(r->err, r->errsz, "%s: \"%s\" = %u is not in 1..%s", r->what, tn,
                            c->topk_group, gn);
        if ((uint64_t)c->topk_group * (c->num_experts / c->n_group) < c->top_k)
            return mvk_errf(r->err, r->errsz,
                            "%s: \"%s\" = %u exceeds the experts of the %s kept groups", r->what,
                            key_name(a, MVK_CFG_TOP_K), c->top_k, tn);
        if (c->num_experts / c->n_group < 2 && c->group_score != MOEVK_GROUP_MAX)
            return mvk_errf(r->err, r->errsz,
                            "%s: groups of one expert (%s = %u): transformers scores a group by "
                            "its top-2 experts",
                            r->what, gn, c->n_group);
    }
    if (c->latent)
        return mvk_errf(r->err, r->errsz,
                        "%s: \"%s\" = %u: experts in a latent space (projections around them) "
                        "are not supported",
                        r->what, key_name(a, MVK_CFG_LATENT), c->latent);
    if (c->expert_period == 0)
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is 0", r->what,
                        key_name(a, MVK_CFG_EXPERT_PERIOD));
    if (c->decoder_sparse_step == 0)
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" is 0", r->what,
                        key_name(a, MVK_CFG_SPARSE_STEP));
    if (mvk_arch_has_capacity(a) && c->expert_capacity == 0)
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" = 0 drops every token; not supported",
                        r->what, key_name(a, MVK_CFG_CAPACITY));
    if (mvk_arch_key_of(a, MVK_CFG_SWIGLU_LIMIT) && !a->zero_limit_unclamped &&
        !(c->swiglu_limit > 0))
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" must be positive", r->what,
                        key_name(a, MVK_CFG_SWIGLU_LIMIT));
    /* (0: no clamp with zero_limit_unclamped; per-layer entries are >= 0) */
    const mvk_cfg_field limits[2] = {MVK_CFG_SWIGLU_LIMIT, MVK_CFG_SHARED_SWIGLU_LIMIT};
    for (int i = 0; i < 2; i++)
        if (mvk_arch_key_of(a, limits[i]) &&
            !((i ? c->shared_swiglu_limit : c->swiglu_limit) >= 0))
            return mvk_errf(r->err, r->errsz, "%s: \"%s\" must not be negative", r->what,
                            key_name(a, limits[i]));
    const mvk_cfg_field caps[2] = {MVK_CFG_SOFTCAP_GATE, MVK_CFG_SOFTCAP_UP};
    for (int i = 0; i < 2; i++)
        if (mvk_arch_key_of(a, caps[i]) && !((i ? c->softcap_up : c->softcap_gate) > 0))
            return mvk_errf(r->err, r->errsz, "%s: \"%s\" must be positive", r->what,
                            key_name(a, caps[i]));
    if (mvk_arch_key_of(a, MVK_CFG_MOE_BLOCK) && !c->moe_block)
        return mvk_errf(r->err, r->errsz,
                        "%s: \"%s\" is false: the model has no MoE block (its layers are "
                        "dense)",
                        r->what, key_name(a, MVK_CFG_MOE_BLOCK));
    if (mvk_arch_key_of(a, MVK_CFG_RMS_EPS) && !(c->rms_norm_eps > 0))
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" = %g must be positive", r->what,
                        key_name(a, MVK_CFG_RMS_EPS), (double)c->rms_norm_eps);
    if (c->mlp_bias)
        return mvk_errf(r->err, r->errsz,
                        "%s: \"%s\" = true: biases on the shared expert are not supported",
                        r->what, key_name(a, MVK_CFG_MLP_BIAS));
    if (mvk_arch_key_of(a, MVK_CFG_JITTER_EPS) &&
        !(c->jitter_eps >= 0.0f && isfinite(c->jitter_eps)))
        return mvk_errf(r->err, r->errsz, "%s: \"%s\" = %g must be a number >= 0", r->what,
                        key_name(a, MVK_CFG_JITTER_EPS), (double)c->jitter_eps);
    return 0;
}

static int read_config(const cfg_reader *r, const mvk_arch *a, mvk_moe_config *c)
{
    c->arch = a;
    c->routing = a->routing;
    c->decoder_sparse_step = 1;
    c->last_moe_layer = UINT32_MAX;
    c->expert_period = 1;
    /* named biases are there unless a key says otherwise */
    c->router_bias = a->router_bias != NULL;
    c->correction_bias = a->correction_bias != NULL;
    for (size_t i = 0; i < MVK_ARCH_LAYOUTS && a->layouts[i]; i++)
        if (a->layouts[i]->gate_bias)
            c->expert_bias = 1;
    for (size_t i = 0; i < MVK_ARCH_KEYS && a->keys[i].field != MVK_CFG_END; i++)
        if (read_key(r, a, &a->keys[i], c))
            return -1;
    if (read_act(r, &a->act, c))
        return -1;
    if (a->shared_act.def) {
        /* the shared experts' own activation, read as the routed one is */
        const moevk_activation routed = c->activation;
        char name[sizeof c->act_name];
        memcpy(name, c->act_name, sizeof name);
        if (read_act(r, &a->shared_act, c))
            return -1;
        c->shared_act = 1;
        c->shared_activation = c->activation;
        memcpy(c->shared_act_name, c->act_name, sizeof c->shared_act_name);
        c->activation = routed;
        memcpy(c->act_name, name, sizeof name);
    }
    if (mvk_arch_key_of(a, MVK_CFG_TOPK_METHOD)) {
        /* DeepSeek-V2: "greedy" reads no groups; group_limited_greedy scores
         * a group by its best expert */
        if (c->group_limited)
            c->group_score = MOEVK_GROUP_MAX;
        else
            c->n_group = c->topk_group = 1;
    }
    if (c->selection_sigmoid) /* the sigmoids of the top-k logits */
        c->routing = MOEVK_ROUTING_SIGMOID_GROUPED;
    if (c->shared_average && c->shared_ffn) { /* (routed + shared) / 2 */
        c->routed_scaling_factor = 0.5f;
        c->shared_scale = 0.5f;
    }
    c->shared_gate = a->shared_gate != NULL && c->shared_ffn != 0;
    if (a->shared_sink) {
        /* Inkling: S shared experts of the routed width, gated by the
         * router's last S rows (transformers cannot build S = 0) */
        if (c->sink_shared < 1 || c->sink_shared > MOEVK_MAX_SHARED)
            return mvk_errf(r->err, r->errsz, "%s: \"%s\" = %u is not in 1..%u", r->what,
                            key_name(a, MVK_CFG_SINK_SHARED), c->sink_shared,
                            (unsigned)MOEVK_MAX_SHARED);
        c->shared_ffn = c->ffn;
    }
    if (mvk_arch_key_of(a, MVK_CFG_TOKEN_DROPOUT)) {
        /* NLLB-MoE at inference: each expert output times 1 - p */
        if (!(c->token_dropout >= 0.0f && c->token_dropout < 1.0f))
            return mvk_errf(r->err, r->errsz, "%s: \"%s\" = %g is not in [0, 1)", r->what,
                            key_name(a, MVK_CFG_TOKEN_DROPOUT), (double)c->token_dropout);
        c->routed_scaling_factor = 1.0f - c->token_dropout;
    }
    if (mvk_arch_key_of(a, MVK_CFG_EVAL_CAPACITY) && c->eval_capacity < 1.0) {
        /* NLLB-MoE at inference: capacity ceil(f T) (f <= 0: the training
         * capacity, expert_capacity, is refused); admission in token order,
         * top-1 choices first (batch_prioritized_routing orders by the
         * router's confidence: refused); the weights normalised before
         * dropping or, by default, over what dropping leaves */
        if (!(c->eval_capacity > 0.0))
            return mvk_errf(r->err, r->errsz,
                            "%s: \"%s\" = %g: the training capacity (expert_capacity) at "
                            "inference is not supported (give a fraction > 0)",
                            r->what, key_name(a, MVK_CFG_EVAL_CAPACITY), c->eval_capacity);
        if (c->batch_priority)
            return mvk_errf(r->err, r->errsz,
                            "%s: \"%s\" = true with \"%s\" = %g: tokens admitted in the order of "
                            "their router confidence, not token order; not supported",
                            r->what, key_name(a, MVK_CFG_BATCH_PRIORITY),
                            key_name(a, MVK_CFG_EVAL_CAPACITY), c->eval_capacity);
        c->capacity_fraction = c->eval_capacity;
        if (!c->norm_before_drop) {
            c->norm_topk_prob = 0;
            c->norm_min = 0.0f;
            c->drop_renorm_eps = 1.1920928955078125e-07f; /* torch.finfo(float32).eps */
        }
    }
    if (mvk_hfq_config_read(r->top ? r->top : r->root, r->what, &c->quant, r->err, r->errsz))
        return -1;
    return check_values(r, c);
}

/* ---- entry points ----------------------------------------------------------- */

/* arch NULL: the one config.json's model_type names. part: a second model
 * of the checkpoint (NULL: the main one), its config under "<part>_config"
 * (its text_config when that has one): Qwen3-Omni-MoE's talker. */
static int parse(const mvk_arch *arch, const char *part, const char *text, size_t len,
                 const char *what, mvk_moe_config *out, char *err, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    if (!what)
        what = "config.json";
    cJSON *root;
    if (mvk_json_parse(text, len, what, &root, err, errsz))
        return -1;
    cfg_reader r = {root, what, err, errsz, root};
    int rc = 0;
    char text_what[300];
    if (!cJSON_IsObject(root)) {
        rc = mvk_errf(err, errsz, "%s is not a JSON object", what);
        goto done;
    }
    char part_what[300];
    if (part) {
        char key[64];
        if (!*part || strlen(part) + sizeof "_config" > sizeof key) {
            rc = mvk_errf(err, errsz, "the part name \"%.64s\" is empty or too long", part);
            goto done;
        }
        snprintf(key, sizeof key, "%s_config", part);
        const cJSON *sub = cJSON_GetObjectItemCaseSensitive(root, key);
        if (!cJSON_IsObject(sub)) {
            rc = mvk_errf(err, errsz, "%s has no \"%s\" object: no part \"%s\"", what, key,
                          part);
            goto done;
        }
        const cJSON *stc = cJSON_GetObjectItemCaseSensitive(sub, "text_config");
        snprintf(part_what, sizeof part_what, "%s %s%s", what, key,
                 cJSON_IsObject(stc) ? ".text_config" : "");
        r.root = cJSON_IsObject(stc) ? stc : sub;
        r.what = part_what;
        if (!arch) {
            const cJSON *pmt = cJSON_GetObjectItemCaseSensitive(r.root, "model_type");
            if (!cJSON_IsString(pmt) || !pmt->valuestring) {
                rc = mvk_errf(err, errsz, "%s has no \"model_type\" string", part_what);
                goto done;
            }
            if (!(arch = mvk_arch_find(pmt->valuestring))) {
                char list[1024];
                rc = mvk_errf(err, errsz, "%s: model_type \"%.64s\" is not supported (%s)",
                              part_what, pmt->valuestring, mvk_arch_list(list, sizeof list, NULL));
                goto done;
            }
        }
        if (arch->config_from) { /* the part's keys are in another object */
            const cJSON *from = cJSON_GetObjectItemCaseSensitive(root, arch->config_from);
            if (!cJSON_IsObject(from)) {
                rc = mvk_errf(err, errsz, "%s: part \"%s\" (%s) reads its keys from \"%s\", "
                              "which is not an object there", what, part, mvk_arch_name(arch),
                              arch->config_from);
                goto done;
            }
            snprintf(part_what, sizeof part_what, "%s %s", what, arch->config_from);
            r.root = from;
        }
    }
    if (!arch) {
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
        if (!cJSON_IsString(mt) || !mt->valuestring) {
            rc = mvk_errf(err, errsz, "%s has no \"model_type\" string", what);
            goto done;
        }
        /* a multimodal wrapper whose text model is a supported MoE model:
         * its keys are in text_config (transformers' base_config_key), in
         * thinker_config's text_config (Qwen3-Omni-MoE's thinker), or in
         * llm_config (the legacy name Nemotron-H-Omni's released configs
         * use, which transformers reads as text_config) */
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
        const char *tc_name = "text_config";
        if (!cJSON_IsObject(tc)) {
            const cJSON *th = cJSON_GetObjectItemCaseSensitive(root, "thinker_config");
            tc = cJSON_IsObject(th) ? cJSON_GetObjectItemCaseSensitive(th, "text_config") : NULL;
            tc_name = "thinker_config.text_config";
        }
        if (!cJSON_IsObject(tc)) {
            tc = cJSON_GetObjectItemCaseSensitive(root, "llm_config");
            tc_name = "llm_config";
        }
        const cJSON *tmt = cJSON_IsObject(tc) ? cJSON_GetObjectItemCaseSensitive(tc, "model_type")
                                              : NULL;
        if (!mvk_arch_find(mt->valuestring) && cJSON_IsString(tmt) && tmt->valuestring &&
            (arch = mvk_arch_find(tmt->valuestring))) {
            snprintf(text_what, sizeof text_what, "%s %s", what, tc_name);
            r.root = tc;
            r.what = text_what;
        } else if (!(arch = mvk_arch_find(mt->valuestring))) {
            char list[1024];
            rc = mvk_errf(err, errsz, "%s: model_type \"%.64s\" is not supported (%s)", what,
                          mt->valuestring, mvk_arch_list(list, sizeof list, NULL));
            goto done;
        }
    }
    rc = read_config(&r, arch, out);
done:
    cJSON_Delete(root);
    if (rc)
        mvk_hf_config_free(out);
    return rc;
}

int mvk_hf_config_parse(const char *text, size_t len, const char *what, mvk_moe_config *out,
                        char *err, size_t errsz)
{
    return parse(NULL, NULL, text, len, what, out, err, errsz);
}

int mvk_hf_config_parse_part(const char *text, size_t len, const char *what, const char *part,
                             mvk_moe_config *out, char *err, size_t errsz)
{
    return parse(NULL, part, text, len, what, out, err, errsz);
}

int mvk_hf_config_parse_as(const mvk_arch *arch, const char *text, size_t len, const char *what,
                           mvk_moe_config *out, char *err, size_t errsz)
{
    if (!arch) {
        memset(out, 0, sizeof(*out));
        return mvk_errf(err, errsz, "no architecture to read %s as", what ? what : "config.json");
    }
    return parse(arch, NULL, text, len, what, out, err, errsz);
}

void mvk_hf_config_free(mvk_moe_config *c)
{
    if (!c)
        return;
    mvk_hfq_config_free(&c->quant);
    free(c->mlp_only_layers);
    c->mlp_only_layers = NULL;
    free(c->layer_types);
    c->layer_types = NULL;
    free(c->moe_layers);
    c->moe_layers = NULL;
    for (int f = 0; f < MVK_CFG_FIELD_COUNT; f++) {
        free(c->layer_values[f]);
        c->layer_values[f] = NULL;
        c->n_layer_values[f] = 0;
    }
    c->n_mlp_only_layers = 0;
}

/* ---- which layers hold a MoE block ---------------------------------------------- */

/* A DeepSeek-V4 hash-routed layer: its experts come from a table by token
 * id, which a block given hidden states cannot look up. */
#define HASH_ROUTED                                                                            \
    "layer %u is a hash-routed MoE layer (%s): its experts are chosen by token id "          \
    "(tid2eid), which moevk does not do; the layers after the hash-routed ones run"

int mvk_hf_layer_prefixes(mvk_moe_config *c, uint32_t layer, int decoder,
                          char prefixes[MVK_MAX_PREFIXES][MVK_PREFIX_LEN], int *count,
                          char *err, size_t errsz)
{
    *count = 0;
    const mvk_arch *a = c->arch;
    const char *arch = mvk_arch_name(a);
    char list[1024];
    if (decoder && !mvk_arch_has_decoder(a))
        return mvk_errf(err, errsz, "--decoder is only for %s",
                        mvk_arch_list(list, sizeof list, mvk_arch_has_decoder));
    const char *pattern[MVK_MAX_PREFIXES];
    for (int i = 0; i < MVK_MAX_PREFIXES; i++)
        pattern[i] = a->layer_prefixes[i];
    if (a->sparse == MVK_SPARSE_ENCODER_DECODER) {
        uint32_t n = decoder ? c->num_decoder_layers : c->num_layers;
        uint32_t step = decoder ? c->decoder_sparse_step_sw : c->encoder_sparse_step;
        const char *stack = decoder ? "decoder" : "encoder";
        if (layer >= n)
            return mvk_errf(err, errsz, "%s layer %u is out of range: the %s has %u blocks",
                            stack, layer, stack, n);
        int sparse = step > 0 && (a->sparse_last_of_step ? (layer + 1) % step == 0
                                                         : (layer % step == 1 || step == 1));
        if (!sparse && a->sparse_last_of_step)
            return mvk_errf(err, errsz,
                            "%s layer %u is a dense layer, not a MoE layer (sparse step %u: "
                            "layers %u, %u, ... are sparse)",
                            stack, layer, step, step - 1, 2 * step - 1);
        if (!sparse)
            return mvk_errf(err, errsz,
                            "%s block %u is a dense layer, not a MoE layer (sparse step %u: "
                            "blocks 1, 1 + %u, ... are sparse)",
                            stack, layer, step, step);
        if (decoder) {
            pattern[0] = a->decoder_prefix;
            pattern[1] = NULL;
        }
    } else {
        if (layer >= c->num_layers)
            return mvk_errf(err, errsz, "layer %u is out of range: %s has %s = %u", layer, arch,
                            key_name(a, MVK_CFG_NUM_LAYERS), c->num_layers);
        if (c->layer_types) {
            if (layer >= c->n_layer_types)
                return mvk_errf(err, errsz, "layer %u is not in %s (%u entries)", layer,
                                key_name(a, MVK_CFG_LAYER_TYPES), c->n_layer_types);
            if (c->layer_types[layer] == 2)
                return mvk_errf(err, errsz, HASH_ROUTED, layer,
                                "\"hash_moe\" in mlp_layer_types");
            if (!c->layer_types[layer])
                return mvk_errf(err, errsz,
                                "layer %u is not a MoE layer (not \"sparse\" in %s)",
                                layer, key_name(a, MVK_CFG_LAYER_TYPES));
            goto sparse;
        }
        if (layer < c->hash_layers)
            return mvk_errf(err, errsz, HASH_ROUTED, layer, "below num_hash_layers");
        if (c->moe_layers) {
            for (uint32_t i = 0; i < c->n_moe_layers; i++)
                if (c->moe_layers[i] == layer)
                    goto sparse;
            return mvk_errf(err, errsz,
                            "layer %u is a dense MLP layer (not in %s), not a MoE layer", layer,
                            key_name(a, MVK_CFG_MOE_LAYERS));
        }
        if (layer > c->last_moe_layer)
            return mvk_errf(err, errsz, "layer %u is a dense MLP layer (past %s = %u)", layer,
                            key_name(a, MVK_CFG_LAST_MOE_LAYER), c->last_moe_layer);
        if (layer % c->expert_period != c->expert_offset)
            return mvk_errf(err, errsz,
                            "layer %u is a dense MLP layer (%s = %u, %s = %u: layers with N %% %u "
                            "== %u are MoE)",
                            layer, key_name(a, MVK_CFG_EXPERT_PERIOD), c->expert_period,
                            key_name(a, MVK_CFG_EXPERT_OFFSET), c->expert_offset,
                            c->expert_period, c->expert_offset);
        for (uint32_t i = 0; i < c->n_mlp_only_layers; i++)
            if (c->mlp_only_layers[i] == layer)
                return mvk_errf(err, errsz,
                                "layer %u is a dense MLP layer (listed in %s), not a MoE layer",
                                layer, key_name(a, MVK_CFG_MLP_ONLY));
        if ((layer + 1) % c->decoder_sparse_step)
            return mvk_errf(err, errsz,
                            "layer %u is a dense MLP layer (%s = %u: layers with (N + 1) %% %u "
                            "== 0 are MoE)",
                            layer, key_name(a, MVK_CFG_SPARSE_STEP), c->decoder_sparse_step,
                            c->decoder_sparse_step);
        if (layer < c->first_k_dense_replace)
            return mvk_errf(err, errsz, "layer %u is a dense MLP layer (%s = %u), not a MoE layer",
                            layer, key_name(a, MVK_CFG_FIRST_K_DENSE), c->first_k_dense_replace);
    sparse:
        for (int f = 0; f < MVK_CFG_FIELD_COUNT; f++) {
            if (!c->layer_values[f])
                continue;
            if (layer >= c->n_layer_values[f])
                return mvk_errf(err, errsz, "layer %u is not in %s (%u entries)", layer,
                                key_name(a, (mvk_cfg_field)f), c->n_layer_values[f]);
            memcpy((char *)c + fields[f].offset, &c->layer_values[f][layer], sizeof(uint32_t));
        }
    }
    for (int i = 0; i < MVK_MAX_PREFIXES && pattern[i]; i++) {
        if (mvk_arch_expand(prefixes[i], MVK_PREFIX_LEN, "", pattern[i], layer)) {
            *count = 0;
            return mvk_errf(err, errsz, "%s: the tensor-name prefix of layer %u is too long",
                            arch, layer);
        }
        *count = i + 1;
    }
    if (!*count)
        return mvk_errf(err, errsz, "%s has no layer prefix", arch);
    return 0;
}
