# cuBLASLt's algorithm per shape timed as the run has it (outputs where the
# run writes them: mapped host memory for linear's output), three rounds
# with the candidates taking turns (best of three each), and reported
# (AGXQ_CUDA_LT_REPORT), against the old timing (outputs in device memory,
# each candidate twice in a row). Old: the tree at ec01b2a (old/), new:
# this commit; both built alike (Release, shared deps carried in client/).
# One pass at a time on the direct engine (agxq-bench-rows), three rounds
# alternating, each new process writing its report; agxqd with 8 client
# processes, three rounds alternating; with 1 client, linear and mlp, two
# rounds. (test_cuda runs in the comparison, final/run.sh, same call.)
#   sh docs/gpu-results/h100-dec07/steps/1-lt/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
C=$PWD/build-gpu-carry
export LD_LIBRARY_PATH=$C/client
R=$OUT/lt; mkdir -p $R/rep
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
nvidia-smi --query-gpu=driver_version --format=csv,noheader >> $R/date.txt
for round in a b c; do
	LD_LIBRARY_PATH=$C/old/client:$C/client timeout 60 $C/old/agxq-bench-rows --backend cuda --models linear,mlp,transformer --rows 1,4,8,16,32 --runs 2000 > $R/pass-old-$round.txt 2>&1
	AGXQ_CUDA_LT_REPORT=$R/rep/pass-$round.txt timeout 60 $C/examples/agxq-bench-rows --backend cuda --models linear,mlp,transformer --rows 1,4,8,16,32 --runs 2000 > $R/pass-new-$round.txt 2>&1
done
O="AGXQD_BIN=$C/old/agxqd"
SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 300 sh scripts/gpu_sweep.sh $R/sweep8 "old|$O|" "new|AGXQ_CUDA_LT_REPORT=$R/rep/sweep8-a.txt|" "old-b|$O|" "new-b|AGXQ_CUDA_LT_REPORT=$R/rep/sweep8-b.txt|" "old-c|$O|" "new-c|AGXQ_CUDA_LT_REPORT=$R/rep/sweep8-c.txt|" > $R/sweep8.log 2>&1; echo "sweep8 rc=$?" >> $R/tests.txt
SWEEP_CLIENTS=1 SWEEP_MODELS=linear,mlp SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 120 sh scripts/gpu_sweep.sh $R/sweep1 "old|$O|" 'new||' "old-b|$O|" 'new-b||' > $R/sweep1.log 2>&1; echo "sweep1 rc=$?" >> $R/tests.txt
date -u >> $R/date.txt
cat $R/date.txt $R/tests.txt
for f in $R/pass-*.txt; do echo "== $f"; cat $f; done
cat $R/sweep8/sweep.csv $R/sweep1/sweep.csv
head -c 3000 $R/rep/sweep8-a.txt
tar -C $OUT -czf $OUT/lt.tgz lt && rm -rf $R
