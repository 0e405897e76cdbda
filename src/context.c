/*
 * Contexts: open the Vulkan loader, create (or borrow) instance and device,
 * pick a device, record its capabilities.
 *
 * Nothing here touches volk's process-global function pointers: the loader
 * is opened per context (dlopen is reference-counted), instance functions go
 * into the context's mvk_instance_table and device functions into its
 * VolkDeviceTable.
 */
#include <ctype.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels.h"
#include "vk/vk_coopmat.h"

#define MVK_DEFAULT_TIMEOUT_MS 60000u

static const char *const validation_layer = "VK_LAYER_KHRONOS_validation";

/* ---- loading ------------------------------------------------------------ */

static moevk_status load_loader(moevk_context *ctx, const char *name)
{
    const char *lib = name ? name : "libvulkan.so.1";
    ctx->loader_lib = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!ctx->loader_lib && !name)
        ctx->loader_lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
    if (!ctx->loader_lib)
        return mvk_fail(ctx, MOEVK_ERROR_NO_VULKAN, "cannot open the Vulkan loader '%s'", lib);
    void *sym = dlsym(ctx->loader_lib, "vkGetInstanceProcAddr");
    if (!sym)
        return mvk_fail(ctx, MOEVK_ERROR_NO_VULKAN,
                        "the Vulkan loader '%s' has no vkGetInstanceProcAddr", lib);
    memcpy(&ctx->vki.vkGetInstanceProcAddr, &sym, sizeof(sym));
    return MOEVK_SUCCESS;
}

static void load_global_functions(moevk_context *ctx)
{
#define MVK_X(name) ctx->vki.name = (PFN_##name)ctx->vki.vkGetInstanceProcAddr(NULL, #name);
    MOEVK_VK_GLOBAL_FUNCTIONS(MVK_X)
#undef MVK_X
}

