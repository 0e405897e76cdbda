"""The moevk Python API over the extension moevk._moevk.

Arrays in, arrays out: inputs are NumPy arrays (float32 or float16, any
strides) or any object with ``__dlpack__`` on the CPU (a PyTorch tensor),
read without a copy when they are C-contiguous float32 already; outputs are
NumPy arrays, or tensors of the input's kind when its module has
``from_dlpack`` (PyTorch)."""

from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from . import _moevk

__all__ = [
    "Context",
    "Device",
    "Layer",
    "Memory",
    "RoutingStats",
    "backends",
    "devices",
]


@dataclasses.dataclass(frozen=True)
class Device:
    """A Vulkan device as moevk_device_info describes it (the main fields)."""

    index: int
    name: str
    type: str
    vendor_id: int
    device_id: int
    api_version: str
    driver_name: str
    driver_info: str
    subgroup_size: int
    device_local_bytes: int
    fp16_arith: bool
    bf16: bool
    cooperative_matrix: bool
    timestamps: bool
    info: Dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def _of(cls, d: Mapping[str, Any]) -> "Device":
        names = [f.name for f in dataclasses.fields(cls) if f.name != "info"]
        return cls(**{n: d[n] for n in names}, info=dict(d))


def devices() -> list:
    """Every Vulkan device (moevk_enumerate_devices), as Device records."""
    return [Device._of(d) for d in _moevk.devices()]


def backends() -> Dict[str, Tuple[bool, str]]:
    """name -> (available here, description) for each backend of the build:
    "vulkan" (the library), "cpu" (the double-precision reference), and the
    CUDA backends when the library was built with them."""
    return {name: (ok, why) for name, ok, why in _moevk.backends()}


class Context:
    """A moevk_context on one Vulkan device.

    device: None (MOEVK_DEVICE, else the best device), an index, or a part of
    a device's name. validation: the Khronos validation layer (messages are
    logged to stderr and counted in ``validation_messages``).

    A context and its layers are used by one thread at a time: calls from
    other threads wait (with the GIL released). Give each thread its own
    context to run them concurrently."""

    def __init__(self, device: Union[None, int, str] = None, validation: bool = False):
        self._impl = _moevk.Context(device, bool(validation))

    @property
    def device(self) -> Device:
        return Device._of(self._impl.device)

    @property
    def validation_messages(self) -> int:
        return self._impl.validation_messages

    def __repr__(self) -> str:
        return f"moevk.Context({self._impl.device['name']!r})"


_default_lock = threading.Lock()
_default_context: Optional[Context] = None


def _default() -> Context:
    """The context vulkan layers get when none is given (made at first use,
    shared by them all: give each thread its own Context to run them
    concurrently)."""
    global _default_context
    with _default_lock:
        if _default_context is None:
            _default_context = Context()
        return _default_context


@dataclasses.dataclass(frozen=True)
class RoutingStats:
    """Routing statistics of a layer's last forward pass (docs/semantics.md)."""

    tokens_per_expert: np.ndarray  # [E] admitted assignments per expert
    dropped: int  # assignments over capacity
    load_balancing_loss: float  # E * sum_e f_e * P_e
    router_z_loss: float  # mean over tokens of logsumexp(l)^2
    routing_entropy: float  # mean over tokens of -sum p log p


@dataclasses.dataclass(frozen=True)
class Memory:
    """Device and host bytes of a layer (and its expert cache under a
    vram_budget: moevk_cache_stats)."""

    device_weight_bytes: int
    scratch_bytes: int
    host_weight_bytes: int
    host_imported_bytes: int
    expert_device_bytes: int
    budgeted: bool
    device_slots: int
    resident_experts: int
    passes: int
    hits: int
    misses: int
    promotions: int
    evictions: int
    bytes_moved: int


