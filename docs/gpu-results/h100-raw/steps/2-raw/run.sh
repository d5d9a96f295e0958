set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
for t in test_ring test_shm test_batching; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 90 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4 SWEEP_MODELS=linear,mlp
for round in 1 2 3; do
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/packed$round "packed$round|AGXQ_RING_RAW=0|" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/raw$round "raw$round||" > /dev/null 2>&1
done
AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy-raw $C/agxqd-cuda > $R/busy-raw.log 2>&1
AGXQ_RING_RAW=0 AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy-packed $C/agxqd-cuda > $R/busy-packed.log 2>&1
cat $R/tests.txt; grep -E "^(ok|FAIL)" $R/test_ring.txt | tr '\n' ' '; echo
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
echo "== raw"; cat $R/busy-raw/busy.txt; echo "== packed"; cat $R/busy-packed/busy.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
