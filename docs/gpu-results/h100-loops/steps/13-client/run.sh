set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
mkdir -p build-cp && ln -sf $C/server build-cp/server && ln -sf $C/examples build-cp/examples && ln -sf $C/cprof build-cp/client
export LD_LIBRARY_PATH=$C/cprof
echo "== 8 clients, linear mlp" > $R/cprof.txt
AGXQ_CPROF=$R/cprof.txt BUSY_MODELS="linear mlp" AB_BENCH=0 BUILD=build-cp timeout 80 sh scripts/gpu_ab.sh $R/busy8 $C/agxqd-cuda > $R/busy8.log 2>&1
echo "== 1 client, linear" >> $R/cprof.txt
AGXQ_CPROF=$R/cprof.txt BUSY_CLIENTS=1 BUSY_MODELS="linear" AB_BENCH=0 BUILD=build-cp timeout 80 sh scripts/gpu_ab.sh $R/busy1 $C/agxqd-cuda > $R/busy1.log 2>&1
cat $R/cprof.txt $R/busy8/busy.txt $R/busy1/busy.txt; grep -h "| 8 \|| 1 " $R/busy8/*.md $R/busy1/*.md
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
