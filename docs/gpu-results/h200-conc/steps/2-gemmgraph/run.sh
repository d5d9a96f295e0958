# gemmconc.cu of steps/1 with each timing's launches captured in one
# CUDA graph (the eager timing there measured the host's cublasLtMatmul).
set -u
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
timeout 200 $C/gemmconc 8 128 256 512 1024 > $R/gemmconc8.txt 2>&1
echo "gemmconc rc=$?" >> $R/date.txt
timeout 100 $C/gemmconc 4 128 256 > $R/gemmconc4.txt 2>&1
echo "gemmconc rc=$?" >> $R/date.txt
grep -E "^[a-z]|best" $R/gemmconc8.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
