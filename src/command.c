/*
 * Pipelines (cached per context by kernel and specialization constants),
 * descriptor-set arenas, and command recording/submission.
 */
#include <string.h>

#include "internal.h"
#include "kernels.h"

#define MVK_MAX_SPEC 12
#define MVK_ARENA_SETS 128

struct mvk_pipeline {
    uint32_t kernel;
    uint32_t nspec;
    uint32_t spec[MVK_MAX_SPEC];
    VkPipeline pipeline;
    VkPipelineLayout layout;
    VkDescriptorSetLayout set_layout;
};

static void pipeline_destroy(moevk_context *ctx, mvk_pipeline *p)
{
    if (!p)
        return;
    if (p->pipeline)
        ctx->vk.vkDestroyPipeline(ctx->device, p->pipeline, NULL);
    if (p->layout)
        ctx->vk.vkDestroyPipelineLayout(ctx->device, p->layout, NULL);
    if (p->set_layout)
        ctx->vk.vkDestroyDescriptorSetLayout(ctx->device, p->set_layout, NULL);
    mvk_free(ctx, p);
}

void mvk_pipelines_destroy(moevk_context *ctx)
{
    for (uint32_t i = 0; i < ctx->pipeline_count; i++)
        pipeline_destroy(ctx, ctx->pipelines[i]);
    mvk_free(ctx, ctx->pipelines);
    ctx->pipelines = NULL;
    ctx->pipeline_count = ctx->pipeline_cap = 0;
}

static moevk_status pipeline_build(moevk_context *ctx, const mvk_kernel_info *k, mvk_pipeline *p)
{
    VkDescriptorSetLayoutBinding b[MVK_MAX_BINDINGS];
    for (uint32_t i = 0; i < k->bindings; i++)
        b[i] = (VkDescriptorSetLayoutBinding){
            .binding = i,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    VkDescriptorSetLayoutCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .flags = ctx->push_descriptors ? VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR : 0,
        .bindingCount = k->bindings,
        .pBindings = b,
    };
    VkResult r = MVK_VK(ctx, ctx->vk.vkCreateDescriptorSetLayout(ctx->device, &dci, NULL,
                                                                 &p->set_layout));
    if (r != VK_SUCCESS) {
        p->set_layout = VK_NULL_HANDLE;
        return mvk_vk_fail(ctx, r, "vkCreateDescriptorSetLayout");
    }
    VkPushConstantRange pcr = {VK_SHADER_STAGE_COMPUTE_BIT, 0, k->push_size};
    VkPipelineLayoutCreateInfo lci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &p->set_layout,
        .pushConstantRangeCount = k->push_size ? 1 : 0,
        .pPushConstantRanges = &pcr,
    };
    r = MVK_VK(ctx, ctx->vk.vkCreatePipelineLayout(ctx->device, &lci, NULL, &p->layout));
    if (r != VK_SUCCESS) {
        p->layout = VK_NULL_HANDLE;
        return mvk_vk_fail(ctx, r, "vkCreatePipelineLayout");
    }
    VkShaderModuleCreateInfo sci = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = k->code_size,
        .pCode = k->code,
    };
    VkShaderModule module;
    r = MVK_VK(ctx, ctx->vk.vkCreateShaderModule(ctx->device, &sci, NULL, &module));
    if (r != VK_SUCCESS)
        return mvk_vk_fail(ctx, r, "vkCreateShaderModule");
    VkSpecializationMapEntry entries[MVK_MAX_SPEC];
    for (uint32_t i = 0; i < p->nspec; i++)
        entries[i] = (VkSpecializationMapEntry){i, i * 4u, 4};
    VkSpecializationInfo spec = {
        .mapEntryCount = p->nspec,
        .pMapEntries = entries,
        .dataSize = p->nspec * 4u,
        .pData = p->spec,
    };
    VkComputePipelineCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {
            .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
            .stage = VK_SHADER_STAGE_COMPUTE_BIT,
            .module = module,
            .pName = "main",
            .pSpecializationInfo = p->nspec ? &spec : NULL,
        },
        .layout = p->layout,
    };
    r = MVK_VK(ctx, ctx->vk.vkCreateComputePipelines(ctx->device, ctx->pipeline_cache, 1, &pci,
                                                     NULL, &p->pipeline));
    ctx->vk.vkDestroyShaderModule(ctx->device, module, NULL);
    if (r != VK_SUCCESS) {
        p->pipeline = VK_NULL_HANDLE;
        return mvk_vk_fail(ctx, r, "vkCreateComputePipelines");
    }
    return MOEVK_SUCCESS;
}

