set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
R=$OUT/more; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
SWEEP_CLIENTS=16,32 BUILD=build-gpu-carry timeout 330 sh scripts/gpu_sweep.sh $R/sweep 'old|AGXQ_CUDA_LT=0 AGXQ_CUDA_FUSE=0 AGXQ_CUDA_PAD_ROWS=32|' 'new||' > $R/sweep.log 2>&1
BUILD=build-gpu-carry timeout 150 sh scripts/gpu_fault.sh $R/fault > $R/fault.log 2>&1; echo "fault rc=$?" >> $R/fault.log
tar -C $OUT -czf $OUT/more.tgz more && rm -rf $R
