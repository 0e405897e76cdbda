/*
 * The moevk command-line tool: shared helpers of its subcommands.
 */
#ifndef MOEVK_CLI_H
#define MOEVK_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "moevk/moevk.h"

int cli_info(int argc, char **argv);
int cli_router(int argc, char **argv);
int cli_demo(int argc, char **argv);
int cli_check(int argc, char **argv);
int cli_run(int argc, char **argv);

#define MVK_CLI_MAX(a, b) ((a) > (b) ? (a) : (b))
#include <stdbool.h>

/* Create a context on the device named by --device (or MOEVK_DEVICE), with
 * validation when `validate`; prints the error and returns NULL on failure. */
moevk_context *cli_context(const char *device, int validate);
void cli_log(void *user, moevk_log_level level, const char *msg);
double cli_now_ms(void);

/* xorshift64*: the tool's and tests' seeded random numbers. */
typedef struct cli_rng { uint64_t s; } cli_rng;
uint64_t cli_rng_next(cli_rng *r);
float cli_rng_uniform(cli_rng *r, float lo, float hi);

#endif
