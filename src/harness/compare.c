/*
 * The harness's comparison policy (harness.h): a backend's result against
 * the CPU reference, and two backends against each other.
 */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/harness.h"
#include "quantize.h"
#include "ref/ref.h"

/* The formats of d's expert matrices on the device: gate/up and down of
 * the routed experts, then of the shared ones (when there are any);
 * quantising at create gives quantize_dtype or its fallback per kind of
 * row. Returns how many were written (2 or 4). */
static int device_formats(const moevk_layer_desc *d, moevk_dtype out[4])
{
    const bool per = (d->flags & MOEVK_LAYER_MATRIX_DTYPES) != 0;
    const uint32_t fs = d->shared_ffn ? d->shared_ffn : d->ffn;
    const int n = d->num_shared ? 4 : 2;
    for (int i = 0; i < n; i++) {
        const moevk_expert_weights *w = i < 2 ? &d->experts : &d->shared;
        out[i] = !per ? d->weight_dtype : i % 2 ? w->down_dtype : w->gate_up_dtype;
        if (d->flags & MOEVK_LAYER_QUANTIZE)
            out[i] = mvk_quantize_fallback(d->quantize_dtype,
                                           i % 2 ? (i < 2 ? d->ffn : fs) : d->hidden);
    }
    return n;
}

double mvkc_y_tolerance(const moevk_layer_desc *d, uint32_t flags)
{
    /* f32 and block formats: the reference runs on the same values (block
     * formats dequantised by the same decoders), so only fp32 against
     * double accumulation remains. f16/bf16: room for paths that round
     * activations to 16 bits. A backend that rounds activations to its
     * GEMM dtype (bf16, or f16, which it uses for f16 and block formats):
     * 4 units of the coarsest such rounding. */
    moevk_dtype f[4];
    bool bf16 = false, f16 = false, blocks = false;
    for (int i = 0, n = device_formats(d, f); i < n; i++) {
        bf16 |= f[i] == MOEVK_DTYPE_BF16;
        f16 |= f[i] == MOEVK_DTYPE_F16;
        blocks |= moevk_dtype_block_elems(f[i]) > 1;
    }
    if (!bf16 && !f16 && (!blocks || !(flags & MVK_BACKEND_ROUNDS_ACTIVATIONS)))
        return 1e-5;
    if (!(flags & MVK_BACKEND_ROUNDS_ACTIVATIONS))
        return 1e-4;
    return bf16 ? 4.0 / 256.0 : 4.0 / 2048.0;
}

/* exact reference ranking: larger first, equal -> lower index, NaN below
 * every number */
static int ranks_before(double a, uint32_t ia, double b, uint32_t ib)
{
    int na = isnan(a), nb = isnan(b);
    if (na || nb)
        return na && nb ? ia < ib : nb;
    if (a != b)
        return a > b;
    return ia < ib;
}

/* Whether score a (index ia) may rank before score b (index ib) when both
 * are known only to within tol. Non-finite scores carry no rounding error
 * (they are exact on both sides), so they follow the exact rule. */
static int may_precede(double a, uint32_t ia, double b, uint32_t ib, double tol)
{
    if (isfinite(a) && isfinite(b))
        return a >= b - tol;
    return ranks_before(a, ia, b, ib);
}

/* The reference's selection scores s [E] of token t (scratch: lf [E]
 * floats) and the absolute error within which a backend's fp32 router
 * knows them. */
