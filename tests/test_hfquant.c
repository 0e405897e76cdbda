/*
 * Quantised Hugging Face checkpoints (GPTQ v1 and v2, symmetric and
 * asymmetric, groups 32, 64, 128 and -1, act-order; AWQ GEMM; bitsandbytes
 * NF4 with and without double quantisation; FP8 with [64, 128] and
 * [128, 128] scale tiles, partial edge tiles; compressed-tensors FP8 with
 * tensor, channel, group and block scales in f32, f16 and bf16, targets by
 * class and by expression, ignore lists, a mixed-precision config):
 * the fixtures of tests/fixtures/hf_quant (written by make_hf_quant.py,
 * their dequantised weights computed by torch and bitsandbytes, not by
 * moevk) are loaded as `moevk run` loads them, and
 *  - every repacked matrix, decoded by the reference decoder and put back
 *    in the checkpoint's order, is bit for bit the fixture's dequantised
 *    weights;
 *  - `moevk run` on the CPU reference and on Vulkan matches the reference
 *    computed on those dequantised f32 weights;
 *  - every malformed file or setting is refused with a message naming the
 *    offending tensor, key or value.
 */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "formats.h"
#include "model/hf_config.h"
#include "model/hf_quant.h"
#include "model/model_layer.h"
#include "model/model_util.h"
#include "model/safetensors.h"
#include "ref/ref.h"

/* ---- files ------------------------------------------------------------------ */

static const char *fixture_dir(char *buf, size_t n, const char *name)
{
    const char *root = getenv("MOEVK_FIXTURES");
    cr_assert(root && *root, "MOEVK_FIXTURES (tests/fixtures) is not set");
    snprintf(buf, n, "%s/hf_quant/%s", root, name);
    return buf;
}

static char *slurp(const char *path, size_t *len)
{
    char *text, err[512];
    cr_assert_eq(mvk_read_text(path, &text, len, err, sizeof err), 0, "%s", err);
    return text;
}

static void spit(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

static void tmp_dir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/moevk_hfq_XXXXXX");
    cr_assert_not_null(mkdtemp(buf));
}

