/*
 * moevk run: one MoE layer of a Hugging Face checkpoint (config.json +
 * safetensors) or of a GGUF file (llama.cpp's; model/gguf_layer.h) applied to an input tensor from a safetensors file, on any
 * backend of the table (src/backend/backend.h): the Vulkan device, the CPU
 * reference, CUDA (when built).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli.h"
#include "harness/harness.h"
#include "layer.h"
#include "model/gguf.h"
#include "model/gguf_layer.h"
#include "model/hf_config.h"
#include "model/model_layer.h"
#include "model/model_open.h"
#include "model/model_util.h"
#include "model/safetensors.h"
#include "quantize.h"
#include "ref/ref.h"
#include "util/tool.h"

static void usage(FILE *f)
{
    char archs[256], hf[1024];
    fprintf(f,
            "usage: moevk run --model DIR|FILE.gguf --layer N [--decoder] [--part NAME]\n"
            "                 --input X.safetensors [--output Y.safetensors] [--stats S.json]\n"
            "                 [--backend BACKEND] [--device D] [--validate] [--check]\n"
            "       moevk run --config CONFIG.json --weights FILE.safetensors [--weights ...]\n"
            "                 --prefix P --input X.safetensors [...]\n"
            "  Runs one MoE block of a Hugging Face checkpoint. DIR holds config.json and\n"
            "  model.safetensors, or shards listed in model.safetensors.index.json. With\n"
            "  --config/--weights the block's tensors are named P followed by the usual\n"
            "  suffixes (gate.weight, experts.0.w1.weight, ...). model_type (or, for a\n"
            "  multimodal model, its text_config's): %s.\n"
            "  A GGUF file (or the first of its NAME-00001-of-0000K.gguf splits) runs\n"
            "  its block blk.N as llama.cpp computes it; general.architecture: %s.\n"
            "  --input    tensor 'x', [T, H] or [B, S, H], f32/f16/bf16\n"
            "  --output   tensor 'y', the same shape, f32\n"
            "  --stats    routing statistics as JSON\n"
            "  --decoder  switch_transformers, nllb-moe: a decoder block (default: encoder)\n"
            "  --part NAME  a second model of the checkpoint, configured in NAME_config\n"
            "             (its text_config): qwen3_omni_moe's talker, dots3_note's and\n"
            "             ernie4_5_vl_moe's vision\n"
            "  --batch-invariant  only kernels whose result for a token does not depend\n"
            "             on the other tokens (no matrix units)\n"
            "  --dropped-passthrough  switch_transformers as transformers 4 computed it: a\n"
            "             token over expert_capacity outputs p * x (transformers 5: 0)\n"
            "  --quantize FORMAT  quantise the experts' f32/f16/bf16 weights at load into\n"
            "             FORMAT (q8_0, q4_k, mxfp4, ...; rows that are not whole blocks get\n"
            "             llama.cpp's fallback format, said in the output)\n"
            "  --vram-budget SIZE|P%%  device memory for the routed experts (bytes, K/M/G/T,\n"
            "             or a percentage of their bytes): the rest run from host memory\n"
            "  --check    also run the CPU reference and compare: NaN/Inf where it has\n"
            "             them, relative L2 over the finite values, routing\n"
            "  --backend  where it runs (default vulkan; cpu: the double-precision\n"
            "             reference; cuda: cuda-ref): %s\n"
            "  --cuda-impl ref|cublas|cublas-f32  with --backend cuda: cuda-IMPL\n"
            "  --expert-parallel  under mpirun -np R: the experts and the tokens split over\n"
            "             the R ranks (each its own device context), batch invariant; rank 0\n"
            "             writes the output, the same file as one process with\n"
            "             --batch-invariant\n"
            "  --ranks N  with --expert-parallel: N ranks as threads of this process instead\n"
            "             of MPI processes; with either, --device D0,D1,.. puts rank r on\n"
            "             device r (modulo the list)\n",
            mvk_arch_list(hf, sizeof hf, NULL), mvk_gguf_arch_list(archs, sizeof archs),
            mvk_backend_list(", ").s);
}

typedef struct run_opts {
    const char *model, *config, *prefix, *input, *output, *stats, *backend, *device;
    const char *cuda_impl, *quantize, *vram_budget;
    uint32_t ranks; /* --ranks N: expert parallel over N threads (no MPI) */
    const char *weights[64];
    int nweights;
    long layer;
    int decoder, validate, check, passthrough, batch_invariant, expert_parallel;
    const char *part; /* --part: a second model of the checkpoint */
} run_opts;

/* Everything one forward pass set produces, for T tokens in `passes`
 * passes of S tokens. */
typedef struct run_out {
    float *y;
    uint32_t *ids;
    float *w;
    int32_t *row;
    uint32_t *tpe;
    moevk_routing_stats stats;
    char device[800];
    int uploads; /* the backend copies the weights (its create is timed) */
    double create_ms, forward_ms;
    double weight_bytes; /* on the backend's device */
    mvk_backend_memory mem;
} run_out;

static int run_out_alloc(run_out *o, uint32_t T, uint32_t H, uint32_t K, uint32_t E)
{
    memset(o, 0, sizeof(*o));
    o->y = malloc(sizeof(float) * T * H);
    o->ids = malloc(4ull * T * K);
    o->w = malloc(4ull * T * K);
    o->row = malloc(4ull * T * K);
    o->tpe = calloc(E, 4);
    return o->y && o->ids && o->w && o->row && o->tpe ? 0 : -1;
}

static void run_out_free(run_out *o)
{
    free(o->y);
    free(o->ids);
    free(o->w);
    free(o->row);
    free(o->tpe);
}

/* Statistics over all passes: counts and drops add up; the losses are
 * recomputed over every token from host router logits (one pass: the
 * backend's own values are kept). */
