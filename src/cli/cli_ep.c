/*
 * Expert parallelism in the tool: `mpirun -np R moevk run ... --expert-parallel`
 * (cli_run.c calls cli_ep_run for the pass) and `moevk bench
 * --expert-parallel` (cli_ep_bench). Each MPI rank opens its own context,
 * holds a contiguous share of the tokens and of the experts
 * (moevk_ep_layer over libmoevk-mpi's transport); rank 0 gathers y and
 * prints and writes everything, the other ranks' stdout is discarded.
 * Without MPI in the build both refuse with the reason.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "presets/presets.h"
#include "util/rng.h"
#include "util/tool.h"

#if MOEVK_HAVE_MPI
#include "moevk/moevk_mpi.h"
#endif

static int ep_errf(char *err, size_t n, const char *fmt, const char *a)
{
    snprintf(err, n, fmt, a);
    return -1;
}


/* ---- ranks as threads of this process (--ranks N): the library's thread
 * transport, each rank its own context on the next device of --device's
 * comma-separated list (or the default device) ---- */

typedef struct thr_rank {
    const moevk_layer_desc *d;
    moevk_thread_group *g;
    char device[64];
    int validate, use_device;
    uint32_t rank, T, iters;
    const float *x;
    float *y;
    moevk_routing_stats *stats;
    moevk_status st;
    char msg[768], devname[256];
    double create_ms, forward_ms, comp_ms, exch_ms, pass_ms;
    moevk_ep_times times;
    uint32_t first, count;
} thr_rank;

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void *thr_main(void *arg)
{
    thr_rank *j = arg;
    char cerr[512] = "";
    moevk_context_desc cd = {.device = j->use_device ? j->device : NULL,
                             .flags = j->validate ? MOEVK_CONTEXT_VALIDATION : 0,
                             .error_message = cerr, .error_message_size = sizeof cerr};
    moevk_context *ctx = NULL;
    moevk_transport tr;
    moevk_ep_layer *L = NULL;
    /* a rank without a context still answers the layer's agreement */
    if (moevk_thread_group_transport(j->g, j->rank, &tr)) {
        j->st = MOEVK_ERROR_INTERNAL;
        snprintf(j->msg, sizeof j->msg, "rank %u: no transport", j->rank);
        return NULL;
    }
    j->st = moevk_context_create(&cd, &ctx);
    if (j->st) {
        snprintf(j->msg, sizeof j->msg, "rank %u: no Vulkan context: %s", j->rank, cerr);
        uint32_t who;
        moevk_status theirs;
        char m[8];
        tr.agree(tr.user, j->st, &who, &theirs, m, sizeof m);
        return NULL;
    }
    snprintf(j->devname, sizeof j->devname, "%s", moevk_context_device_info(ctx)->name);
    double t0 = mvk_now_ms();
    moevk_ep_desc ed = {.layer = j->d, .transport = &tr};
    j->st = moevk_ep_layer_create(ctx, &ed, &L);
    j->create_ms = mvk_now_ms() - t0;
    if (j->st) {
        snprintf(j->msg, sizeof j->msg, "rank %u: moevk_ep_layer_create: %s", j->rank,
                 moevk_context_last_error(ctx));
        moevk_context_destroy(ctx);
        return NULL;
    }
    moevk_ep_layer_experts(L, &j->first, &j->count);
    const uint32_t n = j->iters ? j->iters : 1;
    double *c = calloc(n, sizeof(double)), *e = calloc(n, sizeof(double)),
           *w = calloc(n, sizeof(double));
    /* bench: one warm-up pass (pipelines), then n timed ones */
    for (uint32_t it = 0; it < n + (j->iters ? 1 : 0) && !j->st; it++) {
        t0 = mvk_now_ms();
        j->st = moevk_ep_layer_forward(L, j->T, c && e && w ? j->x : NULL, j->y,
                                       j->iters ? NULL : j->stats);
        const double ms = mvk_now_ms() - t0;
        moevk_ep_layer_times(L, &j->times);
        const uint32_t k = j->iters ? it - 1 : it;
        if (!j->st && (!j->iters || it)) {
            c[k] = j->times.compute_ms;
            e[k] = j->times.exchange_ms;
            w[k] = ms;
        }
    }
    if (j->st) {
        snprintf(j->msg, sizeof j->msg, "rank %u: moevk_ep_layer_forward: %s", j->rank,
                 moevk_context_last_error(ctx));
    } else {
        qsort(c, n, sizeof(double), cmp_double);
        qsort(e, n, sizeof(double), cmp_double);
        qsort(w, n, sizeof(double), cmp_double);
        j->comp_ms = c[n / 2];
        j->exch_ms = e[n / 2];
        j->pass_ms = j->forward_ms = w[n / 2];
    }
    free(c), free(e), free(w);
    moevk_ep_layer_destroy(L);
    const uint32_t msgs = moevk_context_validation_messages(ctx);
    if (!j->st && j->validate && msgs) {
        j->st = MOEVK_ERROR_INTERNAL;
        snprintf(j->msg, sizeof j->msg, "rank %u: %u validation messages", j->rank, msgs);
    }
    moevk_context_destroy(ctx);
    return NULL;
}

