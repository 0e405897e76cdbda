/*
 * libFuzzer target: the safetensors reader, then the layer builder of a few
 * tiny architectures on whatever tensors the input declares, then the CPU
 * reference on the built layer (so every pointer the builder hands out is
 * read, and counted for NaN/Inf). Failure messages must be escaped (no
 * control character). ASan/UBSan turn any out-of-bounds read or undefined
 * behaviour into a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/hf_config.h"
#include "model/model_layer.h"
#include "model/safetensors.h"
#include "ref/ref.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const configs[] = {
    "{\"model_type\": \"mixtral\", \"hidden_size\": 2, \"intermediate_size\": 1,"
    " \"num_local_experts\": 2, \"num_experts_per_tok\": 1}",
    "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 2, \"moe_intermediate_size\": 1,"
    " \"shared_expert_intermediate_size\": 2, \"num_experts\": 2, \"num_experts_per_tok\": 2}",
    "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 2, \"moe_intermediate_size\": 1,"
    " \"n_routed_experts\": 2, \"num_experts_per_tok\": 1, \"n_group\": 1, \"topk_group\": 1,"
    " \"n_shared_experts\": 1}",
    "{\"model_type\": \"gpt_oss\", \"hidden_size\": 2, \"intermediate_size\": 1,"
    " \"num_local_experts\": 2, \"num_experts_per_tok\": 1}",
    "{\"model_type\": \"switch_transformers\", \"d_model\": 2, \"d_ff\": 1, \"num_experts\": 2,"
    " \"expert_capacity\": 1, \"router_bias\": true}",
    /* quantised checkpoints (hf_quant.c), the smallest shapes their blocks allow */
    "{\"model_type\": \"mixtral\", \"hidden_size\": 32, \"intermediate_size\": 32,"
    " \"num_local_experts\": 2, \"num_experts_per_tok\": 1, \"quantization_config\":"
    " {\"quant_method\": \"gptq\", \"bits\": 4, \"group_size\": 32, \"desc_act\": true}}",
    "{\"model_type\": \"mixtral\", \"hidden_size\": 32, \"intermediate_size\": 32,"
    " \"num_local_experts\": 2, \"num_experts_per_tok\": 1, \"quantization_config\":"
    " {\"quant_method\": \"awq\", \"bits\": 4, \"group_size\": 32, \"version\": \"gemm\"}}",
    "{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"intermediate_size\": 64,"
    " \"num_local_experts\": 2, \"num_experts_per_tok\": 1, \"quantization_config\":"
    " {\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true,"
    " \"bnb_4bit_quant_type\": \"nf4\"}}",
    "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 128, \"moe_intermediate_size\": 128,"
    " \"num_experts\": 1, \"num_experts_per_tok\": 1, \"quantization_config\":"
    " {\"quant_method\": \"fp8\", \"weight_block_size\": [64, 128]}}",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    mvk_st_file f;
    if (mvk_st_parse(data, size, "fuzz", &f, err, sizeof err)) {
        message_is_clean(err);
        return 0;
    }
    /* every tensor's bytes lie inside the input */
    uint64_t acc = 0;
    for (size_t i = 0; i < f.count; i++) {
        const mvk_st_tensor *t = &f.tensors[i];
        for (uint64_t b = 0; b < t->end - t->begin; b++)
            acc += t->data[b];
        if (mvk_st_find(&f, t->name) != t)
            abort();
    }
    if (acc == UINT64_MAX) /* never (a sum of bytes): keeps the reads */
        abort();
    mvk_st_set set;
    mvk_st_set_init(&set);
    if (mvk_st_set_add_parsed(&set, &f, err, sizeof err))
        return 0;
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        mvk_moe_config cfg;
        if (mvk_hf_config_parse(configs[c], strlen(configs[c]), "cfg", &cfg, err, sizeof err))
            abort();
        mvk_model_layer L;
        if (mvk_model_layer_build(&cfg, &set, "", &L, err, sizeof err)) {
            message_is_clean(err);
        } else {
            /* two tokens of H (up to 128: the quantised configs) */
            float x[2 * 128], y[2 * 128];
            for (size_t k = 0; k < 2 * 128; k++)
                x[k] = (float)((int)(k % 7) - 3) * 0.25f;
            if (L.desc.hidden > 128)
                abort();
            char where[160];
            if (mvk_model_layer_nonfinite(&L, where, sizeof where) && !where[0])
                abort(); /* reads every weight pointer the desc holds */
            L.desc.capacity_factor = mvk_model_capacity_factor(&L, 2);
            if (moevk_ref_layer_forward(&L.desc, 2, x, y, NULL, NULL, NULL, NULL))
                abort();
            mvk_model_layer_free(&L);
        }
        mvk_hf_config_free(&cfg);
    }
    mvk_st_set_free(&set);
    return 0;
}
