/*
 * Context lifecycle, device choice, capabilities, importing a host device,
 * timeouts.
 */
#define _DEFAULT_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#include "common.h"
#include "host_app.h"
#include "ref/ref.h"

Test(context, lifecycle_and_capabilities)
{
    moevk_context *ctx = mvkt_context();
    const moevk_device_info *info = moevk_context_device_info(ctx);
    cr_assert_not_null(info);
    cr_assert_gt(strlen(info->name), 0);
    cr_assert_geq(info->api_version, VK_API_VERSION_1_1);
    cr_assert_gt(info->subgroup_size, 0);
    cr_assert_geq(info->max_shared_memory, 16384u, "Vulkan guarantees 16 KiB");
    cr_assert_geq(info->max_storage_buffer_range, 1u << 27);
    cr_assert_gt(info->max_allocation_size, 0);
    cr_assert_geq(info->max_workgroup_invocations, 128u);
    cr_assert_eq(info->imported, 0);
    cr_assert_str_eq(moevk_context_last_error(ctx), "");
    mvkt_context_end(ctx);
}

Test(context, enumerate_matches_create)
{
    moevk_context *ctx = mvkt_context();
    moevk_device_info infos[8];
    uint32_t n = 0;
    cr_assert_eq(moevk_enumerate_devices(NULL, infos, 8, &n), MOEVK_SUCCESS);
    cr_assert_geq(n, 1);
    bool found = false;
    for (uint32_t i = 0; i < n && i < 8; i++)
        found |= strcmp(infos[i].name, moevk_context_device_info(ctx)->name) == 0;
    cr_assert(found, "the default device is not among the enumerated ones");
    mvkt_context_end(ctx);
}

Test(context, device_by_index_name_and_env)
{
    moevk_context *ctx = mvkt_context();
    char name[256];
    strcpy(name, moevk_context_device_info(ctx)->name);
    mvkt_context_end(ctx);

    /* A substring of the name, in another case. */
    char sub[8] = {0};
    for (int i = 0; i < 4 && name[i]; i++)
        sub[i] = (char)((name[i] >= 'a' && name[i] <= 'z') ? name[i] - 32 : name[i]);
    moevk_context_desc d = {.device = sub};
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_SUCCESS, "device '%s'", sub);
    cr_assert_str_eq(moevk_context_device_info(ctx)->name, name);
    moevk_context_destroy(ctx);

    d.device = "0";
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_SUCCESS);
    moevk_context_destroy(ctx);

    char err[256];
    d = (moevk_context_desc){.device = "no-such-gpu-anywhere", .error_message = err,
                             .error_message_size = sizeof(err)};
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_ERROR_NO_DEVICE);
    cr_assert_null(ctx);
    cr_assert(strstr(err, "no-such-gpu-anywhere"), "message: %s", err);
    d.device = "4000";
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_ERROR_NO_DEVICE);
    cr_assert(strstr(err, "4000"), "message: %s", err);

    /* MOEVK_DEVICE is used when desc.device is NULL. */
    setenv("MOEVK_DEVICE", "no-such-gpu-from-env", 1);
    d.device = NULL;
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_ERROR_NO_DEVICE);
    cr_assert(strstr(err, "no-such-gpu-from-env"), "message: %s", err);
    unsetenv("MOEVK_DEVICE");
}

Test(context, two_contexts_are_independent)
{
    moevk_context *a = mvkt_context();
    moevk_context *b = mvkt_context();
    moevk_tensor t;
    uint64_t shape[1] = {0};
    cr_assert_eq(moevk_tensor_create(a, MOEVK_DTYPE_F32, 1, shape, &t),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_neq(strlen(moevk_context_last_error(a)), 0);
    cr_assert_str_eq(moevk_context_last_error(b), "", "errors must not leak across contexts");
    mvkt_context_end(a);
    mvkt_context_end(b);
}

/* A small router on ctx, checked against the reference. */
static void router_work(moevk_context *ctx, mvkt_rng *r)
{
    enum { T = 5, H = 33, E = 6 };
    float x[T * H], w[E * H], out[T * E], ref[T * E];
    for (int i = 0; i < T * H; i++) x[i] = mvkt_uniform(r, -1, 1);
    for (int i = 0; i < E * H; i++) w[i] = mvkt_uniform(r, -1, 1);
    moevk_tensor tx, tw, tl;
    uint64_t sx[2] = {T, H}, sw[2] = {E, H}, sl[2] = {T, E};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sx, &tx), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sw, &tw), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sl, &tl), 0);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    cr_assert_eq(moevk_tensor_upload(&tw, w), 0);
    cr_assert_eq(moevk_router_logits(ctx, &tx, &tw, NULL, &tl), 0, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_tensor_download(&tl, out), 0);
    moevk_ref_router_logits(x, T, H, w, MOEVK_DTYPE_F32, E, NULL, ref);
    cr_assert_leq(mvkt_rel_l2(out, ref, T * E), 1e-5);
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&tw);
    moevk_tensor_destroy(&tl);
}

