#!/usr/bin/env python3
"""A Mixture-of-Experts layer from Python with moevk.

    python3 examples/python/moe_layer.py                 # a random layer
    python3 examples/python/moe_layer.py DIR|FILE.gguf [LAYER]   # a checkpoint's block

Builds a random Mixtral-shaped layer from NumPy arrays (or loads one block of
a Hugging Face checkpoint or a GGUF file), runs a batch of tokens on the
Vulkan device and on the CPU reference, and prints the error, the routing of
the first tokens, the statistics and the GPU time of each stage."""

import sys

import numpy as np

import moevk


def random_layer(rng, H=256, F=512, E=8, k=2):
    config = dict(hidden=H, ffn=F, num_experts=E, top_k=k, routing="softmax_topk",
                  activation="swiglu", norm_topk_prob=True)
    weights = {
        "router_weight": rng.standard_normal((E, H), np.float32) / np.sqrt(H),
        "gate": rng.standard_normal((E, F, H), np.float32) / np.sqrt(H),
        "up": rng.standard_normal((E, F, H), np.float32) / np.sqrt(H),
        "down": rng.standard_normal((E, H, F), np.float32) / np.sqrt(F),
    }
    return config, weights


def main(argv):
    rng = np.random.default_rng(0)
    for d in moevk.devices():
        print(f"device {d.index}: {d.name} ({d.driver_name} {d.driver_info})")
    ctx = moevk.Context()
    if len(argv) > 1:
        layer_no = int(argv[2]) if len(argv) > 2 else 0
        layer = moevk.Layer.from_pretrained(argv[1], layer_no, context=ctx)
        ref = moevk.Layer.from_pretrained(argv[1], layer_no, backend="cpu")
    else:
        config, weights = random_layer(rng)
        layer = moevk.Layer(config, weights, context=ctx)
        ref = moevk.Layer(config, weights, backend="cpu")
    print(layer)
    x = rng.standard_normal((64, layer.hidden), np.float32)
    y = layer(x)
    want = ref(x)
    err = np.linalg.norm(y - want) / np.linalg.norm(want)
    print(f"y {y.shape} {y.dtype}, relative L2 against the CPU reference {err:.2e}")
    ids, w = layer.route(x[:4])
    for t in range(4):
        print(f"token {t}: experts {ids[t].tolist()} weights {[round(float(v), 4) for v in w[t]]}")
    print(layer.stats)
    times = layer.stage_times
    print("GPU ms:", ", ".join(f"{k} {v:.3f}" for k, v in times.items()),
          f"(total {sum(times.values()):.3f})")
    m = layer.memory
    print(f"memory: {m.device_weight_bytes / 2**20:.2f} MiB of weights, "
          f"{m.scratch_bytes / 2**20:.2f} MiB of scratch on the device")


if __name__ == "__main__":
    main(sys.argv)
