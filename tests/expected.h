/*
 * For the suites that run `moevk run` on checkpoint fixtures: the tool's
 * output against a fixture's expected values.
 */
#ifndef MOEVK_TESTS_EXPECTED_H
#define MOEVK_TESTS_EXPECTED_H

#include <stddef.h>

/* Relative L2 error of tensor "y" (f32) of got_path against tensor "y"
 * (f64) of want_path, over *n values; asserts that both exist, agree in
 * size and that every value of got is finite. */
double mvkt_rel_to_expected(const char *got_path, const char *want_path, size_t *n);

#endif
