/*
 * The CUDA backends (src/cuda: MVK_CUDA_REF, MVK_CUDA_CUBLAS,
 * MVK_CUDA_CUBLAS_F32) against the CPU reference, on random layers: every
 * routing mode, activation and dtype, shared experts (gated or not),
 * capacity, biases, per-expert weight pointers, NaN inputs.
 *
 * Without a usable CUDA device the device tests skip (never pass) with the
 * reason; MOEVK_REQUIRE_CUDA=1 turns that into a failure (for runs on a GPU
 * machine). The no-device and bad-argument tests run everywhere.
 * src/cuda/emu/run_tests.sh runs this file on a CPU emulation of CUDA.
 *
 * Comparison policy (docs/semantics.md "Tolerances"):
 *  - ids: equal to the reference's, except near-ties: tokens the reference
 *    flags, and tokens whose ids differ only between distinct selection
 *    scores within the f32 error of the router logits (bound 8e-6 * sum_h
 *    |x_h w_eh| + 4e-6 |l|; for sigmoid_grouped also whole groups whose
 *    scores are that close). Such tokens are counted ("swapped"). Exact
 *    ties (duplicated router rows) are never excused.
 *  - weights: relative L2 <= 1e-5 (and each within 1e-4 relative) against
 *    the routing weights computed in double from the reference logits for
 *    the GPU's own ids (the reference's weights when the ids agree).
 *  - rows, tokens_per_expert, dropped: exactly moevk_ref_permute of the
 *    GPU's ids.
 *  - y: relative L2 against (a) a double reference composed from the GPU's
 *    own routing (ids, admissions; ref expert FFNs), over every token, and
 *    (b) moevk_ref_layer_forward over the tokens neither near-tied nor
 *    swapped (when no swap can move other tokens' admissions): <= 1e-5
 *    for f32 weights, <= 1e-4 for f16/bf16 weights. MVK_CUDA_CUBLAS rounds
 *    activations to a 16-bit weight dtype (see moevk_cuda.h): its bound is
 *    then 4 units of that dtype's rounding (4 * 2^-11 f16, 4 * 2^-8 bf16).
 *    Non-finite tokens must be non-finite exactly where the reference's are.
 *  - losses within 1e-4 relative (+1e-5); NaN exactly where the reference
 *    is NaN (the load-balancing loss 1e-3 when tokens were swapped).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/cuda/moevk_cuda.h"
#include "common.h"
#include "ref/ref.h"

/* ---- device --------------------------------------------------------------- */

static bool env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

static void need_device(void)
{
    char msg[512] = "";
    if (mvk_cuda_device_available(msg, sizeof msg))
        return;
    cr_assert(!env_flag("MOEVK_REQUIRE_CUDA"),
              "MOEVK_REQUIRE_CUDA is set but no CUDA device is usable: %s", msg);
    cr_skip_test("%s", msg); /* "no CUDA device: ..." */
}

/* ---- random cases ---------------------------------------------------------- */

typedef struct opts {
    int routing, act, wdt, rdt; /* forced enum values, -1 = random */
    float cf;                   /* < 0 dropless, 0 random, > 0 this factor */
    int ns;                     /* shared experts, -1 = random 0..2 */
    uint32_t T, H, F, E, K;     /* forced sizes, 0 = random */
    int nonfinite;              /* 1 NaN, 2 +inf, 3 -inf in one token's x */
    int per_expert;             /* weights as per-expert pointers; -1 = random */
    int ties;                   /* duplicated router rows (exact score ties); -1 = random */
} opts;

static opts random_opts(void)
{
    opts o;
    memset(&o, 0, sizeof o);
    o.routing = o.act = o.wdt = o.rdt = o.ns = o.per_expert = o.ties = -1;
    return o;
}

typedef struct tcase {
    uint64_t seed;
    uint32_t T;
    moevk_layer_desc d;
    float *x;
    void *router, *sgate;
    float *rbias, *cbias;
    void *mat[2][3];   /* [routed, shared][gate, up, down] */
    float *bias[2][3];
    const void **ptrs[2][3];
    int64_t nan_token; /* -1: none */
    uint32_t n_ties;   /* router rows duplicated */
} tcase;

static const char *const routing_names[] = {"softmax_topk", "topk_softmax", "sigmoid_grouped"};
static const char *const act_names[] = {"swiglu", "geglu", "geglu_tanh", "swiglu_oai", "relu",
                                        "gelu"};

static void describe(const tcase *c, char *buf, size_t n)
{
    const moevk_layer_desc *d = &c->d;
    snprintf(buf, n,
             "seed=%llu T=%u H=%u F=%u E=%u k=%u %s%s%s%s %s w=%s r=%s cf=%g shared=%ux%u%s%s%s%s",
             (unsigned long long)c->seed, c->T, d->hidden, d->ffn, d->num_experts, d->top_k,
             routing_names[d->routing], d->norm_topk_prob ? "+norm" : "",
             d->routing == MOEVK_ROUTING_SIGMOID_GROUPED ? " groups=" : "",
             d->routing == MOEVK_ROUTING_SIGMOID_GROUPED ? (d->correction_bias ? "(bias)" : "")
                                                         : "",
             act_names[d->activation], moevk_dtype_name(d->weight_dtype),
             moevk_dtype_name(d->router_dtype), (double)d->capacity_factor, d->num_shared,
             d->shared_ffn ? d->shared_ffn : d->ffn, d->shared_gate ? "+gate" : "",
             d->experts.up ? "" : " per-expert", c->nan_token >= 0 ? " nonfinite-token" : "",
             c->n_ties ? " ties" : "");
    if (d->routing == MOEVK_ROUTING_SIGMOID_GROUPED) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, " n_group=%u topk_group=%u scale=%g", d->n_group,
                 d->topk_group, (double)d->routed_scaling_factor);
    }
}

static uint32_t pick(mvkt_rng *r, uint32_t forced, uint32_t lo, uint32_t hi)
{
    return forced ? forced : mvkt_range(r, lo, hi);
}

static float *random_f32(mvkt_rng *r, size_t n, float scale)
{
    return mvkt_random_weights(r, MOEVK_DTYPE_F32, n, scale);
}

