# 13c36fb on an H100 (the GPU). One call:
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/base; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt; nvidia-smi --query-gpu=driver_version --format=csv >> $R/date.txt
python3 -c "import torch; print(torch.__version__)" >> $R/date.txt 2>&1
# sh docs/gpu-results/h100-dec05/base/run.sh (carry build-gpu-carry)
timeout 330 env BUILD=build-gpu-carry BENCH_TIMEOUT=170 sh scripts/gpu_compare.sh $R > $R/compare.log 2>&1
echo "compare rc=$?" >> $R/compare.log
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_fault.sh $R/fault > $R/fault.log 2>&1; echo "gpu_fault rc=$?" >> $R/tests.txt
FAULT_KIND=hang BUILD=build-gpu-carry timeout 80 sh scripts/gpu_fault.sh $R/hang > $R/hang.log 2>&1; echo "gpu_fault hang rc=$?" >> $R/tests.txt
grep "checked" $R/fault.log $R/hang.log; grep "processes,proxy,8\|threads,direct-naive,8\|threads,proxy,8\|processes,proxy,1," $R/agxq_bench.csv; grep "nomps,threads,.*,8,\|nomps,processes,.*,8,\|mps,processes,.*,8," $R/torch.csv; tail -2 $R/compare.log
tail -1 $R/test_cuda.txt >> $R/tests.txt; grep -E "^(ok|FAIL)" $R/test_cuda.txt | tr "\n" " "; echo
cat $R/tests.txt
tar -C $OUT -czf $OUT/base.tgz base && rm -rf $R
