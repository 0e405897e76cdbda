/*
 * moevk info: every Vulkan device and the capabilities moevk records; with
 * --model FILE.gguf or DIR, the MoE layers of a GGUF model or of a Hugging
 * Face checkpoint instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model/gguf.h"
#include "model/gguf_layer.h"
#include "model/hf_config.h"
#include "model/model_layer.h"
#include "model/model_util.h"
#include "model/safetensors.h"
#include "quantize.h"
#include "util/tool.h"

/* Device bytes of a layer's weights: experts (per-matrix formats), router,
 * shared-expert gate, biases. */
static double layer_weight_bytes(const moevk_layer_desc *d)
{
    const double E = d->num_experts, H = d->hidden, F = d->ffn;
    const double EF = d->num_experts - d->num_zero_experts; /* with weights */
    double b = mvk_desc_expert_bytes(d) + E * H * (double)moevk_dtype_size(d->router_dtype);
    b += d->shared_gate ? d->num_shared * H * (double)moevk_dtype_size(d->router_dtype) : 0;
    b += d->router_bias ? 4 * E : 0;
    b += d->correction_bias ? 4 * E : 0;
    b += d->experts.gate_bias ? 4 * EF * F : 0;
    b += d->experts.up_bias ? 4 * EF * F : 0;
    b += d->experts.down_bias ? 4 * EF * H : 0;
    return b;
}

/* One MoE layer's line: its shape, formats and device bytes, then `tail`. */
static double print_layer(uint32_t l, const moevk_layer_desc *d, const char *tail)
{
    char fm[200];
    const double bytes = layer_weight_bytes(d);
    printf("layer %-3u MoE  H=%u F=%u E=%u k=%u%s, %s, %.2f MiB on the device%s\n", l,
           d->hidden, d->ffn, d->num_experts, d->top_k, d->num_shared ? ", shared expert" : "",
           d->flags & MOEVK_LAYER_MATRIX_DTYPES ? mvk_desc_formats(d, fm, sizeof fm)
                                                : moevk_dtype_name(d->weight_dtype),
           bytes / 1048576.0, tail);
    return bytes;
}

/* The MoE layers of a GGUF model: each layer's block or why it has none. */
static int info_gguf(const char *path)
{
    mvk_gguf m;
    char err[1024], esc[1024];
    if (mvk_gguf_open(path, &m, err, sizeof err)) {
        fprintf(stderr, "moevk info: %s\n", err);
        return 1;
    }
    const mvk_gguf_arch *arch;
    uint32_t blocks = 0;
    if (mvk_gguf_model_arch(&m, &arch, &blocks, err, sizeof err)) {
        fprintf(stderr, "moevk info: %s\n", err);
        mvk_gguf_free(&m);
        return 1;
    }
    /* the layers that have tensors: blk.N. up to the highest N among them
     * (a block_count beyond it is not walked one empty layer at a time) */
    uint32_t with_tensors = 0;
    for (size_t i = 0; i < m.ntensors; i++) {
        unsigned long n;
        if (sscanf(m.tensors[i]->name, "blk.%lu.", &n) == 1 && n < UINT32_MAX &&
            n + 1 > with_tensors)
            with_tensors = (uint32_t)n + 1;
    }
    if (!blocks) /* no block_count */
        blocks = with_tensors;
    printf("%s: GGUF v%u, %u file%s, %zu tensors, general.architecture %s (%s), %u layers\n",
           mvk_esc(path, esc, sizeof esc), m.files[0].version, m.nfiles,
           m.nfiles == 1 ? "" : "s", m.ntensors, arch->name, arch->models, blocks);
    double total = 0;
    uint32_t moe = 0;
    for (uint32_t l = 0; l < blocks && l < with_tensors; l++) {
        mvk_model_layer L;
        mvk_gguf_layer_info gi;
        if (mvk_gguf_layer_build(&m, l, &L, &gi, err, sizeof err)) {
            printf("layer %-3u dense or not runnable: %s\n", l, err);
            continue;
        }
        char tail[64];
        snprintf(tail, sizeof tail, " (%.2f MiB in the file)", gi.file_bytes / 1048576.0);
        total += print_layer(l, &L.desc, tail);
        moe++;
        mvk_model_layer_free(&L);
    }
    if (blocks > with_tensors)
        printf("layer %u..%u: no tensors in the file\n", with_tensors, blocks - 1);
    printf("total    %u MoE layer%s, %.2f MiB of MoE weights on the device\n", moe,
           moe == 1 ? "" : "s", total / 1048576.0);
    mvk_gguf_free(&m);
    return 0;
}

/* The routed and shared experts' device bytes if quantised to dt (rows that
 * are not whole blocks in llama.cpp's fallback format, as --quantize does). */
