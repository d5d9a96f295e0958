# Where a run's "device" step goes (a diagnostic, not kept): agxqd of
# 29d0d47 with diag.patch (server/agxqd-diag) stamps the start and end of
# each replayed CUDA graph with %globaltimer (two one-thread kernels in the
# graph) and, at exit, writes to $AGXQ_DIAG_FILE the split of each run
# from the host's launch to the executor seeing its done flag: the launch
# call, launch -> graph start, graph start -> end, graph end -> flag seen
# (the clocks aligned by max(end - seen), so the last is relative to the
# quickest sighting). The plain agxqd beside it shows what the stamps cost.
#   sh docs/gpu-results/h100-dec06/steps/3-split/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/split; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
bench() { # label agxqd model clients [env...]
	l=$1 d=$2 m=$3 n=$4; shift 4
	env "$@" timeout 100 $C/examples/agxq-bench --backend cuda --agxqd $d \
	    --modes processes --clients $n --kinds proxy --models $m \
	    --window-ms 1000 --warmup-ms 300 --max-windows 3 --no-probe \
	    --csv $R/$l.csv > $R/$l.txt 2>&1
	echo "$l: $(tail -n +2 $R/$l.csv | cut -d, -f4-8)" >> $R/summary.txt
}
for m in linear mlp transformer; do
	bench base-$m $C/server/agxqd $m 8
	bench diag-$m $C/server/agxqd-diag $m 8 AGXQ_DIAG_FILE=$R/split-$m.txt
done
for m in linear mlp; do
	bench base1-$m $C/server/agxqd $m 1
	bench diag1-$m $C/server/agxqd-diag $m 1 AGXQ_DIAG_FILE=$R/split1-$m.txt
done
date -u >> $R/date.txt
cat $R/summary.txt
for f in $R/split*.txt; do echo "== $f"; cat $f; done
tar -C $OUT -czf $OUT/split.tgz split && rm -rf $R