static moevk_status load_instance_functions(moevk_context *ctx)
{
#define MVK_X(name)                                                                     \
    ctx->vki.name = (PFN_##name)ctx->vki.vkGetInstanceProcAddr(ctx->instance, #name);   \
    if (!ctx->vki.name)                                                                 \
        return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED, "instance function %s missing", #name);
    MOEVK_VK_INSTANCE_FUNCTIONS(MVK_X)
#undef MVK_X
#define MVK_X(name) ctx->vki.name = (PFN_##name)ctx->vki.vkGetInstanceProcAddr(ctx->instance, #name);
    MOEVK_VK_DEBUG_FUNCTIONS(MVK_X)
#undef MVK_X
    return MOEVK_SUCCESS;
}

static moevk_status load_device_functions(moevk_context *ctx)
{
    PFN_vkGetDeviceProcAddr gdpa = ctx->vki.vkGetDeviceProcAddr;
#define MVK_X(name)                                                                     \
    ctx->vk.name = (PFN_##name)gdpa(ctx->device, #name);                                \
    if (!ctx->vk.name)                                                                  \
        return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED, "device function %s missing", #name);
    MOEVK_VK_DEVICE_FUNCTIONS(MVK_X)
#undef MVK_X
    if (ctx->info.push_descriptor) {
        ctx->vk.vkCmdPushDescriptorSetKHR =
            (PFN_vkCmdPushDescriptorSetKHR)gdpa(ctx->device, "vkCmdPushDescriptorSetKHR");
        if (!ctx->vk.vkCmdPushDescriptorSetKHR)
            ctx->info.push_descriptor = 0;
    }
    ctx->push_descriptors = ctx->info.push_descriptor != 0;
    if (ctx->info.external_memory_host) {
        ctx->vk.vkGetMemoryHostPointerPropertiesEXT =
            (PFN_vkGetMemoryHostPointerPropertiesEXT)gdpa(ctx->device,
                                                          "vkGetMemoryHostPointerPropertiesEXT");
        if (!ctx->vk.vkGetMemoryHostPointerPropertiesEXT)
            ctx->info.external_memory_host = 0;
    }
    return MOEVK_SUCCESS;
}

/* ---- validation --------------------------------------------------------- */

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_callback(
    VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT types,
    const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    (void)types;
    moevk_context *ctx = user;
    if (severity < VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT)
        return VK_FALSE;
    ctx->validation_messages++;
    mvk_log(ctx, MOEVK_LOG_ERROR, "validation: %s", data && data->pMessage ? data->pMessage : "?");
    return VK_FALSE;
}

static bool has_layer(moevk_context *ctx, const char *name)
{
    uint32_t n = 0;
    if (ctx->vki.vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0)
        return false;
    VkLayerProperties *props = mvk_alloc(ctx, sizeof(*props) * n);
    if (!props)
        return false;
    bool found = false;
    if (ctx->vki.vkEnumerateInstanceLayerProperties(&n, props) >= 0)
        for (uint32_t i = 0; i < n && !found; i++)
            found = strcmp(props[i].layerName, name) == 0;
    mvk_free(ctx, props);
    return found;
}

static bool has_instance_extension(moevk_context *ctx, const char *layer, const char *name)
{
    uint32_t n = 0;
    if (ctx->vki.vkEnumerateInstanceExtensionProperties(layer, &n, NULL) != VK_SUCCESS || !n)
        return false;
    VkExtensionProperties *props = mvk_alloc(ctx, sizeof(*props) * n);
    if (!props)
        return false;
    bool found = false;
    if (ctx->vki.vkEnumerateInstanceExtensionProperties(layer, &n, props) >= 0)
        for (uint32_t i = 0; i < n && !found; i++)
            found = strcmp(props[i].extensionName, name) == 0;
    mvk_free(ctx, props);
    return found;
}

/* ---- instance ----------------------------------------------------------- */

static moevk_status create_instance(moevk_context *ctx, uint32_t flags)
{
    uint32_t api = VK_API_VERSION_1_0;
    if (ctx->vki.vkEnumerateInstanceVersion)
        ctx->vki.vkEnumerateInstanceVersion(&api);
    if (api < VK_API_VERSION_1_1)
        return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED,
                        "the Vulkan loader supports only API %u.%u; moevk needs 1.1",
                        VK_API_VERSION_MAJOR(api), VK_API_VERSION_MINOR(api));

    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "moevk",
        .pEngineName = "moevk",
        .engineVersion = VK_MAKE_API_VERSION(0, MOEVK_VERSION_MAJOR, MOEVK_VERSION_MINOR,
                                             MOEVK_VERSION_PATCH),
        .apiVersion = MVK_MIN(api, VK_API_VERSION_1_3),
    };
    VkInstanceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pApplicationInfo = &app,
    };
    const char *layers[1];
    const char *exts[1];
    bool validate = flags & (MOEVK_CONTEXT_VALIDATION | MOEVK_CONTEXT_GPU_ASSISTED_VALIDATION);
    VkValidationFeatureEnableEXT enables[2];
    uint32_t n_enables = 0;
    VkValidationFeaturesEXT features = {.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
    VkDebugUtilsMessengerCreateInfoEXT messenger = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = debug_callback,
        .pUserData = ctx,
    };
    if (validate) {
        if (!has_layer(ctx, validation_layer))
            return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED,
                            "validation was requested but %s is not installed "
                            "(Debian: vulkan-validationlayers)", validation_layer);
        if (!has_instance_extension(ctx, NULL, VK_EXT_DEBUG_UTILS_EXTENSION_NAME) &&
            !has_instance_extension(ctx, validation_layer, VK_EXT_DEBUG_UTILS_EXTENSION_NAME))
            return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED,
                            "validation was requested but %s is missing",
                            VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
        layers[0] = validation_layer;
        exts[0] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
        ci.enabledLayerCount = 1;
        ci.ppEnabledLayerNames = layers;
        ci.enabledExtensionCount = 1;
        ci.ppEnabledExtensionNames = exts;
        if (flags & MOEVK_CONTEXT_GPU_ASSISTED_VALIDATION)
            enables[n_enables++] = VK_VALIDATION_FEATURE_ENABLE_GPU_ASSISTED_EXT;
        else
            enables[n_enables++] = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
        features.enabledValidationFeatureCount = n_enables;
        features.pEnabledValidationFeatures = enables;
        features.pNext = &messenger;
        ci.pNext = &features;
    }
    VkResult r = MVK_VK(ctx, ctx->vki.vkCreateInstance(&ci, NULL, &ctx->instance));
    if (r != VK_SUCCESS) {
        ctx->instance = VK_NULL_HANDLE;
        return mvk_vk_fail(ctx, r, "vkCreateInstance");
    }
    ctx->owns_instance = true;
    moevk_status st = load_instance_functions(ctx);
    if (st)
        return st;
    if (validate) {
        if (!ctx->vki.vkCreateDebugUtilsMessengerEXT)
            return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED, "vkCreateDebugUtilsMessengerEXT missing");
        r = MVK_VK(ctx, ctx->vki.vkCreateDebugUtilsMessengerEXT(ctx->instance, &messenger, NULL,
                                                                &ctx->messenger));
        if (r != VK_SUCCESS) {
            ctx->messenger = VK_NULL_HANDLE;
            return mvk_vk_fail(ctx, r, "vkCreateDebugUtilsMessengerEXT");
        }
    }
    return MOEVK_SUCCESS;
}

/* ---- device capabilities ------------------------------------------------ */

