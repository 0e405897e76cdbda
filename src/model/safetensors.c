/*
 * safetensors reader (memory-mapped, every field checked) and writer.
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_util.h"
#include "moevk/moevk.h"

static const struct st_dtype {
    const char *name;
    uint32_t bits;
    int dtype;
} st_dtypes[] = {
    {"F32", 32, MOEVK_DTYPE_F32},   {"F16", 16, MOEVK_DTYPE_F16}, {"BF16", 16, MOEVK_DTYPE_BF16},
    {"F64", 64, -1},     {"I64", 64, -1},     {"U64", 64, -1},     {"I32", 32, -1},
    {"U32", 32, -1},     {"I16", 16, -1},     {"U16", 16, -1},     {"I8", 8, -1},
    {"U8", 8, -1},       {"BOOL", 8, -1},     {"F8_E4M3", 8, -1},  {"F8_E5M2", 8, -1},
    {"F8_E8M0", 8, -1},  {"C64", 64, -1},     {"F4", 4, -1},       {"F6_E2M3", 6, -1},
    {"F6_E3M2", 6, -1},
};

static const struct st_dtype *dtype_find(const char *name)
{
    for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
        if (!strcmp(st_dtypes[i].name, name))
            return &st_dtypes[i];
    return NULL;
}

uint32_t mvk_st_dtype_bits(const char *dtype_name)
{
    const struct st_dtype *d = dtype_name ? dtype_find(dtype_name) : NULL;
    return d ? d->bits : 0;
}

/* A JSON number that is an integer in 0 .. 2^53 (exactly representable). */
static int json_u64(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > 9007199254740992.0 || d != floor(d))
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const mvk_st_tensor *)a)->name, ((const mvk_st_tensor *)b)->name);
}

typedef struct span {
    uint64_t begin, end;
    size_t index;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static void free_tensors(mvk_st_tensor *t, size_t n)
{
    if (!t)
        return;
    for (size_t i = 0; i < n; i++)
        free(t[i].name);
    free(t);
}

static int parse_entry(const cJSON *e, const char *what, const uint8_t *data, uint64_t dsize,
                       mvk_st_tensor *t, char *err, size_t errsz)
{
    const char *name = t->name;
    if (!cJSON_IsObject(e))
        return mvk_errf(err, errsz, "%s: tensor '%s': its header entry is not a JSON object",
                        what, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !dt->valuestring)
        return mvk_errf(err, errsz, "%s: tensor '%s': \"dtype\" is missing or not a string",
                        what, name);
    const struct st_dtype *d = dtype_find(dt->valuestring);
    if (!d)
        return mvk_errf(err, errsz, "%s: tensor '%s': unknown dtype '%.32s'", what, name,
                        dt->valuestring);
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", d->name);
    t->dtype = d->dtype;
    t->elem_bits = d->bits;
    if (!cJSON_IsArray(shape))
        return mvk_errf(err, errsz, "%s: tensor '%s': \"shape\" is missing or not an array",
                        what, name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > MVK_ST_MAX_DIMS)
        return mvk_errf(err, errsz, "%s: tensor '%s': %d dimensions (at most %d supported)",
                        what, name, nd, MVK_ST_MAX_DIMS);
    t->ndim = (uint32_t)nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < nd; i++) {
        uint64_t v;
        if (json_u64(cJSON_GetArrayItem(shape, i), &v))
            return mvk_errf(err, errsz,
                            "%s: tensor '%s': shape[%d] is not an integer in 0..2^53", what,
                            name, i);
        t->shape[i] = v;
        if (v && numel > UINT64_MAX / v)
            overflow = 1;
        else
            numel *= v;
    }
    /* a zero dimension makes the product 0 whatever else overflowed */
    for (int i = 0; i < nd; i++)
        if (t->shape[i] == 0)
            overflow = 0, numel = 0;
    if (overflow || numel > UINT64_MAX / d->bits)
        return mvk_errf(err, errsz,
                        "%s: tensor '%s': the shape's element count overflows 64 bits", what,
                        name);
    t->numel = numel;
    if ((numel * d->bits) % 8)
        return mvk_errf(err, errsz,
                        "%s: tensor '%s': %llu elements of %s do not fill whole bytes", what,
                        name, (unsigned long long)numel, d->name);
    uint64_t nbytes = numel * d->bits / 8;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return mvk_errf(err, errsz,
                        "%s: tensor '%s': \"data_offsets\" is missing or not [begin, end]", what,
                        name);
    if (json_u64(cJSON_GetArrayItem(offs, 0), &t->begin) ||
        json_u64(cJSON_GetArrayItem(offs, 1), &t->end))
        return mvk_errf(err, errsz,
                        "%s: tensor '%s': data_offsets are not integers in 0..2^53", what, name);
    if (t->begin > t->end)
        return mvk_errf(err, errsz,
                        "%s: tensor '%s': data_offsets [%llu, %llu] are reversed (begin > end)",
                        what, name, (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > dsize)
        return mvk_errf(err, errsz,
                        "%s: tensor '%s': data_offsets [%llu, %llu] lie outside the file (its "
                        "data section has %llu bytes)",
                        what, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)dsize);
    if (t->end - t->begin != nbytes) {
        char sb[160];
        return mvk_errf(err, errsz,
                        "%s: tensor '%s': shape %s x %s is %llu bytes but data_offsets span "
                        "%llu bytes",
                        what, name, mvk_shape_str(t->shape, t->ndim, sb, sizeof sb), d->name,
                        (unsigned long long)nbytes, (unsigned long long)(t->end - t->begin));
    }
    t->data = data + t->begin;
    return 0;
}

