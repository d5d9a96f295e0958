/*
 * backend_cuda: the CUDA backend. CUDA runtime and cuBLAS on one stream that
 * the backend owns, FP32 by default (TF32 only when the model asks for it),
 * pinned host staging buffers and a device arena that grow and are reused,
 * constants uploaded once per model, and CUDA graphs replayed when a model
 * runs again with input shapes it has run with before.
 *
 * Environment, read at open:
 *   AGXQ_CUDA_GRAPHS=0       never capture CUDA graphs (run eagerly)
 *   AGXQ_CUDA_FAULT_EVERY=N  every Nth run fails with "injected fault" before
 *                            launching anything (fault tests)
 *   AGXQ_CUDA_FAULT_KIND=trap  the Nth run instead launches a kernel that
 *                            traps: a sticky error; the context is lost and
 *                            only close (which resets the device) helps
 *
 * After a sticky CUDA error every call fails with a cause containing
 * "device lost"; the owner must close the backend (close resets the device)
 * and open it again. Measured on the H100 host (driver 580, CUDA 13): after a
 * launch failure the driver refuses any new context in the same process
 * (cudaErrorDevicesUnavailable), as CUDA's documentation allows, so the
 * reopen fails there and only a new process recovers.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend.h"
#include "cuda_kernels.h"

#define CUDA_ALIGN 256              /* arena alignment of each tensor */
#define CUDA_PIN_ALIGN 64           /* staging alignment of each tensor */
#define CUDA_BLAS_WORKSPACE (32u << 20)
#define CUDA_GRAPH_SLOTS 8          /* cached CUDA graphs per model */

#if CUK_MAX_DIMS < GRAPH_MAX_DIMS
#error "cuda_kernels supports fewer dims than the graph IR"
#endif

struct cuda_model;

struct cuda_state {
	int device;
	cudaStream_t stream;
	cublasHandle_t blas;
	void *blas_ws;
	char *arena;                /* device scratch: inputs, node outputs, temporaries */
	size_t arena_size;
	char *pinned;               /* host staging for inputs and outputs */
	size_t pinned_size;
	uint64_t gen;               /* bumped when arena or pinned moves */
	int use_graphs;
	unsigned long fault_every;
	int fault_trap;
	uint64_t runs;
	int broken;                 /* a sticky error: only close works */
	char *broken_why;
	struct cuda_model *models;  /* loaded models, to release on close */
};

struct cuda_graph_slot {
	int used;
	struct graph_shape *shapes; /* ninputs input shapes */
	unsigned hits;
	int failed;                 /* capture failed: stay eager for these shapes */
	uint64_t gen;               /* state->gen the graph was captured under */
	uint64_t last;              /* for LRU eviction */
	cudaGraphExec_t exec;
};

struct cuda_model {
	struct cuda_state *st;      /* NULL once the backend was closed */
	const struct graph *g;
	float *consts;              /* device block of every constant */
	size_t *const_off;          /* nvalues: float offset of each constant */
	size_t *val_off;            /* nvalues: arena byte offset (inputs, nodes) */
	size_t *pin_in;             /* ninputs: staging byte offsets */
	size_t *pin_out;            /* noutputs: staging byte offsets */
	size_t scratch_off;         /* arena byte offset of mha temporaries */
	struct cuda_graph_slot slot[CUDA_GRAPH_SLOTS];
	struct graph_shape *slot_shapes;
	uint64_t tick;
	struct cuda_model *next;
};

/* Sets *cause to a formatted message when cause is not NULL. */
static void __attribute__((format(printf, 2, 3)))
cuda_cause(char **cause, const char *fmt, ...)
{
	va_list ap;

	if (cause == NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) == -1)
		*cause = NULL;
	va_end(ap);
}

/* Fails with the name of a CUDA runtime call and its error. */
static int
cuda_err(char **cause, const char *call, cudaError_t err)
{
	cuda_cause(cause, "cuda: %s failed: %s (%s)", call,
	    cudaGetErrorString(err), cudaGetErrorName(err));
	return -1;
}

/* Fails with the name of a cuBLAS call and its status. */
static int
cuda_blas_err(char **cause, const char *call, cublasStatus_t s)
{
	cuda_cause(cause, "cuda: %s failed: %s (%s)", call,
	    cublasGetStatusString(s), cublasGetStatusName(s));
	return -1;
}

/* Rounds n up to a multiple of a. */
static size_t
cuda_align(size_t n, size_t a)
{
	return (n + a - 1) / a * a;
}

/* Reads a non-negative integer environment variable, or def. */
static unsigned long
cuda_env_ulong(const char *name, unsigned long def)
{
	const char *s = getenv(name);
	char *end;
	unsigned long v;

	if (s == NULL || *s == '\0')
		return def;
	v = strtoul(s, &end, 10);
	if (*end != '\0')
		return def;
	return v;
}

/*
 * After a failed run: ends a capture left open, clears a non-sticky error and
 * checks the stream still works. A sticky error marks the backend broken and
 * says so in *cause.
 */
