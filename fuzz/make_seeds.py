#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets (Python standard library only).

usage: python3 fuzz/make_seeds.py OUTDIR
writes OUTDIR/safetensors/*.safetensors (tiny MoE blocks in every layout the
loader reads, shaped for the configs in fuzz_safetensors.c) and
OUTDIR/config/*.json (a config.json per architecture, an index file) and
OUTDIR/gguf/*.gguf (the GGUF fixtures of tests/gguf: a MoE block per
architecture and block format, each under 64 KiB).
"""
import glob
import shutil
import json
import os
import struct
import sys

H, F, E = 2, 1, 2
FMT = {"F32": ("<f", 4), "F16": ("<e", 2)}


def bf16(v):
    return struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:]


def tensor_bytes(dtype, values):
    if dtype in ("I32", "U8", "F8_E4M3"):  # patterned raw bytes (no e4m3fn NaN)
        size = 4 if dtype == "I32" else 1
        return bytes((j * 37 + 11) % 0x7e for j in range(len(values) * size))
    if dtype == "BF16":
        return b"".join(bf16(v) for v in values)
    fmt, _ = FMT[dtype]
    return b"".join(struct.pack(fmt, v) for v in values)


def safetensors(tensors):
    """tensors: list of (name, dtype, shape) or (name, "U8", shape, raw bytes)."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for i, (name, dtype, shape, *raw) in enumerate(tensors):
        n = 1
        for d in shape:
            n *= d
        blob = raw[0] if raw else tensor_bytes(dtype, [((i * 7 + j) % 5 - 2) * 0.25 for j in range(n)])
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def per_expert(g, u, d, dtype="BF16", router="gate.weight"):
    t = [(router, dtype, [E, H])]
    for i in range(E):
        t += [(f"experts.{i}.{g}.weight", dtype, [F, H]),
              (f"experts.{i}.{u}.weight", dtype, [F, H]),
              (f"experts.{i}.{d}.weight", dtype, [H, F])]
    return t


SHARED = [("shared_expert.gate_proj.weight", "F16", [2, H]),
          ("shared_expert.up_proj.weight", "F16", [2, H]),
          ("shared_expert.down_proj.weight", "F16", [H, 2])]

ST = {
    "mixtral_w123": per_expert("w1", "w3", "w2"),
    "stacked_f32": [("gate.weight", "F32", [E, H]),
                    ("experts.gate_up_proj", "F32", [E, 2 * F, H]),
                    ("experts.down_proj", "F32", [E, H, F])],
    "qwen2_shared": per_expert("gate_proj", "up_proj", "down_proj", "F16") + SHARED
    + [("shared_expert_gate.weight", "F16", [1, H])],
    "deepseek": per_expert("gate_proj", "up_proj", "down_proj")
    + [("gate.e_score_correction_bias", "F32", [E])]
    + [("shared_experts.gate_proj.weight", "BF16", [F, H]),
       ("shared_experts.up_proj.weight", "BF16", [F, H]),
       ("shared_experts.down_proj.weight", "BF16", [H, F])],
    "gpt_oss": [("router.weight", "BF16", [E, H]), ("router.bias", "BF16", [E]),
                ("experts.gate_up_proj", "BF16", [E, H, 2 * F]),
                ("experts.gate_up_proj_bias", "BF16", [E, 2 * F]),
                ("experts.down_proj", "BF16", [E, F, H]),
                ("experts.down_proj_bias", "BF16", [E, H])],
    "switch": [("router.classifier.weight", "F32", [E, H]), ("router.classifier.bias", "F32", [E])]
    + [t for i in range(E) for t in ((f"experts.expert_{i}.wi.weight", "F32", [F, H]),
                                      (f"experts.expert_{i}.wo.weight", "F32", [H, F]))],
    "empty": [],
}


def quantised(kind, H, F):
    """A per-expert mixtral block (qwen3 names for fp8) as a quantiser writes it."""
    names = ("w1", "w3", "w2") if kind != "fp8" else ("gate_proj", "up_proj", "down_proj")
    t = [("gate.weight", "BF16", [E if kind != "fp8" else 1, H])]
    for i in range(E if kind != "fp8" else 1):
        for n, (rows, cols) in zip(names, ((F, H), (F, H), (H, F))):
            b = f"experts.{i}.{n}"
            if kind == "gptq":
                t += [(b + ".qweight", "I32", [cols // 8, rows]),
                      (b + ".qzeros", "I32", [cols // 32, rows // 8]),
                      (b + ".scales", "F16", [cols // 32, rows]),
                      (b + ".g_idx", "I32", [cols], bytes(4 * cols))]
            elif kind == "awq":
                t += [(b + ".qweight", "I32", [cols, rows // 8]),
                      (b + ".qzeros", "I32", [cols // 32, rows // 8]),
                      (b + ".scales", "F16", [cols // 32, rows])]
            elif kind == "bnb":
                js = json.dumps({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16",
                                 "shape": [rows, cols], "nested_blocksize": 256,
                                 "nested_dtype": "float32", "nested_offset": 0.01}).encode()
                nb = rows * cols // 64
                t += [(b + ".weight", "U8", [rows * cols // 2, 1]),
                      (b + ".weight.absmax", "U8", [nb]),
                      (b + ".weight.nested_absmax", "F32", [(nb + 255) // 256]),
                      (b + ".weight.nested_quant_map", "F32", [256]),
                      (b + ".weight.quant_state.bitsandbytes__nf4", "U8", [len(js)], js)]
            else:
                t += [(b + ".weight", "F8_E4M3", [rows, cols]),
                      (b + ".weight_scale_inv", "F32", [(rows + 63) // 64, (cols + 127) // 128])]
    return t


ST.update({"gptq": quantised("gptq", 32, 32), "awq": quantised("awq", 32, 32),
           "bnb_nf4": quantised("bnb", 64, 64), "fp8": quantised("fp8", 128, 128)})

CONFIGS = {
    "mixtral": {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
                "num_local_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 32},
    "qwen2_moe": {"model_type": "qwen2_moe", "num_experts": 60, "decoder_sparse_step": 1,
                  "mlp_only_layers": [0, 2], "shared_expert_intermediate_size": 5632,
                  "norm_topk_prob": False},
    "qwen3_moe": {"model_type": "qwen3_moe", "num_experts": 128, "norm_topk_prob": True,
                  "moe_intermediate_size": 768, "num_hidden_layers": 48},
    "deepseek_v3": {"model_type": "deepseek_v3", "n_routed_experts": 256, "n_group": 8,
                    "topk_group": 4, "routed_scaling_factor": 2.5, "n_shared_experts": 1,
                    "first_k_dense_replace": 3, "norm_topk_prob": True},
    "olmoe": {"model_type": "olmoe", "num_experts": 64, "num_experts_per_tok": 8},
    "gpt_oss": {"model_type": "gpt_oss", "num_local_experts": 32, "experts_per_token": 4,
                "swiglu_limit": 7.0, "hidden_act": "silu"},
    "switch": {"model_type": "switch_transformers", "d_model": 768, "d_ff": 3072,
               "num_experts": 8, "expert_capacity": 64, "num_layers": 12,
               "num_sparse_encoder_layers": 6, "num_decoder_layers": 12,
               "num_sparse_decoder_layers": 6, "dense_act_fn": "relu", "router_bias": False},
    "gptq": {"model_type": "mixtral", "quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": False,
        "checkpoint_format": "gptq_v2"}},
    "awq": {"model_type": "mixtral", "quantization_config": {
        "quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
        "version": "GEMM"}},
    "bnb": {"model_type": "qwen2_moe", "quantization_config": {
        "quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True}},
    "fp8": {"model_type": "deepseek_v3", "quantization_config": {
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
        "weight_block_size": [128, 128]}},
    "index": {"metadata": {"total_size": 1234},
              "weight_map": {"model.layers.0.mlp.gate.weight": "model-00001-of-00002.safetensors",
                             "lm_head.weight": "model-00002-of-00002.safetensors"}},
}


def main():
    out = sys.argv[1]
    os.makedirs(f"{out}/safetensors", exist_ok=True)
    os.makedirs(f"{out}/config", exist_ok=True)
    for name, tensors in ST.items():
        with open(f"{out}/safetensors/{name}.safetensors", "wb") as f:
            f.write(safetensors(tensors))
    for name, cfg in CONFIGS.items():
        with open(f"{out}/config/{name}.json", "w") as f:
            json.dump(cfg, f)
    os.makedirs(f"{out}/gguf", exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "..", "tests", "gguf", "*.gguf"))):
        shutil.copy(path, f"{out}/gguf/")
    # inputs that once crashed a target, kept as seeds (fuzz/regress/TARGET/)
    for path in sorted(glob.glob(os.path.join(here, "regress", "*", "*"))):
        target = os.path.basename(os.path.dirname(path))
        os.makedirs(f"{out}/{target}", exist_ok=True)
        shutil.copy(path, f"{out}/{target}/")


if __name__ == "__main__":
    main()
