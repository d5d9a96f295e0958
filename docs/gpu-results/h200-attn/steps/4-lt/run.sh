# 85868c3: transformer and mlp through agxqd, 8 processes, with more
# cuBLASLt candidates (16) and timing on 4 or 16 streams, two rounds.
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
R=$OUT/r; mkdir -p $R
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
for i in 1 2; do
SWEEP_MODELS=mlp,transformer SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-gpu-carry timeout 150 sh scripts/gpu_sweep.sh $R/s$i \
  'base||' 'cand16|AGXQ_CUDA_LT_CANDIDATES=16|' 'ov16|AGXQ_CUDA_LT_OVERLAP=16|' 'ov4|AGXQ_CUDA_LT_OVERLAP=4|' 'cand16ov16|AGXQ_CUDA_LT_CANDIDATES=16 AGXQ_CUDA_LT_OVERLAP=16|' >> $R/date.txt 2>&1 || break
done
date -u >> $R/date.txt
grep -h "," $R/s*/sweep.csv | grep -v label | sort -t, -k2,2 -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
