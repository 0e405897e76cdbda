/*
 * moevk_layer_pass_info: the work a layer's last pass launched, worked out
 * on the host from the pass's geometry and its routing (ids and rows read
 * back from the workspace), with the same rules the GPU applied: the
 * kernel path of each expert of each expert chunk by its row count
 * (shaders/interface.h), and each path's tile geometry.
 */
#include <string.h>

#include "formats.h"
#include "interface.h"
#include "ops/ops.h"
#include "pass.h"
#include "ref/ref.h"

static uint64_t ceil_to(uint64_t v, uint64_t m)
{
    return (v + m - 1) / m * m;
}

/* One projection of `rows` rows of one expert on `path`: N outputs of K
 * inputs, `mats` weight matrices (2 for a gated up projection). */
static void account(moevk_pass_info *in, int stage, uint32_t path, uint64_t rows, uint64_t N,
                    uint64_t K, uint64_t mats, uint64_t matrix_bytes)
{
    const uint64_t h = mvk_path_height(path);
    const uint64_t tiles = (rows + h - 1) / h;
    in->macs_useful[stage] += (double)(rows * N * K * mats);
    if (path == MVK_PATH_SKINNY) {
        in->macs_launched[stage] += (double)(rows * N * K * mats);
    } else {
        in->macs_launched[stage] +=
            (double)(tiles * h * ceil_to(N, MVK_GEMM_BN) * ceil_to(K, 16) * mats);
    }
    /* every row tile reads the whole matrix once (each of its column
     * workgroups its own columns) */
    in->weight_bytes_fetched[stage] += (double)(tiles * matrix_bytes * mats);
}

static uint32_t path_of(uint32_t force, uint64_t rows)
{
    if (force)
        return force - 1;
    if (rows <= MVK_SKINNY_ROWS)
        return MVK_PATH_SKINNY;
    return rows <= MVK_SMALL_TILE_MAX_ROWS ? MVK_PATH_SMALL : MVK_PATH_LARGE;
}