static bool ext_in(const VkExtensionProperties *e, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(e[i].extensionName, name) == 0)
            return true;
    return false;
}

/* Fill *info for a physical device. */
static moevk_status query_device(moevk_context *ctx, VkPhysicalDevice pd, moevk_device_info *info)
{
    memset(info, 0, sizeof(*info));
    uint32_t next = 0;
    VkExtensionProperties *exts = NULL;
    if (ctx->vki.vkEnumerateDeviceExtensionProperties(pd, NULL, &next, NULL) == VK_SUCCESS &&
        next) {
        exts = mvk_alloc(ctx, sizeof(*exts) * next);
        if (!exts)
            return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "device extension list");
        if (ctx->vki.vkEnumerateDeviceExtensionProperties(pd, NULL, &next, exts) < 0)
            next = 0;
    }

    VkPhysicalDeviceProperties base;
    ctx->vki.vkGetPhysicalDeviceProperties(pd, &base);
    bool v12 = base.apiVersion >= VK_API_VERSION_1_2;
    bool v13 = base.apiVersion >= VK_API_VERSION_1_3;

    VkPhysicalDeviceSubgroupProperties sg = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceSubgroupSizeControlProperties sgc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
    VkPhysicalDeviceDriverProperties drv = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &sg};
    void **tail = &sg.pNext;
    if (v13 || ext_in(exts, next, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME)) {
        *tail = &sgc;
        tail = &sgc.pNext;
    }
    if (v12 || ext_in(exts, next, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME)) {
        *tail = &drv;
        tail = &drv.pNext;
    }
    ctx->vki.vkGetPhysicalDeviceProperties2(pd, &p2);

    VkPhysicalDevice16BitStorageFeatures s16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
    VkPhysicalDevice8BitStorageFeatures s8 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &s16};
    if (v12 || ext_in(exts, next, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME)) {
        s16.pNext = &f16;
        f16.pNext = (v12 || ext_in(exts, next, VK_KHR_8BIT_STORAGE_EXTENSION_NAME)) ? &s8 : NULL;
    }
    ctx->vki.vkGetPhysicalDeviceFeatures2(pd, &f2);

    VkPhysicalDeviceMemoryProperties mem;
    ctx->vki.vkGetPhysicalDeviceMemoryProperties(pd, &mem);

    snprintf(info->name, sizeof(info->name), "%s", base.deviceName);
    info->vendor_id = base.vendorID;
    info->device_id = base.deviceID;
    info->device_type = (uint32_t)base.deviceType;
    info->api_version = base.apiVersion;
    info->driver_version = base.driverVersion;
    snprintf(info->driver_name, sizeof(info->driver_name), "%s", drv.driverName);
    snprintf(info->driver_info, sizeof(info->driver_info), "%s", drv.driverInfo);
    info->subgroup_size = sg.subgroupSize;
    info->subgroup_ops = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) ? sg.supportedOperations : 0;
    info->min_subgroup_size = sgc.minSubgroupSize ? sgc.minSubgroupSize : sg.subgroupSize;
    info->max_subgroup_size = sgc.maxSubgroupSize ? sgc.maxSubgroupSize : sg.subgroupSize;
    info->max_shared_memory = base.limits.maxComputeSharedMemorySize;
    info->max_workgroup_invocations = base.limits.maxComputeWorkGroupInvocations;
    memcpy(info->max_workgroup_count, base.limits.maxComputeWorkGroupCount,
           sizeof(info->max_workgroup_count));
    info->max_push_constants = base.limits.maxPushConstantsSize;
    info->max_storage_buffer_range = base.limits.maxStorageBufferRange;
    info->max_allocation_count = base.limits.maxMemoryAllocationCount;
    /* maxMemoryAllocationSize is Vulkan 1.1 core (Maintenance3). */
    VkPhysicalDeviceMaintenance3Properties m3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
    VkPhysicalDeviceProperties2 p2b = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                       .pNext = &m3};
    ctx->vki.vkGetPhysicalDeviceProperties2(pd, &p2b);
    info->max_allocation_size = m3.maxMemoryAllocationSize;
    for (uint32_t i = 0; i < mem.memoryHeapCount; i++)
        if (mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
            info->device_local_bytes = MVK_MAX(info->device_local_bytes, mem.memoryHeaps[i].size);
    info->fp16_arith = f16.shaderFloat16 != 0;
    info->int8_arith = f16.shaderInt8 != 0;
    info->storage_16bit = s16.storageBuffer16BitAccess != 0;
    info->storage_8bit = s8.storageBuffer8BitAccess != 0;
    info->bf16 = ext_in(exts, next, "VK_KHR_shader_bfloat16");
    info->cooperative_matrix = ext_in(exts, next, "VK_KHR_cooperative_matrix");
    info->memory_budget = ext_in(exts, next, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
    info->external_memory_host = ext_in(exts, next, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);
    if (info->external_memory_host) {
        VkPhysicalDeviceExternalMemoryHostPropertiesEXT emh = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT};
        VkPhysicalDeviceProperties2 p2c = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &emh};
        ctx->vki.vkGetPhysicalDeviceProperties2(pd, &p2c);
        info->host_pointer_alignment = emh.minImportedHostPointerAlignment;
        /* a power of two, as the spec says; anything else is not used */
        if (!info->host_pointer_alignment ||
            (info->host_pointer_alignment & (info->host_pointer_alignment - 1)))
            info->external_memory_host = 0;
    }
    ctx->min_storage_offset = base.limits.minStorageBufferOffsetAlignment;
    info->push_descriptor = ext_in(exts, next, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
    info->timestamp_period_ns = base.limits.timestampPeriod;
    info->timestamps = base.limits.timestampComputeAndGraphics != 0;
    mvk_free(ctx, exts);
    return MOEVK_SUCCESS;
}