# NumPy dtypes of weight arrays -> moevk formats (bf16 and the block formats
# have no NumPy dtype: give config["weight_dtype"] and uint16 / uint8 arrays)
_NP_FORMAT = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}
_F32_WEIGHTS = {
    "router_bias",
    "correction_bias",
    "gate_bias",
    "up_bias",
    "down_bias",
    "shared_experts_gate_bias",
    "shared_experts_up_bias",
    "shared_experts_down_bias",
    "output_bias",
    "router_input_scale",
    "expert_norm_weight",
    "expert_weight_scale",
}
_EXPERT_WEIGHTS = {
    "gate",
    "up",
    "down",
    "shared_experts_gate",
    "shared_experts_up",
    "shared_experts_down",
}
_ROUTER_WEIGHTS = {"router_weight", "shared_gate"}


def _as_numpy(x: Any) -> Tuple[np.ndarray, Any]:
    """x as a NumPy array (no copy for NumPy arrays and CPU DLPack
    producers), and the module to hand outputs back through (None: NumPy)."""
    if isinstance(x, np.ndarray):
        return x, None
    if hasattr(x, "__dlpack__"):
        try:
            arr = np.from_dlpack(x)
        except (RuntimeError, TypeError, BufferError) as e:
            raise TypeError(
                f"cannot read a {type(x).__name__} through DLPack as a NumPy array "
                f"(a CPU tensor of float32 or float16 is needed): {e}"
            ) from None
        mod = sys.modules.get(type(x).__module__.split(".")[0])
        return arr, mod if hasattr(mod, "from_dlpack") else None
    return np.asarray(x), None


def _weight_array(name: str, w: Any, fmt: Optional[str]) -> np.ndarray:
    a, _ = _as_numpy(w)
    if name in _F32_WEIGHTS:
        if a.dtype != np.float32 and a.dtype.kind == "f":
            a = a.astype(np.float32)
    elif fmt is None and a.dtype == np.float64:
        a = a.astype(np.float32)  # no float64 format: rounded to f32
    elif fmt is None and a.dtype.kind not in "f":
        raise TypeError(
            f"weights[{name!r}] is {a.dtype}: float32/float16 arrays, or say the format in "
            f"the config (weight_dtype / router_dtype: 'bf16' for uint16 arrays, a block "
            f"format such as 'q4_k' for uint8 arrays)"
        )
    return np.ascontiguousarray(a)


def _fmt_of(arrays: Mapping[str, np.ndarray], names: set, key: str) -> Optional[str]:
    found = {n: _NP_FORMAT.get(a.dtype) for n, a in arrays.items() if n in names}
    fmts = set(found.values())
    if len(fmts) > 1:
        raise _moevk.InvalidArgumentError(
            f"{key}: the weights {sorted(found)} have different dtypes "
            f"({', '.join(f'{n}: {arrays[n].dtype}' for n in sorted(found))})"
        )
    fmt = next(iter(fmts), None)
    return fmt


