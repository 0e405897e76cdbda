/*
 * moevk simulate-ep: what expert parallelism of a preset's layer costs,
 * predicted on the host (no device): R ranks with T tokens each and the
 * contiguous expert split of moevk_ep_layer; routing drawn at random
 * (uniform over the experts, or Zipf-skewed, within the kept expert groups
 * for group-limited routing such as DeepSeek-V3's 4 of 8 groups), admission
 * in the contract's priority order against the whole pass's capacity. Per
 * rank: the rows and bytes it sends and receives in the two all-to-alls
 * (dispatch and combine), the exchange time on a link of the given
 * bandwidth and latency, the expert compute time (a fixed time per expert
 * that gets rows plus the rows' multiply-adds at the given rate) and the
 * load imbalance. The model is documented in docs/benchmarks.md.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "presets/presets.h"
#include "util/rng.h"

typedef struct sim_opts {
    const char *presets;
    const char *ranks;
    uint32_t tokens;
    double gb_s, latency_us, expert_us, tflops, act_bytes, skew;
    uint64_t seed;
    int zipf;
} sim_opts;

static void sim_usage(FILE *f)
{
    fprintf(f,
            "usage: moevk simulate-ep [--preset P,..] [--ranks R,..] [--tokens T]\n"
            "                         [--bandwidth GB/s] [--latency us] [--expert-us us]\n"
            "                         [--tflops TF] [--act-bytes B] [--dist uniform|zipf]\n"
            "                         [--skew S] [--seed N]\n"
            "  Predicts expert parallelism of a preset's layer over R ranks holding T tokens\n"
            "  each (the contiguous expert split of moevk_ep_layer): rows and bytes each rank\n"
            "  exchanges (dispatch and combine all-to-alls, B bytes an activation: 4 is the\n"
            "  f32 rows moevk_ep_layer stages, 2 a bf16 dispatch), exchange time (latency per\n"
            "  peer plus the larger direction over the link), expert compute (expert-us per\n"
            "  expert with rows + 6 H F flops a row at TF TFLOP/s) and load imbalance, from\n"
            "  routing drawn at random (uniform, or Zipf of exponent S over a random order of\n"
            "  the experts; group-limited routing keeps its groups).\n"
            "  Defaults: --preset deepseek-v3,qwen3-235b-a22b,mixtral-8x7b --ranks 1,2,4,8\n"
            "  --tokens 4096 --bandwidth 50 --latency 5 --expert-us 10 --tflops 400\n"
            "  --act-bytes 4 --dist uniform --skew 1.0 --seed 1\n");
}

/* k distinct experts drawn with probability proportional to w among the
 * allowed ones (allowed[e] != 0), into ids. */
static void draw(mvk_rng *r, const double *w, const uint8_t *allowed, uint32_t E, uint32_t k,
                 uint32_t *ids, uint8_t *taken)
{
    memset(taken, 0, E);
    for (uint32_t j = 0; j < k; j++) {
        double sum = 0;
        for (uint32_t e = 0; e < E; e++)
            if (allowed[e] && !taken[e])
                sum += w[e];
        double u = (double)mvk_rng_uniform(r, 0, 1) * sum;
        uint32_t pick = E;
        for (uint32_t e = 0; e < E; e++) {
            if (!allowed[e] || taken[e])
                continue;
            pick = e;
            if (u < w[e])
                break;
            u -= w[e];
        }
        taken[pick] = 1;
        ids[j] = pick;
    }
}

typedef struct sim_result {
    double remote_frac, dropped;
    double out_mb_mean, out_mb_max, xch_ms_max, comp_ms_mean, comp_ms_max, imbalance;
    double ranks_per_token;
} sim_result;

