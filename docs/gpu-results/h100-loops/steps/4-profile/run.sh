set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
printf '#!/bin/sh\nif [ "$1" = start ]; then shift; AGXQ_PROF=%s exec %s start --backend cuda "$@"; fi\nexec %s "$@"\n' "$R/prof.txt" "$C/agxqd-prof-bin" "$C/agxqd-prof-bin" > $C/agxqd-prof; chmod +x $C/agxqd-prof
BUSY_MODELS="linear mlp" AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy8 $C/agxqd-prof > $R/busy8.log 2>&1
echo "== 1 client" >> $R/prof.txt
BUSY_CLIENTS=1 BUSY_MODELS="linear" AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy1 $C/agxqd-prof > $R/busy1.log 2>&1
BUSY_MODELS="linear mlp" AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busyplain $C/agxqd-cuda > $R/busyplain.log 2>&1
cat $R/prof.txt $R/busy8/busy.txt $R/busy1/busy.txt $R/busyplain/busy.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
# agxqd-prof-bin: agxqd of 893e028 with prof.patch applied (executor timers,
# written to $AGXQ_PROF when the executor exits), built like the others.