static int merge_stats(const moevk_layer_desc *d, const float *x, uint32_t T, uint32_t passes,
                       run_out *o)
{
    if (passes == 1)
        return 0;
    float *logits = malloc(sizeof(float) * T * d->num_experts);
    if (!logits)
        return -1;
    moevk_ref_router_logits(x, T, d->hidden, d->router_weight, d->router_dtype, d->num_experts,
                            d->router_bias, logits);
    moevk_routing_stats s = {.tokens_per_expert = o->tpe};
    moevk_status st = moevk_ref_stats(d, T, logits, o->ids, o->tpe, o->stats.dropped, &s);
    free(logits);
    if (st)
        return -1;
    o->stats.load_balancing_loss = s.load_balancing_loss;
    o->stats.router_z_loss = s.router_z_loss;
    o->stats.routing_entropy = s.routing_entropy;
    return 0;
}

/* The passes on backend b (its device per --device/--validate): y, ids,
 * weights, rows and (when near is not NULL: the reference) near-tie flags
 * of every token; counts and drops add up, the losses are the last pass's
 * (merge_stats recomputes them over all passes). */
static int run_backend(const run_opts *opt, const mvk_backend *b, const moevk_layer_desc *d,
                       const float *x, uint32_t passes, uint32_t S, run_out *o, uint8_t *near)
{
    const uint32_t H = d->hidden, K = d->top_k, E = d->num_experts;
    char err[1024] = "";
    const mvk_backend_opts bo = {.device = opt->device, .validate = opt->validate};
    mvk_backend_info info;
    void *dev = NULL, *L = NULL;
    uint32_t *tpe = calloc(E, 4);
    int rc = 1;
    if (!tpe) {
        fprintf(stderr, "moevk run: out of host memory\n");
        return 1;
    }
    if (!b->available(err, sizeof err)) {
        fprintf(stderr, "moevk run: backend %s cannot run here: %s\n", b->name, err);
        free(tpe);
        return 1;
    }
    moevk_status st = b->open(&bo, &dev, &info, err, sizeof err);
    if (st)
        goto error;
    snprintf(o->device, sizeof o->device, "%s", info.desc);
    o->uploads = info.uploads;
    double t0 = mvk_now_ms();
    if ((st = b->create(dev, d, NULL, &L, err, sizeof err)))
        goto error;
    o->create_ms = mvk_now_ms() - t0;
    if (b->memory) {
        mvk_backend_memory mem;
        b->memory(L, S, &mem);
        o->weight_bytes = mem.weights;
        o->mem = mem;
    }
    t0 = mvk_now_ms();
    for (uint32_t p = 0; p < passes; p++) {
        size_t xo = (size_t)p * S * H, ko = (size_t)p * S * K;
        moevk_routing_stats s = {.tokens_per_expert = tpe};
        const mvk_backend_out out = {.y = o->y + xo,
                                     .ids = o->ids + ko,
                                     .weights = o->w + ko,
                                     .rows = o->row + ko,
                                     .near_tie = near ? near + (size_t)p * S : NULL,
                                     .stats = &s};
        if ((st = b->forward(L, S, x + xo, &out, err, sizeof err)))
            goto error;
        for (uint32_t e = 0; e < E; e++)
            o->tpe[e] += tpe[e];
        o->stats.dropped += s.dropped;
        o->stats.load_balancing_loss = s.load_balancing_loss;
        o->stats.router_z_loss = s.router_z_loss;
        o->stats.routing_entropy = s.routing_entropy;
    }
    o->forward_ms = mvk_now_ms() - t0;
    if (b->memory) /* the cache counters after the passes */
        b->memory(L, S, &o->mem);
    uint32_t msgs = b->problems ? b->problems(dev) : 0;
    if (opt->validate && msgs)
        fprintf(stderr, "moevk run: %u validation messages\n", msgs);
    else
        rc = 0;
    goto done;
error:
    fprintf(stderr, "moevk run: %s: %s: %s\n", b->name, moevk_status_string(st), err);
done:
    if (L)
        b->destroy(L);
    if (dev)
        b->close(dev);
    free(tpe);
    return rc;
}

/* switch_transformers in transformers 4 kept a dropped token's hidden
 * state, scaled by its routing probability: y_t += w * x_t for each dropped
 * slot (transformers 5 outputs 0 for it, as moevk does). */
static void dropped_passthrough(const moevk_layer_desc *d, const float *x, uint32_t T,
                                run_out *o)
{
    const uint32_t H = d->hidden, K = d->top_k;
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t j = 0; j < K; j++) {
            size_t a = (size_t)t * K + j;
            if (o->row[a] >= 0)
                continue;
            for (uint32_t c = 0; c < H; c++)
                o->y[(size_t)t * H + c] += o->w[a] * x[(size_t)t * H + c];
        }
}

/* The architecture's name: config.json's model_type or GGUF's
 * general.architecture. */
static const char *model_name(const mvk_model_layer *ml)
{
    return ml->arch ? mvk_arch_name(ml->arch) : ml->arch_name ? ml->arch_name : "unknown";
}

