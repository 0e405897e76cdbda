/*
 * The device cache of hot routed experts (src/cache.h; contract in
 * moevk.h "Expert weights under a budget").
 *
 * Policy: each pass the cache observes, score[e] = score[e] * 2^(-1 /
 * MOEVK_CACHE_HALF_LIFE) + rows routed to e. At the start of each pass,
 * first the caller's requests (pinned experts not resident, then prefetch
 * requests in order) take slots; then, unless the cache is static, host
 * experts in decreasing score replace resident ones in increasing score
 * (never a pinned one, nor one placed in this pass) while the newcomer's
 * score exceeds MOEVK_CACHE_HYSTERESIS times the resident's plus one row,
 * at most max(1, S / 4) a pass. A free slot takes any expert with a score.
 * Ties go to the lower expert index, so a given history gives one
 * residency.
 *
 * Timeline of a promotion decided at the start of pass N: the victim reads
 * from host memory from pass N on; the copy into its slot is recorded after
 * pass N's last expert stage (nothing later in pass N waits for it; pass
 * N + 1's first barrier does); the newcomer reads from the slot from pass
 * N + 1 on, whose table update says so.
 */
#include <math.h>
#include <string.h>

#include "cache.h"
#include "formats.h"
#include "interface.h"
#include "ref/ref.h"

static uint64_t matrix_bytes(const moevk_layer *L, int m)
{
    const mvk_expert_set *s = &L->routed;
    const uint32_t H = L->desc.hidden;
    return m < 2 ? (uint64_t)s->ffn * mvk_format_row_bytes(s->dtype[0], H)
                 : (uint64_t)H * mvk_format_row_bytes(s->dtype[1], s->ffn);
}

/* The device chunk holding slot v, and v's place in it. */
static uint32_t slot_chunk(const moevk_layer *L, uint32_t v, uint32_t *local)
{
    const mvk_cache *k = L->cache;
    for (uint32_t c = 0; c < k->dev_chunks; c++) {
        const mvk_chunk *ch = &L->routed.chunks[c];
        if (v >= ch->first && v - ch->first < ch->count) {
            *local = v - ch->first;
            return c;
        }
    }
    *local = 0;
    return 0; /* not reached: slots are covered by the device chunks */
}

/* The host chunk holding expert e, and e's place in it. */
static uint32_t host_chunk(const moevk_layer *L, uint32_t e, uint32_t *local)
{
    const mvk_expert_set *s = &L->routed;
    for (uint32_t c = L->cache->dev_chunks; c < s->nchunks; c++)
        if (e >= s->chunks[c].first && e - s->chunks[c].first < s->chunks[c].count) {
            *local = e - s->chunks[c].first;
            return c;
        }
    *local = 0;
    return L->cache->dev_chunks;
}

/* The tables' entries for expert e, from where it is now. */
static void table_set(moevk_layer *L, uint32_t e)
{
    mvk_cache *k = L->cache;
    const uint32_t E = k->E, n = L->routed.nchunks;
    for (uint32_t c = 0; c < n; c++)
        k->table[(size_t)c * E + e] = MVK_NO_SLOT;
    uint32_t local;
    if (k->expert_slot[e] != MVK_NO_SLOT) {
        const uint32_t c = slot_chunk(L, k->expert_slot[e], &local);
        k->table[(size_t)c * E + e] = local;
    } else {
        const uint32_t c = host_chunk(L, e, &local);
        k->table[(size_t)c * E + e] = local;
    }
    k->table_dirty = true;
}

moevk_status mvk_cache_create(moevk_layer *L, uint32_t slots, uint32_t dev_chunks)
{
    moevk_context *ctx = L->ctx;
    const uint32_t E = moevk_ref_ffn_experts(&L->desc); /* identity experts have no weights */
    mvk_cache *k = mvk_alloc(ctx, sizeof(*k));
    if (!k)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "expert cache");
    L->cache = k;
    k->E = E;
    k->slots = slots;
    k->dev_chunks = dev_chunks;
    k->is_static = (L->desc.flags & MOEVK_LAYER_CACHE_STATIC) != 0;
    k->expert_bytes = (L->gated ? matrix_bytes(L, 0) : 0) + matrix_bytes(L, 1) + matrix_bytes(L, 2);
    const size_t tw = (size_t)L->routed.nchunks * E;
    k->slot_expert = mvk_alloc(ctx, sizeof(uint32_t) * (slots ? slots : 1));
    k->slot_pending = mvk_alloc(ctx, slots ? slots : 1);
    k->expert_slot = mvk_alloc(ctx, sizeof(uint32_t) * E);
    k->requests = mvk_alloc(ctx, sizeof(uint32_t) * E);
    k->pinned = mvk_alloc(ctx, E);
    k->resident_rec = mvk_alloc(ctx, E);
    k->score = mvk_alloc(ctx, sizeof(double) * E);
    k->table = mvk_alloc(ctx, sizeof(uint32_t) * tw);
    if (!k->slot_expert || !k->slot_pending || !k->expert_slot || !k->requests || !k->pinned ||
        !k->resident_rec || !k->score || !k->table)
        return mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "expert cache tables");
    for (uint32_t e = 0; e < E; e++)
        k->expert_slot[e] = e < slots ? e : MVK_NO_SLOT;
    for (uint32_t v = 0; v < slots; v++)
        k->slot_expert[v] = v;
    for (uint32_t e = 0; e < E; e++)
        table_set(L, e);
    moevk_status st = mvk_host_buffer_create(ctx, (uint64_t)E * 4, &k->counts);
    if (st)
        return st;
    st = moevk_buffer_create(ctx, tw * 4, &L->routed.table);
    if (!st)
        st = moevk_buffer_upload(L->routed.table, 0, k->table, tw * 4);
    if (st)
        return st;
    L->weight_bytes += L->routed.table->alloc_bytes;
    k->table_dirty = false;
    k->stats.device_slots = slots;
    return MOEVK_SUCCESS;
}