moevk_status mvk_pipeline_get(moevk_context *ctx, uint32_t kernel, const uint32_t *spec,
                              uint32_t nspec, mvk_pipeline **out)
{
    mvk_kernel_info ki;
    const mvk_kernel_info *k = mvk_kernel_get(kernel, &ki) ? &ki : NULL;
    if (!k || nspec != k->nspec || nspec > MVK_MAX_SPEC || k->bindings > MVK_MAX_BINDINGS)
        return mvk_fail(ctx, MOEVK_ERROR_INTERNAL, "bad kernel %u or %u spec constants", kernel,
                        nspec);
    for (uint32_t i = 0; i < ctx->pipeline_count; i++) {
        mvk_pipeline *p = ctx->pipelines[i];
        if (p->kernel == kernel && p->nspec == nspec &&
            memcmp(p->spec, spec, nspec * sizeof(*spec)) == 0) {
            *out = p;
            return MOEVK_SUCCESS;
        }
    }
    if (ctx->pipeline_count == ctx->pipeline_cap) {
        uint32_t cap = ctx->pipeline_cap ? ctx->pipeline_cap * 2 : 32;
        mvk_pipeline **arr = mvk_alloc(ctx, sizeof(*arr) * cap);
        if (!arr)
            return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "pipeline table");
        if (ctx->pipelines)
            memcpy(arr, ctx->pipelines, sizeof(*arr) * ctx->pipeline_count);
        mvk_free(ctx, ctx->pipelines);
        ctx->pipelines = arr;
        ctx->pipeline_cap = cap;
    }
    mvk_pipeline *p = mvk_alloc(ctx, sizeof(*p));
    if (!p)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "pipeline");
    p->kernel = kernel;
    p->nspec = nspec;
    if (nspec)
        memcpy(p->spec, spec, nspec * sizeof(*spec));
    moevk_status st = pipeline_build(ctx, k, p);
    if (st) {
        pipeline_destroy(ctx, p);
        return st;
    }
    ctx->pipelines[ctx->pipeline_count++] = p;
    *out = p;
    return MOEVK_SUCCESS;
}

/* ---- descriptor arenas ------------------------------------------------------ */

void mvk_arena_destroy(moevk_context *ctx, mvk_arena *a)
{
    for (uint32_t i = 0; i < a->count; i++)
        ctx->vk.vkDestroyDescriptorPool(ctx->device, a->pools[i], NULL);
    mvk_free(ctx, a->pools);
    memset(a, 0, sizeof(*a));
}

moevk_status mvk_arena_reset(moevk_context *ctx, mvk_arena *a)
{
    for (uint32_t i = 0; i < a->count; i++) {
        VkResult r = ctx->vk.vkResetDescriptorPool(ctx->device, a->pools[i], 0);
        if (r != VK_SUCCESS)
            return mvk_vk_fail(ctx, r, "vkResetDescriptorPool");
    }
    a->current = 0;
    return MOEVK_SUCCESS;
}

