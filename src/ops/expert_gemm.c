/*
 * Expert GEMM op: a grouped GEMM over the experts of one weight chunk,
 * scheduled from the GPU-written tile schedule (indirect dispatch), or a
 * dense GEMM of one expert over M rows (shared experts, measurements).
 */
#include "ops.h"
#include "kernels.h"

_Static_assert(MOEVK_ACT_SWIGLU + 1u == MVK_ACT_SWIGLU && MOEVK_ACT_GEGLU + 1u == MVK_ACT_GEGLU &&
                   MOEVK_ACT_GEGLU_TANH + 1u == MVK_ACT_GEGLU_TANH &&
                   MOEVK_ACT_SWIGLU_OAI + 1u == MVK_ACT_SWIGLU_OAI &&
                   MOEVK_ACT_RELU + 1u == MVK_ACT_RELU && MOEVK_ACT_GELU + 1u == MVK_ACT_GELU,
               "interface.h's MVK_ACT_* are moevk_activation + 1");

uint32_t mvk_gemm_bm(const moevk_context *ctx)
{
    return ctx->info.max_workgroup_invocations >= 256 ? 64u : 32u;
}

void mvk_op_expert_gemm(mvk_cmd *c, const mvk_gemm_args *a)
{
    const uint32_t bm = mvk_gemm_bm(c->ctx);
    const uint32_t wg = (bm / MVK_GEMM_TM) * (MVK_GEMM_BN / MVK_GEMM_TN);
    uint32_t spec[MVK_GEMM_NSPEC];
    spec[MVK_SPEC_WG] = wg;
    spec[MVK_GEMM_SPEC_BM] = bm;
    spec[MVK_GEMM_SPEC_BN] = MVK_GEMM_BN;
    spec[MVK_GEMM_SPEC_WFMT] = a->w_fmt;
    spec[MVK_GEMM_SPEC_GATED] = a->gated;
    spec[MVK_GEMM_SPEC_ACT] = a->act;
    spec[MVK_GEMM_SPEC_SCHED] = a->scheduled;
    spec[MVK_GEMM_SPEC_GATHER] = a->scheduled && a->gather;
    mvk_gemm_push p = {
        .M = a->M, .N = a->N, .K = a->K, .E = a->E,
        .e_first = a->e_first, .e_count = a->e_count,
        .has_bias = a->has_bias, .dense_expert = a->dense_expert,
        .alpha = a->alpha, .limit = a->limit, .out_offset = a->out_offset,
        .a_row0 = a->a_row0,
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
    if (a->scheduled)
        mvk_cmd_dispatch_indirect(c, MVK_K_EXPERT_GEMM, spec, MVK_GEMM_NSPEC, b,
                                  MVK_GEMM_BINDINGS, &p, sizeof(p), a->args, a->args_offset);
    else
        mvk_cmd_dispatch(c, MVK_K_EXPERT_GEMM, spec, MVK_GEMM_NSPEC, b, MVK_GEMM_BINDINGS, &p,
                         sizeof(p), (a->M + bm - 1) / bm, (a->N + MVK_GEMM_BN - 1) / MVK_GEMM_BN,
                         1);
}
