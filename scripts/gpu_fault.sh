#!/bin/sh
# gpu_fault.sh: a sticky CUDA fault (a trapping kernel, injected every
# FAULT_EVERY runs) under load from agxq-example: agxqd must replace its
# worker, keep its pid and socket, and every result must stay right.
# Writes the example's output, `agxqd status` and the log to OUTDIR.
#
#   BUILD=build-gpu-carry scripts/gpu_fault.sh OUTDIR
set -u
out=$1
b=${BUILD:-build-cuda}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/$b/client${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
s=/tmp/agxq-fault.sock
rm -f "$s" "$s.log" "$s.lock"
AGXQ_CUDA_FAULT_EVERY=${FAULT_EVERY:-400} AGXQ_CUDA_FAULT_KIND=trap \
    "$b/server/agxqd" start --socket "$s" --backend cuda || exit 1
pid0=$("$b/server/agxqd" status --socket "$s" | sed -n 's/.*pid \([0-9]*\) .*/\1/p')
{
	echo "== agxq-example, 4 threads x ${REQUESTS:-600} requests, trap every ${FAULT_EVERY:-400} runs"
	timeout 120 "$b/examples/agxq-example" --socket "$s" --threads 4 \
	    --requests ${REQUESTS:-600} 2>&1 | sort | uniq -c | sort -rn
	echo "== agxqd status (pid before: $pid0)"
	"$b/server/agxqd" status --socket "$s"
	echo "== log: faults, resets and workers"
	grep -E 'failed|lost|worker|reopen|giving' "$s.log" | cut -c1-200 | head -40
	"$b/server/agxqd" stop --socket "$s"
} 2>&1 | tee "$out/fault.txt"
cp "$s.log" "$out/fault-agxqd.log"