static int simulate(const sim_opts *o, const mvk_preset *p, uint32_t R, sim_result *res)
{
    const uint32_t E = p->experts, k = p->top_k, H = p->hidden, F = p->ffn;
    const uint64_t T = (uint64_t)o->tokens * R;
    const uint32_t G =
        p->n_group > 1 && p->n_group <= 64 && p->topk_group < p->n_group ? p->n_group : 1;
    const uint32_t keep = G > 1 ? p->topk_group : 1;
    double *w = malloc(sizeof(double) * E), *gw = malloc(sizeof(double) * (G + 1));
    uint32_t *ids = malloc(sizeof(uint32_t) * T * k), *owner = malloc(sizeof(uint32_t) * E);
    uint32_t *perm = malloc(sizeof(uint32_t) * E);
    uint8_t *allowed = malloc(E), *taken = malloc(E + G);
    uint64_t *cnt = calloc(E, sizeof(uint64_t)), *send = calloc((size_t)R * R, sizeof(uint64_t));
    uint64_t *rows = calloc(E, sizeof(uint64_t));
    uint8_t *seen = malloc(R);
    int rc = -1;
    if (!w || !gw || !ids || !owner || !perm || !allowed || !taken || !cnt || !send || !rows ||
        !seen)
        goto done;
    mvk_rng r = mvk_rng_seed(o->seed, R);
    /* popularity: uniform, or Zipf over a random order of the experts */
    for (uint32_t e = 0; e < E; e++)
        perm[e] = e;
    for (uint32_t e = E; e > 1; e--) {
        uint32_t q = mvk_rng_range(&r, 0, e - 1), t = perm[e - 1];
        perm[e - 1] = perm[q];
        perm[q] = t;
    }
    for (uint32_t e = 0; e < E; e++)
        w[perm[e]] = o->zipf ? 1.0 / pow((double)e + 1.0, o->skew) : 1.0;
    for (uint32_t q = 0; q < R; q++)
        for (uint64_t e = (uint64_t)q * E / R; e < (uint64_t)(q + 1) * E / R; e++)
            owner[e] = q;
    double ranks_touched = 0;
    for (uint64_t t = 0; t < T; t++) {
        if (G > 1) { /* the kept groups, drawn by their experts' weight */
            for (uint32_t g = 0; g < G; g++) {
                gw[g] = 0;
                for (uint32_t e = g * (E / G); e < (g + 1) * (E / G); e++)
                    gw[g] += w[e];
            }
            uint8_t all[64];
            memset(all, 1, sizeof all);
            uint32_t kept[64];
            draw(&r, gw, all, G, keep, kept, taken);
            memset(allowed, 0, E);
            for (uint32_t i = 0; i < keep; i++)
                memset(allowed + kept[i] * (E / G), 1, E / G);
        } else {
            memset(allowed, 1, E);
        }
        draw(&r, w, allowed, E, k, ids + t * k, taken);
        memset(seen, 0, R);
        for (uint32_t j = 0; j < k; j++)
            seen[owner[ids[t * k + j]]] = 1;
        for (uint32_t q = 0; q < R; q++)
            ranks_touched += seen[q];
    }
    /* admission in priority order against the whole pass's capacity */
    const uint64_t C = p->capacity_factor > 0
                           ? (uint64_t)ceil((double)p->capacity_factor * (double)T * k / E)
                           : UINT64_MAX;
    uint64_t dropped = 0, remote = 0, admitted = 0;
    for (uint32_t j = 0; j < k; j++)
        for (uint64_t t = 0; t < T; t++) {
            const uint32_t e = ids[t * k + j];
            if (cnt[e]++ >= C) {
                dropped++;
                continue;
            }
            const uint32_t src = (uint32_t)(t / o->tokens), dst = owner[e];
            rows[e]++;
            send[(size_t)src * R + dst]++;
            admitted++;
            remote += src != dst;
        }
    const double row_bytes = (double)H * o->act_bytes;
    const double row_us = 6.0 * H * F / (o->tflops * 1e12) * 1e6;
    double out_sum = 0, out_max = 0, xch_max = 0, comp_sum = 0, comp_max = 0;
    double load_sum = 0, load_max = 0;
    for (uint32_t q = 0; q < R; q++) {
        double sent = 0, recv = 0;
        for (uint32_t d = 0; d < R; d++)
            if (d != q) {
                sent += (double)send[(size_t)q * R + d];
                recv += (double)send[(size_t)d * R + q];
            }
        /* dispatch: q sends `sent` rows, receives `recv`; combine: the reverse */
        const double out_b = (sent + recv) * row_bytes;
        const double dir = (sent > recv ? sent : recv) * row_bytes;
        const double counts_b = 8.0 * k * E * (R - 1);
        const double xch_ms = R > 1 ? (3.0 * o->latency_us * (R - 1)) * 1e-3 +
                                          (2.0 * dir + counts_b) / (o->gb_s * 1e9) * 1e3
                                    : 0;
        double comp_us = 0, load = 0;
        for (uint64_t e = (uint64_t)q * E / R; e < (uint64_t)(q + 1) * E / R; e++) {
            if (rows[e])
                comp_us += o->expert_us + (double)rows[e] * row_us;
            load += (double)rows[e];
        }
        out_sum += out_b;
        out_max = out_b > out_max ? out_b : out_max;
        xch_max = xch_ms > xch_max ? xch_ms : xch_max;
        comp_sum += comp_us * 1e-3;
        comp_max = comp_us * 1e-3 > comp_max ? comp_us * 1e-3 : comp_max;
        load_sum += load;
        load_max = load > load_max ? load : load_max;
    }
    *res = (sim_result){
        .remote_frac = admitted ? (double)remote / (double)admitted : 0,
        .dropped = (double)dropped,
        .out_mb_mean = out_sum / R / 1048576.0,
        .out_mb_max = out_max / 1048576.0,
        .xch_ms_max = xch_max,
        .comp_ms_mean = comp_sum / R,
        .comp_ms_max = comp_max,
        .imbalance = load_sum > 0 ? load_max / (load_sum / R) : 1,
        .ranks_per_token = ranks_touched / (double)T,
    };
    rc = 0;
done:
    free(w), free(gw), free(ids), free(owner), free(perm), free(allowed), free(taken);
    free(cnt), free(send), free(rows), free(seen);
    return rc;
}

