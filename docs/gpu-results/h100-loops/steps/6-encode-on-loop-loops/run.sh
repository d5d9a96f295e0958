set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
mkdir -p build-old/server && cp $C/agxqd-prev build-old/server/agxqd && ln -s $C/examples build-old/examples && ln -s $C/client build-old/client
for round in 1 2; do
SWEEP_MODELS=linear,mlp BUILD=build-gpu-carry timeout 140 sh scripts/gpu_sweep.sh $R/new$round 'new-c4||' 'new-c2||--io-threads 4 --conns-per-io-thread 2' 'new-c1||--io-threads 8 --conns-per-io-thread 1' > $R/new$round.log 2>&1
SWEEP_MODELS=linear,mlp BUILD=build-old timeout 100 sh scripts/gpu_sweep.sh $R/old$round 'old-c4||' 'old-c2||--io-threads 4 --conns-per-io-thread 2' > $R/old$round.log 2>&1
done
SWEEP_CLIENTS=16 SWEEP_MODELS=linear,mlp BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/new16 'new-c4||' 'new-c2||--io-threads 4 --conns-per-io-thread 2' > $R/new16.log 2>&1
SWEEP_CLIENTS=16 SWEEP_MODELS=linear,mlp BUILD=build-old timeout 100 sh scripts/gpu_sweep.sh $R/old16 'old-c4||' 'old-c2||--io-threads 4 --conns-per-io-thread 2' > $R/old16.log 2>&1
for f in new1 old1 new2 old2 new16 old16; do tail -n +2 $R/$f/sweep.csv; done
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
