/*
 * Shared test helpers: validated contexts, seeded random data, poisoned
 * outputs and error norms.
 *
 * Every GPU test creates its context with the Khronos validation layer and
 * synchronization validation; mvkt_context_end() fails the test on any
 * validation message. A test skips only when no Vulkan device exists at all
 * (and never when MOEVK_REQUIRE_DEVICE=1, as in CI).
 */
#ifndef MOEVK_TESTS_COMMON_H
#define MOEVK_TESTS_COMMON_H

#include <stdint.h>
#include <stddef.h>

#include "moevk/moevk.h"
#include "util/rng.h"

/* The run's base seed: MOEVK_TEST_SEED if set, else from the clock. Each
 * test derives its own from it and prints it on failure. */
uint64_t mvkt_base_seed(void);

/* The tree's one seeded generator (src/util/rng.h), by the suites' names. */
typedef mvk_rng mvkt_rng;
static inline mvkt_rng mvkt_rng_make(uint64_t seed)
{
    return mvk_rng_seed(seed, 0);
}
static inline uint64_t mvkt_next(mvkt_rng *r)
{
    return mvk_rng_next(r);
}
static inline uint32_t mvkt_range(mvkt_rng *r, uint32_t lo, uint32_t hi) /* inclusive */
{
    return mvk_rng_range(r, lo, hi);
}
static inline float mvkt_uniform(mvkt_rng *r, float lo, float hi)
{
    return mvk_rng_uniform(r, lo, hi);
}

/* n scaled by MOEVK_TEST_CASES_SCALE (a factor, default 1; the sanitizer
 * pass sets a fraction to run fewer random cases), rounded, at least min. */
int mvkt_scaled(int n, int min);
/* An unsigned environment variable (decimal or 0x...), or def if unset. */
uint64_t mvkt_env_u64(const char *name, uint64_t def);

/* A validated context on the default device (or NULL after cr_skip when no
 * device exists). */
moevk_context *mvkt_context(void);
moevk_context *mvkt_context_flags(uint32_t flags, uint32_t timeout_ms);
/* Assert no validation message was seen, then destroy. */
void mvkt_context_end(moevk_context *ctx);

/* Fill n floats with NaN on the host, or a device tensor with NaN. */
void mvkt_poison(float *p, size_t n);
void mvkt_poison_tensor(moevk_tensor *t);

/* Relative L2 error ||a - ref|| / ||ref|| (NaN if any NaN appears). */
double mvkt_rel_l2(const float *a, const float *ref, size_t n);

/* Random values of a dtype (weights, or f32 inputs): uniform in [-scale,
 * scale), rounded; of a block format, random valid blocks of about +-scale
 * (mvk_rng_fill; n must be whole blocks). The allocation is asserted. */
void *mvkt_random_weights(mvkt_rng *r, moevk_dtype dt, size_t n, float scale);

/* Run `$MOEVK_EXE args...` (args NULL-terminated, at most 62); returns its
 * exit status (-1 if it did not exit), stdout and stderr together in out
 * (stderr alone with `stderr_only`). With `vulkan`, LeakSanitizer is off in
 * the child (the Vulkan loader unloads the driver before exit, so its leaks
 * cannot be attributed); with `limit_s`, the tool is killed after that many
 * seconds (status -1): a hang fails the test instead of blocking it. */
int mvkt_run_tool(char *out, size_t outsz, const char *const *args, int vulkan,
                  unsigned limit_s, int stderr_only);

#endif
