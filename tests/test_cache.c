/*
 * Experts under a device-memory budget (MOEVK_LAYER_VRAM_BUDGET; src/cache.c):
 *  - every budget from 0 % to 100 % of the routed experts' bytes, every
 *    kernel path, plain and block formats, weights split over several
 *    device and host chunks: bitwise the all-resident layer's results, and
 *    the device slots never beyond the budget;
 *  - the device memory is what moevk says it allocated (VK_EXT_memory_budget's
 *    heap usage, on drivers that have it);
 *  - the cache learns skewed routing (the hot experts end up resident,
 *    misses stop), without changing a bit of any pass;
 *  - a static cache moves only on pins and prefetches;
 *  - recorded passes carry their copies: back to back in one command
 *    buffer, clean under synchronization validation;
 *  - the caller's page-aligned expert arrays are imported as the host copy
 *    where the device has VK_EXT_external_memory_host, copied elsewhere;
 *  - a failure at every allocation and Vulkan call: an error, nothing leaked,
 *    and the next pass right;
 *  - bad budgets, pins and prefetches are refused by name.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_app.h"
#include "random_layer.h"
#include "testing.h"

/* Bytes of one routed expert's matrices as moevk stores them. */
static uint64_t expert_bytes(const moevk_layer_desc *d)
{
    const moevk_dtype gu = (d->flags & MOEVK_LAYER_MATRIX_DTYPES) ? d->experts.gate_up_dtype
                                                                   : d->weight_dtype;
    const moevk_dtype dn = (d->flags & MOEVK_LAYER_MATRIX_DTYPES) ? d->experts.down_dtype
                                                                   : d->weight_dtype;
    const uint64_t mats = moevk_activation_is_gated(d->activation) ? 2 : 1;
    return mats * d->ffn * moevk_dtype_row_bytes(gu, d->hidden) +
           (uint64_t)d->hidden * moevk_dtype_row_bytes(dn, d->ffn);
}

static moevk_layer *budgeted(moevk_context *ctx, const moevk_layer_desc *base, uint64_t budget,
                             uint32_t extra_flags)
{
    moevk_layer_desc d = *base;
    d.flags |= MOEVK_LAYER_VRAM_BUDGET | extra_flags;
    d.vram_budget = budget;
    moevk_layer *L = NULL;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_SUCCESS, "budget %llu: %s",
                 (unsigned long long)budget, moevk_context_last_error(ctx));
    return L;
}

