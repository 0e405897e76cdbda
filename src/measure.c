/*
 * Device ceilings measured with moevk's own kernels: read bandwidth (a
 * streaming vec4 kernel, not vkCmdCopyBuffer, which some drivers run far
 * below memory speed) and matrix throughput (the expert GEMM, dense).
 */
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "kernels.h"
#include "ops/ops.h"

#define RUNS 7

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static bool is_cpu(const moevk_context *ctx)
{
    return ctx->info.device_type == VK_PHYSICAL_DEVICE_TYPE_CPU;
}

/* Times `RUNS` submissions of what `record` records; median milliseconds
 * in *ms. */
static moevk_status time_dispatch(moevk_context *ctx, void (*record)(mvk_cmd *, const void *),
                                  const void *arg, double *ms)
{
    if (!ctx->info.timestamps)
        return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED, "the device has no timestamp queries");
    VkQueryPoolCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
        .queryType = VK_QUERY_TYPE_TIMESTAMP,
        .queryCount = 2,
    };
    VkQueryPool pool;
    VkResult r = MVK_VK(ctx, ctx->vk.vkCreateQueryPool(ctx->device, &qci, NULL, &pool));
    if (r != VK_SUCCESS)
        return mvk_vk_fail(ctx, r, "vkCreateQueryPool");
    double t[RUNS + 1];
    moevk_status st = MOEVK_SUCCESS;
    for (int i = 0; i <= RUNS && !st; i++) { /* run 0 warms up */
        mvk_cmd c;
        if ((st = mvk_cmd_begin(ctx, &c)))
            break;
        mvk_cmd_reset_queries(&c, pool, 2);
        mvk_cmd_barrier(&c);
        mvk_cmd_timestamp(&c, pool, 0);
        record(&c, arg);
        mvk_cmd_barrier(&c);
        mvk_cmd_timestamp(&c, pool, 1);
        if ((st = mvk_cmd_submit_wait(&c)))
            break;
        uint64_t q[2];
        r = ctx->vk.vkGetQueryPoolResults(ctx->device, pool, 0, 2, sizeof(q), q, sizeof(q[0]),
                                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (r != VK_SUCCESS) {
            st = mvk_vk_fail(ctx, r, "vkGetQueryPoolResults");
            break;
        }
        uint64_t mask = ctx->info.timestamp_valid_bits >= 64
                            ? ~0ull
                            : (1ull << ctx->info.timestamp_valid_bits) - 1;
        t[i] = (double)((q[1] - q[0]) & mask) * ctx->info.timestamp_period_ns * 1e-6;
    }
    ctx->vk.vkDestroyQueryPool(ctx->device, pool, NULL);
    if (st)
        return st;
    qsort(t + 1, RUNS, sizeof(double), cmp_double);
    *ms = t[1 + RUNS / 2];
    return MOEVK_SUCCESS;
}

typedef struct bandwidth_args {
    mvk_binding b[MVK_BANDWIDTH_BINDINGS];
    uint32_t n_vec4, groups;
} bandwidth_args;

static void record_bandwidth(mvk_cmd *c, const void *arg)
{
    const bandwidth_args *a = arg;
    const uint32_t spec[MVK_BANDWIDTH_NSPEC] = {256};
    mvk_bandwidth_push p = {.n_vec4 = a->n_vec4};
    mvk_cmd_dispatch(c, MVK_K_BANDWIDTH, spec, MVK_BANDWIDTH_NSPEC, a->b, MVK_BANDWIDTH_BINDINGS,
                     &p, sizeof(p), a->groups, 1, 1);
}

static void record_gemm(mvk_cmd *c, const void *arg)
{
    mvk_op_expert_gemm(c, arg);
}

