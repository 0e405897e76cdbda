/*
 * Expert GEMM op: the kernels of one projection over the experts of one
 * weight chunk. Scheduled: one indirect dispatch per kernel path (skinny
 * GEMV, 16-row tiles, 64-row tiles) with the grid the permute stage wrote
 * from the experts' row counts. Dense (shared experts, measurements): the
 * skinny kernel for at most MVK_SKINNY_ROWS rows, else 64-row tiles.
 * All paths accumulate in the canonical order of shaders/interface.h.
 */
#include "ops.h"
#include "kernels.h"

_Static_assert(MOEVK_ACT_SWIGLU + 1u == MVK_ACT_SWIGLU && MOEVK_ACT_GEGLU + 1u == MVK_ACT_GEGLU &&
                   MOEVK_ACT_GEGLU_TANH + 1u == MVK_ACT_GEGLU_TANH &&
                   MOEVK_ACT_SWIGLU_OAI + 1u == MVK_ACT_SWIGLU_OAI &&
                   MOEVK_ACT_RELU + 1u == MVK_ACT_RELU && MOEVK_ACT_GELU + 1u == MVK_ACT_GELU &&
                   MOEVK_ACT_RELU2 + 1u == MVK_ACT_RELU2 &&
                   MOEVK_ACT_SWIGLU_CLAMP + 1u == MVK_ACT_SWIGLU_CLAMP &&
                   MOEVK_ACT_SWIGLU_SOFTCAP + 1u == MVK_ACT_SWIGLU_SOFTCAP &&
                   MOEVK_ACT_SWIGLU_POSTCLAMP + 1u == MVK_ACT_SWIGLU_POSTCLAMP,
               "interface.h's MVK_ACT_* are moevk_activation + 1");
_Static_assert(MVK_GEMV_WG % MVK_GEMV_COLS == 0, "the skinny kernel's lanes are whole");

uint32_t mvk_path_height(uint32_t path)
{
    return path == MVK_PATH_SKINNY ? MVK_SKINNY_ROWS
                                   : path == MVK_PATH_SMALL ? MVK_SMALL_TILE : MVK_LARGE_TILE;
}

uint32_t mvk_path_columns(uint32_t path)
{
    return path == MVK_PATH_SKINNY ? MVK_GEMV_COLS : MVK_GEMM_BN;
}

static void dispatch_path(mvk_cmd *c, const mvk_gemm_args *a, uint32_t path,
                          const mvk_binding *b, const mvk_gemm_push *push)
{
    mvk_gemm_push p = *push;
    p.path = path;
    const bool scheduled = a->scheduled;
    p.sched = scheduled;
    p.gather = scheduled && a->gather;
    if (path == MVK_PATH_SKINNY) {
        uint32_t spec[MVK_GEMV_NSPEC];
        spec[MVK_SPEC_WG] = MVK_GEMV_WG;
        spec[MVK_GEMV_SPEC_COLS] = MVK_GEMV_COLS;
        spec[MVK_GEMV_SPEC_WFMT] = a->w_fmt;
        spec[MVK_GEMV_SPEC_GATED] = a->gated;
        spec[MVK_GEMV_SPEC_PERM] = a->permuted;
        if (scheduled)
            mvk_cmd_dispatch_indirect(c, MVK_K_EXPERT_GEMV, spec, MVK_GEMV_NSPEC, b,
                                      MVK_GEMM_BINDINGS, &p, sizeof(p), a->args,
                                      a->args_offset + 12ull * 2u * path);
        else
            mvk_cmd_dispatch(c, MVK_K_EXPERT_GEMV, spec, MVK_GEMV_NSPEC, b, MVK_GEMM_BINDINGS,
                             &p, sizeof(p), (a->M + MVK_SKINNY_ROWS - 1) / MVK_SKINNY_ROWS,
                             (a->N + MVK_GEMV_COLS - 1) / MVK_GEMV_COLS, 1);
        return;
    }
    const uint32_t bm = mvk_path_height(path);
    uint32_t kernel = path == MVK_PATH_LARGE && !a->batch_invariant
                          ? mvk_matrix_unit_kernel(c->ctx, a->w_fmt)
                          : MVK_K_EXPERT_GEMM;
    if (a->kernel_override && path == MVK_PATH_LARGE)
        kernel = a->kernel_override;
    uint32_t spec[MVK_GEMM_NSPEC];
    spec[MVK_SPEC_WG] = (bm / MVK_GEMM_TM) * (MVK_GEMM_BN / MVK_GEMM_TN);
    spec[MVK_GEMM_SPEC_BM] = bm;
    spec[MVK_GEMM_SPEC_BN] = MVK_GEMM_BN;
    spec[MVK_GEMM_SPEC_WFMT] = a->w_fmt;
    spec[MVK_GEMM_SPEC_GATED] = a->gated;
    spec[MVK_GEMM_SPEC_PERM] = a->permuted;
    if (scheduled)
        mvk_cmd_dispatch_indirect(c, kernel, spec, MVK_GEMM_NSPEC, b, MVK_GEMM_BINDINGS, &p,
                                  sizeof(p), a->args, a->args_offset + 12ull * 2u * path);
    else
        mvk_cmd_dispatch(c, kernel, spec, MVK_GEMM_NSPEC, b, MVK_GEMM_BINDINGS, &p,
                         sizeof(p), (a->M + bm - 1) / bm, (a->N + MVK_GEMM_BN - 1) / MVK_GEMM_BN,
                         1);
}