Test(cache, every_budget_gives_the_bits_of_all_experts_resident, .timeout = 900)
{
    static const struct {
        moevk_dtype gu, dn;
        moevk_activation act;
        uint32_t H, F;
    } kinds[] = {
        {MOEVK_DTYPE_F32, MOEVK_DTYPE_F32, MOEVK_ACT_SWIGLU, 40, 24},
        {MOEVK_DTYPE_F16, MOEVK_DTYPE_F16, MOEVK_ACT_GELU, 48, 30},
        {MOEVK_DTYPE_BF16, MOEVK_DTYPE_BF16, MOEVK_ACT_SWIGLU_OAI, 32, 20},
        {MOEVK_DTYPE_Q4_K, MOEVK_DTYPE_Q6_K, MOEVK_ACT_SWIGLU, 256, 256},
        {MOEVK_DTYPE_Q8_0, MOEVK_DTYPE_Q8_0, MOEVK_ACT_RELU, 64, 32},
    };
    static const uint32_t Ts[] = {1, 9, 70};
    const uint64_t base = mvkt_base_seed() ^ 0xcace;
    moevk_context *ctx = mvkt_context();
    for (uint32_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        const uint64_t seed = base + i;
        mvkt_rng r = mvkt_rng_make(seed);
        const uint32_t E = 8, K = 2;
        rlayer rl;
        rlayer_make(&r, &rl, &(rlayer_spec){kinds[i].H, kinds[i].F, E, K,
                                            .activation = kinds[i].act, .dtype = kinds[i].gu,
                                            .per_matrix = 1, .down_dtype = kinds[i].dn,
                                            .biases = i == 2, .shared = i == 1});
        const uint64_t eb = expert_bytes(&rl.d);
        /* a small buffer range in half the kinds: the slots and the host
         * copy each span several chunks */
        moevk_testing_set_max_buffer_range(ctx, i % 2 ? eb : 0);
        moevk_layer *ref = NULL;
        cr_assert_eq(moevk_layer_create(ctx, &rl.d, &ref), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
        float *x[3];
        pass_out want[3][4];
        for (uint32_t t = 0; t < 3; t++) {
            x[t] = random_x(&r, Ts[t], rl.d.hidden);
            for (int path = -1; path < 3; path++) {
                cr_assert_eq(moevk_testing_force_path(ctx, path), MOEVK_SUCCESS);
                forward(ctx, ref, x[t], Ts[t], &want[t][path + 1]);
            }
        }
        /* 0 %, 12.5 %, ..., 100 %, and one byte short of a whole expert */
        for (uint32_t eighth = 0; eighth <= 9; eighth++) {
            const uint64_t budget = eighth <= 8 ? eb * E * eighth / 8 : 5 * eb - 1;
            moevk_layer *L = budgeted(ctx, &rl.d, budget, 0);
            moevk_cache_stats cs;
            cr_assert_eq(moevk_layer_cache_stats(L, &cs), MOEVK_SUCCESS);
            const uint32_t slots = (uint32_t)(budget / eb) < E ? (uint32_t)(budget / eb) : E;
            cr_assert_eq(cs.device_slots, slots, "seed %llu, budget %llu (expert %llu bytes): %u "
                         "slots, want %u", (unsigned long long)seed, (unsigned long long)budget,
                         (unsigned long long)eb, cs.device_slots, slots);
            cr_assert(cs.expert_device_bytes <= budget, "seed %llu: %llu device bytes for "
                      "experts over the budget of %llu", (unsigned long long)seed,
                      (unsigned long long)cs.expert_device_bytes, (unsigned long long)budget);
            cr_assert(cs.expert_device_bytes >= slots * eb);
            if (slots < E)
                cr_assert(cs.host_weight_bytes >= E * eb, "host copy of %llu bytes",
                          (unsigned long long)cs.host_weight_bytes);
            else
                cr_assert_eq(cs.host_weight_bytes, 0);
            for (uint32_t t = 0; t < 3; t++)
                for (int path = -1; path < 3; path++) {
                    cr_assert_eq(moevk_testing_force_path(ctx, path), MOEVK_SUCCESS);
                    pass_out got;
                    forward(ctx, L, x[t], Ts[t], &got);
                    char what[160];
                    snprintf(what, sizeof what, "%s/%s experts, budget %u/8 (%u of %u slots), "
                             "T = %u, path %d", moevk_dtype_name(kinds[i].gu),
                             moevk_dtype_name(kinds[i].dn), eighth, slots, E, Ts[t], path);
                    assert_same(&got, &want[t][path + 1], Ts[t], &rl.d, what, seed);
                    pass_free(&got);
                }
            moevk_layer_destroy(L);
        }
        cr_assert_eq(moevk_testing_force_path(ctx, -1), MOEVK_SUCCESS);
        for (uint32_t t = 0; t < 3; t++) {
            for (int p = 0; p < 4; p++)
                pass_free(&want[t][p]);
            free(x[t]);
        }
        moevk_layer_destroy(ref);
        rlayer_free(&rl);
    }
    moevk_testing_set_max_buffer_range(ctx, 0);
    mvkt_context_end(ctx);
}

/* The device's allocations, seen through the host's entry points: every
 * vkAllocateMemory / vkFreeMemory moevk makes on a borrowed device. */
static struct {
    PFN_vkGetInstanceProcAddr gipa;
    PFN_vkGetDeviceProcAddr gdpa;
    PFN_vkAllocateMemory alloc;
    PFN_vkFreeMemory free;
    VkDeviceMemory mem[4096];
    VkDeviceSize size[4096];
    uint32_t n;
    int64_t live; /* bytes allocated and not freed */
} spy;

static VKAPI_ATTR VkResult VKAPI_CALL spy_alloc(VkDevice dev, const VkMemoryAllocateInfo *ai,
                                                const VkAllocationCallbacks *cb, VkDeviceMemory *m)
{
    VkResult r = spy.alloc(dev, ai, cb, m);
    if (r == VK_SUCCESS && spy.n < 4096) {
        spy.mem[spy.n] = *m;
        spy.size[spy.n++] = ai->allocationSize;
        spy.live += (int64_t)ai->allocationSize;
    }
    return r;
}

static VKAPI_ATTR void VKAPI_CALL spy_free(VkDevice dev, VkDeviceMemory m,
                                           const VkAllocationCallbacks *cb)
{
    for (uint32_t i = 0; m && i < spy.n; i++)
        if (spy.mem[i] == m) {
            spy.live -= (int64_t)spy.size[i];
            spy.mem[i] = spy.mem[--spy.n];
            spy.size[i] = spy.size[spy.n];
            break;
        }
    spy.free(dev, m, cb);
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL spy_gdpa(VkDevice dev, const char *name)
{
    if (!strcmp(name, "vkAllocateMemory")) {
        spy.alloc = (PFN_vkAllocateMemory)spy.gdpa(dev, name);
        return (PFN_vkVoidFunction)spy_alloc;
    }
    if (!strcmp(name, "vkFreeMemory")) {
        spy.free = (PFN_vkFreeMemory)spy.gdpa(dev, name);
        return (PFN_vkVoidFunction)spy_free;
    }
    return spy.gdpa(dev, name);
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL spy_gipa(VkInstance inst, const char *name)
{
    if (!strcmp(name, "vkGetDeviceProcAddr")) {
        spy.gdpa = (PFN_vkGetDeviceProcAddr)spy.gipa(inst, name);
        return (PFN_vkVoidFunction)spy_gdpa;
    }
    return spy.gipa(inst, name);
}

/* What a layer's create allocates is what it reports: device weights (the
 * slots within the budget) plus the host copy, plus its small results
 * buffer; destroy frees all of it. On drivers with VK_EXT_memory_budget the
 * heap usage is read too, and where it counts this process's allocations
 * (not lavapipe's, which reports the system's used RAM) it must agree. */
Test(cache, device_memory_is_what_moevk_reports, .timeout = 300)
{
    const uint64_t seed = mvkt_base_seed() ^ 0x4ea9;
    mvkt_rng r = mvkt_rng_make(seed);
    host_app h;
    host_create(&h);
    moevk_vulkan_import im = host_import(&h);
    spy.gipa = h.gipa;
    im.get_instance_proc_addr = *(void **)&(PFN_vkGetInstanceProcAddr){spy_gipa};
    moevk_context_desc cd = {.import = &im};
    moevk_context *ctx = NULL;
    cr_assert_eq(moevk_context_create(&cd, &ctx), MOEVK_SUCCESS);
    const moevk_device_info *info = moevk_context_device_info(ctx);
    const int lavapipe = strstr(info->driver_name, "llvmpipe") != NULL ||
                         info->device_type == 4 /* VK_PHYSICAL_DEVICE_TYPE_CPU */;
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){256, 512, 16, 2, .dtype = MOEVK_DTYPE_F16});
    const uint64_t eb = expert_bytes(&rl.d);
    const uint64_t slack = 64 * 1024; /* the results buffer */
    /* the context's staging buffer comes with its first upload */
    moevk_layer_destroy(budgeted(ctx, &rl.d, eb, 0));
    for (uint32_t slots = 0; slots <= 16; slots += 5) {
        const int64_t before = spy.live;
        moevk_layer *L = budgeted(ctx, &rl.d, slots * eb, 0);
        const int64_t grew = spy.live - before;
        moevk_cache_stats cs;
        cr_assert_eq(moevk_layer_cache_stats(L, &cs), MOEVK_SUCCESS);
        cr_assert(cs.expert_device_bytes <= slots * eb);
        cr_assert_eq(cs.device_slots, slots);
        uint64_t total = 0;
        moevk_layer_memory(L, &total, NULL);
        cr_assert_eq(total, cs.device_weight_bytes);
        const uint64_t said = cs.device_weight_bytes + cs.host_weight_bytes;
        cr_assert(grew >= (int64_t)said && grew <= (int64_t)(said + slack),
                  "slots %u: the layer allocated %lld bytes; it reports %llu on the device "
                  "and %llu in host memory", slots, (long long)grew,
                  (unsigned long long)cs.device_weight_bytes,
                  (unsigned long long)cs.host_weight_bytes);
        if (slots < 16)
            cr_assert(cs.host_weight_bytes >= 16 * eb);
        uint32_t dh, hh;
        moevk_testing_expert_heaps(L, &dh, &hh);
        uint64_t usage = 0;
        if (info->memory_budget) {
            cr_assert_eq(moevk_testing_heap_usage(ctx, slots ? dh : hh, &usage), MOEVK_SUCCESS);
            cr_log_info("slots %u: heap usage %llu bytes%s", slots, (unsigned long long)usage,
                        lavapipe ? " (lavapipe: the system's used RAM)" : "");
        } else {
            cr_assert_eq(moevk_testing_heap_usage(ctx, 0, &usage), MOEVK_ERROR_UNSUPPORTED);
        }
        const int64_t held = spy.live;
        moevk_layer_destroy(L);
        cr_assert(held - spy.live >= grew, "destroy freed %lld of %lld bytes",
                  (long long)(held - spy.live), (long long)grew);
        if (info->memory_budget && !lavapipe) {
            uint64_t after = 0;
            cr_assert_eq(moevk_testing_heap_usage(ctx, slots ? dh : hh, &after), MOEVK_SUCCESS);
            cr_assert(usage >= after, "heap usage rose after destroy");
        }
    }
    rlayer_free(&rl);
    moevk_context_destroy(ctx);
    host_destroy(&h);
    cr_assert_eq(atomic_load(&h.messages), 0u);
}

/* Skewed routing: four experts with a large router bias. */
Test(cache, the_cache_learns_the_hot_experts, .timeout = 300)
{
    enum { E = 16, K = 2, T = 8, PASSES = 12 };
    static const uint32_t hot[4] = {3, 7, 11, 13};
    moevk_context *ctx = mvkt_context();
    const uint64_t seed = mvkt_base_seed() ^ 0x407;
    mvkt_rng r = mvkt_rng_make(seed);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){32, 24, E, K});
    /* routing by construction: token t's logits are 10 for hot experts
     * t % 4 and (t + 1) % 4, 0 for every other, so each pass gives every
     * hot expert T * K / 4 rows and no other expert any */
    float *wr = rl.router;
    memset(wr, 0, sizeof(float) * E * 32);
    for (int j = 0; j < 4; j++)
        wr[hot[j] * 32 + j] = 10.0f;
    float xs[T * 32] = {0};
    for (int t = 0; t < T; t++) {
        xs[t * 32 + t % 4] = 1.0f;
        xs[t * 32 + (t + 1) % 4] = 1.0f;
        for (int c = 4; c < 32; c++)
            xs[t * 32 + c] = mvkt_uniform(&r, -1, 1);
    }
    const uint64_t eb = expert_bytes(&rl.d);
    moevk_layer *ref = NULL;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &ref), MOEVK_SUCCESS);
    moevk_layer *L = budgeted(ctx, &rl.d, 4 * eb, 0);
    uint8_t res[E];
    cr_assert_eq(moevk_layer_cache_resident(L, res), MOEVK_SUCCESS);
    for (uint32_t e = 0; e < E; e++)
        cr_assert_eq(res[e], e < 4, "expert %u resident %u at create", e, res[e]);
    moevk_cache_stats last = {0};
    for (int p = 0; p < PASSES; p++) {
        const float *x = xs;
        pass_out want, got;
        forward(ctx, ref, x, T, &want);
        forward(ctx, L, x, T, &got);
        char what[64];
        snprintf(what, sizeof what, "pass %d under a 4-expert budget", p);
        assert_same(&got, &want, T, &rl.d, what, seed);
        cr_assert_eq(moevk_layer_cache_stats(L, &last), MOEVK_SUCCESS);
        cr_assert_eq(last.passes, (uint64_t)p + 1);
        cr_assert_eq(last.hits + last.misses, (uint64_t)(p + 1) * T * K);
        pass_free(&want);
        pass_free(&got);
    }
    cr_assert_eq(moevk_layer_cache_resident(L, res), MOEVK_SUCCESS);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(res[hot[i]], 1, "seed %llu: hot expert %u is not resident after %d passes",
                     (unsigned long long)seed, hot[i], PASSES);
    /* 3 was resident from the start; 7, 11 and 13 are promoted one a pass
     * (the cap with S = 4) from pass 2 on, into the slots of 2, 1 and 0 (no
     * rows: the higher index goes first), each serving from its slot the
     * pass after its promotion (its copy runs after the promoting pass's
     * experts); then nothing moves */
    cr_assert_eq(last.promotions, 3, "%llu promotions", (unsigned long long)last.promotions);
    cr_assert_eq(last.evictions, 3);
    cr_assert_eq(last.bytes_moved, 3 * eb);
    cr_assert_eq(last.resident_experts, 4);
    /* misses: the 12 rows of 7, 11, 13 in passes 1 and 2, 8 in pass 3 (11,
     * 13), 4 in pass 4 (13), none after */
    cr_assert_eq(last.misses, 36, "%llu misses", (unsigned long long)last.misses);
    cr_assert_eq(last.hits, (uint64_t)PASSES * T * K - 36);
    moevk_layer_destroy(L);
    moevk_layer_destroy(ref);
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}

