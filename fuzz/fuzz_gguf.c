/*
 * libFuzzer target: the GGUF reader, then the MoE block loader on layers
 * 0..2 of whatever the input declares (its general.architecture, or each
 * architecture of the table when it names none that exists), then the
 * non-finite scan and the CPU reference on a built block, so every pointer
 * the loader hands out is read. Failure messages must be escaped (no
 * control character). ASan/UBSan turn any out-of-bounds read or undefined
 * behaviour into a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/gguf_layer.h"
#include "ref/ref.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    mvk_gguf_file f;
    if (mvk_gguf_parse(data, size, "fuzz", &f, err, sizeof err)) {
        message_is_clean(err);
        return 0;
    }
    /* every tensor's bytes lie inside the input, and lookups find them */
    uint64_t acc = 0;
    for (size_t i = 0; i < f.ntensors; i++) {
        const mvk_gguf_tensor *t = &f.tensors[i];
        if (t->data < data || t->data + t->nbytes > data + size)
            abort();
        for (uint64_t b = 0; b < t->nbytes; b++)
            acc += t->data[b];
        if (mvk_gguf_file_find(&f, t->name) != t)
            abort();
    }
    if (acc == UINT64_MAX)
        abort();
    mvk_gguf_file *files = malloc(sizeof(*files));
    if (!files) {
        mvk_gguf_close_file(&f);
        return 0;
    }
    files[0] = f;
    mvk_gguf m;
    if (mvk_gguf_assemble(files, 1, &m, err, sizeof err)) {
        message_is_clean(err);
        return 0;
    }
    for (uint32_t layer = 0; layer < 3; layer++) {
        mvk_model_layer L;
        mvk_gguf_layer_info info;
        if (mvk_gguf_layer_build(&m, layer, &L, &info, err, sizeof err)) {
            message_is_clean(err);
            continue;
        }
        char where[160];
        mvk_model_layer_nonfinite(&L, where, sizeof where);
        const uint32_t H = L.desc.hidden;
        float *x = malloc(sizeof(float) * 2 * H), *y = malloc(sizeof(float) * 2 * H);
        if (x && y) {
            for (uint32_t i = 0; i < 2 * H; i++)
                x[i] = (float)((int)(i % 7) - 3) * 0.25f;
            if (moevk_ref_layer_forward(&L.desc, 2, x, y, NULL, NULL, NULL, NULL))
                abort(); /* a built block is a valid desc */
        }
        free(x);
        free(y);
        mvk_model_layer_free(&L);
    }
    mvk_gguf_free(&m);
    return 0;
}
