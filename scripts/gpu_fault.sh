#!/bin/sh
# gpu_fault.sh: a CUDA fault injected every FAULT_EVERY runs (default 400)
# under load from agxq-example: agxqd must replace its worker, keep its pid
# and socket, and every result it returns must stay right. FAULT_KIND is
# trap (default: a kernel traps, a sticky error) or hang (a kernel never
# ends; agxqd runs with --stall-ms STALL_MS, default 1000, and its watchdog
# must kill the worker). Writes the example's output, `agxqd status` and
# the log to OUTDIR; exits 1 if a result was wrong, the pid changed, no
# worker was replaced, or (hang) the watchdog never fired.
#
#   BUILD=build-gpu-carry [FAULT_KIND=hang] scripts/gpu_fault.sh OUTDIR
set -u
out=$1
b=${BUILD:-build-cuda}
kind=${FAULT_KIND:-trap}
case $kind in
trap) stall= ;;
hang) stall="--stall-ms ${STALL_MS:-1000}" ;;
*) echo "gpu_fault: FAULT_KIND must be trap or hang, not '$kind'" >&2; exit 2 ;;
esac
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/$b/client${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
s=/tmp/agxq-fault.sock
rm -f "$s" "$s.log" "$s.lock"
AGXQ_CUDA_FAULT_EVERY=${FAULT_EVERY:-400} AGXQ_CUDA_FAULT_KIND=$kind \
    "$b/server/agxqd" start --socket "$s" --backend cuda $stall || exit 1
pid0=$("$b/server/agxqd" status --socket "$s" | sed -n 's/.*pid \([0-9]*\) .*/\1/p')
{
	echo "== agxq-example, 4 threads x ${REQUESTS:-600} requests, $kind every ${FAULT_EVERY:-400} runs"
	timeout 120 "$b/examples/agxq-example" --socket "$s" --threads 4 \
	    --requests ${REQUESTS:-600} 2>&1 | sort | uniq -c | sort -rn
	echo "== agxqd status (pid before: $pid0)"
	"$b/server/agxqd" status --socket "$s"
	echo "== log: faults, resets and workers"
	grep -E 'failed|lost|worker|reopen|giving|stall' "$s.log" | cut -c1-200 | head -40
	"$b/server/agxqd" stop --socket "$s"
} 2>&1 | tee "$out/fault.txt"
cp "$s.log" "$out/fault-agxqd.log"
bad=0
grep -q "checked against a plain C reference: 0 wrong" "$out/fault.txt" ||
	{ echo "gpu_fault: results wrong or not checked" >&2; bad=1; }
grep -q "pid $pid0 (worker [0-9]*, [1-9][0-9]* restart" "$out/fault.txt" ||
	{ echo "gpu_fault: pid changed or no worker replaced" >&2; bad=1; }
if [ "$kind" = hang ] && ! grep -q "stalled on its device and was killed" \
    "$out/fault-agxqd.log"; then
	echo "gpu_fault: the stall watchdog never fired" >&2
	bad=1
fi
exit $bad
