set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/check; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
timeout 150 $C/tests/test_cuda > $R/test_cuda.txt 2>&1; echo "test_cuda rc=$?" >> $R/tests.txt
for t in test_ring test_ioloops; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 120 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
cat $R/tests.txt; grep -E "^(ok|FAIL)" $R/test_cuda.txt | tr '\n' ' '; echo; grep -E "^(ok|FAIL)" $R/test_ring.txt | tr '\n' ' '
tar -C $OUT -czf $OUT/check.tgz check && rm -rf $R
