# Built on the development machine (CUDA 13, sm_90), carried in
# build-gpu-carry, run as the comments in arm.txt say:
/usr/local/cuda/bin/nvcc -O2 -arch=sm_90 -o build-gpu-carry/armbench armbench.cu -lcuda