Test(cache, a_static_cache_moves_only_when_told, .timeout = 300)
{
    enum { E = 8, K = 2, T = 6 };
    moevk_context *ctx = mvkt_context();
    const uint64_t seed = mvkt_base_seed() ^ 0x57a7;
    mvkt_rng r = mvkt_rng_make(seed);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){24, 16, E, K, .dtype = MOEVK_DTYPE_BF16});
    /* every token routes to 5 and 6: router weights and x are in [-1, 1],
     * so no other logit exceeds H = 24, and theirs are at least 60 - 24 */
    float bias[E] = {0, 0, 0, 0, 0, 60, 60, 0};
    rl.d.router_bias = bias;
    const uint64_t eb = expert_bytes(&rl.d);
    moevk_layer *ref = NULL;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &ref), MOEVK_SUCCESS);
    moevk_layer *L = budgeted(ctx, &rl.d, 2 * eb, MOEVK_LAYER_CACHE_STATIC);
    float *x = random_x(&r, T, 24);
    pass_out want;
    forward(ctx, ref, x, T, &want);
    static const uint8_t expect[4][E] = {
        {1, 1, 0, 0, 0, 0, 0, 0}, /* as created: routing moves nothing */
        {0, 0, 0, 1, 1, 0, 0, 0}, /* prefetch 3, 4 */
        {0, 0, 0, 1, 0, 0, 1, 0}, /* pin 6: 3 and 4 have no rows, the higher index goes */
        {0, 0, 1, 0, 0, 0, 1, 0}, /* prefetch 2, 5: 6 pinned, 5 finds no slot */
    };
    for (int step = 0; step < 4; step++) {
        if (step == 1)
            cr_assert_eq(moevk_layer_cache_prefetch(L, (const uint32_t[]){3, 4}, 2), 0);
        if (step == 2)
            cr_assert_eq(moevk_layer_cache_pin(L, 6, 1), MOEVK_SUCCESS);
        if (step == 3)
            cr_assert_eq(moevk_layer_cache_prefetch(L, (const uint32_t[]){2, 5}, 2), 0);
        for (int p = 0; p < 2; p++) {
            pass_out got;
            forward(ctx, L, x, T, &got);
            assert_same(&got, &want, T, &rl.d, "a static cache", seed);
            pass_free(&got);
        }
        uint8_t res[E];
        cr_assert_eq(moevk_layer_cache_resident(L, res), MOEVK_SUCCESS);
        cr_assert(memcmp(res, expect[step], E) == 0,
                  "step %d: resident %u%u%u%u%u%u%u%u", step, res[0], res[1], res[2], res[3],
                  res[4], res[5], res[6], res[7]);
    }
    /* pins beyond the slots, experts beyond E */
    cr_assert_eq(moevk_layer_cache_pin(L, 2, 1), MOEVK_SUCCESS);
    cr_assert_eq(moevk_layer_cache_pin(L, 1, 1), MOEVK_ERROR_LIMIT_EXCEEDED);
    cr_assert(strstr(moevk_context_last_error(ctx), "all 2 device slots are pinned"), "%s",
              moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_cache_pin(L, E, 1), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "expert = 8"), "%s",
              moevk_context_last_error(ctx));
    cr_assert_eq(moevk_layer_cache_prefetch(L, (const uint32_t[]){1, 9}, 2),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "experts[1] = 9"), "%s",
              moevk_context_last_error(ctx));
    moevk_cache_stats cs;
    cr_assert_eq(moevk_layer_cache_stats(L, &cs), MOEVK_SUCCESS);
    cr_assert_eq(cs.promotions, 4);
    pass_free(&want);
    free(x);
    moevk_layer_destroy(L);
    moevk_layer_destroy(ref);
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}

