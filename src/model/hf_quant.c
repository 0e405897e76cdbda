/*
 * Quantised Hugging Face checkpoints repacked into moevk's blocks
 * (hf_quant.h has the layouts). The conventions follow the libraries that
 * write and read these files: AutoGPTQ / GPTQModel (GPTQ), AutoAWQ (AWQ
 * GEMM), bitsandbytes (QuantState.as_dict / from_dict, dequantize_4bit,
 * dequantize_blockwise), transformers' fine-grained FP8 (DeepSeek-V3's
 * weight_scale_inv) and compressed-tensors (quant_config.py, quant_args.py,
 * lifecycle/apply.py, initialize.py and forward.py: which modules a
 * scheme quantises, the scale shapes, dequantize); docs/semantics.md says
 * what each value is and where
 * moevk differs (it keeps the f32 product; the libraries then round to
 * their compute dtype).
 */
#include "hf_quant.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "formats.h"
#include "model_util.h"
#include "ref/ref.h"

/* ---- quantization_config ------------------------------------------------- */

typedef struct qreader {
    const cJSON *qc;
    const char *what;
    char *err;
    size_t errsz;
} qreader;

/* The first of two names present with a non-null value, or NULL. */
static const cJSON *qget(const qreader *r, const char *name, const char *alias,
                         const char **found)
{
    const char *names[2] = {name, alias};
    for (int i = 0; i < 2 && names[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->qc, names[i]);
        if (v && !cJSON_IsNull(v)) {
            *found = names[i];
            return v;
        }
    }
    *found = name;
    return NULL;
}

static int qint(const qreader *r, const char *name, const char *alias, int64_t def, int64_t lo,
                int64_t hi, int64_t *out)
{
    const char *n;
    const cJSON *v = qget(r, name, alias, &n);
    *out = def;
    if (!v)
        return 0;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d)) {
        if (cJSON_IsNumber(v))
            return mvk_errf(r->err, r->errsz,
                            "%s: quantization_config \"%s\" = %g is not an integer in %lld..%lld",
                            r->what, n, d, (long long)lo, (long long)hi);
        return mvk_errf(r->err, r->errsz, "%s: quantization_config \"%s\" is not a number",
                        r->what, n);
    }
    *out = (int64_t)d;
    return 0;
}

static int qbool(const qreader *r, const char *name, int def, int *out)
{
    const char *n;
    const cJSON *v = qget(r, name, NULL, &n);
    *out = def;
    if (!v)
        return 0;
    if (!cJSON_IsBool(v))
        return mvk_errf(r->err, r->errsz, "%s: quantization_config \"%s\" is not true or false",
                        r->what, n);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* A string value (def when absent), at most bufsz - 1 bytes. */
static int qstr(const qreader *r, const char *name, const char *alias, const char *def, char *buf,
                size_t bufsz)
{
    const char *n;
    const cJSON *v = qget(r, name, alias, &n);
    if (v && (!cJSON_IsString(v) || !v->valuestring))
        return mvk_errf(r->err, r->errsz, "%s: quantization_config \"%s\" is not a string",
                        r->what, n);
    const char *s = v ? v->valuestring : def;
    if (strlen(s) >= bufsz)
        return mvk_errf(r->err, r->errsz, "%s: quantization_config \"%s\" = \"%.40s...\" is not "
                        "a known value", r->what, n, s);
    snprintf(buf, bufsz, "%s", s);
    return 0;
}

/* bits: 4 only; group_size: -1 or a positive multiple of 32. */
static int read_int4(const qreader *r, const char *bits_alias, const char *gs_alias,
                     mvk_hfq_config *q)
{
    int64_t bits, gs;
    if (qint(r, "bits", bits_alias, 4, 0, 64, &bits) ||
        qint(r, "group_size", gs_alias, 128, -1, INT32_MAX, &gs))
        return -1;
    if (bits != 4)
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config \"bits\" = %lld: only 4-bit weights are "
                        "supported",
                        r->what, (long long)bits);
    if (gs != -1 && (gs <= 0 || gs % 32))
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config \"group_size\" = %lld is neither -1 nor a "
                        "multiple of 32 (moevk's gptq4 blocks hold 32 inputs of one group)",
                        r->what, (long long)gs);
    q->bits = 4;
    q->group_size = gs;
    return 0;
}

static int read_gptq(const qreader *r, mvk_hfq_config *q)
{
    char fmt[32], pack[16];
    int marlin;
    if (read_int4(r, NULL, NULL, q) || qbool(r, "desc_act", 0, &q->desc_act) ||
        qbool(r, "sym", 1, &q->sym) || qbool(r, "is_marlin_format", 0, &marlin) ||
        qstr(r, "checkpoint_format", "format", "gptq", fmt, sizeof fmt) ||
        qstr(r, "pack_dtype", NULL, "int32", pack, sizeof pack))
        return -1;
    if (marlin)
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config \"is_marlin_format\" = true: the Marlin "
                        "layout is not supported (GPTQ format gptq or gptq_v2)",
                        r->what);
    if (!strcmp(fmt, "gptq"))
        q->gptq_v2 = 0;
    else if (!strcmp(fmt, "gptq_v2"))
        q->gptq_v2 = 1;
    else
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config checkpoint format \"%s\" is not supported "
                        "(gptq or gptq_v2)",
                        r->what, fmt);
    if (strcmp(pack, "int32"))
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config \"pack_dtype\" = \"%s\" is not supported "
                        "(int32)",
                        r->what, pack);
    return 0;
}

static int read_awq(const qreader *r, mvk_hfq_config *q)
{
    char version[32], backend[32];
    int zp;
    if (read_int4(r, "w_bit", "q_group_size", q) ||
        qstr(r, "version", NULL, "gemm", version, sizeof version) ||
        qstr(r, "backend", NULL, "autoawq", backend, sizeof backend) ||
        qbool(r, "zero_point", 1, &zp))
        return -1;
    if (strcasecmp(version, "gemm"))
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config AWQ \"version\" = \"%s\" is not supported (gemm)",
                        r->what, version);
    if (strcmp(backend, "autoawq"))
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config AWQ \"backend\" = \"%s\" is not supported "
                        "(autoawq)",
                        r->what, backend);
    if (!zp)
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config AWQ \"zero_point\" = false is not supported",
                        r->what);
    return 0;
}

static int read_bnb(const qreader *r, mvk_hfq_config *q)
{
    int in4, in8;
    char qt[16];
    if (qbool(r, "load_in_4bit", 0, &in4) || qbool(r, "load_in_8bit", 0, &in8) ||
        qbool(r, "bnb_4bit_use_double_quant", 0, &q->double_quant) ||
        qstr(r, "bnb_4bit_quant_type", NULL, "fp4", qt, sizeof qt))
        return -1;
    if (in8 || !in4)
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config bitsandbytes %s: only 4-bit NF4 "
                        "(load_in_4bit) is supported",
                        r->what, in8 ? "load_in_8bit (LLM.int8)" : "without load_in_4bit");
    if (strcmp(qt, "nf4"))
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config \"bnb_4bit_quant_type\" = \"%s\" is not "
                        "supported (nf4)",
                        r->what, qt);
    return 0;
}

static int read_fp8(const qreader *r, mvk_hfq_config *q)
{
    char fmt[16];
    if (qstr(r, "fmt", NULL, "e4m3", fmt, sizeof fmt))
        return -1;
    if (strcmp(fmt, "e4m3"))
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config FP8 \"fmt\" = \"%s\" is not supported (e4m3)",
                        r->what, fmt);
    const char *n;
    const cJSON *b = qget(r, "weight_block_size", NULL, &n);
    q->fp8_block[0] = q->fp8_block[1] = 128;
    if (b) {
        double v[2] = {0, 0};
        int ok = cJSON_IsArray(b) && cJSON_GetArraySize(b) == 2;
        for (int i = 0; ok && i < 2; i++) {
            const cJSON *e = cJSON_GetArrayItem(b, i);
            v[i] = cJSON_IsNumber(e) ? e->valuedouble : 0;
            ok = v[i] >= 1 && v[i] <= (1u << 30) && v[i] == floor(v[i]);
        }
        if (!ok)
            return mvk_errf(r->err, r->errsz,
                            "%s: quantization_config \"weight_block_size\" is not [rows, columns] "
                            "of positive integers",
                            r->what);
        q->fp8_block[0] = (uint32_t)v[0];
        q->fp8_block[1] = (uint32_t)v[1];
    }
    if (q->fp8_block[1] % 128)
        return mvk_errf(r->err, r->errsz,
                        "%s: quantization_config \"weight_block_size\" = [%u, %u]: its input "
                        "size %u is not a multiple of 128 (moevk's fp8_e4m3 blocks hold 128 "
                        "inputs of one scale)",
                        r->what, q->fp8_block[0], q->fp8_block[1], q->fp8_block[1]);
    return 0;
}

