#include "model_util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int mvk_errf(char *err, size_t errsz, const char *fmt, ...)
{
    if (err && errsz) {
        char raw[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(raw, sizeof raw, fmt, ap);
        va_end(ap);
        mvk_esc(raw, err, errsz);
    }
    return -1;
}

/* Length of the printable UTF-8 character at p (1..4), or 0 when its first
 * byte must be escaped. */
static size_t utf8_printable(const unsigned char *p)
{
    const unsigned c = p[0];
    if (c >= 0x20 && c < 0x7f)
        return 1;
    if (c < 0xc2 || c > 0xf4) /* C0, DEL, continuation, overlong pair, beyond U+10FFFF */
        return 0;
    const size_t n = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    uint32_t cp = c & (0x7fu >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) /* the NUL terminator stops here too */
            return 0;
        cp = (cp << 6) | (p[i] & 0x3fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp < 0xa0))
        return 0; /* overlong, beyond Unicode, surrogate, C1 control */
    return n;
}

const char *mvk_esc(const char *s, char *buf, size_t bufsz)
{
    if (!bufsz)
        return buf;
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        const size_t n = utf8_printable(p);
        if (o + (n ? n : 4) >= bufsz)
            break;
        if (n) {
            memcpy(buf + o, p, n);
            o += n;
            p += n;
        } else {
            static const char hex[] = "0123456789abcdef";
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[*p >> 4];
            buf[o++] = hex[*p & 15];
            p++;
        }
    }
    buf[o] = 0;
    return buf;
}

char *mvk_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

char *mvk_strcat2(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *d = malloc(na + nb + 1);
    if (!d)
        return NULL;
    memcpy(d, a, na);
    memcpy(d + na, b, nb + 1);
    return d;
}

static const char *file_kind(mode_t m)
{
    return S_ISDIR(m)    ? "a directory"
           : S_ISFIFO(m) ? "a FIFO"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISSOCK(m) ? "a socket"
                         : "not a file";
}

int mvk_open_regular(const char *path, int *fd_out, uint64_t *size, char *err, size_t errsz)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return mvk_errf(err, errsz, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        int e = errno;
        close(fd);
        return mvk_errf(err, errsz, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mvk_errf(err, errsz, "%s is not a regular file (%s)", path, file_kind(st.st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK)) {
        int e = errno;
        close(fd);
        return mvk_errf(err, errsz, "cannot read %s: %s", path, strerror(e));
    }
    *fd_out = fd;
    *size = (uint64_t)st.st_size;
    return 0;
}

int mvk_file_id_of(const char *path, mvk_file_id *id)
{
    struct stat st;
    if (!path || stat(path, &st))
        return -1;
    id->dev = (uint64_t)st.st_dev;
    id->ino = (uint64_t)st.st_ino;
    return 0;
}

int mvk_file_is(const char *path, const mvk_file_id *id)
{
    mvk_file_id other;
    return !mvk_file_id_of(path, &other) && other.dev == id->dev && other.ino == id->ino;
}

int mvk_read_text(const char *path, char **text, size_t *len, char *err, size_t errsz)
{
    int fd;
    uint64_t size;
    if (mvk_open_regular(path, &fd, &size, err, errsz))
        return -1;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return mvk_errf(err, errsz, "out of host memory reading %s", path);
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap > ((size_t)1 << 30)) {
                fclose(f);
                free(buf);
                return mvk_errf(err, errsz, "%s is larger than 1 GiB", path);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf)
        return mvk_errf(err, errsz, "out of host memory reading %s", path);
    if (bad) {
        free(buf);
        return mvk_errf(err, errsz, "cannot read %s", path);
    }
    buf[n] = 0;
    *text = buf;
    *len = n;
    return 0;
}

const char *mvk_shape_str(const uint64_t *shape, uint32_t ndim, char *buf, size_t bufsz)
{
    size_t o = 0;
    if (!bufsz)
        return buf;
    buf[0] = 0;
    o += (size_t)snprintf(buf + o, bufsz - o, "[");
    for (uint32_t i = 0; i < ndim && o < bufsz; i++)
        o += (size_t)snprintf(buf + o, bufsz - o, "%s%llu", i ? ", " : "",
                              (unsigned long long)shape[i]);
    if (o < bufsz)
        snprintf(buf + o, bufsz - o, "]");
    return buf;
}

/* ---- strict JSON ------------------------------------------------------------ */

