/*
 * Workspaces and passes beyond the device's limits:
 *  - eight layers run in sequence through one workspace need one layer's
 *    scratch, and each is right against the reference;
 *  - several layers recorded back to back into one command buffer, and one
 *    layer recorded into two pending command buffers, on a host device with
 *    and without push descriptors, bitwise equal to moevk_layer_forward,
 *    validation clean;
 *  - a pass cut into expert chunks (a workspace's chunk_tokens) and into
 *    routing chunks (a lowered scratch range) is bitwise identical to the
 *    uncut pass, capacity and statistics included, every routing mode;
 *  - a pass beyond the real limits (T = 70000, H = 64, k = 8 on a 128 MiB
 *    buffer range) runs, right against the reference, and every token is
 *    bitwise what it is in a small batch of its own;
 *  - an expert matrix of exactly the buffer range is accepted;
 *  - a context used from a second thread answers MOEVK_ERROR_BUSY.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "host_app.h"
#include "random_layer.h"
#include "ref/ref.h"
#include "testing.h"

/* ---- one workspace for many layers ---------------------------------------------- */

Test(workspace, eight_layers_need_one_layers_scratch, .timeout = 300)
{
    enum { T = 45, H = 40, F = 24, E = 6, K = 2, N = 8 };
    const uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed);
    rlayer rl[N];
    for (int i = 0; i < N; i++)
        rlayer_make(&r, &rl[i], &(rlayer_spec){H, F, E, K, .cf = i % 2 ? 1.0f : 0.0f,
                                                .shared = i % 3 == 0});
    float *x = random_x(&r, T, H);

    /* one layer alone: its scratch */
    moevk_context *solo = mvkt_context();
    moevk_layer *L0;
    cr_assert_eq(moevk_layer_create(solo, &rl[0].d, &L0), MOEVK_SUCCESS);
    pass_out o0;
    forward(solo, L0, x, T, &o0);
    uint64_t one = 0;
    moevk_layer_memory(L0, NULL, &one);
    cr_assert_gt(one, 0);
    moevk_layer_destroy(L0);
    mvkt_context_end(solo);

    moevk_context *ctx = mvkt_context();
    moevk_layer *L[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(moevk_layer_create(ctx, &rl[i].d, &L[i]), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
    moevk_workspace *ws = moevk_layer_workspace(L[0]);
    float *ref = malloc(sizeof(float) * T * H);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(moevk_layer_workspace(L[i]), ws, "layer %d has a workspace of its own", i);
        pass_out o;
        forward(ctx, L[i], x, T, &o);
        cr_assert_eq(moevk_ref_layer_forward(&rl[i].d, T, x, ref, NULL, NULL, NULL, NULL), 0);
        double err = mvkt_rel_l2(o.y, ref, (size_t)T * H);
        cr_assert_leq(err, 1e-5, "seed %llu layer %d: rel. error %g", (unsigned long long)seed, i,
                      err);
        if (i == 0)
            assert_same(&o, &o0, T, &rl[0].d, "layer 0 beside 7 others vs alone", seed);
        pass_free(&o);
    }
    for (int i = 0; i < N; i++) {
        uint64_t s = 0;
        moevk_layer_memory(L[i], NULL, &s);
        cr_assert_eq(s, one, "layer %d reports %llu scratch bytes, one layer alone %llu", i,
                     (unsigned long long)s, (unsigned long long)one);
    }
    cr_assert_eq(moevk_workspace_bytes(ws), one, "8 layers: %llu bytes of scratch, 1 layer: %llu",
                 (unsigned long long)moevk_workspace_bytes(ws), (unsigned long long)one);
    /* the routing of layer 0 was overwritten by the later layers */
    uint32_t ids[T * K];
    cr_assert_eq(moevk_layer_read_routing(L[0], T, ids, NULL, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "another layer"), "%s",
              moevk_context_last_error(ctx));
    /* statistics stay with each layer */
    moevk_routing_stats st0 = {0};
    cr_assert_eq(moevk_layer_read_stats(L[0], &st0), MOEVK_SUCCESS);
    cr_assert_eq(memcmp(&st0.load_balancing_loss, &o0.stats.load_balancing_loss, 8), 0);
    for (int i = 0; i < N; i++) {
        moevk_layer_destroy(L[i]);
        rlayer_free(&rl[i]);
    }
    pass_free(&o0);
    free(x);
    free(ref);
    mvkt_context_end(ctx);
}

