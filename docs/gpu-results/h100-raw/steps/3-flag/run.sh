set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
timeout 200 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
TEST_CUDA_QUICK=1 timeout 150 /usr/local/cuda/bin/compute-sanitizer --tool memcheck $C/tests/test_cuda > $R/sanitizer.txt 2>&1; echo "sanitizer rc=$?" >> $R/tests.txt
for t in test_ring test_shm test_batching test_ioloops; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 90 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4
for round in 1 2 3; do
BUILD=build-gpu-carry timeout 90 sh scripts/gpu_sweep.sh $R/event$round "event$round|AGXQ_CUDA_DONE_FLAG=0|" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 90 sh scripts/gpu_sweep.sh $R/flag$round "flag$round||" > /dev/null 2>&1
done
for round in 1 2; do
SWEEP_MODELS=linear,mlp BUILD=build-gpu-carry timeout 60 sh scripts/gpu_sweep.sh $R/loops$round "loops2-$round||" "loops4-$round||--conns-per-io-thread 2" "loops8-$round||--conns-per-io-thread 1" > /dev/null 2>&1
done
AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy $C/agxqd-cuda > $R/busy.log 2>&1
cat $R/tests.txt; grep -E "done flags|events only" $R/test_cuda.txt; tail -1 $R/test_cuda.txt; tail -1 $R/sanitizer.txt
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
cat $R/busy/busy.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
