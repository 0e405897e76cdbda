/*
 * GGUF files: the reader's checks (one malformed file per rule, each
 * refused with the status and a message naming the problem), split models,
 * the block loader's refusals, and `moevk run --model FILE.gguf` on the
 * fixtures of tests/gguf (one per architecture, written by gguf-py, with
 * the float64 output numpy computed from gguf-py's dequantised weights
 * following llama.cpp's maths) on the CPU reference and the Vulkan device.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "expected.h"
#include "formats.h"
#include "model/gguf.h"
#include "model/gguf_layer.h"
#include "model/safetensors.h"

/* ---- a GGUF writer for hand-made files ------------------------------------- */

typedef struct gb {
    uint8_t *p;
    size_t n, cap;
} gb;

static void gb_raw(gb *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void gb_u32(gb *b, uint32_t v)
{
    gb_raw(b, &v, 4);
}

static void gb_u64(gb *b, uint64_t v)
{
    gb_raw(b, &v, 8);
}

static void gb_str(gb *b, const char *s)
{
    gb_u64(b, strlen(s));
    gb_raw(b, s, strlen(s));
}

/* KV pairs, encoded into one buffer; counted. */
typedef struct kvs {
    gb b;
    uint64_t n;
} kvs;

static void kv_u32(kvs *k, const char *key, uint32_t v)
{
    gb_str(&k->b, key);
    gb_u32(&k->b, 4);
    gb_u32(&k->b, v);
    k->n++;
}

static void kv_f32(kvs *k, const char *key, float v)
{
    gb_str(&k->b, key);
    gb_u32(&k->b, 6);
    gb_raw(&k->b, &v, 4);
    k->n++;
}

static void kv_string(kvs *k, const char *key, const char *v)
{
    gb_str(&k->b, key);
    gb_u32(&k->b, 8);
    gb_str(&k->b, v);
    k->n++;
}

typedef struct tinfo {
    const char *name;
    uint32_t ndim;
    uint64_t ne[8]; /* more than GGUF allows, for the cases with too many dims */
    uint32_t type;
    uint64_t offset; /* UINT64_MAX: the next aligned offset */
} tinfo;

/* ggml type ids used here */
enum { F32 = 0, F16 = 1, Q8_0 = 8, IQ2_XXS = 16, Q4_0 = 2 };

static uint64_t tbytes(const tinfo *t)
{
    uint64_t n = 1;
    for (uint32_t d = 1; d < t->ndim; d++)
        n *= t->ne[d];
    const uint32_t be = mvk_gguf_type_block_elems(t->type);
    return be ? t->ne[0] / be * mvk_gguf_type_block_bytes(t->type) * n : 0; /* unknown: 0 */
}

/* A whole file: header (counts as given, or the real ones when
 * nkv/ntensors are UINT64_MAX), the KVs, the tensor infos, padding to
 * `align`, and each tensor's bytes (value 0x11: q8_0 scales of a small
 * finite f16, f32 words that are finite). */
static gb gguf_file(uint32_t version, const kvs *k, const tinfo *t, size_t nt, uint32_t align,
                    uint64_t nkv, uint64_t ntensors)
{
    gb b = {0};
    gb_raw(&b, "GGUF", 4);
    gb_u32(&b, version);
    gb_u64(&b, ntensors == UINT64_MAX ? nt : ntensors);
    gb_u64(&b, nkv == UINT64_MAX ? (k ? k->n : 0) : nkv);
    if (k && k->b.n)
        gb_raw(&b, k->b.p, k->b.n);
    uint64_t off = 0, end = 0;
    uint64_t offs[16];
    for (size_t i = 0; i < nt; i++) {
        offs[i] = t[i].offset == UINT64_MAX ? off : t[i].offset;
        gb_str(&b, t[i].name);
        gb_u32(&b, t[i].ndim);
        for (uint32_t d = 0; d < t[i].ndim; d++)
            gb_u64(&b, t[i].ne[d]);
        gb_u32(&b, t[i].type);
        gb_u64(&b, offs[i]);
        uint64_t nb = tbytes(&t[i]);
        off = offs[i] + nb;
        off += (align - off % align) % align;
        if (offs[i] + nb > end)
            end = offs[i] + nb;
    }
    while (b.n % align)
        gb_raw(&b, "", 1);
    /* data beyond 1 MiB (sizes that overflow, offsets far out) is left out */
    for (uint64_t i = 0; i < end && end <= (1u << 20); i++)
        gb_raw(&b, "\x11", 1);
    return b;
}

/* Parse bytes; expect status st and (when st) a message holding `frag`. */
static void expect(const gb *b, moevk_status st, const char *frag)
{
    mvk_gguf_file f;
    char err[1024] = "";
    moevk_status got = mvk_gguf_parse(b->p, b->n, "t.gguf", &f, err, sizeof err);
    cr_assert_eq(got, st, "status %d, expected %d (message: %s)", got, st, err);
    if (st) {
        cr_assert(strstr(err, frag), "message '%s' lacks '%s'", err, frag);
        cr_assert(strstr(err, "t.gguf"), "message '%s' does not name the file", err);
    } else {
        mvk_gguf_close_file(&f);
    }
}

static const tinfo one_q8 = {"w", 2, {64, 2}, Q8_0, UINT64_MAX};

Test(gguf, a_valid_file_is_read)
{
    kvs k = {0};
    kv_string(&k, "general.architecture", "llama");
    kv_u32(&k, "general.alignment", 64);
    kv_f32(&k, "llama.expert_weights_scale", 2.5f);
    tinfo t[2] = {{"b", 1, {8}, F32, UINT64_MAX}, {"a", 3, {64, 3, 2}, Q8_0, UINT64_MAX}};
    gb b = gguf_file(3, &k, t, 2, 64, UINT64_MAX, UINT64_MAX);
    mvk_gguf_file f;
    char err[512];
    cr_assert_eq(mvk_gguf_parse(b.p, b.n, "t.gguf", &f, err, sizeof err), 0, "%s", err);
    cr_assert_eq(f.version, 3);
    cr_assert_eq(f.alignment, 64);
    cr_assert_eq(f.data_offset % 64, 0);
    cr_assert_eq(f.ntensors, 2);
    const mvk_gguf_tensor *a = mvk_gguf_file_find(&f, "a"), *bt = mvk_gguf_file_find(&f, "b");
    cr_assert(a && bt);
    cr_assert_eq(a->nbytes, 2 * 34 * 3 * 2);
    cr_assert_eq(a->dtype, MOEVK_DTYPE_Q8_0);
    cr_assert_eq(bt->offset, 0);
    cr_assert_eq(a->offset, 64); /* after the 32 bytes of b, padded to 64 */
    cr_assert_eq(a->data, b.p + f.data_offset + a->offset);
    double s;
    cr_assert_eq(mvk_gguf_get_float(&f, "llama.expert_weights_scale", 0, &s, err, sizeof err), 1);
    cr_assert_float_eq(s, 2.5, 1e-9);
    uint64_t u;
    cr_assert_eq(mvk_gguf_get_uint(&f, "general.architecture", 9, 0, &u, err, sizeof err), -1);
    cr_assert(strstr(err, "general.architecture has type string"), "%s", err);
    mvk_gguf_close_file(&f);
    free(b.p);
    free(k.b.p);
    /* version 2 reads the same */
    b = gguf_file(2, NULL, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX);
    expect(&b, MOEVK_SUCCESS, NULL);
    free(b.p);
}

Test(gguf, header_rules)
{
    gb b = gguf_file(3, NULL, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX);
    b.p[0] = 'X';
    expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, "not a GGUF file");
    free(b.p);
    const uint32_t versions[] = {1, 4, 0x03000000};
    const char *frags[] = {"version 1 (32-bit counts)", "version 4 is not supported",
                           "big-endian"};
    for (int i = 0; i < 3; i++) {
        b = gguf_file(versions[i], NULL, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX);
        expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, frags[i]);
        free(b.p);
    }
    b = gguf_file(3, NULL, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX);
    b.n = 12;
    expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, "header is cut off");
    free(b.p);
    /* counts checked against the size before anything is allocated */
    b = gguf_file(3, NULL, &one_q8, 1, 32, (uint64_t)1 << 60, UINT64_MAX);
    expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, "kv_count = 1152921504606846976");
    free(b.p);
    b = gguf_file(3, NULL, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX - 1);
    expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, "tensor_count = 18446744073709551614");
    free(b.p);
}