/* Passes recorded back to back into one of the host's command buffers,
 * each preceded by prefetches, so that every pass copies experts into slots
 * the previous one read. Bitwise forward's results; no validation message
 * (synchronization validation on). */
Test(cache, recorded_passes_carry_their_copies, .timeout = 300)
{
    enum { T = 11, H = 32, F = 20, E = 10, K = 3, N = 4 };
    const uint64_t seed = mvkt_base_seed() ^ 0xc0b1;
    mvkt_rng r = mvkt_rng_make(seed);
    host_app h;
    host_create(&h);
    moevk_vulkan_import im = host_import(&h);
    moevk_context_desc cd = {.import = &im};
    moevk_context *ctx = NULL;
    cr_assert_eq(moevk_context_create(&cd, &ctx), MOEVK_SUCCESS);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){H, F, E, K, .dtype = MOEVK_DTYPE_F16});
    moevk_layer *ref = NULL;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &ref), MOEVK_SUCCESS);
    moevk_layer *L = budgeted(ctx, &rl.d, 3 * expert_bytes(&rl.d), MOEVK_LAYER_CACHE_STATIC);
    cr_assert_eq(moevk_layer_reserve(L, T), MOEVK_SUCCESS);
    float *x[N];
    pass_out want[N];
    moevk_tensor tx[N], ty[N];
    for (int i = 0; i < N; i++) {
        x[i] = random_x(&r, T, H);
        forward(ctx, ref, x[i], T, &want[i]);
        tx[i] = tensor2(ctx, T, H);
        ty[i] = tensor2(ctx, T, H);
        cr_assert_eq(moevk_tensor_upload(&tx[i], x[i]), 0);
        mvkt_poison_tensor(&ty[i]);
    }
    recorder rc;
    recorder_make(&h, &rc);
    recorder_begin(&rc, 0);
    for (int i = 0; i < N; i++) {
        const uint32_t pre[3] = {(uint32_t)(3 * i + 3) % E, (uint32_t)(3 * i + 4) % E,
                                 (uint32_t)(3 * i + 5) % E};
        cr_assert_eq(moevk_layer_cache_prefetch(L, pre, 3), MOEVK_SUCCESS);
        cr_assert_eq(moevk_layer_record(L, rc.cb[0], &tx[i], &ty[i]), MOEVK_SUCCESS, "%s",
                     moevk_context_last_error(ctx));
    }
    recorder_submit(&rc, 0);
    recorder_wait(&rc, 1);
    float *y = malloc(sizeof(float) * T * H);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(moevk_tensor_download(&ty[i], y), 0);
        cr_assert(memcmp(y, want[i].y, sizeof(float) * T * H) == 0,
                  "seed %llu: recorded pass %d under a budget differs from forward",
                  (unsigned long long)seed, i);
    }
    moevk_cache_stats cs;
    cr_assert_eq(moevk_layer_cache_stats(L, &cs), MOEVK_SUCCESS);
    cr_assert_eq(cs.promotions, 3u * N, "%llu promotions", (unsigned long long)cs.promotions);
    /* the cache learns from a recorded pass whose statistics are read */
    moevk_routing_stats st = {0};
    cr_assert_eq(moevk_layer_read_stats(L, &st), MOEVK_SUCCESS);
    cr_assert_eq(moevk_layer_cache_stats(L, &cs), MOEVK_SUCCESS);
    cr_assert_eq(cs.passes, 1);
    cr_assert_eq(cs.hits + cs.misses, (uint64_t)T * K);
    recorder_free(&rc);
    for (int i = 0; i < N; i++) {
        moevk_tensor_destroy(&tx[i]);
        moevk_tensor_destroy(&ty[i]);
        pass_free(&want[i]);
        free(x[i]);
    }
    free(y);
    moevk_layer_destroy(L);
    moevk_layer_destroy(ref);
    rlayer_free(&rl);
    moevk_context_destroy(ctx);
    host_destroy(&h);
    unsigned msgs = atomic_load(&h.messages);
    cr_assert_eq(msgs, 0u, "%u validation messages on the host's instance", msgs);
}

