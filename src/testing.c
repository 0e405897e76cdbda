/*
 * Test knobs: deterministic fault injection and a live-object count.
 */
#include "testing.h"
#include "internal.h"

void moevk_testing_fail_after(moevk_context *ctx, int64_t n)
{
    if (ctx)
        ctx->fault_countdown = n > 0 ? n : 0;
}

int64_t moevk_testing_live_objects(const moevk_context *ctx)
{
    return ctx ? ctx->live_objects : 0;
}
