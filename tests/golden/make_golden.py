#!/usr/bin/env python3
"""Writes the golden fixtures tests/test_golden.c compares agxq against.

Usage: python3 tests/golden/make_golden.py OUTDIR

Needs PyTorch and numpy. Runs on the CPU in float32 (no TF32, one thread) and
writes, into OUTDIR:

  transformer_small.txt  nn.TransformerEncoderLayer(d_model=32, nhead=4,
                         dim_feedforward=64, eps=1e-5, seed 7), post-norm and
                         pre-norm, on an input [3, 5, 32] from stream 1000
                         (scale 1.0); plus the input and the first values of
                         every parameter, so the test can check that this
                         script draws the same weights as libagxq, bit for bit.
  reference_models.txt   the reference models linear, mlp and transformer
                         (seed 42) on batch 4 from stream 2000 (scale 1.0).

The weights mirror agxq_reference_weights() and the builders in
client/builder.c exactly (see the comments there).

File format (text): '#' starts a comment running to the end of the line; then
blocks of "tensor NAME NDIM D0 ... D(NDIM-1)" followed by the float32 values
in row-major order, written with %.9g (enough digits to round-trip float32).
"""

import math
import os
import platform
import sys

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
MUL1 = 0xBF58476D1CE4E5B9
MUL2 = 0x94D049BB133111EB


def stream(seed, scale, n):
    """agxq_reference_weights(seed, scale, n) as a float32 array.

    splitmix64: state_i = seed + i * GOLDEN (mod 2^64, i = 1..n), mixed, the
    top 24 bits k give ((2k - 2^24) / 2^24), exact in float32, times
    float32(scale) in one float32 multiply.
    """
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MUL1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MUL2)
        z = z ^ (z >> np.uint64(31))
    k = (z >> np.uint64(40)).astype(np.float64)
    u = ((2.0 * k - 16777216.0) / 16777216.0).astype(np.float32)
    out = u * np.float32(scale)
    assert out.dtype == np.float32
    return out


def inv_sqrt(n):
    """The builders' scale 1/sqrt(n): double, then rounded to float32."""
    return np.float32(1.0 / math.sqrt(n))


def self_check():
    """Known splitmix64 values (seed 0): 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4."""
    v = stream(0, 1.0, 2)
    assert v[0] == np.float32((2 * 0xE220A8 - 2**24) / 2**24), v
    assert v[1] == np.float32((2 * 0x6E789E - 2**24) / 2**24), v
    # A stream is the prefix of a longer one; halving is exact.
    assert np.array_equal(stream(5, 1.0, 10), stream(5, 1.0, 1000)[:10])
    assert np.array_equal(stream(5, 0.5, 100), stream(5, 1.0, 100) * np.float32(0.5))


def transformer_params(d, ff, seed):
    """(name, array) for every parameter, in the builder's stream order."""
    sd, sf, tenth = inv_sqrt(d), inv_sqrt(ff), np.float32(0.1)
    spec = [
        ("self_attn.in_proj_weight", (3 * d, d), sd, False),
        ("self_attn.in_proj_bias", (3 * d,), tenth, False),
        ("self_attn.out_proj.weight", (d, d), sd, False),
        ("self_attn.out_proj.bias", (d,), tenth, False),
        ("linear1.weight", (ff, d), sd, False),
        ("linear1.bias", (ff,), sd, False),
        ("linear2.weight", (d, ff), sf, False),
        ("linear2.bias", (d,), sf, False),
        ("norm1.weight", (d,), tenth, True),
        ("norm1.bias", (d,), tenth, False),
        ("norm2.weight", (d,), tenth, True),
        ("norm2.bias", (d,), tenth, False),
    ]
    out = []
    for i, (name, shape, scale, one_plus) in enumerate(spec):
        a = stream(seed + i, scale, int(np.prod(shape))).reshape(shape)
        if one_plus:
            a = np.float32(1.0) + a
        assert a.dtype == np.float32
        out.append((name, a))
    return out


