set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
mk() { printf '#!/bin/sh\n%s exec %s/agxqd-cuda "$@"\n' "$2" "$C" > $C/$1; chmod +x $C/$1; }
mk agxqd-map "AGXQ_CUDA_MAP_MAX=1048576"
mk agxqd-dma "AGXQ_CUDA_MAP_MAX=0"
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
timeout 150 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
TEST_CUDA_QUICK=1 timeout 120 /usr/local/cuda/bin/compute-sanitizer --tool memcheck $C/tests/test_cuda > $R/sanitizer.txt 2>&1; echo "sanitizer rc=$?" >> $R/tests.txt
for t in test_shm test_batching test_ioloops test_ring; do
  AGXQD=$C/agxqd-map AGXQ_TEST_DATA=$PWD/tests timeout 50 $C/tests/$t > $R/map-$t.txt 2>&1; echo "map $t rc=$?" >> $R/tests.txt
done
BUILD=build-gpu-carry timeout 240 sh scripts/gpu_sweep.sh $R/sweep 'dma||' 'map|AGXQ_CUDA_MAP_MAX=1048576|' 'dma2||' 'map2|AGXQ_CUDA_MAP_MAX=1048576|' > $R/sweep.log 2>&1
AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy-dma $C/agxqd-dma > $R/busy-dma.log 2>&1
AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy-map $C/agxqd-map > $R/busy-map.log 2>&1
cat $R/tests.txt $R/sweep/sweep.csv $R/busy-*/busy.txt; tail -3 $R/test_cuda.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
