set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/final2; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
timeout 200 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
timeout 300 env BUILD=build-gpu-carry BENCH_TIMEOUT=170 sh scripts/gpu_compare.sh $R > $R/compare.log 2>&1
echo "compare rc=$?" >> $R/compare.log
for t in test_shm test_batching test_ioloops test_ring; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy $C/agxqd-cuda > $R/busy.log 2>&1
cat $R/tests.txt $R/busy/busy.txt; tail -2 $R/test_cuda.txt; tail -30 $R/compare.log
tar -C $OUT -czf $OUT/final2.tgz final2 && rm -rf $R