static double selection_tolerance(const mvkc_case *c, uint32_t t, float *lf, double *s)
{
    const moevk_layer_desc *d = &c->desc;
    uint32_t E = d->num_experts, H = d->hidden;
    int sig = d->routing == MOEVK_ROUTING_SIGMOID_GROUPED;
    int probs = moevk_ref_selects_on_probs(d);
    const float *xt = c->xr + (size_t)t * H; /* the router's rows */

    /* the reference's logits of this token, and the bound of the fp32
     * accumulation error: sum_h |x_h w_eh| + |b_e| (0 when x is not
     * finite: the logits are then exactly +-inf or NaN on both sides) */
    moevk_ref_router_logits(xt, 1, H, d->router_weight, d->router_dtype, E, d->router_bias, lf);
    int finite = 1;
    for (uint32_t h = 0; h < H; h++)
        finite &= isfinite(xt[h]) != 0;
    double bound = 0.0, maxabs = 0.0;
    moevk_ref_selection_scores(d, lf, s);
    for (uint32_t e = 0; e < E; e++) {
        if (finite) {
            double a = d->router_bias ? fabs((double)d->router_bias[e]) : 0.0;
            for (uint32_t h = 0; h < H; h++)
                a += fabs((double)xt[h] * moevk_ref_load(d->router_weight, d->router_dtype,
                                                         (size_t)e * H + h));
            if (a > bound)
                bound = a;
        }
        if (isfinite(s[e]) && fabs(s[e]) > maxabs)
            maxabs = fabs(s[e]);
    }
    /* sigmoid' <= 1/4, sqrt(softplus)' < 0.33; a softmax probability moves
     * by at most 2 p <= 2 times the largest logit error */
    double slope = d->score_fn == MOEVK_SCORE_SQRTSOFTPLUS ? 0.33 : 0.25;
    return (sig && !d->select_on_logits ? slope : probs ? 2.0 : 1.0) * 4e-6 * bound +
           2e-6 * maxabs;
}

/* Whether the backend's ids g[0..k-1] of token t are a valid top-k of the
 * reference's selection scores within the router's fp32 error: distinct, in
 * range, in non-increasing order, nothing eligible left out that ranks
 * clearly above a chosen one, and (grouped routing) chosen groups that may
 * be among the topk_group best. Scratch: lf [E] floats, s [E] and gs
 * [n_group] doubles, mark [2 E + n_group] bytes. */