Test(workspace, explicit_workspace_and_its_lifetime)
{
    enum { T = 9, H = 16, F = 8, E = 4, K = 2 };
    mvkt_rng r = mvkt_rng_make(mvkt_base_seed() ^ 0x77);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){H, F, E, K});
    moevk_context *ctx = mvkt_context();
    float *x = random_x(&r, T, H);
    /* a first pass makes what the context keeps (staging, pipelines, its
     * default workspace) */
    moevk_layer *warm;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &warm), MOEVK_SUCCESS);
    pass_out w;
    forward(ctx, warm, x, T, &w);
    pass_free(&w);
    moevk_layer_destroy(warm);
    int64_t live0 = moevk_testing_live_objects(ctx);
    moevk_workspace *ws = NULL;
    cr_assert_eq(moevk_workspace_create(ctx, NULL, &ws), MOEVK_SUCCESS);
    cr_assert_eq(moevk_workspace_bytes(ws), 0);
    rl.d.workspace = ws;
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS);
    cr_assert_eq(moevk_layer_workspace(L), ws);
    cr_assert_eq(moevk_workspace_reserve(ws, L, T), MOEVK_SUCCESS);
    uint64_t b = moevk_workspace_bytes(ws);
    cr_assert_gt(b, 0);
    cr_assert_eq(moevk_workspace_reserve(ws, L, T - 1), MOEVK_SUCCESS);
    cr_assert_eq(moevk_workspace_bytes(ws), b, "a smaller reservation must not grow it");
    cr_assert_eq(moevk_workspace_reserve(ws, L, 0), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "max_tokens"));
    cr_assert_eq(moevk_workspace_reserve(ws, NULL, 4), MOEVK_ERROR_INVALID_ARGUMENT);
    /* the caller's reference goes; the layer keeps the workspace alive */
    moevk_workspace_destroy(ws);
    pass_out o;
    forward(ctx, L, x, T, &o);
    pass_free(&o);
    moevk_layer_destroy(L);
    cr_assert_eq(moevk_testing_live_objects(ctx), live0, "the workspace leaked");
    /* a workspace of another context is refused */
    moevk_context *other = mvkt_context();
    moevk_workspace *ows;
    cr_assert_eq(moevk_workspace_create(other, NULL, &ows), MOEVK_SUCCESS);
    rl.d.workspace = ows;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "workspace"));
    moevk_workspace_destroy(ows);
    mvkt_context_end(other);
    free(x);
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}

/* ---- chunked passes --------------------------------------------------------------- */

/* A pass of T tokens on a fresh context, the expert stages in chunks of
 * `chunk` tokens (0 = as the device allows) and the scratch range lowered
 * to `range` bytes (0 = the device's). */
static void chunked_forward(const rlayer *rl, const float *x, uint32_t T, uint32_t chunk,
                            uint64_t range, pass_out *o)
{
    moevk_context *ctx = mvkt_context();
    moevk_testing_set_scratch_range(ctx, range);
    moevk_workspace *ws;
    moevk_workspace_desc wd = {.chunk_tokens = chunk};
    cr_assert_eq(moevk_workspace_create(ctx, &wd, &ws), MOEVK_SUCCESS);
    moevk_layer_desc d = rl->d;
    d.workspace = ws;
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_workspace_destroy(ws);
    forward(ctx, L, x, T, o);
    moevk_layer_destroy(L);
    mvkt_context_end(ctx);
}

