"""Random layers from NumPy arrays against the NumPy float64 oracle and the
library's CPU reference (backend="cpu"); inputs of every kind the package
takes; the routing, statistics, stage times and memory it reports."""

import numpy as np
import pytest

import moevk
from conftest import check_layers_against, numpy_layer, random_layer, rel_l2, routed_sum

SEEDS = [11, 12, 13]


def not_near_tie(cfg, w, x, gap=1e-5):
    """Tokens whose k-th and (k+1)-th router logits are not nearly tied."""
    x = np.asarray(x, np.float64).reshape(-1, cfg["hidden"])
    logits = x @ np.asarray(w["router_weight"], np.float64).T
    p = np.sort(logits, axis=1)[:, ::-1]
    k = cfg["top_k"]
    return (p[:, k - 1] - p[:, k]) > gap * np.abs(p[:, k - 1])


@pytest.mark.parametrize("seed", SEEDS)
def test_random_layer_matches_numpy_and_reference(ctx, seed):
    print(f"seed {seed}")
    cfg, w = random_layer(seed, shared=1 if seed == 13 else 0)
    rng = np.random.default_rng(seed + 1000)
    x = rng.standard_normal((33, cfg["hidden"])).astype(np.float32)
    want, ids_want, w_want = numpy_layer(cfg, w, x)
    vk = moevk.Layer(cfg, w, context=ctx)
    cpu = moevk.Layer(cfg, w, backend="cpu")
    y_vk, y_cpu = vk(x), cpu(x)
    assert y_vk.dtype == np.float32 and y_vk.shape == x.shape
    assert rel_l2(y_cpu, want) < 1e-6, f"seed {seed}: cpu vs numpy"
    assert rel_l2(y_vk, want) < 1e-5, f"seed {seed}: vulkan vs numpy"
    ok = not_near_tie(cfg, w, x)
    for layer in (vk, cpu):
        ids, wts = layer.route(x)
        assert ids.dtype == np.uint32 and ids.shape == (33, cfg["top_k"])
        np.testing.assert_array_equal(ids[ok], ids_want[ok], err_msg=f"seed {seed}")
        np.testing.assert_allclose(wts[ok], w_want[ok], rtol=1e-5, atol=1e-6)
        s = layer.stats
        assert s.tokens_per_expert.shape == (cfg["num_experts"],)
        assert int(s.tokens_per_expert.sum()) == 33 * cfg["top_k"]
        assert s.dropped == 0
        # counts of the oracle's routing (no near-tie moves a count here)
        if ok.all():
            np.testing.assert_array_equal(
                s.tokens_per_expert, np.bincount(ids_want.ravel(), minlength=cfg["num_experts"]))
    assert vk.stats.load_balancing_loss == pytest.approx(cpu.stats.load_balancing_loss, rel=1e-5)
    assert vk.stats.routing_entropy == pytest.approx(cpu.stats.routing_entropy, rel=1e-5)


def test_input_kinds(ctx):
    cfg, w = random_layer(21)
    layer = moevk.Layer(cfg, w, context=ctx)
    rng = np.random.default_rng(22)
    x = rng.standard_normal((2, 5, cfg["hidden"])).astype(np.float32)
    y = layer(x)
    assert y.shape == x.shape
    # a [B, S, H] input is its B * S tokens
    np.testing.assert_array_equal(layer(x.reshape(10, -1)).reshape(x.shape), y)
    # float16 (converted), a strided view (copied), a Fortran-ordered array, a list
    x16 = x.astype(np.float16)
    np.testing.assert_array_equal(layer(x16), layer(x16.astype(np.float32)))
    wide = np.zeros((2, 5, 2 * cfg["hidden"]), np.float32)
    wide[:, :, ::2] = x
    np.testing.assert_array_equal(layer(wide[:, :, ::2]), y)
    np.testing.assert_array_equal(layer(np.asfortranarray(x[0]))[None], y[:1])
    np.testing.assert_array_equal(layer(x[0, 0].tolist()), y[0, 0])
    # one token as a 1-D array
    assert layer(x[0, 0]).shape == (cfg["hidden"],)


