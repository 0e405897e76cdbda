/*
 * moevk — Mixture-of-Experts layers on any Vulkan device.
 *
 * Conventions (the whole API follows them):
 *  - Every fallible call returns a moevk_status; 0 is success, negative is an
 *    error. Results are written through out-parameters, which are left
 *    untouched (or set to NULL for handles) when the call fails.
 *  - Handles are opaque. moevk_X_destroy(NULL) is a no-op.
 *  - *_desc structs are read only during the call. A zero-initialised field
 *    means "the default" documented beside it.
 *  - A context and everything created from it must be used by one thread at
 *    a time (external synchronisation, as in Vulkan). Distinct contexts are
 *    independent: the library has no global mutable state.
 *  - After an error, moevk_context_last_error() returns a message naming the
 *    offending value; the context stays usable and nothing is leaked.
 */
#ifndef MOEVK_H
#define MOEVK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(MOEVK_BUILDING_SHARED)
#define MOEVK_API __declspec(dllexport)
#elif defined(__GNUC__)
#define MOEVK_API __attribute__((visibility("default")))
#else
#define MOEVK_API
#endif

#define MOEVK_VERSION_MAJOR 0
#define MOEVK_VERSION_MINOR 1
#define MOEVK_VERSION_PATCH 0

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */

typedef enum moevk_status {
    MOEVK_SUCCESS = 0,
    MOEVK_ERROR_INVALID_ARGUMENT = -1,   /* a parameter is out of range/NULL */
    MOEVK_ERROR_OUT_OF_HOST_MEMORY = -2,
    MOEVK_ERROR_OUT_OF_DEVICE_MEMORY = -3,
    MOEVK_ERROR_NO_VULKAN = -4,          /* no Vulkan loader could be opened */
    MOEVK_ERROR_NO_DEVICE = -5,          /* no (matching) Vulkan device      */
    MOEVK_ERROR_UNSUPPORTED = -6,        /* the device lacks a feature       */
    MOEVK_ERROR_LIMIT_EXCEEDED = -7,     /* a size beyond a device limit     */
    MOEVK_ERROR_DEVICE_LOST = -8,
    MOEVK_ERROR_TIMEOUT = -9,            /* a GPU wait ran past its timeout  */
    MOEVK_ERROR_VULKAN = -10,            /* any other VkResult error         */
    MOEVK_ERROR_INTERNAL = -11,
    /* Another thread is inside a call on the same context (a misuse: a
     * context is used by one thread at a time). Nothing was done and, as
     * the other thread owns it, the context's last error is not written. */
    MOEVK_ERROR_BUSY = -12,
} moevk_status;

/* A static English name for a status ("MOEVK_ERROR_INVALID_ARGUMENT"). */
MOEVK_API const char *moevk_status_string(moevk_status status);

/* ------------------------------------------------------------------------ */
/* Host allocation hooks and logging                                         */

/* Optional host allocator. alloc must return memory aligned to `align`
 * (a power of two, at most 64) or NULL; free accepts NULL. */
typedef struct moevk_allocator {
    void *(*alloc)(void *user, size_t size, size_t align);
    void (*free)(void *user, void *ptr);
    void *user;
} moevk_allocator;

typedef enum moevk_log_level {
    MOEVK_LOG_ERROR = 0,
    MOEVK_LOG_WARN = 1,
    MOEVK_LOG_INFO = 2,
    MOEVK_LOG_DEBUG = 3,
} moevk_log_level;

typedef void (*moevk_log_fn)(void *user, moevk_log_level level, const char *msg);

/* ------------------------------------------------------------------------ */
/* Contexts                                                                  */

typedef struct moevk_context moevk_context;

/* Borrow a Vulkan device owned by the host application. moevk never destroys
 * any of these objects; they must outlive the context. The device must have
 * been created with the queue family below and (for 16-bit weights read
 * through 16-bit storage) may have any feature set: moevk only uses core
 * Vulkan 1.1 features that are queried, never assumed.
 *
 * The queue. moevk's synchronous calls (uploads, downloads, fills,
 * moevk_layer_forward, the standalone stages, measurements) submit their own
 * command buffers to `queue` with vkQueueSubmit, and after a timed-out wait
 * may call vkQueueWaitIdle on it before freeing memory. Vulkan requires a
 * queue to be externally synchronised: if any other thread of the host
 * submits to the same queue while a moevk call runs, give lock_queue and
 * unlock_queue. moevk calls lock_queue(user, family, index) immediately
 * before each of its operations on the queue and unlock_queue(...) right
 * after it, from the thread making the moevk call; it never holds the lock
 * while waiting for a fence, and never calls back into the host while
 * holding it. Both must be given, or neither (then the host promises not to
 * touch the queue during moevk calls). moevk_layer_record never touches the
 * queue. */
typedef struct moevk_vulkan_import {
    void *get_instance_proc_addr; /* PFN_vkGetInstanceProcAddr, required */
    void *instance;               /* VkInstance, required                */
    void *physical_device;        /* VkPhysicalDevice, required          */
    void *device;                 /* VkDevice, required                  */
    uint32_t queue_family_index;  /* must support compute                */
    void *queue;                  /* VkQueue from that family, required  */
    /* Optional queue lock (see above); the index is passed back as given. */
    void (*lock_queue)(void *user, uint32_t queue_family, uint32_t queue_index);
    void (*unlock_queue)(void *user, uint32_t queue_family, uint32_t queue_index);
    void *queue_lock_user;
    uint32_t queue_index;         /* index of `queue` in its family; 0 default */
    /* Optional: the device extensions the host enabled. moevk uses only
     * extensions listed here on a borrowed device (today
     * VK_KHR_push_descriptor, which lets one layer be recorded into any
     * number of pending command buffers without descriptor sets). */
    const char *const *device_extensions;
    uint32_t num_device_extensions;
    /* Optional: the feature structs the host enabled (a pNext chain, e.g.
     * VkPhysicalDeviceFeatures2 -> VkPhysicalDeviceVulkan12Features -> ...,
     * read during moevk_context_create only). moevk uses cooperative
     * matrices on a borrowed device only when VK_KHR_cooperative_matrix is
     * among device_extensions and this chain enables cooperativeMatrix,
     * shaderFloat16 and vulkanMemoryModel. */
    const void *enabled_features;
} moevk_vulkan_import;

enum moevk_context_flags {
    /* Enable VK_LAYER_KHRONOS_validation (with synchronization validation)
     * on a context that creates its own instance. Every message is counted
     * (see moevk_context_validation_messages) and logged as an error. */
    MOEVK_CONTEXT_VALIDATION = 1u << 0,
    /* Like MOEVK_CONTEXT_VALIDATION, but GPU-assisted validation instead of
     * synchronization validation (the layer cannot run both at once). */
    MOEVK_CONTEXT_GPU_ASSISTED_VALIDATION = 1u << 1,
};

typedef struct moevk_context_desc {
    /* Device choice for a context that creates its own instance: NULL or ""
     * means the MOEVK_DEVICE environment variable if set, else the first
     * device by type (discrete GPU, integrated, virtual, CPU). A decimal
     * number selects that device index; any other string selects the first
     * device whose name contains it (case-insensitive). */
    const char *device;
    uint32_t flags;                   /* moevk_context_flags               */
    const moevk_vulkan_import *import; /* optional: borrow the host device */
    const moevk_allocator *allocator; /* optional host allocation hooks    */
    moevk_log_fn log;                 /* optional log callback             */
    void *log_user;
    moevk_log_level log_level;        /* messages up to this level; 0=ERROR */
    /* Timeout for each GPU wait in milliseconds; 0 = 60000. A wait that
     * expires returns MOEVK_ERROR_TIMEOUT. */
    uint32_t timeout_ms;
    /* Test knob: pretend the loader library has this file name (e.g. a name
     * that does not exist, to exercise the "no Vulkan" path). NULL = the
     * platform's loader. */
    const char *loader_name;
    /* Optional buffer that receives the error message when context creation
     * fails (there is no context to ask then). */
    char *error_message;
    size_t error_message_size;
} moevk_context_desc;

