set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
R=$OUT/h100; mkdir -p $R
timeout 270 env BUILD=build-gpu-carry BENCH_TIMEOUT=170 sh scripts/gpu_compare.sh $R > $R/compare.log 2>&1
echo "compare rc=$?" >> $R/compare.log
tar -C $OUT -czf $OUT/h100.tgz h100 && rm -rf $R