static moevk_status arena_add_pool(moevk_context *ctx, mvk_arena *a)
{
    if (a->count == a->cap) {
        uint32_t cap = a->cap ? a->cap * 2 : 4;
        VkDescriptorPool *pools = mvk_alloc(ctx, sizeof(*pools) * cap);
        if (!pools)
            return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "descriptor pool list");
        if (a->pools)
            memcpy(pools, a->pools, sizeof(*pools) * a->count);
        mvk_free(ctx, a->pools);
        a->pools = pools;
        a->cap = cap;
    }
    VkDescriptorPoolSize size = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                 MVK_ARENA_SETS * MVK_MAX_BINDINGS};
    VkDescriptorPoolCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .maxSets = MVK_ARENA_SETS,
        .poolSizeCount = 1,
        .pPoolSizes = &size,
    };
    VkDescriptorPool pool;
    VkResult r = MVK_VK(ctx, ctx->vk.vkCreateDescriptorPool(ctx->device, &ci, NULL, &pool));
    if (r != VK_SUCCESS)
        return mvk_vk_fail(ctx, r, "vkCreateDescriptorPool");
    a->pools[a->count++] = pool;
    return MOEVK_SUCCESS;
}

static moevk_status arena_alloc(moevk_context *ctx, mvk_arena *a, VkDescriptorSetLayout layout,
                                VkDescriptorSet *set)
{
    for (;;) {
        if (a->current == a->count) {
            moevk_status st = arena_add_pool(ctx, a);
            if (st)
                return st;
        }
        VkDescriptorSetAllocateInfo ai = {
            .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
            .descriptorPool = a->pools[a->current],
            .descriptorSetCount = 1,
            .pSetLayouts = &layout,
        };
        VkResult r = MVK_VK(ctx, ctx->vk.vkAllocateDescriptorSets(ctx->device, &ai, set));
        if (r == VK_SUCCESS)
            return MOEVK_SUCCESS;
        if (r != VK_ERROR_OUT_OF_POOL_MEMORY && r != VK_ERROR_FRAGMENTED_POOL)
            return mvk_vk_fail(ctx, r, "vkAllocateDescriptorSets");
        a->current++; /* this pool is full: move on to the next */
    }
}

/* ---- the descriptor cache of recorded passes ----------------------------------- */

void mvk_desc_cache_clear(moevk_context *ctx, mvk_desc_cache *cache)
{
    mvk_arena_destroy(ctx, &cache->arena);
    mvk_free(ctx, cache->entries);
    memset(cache, 0, sizeof(*cache));
}

static bool same_bindings(const mvk_desc_entry *e, VkDescriptorSetLayout layout,
                          const mvk_binding *b, uint32_t n)
{
    if (e->layout != layout || e->nbind != n)
        return false;
    for (uint32_t i = 0; i < n; i++)
        if (e->b[i].buffer != b[i].buffer || e->b[i].offset != b[i].offset ||
            e->b[i].range != b[i].range)
            return false;
    return true;
}

/* A set holding these bindings: found, or allocated and written once. */
static moevk_status cache_get(moevk_context *ctx, mvk_desc_cache *cache,
                              VkDescriptorSetLayout layout, const mvk_binding *b, uint32_t n,
                              VkDescriptorSet *set, bool *fresh)
{
    for (uint32_t i = 0; i < cache->count; i++)
        if (same_bindings(&cache->entries[i], layout, b, n)) {
            *set = cache->entries[i].set;
            *fresh = false;
            return MOEVK_SUCCESS;
        }
    if (cache->count == cache->cap) {
        uint32_t cap = cache->cap ? cache->cap * 2 : 64;
        mvk_desc_entry *e = mvk_alloc(ctx, sizeof(*e) * cap);
        if (!e)
            return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "descriptor cache");
        if (cache->entries)
            memcpy(e, cache->entries, sizeof(*e) * cache->count);
        mvk_free(ctx, cache->entries);
        cache->entries = e;
        cache->cap = cap;
    }
    moevk_status st = arena_alloc(ctx, &cache->arena, layout, set);
    if (st)
        return st;
    mvk_desc_entry *e = &cache->entries[cache->count++];
    e->layout = layout;
    e->nbind = n;
    memcpy(e->b, b, sizeof(*b) * n);
    e->set = *set;
    *fresh = true;
    return MOEVK_SUCCESS;
}

/* ---- recording ---------------------------------------------------------------- */

void mvk_queue_lock(moevk_context *ctx)
{
    if (ctx->lock_queue)
        ctx->lock_queue(ctx->queue_lock_user, ctx->queue_family, ctx->queue_index);
}

