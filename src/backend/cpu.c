/*
 * The "cpu" backend: the double-precision CPU reference (src/ref) behind
 * the backend interface. A layer is the description itself: the reference
 * reads the caller's host arrays at every pass (nothing is uploaded).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "ref/ref.h"
#include "util/tool.h"

typedef struct cpu_dev {
    int unused;
} cpu_dev;

typedef struct cpu_layer {
    moevk_layer_desc desc;
} cpu_layer;

static int cpu_available(char *msg, size_t n)
{
    mvk_backend_err(msg, n, "CPU reference (double precision)");
    return 1;
}

static moevk_status cpu_open(const mvk_backend_opts *opts, void **dev, mvk_backend_info *info,
                             char *err, size_t n)
{
    (void)opts;
    *dev = calloc(1, sizeof(cpu_dev));
    if (!*dev) {
        mvk_backend_err(err, n, "out of host memory");
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    memset(info, 0, sizeof *info);
    snprintf(info->desc, sizeof info->desc, "CPU reference (double precision)");
    snprintf(info->name, sizeof info->name, "CPU reference");
    snprintf(info->driver, sizeof info->driver, "src/ref, double accumulation");
    return MOEVK_SUCCESS;
}

static void cpu_close(void *dev)
{
    free(dev);
}

static moevk_status cpu_create(void *dev, const moevk_layer_desc *desc,
                               const mvk_layer_opts *opts, void **layer, char *err, size_t n)
{
    (void)dev;
    (void)opts;
    *layer = NULL;
    char msg[512] = "";
    moevk_status st = moevk_layer_desc_check(desc, msg, sizeof msg);
    if (st) {
        mvk_backend_err(err, n, "%s", msg);
        return st;
    }
    cpu_layer *l = malloc(sizeof *l);
    if (!l) {
        mvk_backend_err(err, n, "out of host memory");
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    l->desc = *desc;
    *layer = l;
    return MOEVK_SUCCESS;
}

static void cpu_destroy(void *layer)
{
    free(layer);
}

static moevk_status cpu_forward(void *layer, uint32_t T, const float *x,
                                const mvk_backend_out *o, char *err, size_t n)
{
    cpu_layer *l = layer;
    if (!l || !x || !o || T == 0) {
        mvk_backend_err(err, n, "forward: %s", !l ? "no layer" : T ? "no x or outputs" : "T = 0");
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    const moevk_layer_desc *d = &l->desc;
    const size_t TK = (size_t)T * moevk_routing_slots(d), E = d->num_experts;
    /* the reference always computes y; ids are needed for rows */
    float *y = o->y ? o->y : malloc(sizeof(float) * ((size_t)T * d->hidden + 1));
    uint32_t *ids = o->ids || !o->rows ? o->ids : malloc(sizeof(uint32_t) * (TK + 1));
    uint32_t *counts = o->rows ? malloc(sizeof(uint32_t) * (E + 2)) : NULL;
    uint32_t *offsets = o->rows ? malloc(sizeof(uint32_t) * (E + 2)) : NULL;
    moevk_status st = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    if (y && (ids || !o->rows) && (!o->rows || (counts && offsets))) {
        double t0 = mvk_now_ms();
        st = moevk_ref_layer_forward(d, T, x, y, ids, o->weights, o->near_tie, o->stats);
        if (o->total_ms)
            *o->total_ms = mvk_now_ms() - t0;
    }
    if (!st && o->rows)
        moevk_ref_permute(d, T, ids, counts, offsets, o->rows);
    if (!st) {
        mvk_backend_copy_stats(o->stats, o->stats_read, d->num_experts);
        if (o->stage_ms)
            memset(o->stage_ms, 0, sizeof(double) * MOEVK_STAGE_COUNT);
    } else {
        mvk_backend_err(err, n, "moevk_ref_layer_forward: %s",
                        st == MOEVK_ERROR_OUT_OF_HOST_MEMORY ? "out of host memory"
                                                              : moevk_status_string(st));
    }
    if (y != o->y)
        free(y);
    if (ids != o->ids)
        free(ids);
    free(counts);
    free(offsets);
    return st;
}

static void cpu_memory(void *layer, uint32_t T, mvk_backend_memory *m)
{
    (void)layer;
    (void)T;
    memset(m, 0, sizeof *m); /* no device memory: the caller's arrays */
}

const mvk_backend mvk_backend_cpu = {
    .name = "cpu",
    .summary = "the CPU reference in double precision (the oracle; slow)",
    .flags = MVK_BACKEND_REFERENCE,
    .available = cpu_available,
    .open = cpu_open,
    .close = cpu_close,
    .create = cpu_create,
    .destroy = cpu_destroy,
    .forward = cpu_forward,
    .memory = cpu_memory,
};
