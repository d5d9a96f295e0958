/*
 * cuda_gemm: linear layers on cuBLASLt with the bias and ReLU in the
 * epilogue, one plan per shape, its algorithm timed once.
 *
 * Why timed: cublasSgemm's own choice for a linear(256, 128) on an H200
 * (CUDA 13.0) ran 8 and 16 rows 4x slower than 32 rows (docs/GPU.md), and
 * cuBLASLt's heuristic orders its candidates by a model of the GPU, not by
 * measurement. The first run of a shape outside a graph capture times each
 * candidate and keeps the fastest; a plan first needed during a capture
 * takes the heuristic's first choice and is timed at its next eager run.
 *
 * How timed: each candidate's launches are captured in a CUDA graph, run
 * at once on `overlap' streams (AGXQ_CUDA_LT_OVERLAP), and the one taking
 * the least device time per product wins. The graph keeps the host's cost
 * of cublasLtMatmul (about 11 us a call on an H200, more than most of
 * these products take) out of the timing; the streams time each algorithm
 * under the overlap agxqd's lanes give, where on an H200 the fastest alone
 * was up to 1.4x slower than the best (docs/GPU.md). The timing writes
 * outputs and workspaces of its own (a scratch held for the next timing),
 * never the run's own output; the outputs lie where the run's does (mapped
 * host memory or the device), since writing across the bus may favour
 * another kernel, and the input is the run's own. Each
 * candidate is timed GEMM_TIME_REPS times, the candidates taking turns,
 * and its best time counts: a candidate timed while the device or the bus
 * was briefly slower is not judged by that alone. (Three rounds chose
 * alike in three processes on an H100, and made the first pass of a new
 * size up to 46% longer than two rounds of the old, consecutive timing:
 * docs/GPU.md, 2026-12-07. Two rounds of turns would cost less; not
 * measured yet.)
 *
 * Shared within a range of rows (AGXQ_CUDA_LT_SHARE, on by default): a
 * shape whose rows fall in the same power-of-two range (3-4, 5-8, 9-16,
 * ...) as one timed before, the rest of it alike (in, out, epilogue,
 * pointers' alignment, where the output lies), takes that one's algorithm
 * untimed where cuBLASLt accepts it for the new shape
 * (cublasLtMatmulAlgoCheck). Each timing holds the executor, and every
 * client with it, for milliseconds; sharing bounds the timings of one
 * linear to one a range instead of one a batch size.
 *
 * AGXQ_CUDA_LT_REPORT=PATH appends a line to PATH for each shape timed:
 * the shape, where its input and output lie, each candidate's
 * configuration and time, and the one chosen; and one for each shape that
 * shares another's choice.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>

#include "cuda_gemm.h"

#define GEMM_PLANS 256       /* cached shapes; the least recently used goes */
#define GEMM_TIME_RUNS 4     /* runs per stream per timing */
#define GEMM_TIME_REPS 3     /* timings per candidate; the best counts */
#define GEMM_SCRATCH_ALIGN 256
#define GEMM_SCRATCH_MAX (64u << 20) /* bytes of the timing streams' scratch */
#define GEMM_HSCRATCH_MAX (16u << 20) /* of their outputs in host memory */

/*
 * What a plan is for: a shape, its epilogue and its pointers' alignment
 * (the heuristic only offers algorithms those pointers allow; it reads the
 * bias pointer's from the descriptor).
 */
struct gemm_key {
	int64_t rows, in, out;
	int tf32, relu, bias;
	uint32_t align_x, align_y, align_w, align_b;
};

/* One shape's descriptors and chosen algorithm. */
struct gemm_plan {
	struct gemm_key key;
	int timed;
	int nogo;                   /* cuBLASLt has no algorithm for it */
	int64_t chosen_rows;        /* algo was timed at these rows (this
				       plan's, or another's it shares); 0: not
				       timed, the heuristic's */
	int host_y;                 /* with chosen_rows: the timed outputs lay
				       in host memory */
	uint64_t last;
	cublasLtMatmulDesc_t desc;
	cublasLtMatrixLayout_t a, b, d;
	cublasLtMatmulAlgo_t algo;
};

