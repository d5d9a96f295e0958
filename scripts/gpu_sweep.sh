#!/bin/sh
# gpu_sweep.sh: agxqd settings side by side on one GPU in one run. Each
# configuration is "label|environment|agxqd start options"; for each,
# agxq-bench --backend cuda runs the proxy with 8 client processes on the
# three reference models, and one summary line per model is printed:
# label, model, ops/s, p50 and p99 latency. The environment applies to
# agxqd and the clients alike (AGXQ_LANES is agxqd's, AGXQ_SPIN_US the
# clients'). AGXQD_BIN=PATH in a configuration's environment runs that
# agxqd binary instead of BUILD's (two builds side by side).
#
#   BUILD=build-gpu-carry scripts/gpu_sweep.sh OUTDIR \
#       'base||' 'lanes4|AGXQ_LANES=4|' 'delay20||--max-delay-us 20'
#
# SWEEP_CLIENTS (default 8) and SWEEP_MODELS (default all three, comma or
# space separated) narrow it; SWEEP_WINDOW_MS (default 500) and
# SWEEP_WINDOWS (default 3) lengthen it. A configuration whose benchmark
# fails is named on stderr (its output is in OUTDIR/sweep.txt), and the
# script then exits 1.
set -u
out=$1
shift
b=${BUILD:-build-cuda}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/$b/client${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
real=$PWD/$b/server/agxqd
wdir=$(mktemp -d)
trap 'rm -rf "$wdir"' EXIT
n=0
failed=0
models=$(printf '%s' "${SWEEP_MODELS:-linear,mlp,transformer}" | tr ' ' ',')
echo "label,model,clients,ops_s,p50_us,p99_us" > "$out/sweep.csv"
for cfg in "$@"; do
	n=$((n + 1))
	label=${cfg%%|*}
	rest=${cfg#*|}
	envs=${rest%%|*}
	opts=${rest#*|}
	w="$wdir/agxqd-$n"
	# A binary named by AGXQD_BIN must be there before anything runs.
	bin=$(printf '%s\n' $envs | sed -n 's/^AGXQD_BIN=//p' | tail -n 1)
	if [ -n "$bin" ] && [ ! -x "$bin" ]; then
		echo "gpu_sweep: $label: AGXQD_BIN=$bin is not an" \
		    "executable file" >&2
		failed=1
		continue
	fi
	# agxqd with these options on start; stop and status pass through.
	cat > "$w" <<EOF
#!/bin/sh
a=\${AGXQD_BIN:-$real}
if [ "\$1" = start ]; then shift; exec "\$a" start $opts "\$@"; fi
exec "\$a" "\$@"
EOF
	chmod +x "$w"
	echo "== $label: env '$envs', agxqd start $opts" >> "$out/sweep.txt"
	env $envs timeout 200 "$b/examples/agxq-bench" --backend ${BACKEND:-cuda} \
	    --agxqd "$w" --modes processes --clients ${SWEEP_CLIENTS:-8} \
	    --kinds proxy --models "$models" \
	    --window-ms ${SWEEP_WINDOW_MS:-500} --warmup-ms 300 \
	    --max-windows ${SWEEP_WINDOWS:-3} \
	    --csv "$out/sweep-$n.csv" >> "$out/sweep.txt" 2>&1 || {
		echo "gpu_sweep: agxq-bench failed for $label (see" \
		    "$out/sweep.txt)" >&2
		failed=1
	}
	[ -f "$out/sweep-$n.csv" ] || continue
	awk -F, -v l="$label" 'NR > 1 { printf "%s,%s,%s,%.0f,%.0f,%.0f\n",
	    l, $1, $4, $5, $7, $8 }' "$out/sweep-$n.csv" >> "$out/sweep.csv"
	rm -f "$out/sweep-$n.csv"
done
cat "$out/sweep.csv"
exit $failed