int mvk_st_parse(const uint8_t *bytes, size_t size, const char *what, mvk_st_file *out,
                 char *err, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    if (!what)
        what = "safetensors";
    if (!bytes || size < 8)
        return mvk_errf(err, errsz,
                        "%s: %zu bytes is too short for a safetensors file (an 8-byte header "
                        "length comes first)",
                        what, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | bytes[i];
    if (n > (uint64_t)size - 8)
        return mvk_errf(err, errsz,
                        "%s: header length %llu goes beyond the end of the file (%zu bytes)",
                        what, (unsigned long long)n, size);
    if (n > MVK_ST_MAX_HEADER)
        return mvk_errf(err, errsz, "%s: header length %llu exceeds the 100 MB limit", what,
                        (unsigned long long)n);
    /* the header's JSON, as strict as config.json's: one value (padded with
     * whitespace), no key twice in an object at any depth (safetensors'
     * own reader refuses a field twice in a tensor's entry; a tensor name
     * twice it would resolve to the last, so it is refused too) */
    char hwhat[1100];
    snprintf(hwhat, sizeof hwhat, "%.1000s: the header", what);
    cJSON *root;
    if (mvk_json_parse((const char *)bytes + 8, (size_t)n, hwhat, &root, err, errsz))
        return -1;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return mvk_errf(err, errsz, "%s: the header is not a JSON object", what);
    }
    const uint8_t *data = bytes + 8 + n;
    uint64_t dsize = (uint64_t)size - 8 - n;
    size_t count = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        if (!e->string || strcmp(e->string, "__metadata__"))
            count++;
    mvk_st_tensor *ts = calloc(count ? count : 1, sizeof(*ts));
    span *order = malloc((count ? count : 1) * sizeof(span));
    int rc = 0;
    size_t k = 0;
    if (!ts || !order) {
        rc = mvk_errf(err, errsz, "%s: out of host memory for %zu tensors", what, count);
        goto done;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        const char *name = e->string ? e->string : "";
        if (!strcmp(name, "__metadata__")) {
            if (!cJSON_IsObject(e) && !cJSON_IsNull(e)) {
                rc = mvk_errf(err, errsz, "%s: \"__metadata__\" is not a JSON object", what);
                goto done;
            }
            for (const cJSON *m = e->child; m; m = m->next)
                if (!cJSON_IsString(m)) {
                    rc = mvk_errf(err, errsz,
                                  "%s: \"__metadata__\" value '%.64s' is not a string", what,
                                  m->string ? m->string : "");
                    goto done;
                }
            continue;
        }
        ts[k].name = mvk_strdup(name);
        if (!ts[k].name) {
            k++;
            rc = mvk_errf(err, errsz, "%s: out of host memory", what);
            goto done;
        }
        k++;
        if ((rc = parse_entry(e, what, data, dsize, &ts[k - 1], err, errsz)))
            goto done;
    }
    qsort(ts, count, sizeof(*ts), cmp_tensor_name); /* names are unique: mvk_json_parse */
    for (size_t i = 0; i < count; i++)
        order[i] = (span){ts[i].begin, ts[i].end, i};
    qsort(order, count, sizeof(*order), cmp_span);
    {
        uint64_t max_end = 0;
        const mvk_st_tensor *last = NULL;
        for (size_t i = 0; i < count; i++) {
            const mvk_st_tensor *t = &ts[order[i].index];
            if (t->begin == t->end)
                continue; /* empty tensors occupy no bytes */
            if (last && t->begin < max_end) {
                rc = mvk_errf(err, errsz,
                              "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap",
                              what, last->name, (unsigned long long)last->begin,
                              (unsigned long long)last->end, t->name,
                              (unsigned long long)t->begin, (unsigned long long)t->end);
                goto done;
            }
            if (t->end > max_end) {
                max_end = t->end;
                last = t;
            }
        }
    }
    out->path = mvk_strdup(what);
    if (!out->path) {
        rc = mvk_errf(err, errsz, "%s: out of host memory", what);
        goto done;
    }
    out->bytes = bytes;
    out->size = size;
    out->tensors = ts;
    out->count = count;
    ts = NULL;
done:
    if (rc)
        free_tensors(ts, k);
    free(order);
    cJSON_Delete(root);
    return rc;
}

