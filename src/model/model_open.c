/*
 * A checkpoint's MoE block from a path (model_open.h).
 */
#include "model/model_open.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_util.h"

const char *mvk_model_block_arch(const mvk_model_block *b)
{
    const mvk_model_layer *ml = &b->layer;
    return ml->arch ? mvk_arch_name(ml->arch) : ml->arch_name ? ml->arch_name : "unknown";
}

void mvk_model_block_close(mvk_model_block *b)
{
    if (!b)
        return;
    mvk_model_layer_free(&b->layer);
    mvk_gguf_free(&b->gguf);
    mvk_st_set_free(&b->set);
    mvk_hf_config_free(&b->cfg);
    free(b->cfg_text);
    free(b->cfg_path);
    memset(b, 0, sizeof *b);
    mvk_st_set_init(&b->set);
}

static int open_gguf(mvk_model_block *b, const char *path, long layer, const char *prefix,
                     int decoder, const char *part, char *err, size_t errsz)
{
    if (part)
        return mvk_errf(err, errsz, "a part (\"%.64s\") is not for a GGUF file", part);
    if (prefix)
        return mvk_errf(err, errsz, "a prefix is not for a GGUF file: give the layer number");
    if (decoder)
        return mvk_errf(err, errsz, "the decoder stack is not for a GGUF file");
    if (layer < 0)
        return mvk_errf(err, errsz, "a GGUF model needs a layer number");
    if (layer > (long)UINT32_MAX)
        return mvk_errf(err, errsz, "layer %ld is out of range", layer);
    if (mvk_gguf_open(path, &b->gguf, err, errsz))
        return -1;
    if (mvk_gguf_layer_build(&b->gguf, (uint32_t)layer, &b->layer, &b->gguf_info, err, errsz))
        return -1;
    b->act_name = b->gguf_info.arch->act_name;
    return 0;
}

static int open_hf(mvk_model_block *b, const char *dir, long layer, const char *prefix,
                   int decoder, const char *part, char *err, size_t errsz)
{
    size_t len;
    b->cfg_path = mvk_strcat2(dir, "/config.json");
    if (!b->cfg_path)
        return mvk_errf(err, errsz, "out of host memory");
    if (mvk_read_text(b->cfg_path, &b->cfg_text, &len, err, errsz) ||
        mvk_hf_config_parse_part(b->cfg_text, len, b->cfg_path, part, &b->cfg, err, errsz))
        return -1;
    char prefixes[MVK_MAX_PREFIXES][MVK_PREFIX_LEN];
    int nprefix = 0;
    if (prefix && layer >= 0)
        return mvk_errf(err, errsz, "give a layer number or a prefix, not both");
    if (prefix) {
        size_t pl = strlen(prefix);
        if (pl + 2 > MVK_PREFIX_LEN)
            return mvk_errf(err, errsz, "the prefix is longer than %d characters",
                            MVK_PREFIX_LEN - 2);
        snprintf(prefixes[0], MVK_PREFIX_LEN, "%s%s", prefix,
                 pl && prefix[pl - 1] != '.' ? "." : "");
        nprefix = 1;
    } else {
        if (layer < 0)
            return mvk_errf(err, errsz, "a layer number (or a prefix) is needed");
        if (layer > (long)UINT32_MAX)
            return mvk_errf(err, errsz, "layer %ld is out of range", layer);
        if (mvk_hf_layer_prefixes(&b->cfg, (uint32_t)layer, decoder, prefixes, &nprefix, err,
                                  errsz))
            return -1;
    }
    if (mvk_st_set_open_dir(&b->set, dir, err, errsz))
        return -1;
    const char *pp[MVK_MAX_PREFIXES];
    for (int i = 0; i < MVK_MAX_PREFIXES; i++)
        pp[i] = prefixes[i];
    if (mvk_model_layer_build_any(&b->cfg, &b->set, pp, nprefix, &b->layer, err, errsz))
        return -1;
    b->act_name = b->cfg.act_name;
    return 0;
}

int mvk_model_block_open(mvk_model_block *b, const char *path, long layer, const char *prefix,
                         int decoder, const char *part, char *err, size_t errsz)
{
    memset(b, 0, sizeof *b);
    mvk_st_set_init(&b->set);
    if (!path || !*path)
        return mvk_errf(err, errsz, "no model path given");
    int rc = mvk_gguf_is_gguf(path)
                 ? open_gguf(b, path, layer, prefix, decoder, part, err, errsz)
                 : open_hf(b, path, layer, prefix, decoder, part, err, errsz);
    if (rc) {
        mvk_model_block_close(b);
        return -1;
    }
    return 0;
}
