#!/bin/sh
# gpu_ab.sh: two agxqd builds side by side on the same GPU in one run, and
# where the daemon's time goes. For each agxqd binary given, runs
# agxq-bench --backend cuda (client processes, 1 and 8 clients, the three
# reference models) and, for the last binary, samples the busy time of the
# daemon's loop thread and executor while 8 client processes drive each
# model, and prints where a request's time goes (agxqd status: ring wait,
# in, queue, stage, device, reply, out).
#
#   BUILD=build-gpu-carry scripts/gpu_ab.sh OUTDIR AGXQD_A [AGXQD_B ...]
#
# AB_BENCH=0 skips the side-by-side benches; BUSY_MODELS picks the models
# of the busy-time sampling (default "linear mlp transformer"), which uses
# the last binary given, with BUSY_CLIENTS client processes (default 8).
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

# Where the daemon's time goes under 8 client processes, per model: the
# loop thread's and the executor's busy time (agxqd status) over 2 s.
: > "$out/busy.txt"
for m in ${BUSY_MODELS:-linear mlp transformer}; do
	timeout 60 "$b/examples/agxq-bench" --backend cuda --agxqd "$d" \
	    --models $m --modes processes --clients ${BUSY_CLIENTS:-8} --window-ms 2000 \
	    --warmup-ms 500 --max-windows 3 --no-probe --kinds proxy \
	    > "$out/busy-$m.md" 2> "$out/busy-$m.err" &
	bench=$!
	sleep 2
	sock=$(sed -n 's/.* on \(.*\); .* measurements.*/\1/p' "$out/busy-$m.err")
	"$d" status --socket "$sock" --json > "$out/s1.json"
	sleep 2
	"$d" status --socket "$sock" --json > "$out/s2.json"
	wait $bench
	python3 - "$m" "$out/s1.json" "$out/s2.json" >> "$out/busy.txt" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[2:4])
dt = b["uptime_us"] - a["uptime_us"]
req = sum(m["requests"] for m in b["models"]) - sum(m["requests"] for m in a["models"])
bat = sum(m["batches"] for m in b["models"]) - sum(m["batches"] for m in a["models"])
m = max(b["models"], key=lambda x: x["requests"])
print("%-12s %7.0f requests/s, %5.2f requests/batch, loop thread busy %5.1f%%, "
      "executor busy %5.1f%% (+%.1f%% blocked in finish), per request: "
      "loop %.1f us, executor %.1f us; queue p50 %d us, exec p50 %d us; "
      "from rings %.0f%% (answered in the slot %.0f%%), socket frames out "
      "per request %.2f" % (
      sys.argv[1], req * 1e6 / dt, req / max(bat, 1),
      100.0 * (b["loop_busy_us"] - a["loop_busy_us"]) / dt,
      100.0 * (b["executor_busy_us"] - a["executor_busy_us"]) / dt,
      100.0 * (b["executor_wait_us"] - a["executor_wait_us"]) / dt,
      (b["loop_busy_us"] - a["loop_busy_us"]) / max(req, 1),
      (b["executor_busy_us"] - a["executor_busy_us"]) / max(req, 1),
      m["queue_p50_us"], m["exec_p50_us"],
      100.0 * (b.get("ring_requests", 0) - a.get("ring_requests", 0)) / max(req, 1),
      100.0 * (b.get("ring_answered", 0) - a.get("ring_answered", 0)) / max(req, 1),
      (b["frames_out"] - a["frames_out"]) / max(req, 1)))
if "stage_p50_us" in m:
    print("%-12s p50 us: ring wait %d, in %d, queue %d, stage %d, device %d, "
          "reply %d, out %d" % (
          sys.argv[1], b.get("ring_wait_p50_us", -1), m["in_p50_us"],
          m["queue_p50_us"], m["stage_p50_us"], m["device_p50_us"],
          m["reply_p50_us"], b.get("out_p50_us", -1)))
PY
	rm -f "$out/s1.json" "$out/s2.json" "$out/busy-$m.err"
done
cat "$out/busy.txt"
