/*
 * Combine op: y = sum_j w_j o[row_j] in slot order, plus the (gated) shared
 * expert outputs; one thread per output element.
 */
#include "ops.h"
#include "kernels.h"

void mvk_op_combine(mvk_cmd *c, const mvk_combine_args *a)
{
    const uint64_t n = (uint64_t)a->T * a->H;
    const uint32_t spec[MVK_COMBINE_NSPEC] = {MVK_COMBINE_WG};
    mvk_binding b[MVK_COMBINE_BINDINGS];
    b[MVK_COMBINE_BIND_O] = a->o;
    b[MVK_COMBINE_BIND_ROW_OF] = a->row_of;
    b[MVK_COMBINE_BIND_WEIGHTS] = a->weights;
    b[MVK_COMBINE_BIND_SHARED_OUT] = a->shared_out;
    b[MVK_COMBINE_BIND_SHARED_GATE] = a->shared_gate;
    b[MVK_COMBINE_BIND_Y] = a->y;
    b[MVK_COMBINE_BIND_OUT_BIAS] = a->out_bias;
    const uint64_t per = (uint64_t)c->ctx->info.max_workgroup_count[0] * MVK_COMBINE_WG;
    for (uint64_t e0 = 0; e0 < n; e0 += per) {
        uint64_t cnt = MVK_MIN(per, n - e0);
        mvk_combine_push p = {
            .T = a->T, .H = a->H, .K = a->K, .n_shared = a->n_shared, .gate_mode = a->gate_mode,
            .elem0 = (uint32_t)e0, .tok0 = a->tok0, .unit_weights = a->unit_weights,
            .shared_scale = a->shared_scale,
            .has_out_bias = a->out_bias.buffer != VK_NULL_HANDLE,
            .renorm_eps = a->renorm_eps, .renorm_scale = a->renorm_scale,
        };
        mvk_cmd_dispatch(c, MVK_K_COMBINE, spec, MVK_COMBINE_NSPEC, b, MVK_COMBINE_BINDINGS, &p,
                         sizeof(p), (uint32_t)((cnt + MVK_COMBINE_WG - 1) / MVK_COMBINE_WG), 1,
                         1);
    }
}

void mvk_op_scale_rows(mvk_cmd *c, const mvk_scale_args *a)
{
    const uint64_t n = (uint64_t)a->T * a->H;
    const uint32_t spec[MVK_SCALE_NSPEC] = {MVK_SCALE_WG};
    mvk_binding b[MVK_SCALE_BINDINGS];
    b[MVK_SCALE_BIND_X] = a->x;
    b[MVK_SCALE_BIND_ROW_OF] = a->row_of;
    b[MVK_SCALE_BIND_WEIGHTS] = a->weights;
    b[MVK_SCALE_BIND_XS] = a->xs;
    b[MVK_SCALE_BIND_IDS] = a->ids;
    const uint64_t per = (uint64_t)c->ctx->info.max_workgroup_count[0] * MVK_SCALE_WG;
    for (uint64_t e0 = 0; e0 < n; e0 += per) {
        uint64_t cnt = MVK_MIN(per, n - e0);
        mvk_scale_push p = {.T = a->T, .H = a->H, .K = a->K, .elem0 = (uint32_t)e0,
                            .tok0 = a->tok0, .id_first = a->id_first, .unit = a->unit};
        mvk_cmd_dispatch(c, MVK_K_SCALE_ROWS, spec, MVK_SCALE_NSPEC, b, MVK_SCALE_BINDINGS, &p,
                         sizeof(p), (uint32_t)((cnt + MVK_SCALE_WG - 1) / MVK_SCALE_WG), 1, 1);
    }
}

void mvk_op_input_norm(mvk_cmd *c, const mvk_norm_args *a)
{
    const uint32_t spec[MVK_NORM_NSPEC] = {MVK_NORM_WG};
    mvk_binding b[MVK_NORM_BINDINGS];
    b[MVK_NORM_BIND_X] = a->x;
    b[MVK_NORM_BIND_RSCALE] = a->rscale;
    b[MVK_NORM_BIND_EWEIGHT] = a->eweight;
    b[MVK_NORM_BIND_XR] = a->xr;
    b[MVK_NORM_BIND_XE] = a->xe;
    const uint32_t per = c->ctx->info.max_workgroup_count[0];
    for (uint32_t t0 = 0; t0 < a->T; t0 += per) {
        mvk_norm_push p = {
            .T = a->T, .H = a->H, .tok0 = t0,
            .do_router = a->xr.buffer != VK_NULL_HANDLE,
            .has_rscale = a->rscale.buffer != VK_NULL_HANDLE, .r_eps = a->r_eps,
            .r_factor = a->r_factor != 0.0f ? a->r_factor : 1.0f,
            .do_expert = a->xe.buffer != VK_NULL_HANDLE,
            .has_eweight = a->eweight.buffer != VK_NULL_HANDLE, .e_eps = a->e_eps,
        };
        mvk_cmd_dispatch(c, MVK_K_INPUT_NORM, spec, MVK_NORM_NSPEC, b, MVK_NORM_BINDINGS, &p,
                         sizeof(p), MVK_MIN(per, a->T - t0), 1, 1);
    }
}