static void
cuda_after_failure(struct cuda_state *st, char **cause)
{
	enum cudaStreamCaptureStatus cs;
	cudaGraph_t graph;
	cudaError_t err;
	char *old;

	if (cudaStreamIsCapturing(st->stream, &cs) == cudaSuccess &&
	    cs != cudaStreamCaptureStatusNone) {
		graph = NULL;
		cudaStreamEndCapture(st->stream, &graph);
		if (graph != NULL)
			cudaGraphDestroy(graph);
	}
	(void)cudaGetLastError();
	err = cudaStreamSynchronize(st->stream);
	if (err == cudaSuccess)
		return;
	(void)cudaGetLastError();
	if ((err = cudaStreamSynchronize(st->stream)) == cudaSuccess)
		return;
	st->broken = 1;
	if (st->broken_why == NULL &&
	    asprintf(&st->broken_why, "%s", cudaGetErrorString(err)) == -1)
		st->broken_why = NULL;
	if (cause != NULL && *cause != NULL) {
		old = *cause;
		if (asprintf(cause, "%s (sticky error: device lost, the backend "
		    "must be reopened)", old) == -1)
			*cause = old;
		else
			free(old);
	} else
		cuda_cause(cause, "cuda: device lost: %s", cudaGetErrorString(err));
}

/* Fails when an earlier sticky error broke the context. */
static int
cuda_check_broken(struct cuda_state *st, char **cause)
{
	if (!st->broken)
		return 0;
	cuda_cause(cause, "cuda: device lost after an earlier sticky error "
	    "(%s); the backend must be reopened",
	    st->broken_why != NULL ? st->broken_why : "unknown");
	return -1;
}

/* Destroys a graph slot's executable graph and forgets it. */
static void
cuda_slot_clear(struct cuda_graph_slot *s)
{
	if (s->exec != NULL)
		cudaGraphExecDestroy(s->exec);
	s->exec = NULL;
	s->used = 0;
	s->hits = 0;
	s->failed = 0;
}

/* Releases a model's device resources (not its host memory). */
static void
cuda_model_release(struct cuda_model *m)
{
	for (int i = 0; i < CUDA_GRAPH_SLOTS; i++)
		cuda_slot_clear(&m->slot[i]);
	if (m->consts != NULL)
		cudaFree(m->consts);
	m->consts = NULL;
}

/* Opens device `device`: stream, cuBLAS handle bound to it, workspace. */
static int
cuda_open(int device, void **state, char **cause)
{
	struct cuda_state *st;
	cudaError_t err;
	cublasStatus_t bs;
	int count = 0;
	const char *kind;

	if ((err = cudaGetDeviceCount(&count)) != cudaSuccess)
		return cuda_err(cause, "cudaGetDeviceCount", err);
	if (device < 0 || device >= count) {
		cuda_cause(cause, "cuda: no device %d (%d found)", device, count);
		return -1;
	}
	if ((st = calloc(1, sizeof *st)) == NULL) {
		cuda_cause(cause, "cuda: out of memory");
		return -1;
	}
	st->device = device;
	st->use_graphs = cuda_env_ulong("AGXQ_CUDA_GRAPHS", 1) != 0;
	st->fault_every = cuda_env_ulong("AGXQ_CUDA_FAULT_EVERY", 0);
	kind = getenv("AGXQ_CUDA_FAULT_KIND");
	st->fault_trap = kind != NULL && strcmp(kind, "trap") == 0;

	if ((err = cudaSetDevice(device)) != cudaSuccess) {
		cuda_err(cause, "cudaSetDevice", err);
		goto fail_free_state;
	}
	if ((err = cudaStreamCreateWithFlags(&st->stream,
	    cudaStreamNonBlocking)) != cudaSuccess) {
		cuda_err(cause, "cudaStreamCreateWithFlags", err);
		goto fail_free_state;
	}
	if ((bs = cublasCreate(&st->blas)) != CUBLAS_STATUS_SUCCESS) {
		cuda_blas_err(cause, "cublasCreate", bs);
		goto fail_destroy_stream;
	}
	if ((bs = cublasSetStream(st->blas, st->stream)) !=
	    CUBLAS_STATUS_SUCCESS) {
		cuda_blas_err(cause, "cublasSetStream", bs);
		goto fail_destroy_blas;
	}
	/* FP32 as PyTorch: no TF32 unless a model asks (set per run). */
	if ((bs = cublasSetMathMode(st->blas, CUBLAS_DEFAULT_MATH)) !=
	    CUBLAS_STATUS_SUCCESS) {
		cuda_blas_err(cause, "cublasSetMathMode", bs);
		goto fail_destroy_blas;
	}
	/* Our own workspace, so cuBLAS never allocates during graph capture. */
	if ((err = cudaMalloc(&st->blas_ws, CUDA_BLAS_WORKSPACE)) !=
	    cudaSuccess) {
		cuda_err(cause, "cudaMalloc (cuBLAS workspace)", err);
		goto fail_destroy_blas;
	}
	if ((bs = cublasSetWorkspace(st->blas, st->blas_ws,
	    CUDA_BLAS_WORKSPACE)) != CUBLAS_STATUS_SUCCESS) {
		cuda_blas_err(cause, "cublasSetWorkspace", bs);
		goto fail_free_ws;
	}
	*state = st;
	return 0;

fail_free_ws:
	cudaFree(st->blas_ws);
fail_destroy_blas:
	cublasDestroy(st->blas);
fail_destroy_stream:
	cudaStreamDestroy(st->stream);
fail_free_state:
	free(st);
	return -1;
}