/* ---- compressed-tensors: config_groups, targets, ignore ------------------------------ */

/* compressed-tensors' preset schemes that hold FP8 weights (quant_scheme.py),
 * for a config_groups entry written as "PRESET": [targets] */
static const struct {
    const char *name, *json;
} ct_presets[] = {
    {"FP8", "{\"weights\":{\"num_bits\":8,\"type\":\"float\",\"strategy\":\"tensor\"},"
            "\"input_activations\":{\"num_bits\":8,\"type\":\"float\",\"strategy\":\"tensor\","
            "\"dynamic\":false}}"},
    {"FP8_DYNAMIC", "{\"weights\":{\"num_bits\":8,\"type\":\"float\",\"strategy\":\"channel\"},"
                    "\"input_activations\":{\"num_bits\":8,\"type\":\"float\",\"strategy\":"
                    "\"token\",\"dynamic\":true}}"},
    {"FP8_BLOCK", "{\"weights\":{\"num_bits\":8,\"type\":\"float\",\"strategy\":\"block\","
                  "\"block_structure\":[128,128]},\"input_activations\":{\"num_bits\":8,"
                  "\"type\":\"float\",\"strategy\":\"group\",\"group_size\":128,\"dynamic\":true}}"},
};

static const cJSON *jget(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static char *dupstr(const char *s)
{
    const size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* A whole number in lo..hi, or -1 with *ok 0. */
static int64_t jint(const cJSON *v, int64_t lo, int64_t hi, int *ok)
{
    *ok = cJSON_IsNumber(v) && v->valuedouble >= (double)lo && v->valuedouble <= (double)hi &&
          v->valuedouble == floor(v->valuedouble);
    return *ok ? (int64_t)v->valuedouble : -1;
}

/* block_structure: [rows, cols] of positive integers (or compressed-tensors'
 * older "RxC" text). */
static int ct_block(const cJSON *b, uint32_t out[2])
{
    if (cJSON_IsString(b) && b->valuestring) {
        char *e1, *e2;
        const unsigned long r = strtoul(b->valuestring, &e1, 10);
        if (e1 == b->valuestring || *e1 != 'x')
            return -1;
        const unsigned long c = strtoul(e1 + 1, &e2, 10);
        if (e2 == e1 + 1 || *e2 || !r || !c || r > (1u << 30) || c > (1u << 30))
            return -1;
        out[0] = (uint32_t)r, out[1] = (uint32_t)c;
        return 0;
    }
    if (!cJSON_IsArray(b) || cJSON_GetArraySize(b) != 2)
        return -1;
    for (int i = 0; i < 2; i++) {
        int ok;
        const int64_t v = jint(cJSON_GetArrayItem(b, i), 1, 1 << 30, &ok);
        if (!ok)
            return -1;
        out[i] = (uint32_t)v;
    }
    return 0;
}

static const char *ct_format_hint(const char *f)
{
    if (!strcmp(f, "int-quantized"))
        return " (int8 weights)";
    if (!strcmp(f, "pack-quantized") || !strcmp(f, "marlin-24"))
        return " (packed int4 / int8 weight_packed)";
    if (!strcmp(f, "nvfp4-pack-quantized") || !strcmp(f, "mxfp4-pack-quantized"))
        return " (packed FP4 weight_packed)";
    if (!strncmp(f, "sparse-", 7))
        return " (sparse weights)";
    if (!strcmp(f, "dense"))
        return " (weights stored unquantised with fake-quantisation scales)";
    if (!strcmp(f, "mixed-precision"))
        return " (mixed-precision: each group names its own format, and this one names none)";
    return "";
}

/* What keeps moevk from reading the weights of scheme g (group gname,
 * the format fmt) into w, or "" when nothing does; the scheme's tile and
 * strategy into s. */
static void ct_scheme_check(const cJSON *g, const char *gname, const char *fmt,
                            mvk_hfq_ct_scheme *s, char *w, size_t wsz)
{
    *w = 0;
    const cJSON *gf = jget(g, "format");
    if (gf && cJSON_IsString(gf) && gf->valuestring)
        fmt = gf->valuestring;
    if (strcmp(fmt, "float-quantized") && strcmp(fmt, "naive-quantized")) {
        mvk_errf(w, wsz,
                 "config_groups \"%s\": format \"%s\"%s is not supported (float-quantized or "
                 "naive-quantized FP8 weights)",
                 gname, fmt, ct_format_hint(fmt));
        return;
    }
    const cJSON *wa = jget(g, "weights");
    if (!cJSON_IsObject(wa)) {
        mvk_errf(w, wsz, "config_groups \"%s\" has no \"weights\" (moevk reads FP8 weights)",
                 gname);
        return;
    }
    const cJSON *v;
    int ok = 1;
    int64_t bits = (v = jget(wa, "num_bits")) ? jint(v, 1, 64, &ok) : 8;
    if (!ok) {
        mvk_errf(w, wsz, "config_groups \"%s\" weights \"num_bits\" is not a whole number",
                 gname);
        return;
    }
    if (bits != 8) {
        mvk_errf(w, wsz, "config_groups \"%s\" weights \"num_bits\" = %lld: only 8-bit FP8 "
                 "weights are supported", gname, (long long)bits);
        return;
    }
    v = jget(wa, "type");
    const char *type = v && cJSON_IsString(v) && v->valuestring ? v->valuestring : v ? "?" : "int";
    if (strcasecmp(type, "float")) {
        mvk_errf(w, wsz, "config_groups \"%s\" weights \"type\" = \"%s\": only float (FP8 e4m3) "
                 "weights are supported%s", gname, type,
                 !strcasecmp(type, "int") ? " (int8 weights are not)" : "");
        return;
    }
    if ((v = jget(wa, "symmetric")) && !cJSON_IsTrue(v)) {
        mvk_errf(w, wsz, "config_groups \"%s\" weights \"symmetric\" is not true (zero points "
                 "are not supported)", gname);
        return;
    }
    if ((v = jget(wa, "dynamic")) && !cJSON_IsFalse(v)) {
        mvk_errf(w, wsz, "config_groups \"%s\" weights \"dynamic\" is not false (weights need "
                 "their stored scales)", gname);
        return;
    }
    if ((v = jget(wa, "actorder")) && !cJSON_IsFalse(v) &&
        !(cJSON_IsString(v) && v->valuestring && (!strcasecmp(v->valuestring, "weight") ||
                                                  !strcasecmp(v->valuestring, "static")))) {
        mvk_errf(w, wsz, "config_groups \"%s\" weights \"actorder\" = %s: activation-ordered "
                 "groups (weight_g_idx) are not supported", gname,
                 cJSON_IsString(v) && v->valuestring ? v->valuestring : "true");
        return;
    }
    const cJSON *gsv = jget(wa, "group_size");
    const int64_t gs = gsv ? jint(gsv, -1, INT32_MAX, &ok) : 0;
    if (gsv && (!ok || gs == 0)) {
        mvk_errf(w, wsz, "config_groups \"%s\" weights \"group_size\" is not -1 or a positive "
                 "integer", gname);
        return;
    }
    v = jget(wa, "strategy");
    const char *st = v && cJSON_IsString(v) && v->valuestring
                         ? v->valuestring
                         : v ? "?" : !gsv ? "tensor" : gs > 0 ? "group" : "channel";
    if (!strcasecmp(st, "tensor")) {
        s->strategy = "tensor", s->tile[0] = s->tile[1] = 0;
    } else if (!strcasecmp(st, "channel")) {
        s->strategy = "channel", s->tile[0] = 1, s->tile[1] = 0;
    } else if (!strcasecmp(st, "group")) {
        if (gs <= 0 || gs % 128) {
            mvk_errf(w, wsz, "config_groups \"%s\" weights \"group_size\" = %lld is not a "
                     "multiple of 128 (fp8_e4m3 blocks hold 128 inputs of one scale)", gname,
                     (long long)gs);
            return;
        }
        s->strategy = "group", s->tile[0] = 1, s->tile[1] = (uint32_t)gs;
    } else if (!strcasecmp(st, "block")) {
        uint32_t b[2];
        if (ct_block(jget(wa, "block_structure"), b)) {
            mvk_errf(w, wsz, "config_groups \"%s\" weights \"block_structure\" is not [rows, "
                     "columns] of positive integers", gname);
            return;
        }
        if (b[1] % 128) {
            mvk_errf(w, wsz, "config_groups \"%s\" weights \"block_structure\" = [%u, %u]: its "
                     "input size %u is not a multiple of 128 (fp8_e4m3 blocks hold 128 inputs "
                     "of one scale)", gname, b[0], b[1], b[1]);
            return;
        }
        s->strategy = "block", s->tile[0] = b[0], s->tile[1] = b[1];
    } else {
        mvk_errf(w, wsz, "config_groups \"%s\" weights \"strategy\" = \"%s\" is not supported "
                 "(tensor, channel, group, block)", gname, st);
        return;
    }
    const cJSON *ia = jget(g, "input_activations");
    if (ia) {
        v = cJSON_IsObject(ia) ? jget(ia, "dynamic") : NULL;
        if (!cJSON_IsTrue(v)) {
            mvk_errf(w, wsz, "config_groups \"%s\" input_activations \"dynamic\" = %s: static "
                     "activation scales (input_scale) are not supported (moevk computes "
                     "activations in f32 and does not clip them to a calibrated FP8 range)",
                     gname, cJSON_IsString(v) && v->valuestring ? v->valuestring : "false");
            return;
        }
        s->dynamic_inputs = 1;
    }
    if (jget(g, "output_activations")) {
        mvk_errf(w, wsz, "config_groups \"%s\" \"output_activations\" (quantised outputs) are "
                 "not supported", gname);
        return;
    }
}

/* Python's re.match(p, name) as a POSIX extended expression: "^(" p ")",
 * \d \w \s and their complements spelled out, "(?:" as "(", lazy
 * quantifiers greedy (they match the same names); what has no POSIX
 * spelling (lookarounds, named groups, backreferences, \b, \A, ...) is
 * refused. */
static int ct_regex(const char *pat, void **out, char *err, size_t errsz, const char *what,
                    const char *list)
{
    static const struct {
        char c;
        const char *out, *in; /* outside and inside brackets */
    } cls[] = {{'d', "[0-9]", "0-9"},           {'D', "[^0-9]", NULL},
               {'w', "[A-Za-z0-9_]", "A-Za-z0-9_"}, {'W', "[^A-Za-z0-9_]", NULL},
               {'s', "[[:space:]]", "[:space:]"}, {'S', "[^[:space:]]", NULL}};
    const size_t n = strlen(pat);
    char *e = malloc(16 * n + 8);
    if (!e)
        return mvk_errf(err, errsz, "%s: out of host memory", what);
    size_t o = 0;
    int depth = 0, inbr = 0;
    const char *bad = NULL;
    e[o++] = '^', e[o++] = '(';
    for (size_t i = 0; i < n && !bad; i++) {
        const char c = pat[i];
        if (c == '\\') {
            const char d = pat[++i];
            size_t k = 0;
            while (k < sizeof cls / sizeof cls[0] && cls[k].c != d)
                k++;
            const char *rep = k < sizeof cls / sizeof cls[0] ? (inbr ? cls[k].in : cls[k].out)
                                                              : NULL;
            if (rep) {
                memcpy(e + o, rep, strlen(rep));
                o += strlen(rep);
            } else if (!d || isalnum((unsigned char)d) ||
                       (inbr && (d == ']' || d == '\\' || d == '^' || d == '-' || d == '['))) {
                bad = "an escape with no POSIX spelling";
            } else {
                if (!inbr)
                    e[o++] = '\\';
                e[o++] = d;
            }
            continue;
        }
        if (inbr) {
            if (c == ']')
                inbr = 0;
            e[o++] = c;
            continue;
        }
        if (c == '[') {
            inbr = 1;
            e[o++] = c;
            if (pat[i + 1] == '^')
                e[o++] = pat[++i];
            if (pat[i + 1] == ']')
                e[o++] = pat[++i];
            continue;
        }
        if (c == '(') {
            depth++;
            if (pat[i + 1] == '?') {
                if (pat[i + 2] != ':')
                    bad = "a (?...) group other than (?:...)";
                i += 2;
            }
            e[o++] = '(';
            continue;
        }
        if (c == ')' && --depth < 0)
            bad = "an unbalanced ')'";
        e[o++] = c;
        if ((c == '*' || c == '+' || c == '?' || c == '}') && pat[i + 1] == '?')
            i++; /* lazy: the same names match */
    }
    if (!bad && (inbr || depth))
        bad = inbr ? "an unclosed '['" : "an unclosed '('";
    e[o++] = ')';
    e[o] = 0;
    regex_t *re = bad ? NULL : malloc(sizeof(*re));
    int rc = -1;
    if (!bad && !re)
        mvk_errf(err, errsz, "%s: out of host memory", what);
    else if (bad || regcomp(re, e, REG_EXTENDED | REG_NOSUB))
        mvk_errf(err, errsz,
                 "%s: quantization_config \"%s\" pattern \"re:%s\" is not a regular expression "
                 "moevk can match as Python's re does (%s)",
                 what, list, pat, bad ? bad : "POSIX regcomp refuses it");
    else
        rc = 0;
    free(e);
    if (rc) {
        free(re);
        return -1;
    }
    *out = re;
    return 0;
}

static int ct_pattern(const char *text, uint32_t scheme, mvk_hfq_ct_pattern *p, char *err,
                      size_t errsz, const char *what, const char *list)
{
    memset(p, 0, sizeof(*p));
    if (!(p->text = dupstr(text)))
        return mvk_errf(err, errsz, "%s: out of host memory", what);
    p->scheme = scheme;
    if (!strncmp(text, "re:", 3)) {
        p->kind = 1;
        return ct_regex(text + 3, &p->re, err, errsz, what, list);
    }
    /* a class name: compressed-tensors matches it against the module's
     * classes; every matrix moevk reads is an nn.Linear */
    if (isupper((unsigned char)text[0]) && !strchr(text, '.'))
        p->kind = strcmp(text, "Linear") ? 3 : 2;
    return 0;
}

static void ct_free(mvk_hfq_ct *ct)
{
    for (uint32_t i = 0; i < ct->n_schemes; i++) {
        free(ct->schemes[i].name);
        free(ct->schemes[i].why);
    }
    mvk_hfq_ct_pattern *lists[2] = {ct->targets, ct->ignore};
    const uint32_t counts[2] = {ct->n_targets, ct->n_ignore};
    for (int l = 0; l < 2; l++)
        for (uint32_t i = 0; i < counts[l]; i++) {
            free(lists[l][i].text);
            if (lists[l][i].re)
                regfree(lists[l][i].re);
            free(lists[l][i].re);
        }
    free(ct->schemes);
    free(ct->targets);
    free(ct->ignore);
    memset(ct, 0, sizeof(*ct));
}

/* An array of strings (NULL: none), its size into *n; else -1. */
static int ct_strings(const cJSON *a, int *n)
{
    *n = 0;
    if (!a)
        return 0;
    if (!cJSON_IsArray(a))
        return -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, a)
    {
        if (!cJSON_IsString(e) || !e->valuestring)
            return -1;
        (*n)++;
    }
    return 0;
}

static int read_ct(const qreader *r, mvk_hfq_config *q)
{
    mvk_hfq_ct *ct = &q->ct;
    char *err = r->err;
    const size_t errsz = r->errsz;
    if (qstr(r, "format", NULL, "", ct->format, sizeof ct->format))
        return -1;
    const cJSON *sp = jget(r->qc, "sparsity_config"); /* {} when there is none */
    if (sp && !(cJSON_IsObject(sp) && !sp->child)) {
        const cJSON *f = cJSON_IsObject(sp) ? jget(sp, "format") : NULL;
        const char *fs = cJSON_IsString(f) && f->valuestring ? f->valuestring : "?";
        if (strcmp(fs, "dense"))
            return mvk_errf(err, errsz,
                            "%s: quantization_config \"sparsity_config\" format \"%s\" is not "
                            "supported (sparse weights)",
                            r->what, fs);
    }
    const cJSON *tc = jget(r->qc, "transform_config");
    if (tc && !(cJSON_IsObject(tc) && !tc->child))
        return mvk_errf(err, errsz,
                        "%s: quantization_config \"transform_config\" (rotations of the weights "
                        "and activations) is not supported",
                        r->what);
    const cJSON *groups = jget(r->qc, "config_groups");
    if (!cJSON_IsObject(groups) || !cJSON_GetArraySize(groups))
        return mvk_errf(err, errsz,
                        "%s: quantization_config \"config_groups\" is not a non-empty JSON object",
                        r->what);
    int ng = cJSON_GetArraySize(groups), nt = 0, ni = 0;
    const cJSON *g;
    cJSON_ArrayForEach(g, groups)
    {
        const cJSON *t = cJSON_IsArray(g) ? g : cJSON_IsObject(g) ? jget(g, "targets") : NULL;
        int k;
        if (!t || ct_strings(t, &k))
            return mvk_errf(err, errsz,
                            "%s: quantization_config config_groups \"%s\" has no \"targets\" list "
                            "of strings",
                            r->what, g->string ? g->string : "?");
        nt += k;
    }
    if (ct_strings(jget(r->qc, "ignore"), &ni))
        return mvk_errf(err, errsz, "%s: quantization_config \"ignore\" is not a list of strings",
                        r->what);
    ct->schemes = calloc((size_t)ng, sizeof(*ct->schemes));
    ct->targets = calloc((size_t)nt + 1, sizeof(*ct->targets));
    ct->ignore = calloc((size_t)ni + 1, sizeof(*ct->ignore));
    if (!ct->schemes || !ct->targets || !ct->ignore)
        return mvk_errf(err, errsz, "%s: out of host memory", r->what);
    cJSON_ArrayForEach(g, groups)
    {
        mvk_hfq_ct_scheme *s = &ct->schemes[ct->n_schemes];
        const uint32_t si = ct->n_schemes++;
        const char *gname = g->string ? g->string : "";
        char why[512];
        if (!(s->name = dupstr(gname)))
            return mvk_errf(err, errsz, "%s: out of host memory", r->what);
        const cJSON *targets = g;
        if (cJSON_IsArray(g)) { /* a preset scheme's name and its targets */
            cJSON *pj = NULL;
            for (size_t k = 0; k < sizeof ct_presets / sizeof ct_presets[0] && !pj; k++)
                if (!strcasecmp(gname, ct_presets[k].name))
                    pj = cJSON_Parse(ct_presets[k].json);
            if (pj)
                ct_scheme_check(pj, gname, ct->format, s, why, sizeof why);
            else
                mvk_errf(why, sizeof why,
                         "config_groups \"%s\": the preset scheme \"%s\" is not supported (FP8, "
                         "FP8_DYNAMIC, FP8_BLOCK)",
                         gname, gname);
            cJSON_Delete(pj);
        } else {
            targets = jget(g, "targets");
            ct_scheme_check(g, gname, ct->format, s, why, sizeof why);
        }
        if (*why && !(s->why = dupstr(why)))
            return mvk_errf(err, errsz, "%s: out of host memory", r->what);
        const cJSON *t;
        cJSON_ArrayForEach(t, targets)
        {
            uint32_t k = 0; /* a target named again: the later group's (an ordered dict) */
            while (k < ct->n_targets && strcmp(ct->targets[k].text, t->valuestring))
                k++;
            if (k < ct->n_targets) {
                ct->targets[k].scheme = si;
                continue;
            }
            if (ct_pattern(t->valuestring, si, &ct->targets[ct->n_targets++], err, errsz,
                           r->what, "targets"))
                return -1;
        }
    }
    const cJSON *ig;
    cJSON_ArrayForEach(ig, jget(r->qc, "ignore"))
    {
        if (ct_pattern(ig->valuestring, 0, &ct->ignore[ct->n_ignore++], err, errsz, r->what,
                       "ignore"))
            return -1;
    }
    return 0;
}

int mvk_hfq_config_read(const cJSON *root, const char *what, mvk_hfq_config *q, char *err,
                        size_t errsz)
{
    memset(q, 0, sizeof(*q));
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (!qc || cJSON_IsNull(qc))
        return 0;
    if (!cJSON_IsObject(qc))
        return mvk_errf(err, errsz, "%s: \"quantization_config\" is not a JSON object", what);
    qreader r = {qc, what, err, errsz};
    char m[32];
    if (qstr(&r, "quant_method", NULL, "", m, sizeof m))
        return -1;
    int rc;
    if (!strcmp(m, "gptq"))
        q->method = MVK_HFQ_GPTQ, rc = read_gptq(&r, q);
    else if (!strcmp(m, "awq"))
        q->method = MVK_HFQ_AWQ, rc = read_awq(&r, q);
    else if (!strcmp(m, "bitsandbytes"))
        q->method = MVK_HFQ_BNB4, rc = read_bnb(&r, q);
    else if (!strcmp(m, "fp8"))
        q->method = MVK_HFQ_FP8, rc = read_fp8(&r, q);
    else if (!strcmp(m, "compressed-tensors"))
        q->method = MVK_HFQ_CT_FP8, rc = read_ct(&r, q);
    else if (!strcmp(m, "mxfp4"))
        return 0; /* gpt-oss: its layouts name the MXFP4 tensors (arch.c) */
    else
        return mvk_errf(err, errsz,
                        "%s: quantization_config \"quant_method\" = \"%s\" is not supported "
                        "(gptq, awq, bitsandbytes, fp8, compressed-tensors)",
                        what, m);
    if (rc)
        mvk_hfq_config_free(q);
    return rc;
}

void mvk_hfq_config_free(mvk_hfq_config *q)
{
    if (!q)
        return;
    ct_free(&q->ct);
    memset(q, 0, sizeof(*q));
}

const char *mvk_hfq_describe(const mvk_hfq_config *q, char *buf, size_t bufsz)
{
    char gs[32];
    snprintf(gs, sizeof gs, q->group_size < 0 ? "one group per row" : "group %lld",
             (long long)q->group_size);
    switch (q->method) {
    case MVK_HFQ_GPTQ:
        snprintf(buf, bufsz, "GPTQ 4-bit, %s, %s%s, repacked into gptq4", gs,
                 q->gptq_v2 ? "gptq_v2 (zero = stored)" : "gptq v1 (zero = stored + 1)",
                 q->desc_act ? ", act-order" : "");
        break;
    case MVK_HFQ_AWQ:
        snprintf(buf, bufsz, "AWQ GEMM 4-bit, %s, repacked into gptq4", gs);
        break;
    case MVK_HFQ_BNB4:
        snprintf(buf, bufsz, "bitsandbytes NF4%s, repacked into nf4",
                 q->double_quant ? " (double-quantised absmax resolved in f32)" : "");
        break;
    case MVK_HFQ_FP8:
        snprintf(buf, bufsz, "FP8 e4m3 with [%u, %u] scale tiles, repacked into fp8_e4m3",
                 q->fp8_block[0], q->fp8_block[1]);
        break;
    case MVK_HFQ_CT_FP8: {
        /* the readable schemes' scales */
        char sch[160] = "";
        int dyn = 0, k = 0;
        for (uint32_t i = 0; i < q->ct.n_schemes; i++) {
            const mvk_hfq_ct_scheme *s = &q->ct.schemes[i];
            if (s->why)
                continue;
            char one[64];
            if (!strcmp(s->strategy, "tensor"))
                snprintf(one, sizeof one, "one scale per tensor");
            else if (!strcmp(s->strategy, "channel"))
                snprintf(one, sizeof one, "channel scales");
            else if (!strcmp(s->strategy, "group"))
                snprintf(one, sizeof one, "group %u scales", s->tile[1]);
            else
                snprintf(one, sizeof one, "[%u, %u] scale tiles", s->tile[0], s->tile[1]);
            const size_t l = strlen(sch);
            snprintf(sch + l, sizeof sch - l, "%s%s", k++ ? " / " : "", one);
            dyn |= s->dynamic_inputs;
        }
        snprintf(buf, bufsz, "compressed-tensors FP8 e4m3 (%s), %s, repacked into fp8_e4m3%s",
                 q->ct.format, k ? sch : "no readable scheme",
                 dyn ? "; dynamic FP8 activations not applied (f32)" : "");
        break;
    }
    default:
        snprintf(buf, bufsz, "not quantised");
    }
    return buf;
}

moevk_dtype mvk_hfq_dtype(const mvk_hfq_config *q)
{
    switch (q->method) {
    case MVK_HFQ_GPTQ:
    case MVK_HFQ_AWQ: return MOEVK_DTYPE_GPTQ4;
    case MVK_HFQ_BNB4: return MOEVK_DTYPE_NF4;
    case MVK_HFQ_FP8:
    case MVK_HFQ_CT_FP8: return MOEVK_DTYPE_FP8_E4M3;
    default: return MOEVK_DTYPE_F32;
    }
}

/* ---- tensors ---------------------------------------------------------------- */

typedef struct qctx {
    mvk_st_set *set;
    const char *base;
    char *err;
    size_t errsz;
} qctx;

static void tname(char *buf, size_t n, const char *base, const char *suffix)
{
    snprintf(buf, n, "%s%s", base, suffix);
}

static int exists(const qctx *c, const char *suffix)
{
    char n[600];
    tname(n, sizeof n, c->base, suffix);
    return mvk_st_set_has(c->set, n);
}

/* base + suffix, of dtype `dtype` ("I32", "U8", "F32", ...; "float" for
 * F32/F16/BF16; NULL for any) and the shape `want` (described as dims;
 * ndim 0: any shape). */
static const mvk_st_tensor *get(const qctx *c, const char *suffix, const char *dtype,
                                uint32_t ndim, const uint64_t *want, const char *dims)
{
    char n[600];
    tname(n, sizeof n, c->base, suffix);
    const mvk_st_tensor *t = mvk_st_set_find(c->set, n, c->err, c->errsz);
    if (!t)
        return NULL;
    int dok = !dtype || (!strcmp(dtype, "float") ? t->dtype >= 0 : !strcmp(t->dtype_name, dtype));
    if (!dok) {
        mvk_errf(c->err, c->errsz, "tensor '%s' has dtype %s, expected %s", n, t->dtype_name,
                 !strcmp(dtype, "float") ? "F32, F16 or BF16" : dtype);
        return NULL;
    }
    int ok = !ndim || t->ndim == ndim;
    for (uint32_t k = 0; ok && k < ndim && want; k++)
        ok = t->shape[k] == want[k];
    if (!ok) {
        char got[160], exp[160];
        if (want)
            mvk_errf(c->err, c->errsz, "tensor '%s' has shape %s, expected %s = %s", n,
                     mvk_shape_str(t->shape, t->ndim, got, sizeof got), dims,
                     mvk_shape_str(want, ndim, exp, sizeof exp));
        else
            mvk_errf(c->err, c->errsz, "tensor '%s' has shape %s, expected %s", n,
                     mvk_shape_str(t->shape, t->ndim, got, sizeof got), dims);
        return NULL;
    }
    return t;
}

#define SHAPE(...) ((const uint64_t[]){__VA_ARGS__})

static uint32_t rd32(const mvk_st_tensor *t, uint64_t i)
{
    uint32_t u;
    memcpy(&u, t->data + 4 * i, 4);
    return u;
}

/* Element i of a float tensor (F32, F16 or BF16), exactly. */
static float fval(const mvk_st_tensor *t, uint64_t i)
{
    uint16_t h;
    float f;
    if (t->dtype == MOEVK_DTYPE_F32) {
        memcpy(&f, t->data + 4 * i, 4);
        return f;
    }
    memcpy(&h, t->data + 2 * i, 2);
    return t->dtype == MOEVK_DTYPE_F16 ? moevk_half_to_float(h) : moevk_bf16_to_float(h);
}

/* Element i of a float tensor as f16 bits, when it is exactly an f16 value. */
static int f16_bits(const qctx *c, const mvk_st_tensor *t, uint64_t i, uint64_t cols,
                    uint16_t *out)
{
    if (t->dtype == MOEVK_DTYPE_F16) {
        memcpy(out, t->data + 2 * i, 2);
        if ((*out & 0x7c00u) == 0x7c00u)
            return mvk_errf(c->err, c->errsz, "tensor '%s' element [%llu, %llu] is not finite",
                            t->name, (unsigned long long)(i / cols),
                            (unsigned long long)(i % cols));
        return 0;
    }
    const float f = fval(t, i);
    const uint16_t h = moevk_float_to_half(f);
    if (isnan(f) || moevk_half_to_float(h) != f)
        return mvk_errf(c->err, c->errsz,
                        "tensor '%s' element [%llu, %llu] = %.9g is not exactly an f16 value "
                        "(gptq4 blocks hold f16 scales)",
                        t->name, (unsigned long long)(i / cols), (unsigned long long)(i % cols),
                        (double)f);
    *out = h;
    return 0;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32f(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(u >> (8 * i));
}

static int oom(const qctx *c)
{
    return mvk_errf(c->err, c->errsz, "out of host memory repacking '%s'", c->base);
}

/* ---- GPTQ and AWQ -> gptq4 ----------------------------------------------------- */

static const uint8_t awq_nibble[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* of output 8c + j */

typedef struct int4_src {
    const mvk_st_tensor *qw, *qz, *sc;
    int awq, v2;
    uint64_t rows, cols;
} int4_src;

static unsigned q_of(const int4_src *s, uint64_t o, uint64_t i)
{
    if (s->awq) /* [cols, rows / 8] */
        return (rd32(s->qw, i * (s->rows / 8) + o / 8) >> (4 * awq_nibble[o % 8])) & 15u;
    return (rd32(s->qw, (i / 8) * s->rows + o) >> (4 * (i % 8))) & 15u; /* [cols / 8, rows] */
}

static unsigned z_of(const int4_src *s, uint64_t o, uint64_t g)
{
    const uint32_t w = rd32(s->qz, g * (s->rows / 8) + o / 8);
    if (s->awq)
        return (w >> (4 * awq_nibble[o % 8])) & 15u;
    return ((w >> (4 * (o % 8))) & 15u) + (s->v2 ? 0u : 1u);
}

/* Whether every aligned run of 32 columns (in the order perm, or the
 * identity) is in one group; else the first column pair that is not. */
static int runs_uniform(const uint32_t *grp, const uint32_t *perm, uint64_t cols, uint64_t *a,
                        uint64_t *b)
{
    for (uint64_t c = 0; c < cols; c++) {
        const uint64_t first = c - c % 32;
        const uint64_t x = perm ? perm[first] : first, y = perm ? perm[c] : c;
        if (grp[x] != grp[y]) {
            *a = x, *b = y;
            return 0;
        }
    }
    return 1;
}

static int load_int4(const mvk_hfq_config *q, const qctx *c, uint64_t rows, uint64_t cols,
                     int may_permute, const uint32_t *order, mvk_hfq_matrix *out)
{
    const int awq = q->method == MVK_HFQ_AWQ;
    if (rows % 8 || cols % 8)
        return mvk_errf(c->err, c->errsz,
                        "'%s': a [%llu, %llu] matrix: %s packs 8 4-bit values per int32 word, so "
                        "both sizes must be multiples of 8",
                        c->base, (unsigned long long)rows, (unsigned long long)cols,
                        awq ? "AWQ" : "GPTQ");
    const uint64_t gs = q->group_size < 0 ? cols : (uint64_t)q->group_size;
    int4_src s = {.awq = awq, .v2 = q->gptq_v2, .rows = rows, .cols = cols};
    const mvk_st_tensor *gi = NULL;
    uint64_t G = (cols + gs - 1) / gs;
    if (awq) {
        if (cols % gs)
            return mvk_errf(c->err, c->errsz,
                            "'%s': %llu inputs are not a whole number of AWQ groups of %llu",
                            c->base, (unsigned long long)cols, (unsigned long long)gs);
        if (!(s.qw = get(c, ".qweight", "I32", 2, SHAPE(cols, rows / 8), "[in, out / 8]")))
            return -1;
    } else {
        if (!(s.qw = get(c, ".qweight", "I32", 2, SHAPE(cols / 8, rows), "[in / 8, out]")))
            return -1;
        if (exists(c, ".g_idx") && !(gi = get(c, ".g_idx", "I32", 1, SHAPE(cols), "[in]")))
            return -1;
    }
    if (!(s.qz = get(c, ".qzeros", "I32", 2, SHAPE(G, rows / 8), "[groups, out / 8]")) ||
        !(s.sc = get(c, ".scales", "float", 2, SHAPE(G, rows), "[groups, out]")))
        return -1;

    /* the group of each input column */
    uint32_t *grp = malloc(sizeof(uint32_t) * (size_t)cols), *perm = NULL;
    uint8_t *blocks = NULL;
    int rc = -1;
    if (!grp) {
        oom(c);
        goto done;
    }
    for (uint64_t i = 0; i < cols; i++) {
        uint64_t g = i / gs;
        if (gi) {
            const int32_t v = (int32_t)rd32(gi, i);
            if (v < 0 || (uint64_t)v >= G) {
                mvk_errf(c->err, c->errsz,
                         "tensor '%s' element %llu = %d is not a group in 0..%llu", gi->name,
                         (unsigned long long)i, v, (unsigned long long)(G - 1));
                goto done;
            }
            g = (uint64_t)v;
        }
        grp[i] = (uint32_t)g;
    }
    uint64_t a, b;
    if (order) {
        /* the input order of the expert's other projection */
        if (!runs_uniform(grp, order, cols, &a, &b)) {
            mvk_errf(c->err, c->errsz,
                     "tensor '%s': in the input order of its expert's other projection of the "
                     "same input (sorted by that one's groups), inputs %llu and %llu share a "
                     "32-element block across groups %u and %u (gate and up quantised with "
                     "different act-order groups)",
                     gi ? gi->name : c->base, (unsigned long long)a, (unsigned long long)b,
                     grp[a], grp[b]);
            goto done;
        }
    } else if (!runs_uniform(grp, NULL, cols, &a, &b)) {
        if (!may_permute) {
            mvk_errf(c->err, c->errsz,
                     "tensor '%s' (act-order, desc_act) puts inputs %llu and %llu of one "
                     "32-element block in groups %u and %u, and this matrix's inputs may not "
                     "be reordered",
                     gi ? gi->name : c->base, (unsigned long long)a, (unsigned long long)b,
                     grp[a], grp[b]);
            goto done;
        }
        /* sort the inputs by group, stably (counting sort) */
        uint64_t *start = calloc((size_t)G + 1, sizeof(uint64_t));
        perm = malloc(sizeof(uint32_t) * (size_t)cols);
        if (!start || !perm) {
            free(start);
            oom(c);
            goto done;
        }
        for (uint64_t i = 0; i < cols; i++)
            start[grp[i] + 1]++;
        for (uint64_t g = 0; g < G; g++)
            start[g + 1] += start[g];
        for (uint64_t i = 0; i < cols; i++)
            perm[start[grp[i]]++] = (uint32_t)i;
        free(start);
        if (!runs_uniform(grp, perm, cols, &a, &b)) {
            mvk_errf(c->err, c->errsz,
                     "tensor '%s': sorted by group, inputs %llu and %llu still share a "
                     "32-element block across groups %u and %u (a group whose size is not a "
                     "multiple of 32)",
                     gi ? gi->name : c->base, (unsigned long long)a, (unsigned long long)b,
                     grp[a], grp[b]);
            goto done;
        }
    }
    const uint64_t nb = cols / 32, rb = nb * 19;
    if (cols % 32) {
        mvk_errf(c->err, c->errsz, "'%s': %llu inputs are not a whole number of 32-blocks",
                 c->base, (unsigned long long)cols);
        goto done;
    }
    if (!(blocks = malloc((size_t)(rows * rb) + 1))) {
        oom(c);
        goto done;
    }
    const uint32_t *ord = order ? order : perm;
    for (uint64_t o = 0; o < rows; o++)
        for (uint64_t k = 0; k < nb; k++) {
            uint8_t *p = blocks + o * rb + k * 19;
            const uint64_t g = grp[ord ? ord[32 * k] : 32 * k];
            uint16_t d = 0;
            if (f16_bits(c, s.sc, g * rows + o, rows, &d))
                goto done;
            put16(p, d);
            p[2] = (uint8_t)z_of(&s, o, g);
            memset(p + 3, 0, 16);
            for (uint32_t j = 0; j < 32; j++) {
                const uint64_t i = ord ? ord[32 * k + j] : 32 * k + j;
                p[3 + (j & 15)] |= (uint8_t)(q_of(&s, o, i) << (j < 16 ? 0 : 4));
            }
        }
    out->dtype = MOEVK_DTYPE_GPTQ4;
    out->blocks = blocks;
    out->col_perm = perm;
    blocks = NULL;
    perm = NULL;
    rc = 0;
done:
    free(grp);
    free(perm);
    free(blocks);
    return rc;
}

/* ---- bitsandbytes NF4 ------------------------------------------------------------- */

typedef struct bnb_state {
    const mvk_st_tensor *w;
    uint64_t blocksize, n;
    float *absmax; /* resolved, one per bitsandbytes block */
} bnb_state;

static int json_uint(const cJSON *o, const char *key, uint64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1) || v->valuedouble > 1e15 ||
        v->valuedouble != floor(v->valuedouble))
        return -1;
    *out = (uint64_t)v->valuedouble;
    return 0;
}

/* The quant_state JSON, the packed weight and the absmax of every block
 * as bitsandbytes' dequantize_4bit uses it (f32). */
static int bnb_open(const qctx *c, uint64_t rows, uint64_t cols, bnb_state *st)
{
    memset(st, 0, sizeof(*st));
    char qsn[600];
    tname(qsn, sizeof qsn, c->base, ".weight.quant_state.bitsandbytes__nf4");
    if (!exists(c, ".weight.quant_state.bitsandbytes__nf4")) {
        if (exists(c, ".weight.quant_state.bitsandbytes__fp4"))
            return mvk_errf(c->err, c->errsz,
                            "'%s.weight' is bitsandbytes FP4: only NF4 is supported", c->base);
        return mvk_errf(c->err, c->errsz, "missing tensor '%s'", qsn);
    }
    const mvk_st_tensor *qs = get(c, ".weight.quant_state.bitsandbytes__nf4", "U8", 1, NULL, "[bytes]");
    if (!qs)
        return -1;
    cJSON *j;
    if (mvk_json_parse((const char *)qs->data, (size_t)qs->numel, qsn, &j, c->err, c->errsz))
        return -1;
    int rc = -1;
    const uint64_t n = rows * cols;
    const cJSON *qt = cJSON_GetObjectItemCaseSensitive(j, "quant_type");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
    uint64_t bs = 0, nbs = 0;
    if (!cJSON_IsObject(j)) {
        mvk_errf(c->err, c->errsz, "tensor '%s' is not a JSON object", qsn);
        goto done;
    }
    if (!cJSON_IsString(qt) || !qt->valuestring || strcmp(qt->valuestring, "nf4")) {
        mvk_errf(c->err, c->errsz, "tensor '%s': \"quant_type\" is not \"nf4\"", qsn);
        goto done;
    }
    if (json_uint(j, "blocksize", &bs)) {
        mvk_errf(c->err, c->errsz, "tensor '%s': \"blocksize\" is not a positive integer", qsn);
        goto done;
    }
    int shape_ok = cJSON_IsArray(shape) && cJSON_GetArraySize(shape) == 2;
    for (int k = 0; shape_ok && k < 2; k++) {
        const cJSON *e = cJSON_GetArrayItem(shape, k);
        shape_ok = cJSON_IsNumber(e) && e->valuedouble == (double)(k ? cols : rows);
    }
    if (!shape_ok) {
        mvk_errf(c->err, c->errsz,
                 "tensor '%s': \"shape\" is not [%llu, %llu] (the matrix's [out, in])", qsn,
                 (unsigned long long)rows, (unsigned long long)cols);
        goto done;
    }
    const uint64_t nb = (n + bs - 1) / bs;
    if (!(st->w = get(c, ".weight", NULL, 0, NULL, "the packed [(n + 1) / 2, 1] weight")))
        goto done;
    if (st->w->end - st->w->begin != (n + 1) / 2) {
        mvk_errf(c->err, c->errsz,
                 "tensor '%s.weight' has %llu bytes, expected %llu (two 4-bit codes per byte of "
                 "a [%llu, %llu] matrix)",
                 c->base, (unsigned long long)(st->w->end - st->w->begin),
                 (unsigned long long)((n + 1) / 2), (unsigned long long)rows,
                 (unsigned long long)cols);
        goto done;
    }
    if (!(st->absmax = malloc(sizeof(float) * (size_t)nb + 1))) {
        oom(c);
        goto done;
    }
    const int nested = cJSON_GetObjectItemCaseSensitive(j, "nested_absmax") != NULL ||
                       cJSON_GetObjectItemCaseSensitive(j, "nested_offset") != NULL ||
                       exists(c, ".weight.nested_absmax");
    if (!nested) {
        const mvk_st_tensor *am = get(c, ".weight.absmax", "F32", 1, SHAPE(nb), "[blocks]");
        if (!am)
            goto done;
        for (uint64_t i = 0; i < nb; i++)
            st->absmax[i] = fval(am, i);
    } else {
        const cJSON *nd = cJSON_GetObjectItemCaseSensitive(j, "nested_dtype");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "nested_offset");
        if (json_uint(j, "nested_blocksize", &nbs)) {
            mvk_errf(c->err, c->errsz,
                     "tensor '%s': \"nested_blocksize\" is not a positive integer", qsn);
            goto done;
        }
        if (!cJSON_IsString(nd) || !nd->valuestring || strcmp(nd->valuestring, "float32")) {
            mvk_errf(c->err, c->errsz, "tensor '%s': \"nested_dtype\" is not \"float32\"", qsn);
            goto done;
        }
        if (!cJSON_IsNumber(off) || !isfinite(off->valuedouble) || fabs(off->valuedouble) > 3e38) {
            mvk_errf(c->err, c->errsz, "tensor '%s': \"nested_offset\" is not a finite number",
                     qsn);
            goto done;
        }
        const mvk_st_tensor *am = get(c, ".weight.absmax", "U8", 1, SHAPE(nb), "[blocks]");
        const mvk_st_tensor *na =
            am ? get(c, ".weight.nested_absmax", "F32", 1, SHAPE((nb + nbs - 1) / nbs),
                     "[nested blocks]")
               : NULL;
        const mvk_st_tensor *nm =
            na ? get(c, ".weight.nested_quant_map", "F32", 1, SHAPE(256), "[256]") : NULL;
        if (!nm)
            goto done;
        /* bitsandbytes: dequantize_blockwise (code[q] * absmax in f32), then
         * absmax += offset (an f32 tensor made from the JSON number) */
        const float offset = (float)off->valuedouble;
        for (uint64_t i = 0; i < nb; i++) {
            const float v = fval(nm, am->data[i]) * fval(na, i / nbs);
            st->absmax[i] = v + offset;
        }
    }
    for (uint64_t i = 0; i < nb; i++)
        if (!isfinite(st->absmax[i])) {
            mvk_errf(c->err, c->errsz, "'%s.weight': the absmax of block %llu is not finite",
                     c->base, (unsigned long long)i);
            goto done;
        }
    st->blocksize = bs;
    st->n = n;
    rc = 0;
done:
    cJSON_Delete(j);
    if (rc) {
        free(st->absmax);
        st->absmax = NULL;
    }
    return rc;
}

