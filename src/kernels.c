/*
 * The kernel table: which embedded SPIR-V module each kernel id uses, and
 * the interface its pipeline layout needs (bindings, push-constant bytes,
 * specialization constants), all taken from shaders/interface.h so that the
 * table cannot disagree with the recorders (tests/test_kernels.c checks it
 * against the modules themselves).
 */
#include "kernels.h"
#include "interface.h"

#define MVK_KERNELS(K)                                                                          \
    K(MVK_K_ROUTER_LOGITS, router_logits, MVK_ROUTER_BINDINGS, mvk_router_push, MVK_ROUTER_NSPEC) \
    K(MVK_K_ROUTER_SCORES, router_scores, MVK_SCORES_BINDINGS, mvk_scores_push, MVK_SCORES_NSPEC) \
    K(MVK_K_ROUTE, route, MVK_ROUTE_BINDINGS, mvk_route_push, MVK_ROUTE_NSPEC)                  \
    K(MVK_K_EXPERT_CHOICE, expert_choice, MVK_EC_BINDINGS, mvk_ec_push, MVK_EC_NSPEC)           \
    K(MVK_K_PERMUTE, permute, MVK_PERMUTE_BINDINGS, mvk_permute_push, MVK_PERMUTE_NSPEC)        \
    K(MVK_K_EXPERT_GEMM, expert_gemm, MVK_GEMM_BINDINGS, mvk_gemm_push, MVK_GEMM_NSPEC)         \
    K(MVK_K_EXPERT_GEMV, expert_gemv, MVK_GEMM_BINDINGS, mvk_gemm_push, MVK_GEMV_NSPEC)         \
    K(MVK_K_EXPERT_GEMM_MU_EMU, expert_gemm_mu_emu, MVK_GEMM_BINDINGS, mvk_gemm_push,           \
      MVK_GEMM_NSPEC)                                                                           \
    K(MVK_K_COMBINE, combine, MVK_COMBINE_BINDINGS, mvk_combine_push, MVK_COMBINE_NSPEC)        \
    K(MVK_K_SCALE_ROWS, scale_rows, MVK_SCALE_BINDINGS, mvk_scale_push, MVK_SCALE_NSPEC)        \
    K(MVK_K_INPUT_NORM, input_norm, MVK_NORM_BINDINGS, mvk_norm_push, MVK_NORM_NSPEC)          \
    K(MVK_K_STATS, stats, MVK_STATS_BINDINGS, mvk_stats_push, MVK_STATS_NSPEC)                  \
    K(MVK_K_BANDWIDTH, bandwidth, MVK_BANDWIDTH_BINDINGS, mvk_bandwidth_push, MVK_BANDWIDTH_NSPEC)

/* Built when the configure-time probe found a glslang that compiles
 * GL_KHR_cooperative_matrix (shaders/meson.build). */
#if MOEVK_HAVE_COOPMAT
#define MVK_KERNELS_OPTIONAL(K)                                                                 \
    K(MVK_K_EXPERT_GEMM_MU, expert_gemm_mu, MVK_GEMM_BINDINGS, mvk_gemm_push, MVK_GEMM_NSPEC)
#else
#define MVK_KERNELS_OPTIONAL(K)
#endif

#define MVK_SPV(ID, NAME, BINDINGS, PUSH, NSPEC)                                                \
    extern const uint32_t mvk_spv_##NAME[];                                                     \
    extern const size_t mvk_spv_##NAME##_size;
MVK_KERNELS(MVK_SPV)
MVK_KERNELS_OPTIONAL(MVK_SPV)
#undef MVK_SPV

/* Push blocks hold 32-bit scalars only: no padding, the same in C and GLSL. */
#define MVK_PUSH_CHECK(ID, NAME, BINDINGS, PUSH, NSPEC)                                         \
    _Static_assert(sizeof(PUSH) % 4 == 0, #PUSH " is not whole words");                        \
    _Static_assert(sizeof(PUSH) <= 128, #PUSH " exceeds the 128 bytes every device allows");
MVK_KERNELS(MVK_PUSH_CHECK)
#undef MVK_PUSH_CHECK

bool mvk_kernel_get(uint32_t id, mvk_kernel_info *out)
{
    switch (id) {
#define MVK_CASE(ID, NAME, BINDINGS, PUSH, NSPEC)                                               \
    case ID:                                                                                    \
        *out = (mvk_kernel_info){#NAME, mvk_spv_##NAME, mvk_spv_##NAME##_size, BINDINGS,        \
                                 (uint32_t)sizeof(PUSH), NSPEC};                                \
        return true;
        MVK_KERNELS(MVK_CASE)
        MVK_KERNELS_OPTIONAL(MVK_CASE)
#undef MVK_CASE
    }
    return false;
}
