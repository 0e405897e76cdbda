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

#endif
