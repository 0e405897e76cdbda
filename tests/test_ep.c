/*
 * Expert parallelism over the thread transport: R ranks (threads, each its
 * own context) holding their own tokens and a share of the experts give, on
 * every rank, bitwise the rows of one batch-invariant layer's y over all
 * ranks' tokens in rank order, and that pass's statistics; a failure on one
 * rank makes every rank fail, and none hangs.
 *
 * Rank threads never assert (Criterion's asserts belong to the test's
 * thread): they record what happened and the test checks it after joining.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "random_layer.h"
#include "testing.h"

#define MAX_R 4

typedef struct rank_job {
    const moevk_layer_desc *d;
    const uint32_t *expert_rank;
    moevk_context *ctx;
    moevk_thread_group *g;
    uint32_t rank, T;
    const float *x;
    float *y;
    uint32_t tpe[64];
    moevk_routing_stats stats;
    int passes;       /* forward passes to run (0: create only) */
    int skip_forward; /* never calls forward: the others must time out */
    int null_x;       /* a bad input: x NULL with T tokens */
    int no_stats;     /* forward without statistics */
    int64_t fail_after; /* the n-th fallible operation of this rank's context fails */
    moevk_status st_create, st_fwd;
    char msg[512];
    moevk_ep_times times;
    uint32_t first, count;
} rank_job;

static void *rank_main(void *arg)
{
    rank_job *j = arg;
    moevk_transport tr;
    j->st_create = moevk_thread_group_transport(j->g, j->rank, &tr);
    moevk_ep_layer *L = NULL;
    if (j->fail_after)
        moevk_testing_fail_after(j->ctx, j->fail_after);
    if (!j->st_create) {
        moevk_ep_desc ed = {.layer = j->d, .transport = &tr, .expert_rank = j->expert_rank};
        j->st_create = moevk_ep_layer_create(j->ctx, &ed, &L);
    }
    if (j->st_create) {
        snprintf(j->msg, sizeof j->msg, "%s", moevk_context_last_error(j->ctx));
        moevk_testing_fail_after(j->ctx, 0);
        return NULL;
    }
    moevk_ep_layer_experts(L, &j->first, &j->count);
    for (int p = 0; p < j->passes && !j->skip_forward; p++) {
        memset(&j->stats, 0, sizeof j->stats);
        j->stats.tokens_per_expert = j->tpe;
        j->st_fwd = moevk_ep_layer_forward(L, j->T, j->null_x ? NULL : j->x, j->y,
                                           j->no_stats ? NULL : &j->stats);
        if (j->st_fwd) {
            snprintf(j->msg, sizeof j->msg, "%s", moevk_context_last_error(j->ctx));
            break;
        }
    }
    moevk_ep_layer_times(L, &j->times);
    moevk_ep_layer_destroy(L);
    moevk_testing_fail_after(j->ctx, 0);
    return NULL;
}

typedef struct ep_world {
    uint32_t R;
    moevk_context *ref;
    moevk_context *ctx[MAX_R];
    rank_job job[MAX_R];
} ep_world;

static void world_begin(ep_world *w)
{
    memset(w, 0, sizeof *w);
    w->ref = mvkt_context();
    for (uint32_t r = 0; r < MAX_R; r++)
        w->ctx[r] = mvkt_context();
}

static void world_end(ep_world *w)
{
    for (uint32_t r = 0; r < MAX_R; r++)
        mvkt_context_end(w->ctx[r]);
    mvkt_context_end(w->ref);
}

/* Run R ranks on the layer, rank r holding tokens Ts[r] of x (in rank
 * order); timeout_ms for the group. Returns the wall time in seconds. */
