# 718f4f3 (the final's binaries). ncu replays each kernel alone: the
# durations are of kernels one at a time, not under agxqd's overlap.
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
B=$C/examples/agxq-bench-rows
M=gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread
for rows in 4 32; do
timeout 90 /usr/local/cuda/bin/ncu --clock-control none --metrics $M --csv $B --backend cuda --models transformer --rows $rows --runs 1 > $R/ncu$rows.csv 2>$R/ncu$rows.err
echo "rows $rows rc=$?" >> $R/date.txt
done
cat $R/date.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
