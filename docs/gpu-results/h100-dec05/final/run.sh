# One call: device answers checked on the GPU (test_cuda submit_answers;
# if that fails, the rest runs with AGXQ_CUDA_ANSWER=0 and says so),
# test_ring against agxqd on cuda, AGXQ_CUDA_ANSWER=0 against the default
# (linear and mlp, two rounds alternating), then the full comparison.
#   sh docs/gpu-results/h100-dec05/final/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
printf '#!/bin/sh\nif [ "$1" = start ]; then shift; exec %s/server/agxqd start --backend cuda "$@"; fi\nexec %s/server/agxqd "$@"\n' "$C" "$C" > $C/agxqd-cuda; chmod +x $C/agxqd-cuda
R=$OUT/final; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt; nvidia-smi --query-gpu=driver_version --format=csv >> $R/date.txt
python3 -c "import torch; print(torch.__version__)" >> $R/date.txt 2>&1
export AGXQ_CUDA_ANSWER=1
timeout 60 $C/tests/test_cuda submit_answers > $R/answers.txt 2>&1; rc=$?; echo "test_cuda submit_answers rc=$rc" >> $R/tests.txt
if [ $rc != 0 ]; then export AGXQ_CUDA_ANSWER=0; echo "AGXQ_CUDA_ANSWER=0 for the rest" >> $R/tests.txt; fi
AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 90 $C/tests/test_ring > $R/test_ring.txt 2>&1; echo "test_ring rc=$?" >> $R/tests.txt
SWEEP_MODELS=linear,mlp SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/sweep 'ans||' 'noans|AGXQ_CUDA_ANSWER=0|' 'ans-b||' 'noans-b|AGXQ_CUDA_ANSWER=0|' > $R/sweep.log 2>&1; echo "sweep rc=$?" >> $R/tests.txt
date -u >> $R/date.txt
timeout 340 env BUILD=build-gpu-carry BENCH_TIMEOUT=170 sh scripts/gpu_compare.sh $R > $R/compare.log 2>&1
echo "compare rc=$?" >> $R/compare.log
cat $R/tests.txt; cat $R/answers.txt | tail -3; grep -E "^(ok|FAIL)|early|caught" $R/test_ring.txt | tr '\n' ' '; echo
cat $R/sweep/sweep.csv
grep "processes,proxy,8\|threads,direct-naive,8\|threads,proxy,8\|processes,proxy,1," $R/agxq_bench.csv; grep "nomps,threads,.*,8,\|nomps,processes,.*,8,\|mps,processes,.*,8," $R/torch.csv; tail -2 $R/compare.log
tail -1 $R/test_cuda.txt >> $R/tests.txt; grep -E "^(ok|FAIL)" $R/test_cuda.txt | tr "\n" " "; echo
tar -C $OUT -czf $OUT/final.tgz final && rm -rf $R
