#!/usr/bin/env python3
"""Small GGUF files, one MoE block each, for `moevk run --model FILE.gguf`
(tests/test_gguf.c), with the float64 output llama.cpp's maths gives for
them, computed here in numpy from gguf-py's dequantised weights -
independent of moevk.

Per case NAME: NAME.gguf (written by PyPI gguf's GGUFWriter; a split case
writes NAME-0000i-of-0000K.gguf), NAME.x.safetensors (the input x [T, H],
f32) and NAME.y.safetensors (the expected y [T, H], f64). Block formats
are quantised by gguf.quants where it can (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
MXFP4, BF16); Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS blocks are
random bytes with small random f16 scales (every bit pattern of the quants
is a valid block), dequantised by gguf.quants.

The maths (llama.cpp's build_moe_ffn and the model builders): logits = x
R^T (+ router bias); probs = softmax, sigmoid, or the logits themselves
(gpt-oss); selection = probs (+ exp_probs_b); expert groups (top-2 sum per
group, keep the best groups); ids = top-k of the selection; w = probs[ids];
gpt-oss: softmax over the k; renormalise: w / max(sum w, 2^-14); scale when
not 0 or 1; each expert act(gate x (+b)) * (up x (+b)) -> down (+b), times w,
summed; shared experts (qwen2moe: times sigmoid(gate_inp_shexp . x)) added.

Run with a Python that has gguf (0.19.0) and numpy (sh tools/py_tools.sh
makes build-tools/py):
  build-tools/py/bin/python tests/gguf/make_fixtures.py tests/gguf
The files are committed; the generator's gguf version is recorded in
tests/gguf/VERSION.
"""
import importlib.metadata
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

T_TOKENS = 5


def write_safetensors(path, name, arr):
    dt = {np.float32: "F32", np.float64: "F64"}[arr.dtype.type]
    data = np.ascontiguousarray(arr).tobytes()
    hdr = json.dumps({name: {"dtype": dt, "shape": list(arr.shape),
                             "data_offsets": [0, len(data)]}}).encode()
    hdr += b" " * ((8 - len(hdr) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + data)


# Block formats gguf-py cannot quantise: random bytes (every bit pattern of
# the quants and the packed sub-block scales is a valid block) with each f16
# super-block scale (byte offset, as in ggml-common.h's block_*) set to
# U(0.5, 1) * scale / div, div chosen so the values are O(scale).
RANDOM_BLOCKS = {
    Q.Q4_K: ((0, 60), (2, 60)),      # d, dmin; sc, m 6-bit, q 0..15
    Q.IQ4_NL: ((0, 127),),           # d; codes up to 127
    Q.Q2_K: ((80, 15), (82, 15)),    # sc[16], qs[64], d, dmin; sc, m 4-bit, q 0..3
    Q.Q3_K: ((108, 32),),            # hmask[32], qs[64], sc[12], d; sc - 32, q -4..3
    Q.Q5_K: ((0, 360), (2, 24)),     # d, dmin, sc[12], qh[32], qs[128]; q 0..31, the
                                     # min ~ the mean of d * sc * q (values about 0)
    Q.Q6_K: ((208, 1024),),          # ql[128], qh[64], sc[16] (int8), d; q - 32
    Q.IQ4_XS: ((0, 1024),),          # d, sh, sl[4], qs[128]; ls - 32, codes up to 127
}


class Block:
    """One tensor: its bytes for the file and its dequantised values."""

    def __init__(self, rng, shape, qtype, scale):
        self.qtype = qtype
        if qtype in RANDOM_BLOCKS:
            elems, nbytes = gguf.GGML_QUANT_SIZES[qtype]
            rows = int(np.prod(shape[:-1]))
            nblk = shape[-1] // elems
            raw = rng.integers(0, 256, size=(rows, nblk, nbytes), dtype=np.uint8)
            for off, div in RANDOM_BLOCKS[qtype]:  # small f16 scales at their offsets
                v = (rng.uniform(0.5, 1.0, (rows, nblk)) * scale / div).astype(np.float16)
                raw[:, :, off:off + 2] = v.view(np.uint8).reshape(rows, nblk, 2)
            self.data = raw.reshape(list(shape[:-1]) + [nblk * nbytes])
            self.values = gguf.quants.dequantize(self.data, qtype).astype(np.float64)
            return
        vals = (rng.standard_normal(shape) * scale).astype(np.float32)
        if qtype == Q.F32:
            self.data, self.values = vals, vals.astype(np.float64)
        elif qtype == Q.F16:
            self.data = vals.astype(np.float16)
            self.values = self.data.astype(np.float64)
        else:
            self.data = gguf.quants.quantize(vals, qtype)
            self.values = gguf.quants.dequantize(self.data, qtype).astype(np.float64)

    def add(self, w, name):
        if self.qtype in (Q.F32, Q.F16):
            w.add_tensor(name, self.data)
        else:
            w.add_tensor(name, self.data, raw_dtype=self.qtype)


def softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def gelu_tanh(v):
    return 0.5 * v * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (v + 0.044715 * v ** 3)))


