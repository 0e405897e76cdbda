/*
 * Device buffers, staged transfers and tensor views.
 *
 * Each moevk_buffer owns one VkDeviceMemory (layers allocate few, large
 * buffers, so the allocation count stays far below maxMemoryAllocationCount).
 * Transfers go through one host-visible staging buffer per context, reused
 * and copied in chunks, so the staging size is bounded whatever the upload.
 */
#include <string.h>

#include "internal.h"

#define MVK_STAGING_BYTES (16ull << 20)

static int find_memory_type_avoiding(const moevk_context *ctx, uint32_t bits,
                                     VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid)
{
    const VkPhysicalDeviceMemoryProperties *mp = &ctx->memprops;
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++)
        if ((bits & (1u << i)) && (mp->memoryTypes[i].propertyFlags & want) == want &&
            !(mp->memoryTypes[i].propertyFlags & avoid))
            return (int)i;
    return -1;
}

static int find_memory_type(const moevk_context *ctx, uint32_t bits, VkMemoryPropertyFlags want)
{
    return find_memory_type_avoiding(ctx, bits, want, 0);
}

/* mvk_buffer_alloc, preferring a memory type without `avoid`; the
 * allocation's size into *bytes. */
static moevk_status buffer_alloc(moevk_context *ctx, uint64_t size, VkBufferUsageFlags usage,
                                 VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid,
                                 VkBuffer *buf, VkDeviceMemory *mem, uint64_t *bytes,
                                 uint32_t *heap)
{
    *buf = VK_NULL_HANDLE;
    *mem = VK_NULL_HANDLE;
    if (ctx->memprops.memoryTypeCount == 0)
        ctx->vki.vkGetPhysicalDeviceMemoryProperties(ctx->phys, &ctx->memprops);
    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = usage,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkResult r = MVK_VK(ctx, ctx->vk.vkCreateBuffer(ctx->device, &bci, NULL, buf));
    if (r != VK_SUCCESS) {
        *buf = VK_NULL_HANDLE;
        return mvk_vk_fail(ctx, r, "vkCreateBuffer");
    }
    VkMemoryRequirements req;
    ctx->vk.vkGetBufferMemoryRequirements(ctx->device, *buf, &req);
    int type = avoid ? find_memory_type_avoiding(ctx, req.memoryTypeBits, want, avoid) : -1;
    if (type < 0)
        type = find_memory_type(ctx, req.memoryTypeBits, want);
    if (type < 0 && (want & VK_MEMORY_PROPERTY_HOST_CACHED_BIT))
        type = find_memory_type(ctx, req.memoryTypeBits, want & ~VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
    if (type < 0 && (want & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT))
        type = find_memory_type(ctx, req.memoryTypeBits, want & ~VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    if (type < 0) {
        ctx->vk.vkDestroyBuffer(ctx->device, *buf, NULL);
        *buf = VK_NULL_HANDLE;
        return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED, "no memory type with flags 0x%x for a buffer",
                        (unsigned)want);
    }
    VkMemoryAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = req.size,
        .memoryTypeIndex = (uint32_t)type,
    };
    r = MVK_VK(ctx, ctx->vk.vkAllocateMemory(ctx->device, &ai, NULL, mem));
    if (r == VK_SUCCESS)
        r = MVK_VK(ctx, ctx->vk.vkBindBufferMemory(ctx->device, *buf, *mem, 0));
    else
        *mem = VK_NULL_HANDLE;
    if (r != VK_SUCCESS) {
        ctx->vk.vkDestroyBuffer(ctx->device, *buf, NULL);
        if (*mem)
            ctx->vk.vkFreeMemory(ctx->device, *mem, NULL);
        *buf = VK_NULL_HANDLE;
        *mem = VK_NULL_HANDLE;
        moevk_status st = mvk_vk_fail(ctx, r, "vkAllocateMemory/vkBindBufferMemory");
        if (st == MOEVK_ERROR_OUT_OF_DEVICE_MEMORY)
            mvk_fail(ctx, st, "out of device memory allocating %llu bytes",
                     (unsigned long long)size);
        return st;
    }
    ctx->live_objects++;
    if (bytes)
        *bytes = req.size;
    if (heap)
        *heap = ctx->memprops.memoryTypes[type].heapIndex;
    return MOEVK_SUCCESS;
}

