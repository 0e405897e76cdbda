/*
 * The compute kernels embedded in the library. Each kernel is one SPIR-V
 * module compiled from shaders/ at build time; variants of one source come
 * from specialization constants (constant_id 0 is always the workgroup
 * size) and, where the code differs structurally, from -D defines in
 * shaders/meson.build. Their interface (push blocks, bindings, constants)
 * is shaders/interface.h.
 */
#ifndef MOEVK_KERNELS_H
#define MOEVK_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mvk_kernel_id {
    MVK_K_ROUTER_LOGITS,
    MVK_K_ROUTER_SCORES,
    MVK_K_ROUTE,
    MVK_K_EXPERT_CHOICE,
    MVK_K_PERMUTE,
    MVK_K_EXPERT_GEMM,
    MVK_K_EXPERT_GEMV,
    MVK_K_EXPERT_GEMM_MU_EMU, /* expert_gemm with emulated matrix units */
    MVK_K_EXPERT_GEMM_MU,     /* expert_gemm on cooperative matrices (when built) */
    MVK_K_COMBINE,
    MVK_K_SCALE_ROWS,
    MVK_K_INPUT_NORM,
    MVK_K_STATS,
    MVK_K_BANDWIDTH,
    MVK_K_COUNT
};

typedef struct mvk_kernel_info {
    const char *name;
    const uint32_t *code;
    size_t code_size; /* bytes */
    uint32_t bindings;  /* storage buffers at set 0, bindings 0..n-1 */
    uint32_t push_size; /* bytes of push constants */
    uint32_t nspec;     /* specialization constants, ids 0..nspec-1 */
} mvk_kernel_info;

/* Describe kernel `id`; false for an unknown id. */
bool mvk_kernel_get(uint32_t id, mvk_kernel_info *out);

#endif
