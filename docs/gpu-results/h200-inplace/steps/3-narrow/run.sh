set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt; nvidia-smi --query-gpu=driver_version --format=csv >> $R/date.txt
timeout 150 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
for t in test_ring test_batching; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 120 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
for m in linear mlp; do timeout 60 $C/examples/agxq-bench-rows --backend cuda --models $m > $R/rows-$m.txt 2>&1; AGXQ_CUDA_ZC_NARROW_MAX=0 timeout 60 $C/examples/agxq-bench-rows --backend cuda --models $m > $R/rows-$m-off.txt 2>&1; done
cat $R/tests.txt
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4 SWEEP_MODELS=linear,mlp
for round in 1 2 3; do
BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/off$round "off$round|AGXQ_CUDA_ZC_NARROW_MAX=0|" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/n64k$round "n64k$round||" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/n16k$round "n16k$round|AGXQ_CUDA_ZC_NARROW_MAX=16384|" > /dev/null 2>&1
done
AB_BENCH=0 BUSY_MODELS=linear BUILD=build-gpu-carry timeout 90 sh scripts/gpu_ab.sh $R/busy-new $C/agxqd-cuda > $R/busy-new.log 2>&1
grep -E "^(ok|FAIL)" $R/test_cuda.txt | tr '\n' ' '; echo; grep -E "rule" $R/test_cuda.txt
head -30 $R/rows-linear.txt; grep -E "^ *(4|8|16|32) " $R/rows-linear-off.txt $R/rows-mlp.txt $R/rows-mlp-off.txt | head -20
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
echo "== new"; cat $R/busy-new/busy.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