/* What the device offers; filled at context creation. */
typedef struct moevk_device_info {
    char name[256];
    uint32_t vendor_id, device_id;
    uint32_t device_type;  /* VkPhysicalDeviceType */
    uint32_t api_version;  /* VK_MAKE_API_VERSION encoding */
    uint32_t driver_version;
    char driver_name[256];
    char driver_info[256];
    uint32_t subgroup_size;
    uint32_t min_subgroup_size, max_subgroup_size;
    uint32_t subgroup_ops;           /* VkSubgroupFeatureFlags in compute */
    uint32_t max_shared_memory;      /* maxComputeSharedMemorySize, bytes */
    uint32_t max_workgroup_invocations;
    uint32_t max_workgroup_count[3];
    uint32_t max_push_constants;
    uint64_t max_storage_buffer_range;
    uint64_t max_allocation_size;    /* maxMemoryAllocationSize */
    uint32_t max_allocation_count;
    uint64_t device_local_bytes;     /* largest DEVICE_LOCAL heap */
    int fp16_arith;                  /* shaderFloat16 */
    int int8_arith;                  /* shaderInt8 */
    int storage_16bit;               /* storageBuffer16BitAccess */
    int storage_8bit;                /* storageBuffer8BitAccess */
    int bf16;                        /* VK_KHR_shader_bfloat16 */
    int cooperative_matrix;          /* VK_KHR_cooperative_matrix */
    int timestamps;                  /* compute queue can write timestamps */
    float timestamp_period_ns;
    uint32_t timestamp_valid_bits;
    int memory_budget;               /* VK_EXT_memory_budget */
    int imported;                    /* device borrowed from the host */
    int push_descriptor;             /* VK_KHR_push_descriptor in use */
    /* Matrix units for the expert GEMMs: 1 in use (cooperative matrices,
     * self-check passed), 0 none, -1 present but disabled because the
     * self-check disagreed with the portable kernel. Known once a layer
     * that could use them was created (moevk info creates none and shows
     * the result of a check it runs). */
    int matrix_units;
    /* VK_EXT_external_memory_host in use (MOEVK_LAYER_IMPORT_HOST_EXPERTS),
     * and its minImportedHostPointerAlignment */
    int external_memory_host;
    uint64_t host_pointer_alignment;
} moevk_device_info;

MOEVK_API moevk_status moevk_context_create(const moevk_context_desc *desc,
                                            moevk_context **out);
MOEVK_API void moevk_context_destroy(moevk_context *ctx);
MOEVK_API const moevk_device_info *moevk_context_device_info(const moevk_context *ctx);
/* The message of the last failed call on this context ("" if none). */
MOEVK_API const char *moevk_context_last_error(const moevk_context *ctx);
/* The VkResult of the last failed Vulkan call (0 if none). */
MOEVK_API int32_t moevk_context_last_vk_result(const moevk_context *ctx);
/* Number of validation-layer messages seen so far (validation contexts). */
MOEVK_API uint32_t moevk_context_validation_messages(const moevk_context *ctx);
/* Run the built-in self-checks of the device's accelerated kernel variants
 * now (otherwise they run before the first layer that could use them) and
 * record the outcome in the device info (matrix_units). A disagreement is
 * no error: the portable kernels are used then. */
MOEVK_API moevk_status moevk_context_self_check(moevk_context *ctx);

/* Enumerate devices without creating a context: writes up to `capacity`
 * entries of `infos` and the total count to `*count`. */
MOEVK_API moevk_status moevk_enumerate_devices(const moevk_context_desc *desc,
                                               moevk_device_info *infos,
                                               uint32_t capacity, uint32_t *count);

/* ------------------------------------------------------------------------ */
/* Buffers and tensors                                                       */

typedef enum moevk_dtype {
    MOEVK_DTYPE_F32 = 0,
    MOEVK_DTYPE_F16 = 1,
    MOEVK_DTYPE_BF16 = 2,
    MOEVK_DTYPE_I32 = 3, /* indices and counts (routing ids, rows) */
    /* Block formats of expert weights: each row (the K inputs of one output)
     * is a whole number of blocks of the format's elements, bit for bit the
     * ggml layout (a GGUF tensor uploads as it is). Formulas in
     * docs/semantics.md. */
    MOEVK_DTYPE_Q8_0 = 16,   /* 32 elements in 34 bytes */
    MOEVK_DTYPE_Q4_0 = 17,   /* 32 in 18 */
    MOEVK_DTYPE_Q4_1 = 18,   /* 32 in 20 */
    MOEVK_DTYPE_Q5_0 = 19,   /* 32 in 22 */
    MOEVK_DTYPE_Q5_1 = 20,   /* 32 in 24 */
    MOEVK_DTYPE_Q2_K = 21,   /* 256 in 84 */
    MOEVK_DTYPE_Q3_K = 22,   /* 256 in 110 */
    MOEVK_DTYPE_Q4_K = 23,   /* 256 in 144 */
    MOEVK_DTYPE_Q5_K = 24,   /* 256 in 176 */
    MOEVK_DTYPE_Q6_K = 25,   /* 256 in 210 */
    MOEVK_DTYPE_IQ4_NL = 26, /* 32 in 18 */
    MOEVK_DTYPE_IQ4_XS = 27, /* 256 in 136 */
    MOEVK_DTYPE_MXFP4 = 28,  /* 32 in 17 */
    /* Native blocks of the Hugging Face quantised checkpoints (moevk's own
     * layouts: `moevk run` repacks GPTQ, AWQ, bitsandbytes and FP8 experts
     * into them at load without changing a dequantised value). */
    MOEVK_DTYPE_GPTQ4 = 29,    /* 32 in 19: f16 scale, u8 zero, 4-bit quants
                                  (GPTQ and AWQ; "awq4" names it too) */
    MOEVK_DTYPE_NF4 = 30,      /* 64 in 36: f32 absmax, NF4 codes (bitsandbytes) */
    MOEVK_DTYPE_FP8_E4M3 = 31, /* 128 in 132: f32 scale, float8 e4m3fn values */
} moevk_dtype;

/* Bytes of one element; 0 for a block format or an unknown dtype (see
 * moevk_dtype_row_bytes). */
MOEVK_API size_t moevk_dtype_size(moevk_dtype dtype);
/* Bytes of a row of `elems` elements: elems x the element size, or the
 * blocks' bytes for a block format; 0 when elems is not a whole number of
 * blocks or the dtype is unknown. */
MOEVK_API uint64_t moevk_dtype_row_bytes(moevk_dtype dtype, uint64_t elems);
/* Elements per block (1 for f32/f16/bf16/i32; 0 for an unknown dtype). */
MOEVK_API uint32_t moevk_dtype_block_elems(moevk_dtype dtype);
/* The name as llama.cpp spells it, lower case ("f32", "q4_k", "iq4_xs",
 * "mxfp4", ...; moevk's own blocks "gptq4", "nf4", "fp8_e4m3"), or
 * "unknown". */
MOEVK_API const char *moevk_dtype_name(moevk_dtype dtype);
/* The dtype of a name (case-insensitive; "awq4" is MOEVK_DTYPE_GPTQ4, the
 * block AWQ is repacked into); -1 when none has it. */
MOEVK_API int moevk_dtype_from_name(const char *name);

typedef struct moevk_buffer moevk_buffer;

/* A device-local storage buffer of `size` bytes (> 0, at most the device's
 * maxStorageBufferRange and maxMemoryAllocationSize). */
MOEVK_API moevk_status moevk_buffer_create(moevk_context *ctx, uint64_t size,
                                           moevk_buffer **out);
/* Wrap a VkBuffer owned by the host (usage must include STORAGE_BUFFER and
 * TRANSFER_SRC/DST). moevk never destroys it. */
