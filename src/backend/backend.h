/*
 * The backend seam: one table of implementations of the MoE layer of
 * docs/semantics.md (the Vulkan library, the CPU reference, the CUDA
 * backends), which the tool (moevk run, check, bench, demo) and the tests
 * drive alike. Internal to the tool and the tests; not installed.
 *
 * A backend is a const table of function pointers. Its device is opened
 * once (open) and holds any number of layers (create); a layer runs
 * forward passes on host arrays. Adding a backend: a folder with the
 * implementation and a `const mvk_backend` of it, and one entry in the
 * table (src/backend/backend.c); see docs/architecture.md.
 *
 * Conventions of every function:
 *  - errors return a moevk_status and write a message to (err, n) when
 *    err is not NULL (it names the call that failed; the status is not
 *    repeated in it);
 *  - out-pointers are set to NULL on failure;
 *  - NULL handles are accepted by close, destroy and memory;
 *  - a device and its layers belong to one thread at a time.
 */
#ifndef MOEVK_BACKEND_H
#define MOEVK_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "moevk/moevk.h"

/* mvk_backend.flags */
enum mvk_backend_flag {
    /* The double-precision CPU reference: the oracle. Its forward fills
     * mvk_backend_out.near_tie; bench times it by one forward pass and
     * leaves out work it would take minutes on. */
    MVK_BACKEND_REFERENCE = 1u << 0,
    /* With 16-bit weights the activations are rounded to that dtype (as a
     * bf16/f16 model runs): y is NOT within the contract tolerance of
     * docs/semantics.md; the harness allows 4 units of that rounding. */
    MVK_BACKEND_ROUNDS_ACTIVATIONS = 1u << 1,
};

/* Options of open. Fields a backend has no use for are ignored. */
typedef struct mvk_backend_opts {
    const char *device; /* vulkan: device index or name (NULL: MOEVK_DEVICE, else the best) */
    int validate;       /* vulkan: the Khronos validation layer (counted by problems) */
    /* A device of the backend's own kind to use instead of opening one;
     * close leaves it alive. vulkan: a moevk_context *. */
    void *native;
    /* vulkan: run every expert on one kernel path (1 + the path: 1
     * skinny, 2 16-row tiles, 3 64-row tiles; 0 by row count), and the
     * 64-row tiles on emulated matrix units (1), as `moevk check --path`
     * does to cover each variant. */
    uint32_t force_path;
    int matrix_units_emulated;
} mvk_backend_opts;

/* What open found. */
typedef struct mvk_backend_info {
    char desc[800];         /* one line: "llvmpipe (LLVM 15.0.6, 256 bits) (llvmpipe)" */
    char name[256];         /* the device's name */
    char driver[520];       /* its driver and version */
    double device_bytes;    /* memory the weights are copied into; 0: unknown */
    const char *shares_host; /* that memory is system RAM: "a CPU device", "an integrated
                                GPU"; NULL otherwise */
    int uploads;            /* create copies the weights to the device (else the host
                               arrays are read at every pass) */
    int timestamps;         /* stage times are measured (else they are 0) */
    int cpu_driver;         /* a CPU implementation of a GPU API: times are no GPU figures */
    uint32_t flags;         /* MVK_BACKEND_* this open device adds to the backend's own
                               (vulkan: ROUNDS_ACTIVATIONS where matrix units run f16) */
} mvk_backend_info;

/* Options of create. */
typedef struct mvk_layer_opts {
    uint32_t reserve_tokens; /* scratch for this many tokens now (0: grown on demand) */
    /* Weight copies that bench rotates over so that no pass finds the
     * weights in the last-level cache (0 or 1: one). Backends that do not
     * rotate make one. */
    uint32_t copies;
    double copy_budget;      /* no further copy beyond this many device bytes (0: no limit) */
} mvk_layer_opts;

/* Outputs of forward; every pointer is optional (NULL: not wanted). */
typedef struct mvk_backend_out {
    float *y;                 /* [T * H] */
    uint32_t *ids;            /* [T * k] expert ids, in score order */
    float *weights;           /* [T * k] routing weights */
    int32_t *rows;            /* [T * k] row in expert-sorted order, -1 when dropped */
    uint8_t *near_tie;        /* [T] only MVK_BACKEND_REFERENCE writes it */
    moevk_routing_stats *stats; /* the pass's statistics (tokens_per_expert [E] optional) */
    /* The statistics again, as read back on their own (vulkan:
     * moevk_layer_read_stats); other backends copy stats. */
    moevk_routing_stats *stats_read;
    double *stage_ms;         /* [MOEVK_STAGE_COUNT] time per moevk_stage (0 if unmeasured) */
    double *total_ms;         /* the whole pass (the stages; the reference: wall clock) */
    /* What the pass launched (vulkan: moevk_layer_pass_info); backends
     * that cannot say leave it zero. */
    moevk_pass_info *pass_info;
} mvk_backend_out;

