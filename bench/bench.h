/*
 * moevk bench: the benchmark harness (presets x token counts x dtypes x
 * routing distributions x backends of the table), measured against the
 * device's own ceilings.
 */
#ifndef MOEVK_BENCH_H
#define MOEVK_BENCH_H

#include <stdint.h>
#include <stdio.h>

#include "backend/backend.h"
#include "moevk/moevk.h"

typedef enum bench_dist {
    BENCH_DIST_ROUTER = 0, /* the model's router (random weights) on random inputs */
    BENCH_DIST_UNIFORM,    /* each token's k experts uniform without replacement */
    BENCH_DIST_ZIPF,       /* experts drawn by a Zipf(1.2) law: a few hot experts */
    BENCH_DIST_ONE,        /* every token to experts 0..k-1 */
    BENCH_DIST_COUNT
} bench_dist;

const char *bench_dist_name(bench_dist d);
const char *bench_backend_name(const mvk_backend *b);

/* One measured configuration. */
typedef struct bench_row {
    char preset[32];
    const mvk_backend *backend; /* an entry of the backend table */
    moevk_dtype dtype;
    bench_dist dist;
    uint32_t tokens;
    uint32_t H, F, E, k;
    int ok;               /* measured; else `note` says why not */
    char note[160];
    double ms;            /* median time of the whole layer */
    double stage_ms[MOEVK_STAGE_COUNT];
    double bytes;         /* bytes that must be read: touched experts once, router, x, y */
    double flops;
    uint32_t experts_touched;
    uint32_t copies;      /* weight copies rotated to defeat the cache */
    double weight_bytes, scratch_bytes, peak_bytes;
    /* what a pass launched (backends that can say: work.tokens != 0):
     * dispatches, experts per kernel path, multiply-adds launched vs
     * useful and weight bytes fetched vs needed per stage */
    moevk_pass_info work;
    /* under --vram-budget: the item asked ("25%", "2G"; "" for none), its
     * bytes and fraction of the routed experts' bytes, the host copy, and
     * the cache counters over the timed runs (backends that have a cache:
     * vulkan) */
    char budget[24];
    double vram_budget, budget_frac, host_bytes;
    moevk_cache_stats cache;
} bench_row;

/* Launched over useful multiply-adds, and fetched over needed weight bytes,
 * of the expert stages (up and down) of a row; 0 when unknown. */
double bench_macs_ratio(const bench_row *r);
double bench_bytes_ratio(const bench_row *r);

#define BENCH_DTYPES 64 /* above every moevk_dtype value */

typedef struct bench_ceilings {
    double gb_s;                  /* measured read bandwidth */
    double tflops[BENCH_DTYPES];  /* measured matmul, by weight dtype (0: not measured) */
    char device[256];
    char driver[520];
} bench_ceilings;

/* The measured matmul ceilings as text: "f32 a, f16 b, bf16 c, q4_k d"
 * (json: "\"f32\": a, ..."), f32/f16/bf16 always, others when measured. */
const char *bench_tflops_text(const bench_ceilings *c, int json, char *buf, size_t n);

/* Derived figures of a row. */
double bench_floor_ms(const bench_row *r, const bench_ceilings *c);
double bench_gb_s(const bench_row *r);
double bench_tflops(const bench_row *r);

void bench_print_table(FILE *f, const bench_row *rows, uint32_t n, const bench_ceilings *c);
int bench_write_json(const char *path, const bench_row *rows, uint32_t n, const bench_ceilings *c);
int bench_write_csv(const char *path, const bench_row *rows, uint32_t n, const bench_ceilings *c);
int bench_write_svg(const char *path, const bench_row *rows, uint32_t n, const bench_ceilings *c);
/* Rows with a budget: the table of throughput against budget, and its SVG
 * (a line per preset/dtype/routing/T/backend, throughput relative to its
 * best against the budget's share of the experts' bytes). */
void bench_print_budgets(FILE *f, const bench_row *rows, uint32_t n);
int bench_write_budget_svg(const char *path, const bench_row *rows, uint32_t n,
                           const bench_ceilings *c);

int cli_bench(int argc, char **argv);

#endif