MOEVK_API moevk_status moevk_buffer_import(moevk_context *ctx, void *vk_buffer,
                                           uint64_t size, moevk_buffer **out);
MOEVK_API void moevk_buffer_destroy(moevk_buffer *buf);
MOEVK_API uint64_t moevk_buffer_size(const moevk_buffer *buf);
MOEVK_API void *moevk_buffer_vk_handle(const moevk_buffer *buf); /* VkBuffer */
/* Staged copies between host memory and a buffer (synchronous). */
MOEVK_API moevk_status moevk_buffer_upload(moevk_buffer *buf, uint64_t offset,
                                           const void *src, uint64_t size);
MOEVK_API moevk_status moevk_buffer_download(const moevk_buffer *buf, uint64_t offset,
                                             void *dst, uint64_t size);
MOEVK_API moevk_status moevk_buffer_fill(moevk_buffer *buf, uint64_t offset,
                                         uint64_t size, uint32_t value);

#define MOEVK_MAX_DIMS 4
#define MOEVK_MAX_EXPERTS 1024
#define MOEVK_MAX_TOP_K 32
#define MOEVK_MAX_SHARED 16

/* A view of a buffer as a dense row-major tensor. Offset must be a multiple
 * of 4 bytes. Shapes are outermost first: a [T, H] tensor has ndim 2,
 * shape {T, H}. */
typedef struct moevk_tensor {
    moevk_buffer *buffer;
    uint64_t offset;
    moevk_dtype dtype;
    uint32_t ndim;
    uint64_t shape[MOEVK_MAX_DIMS];
} moevk_tensor;

/* Allocate a buffer exactly large enough and describe it in `*out`. The
 * buffer belongs to the caller (moevk_tensor_destroy or buffer_destroy). */
MOEVK_API moevk_status moevk_tensor_create(moevk_context *ctx, moevk_dtype dtype,
                                           uint32_t ndim, const uint64_t *shape,
                                           moevk_tensor *out);
MOEVK_API void moevk_tensor_destroy(moevk_tensor *t);
/* Bytes of a tensor's data (0 when the shape or dtype is invalid). */
MOEVK_API uint64_t moevk_tensor_bytes(const moevk_tensor *t);
MOEVK_API moevk_status moevk_tensor_upload(moevk_tensor *t, const void *src);
MOEVK_API moevk_status moevk_tensor_download(const moevk_tensor *t, void *dst);

/* ------------------------------------------------------------------------ */
/* Router ops (each stage is callable on its own)                            */

typedef enum moevk_scoring {
    MOEVK_SCORING_SOFTMAX = 0,
    MOEVK_SCORING_SIGMOID = 1,
} moevk_scoring;

/* logits[T, E] (f32) = x[T, H] (f32) · w[E, H]^T (+ bias[E], f32).
 * w may be f32, f16 or bf16. bias may be NULL. Synchronous. */
MOEVK_API moevk_status moevk_router_logits(moevk_context *ctx, const moevk_tensor *x,
                                           const moevk_tensor *w,
                                           const moevk_tensor *bias,
                                           moevk_tensor *logits);

/* scores[T, E] = softmax or sigmoid of each row of logits[T, E] (both f32).
 * Softmax is numerically stable (max-subtracted); NaN inputs propagate. */
MOEVK_API moevk_status moevk_router_scores(moevk_context *ctx,
                                           const moevk_tensor *logits,
                                           moevk_scoring scoring,
                                           moevk_tensor *scores);


/* ------------------------------------------------------------------------ */
/* MoE layers (the maths contract is docs/semantics.md)                      */

typedef enum moevk_routing {
    /* p = softmax(l) over all E; c = p (+ correction_bias); optional expert
     * groups; ids = top-k of c; w = p[ids]; if norm_topk_prob: w /= sum(w).
     * (Mixtral, Qwen-MoE, OLMoE, Switch; with groups DeepSeek-V2, with the
     * bias ERNIE-4.5) */
    MOEVK_ROUTING_SOFTMAX_TOPK = 0,
    /* ids = top-k of l; w = softmax(l[ids]) over the k. (gpt-oss) */
    MOEVK_ROUTING_TOPK_SOFTMAX = 1,
    /* s = sigmoid(l); c = s + correction_bias; groups of E/n_group experts
     * scored by the sum of their two largest c; keep topk_group groups; ids =
     * top-k of c within kept groups; w = s[ids]; optional normalisation
     * (w /= sum(w) + 1e-20). (DeepSeek-V3; one group: MiniMax-M2, Llama 4) */
    MOEVK_ROUTING_SIGMOID_GROUPED = 2,
    /* Expert choice: p = softmax(l) over all E; each expert takes the C
     * tokens of the pass with the largest p[t, e] (ties: the lower token),
     * C = min(T, ceil(cf * T * k / E)), cf = capacity_factor (0 means 1),
     * k = top_k (the average experts per token); w[t, e] = p[t, e]. A token
     * gets 0..E experts: ids and weights have E slots per token, slot e
     * holding expert e (-1 and weight 0 when e did not take the token).
     * A token's experts depend on the other tokens of its pass, so the mode
     * refuses MOEVK_LAYER_BATCH_INVARIANT; no groups, correction bias,
     * normalisation or select_on_logits. (Zhou et al. 2022) */
    MOEVK_ROUTING_EXPERT_CHOICE = 3,
    /* SparseMixer's inference routing (PhiMoE): slot j takes the best
     * remaining logit m = l[id_j] (ids = top-k of l) and w_j = softmax over the remaining experts e with (m - l_e) /
     * max(|l_e|, m) <= 2 jitter_eps, at id_j; the earlier slots' experts are
     * excluded. No groups, bias or normalisation. (transformers' phimoe
     * always routes to k = 2.) */
    MOEVK_ROUTING_SPARSEMIXER = 4,
} moevk_routing;
/* Every mode ends with w *= routed_scaling_factor (docs/semantics.md). */

/* sigmoid_grouped's score function s(l) (desc.score_fn); 0 is the mode's. */
typedef enum moevk_score_fn {
    MOEVK_SCORE_SIGMOID = 0,      /* s = sigmoid(l)                       */
    MOEVK_SCORE_SQRTSOFTPLUS = 1, /* s = sqrt(log(1 + e^l)) (DeepSeek-V4)  */
} moevk_score_fn;

/* How an expert group is scored from its experts' selection scores c
 * (grouped routing: n_group > 1 and topk_group < n_group). */
typedef enum moevk_group_score {
    MOEVK_GROUP_TOP2_SUM = 0, /* the sum of its two largest c (DeepSeek-V3) */
    MOEVK_GROUP_MAX = 1,      /* its largest c (DeepSeek-V2)                */
} moevk_group_score;

typedef enum moevk_activation {
    MOEVK_ACT_SWIGLU = 0,     /* silu(g) * u                               */
    MOEVK_ACT_GEGLU = 1,      /* gelu_erf(g) * u                           */
    MOEVK_ACT_GEGLU_TANH = 2, /* gelu_tanh(g) * u                          */
    MOEVK_ACT_SWIGLU_OAI = 3, /* gpt-oss: clamped, (u + 1) * g * sigmoid(a g) */
    MOEVK_ACT_RELU = 4,       /* non-gated: relu(u)                        */
    MOEVK_ACT_GELU = 5,       /* non-gated: gelu_erf(u)                    */
    MOEVK_ACT_RELU2 = 6,      /* non-gated: relu(u)^2 (Nemotron-H)         */
    MOEVK_ACT_SWIGLU_CLAMP = 7, /* silu(min(g, limit)) * clamp(u, -limit,
                                 limit), limit = swiglu_limit (GLM-5-Next) */
    MOEVK_ACT_SWIGLU_SOFTCAP = 8, /* cg tanh(g / cg) * sigmoid(g) * cu tanh(u /
                                   cu), cg = softcap_gate, cu = softcap_up
                                   (Inkling-2) */
    MOEVK_ACT_SWIGLU_POSTCLAMP = 9, /* min(silu(g), limit) * clamp(u, -limit,
                                     limit), limit = swiglu_limit: clamped
                                     after the silu (Step-3.7) */
} moevk_activation;