/* ---- matrix units --------------------------------------------------------- */

/* Whether moevk's cooperative-matrix kernel can run on pd: the extension
 * with a 16x16x16 f16 x f16 -> f32 subgroup shape, cooperativeMatrix,
 * shaderFloat16 and vulkanMemoryModel (Vulkan 1.3: the module is SPIR-V
 * 1.6), and subgroups of exactly 32 invocations (the kernel's layout). */
static bool matrix_units_possible(moevk_context *ctx, VkPhysicalDevice pd,
                                  const moevk_device_info *info)
{
    if (!MOEVK_HAVE_COOPMAT || !info->cooperative_matrix ||
        info->api_version < VK_API_VERSION_1_3 || info->min_subgroup_size != 32 ||
        info->max_subgroup_size != 32)
        return false;
    VkPhysicalDeviceCooperativeMatrixFeaturesKHR cm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR};
    VkPhysicalDeviceVulkan12Features v12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = &cm};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &v12};
    ctx->vki.vkGetPhysicalDeviceFeatures2(pd, &f2);
    if (!cm.cooperativeMatrix || !v12.shaderFloat16 || !v12.vulkanMemoryModel)
        return false;
    PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR props =
        (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR)ctx->vki.vkGetInstanceProcAddr(
            ctx->instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
    uint32_t n = 0;
    if (!props || props(pd, &n, NULL) != VK_SUCCESS || n == 0 || n > 256)
        return false;
    VkCooperativeMatrixPropertiesKHR p[256];
    for (uint32_t i = 0; i < n; i++)
        p[i] = (VkCooperativeMatrixPropertiesKHR){
            .sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR};
    if (props(pd, &n, p) < 0)
        return false;
    for (uint32_t i = 0; i < n; i++)
        if (p[i].MSize == 16 && p[i].NSize == 16 && p[i].KSize == 16 &&
            p[i].AType == VK_COMPONENT_TYPE_FLOAT16_KHR &&
            p[i].BType == VK_COMPONENT_TYPE_FLOAT16_KHR &&
            p[i].CType == VK_COMPONENT_TYPE_FLOAT32_KHR &&
            p[i].ResultType == VK_COMPONENT_TYPE_FLOAT32_KHR && p[i].scope == VK_SCOPE_SUBGROUP_KHR)
            return true;
    return false;
}

/* Whether the host's enabled-features chain turns on what the kernel
 * needs (an imported device: moevk enables nothing itself). */
static bool host_enabled_matrix_units(const moevk_vulkan_import *im)
{
    bool ext = false, cm = false, f16 = false, vmm = false;
    for (uint32_t i = 0; i < im->num_device_extensions; i++)
        if (im->device_extensions && im->device_extensions[i] &&
            strcmp(im->device_extensions[i], VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME) == 0)
            ext = true;
    for (const VkBaseInStructure *b = im->enabled_features; b; b = b->pNext) {
        if (b->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR)
            cm = ((const VkPhysicalDeviceCooperativeMatrixFeaturesKHR *)b)->cooperativeMatrix;
        if (b->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES) {
            f16 = f16 || ((const VkPhysicalDeviceVulkan12Features *)b)->shaderFloat16;
            vmm = vmm || ((const VkPhysicalDeviceVulkan12Features *)b)->vulkanMemoryModel;
        }
        if (b->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES)
            f16 = f16 || ((const VkPhysicalDeviceShaderFloat16Int8Features *)b)->shaderFloat16;
        if (b->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES)
            vmm = vmm ||
                  ((const VkPhysicalDeviceVulkanMemoryModelFeatures *)b)->vulkanMemoryModel;
    }
    return ext && cm && f16 && vmm;
}

