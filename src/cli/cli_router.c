/*
 * moevk router: the router stage on random input, checked against the CPU
 * reference (relative L2 error), with wall-clock times.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ref/ref.h"
#include "util/rng.h"
#include "util/tool.h"

static double rel_l2(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (isnan(num))
        return NAN;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

int cli_router(int argc, char **argv)
{
    const char *device = NULL;
    uint32_t T = 64, H = 4096, E = 8;
    uint64_t seed = 1;
    moevk_dtype dt = MOEVK_DTYPE_F32;
    moevk_scoring scoring = MOEVK_SCORING_SOFTMAX;
    int validate = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            printf("usage: moevk router [--device D] [--tokens T] [--hidden H] [--experts E]\n"
                   "                    [--dtype f32|f16|bf16] [--scoring softmax|sigmoid]\n"
                   "                    [--seed S] [--validate]\n");
            return 0;
        } else if (!strcmp(a, "--validate")) {
            validate = 1;
            continue;
        } else if (!v) {
            fprintf(stderr, "moevk router: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--tokens")) T = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--hidden")) H = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--experts")) E = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--dtype")) {
            if (mvk_dtype_parse(v, 0, &dt)) {
                fprintf(stderr, "moevk router: unknown dtype '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--scoring")) {
            if (!strcmp(v, "softmax")) scoring = MOEVK_SCORING_SOFTMAX;
            else if (!strcmp(v, "sigmoid")) scoring = MOEVK_SCORING_SIGMOID;
            else {
                fprintf(stderr, "moevk router: unknown scoring '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "moevk router: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (!T || !H || !E || E > MOEVK_MAX_EXPERTS) {
        fprintf(stderr, "moevk router: need T, H >= 1 and 1 <= E <= %d\n", MOEVK_MAX_EXPERTS);
        return 2;
    }
    moevk_context *ctx = cli_context(device, validate);
    if (!ctx)
        return 1;
    const moevk_device_info *info = moevk_context_device_info(ctx);
    printf("device: %s (%s)\n", info->name, info->driver_name);
    printf("router: T=%u H=%u E=%u weights %s, %s scoring, seed %llu\n", T, H, E,
           moevk_dtype_name(dt), scoring ? "sigmoid" : "softmax", (unsigned long long)seed);

    size_t esz = moevk_dtype_size(dt);
    float *x = malloc(sizeof(float) * T * H);
    void *w = malloc(esz * E * H);
    float *bias = malloc(sizeof(float) * E);
    float *logits = malloc(sizeof(float) * T * E), *scores = malloc(sizeof(float) * T * E);
    float *ref_l = malloc(sizeof(float) * T * E), *ref_s = malloc(sizeof(float) * T * E);
    int rc = 1;
    moevk_tensor tx = {0}, tw = {0}, tb = {0}, tl = {0}, ts = {0};
    if (!x || !w || !bias || !logits || !scores || !ref_l || !ref_s) {
        fprintf(stderr, "moevk router: out of host memory\n");
        goto done;
    }
    mvk_rng rng = mvk_rng_seed(seed, 1);
    mvk_rng_fill(&rng, MOEVK_DTYPE_F32, x, (size_t)T * H, 1.0f);
    mvk_rng_fill(&rng, dt, w, (size_t)E * H, 2.0f / sqrtf((float)H));
    mvk_rng_fill(&rng, MOEVK_DTYPE_F32, bias, E, 0.1f);

    moevk_status st;
    uint64_t sx[2] = {T, H}, sw[2] = {E, H}, sb[1] = {E}, sl[2] = {T, E};
    if ((st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sx, &tx)) ||
        (st = moevk_tensor_create(ctx, dt, 2, sw, &tw)) ||
        (st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 1, sb, &tb)) ||
        (st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sl, &tl)) ||
        (st = moevk_tensor_create(ctx, MOEVK_DTYPE_F32, 2, sl, &ts)) ||
        (st = moevk_tensor_upload(&tx, x)) || (st = moevk_tensor_upload(&tw, w)) ||
        (st = moevk_tensor_upload(&tb, bias)))
        goto vk_error;
    double t0 = mvk_now_ms();
    if ((st = moevk_router_logits(ctx, &tx, &tw, &tb, &tl)))
        goto vk_error;
    double t1 = mvk_now_ms();
    if ((st = moevk_router_scores(ctx, &tl, scoring, &ts)))
        goto vk_error;
    double t2 = mvk_now_ms();
    if ((st = moevk_tensor_download(&tl, logits)) || (st = moevk_tensor_download(&ts, scores)))
        goto vk_error;

    moevk_ref_router_logits(x, T, H, w, dt, E, bias, ref_l);
    moevk_ref_scores(ref_l, T, E, scoring, ref_s);
    double err_l = rel_l2(logits, ref_l, (size_t)T * E);
    double err_s = rel_l2(scores, ref_s, (size_t)T * E);
    double tol = dt == MOEVK_DTYPE_F32 ? 1e-5 : dt == MOEVK_DTYPE_F16 ? 2e-3 : 1e-2;
    printf("  logits: rel. L2 error vs CPU reference %.3e  (%.3f ms wall, incl. submit)\n", err_l,
           t1 - t0);
    printf("  scores: rel. L2 error vs CPU reference %.3e  (%.3f ms wall, incl. submit)\n", err_s,
           t2 - t1);
    /* Weights were rounded to dtype before both computed, so f32 tolerance
     * applies to every dtype here. */
    (void)tol;
    rc = (err_l <= 1e-5 && err_s <= 1e-5) ? 0 : 1;
    printf("%s\n", rc ? "FAILED: error above 1e-5" : "OK");
    if (validate && moevk_context_validation_messages(ctx)) {
        printf("FAILED: %u validation messages\n", moevk_context_validation_messages(ctx));
        rc = 1;
    }
    goto done;
vk_error:
    fprintf(stderr, "moevk router: %s: %s\n", moevk_status_string(st),
            moevk_context_last_error(ctx));
done:
    moevk_tensor_destroy(&tx);
    moevk_tensor_destroy(&tw);
    moevk_tensor_destroy(&tb);
    moevk_tensor_destroy(&tl);
    moevk_tensor_destroy(&ts);
    moevk_context_destroy(ctx);
    free(x), free(w), free(bias), free(logits), free(scores), free(ref_l), free(ref_s);
    return rc;
}
