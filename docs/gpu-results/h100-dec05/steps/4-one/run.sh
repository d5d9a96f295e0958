# One client, device answers on against off (linear and mlp, two rounds
# alternating, 500 ms windows), run on the host of steps/3-compare right after it.
tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz; R=$OUT/one; mkdir -p $R; SWEEP_CLIENTS=1 SWEEP_MODELS=linear,mlp SWEEP_WINDOW_MS=500 BUILD=build-gpu-carry timeout 120 sh scripts/gpu_sweep.sh $R 'ans1|AGXQ_CUDA_ANSWER=1|' 'noans1||' 'ans1-b|AGXQ_CUDA_ANSWER=1|' 'noans1-b||' > $R/sweep.log 2>&1; echo rc=$?; cat $R/sweep.csv
