/*
 * moevk bench: runs MoE layers of real models' shapes and reports time,
 * throughput and the fraction of the device's measured ceilings.
 *
 * Every backend of the table runs through the same loop (mvk_backend):
 * one forward pass for the routing it produces, then its bench entry
 * (warm-up runs first, then the median of --runs runs; GPU timestamps or
 * CUDA events around every stage). Weights are rotated over several copies
 * of the layer (backends that can: vulkan) so that consecutive runs never
 * find the experts in the GPU's last-level cache: enough copies that the
 * weights touched by one pass, times the copies, exceed 256 MiB (larger
 * than the L2 of current GPUs: 50 MB on an H100/H200, 96 MB on an RTX
 * 4090, 256 MB Infinity Cache on an MI300X), at most 8 and as many as fit
 * in device memory. The reference backend is timed by one pass.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "presets/presets.h"
#include "quantize.h"
#include "util/rng.h"
#include "util/tool.h"

#define MAX_LIST 16
#define MAX_COPIES 8
#define CACHE_DEFEAT_BYTES (256.0 * 1048576.0)

const char *bench_dist_name(bench_dist d)
{
    static const char *const n[] = {"router", "uniform", "zipf", "one"};
    return (unsigned)d < BENCH_DIST_COUNT ? n[d] : "?";
}

const char *bench_backend_name(const mvk_backend *b)
{
    return b ? b->name : "?";
}

typedef struct bench_opts {
    const char *presets[MAX_LIST];
    uint32_t npresets;
    uint32_t tokens[MAX_LIST], ntokens;
    moevk_dtype dtypes[MAX_LIST];
    uint32_t ndtypes;
    bench_dist dists[BENCH_DIST_COUNT];
    uint32_t ndists;
    const mvk_backend *backends[MAX_LIST];
    uint32_t nbackends;
    mvk_preset custom;
    int have_custom;
    uint32_t scale, runs, warmup;
    const char *device, *json, *csv, *svg;
    int measure, fit_only;
    const char *budgets[MAX_LIST]; /* --vram-budget items */
    uint32_t nbudgets;
    double host_gib, device_gib; /* memory assumed by the fit check (0: as reported) */
} bench_opts;

/* ---- option parsing --------------------------------------------------------- */

/* Comma-separated items of s into out; -1 (with a message) when there are
 * more than max. */
static int split(char *s, char **out, int max)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (n >= max) {
            fprintf(stderr, "moevk bench: more than %d items in a list%s\n", MAX_LIST,
                    max < MAX_LIST ? " (over all uses of the option)" : "");
            return -1;
        }
        out[n++] = tok;
    }
    return n;
}

/* A memory size in GiB: a number > 0. */
static int parse_gib(const char *opt, const char *v, double *out)
{
    char *end;
    double g = strtod(v, &end);
    if (end == v || *end || !(g > 0) || g > 1e9) {
        fprintf(stderr, "moevk bench: %s '%s' is not a size in GiB (> 0)\n", opt, v);
        return -1;
    }
    *out = g;
    return 0;
}

