/*
 * A host application for the interop tests: its own Vulkan instance (with
 * the validation layer and synchronization validation, every message
 * counted), a bare device (no optional features) and one compute queue,
 * which moevk then borrows through moevk_vulkan_import.
 */
#ifndef MOEVK_TESTS_HOST_APP_H
#define MOEVK_TESTS_HOST_APP_H

#include <stdatomic.h>

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include "moevk/moevk.h"

typedef struct host_app {
    void *lib;
    PFN_vkGetInstanceProcAddr gipa;
    VkInstance inst;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice pd;
    VkDevice dev;
    VkQueue queue;
    uint32_t fam;
    atomic_uint messages; /* validation messages on the host's instance */
    const char *device_exts[1];
    uint32_t n_device_exts;
    PFN_vkDestroyInstance DestroyInstance;
    PFN_vkDestroyDebugUtilsMessengerEXT DestroyMessenger;
    PFN_vkDestroyDevice DestroyDevice;
    PFN_vkDeviceWaitIdle DeviceWaitIdle;
    PFN_vkCreateCommandPool CreateCommandPool;
    PFN_vkDestroyCommandPool DestroyCommandPool;
    PFN_vkAllocateCommandBuffers AllocateCommandBuffers;
    PFN_vkBeginCommandBuffer BeginCommandBuffer;
    PFN_vkEndCommandBuffer EndCommandBuffer;
    PFN_vkResetCommandBuffer ResetCommandBuffer;
    PFN_vkCmdPipelineBarrier CmdPipelineBarrier;
    PFN_vkQueueSubmit QueueSubmit;
    PFN_vkCreateFence CreateFence;
    PFN_vkDestroyFence DestroyFence;
    PFN_vkWaitForFences WaitForFences;
    PFN_vkResetFences ResetFences;
} host_app;

/* Create (asserting success) and destroy the host's objects. */
void host_create(host_app *h);
/* The same, with VK_KHR_push_descriptor enabled on the device when
 * push_descriptor is set. */
void host_create_ext(host_app *h, int push_descriptor);
void host_destroy(host_app *h);
/* The import description of h's device, queue and enabled extensions (no
 * queue lock). */
moevk_vulkan_import host_import(const host_app *h);
/* Record a full memory barrier between the given stages/accesses. */
void host_barrier(host_app *h, VkCommandBuffer cb, VkPipelineStageFlags src,
                  VkAccessFlags src_access, VkPipelineStageFlags dst, VkAccessFlags dst_access);

/* Command buffers of the host for recorded passes: begin (with a barrier
 * from the host's transfers to compute), submit (with a barrier from
 * compute to transfers) with a fence each, wait for the first n. */
typedef struct recorder {
    host_app *h;
    VkCommandPool pool;
    VkCommandBuffer cb[2];
    VkFence fence[2];
} recorder;

void recorder_make(host_app *h, recorder *rc);
void recorder_free(recorder *rc);
void recorder_begin(recorder *rc, int i);
void recorder_submit(recorder *rc, int i);
void recorder_wait(recorder *rc, int n);

#endif
