/*
 * The harness's runner (harness.h): a case on a backend of the table, and
 * the whole check of one seed (generate, run, reference, compare, and
 * optionally cross-check a second backend).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/harness.h"
#include "util/tool.h"

void mvkc_result_free(mvkc_result *r)
{
    if (!r)
        return;
    free(r->y);
    free(r->ids);
    free(r->weights);
    free(r->rows);
    free(r->tpe);
    free(r->tpe_read);
    memset(r, 0, sizeof *r);
}

moevk_status mvkc_result_alloc(const mvkc_case *c, mvkc_result *out)
{
    const moevk_layer_desc *d = &c->desc;
    size_t TH = (size_t)c->T * d->hidden, TK = (size_t)c->T * moevk_routing_slots(d);
    uint32_t E = d->num_experts;
    memset(out, 0, sizeof *out);
    out->y = malloc(sizeof(float) * (TH + 1));
    out->ids = malloc(sizeof(uint32_t) * (TK + 1));
    out->weights = malloc(sizeof(float) * (TK + 1));
    out->rows = malloc(sizeof(int32_t) * (TK + 1));
    out->tpe = malloc(sizeof(uint32_t) * (E + 1));
    out->tpe_read = malloc(sizeof(uint32_t) * (E + 1));
    if (!out->y || !out->ids || !out->weights || !out->rows || !out->tpe || !out->tpe_read) {
        mvkc_result_free(out);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (size_t i = 0; i < TH; i++)
        out->y[i] = NAN;
    for (size_t i = 0; i < TK; i++) {
        out->ids[i] = UINT32_MAX;
        out->weights[i] = NAN;
        out->rows[i] = -2;
    }
    for (uint32_t e = 0; e < E; e++)
        out->tpe[e] = out->tpe_read[e] = UINT32_MAX;
    moevk_routing_stats poison = {NULL, UINT64_MAX, -1.0, -1.0, -1.0};
    out->stats = poison;
    out->stats.tokens_per_expert = out->tpe;
    out->stats_read = poison;
    out->stats_read.tokens_per_expert = out->tpe_read;
    return MOEVK_SUCCESS;
}

moevk_status mvkc_target_open(mvkc_target *t, const mvk_backend *b, const mvk_backend_opts *opts,
                              mvk_backend_info *info, char *err, size_t n)
{
    mvk_backend_info scratch, *i = info ? info : &scratch;
    t->backend = b;
    t->dev = NULL;
    t->flags = 0;
    moevk_status st = b->open(opts, &t->dev, i, err, n);
    if (!st)
        t->flags = i->flags;
    return st;
}

void mvkc_target_close(mvkc_target *t)
{
    if (t && t->backend && t->dev)
        t->backend->close(t->dev);
    if (t)
        t->dev = NULL;
}

moevk_status mvkc_run(const mvkc_target *t, const mvkc_case *c, mvkc_result *out, char *what,
                      size_t n)
{
    const mvk_backend *b = t->backend;
    char err[512] = "";
    const char *step = "host allocation";
    void *layer = NULL;
    moevk_status st = mvkc_result_alloc(c, out);
    if (!st) {
        out->flags = b->flags | t->flags;
        step = "create";
        st = b->create(t->dev, &c->desc, NULL, &layer, err, sizeof err);
    }
    if (!st) {
        step = "forward";
        const mvk_backend_out o = {.y = out->y,
                                   .ids = out->ids,
                                   .weights = out->weights,
                                   .rows = out->rows,
                                   .stats = &out->stats,
                                   .stats_read = &out->stats_read,
                                   .pass_info = &out->pass};
        st = b->forward(layer, c->T, c->x, &o, err, sizeof err);
    }
    if (layer)
        b->destroy(layer);
    if (st && what && n)
        snprintf(what, n, "%s: %s: %s", step, moevk_status_string(st), err);
    return st;
}

/* ---- the whole check of one seed ------------------------------------------------ */

static uint32_t problems(const mvkc_target *t)
{
    return t && t->backend->problems ? t->backend->problems(t->dev) : 0;
}

