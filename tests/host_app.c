/*
 * The host application of the interop tests (host_app.h).
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "host_app.h"

static VKAPI_ATTR VkBool32 VKAPI_CALL host_debug(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                                 VkDebugUtilsMessageTypeFlagsEXT types,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *data,
                                                 void *user)
{
    (void)sev, (void)types;
    atomic_fetch_add(&((host_app *)user)->messages, 1u);
    fprintf(stderr, "[host validation] %s\n", data && data->pMessage ? data->pMessage : "?");
    return VK_FALSE;
}

/* The host application: its own instance (validation + synchronization
 * validation), device and queue; moevk borrows them. */

void host_create(host_app *h)
{
    host_create_ext(h, 0);
}

void host_create_ext(host_app *h, int push_descriptor)
{
    memset(h, 0, sizeof *h);
    atomic_init(&h->messages, 0u);
    h->lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(h->lib);
    *(void **)&h->gipa = dlsym(h->lib, "vkGetInstanceProcAddr");
    PFN_vkCreateInstance create_instance =
        (PFN_vkCreateInstance)h->gipa(NULL, "vkCreateInstance");
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .apiVersion = VK_API_VERSION_1_1};
    const char *layers[] = {"VK_LAYER_KHRONOS_validation"};
    const char *exts[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
    VkDebugUtilsMessengerCreateInfoEXT mci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT,
        .pfnUserCallback = host_debug,
        .pUserData = h,
    };
    VkValidationFeatureEnableEXT enables[] = {
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
    VkValidationFeaturesEXT features = {
        .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
        .pNext = &mci,
        .enabledValidationFeatureCount = 1,
        .pEnabledValidationFeatures = enables,
    };
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                .pNext = &features,
                                .pApplicationInfo = &app,
                                .enabledLayerCount = 1,
                                .ppEnabledLayerNames = layers,
                                .enabledExtensionCount = 1,
                                .ppEnabledExtensionNames = exts};
    cr_assert_eq(create_instance(&ici, NULL, &h->inst), VK_SUCCESS);
#define ILOAD(name) PFN_##name name = (PFN_##name)h->gipa(h->inst, #name)
    ILOAD(vkEnumeratePhysicalDevices);
    ILOAD(vkGetPhysicalDeviceQueueFamilyProperties);
    ILOAD(vkCreateDevice);
    ILOAD(vkGetDeviceProcAddr);
    ILOAD(vkCreateDebugUtilsMessengerEXT);
#undef ILOAD
    h->DestroyInstance = (PFN_vkDestroyInstance)h->gipa(h->inst, "vkDestroyInstance");
    h->DestroyMessenger = (PFN_vkDestroyDebugUtilsMessengerEXT)h->gipa(
        h->inst, "vkDestroyDebugUtilsMessengerEXT");
    cr_assert_not_null(vkCreateDebugUtilsMessengerEXT);
    cr_assert_eq(vkCreateDebugUtilsMessengerEXT(h->inst, &mci, NULL, &h->messenger), VK_SUCCESS);

    uint32_t n = 1;
    cr_assert_geq(vkEnumeratePhysicalDevices(h->inst, &n, &h->pd), 0);
    VkQueueFamilyProperties qf[16];
    uint32_t nq = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(h->pd, &nq, qf);
    h->fam = 0;
    while (h->fam < nq && !(qf[h->fam].queueFlags & VK_QUEUE_COMPUTE_BIT))
        h->fam++;
    cr_assert_lt(h->fam, nq);
    float prio = 1;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = h->fam,
                                   .queueCount = 1,
                                   .pQueuePriorities = &prio};
    /* no optional features: moevk must cope with a bare device */
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                              .queueCreateInfoCount = 1,
                              .pQueueCreateInfos = &qci};
    if (push_descriptor) {
        h->device_exts[h->n_device_exts++] = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
        dci.enabledExtensionCount = h->n_device_exts;
        dci.ppEnabledExtensionNames = h->device_exts;
    }
    cr_assert_eq(vkCreateDevice(h->pd, &dci, NULL, &h->dev), VK_SUCCESS);
