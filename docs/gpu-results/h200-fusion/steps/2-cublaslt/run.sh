set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=build-gpu-carry
printf '#!/bin/sh\nAGXQ_CUDA_LT=0 AGXQ_CUDA_FUSE=0 exec %s/agxqd-cuda "$@"\n' "$PWD/$C" > $C/agxqd-old; chmod +x $C/agxqd-old
nvidia-smi -L > $OUT/gpu.txt; git rev-parse HEAD > $OUT/commit.txt
timeout 240 $C/tests/test_cuda > $OUT/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $OUT/test_cuda.txt
B=$C/examples/agxq-bench-rows
for cfg in "new|" "old|AGXQ_CUDA_LT=0 AGXQ_CUDA_FUSE=0" "new-nopad|AGXQ_CUDA_PAD_ROWS=0" "new|" "old|AGXQ_CUDA_LT=0 AGXQ_CUDA_FUSE=0"; do
  l=${cfg%%|*}; e=${cfg#*|}
  echo "== $l ($e)" >> $OUT/rows.txt
  env $e $B --backend cuda --models linear,mlp,transformer --rows 1,4,8,16,32 --runs 500 >> $OUT/rows.txt 2>&1
done
AB_CLIENTS=8 BUSY_MODELS="linear transformer" BUILD=$C timeout 250 sh scripts/gpu_ab.sh $OUT/ab $PWD/$C/agxqd-old $PWD/$C/agxqd-cuda > $OUT/ab.log 2>&1
grep -h "" $OUT/ab/ab*.md | head -30; cat $OUT/ab/busy.txt
tail -25 $OUT/test_cuda.txt