Test(workspace, chunked_passes_are_bitwise_the_uncut_pass, .timeout = 600)
{
    const uint64_t seed = mvkt_base_seed() ^ 0x1234;
    mvkt_rng r = mvkt_rng_make(seed);
    for (uint32_t routing = 0; routing < 3; routing++) {
        const uint32_t T = 2500 + 37 * routing, H = 24, F = 16, E = 8, K = 2;
        rlayer rl;
        /* capacity on the first two: admission over all tokens must hold */
        rlayer_make(&r, &rl, &(rlayer_spec){H, F, E, K, .routing = (moevk_routing)routing,
                                            .cf = routing < 2 ? 1.1f : 0.0f,
                                            .shared = routing == 1});
        float *x = random_x(&r, T, H);
        pass_out whole, chunked, tiny;
        chunked_forward(&rl, x, T, 0, 0, &whole);
        /* expert chunks of 300 tokens (9 chunks, the last one short) */
        chunked_forward(&rl, x, T, 300, 0, &chunked);
        assert_same(&whole, &chunked, T, &rl.d, "expert chunks of 300 tokens", seed);
        /* a 64 KiB scratch range: routing chunks of 2048 tokens (logits
         * [2048, 8]), expert chunks of 1024, long permute tiles */
        chunked_forward(&rl, x, T, 0, 64 << 10, &tiny);
        assert_same(&whole, &tiny, T, &rl.d, "a 64 KiB scratch range", seed);
        /* and right against the reference */
        float *ref = malloc(sizeof(float) * T * H);
        moevk_routing_stats rs = {0};
        cr_assert_eq(moevk_ref_layer_forward(&rl.d, T, x, ref, NULL, NULL, NULL, &rs), 0);
        double err = mvkt_rel_l2(whole.y, ref, (size_t)T * H);
        cr_assert_leq(err, 1e-5, "seed %llu routing %u: rel. error %g", (unsigned long long)seed,
                      routing, err);
        cr_assert_eq(whole.stats.dropped, rs.dropped, "seed %llu routing %u: dropped %llu vs %llu",
                     (unsigned long long)seed, routing, (unsigned long long)whole.stats.dropped,
                     (unsigned long long)rs.dropped);
        free(ref);
        pass_free(&whole);
        pass_free(&chunked);
        pass_free(&tiny);
        free(x);
        rlayer_free(&rl);
    }
}

/* Beyond the real limits: on a 128 MiB buffer range the expert outputs
 * [T * k, H] of T = 70000, H = 64, k = 8 are 143 MB. */
Test(workspace, a_pass_beyond_the_buffer_range_runs, .timeout = 600)
{
    /* With MOEVK_TEST_CASES_SCALE below 1 (the sanitizer pass) the same cut
     * at a tenth of the size: T = 7000 against a 12.8 MiB scratch range. */
    const int tenth = mvkt_scaled(10, 1) < 10;
    const uint32_t T = tenth ? 7000 : 70000, H = 64, F = 8, E = 16, K = 8;
    const uint64_t seed = mvkt_base_seed() ^ 0x7000;
    mvkt_rng r = mvkt_rng_make(seed);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){H, F, E, K});
    float *x = random_x(&r, T, H);
    moevk_context *ctx = mvkt_context();
    if (tenth)
        moevk_testing_set_scratch_range(ctx, (128ull << 20) / 10);
    const moevk_device_info *info = moevk_context_device_info(ctx);
    uint64_t range = tenth ? (128ull << 20) / 10 : info->max_storage_buffer_range;
    if (!tenth && info->max_allocation_size && info->max_allocation_size < range)
        range = info->max_allocation_size;
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS);
    pass_out big;
    forward(ctx, L, x, T, &big);
    moevk_pass_info pi;
    cr_assert_eq(moevk_layer_pass_info(L, &pi), MOEVK_SUCCESS);
    if ((uint64_t)T * K * H * 4 > range)
        cr_assert_gt(pi.expert_chunks, 1, "expert outputs of %llu bytes over a %llu-byte range "
                     "in one chunk", (unsigned long long)T * K * H * 4,
                     (unsigned long long)range);
    else
        cr_log_warn("the device's buffer range (%llu bytes) holds this pass unchunked",
                    (unsigned long long)range);
    float *ref = malloc(sizeof(float) * T * H);
    cr_assert_eq(moevk_ref_layer_forward(&rl.d, T, x, ref, NULL, NULL, NULL, NULL), 0);
    double err = mvkt_rel_l2(big.y, ref, (size_t)T * H);
    cr_assert_leq(err, 1e-5, "seed %llu: rel. error %g", (unsigned long long)seed, err);
    /* batch invariance across chunks: tokens alone in small batches */
    const uint32_t starts[] = {0, T / 2 + 7, T - 40};
    for (int i = 0; i < 3; i++) {
        const uint32_t n = 40, t0 = starts[i];
        pass_out small;
        forward(ctx, L, x + (size_t)t0 * H, n, &small);
        cr_assert(memcmp(small.y, big.y + (size_t)t0 * H, sizeof(float) * n * H) == 0,
                  "seed %llu: tokens %u.. differ alone and in the large pass",
                  (unsigned long long)seed, t0);
        cr_assert(memcmp(small.ids, big.ids + (size_t)t0 * K, 4 * n * K) == 0);
        pass_free(&small);
    }
    moevk_layer_destroy(L);
    mvkt_context_end(ctx);
    pass_free(&big);
    free(ref);
    free(x);
    rlayer_free(&rl);
}