void mvk_op_expert_gemm(mvk_cmd *c, const mvk_gemm_args *a)
{
    mvk_gemm_push p = {
        .M = a->M, .N = a->N, .K = a->K, .E = a->E,
        .e_first = a->e_first, .e_count = a->e_count,
        .slot_base = a->has_table ? a->slot_base : MVK_NO_TABLE,
        .has_bias = a->has_bias, .dense_expert = a->dense_expert,
        .alpha = a->alpha, .limit = a->limit, .out_offset = a->out_offset,
        .a_row0 = a->a_row0, .act = a->act,
    };
    mvk_binding b[MVK_GEMM_BINDINGS];
    b[MVK_GEMM_BIND_A] = a->a;
    b[MVK_GEMM_BIND_ROW_TOKEN] = a->row_token;
    b[MVK_GEMM_BIND_SCHEDULE] = a->schedule;
    b[MVK_GEMM_BIND_META] = a->meta;
    b[MVK_GEMM_BIND_W0] = a->w0;
    b[MVK_GEMM_BIND_W1] = a->gated ? a->w1 : a->w0;
    b[MVK_GEMM_BIND_BIAS0] = a->bias0;
    b[MVK_GEMM_BIND_BIAS1] = a->bias1;
    b[MVK_GEMM_BIND_OUT] = a->out;
    b[MVK_GEMM_BIND_PERM] = a->perm;
    b[MVK_GEMM_BIND_SLOTS] = a->has_table ? a->slots : (mvk_binding){0};
    const uint32_t force = c->ctx->testing_force_path;
    if (a->scheduled) {
        /* every path's grid is in META; a path without tiles dispatches an
         * empty grid */
        for (uint32_t path = 0; path < MVK_PATHS; path++) {
            const uint32_t min_rows = path == MVK_PATH_SKINNY ? 1
                                      : path == MVK_PATH_SMALL ? MVK_SKINNY_ROWS + 1
                                                               : MVK_SMALL_TILE_MAX_ROWS + 1;
            if (force ? force == path + 1 : a->max_rows >= min_rows)
                dispatch_path(c, a, path, b, &p);
        }
        return;
    }
    uint32_t path = a->M <= MVK_SKINNY_ROWS ? MVK_PATH_SKINNY : MVK_PATH_LARGE;
    if (force && !a->kernel_override)
        path = force - 1;
    dispatch_path(c, a, path, b, &p);
}
