/*
 * moevk check: random MoE layer cases (every routing mode, activation,
 * dtype, capacity, shared experts and special scenarios: ties, NaN/Inf,
 * idle experts, one dominant expert) run on a backend of the table and
 * compared with the CPU reference by the harness (src/harness/harness.h).
 * One row per failing case with the command that reproduces it alone, then
 * "N passed, M failed".
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "harness/harness.h"
#include "util/tool.h"

static void check_usage(FILE *f)
{
    fprintf(f,
            "usage: moevk check --against cpu|BACKEND [--backend BACKEND]\n"
            "                   [--cases N] [--seed S] [--device D] [--validate]\n"
            "                   [--verbose] [--max-work M] [--path P] [--digest]\n"
            "                   [--routing MODE]\n"
            "\n"
            "Runs N random MoE layer cases (seeds S .. S+N-1, default N=100, S=1) on the\n"
            "backend (default vulkan) and compares each with the CPU reference: routing\n"
            "ids exactly (except near-ties), weights, rows, per-expert counts, drops, y\n"
            "(rel. L2 1e-5 for f32 weights, 1e-4 for f16/bf16; cuda-cublas, which rounds\n"
            "activations to the weight dtype: 4 units of that rounding) and the routing\n"
            "losses. Prints one row per failing case with the command that reproduces it\n"
            "alone, every case with --verbose, and a final line 'N passed, M failed'.\n"
            "Exit status 0 iff none failed.\n"
            "  --validate      enable the Vulkan validation layer; a case that triggers\n"
            "                  a validation message fails\n"
            "  --max-work M    size budget of a case in multiply-adds (default 12M)\n"
            "  --routing MODE  every case in one routing mode: softmax_topk,\n"
            "                  topk_softmax, sigmoid_grouped, expert_choice or\n"
            "                  sparsemixer (a seed then draws another case than\n"
            "                  without the option)\n"
            "  --path P        vulkan: the expert kernel path of every expert: auto (by\n"
            "                  row count, default), skinny, small (16-row tiles), large\n"
            "                  (64-row tiles), matrix (64-row tiles on emulated matrix\n"
            "                  units), or all: every case on each of them in turn\n"
            "  --digest        print a 64-bit FNV-1a digest of each case's output bits\n"
            "                  (y, ids, weights, rows, per-expert counts) and of all of\n"
            "                  them: two builds or devices that print the same digests\n"
            "                  gave bitwise the same results\n"
            "\n"
            "Backends: %s (cuda = cuda-ref).\n"
            "--against BACKEND runs the case there too: both must pass against the CPU\n"
            "reference, and the two must agree with each other (y rel. L2, ids except\n"
            "near-ties, per-expert counts, drops, losses). A backend this machine cannot\n"
            "run (no CUDA device, not built) makes every case count as skipped.\n",
            mvk_backend_list(", ").s);
}

/* 64-bit FNV-1a over n bytes, continuing from h. */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* The digest of a case's result: every output bit the backend produced. */
static uint64_t result_digest(const mvkc_case *c, const mvkc_result *r)
{
    const size_t T = c->T, H = c->desc.hidden, K = moevk_routing_slots(&c->desc), E = c->desc.num_experts;
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv1a(h, r->y, sizeof(float) * T * H);
    h = fnv1a(h, r->ids, sizeof(uint32_t) * T * K);
    h = fnv1a(h, r->weights, sizeof(float) * T * K);
    h = fnv1a(h, r->rows, sizeof(int32_t) * T * K);
    return fnv1a(h, r->tpe, sizeof(uint32_t) * E);
}

static int parse_number(const char *opt, const char *v, uint64_t *out)
{
    char *end = NULL;
    unsigned long long n = strtoull(v, &end, 0);
    if (!*v || *end || v[0] == '-') {
        fprintf(stderr, "moevk check: %s needs a non-negative number, not '%s'\n", opt, v);
        return -1;
    }
    *out = n;
    return 0;
}

/* The kernel variants of --path: name, forced path (1 + MVK_PATH_*, 0 by
 * row count), emulated matrix units. */
static const struct {
    const char *name;
    uint32_t force_path;
    int matrix;
} variants[] = {
    {"auto", 0, 0}, {"skinny", 1, 0}, {"small", 2, 0}, {"large", 3, 0}, {"matrix", 3, 1},
};
#define NVARIANTS (sizeof(variants) / sizeof(variants[0]))

