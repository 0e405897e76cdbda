/*
 * llama.cpp's MoE architectures as data: one descriptor (mvk_gguf_arch) per
 * GGUF general.architecture, in one const table (gguf_arch.c), the sibling
 * of the Hugging Face table (arch.h). A descriptor says what llama.cpp's
 * model builder hands to build_moe_ffn (src/llama-graph.cpp) for that
 * architecture: the gating function (fixed, or read from
 * {arch}.expert_gating_func), whether the top-k weights are renormalised
 * (fixed, or {arch}.expert_weights_norm), whether {arch}.expert_weights_scale
 * and the expert groups are read, the activation, and which optional tensors
 * the block has (exp_probs_b, biases, shared experts and their gate). One
 * generic loader (gguf_layer.c) handles every descriptor.
 *
 * Tensor names are llama.cpp's (blk.N. + ffn_gate_inp.weight, ...); their
 * ggml shapes are innermost first: ffn_gate_exps is ne = [H, F, E], which
 * is moevk's [E, F, H] row-major stack.
 */
#ifndef MOEVK_MODEL_GGUF_ARCH_H
#define MOEVK_MODEL_GGUF_ARCH_H

#include <stddef.h>

#include "moevk/moevk.h"

/* llama.cpp's llama_expert_gating_func_type values ({arch}.expert_gating_func). */
typedef enum mvk_gguf_gating {
    MVK_GGUF_GATING_SOFTMAX = 1,        /* softmax over E, then top-k            */
    MVK_GGUF_GATING_SIGMOID = 2,        /* sigmoid, then top-k                   */
    MVK_GGUF_GATING_SOFTMAX_WEIGHT = 3, /* top-k of the logits, softmax over k   */
} mvk_gguf_gating;

typedef struct mvk_gguf_arch {
    const char *name;          /* general.architecture                         */
    const char *models;        /* what it holds (for messages and docs)        */
    mvk_gguf_gating gating;    /* fixed, or the default of gating_key          */
    int gating_key;            /* read {arch}.expert_gating_func               */
    int norm;                  /* renormalise the top-k weights: fixed, or the
                                  default of norm_key                          */
    int norm_key;              /* read {arch}.expert_weights_norm              */
    int scale_key;             /* read {arch}.expert_weights_scale             */
    int groups_key;            /* read expert_group_count / _used_count        */
    int probs_bias;            /* blk.N.exp_probs_b.bias (selection bias)       */
    int dense_lead_key;        /* read leading_dense_block_count               */
    moevk_activation activation;
    const char *act_name;      /* llama.cpp's op: "silu", "gelu", "swiglu_oai" */
    int biases;                /* .bias of the router and the experts           */
    int shared;                /* ffn_{gate,up,down}_shexp                      */
    int shared_gate;           /* ffn_gate_inp_shexp: a sigmoid gate on them    */
    int per_expert_names;      /* also blk.N.ffn_gate.{i}.weight (old files)     */
    const char *refuse_tensor; /* a tensor that, when present, makes the block
                                  more than moevk's layer (NULL: none)          */
    const char *refuse_why;
} mvk_gguf_arch;

/* The architecture named `name` (general.architecture), or NULL. */
const mvk_gguf_arch *mvk_gguf_arch_find(const char *name);
/* The i-th of the table, NULL past its end. */
const mvk_gguf_arch *mvk_gguf_arch_get(size_t i);
/* "llama, qwen2moe, ...", into buf. Returns buf. */
const char *mvk_gguf_arch_list(char *buf, size_t bufsz);

#endif
