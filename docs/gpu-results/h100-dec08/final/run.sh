# The comparison with cuBLASLt's timing shared within a range of rows
# and models warmed (steps/1-share, steps/2-warm): gpu_compare.sh
# (test_cuda, agxq-bench --backend cuda, PyTorch threads and processes,
# PyTorch with MPS), then test_shm and test_batching against agxqd on
# cuda; then the transformer's GEMM ceiling (scripts/torch_gemm_ceiling.py).
# (The first call of 2026-12-08 ran it at 3ebeb19, before the warm-up,
# after steps/1-share; the second at fdc9e77 after steps/2-warm, with
# the warm-up before the first batch of a new sample shape, since taken
# out; both without the ceiling.)
#   sh docs/gpu-results/h100-dec08/final/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
R=$OUT/compare; mkdir -p $R
timeout 420 env BUILD=build-gpu-carry BENCH_TIMEOUT=170 sh scripts/gpu_compare.sh $R > $R/compare.log 2>&1
echo "compare rc=$?" >> $R/compare.log
C=$PWD/build-gpu-carry
printf '#!/bin/sh\nif [ "$1" = start ]; then shift; exec %s/server/agxqd start --backend cuda "$@"; fi\nexec %s/server/agxqd "$@"\n' "$C" "$C" > $C/agxqd-cuda; chmod +x $C/agxqd-cuda
for t in test_shm test_batching; do
	AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/$t > $R/$t.txt 2>&1; echo "$t against agxqd on cuda rc=$?" >> $R/compare.log
done
timeout 120 python3 scripts/torch_gemm_ceiling.py > $R/ceiling.csv 2>&1; echo "ceiling rc=$?" >> $R/compare.log; cat $R/ceiling.csv
head -3 $R/env.txt; grep -E "^(ok|FAIL)" $R/test_cuda.txt | wc -l; grep -c "^FAIL" $R/test_cuda.txt
grep "processes,proxy,8\|threads,direct-naive,8\|threads,proxy,8\|processes,proxy,1," $R/agxq_bench.csv; grep "nomps,threads,.*,8,\|nomps,processes,.*,8,\|mps,processes,.*,8," $R/torch.csv; tail -4 $R/compare.log; grep -E "^(ok|FAIL)" $R/test_cuda.txt | tr "\n" " "; echo; grep -A5 "^  linear rows 4" $R/test_cuda.txt | head -6
tar -C $OUT -czf $OUT/compare.tgz compare && rm -rf $R