#define DLOAD(field, name) h->field = (PFN_##name)vkGetDeviceProcAddr(h->dev, #name)
    DLOAD(DestroyDevice, vkDestroyDevice);
    DLOAD(DeviceWaitIdle, vkDeviceWaitIdle);
    DLOAD(CreateCommandPool, vkCreateCommandPool);
    DLOAD(DestroyCommandPool, vkDestroyCommandPool);
    DLOAD(AllocateCommandBuffers, vkAllocateCommandBuffers);
    DLOAD(BeginCommandBuffer, vkBeginCommandBuffer);
    DLOAD(EndCommandBuffer, vkEndCommandBuffer);
    DLOAD(ResetCommandBuffer, vkResetCommandBuffer);
    DLOAD(CmdPipelineBarrier, vkCmdPipelineBarrier);
    DLOAD(QueueSubmit, vkQueueSubmit);
    DLOAD(CreateFence, vkCreateFence);
    DLOAD(DestroyFence, vkDestroyFence);
    DLOAD(WaitForFences, vkWaitForFences);
    DLOAD(ResetFences, vkResetFences);
#undef DLOAD
    PFN_vkGetDeviceQueue get_queue =
        (PFN_vkGetDeviceQueue)vkGetDeviceProcAddr(h->dev, "vkGetDeviceQueue");
    get_queue(h->dev, h->fam, 0, &h->queue);
}

void host_destroy(host_app *h)
{
    cr_assert_eq(h->DeviceWaitIdle(h->dev), VK_SUCCESS);
    h->DestroyDevice(h->dev, NULL);
    h->DestroyMessenger(h->inst, h->messenger, NULL);
    h->DestroyInstance(h->inst, NULL);
    dlclose(h->lib);
}

moevk_vulkan_import host_import(const host_app *h)
{
    return (moevk_vulkan_import){
        .get_instance_proc_addr = *(void *const *)&h->gipa,
        .instance = h->inst,
        .physical_device = h->pd,
        .device = h->dev,
        .queue_family_index = h->fam,
        .queue = h->queue,
        .device_extensions = h->device_exts,
        .num_device_extensions = h->n_device_exts,
    };
}

void host_barrier(host_app *h, VkCommandBuffer cb, VkPipelineStageFlags src,
                  VkAccessFlags src_access, VkPipelineStageFlags dst, VkAccessFlags dst_access)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = src_access,
                          .dstAccessMask = dst_access};
    h->CmdPipelineBarrier(cb, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* ---- recording ---- */

void recorder_make(host_app *h, recorder *rc)
{
    rc->h = h;
    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                   .queueFamilyIndex = h->fam};
    cr_assert_eq(h->CreateCommandPool(h->dev, &pci, NULL, &rc->pool), VK_SUCCESS);
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = rc->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 2};
    cr_assert_eq(h->AllocateCommandBuffers(h->dev, &ai, rc->cb), VK_SUCCESS);
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(h->CreateFence(h->dev, &fci, NULL, &rc->fence[i]), VK_SUCCESS);
}

void recorder_free(recorder *rc)
{
    for (int i = 0; i < 2; i++)
        rc->h->DestroyFence(rc->h->dev, rc->fence[i], NULL);
    rc->h->DestroyCommandPool(rc->h->dev, rc->pool, NULL);
}

void recorder_begin(recorder *rc, int i)
{
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    cr_assert_eq(rc->h->BeginCommandBuffer(rc->cb[i], &bi), VK_SUCCESS);
    host_barrier(rc->h, rc->cb[i], VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                 VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
}

void recorder_submit(recorder *rc, int i)
{
    host_barrier(rc->h, rc->cb[i], VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                 VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
                 VK_ACCESS_TRANSFER_READ_BIT);
    cr_assert_eq(rc->h->EndCommandBuffer(rc->cb[i]), VK_SUCCESS);
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                       .commandBufferCount = 1,
                       .pCommandBuffers = &rc->cb[i]};
    cr_assert_eq(rc->h->QueueSubmit(rc->h->queue, 1, &si, rc->fence[i]), VK_SUCCESS);
}

void recorder_wait(recorder *rc, int n)
{
    cr_assert_eq(rc->h->WaitForFences(rc->h->dev, (uint32_t)n, rc->fence, VK_TRUE, UINT64_MAX),
                 VK_SUCCESS);
    rc->h->ResetFences(rc->h->dev, (uint32_t)n, rc->fence);
}