void mvk_queue_unlock(moevk_context *ctx)
{
    if (ctx->unlock_queue)
        ctx->unlock_queue(ctx->queue_lock_user, ctx->queue_family, ctx->queue_index);
}

moevk_status mvk_wait_idle(moevk_context *ctx)
{
    if (!ctx->in_flight)
        return MOEVK_SUCCESS;
    VkResult r = ctx->vk.vkWaitForFences(ctx->device, 1, &ctx->fence, VK_TRUE, ctx->timeout_ns);
    if (r == VK_TIMEOUT)
        return mvk_fail(ctx, MOEVK_ERROR_TIMEOUT,
                        "earlier GPU work is still running after another %llu ms",
                        (unsigned long long)(ctx->timeout_ns / 1000000ull));
    if (r != VK_SUCCESS)
        return mvk_vk_fail(ctx, r, "vkWaitForFences");
    ctx->in_flight = false;
    ctx->vk.vkResetFences(ctx->device, 1, &ctx->fence);
    return MOEVK_SUCCESS;
}

void mvk_wait_before_free(moevk_context *ctx)
{
    if (!ctx->in_flight || mvk_wait_idle(ctx) == MOEVK_SUCCESS)
        return;
    /* Freeing cannot fail and must not free what the GPU still uses: after
     * a second timeout, wait for the queue without a bound (device loss
     * ends this wait too). */
    mvk_queue_lock(ctx);
    ctx->vk.vkQueueWaitIdle(ctx->queue);
    mvk_queue_unlock(ctx);
    ctx->vk.vkResetFences(ctx->device, 1, &ctx->fence);
    ctx->in_flight = false;
}

void mvk_cmd_external(moevk_context *ctx, VkCommandBuffer cb, mvk_desc_cache *cache, mvk_cmd *c)
{
    memset(c, 0, sizeof(*c));
    c->ctx = ctx;
    c->cb = cb;
    c->cache = cache;
}

moevk_status mvk_cmd_begin(moevk_context *ctx, mvk_cmd *c)
{
    memset(c, 0, sizeof(*c));
    c->ctx = ctx;
    c->cb = ctx->cmd;
    c->arena = &ctx->arena;
    moevk_status st = mvk_wait_idle(ctx);
    if (st)
        return st;
    st = mvk_arena_reset(ctx, &ctx->arena);
    if (st)
        return st;
    VkResult r = MVK_VK(ctx, ctx->vk.vkResetCommandPool(ctx->device, ctx->cmd_pool, 0));
    if (r != VK_SUCCESS)
        return mvk_vk_fail(ctx, r, "vkResetCommandPool");
    VkCommandBufferBeginInfo bi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    r = MVK_VK(ctx, ctx->vk.vkBeginCommandBuffer(c->cb, &bi));
    if (r != VK_SUCCESS)
        return mvk_vk_fail(ctx, r, "vkBeginCommandBuffer");
    return MOEVK_SUCCESS;
}

