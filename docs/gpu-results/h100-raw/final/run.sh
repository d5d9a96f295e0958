set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/final; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
timeout 200 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
timeout 330 env BUILD=build-gpu-carry BENCH_TIMEOUT=170 sh scripts/gpu_compare.sh $R > $R/compare.log 2>&1
echo "compare rc=$?" >> $R/compare.log
for t in test_shm test_batching test_ioloops test_ring; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
BUILD=build-gpu-carry timeout 60 sh scripts/gpu_fault.sh $R/fault > $R/fault.log 2>&1; echo "gpu_fault rc=$?" >> $R/tests.txt
AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy $C/agxqd-cuda > $R/busy.log 2>&1
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4 SWEEP_MODELS=linear,mlp
for round in 1 2; do
BUILD=build-gpu-carry timeout 60 sh scripts/gpu_sweep.sh $R/event$round "event$round|AGXQ_CUDA_DONE_FLAG=0|" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 60 sh scripts/gpu_sweep.sh $R/flag$round "flag$round||" > /dev/null 2>&1
done
cat $R/tests.txt $R/busy/busy.txt; tail -1 $R/test_cuda.txt; tail -3 $R/fault/*.txt 2>/dev/null | head -20; for f in $R/event*/sweep.csv $R/flag*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1; grep "processes,proxy,8\|threads,direct-naive,8\|threads,proxy,8" $R/agxq_bench.csv; grep "nomps,threads,.*,8,\|mps,processes,.*,8," $R/torch.csv; tail -2 $R/compare.log
tar -C $OUT -czf $OUT/final.tgz final && rm -rf $R