static void make_case(uint64_t seed, const opts *o, tcase *c)
{
    memset(c, 0, sizeof *c);
    c->seed = seed;
    c->nan_token = -1;
    mvkt_rng r = mvkt_rng_make(seed);
    moevk_layer_desc *d = &c->d;
    bool big = mvkt_range(&r, 0, 7) == 0; /* one case in eight is larger */
    uint32_t E = pick(&r, o->E, 1, big ? 300 : 40);
    uint32_t kcap = big ? 32 : 8;
    uint32_t K = o->K ? o->K : mvkt_range(&r, 1, E < kcap ? E : kcap);
    uint32_t H = pick(&r, o->H, 1, big ? 256 : 72);
    uint32_t F = pick(&r, o->F, 1, big ? 160 : 64);
    uint32_t T = pick(&r, o->T, 1, big ? 200 : 64);
    d->routing = (moevk_routing)(o->routing >= 0 ? (uint32_t)o->routing : mvkt_range(&r, 0, 2));
    d->activation = (moevk_activation)(o->act >= 0 ? (uint32_t)o->act : mvkt_range(&r, 0, 5));
    d->weight_dtype = (moevk_dtype)(o->wdt >= 0 ? (uint32_t)o->wdt : mvkt_range(&r, 0, 2));
    d->router_dtype = (moevk_dtype)(o->rdt >= 0 ? (uint32_t)o->rdt : mvkt_range(&r, 0, 2));
    d->norm_topk_prob = (int)mvkt_range(&r, 0, 1);
    uint32_t ns = o->ns >= 0 ? (uint32_t)o->ns : mvkt_range(&r, 0, 2);
    uint32_t Fs = ns && mvkt_range(&r, 0, 1) ? mvkt_range(&r, 1, big ? 160 : 64) : 0;

    /* keep the CPU reference (and the emulation) quick: shrink unforced
     * sizes until one pass is at most a few million multiply-adds */
    const double budget = big ? 1.5e7 : 3e6;
    for (int turn = 0;; turn++) {
        double work = (double)T * K * F * H * 3 + (double)T * ns * (Fs ? Fs : F) * H * 3 +
                      (double)T * E * H;
        if (work <= budget)
            break;
        if (turn % 3 == 0 && !o->H && H > 8)
            H = (H + 1) / 2;
        else if (turn % 3 == 1 && !o->F && F > 8)
            F = (F + 1) / 2;
        else if (!o->T && T > 4)
            T = (T + 1) / 2;
        else if (!o->F && Fs > 8)
            Fs = (Fs + 1) / 2;
        else if (turn > 60)
            break;
    }
    d->hidden = H;
    d->ffn = F;
    d->num_experts = E;
    d->top_k = K;
    c->T = T;

    if (d->routing == MOEVK_ROUTING_SIGMOID_GROUPED) {
        uint32_t divs[64], nd = 0;
        for (uint32_t g = 1; g <= E && nd < 64; g++)
            if (E % g == 0)
                divs[nd++] = g;
        d->n_group = divs[mvkt_range(&r, 0, nd - 1)];
        uint32_t size = E / d->n_group;
        d->topk_group = mvkt_range(&r, (K + size - 1) / size, d->n_group);
        if (mvkt_range(&r, 0, 1)) {
            c->cbias = random_f32(&r, E, 0.3f);
            d->correction_bias = c->cbias;
        }
        if (mvkt_range(&r, 0, 1))
            d->routed_scaling_factor = mvkt_uniform(&r, 0.5f, 3.0f);
    }
    if (d->activation == MOEVK_ACT_SWIGLU_OAI && mvkt_range(&r, 0, 1)) {
        d->swiglu_alpha = mvkt_uniform(&r, 0.5f, 2.5f);
        d->swiglu_limit = mvkt_uniform(&r, 0.3f, 3.0f);
    }
    if (o->cf < 0)
        d->capacity_factor = 0.0f;
    else if (o->cf > 0)
        d->capacity_factor = o->cf;
    else
        d->capacity_factor = mvkt_range(&r, 0, 1) ? mvkt_uniform(&r, 0.3f, 2.0f) : 0.0f;

    c->router = mvkt_random_weights(&r, d->router_dtype, (size_t)E * H, 3.0f / sqrtf((float)H));
    d->router_weight = c->router;
    if (mvkt_range(&r, 0, 1)) {
        c->rbias = random_f32(&r, E, 0.5f);
        d->router_bias = c->rbias;
    }
    /* exact ties: expert hi gets expert lo's router row (and biases), so
     * their scores are bitwise equal on both sides and the tie rule (lower
     * index first) decides */
    if (E >= 2 && (o->ties > 0 || (o->ties < 0 && mvkt_range(&r, 0, 3) == 0))) {
        const size_t rs = (size_t)H * moevk_dtype_size(d->router_dtype);
        c->n_ties = 1 + mvkt_range(&r, 0, (E / 2 < 4 ? E / 2 : 4) - 1);
        for (uint32_t i = 0; i < c->n_ties; i++) {
            uint32_t lo = mvkt_range(&r, 0, E - 2), hi = mvkt_range(&r, lo + 1, E - 1);
            memcpy((uint8_t *)c->router + hi * rs, (uint8_t *)c->router + lo * rs, rs);
            if (c->rbias)
                c->rbias[hi] = c->rbias[lo];
            if (c->cbias)
                c->cbias[hi] = c->cbias[lo];
        }
    }

    const bool gated = moevk_activation_is_gated(d->activation) != 0;
    const bool per_expert = o->per_expert >= 0 ? o->per_expert != 0 : mvkt_range(&r, 0, 3) == 0;
    const size_t es = moevk_dtype_size(d->weight_dtype);
    d->num_shared = ns;
    d->shared_ffn = Fs;
    for (int s = 0; s < 2; s++) {
        uint32_t count = s ? ns : E, ffn = s ? (Fs ? Fs : F) : F;
        moevk_expert_weights *w = s ? &d->shared : &d->experts;
        if (!count)
            continue;
        const size_t elems = (size_t)ffn * H;
        for (int m = 0; m < 3; m++) {
            if (m == 0 && !gated)
                continue;
            float scale = m == 2 ? 1.0f / sqrtf((float)ffn) : 2.0f / sqrtf((float)H);
            uint8_t *mat = mvkt_random_weights(&r, d->weight_dtype, count * elems, scale);
            const void *contiguous = mat;
            const void *const *ptrs = NULL;
            if (per_expert) {
                /* stored in reverse expert order behind per-expert pointers */
                uint8_t *rev = malloc(count * elems * es);
                c->ptrs[s][m] = malloc(count * sizeof(void *));
                cr_assert(rev && c->ptrs[s][m]);
                for (uint32_t e = 0; e < count; e++) {
                    uint8_t *dst = rev + (size_t)(count - 1 - e) * elems * es;
                    memcpy(dst, mat + (size_t)e * elems * es, elems * es);
                    c->ptrs[s][m][e] = dst;
                }
                free(mat);
                mat = rev;
                contiguous = NULL;
                ptrs = c->ptrs[s][m];
            }
            c->mat[s][m] = mat;
            if (m == 0) {
                w->gate = contiguous;
                w->gate_experts = ptrs;
            } else if (m == 1) {
                w->up = contiguous;
                w->up_experts = ptrs;
            } else {
                w->down = contiguous;
                w->down_experts = ptrs;
            }
            if (mvkt_range(&r, 0, 9) < 3) {
                c->bias[s][m] = random_f32(&r, (size_t)count * (m == 2 ? H : ffn), 0.2f);
                if (m == 0)
                    w->gate_bias = c->bias[s][m];
                else if (m == 1)
                    w->up_bias = c->bias[s][m];
                else
                    w->down_bias = c->bias[s][m];
            }
        }
    }
    if (ns && mvkt_range(&r, 0, 1)) {
        c->sgate = mvkt_random_weights(&r, d->router_dtype, (size_t)ns * H, 1.0f / sqrtf((float)H));
        d->shared_gate = c->sgate;
    }

    c->x = random_f32(&r, (size_t)T * H, 1.0f);
    if (o->nonfinite) {
        c->nan_token = mvkt_range(&r, 0, T - 1);
        const float bad[3] = {NAN, INFINITY, -INFINITY};
        c->x[(size_t)c->nan_token * H + mvkt_range(&r, 0, H - 1)] = bad[(o->nonfinite - 1) % 3];
    }
    cr_assert_eq(moevk_layer_desc_validate(NULL, d), MOEVK_SUCCESS, "generated an invalid desc");
}

