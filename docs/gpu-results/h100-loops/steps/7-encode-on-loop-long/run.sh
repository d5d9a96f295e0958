set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; uptime >> $R/date.txt
mkdir -p build-old/server && cp $C/agxqd-prev build-old/server/agxqd && ln -sf $C/examples build-old/examples && ln -sf $C/client build-old/client
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=5 SWEEP_MODELS=linear,mlp
for round in 1 2 3; do
for n in 8 16; do
SWEEP_CLIENTS=$n BUILD=build-old timeout 60 sh scripts/gpu_sweep.sh $R/old$n-$round "old$round||" > /dev/null 2>&1
SWEEP_CLIENTS=$n BUILD=build-gpu-carry timeout 60 sh scripts/gpu_sweep.sh $R/new$n-$round "new$round||" > /dev/null 2>&1
done
done
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k3,3n -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
