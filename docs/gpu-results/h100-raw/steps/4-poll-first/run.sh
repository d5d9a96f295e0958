set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
# build-old: the same clients, agxqd of the previous commit
O=$PWD/build-old; mkdir -p $O/server
cp $C/agxqd-prev $O/server/agxqd; ln -sfn $C/examples $O/examples; ln -sfn $C/client $O/client; ln -sfn $C/tests $O/tests
for t in test_ioloops test_ring; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 90 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4
for round in 1 2 3; do
BUILD=build-old timeout 90 sh scripts/gpu_sweep.sh $R/old$round "old$round||" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 90 sh scripts/gpu_sweep.sh $R/new$round "new$round||" > /dev/null 2>&1
done
AB_BENCH=0 BUILD=build-gpu-carry timeout 80 sh scripts/gpu_ab.sh $R/busy $C/agxqd-cuda > $R/busy.log 2>&1
cat $R/tests.txt
for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
cat $R/busy/busy.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