static double run_ranks_ex(ep_world *w, const moevk_layer_desc *d, uint32_t R, const uint32_t *Ts,
                           const float *x, float *y, const uint32_t *expert_rank,
                           uint32_t timeout_ms, int bad_rank, int absent_rank, int fault_rank,
                           int64_t fail_after, int stats_rank)
{
    moevk_thread_group *g;
    cr_assert_eq(moevk_thread_group_create(R, timeout_ms, &g), MOEVK_SUCCESS);
    pthread_t th[MAX_R];
    uint64_t at = 0;
    w->R = R;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint32_t r = 0; r < R; r++) {
        rank_job *j = &w->job[r];
        memset(j, 0, sizeof *j);
        *j = (rank_job){
            .d = d, .expert_rank = expert_rank, .ctx = w->ctx[r], .g = g, .rank = r, .T = Ts[r],
            .x = x + at * d->hidden, .y = y + at * d->hidden, .passes = 1,
            .skip_forward = (int)r == absent_rank, .null_x = (int)r == bad_rank,
            .fail_after = (int)r == fault_rank ? fail_after : 0,
            .no_stats = stats_rank >= 0 && (int)r != stats_rank,
        };
        at += Ts[r];
        cr_assert_eq(pthread_create(&th[r], NULL, rank_main, j), 0);
    }
    for (uint32_t r = 0; r < R; r++)
        pthread_join(th[r], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    moevk_thread_group_destroy(g);
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
}

static double run_ranks(ep_world *w, const moevk_layer_desc *d, uint32_t R, const uint32_t *Ts,
                        const float *x, float *y, const uint32_t *expert_rank,
                        uint32_t timeout_ms, int bad_rank, int absent_rank)
{
    return run_ranks_ex(w, d, R, Ts, x, y, expert_rank, timeout_ms, bad_rank, absent_rank, -1, 0,
                        -1);
}

/* The single-device layer's y and statistics over all tokens. */
static void reference(ep_world *w, const moevk_layer_desc *d, uint32_t T, const float *x,
                      float *y, uint32_t *tpe, moevk_routing_stats *stats)
{
    moevk_layer_desc dd = *d;
    /* (expert choice refuses it: a token's experts depend on the others) */
    if (d->routing != MOEVK_ROUTING_EXPERT_CHOICE)
        dd.flags |= MOEVK_LAYER_BATCH_INVARIANT;
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(w->ref, &dd, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(w->ref));
    moevk_tensor tx = tensor2(w->ref, T, d->hidden), ty = tensor2(w->ref, T, d->hidden);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    memset(stats, 0, sizeof *stats);
    stats->tokens_per_expert = tpe;
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, stats), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(w->ref));
    cr_assert_eq(moevk_tensor_download(&ty, y), 0);
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
    moevk_layer_destroy(L);
}

static void check_close(double got, double want, const char *what, uint32_t r, uint64_t seed)
{
    cr_assert(fabs(got - want) <= 1e-5 * fabs(want) + 1e-6,
              "rank %u: %s = %.9g, the single-device layer's %.9g (seed %llu)", r, what, got,
              want, (unsigned long long)seed);
}

/* R ranks on layer d against the single-device layer: y bitwise, the
 * statistics. */
static void ep_case_d(ep_world *w, const moevk_layer_desc *d, mvkt_rng *rng, uint32_t R,
                      const uint32_t *Ts, const uint32_t *expert_rank, uint64_t seed,
                      const char *what)
{
    const uint32_t H = d->hidden, E = d->num_experts;
    uint32_t T = 0;
    for (uint32_t r = 0; r < R; r++)
        T += Ts[r];
    float *x = random_x(rng, T ? T : 1, H);
    float *y = malloc(sizeof(float) * (T ? T : 1) * H);
    float *yr = malloc(sizeof(float) * (T ? T : 1) * H);
    cr_assert(y && yr);
    mvkt_poison(y, (size_t)T * H);
    uint32_t tpe[64];
    moevk_routing_stats rs;
    reference(w, d, T, x, yr, tpe, &rs);
    run_ranks(w, d, R, Ts, x, y, expert_rank, 0, -1, -1);
    for (uint32_t r = 0; r < R; r++) {
        const rank_job *j = &w->job[r];
        cr_assert_eq(j->st_create, MOEVK_SUCCESS, "%s: rank %u create: %s (seed %llu)", what, r,
                     j->msg, (unsigned long long)seed);
        cr_assert_eq(j->st_fwd, MOEVK_SUCCESS, "%s: rank %u forward: %s (seed %llu)", what, r,
                     j->msg, (unsigned long long)seed);
        cr_assert_eq(j->stats.dropped, rs.dropped, "%s: rank %u dropped %llu, single %llu",
                     what, r, (unsigned long long)j->stats.dropped,
                     (unsigned long long)rs.dropped);
        for (uint32_t e = 0; e < E; e++)
            cr_assert_eq(j->tpe[e], tpe[e],
                         "%s: rank %u: tokens_per_expert[%u] = %u, single device %u (seed %llu)",
                         what, r, e, j->tpe[e], tpe[e], (unsigned long long)seed);
        check_close(j->stats.load_balancing_loss, rs.load_balancing_loss, "load_balancing_loss",
                    r, seed);
        check_close(j->stats.router_z_loss, rs.router_z_loss, "router_z_loss", r, seed);
        check_close(j->stats.routing_entropy, rs.routing_entropy, "routing_entropy", r, seed);
    }
    for (size_t i = 0; i < (size_t)T * H; i++)
        cr_assert(!memcmp(&y[i], &yr[i], 4),
                  "%s: R = %u: y[%zu, %zu] = %.9g, the single-device layer's %.9g (seed %llu)",
                  what, R, i / H, i % H, (double)y[i], (double)yr[i],
                  (unsigned long long)seed);
    free(x);
    free(y);
    free(yr);
}

