/*
 * moevk CUDA backends: the MoE layer of docs/semantics.md on an NVIDIA GPU,
 * for cross-checking the Vulkan path and as a vendor baseline to benchmark
 * against. Not part of the installed moevk API: when the build found nvcc,
 * cuda_backend.c puts the three backends below in the backend table
 * (src/backend/backend.h: "cuda-ref", "cuda-cublas", "cuda-cublas-f32"),
 * through which the tool and the tests use them.
 *
 * Expert weights (routed and shared) may be in any weight format of the
 * table (src/formats.h): f32, f16, bf16 or a ggml block format (Q8_0 ..
 * Q6_K, IQ4_NL, IQ4_XS, MXFP4). Block formats are uploaded packed, as
 * given; they are decoded by the formulas of the C reference
 * (src/format_decode.h), bit for bit the reference's dequantised values.
 * Router and shared-gate weights are f32, f16 or bf16. Each kind of
 * expert matrix has its own format with MOEVK_LAYER_MATRIX_DTYPES (gate/up
 * and down rows of the routed and of the shared experts; weight_dtype for
 * all four otherwise). Quantising at create (MOEVK_LAYER_QUANTIZE) is done
 * by the backend table's entries (cuda_backend.c), on the host as the
 * reference does; mvk_cuda_layer_create itself refuses it.
 *
 * Backends:
 *  - MVK_CUDA_REF: every stage as simple CUDA kernels in f32 (one thread per
 *    output element, loops in a fixed order, no atomics): deterministic,
 *    written for evident correctness, not speed. Block-format weights are
 *    decoded in registers where the expert kernels read them: no
 *    dequantised copy.
 *  - MVK_CUDA_CUBLAS: routing, permutation, combine and statistics as in
 *    MVK_CUDA_REF; the expert (and shared-expert) GEMMs by cuBLAS with
 *    inputs in the weight dtype and f32 accumulation (CUBLAS_COMPUTE_32F).
 *    With f16/bf16 weights the activations (gathered x rows and the hidden
 *    activation) are rounded to that dtype, as a bf16/f16 model does, so the
 *    result is NOT within the contract tolerance of docs/semantics.md (which
 *    assumes f32 activations): expect a relative error of a few 2^-11 (f16)
 *    or 2^-8 (bf16). This is the realistic vendor baseline. Block formats
 *    run their GEMMs in f16, as llama.cpp's cuBLAS path does: each expert
 *    matrix is dequantised to f16, one at a time, into a scratch of one
 *    matrix (ffn or shared_ffn x hidden), right before its GEMM (values
 *    beyond the f16 range become infinite, as there); the activations are
 *    rounded to f16 as for f16 weights.
 *  - MVK_CUDA_CUBLAS_F32: the same cuBLAS pipeline on f32 inputs (16-bit
 *    weights widened to f32 once at create; block formats dequantised to
 *    f32 one matrix at a time as above; no TF32): within the contract
 *    tolerance; checks the pipeline rather than the rounding.
 * cuBLAS is loaded at run time (dlopen of libcublas.so.13/.12/.so), never
 * linked: without it the cuBLAS backends return MOEVK_ERROR_UNSUPPORTED.
 *
 * Every function is safe to call on a machine without an NVIDIA driver or
 * device: it returns MOEVK_ERROR_NO_DEVICE (a device too old for the sm_90
 * kernels of this build: MOEVK_ERROR_UNSUPPORTED) with a message.
 *
 * Error messages go to the caller's (err, err_size) buffer when given.
 * A layer belongs to the thread using it (no internal locking); it uses
 * CUDA device 0, or the device MOEVK_CUDA_DEVICE (a decimal index) names.
 */
#ifndef MOEVK_CUDA_H
#define MOEVK_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "moevk/moevk.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mvk_cuda_layer mvk_cuda_layer;

typedef enum mvk_cuda_backend {
    MVK_CUDA_REF = 0,
    MVK_CUDA_CUBLAS = 1,
    MVK_CUDA_CUBLAS_F32 = 2,
} mvk_cuda_backend;

#define MVK_CUDA_BACKEND_COUNT 3

/* "ref", "cublas", "cublas-f32" ("unknown" otherwise). */
const char *mvk_cuda_backend_name(mvk_cuda_backend backend);

/* 1 when a CUDA device usable by this build exists; msg (optional) gets its
 * description ("NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.2 GiB), CUDA
 * driver 13.0"). 0 otherwise, msg getting the reason. */
int mvk_cuda_device_available(char *msg, size_t msg_size);

/* Validate desc (moevk_layer_desc_validate: rows of the expert matrices
 * must be whole blocks of their formats; MOEVK_LAYER_QUANTIZE is refused
 * with MOEVK_ERROR_UNSUPPORTED) and the weight blocks (an
 * MXFP4 block with an E8M0 scale of 255 is refused, naming the matrix,
 * expert and block), then check the device (and cuBLAS for the cuBLAS
 * backends), and upload every weight to device memory. The desc's host
 * arrays are read only during the call. *out is set to NULL on failure. */
moevk_status mvk_cuda_layer_create(const moevk_layer_desc *desc, mvk_cuda_backend backend,
                                   mvk_cuda_layer **out, char *err, size_t err_size);
/* NULL is a no-op. */
void mvk_cuda_layer_destroy(mvk_cuda_layer *layer);

/* Device bytes of the weights and of the scratch reserved so far (the
 * largest T seen). Either pointer may be NULL. */
void mvk_cuda_layer_memory(const mvk_cuda_layer *layer, uint64_t *weight_bytes,
                           uint64_t *scratch_bytes);

/* One forward pass, synchronous: x and y are host arrays [T*H] (T >= 1).
 * Optional outputs (NULL = not wanted): ids/weights/rows [T*k] (expert id,
 * routing weight, row in expert-sorted order or -1 when dropped, as
 * moevk_layer_read_routing), stats (tokens_per_expert may be NULL),
 * stage_ms [MOEVK_STAGE_COUNT] (GPU time per moevk_stage, from CUDA events)
 * and total_ms (first stage start to last stage end; host<->device copies
 * of x, y and the outputs are outside both). */
moevk_status mvk_cuda_layer_forward(mvk_cuda_layer *layer, uint32_t T, const float *x, float *y,
                                    uint32_t *ids, float *weights, int32_t *rows,
                                    moevk_routing_stats *stats, double *stage_ms,
                                    double *total_ms, char *err, size_t err_size);

/* Benchmark: uploads x [T*H] once, runs `warmup` untimed passes and then
 * `iters` (>= 1) timed passes with x, y and all scratch resident on the
 * device, and reports the median GPU time per stage (stage_ms_median
 * [MOEVK_STAGE_COUNT], optional) and of the whole pass (total_ms_median,
 * optional). The cuBLAS backends copy the per-expert row counts to the host
 * in every pass (a synchronisation, included in the timings as it happens
 * between stages). */
moevk_status mvk_cuda_layer_bench(mvk_cuda_layer *layer, uint32_t T, const float *x,
                                  uint32_t warmup, uint32_t iters, double *stage_ms_median,
                                  double *total_ms_median, char *err, size_t err_size);

#ifdef __cplusplus
}
#endif
#endif /* MOEVK_CUDA_H */
