/*
 * A checkpoint's MoE block from a path: the one entry point that both
 * `moevk run --model` and the Python package (python/) use to load a layer.
 *
 * path is a Hugging Face model directory (config.json plus safetensors,
 * single file or sharded with model.safetensors.index.json) or a GGUF file
 * (any of a split model's files). For a directory the block is layer
 * `layer` of the architecture's layer prefixes (the decoder stack when
 * `decoder`), or the tensors under `prefix` when that is not NULL (layer
 * then -1), of the checkpoint's model `part` (NULL: the main one; else
 * the second model whose config is "<part>_config": Qwen3-Omni-MoE's
 * "talker"); a GGUF file's block is blk.<layer>. (`prefix`, `decoder` and
 * `part` are refused for a GGUF file.) The block's desc points into the memory-mapped files, which
 * stay open until mvk_model_block_close.
 */
#ifndef MOEVK_MODEL_OPEN_H
#define MOEVK_MODEL_OPEN_H

#include <stddef.h>

#include "gguf.h"
#include "gguf_layer.h"
#include "hf_config.h"
#include "model_layer.h"
#include "safetensors.h"

typedef struct mvk_model_block {
    mvk_model_layer layer;   /* the block: layer.desc is its moevk_layer_desc */
    const char *act_name;    /* the activation as the checkpoint names it   */
    /* where the weights lie (a GGUF model when gguf.nfiles > 0, else the
     * config and the safetensors set) */
    mvk_gguf gguf;
    mvk_gguf_layer_info gguf_info;
    mvk_moe_config cfg;
    mvk_st_set set;
    char *cfg_path, *cfg_text;
} mvk_model_block;

/* Open the block (see above). On failure the message (err, errsz) names the
 * file, key or tensor at fault and nothing is left open (the block may still
 * be passed to mvk_model_block_close). A block must not be moved once open:
 * allocate it where it stays. Returns 0 or -1. */
int mvk_model_block_open(mvk_model_block *b, const char *path, long layer, const char *prefix,
                         int decoder, const char *part, char *err, size_t errsz);
/* The architecture's name: config.json's model_type or GGUF's
 * general.architecture. */
const char *mvk_model_block_arch(const mvk_model_block *b);
/* Frees everything the block holds; a zeroed block is a no-op. */
void mvk_model_block_close(mvk_model_block *b);

#endif
