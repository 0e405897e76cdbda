/*
 * The seeded random numbers of the whole tree (the harness's cases, the
 * tool's presets, demo and bench inputs, the tests' data): splitmix64.
 *
 * A generator is a plain value, so there is no global state: each user
 * seeds its own with mvk_rng_seed(seed, stream), where `stream` tells
 * independent sequences of one seed apart (a case's weights and its x, say).
 * Any state is valid, so a zero-initialised mvk_rng works too.
 */
#ifndef MOEVK_UTIL_RNG_H
#define MOEVK_UTIL_RNG_H

#include <stddef.h>
#include <stdint.h>

#include "moevk/moevk.h"

typedef struct mvk_rng {
    uint64_t s;
} mvk_rng;

mvk_rng mvk_rng_seed(uint64_t seed, uint64_t stream);
uint64_t mvk_rng_next(mvk_rng *r);
/* Uniform in lo..hi, both included; lo when hi <= lo. */
uint32_t mvk_rng_range(mvk_rng *r, uint32_t lo, uint32_t hi);
/* Uniform in [lo, hi) with 24 random bits. */
float mvk_rng_uniform(mvk_rng *r, float lo, float hi);
/* 1 with probability p. */
int mvk_rng_chance(mvk_rng *r, double p);

/* Store v as element i of an array of dtype dt (f32, f16 or bf16; rounded
 * to nearest even). */
void mvk_store_dtype(void *dst, moevk_dtype dt, size_t i, float v);
/* n values uniform in [-scale, scale), rounded to dt, into dst; for a
 * block format (n a whole number of blocks), random valid blocks whose
 * values are about +-scale (mvk_format_shape_block). */
void mvk_rng_fill(mvk_rng *r, moevk_dtype dt, void *dst, size_t n, float scale);
/* The same in a new array (malloc, at least one element); NULL when out of
 * memory, or when n is not a whole number of dt's blocks. */
void *mvk_rng_array(mvk_rng *r, moevk_dtype dt, size_t n, float scale);

#endif
