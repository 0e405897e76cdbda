/*
 * Expert parallelism over MPI (run by tests/test_ep_mpi.sh under mpirun -np
 * R): every rank builds the same random layer from one seed, holds its own
 * tokens of one input and a share of the experts, and checks its rows of y
 * bitwise against a single-device batch-invariant layer over all tokens
 * (which it runs itself on its own context), with the pass's counts and
 * drops exactly (dropless, with drops, and expert choice over every rank's
 * tokens); then a bad x on the last rank must fail every rank.
 * Exit 0 when every rank passed; no Criterion (one process per rank).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moevk/moevk_mpi.h"
#include "util/rng.h"

#define H 64
#define F 32
#define E 8
#define K 2

static int rank_, size_;

#define FAIL(...)                                                                          \
    do {                                                                                   \
        fprintf(stderr, "ep_mpi rank %d of %d: ", rank_, size_);                           \
        fprintf(stderr, __VA_ARGS__);                                                      \
        fprintf(stderr, "\n");                                                             \
        return 1;                                                                          \
    } while (0)

typedef struct weights {
    void *router, *g, *u, *d, *sg, *su, *sd, *sgate;
} weights;

static int make_layer(mvk_rng *r, weights *w, moevk_layer_desc *d, float cf, int ec)
{
    const float s = 0.5f;
    w->router = mvk_rng_array(r, MOEVK_DTYPE_F32, (size_t)E * H, 1.0f);
    w->g = mvk_rng_array(r, MOEVK_DTYPE_F16, (size_t)E * F * H, s);
    w->u = mvk_rng_array(r, MOEVK_DTYPE_F16, (size_t)E * F * H, s);
    w->d = mvk_rng_array(r, MOEVK_DTYPE_F16, (size_t)E * H * F, s);
    w->sg = mvk_rng_array(r, MOEVK_DTYPE_F16, (size_t)F * H, s);
    w->su = mvk_rng_array(r, MOEVK_DTYPE_F16, (size_t)F * H, s);
    w->sd = mvk_rng_array(r, MOEVK_DTYPE_F16, (size_t)H * F, s);
    w->sgate = mvk_rng_array(r, MOEVK_DTYPE_F32, H, 1.0f);
    if (!w->router || !w->g || !w->u || !w->d || !w->sg || !w->su || !w->sd || !w->sgate)
        return 1;
    *d = (moevk_layer_desc){
        .hidden = H, .ffn = F, .num_experts = E, .top_k = K,
        .routing = MOEVK_ROUTING_SOFTMAX_TOPK, .activation = MOEVK_ACT_SWIGLU,
        .norm_topk_prob = 1, .capacity_factor = cf, .weight_dtype = MOEVK_DTYPE_F16,
        .router_weight = w->router, .experts = {.gate = w->g, .up = w->u, .down = w->d},
        .num_shared = 1, .shared = {.gate = w->sg, .up = w->su, .down = w->sd},
        .shared_gate = w->sgate, .flags = MOEVK_LAYER_BATCH_INVARIANT,
    };
    if (ec) { /* expert choice: no normalisation, not batch invariant */
        d->routing = MOEVK_ROUTING_EXPERT_CHOICE;
        d->norm_topk_prob = 0;
        d->flags = 0;
    }
    return 0;
}

static void free_layer(weights *w)
{
    free(w->router), free(w->g), free(w->u), free(w->d);
    free(w->sg), free(w->su), free(w->sd), free(w->sgate);
}

/* The single-device layer over all T tokens. */
static int reference(moevk_context *ctx, const moevk_layer_desc *d, uint32_t T, const float *x,
                     float *y, moevk_routing_stats *stats)
{
    moevk_layer *L;
    const uint64_t shape[2] = {T, H};
    moevk_tensor tx, ty;
    if (moevk_layer_create(ctx, d, &L))
        FAIL("reference layer: %s", moevk_context_last_error(ctx));
    if (moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &tx) ||
        moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &ty) || moevk_tensor_upload(&tx, x) ||
        moevk_layer_forward(L, &tx, &ty, stats) || moevk_tensor_download(&ty, y))
        FAIL("reference pass: %s", moevk_context_last_error(ctx));
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
    moevk_layer_destroy(L);
    return 0;
}