/* 1 for the gated activations (which use gate and up weights), else 0. */
MOEVK_API int moevk_activation_is_gated(moevk_activation act);

typedef struct moevk_layer moevk_layer;

/* ---- Workspaces -------------------------------------------------------------
 * The per-pass buffers of forward passes (routing ids and weights, counts,
 * the tile schedule, expert activations, ...). Any number of layers share
 * one workspace: each of its buffers is sized for the largest need among
 * the layers and token counts it was reserved for, so the N layers of a
 * model need one workspace's memory, not N. A layer uses the workspace
 * given in its desc, or else its context's default workspace.
 *
 * Passes through one workspace run one after another: moevk_layer_forward
 * waits for its pass; moevk_layer_record starts each recorded pass with a
 * barrier that orders it after the previous pass recorded or submitted on
 * the same queue (layers may be recorded back to back into one command
 * buffer, or into several submitted in order on one queue). Passes that
 * must run concurrently (on different queues) need different workspaces.
 *
 * A pass of any number of tokens runs: where its buffers would exceed the
 * device's storage buffer range (or grids its workgroup counts) the expert
 * stages run in chunks of tokens, with the same results bit for bit. */
typedef struct moevk_workspace moevk_workspace;

typedef struct moevk_workspace_desc {
    /* Tokens per chunk of the expert stages: caps the activation buffers
     * ([chunk * k, max(F, H)] floats) at the cost of more dispatches.
     * 0 = as many as the device's limits allow. */
    uint32_t chunk_tokens;
} moevk_workspace_desc;

/* desc may be NULL (defaults). The workspace starts empty. */
MOEVK_API moevk_status moevk_workspace_create(moevk_context *ctx,
                                              const moevk_workspace_desc *desc,
                                              moevk_workspace **out);
/* Releases the caller's reference: the buffers go when no layer created
 * with this workspace remains. Not while a recorded pass using it is
 * pending. NULL is a no-op. */
MOEVK_API void moevk_workspace_destroy(moevk_workspace *ws);
/* Grow the workspace so that passes of `layer` over up to max_tokens
 * tokens fit (moevk_layer_forward does this itself; moevk_layer_record
 * requires it). Growing replaces buffers: not while a recorded pass using
 * the workspace is pending. */
MOEVK_API moevk_status moevk_workspace_reserve(moevk_workspace *ws, const moevk_layer *layer,
                                               uint32_t max_tokens);
/* Bytes of device memory the workspace holds. */
MOEVK_API uint64_t moevk_workspace_bytes(const moevk_workspace *ws);

/* A stack of `count` FFN experts in host memory, row-major as nn.Linear
 * ([out, in]), all in one dtype:
 *   gate [count, ffn, hidden]  (gated activations only; NULL otherwise)
 *   up   [count, ffn, hidden]  (for non-gated activations: the input proj.)
 *   down [count, hidden, ffn]
 * Each of gate/up/down is given either as one contiguous array or as an
 * array of `count` per-expert pointers (the *_experts fields; used when the
 * contiguous pointer is NULL). Biases are optional f32 arrays
 * ([count, ffn], [count, ffn], [count, hidden]). Host memory is read only
 * during moevk_layer_create. */
typedef struct moevk_expert_weights {
    const void *gate, *up, *down;
    const void *const *gate_experts, *const *up_experts, *const *down_experts;
    const float *gate_bias, *up_bias, *down_bias;
    /* Formats of the gate and up rows (one format for both) and of the
     * down rows, read only when the layer's flags have
     * MOEVK_LAYER_MATRIX_DTYPES (GGUF's Q4_K_M: gate/up q4_k, down q6_k);
     * otherwise both are the layer's weight_dtype. */
    moevk_dtype gate_up_dtype, down_dtype;
    /* Optional [count, hidden]: each expert's order of the inputs of its
     * gate and up projections: their input k is x[t, input_perm[e * hidden
     * + k]] (a permutation of 0 .. hidden - 1 for each expert e). NULL: the
     * identity. `moevk run` sets it for act-order (desc_act) GPTQ
     * checkpoints, whose inputs it sorts by quantisation group. */
    const uint32_t *input_perm;
} moevk_expert_weights;

enum moevk_layer_flags {
    /* Use only kernel paths whose results for a token are bitwise the same
     * whatever the other tokens of the pass (the portable paths all are;
     * a faster path that is not, such as cooperative matrices, is then
     * left out). */
    MOEVK_LAYER_BATCH_INVARIANT = 1u << 0,
    /* Recorded passes (moevk_layer_record) leave the routing statistics
     * out; moevk_layer_read_stats then fails after them. Synchronous
     * passes compute them when moevk_layer_forward's stats is non-NULL. */
    MOEVK_LAYER_RECORD_NO_STATS = 1u << 1,
    /* The expert sets give their matrices' formats (gate_up_dtype and
     * down_dtype of experts and shared); weight_dtype is then unused. */
    MOEVK_LAYER_MATRIX_DTYPES = 1u << 2,
    /* Quantise at create: the host weights (f32, f16 or bf16) are turned
     * into quantize_dtype on the host (quantize_threads threads) before
     * upload. A matrix whose rows are not a whole number of the format's
     * blocks gets llama.cpp's fallback format (q4_k -> q5_0, q5_k -> q5_1,
     * q6_k -> q8_0, q2_k / q3_k / iq4_xs -> iq4_nl; f16 when none fits),
     * said in the log at MOEVK_LOG_WARN; moevk_layer_get_desc then gives
     * the formats each matrix got. */
    MOEVK_LAYER_QUANTIZE = 1u << 3,
    /* A device-memory budget for the routed experts (vram_budget bytes):
     * see "Expert weights under a budget" below. */
    MOEVK_LAYER_VRAM_BUDGET = 1u << 4,
    /* With MOEVK_LAYER_VRAM_BUDGET: the experts on the device change only
     * when the caller pins or prefetches (moevk_layer_cache_pin/_prefetch),
     * never from the routing counts. */
    MOEVK_LAYER_CACHE_STATIC = 1u << 5,
    /* With MOEVK_LAYER_VRAM_BUDGET: the caller's expert arrays (the
     * contiguous gate/up/down of `experts`, in their device format: no
     * MOEVK_LAYER_QUANTIZE) stay valid and unchanged until the layer is
     * destroyed, so on a device with VK_EXT_external_memory_host moevk
     * imports them as the host copy instead of copying them (a memory-
     * mapped checkpoint is read by the GPU where it lies). A matrix whose
     * address the device cannot import (its page alignment, an offset that
     * is not a multiple of minStorageBufferOffsetAlignment, a refusal) is
     * copied as without the flag; moevk_cache_stats says how much was
     * imported. */
    MOEVK_LAYER_IMPORT_HOST_EXPERTS = 1u << 6,
    /* The routing weight scales the expert's input instead of its output
     * (Llama 4): the assignment (t, j) runs expert ids[t, j] on
     * weights[t, j] * x_t, and y_t is the plain sum of the k outputs (plus
     * the shared experts). moevk_layer_experts, which takes no weights,
     * refuses such a layer; moevk_layer_combine then ignores its weights. */
    MOEVK_LAYER_WEIGHTS_ON_INPUT = 1u << 7,
    /* The shared experts use their own activation (shared_activation, with
     * shared_swiglu_limit) instead of the routed experts' (HY-V4: clamped
     * routed experts, a plain SwiGLU shared one). It must be gated when
     * `activation` is, and not gated when it is not. */
    MOEVK_LAYER_SHARED_ACTIVATION = 1u << 8,
    /* The layer holds no routed expert weights (`experts` is not read):
     * only the router, the shared experts (and their gate) and the output
     * bias. The token side of an expert-parallel layer (moevk_ep_layer),
     * whose routed experts live on the ranks that own them. Such a layer
     * runs moevk_layer_route, _permute, _combine, _combine_shared and
     * _shared_experts; moevk_layer_forward, _record and _experts refuse
     * it. Not with MOEVK_LAYER_VRAM_BUDGET (a budget of routed experts). */
    MOEVK_LAYER_NO_ROUTED_EXPERTS = 1u << 9,
};

