# Attention with one query row a warp and the block's query rows staged
# with K and V (new) against c94b242 (prev): test_cuda, then transformer
# through agxqd, 8 processes and 1, three rounds alternating.
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
fin() { date -u >> $R/date.txt; cat $R/date.txt; tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R; exit 0; }
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
timeout 200 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; rc=$?
echo "test_cuda rc=$rc" >> $R/date.txt; tail -3 $R/test_cuda.txt >> $R/date.txt
[ $rc = 0 ] || fin
timeout 40 $C/examples/agxq-bench-rows --backend cuda --models transformer --rows 4,32 --runs 300 >> $R/date.txt 2>&1
mkdir -p build-prev/server && cp $C/server/agxqd-prev build-prev/server/agxqd
for d in examples client tests; do ln -sfn $C/$d build-prev/$d; done
for i in 1 2 3; do
SWEEP_MODELS=transformer SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-prev timeout 60 sh scripts/gpu_sweep.sh $R/prev$i 'prev||' >> $R/date.txt 2>&1 || fin
SWEEP_MODELS=transformer SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-gpu-carry timeout 60 sh scripts/gpu_sweep.sh $R/new$i 'new||' >> $R/date.txt 2>&1 || fin
done
SWEEP_CLIENTS=1 SWEEP_MODELS=transformer SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-prev timeout 60 sh scripts/gpu_sweep.sh $R/prev1c 'prev1c||' >> $R/date.txt 2>&1
SWEEP_CLIENTS=1 SWEEP_MODELS=transformer SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-gpu-carry timeout 60 sh scripts/gpu_sweep.sh $R/new1c 'new1c||' >> $R/date.txt 2>&1
grep -h "^prev\|^new" $R/*/sweep.csv | sort >> $R/date.txt
fin