/* A queue family with compute; prefer one with timestamps. */
static bool pick_queue_family(moevk_context *ctx, VkPhysicalDevice pd, uint32_t *family,
                              uint32_t *ts_bits)
{
    uint32_t n = 0;
    ctx->vki.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, NULL);
    VkQueueFamilyProperties q[64];
    n = MVK_MIN(n, 64u);
    ctx->vki.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, q);
    int best = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (!(q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) || q[i].queueCount == 0)
            continue;
        if (best < 0 || (q[best].timestampValidBits == 0 && q[i].timestampValidBits > 0))
            best = (int)i;
    }
    if (best < 0)
        return false;
    *family = (uint32_t)best;
    *ts_bits = q[best].timestampValidBits;
    return true;
}

static int type_rank(uint32_t t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
    default: return 4;
    }
}

static bool contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return true;
    }
    return n == 0;
}

static moevk_status enumerate(moevk_context *ctx, VkPhysicalDevice **out, uint32_t *count)
{
    uint32_t n = 0;
    VkResult r = MVK_VK(ctx, ctx->vki.vkEnumeratePhysicalDevices(ctx->instance, &n, NULL));
    if (r < 0)
        return mvk_vk_fail(ctx, r, "vkEnumeratePhysicalDevices");
    if (n == 0)
        return mvk_fail(ctx, MOEVK_ERROR_NO_DEVICE, "the Vulkan loader reports no device");
    VkPhysicalDevice *pds = mvk_alloc(ctx, sizeof(*pds) * n);
    if (!pds)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "physical device list");
    r = ctx->vki.vkEnumeratePhysicalDevices(ctx->instance, &n, pds);
    if (r < 0) {
        mvk_free(ctx, pds);
        return mvk_vk_fail(ctx, r, "vkEnumeratePhysicalDevices");
    }
    *out = pds;
    *count = n;
    return MOEVK_SUCCESS;
}

static moevk_status select_device(moevk_context *ctx, const char *want)
{
    VkPhysicalDevice *pds;
    uint32_t n;
    moevk_status st = enumerate(ctx, &pds, &n);
    if (st)
        return st;
    int chosen = -1;
    if (want && *want) {
        char *end;
        long idx = strtol(want, &end, 10);
        if (*end == '\0') {
            if (idx < 0 || (uint64_t)idx >= n) {
                mvk_free(ctx, pds);
                return mvk_fail(ctx, MOEVK_ERROR_NO_DEVICE,
                                "device index %ld out of range (%u devices)", idx, n);
            }
            chosen = (int)idx;
        } else {
            for (uint32_t i = 0; i < n && chosen < 0; i++) {
                VkPhysicalDeviceProperties p;
                ctx->vki.vkGetPhysicalDeviceProperties(pds[i], &p);
                if (contains_nocase(p.deviceName, want))
                    chosen = (int)i;
            }
            if (chosen < 0) {
                mvk_free(ctx, pds);
                return mvk_fail(ctx, MOEVK_ERROR_NO_DEVICE, "no device name contains '%s'", want);
            }
        }
    } else {
        int best_rank = 99;
        for (uint32_t i = 0; i < n; i++) {
            VkPhysicalDeviceProperties p;
            ctx->vki.vkGetPhysicalDeviceProperties(pds[i], &p);
            uint32_t fam, ts;
            if (p.apiVersion < VK_API_VERSION_1_1 || !pick_queue_family(ctx, pds[i], &fam, &ts))
                continue;
            int rank = type_rank(p.deviceType);
            if (rank < best_rank) {
                best_rank = rank;
                chosen = (int)i;
            }
        }
        if (chosen < 0) {
            mvk_free(ctx, pds);
            return mvk_fail(ctx, MOEVK_ERROR_NO_DEVICE,
                            "no device with Vulkan 1.1 and a compute queue");
        }
    }
    ctx->phys = pds[chosen];
    mvk_free(ctx, pds);
    return MOEVK_SUCCESS;
}