static int run_case(moevk_context *ctx, const moevk_transport *tr, float cf, int ec,
                    uint64_t seed)
{
    mvk_rng r = mvk_rng_seed(seed, 0);
    weights w = {0};
    moevk_layer_desc d;
    if (make_layer(&r, &w, &d, cf, ec))
        FAIL("out of memory");
    uint32_t T = 0, T0 = 0, Tm = 0;
    for (int q = 0; q < size_; q++) {
        const uint32_t t = 3 + 5 * (uint32_t)q; /* uneven: 3, 8, 13, 18 */
        if (q < rank_)
            T0 += t;
        if (q == rank_)
            Tm = t;
        T += t;
    }
    float *x = mvk_rng_array(&r, MOEVK_DTYPE_F32, (size_t)T * H, 1.0f);
    float *y = malloc(sizeof(float) * T * H), *ye = malloc(sizeof(float) * Tm * H);
    uint32_t tpe[E], tpe_ep[E];
    moevk_routing_stats rs = {.tokens_per_expert = tpe}, es = {.tokens_per_expert = tpe_ep};
    if (!x || !y || !ye)
        FAIL("out of memory");
    if (reference(ctx, &d, T, x, y, &rs))
        return 1;
    moevk_ep_layer *L;
    moevk_ep_desc ed = {.layer = &d, .transport = tr};
    if (moevk_ep_layer_create(ctx, &ed, &L))
        FAIL("moevk_ep_layer_create: %s", moevk_context_last_error(ctx));
    if (moevk_ep_layer_forward(L, Tm, x + (size_t)T0 * H, ye, &es))
        FAIL("moevk_ep_layer_forward: %s", moevk_context_last_error(ctx));
    for (size_t i = 0; i < (size_t)Tm * H; i++)
        if (memcmp(&ye[i], &y[(size_t)T0 * H + i], 4))
            FAIL("cf %g: y[%zu, %zu] = %.9g, the single-device layer's %.9g (seed %llu)",
                 (double)cf, T0 + i / H, i % H, (double)ye[i], (double)y[(size_t)T0 * H + i],
                 (unsigned long long)seed);
    if (es.dropped != rs.dropped)
        FAIL("dropped %llu, single device %llu", (unsigned long long)es.dropped,
             (unsigned long long)rs.dropped);
    for (uint32_t e = 0; e < E; e++)
        if (tpe[e] != tpe_ep[e])
            FAIL("tokens_per_expert[%u] = %u, single device %u", e, tpe_ep[e], tpe[e]);
    if (fabs(es.load_balancing_loss - rs.load_balancing_loss) >
        1e-5 * fabs(rs.load_balancing_loss))
        FAIL("load_balancing_loss %.9g, single device %.9g", es.load_balancing_loss,
             rs.load_balancing_loss);
    if (cf > 0 && !ec && rs.dropped == 0)
        FAIL("cf %g dropped nothing: the case tests no capacity", (double)cf);
    /* a bad x on the last rank: every rank fails, none hangs */
    const int bad = rank_ == size_ - 1;
    moevk_status st = moevk_ep_layer_forward(L, Tm, bad ? NULL : x + (size_t)T0 * H, ye, NULL);
    if (st != MOEVK_ERROR_INVALID_ARGUMENT)
        FAIL("with a bad x on rank %d: %s (%s)", size_ - 1, moevk_status_string(st),
             moevk_context_last_error(ctx));
    if (!bad && !strstr(moevk_context_last_error(ctx), "failed"))
        FAIL("the message does not name the failing rank: %s", moevk_context_last_error(ctx));
    moevk_ep_times tm;
    moevk_ep_layer_times(L, &tm);
    moevk_ep_layer_destroy(L);
    free(x), free(y), free(ye);
    free_layer(&w);
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    int fail = 0;
    moevk_transport tr;
    moevk_mpi_transport *mt = NULL;
    moevk_context *ctx = NULL;
    char err[512] = "";
    moevk_context_desc cd = {.flags = MOEVK_CONTEXT_VALIDATION, .error_message = err,
                             .error_message_size = sizeof err};
    moevk_status st = moevk_context_create(&cd, &ctx);
    const char *req = getenv("MOEVK_REQUIRE_DEVICE");
    int skip = (st == MOEVK_ERROR_NO_VULKAN || st == MOEVK_ERROR_NO_DEVICE) &&
               !(req && *req && strcmp(req, "0"));
    int skip_all = 0;
    MPI_Allreduce(&skip, &skip_all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (skip_all) {
        if (rank_ == 0)
            printf("ep_mpi: no Vulkan device: skipped (%s)\n", err);
        moevk_context_destroy(ctx);
        MPI_Finalize();
        return 77;
    }
    if (st) {
        fprintf(stderr, "ep_mpi rank %d: no context: %s\n", rank_, err);
        fail = 1;
    } else if (moevk_mpi_transport_create(MPI_COMM_WORLD, 20000, &mt, &tr)) {
        fprintf(stderr, "ep_mpi rank %d: no transport\n", rank_);
        fail = 1;
    }
    const char *s = getenv("MOEVK_TEST_SEED");
    const uint64_t seed = s ? strtoull(s, NULL, 0) : 0x5eed0 + (uint64_t)size_;
    /* every rank must reach the same cases: agree on the setup first */
    int any = 0;
    MPI_Allreduce(&fail, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (!any) {
        fail |= run_case(ctx, &tr, 0.0f, 0, seed);
        fail |= run_case(ctx, &tr, 0.75f, 0, seed + 1);
        fail |= run_case(ctx, &tr, 0.5f, 1, seed + 2); /* expert choice */
        if (moevk_context_validation_messages(ctx)) {
            fprintf(stderr, "ep_mpi rank %d: %u validation messages\n", rank_,
                    moevk_context_validation_messages(ctx));
            fail = 1;
        }
    }
    moevk_mpi_transport_destroy(mt);
    moevk_context_destroy(ctx);
    MPI_Allreduce(&fail, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank_ == 0)
        printf("ep_mpi: %d ranks: %s (seed %llu)\n", size_, any ? "FAILED" : "ok",
               (unsigned long long)seed);
    MPI_Finalize();
    return any ? 1 : 0;
}