static int parse_opts(int argc, char **argv, bench_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->scale = 1;
    o->runs = 20;
    o->warmup = 3;
    o->measure = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--no-ceilings")) {
            o->measure = 0;
            continue;
        }
        if (!strcmp(a, "--fit")) {
            o->fit_only = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "moevk bench: %s needs a value\n", a);
            return -1;
        }
        char *v = argv[++i], *items[MAX_LIST];
        int n;
        if (!strcmp(a, "--preset")) {
            if ((n = split(v, items, MAX_LIST - (int)o->npresets)) < 0)
                return -1;
            for (int j = 0; j < n; j++) {
                if (strcmp(items[j], "all") && !mvk_preset_find(items[j])) {
                    fprintf(stderr, "moevk bench: unknown preset '%s'\n", items[j]);
                    return -1;
                }
                o->presets[o->npresets++] = items[j];
            }
        } else if (!strcmp(a, "--tokens")) {
            if ((n = split(v, items, MAX_LIST - (int)o->ntokens)) < 0)
                return -1;
            for (int j = 0; j < n; j++) {
                long t = strtol(items[j], NULL, 10);
                if (t < 1) {
                    fprintf(stderr, "moevk bench: token count '%s' is not >= 1\n", items[j]);
                    return -1;
                }
                o->tokens[o->ntokens++] = (uint32_t)t;
            }
        } else if (!strcmp(a, "--dtype")) {
            if ((n = split(v, items, MAX_LIST - (int)o->ndtypes)) < 0)
                return -1;
            for (int j = 0; j < n; j++) {
                if (mvk_dtype_parse(items[j], 1, &o->dtypes[o->ndtypes])) {
                    char names[512];
                    fprintf(stderr, "moevk bench: unknown dtype '%s' (%s)\n", items[j],
                            mvk_dtype_names(1, names, sizeof names));
                    return -1;
                }
                o->ndtypes++;
            }
        } else if (!strcmp(a, "--dist")) {
            if ((n = split(v, items, BENCH_DIST_COUNT - (int)o->ndists)) < 0)
                return -1;
            for (int j = 0; j < n; j++) {
                int d = -1;
                for (int k = 0; k < BENCH_DIST_COUNT; k++)
                    if (!strcmp(items[j], bench_dist_name((bench_dist)k)))
                        d = k;
                if (d < 0) {
                    fprintf(stderr, "moevk bench: unknown distribution '%s'\n", items[j]);
                    return -1;
                }
                o->dists[o->ndists++] = (bench_dist)d;
            }
        } else if (!strcmp(a, "--vram-budget")) {
            if ((n = split(v, items, MAX_LIST - (int)o->nbudgets)) < 0)
                return -1;
            for (int j = 0; j < n; j++) {
                uint64_t b;
                char why[160];
                if (mvk_parse_budget(items[j], 1e12, &b, why, sizeof why)) {
                    fprintf(stderr, "moevk bench: --vram-budget %s\n", why);
                    return -1;
                }
                o->budgets[o->nbudgets++] = items[j];
            }
        } else if (!strcmp(a, "--backend")) {
            if ((n = split(v, items, MAX_LIST - (int)o->nbackends)) < 0)
                return -1;
            for (int j = 0; j < n; j++) {
                const mvk_backend *b = mvk_backend_find(items[j]);
                if (!b) {
                    fprintf(stderr, "moevk bench: unknown backend '%s'\n", items[j]);
                    return -1;
                }
                o->backends[o->nbackends++] = b;
            }
        } else if (!strcmp(a, "--custom")) {
            unsigned h, f, e, k;
            if (sscanf(v, "%u,%u,%u,%u", &h, &f, &e, &k) != 4 || !h || !f || !e || !k) {
                fprintf(stderr, "moevk bench: --custom wants H,F,E,k\n");
                return -1;
            }
            o->custom = (mvk_preset){"custom", h, f, e, k, MOEVK_ROUTING_SOFTMAX_TOPK,
                                     MOEVK_ACT_SWIGLU, 1};
            o->have_custom = 1;
        } else if (!strcmp(a, "--scale")) o->scale = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--runs")) o->runs = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--warmup")) o->warmup = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--host-memory")) {
            if (parse_gib(a, v, &o->host_gib))
                return -1;
        } else if (!strcmp(a, "--device-memory")) {
            if (parse_gib(a, v, &o->device_gib))
                return -1;
        } else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--json")) o->json = v;
        else if (!strcmp(a, "--csv")) o->csv = v;
        else if (!strcmp(a, "--plot")) o->svg = v;
        else {
            fprintf(stderr, "moevk bench: unknown option '%s'\n", a);
            return -1;
        }
    }
    if (!o->scale || !o->runs) {
        fprintf(stderr, "moevk bench: --scale and --runs must be >= 1\n");
        return -1;
    }
    if (!o->npresets && !o->have_custom)
        o->presets[o->npresets++] = "all";
    if (o->npresets == 1 && !strcmp(o->presets[0], "all")) {
        o->npresets = 0;
        for (uint32_t i = 0; mvk_preset_at(i) && o->npresets < MAX_LIST; i++)
            o->presets[o->npresets++] = mvk_preset_at(i)->name;
    }
    if (!o->ntokens) {
        const uint32_t def[] = {1, 16, 128, 512, 4096};
        for (int i = 0; i < 5; i++)
            o->tokens[o->ntokens++] = def[i];
    }
    if (!o->ndtypes)
        o->dtypes[o->ndtypes++] = MOEVK_DTYPE_BF16;
    if (!o->ndists)
        o->dists[o->ndists++] = BENCH_DIST_ROUTER;
    if (!o->nbackends)
        o->backends[o->nbackends++] = mvk_backend_find("vulkan");
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moevk bench [options]\n"
            "  --preset LIST     comma-separated presets, or 'all' (default)\n"
            "  --custom H,F,E,k  a custom shape (softmax top-k, SwiGLU)\n"
            "  --tokens LIST     token counts (default 1,16,128,512,4096)\n"
            "  --dtype LIST      weight dtypes: f32,f16,bf16 (default bf16)\n"
            "  --dist LIST       routing: router,uniform,zipf,one (default router)\n"
            "  --backend LIST    %s (default vulkan)\n"
            "  --vram-budget LIST  device memory for the routed experts, each a size\n"
            "                    (K/M/G/T) or a percentage of their bytes (e.g.\n"
            "                    10%%,25%%,50%%,100%%): the rest run from host memory through\n"
            "                    the cache of hot experts; every run gets fresh inputs of\n"
            "                    the routing distribution, and --plot draws throughput\n"
            "                    against budget\n"
            "  --scale S         divide H and F by S (default 1: the real shapes)\n"
            "  --runs N          timed runs per row, median reported (default 20)\n"
            "  --warmup N        untimed runs first (default 3)\n"
            "  --device D        Vulkan device by index or name\n"
            "  --json F --csv F  machine-readable results\n"
            "  --plot F.svg      time per stage and fraction of the floor\n"
            "  --no-ceilings     skip measuring bandwidth and matmul ceilings\n"
            "  --fit             only print whether each shape fits the device at each format\n"
            "                    (weights per layer, layers per device), running nothing\n"
            "  --host-memory G   assume G GiB of available system RAM (default: MemAvailable)\n"
            "  --device-memory G assume G GiB of device memory (default: the largest\n"
            "                    device-local heap); both only steer the fit check\n",
            mvk_backend_list(",").s);
}

