/*
 * The kernel table: which embedded SPIR-V module each kernel id uses, and
 * the interface (bindings, push-constant bytes) its pipeline layout needs.
 */
#include "kernels.h"

#define MVK_KERNELS(K)                                                                  \
    K(MVK_K_ROUTER_LOGITS, router_logits, 4, 20)                                        \
    K(MVK_K_ROUTER_SCORES, router_scores, 2, 12)                                        \
    K(MVK_K_ROUTE, route, 5, 32)                                                        \
    K(MVK_K_PERMUTE, permute, 8, 32)                                                    \
    K(MVK_K_EXPERT_GEMM, expert_gemm, 9, 44)                                            \
    K(MVK_K_COMBINE, combine, 6, 24)                                                    \
    K(MVK_K_STATS, stats, 5, 12)                                                        \
    K(MVK_K_BANDWIDTH, bandwidth, 2, 4)

#define MVK_SPV(ID, NAME, BINDINGS, PUSH)                                               \
    extern const uint32_t mvk_spv_##NAME[];                                             \
    extern const size_t mvk_spv_##NAME##_size;
MVK_KERNELS(MVK_SPV)
#undef MVK_SPV

bool mvk_kernel_get(uint32_t id, mvk_kernel_info *out)
{
    switch (id) {
#define MVK_CASE(ID, NAME, BINDINGS, PUSH)                                              \
    case ID:                                                                            \
        *out = (mvk_kernel_info){#NAME, mvk_spv_##NAME, mvk_spv_##NAME##_size, BINDINGS, PUSH}; \
        return true;
        MVK_KERNELS(MVK_CASE)
#undef MVK_CASE
    }
    return false;
}
