/*
 * cuda_sticky_probe: after a sticky CUDA error (a kernel that traps), which
 * ways of getting a working context back in the same process work? Each
 * strategy runs in its own forked child (CUDA is not touched before the
 * fork) and prints one line: the strategy and whether a kernel, a cudaMalloc
 * and a cuBLAS-free memcpy work afterwards. Diagnostic tool for issue 4.
 *
 *   nvcc -o cuda_sticky_probe cuda_sticky_probe.cu -lcuda
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cuda.h>
#include <cuda_runtime_api.h>

__global__ void
probe_trap(void)
{
	__trap();
}

__global__ void
probe_add(int *p)
{
	*p += 1;
}

/* Checks the runtime API works on the current context: malloc, kernel, copy. */
static const char *
probe_check(void)
{
	static char buf[256];
	int *d = NULL, h = 41;
	cudaError_t e;

	if ((e = cudaMalloc((void **)&d, sizeof h)) != cudaSuccess)
		goto fail;
	if ((e = cudaMemcpy(d, &h, sizeof h, cudaMemcpyHostToDevice)) != cudaSuccess)
		goto fail;
	probe_add<<<1, 1>>>(d);
	if ((e = cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost)) != cudaSuccess)
		goto fail;
	cudaFree(d);
	snprintf(buf, sizeof buf, "WORKS (kernel gave %d, want 42)", h);
	return buf;
fail:
	snprintf(buf, sizeof buf, "fails: %s", cudaGetErrorName(e));
	return buf;
}

/* Breaks the current context with a trapping kernel. */
static void
probe_break(void)
{
	cudaError_t e;

	cudaSetDevice(0);
	cudaFree(0);
	probe_trap<<<1, 1>>>();
	e = cudaDeviceSynchronize();
	printf("    trap: %s\n", cudaGetErrorName(e));
}

static void
probe_strategy(int k)
{
	CUdevice dev;
	CUcontext ctx = NULL;
	CUresult r;
	const char *name = "?";

	probe_break();
	switch (k) {
	case 0:
		name = "nothing (retry at once)";
		break;
	case 1:
		name = "cudaDeviceReset";
		cudaDeviceReset();
		break;
	case 2:
		name = "cudaDeviceReset, sleep 3 s";
		cudaDeviceReset();
		sleep(3);
		break;
	case 3:
		name = "cuDevicePrimaryCtxReset";
		cuDeviceGet(&dev, 0);
		r = cuDevicePrimaryCtxReset(dev);
		printf("    cuDevicePrimaryCtxReset: %d\n", (int)r);
		break;
	case 4:
		name = "cuCtxCreate (new non-primary context, no reset)";
		cuDeviceGet(&dev, 0);
		r = cuCtxCreate(&ctx, NULL, 0, dev);
		printf("    cuCtxCreate: %d\n", (int)r);
		break;
	case 5:
		name = "cudaDeviceReset then cuCtxCreate";
		cudaDeviceReset();
		cuDeviceGet(&dev, 0);
		r = cuCtxCreate(&ctx, NULL, 0, dev);
		printf("    cuCtxCreate: %d\n", (int)r);
		break;
	case 6:
		name = "release primary ctx fully, then retain";
		cuDeviceGet(&dev, 0);
		cudaDeviceReset();
		r = cuDevicePrimaryCtxRetain(&ctx, dev);
		printf("    cuDevicePrimaryCtxRetain: %d\n", (int)r);
		if (r == CUDA_SUCCESS)
			cuCtxSetCurrent(ctx);
		break;
	}
	printf("  strategy %d, %s: %s\n", k, name, probe_check());
}

int
main(void)
{
	for (int k = 0; k <= 6; k++) {
		pid_t pid = fork();
		int status;

		if (pid == 0) {
			probe_strategy(k);
			fflush(stdout);
			_exit(0);
		}
		waitpid(pid, &status, 0);
		fflush(stdout);
	}
	/* Control: a fresh process after all this. */
	printf("  control (fresh child, no fault): %s\n",
	    (fflush(stdout), "see next line"));
	if (fork() == 0) {
		printf("    %s\n", probe_check());
		_exit(0);
	}
	wait(NULL);
	return 0;
}
