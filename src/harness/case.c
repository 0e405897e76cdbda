/*
 * The harness's generator (harness.h): random MoE layer cases, every
 * routing mode, activation, dtype, capacity, shared experts and special
 * scenarios, determined by (seed, limits).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "harness/harness.h"
#include "ref/ref.h"
#include "util/rng.h"

static uint32_t umin(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

/* ---- generator ------------------------------------------------------------ */

#define DEFAULT_WORK (12ull << 20)
#define DEFAULT_WEIGHTS (4ull << 20)

static uint32_t case_mats(const moevk_layer_desc *d)
{
    return moevk_activation_is_gated(d->activation) ? 3 : 2;
}

static uint64_t work_of(uint32_t T, uint32_t H, uint32_t F, uint32_t E, uint32_t k, uint32_t mats,
                        uint32_t ns, uint32_t Fs, int sgate)
{
    return (uint64_t)T * ((uint64_t)E * H + (uint64_t)k * mats * F * H +
                          (uint64_t)ns * ((uint64_t)mats * Fs * H + (sgate ? H : 0)));
}

static uint64_t weights_of(uint32_t H, uint32_t F, uint32_t E, uint32_t mats, uint32_t ns,
                           uint32_t Fs)
{
    return (uint64_t)E * H + (uint64_t)E * mats * F * H +
           (uint64_t)ns * (mats * (uint64_t)Fs * H + H);
}

uint64_t mvkc_case_work(const mvkc_case *c)
{
    const moevk_layer_desc *d = &c->desc;
    uint32_t Fs = d->shared_ffn ? d->shared_ffn : d->ffn;
    return work_of(c->T, d->hidden, d->ffn, d->num_experts, d->top_k, case_mats(d),
                   d->num_shared, Fs, d->shared_gate != NULL);
}

/* x: uniform in [-1, 1], then the TINY and NONFINITE scenarios */
static void fill_x(mvkc_case *c, mvk_rng *r)
{
    uint32_t T = c->T, H = c->desc.hidden;
    for (size_t i = 0; i < (size_t)T * H; i++)
        c->x[i] = mvk_rng_uniform(r, -1, 1);
    if (c->scenarios & MVKC_SC_TINY) {
        uint32_t n = mvk_rng_range(r, 1, umin(T, 4));
        for (uint32_t i = 0; i < n; i++) {
            uint32_t t = mvk_rng_range(r, 0, T - 1);
            float s = powf(10.0f, -mvk_rng_uniform(r, 3, 12));
            for (uint32_t h = 0; h < H; h++)
                c->x[(size_t)t * H + h] *= s;
        }
    }
    if (c->scenarios & MVKC_SC_NONFINITE) {
        uint32_t n = mvk_rng_range(r, 1, umin(T, 3));
        for (uint32_t i = 0; i < n; i++) {
            uint32_t t = mvk_rng_range(r, 0, T - 1), h = mvk_rng_range(r, 0, H - 1);
            uint32_t kind = mvk_rng_range(r, 0, 2);
            c->x[(size_t)t * H + h] = kind == 0 ? NAN : kind == 1 ? INFINITY : -INFINITY;
        }
    }
}

/* Expert groups for a scored routing mode: n_group a divisor of E, and
 * topk_group kept groups that hold at least k experts (0 for the defaults
 * now and then). */
static void draw_groups(mvk_rng *r, uint32_t E, uint32_t k, moevk_layer_desc *d)
{
    uint32_t divs[64] = {1}, nd = 0; /* E >= 1: 1 divides it */
    for (uint32_t g = 1; g <= E && nd < 64; g++)
        if (E % g == 0)
            divs[nd++] = g;
    uint32_t n_group = divs[mvk_rng_range(r, 0, nd - 1)];
    uint32_t size = E / n_group;
    uint32_t need = (k + size - 1) / size; /* kept groups must hold k experts */
    if (need < 1)
        need = 1;
    uint32_t topk_group = mvk_rng_range(r, umin(need, n_group), n_group);
    d->n_group = n_group == 1 && mvk_rng_chance(r, 0.3) ? 0 : n_group;
    d->topk_group = topk_group == n_group && mvk_rng_chance(r, 0.3) ? 0 : topk_group;
}

/* The router's and the experts' rows of the case's x (the reference's
 * input norms), or x itself */
static void input_rows(mvkc_case *c)
{
    const moevk_layer_desc *d = &c->desc;
    const size_t n = (size_t)c->T * d->hidden;
    c->xr = c->xe = c->x;
    if (moevk_ref_has_router_input(d)) {
        moevk_ref_router_input(d, c->T, c->x, c->rows_own);
        c->xr = c->rows_own;
    }
    if (moevk_ref_has_expert_input(d)) {
        moevk_ref_expert_input(d, c->T, c->x, c->rows_own + n);
        c->xe = c->rows_own + n;
    }
}

/* 1 when the reference routing of the case has a near-tie (or -1 when out
 * of memory) */
static int has_near_tie(const mvkc_case *c)
{
    const moevk_layer_desc *d = &c->desc;
    size_t TE = (size_t)c->T * d->num_experts, TK = (size_t)c->T * moevk_routing_slots(d);
    float *l = malloc(sizeof(float) * (TE + 1));
    uint32_t *ids = malloc(sizeof(uint32_t) * (TK + 1));
    float *w = malloc(sizeof(float) * (TK + 1));
    uint8_t *tie = malloc(c->T + 1);
    int any = -1;
    if (l && ids && w && tie) {
        moevk_ref_router_logits(c->xr, c->T, d->hidden, d->router_weight, d->router_dtype,
                                d->num_experts, d->router_bias, l);
        if (moevk_ref_route(d, c->T, l, ids, w, tie) == MOEVK_SUCCESS) {
            any = 0;
            for (uint32_t t = 0; t < c->T; t++)
                any |= tie[t];
        }
    }
    free(l);
    free(ids);
    free(w);
    free(tie);
    return any;
}