static moevk_status create_device(moevk_context *ctx)
{
    uint32_t ts_bits = 0;
    if (!pick_queue_family(ctx, ctx->phys, &ctx->queue_family, &ts_bits))
        return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED, "device '%s' has no compute queue",
                        ctx->info.name);
    ctx->info.timestamp_valid_bits = ts_bits;
    ctx->info.timestamps = ctx->info.timestamps || ts_bits > 0;
    if (ts_bits == 0)
        ctx->info.timestamps = 0;
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = ctx->queue_family,
        .queueCount = 1,
        .pQueuePriorities = &prio,
    };
    const char *exts[4];
    uint32_t n_ext = 0;
    if (ctx->info.memory_budget)
        exts[n_ext++] = VK_EXT_MEMORY_BUDGET_EXTENSION_NAME;
    if (ctx->info.external_memory_host)
        exts[n_ext++] = VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME;
    if (ctx->info.push_descriptor)
        exts[n_ext++] = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
    /* matrix units: the extension and the features its kernel needs */
    const bool mu = matrix_units_possible(ctx, ctx->phys, &ctx->info);
    VkPhysicalDeviceCooperativeMatrixFeaturesKHR cm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR,
        .cooperativeMatrix = VK_TRUE};
    VkPhysicalDeviceVulkan12Features v12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = &cm,
        .shaderFloat16 = VK_TRUE, .vulkanMemoryModel = VK_TRUE};
    if (mu)
        exts[n_ext++] = VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME;
    VkDeviceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = mu ? &v12 : NULL,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &qci,
        .enabledExtensionCount = n_ext,
        .ppEnabledExtensionNames = exts,
    };
    VkResult r = MVK_VK(ctx, ctx->vki.vkCreateDevice(ctx->phys, &ci, NULL, &ctx->device));
    if (r != VK_SUCCESS) {
        ctx->device = VK_NULL_HANDLE;
        return mvk_vk_fail(ctx, r, "vkCreateDevice");
    }
    if (mu)
        ctx->mu_kernel = MVK_K_EXPERT_GEMM_MU;
    ctx->owns_device = true;
    moevk_status st = load_device_functions(ctx);
    if (st)
        return st;
    ctx->vk.vkGetDeviceQueue(ctx->device, ctx->queue_family, 0, &ctx->queue);
    return MOEVK_SUCCESS;
}

static moevk_status import_device(moevk_context *ctx, const moevk_vulkan_import *im)
{
    if (!im->get_instance_proc_addr || !im->instance || !im->physical_device || !im->device ||
        !im->queue)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "import: get_instance_proc_addr, instance, physical_device, device and "
                        "queue are all required (one is NULL)");
    memcpy(&ctx->vki.vkGetInstanceProcAddr, &im->get_instance_proc_addr, sizeof(void *));
    ctx->instance = (VkInstance)im->instance;
    ctx->phys = (VkPhysicalDevice)im->physical_device;
    ctx->device = (VkDevice)im->device;
    if (!im->lock_queue != !im->unlock_queue)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "import: lock_queue and unlock_queue must be given together (%s is "
                        "NULL)",
                        im->lock_queue ? "unlock_queue" : "lock_queue");
    ctx->queue = (VkQueue)im->queue;
    ctx->queue_family = im->queue_family_index;
    ctx->queue_index = im->queue_index;
    ctx->lock_queue = im->lock_queue;
    ctx->unlock_queue = im->unlock_queue;
    ctx->queue_lock_user = im->queue_lock_user;
    moevk_status st = load_instance_functions(ctx);
    if (st)
        return st;
    uint32_t n = 0;
    ctx->vki.vkGetPhysicalDeviceQueueFamilyProperties(ctx->phys, &n, NULL);
    VkQueueFamilyProperties q[64];
    n = MVK_MIN(n, 64u);
    ctx->vki.vkGetPhysicalDeviceQueueFamilyProperties(ctx->phys, &n, q);
    if (ctx->queue_family >= n || !(q[ctx->queue_family].queueFlags & VK_QUEUE_COMPUTE_BIT))
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "import: queue_family_index %u is not a compute queue family",
                        ctx->queue_family);
    st = query_device(ctx, ctx->phys, &ctx->info);
    if (st)
        return st;
    ctx->info.timestamp_valid_bits = q[ctx->queue_family].timestampValidBits;
    if (ctx->info.timestamp_valid_bits == 0)
        ctx->info.timestamps = 0;
    ctx->info.imported = 1;
    /* Extensions are the host's choice: use only those it says it enabled. */
    int push = 0, budget = 0, host_mem = 0;
    for (uint32_t i = 0; i < im->num_device_extensions; i++) {
        const char *e = im->device_extensions ? im->device_extensions[i] : NULL;
        push |= e && !strcmp(e, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
        budget |= e && !strcmp(e, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
        host_mem |= e && !strcmp(e, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);
    }
    ctx->info.push_descriptor = ctx->info.push_descriptor && push;
    ctx->info.memory_budget = ctx->info.memory_budget && budget;
    ctx->info.external_memory_host = ctx->info.external_memory_host && host_mem;
    if (matrix_units_possible(ctx, ctx->phys, &ctx->info) && host_enabled_matrix_units(im))
        ctx->mu_kernel = MVK_K_EXPERT_GEMM_MU;
    return load_device_functions(ctx);
}

/* ---- submission objects ---------------------------------------------- */

static moevk_status create_submission(moevk_context *ctx)
{
    VkCommandPoolCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .queueFamilyIndex = ctx->queue_family,
        .flags = VK_COMMAND_POOL_CREATE_TRANSIENT_BIT,
    };
    VkResult r = MVK_VK(ctx, ctx->vk.vkCreateCommandPool(ctx->device, &pci, NULL, &ctx->cmd_pool));
    if (r != VK_SUCCESS) {
        ctx->cmd_pool = VK_NULL_HANDLE;
        return mvk_vk_fail(ctx, r, "vkCreateCommandPool");
    }
    VkCommandBufferAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = ctx->cmd_pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    r = MVK_VK(ctx, ctx->vk.vkAllocateCommandBuffers(ctx->device, &ai, &ctx->cmd));
    if (r != VK_SUCCESS)
        return mvk_vk_fail(ctx, r, "vkAllocateCommandBuffers");
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    r = MVK_VK(ctx, ctx->vk.vkCreateFence(ctx->device, &fci, NULL, &ctx->fence));
    if (r != VK_SUCCESS) {
        ctx->fence = VK_NULL_HANDLE;
        return mvk_vk_fail(ctx, r, "vkCreateFence");
    }
    VkPipelineCacheCreateInfo cci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
    r = MVK_VK(ctx, ctx->vk.vkCreatePipelineCache(ctx->device, &cci, NULL, &ctx->pipeline_cache));
    if (r != VK_SUCCESS) {
        ctx->pipeline_cache = VK_NULL_HANDLE;
        return mvk_vk_fail(ctx, r, "vkCreatePipelineCache");
    }
    /* bound wherever a kernel's input is unused */
    return mvk_buffer_alloc(ctx, 256, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
                            VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, &ctx->dummy, &ctx->dummy_mem);
}