static int json_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* What cJSON lets through that JSON does not, or cannot represent: NUL in
 * a string, raw control characters in strings, and control characters
 * other than whitespace between tokens (cJSON skips every byte <= 32). */
static int json_chars_ok(const char *text, size_t len, const char *what, char *err, size_t errsz)
{
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (!in_string) {
            if (c == '"')
                in_string = 1;
            else if (c < 0x20 && !json_space(c))
                return mvk_errf(err, errsz,
                                "%s has the control character 0x%02x outside a string (at byte "
                                "%zu)",
                                what, c, i);
        } else if (c == '"') {
            in_string = 0;
        } else if (c == '\\') {
            if (i + 6 <= len && !memcmp(text + i + 1, "u0000", 5))
                return mvk_errf(err, errsz,
                                "%s has a NUL character in a string (\\u0000 at byte %zu), which "
                                "moevk cannot read",
                                what, i);
            i++; /* the escaped character ('"', '\\', 'u', ...) */
        } else if (c == 0) {
            return mvk_errf(err, errsz,
                            "%s has a NUL character in a string (a 0 byte at byte %zu), which "
                            "moevk cannot read",
                            what, i);
        } else if (c < 0x20) {
            return mvk_errf(err, errsz,
                            "%s has the raw control character 0x%02x in a string (at byte %zu; "
                            "JSON needs it escaped)",
                            what, c, i);
        }
    }
    return 0;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A key that appears twice among obj's members (*dup, NULL if none):
 * pairwise for a few members, sorted for many. -1 when out of memory. */
static int json_dup_key(const cJSON *obj, const char **dup)
{
    size_t n = 0;
    *dup = NULL;
    for (const cJSON *e = obj->child; e; e = e->next)
        n++;
    if (n <= 16) {
        for (const cJSON *a = obj->child; a && !*dup; a = a->next)
            for (const cJSON *b = a->next; b && !*dup; b = b->next)
                if (!strcmp(a->string ? a->string : "", b->string ? b->string : ""))
                    *dup = a->string ? a->string : "";
        return 0;
    }
    const char **keys = malloc(n * sizeof(*keys));
    if (!keys)
        return -1;
    size_t k = 0;
    for (const cJSON *e = obj->child; e; e = e->next)
        keys[k++] = e->string ? e->string : "";
    qsort(keys, n, sizeof(*keys), cmp_cstr);
    for (size_t i = 1; i < n && !*dup; i++)
        if (!strcmp(keys[i - 1], keys[i]))
            *dup = keys[i];
    free(keys);
    return 0;
}

/* No object in v (v itself or nested, to cJSON's nesting limit) has a key
 * twice. */
static int json_keys_unique(const cJSON *v, int top, const char *what, char *err, size_t errsz)
{
    if (cJSON_IsObject(v)) {
        const char *dup;
        if (json_dup_key(v, &dup))
            return mvk_errf(err, errsz, "out of host memory reading %s", what);
        if (dup && top)
            return mvk_errf(err, errsz, "%s has the key \"%s\" twice in the top-level object",
                            what, dup);
        if (dup && v->string)
            return mvk_errf(err, errsz, "%s has the key \"%s\" twice in object \"%s\"", what, dup,
                            v->string);
        if (dup)
            return mvk_errf(err, errsz, "%s has the key \"%s\" twice in an object in an array",
                            what, dup);
    }
    if (cJSON_IsObject(v) || cJSON_IsArray(v))
        for (const cJSON *e = v->child; e; e = e->next)
            if (json_keys_unique(e, 0, what, err, errsz))
                return -1;
    return 0;
}

int mvk_json_parse(const char *text, size_t len, const char *what, cJSON **out, char *err,
                   size_t errsz)
{
    *out = NULL;
    const char *end = NULL;
    cJSON *root = text ? cJSON_ParseWithLengthOpts(text, len, &end, 0) : NULL;
    if (!root)
        return mvk_errf(err, errsz, "%s is not valid JSON (at byte %zu)", what,
                        text && end ? (size_t)(end - text) : 0);
    size_t used = (size_t)(end - text);
    for (size_t i = used; i < len; i++)
        if (!json_space((unsigned char)text[i])) {
            cJSON_Delete(root);
            return mvk_errf(err, errsz, "%s has bytes after its JSON value (at byte %zu)", what,
                            i);
        }
    if (json_chars_ok(text, used, what, err, errsz) ||
        json_keys_unique(root, 1, what, err, errsz)) {
        cJSON_Delete(root);
        return -1;
    }
    *out = root;
    return 0;
}
