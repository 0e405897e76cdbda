/*
 * The GGUF reader: every check of gguf.h, in the order the bytes come.
 */
#include "gguf.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model_util.h"

/* ---- ggml types ----------------------------------------------------------- */

typedef struct gtype {
    const char *name;
    uint32_t block_elems, block_bytes;
    int dtype; /* moevk_dtype or -1 */
} gtype;

/* ggml's type ids (ggml.h), their blocks and moevk's format of the same
 * bytes; ids that ggml retired (4, 5, 31..33, 36..38) are unknown. */
static const gtype gtypes[] = {
    [0] = {"f32", 1, 4, MOEVK_DTYPE_F32},
    [1] = {"f16", 1, 2, MOEVK_DTYPE_F16},
    [2] = {"q4_0", 32, 18, MOEVK_DTYPE_Q4_0},
    [3] = {"q4_1", 32, 20, MOEVK_DTYPE_Q4_1},
    [6] = {"q5_0", 32, 22, MOEVK_DTYPE_Q5_0},
    [7] = {"q5_1", 32, 24, MOEVK_DTYPE_Q5_1},
    [8] = {"q8_0", 32, 34, MOEVK_DTYPE_Q8_0},
    [9] = {"q8_1", 32, 40, -1},
    [10] = {"q2_k", 256, 84, MOEVK_DTYPE_Q2_K},
    [11] = {"q3_k", 256, 110, MOEVK_DTYPE_Q3_K},
    [12] = {"q4_k", 256, 144, MOEVK_DTYPE_Q4_K},
    [13] = {"q5_k", 256, 176, MOEVK_DTYPE_Q5_K},
    [14] = {"q6_k", 256, 210, MOEVK_DTYPE_Q6_K},
    [15] = {"q8_k", 256, 292, -1},
    [16] = {"iq2_xxs", 256, 66, -1},
    [17] = {"iq2_xs", 256, 74, -1},
    [18] = {"iq3_xxs", 256, 98, -1},
    [19] = {"iq1_s", 256, 50, -1},
    [20] = {"iq4_nl", 32, 18, MOEVK_DTYPE_IQ4_NL},
    [21] = {"iq3_s", 256, 110, -1},
    [22] = {"iq2_s", 256, 82, -1},
    [23] = {"iq4_xs", 256, 136, MOEVK_DTYPE_IQ4_XS},
    [24] = {"i8", 1, 1, -1},
    [25] = {"i16", 1, 2, -1},
    [26] = {"i32", 1, 4, -1},
    [27] = {"i64", 1, 8, -1},
    [28] = {"f64", 1, 8, -1},
    [29] = {"iq1_m", 256, 56, -1},
    [30] = {"bf16", 1, 2, MOEVK_DTYPE_BF16},
    [34] = {"tq1_0", 256, 54, -1},
    [35] = {"tq2_0", 256, 66, -1},
    [39] = {"mxfp4", 32, 17, MOEVK_DTYPE_MXFP4},
    [40] = {"nvfp4", 64, 36, -1},
    [41] = {"q1_0", 128, 18, -1},
};
#define N_GTYPES (sizeof gtypes / sizeof gtypes[0])

static const gtype *gtype_of(uint32_t t)
{
    return t < N_GTYPES && gtypes[t].name ? &gtypes[t] : NULL;
}

const char *mvk_gguf_type_name(uint32_t type)
{
    const gtype *g = gtype_of(type);
    return g ? g->name : NULL;
}

uint32_t mvk_gguf_type_block_elems(uint32_t type)
{
    const gtype *g = gtype_of(type);
    return g ? g->block_elems : 0;
}

uint32_t mvk_gguf_type_block_bytes(uint32_t type)
{
    const gtype *g = gtype_of(type);
    return g ? g->block_bytes : 0;
}

int mvk_gguf_type_dtype(uint32_t type)
{
    const gtype *g = gtype_of(type);
    return g ? g->dtype : -1;
}

int mvk_gguf_dtype_type(moevk_dtype dtype)
{
    for (uint32_t t = 0; t < N_GTYPES; t++)
        if (gtypes[t].name && gtypes[t].dtype == (int)dtype)
            return (int)t;
    return -1;
}

const char *mvk_gguf_vtype_name(uint32_t t)
{
    static const char *const names[] = {"u8",   "i8",     "u16",   "i16", "u32",
                                        "i32",  "f32",    "bool",  "string",
                                        "array", "u64",   "i64",   "f64"};
    return t < MVK_GGUF_VTYPE_COUNT ? names[t] : "unknown";
}