static int load_bnb(const qctx *c, uint64_t rows, uint64_t cols, mvk_hfq_matrix *out)
{
    if (cols % 64)
        return mvk_errf(c->err, c->errsz,
                        "'%s': %llu inputs per row are not a multiple of 64: bitsandbytes' "
                        "blocks of the flattened matrix would straddle rows",
                        c->base, (unsigned long long)cols);
    bnb_state st;
    if (bnb_open(c, rows, cols, &st))
        return -1;
    if (st.blocksize % 64) {
        free(st.absmax);
        return mvk_errf(c->err, c->errsz,
                        "'%s': bitsandbytes blocksize %llu is not a multiple of 64 (moevk's nf4 "
                        "blocks hold 64 values of one absmax)",
                        c->base, (unsigned long long)st.blocksize);
    }
    const uint64_t nb = st.n / 64;
    uint8_t *blocks = malloc((size_t)(nb * 36) + 1);
    if (!blocks) {
        free(st.absmax);
        return oom(c);
    }
    for (uint64_t k = 0; k < nb; k++) {
        put32f(blocks + 36 * k, st.absmax[(64 * k) / st.blocksize]);
        memcpy(blocks + 36 * k + 4, st.w->data + 32 * k, 32); /* the same nibble order */
    }
    free(st.absmax);
    out->dtype = MOEVK_DTYPE_NF4;
    out->blocks = blocks;
    out->col_perm = NULL;
    return 0;
}

