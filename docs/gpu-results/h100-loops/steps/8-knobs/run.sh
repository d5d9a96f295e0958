set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; uptime >> $R/date.txt
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=5 SWEEP_MODELS=linear,mlp
for round in 1 2 3; do
BUILD=build-gpu-carry timeout 150 sh scripts/gpu_sweep.sh $R/s$round "graphs$round||" "eager$round|AGXQ_CUDA_GRAPHS=0|" "lanes4-$round|AGXQ_LANES=4|" "zc16k$round|AGXQ_CUDA_ZC_IN_MAX=16384|" > /dev/null 2>&1
done
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
