/*
 * The smallest program that uses an installed moevk: builds with
 *   cc consumer.c $(pkg-config --cflags --libs moevk)
 * and runs the router on the default device when one exists.
 */
#include <stdio.h>

#include <moevk/moevk.h>

int main(void)
{
    printf("moevk %d.%d.%d\n", MOEVK_VERSION_MAJOR, MOEVK_VERSION_MINOR, MOEVK_VERSION_PATCH);
    moevk_context *ctx = NULL;
    char err[256] = "";
    moevk_context_desc desc = {.error_message = err, .error_message_size = sizeof(err)};
    moevk_status st = moevk_context_create(&desc, &ctx);
    if (st != MOEVK_SUCCESS) {
        printf("no context: %s (%s)\n", moevk_status_string(st), err);
        return st == MOEVK_ERROR_NO_VULKAN || st == MOEVK_ERROR_NO_DEVICE ? 0 : 1;
    }
    printf("device: %s\n", moevk_context_device_info(ctx)->name);

    /* logits[1, 2] = x[1, 3] . w[2, 3]^T */
    const float x[3] = {1, 2, 3}, w[6] = {1, 0, 0, 0, 0, 1};
    float logits[2] = {0};
    uint64_t sx[2] = {1, 3}, sw[2] = {2, 3}, sl[2] = {1, 2};
    moevk_tensor tx, tw, tl;
    int ok = !moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sx, &tx) &&
             !moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sw, &tw) &&
             !moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sl, &tl) &&
             !moevk_tensor_upload(&tx, x) && !moevk_tensor_upload(&tw, w) &&
             !moevk_router_logits(ctx, &tx, &tw, NULL, &tl) &&
             !moevk_tensor_download(&tl, logits);
    printf("logits: %g %g\n", logits[0], logits[1]);
    ok = ok && logits[0] == 1.0f && logits[1] == 3.0f;
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&tw);
    moevk_tensor_destroy(&tl);
    moevk_context_destroy(ctx);
    printf("%s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
