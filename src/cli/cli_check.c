/*
 * moevk check: random MoE layer cases (every routing mode, activation,
 * dtype, capacity, shared experts and special scenarios: ties, NaN/Inf,
 * idle experts, one dominant expert) run on the GPU and compared with the
 * CPU reference under the policy of src/cli/check_cases.h. One row per
 * failing case (its seed reproduces it alone), then "N passed, M failed".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_cases.h"
#include "cli.h"

static void check_usage(FILE *f)
{
    fprintf(f,
            "usage: moevk check --against cpu [--cases N] [--seed S] [--device D]\n"
            "                   [--backend vulkan] [--validate] [--verbose]\n"
            "                   [--max-work M]\n"
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
            "  --max-work M    size budget of a case in multiply-adds (default 12M)\n");
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
    if (!against || strcmp(against, "cpu") != 0) {
        fprintf(stderr, "moevk check: %s: only --against cpu (the CPU reference) is supported\n",
                against ? against : "--against is required");
        return 2;
    }
    if (strcmp(backend, "vulkan") != 0) {
        fprintf(stderr,
                "moevk check: backend '%s' is not available: this build has only the Vulkan "
                "backend (--backend vulkan)\n",
                backend);
        return 2;
    }

    moevk_context *ctx = cli_context(device, validate);
    if (!ctx)
        return 1;
    const moevk_device_info *info = moevk_context_device_info(ctx);
    printf("device: %s (%s)\n", info->name, info->driver_name);
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
        mvkc_gpu gpu;
        mvkc_report rep;
        char desc[384], what[512] = "";
        memset(&ref, 0, sizeof ref);
        memset(&gpu, 0, sizeof gpu);
        memset(&rep, 0, sizeof rep);
        if (mvkc_case_random(s, &lim, &c)) {
            fprintf(stderr, "moevk check: out of host memory building case %llu\n",
                    (unsigned long long)s);
            failed++;
            continue;
        }
        mvkc_case_describe(&c, desc, sizeof desc);
        uint32_t vmsgs = moevk_context_validation_messages(ctx);
        double t0 = cli_now_ms();
        moevk_status st = mvkc_gpu_run(ctx, &c, &gpu, what, sizeof what);
        double t1 = cli_now_ms();
        int ok;
        if (st) {
            ok = 0;
            snprintf(rep.reason, sizeof rep.reason, "%s", what);
        } else if (mvkc_reference(&c, &ref)) {
            ok = 0;
            snprintf(rep.reason, sizeof rep.reason, "out of host memory (reference)");
        } else {
            ok = mvkc_compare(&c, &ref, &gpu, &rep);
        }
        uint32_t new_msgs = moevk_context_validation_messages(ctx) - vmsgs;
        if (ok && new_msgs) {
            ok = 0;
            snprintf(rep.reason, sizeof rep.reason, "%u validation-layer message%s", new_msgs,
                     new_msgs == 1 ? "" : "s");
        }
        double t2 = cli_now_ms();
        if (ok) {
            passed++;
            if (verbose)
                printf("ok    seed %-10llu %s | y err %.2e, near-ties %u (%u swapped), "
                       "non-finite %u, dropped %llu | gpu %.0f ms, ref %.0f ms\n",
                       (unsigned long long)s, desc, rep.y_err, rep.near_ties, rep.swapped,
                       rep.nonfinite, (unsigned long long)rep.dropped, t1 - t0, t2 - t1);
        } else {
            failed++;
            printf("FAIL  seed %-10llu %s | %s\n", (unsigned long long)s, desc, rep.reason);
        }
        fflush(stdout);
        mvkc_gpu_free(&gpu);
        mvkc_ref_free(&ref);
        mvkc_case_free(&c);
    }
    if (verbose)
        printf("(%.1f s)\n", (cli_now_ms() - t_start) / 1e3);
    printf("%llu passed, %llu failed\n", (unsigned long long)passed, (unsigned long long)failed);
    moevk_context_destroy(ctx);
    return failed ? 1 : 0;
}
