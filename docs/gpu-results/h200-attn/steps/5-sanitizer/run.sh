# 85868c3: compute-sanitizer memcheck and racecheck over the attention
# cases of test_cuda (the kernel changed in c33c5c4).
set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
CS=/usr/local/cuda/bin/compute-sanitizer
# (the first call: memcheck and synccheck over all of test_cuda; racecheck
# timed out) then, in a second call, racecheck on the attention kernel only:
# RACE=1 sh run.sh
if [ -n "${RACE:-}" ]; then
timeout 170 $CS --tool racecheck --kernel-name kns=cuk_attention_kernel --error-exitcode 9 $C/tests/test_cuda > $R/racecheck-attn.txt 2>&1
echo "racecheck attention rc=$?" >> $R/date.txt; tail -3 $R/racecheck-attn.txt >> $R/date.txt
else
for tool in memcheck racecheck synccheck; do
timeout 200 $CS --tool $tool --error-exitcode 9 $C/tests/test_cuda kernel_attention mha_fused mha > $R/$tool.txt 2>&1
echo "$tool rc=$?" >> $R/date.txt; tail -4 $R/$tool.txt >> $R/date.txt
done
fi
date -u >> $R/date.txt
cat $R/date.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
