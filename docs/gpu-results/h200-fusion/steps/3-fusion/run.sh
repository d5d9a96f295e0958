set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
mk() { printf '#!/bin/sh\n%s exec %s/agxqd-cuda "$@"\n' "$2" "$C" > $C/$1; chmod +x $C/$1; }
mk agxqd-old "AGXQ_CUDA_LT=0 AGXQ_CUDA_FUSE=0 AGXQ_CUDA_PAD_ROWS=32"
mk agxqd-lanes4 "AGXQ_LANES=4"
mk agxqd-lanes2 "AGXQ_LANES=2"
nvidia-smi -L > $R/gpu.txt; date -u > $R/date.txt
timeout 240 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/test_cuda.txt
TEST_CUDA_QUICK=1 timeout 150 /usr/local/cuda/bin/compute-sanitizer --tool memcheck $C/tests/test_cuda > $R/sanitizer.txt 2>&1; echo "rc=$?" >> $R/sanitizer.txt
B=$C/examples/agxq-bench-rows
for cfg in "new|" "nofuse|AGXQ_CUDA_FUSE=0" "old|AGXQ_CUDA_LT=0 AGXQ_CUDA_FUSE=0 AGXQ_CUDA_PAD_ROWS=32" "new|"; do
  l=${cfg%%|*}; e=${cfg#*|}
  echo "== $l ($e)" >> $R/rows.txt
  env $e $B --backend cuda --models linear,mlp,transformer --rows 1,4,8,16,32 --runs 500 >> $R/rows.txt 2>&1
done
timeout 100 /usr/local/cuda/bin/ncu --clock-control none --metrics gpu__time_duration.sum --csv $B --backend cuda --models transformer --rows 4 --runs 1 > $R/ncu4.csv 2>/dev/null
timeout 100 /usr/local/cuda/bin/ncu --clock-control none --metrics gpu__time_duration.sum --csv $B --backend cuda --models transformer --rows 32 --runs 1 > $R/ncu32.csv 2>/dev/null
AB_CLIENTS=8 BUSY_MODELS="linear mlp transformer" BUILD=build-gpu-carry timeout 300 sh scripts/gpu_ab.sh $R/ab $C/agxqd-old $C/agxqd-cuda $C/agxqd-lanes4 $C/agxqd-lanes2 $C/agxqd-old $C/agxqd-cuda > $R/ab.log 2>&1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
