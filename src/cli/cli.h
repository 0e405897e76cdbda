/*
 * The moevk command-line tool: its subcommands (main.c dispatches; bench
 * lives in bench/). Shared helpers are in src/util, presets in
 * src/presets, the backends in src/backend.
 */
#ifndef MOEVK_CLI_H
#define MOEVK_CLI_H

#include "moevk/moevk.h"

int cli_info(int argc, char **argv);
int cli_router(int argc, char **argv);
int cli_demo(int argc, char **argv);
int cli_check(int argc, char **argv);
int cli_run(int argc, char **argv);

/* Expert parallelism over MPI (cli_ep.c; without MPI in the build each
 * refuses with the reason). cli_ep_begin initialises MPI (rank and size
 * out; the stdout of ranks other than 0 is discarded) and cli_ep_end
 * finalises it. cli_ep_run: one pass of d over x [T, H] split in
 * contiguous token ranges over the ranks, each on its own context (device,
 * validate), y [T, H] gathered on rank 0, stats of the whole pass on every
 * rank; collective (every rank calls it; a failure anywhere fails all).
 * cli_ep_bench: `moevk bench --expert-parallel`. */
int cli_ep_begin(int *argc, char ***argv, int *rank, int *size);
void cli_ep_end(void);
int cli_ep_run(const moevk_layer_desc *d, const char *device, int validate, const float *x,
               uint32_t T, float *y, moevk_routing_stats *stats, char *devdesc, size_t dn,
               double *create_ms, double *forward_ms, char *err, size_t n);
int cli_ep_bench(int argc, char **argv);
/* cli_ep_run with R ranks as threads of this process (the library's thread
 * transport; no MPI), rank r on entry r (modulo) of the comma-separated
 * device list (NULL: the default device); y written by every rank. */
int cli_ep_run_threads(const moevk_layer_desc *d, const char *devices, int validate, uint32_t R,
                       const float *x, uint32_t T, float *y, moevk_routing_stats *stats,
                       char *devdesc, size_t dn, double *create_ms, double *forward_ms,
                       char *err, size_t n);
/* moevk simulate-ep (cli_simulate.c): the cost model of expert parallelism
 * on the host. */
int cli_simulate_ep(int argc, char **argv);

/* A Vulkan context on the device named by --device (or MOEVK_DEVICE), with
 * validation when `validate`, for the Vulkan-only commands (info, router);
 * prints the error and returns NULL on failure. */
moevk_context *cli_context(const char *device, int validate);

#endif
