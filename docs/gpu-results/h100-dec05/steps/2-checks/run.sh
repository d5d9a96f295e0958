# compute-sanitizer over test_cuda submit_answers (memcheck, and racecheck
# on cuk_answer_kernel), faults under load with device answers on (trap and
# hang, scripts/gpu_fault.sh), then transformer with clients polling their
# ring slots 200 (default), 400 and 1000 us (AGXQ_SPIN_US), two rounds.
#   sh docs/gpu-results/h100-dec05/steps/2-checks/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
CS=/usr/local/cuda/bin/compute-sanitizer
R=$OUT/checks; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
TEST_CUDA_QUICK=1 timeout 90 $CS --tool memcheck $C/tests/test_cuda submit_answers > $R/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $R/tests.txt
TEST_CUDA_QUICK=1 timeout 90 $CS --tool racecheck --kernel-name kns=cuk_answer_kernel $C/tests/test_cuda submit_answers > $R/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $R/tests.txt
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_fault.sh $R/fault > $R/fault.log 2>&1; echo "gpu_fault rc=$?" >> $R/tests.txt
FAULT_KIND=hang BUILD=build-gpu-carry timeout 80 sh scripts/gpu_fault.sh $R/hang > $R/hang.log 2>&1; echo "gpu_fault hang rc=$?" >> $R/tests.txt
SWEEP_MODELS=transformer SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 150 sh scripts/gpu_sweep.sh $R/spin 'spin200||' 'spin1000|AGXQ_SPIN_US=1000|' 'spin400|AGXQ_SPIN_US=400|' 'spin200-b||' 'spin1000-b|AGXQ_SPIN_US=1000|' 'spin400-b|AGXQ_SPIN_US=400|' > $R/spin.log 2>&1; echo "spin sweep rc=$?" >> $R/tests.txt
cat $R/tests.txt; tail -3 $R/memcheck.txt; tail -3 $R/racecheck.txt; grep checked $R/fault.log $R/hang.log; cat $R/spin/sweep.csv
tar -C $OUT -czf $OUT/checks.tgz checks && rm -rf $R
