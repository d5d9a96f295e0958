set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/v; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
timeout 200 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/test_cuda.txt
$C/examples/agxq-bench-rows --backend cuda --rows 1,4,8,16,32,64 --runs 200 > $R/rows.txt 2>&1
printf '#!/bin/sh\nAGXQ_CUDA_LT=0 AGXQ_CUDA_FUSE=0 AGXQ_CUDA_PAD_ROWS=32 exec %s/agxqd-cuda "$@"\n' "$C" > $C/agxqd-old; chmod +x $C/agxqd-old
AB_CLIENTS=8 BUSY_MODELS="linear" BUILD=build-gpu-carry timeout 200 sh scripts/gpu_ab.sh $R/ab $C/agxqd-old $C/agxqd-cuda $C/agxqd-old $C/agxqd-cuda > $R/ab.log 2>&1
tar -C $OUT -czf $OUT/v.tgz v && rm -rf $R
