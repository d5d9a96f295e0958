set -u
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz
export LD_LIBRARY_PATH=$PWD/build-gpu-carry/client
C=$PWD/build-gpu-carry
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt; nvidia-smi -L >> $R/date.txt
for cfg in "base|" "conn32|CUDA_DEVICE_MAX_CONNECTIONS=32" "conn1|CUDA_DEVICE_MAX_CONNECTIONS=1" "lanes2|AGXQ_LANES=2" "lanes4|AGXQ_LANES=4" "base2|"; do
  l=${cfg%%|*}; e=${cfg#*|}
  printf '#!/bin/sh\nif [ "$1" = start ]; then shift; %s AGXQ_PROF=%s exec %s start --backend cuda "$@"; fi\nexec %s "$@"\n' "$e" "$R/prof-$l.txt" "$C/agxqd-prof-bin" "$C/agxqd-prof-bin" > $C/agxqd-p-$l; chmod +x $C/agxqd-p-$l
  BUSY_MODELS="linear" AB_BENCH=0 BUILD=build-gpu-carry timeout 60 sh scripts/gpu_ab.sh $R/busy-$l $C/agxqd-p-$l > $R/busy-$l.log 2>&1
  echo "== $l ($e)"; grep -E "^(launch|evrec|poll|submit|start|retire|encode)" $R/prof-$l.txt; cat $R/busy-$l/busy.txt
done
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $R