/* The host application owns instance and device; moevk borrows them, runs
 * work, and leaves them alive. */
Test(context, import_host_device)
{
    moevk_context *probe = mvkt_context(); /* skips when there is no device */
    mvkt_context_end(probe);
    host_app h;
    host_create(&h);
    moevk_vulkan_import im = host_import(&h);
    moevk_context_desc d = {.import = &im};
    moevk_context *ctx = NULL;
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_SUCCESS);
    cr_assert_eq(moevk_context_device_info(ctx)->imported, 1);
    mvkt_rng r = mvkt_rng_make(mvkt_base_seed());
    router_work(ctx, &r);
    moevk_context_destroy(ctx);
    /* The host's device is still alive and usable. */
    host_destroy(&h);
    cr_assert_eq(atomic_load(&h.messages), 0u);
}

/* ---- a queue shared with a host thread --------------------------------------- */

typedef struct queue_share {
    host_app *h;
    pthread_mutex_t lock;
    atomic_int stop;
    atomic_uint host_submits, locks, unlocks;
    atomic_int holder_is_host; /* who holds the lock: 1 host, 0 moevk, -1 nobody */
    atomic_uint overlaps;      /* a second holder seen: the lock is broken */
} queue_share;

static void share_lock(void *user, uint32_t family, uint32_t index)
{
    queue_share *s = user;
    cr_assert_eq(family, s->h->fam);
    cr_assert_eq(index, 0u);
    pthread_mutex_lock(&s->lock);
    if (atomic_exchange(&s->holder_is_host, 0) != -1)
        atomic_fetch_add(&s->overlaps, 1u);
    atomic_fetch_add(&s->locks, 1u);
}

static void share_unlock(void *user, uint32_t family, uint32_t index)
{
    queue_share *s = user;
    (void)family, (void)index;
    atomic_store(&s->holder_is_host, -1);
    atomic_fetch_add(&s->unlocks, 1u);
    pthread_mutex_unlock(&s->lock);
}

/* The host's render thread: submits empty batches to the same queue, under
 * the same lock, as fast as it can (a fence every 64th, waited for). */
static void *host_thread(void *arg)
{
    queue_share *s = arg;
    host_app *h = s->h;
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence;
    if (h->CreateFence(h->dev, &fci, NULL, &fence) != VK_SUCCESS)
        return NULL;
    for (unsigned i = 1; !atomic_load(&s->stop); i++) {
        VkFence f = i % 64 == 0 ? fence : VK_NULL_HANDLE;
        pthread_mutex_lock(&s->lock);
        atomic_store(&s->holder_is_host, 1);
        VkResult r = h->QueueSubmit(h->queue, 0, NULL, f);
        atomic_store(&s->holder_is_host, -1);
        pthread_mutex_unlock(&s->lock);
        if (r != VK_SUCCESS)
            break;
        atomic_fetch_add(&s->host_submits, 1u);
        if (f) {
            h->WaitForFences(h->dev, 1, &fence, VK_TRUE, UINT64_MAX);
            h->ResetFences(h->dev, 1, &fence);
        }
    }
    h->DestroyFence(h->dev, fence, NULL);
    return NULL;
}

/* moevk's synchronous calls and a host thread submit to one queue; with the
 * import's queue lock, validation (which checks external synchronisation of
 * queues) stays silent and every moevk submission took the lock. */
