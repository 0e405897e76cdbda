/*
 * CPU reference, expert side: one expert's FFN (every activation) and the
 * whole MoE layer forward (router, routing, capacity, routed experts
 * combined in slot order, shared experts). Double accumulation; the hidden
 * activation and the expert outputs stay in double, and y is rounded to
 * float once, after the shared experts are added.
 *
 * A weight matrix that the activation needs but the weights do not provide
 * (an invalid desc) makes that expert's output NaN rather than crash.
 */
#include "ref.h"
#include "formats.h"
#include "internal.h"
#include "layer_quantize.h"

#include <math.h>
#include <stdlib.h>

static double sigmoid(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

static double silu(double x)
{
    return x / (1.0 + exp(-x));
}

static double gelu_erf(double x)
{
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}

static double gelu_tanh(double x)
{
    const double pi = 3.14159265358979323846;
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / pi) * (x + 0.044715 * x * x * x)));
}

/* The reference's own copy of moevk_activation_is_gated (src/ref links
 * against nothing else of the library). */
static int activation_is_gated(moevk_activation act)
{
    return act == MOEVK_ACT_SWIGLU || act == MOEVK_ACT_GEGLU ||
           act == MOEVK_ACT_GEGLU_TANH || act == MOEVK_ACT_SWIGLU_OAI ||
           act == MOEVK_ACT_SWIGLU_CLAMP || act == MOEVK_ACT_SWIGLU_SOFTCAP ||
           act == MOEVK_ACT_SWIGLU_POSTCLAMP;
}

/* c tanh(x / c): x softly capped at +-c */
static double softcap(double x, double c)
{
    return c * tanh(x / c);
}

/* One expert's matrix (rows of `row_bytes`, `rows` of them): inside the
 * contiguous array, or the expert's own pointer. NULL when neither is
 * given. */
static const uint8_t *expert_matrix(const void *contiguous, const void *const *per_expert,
                                    uint32_t expert, size_t rows, uint64_t row_bytes)
{
    if (contiguous)
        return (const uint8_t *)contiguous + (size_t)expert * rows * row_bytes;
    return per_expert ? per_expert[expert] : NULL;
}

/* The clamps of the limited SwiGLUs: g <= limit, -limit <= u <= limit,
 * written so that NaN propagates. */
static void clamp_gate_up(double *g, double *u, double limit)
{
    if (*g > limit)
        *g = limit;
    if (*u > limit)
        *u = limit;
    if (*u < -limit)
        *u = -limit;
}

/* Row r of a matrix of `cols` columns in `dtype`, decoded into row[]. */
static const float *decode_row(const uint8_t *m, moevk_dtype dtype, size_t r, uint32_t cols,
                               float *row)
{
    mvk_format_decode(dtype, m + r * mvk_format_row_bytes(dtype, cols), 0, cols, row);
    return row;
}

/* sum_c in[c] * w[c], c < n, in double */
static double dot(const float *in, const float *w, uint32_t n)
{
    double acc = 0.0;
    for (uint32_t c = 0; c < n; c++)
        acc += (double)in[c] * (double)w[c];
    return acc;
}

/* sum_c in[perm[c]] * w[c] (perm NULL: dot) */
static double dot_perm(const float *in, const uint32_t *perm, const float *w, uint32_t n)
{
    if (!perm)
        return dot(in, w, n);
    double acc = 0.0;
    for (uint32_t c = 0; c < n; c++)
        acc += (double)in[perm[c]] * (double)w[c];
    return acc;
}

/* out[0..H-1] = FFN of `expert` (experts of width ffn in w) on one input row
 * in[0..H-1]; h is scratch of ffn doubles, row of max(H, ffn) floats. The
 * shared experts (w is &desc->shared) use their own activation and limit
 * with MOEVK_LAYER_SHARED_ACTIVATION. */
