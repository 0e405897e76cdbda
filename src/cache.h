/*
 * The device cache of a layer's routed experts under a device-memory
 * budget (MOEVK_LAYER_VRAM_BUDGET; the contract is in moevk.h, the design
 * in docs/architecture.md "Experts under a budget").
 *
 * The routed expert set of such a layer has chunks of two kinds (src/layer.h
 * mvk_expert_set): device chunks, whose buffers hold S slots in all, and
 * host chunks, consecutive experts in host-visible memory, all E of them.
 * A slot table per chunk ([nchunks, E] u32 on the device, mirrored here)
 * says where each expert is: its slot in the one device chunk that holds
 * it, and MVK_NO_SLOT in the host chunks; or its place in its host chunk
 * when no device slot holds it. The expert kernels look the slot up
 * (shaders/interface.h MVK_GEMM_BIND_SLOTS), so one dispatch per chunk
 * reads every expert from wherever it is, with the same bits.
 */
#ifndef MOEVK_CACHE_H
#define MOEVK_CACHE_H

#include "layer.h"

struct mvk_cache {
    uint32_t E, slots;      /* experts, device slots (0 < slots < E) */
    uint32_t dev_chunks;    /* routed.chunks[0, dev_chunks) hold the slots */
    uint64_t expert_bytes;  /* one expert's matrices (gate, up, down) */
    uint32_t *slot_expert;  /* [slots]: its expert, MVK_NO_SLOT when free */
    uint32_t *expert_slot;  /* [E]: its slot, MVK_NO_SLOT when in host memory */
    uint8_t *pinned;        /* [E] */
    uint32_t *requests;     /* [E] prefetch requests, oldest first */
    uint32_t nrequests;
    double *score;          /* [E] decayed routed rows */
    uint32_t *table;        /* [nchunks, E] the slot tables, as on the device */
    bool table_dirty;       /* the device's tables differ from `table` */
    bool is_static;         /* MOEVK_LAYER_CACHE_STATIC */
    /* slot_pending[v]: slot_expert[v]'s copy is recorded in the last pass
     * (after its expert stage); the expert serves from the slot from the
     * next pass on, when the tables say so */
    uint8_t *slot_pending;  /* [slots] */
    bool copies_recorded;   /* this pass's copies are in its command buffer */
    uint8_t *resident_rec;  /* [E] residency of the last recorded pass */
    uint64_t recorded, observed; /* passes recorded / the last one observed */
    moevk_buffer *counts;   /* [E] u32, host-visible: a synchronous pass's counts */
    moevk_cache_stats stats;
};

/* The cache of L (whose routed set already has its device and host
 * chunks): tables, with experts 0 .. S-1 resident, as create uploaded. */
moevk_status mvk_cache_create(moevk_layer *L, uint32_t slots, uint32_t dev_chunks);
void mvk_cache_destroy(moevk_layer *L);
/* At the start of a pass (after its first barrier): the slots whose copies
 * the last pass recorded take effect; promotions are decided from the
 * scores and requests (their victims go back to host memory now, their
 * slots wait for the copies); the tables' update is recorded. */
void mvk_cache_record(moevk_layer *L, mvk_cmd *c);
/* After the pass's (last) expert stage: the copies of this pass's
 * promotions, which nothing in this pass waits for. */
void mvk_cache_record_copies(moevk_layer *L, mvk_cmd *c);
/* The pass just recorded was not submitted or failed: its promotions are
 * forgotten (their slots are free again) and the tables rewritten. */
void mvk_cache_pass_failed(moevk_layer *L);
/* counts [E]: the admitted rows per expert of the last recorded pass. */
void mvk_cache_observe(moevk_layer *L, const uint32_t *counts);
/* At the end of a synchronous pass: its counts (E words at `offset` of
 * `meta`) copied into the cache's host buffer, made visible to the host;
 * read with mvk_cache_host_counts after the pass's fence. */
void mvk_cache_record_counts(moevk_layer *L, mvk_cmd *c, VkBuffer meta, VkDeviceSize offset);
const uint32_t *mvk_cache_host_counts(const moevk_layer *L);

#endif