/* A file with one KV pair given as raw bytes after the key. */
static gb kv_file(const char *key, const void *raw, size_t n)
{
    kvs k = {0};
    gb_str(&k.b, key);
    gb_raw(&k.b, raw, n);
    k.n = 1;
    gb b = gguf_file(3, &k, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX);
    free(k.b.p);
    return b;
}

Test(gguf, kv_rules)
{
    struct {
        uint8_t raw[32];
        size_t n;
        const char *frag;
    } cases[] = {
        {{13, 0, 0, 0}, 4, "'k' has value type 13"},
        {{7, 0, 0, 0, 2}, 5, "bool 'k' has the value 2"},
        {{9, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, 16, "holds arrays"},
        {{9, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 16, "array 'k' has 72057594037927936"},
        {{9, 0, 0, 0, 8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, 16,
         "string array 'k' has 4294967295"},
        {{9, 0, 0, 0, 21, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, 16, "element type 21"},
        {{8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, 12,
         "string value at byte 37 has length 4294967295"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gb b = kv_file("k", cases[i].raw, cases[i].n);
        expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, cases[i].frag);
        free(b.p);
    }
    /* keys: empty, NUL inside, longer than the file, twice */
    const uint8_t u8v[5] = {0, 0, 0, 0, 1};
    gb b = kv_file("", u8v, 5);
    expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, "key at byte 24 is empty");
    free(b.p);
    kvs k = {0};
    gb_u64(&k.b, 3);
    gb_raw(&k.b, "a\0b", 3);
    gb_raw(&k.b, u8v, 5);
    k.n = 1;
    b = gguf_file(3, &k, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX);
    expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, "holds a NUL byte");
    free(b.p);
    free(k.b.p);
    k = (kvs){0};
    gb_u64(&k.b, 1u << 30);
    k.n = 1;
    b = gguf_file(3, &k, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX);
    expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, "key at byte 24 has length 1073741824");
    free(b.p);
    free(k.b.p);
    k = (kvs){0};
    kv_u32(&k, "dup", 1);
    kv_u32(&k, "x", 1);
    kv_u32(&k, "dup", 2);
    b = gguf_file(3, &k, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX);
    expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, "key 'dup' appears twice");
    free(b.p);
    free(k.b.p);
}

Test(gguf, alignment_rules)
{
    const uint32_t bad[] = {0, 48};
    for (int i = 0; i < 2; i++) {
        kvs k = {0};
        kv_u32(&k, "general.alignment", bad[i]);
        gb b = gguf_file(3, &k, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX);
        char frag[64];
        snprintf(frag, sizeof frag, "general.alignment = %u is not a power of two", bad[i]);
        expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, frag);
        free(b.p);
        free(k.b.p);
    }
    kvs k = {0};
    gb_str(&k.b, "general.alignment");
    gb_u32(&k.b, 10); /* u64 */
    gb_u64(&k.b, 32);
    k.n = 1;
    gb b = gguf_file(3, &k, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX);
    expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, "general.alignment has type u64");
    free(b.p);
    free(k.b.p);
}