/* ---- FP8 -------------------------------------------------------------------------- */

static int fp8_repack(const qctx *c, const mvk_st_tensor *w, const mvk_st_tensor *s, uint64_t rows,
                      uint64_t cols, uint64_t bo, uint64_t bi, uint64_t sc, mvk_hfq_matrix *out);

static int load_fp8(const mvk_hfq_config *q, const qctx *c, uint64_t rows, uint64_t cols,
                    mvk_hfq_matrix *out)
{
    const uint64_t bo = q->fp8_block[0], bi = q->fp8_block[1];
    if (cols % 128)
        return mvk_errf(c->err, c->errsz,
                        "'%s': %llu inputs per row are not a multiple of 128 (fp8_e4m3 blocks)",
                        c->base, (unsigned long long)cols);
    const mvk_st_tensor *w = get(c, ".weight", "F8_E4M3", 2, SHAPE(rows, cols), "[out, in]");
    const uint64_t sr = (rows + bo - 1) / bo, sc = (cols + bi - 1) / bi;
    const mvk_st_tensor *s =
        w ? get(c, ".weight_scale_inv", "float", 2, SHAPE(sr, sc),
                "[ceil(out / block rows), ceil(in / block columns)]")
          : NULL;
    if (!s)
        return -1;
    return fp8_repack(c, w, s, rows, cols, bo, bi, sc, out);
}

