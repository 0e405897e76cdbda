/*
 * moevk demo: the main job. One real-shaped MoE layer (a preset, optionally
 * scaled down) on a backend of the table (the Vulkan device by default):
 * routing statistics, the error against the CPU reference, and the time of
 * every stage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli.h"
#include "harness/harness.h"
#include "presets/presets.h"
#include "util/rng.h"
#include "util/tool.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *f)
{
    char names[512];
    fprintf(f,
            "usage: moevk demo [--preset NAME] [--scale S] [--tokens T] [--dtype FORMAT]\n"
            "                  [--runs N] [--seed S] [--backend B] [--device D] [--validate]\n"
            "                  [--batch-invariant] [--vram-budget SIZE|P%%]\n"
            "  Runs one MoE layer of a preset model (H and F divided by S; E and k kept)\n"
            "  on random inputs, checks it against the CPU reference and times each stage.\n"
            "  --dtype: the expert weights' format, %s\n"
            "  (random valid blocks for a block format; rows that are not whole blocks get\n"
            "  llama.cpp's fallback format, as quantising does)\n"
            "  --vram-budget: device memory for the routed experts (bytes, K/M/G/T, or a\n"
            "  percentage of their bytes); the rest run from host memory, the hot ones\n"
            "  cached on the device\n"
            "  Defaults: --preset mixtral-8x7b --scale 8 --tokens 64 --dtype bf16 --runs 5\n"
            "  --backend vulkan (%s)\n"
            "presets:",
            mvk_dtype_names(1, names, sizeof names), mvk_backend_list(", ").s);
    for (uint32_t i = 0; mvk_preset_at(i); i++)
        fprintf(f, " %s", mvk_preset_at(i)->name);
    fprintf(f, "\n");
}

/* One layer of desc on a backend: open, create, and the time create took. */
typedef struct demo_run {
    const mvk_backend *b;
    void *dev, *layer;
    mvk_backend_info info;
    double create_ms;
} demo_run;

static int demo_open(demo_run *r, const mvk_backend *b, const mvk_backend_opts *o,
                     const moevk_layer_desc *d)
{
    char err[1024] = "";
    memset(r, 0, sizeof *r);
    r->b = b;
    moevk_status st = MOEVK_ERROR_UNSUPPORTED;
    if (!b->available(err, sizeof err))
        goto fail;
    if ((st = b->open(o, &r->dev, &r->info, err, sizeof err)))
        goto fail;
    double t0 = mvk_now_ms();
    if ((st = b->create(r->dev, d, NULL, &r->layer, err, sizeof err)))
        goto fail;
    r->create_ms = mvk_now_ms() - t0;
    return 0;
fail:
    fprintf(stderr, "moevk demo: %s: %s: %s\n", b->name, moevk_status_string(st), err);
    return -1;
}

static void demo_close(demo_run *r)
{
    if (r->layer)
        r->b->destroy(r->layer);
    if (r->dev)
        r->b->close(r->dev);
    memset(r, 0, sizeof *r);
}