static void free_case(tcase *c)
{
    free(c->x);
    free(c->router);
    free(c->sgate);
    free(c->rbias);
    free(c->cbias);
    for (int s = 0; s < 2; s++)
        for (int m = 0; m < 3; m++) {
            free(c->mat[s][m]);
            free(c->bias[s][m]);
            free((void *)c->ptrs[s][m]);
        }
}

/* ---- reference side ------------------------------------------------------------ */

static double sigmoid(double v)
{
    return 1.0 / (1.0 + exp(-v));
}

/* The selection score of expert e from the reference logits l (one token). */
static double sel_score(const moevk_layer_desc *d, const float *l, uint32_t e)
{
    if (d->routing != MOEVK_ROUTING_SIGMOID_GROUPED)
        return (double)l[e];
    return sigmoid((double)l[e]) + (d->correction_bias ? (double)d->correction_bias[e] : 0.0);
}

/* The routing weights of ids (one token) in double, from the reference
 * logits l: the formulas of moevk_ref_route. */
static void weights_for(const moevk_layer_desc *d, const float *l, const uint32_t *id, double *w)
{
    const uint32_t E = d->num_experts, k = d->top_k;
    if (d->routing == MOEVK_ROUTING_TOPK_SOFTMAX) {
        double m = -INFINITY, s = 0.0;
        for (uint32_t j = 0; j < k; j++)
            if ((double)l[id[j]] > m)
                m = l[id[j]];
        for (uint32_t j = 0; j < k; j++)
            s += exp((double)l[id[j]] - m);
        for (uint32_t j = 0; j < k; j++)
            w[j] = exp((double)l[id[j]] - m) / s;
    } else if (d->routing == MOEVK_ROUTING_SIGMOID_GROUPED) {
        double s = 0.0;
        double scale = d->routed_scaling_factor ? (double)d->routed_scaling_factor : 1.0;
        for (uint32_t j = 0; j < k; j++)
            s += sigmoid(l[id[j]]);
        for (uint32_t j = 0; j < k; j++) {
            double v = sigmoid(l[id[j]]);
            if (d->norm_topk_prob)
                v /= s + 1e-20;
            w[j] = v * scale;
        }
    } else {
        double m = -INFINITY, s = 0.0, ks = 0.0;
        for (uint32_t e = 0; e < E; e++)
            if ((double)l[e] > m)
                m = l[e];
        for (uint32_t e = 0; e < E; e++)
            s += exp((double)l[e] - m);
        for (uint32_t j = 0; j < k; j++)
            ks += exp((double)l[id[j]] - m) / s;
        for (uint32_t j = 0; j < k; j++) {
            double p = exp((double)l[id[j]] - m) / s;
            w[j] = d->norm_topk_prob ? p / ks : p;
        }
    }
}

typedef struct refres {
    float *y, *w, *logits;
    uint32_t *ids, *tpe;
    uint8_t *near;
    double *bound; /* [T]: f32 error bound of the token's selection scores */
    moevk_routing_stats st;
} refres;

static void reference(const tcase *c, refres *R)
{
    const moevk_layer_desc *d = &c->d;
    const uint32_t T = c->T, H = d->hidden, E = d->num_experts, k = d->top_k;
    R->y = malloc(sizeof(float) * T * H);
    R->w = malloc(sizeof(float) * T * k);
    R->ids = malloc(sizeof(uint32_t) * T * k);
    R->near = malloc(T);
    R->tpe = malloc(sizeof(uint32_t) * E);
    R->logits = malloc(sizeof(float) * T * E);
    R->bound = malloc(sizeof(double) * T);
    cr_assert(R->y && R->w && R->ids && R->near && R->tpe && R->logits && R->bound);
    memset(&R->st, 0, sizeof R->st);
    R->st.tokens_per_expert = R->tpe;
    cr_assert_eq(moevk_ref_layer_forward(d, T, c->x, R->y, R->ids, R->w, R->near, &R->st),
                 MOEVK_SUCCESS);
    moevk_ref_router_logits(c->x, T, H, d->router_weight, d->router_dtype, E, d->router_bias,
                            R->logits);
    for (uint32_t t = 0; t < T; t++) {
        double maxdot = 0.0, maxl = 0.0;
        for (uint32_t e = 0; e < E; e++) {
            double s = 0.0;
            for (uint32_t h = 0; h < H; h++)
                s += fabs((double)c->x[(size_t)t * H + h] *
                          moevk_ref_load(d->router_weight, d->router_dtype, (size_t)e * H + h));
            if (s > maxdot)
                maxdot = s;
            double l = fabs((double)R->logits[(size_t)t * E + e]);
            if (l > maxl)
                maxl = l;
        }
        double b = 8e-6 * maxdot + 4e-6 * maxl + 1e-30;
        /* sigmoid has slope <= 1/4; c = s + bias rounds at ~1e-7 */
        R->bound[t] = d->routing == MOEVK_ROUTING_SIGMOID_GROUPED ? b / 4 + 2e-6 : b;
    }
}

