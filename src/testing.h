/*
 * Test knobs, linked only by the tests (through the static library).
 */
#ifndef MOEVK_TESTING_H
#define MOEVK_TESTING_H

#include <stdint.h>

#include "moevk/moevk.h"

/* Make the n-th following fallible operation of this context fail (a host
 * allocation returns NULL, a Vulkan call returns OUT_OF_DEVICE_MEMORY);
 * 0 disables. */
void moevk_testing_fail_after(moevk_context *ctx, int64_t n);
/* Host allocations plus device buffers currently alive in the context. */
int64_t moevk_testing_live_objects(const moevk_context *ctx);

/* Make one invalid Vulkan call, to show that validation messages are seen. */
void moevk_testing_provoke_validation(moevk_context *ctx);

/* Pretend storage buffers hold at most `bytes` (0 = the device's limit), so
 * small layers exercise weight chunking. Affects layers created afterwards. */
void moevk_testing_set_max_buffer_range(moevk_context *ctx, uint64_t bytes);

/* Pretend per-pass buffers (a workspace's) hold at most `bytes` (0 = the
 * device's limit), so small passes exercise the token chunking that large
 * ones need. Affects workspaces sized afterwards. */
void moevk_testing_set_scratch_range(moevk_context *ctx, uint64_t bytes);

/* Use push descriptors (on = 1, where the device has them) or descriptor
 * sets (on = 0) from now on. */
moevk_status moevk_testing_set_push_descriptors(moevk_context *ctx, int on);

/* Enter (hold = 1) or leave (hold = 0) the context as a public call does,
 * to test the detection of a second thread. Returns 1 on success. */
int moevk_testing_hold_context(moevk_context *ctx, int hold);

/* Run every expert (routed and shared) on kernel path `path` (0 skinny,
 * 1 small tiles, 2 large tiles; shaders/interface.h MVK_PATH_*), or choose
 * by row count as usual (-1). The results must not change. */
moevk_status moevk_testing_force_path(moevk_context *ctx, int path);

/* Matrix units for the 64-row tiles: 0 none (as the device has), 1 the
 * emulated kernel (src/matrix.c; its self-check runs now), 2 the same
 * with a planted self-check failure (the portable kernel stays). */
moevk_status moevk_testing_matrix_units(moevk_context *ctx, int mode);

/* VK_EXT_memory_budget's heapUsage of memory heap `heap` (UNSUPPORTED on
 * a device without the extension). */
moevk_status moevk_testing_heap_usage(moevk_context *ctx, uint32_t heap, uint64_t *usage);
/* The heaps of a layer's routed-expert memory: its device slots (or all
 * experts without a budget) and its host copy (UINT32_MAX if none). */
void moevk_testing_expert_heaps(const moevk_layer *layer, uint32_t *device_heap,
                                uint32_t *host_heap);

#endif