int cli_demo(int argc, char **argv)
{
    const char *preset = "mixtral-8x7b", *device = NULL, *backend = "vulkan", *budget = NULL;
    uint32_t scale = 8, T = 64, runs = 5;
    uint64_t seed = 1;
    moevk_dtype dt = MOEVK_DTYPE_BF16;
    int validate = 0, batch_invariant = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--validate") || !strcmp(a, "--batch-invariant")) {
            *(!strcmp(a, "--validate") ? &validate : &batch_invariant) = 1;
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
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--vram-budget")) budget = v;
        else if (!strcmp(a, "--dtype")) {
            if (mvk_dtype_parse(v, 1, &dt)) {
                fprintf(stderr, "moevk demo: unknown dtype '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "moevk demo: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    const mvk_preset *p = mvk_preset_find(preset);
    const mvk_backend *b = mvk_backend_find(backend);
    if (!p || !b) {
        fprintf(stderr, "moevk demo: unknown %s '%s'\n", p ? "backend" : "preset",
                p ? backend : preset);
        usage(stderr);
        return 2;
    }
    if (!T || !scale || !runs) {
        fprintf(stderr, "moevk demo: --tokens, --scale and --runs must be >= 1\n");
        return 2;
    }
    mvk_layer_weights w;
    if (mvk_weights_make(p, scale, dt, seed, &w)) {
        fprintf(stderr, "moevk demo: out of host memory for the weights\n");
        return 1;
    }
    if (batch_invariant)
        w.desc.flags |= MOEVK_LAYER_BATCH_INVARIANT;
    if (budget) {
        uint64_t bytes;
        char why[160];
        if (mvk_parse_budget(budget, mvk_desc_routed_bytes(&w.desc), &bytes, why, sizeof why)) {
            fprintf(stderr, "moevk demo: --vram-budget %s\n", why);
            mvk_weights_free(&w);
            return 2;
        }
        mvk_desc_set_budget(&w.desc, bytes);
    }
    const moevk_layer_desc *d = &w.desc;
    const uint32_t H = d->hidden, E = d->num_experts, K = d->top_k;
    const mvk_backend_opts bo = {.device = device, .validate = validate};
    demo_run run, ref;
    memset(&ref, 0, sizeof ref);
    if (demo_open(&run, b, &bo, d)) {
        demo_close(&run);
        mvk_weights_free(&w);
        return 1;
    }
    const mvk_backend_info *info = &run.info;
    printf("device   %s\n", info->desc);
    char fmts[160];
    mvk_desc_formats(d, fmts, sizeof fmts);
    printf("layer    %s scaled 1/%u: H=%u F=%u E=%u k=%u, %s weights, %u shared expert%s, "
           "T=%u tokens\n",
           p->name, scale, H, d->ffn, E, K, fmts, d->num_shared,
           d->num_shared == 1 ? "" : "s", T);

    int rc = 1;
    char err[1024] = "";
    float *x = malloc(sizeof(float) * T * H), *y = malloc(sizeof(float) * T * H);
    float *yr = malloc(sizeof(float) * T * H);
    uint32_t *tpe = calloc(E, 4), *rtpe = calloc(E, 4), *ids = malloc(4ull * T * K),
             *rids = malloc(4ull * T * K);
    uint8_t *near = malloc(T);
    double *ms = malloc(sizeof(double) * runs * MOEVK_STAGE_COUNT);
    double *col = malloc(sizeof(double) * runs);
    if (!x || !y || !yr || !tpe || !rtpe || !ids || !rids || !near || !ms || !col) {
        fprintf(stderr, "moevk demo: out of host memory\n");
        goto done;
    }
    mvk_rng r = mvk_rng_seed(seed, 99);
    mvk_rng_fill(&r, MOEVK_DTYPE_F32, x, (size_t)T * H, 1.0f);

    moevk_routing_stats stats = {.tokens_per_expert = tpe};
    moevk_pass_info work;
    memset(&work, 0, sizeof work);
    double wall_first = 0;
    moevk_status st;
    for (uint32_t i = 0; i < runs; i++) {
        const mvk_backend_out o = {.y = y, .ids = ids, .stats = &stats,
                                   .stage_ms = &ms[i * MOEVK_STAGE_COUNT], .pass_info = &work};
        double a = mvk_now_ms();
        if ((st = b->forward(run.layer, T, x, &o, err, sizeof err))) {
            fprintf(stderr, "moevk demo: %s: %s: %s\n", b->name, moevk_status_string(st), err);
            goto done;
        }
        if (i == 0)
            wall_first = mvk_now_ms() - a;
    }
    mvk_backend_memory mem;
    b->memory(run.layer, T, &mem);
    {
        /* the expert matrices packed, against the same layer in bf16 */
        moevk_layer_desc bf = *d;
        bf.flags &= ~(uint32_t)MOEVK_LAYER_MATRIX_DTYPES;
        bf.weight_dtype = MOEVK_DTYPE_BF16;
        const double packed = mvk_desc_expert_bytes(d), b16 = mvk_desc_expert_bytes(&bf);
        const double elems = b16 / 2;
        printf("memory   weights %.1f MiB (experts %.1f MiB packed, %.2f bits a weight; %.1f "
               "MiB in bf16), scratch %.1f MiB (upload %.0f ms)\n",
               mem.weights / 1048576.0, packed / 1048576.0, elems > 0 ? 8 * packed / elems : 0,
               b16 / 1048576.0, mem.scratch / 1048576.0, run.create_ms);
    }
    if (mem.budgeted) {
        const moevk_cache_stats *c = &mem.cache;
        printf("budget   %.1f MiB of device memory for the routed experts (%.1f MiB): %u "
               "device slots for %u experts (%u filled now),\n         all in host memory "
               "(%.1f MiB); over %u runs %llu rows from the device, %llu from host memory,\n"
               "         %llu experts promoted (%.1f MiB copied)\n",
               d->vram_budget / 1048576.0, mvk_desc_routed_bytes(d) / 1048576.0,
               c->device_slots, E, c->resident_experts, mem.host_weights / 1048576.0, runs,
               (unsigned long long)c->hits, (unsigned long long)c->misses,
               (unsigned long long)c->promotions, c->bytes_moved / 1048576.0);
    }
    if (work.tokens) {
        const int up = MOEVK_STAGE_EXPERTS_UP, dn = MOEVK_STAGE_EXPERTS_DOWN;
        double useful = work.macs_useful[up] + work.macs_useful[dn];
        double needed = work.weight_bytes_needed[up] + work.weight_bytes_needed[dn];
        printf("work     %u dispatches, %u barriers; experts on the skinny / 16-row / 64-row "
               "kernels %u / %u / %u;\n         expert kernels launch %.3fx the useful "
               "multiply-adds and fetch %.3fx the selected weights' bytes\n",
               work.dispatches, work.barriers, work.experts_per_path[0],
               work.experts_per_path[1], work.experts_per_path[2],
               useful > 0 ? (work.macs_launched[up] + work.macs_launched[dn]) / useful : 0,
               needed > 0 ? (work.weight_bytes_fetched[up] + work.weight_bytes_fetched[dn]) /
                                needed
                          : 0);
    }

    moevk_routing_stats rstats = {.tokens_per_expert = rtpe};
    double ref_ms = 0;
    const mvk_backend_out ro = {.y = yr, .ids = rids, .near_tie = near, .stats = &rstats,
                                .total_ms = &ref_ms};
    if (demo_open(&ref, mvk_backend_reference(), &bo, d))
        goto done;
    if ((st = ref.b->forward(ref.layer, T, x, &ro, err, sizeof err))) {
        fprintf(stderr, "moevk demo: the CPU reference: %s: %s\n", moevk_status_string(st), err);
        goto done;
    }

    printf("\nrouting statistics (%s | CPU reference)\n", b->name);
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
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    double tol = mvkc_y_tolerance(d, b->flags);
    printf("\ncheck against the CPU reference (double accumulation, same %s%s weights)\n",
           moevk_dtype_block_elems(dt) > 1 ? "dequantised " : "", fmts);
    printf("  output rel. L2 error   %.3e (tolerance %.0e)\n", rel, tol);
    printf("  routing ids differing  %u of %u (near-ties excluded: %u tokens)\n", id_mismatch,
           T * K, near_ties);
    printf("  per-expert counts      %s\n", count_mismatch ? "DIFFER" : "identical");
    printf("  CPU reference time     %.0f ms\n", ref_ms);

    printf("\n%s time per stage (median of %u runs%s)\n", b->name, runs,
           info->timestamps ? ", timestamps" : "");
    double total = 0;
    for (int s = 0; s < MOEVK_STAGE_COUNT; s++) {
        for (uint32_t i = 0; i < runs; i++)
            col[i] = ms[i * MOEVK_STAGE_COUNT + s];
        qsort(col, runs, sizeof(double), cmp_double);
        double med = col[runs / 2];
        total += med;
        printf("  %-14s %9.3f ms\n", moevk_stage_name((moevk_stage)s), med);
    }
    printf("  %-14s %9.3f ms   (first pass wall time incl. transfers %.1f ms)\n", "total",
           total, wall_first);
    if (!info->timestamps)
        printf("  (this device has no timestamps: times are zero)\n");
    if (info->cpu_driver)
        printf("  (a CPU implementation of Vulkan: these times are not GPU performance "
               "figures)\n");

    rc = (rel <= tol && id_mismatch == 0 && count_mismatch == 0) ? 0 : 1;
    uint32_t msgs = b->problems ? b->problems(run.dev) : 0;
    if (validate && msgs) {
        printf("validation messages: %u\n", msgs);
        rc = 1;
    }
    printf("\n%s\n", rc ? "FAILED" : "OK");
done:
    demo_close(&ref);
    demo_close(&run);
    mvk_weights_free(&w);
    free(x), free(y), free(yr), free(tpe), free(rtpe), free(ids), free(rids), free(near), free(ms);
    free(col);
    return rc;
}
