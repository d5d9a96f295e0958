# Which cuBLASLt candidates hang, and how (gemmhang.cu). Each in its own
# process under a 3 s timeout.
set -u
C=$PWD/build-dbg
R=$OUT/r; mkdir -p $R
nvidia-smi -L > $R/date.txt; date -u >> $R/date.txt
for rows in 4; do for mode in ${MODES:-conc32 concx garbage}; do for i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
  timeout 3 $C/gemmhang $mode $i $rows >> $R/hang.txt 2>&1; rc=$?
  [ $rc = 3 ] && break
  [ $rc = 124 ] && echo "HANG" >> $R/hang.txt
done; done; done
cat $R/hang.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
