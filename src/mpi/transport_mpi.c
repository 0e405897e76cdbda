/*
 * The MPI transport of expert parallelism (moevk/moevk_mpi.h): each
 * exchange is a non-blocking MPI collective tested until it completes or
 * the transport's timeout passes.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moevk/moevk_mpi.h"

struct moevk_mpi_transport {
    MPI_Comm comm;
    uint32_t rank, size, timeout_ms;
    bool broken;
    int *sc, *sd, *rc, *rd; /* [size] counts and displacements in words */
    int *status;            /* [size] */
};

static void mt_err(char *err, size_t n, const char *fmt, ...)
{
    if (!err || !n)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static moevk_status mpi_fail(moevk_mpi_transport *t, int rc, const char *what, char *err,
                             size_t n)
{
    char s[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, s, &len);
    t->broken = true;
    mt_err(err, n, "MPI transport, rank %u of %u: %s: %s", t->rank, t->size, what, s);
    return MOEVK_ERROR_INTERNAL;
}

/* Wait for req until the timeout (then the transport is broken). */
static moevk_status wait_for(moevk_mpi_transport *t, MPI_Request *req, const char *what,
                             char *err, size_t n)
{
    const double deadline = now_ms() + t->timeout_ms;
    for (unsigned spin = 0;; spin++) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return mpi_fail(t, rc, what, err, n);
        if (done)
            return MOEVK_SUCCESS;
        if (now_ms() > deadline) {
            t->broken = true;
            mt_err(err, n,
                   "MPI transport, rank %u of %u: %s: the other ranks did not all arrive within "
                   "%u ms (the transport is broken)",
                   t->rank, t->size, what, t->timeout_ms);
            return MOEVK_ERROR_TIMEOUT;
        }
        if (spin > 1000) {
            struct timespec ts = {0, 100000}; /* 0.1 ms */
            nanosleep(&ts, NULL);
        }
    }
}

static moevk_status check_open(moevk_mpi_transport *t, const char *what, char *err, size_t n)
{
    if (!t->broken)
        return MOEVK_SUCCESS;
    mt_err(err, n, "MPI transport, rank %u of %u: %s: the transport is broken by an earlier "
                   "failure", t->rank, t->size, what);
    return MOEVK_ERROR_TIMEOUT;
}

static moevk_status mt_alltoall_counts(void *user, const uint64_t *send, uint64_t *recv,
                                       char *err, size_t n)
{
    moevk_mpi_transport *t = user;
    const char *what = "all-to-all of counts";
    moevk_status st = check_open(t, what, err, n);
    if (st)
        return st;
    MPI_Request req;
    int rc = MPI_Ialltoall(send, 1, MPI_UINT64_T, recv, 1, MPI_UINT64_T, t->comm, &req);
    return rc != MPI_SUCCESS ? mpi_fail(t, rc, what, err, n) : wait_for(t, &req, what, err, n);
}

/* Byte sizes to word counts and displacements; false when one is not whole
 * words or the words overflow an int. */
static bool words(const uint64_t *bytes, uint32_t size, int *count, int *disp)
{
    uint64_t at = 0;
    for (uint32_t r = 0; r < size; r++) {
        if (bytes[r] % 4 || bytes[r] / 4 > INT_MAX || at > INT_MAX)
            return false;
        count[r] = (int)(bytes[r] / 4);
        disp[r] = (int)at;
        at += bytes[r] / 4;
    }
    return at <= INT_MAX;
}

static moevk_status mt_alltoallv(void *user, const void *send, const uint64_t *send_bytes,
                                 void *recv, const uint64_t *recv_bytes, char *err, size_t n)
{
    moevk_mpi_transport *t = user;
    const char *what = "all-to-all-v";
    moevk_status st = check_open(t, what, err, n);
    if (st)
        return st;
    if (!words(send_bytes, t->size, t->sc, t->sd) || !words(recv_bytes, t->size, t->rc, t->rd)) {
        /* the peers are in the collective already: this rank cannot leave */
        t->broken = true;
        mt_err(err, n,
               "MPI transport, rank %u: all-to-all-v of sizes that are not whole 4-byte words "
               "or exceed INT_MAX words",
               t->rank);
        return MOEVK_ERROR_LIMIT_EXCEEDED;
    }
    MPI_Request req;
    int rc = MPI_Ialltoallv(send, t->sc, t->sd, MPI_UINT32_T, recv, t->rc, t->rd, MPI_UINT32_T,
                            t->comm, &req);
    return rc != MPI_SUCCESS ? mpi_fail(t, rc, what, err, n) : wait_for(t, &req, what, err, n);
}

