/*
 * Hugging Face checkpoints: the safetensors reader (one bad file per rule),
 * config.json of every supported architecture (fields and defaults), and
 * `moevk run` end to end: small checkpoints written here from known weights
 * in every supported layout, run on every backend and compared with the CPU
 * reference computed from the same weights.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <errno.h>
#include <unistd.h>

#include "common.h"
#include "expected.h"
#include "model/arch.h"
#include "model/hf_config.h"
#include "model/model_layer.h"
#include "model/model_util.h"
#include "model/safetensors.h"
#include "ref/ref.h"

/* ---- files ------------------------------------------------------------- */

static void dir_make(char *buf, size_t n)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, n, "%s/moevk-model-XXXXXX", t && *t ? t : "/tmp");
    cr_assert_not_null(mkdtemp(buf), "mkdtemp %s", buf);
}

/* Remove dir and everything in it (subdirectories too; links are removed,
 * not followed). */
static void dir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[512];
    struct stat st;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (!lstat(p, &st) && S_ISDIR(st.st_mode))
                dir_remove(p);
            else
                unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

static const char *join(char *buf, size_t n, const char *dir, const char *name)
{
    int len = snprintf(buf, n, "%s/%s", dir, name);
    cr_assert(len > 0 && (size_t)len < n, "path too long: %s/%s", dir, name);
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

static void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

/* ---- tensors to write ---------------------------------------------------- */

#define TL_MAX 600

typedef struct tlist {
    mvk_st_out t[TL_MAX];
    void *buf[TL_MAX];
    char name[TL_MAX][160];
    size_t n;
} tlist;

static tlist *tl_new(void)
{
    tlist *l = calloc(1, sizeof(tlist));
    cr_assert_not_null(l);
    return l;
}

static const char *st_dtype(moevk_dtype dt)
{
    return dt == MOEVK_DTYPE_F32 ? "F32" : dt == MOEVK_DTYPE_F16 ? "F16" : "BF16";
}

/* Encode n floats (already representable in dt) into a new buffer. */
static void *encode(moevk_dtype dt, const float *v, size_t n)
{
    void *p = malloc(n * moevk_dtype_size(dt) + 1);
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++) {
        if (dt == MOEVK_DTYPE_F32)
            ((float *)p)[i] = v[i];
        else if (dt == MOEVK_DTYPE_F16)
            ((uint16_t *)p)[i] = moevk_float_to_half(v[i]);
        else
            ((uint16_t *)p)[i] = moevk_float_to_bf16(v[i]);
    }
    return p;
}

static void tl_raw(tlist *l, const char *name, const char *dtype, uint32_t ndim,
                   const uint64_t *shape, void *owned_data)
{
    cr_assert_lt(l->n, TL_MAX);
    size_t i = l->n++;
    snprintf(l->name[i], sizeof l->name[i], "%s", name);
    l->buf[i] = owned_data;
    l->t[i] = (mvk_st_out){.name = l->name[i], .dtype = dtype, .ndim = ndim, .data = owned_data};
    memcpy(l->t[i].shape, shape, ndim * sizeof(uint64_t));
}

static void tl_add(tlist *l, moevk_dtype dt, uint32_t ndim, const uint64_t *shape,
                   const float *v, const char *fmt, ...)
{
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    size_t n = 1;
    for (uint32_t i = 0; i < ndim; i++)
        n *= shape[i];
    tl_raw(l, name, st_dtype(dt), ndim, shape, encode(dt, v, n));
}

static void tl_write(const tlist *l, const char *path, size_t from, size_t to)
{
    char err[512];
    cr_assert_eq(mvk_st_write(path, l->t + from, to - from, err, sizeof err), 0, "%s", err);
}

static void tl_free(tlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->buf[i]);
    free(l);
}

#define SH(...) ((const uint64_t[]){__VA_ARGS__})

/* ---- known weights ------------------------------------------------------- */

static float round_to(moevk_dtype dt, float v)
{
    if (dt == MOEVK_DTYPE_F16)
        return moevk_half_to_float(moevk_float_to_half(v));
    if (dt == MOEVK_DTYPE_BF16)
        return moevk_bf16_to_float(moevk_float_to_bf16(v));
    return v;
}

static float *rnd(mvkt_rng *r, moevk_dtype dt, size_t n, float scale)
{
    float *p = malloc(n * sizeof(float) + 4);
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = round_to(dt, mvkt_uniform(r, -scale, scale));
    return p;
}

/* One MoE block in moevk's canonical layout, every value representable in
 * the dtype it is written in. */
typedef struct canon {
    uint32_t H, F, E, K, SF;
    moevk_dtype wdt, sdt, rdt, bdt;
    float *router, *rbias, *cbias;
    float *gate, *up, *down;      /* [E, F, H], [E, F, H], [E, H, F] */
    float *gbias, *ubias, *dbias; /* [E, F], [E, F], [E, H]          */
    float *sgate, *sup, *sdown;   /* [SF, H], [SF, H], [H, SF]        */
    float *sg;                    /* [1, H]                           */
} canon;

enum { WITH_RBIAS = 1, WITH_CBIAS = 2, WITH_EBIAS = 4, WITH_SHARED_GATE = 8, NON_GATED = 16 };

static void canon_make(canon *c, mvkt_rng *r, uint32_t H, uint32_t F, uint32_t E, uint32_t K,
                       uint32_t SF, moevk_dtype wdt, moevk_dtype sdt, moevk_dtype rdt,
                       unsigned flags)
{
    memset(c, 0, sizeof(*c));
    *c = (canon){.H = H, .F = F, .E = E, .K = K, .SF = SF, .wdt = wdt, .sdt = sdt, .rdt = rdt,
                 .bdt = MOEVK_DTYPE_BF16};
    float s = 2.0f / sqrtf((float)H), sf = 2.0f / sqrtf((float)F);
    c->router = rnd(r, rdt, (size_t)E * H, 1.0f);
    if (!(flags & NON_GATED))
        c->gate = rnd(r, wdt, (size_t)E * F * H, s);
    c->up = rnd(r, wdt, (size_t)E * F * H, s);
    c->down = rnd(r, wdt, (size_t)E * H * F, sf);
    if (flags & WITH_RBIAS)
        c->rbias = rnd(r, c->bdt, E, 0.5f);
    if (flags & WITH_CBIAS)
        c->cbias = rnd(r, MOEVK_DTYPE_F32, E, 0.2f);
    if (flags & WITH_EBIAS) {
        c->gbias = rnd(r, c->bdt, (size_t)E * F, 0.3f);
        c->ubias = rnd(r, c->bdt, (size_t)E * F, 0.3f);
        c->dbias = rnd(r, c->bdt, (size_t)E * H, 0.3f);
    }
    if (SF) {
        float ssf = 2.0f / sqrtf((float)SF);
        c->sgate = rnd(r, sdt, (size_t)SF * H, s);
        c->sup = rnd(r, sdt, (size_t)SF * H, s);
        c->sdown = rnd(r, sdt, (size_t)H * SF, ssf);
        if (flags & WITH_SHARED_GATE)
            c->sg = rnd(r, rdt, H, 0.5f);
    }
}

static void canon_free(canon *c)
{
    float *all[] = {c->router, c->rbias, c->cbias, c->gate,  c->up,  c->down, c->gbias,
                    c->ubias,  c->dbias, c->sgate, c->sup, c->sdown, c->sg};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

/* The reference description of the same block (f32 arrays); routing
 * fields are set by the caller from what transformers does. */
static moevk_layer_desc canon_desc(const canon *c)
{
    return (moevk_layer_desc){
        .hidden = c->H, .ffn = c->F, .num_experts = c->E, .top_k = c->K,
        .weight_dtype = MOEVK_DTYPE_F32, .router_dtype = MOEVK_DTYPE_F32,
        .router_weight = c->router, .router_bias = c->rbias, .correction_bias = c->cbias,
        .experts = {.gate = c->gate, .up = c->up, .down = c->down, .gate_bias = c->gbias,
                    .up_bias = c->ubias, .down_bias = c->dbias},
        .num_shared = c->SF ? 1 : 0, .shared_ffn = c->SF,
        .shared = {.gate = c->sgate, .up = c->sup, .down = c->sdown},
        .shared_gate = c->sg,
    };
}

typedef enum layout {
    LAY_W123,    /* experts.{i}.w1/w3/w2.weight (Mixtral)                 */
    LAY_PROJ,    /* experts.{i}.gate_proj/up_proj/down_proj.weight         */
    LAY_STACKED, /* experts.gate_up_proj [E, 2F, H], experts.down_proj     */
    LAY_OSS,     /* gpt-oss [E, H, 2F] interleaved, [E, F, H], biases      */
    LAY_SWITCH,  /* experts.expert_{i}.wi/wo.weight                        */
    LAY_DBRX,    /* DBRX: router.layer, experts.mlp.w1/v1/w2 [E·F, H]      */
    LAY_STACKED_ROUTER, /* LAY_STACKED with the router as router.weight (PhiMoE) */
} layout;

/* SHARED_GRANITE: the decoder layer's shared_mlp beside the block (gate and
 * up in one input_linear), the router as Granite names it */
enum { SHARED_NONE, SHARED_QWEN2, SHARED_DEEPSEEK, SHARED_GRANITE };

/* Write the block's tensors named P + the layout's suffixes. */
static void add_block(tlist *l, const canon *c, const char *P, layout lay, int shared)
{
    const uint64_t H = c->H, F = c->F, E = c->E;
    const size_t fh = (size_t)F * H;
    if (lay == LAY_OSS) {
        tl_add(l, c->rdt, 2, SH(E, H), c->router, "%srouter.weight", P);
        tl_add(l, c->bdt, 1, SH(E), c->rbias, "%srouter.bias", P);
    } else if (lay == LAY_DBRX) {
        tl_add(l, c->rdt, 2, SH(E, H), c->router, "%srouter.layer.weight", P);
    } else if (shared == SHARED_GRANITE || lay == LAY_STACKED_ROUTER) {
        tl_add(l, c->rdt, 2, SH(E, H), c->router, "%srouter.weight", P);
    } else if (lay == LAY_SWITCH) {
        tl_add(l, c->rdt, 2, SH(E, H), c->router, "%srouter.classifier.weight", P);
        if (c->rbias)
            tl_add(l, c->bdt, 1, SH(E), c->rbias, "%srouter.classifier.bias", P);
    } else {
        tl_add(l, c->rdt, 2, SH(E, H), c->router, "%sgate.weight", P);
    }
    if (c->cbias)
        tl_add(l, MOEVK_DTYPE_F32, 1, SH(E), c->cbias, "%sgate.e_score_correction_bias", P);
    switch (lay) {
    case LAY_W123:
    case LAY_PROJ:
        for (uint32_t i = 0; i < E; i++) {
            const char *g = lay == LAY_W123 ? "w1" : "gate_proj";
            const char *u = lay == LAY_W123 ? "w3" : "up_proj";
            const char *d = lay == LAY_W123 ? "w2" : "down_proj";
            tl_add(l, c->wdt, 2, SH(F, H), c->gate + i * fh, "%sexperts.%u.%s.weight", P, i, g);
            tl_add(l, c->wdt, 2, SH(F, H), c->up + i * fh, "%sexperts.%u.%s.weight", P, i, u);
            tl_add(l, c->wdt, 2, SH(H, F), c->down + i * fh, "%sexperts.%u.%s.weight", P, i, d);
        }
        break;
    case LAY_STACKED:
    case LAY_STACKED_ROUTER: {
        float *gu = malloc(sizeof(float) * E * 2 * fh);
        for (uint32_t i = 0; i < E; i++) {
            memcpy(gu + (size_t)i * 2 * fh, c->gate + i * fh, sizeof(float) * fh);
            memcpy(gu + (size_t)i * 2 * fh + fh, c->up + i * fh, sizeof(float) * fh);
        }
        tl_add(l, c->wdt, 3, SH(E, 2 * F, H), gu, "%sexperts.gate_up_proj", P);
        tl_add(l, c->wdt, 3, SH(E, H, F), c->down, "%sexperts.down_proj", P);
        free(gu);
        break;
    }
    case LAY_OSS: {
        float *gu = malloc(sizeof(float) * E * 2 * fh), *dn = malloc(sizeof(float) * E * fh);
        float *gub = malloc(sizeof(float) * E * 2 * F);
        for (uint64_t e = 0; e < E; e++)
            for (uint64_t f = 0; f < F; f++) {
                for (uint64_t h = 0; h < H; h++) {
                    gu[(e * H + h) * 2 * F + 2 * f] = c->gate[(e * F + f) * H + h];
                    gu[(e * H + h) * 2 * F + 2 * f + 1] = c->up[(e * F + f) * H + h];
                    dn[(e * F + f) * H + h] = c->down[(e * H + h) * F + f];
                }
                gub[e * 2 * F + 2 * f] = c->gbias[e * F + f];
                gub[e * 2 * F + 2 * f + 1] = c->ubias[e * F + f];
            }
        tl_add(l, c->wdt, 3, SH(E, H, 2 * F), gu, "%sexperts.gate_up_proj", P);
        tl_add(l, c->bdt, 2, SH(E, 2 * F), gub, "%sexperts.gate_up_proj_bias", P);
        tl_add(l, c->wdt, 3, SH(E, F, H), dn, "%sexperts.down_proj", P);
        tl_add(l, c->bdt, 2, SH(E, H), c->dbias, "%sexperts.down_proj_bias", P);
        free(gu);
        free(dn);
        free(gub);
        break;
    }
    case LAY_SWITCH:
        for (uint32_t i = 0; i < E; i++) {
            tl_add(l, c->wdt, 2, SH(F, H), c->up + i * fh, "%sexperts.expert_%u.wi.weight", P, i);
            tl_add(l, c->wdt, 2, SH(H, F), c->down + i * fh, "%sexperts.expert_%u.wo.weight", P,
                   i);
        }
        break;
    case LAY_DBRX: {
        /* w1, v1 [E·F, H] as they are; w2 [E·F, H] holds each down [H, F]
         * transposed */
        float *w2 = malloc(sizeof(float) * E * fh);
        for (uint64_t e = 0; e < E; e++)
            for (uint64_t f = 0; f < F; f++)
                for (uint64_t h = 0; h < H; h++)
                    w2[(e * F + f) * H + h] = c->down[(e * H + h) * F + f];
        tl_add(l, c->wdt, 2, SH(E * F, H), c->gate, "%sexperts.mlp.w1", P);
        tl_add(l, c->wdt, 2, SH(E * F, H), c->up, "%sexperts.mlp.v1", P);
        tl_add(l, c->wdt, 2, SH(E * F, H), w2, "%sexperts.mlp.w2", P);
        free(w2);
        break;
    }
    }
    if (shared == SHARED_GRANITE) {
        /* beside the block: P less its last component */
        const uint64_t SF = c->SF;
        const size_t pl = strlen(P);
        size_t n = pl && P[pl - 1] == '.' ? pl - 1 : pl;
        while (n && P[n - 1] != '.')
            n--;
        float *gu = malloc(sizeof(float) * 2 * SF * H);
        memcpy(gu, c->sgate, sizeof(float) * SF * H);
        memcpy(gu + SF * H, c->sup, sizeof(float) * SF * H);
        tl_add(l, c->sdt, 2, SH(2 * SF, H), gu, "%.*sshared_mlp.input_linear.weight", (int)n, P);
        tl_add(l, c->sdt, 2, SH(H, SF), c->sdown, "%.*sshared_mlp.output_linear.weight", (int)n,
               P);
        free(gu);
    } else if (shared) {
        const uint64_t SF = c->SF;
        const char *base = shared == SHARED_QWEN2 ? "shared_expert" : "shared_experts";
        tl_add(l, c->sdt, 2, SH(SF, H), c->sgate, "%s%s.gate_proj.weight", P, base);
        tl_add(l, c->sdt, 2, SH(SF, H), c->sup, "%s%s.up_proj.weight", P, base);
        tl_add(l, c->sdt, 2, SH(H, SF), c->sdown, "%s%s.down_proj.weight", P, base);
        if (c->sg)
            tl_add(l, c->rdt, 2, SH(1, H), c->sg, "%sshared_expert_gate.weight", P);
    }
}

/* ---- running the tool ------------------------------------------------------ */

/* Run `moevk args...`; returns the exit status (-1 if it did not exit),
 * stdout and stderr together in out (stderr alone with `stderr_only`). With
 * `limit_s`, the tool is killed (status -1) after that many seconds: a hang
 * fails the test instead of blocking it. */
static int run_cli_ex(char *out, size_t outsz, const char *const *args, int vulkan,
                      unsigned limit_s, int stderr_only);

static int run_cli_env(char *out, size_t outsz, const char *const *args, int vulkan)
{
    return run_cli_ex(out, outsz, args, vulkan, 0, 0);
}

static int run_cli(char *out, size_t outsz, const char *const *args)
{
    return run_cli_env(out, outsz, args, 0);
}

/* With `vulkan`, LeakSanitizer (in a -Db_sanitize build) is off in the
 * child: the Vulkan loader unloads the driver before exit, so the driver's
 * own leaks can no longer be attributed (tools/lsan.supp cannot match them).
 * The CPU-backend runs keep leak checking for moevk's code. */
static int run_cli_ex(char *out, size_t outsz, const char *const *args, int vulkan,
                      unsigned limit_s, int stderr_only)
{
    return mvkt_run_tool(out, outsz, args, vulkan, limit_s, stderr_only);
}

/* A failed Vulkan run that found no device at all: skipped unless
 * MOEVK_REQUIRE_DEVICE=1 (as in CI). */
static int no_vulkan_device(const char *out)
{
    if (!strstr(out, "MOEVK_ERROR_NO_DEVICE") && !strstr(out, "MOEVK_ERROR_NO_VULKAN"))
        return 0;
    const char *req = getenv("MOEVK_REQUIRE_DEVICE");
    cr_assert(!(req && *req && strcmp(req, "0")), "no Vulkan device:\n%s", out);
    cr_log_warn("no Vulkan device: the vulkan backend is not checked");
    return 1;
}

/* Write x (values rounded to dt) as tensor 'x'. */
static float *write_x(mvkt_rng *r, const char *path, moevk_dtype dt, uint32_t ndim,
                      const uint64_t *shape)
{
    size_t n = 1;
    for (uint32_t i = 0; i < ndim; i++)
        n *= shape[i];
    float *x = rnd(r, dt, n, 1.0f);
    tlist *l = tl_new();
    tl_add(l, dt, ndim, shape, x, "x");
    tl_write(l, path, 0, l->n);
    tl_free(l);
    return x;
}

/* Relative L2 error of y (from a `moevk run` output file) against expect,
 * tokens flagged in skip left out. */
static double y_error(const char *path, const float *expect, const uint8_t *skip, uint32_t T,
                      uint32_t H, uint32_t ndim, const uint64_t *shape)
{
    char err[512];
    mvk_st_file f;
    cr_assert_eq(mvk_st_open(path, &f, err, sizeof err), 0, "%s", err);
    const mvk_st_tensor *t = mvk_st_find(&f, "y");
    cr_assert_not_null(t, "no tensor y in %s", path);
    cr_assert_eq(f.count, 1);
    cr_assert_str_eq(t->dtype_name, "F32");
    cr_assert_eq(t->ndim, ndim);
    for (uint32_t i = 0; i < ndim; i++)
        cr_assert_eq(t->shape[i], shape[i]);
    double num = 0, den = 0;
    for (uint32_t tok = 0; tok < T; tok++) {
        if (skip && skip[tok])
            continue;
        for (uint32_t c = 0; c < H; c++) {
            float v;
            memcpy(&v, t->data + ((size_t)tok * H + c) * 4, 4);
            double e = expect[(size_t)tok * H + c];
            cr_assert(!isnan(v), "NaN in y at token %u", tok);
            num += (v - e) * (v - e);
            den += e * e;
        }
    }
    mvk_st_close(&f);
    return sqrt(num / (den > 0 ? den : 1));
}

/* Run `moevk run <sel> --input xpath` on the CPU reference, on Vulkan (with
 * validation) and on CUDA (which must either match or fail cleanly), and
 * compare each output with expect. */
static void run_backends(const char *dir, const char *const *sel, const char *xpath,
                         const float *expect, const uint8_t *skip, uint32_t T, uint32_t H,
                         uint32_t ndim, const uint64_t *shape, double tol)
{
    static const char *const backends[] = {"cpu", "vulkan", "cuda"};
    for (int b = 0; b < 3; b++) {
        char ypath[512], out[16384];
        snprintf(ypath, sizeof ypath, "%s/y_%s.safetensors", dir, backends[b]);
        const char *args[48];
        size_t n = 0;
        args[n++] = "run";
        for (const char *const *s = sel; *s; s++)
            args[n++] = *s;
        args[n++] = "--input";
        args[n++] = xpath;
        args[n++] = "--output";
        args[n++] = ypath;
        args[n++] = "--backend";
        args[n++] = backends[b];
        if (b == 1)
            args[n++] = "--validate";
        args[n] = NULL;
        int st = run_cli_env(out, sizeof out, args, b != 0);
        if (b == 1 && st != 0 && no_vulkan_device(out))
            continue;
        if (b == 2 && st != 0) {
            /* no CUDA build or device: a clean error, not a crash */
            cr_assert(st == 1 || st == 2, "cuda: exit %d\n%s", st, out);
            cr_assert(strstr(out, "CUDA"), "cuda: unclear message:\n%s", out);
            continue;
        }
        cr_assert_eq(st, 0, "moevk run --backend %s failed (%d):\n%s", backends[b], st, out);
        double e = y_error(ypath, expect, skip, T, H, ndim, shape);
        double lim = b == 0 ? 1e-6 : tol;
        cr_assert(e <= lim, "%s: relative L2 error %g > %g\n%s", backends[b], e, lim, out);
        cr_log_info("%s: relative L2 error %.3g", backends[b], e);
    }
}

/* The expected output from the CPU reference on the canonical desc. */
static float *expect_ref(const moevk_layer_desc *d, const float *x, uint32_t T, uint8_t **near)
{
    float *y = malloc(sizeof(float) * T * d->hidden);
    *near = malloc(T);
    cr_assert(y && *near);
    cr_assert_eq(moevk_layer_desc_validate(NULL, d), MOEVK_SUCCESS);
    cr_assert_eq(moevk_ref_layer_forward(d, T, x, y, NULL, NULL, *near, NULL), MOEVK_SUCCESS);
    return y;
}

/* ---- safetensors: good and bad files ------------------------------------ */

/* A file from a header string and data bytes; the header length may be
 * given wrong on purpose (hdr_len_override != 0). */
static void raw_file(const char *path, const char *hdr, uint64_t hdr_len_override,
                     size_t data_bytes)
{
    size_t hl = strlen(hdr);
    uint64_t n = hdr_len_override ? hdr_len_override : hl;
    size_t total = 8 + hl + data_bytes;
    uint8_t *b = calloc(1, total);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(n >> (8 * i));
    memcpy(b + 8, hdr, hl);
    for (size_t i = 0; i < data_bytes; i++)
        b[8 + hl + i] = (uint8_t)i;
    write_bytes(path, b, total);
    free(b);
}

static void expect_bad(const char *hdr, uint64_t hdr_len, size_t data_bytes, const char *msg)
{
    char dir[256], path[512], err[512] = "";
    dir_make(dir, sizeof dir);
    join(path, sizeof path, dir, "bad.safetensors");
    raw_file(path, hdr, hdr_len, data_bytes);
    mvk_st_file f;
    int rc = mvk_st_open(path, &f, err, sizeof err);
    dir_remove(dir);
    cr_assert_eq(rc, -1, "the file was accepted: %s", hdr);
    cr_assert(strstr(err, msg), "message '%s' does not say '%s'", err, msg);
    cr_assert(strstr(err, "bad.safetensors"), "message '%s' does not name the file", err);
}

Test(model, safetensors_round_trip)
{
    char dir[256], path[512], err[512];
    dir_make(dir, sizeof dir);
    join(path, sizeof path, dir, "t.safetensors");
    tlist *l = tl_new();
    float v[6] = {1, -2, 3.5f, 0.25f, -0.5f, 8};
    tl_add(l, MOEVK_DTYPE_BF16, 3, SH(1, 1, 3), v, "odd.bf16");
    tl_add(l, MOEVK_DTYPE_F32, 2, SH(2, 3), v, "a.f32");
    tl_add(l, MOEVK_DTYPE_F16, 1, SH(6), v, "b \"quoted\" name");
    tl_raw(l, "empty", "I64", 2, SH(0, 4), malloc(1));
    tl_write(l, path, 0, l->n);
    mvk_st_file f;
    cr_assert_eq(mvk_st_open(path, &f, err, sizeof err), 0, "%s", err);
    cr_assert_eq(f.count, 4);
    const mvk_st_tensor *a = mvk_st_find(&f, "a.f32"), *b = mvk_st_find(&f, "b \"quoted\" name");
    cr_assert(a && b && mvk_st_find(&f, "odd.bf16") && mvk_st_find(&f, "empty"));
    cr_assert_eq(a->dtype, MOEVK_DTYPE_F32);
    cr_assert_eq(a->ndim, 2);
    cr_assert_eq(a->shape[1], 3);
    float got[6];
    mvk_model_to_f32(a->data, a->dtype, 6, got); /* a->data is 2-byte aligned: unaligned read */
    cr_assert_arr_eq(got, v, sizeof v);
    mvk_model_to_f32(b->data, b->dtype, 6, got);
    cr_assert_arr_eq(got, v, sizeof v);
    cr_assert_eq(mvk_st_find(&f, "empty")->numel, 0);
    cr_assert_null(mvk_st_find(&f, "nope"));
    mvk_st_close(&f);
    tl_free(l);
    dir_remove(dir);
}

Test(model, bad_file_too_short)
{
    char dir[256], path[512], err[512] = "";
    dir_make(dir, sizeof dir);
    write_bytes(join(path, sizeof path, dir, "bad.safetensors"), "\x02\0\0\0\0", 5);
    mvk_st_file f;
    int rc = mvk_st_open(path, &f, err, sizeof err);
    dir_remove(dir);
    cr_assert_eq(rc, -1);
    cr_assert(strstr(err, "too short") && strstr(err, "bad.safetensors"), "%s", err);
}

Test(model, bad_header_length_beyond_file)
{
    expect_bad("{}", 4096, 0, "goes beyond the end of the file");
}

Test(model, bad_header_not_json)
{
    expect_bad("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]", 0, 4,
               "not valid JSON");
    expect_bad("[1, 2, 3]", 0, 0, "not a JSON object");
    expect_bad("{} trailing", 0, 0, "header has bytes after its JSON value (at byte 3)");
}

Test(model, bad_offsets_outside_file)
{
    expect_bad("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 0, 12,
               "lie outside the file");
}

Test(model, bad_overlapping_offsets)
{
    expect_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
               " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
               0, 12, "overlap");
}