struct cuda_gemm {
	cublasLtHandle_t lt;
	cudaEvent_t t0, t1;
	int candidates;             /* algorithms timed per shape; 1: none */
	int overlap;                /* streams a candidate is timed on */
	int share;                  /* AGXQ_CUDA_LT_SHARE: a range of rows
				       shares one timing */
	cudaStream_t ts[CUDA_GEMM_OVERLAP_MAX];
	cudaEvent_t fork, join[CUDA_GEMM_OVERLAP_MAX];
	char *scratch;              /* the timing streams' outputs and
				       workspaces, in device memory */
	size_t scratch_size;
	char *hscratch;             /* their outputs when the run's lies in
				       host memory: mapped, pinned */
	size_t hscratch_size;
	FILE *report;               /* AGXQ_CUDA_LT_REPORT, or NULL */
	struct gemm_plan plan[GEMM_PLANS];
	uint32_t nplans;
	uint64_t tick;
};

/* Sets *cause to "cuda: what failed: status". */
static int
gemm_fail(char **cause, const char *what, cublasStatus_t s)
{
	if (cause != NULL && asprintf(cause, "cuda: %s failed: %s", what,
	    cublasGetStatusString(s)) == -1)
		*cause = NULL;
	return -1;
}

/* Largest power of two up to 256 that divides p's address. */
static uint32_t
gemm_align(const void *p)
{
	uintptr_t a = (uintptr_t)p;
	uint32_t al = 256;

	while (al > 4 && a % al != 0)
		al >>= 1;
	return al;
}

/*
 * Creates the cuBLASLt handle and the timing events and streams, and opens
 * report (a path, or NULL) for appending.
 */
int
cuda_gemm_open(struct cuda_gemm **out, int candidates, int overlap,
    int share, const char *report, char **cause)
{
	struct cuda_gemm *gm;
	cublasStatus_t s;
	cudaError_t err;

	if ((gm = calloc(1, sizeof *gm)) == NULL) {
		if (cause != NULL)
			*cause = strdup("cuda: out of memory");
		return -1;
	}
	/*
	 * How many of the heuristic's algorithms the first run of a shape
	 * times (AGXQ_CUDA_LT_CANDIDATES); 1 takes its first choice untimed
	 * (on an H200 that ran linear and mlp at 16 rows 3x slower;
	 * docs/GPU.md). Timing costs the first run of a new batch size a few
	 * milliseconds; fewer candidates cost less and may miss the fastest.
	 */
	gm->candidates = candidates < 1 ? 1 : candidates >
	    CUDA_GEMM_CANDIDATES_MAX ? CUDA_GEMM_CANDIDATES_MAX : candidates;
	gm->overlap = overlap < 1 ? 1 : overlap > CUDA_GEMM_OVERLAP_MAX ?
	    CUDA_GEMM_OVERLAP_MAX : overlap;
	gm->share = share != 0;
	if (report != NULL && (gm->report = fopen(report, "a")) == NULL) {
		if (cause != NULL && asprintf(cause, "cuda: AGXQ_CUDA_LT_REPORT: "
		    "cannot open \"%s\" for appending: %s", report,
		    strerror(errno)) == -1)
			*cause = NULL;
		free(gm);
		return -1;
	}
	if ((s = cublasLtCreate(&gm->lt)) != CUBLAS_STATUS_SUCCESS) {
		if (gm->report != NULL)
			fclose(gm->report);
		free(gm);
		return gemm_fail(cause, "cublasLtCreate", s);
	}
	if ((err = cudaEventCreate(&gm->t0)) != cudaSuccess ||
	    (err = cudaEventCreate(&gm->t1)) != cudaSuccess ||
	    (err = cudaEventCreateWithFlags(&gm->fork,
	    cudaEventDisableTiming)) != cudaSuccess)
		goto fail;
	for (int i = 0; i < gm->overlap; i++) {
		if ((err = cudaStreamCreateWithFlags(&gm->ts[i],
		    cudaStreamNonBlocking)) != cudaSuccess ||
		    (err = cudaEventCreateWithFlags(&gm->join[i],
		    cudaEventDisableTiming)) != cudaSuccess)
			goto fail;
	}
	*out = gm;
	return 0;

fail:
	if (cause != NULL && asprintf(cause, "cuda: creating cuBLASLt's "
	    "timing events and streams failed: %s",
	    cudaGetErrorString(err)) == -1)
		*cause = NULL;
	cuda_gemm_close(gm);
	return -1;
}