/*
 * Releases everything; safe after errors. After a sticky error the device's
 * primary context is reset so that a new open starts clean.
 */
static void
cuda_close(void *state)
{
	struct cuda_state *st = state;
	struct cuda_model *m;

	if (st == NULL)
		return;
	cudaSetDevice(st->device);
	if (!st->broken)
		cudaStreamSynchronize(st->stream);
	for (m = st->models; m != NULL; m = m->next) {
		cuda_model_release(m);
		m->st = NULL;
	}
	cublasDestroy(st->blas);
	cudaFree(st->blas_ws);
	if (st->arena != NULL)
		cudaFree(st->arena);
	if (st->pinned != NULL)
		cudaFreeHost(st->pinned);
	cudaStreamDestroy(st->stream);
	if (st->broken)
		cudaDeviceReset();
	(void)cudaGetLastError();
	free(st->broken_why);
	free(st);
}

/* Uploads g's constants and prepares the per-run tables. */
static int
cuda_model_load(void *state, const struct graph *g, void **bmodel,
    char **cause)
{
	struct cuda_state *st = state;
	struct cuda_model *m;
	cudaError_t err;
	size_t total = 0;
	uint32_t v;

	if (cuda_check_broken(st, cause) != 0)
		return -1;
	switch (g->precision) {
	case GRAPH_FP32:
	case GRAPH_TF32:
		break;
	case GRAPH_FP16:
		cuda_cause(cause, "precision fp16 is not supported by the cuda "
		    "backend yet");
		return -1;
	case GRAPH_BF16:
		cuda_cause(cause, "precision bf16 is not supported by the cuda "
		    "backend yet");
		return -1;
	default:
		cuda_cause(cause, "cuda: unknown precision %d", (int)g->precision);
		return -1;
	}
	for (uint32_t i = 0; i < g->nnodes; i++) {
		switch (g->nodes[i].op) {
		case GRAPH_OP_LINEAR:
		case GRAPH_OP_MATMUL:
		case GRAPH_OP_ADD:
		case GRAPH_OP_MUL:
		case GRAPH_OP_RELU:
		case GRAPH_OP_GELU:
		case GRAPH_OP_SILU:
		case GRAPH_OP_SOFTMAX:
		case GRAPH_OP_LAYER_NORM:
		case GRAPH_OP_MHA:
			break;
		default:
			cuda_cause(cause, "%s: op not supported by the cuda backend",
			    g->nodes[i].name);
			return -1;
		}
	}
	if ((err = cudaSetDevice(st->device)) != cudaSuccess)
		return cuda_err(cause, "cudaSetDevice", err);

	if ((m = calloc(1, sizeof *m)) == NULL) {
		cuda_cause(cause, "cuda: out of memory");
		return -1;
	}
	m->g = g;
	m->const_off = calloc(g->nvalues, sizeof *m->const_off);
	m->val_off = calloc(g->nvalues, sizeof *m->val_off);
	m->pin_in = calloc(g->ninputs + 1, sizeof *m->pin_in);
	m->pin_out = calloc(g->noutputs + 1, sizeof *m->pin_out);
	m->slot_shapes = calloc((size_t)CUDA_GRAPH_SLOTS * (g->ninputs + 1),
	    sizeof *m->slot_shapes);
	if (m->const_off == NULL || m->val_off == NULL || m->pin_in == NULL ||
	    m->pin_out == NULL || m->slot_shapes == NULL) {
		cuda_cause(cause, "cuda: out of memory");
		goto fail_free_model;
	}
	for (int i = 0; i < CUDA_GRAPH_SLOTS; i++)
		m->slot[i].shapes = m->slot_shapes + (size_t)i * (g->ninputs + 1);

	/* One device block, each constant 64-float aligned. */
	for (v = 0; v < g->nvalues; v++) {
		if (g->values[v].kind != GRAPH_VALUE_CONST)
			continue;
		m->const_off[v] = total;
		total += cuda_align(g->values[v].nelem, 64);
	}
	if (total > 0) {
		if ((err = cudaMalloc((void **)&m->consts, total *
		    sizeof(float))) != cudaSuccess) {
			cuda_err(cause, "cudaMalloc (constants)", err);
			cuda_after_failure(st, cause);
			goto fail_free_model;
		}
		for (v = 0; v < g->nvalues; v++) {
			if (g->values[v].kind != GRAPH_VALUE_CONST ||
			    g->values[v].nelem == 0)
				continue;
			if ((err = cudaMemcpy(m->consts + m->const_off[v],
			    g->values[v].data, g->values[v].nelem * sizeof(float),
			    cudaMemcpyHostToDevice)) != cudaSuccess) {
				cuda_err(cause, "cudaMemcpy (constants)", err);
				goto fail_free_consts;
			}
		}
	}
	m->st = st;
	m->next = st->models;
	st->models = m;
	*bmodel = m;
	return 0;

fail_free_consts:
	cudaFree(m->consts);
	cuda_after_failure(st, cause);
fail_free_model:
	free(m->const_off);
	free(m->val_off);
	free(m->pin_in);
	free(m->pin_out);
	free(m->slot_shapes);
	free(m);
	return -1;
}

