/*
 * moevk demo: the main job. One real-shaped MoE layer (a preset, optionally
 * scaled down) on the chosen device: routing statistics, the error against
 * the CPU reference, and GPU time per stage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "presets.h"
#include "ref/ref.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moevk demo [--preset NAME] [--scale S] [--tokens T] [--dtype f32|f16|bf16]\n"
            "                  [--runs N] [--seed S] [--device D] [--validate]\n"
            "  Runs one MoE layer of a preset model (H and F divided by S; E and k kept)\n"
            "  on random inputs, checks it against the CPU reference and times each stage.\n"
            "  Defaults: --preset mixtral-8x7b --scale 8 --tokens 64 --dtype bf16 --runs 5\n"
            "presets:");
    for (uint32_t i = 0; cli_preset_at(i); i++)
        fprintf(f, " %s", cli_preset_at(i)->name);
    fprintf(f, "\n");
}

int cli_demo(int argc, char **argv)
{
    const char *preset = "mixtral-8x7b", *device = NULL;
    uint32_t scale = 8, T = 64, runs = 5;
    uint64_t seed = 1;
    moevk_dtype dt = MOEVK_DTYPE_BF16;
    int validate = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--validate")) {
            validate = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "moevk demo: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--scale")) scale = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--tokens")) T = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--runs")) runs = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "f32")) dt = MOEVK_DTYPE_F32;
            else if (!strcmp(v, "f16")) dt = MOEVK_DTYPE_F16;
            else if (!strcmp(v, "bf16")) dt = MOEVK_DTYPE_BF16;
            else {
                fprintf(stderr, "moevk demo: unknown dtype '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "moevk demo: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    const cli_preset *p = cli_preset_find(preset);
    if (!p) {
        fprintf(stderr, "moevk demo: unknown preset '%s'\n", preset);
        usage(stderr);
        return 2;
    }
    if (!T || !scale || !runs) {
        fprintf(stderr, "moevk demo: --tokens, --scale and --runs must be >= 1\n");
        return 2;
    }
    cli_layer_weights w;
    if (cli_weights_make(p, scale, dt, seed, &w)) {
        fprintf(stderr, "moevk demo: out of host memory for the weights\n");
        return 1;
    }
    const moevk_layer_desc *d = &w.desc;
    const uint32_t H = d->hidden, E = d->num_experts, K = d->top_k;
    moevk_context *ctx = cli_context(device, validate);
    if (!ctx) {
        cli_weights_free(&w);
        return 1;
    }
    const moevk_device_info *info = moevk_context_device_info(ctx);
    printf("device   %s (%s)\n", info->name, info->driver_name);
    printf("layer    %s scaled 1/%u: H=%u F=%u E=%u k=%u, %s weights, %u shared expert%s, "
           "T=%u tokens\n",
           p->name, scale, H, d->ffn, E, K, moevk_dtype_name(dt), d->num_shared,
           d->num_shared == 1 ? "" : "s", T);

    int rc = 1;
    moevk_layer *L = NULL;
    moevk_tensor tx = {0}, ty = {0};
    float *x = malloc(sizeof(float) * T * H), *y = malloc(sizeof(float) * T * H);
    float *yr = malloc(sizeof(float) * T * H);
    uint32_t *tpe = calloc(E, 4), *rtpe = calloc(E, 4), *ids = malloc(4ull * T * K),
             *rids = malloc(4ull * T * K);
    uint8_t *near = malloc(T);
    double *ms = malloc(sizeof(double) * runs * MOEVK_STAGE_COUNT);
    if (!x || !y || !yr || !tpe || !rtpe || !ids || !rids || !near || !ms) {
        fprintf(stderr, "moevk demo: out of host memory\n");
        goto done;
    }
    cli_rng r = {seed + 99};
    for (size_t i = 0; i < (size_t)T * H; i++)
        x[i] = cli_rng_uniform(&r, -1, 1);

    moevk_status st;
    double t0 = cli_now_ms();
    if ((st = moevk_layer_create(ctx, d, &L)))
        goto vk_error;
    double t1 = cli_now_ms();
    uint64_t shape[2] = {T, H}, wbytes, sbytes;
    if ((st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &tx)) ||
        (st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &ty)) ||
        (st = moevk_tensor_upload(&tx, x)) ||
        (st = moevk_buffer_fill(ty.buffer, 0, moevk_tensor_bytes(&ty), 0x7fc00000u)))
        goto vk_error;
    moevk_routing_stats stats = {.tokens_per_expert = tpe};
    double wall_first = 0;
    for (uint32_t i = 0; i < runs; i++) {
        double a = cli_now_ms();
        if ((st = moevk_layer_forward(L, &tx, &ty, &stats)))
            goto vk_error;
        if (i == 0)
            wall_first = cli_now_ms() - a;
        moevk_layer_stage_times(L, &ms[i * MOEVK_STAGE_COUNT]);
    }
    moevk_layer_memory(L, &wbytes, &sbytes);
    printf("memory   weights %.1f MiB, scratch %.1f MiB (upload %.0f ms)\n", wbytes / 1048576.0,
           sbytes / 1048576.0, t1 - t0);
    if ((st = moevk_tensor_download(&ty, y)) ||
        (st = moevk_layer_read_routing(L, T, ids, NULL, NULL)))
        goto vk_error;

    moevk_routing_stats rstats = {.tokens_per_expert = rtpe};
    double c0 = cli_now_ms();
    if (moevk_ref_layer_forward(d, T, x, yr, rids, NULL, near, &rstats)) {
        fprintf(stderr, "moevk demo: the CPU reference ran out of memory\n");
        goto done;
    }
    double c1 = cli_now_ms();

    printf("\nrouting statistics (GPU | CPU reference)\n");
    printf("  tokens per expert  ");
    for (uint32_t e = 0; e < E && e < 16; e++)
        printf("%u ", tpe[e]);
    printf("%s\n", E > 16 ? "..." : "");
    uint32_t count_mismatch = 0;
    for (uint32_t e = 0; e < E; e++)
        count_mismatch += tpe[e] != rtpe[e];
    printf("  dropped            %llu | %llu\n", (unsigned long long)stats.dropped,
           (unsigned long long)rstats.dropped);
    printf("  load-balance loss  %.6f | %.6f\n", stats.load_balancing_loss,
           rstats.load_balancing_loss);
    printf("  router z-loss      %.6f | %.6f\n", stats.router_z_loss, rstats.router_z_loss);
    printf("  routing entropy    %.6f | %.6f\n", stats.routing_entropy, rstats.routing_entropy);

    uint32_t id_mismatch = 0, near_ties = 0;
    double num = 0, den = 0;
    for (uint32_t t = 0; t < T; t++) {
        if (near[t]) {
            near_ties++;
            continue;
        }
        for (uint32_t j = 0; j < K; j++)
            id_mismatch += ids[t * K + j] != rids[t * K + j];
        for (uint32_t h = 0; h < H; h++) {
            double diff = (double)y[t * H + h] - yr[t * H + h];
            num += diff * diff;
            den += (double)yr[t * H + h] * yr[t * H + h];
        }
    }
    double err = den > 0 ? sqrt(num / den) : sqrt(num);
    double tol = dt == MOEVK_DTYPE_F32 ? 1e-5 : 1e-4;
    printf("\ncheck against the CPU reference (double accumulation, same %s weights)\n",
           moevk_dtype_name(dt));
    printf("  output rel. L2 error   %.3e (tolerance %.0e)\n", err, tol);
    printf("  routing ids differing  %u of %u (near-ties excluded: %u tokens)\n", id_mismatch,
           T * K, near_ties);
    printf("  per-expert counts      %s\n", count_mismatch ? "DIFFER" : "identical");
    printf("  CPU reference time     %.0f ms\n", c1 - c0);

    printf("\nGPU time per stage (median of %u runs, timestamps)\n", runs);
    double total = 0;
    double *col = malloc(sizeof(double) * runs);
    for (int s = 0; s < MOEVK_STAGE_COUNT && col; s++) {
        for (uint32_t i = 0; i < runs; i++)
            col[i] = ms[i * MOEVK_STAGE_COUNT + s];
        qsort(col, runs, sizeof(double), cmp_double);
        double med = col[runs / 2];
        total += med;
        printf("  %-14s %9.3f ms\n", moevk_stage_name((moevk_stage)s), med);
    }
    free(col);
    printf("  %-14s %9.3f ms   (first pass wall time incl. submit %.1f ms)\n", "total", total,
           wall_first);
    if (!info->timestamps)
        printf("  (this device has no timestamps: times are zero)\n");
    if (info->device_type == 4 /* VK_PHYSICAL_DEVICE_TYPE_CPU */)
        printf("  (a CPU implementation of Vulkan: these times are not GPU performance "
               "figures)\n");

    rc = (err <= tol && id_mismatch == 0 && count_mismatch == 0) ? 0 : 1;
    if (validate && moevk_context_validation_messages(ctx)) {
        printf("validation messages: %u\n", moevk_context_validation_messages(ctx));
        rc = 1;
    }
    printf("\n%s\n", rc ? "FAILED" : "OK");
    goto done;
vk_error:
    fprintf(stderr, "moevk demo: %s: %s\n", moevk_status_string(st), moevk_context_last_error(ctx));
done:
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
    moevk_layer_destroy(L);
    moevk_context_destroy(ctx);
    cli_weights_free(&w);
    free(x), free(y), free(yr), free(tpe), free(rtpe), free(ids), free(rids), free(near), free(ms);
    return rc;
}