static int write_stats(const char *path, const run_opts *opt, const mvk_model_layer *ml,
                       uint32_t T, uint32_t passes, const run_out *o)
{
    const moevk_layer_desc *d = &ml->desc;
    cJSON *j = cJSON_CreateObject();
    if (!j || !cJSON_AddStringToObject(j, "model_type", model_name(ml)))
        goto oom;
    cJSON_AddStringToObject(j, "prefix", ml->prefix);
    cJSON_AddStringToObject(j, "backend", opt->backend);
    cJSON_AddNumberToObject(j, "tokens", T);
    cJSON_AddNumberToObject(j, "passes", passes);
    cJSON_AddNumberToObject(j, "num_experts", d->num_experts);
    cJSON_AddNumberToObject(j, "top_k", d->top_k);
    cJSON *tpe = cJSON_AddArrayToObject(j, "tokens_per_expert");
    if (!tpe)
        goto oom;
    for (uint32_t e = 0; e < d->num_experts; e++)
        cJSON_AddItemToArray(tpe, cJSON_CreateNumber(o->tpe[e]));
    cJSON_AddNumberToObject(j, "dropped", (double)o->stats.dropped);
    cJSON_AddNumberToObject(j, "load_balancing_loss", o->stats.load_balancing_loss);
    cJSON_AddNumberToObject(j, "router_z_loss", o->stats.router_z_loss);
    cJSON_AddNumberToObject(j, "routing_entropy", o->stats.routing_entropy);
    if (o->weight_bytes > 0) {
        cJSON_AddNumberToObject(j, "device_weight_bytes", o->weight_bytes);
        cJSON_AddNumberToObject(j, "host_weight_bytes", o->mem.host_weights);
        cJSON_AddNumberToObject(j, "host_imported_bytes", (double)o->mem.cache.host_imported_bytes);
    }
    if (o->mem.budgeted) {
        const moevk_cache_stats *c = &o->mem.cache;
        cJSON *cj = cJSON_AddObjectToObject(j, "cache");
        if (!cj)
            goto oom;
        cJSON_AddNumberToObject(cj, "vram_budget", (double)d->vram_budget);
        cJSON_AddNumberToObject(cj, "expert_device_bytes", (double)c->expert_device_bytes);
        cJSON_AddNumberToObject(cj, "device_slots", c->device_slots);
        cJSON_AddNumberToObject(cj, "resident_experts", c->resident_experts);
        cJSON_AddNumberToObject(cj, "passes", (double)c->passes);
        cJSON_AddNumberToObject(cj, "hits", (double)c->hits);
        cJSON_AddNumberToObject(cj, "misses", (double)c->misses);
        cJSON_AddNumberToObject(cj, "promotions", (double)c->promotions);
        cJSON_AddNumberToObject(cj, "evictions", (double)c->evictions);
        cJSON_AddNumberToObject(cj, "bytes_moved", (double)c->bytes_moved);
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text)
        goto oom;
    FILE *f = fopen(path, "w");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f))
        ok = 0;
    free(text);
    if (!ok) {
        char msg[1024];
        mvk_errf(msg, sizeof msg, "cannot write %s: %s", path, strerror(errno));
        fprintf(stderr, "moevk run: %s\n", msg);
        return 1;
    }
    return 0;
oom:
    cJSON_Delete(j);
    fprintf(stderr, "moevk run: out of host memory\n");
    return 1;
}

/* 0 finite, 1 NaN, 2 +Inf, 3 -Inf */
static int value_class(float v)
{
    return isnan(v) ? 1 : isinf(v) ? (v > 0 ? 2 : 3) : 0;
}

typedef struct y_compare {
    double rel;             /* relative L2 error over the values finite in both */
    uint64_t finite;        /* how many they are */
    uint64_t ref_nonfinite; /* values the reference has as NaN or Inf */
    uint64_t differ;        /* values whose class (NaN, +Inf, -Inf, finite) differs */
} y_compare;

/* y against the reference ref, tokens flagged in skip left out: where
 * either is NaN or Inf the classes must agree; the L2 error is over the
 * values finite in both. */
static void compare_y(const float *y, const float *ref, const uint8_t *skip, uint32_t T,
                      uint32_t H, y_compare *c)
{
    double num = 0, den = 0;
    memset(c, 0, sizeof(*c));
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t h = 0; h < H && !skip[t]; h++) {
            const float a = y[(size_t)t * H + h], b = ref[(size_t)t * H + h];
            const int ca = value_class(a), cb = value_class(b);
            c->ref_nonfinite += cb != 0;
            c->differ += ca != cb;
            if (ca || cb)
                continue;
            c->finite++;
            num += ((double)a - b) * ((double)a - b);
            den += (double)b * b;
        }
    c->rel = den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Warn (stderr) when v [T, H] holds NaN or Inf: how many, in how many
 * tokens. */
static void warn_nonfinite(const char *name, const float *v, uint32_t T, uint32_t H)
{
    uint64_t n = 0;
    uint32_t tokens = 0;
    for (uint32_t t = 0; t < T; t++) {
        uint64_t c = mvk_model_count_nonfinite(v + (size_t)t * H, MOEVK_DTYPE_F32, H);
        n += c;
        tokens += c > 0;
    }
    if (n)
        fprintf(stderr,
                "moevk run: warning: %s holds %llu non-finite value%s (NaN or Inf) in %u of %u "
                "token%s\n",
                name, (unsigned long long)n, n == 1 ? "" : "s", tokens, T, T == 1 ? "" : "s");
}

/* Compare with the CPU reference; tokens at a routing near-tie are left
 * out (docs/semantics.md, Tolerances). */
