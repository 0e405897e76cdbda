/*
 * Buffers and tensors: round trips of odd sizes and offsets, chunked
 * transfers, fills, limits and bad arguments.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

Test(buffer, round_trip_odd_sizes_and_offsets)
{
    moevk_context *ctx = mvkt_context();
    uint64_t seed = mvkt_base_seed();
    mvkt_rng r = mvkt_rng_make(seed);
    for (int iter = 0; iter < 20; iter++) {
        uint64_t size = mvkt_range(&r, 1, 100000);
        uint64_t off = mvkt_range(&r, 0, (uint32_t)size - 1);
        uint64_t n = mvkt_range(&r, 0, (uint32_t)(size - off));
        moevk_buffer *b;
        cr_assert_eq(moevk_buffer_create(ctx, size, &b), MOEVK_SUCCESS);
        cr_assert_eq(moevk_buffer_size(b), size);
        uint8_t *src = malloc(n + 1), *dst = malloc(n + 1);
        for (uint64_t i = 0; i < n; i++)
            src[i] = (uint8_t)mvkt_next(&r);
        memset(dst, 0xcd, n + 1);
        cr_assert_eq(moevk_buffer_upload(b, off, src, n), MOEVK_SUCCESS);
        cr_assert_eq(moevk_buffer_download(b, off, dst, n), MOEVK_SUCCESS);
        cr_assert(memcmp(src, dst, n) == 0, "seed %llu: round trip differs (size %llu off %llu)",
                  (unsigned long long)seed, (unsigned long long)size, (unsigned long long)off);
        cr_assert_eq(dst[n], 0xcd, "download wrote past its end");
        free(src);
        free(dst);
        moevk_buffer_destroy(b);
    }
    mvkt_context_end(ctx);
}

Test(buffer, transfers_larger_than_staging)
{
    moevk_context *ctx = mvkt_context();
    const uint64_t n = (40ull << 20) + 12; /* crosses the 16 MiB staging size twice */
    uint32_t *src = malloc(n), *dst = malloc(n);
    for (uint64_t i = 0; i < n / 4; i++)
        src[i] = (uint32_t)(i * 2654435761u);
    moevk_buffer *b;
    cr_assert_eq(moevk_buffer_create(ctx, n, &b), MOEVK_SUCCESS);
    cr_assert_eq(moevk_buffer_upload(b, 0, src, n), MOEVK_SUCCESS);
    cr_assert_eq(moevk_buffer_download(b, 0, dst, n), MOEVK_SUCCESS);
    cr_assert(memcmp(src, dst, n) == 0);
    /* fill a window and read it back */
    cr_assert_eq(moevk_buffer_fill(b, 1024, 4096, 0xdeadbeefu), MOEVK_SUCCESS);
    cr_assert_eq(moevk_buffer_download(b, 0, dst, 8192), MOEVK_SUCCESS);
    for (int i = 0; i < 2048; i++) {
        uint32_t want = (i >= 256 && i < 1280) ? 0xdeadbeefu : src[i];
        cr_assert_eq(dst[i], want, "word %d", i);
    }
    moevk_buffer_destroy(b);
    free(src);
    free(dst);
    mvkt_context_end(ctx);
}

Test(buffer, limits_and_bad_arguments)
{
    moevk_context *ctx = mvkt_context();
    const moevk_device_info *info = moevk_context_device_info(ctx);
    moevk_buffer *b = (moevk_buffer *)0x1;
    cr_assert_eq(moevk_buffer_create(ctx, 0, &b), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_null(b);
    cr_assert(strstr(moevk_context_last_error(ctx), "size"));
    cr_assert_eq(moevk_buffer_create(ctx, info->max_storage_buffer_range + 1, &b),
                 MOEVK_ERROR_LIMIT_EXCEEDED);
    cr_assert(strstr(moevk_context_last_error(ctx), "maxStorageBufferRange"), "%s",
              moevk_context_last_error(ctx));
    cr_assert_eq(moevk_buffer_create(ctx, 64, NULL), MOEVK_ERROR_INVALID_ARGUMENT);

    cr_assert_eq(moevk_buffer_create(ctx, 64, &b), MOEVK_SUCCESS);
    uint8_t tmp[128] = {0};
    cr_assert_eq(moevk_buffer_upload(b, 60, tmp, 8), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "outside"));
    cr_assert_eq(moevk_buffer_download(b, 65, tmp, 0), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_buffer_download(b, 0, NULL, 4), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_buffer_fill(b, 2, 4, 0), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(moevk_buffer_upload(b, UINT64_MAX - 2, tmp, 8), MOEVK_ERROR_INVALID_ARGUMENT);

    /* tensor shapes and dtypes */
    moevk_tensor t;
    uint64_t shape[3] = {4, 0, 2};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 3, shape, &t),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "shape[1]"), "%s",
              moevk_context_last_error(ctx));
    shape[1] = 3;
    cr_assert_eq(moevk_tensor_create(ctx, (moevk_dtype)9, 3, shape, &t),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "dtype"));
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 9, shape, &t),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    uint64_t huge[2] = {1ull << 40, 1ull << 30};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, huge, &t),
                 MOEVK_ERROR_LIMIT_EXCEEDED);
    /* a view that does not fit its buffer */
    moevk_tensor view = {.buffer = b, .offset = 32, .dtype = MOEVK_DTYPE_F32, .ndim = 1,
                         .shape = {9}};
    cr_assert_eq(moevk_tensor_upload(&view, tmp), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "do not fit"));
    view.shape[0] = 8;
    cr_assert_eq(moevk_tensor_upload(&view, tmp), MOEVK_SUCCESS);
    view.offset = 2;
    cr_assert_eq(moevk_tensor_upload(&view, tmp), MOEVK_ERROR_INVALID_ARGUMENT);
    moevk_buffer_destroy(b);
    /* the context is still usable after all those errors */
    cr_assert_eq(moevk_buffer_create(ctx, 64, &b), MOEVK_SUCCESS);
    cr_assert_eq(moevk_buffer_fill(b, 0, 64, 7), MOEVK_SUCCESS);
    moevk_buffer_destroy(b);
    mvkt_context_end(ctx);
}

Test(buffer, tensor_ndim_out_of_range)
{
    moevk_context *ctx = mvkt_context();
    moevk_tensor t;
    uint64_t shape[1] = {16};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 1, shape, &t), 0);
    float tmp[16] = {0};
    moevk_tensor bad = t;
    bad.ndim = 1000;
    cr_assert_eq(moevk_tensor_upload(&bad, tmp), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(moevk_context_last_error(ctx), "ndim"), "%s", moevk_context_last_error(ctx));
    moevk_tensor_destroy(&t);
    mvkt_context_end(ctx);
}
