# 09df943: candidates timed on 1, 2, 4 and 8 streams at once
# (AGXQ_CUDA_LT_OVERLAP), mlp and transformer, three rounds alternating.
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
R=$OUT/r; mkdir -p $R
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
for i in 1 2 3; do
SWEEP_MODELS=mlp,transformer SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-gpu-carry timeout 100 sh scripts/gpu_sweep.sh $R/r$i \
  'ov1|AGXQ_CUDA_LT_OVERLAP=1|' 'ov2|AGXQ_CUDA_LT_OVERLAP=2|' 'ov4|AGXQ_CUDA_LT_OVERLAP=4|' 'ov8||' >> $R/date.txt 2>&1 || break
done
date -u >> $R/date.txt
grep -h "^ov" $R/r*/sweep.csv | sort -t, -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