typedef struct moevk_layer_desc {
    uint32_t hidden;        /* H, required                                 */
    uint32_t ffn;           /* F of a routed expert, required              */
    uint32_t num_experts;   /* E, 1..1024                                  */
    uint32_t top_k;         /* k, 1..min(E, 32)                            */
    moevk_routing routing;
    moevk_activation activation;
    int norm_topk_prob;     /* softmax_topk / sigmoid_grouped              */
    uint32_t n_group;       /* softmax_topk / sigmoid_grouped: 0 means 1;
                               must divide E                               */
    uint32_t topk_group;    /* groups kept: 0 means n_group                */
    float routed_scaling_factor; /* 0 means 1.0                            */
    float capacity_factor;  /* 0 = dropless; else C = ceil(cf * T * k / E)
                               (or capacity_fraction, below)            */
    float swiglu_alpha;     /* swiglu_oai: 0 means 1.702                   */
    float swiglu_limit;     /* swiglu_oai, swiglu_clamp, swiglu_postclamp:
                               0 means 7.0                                 */

    moevk_dtype weight_dtype; /* dtype of expert and shared-expert weights */
    moevk_dtype router_dtype; /* dtype of router_weight                    */
    const void *router_weight;   /* [E, H], required                       */
    const float *router_bias;    /* [E], optional                          */
    const float *correction_bias; /* [E], optional: added to the selection
                                     score (softmax_topk / sigmoid_grouped) */
    moevk_expert_weights experts; /* E routed experts                      */

    uint32_t num_shared;    /* shared experts run on every token; 0 = none */
    uint32_t shared_ffn;    /* their F (0 means ffn)                       */
    moevk_expert_weights shared; /* num_shared experts                     */
    /* Optional [num_shared, H] gate (in router_dtype): shared expert i's
     * output is scaled by sigmoid(x · shared_gate[i]) (Qwen2-MoE). */
    const void *shared_gate;

    /* Optional: the workspace the layer's passes use (it must belong to the
     * same context; the layer keeps it alive). NULL = the context's
     * default workspace, shared by all layers created without one. */
    moevk_workspace *workspace;
    uint32_t flags;         /* moevk_layer_flags                           */

    /* MOEVK_LAYER_QUANTIZE: the expert format to quantise to, and the host
     * threads that do it (0 = one per online CPU, at most 64). Layers of
     * over 64 MiB of weights report progress through the log callback
     * (MOEVK_LOG_INFO). */
    moevk_dtype quantize_dtype;
    uint32_t quantize_threads;

    /* MOEVK_LAYER_VRAM_BUDGET: the most device memory, in bytes, that the
     * routed experts' matrices may take (0 is allowed: every expert then
     * runs from host memory). Without the flag every expert is on the
     * device. */
    uint64_t vram_budget;

    /* Routing refinements; zero keeps each mode's rule above. */
    moevk_group_score group_score; /* grouped routing                       */
    /* norm_topk_prob's denominator: 0 or 1 is the sum of the k weights;
     * another p > 0 their p-norm (sum |w|^p)^(1/p) (DBRX). */
    float norm_p;
    /* > 0: the denominator is max(norm, norm_min) instead of the mode's
     * (sum, or sum + 1e-20 for sigmoid_grouped) (ERNIE-4.5's moe_norm_min) */
    float norm_min;
    /* The shared experts' summed output is multiplied by shared_scale (0
     * means 1) before it is added: with routed_scaling_factor 0.5 it is
     * Cohere2-MoE's "average" of the routed and shared outputs. */
    float shared_scale;
    /* Optional [H]: added once to every token's output (JetMoE's block
     * bias). Read only during moevk_layer_create. */
    const float *output_bias;
    /* Identity ("zero") experts (LongCat-Flash): the last num_zero_experts
     * of the num_experts router experts have no weights; such an expert's
     * output is its input (o = x_t, or w x_t with
     * MOEVK_LAYER_WEIGHTS_ON_INPUT). Routing, capacity, rows and the
     * statistics count them as any expert; `experts` then holds the
     * num_experts - num_zero_experts FFN experts (at least one). */
    uint32_t num_zero_experts;
    /* MOEVK_ACT_SWIGLU_SOFTCAP's caps of the gate's linear factor and of
     * up: 0 means 4 and 25 (Inkling-2's mlp_gate_softcap, mlp_up_softcap) */
    float softcap_gate, softcap_up;
    /* With MOEVK_LAYER_SHARED_ACTIVATION: the shared experts' activation and
     * its limit (0 means swiglu_limit); its other parameters are the routed
     * experts' (swiglu_alpha, the soft caps). Without the flag both are
     * ignored and the shared experts use `activation`. */
    moevk_activation shared_activation;
    float shared_swiglu_limit;
    /* > 0 (with norm_min 0): the denominator is norm + norm_eps instead of
     * the mode's (sum, or sum + 1e-20 for sigmoid_grouped) (LFM2-MoE's
     * 1e-6); 0 keeps the mode's */
    float norm_eps;
    /* > 0: the router logits (after router_bias) are soft-capped, l =
     * router_softcap * tanh(l / router_softcap), before everything that
     * reads them: selection, weights and the routing statistics (Laguna's
     * moe_router_logit_softcapping); 0 = no cap */
    float router_softcap;
    /* Nonzero (softmax_topk / sigmoid_grouped): the selection score is the
     * logit plus correction_bias, c = l + correction_bias, instead of the
     * mode's probability (plus the bias); groups are scored on these c and
     * the weights stay the mode's (Kolibri-1: top-k of l + bias, w =
     * sigmoid(l[ids])). 0 = the mode's selection score */
    int select_on_logits;
    /* sparsemixer: the jitter epsilon of its threshold (PhiMoE's
     * router_jitter_noise, 0.01 in its checkpoints): slot j keeps the
     * experts whose relative gap to its top logit is at most 2 jitter_eps.
     * Used as given, >= 0 and finite (0 keeps only logits tied with the
     * top one, so each weight is 1 without ties); other modes: must be 0 */
    float jitter_eps;
    /* Input norms (Gemma 4). With router_norm_eps > 0 the router reads
     * r_t = x_t * (mean_h x_t[h]^2 + router_norm_eps)^-1/2, else r_t = x_t;
     * then r_t[h] *= router_input_scale[h] (optional [H]) and
     * r_t *= router_input_factor (0 means 1). With expert_norm_eps > 0 the
     * routed, shared and identity experts (and the shared gate) read
     * e_t = x_t * (mean_h x_t[h]^2 + expert_norm_eps)^-1/2, times
     * expert_norm_weight[h] (optional [H], needs expert_norm_eps > 0)
     * instead of x_t. r_t and e_t are rounded to f32. All zero / NULL: both
     * read x_t. Host arrays are read only during moevk_layer_create. */
    float router_norm_eps;
    const float *router_input_scale;
    float router_input_factor;
    float expert_norm_eps;
    const float *expert_norm_weight;
    /* Optional [E] (top-k modes): the routing weight of a slot that chose
     * expert e is multiplied by expert_weight_scale[e] after the
     * normalisation and before routed_scaling_factor (Gemma 4's
     * per_expert_scale). NULL = no scale. */
    const float *expert_weight_scale;
    /* sigmoid_grouped: the score function whose values s choose (s +
     * correction_bias) and weigh (w = s[ids]); 0 = sigmoid. Other modes:
     * must be 0. */
    moevk_score_fn score_fn;
    /* Nonzero: the shared experts' gates join the routed weights'
     * normalisation as a sink (Inkling): with g_i = sigmoid(r_t ·
     * shared_gate[i]) (r_t the router's input row: the gate rows are extra
     * router rows) and D = sum_j s[ids_j] + sum_i g_i, w_j = s[ids_j] / D
     * and shared expert i's output is scaled by g_i / D, both times
     * routed_scaling_factor (the routed w_j times expert_weight_scale
     * first). Needs sigmoid_grouped routing with norm_topk_prob, num_shared
     * > 0 and shared_gate; no norm_p (other than 1), norm_min or norm_eps.
     * D has no 1e-20. */
    int shared_sink;
    /* > 0 (instead of capacity_factor): expert capacity C = ceil(
     * capacity_fraction * T), T the pass's tokens, computed in double
     * (NLLB-MoE's moe_eval_capacity_token_fraction: a fraction of the
     * tokens, not a factor of T k / E). Not with capacity_factor or expert
     * choice. */
    double capacity_fraction;
    /* > 0: after admission each token's admitted slots are renormalised,
     * w'_j = w_j / max(sum of its admitted w_i / s, drop_renorm_eps), s =
     * routed_scaling_factor (0 means 1): the weights a drop leaves are
     * scaled up to the token's whole (NLLB-MoE's normalisation after
     * dropping, with float32's eps). Not with MOEVK_LAYER_WEIGHTS_ON_INPUT
     * or expert choice. */
    float drop_renorm_eps;
} moevk_layer_desc;

