/*
 * Internal declarations shared by the library's translation units.
 */
#ifndef MOEVK_INTERNAL_H
#define MOEVK_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include <volk.h>

#include "moevk/moevk.h"
#include "vk/vk_functions.h"

#if defined(__GNUC__)
#define MVK_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MVK_PRINTF(a, b)
#endif

#define MVK_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MVK_MAX(a, b) ((a) > (b) ? (a) : (b))
#define MVK_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Per-context instance-level entry points (loader and instance). */
typedef struct mvk_instance_table {
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
#define MVK_X(name) PFN_##name name;
    MOEVK_VK_GLOBAL_FUNCTIONS(MVK_X)
    MOEVK_VK_INSTANCE_FUNCTIONS(MVK_X)
    MOEVK_VK_DEBUG_FUNCTIONS(MVK_X)
#undef MVK_X
} mvk_instance_table;

/* A pool chain of descriptor sets, reset as a whole. */
typedef struct mvk_arena {
    VkDescriptorPool *pools;
    uint32_t count, cap, current;
} mvk_arena;

#define MVK_MAX_BINDINGS 16

typedef struct mvk_binding {
    VkBuffer buffer;
    VkDeviceSize offset, range;
} mvk_binding;

/* Descriptor sets that are written once and never updated or freed until
 * the cache is cleared, so they may be bound in any number of pending
 * command buffers: what a recorded pass uses on a device without push
 * descriptors. Keyed by set layout and bindings. */
typedef struct mvk_desc_entry {
    VkDescriptorSetLayout layout;
    uint32_t nbind;
    mvk_binding b[MVK_MAX_BINDINGS];
    VkDescriptorSet set;
} mvk_desc_entry;

typedef struct mvk_desc_cache {
    mvk_arena arena; /* never reset while entries live */
    mvk_desc_entry *entries;
    uint32_t count, cap;
} mvk_desc_cache;

typedef struct mvk_pipeline mvk_pipeline;

struct moevk_context {
    moevk_allocator alloc;
    moevk_log_fn log;
    void *log_user;
    moevk_log_level log_level;
    char last_error[512];
    VkResult last_vk;
    uint32_t validation_messages;
    uint64_t timeout_ns;

    /* Test knobs (src/testing.h): fail the N-th fallible operation. */
    int64_t fault_countdown; /* 0 = off */
    int64_t live_objects;    /* host allocations and Vulkan objects alive */
    uint64_t testing_max_range; /* 0, or a lower storage-buffer range for weights */
    uint64_t testing_scratch_range; /* 0, or a lower range for per-pass buffers */
    uint32_t testing_force_path;    /* 0, or 1 + the MVK_PATH_* of every expert */

    /* One thread at a time: the thread inside a public call (its token,
     * mvk_thread_token) and the nesting depth of public calls on it. */
    atomic_uintptr_t owner;
    uint32_t depth;

    void *loader_lib;
    mvk_instance_table vki;
    struct VolkDeviceTable vk;
    VkInstance instance;
    VkPhysicalDevice phys;
    VkDevice device;
    VkQueue queue;
    uint32_t queue_family, queue_index;
    /* The host's queue lock (imported devices; NULL otherwise). */
    void (*lock_queue)(void *user, uint32_t family, uint32_t index);
    void (*unlock_queue)(void *user, uint32_t family, uint32_t index);
    void *queue_lock_user;
    bool owns_instance, owns_device;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDeviceMemoryProperties memprops;
    moevk_device_info info;

    /* Synchronous submission. */
    VkCommandPool cmd_pool;
    VkCommandBuffer cmd;
    VkFence fence;
    bool in_flight; /* a submission timed out and may still be running */
    mvk_arena arena;

    /* Staging memory for uploads and downloads. */
    VkBuffer staging;
    VkDeviceMemory staging_mem;
    void *staging_map;
    uint64_t staging_size;
    bool staging_coherent;

    VkPipelineCache pipeline_cache;
    mvk_pipeline **pipelines;
    uint32_t pipeline_count, pipeline_cap;
    /* Descriptors pushed into the command buffer (VK_KHR_push_descriptor):
     * pipelines are built for it and no descriptor set is allocated. */
    bool push_descriptors;

    /* Matrix units (src/matrix.c): the MVK_K_* of the matrix-unit expert
     * GEMM (0 = none), and its self-check: 0 not run, 1 passed, -1 failed. */
    uint32_t mu_kernel;
    int mu_state;
    bool testing_mu_fail; /* test knob: the self-check reports a mismatch */

    uint64_t min_storage_offset; /* minStorageBufferOffsetAlignment */
    VkBuffer dummy; /* bound for unused kernel inputs */
    VkDeviceMemory dummy_mem;
    moevk_workspace *workspace; /* the layers' default workspace (lazy) */
};

