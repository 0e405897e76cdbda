"""Threads: two threads each with its own context run at once and get the
results of one thread alone, bit for bit; layers of one context shared by
two threads are serialised, not broken; the GIL is released during a pass."""

import threading
import time

import numpy as np

import moevk
from conftest import random_layer


def run_threads(targets):
    errors = []

    def wrap(f):
        def g():
            try:
                f()
            except BaseException as e:  # noqa: B902 - reported below
                errors.append(e)
        return g

    ts = [threading.Thread(target=wrap(f)) for f in targets]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts), "a thread hangs"
    if errors:
        raise errors[0]


def test_two_threads_with_their_own_contexts(new_context):
    cfgs = [random_layer(51), random_layer(52, E=6, k=3)]
    xs = [np.random.default_rng(53 + i).standard_normal((17, 64)).astype(np.float32)
          for i in range(2)]
    single = moevk.Context()
    want = [moevk.Layer(c, w, context=single)(x) for (c, w), x in zip(cfgs, xs)]
    got = [[], []]
    ctxs = [new_context(), new_context()]

    def worker(i):
        def f():
            layer = moevk.Layer(*cfgs[i], context=ctxs[i])
            for _ in range(40):
                got[i].append(layer(xs[i]))
        return f

    run_threads([worker(0), worker(1)])
    for i in range(2):
        assert len(got[i]) == 40
        for y in got[i]:
            np.testing.assert_array_equal(y, want[i])
    assert [c.validation_messages for c in ctxs] == [0, 0]


def test_one_context_shared_by_two_threads(ctx):
    cfg, w = random_layer(54)
    x = np.random.default_rng(54).standard_normal((5, 64)).astype(np.float32)
    layers = [moevk.Layer(cfg, w, context=ctx) for _ in range(2)]
    want = layers[0](x)
    out = [[], []]

    def worker(i):
        return lambda: out[i].extend(layers[i](x) for _ in range(30))

    run_threads([worker(0), worker(1)])
    for ys in out:
        assert len(ys) == 30
        for y in ys:
            np.testing.assert_array_equal(y, want)


def test_gil_released_during_a_pass():
    # a long pass on the CPU reference; meanwhile this thread keeps running
    cfg, w = random_layer(55, H=128, F=128, E=8)
    layer = moevk.Layer(cfg, w, backend="cpu")
    x = np.random.default_rng(55).standard_normal((1024, 128)).astype(np.float32)
    t0 = time.perf_counter()
    layer(x)
    alone = time.perf_counter() - t0
    done = threading.Event()

    def run():
        layer(x)
        done.set()

    t = threading.Thread(target=run)
    gaps, last = [], time.perf_counter()
    t.start()
    while not done.is_set():
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        time.sleep(0.001)
    t.join()
    assert alone > 0.05, f"the pass took {alone:.3f} s: too short to tell"
    assert len(gaps) > 5, f"{len(gaps)} iterations while a {alone:.3f} s pass ran"
    assert max(gaps) < alone / 2, f"the main thread stalled {max(gaps):.3f} s of {alone:.3f} s"


def test_layers_dropped_while_another_thread_runs(ctx):
    # a layer freed on one thread waits (without the GIL) for the other
    # thread's pass on the same context
    cfg, w = random_layer(56)
    x = np.random.default_rng(56).standard_normal((64, 64)).astype(np.float32)
    busy = moevk.Layer(cfg, w, context=ctx)
    want = busy(x)
    out = []
    stop = threading.Event()

    def run():
        while not stop.is_set():
            out.append(busy(x))

    t = threading.Thread(target=run)
    t.start()
    try:
        for _ in range(20):
            layer = moevk.Layer(cfg, w, context=ctx)
            layer(x[:2])
            layer.memory
            ctx.validation_messages
            del layer
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive() and out
    for y in out:
        np.testing.assert_array_equal(y, want)