/* ---- public ------------------------------------------------------------ */

static void context_teardown(moevk_context *ctx)
{
    if (ctx->device) {
        /* Our own submissions are always waited for, except one that timed
         * out: give it one more timeout before freeing what it uses. */
        if (ctx->in_flight)
            mvk_wait_before_free(ctx);
        moevk_workspace_destroy(ctx->workspace);
        ctx->workspace = NULL;
        mvk_buffer_free(ctx, ctx->dummy, ctx->dummy_mem);
        mvk_pipelines_destroy(ctx);
        mvk_arena_destroy(ctx, &ctx->arena);
        mvk_staging_release(ctx);
        if (ctx->pipeline_cache)
            ctx->vk.vkDestroyPipelineCache(ctx->device, ctx->pipeline_cache, NULL);
        if (ctx->fence)
            ctx->vk.vkDestroyFence(ctx->device, ctx->fence, NULL);
        if (ctx->cmd_pool)
            ctx->vk.vkDestroyCommandPool(ctx->device, ctx->cmd_pool, NULL);
        if (ctx->owns_device && ctx->vk.vkDestroyDevice)
            ctx->vk.vkDestroyDevice(ctx->device, NULL);
    }
    if (ctx->messenger && ctx->vki.vkDestroyDebugUtilsMessengerEXT)
        ctx->vki.vkDestroyDebugUtilsMessengerEXT(ctx->instance, ctx->messenger, NULL);
    if (ctx->owns_instance && ctx->instance && ctx->vki.vkDestroyInstance)
        ctx->vki.vkDestroyInstance(ctx->instance, NULL);
    if (ctx->loader_lib)
        dlclose(ctx->loader_lib);
}

static moevk_status context_init(moevk_context *ctx, const moevk_context_desc *d)
{
    moevk_status st;
    if (d->import)
        return import_device(ctx, d->import);
    if ((st = load_loader(ctx, d->loader_name)))
        return st;
    load_global_functions(ctx);
    if (!ctx->vki.vkCreateInstance)
        return mvk_fail(ctx, MOEVK_ERROR_NO_VULKAN, "the Vulkan loader has no vkCreateInstance");
    if ((st = create_instance(ctx, d->flags)))
        return st;
    const char *want = d->device && *d->device ? d->device : getenv("MOEVK_DEVICE");
    if ((st = select_device(ctx, want)))
        return st;
    if ((st = query_device(ctx, ctx->phys, &ctx->info)))
        return st;
    if (ctx->info.api_version < VK_API_VERSION_1_1)
        return mvk_fail(ctx, MOEVK_ERROR_UNSUPPORTED, "device '%s' supports only Vulkan 1.0",
                        ctx->info.name);
    return create_device(ctx);
}

static moevk_status creation_error(const moevk_context_desc *d, moevk_status st,
                                   const char *fmt, ...) MVK_PRINTF(3, 4);