moevk_status mvk_buffer_alloc(moevk_context *ctx, uint64_t size, VkBufferUsageFlags usage,
                              VkMemoryPropertyFlags want, VkBuffer *buf, VkDeviceMemory *mem)
{
    return buffer_alloc(ctx, size, usage, want, 0, buf, mem, NULL, NULL);
}

/* Frees a buffer made by mvk_buffer_alloc (both handles, or neither). */
void mvk_buffer_free(moevk_context *ctx, VkBuffer buf, VkDeviceMemory mem)
{
    if (!buf)
        return;
    ctx->vk.vkDestroyBuffer(ctx->device, buf, NULL);
    ctx->vk.vkFreeMemory(ctx->device, mem, NULL);
    ctx->live_objects--;
}

void mvk_staging_release(moevk_context *ctx)
{
    if (ctx->staging_map)
        ctx->vk.vkUnmapMemory(ctx->device, ctx->staging_mem);
    mvk_buffer_free(ctx, ctx->staging, ctx->staging_mem);
    ctx->staging = VK_NULL_HANDLE;
    ctx->staging_mem = VK_NULL_HANDLE;
    ctx->staging_map = NULL;
    ctx->staging_size = 0;
}

static moevk_status staging_ensure(moevk_context *ctx)
{
    if (ctx->staging)
        return MOEVK_SUCCESS;
    uint64_t size = MVK_STAGING_BYTES;
    moevk_status st = mvk_buffer_alloc(
        ctx, size, VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT |
            VK_MEMORY_PROPERTY_HOST_CACHED_BIT,
        &ctx->staging, &ctx->staging_mem);
    if (st)
        return st;
    VkResult r = MVK_VK(ctx, ctx->vk.vkMapMemory(ctx->device, ctx->staging_mem, 0, VK_WHOLE_SIZE,
                                                 0, &ctx->staging_map));
    if (r != VK_SUCCESS) {
        ctx->staging_map = NULL;
        mvk_staging_release(ctx);
        return mvk_vk_fail(ctx, r, "vkMapMemory");
    }
    ctx->staging_size = size;
    return MOEVK_SUCCESS;
}

/* ---- public buffers ------------------------------------------------------ */

static moevk_status check_buffer_size(moevk_context *ctx, uint64_t size)
{
    if (size == 0)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "buffer size is 0");
    if (size > ctx->info.max_storage_buffer_range)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                        "buffer size %llu exceeds the device's maxStorageBufferRange %llu",
                        (unsigned long long)size,
                        (unsigned long long)ctx->info.max_storage_buffer_range);
    if (ctx->info.max_allocation_size && size > ctx->info.max_allocation_size)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                        "buffer size %llu exceeds the device's maxMemoryAllocationSize %llu",
                        (unsigned long long)size,
                        (unsigned long long)ctx->info.max_allocation_size);
    return MOEVK_SUCCESS;
}

static moevk_status buffer_create_in(moevk_context *ctx, uint64_t size, bool host,
                                     moevk_buffer **out)
{
    if (!out)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "buffer_create: %s is NULL",
                        ctx ? "out" : "ctx");
    *out = NULL;
    moevk_status st = check_buffer_size(ctx, size);
    if (st)
        return st;
    moevk_buffer *b = mvk_alloc(ctx, sizeof(*b));
    if (!b)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "buffer handle allocation");
    b->ctx = ctx;
    b->size = size;
    /* Storage buffers are accessed as uint words: round up to 4 bytes. */
    const VkBufferUsageFlags usage =
        VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
        VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT;
    if (host)
        st = buffer_alloc(ctx, (size + 3) & ~3ull, usage,
                          VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                          VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, &b->buffer, &b->memory,
                          &b->alloc_bytes, &b->heap);
    else
        st = buffer_alloc(ctx, (size + 3) & ~3ull, usage, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0,
                          &b->buffer, &b->memory, &b->alloc_bytes, &b->heap);
    if (!st && host) {
        b->host = true;
        VkResult r = MVK_VK(ctx, ctx->vk.vkMapMemory(ctx->device, b->memory, 0, VK_WHOLE_SIZE, 0,
                                                     &b->map));
        if (r != VK_SUCCESS) {
            b->map = NULL;
            mvk_buffer_free(ctx, b->buffer, b->memory);
            st = mvk_vk_fail(ctx, r, "vkMapMemory");
        }
    }
    if (st) {
        mvk_free(ctx, b);
        return st;
    }
    *out = b;
    return MOEVK_SUCCESS;
}

