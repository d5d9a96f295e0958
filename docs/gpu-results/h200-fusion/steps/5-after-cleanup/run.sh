set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/check; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
timeout 240 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/test_cuda.txt
$C/examples/agxq-bench-rows --backend cuda --models linear,mlp,transformer --rows 4,8,32 --runs 500 > $R/rows.txt 2>&1
tar -C $OUT -czf $OUT/check.tgz check && rm -rf $R
