#!/usr/bin/env python3
"""Quantisation error of every weight format on two expert-shaped tensors.

Quantises, with tests/format_tool (src/quantize.c), and decodes (the
reference decoders, bit-identical to gguf-py's) two float32 tensors of
ROWS x COLS (default 4096 x 14336, Mixtral-8x7B's w2):
  gaussian      N(0, 0.02^2)
  mixtral-like  0.02 x a unit-variance student-t (5 degrees of freedom)
                with a per-row scale (lognormal, sigma 0.2) and 0.3% of
                the columns (input features) 10x larger: heavier tails and
                outlier columns, as in trained MoE experts
and prints, per format, bits per weight and the RMS error against the
float32 tensor (absolute and relative to the tensor's RMS), plus a
Q4_K_M-like mix of the expert matrices (llama.cpp's Q4_K_M: gate and up in
Q4_K, down in Q6_K in half of the layers, else Q4_K; error as the mix's
RMS over the three matrices, each taken to be like this tensor).

--compare TOOL quantises the same tensors with another quantiser that has
format_tool's command line (`TOOL quantize FORMAT < floats > blocks`) and
adds the ratio of the RMS errors (ours / theirs) and how many blocks
differ; --compare-as FORMAT=NAME asks TOOL for NAME instead of
FORMAT. Needs numpy (build-tools/py from tools/py_tools.sh has it).
usage: quant_error.py [--tool build/tests/format_tool] [--rows 4096] [--cols 14336]
                      [--seed 1] [--formats q4_k,q6_k,...] [--compare TOOL]
                      [--compare-as FORMAT=NAME]...
"""
import argparse
import subprocess
import sys
import time

import numpy as np

# name: (elements a block, bytes a block)
FORMATS = {
    "q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24),
    "mxfp4": (32, 17), "iq4_nl": (32, 18), "q2_k": (256, 84), "q3_k": (256, 110),
    "q4_k": (256, 144), "q5_k": (256, 176), "q6_k": (256, 210), "iq4_xs": (256, 136),
}


TENSORS = ("gaussian", "mixtral-like")


def tensors(rows, cols, seed):
    rng = np.random.default_rng(seed)
    gauss = (rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02))
    nu = 5.0
    t = rng.standard_t(nu, (rows, cols)).astype(np.float32) * np.float32((1 - 2 / nu) ** 0.5)
    t *= np.exp(rng.normal(0.0, 0.2, (rows, 1))).astype(np.float32)
    outliers = rng.choice(cols, max(1, int(cols * 0.003)), replace=False)
    t[:, outliers] *= np.float32(10.0)
    t *= np.float32(0.02)
    return list(zip(TENSORS, (gauss, t)))


def run(tool, cmd, fmt, data):
    r = subprocess.run([tool, cmd, fmt], input=data, capture_output=True)
    if r.returncode != 0:
        sys.exit("%s %s %s failed: %s" % (tool, cmd, fmt, r.stderr.decode(errors="replace")))
    return r.stdout


def mse(x, y):
    """Mean squared difference in float64, a slice at a time."""
    total, step = 0.0, 1 << 22
    xf, yf = x.ravel(), y.ravel()
    for i in range(0, xf.size, step):
        d = yf[i:i + step].astype(np.float64) - xf[i:i + step]
        total += float(np.dot(d, d))
    return total / xf.size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", default="build/tests/format_tool")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=14336)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--compare", default="")
    ap.add_argument("--compare-as", action="append", default=[])
    a = ap.parse_args()
    names = dict(kv.split("=", 1) for kv in a.compare_as)
    fmts = [f for f in a.formats.split(",") if f]
    for f in fmts:
        if f not in FORMATS:
            sys.exit("unknown format %s" % f)
        if a.cols % FORMATS[f][0]:
            sys.exit("%s: %d columns are not whole blocks" % (f, a.cols))

    res = {}  # (tensor, fmt) -> (our mse, the other's mse, (differing blocks, blocks))
    rms = {}
    for tname, x in tensors(a.rows, a.cols, a.seed):
        raw = x.tobytes()
        rms[tname] = float(np.sqrt(mse(x, np.zeros_like(x))))
        for f in fmts:
            t0 = time.time()
            q = run(a.tool, "quantize", f, raw)
            y = np.frombuffer(run(a.tool, "decode", f, q), dtype=np.float32)
            e = mse(x, y)
            e2 = same = None
            if a.compare:
                q2 = run(a.compare, "quantize", names.get(f, f), raw)
                y2 = np.frombuffer(run(a.tool, "decode", f, q2), dtype=np.float32)
                e2 = mse(x, y2)
                bb = FORMATS[f][1]
                b1 = np.frombuffer(q, np.uint8).reshape(-1, bb)
                b2 = np.frombuffer(q2, np.uint8).reshape(-1, bb)
                same = (int((b1 != b2).any(axis=1).sum()), b1.shape[0])
            res[(tname, f)] = (e, e2, same)
            print("  %s %-6s %.1f s" % (tname, f, time.time() - t0), file=sys.stderr)

    tn = TENSORS
    head = "| format | bits/weight |" + "".join(
        " %s RMSE | rel. |" % t for t in tn)
    if a.compare:
        head += "".join(" ratio %s | blocks differing %s |" % (t, t) for t in tn)
    print("%d x %d, seed %d; RMS of the tensors: %s" % (
        a.rows, a.cols, a.seed, ", ".join("%s %.5g" % (t, rms[t]) for t in tn)))
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for f in fmts:
        be, bb = FORMATS[f]
        line = "| %s | %.4g |" % (f, 8.0 * bb / be)
        for t in tn:
            e = res[(t, f)][0]
            line += " %.4e | %.4f |" % (e ** 0.5, e ** 0.5 / rms[t])
        if a.compare:
            for t in tn:
                e, e2, same = res[(t, f)]
                line += " %.4f | %d of %d |" % ((e / e2) ** 0.5 if e2 else float("nan"), same[0], same[1])
        print(line)
    if "q4_k" in fmts and "q6_k" in fmts:
        # gate, up: Q4_K; down: Q6_K in half of the layers (llama.cpp's
        # use_more_bits: 16 of 32), Q4_K in the others
        w4, w6 = 2.5 / 3, 0.5 / 3
        bpw = w4 * 8 * 144 / 256 + w6 * 8 * 210 / 256
        line = "| Q4_K_M-like mix | %.4g |" % bpw
        mix = {t: [w4 * res[(t, "q4_k")][k] + w6 * res[(t, "q6_k")][k] if a.compare or k == 0
                   else None for k in (0, 1)] for t in tn}
        for t in tn:
            line += " %.4e | %.4f |" % (mix[t][0] ** 0.5, mix[t][0] ** 0.5 / rms[t])
        if a.compare:
            for t in tn:
                line += " %.4f | |" % ((mix[t][0] / mix[t][1]) ** 0.5)
        print(line)


if __name__ == "__main__":
    main()