/* Destroys a plan's descriptors. */
static void
gemm_plan_clear(struct gemm_plan *p)
{
	if (p->desc != NULL)
		cublasLtMatmulDescDestroy(p->desc);
	if (p->a != NULL)
		cublasLtMatrixLayoutDestroy(p->a);
	if (p->b != NULL)
		cublasLtMatrixLayoutDestroy(p->b);
	if (p->d != NULL)
		cublasLtMatrixLayoutDestroy(p->d);
	memset(p, 0, sizeof *p);
}

/* Releases everything; NULL is fine. */
void
cuda_gemm_close(struct cuda_gemm *gm)
{
	if (gm == NULL)
		return;
	for (uint32_t i = 0; i < gm->nplans; i++)
		gemm_plan_clear(&gm->plan[i]);
	if (gm->t0 != NULL)
		cudaEventDestroy(gm->t0);
	if (gm->t1 != NULL)
		cudaEventDestroy(gm->t1);
	if (gm->fork != NULL)
		cudaEventDestroy(gm->fork);
	for (int i = 0; i < CUDA_GEMM_OVERLAP_MAX; i++) {
		if (gm->ts[i] != NULL)
			cudaStreamDestroy(gm->ts[i]);
		if (gm->join[i] != NULL)
			cudaEventDestroy(gm->join[i]);
	}
	if (gm->scratch != NULL)
		cudaFree(gm->scratch);
	if (gm->hscratch != NULL)
		cudaFreeHost(gm->hscratch);
	if (gm->report != NULL)
		fclose(gm->report);
	if (gm->lt != NULL)
		cublasLtDestroy(gm->lt);
	free(gm);
}

/* A column-major rows x cols FP32 layout, packed; 0 or -1 with *cause. */
static int
gemm_layout(cublasLtMatrixLayout_t *l, int64_t rows, int64_t cols,
    char **cause)
{
	cublasStatus_t s;

	s = cublasLtMatrixLayoutCreate(l, CUDA_R_32F, (uint64_t)rows,
	    (uint64_t)cols, rows);
	if (s != CUBLAS_STATUS_SUCCESS) {
		*l = NULL;
		return gemm_fail(cause, "cublasLtMatrixLayoutCreate", s);
	}
	return 0;
}

/* Fills in p's descriptors for key k; 0 or -1 with *cause. */
static int
gemm_plan_make(struct gemm_plan *p, const struct gemm_key *k, char **cause)
{
	cublasOperation_t opt = CUBLAS_OP_T, opn = CUBLAS_OP_N;
	cublasLtEpilogue_t epi;
	cublasStatus_t s;

	memset(p, 0, sizeof *p);
	p->key = *k;
	if ((s = cublasLtMatmulDescCreate(&p->desc, k->tf32 ?
	    CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F)) !=
	    CUBLAS_STATUS_SUCCESS) {
		p->desc = NULL;
		return gemm_fail(cause, "cublasLtMatmulDescCreate", s);
	}
	if (k->relu && k->bias)
		epi = CUBLASLT_EPILOGUE_RELU_BIAS;
	else if (k->relu)
		epi = CUBLASLT_EPILOGUE_RELU;
	else if (k->bias)
		epi = CUBLASLT_EPILOGUE_BIAS;
	else
		epi = CUBLASLT_EPILOGUE_DEFAULT;
	/*
	 * Column-major, as cuBLAS sees our row-major tensors: D[out, rows] =
	 * op(A) B with A = w stored [in, out] and transposed, B = x [in, rows].
	 */
	if ((s = cublasLtMatmulDescSetAttribute(p->desc,
	    CUBLASLT_MATMUL_DESC_TRANSA, &opt, sizeof opt)) !=
	    CUBLAS_STATUS_SUCCESS ||
	    (s = cublasLtMatmulDescSetAttribute(p->desc,
	    CUBLASLT_MATMUL_DESC_TRANSB, &opn, sizeof opn)) !=
	    CUBLAS_STATUS_SUCCESS ||
	    (s = cublasLtMatmulDescSetAttribute(p->desc,
	    CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi)) !=
	    CUBLAS_STATUS_SUCCESS)
		return gemm_fail(cause, "cublasLtMatmulDescSetAttribute", s);
	if (gemm_layout(&p->a, k->in, k->out, cause) != 0 ||
	    gemm_layout(&p->b, k->in, k->rows, cause) != 0 ||
	    gemm_layout(&p->d, k->out, k->rows, cause) != 0)
		return -1;
	return 0;
}