static void free_ref(refres *R)
{
    free(R->y);
    free(R->w);
    free(R->ids);
    free(R->near);
    free(R->tpe);
    free(R->logits);
    free(R->bound);
}

/* Whether token t's GPU ids (g) may differ from the reference's (r) by the
 * router's f32 rounding: slot by slot within the bound, or (grouped) kept
 * groups that tie within the bound. */
static bool plausible_swap(const tcase *c, const refres *R, uint32_t t, const uint32_t *g,
                           const uint32_t *r)
{
    const moevk_layer_desc *d = &c->d;
    const uint32_t E = d->num_experts, k = d->top_k;
    const float *l = R->logits + (size_t)t * E;
    const double b = R->bound[t];
    bool slotwise = true;
    for (uint32_t j = 0; j < k && slotwise; j++) {
        double a = sel_score(d, l, g[j]), q = sel_score(d, l, r[j]);
        if (g[j] == r[j])
            continue;
        /* an exact tie is the tie rule's to decide: never rounding */
        if (isnan(a) || isnan(q))
            slotwise = false;
        else
            slotwise = a != q && fabs(a - q) <= b;
    }
    if (slotwise || d->routing != MOEVK_ROUTING_SIGMOID_GROUPED)
        return slotwise;
    /* group level: every group the GPU used scores within 2b of the
     * weakest group the reference kept */
    const uint32_t n_group = d->n_group ? d->n_group : 1, size = E / n_group;
    double gs[MOEVK_MAX_EXPERTS], weakest = INFINITY;
    for (uint32_t gi = 0; gi < n_group; gi++) {
        double b1 = -INFINITY, b2 = -INFINITY;
        for (uint32_t e = gi * size; e < (gi + 1) * size; e++) {
            double v = sel_score(d, l, e);
            if (v > b1) {
                b2 = b1;
                b1 = v;
            } else if (v > b2) {
                b2 = v;
            }
        }
        gs[gi] = size == 1 ? b1 : b1 + b2;
    }
    for (uint32_t j = 0; j < k; j++)
        if (gs[r[j] / size] < weakest)
            weakest = gs[r[j] / size];
    for (uint32_t j = 0; j < k; j++) {
        double v = gs[g[j] / size];
        if (!(v >= weakest - 2 * b) || (v == weakest && g[j] / size != r[j] / size))
            return false;
    }
    return true;
}

/* y composed from the GPU's routing: sum over admitted slots of w * the
 * reference expert FFN, plus the shared experts; double accumulation. */
static void compose_y(const tcase *c, const uint32_t *ids, const double *w, const int32_t *rows,
                      float *out)
{
    const moevk_layer_desc *d = &c->d;
    const uint32_t H = d->hidden, k = d->top_k;
    const uint32_t Fs = d->shared_ffn ? d->shared_ffn : d->ffn;
    float *o = malloc(sizeof(float) * H);
    double *acc = malloc(sizeof(double) * H);
    cr_assert(o && acc);
    for (uint32_t t = 0; t < c->T; t++) {
        const float *xt = c->x + (size_t)t * H;
        for (uint32_t h = 0; h < H; h++)
            acc[h] = 0.0;
        for (uint32_t j = 0; j < k; j++) {
            size_t a = (size_t)t * k + j;
            if (rows[a] < 0)
                continue;
            cr_assert_eq(moevk_ref_expert_ffn(d, &d->experts, d->ffn, ids[a], xt, 1, o), 0);
            for (uint32_t h = 0; h < H; h++)
                acc[h] += w[a] * (double)o[h];
        }
        for (uint32_t i = 0; i < d->num_shared; i++) {
            cr_assert_eq(moevk_ref_expert_ffn(d, &d->shared, Fs, i, xt, 1, o), 0);
            double g = 1.0;
            if (d->shared_gate) {
                double s = 0.0;
                for (uint32_t h = 0; h < H; h++)
                    s += (double)xt[h] *
                         moevk_ref_load(d->shared_gate, d->router_dtype, (size_t)i * H + h);
                g = sigmoid(s);
            }
            for (uint32_t h = 0; h < H; h++)
                acc[h] += g * (double)o[h];
        }
        for (uint32_t h = 0; h < H; h++)
            out[(size_t)t * H + h] = (float)acc[h];
    }
    free(o);
    free(acc);
}

static bool row_finite(const float *y, uint32_t t, uint32_t H)
{
    for (uint32_t h = 0; h < H; h++)
        if (!isfinite(y[(size_t)t * H + h]))
            return false;
    return true;
}