/* Allocate and fill the weights of one expert set (s = 0 routed, 1 shared). */
static int make_experts(mvkc_case *c, mvk_rng *r, int s, uint32_t count, uint32_t ffn, int biases)
{
    moevk_layer_desc *d = &c->desc;
    uint32_t H = d->hidden;
    int gated = moevk_activation_is_gated(d->activation);
    int per_expert = (c->scenarios & MVKC_SC_PER_EXPERT) != 0;
    size_t elems = (size_t)ffn * H;
    moevk_expert_weights *w = s ? &d->shared : &d->experts;

    for (int m = 0; m < 3; m++) {
        if (m == 0 && !gated)
            continue;
        /* gate/up ~ U(-1,1) * 3/sqrt(H) give O(1) pre-activations; down
         * ~ U(-1,1) * sqrt(3/F) keeps the output O(1) */
        float scale = m < 2 ? 3.0f / sqrtf((float)H) : sqrtf(3.0f / (float)ffn);
        const moevk_dtype dt = (d->flags & MOEVK_LAYER_MATRIX_DTYPES)
                                   ? (m < 2 ? w->gate_up_dtype : w->down_dtype)
                                   : d->weight_dtype;
        const size_t mat_bytes = m < 2 ? (size_t)ffn * moevk_dtype_row_bytes(dt, H)
                                       : (size_t)H * moevk_dtype_row_bytes(dt, ffn);
        uint8_t *mat = malloc(mat_bytes * count + 1);
        if (!mat)
            return -1;
        c->mat[s][m] = mat;
        /* per-expert pointers: expert e's matrix stored at position
         * count-1-e of the block, so a library that assumed contiguity
         * would read the wrong expert */
        const size_t es = moevk_dtype_size(dt);
        for (uint32_t e = 0; e < count; e++) {
            size_t pos = per_expert ? count - 1 - e : e;
            if (!es) /* a block format: random valid blocks */
                mvk_rng_fill(r, dt, mat + pos * mat_bytes, elems, scale);
            for (size_t i = 0; es && i < elems; i++)
                mvk_store_dtype(mat, dt, pos * elems + i, mvk_rng_uniform(r, -scale, scale));
        }
        if (per_expert) {
            const void **p = malloc(sizeof(void *) * (count ? count : 1));
            if (!p)
                return -1;
            c->ptrs[s][m] = p;
            for (uint32_t e = 0; e < count; e++)
                p[e] = (const char *)mat + (count - 1 - e) * mat_bytes;
        }
        if (biases & (1 << m)) {
            size_t n = (size_t)count * (m < 2 ? ffn : H);
            c->bias[s][m] = mvk_rng_array(r, MOEVK_DTYPE_F32, n, 0.5f);
            if (!c->bias[s][m])
                return -1;
        }
        const void *contig = per_expert ? NULL : mat;
        const void *const *pe = per_expert ? c->ptrs[s][m] : NULL;
        if (m == 0) {
            w->gate = contig;
            w->gate_experts = pe;
            w->gate_bias = c->bias[s][0];
        } else if (m == 1) {
            w->up = contig;
            w->up_experts = pe;
            w->up_bias = c->bias[s][1];
        } else {
            w->down = contig;
            w->down_experts = pe;
            w->down_bias = c->bias[s][2];
        }
    }
    return 0;
}

