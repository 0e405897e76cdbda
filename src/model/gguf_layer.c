/*
 * A GGUF MoE block as a moevk_layer_desc (what is passed as it lies and
 * what is copied: gguf_layer.h).
 */
#include "gguf_layer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "model_util.h"

typedef struct bctx {
    const mvk_gguf *m;
    const mvk_gguf_file *meta; /* files[0]: the metadata */
    const mvk_gguf_arch *arch;
    uint32_t layer;
    char prefix[32];
    mvk_model_layer *L;
    mvk_gguf_layer_info *info;
    char *err;
    size_t errsz;
} bctx;

/* ---- helpers ---------------------------------------------------------------- */

static int bfail(bctx *b, const char *fmt, ...) MVK_PRINTF(2, 3);
static int bfail(bctx *b, const char *fmt, ...)
{
    char m[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return mvk_errf(b->err, b->errsz, "%s", m);
}

static void *own(bctx *b, size_t size)
{
    void *p = mvk_model_layer_own(b->L, size);
    if (!p)
        mvk_errf(b->err, b->errsz, "out of host memory");
    return p;
}

static void note(bctx *b, const char *fmt, ...) MVK_PRINTF(2, 3);
static void note(bctx *b, const char *fmt, ...)
{
    if (!b->info)
        return;
    size_t o = strlen(b->info->notes);
    if (o + 3 >= sizeof b->info->notes)
        return;
    if (o)
        o += (size_t)snprintf(b->info->notes + o, sizeof b->info->notes - o, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->info->notes + o, sizeof b->info->notes - o, fmt, ap);
    va_end(ap);
}

static const char *tname(const mvk_gguf_tensor *t)
{
    const char *n = mvk_gguf_type_name(t->type);
    return n ? n : "unknown";
}

/* "[a, b, c]" of a tensor's ne */
static const char *ne_str(const mvk_gguf_tensor *t, char *buf, size_t n)
{
    return mvk_shape_str(t->ne, t->ndim, buf, n);
}

/* Record a tensor the block uses (the load line, the byte count). */
static void used(bctx *b, const mvk_gguf_tensor *t)
{
    if (!b->info)
        return;
    char sb[96];
    size_t o = strlen(b->info->tensors);
    if (o + 2 < sizeof b->info->tensors)
        snprintf(b->info->tensors + o, sizeof b->info->tensors - o,
                 "%s%s %s ne=%s %llu bytes", o ? "\n" : "", t->name, tname(t),
                 ne_str(t, sb, sizeof sb), (unsigned long long)t->nbytes);
    b->info->file_bytes += t->nbytes;
}

static const mvk_gguf_tensor *find(bctx *b, const char *suffix, char *name, size_t namesz)
{
    snprintf(name, namesz, "%s%s", b->prefix, suffix);
    return mvk_gguf_find(b->m, name);
}

static int has(bctx *b, const char *suffix)
{
    char name[MVK_GGUF_MAX_NAME + 32];
    return find(b, suffix, name, sizeof name) != NULL;
}

/* The tensor prefix + suffix with exactly the dimensions ne[0..ndim-1]
 * (trailing ones may be left out in the file); NULL with a message. */
static const mvk_gguf_tensor *need(bctx *b, const char *suffix, uint32_t ndim,
                                   const uint64_t *ne, const char *dims)
{
    char name[MVK_GGUF_MAX_NAME + 32];
    const mvk_gguf_tensor *t = find(b, suffix, name, sizeof name);
    if (!t) {
        bfail(b, "tensor '%s' is missing", name);
        return NULL;
    }
    int ok = 1;
    for (uint32_t d = 0; d < MVK_GGUF_MAX_DIMS; d++)
        ok &= t->ne[d] == (d < ndim ? ne[d] : 1);
    if (!ok) {
        char sb[96], wb[96];
        bfail(b, "tensor '%s' has shape ne = %s; expected %s = %s", name,
              ne_str(t, sb, sizeof sb), dims, mvk_shape_str(ne, ndim, wb, sizeof wb));
        return NULL;
    }
    used(b, t);
    return t;
}

/* Expert matrices: a format moevk runs. */
static int expert_format(bctx *b, const mvk_gguf_tensor *t)
{
    const mvk_format *f = t->dtype >= 0 ? mvk_format_get((moevk_dtype)t->dtype) : NULL;
    if (f && (f->uses & MVK_FORMAT_EXPERT))
        return 0;
    char list[256];
    size_t o = 0;
    list[0] = 0;
    for (size_t i = 0; mvk_format_at(i); i++) {
        const mvk_format *g = mvk_format_at(i);
        if (!(g->uses & MVK_FORMAT_EXPERT))
            continue;
        int n = snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "", g->name);
        if (n < 0 || (size_t)n >= sizeof list - o)
            break;
        o += (size_t)n;
    }
    return bfail(b, "tensor '%s' has type %s, which moevk has no kernel format for (expert "
                 "formats: %s)",
                 t->name, tname(t), list);
}