struct moevk_buffer {
    moevk_context *ctx;
    VkBuffer buffer;
    VkDeviceMemory memory;
    uint64_t size;
    uint64_t alloc_bytes; /* the VkDeviceMemory's size (0 when imported) */
    uint32_t heap;        /* the memory heap it is in */
    void *map;            /* host buffers: their persistent mapping */
    bool imported;
    bool host;            /* in host-visible memory, not device-local if the
                           * device has such a type (mvk_host_buffer_create) */
    uint64_t host_import; /* bytes of the caller's memory imported (0: none) */
};

/* ---- errors and logging (error.c) ---- */
moevk_status mvk_fail(moevk_context *ctx, moevk_status st, const char *fmt, ...) MVK_PRINTF(3, 4);
/* Map a failed VkResult to a status, record it with the name of the call. */
moevk_status mvk_vk_fail(moevk_context *ctx, VkResult r, const char *what);
void mvk_log(moevk_context *ctx, moevk_log_level level, const char *fmt, ...) MVK_PRINTF(3, 4);
const char *mvk_vk_result_string(VkResult r);
void mvk_clear_error(moevk_context *ctx);

/* ---- host memory (error.c) ---- */
void *mvk_alloc(moevk_context *ctx, size_t size);  /* zeroed; counts live objects */
void mvk_free(moevk_context *ctx, void *p);
/* Fault injection: true when the context's countdown reaches this call. */
bool mvk_inject_fault(moevk_context *ctx);
/* Wrap a VkResult-returning call so fault injection can make it fail. */
#define MVK_VK(ctx, call) (mvk_inject_fault(ctx) ? VK_ERROR_OUT_OF_DEVICE_MEMORY : (call))

/* ---- device memory (memory.c) ---- */
moevk_status mvk_buffer_alloc(moevk_context *ctx, uint64_t size, VkBufferUsageFlags usage,
                              VkMemoryPropertyFlags want, VkBuffer *buf, VkDeviceMemory *mem);
void mvk_buffer_free(moevk_context *ctx, VkBuffer buf, VkDeviceMemory mem);
/* A buffer (as moevk_buffer_create's) in host-visible, host-coherent
 * memory that the GPU reads over its bus: a memory type without
 * DEVICE_LOCAL where the device has one (system RAM on a discrete GPU),
 * else any host-visible one (integrated GPUs, CPU devices). Mapped for its
 * lifetime; uploads are memcpy. */
moevk_status mvk_host_buffer_create(moevk_context *ctx, uint64_t size, moevk_buffer **out);
/* A buffer over the caller's memory [ptr, ptr + size), imported with
 * VK_EXT_external_memory_host (no copy): it spans the whole pages around
 * it, and the data starts at *offset bytes into it. MOEVK_ERROR_UNSUPPORTED
 * (nothing recorded as an error) when the device cannot import it: no
 * extension, an offset that is not a multiple of the storage-buffer offset
 * alignment, no memory type, or the driver's refusal. */
moevk_status mvk_host_buffer_import(moevk_context *ctx, const void *ptr, uint64_t size,
                                    moevk_buffer **out, uint64_t *offset);
/* VK_EXT_memory_budget's usage of a memory heap (UNSUPPORTED without). */
moevk_status mvk_heap_usage(moevk_context *ctx, uint32_t heap, uint64_t *usage);
void mvk_staging_release(moevk_context *ctx);

/* ---- pipelines and commands (command.c) ---- */
typedef struct mvk_cmd {
    moevk_context *ctx;
    VkCommandBuffer cb;
    /* Where descriptor sets come from without push descriptors: the
     * context's arena (its own command buffer, reset per submission), or a
     * cache whose sets outlive the recording (a caller's command buffer). */
    mvk_arena *arena;
    mvk_desc_cache *cache;
    moevk_status status; /* first error while recording; later calls no-op */
    uint32_t dispatches, barriers; /* recorded so far */
    /* Transfers recorded that only a later stage needs (the expert cache's
     * copies): barriers leave them out of their source scope until
     * mvk_cmd_barrier_transfers. */
    bool transfers_pending;
} mvk_cmd;

moevk_status mvk_pipeline_get(moevk_context *ctx, uint32_t kernel, const uint32_t *spec,
                              uint32_t nspec, mvk_pipeline **out);
void mvk_pipelines_destroy(moevk_context *ctx);

void mvk_arena_destroy(moevk_context *ctx, mvk_arena *a);
moevk_status mvk_arena_reset(moevk_context *ctx, mvk_arena *a);
void mvk_desc_cache_clear(moevk_context *ctx, mvk_desc_cache *cache);
/* Start recording into a caller's command buffer (already recording). */
void mvk_cmd_external(moevk_context *ctx, VkCommandBuffer cb, mvk_desc_cache *cache, mvk_cmd *c);
/* vkCmdUpdateBuffer in pieces of at most 65536 bytes (sizes and offsets in
 * whole words). */
void mvk_cmd_update(mvk_cmd *c, VkBuffer dst, VkDeviceSize offset, const void *data,
                    VkDeviceSize size);
/* With transfers pending: a barrier making them visible to compute (and
 * transfers), after which barriers cover transfers again. */
void mvk_cmd_barrier_transfers(mvk_cmd *c);

/* Every operation of moevk on the context's queue goes between these two
 * (the host's queue lock of an imported device). */
