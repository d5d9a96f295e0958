set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/final3; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
timeout 200 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
timeout 300 env BUILD=build-gpu-carry BENCH_TIMEOUT=170 sh scripts/gpu_compare.sh $R > $R/compare.log 2>&1
echo "compare rc=$?" >> $R/compare.log
for t in test_shm test_batching test_ioloops test_ring; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy $C/agxqd-cuda > $R/busy.log 2>&1
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4 SWEEP_MODELS=linear,mlp SWEEP_CLIENTS=16
for round in 1 2; do
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/c16-memcpy$round "c16-memcpy$round|AGXQ_CUDA_COPY_KERNEL=0|" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/c16-kernel$round "c16-kernel$round||" > /dev/null 2>&1
done
cat $R/tests.txt $R/busy/busy.txt; tail -1 $R/test_cuda.txt; for f in $R/c16*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1; grep "processes,proxy,8\|threads,direct-naive,8\|threads,proxy,8" $R/agxq_bench.csv; grep "nomps,threads,.*,8,\|mps,processes,.*,8," $R/torch.csv
tar -C $OUT -czf $OUT/final3.tgz final3 && rm -rf $R