int mvk_st_open(const char *path, mvk_st_file *out, char *err, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    int fd;
    uint64_t fsize;
    if (mvk_open_regular(path, &fd, &fsize, err, errsz))
        return -1;
    size_t size = (size_t)fsize;
    if ((uint64_t)size != fsize) {
        close(fd);
        return mvk_errf(err, errsz, "%s is too large to map", path);
    }
    if (size < 8) {
        close(fd);
        return mvk_errf(err, errsz,
                        "%s: %zu bytes is too short for a safetensors file (an 8-byte header "
                        "length comes first)",
                        path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return mvk_errf(err, errsz, "cannot map %s: %s", path, strerror(e));
    if (mvk_st_parse(map, size, path, out, err, errsz)) {
        munmap(map, size);
        return -1;
    }
    out->mapped = 1;
    return 0;
}

void mvk_st_close(mvk_st_file *f)
{
    if (!f)
        return;
    free_tensors(f->tensors, f->count);
    if (f->mapped && f->bytes)
        munmap((void *)f->bytes, f->size);
    free(f->path);
    memset(f, 0, sizeof(*f));
}

const mvk_st_tensor *mvk_st_find(const mvk_st_file *f, const char *name)
{
    if (!f || !f->count || !name)
        return NULL;
    mvk_st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, f->count, sizeof(key), cmp_tensor_name);
}

/* ---- sets -------------------------------------------------------------- */

void mvk_st_set_init(mvk_st_set *s)
{
    memset(s, 0, sizeof(*s));
}

int mvk_st_set_add_parsed(mvk_st_set *s, mvk_st_file *f, char *err, size_t errsz)
{
    if (s->nfiles == s->capfiles) {
        size_t cap = s->capfiles ? s->capfiles * 2 : 4;
        mvk_st_file *nf = realloc(s->files, cap * sizeof(*nf));
        if (!nf) {
            mvk_st_close(f);
            return mvk_errf(err, errsz, "out of host memory");
        }
        s->files = nf;
        s->capfiles = cap;
    }
    s->files[s->nfiles++] = *f;
    memset(f, 0, sizeof(*f));
    return 0;
}

int mvk_st_set_add_file(mvk_st_set *s, const char *path, char *err, size_t errsz)
{
    mvk_st_file f;
    if (mvk_st_open(path, &f, err, errsz))
        return -1;
    return mvk_st_set_add_parsed(s, &f, err, errsz);
}

typedef struct map_entry {
    const char *name, *file;
} map_entry;

static int cmp_map_entry(const void *a, const void *b)
{
    return strcmp(((const map_entry *)a)->name, ((const map_entry *)b)->name);
}

static int shard_name_ok(const char *f)
{
    return f[0] && !strchr(f, '/') && strcmp(f, ".") && strcmp(f, "..");
}

int mvk_st_set_parse_index(mvk_st_set *s, const char *text, size_t len, const char *dir,
                           const char *what, char *err, size_t errsz)
{
    cJSON *root;
    if (mvk_json_parse(text, len, what, &root, err, errsz))
        return -1;
    int rc = 0;
    map_entry *m = NULL;
    size_t n = 0;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(wm)) {
        rc = mvk_errf(err, errsz, "%s has no \"weight_map\" object", what);
        goto done;
    }
    for (const cJSON *e = wm->child; e; e = e->next)
        n++;
    m = malloc((n ? n : 1) * sizeof(*m));
    if (!m) {
        rc = mvk_errf(err, errsz, "out of host memory");
        goto done;
    }
    size_t k = 0;
    for (const cJSON *e = wm->child; e; e = e->next, k++) {
        if (!cJSON_IsString(e) || !e->valuestring || !shard_name_ok(e->valuestring)) {
            rc = mvk_errf(err, errsz,
                          "%s: weight_map entry '%.200s' is not a shard file name in the "
                          "model directory",
                          what, e->string ? e->string : "");
            goto done;
        }
        m[k].name = e->string ? e->string : "";
        m[k].file = e->valuestring;
    }
    qsort(m, n, sizeof(*m), cmp_map_entry); /* names are unique: mvk_json_parse */
    s->map_names = calloc(n ? n : 1, sizeof(char *));
    s->map_files = calloc(n ? n : 1, sizeof(char *));
    s->dir = mvk_strdup(dir ? dir : ".");
    s->index_path = mvk_strdup(what);
    if (!s->map_names || !s->map_files || !s->dir || !s->index_path) {
        rc = mvk_errf(err, errsz, "out of host memory");
        goto done;
    }
    s->map_count = n;
    for (size_t i = 0; i < n; i++) {
        s->map_names[i] = mvk_strdup(m[i].name);
        s->map_files[i] = mvk_strdup(m[i].file);
        if (!s->map_names[i] || !s->map_files[i]) {
            rc = mvk_errf(err, errsz, "out of host memory");
            goto done;
        }
    }
done:
    free(m);
    cJSON_Delete(root);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int mvk_st_set_open_dir(mvk_st_set *s, const char *dir, char *err, size_t errsz)
{
    char *index = mvk_strcat2(dir, "/model.safetensors.index.json");
    char *single = mvk_strcat2(dir, "/model.safetensors");
    int rc = 0;
    struct stat st;
    if (!index || !single) {
        rc = mvk_errf(err, errsz, "out of host memory");
        goto done;
    }
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        rc = mvk_errf(err, errsz, "%s is not a directory", dir);
        goto done;
    }
    if (!stat(index, &st)) {
        char *text;
        size_t len;
        if ((rc = mvk_read_text(index, &text, &len, err, errsz)))
            goto done;
        rc = mvk_st_set_parse_index(s, text, len, dir, index, err, errsz);
        free(text);
        goto done;
    }
    if (!stat(single, &st)) {
        rc = mvk_st_set_add_file(s, single, err, errsz);
        goto done;
    }
    DIR *d = opendir(dir);
    if (!d) {
        rc = mvk_errf(err, errsz, "cannot list %s: %s", dir, strerror(errno));
        goto done;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l <= 12 || strcmp(de->d_name + l - 12, ".safetensors"))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nn = realloc(names, cap * sizeof(*nn));
            if (!nn)
                break;
            names = nn;
        }
        names[n] = mvk_strdup(de->d_name);
        if (!names[n])
            break;
        n++;
    }
    closedir(d);
    if (n == 0)
        rc = mvk_errf(err, errsz,
                      "%s has no model.safetensors.index.json, model.safetensors or other "
                      "*.safetensors file",
                      dir);
    if (names)
        qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; i < n && !rc; i++) {
        char *p1 = mvk_strcat2(dir, "/"), *p = p1 ? mvk_strcat2(p1, names[i]) : NULL;
        rc = p ? mvk_st_set_add_file(s, p, err, errsz) : mvk_errf(err, errsz, "out of memory");
        free(p1);
        free(p);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
done:
    free(index);
    free(single);
    return rc;
}