int cli_check(int argc, char **argv)
{
    const char *device = NULL, *against = NULL, *backend = "vulkan", *path = "auto";
    uint32_t routing = 0; /* MVKC_PICK(mode), 0: drawn */
    uint64_t seed = 1, cases = 100, max_work = 0;
    int validate = 0, verbose = 0, digest = 0;
    uint64_t all_digest = 0xcbf29ce484222325ull;
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
        } else if (!strcmp(a, "--digest")) {
            digest = 1;
            continue;
        } else if (!v) {
            fprintf(stderr, "moevk check: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--device")) {
            device = v;
        } else if (!strcmp(a, "--path")) {
            path = v;
        } else if (!strcmp(a, "--against")) {
            against = v;
        } else if (!strcmp(a, "--backend")) {
            backend = v;
        } else if (!strcmp(a, "--routing")) {
            static const moevk_routing modes[] = {
                MOEVK_ROUTING_SOFTMAX_TOPK, MOEVK_ROUTING_TOPK_SOFTMAX,
                MOEVK_ROUTING_SIGMOID_GROUPED, MOEVK_ROUTING_EXPERT_CHOICE,
                MOEVK_ROUTING_SPARSEMIXER};
            for (size_t m = 0; !routing && m < sizeof modes / sizeof modes[0]; m++)
                if (!strcmp(v, mvkc_routing_name(modes[m])))
                    routing = MVKC_PICK(modes[m]);
            if (!routing) {
                fprintf(stderr, "moevk check: --routing %s: softmax_topk, topk_softmax, "
                                "sigmoid_grouped, expert_choice or sparsemixer\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--seed") || !strcmp(a, "--cases") || !strcmp(a, "--max-work")) {
            if (parse_number(a, v, !strcmp(a, "--seed")    ? &seed
                                   : !strcmp(a, "--cases") ? &cases
                                                           : &max_work))
                return 2;
        } else {
            fprintf(stderr, "moevk check: unknown option '%s'\n", a);
            check_usage(stderr);
            return 2;
        }
    }
    size_t v0 = 0, v1 = 0; /* the variants to run: v0 .. v1 */
    if (!strcmp(path, "all")) {
        v1 = NVARIANTS - 1;
    } else {
        while (v0 < NVARIANTS && strcmp(variants[v0].name, path))
            v0++;
        if (v0 == NVARIANTS) {
            fprintf(stderr, "moevk check: --path %s: auto, skinny, small, large, matrix or all\n",
                    path);
            return 2;
        }
        v1 = v0;
    }
    if ((v0 || v1) && strcmp(backend, "vulkan")) {
        fprintf(stderr, "moevk check: --path is for the vulkan backend\n");
        return 2;
    }
    const mvk_backend *b = mvk_backend_find(backend);
    const mvk_backend *vs = against && strcmp(against, "cpu") ? mvk_backend_find(against) : NULL;
    if (!against || (strcmp(against, "cpu") && !vs)) {
        fprintf(stderr, "moevk check: %s: --against cpu or --against BACKEND (%s)\n",
                against ? against : "--against is required", mvk_backend_list(", ").s);
        return 2;
    }
    if (!b) {
        fprintf(stderr, "moevk check: unknown backend '%s' (%s)\n", backend,
                mvk_backend_list(", ").s);
        return 2;
    }
    if (vs == b) {
        fprintf(stderr, "moevk check: --backend %s --against %s compares nothing; use "
                        "--against cpu\n",
                backend, against);
        return 2;
    }

    /* everything this machine cannot run is skipped, before anything opens */
    const mvk_backend *used[2] = {b, vs};
    for (int i = 0; i < 2 && used[i]; i++) {
        char why[512] = "";
        if (!used[i]->available(why, sizeof why)) {
            printf("skipped: backend %s cannot run here (%s)\n", used[i]->name, why);
            printf("0 passed, 0 failed, %llu skipped\n", (unsigned long long)cases);
            return 0;
        }
    }
    mvkc_target t[NVARIANTS] = {{0}}, other = {0};
    for (size_t w = v0; w <= v1; w++) {
        const mvk_backend_opts bo = {.device = device, .validate = validate,
                                     .force_path = variants[w].force_path,
                                     .matrix_units_emulated = variants[w].matrix};
        mvk_backend_info info;
        char err[1024] = "";
        moevk_status st = mvkc_target_open(&t[w], b, &bo, &info, err, sizeof err);
        if (!st && w == v0)
            printf("device: %s\n", info.desc);
        if (!st && w == v0 && (t[w].flags & MVK_BACKEND_ROUNDS_ACTIVATIONS) &&
            !(b->flags & MVK_BACKEND_ROUNDS_ACTIVATIONS))
            printf("matrix units multiply f16 activations (64-row tiles): y of 16-bit and "
                   "block-format weights within 4 units of that rounding\n");
        if (!st && w == v0 && vs) {
            const mvk_backend_opts plain = {.device = device, .validate = validate};
            st = mvkc_target_open(&other, vs, &plain, &info, err, sizeof err);
            if (!st)
                printf("%s device: %s\n", vs->name, info.desc);
        }
        if (st) {
            fprintf(stderr, "moevk check: %s: %s: %s\n", b->name, moevk_status_string(st), err);
            mvkc_target_close(&other);
            for (size_t u = v0; u <= w; u++)
                mvkc_target_close(&t[u]);
            return 1;
        }
    }
    printf("backend %s against %s%s\n", b->name, vs ? vs->name : "cpu",
           vs ? " (and the CPU reference)" : "");
    if (v0 || v1) {
        printf("kernel paths:");
        for (size_t w = v0; w <= v1; w++)
            printf(" %s", variants[w].name);
        printf(" (each case on each)\n");
    }
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
    lim.routing = routing;
    uint64_t passed = 0, failed = 0, experts[3] = {0};
    const mvkc_target *vt = vs ? &other : NULL;
    const uint64_t nv = v1 - v0 + 1;
    double t_start = mvk_now_ms();
    for (uint64_t i = 0; i < cases * nv; i++) {
        const uint64_t s = seed + i / nv;
        const mvkc_target *tt = &t[v0 + i % nv];
        mvkc_check k;
        int ok = mvkc_check_seed(tt, vt, s, &lim, &k);
        for (int q = 0; q < 3; q++)
            experts[q] += k.res.pass.experts_per_path[q];
        if (ok) {
            passed++;
            if (verbose)
                printf("ok    seed %-10llu %s | y err %.2e%s, near-ties %u (%u swapped), "
                       "non-finite %u, dropped %llu | %s %.0f ms, ref %.0f ms\n",
                       (unsigned long long)s, k.desc, vs ? k.cross_err : k.rep.y_err,
                       vs ? " (between the backends)" : "", k.rep.near_ties, k.rep.swapped,
                       k.rep.nonfinite, (unsigned long long)k.rep.dropped, b->name, k.run_ms,
                       k.ref_ms);
        } else {
            char repro[256];
            failed++;
            mvkc_repro(tt, vt, s, &lim, repro, sizeof repro);
            const char *var = variants[v0 + i % nv].name;
            const int forced = strcmp(var, "auto") != 0;
            printf("FAIL  seed %-10llu %s | %s\n      reproduce: %s%s%s\n",
                   (unsigned long long)s, k.desc, k.rep.reason, repro,
                   forced ? " --path " : "", forced ? var : "");
        }
        if (digest && k.res.y) { /* (no result when building the case failed) */
            const uint64_t d = result_digest(&k.c, &k.res);
            all_digest = fnv1a(all_digest, &d, sizeof d);
            printf("digest seed %-10llu %016llx\n", (unsigned long long)s, (unsigned long long)d);
        }
        fflush(stdout);
        mvkc_check_free(&k);
    }
    if (verbose)
        printf("(%.1f s)\n", (mvk_now_ms() - t_start) / 1e3);
    if (experts[0] + experts[1] + experts[2])
        printf("experts per kernel path: skinny %llu, 16-row tiles %llu, 64-row tiles %llu\n",
               (unsigned long long)experts[0], (unsigned long long)experts[1],
               (unsigned long long)experts[2]);
    if (digest)
        printf("digest of all cases: %016llx\n", (unsigned long long)all_digest);
    printf("%llu passed, %llu failed\n", (unsigned long long)passed, (unsigned long long)failed);
    mvkc_target_close(&other);
    for (size_t w = v0; w <= v1; w++)
        mvkc_target_close(&t[w]);
    return failed ? 1 : 0;
}
