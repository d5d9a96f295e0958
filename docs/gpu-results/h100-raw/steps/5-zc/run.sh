set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
B=$C/examples/agxq-bench-rows
for cfg in "default|" "zc16k|AGXQ_CUDA_ZC_IN_MAX=16384" "zc64k|AGXQ_CUDA_ZC_IN_MAX=65536"; do
  l=${cfg%%|*}; e=${cfg#*|}
  echo "== $l ($e)" >> $R/rows.txt
  env $e timeout 60 $B --backend cuda --models linear,mlp --rows 4,8,16,32 --runs 500 >> $R/rows.txt 2>&1
done
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4 SWEEP_MODELS=linear,mlp
for round in 1 2 3; do
BUILD=build-gpu-carry timeout 90 sh scripts/gpu_sweep.sh $R/s$round "default$round||" "zc16k$round|AGXQ_CUDA_ZC_IN_MAX=16384|" "zc64k$round|AGXQ_CUDA_ZC_IN_MAX=65536|" > /dev/null 2>&1
done
cat $R/rows.txt
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