/* w F8_E4M3 [rows, cols] (cols a multiple of 128) and its scales s, one
 * per [bo, bi] tile ([ceil(rows / bo), sc]), into fp8_e4m3 blocks (bi a
 * multiple of 128 or at least cols). */
static int fp8_repack(const qctx *c, const mvk_st_tensor *w, const mvk_st_tensor *s, uint64_t rows,
                      uint64_t cols, uint64_t bo, uint64_t bi, uint64_t sc, mvk_hfq_matrix *out)
{
    const uint64_t sr = (rows + bo - 1) / bo;
    for (uint64_t i = 0; i < rows * cols; i++)
        if ((w->data[i] & 0x7f) == 0x7f)
            return mvk_errf(c->err, c->errsz,
                            "tensor '%s' element [%llu, %llu] is the e4m3fn NaN code 0x%02x",
                            w->name, (unsigned long long)(i / cols),
                            (unsigned long long)(i % cols), w->data[i]);
    for (uint64_t i = 0; i < sr * sc; i++)
        if (!isfinite(fval(s, i)))
            return mvk_errf(c->err, c->errsz, "tensor '%s' element [%llu, %llu] is not finite",
                            s->name, (unsigned long long)(i / sc), (unsigned long long)(i % sc));
    const uint64_t nb = cols / 128, rb = nb * 132;
    uint8_t *blocks = malloc((size_t)(rows * rb) + 1);
    if (!blocks)
        return oom(c);
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t k = 0; k < nb; k++) {
            uint8_t *p = blocks + r * rb + k * 132;
            put32f(p, fval(s, (r / bo) * sc + (128 * k) / bi));
            memcpy(p + 4, w->data + r * cols + 128 * k, 128);
        }
    out->dtype = MOEVK_DTYPE_FP8_E4M3;
    out->blocks = blocks;
    out->col_perm = NULL;
    return 0;
}