Test(workspace, an_expert_matrix_of_exactly_the_range_is_accepted)
{
    enum { T = 13, H = 32, F = 16, E = 5, K = 2 };
    mvkt_rng r = mvkt_rng_make(mvkt_base_seed() ^ 0x4444);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){H, F, E, K});
    moevk_context *ctx = mvkt_context();
    moevk_testing_set_max_buffer_range(ctx, (uint64_t)H * F * 4); /* one expert per buffer */
    moevk_layer *L;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    float *x = random_x(&r, T, H), *ref = malloc(sizeof(float) * T * H);
    pass_out o;
    forward(ctx, L, x, T, &o);
    cr_assert_eq(moevk_ref_layer_forward(&rl.d, T, x, ref, NULL, NULL, NULL, NULL), 0);
    cr_assert_leq(mvkt_rel_l2(o.y, ref, (size_t)T * H), 1e-5);
    moevk_layer_destroy(L);
    /* one byte less: a clear refusal */
    moevk_testing_set_max_buffer_range(ctx, (uint64_t)H * F * 4 - 4);
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_ERROR_LIMIT_EXCEEDED);
    cr_assert(strstr(moevk_context_last_error(ctx), "storage buffer range"), "%s",
              moevk_context_last_error(ctx));
    pass_free(&o);
    free(x);
    free(ref);
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}

/* ---- recording ------------------------------------------------------------------ */

/* Three layers recorded back to back into one command buffer, through one
 * workspace, each reading its own x; then one layer recorded into two
 * command buffers that are pending together. Everything bitwise equal to
 * moevk_layer_forward. */
