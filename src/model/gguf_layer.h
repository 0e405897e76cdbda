/*
 * One GGUF MoE block (llama.cpp's tensor names, blk.N.) -> a moevk_layer_desc.
 *
 * The architecture's descriptor (gguf_arch.h) says which tensors and keys
 * the block has; H, F and E come from the tensors' shapes and are checked
 * against the metadata that states them ({arch}.expert_count,
 * embedding_length, expert_feed_forward_length, ...). Expert matrices are
 * handed to moevk as they lie in the memory map, in their file format
 * (ggml's block layouts are moevk's): stacked ffn_{gate,up,down}_exps
 * (ne = [H, F, E], [F, H, E]) contiguous, the fused ffn_gate_up_exps
 * (ne = [H, 2F, E], expert e's gate rows then its up rows, as llama.cpp's
 * build_moe_ffn splits it) and the old per-expert blk.N.ffn_gate.{i}.weight
 * through per-expert pointers; formats per matrix (gate/up, down, and the
 * shared expert's). Copied only: biases and exp_probs_b (to f32), a router
 * in a block format (decoded to f32), a router and shared-expert gate of
 * different types (both to f32), and a f32/f16/bf16 tensor whose data is
 * not aligned to its element size. A type moevk has no format for, gate and
 * up of different formats, and a routing moevk cannot express (softmax
 * gating with a weight scale, expert groups or a selection bias) are
 * refused with a message naming the tensor or key and the value.
 */
#ifndef MOEVK_MODEL_GGUF_LAYER_H
#define MOEVK_MODEL_GGUF_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "gguf_arch.h"
#include "model_layer.h"

typedef struct mvk_gguf_layer_info {
    const mvk_gguf_arch *arch;
    uint32_t layer;
    uint32_t block_count;     /* {arch}.block_count (0 when absent)        */
    char tensors[4096];       /* "name type bytes", one per line, indented  */
    uint64_t file_bytes;      /* bytes of the block's tensors in the file   */
    char notes[512];          /* copies made ("router q8_0 decoded to f32") */
} mvk_gguf_layer_info;

/* Build layer `layer`'s MoE block. out->arch is NULL, out->arch_name the
 * architecture, out->prefix "blk.N.", out->layout the experts' form; the
 * desc points into the model's memory map (keep m open while it is used).
 * info may be NULL. On failure nothing is left allocated. */
int mvk_gguf_layer_build(const mvk_gguf *m, uint32_t layer, mvk_model_layer *out,
                         mvk_gguf_layer_info *info, char *err, size_t errsz);

/* The architecture of the model (general.architecture, in the table) and
 * its {arch}.block_count (0 when absent). */
int mvk_gguf_model_arch(const mvk_gguf *m, const mvk_gguf_arch **arch, uint32_t *block_count,
                        char *err, size_t errsz);

#endif
