# Written 2026-12-06, not run (no device time left): how long each kernel
# of a linear and an mlp pass takes on the GPU, one at a time (ncu replays
# each alone, so no overlap and no launch latency), at 4 and 16 rows, for
# the split of steps/3 (a lone linear graph spans 7.6 us with two stamp
# kernels in it; how much of that is cuBLASLt's kernel reading its rows
# from mapped host memory?). With AGXQ_CUDA_ZC_NARROW_MAX=0 and
# AGXQ_CUDA_ZC_IN_MAX=0 as well: the inputs copied in first (cuk_copy),
# the GEMM reading device memory.
#   sh docs/gpu-results/h100-dec06/steps/4-ncu-linear/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/ncu; mkdir -p $R
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
B=$C/examples/agxq-bench-rows
M=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__block_size
for rows in 4 16; do
	for zc in on off; do
		if [ $zc = on ]; then e=""; else e="AGXQ_CUDA_ZC_NARROW_MAX=0 AGXQ_CUDA_ZC_IN_MAX=0"; fi
		env $e timeout 90 /usr/local/cuda/bin/ncu --clock-control none --metrics $M --csv $B --backend cuda --models linear,mlp --rows $rows --runs 1 > $R/ncu-$rows-$zc.csv 2>$R/ncu-$rows-$zc.err
		echo "rows $rows zero-copy $zc rc=$?" >> $R/date.txt
	done
done
cat $R/date.txt
for f in $R/ncu-*.csv; do echo "== $f"; grep gpu__time_duration $f | awk -F'","' '{print $5, $(NF)}' | tail -20; done
tar -C $OUT -czf $OUT/ncu.tgz ncu && rm -rf $R
