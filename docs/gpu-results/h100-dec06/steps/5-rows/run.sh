# cuk_linear_rows (linears of up to 32 rows: each block reads its rows
# once into shared memory, a warp a column) against cuBLASLt
# (AGXQ_CUDA_ROWS_MAX=0). Correctness first: test_cuda (every case; the
# new kernel_linear_rows and linear_rows among them), compute-sanitizer
# memcheck and racecheck over kernel_linear_rows, test_ring, test_batching
# and test_shm against agxqd on cuda. Then one pass at a time on the direct
# engine (agxq-bench-rows) at 1-32 rows, the kernel off, on with 1, 2, 4, 8
# columns a warp, and off and on (2) with every input copied in first
# (no kernel reading mapped memory: the rows cross the bus once, not once
# a block); agxqd with 8 client processes, the three models, off against
# on (2 and 8 columns a warp; 2 with linear's rows copied in), two rounds
# alternating; last, ncu's
# kernel times at 4 and 32 rows where ncu is there.
#   sh docs/gpu-results/h100-dec06/steps/5-rows/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
printf '#!/bin/sh\nif [ "$1" = start ]; then shift; exec %s/server/agxqd start --backend cuda "$@"; fi\nexec %s/server/agxqd "$@"\n' "$C" "$C" > $C/agxqd-cuda; chmod +x $C/agxqd-cuda
R=$OUT/rows; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
timeout 150 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
for tool in memcheck racecheck; do
	TEST_CUDA_QUICK=1 timeout 60 /usr/local/cuda/bin/compute-sanitizer --tool $tool $C/tests/test_cuda kernel_linear_rows > $R/$tool.txt 2>&1; echo "$tool kernel_linear_rows rc=$?" >> $R/tests.txt
done
B=$C/examples/agxq-bench-rows
for cfg in off:AGXQ_CUDA_ROWS_MAX=0 cpw1:AGXQ_CUDA_ROWS_CPW=1 cpw2:AGXQ_CUDA_ROWS_CPW=2 cpw4:AGXQ_CUDA_ROWS_CPW=4 cpw8:AGXQ_CUDA_ROWS_CPW=8 offcopy:AGXQ_CUDA_ROWS_MAX=0,AGXQ_CUDA_ZC_NARROW_MAX=0,AGXQ_CUDA_ZC_IN_MAX=0 cpw2copy:AGXQ_CUDA_ZC_NARROW_MAX=0,AGXQ_CUDA_ZC_IN_MAX=0; do
	env $(echo ${cfg#*:} | tr , ' ') timeout 60 $B --backend cuda --models linear,mlp --rows 1,4,8,16,24,32 --runs 2000 > $R/pass-${cfg%%:*}.txt 2>&1
done
SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 300 sh scripts/gpu_sweep.sh $R/sweep 'off|AGXQ_CUDA_ROWS_MAX=0|' 'cpw2||' 'cpw8|AGXQ_CUDA_ROWS_CPW=8|' 'cpw2copy|AGXQ_CUDA_ZC_NARROW_MAX=0|' 'off-b|AGXQ_CUDA_ROWS_MAX=0|' 'cpw2-b||' 'cpw8-b|AGXQ_CUDA_ROWS_CPW=8|' 'cpw2copy-b|AGXQ_CUDA_ZC_NARROW_MAX=0|' > $R/sweep.log 2>&1; echo "sweep rc=$?" >> $R/tests.txt
for t in test_ring test_batching test_shm; do
	AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 90 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
if [ -x /usr/local/cuda/bin/ncu ]; then
	M=gpu__time_duration.sum,launch__grid_size
	for cfg in off:AGXQ_CUDA_ROWS_MAX=0 cpw2:AGXQ_CUDA_ROWS_CPW=2; do
		for rows in 4 32; do
			env ${cfg#*:} timeout 40 /usr/local/cuda/bin/ncu --clock-control none --metrics $M --csv $B --backend cuda --models linear,mlp --rows $rows --runs 1 > $R/ncu-${cfg%%:*}-$rows.csv 2>$R/ncu-${cfg%%:*}-$rows.err
		done
	done
fi
date -u >> $R/date.txt
cat $R/date.txt $R/tests.txt; grep -E "^(ok|FAIL)" $R/test_cuda.txt | tr '\n' ' '; echo
grep -E "cuk_linear_rows:|ROWS|rows\b" $R/test_cuda.txt | head -30; tail -3 $R/memcheck.txt $R/racecheck.txt
for f in $R/pass-*.txt; do echo "== $f"; cat $f; done
for f in $R/ncu-*.csv; do [ -f $f ] || continue; echo "== $f"; grep gpu__time_duration $f | awk -F'","' '{print $5, $(NF)}' | sed 's/(.*//' | sort | uniq -c | head -12; done
cat $R/sweep/sweep.csv
tar -C $OUT -czf $OUT/rows.tgz rows && rm -rf $R
