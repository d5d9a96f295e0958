set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
for t in test_ioloops test_ring; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 60 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
mkdir -p build-old/server && cp $C/agxqd-prev build-old/server/agxqd && ln -sf $C/examples build-old/examples && ln -sf $C/client build-old/client
export SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=4 SWEEP_MODELS=linear,mlp
for round in 1 2 3; do
BUILD=build-old timeout 80 sh scripts/gpu_sweep.sh $R/old$round "old$round||" > /dev/null 2>&1
BUILD=build-gpu-carry timeout 80 sh scripts/gpu_sweep.sh $R/new$round "new$round||" > /dev/null 2>&1
done
cat $R/tests.txt; grep -h "answered" $R/test_ring.txt; for f in $R/*/sweep.csv; do tail -n +2 $f; done | sort -t, -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