Test(model, bad_reversed_offsets)
{
    expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [8, 4]}}", 0, 8,
               "reversed");
}

Test(model, bad_shape_dtype_length)
{
    expect_bad("{\"w\": {\"dtype\": \"BF16\", \"shape\": [3, 2], \"data_offsets\": [0, 8]}}", 0,
               12, "is 12 bytes but data_offsets span 8 bytes");
}

Test(model, bad_shape_product_overflow)
{
    expect_bad("{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 2],"
               " \"data_offsets\": [0, 0]}}",
               0, 0, "overflows 64 bits");
    expect_bad("{\"w\": {\"dtype\": \"F32\", \"shape\": [1e300], \"data_offsets\": [0, 0]}}", 0,
               0, "not an integer");
    expect_bad("{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 0]}}", 0, 0,
               "not an integer");
}

Test(model, bad_unknown_dtype_and_fields)
{
    expect_bad("{\"w\": {\"dtype\": \"Q4_K\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 0, 1,
               "unknown dtype 'Q4_K'");
    expect_bad("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 1]}}", 0, 1, "\"dtype\"");
    expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0]}}", 0, 1,
               "data_offsets");
    expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
               " \"w\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}",
               0, 2, "the header has the key \"w\" twice in the top-level object");
    expect_bad("{\"__metadata__\": {\"format\": 3}}", 0, 0, "__metadata__");
}

/* A tiny mixtral block written with one tensor replaced or left out. */
static int build_with(const char *dir, const char *drop, const char *bad_dtype_name,
                      char *err, size_t errsz)
{
    mvkt_rng r = mvkt_rng_make(7);
    canon c;
    canon_make(&c, &r, 8, 4, 2, 1, 0, MOEVK_DTYPE_BF16, MOEVK_DTYPE_BF16, MOEVK_DTYPE_BF16, 0);
    tlist *l = tl_new(), *k = tl_new();
    add_block(l, &c, "", LAY_W123, SHARED_NONE);
    for (size_t i = 0; i < l->n; i++) {
        if (drop && !strcmp(l->name[i], drop))
            continue;
        if (bad_dtype_name && !strcmp(l->name[i], "experts.1.w3.weight")) {
            /* same bytes per element as BF16, another dtype */
            size_t bytes = 4 * 8 * 2;
            void *p = calloc(1, bytes);
            tl_raw(k, l->name[i], bad_dtype_name, 2, SH(4, 8),
                   p);
            if (strcmp(bad_dtype_name, "I16") && strcmp(bad_dtype_name, "F16")) {
                /* 1-byte types: half the bytes */
                k->t[k->n - 1].shape[1] = 16;
            }
            continue;
        }
        tl_raw(k, l->name[i], l->t[i].dtype, l->t[i].ndim, l->t[i].shape, l->buf[i]);
        l->buf[i] = NULL;
    }
    char path[512];
    join(path, sizeof path, dir, "w.safetensors");
    tl_write(k, path, 0, k->n);
    tl_free(l);
    tl_free(k);
    canon_free(&c);
    mvk_moe_config cfg;
    const char *json = "{\"model_type\": \"mixtral\", \"hidden_size\": 8, \"intermediate_size\": 4,"
                       " \"num_local_experts\": 2, \"num_experts_per_tok\": 1}";
    cr_assert_eq(mvk_hf_config_parse(json, strlen(json), "config.json", &cfg, err, errsz), 0,
                 "%s", err);
    mvk_st_set set;
    mvk_st_set_init(&set);
    mvk_model_layer L;
    int rc = mvk_st_set_add_file(&set, path, err, errsz);
    if (!rc)
        rc = mvk_model_layer_build(&cfg, &set, "", &L, err, errsz);
    if (!rc)
        mvk_model_layer_free(&L);
    mvk_st_set_free(&set);
    mvk_hf_config_free(&cfg);
    return rc;
}