static void ep_case(ep_world *w, const rlayer_spec *spec, uint32_t R, const uint32_t *Ts,
                    const uint32_t *expert_rank, uint64_t seed, const char *what)
{
    mvkt_rng rng = mvkt_rng_make(seed);
    rlayer l;
    rlayer_make(&rng, &l, spec);
    ep_case_d(w, &l.d, &rng, R, Ts, expert_rank, seed, what);
    rlayer_free(&l);
}

static uint64_t seed_of(uint64_t salt)
{
    return mvkt_base_seed() ^ (salt * 0x9e3779b97f4a7c15ull);
}

Test(ep, ranks_1_to_4_are_bitwise_one_device)
{
    ep_world w;
    world_begin(&w);
    /* f16 experts with biases, a gated shared expert of its own width */
    const rlayer_spec spec = {.H = 64, .F = 32, .E = 8, .K = 2, .shared = 1,
                              .dtype = MOEVK_DTYPE_F16, .biases = 1};
    /* uneven token counts, a rank without tokens */
    const uint32_t Ts[4][4] = {{13}, {6, 9}, {5, 0, 11}, {7, 3, 10, 4}};
    for (uint32_t R = 1; R <= 4; R++)
        ep_case(&w, &spec, R, Ts[R - 1], NULL, seed_of(R), "ranks");
    world_end(&w);
}

Test(ep, uneven_experts_and_placement)
{
    ep_world w;
    world_begin(&w);
    /* E = 6 over 4 ranks (1, 2, 1, 2 experts), E = 5 over 3; q8_0
     * experts, sigmoid grouped routing with a correction bias */
    const rlayer_spec s6 = {.H = 64, .F = 64, .E = 6, .K = 2, .dtype = MOEVK_DTYPE_Q8_0};
    const uint32_t T4[4] = {4, 8, 1, 6};
    ep_case(&w, &s6, 4, T4, NULL, seed_of(10), "E = 6, R = 4");
    const rlayer_spec s5 = {.H = 32, .F = 32, .E = 5, .K = 3, .shared = 2};
    const uint32_t T3[3] = {9, 2, 7};
    ep_case(&w, &s5, 3, T3, NULL, seed_of(11), "E = 5, R = 3");
    const rlayer_spec sg = {.H = 64, .F = 32, .E = 8, .K = 2,
                            .routing = MOEVK_ROUTING_SIGMOID_GROUPED};
    /* a placement of the caller's: rank 1 holds no expert at all */
    const uint32_t place[8] = {0, 0, 0, 2, 2, 2, 2, 2};
    ep_case(&w, &sg, 3, T3, place, seed_of(12), "rank 1 without experts");
    cr_assert_eq(w.job[1].count, 0, "rank 1 holds %u experts", w.job[1].count);
    cr_assert_eq(w.job[0].count, 3);
    cr_assert_eq(w.job[1].times.expert_rows, 0);
    world_end(&w);
}

