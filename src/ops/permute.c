/*
 * Permute op: counting tiles, per-expert prefix with capacity, offsets, the
 * GEMM tile schedule and indirect arguments, then each assignment's row.
 */
#include "ops.h"
#include "kernels.h"

_Static_assert(MOEVK_MAX_EXPERTS <= MVK_PERMUTE_MAX_EXPERTS, "permute.comp holds every expert");

void mvk_permute_geometry(uint64_t A, uint32_t E, uint64_t max_bytes, uint32_t *tile_len,
                          uint32_t *ntiles)
{
    uint64_t len = MVK_PERMUTE_WG;
    uint64_t n = (A + len - 1) / len;
    /* longer tiles until the [ntiles, E] count arrays fit one buffer */
    while (n > 1 && n * E * 4 > max_bytes) {
        len *= 2;
        n = (A + len - 1) / len;
    }
    *tile_len = (uint32_t)len;
    *ntiles = (uint32_t)(n ? n : 1);
}

void mvk_op_permute(mvk_cmd *c, const mvk_permute_args *a)
{
    const uint64_t A = (uint64_t)a->T * a->K;
    uint32_t tile_len, ntiles;
    mvk_permute_geometry(A, a->E, mvk_max_range(c->ctx), &tile_len, &ntiles);
    const uint32_t sc = mvk_path_columns(MVK_PATH_SKINNY), tc = mvk_path_columns(MVK_PATH_LARGE);
    mvk_permute_push p = {
        .T = a->T, .K = a->K, .E = a->E, .capacity = a->capacity, .ntiles = ntiles,
        .tile_len = tile_len, .masked = a->masked, .tok0 = a->tok0,
        .skinny_up = (a->ffn + sc - 1) / sc, .skinny_down = (a->hidden + sc - 1) / sc,
        .tiled_up = (a->ffn + tc - 1) / tc, .tiled_down = (a->hidden + tc - 1) / tc,
        .force_path = c->ctx->testing_force_path, .n_ffn = a->n_ffn ? a->n_ffn : a->E,
    };
    mvk_binding b[MVK_PERMUTE_BINDINGS];
    b[MVK_PERMUTE_BIND_IDS] = a->ids;
    b[MVK_PERMUTE_BIND_TILE_RANK] = a->tile_rank;
    b[MVK_PERMUTE_BIND_TILE_COUNT] = a->tile_count;
    b[MVK_PERMUTE_BIND_TILE_OFF] = a->tile_off;
    b[MVK_PERMUTE_BIND_META] = a->meta;
    b[MVK_PERMUTE_BIND_SCHEDULE] = a->schedule;
    b[MVK_PERMUTE_BIND_ROW_OF] = a->row_of;
    b[MVK_PERMUTE_BIND_ROW_TOKEN] = a->row_token;
    b[MVK_PERMUTE_BIND_MASK] = a->mask;
    if (A <= MVK_PERMUTE_WG) { /* one workgroup runs the three passes */
        const uint32_t spec[MVK_PERMUTE_NSPEC] = {MVK_PERMUTE_WG, 3};
        mvk_cmd_dispatch(c, MVK_K_PERMUTE, spec, MVK_PERMUTE_NSPEC, b, MVK_PERMUTE_BINDINGS, &p,
                         sizeof(p), 1, 1, 1);
        mvk_cmd_barrier(c);
        return;
    }
    const uint64_t groups[3] = {ntiles, 1, (A + MVK_PERMUTE_WG - 1) / MVK_PERMUTE_WG};
    for (uint32_t pass = 0; pass < 3; pass++) {
        const uint32_t spec[MVK_PERMUTE_NSPEC] = {MVK_PERMUTE_WG, pass};
        uint32_t gx, gy;
        mvk_grid_1d(c->ctx, groups[pass], &gx, &gy);
        mvk_cmd_dispatch(c, MVK_K_PERMUTE, spec, MVK_PERMUTE_NSPEC, b, MVK_PERMUTE_BINDINGS, &p,
                         sizeof(p), gx, gy, 1);
        mvk_cmd_barrier(c);
    }
}
