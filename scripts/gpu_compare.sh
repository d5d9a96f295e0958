#!/bin/sh
# gpu_compare.sh: the GPU comparison of issue 4 in one go, on a host with an
# NVIDIA GPU, PyTorch and a build of agxq with the cuda backend (BUILD,
# default build-cuda). Writes everything to OUTDIR (default ./gpu-out):
# test_cuda, agxq-bench --backend cuda, PyTorch threads and processes
# without MPS, then PyTorch processes with MPS. agxqd never runs while MPS
# is on. Set QUICK=1 for shorter windows.
#
#   scripts/gpu_compare.sh [OUTDIR]
set -u
out=${1:-gpu-out}
b=${BUILD:-build-cuda}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/$b/client${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1
win=${TORCH_WINDOW_S:-1.0}

{
	date -u
	nvidia-smi --query-gpu=name,driver_version,memory.total,compute_mode \
	    --format=csv
	nvidia-smi | head -4
	nvcc --version 2>/dev/null | tail -2
	python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
	nproc
} 2>&1 | tee "$out/env.txt"

echo "== test_cuda" | tee "$out/test_cuda.txt"
timeout 180 "$b/tests/test_cuda" 2>&1 | tee -a "$out/test_cuda.txt"

echo "== agxq-bench --backend cuda" | tee "$out/agxq_bench.txt"
timeout ${BENCH_TIMEOUT:-300} "$b/examples/agxq-bench" --backend cuda \
    --agxqd "$b/server/agxqd" --window-ms ${BENCH_WINDOW_MS:-500} \
    --warmup-ms 300 --max-windows ${BENCH_MAX_WINDOWS:-3} \
    --csv "$out/agxq_bench.csv" --md "$out/agxq_bench.md" \
    ${BENCH_ARGS:-} 2>&1 | tee -a "$out/agxq_bench.txt"

echo "label,mode,model,clients,ops_s,p50_us,p99_us" > "$out/torch.csv"
timeout 120 python3 scripts/torch_bench.py --mode threads --label nomps \
    --window-s "$win" --warmup-s 0.3 2>&1 | tee -a "$out/torch.csv"
timeout 200 python3 scripts/torch_bench.py --mode processes --label nomps \
    --window-s "$win" --warmup-s 0.3 2>&1 | tee -a "$out/torch.csv"

if scripts/mps.sh start > "$out/mps.txt" 2>&1; then
	eval "$(grep ^export "$out/mps.txt")"
	timeout 200 python3 scripts/torch_bench.py --mode processes \
	    --label mps --window-s "$win" --warmup-s 0.3 2>&1 |
	    tee -a "$out/torch.csv"
	scripts/mps.sh stop >> "$out/mps.txt" 2>&1
	unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
else
	echo "MPS did not start" | tee -a "$out/torch.csv"
	cat "$out/mps.txt"
fi