Test(gguf, tensor_rules)
{
    struct {
        tinfo t[2];
        size_t nt;
        const char *frag;
    } cases[] = {
        {{{"w", 0, {0}, F32, 0}}, 1, "tensor 'w' has 0 dimensions"},
        {{{"w", 5, {1, 1, 1, 1, 1}, F32, 0}}, 1, "tensor 'w' has 5 dimensions"},
        {{{"w", 3, {1u << 31, 1u << 31, 1u << 31}, F32, 0}}, 1,
         "dimension 2 = 2147483648 makes the element count overflow"},
        {{{"w", 2, {(uint64_t)1 << 61, 1}, F32, 0}}, 1, "its byte size overflows"},
        {{{"w", 2, {33, 2}, Q8_0, 0}}, 1, "ne[0] = 33, not a whole number of q8_0 blocks"},
        {{{"w", 1, {32}, 4, 0}}, 1, "ggml type 4, which is not a known type"},
        {{{"w", 1, {32}, 100, 0}}, 1, "ggml type 100"},
        {{{"w", 1, {8}, F32, 16}}, 1, "offset 16, not a multiple of the alignment 32"},
        {{{"w", 1, {8}, F32, (uint64_t)1 << 40}}, 1, "lies beyond the data section"},
        {{{"a", 1, {16}, F32, 0}, {"b", 1, {8}, F32, 32}}, 2, "tensors 'a' (bytes 0..64) and "
                                                              "'b' (from 32) overlap"},
        {{{"a", 1, {8}, F32, UINT64_MAX}, {"a", 1, {8}, F32, UINT64_MAX}}, 2,
         "tensor 'a' appears twice"},
        {{{"x123456789012345678901234567890123456789012345678901234567890123", 1, {8}, F32,
           0}},
         1, "is 64 bytes long (at most 63)"},
        {{{"", 1, {8}, F32, 0}}, 1, "tensor name at byte 24 is empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gb b = gguf_file(3, NULL, cases[i].t, cases[i].nt, 32, UINT64_MAX, UINT64_MAX);
        /* the overlap and beyond cases need their bytes not to be there */
        expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, cases[i].frag);
        free(b.p);
    }
    /* a tensor info cut off */
    const tinfo lng = {"a_name_of_thirty_bytes_xxxxxxx", 2, {64, 2}, Q8_0, UINT64_MAX};
    gb b = gguf_file(3, NULL, &lng, 1, 32, UINT64_MAX, UINT64_MAX);
    b.n = 24 + 8 + 30 + 4 + 4; /* in the middle of ne[0] */
    expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, "tensor 'a_name_of_thirty_bytes_xxxxxxx' is cut off");
    free(b.p);
    /* a tensor whose bytes run past the end of the file */
    b = gguf_file(3, NULL, &one_q8, 1, 32, UINT64_MAX, UINT64_MAX);
    b.n -= 1;
    expect(&b, MOEVK_ERROR_INVALID_ARGUMENT, "lies beyond the data section");
    free(b.p);
    /* a file of one tensor of no bytes, cut at the end of its header (no padding, so the
     * data section would start past the end): read, and the tensor points inside the file */
    const tinfo empty = {"e", 2, {8, 0}, F32, 0};
    b = gguf_file(3, NULL, &empty, 1, 32, UINT64_MAX, UINT64_MAX);
    b.n = 24 + 8 + 1 + 4 + 2 * 8 + 4 + 8;
    mvk_gguf_file f;
    char err[512];
    cr_assert_eq(mvk_gguf_parse(b.p, b.n, "t.gguf", &f, err, sizeof err), 0, "%s", err);
    cr_assert_gt(f.data_offset, b.n);
    const mvk_gguf_tensor *e = mvk_gguf_file_find(&f, "e");
    cr_assert_not_null(e);
    cr_assert_eq(e->nbytes, 0);
    cr_assert(e->data >= b.p && e->data <= b.p + b.n, "the empty tensor points outside the file");
    mvk_gguf_close_file(&f);
    free(b.p);
}