static int tolerated(const mvkc_case *c, uint32_t t, const uint32_t *g, float *lf, double *s,
                     double *gs, uint8_t *mark)
{
    const moevk_layer_desc *d = &c->desc;
    uint32_t E = d->num_experts, k = d->top_k;
    int grouped = moevk_ref_grouped(d);

    uint8_t *chosen = mark, *kept = mark + E;
    memset(chosen, 0, E);
    for (uint32_t j = 0; j < k; j++) {
        if (g[j] >= E || chosen[g[j]])
            return 0;
        chosen[g[j]] = 1;
    }
    const double tol = selection_tolerance(c, t, lf, s);

    memset(kept, 1, E); /* eligible experts (reused below) */
    if (grouped) {
        uint32_t n_group = d->n_group ? d->n_group : 1;
        uint32_t tkg = d->topk_group ? d->topk_group : n_group;
        if (tkg > n_group)
            tkg = n_group;
        uint32_t size = E / n_group;
        for (uint32_t q = 0; q < n_group; q++)
            gs[q] = moevk_ref_group_score(d, s + (size_t)q * size, size);
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

/* sparsemixer: whether rounding may move an expert into or out of one of
 * token t's thresholded softmax sets, for the slots ids[0..k-1] (the
 * reference's): an expert's gap r = (m - l) / max(|l|, m) to a slot's top
 * logit m within what the router's fp32 error (as in tolerated) can move
 * it from the threshold 2 jitter_eps. The backend's weight of such a slot
 * may then differ from the reference's by far more than rounding: a token
 * whose weights differ so is left out of the comparison, as a near-tie.
 * Scratch: lf [E]. */
static int sparsemixer_unsure(const mvkc_case *c, uint32_t t, const uint32_t *ids, float *lf)
{
    const moevk_layer_desc *d = &c->desc;
    const uint32_t E = d->num_experts, k = d->top_k, H = d->hidden;
    if (d->routing != MOEVK_ROUTING_SPARSEMIXER)
        return 0;
    const float *xt = c->x + (size_t)t * H;
    moevk_ref_router_logits(xt, 1, H, d->router_weight, d->router_dtype, E, d->router_bias, lf);
    double bound = 0.0, maxabs = 0.0, cap = d->router_softcap;
    for (uint32_t h = 0; h < H; h++)
        if (!isfinite(xt[h]))
            return 0; /* the logits are exactly +-inf or NaN on both sides */
    for (uint32_t e = 0; e < E; e++) {
        double a = d->router_bias ? fabs((double)d->router_bias[e]) : 0.0;
        for (uint32_t h = 0; h < H; h++)
            a += fabs((double)xt[h] *
                      moevk_ref_load(d->router_weight, d->router_dtype, (size_t)e * H + h));
        bound = fmax(bound, a);
        if (cap > 0.0) /* the cap's slope is at most 1: the same error bound */
            lf[e] = (float)(cap * tanh((double)lf[e] / cap));
        maxabs = fmax(maxabs, fabs((double)lf[e]));
    }
    const double tol = 4e-6 * bound + 2e-6 * maxabs, thr = 2.0 * (double)d->jitter_eps;
    for (uint32_t j = 0; j < k; j++) {
        const double m = lf[ids[j]];
        for (uint32_t e = 0; e < E; e++) {
            int earlier = 0;
            for (uint32_t i = 0; i < j; i++)
                earlier |= ids[i] == e;
            const double l = lf[e];
            /* the slot's own expert has the gap 0 exactly on both sides */
            if (earlier || e == ids[j] || !isfinite(l) || !isfinite(m))
                continue;
            const double f = fmax(fabs(l), m);
            if (f <= 2.0 * tol)
                return 1; /* the gap of two near-zero logits: anything */
            const double r = (m - l) / f;
            const double dr = (2.0 * tol + fabs(r) * tol) / (f - tol) + 1e-6 * fabs(r) + 1e-7;
            if (fabs(r - thr) <= dr)
                return 1;
        }
    }
    return 0;
}

/* Whether one token's k weights g differ from r beyond the comparison's
 * tolerance (or in being finite, or NaN). */
static int weights_differ(const float *g, const float *r, uint32_t k, double scale)
{
    for (uint32_t j = 0; j < k; j++) {
        const double a = g[j], b = r[j];
        if (!isfinite(a) || !isfinite(b)) {
            if (isfinite(a) != isfinite(b) || isnan(a) != isnan(b))
                return 1;
        } else if (fabs(a - b) > 1e-4 * fabs(b) + 1e-7 * scale) {
            return 1;
        }
    }
    return 0;
}

static int fail(mvkc_report *rep, const char *fmt, ...);

/* Expert choice: the backend's ids g [T, E] against the reference's r.
 * Where an expert's set of tokens differs, the backend's set is tolerated
 * when every entry is e or empty, it holds C tokens, and each token in it
 * may rank before each token outside it within the two tokens' router
 * error (selection_tolerance). The tokens of a tolerated difference are
 * marked in `excluded` and counted in *swapped; returns 0 (and a reason
 * in rep) at the first difference that is not tolerated. */
static int expert_choice_ids(const mvkc_case *c, const uint32_t *g, const uint32_t *r,
                             uint8_t *excluded, uint32_t *swapped, mvkc_report *rep)
{
    const moevk_layer_desc *d = &c->desc;
    const uint32_t T = c->T, E = d->num_experts;
    const uint32_t C = moevk_ref_expert_choice_capacity(d, T);
    const size_t TE = (size_t)T * E;
    double *p = malloc(sizeof(double) * (TE + 1)), *tol = malloc(sizeof(double) * (T + 1));
    float *lf = malloc(sizeof(float) * (E + 1));
    uint8_t *in = malloc((size_t)T + 1);
    int ok = 1;
    if (!p || !tol || !lf || !in) {
        fail(rep, "out of host memory (comparison)");
        ok = 0;
        goto done;
    }
    for (uint32_t t = 0; t < T; t++)
        tol[t] = selection_tolerance(c, t, lf, p + (size_t)t * E);
    for (uint32_t e = 0; e < E && ok; e++) {
        uint32_t n = 0, differ = 0;
        for (uint32_t t = 0; t < T; t++) {
            const uint32_t gv = g[(size_t)t * E + e], rv = r[(size_t)t * E + e];
            if (gv != e && gv != UINT32_MAX) {
                fail(rep, "route: token %u slot %u holds expert %u (expert choice: slot e "
                           "holds e or nothing)", t, e, gv);
                ok = 0;
                break;
            }
            in[t] = gv == e;
            n += in[t];
            differ += gv != rv;
        }
        if (!ok || !differ)
            continue;
        if (n != C) {
            fail(rep, "route: expert %u took %u tokens, expected C = %u", e, n, C);
            ok = 0;
            break;
        }
        for (uint32_t t = 0; t < T && ok; t++) {
            if (!in[t])
                continue;
            for (uint32_t u = 0; u < T; u++) {
                if (in[u])
                    continue;
                const double pt = p[(size_t)t * E + e], pu = p[(size_t)u * E + e];
                if (!may_precede(pt, t, pu, u, tol[t] + tol[u])) {
                    fail(rep, "route: expert %u took token %u (p %.9g) over token %u (p %.9g), "
                               "not a near-tie", e, t, pt, u, pu);
                    ok = 0;
                    break;
                }
            }
        }
        for (uint32_t t = 0; t < T && ok; t++) {
            if (g[(size_t)t * E + e] != r[(size_t)t * E + e] && !excluded[t]) {
                excluded[t] = 1;
                (*swapped)++;
            }
        }
    }
done:
    free(p);
    free(tol);
    free(lf);
    free(in);
    return ok;
}

/* Squared L2 norms of one token's error g - r and of r. */
static void token_norms(const float *g, const float *r, uint32_t H, double *err2, double *ref2)
{
    double tn = 0, td = 0;
    for (uint32_t h = 0; h < H; h++) {
        double e = (double)g[h] - r[h];
        tn += e * e;
        td += (double)r[h] * r[h];
    }
    *err2 = tn;
    *ref2 = td;
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
 * backend's admissions (rows[a] < 0: dropped) and the reference's ids and
 * weights. */
static moevk_status conditional_y(const mvkc_case *c, const mvkc_ref *ref, const int32_t *rows,
                                  const uint8_t *excluded, float *y)
{
    const moevk_layer_desc *d = &c->desc;
    const uint32_t H = d->hidden, k = moevk_routing_slots(d);
    for (uint32_t t = 0; t < c->T; t++) {
        const size_t a = (size_t)t * k;
        if (excluded[t]) {
            for (uint32_t h = 0; h < H; h++)
                y[(size_t)t * H + h] = NAN;
            continue;
        }
        float gam[MOEVK_MAX_SHARED];
        moevk_status st = d->shared_sink ? moevk_ref_shared_gammas(d, c->xr + (size_t)t * H,
                                                                   ref->out.ids + a, gam)
                                         : MOEVK_SUCCESS;
        if (!st)
            st = moevk_ref_token_output(d, c->xe + (size_t)t * H, ref->out.ids + a,
                                        ref->out.weights + a, rows + a,
                                        d->shared_sink ? gam : NULL, y + (size_t)t * H);
        if (st)
            return st;
    }
    return MOEVK_SUCCESS;
}

int mvkc_compare(const mvkc_case *c, const mvkc_ref *ref, const mvkc_result *res, mvkc_report *rep)
{
    const moevk_layer_desc *d = &c->desc;
    uint32_t T = c->T, H = d->hidden, E = d->num_experts, k = moevk_routing_slots(d);
    size_t TK = (size_t)T * k;

    memset(rep, 0, sizeof *rep);
    rep->pass = 1;
    rep->y_tol = mvkc_y_tolerance(d, res->flags);
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
    const bool ec = d->routing == MOEVK_ROUTING_EXPERT_CHOICE;
    if (ec) {
        for (uint32_t t = 0; t < T; t++)
            excluded[t] = ref->near_tie[t];
        expert_choice_ids(c, res->ids, ref->out.ids, excluded, &rep->swapped, rep);
    }
    for (uint32_t t = 0; t < T && !ec; t++) {
        const uint32_t *g = res->ids + (size_t)t * k, *r = ref->out.ids + (size_t)t * k;
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
             bad, T, bad_t, bad_j, res->ids[(size_t)bad_t * k + bad_j],
             ref->out.ids[(size_t)bad_t * k + bad_j]);
    for (uint32_t t = 0; t < T; t++)
        rep->near_ties += excluded[t];

    /* 2. routing weights (sparsemixer: a token whose weights differ where
     * rounding may have moved a threshold is left out, as a near-tie) */
    double wnum = 0, wden = 0;
    const double wscale = d->routed_scaling_factor ? fabs((double)d->routed_scaling_factor) : 1.0;
    for (uint32_t t = 0; t < T; t++) {
        if (excluded[t])
            continue;
        if (weights_differ(res->weights + (size_t)t * k, ref->out.weights + (size_t)t * k, k,
                           wscale) &&
            sparsemixer_unsure(c, t, ref->out.ids + (size_t)t * k, lf)) {
            excluded[t] = 1;
            rep->near_ties++;
            continue;
        }
        for (uint32_t j = 0; j < k; j++) {
            size_t a = (size_t)t * k + j;
            double g = res->weights[a], r = ref->out.weights[a];
            if (!isfinite(r) || !isfinite(g)) {
                if (isfinite(r) != isfinite(g) || isnan(r) != isnan(g))
                    fail(rep, "route: weight of token %u slot %u: %g, reference %g", t, j, g, r);
                continue;
            }
            if (fabs(g - r) > 1e-4 * fabs(r) + 1e-7 * wscale)
                fail(rep, "route: weight of token %u slot %u (expert %u): %.9g, reference %.9g", t,
                     j, res->ids[a], g, r);
            wnum += (g - r) * (g - r);
            wden += r * r;
        }
    }
    rep->w_err = wden > 0 ? sqrt(wnum / wden) : sqrt(wnum);
    if (!(rep->w_err <= 1e-5))
        fail(rep, "route: weights rel. L2 error %.3g > 1e-5", rep->w_err);

    /* 3. rows, counts and drops: what admission gives for the backend's ids */
    uint64_t dropped = moevk_ref_permute(d, T, res->ids, counts, offsets, rows);
    for (size_t a = 0; a < TK; a++) {
        if (res->rows[a] != rows[a]) {
            fail(rep, "permute: row of token %u slot %u (expert %u): %d, expected %d%s",
                 (uint32_t)(a / k), (uint32_t)(a % k), res->ids[a], res->rows[a], rows[a],
                 rows[a] < 0 ? " (dropped)" : "");
            break;
        }
    }
    for (uint32_t e = 0; e < E; e++) {
        if (res->tpe[e] != counts[e]) {
            fail(rep, "stats: tokens_per_expert[%u] = %u, expected %u", e, res->tpe[e], counts[e]);
            break;
        }
    }
    if (res->stats.dropped != dropped)
        fail(rep, "stats: dropped = %llu, expected %llu", (unsigned long long)res->stats.dropped,
             (unsigned long long)dropped);
    rep->dropped = dropped;
    if (memcmp(res->tpe, res->tpe_read, sizeof(uint32_t) * E) ||
        res->stats.dropped != res->stats_read.dropped ||
        memcmp(&res->stats.load_balancing_loss, &res->stats_read.load_balancing_loss,
               sizeof(double)) ||
        memcmp(&res->stats.router_z_loss, &res->stats_read.router_z_loss, sizeof(double)) ||
        memcmp(&res->stats.routing_entropy, &res->stats_read.routing_entropy, sizeof(double)))
        fail(rep, "stats: moevk_layer_read_stats differs from moevk_layer_forward's stats");

    /* 4. y */
    const float *yref = ref->out.y;
    if ((d->capacity_factor > 0 || d->capacity_fraction > 0) && rep->swapped && !ec) {
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
        const float *g = res->y + (size_t)t * H, *r = yref + (size_t)t * H;
        int ng = any_nonfinite(g, H), nr = any_nonfinite(r, H);
        if (ng || nr) {
            if (ng != nr) {
                uint32_t h = 0;
                while (h < H && isfinite(g[h]) == isfinite(r[h]))
                    h++;
                if (h == H)
                    h = 0;
                fail(rep, "y: token %u is %s in the result only (y[%u] = %g, reference %g)", t,
                     ng ? "non-finite" : "finite", h, g[h], r[h]);
            } else {
                rep->nonfinite++;
            }
            continue;
        }
        double tn, td;
        token_norms(g, r, H, &tn, &td);
        num += tn;
        den += td;
        rep->compared++;
        double te = td > 0 ? sqrt(tn / td) : sqrt(tn);
        if (te > worst) {
            worst = te;
            worst_t = t;
        }
    }
    /* A backend that rounds activations to f16 flushes values below its
     * subnormal range (2^-24) to 0: outputs whose norm is below f16's
     * normal range (2^-14 per element) are compared absolutely, as if
     * they had that norm (the tiny-input scenario: x scaled by 1e-12). */
    if (res->flags & MVK_BACKEND_ROUNDS_ACTIVATIONS) {
        const double floor = (double)rep->compared * H * ldexp(1.0, -28);
        if (den < floor)
            den = floor;
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
        const float *g = res->y + (size_t)t * H, *r = yref + (size_t)t * H;
        if (any_nonfinite(g, H) || any_nonfinite(r, H))
            continue;
        double tn, td;
        token_norms(g, r, H, &tn, &td);
        if (sqrt(tn) > 100 * rep->y_tol * (sqrt(td) + avg))
            fail(rep, "y: token %u has error %.3g (norm %.3g, average token norm %.3g) "
                      "beyond 100x the tolerance",
                 t, sqrt(tn), sqrt(td), avg);
    }
    if (!(rep->y_err <= rep->y_tol)) {
        const float *g = res->y + (size_t)worst_t * H, *r = yref + (size_t)worst_t * H;
        uint32_t wh = 0;
        for (uint32_t h = 1; h < H; h++)
            if (fabs((double)g[h] - r[h]) > fabs((double)g[wh] - r[wh]))
                wh = h;
        fail(rep, "y: rel. L2 error %.3g > %.2g over %u tokens; worst token %u (%.3g): "
                  "y[%u] = %.7g, reference %.7g",
             rep->y_err, rep->y_tol, rep->compared, worst_t, worst, wh, g[wh], r[wh]);
    }

    /* 5. losses: the reference's, or with the backend's (near-tied) ids */
    moevk_routing_stats want = ref->out.stats;
    if (mismatched) {
        logits = malloc(sizeof(float) * ((size_t)T * E + 1));
        if (!logits) {
            fail(rep, "out of host memory (comparison)");
            goto done;
        }
        moevk_ref_router_logits(c->xr, T, H, d->router_weight, d->router_dtype, E, d->router_bias,
                                logits);
        want.tokens_per_expert = NULL;
        if (moevk_ref_stats(d, T, logits, res->ids, counts, dropped, &want)) {
            fail(rep, "out of host memory (comparison)");
            goto done;
        }
    }
    if (!loss_ok(res->stats.load_balancing_loss, want.load_balancing_loss))
        fail(rep, "stats: load_balancing_loss %.9g, reference %.9g",
             res->stats.load_balancing_loss, want.load_balancing_loss);
    if (!loss_ok(res->stats.router_z_loss, want.router_z_loss))
        fail(rep, "stats: router_z_loss %.9g, reference %.9g", res->stats.router_z_loss,
             want.router_z_loss);
    if (!loss_ok(res->stats.routing_entropy, want.routing_entropy))
        fail(rep, "stats: routing_entropy %.9g, reference %.9g", res->stats.routing_entropy,
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

/* Two values that each passed loss_ok against one reference value r agree
 * within this: |a - b| <= 2e-4 |r| + 2e-5, and |r| <= (max(|a|, |b|) +
 * 1e-5) / (1 - 1e-4). Equal infinities agree; NaN only with NaN. */
static int losses_agree(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b))
        return a == b;
    return fabs(a - b) <= 2.001e-4 * fmax(fabs(a), fabs(b)) + 2.001e-5;
}

int mvkc_agree(const mvkc_case *c, const mvkc_ref *ref, const mvkc_result *a,
               const mvkc_result *b, double *y_err, char *why, size_t n)
{
    const moevk_layer_desc *d = &c->desc;
    const uint32_t T = c->T, H = d->hidden, K = moevk_routing_slots(d);
    /* Admission (rows, counts, drops) and the load-balancing loss follow
     * from the ids alone; each backend's were checked against the
     * reference for its own ids. They must agree only when the ids do. */
    const bool same_ids = memcmp(a->ids, b->ids, sizeof(uint32_t) * T * K) == 0;
    float *lf = NULL;
    int ok = 0;
    if (d->routing == MOEVK_ROUTING_SPARSEMIXER &&
        !(lf = malloc(sizeof(float) * ((size_t)d->num_experts + 1)))) {
        snprintf(why, n, "out of host memory (comparison)");
        return 0;
    }
    double num = 0, den = 0;
    for (uint32_t t = 0; t < T; t++) {
        /* y only where both chose the reference's ids and admitted the same
         * slots: under capacity a swap at one token moves the admissions of
         * others (their rows' positions may shift without changing y) */
        bool skip = ref->near_tie[t];
        for (uint32_t j = 0; j < K && !skip; j++)
            skip = a->ids[t * K + j] != ref->out.ids[t * K + j] ||
                   b->ids[t * K + j] != ref->out.ids[t * K + j] ||
                   (a->rows[t * K + j] < 0) != (b->rows[t * K + j] < 0);
        /* sparsemixer: weights that differ where either backend may have
         * judged a threshold either way (each was compared with the
         * reference under the same rule) */
        if (!skip && lf &&
            weights_differ(a->weights + (size_t)t * K, b->weights + (size_t)t * K, K,
                           d->routed_scaling_factor ? fabs((double)d->routed_scaling_factor)
                                                    : 1.0) &&
            sparsemixer_unsure(c, t, ref->out.ids + (size_t)t * K, lf))
            skip = true;
        if (skip)
            continue;
        for (uint32_t h = 0; h < H; h++) {
            double ya = a->y[t * H + h], yb = b->y[t * H + h];
            if (!isfinite(ya) || !isfinite(yb)) {
                if (isnan(ya) != isnan(yb) || (!isnan(ya) && ya != yb)) {
                    snprintf(why, n, "token %u: non-finite y differs (%g vs %g)", t, ya, yb);
                    goto out;
                }
                continue;
            }
            num += (ya - yb) * (ya - yb);
            den += yb * yb;
        }
    }
    *y_err = den > 0 ? sqrt(num / den) : sqrt(num);
    double tol = mvkc_y_tolerance(d, a->flags) + mvkc_y_tolerance(d, b->flags);
    if (!(*y_err <= tol)) {
        snprintf(why, n, "y differs between the backends: rel. L2 %.3e > %.1e", *y_err, tol);
        goto out;
    }
    if (same_ids) {
        for (uint32_t e = 0; e < d->num_experts; e++)
            if (a->tpe[e] != b->tpe[e]) {
                snprintf(why, n, "tokens_per_expert[%u]: %u vs %u", e, a->tpe[e], b->tpe[e]);
                goto out;
            }
        if (a->stats.dropped != b->stats.dropped) {
            snprintf(why, n, "dropped: %llu vs %llu", (unsigned long long)a->stats.dropped,
                     (unsigned long long)b->stats.dropped);
            goto out;
        }
    }
    /* the z-loss and the entropy depend on the logits only */
    const double la[3] = {a->stats.load_balancing_loss, a->stats.router_z_loss,
                          a->stats.routing_entropy};
    const double lb[3] = {b->stats.load_balancing_loss, b->stats.router_z_loss,
                          b->stats.routing_entropy};
    static const char *const names[3] = {"load-balancing loss", "z-loss", "entropy"};
    for (int i = same_ids ? 0 : 1; i < 3; i++) {
        if (!losses_agree(la[i], lb[i])) {
            snprintf(why, n, "%s: %.7g vs %.7g", names[i], la[i], lb[i]);
            goto out;
        }
    }
    ok = 1;
out:
    free(lf);
    return ok;
}