static void rm_dir(const char *dir)
{
    static const char *const names[] = {"config.json", "model.safetensors", "x.safetensors",
                                        "y.safetensors"};
    char p[600];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* ---- loading ----------------------------------------------------------------- */

typedef struct loaded {
    mvk_moe_config cfg;
    mvk_st_set set;
    mvk_model_layer L;
} loaded;

/* Load layer 0 of the checkpoint in dir as `moevk run --model dir --layer
 * 0` does; returns 0, or -1 with the message in err. */
static int load(const char *dir, loaded *l, char *err, size_t errsz)
{
    char path[600], pre[MVK_MAX_PREFIXES][MVK_PREFIX_LEN];
    memset(l, 0, sizeof(*l));
    mvk_st_set_init(&l->set);
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t len;
    char *text = slurp(path, &len);
    int n = 0;
    int rc = mvk_hf_config_parse(text, len, path, &l->cfg, err, errsz);
    free(text);
    if (rc)
        return -1;
    if (mvk_hf_layer_prefixes(&l->cfg, 0, 0, pre, &n, err, errsz) ||
        mvk_st_set_open_dir(&l->set, dir, err, errsz))
        return -1;
    const char *pp[MVK_MAX_PREFIXES] = {pre[0], pre[1]};
    return mvk_model_layer_build_any(&l->cfg, &l->set, pp, n, &l->L, err, errsz);
}

static void unload(loaded *l)
{
    mvk_model_layer_free(&l->L);
    mvk_st_set_free(&l->set);
    mvk_hf_config_free(&l->cfg);
}

/* ---- bit equality --------------------------------------------------------------- */

/* What the zeros of a gptq4 fixture must be (beyond bit equality): */
enum {
    Z_ANY = 0,
    Z_SYM8,    /* symmetric: every zero 8 (v1 stores 7) */
    Z_HAS16,   /* asymmetric v1: some stored zero 15, read 16 (zero - 1 of a zero point 0) */
    Z_HAS0,    /* asymmetric v2 / AWQ: some zero 0 stored as it is */
    Z_ASYM,    /* asymmetric: zeros other than 8 */
};

typedef struct fixture {
    const char *name;
    moevk_dtype dtype;      /* the block format the experts become */
    const char *quant;      /* in the layer's description */
    int act_order;          /* down projections reordered */
    int router_quantized;   /* the router dequantised to f32 (expected "router") */
    int zeros;              /* gptq4: Z_* */
} fixture;

static const fixture fixtures[] = {
    {"gptq_v1_mixtral", MOEVK_DTYPE_GPTQ4, "group 32, gptq v1 (zero = stored + 1)", 0, 0,
     Z_HAS16},
    {"gptq_v2_actorder_qwen2moe", MOEVK_DTYPE_GPTQ4, "group 32, gptq_v2 (zero = stored), act-order",
     1, 0, Z_SYM8},
    {"gptq_v1_sym_g64_actorder_mixtral", MOEVK_DTYPE_GPTQ4,
     "group 64, gptq v1 (zero = stored + 1), act-order", 1, 0, Z_SYM8},
    {"gptq_v2_asym_g128_qwen3", MOEVK_DTYPE_GPTQ4, "group 128, gptq_v2 (zero = stored)", 0, 0,
     Z_ASYM},
    {"gptq_v1_sym_gall_mixtral", MOEVK_DTYPE_GPTQ4,
     "one group per row, gptq v1 (zero = stored + 1)", 0, 0, Z_SYM8},
    {"awq_mixtral", MOEVK_DTYPE_GPTQ4, "AWQ GEMM 4-bit, group 32", 0, 0, Z_HAS0},
    {"awq_g128_qwen3", MOEVK_DTYPE_GPTQ4, "AWQ GEMM 4-bit, group 128", 0, 0, Z_ASYM},
    {"bnb_nf4_mixtral", MOEVK_DTYPE_NF4, "NF4 (double-quantised", 0, 1, Z_ANY},
    {"bnb_nf4_nodq_qwen3", MOEVK_DTYPE_NF4, "bitsandbytes NF4, repacked", 0, 1, Z_ANY},
    {"fp8_qwen3", MOEVK_DTYPE_FP8_E4M3, "[64, 128] scale tiles", 0, 0, Z_ANY},
    {"fp8_deepseek_v3", MOEVK_DTYPE_FP8_E4M3, "[128, 128] scale tiles", 0, 0, Z_ANY},
    {"ct_fp8_channel_qwen3", MOEVK_DTYPE_FP8_E4M3,
     "compressed-tensors FP8 e4m3 (float-quantized), channel scales, repacked into fp8_e4m3; "
     "dynamic FP8 activations not applied (f32)", 0, 0, Z_ANY},
    {"ct_fp8_block_deepseek_v3", MOEVK_DTYPE_FP8_E4M3,
     "compressed-tensors FP8 e4m3 (float-quantized), [128, 128] scale tiles", 0, 0, Z_ANY},
    {"ct_fp8_tensor_mixtral", MOEVK_DTYPE_FP8_E4M3,
     "compressed-tensors FP8 e4m3 (naive-quantized), channel scales / one scale per tensor, "
     "repacked into fp8_e4m3", 0, 1, Z_ANY},
    {"ct_fp8_group_qwen2moe", MOEVK_DTYPE_FP8_E4M3,
     "compressed-tensors FP8 e4m3 (mixed-precision), group 128 scales, repacked", 0, 0, Z_ANY},
};

/* The zeros of a gptq4 matrix [rows, cols]: counts of 0, 8, 16 and all. */
static void count_zeros(const void *blocks, uint64_t rows, uint64_t cols, uint64_t n[4])
{
    const uint8_t *p = blocks;
    for (uint64_t b = 0; b < rows * (cols / 32); b++) {
        const uint8_t z = p[19 * b + 2];
        n[0] += z == 0, n[1] += z == 8, n[2] += z == 16, n[3]++;
    }
}

/* Matrix `m` (0 gate, 1 up, 2 down: [rows, cols]) in moevk's blocks,
 * decoded, against the fixture's f32 values in checkpoint order (perm:
 * the expert's intermediate order, xperm: its gate/up input order; NULL
 * for the checkpoint's). Returns the bits that differ. */
static uint64_t compare_matrix(const char *what, const void *blocks, moevk_dtype dt,
                               const mvk_st_tensor *want, uint64_t rows, uint64_t cols, int m,
                               const uint32_t *perm, const uint32_t *xperm)
{
    cr_assert_not_null(want, "%s: no expected tensor", what);
    cr_assert(want->ndim == 2 && want->shape[0] == rows && want->shape[1] == cols,
              "%s: expected tensor of another shape", what);
    const uint64_t rb = moevk_dtype_row_bytes(dt, cols);
    float *row = malloc(sizeof(float) * cols);
    cr_assert_not_null(row);
    uint64_t differ = 0;
    for (uint64_t r = 0; r < rows; r++) {
        mvk_format_decode(dt, (const uint8_t *)blocks + r * rb, 0, cols, row);
        for (uint64_t c = 0; c < cols; c++) {
            /* canonical (r, c) is the checkpoint's (perm[r], xperm[c]) for
             * gate/up, (r, perm[c]) for down */
            const uint64_t sr = perm && m < 2 ? perm[r] : r;
            const uint64_t sc = m == 2 ? (perm ? perm[c] : c) : (xperm ? xperm[c] : c);
            uint32_t a, b;
            float fb;
            memcpy(&a, &row[c], 4);
            memcpy(&b, want->data + 4 * (sr * cols + sc), 4);
            memcpy(&fb, &b, 4);
            if (a != b && !differ++)
                cr_log_error("%s [%llu, %llu]: moevk %.9g (0x%08x), expected %.9g (0x%08x)", what,
                             (unsigned long long)sr, (unsigned long long)sc, (double)row[c], a,
                             (double)fb, b);
        }
    }
    free(row);
    return differ;
}

static void expect_bit_equal(const fixture *fx)
{
    char dir[512], path[600], err[1024];
    fixture_dir(dir, sizeof dir, fx->name);
    loaded l;
    cr_assert_eq(load(dir, &l, err, sizeof err), 0, "%s: %s", fx->name, err);
    const moevk_layer_desc *d = &l.L.desc;
    cr_assert_eq(d->weight_dtype, fx->dtype, "%s: %s weights", fx->name,
                 moevk_dtype_name(d->weight_dtype));
    cr_assert(strstr(l.L.quant, fx->quant), "%s: '%s'", fx->name, l.L.quant);
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    mvk_st_file ex;
    cr_assert_eq(mvk_st_open(path, &ex, err, sizeof err), 0, "%s", err);
    static const char *const mats[3] = {"gate", "up", "down"};
    uint64_t differ = 0, checked = 0, zn[4] = {0, 0, 0, 0};
    int permuted = 0, xpermuted = 0;
    for (uint32_t s = 0; s < 2; s++) {
        const uint32_t count = s ? d->num_shared : d->num_experts;
        const uint64_t F = s ? d->shared_ffn : d->ffn, H = d->hidden;
        const moevk_expert_weights *w = s ? &d->shared : &d->experts;
        const void *const *per[3] = {w->gate_experts, w->up_experts, w->down_experts};
        for (uint32_t e = 0; e < count; e++) {
            const uint32_t *perm = s ? l.L.shared_ffn_perm : l.L.ffn_perm ? l.L.ffn_perm[e] : NULL;
            const uint32_t *xperm = w->input_perm ? w->input_perm + (size_t)e * H : NULL;
            if (perm) {
                permuted++;
                int identity = 1;
                for (uint64_t j = 0; j < F; j++)
                    identity &= perm[j] == j;
                cr_assert(!identity, "%s: an identity permutation", fx->name);
            }
            if (xperm) {
                int identity = 1;
                for (uint64_t j = 0; j < H; j++)
                    identity &= xperm[j] == j;
                xpermuted += !identity;
            }
            for (int m = 0; m < 3; m++) {
                char name[64];
                if (s)
                    snprintf(name, sizeof name, "shared.%s", mats[m]);
                else
                    snprintf(name, sizeof name, "experts.%u.%s", e, mats[m]);
                cr_assert_not_null(per[m], "%s: %s is not per-expert", fx->name, name);
                differ += compare_matrix(name, per[m][e], d->weight_dtype, mvk_st_find(&ex, name),
                                         m == 2 ? H : F, m == 2 ? F : H, m, perm, xperm);
                checked += F * H;
                if (d->weight_dtype == MOEVK_DTYPE_GPTQ4)
                    count_zeros(per[m][e], m == 2 ? H : F, m == 2 ? F : H, zn);
            }
        }
    }
    if (fx->router_quantized) {
        cr_assert_eq(d->router_dtype, MOEVK_DTYPE_F32);
        differ += compare_matrix("router", d->router_weight, MOEVK_DTYPE_F32,
                                 mvk_st_find(&ex, "router"), d->num_experts, d->hidden, 0, NULL,
                                 NULL);
        checked += (uint64_t)d->num_experts * d->hidden;
    }
    cr_assert_eq(permuted != 0, fx->act_order, "%s: %d experts reordered", fx->name, permuted);
    cr_assert_eq(xpermuted != 0, fx->act_order, "%s: %d experts' inputs reordered", fx->name,
                 xpermuted);
    if (fx->act_order) /* every routed expert and the shared one, both axes */
        cr_assert(permuted == (int)(d->num_experts + d->num_shared) && xpermuted == permuted,
                  "%s: %d and %d of %u experts reordered", fx->name, permuted, xpermuted,
                  d->num_experts + d->num_shared);
    switch (fx->zeros) {
    case Z_SYM8:
        cr_assert_eq(zn[1], zn[3], "%s: %llu of %llu zeros are not 8", fx->name,
                     (unsigned long long)(zn[3] - zn[1]), (unsigned long long)zn[3]);
        break;
    case Z_HAS16:
        cr_assert(zn[2] > 0 && zn[0] == 0, "%s: %llu zeros 16, %llu zeros 0", fx->name,
                  (unsigned long long)zn[2], (unsigned long long)zn[0]);
        break;
    case Z_HAS0:
        cr_assert(zn[0] > 0 && zn[2] == 0, "%s: %llu zeros 0, %llu zeros 16", fx->name,
                  (unsigned long long)zn[0], (unsigned long long)zn[2]);
        break;
    case Z_ASYM:
        cr_assert(zn[1] < zn[3] && zn[2] == 0, "%s: %llu of %llu zeros 8, %llu zeros 16",
                  fx->name, (unsigned long long)zn[1], (unsigned long long)zn[3],
                  (unsigned long long)zn[2]);
        break;
    }
    cr_assert_eq(differ, 0, "%s: %llu of %llu dequantised weights differ from the fixture's",
                 fx->name, (unsigned long long)differ, (unsigned long long)checked);
    cr_log_info("%s: %llu weights bit for bit", fx->name, (unsigned long long)checked);
    mvk_st_close(&ex);
    unload(&l);
}

Test(hfquant, repacked_weights_are_bitwise_the_libraries_dequantised_values)
{
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++)
        expect_bit_equal(&fixtures[i]);
}

