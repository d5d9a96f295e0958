set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
mk() { printf '#!/bin/sh\n%s exec %s/agxqd-cuda "$@"\n' "$2" "$C" > $C/$1; chmod +x $C/$1; }
mk agxqd-map "AGXQ_CUDA_MAP_MAX=1048576"
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/test_ring > $R/test_ring.txt 2>&1; echo "test_ring rc=$?" >> $R/tests.txt
AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy $C/agxqd-cuda > $R/busy.log 2>&1
BUSY_CLIENTS=1 AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy1 $C/agxqd-cuda > $R/busy1.log 2>&1
BUILD=build-gpu-carry timeout 200 sh scripts/gpu_sweep.sh $R/sweep 'base||' 'cpi4||--conns-per-io-thread 4' 'base2||' 'cpi4b||--conns-per-io-thread 4' > $R/sweep.log 2>&1
SWEEP_MODELS=transformer BUILD=build-gpu-carry timeout 120 sh scripts/gpu_sweep.sh $R/sweepmap 'dma||' 'map|AGXQ_CUDA_MAP_MAX=1048576|' 'dma2||' 'map2|AGXQ_CUDA_MAP_MAX=1048576|' 'dma3||' 'map3|AGXQ_CUDA_MAP_MAX=1048576|' > $R/sweepmap.log 2>&1
cat $R/tests.txt $R/busy/busy.txt $R/busy1/busy.txt $R/sweep/sweep.csv $R/sweepmap/sweep.csv; grep -h "latency\|p50" $R/busy/busy-linear.md | head -5
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