/* ---- files on disk ---------------------------------------------------------- */

static char tmp[256];

static void make_tmp(void)
{
    snprintf(tmp, sizeof tmp, "%s/mvk-gguf-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    cr_assert_not_null(mkdtemp(tmp));
}

static void rm_tmp(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    cr_assert_eq(system(cmd), 0);
}

static void write_file(const char *path, const gb *b)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(b->p, 1, b->n, f), b->n);
    cr_assert_eq(fclose(f), 0);
}

/* split i (0-based) of n: metadata and one tensor named `tensor` */
static void write_split(const char *stem, uint32_t i, uint32_t n, uint32_t no, uint32_t total,
                        const char *tensor)
{
    kvs k = {0};
    if (i == 0)
        kv_string(&k, "general.architecture", "llama");
    kv_u32(&k, "split.no", no);
    kv_u32(&k, "split.count", n);
    kv_u32(&k, "split.tensors.count", total);
    tinfo t = {tensor, 1, {8}, F32, UINT64_MAX};
    gb b = gguf_file(3, &k, &t, 1, 32, UINT64_MAX, UINT64_MAX);
    char path[512];
    snprintf(path, sizeof path, "%s/%s-%05u-of-%05u.gguf", tmp, stem, i + 1, n);
    write_file(path, &b);
    free(b.p);
    free(k.b.p);
}

static void open_expect(const char *stem, uint32_t which, uint32_t n, moevk_status st,
                        const char *frag)
{
    char path[512], err[1024] = "";
    snprintf(path, sizeof path, "%s/%s-%05u-of-%05u.gguf", tmp, stem, which, n);
    mvk_gguf m;
    moevk_status got = mvk_gguf_open(path, &m, err, sizeof err);
    cr_assert_eq(got, st, "%s: status %d (%s)", stem, got, err);
    if (st)
        cr_assert(strstr(err, frag), "%s: message '%s' lacks '%s'", stem, err, frag);
    else {
        cr_assert_eq(m.nfiles, n);
        cr_assert_not_null(mvk_gguf_find(&m, "t0"));
        cr_assert_not_null(mvk_gguf_find(&m, "t2"));
        mvk_gguf_free(&m);
    }
}

Test(gguf, splits_open_together)
{
    make_tmp();
    for (uint32_t i = 0; i < 3; i++) {
        char t[8];
        snprintf(t, sizeof t, "t%u", i);
        write_split("ok", i, 3, i, 3, t);
    }
    open_expect("ok", 1, 3, MOEVK_SUCCESS, NULL);
    open_expect("ok", 3, 3, MOEVK_SUCCESS, NULL); /* any split's path */
    write_split("missing", 0, 2, 0, 2, "t0");
    open_expect("missing", 1, 2, MOEVK_ERROR_INVALID_ARGUMENT, "missing-00002-of-00002.gguf");
    write_split("no", 0, 2, 0, 2, "t0");
    write_split("no", 1, 2, 0, 2, "t1");
    open_expect("no", 1, 2, MOEVK_ERROR_INVALID_ARGUMENT, "split.no = 0 where split 1");
    write_split("count", 0, 2, 0, 5, "t0");
    write_split("count", 1, 2, 1, 5, "t1");
    open_expect("count", 1, 2, MOEVK_ERROR_INVALID_ARGUMENT, "split.tensors.count = 5");
    write_split("dup", 0, 2, 0, 2, "t0");
    write_split("dup", 1, 2, 1, 2, "t0");
    open_expect("dup", 1, 2, MOEVK_ERROR_INVALID_ARGUMENT, "tensor 't0' is in both");
    /* a split file whose name does not follow the pattern */
    char a[512], b2[512];
    snprintf(a, sizeof a, "%s/ok-00001-of-00003.gguf", tmp);
    snprintf(b2, sizeof b2, "%s/renamed.gguf", tmp);
    cr_assert_eq(rename(a, b2), 0);
    mvk_gguf m;
    char err[1024];
    cr_assert_eq(mvk_gguf_open(b2, &m, err, sizeof err), MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(err, "is not NAME-NNNNN-of-MMMMM.gguf"), "%s", err);
    rm_tmp();
}

/* ---- the block loader ------------------------------------------------------- */

static const char *fixtures(void)
{
    const char *d = getenv("MOEVK_GGUF_FIXTURES");
    cr_assert(d && *d, "MOEVK_GGUF_FIXTURES is not set");
    return d;
}

