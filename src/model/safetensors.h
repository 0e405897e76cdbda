/*
 * safetensors files: a checked, memory-mapped reader and a small writer.
 *
 * Format (https://github.com/huggingface/safetensors): an 8-byte
 * little-endian header length N, N bytes of a JSON object (optionally padded
 * with spaces), then the data section. Each key other than "__metadata__"
 * names a tensor: {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]},
 * offsets relative to the data section.
 *
 * The reader checks everything before any data is touched: the header length
 * fits in the file (and is at most 100 MB), the header is one JSON object
 * and nothing but whitespace after it, with no key twice in any object (nor
 * NUL or raw control characters: mvk_json_parse),
 * every tensor has a known dtype, a shape of non-negative integers whose
 * element count does not overflow, offsets in order (begin <= end) inside the
 * data section, shape x dtype size == end - begin and no two tensors
 * overlap. Every error message names the file and the tensor.
 * Data gaps between tensors are allowed; the host must be little-endian.
 */
#ifndef MOEVK_MODEL_SAFETENSORS_H
#define MOEVK_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "model_util.h"

#define MVK_ST_MAX_DIMS 8
#define MVK_ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct mvk_st_tensor {
    char *name;
    char dtype_name[16];   /* as written in the file: "BF16", "F8_E4M3", ... */
    int dtype;             /* a moevk_dtype (F32, F16, BF16), or -1 for any other */
    uint32_t elem_bits;    /* bits per element of dtype_name */
    uint32_t ndim;
    uint64_t shape[MVK_ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end;   /* byte offsets in the data section */
    const uint8_t *data;   /* begin .. end, inside the file's bytes */
} mvk_st_tensor;

typedef struct mvk_st_file {
    char *path;            /* for messages */
    const uint8_t *bytes;  /* the whole file */
    size_t size;
    int mapped;            /* bytes is an mmap of the file (else borrowed) */
    mvk_st_tensor *tensors; /* sorted by name */
    size_t count;
} mvk_st_file;

/* Parse and check a safetensors image held in memory (borrowed: it must
 * outlive *out). `what` names it in messages. Returns 0, or -1 with a message
 * in err (err may be NULL). */
int mvk_st_parse(const uint8_t *bytes, size_t size, const char *what, mvk_st_file *out,
                 char *err, size_t errsz);
/* Memory-map a file read-only and parse it. */
int mvk_st_open(const char *path, mvk_st_file *out, char *err, size_t errsz);
void mvk_st_close(mvk_st_file *f);
const mvk_st_tensor *mvk_st_find(const mvk_st_file *f, const char *name);

/* ---- a set of files: one checkpoint ----------------------------------- */

/* A checkpoint: one or more safetensors files looked up by tensor name.
 * With a model.safetensors.index.json, shards are opened only when one of
 * their tensors is asked for. */
typedef struct mvk_st_set {
    char *dir;             /* directory of the shards (index mode), or NULL */
    char *index_path;
    char **map_names;      /* index mode: tensor name -> shard file name,  */
    char **map_files;      /*   sorted by name                              */
    size_t map_count;
    mvk_st_file *files;
    size_t nfiles, capfiles;
} mvk_st_set;

void mvk_st_set_init(mvk_st_set *s);
/* Add one file (opened now). */
int mvk_st_set_add_file(mvk_st_set *s, const char *path, char *err, size_t errsz);
/* Add an already parsed file (the set takes it over). */
int mvk_st_set_add_parsed(mvk_st_set *s, mvk_st_file *f, char *err, size_t errsz);
/* A model directory: model.safetensors.index.json if present, else
 * model.safetensors, else every *.safetensors in it. */
int mvk_st_set_open_dir(mvk_st_set *s, const char *dir, char *err, size_t errsz);
/* Parse the text of a model.safetensors.index.json into the set's map
 * (shards relative to dir). Exposed for the fuzzer. */
int mvk_st_set_parse_index(mvk_st_set *s, const char *text, size_t len, const char *dir,
                           const char *what, char *err, size_t errsz);
/* Find a tensor: NULL with a message when it is absent or its shard cannot
 * be opened (err may be NULL for a quiet probe of presence). */
const mvk_st_tensor *mvk_st_set_find(mvk_st_set *s, const char *name, char *err, size_t errsz);
/* 1 if the checkpoint has a tensor of that name (opens no shard in index mode). */
int mvk_st_set_has(mvk_st_set *s, const char *name);
/* 1 when one of the checkpoint's files is the file `id` (the index, an
 * opened file, or a shard the index lists, opened or not), with its path in
 * buf; else 0. */
int mvk_st_set_holds_file(const mvk_st_set *s, const mvk_file_id *id, char *buf, size_t bufsz);
void mvk_st_set_free(mvk_st_set *s);

/* ---- writer ----------------------------------------------------------- */

typedef struct mvk_st_out {
    const char *name;
    const char *dtype;     /* "F32", "F16", "BF16", ... */
    uint32_t ndim;
    uint64_t shape[MVK_ST_MAX_DIMS];
    const void *data;      /* numel x dtype bytes */
} mvk_st_out;

/* Write tensors (in the order given, data 8-byte aligned) to path. */
int mvk_st_write(const char *path, const mvk_st_out *t, size_t n, char *err, size_t errsz);

/* Bits per element of a safetensors dtype name, 0 if unknown. */
uint32_t mvk_st_dtype_bits(const char *dtype_name);

#endif
