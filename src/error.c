/*
 * Status codes, per-context error messages, logging, and host allocations
 * (through the optional user hooks, with fault injection for tests).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

const char *moevk_status_string(moevk_status status)
{
    switch (status) {
    case MOEVK_SUCCESS: return "MOEVK_SUCCESS";
    case MOEVK_ERROR_INVALID_ARGUMENT: return "MOEVK_ERROR_INVALID_ARGUMENT";
    case MOEVK_ERROR_OUT_OF_HOST_MEMORY: return "MOEVK_ERROR_OUT_OF_HOST_MEMORY";
    case MOEVK_ERROR_OUT_OF_DEVICE_MEMORY: return "MOEVK_ERROR_OUT_OF_DEVICE_MEMORY";
    case MOEVK_ERROR_NO_VULKAN: return "MOEVK_ERROR_NO_VULKAN";
    case MOEVK_ERROR_NO_DEVICE: return "MOEVK_ERROR_NO_DEVICE";
    case MOEVK_ERROR_UNSUPPORTED: return "MOEVK_ERROR_UNSUPPORTED";
    case MOEVK_ERROR_LIMIT_EXCEEDED: return "MOEVK_ERROR_LIMIT_EXCEEDED";
    case MOEVK_ERROR_DEVICE_LOST: return "MOEVK_ERROR_DEVICE_LOST";
    case MOEVK_ERROR_TIMEOUT: return "MOEVK_ERROR_TIMEOUT";
    case MOEVK_ERROR_VULKAN: return "MOEVK_ERROR_VULKAN";
    case MOEVK_ERROR_INTERNAL: return "MOEVK_ERROR_INTERNAL";
    case MOEVK_ERROR_BUSY: return "MOEVK_ERROR_BUSY";
    }
    return "unknown moevk_status";
}

const char *mvk_vk_result_string(VkResult r)
{
    switch (r) {
#define C(x) case x: return #x;
    C(VK_SUCCESS) C(VK_NOT_READY) C(VK_TIMEOUT) C(VK_INCOMPLETE)
    C(VK_ERROR_OUT_OF_HOST_MEMORY) C(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    C(VK_ERROR_INITIALIZATION_FAILED) C(VK_ERROR_DEVICE_LOST) C(VK_ERROR_MEMORY_MAP_FAILED)
    C(VK_ERROR_LAYER_NOT_PRESENT) C(VK_ERROR_EXTENSION_NOT_PRESENT)
    C(VK_ERROR_FEATURE_NOT_PRESENT) C(VK_ERROR_INCOMPATIBLE_DRIVER)
    C(VK_ERROR_TOO_MANY_OBJECTS) C(VK_ERROR_FORMAT_NOT_SUPPORTED)
    C(VK_ERROR_FRAGMENTED_POOL) C(VK_ERROR_OUT_OF_POOL_MEMORY) C(VK_ERROR_UNKNOWN)
#undef C
    default: return "VkResult(other)";
    }
}

void mvk_log(moevk_context *ctx, moevk_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->log || level > ctx->log_level)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    ctx->log(ctx->log_user, level, buf);
}

moevk_status mvk_fail(moevk_context *ctx, moevk_status st, const char *fmt, ...)
{
    if (!ctx)
        return st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->last_error, sizeof(ctx->last_error), fmt, ap);
    va_end(ap);
    mvk_log(ctx, MOEVK_LOG_ERROR, "%s: %s", moevk_status_string(st), ctx->last_error);
    return st;
}

moevk_status mvk_vk_fail(moevk_context *ctx, VkResult r, const char *what)
{
    moevk_status st;
    switch (r) {
    case VK_ERROR_OUT_OF_HOST_MEMORY: st = MOEVK_ERROR_OUT_OF_HOST_MEMORY; break;
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    case VK_ERROR_TOO_MANY_OBJECTS:
    case VK_ERROR_FRAGMENTED_POOL:
    case VK_ERROR_OUT_OF_POOL_MEMORY: st = MOEVK_ERROR_OUT_OF_DEVICE_MEMORY; break;
    case VK_ERROR_DEVICE_LOST: st = MOEVK_ERROR_DEVICE_LOST; break;
    case VK_TIMEOUT: st = MOEVK_ERROR_TIMEOUT; break;
    case VK_ERROR_LAYER_NOT_PRESENT:
    case VK_ERROR_EXTENSION_NOT_PRESENT:
    case VK_ERROR_FEATURE_NOT_PRESENT:
    case VK_ERROR_INCOMPATIBLE_DRIVER: st = MOEVK_ERROR_UNSUPPORTED; break;
    default: st = MOEVK_ERROR_VULKAN; break;
    }
    if (ctx)
        ctx->last_vk = r;
    return mvk_fail(ctx, st, "%s failed: %s (%d)", what, mvk_vk_result_string(r), (int)r);
}

void mvk_clear_error(moevk_context *ctx)
{
    ctx->last_error[0] = '\0';
    ctx->last_vk = VK_SUCCESS;
}

bool mvk_inject_fault(moevk_context *ctx)
{
    if (!ctx || ctx->fault_countdown <= 0)
        return false;
    return --ctx->fault_countdown == 0;
}

/* Host allocations carry a small header holding their size, so a user
 * allocator without a size argument on free still works and memory is
 * always zeroed. */
