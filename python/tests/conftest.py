"""Shared pieces of the package's tests: a validating context on the default
device, a seeded random layer, a NumPy float64 oracle of the plain
softmax-top-k layer, and a reader of the fixtures' safetensors files."""

import json
import os
import struct

import numpy as np
import pytest

import moevk

FIXTURES = os.environ.get(
    "MOEVK_FIXTURES", os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
)
GGUF_FIXTURES = os.environ.get(
    "MOEVK_GGUF_FIXTURES", os.path.join(os.path.dirname(__file__), "..", "..", "tests", "gguf")
)


def _context(validation=True):
    try:
        return moevk.Context(validation=validation)
    except (moevk.NoDeviceError, moevk.NoVulkanError) as e:
        if os.environ.get("MOEVK_REQUIRE_DEVICE") == "1":
            raise
        pytest.skip(f"no Vulkan device: {e}")


@pytest.fixture(scope="session")
def ctx():
    """One validating context for the session; no validation message may
    appear over all the tests that use it."""
    c = _context()
    yield c
    assert c.validation_messages == 0, f"{c.validation_messages} validation messages"


@pytest.fixture
def new_context():
    return _context


def read_safetensors(path):
    """{name: array} of a safetensors file (F32, F64, F16, BF16 -> float32;
    I32, U8)."""
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    header = json.loads(b[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        s, e = t["data_offsets"]
        raw = b[8 + n + s : 8 + n + e]
        dt = t["dtype"]
        if dt == "BF16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, {"F32": np.float32, "F64": np.float64, "F16": np.float16,
                                    "I32": np.int32, "U8": np.uint8}[dt])
        out[name] = a.reshape(t["shape"])
    return out


def random_layer(seed, H=64, F=48, E=8, k=2, norm=True, dtype=np.float32, shared=0):
    """config and weights of a random softmax-top-k SwiGLU layer."""
    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(H)
    w = {
        "router_weight": rng.standard_normal((E, H)).astype(dtype),
        "gate": (rng.standard_normal((E, F, H)) * s).astype(dtype),
        "up": (rng.standard_normal((E, F, H)) * s).astype(dtype),
        "down": (rng.standard_normal((E, H, F)) / np.sqrt(F)).astype(dtype),
    }
    cfg = {"hidden": H, "ffn": F, "num_experts": E, "top_k": k, "routing": "softmax_topk",
           "activation": "swiglu", "norm_topk_prob": norm}
    if shared:
        cfg["num_shared"] = shared
        w["shared_experts_gate"] = (rng.standard_normal((shared, F, H)) * s).astype(dtype)
        w["shared_experts_up"] = (rng.standard_normal((shared, F, H)) * s).astype(dtype)
        w["shared_experts_down"] = (rng.standard_normal((shared, H, F)) / np.sqrt(F)).astype(dtype)
    return cfg, w


def numpy_layer(cfg, w, x):
    """The plain layer in float64: p = softmax(x R^T), ids = top-k of p (ties:
    the lower index), weights p[ids] (normalised when norm_topk_prob),
    y = sum_j w_j down_j(silu(gate_j x) * up_j x) plus the shared experts."""
    x = np.asarray(x, np.float64).reshape(-1, cfg["hidden"])
    f64 = {n: np.asarray(a, np.float64) for n, a in w.items()}
    logits = x @ f64["router_weight"].T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    k = cfg["top_k"]
    ids = np.argsort(-p, axis=1, kind="stable")[:, :k]
    wts = np.take_along_axis(p, ids, axis=1)
    if cfg.get("norm_topk_prob"):
        wts = wts / wts.sum(axis=1, keepdims=True)

    def ffn(g, u, d, v):
        a = g @ v
        return d @ (a / (1.0 + np.exp(-a)) * (u @ v))

    y = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(k):
            e = ids[t, j]
            y[t] += wts[t, j] * ffn(f64["gate"][e], f64["up"][e], f64["down"][e], x[t])
        for s in range(cfg.get("num_shared", 0)):
            y[t] += ffn(f64["shared_experts_gate"][s], f64["shared_experts_up"][s],
                        f64["shared_experts_down"][s], x[t])
    return y, ids, wts


def routed_sum(w, x, ids, wts):
    """float64 sum_j wts[t, j] down_e(silu(gate_e x_t) * up_e x_t) over each
    token's slots (e = ids[t, j]): the routed part of a SwiGLU layer."""
    x = np.asarray(x, np.float64)
    y = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = ids[t, j]
            g = np.asarray(w["gate"][e], np.float64) @ x[t]
            u = np.asarray(w["up"][e], np.float64) @ x[t]
            y[t] += wts[t, j] * (np.asarray(w["down"][e], np.float64) @ (g / (1.0 + np.exp(-g)) * u))
    return y


def check_layers_against(cfg, w, x, ctx, want, ids, wts):
    """The layer on Vulkan and on the CPU reference against a NumPy oracle:
    y within 1e-5, the routing ids exactly, the weights within 1e-5."""
    for layer in (moevk.Layer(cfg, w, context=ctx), moevk.Layer(cfg, w, backend="cpu")):
        assert rel_l2(layer(x), want) < 1e-5
        got_ids, got_w = layer.route(x)
        np.testing.assert_array_equal(got_ids, ids)
        np.testing.assert_allclose(got_w, wts, rtol=1e-5, atol=1e-7)


def rel_l2(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