static moevk_status buffer_create(moevk_context *ctx, uint64_t size, moevk_buffer **out)
{
    return buffer_create_in(ctx, size, false, out);
}

moevk_status mvk_host_buffer_create(moevk_context *ctx, uint64_t size, moevk_buffer **out)
{
    return buffer_create_in(ctx, size, true, out);
}

static moevk_status buffer_import(moevk_context *ctx, void *vk_buffer, uint64_t size,
                                  moevk_buffer **out)
{
    if (!out || !vk_buffer)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "buffer_import: %s is NULL",
                        !ctx ? "ctx" : !out ? "out" : "vk_buffer");
    *out = NULL;
    moevk_status st = check_buffer_size(ctx, size);
    if (st)
        return st;
    moevk_buffer *b = mvk_alloc(ctx, sizeof(*b));
    if (!b)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "buffer handle allocation");
    b->ctx = ctx;
    b->buffer = (VkBuffer)vk_buffer;
    b->size = size;
    b->imported = true;
    *out = b;
    return MOEVK_SUCCESS;
}

void moevk_buffer_destroy(moevk_buffer *b)
{
    if (!b)
        return;
    moevk_context *ctx = b->ctx;
    if (mvk_enter(ctx))
        return; /* another thread is inside a call: a misuse; nothing is touched */
    mvk_wait_before_free(ctx);
    if (b->map)
        ctx->vk.vkUnmapMemory(ctx->device, b->memory);
    if (!b->imported)
        mvk_buffer_free(ctx, b->buffer, b->memory);
    mvk_free(ctx, b);
    mvk_leave(ctx);
}

uint64_t moevk_buffer_size(const moevk_buffer *b)
{
    return b ? b->size : 0;
}

void *moevk_buffer_vk_handle(const moevk_buffer *b)
{
    return b ? (void *)b->buffer : NULL;
}

static moevk_status check_range(moevk_context *ctx, const moevk_buffer *b, uint64_t offset,
                                uint64_t size, const char *what)
{
    if (offset > b->size || size > b->size - offset)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "%s: range [%llu, +%llu) is outside the buffer of %llu bytes", what,
                        (unsigned long long)offset, (unsigned long long)size,
                        (unsigned long long)b->size);
    return MOEVK_SUCCESS;
}

/* Copy one chunk between the staging buffer and `b`. */
static moevk_status staged_copy(moevk_context *ctx, VkBuffer dst, uint64_t dst_off, VkBuffer src,
                                uint64_t src_off, uint64_t bytes)
{
    mvk_cmd c;
    moevk_status st = mvk_cmd_begin(ctx, &c);
    if (st)
        return st;
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_MEMORY_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    ctx->vk.vkCmdPipelineBarrier(c.cb, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
                                 VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    VkBufferCopy region = {.srcOffset = src_off, .dstOffset = dst_off, .size = bytes};
    ctx->vk.vkCmdCopyBuffer(c.cb, src, dst, 1, &region);
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_MEMORY_READ_BIT |
                       VK_ACCESS_MEMORY_WRITE_BIT;
    ctx->vk.vkCmdPipelineBarrier(c.cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                                 VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
                                 0, 1, &mb, 0, NULL, 0, NULL);
    return mvk_cmd_submit_wait(&c);
}

static moevk_status buffer_upload(moevk_buffer *b, uint64_t offset, const void *src,
                                  uint64_t size)
{
    moevk_context *ctx = b->ctx;
    if (!src && size)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "upload: src is NULL");
    moevk_status st = check_range(ctx, b, offset, size, "upload");
    if (st || size == 0)
        return st;
    if (b->map) { /* host memory: written in place once the GPU is idle */
        if ((st = mvk_wait_idle(ctx)))
            return st;
        memcpy((uint8_t *)b->map + offset, src, size);
        return MOEVK_SUCCESS;
    }
    if ((st = mvk_wait_idle(ctx)) || (st = staging_ensure(ctx)))
        return st; /* (a timed-out copy may still read the staging memory) */
    const uint8_t *p = src;
    while (size) {
        uint64_t n = MVK_MIN(size, ctx->staging_size);
        memcpy(ctx->staging_map, p, n);
        if ((st = staged_copy(ctx, b->buffer, offset, ctx->staging, 0, n)))
            return st;
        p += n;
        offset += n;
        size -= n;
    }
    return MOEVK_SUCCESS;
}