def make_transformer(torch, d, nhead, ff, eps, norm_first, seed):
    """nn.TransformerEncoderLayer with the builder's weights, in eval mode."""
    layer = torch.nn.TransformerEncoderLayer(
        d, nhead, dim_feedforward=ff, dropout=0.0, activation="relu",
        layer_norm_eps=eps, batch_first=True, norm_first=norm_first,
        dtype=torch.float32, device="cpu")
    named = dict(layer.named_parameters())
    params = transformer_params(d, ff, seed)
    assert set(named) == {n for n, _ in params}, sorted(named)
    with torch.no_grad():
        for name, a in params:
            p = named[name]
            assert tuple(p.shape) == a.shape, (name, p.shape, a.shape)
            p.copy_(torch.from_numpy(a))
    layer.eval()
    return layer, params


def make_linear(torch, n_in, n_out, seed):
    """nn.Linear(n_in, n_out): W from stream seed, b from seed+1, scale 1/sqrt(n_in)."""
    m = torch.nn.Linear(n_in, n_out, dtype=torch.float32, device="cpu")
    s = inv_sqrt(n_in)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(stream(seed, s, n_out * n_in).reshape(n_out, n_in)))
        m.bias.copy_(torch.from_numpy(stream(seed + 1, s, n_out)))
    m.eval()
    return m


def run(torch, module, x):
    """Runs module on numpy x, returning a float32 numpy array.

    Grad stays enabled (and the parameters require it) so that
    TransformerEncoderLayer takes its documented Python path, not the fused
    inference fast path.
    """
    y = module(torch.from_numpy(np.ascontiguousarray(x)))
    y = y.detach().numpy().astype(np.float32)
    assert np.all(np.isfinite(y))
    return y


def numpy_layer(x, params, nhead, eps, norm_first):
    """The encoder layer in float64 numpy: a cross-check of the graph agxq builds."""
    p = {n: a.astype(np.float64) for n, a in params}
    x = x.astype(np.float64)
    d = x.shape[-1]
    hd = d // nhead

    def ln(v, w, b):
        mu = v.mean(-1, keepdims=True)
        var = ((v - mu) ** 2).mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + eps) * w + b

    def mha(v):
        qkv = v @ p["self_attn.in_proj_weight"].T + p["self_attn.in_proj_bias"]
        q, k, w = np.split(qkv, 3, axis=-1)
        bsz, s, _ = v.shape
        q = q.reshape(bsz, s, nhead, hd).transpose(0, 2, 1, 3)
        k = k.reshape(bsz, s, nhead, hd).transpose(0, 2, 1, 3)
        w = w.reshape(bsz, s, nhead, hd).transpose(0, 2, 1, 3)
        att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        att = np.exp(att - att.max(-1, keepdims=True))
        att = att / att.sum(-1, keepdims=True)
        o = (att @ w).transpose(0, 2, 1, 3).reshape(bsz, s, d)
        return o @ p["self_attn.out_proj.weight"].T + p["self_attn.out_proj.bias"]

    def ffn(v):
        h = np.maximum(v @ p["linear1.weight"].T + p["linear1.bias"], 0.0)
        return h @ p["linear2.weight"].T + p["linear2.bias"]

    n1 = (p["norm1.weight"], p["norm1.bias"])
    n2 = (p["norm2.weight"], p["norm2.bias"])
    if norm_first:
        h = x + mha(ln(x, *n1))
        return h + ffn(ln(h, *n2))
    h = ln(x + mha(x), *n1)
    return ln(h + ffn(h), *n2)


