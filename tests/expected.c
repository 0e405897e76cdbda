/*
 * The tool's output against a fixture's expected values (expected.h).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "expected.h"
#include "model/safetensors.h"

double mvkt_rel_to_expected(const char *got_path, const char *want_path, size_t *n)
{
    mvk_st_file g, w;
    char err[512];
    cr_assert_eq(mvk_st_open(got_path, &g, err, sizeof err), 0, "%s", err);
    cr_assert_eq(mvk_st_open(want_path, &w, err, sizeof err), 0, "%s", err);
    const mvk_st_tensor *gy = mvk_st_find(&g, "y"), *wy = mvk_st_find(&w, "y");
    cr_assert(gy && wy && !strcmp(gy->dtype_name, "F32") && !strcmp(wy->dtype_name, "F64"));
    cr_assert_eq(gy->numel, wy->numel);
    double num = 0, den = 0;
    for (uint64_t i = 0; i < gy->numel; i++) {
        float a;
        double b;
        memcpy(&a, gy->data + 4 * i, 4);
        memcpy(&b, wy->data + 8 * i, 8);
        cr_assert(isfinite(a), "y[%llu] = %g", (unsigned long long)i, a);
        num += (a - b) * (a - b);
        den += b * b;
    }
    *n = (size_t)gy->numel;
    mvk_st_close(&g);
    mvk_st_close(&w);
    cr_assert_gt(den, 0.0);
    return sqrt(num / den);
}
