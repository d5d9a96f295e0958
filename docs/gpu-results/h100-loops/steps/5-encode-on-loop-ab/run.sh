set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
printf '#!/bin/sh\nif [ "$1" = start ]; then shift; exec %s start --backend cuda "$@"; fi\nexec %s "$@"\n' "$C/agxqd-prev" "$C/agxqd-prev" > $C/agxqd-old; chmod +x $C/agxqd-old
for t in test_shm test_batching test_ioloops test_ring; do
  AGXQD=$C/agxqd-cuda AGXQ_TEST_DATA=$PWD/tests timeout 50 $C/tests/$t > $R/$t.txt 2>&1; echo "$t rc=$?" >> $R/tests.txt
done
AB_CLIENTS=8 BUILD=build-gpu-carry timeout 300 sh scripts/gpu_ab.sh $R/ab $C/agxqd-old $C/agxqd-cuda $C/agxqd-old $C/agxqd-cuda > $R/ab.log 2>&1
cat $R/tests.txt; grep -h "| 8 |" $R/ab/ab*.txt; cat $R/ab/busy.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