/* Routing slots per token: the width of the ids, weights and row arrays of
 * a pass ([T, slots]): num_experts for MOEVK_ROUTING_EXPERT_CHOICE, else
 * top_k. */
static inline uint32_t moevk_routing_slots(const moevk_layer_desc *desc)
{
    return desc->routing == MOEVK_ROUTING_EXPERT_CHOICE ? desc->num_experts : desc->top_k;
}

/* Routing statistics of one forward pass (contract in docs/semantics.md). */
typedef struct moevk_routing_stats {
    /* Optional caller array of num_experts entries: admitted assignments per
     * expert. NULL = not wanted. */
    uint32_t *tokens_per_expert;
    uint64_t dropped;            /* assignments over capacity              */
    double load_balancing_loss;  /* E * sum_e f_e * P_e                    */
    double router_z_loss;        /* mean over tokens of logsumexp(l)^2     */
    double routing_entropy;      /* mean over tokens of -sum p log p       */
} moevk_routing_stats;

/* Check a layer description without creating anything. ctx may be NULL;
 * with a context, the message (naming the offending field) is kept as its
 * last error. */
MOEVK_API moevk_status moevk_layer_desc_validate(moevk_context *ctx,
                                                 const moevk_layer_desc *desc);
/* The same without a context: the message goes to msg (optional, n bytes;
 * "" when the desc is valid). */
MOEVK_API moevk_status moevk_layer_desc_check(const moevk_layer_desc *desc, char *msg,
                                              size_t n);

/* Validate desc, upload every weight to device buffers (split into chunks
 * within the device's maxStorageBufferRange), and build the pipelines. */
MOEVK_API moevk_status moevk_layer_create(moevk_context *ctx, const moevk_layer_desc *desc,
                                          moevk_layer **out);
MOEVK_API void moevk_layer_destroy(moevk_layer *layer);
/* The layer's description with its defaults filled in and its host
 * pointers cleared; flags always have MOEVK_LAYER_MATRIX_DTYPES and the
 * expert sets the formats on the device (after quantisation, if asked:
 * MOEVK_LAYER_QUANTIZE is then cleared). */
MOEVK_API const moevk_layer_desc *moevk_layer_get_desc(const moevk_layer *layer);

/* moevk_workspace_reserve(the layer's workspace, layer, max_tokens). */
MOEVK_API moevk_status moevk_layer_reserve(moevk_layer *layer, uint32_t max_tokens);
/* Bytes of device memory of the layer's weights, and of the workspace it
 * uses (shared with the other layers using it). Either pointer may be
 * NULL. */
MOEVK_API void moevk_layer_memory(const moevk_layer *layer, uint64_t *weight_bytes,
                                  uint64_t *scratch_bytes);
/* The workspace the layer's passes use. */
MOEVK_API moevk_workspace *moevk_layer_workspace(const moevk_layer *layer);

/* y [T, H] (f32) = the MoE layer applied to x [T, H] (f32), T >= 1.
 * Synchronous: returns when y is written. stats may be NULL: the pass then
 * skips the statistics stage (and moevk_layer_read_stats fails after it). */
MOEVK_API moevk_status moevk_layer_forward(moevk_layer *layer, const moevk_tensor *x,
                                           moevk_tensor *y, moevk_routing_stats *stats);

/* Record the forward pass into the caller's command buffer (a VkCommandBuffer
 * in the recording state, from a queue family with compute, on the
 * context's device). Barrier contract:
 *  - before: the caller makes its writes of x visible to compute-shader
 *    reads (and finishes its reads/writes of y) with a barrier whose
 *    destination is VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
 *  - inside: moevk inserts every barrier between its own dispatches, and
 *    binds its own pipelines/descriptor sets (the caller's compute bindings
 *    and push constants are disturbed);
 *  - after: y is written by compute shaders; the caller adds a barrier from
 *    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT / SHADER_WRITE before using y.
 * The layer's workspace must be reserved for T tokens (moevk_layer_reserve).
 * A layer may be recorded any number of times, into one command buffer or
 * several pending ones, under the workspace rules above (passes through one
 * workspace are ordered on one queue). moevk never submits or waits for a
 * recorded pass; moevk_layer_read_stats and moevk_layer_read_routing read
 * its results after the caller's submission has completed. */
MOEVK_API moevk_status moevk_layer_record(moevk_layer *layer, void *vk_command_buffer,
                                          const moevk_tensor *x, moevk_tensor *y);

/* Statistics of the layer's last pass (forward, or a recorded one whose
 * submission has completed); kept by the layer, whatever ran since. */
MOEVK_API moevk_status moevk_layer_read_stats(moevk_layer *layer, moevk_routing_stats *stats);

/* The routing decisions of the last completed pass: ids [T*k] (expert
 * index per token and slot) and weights [T*k]; row [T*k] is the assignment's
 * row in the expert-sorted order, or -1 when capacity dropped it. Any pointer
 * may be NULL; T is the last pass's token count. They live in the
 * workspace: an error once another layer has run through it. */
MOEVK_API moevk_status moevk_layer_read_routing(moevk_layer *layer, uint32_t T, uint32_t *ids,
                                                float *weights, int32_t *row);

typedef enum moevk_stage {
    MOEVK_STAGE_ROUTER = 0,   /* router logits (and the shared-expert gate) */
    MOEVK_STAGE_ROUTE,        /* scoring, top-k, weights                  */
    MOEVK_STAGE_PERMUTE,      /* counting, capacity, prefix sum, schedule  */
    MOEVK_STAGE_EXPERTS_UP,   /* grouped gate/up GEMM + activation         */
    MOEVK_STAGE_EXPERTS_DOWN, /* grouped down GEMM                         */
    MOEVK_STAGE_SHARED,       /* shared experts                            */
    MOEVK_STAGE_COMBINE,      /* gather + weighted combine                 */
    MOEVK_STAGE_STATS,        /* routing statistics                        */
    MOEVK_STAGE_COUNT
} moevk_stage;

MOEVK_API const char *moevk_stage_name(moevk_stage stage);

/* GPU time per stage of the last moevk_layer_forward, in milliseconds, from
 * timestamp queries (all zero when the device has no timestamps). */
MOEVK_API moevk_status moevk_layer_stage_times(const moevk_layer *layer,
                                               double ms[MOEVK_STAGE_COUNT]);