/* Run R thread ranks over x [T, H] (each its contiguous share of the T
 * tokens, writing its rows of y); iters > 0: bench passes without
 * statistics. jobs[R] are filled; returns 0 when every rank succeeded. */
static int thr_run(const moevk_layer_desc *d, const char *devices, int validate, uint32_t R,
                   const float *x, uint32_t T, float *y, moevk_routing_stats *stats,
                   uint32_t iters, thr_rank *jobs, char *err, size_t n)
{
    moevk_thread_group *g;
    if (moevk_thread_group_create(R, 0, &g))
        return ep_errf(err, n, "%s", "the thread group could not be created");
    pthread_t *th = calloc(R, sizeof(pthread_t));
    if (!th) {
        moevk_thread_group_destroy(g);
        return ep_errf(err, n, "%s", "out of host memory");
    }
    /* --device D0,D1,...: rank r opens entry r modulo the list */
    uint32_t ndev = 0;
    char list[64][64];
    if (devices && *devices) {
        const char *p = devices;
        while (*p && ndev < 64) {
            size_t len = strcspn(p, ",");
            snprintf(list[ndev++], sizeof list[0], "%.*s", (int)(len < 63 ? len : 63), p);
            p += len + (p[len] == ',');
        }
    }
    const uint32_t H = d->hidden;
    uint32_t started = 0;
    for (uint32_t r = 0; r < R; r++) {
        const uint32_t t0 = (uint32_t)((uint64_t)T * r / R), t1 = (uint32_t)((uint64_t)T * (r + 1) / R);
        thr_rank *j = &jobs[r];
        memset(j, 0, sizeof *j);
        j->d = d;
        j->g = g;
        j->validate = validate;
        j->rank = r;
        j->iters = iters;
        j->T = iters ? T : t1 - t0; /* bench: T tokens on every rank */
        j->x = iters ? x + (size_t)r * T * H : x + (size_t)t0 * H;
        j->y = iters ? y + (size_t)r * T * H : y + (size_t)t0 * H;
        j->stats = r == 0 ? stats : NULL;
        if (ndev) {
            j->use_device = 1;
            snprintf(j->device, sizeof j->device, "%s", list[r % ndev]);
        }
        if (pthread_create(&th[r], NULL, thr_main, j))
            break;
        started++;
    }
    for (uint32_t r = 0; r < started; r++)
        pthread_join(th[r], NULL);
    free(th);
    moevk_thread_group_destroy(g);
    if (started < R)
        return ep_errf(err, n, "%s", "a rank's thread could not be started");
    for (uint32_t r = 0; r < R; r++)
        if (jobs[r].st) {
            /* the failing rank's own message first */
            for (uint32_t q = 0; q < R; q++)
                if (jobs[q].st && !strstr(jobs[q].msg, "failed ("))
                    return ep_errf(err, n, "%s", jobs[q].msg);
            return ep_errf(err, n, "%s", jobs[r].msg);
        }
    return 0;
}

