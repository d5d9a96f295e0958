# The reply thread on an H100, run 2026-12-06 with binaries of c961584
# (the thread was removed after it): test_ring, test_batching and test_shm
# against agxqd on cuda with AGXQ_REPLY_THREAD=1; then AGXQ_REPLY_THREAD=1
# against the default (0), 8 processes, the three models, two rounds
# alternating; then where the daemon's time goes with it on (gpu_ab.sh).
#   sh docs/gpu-results/h100-dec06/steps/1-reply/run.sh (carry build-gpu-carry)
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
printf '#!/bin/sh\nif [ "$1" = start ]; then shift; exec %s/server/agxqd start --backend cuda "$@"; fi\nexec %s/server/agxqd "$@"\n' "$C" "$C" > $C/agxqd-cuda; chmod +x $C/agxqd-cuda
R=$OUT/reply; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
for t in test_ring test_batching test_shm; do
	AGXQ_REPLY_THREAD=1 AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 120 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
SWEEP_WINDOW_MS=1000 BUILD=build-gpu-carry timeout 240 sh scripts/gpu_sweep.sh $R/sweep 'reply|AGXQ_REPLY_THREAD=1|' 'noreply||' 'reply-b|AGXQ_REPLY_THREAD=1|' 'noreply-b||' > $R/sweep.log 2>&1; echo "sweep rc=$?" >> $R/tests.txt
AGXQ_REPLY_THREAD=1 AB_BENCH=0 BUSY_MODELS="linear mlp" BUILD=build-gpu-carry timeout 100 sh scripts/gpu_ab.sh $R/busy $C/agxqd-cuda > $R/busy.log 2>&1
date -u >> $R/date.txt
cat $R/tests.txt; cat $R/sweep/sweep.csv; cat $R/busy/busy.txt
tar -C $OUT -czf $OUT/reply.tgz reply && rm -rf $R