class Layer:
    """A Mixture-of-Experts layer (moevk_layer) on a backend: "vulkan" (the
    library, on ``context`` or a default one), "cpu" (the double-precision
    CPU reference), or a CUDA backend when built.

    ``Layer(config, weights)`` builds one from NumPy arrays: config keys are
    moevk_layer_desc's field names (hidden, ffn, num_experts, top_k, routing,
    activation, norm_topk_prob, ...; enums by name: routing "softmax_topk",
    activation "swiglu", ...), weights are ``router_weight`` [E, H], ``gate``
    and ``up`` [E, F, H], ``down`` [E, H, F], and optionally router_bias,
    correction_bias, gate_bias, up_bias, down_bias, shared_experts_gate/up/down
    (and their _bias), shared_gate, output_bias, and Gemma 4's
    router_input_scale [H], expert_norm_weight [H] and expert_weight_scale [E]
    (with config router_norm_eps, router_input_factor, expert_norm_eps);
    float32 or float16 (bf16
    or block formats as uint16 / uint8 arrays with config["weight_dtype"]).
    quantize: a format the experts are quantised into at create ("q8_0",
    "q4_k", ...); vram_budget: bytes, or "50%" of the routed experts' bytes
    on the device (the rest read from host memory). ``Layer.from_pretrained``
    loads one block of a Hugging Face checkpoint or a GGUF file.

    ``layer(x)`` runs x [..., H] and returns y of x's shape (float32);
    ``layer.route(x)`` the routing (ids [..., k] uint32, weights [..., k]
    float32); after a call, ``layer.stats`` and ``layer.stage_times`` describe
    it; ``layer.memory`` the layer's bytes."""

    def __init__(
        self,
        config: Mapping[str, Any],
        weights: Mapping[str, Any],
        context: Optional[Context] = None,
        backend: str = "vulkan",
        vram_budget: Union[None, int, str] = None,
        quantize: Optional[str] = None,
    ):
        cfg = dict(config)
        if quantize is not None:  # as from_pretrained: quantised at create
            cfg["quantize_dtype"] = quantize
        arrays = {}
        for name, w in weights.items():
            if w is None:
                continue
            if name in _EXPERT_WEIGHTS:
                fmt = cfg.get("weight_dtype")
            elif name in _ROUTER_WEIGHTS:
                fmt = cfg.get("router_dtype")
            else:
                fmt = "f32"
            arrays[name] = _weight_array(name, w, fmt)
        if "weight_dtype" not in cfg:
            fmt = _fmt_of(arrays, _EXPERT_WEIGHTS, "weight_dtype")
            if fmt:
                cfg["weight_dtype"] = fmt
        if "router_dtype" not in cfg:
            fmt = _fmt_of(arrays, _ROUTER_WEIGHTS, "router_dtype")
            if fmt:
                cfg["router_dtype"] = fmt
        ctx = self._context_for(backend, context)
        self._impl = _moevk.create_layer(
            ctx._impl if ctx else None, backend, cfg, arrays, vram_budget
        )
        self._arrays = arrays  # the library (the cpu backend) reads them
        self._setup(ctx)

    @classmethod
    def from_pretrained(
        cls,
        path: Any,
        layer: Optional[int] = None,
        *,
        quantize: Optional[str] = None,
        vram_budget: Union[None, int, str] = None,
        backend: str = "vulkan",
        context: Optional[Context] = None,
        prefix: Optional[str] = None,
        decoder: bool = False,
        batch_invariant: bool = False,
        part: Optional[str] = None,
    ) -> "Layer":
        """One MoE block of a checkpoint, as `moevk run --model` loads it: a
        Hugging Face directory (config.json + safetensors, sharded or not)
        or a GGUF file (blk.<layer>). quantize: a format the f32/f16/bf16
        experts are quantised into at load ("q8_0", "q4_k", ...);
        vram_budget: bytes, or "50%" of the routed experts' bytes (the rest
        run from host memory). prefix: the block's tensor-name prefix
        instead of a layer number; decoder: the decoder stack
        (switch_transformers, nllb-moe); part: a second model of the
        checkpoint, configured in "<part>_config" (qwen3_omni_moe's
        "talker")."""
        self = cls.__new__(cls)
        ctx = cls._context_for(backend, context)
        self._impl = _moevk.load_layer(
            ctx._impl if ctx else None,
            backend,
            path,
            -1 if layer is None else int(layer),
            prefix,
            bool(decoder),
            quantize,
            vram_budget,
            bool(batch_invariant),
            part,
        )
        self._arrays = None
        self._setup(ctx)
        return self

    @staticmethod
    def _context_for(backend: str, context: Optional[Context]) -> Optional[Context]:
        if backend == "vulkan":
            return context if context is not None else _default()
        if context is not None:
            raise _moevk.InvalidArgumentError(
                f"backend {backend!r} takes no context (only 'vulkan' runs on one)"
            )
        return None

    def _setup(self, ctx: Optional[Context]) -> None:
        self.context = ctx
        self.config = self._impl.info()
        self.hidden = self.config["hidden"]
        self.top_k = self.config["top_k"]
        # routing slots per token: top_k, or num_experts under expert choice
        self.slots = self.config["slots"]
        self.num_experts = self.config["num_experts"]
        self._stats: Optional[RoutingStats] = None

    def _input(self, x: Any):
        arr, mod = _as_numpy(x)
        if arr.ndim < 1 or arr.shape[-1] != self.hidden:
            raise _moevk.InvalidArgumentError(
                f"x has shape {tuple(arr.shape)}: [..., H] with H = hidden = {self.hidden}"
            )
        if arr.dtype.kind != "f":
            raise TypeError(f"x is {arr.dtype}: float32 or float16 (float64 is rounded)")
        lead = arr.shape[:-1]
        tokens = int(np.prod(lead)) if lead else 1
        if tokens == 0:
            raise _moevk.InvalidArgumentError(f"x has shape {tuple(arr.shape)}: no tokens")
        # no copy when x is C-contiguous float32 already
        flat = np.ascontiguousarray(arr, dtype=np.float32).reshape(tokens, self.hidden)
        return flat, lead, tokens, mod

    @staticmethod
    def _output(a: np.ndarray, mod: Any):
        if mod is not None:
            try:
                return mod.from_dlpack(a)
            except Exception:  # the producer cannot take NumPy's capsule
                return a
        return a

    def _passes(self, flat: np.ndarray, lead: tuple):
        """Row ranges of the passes: one, or one per sequence of a [B, S, H]
        input when the layer has an expert_capacity per sequence
        (switch_transformers), as `moevk run` does."""
        T = flat.shape[0]
        if self.config["expert_capacity"] and len(lead) == 2 and lead[0] > 1:
            S = lead[1]
            return [(b * S, (b + 1) * S) for b in range(lead[0])]
        return [(0, T)]

    def __call__(self, x: Any):
        """y = the layer applied to x [..., H] (float32, x's shape)."""
        flat, lead, T, mod = self._input(x)
        k, E = self.slots, self.num_experts
        y = np.empty((T, self.hidden), np.float32)
        ids = np.empty((T, k), np.uint32)
        w = np.empty((T, k), np.float32)
        tpe = np.zeros(E, np.uint32)
        passes = self._passes(flat, lead)
        dropped, losses = 0, np.zeros(3)
        for a, b in passes:
            part = np.zeros(E, np.uint32)
            s = self._impl.forward(flat[a:b], b - a, y[a:b], ids[a:b], w[a:b], None, part)
            tpe += part
            dropped += int(s[0])
            losses += s[1:]
        # over several passes: the counts add up; the losses are the mean of
        # the passes' (exact for the z-loss and the entropy, means over tokens)
        losses /= len(passes)
        self._stats = RoutingStats(tpe, dropped, *map(float, losses))
        return self._output(y.reshape(*lead, self.hidden), mod)

    def route(self, x: Any):
        """(ids, weights) of x [..., H]: the expert of each of the k slots
        (uint32 [..., k], in score order) and its routing weight (float32);
        under expert choice one slot per expert (slot e: e, or 2**32 - 1 and
        weight 0 when expert e did not take the token).
        It runs a pass (without statistics: ``stats`` stays the last
        forward's)."""
        flat, lead, T, mod = self._input(x)
        k = self.slots
        ids = np.empty((T, k), np.uint32)
        w = np.empty((T, k), np.float32)
        for a, b in self._passes(flat, lead):
            self._impl.forward(flat[a:b], b - a, None, ids[a:b], w[a:b], None, None)
        return (
            self._output(ids.reshape(*lead, k), mod),
            self._output(w.reshape(*lead, k), mod),
        )

    forward = __call__

    @property
    def stats(self) -> Optional[RoutingStats]:
        """Routing statistics of the last forward pass (None before one)."""
        return self._stats

    @property
    def stage_times(self) -> Dict[str, float]:
        """GPU milliseconds of each stage of the last forward pass (zeros on
        devices without timestamps and on the cpu backend)."""
        return self._impl.stage_times()

    @property
    def memory(self) -> Memory:
        return Memory(**self._impl.memory())

    def __repr__(self) -> str:
        c = self.config
        where = f" {c['arch']} {c['prefix']}" if c["arch"] else ""
        return (
            f"moevk.Layer({c['backend']}{where}: H={c['hidden']} F={c['ffn']} "
            f"E={c['num_experts']} k={c['top_k']}, {c['routing']}, {c['activation']}, "
            f"{c['formats']})"
        )