static int parse_double(const char *opt, const char *v, double lo, double *out)
{
    char *end = NULL;
    double d = strtod(v, &end);
    if (!*v || *end || !(d >= lo) || !isfinite(d)) {
        fprintf(stderr, "moevk simulate-ep: %s '%s' is not a number >= %g\n", opt, v, lo);
        return -1;
    }
    *out = d;
    return 0;
}

int cli_simulate_ep(int argc, char **argv)
{
    sim_opts o = {.presets = "deepseek-v3,qwen3-235b-a22b,mixtral-8x7b", .ranks = "1,2,4,8",
                  .tokens = 4096, .gb_s = 50, .latency_us = 5, .expert_us = 10, .tflops = 400,
                  .act_bytes = 4, .skew = 1.0, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            sim_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "moevk simulate-ep: %s needs a value\n", a);
            return 2;
        }
        i++;
        double d = 0;
        int bad = 0;
        if (!strcmp(a, "--preset"))
            o.presets = v;
        else if (!strcmp(a, "--ranks"))
            o.ranks = v;
        else if (!strcmp(a, "--tokens"))
            bad = parse_double(a, v, 1, &d) || d > 1e6 || d != floor(d), o.tokens = (uint32_t)d;
        else if (!strcmp(a, "--bandwidth"))
            bad = parse_double(a, v, 1e-6, &o.gb_s);
        else if (!strcmp(a, "--latency"))
            bad = parse_double(a, v, 0, &o.latency_us);
        else if (!strcmp(a, "--expert-us"))
            bad = parse_double(a, v, 0, &o.expert_us);
        else if (!strcmp(a, "--tflops"))
            bad = parse_double(a, v, 1e-6, &o.tflops);
        else if (!strcmp(a, "--act-bytes"))
            bad = parse_double(a, v, 0.125, &o.act_bytes);
        else if (!strcmp(a, "--skew"))
            bad = parse_double(a, v, 0, &o.skew);
        else if (!strcmp(a, "--seed"))
            bad = parse_double(a, v, 0, &d), o.seed = (uint64_t)d;
        else if (!strcmp(a, "--dist")) {
            o.zipf = !strcmp(v, "zipf");
            bad = !o.zipf && strcmp(v, "uniform");
            if (bad)
                fprintf(stderr, "moevk simulate-ep: --dist '%s' is not uniform or zipf\n", v);
        } else {
            fprintf(stderr, "moevk simulate-ep: unknown option %s\n", a);
            sim_usage(stderr);
            return 2;
        }
        if (bad) {
            if (!strcmp(a, "--tokens"))
                fprintf(stderr, "moevk simulate-ep: --tokens must be a count in 1..1000000\n");
            return 2;
        }
    }
    /* every preset and rank count first: nothing printed for a bad list */
    for (int pass = 0; pass < 2; pass++) {
        char pl[512], rl[256];
        snprintf(pl, sizeof pl, "%s", o.presets);
        for (char *sp = NULL, *pn = strtok_r(pl, ",", &sp); pn; pn = strtok_r(NULL, ",", &sp)) {
            const mvk_preset *p = mvk_preset_find(pn);
            if (!p) {
                fprintf(stderr, "moevk simulate-ep: no preset '%s'\n", pn);
                return 2;
            }
            snprintf(rl, sizeof rl, "%s", o.ranks);
            for (char *sr = NULL, *rn = strtok_r(rl, ",", &sr); rn;
                 rn = strtok_r(NULL, ",", &sr)) {
                char *end = NULL;
                unsigned long R = strtoul(rn, &end, 10);
                if (!*rn || *end || R == 0 || R > p->experts || R > 4096) {
                    fprintf(stderr,
                            "moevk simulate-ep: --ranks '%s' must be counts in 1..E (%u for "
                            "%s)\n",
                            rn, p->experts, p->name);
                    return 2;
                }
            }
        }
        if (pass)
            break;
    }
    printf("simulate-ep: %u tokens per rank, link %.3g GB/s and %.3g us a message, %.3g us per "
           "expert + %.3g TFLOP/s, %g-byte activations, %s routing (seed %llu)\n",
           o.tokens, o.gb_s, o.latency_us, o.expert_us, o.tflops, o.act_bytes,
           o.zipf ? "zipf" : "uniform", (unsigned long long)o.seed);
    printf("%-16s %5s %8s %9s %10s %10s %9s %9s %9s %7s %8s %10s\n", "preset", "ranks",
           "remote", "ranks/tok", "out_MB", "out_MB_max", "xch_ms", "comp_ms", "comp_max",
           "imbal", "dropped", "layer_ms");
    char list[512];
    snprintf(list, sizeof list, "%s", o.presets);
    for (char *sp = NULL, *pn = strtok_r(list, ",", &sp); pn; pn = strtok_r(NULL, ",", &sp)) {
        const mvk_preset *p = mvk_preset_find(pn);
        if (!p) {
            fprintf(stderr, "moevk simulate-ep: no preset '%s'\n", pn);
            return 2;
        }
        char rl[256];
        snprintf(rl, sizeof rl, "%s", o.ranks);
        for (char *sr = NULL, *rn = strtok_r(rl, ",", &sr); rn; rn = strtok_r(NULL, ",", &sr)) {
            char *end = NULL;
            unsigned long R = strtoul(rn, &end, 10);
            if (!*rn || *end || R == 0 || R > p->experts || R > 4096) {
                fprintf(stderr,
                        "moevk simulate-ep: --ranks '%s' must be counts in 1..E (%u for %s)\n",
                        rn, p->experts, p->name);
                return 2;
            }
            sim_result s;
            if (simulate(&o, p, (uint32_t)R, &s)) {
                fprintf(stderr, "moevk simulate-ep: out of host memory\n");
                return 1;
            }
            /* no overlap: the slowest rank's experts after the slowest exchange */
            printf("%-16s %5lu %7.1f%% %9.2f %10.2f %10.2f %9.3f %9.3f %9.3f %7.2f %8.0f %10.3f\n",
                   p->name, R, 100 * s.remote_frac, s.ranks_per_token, s.out_mb_mean,
                   s.out_mb_max, s.xch_ms_max, s.comp_ms_mean, s.comp_ms_max, s.imbalance,
                   s.dropped, s.xch_ms_max + s.comp_ms_max);
        }
    }
    printf("remote: admitted assignments whose expert is on another rank; ranks/tok: ranks a "
           "token's experts are on; out_MB: bytes a rank sends in both all-to-alls (mean, "
           "max); xch_ms: the slowest rank's exchanges; comp_ms: expert time (mean, max); "
           "imbal: the busiest rank's expert rows over the mean; layer_ms: xch_ms + comp_max "
           "(no overlap)\n");
    return 0;
}
