/*
 * API contract tests that need no GPU: status names, dtypes, NULL handling,
 * desc validation, the "no Vulkan loader" path.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "common.h"

Test(api, status_strings_are_distinct)
{
    for (int a = MOEVK_ERROR_INTERNAL; a <= 0; a++)
        for (int b = a + 1; b <= 0; b++)
            cr_assert_str_neq(moevk_status_string((moevk_status)a),
                              moevk_status_string((moevk_status)b));
    cr_assert_str_eq(moevk_status_string(MOEVK_ERROR_INVALID_ARGUMENT),
                     "MOEVK_ERROR_INVALID_ARGUMENT");
    cr_assert_str_eq(moevk_status_string((moevk_status)-999), "unknown moevk_status");
}

Test(api, dtypes)
{
    cr_assert_eq(moevk_dtype_size(MOEVK_DTYPE_F32), 4);
    cr_assert_eq(moevk_dtype_size(MOEVK_DTYPE_F16), 2);
    cr_assert_eq(moevk_dtype_size(MOEVK_DTYPE_BF16), 2);
    cr_assert_eq(moevk_dtype_size((moevk_dtype)7), 0);
    cr_assert_str_eq(moevk_dtype_name(MOEVK_DTYPE_BF16), "bf16");
}

Test(api, tensor_bytes_checks_shape)
{
    moevk_tensor t = {.dtype = MOEVK_DTYPE_F16, .ndim = 2, .shape = {3, 5}};
    cr_assert_eq(moevk_tensor_bytes(&t), 30);
    t.ndim = 0;
    cr_assert_eq(moevk_tensor_bytes(&t), 0);
    t.ndim = 5;
    cr_assert_eq(moevk_tensor_bytes(&t), 0);
    moevk_tensor big = {.dtype = MOEVK_DTYPE_F32, .ndim = 3,
                        .shape = {1ull << 31, 1ull << 31, 1ull << 31}};
    cr_assert_eq(moevk_tensor_bytes(&big), 0, "an overflowing shape must report 0 bytes");
    cr_assert_eq(moevk_tensor_bytes(NULL), 0);
}

Test(api, null_handles_are_safe)
{
    moevk_context_destroy(NULL);
    moevk_buffer_destroy(NULL);
    moevk_tensor_destroy(NULL);
    cr_assert_eq(moevk_buffer_size(NULL), 0);
    cr_assert_null(moevk_context_device_info(NULL));
    cr_assert_eq(moevk_context_validation_messages(NULL), 0);
    cr_assert_eq(moevk_context_create(NULL, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_router_logits(NULL, NULL, NULL, NULL, NULL), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_buffer_upload(NULL, 0, NULL, 0), MOEVK_ERROR_INVALID_ARGUMENT);
    uint32_t n;
    cr_assert_eq(moevk_enumerate_devices(NULL, NULL, 1, &n), MOEVK_ERROR_INVALID_ARGUMENT);
}

Test(api, bad_desc_fields_name_the_field)
{
    char err[256];
    moevk_context *ctx = (moevk_context *)0x1;
    moevk_context_desc d = {.flags = 0x80, .error_message = err, .error_message_size = sizeof(err)};
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_null(ctx, "a failed create must set the handle to NULL");
    cr_assert(strstr(err, "flags"), "message '%s' should name 'flags'", err);

    moevk_allocator half = {.alloc = NULL, .free = NULL};
    moevk_context_desc d2 = {.allocator = &half, .error_message = err,
                             .error_message_size = sizeof(err)};
    cr_assert_eq(moevk_context_create(&d2, &ctx), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(err, "allocator"), "message '%s' should name 'allocator'", err);
}

Test(api, missing_loader_is_reported)
{
    char err[256];
    moevk_context *ctx = NULL;
    moevk_context_desc d = {.loader_name = "libmoevk-no-such-vulkan-loader.so",
                            .error_message = err, .error_message_size = sizeof(err)};
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_ERROR_NO_VULKAN);
    cr_assert_null(ctx);
    cr_assert(strstr(err, "libmoevk-no-such-vulkan-loader.so"), "message: %s", err);
    uint32_t n = 99;
    cr_assert_eq(moevk_enumerate_devices(&d, NULL, 0, &n), MOEVK_ERROR_NO_VULKAN);
    cr_assert_eq(n, 0);
}

Test(api, import_requires_every_handle)
{
    char err[256];
    moevk_vulkan_import im = {.instance = (void *)1};
    moevk_context *ctx = NULL;
    moevk_context_desc d = {.import = &im, .error_message = err, .error_message_size = sizeof(err)};
    cr_assert_eq(moevk_context_create(&d, &ctx), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_null(ctx);
    cr_assert(strstr(err, "import"), "message: %s", err);
}

/* Host allocator hooks: every byte moevk takes goes through them and comes
 * back. Runs on a device when there is one, else checks the failure path. */
typedef struct { long live; long calls; } alloc_stats;
static void *count_alloc(void *user, size_t size, size_t align)
{
    alloc_stats *s = user;
    (void)align;
    s->live++;
    s->calls++;
    return malloc(size);
}
static void count_free(void *user, void *p)
{
    alloc_stats *s = user;
    if (p)
        s->live--;
    free(p);
}

Test(api, allocator_hooks_balance)
{
    alloc_stats s = {0};
    moevk_allocator a = {count_alloc, count_free, &s};
    moevk_context_desc d = {.allocator = &a};
    moevk_context *ctx = NULL;
    moevk_status st = moevk_context_create(&d, &ctx);
    if (st == MOEVK_SUCCESS) {
        moevk_tensor t;
        uint64_t shape[1] = {100};
        cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 1, shape, &t), MOEVK_SUCCESS);
        moevk_tensor_destroy(&t);
        moevk_context_destroy(ctx);
    }
    cr_assert_gt(s.calls, 0, "the allocator hooks were never called");
    cr_assert_eq(s.live, 0, "%ld allocations leaked", s.live);
}

Test(api, desc_check_without_a_context)
{
    static const float w[4];
    moevk_layer_desc d = {.hidden = 4, .ffn = 4, .num_experts = 3, .top_k = 4,
                          .router_weight = w, .experts = {.gate = w, .up = w, .down = w}};
    char msg[256] = "x";
    cr_assert_eq(moevk_layer_desc_check(&d, msg, sizeof msg), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(msg, "top_k"), "message: %s", msg);
    d.top_k = 2;
    cr_assert_eq(moevk_layer_desc_check(&d, msg, sizeof msg), MOEVK_SUCCESS);
    cr_assert_str_eq(msg, "");
    cr_assert_eq(moevk_layer_desc_check(NULL, NULL, 0), MOEVK_ERROR_INVALID_ARGUMENT);
}
