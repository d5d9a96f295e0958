# The last commit's test_cuda (warm-up at load only, open_cuda_report),
# and the transformer's FP32 GEMM ceiling timed from CUDA graphs
# (scripts/torch_gemm_ceiling.py as of f562c0c), in one short call: too
# little device time was left for the whole comparison.
#   sh docs/gpu-results/h100-dec08/steps/3-check/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
C=$PWD/build-gpu-carry
export LD_LIBRARY_PATH=$C/client
R=$OUT/check; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
nvidia-smi --query-gpu=driver_version --format=csv,noheader >> $R/date.txt
AGXQ_TEST_DATA=$PWD/tests timeout 150 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
timeout 120 python3 scripts/torch_gemm_ceiling.py > $R/ceiling.csv 2>&1; echo "ceiling rc=$?" >> $R/tests.txt
date -u >> $R/date.txt
cat $R/date.txt $R/tests.txt $R/ceiling.csv
grep -E "^(ok|FAIL)" $R/test_cuda.txt | tr "\n" " "; echo; grep -A3 "warmed linear" $R/test_cuda.txt
tar -C $OUT -czf $OUT/check.tgz check && rm -rf $R
