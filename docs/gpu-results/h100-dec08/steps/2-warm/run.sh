# Warm-up (AGXQ_WARM, on by default on cuda) against none (=0), in one
# build (with the shared timings of steps/1-share in both): one pass at a
# time on the direct engine (agxq-bench-rows, the load and each size's
# first pass), two rounds alternating; the first second of a fresh agxqd
# with 8 client processes (no warm-up window: what clients see right
# after the load), each model on its own daemon, two rounds alternating;
# test_batching against agxqd on cuda, with and without; and the
# transformer's FP32 GEMM ceiling (scripts/torch_gemm_ceiling.py, now the
# least of three timings). final/run.sh (the comparison, with test_cuda)
# runs in the same call.
#   sh docs/gpu-results/h100-dec08/steps/2-warm/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
C=$PWD/build-gpu-carry
export LD_LIBRARY_PATH=$C/client
R=$OUT/warm; mkdir -p $R/rep $R/first
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
nvidia-smi --query-gpu=driver_version --format=csv,noheader >> $R/date.txt
ROWS=4,8,12,16,20,24,28,32
for round in a b; do
	AGXQ_WARM=0 timeout 90 $C/examples/agxq-bench-rows --backend cuda --models linear,mlp,transformer --rows $ROWS --runs 1000 > $R/pass-cold-$round.txt 2>&1
	AGXQ_CUDA_LT_REPORT=$R/rep/pass-warm-$round.txt timeout 90 $C/examples/agxq-bench-rows --backend cuda --models linear,mlp,transformer --rows $ROWS --runs 1000 > $R/pass-warm-$round.txt 2>&1
done
printf '#!/bin/sh\nif [ "$1" = start ]; then shift; exec %s/server/agxqd start --backend cuda "$@"; fi\nexec %s/server/agxqd "$@"\n' "$C" "$C" > $C/agxqd-cuda; chmod +x $C/agxqd-cuda
for round in a b; do
	for k in cold warm; do
		w=1; [ $k = cold ] && w=0
		for mod in linear mlp transformer; do
			AGXQ_WARM=$w timeout 60 $C/examples/agxq-bench --backend cuda --agxqd $C/agxqd-cuda --modes processes --clients 8 --kinds proxy --models $mod --window-ms 1000 --warmup-ms 0 --max-windows 1 --no-probe --csv $R/first/$k-$mod-$round.csv > $R/first/$k-$mod-$round.txt 2>&1
		done
	done
done
for round in a b c; do
	AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/test_batching > $R/batching-warm-$round.txt 2>&1; echo "test_batching warm $round rc=$?" >> $R/tests.txt
	[ $round = c ] && break
	AGXQ_WARM=0 AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/test_batching > $R/batching-cold-$round.txt 2>&1; echo "test_batching cold $round rc=$?" >> $R/tests.txt
done
timeout 90 python3 scripts/torch_gemm_ceiling.py > $R/ceiling.csv 2>&1; echo "ceiling rc=$?" >> $R/tests.txt
date -u >> $R/date.txt
cat $R/date.txt $R/tests.txt $R/ceiling.csv
for f in $R/batching-*.txt; do printf '%s: ' $(basename $f); grep -h 'waited\|flood requests finished' $f; done
for f in $R/pass-*.txt; do echo "== $f"; cat $f; done
for f in $R/first/*.csv; do printf '%s: ' $(basename $f .csv); tail -n +2 $f | tr '\n' ' '; echo; done
grep -c "streams" $R/rep/*.txt; grep -c "shares rows" $R/rep/*.txt
tar -C $OUT -czf $OUT/warm.tgz warm && rm -rf $R