int cli_ep_run_threads(const moevk_layer_desc *d, const char *devices, int validate, uint32_t R,
                       const float *x, uint32_t T, float *y, moevk_routing_stats *stats,
                       char *devdesc, size_t dn, double *create_ms, double *forward_ms,
                       char *err, size_t n)
{
    thr_rank *jobs = calloc(R, sizeof *jobs);
    if (!jobs)
        return ep_errf(err, n, "%s", "out of host memory");
    int rc = thr_run(d, devices, validate, R, x, T, y, stats, 0, jobs, err, n);
    if (!rc) {
        double c = 0, f = 0;
        for (uint32_t r = 0; r < R; r++) {
            c = jobs[r].create_ms > c ? jobs[r].create_ms : c;
            f = jobs[r].forward_ms > f ? jobs[r].forward_ms : f;
        }
        *create_ms = c;
        *forward_ms = f;
        snprintf(devdesc, dn, "%s", jobs[0].devname);
    }
    free(jobs);
    return rc;
}

/* The bench's table (rank 0 of MPI, or the thread ranks): per rank a[10] =
 * compute, exchange, pass ms, bytes sent, received, rows sent, received,
 * rows its experts ran, first expert, experts. */
static void bench_table(const mvk_preset *p, uint32_t scale, const moevk_layer_desc *d,
                        moevk_dtype dt, int size, const char *how, const char *devdesc,
                        uint32_t tokens, uint32_t iters, const double *all)
{
    printf("layer    %s / %u: H=%u F=%u E=%u k=%u, %s experts, %d ranks (%s; %s), %u tokens "
           "per rank, median of %u passes\n",
           p->name, scale, d->hidden, d->ffn, d->num_experts, d->top_k, moevk_dtype_name(dt),
           size, how, devdesc, tokens, iters);
    printf("%4s %9s %10s %11s %11s %12s %12s %9s %9s %8s\n", "rank", "experts", "compute_ms",
           "exchange_ms", "pass_ms", "bytes_sent", "bytes_recv", "rows_out", "rows_in",
           "ran_rows");
    for (int q = 0; q < size; q++) {
        const double *a = all + 10 * q;
        char ex[32];
        snprintf(ex, sizeof ex, "%.0f..%.0f", a[8], a[8] + a[9] - 1);
        printf("%4d %9s %10.3f %11.3f %11.3f %12.0f %12.0f %9.0f %9.0f %8.0f\n", q,
               a[9] ? ex : "none", a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
    }
    printf("note     exchange_ms includes waiting for the slowest rank; rows are staged "
           "through host memory\n");
}

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: mpirun -np R moevk bench --expert-parallel [--preset P] [--scale S]\n"
               "                 [--tokens T] [--dtype FORMAT] [--iters N] [--device D]\n"
               "                 [--validate]\n"
               "       moevk bench --expert-parallel --ranks R [--device D0,D1,..] [...]\n"
               "  One layer of preset P (H and F divided by S), its experts split over the R\n"
               "  ranks (MPI processes, or with --ranks threads of this process, rank r on\n"
               "  device r of the list), T tokens on each rank; per rank: local compute and\n"
               "  exchange time (wall clock, the median pass of N), bytes and rows sent and\n"
               "  received.\n"
               "  Defaults: --preset mixtral-8x7b --scale 8 --tokens 64 --dtype bf16 --iters 5\n");
}

#if MOEVK_HAVE_MPI

static int ep_rank, ep_size;