/* ---- routing distributions --------------------------------------------------- */

/* k distinct experts for one token, in decreasing preference. */
static void draw_experts(mvk_rng *r, bench_dist d, uint32_t E, uint32_t k, uint32_t *out)
{
    for (uint32_t j = 0; j < k; j++) {
        uint32_t e;
        for (;;) {
            if (d == BENCH_DIST_ONE) {
                e = j;
            } else if (d == BENCH_DIST_UNIFORM) {
                e = (uint32_t)(mvk_rng_next(r) % E);
            } else { /* Zipf(1.2) by inversion over the normalised weights */
                double total = 0, u;
                for (uint32_t i = 0; i < E; i++)
                    total += pow(i + 1.0, -1.2);
                u = mvk_rng_uniform(r, 0, 1) * total;
                for (e = 0; e + 1 < E; e++) {
                    u -= pow(e + 1.0, -1.2);
                    if (u <= 0)
                        break;
                }
            }
            bool dup = false;
            for (uint32_t i = 0; i < j; i++)
                dup |= out[i] == e;
            if (!dup)
                break;
        }
        out[j] = e;
    }
}

/* Inputs: random for the model's router; for the synthetic distributions the
 * router rows are unit vectors (row e selects coordinate e of x), so a token
 * whose coordinates e_0 > e_1 > ... stand out is routed to e_0..e_{k-1}. */
static void make_inputs(mvk_rng *r, bench_dist d, const moevk_layer_desc *desc, uint32_t T,
                        float *x)
{
    const uint32_t H = desc->hidden, E = desc->num_experts, k = desc->top_k;
    uint32_t pick[MOEVK_MAX_TOP_K];
    for (uint32_t t = 0; t < T; t++) {
        float *xt = x + (size_t)t * H;
        for (uint32_t h = 0; h < H; h++)
            xt[h] = d == BENCH_DIST_ROUTER ? mvk_rng_uniform(r, -1, 1)
                                           : mvk_rng_uniform(r, -0.01f, 0.01f);
        if (d != BENCH_DIST_ROUTER) {
            draw_experts(r, d, E, k, pick);
            for (uint32_t j = 0; j < k; j++)
                xt[pick[j]] = 10.0f - 0.25f * (float)j;
        }
    }
}

static void basis_router(float *router, uint32_t E, uint32_t H)
{
    memset(router, 0, sizeof(float) * E * H);
    for (uint32_t e = 0; e < E; e++)
        router[(size_t)e * H + e] = 1.0f;
}

/* ---- measurement ------------------------------------------------------------- */


/* Bytes and FLOPs of one pass, from the routing it produced. */
static void account(bench_row *row, const moevk_layer_desc *d, const uint32_t *tpe,
                    uint64_t dropped)
{
    const bool gated = moevk_activation_is_gated(d->activation);
    const double mats = gated ? 3 : 2;
    const double H = d->hidden, F = d->ffn, T = row->tokens, E = d->num_experts;
    const double FS = d->num_shared ? (d->shared_ffn ? d->shared_ffn : d->ffn) : 0;
    uint32_t touched = 0;
    for (uint32_t e = 0; e < d->num_experts; e++)
        touched += tpe[e] > 0;
    row->experts_touched = touched;
    double rows = T * d->top_k - (double)dropped;
    /* the packed bytes of the touched experts and the shared ones */
    moevk_layer_desc routed = *d, shared = *d;
    routed.num_shared = 0;
    routed.num_experts = touched;
    shared.num_experts = 0;
    row->bytes = mvk_desc_expert_bytes(&routed) + mvk_desc_expert_bytes(&shared) +
                 E * (double)moevk_dtype_row_bytes(d->router_dtype, d->hidden) + 2 * T * H * 4;
    row->flops = 2 * rows * mats * H * F + 2 * T * E * H + 2 * T * d->num_shared * mats * H * FS;
}

double bench_floor_ms(const bench_row *r, const bench_ceilings *c)
{
    double t_bw = c->gb_s > 0 ? r->bytes / (c->gb_s * 1e9) : 0;
    double peak = r->dtype < BENCH_DTYPES ? c->tflops[r->dtype] : 0;
    double t_fl = peak > 0 ? r->flops / (peak * 1e12) : 0;
    return 1e3 * (t_bw > t_fl ? t_bw : t_fl);
}

double bench_gb_s(const bench_row *r)
{
    return r->ms > 0 ? r->bytes / (r->ms * 1e-3) / 1e9 : 0;
}

double bench_tflops(const bench_row *r)
{
    return r->ms > 0 ? r->flops / (r->ms * 1e-3) / 1e12 : 0;
}