/* ---- compressed-tensors FP8 -> fp8_e4m3 ------------------------------------------------ */

enum { CT_NONE, CT_IGNORED, CT_NAME, CT_CLASS };

static int ct_matches(const mvk_hfq_ct_pattern *p, const char *name)
{
    switch (p->kind) {
    case 0: return !strcmp(p->text, name);
    case 1: return regexec(p->re, name, 0, NULL, 0) == 0;
    case 2: return 1;
    default: return 0;
    }
}

/* compressed-tensors' apply_quantization_config for the module `base`: a
 * target matches it (by name, else by class) and no ignore entry does;
 * the scheme of the first matching target in the order of match_targets
 * (exact names, then expressions, each sorted as text, then classes).
 * *which: the target or the ignore entry. */
static int ct_resolve(const mvk_hfq_ct *ct, const char *base, const mvk_hfq_ct_pattern **which)
{
    const mvk_hfq_ct_pattern *best = NULL;
    for (uint32_t i = 0; i < ct->n_targets; i++) {
        const mvk_hfq_ct_pattern *t = &ct->targets[i];
        if (!ct_matches(t, base))
            continue;
        const int rank = t->kind == 0 ? 0 : t->kind == 1 ? 1 : 2;
        const int brank = !best ? 3 : best->kind == 0 ? 0 : best->kind == 1 ? 1 : 2;
        if (rank < brank || (rank == brank && strcmp(t->text, best->text) < 0))
            best = t;
    }
    *which = best;
    if (!best)
        return CT_NONE;
    for (uint32_t i = 0; i < ct->n_ignore; i++)
        if (ct_matches(&ct->ignore[i], base)) {
            *which = &ct->ignore[i];
            return CT_IGNORED;
        }
    return best->kind < 2 ? CT_NAME : CT_CLASS;
}