/* A plain-typed tensor's data as the kernels may read it: in place when
 * aligned to its element size, else an owned copy. */
static const void *plain_data(bctx *b, const mvk_gguf_tensor *t)
{
    size_t es = t->dtype >= 0 ? moevk_dtype_size((moevk_dtype)t->dtype) : 0;
    if (es <= 1 || ((uintptr_t)t->data % es) == 0)
        return t->data;
    void *c = own(b, (size_t)t->nbytes);
    if (c) {
        memcpy(c, t->data, (size_t)t->nbytes);
        note(b, "%s copied (data not aligned to its elements)", t->name);
    }
    return c;
}

/* Expert stack data: in place, except a misaligned plain type. */
static const void *expert_data(bctx *b, const mvk_gguf_tensor *t)
{
    return moevk_dtype_block_elems((moevk_dtype)t->dtype) > 1 ? (const void *)t->data
                                                               : plain_data(b, t);
}

/* Any tensor of a type moevk decodes, as owned f32 (n elements). */
static float *to_f32(bctx *b, const mvk_gguf_tensor *t)
{
    const uint64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    const mvk_format *f = t->dtype >= 0 ? mvk_format_get((moevk_dtype)t->dtype) : NULL;
    if (!f || !f->decode) {
        bfail(b, "tensor '%s' has type %s, which moevk cannot read", t->name, tname(t));
        return NULL;
    }
    float *o = own(b, (size_t)n * sizeof(float));
    if (!o)
        return NULL;
    if (f->block_elems == 1)
        mvk_model_to_f32(t->data, t->dtype, (size_t)n, o);
    else
        mvk_format_decode((moevk_dtype)t->dtype, t->data, 0, n, o);
    return o;
}

/* ---- metadata ------------------------------------------------------------------ */

/* {arch}.suffix as an unsigned integer (max), default def; -1 on error. */
static int key_uint(bctx *b, const char *suffix, uint64_t max, uint64_t def, uint64_t *v)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", b->arch->name, suffix);
    return mvk_gguf_get_uint(b->meta, key, max, def, v, b->err, b->errsz);
}

static int key_float(bctx *b, const char *suffix, double def, double *v)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", b->arch->name, suffix);
    return mvk_gguf_get_float(b->meta, key, def, v, b->err, b->errsz);
}

static int key_bool(bctx *b, const char *suffix, int def, int *v)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", b->arch->name, suffix);
    return mvk_gguf_get_bool(b->meta, key, def, v, b->err, b->errsz);
}

/* A key that states a size must agree with the tensors. */
static int key_agrees(bctx *b, const char *suffix, uint64_t have, const char *from)
{
    uint64_t v;
    int r = key_uint(b, suffix, UINT64_MAX, 0, &v);
    if (r < 0)
        return -1;
    if (r > 0 && v != have)
        return bfail(b, "%s: %s.%s = %llu, but %s is %llu", b->meta->path, b->arch->name,
                     suffix, (unsigned long long)v, from, (unsigned long long)have);
    return 0;
}