/* MOEVK_LAYER_IMPORT_HOST_EXPERTS: page-aligned expert arrays are imported
 * as the host copy on a device with VK_EXT_external_memory_host (Mesa 25's
 * lavapipe), copied elsewhere (Mesa 22's) and wherever an array's offset
 * into its page breaks the storage-buffer offset alignment; the same bits
 * every time; and copied on a borrowed device whose host did not enable the
 * extension. */
Test(cache, host_arrays_are_imported_where_the_device_can, .timeout = 300)
{
    enum { H = 256, F = 128, E = 8, K = 2, T = 9 };
    moevk_context *ctx = mvkt_context();
    const moevk_device_info *info = moevk_context_device_info(ctx);
    const uint64_t seed = mvkt_base_seed() ^ 0x1e0;
    mvkt_rng r = mvkt_rng_make(seed);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){H, F, E, K, .dtype = MOEVK_DTYPE_Q8_0});
    const uint64_t mat = (uint64_t)F * moevk_dtype_row_bytes(MOEVK_DTYPE_Q8_0, H) * E;
    moevk_layer *ref = NULL;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &ref), MOEVK_SUCCESS);
    float *x = random_x(&r, T, H);
    pass_out want;
    forward(ctx, ref, x, T, &want);
    const size_t page = 65536; /* a multiple of any host pointer alignment */
    for (int shift = 0; shift < 2; shift++) {
        /* shift 1: 4 bytes past a page boundary, below every storage
         * buffer offset alignment above 4, so never imported there */
        uint8_t *mem[3];
        moevk_layer_desc d = rl.d;
        const void *src[3] = {rl.gate, rl.up, rl.down};
        for (int m = 0; m < 3; m++) {
            mem[m] = aligned_alloc(page, ((mat + 4 + page - 1) / page) * page);
            cr_assert_not_null(mem[m]);
            memcpy(mem[m] + 4 * shift, src[m], mat);
        }
        d.experts.gate = mem[0] + 4 * shift;
        d.experts.up = mem[1] + 4 * shift;
        d.experts.down = mem[2] + 4 * shift;
        moevk_layer *L = budgeted(ctx, &d, 3 * expert_bytes(&d), MOEVK_LAYER_IMPORT_HOST_EXPERTS);
        moevk_cache_stats cs;
        cr_assert_eq(moevk_layer_cache_stats(L, &cs), MOEVK_SUCCESS);
        if (info->external_memory_host && shift == 0)
            cr_assert(cs.host_imported_bytes >= 3 * mat && cs.host_imported_bytes ==
                          cs.host_weight_bytes,
                      "%s: imported %llu of %llu host bytes", info->driver_info,
                      (unsigned long long)cs.host_imported_bytes,
                      (unsigned long long)cs.host_weight_bytes);
        else
            cr_assert_eq(cs.host_imported_bytes, 0, "shift %d, extension %d: %llu imported",
                         shift, info->external_memory_host,
                         (unsigned long long)cs.host_imported_bytes);
        cr_assert(cs.host_weight_bytes >= 3 * mat);
        for (int p = 0; p < 4; p++) {
            if (p == 2)
                cr_assert_eq(moevk_layer_cache_prefetch(L, (const uint32_t[]){5, 6, 7}, 3), 0);
            pass_out got;
            forward(ctx, L, x, T, &got);
            assert_same(&got, &want, T, &rl.d, shift ? "copied host experts"
                                                     : "imported host experts", seed);
            pass_free(&got);
        }
        moevk_layer_destroy(L);
        for (int m = 0; m < 3; m++)
            free(mem[m]);
    }
    /* a borrowed device whose host did not enable the extension: copied */
    host_app h;
    host_create(&h);
    moevk_vulkan_import im = host_import(&h);
    moevk_context_desc cd = {.import = &im};
    moevk_context *bare = NULL;
    cr_assert_eq(moevk_context_create(&cd, &bare), MOEVK_SUCCESS);
    cr_assert_eq(moevk_context_device_info(bare)->external_memory_host, 0);
    uint8_t *mem[3];
    moevk_layer_desc d = rl.d;
    const void *src[3] = {rl.gate, rl.up, rl.down};
    for (int m = 0; m < 3; m++) {
        mem[m] = aligned_alloc(page, ((mat + page - 1) / page) * page);
        cr_assert_not_null(mem[m]);
        memcpy(mem[m], src[m], mat);
    }
    d.experts.gate = mem[0];
    d.experts.up = mem[1];
    d.experts.down = mem[2];
    moevk_layer *L = budgeted(bare, &d, 3 * expert_bytes(&d), MOEVK_LAYER_IMPORT_HOST_EXPERTS);
    moevk_cache_stats cs;
    cr_assert_eq(moevk_layer_cache_stats(L, &cs), MOEVK_SUCCESS);
    cr_assert_eq(cs.host_imported_bytes, 0);
    pass_out got;
    forward(bare, L, x, T, &got);
    assert_same(&got, &want, T, &rl.d, "host experts without the extension", seed);
    pass_free(&got);
    moevk_layer_destroy(L);
    moevk_context_destroy(bare);
    host_destroy(&h);
    cr_assert_eq(atomic_load(&h.messages), 0u);
    for (int m = 0; m < 3; m++)
        free(mem[m]);
    pass_free(&want);
    free(x);
    moevk_layer_destroy(ref);
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}

