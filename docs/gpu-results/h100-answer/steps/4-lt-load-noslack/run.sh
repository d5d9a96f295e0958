set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
B=$C/examples/agxq-bench-rows
for cfg in "slack100|AGXQ_CUDA_LT_SLACK=100" "alone|AGXQ_CUDA_LT_LOAD=0"; do
  l=${cfg%%|*}; e=${cfg#*|}
  echo "== $l ($e)" >> $R/rows.txt
  env $e timeout 60 $B --backend cuda --models transformer,mlp --rows 4,8,16 --runs 300 >> $R/rows.txt 2>&1; echo "rc=$?" >> $R/rows.txt
done
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4 SWEEP_MODELS=transformer,mlp
for round in 1 2 3; do
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/alone$round "alone$round|AGXQ_CUDA_LT_LOAD=0|" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/slack$round "slack$round|AGXQ_CUDA_LT_SLACK=100|" > /dev/null 2>&1
done
SWEEP_CLIENTS=1 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/c1 "c1-alone|AGXQ_CUDA_LT_LOAD=0|" "c1-slack|AGXQ_CUDA_LT_SLACK=100|" > /dev/null 2>&1
cat $R/rows.txt; for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