def act(kind, g, u):
    if kind == "silu":
        return g * sigmoid(g) * u
    if kind == "gelu":
        return gelu_tanh(g) * u
    if kind == "swiglu_oai":
        g = np.minimum(g, 7.0)
        u = np.clip(u, -7.0, 7.0)
        return g * sigmoid(1.702 * g) * (u + 1.0)
    raise ValueError(kind)


def reference(c, x):
    """y [T, H] in float64, as llama.cpp computes the block."""
    R = c["router"].values
    y = np.zeros_like(x)
    E, k = R.shape[0], c["k"]
    for t in range(x.shape[0]):
        xt = x[t]
        logits = R @ xt
        if "router_bias" in c:
            logits = logits + c["router_bias"]
        gating = c["gating"]
        probs = softmax(logits) if gating == 1 else sigmoid(logits) if gating == 2 else logits
        sel = probs + c["probs_bias"] if "probs_bias" in c else probs.copy()
        G = c.get("groups", 0)
        if G > 1:
            per = E // G
            gs = np.array([np.sort(sel[g * per:(g + 1) * per])[-2:].sum() for g in range(G)])
            keep = np.argsort(-gs, kind="stable")[:c["groups_used"]]
            mask = np.full(E, -np.inf)
            for g in keep:
                mask[g * per:(g + 1) * per] = 0.0
            sel = sel + mask
        ids = np.argsort(-sel, kind="stable")[:k]
        w = probs[ids]
        if gating == 3:
            w = softmax(w)
        if c["norm"]:
            w = w / max(w.sum(), 6.103515625e-5)
        s = c.get("scale", 0.0)
        if s not in (0.0, 1.0):
            w = w * s
        for j, e in enumerate(ids):
            g = c["gate"][e] @ xt
            u = c["up"][e] @ xt
            if "gate_bias" in c:
                g = g + c["gate_bias"][e]
                u = u + c["up_bias"][e]
            o = c["down"][e] @ act(c["act"], g, u)
            if "down_bias" in c:
                o = o + c["down_bias"][e]
            y[t] += w[j] * o
        if "sh_gate" in c:
            o = c["sh_down"] @ act("silu", c["sh_gate"] @ xt, c["sh_up"] @ xt)
            if "sh_inp" in c:
                o = o * sigmoid(c["sh_inp"] @ xt)
            y[t] += o
    return y


