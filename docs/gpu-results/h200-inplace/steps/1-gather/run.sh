set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt; nvidia-smi --query-gpu=driver_version --format=csv >> $R/date.txt
mkdir -p build-old/server; cp $C/server/agxqd-prev build-old/server/agxqd; ln -s $C/examples build-old/examples; ln -s $C/client build-old/client; ln -s $C/tests build-old/tests
sed "s#/server#/../build-old/server#" $C/agxqd-cuda > build-old/agxqd-cuda; chmod +x build-old/agxqd-cuda
timeout 150 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
timeout 100 compute-sanitizer --error-exitcode 9 $C/tests/test_cuda kernel_gather submit_parts > $R/sanitizer.txt 2>&1; echo "sanitizer rc=$?" >> $R/tests.txt
for t in test_ring test_shm test_batching test_ioloops; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 120 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
cat $R/tests.txt
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4
for round in 1 2 3; do
BUILD=build-old timeout 100 sh scripts/gpu_sweep.sh $R/old$round "old$round||" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/new$round "new$round||" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/nogather$round "nogather$round|AGXQ_CUDA_GATHER=0|" > /dev/null 2>&1
done
AB_BENCH=0 BUILD=build-gpu-carry timeout 90 sh scripts/gpu_ab.sh $R/busy-new $C/agxqd-cuda > $R/busy-new.log 2>&1
AB_BENCH=0 BUILD=build-old timeout 90 sh scripts/gpu_ab.sh $R/busy-old $PWD/build-old/agxqd-cuda > $R/busy-old.log 2>&1
grep -E "^(ok|FAIL)" $R/test_cuda.txt | tr '\n' ' '; echo; grep -E "gather|parts" $R/test_cuda.txt; tail -3 $R/sanitizer.txt
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
echo "== new"; cat $R/busy-new/busy.txt; echo "== old"; cat $R/busy-old/busy.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