static double bytes_at(const moevk_layer_desc *d, moevk_dtype dt)
{
    moevk_layer_desc q = *d;
    q.flags |= MOEVK_LAYER_MATRIX_DTYPES;
    const uint32_t fs = d->shared_ffn ? d->shared_ffn : d->ffn;
    q.experts.gate_up_dtype = mvk_quantize_fallback(dt, d->hidden);
    q.experts.down_dtype = mvk_quantize_fallback(dt, d->ffn);
    q.shared.gate_up_dtype = mvk_quantize_fallback(dt, d->hidden);
    q.shared.down_dtype = mvk_quantize_fallback(dt, fs);
    return layer_weight_bytes(d) - mvk_desc_expert_bytes(d) + mvk_desc_expert_bytes(&q);
}

/* The MoE layers of a Hugging Face checkpoint directory: each layer's
 * block (formats, device bytes as stored and quantised) or why it has none. */
static int info_hf(const char *dir, const char *part)
{
    char err[1024], esc[1024];
    char *cfg_path = mvk_strcat2(dir, "/config.json"), *text = NULL;
    size_t len = 0;
    mvk_moe_config cfg;
    memset(&cfg, 0, sizeof cfg);
    mvk_st_set set;
    mvk_st_set_init(&set);
    int rc = 1;
    if (!cfg_path || mvk_read_text(cfg_path, &text, &len, err, sizeof err) ||
        mvk_hf_config_parse_part(text, len, cfg_path, part, &cfg, err, sizeof err) ||
        mvk_st_set_open_dir(&set, dir, err, sizeof err)) {
        fprintf(stderr, "moevk info: %s\n", cfg_path ? err : "out of host memory");
        goto done;
    }
    printf("%s: model_type %s, %u layers%s\n", mvk_esc(dir, esc, sizeof esc),
           mvk_arch_name(cfg.arch), cfg.num_layers,
           mvk_arch_has_decoder(cfg.arch) ? " (the encoder's; decoder: run --decoder)" : "");
    double total = 0;
    uint32_t moe = 0;
    for (uint32_t l = 0; l < cfg.num_layers; l++) {
        char prefixes[MVK_MAX_PREFIXES][MVK_PREFIX_LEN];
        int n = 0;
        mvk_model_layer L;
        if (mvk_hf_layer_prefixes(&cfg, l, 0, prefixes, &n, err, sizeof err)) {
            printf("layer %-3u dense: %s\n", l, err);
            continue;
        }
        const char *pp[MVK_MAX_PREFIXES];
        for (int i = 0; i < MVK_MAX_PREFIXES; i++)
            pp[i] = prefixes[i];
        if (mvk_model_layer_build_any(&cfg, &set, pp, n, &L, err, sizeof err)) {
            printf("layer %-3u not runnable: %s\n", l, err);
            continue;
        }
        char tail[80];
        snprintf(tail, sizeof tail, " (q8_0 %.2f, q4_k %.2f MiB)",
                 bytes_at(&L.desc, MOEVK_DTYPE_Q8_0) / 1048576.0,
                 bytes_at(&L.desc, MOEVK_DTYPE_Q4_K) / 1048576.0);
        total += print_layer(l, &L.desc, tail);
        moe++;
        mvk_model_layer_free(&L);
    }
    printf("total    %u MoE layer%s, %.2f MiB of MoE weights on the device\n", moe,
           moe == 1 ? "" : "s", total / 1048576.0);
    rc = 0;
done:
    mvk_st_set_free(&set);
    mvk_hf_config_free(&cfg);
    free(text);
    free(cfg_path);
    return rc;
}

static const char *type_name(uint32_t t)
{
    static const char *const names[] = {"other", "integrated GPU", "discrete GPU",
                                        "virtual GPU", "CPU"};
    return t < 5 ? names[t] : "unknown";
}

