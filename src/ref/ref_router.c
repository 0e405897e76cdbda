/*
 * CPU reference, router side: logits, scores, routing (selection and
 * weights, every mode), capacity, permutation and routing statistics.
 * Double arithmetic throughout; floats only where ref.h stores results.
 *
 * Non-finite values (what torch does, and what the GPU must do too):
 *  - softmax of a row holding a NaN or a +inf logit, or whose logits are all
 *    -inf, is NaN for the whole row (exp(x - max) turns into NaN); other rows
 *    are unaffected. The same rows give NaN z-loss, entropy and
 *    load-balancing loss.
 *  - sigmoid(NaN) = NaN, sigmoid(+-inf) = 1 / 0.
 *  - for selection NaN ranks below every number, -inf included.
 *
 * Stage functions that need scratch (route, stats) return
 * MOEVK_ERROR_OUT_OF_HOST_MEMORY when malloc fails, MOEVK_SUCCESS otherwise.
 */
#include "ref.h"

#include <math.h>
#include <stdlib.h>

#define NO_INDEX UINT32_MAX

static double sigmoid(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

/* sigmoid_grouped's score of a routing logit: sigmoid, or sqrt(softplus)
 * with softplus(x) = max(x, 0) + log1p(e^-|x|) (torch's threshold-20
 * shortcut, x itself above 20, differs from it by under 1e-9 relative). */
double moevk_ref_score_fn(const moevk_layer_desc *desc, double x)
{
    if (desc->score_fn == MOEVK_SCORE_SQRTSOFTPLUS)
        return sqrt((x > 0.0 ? x : 0.0) + log1p(exp(-fabs(x))));
    return sigmoid(x);
}

/* The routing logit of a router logit x: with router_softcap c > 0 the
 * soft-capped c tanh(x / c), stored as a float as the logits are (+-inf
 * become +-c, NaN stays); x itself otherwise. */
static double logit_of(double cap, float x)
{
    return cap > 0.0 ? (double)(float)(cap * tanh((double)x / cap)) : (double)x;
}

/* Max and sum of exp(l - max) of a row of routing logits (logit_of with
 * cap), for a max-subtracted softmax: p[i] = exp(l[i] - *max) / *sum. NaN
 * logits are skipped by the max but poison the sum, so a row with a NaN
 * gives NaN everywhere. */
static void softmax_row(const float *l, uint32_t n, double cap, double *max, double *sum)
{
    double m = -INFINITY;
    for (uint32_t i = 0; i < n; i++)
        if (logit_of(cap, l[i]) > m)
            m = logit_of(cap, l[i]);
    double s = 0.0;
    for (uint32_t i = 0; i < n; i++)
        s += exp(logit_of(cap, l[i]) - m);
    *max = m;
    *sum = s;
}

/* The ranking of every selection in the reference: whether score a of index
 * ia ranks ahead of score b of index ib. Larger wins, equal -> lower index;
 * NaN ranks below every number, NaNs among themselves by index. This is a
 * strict total order on (score, index) pairs with distinct indices. */
static int ranks_before(double a, uint32_t ia, double b, uint32_t ib)
{
    int na = isnan(a), nb = isnan(b);
    if (na || nb) {
        if (na && nb)
            return ia < ib;
        return nb; /* the number beats the NaN */
    }
    if (a != b)
        return a > b;
    return ia < ib;
}

/* The best index i < n with eligible[i] (all, if eligible is NULL) that
 * ranks strictly after `prev` (any, if prev is NO_INDEX), or NO_INDEX if
 * none. Calling it with the previous answer walks the ranking in order. */
static uint32_t next_best(const double *score, const uint8_t *eligible, uint32_t n,
                          uint32_t prev)
{
    uint32_t best = NO_INDEX;
    for (uint32_t i = 0; i < n; i++) {
        if (eligible && !eligible[i])
            continue;
        if (prev != NO_INDEX && !ranks_before(score[prev], prev, score[i], i))
            continue;
        if (best == NO_INDEX || ranks_before(score[i], i, score[best], best))
            best = i;
    }
    return best;
}

/* 1 when a and b are both finite, differ, and their gap is at most
 * MOEVK_REF_NEAR_TIE relative to the larger magnitude. */
static int near_tie_pair(double a, double b)
{
    if (!isfinite(a) || !isfinite(b) || a == b)
        return 0;
    return fabs(a - b) <= MOEVK_REF_NEAR_TIE * fmax(fabs(a), fabs(b));
}

void moevk_ref_router_logits(const float *x, uint32_t T, uint32_t H, const void *w,
                             moevk_dtype w_dtype, uint32_t E, const float *bias,
                             float *logits)
{
    for (uint32_t t = 0; t < T; t++) {
        for (uint32_t e = 0; e < E; e++) {
            double acc = 0.0;
            for (uint32_t h = 0; h < H; h++)
                acc += (double)x[(size_t)t * H + h] *
                       moevk_ref_load(w, w_dtype, (size_t)e * H + h);
            if (bias)
                acc += (double)bias[e];
            logits[(size_t)t * E + e] = (float)acc;
        }
    }
}

void moevk_ref_scores(const float *logits, uint32_t T, uint32_t E, moevk_scoring scoring,
                      float *scores)
{
    for (uint32_t t = 0; t < T; t++) {
        const float *l = logits + (size_t)t * E;
        float *s = scores + (size_t)t * E;
        if (scoring == MOEVK_SCORING_SIGMOID) {
            for (uint32_t e = 0; e < E; e++)
                s[e] = (float)sigmoid((double)l[e]);
        } else {
            double max, sum;
            softmax_row(l, E, 0.0, &max, &sum);
            for (uint32_t e = 0; e < E; e++)
                s[e] = (float)(exp((double)l[e] - max) / sum);
        }
    }
}

/* ---- routing ------------------------------------------------------------- */

int moevk_ref_grouped(const moevk_layer_desc *desc)
{
    uint32_t n_group = desc->n_group ? desc->n_group : 1;
    uint32_t topk_group = desc->topk_group ? desc->topk_group : n_group;
    return desc->routing != MOEVK_ROUTING_TOPK_SOFTMAX &&
           desc->routing != MOEVK_ROUTING_SPARSEMIXER && n_group > 1 && topk_group < n_group;
}

int moevk_ref_selects_on_probs(const moevk_layer_desc *desc)
{
    if (desc->routing == MOEVK_ROUTING_EXPERT_CHOICE)
        return 1;
    return desc->routing == MOEVK_ROUTING_SOFTMAX_TOPK && !desc->select_on_logits &&
           (desc->correction_bias || moevk_ref_grouped(desc));
}

void moevk_ref_selection_scores(const moevk_layer_desc *desc, const float *l, double *c)
{
    uint32_t E = desc->num_experts;
    const float *cb = desc->correction_bias;
    double cap = desc->router_softcap;
    if (desc->select_on_logits && desc->routing != MOEVK_ROUTING_TOPK_SOFTMAX &&
        desc->routing != MOEVK_ROUTING_SPARSEMIXER) {
        for (uint32_t e = 0; e < E; e++)
            c[e] = logit_of(cap, l[e]) + (cb ? (double)cb[e] : 0.0);
    } else if (desc->routing == MOEVK_ROUTING_SIGMOID_GROUPED) {
        for (uint32_t e = 0; e < E; e++)
            c[e] = moevk_ref_score_fn(desc, logit_of(cap, l[e])) + (cb ? (double)cb[e] : 0.0);
    } else if (moevk_ref_selects_on_probs(desc)) {
        double max, sum;
        softmax_row(l, E, cap, &max, &sum);
        for (uint32_t e = 0; e < E; e++)
            c[e] = exp(logit_of(cap, l[e]) - max) / sum + (cb ? (double)cb[e] : 0.0);
    } else {
        for (uint32_t e = 0; e < E; e++)
            c[e] = logit_of(cap, l[e]);
    }
}

double moevk_ref_group_score(const moevk_layer_desc *desc, const double *cg, uint32_t size)
{
    uint32_t first = next_best(cg, NULL, size, NO_INDEX);
    if (first == NO_INDEX)
        return NAN; /* empty group (invalid desc): never kept first */
    uint32_t second = desc->group_score == MOEVK_GROUP_MAX ? NO_INDEX
                                                           : next_best(cg, NULL, size, first);
    return second == NO_INDEX ? cg[first] : cg[first] + cg[second];
}

/* Group selection for one token: marks eligible[e] = 1 for the experts of
 * the kept groups, 0 for the others. Returns 1 when the last kept group
 * and the best dropped one are a near-tie. */
static int keep_groups(const moevk_layer_desc *desc, const double *c, double *gscore,
                       uint8_t *eligible)
{
    uint32_t E = desc->num_experts;
    uint32_t n_group = desc->n_group ? desc->n_group : 1;
    uint32_t topk_group = desc->topk_group ? desc->topk_group : n_group;
    if (topk_group > n_group)
        topk_group = n_group;
    uint32_t size = E / n_group; /* contiguous groups of `size` experts */

    for (uint32_t g = 0; g < n_group; g++)
        gscore[g] = moevk_ref_group_score(desc, c + (size_t)g * size, size);

    for (uint32_t e = 0; e < E; e++)
        eligible[e] = 0;
    uint32_t g = NO_INDEX;
    for (uint32_t i = 0; i < topk_group; i++) {
        g = next_best(gscore, NULL, n_group, g);
        for (uint32_t e = g * size; e < (g + 1) * size; e++)
            eligible[e] = 1;
    }
    uint32_t next = g == NO_INDEX ? NO_INDEX : next_best(gscore, NULL, n_group, g);
    return next != NO_INDEX && near_tie_pair(gscore[g], gscore[next]);
}

/* sparsemixer's weights (docs/semantics.md) for one token's slots ids[0..k-1]
 * (the k best logits in ranking order): slot j's top logit m = l[ids[j]],
 * and a softmax over the experts not chosen by slots 0..j-1 whose gap
 * (m - l_e) / max(|l_e|, m) is not above 2 jitter_eps (a NaN gap keeps the
 * expert), taken at ids[j]. Returns 1 when some gap is a near-tie with the
 * threshold (rounding may move that expert in or out of the set). */
static int sparsemixer_weights(const moevk_layer_desc *desc, const float *l, const uint32_t *ids,
                               double *w)
{
    const uint32_t E = desc->num_experts, k = desc->top_k;
    const double cap = desc->router_softcap, thr = 2.0 * (double)desc->jitter_eps;
    int tie = 0;
    for (uint32_t j = 0; j < k; j++) {
        const double m = logit_of(cap, l[ids[j]]);
        double sum = 0.0;
        for (uint32_t e = 0; e < E; e++) {
            int earlier = 0;
            for (uint32_t i = 0; i < j; i++)
                earlier |= ids[i] == e;
            if (earlier)
                continue;
            const double le = logit_of(cap, l[e]);
            const double f = fabs(le) > m ? fabs(le) : m; /* max(|l_e|, m) */
            const double gap = (m - le) / f;
            tie |= near_tie_pair(gap, thr);
            if (gap > thr) /* false for a NaN gap: kept */
                continue;
            sum += exp(le - m);
        }
        w[j] = exp(m - m) / sum; /* NaN when m is infinite, as in torch */
    }
    return tie;
}

/* The denominator of norm_topk_prob for the k weights w (docs/semantics.md):
 * their sum or p-norm, then max(., norm_min) when norm_min > 0, else
 * + norm_eps when norm_eps > 0, else + 1e-20 for sigmoid_grouped. A NaN
 * stays NaN. */
static double norm_denominator(const moevk_layer_desc *desc, const double *w, uint32_t k)
{
    double p = desc->norm_p, den = 0.0;
    if (p == 0.0 || p == 1.0) {
        for (uint32_t j = 0; j < k; j++)
            den += w[j];
    } else {
        for (uint32_t j = 0; j < k; j++)
            den += pow(fabs(w[j]), p);
        den = pow(den, 1.0 / p);
    }
    if (desc->norm_min > 0.0f)
        return den < (double)desc->norm_min ? (double)desc->norm_min : den;
    if (desc->norm_eps > 0.0f)
        return den + (double)desc->norm_eps;
    return desc->routing == MOEVK_ROUTING_SIGMOID_GROUPED ? den + 1e-20 : den;
}

/* Expert choice (docs/semantics.md): p = softmax(l) per token; expert e
 * takes the C tokens that rank first on p[., e] (ranks_before over token
 * indices); slot e of token t holds e and p[t, e] * scale when e took t,
 * else NO_INDEX and 0. A near-tie between an expert's last taken token and
 * its best untaken one marks both. */
static moevk_status route_expert_choice(const moevk_layer_desc *desc, uint32_t T,
                                        const float *logits, uint32_t *ids, float *weights,
                                        uint8_t *near_tie)
{
    const uint32_t E = desc->num_experts;
    const uint32_t C = moevk_ref_expert_choice_capacity(desc, T);
    const double scale = desc->routed_scaling_factor ? (double)desc->routed_scaling_factor : 1.0;
    const size_t TE = (size_t)T * E;
    double *p = malloc((TE + 1) * sizeof *p);     /* [T, E] */
    double *col = malloc(((size_t)T + 1) * sizeof *col); /* one expert's column */
    if (!p || !col) {
        free(p);
        free(col);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (uint32_t t = 0; t < T; t++) {
        /* the selection scores: the probabilities (no correction bias) */
        moevk_ref_selection_scores(desc, logits + (size_t)t * E, p + (size_t)t * E);
        for (uint32_t e = 0; e < E; e++) {
            ids[(size_t)t * E + e] = NO_INDEX;
            weights[(size_t)t * E + e] = 0.0f;
        }
        if (near_tie)
            near_tie[t] = 0;
    }
    for (uint32_t e = 0; e < E; e++) {
        for (uint32_t t = 0; t < T; t++)
            col[t] = p[(size_t)t * E + e];
        /* the C best tokens in ranking order (a selection sort: the
         * reference is plain, not fast) */
        uint32_t prev = NO_INDEX;
        for (uint32_t i = 0; i < C; i++) {
            uint32_t t = next_best(col, NULL, T, prev);
            if (t == NO_INDEX)
                break;
            ids[(size_t)t * E + e] = e;
            weights[(size_t)t * E + e] = (float)(col[t] * scale);
            prev = t;
        }
        if (near_tie && prev != NO_INDEX) {
            uint32_t next = next_best(col, NULL, T, prev);
            if (next != NO_INDEX && near_tie_pair(col[prev], col[next]))
                near_tie[prev] = near_tie[next] = 1;
        }
    }
    free(p);
    free(col);
    return MOEVK_SUCCESS;
}

/* shared_sink's denominator for one token: the k scores of its chosen
 * experts (w, in slot order) plus the n shared gates sigmoid(gl[i]), in
 * order (no 1e-20). */
static double sink_denominator(const double *w, uint32_t k, const float *gl, uint32_t n)
{
    double den = 0.0;
    for (uint32_t j = 0; j < k; j++)
        den += w[j];
    for (uint32_t i = 0; i < n; i++)
        den += sigmoid((double)gl[i]);
    return den;
}

moevk_status moevk_ref_route(const moevk_layer_desc *desc, uint32_t T, const float *logits,
                             uint32_t *ids, float *weights, uint8_t *near_tie)
{
    return moevk_ref_route_sink(desc, T, logits, NULL, ids, weights, NULL, near_tie);
}

moevk_status moevk_ref_shared_gammas(const moevk_layer_desc *desc, const float *xr,
                                     const uint32_t *ids, float *gammas)
{
    const uint32_t E = desc->num_experts, k = desc->top_k, S = desc->num_shared, H = desc->hidden;
    float *l = malloc(((size_t)E + S + 1) * sizeof *l);
    double *w = malloc(((size_t)k + 1) * sizeof *w);
    if (!l || !w) {
        free(l);
        free(w);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    float *gl = l + E;
    moevk_ref_router_logits(xr, 1, H, desc->router_weight, desc->router_dtype, E,
                            desc->router_bias, l);
    moevk_ref_router_logits(xr, 1, H, desc->shared_gate, desc->router_dtype, S, NULL, gl);
    const double cap = desc->router_softcap;
    const double scale = desc->routed_scaling_factor ? (double)desc->routed_scaling_factor : 1.0;
    for (uint32_t j = 0; j < k; j++)
        w[j] = ids[j] < E ? moevk_ref_score_fn(desc, logit_of(cap, l[ids[j]])) : NAN;
    const double den = sink_denominator(w, k, gl, S);
    for (uint32_t i = 0; i < S; i++)
        gammas[i] = (float)(sigmoid((double)gl[i]) / den * scale);
    free(l);
    free(w);
    return MOEVK_SUCCESS;
}

moevk_status moevk_ref_route_sink(const moevk_layer_desc *desc, uint32_t T, const float *logits,
                                  const float *gate_logits, uint32_t *ids, float *weights,
                                  float *gammas, uint8_t *near_tie)
{
    if (desc->routing == MOEVK_ROUTING_EXPERT_CHOICE)
        return route_expert_choice(desc, T, logits, ids, weights, near_tie);
    uint32_t E = desc->num_experts, k = desc->top_k;
    uint32_t n_group = desc->n_group ? desc->n_group : 1;
    int grouped = moevk_ref_grouped(desc);
    double scale = desc->routed_scaling_factor ? (double)desc->routed_scaling_factor : 1.0;
    double cap = desc->router_softcap; /* the logits below are logit_of(cap, .) */

    /* score: the selection score of each expert; gscore: group scores;
     * eligible: experts of the kept groups (grouped routing only) */
    double *score = malloc((E ? E : 1) * sizeof *score);
    double *gscore = malloc(n_group * sizeof *gscore);
    uint8_t *eligible = malloc(E ? E : 1);
    double *wk = malloc((k ? k : 1) * sizeof *wk); /* the k weights */
    if (!score || !gscore || !eligible || !wk) {
        free(score);
        free(gscore);
        free(eligible);
        free(wk);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }

    for (uint32_t t = 0; t < T; t++) {
        const float *l = logits + (size_t)t * E;
        uint32_t *tid = ids + (size_t)t * k;
        float *tw = weights + (size_t)t * k;
        int tie = 0;

        moevk_ref_selection_scores(desc, l, score);
        if (grouped)
            tie |= keep_groups(desc, score, gscore, eligible);

        /* top-k in ranking order; a slot with no candidate left (only for
         * an invalid desc) gets NO_INDEX */
        uint32_t prev = NO_INDEX;
        int complete = 1;
        for (uint32_t j = 0; j < k; j++) {
            uint32_t id = complete ? next_best(score, grouped ? eligible : NULL, E, prev)
                                   : NO_INDEX;
            if (id == NO_INDEX)
                complete = 0;
            tid[j] = id;
            prev = id;
        }
        if (complete && k > 0) {
            uint32_t next = next_best(score, grouped ? eligible : NULL, E, prev);
            if (next != NO_INDEX)
                tie |= near_tie_pair(score[prev], score[next]);
        }
        if (near_tie)
            near_tie[t] = (uint8_t)tie;

        if (!complete) {
            for (uint32_t j = 0; j < k; j++)
                tw[j] = NAN;
            continue;
        }

        /* weights */
        if (desc->routing == MOEVK_ROUTING_SPARSEMIXER) {
            if (sparsemixer_weights(desc, l, tid, wk) && near_tie)
                near_tie[t] = 1;
        } else if (desc->routing == MOEVK_ROUTING_TOPK_SOFTMAX) {
            /* softmax over the k selected logits */
            double max = -INFINITY, sum = 0.0;
            for (uint32_t j = 0; j < k; j++)
                if (logit_of(cap, l[tid[j]]) > max)
                    max = logit_of(cap, l[tid[j]]);
            for (uint32_t j = 0; j < k; j++)
                sum += exp(logit_of(cap, l[tid[j]]) - max);
            for (uint32_t j = 0; j < k; j++)
                wk[j] = exp(logit_of(cap, l[tid[j]]) - max) / sum;
        } else if (desc->routing == MOEVK_ROUTING_SIGMOID_GROUPED) {
            /* w = s (without the correction bias) */
            for (uint32_t j = 0; j < k; j++)
                wk[j] = moevk_ref_score_fn(desc, logit_of(cap, l[tid[j]]));
        } else {
            /* softmax_topk: the probability over all E */
            double max, sum;
            softmax_row(l, E, cap, &max, &sum);
            for (uint32_t j = 0; j < k; j++)
                wk[j] = exp(logit_of(cap, l[tid[j]]) - max) / sum;
        }
        if (desc->shared_sink) {
            /* the shared gates join the sum; without their logits the
             * weights are not known (NaN) */
            const uint32_t S = desc->num_shared;
            const float *gl = gate_logits ? gate_logits + (size_t)t * S : NULL;
            const double den = gl ? sink_denominator(wk, k, gl, S) : NAN;
            for (uint32_t j = 0; j < k; j++)
                wk[j] /= den;
            for (uint32_t i = 0; gammas && i < S; i++)
                gammas[(size_t)t * S + i] =
                    (float)(gl ? sigmoid((double)gl[i]) / den * scale : NAN);
        } else if (desc->norm_topk_prob && desc->routing != MOEVK_ROUTING_TOPK_SOFTMAX &&
                   desc->routing != MOEVK_ROUTING_SPARSEMIXER) {
            double den = norm_denominator(desc, wk, k);
            for (uint32_t j = 0; j < k; j++)
                wk[j] /= den;
        }
        /* Gemma 4's per_expert_scale, after the normalisation */
        if (desc->expert_weight_scale)
            for (uint32_t j = 0; j < k; j++)
                wk[j] *= (double)desc->expert_weight_scale[tid[j]];
        for (uint32_t j = 0; j < k; j++)
            tw[j] = (float)(wk[j] * scale);
    }
    free(score);
    free(gscore);
    free(eligible);
    free(wk);
    return MOEVK_SUCCESS;
}

/* ---- capacity and permutation ------------------------------------------- */

uint64_t moevk_ref_assignments(const moevk_layer_desc *desc, uint32_t T)
{
    if (desc->routing == MOEVK_ROUTING_EXPERT_CHOICE)
        return (uint64_t)moevk_ref_expert_choice_capacity(desc, T) * desc->num_experts;
    return (uint64_t)T * desc->top_k;
}

uint32_t moevk_ref_expert_choice_capacity(const moevk_layer_desc *desc, uint32_t T)
{
    const double cf = desc->capacity_factor > 0.0f ? (double)desc->capacity_factor : 1.0;
    const double c = ceil(cf * T * desc->top_k / desc->num_experts);
    return !(c < (double)T) ? T : c < 0.0 ? 0 : (uint32_t)c; /* NaN: T */
}

uint32_t moevk_ref_capacity(const moevk_layer_desc *desc, uint32_t T)
{
    /* expert choice admits what the experts chose (their capacity is in
     * the choice) */
    if (desc->routing == MOEVK_ROUTING_EXPERT_CHOICE)
        return UINT32_MAX;
    double c;
    if (desc->capacity_fraction > 0.0) /* NLLB-MoE: a fraction of the tokens */
        c = ceil(desc->capacity_fraction * T);
    else if (desc->capacity_factor == 0.0f)
        return UINT32_MAX;
    else
        c = ceil((double)desc->capacity_factor * T * desc->top_k / desc->num_experts);
    if (!(c < (double)UINT32_MAX)) /* huge, or NaN from an invalid factor */
        return UINT32_MAX;
    if (c < 0.0)
        return 0;
    return (uint32_t)c;
}

uint64_t moevk_ref_permute(const moevk_layer_desc *desc, uint32_t T, const uint32_t *ids,
                           uint32_t *counts, uint32_t *offsets, int32_t *row)
{
    uint32_t E = desc->num_experts, k = moevk_routing_slots(desc);
    uint32_t capacity = moevk_ref_capacity(desc, T);
    uint64_t dropped = 0;

    /* Admission in priority order: slot 0 of every token, then slot 1, ...
     * row[] temporarily holds 0 for admitted, -1 for dropped. An empty
     * slot (id UINT32_MAX: an expert that did not choose the token) is no
     * assignment; another id out of range (only from a broken stage under
     * test) counts as dropped. */
    for (uint32_t e = 0; e < E; e++)
        counts[e] = 0;
    for (uint32_t j = 0; j < k; j++) {
        for (uint32_t t = 0; t < T; t++) {
            size_t a = (size_t)t * k + j;
            uint32_t e = ids[a];
            if (e == NO_INDEX) {
                row[a] = -1;
            } else if (e < E && counts[e] < capacity) {
                counts[e]++;
                row[a] = 0;
            } else {
                row[a] = -1;
                dropped++;
            }
        }
    }

    offsets[0] = 0;
    for (uint32_t e = 0; e < E; e++)
        offsets[e + 1] = offsets[e] + counts[e];

    /* Rows within an expert's segment follow the admission order again:
     * slot 0 by token, then slot 1 by token, ... counts[] is the fill
     * cursor and ends where it began. */
    for (uint32_t e = 0; e < E; e++)
        counts[e] = 0;
    for (uint32_t j = 0; j < k; j++) {
        for (uint32_t t = 0; t < T; t++) {
            size_t a = (size_t)t * k + j;
            if (row[a] < 0)
                continue;
            uint32_t e = ids[a];
            row[a] = (int32_t)(offsets[e] + counts[e]);
            counts[e]++;
        }
    }
    return dropped;
}

/* ---- statistics ---------------------------------------------------------- */

moevk_status moevk_ref_stats(const moevk_layer_desc *desc, uint32_t T, const float *logits,
                             const uint32_t *ids, const uint32_t *counts, uint64_t dropped,
                             moevk_routing_stats *stats)
{
    uint32_t E = desc->num_experts, k = moevk_routing_slots(desc);

    if (stats->tokens_per_expert)
        for (uint32_t e = 0; e < E; e++)
            stats->tokens_per_expert[e] = counts[e];
    stats->dropped = dropped;
    stats->load_balancing_loss = 0.0;
    stats->router_z_loss = 0.0;
    stats->routing_entropy = 0.0;
    if (T == 0 || E == 0)
        return MOEVK_SUCCESS;

    /* chosen[e]: assignments (before dropping) that chose e;
     * prob[e]: sum over tokens of the full softmax probability of e */
    double *chosen = calloc(E, sizeof *chosen);
    double *prob = calloc(E, sizeof *prob);
    if (!chosen || !prob) {
        free(chosen);
        free(prob);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }

    for (size_t a = 0; a < (size_t)T * k; a++)
        if (ids[a] < E)
            chosen[ids[a]] += 1.0;

    /* on the routing logits: soft-capped with router_softcap */
    double cap = desc->router_softcap, z = 0.0, entropy = 0.0;
    for (uint32_t t = 0; t < T; t++) {
        const float *l = logits + (size_t)t * E;
        double max, sum, h = 0.0;
        softmax_row(l, E, cap, &max, &sum);
        for (uint32_t e = 0; e < E; e++) {
            double p = exp(logit_of(cap, l[e]) - max) / sum;
            prob[e] += p;
            if (p != 0.0) /* 0 log 0 = 0; NaN stays */
                h -= p * log(p);
        }
        double lse = max + log(sum);
        z += lse * lse;
        entropy += h;
    }

    /* f_e's denominator: the assignments, T k (C E for expert choice) */
    const double assignments = moevk_ref_assignments(desc, T);
    double lb = 0.0;
    for (uint32_t e = 0; e < E; e++) {
        double f = chosen[e] / assignments;
        double P = prob[e] / T;
        lb += f * P;
    }
    stats->load_balancing_loss = E * lb;
    stats->router_z_loss = z / T;
    stats->routing_entropy = entropy / T;
    free(chosen);
    free(prob);
    return MOEVK_SUCCESS;
}
