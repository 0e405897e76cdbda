/*
 * Test knobs: deterministic fault injection and a live-object count.
 */
#include "testing.h"
#include "internal.h"
#include "interface.h"
#include "kernels.h"
#include "layer.h"

void moevk_testing_fail_after(moevk_context *ctx, int64_t n)
{
    if (ctx)
        ctx->fault_countdown = n > 0 ? n : 0;
}

int64_t moevk_testing_live_objects(const moevk_context *ctx)
{
    return ctx ? ctx->live_objects : 0;
}

void moevk_testing_provoke_validation(moevk_context *ctx)
{
    /* A zero-sized buffer is invalid usage (VUID-VkBufferCreateInfo-size-00912). */
    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = 0,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
    };
    VkBuffer b = VK_NULL_HANDLE;
    if (ctx->vk.vkCreateBuffer(ctx->device, &bci, NULL, &b) == VK_SUCCESS && b)
        ctx->vk.vkDestroyBuffer(ctx->device, b, NULL);
}

void moevk_testing_set_max_buffer_range(moevk_context *ctx, uint64_t bytes)
{
    if (ctx)
        ctx->testing_max_range = bytes;
}

void moevk_testing_set_scratch_range(moevk_context *ctx, uint64_t bytes)
{
    if (ctx)
        ctx->testing_scratch_range = bytes;
}

moevk_status moevk_testing_set_push_descriptors(moevk_context *ctx, int on)
{
    if (!ctx)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    if (on && !ctx->info.push_descriptor)
        return MOEVK_ERROR_UNSUPPORTED;
    moevk_status st = mvk_wait_idle(ctx);
    if (st)
        return st;
    /* pipelines were built for one mode or the other */
    mvk_pipelines_destroy(ctx);
    ctx->push_descriptors = on != 0;
    return MOEVK_SUCCESS;
}

int moevk_testing_hold_context(moevk_context *ctx, int hold)
{
    if (!ctx)
        return 0;
    if (hold)
        return mvk_enter(ctx) == MOEVK_SUCCESS;
    mvk_leave(ctx);
    return 1;
}

moevk_status moevk_testing_force_path(moevk_context *ctx, int path)
{
    if (!ctx || path < -1 || path >= (int)MVK_PATHS)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    ctx->testing_force_path = (uint32_t)(path + 1);
    return MOEVK_SUCCESS;
}

moevk_status moevk_testing_matrix_units(moevk_context *ctx, int mode)
{
    if (!ctx || mode < 0 || mode > 2)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    ctx->mu_kernel = mode ? MVK_K_EXPERT_GEMM_MU_EMU : 0;
    ctx->mu_state = 0;
    ctx->info.matrix_units = 0;
    ctx->testing_mu_fail = mode == 2;
    return mode ? mvk_matrix_units_prepare(ctx) : MOEVK_SUCCESS;
}

moevk_status moevk_testing_heap_usage(moevk_context *ctx, uint32_t heap, uint64_t *usage)
{
    return mvk_heap_usage(ctx, heap, usage);
}

void moevk_testing_expert_heaps(const moevk_layer *L, uint32_t *device_heap, uint32_t *host_heap)
{
    *device_heap = *host_heap = UINT32_MAX;
    for (uint32_t c = 0; c < L->routed.nchunks; c++) {
        const moevk_buffer *b = L->routed.chunks[c].w[1];
        if (b)
            *(L->routed.chunks[c].host ? host_heap : device_heap) = b->heap;
    }
}
