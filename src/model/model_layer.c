/*
 * A checkpoint's MoE block described as a moevk_layer_desc (layouts and
 * conversions: model_layer.h).
 */
#include "model_layer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "hf_quant.h"
#include "model_util.h"
#include "ref/ref.h"

/* ---- element conversion ------------------------------------------------- */

static float load_f32(const uint8_t *p, int dtype)
{
    uint16_t h;
    float f;
    switch (dtype) {
    case MOEVK_DTYPE_F32:
        memcpy(&f, p, 4);
        return f;
    case MOEVK_DTYPE_F16:
        memcpy(&h, p, 2);
        return moevk_half_to_float(h);
    case MOEVK_DTYPE_BF16:
        memcpy(&h, p, 2);
        return moevk_bf16_to_float(h);
    default:
        return NAN;
    }
}

void mvk_model_to_f32(const void *src, int dtype, size_t n, float *dst)
{
    const uint8_t *s = src;
    size_t es = moevk_dtype_size((moevk_dtype)dtype);
    if (dtype == MOEVK_DTYPE_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = load_f32(s + i * es, dtype);
}

uint64_t mvk_model_count_nonfinite(const void *src, int dtype, size_t n)
{
    const uint8_t *p = src;
    uint64_t c = 0;
    const mvk_format *f = mvk_format_get((moevk_dtype)dtype);
    if (f && f->block_elems > 1) {
        /* block formats: decode each block (n is whole blocks) */
        float v[256];
        for (size_t b = 0; b < n / f->block_elems; b++) {
            f->decode(p + b * f->block_bytes, 1, v);
            for (uint32_t i = 0; i < f->block_elems; i++)
                c += !isfinite(v[i]);
        }
        return c;
    }
    if (dtype == MOEVK_DTYPE_F32) {
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            c += (u & 0x7f800000u) == 0x7f800000u; /* exponent all ones */
        }
        return c;
    }
    const uint16_t mask = dtype == MOEVK_DTYPE_F16 ? 0x7c00u : 0x7f80u;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        c += (h & mask) == mask;
    }
    return c;
}

/* dst[di] (of dtype dt) = src element si (of dtype sdt); dt is sdt or f32. */
static inline void put(uint8_t *dst, size_t di, int dt, const uint8_t *src, size_t si, int sdt)
{
    if (dt == sdt) {
        size_t es = moevk_dtype_size((moevk_dtype)dt);
        memcpy(dst + di * es, src + si * es, es);
    } else {
        float f = load_f32(src + si * moevk_dtype_size((moevk_dtype)sdt), sdt);
        memcpy(dst + di * 4, &f, 4);
    }
}

/* ---- building ------------------------------------------------------------ */

typedef enum view_kind {
    V_DIRECT,   /* rows x cols contiguous from element `off` of t           */
    V_PACKED,   /* rows of blocks repacked from a quantised matrix (packed) */
    V_OSS_GATE, /* gpt-oss [E, H, 2F]: out[f][h] = t[e][h][2f]              */
    V_OSS_UP,   /*                      out[f][h] = t[e][h][2f + 1]         */
    V_OSS_DOWN, /* gpt-oss [E, F, H], DBRX [E·F, H]: out[h][f] = t[e][f][h] */
    V_TCAT_GATE, /* Llama 4 [E, H, 2F]: out[f][h] = t[e][h][f]               */
    V_TCAT_UP,   /*                     out[f][h] = t[e][h][F + f]           */
} view_kind;

typedef struct mview {
    const mvk_st_tensor *t;
    view_kind kind;
    uint64_t off;
    uint32_t expert;
    const void *packed;       /* V_PACKED: rows of pdtype blocks (owned) */
    int pdtype;
    const uint32_t *row_perm; /* NULL, or row r is the source's row row_perm[r] */
} mview;

typedef struct bctx {
    mvk_st_set *set;
    const char *prefix;
    const mvk_moe_config *c;
    mvk_model_layer *L;
    char *err;
    size_t errsz;
} bctx;

int mvk_model_layer_adopt(mvk_model_layer *L, void *p)
{
    if (!p)
        return 0;
    if (L->nowned == L->capowned) {
        size_t cap = L->capowned ? L->capowned * 2 : 16;
        void **n = realloc(L->owned, cap * sizeof(*n));
        if (!n) {
            free(p);
            return -1;
        }
        L->owned = n;
        L->capowned = cap;
    }
    L->owned[L->nowned++] = p;
    return 0;
}

void *mvk_model_layer_own(mvk_model_layer *L, size_t size)
{
    void *p = calloc(1, size ? size : 1);
    return p && mvk_model_layer_adopt(L, p) == 0 ? p : NULL;
}

static void *own(mvk_model_layer *L, size_t size)
{
    return mvk_model_layer_own(L, size);
}

static int adopt(mvk_model_layer *L, void *p)
{
    return mvk_model_layer_adopt(L, p);
}

static int oom(bctx *b)
{
    return mvk_errf(b->err, b->errsz, "out of host memory building the layer");
}

/* The tensor name prefix + pattern, "{i}" in it replaced by i. A pattern
 * "../rest" is rest beside the block: under the prefix less its last
 * component ("model.layers.3.block_sparse_moe." -> "model.layers.3."). */
static const char *tensor_name(const bctx *b, const char *pattern, uint32_t i, char *name,
                               size_t namesz)
{
    char up[MVK_PREFIX_LEN + 8];
    const char *prefix = b->prefix;
    if (pattern && !strncmp(pattern, "../", 3)) {
        size_t l = strlen(prefix);
        if (l && prefix[l - 1] == '.')
            l--;
        while (l && prefix[l - 1] != '.')
            l--;
        snprintf(up, sizeof up, "%.*s", (int)(l < MVK_PREFIX_LEN ? l : MVK_PREFIX_LEN), prefix);
        prefix = up;
        pattern += 3;
    }
    if (mvk_arch_expand(name, namesz, prefix, pattern, i))
        snprintf(name, namesz, "%s%s", prefix, pattern ? pattern : ""); /* too long */
    return name;
}

static int has(bctx *b, const char *pattern, uint32_t i)
{
    char name[512];
    return mvk_st_set_has(b->set, tensor_name(b, pattern, i, name, sizeof name));
}

/* The tensor prefix + pattern (expert i), of a float dtype and the expected
 * shape (ndim dims of `want`, described as `dims`, e.g. "[E, H]"). */