static moevk_status mt_allgather(void *user, const void *send, uint64_t bytes, void *recv,
                                 char *err, size_t n)
{
    moevk_mpi_transport *t = user;
    const char *what = "allgather";
    moevk_status st = check_open(t, what, err, n);
    if (st)
        return st;
    if (bytes % 4 || bytes / 4 > INT_MAX / t->size) {
        t->broken = true;
        mt_err(err, n, "MPI transport, rank %u: allgather of %llu bytes (not whole 4-byte words, "
                       "or too many)", t->rank, (unsigned long long)bytes);
        return MOEVK_ERROR_LIMIT_EXCEEDED;
    }
    MPI_Request req;
    int rc = MPI_Iallgather(send, (int)(bytes / 4), MPI_UINT32_T, recv, (int)(bytes / 4),
                            MPI_UINT32_T, t->comm, &req);
    return rc != MPI_SUCCESS ? mpi_fail(t, rc, what, err, n) : wait_for(t, &req, what, err, n);
}

static moevk_status mt_agree(void *user, moevk_status mine, uint32_t *failed_rank,
                             moevk_status *failed_status, char *err, size_t n)
{
    moevk_mpi_transport *t = user;
    const char *what = "error agreement";
    moevk_status st = check_open(t, what, err, n);
    if (st)
        return st;
    int v = (int)mine;
    MPI_Request req;
    int rc = MPI_Iallgather(&v, 1, MPI_INT, t->status, 1, MPI_INT, t->comm, &req);
    st = rc != MPI_SUCCESS ? mpi_fail(t, rc, what, err, n) : wait_for(t, &req, what, err, n);
    if (st)
        return st;
    *failed_rank = t->size;
    *failed_status = MOEVK_SUCCESS;
    for (uint32_t r = 0; r < t->size; r++)
        if (t->status[r]) {
            *failed_rank = r;
            *failed_status = (moevk_status)t->status[r];
            break;
        }
    return MOEVK_SUCCESS;
}

void moevk_mpi_transport_destroy(moevk_mpi_transport *t)
{
    if (!t)
        return;
    free(t->sc), free(t->sd), free(t->rc), free(t->rd), free(t->status);
    free(t);
}

moevk_status moevk_mpi_transport_create(MPI_Comm comm, uint32_t timeout_ms,
                                        moevk_mpi_transport **out, moevk_transport *tr)
{
    if (!out || !tr)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    int inited = 0, rank = 0, size = 0;
    if (MPI_Initialized(&inited) != MPI_SUCCESS || !inited ||
        MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS ||
        size < 1)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_mpi_transport *t = calloc(1, sizeof(*t));
    if (!t)
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    t->comm = comm;
    t->rank = (uint32_t)rank;
    t->size = (uint32_t)size;
    t->timeout_ms = timeout_ms ? timeout_ms : 60000;
    t->sc = calloc((size_t)size, sizeof(int));
    t->sd = calloc((size_t)size, sizeof(int));
    t->rc = calloc((size_t)size, sizeof(int));
    t->rd = calloc((size_t)size, sizeof(int));
    t->status = calloc((size_t)size, sizeof(int));
    if (!t->sc || !t->sd || !t->rc || !t->rd || !t->status) {
        moevk_mpi_transport_destroy(t);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    *tr = (moevk_transport){
        .rank = t->rank, .size = t->size, .user = t,
        .alltoall_counts = mt_alltoall_counts, .alltoallv = mt_alltoallv,
        .allgather = mt_allgather, .agree = mt_agree,
    };
    *out = t;
    return MOEVK_SUCCESS;
}
