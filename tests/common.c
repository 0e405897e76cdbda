#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "ref/ref.h"

/* Criterion runs each test in a process of its own and judges the test on
 * what it reported before that process exits. A sanitizer report at exit
 * (LeakSanitizer's leak check, an error in a destructor) changes only the
 * process's exit status, which Criterion records but does not count: a test
 * that leaks would pass. Count it here, in the runner, before the closing
 * "Synthesis" line and the program's exit status are decided. */
ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    for (struct criterion_suite_stats *s = stats->suites; s; s = s->next)
        for (struct criterion_test_stats *t = s->tests; t; t = t->next) {
            if (t->test_status != CR_STATUS_PASSED || t->exit_code == t->test->data->exit_code)
                continue;
            t->test_status = CR_STATUS_FAILED;
            s->tests_passed--;
            s->tests_failed++;
            stats->tests_passed--;
            stats->tests_failed++;
            fprintf(stderr,
                    "[FAIL] %s::%s: its process exited with status %d after the test passed "
                    "(a sanitizer report above: a leak, or an error at exit)\n",
                    t->test->category, t->test->name, t->exit_code);
        }
}

uint64_t mvkt_base_seed(void)
{
    const char *s = getenv("MOEVK_TEST_SEED");
    if (s && *s)
        return strtoull(s, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
}

uint64_t mvkt_env_u64(const char *name, uint64_t def)
{
    const char *s = getenv(name);
    return s && *s ? strtoull(s, NULL, 0) : def;
}

int mvkt_scaled(int n, int min)
{
    const char *s = getenv("MOEVK_TEST_CASES_SCALE");
    double f = s && *s ? strtod(s, NULL) : 1.0;
    if (!(f > 0.0 && f <= 100.0))
        f = 1.0;
    double v = (double)n * f + 0.5;
    int k = v >= 2147483647.0 ? 2147483647 : (int)v;
    return k < min ? min : k;
}

static void test_log(void *user, moevk_log_level level, const char *msg)
{
    (void)user;
    fprintf(stderr, "[moevk %d] %s\n", (int)level, msg);
}

/* The tests' GPU-work timeout: 10 minutes, not the library's 60 s default.
 * A driver that compiles a pipeline at its first dispatch (lavapipe: each
 * kernel variant on first use, several seconds apiece on Mesa 25 with a cold
 * shader cache) spends that time inside the fence wait, so one pass of a
 * layer with new kernel variants can pass 60 s on a busy 2-core machine. A
 * real hang is still caught, by meson's per-test timeout. */
#define MVKT_TIMEOUT_MS 600000u

moevk_context *mvkt_context_flags(uint32_t flags, uint32_t timeout_ms)
{
    char err[512] = "";
    moevk_context_desc d = {
        .flags = flags,
        .log = test_log,
        .log_level = MOEVK_LOG_WARN,
        .timeout_ms = timeout_ms ? timeout_ms : MVKT_TIMEOUT_MS,
        .error_message = err,
        .error_message_size = sizeof(err),
    };
    moevk_context *ctx = NULL;
    moevk_status st = moevk_context_create(&d, &ctx);
    const char *req = getenv("MOEVK_REQUIRE_DEVICE");
    bool required = req && *req && strcmp(req, "0") != 0;
    if ((st == MOEVK_ERROR_NO_VULKAN || st == MOEVK_ERROR_NO_DEVICE) && !required)
        cr_skip_test("no Vulkan device: %s", err);
    cr_assert_eq(st, MOEVK_SUCCESS, "context creation failed: %s: %s", moevk_status_string(st),
                 err);
    return ctx;
}

moevk_context *mvkt_context(void)
{
    return mvkt_context_flags(MOEVK_CONTEXT_VALIDATION, MVKT_TIMEOUT_MS);
}

void mvkt_context_end(moevk_context *ctx)
{
    uint32_t n = moevk_context_validation_messages(ctx);
    moevk_context_destroy(ctx);
    cr_assert_eq(n, 0, "%u validation-layer messages (see the log above)", n);
}

void mvkt_poison(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
}

void mvkt_poison_tensor(moevk_tensor *t)
{
    uint64_t bytes = (moevk_tensor_bytes(t) + 3) & ~3ull;
    moevk_status st = moevk_buffer_fill(t->buffer, t->offset, bytes, 0x7fc00000u);
    cr_assert_eq(st, MOEVK_SUCCESS, "poisoning a tensor failed");
}

double mvkt_rel_l2(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * (double)ref[i];
    }
    if (isnan(num) || isnan(den))
        return NAN;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

void *mvkt_random_weights(mvkt_rng *r, moevk_dtype dt, size_t n, float scale)
{
    const uint32_t be = moevk_dtype_block_elems(dt);
    cr_assert(be > 0 && n % be == 0, "%zu elements are not whole %s blocks", n,
              moevk_dtype_name(dt));
    void *w = mvk_rng_array(r, dt, n, scale);
    cr_assert_not_null(w);
    return w;
}

/* the tool, run by the suites that drive `moevk` (see common.h) */
int mvkt_run_tool(char *out, size_t outsz, const char *const *args, int vulkan,
                  unsigned limit_s, int stderr_only)
{
    const char *exe = getenv("MOEVK_EXE"); /* before fork: asserts only in the test process */
    cr_assert(exe && *exe, "MOEVK_EXE (the moevk binary) is not set");
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        if (stderr_only) {
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            close(devnull);
        } else {
            dup2(fd[1], 1);
        }
        dup2(fd[1], 2);
        close(fd[0]);
        close(fd[1]);
        if (vulkan) {
            const char *a = getenv("ASAN_OPTIONS");
            char opts[1024];
            snprintf(opts, sizeof opts, "%s%sdetect_leaks=0", a ? a : "", a && *a ? ":" : "");
            setenv("ASAN_OPTIONS", opts, 1);
        }
        if (limit_s)
            alarm(limit_s); /* survives exec: SIGALRM ends a hung tool */
        const char *argv[64];
        size_t n = 0;
        argv[n++] = exe;
        for (; *args && n < 63; args++)
            argv[n++] = *args;
        argv[n] = NULL;
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fd[1]);
    size_t len = 0;
    ssize_t r;
    char sink[4096];
    while ((r = read(fd[0], len + 1 < outsz ? out + len : sink,
                     len + 1 < outsz ? outsz - 1 - len : sizeof sink)) > 0)
        if (len + 1 < outsz)
            len += (size_t)r;
    out[len] = 0;
    close(fd[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