/* The tensor that says base is stored quantised (an F8 weight, a
 * weight_scale, a weight_packed), or NULL. */
static const char *ct_stored(const qctx *c, char *buf, size_t n)
{
    static const char *const sfx[] = {".weight_packed", ".weight_scale"};
    tname(buf, n, c->base, ".weight");
    if (mvk_st_set_has(c->set, buf)) {
        const mvk_st_tensor *t = mvk_st_set_find(c->set, buf, NULL, 0);
        if (t && !strncmp(t->dtype_name, "F8_", 3))
            return buf;
    }
    for (size_t i = 0; i < 2; i++) {
        tname(buf, n, c->base, sfx[i]);
        if (mvk_st_set_has(c->set, buf))
            return buf;
    }
    return NULL;
}

static int ct_is_quantized(const mvk_hfq_config *q, mvk_st_set *set, const char *base)
{
    const mvk_hfq_ct_pattern *which;
    char n[600];
    qctx c = {set, base, NULL, 0};
    const int how = ct_resolve(&q->ct, base, &which);
    if (ct_stored(&c, n, sizeof n))
        return 1;
    /* a name target quantises the module whatever its tensors (load says
     * what is wrong); under a class target only what is stored quantised
     * is, a float weight being a module of another class */
    tname(n, sizeof n, base, ".weight");
    return how == CT_NAME && mvk_st_set_has(set, n);
}

