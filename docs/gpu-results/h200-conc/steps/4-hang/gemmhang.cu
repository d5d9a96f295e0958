/*
 * gemmhang: which cuBLASLt algorithms for linear(256, 128) at 4 rows (bias
 * epilogue, FP32) finish and which hang, by how they are run:
 *   conc32   8 streams at once, each its own 32 MiB workspace, zeroed
 *   concx    8 streams at once, each a workspace of exactly the size the
 *            heuristic reports, zeroed
 *   garbage  1 stream, a workspace of exactly that size full of 0x3f bytes
 *   graph8   as concx, the launches captured in one graph (forked to the
 *            8 streams and joined) and the graph launched: truly at once
 *   graph8h  as graph8 with a cuBLASLt handle per stream
 *   graph8w  as graph8 with 32 MiB workspaces
 * One candidate per process (a hung kernel only dies with its context):
 *   gemmhang MODE INDEX   prints the candidate and "done" or nothing.
 * nvcc -O2 -arch=sm_90 gemmhang.cu -lcublasLt -o gemmhang
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cublasLt.h>
#include <cuda_runtime.h>

#define CK(x) do { if ((x) != 0) { fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, #x); exit(2); } } while (0)

int
main(int argc, char **argv)
{
	const char *mode = argv[1];
	int idx = atoi(argv[2]), rows = argc > 3 ? atoi(argv[3]) : 4;
	int in = 256, out = 128, n = 0, ns;
	cublasLtHandle_t lt;
	cublasLtMatmulDesc_t d;
	cublasLtMatrixLayout_t a, b, c;
	cublasOperation_t opt = CUBLAS_OP_T, opn = CUBLAS_OP_N;
	cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
	cublasLtMatmulPreference_t pref;
	cublasLtMatmulHeuristicResult_t res[32];
	size_t wsz = 32u << 20, sz, use;
	float *w, *x, *bias, *y[8];
	char *ws[8];
	cudaStream_t st[8];
	const float one = 1, zero = 0;
	int id, tile, sk, red, co;

	CK(cublasLtCreate(&lt));
	CK(cudaMalloc(&w, in * out * 4)); CK(cudaMalloc(&x, rows * in * 4));
	CK(cudaMalloc(&bias, out * 4));
	CK(cudaMemset(w, 0, in * out * 4)); CK(cudaMemset(x, 0, rows * in * 4));
	CK(cudaMemset(bias, 0, out * 4));
	CK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
	CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &opt, sizeof opt));
	CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &opn, sizeof opn));
	CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
	CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
	CK(cublasLtMatrixLayoutCreate(&a, CUDA_R_32F, in, out, in));
	CK(cublasLtMatrixLayoutCreate(&b, CUDA_R_32F, in, rows, in));
	CK(cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, out, rows, out));
	CK(cublasLtMatmulPreferenceCreate(&pref));
	CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz));
	CK(cublasLtMatmulAlgoGetHeuristic(lt, d, a, b, c, c, pref, 32, res, &n));
	if (idx >= n) { printf("n %d\n", n); return 3; }
	cublasLtMatmulAlgoConfigGetAttribute(&res[idx].algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &sz);
	cublasLtMatmulAlgoConfigGetAttribute(&res[idx].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &sz);
	cublasLtMatmulAlgoConfigGetAttribute(&res[idx].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk, &sz);
	cublasLtMatmulAlgoConfigGetAttribute(&res[idx].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &sz);
	cublasLtMatmulAlgoConfigGetAttribute(&res[idx].algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &co, sizeof co, &sz);
	printf("%s rows %d #%d of %d: id %d tile %d splitk %d red %d custom %d ws %zu: ",
	    mode, rows, idx, n, id, tile, sk, red, co, res[idx].workspaceSize);
	fflush(stdout);
	ns = strcmp(mode, "garbage") == 0 ? 1 : 8;
	cublasLtHandle_t lts[8];
	for (int s = 0; s < 8; s++) {
		if (strcmp(mode, "graph8h") == 0)
			CK(cublasLtCreate(&lts[s]));
		else
			lts[s] = lt;
	}
	use = strcmp(mode, "conc32") == 0 || strcmp(mode, "graph8w") == 0 ? wsz : res[idx].workspaceSize;
	for (int s = 0; s < ns; s++) {
		CK(cudaStreamCreateWithFlags(&st[s], cudaStreamNonBlocking));
		CK(cudaMalloc(&y[s], rows * out * 4));
		CK(cudaMalloc(&ws[s], use > 0 ? use : 256));
		CK(cudaMemset(ws[s], strcmp(mode, "garbage") == 0 ? 0x3f : 0, use > 0 ? use : 256));
	}
	CK(cudaDeviceSynchronize());
	if (strncmp(mode, "graph8", 6) == 0) {
		cudaEvent_t fork, join[8];
		cudaGraph_t g;
		cudaGraphExec_t ge;
		CK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
		for (int s = 0; s < 8; s++) CK(cudaEventCreateWithFlags(&join[s], cudaEventDisableTiming));
		CK(cudaStreamBeginCapture(st[0], cudaStreamCaptureModeThreadLocal));
		CK(cudaEventRecord(fork, st[0]));
		for (int s = 1; s < 8; s++) CK(cudaStreamWaitEvent(st[s], fork, 0));
		for (int r = 0; r < 4; r++)
			for (int s = 0; s < 8; s++)
				CK(cublasLtMatmul(lts[s], d, &one, w, a, x, b, &zero, y[s], c, y[s], c,
				    &res[idx].algo, ws[s], use, st[s]));
		for (int s = 1; s < 8; s++) { CK(cudaEventRecord(join[s], st[s])); CK(cudaStreamWaitEvent(st[0], join[s], 0)); }
		CK(cudaStreamEndCapture(st[0], &g));
		CK(cudaGraphInstantiate(&ge, g, 0));
		for (int r = 0; r < 20; r++) CK(cudaGraphLaunch(ge, st[0]));
		CK(cudaDeviceSynchronize());
		printf("done\n");
		return 0;
	}
	for (int r = 0; r < 50; r++)
		for (int s = 0; s < ns; s++)
			CK(cublasLtMatmul(lt, d, &one, w, a, x, b, &zero, y[s], c, y[s], c,
			    &res[idx].algo, ws[s], use, st[s]));
	CK(cudaDeviceSynchronize());
	printf("done\n");
	return 0;
}