static void progress(uint32_t done, uint32_t total, const char *what)
{
    const int width = 30;
    int filled = total ? (int)((uint64_t)done * width / total) : width;
    fprintf(stderr, "\r[%.*s%*s] %u/%u %-48.48s", filled, "##############################",
            width - filled, "", done, total, what);
    if (done == total)
        fprintf(stderr, "\n");
    fflush(stderr);
}

/* The memory the fit check assumes for one backend (bytes). */
typedef struct bench_memory {
    double host;        /* available system RAM; 0 = unknown (not checked) */
    double device;      /* device memory the weights go to; 0 = unknown (not checked) */
    const char *shared; /* "a CPU device", "an integrated GPU": its memory is
                           system RAM, which the host copy uses too; else NULL */
    int uploads;        /* the backend copies the weights to its device */
} bench_memory;

/* A backend of the run, opened once. */
typedef struct bench_backend {
    const mvk_backend *b;
    void *dev;               /* NULL when it cannot run here (why says so) */
    mvk_backend_info info;
    bench_memory mem;
    char why[200];
} bench_backend;

typedef struct bench_state {
    const bench_opts *o;
    bench_backend be[MAX_LIST];
    bench_row *rows;
    uint32_t nrows, cap, done, total, Tmax;
} bench_state;

static bench_row *new_row(bench_state *s)
{
    if (s->nrows == s->cap) {
        uint32_t cap = s->cap ? 2 * s->cap : 64;
        bench_row *r = realloc(s->rows, sizeof(*r) * cap);
        if (!r)
            return NULL;
        s->rows = r;
        s->cap = cap;
    }
    bench_row *r = &s->rows[s->nrows++];
    memset(r, 0, sizeof(*r));
    return r;
}

static void run_unavailable(bench_state *s, const char *why, bench_row *rows)
{
    for (uint32_t ti = 0; ti < s->o->ntokens; ti++) {
        snprintf(rows[ti].note, sizeof(rows[ti].note), "%.150s", why);
        s->done++;
    }
}

/* Weight copies that defeat the cache: the smallest pass (T = 1, k
 * experts) decides, at most `fit`. */