static void expert_row(const moevk_layer_desc *desc, const moevk_expert_weights *w,
                       uint32_t ffn, uint32_t expert, const float *in, double *h, float *row,
                       double *out)
{
    uint32_t H = desc->hidden;
    const int per = (desc->flags & MOEVK_LAYER_MATRIX_DTYPES) != 0;
    const moevk_dtype dt = per ? w->gate_up_dtype : desc->weight_dtype;
    const moevk_dtype dt_down = per ? w->down_dtype : desc->weight_dtype;
    const int own = w == &desc->shared && (desc->flags & MOEVK_LAYER_SHARED_ACTIVATION);
    moevk_activation act = own ? desc->shared_activation : desc->activation;
    double limit = desc->swiglu_limit ? (double)desc->swiglu_limit : 7.0;
    if (own && desc->shared_swiglu_limit)
        limit = (double)desc->shared_swiglu_limit;
    int gated = activation_is_gated(act);
    uint64_t rb_h = mvk_format_row_bytes(dt, H), rb_f = mvk_format_row_bytes(dt_down, ffn);
    const uint8_t *gate = expert_matrix(w->gate, w->gate_experts, expert, ffn, rb_h);
    const uint8_t *up = expert_matrix(w->up, w->up_experts, expert, ffn, rb_h);
    const uint8_t *down = expert_matrix(w->down, w->down_experts, expert, H, rb_f);
    int known = gated || act == MOEVK_ACT_RELU || act == MOEVK_ACT_GELU || act == MOEVK_ACT_RELU2;

    if (!known || !up || !down || (gated && !gate) || !rb_h || !rb_f) {
        for (uint32_t c = 0; c < H; c++)
            out[c] = NAN;
        return;
    }

    /* the gate and up inputs in the expert's order (input_perm) */
    const uint32_t *perm = w->input_perm ? w->input_perm + (size_t)expert * H : NULL;
    for (uint32_t f = 0; f < ffn; f++) {
        double u = dot_perm(in, perm, decode_row(up, dt, f, H, row), H);
        if (w->up_bias)
            u += (double)w->up_bias[(size_t)expert * ffn + f];
        if (!gated) {
            /* written so that NaN propagates (unlike fmax) */
            if (act == MOEVK_ACT_GELU) {
                h[f] = gelu_erf(u);
            } else {
                double r = u < 0.0 ? 0.0 : u;
                h[f] = act == MOEVK_ACT_RELU2 ? r * r : r;
            }
            continue;
        }
        double g = dot_perm(in, perm, decode_row(gate, dt, f, H, row), H);
        if (w->gate_bias)
            g += (double)w->gate_bias[(size_t)expert * ffn + f];
        switch (act) {
        case MOEVK_ACT_SWIGLU:
            h[f] = silu(g) * u;
            break;
        case MOEVK_ACT_GEGLU:
            h[f] = gelu_erf(g) * u;
            break;
        case MOEVK_ACT_GEGLU_TANH:
            h[f] = gelu_tanh(g) * u;
            break;
        case MOEVK_ACT_SWIGLU_CLAMP:
            clamp_gate_up(&g, &u, limit);
            h[f] = silu(g) * u;
            break;
        case MOEVK_ACT_SWIGLU_SOFTCAP: {
            /* the sigmoid sees the raw gate */
            const double cg = desc->softcap_gate ? (double)desc->softcap_gate : 4.0;
            const double cu = desc->softcap_up ? (double)desc->softcap_up : 25.0;
            h[f] = softcap(g, cg) * sigmoid(g) * softcap(u, cu);
            break;
        }
        case MOEVK_ACT_SWIGLU_POSTCLAMP: {
            /* the clamp after the silu */
            double s = silu(g);
            clamp_gate_up(&s, &u, limit);
            h[f] = s * u;
            break;
        }
        default: { /* MOEVK_ACT_SWIGLU_OAI */
            double alpha = desc->swiglu_alpha ? (double)desc->swiglu_alpha : 1.702;
            clamp_gate_up(&g, &u, limit);
            h[f] = (u + 1.0) * g * sigmoid(alpha * g);
            break;
        }
        }
    }

    for (uint32_t c = 0; c < H; c++) {
        const float *d = decode_row(down, dt_down, c, ffn, row);
        double acc = 0.0;
        for (uint32_t f = 0; f < ffn; f++)
            acc += h[f] * (double)d[f];
        if (w->down_bias)
            acc += (double)w->down_bias[(size_t)expert * H + c];
        out[c] = acc;
    }
}