static const mvk_st_tensor *need(bctx *b, const char *pattern, uint32_t i, uint32_t ndim,
                                 const uint64_t *want, const char *dims)
{
    char name[512];
    tensor_name(b, pattern, i, name, sizeof name);
    const mvk_st_tensor *t = mvk_st_set_find(b->set, name, b->err, b->errsz);
    if (!t)
        return NULL;
    if (t->dtype < 0) {
        mvk_errf(b->err, b->errsz,
                 "tensor '%s' has unsupported dtype %s (moevk reads F32, F16 and BF16)", name,
                 t->dtype_name);
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (uint32_t k = 0; ok && k < ndim; k++)
        ok = t->shape[k] == want[k];
    if (!ok) {
        char got[160], exp[160];
        mvk_errf(b->err, b->errsz,
                 "tensor '%s' has shape %s, expected %s = %s from config.json (E experts, H "
                 "hidden size, F expert intermediate size)",
                 name, mvk_shape_str(t->shape, t->ndim, got, sizeof got), dims,
                 mvk_shape_str(want, ndim, exp, sizeof exp));
        return NULL;
    }
    return t;
}

/* A checkpoint name less its ".weight" (the base of a quantised matrix's
 * tensors); 0 when it does not end so. */
static int quant_base(const char *name, char *base, size_t n)
{
    size_t l = strlen(name);
    if (l < 7 || strcmp(name + l - 7, ".weight") || l - 7 >= n)
        return 0;
    memcpy(base, name, l - 7);
    base[l - 7] = 0;
    return 1;
}

/* Whether prefix + pattern (expert i) is a quantised matrix (with its
 * base name in base). */
static int is_quantized(bctx *b, const char *pattern, uint32_t i, char *base, size_t n)
{
    char name[512];
    if (!b->c->quant.method)
        return 0;
    tensor_name(b, pattern, i, name, sizeof name);
    return quant_base(name, base, n) && mvk_hfq_is_quantized(&b->c->quant, b->set, base);
}

/* A matrix prefix + pattern (expert i) is there: float or quantised. */
static int has_matrix(bctx *b, const char *pattern, uint32_t i)
{
    char base[512];
    return has(b, pattern, i) || is_quantized(b, pattern, i, base, sizeof base);
}

/* The [rows, cols] matrix prefix + pattern (expert i): a float tensor of
 * that shape (need), or a quantised one repacked into its block format.
 * order non-NULL: its columns in that order (act-order GPTQ); else perm
 * non-NULL: its input axis may be reordered, and the order chosen, if
 * any, goes to *perm (owned by the layer). */
static int load_matrix(bctx *b, const char *pattern, uint32_t i, uint64_t rows, uint64_t cols,
                       const char *dims, const uint32_t *order, uint32_t **perm, mview *v)
{
    char base[512];
    if (perm)
        *perm = NULL;
    if (!is_quantized(b, pattern, i, base, sizeof base)) {
        v->t = need(b, pattern, i, 2, (const uint64_t[]){rows, cols}, dims);
        return v->t ? 0 : -1;
    }
    mvk_hfq_matrix m;
    if (mvk_hfq_load(&b->c->quant, b->set, base, rows, cols, perm != NULL, order, &m, b->err,
                     b->errsz))
        return -1;
    uint32_t *cp = m.col_perm;
    if (adopt(b->L, m.blocks)) {
        free(cp);
        return oom(b);
    }
    if (adopt(b->L, cp))
        return oom(b);
    v->kind = V_PACKED;
    v->t = NULL;
    v->packed = m.blocks;
    v->pdtype = m.dtype;
    if (perm)
        *perm = cp;
    if (!b->L->quant[0]) {
        mvk_hfq_describe(&b->c->quant, b->L->quant, sizeof b->L->quant);
    }
    return 0;
}

/* Append a note to the layer's description of its quantisation (once). */
static void quant_note(bctx *b, const char *note)
{
    size_t l = strlen(b->L->quant);
    if (!strstr(b->L->quant, note))
        snprintf(b->L->quant + l, sizeof b->L->quant - l, "; %s", note);
}

/* The gate (NULL pattern: none) and up projections [F, H] of expert i,
 * which read the same input: in act-order GPTQ each is repacked in the
 * input order that sorts one of them by group (the other must fit it),
 * returned in *xperm (NULL: the checkpoint's order). */
static int gate_up(bctx *b, const char *gp, const char *up, uint32_t i, uint64_t F, uint64_t H,
                   const char *dims, mview *g, mview *u, uint32_t **xperm)
{
    uint32_t *pg = NULL, *pu = NULL;
    *xperm = NULL;
    if (gp && load_matrix(b, gp, i, F, H, dims, NULL, &pg, g))
        return -1;
    if (load_matrix(b, up, i, F, H, dims, pg, pg ? NULL : &pu, u))
        return -1;
    if (pu && gp && load_matrix(b, gp, i, F, H, dims, pu, NULL, g)) /* the gate follows */
        return -1;
    uint32_t *x = pg ? pg : pu;
    if (x && ((gp && g->kind != V_PACKED) || u->kind != V_PACKED))
        return mvk_errf(b->err, b->errsz,
                        "expert %u: one of its gate and up projections is act-order GPTQ, the "
                        "other a float tensor: they must take one input order",
                        i);
    *xperm = x;
    return 0;
}

/* A quantised router or gate [rows, cols] dequantised to f32 (owned), or
 * *out NULL when the tensor is a float one. */
static int quantized_f32(bctx *b, const char *pattern, uint64_t rows, uint64_t cols, float **out)
{
    char base[512];
    *out = NULL;
    if (!is_quantized(b, pattern, 0, base, sizeof base))
        return 0;
    if (mvk_hfq_load_f32(&b->c->quant, b->set, base, rows, cols, out, b->err, b->errsz))
        return -1;
    if (adopt(b->L, *out)) {
        *out = NULL;
        return oom(b);
    }
    return 0;
}

#define SHAPE(...) ((const uint64_t[]){__VA_ARGS__})

/* A per-expert vector: [E], or [1, E] as ERNIE-4.5 stores its correction
 * bias. */
static const mvk_st_tensor *need_vector(bctx *b, const char *pattern, uint32_t E)
{
    char name[512];
    tensor_name(b, pattern, 0, name, sizeof name);
    const mvk_st_tensor *t = mvk_st_set_find(b->set, name, b->err, b->errsz);
    if (t && t->ndim == 2 && t->shape[0] == 1)
        return need(b, pattern, 0, 2, SHAPE(1, E), "[1, E]");
    return t ? need(b, pattern, 0, 1, SHAPE(E), "[E]") : NULL;
}

/* An f32 copy of a whole (small) tensor: biases. */
static float *f32_copy(bctx *b, const mvk_st_tensor *t)
{
    float *p = own(b->L, (size_t)t->numel * 4);
    if (!p) {
        oom(b);
        return NULL;
    }
    mvk_model_to_f32(t->data, t->dtype, (size_t)t->numel, p);
    return p;
}

/* A canonical [rows, cols] matrix of dtype `dt` for a view: a pointer into
 * the map when possible, else an owned copy. */
static const void *materialize(bctx *b, const mview *v, uint64_t rows, uint64_t cols, int dt)
{
    if (v->kind == V_PACKED) {
        /* repacked blocks: as they are, rows reordered, or decoded to f32
         * (a file that mixes dtypes) */
        const size_t prb = (size_t)moevk_dtype_row_bytes((moevk_dtype)v->pdtype, cols);
        if (dt == v->pdtype && !v->row_perm)
            return v->packed;
        const size_t orb = dt == v->pdtype ? prb : (size_t)cols * 4;
        uint8_t *dst = own(b->L, (size_t)rows * orb);
        if (!dst) {
            oom(b);
            return NULL;
        }
        for (size_t r = 0; r < rows; r++) {
            const uint8_t *src = (const uint8_t *)v->packed + (v->row_perm ? v->row_perm[r] : r) * prb;
            if (dt == v->pdtype)
                memcpy(dst + r * orb, src, prb);
            else
                mvk_format_decode((moevk_dtype)v->pdtype, src, 0, cols, (float *)(dst + r * orb));
        }
        return dst;
    }
    const mvk_st_tensor *t = v->t;
    size_t es = moevk_dtype_size((moevk_dtype)dt), ses = moevk_dtype_size((moevk_dtype)t->dtype);
    size_t n = (size_t)(rows * cols);
    if (v->kind == V_DIRECT && v->row_perm) {
        const uint8_t *src = t->data + v->off * ses;
        uint8_t *dst = own(b->L, n * es);
        if (!dst) {
            oom(b);
            return NULL;
        }
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < cols; c++)
                put(dst, r * cols + c, dt, src, v->row_perm[r] * cols + c, t->dtype);
        return dst;
    }
    if (v->kind == V_DIRECT) {
        const uint8_t *src = t->data + v->off * ses;
        if (t->dtype == dt && ((uintptr_t)src % es) == 0)
            return src;
        uint8_t *dst = own(b->L, n * es);
        if (!dst) {
            oom(b);
            return NULL;
        }
        if (t->dtype == dt)
            memcpy(dst, src, n * es);
        else
            for (size_t i = 0; i < n; i++)
                put(dst, i, dt, src, i, t->dtype);
        return dst;
    }
    uint8_t *dst = own(b->L, n * es);
    if (!dst) {
        oom(b);
        return NULL;
    }
    const uint64_t E = t->shape[0];
    (void)E;
    const size_t B = 64;
    if (v->kind == V_OSS_DOWN) {
        /* t [E, F, H] -> out [H, F]: out[h][f] = t[e][f][h]; rows = H, cols = F */
        const uint64_t H = rows, F = cols;
        const uint8_t *src = t->data + (size_t)v->expert * F * H * ses;
        for (size_t f0 = 0; f0 < F; f0 += B)
            for (size_t h0 = 0; h0 < H; h0 += B)
                for (size_t f = f0; f < f0 + B && f < F; f++)
                    for (size_t h = h0; h < h0 + B && h < H; h++)
                        put(dst, h * F + f, dt, src, f * H + h, t->dtype);
        return dst;
    }
    /* t [E, H, 2F] -> out [F, H]: out[f][h] = t[e][h][2f + parity]
     * (interleaved), t[e][h][half F + f] (concatenated) */
    const uint64_t F = rows, H = cols;
    const size_t parity = v->kind == V_OSS_UP;
    const int cat = v->kind == V_TCAT_GATE || v->kind == V_TCAT_UP;
    const size_t half = v->kind == V_TCAT_UP ? F : 0;
    const uint8_t *src = t->data + (size_t)v->expert * H * 2 * F * ses;
    for (size_t h0 = 0; h0 < H; h0 += B)
        for (size_t f0 = 0; f0 < F; f0 += B)
            for (size_t h = h0; h < h0 + B && h < H; h++)
                for (size_t f = f0; f < f0 + B && f < F; f++)
                    put(dst, f * H + h, dt, src,
                        h * 2 * F + (cat ? half + f : 2 * f + parity), t->dtype);
    return dst;
}

