/*
 * The harness's reference (harness.h): the CPU reference of a case, with
 * its near-tie flags and the admission of its ids.
 */
#include <stdlib.h>
#include <string.h>

#include "harness/harness.h"
#include "ref/ref.h"

void mvkc_ref_free(mvkc_ref *r)
{
    if (!r)
        return;
    mvkc_result_free(&r->out);
    free(r->near_tie);
    free(r->counts);
    free(r->offsets);
    memset(r, 0, sizeof *r);
}

moevk_status mvkc_reference(const mvkc_case *c, mvkc_ref *ref)
{
    const uint32_t E = c->desc.num_experts;
    memset(ref, 0, sizeof *ref);
    moevk_status st = mvkc_result_alloc(c, &ref->out);
    ref->near_tie = malloc(c->T + 1);
    ref->counts = malloc(sizeof(uint32_t) * (E + 1));
    ref->offsets = malloc(sizeof(uint32_t) * (E + 2));
    if (!st && (!ref->near_tie || !ref->counts || !ref->offsets))
        st = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    mvkc_result *o = &ref->out;
    if (!st)
        st = moevk_ref_layer_forward(&c->desc, c->T, c->x, o->y, o->ids, o->weights,
                                     ref->near_tie, &o->stats);
    if (st) {
        mvkc_ref_free(ref);
        return st;
    }
    o->flags = MVK_BACKEND_REFERENCE;
    ref->dropped = moevk_ref_permute(&c->desc, c->T, o->ids, ref->counts, ref->offsets, o->rows);
    memcpy(o->tpe_read, o->tpe, sizeof(uint32_t) * E);
    o->stats_read = o->stats;
    o->stats_read.tokens_per_expert = o->tpe_read;
    return MOEVK_SUCCESS;
}
