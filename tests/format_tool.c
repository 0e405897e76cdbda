/*
 * The library's reference decoders (and quantisers) on the command line,
 * for tests/test_formats.py, which compares them with gguf-py:
 *   format_tool decode FORMAT < blocks > floats (little-endian f32)
 *   format_tool quantize FORMAT < floats > blocks
 *   format_tool validate FORMAT < blocks     (exit 0 valid, 1 refused)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "quantize.h"

static void *read_all(size_t *n)
{
    size_t cap = 1 << 20, len = 0;
    unsigned char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len, stdin)) > 0) {
        len += r;
        if (len == cap) {
            unsigned char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                return NULL;
            }
            buf = b;
            cap *= 2;
        }
    }
    *n = len;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return fprintf(stderr, "usage: format_tool decode|quantize|validate FORMAT\n"), 2;
    int dt = moevk_dtype_from_name(argv[2]);
    const mvk_format *f = dt >= 0 ? mvk_format_get((moevk_dtype)dt) : NULL;
    if (!f || !f->decode)
        return fprintf(stderr, "format_tool: unknown format %s\n", argv[2]), 2;
    size_t n;
    unsigned char *in = read_all(&n);
    if (!in)
        return fprintf(stderr, "format_tool: out of memory\n"), 2;
    int rc = 0;
    if (strcmp(argv[1], "decode") == 0) {
        size_t blocks = n / f->block_bytes;
        float *out = malloc(sizeof(float) * blocks * f->block_elems + 1);
        f->decode(in, blocks, out);
        fwrite(out, sizeof(float), blocks * f->block_elems, stdout);
        free(out);
    } else if (strcmp(argv[1], "quantize") == 0) {
        size_t elems = n / sizeof(float);
        uint64_t bytes = mvk_format_row_bytes((moevk_dtype)dt, elems);
        unsigned char *out = malloc(bytes + 1);
        if (!bytes || mvk_quantize_row((moevk_dtype)dt, (const float *)in, elems, out)) {
            fprintf(stderr, "format_tool: cannot quantise %zu elements to %s\n", elems, argv[2]);
            rc = 1;
        } else {
            fwrite(out, 1, bytes, stdout);
        }
        free(out);
    } else if (strcmp(argv[1], "validate") == 0) {
        uint64_t bad = 0;
        rc = mvk_format_validate((moevk_dtype)dt, in, n / f->block_bytes, &bad) ? 0 : 1;
    } else {
        rc = 2;
    }
    free(in);
    return rc;
}
