# steps/3 again with the timing on scratch outputs and zeroed workspaces
# only: the new default (8 streams) against AGXQ_CUDA_LT_OVERLAP=1 and
# against 17ff6e4 (prev: timed eagerly, alone), three rounds alternating.
# Stops at the first sign of a hang.
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
fin() { date -u >> $R/date.txt; cat $R/date.txt; tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R; exit 0; }
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
timeout 60 $C/tests/test_cuda lt_overlap > $R/test_lt_overlap.txt 2>&1; rc=$?
echo "test lt_overlap rc=$rc" >> $R/date.txt; [ $rc = 0 ] || fin
for ov in 8 1; do AGXQ_CUDA_LT_OVERLAP=$ov timeout 40 $C/examples/agxq-bench-rows --backend cuda --rows 4,8,16,32 --runs 300 > $R/rows-ov$ov.txt 2>&1; rc=$?
echo "rows ov$ov rc=$rc" >> $R/date.txt; [ $rc = 0 ] || fin; done
mkdir -p build-prev/server && cp $C/server/agxqd-prev build-prev/server/agxqd
for d in examples client tests; do ln -sfn $C/$d build-prev/$d; done
for i in 1 2 3; do
SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-prev timeout 100 sh scripts/gpu_sweep.sh $R/prev$i 'prev||' >> $R/date.txt 2>&1 || fin
SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-gpu-carry timeout 150 sh scripts/gpu_sweep.sh $R/new$i 'ov1|AGXQ_CUDA_LT_OVERLAP=1|' 'ov8||' >> $R/date.txt 2>&1 || fin
done
timeout 200 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/date.txt
tail -3 $R/test_cuda.txt >> $R/date.txt
fin
