set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/zc; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
mk() { printf '#!/bin/sh\n%s exec %s/agxqd-cuda "$@"\n' "$2" "$C" > $C/$1; chmod +x $C/$1; }
mk agxqd-zc64k "AGXQ_CUDA_ZC_IN_MAX=65536"
B=$C/examples/agxq-bench-rows
for cfg in "default|" "zc64k|AGXQ_CUDA_ZC_IN_MAX=65536" "default|" "zc64k|AGXQ_CUDA_ZC_IN_MAX=65536"; do
  l=${cfg%%|*}; e=${cfg#*|}
  echo "== $l ($e)" >> $R/rows.txt
  env $e $B --backend cuda --models linear,mlp --rows 4,8,16,32 --runs 1000 >> $R/rows.txt 2>&1
done
AB_CLIENTS=8 BUSY_MODELS="linear" BUILD=build-gpu-carry timeout 250 sh scripts/gpu_ab.sh $R/ab $C/agxqd-cuda $C/agxqd-zc64k $C/agxqd-cuda $C/agxqd-zc64k > $R/ab.log 2>&1
tar -C $OUT -czf $OUT/zc.tgz zc && rm -rf $R
