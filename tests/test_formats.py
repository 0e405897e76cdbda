#!/usr/bin/env python3
"""The reference decoders and quantisers (src/formats.c, src/quantize.c),
through tests/format_tool, against PyPI gguf-py (0.19) and numpy.

  decoders     every format's decoder equals gguf-py's dequantize bit for
               bit (NaN positions equal) on random blocks whose scale fields
               are random finite f16 values, plus corner cases: zero,
               negative, subnormal and extreme scales, every byte value at
               every position (so every nibble and every packed scale,
               negative Q6_K scales included), E8M0 = 0 and 1 (fp32
               subnormal scales) up to 254; f16 and bf16 exhaustively
  quantisers   Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and MXFP4 give gguf-py's
               quantize bytes on rows of many kinds (gaussian, uniform,
               exact zeros, all-zero and signed-zero blocks, a negative
               largest magnitude, magnitude ties, powers of two and their
               neighbours, code-boundary ties, huge and tiny magnitudes);
               every format's quantise -> gguf-py dequantize round trip
               within its error bounds; a row that is not whole blocks and
               a non-finite input are refused
  validate     an MXFP4 block with E8M0 = 255 is refused

Runs under a Python with numpy and gguf: this one if it has them, else
MOEVK_GGUF_PYTHON or --venv's (tools/py_tools.sh makes build-tools/py);
without any it exits 77 (meson: skipped).
usage: test_formats.py --tool build/tests/format_tool [--venv DIR] [--seed N]
"""
import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys


def python_with_gguf(venv):
    """Re-run under a Python that has gguf and numpy, or skip (77)."""
    try:
        import numpy  # noqa: F401
        import gguf  # noqa: F401
        return
    except ImportError:
        pass
    candidates = [os.environ.get("MOEVK_GGUF_PYTHON", "")]
    if venv:
        candidates.append(os.path.join(venv, "bin", "python"))
    if not os.environ.get("MOEVK_FORMATS_REEXEC"):
        for py in candidates:
            if py and os.access(py, os.X_OK):
                os.environ["MOEVK_FORMATS_REEXEC"] = "1"
                os.execv(py, [py] + sys.argv)
    print("SKIP: no Python with gguf and numpy (tried %s and %s); run sh tools/py_tools.sh "
          "to make build-tools/py, or set MOEVK_GGUF_PYTHON"
          % (sys.executable, " and ".join(c for c in candidates if c) or "no other"))
    sys.exit(77)


ap = argparse.ArgumentParser()
ap.add_argument("--tool", required=True)
ap.add_argument("--venv", default="")
ap.add_argument("--seed", type=int, default=None)
args = ap.parse_args()
python_with_gguf(args.venv)

import numpy as np  # noqa: E402
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402

# name: (gguf type, elements a block, bytes a block, offsets of f16 scale fields)
FORMATS = {
    "q8_0": (T.Q8_0, 32, 34, [0]),
    "q4_0": (T.Q4_0, 32, 18, [0]),
    "q4_1": (T.Q4_1, 32, 20, [0, 2]),
    "q5_0": (T.Q5_0, 32, 22, [0]),
    "q5_1": (T.Q5_1, 32, 24, [0, 2]),
    "q2_k": (T.Q2_K, 256, 84, [80, 82]),
    "q3_k": (T.Q3_K, 256, 110, [108]),
    "q4_k": (T.Q4_K, 256, 144, [0, 2]),
    "q5_k": (T.Q5_K, 256, 176, [0, 2]),
    "q6_k": (T.Q6_K, 256, 210, [208]),
    "iq4_nl": (T.IQ4_NL, 32, 18, [0]),
    "iq4_xs": (T.IQ4_XS, 256, 136, [0]),
    "mxfp4": (T.MXFP4, 32, 17, []),  # byte 0 is the E8M0 scale
}
BIT_EXACT = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4"]
X86 = platform.machine() in ("x86_64", "AMD64", "i386", "i686")

seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
print("test_formats.py: seed %d (rerun with --seed %d), gguf %s, numpy %s"
      % (seed, seed, importlib.metadata.version("gguf"), np.__version__))