static uint32_t cache_copies(const moevk_layer_desc *d, uint32_t fit)
{
    moevk_layer_desc one = *d;
    one.num_experts = 1;
    one.num_shared = 0;
    const double per_expert = mvk_desc_expert_bytes(&one);
    const double touched_min = d->top_k * per_expert + (double)d->num_experts * d->hidden * 4;
    uint32_t want = (uint32_t)ceil(CACHE_DEFEAT_BYTES / touched_min);
    return want < 1 ? 1 : want > fit ? fit : want;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A layer under a budget: --warmup then --runs passes, each on fresh
 * inputs of the distribution (a cache that saw one input would hold just
 * its experts); the median pass by total time, with its stages. */
static moevk_status budget_runs(bench_state *s, const mvk_backend *b, void *layer, bench_dist dist,
                                const moevk_layer_desc *d, uint32_t T, mvk_rng *rng, float *x,
                                float *y, mvk_backend_times *t, char *err, size_t n)
{
    const bench_opts *o = s->o;
    double *tot = malloc(sizeof(double) * o->runs);
    double *st = malloc(sizeof(double) * o->runs * MOEVK_STAGE_COUNT);
    double *sorted = malloc(sizeof(double) * o->runs);
    moevk_status r = MOEVK_SUCCESS;
    if (!tot || !st || !sorted) {
        snprintf(err, n, "out of host memory");
        r = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (uint32_t i = 0; !r && i < o->warmup + o->runs; i++) {
        make_inputs(rng, dist, d, T, x);
        double ms = 0, stages[MOEVK_STAGE_COUNT] = {0};
        const mvk_backend_out out = {.y = y, .total_ms = &ms, .stage_ms = stages};
        r = b->forward(layer, T, x, &out, err, n);
        if (!r && i >= o->warmup) {
            tot[i - o->warmup] = ms;
            memcpy(st + (size_t)(i - o->warmup) * MOEVK_STAGE_COUNT, stages, sizeof stages);
        }
    }
    if (!r) {
        memcpy(sorted, tot, sizeof(double) * o->runs);
        qsort(sorted, o->runs, sizeof(double), cmp_double);
        const double med = sorted[o->runs / 2];
        for (uint32_t i = 0; i < o->runs; i++)
            if (tot[i] == med) {
                t->total_ms = med;
                memcpy(t->stage_ms, st + (size_t)i * MOEVK_STAGE_COUNT, sizeof t->stage_ms);
                break;
            }
    }
    free(tot), free(st), free(sorted);
    return r;
}

/* The rows of every token count of one (preset, dtype, distribution) on
 * one backend: one layer (with up to `copies` copies), then per token
 * count a forward pass for the routing it produces and the timing. */
static void run_rows(bench_state *s, const mvk_preset *p, const mvk_layer_weights *w,
                     bench_dist dist, const bench_backend *be, uint32_t copies, bench_row *rows)
{
    const bench_opts *o = s->o;
    const mvk_backend *b = be->b;
    const moevk_layer_desc *d = &w->desc;
    const uint32_t H = d->hidden, E = d->num_experts;
    char err[512] = "";
    const mvk_layer_opts lo = {.reserve_tokens = s->Tmax,
                               .copies = b->bench ? cache_copies(d, copies) : 1,
                               .copy_budget = 0.9 * be->mem.device};
    void *layer = NULL;
    const bool budgeted = (d->flags & MOEVK_LAYER_VRAM_BUDGET) != 0;
    moevk_status st = b->create(be->dev, d, &lo, &layer, err, sizeof err);
    float *x = malloc(sizeof(float) * ((size_t)s->Tmax * H + 1));
    float *y = malloc(sizeof(float) * ((size_t)s->Tmax * H + 1));
    uint32_t *tpe = calloc(E, sizeof(uint32_t));
    mvk_rng rng = mvk_rng_seed(0x5eed, dist);
    for (uint32_t ti = 0; ti < o->ntokens; ti++) {
        bench_row *row = &rows[ti];
        const uint32_t T = o->tokens[ti];
        char what[96];
        snprintf(what, sizeof(what), "%s %s %s T=%u %s", p->name,
                 moevk_dtype_name(d->weight_dtype), bench_dist_name(dist), T, b->name);
        progress(s->done, s->total, what);
        s->done++;
        if (st) {
            snprintf(row->note, sizeof(row->note), "%s%.140s",
                     st == MOEVK_ERROR_OUT_OF_DEVICE_MEMORY ? "does not fit: " : "", err);
            continue;
        }
        if (!x || !y || !tpe) {
            snprintf(row->note, sizeof(row->note), "out of host memory");
            continue;
        }
        const double est = 2.0 * T * d->top_k * 3 * (double)H * d->ffn;
        if ((b->flags & MVK_BACKEND_REFERENCE) && est > 2e10) {
            snprintf(row->note, sizeof(row->note),
                     "skipped: %.0f GFLOP is too slow for the CPU reference", est / 1e9);
            continue;
        }
        make_inputs(&rng, dist, d, T, x);
        moevk_routing_stats stats = {.tokens_per_expert = tpe};
        double pass_ms = 0;
        const mvk_backend_out out = {.y = y, .stats = &stats, .total_ms = &pass_ms};
        mvk_backend_times t = {0};
        moevk_status r = b->forward(layer, T, x, &out, err, sizeof err);
        mvk_backend_memory m0;
        b->memory(layer, T, &m0);
        if (!r && budgeted && b->bench)
            r = budget_runs(s, b, layer, dist, d, T, &rng, x, y, &t, err, sizeof err);
        else if (!r && b->bench)
            r = b->bench(layer, T, x, o->warmup, o->runs, &t, err, sizeof err);
        else
            t.total_ms = pass_ms; /* the reference: one pass, wall clock */
        if (r) {
            snprintf(row->note, sizeof(row->note), "%.150s", err);
            continue;
        }
        account(row, d, tpe, stats.dropped);
        mvk_backend_memory m;
        b->memory(layer, T, &m);
        row->copies = m.copies;
        row->weight_bytes = m.weights;
        row->scratch_bytes = m.scratch;
        row->peak_bytes = m.peak;
        row->ms = t.total_ms;
        memcpy(row->stage_ms, t.stage_ms, sizeof row->stage_ms);
        row->work = t.work;
        row->host_bytes = m.host_weights;
        if (m.budgeted) { /* the cache over the timed runs */
            row->cache = m.cache;
            row->cache.hits -= m0.cache.hits;
            row->cache.misses -= m0.cache.misses;
            row->cache.promotions -= m0.cache.promotions;
            row->cache.evictions -= m0.cache.evictions;
            row->cache.bytes_moved -= m0.cache.bytes_moved;
            row->cache.passes -= m0.cache.passes;
        }
        row->ok = row->ms > 0;
        if (!row->ok)
            snprintf(row->note, sizeof(row->note), "the device has no timestamps");
    }
    if (layer)
        b->destroy(layer);
    free(x), free(y), free(tpe);
}

/* Bytes of one copy of a layer: its weights (the host copy made here is the
 * same size) and the device scratch for Tmax tokens. */
typedef struct layer_size {
    double weights, scratch;
    double routed;     /* of weights: the routed experts */
    double host_extra; /* a budget's host-visible copy of the routed experts */
} layer_size;

static layer_size layer_bytes(const mvk_preset *p, uint32_t scale, moevk_dtype dt, uint32_t Tmax)
{
    const double H = p->hidden / scale ? p->hidden / scale : 1;
    const double F = p->ffn / scale ? p->ffn / scale : 1;
    const double FS = p->shared_ffn / scale ? p->shared_ffn / scale : 1;
    const double mats_up = moevk_activation_is_gated(p->activation) ? 2 : 1;
    const double E = p->experts, A = (double)Tmax * p->top_k;
    /* packed rows, in llama.cpp's fallback format where a row is not whole
     * blocks (as the weights are made) */
    const double gu = (double)moevk_dtype_row_bytes(mvk_quantize_fallback(dt, (uint64_t)H), (uint64_t)H);
    const double dn = (double)moevk_dtype_row_bytes(mvk_quantize_fallback(dt, (uint64_t)F), (uint64_t)F);
    const double sdn =
        (double)moevk_dtype_row_bytes(mvk_quantize_fallback(dt, (uint64_t)FS), (uint64_t)FS);
    layer_size ls;
    ls.weights = E * (mats_up * F * gu + H * dn) + E * H * 4 +
                 p->num_shared * (mats_up * FS * gu + H * sdn);
    ls.scratch = A * (F + H) * 4 + (double)Tmax * E * 4 * 3 + p->num_shared * Tmax * (H + FS) * 4;
    ls.routed = E * (mats_up * F * gu + H * dn);
    ls.host_extra = 0;
    return ls;
}

#define GIB 1073741824.0

/* Available system RAM in bytes: MemAvailable from /proc/meminfo, else the
 * free pages sysconf reports; 0 when neither says. */
static double host_available_bytes(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
        found = sscanf(line, "MemAvailable: %llu kB", &kb) == 1;
    if (f)
        fclose(f);
    if (found)
        return (double)kb * 1024.0;
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (double)pages * (double)page : 0;
}

/* The memory the fit check assumes for a backend: --host-memory /
 * --device-memory, else what the system and the backend's device report. */
static bench_memory bench_memory_of(const bench_opts *o, const mvk_backend_info *info)
{
    bench_memory m;
    m.host = o->host_gib > 0 ? o->host_gib * GIB : host_available_bytes();
    m.device = o->device_gib > 0 ? o->device_gib * GIB : info->device_bytes;
    m.shared = info->shares_host;
    m.uploads = info->uploads;
    return m;
}

/* Every backend needs the host copy of the weights in system RAM: 0 when
 * it does not fit, with the reason in note. */
static int host_copy_fits(const bench_memory *m, const layer_size *ls, char *note, size_t n)
{
    if (m->host <= 0 || ls->weights + ls->host_extra <= m->host)
        return 1;
    snprintf(note, n,
             "does not fit: needs %.2f GiB of system RAM for the host copy of the weights, "
             "%.2f GiB available",
             ls->weights / GIB, m->host / GIB);
    return 0;
}

/* How many device copies of the layer a backend may make (at most
 * MAX_COPIES, 90% of the memory for more than one); 0 when not even one
 * fits, with the reason in note. On a device whose memory is system RAM,
 * the copies share it with the host copy of the weights. A backend that
 * reads the host copy, or whose device memory is unknown, gets 1. */
static uint32_t device_copies_fit(const bench_memory *m, const layer_size *ls, char *note,
                                  size_t n)
{
    if (!m->uploads || m->device <= 0)
        return 1;
    const double one = ls->weights + ls->scratch;
    if (one > m->device) {
        snprintf(note, n, "does not fit: needs %.2f GiB of device memory, the device has %.2f GiB",
                 one / GIB, m->device / GIB);
        return 0;
    }
    const int shared = m->shared && m->host > 0;
    if (shared && ls->weights + one > m->host) {
        snprintf(note, n,
                 "does not fit: needs %.2f GiB of system RAM (host copy %.2f + device copy %.2f "
                 "GiB: %s shares it), %.2f GiB available",
                 (ls->weights + one) / GIB, ls->weights / GIB, one / GIB, m->shared,
                 m->host / GIB);
        return 0;
    }
    double copies = floor((0.9 * m->device - ls->scratch) / ls->weights);
    if (shared)
        copies = fmin(copies, floor((0.9 * m->host - ls->weights - ls->scratch) / ls->weights));
    return copies >= MAX_COPIES ? MAX_COPIES : copies >= 1 ? (uint32_t)copies : 1;
}

/* ntokens rows of one (shape, dtype, distribution, backend), described. */
static bench_row *add_rows(bench_state *s, const mvk_preset *p, moevk_dtype dt, bench_dist dist,
                           const mvk_backend *b)
{
    const bench_opts *o = s->o;
    for (uint32_t ti = 0; ti < o->ntokens; ti++) {
        bench_row *r = new_row(s);
        if (!r)
            return NULL;
        snprintf(r->preset, sizeof(r->preset), "%s", p->name);
        r->backend = b;
        r->dtype = dt;
        r->dist = dist;
        r->tokens = o->tokens[ti];
        r->H = MVK_MAX(p->hidden / o->scale, 1u);
        r->F = MVK_MAX(p->ffn / o->scale, 1u);
        r->E = p->experts;
        r->k = p->top_k;
    }
    return &s->rows[s->nrows - o->ntokens];
}

/* Every row of one (shape, dtype, distribution). What cannot run, or does
 * not fit in memory, says so before anything is allocated for it. Returns
 * -1 when out of host memory for the rows themselves, 1 when the weights
 * could not be made, else 0. */
static int bench_shape(bench_state *s, const mvk_preset *p, moevk_dtype dt, bench_dist dist,
                       const char *budget)
{
    const bench_opts *o = s->o;
    layer_size ls = layer_bytes(p, o->scale, dt, s->Tmax);
    double vram = 0;
    if (budget) { /* the device holds the budget's share of the routed experts */
        uint64_t bytes = 0;
        char why[160];
        mvk_parse_budget(budget, ls.routed, &bytes, why, sizeof why);
        vram = fmin((double)bytes, ls.routed);
        ls.weights -= ls.routed - vram;
        /* the host holds all the weights and the host-visible copy */
        ls.host_extra = ls.routed + (ls.routed - vram);
    }
    char notes[MAX_LIST][160];
    uint32_t copies[MAX_LIST];
    int runnable = 0;
    for (uint32_t bi = 0; bi < o->nbackends; bi++) {
        const bench_backend *be = &s->be[bi];
        copies[bi] = 0;
        if (!be->dev)
            snprintf(notes[bi], sizeof notes[bi], "%.150s", be->why);
        else if (host_copy_fits(&be->mem, &ls, notes[bi], sizeof notes[bi]))
            copies[bi] = device_copies_fit(&be->mem, &ls, notes[bi], sizeof notes[bi]);
        runnable |= copies[bi] > 0;
    }
    mvk_layer_weights w;
    if (runnable && mvk_weights_make_ex(p, o->scale, dt, 42, true, &w)) {
        fprintf(stderr, "\nmoevk bench: out of host memory for %s\n", p->name);
        return 1;
    }
    if (runnable && budget)
        mvk_desc_set_budget(&w.desc, (uint64_t)vram);
    const int basis = runnable && dist != BENCH_DIST_ROUTER && w.desc.num_experts <= w.desc.hidden;
    if (basis)
        basis_router(w.router, w.desc.num_experts, w.desc.hidden);
    int rc = 0;
    for (uint32_t bi = 0; bi < o->nbackends && !rc; bi++) {
        bench_row *rows = add_rows(s, p, dt, dist, s->be[bi].b);
        for (uint32_t ti = 0; rows && budget && ti < o->ntokens; ti++) {
            snprintf(rows[ti].budget, sizeof rows[ti].budget, "%s", budget);
            rows[ti].vram_budget = vram;
            rows[ti].budget_frac = ls.routed > 0 ? vram / ls.routed : 1;
        }
        if (budget && copies[bi] > 1)
            copies[bi] = 1; /* the budget is the point: no copies to defeat the cache */
        if (!rows)
            rc = -1;
        else if (!copies[bi])
            run_unavailable(s, notes[bi], rows);
        else if (dist != BENCH_DIST_ROUTER && !basis)
            run_unavailable(s, "distribution needs E <= H", rows);
        else
            run_rows(s, p, &w, dist, &s->be[bi], copies[bi], rows);
    }
    if (runnable)
        mvk_weights_free(&w);
    return rc;
}

/* Open every backend of the run: one that cannot run here makes rows that
 * say why; one that fails to open is an error. */
static int open_backends(bench_state *s)
{
    const bench_opts *o = s->o;
    const mvk_backend_opts bo = {.device = o->device};
    for (uint32_t bi = 0; bi < o->nbackends; bi++) {
        bench_backend *be = &s->be[bi];
        be->b = o->backends[bi];
        if (!be->b->available(be->why, sizeof be->why))
            continue;
        char err[1024] = "";
        moevk_status st = be->b->open(&bo, &be->dev, &be->info, err, sizeof err);
        if (st) {
            fprintf(stderr, "moevk bench: %s: %s: %s\n", be->b->name, moevk_status_string(st),
                    err);
            return -1;
        }
        be->mem = bench_memory_of(o, &be->info);
    }
    return 0;
}

static void close_backends(bench_state *s)
{
    for (uint32_t bi = 0; bi < s->o->nbackends; bi++)
        if (s->be[bi].dev)
            s->be[bi].b->close(s->be[bi].dev);
    free(s->rows);
}

/* The ceilings of the first backend that measures them (vulkan), with its
 * device; else the first open backend's device, unmeasured. */
static void ceilings(bench_state *s, bench_ceilings *c)
{
    const bench_opts *o = s->o;
    const bench_backend *first = NULL, *m = NULL;
    for (uint32_t bi = 0; bi < o->nbackends; bi++) {
        const bench_backend *be = &s->be[bi];
        if (be->dev && !first)
            first = be;
        if (be->dev && be->b->measure && !m)
            m = be;
    }
    const bench_backend *d = m ? m : first;
    if (d) {
        snprintf(c->device, sizeof(c->device), "%s", d->info.name);
        snprintf(c->driver, sizeof(c->driver), "%s", d->info.driver);
    }
    if (!o->measure || !m)
        return;
    char err[512];
    fprintf(stderr, "measuring the device's ceilings...\n");
    if (m->b->measure(m->dev, MOEVK_DTYPE_F32, &c->gb_s, NULL, err, sizeof err))
        fprintf(stderr, "bandwidth: %s\n", err);
    for (uint32_t i = 0; i < o->ndtypes; i++)
        if (o->dtypes[i] < BENCH_DTYPES &&
            m->b->measure(m->dev, o->dtypes[i], NULL, &c->tflops[o->dtypes[i]], err, sizeof err))
            fprintf(stderr, "matmul: %s\n", err);
}

/* For each shape: one layer's expert weights and scratch at each format
 * (the asked ones and the common ones), and how many such layers the device
 * holds (one workspace serves them all). */
static void print_fit(FILE *f, const bench_state *s)
{
    const bench_opts *o = s->o;
    double dev = 0;
    const char *dev_name = NULL;
    for (uint32_t bi = 0; bi < o->nbackends && !dev; bi++)
        if (s->be[bi].dev && s->be[bi].mem.uploads && s->be[bi].mem.device > 0) {
            dev = s->be[bi].mem.device;
            dev_name = s->be[bi].info.name;
        }
    static const moevk_dtype common[] = {
        MOEVK_DTYPE_BF16, MOEVK_DTYPE_Q8_0, MOEVK_DTYPE_Q6_K, MOEVK_DTYPE_Q5_K,
        MOEVK_DTYPE_Q4_K, MOEVK_DTYPE_MXFP4, MOEVK_DTYPE_Q3_K, MOEVK_DTYPE_Q2_K,
    };
    moevk_dtype list[MAX_LIST + 8];
    uint32_t n = 0;
    for (uint32_t i = 0; i < o->ndtypes + 8; i++) {
        const moevk_dtype dt = i < o->ndtypes ? o->dtypes[i] : common[i - o->ndtypes];
        int seen = 0;
        for (uint32_t j = 0; j < n; j++)
            seen |= list[j] == dt;
        if (!seen)
            list[n++] = dt;
    }
    fprintf(f, "\nfit: one layer's weights at each format (scale 1/%u, scratch for T = %u)", o->scale,
            s->Tmax);
    if (dev > 0)
        fprintf(f, " and the layers that fit in %.1f GiB (%s)", dev / GIB, dev_name);
    fprintf(f, "\n");
    const uint32_t nshapes = o->npresets + (o->have_custom ? 1 : 0);
    for (uint32_t pi = 0; pi < nshapes; pi++) {
        const mvk_preset *p = pi < o->npresets ? mvk_preset_find(o->presets[pi]) : &o->custom;
        fprintf(f, "  %-18s", p->name);
        for (uint32_t i = 0; i < n; i++) {
            const layer_size ls = layer_bytes(p, o->scale, list[i], s->Tmax);
            const double layers = dev > 0 ? floor((dev - ls.scratch) / ls.weights) : -1;
            fprintf(f, "%s %s %.2f GiB", i ? "," : "", moevk_dtype_name(list[i]), ls.weights / GIB);
            if (layers >= 1)
                fprintf(f, " (%.0f)", layers);
            else if (dev > 0)
                fprintf(f, " (does not fit)");
        }
        fprintf(f, "\n");
    }
}

int cli_bench(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
    bench_opts o;
    if (parse_opts(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    bench_state s = {.o = &o};
    for (uint32_t i = 0; i < o.ntokens; i++)
        s.Tmax = MVK_MAX(s.Tmax, o.tokens[i]);
    if (open_backends(&s)) {
        close_backends(&s);
        return 1;
    }
    if (o.fit_only) {
        print_fit(stdout, &s);
        close_backends(&s);
        return 0;
    }
    bench_ceilings c = {0};
    ceilings(&s, &c);
    uint32_t nshapes = o.npresets + (o.have_custom ? 1 : 0);
    const uint32_t nbudgets = o.nbudgets ? o.nbudgets : 1;
    s.total = nshapes * o.ndtypes * o.ndists * nbudgets * o.nbackends * o.ntokens;
    int rc = 0;
    for (uint32_t pi = 0; pi < nshapes; pi++) {
        const mvk_preset *p = pi < o.npresets ? mvk_preset_find(o.presets[pi]) : &o.custom;
        for (uint32_t di = 0; di < o.ndtypes; di++)
            for (uint32_t ri = 0; ri < o.ndists * nbudgets; ri++) {
                int src = bench_shape(&s, p, o.dtypes[di], o.dists[ri / nbudgets],
                                      o.nbudgets ? o.budgets[ri % nbudgets] : NULL);
                if (src < 0) {
                    fprintf(stderr, "moevk bench: out of host memory\n");
                    close_backends(&s);
                    return 1;
                }
                if (src)
                    rc = 1;
            }
    }
    progress(s.total, s.total, "done");
    bench_print_table(stdout, s.rows, s.nrows, &c);
    print_fit(stdout, &s);
    if (o.json && bench_write_json(o.json, s.rows, s.nrows, &c))
        rc = 1;
    if (o.csv && bench_write_csv(o.csv, s.rows, s.nrows, &c))
        rc = 1;
    if (o.nbudgets)
        bench_print_budgets(stdout, s.rows, s.nrows);
    if (o.svg && (o.nbudgets ? bench_write_budget_svg(o.svg, s.rows, s.nrows, &c)
                             : bench_write_svg(o.svg, s.rows, s.nrows, &c)))
        rc = 1;
    close_backends(&s);
    return rc;
}