/* Frees a model: its graphs, its constants, its tables. */
static void
cuda_model_free(void *state, void *bmodel)
{
	struct cuda_model *m = bmodel, **pp;

	(void)state;
	if (m == NULL)
		return;
	if (m->st != NULL) {
		cudaSetDevice(m->st->device);
		cuda_model_release(m);
		for (pp = &m->st->models; *pp != NULL; pp = &(*pp)->next) {
			if (*pp == m) {
				*pp = m->next;
				break;
			}
		}
	}
	free(m->const_off);
	free(m->val_off);
	free(m->pin_in);
	free(m->pin_out);
	free(m->slot_shapes);
	free(m);
}

/* Device pointer of value v for this run. */
static float *
cuda_ptr(struct cuda_state *st, struct cuda_model *m, uint32_t v)
{
	if (m->g->values[v].kind == GRAPH_VALUE_CONST)
		return m->consts + m->const_off[v];
	return (float *)(st->arena + m->val_off[v]);
}

/* Floats of mha temporaries for a node: qkv, q/k/v by head, scores, o, merged. */
static size_t
cuda_mha_scratch(const struct graph_shape *x, int heads)
{
	size_t B, L, d;

	if (x->ndim == 3) {
		B = (size_t)x->dim[0];
		L = (size_t)x->dim[1];
	} else {
		B = 1;
		L = (size_t)x->dim[0];
	}
	d = (size_t)x->dim[x->ndim - 1];
	return cuda_align(3 * B * L * d, 64) * 2 +
	    cuda_align(B * (size_t)heads * L * L, 64) +
	    cuda_align(B * L * d, 64) * 2;
}

/* Lays out the arena and the staging buffer for shapes; returns both sizes. */
static void
cuda_layout(struct cuda_model *m, const struct graph_shape *shapes,
    size_t *arena_need, size_t *pinned_need)
{
	const struct graph *g = m->g;
	size_t off = 0, scratch = 0, pin = 0, n;
	uint32_t v;

	for (v = 0; v < g->nvalues; v++) {
		if (g->values[v].kind == GRAPH_VALUE_CONST)
			continue;
		m->val_off[v] = off;
		off = cuda_align(off + graph_shape_nelem(&shapes[v]) *
		    sizeof(float), CUDA_ALIGN);
	}
	for (uint32_t i = 0; i < g->nnodes; i++) {
		if (g->nodes[i].op != GRAPH_OP_MHA)
			continue;
		n = cuda_mha_scratch(&shapes[g->nodes[i].in[0]],
		    g->nodes[i].heads);
		if (n > scratch)
			scratch = n;
	}
	m->scratch_off = off;
	*arena_need = off + scratch * sizeof(float);
	if (*arena_need == 0)
		*arena_need = CUDA_ALIGN;
	for (uint32_t i = 0; i < g->ninputs; i++) {
		m->pin_in[i] = pin;
		pin = cuda_align(pin + graph_shape_nelem(&shapes[i]) *
		    sizeof(float), CUDA_PIN_ALIGN);
	}
	for (uint32_t j = 0; j < g->noutputs; j++) {
		m->pin_out[j] = pin;
		pin = cuda_align(pin + graph_shape_nelem(&shapes[g->outputs[j]]) *
		    sizeof(float), CUDA_PIN_ALIGN);
	}
	*pinned_need = pin > 0 ? pin : CUDA_PIN_ALIGN;
}

/* Grows the arena and the staging buffer to at least the given sizes. */
static int
cuda_reserve(struct cuda_state *st, size_t arena_need, size_t pinned_need,
    char **cause)
{
	cudaError_t err;
	size_t n;

	if (arena_need > st->arena_size) {
		n = cuda_align(arena_need + arena_need / 2, 1u << 20);
		if (st->arena != NULL)
			cudaFree(st->arena);
		st->arena = NULL;
		st->arena_size = 0;
		st->gen++;
		if ((err = cudaMalloc((void **)&st->arena, n)) != cudaSuccess)
			return cuda_err(cause, "cudaMalloc (arena)", err);
		st->arena_size = n;
	}
	if (pinned_need > st->pinned_size) {
		n = cuda_align(pinned_need + pinned_need / 2, 1u << 16);
		if (st->pinned != NULL)
			cudaFreeHost(st->pinned);
		st->pinned = NULL;
		st->pinned_size = 0;
		st->gen++;
		if ((err = cudaHostAlloc((void **)&st->pinned, n,
		    cudaHostAllocDefault)) != cudaSuccess)
			return cuda_err(cause, "cudaHostAlloc (staging)", err);
		st->pinned_size = n;
	}
	return 0;
}

/* Checks that a GEMM dimension fits cuBLAS's int. */
static int
cuda_fits_int(int64_t v)
{
	return v >= 0 && v <= INT32_MAX;
}