def test_dlpack_input_from_torch(ctx):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    cfg, w = random_layer(23)
    layer = moevk.Layer(cfg, w, context=ctx)
    x = torch.randn(4, cfg["hidden"], generator=torch.Generator().manual_seed(23))
    y = layer(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), layer(x.numpy()))
    ids, wts = layer.route(x)
    assert isinstance(ids, torch.Tensor)


class DLPackOnly:
    """A producer that offers nothing but the DLPack protocol."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, stream=None):
        return self.a.__dlpack__()

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_dlpack_input_without_copy(ctx):
    cfg, w = random_layer(24)
    layer = moevk.Layer(cfg, w, context=ctx)
    x = np.random.default_rng(24).standard_normal((3, cfg["hidden"])).astype(np.float32)
    arr, _ = moevk._api._as_numpy(DLPackOnly(x))
    assert np.shares_memory(arr, x)  # read where it lies
    np.testing.assert_array_equal(layer(DLPackOnly(x)), layer(x))


def test_f16_weights_against_reference(ctx):
    cfg, w = random_layer(25, dtype=np.float16)
    vk = moevk.Layer(cfg, w, context=ctx)
    cpu = moevk.Layer(cfg, w, backend="cpu")
    assert vk.config["weight_dtype"] == "f16" and vk.config["formats"] == "f16"
    x = np.random.default_rng(26).standard_normal((9, cfg["hidden"])).astype(np.float32)
    want, _, _ = numpy_layer(cfg, w, x)
    assert rel_l2(cpu(x), want) < 1e-6
    assert rel_l2(vk(x), want) < 1e-5


def test_f64_weights_are_rounded_to_f32():
    cfg, w = random_layer(26)
    w64 = {n: a.astype(np.float64) for n, a in w.items()}
    x = np.random.default_rng(26).standard_normal((3, cfg["hidden"])).astype(np.float32)
    a = moevk.Layer(cfg, w64, backend="cpu")
    assert a.config["weight_dtype"] == "f32"
    np.testing.assert_array_equal(a(x), moevk.Layer(cfg, w, backend="cpu")(x))


def test_bf16_weights_as_uint16(ctx):
    cfg, w = random_layer(27)
    bf = {n: (a.view(np.uint32) >> 16).astype(np.uint16) for n, a in w.items()}
    cfg = dict(cfg, weight_dtype="bf16", router_dtype="bf16")
    vk = moevk.Layer(cfg, bf, context=ctx)
    cpu = moevk.Layer(cfg, bf, backend="cpu")
    x = np.random.default_rng(28).standard_normal((5, cfg["hidden"])).astype(np.float32)
    assert rel_l2(vk(x), cpu(x)) < 1e-5


def test_quantised_at_create(ctx):
    cfg, w = random_layer(29, H=256, F=256, E=4)
    q = moevk.Layer(dict(cfg, quantize_dtype="q8_0"), w, context=ctx)
    assert q.config["formats"] == "q8_0"
    q4 = moevk.Layer(cfg, w, context=ctx, quantize="q4_k")
    assert q4.config["formats"] == "q4_k"
    x = np.random.default_rng(30).standard_normal((4, 256)).astype(np.float32)
    want, _, _ = numpy_layer(cfg, w, x)
    assert rel_l2(q(x), want) < 2e-2  # q8_0 rounding
    assert q.memory.device_weight_bytes < moevk.Layer(cfg, w, context=ctx).memory.device_weight_bytes


def test_stage_times_and_memory(ctx):
    cfg, w = random_layer(31)
    layer = moevk.Layer(cfg, w, context=ctx)
    assert layer.stats is None
    layer(np.ones((3, cfg["hidden"]), np.float32))
    times = layer.stage_times
    assert list(times) == ["router", "route", "permute", "experts_up", "experts_down", "shared",
                           "combine", "stats"]
    if ctx.device.timestamps:
        assert sum(times.values()) > 0
    m = layer.memory
    weights = sum(a.nbytes for a in w.values())
    assert m.device_weight_bytes >= weights
    assert m.scratch_bytes > 0 and not m.budgeted
    cpu = moevk.Layer(cfg, w, backend="cpu")
    cpu(np.ones((3, cfg["hidden"]), np.float32))
    assert set(cpu.stage_times.values()) == {0.0}
    assert cpu.memory.device_weight_bytes == 0


def test_vram_budget(ctx):
    cfg, w = random_layer(32, E=8)
    full = moevk.Layer(cfg, w, context=ctx)
    half = moevk.Layer(cfg, w, context=ctx, vram_budget="50%")
    m = half.memory
    assert m.budgeted and m.device_slots == 4 and m.host_weight_bytes > 0
    x = np.random.default_rng(33).standard_normal((16, cfg["hidden"])).astype(np.float32)
    for _ in range(3):  # bit for bit the all-resident layer, whatever the cache does
        np.testing.assert_array_equal(half(x), full(x))
    m = half.memory
    assert m.passes == 3 and m.hits + m.misses == 3 * 16 * cfg["top_k"]
    none = moevk.Layer(cfg, w, context=ctx, vram_budget=0)
    assert none.memory.device_slots == 0
    np.testing.assert_array_equal(none(x), full(x))


def test_devices_and_backends(ctx):
    devs = moevk.devices()
    assert devs and all(isinstance(d, moevk.Device) for d in devs)
    assert ctx.device.name in [d.name for d in devs]
    b = moevk.backends()
    assert b["vulkan"][0] and b["cpu"][0]


def test_expert_choice_matches_numpy(ctx):
    """Expert choice: each expert takes the C tokens with the largest p[t, e]
    (C = ceil(cf T k / E)); slot e of a token holds e or 2**32 - 1."""
    cfg, w = random_layer(31, norm=False)
    cfg.update(routing="expert_choice", capacity_factor=1.5)
    T, E, k, H = 29, cfg["num_experts"], cfg["top_k"], cfg["hidden"]
    C = int(np.ceil(1.5 * T * k / E))
    rng = np.random.default_rng(32)
    x = rng.standard_normal((T, H)).astype(np.float32)
    x64 = x.astype(np.float64)
    logits = x64 @ np.asarray(w["router_weight"], np.float64).T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    taken = np.zeros((T, E), bool)
    clear = True
    for e in range(E):
        order = np.argsort(-p[:, e], kind="stable")
        taken[order[:C], e] = True
        gap = p[order[C - 1], e] - p[order[C], e]
        clear &= gap > 1e-5 * p[order[C - 1], e]
    assert clear, "seed 31/32: a near-tie at an expert's boundary"

    def silu(v):
        return v / (1.0 + np.exp(-v))

    want = np.zeros((T, H))
    for t in range(T):
        for e in np.nonzero(taken[t])[0]:
            g = np.asarray(w["gate"][e], np.float64) @ x64[t]
            u = np.asarray(w["up"][e], np.float64) @ x64[t]
            want[t] += p[t, e] * (np.asarray(w["down"][e], np.float64) @ (silu(g) * u))
    for layer in (moevk.Layer(cfg, w, context=ctx), moevk.Layer(cfg, w, backend="cpu")):
        y = layer(x)
        assert rel_l2(y, want) < 1e-5
        s = layer.stats
        np.testing.assert_array_equal(s.tokens_per_expert, np.full(E, C))
        assert s.dropped == 0
        ids, wts = layer.route(x)
        assert ids.shape == (T, E) and wts.shape == (T, E)
        expect = np.where(taken, np.arange(E, dtype=np.uint32), np.uint32(0xFFFFFFFF))
        np.testing.assert_array_equal(ids, expect)
        np.testing.assert_allclose(wts, np.where(taken, p, 0.0), rtol=1e-5, atol=1e-7)
    # tokens no expert took, and tokens several took: the choice is uneven
    n = taken.sum(axis=1)
    assert (n == 0).any() or (n > k).any()
    with pytest.raises(moevk.InvalidArgumentError, match="BATCH_INVARIANT"):
        moevk.Layer(dict(cfg, batch_invariant=True), w, context=ctx)


def test_sparsemixer_matches_numpy(ctx):
    """SparseMixer (PhiMoE at inference): slot j takes the best logit m left
    after the earlier slots' experts, its weight the softmax at it over the
    experts left whose gap (m - l) / max(|l|, m) is at most 2 jitter_eps."""
    cfg, w = random_layer(41, norm=False)
    eps = 0.15
    cfg.update(routing="sparsemixer", jitter_eps=eps)
    T, E, k, H = 31, cfg["num_experts"], cfg["top_k"], cfg["hidden"]
    rng = np.random.default_rng(42)
    x = rng.standard_normal((T, H)).astype(np.float32)
    x64 = x.astype(np.float64)
    logits = x64 @ np.asarray(w["router_weight"], np.float64).T
    ids = np.zeros((T, k), np.uint32)
    wts = np.zeros((T, k))
    wide = clear = 0
    for t in range(T):
        left = list(range(E))
        for j in range(k):
            top = max(left, key=lambda e: (logits[t, e], -e))
            m = logits[t, top]
            gap = np.array([(m - logits[t, e]) / max(abs(logits[t, e]), m) for e in left])
            kept = [e for e, g in zip(left, gap) if g <= 2 * eps]
            ids[t, j] = top
            wts[t, j] = 1.0 / np.exp(logits[t, kept] - m).sum()
            wide += len(kept) > 1
            others = np.abs(gap[np.array(left) != top] - 2 * eps)
            clear += others.size == 0 or others.min() > 1e-4
            left.remove(top)
    assert clear == T * k, "seed 41/42: a gap near the threshold"
    assert 0 < wide < T * k, "the threshold keeps other experts in some sets, not in all"

    check_layers_against(cfg, w, x, ctx, routed_sum(w, x64, ids, wts), ids, wts)
    with pytest.raises(moevk.InvalidArgumentError, match="jitter_eps"):
        moevk.Layer(dict(cfg, jitter_eps=-1.0), w, context=ctx)


def test_input_norms_match_numpy(ctx):
    """Gemma 4's block: the router reads x / rms(x) * router_input_scale *
    router_input_factor, the experts x / rms(x) * expert_norm_weight, and
    each renormalised top-k weight is times expert_weight_scale[id]."""
    cfg, w = random_layer(41)
    T, E, k, H = 23, cfg["num_experts"], cfg["top_k"], cfg["hidden"]
    rng = np.random.default_rng(42)
    w["router_input_scale"] = (1.0 + 0.3 * rng.standard_normal(H)).astype(np.float32)
    w["expert_norm_weight"] = (1.0 + 0.3 * rng.standard_normal(H)).astype(np.float32)
    w["expert_weight_scale"] = (1.0 + 0.3 * rng.standard_normal(E)).astype(np.float32)
    eps = 1e-6
    cfg.update(router_norm_eps=eps, router_input_factor=float(H) ** -0.5, expert_norm_eps=eps)
    x = (3.0 * rng.standard_normal((T, H))).astype(np.float32)
    x64 = x.astype(np.float64)
    inv = 1.0 / np.sqrt((x64 * x64).mean(axis=1, keepdims=True) + eps)
    xr = (x64 * inv * w["router_input_scale"] * H ** -0.5).astype(np.float32).astype(np.float64)
    xe = (x64 * inv * w["expert_norm_weight"]).astype(np.float32).astype(np.float64)
    logits = xr @ np.asarray(w["router_weight"], np.float64).T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    ids = np.argsort(-p, axis=1, kind="stable")[:, :k]
    srt = np.sort(p, axis=1)[:, ::-1]
    assert ((srt[:, k - 1] - srt[:, k]) > 1e-5 * srt[:, k - 1]).all(), "seed 41/42: a near-tie"
    pk = np.take_along_axis(p, ids, axis=1)
    wk = pk / pk.sum(axis=1, keepdims=True) * w["expert_weight_scale"][ids]

    def silu(v):
        return v / (1.0 + np.exp(-v))

    want = np.zeros((T, H))
    for t in range(T):
        for j in range(k):
            e = ids[t, j]
            g = np.asarray(w["gate"][e], np.float64) @ xe[t]
            u = np.asarray(w["up"][e], np.float64) @ xe[t]
            want[t] += wk[t, j] * (np.asarray(w["down"][e], np.float64) @ (silu(g) * u))
    for layer in (moevk.Layer(cfg, w, context=ctx), moevk.Layer(cfg, w, backend="cpu")):
        assert rel_l2(layer(x), want) < 1e-5
        gi, gw = layer.route(x)
        np.testing.assert_array_equal(gi, ids.astype(np.uint32))
        np.testing.assert_allclose(gw, wk, rtol=1e-5, atol=1e-7)
    with pytest.raises(moevk.InvalidArgumentError, match="expert_norm_weight"):
        moevk.Layer(dict(cfg, expert_norm_eps=0.0), w, context=ctx)


def test_sqrtsoftplus_scores_match_numpy(ctx):
    """DeepSeek-V4's scores: s = sqrt(softplus(l)) plus the correction bias
    choose the top k, w = s[ids] normalised, times routed_scaling_factor."""
    cfg, w = random_layer(51)
    T, E, k, H = 29, cfg["num_experts"], cfg["top_k"], cfg["hidden"]
    rng = np.random.default_rng(52)
    bias = (0.3 * rng.standard_normal(E)).astype(np.float32)
    cfg.update(routing="sigmoid_grouped", score_fn="sqrtsoftplus", norm_topk_prob=True,
               routed_scaling_factor=1.5)
    w = dict(w, correction_bias=bias)
    x = rng.standard_normal((T, H)).astype(np.float32)
    x64 = x.astype(np.float64)
    logits = x64 @ np.asarray(w["router_weight"], np.float64).T
    s = np.sqrt(np.logaddexp(0.0, logits))
    c = s + bias
    order = np.argsort(-c, axis=1, kind="stable")
    ids = order[:, :k]
    srt = np.take_along_axis(c, order, axis=1)
    assert (srt[:, k - 1] - srt[:, k]).min() > 1e-4, "seed 51/52: a near-tie"
    sk = np.take_along_axis(s, ids, axis=1)
    wts = sk / (sk.sum(axis=1, keepdims=True) + 1e-20) * 1.5

    check_layers_against(cfg, w, x, ctx, routed_sum(w, x64, ids, wts), ids, wts)
    with pytest.raises(moevk.InvalidArgumentError, match="score_fn"):
        moevk.Layer(dict(cfg, routing="softmax_topk"), w, context=ctx)
    with pytest.raises(ValueError, match="score_fn"):
        moevk.Layer(dict(cfg, score_fn="tanh"), w, context=ctx)


def test_capacity_fraction_and_renormalisation(ctx):
    """NLLB-MoE's eval capacity (ceil(f T) per expert) and its renormalisation
    of what dropping leaves: the fields reach the library (drops counted,
    Vulkan as the CPU reference), and without drops the renormalisation
    gives the normalised top-k."""
    cfg, w = random_layer(61, norm=False, E=4)
    T = 40
    x = np.random.default_rng(62).standard_normal((T, cfg["hidden"])).astype(np.float32)
    c = dict(cfg, capacity_fraction=0.3, drop_renorm_eps=1.1920929e-07)
    vk, cpu = moevk.Layer(c, w, context=ctx), moevk.Layer(c, w, backend="cpu")
    y_vk, y_cpu = vk(x), cpu(x)
    assert vk.stats.dropped > 0 and vk.stats.dropped == cpu.stats.dropped
    assert int(vk.stats.tokens_per_expert.max()) <= 12  # ceil(0.3 * 40)
    assert rel_l2(y_vk, y_cpu) < 1e-5
    # no capacity: the renormalised weights are the normalised ones
    want = moevk.Layer(dict(cfg, norm_topk_prob=True), w, backend="cpu")(x)
    got = moevk.Layer(dict(cfg, drop_renorm_eps=1.1920929e-07), w, context=ctx)(x)
    assert rel_l2(got, want) < 1e-5
    with pytest.raises(moevk.InvalidArgumentError, match="give one capacity"):
        moevk.Layer(dict(c, capacity_factor=1.0), w, context=ctx)
