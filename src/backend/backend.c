/*
 * The table of backends (backend.h). A new backend adds its entry here and
 * nothing anywhere else outside its own folder.
 */
#include "backend/backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

extern const mvk_backend mvk_backend_vulkan; /* src/backend/vulkan.c */
extern const mvk_backend mvk_backend_cpu;    /* src/backend/cpu.c */

#if MOEVK_HAVE_CUDA
/* src/cuda/cuda_backend.c */
extern const mvk_backend mvk_backend_cuda_ref, mvk_backend_cuda_cublas,
    mvk_backend_cuda_cublas_f32;
#else
/* Without nvcc the CUDA names stay known, so that asking for them says why
 * they cannot run (and moevk check reports them skipped). */
static int cuda_not_built(char *msg, size_t n)
{
    mvk_backend_err(msg, n, "the CUDA backends are not built (no nvcc at build time)");
    return 0;
}

static moevk_status cuda_not_built_open(const mvk_backend_opts *opts, void **dev,
                                        mvk_backend_info *info, char *err, size_t n)
{
    (void)opts;
    (void)info;
    *dev = NULL;
    cuda_not_built(err, n);
    return MOEVK_ERROR_UNSUPPORTED;
}

#define CUDA_NOT_BUILT(nm, al)                                                                 \
    {.name = nm, .alias = al, .summary = "(not built: no nvcc at build time)",                  \
     .available = cuda_not_built, .open = cuda_not_built_open}
static const mvk_backend mvk_backend_cuda_ref = CUDA_NOT_BUILT("cuda-ref", "cuda");
static const mvk_backend mvk_backend_cuda_cublas = CUDA_NOT_BUILT("cuda-cublas", NULL);
static const mvk_backend mvk_backend_cuda_cublas_f32 = CUDA_NOT_BUILT("cuda-cublas-f32", NULL);
#endif

static const mvk_backend *const table[] = {
    &mvk_backend_vulkan,
    &mvk_backend_cpu,
    &mvk_backend_cuda_ref,
    &mvk_backend_cuda_cublas,
    &mvk_backend_cuda_cublas_f32,
};

const mvk_backend *mvk_backend_at(uint32_t i)
{
    return i < sizeof table / sizeof table[0] ? table[i] : NULL;
}

const mvk_backend *mvk_backend_find(const char *name)
{
    for (uint32_t i = 0; name && mvk_backend_at(i); i++) {
        const mvk_backend *b = mvk_backend_at(i);
        if (!strcmp(b->name, name) || (b->alias && !strcmp(b->alias, name)))
            return b;
    }
    return NULL;
}

const mvk_backend *mvk_backend_reference(void)
{
    return &mvk_backend_cpu;
}

mvk_backend_names mvk_backend_list(const char *sep)
{
    mvk_backend_names l = {""};
    size_t pos = 0;
    for (uint32_t i = 0; mvk_backend_at(i) && pos < sizeof l.s; i++) {
        int w = snprintf(l.s + pos, sizeof l.s - pos, "%s%s", i ? sep : "",
                         mvk_backend_at(i)->name);
        if (w < 0)
            break;
        pos += (size_t)w;
    }
    return l;
}

void mvk_backend_copy_stats(const moevk_routing_stats *from, moevk_routing_stats *to, uint32_t E)
{
    if (!from || !to || from == to)
        return;
    uint32_t *tpe = to->tokens_per_expert;
    if (tpe && from->tokens_per_expert)
        memcpy(tpe, from->tokens_per_expert, sizeof(uint32_t) * E);
    *to = *from;
    to->tokens_per_expert = tpe;
}

void mvk_backend_err(char *err, size_t n, const char *fmt, ...)
{
    if (!err || !n)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}