static const void **ptr_array(bctx *b, uint32_t n)
{
    const void **p = own(b->L, (size_t)n * sizeof(void *));
    if (!p)
        oom(b);
    return p;
}

typedef struct expert_views {
    mview *gate, *up, *down; /* count each; gate NULL for non-gated */
    uint32_t count;
    uint64_t ffn;
} expert_views;

/* Fill desc weights (pointer arrays) for a set of views. */
static int emit(bctx *b, const expert_views *ev, int dt, moevk_expert_weights *w)
{
    const uint64_t H = b->c->hidden, F = ev->ffn;
    const void **g = NULL, **u = ptr_array(b, ev->count), **d = ptr_array(b, ev->count);
    if (ev->gate && !(g = ptr_array(b, ev->count)))
        return -1;
    if (!u || !d)
        return -1;
    for (uint32_t i = 0; i < ev->count; i++) {
        if (ev->gate && !(g[i] = materialize(b, &ev->gate[i], F, H, dt)))
            return -1;
        if (!(u[i] = materialize(b, &ev->up[i], F, H, dt)))
            return -1;
        if (!(d[i] = materialize(b, &ev->down[i], H, F, dt)))
            return -1;
    }
    w->gate_experts = g;
    w->up_experts = u;
    w->down_experts = d;
    return 0;
}

static mview *views(bctx *b, uint32_t n)
{
    mview *v = own(b->L, (size_t)n * sizeof(mview));
    if (!v)
        oom(b);
    else
        memset(v, 0, (size_t)n * sizeof(mview));
    return v;
}

/* E experts of width F: their up and down views, and gate views when gated. */
static int set_views(bctx *b, expert_views *ev, uint32_t E, uint64_t F, int gated)
{
    ev->count = E;
    ev->ffn = F;
    ev->gate = gated ? views(b, E) : NULL;
    ev->up = views(b, E);
    ev->down = views(b, E);
    return !ev->up || !ev->down || (gated && !ev->gate) ? -1 : 0;
}

/* Per-expert tensors: the layout's gate, up and down patterns (gate NULL:
 * non-gated). */
static int per_expert(bctx *b, const mvk_arch_layout *lay, expert_views *ev)
{
    const uint32_t E = b->c->num_experts;
    const uint64_t H = b->c->hidden, F = b->c->ffn;
    if (set_views(b, ev, E, F, lay->gate != NULL))
        return -1;
    if (b->c->quant.method) {
        /* down first: an act-order down projection reorders the gate/up rows */
        uint32_t **perms = own(b->L, sizeof(uint32_t *) * E);
        if (!perms)
            return oom(b);
        memset(perms, 0, sizeof(uint32_t *) * E);
        b->L->ffn_perm = perms;
        uint32_t *xin = NULL; /* [E, H]: each expert's gate/up input order */
        for (uint32_t i = 0; i < E; i++) {
            uint32_t *xp;
            if (load_matrix(b, lay->down, i, H, F, "[H, F]", NULL, &perms[i], &ev->down[i]) ||
                gate_up(b, lay->gate, lay->up, i, F, H, "[F, H]", lay->gate ? &ev->gate[i] : NULL,
                        &ev->up[i], &xp))
                return -1;
            ev->up[i].row_perm = perms[i];
            if (lay->gate)
                ev->gate[i].row_perm = perms[i];
            if (perms[i])
                quant_note(b, "down inputs sorted by group, gate/up rows alike");
            if (!xp)
                continue;
            if (!xin) {
                if (!(xin = own(b->L, sizeof(uint32_t) * (size_t)E * H)))
                    return oom(b);
                for (size_t k = 0; k < (size_t)E * H; k++)
                    xin[k] = (uint32_t)(k % H);
            }
            memcpy(xin + (size_t)i * H, xp, sizeof(uint32_t) * H);
            quant_note(b, "gate/up inputs sorted by group (input_perm)");
        }
        b->L->desc.experts.input_perm = xin;
        return 0;
    }
    for (uint32_t i = 0; i < E; i++) {
        if (lay->gate && !(ev->gate[i].t = need(b, lay->gate, i, 2, SHAPE(F, H), "[F, H]")))
            return -1;
        if (!(ev->up[i].t = need(b, lay->up, i, 2, SHAPE(F, H), "[F, H]")))
            return -1;
        if (!(ev->down[i].t = need(b, lay->down, i, 2, SHAPE(H, F), "[H, F]")))
            return -1;
    }
    return 0;
}

