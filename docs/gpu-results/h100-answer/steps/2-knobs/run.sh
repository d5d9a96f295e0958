set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; lscpu > $R/lscpu.txt; lscpu -e > $R/lscpu-e.txt
# agxqd pinned to 3 CPUs whose hyperthread siblings nobody uses; clients elsewhere
mkdir -p build-pin/server && ln -sf $C/examples build-pin/examples && ln -sf $C/client build-pin/client
A=$(python3 -c "
import subprocess
rows=[l.split() for l in open('$R/lscpu-e.txt').read().splitlines()[1:]]
# columns: CPU NODE SOCKET CORE ...
core={}
for r in rows: core.setdefault(r[3],[]).append(r[0])
cores=list(core.values())
ag=[c[0] for c in cores[:3]]; sib=[x for c in cores[:3] for x in c[1:]]
rest=[x for c in cores[3:] for x in c]
print(','.join(ag)+' '+','.join(rest)+' '+','.join(sib))
")
set -- $A; AG=$1; CL=$2; SIB=${3:-none}
echo "agxqd cpus $AG, clients $CL, idle siblings $SIB" > $R/pin.txt
printf '#!/bin/sh\nexec taskset -c %s %s/server/agxqd "$@"\n' "$AG" "$C" > build-pin/server/agxqd; chmod +x build-pin/server/agxqd
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4
for round in 1 2; do
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/base$round "base$round||" > /dev/null 2>&1
BUILD=build-pin timeout 80 taskset -c $CL sh scripts/gpu_sweep.sh $R/pin$round "pin$round||" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/cpio2$round "cpio2$round||--conns-per-io-thread 2" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/zc16$round "zc16$round|AGXQ_CUDA_ZC_IN_MAX=16384|" > /dev/null 2>&1
done
cat $R/pin.txt; grep -E "Model name|Thread|Core|Socket" $R/lscpu.txt; for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