/* Row-major C[M,N] = alpha A[M,K] B[K,N], batched with element strides. */
static int
cuda_gemm_nn(struct cuda_state *st, const struct graph_node *n, int64_t M,
    int64_t N, int64_t K, const float *A, long long sa, const float *B,
    long long sb, float *C, long long sc, int64_t batch, char **cause)
{
	const float one = 1.0f, zero = 0.0f;
	cublasStatus_t bs;

	if (!cuda_fits_int(M) || !cuda_fits_int(N) || !cuda_fits_int(K) ||
	    !cuda_fits_int(batch)) {
		cuda_cause(cause, "%s: matrix too large for cuBLAS", n->name);
		return -1;
	}
	if (M == 0 || N == 0 || batch == 0)
		return 0;
	/* Column-major: C^T[N,M] = B^T[N,K] A^T[K,M]. */
	if (batch == 1)
		bs = cublasSgemm(st->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)N,
		    (int)M, (int)K, &one, B, (int)N, A, (int)K, &zero, C, (int)N);
	else
		bs = cublasSgemmStridedBatched(st->blas, CUBLAS_OP_N,
		    CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, B, (int)N, sb, A,
		    (int)K, sa, &zero, C, (int)N, sc, (int)batch);
	if (bs != CUBLAS_STATUS_SUCCESS) {
		cuda_cause(cause, "%s: cublasSgemm failed: %s", n->name,
		    cublasGetStatusString(bs));
		return -1;
	}
	return 0;
}

/* Row-major Y[rows,out] = X[rows,in] W[out,in]^T (+ b). */
static int
cuda_linear(struct cuda_state *st, const struct graph_node *n, int64_t rows,
    int64_t in, int64_t out, const float *X, const float *W, const float *b,
    float *Y, char **cause)
{
	const float one = 1.0f, zero = 0.0f;
	cublasStatus_t bs;
	cudaError_t err;

	if (!cuda_fits_int(rows) || !cuda_fits_int(in) || !cuda_fits_int(out)) {
		cuda_cause(cause, "%s: matrix too large for cuBLAS", n->name);
		return -1;
	}
	if (rows == 0 || out == 0)
		return 0;
	bs = cublasSgemm(st->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out,
	    (int)rows, (int)in, &one, W, (int)in, X, (int)in, &zero, Y,
	    (int)out);
	if (bs != CUBLAS_STATUS_SUCCESS) {
		cuda_cause(cause, "%s: cublasSgemm failed: %s", n->name,
		    cublasGetStatusString(bs));
		return -1;
	}
	if (b != NULL &&
	    (err = cuk_bias_add(Y, b, rows, out, st->stream)) != cudaSuccess) {
		cuda_cause(cause, "%s: bias kernel launch failed: %s", n->name,
		    cudaGetErrorString(err));
		return -1;
	}
	return 0;
}

/* Matmul with PyTorch's rules: 1-D operands and broadcast batch dims. */
static int
cuda_matmul(struct cuda_state *st, const struct graph_node *n,
    const struct graph_shape *sa, const struct graph_shape *sb,
    const struct graph_shape *so, const float *A, const float *B, float *C,
    char **cause)
{
	int a1 = sa->ndim == 1, b1 = sb->ndim == 1;
	int nba = a1 ? 0 : sa->ndim - 2, nbb = b1 ? 0 : sb->ndim - 2;
	int nbo = so->ndim - (a1 ? 0 : 1) - (b1 ? 0 : 1);
	int64_t M, N, K, na = 1, nb = 1, no = 1;
	int64_t ast[GRAPH_MAX_DIMS], bst[GRAPH_MAX_DIMS], s;

	M = a1 ? 1 : sa->dim[sa->ndim - 2];
	K = sa->dim[sa->ndim - 1];
	N = b1 ? 1 : sb->dim[sb->ndim - 1];
	for (int i = 0; i < nba; i++)
		na *= sa->dim[i];
	for (int i = 0; i < nbb; i++)
		nb *= sb->dim[i];
	for (int i = 0; i < nbo; i++)
		no *= so->dim[i];

	if (nb == 1 && na == no)    /* b shared: one GEMM over all rows of a */
		return cuda_gemm_nn(st, n, no * M, N, K, A, 0, B, 0, C, 0, 1,
		    cause);
	if (na == no && nb == no)
		return cuda_gemm_nn(st, n, M, N, K, A, M * K, B, K * N, C,
		    M * N, no, cause);
	if (na == 1 && nb == no)
		return cuda_gemm_nn(st, n, M, N, K, A, 0, B, K * N, C, M * N,
		    no, cause);

	/* General broadcasting of batch dims: one GEMM per output batch. */
	s = M * K;
	for (int i = nbo - 1, j = nba - 1; i >= 0; i--, j--) {
		ast[i] = (j < 0 || sa->dim[j] == 1) ? 0 : s;
		if (j >= 0)
			s *= sa->dim[j];
	}
	s = K * N;
	for (int i = nbo - 1, j = nbb - 1; i >= 0; i--, j--) {
		bst[i] = (j < 0 || sb->dim[j] == 1) ? 0 : s;
		if (j >= 0)
			s *= sb->dim[j];
	}
	for (int64_t bi = 0; bi < no; bi++) {
		int64_t rem = bi, oa = 0, ob = 0;

		for (int d = nbo - 1; d >= 0; d--) {
			int64_t c = rem % so->dim[d];

			rem /= so->dim[d];
			oa += c * ast[d];
			ob += c * bst[d];
		}
		if (cuda_gemm_nn(st, n, M, N, K, A + oa, 0, B + ob, 0,
		    C + bi * M * N, 0, 1, cause) != 0)
			return -1;
	}
	return 0;
}