rng = np.random.default_rng(seed)
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def tool(cmd, fmt, data):
    r = subprocess.run([args.tool, cmd, fmt], input=data, capture_output=True)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def our_decode(fmt, blocks):
    rc, out, err = tool("decode", fmt, blocks.tobytes())
    assert rc == 0, err
    return np.frombuffer(out, dtype=np.float32)


def our_quantize(fmt, x):
    rc, out, err = tool("quantize", fmt, np.ascontiguousarray(x, dtype=np.float32).tobytes())
    assert rc == 0, "%s: %s" % (fmt, err)
    return np.frombuffer(out, dtype=np.uint8)


def same_floats(a, b):
    """Positions where a and b differ as bit patterns (NaN: any payload)."""
    a = np.asarray(a, dtype=np.float32).ravel()
    b = np.asarray(b, dtype=np.float32).ravel()
    nan = np.isnan(a) & np.isnan(b)
    return np.flatnonzero((a.view(np.uint32) != b.view(np.uint32)) & ~nan)


# ---- decoders ---------------------------------------------------------------------------

def random_f16(n):
    """Random finite f16 bit patterns (every sign, exponent 0..30, mantissa)."""
    h = rng.integers(0, 1 << 16, n, dtype=np.uint32)
    exp = (h >> 10) & 31
    h = np.where(exp == 31, (h & ~np.uint32(31 << 10)) | (rng.integers(0, 31, n, dtype=np.uint32) << 10), h)
    return h.astype(np.uint16)


SPECIAL_F16 = np.array([0x0000, 0x8000, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x0001, 0x8001,
                        0x03FF, 0x0400, 0x8400, 0x1400, 0x5800], dtype=np.uint16)


def decoder_blocks(fmt, random_blocks):
    _, be, bb, fields = FORMATS[fmt]
    # every byte value at every position: block k has byte p = (p + k) % 256
    k = np.arange(256, dtype=np.uint32).reshape(-1, 1)
    sweep = ((np.arange(bb, dtype=np.uint32).reshape(1, -1) + k) % 256).astype(np.uint8)
    rand = rng.integers(0, 256, (random_blocks, bb), dtype=np.uint8)
    blocks = np.concatenate([sweep, rand])
    n = blocks.shape[0]
    for off in fields:
        h = random_f16(n)
        # corner-case scales: every special value in every field, in turn
        ns = len(SPECIAL_F16)
        h[256:256 + ns * ns] = np.repeat(SPECIAL_F16, ns) if off == fields[0] else np.tile(SPECIAL_F16, ns)
        blocks[:, off:off + 2] = h.view(np.uint8).reshape(n, 2)
    if fmt == "mxfp4":
        e = rng.integers(0, 255, n, dtype=np.uint8)  # 255 (NaN) is refused
        special = np.array([0, 1, 2, 3, 126, 127, 128, 129, 200, 252, 253, 254], dtype=np.uint8)
        e[256:256 + 12 * 8] = np.repeat(special, 8)
        blocks[:, 0] = e
    return blocks


