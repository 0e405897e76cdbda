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

/* A Vulkan context on the device named by --device (or MOEVK_DEVICE), with
 * validation when `validate`, for the Vulkan-only commands (info, router);
 * prints the error and returns NULL on failure. */
moevk_context *cli_context(const char *device, int validate);

#endif
