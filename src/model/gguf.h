/*
 * GGUF files (llama.cpp's format): a checked, memory-mapped reader.
 *
 * Layout (little-endian): "GGUF", a u32 version (2 or 3; version 1 had
 * 32-bit counts and is refused), u64 tensor count, u64 KV count; the KV
 * pairs (a string key, a u32 type, the value); the tensor infos (a string
 * name, a u32 dimension count, that many u64 dimensions ne[0..], innermost
 * first, a u32 ggml type, a u64 offset in the data section); padding to
 * general.alignment (default 32); the data section. A string is a u64
 * length and that many bytes.
 *
 * Every byte is treated as hostile; before anything is allocated or used:
 *  - magic, version 2 or 3;
 *  - the KV and tensor counts against what the file's bytes can hold;
 *  - every string and array length against the bytes left; a key or a
 *    tensor name is non-empty, has no NUL byte, and a tensor name is shorter
 *    than 64 bytes (ggml's GGML_MAX_NAME); no key and no tensor name twice;
 *  - KV types 0..12; a bool is 0 or 1; arrays of arrays are refused;
 *  - general.alignment, when present, is a u32 power of two;
 *  - tensor dimensions: 1..4 of them, their product overflow-checked, the
 *    first (the row) a whole number of blocks of the type, known ggml types
 *    only (moevk's formats and the others, which are listed but not run);
 *  - offsets: multiples of the alignment, inside the data section, no two
 *    tensors overlapping.
 * Errors: a moevk_status (MOEVK_ERROR_INVALID_ARGUMENT for a malformed
 * file, MOEVK_ERROR_OUT_OF_HOST_MEMORY) and a message that names the file,
 * the field or tensor and the bad value (escaped: mvk_esc). Nothing leaks on
 * failure. The host must be little-endian.
 *
 * Split models (llama.cpp's gguf-split: NAME-00001-of-0000K.gguf, the
 * metadata split.count, split.no and split.tensors.count) are opened
 * together by mvk_gguf_open from the path of any of their files.
 */
#ifndef MOEVK_MODEL_GGUF_H
#define MOEVK_MODEL_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "moevk/moevk.h"

#define MVK_GGUF_MAX_DIMS 4
#define MVK_GGUF_MAX_NAME 64      /* a tensor name is shorter (ggml)       */
#define MVK_GGUF_MAX_KEY 65535    /* a key is at most this long            */
#define MVK_GGUF_DEFAULT_ALIGNMENT 32
#define MVK_GGUF_MAX_SPLITS 9999

/* KV value types, as the file numbers them. */
typedef enum mvk_gguf_vtype {
    MVK_GGUF_U8 = 0,
    MVK_GGUF_I8 = 1,
    MVK_GGUF_U16 = 2,
    MVK_GGUF_I16 = 3,
    MVK_GGUF_U32 = 4,
    MVK_GGUF_I32 = 5,
    MVK_GGUF_F32 = 6,
    MVK_GGUF_BOOL = 7,
    MVK_GGUF_STRING = 8,
    MVK_GGUF_ARRAY = 9,
    MVK_GGUF_U64 = 10,
    MVK_GGUF_I64 = 11,
    MVK_GGUF_F64 = 12,
    MVK_GGUF_VTYPE_COUNT
} mvk_gguf_vtype;

typedef struct mvk_gguf_kv {
    char *key;
    uint32_t type;        /* mvk_gguf_vtype */
    uint32_t arr_type;    /* ARRAY: the elements' type                    */
    uint64_t count;       /* ARRAY: elements; STRING: bytes               */
    union {
        uint64_t u;       /* U8..U64, BOOL                                 */
        int64_t i;        /* I8..I64                                       */
        double f;         /* F32, F64                                      */
    } v;
    char *str;            /* STRING: a NUL-terminated copy (may hold NULs) */
    const uint8_t *data;  /* ARRAY: its first element, in the file         */
} mvk_gguf_kv;

typedef struct mvk_gguf_tensor {
    char *name;
    uint32_t ndim;
    uint64_t ne[MVK_GGUF_MAX_DIMS]; /* ggml order: ne[0] is a row; unused = 1 */
    uint32_t type;        /* ggml type id                                  */
    int dtype;            /* the moevk_dtype of that type, or -1 for none  */
    uint64_t offset;      /* in the data section                           */
    uint64_t nbytes;
    const uint8_t *data;  /* offset .. offset + nbytes, inside the file    */
    uint32_t split;       /* which file of the model holds it              */
} mvk_gguf_tensor;