moevk_status mvkc_case_random(uint64_t seed, const mvkc_limits *lim_in, mvkc_case *out)
{
    mvkc_limits lim;
    if (lim_in)
        lim = *lim_in;
    else
        memset(&lim, 0, sizeof lim);
    uint64_t max_work = lim.max_work ? lim.max_work : DEFAULT_WORK;
    uint64_t max_weights = lim.max_weights ? lim.max_weights : DEFAULT_WEIGHTS;

    memset(out, 0, sizeof *out);
    out->seed = seed;
    mvkc_case *c = out;
    moevk_layer_desc *d = &c->desc;
    mvk_rng r = mvk_rng_seed(seed, 1);

    /* scenarios */
    uint32_t sc = 0;
    if (mvk_rng_chance(&r, 0.12)) sc |= MVKC_SC_ONE_EXPERT;
    if (mvk_rng_chance(&r, 0.10)) sc |= MVKC_SC_IDLE;
    if (mvk_rng_chance(&r, 0.15)) sc |= MVKC_SC_TIES;
    if (mvk_rng_chance(&r, 0.10)) sc |= MVKC_SC_NONFINITE;
    if (mvk_rng_chance(&r, 0.10)) sc |= MVKC_SC_TINY;
    if (mvk_rng_chance(&r, 0.25)) sc |= MVKC_SC_PER_EXPERT;
    sc = (sc | lim.scenarios_on) & ~lim.scenarios_off;

    /* tokens and experts */
    static const uint32_t token_set[] = {1, 7, 129, 1000};
    uint32_t T = lim.tokens;
    if (!T) {
        if (sc & MVKC_SC_IDLE)
            T = mvk_rng_range(&r, 1, 4);
        else if (mvk_rng_chance(&r, 0.5))
            T = token_set[mvk_rng_range(&r, 0, 3)];
        else
            T = mvk_rng_range(&r, 1, 300);
        if (lim.max_tokens)
            T = umin(T, lim.max_tokens);
    }
    uint32_t E = lim.experts;
    if (!E) {
        if (sc & MVKC_SC_IDLE) {
            E = mvk_rng_range(&r, 128, 1024);
        } else if (mvk_rng_chance(&r, 0.15)) {
            E = 1u << mvk_rng_range(&r, 0, 10);
        } else {
            uint32_t u = mvk_rng_range(&r, 0, 99);
            E = u < 25 ? mvk_rng_range(&r, 1, 8) : u < 60 ? mvk_rng_range(&r, 9, 64)
                : u < 80 ? mvk_rng_range(&r, 65, 256) : mvk_rng_range(&r, 257, 1024);
        }
        if (lim.max_experts)
            E = umin(E, lim.max_experts);
    }
    uint32_t kmax = umin(E, MOEVK_MAX_TOP_K);
    uint32_t k = lim.top_k == MVKC_K_ALL ? kmax : lim.top_k;
    if (!k) {
        uint32_t u = mvk_rng_range(&r, 0, 99);
        k = u < 25   ? 1
            : u < 40 ? kmax
            : u < 80 ? mvk_rng_range(&r, 1, umin(kmax, 8))
                     : mvk_rng_range(&r, 1, kmax);
        if (sc & MVKC_SC_IDLE)
            k = umin(k, 4);
    }
    if (E < 2)
        sc &= ~(uint32_t)MVKC_SC_TIES;

    /* routing */
    d->routing = lim.routing ? (moevk_routing)(lim.routing - 1)
                             : (moevk_routing)mvk_rng_range(&r, 0, 2);
    d->norm_topk_prob = mvk_rng_chance(&r, 0.5);
    if (d->routing == MOEVK_ROUTING_SIGMOID_GROUPED) {
        draw_groups(&r, E, k, d);
        d->routed_scaling_factor = mvk_rng_chance(&r, 0.5) ? 0.0f : mvk_rng_uniform(&r, 0.5f, 3.0f);
    }
    /* routing refinements, from a stream of their own (the other draws stay
     * as they were): groups and a correction bias for softmax_topk
     * (DeepSeek-V2, ERNIE-4.5), the group max, a p-norm, norm_min, a
     * scaling factor in the softmax modes; in two fifths of the cases */
    mvk_rng rr = mvk_rng_seed(seed, 7);
    int softmax_bias = 0;
    if (mvk_rng_chance(&rr, 0.4)) {
        const bool sm = d->routing == MOEVK_ROUTING_SOFTMAX_TOPK;
        const bool scored = d->routing != MOEVK_ROUTING_TOPK_SOFTMAX &&
                            d->routing != MOEVK_ROUTING_SPARSEMIXER;
        if (sm && mvk_rng_chance(&rr, 0.5))
            draw_groups(&rr, E, k, d);
        if (scored && mvk_rng_chance(&rr, 0.5))
            d->group_score = MOEVK_GROUP_MAX;
        if (scored && mvk_rng_chance(&rr, 0.3)) {
            static const float ps[] = {2.0f, 0.5f, 3.0f, 1.0f};
            uint32_t i = mvk_rng_range(&rr, 0, 4);
            d->norm_p = i < 4 ? ps[i] : mvk_rng_uniform(&rr, 0.5f, 4.0f);
        }
        if (scored && mvk_rng_chance(&rr, 0.3))
            d->norm_min = mvk_rng_chance(&rr, 0.5) ? 1e-12f : mvk_rng_uniform(&rr, 0.1f, 1.2f);
        if (!scored || sm)
            if (mvk_rng_chance(&rr, 0.4))
                d->routed_scaling_factor = mvk_rng_uniform(&rr, 0.5f, 3.0f);
        softmax_bias = sm && mvk_rng_chance(&rr, 0.4);
    }
    /* an epsilon added to the normalisation's denominator (LFM2-MoE's 1e-6,
     * or one large enough to show), when there is no norm_min; from a
     * stream of its own */
    mvk_rng rne = mvk_rng_seed(seed, 16);
    if (d->routing != MOEVK_ROUTING_TOPK_SOFTMAX && d->routing != MOEVK_ROUTING_SPARSEMIXER &&
        d->norm_min == 0.0f && mvk_rng_chance(&rne, 0.2))
        d->norm_eps = mvk_rng_chance(&rne, 0.5) ? 1e-6f : mvk_rng_uniform(&rne, 0.01f, 0.5f);
    /* a soft cap on the router logits (Laguna), from a stream of its own:
     * small caps that bend most logits, or larger ones that bend the
     * largest; not with one dominant expert, whose lead a cap takes away */
    mvk_rng rsc = mvk_rng_seed(seed, 17);
    if (!(sc & MVKC_SC_ONE_EXPERT) && lim.router_softcap >= 0 && mvk_rng_chance(&rsc, 0.2))
        d->router_softcap = mvk_rng_chance(&rsc, 0.5) ? mvk_rng_uniform(&rsc, 0.05f, 1.0f)
                                                      : mvk_rng_uniform(&rsc, 1.0f, 30.0f);
    /* selection on the logits plus the correction bias (Kolibri-1), in the
     * modes that score, from a stream of its own */
    mvk_rng rsl = mvk_rng_seed(seed, 18);
    if (d->routing != MOEVK_ROUTING_TOPK_SOFTMAX && d->routing != MOEVK_ROUTING_SPARSEMIXER &&
        mvk_rng_chance(&rsl, 0.25))
        d->select_on_logits = 1;
    /* expert choice, from a stream of its own: an eighth of the cases whose
     * routing is drawn; it has none of the per-token refinements */
    mvk_rng rec = mvk_rng_seed(seed, 19);
    if (!lim.routing && mvk_rng_chance(&rec, 0.125))
        d->routing = MOEVK_ROUTING_EXPERT_CHOICE;
    if (d->routing == MOEVK_ROUTING_EXPERT_CHOICE) {
        d->norm_topk_prob = 0;
        d->n_group = d->topk_group = 0;
        d->group_score = MOEVK_GROUP_TOP2_SUM;
        d->norm_p = d->norm_min = d->norm_eps = 0.0f;
        d->select_on_logits = 0;
        softmax_bias = 0;
    }
    /* SparseMixer (PhiMoE), from a stream of its own: half of the drawn
     * topk_softmax cases (the mode that, like it, selects on the plain
     * logits with no groups or bias) become sparsemixer, with PhiMoE's
     * jitter_eps, a threshold that keeps a few experts, none (0: only
     * ties), or a large one that keeps nearly every expert */
    mvk_rng rsm = mvk_rng_seed(seed, 20);
    if (!lim.routing && d->routing == MOEVK_ROUTING_TOPK_SOFTMAX && mvk_rng_chance(&rsm, 0.5))
        d->routing = MOEVK_ROUTING_SPARSEMIXER;
    if (d->routing == MOEVK_ROUTING_SPARSEMIXER) {
        d->norm_topk_prob = 0;
        uint32_t u = mvk_rng_range(&rsm, 0, 9);
        d->jitter_eps = u < 4   ? 0.01f
                        : u < 8 ? mvk_rng_uniform(&rsm, 0.0f, 0.3f)
                        : u < 9 ? 0.0f
                                : mvk_rng_uniform(&rsm, 0.5f, 5.0f);
    }
    /* sqrt(softplus) scores (DeepSeek-V4) in a third of the sigmoid_grouped
     * cases, from a stream of its own */
    mvk_rng rsf = mvk_rng_seed(seed, 22);
    if (d->routing == MOEVK_ROUTING_SIGMOID_GROUPED && mvk_rng_chance(&rsf, 0.33))
        d->score_fn = MOEVK_SCORE_SQRTSOFTPLUS;
    /* capacity */
    if (lim.capacity_factor < 0)
        d->capacity_factor = 0;
    else if (lim.capacity_factor > 0)
        d->capacity_factor = lim.capacity_factor;
    else if (mvk_rng_chance(&r, 0.6))
        d->capacity_factor = 0;
    else if (k == 1 && mvk_rng_chance(&r, 0.3))
        d->capacity_factor = 1.25f; /* Switch Transformer */
    else
        d->capacity_factor = mvk_rng_uniform(&r, 0.25f, 2.0f);

    /* activation and dtypes */
    d->activation = lim.activation ? (moevk_activation)(lim.activation - 1)
                                   : (moevk_activation)mvk_rng_range(&r, 0, 5);
    if (d->activation == MOEVK_ACT_SWIGLU_OAI) {
        d->swiglu_alpha = mvk_rng_chance(&r, 0.5) ? 0.0f : mvk_rng_uniform(&r, 1.0f, 2.5f);
        d->swiglu_limit = mvk_rng_chance(&r, 0.4) ? 0.0f : mvk_rng_uniform(&r, 0.3f, 10.0f);
    }
    /* the activations added later (relu^2 for a non-gated one, the clamped
     * SwiGLU for a gated one), from a stream of their own: a sixth of the
     * cases whose activation is drawn */
    mvk_rng ra = mvk_rng_seed(seed, 9);
    if (!lim.activation && d->activation != MOEVK_ACT_SWIGLU_OAI && mvk_rng_chance(&ra, 1.0 / 6.0)) {
        if (moevk_activation_is_gated(d->activation)) {
            d->activation = MOEVK_ACT_SWIGLU_CLAMP;
            d->swiglu_limit = mvk_rng_chance(&ra, 0.3) ? 0.0f : mvk_rng_uniform(&ra, 0.3f, 4.0f);
        } else {
            d->activation = MOEVK_ACT_RELU2;
        }
    }
    /* the soft-capped SwiGLU (Inkling-2) and the SwiGLU clamped after its
     * silu (Step-3.7), from a stream of their own: a sixth of the drawn
     * gated ones that stayed plain SwiGLU-family */
    mvk_rng rac = mvk_rng_seed(seed, 13);
    if (!lim.activation && moevk_activation_is_gated(d->activation) &&
        d->activation != MOEVK_ACT_SWIGLU_OAI && d->activation != MOEVK_ACT_SWIGLU_CLAMP &&
        mvk_rng_chance(&rac, 1.0 / 6.0)) {
        if (mvk_rng_chance(&rac, 0.5)) {
            d->activation = MOEVK_ACT_SWIGLU_SOFTCAP;
            d->softcap_gate = mvk_rng_chance(&rac, 0.3) ? 0.0f : mvk_rng_uniform(&rac, 0.3f, 6.0f);
            d->softcap_up = mvk_rng_chance(&rac, 0.3) ? 0.0f : mvk_rng_uniform(&rac, 0.3f, 30.0f);
        } else {
            d->activation = MOEVK_ACT_SWIGLU_POSTCLAMP;
            d->swiglu_limit = mvk_rng_chance(&rac, 0.3) ? 0.0f : mvk_rng_uniform(&rac, 0.1f, 3.0f);
        }
    }
    d->weight_dtype = lim.weight_dtype ? (moevk_dtype)(lim.weight_dtype - 1)
                                       : (moevk_dtype)mvk_rng_range(&r, 0, 2);
    d->router_dtype = lim.router_dtype ? (moevk_dtype)(lim.router_dtype - 1)
                                       : (moevk_dtype)mvk_rng_range(&r, 0, 2);

    /* shared experts */
    uint32_t ns;
    if (lim.num_shared) {
        ns = lim.num_shared - 1;
    } else {
        uint32_t u = mvk_rng_range(&r, 0, 99);
        ns = u < 50 ? 0 : u < 85 ? 1 : 2;
    }
    uint32_t shared_ffn = ns && mvk_rng_chance(&r, 0.5) ? mvk_rng_range(&r, 1, 300) : 0;
    int sgate = ns && mvk_rng_chance(&r, 0.5);

    /* sizes, shrunk to the budget */
    uint32_t H = lim.hidden                  ? lim.hidden
                 : mvk_rng_chance(&r, 0.1) ? mvk_rng_range(&r, 301, 2048)
                                           : mvk_rng_range(&r, 1, 300);
    uint32_t F = lim.ffn                     ? lim.ffn
                 : mvk_rng_chance(&r, 0.1) ? mvk_rng_range(&r, 301, 2048)
                                           : mvk_rng_range(&r, 1, 300);
    uint32_t mats = moevk_activation_is_gated(d->activation) ? 3 : 2;
    for (int iter = 0; iter < 1000; iter++) {
        uint32_t Fs = shared_ffn ? shared_ffn : F;
        if (work_of(T, H, F, E, k, mats, ns, Fs, sgate) <= max_work &&
            weights_of(H, F, E, mats, ns, Fs) <= max_weights)
            break;
        uint32_t *cand[3] = {lim.hidden ? NULL : &H, lim.ffn ? NULL : &F,
                             shared_ffn ? &shared_ffn : NULL};
        uint32_t *big = NULL;
        for (int i = 0; i < 3; i++)
            if (cand[i] && *cand[i] > 8 && (!big || *cand[i] > *big))
                big = cand[i];
        if (!big && !lim.tokens && T > 1) {
            T = T * 3 / 4 ? T * 3 / 4 : 1;
            continue;
        }
        for (int i = 0; !big && i < 3; i++)
            if (cand[i] && *cand[i] > 1 && (!big || *cand[i] > *big))
                big = cand[i];
        if (!big)
            break; /* everything forced: accept */
        *big = *big * 3 / 4 ? *big * 3 / 4 : 1;
    }

    /* block formats, from a stream of their own so that every other case
     * draws what it did before: a quarter of the cases hold the gate/up
     * rows and the down rows in block formats (the same one or two), and
     * their rows are made whole blocks */
    mvk_rng rb = mvk_rng_seed(seed, 5);
    const bool blocks = lim.blocks > 0 || (lim.blocks == 0 && !lim.weight_dtype &&
                                          mvk_rng_chance(&rb, 0.25));
    if (blocks) {
        moevk_dtype fmts[32];
        uint32_t nf = 0;
        for (size_t i = 0; mvk_format_at(i) && nf < 32; i++) {
            const mvk_format *f = mvk_format_at(i);
            if (f->block_elems > 1 && (f->uses & MVK_FORMAT_EXPERT))
                fmts[nf++] = f->dtype;
        }
        const moevk_dtype gu = fmts[mvk_rng_range(&rb, 0, nf - 1)];
        const moevk_dtype dn = mvk_rng_chance(&rb, 0.5) ? gu : fmts[mvk_rng_range(&rb, 0, nf - 1)];
        const uint32_t bgu = moevk_dtype_block_elems(gu), bdn = moevk_dtype_block_elems(dn);
        if (!lim.hidden || lim.hidden % bgu == 0)
            H = H < bgu ? bgu : H / bgu * bgu;
        if (!lim.ffn || lim.ffn % bdn == 0)
            F = F < bdn ? bdn : F / bdn * bdn;
        if (shared_ffn)
            shared_ffn = shared_ffn < bdn ? bdn : shared_ffn / bdn * bdn;
        if (H % bgu == 0 && F % bdn == 0) {
            d->flags |= MOEVK_LAYER_MATRIX_DTYPES;
            d->experts.gate_up_dtype = d->shared.gate_up_dtype = gu;
            d->experts.down_dtype = d->shared.down_dtype = dn;
        }
    }

    /* a block format forced for every matrix (weight_dtype): the random
     * sizes made whole blocks of it (a forced size must be one already) */
    const uint32_t bw = moevk_dtype_block_elems(d->weight_dtype);
    if (!blocks && bw > 1) {
        if (!lim.hidden)
            H = H < bw ? bw : H / bw * bw;
        if (!lim.ffn)
            F = F < bw ? bw : F / bw * bw;
        if (shared_ffn)
            shared_ffn = shared_ffn < bw ? bw : shared_ffn / bw * bw;
    }

    /* a device-memory budget for the routed experts, from a stream of its
     * own (the other draws stay as they were): 0 experts, 1, some, all
     * but one, all; a fifth of the cases, some with a static cache */
    mvk_rng rv = mvk_rng_seed(seed, 6);
    if (!lim.no_budget && mvk_rng_chance(&rv, 0.2)) {
        const bool per = (d->flags & MOEVK_LAYER_MATRIX_DTYPES) != 0;
        const moevk_dtype gu = per ? d->experts.gate_up_dtype : d->weight_dtype;
        const moevk_dtype dn = per ? d->experts.down_dtype : d->weight_dtype;
        const uint64_t eb = (mats - 1) * (uint64_t)F * mvk_format_row_bytes(gu, H) +
                            (uint64_t)H * mvk_format_row_bytes(dn, F);
        const uint32_t u = mvk_rng_range(&rv, 0, 4);
        const uint32_t fit = u == 0 ? 0 : u == 1 ? 1 : u == 2 ? mvk_rng_range(&rv, 0, E)
                             : u == 3 ? E - 1 : E;
        d->flags |= MOEVK_LAYER_VRAM_BUDGET;
        d->vram_budget = fit * eb + (u == 2 ? mvk_rng_range(&rv, 0, (eb > (1u << 30) ? (1u << 30) : (uint32_t)eb) - 1) : 0);
        if (mvk_rng_chance(&rv, 0.3))
            d->flags |= MOEVK_LAYER_CACHE_STATIC;
    }
    /* the routing weights on the experts' inputs (Llama 4), from a stream
     * of its own, in a sixth of the cases */
    mvk_rng rsh = mvk_rng_seed(seed, 10);
    if (mvk_rng_chance(&rsh, 0.2)) /* a factor on the shared output: Cohere2-MoE's average */
        d->shared_scale = mvk_rng_chance(&rsh, 0.5) ? 0.5f : mvk_rng_uniform(&rsh, -2.0f, 2.0f);
    mvk_rng ri = mvk_rng_seed(seed, 8);
    if (mvk_rng_chance(&ri, 1.0 / 6.0))
        d->flags |= MOEVK_LAYER_WEIGHTS_ON_INPUT;
    /* the shared experts' own activation (HY-V4, Step-3.7), gated like the
     * routed one, from a stream of its own: a quarter of the cases with
     * shared experts */
    mvk_rng rsa = mvk_rng_seed(seed, 14);
    if (ns && mvk_rng_chance(&rsa, 0.25)) {
        static const moevk_activation gated_acts[] = {
            MOEVK_ACT_SWIGLU, MOEVK_ACT_GEGLU, MOEVK_ACT_GEGLU_TANH, MOEVK_ACT_SWIGLU_OAI,
            MOEVK_ACT_SWIGLU_CLAMP, MOEVK_ACT_SWIGLU_SOFTCAP, MOEVK_ACT_SWIGLU_POSTCLAMP};
        static const moevk_activation plain_acts[] = {MOEVK_ACT_RELU, MOEVK_ACT_GELU,
                                                      MOEVK_ACT_RELU2};
        const bool g = moevk_activation_is_gated(d->activation);
        d->flags |= MOEVK_LAYER_SHARED_ACTIVATION;
        d->shared_activation = g ? gated_acts[mvk_rng_range(&rsa, 0, 6)]
                                 : plain_acts[mvk_rng_range(&rsa, 0, 2)];
        d->shared_swiglu_limit =
            mvk_rng_chance(&rsa, 0.4) ? 0.0f : mvk_rng_uniform(&rsa, 0.1f, 4.0f);
    }
    /* identity ("zero") experts (LongCat-Flash): the last nz of the E router
     * experts, from a stream of their own */
    mvk_rng rz = mvk_rng_seed(seed, 12);
    uint32_t nz = 0;
    if (E >= 2 && mvk_rng_chance(&rz, 0.15))
        nz = mvk_rng_range(&rz, 1, E - 1);
    d->num_zero_experts = nz;

    c->T = T;
    c->scenarios = sc;
    d->hidden = H;
    d->ffn = F;
    d->num_experts = E;
    d->top_k = k;
    d->num_shared = ns;
    d->shared_ffn = shared_ffn;

    /* router */
    c->router = mvk_rng_array(&r, d->router_dtype, (size_t)E * H, 3.0f / sqrtf((float)H));
    if (!c->router)
        goto oom;
    d->router_weight = c->router;
    if (mvk_rng_chance(&r, 0.5)) {
        if (!(c->router_bias = mvk_rng_array(&r, MOEVK_DTYPE_F32, E, 0.5f)))
            goto oom;
    }
    if (d->routing == MOEVK_ROUTING_SIGMOID_GROUPED && mvk_rng_chance(&r, 0.6)) {
        if (!(c->correction_bias = mvk_rng_array(&r, MOEVK_DTYPE_F32, E, 0.1f)))
            goto oom;
    }
    /* an output bias (JetMoE), from a stream of its own */
    mvk_rng rob = mvk_rng_seed(seed, 11);
    if (mvk_rng_chance(&rob, 0.15)) {
        if (!(c->output_bias = mvk_rng_array(&rob, MOEVK_DTYPE_F32, H, 0.5f)))
            goto oom;
        d->output_bias = c->output_bias;
    }
    /* Gemma 4's input norms and per-expert weight scale, from a stream of
     * their own: the router's norm with its scale and factor, the experts'
     * norm with its weight, each part in most such cases */
    mvk_rng rgn = mvk_rng_seed(seed, 21);
    if (!lim.no_input_norms && mvk_rng_chance(&rgn, 0.15)) {
        if (!(c->norm_arrays = mvk_rng_array(&rgn, MOEVK_DTYPE_F32, 2 * (size_t)H + E, 1.0f)))
            goto oom;
        for (size_t i = 2 * (size_t)H; i < 2 * (size_t)H + E; i++)
            c->norm_arrays[i] += 1.5f; /* per-expert scales in 0.5 .. 2.5 */
        if (mvk_rng_chance(&rgn, 0.8))
            d->router_norm_eps = mvk_rng_chance(&rgn, 0.5) ? 1e-6f : 0.1f;
        if (mvk_rng_chance(&rgn, 0.7))
            d->router_input_scale = c->norm_arrays;
        if (mvk_rng_chance(&rgn, 0.7))
            d->router_input_factor = 3.0f / sqrtf((float)H);
        if (mvk_rng_chance(&rgn, 0.8)) {
            d->expert_norm_eps = mvk_rng_chance(&rgn, 0.5) ? 1e-6f : 0.1f;
            if (mvk_rng_chance(&rgn, 0.7))
                d->expert_norm_weight = c->norm_arrays + H;
        }
        if (d->routing != MOEVK_ROUTING_EXPERT_CHOICE && mvk_rng_chance(&rgn, 0.7))
            d->expert_weight_scale = c->norm_arrays + 2 * (size_t)H;
    }
    if (moevk_ref_has_router_input(d) || moevk_ref_has_expert_input(d)) {
        if (!(c->rows_own = malloc(sizeof(float) * (2 * (size_t)T * H + 1))))
            goto oom;
    }
    /* softmax probabilities are about 1/E: a bias of that size reorders */
    if (softmax_bias && !(c->correction_bias = mvk_rng_array(&rr, MOEVK_DTYPE_F32, E,
                                                              1.0f / (float)E)))
        goto oom;

    /* experts (swiglu_oai always with biases) */
    int biases = d->activation == MOEVK_ACT_SWIGLU_OAI ? 7 : 0;
    for (int m = 0; m < 3; m++)
        if (mvk_rng_chance(&r, 0.3))
            biases |= 1 << m;
    if (!moevk_activation_is_gated(d->activation))
        biases &= ~1;
    if (make_experts(c, &r, 0, E - nz, F, biases))
        goto oom;
    if (ns) {
        if (make_experts(c, &r, 1, ns, shared_ffn ? shared_ffn : F, biases))
            goto oom;
        if (sgate) {
            c->shared_gate = mvk_rng_array(&r, d->router_dtype, (size_t)ns * H,
                                           3.0f / sqrtf((float)H));
            if (!c->shared_gate)
                goto oom;
            d->shared_gate = c->shared_gate;
        }
    }
    /* the shared gates as a sink of the normalisation (Inkling), from a
     * stream of its own: half the cases that can have it */
    mvk_rng rsk = mvk_rng_seed(seed, 23);
    if (ns && d->routing == MOEVK_ROUTING_SIGMOID_GROUPED && (d->norm_p == 0.0f || d->norm_p == 1.0f) &&
        d->norm_min == 0.0f && d->norm_eps == 0.0f && mvk_rng_chance(&rsk, 0.5)) {
        d->shared_sink = 1;
        d->norm_topk_prob = 1;
        if (!d->shared_gate) {
            c->shared_gate = mvk_rng_array(&rsk, d->router_dtype, (size_t)ns * H,
                                           3.0f / sqrtf((float)H));
            if (!c->shared_gate)
                goto oom;
            d->shared_gate = c->shared_gate;
        }
    }

    /* one dominant expert: +20 on its logit (and +10 on its corrected
     * score, so that its group is always kept) */
    if (sc & MVKC_SC_ONE_EXPERT) {
        c->dominant = mvk_rng_range(&r, 0, E - 1);
        if (!c->router_bias && !(c->router_bias = calloc(E, sizeof(float))))
            goto oom;
        c->router_bias[c->dominant] += 20.0f;
        if (d->routing == MOEVK_ROUTING_SIGMOID_GROUPED) {
            if (!c->correction_bias && !(c->correction_bias = calloc(E, sizeof(float))))
                goto oom;
            c->correction_bias[c->dominant] += 10.0f;
        }
    }
    /* exact ties: copy a router row (and its biases) onto another expert */
    if (sc & MVKC_SC_TIES) {
        uint32_t n = mvk_rng_range(&r, 1, umin(4, E / 2));
        uint32_t used[8];
        uint32_t nused = 0;
        size_t rs = moevk_dtype_size(d->router_dtype) * H;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t a, b;
            int fresh;
            do {
                a = (i == 0 && (sc & MVKC_SC_ONE_EXPERT) && mvk_rng_chance(&r, 0.5))
                        ? c->dominant
                        : mvk_rng_range(&r, 0, E - 1);
                b = mvk_rng_range(&r, 0, E - 1);
                fresh = a != b;
                for (uint32_t j = 0; j < nused; j++)
                    fresh &= used[j] != a && used[j] != b;
            } while (!fresh);
            used[nused++] = a;
            used[nused++] = b;
            memcpy((char *)c->router + b * rs, (char *)c->router + a * rs, rs);
            if (c->router_bias)
                c->router_bias[b] = c->router_bias[a];
            if (c->correction_bias)
                c->correction_bias[b] = c->correction_bias[a];
            c->tie[i][0] = umin(a, b);
            c->tie[i][1] = a < b ? b : a;
        }
        c->n_ties = n;
    }
    d->router_bias = c->router_bias;
    d->correction_bias = d->routing != MOEVK_ROUTING_TOPK_SOFTMAX &&
                                 d->routing != MOEVK_ROUTING_SPARSEMIXER &&
                                 d->routing != MOEVK_ROUTING_EXPERT_CHOICE
                             ? c->correction_bias
                             : NULL;

    /* input; under capacity, redraw it (seed + 1, ...) while the reference
     * routing has a near-tie, whose flip would cascade through admission
     * (not under expert choice, whose capacity is in the choice: a flip
     * there changes the two tokens' outputs only) */
    /* NLLB-MoE's capacity (a fraction of the tokens, in a third of the
     * cases with a drawn capacity) and its renormalisation after dropping
     * (in half of those), from a stream of its own */
    mvk_rng rnl = mvk_rng_seed(seed, 24);
    if (d->capacity_factor > 0 && lim.capacity_factor == 0 &&
        d->routing != MOEVK_ROUTING_EXPERT_CHOICE) { /* (a capacity the limits fix stays) */
        if (mvk_rng_chance(&rnl, 0.33)) {
            d->capacity_fraction = 0.125 + 0.875 * mvk_rng_uniform(&rnl, 0.0f, 1.0f);
            d->capacity_factor = 0;
        }
        if (!(d->flags & MOEVK_LAYER_WEIGHTS_ON_INPUT) && mvk_rng_chance(&rnl, 0.5))
            d->drop_renorm_eps = mvk_rng_chance(&rnl, 0.7) ? 1.1920929e-7f
                                                           : mvk_rng_uniform(&rnl, 0.05f, 0.5f);
    }
    c->x = malloc(sizeof(float) * ((size_t)T * H + 1));
    if (!c->x)
        goto oom;
    mvk_rng rx = mvk_rng_seed(seed, 2);
    fill_x(c, &rx);
    input_rows(c);
    if ((d->capacity_factor > 0 || d->capacity_fraction > 0) &&
        d->routing != MOEVK_ROUTING_EXPERT_CHOICE) {
        for (uint32_t attempt = 1;; attempt++) {
            int tie = has_near_tie(c);
            if (tie < 0)
                goto oom;
            if (!tie)
                break;
            if (attempt > 10) {
                d->capacity_factor = 0;
                d->capacity_fraction = 0;
                c->capacity_removed = 1;
                break;
            }
            rx = mvk_rng_seed(seed + attempt, 2);
            fill_x(c, &rx);
            input_rows(c);
            c->x_resamples = attempt;
        }
    }
    return MOEVK_SUCCESS;
