/*
 * moevk info: every Vulkan device and the capabilities moevk records.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "util/tool.h"

static const char *type_name(uint32_t t)
{
    static const char *const names[] = {"other", "integrated GPU", "discrete GPU",
                                        "virtual GPU", "CPU"};
    return t < 5 ? names[t] : "unknown";
}

static void print_device(uint32_t i, const moevk_device_info *d)
{
    printf("device %u: %s\n", i, d->name);
    printf("  type                      %s\n", type_name(d->device_type));
    printf("  vendor:device             0x%04x:0x%04x\n", d->vendor_id, d->device_id);
    printf("  Vulkan                    %u.%u.%u\n", d->api_version >> 22,
           (d->api_version >> 12) & 0x3ff, d->api_version & 0xfff);
    printf("  driver                    %s (%s)\n", d->driver_name, d->driver_info);
    printf("  subgroup size             %u (min %u, max %u)\n", d->subgroup_size,
           d->min_subgroup_size, d->max_subgroup_size);
    printf("  shared memory             %u bytes\n", d->max_shared_memory);
    printf("  workgroup invocations     %u\n", d->max_workgroup_invocations);
    printf("  workgroup count           %u x %u x %u\n", d->max_workgroup_count[0],
           d->max_workgroup_count[1], d->max_workgroup_count[2]);
    printf("  push constants            %u bytes\n", d->max_push_constants);
    printf("  maxStorageBufferRange     %llu bytes\n",
           (unsigned long long)d->max_storage_buffer_range);
    printf("  maxMemoryAllocationSize   %llu bytes\n", (unsigned long long)d->max_allocation_size);
    printf("  maxMemoryAllocationCount  %u\n", d->max_allocation_count);
    printf("  device-local memory       %.2f GiB\n", d->device_local_bytes / 1073741824.0);
    printf("  fp16 arithmetic           %s\n", d->fp16_arith ? "yes" : "no");
    printf("  int8 arithmetic           %s\n", d->int8_arith ? "yes" : "no");
    printf("  16-bit storage            %s\n", d->storage_16bit ? "yes" : "no");
    printf("  8-bit storage             %s\n", d->storage_8bit ? "yes" : "no");
    printf("  bf16 (KHR_shader_bfloat16) %s\n", d->bf16 ? "yes" : "no");
    printf("  cooperative matrix        %s\n", d->cooperative_matrix ? "yes" : "no");
    if (d->cooperative_matrix) {
        /* whether moevk uses them: a context on the device runs the self-check */
        char idx[16];
        snprintf(idx, sizeof idx, "%u", i);
        moevk_context_desc cd = {.device = idx, .log = mvk_tool_log,
                                 .log_level = MOEVK_LOG_WARN};
        moevk_context *ctx = NULL;
        int mu = 0;
        if (moevk_context_create(&cd, &ctx) == MOEVK_SUCCESS &&
            moevk_context_self_check(ctx) == MOEVK_SUCCESS)
            mu = moevk_context_device_info(ctx)->matrix_units;
        moevk_context_destroy(ctx);
        printf("  matrix units (experts)    %s\n",
               mu > 0   ? "cooperative matrices, self-check passed"
               : mu < 0 ? "off: the self-check disagreed with the portable kernel"
                        : "not used (this build, shape, subgroup size or features)");
    }
    printf("  memory budget ext         %s\n", d->memory_budget ? "yes" : "no");
    if (d->timestamps)
        printf("  timestamps                yes (%.3f ns/tick, %u valid bits)\n",
               d->timestamp_period_ns, d->timestamp_valid_bits);
    else
        printf("  timestamps                no\n");
}

int cli_info(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: moevk info\n  Lists every Vulkan device with its capabilities.\n");
            return 0;
        }
        fprintf(stderr, "moevk info: unknown option '%s'\n", argv[i]);
        return 2;
    }
    moevk_device_info infos[16];
    uint32_t n = 0;
    moevk_context_desc d = {.log = mvk_tool_log, .log_level = MOEVK_LOG_ERROR};
    moevk_status st = moevk_enumerate_devices(&d, infos, 16, &n);
    if (st) {
        fprintf(stderr, "moevk info: %s\n", moevk_status_string(st));
        return 1;
    }
    printf("%u Vulkan device%s\n", n, n == 1 ? "" : "s");
    for (uint32_t i = 0; i < n && i < 16; i++)
        print_device(i, &infos[i]);
    return 0;
}
