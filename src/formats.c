/*
 * The weight-format table (formats.h) and its reference decoders.
 */
#include "formats.h"

#include <string.h>

#include "interface.h"
#include "ref/ref.h"

static void decode_f32(const void *src, size_t n, float *dst)
{
    memcpy(dst, src, n * sizeof(float));
}

static void decode_f16(const void *src, size_t n, float *dst)
{
    const uint16_t *h = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = moevk_half_to_float(h[i]);
}

static void decode_bf16(const void *src, size_t n, float *dst)
{
    const uint16_t *h = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = moevk_bf16_to_float(h[i]);
}

static const mvk_format formats[] = {
    {MOEVK_DTYPE_F32, "f32", 1, 4, MVK_FORMAT_EXPERT | MVK_FORMAT_ROUTER, MVK_WFMT_F32,
     decode_f32},
    {MOEVK_DTYPE_F16, "f16", 1, 2, MVK_FORMAT_EXPERT | MVK_FORMAT_ROUTER, MVK_WFMT_F16,
     decode_f16},
    {MOEVK_DTYPE_BF16, "bf16", 1, 2, MVK_FORMAT_EXPERT | MVK_FORMAT_ROUTER, MVK_WFMT_BF16,
     decode_bf16},
    {MOEVK_DTYPE_I32, "i32", 1, 4, MVK_FORMAT_INDEX, 0, NULL},
};

const mvk_format *mvk_format_get(moevk_dtype dtype)
{
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        if (formats[i].dtype == dtype)
            return &formats[i];
    return NULL;
}

uint32_t mvk_formats_mask(uint32_t uses)
{
    uint32_t m = 0;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        if (formats[i].uses & uses)
            m |= 1u << formats[i].dtype;
    return m;
}

uint64_t mvk_format_row_bytes(moevk_dtype dtype, uint64_t elems)
{
    const mvk_format *f = mvk_format_get(dtype);
    if (!f || elems % f->block_elems)
        return 0;
    return elems / f->block_elems * f->block_bytes;
}

void mvk_format_decode(moevk_dtype dtype, const void *src, uint64_t first, uint64_t elems,
                       float *dst)
{
    const mvk_format *f = mvk_format_get(dtype);
    const uint8_t *s = (const uint8_t *)src + first / f->block_elems * f->block_bytes;
    f->decode(s, (size_t)(elems / f->block_elems), dst);
}

size_t moevk_dtype_size(moevk_dtype dtype)
{
    const mvk_format *f = mvk_format_get(dtype);
    return f && f->block_elems == 1 ? f->block_bytes : 0;
}

const char *moevk_dtype_name(moevk_dtype dtype)
{
    const mvk_format *f = mvk_format_get(dtype);
    return f ? f->name : "unknown";
}
