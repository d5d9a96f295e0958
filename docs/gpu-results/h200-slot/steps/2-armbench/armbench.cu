/*
 * armbench: can a lane be launched ahead ("armed") and started later by a
 * plain store? Each run is a CUDA graph of one kernel (spin `us`) then a
 * flag write (cuStreamWriteValue32 captured). Modes, one run in flight:
 *   launch: the host launches the graph and polls the flag (the flag
 *           write captured in the graph, as commit 62f945f tried);
 *           time from before the launch to the flag seen.
 *   launch+w: a graph of the kernel alone, then a cuStreamWriteValue32
 *           call after the launch (what agxqd does); timed the same way.
 *   wait:   the graph starts with a captured cuStreamWaitValue32 on a go
 *           word in mapped memory; it is launched ahead, then the host
 *           stores go and polls; time from the store to the flag seen.
 *   spin:   as wait, but a 1-thread kernel spinning on go instead.
 * 8 lanes; in the armed modes every lane is armed at once and fired in
 * turn (re-armed after its flag is seen). Prints p50/p90 and mean.
 *   nvcc -O2 -o armbench armbench.cu -lcuda
 */
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LANES 8
#define RUNS 4000
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } } while (0)
#define CU(x) do { CUresult r_ = (x); if (r_ != CUDA_SUCCESS) { \
	fprintf(stderr, "%s: %d\n", #x, (int)r_); exit(1); } } while (0)

static double now_us(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3; }

__global__ void spin_kernel(float *p, long long cycles)
{
	long long t0 = clock64();
	while (clock64() - t0 < cycles) ;
	if (threadIdx.x == 0) p[blockIdx.x] += 1.0f;
}

__global__ void go_kernel(volatile unsigned *go)
{
	while (*go == 0) ;
}

static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

static void report(const char *name, double *t, int n, double host)
{
	double s = 0;
	for (int i = 0; i < n; i++) s += t[i];
	qsort(t, n, sizeof *t, cmpd);
	printf("%-8s p50 %6.2f us  p90 %6.2f us  mean %6.2f us  host call %5.2f us\n", name, t[n / 2], t[n * 9 / 10], s / n, host / n);
}

int main(int argc, char **argv)
{
	long long us = argc > 1 ? atoll(argv[1]) : 2;
	cudaStream_t s[LANES];
	cudaGraphExec_t ex[4][LANES];
	unsigned *flag, *go;
	CUdeviceptr dflag, dgo;
	float *dev[LANES];
	int clk;
	static double t[RUNS];

	CK(cudaSetDevice(0));
	CK(cudaDeviceGetAttribute(&clk, cudaDevAttrClockRate, 0));
	CK(cudaHostAlloc((void **)&flag, 4096, cudaHostAllocMapped));
	CK(cudaHostAlloc((void **)&go, 4096, cudaHostAllocMapped));
	memset(flag, 0, 4096); memset(go, 0, 4096);
	CK(cudaHostGetDevicePointer((void **)&dflag, flag, 0));
	CK(cudaHostGetDevicePointer((void **)&dgo, go, 0));
	for (int l = 0; l < LANES; l++) {
		CK(cudaStreamCreateWithFlags(&s[l], cudaStreamNonBlocking));
		CK(cudaMalloc((void **)&dev[l], 16384));
		for (int m = 0; m < 4; m++) {
			cudaGraph_t g;
			CK(cudaStreamBeginCapture(s[l], cudaStreamCaptureModeThreadLocal));
			if (m == 1)
				CU(cuStreamWaitValue32((CUstream)s[l], dgo + 64 * l, 1, CU_STREAM_WAIT_VALUE_GEQ));
			if (m == 2)
				go_kernel<<<1, 1, 0, s[l]>>>((volatile unsigned *)(go + 16 * l));
			spin_kernel<<<4, 128, 0, s[l]>>>(dev[l], us * clk / 1000);
			if (m != 3)
				CU(cuStreamWriteValue32((CUstream)s[l], dflag + 64 * l, 1, 0));
			CK(cudaStreamEndCapture(s[l], &g));
			CK(cudaGraphInstantiate(&ex[m][l], g, 0));
			CK(cudaGraphDestroy(g));
		}
	}
	for (int rep = 0; rep < 2; rep++) {
		/* launch */
		double host = 0;
		for (int i = 0; i < RUNS; i++) {
			int l = i % LANES;
			volatile unsigned *f = flag + 16 * l;
			*f = 0;
			double t0 = now_us();
			CK(cudaGraphLaunch(ex[0][l], s[l]));
			host += now_us() - t0;
			while (*f != 1) ;
			t[i] = now_us() - t0;
		}
		report("launch", t, RUNS, host);
		host = 0;
		for (int i = 0; i < RUNS; i++) {
			int l = i % LANES;
			volatile unsigned *f = flag + 16 * l;
			*f = 0;
			double t0 = now_us();
			CK(cudaGraphLaunch(ex[3][l], s[l]));
			CU(cuStreamWriteValue32((CUstream)s[l], dflag + 64 * l, 1, 0));
			host += now_us() - t0;
			while (*f != 1) ;
			t[i] = now_us() - t0;
		}
		report("launch+w", t, RUNS, host);
		for (int m = 1; m < 3; m++) {
			host = 0;
			for (int l = 0; l < LANES; l++) {
				flag[16 * l] = 0; go[16 * l] = 0;
				CK(cudaGraphLaunch(ex[m][l], s[l]));
			}
			/* let every lane reach its wait */
			double w = now_us(); while (now_us() - w < 200) ;
			for (int i = 0; i < RUNS; i++) {
				int l = i % LANES;
				volatile unsigned *f = flag + 16 * l;
				volatile unsigned *gw = go + 16 * l;
				double t0 = now_us();
				__atomic_store_n((unsigned *)gw, 1u, __ATOMIC_RELEASE);
				while (*f != 1) ;
				t[i] = now_us() - t0;
				/* re-arm this lane: it is done */
				*f = 0; *gw = 0;
				double t1 = now_us();
				if (i + LANES < RUNS)
					CK(cudaGraphLaunch(ex[m][l], s[l]));
				host += now_us() - t1;
				/* the next lane fired was armed 7 runs ago */
			}
			report(m == 1 ? "wait" : "spin", t, RUNS, host);
		}
		CK(cudaDeviceSynchronize());
	}
	return 0;
}