/* ---- moevk run ----------------------------------------------------------------------- */

/* `moevk args...`, stdout and stderr into out; the exit status. */
static int run_tool(char *out, size_t outsz, const char *const *args)
{
    return mvkt_run_tool(out, outsz, args, 1, 0, 0);
}

/* A copy of the layer's desc whose expert weights are the fixture's f32
 * dequantised values in the checkpoint's order (router and gate as
 * loaded): the reference that `moevk run` must match. Arrays into *keep. */
static moevk_layer_desc oracle_desc(const loaded *l, const mvk_st_file *ex, const void ***keep)
{
    moevk_layer_desc d = l->L.desc;
    const void **p = calloc(6 * (d.num_experts + 1), sizeof(void *));
    cr_assert_not_null(p);
    *keep = p;
    static const char *const mats[3] = {"gate", "up", "down"};
    for (uint32_t s = 0; s < 2; s++) {
        const uint32_t count = s ? d.num_shared : d.num_experts;
        moevk_expert_weights *w = s ? &d.shared : &d.experts;
        const void **arr[3];
        for (int m = 0; m < 3; m++) {
            arr[m] = p;
            p += count ? count : 1;
        }
        for (uint32_t e = 0; e < count; e++)
            for (int m = 0; m < 3; m++) {
                char name[64];
                if (s)
                    snprintf(name, sizeof name, "shared.%s", mats[m]);
                else
                    snprintf(name, sizeof name, "experts.%u.%s", e, mats[m]);
                const mvk_st_tensor *t = mvk_st_find(ex, name);
                cr_assert_not_null(t, "no %s", name);
                arr[m][e] = t->data;
            }
        w->gate = w->up = w->down = NULL;
        w->input_perm = NULL; /* the fixture's weights are in the checkpoint's order */
        w->gate_experts = count ? arr[0] : NULL;
        w->up_experts = count ? arr[1] : NULL;
        w->down_experts = count ? arr[2] : NULL;
    }
    d.weight_dtype = MOEVK_DTYPE_F32;
    return d;
}

static void write_x(const char *path, const float *x, uint32_t T, uint32_t H)
{
    mvk_st_out o = {.name = "x", .dtype = "F32", .ndim = 2, .shape = {T, H}, .data = x};
    char err[512];
    cr_assert_eq(mvk_st_write(path, &o, 1, err, sizeof err), 0, "%s", err);
}

static double y_error(const char *path, const float *want, const uint8_t *near, uint32_t T,
                      uint32_t H)
{
    char err[512];
    mvk_st_file f;
    cr_assert_eq(mvk_st_open(path, &f, err, sizeof err), 0, "%s", err);
    const mvk_st_tensor *t = mvk_st_find(&f, "y");
    cr_assert(t && t->numel == (uint64_t)T * H, "no y [%u, %u] in %s", T, H, path);
    double num = 0, den = 0;
    for (uint32_t tok = 0; tok < T; tok++) {
        if (near[tok])
            continue;
        for (uint32_t c = 0; c < H; c++) {
            float v;
            memcpy(&v, t->data + 4 * ((size_t)tok * H + c), 4);
            const double e = want[(size_t)tok * H + c];
            cr_assert(isfinite(v), "non-finite y at token %u", tok);
            num += (v - e) * (v - e);
            den += e * e;
        }
    }
    mvk_st_close(&f);
    return sqrt(num / (den > 0 ? den : 1));
}

Test(hfquant, moevk_run_matches_the_reference_on_the_dequantised_weights, .timeout = 300)
{
    const uint64_t seed = mvkt_base_seed() ^ 0x4671;
    mvkt_rng r = mvkt_rng_make(seed);
    cr_log_info("seed %llu", (unsigned long long)seed);
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        char dir[512], tmp[256], xp[600], yp[600], err[1024], path[600], out[16384];
        fixture_dir(dir, sizeof dir, fixtures[i].name);
        loaded l;
        cr_assert_eq(load(dir, &l, err, sizeof err), 0, "%s", err);
        snprintf(path, sizeof path, "%s/expected.safetensors", dir);
        mvk_st_file ex;
        cr_assert_eq(mvk_st_open(path, &ex, err, sizeof err), 0, "%s", err);
        const void **keep;
        moevk_layer_desc od = oracle_desc(&l, &ex, &keep);
        const uint32_t T = 9, H = od.hidden;
        float *x = malloc(sizeof(float) * T * H), *want = malloc(sizeof(float) * T * H);
        uint8_t *near = malloc(T);
        cr_assert(x && want && near);
        for (size_t k = 0; k < (size_t)T * H; k++)
            x[k] = mvkt_uniform(&r, -2.0f, 2.0f);
        cr_assert_eq(moevk_layer_desc_validate(NULL, &od), MOEVK_SUCCESS);
        cr_assert_eq(moevk_ref_layer_forward(&od, T, x, want, NULL, NULL, near, NULL),
                     MOEVK_SUCCESS);
        tmp_dir(tmp, sizeof tmp);
        snprintf(xp, sizeof xp, "%s/x.safetensors", tmp);
        snprintf(yp, sizeof yp, "%s/y.safetensors", tmp);
        write_x(xp, x, T, H);
        static const char *const backends[] = {"cpu", "vulkan"};
        for (int b = 0; b < 2; b++) {
            const char *args[] = {"run", "--model", dir, "--layer", "0", "--input", xp, "--output",
                                  yp, "--backend", backends[b], b ? "--validate" : NULL, NULL};
            int st = run_tool(out, sizeof out, args);
            if (b && st && (strstr(out, "MOEVK_ERROR_NO_DEVICE") || strstr(out, "NO_VULKAN"))) {
                const char *req = getenv("MOEVK_REQUIRE_DEVICE");
                cr_assert(!(req && *req && strcmp(req, "0")), "no Vulkan device:\n%s", out);
                continue;
            }
            cr_assert_eq(st, 0, "seed %llu %s on %s:\n%s", (unsigned long long)seed,
                         fixtures[i].name, backends[b], out);
            cr_assert(strstr(out, "quant    "), "%s: no quant line:\n%s", fixtures[i].name, out);
            const double e = y_error(yp, want, near, T, H), tol = b ? 1e-5 : 1e-9;
            cr_assert_leq(e, tol, "seed %llu %s on %s: relative L2 error %g\n%s",
                          (unsigned long long)seed, fixtures[i].name, backends[b], e, out);
            cr_log_info("%s on %s: relative L2 error %.3g", fixtures[i].name, backends[b], e);
        }
        rm_dir(tmp);
        free(x), free(want), free(near), free(keep);
        mvk_st_close(&ex);
        unload(&l);
    }
}

/* ---- refusals ------------------------------------------------------------------------------- */

/* A copy of fixture `name` in a new directory: config.json with
 * quantization_config[key] = value (a JSON text; key NULL: unchanged), and
 * model.safetensors with tensor `tensor` replaced by the given dtype,
 * shape and data (tensor NULL: unchanged; data NULL: the tensor is
 * dropped). */
typedef struct patch {
    const char *key, *value; /* key: "a/b/c" is key c of object b of object a */
    const char *key2, *value2; /* a second one, or NULL */
    const char *tensor, *dtype;
    uint32_t ndim;
    uint64_t shape[4];
    const void *data;
    int add; /* the tensor is not in the fixture: appended */
} patch;