static moevk_status buffer_download(const moevk_buffer *b, uint64_t offset, void *dst,
                                    uint64_t size)
{
    moevk_context *ctx = b->ctx;
    if (!dst && size)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "download: dst is NULL");
    moevk_status st = check_range(ctx, b, offset, size, "download");
    if (st || size == 0)
        return st;
    if ((st = staging_ensure(ctx)))
        return st;
    uint8_t *p = dst;
    while (size) {
        uint64_t n = MVK_MIN(size, ctx->staging_size);
        if ((st = staged_copy(ctx, ctx->staging, 0, b->buffer, offset, n)))
            return st;
        memcpy(p, ctx->staging_map, n);
        p += n;
        offset += n;
        size -= n;
    }
    return MOEVK_SUCCESS;
}

static moevk_status buffer_fill(moevk_buffer *b, uint64_t offset, uint64_t size, uint32_t value)
{
    moevk_context *ctx = b->ctx;
    moevk_status st = check_range(ctx, b, offset, size, "fill");
    if (st)
        return st;
    if ((offset | size) & 3)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "fill: offset %llu and size %llu must be multiples of 4",
                        (unsigned long long)offset, (unsigned long long)size);
    if (size == 0)
        return MOEVK_SUCCESS;
    mvk_cmd c;
    if ((st = mvk_cmd_begin(ctx, &c)))
        return st;
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_MEMORY_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    ctx->vk.vkCmdPipelineBarrier(c.cb, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
                                 VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    ctx->vk.vkCmdFillBuffer(c.cb, b->buffer, offset, size, value);
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT;
    ctx->vk.vkCmdPipelineBarrier(c.cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                                 VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    return mvk_cmd_submit_wait(&c);
}

/* ---- tensors --------------------------------------------------------------- */

static uint64_t shape_elements(uint32_t ndim, const uint64_t *shape, bool *overflow)
{
    uint64_t n = 1;
    *overflow = false;
    for (uint32_t i = 0; i < ndim; i++) {
        if (shape[i] && n > UINT64_MAX / shape[i])
            *overflow = true;
        n *= shape[i];
    }
    return n;
}

uint64_t moevk_tensor_bytes(const moevk_tensor *t)
{
    if (!t || t->ndim == 0 || t->ndim > MOEVK_MAX_DIMS || !moevk_dtype_size(t->dtype))
        return 0;
    bool ovf;
    uint64_t n = shape_elements(t->ndim, t->shape, &ovf);
    if (ovf || n > UINT64_MAX / moevk_dtype_size(t->dtype))
        return 0;
    return n * moevk_dtype_size(t->dtype);
}

static moevk_status tensor_create(moevk_context *ctx, moevk_dtype dtype, uint32_t ndim,
                                  const uint64_t *shape, moevk_tensor *out)
{
    if (!out || !shape)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "tensor_create: %s is NULL",
                        !ctx ? "ctx" : !out ? "out" : "shape");
    memset(out, 0, sizeof(*out));
    if (!moevk_dtype_size(dtype))
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "tensor_create: dtype %d is unknown",
                        (int)dtype);
    if (ndim == 0 || ndim > MOEVK_MAX_DIMS)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "tensor_create: ndim %u is not in 1..%d", ndim, MOEVK_MAX_DIMS);
    moevk_tensor t = {.dtype = dtype, .ndim = ndim};
    for (uint32_t i = 0; i < ndim; i++) {
        if (shape[i] == 0)
            return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "tensor_create: shape[%u] is 0", i);
        t.shape[i] = shape[i];
    }
    uint64_t bytes = moevk_tensor_bytes(&t);
    if (bytes == 0)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED, "tensor_create: the byte size overflows");
    moevk_status st = moevk_buffer_create(ctx, bytes, &t.buffer);
    if (st)
        return st;
    *out = t;
    return MOEVK_SUCCESS;
}

void moevk_tensor_destroy(moevk_tensor *t)
{
    if (!t)
        return;
    moevk_buffer_destroy(t->buffer);
    memset(t, 0, sizeof(*t));
}

moevk_status moevk_tensor_upload(moevk_tensor *t, const void *src)
{
    if (!t || !t->buffer)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_status st = mvk_check_tensor(t->buffer->ctx, t, "tensor", 0xf, t->ndim);
    if (st)
        return st;
    return moevk_buffer_upload(t->buffer, t->offset, src, moevk_tensor_bytes(t));
}

