# Diagnostic (AGXQ_DIAG_SKIP patch, not committed): transformer through
# agxqd, 8 processes, with kinds of work left out, two rounds.
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
R=$OUT/r; mkdir -p $R
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
for i in 1 2; do
SWEEP_MODELS=transformer SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-gpu-carry timeout 150 sh scripts/gpu_sweep.sh $R/r$i \
  'base||' 'nomha|AGXQ_DIAG_SKIP=mha|' 'noln|AGXQ_DIAG_SKIP=layer_norm|' 'nomhaln|AGXQ_DIAG_SKIP=mha,layer_norm|' 'nodma|AGXQ_DIAG_SKIP=dmain,dmaout|' 'nolinear|AGXQ_DIAG_SKIP=linear|' 'gemmonly|AGXQ_DIAG_SKIP=mha,layer_norm,dmain,dmaout|' >> $R/date.txt 2>&1 || break
done
for sk in none mha layer_norm linear; do
echo "rows skip=$sk" >> $R/date.txt
AGXQ_DIAG_SKIP=$sk timeout 30 build-gpu-carry/examples/agxq-bench-rows --backend cuda --models transformer --rows 4,32 --runs 300 >> $R/date.txt 2>&1
done
date -u >> $R/date.txt
cat $R/date.txt
grep -h "," $R/r*/sweep.csv | grep -v label | sort -t, -k1,1
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
