#include "model_util.h"

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
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return -1;
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