int cli_ep_begin(int *argc, char ***argv, int *rank, int *size)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init(argc, argv) != MPI_SUCCESS)
        return -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &ep_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ep_size);
    *rank = ep_rank;
    *size = ep_size;
    /* rank 0 speaks for all */
    if (ep_rank != 0 && !freopen("/dev/null", "w", stdout))
        return -1;
    return 0;
}

void cli_ep_end(void)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin)
        MPI_Finalize();
}

/* Every rank's ok (nonzero: failed): 1 when any failed. */
static int any_failed(int failed)
{
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any;
}

typedef struct ep_rank_state {
    moevk_context *ctx;
    moevk_mpi_transport *mt;
    moevk_transport tr;
    moevk_ep_layer *L;
} ep_rank_state;

static void ep_state_free(ep_rank_state *s)
{
    moevk_ep_layer_destroy(s->L);
    moevk_mpi_transport_destroy(s->mt);
    moevk_context_destroy(s->ctx);
    memset(s, 0, sizeof *s);
}

/* Context, transport and layer on every rank (create is collective). */
static int ep_state_make(const moevk_layer_desc *d, const char *device, int validate,
                         ep_rank_state *s, char *devdesc, size_t dn, double *create_ms, char *err,
                         size_t n)
{
    memset(s, 0, sizeof *s);
    char cerr[512] = "";
    /* --device D0,D1,..: rank r opens entry r modulo the list (the GPUs of a
     * node, one a rank) */
    char mine[64] = "";
    if (device && strchr(device, ',')) {
        uint32_t nd = 1;
        for (const char *q = device; *q; q++)
            nd += *q == ',';
        const char *q = device;
        for (uint32_t i = 0; i < (uint32_t)ep_rank % nd; i++)
            q = strchr(q, ',') + 1;
        const size_t len = strcspn(q, ",");
        snprintf(mine, sizeof mine, "%.*s", (int)(len < 63 ? len : 63), q);
        device = mine;
    }
    moevk_context_desc cd = {.device = device, .flags = validate ? MOEVK_CONTEXT_VALIDATION : 0,
                             .error_message = cerr, .error_message_size = sizeof cerr};
    int failed = 0;
    if (moevk_context_create(&cd, &s->ctx)) {
        snprintf(err, n, "rank %d: no Vulkan context: %s", ep_rank, cerr);
        failed = 1;
    } else if (moevk_mpi_transport_create(MPI_COMM_WORLD, 0, &s->mt, &s->tr)) {
        snprintf(err, n, "rank %d: the MPI transport could not be created", ep_rank);
        failed = 1;
    }
    if (any_failed(failed)) {
        if (!failed)
            snprintf(err, n, "another rank could not open its device or transport");
        ep_state_free(s);
        return -1;
    }
    if (devdesc)
        snprintf(devdesc, dn, "%s", moevk_context_device_info(s->ctx)->name);
    double t0 = mvk_now_ms();
    moevk_ep_desc ed = {.layer = d, .transport = &s->tr};
    if (moevk_ep_layer_create(s->ctx, &ed, &s->L)) {
        snprintf(err, n, "rank %d: moevk_ep_layer_create: %s", ep_rank,
                 moevk_context_last_error(s->ctx));
        ep_state_free(s);
        return -1;
    }
    if (create_ms)
        *create_ms = mvk_now_ms() - t0;
    return 0;
}