moevk_status moevk_tensor_download(const moevk_tensor *t, void *dst)
{
    if (!t || !t->buffer)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_status st = mvk_check_tensor(t->buffer->ctx, t, "tensor", 0xf, t->ndim);
    if (st)
        return st;
    return moevk_buffer_download(t->buffer, t->offset, dst, moevk_tensor_bytes(t));
}

moevk_status mvk_check_tensor(moevk_context *ctx, const moevk_tensor *t, const char *name,
                              uint32_t dtype_mask, uint32_t ndim)
{
    if (!t)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "%s is NULL", name);
    if (!t->buffer)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "%s.buffer is NULL", name);
    if (t->buffer->ctx != ctx)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "%s.buffer belongs to another context", name);
    if (!moevk_dtype_size(t->dtype) || !(dtype_mask & (1u << t->dtype)))
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "%s.dtype %s (%d) is not accepted here",
                        name, moevk_dtype_name(t->dtype), (int)t->dtype);
    if (t->ndim != ndim || ndim == 0 || ndim > MOEVK_MAX_DIMS)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "%s.ndim is %u, expected %u", name,
                        t->ndim, ndim);
    for (uint32_t i = 0; i < t->ndim; i++)
        if (t->shape[i] == 0)
            return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "%s.shape[%u] is 0", name, i);
    if (t->offset & 3)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "%s.offset %llu is not a multiple of 4", name,
                        (unsigned long long)t->offset);
    uint64_t bytes = moevk_tensor_bytes(t);
    if (bytes == 0)
        return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED, "%s: the byte size overflows", name);
    if (t->offset > t->buffer->size || bytes > t->buffer->size - t->offset)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "%s: %llu bytes at offset %llu do not fit its buffer of %llu bytes", name,
                        (unsigned long long)bytes, (unsigned long long)t->offset,
                        (unsigned long long)t->buffer->size);
    return MOEVK_SUCCESS;
}

mvk_binding mvk_tensor_binding(const moevk_tensor *t)
{
    /* Bind whole words: a 16-bit tensor of odd element count still binds the
     * word holding its last element (buffers are rounded up to 4 bytes). */
    uint64_t bytes = (moevk_tensor_bytes(t) + 3) & ~3ull;
    return (mvk_binding){t->buffer->buffer, t->offset, bytes};
}

MVK_GUARDED(moevk_buffer_create, (moevk_context *ctx, uint64_t size, moevk_buffer **out), ctx,
            buffer_create(ctx, size, out))

MVK_GUARDED(moevk_buffer_import,
            (moevk_context *ctx, void *vk_buffer, uint64_t size, moevk_buffer **out), ctx,
            buffer_import(ctx, vk_buffer, size, out))

MVK_GUARDED(moevk_buffer_upload, (moevk_buffer *b, uint64_t offset, const void *src, uint64_t size),
            b ? b->ctx : NULL, buffer_upload(b, offset, src, size))

MVK_GUARDED(moevk_buffer_download,
            (const moevk_buffer *b, uint64_t offset, void *dst, uint64_t size),
            b ? b->ctx : NULL, buffer_download(b, offset, dst, size))

MVK_GUARDED(moevk_buffer_fill, (moevk_buffer *b, uint64_t offset, uint64_t size, uint32_t value),
            b ? b->ctx : NULL, buffer_fill(b, offset, size, value))

MVK_GUARDED(moevk_tensor_create,
            (moevk_context *ctx, moevk_dtype dtype, uint32_t ndim, const uint64_t *shape,
             moevk_tensor *out),
            ctx, tensor_create(ctx, dtype, ndim, shape, out))

moevk_status mvk_heap_usage(moevk_context *ctx, uint32_t heap, uint64_t *usage)
{
    if (!ctx->info.memory_budget)
        return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED, "the device lacks VK_EXT_memory_budget");
    VkPhysicalDeviceMemoryBudgetPropertiesEXT mb = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
    VkPhysicalDeviceMemoryProperties2 mp = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2, .pNext = &mb};
    ctx->vki.vkGetPhysicalDeviceMemoryProperties2(ctx->phys, &mp);
    if (heap >= mp.memoryProperties.memoryHeapCount)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "heap %u: the device has %u", heap,
                        mp.memoryProperties.memoryHeapCount);
    *usage = mb.heapUsage[heap];
    return MOEVK_SUCCESS;
}