/* Broadcast description of out = a op b. */
static void
cuda_bcast(const struct graph_shape *sa, const struct graph_shape *sb,
    const struct graph_shape *so, struct cuk_bcast *bc)
{
	const struct graph_shape *sx[2] = { sa, sb };
	int64_t *st[2] = { bc->a_stride, bc->b_stride };

	bc->ndim = so->ndim;
	for (int d = 0; d < so->ndim; d++)
		bc->dim[d] = so->dim[d];
	for (int k = 0; k < 2; k++) {
		int off = so->ndim - sx[k]->ndim;
		int64_t s = 1;

		for (int d = so->ndim - 1; d >= 0; d--) {
			int od = d - off;

			if (od < 0) {
				st[k][d] = 0;
				continue;
			}
			st[k][d] = (sx[k]->dim[od] == 1 && so->dim[d] != 1) ?
			    0 : s;
			s *= sx[k]->dim[od];
		}
	}
}

/* Multi-head self-attention (nn.MultiheadAttention, batch_first). */
static int
cuda_mha(struct cuda_state *st, struct cuda_model *m,
    const struct graph_node *n, const struct graph_shape *sx, char **cause)
{
	const float *x = cuda_ptr(st, m, n->in[0]);
	const float *in_w = cuda_ptr(st, m, n->in[1]);
	const float *in_b = cuda_ptr(st, m, n->in[2]);
	const float *out_w = cuda_ptr(st, m, n->in[3]);
	const float *out_b = cuda_ptr(st, m, n->in[4]);
	float *y = cuda_ptr(st, m, n->out);
	float *qkv, *qkvh, *q, *k, *v, *sc, *o, *merged, zero = 0.0f, one = 1.0f;
	float scale;
	int64_t B, L, d, H = n->heads, hd;
	cublasStatus_t bs;
	cudaError_t err;
	const char *what;

	B = sx->ndim == 3 ? sx->dim[0] : 1;
	L = sx->ndim == 3 ? sx->dim[1] : sx->dim[0];
	d = sx->dim[sx->ndim - 1];
	if (H <= 0 || d % H != 0) {
		cuda_cause(cause, "%s: %lld heads do not divide %lld", n->name,
		    (long long)H, (long long)d);
		return -1;
	}
	hd = d / H;
	if (!cuda_fits_int(L) || !cuda_fits_int(hd) || !cuda_fits_int(B * H)) {
		cuda_cause(cause, "%s: attention too large for cuBLAS", n->name);
		return -1;
	}
	if (B * L == 0)
		return 0;
	qkv = (float *)(st->arena + m->scratch_off);
	qkvh = qkv + cuda_align((size_t)(3 * B * L * d), 64);
	sc = qkvh + cuda_align((size_t)(3 * B * L * d), 64);
	o = sc + cuda_align((size_t)(B * H * L * L), 64);
	merged = o + cuda_align((size_t)(B * L * d), 64);
	q = qkvh;
	k = qkvh + B * L * d;
	v = qkvh + 2 * B * L * d;
	scale = 1.0f / sqrtf((float)hd);

	if (cuda_linear(st, n, B * L, d, 3 * d, x, in_w, in_b, qkv, cause) != 0)
		return -1;
	what = "split kernel";
	if ((err = cuk_mha_split(qkvh, qkv, B, L, H, hd, st->stream)) !=
	    cudaSuccess)
		goto fail_kernel;
	/* scores[bh] = scale * Q K^T; column-major S^T = K Q^T. */
	bs = cublasSgemmStridedBatched(st->blas, CUBLAS_OP_T, CUBLAS_OP_N,
	    (int)L, (int)L, (int)hd, &scale, k, (int)hd, L * hd, q, (int)hd,
	    L * hd, &zero, sc, (int)L, L * L, (int)(B * H));
	if (bs != CUBLAS_STATUS_SUCCESS)
		goto fail_blas;
	what = "softmax kernel";
	if ((err = cuk_attn_softmax(sc, B * H * L, L, n->causal, st->stream)) !=
	    cudaSuccess)
		goto fail_kernel;
	/* o[bh] = P V; column-major O^T = V^T P^T. */
	bs = cublasSgemmStridedBatched(st->blas, CUBLAS_OP_N, CUBLAS_OP_N,
	    (int)hd, (int)L, (int)L, &one, v, (int)hd, L * hd, sc, (int)L,
	    L * L, &zero, o, (int)hd, L * hd, (int)(B * H));
	if (bs != CUBLAS_STATUS_SUCCESS)
		goto fail_blas;
	what = "merge kernel";
	if ((err = cuk_mha_merge(merged, o, B, L, H, hd, st->stream)) !=
	    cudaSuccess)
		goto fail_kernel;
	return cuda_linear(st, n, B * L, d, d, merged, out_w, out_b, y, cause);

fail_blas:
	cuda_cause(cause, "%s: cublasSgemmStridedBatched failed: %s", n->name,
	    cublasGetStatusString(bs));
	return -1;
fail_kernel:
	cuda_cause(cause, "%s: %s launch failed: %s", n->name, what,
	    cudaGetErrorString(err));
	return -1;
}