int mvk_st_set_has(mvk_st_set *s, const char *name)
{
    if (s->map_names) {
        const char **hit = bsearch(&name, s->map_names, s->map_count, sizeof(char *), cmp_str);
        return hit != NULL;
    }
    for (size_t i = 0; i < s->nfiles; i++)
        if (mvk_st_find(&s->files[i], name))
            return 1;
    return 0;
}

const mvk_st_tensor *mvk_st_set_find(mvk_st_set *s, const char *name, char *err, size_t errsz)
{
    if (s->map_names) {
        char **hit = bsearch(&name, s->map_names, s->map_count, sizeof(char *), cmp_str);
        if (!hit) {
            mvk_errf(err, errsz, "missing tensor '%s' (not in %s)", name, s->index_path);
            return NULL;
        }
        const char *shard = s->map_files[hit - s->map_names];
        char *p1 = mvk_strcat2(s->dir, "/"), *path = p1 ? mvk_strcat2(p1, shard) : NULL;
        free(p1);
        if (!path) {
            mvk_errf(err, errsz, "out of host memory");
            return NULL;
        }
        mvk_st_file *f = NULL;
        for (size_t i = 0; i < s->nfiles; i++)
            if (!strcmp(s->files[i].path, path))
                f = &s->files[i];
        if (!f) {
            if (mvk_st_set_add_file(s, path, err, errsz)) {
                free(path);
                return NULL;
            }
            f = &s->files[s->nfiles - 1];
        }
        free(path);
        const mvk_st_tensor *t = mvk_st_find(f, name);
        if (!t)
            mvk_errf(err, errsz, "missing tensor '%s': %s lists it in %s, which does not have it",
                     name, s->index_path, f->path);
        return t;
    }
    for (size_t i = 0; i < s->nfiles; i++) {
        const mvk_st_tensor *t = mvk_st_find(&s->files[i], name);
        if (t)
            return t;
    }
    if (s->nfiles == 1)
        mvk_errf(err, errsz, "missing tensor '%s' (not in %s)", name, s->files[0].path);
    else
        mvk_errf(err, errsz, "missing tensor '%s' (not in any of the %zu safetensors files)",
                 name, s->nfiles);
    return NULL;
}