typedef struct { size_t size; size_t pad[7]; } mvk_alloc_header; /* 64 bytes */

void *mvk_alloc(moevk_context *ctx, size_t size)
{
    if (mvk_inject_fault(ctx))
        return NULL;
    if (size > SIZE_MAX - sizeof(mvk_alloc_header))
        return NULL;
    size_t total = size + sizeof(mvk_alloc_header);
    mvk_alloc_header *h;
    if (ctx && ctx->alloc.alloc)
        h = ctx->alloc.alloc(ctx->alloc.user, total, 64);
    else
        h = malloc(total);
    if (!h)
        return NULL;
    memset(h, 0, total);
    h->size = size;
    if (ctx)
        ctx->live_objects++;
    return h + 1;
}

void mvk_free(moevk_context *ctx, void *p)
{
    if (!p)
        return;
    mvk_alloc_header *h = (mvk_alloc_header *)p - 1;
    if (ctx)
        ctx->live_objects--;
    if (ctx && ctx->alloc.free)
        ctx->alloc.free(ctx->alloc.user, h);
    else
        free(h);
}

const char *moevk_context_last_error(const moevk_context *ctx)
{
    return ctx ? ctx->last_error : "NULL context";
}

int32_t moevk_context_last_vk_result(const moevk_context *ctx)
{
    return ctx ? (int32_t)ctx->last_vk : 0;
}

uint32_t moevk_context_validation_messages(const moevk_context *ctx)
{
    return ctx ? ctx->validation_messages : 0;
}

/* ---- one thread at a time ------------------------------------------------- */

/* A token naming the calling thread: the address of a thread-local object,
 * distinct for every live thread (and never 0). The object is never
 * written: this is not mutable state. */
static uintptr_t mvk_thread_token(void)
{
    static _Thread_local const char token = 0;
    return (uintptr_t)&token;
}

moevk_status mvk_enter(moevk_context *ctx)
{
    uintptr_t me = mvk_thread_token(), expected = 0;
    if (atomic_compare_exchange_strong(&ctx->owner, &expected, me)) {
        ctx->depth = 1;
        return MOEVK_SUCCESS;
    }
    if (expected == me) {
        ctx->depth++;
        return MOEVK_SUCCESS;
    }
    return MOEVK_ERROR_BUSY;
}

void mvk_leave(moevk_context *ctx)
{
    if (--ctx->depth == 0)
        atomic_store(&ctx->owner, (uintptr_t)0);
}