static void print_device(uint32_t i, const moevk_device_info *d)
{
    printf("device %u: %s\n", i, d->name);
    printf("  type                      %s\n", type_name(d->device_type));
    printf("  vendor:device             0x%04x:0x%04x\n", d->vendor_id, d->device_id);
    printf("  Vulkan                    %u.%u.%u\n", d->api_version >> 22,
           (d->api_version >> 12) & 0x3ff, d->api_version & 0xfff);
    printf("  driver                    %s (%s)\n", d->driver_name, d->driver_info);
    printf("  subgroup size             %u (min %u, max %u)\n", d->subgroup_size,
           d->min_subgroup_size, d->max_subgroup_size);
    printf("  shared memory             %u bytes\n", d->max_shared_memory);
    printf("  workgroup invocations     %u\n", d->max_workgroup_invocations);
    printf("  workgroup count           %u x %u x %u\n", d->max_workgroup_count[0],
           d->max_workgroup_count[1], d->max_workgroup_count[2]);
    printf("  push constants            %u bytes\n", d->max_push_constants);
    printf("  maxStorageBufferRange     %llu bytes\n",
           (unsigned long long)d->max_storage_buffer_range);
    printf("  maxMemoryAllocationSize   %llu bytes\n", (unsigned long long)d->max_allocation_size);
    printf("  maxMemoryAllocationCount  %u\n", d->max_allocation_count);
    printf("  device-local memory       %.2f GiB\n", d->device_local_bytes / 1073741824.0);
    printf("  fp16 arithmetic           %s\n", d->fp16_arith ? "yes" : "no");
    printf("  int8 arithmetic           %s\n", d->int8_arith ? "yes" : "no");
    printf("  16-bit storage            %s\n", d->storage_16bit ? "yes" : "no");
    printf("  8-bit storage             %s\n", d->storage_8bit ? "yes" : "no");
    printf("  bf16 (KHR_shader_bfloat16) %s\n", d->bf16 ? "yes" : "no");
    printf("  cooperative matrix        %s\n", d->cooperative_matrix ? "yes" : "no");
    if (d->cooperative_matrix) {
        /* whether moevk uses them: a context on the device runs the self-check */
        char idx[16];
        snprintf(idx, sizeof idx, "%u", i);
        moevk_context_desc cd = {.device = idx, .log = mvk_tool_log,
                                 .log_level = MOEVK_LOG_WARN};
        moevk_context *ctx = NULL;
        int mu = 0;
        if (moevk_context_create(&cd, &ctx) == MOEVK_SUCCESS &&
            moevk_context_self_check(ctx) == MOEVK_SUCCESS)
            mu = moevk_context_device_info(ctx)->matrix_units;
        moevk_context_destroy(ctx);
        printf("  matrix units (experts)    %s\n",
               mu > 0   ? "cooperative matrices, self-check passed"
               : mu < 0 ? "off: the self-check disagreed with the portable kernel"
                        : "not used (this build, shape, subgroup size or features)");
    }
    printf("  memory budget ext         %s\n", d->memory_budget ? "yes" : "no");
    if (d->external_memory_host)
        printf("  host memory import        yes (VK_EXT_external_memory_host, %llu-byte "
               "alignment)\n", (unsigned long long)d->host_pointer_alignment);
    else
        printf("  host memory import        no\n");
    if (d->timestamps)
        printf("  timestamps                yes (%.3f ns/tick, %u valid bits)\n",
               d->timestamp_period_ns, d->timestamp_valid_bits);
    else
        printf("  timestamps                no\n");
}

int cli_info(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: moevk info [--model FILE.gguf|DIR [--part NAME]]\n  Lists every Vulkan "
                   "device with its capabilities; with --model, the MoE layers\n  of a GGUF model "
                   "or a Hugging Face checkpoint directory (formats, device\n  bytes per layer; "
                   "for a checkpoint also at q8_0 and q4_k); --part: a second\n  model of the "
                   "checkpoint, configured in NAME_config (qwen3_omni_moe's talker).\n");
            return 0;
        }
        if (!strcmp(argv[i], "--model") || !strcmp(argv[i], "--part")) {
            /* --model PATH, with --part NAME in either order */
            const char *model = NULL, *part = NULL;
            for (int j = 1; j < argc; j += 2) {
                const char **slot = !strcmp(argv[j], "--model")  ? &model
                                    : !strcmp(argv[j], "--part") ? &part
                                                                 : NULL;
                if (!slot || j + 1 >= argc || *slot) {
                    fprintf(stderr, "moevk info: unexpected '%s' (usage: moevk info --model "
                                    "PATH [--part NAME])\n",
                            argv[j]);
                    return 2;
                }
                *slot = argv[j + 1];
            }
            if (!model) {
                fprintf(stderr, "moevk info: --part goes with --model DIR\n");
                return 2;
            }
            if (part && mvk_gguf_is_gguf(model)) {
                fprintf(stderr, "moevk info: --part is not for a GGUF file\n");
                return 2;
            }
            return mvk_gguf_is_gguf(model) ? info_gguf(model) : info_hf(model, part);
        }
        fprintf(stderr, "moevk info: unknown option '%s'\n", argv[i]);
        return 2;
    }
    moevk_device_info infos[16];
    uint32_t n = 0;
    moevk_context_desc d = {.log = mvk_tool_log, .log_level = MOEVK_LOG_ERROR};
    moevk_status st = moevk_enumerate_devices(&d, infos, 16, &n);
    if (st) {
        fprintf(stderr, "moevk info: %s\n", moevk_status_string(st));
        return 1;
    }
    printf("%u Vulkan device%s\n", n, n == 1 ? "" : "s");
    for (uint32_t i = 0; i < n && i < 16; i++)
        print_device(i, &infos[i]);
    return 0;
}
