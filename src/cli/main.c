/*
 * moevk: command-line entry point.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "bench.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moevk COMMAND [options]\n"
            "\n"
            "commands:\n"
            "  check --against cpu  random layer cases on the GPU versus the CPU reference\n"
            "  bench [options]      benchmark presets and custom shapes against the\n"
            "                       device's measured ceilings\n"
            "  demo [options]       run a real-shaped MoE layer, check it against the CPU\n"
            "                       reference and time every stage (the main job)\n"
            "  info                 list every Vulkan device and its capabilities\n"
            "  router [options]     run the router stage (logits + scores) on random input\n"
            "                       and compare it with the CPU reference\n"
            "  run --model DIR --layer N --input X --output Y\n"
            "                       run one MoE layer of a Hugging Face checkpoint\n"
            "  help                 this text\n"
            "\n"
            "Run `moevk COMMAND --help` for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "check"))
        return cli_check(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench"))
        return cli_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "demo"))
        return cli_demo(argc - 1, argv + 1);
    if (!strcmp(cmd, "info"))
        return cli_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "router"))
        return cli_router(argc - 1, argv + 1);
    if (!strcmp(cmd, "run"))
        return cli_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "moevk: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}

void cli_log(void *user, moevk_log_level level, const char *msg)
{
    (void)user;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "moevk %s: %s\n", names[level <= MOEVK_LOG_DEBUG ? level : 0], msg);
}

moevk_context *cli_context(const char *device, int validate)
{
    char err[512];
    moevk_context_desc d = {
        .device = device,
        .flags = validate ? MOEVK_CONTEXT_VALIDATION : 0,
        .log = cli_log,
        .log_level = MOEVK_LOG_WARN,
        .error_message = err,
        .error_message_size = sizeof(err),
    };
    moevk_context *ctx = NULL;
    moevk_status st = moevk_context_create(&d, &ctx);
    if (st) {
        fprintf(stderr, "moevk: cannot create a context: %s: %s\n", moevk_status_string(st), err);
        return NULL;
    }
    return ctx;
}

double cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

uint64_t cli_rng_next(cli_rng *r)
{
    uint64_t x = r->s ? r->s : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dull;
}

float cli_rng_uniform(cli_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((cli_rng_next(r) >> 40) * (1.0 / 16777216.0));
}