static int check_against_cpu(const run_opts *opt, uint32_t flags, const mvk_model_layer *ml,
                             const float *x, uint32_t T, uint32_t passes, uint32_t S,
                             const run_out *o)
{
    const moevk_layer_desc *d = &ml->desc;
    const uint32_t H = d->hidden, K = d->top_k;
    run_out r;
    uint8_t *near = malloc(T);
    if (run_out_alloc(&r, T, H, K, d->num_experts) || !near) {
        run_out_free(&r);
        free(near);
        fprintf(stderr, "moevk run: out of host memory for --check\n");
        return 1;
    }
    int rc = 1;
    if (run_backend(opt, mvk_backend_reference(), d, x, passes, S, &r, near))
        goto done;
    if (ml->dropped_passthrough)
        dropped_passthrough(d, x, T, &r);
    uint32_t excluded = 0, mismatched = 0;
    for (uint32_t t = 0; t < T; t++) {
        excluded += near[t] != 0;
        if (!near[t] && memcmp(o->ids + (size_t)t * K, r.ids + (size_t)t * K, 4ull * K))
            mismatched++;
    }
    y_compare c;
    compare_y(o->y, r.y, near, T, H, &c);
    double tol = mvkc_y_tolerance(d, flags);
    printf("check    relative L2 error %.3g over %llu values finite in both, vs the CPU "
           "reference (tolerance %g), %u token%s routed differently, %u near-tie token%s "
           "excluded\n",
           c.rel, (unsigned long long)c.finite, tol, mismatched, mismatched == 1 ? "" : "s",
           excluded, excluded == 1 ? "" : "s");
    printf("check    non-finite values: %llu in the reference, %llu position%s where the result "
           "differs (NaN, +Inf, -Inf or finite)\n",
           (unsigned long long)c.ref_nonfinite, (unsigned long long)c.differ,
           c.differ == 1 ? "" : "s");
    rc = (c.rel <= tol && mismatched == 0 && c.differ == 0) ? 0 : 1;
    if (rc)
        fprintf(stderr, "moevk run: the result does not match the CPU reference\n");
done:
    run_out_free(&r);
    free(near);
    return rc;
}

/* The backend --backend (and --cuda-impl) name, or NULL. */
static const mvk_backend *run_backend_of(const run_opts *o)
{
    if (!o->cuda_impl)
        return mvk_backend_find(o->backend);
    char name[64];
    snprintf(name, sizeof name, "cuda-%s", o->cuda_impl);
    return strcmp(o->backend, "cuda") ? NULL : mvk_backend_find(name);
}