Test(ep, a_rank_owning_no_selected_expert)
{
    ep_world w;
    world_begin(&w);
    /* one token, top-1 of 8 experts over 4 ranks: three ranks receive no
     * row at all; one rank with the token, three without */
    const rlayer_spec s = {.H = 32, .F = 32, .E = 8, .K = 1, .shared = 1};
    const uint32_t Ts[4] = {0, 0, 1, 0};
    ep_case(&w, &s, 4, Ts, NULL, seed_of(20), "one token");
    uint32_t idle = 0;
    for (uint32_t r = 0; r < 4; r++)
        idle += w.job[r].times.expert_rows == 0;
    cr_assert_eq(idle, 3, "%u of 4 ranks ran no expert row", idle);
    world_end(&w);
}

Test(ep, capacity_drops_as_one_device)
{
    ep_world w;
    world_begin(&w);
    /* C = ceil(0.5 * 40 * 2 / 4) = 10 of 20 assignments per expert on
     * average: a global admission order, drops on every rank */
    const rlayer_spec s = {.H = 32, .F = 32, .E = 4, .K = 2, .cf = 0.5f, .shared = 1};
    const uint32_t Ts[3] = {17, 8, 15};
    ep_case(&w, &s, 3, Ts, NULL, seed_of(30), "capacity 0.5");
    cr_assert_gt(w.job[0].stats.dropped, 0, "no assignment dropped");
    const rlayer_spec s2 = {.H = 32, .F = 32, .E = 8, .K = 2, .cf = 1.0f};
    const uint32_t T2[2] = {30, 2};
    ep_case(&w, &s2, 2, T2, NULL, seed_of(31), "capacity 1.0");
    world_end(&w);
}

Test(ep, a_failure_on_one_rank_fails_every_rank)
{
    ep_world w;
    world_begin(&w);
    mvkt_rng rng = mvkt_rng_make(seed_of(40));
    const rlayer_spec s = {.H = 32, .F = 32, .E = 4, .K = 2};
    rlayer l;
    rlayer_make(&rng, &l, &s);
    const uint32_t Ts[3] = {3, 3, 3};
    float *x = random_x(&rng, 9, 32), *y = malloc(sizeof(float) * 9 * 32);
    cr_assert_not_null(y);
    /* a bad input on rank 1 */
    run_ranks(&w, &l.d, 3, Ts, x, y, NULL, 0, 1, -1);
    for (uint32_t r = 0; r < 3; r++) {
        cr_assert_eq(w.job[r].st_create, MOEVK_SUCCESS, "%s", w.job[r].msg);
        cr_assert_eq(w.job[r].st_fwd, MOEVK_ERROR_INVALID_ARGUMENT, "rank %u: %s (%s)", r,
                     moevk_status_string(w.job[r].st_fwd), w.job[r].msg);
        cr_assert(strstr(w.job[r].msg, r == 1 ? "x or y is NULL" : "rank 1 of 3 failed"),
                  "rank %u: %s", r, w.job[r].msg);
    }
    /* a bad description on rank 2 only (top_k 0): create fails everywhere */
    moevk_layer_desc bad = l.d;
    bad.top_k = 0;
    moevk_thread_group *g;
    cr_assert_eq(moevk_thread_group_create(3, 0, &g), MOEVK_SUCCESS);
    pthread_t th[3];
    for (uint32_t r = 0; r < 3; r++) {
        w.job[r] = (rank_job){.d = r == 2 ? &bad : &l.d, .ctx = w.ctx[r], .g = g, .rank = r};
        cr_assert_eq(pthread_create(&th[r], NULL, rank_main, &w.job[r]), 0);
    }
    for (uint32_t r = 0; r < 3; r++)
        pthread_join(th[r], NULL);
    moevk_thread_group_destroy(g);
    for (uint32_t r = 0; r < 3; r++) {
        cr_assert_eq(w.job[r].st_create, MOEVK_ERROR_INVALID_ARGUMENT, "rank %u: %s", r,
                     w.job[r].msg);
        cr_assert(strstr(w.job[r].msg, r == 2 ? "top_k" : "rank 2 of 3 failed"), "rank %u: %s",
                  r, w.job[r].msg);
    }
    /* a rank that never calls forward: the others time out, none hangs */
    double s_wall = run_ranks(&w, &l.d, 3, Ts, x, y, NULL, 1500, -1, 0);
    for (uint32_t r = 1; r < 3; r++) {
        cr_assert_eq(w.job[r].st_fwd, MOEVK_ERROR_TIMEOUT, "rank %u: %s (%s)", r,
                     moevk_status_string(w.job[r].st_fwd), w.job[r].msg);
        cr_assert(strstr(w.job[r].msg, "did not all arrive"), "rank %u: %s", r, w.job[r].msg);
    }
    cr_assert_lt(s_wall, 30.0, "the ranks took %.1f s", s_wall);
    /* the layers still work after errors: a good pass */
    const uint32_t T2[2] = {2, 5};
    ep_case(&w, &s, 2, T2, NULL, seed_of(41), "after errors");
    free(x);
    free(y);
    rlayer_free(&l);
    world_end(&w);
}

