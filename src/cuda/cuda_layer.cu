/*
 * Host side of the CUDA backends (API in moevk_cuda.h): device checks,
 * weight validation and upload, scratch, the stage sequence of one pass
 * with CUDA-event timings, and the cuBLAS expert GEMMs.
 *
 * Each kind of expert matrix (gate/up and down rows of the routed and of
 * the shared experts) has its own format (MOEVK_LAYER_MATRIX_DTYPES, else
 * weight_dtype for all four). Matrices of a block format are uploaded
 * packed, as given. The reference kernels decode them where they read
 * them; the cuBLAS backends dequantise one expert matrix at a time into a
 * scratch of one matrix just before its GEMM, never the whole layer.
 *
 * cuBLAS is not a link-time dependency: cublas_v2.h is included for its
 * types only and the few functions used are looked up with dlsym in a
 * libcublas opened at run time (see load_cublas).
 *
 * The CUDA runtime is linked statically (libcudart_static.a), so a binary
 * built with CUDA starts everywhere; without a driver or device, the first
 * runtime call fails and every entry point returns MOEVK_ERROR_NO_DEVICE.
 */
#include <cublas_v2.h> /* types only: nothing of libcublas is linked */
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "formats.h"
#include "ref/ref.h"
#include "moevk_cuda.h"

using namespace mvkcu;

/* ---- messages and status codes ----------------------------------------- */

