/*
 * The supported GGUF MoE architectures: one descriptor each, read off
 * llama.cpp's model builders (src/models/ in llama.cpp: the arguments each passes
 * to build_moe_ffn) and loaders (which metadata keys they read, with their
 * defaults). The types are in gguf_arch.h; docs/gguf.md lists them with
 * the places where llama.cpp and transformers differ.
 *
 * Adding an architecture: one descriptor here (name, gating and its key,
 * norm and its key, scale/groups/dense-lead keys, activation, optional
 * tensors), a fixture in tests/gguf/make_fixtures.py with its numpy
 * reference, and a row in docs/gguf.md.
 */
#include "gguf_arch.h"

#include <stdio.h>
#include <string.h>

static const mvk_gguf_arch archs[] = {
    {
        /* Mixtral (and any llama file with experts): softmax, always renormalised */
        .name = "llama",
        .models = "Mixtral",
        .gating = MVK_GGUF_GATING_SOFTMAX,
        .norm = 1,
        .activation = MOEVK_ACT_SWIGLU,
        .act_name = "silu",
        .per_expert_names = 1,
    },
    {
        /* Qwen1.5-MoE, Qwen2-57B-A14B: no renormalisation, a gated shared expert */
        .name = "qwen2moe",
        .models = "Qwen1.5-MoE, Qwen2-MoE",
        .gating = MVK_GGUF_GATING_SOFTMAX,
        .norm = 0,
        .scale_key = 1,
        .activation = MOEVK_ACT_SWIGLU,
        .act_name = "silu",
        .shared = 1,
        .shared_gate = 1,
    },
    {
        /* Qwen3-30B-A3B, Qwen3-235B-A22B: llama.cpp always renormalises */
        .name = "qwen3moe",
        .models = "Qwen3-MoE",
        .gating = MVK_GGUF_GATING_SOFTMAX,
        .norm = 1,
        .activation = MOEVK_ACT_SWIGLU,
        .act_name = "silu",
    },
    {
        /* DeepSeek-V2 (softmax), V2-Lite, V3/R1 (sigmoid, exp_probs_b, groups) */
        .name = "deepseek2",
        .models = "DeepSeek-V2, DeepSeek-V3",
        .gating = MVK_GGUF_GATING_SOFTMAX, /* llama.cpp's default for old files */
        .gating_key = 1,
        .norm = 0,
        .norm_key = 1,
        .scale_key = 1,
        .groups_key = 1,
        .probs_bias = 1,
        .dense_lead_key = 1,
        .activation = MOEVK_ACT_SWIGLU,
        .act_name = "silu",
        .shared = 1,
    },
    {
        .name = "olmoe",
        .models = "OLMoE",
        .gating = MVK_GGUF_GATING_SOFTMAX,
        .norm = 0,
        .activation = MOEVK_ACT_SWIGLU,
        .act_name = "silu",
    },
    {
        /* top-k of the biased logits, softmax over the k, swiglu-oai (alpha
         * 1.702, limit 7: constants in llama.cpp) */
        .name = "gpt-oss",
        .models = "gpt-oss",
        .gating = MVK_GGUF_GATING_SOFTMAX_WEIGHT,
        .norm = 0,
        .activation = MOEVK_ACT_SWIGLU_OAI,
        .act_name = "swiglu_oai",
        .biases = 1,
    },
    {
        /* Grok-1: ggml's gelu is the tanh approximation; renormalised */
        .name = "grok",
        .models = "Grok-1",
        .gating = MVK_GGUF_GATING_SOFTMAX,
        .norm = 1,
        .scale_key = 1,
        .activation = MOEVK_ACT_GEGLU_TANH,
        .act_name = "gelu (tanh)",
        .refuse_tensor = "ffn_up.weight",
        .refuse_why = "the block adds a dense FFN to the experts and scales the sum by "
                      "sqrt(2)/2 (Grok-2), which a moevk layer does not describe",
    },
    {
        .name = "dbrx",
        .models = "DBRX",
        .gating = MVK_GGUF_GATING_SOFTMAX,
        .norm = 1,
        .scale_key = 1,
        .activation = MOEVK_ACT_SWIGLU,
        .act_name = "silu",
    },
    {
        /* GLM-4.5: sigmoid by default, exp_probs_b, shared experts */
        .name = "glm4moe",
        .models = "GLM-4.5",
        .gating = MVK_GGUF_GATING_SIGMOID,
        .gating_key = 1,
        .norm = 0,
        .norm_key = 1,
        .scale_key = 1,
        .probs_bias = 1,
        .dense_lead_key = 1,
        .activation = MOEVK_ACT_SWIGLU,
        .act_name = "silu",
        .shared = 1,
    },
};

#define N_ARCHS (sizeof archs / sizeof archs[0])

const mvk_gguf_arch *mvk_gguf_arch_find(const char *name)
{
    for (size_t i = 0; name && i < N_ARCHS; i++)
        if (!strcmp(name, archs[i].name))
            return &archs[i];
    return NULL;
}

const mvk_gguf_arch *mvk_gguf_arch_get(size_t i)
{
    return i < N_ARCHS ? &archs[i] : NULL;
}

const char *mvk_gguf_arch_list(char *buf, size_t bufsz)
{
    size_t o = 0;
    if (!bufsz)
        return buf;
    buf[0] = 0;
    for (size_t i = 0; i < N_ARCHS; i++) {
        int n = snprintf(buf + o, bufsz - o, "%s%s", o ? ", " : "", archs[i].name);
        if (n < 0 || (size_t)n >= bufsz - o) {
            buf[o] = 0;
            break;
        }
        o += (size_t)n;
    }
    return buf;
}
