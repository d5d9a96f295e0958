# Inputs read mapped by the GEMM (the defaults: AGXQ_CUDA_ZC_IN_MAX=4096,
# AGXQ_CUDA_ZC_NARROW_MAX=65536) against copied in first (both 0), and
# against only the 4 KiB rule off (ZC_IN_MAX=0): steps/5 saw mlp's lone
# pass at 1-4 rows 5-8 us shorter copied in, linear's at 4 rows 2.6 us
# shorter and at 8 rows 1.8 us longer. One pass at a time on the direct
# engine (agxq-bench-rows), three rounds alternating; agxqd with 8 client
# processes, the three models, three rounds alternating; with 1 client,
# linear and mlp, two rounds. Then faults under load (scripts/gpu_fault.sh,
# a trapping kernel and a hanging one: the daemon recovers) with the
# defaults.
#   sh docs/gpu-results/h100-dec06/steps/6-copy/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/copy; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
B=$C/examples/agxq-bench-rows
for round in a b c; do
	for cfg in base: copy:AGXQ_CUDA_ZC_IN_MAX=0,AGXQ_CUDA_ZC_NARROW_MAX=0 nozcin:AGXQ_CUDA_ZC_IN_MAX=0; do
		env $(echo ${cfg#*:} | tr , ' ') timeout 60 $B --backend cuda --models linear,mlp --rows 1,4,8,16,32 --runs 2000 > $R/pass-${cfg%%:*}-$round.txt 2>&1
	done
done
CP='AGXQ_CUDA_ZC_IN_MAX=0 AGXQ_CUDA_ZC_NARROW_MAX=0'
SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 280 sh scripts/gpu_sweep.sh $R/sweep8 'base||' "copy|$CP|" 'nozcin|AGXQ_CUDA_ZC_IN_MAX=0|' 'base-b||' "copy-b|$CP|" 'nozcin-b|AGXQ_CUDA_ZC_IN_MAX=0|' 'base-c||' "copy-c|$CP|" 'nozcin-c|AGXQ_CUDA_ZC_IN_MAX=0|' > $R/sweep8.log 2>&1; echo "sweep8 rc=$?" >> $R/tests.txt
SWEEP_CLIENTS=1 SWEEP_MODELS=linear,mlp SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 120 sh scripts/gpu_sweep.sh $R/sweep1 'base||' "copy|$CP|" 'nozcin|AGXQ_CUDA_ZC_IN_MAX=0|' 'base-b||' "copy-b|$CP|" 'nozcin-b|AGXQ_CUDA_ZC_IN_MAX=0|' > $R/sweep1.log 2>&1; echo "sweep1 rc=$?" >> $R/tests.txt
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_fault.sh $R/fault > $R/fault.log 2>&1; echo "gpu_fault trap rc=$?" >> $R/tests.txt
FAULT_KIND=hang BUILD=build-gpu-carry timeout 80 sh scripts/gpu_fault.sh $R/hang > $R/hang.log 2>&1; echo "gpu_fault hang rc=$?" >> $R/tests.txt
date -u >> $R/date.txt
cat $R/date.txt $R/tests.txt
for f in $R/pass-*.txt; do echo "== $f"; cat $f; done
cat $R/sweep8/sweep.csv $R/sweep1/sweep.csv; grep -h checked $R/fault.log $R/hang.log; tail -5 $R/fault.log $R/hang.log
tar -C $OUT -czf $OUT/copy.tgz copy && rm -rf $R
