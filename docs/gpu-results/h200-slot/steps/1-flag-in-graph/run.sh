# Binaries (scripts of /tmp/pack.sh style, see ../../README.md):
#   server/agxqd       62f945f (flag-in-graph.patch: graphs write the done flag)
#   server/agxqd-prev  dd9d483
#   server/agxqd-ph    62f945f + phases.patch (executor phase timers)
# Command: sh build-gpu-carry/run.sh, carry build-gpu-carry.
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt; nvidia-smi --query-gpu=driver_version --format=csv >> $R/date.txt
for v in old ph; do
  src=agxqd-prev; [ $v = ph ] && src=agxqd-ph
  mkdir -p build-$v/server; cp $C/server/$src build-$v/server/agxqd; ln -s $C/examples build-$v/examples; ln -s $C/client build-$v/client; ln -s $C/tests build-$v/tests
  sed "s|/server\"|/server\"|" $C/agxqd-cuda > build-$v/agxqd-cuda; chmod +x build-$v/agxqd-cuda
done
timeout 150 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
cat $R/tests.txt
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4
for m in linear mlp; do
SWEEP_MODELS=$m BUILD=build-ph timeout 60 sh scripts/gpu_sweep.sh $R/ph-$m "ph|AGXQ_PHASES=$R/phases-$m.txt|" > /dev/null 2>&1
done
for round in 1 2 3; do
BUILD=build-old timeout 100 sh scripts/gpu_sweep.sh $R/old$round "old$round||" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/new$round "new$round||" > /dev/null 2>&1
done
AB_BENCH=0 BUSY_MODELS="linear mlp" BUILD=build-gpu-carry timeout 90 sh scripts/gpu_ab.sh $R/busy-new $C/agxqd-cuda > $R/busy-new.log 2>&1
AB_BENCH=0 BUSY_MODELS="linear mlp" BUILD=build-old timeout 90 sh scripts/gpu_ab.sh $R/busy-old $PWD/build-old/agxqd-cuda > $R/busy-old.log 2>&1
grep -E "^(ok|FAIL)" $R/test_cuda.txt | tr '\n' ' '; echo; grep -E "polled to done|not judged|after its submission" $R/test_cuda.txt
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
for m in linear mlp; do echo "== phases $m"; cat $R/phases-$m.txt; done
echo "== new"; cat $R/busy-new/busy.txt; echo "== old"; cat $R/busy-old/busy.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