static moevk_status measure_bandwidth(moevk_context *ctx, uint64_t bytes, double *gb_per_s)
{
    if (!gb_per_s)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "gb_per_s is NULL");
    if (!bytes)
        bytes = is_cpu(ctx) ? 64ull << 20 : 1ull << 30;
    uint64_t range = ctx->info.max_storage_buffer_range;
    if (ctx->info.max_allocation_size)
        range = MVK_MIN(range, ctx->info.max_allocation_size);
    bytes = MVK_MIN(bytes, range) & ~15ull;
    if (bytes < 16 || bytes / 16 > UINT32_MAX)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "bytes = %llu is not usable",
                        (unsigned long long)bytes);
    const uint32_t groups = is_cpu(ctx) ? 64 : 2048;
    moevk_buffer *src = NULL, *sums = NULL;
    moevk_status st;
    if ((st = moevk_buffer_create(ctx, bytes, &src)) ||
        (st = moevk_buffer_create(ctx, groups * 4ull, &sums)) ||
        (st = moevk_buffer_fill(src, 0, bytes, 0x3c00u))) {
        moevk_buffer_destroy(src);
        moevk_buffer_destroy(sums);
        return st;
    }
    bandwidth_args a = {
        .b = {{src->buffer, 0, VK_WHOLE_SIZE}, {sums->buffer, 0, VK_WHOLE_SIZE}},
        .n_vec4 = (uint32_t)(bytes / 16), .groups = groups,
    };
    double ms = 0;
    st = time_dispatch(ctx, record_bandwidth, &a, &ms);
    moevk_buffer_destroy(src);
    moevk_buffer_destroy(sums);
    if (st)
        return st;
    *gb_per_s = ms > 0 ? (double)bytes / (ms * 1e-3) / 1e9 : 0;
    return MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_measure_bandwidth, (moevk_context *ctx, uint64_t bytes, double *gb_per_s),
               ctx, measure_bandwidth(ctx, bytes, gb_per_s))

static moevk_status measure_matmul(moevk_context *ctx, moevk_dtype dtype, uint32_t n,
                                   double *tflops)
{
    if (!tflops)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "tflops is NULL");
    const mvk_format *fmt = mvk_format_get(dtype);
    if (!fmt || !(fmt->uses & MVK_FORMAT_EXPERT))
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "dtype %d is not a weight dtype",
                        (int)dtype);
    if (!n) {
        /* The best of a few sizes: the ceiling is what the kernel can reach. */
        const uint32_t sizes_cpu[] = {256, 512}, sizes_gpu[] = {2048, 4096, 8192};
        const uint32_t *sz = is_cpu(ctx) ? sizes_cpu : sizes_gpu;
        uint32_t count = is_cpu(ctx) ? 2 : 3;
        double best = 0;
        for (uint32_t i = 0; i < count; i++) {
            double t = 0;
            moevk_status st = measure_matmul(ctx, dtype, sz[i], &t);
            if (st)
                return st;
            best = t > best ? t : best;
        }
        *tflops = best;
        return MOEVK_SUCCESS;
    }
    if (n > 16384)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "n = %u is above 16384", n);
    if (n % fmt->block_elems)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "n = %u is not a whole number of %s blocks (%u elements)", n, fmt->name,
                        fmt->block_elems);
    const uint64_t nn = (uint64_t)n * n;
    moevk_buffer *a = NULL, *w = NULL, *out = NULL;
    const uint64_t wbytes = n * mvk_format_row_bytes(dtype, n);
    moevk_status st;
    if ((st = moevk_buffer_create(ctx, nn * 4, &a)) ||
        (st = moevk_buffer_create(ctx, wbytes, &w)) ||
        (st = moevk_buffer_create(ctx, nn * 4, &out)) ||
        (st = moevk_buffer_fill(a, 0, nn * 4, 0x3c000000u)) ||
        (st = moevk_buffer_fill(w, 0, (wbytes + 3) & ~3ull, 0x3c003c00u)))
        goto done;
    mvk_gemm_args ga = {
        .a = {a->buffer, 0, VK_WHOLE_SIZE}, .w0 = {w->buffer, 0, VK_WHOLE_SIZE},
        .out = {out->buffer, 0, VK_WHOLE_SIZE},
        .M = n, .N = n, .K = n, .E = 1, .e_first = 0, .e_count = 1,
        .alpha = 1.0f, .limit = 7.0f, .w_fmt = fmt->shader_fmt, .act = MVK_ACT_NONE,
    };
    double ms = 0;
    st = time_dispatch(ctx, record_gemm, &ga, &ms);
    if (!st)
        *tflops = ms > 0 ? 2.0 * (double)nn * n / (ms * 1e-3) / 1e12 : 0;
done:
    moevk_buffer_destroy(a);
    moevk_buffer_destroy(w);
    moevk_buffer_destroy(out);
    return st;
}

MVK_PUBLIC_CTX(moevk_measure_matmul,
               (moevk_context *ctx, moevk_dtype dtype, uint32_t n, double *tflops), ctx,
               measure_matmul(ctx, dtype, n, tflops))
