# A kernel that never ends (AGXQ_CUDA_FAULT_KIND=hang) under load: the
# stall watchdog must replace the worker; the trap faults again; then
# transformer with clients' tensors copied through the staging
# (AGXQ_CUDA_HOSTREG=0) against DMA, two rounds.
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
fin() { date -u >> $R/date.txt; cat $R/date.txt; tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R; exit 0; }
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
FAULT_KIND=hang BUILD=build-gpu-carry timeout 150 sh scripts/gpu_fault.sh $R/hang > /dev/null 2>> $R/date.txt
echo "gpu_fault hang rc=$?" >> $R/date.txt
grep -h "checked\|pid\|stall" $R/hang/fault.txt >> $R/date.txt
BUILD=build-gpu-carry timeout 150 sh scripts/gpu_fault.sh $R/trap > /dev/null 2>> $R/date.txt
echo "gpu_fault trap rc=$?" >> $R/date.txt
grep -h "checked\|pid" $R/trap/fault.txt >> $R/date.txt
for i in 1 2; do
SWEEP_MODELS=transformer SWEEP_WINDOW_MS=1000 SWEEP_WINDOWS=3 BUILD=build-gpu-carry timeout 60 sh scripts/gpu_sweep.sh $R/s$i 'base||' 'hostreg0|AGXQ_CUDA_HOSTREG=0|' >> $R/date.txt 2>&1 || fin
done
fin