/* Inkling's S shared experts, stacked: gate and up [S, F, H], down [S, H,
 * F] (F the routed width), passed zero-copy. */
static int sink_shared_experts(bctx *b, const char *const names[3], uint32_t S,
                               expert_views *ev)
{
    const uint64_t H = b->c->hidden, F = b->c->shared_ffn;
    ev->count = S; /* (a quantised checkpoint was refused with the router) */
    ev->ffn = F;
    ev->gate = views(b, S);
    ev->up = views(b, S);
    ev->down = views(b, S);
    if (!ev->gate || !ev->up || !ev->down)
        return -1;
    const mvk_st_tensor *g = need(b, names[0], 0, 3, SHAPE(S, F, H), "[n_shared, F, H]");
    const mvk_st_tensor *u = g ? need(b, names[1], 0, 3, SHAPE(S, F, H), "[n_shared, F, H]")
                               : NULL;
    const mvk_st_tensor *d = u ? need(b, names[2], 0, 3, SHAPE(S, H, F), "[n_shared, H, F]")
                               : NULL;
    if (!d)
        return -1;
    for (uint32_t i = 0; i < S; i++) {
        ev->gate[i] = (mview){.t = g, .kind = V_DIRECT, .off = i * F * H};
        ev->up[i] = (mview){.t = u, .kind = V_DIRECT, .off = i * F * H};
        ev->down[i] = (mview){.t = d, .kind = V_DIRECT, .off = i * H * F};
    }
    return 0;
}

/* One shared expert: the architecture's shared gate, up and down names. */
static int shared_expert(bctx *b, const char *const names[3], expert_views *ev)
{
    const uint64_t H = b->c->hidden, F = b->c->shared_ffn;
    /* a non-gated FFN (relu^2: Nemotron-H) has no gate */
    const int gated = moevk_activation_is_gated(b->c->activation);
    ev->count = 1;
    ev->ffn = F;
    ev->gate = gated ? views(b, 1) : NULL;
    ev->up = views(b, 1);
    ev->down = views(b, 1);
    if ((gated && !ev->gate) || !ev->up || !ev->down)
        return -1;
    if ((gated && !names[0]) || !names[1] || !names[2])
        return mvk_errf(b->err, b->errsz, "%s has a shared expert but no names for its tensors",
                        mvk_arch_name(b->c->arch));
    if (b->c->quant.method && !gated)
        return mvk_errf(b->err, b->errsz,
                        "%s: a quantised checkpoint with a non-gated shared expert is not "
                        "supported",
                        mvk_arch_name(b->c->arch));
    if (b->c->quant.method && gated && names[0] && names[1] && !strcmp(names[0], names[1]))
        return mvk_errf(b->err, b->errsz,
                        "%s: a quantised checkpoint with the shared expert's gate and up in one "
                        "tensor is not supported",
                        mvk_arch_name(b->c->arch));
    if (b->c->quant.method) {
        uint32_t *perm, *xp;
        if (load_matrix(b, names[2], 0, H, F, "[H, shared F]", NULL, &perm, &ev->down[0]) ||
            gate_up(b, names[0], names[1], 0, F, H, "[shared F, H]", &ev->gate[0], &ev->up[0],
                    &xp))
            return -1;
        ev->gate[0].row_perm = ev->up[0].row_perm = b->L->shared_ffn_perm = perm;
        b->L->desc.shared.input_perm = xp;
        if (perm)
            quant_note(b, "down inputs sorted by group, gate/up rows alike");
        if (xp)
            quant_note(b, "gate/up inputs sorted by group (input_perm)");
        return 0;
    }
    if (gated && names[0] && names[1] && !strcmp(names[0], names[1])) {
        /* one [2F, H] tensor: the F gate rows, then the F up rows (Granite's
         * input_linear) */
        const mvk_st_tensor *gu = need(b, names[0], 0, 2, SHAPE(2 * F, H), "[2 x shared F, H]");
        if (!gu)
            return -1;
        ev->gate[0] = (mview){.t = gu, .kind = V_DIRECT};
        ev->up[0] = (mview){.t = gu, .kind = V_DIRECT, .off = F * H};
        return (ev->down[0].t = need(b, names[2], 0, 2, SHAPE(H, F), "[H, shared F]")) ? 0 : -1;
    }
    if (gated && !(ev->gate[0].t = need(b, names[0], 0, 2, SHAPE(F, H), "[shared F, H]")))
        return -1;
    if (!(ev->up[0].t = need(b, names[1], 0, 2, SHAPE(F, H), "[shared F, H]")))
        return -1;
    if (!(ev->down[0].t = need(b, names[2], 0, 2, SHAPE(H, F), "[H, shared F]")))
        return -1;
    return 0;
}

/* The tensor whose presence selects a layout: expert 0's gate (up when not
 * gated), or the stacked gate_up. */
static const char *layout_probe(const mvk_arch_layout *lay)
{
    return lay->gate ? lay->gate : lay->up;
}

/* No layout's first tensor is there: name each readable layout's, the
 * per-expert ones first ("missing tensor 'P.experts.0.w1.weight' (nor
 * 'P.experts.0.gate_proj.weight' or the stacked 'P.experts.gate_up_proj')"). */