def check_decoders():
    for fmt, (qt, be, bb, _) in FORMATS.items():
        blocks = decoder_blocks(fmt, 8192 if be == 32 else 2048)
        ours = our_decode(fmt, blocks)
        with np.errstate(all="ignore"):
            ref = gguf.quants.dequantize(blocks, qt)
        bad = same_floats(ours, ref)
        if ours.size != ref.size or bad.size:
            i = int(bad[0]) if bad.size else 0
            fail("decode %s: %d of %d values differ; first at element %d of block %d (%s): ours %r, "
                 "gguf-py %r" % (fmt, bad.size, ref.size, i % be, i // be,
                                 blocks[i // be].tobytes().hex(), ours.ravel()[i], ref.ravel()[i]))
        else:
            print("decode %-6s %6d blocks bit-identical to gguf-py" % (fmt, blocks.shape[0]))
    # plain types, exhaustively
    allh = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    for fmt, ref in (("f16", allh.view(np.float16).astype(np.float32)),
                     ("bf16", gguf.quants.dequantize(allh.view(np.uint8), T.BF16))):
        ours = our_decode(fmt, allh)
        bad = same_floats(ours, ref)
        if bad.size:
            fail("decode %s: %d of 65536 values differ (first %#06x)" % (fmt, bad.size, int(bad[0])))
        else:
            print("decode %-6s  65536 values bit-identical to gguf-py" % fmt)


# ---- quantisers, bit for bit ------------------------------------------------------------------

def row_sets(be):
    """(name, blocks as a [n, be] float32 array, x86 only) of many kinds."""
    f = np.float32
    sets = []
    g = rng.standard_normal((2048, be)).astype(f)
    sets.append(("gaussian", g * f(0.02), False))
    sets.append(("gaussian, scales 1e-3..1e3",
                 g[:512] * (f(10.0) ** rng.uniform(-3, 3, (512, 1)).astype(f)), False))
    sets.append(("uniform", rng.uniform(-1, 1, (1024, be)).astype(f), False))
    z = rng.standard_normal((512, be)).astype(f)
    z[rng.random((512, be)) < 0.3] = 0.0
    sets.append(("exact zeros", z, False))
    sets.append(("all-zero blocks", np.zeros((4, be), f), False))
    sz = np.where(rng.random((64, be)) < 0.5, f(0.0), f(-0.0)).astype(f)
    sz[:, 0] = np.where(np.arange(64) % 2 == 0, f(0.0), f(-0.0))
    sets.append(("signed zeros", sz, False))
    pos0 = np.abs(rng.standard_normal((64, be)).astype(f))
    pos0[:, rng.integers(0, be, 64)] = np.where(rng.random(64) < 0.5, f(0.0), f(-0.0))
    sets.append(("non-negative with signed zeros", pos0, False))
    neg = rng.standard_normal((512, be)).astype(f)
    idx = rng.integers(0, be, 512)
    neg[np.arange(512), idx] = -np.abs(neg).max(axis=1) * f(1.5)
    sets.append(("negative largest magnitude", neg, False))
    tie = rng.standard_normal((256, be)).astype(f)
    m = np.abs(tie).max(axis=1) * f(1.25)
    i, j = rng.integers(0, be, 256), rng.integers(0, be, 256)
    tie[np.arange(256), i] = m
    tie[np.arange(256), j] = -m
    sets.append(("magnitude ties", tie, False))
    p2 = (np.where(rng.random((512, be)) < 0.5, -1, 1) *
          np.ldexp(1.0, rng.integers(-20, 21, (512, be)))).astype(f)
    near = p2.copy()
    near[:256] = np.nextafter(p2[:256], f(0))
    near[256:] = np.nextafter(p2[256:], f(np.inf) * p2[256:])
    sets.append(("powers of two", p2, False))
    sets.append(("neighbours of powers of two", near, False))
    const = np.repeat(rng.standard_normal((64, 1)).astype(f), be, axis=1)
    sets.append(("constant blocks", const, False))
    # values on the codes' rounding boundaries: s * (k + 1/2) and s * k
    s = np.ldexp(1.0, rng.integers(-10, 5, (256, 1))).astype(f)
    k = rng.integers(-16, 16, (256, be)).astype(f)
    sets.append(("half-integer multiples", s * (k + f(0.5)), False))
    sets.append(("integer multiples", s * k, False))
    sets.append(("huge (1e30..3e38)",
                 (rng.uniform(-1, 1, (256, be)) * 10.0 ** rng.uniform(30, 38.5, (256, 1))).astype(f), True))
    sets.append(("near the f16 limit",
                 (rng.uniform(-1, 1, (256, be)) * rng.uniform(6.0e4, 1.3e7, (256, 1))).astype(f), False))
    sets.append(("small (1e-30..1e-8)",
                 (rng.standard_normal((256, be)) * 10.0 ** rng.uniform(-30, -8, (256, 1))).astype(f), False))
    sets.append(("tiny (fp32 subnormal range)",
                 (rng.standard_normal((256, be)) * 10.0 ** rng.uniform(-45, -36, (256, 1))).astype(f), True))
    return sets


def check_quantisers_bit_exact():
    for fmt in BIT_EXACT:
        qt, be, bb, _ = FORMATS[fmt]
        total = signed_zero_blocks = 0
        for name, x, x86_only in row_sets(be):
            if x86_only and not X86:
                continue  # numpy's casts of inf and NaN to integers are the machine's
            keep = np.ones(x.shape[0], bool)
            if fmt == "mxfp4":
                # below 2^-125 gguf-py wraps the exponent (255 = NaN): we differ on purpose
                tiny = np.abs(x).max(axis=1) < np.float32(2.0 ** -125)
                keep = ~tiny
                if tiny.any():
                    ours = our_quantize(fmt, x[tiny]).reshape(-1, bb)
                    dec = our_decode(fmt, ours).reshape(-1, be)
                    if (ours[:, 0] != 0).any() or np.abs(dec - x[tiny]).max() > 2.0 ** -127:
                        fail("quantize mxfp4 %s: a block below 2^-125 not at E8M0 = 0 or not "
                             "within 2^-127" % name)
            if not keep.any():
                continue
            xs = x[keep]
            ours = our_quantize(fmt, xs).reshape(-1, bb)
            with np.errstate(all="ignore"):
                ref = gguf.quants.quantize(xs, qt).reshape(-1, bb)
            diff = ours != ref
            if fmt in ("q4_1", "q5_1"):
                # min and max of a block whose extreme is a zero held with both
                # signs: ggml's C (and we) keep the first of equals, numpy's
                # SIMD reduction another one; the bytes then differ only in the
                # sign of the f16 d (all zeros) and m, the decoded values not
                zeros = (xs == 0).any(axis=1) & np.signbit(np.where(xs == 0, xs, 1)).any(axis=1) & \
                    (np.signbit(np.where(xs == 0, -xs, -1)).any(axis=1))
                ext = zeros & ((xs.min(axis=1) == 0) | (xs.max(axis=1) == 0))
                sign_only = ext & ~(diff & ~np.isin(np.arange(bb), [1, 3])).any(axis=1) & \
                    ((ours[:, [1, 3]] ^ ref[:, [1, 3]]) & 0x7F == 0).all(axis=1)
                if sign_only.any():
                    same = (our_decode(fmt, ours[sign_only]) == gguf.quants.dequantize(ref[sign_only], qt).ravel()).all()
                    if not same:
                        fail("quantize %s, %s: blocks differing in a zero's sign decode differently" % (fmt, name))
                    signed_zero_blocks += int(sign_only.sum())
                    diff[sign_only] = False
            bad = np.flatnonzero(diff.any(axis=1))
            if bad.size:
                b = int(bad[0])
                fail("quantize %s, %s: %d of %d blocks differ; first block %d: ours %s, gguf-py %s, "
                     "input %s" % (fmt, name, bad.size, xs.shape[0], b, ours[b].tobytes().hex(),
                                   ref[b].tobytes().hex(), xs[b].tobytes().hex()))
            total += xs.shape[0]
        print("quantize %-6s %6d blocks bit-identical to gguf-py%s" % (
            fmt, total - signed_zero_blocks, signed_zero_blocks and
            " (and %d equal but for the sign of a zero f16 d or m, as ggml's C)" % signed_zero_blocks or ""))


# ---- round trips ------------------------------------------------------------------------------

# Relative RMS error caps on gaussian, uniform and student-t (3) rows (about
# 1.2 x the largest over several seeds), and a cap on the largest error of
# one value over its block's (K-quants: super-block's) largest magnitude:
# from the format's arithmetic where it has one (Q8_0: 1/254 + 2^-11 for the
# f16 scale; Q4_0: one step of amax/8 at the clipped end; MXFP4: 1/4 at
# 12/16 of the binade), else about 1.2 x the largest seen.
ROUND_TRIP = {
    "q8_0": ((0.0065, 0.0046, 0.011), 0.00443),
    "q4_0": ((0.104, 0.079, 0.155), 0.1256),
    "q4_1": ((0.094, 0.073, 0.122), 0.0685),
    "q5_0": ((0.052, 0.038, 0.080), 0.0630),
    "q5_1": ((0.046, 0.036, 0.060), 0.0340),
    "q2_k": ((0.36, 0.28, 0.43), 0.52),
    "q3_k": ((0.182, 0.151, 0.232), 0.32),
    "q4_k": ((0.086, 0.066, 0.112), 0.14),
    "q5_k": ((0.044, 0.034, 0.057), 0.075),
    "q6_k": ((0.0214, 0.016, 0.031), 0.027),
    "iq4_nl": ((0.092, 0.077, 0.123), 0.17),
    "iq4_xs": ((0.093, 0.078, 0.124), 0.175),
    "mxfp4": ((0.137, 0.173, 0.173), 0.2501),
}


def check_round_trips():
    for fmt, (qt, be, bb, _) in FORMATS.items():
        rms_caps, max_cap = ROUND_TRIP[fmt]
        for cap, name, x in zip(rms_caps, ("gaussian", "uniform", "student-t 3"), (
                rng.standard_normal((1024, 256)).astype(np.float32) * np.float32(0.02),
                rng.uniform(-1, 1, (512, 256)).astype(np.float32),
                rng.standard_t(3, (512, 256)).astype(np.float32))):
            q = our_quantize(fmt, x)
            y = gguf.quants.dequantize(q.reshape(-1, bb), qt).reshape(x.shape)
            err = (y.astype(np.float64) - x).reshape(-1, be)
            rel_rms = np.sqrt((err ** 2).mean() / (x.astype(np.float64) ** 2).mean())
            amax = np.abs(x.reshape(-1, be)).max(axis=1, keepdims=True)
            worst = (np.abs(err) / amax).max()
            if not (rel_rms <= cap and worst <= max_cap):
                fail("round trip %s, %s: relative RMS error %.4g (cap %.4g), worst error %.4g of the "
                     "block's largest magnitude (cap %.4g)" % (fmt, name, rel_rms, cap, worst, max_cap))
            elif name == "gaussian":
                print("round trip %-6s relative RMS error %.4f, worst value %.4f of the block's max"
                      % (fmt, rel_rms, worst))
        # zeros stay zeros
        y = gguf.quants.dequantize(our_quantize(fmt, np.zeros(be * 4, np.float32)).reshape(-1, bb), qt)
        if np.any(y != 0):
            fail("round trip %s: a zero row does not decode to zeros" % fmt)
        # refusals: a row that is not whole blocks, a non-finite value
        rc, _, _ = tool("quantize", fmt, np.zeros(be + 1, np.float32).tobytes())
        if rc == 0:
            fail("quantize %s accepted %d elements" % (fmt, be + 1))
        for bad in (np.inf, -np.inf, np.nan):
            x = np.ones(be, np.float32)
            x[be // 3] = bad
            rc, _, _ = tool("quantize", fmt, x.tobytes())
            if rc == 0:
                fail("quantize %s accepted %r" % (fmt, bad))


# ---- validate ----------------------------------------------------------------------------------

def check_validate():
    blocks = rng.integers(0, 256, (8, 17), dtype=np.uint8)
    blocks[:, 0] = [0, 1, 127, 128, 200, 253, 254, 3]
    rc, _, _ = tool("validate", "mxfp4", blocks.tobytes())
    if rc != 0:
        fail("validate mxfp4 refused blocks with E8M0 0..254")
    for at in (0, 5, 7):
        b = blocks.copy()
        b[at, 0] = 255
        rc, _, _ = tool("validate", "mxfp4", b.tobytes())
        if rc != 1:
            fail("validate mxfp4 accepted E8M0 = 255 in block %d (rc %d)" % (at, rc))
    ff = np.full((4, 18), 255, np.uint8)  # not MXFP4: nothing to refuse
    rc, _, _ = tool("validate", "iq4_nl", ff.tobytes())
    if rc != 0:
        fail("validate iq4_nl refused blocks")
    print("validate mxfp4: E8M0 = 255 refused in first, middle and last block, 0..254 accepted")


check_decoders()
check_quantisers_bit_exact()
check_round_trips()
check_validate()
if failures:
    print("test_formats.py: %d failure(s), seed %d" % (len(failures), seed))
    sys.exit(1)
print("test_formats.py: all passed")
