/*
 * Context lifecycle, device choice, capabilities, importing a host device,
 * timeouts.
 */
#define _DEFAULT_SOURCE
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>
#include <dlfcn.h>

#include "common.h"
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

/* The host application owns instance and device; moevk borrows them, runs
 * work, and leaves them alive. */
Test(context, import_host_device)
{
    moevk_context *probe = mvkt_context(); /* skips when there is no device */
    mvkt_context_end(probe);

    void *lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(lib);
    PFN_vkGetInstanceProcAddr gipa;
    *(void **)&gipa = dlsym(lib, "vkGetInstanceProcAddr");
    PFN_vkCreateInstance create_instance = (PFN_vkCreateInstance)gipa(NULL, "vkCreateInstance");
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .apiVersion = VK_API_VERSION_1_1};
    const char *layers[] = {"VK_LAYER_KHRONOS_validation"};
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                .pApplicationInfo = &app,
                                .enabledLayerCount = 1,
                                .ppEnabledLayerNames = layers};
    VkInstance inst;
    cr_assert_eq(create_instance(&ici, NULL, &inst), VK_SUCCESS);
#define LOAD(name) PFN_##name name = (PFN_##name)gipa(inst, #name)
    LOAD(vkEnumeratePhysicalDevices);
    LOAD(vkGetPhysicalDeviceQueueFamilyProperties);
    LOAD(vkCreateDevice);
    LOAD(vkGetDeviceProcAddr);
    LOAD(vkDestroyInstance);
    uint32_t n = 1;
    VkPhysicalDevice pd;
    cr_assert_geq(vkEnumeratePhysicalDevices(inst, &n, &pd), 0);
    VkQueueFamilyProperties qf[16];
    uint32_t nq = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    uint32_t fam = 0;
    while (fam < nq && !(qf[fam].queueFlags & VK_QUEUE_COMPUTE_BIT))
        fam++;
    cr_assert_lt(fam, nq);
    float prio = 1;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = fam, .queueCount = 1,
                                   .pQueuePriorities = &prio};
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                              .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci};
    VkDevice dev;
    cr_assert_eq(vkCreateDevice(pd, &dci, NULL, &dev), VK_SUCCESS);
    PFN_vkGetDeviceQueue get_queue = (PFN_vkGetDeviceQueue)vkGetDeviceProcAddr(dev, "vkGetDeviceQueue");
    PFN_vkDeviceWaitIdle wait_idle = (PFN_vkDeviceWaitIdle)vkGetDeviceProcAddr(dev, "vkDeviceWaitIdle");
    PFN_vkDestroyDevice destroy_device = (PFN_vkDestroyDevice)vkGetDeviceProcAddr(dev, "vkDestroyDevice");
    VkQueue q;
    get_queue(dev, fam, 0, &q);

    moevk_vulkan_import im = {
        .get_instance_proc_addr = *(void **)&gipa,
        .instance = inst, .physical_device = pd, .device = dev,
        .queue_family_index = fam, .queue = q,
    };
    moevk_context_desc d = {.import = &im};
    moevk_context *ctx = NULL;
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_SUCCESS);
    cr_assert_eq(moevk_context_device_info(ctx)->imported, 1);

    /* Real work on the borrowed device: a small router, checked. */
    mvkt_rng r = mvkt_rng_make(mvkt_base_seed());
    enum { T = 5, H = 33, E = 6 };
    float x[T * H], w[E * H], out[T * E], ref[T * E];
    for (int i = 0; i < T * H; i++) x[i] = mvkt_uniform(&r, -1, 1);
    for (int i = 0; i < E * H; i++) w[i] = mvkt_uniform(&r, -1, 1);
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
    moevk_context_destroy(ctx);

    /* The host's device is still alive and usable. */
    cr_assert_eq(wait_idle(dev), VK_SUCCESS);
    destroy_device(dev, NULL);
    vkDestroyInstance(inst, NULL);
    dlclose(lib);
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
