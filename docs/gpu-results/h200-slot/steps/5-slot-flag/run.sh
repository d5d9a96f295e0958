# Binaries:
#   server/agxqd           718f4f3 (raw replies in the slot, without the
#                          adaptive mutexes)
#   server/agxqd-prev      dd9d483
#   server/agxqd-slotflag  718f4f3 + ../1-flag-in-graph/flag-in-graph.patch
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt; nvidia-smi --query-gpu=driver_version --format=csv >> $R/date.txt
for v in prev slotflag; do
  mkdir -p build-$v/server; cp $C/server/agxqd-$v build-$v/server/agxqd; ln -s $C/examples build-$v/examples; ln -s $C/client build-$v/client; ln -s $C/tests build-$v/tests
  cp $C/agxqd-cuda build-$v/agxqd-cuda
done
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4 SWEEP_MODELS="linear,mlp"
for round in 1 2 3; do
BUILD=build-prev timeout 100 sh scripts/gpu_sweep.sh $R/base$round "base$round||" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/slot$round "slot$round||" > /dev/null 2>&1
BUILD=build-slotflag timeout 100 sh scripts/gpu_sweep.sh $R/slotflag$round "slotflag$round||" > /dev/null 2>&1
done
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
