/*
 * Route op: per token, scoring, top-k ids and routing weights, and the
 * softmax statistics {max, sum, entropy} of its logits; the expert-choice
 * op, per expert, after the route op has left every token's p.
 */
#include "ops.h"
#include "kernels.h"


_Static_assert(MOEVK_ROUTING_SOFTMAX_TOPK == MVK_ROUTING_SOFTMAX_TOPK &&
                   MOEVK_ROUTING_TOPK_SOFTMAX == MVK_ROUTING_TOPK_SOFTMAX &&
                   MOEVK_ROUTING_SIGMOID_GROUPED == MVK_ROUTING_SIGMOID_GROUPED &&
                   MOEVK_ROUTING_EXPERT_CHOICE == MVK_ROUTING_EXPERT_CHOICE &&
                   MOEVK_ROUTING_SPARSEMIXER == MVK_ROUTING_SPARSEMIXER,
               "moevk_routing mirrors interface.h");
_Static_assert(MOEVK_SCORE_SIGMOID == MVK_SCORE_SIGMOID &&
                   MOEVK_SCORE_SQRTSOFTPLUS == MVK_SCORE_SQRTSOFTPLUS,
               "moevk_score_fn mirrors interface.h");
_Static_assert(MOEVK_MAX_EXPERTS <= MVK_ROUTE_MAX_EXPERTS, "route.comp holds every expert");
_Static_assert(MVK_ROUTE_WG == MVK_ROUTER_WG, "a fused route computes logits as the router does");
_Static_assert(8u * MVK_ROUTE_WG <= MVK_ROUTE_MAX_EXPERTS, "route.comp reduces 8 logits in gs");

void mvk_op_route(mvk_cmd *c, const mvk_route_args *a)
{
    const uint32_t spec[MVK_ROUTE_NSPEC] = {MVK_ROUTE_WG, a->routing, a->norm ? 1u : 0u,
                                            a->fused, a->fused ? a->w_fmt : 0u};
    const uint32_t per = c->ctx->info.max_workgroup_count[0];
    mvk_binding b[MVK_ROUTE_BINDINGS];
    b[MVK_ROUTE_BIND_LOGITS] = a->logits;
    b[MVK_ROUTE_BIND_CORR_BIAS] = a->corr_bias;
    b[MVK_ROUTE_BIND_IDS] = a->ids;
    b[MVK_ROUTE_BIND_WEIGHTS] = a->weights;
    b[MVK_ROUTE_BIND_TOKSTATS] = a->tokstats;
    b[MVK_ROUTE_BIND_X] = a->fused ? a->x : (mvk_binding){0};
    b[MVK_ROUTE_BIND_ROUTER_W] = a->fused ? a->router_w : (mvk_binding){0};
    b[MVK_ROUTE_BIND_ROUTER_B] = a->fused ? a->router_b : (mvk_binding){0};
    b[MVK_ROUTE_BIND_EXPERT_SCALE] = a->expert_scale;
    /* (no sink: the token statistics, which the kernel writes anyway, so
     * that the writable binding adds no access to the shared empty buffer) */
    b[MVK_ROUTE_BIND_SINK] = a->n_sink ? a->sink : a->tokstats;
    for (uint32_t t0 = a->tok0; t0 < a->T; t0 += per) {
        mvk_route_push p = {
            .T = a->T, .E = a->E, .K = a->K, .n_group = a->n_group, .topk_group = a->topk_group,
            .has_bias = a->corr_bias.buffer != VK_NULL_HANDLE, .tok0 = t0, .scale = a->scale,
            .logit_tok0 = a->logit_tok0, .H = a->H,
            .has_router_bias = a->fused && a->router_b.buffer != VK_NULL_HANDLE,
            .sel_probs = a->sel_probs, .group_max = a->group_max, .norm_p = a->norm_p,
            .norm_min = a->norm_min, .norm_eps = a->norm_eps, .router_softcap = a->softcap,
            .sel_logits = a->sel_logits && a->routing != MVK_ROUTING_TOPK_SOFTMAX &&
                          a->routing != MVK_ROUTING_SPARSEMIXER,
            .jitter_eps = a->routing == MVK_ROUTING_SPARSEMIXER ? a->jitter_eps : 0.0f,
            .has_expert_scale = a->expert_scale.buffer != VK_NULL_HANDLE,
            .score_fn = a->routing == MVK_ROUTING_SIGMOID_GROUPED ? a->score_fn : 0u,
            .n_sink = a->n_sink,
        };
        mvk_cmd_dispatch(c, MVK_K_ROUTE, spec, MVK_ROUTE_NSPEC, b, MVK_ROUTE_BINDINGS, &p,
                         sizeof(p), MVK_MIN(per, a->T - t0), 1, 1);
    }
}

void mvk_op_expert_choice(mvk_cmd *c, const mvk_ec_args *a)
{
    const uint32_t spec[MVK_EC_NSPEC] = {MVK_EC_WG};
    const uint32_t per = c->ctx->info.max_workgroup_count[0];
    mvk_binding b[MVK_EC_BINDINGS];
    b[MVK_EC_BIND_IDS] = a->ids;
    b[MVK_EC_BIND_WEIGHTS] = a->weights;
    for (uint32_t e0 = 0; e0 < a->E; e0 += per) {
        mvk_ec_push p = {.T = a->T, .E = a->E, .C = a->C, .scale = a->scale, .e0 = e0};
        mvk_cmd_dispatch(c, MVK_K_EXPERT_CHOICE, spec, MVK_EC_NSPEC, b, MVK_EC_BINDINGS, &p,
                         sizeof(p), MVK_MIN(per, a->E - e0), 1, 1);
    }
}