int mvk_gguf_model_arch(const mvk_gguf *m, const mvk_gguf_arch **arch, uint32_t *block_count,
                        char *err, size_t errsz)
{
    const mvk_gguf_file *f = &m->files[0];
    const char *name;
    int r = mvk_gguf_get_string(f, "general.architecture", &name, err, errsz);
    if (r < 0)
        return -1;
    if (r == 0)
        return mvk_errf(err, errsz, "%s: general.architecture is missing", f->path);
    *arch = mvk_gguf_arch_find(name);
    if (!*arch) {
        char list[256];
        return mvk_errf(err, errsz,
                        "%s: general.architecture = '%s' is not one of the MoE architectures "
                        "moevk runs (%s)",
                        f->path, name, mvk_gguf_arch_list(list, sizeof list));
    }
    char key[128];
    uint64_t n;
    snprintf(key, sizeof key, "%s.block_count", (*arch)->name);
    if (mvk_gguf_get_uint(f, key, UINT32_MAX, 0, &n, err, errsz) < 0)
        return -1;
    *block_count = (uint32_t)n;
    return 0;
}

/* ---- the experts ------------------------------------------------------------- */

typedef struct experts_out {
    const mvk_gguf_tensor *gate, *up, *down; /* one of each kind (formats)  */
    uint32_t F;
} experts_out;

/* gate and up share a format; each format runs on moevk. */
static int formats_ok(bctx *b, const mvk_gguf_tensor *g, const mvk_gguf_tensor *u,
                      const mvk_gguf_tensor *d)
{
    if ((g && expert_format(b, g)) || expert_format(b, u) || expert_format(b, d))
        return -1;
    if (g && g->type != u->type)
        return bfail(b, "tensors '%s' (%s) and '%s' (%s) differ in type: moevk runs gate and "
                     "up in one format",
                     g->name, tname(g), u->name, tname(u));
    return 0;
}

static const void **ptrs(bctx *b, uint32_t n)
{
    return own(b, sizeof(void *) * n);
}

