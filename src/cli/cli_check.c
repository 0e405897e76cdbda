/*
 * moevk check: random MoE layer cases (every routing mode, activation,
 * dtype, capacity, shared experts and special scenarios: ties, NaN/Inf,
 * idle experts, one dominant expert) run on the GPU and compared with the
 * CPU reference under the policy of src/cli/check_cases.h. One row per
 * failing case (its seed reproduces it alone), then "N passed, M failed".
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_cases.h"
#include "cli.h"
#ifdef MOEVK_HAVE_CUDA
#include "cuda/moevk_cuda.h"
#endif

static void check_usage(FILE *f)
{
    fprintf(f,
            "usage: moevk check --against cpu|cuda [--backend vulkan|cuda|cuda-cublas]\n"
            "                   [--cases N] [--seed S] [--device D] [--validate]\n"
            "                   [--verbose] [--max-work M]\n"
            "\n"
            "Runs N random MoE layer cases (seeds S .. S+N-1, default N=100, S=1) on the\n"
            "GPU and compares each with the CPU reference: routing ids exactly (except\n"
            "near-ties), weights, rows, per-expert counts, drops, y (rel. L2 1e-5 for\n"
            "f32 weights, 1e-4 for f16/bf16) and the routing losses. Prints one row per\n"
            "failing case (reproduce it with --seed SEED --cases 1), every case with\n"
            "--verbose, and a final line 'N passed, M failed'. Exit status 0 iff none\n"
            "failed.\n"
            "  --validate      enable the Vulkan validation layer; a case that triggers\n"
            "                  a validation message fails\n"
            "  --max-work M    size budget of a case in multiply-adds (default 12M)\n"
            "\n"
            "Backends: vulkan (default), cuda (the CUDA reference kernels), cuda-cublas\n"
            "(cuBLAS expert GEMMs on f32 inputs, within the contract tolerance).\n"
            "--against cuda runs the backend and the CUDA reference on the same cases:\n"
            "both must pass against the CPU reference, and the two must agree with each\n"
            "other (y rel. L2, ids except near-ties, per-expert counts, drops, losses).\n"
            "Without a CUDA device the CUDA cases are reported as skipped.\n");
}

typedef enum check_backend { CB_VULKAN, CB_CUDA, CB_CUDA_CUBLAS, CB_NONE } check_backend;

static check_backend parse_backend(const char *s)
{
    if (!strcmp(s, "vulkan"))
        return CB_VULKAN;
    if (!strcmp(s, "cuda") || !strcmp(s, "cuda-ref"))
        return CB_CUDA;
    if (!strcmp(s, "cuda-cublas"))
        return CB_CUDA_CUBLAS;
    return CB_NONE;
}

static const char *const backend_names[] = {"vulkan", "cuda", "cuda-cublas"};

#ifdef MOEVK_HAVE_CUDA
/* A case on a CUDA backend, in the shape mvkc_compare expects. */
static moevk_status cuda_run(const mvkc_case *c, check_backend b, mvkc_gpu *out, char *what,
                             size_t n)
{
    moevk_status st = mvkc_gpu_alloc(c, out);
    if (st) {
        snprintf(what, n, "host allocation");
        return st;
    }
    mvk_cuda_layer *layer = NULL;
    char err[256] = "";
    st = mvk_cuda_layer_create(&c->desc, b == CB_CUDA ? MVK_CUDA_REF : MVK_CUDA_CUBLAS_F32,
                               &layer, err, sizeof err);
    if (!st)
        st = mvk_cuda_layer_forward(layer, c->T, c->x, out->y, out->ids, out->weights,
                                    out->rows, &out->stats, NULL, NULL, err, sizeof err);
    mvk_cuda_layer_destroy(layer);
    if (st) {
        snprintf(what, n, "%s: %s", moevk_status_string(st), err);
        return st;
    }
    /* one source of statistics on CUDA: the read-back copy is the same */
    memcpy(out->tpe_read, out->tpe, sizeof(uint32_t) * c->desc.num_experts);
    out->stats_read = out->stats;
    out->stats_read.tokens_per_expert = out->tpe_read;
    return MOEVK_SUCCESS;
}
#endif

/* Direct agreement of two backends on a case (both already passed the CPU
 * reference): y within the tolerance, ids equal except near-tied tokens,
 * counts and drops equal (when no near-tie could move them), losses close. */
