/*
 * Small helpers shared by the checkpoint loader's files.
 */
#ifndef MOEVK_MODEL_UTIL_H
#define MOEVK_MODEL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define MVK_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MVK_PRINTF(a, b)
#endif

/* snprintf into err (if non-NULL) and return -1. The message is escaped
 * (mvk_esc): names, keys, dtypes and paths taken from files enter it raw. */
int mvk_errf(char *err, size_t errsz, const char *fmt, ...) MVK_PRINTF(3, 4);
/* s made safe to print, into buf: printable ASCII and valid UTF-8 are kept;
 * control characters (C0, DEL, C1) and bytes that are not valid UTF-8
 * (overlong, surrogates, cut sequences, > U+10FFFF) become \xNN, one per
 * byte. Backslashes are kept, so escaping twice changes nothing. Truncated
 * to bufsz without splitting an escape or a character. Returns buf. Every
 * message built from file content goes through it (mvk_errf does). */
const char *mvk_esc(const char *s, char *buf, size_t bufsz);

/* malloc'd copy of s (NULL on failure or for NULL). */
char *mvk_strdup(const char *s);
/* malloc'd "a" + "b" (NULL on failure). */
char *mvk_strcat2(const char *a, const char *b);
/* Open a file for reading, refusing anything but a regular file with a
 * message naming it and its kind ("... is not a regular file (a FIFO)"):
 * the open never waits (O_NONBLOCK, so a FIFO without a writer cannot hang
 * it), the type is taken from the opened descriptor (fstat). Returns 0 with
 * *fd (blocking again) and *size, or -1 with a message. */
int mvk_open_regular(const char *path, int *fd, uint64_t *size, char *err, size_t errsz);
/* A file's identity: device and inode (the same for every spelling of its
 * path, through symlinks and hard links). */
typedef struct mvk_file_id {
    uint64_t dev, ino;
} mvk_file_id;
/* The identity of the file path names (symlinks followed): 0, or -1 when it
 * does not exist or cannot be reached. */
int mvk_file_id_of(const char *path, mvk_file_id *id);
/* 1 when path names the file `id`, else 0 (also when path is NULL). */
int mvk_file_is(const char *path, const mvk_file_id *id);
/* Read a whole regular file into a NUL-terminated malloc'd buffer. */
int mvk_read_text(const char *path, char **text, size_t *len, char *err, size_t errsz);
struct cJSON;
/* Parse JSON text the way every reader of these files agrees on, refusing
 * what cJSON alone would accept or read differently: bytes other than
 * whitespace after the value; a key twice in one object, at any depth
 * (Python's json and transformers take the last, cJSON the first); a NUL
 * character in a string (\u0000 or a raw 0 byte: cJSON would cut the
 * string there); a raw control character in a string, or one other than
 * space, tab, CR and LF between tokens. `what` names the text in messages
 * (with the byte offset, and the key). Returns 0 with *out (cJSON_Delete
 * it), or -1 with a message. */
int mvk_json_parse(const char *text, size_t len, const char *what, struct cJSON **out, char *err,
                   size_t errsz);
/* "[a, b, c]" of a shape into buf. */
const char *mvk_shape_str(const uint64_t *shape, uint32_t ndim, char *buf, size_t bufsz);

#endif