Test(ep, bad_arguments)
{
    moevk_context *ctx = mvkt_context();
    moevk_thread_group *g;
    cr_assert_eq(moevk_thread_group_create(0, 0, &g), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_thread_group_create(1, 0, &g), MOEVK_SUCCESS);
    moevk_transport tr;
    cr_assert_eq(moevk_thread_group_transport(g, 1, &tr), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_thread_group_transport(g, 0, &tr), MOEVK_SUCCESS);
    mvkt_rng rng = mvkt_rng_make(seed_of(50));
    const rlayer_spec s = {.H = 32, .F = 32, .E = 4, .K = 2};
    rlayer l;
    rlayer_make(&rng, &l, &s);
    moevk_ep_layer *L = (moevk_ep_layer *)&l;
    moevk_ep_desc ed = {.layer = &l.d, .transport = &tr};
    moevk_layer_desc nr0 = l.d;
    nr0.flags |= MOEVK_LAYER_NO_ROUTED_EXPERTS;
    ed.layer = &nr0;
    cr_assert_eq(moevk_ep_layer_create(ctx, &ed, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_null(L);
    cr_assert(strstr(moevk_context_last_error(ctx), "needs its routed experts"), "%s",
              moevk_context_last_error(ctx));
    const uint32_t place[4] = {0, 0, 1, 0};
    ed.layer = &l.d;
    ed.expert_rank = place;
    cr_assert_eq(moevk_ep_layer_create(ctx, &ed, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "expert_rank[2] = 1"), "%s",
              moevk_context_last_error(ctx));
    moevk_transport half = tr;
    half.agree = NULL;
    ed.expert_rank = NULL;
    ed.transport = &half;
    cr_assert_eq(moevk_ep_layer_create(ctx, &ed, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    ed.transport = &tr;
    /* the experts' input norm (Gemma 4) is not carried to the experts' ranks */
    moevk_layer_desc normed = l.d;
    normed.expert_norm_eps = 1e-6f;
    ed.layer = &normed;
    cr_assert_eq(moevk_ep_layer_create(ctx, &ed, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "expert_norm_eps"), "%s",
              moevk_context_last_error(ctx));
    /* the token side alone refuses a whole pass */
    moevk_layer_desc nr = l.d;
    nr.flags |= MOEVK_LAYER_NO_ROUTED_EXPERTS;
    nr.experts = (moevk_expert_weights){0};
    moevk_layer *tok;
    cr_assert_eq(moevk_layer_create(ctx, &nr, &tok), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_tensor tx = tensor2(ctx, 2, 32), ty = tensor2(ctx, 2, 32);
    cr_assert_eq(moevk_layer_forward(tok, &tx, &ty, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "NO_ROUTED_EXPERTS"), "%s",
              moevk_context_last_error(ctx));
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
    moevk_layer_destroy(tok);
    moevk_thread_group_destroy(g);
    rlayer_free(&l);
    mvkt_context_end(ctx);
}

Test(ep, every_failure_point_fails_every_rank_and_leaks_nothing)
{
    ep_world w;
    world_begin(&w);
    const uint64_t seed = seed_of(60);
    mvkt_rng rng = mvkt_rng_make(seed);
    const rlayer_spec s = {.H = 32, .F = 32, .E = 6, .K = 2, .shared = 1, .cf = 1.0f};
    rlayer l;
    rlayer_make(&rng, &l, &s);
    const uint32_t Ts[3] = {4, 6, 5};
    float *x = random_x(&rng, 15, 32), *y = malloc(sizeof(float) * 15 * 32);
    float *yr = malloc(sizeof(float) * 15 * 32);
    cr_assert(y && yr);
    uint32_t tpe[64];
    moevk_routing_stats rs;
    reference(&w, &l.d, 15, x, yr, tpe, &rs);
    /* a warm run (pipelines, workspaces), then the baselines; only rank 1
     * asks for statistics (the others pass NULL: the same exchanges) */
    run_ranks_ex(&w, &l.d, 3, Ts, x, y, NULL, 0, -1, -1, -1, 0, 1);
    for (uint32_t r = 0; r < 3; r++)
        cr_assert_eq(w.job[r].st_fwd, MOEVK_SUCCESS, "rank %u: %s", r, w.job[r].msg);
    cr_assert_eq(w.job[1].tpe[0], tpe[0]);
    int64_t base[3];
    for (uint32_t r = 0; r < 3; r++)
        base[r] = moevk_testing_live_objects(w.ctx[r]);
    /* the n-th fallible operation of rank f fails, for growing n, until a
     * run gets through: every rank fails alike, nothing is left behind */
    uint32_t failures = 0;
    for (int f = 0; f < 3; f += 2) {
        int64_t n = 1;
        for (;; n = n < 8 ? n + 1 : n * 3 / 2) {
            mvkt_poison(y, 15 * 32);
            run_ranks_ex(&w, &l.d, 3, Ts, x, y, NULL, 0, -1, -1, f, n, -1);
            const moevk_status c0 = w.job[0].st_create, f0 = w.job[0].st_fwd;
            for (uint32_t r = 0; r < 3; r++) {
                cr_assert_eq(!!w.job[r].st_create, !!c0,
                             "fault %lld on rank %d: rank %u create %s, rank 0 %s",
                             (long long)n, f, r, moevk_status_string(w.job[r].st_create),
                             moevk_status_string(c0));
                cr_assert_eq(!!w.job[r].st_fwd, !!f0,
                             "fault %lld on rank %d: rank %u forward %s (%s), rank 0 %s",
                             (long long)n, f, r, moevk_status_string(w.job[r].st_fwd),
                             w.job[r].msg, moevk_status_string(f0));
                cr_assert(w.job[r].st_create != MOEVK_ERROR_TIMEOUT &&
                              w.job[r].st_fwd != MOEVK_ERROR_TIMEOUT,
                          "fault %lld on rank %d: rank %u waited out its peers: %s",
                          (long long)n, f, r, w.job[r].msg);
                cr_assert_eq(moevk_testing_live_objects(w.ctx[r]), base[r],
                             "fault %lld on rank %d: rank %u has %lld live objects, %lld before",
                             (long long)n, f, r,
                             (long long)moevk_testing_live_objects(w.ctx[r]),
                             (long long)base[r]);
            }
            if (!c0 && !f0)
                break;
            failures++;
        }
        for (size_t i = 0; i < 15 * 32; i++)
            cr_assert(!memcmp(&y[i], &yr[i], 4), "after the faults: y[%zu] = %g, not %g", i,
                      (double)y[i], (double)yr[i]);
    }
    cr_assert_gt(failures, 10, "only %u failure points were hit", failures);
    free(x);
    free(y);
    free(yr);
    rlayer_free(&l);
    world_end(&w);
}

Test(ep, passes_beyond_one_chunk)
{
    ep_world w;
    world_begin(&w);
    /* small per-pass buffers: the token side routes and combines, and the
     * expert side runs its rows, in several device batches per pass */
    for (uint32_t r = 0; r < MAX_R; r++)
        moevk_testing_set_scratch_range(w.ctx[r], 16384);
    const rlayer_spec s = {.H = 64, .F = 32, .E = 8, .K = 2, .shared = 1, .cf = 1.25f};
    const uint32_t Ts[3] = {150, 37, 201};
    ep_case(&w, &s, 3, Ts, NULL, seed_of(70), "small buffers");
    cr_assert_gt(w.job[0].times.expert_rows, 64, "rank 0 ran %llu rows",
                 (unsigned long long)w.job[0].times.expert_rows);
    world_end(&w);
}

Test(ep, weights_on_input_and_identity_experts)
{
    ep_world w;
    world_begin(&w);
    /* Llama 4: the routing weight scales the expert's input (sigmoid, top-1,
     * a shared expert) */
    uint64_t seed = seed_of(80);
    mvkt_rng rng = mvkt_rng_make(seed);
    const rlayer_spec s4 = {.H = 64, .F = 32, .E = 8, .K = 1, .shared = 1,
                            .routing = MOEVK_ROUTING_SIGMOID_GROUPED};
    rlayer l;
    rlayer_make(&rng, &l, &s4);
    l.d.flags |= MOEVK_LAYER_WEIGHTS_ON_INPUT;
    l.d.norm_topk_prob = 0;
    const uint32_t T3[3] = {6, 9, 4};
    ep_case_d(&w, &l.d, &rng, 3, T3, NULL, seed, "weights on the input");
    rlayer_free(&l);
    /* LongCat-Flash: 3 of 10 experts identity ones (computed where their
     * tokens are), the 7 FFN experts over 4 ranks; and with weights on the
     * input too */
    for (int woi = 0; woi < 2; woi++) {
        seed = seed_of(81 + (uint64_t)woi);
        rng = mvkt_rng_make(seed);
        const rlayer_spec sz = {.H = 32, .F = 32, .E = 10, .K = 3, .cf = woi ? 0 : 1.0f};
        rlayer_make(&rng, &l, &sz);
        l.d.num_zero_experts = 3;
        if (woi)
            l.d.flags |= MOEVK_LAYER_WEIGHTS_ON_INPUT;
        const uint32_t T4[4] = {5, 7, 0, 8};
        ep_case_d(&w, &l.d, &rng, 4, T4, NULL, seed,
                  woi ? "identity experts, weights on the input" : "identity experts");
        uint32_t held = 0;
        for (uint32_t r = 0; r < 4; r++)
            held += w.job[r].count;
        cr_assert_eq(held, 7, "the ranks hold %u experts, not the 7 FFN ones", held);
        rlayer_free(&l);
    }
    world_end(&w);
}

Test(ep, output_bias_scales_softcap_and_sparsemixer)
{
    ep_world w;
    world_begin(&w);
    /* JetMoE's output bias, Cohere2's halved routed and shared outputs,
     * Laguna's soft-capped router logits (the statistics read them too) */
    const uint64_t seed = seed_of(90);
    mvkt_rng rng = mvkt_rng_make(seed);
    const rlayer_spec s = {.H = 64, .F = 32, .E = 6, .K = 2, .shared = 2, .biases = 1};
    rlayer l;
    rlayer_make(&rng, &l, &s);
    float *ob = random_x(&rng, 1, 64);
    l.d.output_bias = ob;
    l.d.routed_scaling_factor = 0.5f;
    l.d.shared_scale = 0.5f;
    l.d.router_softcap = 1.5f;
    const uint32_t T2[2] = {11, 6};
    ep_case_d(&w, &l.d, &rng, 2, T2, NULL, seed, "bias, scales, softcap");
    free(ob);
    rlayer_free(&l);
    /* PhiMoE's SparseMixer (a per-token rule like the other top-k modes) */
    const uint64_t seed2 = seed_of(91);
    rng = mvkt_rng_make(seed2);
    const rlayer_spec sm = {.H = 32, .F = 32, .E = 8, .K = 2,
                            .routing = MOEVK_ROUTING_SPARSEMIXER};
    rlayer_make(&rng, &l, &sm);
    l.d.norm_topk_prob = 0;
    l.d.jitter_eps = 0.01f;
    const uint32_t T3[3] = {4, 9, 3};
    ep_case_d(&w, &l.d, &rng, 3, T3, NULL, seed2, "sparsemixer");
    rlayer_free(&l);
    world_end(&w);
}

Test(ep, expert_choice_over_every_ranks_tokens)
{
    ep_world w;
    world_begin(&w);
    /* each expert takes the C = min(T, ceil(cf T k / E)) tokens of all
     * ranks with the largest p (ties: the lower token in rank order) */
    const float cfs[3] = {0, 0.5f, 2.0f};
    for (int i = 0; i < 3; i++) {
        const uint64_t seed = seed_of(100 + (uint64_t)i);
        mvkt_rng rng = mvkt_rng_make(seed);
        const rlayer_spec s = {.H = 32, .F = 32, .E = 6, .K = 2, .shared = i == 1,
                               .routing = MOEVK_ROUTING_EXPERT_CHOICE, .cf = cfs[i]};
        rlayer l;
        rlayer_make(&rng, &l, &s);
        l.d.norm_topk_prob = 0;
        l.d.routed_scaling_factor = i == 2 ? 1.5f : 0.0f;
        const uint32_t Ts[3][3] = {{7, 0, 9}, {13, 4, 6}, {3, 5, 2}};
        ep_case_d(&w, &l.d, &rng, 3, Ts[i], NULL, seed, "expert choice");
        rlayer_free(&l);
    }
    /* equal probabilities everywhere (a zero router): every expert's choice
     * is decided by the tie rule alone, across the ranks */
    const uint64_t seed = seed_of(110);
    mvkt_rng rng = mvkt_rng_make(seed);
    const rlayer_spec s = {.H = 32, .F = 32, .E = 4, .K = 1,
                           .routing = MOEVK_ROUTING_EXPERT_CHOICE};
    rlayer l;
    rlayer_make(&rng, &l, &s);
    l.d.norm_topk_prob = 0;
    memset(l.router, 0, sizeof(float) * 4 * 32);
    const uint32_t T4[4] = {2, 3, 0, 5};
    ep_case_d(&w, &l.d, &rng, 4, T4, NULL, seed, "expert choice, all tied");
    rlayer_free(&l);
    world_end(&w);
}

Test(ep, per_expert_arrays_of_other_ranks_unread)
{
    ep_world w;
    world_begin(&w);
    /* per-expert pointers, NULL for the experts a rank does not hold */
    const uint64_t seed = seed_of(120);
    mvkt_rng rng = mvkt_rng_make(seed);
    const rlayer_spec s = {.H = 32, .F = 32, .E = 6, .K = 2};
    rlayer l;
    rlayer_make(&rng, &l, &s);
    const uint32_t Ts[2] = {5, 6};
    float *x = random_x(&rng, 11, 32), *y = malloc(sizeof(float) * 11 * 32),
          *yr = malloc(sizeof(float) * 11 * 32);
    cr_assert(y && yr);
    uint32_t tpe[64];
    moevk_routing_stats rs;
    reference(&w, &l.d, 11, x, yr, tpe, &rs);
    const size_t m = (size_t)32 * 32 * 4; /* one f32 expert matrix */
    const void *per[2][3][6] = {{{0}}};
    moevk_layer_desc d[2] = {l.d, l.d};
    for (uint32_t r = 0; r < 2; r++) {
        for (uint32_t e = 3 * r; e < 3 * r + 3; e++) {
            per[r][0][e] = (const uint8_t *)l.gate + e * m;
            per[r][1][e] = (const uint8_t *)l.up + e * m;
            per[r][2][e] = (const uint8_t *)l.down + e * m;
        }
        d[r].experts.gate = d[r].experts.up = d[r].experts.down = NULL;
        d[r].experts.gate_experts = per[r][0];
        d[r].experts.up_experts = per[r][1];
        d[r].experts.down_experts = per[r][2];
    }
    moevk_thread_group *g;
    cr_assert_eq(moevk_thread_group_create(2, 0, &g), MOEVK_SUCCESS);
    pthread_t th[2];
    for (uint32_t r = 0; r < 2; r++) {
        w.job[r] = (rank_job){.d = &d[r], .ctx = w.ctx[r], .g = g, .rank = r, .T = Ts[r],
                              .x = x + (r ? Ts[0] * 32 : 0), .y = y + (r ? Ts[0] * 32 : 0),
                              .passes = 1};
        cr_assert_eq(pthread_create(&th[r], NULL, rank_main, &w.job[r]), 0);
    }
    for (uint32_t r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    moevk_thread_group_destroy(g);
    for (uint32_t r = 0; r < 2; r++)
        cr_assert_eq(w.job[r].st_fwd | w.job[r].st_create, 0, "rank %u: %s", r, w.job[r].msg);
    cr_assert(!memcmp(y, yr, sizeof(float) * 11 * 32), "y differs from one device (seed %llu)",
              (unsigned long long)seed);
    free(x), free(y), free(yr);
    rlayer_free(&l);
    world_end(&w);
}
