#!/usr/bin/env python3
"""torch_layer_profile: PyTorch's own time for one pass of a reference model
on the GPU, with the input already on the device, at several batch sizes,
and the kernels it ran (torch.profiler), to set against agxq-bench-rows and
ncu's listing of agxqd's kernels. fp32, TF32 off, eval, no_grad, as
torch_bench.py.

    python3 scripts/torch_layer_profile.py [--model transformer]
        [--batches 4,8,16,32] [--runs 200]
"""
import argparse
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch_bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="transformer")
    ap.add_argument("--batches", default="4,8,16,32")
    ap.add_argument("--runs", type=int, default=200)
    a = ap.parse_args()
    torch = torch_bench.setup_torch()
    m, x4 = torch_bench.build(a.model, torch)
    for b in [int(v) for v in a.batches.split(",")]:
        x = torch.randn(b, *x4.shape[1:], device="cuda")
        for _ in range(20):
            m(x)
        torch.cuda.synchronize()
        t0 = torch.cuda.Event(enable_timing=True)
        t1 = torch.cuda.Event(enable_timing=True)
        t0.record()
        for _ in range(a.runs):
            m(x)
        t1.record()
        torch.cuda.synchronize()
        print(f"{a.model} batch {b}: {t0.elapsed_time(t1) * 1000 / a.runs:.1f} "
              "us per pass, back to back on the device")
        with torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
            for _ in range(10):
                m(x)
            torch.cuda.synchronize()
        print(p.key_averages().table(sort_by="cuda_time_total",
                                     row_limit=25))


if __name__ == "__main__":
    main()
