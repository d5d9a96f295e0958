/*
 * gemmconc: for the transformer's four linears (FP32, as agxqd runs them
 * on cuBLASLt with the bias and ReLU in the epilogue), each algorithm the
 * heuristic offers timed two ways: alone (one stream, launches back to
 * back) and under the overlap agxqd's lanes give (S streams launching at
 * once, each its own output and workspace). agxqd times alone and keeps
 * the fastest; this says whether another pick would serve 8 lanes better.
 *
 * nvcc -O2 -arch=sm_90 gemmconc.cu -lcublasLt -o gemmconc
 * ./gemmconc [streams] [rows...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <cublasLt.h>
#include <cuda_runtime.h>

#define CK(x) do { if ((x) != 0) { fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, #x); exit(1); } } while (0)
#define NALGO 32
#define RUNS 40
#define MAXS 16

struct shape { const char *name; int in, out, relu; };

static cublasLtHandle_t lt;
static cudaStream_t st[MAXS];
static float *y[MAXS];
static void *ws[MAXS];
static size_t wsz = 32u << 20;

static int
launch(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
    cublasLtMatrixLayout_t c, const cublasLtMatmulAlgo_t *al, const float *w,
    const float *x, int s)
{
	const float one = 1, zero = 0;
	return cublasLtMatmul(lt, d, &one, w, a, x, b, &zero, y[s], c, y[s], c,
	    al, ws[s], wsz, st[s]);
}

/*
 * µs per GEMM with ns streams running RUNS each at once, best of 3. The
 * launches are captured in one CUDA graph (forked to the streams and
 * joined), as agxqd replays its passes, so that the host's cost of
 * cublasLtMatmul (about 11 µs a call) does not set the pace.
 */
static float
timeit(int ns, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
    cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
    const cublasLtMatmulAlgo_t *al, const float *w, const float *x)
{
	cudaEvent_t e0, e1, fork, ev[MAXS];
	cudaGraph_t g;
	cudaGraphExec_t ge;
	float best = 1e30f, ms;
	int bad = 0;

	CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
	CK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
	for (int s = 0; s < ns; s++) CK(cudaEventCreateWithFlags(&ev[s], cudaEventDisableTiming));
	for (int s = 0; s < ns; s++)
		if (launch(d, a, b, c, al, w, x, s) != 0) return -1;
	CK(cudaDeviceSynchronize());
	CK(cudaStreamBeginCapture(st[0], cudaStreamCaptureModeThreadLocal));
	CK(cudaEventRecord(fork, st[0]));
	for (int s = 1; s < ns; s++) CK(cudaStreamWaitEvent(st[s], fork, 0));
	for (int i = 0; i < RUNS; i++)
		for (int s = 0; s < ns; s++)
			if (launch(d, a, b, c, al, w, x, s) != 0) bad = 1;
	for (int s = 1; s < ns; s++) {
		CK(cudaEventRecord(ev[s], st[s]));
		CK(cudaStreamWaitEvent(st[0], ev[s], 0));
	}
	CK(cudaStreamEndCapture(st[0], &g));
	if (bad) { cudaGraphDestroy(g); return -1; }
	CK(cudaGraphInstantiate(&ge, g, 0));
	CK(cudaGraphLaunch(ge, st[0]));
	CK(cudaStreamSynchronize(st[0]));
	for (int rep = 0; rep < 3; rep++) {
		CK(cudaEventRecord(e0, st[0]));
		CK(cudaGraphLaunch(ge, st[0]));
		CK(cudaEventRecord(e1, st[0]));
		CK(cudaEventSynchronize(e1));
		CK(cudaEventElapsedTime(&ms, e0, e1));
		if (ms < best) best = ms;
	}
	cudaGraphExecDestroy(ge); cudaGraphDestroy(g);
	cudaEventDestroy(e0); cudaEventDestroy(e1); cudaEventDestroy(fork);
	for (int s = 0; s < ns; s++) cudaEventDestroy(ev[s]);
	return best * 1000.0f / (RUNS * ns);
}