/* Build layer `layer` of a model file; expect success or a message. */
static void layer_expect(const char *path, uint32_t layer, const char *frag)
{
    mvk_gguf m;
    char err[1024] = "";
    cr_assert_eq(mvk_gguf_open(path, &m, err, sizeof err), 0, "%s", err);
    mvk_model_layer L;
    int rc = mvk_gguf_layer_build(&m, layer, &L, NULL, err, sizeof err);
    if (frag) {
        cr_assert_eq(rc, -1, "%s layer %u was built", path, layer);
        cr_assert(strstr(err, frag), "message '%s' lacks '%s'", err, frag);
    } else {
        cr_assert_eq(rc, 0, "%s", err);
        mvk_model_layer_free(&L);
    }
    mvk_gguf_free(&m);
}

/* A MoE block written by hand: router f32 [H=32, E=4], experts of the
 * given types, extra KVs. */
static void write_block(const char *path, const char *arch, uint32_t gate_t, uint32_t up_t,
                        uint32_t down_t, const kvs *extra)
{
    kvs k = {0};
    char key[64];
    kv_string(&k, "general.architecture", arch);
    snprintf(key, sizeof key, "%s.expert_used_count", arch);
    kv_u32(&k, key, 2);
    if (extra)
        gb_raw(&k.b, extra->b.p, extra->b.n), k.n += extra->n;
    const uint64_t H = 256, F = 32, E = 4;
    tinfo t[4] = {{"blk.0.ffn_gate_inp.weight", 2, {H, E}, F32, UINT64_MAX},
                  {"blk.0.ffn_gate_exps.weight", 3, {H, F, E}, gate_t, UINT64_MAX},
                  {"blk.0.ffn_up_exps.weight", 3, {H, F, E}, up_t, UINT64_MAX},
                  {"blk.0.ffn_down_exps.weight", 3, {F, H, E}, down_t, UINT64_MAX}};
    gb b = gguf_file(3, &k, t, 4, 32, UINT64_MAX, UINT64_MAX);
    write_file(path, &b);
    free(b.p);
    free(k.b.p);
}

Test(gguf, loader_refusals_name_the_problem)
{
    char path[512];
    snprintf(path, sizeof path, "%s/deepseek2_sigmoid_q4_1.gguf", fixtures());
    layer_expect(path, 1, NULL);
    layer_expect(path, 0, "layer 0 is a dense layer: deepseek2.leading_dense_block_count = 1");
    layer_expect(path, 2, "--layer 2: the model has 2 layers (deepseek2.block_count)");
    make_tmp();
    snprintf(path, sizeof path, "%s/b.gguf", tmp);
    write_block(path, "llama", Q8_0, Q8_0, Q8_0, NULL);
    layer_expect(path, 0, NULL);
    layer_expect(path, 1, "tensor 'blk.1.ffn_gate_inp.weight' (the router) is missing");
    write_block(path, "mamba", Q8_0, Q8_0, Q8_0, NULL);
    layer_expect(path, 0, "general.architecture = 'mamba' is not one of the MoE architectures");
    write_block(path, "qwen3moe", IQ2_XXS, IQ2_XXS, Q8_0, NULL);
    layer_expect(path, 0, "tensor 'blk.0.ffn_gate_exps.weight' has type iq2_xxs, which moevk "
                          "has no kernel format for");
    write_block(path, "qwen3moe", Q8_0, Q4_0, Q8_0, NULL);
    layer_expect(path, 0, "'blk.0.ffn_gate_exps.weight' (q8_0) and 'blk.0.ffn_up_exps.weight' "
                          "(q4_0) differ in type");
    kvs k = {0};
    kv_f32(&k, "qwen2moe.expert_weights_scale", 16.0f);
    write_block(path, "qwen2moe", Q8_0, Q8_0, Q8_0, &k);
    {
        /* softmax gating with a weight scale (DeepSeek-V2's 16): built, the
         * scale in the desc, llama.cpp's renormalisation guard */
        mvk_gguf m;
        char err[1024] = "";
        cr_assert_eq(mvk_gguf_open(path, &m, err, sizeof err), 0, "%s", err);
        mvk_model_layer L;
        cr_assert_eq(mvk_gguf_layer_build(&m, 0, &L, NULL, err, sizeof err), 0, "%s", err);
        cr_expect_eq(L.desc.routing, MOEVK_ROUTING_SOFTMAX_TOPK);
        cr_expect_eq(L.desc.routed_scaling_factor, 16.0f);
        cr_expect_eq(L.desc.norm_min, 6.103515625e-5f);
        mvk_model_layer_free(&L);
        mvk_gguf_free(&m);
    }
    free(k.b.p);
    k = (kvs){0};
    kv_u32(&k, "olmoe.expert_count", 8);
    write_block(path, "olmoe", Q8_0, Q8_0, Q8_0, &k);
    layer_expect(path, 0, "olmoe.expert_count = 8, but the router's E (ne[1]) is 4");
    free(k.b.p);
    k = (kvs){0};
    kv_u32(&k, "deepseek2.expert_gating_func", 2);
    kv_u32(&k, "deepseek2.expert_shared_count", 1);
    write_block(path, "deepseek2", Q8_0, Q8_0, Q8_0, &k);
    layer_expect(path, 0, "tensor 'blk.0.ffn_up_shexp.weight' is missing");
    free(k.b.p);
    k = (kvs){0};
    kv_u32(&k, "deepseek2.expert_gating_func", 7);
    write_block(path, "deepseek2", Q8_0, Q8_0, Q8_0, &k);
    layer_expect(path, 0, "deepseek2.expert_gating_func = 7 is not one moevk runs");
    free(k.b.p);
    rm_tmp();
}