static moevk_status creation_error(const moevk_context_desc *d, moevk_status st,
                                   const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (d->error_message && d->error_message_size)
        snprintf(d->error_message, d->error_message_size, "%s", buf);
    if (d->log)
        d->log(d->log_user, MOEVK_LOG_ERROR, buf);
    return st;
}

moevk_status moevk_context_create(const moevk_context_desc *desc, moevk_context **out)
{
    if (!out)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    moevk_context_desc d = {0};
    if (desc)
        d = *desc;
    if (d.error_message && d.error_message_size)
        d.error_message[0] = '\0';
    if (d.flags & ~(uint32_t)(MOEVK_CONTEXT_VALIDATION | MOEVK_CONTEXT_GPU_ASSISTED_VALIDATION))
        return creation_error(&d, MOEVK_ERROR_INVALID_ARGUMENT, "flags 0x%x has unknown bits",
                              d.flags);
    if (d.allocator && (!d.allocator->alloc || !d.allocator->free))
        return creation_error(&d, MOEVK_ERROR_INVALID_ARGUMENT,
                              "allocator: alloc and free must both be set");

    moevk_context proto = {0};
    if (d.allocator)
        proto.alloc = *d.allocator;
    proto.log = d.log;
    proto.log_user = d.log_user;
    proto.log_level = d.log_level;
    moevk_context *ctx = mvk_alloc(&proto, sizeof(*ctx));
    if (!ctx)
        return creation_error(&d, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "context allocation failed");
    *ctx = proto;
    ctx->timeout_ns = (uint64_t)(d.timeout_ms ? d.timeout_ms : MVK_DEFAULT_TIMEOUT_MS) * 1000000ull;

    moevk_status st = context_init(ctx, &d);
    /* GPU-assisted validation (layer 1.3.239) does not track pushed
     * descriptors: it reports them uninitialized and stops the shaders.
     * Bind descriptor sets under it. */
    if (d.flags & MOEVK_CONTEXT_GPU_ASSISTED_VALIDATION) {
        ctx->push_descriptors = false;
        ctx->info.push_descriptor = 0;
    }
    if (st == MOEVK_SUCCESS)
        st = create_submission(ctx);
    if (st != MOEVK_SUCCESS) {
        /* The message would die with ctx: hand it to the caller's buffer. */
        if (d.error_message && d.error_message_size)
            snprintf(d.error_message, d.error_message_size, "%s", ctx->last_error);
        context_teardown(ctx);
        mvk_free(&proto, ctx);
        return st;
    }
    mvk_log(ctx, MOEVK_LOG_INFO, "moevk: using '%s' (%s)", ctx->info.name, ctx->info.driver_name);
    *out = ctx;
    return MOEVK_SUCCESS;
}

void moevk_context_destroy(moevk_context *ctx)
{
    if (!ctx)
        return;
    /* Destroying a context another thread is inside would free what that
     * thread uses: refuse (a misuse; the context stays, and is freed by a
     * later destroy). */
    if (mvk_enter(ctx))
        return;
    context_teardown(ctx);
    moevk_context proto = *ctx;
    mvk_free(&proto, ctx);
}

const moevk_device_info *moevk_context_device_info(const moevk_context *ctx)
{
    return ctx ? &ctx->info : NULL;
}

moevk_status moevk_enumerate_devices(const moevk_context_desc *desc, moevk_device_info *infos,
                                     uint32_t capacity, uint32_t *count)
{
    if (!count || (capacity && !infos))
        return MOEVK_ERROR_INVALID_ARGUMENT;
    *count = 0;
    moevk_context_desc d = {0};
    if (desc)
        d = *desc;
    moevk_context proto = {0};
    if (d.allocator)
        proto.alloc = *d.allocator;
    proto.log = d.log;
    proto.log_user = d.log_user;
    proto.log_level = d.log_level;
    moevk_context *ctx = &proto;
    moevk_status st = load_loader(ctx, d.loader_name);
    if (!st) {
        load_global_functions(ctx);
        st = create_instance(ctx, d.flags);
    }
    VkPhysicalDevice *pds = NULL;
    uint32_t n = 0;
    if (!st)
        st = enumerate(ctx, &pds, &n);
    for (uint32_t i = 0; !st && i < n; i++) {
        if (i < capacity) {
            st = query_device(ctx, pds[i], &infos[i]);
            uint32_t fam, ts = 0;
            if (!st && pick_queue_family(ctx, pds[i], &fam, &ts)) {
                infos[i].timestamp_valid_bits = ts;
                if (!ts)
                    infos[i].timestamps = 0;
            }
        }
    }
    if (!st)
        *count = n;
    mvk_free(ctx, pds);
    context_teardown(ctx);
    return st;
}