def make(out, name, arch, rng, H, F, E, k, fmt, *, layer=0, layout="stacked", down_fmt=None,
         router_fmt=Q.F32, gating=1, norm=False, scale=None, groups=0, groups_used=0,
         probs_bias=False, shared_F=0, shared_fmt=Q.Q8_0, shared_gate=False, biases=False,
         act_kind="silu", keys=None, dense_lead=0, split=0):
    w = gguf.GGUFWriter(os.path.join(out, name + ".gguf"), arch,
                        split_max_tensors=split)
    w.add_uint32(arch + ".block_count", layer + 1)
    w.add_uint32(arch + ".embedding_length", H)
    w.add_uint32(arch + ".expert_count", E)
    w.add_uint32(arch + ".expert_used_count", k)
    if arch != "llama":
        w.add_uint32(arch + ".expert_feed_forward_length", F)
    if scale is not None:
        w.add_float32(arch + ".expert_weights_scale", scale)
    for key, v in (keys or {}).items():
        if isinstance(v, bool):
            w.add_bool(arch + "." + key, v)
        else:
            w.add_uint32(arch + "." + key, v)
    if dense_lead:
        w.add_uint32(arch + ".leading_dense_block_count", dense_lead)
    P = "blk.%d." % layer
    if dense_lead:  # a dense layer 0 beside the MoE layer
        for nm, shp in (("ffn_gate", (F, H)), ("ffn_up", (F, H)), ("ffn_down", (H, F))):
            Block(rng, shp, Q.Q8_0, 0.1).add(w, "blk.0.%s.weight" % nm)
    c = {"k": k, "gating": gating, "norm": norm, "act": act_kind,
         "scale": scale if scale is not None else 0.0, "groups": groups,
         "groups_used": groups_used}
    c["router"] = Block(rng, (E, H), router_fmt, 1.0 / np.sqrt(H))
    c["router"].add(w, P + "ffn_gate_inp.weight")
    sw = 1.0 / np.sqrt(H)
    dn = down_fmt or fmt
    if layout == "fused":
        gu = Block(rng, (E, 2 * F, H), fmt, sw)
        gu.add(w, P + "ffn_gate_up_exps.weight")
        c["gate"], c["up"] = gu.values[:, :F, :], gu.values[:, F:, :]
        d = Block(rng, (E, H, F), dn, 1.0 / np.sqrt(F))
        d.add(w, P + "ffn_down_exps.weight")
        c["down"] = d.values
    elif layout == "per_expert":
        gs, us, ds = [], [], []
        for e in range(E):
            g = Block(rng, (F, H), fmt, sw)
            u = Block(rng, (F, H), fmt, sw)
            d = Block(rng, (H, F), dn, 1.0 / np.sqrt(F))
            g.add(w, P + "ffn_gate.%d.weight" % e)
            u.add(w, P + "ffn_up.%d.weight" % e)
            d.add(w, P + "ffn_down.%d.weight" % e)
            gs.append(g.values)
            us.append(u.values)
            ds.append(d.values)
        c["gate"], c["up"], c["down"] = np.stack(gs), np.stack(us), np.stack(ds)
    else:
        for nm, shp, fm, sc in (("gate", (E, F, H), fmt, sw), ("up", (E, F, H), fmt, sw),
                                ("down", (E, H, F), dn, 1.0 / np.sqrt(F))):
            b = Block(rng, shp, fm, sc)
            b.add(w, P + "ffn_%s_exps.weight" % nm)
            c[nm] = b.values
    if biases:
        for nm, shp in (("ffn_gate_inp.bias", (E,)), ("ffn_gate_exps.bias", (E, F)),
                        ("ffn_up_exps.bias", (E, F)), ("ffn_down_exps.bias", (E, H))):
            v = (rng.standard_normal(shp) * 0.1).astype(np.float32)
            w.add_tensor(P + nm, v)
            key = {"ffn_gate_inp.bias": "router_bias", "ffn_gate_exps.bias": "gate_bias",
                   "ffn_up_exps.bias": "up_bias", "ffn_down_exps.bias": "down_bias"}[nm]
            c[key] = v.astype(np.float64)
    if probs_bias:
        v = (rng.standard_normal(E) * 0.05).astype(np.float32)
        w.add_tensor(P + "exp_probs_b.bias", v)
        c["probs_bias"] = v.astype(np.float64)
    if shared_F:
        for nm, shp, sc in (("gate", (shared_F, H), sw), ("up", (shared_F, H), sw),
                            ("down", (H, shared_F), 1.0 / np.sqrt(shared_F))):
            b = Block(rng, shp, shared_fmt, sc)
            b.add(w, P + "ffn_%s_shexp.weight" % nm)
            c["sh_" + nm] = b.values
        if shared_gate:
            b = Block(rng, (H,), Q.F32, sw)
            b.add(w, P + "ffn_gate_inp_shexp.weight")
            c["sh_inp"] = b.values
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    x = rng.standard_normal((T_TOKENS, H)).astype(np.float32)
    y = reference(c, x.astype(np.float64))
    write_safetensors(os.path.join(out, name + ".x.safetensors"), "x", x)
    write_safetensors(os.path.join(out, name + ".y.safetensors"), "y", y)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20260101)
    # Mixtral: softmax, renormalised; q8_0 experts, f32 router
    make(out, "llama_q8_0", "llama", rng, 64, 32, 4, 2, Q.Q8_0, norm=True)
    # old per-expert names, f16 experts and router
    make(out, "llama_per_expert_f16", "llama", rng, 32, 16, 4, 2, Q.F16, norm=True,
         layout="per_expert", router_fmt=Q.F16)
    # Qwen3-MoE: renormalised (always, in llama.cpp); gate/up q4_0, down q5_1
    make(out, "qwen3moe_q4_0_q5_1", "qwen3moe", rng, 64, 32, 6, 2, Q.Q4_0, down_fmt=Q.Q5_1,
         norm=True)
    # Qwen2-MoE: not renormalised, q5_0 experts, a q8_0 shared expert with its gate
    make(out, "qwen2moe_q5_0_shared", "qwen2moe", rng, 64, 32, 4, 2, Q.Q5_0, shared_F=64,
         shared_gate=True)
    # DeepSeek-V3 form: sigmoid, exp_probs_b, 4 groups keep 2, renormalised,
    # scale 2.5, q4_1 experts and shared experts; layer 0 dense, layer 1 MoE
    make(out, "deepseek2_sigmoid_q4_1", "deepseek2", rng, 32, 32, 8, 3, Q.Q4_1, layer=1,
         gating=2, norm=True, scale=2.5, groups=4, groups_used=2, probs_bias=True,
         shared_F=64, shared_fmt=Q.Q4_1,
         keys={"expert_gating_func": 2, "expert_weights_norm": True, "expert_group_count": 4,
               "expert_group_used_count": 2, "expert_shared_count": 2}, dense_lead=1)
    # DeepSeek-V2-Lite form: softmax, not renormalised, fused gate_up (q8_0)
    make(out, "deepseek2_softmax_fused", "deepseek2", rng, 64, 32, 4, 2, Q.Q8_0,
         layout="fused", scale=1.0, shared_F=32,
         keys={"expert_gating_func": 1, "expert_weights_norm": False})
    # OLMoE: iq4_nl experts
    make(out, "olmoe_iq4_nl", "olmoe", rng, 64, 32, 4, 2, Q.IQ4_NL)
    # gpt-oss: mxfp4 experts, biases, top-k softmax, swiglu-oai
    make(out, "gpt-oss_mxfp4", "gpt-oss", rng, 64, 32, 4, 2, Q.MXFP4, gating=3, biases=True,
         act_kind="swiglu_oai")
    # Grok-1: gelu (tanh), renormalised, bf16 experts
    make(out, "grok_bf16", "grok", rng, 32, 16, 4, 2, Q.BF16, norm=True, act_kind="gelu")
    # DBRX: renormalised, q5_1
    make(out, "dbrx_q5_1", "dbrx", rng, 64, 32, 4, 2, Q.Q5_1, norm=True)
    # GLM-4.5: sigmoid, exp_probs_b, renormalised, scale; gate/up q4_k
    # (rows of 256), down q5_0, a q4_0 shared expert
    make(out, "glm4moe_q4_k", "glm4moe", rng, 256, 32, 3, 2, Q.Q4_K, down_fmt=Q.Q5_0,
         gating=2, norm=True, scale=1.5, probs_bias=True, shared_F=32, shared_fmt=Q.Q4_0,
         keys={"expert_weights_norm": True, "expert_shared_count": 1})
    # a model in splits of at most 3 tensors (split.count 3)
    make(out, "split_q8_0", "llama", rng, 32, 32, 4, 2, Q.Q8_0, norm=True, split=3)
    # (the cases below come after the ones above so those keep their bytes)
    # Qwen3-MoE Q4_K_M mix: gate/up q4_k, down q6_k (rows of 256)
    make(out, "qwen3moe_q4_k_m", "qwen3moe", rng, 256, 256, 3, 2, Q.Q4_K, down_fmt=Q.Q6_K,
         norm=True)
    # OLMoE Q5_K_S: q5_k gate/up and down, not renormalised
    make(out, "olmoe_q5_k", "olmoe", rng, 256, 256, 3, 2, Q.Q5_K)
    # Mixtral Q2_K mix: gate/up q2_k, down q3_k
    make(out, "llama_q2_k_q3_k", "llama", rng, 256, 256, 3, 2, Q.Q2_K, down_fmt=Q.Q3_K,
         norm=True)
    # DeepSeek-V2-Lite form, IQ4_XS experts, a q8_0 shared expert
    make(out, "deepseek2_iq4_xs", "deepseek2", rng, 256, 256, 3, 2, Q.IQ4_XS, scale=1.0,
         shared_F=32, keys={"expert_gating_func": 1, "expert_weights_norm": False})
    # DBRX with f32 experts
    make(out, "dbrx_f32", "dbrx", rng, 32, 16, 4, 2, Q.F32, norm=True)
    # DeepSeek-V2 as llama.cpp runs it: softmax, expert groups (the best two),
    # a selection bias, weights scaled by 16, a shared expert
    make(out, "deepseek2_v2_softmax_groups", "deepseek2", rng, 64, 32, 8, 3, Q.Q8_0,
         scale=16.0, groups=4, groups_used=2, probs_bias=True, shared_F=32,
         keys={"expert_gating_func": 1, "expert_weights_norm": False,
               "expert_group_count": 4, "expert_group_used_count": 2})
    with open(os.path.join(out, "VERSION"), "w") as f:
        f.write("gguf %s, numpy %s\n" % (importlib.metadata.version("gguf"), np.__version__))


if __name__ == "__main__":
    main()