/* Bind kernel, descriptor set and push constants; false on error. */
static bool cmd_bind(mvk_cmd *c, uint32_t kernel, const uint32_t *spec, uint32_t nspec,
                     const mvk_binding *bindings, uint32_t nbind, const void *push,
                     uint32_t push_size)
{
    moevk_context *ctx = c->ctx;
    mvk_kernel_info ki;
    const mvk_kernel_info *k = mvk_kernel_get(kernel, &ki) ? &ki : NULL;
    if (!k || nbind != k->bindings || push_size != k->push_size || nbind > MVK_MAX_BINDINGS) {
        c->status = mvk_fail(ctx, MOEVK_ERROR_INTERNAL,
                             "kernel %u used with %u bindings / %u push bytes", kernel, nbind,
                             push_size);
        return false;
    }
    mvk_pipeline *p;
    moevk_status st = mvk_pipeline_get(ctx, kernel, spec, nspec, &p);
    if (st) {
        c->status = st;
        return false;
    }
    /* unused inputs read the dummy buffer */
    mvk_binding b[MVK_MAX_BINDINGS];
    for (uint32_t i = 0; i < nbind; i++)
        b[i] = bindings[i].buffer ? bindings[i] : (mvk_binding){ctx->dummy, 0, VK_WHOLE_SIZE};
    VkDescriptorSet set = VK_NULL_HANDLE;
    bool write = true;
    if (!ctx->push_descriptors) {
        st = c->cache ? cache_get(ctx, c->cache, p->set_layout, b, nbind, &set, &write)
                      : arena_alloc(ctx, c->arena, p->set_layout, &set);
        if (st) {
            c->status = st;
            return false;
        }
    }
    VkDescriptorBufferInfo info[MVK_MAX_BINDINGS];
    VkWriteDescriptorSet w[MVK_MAX_BINDINGS];
    for (uint32_t i = 0; i < nbind; i++) {
        info[i] = (VkDescriptorBufferInfo){b[i].buffer, b[i].offset, b[i].range};
        w[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = set,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = &info[i],
        };
    }
    ctx->vk.vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipeline);
    if (ctx->push_descriptors) {
        ctx->vk.vkCmdPushDescriptorSetKHR(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0,
                                          nbind, w);
    } else {
        if (write)
            ctx->vk.vkUpdateDescriptorSets(ctx->device, nbind, w, 0, NULL);
        ctx->vk.vkCmdBindDescriptorSets(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, 1,
                                        &set, 0, NULL);
    }
    if (push_size)
        ctx->vk.vkCmdPushConstants(c->cb, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size,
                                   push);
    return true;
}

void mvk_cmd_dispatch(mvk_cmd *c, uint32_t kernel, const uint32_t *spec, uint32_t nspec,
                      const mvk_binding *bindings, uint32_t nbind, const void *push,
                      uint32_t push_size, uint32_t gx, uint32_t gy, uint32_t gz)
{
    if (c->status || gx == 0 || gy == 0 || gz == 0)
        return;
    const uint32_t *lim = c->ctx->info.max_workgroup_count;
    if (gx > lim[0] || gy > lim[1] || gz > lim[2]) {
        c->status = mvk_fail(c->ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                             "kernel %u: grid %ux%ux%u exceeds the device's workgroup count "
                             "limits", kernel, gx, gy, gz);
        return;
    }
    if (cmd_bind(c, kernel, spec, nspec, bindings, nbind, push, push_size)) {
        c->ctx->vk.vkCmdDispatch(c->cb, gx, gy, gz);
        c->dispatches++;
    }
}

void mvk_cmd_dispatch_indirect(mvk_cmd *c, uint32_t kernel, const uint32_t *spec, uint32_t nspec,
                               const mvk_binding *bindings, uint32_t nbind, const void *push,
                               uint32_t push_size, VkBuffer args, VkDeviceSize offset)
{
    if (c->status)
        return;
    if (cmd_bind(c, kernel, spec, nspec, bindings, nbind, push, push_size)) {
        c->ctx->vk.vkCmdDispatchIndirect(c->cb, args, offset);
        c->dispatches++;
    }
}

void mvk_cmd_copy(mvk_cmd *c, VkBuffer src, VkDeviceSize src_off, VkBuffer dst,
                  VkDeviceSize dst_off, VkDeviceSize size)
{
    if (c->status)
        return;
    VkBufferCopy region = {src_off, dst_off, size};
    c->ctx->vk.vkCmdCopyBuffer(c->cb, src, dst, 1, &region);
}

void mvk_cmd_timestamp(mvk_cmd *c, VkQueryPool pool, uint32_t query)
{
    if (!c->status && pool)
        c->ctx->vk.vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool, query);
}

void mvk_cmd_reset_queries(mvk_cmd *c, VkQueryPool pool, uint32_t count)
{
    if (!c->status && pool)
        c->ctx->vk.vkCmdResetQueryPool(c->cb, pool, 0, count);
}