int cli_ep_run(const moevk_layer_desc *d, const char *device, int validate, const float *x,
               uint32_t T, float *y, moevk_routing_stats *stats, char *devdesc, size_t dn,
               double *create_ms, double *forward_ms, char *err, size_t n)
{
    const uint32_t H = d->hidden, R = (uint32_t)ep_size, me = (uint32_t)ep_rank;
    if ((uint64_t)T * H > 0x7fffffff)
        return ep_errf(err, n, "%s", "x has more than 2^31 values: beyond one MPI gather");
    ep_rank_state s;
    if (ep_state_make(d, device, validate, &s, devdesc, dn, create_ms, err, n))
        return -1;
    const uint32_t t0 = (uint32_t)((uint64_t)T * me / R), t1 = (uint32_t)((uint64_t)T * (me + 1) / R);
    float *mine = malloc(sizeof(float) * ((size_t)(t1 - t0) * H + 1));
    int *cnt = malloc(sizeof(int) * R), *dsp = malloc(sizeof(int) * R);
    int rc = -1;
    moevk_status st = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    double ts = mvk_now_ms();
    /* a local allocation failure still enters the collective pass (which
     * then fails on every rank) */
    st = moevk_ep_layer_forward(s.L, t1 - t0, mine && cnt && dsp ? x + (size_t)t0 * H : NULL,
                                mine, stats);
    if (forward_ms)
        *forward_ms = mvk_now_ms() - ts;
    if (st) {
        snprintf(err, n, "rank %d: moevk_ep_layer_forward: %s", ep_rank,
                 moevk_context_last_error(s.ctx));
        goto done;
    }
    for (uint32_t r = 0; r < R; r++) {
        const uint64_t a = (uint64_t)T * r / R, b = (uint64_t)T * (r + 1) / R;
        cnt[r] = (int)((b - a) * H);
        dsp[r] = (int)(a * H);
    }
    if (MPI_Gatherv(mine, cnt[me], MPI_FLOAT, y, cnt, dsp, MPI_FLOAT, 0, MPI_COMM_WORLD) !=
        MPI_SUCCESS) {
        snprintf(err, n, "rank %d: MPI_Gatherv of y failed", ep_rank);
        goto done;
    }
    rc = 0;
done:
    free(mine), free(cnt), free(dsp);
    ep_state_free(&s);
    return rc;
}

/* The bench over MPI ranks: every rank makes the layer, rank 0 prints the
 * table of all. */