/* What bench measured. */
typedef struct mvk_backend_times {
    double total_ms;                    /* median of the timed passes */
    double stage_ms[MOEVK_STAGE_COUNT]; /* stages of that pass (or per-stage medians) */
    moevk_pass_info work;               /* what a pass launched (vulkan; else zero) */
} mvk_backend_times;

typedef struct mvk_backend_memory {
    double weights; /* device bytes of one copy of the weights */
    double scratch; /* device bytes of the scratch reserved so far */
    double peak;    /* device bytes at T tokens: every copy, scratch, x and y */
    uint32_t copies;
    /* under a device-memory budget (MOEVK_LAYER_VRAM_BUDGET; vulkan): the
     * host-visible expert copy and the cache of the first copy, as
     * moevk_layer_cache_stats says; all zero elsewhere */
    double host_weights;
    moevk_cache_stats cache;
    int budgeted;
} mvk_backend_memory;

typedef struct mvk_backend {
    const char *name;    /* "vulkan", "cpu", "cuda-ref", ... */
    const char *alias;   /* another name it answers to, or NULL */
    const char *summary; /* one line for --help */
    uint32_t flags;      /* MVK_BACKEND_* */

    /* 1 when this build and machine can run it, msg getting the device's
     * description; else 0, msg getting the reason. Cheap; opens nothing. */
    int (*available)(char *msg, size_t n);
    moevk_status (*open)(const mvk_backend_opts *opts, void **dev, mvk_backend_info *info,
                         char *err, size_t n);
    void (*close)(void *dev);
    /* Validation messages so far (NULL: the backend has none). */
    uint32_t (*problems)(void *dev);
    /* The device's ceilings: read bandwidth (gb_s not NULL) and the matmul
     * rate of weight dtype dt (tflops not NULL). NULL: not measurable. */
    moevk_status (*measure)(void *dev, moevk_dtype dt, double *gb_s, double *tflops, char *err,
                            size_t n);

    /* desc is validated; its host arrays must stay valid and unchanged
     * until destroy (a backend may read them at every pass). opts may be
     * NULL. */
    moevk_status (*create)(void *dev, const moevk_layer_desc *desc, const mvk_layer_opts *opts,
                           void **layer, char *err, size_t n);
    void (*destroy)(void *layer);
    /* One pass, synchronous, on host arrays: x [T * H], T >= 1. */
    moevk_status (*forward)(void *layer, uint32_t T, const float *x, const mvk_backend_out *out,
                            char *err, size_t n);
    /* `warmup` untimed then `iters` (>= 1) timed passes on x [T * H], with
     * everything resident on the device. NULL: time one forward instead. */
    moevk_status (*bench)(void *layer, uint32_t T, const float *x, uint32_t warmup,
                          uint32_t iters, mvk_backend_times *times, char *err, size_t n);
    void (*memory)(void *layer, uint32_t T, mvk_backend_memory *m);
} mvk_backend;

/* The backend of a name or alias; NULL if there is none. */
const mvk_backend *mvk_backend_find(const char *name);
/* The i-th backend of the table; NULL past the end. */
const mvk_backend *mvk_backend_at(uint32_t i);
/* The reference backend (MVK_BACKEND_REFERENCE), the oracle of --check. */
const mvk_backend *mvk_backend_reference(void);
/* The names of the table joined by sep, by value for messages:
 * printf("%s", mvk_backend_list(", ").s) prints "vulkan, cpu, cuda-ref, ...". */
typedef struct mvk_backend_names {
    char s[256];
} mvk_backend_names;
mvk_backend_names mvk_backend_list(const char *sep);

/* For implementations: copy statistics (with tokens_per_expert [E] when
 * both have one) from one struct to another (either may be NULL). */
void mvk_backend_copy_stats(const moevk_routing_stats *from, moevk_routing_stats *to, uint32_t E);
/* For implementations: printf into (err, n) when err is not NULL. */
void mvk_backend_err(char *err, size_t n, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
