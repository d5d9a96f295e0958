# The comparison of record at this commit, device answers off (the
# default; steps/1-short measured them slower): gpu_compare.sh (test_cuda,
# agxq-bench --backend cuda, PyTorch threads and processes, PyTorch with MPS).
#   sh docs/gpu-results/h100-dec05/steps/3-compare/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
R=$OUT/compare; mkdir -p $R
timeout 420 env BUILD=build-gpu-carry BENCH_TIMEOUT=170 sh scripts/gpu_compare.sh $R > $R/compare.log 2>&1
echo "compare rc=$?" >> $R/compare.log
head -3 $R/env.txt; grep -E "^(ok|FAIL)" $R/test_cuda.txt | wc -l; grep -c "^FAIL" $R/test_cuda.txt
grep "processes,proxy,8\|threads,direct-naive,8\|threads,proxy,8\|processes,proxy,1," $R/agxq_bench.csv; grep "nomps,threads,.*,8,\|nomps,processes,.*,8,\|mps,processes,.*,8," $R/torch.csv; tail -2 $R/compare.log
tar -C $OUT -czf $OUT/compare.tgz compare && rm -rf $R