void mvk_cache_destroy(moevk_layer *L)
{
    mvk_cache *k = L->cache;
    if (!k)
        return;
    moevk_context *ctx = L->ctx;
    moevk_buffer_destroy(k->counts);
    mvk_free(ctx, k->slot_expert);
    mvk_free(ctx, k->slot_pending);
    mvk_free(ctx, k->expert_slot);
    mvk_free(ctx, k->requests);
    mvk_free(ctx, k->pinned);
    mvk_free(ctx, k->resident_rec);
    mvk_free(ctx, k->score);
    mvk_free(ctx, k->table);
    mvk_free(ctx, k);
    L->cache = NULL;
}

/* ---- deciding ------------------------------------------------------------ */

/* The slot to give a newcomer: a free one, else the lowest-scoring
 * resident that is neither pinned nor placed in this pass (ties: the
 * higher expert index goes first). MVK_NO_SLOT when every slot is taken
 * by such experts. */
static uint32_t victim_slot(const mvk_cache *k, const uint8_t *placed)
{
    uint32_t best = MVK_NO_SLOT;
    for (uint32_t v = 0; v < k->slots; v++) {
        const uint32_t u = k->slot_expert[v];
        if (u == MVK_NO_SLOT)
            return v;
        if (k->pinned[u] || placed[u])
            continue;
        if (best == MVK_NO_SLOT) {
            best = v;
            continue;
        }
        const uint32_t b = k->slot_expert[best];
        if (k->score[u] < k->score[b] || (k->score[u] == k->score[b] && u > b))
            best = v;
    }
    return best;
}

/* Give slot v to expert e: its occupant goes back to host memory now; e
 * serves from the slot once the copy recorded after this pass's expert
 * stage has run (the next pass). */
static void promote(moevk_layer *L, uint32_t e, uint32_t v, uint8_t *placed)
{
    mvk_cache *k = L->cache;
    const uint32_t u = k->slot_expert[v];
    if (u != MVK_NO_SLOT) {
        k->expert_slot[u] = MVK_NO_SLOT;
        table_set(L, u);
        k->stats.evictions++;
    }
    k->slot_expert[v] = e;
    k->slot_pending[v] = 1;
    placed[e] = 1;
    k->stats.promotions++;
    k->stats.bytes_moved += k->expert_bytes;
}