static int missing_layout(bctx *b)
{
    const mvk_arch *a = b->c->arch;
    const mvk_arch_layout *lays[MVK_ARCH_LAYOUTS];
    size_t n = 0;
    for (int stacked = 0; stacked < 2; stacked++)
        for (size_t i = 0; i < MVK_ARCH_LAYOUTS && a->layouts[i]; i++)
            if (a->layouts[i]->kind != MVK_LAYOUT_REFUSED &&
                (a->layouts[i]->kind != MVK_LAYOUT_PER_EXPERT) == stacked)
                lays[n++] = a->layouts[i];
    if (!n)
        return mvk_errf(b->err, b->errsz, "%s has no expert layout", mvk_arch_name(a));
    char msg[1536], name[512];
    size_t o = 0;
    for (size_t i = 0; i < n && o < sizeof msg; i++) {
        const char *sep = i == 0       ? "missing tensor "
                          : i == 1     ? " (nor "
                          : i + 1 == n ? " or "
                                       : ", ";
        o += (size_t)snprintf(msg + o, sizeof msg - o, "%s%s'%s'", sep,
                              lays[i]->kind == MVK_LAYOUT_PER_EXPERT ? "" : "the stacked ",
                              tensor_name(b, layout_probe(lays[i]), 0, name, sizeof name));
    }
    if (n > 1 && o < sizeof msg)
        snprintf(msg + o, sizeof msg - o, ")");
    return mvk_errf(b->err, b->errsz, "%s", msg);
}

/* The routed experts in the first of the architecture's layouts whose first
 * tensor is there. When none is: the only readable layout (its missing
 * tensors are named as they are looked up), or a message naming the first
 * tensor of each. */
static int routed_experts(bctx *b, expert_views *ev, const mvk_arch_layout **used)
{
    const mvk_moe_config *c = b->c;
    const mvk_arch *a = c->arch;
    const uint32_t E = c->num_experts;
    const uint64_t H = c->hidden, F = c->ffn;
    const mvk_arch_layout *lay = NULL, *only = NULL;
    int readable = 0;
    for (size_t i = 0; i < MVK_ARCH_LAYOUTS && a->layouts[i] && !lay; i++) {
        const mvk_arch_layout *l = a->layouts[i];
        if (has_matrix(b, layout_probe(l), 0)) {
            lay = l;
        } else if (l->kind != MVK_LAYOUT_REFUSED) {
            readable++;
            only = l;
        }
    }
    if (!lay && readable == 1)
        lay = only;
    if (!lay)
        return missing_layout(b);
    *used = lay;
    b->L->layout = lay->what;
    if (c->quant.method && lay->kind != MVK_LAYOUT_PER_EXPERT && lay->kind != MVK_LAYOUT_REFUSED) {
        char name[512], q[192];
        return mvk_errf(b->err, b->errsz,
                        "%s: the experts are stored as '%s', but quantised checkpoints (%s) are "
                        "read in the per-expert layouts only",
                        mvk_arch_name(a), tensor_name(b, layout_probe(lay), 0, name, sizeof name),
                        mvk_hfq_describe(&c->quant, q, sizeof q));
    }
    const int transposed = lay->kind == MVK_LAYOUT_TRANSPOSED;
    const int interleaved = lay->kind == MVK_LAYOUT_INTERLEAVED || transposed;
    switch (lay->kind) {
    case MVK_LAYOUT_REFUSED: {
        char name[512];
        tensor_name(b, lay->gate, 0, name, sizeof name);
        const mvk_st_tensor *t = mvk_st_set_find(b->set, name, NULL, 0);
        return mvk_errf(b->err, b->errsz, "tensor '%s' has unsupported dtype %s: %s", name,
                        t ? t->dtype_name : "unknown", lay->why);
    }
    case MVK_LAYOUT_PER_EXPERT:
        return per_expert(b, lay, ev);
    case MVK_LAYOUT_ROWS: {
        /* DBRX: w1, v1, w2 each [E·F, H]; down = w2's [F, H] block transposed */
        const uint64_t EF = (uint64_t)E * F;
        const mvk_st_tensor *g = need(b, lay->gate, 0, 2, SHAPE(EF, H), "[E·F, H]");
        const mvk_st_tensor *u = g ? need(b, lay->up, 0, 2, SHAPE(EF, H), "[E·F, H]") : NULL;
        const mvk_st_tensor *dn = u ? need(b, lay->down, 0, 2, SHAPE(EF, H), "[E·F, H]") : NULL;
        if (!dn || set_views(b, ev, E, F, 1))
            return -1;
        for (uint32_t i = 0; i < E; i++) {
            ev->gate[i] = (mview){.t = g, .kind = V_DIRECT, .off = (uint64_t)i * F * H, .expert = i};
            ev->up[i] = (mview){.t = u, .kind = V_DIRECT, .off = (uint64_t)i * F * H, .expert = i};
            ev->down[i] = (mview){.t = dn, .kind = V_OSS_DOWN, .expert = i};
        }
        return 0;
    }
    case MVK_LAYOUT_STACKED:
        if (!lay->gate) { /* non-gated: up [E, F, H] + down [E, H, F] */
            const mvk_st_tensor *up = need(b, lay->up, 0, 3, SHAPE(E, F, H), "[E, F, H]");
            const mvk_st_tensor *dn = up ? need(b, lay->down, 0, 3, SHAPE(E, H, F), "[E, H, F]")
                                         : NULL;
            if (!dn || set_views(b, ev, E, F, 0))
                return -1;
            for (uint32_t i = 0; i < E; i++) {
                ev->up[i] = (mview){.t = up, .kind = V_DIRECT, .off = (uint64_t)i * F * H, .expert = i};
                ev->down[i] = (mview){.t = dn, .kind = V_DIRECT, .off = (uint64_t)i * H * F, .expert = i};
            }
            return 0;
        }
        /* fall through */
    case MVK_LAYOUT_INTERLEAVED:
    case MVK_LAYOUT_TRANSPOSED: {
        /* stacked [E, 2F, H] + [E, H, F]; gpt-oss [E, H, 2F] + [E, F, H] */
        const mvk_st_tensor *gu =
            interleaved ? need(b, lay->gate, 0, 3, SHAPE(E, H, 2 * F), "[E, H, 2F]")
            : lay->gate_up_all ? need(b, lay->gate, 0, 3, SHAPE(E + c->zero_experts, 2 * F, H),
                                      "[E + zero experts, 2F, H]")
                               : need(b, lay->gate, 0, 3, SHAPE(E, 2 * F, H), "[E, 2F, H]");
        const mvk_st_tensor *dn =
            !gu           ? NULL
            : interleaved ? need(b, lay->down, 0, 3, SHAPE(E, F, H), "[E, F, H]")
                          : need(b, lay->down, 0, 3, SHAPE(E, H, F), "[E, H, F]");
        if (!dn || set_views(b, ev, E, F, 1))
            return -1;
        for (uint32_t i = 0; i < E; i++) {
            if (interleaved) {
                ev->gate[i] = (mview){.t = gu, .kind = transposed ? V_TCAT_GATE : V_OSS_GATE,
                                      .expert = i};
                ev->up[i] = (mview){.t = gu, .kind = transposed ? V_TCAT_UP : V_OSS_UP,
                                    .expert = i};
                ev->down[i] = (mview){.t = dn, .kind = V_OSS_DOWN, .expert = i};
            } else {
                ev->gate[i] = (mview){.t = gu, .kind = V_DIRECT, .off = (uint64_t)i * 2 * F * H, .expert = i};
                ev->up[i] = (mview){.t = gu, .kind = V_DIRECT, .off = ((uint64_t)i * 2 * F + F) * H, .expert = i};
                ev->down[i] = (mview){.t = dn, .kind = V_DIRECT, .off = (uint64_t)i * H * F, .expert = i};
            }
        }
        return 0;
    }
    }
    return mvk_errf(b->err, b->errsz, "%s: unknown layout kind %d", mvk_arch_name(a),
                    (int)lay->kind);
}

