set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
B=$C/examples/agxq-bench-rows
for cfg in "load|" "alone|AGXQ_CUDA_LT_LOAD=0"; do
  l=${cfg%%|*}; e=${cfg#*|}
  echo "== $l ($e)" >> $R/rows.txt
  env $e timeout 60 $B --backend cuda --models linear,mlp,transformer --rows 4,16,32 --runs 300 >> $R/rows.txt 2>&1; echo "rc=$?" >> $R/rows.txt
done
cat $R/rows.txt
if grep -q "rc=124" $R/rows.txt; then nvidia-smi > $R/smi.txt; tar -C $OUT -czf $OUT/r.tgz r; exit 1; fi
timeout 200 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
TEST_CUDA_QUICK=1 timeout 150 /usr/local/cuda/bin/compute-sanitizer --tool memcheck $C/tests/test_cuda > $R/sanitizer.txt 2>&1; echo "sanitizer rc=$?" >> $R/tests.txt
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4
for round in 1 2 3; do
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/alone$round "alone$round|AGXQ_CUDA_LT_LOAD=0|" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/load$round "load$round||" > /dev/null 2>&1
done
SWEEP_CLIENTS=1 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/c1 "c1-alone|AGXQ_CUDA_LT_LOAD=0|" "c1-load||" > /dev/null 2>&1
cat $R/tests.txt; tail -3 $R/test_cuda.txt; tail -2 $R/sanitizer.txt; for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
