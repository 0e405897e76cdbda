/*
 * Random MoE layer cases, the GPU run of one, and the comparison with the
 * CPU reference (policy in check_cases.h).
 */
#include "check_cases.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/ref.h"

/* ---- random numbers (splitmix64; independent of the tests' generator) ---- */

typedef struct crng { uint64_t s; } crng;

static uint64_t rnext(crng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static crng rseed(uint64_t seed, uint64_t stream)
{
    crng r = {seed ^ (stream * 0xd1342543de82ef95ull)};
    rnext(&r);
    return r;
}

/* uniform in lo..hi, inclusive */
static uint32_t rrange(crng *r, uint32_t lo, uint32_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + (uint32_t)(rnext(r) % ((uint64_t)hi - lo + 1));
}

static float runi(crng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((rnext(r) >> 40) * (1.0 / 16777216.0));
}

static int rchance(crng *r, double p)
{
    return (double)(rnext(r) >> 11) * (1.0 / 9007199254740992.0) < p;
}

static uint32_t umin(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

/* ---- generator ------------------------------------------------------------ */

#define DEFAULT_WORK (12ull << 20)
#define DEFAULT_WEIGHTS (4ull << 20)

static void store(void *dst, moevk_dtype dt, size_t i, float v)
{
    if (dt == MOEVK_DTYPE_F32)
        ((float *)dst)[i] = v;
    else if (dt == MOEVK_DTYPE_F16)
        ((uint16_t *)dst)[i] = moevk_float_to_half(v);
    else
        ((uint16_t *)dst)[i] = moevk_float_to_bf16(v);
}

/* n values uniform in [-scale, scale], rounded to dt */
static void *random_matrix(crng *r, moevk_dtype dt, size_t n, float scale)
{
    void *m = malloc(moevk_dtype_size(dt) * (n ? n : 1));
    if (!m)
        return NULL;
    for (size_t i = 0; i < n; i++)
        store(m, dt, i, runi(r, -scale, scale));
    return m;
}

static float *random_floats(crng *r, size_t n, float lo, float hi)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++)
        v[i] = runi(r, lo, hi);
    return v;
}

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
    return (uint64_t)E * H + (uint64_t)E * mats * F * H + (uint64_t)ns * (mats * (uint64_t)Fs * H + H);
}

uint64_t mvkc_case_work(const mvkc_case *c)
{
    const moevk_layer_desc *d = &c->desc;
    uint32_t Fs = d->shared_ffn ? d->shared_ffn : d->ffn;
    return work_of(c->T, d->hidden, d->ffn, d->num_experts, d->top_k, case_mats(d),
                   d->num_shared, Fs, d->shared_gate != NULL);
}

/* x: uniform in [-1, 1], then the TINY and NONFINITE scenarios */
static void fill_x(mvkc_case *c, crng *r)
{
    uint32_t T = c->T, H = c->desc.hidden;
    for (size_t i = 0; i < (size_t)T * H; i++)
        c->x[i] = runi(r, -1, 1);
    if (c->scenarios & MVKC_SC_TINY) {
        uint32_t n = rrange(r, 1, umin(T, 4));
        for (uint32_t i = 0; i < n; i++) {
            uint32_t t = rrange(r, 0, T - 1);
            float s = powf(10.0f, -runi(r, 3, 12));
            for (uint32_t h = 0; h < H; h++)
                c->x[(size_t)t * H + h] *= s;
        }
    }
    if (c->scenarios & MVKC_SC_NONFINITE) {
        uint32_t n = rrange(r, 1, umin(T, 3));
        for (uint32_t i = 0; i < n; i++) {
            uint32_t t = rrange(r, 0, T - 1), h = rrange(r, 0, H - 1);
            uint32_t kind = rrange(r, 0, 2);
            c->x[(size_t)t * H + h] = kind == 0 ? NAN : kind == 1 ? INFINITY : -INFINITY;
        }
    }
}

/* 1 when the reference routing of the case has a near-tie (or -1 when out
 * of memory) */