/* ---- moevk run on the fixtures -------------------------------------------------- */

/* Run the tool; its output (stdout + stderr) into out. */
static int run_tool(char *out, size_t outsz, const char *args)
{
    const char *exe = getenv("MOEVK_EXE");
    cr_assert(exe && *exe, "MOEVK_EXE is not set");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", exe, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, outsz - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

typedef struct fixture {
    const char *name, *file;
    uint32_t layer;
    int plain; /* f32/f16/bf16 experts: the tighter tolerance */
    const char *formats; /* in the load line */
} fixture;

static const fixture fixtures_list[] = {
    {"llama_q8_0", "llama_q8_0.gguf", 0, 0, "q8_0 weights"},
    {"llama_per_expert_f16", "llama_per_expert_f16.gguf", 0, 1, "f16 weights"},
    {"qwen3moe_q4_0_q5_1", "qwen3moe_q4_0_q5_1.gguf", 0, 0, "q4_0 gate/up, q5_1 down"},
    {"qwen2moe_q5_0_shared", "qwen2moe_q5_0_shared.gguf", 0, 0, "shared expert F=64 (gated)"},
    {"deepseek2_sigmoid_q4_1", "deepseek2_sigmoid_q4_1.gguf", 1, 0, "sigmoid_grouped"},
    {"deepseek2_softmax_fused", "deepseek2_softmax_fused.gguf", 0, 0, "fused ffn_gate_up_exps"},
    {"olmoe_iq4_nl", "olmoe_iq4_nl.gguf", 0, 0, "iq4_nl weights"},
    {"gpt-oss_mxfp4", "gpt-oss_mxfp4.gguf", 0, 0, "topk_softmax routing, swiglu_oai"},
    {"grok_bf16", "grok_bf16.gguf", 0, 1, "gelu (tanh), bf16"},
    {"dbrx_q5_1", "dbrx_q5_1.gguf", 0, 0, "q5_1 weights"},
    {"glm4moe_q4_k", "glm4moe_q4_k.gguf", 0, 0, "q4_k gate/up, q5_0 down"},
    {"split_q8_0", "split_q8_0-00001-of-00002.gguf", 0, 0, "2 files"},
    {"qwen3moe_q4_k_m", "qwen3moe_q4_k_m.gguf", 0, 0, "q4_k gate/up, q6_k down"},
    {"olmoe_q5_k", "olmoe_q5_k.gguf", 0, 0, "q5_k weights"},
    {"llama_q2_k_q3_k", "llama_q2_k_q3_k.gguf", 0, 0, "q2_k gate/up, q3_k down"},
    {"deepseek2_iq4_xs", "deepseek2_iq4_xs.gguf", 0, 0, "iq4_xs (shared: q8_0 gate/up"},
    {"dbrx_f32", "dbrx_f32.gguf", 0, 1, "f32 weights"},
    {"deepseek2_v2_softmax_groups", "deepseek2_v2_softmax_groups.gguf", 0, 0,
     "2 of 4 expert groups (each scored by its best two), selection bias, weights x 16"},
};

#define N_FIXTURES (sizeof fixtures_list / sizeof fixtures_list[0])

ParameterizedTestParameters(gguf, run_matches_llama_cpp_maths)
{
    static size_t rows[N_FIXTURES];
    for (size_t i = 0; i < N_FIXTURES; i++)
        rows[i] = i;
    return cr_make_param_array(size_t, rows, N_FIXTURES);
}

ParameterizedTest(const size_t *index, gguf, run_matches_llama_cpp_maths, .timeout = 120)
{
    const fixture *f = &fixtures_list[*index];
    const char *dir = fixtures();
    make_tmp();
    /* the third run: most experts in host memory (--vram-budget) */
    static const char *const backends[] = {"cpu", "vulkan", "vulkan"};
    for (int b = 0; b < 3; b++) {
        char args[2048], out[16384], y[512], want[512], stats[512], extra[700] = "";
        snprintf(y, sizeof y, "%s/y.safetensors", tmp);
        snprintf(want, sizeof want, "%s/%s.y.safetensors", dir, f->name);
        snprintf(stats, sizeof stats, "%s/s.json", tmp);
        if (b == 2)
            snprintf(extra, sizeof extra, " --vram-budget 40%% --stats '%s'", stats);
        snprintf(args, sizeof args,
                 "run --model '%s/%s' --layer %u --input '%s/%s.x.safetensors' --output '%s' "
                 "--backend %s%s%s",
                 dir, f->file, f->layer, dir, f->name, y, backends[b],
                 b ? " --validate --check" : "", extra);
        int rc = run_tool(out, sizeof out, args);
        cr_assert_eq(rc, 0, "%s on %s: exit %d\n%s", f->name, backends[b], rc, out);
        cr_assert(strstr(out, f->formats), "%s: the load line lacks '%s':\n%s", f->name,
                  f->formats, out);
        cr_assert(strstr(out, "tensor   blk."), "%s: no tensor lines:\n%s", f->name, out);
        size_t n;
        double rel = mvkt_rel_to_expected(y, want, &n);
        const double tol = f->plain ? 2e-6 : 1e-5;
        cr_assert_leq(rel, tol, "%s on %s: relative L2 %.3g > %g over %zu values", f->name,
                      backends[b], rel, tol, n);
        if (b == 2) {
            cr_assert(strstr(out, "cache    "), "%s: no cache line:\n%s", f->name, out);
            FILE *sf = fopen(stats, "r");
            cr_assert_not_null(sf);
            char js[8192];
            js[fread(js, 1, sizeof js - 1, sf)] = '\0';
            fclose(sf);
            cr_assert(strstr(js, "\"host_weight_bytes\"") && strstr(js, "\"device_slots\""),
                      "%s: --stats lacks the budget's figures:\n%s", f->name, js);
            remove(stats);
        }
        remove(y);
    }
    rm_tmp();
}

Test(gguf, run_refuses_bad_use)
{
    const char *dir = fixtures();
    char args[2048], out[8192];
    snprintf(args, sizeof args,
             "run --model '%s/deepseek2_sigmoid_q4_1.gguf' --layer 0 --input "
             "'%s/deepseek2_sigmoid_q4_1.x.safetensors' --backend cpu",
             dir, dir);
    cr_assert_eq(run_tool(out, sizeof out, args), 1, "%s", out);
    cr_assert(strstr(out, "layer 0 is a dense layer"), "%s", out);
    snprintf(args, sizeof args,
             "run --model '%s/llama_q8_0.gguf' --prefix blk.0 --input "
             "'%s/llama_q8_0.x.safetensors' --backend cpu",
             dir, dir);
    cr_assert_eq(run_tool(out, sizeof out, args), 2, "%s", out);
    cr_assert(strstr(out, "--prefix is not for a GGUF file"), "%s", out);
    /* the input has another H */
    snprintf(args, sizeof args,
             "run --model '%s/llama_q8_0.gguf' --layer 0 --input "
             "'%s/llama_per_expert_f16.x.safetensors' --backend cpu",
             dir, dir);
    cr_assert_eq(run_tool(out, sizeof out, args), 1, "%s", out);
    cr_assert(strstr(out, "expected [T, 64]"), "%s", out);
    /* the output may not overwrite the model */
    make_tmp();
    char copy[512];
    snprintf(copy, sizeof copy, "%s/m.gguf", tmp);
    snprintf(args, sizeof args, "cp '%s/llama_q8_0.gguf' '%s'", dir, copy);
    cr_assert_eq(system(args), 0);
    snprintf(args, sizeof args,
             "run --model '%s' --layer 0 --input '%s/llama_q8_0.x.safetensors' --output '%s' "
             "--backend cpu",
             copy, dir, copy);
    cr_assert_eq(run_tool(out, sizeof out, args), 2, "%s", out);
    cr_assert(strstr(out, "is the same file as the GGUF model's"), "%s", out);
    rm_tmp();
}

/* A block-format weight with an infinite scale is found by the load-time
 * scan (decoded, not read as f16 elements) and named. */
Test(gguf, non_finite_block_weights_are_named)
{
    make_tmp();
    char path[512], xpath[512], args[2048], out[16384];
    snprintf(path, sizeof path, "%s/inf.gguf", tmp);
    snprintf(xpath, sizeof xpath, "%s/x.safetensors", tmp);
    write_block(path, "qwen3moe", Q8_0, Q8_0, Q8_0, NULL);
    /* blk.0.ffn_up_exps.weight, expert 2, row 0, block 0: scale +Inf */
    mvk_gguf_file f;
    char err[512];
    cr_assert_eq(mvk_gguf_open_file(path, &f, err, sizeof err), 0, "%s", err);
    const mvk_gguf_tensor *up = mvk_gguf_file_find(&f, "blk.0.ffn_up_exps.weight");
    cr_assert_not_null(up);
    const long at = (long)(up->data - f.bytes) + 2L * 32 * (256 / 32 * 34);
    mvk_gguf_close_file(&f);
    FILE *fp = fopen(path, "r+b");
    cr_assert_not_null(fp);
    cr_assert_eq(fseek(fp, at, SEEK_SET), 0);
    cr_assert_eq(fwrite("\x00\x7c", 1, 2, fp), 2);
    cr_assert_eq(fclose(fp), 0);
    float x[2 * 256];
    for (int i = 0; i < 2 * 256; i++)
        x[i] = (float)((i % 13) - 6) * 0.05f;
    mvk_st_out xo = {.name = "x", .dtype = "F32", .ndim = 2, .shape = {2, 256}, .data = x};
    cr_assert_eq(mvk_st_write(xpath, &xo, 1, err, sizeof err), 0, "%s", err);
    snprintf(args, sizeof args, "run --model '%s' --layer 0 --input '%s' --backend cpu", path,
             xpath);
    int rc = run_tool(out, sizeof out, args);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "the weights hold 32 non-finite values (NaN or Inf), the first in the "
                          "up matrix of expert 2"),
              "%s", out);
    rm_tmp();
}