static int view_dtype(const expert_views *ev, uint32_t i, int which)
{
    const mview *v = which == 0 ? ev->gate : which == 1 ? ev->up : ev->down;
    return !v ? -2 : v[i].kind == V_PACKED ? v[i].pdtype : v[i].t->dtype;
}

int mvk_model_layer_build(const mvk_moe_config *c, mvk_st_set *set, const char *prefix,
                          mvk_model_layer *out, char *err, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    mvk_model_layer *L = out;
    bctx bb = {set, prefix ? prefix : "", c, L, err, errsz}, *b = &bb;
    snprintf(L->prefix, sizeof L->prefix, "%s", bb.prefix);
    bb.prefix = L->prefix;
    L->arch = c->arch;
    const mvk_arch *a = c->arch;
    /* the router scores the FFN experts and the identity ones after them */
    const uint32_t E = c->num_experts + c->zero_experts;
    const uint64_t H = c->hidden, F = c->ffn;
    moevk_layer_desc *d = &L->desc;
    *d = (moevk_layer_desc){
        .hidden = c->hidden,
        .ffn = c->ffn,
        .num_experts = E,
        .num_zero_experts = c->zero_experts,
        .top_k = c->top_k,
        .routing = c->routing,
        .activation = c->activation,
        .norm_topk_prob = c->norm_topk_prob,
        /* 0 unless the architecture reads them */
        .n_group = c->n_group,
        .topk_group = c->topk_group,
        .routed_scaling_factor = c->routed_scaling_factor,
        .group_score = c->group_score,
        .norm_p = c->norm_p,
        .norm_min = c->norm_min,
        .norm_eps = c->norm_eps,
        /* transformers caps only when the value is > 0 */
        .router_softcap = c->router_softcap > 0.0f ? c->router_softcap : 0.0f,
        .select_on_logits = c->select_on_logits,
        .score_fn = c->sqrtsoftplus ? MOEVK_SCORE_SQRTSOFTPLUS : MOEVK_SCORE_SIGMOID,
        .capacity_fraction = c->capacity_fraction,
        .drop_renorm_eps = c->drop_renorm_eps,
        .jitter_eps = c->routing == MOEVK_ROUTING_SPARSEMIXER ? c->jitter_eps : 0.0f,
        .shared_scale = c->shared_scale,
        .swiglu_alpha = c->swiglu_alpha,
        .swiglu_limit = c->swiglu_limit,
        .softcap_gate = c->softcap_gate,
        .softcap_up = c->softcap_up,
    };
    if (c->shared_act) {
        d->flags |= MOEVK_LAYER_SHARED_ACTIVATION;
        d->shared_activation = c->shared_activation;
        d->shared_swiglu_limit = c->shared_swiglu_limit;
    }
    if (a->zero_limit_unclamped) {
        /* a limit of 0 in this layer: no clamp, the plain SwiGLU */
        if (c->swiglu_limit == 0.0f)
            d->activation = MOEVK_ACT_SWIGLU;
        if (c->shared_act && c->shared_swiglu_limit == 0.0f) {
            d->shared_activation = MOEVK_ACT_SWIGLU;
            d->shared_swiglu_limit = 0.0f;
        }
    }
    L->expert_capacity = c->expert_capacity;
    if (a->weights_on_input)
        d->flags |= MOEVK_LAYER_WEIGHTS_ON_INPUT;

    /* router (a quantised one dequantised to f32), under its other name
     * where the prefix holds that one only */
    float *rq = NULL, *sq = NULL;
    const char *router = a->router;
    if (a->router_alt && !has(b, a->router, 0) && has(b, a->router_alt, 0))
        router = a->router_alt;
    /* Inkling: S more router rows, the shared experts' gates */
    const uint32_t S = a->shared_sink ? c->sink_shared : 0;
    if (S && b->c->quant.method) {
        mvk_errf(b->err, b->errsz, "%s: a quantised checkpoint is not supported",
                 mvk_arch_name(a));
        goto fail;
    }
    if (!S && quantized_f32(b, router, E, H, &rq))
        goto fail;
    const mvk_st_tensor *rt =
        rq ? NULL
           : need(b, router, 0, 2, SHAPE(E + S, H), S ? "[E + n_shared, H]" : "[E, H]");
    if (!rq && !rt)
        goto fail;
    const mvk_st_tensor *rsc = NULL;
    if (a->router_scale && !(rsc = need(b, a->router_scale, 0, 1, SHAPE(1), "[1]")))
        goto fail;
    const mvk_st_tensor *rb = NULL, *cb = NULL, *sg = NULL;
    if (c->router_bias && a->router_bias &&
        !(rb = need(b, a->router_bias, 0, 1, SHAPE(E), "[E]")))
        goto fail;
    if (c->correction_bias && a->correction_bias && !(cb = need_vector(b, a->correction_bias, E)))
        goto fail;
    const mvk_st_tensor *ob = NULL;
    if (a->output_bias && !(ob = need(b, a->output_bias, 0, 1, SHAPE(H), "[H]")))
        goto fail;
    /* Gemma 4's input norms and per-expert scale */
    const mvk_st_tensor *ris = NULL, *enw = NULL, *ews = NULL;
    if (a->router_input_scale && !(ris = need(b, a->router_input_scale, 0, 1, SHAPE(H), "[H]")))
        goto fail;
    if (a->expert_norm && !(enw = need(b, a->expert_norm, 0, 1, SHAPE(H), "[H]")))
        goto fail;
    if (a->expert_weight_scale &&
        !(ews = need(b, a->expert_weight_scale, 0, 1, SHAPE(E), "[E]")))
        goto fail;

    /* experts */
    expert_views routed = {0}, shared = {0};
    const mvk_arch_layout *lay = NULL;
    if (routed_experts(b, &routed, &lay))
        goto fail;
    if (S) {
        if (sink_shared_experts(b, a->shared, S, &shared))
            goto fail;
    } else if (c->shared_ffn) {
        if (shared_expert(b, a->shared, &shared))
            goto fail;
        if (c->shared_gate && a->shared_gate &&
            (quantized_f32(b, a->shared_gate, 1, H, &sq) ||
             (!sq && !(sg = need(b, a->shared_gate, 0, 2, SHAPE(1, H), "[1, H]")))))
            goto fail;
    }

    /* one dtype for every expert weight: the file's, or f32 when mixed */
    int dt = -1, mixed = 0;
    const expert_views *sets[2] = {&routed, &shared};
    for (int s = 0; s < 2; s++)
        for (uint32_t i = 0; i < sets[s]->count; i++)
            for (int w = 0; w < 3; w++) {
                int x = view_dtype(sets[s], i, w);
                if (x == -2)
                    continue;
                if (dt < 0)
                    dt = x;
                else if (x != dt)
                    mixed = 1;
            }
    L->file_dtype = (moevk_dtype)dt;
    if (mixed) {
        dt = MOEVK_DTYPE_F32;
        L->converted = 1;
    }
    d->weight_dtype = (moevk_dtype)dt;
    if (emit(b, &routed, dt, &d->experts))
        goto fail;
    if (c->shared_ffn) {
        d->num_shared = S ? S : 1;
        d->shared_ffn = c->shared_ffn;
        if (emit(b, &shared, dt, &d->shared))
            goto fail;
    }

    /* router and shared gate: one dtype (f32 when they differ) */
    int rdt = rq ? MOEVK_DTYPE_F32 : rt->dtype;
    if ((sg && sg->dtype != rdt) || sq)
        rdt = MOEVK_DTYPE_F32;
    d->router_dtype = (moevk_dtype)rdt;
    mview rv = {.t = rt, .kind = V_DIRECT};
    if (rq)
        d->router_weight = rq;
    else if (!(d->router_weight = materialize(b, &rv, E, H, rdt)))
        goto fail;
    if (S) {
        /* the router's last S rows gate the shared experts, as a sink */
        mview gv = {.t = rt, .kind = V_DIRECT, .off = (uint64_t)E * H};
        if (!(d->shared_gate = materialize(b, &gv, S, H, rdt)))
            goto fail;
        d->shared_sink = 1;
    } else if (sq) {
        d->shared_gate = sq;
    } else if (sg) {
        mview gv = {.t = sg, .kind = V_DIRECT};
        if (!(d->shared_gate = materialize(b, &gv, 1, H, rdt)))
            goto fail;
    }
    if (rb && !(d->router_bias = f32_copy(b, rb)))
        goto fail;
    if (rsc) {
        /* gate.global_scale times the configured scale, as the router
         * multiplies them (in f32 with an f32 checkpoint) */
        const float *gs = f32_copy(b, rsc);
        if (!gs)
            goto fail;
        if (!(isfinite(gs[0]) && gs[0] != 0.0f)) {
            mvk_errf(b->err, b->errsz, "tensor '%s%s' = %g: the routing scale must be finite "
                     "and nonzero", b->prefix, a->router_scale, (double)gs[0]);
            goto fail;
        }
        d->routed_scaling_factor =
            (d->routed_scaling_factor ? d->routed_scaling_factor : 1.0f) * gs[0];
    }
    if (cb && !(d->correction_bias = f32_copy(b, cb)))
        goto fail;
    if (ob && !(d->output_bias = f32_copy(b, ob)))
        goto fail;
    if (a->router_norm) {
        d->router_norm_eps = c->rms_norm_eps;
        d->router_input_factor = (float)(1.0 / sqrt((double)H));
    }
    if (ris && !(d->router_input_scale = f32_copy(b, ris)))
        goto fail;
    if (enw) {
        d->expert_norm_eps = c->rms_norm_eps;
        if (!(d->expert_norm_weight = f32_copy(b, enw)))
            goto fail;
    }
    if (ews && !(d->expert_weight_scale = f32_copy(b, ews)))
        goto fail;

    if (lay->gate_bias) {
        const uint32_t EF = c->num_experts; /* the FFN experts */
        /* gate_up_proj_bias [E, 2F], down_proj_bias [E, H] */
        const mvk_st_tensor *gub = need(b, lay->gate_bias, 0, 2, SHAPE(EF, 2 * F), "[E, 2F]");
        const mvk_st_tensor *dnb =
            gub ? need(b, lay->down_bias, 0, 2, SHAPE(EF, H), "[E, H]") : NULL;
        if (!dnb)
            goto fail;
        float *all = f32_copy(b, gub), *gbias = own(L, (size_t)EF * F * 4),
              *ubias = own(L, (size_t)EF * F * 4);
        if (!all || !gbias || !ubias) {
            oom(b);
            goto fail;
        }
        /* interleaved (gpt-oss), or the F gate biases then the F up biases of
         * each expert (the transposed layout: OpenAI's privacy filter) */
        const int cat = lay->kind == MVK_LAYOUT_TRANSPOSED;
        for (size_t i = 0; i < (size_t)EF * F; i++) {
            const size_t e = i / F, f = i % F;
            gbias[i] = cat ? all[e * 2 * F + f] : all[2 * i];
            ubias[i] = cat ? all[e * 2 * F + F + f] : all[2 * i + 1];
        }
        d->experts.gate_bias = gbias;
        d->experts.up_bias = ubias;
        if (!(d->experts.down_bias = f32_copy(b, dnb)))
            goto fail;
    }

    if (lay->kind == MVK_LAYOUT_PER_EXPERT && (lay->up_bias_i || lay->down_bias_i)) {
        /* per-expert bias vectors (NLLB-MoE's fc1.bias [F], fc2.bias [H]) */
        const uint32_t EF = c->num_experts;
        for (int w = 0; w < 2; w++) {
            const char *pat = w ? lay->down_bias_i : lay->up_bias_i;
            if (!pat)
                continue;
            const uint64_t n = w ? H : F;
            float *all = own(L, (size_t)EF * n * 4);
            if (!all) {
                oom(b);
                goto fail;
            }
            for (uint32_t i = 0; i < EF; i++) {
                const mvk_st_tensor *t = need(b, pat, i, 1, SHAPE(n), w ? "[H]" : "[F]");
                if (!t)
                    goto fail;
                mvk_model_to_f32(t->data, t->dtype, (size_t)n, all + (size_t)i * n);
            }
            if (w)
                d->experts.down_bias = all;
            else
                d->experts.up_bias = all;
        }
    }

    char why[384];
    moevk_status st = moevk_layer_desc_check(d, why, sizeof why);
    if (st) {
        mvk_errf(err, errsz, "the layer built from %s is not valid for moevk (%s: %s)", L->prefix,
                 moevk_status_string(st), why);
        goto fail;
    }
    return 0;
fail:
    mvk_model_layer_free(L);
    return -1;
}

