/*
 * CPU emulation of the CUDA backends, for testing their logic on machines
 * without an NVIDIA GPU (CI, developer laptops). Not part of the product:
 * src/cuda/emu/run_tests.sh compiles cuda_kernels.cu and cuda_layer.cu as
 * plain C++ with this header force-included (-include emu.h), links them
 * with a fake CUDA runtime (emu.cpp) and a fake libcublas
 * (fake_cublas.c, loaded through MOEVK_CUBLAS), and runs tests/test_cuda.c.
 *
 * Kernels run on the host: the blocks of a launch one after another, the
 * threads of a block as fibers (ucontext) switched at __syncthreads, so
 * barriers, shared memory (static storage, one block at a time) and warp
 * ballots behave as on the GPU for kernels whose threads all reach the same
 * barriers. Device memory is host memory filled with 0xff (NaN) bytes on
 * allocation, so reads of unwritten memory show up as NaN or huge indices.
 * Floating-point results are those of the host's libm: close to, not
 * bitwise equal to, a GPU's.
 */
#ifndef MOEVK_CUDA_EMU_H
#define MOEVK_CUDA_EMU_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <string.h>

#include <functional>

namespace mvkemu {
extern uint3 thread_idx, block_idx;
extern dim3 block_dim, grid_dim;
/* Run body once per thread of grid x block (blocks in order). */
void run(dim3 grid, dim3 block, const std::function<void()> &body);
void syncthreads();
unsigned ballot(bool pred); /* of the calling thread's warp; a block-wide barrier */
} /* namespace mvkemu */

#define threadIdx mvkemu::thread_idx
#define blockIdx mvkemu::block_idx
#define blockDim mvkemu::block_dim
#define gridDim mvkemu::grid_dim
#define __syncthreads() mvkemu::syncthreads()
#define __ballot_sync(mask, pred) ((void)(mask), mvkemu::ballot(pred))
#define __popc(x) __builtin_popcount(x)
#undef __shared__
#define __shared__ static

static inline float __uint_as_float(unsigned u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float __int_as_float(int i)
{
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

#define LAUNCH(kernel, grid, block, stream, ...)                                              \
    ((void)(stream), mvkemu::run(dim3(grid), dim3(block), [&]() { kernel(__VA_ARGS__); }))

#endif
