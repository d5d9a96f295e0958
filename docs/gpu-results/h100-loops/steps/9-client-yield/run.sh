set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; uname -a >> $R/date.txt; (dmesg 2>&1 | head -5) >> $R/date.txt
python3 -c "
import os,time
for k in range(3):
    t=time.perf_counter()
    for _ in range(100000): os.sched_yield()
    print('sched_yield %.3f us' % ((time.perf_counter()-t)/1e5*1e6))
" >> $R/date.txt 2>&1
mkdir -p build-ny && ln -sf $C/server build-ny/server && ln -sf $C/examples build-ny/examples && ln -sf $C/noyield build-ny/client
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4
for round in 1 2 3; do
BUILD=build-gpu-carry timeout 60 sh scripts/gpu_sweep.sh $R/y$round "yield$round||" > /dev/null 2>&1
BUILD=build-ny timeout 60 sh scripts/gpu_sweep.sh $R/n$round "noyield$round||" > /dev/null 2>&1
done
SWEEP_CLIENTS=16 BUILD=build-gpu-carry timeout 60 sh scripts/gpu_sweep.sh $R/y16 "yield16||" > /dev/null 2>&1
SWEEP_CLIENTS=16 BUILD=build-ny timeout 60 sh scripts/gpu_sweep.sh $R/n16 "noyield16||" > /dev/null 2>&1
cat $R/date.txt; for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k3,3n -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