/* Host experts by decreasing score (ties: lower index first). */
static int by_score(const mvk_cache *k, uint32_t a, uint32_t b)
{
    if (k->score[a] != k->score[b])
        return k->score[a] > k->score[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

void mvk_cache_record(moevk_layer *L, mvk_cmd *c)
{
    mvk_cache *k = L->cache;
    if (!k || c->status)
        return;
    moevk_context *ctx = L->ctx;
    const uint32_t E = k->E;
    uint8_t *placed = mvk_alloc(ctx, E);
    uint32_t *order = mvk_alloc(ctx, sizeof(uint32_t) * E);
    if (!placed || !order) {
        mvk_free(ctx, placed);
        mvk_free(ctx, order);
        c->status = mvk_fail(ctx, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "expert cache plan");
        return;
    }
    /* the copies of the last pass have run (this pass's first barrier
     * orders it after them): their experts serve from the slots */
    for (uint32_t v = 0; v < k->slots; v++)
        if (k->slot_pending[v]) {
            k->slot_pending[v] = 0;
            k->expert_slot[k->slot_expert[v]] = v;
            table_set(L, k->slot_expert[v]);
        }
    k->copies_recorded = false;
    /* the caller's requests: pinned experts, then prefetches */
    for (uint32_t e = 0; e < E; e++)
        if (k->pinned[e] && k->expert_slot[e] == MVK_NO_SLOT) {
            const uint32_t v = victim_slot(k, placed);
            if (v != MVK_NO_SLOT)
                promote(L, e, v, placed);
        }
    for (uint32_t i = 0; i < k->nrequests; i++) {
        const uint32_t e = k->requests[i];
        if (k->expert_slot[e] != MVK_NO_SLOT || placed[e]) {
            placed[e] = 1; /* stays (or is on its way) */
            continue;
        }
        const uint32_t v = victim_slot(k, placed);
        if (v != MVK_NO_SLOT)
            promote(L, e, v, placed);
    }
    k->nrequests = 0;
    /* the policy */
    if (!k->is_static) {
        uint32_t n = 0;
        for (uint32_t e = 0; e < E; e++)
            if (k->expert_slot[e] == MVK_NO_SLOT && !placed[e] && k->score[e] > 0)
                order[n++] = e;
        for (uint32_t i = 1; i < n; i++) { /* insertion sort: E <= 1024 */
            const uint32_t x = order[i];
            uint32_t j = i;
            for (; j > 0 && by_score(k, x, order[j - 1]) < 0; j--)
                order[j] = order[j - 1];
            order[j] = x;
        }
        const uint32_t cap = MVK_MAX(1u, k->slots / 4u);
        for (uint32_t i = 0, done = 0; i < n && done < cap; i++) {
            const uint32_t e = order[i], v = victim_slot(k, placed);
            if (v == MVK_NO_SLOT)
                break;
            const uint32_t u = k->slot_expert[v];
            if (u != MVK_NO_SLOT && !(k->score[e] > k->score[u] * MOEVK_CACHE_HYSTERESIS + 1.0))
                break; /* later newcomers score less, later victims more */
            promote(L, e, v, placed);
            done++;
        }
    }
    if (k->table_dirty) {
        /* read by this pass's expert stage, after the one barrier that
         * waits for transfers (mvk_cmd_barrier_transfers) */
        mvk_cmd_update(c, L->routed.table->buffer, 0, k->table,
                       (VkDeviceSize)L->routed.nchunks * E * 4);
        c->transfers_pending = true;
        k->table_dirty = false;
    }
    uint32_t resident = 0;
    for (uint32_t e = 0; e < E; e++) {
        k->resident_rec[e] = k->expert_slot[e] != MVK_NO_SLOT;
        resident += k->resident_rec[e];
    }
    k->stats.resident_experts = resident;
    k->recorded++;
    mvk_free(ctx, placed);
    mvk_free(ctx, order);
}

void mvk_cache_record_copies(moevk_layer *L, mvk_cmd *c)
{
    mvk_cache *k = L->cache;
    if (!k || c->status || k->copies_recorded)
        return;
    k->copies_recorded = true;
    for (uint32_t v = 0; v < k->slots; v++) {
        if (!k->slot_pending[v])
            continue;
        const uint32_t e = k->slot_expert[v];
        uint32_t hl, dl;
        const mvk_chunk *src = &L->routed.chunks[host_chunk(L, e, &hl)];
        const mvk_chunk *dst = &L->routed.chunks[slot_chunk(L, v, &dl)];
        for (int m = L->gated ? 0 : 1; m < 3; m++) {
            const uint64_t b = matrix_bytes(L, m);
            mvk_cmd_copy(c, src->w[m]->buffer, src->off[m] + hl * b, dst->w[m]->buffer,
                         dl * b, b);
        }
        /* the rest of the pass does not wait for them; the next pass's
         * first barrier does */
        c->transfers_pending = true;
    }
}

void mvk_cache_record_counts(moevk_layer *L, mvk_cmd *c, VkBuffer meta, VkDeviceSize offset)
{
    mvk_cache *k = L->cache;
    if (c->status)
        return;
    const PFN_vkCmdPipelineBarrier barrier = c->ctx->vk.vkCmdPipelineBarrier;
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT};
    barrier(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1,
            &mb, 0, NULL, 0, NULL);
    mvk_cmd_copy(c, meta, offset, k->counts->buffer, 0, (VkDeviceSize)k->E * 4);
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    barrier(c->cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL,
            0, NULL);
    c->barriers += 2;
}

const uint32_t *mvk_cache_host_counts(const moevk_layer *L)
{
    return L->cache ? (const uint32_t *)L->cache->counts->map : NULL;
}

void mvk_cache_pass_failed(moevk_layer *L)
{
    mvk_cache *k = L->cache;
    if (!k)
        return;
    /* this pass's copies may not have run: their slots hold nothing known.
     * (Slots that took effect in it were copied by the pass before.) */
    for (uint32_t v = 0; v < k->slots; v++)
        if (k->slot_pending[v]) {
            k->slot_pending[v] = 0;
            k->slot_expert[v] = MVK_NO_SLOT;
        }
    k->table_dirty = true; /* the table update may not have run either */
    k->observed = k->recorded;
}

void mvk_cache_observe(moevk_layer *L, const uint32_t *counts)
{
    mvk_cache *k = L->cache;
    if (!k || k->observed == k->recorded)
        return;
    k->observed = k->recorded;
    const double decay = exp2(-1.0 / MOEVK_CACHE_HALF_LIFE);
    for (uint32_t e = 0; e < k->E; e++) {
        k->score[e] = k->score[e] * decay + counts[e];
        if (k->resident_rec[e])
            k->stats.hits += counts[e];
        else
            k->stats.misses += counts[e];
    }
    k->stats.passes++;
}

/* ---- public ------------------------------------------------------------- */

static moevk_status cache_stats(const moevk_layer *L, moevk_cache_stats *s)
{
    if (!s)
        return mvk_fail(L->ctx, MOEVK_ERROR_INVALID_ARGUMENT, "stats is NULL");
    if (L->cache) {
        *s = L->cache->stats;
    } else {
        memset(s, 0, sizeof(*s));
        s->device_slots = s->resident_experts = moevk_ref_ffn_experts(&L->desc);
    }
    s->device_weight_bytes = L->weight_bytes;
    s->host_weight_bytes = L->host_weight_bytes;
    s->host_imported_bytes = L->host_imported_bytes;
    s->expert_device_bytes = L->slot_bytes;
    return MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_layer_cache_stats, (const moevk_layer *L, moevk_cache_stats *s),
               L ? L->ctx : NULL, cache_stats(L, s))

static moevk_status cache_resident(const moevk_layer *L, uint8_t *resident)
{
    if (!resident)
        return mvk_fail(L->ctx, MOEVK_ERROR_INVALID_ARGUMENT, "resident is NULL");
    /* identity experts (no weights) count as resident */
    for (uint32_t e = 0; e < L->desc.num_experts; e++)
        resident[e] = !L->cache || e >= L->cache->E || L->cache->expert_slot[e] != MVK_NO_SLOT;
    return MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_layer_cache_resident, (const moevk_layer *L, uint8_t *resident),
               L ? L->ctx : NULL, cache_resident(L, resident))

static moevk_status cache_pin(moevk_layer *L, uint32_t expert, int pin)
{
    moevk_context *ctx = L->ctx;
    if (expert >= moevk_ref_ffn_experts(&L->desc))
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                        "expert = %u is not an FFN expert (0..%u)", expert,
                        moevk_ref_ffn_experts(&L->desc) - 1);
    mvk_cache *k = L->cache;
    if (!k)
        return MOEVK_SUCCESS; /* every expert is on the device */
    if (pin && !k->pinned[expert]) {
        uint32_t n = 0;
        for (uint32_t e = 0; e < k->E; e++)
            n += k->pinned[e];
        if (n >= k->slots)
            return mvk_fail(ctx, MOEVK_ERROR_LIMIT_EXCEEDED,
                            "pinning expert %u: all %u device slots are pinned already", expert,
                            k->slots);
    }
    k->pinned[expert] = pin != 0;
    return MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_layer_cache_pin, (moevk_layer *L, uint32_t expert, int pin),
               L ? L->ctx : NULL, cache_pin(L, expert, pin))

static moevk_status cache_prefetch(moevk_layer *L, const uint32_t *experts, uint32_t count)
{
    moevk_context *ctx = L->ctx;
    if (count && !experts)
        return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT, "experts is NULL");
    for (uint32_t i = 0; i < count; i++)
        if (experts[i] >= moevk_ref_ffn_experts(&L->desc))
            return mvk_fail(ctx, MOEVK_ERROR_INVALID_ARGUMENT,
                            "experts[%u] = %u is not an FFN expert (0..%u)", i, experts[i],
                            moevk_ref_ffn_experts(&L->desc) - 1);
    mvk_cache *k = L->cache;
    if (!k)
        return MOEVK_SUCCESS;
    for (uint32_t i = 0; i < count && k->nrequests < k->slots; i++) {
        bool dup = false;
        for (uint32_t j = 0; j < k->nrequests && !dup; j++)
            dup = k->requests[j] == experts[i];
        if (!dup)
            k->requests[k->nrequests++] = experts[i];
    }
    return MOEVK_SUCCESS;
}

MVK_PUBLIC_CTX(moevk_layer_cache_prefetch,
               (moevk_layer *L, const uint32_t *experts, uint32_t count), L ? L->ctx : NULL,
               cache_prefetch(L, experts, count))