static void make_variant(const char *name, const patch *p, char *dir, size_t dirsz)
{
    char src[512], path[600], err[1024];
    fixture_dir(src, sizeof src, name);
    tmp_dir(dir, dirsz);
    /* config */
    snprintf(path, sizeof path, "%s/config.json", src);
    size_t len;
    char *text = slurp(path, &len);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert_not_null(j);
    const char *keys[2] = {p->key, p->key2}, *values[2] = {p->value, p->value2};
    for (int k = 0; k < 2 && keys[k]; k++) {
        cJSON *q = cJSON_GetObjectItem(j, "quantization_config");
        char kp[256];
        snprintf(kp, sizeof kp, "%s", keys[k]);
        char *leaf = kp, *slash;
        while (q && (slash = strchr(leaf, '/'))) {
            *slash = 0;
            q = cJSON_GetObjectItem(q, leaf);
            leaf = slash + 1;
        }
        cJSON *v = cJSON_Parse(values[k]);
        cr_assert(q && v, "bad patch %s = %s", keys[k], values[k]);
        if (cJSON_GetObjectItem(q, leaf))
            cJSON_ReplaceItemInObject(q, leaf, v);
        else
            cJSON_AddItemToObject(q, leaf, v);
    }
    char *s = cJSON_Print(j);
    snprintf(path, sizeof path, "%s/config.json", dir);
    spit(path, s);
    free(s);
    cJSON_Delete(j);
    /* tensors */
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    mvk_st_file f;
    cr_assert_eq(mvk_st_open(path, &f, err, sizeof err), 0, "%s", err);
    mvk_st_out *o = calloc(f.count, sizeof(*o));
    cr_assert_not_null(o);
    size_t n = 0, hit = 0;
    for (size_t i = 0; i < f.count; i++) {
        const mvk_st_tensor *t = &f.tensors[i];
        if (p->tensor && !strcmp(t->name, p->tensor)) {
            hit++;
            if (!p->data)
                continue;
            o[n] = (mvk_st_out){.name = t->name, .dtype = p->dtype, .ndim = p->ndim,
                                .data = p->data};
            memcpy(o[n].shape, p->shape, sizeof p->shape);
            n++;
            continue;
        }
        o[n] = (mvk_st_out){.name = t->name, .dtype = t->dtype_name, .ndim = t->ndim,
                            .data = t->data};
        memcpy(o[n].shape, t->shape, sizeof(uint64_t) * t->ndim);
        n++;
    }
    if (p->add) {
        cr_assert(!hit, "%s already has a tensor %s", name, p->tensor);
        o = realloc(o, sizeof(*o) * (f.count + 1));
        cr_assert_not_null(o);
        o[n] = (mvk_st_out){.name = p->tensor, .dtype = p->dtype, .ndim = p->ndim,
                            .data = p->data};
        memcpy(o[n].shape, p->shape, sizeof p->shape);
        n++;
    }
    cr_assert(!p->tensor || p->add || hit == 1, "%s has no tensor %s", name, p->tensor);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(mvk_st_write(path, o, n, err, sizeof err), 0, "%s", err);
    free(o);
    mvk_st_close(&f);
}

/* The tensor `name` of fixture `fx` (its bytes copied into *data). */
static const mvk_st_tensor *fixture_tensor(const char *fx, const char *name, mvk_st_file *f)
{
    char dir[512], path[600], err[1024];
    fixture_dir(dir, sizeof dir, fx);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(mvk_st_open(path, f, err, sizeof err), 0, "%s", err);
    const mvk_st_tensor *t = mvk_st_find(f, name);
    cr_assert_not_null(t, "%s has no %s", fx, name);
    return t;
}

/* The variant is refused, by the loader and by `moevk run`, with a
 * message holding every one of msgs (NULL-terminated). */
static void expect_refused(const char *fx, const patch *p, const char *const *msgs)
{
    char dir[256], err[1024], out[16384];
    make_variant(fx, p, dir, sizeof dir);
    loaded l;
    cr_assert_neq(load(dir, &l, err, sizeof err), 0, "%s: the variant loads", fx);
    for (const char *const *m = msgs; *m; m++)
        cr_assert(strstr(err, *m), "%s: the message lacks \"%s\":\n%s", fx, *m, err);
    for (const char *c = err; *c; c++)
        cr_assert((unsigned char)*c >= 0x20, "control character in the message");
    unload(&l); /* a failed load leaves nothing to free twice */
    /* and the tool says the same, exit status 1 */
    char xp[600];
    snprintf(xp, sizeof xp, "%s/x.safetensors", dir);
    float x[128] = {0};
    write_x(xp, x, 1, 32); /* not read: the checkpoint fails first */
    const char *args[] = {"run", "--model", dir, "--layer", "0", "--input", xp, "--backend", "cpu",
                          NULL};
    cr_assert_eq(run_tool(out, sizeof out, args), 1, "%s:\n%s", fx, out);
    cr_assert(strstr(out, msgs[0]), "%s: moevk run says:\n%s", fx, out);
    rm_dir(dir);
}

#define MSGS(...) ((const char *const[]){__VA_ARGS__, NULL})

Test(hfquant, bad_settings_are_refused_naming_the_value)
{
    static const struct {
        const char *fx, *key, *value;
        const char *msg[3];
    } rows[] = {
        {"gptq_v1_mixtral", "bits", "8", {"\"bits\" = 8", "only 4-bit"}},
        {"gptq_v1_mixtral", "group_size", "48", {"\"group_size\" = 48", "multiple of 32"}},
        {"gptq_v1_mixtral", "group_size", "0", {"\"group_size\" = 0"}},
        {"gptq_v1_mixtral", "checkpoint_format", "\"marlin\"", {"\"marlin\"", "gptq_v2"}},
        {"gptq_v1_mixtral", "is_marlin_format", "true", {"is_marlin_format"}},
        {"gptq_v1_mixtral", "desc_act", "\"yes\"", {"\"desc_act\" is not true or false"}},
        {"gptq_v1_mixtral", "quant_method", "\"hqq\"", {"\"hqq\" is not supported"}},
        {"awq_mixtral", "version", "\"gemv\"", {"\"gemv\"", "gemm"}},
        {"awq_mixtral", "zero_point", "false", {"\"zero_point\" = false"}},
        {"awq_mixtral", "bits", "3", {"\"bits\" = 3"}},
        {"bnb_nf4_mixtral", "bnb_4bit_quant_type", "\"fp4\"", {"\"fp4\"", "nf4"}},
        {"bnb_nf4_mixtral", "load_in_8bit", "true", {"load_in_8bit"}},
        {"fp8_qwen3", "weight_block_size", "[128, 64]", {"[128, 64]", "64 is not a multiple of 128"}},
        {"fp8_qwen3", "weight_block_size", "[128]", {"\"weight_block_size\" is not"}},
        {"fp8_qwen3", "fmt", "\"e5m2\"", {"\"e5m2\""}},
        /* a group size the tensors were not written with */
        {"gptq_v2_asym_g128_qwen3", "group_size", "64",
         {"down_proj.qzeros' has shape [1, 32]", "[groups, out / 8] = [2, 32]"}},
        {"gptq_v1_sym_gall_mixtral", "group_size", "32",
         {"w2.qzeros' has shape [1, 8]", "[groups, out / 8] = [3, 8]"}},
        {"awq_g128_qwen3", "group_size", "32", {"qzeros' has shape [1, 16]", "= [4, 16]"}},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        patch p = {.key = rows[i].key, .value = rows[i].value};
        const char *m[4] = {rows[i].msg[0], rows[i].msg[1], rows[i].msg[2], NULL};
        expect_refused(rows[i].fx, &p, m);
    }
}