void mvk_queue_lock(moevk_context *ctx);
void mvk_queue_unlock(moevk_context *ctx);
/* Wait (with the context's timeout) for a submission that timed out. */
moevk_status mvk_wait_idle(moevk_context *ctx);
/* Before freeing resources: make sure no timed-out submission still runs. */
void mvk_wait_before_free(moevk_context *ctx);
/* Start recording into the context's own command buffer. */
moevk_status mvk_cmd_begin(moevk_context *ctx, mvk_cmd *c);
/* Record a dispatch of `kernel` with spec constants, bindings (count as the
 * kernel declares), push constants and a grid. Errors stick in c->status. */
void mvk_cmd_dispatch(mvk_cmd *c, uint32_t kernel, const uint32_t *spec, uint32_t nspec,
                      const mvk_binding *bindings, uint32_t nbind, const void *push,
                      uint32_t push_size, uint32_t gx, uint32_t gy, uint32_t gz);
void mvk_cmd_dispatch_indirect(mvk_cmd *c, uint32_t kernel, const uint32_t *spec, uint32_t nspec,
                               const mvk_binding *bindings, uint32_t nbind, const void *push,
                               uint32_t push_size, VkBuffer args, VkDeviceSize offset);
void mvk_cmd_copy(mvk_cmd *c, VkBuffer src, VkDeviceSize src_off, VkBuffer dst,
                  VkDeviceSize dst_off, VkDeviceSize size);
void mvk_cmd_timestamp(mvk_cmd *c, VkQueryPool pool, uint32_t query);
void mvk_cmd_reset_queries(mvk_cmd *c, VkQueryPool pool, uint32_t count);
/* Full compute->compute/indirect/transfer memory barrier. */
void mvk_cmd_barrier(mvk_cmd *c);
/* End, submit and wait (finite timeout). Returns the first error. */
moevk_status mvk_cmd_submit_wait(mvk_cmd *c);
/* Split a 1D count of workgroups into a grid within device limits. */
void mvk_grid_1d(const moevk_context *ctx, uint64_t groups, uint32_t *gx, uint32_t *gy);

/* Largest storage buffer a kernel may bind (maxStorageBufferRange, capped
 * by maxMemoryAllocationSize), a multiple of 4: for scratch (lowered by
 * the scratch test knob) and for weight chunks (by the weight knob). */
uint64_t mvk_max_range(const moevk_context *ctx);
uint64_t mvk_weight_range(const moevk_context *ctx);

/* ---- one thread at a time (error.c) ---- */
/* Enter a public call on ctx: MOEVK_ERROR_BUSY when another thread is
 * inside a call on the same context (nothing is written then, not even the
 * error message); nested calls on the owning thread are fine. */
moevk_status mvk_enter(moevk_context *ctx);
void mvk_leave(moevk_context *ctx);

/* Define public function NAME(PARAMS) returning moevk_status that runs
 * CALL (an expression) inside mvk_enter/mvk_leave of context CTX (an
 * expression of the parameters; NULL gives MOEVK_ERROR_INVALID_ARGUMENT).
 * MVK_PUBLIC_CTX clears the context's last error first (the layer and op
 * calls); MVK_GUARDED leaves it (buffer and tensor calls). */
#define MVK_GUARDED_(NAME, PARAMS, CTX, CALL, CLEAR)                                   \
    moevk_status NAME PARAMS                                                            \
    {                                                                                   \
        moevk_context *mvk_ctx_ = (CTX);                                                \
        if (!mvk_ctx_)                                                                  \
            return MOEVK_ERROR_INVALID_ARGUMENT;                                        \
        moevk_status mvk_st_ = mvk_enter(mvk_ctx_);                                     \
        if (mvk_st_)                                                                    \
            return mvk_st_;                                                             \
        if (CLEAR)                                                                      \
            mvk_clear_error(mvk_ctx_);                                                  \
        mvk_st_ = (CALL);                                                               \
        mvk_leave(mvk_ctx_);                                                            \
        return mvk_st_;                                                                 \
    }
#define MVK_PUBLIC_CTX(NAME, PARAMS, CTX, CALL) MVK_GUARDED_(NAME, PARAMS, CTX, CALL, 1)
#define MVK_GUARDED(NAME, PARAMS, CTX, CALL) MVK_GUARDED_(NAME, PARAMS, CTX, CALL, 0)

/* ---- matrix units (matrix.c) ---- */
/* Run the matrix-unit self-check once, if the context has such a kernel. */
moevk_status mvk_matrix_units_prepare(moevk_context *ctx);

/* ---- tensors (memory.c) ---- */
/* Check that t is a valid tensor of dtype `dtype` (or any of the dtypes in
 * `dtype_mask` bits), of `ndim` dims, lying inside its buffer; `name` goes into
 * the error message. */
moevk_status mvk_check_tensor(moevk_context *ctx, const moevk_tensor *t, const char *name,
                              uint32_t dtype_mask, uint32_t ndim);
mvk_binding mvk_tensor_binding(const moevk_tensor *t);

#endif