static int agree(const mvkc_case *c, const mvkc_ref *ref, const mvkc_gpu *a, const mvkc_gpu *b,
                 double *y_err, char *why, size_t n)
{
    const moevk_layer_desc *d = &c->desc;
    const uint32_t T = c->T, H = d->hidden, K = d->top_k;
    double num = 0, den = 0;
    uint32_t near = 0;
    for (uint32_t t = 0; t < T; t++) {
        bool skip = ref->near_tie[t];
        for (uint32_t j = 0; j < K && !skip; j++)
            skip = a->ids[t * K + j] != ref->ids[t * K + j] ||
                   b->ids[t * K + j] != ref->ids[t * K + j];
        if (skip) {
            near++;
            continue;
        }
        for (uint32_t h = 0; h < H; h++) {
            double ya = a->y[t * H + h], yb = b->y[t * H + h];
            if (!isfinite(ya) || !isfinite(yb)) {
                if (isnan(ya) != isnan(yb) || (!isnan(ya) && ya != yb)) {
                    snprintf(why, n, "token %u: non-finite y differs (%g vs %g)", t, ya, yb);
                    return 0;
                }
                continue;
            }
            num += (ya - yb) * (ya - yb);
            den += yb * yb;
        }
    }
    *y_err = den > 0 ? sqrt(num / den) : sqrt(num);
    double tol = d->weight_dtype == MOEVK_DTYPE_F32 ? 2e-5 : 2e-4;
    if (!(*y_err <= tol)) {
        snprintf(why, n, "y differs between the backends: rel. L2 %.3e > %.0e", *y_err, tol);
        return 0;
    }
    if (!near) {
        for (uint32_t e = 0; e < d->num_experts; e++)
            if (a->tpe[e] != b->tpe[e]) {
                snprintf(why, n, "tokens_per_expert[%u]: %u vs %u", e, a->tpe[e], b->tpe[e]);
                return 0;
            }
        if (a->stats.dropped != b->stats.dropped) {
            snprintf(why, n, "dropped: %llu vs %llu", (unsigned long long)a->stats.dropped,
                     (unsigned long long)b->stats.dropped);
            return 0;
        }
    }
    const double la[3] = {a->stats.load_balancing_loss, a->stats.router_z_loss,
                          a->stats.routing_entropy};
    const double lb[3] = {b->stats.load_balancing_loss, b->stats.router_z_loss,
                          b->stats.routing_entropy};
    static const char *const names[3] = {"load-balancing loss", "z-loss", "entropy"};
    for (int i = 0; i < 3; i++) {
        if (isnan(la[i]) && isnan(lb[i]))
            continue;
        if (!(fabs(la[i] - lb[i]) <= 2e-4 * fabs(lb[i]) + 2e-5)) {
            snprintf(why, n, "%s: %.7g vs %.7g", names[i], la[i], lb[i]);
            return 0;
        }
    }
    return 1;
}

/* Run a case on a backend: 0 ok, 1 failed (what says why). */
static moevk_status backend_run(moevk_context *ctx, const mvkc_case *c, check_backend b,
                                mvkc_gpu *out, char *what, size_t n)
{
    if (b == CB_VULKAN)
        return mvkc_gpu_run(ctx, c, out, what, n);
#ifdef MOEVK_HAVE_CUDA
    return cuda_run(c, b, out, what, n);
#else
    snprintf(what, n, "the CUDA backends are not built");
    return MOEVK_ERROR_UNSUPPORTED;
#endif
}

int cli_check(int argc, char **argv)
{
    const char *device = NULL, *against = NULL, *backend = "vulkan";
    uint64_t seed = 1, cases = 100, max_work = 0;
    int validate = 0, verbose = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            check_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--validate")) {
            validate = 1;
            continue;
        } else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
            verbose = 1;
            continue;
        } else if (!v) {
            fprintf(stderr, "moevk check: %s needs a value\n", a);
            return 2;
        }
        i++;
        char *end = NULL;
        if (!strcmp(a, "--device")) {
            device = v;
        } else if (!strcmp(a, "--against")) {
            against = v;
        } else if (!strcmp(a, "--backend")) {
            backend = v;
        } else if (!strcmp(a, "--seed") || !strcmp(a, "--cases") || !strcmp(a, "--max-work")) {
            unsigned long long n = strtoull(v, &end, 0);
            if (!*v || *end || v[0] == '-') {
                fprintf(stderr, "moevk check: %s needs a non-negative number, not '%s'\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--seed"))
                seed = n;
            else if (!strcmp(a, "--cases"))
                cases = n;
            else
                max_work = n;
        } else {
            fprintf(stderr, "moevk check: unknown option '%s'\n", a);
            check_usage(stderr);
            return 2;
        }
    }
    if (!against || (strcmp(against, "cpu") && strcmp(against, "cuda"))) {
        fprintf(stderr, "moevk check: %s: --against cpu or --against cuda\n",
                against ? against : "--against is required");
        return 2;
    }
    const check_backend b = parse_backend(backend);
    if (b == CB_NONE) {
        fprintf(stderr, "moevk check: unknown backend '%s' (vulkan, cuda, cuda-cublas)\n",
                backend);
        return 2;
    }
    const bool vs_cuda = !strcmp(against, "cuda");
    if (vs_cuda && b == CB_CUDA) {
        fprintf(stderr, "moevk check: --backend cuda --against cuda compares nothing; use "
                        "--against cpu\n");
        return 2;
    }
    const bool need_cuda = vs_cuda || b != CB_VULKAN;
    char cuda_why[256] = "the CUDA backends are not built";
    bool cuda_ok = false;
#ifdef MOEVK_HAVE_CUDA
    cuda_ok = mvk_cuda_device_available(cuda_why, sizeof cuda_why) != 0;
