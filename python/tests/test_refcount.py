"""Reference counting and memory: no reference, Python allocation or resident
memory left behind over 10,000 calls (the CPU reference: the extension's
marshalling is the same for every backend) and 1,000 on Vulkan, over failing
calls, and over layers made and dropped."""

import gc
import os
import sys
import tracemalloc

import numpy as np

import moevk
from conftest import FIXTURES, random_layer


def rss_bytes():
    """Resident memory (Linux: /proc/self/statm counts pages)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def check_calls(f, n, objs, slack_py=64 * 1024, slack_rss=4 << 20):
    for _ in range(50):  # warm-up: caches, first allocations
        f()
    gc.collect()
    refs = [sys.getrefcount(o) for o in objs]
    tracemalloc.start()
    base_py, _ = tracemalloc.get_traced_memory()
    base_rss = rss_bytes()
    for _ in range(n):
        f()
    gc.collect()
    py, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = rss_bytes()
    assert [sys.getrefcount(o) for o in objs] == refs, "references left on the arguments"
    assert py - base_py < slack_py, f"{py - base_py} bytes of Python memory kept over {n} calls"
    assert rss - base_rss < slack_rss, f"RSS grew by {rss - base_rss} bytes over {n} calls"


def test_10000_forward_and_route_calls_on_the_reference():
    cfg, w = random_layer(41, H=32, F=32, E=4)
    layer = moevk.Layer(cfg, w, backend="cpu")
    x = np.random.default_rng(41).standard_normal((2, 32)).astype(np.float32)

    def call():
        layer(x)
        layer.route(x)
        layer.stats
        layer.stage_times
        layer.memory

    check_calls(call, 10_000, [x, layer, layer._impl])


def test_1000_calls_on_vulkan(ctx):
    cfg, w = random_layer(42, H=32, F=32, E=4)
    layer = moevk.Layer(cfg, w, context=ctx)
    x = np.random.default_rng(42).standard_normal((2, 32)).astype(np.float32)
    check_calls(lambda: layer(x), 1_000, [x, layer, layer._impl, ctx, ctx._impl])


def test_failing_calls_keep_nothing():
    cfg, w = random_layer(43, H=32, F=32, E=4)
    layer = moevk.Layer(cfg, w, backend="cpu")
    x = np.zeros((3, 32), np.float32)
    ids = np.zeros((3, 2), np.int32)  # the wrong format for ids

    def call():
        try:
            layer._impl.forward(x, 3, None, ids, None, None, None)
        except moevk.InvalidArgumentError:
            pass
        try:
            moevk.Layer(dict(cfg, top_k=9), w, backend="cpu")
        except moevk.InvalidArgumentError:
            pass

    check_calls(call, 5_000, [x, ids, layer._impl] + list(w.values()))


def test_layers_made_and_dropped(ctx):
    cfg, w = random_layer(44, H=32, F=32, E=4)
    arrays = list(w.values())

    def make():
        moevk.Layer(cfg, w, backend="cpu")
        moevk.Layer.from_pretrained(os.path.join(FIXTURES, "hf_blocks", "mixtral"), 0,
                                    backend="cpu")

    check_calls(make, 2_000, arrays)
    check_calls(lambda: moevk.Layer(cfg, w, context=ctx), 200, arrays + [ctx._impl],
                slack_rss=8 << 20)


def test_the_checks_see_planted_leaks():
    import pytest

    x = np.zeros(4, np.float32)
    kept = []
    with pytest.raises(AssertionError, match="references left"):
        check_calls(lambda: kept.append(x), 1_000, [x])
    kept.clear()
    with pytest.raises(AssertionError, match="bytes of Python memory kept"):
        check_calls(lambda: kept.append(np.zeros(1)), 2_000, [])
    kept.clear()