int
main(int argc, char **argv)
{
	struct shape sh[] = { { "qkv", 256, 768, 0 }, { "proj", 256, 256, 0 },
	    { "ff1", 256, 2048, 1 }, { "ff2", 2048, 256, 0 } };
	int ns = argc > 1 ? atoi(argv[1]) : 8;
	int rowsv[8] = { 128, 256, 512, 1024 }, nrows = 4;
	float *w, *x, *bias;

	if (argc > 2) { nrows = 0; for (int i = 2; i < argc && nrows < 8; i++) rowsv[nrows++] = atoi(argv[i]); }
	CK(cublasLtCreate(&lt));
	CK(cudaMalloc(&w, 2048 * 2048 * 4)); CK(cudaMalloc(&x, 1024 * 2048 * 4));
	CK(cudaMalloc(&bias, 2048 * 4));
	CK(cudaMemset(w, 0, 2048 * 2048 * 4)); CK(cudaMemset(x, 0, 1024 * 2048 * 4));
	CK(cudaMemset(bias, 0, 2048 * 4));
	for (int s = 0; s < MAXS; s++) {
		CK(cudaStreamCreateWithFlags(&st[s], cudaStreamNonBlocking));
		CK(cudaMalloc(&y[s], 1024 * 2048 * 4)); CK(cudaMalloc(&ws[s], wsz));
	}
	printf("streams %d; us per GEMM: alone (1 stream) / %d streams at once\n", ns, ns);
	for (int r = 0; r < nrows; r++) for (unsigned k = 0; k < sizeof sh / sizeof sh[0]; k++) {
		int rows = rowsv[r];
		cublasLtMatmulDesc_t d; cublasLtMatrixLayout_t a, b, c;
		cublasOperation_t opt = CUBLAS_OP_T, opn = CUBLAS_OP_N;
		cublasLtEpilogue_t epi = sh[k].relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
		cublasLtMatmulPreference_t pref;
		cublasLtMatmulHeuristicResult_t res[NALGO];
		int n = 0, ba = -1, bc = -1;
		float ta[NALGO], tc[NALGO];

		CK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
		CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &opt, sizeof opt));
		CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &opn, sizeof opn));
		CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
		CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
		CK(cublasLtMatrixLayoutCreate(&a, CUDA_R_32F, sh[k].in, sh[k].out, sh[k].in));
		CK(cublasLtMatrixLayoutCreate(&b, CUDA_R_32F, sh[k].in, rows, sh[k].in));
		CK(cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, sh[k].out, rows, sh[k].out));
		CK(cublasLtMatmulPreferenceCreate(&pref));
		CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz));
		CK(cublasLtMatmulAlgoGetHeuristic(lt, d, a, b, c, c, pref, NALGO, res, &n));
		printf("\n%s rows %d (in %d out %d): %d candidates\n", sh[k].name, rows, sh[k].in, sh[k].out, n);
		for (int i = 0; i < n; i++) {
			int tile = -1, sk = -1, st_ = -1, id = -1;
			size_t sz;
			cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &sz);
			cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &sz);
			cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk, &sz);
			cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &st_, sizeof st_, &sz);
			ta[i] = timeit(1, d, a, b, c, &res[i].algo, w, x);
			tc[i] = timeit(ns, d, a, b, c, &res[i].algo, w, x);
			(void)cudaGetLastError();
			printf("  #%2d id %3d tile %3d splitk %2d stages %3d ws %8zu: alone %7.2f  conc %7.2f\n",
			    i, id, tile, sk, st_, res[i].workspaceSize, ta[i], tc[i]);
			if (ta[i] > 0 && (ba < 0 || ta[i] < ta[ba])) ba = i;
			if (tc[i] > 0 && (bc < 0 || tc[i] < tc[bc])) bc = i;
		}
		if (ba >= 0 && bc >= 0)
			printf("  best alone #%d (%.2f alone, %.2f conc); best conc #%d (%.2f alone, %.2f conc): conc gain %.2fx\n",
			    ba, ta[ba], tc[ba], bc, ta[bc], tc[bc], tc[ba] / tc[bc]);
		cublasLtMatmulPreferenceDestroy(pref);
		cublasLtMatrixLayoutDestroy(a); cublasLtMatrixLayoutDestroy(b); cublasLtMatrixLayoutDestroy(c);
		cublasLtMatmulDescDestroy(d);
	}
	return 0;
}
