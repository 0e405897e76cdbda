/*
 * The CUDA backends (moevk_cuda.h) behind the backend interface: three
 * entries of the table, "cuda-ref", "cuda-cublas" and "cuda-cublas-f32",
 * one per mvk_cuda_backend. A device is the implementation chosen; a layer
 * is an mvk_cuda_layer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cuda/moevk_cuda.h"
#include "layer_quantize.h"

typedef struct cuda_dev {
    mvk_cuda_backend impl;
} cuda_dev;

static int cuda_available(char *msg, size_t n)
{
    return mvk_cuda_device_available(msg, n);
}

static moevk_status cuda_open(mvk_cuda_backend impl, void **dev, mvk_backend_info *info,
                              char *err, size_t n)
{
    *dev = NULL;
    char msg[512] = "";
    if (!mvk_cuda_device_available(msg, sizeof msg)) {
        mvk_backend_err(err, n, "%s", msg);
        return MOEVK_ERROR_NO_DEVICE;
    }
    cuda_dev *c = malloc(sizeof *c);
    if (!c) {
        mvk_backend_err(err, n, "out of host memory");
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    c->impl = impl;
    memset(info, 0, sizeof *info);
    snprintf(info->desc, sizeof info->desc, "%s [%s]", msg, mvk_cuda_backend_name(impl));
    snprintf(info->name, sizeof info->name, "%.255s", msg);
    snprintf(info->driver, sizeof info->driver, "CUDA [%s]", mvk_cuda_backend_name(impl));
    info->uploads = 1;
    info->timestamps = 1;
    *dev = c;
    return MOEVK_SUCCESS;
}

#define CUDA_OPEN(fn, impl)                                                                    \
    static moevk_status fn(const mvk_backend_opts *opts, void **dev, mvk_backend_info *info,   \
                           char *err, size_t n)                                                \
    {                                                                                          \
        (void)opts;                                                                            \
        return cuda_open(impl, dev, info, err, n);                                             \
    }
CUDA_OPEN(open_ref, MVK_CUDA_REF)
CUDA_OPEN(open_cublas, MVK_CUDA_CUBLAS)
CUDA_OPEN(open_cublas_f32, MVK_CUDA_CUBLAS_F32)

static void cuda_close(void *dev)
{
    free(dev);
}

typedef struct cuda_layer {
    mvk_cuda_layer *L;
    uint32_t H, E;
} cuda_layer;

static void cuda_destroy(void *layer)
{
    cuda_layer *l = layer;
    if (l)
        mvk_cuda_layer_destroy(l->L);
    free(l);
}

static moevk_status cuda_create(void *dev, const moevk_layer_desc *desc,
                                const mvk_layer_opts *opts, void **layer, char *err, size_t n)
{
    (void)opts; /* one copy; the scratch grows with the largest T seen */
    *layer = NULL;
    if (desc->experts.input_perm || desc->shared.input_perm) {
        mvk_backend_err(err, n, "the CUDA backends do not read input_perm (act-order experts)");
        return MOEVK_ERROR_UNSUPPORTED;
    }
    cuda_layer *l = calloc(1, sizeof *l);
    if (!l) {
        mvk_backend_err(err, n, "out of host memory");
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    /* quantise at create: on the host, as the reference does (the same
     * packed weights), then the formats per matrix it chose */
    moevk_layer_desc q;
    void *storage = NULL;
    moevk_status st = MOEVK_SUCCESS;
    if (desc && (desc->flags & MOEVK_LAYER_QUANTIZE)) {
        char why[512] = "";
        st = moevk_layer_desc_check(desc, why, sizeof why);
        if (st)
            mvk_backend_err(err, n, "invalid layer description: %s: %s",
                            moevk_status_string(st), why);
        else if ((st = mvk_layer_desc_quantized(NULL, desc, &q, &storage)) != MOEVK_SUCCESS)
            mvk_backend_err(err, n,
                            "quantising the expert weights to quantize_dtype = %s at create "
                            "failed: %s (a non-finite host weight, or out of host memory)",
                            moevk_dtype_name(desc->quantize_dtype), moevk_status_string(st));
        desc = &q;
    }
    if (!st)
        st = mvk_cuda_layer_create(desc, ((cuda_dev *)dev)->impl, &l->L, err, n);
    mvk_layer_desc_quantized_free(NULL, storage);
    if (st) {
        free(l);
        return st;
    }
    l->H = desc->hidden;
    l->E = desc->num_experts;
    *layer = l;
    return MOEVK_SUCCESS;
}

static moevk_status cuda_forward(void *layer, uint32_t T, const float *x,
                                 const mvk_backend_out *o, char *err, size_t n)
{
    cuda_layer *l = layer;
    if (!l || !o) {
        mvk_backend_err(err, n, "forward: no %s", l ? "outputs" : "layer");
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    /* the CUDA layer always writes y */
    float *y = o->y ? o->y : malloc(sizeof(float) * ((size_t)T * l->H + 1));
    if (!y) {
        mvk_backend_err(err, n, "out of host memory");
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    moevk_status st = mvk_cuda_layer_forward(l->L, T, x, y, o->ids, o->weights, o->rows,
                                             o->stats, o->stage_ms, o->total_ms, err, n);
    if (!st) /* one source of statistics on CUDA */
        mvk_backend_copy_stats(o->stats, o->stats_read, l->E);
    if (y != o->y)
        free(y);
    return st;
}

static moevk_status cuda_bench(void *layer, uint32_t T, const float *x, uint32_t warmup,
                               uint32_t iters, mvk_backend_times *t, char *err, size_t n)
{
    cuda_layer *l = layer;
    if (!t) {
        mvk_backend_err(err, n, "bench: no times");
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    return mvk_cuda_layer_bench(l ? l->L : NULL, T, x, warmup, iters, t->stage_ms,
                                &t->total_ms, err, n);
}

static void cuda_memory(void *layer, uint32_t T, mvk_backend_memory *m)
{
    cuda_layer *l = layer;
    (void)T; /* x and y of a pass are in the scratch */
    memset(m, 0, sizeof *m);
    if (!l)
        return;
    uint64_t w = 0, s = 0;
    mvk_cuda_layer_memory(l->L, &w, &s);
    m->weights = (double)w;
    m->scratch = (double)s;
    m->peak = (double)w + (double)s;
    m->copies = 1;
}

#define CUDA_BACKEND(nm, al, fn, fl, sum)                                                      \
    {.name = nm, .alias = al, .summary = sum, .flags = fl, .available = cuda_available,         \
     .open = fn, .close = cuda_close, .create = cuda_create, .destroy = cuda_destroy,          \
     .forward = cuda_forward, .bench = cuda_bench, .memory = cuda_memory}

const mvk_backend mvk_backend_cuda_ref =
    CUDA_BACKEND("cuda-ref", "cuda", open_ref, 0,
                 "CUDA: every stage as simple f32 kernels (NVIDIA; cross-check)");
const mvk_backend mvk_backend_cuda_cublas =
    CUDA_BACKEND("cuda-cublas", NULL, open_cublas, MVK_BACKEND_ROUNDS_ACTIVATIONS,
                 "CUDA + cuBLAS GEMMs in the weight dtype, f16 for block formats (the "
                 "vendor baseline)");
const mvk_backend mvk_backend_cuda_cublas_f32 =
    CUDA_BACKEND("cuda-cublas-f32", NULL, open_cublas_f32, 0,
                 "CUDA + cuBLAS GEMMs on f32 inputs (within the contract tolerance)");