Test(gguf, info_lists_the_moe_layers)
{
    const char *dir = fixtures();
    char args[1024], out[8192];
    snprintf(args, sizeof args, "info --model '%s/deepseek2_sigmoid_q4_1.gguf'", dir);
    cr_assert_eq(run_tool(out, sizeof out, args), 0, "%s", out);
    cr_assert(strstr(out, "deepseek2"), "%s", out);
    cr_assert(strstr(out, "layer 0   dense"), "%s", out);
    cr_assert(strstr(out, "layer 1   MoE"), "%s", out);
    cr_assert(strstr(out, "q4_1"), "%s", out);
    snprintf(args, sizeof args, "info --model '%s/split_q8_0-00002-of-00002.gguf'", dir);
    cr_assert_eq(run_tool(out, sizeof out, args), 0, "%s", out);
    cr_assert(strstr(out, "2 files"), "%s", out);
    /* a block_count of 4e9 with one tensor: the layers without tensors are
     * one line, not four billion empty layers walked */
    kvs k = {0};
    kv_string(&k, "general.architecture", "llama");
    kv_u32(&k, "llama.block_count", 4000000000u);
    tinfo t[1] = {{"blk.0.ffn_gate_inp.weight", 2, {64, 4}, F32, UINT64_MAX}};
    gb b = gguf_file(3, &k, t, 1, 32, UINT64_MAX, UINT64_MAX);
    char path[64];
    snprintf(path, sizeof path, "/tmp/moevk-info-%d.gguf", (int)getpid());
    write_file(path, &b);
    snprintf(args, sizeof args, "info --model '%s'", path);
    run_tool(out, sizeof out, args);
    remove(path);
    free(b.p);
    free(k.b.p);
    cr_assert(strstr(out, "4000000000 layers") && strstr(out, "layer 1..3999999999: no tensors"),
              "%s", out);
}

