set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/cand; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
mk() { printf '#!/bin/sh\n%s exec %s/agxqd-cuda "$@"\n' "$2" "$C" > $C/$1; chmod +x $C/$1; }
mk agxqd-c8 "AGXQ_CUDA_LT_CANDIDATES=8"
mk agxqd-c1 "AGXQ_CUDA_LT_CANDIDATES=1"
for cfg in "8|AGXQ_CUDA_LT_CANDIDATES=8" "4 (default)|" "1|AGXQ_CUDA_LT_CANDIDATES=1" "8|AGXQ_CUDA_LT_CANDIDATES=8" "4 (default)|" "1|AGXQ_CUDA_LT_CANDIDATES=1"; do
  l=${cfg%%|*}; e=${cfg#*|}
  echo "== candidates $l ($e)" >> $R/rows.txt
  env $e $C/examples/agxq-bench-rows --backend cuda --rows 1,4,8,16,32,64 --runs 200 >> $R/rows.txt 2>&1
done
timeout 200 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/test_cuda.txt
AB_CLIENTS=8 BUSY_MODELS="linear" BUILD=build-gpu-carry timeout 200 sh scripts/gpu_ab.sh $R/ab $C/agxqd-c8 $C/agxqd-cuda $C/agxqd-c1 > $R/ab.log 2>&1
tar -C $OUT -czf $OUT/cand.tgz cand && rm -rf $R
