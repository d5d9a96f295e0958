# Ran 2026-12-06 with binaries of d3e9e22 (agxqd-prev: af380af); both
# changes were level and removed after it, so it measures them only with
# those binaries.
# Adaptive locks for the batcher and the loops' mailboxes, and the done
# flag written by each run's CUDA graph (AGXQ_CUDA_FLAG_IN_GRAPH): test_cuda
# (all cases; `poll` runs the three ways of telling a run is over), `poll`
# under compute-sanitizer, test_ring, test_batching and test_shm against
# agxqd on cuda; then the previous agxqd (server/agxqd-prev, af380af)
# against the new one with the flag in the graph and without it, 8
# processes, the three models, three rounds alternating; then where the
# new daemon's time goes (gpu_ab.sh).
#   sh docs/gpu-results/h100-dec06/steps/2-lock-flag/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
A=$C/server/agxqd-prev
printf '#!/bin/sh\nif [ "$1" = start ]; then shift; exec %s/server/agxqd start --backend cuda "$@"; fi\nexec %s/server/agxqd "$@"\n' "$C" "$C" > $C/agxqd-cuda; chmod +x $C/agxqd-cuda
R=$OUT/lf; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
timeout 150 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
TEST_CUDA_QUICK=1 timeout 90 /usr/local/cuda/bin/compute-sanitizer --tool memcheck $C/tests/test_cuda poll > $R/memcheck.txt 2>&1; echo "memcheck poll rc=$?" >> $R/tests.txt
for t in test_ring test_batching test_shm; do
	AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 120 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 300 sh scripts/gpu_sweep.sh $R/sweep "old|AGXQD_BIN=$A|" 'new||' 'noflag|AGXQ_CUDA_FLAG_IN_GRAPH=0|' "old-b|AGXQD_BIN=$A|" 'new-b||' 'noflag-b|AGXQ_CUDA_FLAG_IN_GRAPH=0|' "old-c|AGXQD_BIN=$A|" 'new-c||' 'noflag-c|AGXQ_CUDA_FLAG_IN_GRAPH=0|' > $R/sweep.log 2>&1; echo "sweep rc=$?" >> $R/tests.txt
AB_BENCH=0 BUSY_MODELS="linear mlp" BUILD=build-gpu-carry timeout 100 sh scripts/gpu_ab.sh $R/busy $C/agxqd-cuda > $R/busy.log 2>&1
date -u >> $R/date.txt
cat $R/tests.txt; grep -E "^(ok|FAIL)" $R/test_cuda.txt | tr '\n' ' '; echo; grep -A12 "^ *poll\|runs polled" $R/test_cuda.txt | grep "polled\|FAIL\|not done\|done " | head -12; tail -4 $R/memcheck.txt
cat $R/sweep/sweep.csv; cat $R/busy/busy.txt
tar -C $OUT -czf $OUT/lf.tgz lf && rm -rf $R
