#!/bin/sh
# Expert parallelism over MPI: tests/ep_mpi.c under mpirun with 1 to 4
# ranks (oversubscribed: more ranks than cores is fine, each rank is mostly
# waiting on lavapipe). Skips (77) when mpirun is missing.
# usage: test_ep_mpi.sh EP_MPI_EXE
exe=$1
command -v mpirun >/dev/null 2>&1 || { echo "mpirun not found: skipped"; exit 77; }
# Open MPI refuses to run as root without these
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# one node, shared memory: no network interfaces probed
export OMPI_MCA_btl=self,vader OMPI_MCA_plm_rsh_agent=
for R in 1 2 3 4; do
    timeout 120 mpirun --oversubscribe --allow-run-as-root -np "$R" "$exe"
    rc=$?
    [ "$rc" -eq 77 ] && exit 77
    [ "$rc" -eq 0 ] || { echo "test_ep_mpi: $R ranks failed (exit $rc)"; exit 1; }
done
