# The short form of final/run.sh, for a session with little device time
# left: test_cuda (all cases, device answers on), test_ring against agxqd
# on cuda, and device answers on against off (linear and mlp, 8 processes,
# two rounds alternating). No PyTorch or MPS baselines (see final/).
#   sh docs/gpu-results/h100-dec05/steps/1-short/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
printf '#!/bin/sh\nif [ "$1" = start ]; then shift; exec %s/server/agxqd start --backend cuda "$@"; fi\nexec %s/server/agxqd "$@"\n' "$C" "$C" > $C/agxqd-cuda; chmod +x $C/agxqd-cuda
R=$OUT/short; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
nvidia-smi --query-gpu=driver_version --format=csv >> $R/date.txt
export AGXQ_CUDA_ANSWER=1
timeout 150 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 90 $C/tests/test_ring > $R/test_ring.txt 2>&1; echo "test_ring rc=$?" >> $R/tests.txt
SWEEP_MODELS=linear,mlp SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 110 sh scripts/gpu_sweep.sh $R/sweep 'ans||' 'noans|AGXQ_CUDA_ANSWER=0|' 'ans-b||' 'noans-b|AGXQ_CUDA_ANSWER=0|' > $R/sweep.log 2>&1; echo "sweep rc=$?" >> $R/tests.txt
cat $R/tests.txt $R/date.txt
grep -E "^(ok|FAIL|  skipped)" $R/test_cuda.txt | tr '\n' ' '; echo; grep -B3 "^FAIL" $R/test_cuda.txt | head -30
grep -A4 "submit_answers" $R/test_cuda.txt | head -12
grep -E "^(ok|FAIL)|early|caught|failed" $R/test_ring.txt | tr '\n' ' '; echo
cat $R/sweep/sweep.csv; tail -5 $R/sweep.log
tar -C $OUT -czf $OUT/short.tgz short && rm -rf $R
