# Step 3 again with its sweeps fixed (same binaries; tests and phase
# timers off). The "test_ring rc=1" in tests.txt is the skipped test.
# Binaries:
#   server/agxqd        330a406 (adaptive mutexes 96dc016 + raw replies in the slot)
#   server/agxqd-prev   dd9d483
#   server/agxqd-ph     dd9d483 + phases-base.patch (phase timers, lock counters)
#   server/agxqd-m      96dc016 (adaptive mutexes alone)
#   server/agxqd-newph  330a406 + phases-base.patch
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt; nvidia-smi --query-gpu=driver_version --format=csv >> $R/date.txt
for v in prev ph m newph; do
  mkdir -p build-$v/server; cp $C/server/agxqd-$v build-$v/server/agxqd; ln -s $C/examples build-$v/examples; ln -s $C/client build-$v/client; ln -s $C/tests build-$v/tests
  cp $C/agxqd-cuda build-$v/agxqd-cuda
done
[ -n "${DO_TESTS:-}" ] && AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 120 $C/tests/test_ring > $R/test_ring.txt 2>&1; echo "test_ring rc=$?" >> $R/tests.txt
cat $R/tests.txt; grep -E "caught|raw_late" $R/test_ring.txt
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4 SWEEP_MODELS="linear,mlp"
for v in ${DO_PH:-}; do for m in linear mlp; do
SWEEP_MODELS=$m BUILD=build-$v timeout 60 sh scripts/gpu_sweep.sh $R/ph-$v-$m "$v|AGXQ_PHASES=$R/phases-$v-$m.txt|" > /dev/null 2>&1
done; done
for round in 1 2 3; do
BUILD=build-prev timeout 100 sh scripts/gpu_sweep.sh $R/base$round "base$round||" > /dev/null 2>&1
BUILD=build-m timeout 100 sh scripts/gpu_sweep.sh $R/lock$round "lock$round||" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/slot$round "slot$round||" > /dev/null 2>&1
done
AB_BENCH=0 BUSY_MODELS="linear mlp" BUILD=build-gpu-carry timeout 90 sh scripts/gpu_ab.sh $R/busy-new $C/agxqd-cuda > $R/busy-new.log 2>&1
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
for f in $R/phases-*; do echo "== $f"; cat $f; done
echo "== new"; cat $R/busy-new/busy.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
