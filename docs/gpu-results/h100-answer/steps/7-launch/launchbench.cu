/*
 * launchbench: what a cudaGraphLaunch costs the calling thread, alone and
 * with other graphs in flight, with a tiny graph (one kernel) and one like
 * a linear batch's (copy in, kernel, copy out). An experiment for
 * docs/GPU.md, not part of the build:
 *   nvcc -O2 -o launchbench launchbench.cu
 *   ./launchbench [spin_us_per_kernel]
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define LANES 8
#define RUNS 4000

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

__global__ void
spin_kernel(float *p, long long cycles)
{
	long long t0 = clock64();

	while (clock64() - t0 < cycles)
		;
	if (threadIdx.x == 0)
		p[blockIdx.x] += 1.0f;
}

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } } while (0)

/* Captures one graph per lane: [copy in,] kernel [, copy out]. */
static void
make_graphs(cudaStream_t *s, cudaGraphExec_t *ex, float **dev, float *host,
    int copies, long long cycles)
{
	for (int l = 0; l < LANES; l++) {
		cudaGraph_t g;

		CK(cudaStreamBeginCapture(s[l], cudaStreamCaptureModeThreadLocal));
		if (copies)
			CK(cudaMemcpyAsync(dev[l], host + l * 4096, 16384,
			    cudaMemcpyHostToDevice, s[l]));
		spin_kernel<<<4, 128, 0, s[l]>>>(dev[l], cycles);
		if (copies)
			CK(cudaMemcpyAsync(host + l * 4096, dev[l], 2048,
			    cudaMemcpyDeviceToHost, s[l]));
		CK(cudaStreamEndCapture(s[l], &g));
		CK(cudaGraphInstantiate(&ex[l], g, 0));
		CK(cudaGraphDestroy(g));
	}
}

/*
 * Launches RUNS graphs going round the lanes with at most `depth` in
 * flight (waiting for the oldest by polling its event), and returns the
 * mean microseconds spent in cudaGraphLaunch, and in cudaEventQuery calls.
 */
static void
run(const char *label, cudaStream_t *s, cudaEvent_t *ev, cudaGraphExec_t *ex,
    int depth)
{
	double tl = 0, tq = 0, t0, t1, wall = now_us();
	long nq = 0;
	int head = 0, inflight = 0;

	for (int i = 0; i < RUNS; i++) {
		int l = i % LANES;

		while (inflight >= depth) {
			cudaError_t e;

			t0 = now_us();
			e = cudaEventQuery(ev[head]);
			tq += now_us() - t0;
			nq++;
			if (e == cudaSuccess) {
				head = (head + 1) % LANES;
				inflight--;
			} else if (e != cudaErrorNotReady)
				CK(e);
		}
		t0 = now_us();
		CK(cudaGraphLaunch(ex[l], s[l]));
		t1 = now_us();
		tl += t1 - t0;
		CK(cudaEventRecord(ev[l], s[l]));
		inflight++;
	}
	CK(cudaDeviceSynchronize());
	wall = now_us() - wall;
	printf("%-40s launch %5.2f us, event query %5.2f us (%ld), %6.1f us a run\n",
	    label, tl / RUNS, nq ? tq / nq : 0.0, nq, wall / RUNS);
}

int
main(int argc, char **argv)
{
	long long us = argc > 1 ? atoll(argv[1]) : 10;
	cudaStream_t s[LANES];
	cudaEvent_t ev[LANES];
	cudaGraphExec_t tiny[LANES], lin[LANES];
	float *dev[LANES], *host;
	int clk;

	CK(cudaSetDevice(0));
	CK(cudaDeviceGetAttribute(&clk, cudaDevAttrClockRate, 0));
	CK(cudaHostAlloc((void **)&host, LANES * 16384, cudaHostAllocMapped));
	for (int l = 0; l < LANES; l++) {
		CK(cudaStreamCreateWithFlags(&s[l], cudaStreamNonBlocking));
		CK(cudaEventCreateWithFlags(&ev[l], cudaEventDisableTiming));
		CK(cudaMalloc((void **)&dev[l], 16384));
	}
	make_graphs(s, tiny, dev, host, 0, us * clk / 1000);
	make_graphs(s, lin, dev, host, 1, us * clk / 1000);
	for (int rep = 0; rep < 2; rep++) {
		run("kernel only, 1 in flight", s, ev, tiny, 1);
		run("kernel only, 8 in flight", s, ev, tiny, 8);
		run("copy+kernel+copy, 1 in flight", s, ev, lin, 1);
		run("copy+kernel+copy, 8 in flight", s, ev, lin, 8);
	}
	return 0;
}
