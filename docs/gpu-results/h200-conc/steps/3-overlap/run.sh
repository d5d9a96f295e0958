# cuBLASLt candidates timed in a graph on 8 streams at once (the new
# default) against the same alone (AGXQ_CUDA_LT_OVERLAP=1) and against
# 17ff6e4 (timed eagerly, alone: prev), three rounds alternating.
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
timeout 120 $C/tests/test_cuda lt_overlap > $R/test_lt_overlap.txt 2>&1; echo "test lt_overlap rc=$?" >> $R/date.txt
mkdir -p build-prev/server && cp $C/server/agxqd-prev build-prev/server/agxqd
for d in examples client tests; do ln -sfn $C/$d build-prev/$d; done
for ov in 1 8; do AGXQ_CUDA_LT_OVERLAP=$ov timeout 60 $C/examples/agxq-bench-rows --backend cuda --rows 4,8,16,32 --runs 300 > $R/rows-ov$ov.txt 2>&1; done
for i in 1 2 3; do
SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-prev timeout 200 sh scripts/gpu_sweep.sh $R/prev$i 'prev||' >> $R/date.txt 2>&1
SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-gpu-carry timeout 300 sh scripts/gpu_sweep.sh $R/new$i 'ov1|AGXQ_CUDA_LT_OVERLAP=1|' 'ov8||' >> $R/date.txt 2>&1
done
cat $R/prev*/sweep.csv $R/new*/sweep.csv | grep -v ^label
timeout 240 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/date.txt
tail -3 $R/test_cuda.txt
date -u >> $R/date.txt
cat $R/date.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