static const uint32_t vtype_size[MVK_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* ---- messages ---------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t size, pos;
    const char *what;
    char *err;
    size_t errsz;
} rd;

/* The message (escaped) and INVALID_ARGUMENT. */
static moevk_status failv(char *err, size_t errsz, moevk_status st, const char *fmt, va_list ap)
{
    if (err && errsz) {
        char raw[1024];
        vsnprintf(raw, sizeof raw, fmt, ap);
        mvk_esc(raw, err, errsz);
    }
    return st;
}

static moevk_status fail(rd *r, const char *fmt, ...) MVK_PRINTF(2, 3);
static moevk_status fail(rd *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    moevk_status st = failv(r->err, r->errsz, MOEVK_ERROR_INVALID_ARGUMENT, fmt, ap);
    va_end(ap);
    return st;
}

static moevk_status oom(rd *r)
{
    if (r->err && r->errsz)
        snprintf(r->err, r->errsz, "out of host memory reading %s", r->what);
    return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
}

/* ---- the cursor ------------------------------------------------------------- */

static size_t left(const rd *r)
{
    return r->size - r->pos;
}

static int get(rd *r, void *dst, size_t n)
{
    if (left(r) < n)
        return -1;
    memcpy(dst, r->p + r->pos, n);
    r->pos += n;
    return 0;
}

static int get_u32(rd *r, uint32_t *v)
{
    return get(r, v, 4);
}

static int get_u64(rd *r, uint64_t *v)
{
    return get(r, v, 8);
}

/* A string's length and bytes (in the file); `field` names it. */
static moevk_status get_str(rd *r, const char *field, const uint8_t **s, uint64_t *len)
{
    size_t at = r->pos;
    if (get_u64(r, len))
        return fail(r, "%s: %s at byte %zu is cut off by the end of the file", r->what, field,
                    at);
    if (*len > left(r))
        return fail(r, "%s: %s at byte %zu has length %llu, beyond the %zu bytes left", r->what,
                    field, at, (unsigned long long)*len, left(r));
    *s = r->p + r->pos;
    r->pos += (size_t)*len;
    return MOEVK_SUCCESS;
}

/* A key or tensor name: non-empty, no NUL, at most `max` bytes; copied. */
static moevk_status get_name(rd *r, const char *field, uint64_t max, char **out)
{
    const uint8_t *s;
    uint64_t len;
    moevk_status st = get_str(r, field, &s, &len);
    if (st)
        return st;
    if (len == 0)
        return fail(r, "%s: %s at byte %zu is empty", r->what, field, r->pos - 8);
    if (memchr(s, 0, (size_t)len))
        return fail(r, "%s: %s at byte %zu holds a NUL byte", r->what, field,
                    r->pos - (size_t)len - 8);
    char *c = malloc((size_t)len + 1);
    if (!c)
        return oom(r);
    memcpy(c, s, (size_t)len);
    c[len] = 0;
    if (len > max) {
        char shown[80];
        snprintf(shown, sizeof shown, "%.64s", c);
        free(c);
        return fail(r, "%s: %s '%s...' is %llu bytes long (at most %llu)", r->what, field,
                    shown, (unsigned long long)len, (unsigned long long)max);
    }
    *out = c;
    return MOEVK_SUCCESS;
}

/* ---- KV pairs ---------------------------------------------------------------- */

/* A scalar of type t into kv (kv->key names it). */
static moevk_status get_scalar(rd *r, uint32_t t, mvk_gguf_kv *kv)
{
    uint8_t b[8] = {0};
    if (get(r, b, vtype_size[t]))
        return fail(r, "%s: the %s value of '%s' is cut off by the end of the file", r->what,
                    mvk_gguf_vtype_name(t), kv->key);
    uint64_t u = 0;
    memcpy(&u, b, 8); /* little-endian: the low bytes */
    switch (t) {
    case MVK_GGUF_I8: kv->v.i = (int8_t)u; break;
    case MVK_GGUF_I16: kv->v.i = (int16_t)u; break;
    case MVK_GGUF_I32: kv->v.i = (int32_t)u; break;
    case MVK_GGUF_I64: kv->v.i = (int64_t)u; break;
    case MVK_GGUF_F32: {
        float f;
        memcpy(&f, b, 4);
        kv->v.f = f;
        break;
    }
    case MVK_GGUF_F64: memcpy(&kv->v.f, b, 8); break;
    case MVK_GGUF_BOOL:
        if (u > 1)
            return fail(r, "%s: bool '%s' has the value %llu (not 0 or 1)", r->what, kv->key,
                        (unsigned long long)u);
        kv->v.u = u;
        break;
    default: kv->v.u = u; break;
    }
    return MOEVK_SUCCESS;
}

