/*
 * Matrix units: the cooperative-matrix variant of the expert GEMM (64-row
 * tiles) where the device has VK_KHR_cooperative_matrix with a 16x16x16
 * f16 x f16 -> f32 shape, the compiler that built moevk could compile it,
 * and a built-in self-check of the variant against the portable kernel
 * passed on this device; else the portable kernel. The self-check runs
 * once per context, before the first layer that could use the variant
 * (layers are not batch invariant then), and a failure is logged and
 * reported in moevk_device_info.matrix_units (-1), never an error.
 *
 * On devices without matrix units the tests run the same kernel source with
 * the three intrinsics emulated (moevk_testing_matrix_units), so everything
 * but the intrinsics -- staging, edges, fragment layout, stores, selection,
 * the self-check and its fallback -- is tested on lavapipe.
 */
#include <math.h>
#include <string.h>

#include "formats.h"
#include "interface.h"
#include "kernels.h"
#include "ops/ops.h"
#include "ref/ref.h"

uint32_t mvk_matrix_unit_kernel(const moevk_context *ctx, uint32_t w_fmt)
{
    if (!ctx->mu_kernel || ctx->mu_state != 1)
        return MVK_K_EXPERT_GEMM;
    /* The hardware variant multiplies f16: it takes f16 weights and the
     * block formats, which every variant stages the same way (decoded in
     * registers, stored to shared memory as the fragments' type, f16
     * here), but not f32 or bf16, whose values f16 could not hold. The
     * emulation (f32 fragments) takes any format. */
    if (ctx->mu_kernel != MVK_K_EXPERT_GEMM_MU_EMU && w_fmt != MVK_WFMT_F16 &&
        w_fmt < MVK_WFMT_Q8_0)
        return MVK_K_EXPERT_GEMM;
    return ctx->mu_kernel;
}

/* A small pseudo-random value in [-1, 1) (a local LCG; no global state). */
static float rnd(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

/* The self-check: one dense problem with partial tiles in every dimension
 * (M = 96, N = 80, K = 200), f16 weights, on the portable kernel and on the
 * matrix-unit one; relative L2 difference within f16 rounding of the
 * activations. */
static moevk_status self_check(moevk_context *ctx, double *err)
{
    enum { M = 96, N = 80, K = 200 };
    float *a = mvk_alloc(ctx, sizeof(float) * M * K), *out = mvk_alloc(ctx, sizeof(float) * M * N * 2);
    uint16_t *w = mvk_alloc(ctx, sizeof(uint16_t) * N * K);
    moevk_buffer *ba = NULL, *bw = NULL, *bo = NULL;
    moevk_status st = MOEVK_SUCCESS;
    if (!a || !out || !w) {
        st = mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "matrix-unit self-check");
        goto done;
    }
    uint32_t s = 12345u;
    for (int i = 0; i < M * K; i++)
        a[i] = rnd(&s);
    for (int i = 0; i < N * K; i++)
        w[i] = moevk_float_to_half(rnd(&s) * 0.25f);
    if ((st = moevk_buffer_create(ctx, sizeof(float) * M * K, &ba)) ||
        (st = moevk_buffer_create(ctx, sizeof(uint16_t) * N * K, &bw)) ||
        (st = moevk_buffer_create(ctx, sizeof(float) * M * N * 2, &bo)) ||
        (st = moevk_buffer_upload(ba, 0, a, sizeof(float) * M * K)) ||
        (st = moevk_buffer_upload(bw, 0, w, sizeof(uint16_t) * N * K)))
        goto done;
    mvk_cmd c;
    if ((st = mvk_cmd_begin(ctx, &c)))
        goto done;
    mvk_cmd_barrier(&c);
    for (int v = 0; v < 2; v++) {
        mvk_gemm_args ga = {
            .a = {ba->buffer, 0, VK_WHOLE_SIZE}, .w0 = {bw->buffer, 0, VK_WHOLE_SIZE},
            .out = {bo->buffer, 0, VK_WHOLE_SIZE},
            .M = M, .N = N, .K = K, .E = 1, .e_count = 1, .out_offset = (uint32_t)(v * M * N),
            .alpha = 1.0f, .limit = 7.0f, .w_fmt = MVK_WFMT_F16, .act = MVK_ACT_NONE,
            .kernel_override = v ? ctx->mu_kernel : MVK_K_EXPERT_GEMM,
        };
        mvk_op_expert_gemm(&c, &ga);
    }
    mvk_cmd_barrier(&c);
    if ((st = mvk_cmd_submit_wait(&c)) ||
        (st = moevk_buffer_download(bo, 0, out, sizeof(float) * M * N * 2)))
        goto done;
    double num = 0, den = 0;
    for (int i = 0; i < M * N; i++) {
        double d = (double)out[M * N + i] - (double)out[i];
        num += d * d;
        den += (double)out[i] * out[i];
    }
    *err = den > 0 && !isnan(num) ? sqrt(num / den) : INFINITY;
done:
    moevk_buffer_destroy(ba);
    moevk_buffer_destroy(bw);
    moevk_buffer_destroy(bo);
    mvk_free(ctx, a);
    mvk_free(ctx, out);
    mvk_free(ctx, w);
    return st;
}

moevk_status mvk_matrix_units_prepare(moevk_context *ctx)
{
    if (!ctx->mu_kernel || ctx->mu_state != 0)
        return MOEVK_SUCCESS;
    double err = INFINITY;
    moevk_status st = self_check(ctx, &err);
    if (st)
        return st; /* a failed allocation or submission: an error, tried again later */
    /* f16 activations: each product carries up to 2^-11 of rounding */
    const double tol = 2e-3;
    const char *what = ctx->mu_kernel == MVK_K_EXPERT_GEMM_MU_EMU ? "emulated matrix units"
                                                                   : "cooperative matrices";
    if (ctx->testing_mu_fail || !(err <= tol)) {
        ctx->mu_state = -1;
        ctx->info.matrix_units = -1;
        mvk_log(ctx, MOEVK_LOG_WARN,
                "moevk: %s disagree with the portable kernel on this device (relative "
                "difference %.3g > %.1g%s): using the portable kernel",
                what, err, tol, ctx->testing_mu_fail ? ", failure planted by a test" : "");
    } else {
        ctx->mu_state = 1;
        ctx->info.matrix_units = 1;
        mvk_log(ctx, MOEVK_LOG_INFO, "moevk: %s pass their self-check (difference %.3g)", what,
                err);
    }
    return MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_context_self_check, (moevk_context *ctx), ctx, mvk_matrix_units_prepare(ctx))