/* What the last pass of a layer launched, from its geometry and its
 * GPU-written routing (read back here, after the pass): for comparing
 * kernels on any device, lavapipe included, where times mean little.
 * "useful" multiply-adds are those of the rows the experts received;
 * "launched" include the padding of row and column tiles; weight bytes
 * "needed" are those of the experts (and router) the pass used, once;
 * "fetched" count each read the kernels' tile geometry makes. */
typedef struct moevk_pass_info {
    uint32_t tokens;
    uint32_t route_chunks, expert_chunks; /* 1 and 1 unless beyond limits */
    uint32_t dispatches, barriers;        /* recorded by the pass */
    /* routed experts (per expert chunk) that ran on each kernel path:
     * skinny GEMV, 16-row tiles, 64-row tiles */
    uint32_t experts_per_path[3];
    double macs_useful[MOEVK_STAGE_COUNT], macs_launched[MOEVK_STAGE_COUNT];
    double weight_bytes_needed[MOEVK_STAGE_COUNT], weight_bytes_fetched[MOEVK_STAGE_COUNT];
} moevk_pass_info;

/* The pass info of the layer's last pass (forward or, after its
 * submission completed, a recorded one); fails once another layer has run
 * through the same workspace. */
MOEVK_API moevk_status moevk_layer_pass_info(moevk_layer *layer, moevk_pass_info *info);

/* ---- Expert weights under a budget --------------------------------------
 * With MOEVK_LAYER_VRAM_BUDGET the routed experts' matrices take at most
 * desc.vram_budget bytes of device memory: the layer holds S = as many
 * whole experts as fit ("device slots") on the device, and a copy of all E
 * in host-visible memory (system RAM the GPU reads over its bus), from
 * which the expert kernels read the experts that are not on the device
 * directly, inside the pass: no host round trip, no stall. The router,
 * the shared experts and the biases are always on the device (they are
 * read by every token). Results are bit for bit those of the layer with
 * every expert on the device, whatever the budget and whichever experts
 * are resident.
 *
 * The device slots are a cache of hot experts. Which experts they hold is
 * decided between passes from the routing counts the cache observes (those
 * of every moevk_layer_forward, and of a recorded pass when its statistics
 * are read with moevk_layer_read_stats): each expert's score decays by
 * half every MOEVK_CACHE_HALF_LIFE passes and grows by the rows routed to
 * it; a host expert replaces the lowest-scoring unpinned resident one only
 * when its score is over MOEVK_CACHE_HYSTERESIS times that one's (plus one
 * row), at most max(1, S / 4) experts a pass, so the cache does not thrash.
 * A promotion decided at the start of a pass sends its victim back to host
 * memory at once and records the copy of the newcomer into the slot after
 * that pass's expert stage (forward or recorded: the copies go into the
 * same command buffer, so a host that records a layer into its frame needs
 * nothing else); nothing in that pass waits for the copy, and the newcomer
 * reads from its slot from the next pass on. Recorded passes must be
 * submitted in the order they were recorded (the workspace rule above), as
 * the slot tables they set follow that order.
 *
 * Everything here is per layer; a layer without the flag has no host copy
 * and these calls report all experts resident. */
#define MOEVK_CACHE_HALF_LIFE 8
#define MOEVK_CACHE_HYSTERESIS 1.5

typedef struct moevk_cache_stats {
    uint64_t device_weight_bytes; /* all of the layer's device weight memory  */
    uint64_t host_weight_bytes;   /* its host-visible expert copies            */
    uint64_t host_imported_bytes; /* of those: the caller's memory, imported   */
    uint64_t expert_device_bytes; /* of device_weight_bytes: the device slots  */
    uint32_t device_slots;        /* S                                         */
    uint32_t resident_experts;    /* experts in the device slots now           */
    uint64_t passes;              /* passes whose routing the cache observed   */
    uint64_t hits, misses;        /* over those: routed rows whose expert was
                                   * on the device / in host memory            */
    uint64_t promotions;          /* experts copied to the device              */
    uint64_t evictions;           /* experts whose slot another one took       */
    uint64_t bytes_moved;         /* bytes the promotions copied               */
} moevk_cache_stats;

MOEVK_API moevk_status moevk_layer_cache_stats(const moevk_layer *layer,
                                               moevk_cache_stats *stats);
/* resident[e] = 1 when expert e is in a device slot for the next pass
 * recorded (num_experts bytes), else 0. */
MOEVK_API moevk_status moevk_layer_cache_resident(const moevk_layer *layer, uint8_t *resident);
/* pin = 1: expert stays on the device (copied there at the next pass if it
 * is not); at most S experts pinned. pin = 0: back under the policy. */
MOEVK_API moevk_status moevk_layer_cache_pin(moevk_layer *layer, uint32_t expert, int pin);
/* Copy these experts to the device at the next pass (an engine that knows
 * its next routing), evicting the lowest-scoring unpinned ones; at most S,
 * the first ones first. */
MOEVK_API moevk_status moevk_layer_cache_prefetch(moevk_layer *layer, const uint32_t *experts,
                                                  uint32_t count);

/* ---- Stages on their own --------------------------------------------------
 * For engines that fuse differently: each call runs one part of the forward
 * pass synchronously on caller tensors, with the layer's weights (and its
 * scratch for intermediate results). Index tensors are MOEVK_DTYPE_I32.
 * Routing decisions given by the caller (ids) are checked on the host: each
 * id must be in 0..E-1 and distinct within its token. */

/* x [T, H] f32 -> ids [T, k] i32, weights [T, k] f32 (router + routing). */
MOEVK_API moevk_status moevk_layer_route(moevk_layer *layer, const moevk_tensor *x,
                                         moevk_tensor *ids, moevk_tensor *weights);
/* ids [T, k] -> row_of [T, k] i32 (the assignment's row in expert-sorted
 * order, -1 when capacity drops it) and counts [E] i32 (admitted rows per
 * expert; expert e's rows follow those of experts 0..e-1). */
MOEVK_API moevk_status moevk_layer_permute(moevk_layer *layer, const moevk_tensor *ids,
                                           moevk_tensor *row_of, moevk_tensor *counts);
/* Expert FFNs: expert_out [T*k, H] f32, row r holding the routed expert's
 * output for the assignment whose row_of is r (rows past the admitted total
 * are left untouched). */
MOEVK_API moevk_status moevk_layer_experts(moevk_layer *layer, const moevk_tensor *x,
                                           const moevk_tensor *ids, moevk_tensor *expert_out);
/* y [T, H] = sum_j weights[t, j] * expert_out[row_of[t, j]] in slot order
 * (rows of -1 skipped; unweighted with MOEVK_LAYER_WEIGHTS_ON_INPUT), plus
 * the layer's output_bias. Shared experts are not included. */
MOEVK_API moevk_status moevk_layer_combine(moevk_layer *layer, const moevk_tensor *expert_out,
                                           const moevk_tensor *row_of,
                                           const moevk_tensor *weights, moevk_tensor *y);
/* moevk_layer_combine with the shared experts on x [T, H] in the same sum,
 * in forward's order: y_t = (the routed slots in slot order) + the (gated)
 * shared outputs times shared_scale + output_bias. Given the expert rows
 * that forward computes (under MOEVK_LAYER_BATCH_INVARIANT, rows computed
 * by any layer holding the same experts), y is bitwise forward's y.
 * expert_out [T*k, H] f32 is indexed by row_of as in moevk_layer_combine.
 * One expert chunk of tokens at most (MOEVK_ERROR_LIMIT_EXCEEDED beyond:
 * call it on fewer tokens; every token's result is its own). */
MOEVK_API moevk_status moevk_layer_combine_shared(moevk_layer *layer, const moevk_tensor *x,
                                                  const moevk_tensor *expert_out,
                                                  const moevk_tensor *row_of,
                                                  const moevk_tensor *weights, moevk_tensor *y);
/* y [T, H] = the sum of the shared experts' outputs (gated when the layer
 * has a shared gate; with shared_sink by the gates of the tokens' routing,
 * which this call computes again), times shared_scale; zeros when the
 * layer has none. */
