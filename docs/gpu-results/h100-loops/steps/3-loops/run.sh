set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt; lscpu > $R/lscpu.txt 2>&1
BUILD=build-gpu-carry timeout 260 sh scripts/gpu_sweep.sh $R/s8 'c12||' 'c4||--conns-per-io-thread 4' 'c2||--io-threads 4 --conns-per-io-thread 2' 'c1||--io-threads 8 --conns-per-io-thread 1' 'c12b||' 'c4b||--conns-per-io-thread 4' 'c2b||--io-threads 4 --conns-per-io-thread 2' 'c1b||--io-threads 8 --conns-per-io-thread 1' > $R/s8.log 2>&1
SWEEP_CLIENTS=16 BUILD=build-gpu-carry timeout 150 sh scripts/gpu_sweep.sh $R/s16 'c12||' 'c4||--conns-per-io-thread 4' 'c4x4||--io-threads 4 --conns-per-io-thread 4' > $R/s16.log 2>&1
SWEEP_CLIENTS=4 SWEEP_MODELS=linear,mlp BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/s4 'c12||' 'c4||--conns-per-io-thread 4' 'c2||--conns-per-io-thread 2' > $R/s4.log 2>&1
BUSY_MODELS="linear mlp" AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy4 $C/agxqd-c4 > $R/busy4.log 2>&1 || true
cat $R/s8/sweep.csv $R/s16/sweep.csv $R/s4/sweep.csv; grep -i "thread\|core\|socket" $R/lscpu.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
# build-gpu-carry/agxqd-c4 (made beside it):
#   #!/bin/sh
#   C=$(dirname "$0")
#   if [ "$1" = start ]; then shift; exec "$C/agxqd-cuda" start --conns-per-io-thread 4 "$@"; fi
#   exec "$C/agxqd-cuda" "$@"