Test(hfquant, bad_tensors_are_refused_naming_the_tensor)
{
    mvk_st_file f;
    /* GPTQ: act-order gate and up of one expert with other groups (the
     * up's g_idx that of the expert's down): no one input order serves
     * both */
    const char *dg = "model.layers.0.mlp.experts.1.down_proj.g_idx";
    const mvk_st_tensor *t = fixture_tensor("gptq_v2_actorder_qwen2moe", dg, &f);
    int32_t g[64];
    cr_assert_eq(t->numel, 64);
    memcpy(g, t->data, sizeof g);
    mvk_st_close(&f);
    patch p = {.tensor = "model.layers.0.mlp.experts.1.up_proj.g_idx", .dtype = "I32", .ndim = 1,
               .shape = {64}, .data = g};
    expect_refused("gptq_v2_actorder_qwen2moe", &p,
                   MSGS("tensor 'model.layers.0.mlp.experts.1.up_proj.g_idx': in the input order "
                        "of its expert's other projection",
                        "different act-order groups"));
    const char *gi = "model.layers.0.mlp.experts.1.gate_proj.g_idx";
    p.tensor = gi;
    /* GPTQ: a group index out of range */
    int32_t bad[64];
    for (int k = 0; k < 64; k++)
        bad[k] = k / 32;
    bad[40] = 2;
    p.data = bad;
    expect_refused("gptq_v2_actorder_qwen2moe", &p,
                   MSGS("tensor 'model.layers.0.mlp.experts.1.gate_proj.g_idx' element 40 = 2 is "
                        "not a group in 0..1"));
    /* GPTQ: a down projection in act-order is sorted by group, stably */
    int32_t alt[64];
    for (int k = 0; k < 64; k++)
        alt[k] = k % 2;
    p = (patch){.tensor = "model.layers.0.block_sparse_moe.experts.0.w2.g_idx", .dtype = "I32",
                .ndim = 1, .shape = {64}, .data = alt};
    {
        char dir[256], err[1024];
        make_variant("gptq_v1_mixtral", &p, dir, sizeof dir);
        loaded l;
        cr_assert_eq(load(dir, &l, err, sizeof err), 0, "a down g_idx in act-order: %s", err);
        cr_assert(l.L.ffn_perm && l.L.ffn_perm[0] && !l.L.ffn_perm[1]);
        for (uint32_t j = 0; j < 64; j++) /* even inputs (group 0) first */
            cr_assert_eq(l.L.ffn_perm[0][j], j < 32 ? 2 * j : 2 * (j - 32) + 1);
        cr_assert(strstr(l.L.quant, "down inputs sorted by group"), "%s", l.L.quant);
        unload(&l);
        rm_dir(dir);
    }
    /* GPTQ: scales of the wrong shape */
    const char *sn = "model.layers.0.block_sparse_moe.experts.1.w2.scales";
    t = fixture_tensor("gptq_v1_mixtral", sn, &f);
    uint8_t *sc = malloc(t->end - t->begin);
    cr_assert_not_null(sc);
    memcpy(sc, t->data, t->end - t->begin);
    mvk_st_close(&f);
    p = (patch){.tensor = sn, .dtype = "F16", .ndim = 2, .shape = {1, 32}, .data = sc};
    expect_refused("gptq_v1_mixtral", &p,
                   MSGS("'model.layers.0.block_sparse_moe.experts.1.w2.scales' has shape [1, 32]",
                        "[groups, out] = [2, 32]"));
    /* GPTQ: qweight of another dtype */
    const char *qn = "model.layers.0.block_sparse_moe.experts.0.w1.qweight";
    t = fixture_tensor("gptq_v1_mixtral", qn, &f);
    uint8_t *qw = malloc(t->end - t->begin);
    cr_assert_not_null(qw);
    memcpy(qw, t->data, t->end - t->begin);
    uint64_t qshape[2] = {t->shape[0], t->shape[1] * 2};
    mvk_st_close(&f);
    p = (patch){.tensor = qn, .dtype = "I16", .ndim = 2, .shape = {qshape[0], qshape[1]}, .data = qw};
    expect_refused("gptq_v1_mixtral", &p, MSGS("'" "model.layers.0.block_sparse_moe.experts.0.w1.qweight' has dtype I16, expected I32"));
    /* GPTQ: f32 scales, one not an f16 value */
    float *s32 = malloc(sizeof(float) * 64);
    cr_assert_not_null(s32);
    free(sc);
    const char *gs = "model.layers.0.block_sparse_moe.experts.0.w1.scales";
    t = fixture_tensor("gptq_v1_mixtral", gs, &f);
    cr_assert(t->shape[0] == 1 && t->shape[1] == 64);
    for (int k = 0; k < 64; k++) {
        uint16_t h;
        memcpy(&h, t->data + 2 * k, 2);
        s32[k] = moevk_half_to_float(h);
    }
    mvk_st_close(&f);
    p = (patch){.tensor = gs, .dtype = "F32", .ndim = 2, .shape = {1, 64}, .data = s32};
    {
        /* exactly f16 values in an F32 tensor: the same weights */
        char dir[256], err[1024];
        make_variant("gptq_v1_mixtral", &p, dir, sizeof dir);
        loaded l;
        cr_assert_eq(load(dir, &l, err, sizeof err), 0, "f32 scales of f16 values: %s", err);
        unload(&l);
        rm_dir(dir);
    }
    s32[5] = nextafterf(s32[5], INFINITY);
    expect_refused("gptq_v1_mixtral", &p,
                   MSGS("'model.layers.0.block_sparse_moe.experts.0.w1.scales' element [0, 5]",
                        "is not exactly an f16 value"));
    free(s32);
    free(qw);
    /* FP8: a NaN code in a weight */
    const char *fw = "model.layers.0.mlp.experts.0.down_proj.weight";
    t = fixture_tensor("fp8_qwen3", fw, &f);
    uint8_t *w8 = malloc(t->numel);
    cr_assert_not_null(w8);
    memcpy(w8, t->data, t->numel);
    mvk_st_close(&f);
    w8[3 * 128 + 7] = 0xff;
    p = (patch){.tensor = fw, .dtype = "F8_E4M3", .ndim = 2, .shape = {128, 128}, .data = w8};
    expect_refused("fp8_qwen3", &p,
                   MSGS("'model.layers.0.mlp.experts.0.down_proj.weight' element [3, 7] is the "
                        "e4m3fn NaN code 0xff"));
    free(w8);
    /* FP8: scale tiles of the wrong shape */
    const char *fs = "model.layers.0.mlp.experts.0.up_proj.weight_scale_inv";
    float tiles[2] = {1, 1};
    p = (patch){.tensor = fs, .dtype = "F32", .ndim = 2, .shape = {1, 2}, .data = tiles};
    expect_refused("fp8_qwen3", &p,
                   MSGS("'model.layers.0.mlp.experts.0.up_proj.weight_scale_inv' has shape [1, 2]",
                        "= [2, 1]"));
    /* bitsandbytes: the quant_state's shape and nested dtype */
    const char *qs = "model.layers.0.block_sparse_moe.experts.1.w2.weight.quant_state.bitsandbytes__nf4";
    t = fixture_tensor("bnb_nf4_mixtral", qs, &f);
    char *js = malloc(t->numel + 1);
    cr_assert_not_null(js);
    memcpy(js, t->data, t->numel);
    js[t->numel] = 0;
    mvk_st_close(&f);
    cJSON *j = cJSON_Parse(js);
    cr_assert_not_null(j);
    cJSON_ReplaceItemInObject(j, "shape", cJSON_Parse("[64, 32]"));
    char *bad_shape = cJSON_PrintUnformatted(j);
    cJSON_ReplaceItemInObject(j, "shape", cJSON_Parse("[64, 64]"));
    cJSON_ReplaceItemInObject(j, "nested_dtype", cJSON_CreateString("float16"));
    char *bad_nested = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    p = (patch){.tensor = qs, .dtype = "U8", .ndim = 1, .shape = {strlen(bad_shape)},
                .data = bad_shape};
    expect_refused("bnb_nf4_mixtral", &p, MSGS("bitsandbytes__nf4': \"shape\" is not [64, 64]"));
    p.shape[0] = strlen(bad_nested);
    p.data = bad_nested;
    expect_refused("bnb_nf4_mixtral", &p, MSGS("\"nested_dtype\" is not \"float32\""));
    p.shape[0] = 5;
    p.data = "{\"a\":";
    expect_refused("bnb_nf4_mixtral", &p, MSGS("bitsandbytes__nf4"));
    free(bad_shape);
    free(bad_nested);
    free(js);
    /* bitsandbytes: a missing absmax */
    p = (patch){.tensor = "model.layers.0.block_sparse_moe.experts.0.w3.weight.absmax"};
    expect_refused("bnb_nf4_mixtral", &p,
                   MSGS("missing tensor 'model.layers.0.block_sparse_moe.experts.0.w3.weight.absmax'"));
}

