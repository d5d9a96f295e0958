set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
timeout 200 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
TEST_CUDA_QUICK=1 timeout 150 /usr/local/cuda/bin/compute-sanitizer --tool memcheck $C/tests/test_cuda > $R/sanitizer.txt 2>&1; echo "sanitizer rc=$?" >> $R/tests.txt
for t in test_shm test_batching test_ioloops test_ring; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
B=$C/examples/agxq-bench-rows
for cfg in "kernel|" "memcpy|AGXQ_CUDA_COPY_KERNEL=0"; do
  l=${cfg%%|*}; e=${cfg#*|}
  echo "== $l ($e)" >> $R/rows.txt
  env $e timeout 60 $B --backend cuda --models linear,mlp --rows 4,8,16,32 --runs 500 >> $R/rows.txt 2>&1
done
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4
for round in 1 2 3; do
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/memcpy$round "memcpy$round|AGXQ_CUDA_COPY_KERNEL=0|" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/kernel$round "kernel$round||" > /dev/null 2>&1
done
AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy $C/agxqd-cuda > $R/busy.log 2>&1
cat $R/tests.txt; grep -A1 "kernel_copy" $R/test_cuda.txt | head -3; tail -1 $R/test_cuda.txt; tail -1 $R/sanitizer.txt; cat $R/rows.txt; for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1; cat $R/busy/busy.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