/* Sets the run's bias pointer on p's descriptor. */
static int
gemm_set_bias(struct gemm_plan *p, const struct cuda_gemm_linear *a,
    char **cause)
{
	cublasStatus_t s;

	if (a->bias == NULL)
		return 0;
	s = cublasLtMatmulDescSetAttribute(p->desc,
	    CUBLASLT_MATMUL_DESC_BIAS_POINTER, &a->bias, sizeof a->bias);
	if (s != CUBLAS_STATUS_SUCCESS)
		return gemm_fail(cause, "cublasLtMatmulDescSetAttribute", s);
	return 0;
}

/* Enqueues the product with algorithm algo. */
static cublasStatus_t
gemm_launch(struct cuda_gemm *gm, struct gemm_plan *p,
    const cublasLtMatmulAlgo_t *algo, const struct cuda_gemm_linear *a)
{
	const float one = 1.0f, zero = 0.0f;

	return cublasLtMatmul(gm->lt, p->desc, &one, a->w, p->a, a->x, p->b,
	    &zero, a->y, p->d, a->y, p->d, algo, a->ws, a->ws_size, a->stream);
}

/* n rounded up to GEMM_SCRATCH_ALIGN. */
static size_t
gemm_round(size_t n)
{
	return (n + GEMM_SCRATCH_ALIGN - 1) / GEMM_SCRATCH_ALIGN *
	    GEMM_SCRATCH_ALIGN;
}

/* 1 when p lies in host memory the device reaches (pinned or registered). */
static int
gemm_on_host(const void *p)
{
	struct cudaPointerAttributes at;

	if (cudaPointerGetAttributes(&at, p) != cudaSuccess) {
		(void)cudaGetLastError();
		return 0;
	}
	return at.type == cudaMemoryTypeHost;
}

/*
 * Makes room in the scratch for the timing streams, each an output like
 * a's (*yslice bytes) and ws bytes of workspace (*wsslice), at most
 * GEMM_SCRATCH_MAX in all. Returns how many streams a timing may use:
 * gm->overlap, fewer for large products, 0 without room. With *host set
 * the outputs are also given room in mapped host memory (at most
 * GEMM_HSCRATCH_MAX); *host is cleared when they do not fit there, and
 * the timing writes them in device memory instead.
 */
static int
gemm_scratch(struct cuda_gemm *gm, const struct cuda_gemm_linear *a,
    size_t ws, int *host, size_t *yslice, size_t *wsslice)
{
	size_t per, need;
	int n;

	*yslice = gemm_round((size_t)a->rows * (size_t)a->out *
	    sizeof(float));
	*wsslice = gemm_round(ws);
	per = *yslice + *wsslice;
	if (per > GEMM_SCRATCH_MAX)
		return 0;
	n = gm->overlap;
	if ((size_t)n * per > GEMM_SCRATCH_MAX)
		n = (int)(GEMM_SCRATCH_MAX / per);
	need = (size_t)n * per;
	/* cudaFree waits for the device, as the timing does anyway. */
	if (need > gm->scratch_size) {
		if (gm->scratch != NULL)
			cudaFree(gm->scratch);
		gm->scratch_size = 0;
		if (cudaMalloc((void **)&gm->scratch, need) != cudaSuccess) {
			(void)cudaGetLastError();
			gm->scratch = NULL;
			return 0;
		}
		gm->scratch_size = need;
	}
	need = (size_t)n * *yslice;
	if (*host && need > GEMM_HSCRATCH_MAX)
		*host = 0;
	if (*host && need > gm->hscratch_size) {
		if (gm->hscratch != NULL)
			cudaFreeHost(gm->hscratch);
		gm->hscratch_size = 0;
		if (cudaHostAlloc((void **)&gm->hscratch, need,
		    cudaHostAllocMapped) != cudaSuccess) {
			(void)cudaGetLastError();
			gm->hscratch = NULL;
			*host = 0;
		} else
			gm->hscratch_size = need;
	}
	return n;
}

