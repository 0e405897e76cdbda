/*
 * moevk: command-line entry point.
 */
#include <stdio.h>
#include <string.h>

#include "backend/backend.h"
#include "bench.h"
#include "cli.h"
#include "util/tool.h"

typedef struct cli_command {
    const char *name, *args, *help;
    int (*run)(int argc, char **argv);
} cli_command;

static const cli_command commands[] = {
    {"check", "--against cpu", "random layer cases on a backend versus the CPU reference",
     cli_check},
    {"bench", "[options]",
     "benchmark presets and custom shapes against the\n"
     "                       device's measured ceilings",
     cli_bench},
    {"demo", "[options]",
     "run a real-shaped MoE layer, check it against the CPU\n"
     "                       reference and time every stage (the main job)",
     cli_demo},
    {"info", "[--model FILE.gguf]",
     "list every Vulkan device and its capabilities, or the MoE layers of a GGUF model",
     cli_info},
    {"router", "[options]",
     "run the router stage (logits + scores) on random input\n"
     "                       and compare it with the CPU reference",
     cli_router},
    {"run", "--model DIR|FILE.gguf --layer N --input X --output Y\n"
            "                       run one MoE layer of a Hugging Face checkpoint or a GGUF file",
     NULL, cli_run},
    {"simulate-ep", "[options]",
     "predict expert parallelism's exchange bytes and time and\n"
     "                       load imbalance for preset layers (no device)",
     cli_simulate_ep},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: moevk COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const cli_command *c = &commands[i];
        char head[160];
        snprintf(head, sizeof head, "%s%s%s", c->name, *c->args ? " " : "", c->args);
        if (c->help)
            fprintf(f, "  %-20s %s\n", head, c->help);
        else
            fprintf(f, "  %s\n", head);
    }
    fprintf(f, "  %-20s %s\n", "help", "this text");
    fprintf(f, "\nbackends (--backend of run, check, bench, demo):\n");
    for (uint32_t i = 0; mvk_backend_at(i); i++) {
        const mvk_backend *b = mvk_backend_at(i);
        char head[64];
        snprintf(head, sizeof head, "%s%s%s%s", b->name, b->alias ? " (" : "",
                 b->alias ? b->alias : "", b->alias ? ")" : "");
        fprintf(f, "  %-20s %s\n", head, b->summary);
    }
    fprintf(f, "\nRun `moevk COMMAND --help` for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    /* the bench of an expert-parallel layer over MPI ranks (cli_ep.c) */
    if (!strcmp(cmd, "bench"))
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "--expert-parallel"))
                return cli_ep_bench(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "moevk: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}

moevk_context *cli_context(const char *device, int validate)
{
    char err[512] = "";
    moevk_context *ctx = NULL;
    moevk_status st = mvk_tool_context(device, validate, &ctx, err, sizeof err);
    if (st)
        fprintf(stderr, "moevk: cannot create a context: %s: %s\n", moevk_status_string(st), err);
    return ctx;
}