/* ---- FP8 tiles at the edges ------------------------------------------------------------------ */

/* [128, 128] scale tiles whose last tile row is partial (a [200, 256]
 * matrix: tiles of 128 and 72 rows; a [72, 384] one: a single tile row
 * of 72) and [128, 256] tiles whose last row and column are partial (a
 * [136, 384] matrix), repacked and decoded, and dequantised to f32 as a
 * router would be: bit for bit torch's values (fixture fp8_edge_tiles),
 * and the same after a wrong tile size (it no longer matches the scales'
 * shape: refused naming the tensor). An input size
 * that is not a whole number of fp8_e4m3 blocks ([64, 192]) is refused
 * naming the matrix. */
Test(hfquant, fp8_partial_edge_tiles_are_bitwise_the_dequantised_values)
{
    char dir[512], path[600], err[1024];
    fixture_dir(dir, sizeof dir, "fp8_edge_tiles");
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t len;
    char *text = slurp(path, &len);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert_not_null(j);
    mvk_hfq_config q;
    cr_assert_eq(mvk_hfq_config_read(j, path, &q, err, sizeof err), 0, "%s", err);
    cJSON_Delete(j);
    cr_assert(q.method == MVK_HFQ_FP8 && q.fp8_block[0] == 128 && q.fp8_block[1] == 128);
    mvk_st_set set;
    mvk_st_set_init(&set);
    cr_assert_eq(mvk_st_set_open_dir(&set, dir, err, sizeof err), 0, "%s", err);
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    mvk_st_file ex;
    cr_assert_eq(mvk_st_open(path, &ex, err, sizeof err), 0, "%s", err);
    static const char *const names[] = {"edge.rows200", "edge.rows72", "edge.tiles256"};
    static const uint64_t shapes[][2] = {{200, 256}, {72, 384}, {136, 384}};
    for (int k = 0; k < 3; k++) {
        const mvk_st_tensor *want = mvk_st_find(&ex, names[k]);
        const uint64_t rows = shapes[k][0], cols = shapes[k][1];
        if (k == 2) /* this matrix's tiles are [128, 256] */
            q.fp8_block[1] = 256;
        cr_assert(mvk_hfq_is_quantized(&q, &set, names[k]), "%s", names[k]);
        mvk_hfq_matrix m;
        cr_assert_eq(mvk_hfq_load(&q, &set, names[k], rows, cols, 0, NULL, &m, err, sizeof err), 0,
                     "%s", err);
        cr_assert_eq(m.dtype, MOEVK_DTYPE_FP8_E4M3);
        cr_assert_null(m.col_perm);
        cr_assert_eq(compare_matrix(names[k], m.blocks, m.dtype, want, rows, cols, 0, NULL, NULL),
                     0, "%s: repacked blocks differ", names[k]);
        mvk_hfq_matrix_free(&m);
        float *f;
        cr_assert_eq(mvk_hfq_load_f32(&q, &set, names[k], rows, cols, &f, err, sizeof err), 0,
                     "%s", err);
        cr_assert_eq(compare_matrix(names[k], f, MOEVK_DTYPE_F32, want, rows, cols, 0, NULL, NULL),
                     0, "%s: f32 dequantisation differs", names[k]);
        free(f);
    }
    q.fp8_block[1] = 128;
    mvk_hfq_matrix m;
    cr_assert_neq(mvk_hfq_load(&q, &set, "edge.tiles256", 136, 384, 0, NULL, &m, err, sizeof err),
                  0);
    cr_assert(strstr(err, "tensor 'edge.tiles256.weight_scale_inv' has shape [2, 2], expected "),
              "%s", err);
    cr_assert(strstr(err, "= [2, 3]"), "%s", err);
    cr_assert_neq(mvk_hfq_load(&q, &set, "edge.cols192", 64, 192, 0, NULL, &m, err, sizeof err), 0);
    cr_assert(strstr(err, "'edge.cols192': 192 inputs per row are not a multiple of 128"), "%s",
              err);
    cr_assert_null(m.blocks);
    mvk_st_close(&ex);
    mvk_st_set_free(&set);
}

/* ---- compressed-tensors ------------------------------------------------------------------- */

/* Settings moevk cannot read are refused, when a matrix uses them, naming
 * the tensor and the key; malformed groups, targets and ignore lists and
 * expressions with no POSIX spelling at config.json. */