static void set_err(char *err, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t n, const char *fmt, ...)
{
    if (!err || n == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

static bool is_no_device_error(cudaError_t e)
{
    switch (e) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorStubLibrary:
    case cudaErrorCallRequiresNewerDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorInvalidDevice:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorInitializationError:
        return true;
    default:
        return false;
    }
}

static moevk_status status_of(cudaError_t e)
{
    if (is_no_device_error(e))
        return MOEVK_ERROR_NO_DEVICE;
    switch (e) {
    case cudaErrorMemoryAllocation:
        return MOEVK_ERROR_OUT_OF_DEVICE_MEMORY;
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorInvalidPtx:
        return MOEVK_ERROR_UNSUPPORTED;
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
        return MOEVK_ERROR_DEVICE_LOST;
    default:
        return MOEVK_ERROR_INTERNAL;
    }
}

static moevk_status cuda_fail(char *err, size_t n, cudaError_t e, const char *what)
{
    set_err(err, n, "%s failed: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
    return status_of(e);
}

/* Evaluate a CUDA call; on error return its moevk_status with a message
 * naming the call (the enclosing function has err/err_size). */
#define CK(call)                                                                              \
    do {                                                                                      \
        cudaError_t ck_e_ = (call);                                                           \
        if (ck_e_ != cudaSuccess)                                                             \
            return cuda_fail(err, err_size, ck_e_, #call);                                    \
    } while (0)

/* A moevk_status-returning call. */
#define CKS(call)                                                                             \
    do {                                                                                      \
        moevk_status cks_s_ = (call);                                                         \
        if (cks_s_ != MOEVK_SUCCESS)                                                          \
            return cks_s_;                                                                    \
    } while (0)

/* ---- device --------------------------------------------------------------- */

/* The device to use (0, or MOEVK_CUDA_DEVICE), checked: a driver, a
 * device, and compute capability >= 9.0 (the kernels are sm_90 SASS and
 * compute_90 PTX). desc (optional) receives its description. */
static moevk_status pick_device(int *dev_out, char *err, size_t err_size, char *desc,
                                size_t desc_size)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        int drv = 0, rt = 0;
        cudaDriverGetVersion(&drv);
        cudaRuntimeGetVersion(&rt);
        char hint[160] = "";
        if (drv == 0)
            snprintf(hint, sizeof hint, "; no NVIDIA driver found (libcuda.so.1)");
        else if (drv < rt)
            snprintf(hint, sizeof hint,
                     "; the NVIDIA driver supports CUDA %d.%d, this build's runtime is %d.%d",
                     drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
        set_err(err, err_size, "no CUDA device: cudaGetDeviceCount: %s (%s)%s",
                cudaGetErrorName(e), cudaGetErrorString(e), hint);
        cudaGetLastError(); /* clear a non-sticky error */
        return is_no_device_error(e) ? MOEVK_ERROR_NO_DEVICE : status_of(e);
    }
    if (count <= 0) {
        set_err(err, err_size, "no CUDA device: the driver reports 0 devices");
        return MOEVK_ERROR_NO_DEVICE;
    }
    int dev = 0;
    const char *env = getenv("MOEVK_CUDA_DEVICE");
    if (env && *env) {
        char *end = NULL;
        long v = strtol(env, &end, 10);
        if (*end || v < 0 || v >= count) {
            set_err(err, err_size, "no CUDA device: MOEVK_CUDA_DEVICE=%s is not a device index "
                    "(0..%d)", env, count - 1);
            return MOEVK_ERROR_NO_DEVICE;
        }
        dev = (int)v;
    }
    cudaDeviceProp prop;
    e = cudaGetDeviceProperties(&prop, dev);
    if (e != cudaSuccess)
        return cuda_fail(err, err_size, e, "cudaGetDeviceProperties");
    if (prop.major < 9) {
        set_err(err, err_size,
                "CUDA device %d (%s) has compute capability %d.%d; this build's kernels need "
                "9.0 or newer (sm_90 + compute_90 PTX)", dev, prop.name, prop.major,
                prop.minor);
        return MOEVK_ERROR_UNSUPPORTED;
    }
    if (desc && desc_size) {
        int drv = 0;
        cudaDriverGetVersion(&drv);
        snprintf(desc, desc_size, "%s (sm_%d%d, %d SMs, %.1f GiB), CUDA driver %d.%d",
                 prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                 (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), drv / 1000,
                 drv % 1000 / 10);
    }
    *dev_out = dev;
    return MOEVK_SUCCESS;
}

extern "C" int mvk_cuda_device_available(char *msg, size_t msg_size)
{
    int dev = 0;
    return pick_device(&dev, msg, msg_size, msg, msg_size) == MOEVK_SUCCESS;
}

extern "C" const char *mvk_cuda_backend_name(mvk_cuda_backend backend)
{
    switch (backend) {
    case MVK_CUDA_REF: return "ref";
    case MVK_CUDA_CUBLAS: return "cublas";
    case MVK_CUDA_CUBLAS_F32: return "cublas-f32";
    }
    return "unknown";
}

/* ---- cuBLAS, loaded at run time ------------------------------------------- */

typedef cublasStatus_t (*pfn_create)(cublasHandle_t *);
typedef cublasStatus_t (*pfn_destroy)(cublasHandle_t);
typedef cublasStatus_t (*pfn_set_stream)(cublasHandle_t, cudaStream_t);
typedef cublasStatus_t (*pfn_gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int,
                                      int, int, const void *, const void *, cudaDataType, int,
                                      const void *, cudaDataType, int, const void *, void *,
                                      cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
typedef const char *(*pfn_status_string)(cublasStatus_t);

struct cublas_api {
    void *lib;
    pfn_create create;
    pfn_destroy destroy;
    pfn_set_stream set_stream;
    pfn_gemm_ex gemm_ex;
    pfn_status_string status_string; /* optional */
};

static moevk_status load_cublas(cublas_api *api, char *err, size_t err_size)
{
    static const char *const names[] = {
        "libcublas.so.13",
        "libcublas.so.12",
        "libcublas.so",
        "/usr/local/cuda/lib64/libcublas.so.13",
        "/usr/local/cuda/lib64/libcublas.so.12",
        "/usr/local/cuda/lib64/libcublas.so",
    };
    memset(api, 0, sizeof *api);
    /* RTLD_NODELETE: the (large) library stays loaded after the last layer
     * closes it, so creating layers one after another stays cheap */
    const int flags = RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE;
    const char *env = getenv("MOEVK_CUBLAS"); /* a path to try first */
    char last[256] = "";
    if (env && *env) {
        api->lib = dlopen(env, flags);
        if (!api->lib)
            snprintf(last, sizeof last, "%s", dlerror());
    }
    for (size_t i = 0; !api->lib && i < sizeof names / sizeof names[0]; i++) {
        api->lib = dlopen(names[i], flags);
        if (!api->lib)
            snprintf(last, sizeof last, "%s", dlerror());
    }
    if (!api->lib) {
        set_err(err, err_size,
                "cuBLAS not found: tried $MOEVK_CUBLAS, libcublas.so.13, libcublas.so.12, "
                "libcublas.so and /usr/local/cuda/lib64 (last error: %s)", last);
        return MOEVK_ERROR_UNSUPPORTED;
    }
    api->create = (pfn_create)dlsym(api->lib, "cublasCreate_v2");
    api->destroy = (pfn_destroy)dlsym(api->lib, "cublasDestroy_v2");
    api->set_stream = (pfn_set_stream)dlsym(api->lib, "cublasSetStream_v2");
    api->gemm_ex = (pfn_gemm_ex)dlsym(api->lib, "cublasGemmEx");
    api->status_string = (pfn_status_string)dlsym(api->lib, "cublasGetStatusString");
    if (!api->create || !api->destroy || !api->set_stream || !api->gemm_ex) {
        set_err(err, err_size, "cuBLAS library lacks cublasCreate_v2, cublasDestroy_v2, "
                "cublasSetStream_v2 or cublasGemmEx");
        dlclose(api->lib);
        api->lib = NULL;
        return MOEVK_ERROR_UNSUPPORTED;
    }
    return MOEVK_SUCCESS;
}

/* ---- the layer -------------------------------------------------------------- */

/* One stack of experts on the device: gate/up and down in their formats
 * as held (fmt), and the dtype their cuBLAS GEMMs read (gemm: f32, f16 or
 * bf16; a matrix whose held format differs is dequantised into it first). */
struct dev_ffn {
    void *gate, *up, *down;
    float *bg, *bu, *bd;
    WFormat fmt[2];     /* 0 gate/up, 1 down */
    moevk_dtype gemm[2];
};

struct mvk_cuda_layer {
    moevk_layer_desc d;     /* defaults applied; host pointers cleared */
    mvk_cuda_backend backend;
    int device;
    int cublas;             /* a cuBLAS backend */
    uint32_t shared_ffn;    /* 0 without shared experts */
    cudaStream_t stream;
    cudaEvent_t ev[MOEVK_STAGE_COUNT + 1];
    int events;             /* created events */

    /* weights */
    void *router_w, *sgate_w;
    float *router_b, *corr_b, *out_b;
    float *rin_s, *ein_w, *ew_s; /* router_input_scale, expert_norm_weight [H]; [E] */
    int rin, ein;                /* the router's / the experts' rows are normed */
    dev_ffn ex, sh;
    uint64_t weight_bytes;

    /* scratch, for up to cap_T tokens */
    uint32_t cap_T;
    uint64_t scratch_bytes;
    float *x, *y, *logits, *sg_logits, *wts, *score, *gscore, *tok;
    uint8_t *elig;
    uint32_t *ids, *totals, *counts, *offsets, *row_token, *row_expert;
    int32_t *row_of;
    unsigned long long *dropped;
    double *prob, *loss;
    float *hbuf, *ubuf, *obuf, *sh_o, *sh_acc;
    float *xs;           /* MOEVK_LAYER_WEIGHTS_ON_INPUT: the scaled expert inputs */
    float *xr, *xe;      /* the router's and the experts' rows (input norms) */
    void *xq, *hq;
    void *dq;            /* cuBLAS: one expert matrix dequantised for its GEMM */
    uint32_t *h_offsets; /* pinned host, E + 1 */

    cublas_api cb;
    cublasHandle_t handle;
};

/* Bytes of an element of f32, f16 or bf16. */
static size_t dt_size(moevk_dtype dt)
{
    return dt == MOEVK_DTYPE_F32 ? 4 : 2;
}

/* Bytes of `elems` elements (whole blocks) of any weight format. */
static size_t fmt_bytes(moevk_dtype dt, size_t elems)
{
    return (size_t)mvk_format_row_bytes(dt, elems);
}

static bool is_block_format(moevk_dtype dt)
{
    const mvk_format *f = mvk_format_get(dt);
    return f && f->block_elems > 1;
}

static cudaDataType cuda_type(moevk_dtype dt)
{
    return dt == MOEVK_DTYPE_F16 ? CUDA_R_16F : dt == MOEVK_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/* The host formats of a stack's gate/up (0) and down (1) rows. */
static moevk_dtype host_format(const moevk_layer_desc *d, const moevk_expert_weights *w, int m)
{
    if (!(d->flags & MOEVK_LAYER_MATRIX_DTYPES))
        return d->weight_dtype;
    return m == 0 ? w->gate_up_dtype : w->down_dtype;
}

/* How a matrix of host format `src` is held on the device and what its
 * GEMMs read. Block formats stay packed. cuda-cublas-f32 widens f16/bf16
 * once at create and runs every GEMM on f32; cuda-cublas runs f32/f16/bf16
 * in their own dtype and block formats in f16 (as llama.cpp's cuBLAS path
 * dequantises to f16). */
static void plan_format(mvk_cuda_backend backend, moevk_dtype src, WFormat *held,
                        moevk_dtype *gemm)
{
    const bool blocks = is_block_format(src);
    const moevk_dtype h = backend == MVK_CUDA_CUBLAS_F32 && !blocks ? MOEVK_DTYPE_F32 : src;
    const mvk_format *f = mvk_format_get(h);
    held->dt = h;
    held->block_elems = f->block_elems;
    held->block_bytes = f->block_bytes;
    *gemm = backend == MVK_CUDA_CUBLAS_F32 ? MOEVK_DTYPE_F32
            : blocks                       ? MOEVK_DTYPE_F16
                                           : src;
}

static moevk_status dev_alloc(void **p, size_t bytes, uint64_t *counter, const char *what,
                              char *err, size_t err_size)
{
    *p = NULL;
    if (bytes == 0)
        return MOEVK_SUCCESS;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        set_err(err, err_size, "cudaMalloc of %zu bytes (%s) failed: %s", bytes, what,
                cudaGetErrorString(e));
        return status_of(e);
    }
    *counter += bytes;
    return MOEVK_SUCCESS;
}

/* Upload `count` matrices of `elems` elements, given contiguously or as
 * per-expert pointers: as they are (src == dst: any format, block formats
 * packed) or widened from f16/bf16 to f32 (dst f32) by the reference
 * decoder. */
static moevk_status upload_stack(mvk_cuda_layer *L, const void *contig, const void *const *per,
                                 uint32_t count, size_t elems, moevk_dtype src, moevk_dtype dst,
                                 void **out, const char *what, char *err, size_t err_size)
{
    const size_t sbytes = fmt_bytes(src, elems), dbytes = fmt_bytes(dst, elems);
    CKS(dev_alloc(out, (size_t)count * dbytes, &L->weight_bytes, what, err, err_size));
    float *tmp = NULL;
    if (src != dst) {
        tmp = (float *)malloc(elems * sizeof(float) + 1);
        if (!tmp) {
            set_err(err, err_size, "out of host memory converting %s", what);
            return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
        }
    }
    moevk_status st = MOEVK_SUCCESS;
    for (uint32_t e = 0; e < count && st == MOEVK_SUCCESS; e++) {
        const void *sp = contig ? (const void *)((const char *)contig + (size_t)e * sbytes)
                                : (per ? per[e] : NULL);
        if (!sp) {
            set_err(err, err_size, "%s of expert %u is NULL", what, e);
            st = MOEVK_ERROR_INVALID_ARGUMENT;
            break;
        }
        if (tmp) {
            mvk_format_decode(src, sp, 0, elems, tmp);
            sp = tmp;
        }
        cudaError_t ce = cudaMemcpy((char *)*out + (size_t)e * dbytes, sp, dbytes,
                                    cudaMemcpyHostToDevice);
        if (ce != cudaSuccess)
            st = cuda_fail(err, err_size, ce, "cudaMemcpy (weights)");
    }
    free(tmp);
    return st;
}

static moevk_status upload_raw(mvk_cuda_layer *L, const void *src, size_t bytes, void **out,
                               const char *what, char *err, size_t err_size)
{
    *out = NULL;
    if (!src)
        return MOEVK_SUCCESS;
    CKS(dev_alloc(out, bytes, &L->weight_bytes, what, err, err_size));
    CK(cudaMemcpy(*out, src, bytes, cudaMemcpyHostToDevice));
    return MOEVK_SUCCESS;
}

static moevk_status upload_ffn(mvk_cuda_layer *L, const moevk_layer_desc *desc,
                               const moevk_expert_weights *w, uint32_t count, uint32_t ffn,
                               dev_ffn *out, const char *set, char *err, size_t err_size)
{
    const uint32_t H = L->d.hidden;
    const size_t elems = (size_t)ffn * H;
    const moevk_dtype gu = host_format(desc, w, 0), dn = host_format(desc, w, 1);
    plan_format(L->backend, gu, &out->fmt[0], &out->gemm[0]);
    plan_format(L->backend, dn, &out->fmt[1], &out->gemm[1]);
    char what[64];
    if (moevk_activation_is_gated(L->d.activation)) {
        snprintf(what, sizeof what, "%s.gate", set);
        CKS(upload_stack(L, w->gate, w->gate_experts, count, elems, gu, out->fmt[0].dt,
                         &out->gate, what, err, err_size));
    }
    snprintf(what, sizeof what, "%s.up", set);
    CKS(upload_stack(L, w->up, w->up_experts, count, elems, gu, out->fmt[0].dt, &out->up, what,
                     err, err_size));
    snprintf(what, sizeof what, "%s.down", set);
    CKS(upload_stack(L, w->down, w->down_experts, count, elems, dn, out->fmt[1].dt, &out->down,
                     what, err, err_size));
    if (moevk_activation_is_gated(L->d.activation))
        CKS(upload_raw(L, w->gate_bias, sizeof(float) * count * ffn, (void **)&out->bg,
                       "gate bias", err, err_size));
    CKS(upload_raw(L, w->up_bias, sizeof(float) * count * ffn, (void **)&out->bu, "up bias", err,
                   err_size));
    CKS(upload_raw(L, w->down_bias, sizeof(float) * count * H, (void **)&out->bd, "down bias",
                   err, err_size));
    return MOEVK_SUCCESS;
}

static void free_ffn(dev_ffn *f)
{
    cudaFree(f->gate);
    cudaFree(f->up);
    cudaFree(f->down);
    cudaFree(f->bg);
    cudaFree(f->bu);
    cudaFree(f->bd);
    memset(f, 0, sizeof *f);
}

/* The scratch pointers, for allocation and release in one place. */
#define SCRATCH_LIST(X)                                                                       \
    X(x) X(y) X(logits) X(sg_logits) X(wts) X(score) X(gscore) X(tok) X(elig) X(ids)          \
    X(totals) X(counts) X(offsets) X(row_token) X(row_expert) X(row_of) X(dropped) X(prob)    \
    X(loss) X(hbuf) X(ubuf) X(obuf) X(sh_o) X(sh_acc) X(xs) X(xr) X(xe) X(xq) X(hq) X(dq)

static void free_scratch(mvk_cuda_layer *L)
{
#define FREE_ONE(name)                                                                        \
    cudaFree((void *)L->name);                                                                \
    L->name = NULL;
    SCRATCH_LIST(FREE_ONE)
#undef FREE_ONE
    L->cap_T = 0;
    L->scratch_bytes = 0;
}

static moevk_status reserve(mvk_cuda_layer *L, uint32_t T, char *err, size_t err_size)
{
    if (T <= L->cap_T)
        return MOEVK_SUCCESS;
    const moevk_layer_desc *d = &L->d;
    const size_t H = d->hidden, E = d->num_experts, K = moevk_routing_slots(d), F = d->ffn;
    const size_t NS = d->num_shared, Fs = L->shared_ffn;
    if ((uint64_t)T * K > (L->cublas ? (uint64_t)INT_MAX : (uint64_t)UINT32_MAX)) {
        set_err(err, err_size, "T x routing slots = %u x %zu assignments exceed the %s", T, K,
                L->cublas ? "int range of cuBLAS" : "32-bit row indexing");
        return MOEVK_ERROR_LIMIT_EXCEEDED;
    }
    free_scratch(L);
    const size_t TH = (size_t)T * H, TE = (size_t)T * E, TK = (size_t)T * K;
    /* expert rows: at most T k (C E under expert choice, whose E slots per
     * token are mostly empty) */
    const size_t R = (size_t)moevk_ref_assignments(d, T);
    size_t rowsF = R * F;
    if (NS && (size_t)T * Fs > rowsF)
        rowsF = (size_t)T * Fs;
    const bool cb = L->cublas != 0;
    /* cuBLAS: gathered rows and hidden activations in the GEMM dtype of the
     * gate/up (xq) and down (hq) matrices of either stack (the larger), and
     * one expert matrix dequantised for its GEMM where a held format is not
     * its GEMM dtype */
    size_t xsz = 0, hsz = 0, dq = 0;
    for (int st = 0; cb && st < (NS ? 2 : 1); st++) {
        const dev_ffn *f = st ? &L->sh : &L->ex;
        const size_t elems = (st ? Fs : F) * H;
        xsz = dt_size(f->gemm[0]) > xsz ? dt_size(f->gemm[0]) : xsz;
        hsz = dt_size(f->gemm[1]) > hsz ? dt_size(f->gemm[1]) : hsz;
        for (int m = 0; m < 2; m++)
            if (f->fmt[m].dt != f->gemm[m] && elems * dt_size(f->gemm[m]) > dq)
                dq = elems * dt_size(f->gemm[m]);
    }
    struct { void **p; size_t bytes; const char *name; } want[] = {
        {(void **)&L->x, TH * 4, "x"},
        {(void **)&L->y, TH * 4, "y"},
        {(void **)&L->logits, TE * 4, "logits"},
        {(void **)&L->sg_logits, (size_t)T * NS * 4, "shared gate logits"},
        {(void **)&L->wts, TK * 4, "weights"},
        {(void **)&L->score, TE * 4, "route scores"},
        {(void **)&L->gscore, TE * 4, "group scores"},
        {(void **)&L->tok, (size_t)T * 3 * 4, "token stats"},
        {(void **)&L->elig, TE, "eligibility"},
        {(void **)&L->ids, TK * 4, "ids"},
        {(void **)&L->totals, E * 4, "totals"},
        {(void **)&L->counts, E * 4, "counts"},
        {(void **)&L->offsets, (E + 1) * 4, "offsets"},
        {(void **)&L->row_token, R * 4, "row tokens"},
        {(void **)&L->row_expert, R * 4, "row experts"},
        {(void **)&L->row_of, TK * 4, "rows"},
        {(void **)&L->dropped, 8, "dropped"},
        {(void **)&L->prob, E * 8, "expert probabilities"},
        {(void **)&L->loss, 3 * 8, "losses"},
        {(void **)&L->hbuf, rowsF * 4, "hidden activations"},
        {(void **)&L->ubuf, cb ? rowsF * 4 : 0, "up projections"},
        {(void **)&L->obuf, R * H * 4, "expert outputs"},
        {(void **)&L->xs, (L->d.flags & MOEVK_LAYER_WEIGHTS_ON_INPUT) ? R * H * 4 : 0,
         "scaled expert inputs"},
        {(void **)&L->xr, L->rin ? TH * 4 : 0, "router input rows"},
        {(void **)&L->xe, L->ein ? TH * 4 : 0, "expert input rows"},
        {(void **)&L->sh_o, cb && NS ? TH * 4 : 0, "shared expert output"},
        {(void **)&L->sh_acc, NS ? TH * 4 : 0, "shared expert sum"},
        /* the routed rows, or the shared experts' T dense rows (more when
         * expert choice's C E assignments are fewer than the tokens) */
        {(void **)&L->xq, cb ? (R > T ? R : T) * H * xsz : 0, "gathered rows"},
        {(void **)&L->hq, cb ? rowsF * hsz : 0, "hidden activations (GEMM dtype)"},
        {&L->dq, dq, "dequantised expert matrix"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        moevk_status st = dev_alloc(want[i].p, want[i].bytes, &L->scratch_bytes, want[i].name,
                                    err, err_size);
        if (st != MOEVK_SUCCESS) {
            free_scratch(L);
            return st;
        }
    }
    L->cap_T = T;
    return MOEVK_SUCCESS;
}

extern "C" void mvk_cuda_layer_destroy(mvk_cuda_layer *L)
{
    if (!L)
        return;
    cudaSetDevice(L->device);
    if (L->stream)
        cudaStreamSynchronize(L->stream);
    if (L->handle && L->cb.destroy)
        L->cb.destroy(L->handle);
    free_scratch(L);
    free_ffn(&L->ex);
    free_ffn(&L->sh);
    cudaFree(L->router_w);
    cudaFree(L->sgate_w);
    cudaFree(L->router_b);
    cudaFree(L->corr_b);
    cudaFree(L->out_b);
    cudaFree(L->rin_s);
    cudaFree(L->ein_w);
    cudaFree(L->ew_s);
    if (L->h_offsets)
        cudaFreeHost(L->h_offsets);
    for (int i = 0; i < L->events; i++)
        cudaEventDestroy(L->ev[i]);
    if (L->stream)
        cudaStreamDestroy(L->stream);
    if (L->cb.lib)
        dlclose(L->cb.lib);
    cudaGetLastError(); /* leave no error behind */
    free(L);
}

static moevk_status create(const moevk_layer_desc *desc, mvk_cuda_backend backend,
                           mvk_cuda_layer *L, char *err, size_t err_size)
{
    CKS(pick_device(&L->device, err, err_size, NULL, 0));
    CK(cudaSetDevice(L->device));
    if (L->cublas)
        CKS(load_cublas(&L->cb, err, err_size));

    moevk_layer_desc *d = &L->d;
    *d = *desc;
    if (!d->n_group)
        d->n_group = 1;
    if (!d->topk_group)
        d->topk_group = d->n_group;
    if (d->topk_group > d->n_group)
        d->topk_group = d->n_group;
    if (d->routed_scaling_factor == 0.0f)
        d->routed_scaling_factor = 1.0f;
    if (d->shared_scale == 0.0f)
        d->shared_scale = 1.0f;
    if (d->swiglu_alpha == 0.0f)
        d->swiglu_alpha = 1.702f;
    if (d->swiglu_limit == 0.0f)
        d->swiglu_limit = 7.0f;
    if (d->softcap_gate == 0.0f)
        d->softcap_gate = 4.0f;
    if (d->softcap_up == 0.0f)
        d->softcap_up = 25.0f;
    if (d->shared_swiglu_limit == 0.0f)
        d->shared_swiglu_limit = d->swiglu_limit;
    L->shared_ffn = d->num_shared ? (d->shared_ffn ? d->shared_ffn : d->ffn) : 0;
    d->shared_ffn = L->shared_ffn;
    (void)backend; /* L->backend: each matrix's plan in upload_ffn */

    CK(cudaStreamCreateWithFlags(&L->stream, cudaStreamNonBlocking));
    for (; L->events < MOEVK_STAGE_COUNT + 1; L->events++)
        CK(cudaEventCreate(&L->ev[L->events]));
    CK(cudaMallocHost((void **)&L->h_offsets, sizeof(uint32_t) * (d->num_experts + 1)));

    const size_t E = d->num_experts, H = d->hidden;
    CKS(upload_raw(L, desc->router_weight, E * H * dt_size(d->router_dtype), &L->router_w,
                   "router_weight", err, err_size));
    CKS(upload_raw(L, desc->router_bias, E * 4, (void **)&L->router_b, "router_bias", err,
                   err_size));
    CKS(upload_raw(L, desc->output_bias, H * 4, (void **)&L->out_b, "output_bias", err,
                   err_size));
    if (d->routing != MOEVK_ROUTING_TOPK_SOFTMAX && d->routing != MOEVK_ROUTING_SPARSEMIXER)
        CKS(upload_raw(L, desc->correction_bias, E * 4, (void **)&L->corr_b, "correction_bias",
                       err, err_size));
    CKS(upload_raw(L, desc->router_input_scale, H * 4, (void **)&L->rin_s, "router_input_scale",
                   err, err_size));
    CKS(upload_raw(L, desc->expert_norm_weight, H * 4, (void **)&L->ein_w, "expert_norm_weight",
                   err, err_size));
    CKS(upload_raw(L, desc->expert_weight_scale, E * 4, (void **)&L->ew_s, "expert_weight_scale",
                   err, err_size));
    L->rin = moevk_ref_has_router_input(desc);
    L->ein = moevk_ref_has_expert_input(desc);
    CKS(upload_ffn(L, desc, &desc->experts, d->num_experts - d->num_zero_experts, d->ffn, &L->ex,
                   "experts", err, err_size));
    if (d->num_shared) {
        CKS(upload_ffn(L, desc, &desc->shared, d->num_shared, L->shared_ffn, &L->sh, "shared",
                       err, err_size));
        CKS(upload_raw(L, desc->shared_gate, (size_t)d->num_shared * H *
                       dt_size(d->router_dtype), &L->sgate_w, "shared_gate", err, err_size));
    }
    /* the host arrays are not ours to keep */
    d->router_weight = NULL;
    d->router_bias = d->correction_bias = NULL;
    d->output_bias = NULL;
    d->shared_gate = NULL;
    d->router_input_scale = d->expert_norm_weight = d->expert_weight_scale = NULL;
    memset(&d->experts, 0, sizeof d->experts);
    memset(&d->shared, 0, sizeof d->shared);
    /* the formats per matrix as given (f16/bf16 widened by cuda-cublas-f32
     * are still given as f16/bf16) */
    d->flags |= MOEVK_LAYER_MATRIX_DTYPES;
    d->experts.gate_up_dtype = host_format(desc, &desc->experts, 0);
    d->experts.down_dtype = host_format(desc, &desc->experts, 1);
    d->shared.gate_up_dtype = d->num_shared ? host_format(desc, &desc->shared, 0)
                                            : d->experts.gate_up_dtype;
    d->shared.down_dtype = d->num_shared ? host_format(desc, &desc->shared, 1)
                                         : d->experts.down_dtype;

    if (L->cublas) {
        cublasStatus_t cs = L->cb.create(&L->handle);
        if (cs != CUBLAS_STATUS_SUCCESS) {
            L->handle = NULL;
            set_err(err, err_size, "cublasCreate failed: %s (status %d)",
                    L->cb.status_string ? L->cb.status_string(cs) : "?", (int)cs);
            return cs == CUBLAS_STATUS_ALLOC_FAILED ? MOEVK_ERROR_OUT_OF_DEVICE_MEMORY
                                                    : MOEVK_ERROR_INTERNAL;
        }
        cs = L->cb.set_stream(L->handle, L->stream);
        if (cs != CUBLAS_STATUS_SUCCESS) {
            set_err(err, err_size, "cublasSetStream failed (status %d)", (int)cs);
            return MOEVK_ERROR_INTERNAL;
        }
    }
    CK(cudaDeviceSynchronize());
    return MOEVK_SUCCESS;
}

/* Blocks no kernel may read (mvk_format_validate: MXFP4's E8M0 scale of
 * 255, NaN), refused before anything is uploaded, naming the matrix, the
 * expert and the block, as the Vulkan layer does. Missing matrices are left
 * to the upload, which names them. */
static moevk_status check_blocks(const moevk_layer_desc *d, char *err, size_t err_size)
{
    const bool gated = moevk_activation_is_gated(d->activation) != 0;
    for (int s = 0; s < 2; s++) {
        const moevk_expert_weights *w = s ? &d->shared : &d->experts;
        const uint32_t count = s ? d->num_shared : d->num_experts - d->num_zero_experts;
        const uint32_t F = s ? (d->shared_ffn ? d->shared_ffn : d->ffn) : d->ffn;
        for (int m = gated ? 0 : 1; m < 3; m++) {
            const mvk_format *f = mvk_format_get(host_format(d, w, m < 2 ? 0 : 1));
            if (!f || f->block_elems == 1)
                continue;
            const uint64_t nblocks = (uint64_t)F * d->hidden / f->block_elems;
            const uint64_t bytes = nblocks * f->block_bytes;
            const void *whole = m == 0 ? w->gate : m == 1 ? w->up : w->down;
            const void *const *per = m == 0 ? w->gate_experts
                                     : m == 1 ? w->up_experts
                                              : w->down_experts;
            for (uint32_t e = 0; e < count; e++) {
                const void *p = whole ? (const void *)((const char *)whole + e * bytes)
                                      : per ? per[e] : NULL;
                uint64_t bad = 0;
                if (p && !mvk_format_validate(f->dtype, p, nblocks, &bad)) {
                    set_err(err, err_size,
                            "%s.%s of expert %u: %s block %llu is not valid%s", s ? "shared"
                            : "experts", m == 0 ? "gate" : m == 1 ? "up" : "down", e, f->name,
                            (unsigned long long)bad,
                            f->dtype == MOEVK_DTYPE_MXFP4 ? " (an E8M0 scale of 255 is NaN)"
                                                          : "");
                    return MOEVK_ERROR_INVALID_ARGUMENT;
                }
            }
        }
    }
    return MOEVK_SUCCESS;
}

extern "C" moevk_status mvk_cuda_layer_create(const moevk_layer_desc *desc,
                                              mvk_cuda_backend backend, mvk_cuda_layer **out,
                                              char *err, size_t err_size)
{
    set_err(err, err_size, "%s", "");
    if (!out) {
        set_err(err, err_size, "out is NULL");
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    *out = NULL;
    if (!desc) {
        set_err(err, err_size, "desc is NULL");
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    char why[512];
    moevk_status st = moevk_layer_desc_check(desc, why, sizeof why);
    if (st != MOEVK_SUCCESS) {
        set_err(err, err_size, "invalid layer description: %s: %s", moevk_status_string(st),
                why);
        return st;
    }
    if ((unsigned)backend >= MVK_CUDA_BACKEND_COUNT) {
        set_err(err, err_size, "backend = %d is not a mvk_cuda_backend value", (int)backend);
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    if (desc->flags & MOEVK_LAYER_QUANTIZE) {
        set_err(err, err_size,
                "flags has MOEVK_LAYER_QUANTIZE (quantize_dtype = %s): the CUDA layer takes "
                "weights already in their formats (the backend table quantises them first, "
                "with mvk_layer_desc_quantized)",
                moevk_dtype_name(desc->quantize_dtype));
        return MOEVK_ERROR_UNSUPPORTED;
    }
    const uint32_t sf = desc->num_shared ? (desc->shared_ffn ? desc->shared_ffn : desc->ffn) : 0;
    if (backend != MVK_CUDA_REF &&
        (desc->hidden > INT_MAX || desc->ffn > INT_MAX || sf > INT_MAX)) {
        set_err(err, err_size, "hidden/ffn beyond the int range of cuBLAS");
        return MOEVK_ERROR_LIMIT_EXCEEDED;
    }
    CKS(check_blocks(desc, err, err_size));
    mvk_cuda_layer *L = (mvk_cuda_layer *)calloc(1, sizeof *L);
    if (!L) {
        set_err(err, err_size, "out of host memory");
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    L->backend = backend;
    L->cublas = backend != MVK_CUDA_REF;
    st = create(desc, backend, L, err, err_size);
    if (st != MOEVK_SUCCESS) {
        mvk_cuda_layer_destroy(L);
        return st;
    }
    *out = L;
    return MOEVK_SUCCESS;
}

extern "C" void mvk_cuda_layer_memory(const mvk_cuda_layer *L, uint64_t *weight_bytes,
                                      uint64_t *scratch_bytes)
{
    if (weight_bytes)
        *weight_bytes = L ? L->weight_bytes : 0;
    if (scratch_bytes)
        *scratch_bytes = L ? L->scratch_bytes : 0;
}

/* ---- one pass ------------------------------------------------------------- */

/* C[n, m] (row-major, ldc) = B[n, k] . A[m, k]^T, both row-major in dtype
 * dt (f32, f16 or bf16) with leading dimensions lda, ldb; f32 output and
 * accumulation. In cuBLAS's column-major terms: C^T = op(A)^T B^T, i.e.
 * transa = T (A is k x m column-major), transb = N. */
static moevk_status gemm(mvk_cuda_layer *L, moevk_dtype dt, int m, int n, int k, const void *A,
                         int lda, const void *B, int ldb, float *C, int ldc, const char *what,
                         char *err, size_t err_size)
{
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType t = cuda_type(dt);
    cublasStatus_t cs = L->cb.gemm_ex(L->handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, A, t,
                                      lda, B, t, ldb, &zero, C, CUDA_R_32F, ldc,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (cs != CUBLAS_STATUS_SUCCESS) {
        set_err(err, err_size, "cublasGemmEx (%s, m=%d n=%d k=%d) failed: %s (status %d)",
                what, m, n, k, L->cb.status_string ? L->cb.status_string(cs) : "?", (int)cs);
        return cs == CUBLAS_STATUS_ALLOC_FAILED ? MOEVK_ERROR_OUT_OF_DEVICE_MEMORY
                                                : MOEVK_ERROR_INTERNAL;
    }
    return MOEVK_SUCCESS;
}

static FfnWeights ffn_weights(const mvk_cuda_layer *L, const dev_ffn *f, uint32_t F)
{
    FfnWeights w;
    w.gu = f->fmt[0];
    w.dn = f->fmt[1];
    w.H = L->d.hidden;
    w.F = F;
    /* the shared experts' own activation (MOEVK_LAYER_SHARED_ACTIVATION);
     * swiglu_softcap's caps travel as alpha and limit */
    const bool own = f == &L->sh && (L->d.flags & MOEVK_LAYER_SHARED_ACTIVATION);
    const moevk_activation act = own ? L->d.shared_activation : L->d.activation;
    w.act = (int)act;
    w.alpha = act == MOEVK_ACT_SWIGLU_SOFTCAP ? L->d.softcap_gate : L->d.swiglu_alpha;
    w.limit = act == MOEVK_ACT_SWIGLU_SOFTCAP ? L->d.softcap_up
              : own                           ? L->d.shared_swiglu_limit
                                              : L->d.swiglu_limit;
    w.gate = f->gate;
    w.up = f->up;
    w.down = f->down;
    w.bg = f->bg;
    w.bu = f->bu;
    w.bd = f->bd;
    return w;
}

static uint32_t capacity(const moevk_layer_desc *d, uint32_t T)
{
    return moevk_ref_capacity(d, T);
}

/* Expert e's matrix (`elems` elements) of a stack, of kind m (0 gate/up,
 * 1 down), as a GEMM operand in f->gemm[m]: in place, or dequantised into
 * L->dq, which holds it until the next call (stream order keeps the GEMM
 * that reads it before the dequantisation that overwrites it). */
static moevk_status gemm_matrix(mvk_cuda_layer *L, const dev_ffn *f, int m, const void *stack,
                                uint32_t e, size_t elems, const void **out, char *err,
                                size_t err_size)
{
    const WFormat &w = f->fmt[m];
    const char *p = (const char *)stack + (size_t)e * fmt_bytes(w.dt, elems);
    if (w.dt == f->gemm[m]) {
        *out = p;
        return MOEVK_SUCCESS;
    }
    CK(dequantize(L->stream, w.dt, w.block_elems, w.block_bytes, p, elems, f->gemm[m], L->dq));
    *out = L->dq;
    return MOEVK_SUCCESS;
}

/* The cuBLAS expert GEMMs of one stack over per-expert row ranges given on
 * the host (h_off, count+1 entries; NULL = one range 0..dense_rows of
 * expert `dense_expert`). which: 0 = gate/up (B = xq -> hbuf/ubuf),
 * 1 = down (B = hq -> out). */
static moevk_status expert_gemms(mvk_cuda_layer *L, const dev_ffn *f, uint32_t F,
                                 const uint32_t *h_off, uint32_t count, uint32_t dense_rows,
                                 uint32_t dense_expert, int which, float *out, char *err,
                                 size_t err_size)
{
    const int H = (int)L->d.hidden;
    const moevk_dtype gdt = f->gemm[which];
    const size_t gsz = dt_size(gdt);
    const size_t elems = (size_t)F * H; /* of one expert's matrix */
    const bool gated = moevk_activation_is_gated(L->d.activation) != 0;
    uint32_t e0 = h_off ? 0 : dense_expert, e1 = h_off ? count : dense_expert + 1;
    const void *A = NULL;
    for (uint32_t e = e0; e < e1; e++) {
        uint32_t r0 = h_off ? h_off[e] : 0;
        uint32_t n = h_off ? h_off[e + 1] - h_off[e] : dense_rows;
        if (n == 0)
            continue;
        if (which == 0) {
            const char *xb = (const char *)L->xq + (size_t)r0 * H * gsz;
            if (gated) {
                CKS(gemm_matrix(L, f, 0, f->gate, e, elems, &A, err, err_size));
                CKS(gemm(L, gdt, (int)F, (int)n, H, A, H, xb, H, L->hbuf + (size_t)r0 * F,
                         (int)F, "gate", err, err_size));
            }
            CKS(gemm_matrix(L, f, 0, f->up, e, elems, &A, err, err_size));
            CKS(gemm(L, gdt, (int)F, (int)n, H, A, H, xb, H, L->ubuf + (size_t)r0 * F, (int)F,
                     "up", err, err_size));
        } else {
            const char *hb = (const char *)L->hq + (size_t)r0 * F * gsz;
            CKS(gemm_matrix(L, f, 1, f->down, e, elems, &A, err, err_size));
            CKS(gemm(L, gdt, H, (int)n, (int)F, A, (int)F, hb, (int)F, out + (size_t)r0 * H, H,
                     "down", err, err_size));
        }
    }
    return MOEVK_SUCCESS;
}

/* Enqueue one forward pass on L->x for T tokens (scratch reserved), with an
 * event before the first stage and after each stage. */
static moevk_status run_pass(mvk_cuda_layer *L, uint32_t T, char *err, size_t err_size)
{
    const moevk_layer_desc *d = &L->d;
    const uint32_t H = d->hidden, E = d->num_experts, K = moevk_routing_slots(d);
    const uint32_t NS = d->num_shared;
    const uint32_t NF = E - d->num_zero_experts; /* FFN experts; the rest are identity */
    const uint32_t Fs = L->shared_ffn;
    cudaStream_t s = L->stream;
    const FfnWeights exw = ffn_weights(L, &L->ex, d->ffn);
    const FfnWeights shw = ffn_weights(L, &L->sh, Fs);
    Rows routed;
    routed.row_token = L->row_token;
    routed.row_expert = L->row_expert;
    /* the FFN experts' rows (identity experts' rows come after them) */
    routed.dev_rows = L->offsets + NF;
    routed.max_rows = (uint32_t)moevk_ref_assignments(d, T);
    routed.fixed_expert = 0;

    CK(cudaEventRecord(L->ev[0], s));

    /* the input norms: the router and the experts read their own rows */
    const float *xr = L->x, *xe = L->x;
    if (L->rin) {
        CK(input_norm(s, L->x, T, H, d->router_norm_eps, L->rin_s,
                      d->router_input_factor != 0.0f ? d->router_input_factor : 1.0f, L->xr));
        xr = L->xr;
    }
    if (L->ein) {
        CK(input_norm(s, L->x, T, H, d->expert_norm_eps, L->ein_w, 1.0f, L->xe));
        xe = L->xe;
    }

    /* router logits, and the shared-expert gate's */
    CK(router_logits(s, d->router_dtype, xr, L->router_w, L->router_b, T, H, E, L->logits));
    /* (shared_sink's gates are router rows: from the router's input) */
    if (NS && L->sgate_w)
        CK(router_logits(s, d->router_dtype, d->shared_sink ? xr : xe, L->sgate_w, NULL, T, H,
                         NS, L->sg_logits));
    CK(cudaEventRecord(L->ev[MOEVK_STAGE_ROUTER + 1], s));

    RouteParams rp;
    rp.T = T;
    rp.E = E;
    rp.K = K;
    rp.routing = (int)d->routing;
    rp.norm = d->norm_topk_prob;
    rp.n_group = d->n_group;
    rp.topk_group = d->topk_group;
    rp.scale = d->routed_scaling_factor;
    rp.corr = L->corr_b;
    /* the rules of moevk_ref_grouped / moevk_ref_selects_on_probs (ref.h) */
    const bool logit_mode =
        d->routing == MOEVK_ROUTING_TOPK_SOFTMAX || d->routing == MOEVK_ROUTING_SPARSEMIXER;
    rp.grouped = !logit_mode && d->n_group > 1 && d->topk_group < d->n_group;
    rp.sel_logits = d->select_on_logits && !logit_mode;
    rp.sel_probs = d->routing == MOEVK_ROUTING_SOFTMAX_TOPK && !rp.sel_logits &&
                   (L->corr_b || rp.grouped);
    rp.group_max = d->group_score == MOEVK_GROUP_MAX;
    rp.norm_p = d->norm_p;
    rp.norm_min = d->norm_min;
    rp.norm_eps = d->norm_eps;
    rp.softcap = d->router_softcap;
    rp.jitter_eps = d->jitter_eps;
    rp.score_fn = (int)d->score_fn;
    rp.sink = d->shared_sink ? L->sg_logits : NULL;
    rp.n_sink = d->shared_sink ? NS : 0;
    rp.escale = L->ew_s;
    CK(route(s, rp, L->logits, L->score, L->gscore, L->elig, L->ids, L->wts));
    if (d->routing == MOEVK_ROUTING_EXPERT_CHOICE)
        CK(expert_choice(s, L->score, T, E, moevk_ref_expert_choice_capacity(d, T),
                         d->routed_scaling_factor, L->ids, L->wts));
    CK(cudaEventRecord(L->ev[MOEVK_STAGE_ROUTE + 1], s));

    CK(permute(s, L->ids, T, K, E, capacity(d, T), L->totals, L->counts, L->offsets,
               L->dropped, L->row_of, L->row_token, L->row_expert));
    if (L->cublas) {
        /* Per-expert cuBLAS calls need each expert's row range on the host:
         * this vendor baseline copies the offsets back and waits (a
         * synchronisation inside the pass, counted in the permute stage). */
        CK(cudaMemcpyAsync(L->h_offsets, L->offsets, sizeof(uint32_t) * (E + 1),
                           cudaMemcpyDeviceToHost, s));
        CK(cudaStreamSynchronize(s));
    }
    CK(cudaEventRecord(L->ev[MOEVK_STAGE_PERMUTE + 1], s));

    /* weights on the input: the experts read the scaled rows in row order */
    const bool on_input = (d->flags & MOEVK_LAYER_WEIGHTS_ON_INPUT) != 0;
    const float *xin = xe;
    Rows up_rows = routed;
    if (on_input) {
        CK(scale_rows(s, L->row_of, L->wts, xe, T, H, K, NULL, 0, 0, L->xs));
        xin = L->xs;
        up_rows.row_token = NULL;
    }
    if (!L->cublas) {
        CK(ffn_up(s, exw, up_rows, xin, L->hbuf));
        CK(cudaEventRecord(L->ev[MOEVK_STAGE_EXPERTS_UP + 1], s));
        CK(ffn_down(s, exw, routed, L->hbuf, L->obuf, 0, NULL, 0, 0, 0));
        CK(cudaEventRecord(L->ev[MOEVK_STAGE_EXPERTS_DOWN + 1], s));
    } else {
        CK(gather_convert(s, L->ex.gemm[0], up_rows, xin, H, L->xq));
        CKS(expert_gemms(L, &L->ex, d->ffn, L->h_offsets, NF, 0, 0, 0, NULL, err, err_size));
        CK(activate(s, L->ex.gemm[1], exw, routed, L->hbuf, L->ubuf, L->hq));
        CK(cudaEventRecord(L->ev[MOEVK_STAGE_EXPERTS_UP + 1], s));
        CKS(expert_gemms(L, &L->ex, d->ffn, L->h_offsets, NF, 0, 0, 1, L->obuf, err, err_size));
        if (L->ex.bd)
            CK(add_row_bias(s, routed, L->ex.bd, H, L->obuf));
        CK(cudaEventRecord(L->ev[MOEVK_STAGE_EXPERTS_DOWN + 1], s));
    }
    /* identity experts: their rows of o are x (w x with weights on the input) */
    if (NF < E)
        CK(scale_rows(s, L->row_of, L->wts, xe, T, H, K, L->ids, NF, !on_input, L->obuf));

    /* shared experts: sh_acc = sum_i gate_i * expert_i(x), in i order */
    if (NS) {
        const float *gl = L->sgate_w ? L->sg_logits : NULL;
        if (L->cublas) {
            Rows dense = {NULL, NULL, NULL, T, 0};
            CK(gather_convert(s, L->sh.gemm[0], dense, xe, H, L->xq));
            for (uint32_t i = 0; i < NS; i++) {
                dense.fixed_expert = i;
                CKS(expert_gemms(L, &L->sh, Fs, NULL, NS, T, i, 0, NULL, err, err_size));
                CK(activate(s, L->sh.gemm[1], shw, dense, L->hbuf, L->ubuf, L->hq));
                CKS(expert_gemms(L, &L->sh, Fs, NULL, NS, T, i, 1, L->sh_o, err, err_size));
                CK(shared_accumulate(s, L->sh_o, L->sh.bd ? L->sh.bd + (size_t)i * H : NULL, T,
                                     H, i == 0, gl, NS, i, d->shared_sink, L->sh_acc));
            }
        } else {
            for (uint32_t i = 0; i < NS; i++) {
                Rows dense = {NULL, NULL, NULL, T, i};
                CK(ffn_up(s, shw, dense, xe, L->hbuf));
                CK(ffn_down(s, shw, dense, L->hbuf, L->sh_acc, i == 0 ? 1 : 2, gl, NS, i,
                            d->shared_sink));
            }
        }
    }
    CK(cudaEventRecord(L->ev[MOEVK_STAGE_SHARED + 1], s));

    CK(combine(s, L->row_of, L->wts, L->obuf, NS ? L->sh_acc : NULL, T, H, K, on_input,
               d->shared_scale, L->out_b, d->drop_renorm_eps,
               d->routed_scaling_factor != 0.0f ? d->routed_scaling_factor : 1.0f, L->y));
    CK(cudaEventRecord(L->ev[MOEVK_STAGE_COMBINE + 1], s));

    CK(stats(s, L->logits, L->totals, T, E, (double)moevk_ref_assignments(d, T), L->tok,
             L->prob, L->loss));
    CK(cudaEventRecord(L->ev[MOEVK_STAGE_STATS + 1], s));
    return MOEVK_SUCCESS;
}

/* Stage times of the last completed pass (its last event has completed). */
static moevk_status read_times(mvk_cuda_layer *L, double *stage_ms, double *total_ms, char *err,
                               size_t err_size)
{
    float ms;
    for (int i = 0; stage_ms && i < MOEVK_STAGE_COUNT; i++) {
        CK(cudaEventElapsedTime(&ms, L->ev[i], L->ev[i + 1]));
        stage_ms[i] = ms;
    }
    if (total_ms) {
        CK(cudaEventElapsedTime(&ms, L->ev[0], L->ev[MOEVK_STAGE_COUNT]));
        *total_ms = ms;
    }
    return MOEVK_SUCCESS;
}

static moevk_status begin_call(mvk_cuda_layer *L, uint32_t T, const float *x, char *err,
                               size_t err_size)
{
    set_err(err, err_size, "%s", "");
    if (!L) {
        set_err(err, err_size, "layer is NULL");
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    if (T == 0 || !x) {
        set_err(err, err_size, T == 0 ? "T is 0" : "x is NULL");
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    CK(cudaSetDevice(L->device));
    CKS(reserve(L, T, err, err_size));
    CK(cudaMemcpyAsync(L->x, x, sizeof(float) * T * L->d.hidden, cudaMemcpyHostToDevice,
                       L->stream));
    return MOEVK_SUCCESS;
}

extern "C" moevk_status mvk_cuda_layer_forward(mvk_cuda_layer *L, uint32_t T, const float *x,
                                               float *y, uint32_t *ids, float *weights,
                                               int32_t *rows, moevk_routing_stats *stats_out,
                                               double *stage_ms, double *total_ms, char *err,
                                               size_t err_size)
{
    if (!y) {
        set_err(err, err_size, "y is NULL");
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    CKS(begin_call(L, T, x, err, err_size));
    CKS(run_pass(L, T, err, err_size));
    cudaStream_t s = L->stream;
    const size_t TK = (size_t)T * moevk_routing_slots(&L->d);
    const uint32_t E = L->d.num_experts;
    unsigned long long dropped = 0;
    double loss[3] = {0, 0, 0};
    CK(cudaMemcpyAsync(y, L->y, sizeof(float) * T * L->d.hidden, cudaMemcpyDeviceToHost, s));
    if (ids)
        CK(cudaMemcpyAsync(ids, L->ids, 4 * TK, cudaMemcpyDeviceToHost, s));
    if (weights)
        CK(cudaMemcpyAsync(weights, L->wts, 4 * TK, cudaMemcpyDeviceToHost, s));
    if (rows)
        CK(cudaMemcpyAsync(rows, L->row_of, 4 * TK, cudaMemcpyDeviceToHost, s));
    if (stats_out) {
        if (stats_out->tokens_per_expert)
            CK(cudaMemcpyAsync(stats_out->tokens_per_expert, L->counts, 4 * (size_t)E,
                               cudaMemcpyDeviceToHost, s));
        CK(cudaMemcpyAsync(&dropped, L->dropped, sizeof dropped, cudaMemcpyDeviceToHost, s));
        CK(cudaMemcpyAsync(loss, L->loss, sizeof loss, cudaMemcpyDeviceToHost, s));
    }
    CK(cudaStreamSynchronize(s));
    CK(cudaGetLastError());
    if (stats_out) {
        stats_out->dropped = dropped;
        stats_out->load_balancing_loss = loss[0];
        stats_out->router_z_loss = loss[1];
        stats_out->routing_entropy = loss[2];
    }
    return read_times(L, stage_ms, total_ms, err, err_size);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

static double median(double *v, uint32_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

extern "C" moevk_status mvk_cuda_layer_bench(mvk_cuda_layer *L, uint32_t T, const float *x,
                                             uint32_t warmup, uint32_t iters,
                                             double *stage_ms_median, double *total_ms_median,
                                             char *err, size_t err_size)
{
    if (iters == 0) {
        set_err(err, err_size, "iters is 0");
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    CKS(begin_call(L, T, x, err, err_size));
    CK(cudaStreamSynchronize(L->stream));
    for (uint32_t i = 0; i < warmup; i++)
        CKS(run_pass(L, T, err, err_size));
    CK(cudaStreamSynchronize(L->stream));

    const uint32_t N = MOEVK_STAGE_COUNT + 1; /* the stages, then the total */
    double *t = (double *)malloc(sizeof(double) * N * iters);
    double *col = (double *)malloc(sizeof(double) * iters);
    if (!t || !col) {
        free(t);
        free(col);
        set_err(err, err_size, "out of host memory");
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    moevk_status st = MOEVK_SUCCESS;
    for (uint32_t it = 0; it < iters && st == MOEVK_SUCCESS; it++) {
        st = run_pass(L, T, err, err_size);
        if (st == MOEVK_SUCCESS) {
            cudaError_t e = cudaEventSynchronize(L->ev[MOEVK_STAGE_COUNT]);
            if (e != cudaSuccess)
                st = cuda_fail(err, err_size, e, "cudaEventSynchronize");
        }
        if (st == MOEVK_SUCCESS)
            st = read_times(L, t + (size_t)it * N, t + (size_t)it * N + MOEVK_STAGE_COUNT, err,
                            err_size);
    }
    for (uint32_t c = 0; c < N && st == MOEVK_SUCCESS; c++) {
        for (uint32_t it = 0; it < iters; it++)
            col[it] = t[(size_t)it * N + c];
        double m = median(col, iters);
        if (c < MOEVK_STAGE_COUNT && stage_ms_median)
            stage_ms_median[c] = m;
        if (c == MOEVK_STAGE_COUNT && total_ms_median)
            *total_ms_median = m;
    }
    free(t);
    free(col);
    return st;
}