/* A failure at every allocation and Vulkan call of a budgeted layer's life
 * (create over several chunks, passes with promotions, destroy): an error
 * each time, nothing leaked; and a failed pass leaves the layer giving the
 * right bits on the next one (its promotions forgotten). */
Test(cache, every_failure_point_is_clean, .timeout = 600)
{
    enum { H = 32, F = 24, E = 6, K = 2, T = 5 };
    moevk_context *ctx = mvkt_context();
    const uint64_t seed = mvkt_base_seed() ^ 0xfa17;
    mvkt_rng r = mvkt_rng_make(seed);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){H, F, E, K});
    const uint64_t eb = expert_bytes(&rl.d);
    moevk_layer *ref = NULL;
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &ref), MOEVK_SUCCESS);
    float *x = random_x(&r, T, H);
    pass_out want;
    forward(ctx, ref, x, T, &want);
    moevk_testing_set_max_buffer_range(ctx, eb); /* a few experts a chunk */
    moevk_layer_desc d = rl.d;
    d.flags |= MOEVK_LAYER_VRAM_BUDGET;
    d.vram_budget = 3 * eb;
    float *y = malloc(sizeof(float) * T * H);
    moevk_tensor tx = tensor2(ctx, T, H), ty = tensor2(ctx, T, H);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    /* warm: pipelines, staging, the default workspace */
    moevk_layer *L = budgeted(ctx, &rl.d, 3 * eb, 0);
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, NULL), MOEVK_SUCCESS);
    moevk_layer_destroy(L);
    int failures = 0;
    const int64_t baseline = moevk_testing_live_objects(ctx);
    for (int n = 1; n < 2000; n++) {
        moevk_testing_fail_after(ctx, n);
        moevk_status st = moevk_layer_create(ctx, &d, &L);
        for (int p = 0; !st && p < 3; p++) {
            if (p)
                st = moevk_layer_cache_prefetch(L, (const uint32_t[]){(uint32_t)(2 * p),
                                                                     (uint32_t)(2 * p + 1)}, 2);
            if (!st)
                st = moevk_layer_forward(L, &tx, &ty, NULL);
        }
        moevk_testing_fail_after(ctx, 0);
        if (!st) {
            cr_assert_eq(moevk_tensor_download(&ty, y), 0);
            cr_assert(memcmp(y, want.y, sizeof(float) * T * H) == 0, "seed %llu",
                      (unsigned long long)seed);
            moevk_layer_destroy(L);
            break; /* n passed the last failure point */
        }
        failures++;
        cr_assert(st == MOEVK_ERROR_OUT_OF_HOST_MEMORY || st == MOEVK_ERROR_OUT_OF_DEVICE_MEMORY,
                  "failure point %d: %s (%s)", n, moevk_status_string(st),
                  moevk_context_last_error(ctx));
        if (L) {
            /* the pass failed: the next one is right */
            mvkt_poison_tensor(&ty);
            cr_assert_eq(moevk_layer_forward(L, &tx, &ty, NULL), MOEVK_SUCCESS,
                         "after failure point %d: %s", n, moevk_context_last_error(ctx));
            cr_assert_eq(moevk_tensor_download(&ty, y), 0);
            cr_assert(memcmp(y, want.y, sizeof(float) * T * H) == 0,
                      "seed %llu: the pass after failure point %d differs",
                      (unsigned long long)seed, n);
            moevk_layer_destroy(L);
            L = NULL;
        }
        cr_assert_eq(moevk_testing_live_objects(ctx), baseline,
                     "failure point %d leaked %lld objects", n,
                     (long long)(moevk_testing_live_objects(ctx) - baseline));
    }
    cr_assert_gt(failures, 30, "only %d failure points", failures);
    moevk_testing_set_max_buffer_range(ctx, 0);
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
    free(y);
    pass_free(&want);
    free(x);
    moevk_layer_destroy(ref);
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}