static moevk_status get_kv(rd *r, mvk_gguf_kv *kv)
{
    moevk_status st = get_name(r, "key", MVK_GGUF_MAX_KEY, &kv->key);
    if (st)
        return st;
    if (get_u32(r, &kv->type))
        return fail(r, "%s: the type of '%s' is cut off by the end of the file", r->what,
                    kv->key);
    if (kv->type >= MVK_GGUF_VTYPE_COUNT)
        return fail(r, "%s: '%s' has value type %u (types are 0..12)", r->what, kv->key,
                    kv->type);
    if (kv->type == MVK_GGUF_STRING) {
        const uint8_t *s;
        if ((st = get_str(r, "string value", &s, &kv->count)))
            return st;
        if (!(kv->str = malloc((size_t)kv->count + 1)))
            return oom(r);
        memcpy(kv->str, s, (size_t)kv->count);
        kv->str[kv->count] = 0;
        return MOEVK_SUCCESS;
    }
    if (kv->type != MVK_GGUF_ARRAY)
        return get_scalar(r, kv->type, kv);
    if (get_u32(r, &kv->arr_type) || get_u64(r, &kv->count))
        return fail(r, "%s: the array header of '%s' is cut off by the end of the file",
                    r->what, kv->key);
    if (kv->arr_type >= MVK_GGUF_VTYPE_COUNT)
        return fail(r, "%s: array '%s' has element type %u (types are 0..12)", r->what, kv->key,
                    kv->arr_type);
    if (kv->arr_type == MVK_GGUF_ARRAY)
        return fail(r, "%s: array '%s' holds arrays (nested arrays are not supported)", r->what,
                    kv->key);
    kv->data = r->p + r->pos;
    if (kv->arr_type == MVK_GGUF_STRING) {
        if (kv->count > left(r) / 8)
            return fail(r, "%s: string array '%s' has %llu elements, more than the %zu bytes "
                        "left can hold",
                        r->what, kv->key, (unsigned long long)kv->count, left(r));
        for (uint64_t i = 0; i < kv->count; i++) {
            const uint8_t *s;
            uint64_t len;
            if ((st = get_str(r, "string array element", &s, &len)))
                return st;
        }
        return MOEVK_SUCCESS;
    }
    const uint32_t es = vtype_size[kv->arr_type];
    if (kv->count > left(r) / es)
        return fail(r, "%s: %s array '%s' has %llu elements, more than the %zu bytes left can "
                    "hold",
                    r->what, mvk_gguf_vtype_name(kv->arr_type), kv->key,
                    (unsigned long long)kv->count, left(r));
    if (kv->arr_type == MVK_GGUF_BOOL)
        for (uint64_t i = 0; i < kv->count; i++)
            if (r->p[r->pos + i] > 1)
                return fail(r, "%s: bool array '%s' element %llu is %u (not 0 or 1)", r->what,
                            kv->key, (unsigned long long)i, r->p[r->pos + i]);
    r->pos += (size_t)(kv->count * es);
    return MOEVK_SUCCESS;
}

/* ---- tensor infos ---------------------------------------------------------- */

