/*
 * Statistics op: per-block expert probability mass (pass 0), then the
 * layer's results: admitted counts, dropped, the three losses (pass 1).
 */
#include "ops.h"
#include "kernels.h"

static void fill(mvk_binding *b, const mvk_stats_args *a)
{
    b[MVK_STATS_BIND_LOGITS] = a->logits;
    b[MVK_STATS_BIND_TOKSTATS] = a->tokstats;
    b[MVK_STATS_BIND_META] = a->meta;
    b[MVK_STATS_BIND_PART] = a->part;
    b[MVK_STATS_BIND_RESULTS] = a->results;
}

void mvk_op_stats_partial(mvk_cmd *c, const mvk_stats_args *a, uint32_t tok0, uint32_t tok1,
                          uint32_t logit_tok0)
{
    if (tok1 <= tok0)
        return;
    mvk_binding b[MVK_STATS_BINDINGS];
    fill(b, a);
    const uint32_t spec[MVK_STATS_NSPEC] = {MVK_STATS_WG, 0};
    const uint32_t per = MVK_MIN(c->ctx->info.max_workgroup_count[1], 65535u);
    const uint32_t blocks = (tok1 - tok0 + MVK_STATS_BLOCK - 1) / MVK_STATS_BLOCK;
    for (uint32_t b0 = 0; b0 < blocks; b0 += per) {
        mvk_stats_push p = {
            .T = tok1, .E = a->E, .assignments = a->assignments, .tok0 = tok0 + b0 * MVK_STATS_BLOCK,
            .logit_tok0 = logit_tok0,
        };
        mvk_cmd_dispatch(c, MVK_K_STATS, spec, MVK_STATS_NSPEC, b, MVK_STATS_BINDINGS, &p,
                         sizeof(p), a->E, MVK_MIN(per, blocks - b0), 1);
    }
}

void mvk_op_stats_final(mvk_cmd *c, const mvk_stats_args *a)
{
    mvk_binding b[MVK_STATS_BINDINGS];
    fill(b, a);
    const uint32_t spec[MVK_STATS_NSPEC] = {MVK_STATS_WG, 1};
    mvk_stats_push p = {.T = a->T, .E = a->E, .assignments = a->assignments};
    mvk_cmd_dispatch(c, MVK_K_STATS, spec, MVK_STATS_NSPEC, b, MVK_STATS_BINDINGS, &p, sizeof(p),
                     1, 1, 1);
}