/* Enqueues one node on the stream. */
static int
cuda_node(struct cuda_state *st, struct cuda_model *m,
    const struct graph_node *n, const struct graph_shape *shapes,
    char **cause)
{
	const struct graph_shape *so = &shapes[n->out];
	const struct graph_shape *s0 = &shapes[n->in[0]];
	float *y = cuda_ptr(st, m, n->out);
	const float *x = cuda_ptr(st, m, n->in[0]);
	int64_t nelem = (int64_t)graph_shape_nelem(so), cols, outer, inner;
	const float *w, *b;
	struct cuk_bcast bc;
	cudaError_t err = cudaSuccess;
	int i;

	switch (n->op) {
	case GRAPH_OP_LINEAR: {
		const struct graph_shape *sw = &shapes[n->in[1]];
		int64_t in = sw->dim[1], out = sw->dim[0];
		int64_t rows = in > 0 ? (int64_t)graph_shape_nelem(s0) / in : 0;

		b = n->nin >= 3 ? cuda_ptr(st, m, n->in[2]) : NULL;
		return cuda_linear(st, n, rows, in, out, x,
		    cuda_ptr(st, m, n->in[1]), b, y, cause);
	}
	case GRAPH_OP_MATMUL:
		return cuda_matmul(st, n, s0, &shapes[n->in[1]], so, x,
		    cuda_ptr(st, m, n->in[1]), y, cause);
	case GRAPH_OP_ADD:
	case GRAPH_OP_MUL:
		cuda_bcast(s0, &shapes[n->in[1]], so, &bc);
		err = cuk_binary(n->op == GRAPH_OP_ADD ? CUK_ADD : CUK_MUL, y, x,
		    cuda_ptr(st, m, n->in[1]), &bc, nelem, st->stream);
		break;
	case GRAPH_OP_RELU:
		err = cuk_unary(CUK_RELU, y, x, nelem, st->stream);
		break;
	case GRAPH_OP_GELU:
		err = cuk_unary(n->gelu_tanh ? CUK_GELU_TANH : CUK_GELU_ERF, y, x,
		    nelem, st->stream);
		break;
	case GRAPH_OP_SILU:
		err = cuk_unary(CUK_SILU, y, x, nelem, st->stream);
		break;
	case GRAPH_OP_SOFTMAX:
		outer = 1;
		inner = 1;
		for (i = 0; i < n->axis; i++)
			outer *= s0->dim[i];
		for (i = n->axis + 1; i < s0->ndim; i++)
			inner *= s0->dim[i];
		err = cuk_softmax(y, x, outer, s0->ndim > 0 ? s0->dim[n->axis] : 1,
		    inner, st->stream);
		break;
	case GRAPH_OP_LAYER_NORM:
		i = 1;
		w = n->has_weight ? cuda_ptr(st, m, n->in[i++]) : NULL;
		b = n->has_bias ? cuda_ptr(st, m, n->in[i++]) : NULL;
		cols = s0->ndim > 0 ? s0->dim[s0->ndim - 1] : 1;
		err = cuk_layer_norm(y, x, w, b, cols > 0 ? nelem / cols : 0, cols,
		    n->eps, st->stream);
		break;
	case GRAPH_OP_MHA:
		return cuda_mha(st, m, n, s0, cause);
	default:
		cuda_cause(cause, "%s: op not supported by the cuda backend",
		    n->name);
		return -1;
	}
	if (err != cudaSuccess) {
		cuda_cause(cause, "%s: %s kernel launch failed: %s", n->name,
		    graph_op_name(n->op), cudaGetErrorString(err));
		return -1;
	}
	return 0;
}

/* Enqueues a whole run: inputs in, every node, outputs out. */
static int
cuda_enqueue(struct cuda_state *st, struct cuda_model *m,
    const struct graph_shape *shapes, char **cause)
{
	const struct graph *g = m->g;
	cudaError_t err;
	size_t bytes;

	for (uint32_t i = 0; i < g->ninputs; i++) {
		bytes = graph_shape_nelem(&shapes[i]) * sizeof(float);
		if (bytes == 0)
			continue;
		if ((err = cudaMemcpyAsync(st->arena + m->val_off[i],
		    st->pinned + m->pin_in[i], bytes, cudaMemcpyHostToDevice,
		    st->stream)) != cudaSuccess)
			return cuda_err(cause, "cudaMemcpyAsync (input)", err);
	}
	for (uint32_t i = 0; i < g->nnodes; i++)
		if (cuda_node(st, m, &g->nodes[i], shapes, cause) != 0)
			return -1;
	for (uint32_t j = 0; j < g->noutputs; j++) {
		bytes = graph_shape_nelem(&shapes[g->outputs[j]]) * sizeof(float);
		if (bytes == 0)
			continue;
		if ((err = cudaMemcpyAsync(st->pinned + m->pin_out[j],
		    cuda_ptr(st, m, g->outputs[j]), bytes, cudaMemcpyDeviceToHost,
		    st->stream)) != cudaSuccess)
			return cuda_err(cause, "cudaMemcpyAsync (output)", err);
	}
	return 0;
}

/* Finds the graph slot for these input shapes, or takes the LRU one. */
static struct cuda_graph_slot *
cuda_slot_find(struct cuda_model *m, const struct graph_shape *shapes,
    int *found)
{
	struct cuda_graph_slot *s, *lru = NULL;
	size_t sz = m->g->ninputs * sizeof *shapes;

	for (int i = 0; i < CUDA_GRAPH_SLOTS; i++) {
		s = &m->slot[i];
		if (s->used && memcmp(s->shapes, shapes, sz) == 0) {
			*found = 1;
			s->last = ++m->tick;
			return s;
		}
		if (lru == NULL || !s->used || (lru->used && s->last < lru->last))
			lru = s;
	}
	cuda_slot_clear(lru);
	memcpy(lru->shapes, shapes, sz);
	lru->used = 1;
	lru->last = ++m->tick;
	*found = 0;
	return lru;
}

