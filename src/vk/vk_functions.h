/*
 * The Vulkan entry points moevk calls, as X-macro lists. Device-level ones
 * live in a per-context VolkDeviceTable (volk.h); instance-level ones in a
 * per-context moevk_vk_instance table. No global Vulkan function pointer is
 * ever read or written, so any number of contexts (and a host application's
 * own Vulkan code) coexist.
 */
#ifndef MOEVK_VK_FUNCTIONS_H
#define MOEVK_VK_FUNCTIONS_H

/* Callable with a NULL instance. */
#define MOEVK_VK_GLOBAL_FUNCTIONS(X)                                                     \
    X(vkCreateInstance)                                                                  \
    X(vkEnumerateInstanceExtensionProperties)                                            \
    X(vkEnumerateInstanceLayerProperties)                                                \
    X(vkEnumerateInstanceVersion)

#define MOEVK_VK_INSTANCE_FUNCTIONS(X)                                                   \
    X(vkDestroyInstance)                                                                 \
    X(vkEnumeratePhysicalDevices)                                                        \
    X(vkGetPhysicalDeviceProperties)                                                     \
    X(vkGetPhysicalDeviceProperties2)                                                    \
    X(vkGetPhysicalDeviceFeatures2)                                                      \
    X(vkGetPhysicalDeviceMemoryProperties)                                               \
    X(vkGetPhysicalDeviceMemoryProperties2)                                              \
    X(vkGetPhysicalDeviceQueueFamilyProperties)                                          \
    X(vkEnumerateDeviceExtensionProperties)                                              \
    X(vkCreateDevice)                                                                    \
    X(vkGetDeviceProcAddr)

/* Optional (VK_EXT_debug_utils); NULL when the extension is absent. */
#define MOEVK_VK_DEBUG_FUNCTIONS(X)                                                      \
    X(vkCreateDebugUtilsMessengerEXT)                                                    \
    X(vkDestroyDebugUtilsMessengerEXT)

/* Members of VolkDeviceTable that moevk loads and uses. */
#define MOEVK_VK_DEVICE_FUNCTIONS(X)                                                     \
    X(vkDestroyDevice)                                                                   \
    X(vkGetDeviceQueue)                                                                  \
    X(vkDeviceWaitIdle)                                                                  \
    X(vkQueueSubmit)                                                                     \
    X(vkQueueWaitIdle)                                                                   \
    X(vkAllocateMemory)                                                                  \
    X(vkFreeMemory)                                                                      \
    X(vkMapMemory)                                                                       \
    X(vkUnmapMemory)                                                                     \
    X(vkFlushMappedMemoryRanges)                                                         \
    X(vkInvalidateMappedMemoryRanges)                                                    \
    X(vkCreateBuffer)                                                                    \
    X(vkDestroyBuffer)                                                                   \
    X(vkGetBufferMemoryRequirements)                                                     \
    X(vkBindBufferMemory)                                                                \
    X(vkCreateFence)                                                                     \
    X(vkDestroyFence)                                                                    \
    X(vkResetFences)                                                                     \
    X(vkWaitForFences)                                                                   \
    X(vkCreateShaderModule)                                                              \
    X(vkDestroyShaderModule)                                                             \
    X(vkCreatePipelineCache)                                                             \
    X(vkDestroyPipelineCache)                                                            \
    X(vkCreateComputePipelines)                                                          \
    X(vkDestroyPipeline)                                                                 \
    X(vkCreatePipelineLayout)                                                            \
    X(vkDestroyPipelineLayout)                                                           \
    X(vkCreateDescriptorSetLayout)                                                       \
    X(vkDestroyDescriptorSetLayout)                                                      \
    X(vkCreateDescriptorPool)                                                            \
    X(vkDestroyDescriptorPool)                                                           \
    X(vkResetDescriptorPool)                                                             \
    X(vkAllocateDescriptorSets)                                                          \
    X(vkUpdateDescriptorSets)                                                            \
    X(vkCreateCommandPool)                                                               \
    X(vkDestroyCommandPool)                                                              \
    X(vkResetCommandPool)                                                                \
    X(vkAllocateCommandBuffers)                                                          \
    X(vkBeginCommandBuffer)                                                              \
    X(vkEndCommandBuffer)                                                                \
    X(vkCmdBindPipeline)                                                                 \
    X(vkCmdBindDescriptorSets)                                                           \
    X(vkCmdPushConstants)                                                                \
    X(vkCmdDispatch)                                                                     \
    X(vkCmdDispatchIndirect)                                                             \
    X(vkCmdPipelineBarrier)                                                              \
    X(vkCmdCopyBuffer)                                                                   \
    X(vkCmdFillBuffer)                                                                   \
    X(vkCmdUpdateBuffer)                                                                 \
    X(vkCreateQueryPool)                                                                 \
    X(vkDestroyQueryPool)                                                                \
    X(vkCmdResetQueryPool)                                                               \
    X(vkCmdWriteTimestamp)                                                               \
    X(vkGetQueryPoolResults)

#endif