static moevk_status pass_info(moevk_layer *L, moevk_pass_info *out)
{
    moevk_context *ctx = L->ctx;
    const moevk_workspace *ws = L->ws;
    if (!out)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "info is NULL");
    if (ws->last_layer != L)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "the layer's workspace holds no pass of this layer: it has not run, or "
                        "another layer ran through the same workspace since");
    const moevk_layer_desc *d = &L->desc;
    const uint32_t T = ws->last_tokens, K = moevk_routing_slots(d), E = d->num_experts;
    const uint64_t H = d->hidden, F = d->ffn, TK = (uint64_t)T * K;
    uint32_t *ids = mvk_alloc(ctx, TK * 4);
    int32_t *rows = mvk_alloc(ctx, TK * 4);
    uint8_t *seen = mvk_alloc(ctx, E);
    uint32_t *count = mvk_alloc(ctx, (size_t)E * 4);
    moevk_status st = MOEVK_SUCCESS;
    if (!ids || !rows || !seen || !count)
        st = mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "pass info");
    if (!st)
        st = moevk_buffer_download(ws->s[MVK_WS_IDS], 0, ids, TK * 4);
    if (!st)
        st = moevk_buffer_download(ws->s[MVK_WS_ROW_OF], 0, rows, TK * 4);
    if (st)
        goto done;

    moevk_pass_info in;
    memset(&in, 0, sizeof in);
    in.tokens = T;
    in.route_chunks = L->last_route_chunks;
    in.expert_chunks = L->last_expert_chunks;
    in.dispatches = L->last_dispatches;
    in.barriers = L->last_barriers;
    const uint32_t force = L->last_force_path;
    const int gated = L->gated;
    const uint64_t up_bytes = F * mvk_format_row_bytes(d->experts.gate_up_dtype, H);
    const uint64_t down_bytes = H * mvk_format_row_bytes(d->experts.down_dtype, F);

    /* router: T x E x H; a fused pass reads the router once per token, the
     * router kernel once per 4 tokens */
    const uint64_t router_bytes = E * mvk_format_row_bytes(d->router_dtype, H);
    in.macs_useful[MOEVK_STAGE_ROUTER] = in.macs_launched[MOEVK_STAGE_ROUTER] =
        (double)((uint64_t)T * E * H);
    in.weight_bytes_needed[MOEVK_STAGE_ROUTER] = (double)router_bytes;
    in.weight_bytes_fetched[MOEVK_STAGE_ROUTER] =
        (double)router_bytes *
        (double)(L->last_fused_route ? T : (T + MVK_ROUTER_TOKENS - 1) / MVK_ROUTER_TOKENS);

    /* routed experts, chunk by chunk, from the admitted assignments */
    const uint32_t tc = L->last_expert_chunk_tokens ? L->last_expert_chunk_tokens : T;
    uint64_t tiles[MVK_PATHS] = {0};
    for (uint32_t t0 = 0; t0 < T; t0 += tc) {
        const uint32_t t1 = t0 + tc < T ? t0 + tc : T;
        memset(count, 0, (size_t)E * 4);
        for (uint64_t a = (uint64_t)t0 * K; a < (uint64_t)t1 * K; a++)
            if (rows[a] >= 0 && ids[a] < moevk_ref_ffn_experts(d)) /* identity: no MACs */
                count[ids[a]]++;
        for (uint32_t e = 0; e < E; e++) {
            if (!count[e])
                continue;
            const uint32_t path = path_of(force, count[e]);
            in.experts_per_path[path]++;
            tiles[path] += (count[e] + mvk_path_height(path) - 1) / mvk_path_height(path);
            seen[e] = 1;
            account(&in, MOEVK_STAGE_EXPERTS_UP, path, count[e], F, H, gated ? 2 : 1, up_bytes);
            account(&in, MOEVK_STAGE_EXPERTS_DOWN, path, count[e], H, F, 1, down_bytes);
        }
    }
    /* The GPU's own schedule (one expert chunk) must be what this counted. */
    if (L->last_expert_chunks == 1) {
        uint32_t gpu[MVK_PATHS];
        if ((st = moevk_buffer_download(ws->s[MVK_WS_META], 4ull * MVK_META_TILES(E, 0), gpu,
                                        sizeof(gpu))))
            goto done;
        for (uint32_t q = 0; q < MVK_PATHS; q++)
            if (gpu[q] != tiles[q]) {
                st = mvk_fail(ctx, MOEVK_ERROR_INTERNAL,
                              "pass info: path %u has %u row tiles on the GPU, %llu here", q,
                              gpu[q], (unsigned long long)tiles[q]);
                goto done;
            }
    }
    for (uint32_t e = 0; e < E; e++)
        if (seen[e]) {
            in.weight_bytes_needed[MOEVK_STAGE_EXPERTS_UP] += (double)(up_bytes * (gated ? 2 : 1));
            in.weight_bytes_needed[MOEVK_STAGE_EXPERTS_DOWN] += (double)down_bytes;
        }

    /* shared experts: dense over each chunk's tokens */
    if (d->num_shared) {
        const uint64_t FS = d->shared_ffn;
        const uint64_t sup = FS * mvk_format_row_bytes(d->shared.gate_up_dtype, H);
        const uint64_t sdown = H * mvk_format_row_bytes(d->shared.down_dtype, FS);
        for (uint32_t t0 = 0; t0 < T; t0 += tc) {
            const uint32_t n = (t0 + tc < T ? t0 + tc : T) - t0;
            const uint32_t path =
                force ? force - 1 : n <= MVK_SKINNY_ROWS ? MVK_PATH_SKINNY : MVK_PATH_LARGE;
            for (uint32_t s = 0; s < d->num_shared; s++) {
                account(&in, MOEVK_STAGE_SHARED, path, n, FS, H, gated ? 2 : 1, sup);
                account(&in, MOEVK_STAGE_SHARED, path, n, H, FS, 1, sdown);
            }
        }
        in.weight_bytes_needed[MOEVK_STAGE_SHARED] =
            (double)(d->num_shared * (sup * (gated ? 2 : 1) + sdown));
    }
    *out = in;
done:
    mvk_free(ctx, ids);
    mvk_free(ctx, rows);
    mvk_free(ctx, seen);
    mvk_free(ctx, count);
    return st;
}

MVK_PUBLIC_CTX(moevk_layer_pass_info, (moevk_layer *L, moevk_pass_info *info),
               L ? L->ctx : NULL, pass_info(L, info))
