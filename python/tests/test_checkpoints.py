"""Layer.from_pretrained on the repository's small checkpoints: every
Hugging Face block of tests/fixtures/hf_blocks (transformers' own float64
output beside each) on the CPU reference and on Vulkan, some GGUF blocks of
tests/gguf (llama.cpp's maths, written by gguf-py), quantisation and a
device-memory budget at load."""

import json
import os

import numpy as np
import pytest

import moevk
from conftest import FIXTURES, GGUF_FIXTURES, numpy_layer, read_safetensors


# the model types moevk reads with an encoder and a decoder stack
ENCODER_DECODER = ("switch_transformers", "nllb-moe", "nllb_moe")


def hf_fixtures():
    path = os.path.join(FIXTURES, "hf_blocks", "fixtures.txt")
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4:
                name, layer, prefix = parts[0], int(parts[1]), parts[3]
                # a decoder stack's block of an encoder-decoder (--decoder);
                # DiffusionGemma's decoder layers are its one MoE stack
                with open(os.path.join(FIXTURES, "hf_blocks", name, "config.json")) as c:
                    enc_dec = json.load(c).get("model_type") in ENCODER_DECODER
                decoder = enc_dec and (prefix.startswith("decoder.") or ".decoder." in prefix)
                # a fifth column: the part of the checkpoint (--part)
                part = parts[4] if len(parts) >= 5 else None
                rows.append((name, layer, decoder, prefix, part))
    assert len(rows) >= 70, f"{len(rows)} fixtures in {path}"
    return rows


HF = hf_fixtures()


def compare(y, want, tol, what):
    """NaN/Inf exactly where transformers has them; relative L2 over the rest."""
    y = np.asarray(y, np.float64)
    want = np.asarray(want, np.float64).reshape(y.shape)
    fin = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(y), fin, err_msg=f"{what}: non-finite values")
    num = np.linalg.norm((y - want)[fin])
    den = np.linalg.norm(want[fin])
    rel = num / den if den > 0 else num
    assert rel <= tol, f"{what}: relative L2 {rel:.3g} > {tol:g}"
    return rel


def run_fixture(name, layer, decoder, backend, context, part=None):
    d = os.path.join(FIXTURES, "hf_blocks", name)
    x = read_safetensors(os.path.join(d, "x.safetensors"))["x"]
    want = read_safetensors(os.path.join(d, "y.safetensors"))["y"]
    L = moevk.Layer.from_pretrained(d, layer, decoder=decoder, backend=backend,
                                    context=context, part=part)
    y = L(x)
    assert y.shape == x.shape and y.dtype == np.float32
    return L, y, want


@pytest.mark.parametrize("name,layer,decoder,prefix,part", HF, ids=[r[0] for r in HF])
def test_hf_block_on_reference_and_vulkan(ctx, name, layer, decoder, prefix, part):
    L, y, want = run_fixture(name, layer, decoder, "cpu", None, part)
    # the block's module, or (ERNIE-4.5-VL's text experts) a set inside it
    assert L.config["prefix"].startswith(prefix), L.config
    compare(y, want, 1e-6, f"{name} on cpu")
    L, y, want = run_fixture(name, layer, decoder, "vulkan", ctx, part)
    compare(y, want, 1e-5, f"{name} on vulkan")


def test_a_part_of_the_checkpoint(ctx):
    d = os.path.join(FIXTURES, "hf_blocks", "qwen3_omni_moe_talker")
    L = moevk.Layer.from_pretrained(d, 0, part="talker", context=ctx)
    assert L.config["prefix"] == "talker.model.layers.0.mlp."
    with pytest.raises(moevk.CheckpointError, match='no part "vision"'):
        moevk.Layer.from_pretrained(d, 0, part="vision", context=ctx)


def test_hf_block_by_prefix(ctx):
    d = os.path.join(FIXTURES, "hf_blocks", "qwen2_moe")
    a = moevk.Layer.from_pretrained(d, 0, context=ctx)
    b = moevk.Layer.from_pretrained(d, prefix="model.layers.0.mlp", context=ctx)
    x = read_safetensors(os.path.join(d, "x.safetensors"))["x"]
    np.testing.assert_array_equal(a(x), b(x))
    assert b.config["num_shared"] == 1 and b.config["arch"] == "qwen2_moe"


GGUF = [  # file, layer, relative-L2 tolerance (as tests/test_gguf.c)
    ("qwen3moe_q4_k_m", "qwen3moe_q4_k_m.gguf", 0, 1e-5),
    ("gpt-oss_mxfp4", "gpt-oss_mxfp4.gguf", 0, 1e-5),
    ("deepseek2_sigmoid_q4_1", "deepseek2_sigmoid_q4_1.gguf", 1, 1e-5),
    ("split_q8_0", "split_q8_0-00001-of-00002.gguf", 0, 1e-5),
    ("dbrx_f32", "dbrx_f32.gguf", 0, 2e-6),
]


@pytest.mark.parametrize("name,file,layer,tol", GGUF, ids=[g[0] for g in GGUF])
def test_gguf_block(ctx, name, file, layer, tol):
    x = read_safetensors(os.path.join(GGUF_FIXTURES, name + ".x.safetensors"))["x"]
    want = read_safetensors(os.path.join(GGUF_FIXTURES, name + ".y.safetensors"))["y"]
    path = os.path.join(GGUF_FIXTURES, file)
    for backend, context in (("cpu", None), ("vulkan", ctx)):
        L = moevk.Layer.from_pretrained(path, layer, backend=backend, context=context)
        assert L.config["prefix"] == f"blk.{layer}."
        compare(L(x), want, tol, f"{name} on {backend}")