/*
 * Captures the run into a CUDA graph. Returns 0 with s->exec set, or 1 when
 * capture is not possible (s->failed set; the caller runs eagerly).
 */
static int
cuda_capture(struct cuda_state *st, struct cuda_model *m,
    struct cuda_graph_slot *s, const struct graph_shape *shapes, char **cause)
{
	cudaGraph_t graph = NULL;
	cudaError_t err;

	if (cudaStreamBeginCapture(st->stream,
	    cudaStreamCaptureModeThreadLocal) != cudaSuccess)
		goto fail_no_graph;
	/* A failure while capturing: run eagerly, which reports a real error. */
	if (cuda_enqueue(st, m, shapes, cause) != 0) {
		if (cause != NULL) {
			free(*cause);
			*cause = NULL;
		}
		cudaStreamEndCapture(st->stream, &graph);
		if (graph != NULL)
			cudaGraphDestroy(graph);
		goto fail_no_graph;
	}
	if ((err = cudaStreamEndCapture(st->stream, &graph)) != cudaSuccess ||
	    graph == NULL)
		goto fail_no_graph;
	err = cudaGraphInstantiate(&s->exec, graph, 0);
	cudaGraphDestroy(graph);
	if (err != cudaSuccess) {
		s->exec = NULL;
		goto fail_no_graph;
	}
	s->gen = st->gen;
	return 0;

fail_no_graph:
	(void)cudaGetLastError();
	s->failed = 1;
	return 1;
}

/* Runs the model once on the stream and waits for its outputs. */
static int
cuda_run(void *state, void *bmodel, const struct graph_shape *shapes,
    const float *const *in, float *const *out, char **cause)
{
	struct cuda_state *st = state;
	struct cuda_model *m = bmodel;
	const struct graph *g = m->g;
	struct cuda_graph_slot *s;
	size_t arena_need, pinned_need, bytes;
	cublasStatus_t bs;
	cudaError_t err;
	int found;

	if (cuda_check_broken(st, cause) != 0)
		return -1;
	st->runs++;
	if (st->fault_every != 0 && st->runs % st->fault_every == 0) {
		if (!st->fault_trap) {
			cuda_cause(cause, "cuda: injected fault "
			    "(AGXQ_CUDA_FAULT_EVERY=%lu, run %llu)", st->fault_every,
			    (unsigned long long)st->runs);
			return -1;
		}
		cuk_trap(st->stream);
		err = cudaStreamSynchronize(st->stream);
		cuda_err(cause, "cudaStreamSynchronize (injected trap)",
		    err != cudaSuccess ? err : cudaErrorUnknown);
		goto fail;
	}
	if ((err = cudaSetDevice(st->device)) != cudaSuccess) {
		cuda_err(cause, "cudaSetDevice", err);
		goto fail;
	}
	cuda_layout(m, shapes, &arena_need, &pinned_need);
	if (cuda_reserve(st, arena_need, pinned_need, cause) != 0)
		goto fail;
	bs = cublasSetMathMode(st->blas, g->precision == GRAPH_TF32 ?
	    CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
	if (bs != CUBLAS_STATUS_SUCCESS) {
		cuda_blas_err(cause, "cublasSetMathMode", bs);
		goto fail;
	}
	for (uint32_t i = 0; i < g->ninputs; i++) {
		bytes = graph_shape_nelem(&shapes[i]) * sizeof(float);
		if (bytes > 0)
			memcpy(st->pinned + m->pin_in[i], in[i], bytes);
	}

	s = NULL;
	if (st->use_graphs) {
		s = cuda_slot_find(m, shapes, &found);
		if (s->exec != NULL && s->gen != st->gen) {
			cudaGraphExecDestroy(s->exec);
			s->exec = NULL;
		}
		/* Capture on the second run with these shapes, not the first. */
		if (found && s->exec == NULL && !s->failed)
			(void)cuda_capture(st, m, s, shapes, cause);
		s->hits++;
	}
	if (s != NULL && s->exec != NULL) {
		if ((err = cudaGraphLaunch(s->exec, st->stream)) != cudaSuccess) {
			cuda_err(cause, "cudaGraphLaunch", err);
			goto fail;
		}
	} else if (cuda_enqueue(st, m, shapes, cause) != 0)
		goto fail;
	if ((err = cudaStreamSynchronize(st->stream)) != cudaSuccess) {
		cuda_err(cause, "cudaStreamSynchronize", err);
		goto fail;
	}
	for (uint32_t j = 0; j < g->noutputs; j++) {
		bytes = graph_shape_nelem(&shapes[g->outputs[j]]) * sizeof(float);
		if (bytes > 0)
			memcpy(out[j], st->pinned + m->pin_out[j], bytes);
	}
	return 0;

fail:
	cuda_after_failure(st, cause);
	return -1;
}

const struct backend_ops backend_cuda_ops = {
	.name = "cuda",
	.open = cuda_open,
	.close = cuda_close,
	.model_load = cuda_model_load,
	.model_free = cuda_model_free,
	.run = cuda_run,
};