static int routed_experts(bctx *b, uint32_t H, uint32_t E, moevk_expert_weights *w,
                          experts_out *eo)
{
    moevk_layer_desc *d = &b->L->desc;
    (void)d;
    char name[MVK_GGUF_MAX_NAME + 32];
    const mvk_gguf_tensor *fused = find(b, "ffn_gate_up_exps.weight", name, sizeof name);
    if (fused) {
        if (fused->ndim != 3 || fused->ne[0] != H || fused->ne[2] != E || fused->ne[1] % 2 ||
            !fused->ne[1] || fused->ne[1] / 2 > UINT32_MAX) {
            char sb[96];
            return bfail(b, "tensor '%s' has shape ne = %s; expected [H, 2F, E] with H = %u, "
                         "E = %u",
                         fused->name, ne_str(fused, sb, sizeof sb), H, E);
        }
        const uint32_t F = (uint32_t)(fused->ne[1] / 2);
        used(b, fused);
        const uint64_t dn[3] = {F, H, E};
        const mvk_gguf_tensor *down = need(b, "ffn_down_exps.weight", 3, dn, "[F, H, E]");
        if (!down || formats_ok(b, NULL, fused, down))
            return -1;
        const uint64_t row = moevk_dtype_row_bytes((moevk_dtype)fused->dtype, H);
        const uint8_t *base = expert_data(b, fused);
        const void **g = ptrs(b, E), **u = ptrs(b, E);
        if (!base || !g || !u)
            return -1;
        for (uint32_t e = 0; e < E; e++) {
            g[e] = base + (uint64_t)e * 2 * F * row;
            u[e] = base + ((uint64_t)e * 2 * F + F) * row;
        }
        w->gate_experts = g;
        w->up_experts = u;
        if (!(w->down = expert_data(b, down)))
            return -1;
        b->L->layout = "fused ffn_gate_up_exps [E, 2F, H] (gate rows, then up) + ffn_down_exps";
        *eo = (experts_out){fused, fused, down, F};
        return 0;
    }
    const mvk_gguf_tensor *up = find(b, "ffn_up_exps.weight", name, sizeof name);
    if (up) {
        if (up->ndim != 3 || up->ne[0] != H || up->ne[2] != E || !up->ne[1] ||
            up->ne[1] > UINT32_MAX) {
            char sb[96];
            return bfail(b, "tensor '%s' has shape ne = %s; expected [H, F, E] with H = %u, "
                         "E = %u",
                         up->name, ne_str(up, sb, sizeof sb), H, E);
        }
        const uint32_t F = (uint32_t)up->ne[1];
        used(b, up);
        const uint64_t gn[3] = {H, F, E}, dn[3] = {F, H, E};
        const mvk_gguf_tensor *gate = need(b, "ffn_gate_exps.weight", 3, gn, "[H, F, E]");
        const mvk_gguf_tensor *down = gate ? need(b, "ffn_down_exps.weight", 3, dn, "[F, H, E]")
                                           : NULL;
        if (!down || formats_ok(b, gate, up, down))
            return -1;
        if (!(w->gate = expert_data(b, gate)) || !(w->up = expert_data(b, up)) ||
            !(w->down = expert_data(b, down)))
            return -1;
        b->L->layout = "stacked ffn_gate_exps/ffn_up_exps/ffn_down_exps";
        *eo = (experts_out){gate, up, down, F};
        return 0;
    }
    if (b->arch->per_expert_names && has(b, "ffn_up.0.weight")) {
        const mvk_gguf_tensor *u0 = find(b, "ffn_up.0.weight", name, sizeof name);
        if (u0->ndim != 2 || u0->ne[0] != H || !u0->ne[1] || u0->ne[1] > UINT32_MAX) {
            char sb[96];
            return bfail(b, "tensor '%s' has shape ne = %s; expected [H, F] with H = %u",
                         u0->name, ne_str(u0, sb, sizeof sb), H);
        }
        const uint32_t F = (uint32_t)u0->ne[1];
        const void **g = ptrs(b, E), **u = ptrs(b, E), **dd = ptrs(b, E);
        if (!g || !u || !dd)
            return -1;
        const uint64_t gn[2] = {H, F}, dn[2] = {F, H};
        const mvk_gguf_tensor *first[3] = {NULL, NULL, NULL};
        for (uint32_t e = 0; e < E; e++) {
            char s[3][48];
            snprintf(s[0], sizeof s[0], "ffn_gate.%u.weight", e);
            snprintf(s[1], sizeof s[1], "ffn_up.%u.weight", e);
            snprintf(s[2], sizeof s[2], "ffn_down.%u.weight", e);
            const mvk_gguf_tensor *t[3];
            if (!(t[0] = need(b, s[0], 2, gn, "[H, F]")) ||
                !(t[1] = need(b, s[1], 2, gn, "[H, F]")) ||
                !(t[2] = need(b, s[2], 2, dn, "[F, H]")))
                return -1;
            if (formats_ok(b, t[0], t[1], t[2]))
                return -1;
            for (int k = 0; k < 3; k++) {
                if (!first[k])
                    first[k] = t[k];
                else if (t[k]->type != first[k]->type)
                    return bfail(b, "tensors '%s' (%s) and '%s' (%s) differ in type: moevk "
                                 "runs every expert's matrix in one format",
                                 first[k]->name, tname(first[k]), t[k]->name, tname(t[k]));
            }
            if (!(g[e] = expert_data(b, t[0])) || !(u[e] = expert_data(b, t[1])) ||
                !(dd[e] = expert_data(b, t[2])))
                return -1;
        }
        w->gate_experts = g;
        w->up_experts = u;
        w->down_experts = dd;
        b->L->layout = "per-expert ffn_gate.{i}/ffn_up.{i}/ffn_down.{i}";
        *eo = (experts_out){first[0], first[1], first[2], F};
        return 0;
    }
    return bfail(b, "layer %u has no experts: none of %sffn_gate_up_exps.weight, "
                 "%sffn_up_exps.weight%s%s%s is in the file",
                 b->layer, b->prefix, b->prefix, b->arch->per_expert_names ? ", " : "",
                 b->arch->per_expert_names ? b->prefix : "",
                 b->arch->per_expert_names ? "ffn_up.0.weight" : "");
}

/* An optional f32 vector of ne = [n] or [n, count] as owned f32. */
static float *bias(bctx *b, const char *suffix, uint64_t n0, uint64_t n1, const char *dims)
{
    const uint64_t ne[2] = {n0, n1};
    const mvk_gguf_tensor *t = need(b, suffix, n1 > 1 ? 2 : 1, ne, dims);
    if (!t)
        return NULL;
    if (t->dtype != MOEVK_DTYPE_F32 && t->dtype != MOEVK_DTYPE_F16 &&
        t->dtype != MOEVK_DTYPE_BF16) {
        bfail(b, "tensor '%s' has type %s (f32, f16 or bf16 for a bias)", t->name, tname(t));
        return NULL;
    }
    return to_f32(b, t);
}

