set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
for t in test_shm test_batching test_ioloops test_ring; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/head "head||" > /dev/null 2>&1
AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy $C/agxqd-cuda > $R/busy.log 2>&1
cat $R/tests.txt; grep -h "answered" $R/test_ring.txt; tail -n +2 $R/head/sweep.csv; cat $R/busy/busy.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