/* Every GGUF type that maps to a moevk format has that format's block
 * geometry and name (the two tables cannot drift apart), and every expert
 * block format of moevk's table that ggml has is reachable from a GGUF
 * type id. */
Test(gguf, type_table_agrees_with_the_format_table)
{
    int mapped = 0;
    for (uint32_t t = 0; t < 64; t++) {
        const int dt = mvk_gguf_type_dtype(t);
        if (dt < 0)
            continue;
        mapped++;
        const mvk_format *f = mvk_format_get((moevk_dtype)dt);
        cr_assert_not_null(f, "ggml type %u maps to dtype %d, not in the format table", t, dt);
        cr_expect_eq(mvk_gguf_type_block_elems(t), f->block_elems, "%s: block elements",
                     f->name);
        cr_expect_eq(mvk_gguf_type_block_bytes(t), f->block_bytes, "%s: block bytes", f->name);
        cr_expect_str_eq(mvk_gguf_type_name(t), f->name);
        cr_expect_eq(mvk_gguf_dtype_type((moevk_dtype)dt), (int)t);
    }
    static const moevk_dtype ggml_has[] = {
        MOEVK_DTYPE_F32,  MOEVK_DTYPE_F16,  MOEVK_DTYPE_BF16,  MOEVK_DTYPE_Q8_0,
        MOEVK_DTYPE_Q4_0, MOEVK_DTYPE_Q4_1, MOEVK_DTYPE_Q5_0,  MOEVK_DTYPE_Q5_1,
        MOEVK_DTYPE_Q2_K, MOEVK_DTYPE_Q3_K, MOEVK_DTYPE_Q4_K,  MOEVK_DTYPE_Q5_K,
        MOEVK_DTYPE_Q6_K, MOEVK_DTYPE_IQ4_NL, MOEVK_DTYPE_IQ4_XS, MOEVK_DTYPE_MXFP4,
    };
    for (size_t i = 0; i < sizeof ggml_has / sizeof ggml_has[0]; i++)
        cr_expect_geq(mvk_gguf_dtype_type(ggml_has[i]), 0, "%s has no GGUF type id",
                      moevk_dtype_name(ggml_has[i]));
    cr_assert_eq(mapped, 16);
}