MOEVK_API moevk_status moevk_layer_shared_experts(moevk_layer *layer, const moevk_tensor *x,
                                                  moevk_tensor *y);

/* ---- Expert parallelism ---------------------------------------------------
 * R ranks (processes, or threads of one process), each with its own context
 * and its own tokens, each holding a subset of the routed experts; together
 * they compute, on every rank's tokens, bitwise the y that one layer over
 * all ranks' tokens (concatenated in rank order) computes under
 * MOEVK_LAYER_BATCH_INVARIANT. Design: docs/architecture.md, "Expert
 * parallelism".
 *
 * The ranks talk through a transport: a table of collective exchanges that
 * every rank calls in the same order. Each returns a status (and writes a
 * message to err, n bytes, naming what failed); a transport waits a bounded
 * time and returns MOEVK_ERROR_TIMEOUT rather than hang when a peer does not
 * arrive. The library brings a thread transport (moevk_thread_group); the
 * optional libmoevk-mpi brings one over MPI (moevk/moevk_mpi.h). */
typedef struct moevk_transport {
    uint32_t rank, size; /* this rank, of size ranks (rank < size)            */
    void *user;          /* passed to every function                          */
    /* Every rank sends send[d] to rank d and receives recv[s] from rank s
     * (size values each): the row counts of an exchange. */
    moevk_status (*alltoall_counts)(void *user, const uint64_t *send, uint64_t *recv, char *err,
                                    size_t n);
    /* Every rank sends send_bytes[d] bytes to rank d, the blocks for ranks
     * 0, 1, ... back to back in send, and receives recv_bytes[s] bytes from
     * each rank s, back to back in recv in rank order. */
    moevk_status (*alltoallv)(void *user, const void *send, const uint64_t *send_bytes,
                              void *recv, const uint64_t *recv_bytes, char *err, size_t n);
    /* recv [size * bytes] = every rank's `bytes` bytes of send, in rank
     * order (small arrays: per-expert counts, statistics' partial sums). */
    moevk_status (*allgather)(void *user, const void *send, uint64_t bytes, void *recv, char *err,
                              size_t n);
    /* Error agreement: every rank gives its own status; on return
     * *failed_rank is the lowest rank whose status is an error (size when
     * none failed) and *failed_status its status, the same on every rank. */
    moevk_status (*agree)(void *user, moevk_status mine, uint32_t *failed_rank,
                          moevk_status *failed_status, char *err, size_t n);
} moevk_transport;

/* R threads of one process, one rank each: create the group once, give
 * each thread the transport of its rank. A collective waits at most
 * timeout_ms (0 = 60000) for the other ranks; after a timeout the group is
 * broken and every later call on it fails at once (MOEVK_ERROR_TIMEOUT).
 * The group must outlive every use of its transports. */
typedef struct moevk_thread_group moevk_thread_group;
MOEVK_API moevk_status moevk_thread_group_create(uint32_t size, uint32_t timeout_ms,
                                                 moevk_thread_group **out);
MOEVK_API void moevk_thread_group_destroy(moevk_thread_group *group);
MOEVK_API moevk_status moevk_thread_group_transport(moevk_thread_group *group, uint32_t rank,
                                                    moevk_transport *out);

typedef struct moevk_ep_layer moevk_ep_layer;

typedef struct moevk_ep_desc {
    /* The whole layer, as for moevk_layer_create. Of the routed experts'
     * host arrays only this rank's experts are read (per-expert pointers
     * of other ranks' experts may be NULL; an input_perm covers every
     * expert, as validation reads it). MOEVK_LAYER_BATCH_INVARIANT is
     * implied (but for expert choice, below). Identity experts (num_zero_experts) have no weights and run
     * on every rank for its own tokens; with MOEVK_LAYER_WEIGHTS_ON_INPUT
     * the rows are scaled on the host before they are sent (the f32
     * product the device computes). Expert-choice routing chooses over
     * every rank's tokens (every rank's probabilities go to every rank);
     * such a layer cannot be batch invariant, so its y is the single
     * device's bit for bit where that one runs the portable kernels (no
     * matrix units: cooperative matrices change the expert rows' rounding). */
    const moevk_layer_desc *layer;
    const moevk_transport *transport; /* copied; its user must outlive the layer */
    /* Optional [num_experts - num_zero_experts]: the rank that holds each
     * FFN expert (each rank's experts must be consecutive, in rank order).
     * NULL: the contiguous split of the N = num_experts - num_zero_experts
     * FFN experts, rank r holding floor(r N / R) .. floor((r + 1) N / R) -
     * 1 (uneven when R does not divide N). The
     * router and the shared experts are on every rank (replicated: each
     * rank runs them on its own tokens). Every rank must give the same. */
    const uint32_t *expert_rank;
} moevk_ep_desc;

/* Collective: every rank of the transport calls it (with the same layer
 * description); an error on any rank makes it fail on every rank. */
MOEVK_API moevk_status moevk_ep_layer_create(moevk_context *ctx, const moevk_ep_desc *desc,
                                             moevk_ep_layer **out);
MOEVK_API void moevk_ep_layer_destroy(moevk_ep_layer *layer);
/* The experts this rank holds: first .. first + count - 1. */
MOEVK_API void moevk_ep_layer_experts(const moevk_ep_layer *layer, uint32_t *first,
                                      uint32_t *count);

/* Collective. y [T, H] = the layer on this rank's x [T, H] (host f32; T may
 * be 0 and differ between ranks): bitwise rows T0 .. T0 + T - 1 of the
 * batch-invariant layer's y over every rank's tokens in rank order (T0 the
 * tokens of the lower ranks). Capacity is that of the whole pass (C =
 * ceil(cf * T_all * k / E)). stats (optional) are those of the whole pass,
 * the same on every rank: counts and drops exact, the losses over every
 * token in double precision from the f32 router logits. An error on any
 * rank (a bad x, a device failure, a transport timeout) makes every rank
 * return an error, naming the rank that failed. */
MOEVK_API moevk_status moevk_ep_layer_forward(moevk_ep_layer *layer, uint32_t T, const float *x,
                                              float *y, moevk_routing_stats *stats);

/* What this rank's last forward spent: wall-clock milliseconds of local
 * device work (route, experts, combine, with the host staging) and of the
 * exchanges (the transport's calls), the rows and bytes it sent to and
 * received from the other ranks (its own rows excluded), and the rows its
 * experts ran. */
typedef struct moevk_ep_times {
    double compute_ms, exchange_ms;
    uint64_t bytes_sent, bytes_received;
    uint64_t rows_sent, rows_received, expert_rows;
} moevk_ep_times;
MOEVK_API moevk_status moevk_ep_layer_times(const moevk_ep_layer *layer, moevk_ep_times *times);

/* ---- Device ceilings -------------------------------------------------------
 * Measured, not looked up: what moevk's own kernels reach on this device. */

/* Read bandwidth in GB/s (1e9 bytes/s) of a streaming vec4 read kernel over
 * a buffer of `bytes` (0 = 1 GiB on a GPU, 64 MiB on a CPU device, capped by
 * the device's buffer range); the median of several timed runs. Needs
 * timestamps (MOEVK_ERROR_UNSUPPORTED otherwise). */
MOEVK_API moevk_status moevk_measure_bandwidth(moevk_context *ctx, uint64_t bytes,
                                               double *gb_per_s);
/* Matrix-multiply throughput in TFLOP/s of moevk's expert GEMM kernel on a
 * dense n x n x n problem with weights of `dtype` (n = 0: 4096 on a GPU, 512
 * on a CPU device); the median of several timed runs. */
MOEVK_API moevk_status moevk_measure_matmul(moevk_context *ctx, moevk_dtype dtype, uint32_t n,
                                            double *tflops);

#ifdef __cplusplus
}
#endif
#endif /* MOEVK_H */