Test(model, unsupported_dtype_names_the_tensor)
{
    char dir[256], err[512];
    dir_make(dir, sizeof dir);
    cr_assert_eq(build_with(dir, NULL, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(build_with(dir, NULL, "I16", err, sizeof err), -1);
    cr_assert(strstr(err, "unsupported dtype I16") && strstr(err, "experts.1.w3.weight"), "%s",
              err);
    cr_assert_eq(build_with(dir, NULL, "F8_E4M3", err, sizeof err), -1);
    cr_assert(strstr(err, "unsupported dtype F8_E4M3") && strstr(err, "experts.1.w3.weight"),
              "%s", err);
    dir_remove(dir);
}

Test(model, missing_tensor_names_the_tensor)
{
    char dir[256], err[512];
    dir_make(dir, sizeof dir);
    cr_assert_eq(build_with(dir, "experts.1.w2.weight", NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "missing tensor 'experts.1.w2.weight'"), "%s", err);
    cr_assert_eq(build_with(dir, "gate.weight", NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "missing tensor 'gate.weight'"), "%s", err);
    dir_remove(dir);
}

Test(model, wrong_shape_names_the_tensor)
{
    char dir[256], path[512], err[512];
    dir_make(dir, sizeof dir);
    tlist *l = tl_new();
    float z[128] = {0};
    tl_add(l, MOEVK_DTYPE_F32, 2, SH(2, 8), z, "gate.weight");
    tl_add(l, MOEVK_DTYPE_F32, 3, SH(2, 8, 8), z, "experts.gate_up_proj"); /* 2F = 8: F = 4 */
    tl_add(l, MOEVK_DTYPE_F32, 3, SH(2, 8, 3), z, "experts.down_proj");   /* wrong: F = 3 */
    tl_write(l, join(path, sizeof path, dir, "w.safetensors"), 0, l->n);
    tl_free(l);
    const char *json = "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 8,"
                       " \"moe_intermediate_size\": 4, \"num_experts\": 2,"
                       " \"num_experts_per_tok\": 1}";
    mvk_moe_config cfg;
    cr_assert_eq(mvk_hf_config_parse(json, strlen(json), "c", &cfg, err, sizeof err), 0);
    mvk_st_set set;
    mvk_st_set_init(&set);
    cr_assert_eq(mvk_st_set_add_file(&set, path, err, sizeof err), 0);
    mvk_model_layer L;
    cr_assert_eq(mvk_model_layer_build(&cfg, &set, "", &L, err, sizeof err), -1);
    cr_assert(strstr(err, "'experts.down_proj' has shape [2, 8, 3], expected [E, H, F] = [2, 8, 4]"),
              "%s", err);
    mvk_st_set_free(&set);
    mvk_hf_config_free(&cfg);
    dir_remove(dir);
}

/* ---- config.json ------------------------------------------------------------ */

static mvk_moe_config parse_ok(const char *json)
{
    char err[512];
    mvk_moe_config c;
    cr_assert_eq(mvk_hf_config_parse(json, strlen(json), "config.json", &c, err, sizeof err), 0,
                 "%s: %s", json, err);
    return c;
}

static void parse_bad_n(const char *json, size_t len, const char *msg)
{
    char err[512] = "";
    mvk_moe_config c;
    cr_assert_eq(mvk_hf_config_parse(json, len, "config.json", &c, err, sizeof err), -1,
                 "accepted: %s", json);
    cr_assert(strstr(err, msg), "'%s' does not say '%s'", err, msg);
}

static void parse_bad(const char *json, const char *msg)
{
    parse_bad_n(json, strlen(json), msg);
}

/* One config.json per row and every field the parser derives from it:
 * transformers' class defaults where a key is absent, the aliases, the
 * fields an architecture fixes whatever the file says. */
/* The routing fields mvk_moe_config and moevk_layer_desc share. */
#define ROUTING_FIELDS(X)                                                                       \
    X(routing) X(activation) X(norm_topk_prob) X(n_group) X(topk_group)                         \
    X(routed_scaling_factor) X(swiglu_alpha) X(swiglu_limit) X(group_score) X(norm_p) X(norm_min) \
    X(norm_eps) X(router_softcap) X(select_on_logits) X(jitter_eps)

typedef struct config_row {
    const char *json;
    const char *model_type;
    mvk_moe_config want; /* .arch and .mlp_only_layers are compared apart */
    uint32_t want_mlp_only[2];
} config_row;

#define SILU .activation = MOEVK_ACT_SWIGLU, .act_name = "silu"

static const config_row config_rows[] = {
    /* DeepSeek-V2: "greedy" reads no groups; never renormalised */
    {"{\"model_type\": \"deepseek_v2\", \"num_experts_per_tok\": 6, \"n_group\": 8,"
     " \"topk_group\": 3, \"norm_topk_prob\": true}",
     "deepseek_v2",
     {.hidden = 4096, .ffn = 1407, .num_experts = 64, .top_k = 6, SILU, .n_group = 1,
      .topk_group = 1, .routed_scaling_factor = 1.0f, .shared_ffn = 2 * 1407, .num_layers = 32,
      .decoder_sparse_step = 1}},
    {"{\"model_type\": \"deepseek_v2\", \"num_experts_per_tok\": 6, \"n_group\": 8,"
     " \"topk_group\": 3, \"topk_method\": \"group_limited_greedy\", \"routed_scaling_factor\": 16.0}",
     "deepseek_v2",
     {.hidden = 4096, .ffn = 1407, .num_experts = 64, .top_k = 6, SILU, .n_group = 8,
      .topk_group = 3, .routed_scaling_factor = 16.0f, .group_score = MOEVK_GROUP_MAX,
      .group_limited = 1,
      .shared_ffn = 2 * 1407, .num_layers = 32, .decoder_sparse_step = 1}},
    /* ERNIE-4.5: the clamp, the correction bias, the MoE layer range */
    {"{\"model_type\": \"ernie4_5_moe\"}", "ernie4_5_moe",
     {.hidden = 2560, .ffn = 1536, .num_experts = 64, .top_k = 6, .norm_topk_prob = 1, SILU,
      .norm_min = 1e-12f, .shared_ffn = 2 * 1536, .correction_bias = 1, .num_layers = 28,
      .first_k_dense_replace = 1, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"mixtral\"}", "mixtral",
     {.hidden = 4096, .ffn = 14336, .num_experts = 8, .top_k = 2, .norm_topk_prob = 1, SILU,
      .num_layers = 32, .decoder_sparse_step = 1}},
    /* NLLB-MoE: top-2, renormalised over max(sum, float32 eps), the outputs
     * times 1 - moe_token_dropout */
    {"{\"model_type\": \"nllb-moe\"}", "nllb-moe",
     {.hidden = 1024, .ffn = 4096, .num_experts = 128, .top_k = 2, .norm_topk_prob = 1,
      .norm_min = 1.1920928955078125e-07f, .routed_scaling_factor = 0.8f,
      .activation = MOEVK_ACT_RELU, .act_name = "relu", .num_layers = 12,
      .num_decoder_layers = 12, .encoder_sparse_step = 4, .decoder_sparse_step_sw = 4,
      .decoder_sparse_step = 1, .eval_capacity = 1.0}},
    {"{\"model_type\": \"nllb_moe\", \"moe_token_dropout\": 0, \"router_bias\": true,"
     " \"d_model\": 32, \"encoder_ffn_dim\": 8, \"num_experts\": 4, \"encoder_layers\": 2,"
     " \"encoder_sparse_step\": 1, \"moe_eval_capacity_token_fraction\": 2.5,"
     " \"batch_prioritized_routing\": true}",
     "nllb-moe",
     {.hidden = 32, .ffn = 8, .num_experts = 4, .top_k = 2, .norm_topk_prob = 1,
      .norm_min = 1.1920928955078125e-07f, .routed_scaling_factor = 1.0f, .router_bias = 1,
      .activation = MOEVK_ACT_RELU, .act_name = "relu", .num_layers = 2,
      .num_decoder_layers = 12, .encoder_sparse_step = 1, .decoder_sparse_step_sw = 4,
      .decoder_sparse_step = 1, .eval_capacity = 2.5, .batch_priority = 1}},
    /* an eval capacity below the tokens: C = ceil(f T) with f exactly as
     * written (0.3 is not a float), renormalised after dropping */
    {"{\"model_type\": \"nllb-moe\", \"moe_eval_capacity_token_fraction\": 0.3}", "nllb-moe",
     {.hidden = 1024, .ffn = 4096, .num_experts = 128, .top_k = 2, .norm_topk_prob = 0,
      .routed_scaling_factor = 0.8f, .activation = MOEVK_ACT_RELU, .act_name = "relu",
      .num_layers = 12, .num_decoder_layers = 12, .encoder_sparse_step = 4,
      .decoder_sparse_step_sw = 4, .decoder_sparse_step = 1, .eval_capacity = 0.3,
      .capacity_fraction = 0.3, .drop_renorm_eps = 1.1920928955078125e-07f}},
    /* normalised before dropping: the admitted weights stay as they were */
    {"{\"model_type\": \"nllb-moe\", \"moe_eval_capacity_token_fraction\": 0.75,"
     " \"normalize_router_prob_before_dropping\": true}",
     "nllb-moe",
     {.hidden = 1024, .ffn = 4096, .num_experts = 128, .top_k = 2, .norm_topk_prob = 1,
      .norm_min = 1.1920928955078125e-07f, .routed_scaling_factor = 0.8f,
      .activation = MOEVK_ACT_RELU, .act_name = "relu", .num_layers = 12,
      .num_decoder_layers = 12, .encoder_sparse_step = 4, .decoder_sparse_step_sw = 4,
      .decoder_sparse_step = 1, .eval_capacity = 0.75, .norm_before_drop = 1,
      .capacity_fraction = 0.75}},
    /* LongCat-Flash: identity experts beside the FFN ones, its own key names */
    {"{\"model_type\": \"longcat_flash\"}", "longcat_flash",
     {.hidden = 6144, .ffn = 2048, .num_experts = 512, .zero_experts = 256, .top_k = 12, SILU,
      .routed_scaling_factor = 6.0f, .correction_bias = 1, .num_layers = 28,
      .decoder_sparse_step = 1}},
    {"{\"model_type\": \"longcat_flash\", \"n_routed_experts\": 6, \"zero_expert_num\": 2,"
     " \"moe_topk\": 8, \"expert_ffn_hidden_size\": 16, \"num_layers\": 2}",
     "longcat_flash",
     {.hidden = 6144, .ffn = 16, .num_experts = 6, .zero_experts = 2, .top_k = 8, SILU,
      .routed_scaling_factor = 6.0f, .correction_bias = 1, .num_layers = 2,
      .decoder_sparse_step = 1}},
    /* MixtralSparseMoeBlock always renormalises: norm_topk_prob is not read */
    {"{\"model_type\": \"mixtral\", \"norm_topk_prob\": false, \"num_local_experts\": 4,"
     " \"num_experts_per_tok\": 1, \"hidden_act\": \"gelu_pytorch_tanh\"}",
     "mixtral",
     {.hidden = 4096, .ffn = 14336, .num_experts = 4, .top_k = 1, .norm_topk_prob = 1,
      .activation = MOEVK_ACT_GEGLU_TANH, .act_name = "gelu_pytorch_tanh", .num_layers = 32,
      .decoder_sparse_step = 1}},
    {"{\"model_type\": \"qwen2_moe\"}", "qwen2_moe",
     {.hidden = 2048, .ffn = 1408, .num_experts = 60, .top_k = 4, SILU, .shared_ffn = 5632,
      .shared_gate = 1, .num_layers = 24, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"qwen2_moe\", \"shared_expert_intermediate_size\": 0,"
     " \"decoder_sparse_step\": 2, \"mlp_only_layers\": [3, 5], \"hidden_act\": \"gelu\","
     " \"intermediate_size\": 99}",
     "qwen2_moe",
     {.hidden = 2048, .ffn = 1408, .num_experts = 60, .top_k = 4,
      .activation = MOEVK_ACT_GEGLU, .act_name = "gelu", .num_layers = 24,
      .decoder_sparse_step = 2, .n_mlp_only_layers = 2},
     {3, 5}},
    {"{\"model_type\": \"qwen3_moe\"}", "qwen3_moe",
     {.hidden = 2048, .ffn = 768, .num_experts = 128, .top_k = 8, SILU, .num_layers = 24,
      .decoder_sparse_step = 1}},
    /* num_experts wins over num_local_experts */
    {"{\"model_type\": \"qwen3_moe\", \"norm_topk_prob\": true, \"num_experts\": 16,"
     " \"num_local_experts\": 32}",
     "qwen3_moe",
     {.hidden = 2048, .ffn = 768, .num_experts = 16, .top_k = 8, .norm_topk_prob = 1, SILU,
      .num_layers = 24, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"deepseek_v3\"}", "deepseek_v3",
     {.hidden = 7168, .ffn = 2048, .num_experts = 256, .top_k = 8,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .norm_topk_prob = 1, SILU, .n_group = 8,
      .topk_group = 4, .routed_scaling_factor = 2.5f, .shared_ffn = 2048,
      .correction_bias = 1, .num_layers = 61, .decoder_sparse_step = 1,
      .first_k_dense_replace = 3}},
    /* shared_ffn = n_shared_experts x moe_intermediate_size */
    {"{\"model_type\": \"deepseek_v3\", \"n_shared_experts\": 2, \"moe_intermediate_size\": 100,"
     " \"n_routed_experts\": 64, \"n_group\": 1, \"topk_group\": 1,"
     " \"routed_scaling_factor\": 1.5, \"hidden_act\": \"swish\", \"norm_topk_prob\": false,"
     " \"first_k_dense_replace\": 0}",
     "deepseek_v3",
     {.hidden = 7168, .ffn = 100, .num_experts = 64, .top_k = 8,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .activation = MOEVK_ACT_SWIGLU,
      .act_name = "swish", .n_group = 1, .topk_group = 1, .routed_scaling_factor = 1.5f,
      .shared_ffn = 200, .correction_bias = 1, .num_layers = 61, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"olmoe\"}", "olmoe",
     {.hidden = 2048, .ffn = 2048, .num_experts = 64, .top_k = 8, SILU, .num_layers = 16,
      .decoder_sparse_step = 1}},
    {"{\"model_type\": \"olmoe\", \"num_local_experts\": 32, \"norm_topk_prob\": true}", "olmoe",
     {.hidden = 2048, .ffn = 2048, .num_experts = 32, .top_k = 8, .norm_topk_prob = 1, SILU,
      .num_layers = 16, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"gpt_oss\"}", "gpt_oss",
     {.hidden = 2880, .ffn = 2880, .num_experts = 128, .top_k = 4,
      .routing = MOEVK_ROUTING_TOPK_SOFTMAX, .activation = MOEVK_ACT_SWIGLU_OAI,
      .act_name = "swiglu_oai", .swiglu_alpha = 1.702f, .swiglu_limit = 7.0f,
      .router_bias = 1, .expert_bias = 1, .num_layers = 36, .decoder_sparse_step = 1}},
    /* the aliases; hidden_act is not read (gpt-oss' activation is fixed) */
    {"{\"model_type\": \"gpt_oss\", \"swiglu_limit\": 3.5, \"experts_per_token\": 2,"
     " \"num_experts\": 64, \"hidden_act\": \"gelu\", \"swiglu_alpha\": 1.5}",
     "gpt_oss",
     {.hidden = 2880, .ffn = 2880, .num_experts = 64, .top_k = 2,
      .routing = MOEVK_ROUTING_TOPK_SOFTMAX, .activation = MOEVK_ACT_SWIGLU_OAI,
      .act_name = "swiglu_oai", .swiglu_alpha = 1.5f, .swiglu_limit = 3.5f, .router_bias = 1,
      .expert_bias = 1, .num_layers = 36, .decoder_sparse_step = 1}},
    /* DBRX: the FFN's keys in ffn_config (its activation one level deeper),
     * a p-norm (null: none) */
    {"{\"model_type\": \"dbrx\"}", "dbrx",
     {.hidden = 2048, .ffn = 3584, .num_experts = 4, .top_k = 1, .norm_topk_prob = 1,
      .norm_p = 1.0f, SILU, .num_layers = 24, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"dbrx\", \"d_model\": 96, \"n_layers\": 4, \"ffn_config\":"
     " {\"ffn_hidden_size\": 40, \"moe_num_experts\": 16, \"moe_top_k\": 4,"
     " \"moe_normalize_expert_weights\": null, \"ffn_act_fn\": {\"name\": \"gelu\"}}}",
     "dbrx",
     {.hidden = 96, .ffn = 40, .num_experts = 16, .top_k = 4, .activation = MOEVK_ACT_GEGLU,
      .act_name = "gelu", .num_layers = 4, .decoder_sparse_step = 1}},
    /* Hunyuan: always renormalised, the shared MLP as wide as an expert,
     * moe_topk's first entry until a layer is chosen */
    {"{\"model_type\": \"hunyuan_v1_moe\"}", "hunyuan_v1_moe",
     {.hidden = 4096, .ffn = 11008, .num_experts = 1, .top_k = 1, .norm_topk_prob = 1, SILU,
      .shared_ffn = 11008, .num_layers = 32, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"hunyuan_v1_moe\", \"num_experts\": 64, \"moe_topk\": [8, 6],"
     " \"intermediate_size\": 3072, \"num_hidden_layers\": 2}",
     "hunyuan_v1_moe",
     {.hidden = 4096, .ffn = 3072, .num_experts = 64, .top_k = 8, .norm_topk_prob = 1, SILU,
      .shared_ffn = 3072, .num_layers = 2, .decoder_sparse_step = 1}},
    /* Granite's shared MLP: none by default, but for the hybrid */
    {"{\"model_type\": \"granitemoeshared\"}", "granitemoeshared",
     {.hidden = 4096, .ffn = 11008, .num_experts = 8, .top_k = 2,
      .routing = MOEVK_ROUTING_TOPK_SOFTMAX, SILU, .num_layers = 32, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"granitemoe_swa\", \"shared_intermediate_size\": 512}",
     "granitemoeshared",
     {.hidden = 4096, .ffn = 11008, .num_experts = 8, .top_k = 2,
      .routing = MOEVK_ROUTING_TOPK_SOFTMAX, SILU, .shared_ffn = 512, .num_layers = 32,
      .decoder_sparse_step = 1}},
    {"{\"model_type\": \"granitemoehybrid\"}", "granitemoehybrid",
     {.hidden = 4096, .ffn = 11008, .num_experts = 8, .top_k = 2,
      .routing = MOEVK_ROUTING_TOPK_SOFTMAX, SILU, .shared_ffn = 1024, .num_layers = 32,
      .decoder_sparse_step = 1}},
    /* MiniMax-M3-VL's text model: the clamped SwiGLU whatever hidden_act
     * says, sigmoid routing with the correction bias, scaled */
    {"{\"model_type\": \"minimax_m3_vl\", \"text_config\": {\"model_type\":"
     " \"minimax_m3_vl_text\", \"hidden_act\": \"gelu\"}}",
     "minimax_m3_vl_text",
     {.hidden = 6144, .ffn = 3072, .num_experts = 128, .top_k = 4,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .activation = MOEVK_ACT_SWIGLU_OAI,
      .act_name = "swiglu_oai", .norm_topk_prob = 1, .routed_scaling_factor = 2.0f,
      .swiglu_alpha = 1.702f, .swiglu_limit = 7.0f, .shared_ffn = 3072, .correction_bias = 1,
      .num_layers = 60, .decoder_sparse_step = 1}},
    /* LFM2-MoE: sum + 1e-6, the expert bias unless use_expert_bias is false */
    {"{\"model_type\": \"lfm2_moe\"}", "lfm2_moe",
     {.hidden = 2048, .ffn = 1792, .num_experts = 32, .top_k = 4,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .norm_topk_prob = 1, .norm_eps = 1e-6f, SILU,
      .routed_scaling_factor = 1.0f, .correction_bias = 1, .first_k_dense_replace = 2,
      .num_layers = 32, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"lfm2_moe\", \"use_expert_bias\": false, \"norm_topk_prob\": false,"
     " \"hidden_act\": \"gelu\"}",
     "lfm2_moe",
     {.hidden = 2048, .ffn = 1792, .num_experts = 32, .top_k = 4,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .norm_eps = 1e-6f, SILU,
      .routed_scaling_factor = 1.0f, .first_k_dense_replace = 2, .num_layers = 32,
      .decoder_sparse_step = 1}},
    /* DeepSeek-V4: sqrt(softplus) scores, always normalised, one shared
     * expert whatever n_shared_experts says, clamped SwiGLU everywhere */
    {"{\"model_type\": \"deepseek_v4\", \"n_shared_experts\": 3, \"norm_topk_prob\": false}",
     "deepseek_v4",
     {.hidden = 4096, .ffn = 2048, .num_experts = 256, .top_k = 6,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .activation = MOEVK_ACT_SWIGLU_CLAMP,
      .act_name = "silu", .norm_topk_prob = 1, .routed_scaling_factor = 1.5f,
      .swiglu_limit = 10.0f, .shared_ffn = 2048, .correction_bias = 1, .num_layers = 43,
      .decoder_sparse_step = 1, .sqrtsoftplus = 1, .hash_layers = 3}},
    {"{\"model_type\": \"deepseek_v4\", \"scoring_func\": \"sigmoid\", \"num_hash_layers\": 0,"
     " \"swiglu_limit\": 7, \"moe_intermediate_size\": 64, \"routed_scaling_factor\": 2.5}",
     "deepseek_v4",
     {.hidden = 4096, .ffn = 64, .num_experts = 256, .top_k = 6,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .activation = MOEVK_ACT_SWIGLU_CLAMP,
      .act_name = "silu", .norm_topk_prob = 1, .routed_scaling_factor = 2.5f,
      .swiglu_limit = 7.0f, .shared_ffn = 64, .correction_bias = 1, .num_layers = 43,
      .decoder_sparse_step = 1}},
    /* ERNIE-4.5-VL on text tokens: the text expert set's width is
     * moe_intermediate_size[0], the shared experts' n times it */
    {"{\"model_type\": \"ernie4_5_vl_moe\", \"text_config\": {\"model_type\": "
     "\"ernie4_5_vl_moe_text\", \"moe_intermediate_size\": [96, 40], \"moe_k\": 4}}",
     "ernie4_5_vl_moe_text",
     {.hidden = 2560, .ffn = 96, .num_experts = 64, .top_k = 4,
      .routing = MOEVK_ROUTING_SOFTMAX_TOPK, SILU, .norm_topk_prob = 1, .norm_min = 1e-12f,
      .shared_ffn = 192, .correction_bias = 1, .num_layers = 28, .first_k_dense_replace = 1,
      .decoder_sparse_step = 1}},
    {"{\"model_type\": \"ernie4_5_vl_moe_text\"}", "ernie4_5_vl_moe_text",
     {.hidden = 2560, .ffn = 1536, .num_experts = 64, .top_k = 6,
      .routing = MOEVK_ROUTING_SOFTMAX_TOPK, SILU, .norm_topk_prob = 1, .norm_min = 1e-12f,
      .shared_ffn = 3072, .correction_bias = 1, .num_layers = 28, .first_k_dense_replace = 1,
      .decoder_sparse_step = 1}},
    /* Nemotron-H-Omni's released configs name the text model llm_config */
    {"{\"model_type\": \"nemotron_h_omni\", \"llm_config\": {\"model_type\": \"nemotron_h\","
     " \"layers_block_type\": [\"mamba\", \"moe\"], \"n_routed_experts\": 16}}",
     "nemotron_h",
     {.hidden = 4096, .ffn = 7688, .num_experts = 16, .top_k = 2,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .activation = MOEVK_ACT_RELU2,
      .act_name = "relu2", .norm_topk_prob = 1, .n_group = 1, .topk_group = 1,
      .routed_scaling_factor = 1.0f, .shared_ffn = 7688, .correction_bias = 1, .num_layers = 2,
      .decoder_sparse_step = 1}},
    /* Inkling (through its multimodal wrapper): the shared experts' count,
     * each as wide as a routed one, route_scale; always normalised */
    {"{\"model_type\": \"inkling_mm_model\", \"text_config\": {\"model_type\": \"inkling_text\","
     " \"n_shared_experts\": 3, \"moe_intermediate_size\": 40, \"route_scale\": 2.5,"
     " \"shared_expert_sink\": false}}",
     "inkling_text",
     {.hidden = 6144, .ffn = 40, .num_experts = 256, .top_k = 6,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, SILU, .norm_topk_prob = 1,
      .routed_scaling_factor = 2.5f, .shared_ffn = 40, .correction_bias = 1, .num_layers = 48,
      .decoder_sparse_step = 1, .sink_shared = 3}},
    {"{\"model_type\": \"inkling_text\"}", "inkling_text",
     {.hidden = 6144, .ffn = 3072, .num_experts = 256, .top_k = 6,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, SILU, .norm_topk_prob = 1,
      .routed_scaling_factor = 8.0f, .shared_ffn = 3072, .correction_bias = 1, .num_layers = 48,
      .decoder_sparse_step = 1, .sink_shared = 2}},
    /* HY-V4: clamped routed experts, the shared expert's own hidden_act */
    {"{\"model_type\": \"hy_v4\"}", "hy_v4",
     {.hidden = 2816, .ffn = 768, .num_experts = 256, .top_k = 8,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .activation = MOEVK_ACT_SWIGLU_CLAMP,
      .act_name = "silu (clamped)", .norm_topk_prob = 1, .n_group = 1, .topk_group = 1,
      .routed_scaling_factor = 2.827f, .swiglu_limit = 10.0f, .shared_ffn = 768,
      .correction_bias = 1, .first_k_dense_replace = 1, .num_layers = 34,
      .decoder_sparse_step = 1, .shared_act = 1, .shared_activation = MOEVK_ACT_SWIGLU,
      .shared_act_name = "silu"}},
    {"{\"model_type\": \"hy_v4_vl\", \"text_config\": {\"model_type\": \"hy_v4_vl_text\","
     " \"hidden_act\": \"gelu\", \"swiglu_limit\": 3, \"n_shared_experts\": 2,"
     " \"moe_intermediate_size\": 100}}",
     "hy_v4_vl_text",
     {.hidden = 6144, .ffn = 100, .num_experts = 256, .top_k = 8,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .activation = MOEVK_ACT_SWIGLU_CLAMP,
      .act_name = "silu (clamped)", .norm_topk_prob = 1, .n_group = 1, .topk_group = 1,
      .routed_scaling_factor = 2.827f, .swiglu_limit = 3.0f, .shared_ffn = 200,
      .correction_bias = 1, .first_k_dense_replace = 1, .num_layers = 78,
      .decoder_sparse_step = 1, .shared_act = 1, .shared_activation = MOEVK_ACT_GEGLU,
      .shared_act_name = "gelu"}},
    /* Step-3.7's text model: per-layer limits (the first until a layer is
     * chosen), none by default */
    {"{\"model_type\": \"step3p7\", \"text_config\": {\"model_type\": \"step3p5\"}}",
     "step3p5",
     {.hidden = 4096, .ffn = 1280, .num_experts = 288, .top_k = 8,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .activation = MOEVK_ACT_SWIGLU_POSTCLAMP,
      .act_name = "silu (clamped after)", .norm_topk_prob = 1, .routed_scaling_factor = 1.0f,
      .shared_ffn = 1280, .correction_bias = 1, .first_k_dense_replace = 3, .num_layers = 45,
      .decoder_sparse_step = 1, .shared_act = 1,
      .shared_activation = MOEVK_ACT_SWIGLU_POSTCLAMP, .shared_act_name = "silu (clamped after)"}},
    {"{\"model_type\": \"step3p5\", \"moe_num_experts\": 16, \"moe_top_k\": 4,"
     " \"share_expert_dims\": 64, \"moe_router_scaling_factor\": 3.0, \"hidden_act\": \"gelu\","
     " \"swiglu_limits\": [7.5, null, 0], \"swiglu_limits_shared\": [16, 0, null]}",
     "step3p5",
     {.hidden = 4096, .ffn = 1280, .num_experts = 16, .top_k = 4,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .activation = MOEVK_ACT_SWIGLU_POSTCLAMP,
      .act_name = "silu (clamped after)", .norm_topk_prob = 1, .routed_scaling_factor = 3.0f,
      .swiglu_limit = 7.5f, .shared_ffn = 64, .correction_bias = 1,
      .first_k_dense_replace = 3, .num_layers = 45, .decoder_sparse_step = 1, .shared_act = 1,
      .shared_activation = MOEVK_ACT_SWIGLU_POSTCLAMP, .shared_act_name = "silu (clamped after)",
      .shared_swiglu_limit = 16.0f}},
    /* Inkling-2 (and -Loop): the soft caps, route_scale */
    {"{\"model_type\": \"inkling2\", \"text_config\": {\"model_type\": \"inkling2_text\"}}",
     "inkling2_text",
     {.hidden = 4608, .ffn = 2304, .num_experts = 384, .top_k = 8,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .activation = MOEVK_ACT_SWIGLU_SOFTCAP,
      .act_name = "silu (soft-capped)", .norm_topk_prob = 1, .routed_scaling_factor = 8.0f,
      .softcap_gate = 4.0f, .softcap_up = 25.0f, .correction_bias = 1, .num_layers = 48,
      .decoder_sparse_step = 1}},
    {"{\"model_type\": \"inkling2_loop_text\", \"mlp_gate_softcap\": 2.5,"
     " \"mlp_up_softcap\": 30, \"route_scale\": 1.5, \"scoring_func\": \"sigmoid\"}",
     "inkling2_loop_text",
     {.hidden = 2304, .ffn = 1152, .num_experts = 128, .top_k = 8,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .activation = MOEVK_ACT_SWIGLU_SOFTCAP,
      .act_name = "silu (soft-capped)", .norm_topk_prob = 1, .routed_scaling_factor = 1.5f,
      .softcap_gate = 2.5f, .softcap_up = 30.0f, .correction_bias = 1, .num_layers = 24,
      .decoder_sparse_step = 1}},
    /* dots3-note's text model: n_shared_experts x shared_experts_intermediate_size */
    {"{\"model_type\": \"dots3_note\", \"text_config\": {\"model_type\": \"dots3_note_text\","
     " \"n_shared_experts\": 2}}",
     "dots3_note_text",
     {.hidden = 5120, .ffn = 1536, .num_experts = 256, .top_k = 8,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .norm_topk_prob = 1, SILU, .n_group = 1,
      .topk_group = 1, .routed_scaling_factor = 1.0f, .shared_ffn = 2 * 1536,
      .correction_bias = 1, .first_k_dense_replace = 1, .num_layers = 46,
      .decoder_sparse_step = 1}},
    {"{\"model_type\": \"laguna\", \"moe_router_logit_softcapping\": 0.0}", "laguna",
     {.hidden = 2048, .ffn = 512, .num_experts = 256, .top_k = 8,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .norm_topk_prob = 1, SILU,
      .routed_scaling_factor = 1.0f, .shared_ffn = 512, .correction_bias = 1,
      .first_k_dense_replace = 1, .num_layers = 40, .decoder_sparse_step = 1}},
    /* Laguna's soft cap on the router logits */
    {"{\"model_type\": \"laguna\", \"moe_router_logit_softcapping\": 30.0}", "laguna",
     {.hidden = 2048, .ffn = 512, .num_experts = 256, .top_k = 8,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .norm_topk_prob = 1, SILU,
      .routed_scaling_factor = 1.0f, .router_softcap = 30.0f, .shared_ffn = 512,
      .correction_bias = 1, .first_k_dense_replace = 1, .num_layers = 40,
      .decoder_sparse_step = 1}},
    /* Gemma 4's text model: its routed branch on every layer */
    {"{\"model_type\": \"gemma4\", \"text_config\": {\"model_type\": \"gemma4_text\","
     " \"enable_moe_block\": true, \"num_experts\": 128, \"top_k_experts\": 8,"
     " \"moe_intermediate_size\": 704, \"hidden_size\": 2816, \"num_hidden_layers\": 30}}",
     "gemma4_text",
     {.hidden = 2816, .ffn = 704, .num_experts = 128, .top_k = 8,
      .routing = MOEVK_ROUTING_SOFTMAX_TOPK, .norm_topk_prob = 1,
      .activation = MOEVK_ACT_GEGLU_TANH, .act_name = "gelu_pytorch_tanh", .num_layers = 30,
      .decoder_sparse_step = 1, .rms_norm_eps = 1e-6f, .moe_block = 1}},
    {"{\"model_type\": \"gemma4_text\", \"enable_moe_block\": true, \"num_experts\": 4,"
     " \"top_k_experts\": 2, \"moe_intermediate_size\": 8, \"rms_norm_eps\": 1e-5,"
     " \"hidden_activation\": \"gelu\"}",
     "gemma4_text",
     {.hidden = 2304, .ffn = 8, .num_experts = 4, .top_k = 2,
      .routing = MOEVK_ROUTING_SOFTMAX_TOPK, .norm_topk_prob = 1,
      .activation = MOEVK_ACT_GEGLU, .act_name = "gelu", .num_layers = 30,
      .decoder_sparse_step = 1, .rms_norm_eps = 1e-5f, .moe_block = 1}},
    /* DiffusionGemma's text model: the same branch, always there */
    {"{\"model_type\": \"diffusion_gemma\", \"text_config\": {\"model_type\":"
     " \"diffusion_gemma_text\", \"num_experts\": 16, \"top_k_experts\": 4,"
     " \"moe_intermediate_size\": 64}}",
     "diffusion_gemma_text",
     {.hidden = 2304, .ffn = 64, .num_experts = 16, .top_k = 4,
      .routing = MOEVK_ROUTING_SOFTMAX_TOPK, .norm_topk_prob = 1,
      .activation = MOEVK_ACT_GEGLU_TANH, .act_name = "gelu_pytorch_tanh", .num_layers = 30,
      .decoder_sparse_step = 1, .rms_norm_eps = 1e-6f}},
    /* Kolibri-1: the logits plus the bias choose, every layer MoE */
    {"{\"model_type\": \"kolibri1\"}", "kolibri1",
     {.hidden = 2560, .ffn = 512, .num_experts = 384, .top_k = 6,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, SILU, .select_on_logits = 1, .shared_ffn = 512,
      .correction_bias = 1, .num_layers = 50, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"kolibri1\", \"norm_topk_prob\": true, \"num_experts\": 16,"
     " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 64,"
     " \"shared_expert_intermediate_size\": 96, \"hidden_act\": \"gelu\"}",
     "kolibri1",
     {.hidden = 2560, .ffn = 64, .num_experts = 16, .top_k = 2,
      .routing = MOEVK_ROUTING_SIGMOID_GROUPED, .norm_topk_prob = 1,
      .activation = MOEVK_ACT_GEGLU, .act_name = "gelu", .select_on_logits = 1,
      .shared_ffn = 96, .correction_bias = 1, .num_layers = 50, .decoder_sparse_step = 1}},
    /* PhiMoE: SparseMixer with router_jitter_noise, always two experts
     * (num_experts_per_tok is not read: transformers' sparsemixer ignores it) */
    {"{\"model_type\": \"phimoe\"}", "phimoe",
     {.hidden = 4096, .ffn = 6400, .num_experts = 16, .top_k = 2,
      .routing = MOEVK_ROUTING_SPARSEMIXER, SILU, .jitter_eps = 0.01f, .num_layers = 32,
      .decoder_sparse_step = 1}},
    {"{\"model_type\": \"phimoe\", \"num_experts_per_tok\": 4, \"num_local_experts\": 6,"
     " \"router_jitter_noise\": 0.25, \"input_jitter_noise\": 0.5, \"intermediate_size\": 64,"
     " \"hidden_act\": \"gelu\", \"num_hidden_layers\": 3}",
     "phimoe",
     {.hidden = 4096, .ffn = 64, .num_experts = 6, .top_k = 2,
      .routing = MOEVK_ROUTING_SPARSEMIXER, .activation = MOEVK_ACT_GEGLU, .act_name = "gelu",
      .jitter_eps = 0.25f, .num_layers = 3, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"phimoe\", \"router_jitter_noise\": 0}", "phimoe",
     {.hidden = 4096, .ffn = 6400, .num_experts = 16, .top_k = 2,
      .routing = MOEVK_ROUTING_SPARSEMIXER, SILU, .num_layers = 32, .decoder_sparse_step = 1}},
    /* DeepSeek-OCR-2's text model: mlp_layer_types and the top k required */
    {"{\"model_type\": \"deepseek_ocr2\", \"text_config\": {\"model_type\":"
     " \"deepseek_ocr2_text\", \"num_experts_per_tok\": 6, \"n_group\": null,"
     " \"topk_method\": null, \"mlp_layer_types\": [\"dense\", \"sparse\"]}}",
     "deepseek_ocr2_text",
     {.hidden = 4096, .ffn = 1407, .num_experts = 64, .top_k = 6, SILU, .n_group = 1,
      .topk_group = 1, .routed_scaling_factor = 1.0f, .shared_ffn = 2 * 1407, .num_layers = 32,
      .decoder_sparse_step = 1}},
    {"{\"model_type\": \"unlimited_ocr_text\"}", "unlimited_ocr_text",
     {.hidden = 1280, .ffn = 896, .num_experts = 64, .top_k = 6, SILU, .n_group = 1,
      .topk_group = 1, .routed_scaling_factor = 1.0f, .shared_ffn = 2 * 896, .num_layers = 12,
      .first_k_dense_replace = 1, .decoder_sparse_step = 1}},
    /* Qwen3-Omni-MoE: the thinker's text model, two levels down */
    {"{\"model_type\": \"qwen3_omni_moe\", \"thinker_config\": {\"text_config\":"
     " {\"model_type\": \"qwen3_omni_moe_text\", \"num_experts\": 16}}}",
     "qwen3_omni_moe_text",
     {.hidden = 2048, .ffn = 768, .num_experts = 16, .top_k = 8, .norm_topk_prob = 1, SILU,
      .num_layers = 28, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"openai_privacy_filter\"}", "openai_privacy_filter",
     {.hidden = 640, .ffn = 640, .num_experts = 128, .top_k = 4,
      .routing = MOEVK_ROUTING_TOPK_SOFTMAX, .activation = MOEVK_ACT_SWIGLU_OAI,
      .act_name = "swiglu_oai", .swiglu_alpha = 1.702f, .swiglu_limit = 7.0f,
      .router_bias = 1, .expert_bias = 1, .num_layers = 8, .decoder_sparse_step = 1}},
    {"{\"model_type\": \"switch_transformers\"}", "switch_transformers",
     {.hidden = 768, .ffn = 2048, .num_experts = 8, .top_k = 1, .activation = MOEVK_ACT_RELU,
      .act_name = "relu", .expert_capacity = 64, .num_layers = 12, .num_decoder_layers = 12,
      .encoder_sparse_step = 4, .decoder_sparse_step_sw = 4, /* 12 // 3 */
      .decoder_sparse_step = 1}},
    {"{\"model_type\": \"switch_transformers\", \"d_model\": 16, \"num_layers\": 12,"
     " \"num_sparse_encoder_layers\": 6, \"encoder_sparse_step\": 2,"
     " \"dense_act_fn\": \"gelu\", \"router_bias\": true, \"expert_capacity\": 5}",
     "switch_transformers",
     {.hidden = 16, .ffn = 2048, .num_experts = 8, .top_k = 1, .activation = MOEVK_ACT_GELU,
      .act_name = "gelu", .router_bias = 1, .expert_capacity = 5, .num_layers = 12,
      .num_decoder_layers = 12, .encoder_sparse_step = 2, .decoder_sparse_step_sw = 4,
      .decoder_sparse_step = 1}},
    /* the steps derived from the sparse layer counts; top-1 whatever the file says */
    {"{\"model_type\": \"switch_transformers\", \"hidden_size\": 24, \"num_hidden_layers\": 6,"
     " \"num_decoder_layers\": 8, \"num_sparse_encoder_layers\": 0,"
     " \"num_sparse_decoder_layers\": 2, \"num_experts_per_tok\": 2, \"d_ff\": 32}",
     "switch_transformers",
     {.hidden = 24, .ffn = 32, .num_experts = 8, .top_k = 1, .activation = MOEVK_ACT_RELU,
      .act_name = "relu", .expert_capacity = 64, .num_layers = 6, .num_decoder_layers = 8,
      .encoder_sparse_step = 0, .decoder_sparse_step_sw = 4, .decoder_sparse_step = 1}},
};

Test(model, config_fields_and_defaults_follow_transformers)
{
    for (size_t i = 0; i < sizeof config_rows / sizeof config_rows[0]; i++) {
        const config_row *r = &config_rows[i];
        const mvk_moe_config *w = &r->want;
        mvk_moe_config g = parse_ok(r->json);
        cr_expect_str_eq(mvk_arch_name(g.arch), r->model_type, "%s", r->json);
        cr_expect_str_eq(g.act_name, w->act_name, "%s", r->json);
#define SAME(f)                                                                                \
    cr_expect_eq(g.f, w->f, "%s: " #f " is %.9g, expected %.9g", r->json, (double)g.f,         \
                 (double)w->f);
        SAME(hidden)
        SAME(ffn)
        SAME(num_experts)
        SAME(top_k)
        ROUTING_FIELDS(SAME)
        SAME(shared_ffn)
        SAME(shared_gate)
        SAME(router_bias)
        SAME(correction_bias)
        SAME(expert_bias)
        SAME(num_layers)
        SAME(decoder_sparse_step)
        SAME(n_mlp_only_layers)
        SAME(first_k_dense_replace)
        SAME(expert_capacity)
        SAME(num_decoder_layers)
        SAME(encoder_sparse_step)
        SAME(decoder_sparse_step_sw)
        SAME(group_limited)
        SAME(softcap_gate)
        SAME(softcap_up)
        SAME(shared_act)
        SAME(shared_activation)
        SAME(shared_swiglu_limit)
        SAME(zero_experts)
        SAME(rms_norm_eps)
        SAME(moe_block)
        SAME(sqrtsoftplus)
        SAME(hash_layers)
        SAME(sink_shared)
        SAME(eval_capacity)
        SAME(norm_before_drop)
        SAME(batch_priority)
        SAME(capacity_fraction)
        SAME(drop_renorm_eps)
#undef SAME
        cr_expect_str_eq(g.shared_act_name, w->shared_act_name, "%s", r->json);
        for (uint32_t k = 0; k < g.n_mlp_only_layers && k < 2; k++)
            cr_expect_eq(g.mlp_only_layers[k], r->want_mlp_only[k], "%s", r->json);
        mvk_hf_config_free(&g);
    }
}

/* A second model of the checkpoint: "<part>_config" (its text_config) */
Test(model, config_parts_read_their_own_config)
{
    static const char json[] =
        "{\"model_type\": \"qwen3_omni_moe\", \"thinker_config\": {\"text_config\": "
        "{\"model_type\": \"qwen3_omni_moe_text\", \"num_experts\": 16}}, \"talker_config\": "
        "{\"text_config\": {\"model_type\": \"qwen3_omni_moe_talker_text\", \"hidden_size\": 96,"
        " \"num_experts\": 12, \"shared_expert_intermediate_size\": 40}}, \"vision_config\": 3}";
    mvk_moe_config c;
    char err[512] = "";
    cr_assert_eq(mvk_hf_config_parse_part(json, strlen(json), "config.json", NULL, &c, err,
                                          sizeof err),
                 0, "%s", err);
    cr_expect_str_eq(mvk_arch_name(c.arch), "qwen3_omni_moe_text");
    cr_expect_eq(c.num_experts, 16);
    mvk_hf_config_free(&c);
    cr_assert_eq(mvk_hf_config_parse_part(json, strlen(json), "config.json", "talker", &c, err,
                                          sizeof err),
                 0, "%s", err);
    cr_expect_str_eq(mvk_arch_name(c.arch), "qwen3_omni_moe_talker_text");
    cr_expect_eq(c.hidden, 96);
    cr_expect_eq(c.num_experts, 12);
    cr_expect_eq(c.shared_ffn, 40);
    cr_expect_eq(c.shared_gate, 1);
    cr_expect_eq(c.norm_topk_prob, 0);
    mvk_hf_config_free(&c);
    static const struct {
        const char *part, *msg;
    } bad[] = {
        {"vision", "has no \"vision_config\" object: no part \"vision\""},
        {"code2wav", "has no \"code2wav_config\" object"},
        {"", "the part name \"\" is empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(mvk_hf_config_parse_part(json, strlen(json), "config.json", bad[i].part, &c,
                                              err, sizeof err),
                     -1, "%s accepted", bad[i].part);
        cr_expect(strstr(err, bad[i].msg), "'%s' does not say '%s'", err, bad[i].msg);
        mvk_hf_config_free(&c);
    }
    parse_bad("{\"model_type\": \"qwen3_omni_moe_talker_text\"}",
              "shared_expert_intermediate_size");

    /* dots3-note's vision encoder: each layer's per_layer_config entry, else
     * the config's own values */
    static const char vis[] =
        "{\"model_type\": \"dots3_note\", \"vision_config\": {\"model_type\": "
        "\"dots3_note_vision_encoder\", \"num_hidden_layers\": 4, \"hidden_size\": 48,"
        " \"num_local_experts\": 16, \"num_experts_per_tok\": 3, \"moe_intermediate_size\": 24,"
        " \"mlp_layer_types\": [\"dense\", \"sparse\", \"sparse\", \"sparse\"],"
        " \"per_layer_config\": {\"1\": {\"num_local_experts\": 4, \"num_experts_per_tok\": 2},"
        " \"3\": {\"moe_intermediate_size\": 40, \"router_scaling_factor\": 2.5}}}}";
    cr_assert_eq(mvk_hf_config_parse_part(vis, strlen(vis), "config.json", "vision", &c, err,
                                          sizeof err),
                 0, "%s", err);
    cr_expect_str_eq(mvk_arch_name(c.arch), "dots3_note_vision_encoder");
    static const struct {
        uint32_t layer, E, k, F;
        float scale;
    } want[] = {{1, 4, 2, 24, 1.0f}, {2, 16, 3, 24, 1.0f}, {3, 16, 3, 40, 2.5f}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char p[MVK_MAX_PREFIXES][MVK_PREFIX_LEN];
        int n = 0;
        cr_assert_eq(mvk_hf_layer_prefixes(&c, want[i].layer, 0, p, &n, err, sizeof err), 0, "%s",
                     err);
        cr_expect_eq(c.num_experts, want[i].E, "layer %u", want[i].layer);
        cr_expect_eq(c.top_k, want[i].k, "layer %u", want[i].layer);
        cr_expect_eq(c.ffn, want[i].F, "layer %u", want[i].layer);
        cr_expect_eq(c.routed_scaling_factor, want[i].scale, "layer %u", want[i].layer);
        cr_expect_str_eq(p[0], want[i].layer == 1   ? "model.vision_tower.blocks.1.mlp."
                               : want[i].layer == 2 ? "model.vision_tower.blocks.2.mlp."
                                                    : "model.vision_tower.blocks.3.mlp.");
    }
    mvk_hf_config_free(&c);

    /* ERNIE-4.5-VL's vision tokens: named by vision_config's model_type, the
     * keys from text_config (the vision set's width moe_intermediate_size[1],
     * the shared experts' [0] times their count), the text model's layers */
    static const char ernie[] =
        "{\"model_type\": \"ernie4_5_vl_moe\", \"vision_config\": {\"model_type\": "
        "\"ernie4_5_vl_moe_vision\", \"hidden_size\": 32}, \"text_config\": {\"model_type\": "
        "\"ernie4_5_vl_moe_text\", \"hidden_size\": 64, \"moe_intermediate_size\": [40, 24],"
        " \"moe_num_experts\": 8, \"moe_k\": 3, \"moe_num_shared_experts\": 2,"
        " \"num_hidden_layers\": 3}}";
    cr_assert_eq(mvk_hf_config_parse_part(ernie, strlen(ernie), "config.json", "vision", &c, err,
                                          sizeof err),
                 0, "%s", err);
    cr_expect_str_eq(mvk_arch_name(c.arch), "ernie4_5_vl_moe_vision");
    cr_expect_eq(c.hidden, 64);
    cr_expect_eq(c.ffn, 24);
    cr_expect_eq(c.shared_ffn, 80);
    cr_expect_eq(c.num_experts, 8);
    cr_expect_eq(c.top_k, 3);
    char p[MVK_MAX_PREFIXES][MVK_PREFIX_LEN];
    int n = 0;
    cr_assert_eq(mvk_hf_layer_prefixes(&c, 2, 0, p, &n, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(p[0], "model.language_model.layers.2.mlp.vision_moe.");
    mvk_hf_config_free(&c);
    /* the text model's own part is the text expert set */
    cr_assert_eq(mvk_hf_config_parse_part(ernie, strlen(ernie), "config.json", NULL, &c, err,
                                          sizeof err),
                 0, "%s", err);
    cr_expect_str_eq(mvk_arch_name(c.arch), "ernie4_5_vl_moe_text");
    cr_expect_eq(c.ffn, 40);
    mvk_hf_config_free(&c);
    static const char no_text[] =
        "{\"model_type\": \"ernie4_5_vl_moe\", \"vision_config\": {\"model_type\": "
        "\"ernie4_5_vl_moe_vision\"}}";
    cr_expect_eq(mvk_hf_config_parse_part(no_text, strlen(no_text), "config.json", "vision", &c,
                                          err, sizeof err),
                 -1);
    cr_expect(strstr(err, "reads its keys from \"text_config\", which is not an object there"),
              "%s", err);
    mvk_hf_config_free(&c);
}

Test(model, config_errors_name_the_field)
{
    parse_bad("{\"model_type\": \"llama\"}", "model_type \"llama\" is not supported");
    parse_bad("{\"hidden_size\": 8}", "no \"model_type\"");
    parse_bad("not json", "not valid JSON");
    parse_bad("{\"model_type\": \"mixtral\", \"num_local_experts\": 2.5}", "\"num_local_experts\"");
    parse_bad("{\"model_type\": \"mixtral\", \"hidden_size\": \"big\"}", "\"hidden_size\"");
    parse_bad("{\"model_type\": \"mixtral\", \"hidden_act\": \"tanh\"}", "\"hidden_act\"");
    parse_bad("{\"model_type\": \"qwen3_moe\", \"norm_topk_prob\": \"yes\"}", "norm_topk_prob");
    parse_bad("{\"model_type\": \"mixtral\", \"num_experts_per_tok\": 9}", "num_experts_per_tok");
    parse_bad("{\"model_type\": \"deepseek_v3\", \"n_group\": 3}", "n_group");
    parse_bad("{\"model_type\": \"switch_transformers\", \"dense_act_fn\": \"gated-gelu\"}",
              "dense_act_fn");
    parse_bad("{\"model_type\": \"qwen2_moe\", \"mlp_only_layers\": [1, -2]}", "mlp_only_layers");
    parse_bad("{\"model_type\": \"switch_transformers\", \"d_model\": 0}", "\"d_model\" is 0");
    parse_bad("{\"model_type\": \"qwen3_moe\", \"moe_intermediate_size\": 0}",
              "\"moe_intermediate_size\" is 0");
    parse_bad("{\"model_type\": \"qwen3_moe\", \"decoder_sparse_step\": 0}",
              "\"decoder_sparse_step\" is 0");
    parse_bad("{\"model_type\": \"gpt_oss\", \"swiglu_limit\": 0}",
              "\"swiglu_limit\" must be positive");
    parse_bad("{\"model_type\": \"nllb-moe\", \"moe_eval_capacity_token_fraction\": 0.5,"
              " \"batch_prioritized_routing\": true}",
              "\"batch_prioritized_routing\" = true with \"moe_eval_capacity_token_fraction\" = "
              "0.5: tokens admitted in the order of their router confidence");
    parse_bad("{\"model_type\": \"nllb-moe\", \"moe_eval_capacity_token_fraction\": 0}",
              "\"moe_eval_capacity_token_fraction\" = 0: the training capacity");
    parse_bad("{\"model_type\": \"nllb-moe\", \"moe_eval_capacity_token_fraction\": \"x\"}",
              "\"moe_eval_capacity_token_fraction\" is not a finite number");
    parse_bad("{\"model_type\": \"nllb-moe\", \"second_expert_policy\": \"sampling\"}",
              "\"second_expert_policy\" = \"sampling\" is not supported (all)");
    parse_bad("{\"model_type\": \"nllb-moe\", \"router_dtype\": \"bfloat16\"}",
              "\"router_dtype\" = \"bfloat16\" is not supported (float32)");
    parse_bad("{\"model_type\": \"nllb-moe\", \"moe_token_dropout\": 1}",
              "\"moe_token_dropout\" = 1 is not in [0, 1)");
    parse_bad("{\"model_type\": \"longcat_flash\", \"zero_expert_num\": 1000}",
              "\"zero_expert_num\" = 1000 identity experts beside 512 FFN experts exceed 1024");
    parse_bad("{\"model_type\": \"longcat_flash\", \"n_routed_experts\": 4, "
              "\"zero_expert_num\": 2, \"moe_topk\": 7}",
              "\"moe_topk\" = 7 is not in 1..min(6 experts, 32)");
    parse_bad("{\"model_type\": \"gemma4_text\", \"num_experts\": 4, \"top_k_experts\": 2, "
              "\"moe_intermediate_size\": 8}",
              "\"enable_moe_block\" is false: the model has no MoE block");
    parse_bad("{\"model_type\": \"gemma4_text\", \"enable_moe_block\": true, "
              "\"num_experts\": 4, \"top_k_experts\": 2, \"moe_intermediate_size\": 8, "
              "\"rms_norm_eps\": 0}",
              "\"rms_norm_eps\" = 0 must be positive");
    parse_bad("{\"model_type\": \"switch_transformers\", \"expert_capacity\": 0}",
              "\"expert_capacity\" = 0 drops every token");
    parse_bad("{\"model_type\": \"deepseek_v3\", \"n_shared_experts\": 4294967295}",
              "n_shared_experts x moe_intermediate_size overflows");
    parse_bad("{\"model_type\": \"mixtral\", \"swiglu_limit\": \"x\", \"num_local_experts\": 0}",
              "0 experts is not in 1..");
    parse_bad("{\"model_type\": \"deepseek_v2\", \"num_experts_per_tok\": 2, \"topk_method\": "
              "\"noaux_tc\"}",
              "\"topk_method\" = \"noaux_tc\" is not supported (greedy, group_limited_greedy)");
    parse_bad("{\"model_type\": \"deepseek_v32\", \"mlp_layer_types\": [\"sparse\", 7]}",
              "\"mlp_layer_types\"[1] is not a string");
    parse_bad("{\"model_type\": \"nemotron_h\", \"moe_latent_size\": 512}",
              "\"moe_latent_size\" = 512: experts in a latent space");
    parse_bad("{\"model_type\": \"ernie4_5_moe\", \"moe_layer_end_index\": -2}",
              "\"moe_layer_end_index\" is not a layer index or -1");
    parse_bad("{\"model_type\": \"jamba\", \"expert_layer_period\": 0}",
              "\"expert_layer_period\" is 0");
    parse_bad("{\"model_type\": \"deepseek_v2\"}", "\"num_experts_per_tok\" is required");
    parse_bad("{\"model_type\": \"cohere2_moe\", \"expert_selection_fn\": \"sparsemixer\"}",
              "\"expert_selection_fn\" = \"sparsemixer\" is not supported (softmax, sigmoid)");
    parse_bad("{\"model_type\": \"dots3_note_text\", \"n_shared_experts\": 4294967295}",
              "n_shared_experts x shared_experts_intermediate_size overflows");
    parse_bad("{\"model_type\": \"qwen3_omni_moe\", \"thinker_config\": {\"text_config\":"
              " {\"model_type\": \"qwen3_omni_moe_text\", \"num_experts\": 0.5}}}",
              "config.json thinker_config.text_config: \"num_experts\"");
    parse_bad("{\"model_type\": \"deepseek_ocr2_text\", \"num_experts_per_tok\": 2}",
              "\"mlp_layer_types\" is required");
    /* a per-layer list: every entry checked */
    parse_bad("{\"model_type\": \"hunyuan_v1_moe\", \"num_experts\": 8, \"moe_topk\": [2, 9]}",
              "\"moe_topk\"[1] = 9 is not in 1..min(8 experts");
    parse_bad("{\"model_type\": \"hunyuan_v1_moe\", \"moe_topk\": []}",
              "\"moe_topk\" is an empty list");
    parse_bad("{\"model_type\": \"hunyuan_v1_moe\", \"moe_topk\": [1, \"x\"]}",
              "\"moe_topk\"[1] is not an integer");
    /* per-layer limits: numbers >= 0 or null */
    parse_bad("{\"model_type\": \"step3p5\", \"swiglu_limits\": [1, -2]}",
              "\"swiglu_limits\"[1] is not a number >= 0 or null");
    parse_bad("{\"model_type\": \"step3p5\", \"swiglu_limits_shared\": [\"x\"]}",
              "\"swiglu_limits_shared\"[0] is not a number >= 0 or null");
    parse_bad("{\"model_type\": \"step3p5\", \"swiglu_limits\": -1}",
              "\"swiglu_limits\" must not be negative");
    parse_bad("{\"model_type\": \"step3p5\", \"mlp_bias\": true}",
              "\"mlp_bias\" = true: biases on the shared expert are not supported");
    parse_bad("{\"model_type\": \"hy_v4\", \"swiglu_limit\": 0}", "\"swiglu_limit\" must be positive");
    parse_bad("{\"model_type\": \"hy_v4\", \"hidden_act\": \"tanh\"}",
              "\"hidden_act\" = \"tanh\" is not supported");
    parse_bad("{\"model_type\": \"inkling2_text\", \"scoring_func\": \"sqrtsoftplus\"}",
              "\"scoring_func\" = \"sqrtsoftplus\" is not supported (sigmoid)");
    parse_bad("{\"model_type\": \"ernie4_5_vl_moe_text\", \"use_bias\": true}", "\"use_bias\"");
    parse_bad("{\"model_type\": \"ernie4_5_vl_moe_text\", \"moe_intermediate_size\": [\"x\"]}",
              "\"moe_intermediate_size[0]\"");
    parse_bad("{\"model_type\": \"ernie4_5_vl_moe_text\", \"moe_intermediate_size\": \"wide\"}",
              "\"moe_intermediate_size[0]\"");
    parse_bad("{\"model_type\": \"inkling_text\", \"n_shared_experts\": 0}",
              "\"n_shared_experts\" = 0 is not in 1..16");
    parse_bad("{\"model_type\": \"deepseek_v4\", \"scoring_func\": \"softmax\"}",
              "\"scoring_func\" = \"softmax\" is not supported (sigmoid, sqrtsoftplus)");
    parse_bad("{\"model_type\": \"deepseek_v4\", \"hidden_act\": \"gelu\"}",
              "\"hidden_act\" = \"gelu\" is not supported");
    parse_bad("{\"model_type\": \"inkling2_text\", \"mlp_up_softcap\": 0}",
              "\"mlp_up_softcap\" must be positive");
    parse_bad("{\"model_type\": \"dbrx\", \"ffn_config\": {\"moe_normalize_expert_weights\": 0}}",
              "\"ffn_config.moe_normalize_expert_weights\" = 0 is not a positive p");
    parse_bad("{\"model_type\": \"dbrx\", \"ffn_config\": {\"ffn_act_fn\": {\"name\": 3}}}",
              "\"ffn_config.ffn_act_fn.name\" is not a string");
    parse_bad("{\"model_type\": \"phimoe\", \"router_jitter_noise\": -0.5}",
              "\"router_jitter_noise\" = -0.5 must be a number >= 0");
    parse_bad("{\"model_type\": \"phimoe\", \"num_local_experts\": 1}",
              "\"num_experts_per_tok\" = 2 is not in 1..min(1 experts, 32)");
}

/* Hunyuan's moe_topk, one value per layer: the chosen layer's */
Test(model, per_layer_values_follow_the_layer)
{
    mvk_moe_config c = parse_ok("{\"model_type\": \"hunyuan_v1_moe\", \"num_experts\": 8,"
                                " \"moe_topk\": [2, 5, 3], \"num_hidden_layers\": 4}");
    char p[MVK_MAX_PREFIXES][MVK_PREFIX_LEN], err[512] = "";
    int n;
    static const uint32_t want[3] = {2, 5, 3};
    for (uint32_t layer = 0; layer < 3; layer++) {
        cr_assert_eq(mvk_hf_layer_prefixes(&c, layer, 0, p, &n, err, sizeof err), 0, "%s", err);
        cr_expect_eq(c.top_k, want[layer], "layer %u: top_k %u", layer, c.top_k);
    }
    cr_expect_eq(mvk_hf_layer_prefixes(&c, 3, 0, p, &n, err, sizeof err), -1);
    cr_expect(strstr(err, "layer 3 is not in moe_topk (3 entries)"), "%s", err);
    mvk_hf_config_free(&c);
}

/* Step-3.7's per-layer limits: the chosen layer's, routed and shared (the
 * loader runs a layer whose limit is 0 or null unclamped: its fixtures) */
Test(model, per_layer_limits_follow_the_layer)
{
    mvk_moe_config c = parse_ok("{\"model_type\": \"step3p5\", \"num_hidden_layers\": 6,"
                                " \"swiglu_limits\": [0, 0, 0, 7, null, 2.5],"
                                " \"swiglu_limits_shared\": [0, 0, 0, 16, 3, null]}");
    char p[MVK_MAX_PREFIXES][MVK_PREFIX_LEN], err[512] = "";
    int n;
    static const float routed[6] = {0, 0, 0, 7, 0, 2.5f}, shared[6] = {0, 0, 0, 16, 3, 0};
    for (uint32_t layer = 3; layer < 6; layer++) {
        cr_assert_eq(mvk_hf_layer_prefixes(&c, layer, 0, p, &n, err, sizeof err), 0, "%s", err);
        cr_expect_eq(c.swiglu_limit, routed[layer], "layer %u: %g", layer, (double)c.swiglu_limit);
        cr_expect_eq(c.shared_swiglu_limit, shared[layer], "layer %u: %g", layer,
                     (double)c.shared_swiglu_limit);
        cr_expect_str_eq(p[0], layer == 3 ? "model.language_model.layers.3.mlp."
                               : layer == 4 ? "model.language_model.layers.4.mlp."
                                            : "model.language_model.layers.5.mlp.");
    }
    /* the first three layers are dense by default */
    cr_expect_eq(mvk_hf_layer_prefixes(&c, 2, 0, p, &n, err, sizeof err), -1);
    mvk_hf_config_free(&c);
}

/* Which layers hold a MoE block, and under which tensor-name prefixes. */
typedef struct layer_row {
    const char *json;
    uint32_t layer;
    int decoder;
    const char *want[MVK_MAX_PREFIXES]; /* the prefixes; want[0] NULL: refused */
    const char *msg;                    /* what the refusal says */
} layer_row;

#define MIXTRAL4 "{\"model_type\": \"mixtral\", \"num_hidden_layers\": 4}"
#define DEEPSEEK2 "{\"model_type\": \"deepseek_v3\", \"first_k_dense_replace\": 2}"
#define QWEN2STEP                                                                               \
    "{\"model_type\": \"qwen2_moe\", \"decoder_sparse_step\": 2, \"mlp_only_layers\": [3]}"
#define SWITCH12                                                                                \
    "{\"model_type\": \"switch_transformers\", \"num_layers\": 12,"                            \
    " \"num_sparse_encoder_layers\": 6, \"num_decoder_layers\": 4,"                            \
    " \"num_sparse_decoder_layers\": 4}"

#define GEMMA4                                                                                  \
    "{\"model_type\": \"gemma4_text\", \"enable_moe_block\": true, \"num_experts\": 4,"       \
    " \"top_k_experts\": 2, \"moe_intermediate_size\": 8, \"num_hidden_layers\": 3}"

static const layer_row layer_rows[] = {
    /* published checkpoints (transformers 4), then transformers 5 naming */
    {MIXTRAL4, 3, 0, {"model.layers.3.block_sparse_moe.", "model.layers.3.mlp."}, NULL},
    {MIXTRAL4, 4, 0, {NULL}, "layer 4 is out of range: mixtral has num_hidden_layers = 4"},
    {MIXTRAL4, 0, 1, {NULL}, "only for nllb-moe, switch_transformers"},
    {DEEPSEEK2, 1, 0, {NULL}, "first_k_dense_replace = 2"},
    /* Gemma 4: every layer's decoder layer holds the routed branch */
    {GEMMA4, 2, 0, {"model.language_model.layers.2.", "model.layers.2."}, NULL},
    {GEMMA4, 3, 0, {NULL}, "layer 3 is out of range: gemma4_text has num_hidden_layers = 3"},
    {DEEPSEEK2, 2, 0, {"model.layers.2.mlp.", "model.language_model.layers.2.mlp."}, NULL},
    /* mlp_layer_types, when given, alone decides (first_k_dense_replace is
     * only its default) */
    {"{\"model_type\": \"deepseek_v32\", \"first_k_dense_replace\": 3,"
     " \"mlp_layer_types\": [\"dense\", \"sparse\", \"dense\"]}",
     1, 0, {"model.layers.1.mlp."}, NULL},
    {"{\"model_type\": \"deepseek_v32\", \"mlp_layer_types\": [\"dense\", \"sparse\", \"dense\"]}",
     2, 0, {NULL}, "layer 2 is not a MoE layer (not \"sparse\" in mlp_layer_types)"},
    {"{\"model_type\": \"deepseek_v32\", \"mlp_layer_types\": [\"sparse\"]}", 1, 0, {NULL},
     "layer 1 is not in mlp_layer_types (1 entries)"},
    {"{\"model_type\": \"deepseek_v32\"}", 2, 0, {NULL}, "first_k_dense_replace = 3"},
    /* Llama 4: moe_layers, else every interleave_moe_layer_step-th layer */
    {"{\"model_type\": \"llama4_text\", \"moe_layers\": [1, 3]}", 3, 0,
     {"language_model.model.layers.3.feed_forward.", "model.layers.3.feed_forward."}, NULL},
    {"{\"model_type\": \"llama4_text\", \"moe_layers\": [1, 3]}", 2, 0, {NULL},
     "layer 2 is a dense MLP layer (not in moe_layers)"},
    {"{\"model_type\": \"llama4_text\", \"interleave_moe_layer_step\": 2}", 2, 0, {NULL},
     "interleave_moe_layer_step = 2"},
    /* NLLB-MoE: layer N of a stack is sparse when (N + 1) % step == 0 */
    {"{\"model_type\": \"nllb-moe\"}", 3, 0, {"model.encoder.layers.3.ffn."}, NULL},
    {"{\"model_type\": \"nllb-moe\"}", 11, 1, {"model.decoder.layers.11.ffn."}, NULL},
    {"{\"model_type\": \"nllb-moe\"}", 4, 0, {NULL},
     "encoder layer 4 is a dense layer, not a MoE layer (sparse step 4: layers 3, 7, ..."},
    {"{\"model_type\": \"nllb-moe\", \"decoder_sparse_step\": 0}", 3, 1, {NULL},
     "decoder layer 3 is a dense layer"},
    /* Jamba: N % expert_layer_period == expert_layer_offset */
    {"{\"model_type\": \"jamba\"}", 3, 0, {"model.layers.3.feed_forward."}, NULL},
    {"{\"model_type\": \"jamba\"}", 2, 0, {NULL},
     "expert_layer_period = 2, expert_layer_offset = 1"},
    /* ERNIE-4.5: from moe_layer_start_index to moe_layer_end_index */
    {"{\"model_type\": \"ernie4_5_moe\", \"moe_layer_end_index\": 5}", 5, 0,
     {"model.layers.5.mlp."}, NULL},
    {"{\"model_type\": \"ernie4_5_moe\", \"moe_layer_end_index\": 5}", 6, 0, {NULL},
     "past moe_layer_end_index = 5"},
    {"{\"model_type\": \"ernie4_5_moe\"}", 0, 0, {NULL}, "moe_layer_start_index = 1"},
    {"{\"model_type\": \"ernie4_5_moe\"}", 27, 0, {"model.layers.27.mlp."}, NULL},
    {QWEN2STEP, 0, 0, {NULL}, "decoder_sparse_step = 2"},
    {QWEN2STEP, 1, 0, {"model.layers.1.mlp."}, NULL},
    {QWEN2STEP, 3, 0, {NULL}, "mlp_only_layers"},
    {QWEN2STEP, 5, 0, {"model.layers.5.mlp."}, NULL},
    {"{\"model_type\": \"qwen3_moe\"}", 23, 0, {"model.layers.23.mlp."}, NULL},
    {"{\"model_type\": \"qwen3_moe\"}", 24, 0, {NULL}, "qwen3_moe has num_hidden_layers = 24"},
    {"{\"model_type\": \"olmoe\"}", 15, 0, {"model.layers.15.mlp."}, NULL},
    {"{\"model_type\": \"gpt_oss\"}", 35, 0, {"model.layers.35.mlp."}, NULL},
    {"{\"model_type\": \"gpt_oss\"}", 0, 1, {NULL}, "only for nllb-moe, switch_transformers"},
    {SWITCH12, 0, 0, {NULL}, "encoder block 0 is a dense layer"},
    {SWITCH12, 1, 0, {"encoder.block.1.layer.1.mlp."}, NULL},
    {SWITCH12, 3, 0, {"encoder.block.3.layer.1.mlp."}, NULL},
    {SWITCH12, 12, 0, {NULL}, "encoder layer 12 is out of range: the encoder has 12 blocks"},
    {SWITCH12, 0, 1, {"decoder.block.0.layer.2.mlp."}, NULL}, /* step 1: every block */
    {SWITCH12, 4, 1, {NULL}, "decoder layer 4 is out of range"},
    {"{\"model_type\": \"dbrx\", \"n_layers\": 4}", 3, 0, {"transformer.blocks.3.ffn."}, NULL},
    {"{\"model_type\": \"granitemoehybrid\"}", 5, 0, {"model.layers.5.block_sparse_moe."},
     NULL},
    /* Nemotron-H: its layers under model., backbone. or (Nemotron-H-Omni)
     * language_model.model. */
    {"{\"model_type\": \"nemotron_h_omni\", \"text_config\": {\"model_type\": \"nemotron_h\","
     " \"layers_block_type\": [\"mamba\", \"moe\"]}}",
     1, 0, {"model.layers.1.mixer.", "backbone.layers.1.mixer.",
            "language_model.model.layers.1.mixer."}, NULL},
    {"{\"model_type\": \"nemotron_h_omni\", \"text_config\": {\"model_type\": \"nemotron_h\","
     " \"layers_block_type\": [\"mamba\", \"moe\"]}}",
     0, 0, {NULL}, "layer 0 is not a MoE layer"},
    /* DeepSeek-V4: hash-routed layers ("hash_moe", or below num_hash_layers
     * without mlp_layer_types) are refused, "moe" layers run */
    {"{\"model_type\": \"deepseek_v4\", \"num_hidden_layers\": 3,"
     " \"mlp_layer_types\": [\"hash_moe\", \"moe\", \"moe\"]}",
     0, 0, {NULL}, "layer 0 is a hash-routed MoE layer (\"hash_moe\" in mlp_layer_types)"},
    {"{\"model_type\": \"deepseek_v4\", \"num_hidden_layers\": 3,"
     " \"mlp_layer_types\": [\"hash_moe\", \"moe\", \"moe\"]}",
     1, 0, {"model.layers.1.mlp."}, NULL},
    {"{\"model_type\": \"deepseek_v4\"}", 2, 0, {NULL},
     "layer 2 is a hash-routed MoE layer (below num_hash_layers)"},
    {"{\"model_type\": \"deepseek_v4\"}", 3, 0, {"model.layers.3.mlp."}, NULL},
    {"{\"model_type\": \"deepseek_v4\", \"num_hash_layers\": 1}", 1, 0,
     {"model.layers.1.mlp."}, NULL},
    {"{\"model_type\": \"minimax_m3_vl_text\", \"mlp_layer_types\": [\"dense\", \"sparse\"],"
     " \"num_hidden_layers\": 2}",
     1, 0, {"model.language_model.layers.1.mlp.", "model.layers.1.mlp."}, NULL},
};

Test(model, moe_layers_as_transformers_builds_them)
{
    for (size_t i = 0; i < sizeof layer_rows / sizeof layer_rows[0]; i++) {
        const layer_row *r = &layer_rows[i];
        mvk_moe_config c = parse_ok(r->json);
        char p[MVK_MAX_PREFIXES][MVK_PREFIX_LEN], err[512] = "";
        int n = -1;
        int rc = mvk_hf_layer_prefixes(&c, r->layer, r->decoder, p, &n, err, sizeof err);
        if (!r->want[0]) {
            cr_expect_eq(rc, -1, "%s layer %u: accepted", r->json, r->layer);
            cr_expect(strstr(err, r->msg), "%s layer %u: '%s' does not say '%s'", r->json,
                      r->layer, err, r->msg);
        } else {
            int want_n = 1;
            while (want_n < MVK_MAX_PREFIXES && r->want[want_n])
                want_n++;
            cr_expect_eq(rc, 0, "%s layer %u: %s", r->json, r->layer, err);
            cr_expect_eq(n, want_n, "%s layer %u: %d prefixes", r->json, r->layer, n);
            for (int k = 0; k < want_n && k < n && !rc; k++)
                cr_expect_str_eq(p[k], r->want[k], "%s layer %u", r->json, r->layer);
        }
        mvk_hf_config_free(&c);
    }
}

Test(model, capacity_factor_gives_expert_capacity)
{
    mvk_model_layer L = {.desc = {.num_experts = 8, .top_k = 1}, .expert_capacity = 3};
    for (uint32_t T = 1; T < 2000; T += 7) {
        L.desc.capacity_factor = mvk_model_capacity_factor(&L, T);
        uint32_t c = moevk_ref_capacity(&L.desc, T);
        cr_assert(T <= 3 ? c == UINT32_MAX : c == 3, "T %u: capacity %u", T, c);
    }
    L.expert_capacity = 1000003;
    L.desc.num_experts = 1000;
    L.desc.capacity_factor = mvk_model_capacity_factor(&L, 4000000);
    cr_assert_eq(moevk_ref_capacity(&L.desc, 4000000), 1000003);
}

/* ---- moevk run end to end ---------------------------------------------------- */

typedef struct e2e {
    char dir[256], cfg[512], x[512];
    mvkt_rng rng;
} e2e;

static void e2e_begin(e2e *t, uint64_t salt)
{
    dir_make(t->dir, sizeof t->dir);
    uint64_t seed = mvkt_base_seed() ^ salt;
    t->rng = mvkt_rng_make(seed);
    cr_log_info("seed %llu", (unsigned long long)seed);
    join(t->cfg, sizeof t->cfg, t->dir, "config.json");
    join(t->x, sizeof t->x, t->dir, "x.safetensors");
}

/* Switch Transformers' sparse MLP as transformers computes it, written out
 * independently: top-1 of softmax(x Wr^T + b), at most expert_capacity
 * tokens per expert in each sequence (in token order), y = p * ReLU-FFN(x)
 * for admitted tokens; a dropped token gives 0 (transformers 5) or p * x
 * (transformers 4: `passthrough`). near[t]: the two best logits of token t
 * are within 1e-6 relative (the reference's float logits) or 8e-6 of
 * max_e (|b_e| + sum_h |x_h w_eh|) (twice the bound of an fp32 dot product
 * of H = 32 terms, on each logit): a backend may choose either. */
static float *switch_naive(const canon *c, const float *x, uint32_t B, uint32_t S,
                           uint64_t cap, int passthrough, uint8_t *near, uint32_t *dropped)
{
    const uint32_t H = c->H, F = c->F, E = c->E;
    float *y = malloc(sizeof(float) * B * S * H);
    double *l = malloc(sizeof(double) * E), *h = malloc(sizeof(double) * F);
    uint32_t *count = malloc(4 * E);
    *dropped = 0;
    for (uint32_t b = 0; b < B; b++) {
        memset(count, 0, 4 * E);
        for (uint32_t s = 0; s < S; s++) {
            size_t t = (size_t)b * S + s;
            const float *xt = x + t * H;
            double mx = -INFINITY, sum = 0, second = -INFINITY, bound = 0;
            uint32_t best = 0;
            for (uint32_t e = 0; e < E; e++) {
                double a = c->rbias ? c->rbias[e] : 0, m = fabs(a);
                for (uint32_t i = 0; i < H; i++) {
                    a += (double)xt[i] * c->router[(size_t)e * H + i];
                    m += fabs((double)xt[i] * c->router[(size_t)e * H + i]);
                }
                bound = fmax(bound, m);
                l[e] = a;
                if (a > mx) {
                    second = mx;
                    mx = a;
                    best = e;
                } else if (a > second) {
                    second = a;
                }
            }
            near[t] = (mx - second) <= fmax(1e-6 * fabs(mx), 8e-6 * bound);
            for (uint32_t e = 0; e < E; e++)
                sum += exp(l[e] - mx);
            double p = 1.0 / sum;
            int admitted = ++count[best] <= cap;
            for (uint32_t i = 0; i < H; i++)
                y[t * H + i] = passthrough ? (float)(p * xt[i]) : 0.0f;
            if (!admitted) {
                (*dropped)++;
                continue;
            }
            for (uint32_t f = 0; f < F; f++) {
                double a = 0;
                for (uint32_t i = 0; i < H; i++)
                    a += (double)xt[i] * c->up[((size_t)best * F + f) * H + i];
                h[f] = a > 0 ? a : 0;
            }
            for (uint32_t i = 0; i < H; i++) {
                double a = 0;
                for (uint32_t f = 0; f < F; f++)
                    a += h[f] * c->down[((size_t)best * H + i) * F + f];
                y[t * H + i] = (float)(p * a);
            }
        }
    }
    free(l);
    free(h);
    free(count);
    return y;
}

/* ---- every architecture and layout: the desc, then `moevk run` ------------- */

enum { F32_BIASES = 64 };                 /* a row's canon flag: biases written as F32 */
enum { FILE_SHARDED = 1, FILE_MISALIGNED = 2 };

/* One MoE block of a small checkpoint in one architecture and layout, and
 * what the loader must make of it. */
typedef struct arch_row {
    const char *name;
    const char *model_type;
    const char *config;        /* config.json                                   */
    uint32_t H, F, E, K, SF;   /* SF: the shared expert's width (0: none)       */
    moevk_dtype wdt, sdt, rdt; /* routed experts, shared expert, router in the file */
    unsigned flags;            /* canon_make's WITH_* / NON_GATED, F32_BIASES   */
    layout lay;
    int shared;                /* SHARED_*: the shared expert's names           */
    const char *prefix;        /* the block's tensor-name prefix                */
    const char *layer;         /* --layer; NULL: --config/--weights/--prefix    */
    const char *other_prefix;  /* another block (other weights) at other_layer  */
    const char *other_layer;
    unsigned files;            /* FILE_*                                        */
    moevk_dtype xdt;
    uint32_t xdims;
    uint64_t xshape[3];
    double tol;                /* vulkan and cuda: relative L2 error limit      */
    /* what the loader makes of it: routing fields, dtypes (sizes from above) */
    moevk_layer_desc want;
    const char *want_layout;
    int want_converted;        /* expert weights converted to f32 (mixed dtypes) */
    int want_mapped;           /* expert matrices point into the memory map (2:
                                  gate and up do, down does not)               */
    uint64_t capacity;         /* expert_capacity (switch_transformers)         */
    const char *dense_layer, *dense_msg; /* a layer that is not a MoE block     */
    int stats;                 /* --stats against the reference's statistics    */
} arch_row;

#define BF16 MOEVK_DTYPE_BF16
#define F16 MOEVK_DTYPE_F16
#define F32 MOEVK_DTYPE_F32
#define WANT_W123 "per-expert experts.{i}.w1/w3/w2"
#define WANT_PROJ "per-expert experts.{i}.gate_proj/up_proj/down_proj"
#define WANT_STACKED "stacked experts.gate_up_proj [E, 2F, H] + experts.down_proj [E, H, F]"

static const arch_row arch_rows[] = {
    {.name = "mixtral, per-expert w1/w3/w2, sharded with an index, two layers",
     .model_type = "mixtral",
     .config = "{\"architectures\": [\"MixtralForCausalLM\"], \"model_type\": \"mixtral\","
               " \"hidden_size\": 40, \"intermediate_size\": 24, \"num_local_experts\": 8,"
               " \"num_experts_per_tok\": 2, \"num_hidden_layers\": 2,"
               " \"hidden_act\": \"silu\", \"torch_dtype\": \"bfloat16\"}",
     .H = 40, .F = 24, .E = 8, .K = 2, .wdt = BF16, .sdt = BF16, .rdt = BF16,
     .lay = LAY_W123, .prefix = "model.layers.1.block_sparse_moe.", .layer = "1",
     .other_prefix = "model.layers.0.block_sparse_moe.", .other_layer = "0",
     .files = FILE_SHARDED, .xdt = F32, .xdims = 2, .xshape = {37, 40}, .tol = 1e-4,
     .want = {.norm_topk_prob = 1, .weight_dtype = BF16, .router_dtype = BF16},
     .want_layout = WANT_W123, .want_mapped = 1},
    {.name = "mixtral, transformers 5 stacked f32, misaligned in the file",
     .model_type = "mixtral",
     .config = "{\"model_type\": \"mixtral\", \"hidden_size\": 32, \"intermediate_size\": 20,"
               " \"num_local_experts\": 4, \"num_experts_per_tok\": 2,"
               " \"num_hidden_layers\": 1}",
     .H = 32, .F = 20, .E = 4, .K = 2, .wdt = F32, .sdt = F32, .rdt = F32,
     .lay = LAY_STACKED, .prefix = "model.layers.0.mlp.", .layer = "0",
     .files = FILE_MISALIGNED, .xdt = BF16, .xdims = 3, .xshape = {1, 29, 32}, .tol = 1e-5,
     .want = {.norm_topk_prob = 1, .weight_dtype = F32, .router_dtype = F32},
     .want_layout = WANT_STACKED, .want_mapped = 0 /* 2-byte aligned: copied */},
    {.name = "mixtral, per-expert gate_proj/up_proj/down_proj under mlp",
     .model_type = "mixtral",
     .config = "{\"model_type\": \"mixtral\", \"hidden_size\": 16, \"intermediate_size\": 8,"
               " \"num_local_experts\": 4, \"num_experts_per_tok\": 2,"
               " \"num_hidden_layers\": 1}",
     .H = 16, .F = 8, .E = 4, .K = 2, .wdt = BF16, .sdt = BF16, .rdt = BF16,
     .lay = LAY_PROJ, .prefix = "model.layers.0.mlp.", .layer = "0", .xdt = F32, .xdims = 2,
     .xshape = {9, 16}, .tol = 1e-4,
     .want = {.norm_topk_prob = 1, .weight_dtype = BF16, .router_dtype = BF16},
     .want_layout = WANT_PROJ, .want_mapped = 1},
    {.name = "qwen2_moe, per-expert, shared expert and its gate, f16",
     .model_type = "qwen2_moe",
     /* norm_topk_prob absent: Qwen2MoeConfig's default (False) */
     .config = "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 48,"
               " \"moe_intermediate_size\": 16, \"shared_expert_intermediate_size\": 40,"
               " \"num_experts\": 12, \"num_experts_per_tok\": 4,"
               " \"num_hidden_layers\": 2, \"decoder_sparse_step\": 1,"
               " \"mlp_only_layers\": [0], \"intermediate_size\": 5632}",
     .H = 48, .F = 16, .E = 12, .K = 4, .SF = 40, .wdt = F16, .sdt = F16, .rdt = F16,
     .flags = WITH_SHARED_GATE, .lay = LAY_PROJ, .shared = SHARED_QWEN2,
     .prefix = "model.layers.1.mlp.", .layer = "1", .xdt = F16, .xdims = 2, .xshape = {41, 48},
     .tol = 1e-4,
     .want = {.norm_topk_prob = 0, .weight_dtype = F16, .router_dtype = F16, .num_shared = 1,
              .shared_ffn = 40},
     .want_layout = WANT_PROJ, .want_mapped = 1, .dense_layer = "0",
     .dense_msg = "not a MoE layer"},
    {.name = "qwen3_moe, stacked, --config/--weights/--prefix, f32 router, --stats",
     .model_type = "qwen3_moe",
     .config = "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 40,"
               " \"moe_intermediate_size\": 24, \"num_experts\": 16,"
               " \"num_experts_per_tok\": 4, \"norm_topk_prob\": true}",
     .H = 40, .F = 24, .E = 16, .K = 4, .wdt = BF16, .sdt = BF16, .rdt = F32,
     .lay = LAY_STACKED, .prefix = "blk.", .xdt = F32, .xdims = 2, .xshape = {50, 40},
     .tol = 1e-4, .want = {.norm_topk_prob = 1, .weight_dtype = BF16, .router_dtype = F32},
     .want_layout = WANT_STACKED, .want_mapped = 1, .stats = 1},
    {.name = "qwen3_moe, per-expert gate_proj/up_proj/down_proj",
     .model_type = "qwen3_moe",
     .config = "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 24,"
               " \"moe_intermediate_size\": 16, \"num_experts\": 8,"
               " \"num_experts_per_tok\": 2, \"num_hidden_layers\": 1}",
     .H = 24, .F = 16, .E = 8, .K = 2, .wdt = BF16, .sdt = BF16, .rdt = BF16,
     .lay = LAY_PROJ, .prefix = "model.layers.0.mlp.", .layer = "0", .xdt = BF16, .xdims = 2,
     .xshape = {19, 24}, .tol = 1e-4,
     .want = {.norm_topk_prob = 0, .weight_dtype = BF16, .router_dtype = BF16},
     .want_layout = WANT_PROJ, .want_mapped = 1},
    {.name = "deepseek_v3, grouped sigmoid, shared experts, mixed dtypes",
     .model_type = "deepseek_v3",
     .config = "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 32,"
               " \"moe_intermediate_size\": 12, \"n_routed_experts\": 16,"
               " \"num_experts_per_tok\": 4, \"n_group\": 4, \"topk_group\": 2,"
               " \"n_shared_experts\": 2, \"routed_scaling_factor\": 2.5,"
               " \"norm_topk_prob\": true, \"num_hidden_layers\": 4,"
               " \"topk_method\": \"noaux_tc\", \"scoring_func\": \"sigmoid\"}",
     /* routed bf16, shared f16: mixed, so moevk converts the experts to f32 */
     .H = 32, .F = 12, .E = 16, .K = 4, .SF = 24, .wdt = BF16, .sdt = F16, .rdt = BF16,
     .flags = WITH_CBIAS, .lay = LAY_PROJ, .shared = SHARED_DEEPSEEK,
     .prefix = "model.layers.3.mlp.", .layer = "3", .xdt = F32, .xdims = 2, .xshape = {45, 32},
     .tol = 1e-5,
     .want = {.routing = MOEVK_ROUTING_SIGMOID_GROUPED, .n_group = 4, .topk_group = 2,
              .routed_scaling_factor = 2.5f, .norm_topk_prob = 1, .weight_dtype = F32,
              .router_dtype = BF16, .num_shared = 1, .shared_ffn = 24},
     .want_layout = WANT_PROJ, .want_converted = 1, .want_mapped = 0, .dense_layer = "2",
     .dense_msg = "first_k_dense_replace"},
    {.name = "deepseek_v3, transformers 5 stacked, one shared expert",
     .model_type = "deepseek_v3",
     .config = "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 32,"
               " \"moe_intermediate_size\": 8, \"n_routed_experts\": 8,"
               " \"num_experts_per_tok\": 2, \"n_group\": 2, \"topk_group\": 1,"
               " \"n_shared_experts\": 1, \"num_hidden_layers\": 1,"
               " \"first_k_dense_replace\": 0}",
     .H = 32, .F = 8, .E = 8, .K = 2, .SF = 8, .wdt = BF16, .sdt = BF16, .rdt = BF16,
     .flags = WITH_CBIAS, .lay = LAY_STACKED, .shared = SHARED_DEEPSEEK,
     .prefix = "model.layers.0.mlp.", .layer = "0", .xdt = F32, .xdims = 2, .xshape = {21, 32},
     .tol = 1e-4,
     .want = {.routing = MOEVK_ROUTING_SIGMOID_GROUPED, .n_group = 2, .topk_group = 1,
              .routed_scaling_factor = 2.5f, .norm_topk_prob = 1, .weight_dtype = BF16,
              .router_dtype = BF16, .num_shared = 1, .shared_ffn = 8},
     .want_layout = WANT_STACKED, .want_mapped = 1},
    {.name = "olmoe, per-expert f32, [B, S, H] input",
     .model_type = "olmoe",
     .config = "{\"model_type\": \"olmoe\", \"hidden_size\": 24, \"intermediate_size\": 32,"
               " \"num_experts\": 16, \"num_experts_per_tok\": 8,"
               " \"num_hidden_layers\": 1, \"norm_topk_prob\": false}",
     .H = 24, .F = 32, .E = 16, .K = 8, .wdt = F32, .sdt = F32, .rdt = F32,
     .lay = LAY_PROJ, .prefix = "model.layers.0.mlp.", .layer = "0", .xdt = F32, .xdims = 3,
     .xshape = {3, 11, 24}, .tol = 1e-5,
     .want = {.norm_topk_prob = 0, .weight_dtype = F32, .router_dtype = F32},
     .want_layout = WANT_PROJ, .want_mapped = 1},
    {.name = "gpt_oss, interleaved gate/up with biases",
     .model_type = "gpt_oss",
     .config = "{\"model_type\": \"gpt_oss\", \"hidden_size\": 36, \"intermediate_size\": 20,"
               " \"num_local_experts\": 8, \"num_experts_per_tok\": 4,"
               " \"experts_per_token\": 4, \"swiglu_limit\": 0.6,"
               " \"num_hidden_layers\": 1}",
     .H = 36, .F = 20, .E = 8, .K = 4, .wdt = BF16, .sdt = BF16, .rdt = BF16,
     .flags = WITH_RBIAS | WITH_EBIAS, .lay = LAY_OSS, .prefix = "model.layers.0.mlp.",
     .layer = "0", .xdt = BF16, .xdims = 3, .xshape = {1, 31, 36}, .tol = 1e-4,
     .want = {.routing = MOEVK_ROUTING_TOPK_SOFTMAX, .activation = MOEVK_ACT_SWIGLU_OAI,
              .swiglu_alpha = 1.702f, .swiglu_limit = 0.6f, .weight_dtype = BF16,
              .router_dtype = BF16},
     .want_layout = "stacked gpt-oss experts.gate_up_proj [E, H, 2F] (interleaved)",
     .want_mapped = 0 /* transposed copies */},
    {.name = "switch_transformers, wi/wo, capacity per sequence",
     .model_type = "switch_transformers",
     .config = "{\"model_type\": \"switch_transformers\", \"d_model\": 32, \"d_ff\": 48,"
               " \"num_experts\": 4, \"expert_capacity\": 3, \"router_bias\": true,"
               " \"num_layers\": 4, \"num_sparse_encoder_layers\": 2,"
               " \"num_decoder_layers\": 4, \"num_sparse_decoder_layers\": 2,"
               " \"encoder_sparse_step\": 2, \"decoder_sparse_step\": 2,"
               " \"dense_act_fn\": \"relu\", \"router_jitter_noise\": 0.01}",
     .H = 32, .F = 48, .E = 4, .K = 1, .wdt = F32, .sdt = F32, .rdt = F32,
     .flags = NON_GATED | WITH_RBIAS | F32_BIASES, .lay = LAY_SWITCH,
     .prefix = "encoder.block.1.layer.1.mlp.", .layer = "1", .xdt = F32, .xdims = 3,
     .xshape = {3, 14, 32}, .tol = 1e-5,
     .want = {.activation = MOEVK_ACT_RELU, .weight_dtype = F32, .router_dtype = F32},
     .want_layout = "per-expert experts.expert_{i}.wi/wo", .want_mapped = 1, .capacity = 3,
     .dense_layer = "0", .dense_msg = "dense layer"},
    {.name = "dbrx, w1/v1/w2 [E·F, H], the keys in ffn_config, a 2-norm",
     .model_type = "dbrx",
     .config = "{\"model_type\": \"dbrx\", \"d_model\": 32, \"n_layers\": 2,"
               " \"ffn_config\": {\"ffn_hidden_size\": 16, \"moe_num_experts\": 8,"
               " \"moe_top_k\": 3, \"moe_normalize_expert_weights\": 2.0,"
               " \"ffn_act_fn\": {\"name\": \"silu\"}}}",
     .H = 32, .F = 16, .E = 8, .K = 3, .wdt = BF16, .sdt = BF16, .rdt = BF16, .lay = LAY_DBRX,
     .prefix = "transformer.blocks.1.ffn.", .layer = "1", .xdt = F32, .xdims = 2,
     .xshape = {23, 32}, .tol = 1e-4,
     .want = {.norm_topk_prob = 1, .norm_p = 2.0f, .weight_dtype = BF16, .router_dtype = BF16},
     .want_layout = "DBRX experts.mlp.w1/v1/w2 [E·F, H] (w2 transposed)",
     .want_mapped = 2 /* w1, v1 in the map; w2's blocks transposed: copies */},
    {.name = "granitemoeshared, the decoder layer's shared MLP beside the block, f16",
     .model_type = "granitemoeshared",
     .config = "{\"model_type\": \"granitemoeshared\", \"hidden_size\": 24,"
               " \"intermediate_size\": 16, \"num_local_experts\": 8,"
               " \"num_experts_per_tok\": 2, \"shared_intermediate_size\": 20,"
               " \"num_hidden_layers\": 1}",
     .H = 24, .F = 16, .E = 8, .K = 2, .SF = 20, .wdt = F16, .sdt = F16, .rdt = F16,
     .lay = LAY_STACKED, .shared = SHARED_GRANITE, .prefix = "model.layers.0.block_sparse_moe.",
     .layer = "0", .xdt = F32, .xdims = 2, .xshape = {17, 24}, .tol = 1e-4,
     .want = {.routing = MOEVK_ROUTING_TOPK_SOFTMAX, .weight_dtype = F16, .router_dtype = F16,
              .num_shared = 1, .shared_ffn = 20},
     .want_layout = WANT_STACKED, .want_mapped = 1},
    /* PhiMoE: sparsemixer with the config's router_jitter_noise, two experts
     * whatever num_experts_per_tok says */
    {.name = "phimoe, stacked, router.weight, sparsemixer, bf16",
     .model_type = "phimoe",
     .config = "{\"model_type\": \"phimoe\", \"hidden_size\": 24, \"intermediate_size\": 16,"
               " \"num_local_experts\": 6, \"num_experts_per_tok\": 3,"
               " \"router_jitter_noise\": 0.2, \"num_hidden_layers\": 1}",
     .H = 24, .F = 16, .E = 6, .K = 2, .wdt = BF16, .sdt = BF16, .rdt = BF16,
     .lay = LAY_STACKED_ROUTER, .prefix = "model.layers.0.mlp.", .layer = "0", .xdt = F32,
     .xdims = 2, .xshape = {19, 24}, .tol = 1e-4,
     .want = {.routing = MOEVK_ROUTING_SPARSEMIXER, .jitter_eps = 0.2f, .weight_dtype = BF16,
              .router_dtype = BF16},
     .want_layout = WANT_STACKED, .want_mapped = 1},
    /* the published checkpoints' names (Phi-3.5-MoE): block_sparse_moe.gate
     * and per-expert w1/w3/w2; router_jitter_noise absent: 0.01 */
    {.name = "phimoe, published block_sparse_moe.gate and per-expert w1/w3/w2, two layers",
     .model_type = "phimoe",
     .config = "{\"model_type\": \"phimoe\", \"hidden_size\": 32, \"intermediate_size\": 24,"
               " \"num_local_experts\": 8, \"num_hidden_layers\": 2,"
               " \"torch_dtype\": \"bfloat16\"}",
     .H = 32, .F = 24, .E = 8, .K = 2, .wdt = BF16, .sdt = BF16, .rdt = BF16,
     .lay = LAY_W123, .prefix = "model.layers.1.block_sparse_moe.", .layer = "1",
     .other_prefix = "model.layers.0.block_sparse_moe.", .other_layer = "0", .xdt = F32,
     .xdims = 2, .xshape = {21, 32}, .tol = 1e-4,
     .want = {.routing = MOEVK_ROUTING_SPARSEMIXER, .jitter_eps = 0.01f, .weight_dtype = BF16,
              .router_dtype = BF16},
     .want_layout = WANT_W123, .want_mapped = 1},
};

#define N_ARCH_ROWS (sizeof arch_rows / sizeof arch_rows[0])

/* Whether p points into one of the checkpoint's mapped files. */
static int in_map(const mvk_st_set *s, const void *p)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < s->nfiles; i++)
        if (b >= s->files[i].bytes && b < s->files[i].bytes + s->files[i].size)
            return 1;
    return 0;
}

/* n elements of dtype dt at p, as f32, equal to want (bitwise); p and want
 * both NULL is equal too. */
static void expect_values(const void *p, moevk_dtype dt, const float *want, size_t n,
                          const char *row, const char *what, int64_t index)
{
    cr_expect_eq(p == NULL, want == NULL, "%s: %s %lld is %s", row, what, (long long)index,
                 p ? "present" : "absent");
    if (!p || !want)
        return;
    float *got = malloc(n * sizeof(float) + 4);
    cr_assert_not_null(got);
    mvk_model_to_f32(p, dt, n, got);
    cr_expect(!memcmp(got, want, n * sizeof(float)), "%s: %s %lld differs", row, what,
              (long long)index);
    free(got);
}

/* `count` experts of a moevk_expert_weights against canonical [E, F, H] gate/up,
 * [E, H, F] down and [E, F], [E, F], [E, H] biases. */
static void expect_experts(const arch_row *r, const mvk_st_set *set, const moevk_expert_weights *w,
                           moevk_dtype dt, uint32_t count, size_t F, size_t H,
                           const float *const want[6], const char *kind)
{
    static const char *const what[3] = {"gate matrix", "up matrix", "down matrix"};
    const void *const base[3] = {w->gate, w->up, w->down};
    const void *const *per[3] = {w->gate_experts, w->up_experts, w->down_experts};
    const size_t es = moevk_dtype_size(dt);
    char label[64];
    for (uint32_t e = 0; e < count; e++)
        for (int i = 0; i < 3; i++) {
            const void *m = per[i]    ? per[i][e]
                            : base[i] ? (const uint8_t *)base[i] + (size_t)e * F * H * es
                                      : NULL;
            snprintf(label, sizeof label, "%s of %s", what[i], kind);
            expect_values(m, dt, want[i] ? want[i] + (size_t)e * F * H : NULL, F * H, r->name,
                          label, e);
            /* want_mapped 2: the gate and up matrices mapped, down copied */
            const int mapped = r->want_mapped == 2 ? i < 2 : r->want_mapped;
            if (m)
                cr_expect_eq(in_map(set, m), mapped, "%s: %s %u %s the map", r->name, label, e,
                             mapped ? "is not in" : "points into");
        }
    expect_values(w->gate_bias, F32, want[3], (size_t)count * F, r->name, "gate biases", -1);
    expect_values(w->up_bias, F32, want[4], (size_t)count * F, r->name, "up biases", -1);
    expect_values(w->down_bias, F32, want[5], (size_t)count * H, r->name, "down biases", -1);
}

/* The layer the loader builds from the row's checkpoint: every desc field
 * and every weight. */
static void expect_layer(const arch_row *r, const mvk_model_layer *L, const mvk_st_set *set,
                         const canon *c)
{
    const moevk_layer_desc *d = &L->desc, *w = &r->want;
    cr_expect_str_eq(mvk_arch_name(L->arch), r->model_type, "%s", r->name);
    cr_expect_str_eq(L->layout, r->want_layout, "%s", r->name);
    cr_expect_eq(L->converted, r->want_converted, "%s: converted", r->name);
    cr_expect_eq(L->file_dtype, r->wdt, "%s: file dtype", r->name);
    cr_expect_eq(L->expert_capacity, r->capacity, "%s: expert_capacity", r->name);
    cr_expect_eq(L->dropped_passthrough, 0, "%s", r->name);
    cr_expect_str_eq(L->prefix, r->prefix, "%s", r->name);
#define SAME(f)                                                                                \
    cr_expect_eq(d->f, w->f, "%s: desc." #f " is %.9g, expected %.9g", r->name, (double)d->f,  \
                 (double)w->f);
    cr_expect(d->hidden == r->H && d->ffn == r->F && d->num_experts == r->E &&
                  d->top_k == r->K,
              "%s: H %u F %u E %u k %u", r->name, d->hidden, d->ffn, d->num_experts, d->top_k);
    ROUTING_FIELDS(SAME)
    SAME(capacity_factor)
    SAME(weight_dtype)
    SAME(router_dtype)
    SAME(num_shared)
    SAME(shared_ffn)
#undef SAME
    cr_expect_null(d->workspace, "%s", r->name);
    const size_t H = r->H, E = r->E;
    expect_values(d->router_weight, d->router_dtype, c->router, E * H, r->name, "router", -1);
    expect_values(d->router_bias, F32, c->rbias, E, r->name, "router bias", -1);
    expect_values(d->correction_bias, F32, c->cbias, E, r->name, "correction bias", -1);
    const float *const routed[6] = {c->gate, c->up, c->down, c->gbias, c->ubias, c->dbias};
    expect_experts(r, set, &d->experts, d->weight_dtype, r->E, r->F, H, routed, "expert");
    const float *const shared[6] = {c->sgate, c->sup, c->sdown, NULL, NULL, NULL};
    expect_experts(r, set, &d->shared, d->weight_dtype, d->num_shared, r->SF, H, shared,
                   "shared expert");
    expect_values(d->shared_gate, d->router_dtype, c->sg, H, r->name, "shared-expert gate", -1);
    char why[384];
    cr_expect_eq(moevk_layer_desc_check(d, why, sizeof why), MOEVK_SUCCESS, "%s: %s", r->name,
                 why);
}

/* Write the row's checkpoint into dir: config.json, the block (and the
 * other block) in one file, two shards with an index, or `weights`. */
static void write_checkpoint(const arch_row *r, const char *dir, const canon *c,
                             const canon *other, char *weights, size_t wsz)
{
    tlist *l = tl_new();
    char p[512];
    if (r->files & FILE_MISALIGNED) {
        float odd[3] = {1, 2, 3};
        /* 6 bytes first: every f32 tensor after it is only 2-byte aligned */
        tl_add(l, BF16, 1, SH(3), odd, "model.embed_tokens.weight");
    }
    if (r->other_prefix)
        add_block(l, other, r->other_prefix, r->lay, r->shared);
    size_t first = l->n;
    add_block(l, c, r->prefix, r->lay, r->shared);
    join(weights, wsz, dir, r->layer ? "model.safetensors" : "weights.safetensors");
    if (r->files & FILE_SHARDED) {
        /* two shards, the layer split across them, and an index */
        static const char *const shard[2] = {"model-00001-of-00002.safetensors",
                                             "model-00002-of-00002.safetensors"};
        size_t cut = first + (l->n - first) / 2;
        tl_write(l, join(p, sizeof p, dir, shard[0]), 0, cut);
        tl_write(l, join(p, sizeof p, dir, shard[1]), cut, l->n);
        cJSON *idx = cJSON_CreateObject(), *wm = cJSON_AddObjectToObject(idx, "weight_map");
        cJSON_AddObjectToObject(idx, "metadata");
        for (size_t i = 0; i < l->n; i++)
            cJSON_AddStringToObject(wm, l->name[i], shard[i >= cut]);
        char *s = cJSON_Print(idx);
        write_text(join(p, sizeof p, dir, "model.safetensors.index.json"), s);
        free(s);
        cJSON_Delete(idx);
    } else {
        tl_write(l, weights, 0, l->n);
    }
    tl_free(l);
    write_text(join(p, sizeof p, dir, "config.json"), r->config);
}

/* Parse the row's config.json, open its checkpoint as `moevk run` does and
 * build the layer. */
static void build_row(const arch_row *r, const char *dir, const char *weights, mvk_moe_config *cfg,
                      mvk_st_set *set, mvk_model_layer *L)
{
    char err[1024], p[MVK_MAX_PREFIXES][MVK_PREFIX_LEN];
    int n = 1;
    *cfg = parse_ok(r->config);
    if (r->layer)
        cr_assert_eq(mvk_hf_layer_prefixes(cfg, (uint32_t)atoi(r->layer), 0, p, &n, err,
                                           sizeof err),
                     0, "%s: %s", r->name, err);
    else
        snprintf(p[0], sizeof p[0], "%s", r->prefix);
    mvk_st_set_init(set);
    if (r->layer)
        cr_assert_eq(mvk_st_set_open_dir(set, dir, err, sizeof err), 0, "%s: %s", r->name, err);
    else
        cr_assert_eq(mvk_st_set_add_file(set, weights, err, sizeof err), 0, "%s: %s", r->name,
                     err);
    const char *pp[MVK_MAX_PREFIXES] = {p[0], p[1]};
    cr_assert_eq(mvk_model_layer_build_any(cfg, set, pp, n, L, err, sizeof err), 0, "%s: %s",
                 r->name, err);
}

/* `moevk run --stats` on the CPU against the reference's statistics. */
static void expect_stats(const arch_row *r, const char *dir, const char *const *sel,
                         const char *xpath, const moevk_layer_desc *d, const float *x, uint32_t T)
{
    uint32_t tpe[64];
    cr_assert_leq(r->E, 64);
    moevk_routing_stats rs = {.tokens_per_expert = tpe};
    float *yy = malloc(sizeof(float) * T * r->H);
    cr_assert_eq(moevk_ref_layer_forward(d, T, x, yy, NULL, NULL, NULL, &rs), 0);
    free(yy);
    char out[8192], sp[512], *text;
    size_t len;
    const char *args[24];
    size_t n = 0;
    args[n++] = "run";
    for (const char *const *s = sel; *s; s++)
        args[n++] = *s;
    const char *tail[] = {"--input", xpath, "--stats", join(sp, sizeof sp, dir, "s.json"),
                          "--backend", "cpu", NULL};
    for (const char *const *s = tail; *s; s++)
        args[n++] = *s;
    args[n] = NULL;
    cr_assert_eq(run_cli(out, sizeof out, args), 0, "%s", out);
    cr_assert_eq(mvk_read_text(sp, &text, &len, out, sizeof out), 0);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert_not_null(j);
    cJSON *arr = cJSON_GetObjectItem(j, "tokens_per_expert");
    cr_assert_eq(cJSON_GetArraySize(arr), (int)r->E);
    for (uint32_t e = 0; e < r->E; e++)
        cr_assert_eq((uint32_t)cJSON_GetArrayItem(arr, (int)e)->valuedouble, tpe[e]);
    cr_assert_eq(cJSON_GetObjectItem(j, "dropped")->valuedouble, 0);
    cr_assert_float_eq(cJSON_GetObjectItem(j, "load_balancing_loss")->valuedouble,
                       rs.load_balancing_loss, 1e-9);
    cr_assert_float_eq(cJSON_GetObjectItem(j, "router_z_loss")->valuedouble, rs.router_z_loss,
                       1e-9);
    cr_assert_float_eq(cJSON_GetObjectItem(j, "routing_entropy")->valuedouble,
                       rs.routing_entropy, 1e-9);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "model_type")->valuestring, r->model_type);
    cJSON_Delete(j);
}

/* `moevk run <sel> <extra> --input x` on the CPU fails with exit 1 and a
 * message that says msg. */
static void expect_run_fails(const char *const *sel, const char *extra, const char *xpath,
                             const char *msg)
{
    char out[8192];
    const char *args[24];
    size_t n = 0;
    args[n++] = "run";
    for (const char *const *s = sel; *s; s++)
        args[n++] = *s;
    if (extra)
        args[n++] = extra;
    const char *tail[] = {"--input", xpath, "--backend", "cpu", NULL};
    for (const char *const *s = tail; *s; s++)
        args[n++] = *s;
    args[n] = NULL;
    cr_assert_eq(run_cli(out, sizeof out, args), 1, "%s", out);
    cr_assert(strstr(out, msg), "'%s' does not say '%s'", out, msg);
}

/* `moevk run --quantize q8_0 --check` on Vulkan: quantised at load (said,
 * with the formats each matrix got), the same as the CPU reference on the
 * same quantised weights, and within q8_0's error of the unquantised y. */
static void run_quantized(const char *dir, const char *const *sel, const char *xpath,
                          const float *y, uint32_t T, uint32_t H, uint32_t ndim,
                          const uint64_t *shape)
{
    char out[16384], ypath[512];
    snprintf(ypath, sizeof ypath, "%s/y_q8_0.safetensors", dir);
    const char *args[48];
    size_t n = 0;
    args[n++] = "run";
    for (const char *const *s = sel; *s; s++)
        args[n++] = *s;
    const char *tail[] = {"--input", xpath, "--output", ypath, "--quantize", "q8_0", "--check",
                          "--validate", NULL};
    for (const char *const *s = tail; *s; s++)
        args[n++] = *s;
    args[n] = NULL;
    int st = run_cli_env(out, sizeof out, args, 1);
    if (st != 0 && no_vulkan_device(out))
        return;
    cr_assert_eq(st, 0, "moevk run --quantize q8_0 failed (%d):\n%s", st, out);
    cr_assert(strstr(out, "\nquantise "), "no quantise line:\n%s", out);
    cr_assert(strstr(out, "\nmemory   weights "), "no memory line:\n%s", out);
    cr_assert(strstr(out, "\ncheck    relative L2 error "), "no check:\n%s", out);
    const double e = y_error(ypath, y, NULL, T, H, ndim, shape);
    cr_assert(e > 0 && e < 0.03, "q8_0 against the unquantised y: relative L2 error %g\n%s", e,
              out);
    cr_log_info("q8_0: relative L2 error %.3g against the unquantised layer\n%s", e, out);
}

ParameterizedTestParameters(model, architecture)
{
    static size_t rows[N_ARCH_ROWS];
    for (size_t i = 0; i < N_ARCH_ROWS; i++)
        rows[i] = i;
    return cr_make_param_array(size_t, rows, N_ARCH_ROWS);
}

/* One row: the loader's desc and weights, then `moevk run` on every backend
 * against the CPU reference (switch_transformers: against switch_naive),
 * and the row's other layers. */
ParameterizedTest(const size_t *index, model, architecture, .timeout = 120)
{
    const arch_row *r = &arch_rows[*index];
    cr_log_info("%s", r->name);
    e2e t;
    e2e_begin(&t, 100 + *index);
    canon c, other;
    unsigned flags = r->flags;
    canon_make(&c, &t.rng, r->H, r->F, r->E, r->K, r->SF, r->wdt, r->sdt, r->rdt, flags);
    canon_make(&other, &t.rng, r->H, r->F, r->E, r->K, r->SF, r->wdt, r->sdt, r->rdt, flags);
    if (flags & F32_BIASES)
        c.bdt = other.bdt = F32;
    char w[512];
    write_checkpoint(r, t.dir, &c, &other, w, sizeof w);

    mvk_moe_config cfg;
    mvk_st_set set;
    mvk_model_layer L;
    build_row(r, t.dir, w, &cfg, &set, &L);
    expect_layer(r, &L, &set, &c);
    mvk_model_layer_free(&L);
    mvk_st_set_free(&set);
    mvk_hf_config_free(&cfg);

    const uint32_t H = r->H;
    uint32_t T = 1;
    for (uint32_t i = 0; i + 1 < r->xdims; i++)
        T *= (uint32_t)r->xshape[i];
    float *x = write_x(&t.rng, t.x, r->xdt, r->xdims, r->xshape);
    moevk_layer_desc d = canon_desc(&c);
    d.routing = r->want.routing;
    d.activation = r->want.activation;
    d.norm_topk_prob = r->want.norm_topk_prob;
    d.n_group = r->want.n_group;
    d.topk_group = r->want.topk_group;
    d.routed_scaling_factor = r->want.routed_scaling_factor;
    d.swiglu_alpha = r->want.swiglu_alpha;
    d.swiglu_limit = r->want.swiglu_limit;
    d.norm_p = r->want.norm_p;
    d.jitter_eps = r->want.jitter_eps;
    uint8_t *near = NULL;
    float *y;
    uint32_t dropped = 0;
    if (r->capacity) {
        /* B sequences of S tokens ([B, S, H]), capacity per sequence. A
         * near-tie flipped by a backend moves the admissions of the later
         * tokens of its sequence (of all of them in the one-sequence pass
         * below): x is redrawn until no token is near-tied, and then every
         * token is compared. */
        near = malloc(T);
        for (int attempt = 0;; attempt++) {
            y = switch_naive(&c, x, (uint32_t)r->xshape[0], (uint32_t)r->xshape[1],
                             r->capacity, 0, near, &dropped);
            uint32_t n_near = 0;
            for (uint32_t i = 0; i < T; i++)
                n_near += near[i];
            if (!n_near)
                break;
            cr_assert_lt(attempt, 10, "%s: x near-tied (%u tokens) in 10 redraws", r->name,
                         n_near);
            cr_log_info("x redrawn: %u near-tied tokens", n_near);
            free(y);
            free(x);
            x = write_x(&t.rng, t.x, r->xdt, r->xdims, r->xshape);
        }
        /* more tokens per sequence (14) than E x capacity (12): some dropped */
        cr_assert_gt(dropped, 0, "the case should drop tokens");
    } else {
        y = expect_ref(&d, x, T, &near);
    }
    char prefix_arg[MVK_PREFIX_LEN];
    snprintf(prefix_arg, sizeof prefix_arg, "%s", r->prefix);
    if (!r->layer) /* --prefix without its final dot: moevk adds it */
        prefix_arg[strlen(prefix_arg) - 1] = 0;
    const char *sel_model[] = {"--model", t.dir, "--layer", r->layer, NULL};
    const char *sel_files[] = {"--config", t.cfg, "--weights", w, "--prefix", prefix_arg, NULL};
    const char *const *sel = r->layer ? sel_model : sel_files;
    run_backends(t.dir, sel, t.x, y, near, T, H, r->xdims, r->xshape, r->tol);
    run_quantized(t.dir, sel, t.x, y, T, H, r->xdims, r->xshape);

    if (r->capacity) {
        /* the same sequences as one [T, H] input: one sequence, more drops;
         * and transformers 4's output for dropped tokens */
        float *y1 = switch_naive(&c, x, 1, T, r->capacity, 1, near, &dropped);
        char x2[512];
        tlist *xl = tl_new();
        tl_add(xl, F32, 2, SH(T, H), x, "x");
        tl_write(xl, join(x2, sizeof x2, t.dir, "x2.safetensors"), 0, 1);
        tl_free(xl);
        const char *sel4[] = {"--model", t.dir, "--layer", r->layer, "--dropped-passthrough",
                              NULL};
        run_backends(t.dir, sel4, x2, y1, near, T, H, 2, SH(T, H), r->tol);
        free(y1);
    } else {
        expect_run_fails(sel, "--dropped-passthrough", t.x, "only for switch_transformers");
    }
    if (r->stats)
        expect_stats(r, t.dir, sel, t.x, &d, x, T);
    if (r->other_layer) {
        /* the other layer is a different block */
        char out[8192], yp[512];
        const char *args[] = {"run", "--model", t.dir, "--layer", r->other_layer, "--input",
                              t.x, "--output", join(yp, sizeof yp, t.dir, "y0.safetensors"),
                              "--backend", "cpu", NULL};
        cr_assert_eq(run_cli(out, sizeof out, args), 0, "%s", out);
        cr_assert_gt(y_error(yp, y, NULL, T, H, r->xdims, r->xshape), 0.1);
    }
    if (r->dense_layer) {
        const char *dense[] = {"--model", t.dir, "--layer", r->dense_layer, NULL};
        expect_run_fails(dense, NULL, t.x, r->dense_msg);
    }
    free(x);
    free(y);
    free(near);
    canon_free(&c);
    canon_free(&other);
    dir_remove(t.dir);
}

/* ---- the descriptor table, and a descriptor outside it ----------------------- */

/* Whether pattern names a tensor per expert ("{i}" in it). */
static int per_expert_name(const char *pattern)
{
    return pattern && strstr(pattern, "{i}");
}

/* What every descriptor must hold (the checklist in src/model/arch.c). */
Test(model, descriptors_are_complete)
{
    size_t n = 0;
    for (const mvk_arch *a; (a = mvk_arch_get(n)); n++) {
        const char *name = mvk_arch_name(a);
        for (size_t i = 0; i < MVK_ARCH_NAMES && a->model_types[i]; i++)
            cr_expect_eq(mvk_arch_find(a->model_types[i]), a, "%s: model_type %s", name,
                         a->model_types[i]);
        static const mvk_cfg_field needed[] = {MVK_CFG_HIDDEN, MVK_CFG_FFN, MVK_CFG_EXPERTS,
                                               MVK_CFG_TOP_K, MVK_CFG_NUM_LAYERS};
        for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++)
            cr_expect_not_null(mvk_arch_key_of(a, needed[i]), "%s: no key for field %d", name,
                               (int)needed[i]);
        size_t nkeys = 0;
        while (nkeys < MVK_ARCH_KEYS && a->keys[nkeys].field != MVK_CFG_END)
            nkeys++;
        cr_expect_lt(nkeys, MVK_ARCH_KEYS, "%s: the key list has no end", name);
        for (size_t i = 0; i < nkeys; i++)
            for (size_t j = i + 1; j < nkeys; j++)
                cr_expect_neq(a->keys[i].field, a->keys[j].field, "%s: field %d read twice",
                              name, (int)a->keys[i].field);
        cr_expect(a->act.key ? a->act.names && a->act.names[0].name : a->act.def != NULL,
                  "%s: activation", name);
        cr_expect(a->layer_prefixes[0] && strstr(a->layer_prefixes[0], "{N}"),
                  "%s: layer prefix", name);
        cr_expect_eq(a->sparse == MVK_SPARSE_ENCODER_DECODER,
                     a->decoder_prefix && mvk_arch_key_of(a, MVK_CFG_NUM_DECODER_LAYERS),
                     "%s: a decoder stack needs decoder_prefix and num_decoder_layers", name);
        cr_expect_not_null(a->router, "%s: router", name);
        int readable = 0;
        for (size_t i = 0; i < MVK_ARCH_LAYOUTS && a->layouts[i]; i++) {
            const mvk_arch_layout *l = a->layouts[i];
            const int per = l->kind == MVK_LAYOUT_PER_EXPERT;
            if (l->kind == MVK_LAYOUT_REFUSED) {
                cr_expect(l->gate && l->why, "%s: a refused layout needs gate and why", name);
                continue;
            }
            readable++;
            cr_expect_not_null(l->what, "%s: layout %zu is not described", name, i);
            /* per-expert: up and down (and gate) per expert; stacked: gate_up and down */
            /* stacked: gate_up and down, or (non-gated) up and down */
            /* rows (DBRX): gate, up and down, none per expert */
            const int rows = l->kind == MVK_LAYOUT_ROWS;
            cr_expect(per    ? per_expert_name(l->up) && per_expert_name(l->down) &&
                                   (!l->gate || per_expert_name(l->gate))
                      : rows ? l->gate && l->up && l->down && !per_expert_name(l->gate) &&
                                   !per_expert_name(l->up) && !per_expert_name(l->down)
                             : (!l->gate != !l->up) && l->down &&
                                   !per_expert_name(l->gate ? l->gate : l->up) &&
                                   !per_expert_name(l->down),
                      "%s: layout %s names", name, l->what);
            cr_expect_eq(!l->gate_bias, !l->down_bias, "%s: layout %s biases", name, l->what);
        }
        cr_expect_gt(readable, 0, "%s: no readable layout", name);
        if (a->shared_sink)
            cr_expect(mvk_arch_key_of(a, MVK_CFG_SINK_SHARED) && a->shared[0] && a->shared[1] &&
                          a->shared[2] && !a->shared_gate,
                      "%s: sink shared experts: their count key, names, no separate gate",
                      name);
        else if (mvk_arch_key_of(a, MVK_CFG_SHARED_FFN) ||
                 mvk_arch_key_of(a, MVK_CFG_SHARED_EXPERTS))
            cr_expect((a->shared[0] || !moevk_activation_is_gated(a->act.fixed) || a->act.key) &&
                          a->shared[1] && a->shared[2],
                      "%s: shared names", name);
        else
            cr_expect(!a->shared[0] && !a->shared_gate, "%s: shared names without a size", name);
        /* the defaults make a valid config, and the listed message names it */
        char json[512], list[1024];
        int o = snprintf(json, sizeof json, "{\"model_type\": \"%s\"", name);
        for (size_t i = 0; i < nkeys; i++) /* keys without a default: given */
            if (a->keys[i].required)
                o += snprintf(json + o, sizeof json - (size_t)o, ", \"%s\": %s",
                              a->keys[i].names[0],
                              a->keys[i].field == MVK_CFG_LAYER_TYPES ? "[\"sparse\"]" : "2");
        if (mvk_arch_key_of(a, MVK_CFG_MOE_BLOCK)) /* its default: no MoE block */
            o += snprintf(json + o, sizeof json - (size_t)o, ", \"%s\": true",
                          mvk_arch_key_of(a, MVK_CFG_MOE_BLOCK)->names[0]);
        snprintf(json + o, sizeof json - (size_t)o, "}");
        mvk_moe_config c = parse_ok(json);
        cr_expect_eq(c.arch, a);
        mvk_hf_config_free(&c);
        cr_expect(strstr(mvk_arch_list(list, sizeof list, NULL), name), "%s", list);
    }
    cr_assert_eq(n, 72, "the table has %zu architectures", n);
    cr_expect_null(mvk_arch_find("llama"));
    cr_expect_null(mvk_arch_find(NULL));
    char list[1024];
    cr_expect_str_eq(mvk_arch_list(list, sizeof list, mvk_arch_has_decoder),
                     "nllb-moe, switch_transformers");
    cr_expect_str_eq(mvk_arch_list(list, sizeof list, mvk_arch_has_capacity),
                     "switch_transformers");
    char small[12];
    cr_expect_str_eq(mvk_arch_list(small, sizeof small, NULL), "mixtral"); /* cut at a name */
}

Test(model, name_patterns_expand)
{
    char buf[64], tiny[8];
    cr_assert_eq(mvk_arch_expand(buf, sizeof buf, "m.", "experts.{i}.w1", 12), 0);
    cr_expect_str_eq(buf, "m.experts.12.w1");
    cr_assert_eq(mvk_arch_expand(buf, sizeof buf, "", "model.layers.{N}.mlp.", 4294967295u), 0);
    cr_expect_str_eq(buf, "model.layers.4294967295.mlp.");
    /* a prefix is taken as it is */
    cr_assert_eq(mvk_arch_expand(buf, sizeof buf, "a{N}{i}.", "{x}gate", 3), 0);
    cr_expect_str_eq(buf, "a{N}{i}.{x}gate");
    cr_expect_eq(mvk_arch_expand(tiny, sizeof tiny, "", "abcd{i}", 1234), -1);
    cr_expect_str_eq(tiny, "");
    cr_assert_eq(mvk_arch_expand(tiny, sizeof tiny, "", "abc{i}", 123), 0);
    cr_expect_str_eq(tiny, "abc123");
}

/* A descriptor the table does not have, with names of its own: the generic
 * reader and loader handle it like the table's. */
static const mvk_act_name toy_acts[] = {{"swish", MOEVK_ACT_SWIGLU},
                                        {"gelu", MOEVK_ACT_GEGLU},
                                        {NULL, MOEVK_ACT_SWIGLU}};
static const mvk_arch_layout toy_layout = {
    .kind = MVK_LAYOUT_PER_EXPERT,
    .what = "toy fc1/fc3/fc2",
    .gate = "ffn.fc1.{i}",
    .up = "ffn.fc3.{i}",
    .down = "ffn.fc2.{i}",
};
static const mvk_arch toy_arch = {
    .model_types = {"toy_moe"},
    .keys = {{.field = MVK_CFG_HIDDEN, .names = {"d_embed"}, .required = 1},
             {.field = MVK_CFG_FFN, .names = {"d_expert"}, .def = 8},
             {.field = MVK_CFG_EXPERTS, .names = {"n_experts", "experts"}, .def = 4},
             {.field = MVK_CFG_TOP_K, .names = {"k"}, .def = 2},
             {.field = MVK_CFG_NORM_TOPK, .def = 1},
             {.field = MVK_CFG_NUM_LAYERS, .names = {"n_layers"}, .def = 4},
             {.field = MVK_CFG_FIRST_K_DENSE, .names = {"dense_first"}, .def = 1}},
    .routing = MOEVK_ROUTING_SOFTMAX_TOPK,
    .act = {.key = "act", .def = "swish", .names = toy_acts},
    .sparse = MVK_SPARSE_DECODER,
    .layer_prefixes = {"blocks.{N}.moe."},
    .router = "route.w",
    .router_bias = "route.b",
    .layouts = {&toy_layout},
};

static mvk_moe_config toy_parse(const char *json)
{
    char err[512];
    mvk_moe_config c;
    cr_assert_eq(mvk_hf_config_parse_as(&toy_arch, json, strlen(json), "toy.json", &c, err,
                                        sizeof err),
                 0, "%s: %s", json, err);
    return c;
}

Test(model, a_new_architecture_is_one_descriptor)
{
    char err[512] = "";
    mvk_moe_config c;
    const char *no_h = "{\"d_expert\": 4}";
    cr_assert_eq(mvk_hf_config_parse_as(&toy_arch, no_h, strlen(no_h), "toy.json", &c, err,
                                        sizeof err),
                 -1);
    cr_expect(strstr(err, "toy.json: \"d_embed\" is required (toy_moe has no default for it)"),
              "%s", err);
    const char *bad_act = "{\"d_embed\": 8, \"act\": \"silu\"}";
    cr_assert_eq(mvk_hf_config_parse_as(&toy_arch, bad_act, strlen(bad_act), "toy.json", &c,
                                        err, sizeof err),
                 -1);
    cr_expect(strstr(err, "\"act\" = \"silu\" is not supported (swish, gelu)"), "%s", err);
    c = toy_parse("{\"d_embed\": 16, \"experts\": 3, \"act\": \"gelu\"}");
    cr_expect(c.hidden == 16 && c.ffn == 8 && c.num_experts == 3 && c.top_k == 2 &&
                  c.norm_topk_prob == 1 && c.activation == MOEVK_ACT_GEGLU &&
                  c.router_bias && !c.correction_bias && c.first_k_dense_replace == 1,
              "H %u F %u E %u k %u", c.hidden, c.ffn, c.num_experts, c.top_k);
    cr_expect_str_eq(mvk_arch_name(c.arch), "toy_moe");

    /* its layers and prefixes */
    char p[MVK_MAX_PREFIXES][MVK_PREFIX_LEN];
    int n;
    cr_assert_eq(mvk_hf_layer_prefixes(&c, 3, 0, p, &n, err, sizeof err), 0, "%s", err);
    cr_expect(n == 1 && !strcmp(p[0], "blocks.3.moe."), "%d %s", n, p[0]);
    cr_expect_eq(mvk_hf_layer_prefixes(&c, 0, 0, p, &n, err, sizeof err), -1);
    cr_expect(strstr(err, "layer 0 is a dense MLP layer (dense_first = 1)"), "%s", err);
    cr_expect_eq(mvk_hf_layer_prefixes(&c, 4, 0, p, &n, err, sizeof err), -1);
    cr_expect(strstr(err, "layer 4 is out of range: toy_moe has n_layers = 4"), "%s", err);
    cr_expect_eq(mvk_hf_layer_prefixes(&c, 1, 1, p, &n, err, sizeof err), -1);
    cr_expect(strstr(err, "--decoder is only for nllb-moe, switch_transformers"), "%s", err);

    /* a block under its names, loaded and compared as the table's rows are */
    char dir[256], w[512];
    dir_make(dir, sizeof dir);
    mvkt_rng rng = mvkt_rng_make(17);
    canon k;
    canon_make(&k, &rng, 16, 8, 3, 2, 0, BF16, BF16, F32, WITH_RBIAS);
    tlist *l = tl_new();
    const char *P = "blocks.3.moe.";
    tl_add(l, F32, 2, SH(3, 16), k.router, "%sroute.w", P);
    tl_add(l, k.bdt, 1, SH(3), k.rbias, "%sroute.b", P);
    for (uint32_t i = 0; i < 3; i++) {
        tl_add(l, BF16, 2, SH(8, 16), k.gate + i * 128, "%sffn.fc1.%u", P, i);
        tl_add(l, BF16, 2, SH(8, 16), k.up + i * 128, "%sffn.fc3.%u", P, i);
        tl_add(l, BF16, 2, SH(16, 8), k.down + i * 128, "%sffn.fc2.%u", P, i);
    }
    tl_write(l, join(w, sizeof w, dir, "toy.safetensors"), 0, l->n);
    tl_free(l);
    const arch_row r = {.name = "toy_moe", .model_type = "toy_moe", .H = 16, .F = 8, .E = 3,
                        .K = 2, .wdt = BF16, .prefix = "blocks.3.moe.",
                        .want = {.activation = MOEVK_ACT_GEGLU, .norm_topk_prob = 1,
                                 .weight_dtype = BF16, .router_dtype = F32},
                        .want_layout = "toy fc1/fc3/fc2", .want_mapped = 1};
    mvk_st_set set;
    mvk_st_set_init(&set);
    cr_assert_eq(mvk_st_set_add_file(&set, w, err, sizeof err), 0, "%s", err);
    mvk_model_layer L;
    const char *pp[] = {p[0]};
    cr_assert_eq(mvk_model_layer_build_any(&c, &set, pp, 1, &L, err, sizeof err), 0, "%s", err);
    expect_layer(&r, &L, &set, &k);
    mvk_model_layer_free(&L);
    mvk_st_set_free(&set);
    mvk_hf_config_free(&c);
    canon_free(&k);
    dir_remove(dir);
}

/* ---- which layout, and what is missing ----------------------------------------- */

typedef struct st_decl {
    const char *name, *dtype;
    uint32_t ndim;
    uint64_t shape[3];
} st_decl;

/* The loader given config.json `json` and zero-filled tensors `t` (ended by
 * a NULL name) under prefix "" fails, saying msg. */
static void build_refused(const char *json, const st_decl *t, const char *msg)
{
    char dir[256], path[512], err[1024] = "";
    dir_make(dir, sizeof dir);
    tlist *l = tl_new();
    for (; t->name; t++) {
        uint64_t n = 1;
        for (uint32_t i = 0; i < t->ndim; i++)
            n *= t->shape[i];
        tl_raw(l, t->name, t->dtype, t->ndim, t->shape, calloc(n * 4 + 1, 1));
    }
    tl_write(l, join(path, sizeof path, dir, "w.safetensors"), 0, l->n);
    tl_free(l);
    mvk_moe_config c = parse_ok(json);
    mvk_st_set set;
    mvk_st_set_init(&set);
    cr_assert_eq(mvk_st_set_add_file(&set, path, err, sizeof err), 0, "%s", err);
    mvk_model_layer L;
    cr_expect_eq(mvk_model_layer_build(&c, &set, "", &L, err, sizeof err), -1, "%s: built",
                 json);
    cr_expect(strstr(err, msg), "%s: '%s' does not say '%s'", json, err, msg);
    mvk_st_set_free(&set);
    mvk_hf_config_free(&c);
    dir_remove(dir);
}

#define TINY(mt, f) "{\"model_type\": \"" mt "\", \"hidden_size\": 4, \"" f "\": 2,"
#define TINY_MIXTRAL                                                                            \
    TINY("mixtral", "intermediate_size") " \"num_local_experts\": 2, \"num_experts_per_tok\": 1}"
#define TINY_QWEN3                                                                              \
    TINY("qwen3_moe", "moe_intermediate_size") " \"num_experts\": 2, \"num_experts_per_tok\": 1}"
#define TINY_OSS                                                                                \
    TINY("gpt_oss", "intermediate_size") " \"num_local_experts\": 2, \"num_experts_per_tok\": 1}"
#define TINY_SWITCH                                                                             \
    "{\"model_type\": \"switch_transformers\", \"d_model\": 4, \"d_ff\": 2,"                   \
    " \"num_experts\": 2, \"router_bias\": true}"

Test(model, layout_choice_and_missing_tensors)
{
    const st_decl gate[] = {{"gate.weight", "F32", 2, {2, 4}}, {NULL}};
    build_refused(TINY_MIXTRAL, gate,
                  "missing tensor 'experts.0.w1.weight' (nor 'experts.0.gate_proj.weight' or "
                  "the stacked 'experts.gate_up_proj')");
    build_refused(TINY_QWEN3, gate,
                  "missing tensor 'experts.0.w1.weight' (nor 'experts.0.gate_proj.weight' or "
                  "the stacked 'experts.gate_up_proj')");
    /* a stacked gate_up without its down */
    const st_decl half[] = {{"gate.weight", "F32", 2, {2, 4}},
                            {"experts.gate_up_proj", "F32", 3, {2, 4, 4}},
                            {NULL}};
    build_refused(TINY_QWEN3, half, "missing tensor 'experts.down_proj'");
    /* one layout: its first missing tensor */
    const st_decl router[] = {{"router.classifier.weight", "F32", 2, {2, 4}},
                              {"router.classifier.bias", "F32", 1, {2}},
                              {NULL}};
    build_refused(TINY_SWITCH, router, "missing tensor 'experts.expert_0.wi.weight'");
    const st_decl no_bias[] = {{"router.classifier.weight", "F32", 2, {2, 4}}, {NULL}};
    build_refused(TINY_SWITCH, no_bias, "missing tensor 'router.classifier.bias'");
    const st_decl oss_router[] = {{"router.weight", "F32", 2, {2, 4}},
                                  {"router.bias", "F32", 1, {2}},
                                  {NULL}};
    build_refused(TINY_OSS, oss_router, "missing tensor 'experts.gate_up_proj'");
    /* MXFP4 experts: refused, naming the tensor and its dtype */
    const st_decl mxfp4[] = {{"router.weight", "F32", 2, {2, 4}},
                             {"router.bias", "F32", 1, {2}},
                             {"experts.gate_up_proj_blocks", "U8", 3, {2, 4, 2}},
                             {"experts.gate_up_proj_scales", "U8", 2, {2, 4}},
                             {NULL}};
    build_refused(TINY_OSS, mxfp4,
                  "tensor 'experts.gate_up_proj_blocks' has unsupported dtype U8: the experts "
                  "are MXFP4-quantized");
    /* gpt-oss' expert biases are required */
    const st_decl oss[] = {{"router.weight", "F32", 2, {2, 4}},
                           {"router.bias", "F32", 1, {2}},
                           {"experts.gate_up_proj", "F32", 3, {2, 4, 4}},
                           {"experts.gate_up_proj_bias", "F32", 2, {2, 4}},
                           {"experts.down_proj", "F32", 3, {2, 2, 4}},
                           {NULL}};
    build_refused(TINY_OSS, oss, "missing tensor 'experts.down_proj_bias'");
    /* deepseek_v3's correction bias; qwen2_moe's shared-expert gate */
    const st_decl ds[] = {{"gate.weight", "F32", 2, {2, 4}}, {NULL}};
    build_refused("{\"model_type\": \"deepseek_v3\", \"hidden_size\": 4,"
                  " \"moe_intermediate_size\": 2,"
                  " \"n_routed_experts\": 2, \"num_experts_per_tok\": 1, \"n_group\": 1,"
                  " \"topk_group\": 1}",
                  ds, "missing tensor 'gate.e_score_correction_bias'");
    const st_decl q2[] = {{"gate.weight", "F32", 2, {2, 4}},
                          {"experts.gate_up_proj", "F32", 3, {2, 4, 4}},
                          {"experts.down_proj", "F32", 3, {2, 4, 2}},
                          {"shared_expert.gate_proj.weight", "F32", 2, {2, 4}},
                          {"shared_expert.up_proj.weight", "F32", 2, {2, 4}},
                          {"shared_expert.down_proj.weight", "F32", 2, {4, 2}},
                          {NULL}};
    build_refused("{\"model_type\": \"qwen2_moe\", \"hidden_size\": 4,"
                  " \"moe_intermediate_size\": 2,"
                  " \"num_experts\": 2, \"num_experts_per_tok\": 1,"
                  " \"shared_expert_intermediate_size\": 2}",
                  q2, "missing tensor 'shared_expert_gate.weight'");
}

Test(model, run_reports_bad_input_cleanly)
{
    e2e t;
    e2e_begin(&t, 9);
    canon c;
    canon_make(&c, &t.rng, 8, 4, 2, 1, 0, MOEVK_DTYPE_BF16, MOEVK_DTYPE_BF16, MOEVK_DTYPE_BF16,
               0);
    tlist *l = tl_new();
    add_block(l, &c, "model.layers.0.block_sparse_moe.", LAY_W123, SHARED_NONE);
    char p[512];
    tl_write(l, join(p, sizeof p, t.dir, "model.safetensors"), 0, l->n);
    write_text(t.cfg, "{\"model_type\": \"mixtral\", \"hidden_size\": 8, \"intermediate_size\": 4,"
                      " \"num_local_experts\": 2, \"num_experts_per_tok\": 1,"
                      " \"num_hidden_layers\": 1}");
    char out[8192], bad[512];
    float *x = write_x(&t.rng, t.x, MOEVK_DTYPE_F32, 2, SH(3, 8));
    const char *a1[] = {"run", "--model", t.dir, "--layer", "0", "--input", t.x, "--backend",
                        "cpu", NULL};
    cr_assert_eq(run_cli(out, sizeof out, a1), 0, "%s", out);
    /* no tensor x */
    const char *a0[] = {"run", "--model", t.dir, "--layer", "0", "--input", p, NULL};
    cr_assert_eq(run_cli(out, sizeof out, a0), 1, "%s", out);
    cr_assert(strstr(out, "missing tensor 'x'"), "%s", out);
    /* wrong hidden size in x */
    char x7[512];
    free(write_x(&t.rng, join(x7, sizeof x7, t.dir, "x7.safetensors"), MOEVK_DTYPE_F32, 2,
                 SH(3, 7)));
    const char *a5[] = {"run", "--model", t.dir, "--layer", "0", "--input", x7, NULL};
    cr_assert_eq(run_cli(out, sizeof out, a5), 1, "%s", out);
    cr_assert(strstr(out, "expected [T, 8]"), "%s", out);
    /* an input of another dtype */
    tlist *xl = tl_new();
    tl_raw(xl, "x", "I32", 2, SH(3, 8), calloc(3 * 8, 4));
    tl_write(xl, join(bad, sizeof bad, t.dir, "xi.safetensors"), 0, 1);
    tl_free(xl);
    const char *a2[] = {"run", "--model", t.dir, "--layer", "0", "--input", bad, NULL};
    cr_assert_eq(run_cli(out, sizeof out, a2), 1, "%s", out);
    cr_assert(strstr(out, "unsupported dtype I32"), "%s", out);
    /* expert 1's w2 left out */
    for (size_t i = 0; i < l->n; i++)
        if (strstr(l->name[i], "experts.1.w2")) {
            memmove(&l->t[i], &l->t[i + 1], (l->n - i - 1) * sizeof(l->t[0]));
            break;
        }
    tl_write(l, p, 0, l->n - 1);
    tl_free(l);
    cr_assert_eq(run_cli(out, sizeof out, a1), 1, "%s", out);
    cr_assert(strstr(out, "missing tensor 'model.layers.0.block_sparse_moe.experts.1.w2.weight'"),
              "%s", out);
    /* usage errors */
    const char *a3[] = {"run", "--model", t.dir, "--input", t.x, NULL};
    cr_assert_eq(run_cli(out, sizeof out, a3), 2, "%s", out);
    cr_assert(strstr(out, "--layer"), "%s", out);
    const char *a4[] = {"run", "--model", t.dir, "--layer", "0", "--input", t.x, "--backend",
                        "tpu", NULL};
    cr_assert_eq(run_cli(out, sizeof out, a4), 2, "%s", out);
    /* a bad checkpoint file through the tool */
    write_bytes(p, "\x10\x00\x00\x00\x00\x00\x00\x00{}", 10);
    cr_assert_eq(run_cli(out, sizeof out, a1), 1, "%s", out);
    cr_assert(strstr(out, "goes beyond the end of the file"), "%s", out);
    free(x);
    canon_free(&c);
    dir_remove(t.dir);
}

/* ---- input hygiene: FIFOs, outputs over inputs, strict JSON, messages ------- */

#define TINY_CONFIG                                                                      \
    "{\"model_type\": \"mixtral\", \"hidden_size\": 8, \"intermediate_size\": 4,"        \
    " \"num_local_experts\": 2, \"num_experts_per_tok\": 1, \"num_hidden_layers\": 1}"
#define TINY_PREFIX "model.layers.0.block_sparse_moe."

/* A tiny mixtral checkpoint in dir (H 8, F 4, E 2, k 1, f32 weights):
 * config.json and model.safetensors, or with `sharded` shard-1/shard-2
 * listed in model.safetensors.index.json; and x.safetensors ([3, 8]). */
static void tiny_model(const char *dir, uint64_t seed, int sharded)
{
    mvkt_rng r = mvkt_rng_make(seed);
    canon c;
    canon_make(&c, &r, 8, 4, 2, 1, 0, MOEVK_DTYPE_F32, MOEVK_DTYPE_F32, MOEVK_DTYPE_F32, 0);
    tlist *l = tl_new();
    add_block(l, &c, TINY_PREFIX, LAY_W123, SHARED_NONE);
    char p[512];
    if (!sharded) {
        tl_write(l, join(p, sizeof p, dir, "model.safetensors"), 0, l->n);
    } else {
        size_t cut = l->n / 2;
        tl_write(l, join(p, sizeof p, dir, "shard-1.safetensors"), 0, cut);
        tl_write(l, join(p, sizeof p, dir, "shard-2.safetensors"), cut, l->n);
        cJSON *idx = cJSON_CreateObject(), *wm = cJSON_AddObjectToObject(idx, "weight_map");
        for (size_t i = 0; i < l->n; i++)
            cJSON_AddStringToObject(wm, l->name[i],
                                    i < cut ? "shard-1.safetensors" : "shard-2.safetensors");
        char *s = cJSON_Print(idx);
        write_text(join(p, sizeof p, dir, "model.safetensors.index.json"), s);
        free(s);
        cJSON_Delete(idx);
    }
    tl_free(l);
    write_text(join(p, sizeof p, dir, "config.json"), TINY_CONFIG);
    free(write_x(&r, join(p, sizeof p, dir, "x.safetensors"), MOEVK_DTYPE_F32, 2, SH(3, 8)));
    canon_free(&c);
}

static void subdir_make(char *buf, size_t n, const char *dir, const char *name)
{
    join(buf, n, dir, name);
    cr_assert_eq(mkdir(buf, 0700), 0, "mkdir %s", buf);
}

/* Replace path by a FIFO (no writer ever opens it). */
static void make_fifo(const char *path)
{
    unlink(path);
    cr_assert_eq(mkfifo(path, 0600), 0, "mkfifo %s", path);
}

/* The tool given a FIFO: refused at once with a message naming it. A hang
 * is killed after 20 s (status -1) and fails. */
static void run_refuses_fifo(const char *const *args, const char *fifo)
{
    char out[8192];
    int st = run_cli_ex(out, sizeof out, args, 0, 20, 0);
    cr_assert_eq(st, 1, "exit %d (-1: killed, it hung) for the FIFO %s:\n%s", st, fifo, out);
    cr_assert(strstr(out, fifo) && strstr(out, "not a regular file"), "%s", out);
}

Test(model, fifo_is_refused_not_waited_for, .timeout = 60)
{
    char dir[256], fifo[512], err[512] = "", out[8192], *text = NULL;
    size_t len;
    dir_make(dir, sizeof dir);
    make_fifo(join(fifo, sizeof fifo, dir, "fifo"));
    mvk_st_file f;
    cr_assert_eq(mvk_st_open(fifo, &f, err, sizeof err), -1);
    cr_assert(strstr(err, fifo) && strstr(err, "not a regular file (a FIFO)"), "%s", err);
    cr_assert_eq(mvk_read_text(fifo, &text, &len, err, sizeof err), -1);
    cr_assert(strstr(err, fifo) && strstr(err, "not a regular file (a FIFO)"), "%s", err);
    cr_assert_eq(mvk_read_text(dir, &text, &len, err, sizeof err), -1);
    cr_assert(strstr(err, "not a regular file (a directory)"), "%s", err);

    /* through the tool: the FIFO as x, as config.json, as a weights file */
    char m[512], x[512], cfg[512], w[512];
    subdir_make(m, sizeof m, dir, "m");
    tiny_model(m, 1, 0);
    join(x, sizeof x, m, "x.safetensors");
    join(cfg, sizeof cfg, m, "config.json");
    join(w, sizeof w, m, "model.safetensors");
    const char *ok[] = {"run", "--model", m, "--layer", "0", "--input", x, "--backend", "cpu",
                        NULL};
    cr_assert_eq(run_cli(out, sizeof out, ok), 0, "%s", out);
    const char *a1[] = {"run", "--model", m, "--layer", "0", "--input", fifo, "--backend", "cpu",
                        NULL};
    run_refuses_fifo(a1, fifo);
    const char *a2[] = {"run", "--config", fifo, "--weights", w, "--prefix", TINY_PREFIX,
                        "--input", x, "--backend", "cpu", NULL};
    run_refuses_fifo(a2, fifo);
    const char *a3[] = {"run", "--config", cfg, "--weights", fifo, "--prefix", TINY_PREFIX,
                        "--input", x, "--backend", "cpu", NULL};
    run_refuses_fifo(a3, fifo);
    /* each file of a model directory in turn */
    make_fifo(cfg);
    run_refuses_fifo(ok, cfg);
    unlink(cfg);
    write_text(cfg, TINY_CONFIG);
    make_fifo(w);
    run_refuses_fifo(ok, w);

    /* a sharded checkpoint: a shard, then the index */
    char s[512], sx[512], shard[512], idx[512];
    subdir_make(s, sizeof s, dir, "s");
    tiny_model(s, 2, 1);
    const char *ok2[] = {"run", "--model", s, "--layer", "0", "--input",
                         join(sx, sizeof sx, s, "x.safetensors"), "--backend", "cpu", NULL};
    cr_assert_eq(run_cli(out, sizeof out, ok2), 0, "%s", out);
    make_fifo(join(shard, sizeof shard, s, "shard-2.safetensors"));
    run_refuses_fifo(ok2, shard);
    make_fifo(join(idx, sizeof idx, s, "model.safetensors.index.json"));
    run_refuses_fifo(ok2, idx);
    dir_remove(dir);
}

/* A file's bytes (for "unchanged" checks); *len set. */
static char *slurp(const char *path, size_t *len)
{
    char *text, err[512];
    cr_assert_eq(mvk_read_text(path, &text, len, err, sizeof err), 0, "%s", err);
    return text;
}

/* `moevk run ... <opt> <target>` is refused (exit 2) before anything is
 * written, naming the option and the input; `victim` keeps its bytes. */
static void run_refuses_overwrite(const char *const *sel, const char *x, const char *opt,
                                  const char *target, const char *victim, const char *backend)
{
    size_t n0, n1;
    char *before = slurp(victim, &n0), out[8192];
    const char *args[24];
    size_t n = 0;
    args[n++] = "run";
    for (; *sel; sel++)
        args[n++] = *sel;
    const char *tail[] = {"--input", x, opt, target, "--backend", backend, "--check", NULL};
    for (const char *const *t = tail; *t; t++)
        args[n++] = *t;
    args[n] = NULL;
    int st = run_cli_ex(out, sizeof out, args, strcmp(backend, "cpu") != 0, 60, 0);
    char *after = slurp(victim, &n1);
    cr_assert_eq(st, 2, "%s %s over %s: exit %d (-1: a signal)\n%s", opt, target, victim, st,
                 out);
    cr_assert(strstr(out, opt) && strstr(out, target) && strstr(out, "is the same file as"),
              "%s", out);
    cr_assert(n0 == n1 && !memcmp(before, after, n0), "%s %s changed %s", opt, target, victim);
    free(before);
    free(after);
}

Test(model, output_naming_an_input_is_refused, .timeout = 120)
{
    char dir[256], m[512], x[512], w[512], cfg[512], p[512], out[8192];
    dir_make(dir, sizeof dir);
    subdir_make(m, sizeof m, dir, "m");
    tiny_model(m, 3, 0);
    join(x, sizeof x, m, "x.safetensors");
    join(w, sizeof w, m, "model.safetensors");
    join(cfg, sizeof cfg, m, "config.json");
    const char *sel[] = {"--model", m, "--layer", "0", NULL};
    /* the case that crashed: --check reads the mapped weights after y is written */
    run_refuses_overwrite(sel, x, "--output", w, w, "vulkan");
    join(p, sizeof p, m, "./model.safetensors");
    run_refuses_overwrite(sel, x, "--output", p, w, "cpu");
    cr_assert_eq(symlink("model.safetensors", join(p, sizeof p, m, "sym")), 0);
    run_refuses_overwrite(sel, x, "--output", p, w, "cpu");
    cr_assert_eq(link(w, join(p, sizeof p, m, "hard")), 0);
    run_refuses_overwrite(sel, x, "--output", p, w, "cpu");
    run_refuses_overwrite(sel, x, "--stats", p, w, "cpu");
    run_refuses_overwrite(sel, x, "--output", x, x, "cpu");
    run_refuses_overwrite(sel, x, "--output", cfg, cfg, "cpu");
    const char *sel2[] = {"--config", cfg, "--weights", w, "--prefix", TINY_PREFIX, NULL};
    run_refuses_overwrite(sel2, x, "--output", w, w, "cpu");
    /* --output and --stats naming one file */
    const char *both[] = {"run", "--model", m, "--layer", "0", "--input", x, "--output",
                          join(p, sizeof p, dir, "y"), "--stats", p, "--backend", "cpu", NULL};
    write_text(p, "old");
    cr_assert_eq(run_cli(out, sizeof out, both), 2, "%s", out);
    cr_assert(strstr(out, "--stats") && strstr(out, "same file as --output"), "%s", out);

    /* sharded: a shard (opened lazily) and the index */
    char s[512], sx[512];
    subdir_make(s, sizeof s, dir, "s");
    tiny_model(s, 4, 1);
    join(sx, sizeof sx, s, "x.safetensors");
    const char *sel3[] = {"--model", s, "--layer", "0", NULL};
    run_refuses_overwrite(sel3, sx, "--output", join(p, sizeof p, s, "shard-2.safetensors"), p,
                          "cpu");
    run_refuses_overwrite(sel3, sx, "--output",
                          join(p, sizeof p, s, "model.safetensors.index.json"), p, "cpu");
    /* a new file is fine */
    const char *fresh[] = {"run", "--model", s, "--layer", "0", "--input", sx, "--output",
                           join(p, sizeof p, s, "y.safetensors"), "--backend", "cpu", NULL};
    cr_assert_eq(run_cli(out, sizeof out, fresh), 0, "%s", out);
    dir_remove(dir);
}

/* ---- strict JSON: config.json, the index, safetensors headers ---------------- */

static void index_parse(const char *json, size_t len, int want_ok, const char *msg)
{
    mvk_st_set s;
    mvk_st_set_init(&s);
    char err[512] = "";
    if (len == (size_t)-1)
        len = strlen(json);
    int rc = mvk_st_set_parse_index(&s, json, len, "/d", "idx.json", err, sizeof err);
    mvk_st_set_free(&s);
    if (want_ok) {
        cr_assert_eq(rc, 0, "%s: %s", json, err);
        return;
    }
    cr_assert_eq(rc, -1, "accepted: %s", json);
    cr_assert(strstr(err, msg) && strstr(err, "idx.json"), "'%s' does not say '%s'", err, msg);
}

Test(model, json_trailing_bytes_are_refused)
{
    mvk_moe_config c = parse_ok("{\"model_type\": \"mixtral\"} \n\r\t");
    (void)c;
    parse_bad("{\"model_type\": \"mixtral\"} x", "config.json has bytes after its JSON value");
    parse_bad("{\"model_type\": \"mixtral\"}{\"model_type\": \"olmoe\"}", "bytes after");
    parse_bad_n("{\"model_type\": \"mixtral\"}\0", 26, "bytes after its JSON value (at byte 25)");
    index_parse("{\"weight_map\": {\"a\": \"s.safetensors\"}}\n", 39, 1, NULL);
    index_parse("{\"weight_map\": {}} ,", 20, 0, "bytes after its JSON value");
    /* safetensors: "{} trailing" in bad_header_not_json */
}

Test(model, json_duplicate_keys_are_refused)
{
    parse_bad("{\"model_type\": \"mixtral\", \"hidden_size\": 8, \"hidden_size\": 16}",
              "config.json has the key \"hidden_size\" twice in the top-level object");
    parse_bad("{\"model_type\": \"mixtral\", \"rope_scaling\": {\"type\": \"a\", \"factor\": 2,"
              " \"type\": \"b\"}}",
              "key \"type\" twice in object \"rope_scaling\"");
    parse_bad("{\"model_type\": \"mixtral\", \"l\": [1, [{\"a\": 1, \"b\": {}, \"a\": 2}]]}",
              "key \"a\" twice in an object in an array");
    /* the same key spelled with an escape */
    parse_bad("{\"model_type\": \"mixtral\", \"model_typ\\u0065\": \"olmoe\"}",
              "key \"model_type\" twice");
    /* many keys (sorted, not pairwise): one repeated far apart, and none */
    char big[2048];
    size_t o = (size_t)snprintf(big, sizeof big, "{\"model_type\": \"mixtral\"");
    for (int i = 0; i < 60; i++)
        o += (size_t)snprintf(big + o, sizeof big - o, ", \"k%d\": %d", i, i);
    snprintf(big + o, sizeof big - o, "}");
    mvk_moe_config c = parse_ok(big);
    (void)c;
    snprintf(big + o, sizeof big - o, ", \"k3\": 0}");
    parse_bad(big, "key \"k3\" twice in the top-level object");

    index_parse("{\"weight_map\": {\"t\": \"a.safetensors\", \"u\": \"a.safetensors\","
                " \"t\": \"b.safetensors\"}}",
                (size_t)-1, 0, "key \"t\" twice in object \"weight_map\"");
    index_parse("{\"metadata\": {\"total_size\": 1, \"total_size\": 2}, \"weight_map\": {}}",
                (size_t)-1, 0, "key \"total_size\" twice in object \"metadata\"");

    expect_bad("{\"w\": {\"dtype\": \"U8\", \"shape\": [1], \"dtype\": \"F32\","
               " \"data_offsets\": [0, 1]}}",
               0, 1, "header has the key \"dtype\" twice in object \"w\"");
    expect_bad("{\"__metadata__\": {\"format\": \"pt\", \"format\": \"np\"}}", 0, 0,
               "key \"format\" twice in object \"__metadata__\"");
}

Test(model, json_nul_and_raw_control_characters_are_refused)
{
    parse_bad("{\"model_type\": \"mixtral\\u0000x\"}", "NUL character in a string (\\u0000 at byte 23)");
    parse_bad("{\"model_type\": \"mixtral\", \"a\\u0000b\": 1, \"a\\u0000c\": 2}", "NUL");
    parse_bad_n("{\"model_type\": \"mix\0tral\"}", 26, "NUL character");
    parse_bad("{\"model_type\": \"mix\ttral\"}", "control character 0x09 in a string");
    parse_bad("{\x01\"model_type\": \"mixtral\"}", "control character 0x01 outside a string");
    /* an escaped backslash before "u0000" is no NUL */
    mvk_moe_config c = parse_ok("{\"model_type\": \"mixtral\", \"n\": \"a\\\\u0000\\\\\"}");
    (void)c;
    expect_bad("{\"w\\u0000x\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}",
               0, 1, "NUL");
}

/* ---- messages: bytes from files are escaped ---------------------------------- */

/* 1 when s is printable ASCII and newlines only (what an escaped message
 * built from ASCII text and arbitrary bytes must be). */
static int printable_ascii(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\n') || *p > 0x7e)
            return 0;
    return 1;
}

static void esc_is(const char *in, size_t bufsz, const char *want)
{
    char buf[256], twice[256];
    cr_assert_leq(bufsz, sizeof buf);
    cr_assert_str_eq(mvk_esc(in, buf, bufsz), want);
    cr_assert_str_eq(mvk_esc(buf, twice, sizeof twice), buf, "escaping twice changes it");
}

Test(model, escape_helper)
{
    esc_is("plain text, 'quotes' and \\backslash", 256, "plain text, 'quotes' and \\backslash");
    esc_is("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 256, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    esc_is("a\x1b[31mb\n\t\x7f", 256, "a\\x1b[31mb\\x0a\\x09\\x7f");
    esc_is("\xc2\x9b" "2J", 256, "\\xc2\\x9b2J");                   /* C1 control (CSI) */
    esc_is("\xff\xfe" "x", 256, "\\xff\\xfex");                     /* never UTF-8 */
    esc_is("\xc3(", 256, "\\xc3(");                                 /* cut sequence */
    esc_is("end\xe2\x82", 256, "end\\xe2\\x82");
    esc_is("\xc0\xaf\xe0\x80\xaf", 256, "\\xc0\\xaf\\xe0\\x80\\xaf"); /* overlong */
    esc_is("\xed\xa0\x80", 256, "\\xed\\xa0\\x80");                 /* surrogate */
    esc_is("\xf4\x90\x80\x80", 256, "\\xf4\\x90\\x80\\x80");        /* > U+10FFFF */
    /* truncation never splits an escape or a character */
    esc_is("abc\x01", 7, "abc");
    esc_is("abc\x01", 8, "abc\\x01");
    esc_is("a\xc3\xa9", 3, "a");
    char one[1];
    cr_assert_str_eq(mvk_esc("x", one, 1), "");
}

Test(model, messages_escape_bytes_from_files)
{
    /* a tensor name and a dtype with terminal controls and a non-UTF-8 byte */
    char dir[256], path[512], err[512] = "";
    dir_make(dir, sizeof dir);
    join(path, sizeof path, dir, "bad.safetensors");
    raw_file(path, "{\"w\\u001b[2J\xff\": {\"dtype\": \"Q\\u0007\", \"shape\": [1],"
                   " \"data_offsets\": [0, 1]}}", 0, 1);
    mvk_st_file f;
    cr_assert_eq(mvk_st_open(path, &f, err, sizeof err), -1);
    cr_assert(strstr(err, "tensor 'w\\x1b[2J\\xff': unknown dtype 'Q\\x07'"), "%s", err);
    cr_assert(printable_ascii(err), "raw bytes in: %s", err);
    /* config.json */
    parse_bad("{\"model_type\": \"\\u001b]0;title\\u0007\xc3\"}",
              "model_type \"\\x1b]0;title\\x07\\xc3\" is not supported");
    parse_bad("{\"model_type\": \"mixtral\", \"\\u009b\": 1, \"\\u009b\": 2}",
              "has the key \"\\xc2\\x9b\" twice");

    /* through the tool: a path, and a shard name taken from the index */
    char m[512], x[512], bad[512], out[8192];
    subdir_make(m, sizeof m, dir, "m");
    tiny_model(m, 5, 0);
    join(x, sizeof x, m, "x.safetensors");
    join(bad, sizeof bad, m, "y\x1b[2J\xff.safetensors");
    const char *a1[] = {"run", "--model", m, "--layer", "0", "--input", bad, "--backend", "cpu",
                        NULL};
    cr_assert_eq(run_cli(out, sizeof out, a1), 1, "%s", out);
    cr_assert(strstr(out, "y\\x1b[2J\\xff.safetensors") && printable_ascii(out), "%s", out);
    /* an existing input at that path without a tensor 'x' */
    char w[512];
    join(w, sizeof w, m, "model.safetensors");
    size_t n;
    char *bytes = slurp(w, &n);
    write_bytes(bad, bytes, n);
    free(bytes);
    cr_assert_eq(run_cli(out, sizeof out, a1), 1, "%s", out);
    cr_assert(strstr(out, "missing tensor 'x' in") && strstr(out, "y\\x1b[2J\\xff") &&
                  printable_ascii(out),
              "%s", out);
    /* the shard named by the index, and --output echoed back */
    char idx[512];
    write_text(join(idx, sizeof idx, m, "model.safetensors.index.json"),
               "{\"weight_map\": {\"" TINY_PREFIX "gate.weight\": \"sh\\u001bard\xfe\"}}");
    const char *a2[] = {"run", "--model", m, "--layer", "0", "--input", x, "--backend", "cpu",
                        NULL};
    cr_assert_eq(run_cli(out, sizeof out, a2), 1, "%s", out);
    cr_assert(strstr(out, "sh\\x1bard\\xfe") && printable_ascii(out), "%s", out);
    unlink(idx);
    char y[512];
    join(y, sizeof y, m, "y\x07.safetensors");
    const char *a3[] = {"run", "--model", m, "--layer", "0", "--input", x, "--output", y,
                        "--backend", "cpu", NULL};
    cr_assert_eq(run_cli(out, sizeof out, a3), 0, "%s", out);
    cr_assert(strstr(out, "y\\x07.safetensors") && printable_ascii(out), "%s", out);
    dir_remove(dir);
}

/* ---- non-finite values: warned about, and compared by class ----------------- */

/* The number after `label` in out (NAN when absent). */
static double number_after(const char *out, const char *label)
{
    const char *p = strstr(out, label);
    double v;
    return p && sscanf(p + strlen(label), "%lf", &v) == 1 ? v : NAN;
}

Test(model, non_finite_values_are_reported_and_compared_by_class)
{
    e2e t;
    e2e_begin(&t, 11);
    const uint32_t H = 8, F = 4, E = 2, K = 1, T = 12;
    canon c;
    canon_make(&c, &t.rng, H, F, E, K, 0, MOEVK_DTYPE_F32, MOEVK_DTYPE_F32, MOEVK_DTYPE_F32, 0);
    tlist *l = tl_new();
    add_block(l, &c, TINY_PREFIX, LAY_W123, SHARED_NONE);
    char w[512], out[16384];
    tl_write(l, join(w, sizeof w, t.dir, "model.safetensors"), 0, l->n);
    tl_free(l);
    write_text(t.cfg, TINY_CONFIG);
    float *x = write_x(&t.rng, t.x, MOEVK_DTYPE_F32, 2, SH(T, H));
    const char *run_cpu[] = {"run", "--model", t.dir, "--layer", "0", "--input", t.x,
                             "--backend", "cpu", NULL};
    cr_assert_eq(run_cli_ex(out, sizeof out, run_cpu, 0, 60, 1), 0, "%s", out);
    cr_assert_null(strstr(out, "non-finite"), "finite inputs: %s", out);

    /* a NaN in x; an Inf in expert 0's up matrix, a NaN in expert 1's down */
    x[3] = NAN;
    c.up[5] = INFINITY;                   /* expert 0, row f = 0, column h = 5 */
    c.down[((size_t)1 * H + 2) * F + 1] = NAN; /* expert 1, row h = 2, column f = 1 */
    l = tl_new();
    add_block(l, &c, TINY_PREFIX, LAY_W123, SHARED_NONE);
    tl_write(l, w, 0, l->n);
    tl_free(l);
    l = tl_new();
    tl_add(l, MOEVK_DTYPE_F32, 2, SH(T, H), x, "x");
    tl_write(l, t.x, 0, 1);
    tl_free(l);
    moevk_layer_desc d = canon_desc(&c);
    d.norm_topk_prob = 1;
    uint8_t *near;
    float *y = expect_ref(&d, x, T, &near);
    unsigned long long ny = 0, ny_compared = 0;
    for (size_t i = 0; i < (size_t)T * H; i++) {
        ny += !isfinite(y[i]);
        ny_compared += !isfinite(y[i]) && !near[i / H];
    }
    cr_assert_gt(ny, H, "the planted values should reach more than one token");

    cr_assert_eq(run_cli_ex(out, sizeof out, run_cpu, 0, 60, 1), 0, "%s", out);
    char want[256];
    cr_assert(strstr(out, "warning: x holds 1 non-finite value (NaN or Inf) in 1 of 12 tokens"),
              "%s", out);
    cr_assert(strstr(out, "warning: the weights hold 2 non-finite values (NaN or Inf), the "
                          "first in the up matrix of expert 0"),
              "%s", out);
    snprintf(want, sizeof want, "warning: y holds %llu non-finite values (NaN or Inf)", ny);
    cr_assert(strstr(out, want), "want '%s':\n%s", want, out);

    /* --check: NaN/Inf positions must agree, the L2 error is over the rest */
    const char *run_vk[] = {"run", "--model", t.dir, "--layer", "0", "--input", t.x,
                            "--check", "--validate", NULL};
    int st = run_cli_env(out, sizeof out, run_vk, 1);
    if (!(st != 0 && no_vulkan_device(out))) {
        cr_assert_eq(st, 0, "%s", out);
        snprintf(want, sizeof want,
                 "non-finite values: %llu in the reference, 0 positions where the result "
                 "differs",
                 ny_compared);
        cr_assert(strstr(out, want), "want '%s':\n%s", want, out);
        double rel = number_after(out, "relative L2 error ");
        cr_assert(rel <= 1e-5, "relative L2 error %g over the finite values:\n%s", rel, out);
        unsigned long long kept = 0;
        for (uint32_t i = 0; i < T; i++)
            kept += !near[i];
        snprintf(want, sizeof want, "over %llu values finite in both", kept * H - ny_compared);
        cr_assert(strstr(out, want), "want '%s':\n%s", want, out);
    }
    free(x);
    free(y);
    free(near);
    canon_free(&c);
    dir_remove(t.dir);
}

/* ---- transformers as the oracle ------------------------------------------------ */

/* Whether the architecture of DIR/config.json has an encoder and a decoder
 * stack (`--decoder`). */
static int has_decoder_stack(const char *dir)
{
    char path[800], err[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    char *buf = malloc(1 << 16);
    cr_assert_not_null(buf);
    size_t n = fread(buf, 1, 1 << 16, f);
    fclose(f);
    mvk_moe_config c;
    cr_assert_eq(mvk_hf_config_parse(buf, n, path, &c, err, sizeof err), 0, "%s", err);
    const int d = mvk_arch_has_decoder(c.arch);
    mvk_hf_config_free(&c);
    free(buf);
    return d;
}

/* tests/fixtures/hf_blocks (tests/fixtures/make_hf_blocks.py, run by hand
 * with transformers and torch): `moevk info --model DIR` lists its MoE
 * layer; a tiny checkpoint per MoE block type,
 * config.json as save_pretrained wrote it, and transformers' own output of
 * the block in float64. `moevk run` on the CPU reference and on Vulkan
 * (validated) must give it within 1e-5 (f32 activations; the reference
 * within 1e-6). A block in a decoder stack (a "decoder" part in the prefix,
 * fixtures.txt's fourth column: switch_transformers) runs with --decoder;
 * `moevk info` lists the encoder's layers and says so. A fifth column names
 * the part of the checkpoint the block is in (--part: Qwen3-Omni-MoE's
 * talker, dots3-note's vision encoder, ERNIE-4.5-VL's vision tokens). */
Test(model, transformers_blocks_give_their_own_output, .timeout = 300)
{
    const char *root = getenv("MOEVK_FIXTURES");
    cr_assert(root && *root, "MOEVK_FIXTURES is not set");
    char list[512], line[512];
    snprintf(list, sizeof list, "%s/hf_blocks/fixtures.txt", root);
    FILE *f = fopen(list, "r");
    cr_assert_not_null(f, "%s: %s", list, strerror(errno));
    char tmp[] = "/tmp/moevk-hfblocks-XXXXXX";
    cr_assert_not_null(mkdtemp(tmp));
    int rows = 0;
    /* every fixture on the reference; on Vulkan every one, or with
     * MOEVK_TEST_CASES_SCALE below 1 (the sanitizer and second-driver passes,
     * after a first pass ran them all) every 1/scale-th */
    const int stride = 100 / mvkt_scaled(100, 1);
    while (fgets(line, sizeof line, f)) {
        char name[128], prefix[256] = "", part_col[64] = "";
        unsigned layer;
        if (sscanf(line, "%127s %u %*s %255s %63s", name, &layer, prefix, part_col) < 2)
            continue;
        char dir[700], xpath[800], want[800], lay[16];
        snprintf(dir, sizeof dir, "%s/hf_blocks/%s", root, name);
        /* a decoder stack's block of an encoder-decoder (not DiffusionGemma's
         * decoder, whose layers are its only MoE stack in moevk) */
        const int decoder = (!strncmp(prefix, "decoder.", 8) || strstr(prefix, ".decoder.")) &&
                            has_decoder_stack(dir);
        snprintf(xpath, sizeof xpath, "%s/x.safetensors", dir);
        snprintf(want, sizeof want, "%s/y.safetensors", dir);
        snprintf(lay, sizeof lay, "%u", layer);
        const char *part = *part_col ? part_col : NULL; /* --part */
        /* moevk info --model DIR: the layer, its shape and sizes */
        char iout[4096];
        const char *iargs[] = {"info", "--model", dir, part ? "--part" : NULL, part, NULL};
        cr_assert_eq(run_cli(iout, sizeof iout, iargs), 0, "%s: moevk info:\n%s", name, iout);
        char want_layer[40];
        snprintf(want_layer, sizeof want_layer, "layer %u   MoE  H=%s", layer,
                 !strncmp(prefix, "model.vision_tower.", 19) ? "32" : "64");
        if (decoder)
            cr_assert(strstr(iout, "(the encoder's; decoder: run --decoder)"),
                      "%s: moevk info --model:\n%s", name, iout);
        else
            cr_assert(strstr(iout, want_layer) && strstr(iout, "q4_k") &&
                          strstr(iout, "total    1 MoE layer"),
                      "%s: moevk info --model:\n%s", name, iout);
        static const char *const backends[] = {"cpu", "vulkan"};
        for (int b = 0; b < (rows % stride == 0 ? 2 : 1); b++) {
            char ypath[600], out[16384];
            snprintf(ypath, sizeof ypath, "%s/y.safetensors", tmp);
            const char *args[16] = {"run", "--model", dir, "--layer", lay, "--input", xpath,
                                    "--output", ypath, "--backend", backends[b]};
            int na = 11;
            if (decoder)
                args[na++] = "--decoder";
            if (part) {
                args[na++] = "--part";
                args[na++] = part;
            }
            if (b)
                args[na++] = "--validate";
            int st = run_cli_env(out, sizeof out, args, b != 0);
            if (b == 1 && st != 0 && no_vulkan_device(out))
                continue;
            cr_assert_eq(st, 0, "%s on %s: exit %d\n%s", name, backends[b], st, out);
            size_t n;
            const double rel = mvkt_rel_to_expected(ypath, want, &n), tol = b ? 1e-5 : 1e-6;
            cr_assert_leq(rel, tol, "%s on %s: relative L2 %.3g against transformers over %zu "
                          "values", name, backends[b], rel, n);
            remove(ypath);
        }
        rows++;
    }
    fclose(f);
    rmdir(tmp);
    cr_assert_geq(rows, 10, "%d fixtures listed", rows);
}