Test(hfquant, compressed_tensors_bad_settings_are_refused_naming_the_key)
{
    static const char *const g0 = "config_groups/group_0/";
    static const struct {
        const char *fx, *key, *value, *key2, *value2;
        const char *msg[3];
    } rows[] = {
        {"ct_fp8_channel_qwen3", "weights/type", "\"int\"", NULL, NULL,
         {"tensor 'model.layers.0.mlp.experts.0.down_proj.weight': config_groups \"group_0\" "
          "weights \"type\" = \"int\"", "int8 weights are not"}},
        {"ct_fp8_channel_qwen3", "weights/num_bits", "4", NULL, NULL,
         {"experts.0.down_proj.weight': config_groups \"group_0\" weights \"num_bits\" = 4"}},
        {"ct_fp8_channel_qwen3", "weights/symmetric", "false", NULL, NULL,
         {"weights \"symmetric\" is not true"}},
        {"ct_fp8_channel_qwen3", "weights/strategy", "\"token\"", NULL, NULL,
         {"weights \"strategy\" = \"token\" is not supported"}},
        {"ct_fp8_channel_qwen3", "weights/dynamic", "true", NULL, NULL,
         {"weights \"dynamic\" is not false"}},
        {"ct_fp8_channel_qwen3", "input_activations/dynamic", "false", NULL, NULL,
         {"down_proj.weight': config_groups \"group_0\" input_activations \"dynamic\" = false",
          "input_scale", "activations in f32"}},
        {"ct_fp8_channel_qwen3", "output_activations", "{\"num_bits\": 8, \"type\": \"float\"}",
         NULL, NULL, {"\"output_activations\""}},
        {"ct_fp8_channel_qwen3", "format", "\"pack-quantized\"", NULL, NULL,
         {"down_proj.weight': config_groups \"group_0\": format \"pack-quantized\"",
          "weight_packed"}},
        {"ct_fp8_group_qwen2moe", "weights/group_size", "64", NULL, NULL,
         {"weights \"group_size\" = 64 is not a multiple of 128"}},
        {"ct_fp8_group_qwen2moe", "weights/actorder", "\"group\"", NULL, NULL,
         {"weights \"actorder\" = group", "weight_g_idx"}},
        {"ct_fp8_block_deepseek_v3", "weights/block_structure", "[128, 64]", NULL, NULL,
         {"\"block_structure\" = [128, 64]: its input size 64 is not a multiple of 128"}},
        {"ct_fp8_block_deepseek_v3", "weights/block_structure", "[128]", NULL, NULL,
         {"\"block_structure\" is not [rows, columns]"}},
        /* scales of another tile than the tensors were written with */
        {"ct_fp8_block_deepseek_v3", "weights/block_structure", "[64, 128]", NULL, NULL,
         {"experts.0.down_proj.weight_scale' has shape [1, 1], expected [ceil(out / 64), "
          "ceil(in / 128)] (strategy \"block\" of config_groups \"group_0\") = [2, 1]"}},
        /* a float module a name target quantises */
        {"ct_fp8_channel_qwen3", "targets", "[\"re:.*mlp\\\\..*\"]", "ignore", "[\"lm_head\"]",
         {"tensor 'model.layers.0.mlp.gate.weight' has dtype BF16, expected F8_E4M3",
          "target \"re:.*mlp\\..*\" quantises 'model.layers.0.mlp.gate'", "\"ignore\""}},
        /* quantised modules the config leaves out */
        {"ct_fp8_channel_qwen3", NULL, NULL, "ignore", "[\"re:.*experts\\\\.1\\\\..*\"]",
         {"tensor 'model.layers.0.mlp.experts.1.down_proj.weight' says "
          "'model.layers.0.mlp.experts.1.down_proj' is stored quantised, but quantization_config "
          "\"ignore\" entry \"re:.*experts\\.1\\..*\" leaves it unquantised"}},
        {"ct_fp8_channel_qwen3", "targets", "[\"re:.*self_attn.*\"]", NULL, NULL,
         {"experts.0.down_proj.weight' says", "but no config_groups target"}},
        /* expressions */
        {"ct_fp8_channel_qwen3", "targets", "[\"re:.*(?!gate)_proj$\"]", NULL, NULL,
         {"\"targets\" pattern \"re:.*(?!gate)_proj$\"", "a (?...) group other than (?:...)"}},
        {"ct_fp8_channel_qwen3", NULL, NULL, "ignore", "[\"re:.*\\\\bgate\"]",
         {"\"ignore\" pattern \"re:.*\\bgate\"", "an escape with no POSIX spelling"}},
        {"ct_fp8_channel_qwen3", NULL, NULL, "ignore", "[\"re:.*gate)\"]",
         {"\"re:.*gate)\"", "an unbalanced ')'"}},
        {"ct_fp8_channel_qwen3", NULL, NULL, "ignore", "[\"re:[a-\"]", {"an unclosed '['"}},
        /* the config's shape */
        {"ct_fp8_channel_qwen3", "targets", "[1]", NULL, NULL,
         {"config_groups \"group_0\" has no \"targets\" list of strings"}},
        {"ct_fp8_channel_qwen3", NULL, NULL, "ignore", "\"lm_head\"",
         {"\"ignore\" is not a list of strings"}},
        {"ct_fp8_channel_qwen3", NULL, NULL, "config_groups", "{}",
         {"\"config_groups\" is not a non-empty JSON object"}},
        {"ct_fp8_channel_qwen3", NULL, NULL, "sparsity_config",
         "{\"format\": \"sparse-24-bitmask\", \"sparsity_structure\": \"2:4\"}",
         {"\"sparsity_config\" format \"sparse-24-bitmask\" is not supported"}},
        {"ct_fp8_channel_qwen3", NULL, NULL, "transform_config",
         "{\"config_groups\": {\"v\": {\"type\": \"hadamard\"}}}", {"\"transform_config\""}},
        {"ct_fp8_channel_qwen3", NULL, NULL, "format", "\"int-quantized\"",
         {"format \"int-quantized\" (int8 weights) is not supported"}},
        {"ct_fp8_channel_qwen3", NULL, NULL, "format", "\"sparse-bitmask\"",
         {"format \"sparse-bitmask\" (sparse weights)"}},
        {"ct_fp8_channel_qwen3", NULL, NULL, "format", "\"nvfp4-pack-quantized\"",
         {"(packed FP4 weight_packed)"}},
        /* presets */
        {"ct_fp8_channel_qwen3", NULL, NULL, "config_groups", "{\"FP8\": [\"Linear\"]}",
         {"config_groups \"FP8\" input_activations \"dynamic\" = false"}},
        {"ct_fp8_channel_qwen3", NULL, NULL, "config_groups", "{\"W4A16\": [\"Linear\"]}",
         {"the preset scheme \"W4A16\" is not supported"}},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char k1[128];
        if (rows[i].key)
            snprintf(k1, sizeof k1, "%s%s", g0, rows[i].key);
        patch p = {.key = rows[i].key ? k1 : rows[i].key2,
                   .value = rows[i].key ? rows[i].value : rows[i].value2,
                   .key2 = rows[i].key ? rows[i].key2 : NULL, .value2 = rows[i].value2};
        const char *m[4] = {rows[i].msg[0], rows[i].msg[1], rows[i].msg[2], NULL};
        expect_refused(rows[i].fx, &p, m);
    }
}

/* The variant loads and its weights are bit for bit the fixture's. */
static void expect_same_weights(const char *fx, const patch *p, const char *quant)
{
    char dir[256], err[1024];
    make_variant(fx, p, dir, sizeof dir);
    char src[512], path[600];
    fixture_dir(src, sizeof src, fx);
    snprintf(path, sizeof path, "%s/expected.safetensors", src);
    mvk_st_file ex;
    cr_assert_eq(mvk_st_open(path, &ex, err, sizeof err), 0, "%s", err);
    loaded l;
    cr_assert_eq(load(dir, &l, err, sizeof err), 0, "%s variant: %s", fx, err);
    const moevk_layer_desc *d = &l.L.desc;
    cr_assert_eq(d->weight_dtype, MOEVK_DTYPE_FP8_E4M3);
    cr_assert(strstr(l.L.quant, quant), "%s: '%s'", fx, l.L.quant);
    static const char *const mats[3] = {"gate", "up", "down"};
    for (uint32_t e = 0; e < d->num_experts; e++)
        for (int m = 0; m < 3; m++) {
            char name[64];
            snprintf(name, sizeof name, "experts.%u.%s", e, mats[m]);
            const void *const *per[3] = {d->experts.gate_experts, d->experts.up_experts,
                                         d->experts.down_experts};
            cr_assert_eq(compare_matrix(name, per[m][e], d->weight_dtype, mvk_st_find(&ex, name),
                                        m == 2 ? d->hidden : d->ffn, m == 2 ? d->ffn : d->hidden,
                                        m, NULL, NULL),
                         0, "%s variant: %s differs", fx, name);
        }
    unload(&l);
    mvk_st_close(&ex);
    rm_dir(dir);
}

/* What compressed-tensors writes in other ways reads the same: a preset
 * scheme name with its targets, an all-zero weight_zero_point (older
 * versions), a 0-dimensional per-tensor scale, expressions with Python's
 * \d, (?:...) and lazy quantifiers. */