Test(context, borrowed_queue_shared_with_a_host_thread, .timeout = 300)
{
    moevk_context *probe = mvkt_context();
    mvkt_context_end(probe);
    host_app h;
    host_create(&h);
    queue_share s = {.h = &h};
    pthread_mutex_init(&s.lock, NULL);
    atomic_init(&s.stop, 0);
    atomic_init(&s.host_submits, 0u);
    atomic_init(&s.locks, 0u);
    atomic_init(&s.unlocks, 0u);
    atomic_init(&s.holder_is_host, -1);
    atomic_init(&s.overlaps, 0u);

    moevk_vulkan_import im = host_import(&h);
    im.lock_queue = share_lock;
    im.unlock_queue = share_unlock;
    im.queue_lock_user = &s;
    moevk_context_desc d = {.import = &im};
    moevk_context *ctx = NULL;
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_SUCCESS);

    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, host_thread, &s), 0);
    mvkt_rng r = mvkt_rng_make(mvkt_base_seed());
    for (int i = 0; i < 30; i++)
        router_work(ctx, &r); /* 2 uploads, a dispatch, a download: 4 submissions */
    atomic_store(&s.stop, 1);
    pthread_join(thread, NULL);
    moevk_context_destroy(ctx);

    cr_assert_geq(atomic_load(&s.locks), 120u, "moevk submitted without taking the lock");
    cr_assert_eq(atomic_load(&s.locks), atomic_load(&s.unlocks));
    cr_assert_eq(atomic_load(&s.overlaps), 0u);
    cr_assert_gt(atomic_load(&s.host_submits), 0u, "the host thread never submitted");
    host_destroy(&h);
    unsigned msgs = atomic_load(&h.messages);
    cr_assert_eq(msgs, 0u, "%u validation messages on the host's instance", msgs);
    pthread_mutex_destroy(&s.lock);
}

Test(context, queue_lock_needs_both_callbacks)
{
    moevk_context *probe = mvkt_context();
    mvkt_context_end(probe);
    host_app h;
    host_create(&h);
    moevk_vulkan_import im = host_import(&h);
    im.lock_queue = share_lock;
    char err[256] = "";
    moevk_context_desc d = {.import = &im, .error_message = err,
                            .error_message_size = sizeof err};
    moevk_context *ctx = NULL;
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_null(ctx);
    cr_assert(strstr(err, "unlock_queue"), "message: %s", err);
    host_destroy(&h);
}

Test(context, timeout_is_reported_and_recovers)
{
    moevk_context *ctx = mvkt_context_flags(MOEVK_CONTEXT_VALIDATION, 1); /* 1 ms */
    enum { T = 512, H = 2048, E = 512 };
    moevk_tensor tx, tw, tl;
    uint64_t sx[2] = {T, H}, sw[2] = {E, H}, sl[2] = {T, E};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sx, &tx), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sw, &tw), 0);
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sl, &tl), 0);
    moevk_status st = moevk_router_logits(ctx, &tx, &tw, NULL, &tl);
    if (st == MOEVK_SUCCESS)
        cr_skip_test("the device finished 128M multiply-adds within 1 ms; nothing to time out");
    cr_assert_eq(st, MOEVK_ERROR_TIMEOUT, "%s", moevk_context_last_error(ctx));
    cr_assert(strstr(moevk_context_last_error(ctx), "1 ms"));
    /* Later calls wait for the earlier work (each wait bounded) and then run. */
    int tries = 0;
    do {
        usleep(20000);
        st = moevk_buffer_fill(tl.buffer, 0, 16, 0);
    } while (st == MOEVK_ERROR_TIMEOUT && ++tries < 500);
    cr_assert_eq(st, MOEVK_SUCCESS, "%s", moevk_context_last_error(ctx));
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&tw);
    moevk_tensor_destroy(&tl);
    mvkt_context_end(ctx);
}

#include "testing.h"

/* The validation messenger is wired: a deliberate misuse is counted, so a
 * clean count elsewhere means something. */
Test(context, validation_messages_are_counted)
{
    moevk_context *ctx = mvkt_context();
    cr_assert_eq(moevk_context_validation_messages(ctx), 0);
    moevk_testing_provoke_validation(ctx);
    cr_assert_gt(moevk_context_validation_messages(ctx), 0,
                 "an invalid vkCreateBuffer produced no validation message");
    moevk_context_destroy(ctx);
}