def test_gguf_formats_as_stored(ctx):
    L = moevk.Layer.from_pretrained(os.path.join(GGUF_FIXTURES, "qwen3moe_q4_k_m.gguf"), 0,
                                    context=ctx)
    assert L.config["formats"] == "q4_k gate/up, q6_k down", L.config["formats"]


def test_quantize_and_budget_at_load(ctx):
    d = os.path.join(FIXTURES, "hf_blocks", "mixtral")
    x = read_safetensors(os.path.join(d, "x.safetensors"))["x"]
    want = read_safetensors(os.path.join(d, "y.safetensors"))["y"]
    full = moevk.Layer.from_pretrained(d, 0, context=ctx)
    q = moevk.Layer.from_pretrained(d, 0, quantize="q8_0", context=ctx)
    # F = 48 is no whole number of q8_0 blocks: the down rows fall back to f16
    assert q.config["formats"] == "q8_0 gate/up, f16 down", q.config["formats"]
    assert q.memory.device_weight_bytes < full.memory.device_weight_bytes
    compare(q(x), want, 2e-2, "mixtral at q8_0")
    half = moevk.Layer.from_pretrained(d, 0, vram_budget="50%", context=ctx)
    m = half.memory
    assert m.budgeted and 0 < m.device_slots < full.num_experts
    np.testing.assert_array_equal(half(x), full(x))


def test_expert_capacity_per_pass(ctx):
    # switch_transformers: expert_capacity binds per pass; the layer is made
    # for each token count (a pass of 7 tokens and one of 3)
    d = os.path.join(FIXTURES, "hf_blocks", "switch_transformers")
    x = read_safetensors(os.path.join(d, "x.safetensors"))["x"]
    L = moevk.Layer.from_pretrained(d, 1, context=ctx)
    cpu = moevk.Layer.from_pretrained(d, 1, backend="cpu")
    assert L.config["expert_capacity"] > 0
    compare(L(x[:, :3]), cpu(x[:, :3]), 1e-5, "3 tokens")
    compare(L(x), cpu(x), 1e-5, "7 tokens")
    # [B, S, H]: one pass per sequence (the capacity counts per sequence)
    xb = np.concatenate([x, x[:, ::-1]], axis=0)
    y = L(xb)
    s = L.stats
    parts = [L(xb[b:b + 1]) for b in range(2)]
    counts = [L.stats.tokens_per_expert]
    L(xb[:1])
    counts.append(L.stats.tokens_per_expert)
    np.testing.assert_array_equal(y, np.concatenate(parts))
    np.testing.assert_array_equal(s.tokens_per_expert, counts[0] + counts[1])
    np.testing.assert_array_equal(cpu(xb), np.concatenate([cpu(xb[b:b + 1]) for b in range(2)]))
    ids, _ = L.route(xb)
    assert ids.shape == (2, 7, L.top_k)


def test_quantised_checkpoint_against_its_dequantised_weights(ctx):
    # GPTQ 4-bit experts are repacked into gptq4 blocks at load, with the
    # dequantised values tests/fixtures/make_hf_quant.py got from the GPTQ
    # reader: the NumPy oracle on those values is the expected output
    d = os.path.join(FIXTURES, "hf_quant", "gptq_v1_mixtral")
    want_w = read_safetensors(os.path.join(d, "expected.safetensors"))
    model = read_safetensors(os.path.join(d, "model.safetensors"))
    E, H = 2, 32
    w = {"router_weight": model["model.layers.0.block_sparse_moe.gate.weight"]}
    for p in ("gate", "up", "down"):
        w[p] = np.stack([want_w[f"experts.{e}.{p}"] for e in range(E)])
    cfg = {"hidden": H, "ffn": 64, "num_experts": E, "top_k": 2, "norm_topk_prob": True}
    x = np.random.default_rng(71).standard_normal((6, H)).astype(np.float32)
    want, _, _ = numpy_layer(cfg, w, x)
    for backend, context, tol in (("cpu", None, 1e-6), ("vulkan", ctx, 1e-5)):
        L = moevk.Layer.from_pretrained(d, 0, backend=backend, context=context)
        assert L.config["formats"] == "gptq4" and "gptq" in L.config["quant"].lower()
        compare(L(x), want, tol, f"gptq_v1_mixtral on {backend}")


@pytest.mark.parametrize("name,fmt", [("bnb_nf4_mixtral", "nf4"), ("fp8_qwen3", "fp8_e4m3"),
                                      ("awq_mixtral", "gptq4")])
def test_quantised_checkpoint_formats(ctx, name, fmt):
    d = os.path.join(FIXTURES, "hf_quant", name)
    vk = moevk.Layer.from_pretrained(d, 0, context=ctx)
    cpu = moevk.Layer.from_pretrained(d, 0, backend="cpu")
    assert vk.config["formats"] == fmt, vk.config["formats"]
    x = np.random.default_rng(72).standard_normal((5, vk.hidden)).astype(np.float32)
    compare(vk(x), cpu(x), 1e-5, name)