int mvk_model_layer_build_any(const mvk_moe_config *cfg, mvk_st_set *set,
                              const char *const *prefixes, int nprefix, mvk_model_layer *out,
                              char *err, size_t errsz)
{
    const char *rname = cfg->arch->router, *alt = cfg->arch->router_alt;
    for (int i = 0; i < nprefix; i++) {
        char name[512], name2[512];
        snprintf(name, sizeof name, "%s%s", prefixes[i], rname);
        snprintf(name2, sizeof name2, "%s%s", prefixes[i], alt ? alt : rname);
        if (mvk_st_set_has(set, name) || mvk_st_set_has(set, name2))
            return mvk_model_layer_build(cfg, set, prefixes[i], out, err, errsz);
    }
    if (nprefix > 1) {
        memset(out, 0, sizeof(*out));
        char nor[3 * 520] = "";
        size_t o = 0;
        for (int i = 1; i < nprefix && o < sizeof nor; i++)
            o += (size_t)snprintf(nor + o, sizeof nor - o, "%s'%s%s'", i > 1 ? ", " : "",
                                  prefixes[i], rname);
        return mvk_errf(err, errsz, "missing tensor '%s%s' (nor %s)", prefixes[0], rname, nor);
    }
    return mvk_model_layer_build(cfg, set, nprefix ? prefixes[0] : "", out, err, errsz);
}