def write_tensor(f, name, a):
    """Writes one tensor block."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    f.write("tensor %s %d %s\n" % (name, a.ndim, " ".join(str(int(s)) for s in a.shape)))
    flat = a.reshape(-1)
    for i in range(0, flat.size, 8):
        f.write(" ".join("%.9g" % float(v) for v in flat[i:i + 8]) + "\n")


def write_file(path, header, tensors):
    """Writes a fixture and says what it wrote."""
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for line in header:
            f.write("# %s\n" % line)
        for name, a in tensors:
            write_tensor(f, name, a)
    print("wrote %s:" % path)
    for name, a in tensors:
        print("  %-20s %-16s min %+.6f max %+.6f" % (
            name, "x".join(str(s) for s in a.shape), float(a.min()), float(a.max())))


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: python3 tests/golden/make_golden.py OUTDIR\n")
        return 2
    outdir = argv[1]
    try:
        import torch
    except ImportError:
        sys.stderr.write("make_golden.py: PyTorch (torch) is required\n")
        return 1

    # float32 on the CPU, no reduced-precision matmuls, one thread so that
    # reruns give the same digits.
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if hasattr(torch.backends, "mha") and hasattr(torch.backends.mha, "set_fastpath_enabled"):
        torch.backends.mha.set_fastpath_enabled(False)

    self_check()
    os.makedirs(outdir, exist_ok=True)
    header = [
        "agxq golden fixture, written by tests/golden/make_golden.py; do not edit.",
        "torch %s, numpy %s, python %s, %s" % (
            torch.__version__, np.__version__, platform.python_version(), platform.machine()),
        "format: 'tensor NAME NDIM DIMS...' then the float32 values, row-major, %.9g",
    ]

    # The small layer: d_model 32, 4 heads, ff 64, eps 1e-5, seed 7.
    x = stream(1000, 1.0, 3 * 5 * 32).reshape(3, 5, 32)
    small = [("input", x)]
    outs = []
    for norm_first in (False, True):
        layer, params = make_transformer(torch, 32, 4, 64, 1e-5, norm_first, 7)
        if not norm_first:
            for i, (_, a) in enumerate(params):
                small.append(("param_%d" % i, a.reshape(-1)[:16]))
        y = run(torch, layer, x)
        assert y.shape == (3, 5, 32)
        ref = numpy_layer(x, params, 4, 1e-5, norm_first)
        print("transformer_small %s: max |torch - numpy float64| = %.3g" % (
            "pre_norm" if norm_first else "post_norm", float(np.abs(y - ref).max())))
        outs.append(("pre_norm" if norm_first else "post_norm", y))
    small.extend(outs)
    write_file(os.path.join(outdir, "transformer_small.txt"),
               header + ["transformer d_model=32 nhead=4 ff=64 eps=1e-5 seed=7; "
                         "input: stream 1000 scale 1.0; param_i: first 16 values "
                         "of parameter i (streams 7+i)"], small)

    # The reference models, seed 42, batch 4, input from stream 2000.
    seed = 42
    flat = stream(2000, 1.0, 4 * 256).reshape(4, 256)
    seq = stream(2000, 1.0, 4 * 32 * 256).reshape(4, 32, 256)
    linear = make_linear(torch, 256, 128, seed)
    mlp = torch.nn.Sequential(
        make_linear(torch, 256, 512, seed), torch.nn.ReLU(),
        make_linear(torch, 512, 256, seed + 2), torch.nn.ReLU(),
        make_linear(torch, 256, 128, seed + 4)).eval()
    tlayer, tparams = make_transformer(torch, 256, 4, 2048, 1e-5, False, seed)
    refs = [
        ("linear_output", run(torch, linear, flat)),
        ("mlp_output", run(torch, mlp, flat)),
        ("transformer_output", run(torch, tlayer, seq)),
    ]
    assert refs[0][1].shape == (4, 128) and refs[1][1].shape == (4, 128)
    assert refs[2][1].shape == (4, 32, 256)
    tref = numpy_layer(seq, tparams, 4, 1e-5, False)
    print("reference transformer: max |torch - numpy float64| = %.3g" % (
        float(np.abs(refs[2][1] - tref).max())))
    write_file(os.path.join(outdir, "reference_models.txt"),
               header + ["reference models, seed 42, batch 4; input: stream 2000 "
                         "scale 1.0 ([4,256] for linear and mlp, [4,32,256] for "
                         "transformer)"], refs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