/*
 * A graph of algo's products as a timing runs them: GEMM_TIME_RUNS on
 * each of n streams at once, each stream writing its own output (in
 * mapped host memory with host set) and workspace in the scratch. NULL if
 * algo cannot run.
 */
static cudaGraphExec_t
gemm_graph(struct cuda_gemm *gm, struct gemm_plan *p,
    const cublasLtMatmulAlgo_t *algo, const struct cuda_gemm_linear *a,
    int n, int host, size_t yslice, size_t wsslice)
{
	struct cuda_gemm_linear b = *a;
	cudaGraph_t g = NULL;
	cudaGraphExec_t ge = NULL;
	int bad;

	if (cudaStreamBeginCapture(gm->ts[0],
	    cudaStreamCaptureModeThreadLocal) != cudaSuccess)
		return NULL;
	bad = cudaEventRecord(gm->fork, gm->ts[0]) != cudaSuccess;
	for (int s = 1; s < n && !bad; s++)
		bad = cudaStreamWaitEvent(gm->ts[s], gm->fork, 0) !=
		    cudaSuccess;
	for (int r = 0; r < GEMM_TIME_RUNS && !bad; r++) {
		for (int s = 0; s < n && !bad; s++) {
			char *slice = gm->scratch + (size_t)s *
			    (yslice + wsslice);

			b.stream = gm->ts[s];
			b.y = (float *)(host ? gm->hscratch + (size_t)s *
			    yslice : slice);
			b.ws = slice + yslice;
			b.ws_size = wsslice;
			bad = gemm_launch(gm, p, algo, &b) !=
			    CUBLAS_STATUS_SUCCESS;
		}
	}
	/* Joined even after a failure, so that the capture ends whole. */
	for (int s = 1; s < n; s++) {
		if (cudaEventRecord(gm->join[s], gm->ts[s]) != cudaSuccess ||
		    cudaStreamWaitEvent(gm->ts[0], gm->join[s], 0) !=
		    cudaSuccess)
			bad = 1;
	}
	if (cudaStreamEndCapture(gm->ts[0], &g) != cudaSuccess || bad ||
	    cudaGraphInstantiate(&ge, g, 0) != cudaSuccess)
		ge = NULL;
	if (g != NULL)
		cudaGraphDestroy(g);
	return ge;
}

/*
 * Device milliseconds per product of one launch of ge (gemm_graph's, on n
 * streams) on a's stream, the scratch's workspaces zeroed first: a
 * version that left each candidate the last one's workspace hung the GPU
 * once (docs/GPU.md). -1 if it failed.
 */
static float
gemm_time(struct cuda_gemm *gm, cudaGraphExec_t ge,
    const struct cuda_gemm_linear *a, int n, size_t yslice, size_t wsslice)
{
	float ms;

	if (cudaMemsetAsync(gm->scratch, 0, (size_t)n * (yslice + wsslice),
	    a->stream) != cudaSuccess ||
	    cudaEventRecord(gm->t0, a->stream) != cudaSuccess ||
	    cudaGraphLaunch(ge, a->stream) != cudaSuccess ||
	    cudaEventRecord(gm->t1, a->stream) != cudaSuccess ||
	    cudaEventSynchronize(gm->t1) != cudaSuccess ||
	    cudaEventElapsedTime(&ms, gm->t0, gm->t1) != cudaSuccess)
		return -1.0f;
	return ms / (float)(GEMM_TIME_RUNS * n);
}