Test(cache, bad_budgets_are_refused_by_name, .timeout = 60)
{
    moevk_context *ctx = mvkt_context();
    mvkt_rng r = mvkt_rng_make(mvkt_base_seed() ^ 0xbad);
    rlayer rl;
    rlayer_make(&r, &rl, &(rlayer_spec){16, 8, 4, 1});
    moevk_layer *L = NULL;
    moevk_layer_desc d = rl.d;
    d.vram_budget = 1000;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "vram_budget = 1000"), "%s",
              moevk_context_last_error(ctx));
    d = rl.d;
    d.flags |= MOEVK_LAYER_CACHE_STATIC;
    cr_assert_eq(moevk_layer_create(ctx, &d, &L), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "MOEVK_LAYER_CACHE_STATIC"), "%s",
              moevk_context_last_error(ctx));
    cr_assert_null(L);
    /* without a budget: every expert resident, nothing to pin */
    cr_assert_eq(moevk_layer_create(ctx, &rl.d, &L), MOEVK_SUCCESS);
    moevk_cache_stats cs;
    cr_assert_eq(moevk_layer_cache_stats(L, &cs), MOEVK_SUCCESS);
    cr_assert_eq(cs.device_slots, 4);
    cr_assert_eq(cs.resident_experts, 4);
    cr_assert_eq(cs.host_weight_bytes, 0);
    cr_assert_eq(cs.expert_device_bytes, 4 * expert_bytes(&rl.d));
    cr_assert_eq(moevk_layer_cache_pin(L, 3, 1), MOEVK_SUCCESS);
    cr_assert_eq(moevk_layer_cache_stats(L, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    moevk_layer_destroy(L);
    rlayer_free(&rl);
    mvkt_context_end(ctx);
}