static int parse_opts(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->layer = -1;
    o->backend = "vulkan";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        }
        int *flag = !strcmp(a, "--decoder")               ? &o->decoder
                    : !strcmp(a, "--validate")            ? &o->validate
                    : !strcmp(a, "--check")               ? &o->check
                    : !strcmp(a, "--dropped-passthrough") ? &o->passthrough
                    : !strcmp(a, "--batch-invariant")     ? &o->batch_invariant
                    : !strcmp(a, "--expert-parallel")     ? &o->expert_parallel
                                                          : NULL;
        if (flag) {
            *flag = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "moevk run: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--part")) o->part = v;
        else if (!strcmp(a, "--config")) o->config = v;
        else if (!strcmp(a, "--prefix")) o->prefix = v;
        else if (!strcmp(a, "--input")) o->input = v;
        else if (!strcmp(a, "--output")) o->output = v;
        else if (!strcmp(a, "--stats")) o->stats = v;
        else if (!strcmp(a, "--backend")) o->backend = v;
        else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--cuda-impl")) o->cuda_impl = v;
        else if (!strcmp(a, "--quantize")) o->quantize = v;
        else if (!strcmp(a, "--vram-budget")) o->vram_budget = v;
        else if (!strcmp(a, "--ranks")) {
            char *end = NULL;
            unsigned long r = strtoul(v, &end, 10);
            if (!*v || *end || r == 0 || r > 64) {
                fprintf(stderr, "moevk run: --ranks '%s' is not a count in 1..64\n", v);
                return 2;
            }
            o->ranks = (uint32_t)r;
        }
        else if (!strcmp(a, "--weights")) {
            if (o->nweights == (int)(sizeof o->weights / sizeof o->weights[0])) {
                fprintf(stderr, "moevk run: too many --weights\n");
                return 2;
            }
            o->weights[o->nweights++] = v;
        } else if (!strcmp(a, "--layer")) {
            char *end;
            errno = 0;
            long l = strtol(v, &end, 10);
            if (errno || *end || end == v || l < 0 || l > 1000000) {
                fprintf(stderr, "moevk run: --layer '%s' is not a layer index\n", v);
                return 2;
            }
            o->layer = l;
        } else {
            fprintf(stderr, "moevk run: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    const char *why = NULL;
    moevk_dtype qdt;
    if (!o->model == !o->config)
        why = "give either --model DIR or --config FILE with --weights";
    else if (o->model && o->nweights)
        why = "--weights goes with --config, not --model";
    else if (o->model && o->layer < 0 && !o->prefix)
        why = "--model needs --layer N (or --prefix P)";
    else if (o->model && o->layer >= 0 && o->prefix)
        why = "give --layer or --prefix, not both";
    else if (o->config && !o->nweights)
        why = "--config needs --weights FILE.safetensors";
    else if (o->config && !o->prefix)
        why = "--config needs --prefix P (the block's tensor-name prefix; \"\" for none)";
    else if (o->config && o->layer >= 0)
        why = "--layer goes with --model; with --config give --prefix";
    else if (!o->input)
        why = "--input X.safetensors is required";
    else if (o->quantize && mvk_dtype_parse(o->quantize, 1, &qdt))
        why = "--quantize must name an expert weight format (moevk_dtype_name: q8_0, q4_k, ...)";
    else if (o->quantize && !mvk_quantize_supported(qdt))
        why = "--quantize: moevk has no quantiser for that format (gptq4, nf4 and fp8_e4m3 are "
              "what quantised checkpoints are repacked into); use a ggml format: q8_0, q4_k, ...";
    else if (o->ranks && !o->expert_parallel)
        why = "--ranks goes with --expert-parallel";
    else if (o->expert_parallel && strcmp(o->backend, "vulkan"))
        why = "--expert-parallel runs on the vulkan backend (the library's moevk_ep_layer)";
    else if (o->expert_parallel && (o->check || o->passthrough))
        why = "--expert-parallel does not take --check or --dropped-passthrough (rank 0 has no "
              "routing of the other ranks' tokens)";
    else if (!run_backend_of(o))
        why = o->cuda_impl ? "--cuda-impl must be ref, cublas or cublas-f32 (with --backend cuda)"
                           : "--backend must name a backend (see moevk help)";
    if (why) {
        fprintf(stderr, "moevk run: %s\n", why);
        usage(stderr);
        return 2;
    }
    return 0;
}

/* Which input of the run the file `id` is, with its path in buf; NULL if
 * none. */
static const char *input_named(const mvk_file_id *id, const run_opts *o, const char *cfg_path,
                               const mvk_st_set *set, const mvk_gguf *gg, char *buf,
                               size_t bufsz)
{
    for (uint32_t i = 0; i < gg->nfiles; i++)
        if (mvk_file_is(gg->files[i].path, id)) {
            snprintf(buf, bufsz, "%s", gg->files[i].path);
            return "the GGUF model's";
        }
    if (mvk_file_is(o->input, id)) {
        snprintf(buf, bufsz, "%s", o->input);
        return "the input x";
    }
    if (mvk_file_is(cfg_path, id)) {
        snprintf(buf, bufsz, "%s", cfg_path);
        return "the config";
    }
    if (mvk_st_set_holds_file(set, id, buf, bufsz))
        return "the checkpoint's";
    return NULL;
}

/* --output and --stats may not name an input (compared as files, by device
 * and inode: any spelling, symlinks and hard links): the weights are
 * memory-mapped and read again by --check, and nothing given to read is
 * overwritten. Nor may they name one file. Checked before anything is
 * written. */
static int outputs_are_not_inputs(const run_opts *o, const char *cfg_path, const mvk_st_set *set,
                                  const mvk_gguf *gg, char *err, size_t errsz)
{
    const char *opt[2] = {"--output", "--stats"}, *path[2] = {o->output, o->stats};
    for (int i = 0; i < 2; i++) {
        mvk_file_id id;
        char in[1024];
        if (!path[i] || mvk_file_id_of(path[i], &id))
            continue; /* not there yet: a new file */
        const char *what = input_named(&id, o, cfg_path, set, gg, in, sizeof in);
        if (what)
            return mvk_errf(err, errsz,
                            "%s %s is the same file as %s %s: moevk run does not overwrite "
                            "its inputs",
                            opt[i], path[i], what, in);
    }
    mvk_file_id id;
    if (o->output && o->stats &&
        (!strcmp(o->output, o->stats) ||
         (!mvk_file_id_of(o->stats, &id) && mvk_file_is(o->output, &id))))
        return mvk_errf(err, errsz, "--stats %s is the same file as --output %s", o->stats,
                        o->output);
    return 0;
}

/* The input x as f32 [T, H]; shape kept for the output. */
static int read_input(const char *path, uint32_t H, float **x, uint32_t *ndim, uint64_t *shape,
                      uint32_t *T, char *err, size_t errsz)
{
    mvk_st_file f;
    if (mvk_st_open(path, &f, err, errsz))
        return -1;
    int rc = -1;
    char sb[160];
    const mvk_st_tensor *t = mvk_st_find(&f, "x");
    const uint64_t tokens = t ? t->numel / H : 0;
    if (!t)
        mvk_errf(err, errsz, "missing tensor 'x' in %s", path);
    else if (t->dtype < 0)
        mvk_errf(err, errsz, "tensor 'x' in %s has unsupported dtype %s (F32, F16 or BF16)", path,
                 t->dtype_name);
    else if ((t->ndim != 2 && t->ndim != 3) || t->shape[t->ndim - 1] != H)
        mvk_errf(err, errsz, "tensor 'x' in %s has shape %s; expected [T, %u] or [B, S, %u]",
                 path, mvk_shape_str(t->shape, t->ndim, sb, sizeof sb), H, H);
    else if (tokens == 0 || tokens > UINT32_MAX / 2 || tokens * H > SIZE_MAX / 8)
        mvk_errf(err, errsz, "tensor 'x' in %s has %llu tokens", path,
                 (unsigned long long)tokens);
    else if (!(*x = malloc(sizeof(float) * (size_t)t->numel)))
        mvk_errf(err, errsz, "out of host memory for the input");
    else {
        mvk_model_to_f32(t->data, t->dtype, (size_t)t->numel, *x);
        *ndim = t->ndim;
        memcpy(shape, t->shape, sizeof(uint64_t) * t->ndim);
        *T = (uint32_t)tokens;
        rc = 0;
    }
    mvk_st_close(&f);
    return rc;
}

static const char *routing_name(moevk_routing r)
{
    return r == MOEVK_ROUTING_TOPK_SOFTMAX     ? "topk_softmax"
           : r == MOEVK_ROUTING_SIGMOID_GROUPED ? "sigmoid_grouped"
           : r == MOEVK_ROUTING_EXPERT_CHOICE   ? "expert_choice"
           : r == MOEVK_ROUTING_SPARSEMIXER     ? "sparsemixer"
                                                : "softmax_topk";
}

/* The parameters of a limited or capped activation: " (limit L)", " (caps
 * G, U)", or "". */
static const char *act_params(char *buf, size_t n, moevk_activation a, float limit, float cg,
                              float cu)
{
    buf[0] = 0;
    if (a == MOEVK_ACT_SWIGLU_OAI || a == MOEVK_ACT_SWIGLU_CLAMP ||
        a == MOEVK_ACT_SWIGLU_POSTCLAMP)
        snprintf(buf, n, " (limit %g)", limit ? (double)limit : 7.0);
    else if (a == MOEVK_ACT_SWIGLU_SOFTCAP)
        snprintf(buf, n, " (caps %g, %g)", cg ? (double)cg : 4.0, cu ? (double)cu : 25.0);
    return buf;
}

int cli_run(int argc, char **argv)
{
    run_opts opt;
    int prc = parse_opts(argc, argv, &opt);
    if (prc)
        return prc == 1 ? 0 : prc;
    const mvk_backend *be = run_backend_of(&opt);

    char err[1024];
    int rc = 1;
    size_t len;
    float *x = NULL;
    run_out out;
    memset(&out, 0, sizeof out);
    const char *act_name = "";
    /* the block and the files it lies in (model/model_open.h; it is not
     * moved once open: the desc points into it) */
    mvk_model_block *blk = calloc(1, sizeof *blk);
    if (!blk) {
        fprintf(stderr, "moevk run: out of host memory\n");
        return 1;
    }
    mvk_st_set_init(&blk->set);
    mvk_model_layer *ml = &blk->layer;
    int ep_rank = 0, ep_size = 1;
    if (opt.ranks)
        ep_size = (int)opt.ranks;
    else if (opt.expert_parallel && cli_ep_begin(&argc, &argv, &ep_rank, &ep_size)) {
        fprintf(stderr, "moevk run: --expert-parallel: %s\n",
                MOEVK_HAVE_MPI ? "MPI could not be initialised"
                               : "this moevk was built without MPI (libopenmpi-dev)");
        free(blk);
        return 1;
    }
    mvk_moe_config *cfg = &blk->cfg;
    mvk_gguf *gg = &blk->gguf;
    const mvk_gguf_layer_info *ginfo = &blk->gguf_info;

    if (opt.model) {
        /* a GGUF file's blk.N, or a Hugging Face directory's layer or prefix */
        const char *why = !mvk_gguf_is_gguf(opt.model) ? NULL
                          : opt.prefix  ? "--prefix is not for a GGUF file: give --layer N"
                          : opt.decoder ? "--decoder is not for a GGUF file"
                          : opt.layer < 0 ? "a GGUF --model needs --layer N"
                                          : NULL;
        if (why) {
            fprintf(stderr, "moevk run: %s\n", why);
            rc = 2;
            goto done;
        }
        if (mvk_model_block_open(blk, opt.model, opt.layer, opt.prefix, opt.decoder, opt.part, err,
                                 sizeof err))
            goto fail;
        if (outputs_are_not_inputs(&opt, blk->cfg_path, &blk->set, gg, err, sizeof err)) {
            fprintf(stderr, "moevk run: %s\n", err);
            rc = 2;
            goto done;
        }
        act_name = blk->act_name;
        goto built;
    }

    /* --config and --weights: the block's tensors under --prefix */
    blk->cfg_path = mvk_strdup(opt.config);
    if (!blk->cfg_path ||
        mvk_read_text(blk->cfg_path, &blk->cfg_text, &len, err, sizeof err) ||
        mvk_hf_config_parse_part(blk->cfg_text, len, blk->cfg_path, opt.part, cfg, err,
                                 sizeof err))
        goto fail;

    char prefixes[MVK_MAX_PREFIXES][MVK_PREFIX_LEN];
    size_t pl = strlen(opt.prefix);
    if (pl + 2 > MVK_PREFIX_LEN) {
        snprintf(err, sizeof err, "--prefix is longer than %d characters", MVK_PREFIX_LEN - 2);
        goto fail;
    }
    snprintf(prefixes[0], MVK_PREFIX_LEN, "%s%s", opt.prefix,
             pl && opt.prefix[pl - 1] != '.' ? "." : "");
    for (int i = 0; i < opt.nweights; i++)
        if (mvk_st_set_add_file(&blk->set, opt.weights[i], err, sizeof err))
            goto fail;
    if (outputs_are_not_inputs(&opt, blk->cfg_path, &blk->set, gg, err, sizeof err)) {
        fprintf(stderr, "moevk run: %s\n", err);
        rc = 2;
        goto done;
    }
    const char *pp[1] = {prefixes[0]};
    if (mvk_model_layer_build_any(cfg, &blk->set, pp, 1, ml, err, sizeof err))
        goto fail;
    act_name = cfg->act_name;
built:
    if (opt.passthrough) {
        if (!ml->arch || !mvk_arch_has_capacity(ml->arch)) {
            char list[1024];
            snprintf(err, sizeof err, "--dropped-passthrough is only for %s",
                     mvk_arch_list(list, sizeof list, mvk_arch_has_capacity));
            goto fail;
        }
        ml->dropped_passthrough = 1;
    }
    moevk_layer_desc *d = &ml->desc;
    if (opt.batch_invariant || opt.expert_parallel)
        d->flags |= MOEVK_LAYER_BATCH_INVARIANT;
    const uint32_t H = d->hidden, E = d->num_experts, K = d->top_k;
    char where[160];
    uint64_t bad_weights = mvk_model_layer_nonfinite(ml, where, sizeof where);
    if (bad_weights)
        fprintf(stderr,
                "moevk run: warning: the weights hold %llu non-finite value%s (NaN or Inf), the "
                "first in %s\n",
                (unsigned long long)bad_weights, bad_weights == 1 ? "" : "s", where);

    uint32_t ndim = 0, T = 0;
    uint64_t shape[MVK_ST_MAX_DIMS] = {0};
    if (read_input(opt.input, H, &x, &ndim, shape, &T, err, sizeof err))
        goto fail;
    warn_nonfinite("x", x, T, H);
    /* switch_transformers' capacity counts per sequence: one pass each */
    uint32_t passes = 1, S = T;
    if (ml->expert_capacity && ndim == 3 && shape[0] > 1) {
        passes = (uint32_t)shape[0];
        S = (uint32_t)shape[1];
    }
    d->capacity_factor = mvk_model_capacity_factor(ml, S);
    if (opt.quantize) {
        d->flags |= MOEVK_LAYER_QUANTIZE;
        mvk_dtype_parse(opt.quantize, 1, &d->quantize_dtype);
        if (moevk_layer_desc_check(d, err, sizeof err))
            goto fail;
    }

    char sb[160], esc[1024];
    printf("model    %s, %s (%s)\n", model_name(ml), mvk_esc(ml->prefix, esc, sizeof esc),
           ml->layout);
    if (gg->nfiles) {
        printf("gguf     %s: GGUF v%u, %u file%s, layer %u of %u, %.2f MiB of the block's "
               "tensors in the file\n",
               mvk_esc(opt.model, esc, sizeof esc), gg->files[0].version, gg->nfiles,
               gg->nfiles == 1 ? "" : "s", ginfo->layer, ginfo->block_count,
               ginfo->file_bytes / 1048576.0);
        for (const char *p = ginfo->tensors; *p;) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            printf("tensor   %.*s\n", (int)n, p);
            p += n + (nl != NULL);
        }
        if (ginfo->notes[0])
            printf("convert  %s\n", ginfo->notes);
    }
    char wfm[200], ap[64];
    /* a clamp that this layer does without (a per-layer limit of 0) */
    const char *unclamped = cfg->activation != d->activation &&
                                    d->activation == MOEVK_ACT_SWIGLU
                                ? " (not clamped in this layer)"
                                : act_params(ap, sizeof ap, d->activation, d->swiglu_limit,
                                             d->softcap_gate, d->softcap_up);
    char rp[48] = "";
    if (d->norm_topk_prob)
        snprintf(rp, sizeof rp, " (normalised)");
    else if (d->routing == MOEVK_ROUTING_SPARSEMIXER)
        snprintf(rp, sizeof rp, " (jitter_eps %g)", (double)d->jitter_eps);
    printf("layer    H=%u F=%u E=%u k=%u, %s routing%s, %s%s, %s weights%s", H, d->ffn, E, K,
           routing_name(d->routing), rp, act_name,
           unclamped,
           d->flags & MOEVK_LAYER_MATRIX_DTYPES ? mvk_desc_formats(d, wfm, sizeof wfm)
                                                : moevk_dtype_name(d->weight_dtype),
           ml->converted ? " (mixed in the file: converted)" : "");
    if (d->flags & MOEVK_LAYER_SHARED_ACTIVATION) {
        const float sl = d->shared_swiglu_limit ? d->shared_swiglu_limit : d->swiglu_limit;
        printf(", shared experts' activation %s%s",
               d->shared_activation == cfg->shared_activation ? cfg->shared_act_name : "silu",
               d->shared_activation == MOEVK_ACT_SWIGLU && cfg->shared_activation != d->shared_activation
                   ? " (not clamped in this layer)"
                   : act_params(ap, sizeof ap, d->shared_activation, sl, d->softcap_gate,
                                d->softcap_up));
    }
    if (d->n_group > 1 && d->topk_group < d->n_group)
        printf(", %u of %u expert groups (%s)", d->topk_group, d->n_group,
               d->group_score == MOEVK_GROUP_MAX ? "each scored by its best"
                                                 : "each scored by its best two");
    if (d->norm_topk_prob && d->norm_p != 0.0f && d->norm_p != 1.0f)
        printf(", %g-norm", d->norm_p);
    if (d->norm_topk_prob && d->norm_min > 0.0f)
        printf(", normalised over max(sum, %g)", d->norm_min);
    if (d->norm_topk_prob && d->norm_eps > 0.0f)
        printf(", normalised over sum + %g", d->norm_eps);
    if (d->correction_bias)
        printf(", selection bias");
    if (d->num_zero_experts)
        printf(", %u of the %u experts identity (zero) experts", d->num_zero_experts,
               d->num_experts);
    if (d->router_norm_eps > 0.0f)
        printf(", router input normed (eps %g)%s", d->router_norm_eps,
               d->router_input_scale ? " and scaled" : "");
    if (d->expert_norm_eps > 0.0f)
        printf(", expert input normed (eps %g)", d->expert_norm_eps);
    if (d->expert_weight_scale)
        printf(", per-expert weight scales");
    if (d->routed_scaling_factor != 0.0f && d->routed_scaling_factor != 1.0f)
        printf(", weights x %g", d->routed_scaling_factor);
    if (d->flags & MOEVK_LAYER_WEIGHTS_ON_INPUT)
        printf(", weights on the experts' inputs");
    if (d->num_shared > 1)
        printf(", %u shared experts F=%u", d->num_shared, d->shared_ffn);
    else if (d->num_shared)
        printf(", shared expert F=%u", d->shared_ffn);
    if (d->num_shared)
        printf("%s", d->shared_sink  ? " (gates in the normalisation)"
                     : d->shared_gate ? " (gated)"
                                      : "");
    if (d->score_fn == MOEVK_SCORE_SQRTSOFTPLUS)
        printf(", sqrt(softplus) scores");
    if (ml->expert_capacity)
        printf(", expert_capacity %llu per sequence%s", (unsigned long long)ml->expert_capacity,
               ml->dropped_passthrough ? " (dropped: p * x)" : "");
    printf("\n");
    if (ml->quant[0])
        printf("quant    %s\n", ml->quant);
    printf("input    x %s -> %u tokens%s\n", mvk_shape_str(shape, ndim, sb, sizeof sb), T,
           passes > 1 ? " (one pass per sequence)" : "");
    moevk_layer_desc dev_desc; /* the formats on the device */
    {
        mvk_layer_desc_defaults(d, &dev_desc);
        mvk_matrix_kind kind[4];
        mvk_layer_matrices(&dev_desc, kind);
        dev_desc.experts.gate_up_dtype = kind[0].target;
        dev_desc.experts.down_dtype = kind[1].target;
        dev_desc.shared.gate_up_dtype = kind[2].target;
        dev_desc.shared.down_dtype = kind[3].target;
        if (opt.quantize) {
            char fm[200];
            printf("quantise %s -> %s at load", moevk_dtype_name(d->weight_dtype),
                   mvk_desc_formats(&dev_desc, fm, sizeof fm));
            for (int i = 0; i < 4; i++)
                if (kind[i].row && kind[i].target != d->quantize_dtype)
                    printf("; %s %s rows: %s = %u is not a whole number of %s blocks, %s "
                           "instead (%s)",
                           kind[i].set, i % 2 ? "down" : "gate/up", kind[i].row_name,
                           kind[i].row, moevk_dtype_name(d->quantize_dtype),
                           moevk_dtype_name(kind[i].target),
                           moevk_dtype_block_elems(kind[i].target) > 1 ? "llama.cpp's fallback"
                                                                       : "no block format fits");
            printf("\n");
        }
    }

    if (opt.vram_budget) {
        uint64_t budget;
        const double routed = mvk_desc_routed_bytes(&dev_desc);
        if (mvk_parse_budget(opt.vram_budget, routed, &budget, err, sizeof err))
            goto fail;
        mvk_desc_set_budget(d, budget);
        /* the checkpoint's arrays outlive the layer: the GPU may read them
         * where they lie (a GGUF file's mapping) */
        if (!opt.quantize)
            d->flags |= MOEVK_LAYER_IMPORT_HOST_EXPERTS;
        printf("budget   %.2f MiB of device memory for the routed experts (%.2f MiB in all)\n",
               budget / 1048576.0, routed / 1048576.0);
    }
    if (run_out_alloc(&out, T, H, K, E)) {
        snprintf(err, sizeof err, "out of host memory for %u tokens", T);
        goto fail;
    }
    if (opt.expert_parallel) {
        if (passes > 1) {
            snprintf(err, sizeof err, "--expert-parallel: this block's capacity counts per "
                                      "sequence (one pass each), which is not expert parallel yet");
            goto fail;
        }
        moevk_routing_stats es = {.tokens_per_expert = out.tpe};
        char dev[256] = "";
        if (opt.ranks ? cli_ep_run_threads(d, opt.device, opt.validate, opt.ranks, x, T, out.y,
                                           &es, dev, sizeof dev, &out.create_ms,
                                           &out.forward_ms, err, sizeof err)
                      : cli_ep_run(d, opt.device, opt.validate, x, T, out.y, &es, dev,
                                   sizeof dev, &out.create_ms, &out.forward_ms, err, sizeof err))
            goto fail;
        out.stats = es;
        out.stats.tokens_per_expert = NULL;
        out.uploads = 1;
        snprintf(out.device, sizeof out.device, "%s, expert parallel over %d %s", dev, ep_size,
                 opt.ranks ? "threads" : "MPI ranks");
        if (ep_rank != 0) { /* rank 0 reports and writes */
            rc = 0;
            goto done;
        }
    } else if (run_backend(&opt, be, d, x, passes, S, &out, NULL)) {
        goto done;
    }
    if (ml->dropped_passthrough)
        dropped_passthrough(d, x, T, &out);
    warn_nonfinite("y", out.y, T, H);
    if (merge_stats(d, x, T, passes, &out)) {
        snprintf(err, sizeof err, "out of host memory for the statistics");
        goto fail;
    }
    printf("backend  %s: %s\n", opt.backend, out.device);
    if (out.weight_bytes > 0) {
        char fm[200];
        printf("memory   weights %.2f MiB on the device (experts %.2f MiB, %s)\n",
               out.weight_bytes / 1048576.0, mvk_desc_expert_bytes(&dev_desc) / 1048576.0,
               mvk_desc_formats(&dev_desc, fm, sizeof fm));
    }
    if (out.mem.budgeted) {
        const moevk_cache_stats *c = &out.mem.cache;
        if (out.mem.host_weights > 0)
            printf("cache    %u of %u experts on the device (%.2f MiB), all %u in host memory "
                   "(%.2f MiB%s); rows from the device %llu, from host memory %llu\n",
                   c->resident_experts, E, c->expert_device_bytes / 1048576.0, E,
                   out.mem.host_weights / 1048576.0,
                   c->host_imported_bytes ? ", the file's own pages, imported" : ", a copy",
                   (unsigned long long)c->hits, (unsigned long long)c->misses);
        else
            printf("cache    the budget holds every expert: all %u on the device (%.2f MiB)\n",
                   E, c->expert_device_bytes / 1048576.0);
    }
    if (out.uploads)
        printf("time     layer create (upload) %.1f ms, forward %.2f ms\n", out.create_ms,
               out.forward_ms);
    else
        printf("time     forward %.2f ms\n", out.forward_ms);
    printf("routing  dropped %llu, load-balancing loss %.4f, z-loss %.4f, entropy %.4f\n",
           (unsigned long long)out.stats.dropped, out.stats.load_balancing_loss,
           out.stats.router_z_loss, out.stats.routing_entropy);

    if (opt.output) {
        mvk_st_out o = {.name = "y", .dtype = "F32", .ndim = ndim, .data = out.y};
        memcpy(o.shape, shape, sizeof(uint64_t) * ndim);
        if (mvk_st_write(opt.output, &o, 1, err, sizeof err))
            goto fail;
        printf("output   %s: y %s f32\n", mvk_esc(opt.output, esc, sizeof esc),
               mvk_shape_str(shape, ndim, sb, sizeof sb));
    }
    if (opt.stats && write_stats(opt.stats, &opt, ml, T, passes, &out))
        goto done;
    if (opt.check && !(be->flags & MVK_BACKEND_REFERENCE) &&
        check_against_cpu(&opt, be->flags, ml, x, T, passes, S, &out))
        goto done;
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moevk run: %s\n", err);
done:
    run_out_free(&out);
    free(x);
    mvk_model_block_close(blk);
    free(blk);
    if (opt.expert_parallel && !opt.ranks)
        cli_ep_end();
    return rc;
}
