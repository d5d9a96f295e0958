# Two rounds of candidate timing instead of three (the rest of steps/1-lt
# kept: outputs where the run writes them, candidates taking turns): one
# pass at a time (agxq-bench-rows; the first pass of each size is the
# timing's cost), old (ec01b2a, old/) and new alternating, each new process
# writing its report (do three processes choose alike?). Then test_batching
# against agxqd on cuda, old and new alternating, three times each (its
# no_starvation case failed once against the new agxqd in steps/1-lt).
# final/run.sh runs in the same call after this.
#   sh docs/gpu-results/h100-dec07/steps/2-reps/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
C=$PWD/build-gpu-carry
export LD_LIBRARY_PATH=$C/client
R=$OUT/reps; mkdir -p $R/rep
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
for round in a b c; do
	if [ $round != c ]; then
		LD_LIBRARY_PATH=$C/old/client:$C/client timeout 60 $C/old/agxq-bench-rows --backend cuda --models linear,mlp,transformer --rows 1,4,8,16,32 --runs 2000 > $R/pass-old-$round.txt 2>&1
	fi
	AGXQ_CUDA_LT_REPORT=$R/rep/pass-$round.txt timeout 60 $C/examples/agxq-bench-rows --backend cuda --models linear,mlp,transformer --rows 1,4,8,16,32 --runs 2000 > $R/pass-new-$round.txt 2>&1
done
for k in old new; do
	b=$C/server/agxqd; [ $k = old ] && b=$C/old/agxqd
	printf '#!/bin/sh\nif [ "$1" = start ]; then shift; exec %s start --backend cuda "$@"; fi\nexec %s "$@"\n' "$b" "$b" > $C/agxqd-$k; chmod +x $C/agxqd-$k
done
for round in a b c; do
	for k in old new; do
		AGXQD=$C/agxqd-$k AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/test_batching > $R/batching-$k-$round.txt 2>&1; echo "test_batching $k $round rc=$?" >> $R/tests.txt
	done
done
date -u >> $R/date.txt
cat $R/date.txt $R/tests.txt; grep -h 'waited\|flood requests finished' $R/batching-*.txt
for f in $R/pass-*.txt; do printf '%s ' $(basename $f); awk '{printf "%s/%s ", $5, $(NF-1)}' $f; echo; done
tar -C $OUT -czf $OUT/reps.tgz reps && rm -rf $R