#endif
    if (need_cuda) {
        if (cuda_ok) {
            printf("CUDA device: %s\n", cuda_why);
        } else {
            printf("skipped: no CUDA device (%s)\n", cuda_why);
            printf("0 passed, 0 failed, %llu skipped\n", (unsigned long long)cases);
            return 0;
        }
    }
    const bool need_vulkan = b == CB_VULKAN;

    moevk_context *ctx = NULL;
    if (need_vulkan) {
        ctx = cli_context(device, validate);
        if (!ctx)
            return 1;
        const moevk_device_info *info = moevk_context_device_info(ctx);
        printf("device: %s (%s)\n", info->name, info->driver_name);
    }
    printf("backend %s against %s\n", backend_names[b], vs_cuda ? "cuda (and the CPU "
                                                                    "reference)" : "cpu");
    if (cases == 1)
        printf("checking 1 case, seed %llu, against the CPU reference\n",
               (unsigned long long)seed);
    else
        printf("checking %llu cases, seeds %llu..%llu, against the CPU reference\n",
               (unsigned long long)cases, (unsigned long long)seed,
               (unsigned long long)(seed + cases - (cases ? 1 : 0)));
    fflush(stdout);

    mvkc_limits lim;
    memset(&lim, 0, sizeof lim);
    lim.max_work = max_work;
    uint64_t passed = 0, failed = 0;
    double t_start = cli_now_ms();
    for (uint64_t i = 0; i < cases; i++) {
        uint64_t s = seed + i;
        mvkc_case c;
        mvkc_ref ref;
        mvkc_gpu gpu, other;
        mvkc_report rep, rep2;
        char desc[384], what[512] = "";
        memset(&ref, 0, sizeof ref);
        memset(&gpu, 0, sizeof gpu);
        memset(&other, 0, sizeof other);
        memset(&rep, 0, sizeof rep);
        memset(&rep2, 0, sizeof rep2);
        if (mvkc_case_random(s, &lim, &c)) {
            fprintf(stderr, "moevk check: out of host memory building case %llu\n",
                    (unsigned long long)s);
            failed++;
            continue;
        }
        mvkc_case_describe(&c, desc, sizeof desc);
        uint32_t vmsgs = ctx ? moevk_context_validation_messages(ctx) : 0;
        double t0 = cli_now_ms();
        moevk_status st = backend_run(ctx, &c, b, &gpu, what, sizeof what);
        double t1 = cli_now_ms();
        int ok;
        double cross_err = 0;
        if (st) {
            ok = 0;
            snprintf(rep.reason, sizeof rep.reason, "%s: %.480s", backend_names[b], what);
        } else if (mvkc_reference(&c, &ref)) {
            ok = 0;
            snprintf(rep.reason, sizeof rep.reason, "out of host memory (reference)");
        } else {
            ok = mvkc_compare(&c, &ref, &gpu, &rep);
        }
        if (ok && vs_cuda) {
            if (backend_run(ctx, &c, CB_CUDA, &other, what, sizeof what)) {
                ok = 0;
                snprintf(rep.reason, sizeof rep.reason, "cuda: %.480s", what);
            } else if (!mvkc_compare(&c, &ref, &other, &rep2)) {
                ok = 0;
                snprintf(rep.reason, sizeof rep.reason, "cuda vs cpu: %.480s", rep2.reason);
            } else if (!agree(&c, &ref, &gpu, &other, &cross_err, what, sizeof what)) {
                ok = 0;
                snprintf(rep.reason, sizeof rep.reason, "%s vs cuda: %.480s", backend_names[b],
                         what);
            }
        }
        uint32_t new_msgs = ctx ? moevk_context_validation_messages(ctx) - vmsgs : 0;
        if (ok && new_msgs) {
            ok = 0;
            snprintf(rep.reason, sizeof rep.reason, "%u validation-layer message%s", new_msgs,
                     new_msgs == 1 ? "" : "s");
        }
        double t2 = cli_now_ms();
        if (ok) {
            passed++;
            if (verbose)
                printf("ok    seed %-10llu %s | y err %.2e%s, near-ties %u (%u swapped), "
                       "non-finite %u, dropped %llu | gpu %.0f ms, ref %.0f ms\n",
                       (unsigned long long)s, desc, vs_cuda ? cross_err : rep.y_err,
                       vs_cuda ? " (vs cuda)" : "", rep.near_ties, rep.swapped,
                       rep.nonfinite, (unsigned long long)rep.dropped, t1 - t0, t2 - t1);
        } else {
            failed++;
            printf("FAIL  seed %-10llu %s | %s\n", (unsigned long long)s, desc, rep.reason);
        }
        fflush(stdout);
        mvkc_gpu_free(&gpu);
        mvkc_gpu_free(&other);
        mvkc_ref_free(&ref);
        mvkc_case_free(&c);
    }
    if (verbose)
        printf("(%.1f s)\n", (cli_now_ms() - t_start) / 1e3);
    printf("%llu passed, %llu failed\n", (unsigned long long)passed, (unsigned long long)failed);
    moevk_context_destroy(ctx);
    return failed ? 1 : 0;
}
