/*
 * moevk over MPI: a moevk_transport (moevk.h, "Expert parallelism") whose
 * exchanges are MPI collectives on a communicator. In libmoevk-mpi, built
 * when meson finds MPI (pkg-config moevk-mpi); libmoevk itself does not
 * depend on MPI.
 */
#ifndef MOEVK_MPI_H
#define MOEVK_MPI_H

#include <mpi.h>

#include "moevk/moevk.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moevk_mpi_transport moevk_mpi_transport;

/* A transport over comm (MPI initialised; comm outlives the transport; one
 * thread calls it at a time). Its exchanges are MPI_Ialltoall,
 * MPI_Ialltoallv and MPI_Iallgather, waited for with MPI_Test for at most
 * timeout_ms each (0 = 60000): a peer that does not arrive gives
 * MOEVK_ERROR_TIMEOUT instead of a hang, and the transport is broken
 * afterwards (MPI cannot cancel a collective: every later call fails at
 * once; end the job with MPI_Abort or MPI_Finalize). Blocks are sent as
 * 4-byte words: every size must be a multiple of 4, at most INT_MAX words
 * per peer and in all. *out is the handle to destroy, *tr the transport
 * (its rank and size are the communicator's). */
MOEVK_API moevk_status moevk_mpi_transport_create(MPI_Comm comm, uint32_t timeout_ms,
                                                  moevk_mpi_transport **out, moevk_transport *tr);
MOEVK_API void moevk_mpi_transport_destroy(moevk_mpi_transport *t);

#ifdef __cplusplus
}
#endif
#endif
