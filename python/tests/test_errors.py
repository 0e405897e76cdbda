"""Every error path of the package: the exception class of the library's
status (moevk.Error subclasses, .status the code) and a message naming the
offending value."""

import os

import numpy as np
import pytest

import moevk
from conftest import FIXTURES, GGUF_FIXTURES, random_layer

CFG, W = random_layer(5)
MIXTRAL = os.path.join(FIXTURES, "hf_blocks", "mixtral")
GGUF = os.path.join(GGUF_FIXTURES, "dbrx_f32.gguf")


def raises(cls, match, f, status=None):
    with pytest.raises(cls, match=match) as e:
        f()
    if issubclass(cls, moevk.Error) and cls is not moevk.CheckpointError:
        assert isinstance(e.value, moevk.Error)
        assert e.value.status == (status if status is not None else cls.status)
    return e.value


def test_hierarchy():
    assert moevk.InvalidArgumentError.status == -1 and moevk.BusyError.status == -12
    assert issubclass(moevk.InvalidArgumentError, ValueError)
    assert issubclass(moevk.OutOfHostMemoryError, MemoryError)
    assert issubclass(moevk.TimeoutError, TimeoutError)
    assert issubclass(moevk.CheckpointError, moevk.Error)
    assert issubclass(moevk.CheckpointError, ValueError)
    names = ["InvalidArgumentError", "OutOfHostMemoryError", "OutOfDeviceMemoryError",
             "NoVulkanError", "NoDeviceError", "UnsupportedError", "LimitExceededError",
             "DeviceLostError", "TimeoutError", "VulkanError", "InternalError", "BusyError"]
    assert [getattr(moevk, n).status for n in names] == list(range(-1, -13, -1))


@pytest.mark.parametrize("change,match", [
    ({"hidden": 0}, r"hidden"),
    ({"top_k": 9}, r"top_k \(k\) = 9 is not in 1..min\(num_experts = 8"),
    ({"n_group": 3}, r"n_group = 3 does not divide num_experts = 8"),
    ({"capacity_factor": -1.0}, r"capacity_factor = -1"),
    ({"routing": "bogus"}, r"config\['routing'\] = 'bogus' is not one of softmax_topk"),
    ({"activation": 99}, r"config\['activation'\] = 99 is out of range"),
    ({"hidden": -1}, r"config\['hidden'\] = -1 is out of range"),
    ({"num_experts": 2**40}, r"config\['num_experts'\] = 1099511627776 is out of range"),
    ({"quantize_dtype": "nope"}, r"config\['quantize_dtype'\] = 'nope' is no moevk format"),
    ({"bogus": 1}, r"config\['bogus'\]: no such field of moevk_layer_desc"),
])
def test_bad_config(change, match):
    raises(moevk.InvalidArgumentError, match, lambda: moevk.Layer(dict(CFG, **change), W,
                                                                  backend="cpu"))


def test_bad_config_types():
    raises(TypeError, r"config\['hidden'\]: an int, not str",
           lambda: moevk.Layer(dict(CFG, hidden="64"), W, backend="cpu"))
    raises(TypeError, r"config\['routing'\]: a name",
           lambda: moevk.Layer(dict(CFG, routing=1.5), W, backend="cpu"))


def without(name):
    return {k: v for k, v in W.items() if k != name}


@pytest.mark.parametrize("weights,match", [
    (without("router_weight"), r"router_weight is NULL"),
    (without("down"), r"experts.down is NULL"),
    (dict(W, gate=W["gate"][:4]), r"weights\['gate'\] has 49152 bytes; \[8, 48, 64\] of f32 is 98304"),
    (dict(W, router_bias=np.zeros(7, np.float32)), r"weights\['router_bias'\] has 28 bytes; \[8\] of f32"),
    (dict(W, junk=W["gate"]), r"weights\['junk'\]: no such weight"),
    (dict(W, router_bias=np.zeros(8, np.int32)), r"weights\['router_bias'\] has items of format 'i': \[8\] of f32 wants 'f'"),
    (dict(W, shared_experts_gate=W["gate"][:1]), r"weights\['shared_experts_gate'\] is given, but num_shared = 0"),
    (dict(W, gate=W["gate"].astype(np.float16)), r"weight_dtype: the weights \['down', 'gate', 'up'\] have different dtypes"),
])
def test_bad_weights(weights, match):
    raises(moevk.InvalidArgumentError, match, lambda: moevk.Layer(CFG, weights, backend="cpu"),
           status=-1)


def test_weights_of_no_float_type():
    raises(TypeError, r"weights\['gate'\] is int32",
           lambda: moevk.Layer(CFG, dict(W, gate=W["gate"].astype(np.int32)), backend="cpu"))