static void record_through_one_workspace(int push_descriptors)
{
    enum { T = 37, H = 32, F = 20, E = 7, K = 3, N = 3 };
    moevk_context *probe = mvkt_context();
    mvkt_context_end(probe);
    const uint64_t seed = mvkt_base_seed() ^ (0x5150 + (uint64_t)push_descriptors);
    mvkt_rng r = mvkt_rng_make(seed);
    host_app h;
    host_create_ext(&h, push_descriptors);
    moevk_vulkan_import im = host_import(&h);
    moevk_context_desc cd = {.import = &im};
    moevk_context *ctx = NULL;
    cr_assert_eq(moevk_context_create(&cd, &ctx), MOEVK_SUCCESS);
    cr_assert_eq(moevk_context_device_info(ctx)->push_descriptor, push_descriptors,
                 "push descriptors in use: %d", moevk_context_device_info(ctx)->push_descriptor);

    rlayer rl[N];
    moevk_layer *L[N];
    float *x[N];
    pass_out want[N];
    moevk_tensor tx[N], ty[N];
    for (int i = 0; i < N; i++) {
        rlayer_make(&r, &rl[i], &(rlayer_spec){H, F, E, K, .routing = (moevk_routing)i,
                                                .cf = i == 1 ? 0.8f : 0.0f, .shared = i == 2});
        cr_assert_eq(moevk_layer_create(ctx, &rl[i].d, &L[i]), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        x[i] = random_x(&r, T, H);
        forward(ctx, L[i], x[i], T, &want[i]);
        tx[i] = tensor2(ctx, T, H);
        ty[i] = tensor2(ctx, T, H);
        cr_assert_eq(moevk_tensor_upload(&tx[i], x[i]), 0);
        mvkt_poison_tensor(&ty[i]);
        cr_assert_eq(moevk_layer_reserve(L[i], T), MOEVK_SUCCESS);
    }
    recorder rc;
    recorder_make(&h, &rc);
    recorder_begin(&rc, 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(moevk_layer_record(L[i], rc.cb[0], &tx[i], &ty[i]), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
    recorder_submit(&rc, 0);
    recorder_wait(&rc, 1);
    float *y = malloc(sizeof(float) * T * H);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(moevk_tensor_download(&ty[i], y), 0);
        cr_assert(memcmp(y, want[i].y, sizeof(float) * T * H) == 0,
                      "seed %llu: layer %d recorded back to back differs from forward",
                      (unsigned long long)seed, i);
        moevk_routing_stats st = {0};
        cr_assert_eq(moevk_layer_read_stats(L[i], &st), MOEVK_SUCCESS);
        cr_assert_eq(st.dropped, want[i].stats.dropped);
        cr_assert_eq(memcmp(&st.router_z_loss, &want[i].stats.router_z_loss, 8), 0);
    }

    /* one layer, two pending command buffers (the second overwrites the
     * same outputs after the first, in queue order) */
    mvkt_poison_tensor(&ty[1]);
    for (int i = 0; i < 2; i++) {
        recorder_begin(&rc, i);
        cr_assert_eq(moevk_layer_record(L[1], rc.cb[i], &tx[1], &ty[1]), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
    }
    recorder_submit(&rc, 0);
    recorder_submit(&rc, 1);
    recorder_wait(&rc, 2);
    cr_assert_eq(moevk_tensor_download(&ty[1], y), 0);
    cr_assert(memcmp(y, want[1].y, sizeof(float) * T * H) == 0,
              "seed %llu: two pending recordings of one layer", (unsigned long long)seed);

    recorder_free(&rc);
    for (int i = 0; i < N; i++) {
        moevk_tensor_destroy(&tx[i]);
        moevk_tensor_destroy(&ty[i]);
        moevk_layer_destroy(L[i]);
        pass_free(&want[i]);
        free(x[i]);
        rlayer_free(&rl[i]);
    }
    free(y);
    moevk_context_destroy(ctx);
    host_destroy(&h);
    unsigned msgs = atomic_load(&h.messages);
    cr_assert_eq(msgs, 0u, "%u validation messages on the host's instance", msgs);
}

Test(workspace, recorded_passes_with_descriptor_sets, .timeout = 300)
{
    record_through_one_workspace(0);
}

Test(workspace, recorded_passes_with_push_descriptors, .timeout = 300)
{
    record_through_one_workspace(1);
}

/* ---- one thread at a time ---------------------------------------------------------- */

typedef struct intruder {
    moevk_context *ctx;
    moevk_buffer *buf;
    moevk_status create, fill;
} intruder;

static void *intrude(void *arg)
{
    intruder *in = arg;
    moevk_buffer *b = NULL;
    in->create = moevk_buffer_create(in->ctx, 64, &b);
    in->fill = moevk_buffer_fill(in->buf, 0, 16, 0);
    moevk_buffer_destroy(b);
    return NULL;
}

Test(workspace, a_second_thread_is_told_busy)
{
    moevk_context *ctx = mvkt_context();
    intruder in = {.ctx = ctx};
    cr_assert_eq(moevk_buffer_create(ctx, 64, &in.buf), MOEVK_SUCCESS);
    cr_assert_eq(moevk_buffer_fill(in.buf, 0, 6, 1), MOEVK_ERROR_INVALID_ARGUMENT); /* odd size */
    char before[512];
    strcpy(before, moevk_context_last_error(ctx));
    cr_assert(moevk_testing_hold_context(ctx, 1)); /* this thread is "inside a call" */
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, intrude, &in), 0);
    pthread_join(t, NULL);
    cr_assert_eq(in.create, MOEVK_ERROR_BUSY, "%s", moevk_status_string(in.create));
    cr_assert_eq(in.fill, MOEVK_ERROR_BUSY);
    cr_assert_str_eq(moevk_context_last_error(ctx), before, "BUSY must not write the message");
    /* the owning thread may call in (nested calls) */
    cr_assert_eq(moevk_buffer_fill(in.buf, 0, 16, 0), MOEVK_SUCCESS);
    moevk_testing_hold_context(ctx, 0);
    /* released: the other thread gets through */
    cr_assert_eq(pthread_create(&t, NULL, intrude, &in), 0);
    pthread_join(t, NULL);
    cr_assert_eq(in.create, MOEVK_SUCCESS);
    cr_assert_eq(in.fill, MOEVK_SUCCESS);
    cr_assert_str_eq(moevk_status_string(MOEVK_ERROR_BUSY), "MOEVK_ERROR_BUSY");
    moevk_buffer_destroy(in.buf);
    mvkt_context_end(ctx);
}
