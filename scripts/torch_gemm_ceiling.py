#!/usr/bin/env python3
"""torch_gemm_ceiling: how many transformer requests a second the GPU's FP32
GEMMs alone allow, whoever issues them (issue 4's 10x-threads target).

A reference transformer request (torch_bench.py) is 4 samples of 32 tokens:
128 rows through the layer's four linears (in-projection 256 -> 768,
out-projection 256 -> 256, feed-forward 256 -> 2048 and 2048 -> 256). For
each batch of S samples this times, on the device with CUDA events, the
four products back to back (torch.addmm with the layer's own weights and
biases, fp32, TF32 off, as PyTorch runs them) and the whole layer, each
captured `runs' times in a CUDA graph so that no host launch cost comes
between them (the layer eagerly where it cannot be captured; the last
column says which), and prints the requests a second each allows: S / 4
requests per span (the least of three timings, after a warm-up of every
size). With
8 synchronous clients a batch holds at most 8 requests (32 samples); at
that size gemm_req_s is what the four products allow when the 8
requests run as one batched pass in FP32, with nothing else on the GPU
(agxqd runs up to 8 passes at once on streams instead: the comparison's
own figure). A first version timed eager launches, and on a host where
each addmm cost Python about 30 us its spans up to 32 samples were the
launches' (about 120 us whatever the size), not the GPU's. This graph
version has not run on a GPU yet (docs/GPU.md, round of 2026-12-08).

    python3 scripts/torch_gemm_ceiling.py [--samples 4,8,16,32,64]
        [--runs 50]

Prints one CSV line per batch:
    samples,rows,gemm_us,layer_us,gemm_req_s,layer_req_s,gemm_tflops,
    layer_timed
"""
import argparse
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch_bench  # noqa: E402


def span_us(torch, fn, runs, tries=3):
    """Device microseconds per call of fn: fn captured `runs' times in one
    CUDA graph (no host launch cost between them), the graph replayed and
    timed with CUDA events, the least of `tries' timings. Falls back to
    timing fn launched eagerly back to back where it cannot be captured;
    returns (microseconds, "graph" or "eager")."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(5):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    t0 = torch.cuda.Event(enable_timing=True)
    t1 = torch.cuda.Event(enable_timing=True)
    try:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(runs):
                fn()
        g.replay()
        torch.cuda.synchronize()
        go, how = g.replay, "graph"
    except Exception:  # noqa: BLE001 (any capture failure: time eagerly)
        torch.cuda.synchronize()

        def go():
            for _ in range(runs):
                fn()
        how = "eager"
    best = None
    for _ in range(tries):
        t0.record()
        go()
        t1.record()
        torch.cuda.synchronize()
        us = t0.elapsed_time(t1) * 1000.0 / runs
        best = us if best is None else min(best, us)
    return best, how


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", default="4,8,16,32,64")
    ap.add_argument("--runs", type=int, default=50)
    a = ap.parse_args()
    torch = torch_bench.setup_torch()
    m, x4 = torch_bench.build("transformer", torch)
    seq, d = x4.shape[1], x4.shape[2]
    sa = m.self_attn
    mats = [(sa.in_proj_weight, sa.in_proj_bias),
            (sa.out_proj.weight, sa.out_proj.bias),
            (m.linear1.weight, m.linear1.bias),
            (m.linear2.weight, m.linear2.bias)]
    flops_row = sum(2 * w.shape[0] * w.shape[1] for w, _ in mats)
    print("samples,rows,gemm_us,layer_us,gemm_req_s,layer_req_s,gemm_tflops,"
          "layer_timed")
    sizes = [int(v) for v in a.samples.split(",")]
    # Every size once first, so no size pays for loading kernels.
    for s in sizes:
        m(torch.randn(s, seq, d, device="cuda"))
    torch.cuda.synchronize()
    for s in sizes:
        rows = s * seq
        xs = [torch.randn(rows, w.shape[1], device="cuda") for w, _ in mats]

        def gemms():
            for (w, b), x in zip(mats, xs):
                torch.addmm(b, x, w.t())

        x = torch.randn(s, seq, d, device="cuda")
        g, _ = span_us(torch, gemms, a.runs)
        lay, how = span_us(torch, lambda: m(x), a.runs)
        req = s / 4.0
        print(f"{s},{rows},{g:.1f},{lay:.1f},{req / g * 1e6:.0f},"
              f"{req / lay * 1e6:.0f},{flops_row * rows / g / 1e6:.2f},{how}",
              flush=True)


if __name__ == "__main__":
    main()
