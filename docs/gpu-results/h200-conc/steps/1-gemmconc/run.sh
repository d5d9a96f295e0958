# 17ff6e4. The transformer's GEMMs, each cuBLASLt candidate alone and
# with 8 streams at once (gemmconc.cu); then the transformer through
# agxqd with the GEMM choice and lanes varied, and its pass alone.
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
timeout 150 $C/gemmconc 8 128 256 512 1024 > $R/gemmconc8.txt 2>&1
echo "gemmconc rc=$?" >> $R/date.txt
timeout 60 $C/examples/agxq-bench-rows --backend cuda --models transformer --rows 4,8,16,32 --runs 200 > $R/rows.txt 2>&1
SWEEP_MODELS=transformer SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-gpu-carry timeout 300 sh scripts/gpu_sweep.sh $R/sweep \
  'base||' 'cand1|AGXQ_CUDA_LT_CANDIDATES=1|' 'cand16|AGXQ_CUDA_LT_CANDIDATES=16|' 'lanes4|AGXQ_LANES=4|' 'base2||' >> $R/date.txt 2>&1
cat $R/sweep/sweep.csv
date -u >> $R/date.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
