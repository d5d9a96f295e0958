# Device answers (engine_submit_answers, cuk_answer) on the GPU: test_cuda
# (submit_answers among all), test_ring against agxqd on cuda, then
# AGXQ_CUDA_ANSWER=0 against the default, three rounds alternating; then
# transformer with clients polling their ring slots 200 (default), 400 and
# 1000 us (AGXQ_SPIN_US), two rounds.
#   sh docs/gpu-results/h100-dec05/steps/1-answer/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
printf '#!/bin/sh\nif [ "$1" = start ]; then shift; exec %s/server/agxqd start --backend cuda "$@"; fi\nexec %s/server/agxqd "$@"\n' "$C" "$C" > $C/agxqd-cuda; chmod +x $C/agxqd-cuda
R=$OUT/answer; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
timeout 170 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 120 $C/tests/test_ring > $R/test_ring.txt 2>&1; echo "test_ring rc=$?" >> $R/tests.txt
SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 280 sh scripts/gpu_sweep.sh $R/sweep 'ans||' 'noans|AGXQ_CUDA_ANSWER=0|' 'ans-b||' 'noans-b|AGXQ_CUDA_ANSWER=0|' 'ans-c||' 'noans-c|AGXQ_CUDA_ANSWER=0|' > $R/sweep.log 2>&1; echo "sweep rc=$?" >> $R/tests.txt
SWEEP_MODELS=transformer SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 150 sh scripts/gpu_sweep.sh $R/spin 'spin200||' 'spin1000|AGXQ_SPIN_US=1000|' 'spin400|AGXQ_SPIN_US=400|' 'spin200-b||' 'spin1000-b|AGXQ_SPIN_US=1000|' 'spin400-b|AGXQ_SPIN_US=400|' > $R/spin.log 2>&1; echo "spin sweep rc=$?" >> $R/tests.txt
cat $R/tests.txt; grep -E "^(ok|FAIL)" $R/test_cuda.txt | tr '\n' ' '; echo; grep -A2 "submit_answers" $R/test_cuda.txt | head -3; grep -E "answered early|FAIL|caught" $R/test_ring.txt
cat $R/sweep/sweep.csv $R/spin/sweep.csv
tar -C $OUT -czf $OUT/answer.tgz answer && rm -rf $R
