#!/usr/bin/env python3
"""Checks the cuda backend's reference-model outputs against PyTorch.

test_cuda, run with AGXQ_TEST_DUMP=DIR, writes DIR/{linear,mlp,transformer}.bin:
int32 count, then tensors (int32 ndim, int64 dims, float32 data): every
constant in the order the test created it (the modules' parameters() order),
the input, and the cuda backend's output. This loads the constants into the
torch.nn modules, runs them in FP32 (TF32 off) and prints the largest
difference. Usage: compare_torch.py DIR [device]. Exits 1 above tolerance.
"""
import struct
import sys

import numpy as np
import torch

RTOL, ATOL = 1e-4, 5e-5  # same as test_cuda.c for whole models


def read(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,), off, out = struct.unpack_from("<i", buf), 4, []
    for _ in range(n):
        (nd,) = struct.unpack_from("<i", buf, off)
        off += 4
        dims = struct.unpack_from("<%dq" % nd, buf, off)
        off += 8 * nd
        cnt = int(np.prod(dims)) if nd else 1
        out.append(np.frombuffer(buf, "<f4", cnt, off).reshape(dims).copy())
        off += 4 * cnt
    return out


def module(name):
    nn = torch.nn
    if name == "linear":
        return nn.Linear(256, 128)
    if name == "mlp":
        return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256),
                             nn.ReLU(), nn.Linear(256, 128))
    return nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=2048,
                                      dropout=0.0, activation="relu",
                                      batch_first=True, norm_first=False,
                                      layer_norm_eps=1e-5)


def main():
    d = sys.argv[1]
    dev = sys.argv[2] if len(sys.argv) > 2 else (
        "cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    bad = 0
    for name in ("linear", "mlp", "transformer"):
        t = read("%s/%s.bin" % (d, name))
        consts, x, got = t[:-2], t[-2], t[-1]
        m = module(name).to(dev).eval()
        params = list(m.parameters())
        assert len(params) == len(consts), (name, len(params), len(consts))
        with torch.no_grad():
            for p, c in zip(params, consts):
                assert tuple(p.shape) == c.shape, (name, p.shape, c.shape)
                p.copy_(torch.from_numpy(c))
            want = m(torch.from_numpy(x).to(dev)).float().cpu().numpy()
        err = np.abs(got - want)
        ratio = (err / (ATOL + RTOL * np.abs(want))).max()
        ok = ratio <= 1
        bad += not ok
        print("%s torch %-11s on %s: input %s max|cuda-torch| %.2e (%.3f of tol)"
              % ("ok  " if ok else "FAIL", name, dev, list(x.shape), err.max(),
                 ratio))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
