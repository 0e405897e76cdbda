/*
 * The "vulkan" backend: libmoevk (include/moevk/moevk.h) behind the
 * backend interface. A device is a moevk_context (opened here, or the
 * caller's through mvk_backend_opts.native); a layer is a moevk_layer plus
 * the x and y tensors of the last token count, and for bench up to
 * MAX_COPIES copies of the layer that passes rotate over.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "testing.h"
#include "util/tool.h"

#define MAX_COPIES 8

typedef struct vk_dev {
    moevk_context *ctx;
    int owned;
} vk_dev;

typedef struct vk_layer {
    moevk_context *ctx;
    moevk_layer *L[MAX_COPIES];
    uint32_t copies, H, E;
    moevk_tensor tx, ty; /* [T, H] f32 */
    uint32_t T;          /* rows of tx and ty (0: none) */
} vk_layer;

static int vk_available(char *msg, size_t n)
{
    mvk_backend_err(msg, n, "libmoevk (the Vulkan device is chosen when it is opened)");
    return 1;
}

static void vk_close(void *dev);

static moevk_status vk_open(const mvk_backend_opts *opts, void **dev, mvk_backend_info *info,
                            char *err, size_t n)
{
    *dev = NULL;
    vk_dev *v = calloc(1, sizeof *v);
    if (!v) {
        mvk_backend_err(err, n, "out of host memory");
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    if (opts && opts->native) {
        v->ctx = opts->native;
    } else {
        char why[512] = "";
        moevk_status st = mvk_tool_context(opts ? opts->device : NULL, opts ? opts->validate : 0,
                                           &v->ctx, why, sizeof why);
        if (st) {
            mvk_backend_err(err, n, "cannot create a Vulkan context: %s", why);
            free(v);
            return st;
        }
        v->owned = 1;
    }
    /* the kernel variant to cover (test knobs of the library) */
    if (opts && (opts->force_path || opts->matrix_units_emulated)) {
        moevk_status st = moevk_testing_force_path(v->ctx, (int)opts->force_path - 1);
        if (!st)
            st = moevk_testing_matrix_units(v->ctx, opts->matrix_units_emulated ? 1 : 0);
        if (st) {
            mvk_backend_err(err, n, "cannot force kernel path %u: %s", opts->force_path,
                            moevk_context_last_error(v->ctx));
            vk_close(v);
            return st;
        }
    }
    /* Hardware matrix units multiply f16 activations (in the 64-row tiles of
     * layers that are not batch invariant): decided by the self-check now,
     * so that the tolerance of the results is known. */
    int rounds = 0;
    if (!(opts && opts->matrix_units_emulated) && !moevk_context_self_check(v->ctx))
        rounds = moevk_context_device_info(v->ctx)->matrix_units == 1;
    const moevk_device_info *d = moevk_context_device_info(v->ctx);
    memset(info, 0, sizeof *info);
    info->flags = rounds ? MVK_BACKEND_ROUNDS_ACTIVATIONS : 0;
    snprintf(info->desc, sizeof info->desc, "%s (%s)", d->name, d->driver_name);
    snprintf(info->name, sizeof info->name, "%s", d->name);
    snprintf(info->driver, sizeof info->driver, "%s %s", d->driver_name, d->driver_info);
    info->device_bytes = (double)d->device_local_bytes;
    /* VkPhysicalDeviceType: 4 CPU, 1 integrated GPU */
    info->shares_host = d->device_type == 4   ? "a CPU device"
                        : d->device_type == 1 ? "an integrated GPU"
                                              : NULL;
    info->uploads = 1;
    info->timestamps = d->timestamps;
    info->cpu_driver = d->device_type == 4;
    *dev = v;
    return MOEVK_SUCCESS;
}

static void vk_close(void *dev)
{
    vk_dev *v = dev;
    if (v && v->owned)
        moevk_context_destroy(v->ctx);
    free(v);
}

static uint32_t vk_problems(void *dev)
{
    return moevk_context_validation_messages(((vk_dev *)dev)->ctx);
}

static moevk_status vk_measure(void *dev, moevk_dtype dt, double *gb_s, double *tflops,
                               char *err, size_t n)
{
    moevk_context *ctx = ((vk_dev *)dev)->ctx;
    moevk_status st = MOEVK_SUCCESS;
    if (gb_s && (st = moevk_measure_bandwidth(ctx, 0, gb_s)))
        mvk_backend_err(err, n, "moevk_measure_bandwidth: %s", moevk_context_last_error(ctx));
    else if (tflops && (st = moevk_measure_matmul(ctx, dt, 0, tflops)))
        mvk_backend_err(err, n, "moevk_measure_matmul: %s", moevk_context_last_error(ctx));
    return st;
}

static void vk_destroy(void *layer)
{
    vk_layer *l = layer;
    if (!l)
        return;
    moevk_tensor_destroy(&l->tx);
    moevk_tensor_destroy(&l->ty);
    for (uint32_t i = 0; i < MAX_COPIES; i++)
        moevk_layer_destroy(l->L[i]);
    free(l);
}

static moevk_status vk_create(void *dev, const moevk_layer_desc *desc, const mvk_layer_opts *opts,
                              void **layer, char *err, size_t n)
{
    *layer = NULL;
    vk_layer *l = calloc(1, sizeof *l);
    if (!l) {
        mvk_backend_err(err, n, "out of host memory");
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    l->ctx = ((vk_dev *)dev)->ctx;
    l->H = desc->hidden;
    l->E = desc->num_experts;
    moevk_status st = moevk_layer_create(l->ctx, desc, &l->L[0]);
    const char *call = "moevk_layer_create";
    if (!st && opts && opts->reserve_tokens) {
        st = moevk_layer_reserve(l->L[0], opts->reserve_tokens);
        call = "moevk_layer_reserve";
    }
    if (st) {
        mvk_backend_err(err, n, "%s: %s", call, moevk_context_last_error(l->ctx));
        vk_destroy(l);
        return st;
    }
    l->copies = 1;
    uint32_t want = opts && opts->copies ? opts->copies : 1;
    want = want > MAX_COPIES ? MAX_COPIES : want;
    uint64_t wbytes = 0, sbytes = 0;
    moevk_layer_memory(l->L[0], &wbytes, &sbytes);
    const double budget = opts ? opts->copy_budget : 0;
    while (l->copies < want &&
           (budget <= 0 || (l->copies + 1) * (double)wbytes + (double)sbytes <= budget)) {
        if (moevk_layer_create(l->ctx, desc, &l->L[l->copies]))
            break; /* fewer copies: the device is full */
        l->copies++;
    }
    *layer = l;
    return MOEVK_SUCCESS;
}

/* x and y tensors of T rows. */
static moevk_status io_tensors(vk_layer *l, uint32_t T)
{
    if (l->T == T)
        return MOEVK_SUCCESS;
    moevk_tensor_destroy(&l->tx);
    moevk_tensor_destroy(&l->ty);
    l->T = 0;
    uint64_t shape[2] = {T, l->H};
    moevk_status st = moevk_tensor_create(l->ctx, MOEVK_DTYPE_F32, 2, shape, &l->tx);
    if (!st)
        st = moevk_tensor_create(l->ctx, MOEVK_DTYPE_F32, 2, shape, &l->ty);
    if (!st)
        l->T = T;
    return st;
}

/* Stage times of the last pass of L (zero where the device has none). */
static void stage_times(const moevk_layer *L, double *ms, double *total)
{
    double s[MOEVK_STAGE_COUNT] = {0};
    if (moevk_layer_stage_times(L, s))
        memset(s, 0, sizeof s);
    double sum = 0;
    for (int i = 0; i < MOEVK_STAGE_COUNT; i++)
        sum += s[i];
    if (ms)
        memcpy(ms, s, sizeof s);
    if (total)
        *total = sum;
}

static moevk_status vk_forward(void *layer, uint32_t T, const float *x, const mvk_backend_out *o,
                               char *err, size_t n)
{
    vk_layer *l = layer;
    if (!l || !x || !o || T == 0) {
        mvk_backend_err(err, n, "forward: %s", !l ? "no layer" : T ? "no x or outputs" : "T = 0");
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    moevk_layer *L = l->L[0];
    moevk_tensor *ty = &l->ty;
    const char *call;
    moevk_status st;
    if ((st = io_tensors(l, T)))
        call = "moevk_tensor_create";
    else if ((st = moevk_tensor_upload(&l->tx, x)))
        call = "moevk_tensor_upload";
    else if (o->y && (st = moevk_buffer_fill(ty->buffer, ty->offset, moevk_tensor_bytes(ty),
                                             0x7fc00000u))) /* NaN: unwritten y shows */
        call = "moevk_buffer_fill";
    else if ((st = moevk_layer_forward(L, &l->tx, ty, o->stats)))
        call = "moevk_layer_forward";
    else if (o->y && (st = moevk_tensor_download(ty, o->y)))
        call = "moevk_tensor_download";
    else if ((o->ids || o->weights || o->rows) &&
             (st = moevk_layer_read_routing(L, T, o->ids, o->weights, o->rows)))
        call = "moevk_layer_read_routing";
    else if (o->stats_read && (st = moevk_layer_read_stats(L, o->stats_read)))
        call = "moevk_layer_read_stats";
    else if (o->pass_info && (st = moevk_layer_pass_info(L, o->pass_info)))
        call = "moevk_layer_pass_info";
    if (st) {
        mvk_backend_err(err, n, "%s: %s", call, moevk_context_last_error(l->ctx));
        return st;
    }
    if (o->stage_ms || o->total_ms)
        stage_times(L, o->stage_ms, o->total_ms);
    return MOEVK_SUCCESS;
}

/* Passes rotate over the copies; the median pass (by its total) is
 * reported with its own stages, so that they add up. */
static moevk_status vk_bench(void *layer, uint32_t T, const float *x, uint32_t warmup,
                             uint32_t iters, mvk_backend_times *t, char *err, size_t n)
{
    vk_layer *l = layer;
    if (!l || !x || !t || T == 0 || iters == 0) {
        mvk_backend_err(err, n, "bench: %s", !l ? "no layer" : "T and iters must be >= 1");
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    double *totals = malloc(sizeof(double) * iters);
    double *stage = malloc(sizeof(double) * iters * MOEVK_STAGE_COUNT);
    uint32_t *order = malloc(sizeof(uint32_t) * iters);
    moevk_status st = MOEVK_SUCCESS;
    const char *call = NULL;
    if (!totals || !stage || !order) {
        mvk_backend_err(err, n, "bench: out of host memory");
        st = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
        goto done;
    }
    if ((st = io_tensors(l, T)))
        call = "moevk_tensor_create";
    else if ((st = moevk_tensor_upload(&l->tx, x)))
        call = "moevk_tensor_upload";
    for (uint32_t i = 0; !st && i < warmup + iters; i++) {
        moevk_layer *L = l->L[i % l->copies];
        if ((st = moevk_layer_forward(L, &l->tx, &l->ty, NULL)))
            call = "moevk_layer_forward";
        else if (i >= warmup)
            stage_times(L, &stage[(i - warmup) * MOEVK_STAGE_COUNT], &totals[i - warmup]);
    }
    if (st) {
        mvk_backend_err(err, n, "%s: %s", call, moevk_context_last_error(l->ctx));
        goto done;
    }
    for (uint32_t r = 0; r < iters; r++)
        order[r] = r;
    for (uint32_t a = 1; a < iters; a++) /* insertion sort by total */
        for (uint32_t b = a; b > 0 && totals[order[b]] < totals[order[b - 1]]; b--) {
            uint32_t tmp = order[b];
            order[b] = order[b - 1];
            order[b - 1] = tmp;
        }
    const uint32_t mid = order[iters / 2];
    t->total_ms = totals[mid];
    memcpy(t->stage_ms, &stage[mid * MOEVK_STAGE_COUNT], sizeof t->stage_ms);
    /* the last pass's structure (every pass of one T launches the same) */
    if ((st = moevk_layer_pass_info(l->L[(warmup + iters - 1) % l->copies], &t->work))) {
        mvk_backend_err(err, n, "moevk_layer_pass_info: %s", moevk_context_last_error(l->ctx));
        goto done;
    }
done:
    free(totals);
    free(stage);
    free(order);
    return st;
}

static void vk_memory(void *layer, uint32_t T, mvk_backend_memory *m)
{
    vk_layer *l = layer;
    memset(m, 0, sizeof *m);
    if (!l)
        return;
    uint64_t w = 0, s = 0;
    moevk_layer_memory(l->L[0], &w, &s);
    m->weights = (double)w;
    m->scratch = (double)s;
    m->copies = l->copies;
    m->peak = l->copies * (double)w + (double)s + 2.0 * T * l->H * sizeof(float);
    if (!moevk_layer_cache_stats(l->L[0], &m->cache)) {
        m->host_weights = (double)m->cache.host_weight_bytes;
        m->budgeted = (moevk_layer_get_desc(l->L[0])->flags & MOEVK_LAYER_VRAM_BUDGET) != 0;
    }
}

const mvk_backend mvk_backend_vulkan = {
    .name = "vulkan",
    .summary = "libmoevk on a Vulkan device (--device, MOEVK_DEVICE)",
    .available = vk_available,
    .open = vk_open,
    .close = vk_close,
    .problems = vk_problems,
    .measure = vk_measure,
    .create = vk_create,
    .destroy = vk_destroy,
    .forward = vk_forward,
    .bench = vk_bench,
    .memory = vk_memory,
};
