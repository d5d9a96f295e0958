set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/first; mkdir -p $R/dump
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
for cfg in "cublaslt|" "cublassgemm|AGXQ_CUDA_LT=0 AGXQ_CUDA_FUSE=0 AGXQ_CUDA_PAD_ROWS=32"; do
  l=${cfg%%|*}; e=${cfg#*|}
  echo "== $l ($e)" >> $R/rows.txt
  env $e $C/examples/agxq-bench-rows --backend cuda --rows 1,4,8,16,32,64 --runs 200 >> $R/rows.txt 2>&1
done
AGXQ_TEST_DUMP=$R/dump timeout 200 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/test_cuda.txt
python3 tests/compare_torch.py $R/dump cuda > $R/compare_torch.txt 2>&1; echo "compare_torch rc=$?" >> $R/compare_torch.txt
rm -rf $R/dump
tar -C $OUT -czf $OUT/first.tgz first && rm -rf $R