oom:
    mvkc_case_free(c);
    return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
}

void mvkc_case_free(mvkc_case *c)
{
    if (!c)
        return;
    free(c->x);
    free(c->router);
    free(c->shared_gate);
    free(c->router_bias);
    free(c->correction_bias);
    free(c->output_bias);
    free(c->norm_arrays);
    free(c->rows_own);
    for (int s = 0; s < 2; s++) {
        for (int m = 0; m < 3; m++) {
            free(c->mat[s][m]);
            free(c->bias[s][m]);
            free((void *)c->ptrs[s][m]);
        }
    }
    memset(c, 0, sizeof *c);
}

const char *mvkc_routing_name(moevk_routing r)
{
    switch (r) {
    case MOEVK_ROUTING_SOFTMAX_TOPK: return "softmax_topk";
    case MOEVK_ROUTING_TOPK_SOFTMAX: return "topk_softmax";
    case MOEVK_ROUTING_SIGMOID_GROUPED: return "sigmoid_grouped";
    case MOEVK_ROUTING_EXPERT_CHOICE: return "expert_choice";
    case MOEVK_ROUTING_SPARSEMIXER: return "sparsemixer";
    }
    return "routing?";
}

static const char *act_name(moevk_activation a)
{
    switch (a) {
    case MOEVK_ACT_SWIGLU: return "swiglu";
    case MOEVK_ACT_GEGLU: return "geglu";
    case MOEVK_ACT_GEGLU_TANH: return "geglu_tanh";
    case MOEVK_ACT_SWIGLU_OAI: return "swiglu_oai";
    case MOEVK_ACT_RELU: return "relu";
    case MOEVK_ACT_GELU: return "gelu";
    case MOEVK_ACT_RELU2: return "relu2";
    case MOEVK_ACT_SWIGLU_CLAMP: return "swiglu_clamp";
    case MOEVK_ACT_SWIGLU_SOFTCAP: return "swiglu_softcap";
    case MOEVK_ACT_SWIGLU_POSTCLAMP: return "swiglu_postclamp";
    }
    return "act?";
}