/* ---- the block -------------------------------------------------------------- */

static int build(bctx *b)
{
    moevk_layer_desc *d = &b->L->desc;
    const mvk_gguf_arch *a = b->arch;
    uint32_t blocks;
    if (mvk_gguf_model_arch(b->m, &a, &blocks, b->err, b->errsz))
        return -1;
    b->arch = a;
    if (b->info) {
        b->info->arch = a;
        b->info->block_count = blocks;
    }
    if (blocks && b->layer >= blocks)
        return bfail(b, "--layer %u: the model has %u layers (%s.block_count)", b->layer,
                     blocks, a->name);
    uint64_t lead = 0;
    if (a->dense_lead_key && key_uint(b, "leading_dense_block_count", UINT32_MAX, 0, &lead) < 0)
        return -1;
    if (b->layer < lead)
        return bfail(b, "layer %u is a dense layer: %s.leading_dense_block_count = %llu (layers "
                     "0..%llu have no MoE block)",
                     b->layer, a->name, (unsigned long long)lead, (unsigned long long)lead - 1);
    char name[MVK_GGUF_MAX_NAME + 32];
    const mvk_gguf_tensor *router = find(b, "ffn_gate_inp.weight", name, sizeof name);
    if (!router) {
        if (has(b, "ffn_up.weight") || has(b, "ffn_gate.weight"))
            return bfail(b, "layer %u is a dense layer: %sffn_up.weight is there, "
                         "%sffn_gate_inp.weight (the router) is not",
                         b->layer, b->prefix, b->prefix);
        return bfail(b, "tensor '%s' (the router) is missing: layer %u has no MoE block",
                     name, b->layer);
    }
    if (a->refuse_tensor && has(b, a->refuse_tensor))
        return bfail(b, "layer %u has %s%s: %s", b->layer, b->prefix, a->refuse_tensor,
                     a->refuse_why);
    if (router->ndim != 2 || !router->ne[0] || router->ne[0] > UINT32_MAX || !router->ne[1] ||
        router->ne[1] > MOEVK_MAX_EXPERTS) {
        char sb[96];
        return bfail(b, "tensor '%s' has shape ne = %s; expected [H, E] with E in 1..%d",
                     router->name, ne_str(router, sb, sizeof sb), MOEVK_MAX_EXPERTS);
    }
    used(b, router);
    const uint32_t H = (uint32_t)router->ne[0], E = (uint32_t)router->ne[1];
    if (key_agrees(b, "expert_count", E, "the router's E (ne[1])") ||
        key_agrees(b, "embedding_length", H, "the router's H (ne[0])"))
        return -1;
    uint64_t k;
    int r = key_uint(b, "expert_used_count", E, 0, &k);
    if (r < 0)
        return -1;
    if (r == 0)
        return bfail(b, "%s: %s.expert_used_count (top-k) is missing", b->meta->path, a->name);
    if (k == 0 || k > MOEVK_MAX_TOP_K)
        return bfail(b, "%s: %s.expert_used_count = %llu is not in 1..min(E = %u, %d)",
                     b->meta->path, a->name, (unsigned long long)k, E, MOEVK_MAX_TOP_K);

    /* routing */
    uint64_t gating = a->gating;
    if (a->gating_key && key_uint(b, "expert_gating_func", UINT32_MAX, a->gating, &gating) < 0)
        return -1;
    if (gating == 0) /* LLAMA_EXPERT_GATING_FUNC_TYPE_NONE: the loader's default */
        gating = a->gating;
    int norm = a->norm;
    if (a->norm_key && key_bool(b, "expert_weights_norm", a->norm, &norm) < 0)
        return -1;
    double scale = 0.0;
    if (a->scale_key && key_float(b, "expert_weights_scale", 0.0, &scale) < 0)
        return -1;
    uint64_t groups = 0, groups_used = 0;
    if (a->groups_key && (key_uint(b, "expert_group_count", E, 0, &groups) < 0 ||
                          key_uint(b, "expert_group_used_count", E, 0, &groups_used) < 0))
        return -1;
    const mvk_gguf_tensor *pb = a->probs_bias ? find(b, "exp_probs_b.bias", name, sizeof name)
                                              : NULL;
    const int scaled = scale != 0.0 && scale != 1.0;
    d->norm_topk_prob = norm;
    /* llama.cpp renormalises by max(sum, 2^-14), the smallest normal f16 */
    d->norm_min = 6.103515625e-5f;
    switch (gating) {
    case MVK_GGUF_GATING_SOFTMAX:
    case MVK_GGUF_GATING_SIGMOID:
        /* the probabilities (or sigmoids) plus exp_probs_b select, in groups
         * scored by their best two, the weights are the probabilities,
         * scaled (DeepSeek-V2: softmax and scale 16; V3: sigmoid) */
        d->routing = gating == MVK_GGUF_GATING_SOFTMAX ? MOEVK_ROUTING_SOFTMAX_TOPK
                                                       : MOEVK_ROUTING_SIGMOID_GROUPED;
        d->n_group = groups > 1 ? (uint32_t)groups : 1;
        d->topk_group = groups > 1 && groups_used ? (uint32_t)groups_used : d->n_group;
        d->routed_scaling_factor = scaled ? (float)scale : 1.0f;
        if (pb) {
            const uint64_t ne[1] = {E};
            if (!(pb = need(b, "exp_probs_b.bias", 1, ne, "[E]")))
                return -1;
            if (!(d->correction_bias = to_f32(b, pb)))
                return -1;
        }
        break;
    case MVK_GGUF_GATING_SOFTMAX_WEIGHT:
        if (norm || scaled)
            return bfail(b, "%s: %s: top-k softmax gating with %s: moevk's topk_softmax "
                         "routing has neither",
                         b->meta->path, a->name, norm ? "renormalisation" : "a weight scale");
        d->routing = MOEVK_ROUTING_TOPK_SOFTMAX;
        d->norm_topk_prob = 0;
        break;
    default:
        return bfail(b, "%s: %s.expert_gating_func = %llu is not one moevk runs (1 softmax, 2 "
                     "sigmoid, 3 softmax over the top-k)",
                     b->meta->path, a->name, (unsigned long long)gating);
    }

    /* experts */
    experts_out eo = {0};
    if (routed_experts(b, H, E, &d->experts, &eo))
        return -1;
    const uint32_t F = eo.F;
    if (key_agrees(b, "expert_feed_forward_length", F, "the experts' F"))
        return -1;
    d->experts.gate_up_dtype = (moevk_dtype)eo.up->dtype;
    d->experts.down_dtype = (moevk_dtype)eo.down->dtype;
    if (a->biases) {
        if (!(d->router_bias = bias(b, "ffn_gate_inp.bias", E, 1, "[E]")))
            return -1;
        if (has(b, "ffn_gate_up_exps.bias")) {
            float *gu = bias(b, "ffn_gate_up_exps.bias", 2ull * F, E, "[2F, E]");
            float *g = gu ? own(b, sizeof(float) * F * E) : NULL;
            float *u = g ? own(b, sizeof(float) * F * E) : NULL;
            if (!u)
                return -1;
            for (uint32_t e = 0; e < E; e++) {
                memcpy(g + (size_t)e * F, gu + (size_t)e * 2 * F, sizeof(float) * F);
                memcpy(u + (size_t)e * F, gu + (size_t)e * 2 * F + F, sizeof(float) * F);
            }
            d->experts.gate_bias = g;
            d->experts.up_bias = u;
        } else if (!(d->experts.gate_bias = bias(b, "ffn_gate_exps.bias", F, E, "[F, E]")) ||
                   !(d->experts.up_bias = bias(b, "ffn_up_exps.bias", F, E, "[F, E]"))) {
            return -1;
        }
        if (!(d->experts.down_bias = bias(b, "ffn_down_exps.bias", H, E, "[H, E]")))
            return -1;
    }

    /* shared experts */
    const mvk_gguf_tensor *sgate_t = NULL;
    if (a->shared) {
        uint64_t nshared = 0;
        if (key_uint(b, "expert_shared_count", UINT32_MAX, 0, &nshared) < 0)
            return -1;
        const mvk_gguf_tensor *su = find(b, "ffn_up_shexp.weight", name, sizeof name);
        if (!su && nshared)
            return bfail(b, "tensor '%s' is missing (%s.expert_shared_count = %llu)", name,
                         a->name, (unsigned long long)nshared);
        if (su) {
            if (su->ndim != 2 || su->ne[0] != H || !su->ne[1] || su->ne[1] > UINT32_MAX) {
                char sb[96];
                return bfail(b, "tensor '%s' has shape ne = %s; expected [H, F_shared] with "
                             "H = %u",
                             su->name, ne_str(su, sb, sizeof sb), H);
            }
            const uint32_t SF = (uint32_t)su->ne[1];
            used(b, su);
            const uint64_t gn[2] = {H, SF}, dn[2] = {SF, H};
            const mvk_gguf_tensor *sg = need(b, "ffn_gate_shexp.weight", 2, gn, "[H, F_shared]");
            const mvk_gguf_tensor *sd =
                sg ? need(b, "ffn_down_shexp.weight", 2, dn, "[F_shared, H]") : NULL;
            if (!sd || formats_ok(b, sg, su, sd))
                return -1;
            if (key_agrees(b, "expert_shared_feed_forward_length", SF, "the shared expert's F"))
                return -1;
            d->num_shared = 1;
            d->shared_ffn = SF;
            if (!(d->shared.gate = expert_data(b, sg)) || !(d->shared.up = expert_data(b, su)) ||
                !(d->shared.down = expert_data(b, sd)))
                return -1;
            d->shared.gate_up_dtype = (moevk_dtype)su->dtype;
            d->shared.down_dtype = (moevk_dtype)sd->dtype;
            if (a->shared_gate) {
                const uint64_t ne[1] = {H};
                if (!(sgate_t = need(b, "ffn_gate_inp_shexp.weight", 1, ne, "[H]")))
                    return -1;
            }
        }
    }

    /* the router (and the shared gate) in one router format */
    const int rfmt = router->dtype == MOEVK_DTYPE_F32 || router->dtype == MOEVK_DTYPE_F16 ||
                     router->dtype == MOEVK_DTYPE_BF16;
    const int same = !sgate_t || sgate_t->type == router->type;
    if (rfmt && same) {
        d->router_dtype = (moevk_dtype)router->dtype;
        if (!(d->router_weight = plain_data(b, router)))
            return -1;
        if (sgate_t && !(d->shared_gate = plain_data(b, sgate_t)))
            return -1;
    } else {
        d->router_dtype = MOEVK_DTYPE_F32;
        if (!(d->router_weight = to_f32(b, router)))
            return -1;
        if (sgate_t && !(d->shared_gate = to_f32(b, sgate_t)))
            return -1;
        if (!rfmt)
            note(b, "router %s decoded to f32", tname(router));
        else
            note(b, "router %s and shared-expert gate %s converted to f32", tname(router),
                 tname(sgate_t));
    }

    d->hidden = H;
    d->ffn = F;
    d->num_experts = E;
    d->top_k = (uint32_t)k;
    d->activation = a->activation;
    d->weight_dtype = d->experts.gate_up_dtype;
    d->flags |= MOEVK_LAYER_MATRIX_DTYPES;
    char msg[512];
    if (moevk_layer_desc_check(d, msg, sizeof msg))
        return bfail(b, "%s: layer %u: %s", b->meta->path, b->layer, msg);
    return 0;
}

int mvk_gguf_layer_build(const mvk_gguf *m, uint32_t layer, mvk_model_layer *out,
                         mvk_gguf_layer_info *info, char *err, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    if (info) {
        memset(info, 0, sizeof(*info));
        info->layer = layer;
    }
    if (!m || !m->nfiles)
        return mvk_errf(err, errsz, "no GGUF model");
    bctx b = {.m = m, .meta = &m->files[0], .layer = layer, .L = out, .info = info,
              .err = err, .errsz = errsz};
    snprintf(b.prefix, sizeof b.prefix, "blk.%u.", layer);
    if (build(&b)) {
        mvk_model_layer_free(out);
        memset(out, 0, sizeof(*out));
        return -1;
    }
    snprintf(out->prefix, sizeof out->prefix, "%s", b.prefix);
    out->arch_name = b.arch->name;
    out->file_dtype = out->desc.weight_dtype;
    return 0;
}
