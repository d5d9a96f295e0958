# cuBLASLt's timing shared within a power-of-two range of rows
# (AGXQ_CUDA_LT_SHARE, default 1) against every row count timed (=0), in
# one build: one pass at a time on the direct engine (agxq-bench-rows) at
# the reference's batch sizes under load (4-32 rows in steps of 4), three
# rounds alternating, each process writing its report; agxqd with 8
# client processes, three rounds alternating; test_batching against
# agxqd on cuda three times (no_starvation failed once on 2026-12-07);
# and the transformer's FP32 GEMM ceiling (scripts/torch_gemm_ceiling.py).
# final/run.sh (the comparison, with test_cuda) runs in the same call.
#   sh docs/gpu-results/h100-dec08/steps/1-share/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
C=$PWD/build-gpu-carry
export LD_LIBRARY_PATH=$C/client
R=$OUT/share; mkdir -p $R/rep
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
nvidia-smi --query-gpu=driver_version --format=csv,noheader >> $R/date.txt
ROWS=4,8,12,16,20,24,28,32
for round in a b c; do
	AGXQ_CUDA_LT_SHARE=0 AGXQ_CUDA_LT_REPORT=$R/rep/pass-each-$round.txt timeout 90 $C/examples/agxq-bench-rows --backend cuda --models linear,mlp,transformer --rows $ROWS --runs 1000 > $R/pass-each-$round.txt 2>&1
	AGXQ_CUDA_LT_REPORT=$R/rep/pass-share-$round.txt timeout 90 $C/examples/agxq-bench-rows --backend cuda --models linear,mlp,transformer --rows $ROWS --runs 1000 > $R/pass-share-$round.txt 2>&1
done
E="AGXQ_CUDA_LT_SHARE=0"
SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 240 sh scripts/gpu_sweep.sh $R/sweep8 "each|$E AGXQ_CUDA_LT_REPORT=$R/rep/sweep8-each-a.txt|" "share|AGXQ_CUDA_LT_REPORT=$R/rep/sweep8-share-a.txt|" "each-b|$E|" "share-b||" "each-c|$E|" "share-c||" > $R/sweep8.log 2>&1; echo "sweep8 rc=$?" >> $R/tests.txt
printf '#!/bin/sh\nif [ "$1" = start ]; then shift; exec %s/server/agxqd start --backend cuda "$@"; fi\nexec %s/server/agxqd "$@"\n' "$C" "$C" > $C/agxqd-cuda; chmod +x $C/agxqd-cuda
for round in a b c; do
	AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/test_batching > $R/batching-$round.txt 2>&1; echo "test_batching $round rc=$?" >> $R/tests.txt
done
timeout 60 python3 scripts/torch_gemm_ceiling.py > $R/ceiling.csv 2>&1; echo "ceiling rc=$?" >> $R/tests.txt
date -u >> $R/date.txt
cat $R/date.txt $R/tests.txt $R/ceiling.csv
grep -h 'waited\|flood requests finished' $R/batching-*.txt
for f in $R/pass-*.txt; do echo "== $f"; cat $f; done
cat $R/sweep8/sweep.csv
grep -c "streams" $R/rep/*.txt; grep -c "shares rows" $R/rep/*.txt
tar -C $OUT -czf $OUT/share.tgz share && rm -rf $R