void mvk_model_layer_free(mvk_model_layer *L)
{
    if (!L)
        return;
    for (size_t i = 0; i < L->nowned; i++)
        free(L->owned[i]);
    free(L->owned);
    memset(L, 0, sizeof(*L));
}

float mvk_model_capacity_factor(const mvk_model_layer *L, uint32_t T)
{
    uint64_t cap = L->expert_capacity;
    if (!cap || cap >= T) /* an expert gets at most T rows: the cap cannot bind */
        return 0.0f;
    /* ceil(cf * T * k / E) with cf = (cap - 0.5) * E / (T * k) is cap, with room for
     * rounding */
    return (float)(((double)cap - 0.5) * L->desc.num_experts / ((double)T * L->desc.top_k));
}

/* ---- non-finite weights ---------------------------------------------------- */

typedef struct nf_walk {
    uint64_t total;
    char *first;
    size_t firstsz;
} nf_walk;

/* Count one array (NULL: absent); the first one found names the place. */
static void nf_count(nf_walk *w, const void *p, int dtype, size_t n, const char *what,
                     const char *kind, int64_t index)
{
    if (!p || !n)
        return;
    uint64_t c = mvk_model_count_nonfinite(p, dtype, n);
    if (c && !w->total && w->first && w->firstsz) {
        if (index >= 0)
            snprintf(w->first, w->firstsz, "the %s of %s %lld", what, kind, (long long)index);
        else
            snprintf(w->first, w->firstsz, "the %s", what);
    }
    w->total += c;
}

/* NaN and +-Inf among n elements of any weight format (a block format is
 * decoded, a chunk at a time). */
static uint64_t count_nonfinite_any(const void *p, int dtype, uint64_t n)
{
    if (moevk_dtype_block_elems((moevk_dtype)dtype) <= 1)
        return mvk_model_count_nonfinite(p, dtype, (size_t)n);
    float buf[4096]; /* a whole number of blocks of every format */
    uint64_t c = 0;
    for (uint64_t first = 0; first < n; first += 4096) {
        const uint64_t m = n - first < 4096 ? n - first : 4096;
        mvk_format_decode((moevk_dtype)dtype, p, first, m, buf);
        for (uint64_t i = 0; i < m; i++)
            c += !isfinite(buf[i]);
    }
    return c;
}

/* count experts of rows x H matrices (gate, up: [F, H]; down: [H, F]) and
 * their f32 biases, contiguous or per-expert; gate/up in format gu, down in
 * format dn. */
static void nf_experts(nf_walk *w, const moevk_expert_weights *ew, uint32_t count, size_t F,
                       size_t H, int gu, int dn, const char *kind)
{
    const size_t fh = F * H;
    const uint64_t stride[3] = {F * moevk_dtype_row_bytes((moevk_dtype)gu, H),
                                F * moevk_dtype_row_bytes((moevk_dtype)gu, H),
                                H * moevk_dtype_row_bytes((moevk_dtype)dn, F)};
    const int dt[3] = {gu, gu, dn};
    const void *const base[3] = {ew->gate, ew->up, ew->down};
    const void *const *per[3] = {ew->gate_experts, ew->up_experts, ew->down_experts};
    static const char *const names[3] = {"gate matrix", "up matrix", "down matrix"};
    for (uint32_t e = 0; e < count; e++) {
        for (int i = 0; i < 3; i++) {
            const void *m = per[i]  ? per[i][e]
                            : base[i] ? (const uint8_t *)base[i] + (size_t)e * stride[i]
                                      : NULL;
            if (!m || !fh)
                continue;
            uint64_t c = count_nonfinite_any(m, dt[i], fh);
            if (c && !w->total && w->first && w->firstsz)
                snprintf(w->first, w->firstsz, "the %s of %s %u", names[i], kind, e);
            w->total += c;
        }
        nf_count(w, ew->gate_bias ? ew->gate_bias + e * F : NULL, MOEVK_DTYPE_F32, F,
                 "gate bias", kind, e);
        nf_count(w, ew->up_bias ? ew->up_bias + e * F : NULL, MOEVK_DTYPE_F32, F, "up bias",
                 kind, e);
        nf_count(w, ew->down_bias ? ew->down_bias + e * H : NULL, MOEVK_DTYPE_F32, H,
                 "down bias", kind, e);
    }
}

uint64_t mvk_model_layer_nonfinite(const mvk_model_layer *L, char *first, size_t firstsz)
{
    const moevk_layer_desc *d = &L->desc;
    const size_t H = d->hidden, E = d->num_experts;
    nf_walk w = {0, first, firstsz};
    if (first && firstsz)
        first[0] = 0;
    nf_count(&w, d->router_weight, d->router_dtype, E * H, "router", NULL, -1);
    nf_count(&w, d->router_bias, MOEVK_DTYPE_F32, E, "router bias", NULL, -1);
    nf_count(&w, d->correction_bias, MOEVK_DTYPE_F32, E, "score correction bias", NULL, -1);
    nf_count(&w, d->router_input_scale, MOEVK_DTYPE_F32, H, "router input scale", NULL, -1);
    nf_count(&w, d->expert_norm_weight, MOEVK_DTYPE_F32, H, "expert input norm weight", NULL,
             -1);
    nf_count(&w, d->expert_weight_scale, MOEVK_DTYPE_F32, E, "per-expert scale", NULL, -1);
    /* per-matrix formats (MOEVK_LAYER_MATRIX_DTYPES), else weight_dtype */
    const int md = (d->flags & MOEVK_LAYER_MATRIX_DTYPES) != 0;
    nf_experts(&w, &d->experts, d->num_experts - d->num_zero_experts, d->ffn, H,
               md ? d->experts.gate_up_dtype : d->weight_dtype,
               md ? d->experts.down_dtype : d->weight_dtype, "expert");
    nf_experts(&w, &d->shared, d->num_shared, d->shared_ffn ? d->shared_ffn : d->ffn, H,
               md ? d->shared.gate_up_dtype : d->weight_dtype,
               md ? d->shared.down_dtype : d->weight_dtype, "shared expert");
    nf_count(&w, d->shared_gate, d->router_dtype, (size_t)d->num_shared * H, "shared-expert gate",
             NULL, -1);
    return w.total;
}
