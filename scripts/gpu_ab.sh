#!/bin/sh
# gpu_ab.sh: two agxqd builds side by side on the same GPU in one run, and
# where the daemon's time goes. For each agxqd binary given, runs
# agxq-bench --backend cuda (client processes, 1 and 8 clients, the three
# reference models) and, for the last binary, samples each agxqd thread's
# CPU use while 8 client processes drive the linear model.
#
#   BUILD=build-gpu-carry scripts/gpu_ab.sh OUTDIR AGXQD_A [AGXQD_B ...]
#
# AB_BENCH=0 skips the side-by-side benches; THREAD_MODELS picks the models
# of the thread sampling (default "linear mlp").
set -u
out=$1
shift
b=${BUILD:-build-cuda}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/$b/client${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
n=0
for d in "$@"; do
	n=$((n + 1))
	[ "${AB_BENCH:-1}" = 1 ] || continue
	echo "== agxq-bench with $d" | tee "$out/ab$n.txt"
	timeout 200 "$b/examples/agxq-bench" --backend cuda --agxqd "$d" \
	    --modes processes --clients ${AB_CLIENTS:-1,8} --kinds proxy \
	    --window-ms 500 --warmup-ms 300 --max-windows 3 \
	    --md "$out/ab$n.md" --csv "$out/ab$n.csv" 2>&1 |
	    tail -n 40 >> "$out/ab$n.txt"
done

# Thread CPU of the daemon's processes under 8 client processes, per model.
: > "$out/threads.txt"
for m in ${THREAD_MODELS:-linear mlp}; do
	echo "== per-thread CPU, $m, 8 processes, $d" >> "$out/threads.txt"
	timeout 60 "$b/examples/agxq-bench" --backend cuda --agxqd "$d" \
	    --models $m --modes processes --clients 8 --window-ms 2000 \
	    --warmup-ms 500 --max-windows 3 --no-probe --kinds proxy \
	    > "$out/threads-$m.md" 2>&1 &
	bench=$!
	sleep 2
	for p in $(pgrep -x agxqd) $(pgrep -f "agxq-bench --worker" | head -1); do
		sh scripts/thread_cpu.sh "$p" 2 > "$out/tc.$p" 2>&1 &
	done
	wait $bench
	cat "$out"/tc.* >> "$out/threads.txt"
	grep -E "^\| 8 " "$out/threads-$m.md" >> "$out/threads.txt"
	rm -f "$out"/tc.* "$out/threads-$m.md"
done
cat "$out/threads.txt"