static int has_near_tie(const mvkc_case *c)
{
    const moevk_layer_desc *d = &c->desc;
    size_t TE = (size_t)c->T * d->num_experts, TK = (size_t)c->T * d->top_k;
    float *l = malloc(sizeof(float) * (TE + 1));
    uint32_t *ids = malloc(sizeof(uint32_t) * (TK + 1));
    float *w = malloc(sizeof(float) * (TK + 1));
    uint8_t *tie = malloc(c->T + 1);
    int any = -1;
    if (l && ids && w && tie) {
        moevk_ref_router_logits(c->x, c->T, d->hidden, d->router_weight, d->router_dtype,
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
static int make_experts(mvkc_case *c, crng *r, int s, uint32_t count, uint32_t ffn, int biases)
{
    moevk_layer_desc *d = &c->desc;
    moevk_dtype dt = d->weight_dtype;
    size_t es = moevk_dtype_size(dt);
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
        void *mat = malloc(es * (count * elems + 1));
        if (!mat)
            return -1;
        c->mat[s][m] = mat;
        /* per-expert pointers: expert e's matrix stored at position
         * count-1-e of the block, so a library that assumed contiguity
         * would read the wrong expert */
        for (uint32_t e = 0; e < count; e++) {
            size_t pos = per_expert ? count - 1 - e : e;
            for (size_t i = 0; i < elems; i++)
                store(mat, dt, pos * elems + i, runi(r, -scale, scale));
        }
        if (per_expert) {
            const void **p = malloc(sizeof(void *) * (count ? count : 1));
            if (!p)
                return -1;
            c->ptrs[s][m] = p;
            for (uint32_t e = 0; e < count; e++)
                p[e] = (const char *)mat + (count - 1 - e) * elems * es;
        }
        if (biases & (1 << m)) {
            size_t n = (size_t)count * (m < 2 ? ffn : H);
            c->bias[s][m] = random_floats(r, n, -0.5f, 0.5f);
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
    crng r = rseed(seed, 1);

    /* scenarios */
    uint32_t sc = 0;
    if (rchance(&r, 0.12)) sc |= MVKC_SC_ONE_EXPERT;
    if (rchance(&r, 0.10)) sc |= MVKC_SC_IDLE;
    if (rchance(&r, 0.15)) sc |= MVKC_SC_TIES;
    if (rchance(&r, 0.10)) sc |= MVKC_SC_NONFINITE;
    if (rchance(&r, 0.10)) sc |= MVKC_SC_TINY;
    if (rchance(&r, 0.25)) sc |= MVKC_SC_PER_EXPERT;
    sc = (sc | lim.scenarios_on) & ~lim.scenarios_off;

    /* tokens and experts */
    static const uint32_t token_set[] = {1, 7, 129, 1000};
    uint32_t T = lim.tokens;
    if (!T) {
        if (sc & MVKC_SC_IDLE)
            T = rrange(&r, 1, 4);
        else if (rchance(&r, 0.5))
            T = token_set[rrange(&r, 0, 3)];
        else
            T = rrange(&r, 1, 300);
    }
    uint32_t E = lim.experts;
    if (!E) {
        if (sc & MVKC_SC_IDLE) {
            E = rrange(&r, 128, 1024);
        } else if (rchance(&r, 0.15)) {
            E = 1u << rrange(&r, 0, 10);
        } else {
            uint32_t u = rrange(&r, 0, 99);
            E = u < 25 ? rrange(&r, 1, 8) : u < 60 ? rrange(&r, 9, 64)
                : u < 80 ? rrange(&r, 65, 256) : rrange(&r, 257, 1024);
        }
    }
    uint32_t kmax = umin(E, MOEVK_MAX_TOP_K);
    uint32_t k = lim.top_k == MVKC_K_ALL ? kmax : lim.top_k;
    if (!k) {
        uint32_t u = rrange(&r, 0, 99);
        k = u < 25 ? 1 : u < 40 ? kmax : u < 80 ? rrange(&r, 1, umin(kmax, 8)) : rrange(&r, 1, kmax);
        if (sc & MVKC_SC_IDLE)
            k = umin(k, 4);
    }
    if (E < 2)
        sc &= ~(uint32_t)MVKC_SC_TIES;

    /* routing */
    d->routing = lim.routing ? (moevk_routing)(lim.routing - 1) : (moevk_routing)rrange(&r, 0, 2);
    d->norm_topk_prob = rchance(&r, 0.5);
    if (d->routing == MOEVK_ROUTING_SIGMOID_GROUPED) {
        uint32_t divs[64], nd = 0;
        for (uint32_t g = 1; g <= E && nd < 64; g++)
            if (E % g == 0)
                divs[nd++] = g;
        uint32_t n_group = divs[rrange(&r, 0, nd - 1)];
        uint32_t size = E / n_group;
        uint32_t need = (k + size - 1) / size; /* kept groups must hold k experts */
        if (need < 1)
            need = 1;
        uint32_t topk_group = rrange(&r, umin(need, n_group), n_group);
        d->n_group = n_group == 1 && rchance(&r, 0.3) ? 0 : n_group;
        d->topk_group = topk_group == n_group && rchance(&r, 0.3) ? 0 : topk_group;
        d->routed_scaling_factor = rchance(&r, 0.5) ? 0.0f : runi(&r, 0.5f, 3.0f);
    }
    /* capacity */
    if (lim.capacity_factor < 0)
        d->capacity_factor = 0;
    else if (lim.capacity_factor > 0)
        d->capacity_factor = lim.capacity_factor;
    else if (rchance(&r, 0.6))
        d->capacity_factor = 0;
    else if (k == 1 && rchance(&r, 0.3))
        d->capacity_factor = 1.25f; /* Switch Transformer */
    else
        d->capacity_factor = runi(&r, 0.25f, 2.0f);

    /* activation and dtypes */
    d->activation = lim.activation ? (moevk_activation)(lim.activation - 1)
                                   : (moevk_activation)rrange(&r, 0, 5);
    if (d->activation == MOEVK_ACT_SWIGLU_OAI) {
        d->swiglu_alpha = rchance(&r, 0.5) ? 0.0f : runi(&r, 1.0f, 2.5f);
        d->swiglu_limit = rchance(&r, 0.4) ? 0.0f : runi(&r, 0.3f, 10.0f);
    }
    d->weight_dtype = lim.weight_dtype ? (moevk_dtype)(lim.weight_dtype - 1)
                                       : (moevk_dtype)rrange(&r, 0, 2);
    d->router_dtype = lim.router_dtype ? (moevk_dtype)(lim.router_dtype - 1)
                                       : (moevk_dtype)rrange(&r, 0, 2);

    /* shared experts */
    uint32_t ns;
    if (lim.num_shared) {
        ns = lim.num_shared - 1;
    } else {
        uint32_t u = rrange(&r, 0, 99);
        ns = u < 50 ? 0 : u < 85 ? 1 : 2;
    }
    uint32_t shared_ffn = ns && rchance(&r, 0.5) ? rrange(&r, 1, 300) : 0;
    int sgate = ns && rchance(&r, 0.5);

    /* sizes, shrunk to the budget */
    uint32_t H = lim.hidden ? lim.hidden : rchance(&r, 0.1) ? rrange(&r, 301, 2048) : rrange(&r, 1, 300);
    uint32_t F = lim.ffn ? lim.ffn : rchance(&r, 0.1) ? rrange(&r, 301, 2048) : rrange(&r, 1, 300);
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

    c->T = T;
    c->scenarios = sc;
    d->hidden = H;
    d->ffn = F;
    d->num_experts = E;
    d->top_k = k;
    d->num_shared = ns;
    d->shared_ffn = shared_ffn;

    /* router */
    c->router = random_matrix(&r, d->router_dtype, (size_t)E * H, 3.0f / sqrtf((float)H));
    if (!c->router)
        goto oom;
    d->router_weight = c->router;
    if (rchance(&r, 0.5)) {
        if (!(c->router_bias = random_floats(&r, E, -0.5f, 0.5f)))
            goto oom;
    }
    if (d->routing == MOEVK_ROUTING_SIGMOID_GROUPED && rchance(&r, 0.6)) {
        if (!(c->correction_bias = random_floats(&r, E, -0.1f, 0.1f)))
            goto oom;
    }

    /* experts (swiglu_oai always with biases) */
    int biases = d->activation == MOEVK_ACT_SWIGLU_OAI ? 7 : 0;
    for (int m = 0; m < 3; m++)
        if (rchance(&r, 0.3))
            biases |= 1 << m;
    if (!moevk_activation_is_gated(d->activation))
        biases &= ~1;
    if (make_experts(c, &r, 0, E, F, biases))
        goto oom;
    if (ns) {
        if (make_experts(c, &r, 1, ns, shared_ffn ? shared_ffn : F, biases))
            goto oom;
        if (sgate) {
            c->shared_gate = random_matrix(&r, d->router_dtype, (size_t)ns * H,
                                           3.0f / sqrtf((float)H));
            if (!c->shared_gate)
                goto oom;
            d->shared_gate = c->shared_gate;
        }
    }

    /* one dominant expert: +20 on its logit (and +10 on its corrected
     * score, so that its group is always kept) */
    if (sc & MVKC_SC_ONE_EXPERT) {
        c->dominant = rrange(&r, 0, E - 1);
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
        uint32_t n = rrange(&r, 1, umin(4, E / 2));
        uint32_t used[8];
        uint32_t nused = 0;
        size_t rs = moevk_dtype_size(d->router_dtype) * H;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t a, b;
            int fresh;
            do {
                a = (i == 0 && (sc & MVKC_SC_ONE_EXPERT) && rchance(&r, 0.5)) ? c->dominant
                                                                              : rrange(&r, 0, E - 1);
                b = rrange(&r, 0, E - 1);
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
    d->correction_bias = d->routing == MOEVK_ROUTING_SIGMOID_GROUPED ? c->correction_bias : NULL;

    /* input; under capacity, redraw it (seed + 1, ...) while the reference
     * routing has a near-tie, whose flip would cascade through admission */
    c->x = malloc(sizeof(float) * ((size_t)T * H + 1));
    if (!c->x)
        goto oom;
    crng rx = rseed(seed, 2);
    fill_x(c, &rx);
    if (d->capacity_factor > 0) {
        for (uint32_t attempt = 1;; attempt++) {
            int tie = has_near_tie(c);
            if (tie < 0)
                goto oom;
            if (!tie)
                break;
            if (attempt > 10) {
                d->capacity_factor = 0;
                c->capacity_removed = 1;
                break;
            }
            rx = rseed(seed + attempt, 2);
            fill_x(c, &rx);
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
    for (int s = 0; s < 2; s++) {
        for (int m = 0; m < 3; m++) {
            free(c->mat[s][m]);
            free(c->bias[s][m]);
            free((void *)c->ptrs[s][m]);
        }
    }
    memset(c, 0, sizeof *c);
}

static const char *routing_name(moevk_routing r)
{
    switch (r) {
    case MOEVK_ROUTING_SOFTMAX_TOPK: return "softmax_topk";
    case MOEVK_ROUTING_TOPK_SOFTMAX: return "topk_softmax";
    case MOEVK_ROUTING_SIGMOID_GROUPED: return "sigmoid_grouped";
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
        d->top_k, routing_name(d->routing));
    if (d->routing == MOEVK_ROUTING_SIGMOID_GROUPED) {
        app(buf, n, &p, "(g=%u/%u", d->topk_group, d->n_group);
        if (d->routed_scaling_factor)
            app(buf, n, &p, ",x%.3g", d->routed_scaling_factor);
        if (d->correction_bias)
            app(buf, n, &p, ",cb");
        app(buf, n, &p, ")");
    }
    if (d->routing != MOEVK_ROUTING_TOPK_SOFTMAX && d->norm_topk_prob)
        app(buf, n, &p, "+norm");
    app(buf, n, &p, " %s", act_name(d->activation));
    if (d->activation == MOEVK_ACT_SWIGLU_OAI)
        app(buf, n, &p, "(a=%.3g,l=%.3g)", d->swiglu_alpha, d->swiglu_limit);
    app(buf, n, &p, " w=%s r=%s", moevk_dtype_name(d->weight_dtype),
        moevk_dtype_name(d->router_dtype));
    if (d->capacity_factor > 0)
        app(buf, n, &p, " cf=%.3g", d->capacity_factor);
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

/* ---- reference ------------------------------------------------------------ */

void mvkc_ref_free(mvkc_ref *r)
{
    if (!r)
        return;
    free(r->y);
    free(r->ids);
    free(r->weights);
    free(r->near_tie);
    free(r->rows);
    free(r->counts);
    free(r->offsets);
    free(r->tpe);
    memset(r, 0, sizeof *r);
}

moevk_status mvkc_reference(const mvkc_case *c, mvkc_ref *out)
{
    const moevk_layer_desc *d = &c->desc;
    size_t TH = (size_t)c->T * d->hidden, TK = (size_t)c->T * d->top_k;
    uint32_t E = d->num_experts;
    memset(out, 0, sizeof *out);
    out->y = malloc(sizeof(float) * (TH + 1));
    out->ids = malloc(sizeof(uint32_t) * (TK + 1));
    out->weights = malloc(sizeof(float) * (TK + 1));
    out->near_tie = malloc(c->T + 1);
    out->rows = malloc(sizeof(int32_t) * (TK + 1));
    out->counts = malloc(sizeof(uint32_t) * (E + 1));
    out->offsets = malloc(sizeof(uint32_t) * (E + 2));
    out->tpe = malloc(sizeof(uint32_t) * (E + 1));
    if (!out->y || !out->ids || !out->weights || !out->near_tie || !out->rows || !out->counts ||
        !out->offsets || !out->tpe) {
        mvkc_ref_free(out);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    out->stats.tokens_per_expert = out->tpe;
    moevk_status st = moevk_ref_layer_forward(d, c->T, c->x, out->y, out->ids, out->weights,
                                              out->near_tie, &out->stats);
    if (st) {
        mvkc_ref_free(out);
        return st;
    }
    out->dropped = moevk_ref_permute(d, c->T, out->ids, out->counts, out->offsets, out->rows);
    return MOEVK_SUCCESS;
}

/* ---- GPU run ---------------------------------------------------------------- */

void mvkc_gpu_free(mvkc_gpu *g)
{
    if (!g)
        return;
    free(g->y);
    free(g->ids);
    free(g->weights);
    free(g->rows);
    free(g->tpe);
    free(g->tpe_read);
    memset(g, 0, sizeof *g);
}

moevk_status mvkc_gpu_alloc(const mvkc_case *c, mvkc_gpu *out)
{
    const moevk_layer_desc *d = &c->desc;
    size_t TH = (size_t)c->T * d->hidden, TK = (size_t)c->T * d->top_k;
    uint32_t E = d->num_experts;
    memset(out, 0, sizeof *out);
    out->y = malloc(sizeof(float) * (TH + 1));
    out->ids = malloc(sizeof(uint32_t) * (TK + 1));
    out->weights = malloc(sizeof(float) * (TK + 1));
    out->rows = malloc(sizeof(int32_t) * (TK + 1));
    out->tpe = malloc(sizeof(uint32_t) * (E + 1));
    out->tpe_read = malloc(sizeof(uint32_t) * (E + 1));
    if (!out->y || !out->ids || !out->weights || !out->rows || !out->tpe || !out->tpe_read) {
        mvkc_gpu_free(out);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    /* poison: NaN floats, ids/counts 0xffffffff, rows -2 (never valid),
     * losses -1 (never valid), dropped UINT64_MAX */
    for (size_t i = 0; i < TH; i++)
        out->y[i] = NAN;
    for (size_t i = 0; i < TK; i++) {
        out->ids[i] = UINT32_MAX;
        out->weights[i] = NAN;
        out->rows[i] = -2;
    }
    for (uint32_t e = 0; e < E; e++)
        out->tpe[e] = out->tpe_read[e] = UINT32_MAX;
    moevk_routing_stats poison = {NULL, UINT64_MAX, -1.0, -1.0, -1.0};
    out->stats = poison;
    out->stats.tokens_per_expert = out->tpe;
    out->stats_read = poison;
    out->stats_read.tokens_per_expert = out->tpe_read;
    return MOEVK_SUCCESS;
}

moevk_status mvkc_gpu_run(moevk_context *ctx, const mvkc_case *c, mvkc_gpu *out, char *what,
                          size_t n)
{
    const moevk_layer_desc *d = &c->desc;
    moevk_layer *layer = NULL;
    moevk_tensor tx = {0}, ty = {0};
    const char *call = "";
    moevk_status st = mvkc_gpu_alloc(c, out);
    if (st) {
        call = "host allocation";
        goto done;
    }
    uint64_t shape[2] = {c->T, d->hidden};
    if ((st = moevk_layer_create(ctx, d, &layer))) {
        call = "moevk_layer_create";
        goto done;
    }
    if ((st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &tx)) ||
        (st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, shape, &ty))) {
        call = "moevk_tensor_create";
        goto done;
    }
    if ((st = moevk_tensor_upload(&tx, c->x))) {
        call = "moevk_tensor_upload";
        goto done;
    }
    if ((st = moevk_buffer_fill(ty.buffer, ty.offset, moevk_tensor_bytes(&ty), 0x7fc00000u))) {
        call = "moevk_buffer_fill";
        goto done;
    }
    if ((st = moevk_layer_forward(layer, &tx, &ty, &out->stats))) {
        call = "moevk_layer_forward";
        goto done;
    }
    if ((st = moevk_tensor_download(&ty, out->y))) {
        call = "moevk_tensor_download";
        goto done;
    }
    if ((st = moevk_layer_read_routing(layer, c->T, out->ids, out->weights, out->rows))) {
        call = "moevk_layer_read_routing";
        goto done;
    }
    if ((st = moevk_layer_read_stats(layer, &out->stats_read))) {
        call = "moevk_layer_read_stats";
        goto done;
    }
done:
    if (st && what && n)
        snprintf(what, n, "%s: %s: %s", call, moevk_status_string(st),
                 ctx ? moevk_context_last_error(ctx) : "");
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
    moevk_layer_destroy(layer);
    return st;
}

/* ---- comparison --------------------------------------------------------------- */

static double sigmoid(double v)
{
    return 1.0 / (1.0 + exp(-v));
}

/* Whether score a (index ia) may rank before score b (index ib) when both
 * are known only to within tol. Non-finite scores carry no rounding error
 * (they are exact on both sides), so they follow the exact rule: larger
 * first, equal -> lower index, NaN below every number. */
static int may_precede(double a, uint32_t ia, double b, uint32_t ib, double tol)
{
    if (isfinite(a) && isfinite(b))
        return a >= b - tol;
    int na = isnan(a), nb = isnan(b);
    if (na || nb)
        return na && nb ? ia < ib : nb;
    if (a != b)
        return a > b;
    return ia < ib;
}

/* exact reference ranking */
static int ranks_before(double a, uint32_t ia, double b, uint32_t ib)
{
    int na = isnan(a), nb = isnan(b);
    if (na || nb)
        return na && nb ? ia < ib : nb;
    if (a != b)
        return a > b;
    return ia < ib;
}

/* Whether the GPU's ids g[0..k-1] of token t are a valid top-k of the
 * reference's selection scores within the router's fp32 error: distinct, in
 * range, in non-increasing order, nothing eligible left out that ranks
 * clearly above a chosen one, and (grouped routing) chosen groups that may
 * be among the topk_group best. Scratch: lf [E] floats, s [E] and gs
 * [n_group] doubles, mark [2 E + n_group] bytes. */
static int tolerated(const mvkc_case *c, uint32_t t, const uint32_t *g, float *lf, double *s,
                     double *gs, uint8_t *mark)
{
    const moevk_layer_desc *d = &c->desc;
    uint32_t E = d->num_experts, k = d->top_k, H = d->hidden;
    int grouped = d->routing == MOEVK_ROUTING_SIGMOID_GROUPED;
    const float *xt = c->x + (size_t)t * H;

    uint8_t *chosen = mark, *kept = mark + E;
    memset(chosen, 0, E);
    for (uint32_t j = 0; j < k; j++) {
        if (g[j] >= E || chosen[g[j]])
            return 0;
        chosen[g[j]] = 1;
    }

    /* the reference's logits of this token, and the bound of the fp32
     * accumulation error: sum_h |x_h w_eh| + |b_e| (0 when x is not
     * finite: the logits are then exactly +-inf or NaN on both sides) */
    moevk_ref_router_logits(xt, 1, H, d->router_weight, d->router_dtype, E, d->router_bias, lf);
    int finite = 1;
    for (uint32_t h = 0; h < H; h++)
        finite &= isfinite(xt[h]) != 0;
    double bound = 0.0, maxabs = 0.0;
    for (uint32_t e = 0; e < E; e++) {
        if (finite) {
            double a = d->router_bias ? fabs((double)d->router_bias[e]) : 0.0;
            for (uint32_t h = 0; h < H; h++)
                a += fabs((double)xt[h] * moevk_ref_load(d->router_weight, d->router_dtype,
                                                         (size_t)e * H + h));
            if (a > bound)
                bound = a;
        }
        double cb = grouped && d->correction_bias ? (double)d->correction_bias[e] : 0.0;
        s[e] = grouped ? sigmoid((double)lf[e]) + cb : (double)lf[e];
        if (isfinite(s[e]) && fabs(s[e]) > maxabs)
            maxabs = fabs(s[e]);
    }
    /* sigmoid' <= 1/4 */
    double tol = (grouped ? 0.25 : 1.0) * 4e-6 * bound + 2e-6 * maxabs;

    memset(kept, 1, E); /* eligible experts (reused below) */
    if (grouped) {
        uint32_t n_group = d->n_group ? d->n_group : 1;
        uint32_t tkg = d->topk_group ? d->topk_group : n_group;
        if (tkg > n_group)
            tkg = n_group;
        uint32_t size = E / n_group;
        for (uint32_t q = 0; q < n_group; q++) {
            uint32_t b1 = q * size, b2 = UINT32_MAX;
            for (uint32_t e = q * size + 1; e < (q + 1) * size; e++)
                if (ranks_before(s[e], e, s[b1], b1))
                    b1 = e;
            for (uint32_t e = q * size; e < (q + 1) * size; e++)
                if (e != b1 && (b2 == UINT32_MAX || ranks_before(s[e], e, s[b2], b2)))
                    b2 = e;
            gs[q] = b2 == UINT32_MAX ? s[b1] : s[b1] + s[b2];
        }
        double gtol = 2 * tol;
        uint8_t *cg = kept + E; /* [n_group], past the E eligible flags */
        memset(cg, 0, n_group);
        uint32_t ncg = 0;
        for (uint32_t j = 0; j < k; j++) {
            uint32_t q = g[j] / size;
            if (!cg[q])
                ncg++;
            cg[q] = 1;
        }
        if (ncg > tkg)
            return 0;
        for (uint32_t q = 0; q < n_group; q++) {
            /* groups that rank clearly above q / may rank above q */
            uint32_t clearly = 0, maybe = 0;
            for (uint32_t p = 0; p < n_group; p++) {
                if (p == q)
                    continue;
                clearly += !may_precede(gs[q], q, gs[p], p, gtol);
                maybe += may_precede(gs[p], p, gs[q], q, gtol);
            }
            if (cg[q] && clearly >= tkg)
                return 0;
            /* experts of chosen groups and of groups kept in any valid
             * choice are eligible */
            int certainly_kept = maybe < tkg;
            for (uint32_t e = q * size; e < (q + 1) * size; e++)
                kept[e] = cg[q] || certainly_kept;
        }
    }

    for (uint32_t j = 0; j + 1 < k; j++)
        if (!may_precede(s[g[j]], g[j], s[g[j + 1]], g[j + 1], tol))
            return 0;
    for (uint32_t e = 0; e < E; e++) {
        if (chosen[e] || !kept[e])
            continue;
        for (uint32_t j = 0; j < k; j++)
            if (!may_precede(s[g[j]], g[j], s[e], e, tol))
                return 0;
    }
    return 1;
}

static int any_nonfinite(const float *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 1;
    return 0;
}

static int fail(mvkc_report *rep, const char *fmt, ...)
{
    if (rep->reason[0])
        return 0; /* keep the first reason */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->reason, sizeof rep->reason, fmt, ap);
    va_end(ap);
    rep->pass = 0;
    return 0;
}

/* |g - r| within rel * |r| + abs, NaN exactly where r is NaN */
static int loss_ok(double g, double r)
{
    if (isnan(r) || isnan(g))
        return isnan(r) && isnan(g);
    if (isinf(r) || isinf(g))
        return g == r;
    return fabs(g - r) <= 1e-4 * fabs(r) + 1e-5;
}

/* y of the non-excluded tokens from the reference's experts, with the
 * GPU's admissions (rows[a] < 0: dropped) and the reference's ids and
 * weights. */
static moevk_status conditional_y(const mvkc_case *c, const mvkc_ref *ref, const int32_t *rows,
                                  const uint8_t *excluded, float *y)
{
    const moevk_layer_desc *d = &c->desc;
    uint32_t H = d->hidden, k = d->top_k;
    uint32_t Fs = d->shared_ffn ? d->shared_ffn : d->ffn;
    float *o = malloc(sizeof(float) * (H + 1));
    double *acc = malloc(sizeof(double) * (H + 1));
    moevk_status st = MOEVK_SUCCESS;
    if (!o || !acc) {
        st = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
        goto done;
    }
    for (uint32_t t = 0; t < c->T; t++) {
        const float *xt = c->x + (size_t)t * H;
        if (excluded[t]) {
            for (uint32_t h = 0; h < H; h++)
                y[(size_t)t * H + h] = NAN;
            continue;
        }
        for (uint32_t h = 0; h < H; h++)
            acc[h] = 0.0;
        for (uint32_t j = 0; j < k; j++) {
            size_t a = (size_t)t * k + j;
            if (rows[a] < 0)
                continue;
            if ((st = moevk_ref_expert_ffn(d, &d->experts, d->ffn, ref->ids[a], xt, 1, o)))
                goto done;
            for (uint32_t h = 0; h < H; h++)
                acc[h] += (double)ref->weights[a] * o[h];
        }
        for (uint32_t i = 0; i < d->num_shared; i++) {
            if ((st = moevk_ref_expert_ffn(d, &d->shared, Fs, i, xt, 1, o)))
                goto done;
            double gate = 1.0;
            if (d->shared_gate) {
                double z = 0.0;
                for (uint32_t h = 0; h < H; h++)
                    z += (double)xt[h] *
                         moevk_ref_load(d->shared_gate, d->router_dtype, (size_t)i * H + h);
                gate = sigmoid(z);
            }
            for (uint32_t h = 0; h < H; h++)
                acc[h] += gate * o[h];
        }
        for (uint32_t h = 0; h < H; h++)
            y[(size_t)t * H + h] = (float)acc[h];
    }
done:
    free(o);
    free(acc);
    return st;
}

int mvkc_compare(const mvkc_case *c, const mvkc_ref *ref, const mvkc_gpu *gpu, mvkc_report *rep)
{
    const moevk_layer_desc *d = &c->desc;
    uint32_t T = c->T, H = d->hidden, E = d->num_experts, k = d->top_k;
    size_t TK = (size_t)T * k;
    int is16 = d->weight_dtype != MOEVK_DTYPE_F32;

    memset(rep, 0, sizeof *rep);
    rep->pass = 1;
    rep->y_tol = is16 ? 1e-4 : 1e-5;
    rep->dropped = ref->dropped;

    uint8_t *excluded = calloc(T + 1, 1);
    float *lf = malloc(sizeof(float) * (E + 1));
    double *s = malloc(sizeof(double) * (E + 1));
    double *gs = malloc(sizeof(double) * (E + 1));
    uint8_t *mark = malloc(3 * (size_t)E + 3);
    uint32_t *counts = malloc(sizeof(uint32_t) * (E + 1));
    uint32_t *offsets = malloc(sizeof(uint32_t) * (E + 2));
    int32_t *rows = malloc(sizeof(int32_t) * (TK + 1));
    float *ycond = NULL, *logits = NULL;
    if (!excluded || !lf || !s || !gs || !mark || !counts || !offsets || !rows) {
        fail(rep, "out of host memory (comparison)");
        goto done;
    }

    /* 1. routing ids */
    uint32_t mismatched = 0, bad = 0, bad_t = 0, bad_j = 0;
    for (uint32_t t = 0; t < T; t++) {
        const uint32_t *g = gpu->ids + (size_t)t * k, *r = ref->ids + (size_t)t * k;
        if (ref->near_tie[t])
            excluded[t] = 1;
        if (!memcmp(g, r, sizeof(uint32_t) * k))
            continue;
        mismatched++;
        if (ref->near_tie[t] || tolerated(c, t, g, lf, s, gs, mark)) {
            excluded[t] = 1;
            rep->swapped++;
            continue;
        }
        if (!bad++) {
            bad_t = t;
            while (bad_j < k && g[bad_j] == r[bad_j])
                bad_j++;
        }
    }
    if (bad)
        fail(rep, "route: %u of %u tokens differ from the reference (not near-ties); first: "
                  "token %u slot %u: expert %u, reference %u",
             bad, T, bad_t, bad_j, gpu->ids[(size_t)bad_t * k + bad_j],
             ref->ids[(size_t)bad_t * k + bad_j]);
    for (uint32_t t = 0; t < T; t++)
        rep->near_ties += excluded[t];

    /* 2. routing weights */
    double wnum = 0, wden = 0;
    for (uint32_t t = 0; t < T; t++) {
        if (excluded[t])
            continue;
        for (uint32_t j = 0; j < k; j++) {
            size_t a = (size_t)t * k + j;
            double g = gpu->weights[a], r = ref->weights[a];
            if (!isfinite(r) || !isfinite(g)) {
                if (isfinite(r) != isfinite(g) || isnan(r) != isnan(g))
                    fail(rep, "route: weight of token %u slot %u: %g, reference %g", t, j, g, r);
                continue;
            }
            double scale = d->routed_scaling_factor ? fabs((double)d->routed_scaling_factor) : 1.0;
            if (fabs(g - r) > 1e-4 * fabs(r) + 1e-7 * scale)
                fail(rep, "route: weight of token %u slot %u (expert %u): %.9g, reference %.9g", t,
                     j, gpu->ids[a], g, r);
            wnum += (g - r) * (g - r);
            wden += r * r;
        }
    }
    rep->w_err = wden > 0 ? sqrt(wnum / wden) : sqrt(wnum);
    if (!(rep->w_err <= 1e-5))
        fail(rep, "route: weights rel. L2 error %.3g > 1e-5", rep->w_err);

    /* 3. rows, counts and drops: what admission gives for the GPU's ids */
    uint64_t dropped = moevk_ref_permute(d, T, gpu->ids, counts, offsets, rows);
    for (size_t a = 0; a < TK; a++) {
        if (gpu->rows[a] != rows[a]) {
            fail(rep, "permute: row of token %u slot %u (expert %u): %d, expected %d%s",
                 (uint32_t)(a / k), (uint32_t)(a % k), gpu->ids[a], gpu->rows[a], rows[a],
                 rows[a] < 0 ? " (dropped)" : "");
            break;
        }
    }
    for (uint32_t e = 0; e < E; e++) {
        if (gpu->tpe[e] != counts[e]) {
            fail(rep, "stats: tokens_per_expert[%u] = %u, expected %u", e, gpu->tpe[e], counts[e]);
            break;
        }
    }
    if (gpu->stats.dropped != dropped)
        fail(rep, "stats: dropped = %llu, expected %llu", (unsigned long long)gpu->stats.dropped,
             (unsigned long long)dropped);
    rep->dropped = dropped;
    if (memcmp(gpu->tpe, gpu->tpe_read, sizeof(uint32_t) * E) ||
        gpu->stats.dropped != gpu->stats_read.dropped ||
        memcmp(&gpu->stats.load_balancing_loss, &gpu->stats_read.load_balancing_loss,
               sizeof(double)) ||
        memcmp(&gpu->stats.router_z_loss, &gpu->stats_read.router_z_loss, sizeof(double)) ||
        memcmp(&gpu->stats.routing_entropy, &gpu->stats_read.routing_entropy, sizeof(double)))
        fail(rep, "stats: moevk_layer_read_stats differs from moevk_layer_forward's stats");

    /* 4. y */
    const float *yref = ref->y;
    if (d->capacity_factor > 0 && rep->swapped) {
        ycond = malloc(sizeof(float) * ((size_t)T * H + 1));
        if (!ycond || conditional_y(c, ref, rows, excluded, ycond)) {
            fail(rep, "out of host memory (comparison)");
            goto done;
        }
        yref = ycond;
    }
    double num = 0, den = 0, worst = -1;
    uint32_t worst_t = 0;
    for (uint32_t t = 0; t < T; t++) {
        if (excluded[t])
            continue;
        const float *g = gpu->y + (size_t)t * H, *r = yref + (size_t)t * H;
        int ng = any_nonfinite(g, H), nr = any_nonfinite(r, H);
        if (ng || nr) {
            if (ng != nr) {
                uint32_t h = 0;
                while (h < H && isfinite(g[h]) == isfinite(r[h]))
                    h++;
                if (h == H)
                    h = 0;
                fail(rep, "y: token %u is %s on the GPU only (y[%u] = %g, reference %g)", t,
                     ng ? "non-finite" : "finite", h, g[h], r[h]);
            } else {
                rep->nonfinite++;
            }
            continue;
        }
        double tn = 0, td = 0;
        for (uint32_t h = 0; h < H; h++) {
            double e = (double)g[h] - r[h];
            tn += e * e;
            td += (double)r[h] * r[h];
        }
        num += tn;
        den += td;
        rep->compared++;
        double te = td > 0 ? sqrt(tn / td) : sqrt(tn);
        if (te > worst) {
            worst = te;
            worst_t = t;
        }
    }
    rep->y_err = den > 0 ? sqrt(num / den) : sqrt(num);
    /* A localized error (one token wrong) can hide in the global norm of
     * many tokens: each token's error must also stay within 100x the
     * tolerance, relative to its own norm plus the average token norm
     * (so a token whose output nearly cancels is not over-judged). */
    double avg = rep->compared ? sqrt(den / rep->compared) : 0.0;
    for (uint32_t t = 0; t < T && rep->pass; t++) {
        if (excluded[t])
            continue;
        const float *g = gpu->y + (size_t)t * H, *r = yref + (size_t)t * H;
        if (any_nonfinite(g, H) || any_nonfinite(r, H))
            continue;
        double tn = 0, td = 0;
        for (uint32_t h = 0; h < H; h++) {
            double e = (double)g[h] - r[h];
            tn += e * e;
            td += (double)r[h] * r[h];
        }
        if (sqrt(tn) > 100 * rep->y_tol * (sqrt(td) + avg))
            fail(rep, "y: token %u has error %.3g (norm %.3g, average token norm %.3g) "
                      "beyond 100x the tolerance",
                 t, sqrt(tn), sqrt(td), avg);
    }
    if (!(rep->y_err <= rep->y_tol)) {
        const float *g = gpu->y + (size_t)worst_t * H, *r = yref + (size_t)worst_t * H;
        uint32_t wh = 0;
        for (uint32_t h = 1; h < H; h++)
            if (fabs((double)g[h] - r[h]) > fabs((double)g[wh] - r[wh]))
                wh = h;
        fail(rep, "y: rel. L2 error %.3g > %.0e over %u tokens; worst token %u (%.3g): "
                  "y[%u] = %.7g, reference %.7g",
             rep->y_err, rep->y_tol, rep->compared, worst_t, worst, wh, g[wh], r[wh]);
    }

    /* 5. losses: the reference's, or with the GPU's (near-tied) ids */
    moevk_routing_stats want = ref->stats;
    if (mismatched) {
        logits = malloc(sizeof(float) * ((size_t)T * E + 1));
        if (!logits) {
            fail(rep, "out of host memory (comparison)");
            goto done;
        }
        moevk_ref_router_logits(c->x, T, H, d->router_weight, d->router_dtype, E, d->router_bias,
                                logits);
        want.tokens_per_expert = NULL;
        if (moevk_ref_stats(d, T, logits, gpu->ids, counts, dropped, &want)) {
            fail(rep, "out of host memory (comparison)");
            goto done;
        }
    }
    if (!loss_ok(gpu->stats.load_balancing_loss, want.load_balancing_loss))
        fail(rep, "stats: load_balancing_loss %.9g, reference %.9g",
             gpu->stats.load_balancing_loss, want.load_balancing_loss);
    if (!loss_ok(gpu->stats.router_z_loss, want.router_z_loss))
        fail(rep, "stats: router_z_loss %.9g, reference %.9g", gpu->stats.router_z_loss,
             want.router_z_loss);
    if (!loss_ok(gpu->stats.routing_entropy, want.routing_entropy))
        fail(rep, "stats: routing_entropy %.9g, reference %.9g", gpu->stats.routing_entropy,
             want.routing_entropy);

done:
    free(excluded);
    free(lf);
    free(s);
    free(gs);
    free(mark);
    free(counts);
    free(offsets);
    free(rows);
    free(ycond);
    free(logits);
    return rep->pass;
}