typedef struct mvk_gguf_file {
    char *path;           /* for messages */
    const uint8_t *bytes; /* the whole file */
    size_t size;
    int mapped;           /* bytes is an mmap of the file (else borrowed)  */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset; /* the data section's start in the file          */
    mvk_gguf_kv *kv;      /* in file order */
    size_t nkv;
    mvk_gguf_tensor *tensors; /* sorted by name */
    size_t ntensors;
} mvk_gguf_file;

/* Parse and check a GGUF image held in memory (borrowed: it must outlive
 * *out). `what` names it in messages. */
moevk_status mvk_gguf_parse(const uint8_t *bytes, size_t size, const char *what,
                            mvk_gguf_file *out, char *err, size_t errsz);
/* Memory-map a regular file read-only and parse it. */
moevk_status mvk_gguf_open_file(const char *path, mvk_gguf_file *out, char *err, size_t errsz);
void mvk_gguf_close_file(mvk_gguf_file *f);
const mvk_gguf_kv *mvk_gguf_kv_find(const mvk_gguf_file *f, const char *key);
const mvk_gguf_tensor *mvk_gguf_file_find(const mvk_gguf_file *f, const char *name);

/* ---- a model: one file or all of its splits --------------------------- */

typedef struct mvk_gguf {
    mvk_gguf_file *files; /* split order; files[0] holds the metadata      */
    uint32_t nfiles;
    const mvk_gguf_tensor **tensors; /* of every file, sorted by name */
    size_t ntensors;
} mvk_gguf;

/* Open a GGUF model: the file, or, when its split.count is over 1, every
 * split NAME-%05d-of-%05d.gguf beside it (path names any of them). Checks
 * each split's split.no and split.count and the total against
 * split.tensors.count; a tensor name in two splits is refused. */
moevk_status mvk_gguf_open(const char *path, mvk_gguf *m, char *err, size_t errsz);
/* The same over splits already parsed (taken over, also on failure):
 * exposed for the fuzzer and the tests. */
moevk_status mvk_gguf_assemble(mvk_gguf_file *files, uint32_t n, mvk_gguf *m, char *err,
                               size_t errsz);
void mvk_gguf_free(mvk_gguf *m);
const mvk_gguf_tensor *mvk_gguf_find(const mvk_gguf *m, const char *name);
/* 1 when the path's first four bytes are "GGUF" (a regular file). */
int mvk_gguf_is_gguf(const char *path);

/* ---- metadata, typed ---------------------------------------------------- */

/* Read key as an unsigned integer of any integer type whose value fits
 * 0..max. Returns 1 when read, 0 when absent (then *v = def), -1 with a
 * message for a wrong type or an out-of-range value. */
int mvk_gguf_get_uint(const mvk_gguf_file *f, const char *key, uint64_t max, uint64_t def,
                      uint64_t *v, char *err, size_t errsz);
/* A float (F32/F64, or an integer type). Same returns; NaN/Inf refused. */
int mvk_gguf_get_float(const mvk_gguf_file *f, const char *key, double def, double *v,
                       char *err, size_t errsz);
/* A bool (BOOL, or an integer 0/1). */
int mvk_gguf_get_bool(const mvk_gguf_file *f, const char *key, int def, int *v, char *err,
                      size_t errsz);
/* A string without NUL bytes (borrowed from f). */
int mvk_gguf_get_string(const mvk_gguf_file *f, const char *key, const char **v, char *err,
                        size_t errsz);

/* ---- ggml types ---------------------------------------------------------- */

/* Name ("q4_k", "iq2_xxs", ...) of a ggml type id, or NULL if unknown. */
const char *mvk_gguf_type_name(uint32_t type);
/* Block geometry of a known type (0 when unknown). */
uint32_t mvk_gguf_type_block_elems(uint32_t type);
uint32_t mvk_gguf_type_block_bytes(uint32_t type);
/* The moevk_dtype with the same bytes, or -1 (moevk has no such format). */
int mvk_gguf_type_dtype(uint32_t type);
/* The ggml type id of a moevk dtype that has one, else -1. */
int mvk_gguf_dtype_type(moevk_dtype dtype);
/* Name of a KV type ("u32", "string", ...). */
const char *mvk_gguf_vtype_name(uint32_t t);

#endif
