/*
 * The thread transport of expert parallelism (moevk.h, moevk_thread_group):
 * R threads of one process, one rank each. A collective is two timed
 * barriers: every rank publishes its buffers in its slot, waits for all,
 * copies what is addressed to it out of the others' buffers, and waits
 * again so that no rank reuses its buffers while another still reads them.
 * A wait that passes the group's timeout breaks the group: every waiting
 * and every later call returns MOEVK_ERROR_TIMEOUT, so a rank that never
 * arrives makes the others fail instead of hang.
 *
 * The group has no context, so it allocates with calloc/free; nothing in it
 * is global.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moevk/moevk.h"

typedef struct tg_slot {
    const void *send;
    const uint64_t *send_bytes; /* alltoallv: [size]; allgather: &bytes */
    uint64_t bytes;
    moevk_status status;
} tg_slot;

typedef struct tg_rank {
    moevk_thread_group *g;
    uint32_t rank;
} tg_rank;

struct moevk_thread_group {
    uint32_t size, timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t arrived;
    uint64_t generation;
    bool broken;
    tg_slot *slots;  /* [size] */
    tg_rank *ranks;  /* [size]: the user pointer of each rank's transport */
};

static void tg_err(char *err, size_t n, const char *fmt, ...)
{
    if (!err || !n)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

/* All ranks here, or the timeout (the group is then broken for good). */
static moevk_status tg_barrier(moevk_thread_group *g, uint32_t rank, const char *what, char *err,
                               size_t n)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += g->timeout_ms / 1000;
    dl.tv_nsec += (long)(g->timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g->mu);
    moevk_status st = MOEVK_SUCCESS;
    if (g->broken) {
        st = MOEVK_ERROR_TIMEOUT;
    } else if (++g->arrived == g->size) {
        g->arrived = 0;
        g->generation++;
        pthread_cond_broadcast(&g->cv);
    } else {
        const uint64_t gen = g->generation;
        while (!g->broken && g->generation == gen) {
            int r = pthread_cond_timedwait(&g->cv, &g->mu, &dl);
            if (r == ETIMEDOUT && g->generation == gen) {
                g->broken = true;
                pthread_cond_broadcast(&g->cv);
            }
        }
        if (g->generation == gen)
            st = MOEVK_ERROR_TIMEOUT;
    }
    pthread_mutex_unlock(&g->mu);
    if (st)
        tg_err(err, n,
               "thread transport, rank %u of %u: %s: the other ranks did not all arrive within "
               "%u ms (the group is broken)",
               rank, g->size, what, g->timeout_ms);
    return st;
}

static moevk_status tg_alltoall_counts(void *user, const uint64_t *send, uint64_t *recv,
                                       char *err, size_t n)
{
    tg_rank *me = user;
    moevk_thread_group *g = me->g;
    g->slots[me->rank].send = send;
    moevk_status st = tg_barrier(g, me->rank, "all-to-all of counts", err, n);
    if (st)
        return st;
    for (uint32_t s = 0; s < g->size; s++)
        recv[s] = ((const uint64_t *)g->slots[s].send)[me->rank];
    return tg_barrier(g, me->rank, "all-to-all of counts", err, n);
}

static moevk_status tg_alltoallv(void *user, const void *send, const uint64_t *send_bytes,
                                 void *recv, const uint64_t *recv_bytes, char *err, size_t n)
{
    tg_rank *me = user;
    moevk_thread_group *g = me->g;
    g->slots[me->rank].send = send;
    g->slots[me->rank].send_bytes = send_bytes;
    moevk_status st = tg_barrier(g, me->rank, "all-to-all-v", err, n);
    if (st)
        return st;
    uint64_t at = 0;
    for (uint32_t s = 0; s < g->size; s++) {
        const tg_slot *src = &g->slots[s];
        uint64_t off = 0;
        for (uint32_t d = 0; d < me->rank; d++)
            off += src->send_bytes[d];
        const uint64_t b = src->send_bytes[me->rank];
        if (b != recv_bytes[s]) {
            if (!st) {
                tg_err(err, n,
                       "thread transport, rank %u: all-to-all-v: rank %u sends %llu bytes, "
                       "recv_bytes[%u] = %llu",
                       me->rank, s, (unsigned long long)b, s,
                       (unsigned long long)recv_bytes[s]);
                st = MOEVK_ERROR_INVALID_ARGUMENT;
            }
        } else if (b) {
            memcpy((uint8_t *)recv + at, (const uint8_t *)src->send + off, b);
        }
        at += recv_bytes[s];
    }
    moevk_status st2 = tg_barrier(g, me->rank, "all-to-all-v", err, n);
    return st ? st : st2;
}

