#!/usr/bin/env python3
"""torch_bench: the PyTorch side of agxq's GPU comparison (issue 4).

The reference workload of DESIGN.md "Workloads": one op is one forward pass
of a batch-4 request followed by torch.cuda.synchronize(); fp32, TF32 off,
eval mode, no_grad. Models: linear = nn.Linear(256, 128) on [4, 256]; mlp =
Linear(256,512) ReLU Linear(512,256) ReLU Linear(256,128) on [4, 256];
transformer = nn.TransformerEncoderLayer(256, 4, 2048, dropout=0,
batch_first=True) on [4, 32, 256].

Modes: threads (N threads in this process, each its own model copy) and
processes (N processes started with multiprocessing "spawn", each its own
model). All N clients pass a barrier, run a warm-up, then count ops and
record latencies for a fixed window; ops/s = all ops / window.

Prints one CSV line per configuration:
    label,mode,model,clients,ops_s,p50_us,p99_us

    python3 scripts/torch_bench.py --mode threads --clients 1,2,4,8
    python3 scripts/torch_bench.py --mode processes --label mps
Run scripts/mps.sh start first (and export what it prints) to measure
under NVIDIA MPS.
"""
import argparse
import multiprocessing as mp
import sys
import threading
import time

MODELS = ("linear", "mlp", "transformer")


def build(name, torch):
    """Returns (module, input) for a reference model on cuda."""
    nn = torch.nn
    torch.manual_seed(0)
    if name == "linear":
        m, shape = nn.Linear(256, 128), (4, 256)
    elif name == "mlp":
        m = nn.Sequential(nn.Linear(256, 512), nn.ReLU(),
                          nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 128))
        shape = (4, 256)
    elif name == "transformer":
        m = nn.TransformerEncoderLayer(256, 4, 2048, dropout=0.0,
                                       batch_first=True)
        shape = (4, 32, 256)
    else:
        raise ValueError(name)
    m = m.cuda().eval()
    x = torch.randn(*shape, device="cuda")
    return m, x


def setup_torch():
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)
    return torch


def measure(torch, m, x, barrier, warmup_s, window_s):
    """Runs ops for warmup_s, then counts them for window_s: (ops, lats)."""
    lats = []
    with torch.no_grad():
        m(x)
        torch.cuda.synchronize()
        barrier.wait()
        now = time.perf_counter
        t_end_warm = now() + warmup_s
        while now() < t_end_warm:
            m(x)
            torch.cuda.synchronize()
        t_end = now() + window_s
        n = 0
        while True:
            t0 = now()
            if t0 >= t_end:
                break
            m(x)
            torch.cuda.synchronize()
            lats.append(now() - t0)
            n += 1
    return n, lats


def proc_worker(models, barrier, q, warmup_s, window_s):
    torch = setup_torch()
    built = {name: build(name, torch) for name in models}
    for name in models:
        m, x = built[name]
        n, lats = measure(torch, m, x, barrier, warmup_s, window_s)
        q.put((name, n, lats))


def report(label, mode, name, clients, window_s, results):
    ops = sum(r[0] for r in results)
    lats = sorted(l for r in results for l in r[1])
    if lats:
        p50 = lats[len(lats) // 2] * 1e6
        p99 = lats[min(len(lats) - 1, int(len(lats) * 0.99))] * 1e6
    else:
        p50 = p99 = float("nan")
    print(f"{label},{mode},{name},{clients},{ops / window_s:.0f},"
          f"{p50:.1f},{p99:.1f}", flush=True)


def run_threads(args, models, counts):
    torch = setup_torch()
    for name in models:
        for n in counts:
            built = [build(name, torch) for _ in range(n)]
            barrier = threading.Barrier(n)
            results = [None] * n

            def body(i):
                m, x = built[i]
                results[i] = measure(torch, m, x, barrier, args.warmup_s,
                                     args.window_s)
            ts = [threading.Thread(target=body, args=(i,)) for i in range(n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            report(args.label, "threads", name, n, args.window_s, results)
            del built


def run_processes(args, models, counts):
    ctx = mp.get_context("spawn")
    for n in counts:
        barrier = ctx.Barrier(n)
        q = ctx.Queue()
        ps = [ctx.Process(target=proc_worker,
                          args=(models, barrier, q, args.warmup_s,
                                args.window_s)) for _ in range(n)]
        for p in ps:
            p.start()
        got = {name: [] for name in models}
        for _ in range(n * len(models)):
            name, k, lats = q.get(timeout=300)
            got[name].append((k, lats))
        for p in ps:
            p.join()
        for name in models:
            report(args.label, "processes", name, n, args.window_s,
                   got[name])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("threads", "processes"),
                    default="threads")
    ap.add_argument("--clients", default="1,2,4,8")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--warmup-s", type=float, default=0.5)
    ap.add_argument("--window-s", type=float, default=2.0)
    ap.add_argument("--label", default="torch")
    ap.add_argument("--header", action="store_true",
                    help="print the CSV header line first")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            sys.exit(f"torch_bench: unknown model {m}")
    counts = [int(c) for c in args.clients.split(",") if c]
    if args.header:
        print("label,mode,model,clients,ops_s,p50_us,p99_us", flush=True)
    if args.mode == "threads":
        run_threads(args, models, counts)
    else:
        run_processes(args, models, counts)


if __name__ == "__main__":
    main()
