# After the final run, on the same host: dd9d483 (server/agxqd-prev)
# against 718f4f3 (server/agxqd), three models, three rounds.
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
mkdir -p build-prev/server; cp $C/server/agxqd-prev build-prev/server/agxqd; ln -s $C/examples build-prev/examples; ln -s $C/client build-prev/client; ln -s $C/tests build-prev/tests; cp $C/agxqd-cuda build-prev/agxqd-cuda
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4
for round in 1 2 3; do
BUILD=build-prev timeout 100 sh scripts/gpu_sweep.sh $R/base$round "base$round||" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/new$round "new$round||" > /dev/null 2>&1
done
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