int mvk_st_set_holds_file(const mvk_st_set *s, const mvk_file_id *id, char *buf, size_t bufsz)
{
    const char *hit = mvk_file_is(s->index_path, id) ? s->index_path : NULL;
    for (size_t i = 0; i < s->nfiles && !hit; i++)
        if (mvk_file_is(s->files[i].path, id))
            hit = s->files[i].path;
    if (hit) {
        snprintf(buf, bufsz, "%s", hit);
        return 1;
    }
    for (size_t i = 0; i < s->map_count; i++) {
        if (i && !strcmp(s->map_files[i], s->map_files[i - 1]))
            continue; /* consecutive tensors of one shard: stat it once */
        char *p1 = mvk_strcat2(s->dir, "/"), *path = p1 ? mvk_strcat2(p1, s->map_files[i]) : NULL;
        int same = path && mvk_file_is(path, id);
        if (same)
            snprintf(buf, bufsz, "%s", path);
        free(p1);
        free(path);
        if (same)
            return 1;
    }
    return 0;
}

void mvk_st_set_free(mvk_st_set *s)
{
    for (size_t i = 0; i < s->nfiles; i++)
        mvk_st_close(&s->files[i]);
    free(s->files);
    for (size_t i = 0; i < s->map_count; i++) {
        if (s->map_names)
            free(s->map_names[i]);
        if (s->map_files)
            free(s->map_files[i]);
    }
    free(s->map_names);
    free(s->map_files);
    free(s->dir);
    free(s->index_path);
    memset(s, 0, sizeof(*s));
}

/* ---- writer ------------------------------------------------------------- */

int mvk_st_write(const char *path, const mvk_st_out *t, size_t n, char *err, size_t errsz)
{
    cJSON *root = cJSON_CreateObject();
    uint64_t off = 0;
    int rc = 0;
    char *hdr = NULL;
    FILE *f = NULL;
    if (!root)
        return mvk_errf(err, errsz, "out of host memory");
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = mvk_st_dtype_bits(t[i].dtype);
        if (!bits || t[i].ndim > MVK_ST_MAX_DIMS) {
            rc = mvk_errf(err, errsz, "tensor '%s': bad dtype or rank", t[i].name);
            goto done;
        }
        uint64_t numel = 1;
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        cJSON *sh = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *of = e ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        if (!e || !sh || !of || !cJSON_AddStringToObject(e, "dtype", t[i].dtype)) {
            rc = mvk_errf(err, errsz, "out of host memory");
            goto done;
        }
        for (uint32_t d = 0; d < t[i].ndim; d++) {
            numel *= t[i].shape[d];
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[d]));
        }
        uint64_t nb = numel * bits / 8;
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
    }
    hdr = cJSON_PrintUnformatted(root);
    if (!hdr) {
        rc = mvk_errf(err, errsz, "out of host memory");
        goto done;
    }
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    f = fopen(path, "wb");
    if (!f) {
        rc = mvk_errf(err, errsz, "cannot create %s: %s", path, strerror(errno));
        goto done;
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(hdr, 1, hl, f) == hl;
    for (size_t i = hl; i < padded && ok; i++)
        ok = fputc(' ', f) != EOF;
    for (size_t i = 0; i < n && ok; i++) {
        uint64_t numel = 1;
        for (uint32_t d = 0; d < t[i].ndim; d++)
            numel *= t[i].shape[d];
        size_t nb = (size_t)(numel * mvk_st_dtype_bits(t[i].dtype) / 8);
        ok = !nb || fwrite(t[i].data, 1, nb, f) == nb;
    }
    if (fclose(f) || !ok)
        rc = mvk_errf(err, errsz, "cannot write %s: %s", path, strerror(errno));
    f = NULL;
done:
    free(hdr);
    cJSON_Delete(root);
    return rc;
}