static int bench_mpi(const mvk_preset *p, uint32_t scale, moevk_dtype dt, const char *device,
                     int validate, uint32_t tokens, uint32_t iters, int *argc, char ***argv)
{
    int rank, size;
    if (cli_ep_begin(argc, argv, &rank, &size)) {
        fprintf(stderr, "moevk bench: MPI could not be initialised\n");
        return 1;
    }
    mvk_layer_weights w;
    char err[1024] = "";
    int rc = 1, made = 0;
    /* every expert the same values: fast to make, and timing does not
     * depend on them; the seed is the same on every rank */
    if (mvk_weights_make_ex(p, scale, dt, 1234, true, &w)) {
        snprintf(err, sizeof err, "rank %d: the preset's weights could not be made", rank);
    } else {
        made = 1;
        w.desc.flags |= MOEVK_LAYER_BATCH_INVARIANT;
    }
    if (any_failed(!made)) {
        fprintf(stderr, "moevk bench: %s\n", err[0] ? err : "another rank failed");
        if (made)
            mvk_weights_free(&w);
        cli_ep_end();
        return 1;
    }
    const moevk_layer_desc *d = &w.desc;
    const uint32_t H = d->hidden;
    float *x = malloc(sizeof(float) * (size_t)tokens * H);
    float *y = malloc(sizeof(float) * (size_t)tokens * H);
    double *comp = calloc(iters, sizeof(double)), *exch = calloc(iters, sizeof(double)),
           *wall = calloc(iters, sizeof(double));
    ep_rank_state s;
    char devdesc[256] = "";
    double create_ms = 0;
    if (ep_state_make(d, device, validate, &s, devdesc, sizeof devdesc, &create_ms, err,
                      sizeof err)) {
        fprintf(stderr, "moevk bench: %s\n", err);
        goto out;
    }
    mvk_rng r = mvk_rng_seed(99, (uint64_t)rank + 1); /* each rank its own tokens */
    for (size_t i = 0; x && i < (size_t)tokens * H; i++)
        x[i] = mvk_rng_uniform(&r, -1, 1);
    moevk_ep_times t = {0};
    moevk_status st = MOEVK_SUCCESS;
    /* one warm-up pass (pipelines), then the timed ones */
    for (uint32_t it = 0; it <= iters && !st; it++) {
        const double t0 = mvk_now_ms();
        st = moevk_ep_layer_forward(s.L, tokens, x && y && comp && exch && wall ? x : NULL, y,
                                    NULL);
        const double ms = mvk_now_ms() - t0;
        moevk_ep_layer_times(s.L, &t);
        if (it && !st) {
            comp[it - 1] = t.compute_ms;
            exch[it - 1] = t.exchange_ms;
            wall[it - 1] = ms;
        }
    }
    if (st) {
        fprintf(stderr, "moevk bench: rank %d: %s\n", rank, moevk_context_last_error(s.ctx));
        ep_state_free(&s);
        goto out;
    }
    qsort(comp, iters, sizeof(double), cmp_double);
    qsort(exch, iters, sizeof(double), cmp_double);
    qsort(wall, iters, sizeof(double), cmp_double);
    uint32_t first, count;
    moevk_ep_layer_experts(s.L, &first, &count);
    double mine[10] = {comp[iters / 2], exch[iters / 2], wall[iters / 2],
                       (double)t.bytes_sent, (double)t.bytes_received, (double)t.rows_sent,
                       (double)t.rows_received, (double)t.expert_rows, first, count};
    double *all = malloc(sizeof mine * (size_t)size);
    if (MPI_Gather(mine, 10, MPI_DOUBLE, all, 10, MPI_DOUBLE, 0, MPI_COMM_WORLD) ==
            MPI_SUCCESS &&
        rank == 0 && all)
        bench_table(p, scale, d, dt, size, "MPI", devdesc, tokens, iters, all);
    free(all);
    ep_state_free(&s);
    rc = 0;
out:
    free(x), free(y), free(comp), free(exch), free(wall);
    mvk_weights_free(&w);
    cli_ep_end();
    return rc;
}

#else /* no MPI */

int cli_ep_begin(int *argc, char ***argv, int *rank, int *size)
{
    (void)argc, (void)argv;
    *rank = 0;
    *size = 1;
    return -1;
}

void cli_ep_end(void)
{
}

int cli_ep_run(const moevk_layer_desc *d, const char *device, int validate, const float *x,
               uint32_t T, float *y, moevk_routing_stats *stats, char *devdesc, size_t dn,
               double *create_ms, double *forward_ms, char *err, size_t n)
{
    (void)d, (void)device, (void)validate, (void)x, (void)T, (void)y, (void)stats;
    (void)devdesc, (void)dn, (void)create_ms, (void)forward_ms;
    return ep_errf(err, n, "%s", "this moevk was built without MPI (libopenmpi-dev)");
}

static int bench_mpi(const mvk_preset *p, uint32_t scale, moevk_dtype dt, const char *device,
                     int validate, uint32_t tokens, uint32_t iters, int *argc, char ***argv)
{
    (void)p, (void)scale, (void)dt, (void)device, (void)validate, (void)tokens, (void)iters;
    (void)argc, (void)argv;
    fprintf(stderr, "moevk bench: --expert-parallel without --ranks needs MPI, and this moevk "
                    "was built without it (install libopenmpi-dev and rebuild, or give --ranks "
                    "N for threads)\n");
    return 1;
}

#endif