/* append to buf[n] at *pos, never overflowing */
static void app(char *buf, size_t n, size_t *pos, const char *fmt, ...)
{
    if (*pos >= n)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *pos, n - *pos, fmt, ap);
    va_end(ap);
    if (w > 0)
        *pos += (size_t)w;
}

void mvkc_case_describe(const mvkc_case *c, char *buf, size_t n)
{
    const moevk_layer_desc *d = &c->desc;
    size_t p = 0;
    if (!n)
        return;
    buf[0] = 0;
    app(buf, n, &p, "T=%u H=%u F=%u E=%u k=%u %s", c->T, d->hidden, d->ffn, d->num_experts,
        d->top_k, mvkc_routing_name(d->routing));
    {
        const char *sep = "(";
        if (d->n_group > 1 || d->routing == MOEVK_ROUTING_SIGMOID_GROUPED) {
            app(buf, n, &p, "%sg=%u/%u%s", sep, d->topk_group, d->n_group,
                d->group_score == MOEVK_GROUP_MAX ? "max" : "");
            sep = ",";
        }
        if (d->routed_scaling_factor) {
            app(buf, n, &p, "%sx%.3g", sep, d->routed_scaling_factor);
            sep = ",";
        }
        if (d->correction_bias) {
            app(buf, n, &p, "%scb", sep);
            sep = ",";
        }
        if (d->select_on_logits) {
            app(buf, n, &p, "%son-logits", sep);
            sep = ",";
        }
        if (d->score_fn == MOEVK_SCORE_SQRTSOFTPLUS) {
            app(buf, n, &p, "%ssqrtsoftplus", sep);
            sep = ",";
        }
        if (d->shared_sink) {
            app(buf, n, &p, "%ssink", sep);
            sep = ",";
        }
        if (d->router_softcap) {
            app(buf, n, &p, "%scap=%.3g", sep, d->router_softcap);
            sep = ",";
        }
        if (d->routing == MOEVK_ROUTING_SPARSEMIXER) {
            app(buf, n, &p, "%seps=%.3g", sep, d->jitter_eps);
            sep = ",";
        }
        if (*sep == ',')
            app(buf, n, &p, ")");
    }
    if (d->routing != MOEVK_ROUTING_TOPK_SOFTMAX && d->routing != MOEVK_ROUTING_SPARSEMIXER &&
        d->norm_topk_prob) {
        app(buf, n, &p, "+norm");
        if (d->norm_p)
            app(buf, n, &p, "(p=%.3g)", d->norm_p);
        if (d->norm_min)
            app(buf, n, &p, "(min=%.3g)", d->norm_min);
        if (d->norm_eps)
            app(buf, n, &p, "(eps=%.3g)", d->norm_eps);
    }
    app(buf, n, &p, " %s", act_name(d->activation));
    if (d->activation == MOEVK_ACT_SWIGLU_OAI)
        app(buf, n, &p, "(a=%.3g,l=%.3g)", d->swiglu_alpha, d->swiglu_limit);
    if (d->activation == MOEVK_ACT_SWIGLU_CLAMP || d->activation == MOEVK_ACT_SWIGLU_POSTCLAMP)
        app(buf, n, &p, "(l=%.3g)", d->swiglu_limit);
    if (d->activation == MOEVK_ACT_SWIGLU_SOFTCAP)
        app(buf, n, &p, "(cg=%.3g,cu=%.3g)", d->softcap_gate, d->softcap_up);
    if (d->flags & MOEVK_LAYER_SHARED_ACTIVATION)
        app(buf, n, &p, " shared:%s(l=%.3g)", act_name(d->shared_activation),
            d->shared_swiglu_limit);
    if (d->flags & MOEVK_LAYER_MATRIX_DTYPES)
        app(buf, n, &p, " w=%s/%s r=%s", moevk_dtype_name(d->experts.gate_up_dtype),
            moevk_dtype_name(d->experts.down_dtype), moevk_dtype_name(d->router_dtype));
    else
        app(buf, n, &p, " w=%s r=%s", moevk_dtype_name(d->weight_dtype),
            moevk_dtype_name(d->router_dtype));
    if (d->capacity_factor > 0)
        app(buf, n, &p, " cf=%.3g", d->capacity_factor);
    if (d->capacity_fraction > 0)
        app(buf, n, &p, " cfrac=%.3g", d->capacity_fraction);
    if (d->drop_renorm_eps > 0)
        app(buf, n, &p, " renorm=%.3g", (double)d->drop_renorm_eps);
    if (d->flags & MOEVK_LAYER_WEIGHTS_ON_INPUT)
        app(buf, n, &p, " w-on-input");
    if (d->output_bias)
        app(buf, n, &p, " out-bias");
    if (d->num_zero_experts)
        app(buf, n, &p, " zero=%u", d->num_zero_experts);
    if (moevk_ref_has_router_input(d))
        app(buf, n, &p, " r-in(eps=%.3g%s,x%.3g)", d->router_norm_eps,
            d->router_input_scale ? ",scale" : "", d->router_input_factor);
    if (moevk_ref_has_expert_input(d))
        app(buf, n, &p, " e-in(eps=%.3g%s)", d->expert_norm_eps,
            d->expert_norm_weight ? ",weight" : "");
    if (d->expert_weight_scale)
        app(buf, n, &p, " e-scale");
    if (d->num_shared && d->shared_scale != 0.0f && d->shared_scale != 1.0f)
        app(buf, n, &p, " shared-x%.3g", d->shared_scale);
    if (d->flags & MOEVK_LAYER_VRAM_BUDGET)
        app(buf, n, &p, " vram=%lluB%s", (unsigned long long)d->vram_budget,
            d->flags & MOEVK_LAYER_CACHE_STATIC ? "(static)" : "");
    if (d->num_shared)
        app(buf, n, &p, " shared=%ux%u%s", d->num_shared, d->shared_ffn ? d->shared_ffn : d->ffn,
            d->shared_gate ? "+gate" : "");
    if (d->router_bias || d->experts.gate_bias || d->experts.up_bias || d->experts.down_bias)
        app(buf, n, &p, " bias=%s%s%s%s", d->router_bias ? "r" : "", d->experts.gate_bias ? "g" : "",
            d->experts.up_bias ? "u" : "", d->experts.down_bias ? "d" : "");
    static const char *const sc_names[] = {"one-expert", "idle", "ties", "nan/inf", "tiny",
                                           "per-expert"};
    int first = 1;
    for (int i = 0; i < 6; i++) {
        if (c->scenarios & (1u << i)) {
            app(buf, n, &p, "%s%s", first ? " [" : ",", sc_names[i]);
            first = 0;
        }
    }
    if (!first)
        app(buf, n, &p, "]");
    if (c->x_resamples)
        app(buf, n, &p, " (x redrawn %u)", c->x_resamples);
    if (c->capacity_removed)
        app(buf, n, &p, " (capacity removed: near-ties)");
}