/* Relative L2 error over the tokens with use[t]. */
static double rel_l2_tokens(const float *a, const float *ref, const uint8_t *use, uint32_t T,
                            uint32_t H)
{
    double num = 0.0, den = 0.0;
    for (uint32_t t = 0; t < T; t++) {
        if (!use[t])
            continue;
        for (uint32_t h = 0; h < H; h++) {
            double dv = (double)a[(size_t)t * H + h] - (double)ref[(size_t)t * H + h];
            num += dv * dv;
            den += (double)ref[(size_t)t * H + h] * ref[(size_t)t * H + h];
        }
    }
    if (isnan(num) || isnan(den))
        return NAN;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static bool close_or_both_nan(double a, double ref, double rel, double abs_tol)
{
    if (isnan(ref) || isnan(a))
        return isnan(ref) && isnan(a);
    return fabs(a - ref) <= rel * fabs(ref) + abs_tol;
}

static double y_tolerance(mvk_cuda_backend b, moevk_dtype wdt)
{
    if (wdt == MOEVK_DTYPE_F32)
        return 1e-5;
    if (b != MVK_CUDA_CUBLAS)
        return 1e-4;
    /* activations rounded to the weight dtype: 4 units of its rounding */
    return wdt == MOEVK_DTYPE_F16 ? 4.0 / 2048.0 : 4.0 / 256.0;
}

/* ---- running and checking one case --------------------------------------------- */

typedef struct gpures {
    float *y, *w;
    uint32_t *ids, *tpe;
    int32_t *rows;
    moevk_routing_stats st;
    double stage[MOEVK_STAGE_COUNT], total;
} gpures;

static void gpu_alloc(const tcase *c, gpures *g)
{
    const uint32_t T = c->T, H = c->d.hidden, k = c->d.top_k, E = c->d.num_experts;
    memset(g, 0, sizeof *g);
    g->y = malloc(sizeof(float) * T * H);
    g->w = malloc(sizeof(float) * T * k);
    g->ids = malloc(sizeof(uint32_t) * T * k);
    g->rows = malloc(sizeof(int32_t) * T * k);
    g->tpe = malloc(sizeof(uint32_t) * E);
    cr_assert(g->y && g->w && g->ids && g->rows && g->tpe);
    mvkt_poison(g->y, (size_t)T * H);
    mvkt_poison(g->w, (size_t)T * k);
    memset(g->ids, 0xff, sizeof(uint32_t) * T * k);
    memset(g->rows, 0x7f, sizeof(int32_t) * T * k);
    memset(g->tpe, 0xff, sizeof(uint32_t) * E);
    g->st.tokens_per_expert = g->tpe;
    g->st.dropped = UINT64_MAX;
    g->st.load_balancing_loss = g->st.router_z_loss = g->st.routing_entropy = NAN;
}

static void gpu_free(gpures *g)
{
    free(g->y);
    free(g->w);
    free(g->ids);
    free(g->rows);
    free(g->tpe);
}

static void gpu_forward(mvk_cuda_layer *L, const tcase *c, gpures *g, const char *desc)
{
    char err[512] = "";
    moevk_status st = mvk_cuda_layer_forward(L, c->T, c->x, g->y, g->ids, g->w, g->rows, &g->st,
                                             g->stage, &g->total, err, sizeof err);
    cr_assert_eq(st, MOEVK_SUCCESS, "%s: forward: %s: %s", desc, moevk_status_string(st), err);
}

static mvk_cuda_layer *create_layer(const moevk_layer_desc *d, mvk_cuda_backend b,
                                    const char *desc)
{
    char err[512] = "";
    mvk_cuda_layer *L = NULL;
    moevk_status st = mvk_cuda_layer_create(d, b, &L, err, sizeof err);
    if (st == MOEVK_ERROR_UNSUPPORTED && b != MVK_CUDA_REF && strstr(err, "cuBLAS") &&
        !env_flag("MOEVK_REQUIRE_CUDA"))
        cr_skip_test("%s", err); /* no libcublas on this machine */
    cr_assert_eq(st, MOEVK_SUCCESS, "%s: create(%s): %s: %s", desc, mvk_cuda_backend_name(b),
                 moevk_status_string(st), err);
    cr_assert_not_null(L);
    return L;
}

typedef struct tally {
    uint32_t cases, swapped, near, dropped_cases;
    double worst_y;
} tally;

static void check_case(const tcase *c, mvk_cuda_backend b, tally *tl)
{
    const moevk_layer_desc *d = &c->d;
    const uint32_t T = c->T, H = d->hidden, E = d->num_experts, k = d->top_k;
    char desc[512];
    describe(c, desc, sizeof desc);
    char what[600];
    snprintf(what, sizeof what, "[%s] %s", mvk_cuda_backend_name(b), desc);

    refres R;
    reference(c, &R);
    mvk_cuda_layer *L = create_layer(d, b, what);
    gpures g;
    gpu_alloc(c, &g);
    gpu_forward(L, c, &g, what);

    /* ids: valid, distinct, the reference's unless near-tied */
    uint8_t *same = calloc(T, 1), *use = calloc(T, 1);
    cr_assert(same && use);
    uint32_t swapped = 0, near = 0;
    for (uint32_t t = 0; t < T; t++) {
        const uint32_t *gi = g.ids + (size_t)t * k, *ri = R.ids + (size_t)t * k;
        for (uint32_t j = 0; j < k; j++) {
            cr_assert_lt(gi[j], E, "%s: ids[%u, %u] = %u", what, t, j, gi[j]);
            for (uint32_t i = 0; i < j; i++)
                cr_assert_neq(gi[i], gi[j], "%s: token %u repeats expert %u", what, t, gi[j]);
        }
        near += R.near[t];
        same[t] = memcmp(gi, ri, sizeof(uint32_t) * k) == 0;
        if (!same[t]) {
            cr_assert(R.near[t] || plausible_swap(c, &R, t, gi, ri),
                      "%s: token %u: ids differ from the reference beyond rounding "
                      "(slot 0: gpu %u, ref %u)", what, t, gi[0], ri[0]);
            swapped++;
        }
    }

    /* weights, against the double weights of the GPU's own ids */
    double *wchk = malloc(sizeof(double) * T * k);
    cr_assert(wchk);
    double wnum = 0.0, wden = 0.0;
    for (uint32_t t = 0; t < T; t++) {
        weights_for(d, R.logits + (size_t)t * E, g.ids + (size_t)t * k, wchk + (size_t)t * k);
        for (uint32_t j = 0; j < k; j++) {
            size_t a = (size_t)t * k + j;
            double gw = g.w[a], rw = wchk[a];
            cr_assert_eq(isnan(gw), isnan(rw), "%s: weights[%u, %u]: gpu %g ref %g", what, t, j,
                         gw, rw);
            if (isnan(rw))
                continue;
            cr_assert_leq(fabs(gw - rw), 1e-4 * fabs(rw) + 1e-7,
                          "%s: weights[%u, %u]: gpu %.9g ref %.9g", what, t, j, gw, rw);
            wnum += (gw - rw) * (gw - rw);
            wden += rw * rw;
        }
    }
    double werr = wden > 0 ? sqrt(wnum / wden) : sqrt(wnum);
    cr_assert_leq(werr, 1e-5, "%s: weights relative L2 error %g", what, werr);

    /* rows, counts, dropped: the reference permutation of the GPU's ids */
    uint32_t *cnt = malloc(sizeof(uint32_t) * E), *off = malloc(sizeof(uint32_t) * (E + 1));
    int32_t *rows = malloc(sizeof(int32_t) * T * k);
    cr_assert(cnt && off && rows);
    uint64_t dropped = moevk_ref_permute(d, T, g.ids, cnt, off, rows);
    for (size_t a = 0; a < (size_t)T * k; a++)
        cr_assert_eq(g.rows[a], rows[a], "%s: rows[%zu, %zu] = %d, expected %d", what, a / k,
                     a % k, g.rows[a], rows[a]);
    for (uint32_t e = 0; e < E; e++)
        cr_assert_eq(g.tpe[e], cnt[e], "%s: tokens_per_expert[%u] = %u, expected %u", what, e,
                     g.tpe[e], cnt[e]);
    cr_assert_eq(g.st.dropped, dropped, "%s: dropped = %llu, expected %llu", what,
                 (unsigned long long)g.st.dropped, (unsigned long long)dropped);
    if (swapped == 0)
        cr_assert_eq(dropped, R.st.dropped, "%s: dropped differs from the reference", what);

    /* y against the reference composed from the GPU's routing */
    const double tol = y_tolerance(b, d->weight_dtype);
    float *ychk = malloc(sizeof(float) * T * H);
    cr_assert(ychk);
    compose_y(c, g.ids, wchk, rows, ychk);
    for (uint32_t t = 0; t < T; t++) {
        bool fin = row_finite(ychk, t, H);
        cr_assert_eq(row_finite(g.y, t, H), fin, "%s: token %u: y is %sfinite, reference %sfinite",
                     what, t, fin ? "not " : "", fin ? "" : "not ");
        use[t] = fin;
    }
    double err1 = rel_l2_tokens(g.y, ychk, use, T, H);
    cr_assert_leq(err1, tol, "%s: y vs reference of the same routing: relative L2 %g > %g", what,
                  err1, tol);

    /* y against moevk_ref_layer_forward, near-tied and swapped tokens
     * excluded (unless a swap under capacity moves other admissions) */
    if (swapped == 0 || d->capacity_factor == 0.0f) {
        for (uint32_t t = 0; t < T; t++)
            use[t] = same[t] && !R.near[t] && row_finite(R.y, t, H);
        for (uint32_t t = 0; t < T; t++)
            if (same[t] && !R.near[t])
                cr_assert_eq(row_finite(g.y, t, H), row_finite(R.y, t, H),
                             "%s: token %u: finiteness differs from moevk_ref_layer_forward",
                             what, t);
        double err2 = rel_l2_tokens(g.y, R.y, use, T, H);
        cr_assert_leq(err2, tol, "%s: y vs moevk_ref_layer_forward: relative L2 %g > %g", what,
                      err2, tol);
        if (err2 > tl->worst_y)
            tl->worst_y = err2;
    }

    /* losses */
    cr_assert(close_or_both_nan(g.st.router_z_loss, R.st.router_z_loss, 1e-4, 1e-5),
              "%s: z-loss %.9g, reference %.9g", what, g.st.router_z_loss, R.st.router_z_loss);
    cr_assert(close_or_both_nan(g.st.routing_entropy, R.st.routing_entropy, 1e-4, 1e-5),
              "%s: entropy %.9g, reference %.9g", what, g.st.routing_entropy,
              R.st.routing_entropy);
    cr_assert(close_or_both_nan(g.st.load_balancing_loss, R.st.load_balancing_loss,
                                swapped ? 1e-3 : 1e-4, 1e-5),
              "%s: load-balancing loss %.9g, reference %.9g", what, g.st.load_balancing_loss,
              R.st.load_balancing_loss);

    /* timings */
    for (int s = 0; s < MOEVK_STAGE_COUNT; s++)
        cr_assert(isfinite(g.stage[s]) && g.stage[s] >= 0.0, "%s: stage %s time %g", what,
                  moevk_stage_name((moevk_stage)s), g.stage[s]);
    cr_assert(isfinite(g.total) && g.total >= 0.0, "%s: total time %g", what, g.total);

    /* a second pass on the same layer is bitwise the same */
    gpures g2;
    gpu_alloc(c, &g2);
    gpu_forward(L, c, &g2, what);
    cr_assert(memcmp(g.ids, g2.ids, sizeof(uint32_t) * T * k) == 0, "%s: ids not repeatable",
              what);
    cr_assert(memcmp(g.rows, g2.rows, sizeof(int32_t) * T * k) == 0, "%s: rows not repeatable",
              what);
    cr_assert(memcmp(g.w, g2.w, sizeof(float) * T * k) == 0, "%s: weights not repeatable", what);
    cr_assert(memcmp(g.y, g2.y, sizeof(float) * T * H) == 0, "%s: y not bitwise repeatable",
              what);

    tl->cases++;
    tl->swapped += swapped;
    tl->near += near;
    tl->dropped_cases += dropped > 0;
    gpu_free(&g);
    gpu_free(&g2);
    mvk_cuda_layer_destroy(L);
    free_ref(&R);
    free(same);
    free(use);
    free(wchk);
    free(cnt);
    free(off);
    free(rows);
    free(ychk);
}

static void report(const char *name, const tally *tl)
{
    cr_log_info("%s: %u cases, %u swapped and %u near-tied tokens, %u cases with drops, "
                "worst y error vs moevk_ref_layer_forward %.3g",
                name, tl->cases, tl->swapped, tl->near, tl->dropped_cases, tl->worst_y);
}

static void random_cases(mvk_cuda_backend b, const opts *o, uint32_t n, uint64_t salt,
                         const char *name)
{
    need_device();
    const uint64_t base = mvkt_base_seed();
    tally tl = {0, 0, 0, 0, 0.0};
    for (uint32_t i = 0; i < n; i++) {
        tcase c;
        make_case(base ^ (salt * 0x9e3779b97f4a7c15ull + i), o, &c);
        check_case(&c, b, &tl);
        free_case(&c);
    }
    report(name, &tl);
}

/* ---- tests that run everywhere ------------------------------------------------- */

/* A small valid layer (weights are static zeros: nothing is computed). */
static moevk_layer_desc tiny_desc(void)
{
    static float router[4 * 8], mats[3][4 * 6 * 8];
    moevk_layer_desc d;
    memset(&d, 0, sizeof d);
    d.hidden = 8;
    d.ffn = 6;
    d.num_experts = 4;
    d.top_k = 2;
    d.router_weight = router;
    d.experts.gate = mats[0];
    d.experts.up = mats[1];
    d.experts.down = mats[2];
    return d;
}

Test(cuda, no_device_is_a_clean_error)
{
    char msg[512] = "";
    if (mvk_cuda_device_available(msg, sizeof msg))
        cr_skip_test("a CUDA device is present (%s): the no-device path is not reachable", msg);
    cr_assert(strlen(msg) > 0, "mvk_cuda_device_available gave no reason");
    cr_assert_eq(mvk_cuda_device_available(NULL, 0), 0, "the answer changed");
    moevk_layer_desc d = tiny_desc();
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++) {
        char err[512] = "";
        mvk_cuda_layer *L = (mvk_cuda_layer *)&d; /* must be overwritten with NULL */
        moevk_status st = mvk_cuda_layer_create(&d, (mvk_cuda_backend)b, &L, err, sizeof err);
        /* UNSUPPORTED: a device exists but is older than sm_90 */
        cr_assert(st == MOEVK_ERROR_NO_DEVICE || st == MOEVK_ERROR_UNSUPPORTED,
                  "backend %s: %s (%s)", mvk_cuda_backend_name((mvk_cuda_backend)b),
                  moevk_status_string(st), err);
        if (strstr(msg, "no CUDA device"))
            cr_assert_eq(st, MOEVK_ERROR_NO_DEVICE, "%s", err);
        cr_assert_null(L);
        cr_assert(strlen(err) > 0, "no message");
        /* no buffer for the message is fine too */
        cr_assert_eq(mvk_cuda_layer_create(&d, (mvk_cuda_backend)b, &L, NULL, 0), st);
    }
    /* every entry point is safe without a layer */
    char err[256];
    float x[8] = {0}, y[8];
    double ms[MOEVK_STAGE_COUNT], total;
    cr_assert_eq(mvk_cuda_layer_forward(NULL, 1, x, y, NULL, NULL, NULL, NULL, NULL, NULL, err,
                                        sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(err, "layer"), "%s", err);
    cr_assert_eq(mvk_cuda_layer_bench(NULL, 1, x, 0, 1, ms, &total, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    mvk_cuda_layer_destroy(NULL);
    uint64_t wb = 1, sb = 1;
    mvk_cuda_layer_memory(NULL, &wb, &sb);
    cr_assert(wb == 0 && sb == 0);
}

Test(cuda, bad_arguments_are_rejected_before_the_device)
{
    char err[512];
    mvk_cuda_layer *L = NULL;
    moevk_layer_desc d = tiny_desc();
    d.top_k = 0;
    cr_assert_eq(mvk_cuda_layer_create(&d, MVK_CUDA_REF, &L, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_null(L);
    cr_assert(strstr(err, "top_k"), "the message should name the field: %s", err);
    d = tiny_desc();
    d.experts.down = NULL;
    cr_assert_eq(mvk_cuda_layer_create(&d, MVK_CUDA_CUBLAS, &L, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    d = tiny_desc();
    cr_assert_eq(mvk_cuda_layer_create(&d, (mvk_cuda_backend)7, &L, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert(strstr(err, "backend"), "%s", err);
    cr_assert_eq(mvk_cuda_layer_create(NULL, MVK_CUDA_REF, &L, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_eq(mvk_cuda_layer_create(&d, MVK_CUDA_REF, NULL, err, sizeof err),
                 MOEVK_ERROR_INVALID_ARGUMENT);
    cr_assert_str_eq(mvk_cuda_backend_name(MVK_CUDA_REF), "ref");
    cr_assert_str_eq(mvk_cuda_backend_name(MVK_CUDA_CUBLAS), "cublas");
    cr_assert_str_eq(mvk_cuda_backend_name(MVK_CUDA_CUBLAS_F32), "cublas-f32");
    cr_assert_str_eq(mvk_cuda_backend_name((mvk_cuda_backend)9), "unknown");
}

/* ---- device tests ----------------------------------------------------------------- */

Test(cuda, ref_backend_random_layers, .timeout = 280)
{
    opts o = random_opts();
    random_cases(MVK_CUDA_REF, &o, 40, 1, "ref");
}

Test(cuda, cublas_backend_random_layers, .timeout = 280)
{
    opts o = random_opts();
    random_cases(MVK_CUDA_CUBLAS, &o, 40, 2, "cublas");
}

Test(cuda, cublas_f32_backend_random_layers, .timeout = 280)
{
    opts o = random_opts();
    random_cases(MVK_CUDA_CUBLAS_F32, &o, 25, 3, "cublas-f32");
}

/* Every routing mode x activation x weight dtype, each backend, small. */
Test(cuda, every_mode_activation_and_dtype, .timeout = 280)
{
    need_device();
    const uint64_t base = mvkt_base_seed();
    tally tl = {0, 0, 0, 0, 0.0};
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++)
        for (int routing = 0; routing < 3; routing++)
            for (int act = 0; act < 6; act++)
                for (int wdt = 0; wdt < 3; wdt++) {
                    opts o = random_opts();
                    o.routing = routing;
                    o.act = act;
                    o.wdt = wdt;
                    o.T = 12;
                    o.H = 24;
                    o.F = 20;
                    o.E = 8;
                    o.K = 3;
                    tcase c;
                    make_case(base + (uint64_t)(((b * 3 + routing) * 6 + act) * 3 + wdt), &o,
                              &c);
                    check_case(&c, (mvk_cuda_backend)b, &tl);
                    free_case(&c);
                }
    report("every mode", &tl);
}

/* Capacity that drops assignments, with shared experts, on every backend. */
Test(cuda, capacity_drops, .timeout = 280)
{
    need_device();
    const uint64_t base = mvkt_base_seed();
    tally tl = {0, 0, 0, 0, 0.0};
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++)
        for (int i = 0; i < 6; i++) {
            opts o = random_opts();
            o.cf = 0.5f;
            o.ns = 1 + i % 2;
            o.T = 40;
            o.E = 6;
            o.K = 2;
            tcase c;
            make_case(base ^ (0xcafe00u + (uint64_t)(b * 16 + i)), &o, &c);
            check_case(&c, (mvk_cuda_backend)b, &tl);
            free_case(&c);
        }
    cr_assert_eq(tl.dropped_cases, tl.cases, "every case should drop assignments");
    report("capacity", &tl);
}

/* Duplicated router rows: exact score ties, decided by the tie rule (the
 * lower expert index first) identically on both sides, never excluded. */
Test(cuda, exact_ties, .timeout = 280)
{
    need_device();
    const uint64_t base = mvkt_base_seed();
    tally tl = {0, 0, 0, 0, 0.0};
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++)
        for (int routing = 0; routing < 3; routing++)
            for (int i = 0; i < 3; i++) {
                opts o = random_opts();
                o.routing = routing;
                o.ties = 1;
                o.T = 24;
                o.E = 4 + 2 * (uint32_t)i;
                tcase c;
                make_case(base ^ (0x71e00u + (uint64_t)((b * 3 + routing) * 3 + i)), &o, &c);
                check_case(&c, (mvk_cuda_backend)b, &tl);
                free_case(&c);
            }
    report("exact ties", &tl);
}

/* A NaN, +inf or -inf in one token's x: its logits are NaN or +-inf, so
 * its softmax weights and y are NaN (inf - inf), selection follows the
 * NaN and tie rules; the other tokens are unaffected; the losses are NaN
 * as in the reference. */
Test(cuda, nonfinite_token, .timeout = 280)
{
    need_device();
    const uint64_t base = mvkt_base_seed();
    tally tl = {0, 0, 0, 0, 0.0};
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++)
        for (int routing = 0; routing < 3; routing++)
            for (int kind = 1; kind <= 3; kind++) {
                opts o = random_opts();
                o.routing = routing;
                o.nonfinite = kind;
                o.T = 9;
                tcase c;
                make_case(base ^ (0xbad00u + (uint64_t)((b * 4 + routing) * 4 + kind)), &o, &c);
                check_case(&c, (mvk_cuda_backend)b, &tl);
                free_case(&c);
            }
    report("nonfinite token", &tl);
}

/* Extreme shapes: one expert, 1024 experts with k = 32, H = F = 1, one
 * token, many tokens. */
Test(cuda, edge_shapes, .timeout = 280)
{
    need_device();
    const uint64_t base = mvkt_base_seed();
    struct { uint32_t T, H, F, E, K; int routing; } shapes[] = {
        {5, 16, 8, 1, 1, 0},     {3, 8, 4, 1024, 32, 0}, {4, 8, 4, 1024, 32, 2},
        {7, 1, 1, 5, 2, 1},      {1, 33, 17, 9, 4, 2},   {600, 8, 6, 16, 2, 0},
        {300, 12, 10, 64, 8, 1},
    };
    tally tl = {0, 0, 0, 0, 0.0};
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            opts o = random_opts();
            o.T = shapes[i].T;
            o.H = shapes[i].H;
            o.F = shapes[i].F;
            o.E = shapes[i].E;
            o.K = shapes[i].K;
            o.routing = shapes[i].routing;
            tcase c;
            make_case(base ^ (0xed9e00u + (uint64_t)(b * 16) + i), &o, &c);
            check_case(&c, (mvk_cuda_backend)b, &tl);
            free_case(&c);
        }
    report("edge shapes", &tl);
}

/* One layer used with growing and shrinking T, and the benchmark entry. */
Test(cuda, reuse_and_bench, .timeout = 280)
{
    need_device();
    const uint64_t seed = mvkt_base_seed();
    for (int b = 0; b < MVK_CUDA_BACKEND_COUNT; b++) {
        opts o = random_opts();
        o.T = 64;
        o.ns = 1;
        tcase c;
        make_case(seed ^ (0xbe0c00u + (uint64_t)b), &o, &c);
        char desc[512];
        describe(&c, desc, sizeof desc);
        mvk_cuda_layer *L = create_layer(&c.d, (mvk_cuda_backend)b, desc);
        const uint32_t H = c.d.hidden, k = c.d.top_k;
        uint64_t wb = 0, sb = 0;
        mvk_cuda_layer_memory(L, &wb, &sb);
        cr_assert_gt(wb, 0);
        cr_assert_eq(sb, 0, "no scratch before the first pass");
        /* the full-T pass is the reference for every prefix: rows of a
         * prefix differ only through capacity, so compare dropless ids */
        float *y_full = malloc(sizeof(float) * c.T * H), *y = malloc(sizeof(float) * c.T * H);
        uint32_t *ids_full = malloc(4 * c.T * k), *ids = malloc(4 * c.T * k);
        cr_assert(y_full && y && ids_full && ids);
        char err[512];
        moevk_status st;
        const uint32_t Ts[] = {c.T, 5, 1, c.T, 17};
        for (size_t i = 0; i < sizeof Ts / sizeof Ts[0]; i++) {
            uint32_t T = Ts[i];
            mvkt_poison(y, (size_t)c.T * H);
            st = mvk_cuda_layer_forward(L, T, c.x, y, ids, NULL, NULL, NULL, NULL, NULL, err,
                                        sizeof err);
            cr_assert_eq(st, MOEVK_SUCCESS, "%s: T=%u: %s", desc, T, err);
            if (i == 0) {
                memcpy(y_full, y, sizeof(float) * c.T * H);
                memcpy(ids_full, ids, 4 * c.T * k);
                mvk_cuda_layer_memory(L, &wb, &sb);
                cr_assert_gt(sb, 0);
            }
            /* routing is per token: the ids of a prefix are the full pass's */
            cr_assert(memcmp(ids, ids_full, 4 * (size_t)T * k) == 0, "%s: T=%u ids", desc, T);
            /* dropless, a prefix's y is the full pass's: bitwise for the
             * per-element kernels; cuBLAS may pick other GEMM kernels for
             * other row counts (same inputs, other summation order) */
            if (c.d.capacity_factor == 0.0f && b == MVK_CUDA_REF)
                cr_assert(memcmp(y, y_full, sizeof(float) * T * H) == 0,
                          "%s: T=%u: y of a prefix differs (dropless)", desc, T);
            if (c.d.capacity_factor == 0.0f && b != MVK_CUDA_REF) {
                double e = mvkt_rel_l2(y, y_full, (size_t)T * H);
                cr_assert_leq(e, 1e-5, "%s: T=%u: y of a prefix differs by %g", desc, T, e);
            }
            for (size_t j = 0; j < (size_t)T * H; j++)
                cr_assert(!isnan(y[j]), "%s: T=%u: y[%zu] not written", desc, T, j);
        }
        uint64_t sb2 = 0;
        mvk_cuda_layer_memory(L, NULL, &sb2);
        cr_assert_eq(sb2, sb, "scratch should not grow for smaller T");

        double ms[MOEVK_STAGE_COUNT], total = -1;
        for (int s = 0; s < MOEVK_STAGE_COUNT; s++)
            ms[s] = -1;
        st = mvk_cuda_layer_bench(L, c.T, c.x, 1, 3, ms, &total, err, sizeof err);
        cr_assert_eq(st, MOEVK_SUCCESS, "%s: bench: %s", desc, err);
        double sum = 0;
        for (int s = 0; s < MOEVK_STAGE_COUNT; s++) {
            cr_assert(isfinite(ms[s]) && ms[s] >= 0, "%s: bench stage %d: %g", desc, s, ms[s]);
            sum += ms[s];
        }
        cr_assert(isfinite(total) && total >= 0 && total <= 3 * sum + 1.0,
                  "%s: bench total %g vs stages %g", desc, total, sum);
        cr_assert_eq(mvk_cuda_layer_bench(L, c.T, c.x, 0, 0, ms, &total, err, sizeof err),
                     MOEVK_ERROR_INVALID_ARGUMENT);
        cr_assert_eq(mvk_cuda_layer_forward(L, 0, c.x, y, NULL, NULL, NULL, NULL, NULL, NULL,
                                            err, sizeof err),
                     MOEVK_ERROR_INVALID_ARGUMENT);
        /* still usable, and the same as before */
        st = mvk_cuda_layer_forward(L, c.T, c.x, y, NULL, NULL, NULL, NULL, NULL, NULL, err,
                                    sizeof err);
        cr_assert_eq(st, MOEVK_SUCCESS, "%s", err);
        cr_assert(memcmp(y, y_full, sizeof(float) * c.T * H) == 0, "%s: y changed", desc);
        mvk_cuda_layer_destroy(L);
        free(y_full), free(y), free(ids_full), free(ids);
        free_case(&c);
    }
}