static moevk_status tg_allgather(void *user, const void *send, uint64_t bytes, void *recv,
                                 char *err, size_t n)
{
    tg_rank *me = user;
    moevk_thread_group *g = me->g;
    g->slots[me->rank].send = send;
    g->slots[me->rank].bytes = bytes;
    moevk_status st = tg_barrier(g, me->rank, "allgather", err, n);
    if (st)
        return st;
    for (uint32_t s = 0; s < g->size && !st; s++) {
        if (g->slots[s].bytes != bytes) {
            tg_err(err, n, "thread transport, rank %u: allgather of %llu bytes, rank %u gives %llu",
                   me->rank, (unsigned long long)bytes, s,
                   (unsigned long long)g->slots[s].bytes);
            st = MOEVK_ERROR_INVALID_ARGUMENT;
        } else if (bytes) {
            memcpy((uint8_t *)recv + s * bytes, g->slots[s].send, bytes);
        }
    }
    moevk_status st2 = tg_barrier(g, me->rank, "allgather", err, n);
    return st ? st : st2;
}

static moevk_status tg_agree(void *user, moevk_status mine, uint32_t *failed_rank,
                             moevk_status *failed_status, char *err, size_t n)
{
    tg_rank *me = user;
    moevk_thread_group *g = me->g;
    g->slots[me->rank].status = mine;
    moevk_status st = tg_barrier(g, me->rank, "error agreement", err, n);
    if (st)
        return st;
    *failed_rank = g->size;
    *failed_status = MOEVK_SUCCESS;
    for (uint32_t s = 0; s < g->size; s++)
        if (g->slots[s].status != MOEVK_SUCCESS) {
            *failed_rank = s;
            *failed_status = g->slots[s].status;
            break;
        }
    return tg_barrier(g, me->rank, "error agreement", err, n);
}

moevk_status moevk_thread_group_create(uint32_t size, uint32_t timeout_ms,
                                       moevk_thread_group **out)
{
    if (!out)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    if (size == 0 || size > 65536)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_thread_group *g = calloc(1, sizeof(*g));
    if (!g)
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    g->size = size;
    g->timeout_ms = timeout_ms ? timeout_ms : 60000;
    g->slots = calloc(size, sizeof(*g->slots));
    g->ranks = calloc(size, sizeof(*g->ranks));
    pthread_condattr_t ca;
    bool cond_ok = false, mu_ok = false;
    if (g->slots && g->ranks && !pthread_condattr_init(&ca)) {
        cond_ok = !pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) &&
                  !pthread_cond_init(&g->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (cond_ok)
        mu_ok = !pthread_mutex_init(&g->mu, NULL);
    if (!mu_ok) {
        if (cond_ok)
            pthread_cond_destroy(&g->cv);
        free(g->slots);
        free(g->ranks);
        free(g);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (uint32_t r = 0; r < size; r++)
        g->ranks[r] = (tg_rank){g, r};
    *out = g;
    return MOEVK_SUCCESS;
}

void moevk_thread_group_destroy(moevk_thread_group *g)
{
    if (!g)
        return;
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g->slots);
    free(g->ranks);
    free(g);
}

moevk_status moevk_thread_group_transport(moevk_thread_group *g, uint32_t rank,
                                          moevk_transport *out)
{
    if (!g || !out || rank >= g->size)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    *out = (moevk_transport){
        .rank = rank, .size = g->size, .user = &g->ranks[rank],
        .alltoall_counts = tg_alltoall_counts, .alltoallv = tg_alltoallv,
        .allgather = tg_allgather, .agree = tg_agree,
    };
    return MOEVK_SUCCESS;
}