static moevk_status get_tensor(rd *r, mvk_gguf_tensor *t)
{
    moevk_status st = get_name(r, "tensor name", MVK_GGUF_MAX_NAME - 1, &t->name);
    if (st)
        return st;
    if (get_u32(r, &t->ndim))
        return fail(r, "%s: tensor '%s' is cut off by the end of the file", r->what, t->name);
    if (t->ndim < 1 || t->ndim > MVK_GGUF_MAX_DIMS)
        return fail(r, "%s: tensor '%s' has %u dimensions (1..%d)", r->what, t->name, t->ndim,
                    MVK_GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < MVK_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->ndim; d++)
        if (get_u64(r, &t->ne[d]))
            return fail(r, "%s: tensor '%s' is cut off by the end of the file", r->what,
                        t->name);
    if (get_u32(r, &t->type) || get_u64(r, &t->offset))
        return fail(r, "%s: tensor '%s' is cut off by the end of the file", r->what, t->name);
    const gtype *g = gtype_of(t->type);
    if (!g)
        return fail(r, "%s: tensor '%s' has ggml type %u, which is not a known type", r->what,
                    t->name, t->type);
    t->dtype = g->dtype;
    /* elements and bytes, overflow-checked (ggml keeps sizes in int64) */
    const uint64_t lim = (uint64_t)INT64_MAX;
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->ndim; d++) {
        if (t->ne[d] > lim || (t->ne[d] && n > lim / t->ne[d]))
            return fail(r, "%s: tensor '%s': dimension %u = %llu makes the element count "
                        "overflow",
                        r->what, t->name, d, (unsigned long long)t->ne[d]);
        n *= t->ne[d];
    }
    if (t->ne[0] % g->block_elems)
        return fail(r, "%s: tensor '%s' has ne[0] = %llu, not a whole number of %s blocks "
                    "(%u elements)",
                    r->what, t->name, (unsigned long long)t->ne[0], g->name, g->block_elems);
    if (t->ne[0] / g->block_elems > lim / g->block_bytes)
        return fail(r, "%s: tensor '%s': its byte size overflows", r->what, t->name);
    uint64_t row = t->ne[0] / g->block_elems * g->block_bytes;
    uint64_t rows = n && t->ne[0] ? n / t->ne[0] : 0;
    if (rows && row > lim / rows)
        return fail(r, "%s: tensor '%s': its byte size overflows", r->what, t->name);
    t->nbytes = row * rows;
    return MOEVK_SUCCESS;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const mvk_gguf_tensor *)a)->name, ((const mvk_gguf_tensor *)b)->name);
}

