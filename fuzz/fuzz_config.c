/*
 * libFuzzer target: config.json parsing (every architecture's fields and
 * defaults, then which layers hold a MoE block) and the
 * model.safetensors.index.json parser. Inputs are not NUL-terminated;
 * failure messages must be escaped (no control character).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/hf_config.h"
#include "model/safetensors.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    const char *text = (const char *)data;
    mvk_moe_config c;
    if (!mvk_hf_config_parse(text, size, "fuzz", &c, err, sizeof err)) {
        static const uint32_t layers[] = {0, 1, 2, 3, 7, 61, 1000000, UINT32_MAX};
        for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
            for (int dec = 0; dec < 2; dec++) {
                char p[MVK_MAX_PREFIXES][MVK_PREFIX_LEN];
                int n;
                if (!mvk_hf_layer_prefixes(&c, layers[i], dec, p, &n, err, sizeof err) &&
                    (n < 1 || n > MVK_MAX_PREFIXES || !memchr(p[0], 0, MVK_PREFIX_LEN)))
                    abort();
            }
        mvk_hf_config_free(&c);
    } else {
        message_is_clean(err);
    }
    mvk_st_set s;
    mvk_st_set_init(&s);
    if (!mvk_st_set_parse_index(&s, text, size, "/nonexistent-moevk-fuzz", "fuzz", err,
                                sizeof err)) {
        for (size_t i = 0; i < s.map_count; i++) {
            if (!mvk_st_set_has(&s, s.map_names[i]))
                abort();
            /* the shard cannot be opened: a clean error */
            if (i < 4 && mvk_st_set_find(&s, s.map_names[i], err, sizeof err))
                abort();
            if (i < 4)
                message_is_clean(err);
        }
    } else {
        message_is_clean(err);
    }
    mvk_st_set_free(&s);
    return 0;
}