/* Writes algo's configuration: "id/tile/stages/splitk/reduction". */
static void
gemm_algo_name(const cublasLtMatmulAlgo_t *algo, char *buf, size_t len)
{
	int32_t id = -1, splitk = 1;
	uint32_t tile = 0, stages = 0, red = 0;

	(void)cublasLtMatmulAlgoConfigGetAttribute(algo,
	    CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, NULL);
	(void)cublasLtMatmulAlgoConfigGetAttribute(algo,
	    CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, NULL);
	(void)cublasLtMatmulAlgoConfigGetAttribute(algo,
	    CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, NULL);
	(void)cublasLtMatmulAlgoConfigGetAttribute(algo,
	    CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, NULL);
	(void)cublasLtMatmulAlgoConfigGetAttribute(algo,
	    CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, NULL);
	snprintf(buf, len, "%d/%u/%u/%d/%u", (int)id, tile, stages,
	    (int)splitk, red);
}

/* Starts a report line: the shape, where x and the outputs lie. */
static void
gemm_report_shape(struct cuda_gemm *gm, const struct gemm_plan *p,
    const float *x, int host_y)
{
	fprintf(gm->report, "linear rows %lld in %lld out %lld bias %d relu %d "
	    "tf32 %d x %s y %s", (long long)p->key.rows, (long long)p->key.in,
	    (long long)p->key.out, p->key.bias, p->key.relu, p->key.tf32,
	    gemm_on_host(x) ? "host" : "device", host_y ? "host" : "device");
}

/*
 * Appends a timing's line to the report, if one is kept: the shape,
 * where x and the outputs lay, the streams, and each candidate (in the
 * heuristic's order) as algorithm/tile/stages/splitk/reduction=
 * microseconds a product, "-" for one that could not run, "*" marking the
 * one chosen.
 */
static void
gemm_report(struct cuda_gemm *gm, const struct gemm_plan *p,
    const cublasLtMatmulHeuristicResult_t *res, int n, const float *ms,
    int best, const float *x, int host_y, int streams)
{
	char name[64];

	if (gm->report == NULL)
		return;
	gemm_report_shape(gm, p, x, host_y);
	fprintf(gm->report, " streams %d:", streams);
	for (int i = 0; i < n; i++) {
		gemm_algo_name(&res[i].algo, name, sizeof name);
		if (ms[i] < 0.0f)
			fprintf(gm->report, " %s=-", name);
		else
			fprintf(gm->report, " %s%s=%.2f", i == best ? "*" : "",
			    name, ms[i] * 1000.0f);
	}
	fputc('\n', gm->report);
	fflush(gm->report);
}

/* The smallest power of two at or above rows: a range that shares. */
static int64_t
gemm_bucket(int64_t rows)
{
	int64_t b = 1;

	while (b < rows)
		b <<= 1;
	return b;
}

/*
 * Gives p the algorithm timed for another plan of its range of rows,
 * alike in all else, where cuBLASLt accepts it for p's shape with a's
 * workspace. 1 when it did, 0 when there is none to share.
 */
static int
gemm_share(struct cuda_gemm *gm, struct gemm_plan *p,
    const struct cuda_gemm_linear *a)
{
	cublasLtMatmulHeuristicResult_t chk;
	struct gemm_key k = p->key;
	int host_y = -1;
	char name[64];

	for (uint32_t i = 0; i < gm->nplans; i++) {
		struct gemm_plan *q = &gm->plan[i];

		if (q == p || q->chosen_rows == 0 || q->nogo ||
		    gemm_bucket(q->key.rows) != gemm_bucket(k.rows))
			continue;
		k.rows = q->key.rows;
		if (memcmp(&k, &q->key, sizeof k) != 0)
			continue;
		if (host_y < 0)
			host_y = gemm_on_host(a->y);
		memset(&chk, 0, sizeof chk);
		if (q->host_y != host_y || cublasLtMatmulAlgoCheck(gm->lt,
		    p->desc, p->a, p->b, p->d, p->d, &q->algo, &chk) !=
		    CUBLAS_STATUS_SUCCESS || chk.workspaceSize > a->ws_size)
			continue;
		p->algo = q->algo;
		p->chosen_rows = q->chosen_rows;
		p->host_y = q->host_y;
		p->timed = 1;
		if (gm->report != NULL) {
			gemm_algo_name(&p->algo, name, sizeof name);
			gemm_report_shape(gm, p, a->x, host_y);
			fprintf(gm->report, " shares rows %lld: %s\n",
			    (long long)p->chosen_rows, name);
			fflush(gm->report);
		}
		return 1;
	}
	return 0;
}