/* moevk bench --expert-parallel: MPI ranks, or --ranks N threads */
int cli_ep_bench(int argc, char **argv)
{
    const char *preset = "mixtral-8x7b", *dtype = "bf16", *device = NULL;
    uint32_t scale = 8, tokens = 64, iters = 5, ranks = 0;
    int validate = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--expert-parallel"))
            continue;
        if (!strcmp(a, "--validate")) {
            validate = 1;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            bench_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "moevk bench --expert-parallel: %s needs a value\n", a);
            return 2;
        }
        i++;
        char *end = NULL;
        if (!strcmp(a, "--preset"))
            preset = v;
        else if (!strcmp(a, "--dtype"))
            dtype = v;
        else if (!strcmp(a, "--device"))
            device = v;
        else if (!strcmp(a, "--scale") || !strcmp(a, "--tokens") || !strcmp(a, "--iters") ||
                 !strcmp(a, "--ranks")) {
            unsigned long u = strtoul(v, &end, 10);
            const unsigned long max = !strcmp(a, "--ranks") ? 64 : 1000000;
            if (!*v || *end || u == 0 || u > max) {
                fprintf(stderr, "moevk bench --expert-parallel: %s '%s' is not a count in "
                                "1..%lu\n", a, v, max);
                return 2;
            }
            *(!strcmp(a, "--scale")    ? &scale
              : !strcmp(a, "--tokens") ? &tokens
              : !strcmp(a, "--ranks")  ? &ranks
                                       : &iters) = (uint32_t)u;
        } else {
            fprintf(stderr, "moevk bench --expert-parallel: unknown option %s\n", a);
            bench_usage(stderr);
            return 2;
        }
    }
    const mvk_preset *p = mvk_preset_find(preset);
    moevk_dtype dt;
    if (!p) {
        fprintf(stderr, "moevk bench --expert-parallel: no preset '%s'\n", preset);
        return 2;
    }
    if (mvk_dtype_parse(dtype, 1, &dt)) {
        fprintf(stderr, "moevk bench --expert-parallel: --dtype '%s' is not a weight format\n",
                dtype);
        return 2;
    }
    if (!ranks)
        return bench_mpi(p, scale, dt, device, validate, tokens, iters, &argc, &argv);
    mvk_layer_weights w;
    if (mvk_weights_make_ex(p, scale, dt, 1234, true, &w)) {
        fprintf(stderr, "moevk bench: the preset's weights could not be made\n");
        return 1;
    }
    w.desc.flags |= MOEVK_LAYER_BATCH_INVARIANT;
    const uint32_t H = w.desc.hidden;
    float *x = malloc(sizeof(float) * (size_t)ranks * tokens * H);
    float *y = malloc(sizeof(float) * (size_t)ranks * tokens * H);
    thr_rank *jobs = calloc(ranks, sizeof *jobs);
    double *all = calloc((size_t)ranks * 10, sizeof(double));
    char err[1024] = "";
    int rc = 1;
    if (!x || !y || !jobs || !all) {
        fprintf(stderr, "moevk bench: out of host memory\n");
        goto out;
    }
    mvk_rng r = mvk_rng_seed(99, 1);
    for (size_t i = 0; i < (size_t)ranks * tokens * H; i++)
        x[i] = mvk_rng_uniform(&r, -1, 1);
    /* each thread rank runs on its own T tokens: x + r T H */
    if (thr_run(&w.desc, device, validate, ranks, x, tokens, y, NULL, iters, jobs, err,
                sizeof err)) {
        fprintf(stderr, "moevk bench: %s\n", err);
        goto out;
    }
    for (uint32_t q = 0; q < ranks; q++) {
        const thr_rank *j = &jobs[q];
        const double a[10] = {j->comp_ms, j->exch_ms, j->pass_ms, (double)j->times.bytes_sent,
                              (double)j->times.bytes_received, (double)j->times.rows_sent,
                              (double)j->times.rows_received, (double)j->times.expert_rows,
                              j->first, j->count};
        memcpy(all + 10 * q, a, sizeof a);
    }
    bench_table(p, scale, &w.desc, dt, (int)ranks, "threads", jobs[0].devname, tokens, iters,
                all);
    rc = 0;
out:
    free(x), free(y), free(jobs), free(all);
    mvk_weights_free(&w);
    return rc;
}