moevk_status moevk_ref_expert_ffn(const moevk_layer_desc *desc, const moevk_expert_weights *w,
                                  uint32_t ffn, uint32_t expert, const float *in, uint32_t rows,
                                  float *out)
{
    uint32_t H = desc->hidden;
    double *h = malloc((ffn ? ffn : 1) * sizeof *h);
    double *o = malloc((H ? H : 1) * sizeof *o);
    float *row = malloc(((size_t)(H > ffn ? H : ffn) + 1) * sizeof *row);
    if (!h || !o || !row) {
        free(h);
        free(o);
        free(row);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (uint32_t r = 0; r < rows; r++) {
        expert_row(desc, w, ffn, expert, in + (size_t)r * H, h, row, o);
        for (uint32_t c = 0; c < H; c++)
            out[(size_t)r * H + c] = (float)o[c];
    }
    free(h);
    free(o);
    free(row);
    return MOEVK_SUCCESS;
}

/* One token's y [H] (floats) from its k slots (ids, weights, rows: < 0
 * dropped): the routed experts in slot order (on w x with weights on the
 * input), the shared experts (gated, times shared_scale), the output bias.
 * Scratch: h [max F], o [H], acc [H] doubles, wrow [max(H, F)], xs [H]. */
static void token_output(const moevk_layer_desc *desc, const float *xt, const uint32_t *ids,
                         const float *w, const int32_t *rows, const float *gammas, double *h,
                         double *o, double *acc, float *wrow, float *xs, float *y)
{
    const uint32_t H = desc->hidden, k = moevk_routing_slots(desc);
    const uint32_t shared_ffn = desc->shared_ffn ? desc->shared_ffn : desc->ffn;
    const int on_input = (desc->flags & MOEVK_LAYER_WEIGHTS_ON_INPUT) != 0;
    for (uint32_t c = 0; c < H; c++)
        acc[c] = 0.0;
    /* drop_renorm_eps: the admitted weights renormalised to the token's
     * whole, max(sum of admitted w / s, eps) */
    double renorm = 1.0;
    if (desc->drop_renorm_eps > 0.0f) {
        const double s = desc->routed_scaling_factor ? (double)desc->routed_scaling_factor : 1.0;
        double sum = 0.0;
        for (uint32_t j = 0; j < k; j++)
            if (rows[j] >= 0)
                sum += (double)w[j];
        sum /= s;
        renorm = sum < (double)desc->drop_renorm_eps ? (double)desc->drop_renorm_eps : sum;
    }
    /* routed experts, in slot order; dropped assignments add nothing */
    for (uint32_t j = 0; j < k; j++) {
        if (rows[j] < 0)
            continue;
        /* an identity expert's output is its input */
        const int identity = ids[j] >= moevk_ref_ffn_experts(desc);
        if (on_input) {
            /* the expert runs on w x (rounded to f32, as the layer's input
             * is), its output added as it is */
            for (uint32_t c = 0; c < H; c++)
                xs[c] = (float)((double)w[j] * xt[c]);
            if (identity)
                for (uint32_t c = 0; c < H; c++)
                    o[c] = xs[c];
            else
                expert_row(desc, &desc->experts, desc->ffn, ids[j], xs, h, wrow, o);
            for (uint32_t c = 0; c < H; c++)
                acc[c] += o[c];
            continue;
        }
        if (identity)
            for (uint32_t c = 0; c < H; c++)
                o[c] = xt[c];
        else
            expert_row(desc, &desc->experts, desc->ffn, ids[j], xt, h, wrow, o);
        for (uint32_t c = 0; c < H; c++)
            acc[c] += (double)w[j] / renorm * o[c];
    }
    /* shared experts, optionally gated by sigmoid(x . shared_gate[i]) */
    const double scale = desc->shared_scale != 0.0f ? (double)desc->shared_scale : 1.0;
    for (uint32_t i = 0; i < desc->num_shared; i++) {
        expert_row(desc, &desc->shared, shared_ffn, i, xt, h, wrow, o);
        double gate = 1.0;
        if (gammas)
            gate = (double)gammas[i];
        else if (desc->shared_gate)
            gate = sigmoid(dot(xt, decode_row(desc->shared_gate, desc->router_dtype, i, H, wrow),
                               H));
        for (uint32_t c = 0; c < H; c++)
            acc[c] += scale * gate * o[c];
    }
    for (uint32_t c = 0; c < H; c++)
        y[c] = (float)(acc[c] + (desc->output_bias ? (double)desc->output_bias[c] : 0.0));
}

moevk_status moevk_ref_token_output(const moevk_layer_desc *desc, const float *xt,
                                    const uint32_t *ids, const float *weights,
                                    const int32_t *rows, const float *gammas, float *y)
{
    const uint32_t H = desc->hidden;
    uint32_t F = desc->ffn;
    if (desc->num_shared && desc->shared_ffn > F)
        F = desc->shared_ffn;
    double *h = malloc(((size_t)F + 1) * sizeof *h);
    double *o = malloc(((size_t)H + 1) * sizeof *o);
    double *acc = malloc(((size_t)H + 1) * sizeof *acc);
    float *wrow = malloc(((size_t)(H > F ? H : F) + 1) * sizeof *wrow);
    float *xs = malloc(((size_t)H + 1) * sizeof *xs);
    moevk_status st = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    if (h && o && acc && wrow && xs) {
        token_output(desc, xt, ids, weights, rows, gammas, h, o, acc, wrow, xs, y);
        st = MOEVK_SUCCESS;
    }
    free(h);
    free(o);
    free(acc);
    free(wrow);
    free(xs);
    return st;
}

static moevk_status ref_forward(const moevk_layer_desc *desc, uint32_t T, const float *x,
                                float *y, uint32_t *ids, float *weights, uint8_t *near_tie,
                                moevk_routing_stats *stats);

moevk_status moevk_ref_layer_forward(const moevk_layer_desc *desc, uint32_t T, const float *x,
                                     float *y, uint32_t *ids, float *weights,
                                     uint8_t *near_tie, moevk_routing_stats *stats)
{
    if (!desc || !(desc->flags & MOEVK_LAYER_QUANTIZE))
        return ref_forward(desc, T, x, y, ids, weights, near_tie, stats);
    /* quantised at create: the same quantisation of the host weights, then
     * the packed weights as any other */
    moevk_layer_desc q;
    void *storage = NULL;
    moevk_status st = mvk_layer_desc_quantized(NULL, desc, &q, &storage);
    if (!st)
        st = ref_forward(&q, T, x, y, ids, weights, near_tie, stats);
    mvk_free(NULL, storage);
    return st;
}

static moevk_status ref_forward(const moevk_layer_desc *desc, uint32_t T, const float *x,
                                float *y, uint32_t *ids, float *weights, uint8_t *near_tie,
                                moevk_routing_stats *stats)
{
    uint32_t H = desc->hidden, E = desc->num_experts, k = moevk_routing_slots(desc);
    uint32_t shared_ffn = desc->shared_ffn ? desc->shared_ffn : desc->ffn;
    uint32_t max_ffn = desc->ffn;
    if (desc->num_shared && shared_ffn > max_ffn)
        max_ffn = shared_ffn;
    size_t TE = (size_t)T * E, TK = (size_t)T * k;
    moevk_status status = MOEVK_SUCCESS;
    uint64_t dropped;

    /* "+ 1" keeps every size nonzero, so NULL always means failure */
    float *logits = malloc((TE + 1) * sizeof *logits);
    uint32_t *r_ids = malloc((TK + 1) * sizeof *r_ids);
    float *r_w = malloc((TK + 1) * sizeof *r_w);
    uint32_t *counts = malloc(((size_t)E + 1) * sizeof *counts);
    uint32_t *offsets = malloc(((size_t)E + 1) * sizeof *offsets);
    int32_t *row = malloc((TK + 1) * sizeof *row);
    double *h = malloc(((size_t)max_ffn + 1) * sizeof *h);
    double *o = malloc(((size_t)H + 1) * sizeof *o);
    double *acc = malloc(((size_t)H + 1) * sizeof *acc);
    float *wrow = malloc(((size_t)(H > max_ffn ? H : max_ffn) + 1) * sizeof *wrow);
    float *xs = malloc(((size_t)H + 1) * sizeof *xs);
    float *xn = NULL; /* the normed inputs [2, T, H] */
    float *gate_logits = NULL, *gammas = NULL; /* shared_sink: [T, num_shared] each */
    if (!logits || !r_ids || !r_w || !counts || !offsets || !row || !h || !o || !acc || !wrow ||
        !xs) {
        status = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
        goto done;
    }

    /* the input norms: the router and the experts each read their rows */
    const float *xr = x, *xe = x;
    if (moevk_ref_has_router_input(desc) || moevk_ref_has_expert_input(desc)) {
        xn = malloc((2 * (size_t)T * H + 1) * sizeof *xn);
        if (!xn) {
            status = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
            goto done;
        }
        if (moevk_ref_has_router_input(desc)) {
            moevk_ref_router_input(desc, T, x, xn);
            xr = xn;
        }
        if (moevk_ref_has_expert_input(desc)) {
            moevk_ref_expert_input(desc, T, x, xn + (size_t)T * H);
            xe = xn + (size_t)T * H;
        }
    }
    moevk_ref_router_logits(xr, T, H, desc->router_weight, desc->router_dtype, E,
                            desc->router_bias, logits);
    if (desc->shared_sink) {
        /* the shared gates' logits from the router's input, and their
         * final gates from the routing */
        const size_t TS = (size_t)T * desc->num_shared;
        gate_logits = malloc((2 * TS + 1) * sizeof *gate_logits);
        if (!gate_logits) {
            status = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
            goto done;
        }
        gammas = gate_logits + TS;
        moevk_ref_router_logits(xr, T, H, desc->shared_gate, desc->router_dtype,
                                desc->num_shared, NULL, gate_logits);
    }
    status = moevk_ref_route_sink(desc, T, logits, gate_logits, r_ids, r_w, gammas, near_tie);
    if (status)
        goto done;
    dropped = moevk_ref_permute(desc, T, r_ids, counts, offsets, row);

    for (uint32_t t = 0; t < T; t++) {
        const size_t a = (size_t)t * k;
        token_output(desc, xe + (size_t)t * H, r_ids + a, r_w + a, row + a,
                     gammas ? gammas + (size_t)t * desc->num_shared : NULL, h, o, acc, wrow, xs,
                     y + (size_t)t * H);
    }

    if (stats) {
        status = moevk_ref_stats(desc, T, logits, r_ids, counts, dropped, stats);
        if (status)
            goto done;
    }
    for (size_t a = 0; a < TK; a++) {
        if (ids)
            ids[a] = r_ids[a];
        if (weights)
            weights[a] = r_w[a];
    }

done:
    free(logits);
    free(r_ids);
    free(r_w);
    free(counts);
    free(offsets);
    free(row);
    free(h);
    free(o);
    free(acc);
    free(wrow);
    free(xs);
    free(xn);
    free(gate_logits);
    return status;
}