/*
 * Picks p's algorithm: one shared within its range of rows, else the
 * heuristic's candidates, timed unless the stream is capturing. 0, 1 when
 * cuBLASLt has no algorithm for it, or -1.
 */
static int
gemm_choose(struct cuda_gemm *gm, struct gemm_plan *p,
    const struct cuda_gemm_linear *a, char **cause)
{
	cublasLtMatmulHeuristicResult_t res[CUDA_GEMM_CANDIDATES_MAX];
	cudaGraphExec_t ge[CUDA_GEMM_CANDIDATES_MAX];
	float ms[CUDA_GEMM_CANDIDATES_MAX];
	cublasLtMatmulPreference_t pref;
	enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
	uint64_t ws = a->ws_size;
	uint32_t ax = p->key.align_x, ay = p->key.align_y, aw = p->key.align_w;
	size_t wsmax = 0, yslice, wsslice;
	cublasStatus_t s;
	int n = 0, best = -1, streams, host, y_host, capturing;

	/* During a capture, nothing that asks the driver about pointers. */
	capturing = cudaStreamIsCapturing(a->stream, &cs) != cudaSuccess ||
	    cs != cudaStreamCaptureStatusNone;
	if (gm->share && !capturing && gemm_share(gm, p, a))
		return 0;
	s = cublasLtMatmulPreferenceCreate(&pref);
	if (s != CUBLAS_STATUS_SUCCESS)
		return gemm_fail(cause, "cublasLtMatmulPreferenceCreate", s);
	if ((s = cublasLtMatmulPreferenceSetAttribute(pref,
	    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws)) ==
	    CUBLAS_STATUS_SUCCESS &&
	    (s = cublasLtMatmulPreferenceSetAttribute(pref,
	    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw, sizeof aw)) ==
	    CUBLAS_STATUS_SUCCESS &&
	    (s = cublasLtMatmulPreferenceSetAttribute(pref,
	    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ax, sizeof ax)) ==
	    CUBLAS_STATUS_SUCCESS &&
	    (s = cublasLtMatmulPreferenceSetAttribute(pref,
	    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ay, sizeof ay)) ==
	    CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatmulPreferenceSetAttribute(pref,
		    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ay, sizeof ay);
	if (s == CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatmulAlgoGetHeuristic(gm->lt, p->desc, p->a, p->b,
		    p->d, p->d, pref, gm->candidates, res, &n);
	cublasLtMatmulPreferenceDestroy(pref);
	if (s == CUBLAS_STATUS_NOT_SUPPORTED || (s == CUBLAS_STATUS_SUCCESS &&
	    n == 0)) {
		p->nogo = 1;
		return 1;
	}
	if (s != CUBLAS_STATUS_SUCCESS)
		return gemm_fail(cause, "cublasLtMatmulAlgoGetHeuristic", s);
	p->algo = res[0].algo;
	if (capturing || n == 1) {
		p->timed = n == 1;
		return 0;
	}
	for (int i = 0; i < n; i++) {
		if (res[i].state == CUBLAS_STATUS_SUCCESS &&
		    res[i].workspaceSize > wsmax)
			wsmax = res[i].workspaceSize;
	}
	/* Without room in the scratch, the heuristic's first choice. */
	host = y_host = gemm_on_host(a->y);
	if ((streams = gemm_scratch(gm, a, wsmax, &host, &yslice,
	    &wsslice)) == 0) {
		p->timed = 1;
		return 0;
	}
	/* Each candidate's graph, launched once untimed (its upload). */
	for (int i = 0; i < n; i++) {
		ms[i] = -1.0f;
		ge[i] = res[i].state != CUBLAS_STATUS_SUCCESS ? NULL :
		    gemm_graph(gm, p, &res[i].algo, a, streams, host, yslice,
		    wsslice);
		if (ge[i] != NULL && gemm_time(gm, ge[i], a, streams, yslice,
		    wsslice) < 0.0f) {
			cudaGraphExecDestroy(ge[i]);
			ge[i] = NULL;
		}
		(void)cudaGetLastError();
	}
	/* The candidates take turns, each round starting one later. */
	for (int r = 0; r < GEMM_TIME_REPS; r++) {
		for (int j = 0; j < n; j++) {
			int i = (j + r) % n;
			float t;

			if (ge[i] == NULL)
				continue;
			t = gemm_time(gm, ge[i], a, streams, yslice, wsslice);
			(void)cudaGetLastError();
			if (t < 0.0f) {
				cudaGraphExecDestroy(ge[i]);
				ge[i] = NULL;
				ms[i] = -1.0f;
			} else if (ms[i] < 0.0f || t < ms[i])
				ms[i] = t;
		}
	}
	for (int i = 0; i < n; i++) {
		if (ge[i] != NULL)
			cudaGraphExecDestroy(ge[i]);
		if (ms[i] >= 0.0f && (best < 0 || ms[i] < ms[best]))
			best = i;
	}
	if (best >= 0) {
		p->algo = res[best].algo;
		p->chosen_rows = p->key.rows;
		p->host_y = y_host;
	}
	p->timed = 1;
	gemm_report(gm, p, res, n, ms, best, a->x, host, streams);
	return 0;
}

/* Finds the plan for k, or makes one (evicting the least recently used). */
static struct gemm_plan *
gemm_plan_get(struct cuda_gemm *gm, const struct gemm_key *k, char **cause)
{
	struct gemm_plan *p, *lru = NULL;

	for (uint32_t i = 0; i < gm->nplans; i++) {
		p = &gm->plan[i];
		if (memcmp(&p->key, k, sizeof *k) == 0) {
			p->last = ++gm->tick;
			return p;
		}
		if (lru == NULL || p->last < lru->last)
			lru = p;
	}
	if (gm->nplans < GEMM_PLANS)
		p = &gm->plan[gm->nplans++];
	else {
		p = lru;
		gemm_plan_clear(p);
	}
	if (gemm_plan_make(p, k, cause) != 0) {
		gemm_plan_clear(p);
		p->key = *k;
		p->key.rows = -1;   /* never matches: made again next time */
		return NULL;
	}
	p->last = ++gm->tick;
	return p;
}

/*
 * Enqueues one linear on a->stream. 0, 1 when cuBLASLt cannot do it (the
 * caller uses another way), or -1 with *cause.
 */
int
cuda_gemm_run(struct cuda_gemm *gm, const struct cuda_gemm_linear *a,
    char **cause)
{
	struct gemm_key k;
	struct gemm_plan *p;
	cublasStatus_t s;
	int rc;

	memset(&k, 0, sizeof k);
	k.rows = a->rows;
	k.in = a->in;
	k.out = a->out;
	k.tf32 = a->tf32 != 0;
	k.relu = a->relu != 0;
	k.bias = a->bias != NULL;
	k.align_x = gemm_align(a->x);
	k.align_y = gemm_align(a->y);
	k.align_w = gemm_align(a->w);
	k.align_b = a->bias != NULL ? gemm_align(a->bias) : 0;
	if ((p = gemm_plan_get(gm, &k, cause)) == NULL)
		return -1;
	if (p->nogo)
		return 1;
	if (gemm_set_bias(p, a, cause) != 0)
		return -1;
	if (!p->timed && (rc = gemm_choose(gm, p, a, cause)) != 0)
		return rc;
	if ((s = gemm_launch(gm, p, &p->algo, a)) != CUBLAS_STATUS_SUCCESS)
		return gemm_fail(cause, "cublasLtMatmul", s);
	return 0;
}