static int cmp_offset(const void *a, const void *b)
{
    const mvk_gguf_tensor *x = *(const mvk_gguf_tensor *const *)a,
                          *y = *(const mvk_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_kv(const void *a, const void *b)
{
    return strcmp((*(const mvk_gguf_kv *const *)a)->key, (*(const mvk_gguf_kv *const *)b)->key);
}

/* ---- the file ---------------------------------------------------------------- */

static void free_parsed(mvk_gguf_file *f)
{
    for (size_t i = 0; i < f->nkv; i++) {
        free(f->kv[i].key);
        free(f->kv[i].str);
    }
    free(f->kv);
    for (size_t i = 0; i < f->ntensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    f->kv = NULL;
    f->tensors = NULL;
    f->nkv = f->ntensors = 0;
}

/* The smallest encodings: a KV pair (key of 1 byte, a u8 value) and a
 * tensor info (name of 1 byte, one dimension). */
#define MIN_KV_BYTES (8 + 1 + 4 + 1)
#define MIN_TENSOR_BYTES (8 + 1 + 4 + 8 + 4 + 8)

static moevk_status parse_body(rd *r, mvk_gguf_file *f)
{
    char magic[4];
    uint64_t nt, nkv;
    if (get(r, magic, 4) || memcmp(magic, "GGUF", 4))
        return fail(r, "%s: not a GGUF file (the magic is not \"GGUF\")", r->what);
    if (get_u32(r, &f->version))
        return fail(r, "%s: the version is cut off by the end of the file", r->what);
    if (f->version == 1)
        return fail(r, "%s: GGUF version 1 (32-bit counts) is not supported (2 or 3)", r->what);
    if (f->version != 2 && f->version != 3)
        return fail(r, "%s: GGUF version %u is not supported (2 or 3%s)", r->what, f->version,
                    (f->version & 0xffff) == 0 ? "; a big-endian file?" : "");
    if (get_u64(r, &nt) || get_u64(r, &nkv))
        return fail(r, "%s: the header is cut off by the end of the file", r->what);
    if (nkv > left(r) / MIN_KV_BYTES)
        return fail(r, "%s: kv_count = %llu is more than the file's %zu bytes can hold", r->what,
                    (unsigned long long)nkv, r->size);
    if (nt > left(r) / MIN_TENSOR_BYTES)
        return fail(r, "%s: tensor_count = %llu is more than the file's %zu bytes can hold",
                    r->what, (unsigned long long)nt, r->size);
    moevk_status st;
    if (nkv && !(f->kv = calloc((size_t)nkv, sizeof(*f->kv))))
        return oom(r);
    for (uint64_t i = 0; i < nkv; i++) {
        f->nkv++;
        if ((st = get_kv(r, &f->kv[i])))
            return st;
    }
    /* no key twice */
    if (f->nkv > 1) {
        const mvk_gguf_kv **s = malloc(f->nkv * sizeof(*s));
        if (!s)
            return oom(r);
        for (size_t i = 0; i < f->nkv; i++)
            s[i] = &f->kv[i];
        qsort(s, f->nkv, sizeof(*s), cmp_kv);
        for (size_t i = 1; i < f->nkv; i++)
            if (!strcmp(s[i]->key, s[i - 1]->key)) {
                fail(r, "%s: key '%s' appears twice", r->what, s[i]->key);
                free(s);
                return MOEVK_ERROR_INVALID_ARGUMENT;
            }
        free(s);
    }
    f->alignment = MVK_GGUF_DEFAULT_ALIGNMENT;
    const mvk_gguf_kv *al = mvk_gguf_kv_find(f, "general.alignment");
    if (al) {
        if (al->type != MVK_GGUF_U32)
            return fail(r, "%s: general.alignment has type %s (it must be u32)", r->what,
                        mvk_gguf_vtype_name(al->type));
        if (al->v.u == 0 || (al->v.u & (al->v.u - 1)))
            return fail(r, "%s: general.alignment = %llu is not a power of two", r->what,
                        (unsigned long long)al->v.u);
        f->alignment = (uint32_t)al->v.u;
    }
    if (nt && !(f->tensors = calloc((size_t)nt, sizeof(*f->tensors))))
        return oom(r);
    for (uint64_t i = 0; i < nt; i++) {
        f->ntensors++;
        if ((st = get_tensor(r, &f->tensors[i])))
            return st;
    }
    /* the data section */
    uint64_t data = r->pos + (f->alignment - r->pos % f->alignment) % f->alignment;
    f->data_offset = data;
    uint64_t avail = data <= r->size ? r->size - data : 0;
    for (size_t i = 0; i < f->ntensors; i++) {
        mvk_gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment)
            return fail(r, "%s: tensor '%s' has offset %llu, not a multiple of the alignment %u",
                        r->what, t->name, (unsigned long long)t->offset, f->alignment);
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return fail(r, "%s: tensor '%s' (offset %llu, %llu bytes) lies beyond the data "
                        "section (%llu bytes from byte %llu)",
                        r->what, t->name, (unsigned long long)t->offset,
                        (unsigned long long)t->nbytes, (unsigned long long)avail,
                        (unsigned long long)data);
        /* a tensor of no bytes may name a data section that starts past the end of the file
         * (no padding written after the header): it points at the end instead */
        t->data = t->nbytes ? r->p + data + t->offset : r->p + r->size;
    }
    if (f->ntensors > 1) {
        qsort(f->tensors, f->ntensors, sizeof(*f->tensors), cmp_tensor);
        for (size_t i = 1; i < f->ntensors; i++)
            if (!strcmp(f->tensors[i].name, f->tensors[i - 1].name))
                return fail(r, "%s: tensor '%s' appears twice", r->what, f->tensors[i].name);
        const mvk_gguf_tensor **o = malloc(f->ntensors * sizeof(*o));
        if (!o)
            return oom(r);
        for (size_t i = 0; i < f->ntensors; i++)
            o[i] = &f->tensors[i];
        qsort(o, f->ntensors, sizeof(*o), cmp_offset);
        const mvk_gguf_tensor *prev = NULL;
        for (size_t i = 0; i < f->ntensors; i++) {
            if (!o[i]->nbytes)
                continue;
            if (prev && o[i]->offset < prev->offset + prev->nbytes) {
                fail(r, "%s: tensors '%s' (bytes %llu..%llu) and '%s' (from %llu) overlap",
                     r->what, prev->name, (unsigned long long)prev->offset,
                     (unsigned long long)(prev->offset + prev->nbytes), o[i]->name,
                     (unsigned long long)o[i]->offset);
                free(o);
                return MOEVK_ERROR_INVALID_ARGUMENT;
            }
            prev = o[i];
        }
        free(o);
    }
    return MOEVK_SUCCESS;
}

moevk_status mvk_gguf_parse(const uint8_t *bytes, size_t size, const char *what,
                            mvk_gguf_file *out, char *err, size_t errsz)
{
    mvk_gguf_file f;
    memset(&f, 0, sizeof f);
    rd r = {.p = bytes, .size = size, .what = what ? what : "gguf", .err = err, .errsz = errsz};
    if (err && errsz)
        err[0] = 0;
    moevk_status st = parse_body(&r, &f);
    if (!st && !(f.path = mvk_strdup(r.what)))
        st = oom(&r);
    if (st) {
        free_parsed(&f);
        return st;
    }
    f.bytes = bytes;
    f.size = size;
    *out = f;
    return MOEVK_SUCCESS;
}

moevk_status mvk_gguf_open_file(const char *path, mvk_gguf_file *out, char *err, size_t errsz)
{
    int fd;
    uint64_t size;
    if (mvk_open_regular(path, &fd, &size, err, errsz))
        return MOEVK_ERROR_INVALID_ARGUMENT;
    if (size == 0 || size > SIZE_MAX) {
        close(fd);
        mvk_errf(err, errsz, "%s: not a GGUF file (%llu bytes)", path, (unsigned long long)size);
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) {
        mvk_errf(err, errsz, "cannot map %s: %s", path, strerror(e));
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    moevk_status st = mvk_gguf_parse(m, (size_t)size, path, out, err, errsz);
    if (st) {
        munmap(m, (size_t)size);
        return st;
    }
    out->mapped = 1;
    return MOEVK_SUCCESS;
}

void mvk_gguf_close_file(mvk_gguf_file *f)
{
    if (!f)
        return;
    free_parsed(f);
    if (f->mapped && f->bytes)
        munmap((void *)f->bytes, f->size);
    free(f->path);
    memset(f, 0, sizeof(*f));
}

const mvk_gguf_kv *mvk_gguf_kv_find(const mvk_gguf_file *f, const char *key)
{
    for (size_t i = 0; f && key && i < f->nkv; i++)
        if (!strcmp(f->kv[i].key, key))
            return &f->kv[i];
    return NULL;
}

const mvk_gguf_tensor *mvk_gguf_file_find(const mvk_gguf_file *f, const char *name)
{
    size_t lo = 0, hi = f ? f->ntensors : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->tensors[mid].name);
        if (!c)
            return &f->tensors[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int mvk_gguf_is_gguf(const char *path)
{
    int fd;
    uint64_t size;
    char magic[4];
    if (!path || mvk_open_regular(path, &fd, &size, NULL, 0))
        return 0;
    int ok = size >= 4 && read(fd, magic, 4) == 4 && !memcmp(magic, "GGUF", 4);
    close(fd);
    return ok;
}

/* ---- metadata, typed ----------------------------------------------------- */

static moevk_status kfail(const mvk_gguf_file *f, char *err, size_t errsz, const char *fmt, ...)
    MVK_PRINTF(4, 5);
static moevk_status kfail(const mvk_gguf_file *f, char *err, size_t errsz, const char *fmt, ...)
{
    char m[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    mvk_errf(err, errsz, "%s: %s", f->path, m);
    return MOEVK_ERROR_INVALID_ARGUMENT;
}

static int is_int(uint32_t t)
{
    return t <= MVK_GGUF_I32 || t == MVK_GGUF_U64 || t == MVK_GGUF_I64;
}

static int is_signed(uint32_t t)
{
    return t == MVK_GGUF_I8 || t == MVK_GGUF_I16 || t == MVK_GGUF_I32 || t == MVK_GGUF_I64;
}

int mvk_gguf_get_uint(const mvk_gguf_file *f, const char *key, uint64_t max, uint64_t def,
                      uint64_t *v, char *err, size_t errsz)
{
    const mvk_gguf_kv *kv = mvk_gguf_kv_find(f, key);
    *v = def;
    if (!kv)
        return 0;
    if (!is_int(kv->type)) {
        kfail(f, err, errsz, "%s has type %s (an integer is expected)", key,
              mvk_gguf_vtype_name(kv->type));
        return -1;
    }
    if (is_signed(kv->type) ? (kv->v.i < 0 || (uint64_t)kv->v.i > max) : kv->v.u > max) {
        if (is_signed(kv->type))
            kfail(f, err, errsz, "%s = %lld is not in 0..%llu", key, (long long)kv->v.i,
                  (unsigned long long)max);
        else
            kfail(f, err, errsz, "%s = %llu is not in 0..%llu", key,
                  (unsigned long long)kv->v.u, (unsigned long long)max);
        return -1;
    }
    *v = is_signed(kv->type) ? (uint64_t)kv->v.i : kv->v.u;
    return 1;
}

int mvk_gguf_get_float(const mvk_gguf_file *f, const char *key, double def, double *v,
                       char *err, size_t errsz)
{
    const mvk_gguf_kv *kv = mvk_gguf_kv_find(f, key);
    *v = def;
    if (!kv)
        return 0;
    double x;
    if (kv->type == MVK_GGUF_F32 || kv->type == MVK_GGUF_F64)
        x = kv->v.f;
    else if (is_int(kv->type))
        x = is_signed(kv->type) ? (double)kv->v.i : (double)kv->v.u;
    else {
        kfail(f, err, errsz, "%s has type %s (a number is expected)", key,
              mvk_gguf_vtype_name(kv->type));
        return -1;
    }
    if (!isfinite(x)) {
        kfail(f, err, errsz, "%s = %g is not finite", key, x);
        return -1;
    }
    *v = x;
    return 1;
}

int mvk_gguf_get_bool(const mvk_gguf_file *f, const char *key, int def, int *v, char *err,
                      size_t errsz)
{
    const mvk_gguf_kv *kv = mvk_gguf_kv_find(f, key);
    *v = def;
    if (!kv)
        return 0;
    if (kv->type != MVK_GGUF_BOOL && !is_int(kv->type)) {
        kfail(f, err, errsz, "%s has type %s (a bool is expected)", key,
              mvk_gguf_vtype_name(kv->type));
        return -1;
    }
    if (kv->v.u > 1) {
        kfail(f, err, errsz, "%s = %lld is not a bool (0 or 1)", key, (long long)kv->v.i);
        return -1;
    }
    *v = (int)kv->v.u;
    return 1;
}

int mvk_gguf_get_string(const mvk_gguf_file *f, const char *key, const char **v, char *err,
                        size_t errsz)
{
    const mvk_gguf_kv *kv = mvk_gguf_kv_find(f, key);
    *v = NULL;
    if (!kv)
        return 0;
    if (kv->type != MVK_GGUF_STRING) {
        kfail(f, err, errsz, "%s has type %s (a string is expected)", key,
              mvk_gguf_vtype_name(kv->type));
        return -1;
    }
    if (strlen(kv->str) != kv->count) {
        kfail(f, err, errsz, "%s holds a NUL byte", key);
        return -1;
    }
    *v = kv->str;
    return 1;
}

/* ---- a model of one or more splits --------------------------------------- */

static int cmp_tptr(const void *a, const void *b)
{
    return strcmp((*(const mvk_gguf_tensor *const *)a)->name,
                  (*(const mvk_gguf_tensor *const *)b)->name);
}

void mvk_gguf_free(mvk_gguf *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < m->nfiles; i++)
        mvk_gguf_close_file(&m->files[i]);
    free(m->files);
    free(m->tensors);
    memset(m, 0, sizeof(*m));
}

/* split.count / split.no of a file (1 and 0 when absent). */
static int split_meta(const mvk_gguf_file *f, uint64_t *count, uint64_t *no, char *err,
                      size_t errsz)
{
    if (mvk_gguf_get_uint(f, "split.count", MVK_GGUF_MAX_SPLITS, 1, count, err, errsz) < 0 ||
        mvk_gguf_get_uint(f, "split.no", MVK_GGUF_MAX_SPLITS, 0, no, err, errsz) < 0)
        return -1;
    if (*count == 0) {
        kfail(f, err, errsz, "split.count = 0");
        return -1;
    }
    return 0;
}

moevk_status mvk_gguf_assemble(mvk_gguf_file *files, uint32_t n, mvk_gguf *m, char *err,
                               size_t errsz)
{
    memset(m, 0, sizeof(*m));
    m->files = files;
    m->nfiles = n;
    uint64_t count0 = 1, total = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t count, no;
        if (split_meta(&files[i], &count, &no, err, errsz))
            goto bad;
        if (i == 0)
            count0 = count;
        if (count != count0 || count != n) {
            kfail(&files[i], err, errsz, "split.count = %llu, but the model has %u file%s",
                  (unsigned long long)count, n, n == 1 ? "" : "s");
            goto bad;
        }
        if (no != i) {
            kfail(&files[i], err, errsz, "split.no = %llu where split %u was expected",
                  (unsigned long long)no, i);
            goto bad;
        }
        total += files[i].ntensors;
        for (size_t t = 0; t < files[i].ntensors; t++)
            files[i].tensors[t].split = i;
    }
    if (n > 1) {
        uint64_t want;
        int has = mvk_gguf_get_uint(&files[0], "split.tensors.count", UINT64_MAX, 0, &want, err,
                                    errsz);
        if (has < 0)
            goto bad;
        if (has && want != total) {
            kfail(&files[0], err, errsz, "split.tensors.count = %llu, but the %u files hold %llu",
                  (unsigned long long)want, n, (unsigned long long)total);
            goto bad;
        }
    }
    if (total && !(m->tensors = malloc((size_t)total * sizeof(*m->tensors)))) {
        mvk_errf(err, errsz, "out of host memory");
        mvk_gguf_free(m);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (uint32_t i = 0; i < n; i++)
        for (size_t t = 0; t < files[i].ntensors; t++)
            m->tensors[m->ntensors++] = &files[i].tensors[t];
    if (m->ntensors > 1)
        qsort(m->tensors, m->ntensors, sizeof(*m->tensors), cmp_tptr);
    for (size_t i = 1; i < m->ntensors; i++)
        if (!strcmp(m->tensors[i]->name, m->tensors[i - 1]->name)) {
            mvk_errf(err, errsz, "tensor '%s' is in both %s and %s", m->tensors[i]->name,
                     files[m->tensors[i - 1]->split].path, files[m->tensors[i]->split].path);
            goto bad;
        }
    return MOEVK_SUCCESS;
bad:
    mvk_gguf_free(m);
    return MOEVK_ERROR_INVALID_ARGUMENT;
}

/* path = PREFIX-NNNNN-of-MMMMM.gguf: the prefix's length, or -1. */
static long split_prefix(const char *path)
{
    size_t n = strlen(path);
    const size_t tail = strlen("-00001-of-00001.gguf");
    if (n < tail)
        return -1;
    const char *t = path + n - tail;
    for (int i = 0; i < (int)tail; i++) {
        const char c = "-#####-of-#####.gguf"[i];
        if (c == '#' ? (t[i] < '0' || t[i] > '9') : t[i] != c)
            return -1;
    }
    return (long)(n - tail);
}

moevk_status mvk_gguf_open(const char *path, mvk_gguf *m, char *err, size_t errsz)
{
    memset(m, 0, sizeof(*m));
    mvk_gguf_file first;
    moevk_status st = mvk_gguf_open_file(path, &first, err, errsz);
    if (st)
        return st;
    uint64_t count, no;
    if (split_meta(&first, &count, &no, err, errsz)) {
        mvk_gguf_close_file(&first);
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    mvk_gguf_file *files = calloc((size_t)count, sizeof(*files));
    if (!files) {
        mvk_gguf_close_file(&first);
        mvk_errf(err, errsz, "out of host memory");
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    if (count == 1) {
        files[0] = first;
        return mvk_gguf_assemble(files, 1, m, err, errsz);
    }
    long pl = split_prefix(path);
    if (pl < 0 || no >= count) {
        if (pl < 0)
            mvk_errf(err, errsz,
                     "%s: split.count = %llu, but its name is not NAME-NNNNN-of-MMMMM.gguf "
                     "(the names of the other splits follow from it)",
                     path, (unsigned long long)count);
        else
            mvk_errf(err, errsz, "%s: split.no = %llu is not below split.count = %llu", path,
                     (unsigned long long)no, (unsigned long long)count);
        mvk_gguf_close_file(&first);
        free(files);
        return MOEVK_ERROR_INVALID_ARGUMENT;
    }
    files[no] = first;
    uint32_t opened = 0;
    st = MOEVK_SUCCESS;
    for (uint64_t i = 0; i < count && !st; i++) {
        if (i == no)
            continue;
        char p[4096];
        int w = snprintf(p, sizeof p, "%.*s-%05llu-of-%05llu.gguf", (int)pl, path,
                         (unsigned long long)i + 1, (unsigned long long)count);
        if (w < 0 || (size_t)w >= sizeof p) {
            mvk_errf(err, errsz, "%s: the path is too long", path);
            st = MOEVK_ERROR_INVALID_ARGUMENT;
            break;
        }
        st = mvk_gguf_open_file(p, &files[i], err, errsz);
        opened += !st;
    }
    if (st) {
        for (uint64_t i = 0; i < count; i++)
            mvk_gguf_close_file(&files[i]);
        free(files);
        return st;
    }
    (void)opened;
    return mvk_gguf_assemble(files, (uint32_t)count, m, err, errsz);
}

const mvk_gguf_tensor *mvk_gguf_find(const mvk_gguf *m, const char *name)
{
    size_t lo = 0, hi = m->ntensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, m->tensors[mid]->name);
        if (!c)
            return m->tensors[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}