static int load_ct(const mvk_hfq_config *q, const qctx *c, uint64_t rows, uint64_t cols,
                   mvk_hfq_matrix *out)
{
    const mvk_hfq_ct_pattern *which;
    char n[600];
    const int how = ct_resolve(&q->ct, c->base, &which);
    if (how == CT_NONE || how == CT_IGNORED) {
        const char *st = ct_stored(c, n, sizeof n);
        if (how == CT_NONE)
            return mvk_errf(c->err, c->errsz,
                            "tensor '%s' says '%s' is stored quantised, but no config_groups "
                            "target of quantization_config matches it",
                            st ? st : c->base, c->base);
        return mvk_errf(c->err, c->errsz,
                        "tensor '%s' says '%s' is stored quantised, but quantization_config "
                        "\"ignore\" entry \"%s\" leaves it unquantised",
                        st ? st : c->base, c->base, which->text);
    }
    const mvk_hfq_ct_scheme *s = &q->ct.schemes[which->scheme];
    if (s->why) {
        tname(n, sizeof n, c->base, ".weight_packed");
        if (!mvk_st_set_has(c->set, n))
            tname(n, sizeof n, c->base, ".weight");
        return mvk_errf(c->err, c->errsz, "tensor '%s': %s", n, s->why);
    }
    tname(n, sizeof n, c->base, ".weight");
    const mvk_st_tensor *w = mvk_st_set_find(c->set, n, c->err, c->errsz);
    if (!w)
        return -1;
    if (strcmp(w->dtype_name, "F8_E4M3"))
        return mvk_errf(c->err, c->errsz,
                        "tensor '%s' has dtype %s, expected F8_E4M3: config_groups \"%s\" target "
                        "\"%s\" quantises '%s' (a module stored unquantised belongs in "
                        "\"ignore\")",
                        n, w->dtype_name, s->name, which->text, c->base);
    if (!(w = get(c, ".weight", "F8_E4M3", 2, SHAPE(rows, cols), "[out, in]")))
        return -1;
    if (cols % 128)
        return mvk_errf(c->err, c->errsz,
                        "'%s': %llu inputs per row are not a multiple of 128 (fp8_e4m3 blocks)",
                        c->base, (unsigned long long)cols);
    if (exists(c, ".weight_g_idx"))
        return mvk_errf(c->err, c->errsz,
                        "tensor '%s.weight_g_idx': activation-ordered groups are not supported",
                        c->base);
    const uint64_t bo = s->tile[0] ? s->tile[0] : rows, bi = s->tile[1] ? s->tile[1] : cols;
    const uint64_t sr = (rows + bo - 1) / bo, sc = (cols + bi - 1) / bi;
    const mvk_st_tensor *sv;
    char dims[160];
    if (!strcmp(s->strategy, "tensor")) {
        if (!(sv = get(c, ".weight_scale", "float", 0, NULL, "[1]")))
            return -1;
        if (sv->numel != 1 || sv->ndim > 1) {
            char got[160];
            return mvk_errf(c->err, c->errsz,
                            "tensor '%s' has shape %s, expected [1] (strategy \"tensor\" of "
                            "config_groups \"%s\": one scale)",
                            sv->name, mvk_shape_str(sv->shape, sv->ndim, got, sizeof got),
                            s->name);
        }
    } else {
        if (!strcmp(s->strategy, "channel"))
            snprintf(dims, sizeof dims, "[out, 1] (strategy \"channel\" of config_groups \"%s\")",
                     s->name);
        else if (!strcmp(s->strategy, "group"))
            snprintf(dims, sizeof dims,
                     "[out, ceil(in / %u)] (strategy \"group\" of config_groups \"%s\")",
                     s->tile[1], s->name);
        else
            snprintf(dims, sizeof dims,
                     "[ceil(out / %u), ceil(in / %u)] (strategy \"block\" of config_groups "
                     "\"%s\")",
                     s->tile[0], s->tile[1], s->name);
        if (!(sv = get(c, ".weight_scale", "float", 2, SHAPE(sr, sc), dims)))
            return -1;
    }
    if (exists(c, ".weight_zero_point")) { /* written by older versions: all zero */
        const mvk_st_tensor *z = get(c, ".weight_zero_point", NULL, 0, NULL, "");
        if (!z)
            return -1;
        if (z->numel != sv->numel)
            return mvk_errf(c->err, c->errsz, "tensor '%s' has %llu elements, expected %llu (one "
                            "per scale of '%s')", z->name, (unsigned long long)z->numel,
                            (unsigned long long)sv->numel, sv->name);
        for (uint64_t i = 0; i < z->numel; i++) {
            int zero;
            if (z->dtype >= 0)
                zero = fval(z, i) == 0;
            else if (z->elem_bits == 8 && (!strcmp(z->dtype_name, "F8_E4M3") ||
                                           !strcmp(z->dtype_name, "I8") ||
                                           !strcmp(z->dtype_name, "U8")))
                zero = z->data[i] == 0 || (z->data[i] == 0x80 && z->dtype_name[0] == 'F');
            else if (!strcmp(z->dtype_name, "I32"))
                zero = rd32(z, i) == 0;
            else
                return mvk_errf(c->err, c->errsz, "tensor '%s' has dtype %s (a zero point)",
                                z->name, z->dtype_name);
            if (!zero)
                return mvk_errf(c->err, c->errsz,
                                "tensor '%s' element %llu is not 0: asymmetric FP8 (a zero point) "
                                "is not supported",
                                z->name, (unsigned long long)i);
        }
    }
    return fp8_repack(c, w, sv, rows, cols, bo, bi, sc, out);
}

/* ---- entry points -------------------------------------------------------------------- */

int mvk_hfq_is_quantized(const mvk_hfq_config *q, mvk_st_set *set, const char *base)
{
    char n[600];
    switch (q->method) {
    case MVK_HFQ_GPTQ:
    case MVK_HFQ_AWQ:
        tname(n, sizeof n, base, ".qweight");
        return mvk_st_set_has(set, n);
    case MVK_HFQ_BNB4:
        tname(n, sizeof n, base, ".weight.quant_state.bitsandbytes__nf4");
        if (mvk_st_set_has(set, n))
            return 1;
        tname(n, sizeof n, base, ".weight.quant_state.bitsandbytes__fp4");
        return mvk_st_set_has(set, n);
    case MVK_HFQ_FP8: {
        tname(n, sizeof n, base, ".weight_scale_inv");
        if (mvk_st_set_has(set, n))
            return 1;
        tname(n, sizeof n, base, ".weight");
        const mvk_st_tensor *t = mvk_st_set_has(set, n) ? mvk_st_set_find(set, n, NULL, 0) : NULL;
        return t && !strncmp(t->dtype_name, "F8_", 3);
    }
    case MVK_HFQ_CT_FP8: return ct_is_quantized(q, set, base);
    default:
        return 0;
    }
}

int mvk_hfq_load(const mvk_hfq_config *q, mvk_st_set *set, const char *base, uint64_t rows,
                 uint64_t cols, int may_permute, const uint32_t *order, mvk_hfq_matrix *out,
                 char *err, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    qctx c = {set, base, err, errsz};
    if (!rows || !cols)
        return mvk_errf(err, errsz, "'%s': an empty matrix", base);
    if (order && q->method != MVK_HFQ_GPTQ)
        return mvk_errf(err, errsz, "'%s': only GPTQ matrices take another input order", base);
    switch (q->method) {
    case MVK_HFQ_GPTQ:
    case MVK_HFQ_AWQ: return load_int4(q, &c, rows, cols, may_permute, order, out);
    case MVK_HFQ_BNB4: return load_bnb(&c, rows, cols, out);
    case MVK_HFQ_FP8: return load_fp8(q, &c, rows, cols, out);
    case MVK_HFQ_CT_FP8: return load_ct(q, &c, rows, cols, out);
    default: return mvk_errf(err, errsz, "'%s' is not quantised", base);
    }
}

int mvk_hfq_load_f32(const mvk_hfq_config *q, mvk_st_set *set, const char *base, uint64_t rows,
                     uint64_t cols, float **out, char *err, size_t errsz)
{
    *out = NULL;
    qctx c = {set, base, err, errsz};
    float *f = malloc(sizeof(float) * (size_t)(rows * cols) + 1);
    if (!f)
        return oom(&c);
    if (q->method == MVK_HFQ_BNB4) {
        /* any shape: the flattened matrix, element by element */
        bnb_state st;
        if (bnb_open(&c, rows, cols, &st)) {
            free(f);
            return -1;
        }
        for (uint64_t e = 0; e < st.n; e++) {
            const uint8_t byte = st.w->data[e / 2];
            f[e] = mvk_nf4_value(e % 2 ? byte & 15u : byte >> 4) * st.absmax[e / st.blocksize];
        }
        free(st.absmax);
        *out = f;
        return 0;
    }
    mvk_hfq_matrix m;
    if (mvk_hfq_load(q, set, base, rows, cols, 1, NULL, &m, err, errsz)) {
        free(f);
        return -1;
    }
    float *row = malloc(sizeof(float) * (size_t)cols + 1);
    if (!row) {
        free(f);
        mvk_hfq_matrix_free(&m);
        return oom(&c);
    }
    const uint64_t rb = moevk_dtype_row_bytes(m.dtype, cols);
    for (uint64_t r = 0; r < rows; r++) {
        mvk_format_decode(m.dtype, (const uint8_t *)m.blocks + r * rb, 0, cols, row);
        for (uint64_t j = 0; j < cols; j++)
            f[r * cols + (m.col_perm ? m.col_perm[j] : j)] = row[j];
    }
    free(row);
    mvk_hfq_matrix_free(&m);
    *out = f;
    return 0;
}

void mvk_hfq_matrix_free(mvk_hfq_matrix *m)
{
    if (!m)
        return;
    free(m->blocks);
    free(m->col_perm);
    memset(m, 0, sizeof(*m));
}