moevk_status mvk_host_buffer_import(moevk_context *ctx, const void *ptr, uint64_t size,
                                    moevk_buffer **out, uint64_t *offset)
{
    *out = NULL;
    *offset = 0;
    const uint64_t a = ctx->info.host_pointer_alignment;
    if (!ctx->info.external_memory_host || !ptr || !size || !a)
        return MOEVK_ERROR_UNSUPPORTED;
    if (ctx->memprops.memoryTypeCount == 0)
        ctx->vki.vkGetPhysicalDeviceMemoryProperties(ctx->phys, &ctx->memprops);
    const uintptr_t p = (uintptr_t)ptr, base = p & ~(uintptr_t)(a - 1);
    const uint64_t off = p - base, len = (off + size + a - 1) & ~(a - 1);
    const uint64_t salign = ctx->min_storage_offset ? ctx->min_storage_offset : 1;
    if (off % salign || len > ctx->info.max_storage_buffer_range ||
        (ctx->info.max_allocation_size && len > ctx->info.max_allocation_size))
        return MOEVK_ERROR_UNSUPPORTED;
    const VkExternalMemoryHandleTypeFlagBits ht =
        VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
    VkMemoryHostPointerPropertiesEXT hp = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT};
    if (ctx->vk.vkGetMemoryHostPointerPropertiesEXT(ctx->device, ht, (void *)base, &hp) !=
            VK_SUCCESS ||
        !hp.memoryTypeBits)
        return MOEVK_ERROR_UNSUPPORTED;
    moevk_buffer *b = mvk_alloc(ctx, sizeof(*b));
    if (!b)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "buffer handle allocation");
    b->ctx = ctx;
    VkExternalMemoryBufferCreateInfo ext = {
        .sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO, .handleTypes = ht};
    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .pNext = &ext,
        .size = len,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkResult r = MVK_VK(ctx, ctx->vk.vkCreateBuffer(ctx->device, &bci, NULL, &b->buffer));
    if (r != VK_SUCCESS) {
        mvk_free(ctx, b);
        return r == VK_ERROR_OUT_OF_HOST_MEMORY ? mvk_vk_fail(ctx, r, "vkCreateBuffer")
                                                : MOEVK_ERROR_UNSUPPORTED;
    }
    VkMemoryRequirements req;
    ctx->vk.vkGetBufferMemoryRequirements(ctx->device, b->buffer, &req);
    int type = -1;
    for (uint32_t i = 0; i < ctx->memprops.memoryTypeCount && type < 0; i++)
        if ((req.memoryTypeBits & hp.memoryTypeBits & (1u << i)) && req.size <= len)
            type = (int)i;
    VkImportMemoryHostPointerInfoEXT imp = {
        .sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT,
        .handleType = ht,
        .pHostPointer = (void *)base,
    };
    VkMemoryAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .pNext = &imp,
        .allocationSize = len,
        .memoryTypeIndex = type < 0 ? 0 : (uint32_t)type,
    };
    r = type < 0 ? VK_ERROR_INVALID_EXTERNAL_HANDLE
                 : MVK_VK(ctx, ctx->vk.vkAllocateMemory(ctx->device, &ai, NULL, &b->memory));
    if (r == VK_SUCCESS) {
        r = MVK_VK(ctx, ctx->vk.vkBindBufferMemory(ctx->device, b->buffer, b->memory, 0));
        if (r != VK_SUCCESS)
            ctx->vk.vkFreeMemory(ctx->device, b->memory, NULL);
    }
    if (r != VK_SUCCESS) {
        ctx->vk.vkDestroyBuffer(ctx->device, b->buffer, NULL);
        mvk_free(ctx, b);
        mvk_log(ctx, MOEVK_LOG_DEBUG, "importing %llu bytes of host memory: %s; copying instead",
                (unsigned long long)len, mvk_vk_result_string(r));
        return MOEVK_ERROR_UNSUPPORTED;
    }
    ctx->live_objects++;
    b->size = len;
    b->host = true;
    b->host_import = len;
    b->heap = ctx->memprops.memoryTypes[type].heapIndex;
    *out = b;
    *offset = off;
    return MOEVK_SUCCESS;
}
