/*
 * Random MoE layers for the tests (random_layer.h).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "random_layer.h"

void rlayer_make(mvkt_rng *r, rlayer *l, const rlayer_spec *s)
{
    const uint32_t H = s->H, F = s->F, E = s->E, K = s->K;
    const moevk_dtype dt = s->dtype, ddt = s->per_matrix ? s->down_dtype : s->dtype;
    memset(l, 0, sizeof *l);
    l->router = mvkt_random_weights(r, MOEVK_DTYPE_F32, (size_t)E * H, 1.0f);
    l->gate = mvkt_random_weights(r, dt, (size_t)E * F * H, 0.5f);
    l->up = mvkt_random_weights(r, dt, (size_t)E * F * H, 0.5f);
    l->down = mvkt_random_weights(r, ddt, (size_t)E * H * F, 0.5f);
    moevk_layer_desc *d = &l->d;
    d->hidden = H;
    d->ffn = F;
    d->num_experts = E;
    d->top_k = K;
    d->routing = s->routing;
    d->activation = s->activation;
    d->weight_dtype = dt;
    if (s->per_matrix) {
        d->flags |= MOEVK_LAYER_MATRIX_DTYPES;
        d->experts.gate_up_dtype = d->shared.gate_up_dtype = dt;
        d->experts.down_dtype = d->shared.down_dtype = ddt;
    }
    d->norm_topk_prob = 1;
    d->capacity_factor = s->cf;
    d->router_weight = l->router;
    d->experts.gate = moevk_activation_is_gated(s->activation) ? l->gate : NULL;
    d->experts.up = l->up;
    d->experts.down = l->down;
    if (s->biases) {
        l->bias[0] = mvkt_random_weights(r, MOEVK_DTYPE_F32, (size_t)E * F, 0.2f);
        l->bias[1] = mvkt_random_weights(r, MOEVK_DTYPE_F32, (size_t)E * F, 0.2f);
        l->bias[2] = mvkt_random_weights(r, MOEVK_DTYPE_F32, (size_t)E * H, 0.2f);
        d->experts.gate_bias = l->bias[0];
        d->experts.up_bias = l->bias[1];
        d->experts.down_bias = l->bias[2];
    }
    if (s->routing == MOEVK_ROUTING_SIGMOID_GROUPED) {
        d->n_group = E % 4 == 0 && E / 4 * 2 >= K ? 4 : 1;
        d->topk_group = d->n_group > 1 ? 2 : 1;
        d->routed_scaling_factor = 2.5f;
        l->corr = mvkt_random_weights(r, MOEVK_DTYPE_F32, E, 0.1f);
        d->correction_bias = l->corr;
    }
    if (s->shared) {
        const uint32_t be0 = moevk_dtype_block_elems(dt), be1 = moevk_dtype_block_elems(ddt);
        const uint32_t be = be0 > be1 ? be0 : be1;
        const uint32_t FS = be > 1 ? F + be : F + 3, ns = s->shared; /* a width of its own */
        d->num_shared = ns;
        d->shared_ffn = FS;
        l->sgate = mvkt_random_weights(r, dt, (size_t)ns * FS * H, 0.5f);
        l->sup = mvkt_random_weights(r, dt, (size_t)ns * FS * H, 0.5f);
        l->sdown = mvkt_random_weights(r, ddt, (size_t)ns * H * FS, 0.5f);
        l->sg = mvkt_random_weights(r, MOEVK_DTYPE_F32, (size_t)ns * H, 1.0f);
        d->shared.gate = moevk_activation_is_gated(s->activation) ? l->sgate : NULL;
        d->shared.up = l->sup;
        d->shared.down = l->sdown;
        d->shared_gate = l->sg;
    }
}

void rlayer_free(rlayer *l)
{
    free(l->router), free(l->gate), free(l->up), free(l->down);
    free(l->sg), free(l->sgate), free(l->sup), free(l->sdown), free(l->corr);
    for (int i = 0; i < 3; i++)
        free(l->bias[i]);
}

float *random_x(mvkt_rng *r, uint32_t T, uint32_t H)
{
    float *x = malloc(sizeof(float) * T * H);
    cr_assert_not_null(x);
    for (size_t i = 0; i < (size_t)T * H; i++)
        x[i] = mvkt_uniform(r, -1, 1);
    return x;
}

moevk_tensor tensor2(moevk_context *ctx, uint64_t rows, uint64_t cols)
{
    moevk_tensor t;
    uint64_t s[2] = {rows, cols};
    cr_assert_eq(moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, s, &t), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    return t;
}

void forward(moevk_context *ctx, moevk_layer *L, const float *x, uint32_t T, pass_out *o)
{
    const moevk_layer_desc *d = moevk_layer_get_desc(L);
    const uint32_t H = d->hidden, TK = T * d->top_k;
    o->y = malloc(sizeof(float) * T * H);
    o->ids = malloc(4 * TK);
    o->w = malloc(4 * TK);
    o->rows = malloc(4 * TK);
    o->tpe = malloc(4 * d->num_experts);
    memset(&o->stats, 0, sizeof o->stats);
    o->stats.tokens_per_expert = o->tpe;
    moevk_tensor tx = tensor2(ctx, T, H), ty = tensor2(ctx, T, H);
    mvkt_poison_tensor(&ty);
    cr_assert_eq(moevk_tensor_upload(&tx, x), 0);
    cr_assert_eq(moevk_layer_forward(L, &tx, &ty, &o->stats), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    cr_assert_eq(moevk_tensor_download(&ty, o->y), 0);
    cr_assert_eq(moevk_layer_read_routing(L, T, o->ids, o->w, o->rows), MOEVK_SUCCESS, "%s",
                 moevk_context_last_error(ctx));
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&ty);
}

void pass_free(pass_out *o)
{
    free(o->y), free(o->ids), free(o->w), free(o->rows), free(o->tpe);
}

void assert_same(const pass_out *a, const pass_out *b, uint32_t T,
                        const moevk_layer_desc *d, const char *what, uint64_t seed)
{
    const size_t TK = (size_t)T * d->top_k;
    cr_assert(memcmp(a->y, b->y, sizeof(float) * T * d->hidden) == 0, "seed %llu: %s: y differs",
              (unsigned long long)seed, what);
    cr_assert(memcmp(a->ids, b->ids, 4 * TK) == 0, "seed %llu: %s: ids differ",
              (unsigned long long)seed, what);
    cr_assert(memcmp(a->w, b->w, 4 * TK) == 0, "seed %llu: %s: weights differ",
              (unsigned long long)seed, what);
    cr_assert(memcmp(a->rows, b->rows, 4 * TK) == 0, "seed %llu: %s: rows differ",
              (unsigned long long)seed, what);
    cr_assert(memcmp(a->tpe, b->tpe, 4 * d->num_experts) == 0,
              "seed %llu: %s: tokens per expert differ", (unsigned long long)seed, what);
    cr_assert_eq(a->stats.dropped, b->stats.dropped, "%s", what);
    cr_assert(memcmp(&a->stats.load_balancing_loss, &b->stats.load_balancing_loss, 8) == 0 &&
                  memcmp(&a->stats.router_z_loss, &b->stats.router_z_loss, 8) == 0 &&
                  memcmp(&a->stats.routing_entropy, &b->stats.routing_entropy, 8) == 0,
              "seed %llu: %s: losses differ", (unsigned long long)seed, what);
}