def test_bad_backend(ctx):
    raises(moevk.InvalidArgumentError, r"backend 'nope' is not one of vulkan, cpu",
           lambda: moevk.Layer(CFG, W, backend="nope"))
    raises(moevk.InvalidArgumentError, r"backend 'cpu' takes no context",
           lambda: moevk.Layer(CFG, W, backend="cpu", context=ctx))
    if not moevk.backends().get("cuda-ref", (True,))[0]:
        raises(moevk.UnsupportedError, r"CUDA", lambda: moevk.Layer(CFG, W, backend="cuda-ref"))


def test_bad_device():
    raises(moevk.NoDeviceError, r"no device name contains 'no-such-device'",
           lambda: moevk.Context(device="no-such-device"))
    raises(moevk.NoDeviceError, r"device index 999 out of range",
           lambda: moevk.Context(device=999))
    raises(moevk.InvalidArgumentError, r"device = -1", lambda: moevk.Context(device=-1))
    raises(TypeError, r"device: an index", lambda: moevk.Context(device=1.5))


def test_bad_input():
    layer = moevk.Layer(CFG, W, backend="cpu")
    raises(moevk.InvalidArgumentError, r"x has shape \(3, 5\): \[..., H\] with H = hidden = 64",
           lambda: layer(np.zeros((3, 5), np.float32)), status=-1)
    raises(moevk.InvalidArgumentError, r"x has shape \(0, 64\): no tokens",
           lambda: layer(np.zeros((0, 64), np.float32)))
    raises(TypeError, r"x is int32", lambda: layer(np.zeros((3, 64), np.int32)))
    # the extension checks every buffer against the token count
    raises(moevk.InvalidArgumentError, r"x: 512 bytes of format 'f' wanted, got 768",
           lambda: layer._impl.forward(np.zeros((3, 64), np.float32), 2, None, None, None,
                                       None, None))
    raises(moevk.InvalidArgumentError, r"ids: 24 bytes of format 'I' wanted, got 24 of 'i'",
           lambda: layer._impl.forward(np.zeros((3, 64), np.float32), 3, None,
                                       np.zeros((3, 2), np.int32), None, None, None))
    raises(moevk.InvalidArgumentError, r"x has 0 tokens",
           lambda: layer._impl.forward(np.zeros(0, np.float32), 0, None, None, None, None, None))


@pytest.mark.parametrize("args,kw,match", [
    (("/nonexistent/model", 0), {}, r"cannot open /nonexistent/model/config.json"),
    ((MIXTRAL, 5), {}, r"layer 5 is out of range: mixtral has num_hidden_layers = 1"),
    ((MIXTRAL,), {}, r"a layer number \(or a prefix\) is needed"),
    ((MIXTRAL,), {"prefix": "model.layers.9.mlp"}, r"model\.layers\.9\.mlp\."),
    ((MIXTRAL, 0), {"prefix": "model.layers.0.mlp"}, r"give a layer number or a prefix, not both"),
    ((GGUF,), {}, r"a GGUF model needs a layer number"),
    ((GGUF, 0), {"prefix": "x"}, r"a prefix is not for a GGUF file"),
    ((GGUF, 0), {"decoder": True}, r"the decoder stack is not for a GGUF file"),
    ((GGUF, 7), {}, r"blk\.7|7"),
])
def test_bad_checkpoint(args, kw, match):
    e = raises(moevk.CheckpointError, match,
               lambda: moevk.Layer.from_pretrained(*args, backend="cpu", **kw))
    assert e.status is None  # not a moevk_status: the loader's own failure


@pytest.mark.parametrize("kw,match", [
    ({"quantize": "zz"}, r"quantize = 'zz' is not one of f32\|f16\|bf16\|q8_0"),
    ({"vram_budget": "lots"}, r"vram_budget = 'lots': 'lots' is not a size"),
    ({"vram_budget": -1}, r"vram_budget is out of range"),
])
def test_bad_load_options(kw, match):
    raises(moevk.InvalidArgumentError, match,
           lambda: moevk.Layer.from_pretrained(MIXTRAL, 0, backend="cpu", **kw))
    raises(TypeError if "vram_budget" in kw else moevk.InvalidArgumentError, r".",
           lambda: moevk.Layer.from_pretrained(MIXTRAL, 0, backend="cpu",
                                               vram_budget=1.5 if "vram_budget" in kw else None,
                                               **({} if "vram_budget" in kw else kw)))


def test_context_usable_after_errors(ctx):
    # a failed create leaves the context usable and nothing behind
    raises(moevk.InvalidArgumentError, r"top_k", lambda: moevk.Layer(dict(CFG, top_k=9), W,
                                                                     context=ctx))
    layer = moevk.Layer(CFG, W, context=ctx)
    assert layer(np.ones((2, 64), np.float32)).shape == (2, 64)
