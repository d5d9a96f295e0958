set -u
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
L=$C/launchbench
{
echo "== alone, kernel 10 us"; $L 10
echo "== alone, kernel 2 us"; $L 2
for n in 8 14; do
  pids=""
  for i in $(seq $n); do sh -c 'while :; do :; done' & pids="$pids $!"; done
  sleep 0.5
  echo "== $n busy shell loops beside it, kernel 10 us"; $L 10
  kill $pids 2>/dev/null; wait 2>/dev/null
done
} > $R/launch.txt 2>&1
cat $R/launch.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