Test(hfquant, compressed_tensors_other_spellings_read_the_same)
{
    patch p = {.key = "config_groups", .value = "{\"FP8_DYNAMIC\": [\"Linear\"]}"};
    expect_same_weights("ct_fp8_channel_qwen3", &p, "channel scales");
    p = (patch){.key = "config_groups/group_0/targets",
                .value = "[\"re:(?:model)\\\\.layers\\\\.\\\\d+\\\\.mlp\\\\.experts\\\\.[\\\\d]+?\\\\."
                         "\\\\w+_proj$\"]"};
    expect_same_weights("ct_fp8_channel_qwen3", &p, "channel scales");
    /* a zero point of zeros (e4m3 0 and -0) next to channel scales */
    uint8_t zp[128];
    memset(zp, 0, sizeof zp);
    zp[7] = 0x80;
    p = (patch){.tensor = "model.layers.0.mlp.experts.1.down_proj.weight_zero_point",
                .dtype = "F8_E4M3", .ndim = 2, .shape = {128, 1}, .data = zp, .add = 1};
    expect_same_weights("ct_fp8_channel_qwen3", &p, "channel scales");
    /* one scale per tensor as a 0-dimensional tensor */
    mvk_st_file f;
    const char *ts = "model.layers.0.block_sparse_moe.experts.1.w2.weight_scale";
    const mvk_st_tensor *t = fixture_tensor("ct_fp8_tensor_mixtral", ts, &f);
    cr_assert(t->ndim == 1 && t->shape[0] == 1 && !strcmp(t->dtype_name, "F16"));
    uint16_t one;
    memcpy(&one, t->data, 2);
    mvk_st_close(&f);
    p = (patch){.tensor = ts, .dtype = "F16", .ndim = 0, .data = &one};
    expect_same_weights("ct_fp8_tensor_mixtral", &p, "one scale per tensor");
}

Test(hfquant, compressed_tensors_bad_tensors_are_refused_naming_the_tensor)
{
    mvk_st_file f;
    /* a zero point that is not zero */
    uint8_t zp[128];
    memset(zp, 0, sizeof zp);
    zp[9] = 0x38; /* e4m3 1.0 */
    patch p = {.tensor = "model.layers.0.mlp.experts.1.down_proj.weight_zero_point",
               .dtype = "F8_E4M3", .ndim = 2, .shape = {128, 1}, .data = zp, .add = 1};
    expect_refused("ct_fp8_channel_qwen3", &p,
                   MSGS("tensor 'model.layers.0.mlp.experts.1.down_proj.weight_zero_point' "
                        "element 9 is not 0: asymmetric FP8"));
    /* activation-ordered groups */
    int32_t gi[128];
    for (int k = 0; k < 128; k++)
        gi[k] = 0;
    p = (patch){.tensor = "model.layers.0.mlp.experts.0.up_proj.weight_g_idx", .dtype = "I32",
                .ndim = 1, .shape = {128}, .data = gi, .add = 1};
    expect_refused("ct_fp8_channel_qwen3", &p,
                   MSGS("tensor 'model.layers.0.mlp.experts.0.up_proj.weight_g_idx': "
                        "activation-ordered groups are not supported"));
    /* channel scales as a vector */
    const char *sn = "model.layers.0.mlp.experts.1.down_proj.weight_scale";
    const mvk_st_tensor *t = fixture_tensor("ct_fp8_channel_qwen3", sn, &f);
    uint16_t sc[128];
    cr_assert(t->numel == 128 && !strcmp(t->dtype_name, "BF16"));
    memcpy(sc, t->data, sizeof sc);
    mvk_st_close(&f);
    p = (patch){.tensor = sn, .dtype = "BF16", .ndim = 1, .shape = {128}, .data = sc};
    expect_refused("ct_fp8_channel_qwen3", &p,
                   MSGS("tensor 'model.layers.0.mlp.experts.1.down_proj.weight_scale' has shape "
                        "[128], expected [out, 1] (strategy \"channel\" of config_groups "
                        "\"group_0\") = [128, 1]"));
    /* scales of a non-float dtype, a non-finite scale */
    p = (patch){.tensor = sn, .dtype = "I16", .ndim = 2, .shape = {128, 1}, .data = sc};
    expect_refused("ct_fp8_channel_qwen3", &p,
                   MSGS("'model.layers.0.mlp.experts.1.down_proj.weight_scale' has dtype I16, "
                        "expected F32, F16 or BF16"));
    sc[5] = 0x7f80; /* bf16 +inf */
    p.dtype = "BF16";
    expect_refused("ct_fp8_channel_qwen3", &p,
                   MSGS("tensor 'model.layers.0.mlp.experts.1.down_proj.weight_scale' element "
                        "[5, 0] is not finite"));
    /* a NaN code in a weight */
    const char *wn = "model.layers.0.mlp.experts.1.up_proj.weight";
    t = fixture_tensor("ct_fp8_channel_qwen3", wn, &f);
    uint8_t *w8 = malloc(t->numel);
    cr_assert_not_null(w8);
    memcpy(w8, t->data, t->numel);
    mvk_st_close(&f);
    w8[2 * 128 + 100] = 0x7f;
    p = (patch){.tensor = wn, .dtype = "F8_E4M3", .ndim = 2, .shape = {128, 128}, .data = w8};
    expect_refused("ct_fp8_channel_qwen3", &p,
                   MSGS("tensor 'model.layers.0.mlp.experts.1.up_proj.weight' element [2, 100] is "
                        "the e4m3fn NaN code 0x7f"));
    /* a weight of another dtype next to its scale (a class target) */
    p = (patch){.tensor = "model.layers.0.block_sparse_moe.experts.0.w2.weight", .dtype = "BF16",
                .ndim = 2, .shape = {128, 64}, .data = w8};
    expect_refused("ct_fp8_tensor_mixtral", &p,
                   MSGS("tensor 'model.layers.0.block_sparse_moe.experts.0.w2.weight' has dtype "
                        "BF16, expected F8_E4M3: config_groups \"group_1\" target \"Linear\""));
    free(w8);
    /* one scale per tensor that is two */
    const uint16_t two[2] = {0x3c00, 0x3c00};
    p = (patch){.tensor = "model.layers.0.block_sparse_moe.experts.1.w2.weight_scale",
                .dtype = "F16", .ndim = 1, .shape = {2}, .data = two};
    expect_refused("ct_fp8_tensor_mixtral", &p,
                   MSGS("tensor 'model.layers.0.block_sparse_moe.experts.1.w2.weight_scale' has "
                        "shape [2], expected [1] (strategy \"tensor\" of config_groups "
                        "\"group_1\": one scale)"));
    /* a missing scale */
    p = (patch){.tensor = "model.layers.0.block_sparse_moe.experts.1.w3.weight_scale"};
    expect_refused("ct_fp8_tensor_mixtral", &p,
                   MSGS("missing tensor 'model.layers.0.block_sparse_moe.experts.1.w3.weight_scale'"));
    /* the router under a channel scheme (its scale is one per tensor) */
    p = (patch){.key = "config_groups/group_0/targets",
                .value = "[\"re:.*block_sparse_moe\\\\.(gate|experts\\\\.\\\\d+\\\\.w[13])$\"]"};
    expect_refused("ct_fp8_tensor_mixtral", &p,
                   MSGS("tensor 'model.layers.0.block_sparse_moe.gate.weight_scale' has shape [1], "
                        "expected [out, 1]"));
}
