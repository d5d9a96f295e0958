/*
 * flagbench: how the executor can learn that a run on the GPU is over.
 * Each run is a one-kernel CUDA graph, launched going round 8 streams with
 * at most `depth` in flight; the host waits for the oldest run by
 *   event: cudaEventRecord after the launch, polled with cudaEventQuery
 *          (what agxqd's cuda backend does);
 *   value: cuStreamWriteValue32 of the run's number into mapped pinned
 *          memory after the launch, polled as a plain load;
 *   both:  value and event, polling the value (events kept for errors).
 * Prints the mean wall time a run, and the host time spent in the calls
 * after the launch and in the polls. An experiment for docs/GPU.md, not
 * part of the build:
 *   nvcc -O2 -o flagbench flagbench.cu
 *   ./flagbench [spin_us_per_kernel]
 */
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LANES 8
#define RUNS 4000

typedef CUresult (*write_value_fn)(CUstream, CUdeviceptr, cuuint32_t,
    unsigned int);

static write_value_fn write_value;

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

enum mode { EVENT, VALUE, BOTH };

static const char *mode_name[] = { "event", "value", "value+event" };

/* Whether lane l's run number seq is over, by the mode's way. */
static int
done(enum mode m, cudaEvent_t ev, volatile unsigned *flag, unsigned seq)
{
	cudaError_t e;

	if (m != EVENT)
		return *flag == seq;
	e = cudaEventQuery(ev);
	if (e != cudaSuccess && e != cudaErrorNotReady)
		CK(e);
	return e == cudaSuccess;
}

static void
run(enum mode m, int depth, cudaStream_t *s, cudaEvent_t *ev,
    cudaGraphExec_t *ex, volatile unsigned *flag, CUdeviceptr dflag)
{
	double tl = 0, tr = 0, tq = 0, t0, wall = now_us();
	unsigned seq[LANES];
	long nq = 0;
	int head = 0, inflight = 0;

	memset(seq, 0, sizeof seq);
	for (int l = 0; l < LANES; l++)
		flag[l] = 0;
	for (int i = 0; i < RUNS; i++) {
		int l = i % LANES;

		while (inflight >= depth) {
			int d;

			t0 = now_us();
			d = done(m, ev[head], &flag[head], seq[head]);
			tq += now_us() - t0;
			nq++;
			if (d) {
				head = (head + 1) % LANES;
				inflight--;
			}
		}
		t0 = now_us();
		CK(cudaGraphLaunch(ex[l], s[l]));
		tl += now_us() - t0;
		seq[l]++;
		t0 = now_us();
		if (m != EVENT && write_value((CUstream)s[l],
		    dflag + l * sizeof(unsigned), seq[l], 0) != CUDA_SUCCESS) {
			fprintf(stderr, "cuStreamWriteValue32 failed\n");
			exit(1);
		}
		if (m != VALUE)
			CK(cudaEventRecord(ev[l], s[l]));
		tr += now_us() - t0;
		inflight++;
	}
	while (inflight > 0) {
		if (done(m, ev[head], &flag[head], seq[head])) {
			head = (head + 1) % LANES;
			inflight--;
		}
	}
	wall = now_us() - wall;
	CK(cudaDeviceSynchronize());
	printf("%-12s %d in flight: %6.2f us a run; launch %5.2f us, "
	    "record %5.2f us, poll %5.2f us x %.1f a run\n", mode_name[m],
	    depth, wall / RUNS, tl / RUNS, tr / RUNS, nq ? tq / nq : 0.0,
	    (double)nq / RUNS);
}

int
main(int argc, char **argv)
{
	long long us = argc > 1 ? atoll(argv[1]) : 10;
	cudaStream_t s[LANES];
	cudaEvent_t ev[LANES];
	cudaGraphExec_t ex[LANES];
	cudaDriverEntryPointQueryResult q;
	unsigned *flag;
	float *dev[LANES];
	void *dflag;
	int clk;

	CK(cudaSetDevice(0));
	CK(cudaDeviceGetAttribute(&clk, cudaDevAttrClockRate, 0));
	CK(cudaGetDriverEntryPointByVersion("cuStreamWriteValue32",
	    (void **)&write_value, 12000, cudaEnableDefault, &q));
	if (q != cudaDriverEntryPointSuccess) {
		fprintf(stderr, "no cuStreamWriteValue32\n");
		return 1;
	}
	CK(cudaHostAlloc((void **)&flag, 4096, cudaHostAllocMapped));
	CK(cudaHostGetDevicePointer(&dflag, flag, 0));
	for (int l = 0; l < LANES; l++) {
		cudaGraph_t g;

		CK(cudaStreamCreateWithFlags(&s[l], cudaStreamNonBlocking));
		CK(cudaEventCreateWithFlags(&ev[l], cudaEventDisableTiming));
		CK(cudaMalloc((void **)&dev[l], 16384));
		CK(cudaStreamBeginCapture(s[l], cudaStreamCaptureModeThreadLocal));
		spin_kernel<<<4, 128, 0, s[l]>>>(dev[l], us * clk / 1000);
		CK(cudaStreamEndCapture(s[l], &g));
		CK(cudaGraphInstantiate(&ex[l], g, 0));
		CK(cudaGraphDestroy(g));
	}
	for (int rep = 0; rep < 2; rep++)
		for (int depth = 1; depth <= 8; depth += 7)
			for (int m = EVENT; m <= BOTH; m++)
				run((enum mode)m, depth, s, ev, ex, flag,
				    (CUdeviceptr)dflag);
	return 0;
}