/* The case fails: "WHO: WHY". */
static void set_reason(mvkc_check *k, const char *who, const char *why)
{
    k->pass = 0;
    snprintf(k->rep.reason, sizeof k->rep.reason, "%.100s: %.400s", who, why);
}

int mvkc_check_seed(const mvkc_target *t, const mvkc_target *against, uint64_t seed,
                    const mvkc_limits *lim, mvkc_check *k)
{
    memset(k, 0, sizeof *k);
    if (mvkc_case_random(seed, lim, &k->c)) {
        snprintf(k->rep.reason, sizeof k->rep.reason, "out of host memory building the case");
        return 0;
    }
    mvkc_case_describe(&k->c, k->desc, sizeof k->desc);
    const char *name = t->backend->name;
    const uint32_t msgs0 = problems(t) + problems(against);
    char what[512] = "";
    double t0 = mvk_now_ms();
    moevk_status st = mvkc_run(t, &k->c, &k->res, what, sizeof what);
    double t1 = mvk_now_ms();
    k->run_ms = t1 - t0;
    if (st)
        set_reason(k, name, what);
    else if (mvkc_reference(&k->c, &k->ref))
        set_reason(k, "reference", "out of host memory");
    else
        k->pass = mvkc_compare(&k->c, &k->ref, &k->res, &k->rep);
    if (k->pass && against) {
        const char *other = against->backend->name;
        char who[96];
        mvkc_report rep2;
        if (mvkc_run(against, &k->c, &k->other, what, sizeof what)) {
            set_reason(k, other, what);
        } else if (!mvkc_compare(&k->c, &k->ref, &k->other, &rep2)) {
            snprintf(who, sizeof who, "%.40s vs cpu", other);
            set_reason(k, who, rep2.reason);
        } else if (!mvkc_agree(&k->c, &k->ref, &k->res, &k->other, &k->cross_err, what,
                               sizeof what)) {
            snprintf(who, sizeof who, "%.40s vs %.40s", name, other);
            set_reason(k, who, what);
        }
    }
    const uint32_t msgs = problems(t) + problems(against) - msgs0;
    if (k->pass && msgs) {
        k->pass = 0;
        snprintf(k->rep.reason, sizeof k->rep.reason, "%u validation-layer message%s", msgs,
                 msgs == 1 ? "" : "s");
    }
    k->rep.pass = k->pass;
    k->ref_ms = mvk_now_ms() - t1;
    return k->pass;
}

void mvkc_check_free(mvkc_check *k)
{
    mvkc_result_free(&k->res);
    mvkc_result_free(&k->other);
    mvkc_ref_free(&k->ref);
    mvkc_case_free(&k->c);
}

/* Whether lim forces nothing but max_work and the routing mode (what moevk
 * check can say). */
static int only_max_work(const mvkc_limits *l)
{
    return !l || (!l->max_weights && !l->max_tokens && !l->max_experts && !l->tokens &&
                  !l->hidden && !l->ffn && !l->experts && !l->top_k &&
                  !l->activation && !l->weight_dtype && !l->router_dtype &&
                  l->capacity_factor == 0 && l->router_softcap == 0 && !l->no_input_norms &&
                  !l->num_shared &&
                  !l->scenarios_on &&
                  !l->scenarios_off);
}

int mvkc_repro(const mvkc_target *t, const mvkc_target *against, uint64_t seed,
               const mvkc_limits *lim, char *buf, size_t n)
{
    if (!only_max_work(lim)) {
        if (n)
            buf[0] = 0;
        return 0;
    }
    char work[48] = "", routing[48] = "";
    if (lim && lim->max_work)
        snprintf(work, sizeof work, " --max-work %" PRIu64, lim->max_work);
    if (lim && lim->routing)
        snprintf(routing, sizeof routing, " --routing %s",
                 mvkc_routing_name((moevk_routing)(lim->routing - 1)));
    snprintf(buf, n, "moevk check --backend %s --against %s --seed %" PRIu64 " --cases 1%s%s",
             t->backend->name, against ? against->backend->name : "cpu", seed, work, routing);
    return 1;
}
