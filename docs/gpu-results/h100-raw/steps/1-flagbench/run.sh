set -u
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt; nproc >> $R/date.txt
F=$C/flagbench
{
echo "== alone, kernel 10 us"; $F 10
echo "== alone, kernel 2 us"; $F 2
pids=""
for i in $(seq 8); do sh -c 'while :; do :; done' & pids="$pids $!"; done
sleep 0.5
echo "== 8 busy shell loops beside it, kernel 10 us"; $F 10
kill $pids 2>/dev/null; wait 2>/dev/null
} > $R/flag.txt 2>&1
cat $R/flag.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
