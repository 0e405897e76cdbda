/*
 * The CPU emulation's kernel scheduler (fibers) and the subset of the CUDA
 * runtime API the CUDA backends use. See emu.h.
 *
 * MVKEMU_NO_DEVICE=1 makes the emulated runtime report "no device"
 * (cudaErrorNoDevice), for the no-device paths.
 */
#include "emu.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucontext.h>

#include <vector>

namespace mvkemu {

uint3 thread_idx, block_idx;
dim3 block_dim, grid_dim;

namespace {

const size_t STACK_BYTES = 128 * 1024;
ucontext_t scheduler;
std::vector<ucontext_t> fibers;
std::vector<char *> stacks;
std::vector<char> done;
std::vector<unsigned char> flags;
const std::function<void()> *current_body;
unsigned current, block_threads;
bool direct; /* threads run as plain calls (the kernel has no barrier) */

void fiber_entry()
{
    (*current_body)();
    done[current] = 1; /* returns to uc_link = scheduler */
}

/* A fresh fiber for thread i (a function of its own: getcontext returns
 * twice, which must not clobber the scheduler's locals). */
__attribute__((noinline)) void make_fiber(unsigned i)
{
    getcontext(&fibers[i]);
    fibers[i].uc_stack.ss_sp = stacks[i];
    fibers[i].uc_stack.ss_size = STACK_BYTES;
    fibers[i].uc_link = &scheduler;
    makecontext(&fibers[i], fiber_entry, 0);
    done[i] = 0;
}

void set_thread(unsigned i)
{
    current = i;
    thread_idx.x = i % block_dim.x;
    thread_idx.y = (i / block_dim.x) % block_dim.y;
    thread_idx.z = i / (block_dim.x * block_dim.y);
}

} /* namespace */

void run(dim3 grid, dim3 block, const std::function<void()> &body)
{
    const unsigned n = block.x * block.y * block.z;
    if (n == 0 || n > 1024) {
        fprintf(stderr, "mvkemu: bad block size %u\n", n);
        abort();
    }
    while (stacks.size() < n) {
        char *s = (char *)malloc(STACK_BYTES);
        if (!s)
            abort();
        stacks.push_back(s);
    }
    fibers.resize(n);
    done.resize(n);
    flags.resize(n);
    current_body = &body;
    grid_dim = grid;
    block_dim = block;
    block_threads = n;
    direct = false;
    /* Thread 0 of block 0 first, as a fiber: if it finishes without a
     * barrier, the kernel has none (the kernels here reach their barriers
     * in every thread) and all other threads run as plain calls. */
    block_idx.x = block_idx.y = block_idx.z = 0;
    make_fiber(0);
    set_thread(0);
    swapcontext(&scheduler, &fibers[0]);
    if (done[0]) {
        direct = true;
        for (unsigned bz = 0; bz < grid.z; bz++)
            for (unsigned by = 0; by < grid.y; by++)
                for (unsigned bx = 0; bx < grid.x; bx++) {
                    block_idx.x = bx;
                    block_idx.y = by;
                    block_idx.z = bz;
                    for (unsigned i = bx || by || bz ? 0 : 1; i < n; i++) {
                        set_thread(i);
                        body();
                    }
                }
        direct = false;
        return;
    }
    /* a barrier kernel: every thread a fiber; thread 0 of block 0 waits at
     * its first barrier while the others of block 0 reach theirs */
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                const bool first_block = !bx && !by && !bz;
                block_idx.x = bx;
                block_idx.y = by;
                block_idx.z = bz;
                for (unsigned i = first_block ? 1 : 0; i < n; i++)
                    make_fiber(i);
                /* rounds: every live thread runs to its next barrier */
                for (bool live = true, round0 = true; live; round0 = false) {
                    live = false;
                    for (unsigned i = 0; i < n; i++) {
                        if (first_block && round0 && i == 0) {
                            live = true; /* already at its first barrier */
                            continue;
                        }
                        if (done[i])
                            continue;
                        set_thread(i);
                        swapcontext(&scheduler, &fibers[i]);
                        if (!done[i])
                            live = true;
                    }
                }
            }
}

void syncthreads()
{
    if (direct) {
        fprintf(stderr, "mvkemu: __syncthreads in a kernel whose thread 0 reached none\n");
        abort();
    }
    swapcontext(&fibers[current], &scheduler);
}

unsigned ballot(bool pred)
{
    const unsigned me = current;
    flags[me] = pred;
    syncthreads();
    unsigned mask = 0, w0 = me & ~31u;
    for (unsigned l = 0; l < 32 && w0 + l < block_threads; l++)
        if (flags[w0 + l])
            mask |= 1u << l;
    syncthreads(); /* nobody rewrites flags before everyone has read them */
    return mask;
}

} /* namespace mvkemu */

/* ---- the CUDA runtime subset ---------------------------------------------- */

static bool no_device()
{
    const char *e = getenv("MVKEMU_NO_DEVICE");
    return e && *e && strcmp(e, "0") != 0;
}

static double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    if (no_device()) {
        *count = 0;
        return cudaErrorNoDevice;
    }
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device)
{
    if (no_device() || device != 0)
        return cudaErrorInvalidDevice;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "mvkemu CPU emulation");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 1;
    prop->totalGlobalMem = 1ull << 32;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v)
{
    *v = no_device() ? 0 : 13000;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    return no_device() || device != 0 ? cudaErrorNoDevice : cudaSuccess;
}

const char *cudaGetErrorName(cudaError_t e)
{
    return e == cudaSuccess ? "cudaSuccess" : e == cudaErrorNoDevice ? "cudaErrorNoDevice"
                                                                      : "cudaError(emulated)";
}

const char *cudaGetErrorString(cudaError_t e)
{
    return e == cudaSuccess ? "no error" : "emulated CUDA error";
}

cudaError_t cudaGetLastError(void)
{
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    *p = malloc(bytes ? bytes : 1);
    if (!*p)
        return cudaErrorMemoryAllocation;
    memset(*p, 0xff, bytes); /* unwritten memory reads as NaN */
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t bytes)
{
    return cudaMalloc(p, bytes);
}

cudaError_t cudaFreeHost(void *p)
{
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind)
{
    memcpy(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind,
                            cudaStream_t)
{
    memcpy(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *dst, int v, size_t n, cudaStream_t)
{
    memset(dst, v, n);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int)
{
    static char token;
    *s = (cudaStream_t)(void *)&token;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t)
{
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t)
{
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *ev)
{
    double *t = (double *)calloc(1, sizeof(double));
    if (!t)
        return cudaErrorMemoryAllocation;
    *ev = (cudaEvent_t)(void *)t;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t)
{
    *(double *)(void *)ev = now_ms();
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t)
{
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)(*(double *)(void *)b - *(double *)(void *)a);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t ev)
{
    free((void *)ev);
    return cudaSuccess;
}
