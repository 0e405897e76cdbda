/*
 * Random MoE layers for the tests that drive passes themselves (workspace,
 * kernel paths): a layer description over owned random weights, random
 * inputs, and one forward pass with everything it produces read back.
 */
#ifndef MOEVK_TESTS_RANDOM_LAYER_H
#define MOEVK_TESTS_RANDOM_LAYER_H

#include "common.h"

typedef struct rlayer_spec {
    uint32_t H, F, E, K;
    moevk_routing routing;       /* 0 = softmax_topk */
    float cf;                    /* capacity factor, 0 = dropless */
    uint32_t shared;             /* shared experts (gated), 0 = none */
    moevk_activation activation; /* 0 = swiglu */
    moevk_dtype dtype;           /* of the expert weights; 0 = f32 */
    /* with per_matrix: the down rows in down_dtype (gate/up in dtype), as
     * MOEVK_LAYER_MATRIX_DTYPES says, routed and shared alike */
    int per_matrix;
    moevk_dtype down_dtype;
    int biases;                  /* expert biases */
} rlayer_spec;

typedef struct rlayer {
    moevk_layer_desc d;
    void *router, *gate, *up, *down, *sg, *sgate, *sup, *sdown;
    float *corr, *bias[3];
} rlayer;

void rlayer_make(mvkt_rng *r, rlayer *l, const rlayer_spec *s);
void rlayer_free(rlayer *l);
float *random_x(mvkt_rng *r, uint32_t T, uint32_t H);
moevk_tensor tensor2(moevk_context *ctx, uint64_t rows, uint64_t cols);

typedef struct pass_out {
    float *y;
    uint32_t *ids, *tpe;
    float *w;
    int32_t *rows;
    moevk_routing_stats stats;
} pass_out;

/* One forward of L on x (y poisoned first); routing and stats read back. */
void forward(moevk_context *ctx, moevk_layer *L, const float *x, uint32_t T, pass_out *o);
void pass_free(pass_out *o);
/* Everything two passes produced is bitwise the same. */
void assert_same(const pass_out *a, const pass_out *b, uint32_t T, const moevk_layer_desc *d,
                 const char *what, uint64_t seed);

#endif