void mvk_cmd_barrier(mvk_cmd *c)
{
    if (c->status)
        return;
    c->barriers++;
    /* pending transfers stay out of the source scope: work after this
     * barrier does not wait for them */
    const bool all = !c->transfers_pending;
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | (all ? VK_ACCESS_TRANSFER_WRITE_BIT : 0),
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                         VK_ACCESS_INDIRECT_COMMAND_READ_BIT |
                         (all ? VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT : 0),
    };
    c->ctx->vk.vkCmdPipelineBarrier(
        c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | (all ? VK_PIPELINE_STAGE_TRANSFER_BIT : 0),
        VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT |
            (all ? VK_PIPELINE_STAGE_TRANSFER_BIT : 0),
        0, 1, &mb, 0, NULL, 0, NULL);
}

void mvk_cmd_barrier_transfers(mvk_cmd *c)
{
    if (!c->transfers_pending)
        return;
    c->transfers_pending = false;
    mvk_cmd_barrier(c);
}

void mvk_cmd_update(mvk_cmd *c, VkBuffer dst, VkDeviceSize offset, const void *data,
                    VkDeviceSize size)
{
    for (VkDeviceSize done = 0; !c->status && done < size;) {
        const VkDeviceSize n = MVK_MIN(size - done, (VkDeviceSize)65536);
        c->ctx->vk.vkCmdUpdateBuffer(c->cb, dst, offset + done, n, (const uint8_t *)data + done);
        done += n;
    }
}

moevk_status mvk_cmd_submit_wait(mvk_cmd *c)
{
    moevk_context *ctx = c->ctx;
    VkResult r = ctx->vk.vkEndCommandBuffer(c->cb);
    if (c->status)
        return c->status;
    if (r != VK_SUCCESS)
        return mvk_vk_fail(ctx, r, "vkEndCommandBuffer");
    VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &c->cb,
    };
    mvk_queue_lock(ctx);
    r = MVK_VK(ctx, ctx->vk.vkQueueSubmit(ctx->queue, 1, &si, ctx->fence));
    mvk_queue_unlock(ctx);
    if (r != VK_SUCCESS)
        return mvk_vk_fail(ctx, r, "vkQueueSubmit");
    r = ctx->vk.vkWaitForFences(ctx->device, 1, &ctx->fence, VK_TRUE, ctx->timeout_ns);
    if (r == VK_TIMEOUT) {
        /* The work is still in flight and its resources in use. Nothing is
         * reset now; the next submission (or destroy) waits for it first. */
        ctx->in_flight = true;
        return mvk_fail(ctx, MOEVK_ERROR_TIMEOUT, "GPU work did not finish within %llu ms",
                        (unsigned long long)(ctx->timeout_ns / 1000000ull));
    }
    ctx->vk.vkResetFences(ctx->device, 1, &ctx->fence);
    if (r != VK_SUCCESS)
        return mvk_vk_fail(ctx, r, "vkWaitForFences");
    return MOEVK_SUCCESS;
}

static uint64_t device_range(const moevk_context *ctx)
{
    uint64_t r = ctx->info.max_storage_buffer_range;
    if (ctx->info.max_allocation_size)
        r = MVK_MIN(r, ctx->info.max_allocation_size);
    return r;
}

uint64_t mvk_max_range(const moevk_context *ctx)
{
    uint64_t r = device_range(ctx);
    if (ctx->testing_scratch_range)
        r = MVK_MIN(r, ctx->testing_scratch_range);
    return r & ~3ull;
}

uint64_t mvk_weight_range(const moevk_context *ctx)
{
    uint64_t r = device_range(ctx);
    if (ctx->testing_max_range)
        r = MVK_MIN(r, ctx->testing_max_range);
    return r & ~3ull;
}

void mvk_grid_1d(const moevk_context *ctx, uint64_t groups, uint32_t *gx, uint32_t *gy)
{
    uint32_t maxx = ctx->info.max_workgroup_count[0];
    if (groups <= maxx) {
        *gx = (uint32_t)groups;
        *gy = 1;
    } else {
        *gx = maxx;
        *gy = (uint32_t)((groups + maxx - 1) / maxx);
    }
}
