/*
 * backend_cuda: the CUDA backend. CUDA runtime and cuBLAS, FP32 by default
 * (TF32 only when the model asks for it), constants uploaded once per model.
 *
 * Runs are overlapped: the backend has CUDA_SLOTS lanes, each with its own
 * stream, completion event, cuBLAS handle and workspace, device activation
 * arena, mapped pinned staging buffer, and (per model) its own cache of CUDA
 * graphs, since a captured graph is bound to its lane's buffers. submit
 * copies the inputs into the lane's pinned buffer, enqueues H2D, the nodes
 * and the output copies (or replays a graph), records the lane's event and
 * returns; finish spins on the event briefly, then blocks on it, and copies
 * the outputs out of the pinned buffer. Outputs made by a kernel of ours
 * (elementwise, layer norm, a linear's bias add) are written straight into
 * the mapped pinned buffer, saving a device-to-host copy. Inputs and
 * outputs in host memory the caller registered (host_register: agxqd
 * registers clients' shared memory regions) are copied by DMA straight
 * from and to it, outside the captured graph, with no copy on the calling
 * thread; submit_parts does the same for a batch of several requests, each
 * request's rows copied to and from its own memory. Lanes are used as a ring and finished oldest first; all calls
 * come from one thread. run is submit then finish.
 *
 * Environment, read at open:
 *   AGXQ_CUDA_GRAPHS=0       never capture CUDA graphs (run eagerly)
 *   AGXQ_CUDA_ZEROCOPY=0     always copy inputs and outputs through the
 *                            device (no kernel reads or writes mapped memory)
 *   AGXQ_CUDA_HOSTREG=0      never page-lock host memory for DMA
 *                            (host_register fails; tensors in clients'
 *                            shared memory are copied through the staging)
 *   AGXQ_CUDA_PARTS=0        batches of several requests are always gathered
 *                            into the staging (no submit_parts)
 *   AGXQ_CUDA_ANSWER=1       submit_answers (off by default: right on an
 *                            H100 but 30% slower, docs/GPU.md); outputs
 *                            otherwise come back
 *                            through the staging to finish; with it a
 *                            run's last kernel (cuk_answer) writes each
 *                            request's rows, exec_us and mark into its ring
 *                            slot (registered memory), where the client
 *                            reads them before the executor retires the run
 *   AGXQ_CUDA_ZC_IN_MAX=N    runs whose inputs total at most N bytes have
 *                            their kernels read the inputs straight from
 *                            the mapped pinned buffer, no host-to-device
 *                            copy; 0 (the default): copied in
 *   AGXQ_CUDA_ZC_NARROW_MAX=N  the same up to N bytes (default 65536) for a
 *                            model whose inputs only narrow linears read
 *                            (cuda_inputs_narrow)
 *   AGXQ_CUDA_COPY_KERNEL=0  larger inputs staged in the pinned buffer are
 *                            copied in by cudaMemcpyAsync instead of a
 *                            kernel reading the mapped buffer
 *   AGXQ_CUDA_PAD_ROWS=N     linears of 5 to N-1 rows compute N rows, where
 *                            cublasSgemm is faster (default 32 with
 *                            AGXQ_CUDA_LT=0, else 0: never)
 *   AGXQ_CUDA_LT=0           linears on cublasSgemm and our bias and ReLU
 *                            kernels instead of cuBLASLt with the bias and
 *                            ReLU in the epilogue (cuda_gemm.c)
 *   AGXQ_CUDA_LT_CANDIDATES=N  cuBLASLt algorithms timed for each new
 *                            linear shape (1-16, default 8; 1: the
 *                            heuristic's first, untimed)
 *   AGXQ_CUDA_LT_OVERLAP=N   each is timed running on N streams at once
 *                            (1-16, default 8: as many as runs in flight);
 *                            1: alone, the fastest for a lone client
 *   AGXQ_CUDA_LT_SHARE=0     time every new row count of a linear; by
 *                            default shapes whose rows fall in one
 *                            power-of-two range (5-8, 9-16, ...) share the
 *                            first one's timing where cuBLASLt accepts it
 *   AGXQ_CUDA_LT_REPORT=PATH each shape's timing appended to PATH, a line
 *                            a shape: its candidates, their times and the
 *                            one chosen, and a line for each shape that
 *                            shares one (the device does not open when
 *                            PATH cannot be opened)
 *   AGXQ_CUDA_FUSE=0         no fused nodes: a ReLU after a linear and an
 *                            add before a layer norm run as nodes of their
 *                            own, and attention as five kernels instead of
 *                            cuk_attention (sequences up to 64)
 *   AGXQ_CUDA_DONE_FLAG=0    learn that a run is over from an event
 *                            recorded after it; by default the stream
 *                            writes the run's number into mapped memory
 *                            after it instead (a plain load to poll, where
 *                            cudaEventQuery costs 0.2-1.5 us), and the
 *                            stream is asked only now and then, for errors
 *   AGXQ_CUDA_FAULT_EVERY=N  every Nth submitted run fails with "injected
 *                            fault" (reported by its finish); nothing of it
 *                            is launched; other runs in flight are unharmed
 *   AGXQ_CUDA_FAULT_KIND=trap  the Nth run instead launches a kernel that
 *                            traps: a sticky error; the context is lost and
 *                            only close (which resets the device) helps
 *   AGXQ_CUDA_FAULT_KIND=hang  the Nth run launches a kernel that never
 *                            ends: its finish never returns, and only the
 *                            supervisor's stall watchdog (agxqd start
 *                            --stall-ms) ends the worker
 *
 * After a sticky CUDA error every call fails with a cause containing
 * "device lost"; the owner must close the backend (close resets the device)
 * and open it again. Measured on the H100 host (driver 580, CUDA 13): after a
 * launch failure the driver refuses any new context in the same process
 * (cudaErrorDevicesUnavailable), as CUDA's documentation allows, so the
 * reopen fails there and only a new process recovers.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cublas_v2.h>
#include <cuda.h>
#include <cuda_runtime_api.h>

#include "backend.h"
#include "cuda_gemm.h"
#include "cuda_kernels.h"
#include "envset.h"

#define CUDA_ALIGN 256              /* arena alignment of each tensor */
#define CUDA_PIN_ALIGN 64           /* staging alignment of each tensor */
#define CUDA_BLAS_WORKSPACE (32u << 20)
#define CUDA_GRAPH_SLOTS 8          /* cached CUDA graphs per model and lane */
#define CUDA_SLOTS 8                /* runs in flight */
#define CUDA_SPIN_NS 200000         /* finish polls this long, then blocks */
#define CUDA_FLAG_SPACING 16        /* uint32_t per lane flag: a line each */
#define CUDA_FLAG_QUERY_EVERY 64    /* polls of a flag between event queries */
#define CUDA_NARROW_N 128           /* a narrow linear: this many outputs at most */

/* cuStreamWriteValue32, from the driver through the runtime. */
typedef CUresult (*cuda_write_value_fn)(CUstream, CUdeviceptr, cuuint32_t,
    unsigned int);

#if CUK_MAX_DIMS < GRAPH_MAX_DIMS
#error "cuda_kernels supports fewer dims than the graph IR"
#endif

struct cuda_model;

/* AGXQ_CUDA_FAULT_KIND, in the order of cuda_open's words. */
enum cuda_fault_kind {
	CUDA_FAULT_FAIL,            /* the run fails, nothing launched */
	CUDA_FAULT_TRAP,            /* a kernel traps: the context is lost */
	CUDA_FAULT_HANG             /* a kernel never ends */
};

/* How a run moves its inputs and outputs (part of a graph's key). */
#define CUDA_MODE_DMA_IN 1    /* H2D copies from registered memory, outside the graph */
#define CUDA_MODE_DMA_OUT 2   /* D2H copies to registered memory, outside the graph */
#define CUDA_MODE_ANSWER 4    /* outputs to the requests, by cuk_answer */

/* One lane: a stream and the buffers of one run in flight. */
struct cuda_lane {
	int index;
	cudaStream_t stream;
	cudaEvent_t done;           /* recorded after the run's last copy
				       (without done flags) */
	cublasHandle_t blas;
	void *blas_ws;
	char *arena;                /* device scratch: inputs, node outputs, temporaries */
	size_t arena_size;
	char *pinned;               /* mapped host staging for inputs and outputs */
	char *pinned_dev;           /* its device address */
	size_t pinned_size;
	uint64_t gen;               /* bumped when arena or pinned moves */
	int zc_in;                  /* this run's kernels read inputs from pinned */
	int dma_in;                 /* this run's inputs come by DMA from registered memory */
	int dma_out;                /* and its outputs go there by DMA */
	int answer;                 /* its outputs go to answers (cuk_answer) */
	struct cuk_answers *answers; /* then: their table, in pinned */

	/* The run in flight, from submit to finish. */
	int fault;                  /* injected fault: finish fails */
	int seen_done;              /* a poll saw it done: no more queries */
	uint32_t *flag;             /* the run's number lands here when it is
				       over (mapped; NULL: events only) */
	CUdeviceptr flag_dev;
	unsigned polls;             /* of the flag, since the last query */
	uint64_t run;
	uint32_t nout, out_cap;
	float **out;                /* the caller's output buffers */
	size_t *out_off;            /* their staging offsets */
	size_t *out_bytes;
};

struct cuda_state {
	int device;
	struct cuda_lane lane[CUDA_SLOTS];
	uint32_t head, inflight;    /* ring of lanes in flight */
	int use_graphs;
	int zerocopy;
	unsigned long zc_in_max;    /* inputs up to this many bytes: read mapped */
	unsigned long zc_narrow_max; /* the same for models with narrow inputs */
	int copy_kernel;            /* staged inputs copied in by a kernel */
	unsigned long pad_rows;     /* linears of 5 to this many rows run this many */
	struct cuda_gemm *gemm;     /* linears on cuBLASLt; NULL: cublasSgemm */
	int fuse;                   /* fused nodes and attention (cuda_fuse) */
	int hostreg;                /* host_register allowed */
	int parts;                  /* submit_parts allowed */
	int answers;                /* submit_answers allowed */
	int64_t clock_off;          /* global timer less CLOCK_MONOTONIC, ns */
	int64_t clock_best;         /* the best estimate of it this window */
	uint64_t clock_window;      /* when this window of estimates ends */
	unsigned long fault_every;
	int fault_kind;             /* CUDA_FAULT_FAIL, _TRAP or _HANG */
	cuda_write_value_fn write_value; /* NULL: no done flags */
	uint32_t *flags;            /* CUDA_SLOTS flags, mapped pinned */
	uint64_t runs;
	int broken;                 /* a sticky error: only close works */
	char *broken_why;
	struct cuda_model *models;  /* loaded models, to release on close */
	struct cuda_hostreg *hreg;  /* host memory registered by host_register */
	uint32_t nhreg, hreg_cap;
};

/* Host memory page-locked with cudaHostRegister (host_register). */
struct cuda_hostreg {
	char *p;
	size_t len;
};

struct cuda_graph_slot {
	int used;
	int mode;                   /* CUDA_MODE_* of the runs it replays */
	struct graph_shape *shapes; /* ninputs input shapes */
	unsigned hits;
	int failed;                 /* capture failed: stay eager for these shapes */
	uint64_t gen;               /* lane gen the graph was captured under */
	uint64_t last;              /* for LRU eviction */
	cudaGraphExec_t exec;
};

struct cuda_model {
	struct cuda_state *st;      /* NULL once the backend was closed */
	const struct graph *g;
	float *consts;              /* device block of every constant */
	size_t *const_off;          /* nvalues: float offset of each constant */
	size_t *val_off;            /* nvalues: arena byte offset (inputs, nodes) */
	uint32_t *zc_out;           /* nvalues: j + 1 when output j is written to mapped memory */
	int32_t *fused;             /* nnodes: a linear's ReLU node, a layer
				       norm's add node, or -1 */
	uint8_t *skip;              /* nnodes: done by the node it is fused into */
	size_t *pin_in;             /* ninputs: staging byte offsets */
	size_t *pin_out;            /* noutputs: staging byte offsets */
	size_t pin_ans;             /* staging byte offset of the answers */
	unsigned long zc_in_max;    /* inputs up to this many bytes: read mapped */
	size_t scratch_off;         /* arena byte offset of mha temporaries */
	struct cuda_graph_slot slot[CUDA_SLOTS][CUDA_GRAPH_SLOTS];
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

/* Puts "name: " before *cause. */
static void
cuda_prefix(char **cause, const char *name)
{
	char *old = *cause;

	if (asprintf(cause, "%s: %s", name, old) == -1)
		*cause = old;
	else
		free(old);
}

/* Rounds n up to a multiple of a. */
static size_t
cuda_align(size_t n, size_t a)
{
	return (n + a - 1) / a * a;
}

/* Monotonic nanoseconds. */
static uint64_t
cuda_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * After a failed run on lane l: ends a capture left open, clears a
 * non-sticky error and checks the stream still works. A sticky error marks
 * the backend broken and says so in *cause.
 */
static void
cuda_after_failure(struct cuda_state *st, struct cuda_lane *l, char **cause)
{
	enum cudaStreamCaptureStatus cs;
	cudaGraph_t graph;
	cudaError_t err;
	char *old;

	if (cudaStreamIsCapturing(l->stream, &cs) == cudaSuccess &&
	    cs != cudaStreamCaptureStatusNone) {
		graph = NULL;
		cudaStreamEndCapture(l->stream, &graph);
		if (graph != NULL)
			cudaGraphDestroy(graph);
	}
	(void)cudaGetLastError();
	err = cudaStreamSynchronize(l->stream);
	if (err == cudaSuccess)
		return;
	(void)cudaGetLastError();
	if ((err = cudaStreamSynchronize(l->stream)) == cudaSuccess)
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

/* 0 after a sticky error: the executor must reopen the backend. */
static int
cuda_healthy(void *state)
{
	return !((struct cuda_state *)state)->broken;
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
	for (int k = 0; k < CUDA_SLOTS; k++)
		for (int i = 0; i < CUDA_GRAPH_SLOTS; i++)
			cuda_slot_clear(&m->slot[k][i]);
	if (m->consts != NULL)
		cudaFree(m->consts);
	m->consts = NULL;
}

/* Releases a lane; safe on a partly opened one. */
static void
cuda_lane_close(struct cuda_lane *l, int broken)
{
	if (l->stream != NULL && !broken)
		cudaStreamSynchronize(l->stream);
	if (l->blas != NULL)
		cublasDestroy(l->blas);
	if (l->blas_ws != NULL)
		cudaFree(l->blas_ws);
	if (l->arena != NULL)
		cudaFree(l->arena);
	if (l->pinned != NULL)
		cudaFreeHost(l->pinned);
	if (l->done != NULL)
		cudaEventDestroy(l->done);
	if (l->stream != NULL)
		cudaStreamDestroy(l->stream);
	free(l->out);
	free(l->out_off);
	free(l->out_bytes);
	memset(l, 0, sizeof *l);
}

/* Opens a lane: stream, event, cuBLAS handle bound to it, workspace. */
static int
cuda_lane_open(struct cuda_lane *l, int index, char **cause)
{
	cudaError_t err;
	cublasStatus_t bs;

	memset(l, 0, sizeof *l);
	l->index = index;
	if ((err = cudaStreamCreateWithFlags(&l->stream,
	    cudaStreamNonBlocking)) != cudaSuccess)
		return cuda_err(cause, "cudaStreamCreateWithFlags", err);
	if ((err = cudaEventCreateWithFlags(&l->done,
	    cudaEventDisableTiming)) != cudaSuccess)
		return cuda_err(cause, "cudaEventCreateWithFlags", err);
	if ((bs = cublasCreate(&l->blas)) != CUBLAS_STATUS_SUCCESS) {
		l->blas = NULL;
		return cuda_blas_err(cause, "cublasCreate", bs);
	}
	if ((bs = cublasSetStream(l->blas, l->stream)) != CUBLAS_STATUS_SUCCESS)
		return cuda_blas_err(cause, "cublasSetStream", bs);
	/* FP32 as PyTorch: no TF32 unless a model asks (set per run). */
	if ((bs = cublasSetMathMode(l->blas, CUBLAS_DEFAULT_MATH)) !=
	    CUBLAS_STATUS_SUCCESS)
		return cuda_blas_err(cause, "cublasSetMathMode", bs);
	/* Own workspace per lane, so cuBLAS never allocates during capture. */
	if ((err = cudaMalloc(&l->blas_ws, CUDA_BLAS_WORKSPACE)) !=
	    cudaSuccess) {
		l->blas_ws = NULL;
		return cuda_err(cause, "cudaMalloc (cuBLAS workspace)", err);
	}
	if ((bs = cublasSetWorkspace(l->blas, l->blas_ws,
	    CUDA_BLAS_WORKSPACE)) != CUBLAS_STATUS_SUCCESS)
		return cuda_blas_err(cause, "cublasSetWorkspace", bs);
	return 0;
}

/*
 * Sets up the lanes' done flags: cuStreamWriteValue32 from the driver and
 * a mapped pinned flag per lane, tried once on lane 0. A driver without
 * stream memory operations leaves them off (events only, as with
 * AGXQ_CUDA_DONE_FLAG=0); -1 with *cause only for a CUDA error.
 */
static int
cuda_flags_open(struct cuda_state *st, char **cause)
{
	enum cudaDriverEntryPointQueryResult q;
	cuda_write_value_fn fn = NULL;
	void *dev;
	cudaError_t err;

	if (cudaGetDriverEntryPointByVersion("cuStreamWriteValue32",
	    (void **)&fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
	    q != cudaDriverEntryPointSuccess || fn == NULL) {
		(void)cudaGetLastError();
		return 0;
	}
	if ((err = cudaHostAlloc((void **)&st->flags, CUDA_SLOTS *
	    CUDA_FLAG_SPACING * sizeof *st->flags, cudaHostAllocMapped)) !=
	    cudaSuccess) {
		st->flags = NULL;
		return cuda_err(cause, "cudaHostAlloc (done flags)", err);
	}
	memset(st->flags, 0, CUDA_SLOTS * CUDA_FLAG_SPACING *
	    sizeof *st->flags);
	if ((err = cudaHostGetDevicePointer(&dev, st->flags, 0)) !=
	    cudaSuccess) {
		cudaFreeHost(st->flags);
		st->flags = NULL;
		return cuda_err(cause, "cudaHostGetDevicePointer (done flags)",
		    err);
	}
	if (fn((CUstream)st->lane[0].stream, (CUdeviceptr)dev, 1, 0) !=
	    CUDA_SUCCESS ||
	    cudaStreamSynchronize(st->lane[0].stream) != cudaSuccess ||
	    __atomic_load_n(&st->flags[0], __ATOMIC_ACQUIRE) != 1) {
		(void)cudaGetLastError();
		cudaFreeHost(st->flags);
		st->flags = NULL;
		return 0;
	}
	st->flags[0] = 0;
	for (int k = 0; k < CUDA_SLOTS; k++) {
		st->lane[k].flag = st->flags + k * CUDA_FLAG_SPACING;
		st->lane[k].flag_dev = (CUdeviceptr)dev +
		    (CUdeviceptr)(k * CUDA_FLAG_SPACING * sizeof *st->flags);
	}
	st->write_value = fn;
	return 0;
}

/*
 * Whether kernels may write answers to registered host memory at its host
 * addresses; if so, a first offset of the global timer from CLOCK_MONOTONIC
 * (cuda_clock_learn refines it): the best of a few reads, each taken before
 * the host saw it. 0, or -1 with *cause for a CUDA error.
 */
static int
cuda_answers_open(struct cuda_state *st, char **cause)
{
	unsigned long long *t;
	uint64_t seen;
	cudaError_t err;
	int can = 0;

	if (cudaDeviceGetAttribute(&can,
	    cudaDevAttrCanUseHostPointerForRegisteredMem, st->device) !=
	    cudaSuccess || !can) {
		(void)cudaGetLastError();
		st->answers = 0;
		return 0;
	}
	if ((err = cudaHostAlloc((void **)&t, sizeof *t, cudaHostAllocMapped))
	    != cudaSuccess)
		return cuda_err(cause, "cudaHostAlloc (clock)", err);
	st->clock_best = INT64_MIN;
	for (int i = 0; i < 5; i++) {
		if ((err = cuk_clock(t, st->lane[0].stream)) != cudaSuccess ||
		    (err = cudaStreamSynchronize(st->lane[0].stream)) !=
		    cudaSuccess) {
			cudaFreeHost(t);
			return cuda_err(cause, "cuk_clock", err);
		}
		seen = cuda_now_ns();
		if ((int64_t)(*t - seen) > st->clock_best)
			st->clock_best = (int64_t)(*t - seen);
	}
	cudaFreeHost(t);
	st->clock_off = st->clock_best;
	st->clock_best = INT64_MIN;
	st->clock_window = cuda_now_ns() + 1000000000u;
	return 0;
}

/* Opens device `device` and its lanes. */
static int
cuda_open(int device, void **state, char **cause)
{
	struct cuda_state *st;
	cudaError_t err;
	static const char *const kinds[] = { "error", "trap", "hang", NULL };
	unsigned long zc_in_max;
	const char *lt_report;
	int count = 0, k, lt, lt_share, candidates, overlap, done_flag;

	err = cudaGetDeviceCount(&count);
	if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
		cuda_cause(cause, "cuda: no usable NVIDIA GPU on this machine "
		    "(%s); use --backend cpu", cudaGetErrorString(err));
		return -1;
	}
	if (err != cudaSuccess)
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
	/* Every setting read first, so that each one set is validated. */
	st->use_graphs = envset_bool("AGXQ_CUDA_GRAPHS", 1);
	st->zerocopy = envset_bool("AGXQ_CUDA_ZEROCOPY", 1);
	/*
	 * Off by default. A kernel that reads a mapped input reads it over
	 * the bus once per tile it computes: on an H200, mlp (whose first
	 * layer has 512 outputs) took 81 us at 8 rows read mapped and 41 us
	 * copied. At 4 rows (4 KiB, the old default) it was within 1 us
	 * there, but on two H100s (2026-12-06) mlp's lone pass at 4 rows took
	 * 25 us read mapped and 18-23 copied, and a lone client ran 11-32%
	 * more requests with it off, 8 clients level (docs/GPU.md).
	 */
	zc_in_max = envset_ulong("AGXQ_CUDA_ZC_IN_MAX", 0, 0, ULONG_MAX);
	st->zc_in_max = st->zerocopy ? zc_in_max : 0;
	/*
	 * Inputs that only narrow linears read (cuda_inputs_narrow) cross the
	 * bus once or twice read mapped: a linear pass of 8-32 rows 15-19%
	 * shorter alone on an H200, level through agxqd at 8 clients there
	 * (+3-4% on an H100), where mlp, 512 wide first, lost 20% with all
	 * inputs so read (docs/GPU.md, 2026-12-04 and seventh round).
	 */
	zc_in_max = envset_ulong("AGXQ_CUDA_ZC_NARROW_MAX", 65536, 0,
	    ULONG_MAX);
	st->zc_narrow_max = st->zerocopy ? zc_in_max : 0;
	/*
	 * Larger staged inputs are copied in by a kernel reading mapped
	 * memory, not by a copy node: on an H100 a graph holding copy nodes
	 * took 5-9 us to launch, one of a kernel alone 1.4-2.3 (docs/GPU.md).
	 */
	st->copy_kernel = envset_bool("AGXQ_CUDA_COPY_KERNEL", 1) &&
	    st->zerocopy;
	st->fuse = envset_bool("AGXQ_CUDA_FUSE", 1);
	st->hostreg = envset_bool("AGXQ_CUDA_HOSTREG", 1);
	st->parts = envset_bool("AGXQ_CUDA_PARTS", 1);
	/*
	 * Off by default: on an H100 (2026-12-05) the answers were right but
	 * linear and mlp ran 30% slower with them. Kernels writing to mapped
	 * memory: not with AGXQ_CUDA_ZEROCOPY=0.
	 */
	st->answers = envset_bool("AGXQ_CUDA_ANSWER", 0) && st->hostreg &&
	    st->zerocopy;
	st->fault_every = envset_ulong("AGXQ_CUDA_FAULT_EVERY", 0, 0,
	    ULONG_MAX);
	st->fault_kind = envset_choice("AGXQ_CUDA_FAULT_KIND", CUDA_FAULT_FAIL,
	    kinds);
	done_flag = envset_bool("AGXQ_CUDA_DONE_FLAG", 1);
	lt = envset_bool("AGXQ_CUDA_LT", 1);
	candidates = (int)envset_ulong("AGXQ_CUDA_LT_CANDIDATES",
	    CUDA_GEMM_CANDIDATES, 1, CUDA_GEMM_CANDIDATES_MAX);
	overlap = (int)envset_ulong("AGXQ_CUDA_LT_OVERLAP",
	    CUDA_GEMM_OVERLAP, 1, CUDA_GEMM_OVERLAP_MAX);
	lt_share = envset_bool("AGXQ_CUDA_LT_SHARE", 1);
	lt_report = envset_string("AGXQ_CUDA_LT_REPORT");
	/*
	 * cublasSgemm picks a slow kernel for the products of small batches:
	 * on an H200 (CUDA 13.0) a linear(256, 128) took 15 us at 4 rows, 62
	 * us at 8 and 16 rows and 22 us at 32 (docs/GPU.md). Without cuBLASLt
	 * (whose algorithm is timed per shape, and which padding made slower:
	 * mlp at 8 rows 24 us unpadded, 34 padded), linears of 5 to 31 rows
	 * therefore compute 32 (the extra rows are never read).
	 */
	st->pad_rows = envset_ulong("AGXQ_CUDA_PAD_ROWS", lt ? 0 : 32, 0,
	    1u << 16);

	if ((err = cudaSetDevice(device)) != cudaSuccess) {
		cuda_err(cause, "cudaSetDevice", err);
		goto fail_free_state;
	}
	for (k = 0; k < CUDA_SLOTS; k++)
		if (cuda_lane_open(&st->lane[k], k, cause) != 0)
			goto fail_close_lanes;
	if (lt && cuda_gemm_open(&st->gemm, candidates, overlap, lt_share,
	    lt_report, cause) != 0) {
		k = CUDA_SLOTS - 1;
		goto fail_close_lanes;
	}
	if ((done_flag && cuda_flags_open(st, cause) != 0) ||
	    (st->answers && cuda_answers_open(st, cause) != 0)) {
		if (st->flags != NULL)
			cudaFreeHost(st->flags);
		cuda_gemm_close(st->gemm);
		k = CUDA_SLOTS - 1;
		goto fail_close_lanes;
	}
	*state = st;
	return 0;

fail_close_lanes:
	for (; k >= 0; k--)
		cuda_lane_close(&st->lane[k], 0);
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
	for (int k = 0; k < CUDA_SLOTS; k++)
		if (!st->broken && st->lane[k].stream != NULL)
			cudaStreamSynchronize(st->lane[k].stream);
	for (m = st->models; m != NULL; m = m->next) {
		cuda_model_release(m);
		m->st = NULL;
	}
	cuda_gemm_close(st->gemm);
	for (int k = 0; k < CUDA_SLOTS; k++)
		cuda_lane_close(&st->lane[k], st->broken);
	if (st->flags != NULL)
		cudaFreeHost(st->flags);
	/* The memory stays mapped by its owner: only the pinning goes. */
	for (uint32_t i = 0; i < st->nhreg && !st->broken; i++)
		(void)cudaHostUnregister(st->hreg[i].p);
	if (st->broken)
		cudaDeviceReset();
	(void)cudaGetLastError();
	free(st->hreg);
	free(st->broken_why);
	free(st);
}

/*
 * Whether value v of g can be written by its producing kernel straight into
 * mapped host memory: a node output that is a graph output exactly once,
 * read by no node, made by a kernel of ours that writes it once (a linear's
 * or attention's bias add included).
 */
static int
cuda_zerocopy_ok(const struct graph *g, uint32_t v)
{
	const struct graph_node *p = NULL;
	uint32_t seen = 0;

	if (g->values[v].kind != GRAPH_VALUE_NODE)
		return 0;
	for (uint32_t j = 0; j < g->noutputs; j++)
		if (g->outputs[j] == v)
			seen++;
	if (seen != 1)
		return 0;
	for (uint32_t i = 0; i < g->nnodes; i++) {
		const struct graph_node *n = &g->nodes[i];

		for (int k = 0; k < n->nin; k++)
			if (n->in[k] == v)
				return 0;
		if (n->out == v)
			p = n;
	}
	if (p == NULL)
		return 0;
	switch (p->op) {
	case GRAPH_OP_ADD:
	case GRAPH_OP_MUL:
	case GRAPH_OP_RELU:
	case GRAPH_OP_GELU:
	case GRAPH_OP_SILU:
	case GRAPH_OP_LAYER_NORM:
	case GRAPH_OP_MHA:
		return 1;
	case GRAPH_OP_LINEAR:
		return p->nin >= 3;
	default:
		return 0;
	}
}

/*
 * Whether every input of g is read only as the input of linears with
 * constant weights of at most CUDA_NARROW_N outputs. A GEMM reads its
 * input once for each tile of output columns: such an input read from
 * mapped memory crosses the bus once or twice, where a wider layer reads
 * it many times over.
 */
static int
cuda_inputs_narrow(const struct graph *g)
{
	for (uint32_t v = 0; v < g->ninputs; v++) {
		uint32_t uses = 0;

		for (uint32_t j = 0; j < g->noutputs; j++)
			if (g->outputs[j] == v)
				return 0;
		for (uint32_t i = 0; i < g->nnodes; i++) {
			const struct graph_node *n = &g->nodes[i];
			const struct graph_value *w;

			for (int k = 0; k < n->nin; k++) {
				if (n->in[k] != v)
					continue;
				if (n->op != GRAPH_OP_LINEAR || k != 0)
					return 0;
				w = &g->values[n->in[1]];
				if (w->kind != GRAPH_VALUE_CONST ||
				    w->shape.ndim != 2 ||
				    w->shape.dim[0] > CUDA_NARROW_N)
					return 0;
				uses++;
			}
		}
		if (uses == 0)
			return 0;
	}
	return g->ninputs > 0;
}

/* How many times value v is read: by nodes and as a graph output. */
static uint32_t
cuda_value_uses(const struct graph *g, uint32_t v)
{
	uint32_t uses = 0;

	for (uint32_t i = 0; i < g->nnodes; i++)
		for (int k = 0; k < g->nodes[i].nin; k++)
			if (g->nodes[i].in[k] == v)
				uses++;
	for (uint32_t j = 0; j < g->noutputs; j++)
		if (g->outputs[j] == v)
			uses++;
	return uses;
}

/*
 * Finds the nodes one kernel can do together. A linear whose output only a
 * ReLU reads writes the ReLU's output itself (cuBLASLt's epilogue, or its
 * own ReLU kernel without it), and the ReLU is skipped. A layer norm whose
 * input is an add's output that nothing else reads normalises the sum
 * itself (cuk_add_layer_norm, when the add does not broadcast), and the add
 * is skipped. Every value has its own arena space, so a value written
 * earlier or never changes nothing else.
 */
static void
cuda_fuse(struct cuda_model *m, int enabled)
{
	const struct graph *g = m->g;

	for (uint32_t i = 0; i < g->nnodes; i++)
		m->fused[i] = -1;
	for (uint32_t i = 0; i < g->nnodes && enabled; i++) {
		const struct graph_node *n = &g->nodes[i];

		if (n->op != GRAPH_OP_LINEAR || m->skip[i] ||
		    cuda_value_uses(g, n->out) != 1)
			continue;
		for (uint32_t j = i + 1; j < g->nnodes; j++) {
			if (g->nodes[j].op == GRAPH_OP_RELU &&
			    g->nodes[j].in[0] == n->out) {
				m->fused[i] = (int32_t)j;
				m->skip[j] = 1;
				break;
			}
		}
	}
	for (uint32_t j = 0; j < g->nnodes && enabled; j++) {
		const struct graph_node *n = &g->nodes[j];

		if (n->op != GRAPH_OP_LAYER_NORM)
			continue;
		for (uint32_t i = 0; i < j; i++) {
			if (g->nodes[i].op == GRAPH_OP_ADD && !m->skip[i] &&
			    g->nodes[i].out == n->in[0] &&
			    cuda_value_uses(g, n->in[0]) == 1) {
				m->fused[j] = (int32_t)i;
				m->skip[i] = 1;
				break;
			}
		}
	}
}

/* Whether a and b have the same dims. */
static int
cuda_same_shape(const struct graph_shape *a, const struct graph_shape *b)
{
	if (a->ndim != b->ndim)
		return 0;
	for (int d = 0; d < a->ndim; d++)
		if (a->dim[d] != b->dim[d])
			return 0;
	return 1;
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
	m->zc_out = calloc(g->nvalues, sizeof *m->zc_out);
	m->fused = calloc(g->nnodes + 1, sizeof *m->fused);
	m->skip = calloc(g->nnodes + 1, sizeof *m->skip);
	m->slot_shapes = calloc((size_t)CUDA_SLOTS * CUDA_GRAPH_SLOTS *
	    (g->ninputs + 1), sizeof *m->slot_shapes);
	if (m->const_off == NULL || m->val_off == NULL || m->pin_in == NULL ||
	    m->pin_out == NULL || m->zc_out == NULL || m->fused == NULL ||
	    m->skip == NULL || m->slot_shapes == NULL) {
		cuda_cause(cause, "cuda: out of memory");
		goto fail_free_model;
	}
	for (int k = 0; k < CUDA_SLOTS; k++)
		for (int i = 0; i < CUDA_GRAPH_SLOTS; i++)
			m->slot[k][i].shapes = m->slot_shapes +
			    ((size_t)k * CUDA_GRAPH_SLOTS + (size_t)i) *
			    (g->ninputs + 1);
	for (uint32_t j = 0; j < g->noutputs && st->zerocopy; j++)
		if (cuda_zerocopy_ok(g, g->outputs[j]))
			m->zc_out[g->outputs[j]] = j + 1;
	cuda_fuse(m, st->fuse);
	m->zc_in_max = st->zc_in_max;
	if (cuda_inputs_narrow(g) && st->zc_narrow_max > m->zc_in_max)
		m->zc_in_max = st->zc_narrow_max;

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
			cuda_after_failure(st, &st->lane[0], cause);
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
	cuda_after_failure(st, &st->lane[0], cause);
fail_free_model:
	free(m->const_off);
	free(m->val_off);
	free(m->pin_in);
	free(m->pin_out);
	free(m->zc_out);
	free(m->fused);
	free(m->skip);
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
	free(m->zc_out);
	free(m->fused);
	free(m->skip);
	free(m->slot_shapes);
	free(m);
}

/* Arena pointer of non-constant value v on lane l. */
static float *
cuda_arena_ptr(struct cuda_lane *l, struct cuda_model *m, uint32_t v)
{
	return (float *)(l->arena + m->val_off[v]);
}

/*
 * Device pointer where value v is written and read on lane l: constants in
 * the model's block, outputs written straight to mapped memory there, the
 * rest in the arena.
 */
static float *
cuda_ptr(struct cuda_lane *l, struct cuda_model *m, uint32_t v)
{
	if (m->g->values[v].kind == GRAPH_VALUE_CONST)
		return m->consts + m->const_off[v];
	if (l->zc_in && v < m->g->ninputs)
		return (float *)(l->pinned_dev + m->pin_in[v]);
	if (m->zc_out[v] != 0 && !l->dma_out && !l->answer)
		return (float *)(l->pinned_dev + m->pin_out[m->zc_out[v] - 1]);
	return cuda_arena_ptr(l, m, v);
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

/* Rows a linear of rows rows computes (see pad_rows in cuda_open). */
static int64_t
cuda_gemm_rows(const struct cuda_state *st, int64_t rows)
{
	if (st != NULL && rows > 4 && (uint64_t)rows < st->pad_rows)
		return (int64_t)st->pad_rows;
	return rows;
}

/*
 * Bytes of a tensor of shape s, with room for the rows a linear reading or
 * writing it may compute beyond its own.
 */
static size_t
cuda_value_bytes(const struct cuda_model *m, const struct graph_shape *s)
{
	size_t n = graph_shape_nelem(s);
	int64_t last = s->ndim > 0 ? s->dim[s->ndim - 1] : 1;

	if (last > 0 && (size_t)cuda_gemm_rows(m->st, (int64_t)n / last) *
	    (size_t)last > n)
		n = (size_t)cuda_gemm_rows(m->st, (int64_t)n / last) *
		    (size_t)last;
	return n * sizeof(float);
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
		off = cuda_align(off + cuda_value_bytes(m, &shapes[v]),
		    CUDA_ALIGN);
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
		pin = cuda_align(pin + cuda_value_bytes(m, &shapes[i]),
		    CUDA_PIN_ALIGN);
	}
	for (uint32_t j = 0; j < g->noutputs; j++) {
		m->pin_out[j] = pin;
		pin = cuda_align(pin + graph_shape_nelem(&shapes[g->outputs[j]]) *
		    sizeof(float), CUDA_PIN_ALIGN);
	}
	/* A request has a row at least: as many answers as rows. */
	m->pin_ans = pin;
	if (g->ninputs > 0 && shapes[0].dim[0] > 0)
		pin = cuda_align(pin + sizeof(struct cuk_answers) +
		    (size_t)shapes[0].dim[0] * sizeof(struct cuk_answer),
		    CUDA_PIN_ALIGN);
	*pinned_need = pin > 0 ? pin : CUDA_PIN_ALIGN;
}

/* Grows the arena and the staging buffer to at least the given sizes. */
static int
cuda_reserve(struct cuda_lane *l, size_t arena_need, size_t pinned_need,
    char **cause)
{
	cudaError_t err;
	size_t n;

	if (arena_need > l->arena_size) {
		n = cuda_align(arena_need + arena_need / 2, 1u << 20);
		if (l->arena != NULL)
			cudaFree(l->arena);
		l->arena = NULL;
		l->arena_size = 0;
		l->gen++;
		if ((err = cudaMalloc((void **)&l->arena, n)) != cudaSuccess) {
			l->arena = NULL;
			return cuda_err(cause, "cudaMalloc (arena)", err);
		}
		l->arena_size = n;
	}
	if (pinned_need > l->pinned_size) {
		n = cuda_align(pinned_need + pinned_need / 2, 1u << 16);
		if (l->pinned != NULL)
			cudaFreeHost(l->pinned);
		l->pinned = NULL;
		l->pinned_size = 0;
		l->gen++;
		if ((err = cudaHostAlloc((void **)&l->pinned, n,
		    cudaHostAllocMapped)) != cudaSuccess) {
			l->pinned = NULL;
			return cuda_err(cause, "cudaHostAlloc (staging)", err);
		}
		if ((err = cudaHostGetDevicePointer((void **)&l->pinned_dev,
		    l->pinned, 0)) != cudaSuccess) {
			cudaFreeHost(l->pinned);
			l->pinned = NULL;
			return cuda_err(cause, "cudaHostGetDevicePointer", err);
		}
		l->pinned_size = n;
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
cuda_gemm_nn(struct cuda_lane *l, const struct graph_node *n, int64_t M,
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
		bs = cublasSgemm(l->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)N,
		    (int)M, (int)K, &one, B, (int)N, A, (int)K, &zero, C, (int)N);
	else
		bs = cublasSgemmStridedBatched(l->blas, CUBLAS_OP_N,
		    CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, B, (int)N, sb, A,
		    (int)K, sa, &zero, C, (int)N, sc, (int)batch);
	if (bs != CUBLAS_STATUS_SUCCESS) {
		cuda_cause(cause, "%s: cublasSgemm failed: %s", n->name,
		    cublasGetStatusString(bs));
		return -1;
	}
	return 0;
}

/*
 * Row-major Y[rows,out] = act(X[rows,in] W[out,in]^T (+ b)), act a ReLU
 * when relu is set. Yfinal is where the result goes: Y, or mapped host
 * memory for an output. The product may cover gemm_rows >= rows rows when
 * it is written to Y (X and Y have room for them); everything else uses
 * rows. On cuBLASLt the bias and the ReLU run in the product's epilogue;
 * without it, cublasSgemm writes Y and our kernels add the bias and apply
 * the ReLU, the last of them writing Yfinal.
 */
static int
cuda_linear(struct cuda_lane *l, struct cuda_model *m,
    const struct graph_node *n, int64_t rows, int64_t gemm_rows, int64_t in,
    int64_t out, const float *X, const float *W, const float *b, float *Y,
    float *Yfinal, int relu, char **cause)
{
	const float one = 1.0f, zero = 0.0f;
	struct cuda_gemm_linear a;
	struct cuk_bcast bc;
	cublasStatus_t bs;
	cudaError_t err = cudaSuccess;
	const float *src = Y;
	int rc;

	if (!cuda_fits_int(gemm_rows) || !cuda_fits_int(in) ||
	    !cuda_fits_int(out)) {
		cuda_cause(cause, "%s: matrix too large for cuBLAS", n->name);
		return -1;
	}
	if (rows == 0 || out == 0)
		return 0;
	if (m->st->gemm != NULL) {
		memset(&a, 0, sizeof a);
		a.stream = l->stream;
		a.ws = l->blas_ws;
		a.ws_size = CUDA_BLAS_WORKSPACE;
		a.tf32 = m->g->precision == GRAPH_TF32;
		a.relu = relu;
		a.rows = Yfinal == Y ? gemm_rows : rows;
		a.in = in;
		a.out = out;
		a.x = X;
		a.w = W;
		a.bias = b;
		a.y = Yfinal;
		if ((rc = cuda_gemm_run(m->st->gemm, &a, cause)) != 1) {
			if (rc != 0 && cause != NULL && *cause != NULL)
				cuda_prefix(cause, n->name);
			return rc;
		}
	}
	if (Yfinal != Y && b == NULL && !relu) {
		cuda_cause(cause, "%s: direct output needs a bias or a ReLU",
		    n->name);
		return -1;
	}
	bs = cublasSgemm(l->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out,
	    (int)gemm_rows, (int)in, &one, W, (int)in, X, (int)in, &zero, Y,
	    (int)out);
	if (bs != CUBLAS_STATUS_SUCCESS) {
		cuda_cause(cause, "%s: cublasSgemm failed: %s", n->name,
		    cublasGetStatusString(bs));
		return -1;
	}
	if (b != NULL && Yfinal == Y)
		err = cuk_bias_add(Y, b, rows, out, l->stream);
	else if (b != NULL) {
		memset(&bc, 0, sizeof bc);
		bc.ndim = 2;
		bc.dim[0] = rows;
		bc.dim[1] = out;
		bc.a_stride[0] = out;
		bc.a_stride[1] = 1;
		bc.b_stride[0] = 0;
		bc.b_stride[1] = 1;
		err = cuk_binary(CUK_ADD, Yfinal, Y, b, &bc, rows * out,
		    l->stream);
		src = Yfinal;
	}
	if (err == cudaSuccess && relu)
		err = cuk_unary(CUK_RELU, Yfinal, src, rows * out, l->stream);
	if (err != cudaSuccess) {
		cuda_cause(cause, "%s: bias or relu kernel launch failed: %s",
		    n->name, cudaGetErrorString(err));
		return -1;
	}
	return 0;
}

/* Matmul with PyTorch's rules: 1-D operands and broadcast batch dims. */
static int
cuda_matmul(struct cuda_lane *l, const struct graph_node *n,
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
		return cuda_gemm_nn(l, n, no * M, N, K, A, 0, B, 0, C, 0, 1,
		    cause);
	if (na == no && nb == no)
		return cuda_gemm_nn(l, n, M, N, K, A, M * K, B, K * N, C,
		    M * N, no, cause);
	if (na == 1 && nb == no)
		return cuda_gemm_nn(l, n, M, N, K, A, 0, B, K * N, C, M * N,
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
		if (cuda_gemm_nn(l, n, M, N, K, A + oa, 0, B + ob, 0,
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
cuda_mha(struct cuda_lane *l, struct cuda_model *m,
    const struct graph_node *n, const struct graph_shape *sx, char **cause)
{
	const float *x = cuda_ptr(l, m, n->in[0]);
	const float *in_w = cuda_ptr(l, m, n->in[1]);
	const float *in_b = cuda_ptr(l, m, n->in[2]);
	const float *out_w = cuda_ptr(l, m, n->in[3]);
	const float *out_b = cuda_ptr(l, m, n->in[4]);
	float *y = cuda_ptr(l, m, n->out);
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
	qkv = (float *)(l->arena + m->scratch_off);
	qkvh = qkv + cuda_align((size_t)(3 * B * L * d), 64);
	sc = qkvh + cuda_align((size_t)(3 * B * L * d), 64);
	o = sc + cuda_align((size_t)(B * H * L * L), 64);
	merged = o + cuda_align((size_t)(B * L * d), 64);
	q = qkvh;
	k = qkvh + B * L * d;
	v = qkvh + 2 * B * L * d;
	scale = 1.0f / sqrtf((float)hd);

	if (cuda_linear(l, m, n, B * L, B * L, d, 3 * d, x, in_w, in_b, qkv,
	    qkv, 0, cause) != 0)
		return -1;
	/* Short sequences: one kernel from qkv to merged. */
	if (m->st->fuse && cuk_attention_fits(L, hd)) {
		what = "attention kernel";
		if ((err = cuk_attention(merged, qkv, B, L, H, hd, scale,
		    n->causal, l->stream)) != cudaSuccess)
			goto fail_kernel;
		goto out_proj;
	}
	what = "split kernel";
	if ((err = cuk_mha_split(qkvh, qkv, B, L, H, hd, l->stream)) !=
	    cudaSuccess)
		goto fail_kernel;
	/* scores[bh] = scale * Q K^T; column-major S^T = K Q^T. */
	bs = cublasSgemmStridedBatched(l->blas, CUBLAS_OP_T, CUBLAS_OP_N,
	    (int)L, (int)L, (int)hd, &scale, k, (int)hd, L * hd, q, (int)hd,
	    L * hd, &zero, sc, (int)L, L * L, (int)(B * H));
	if (bs != CUBLAS_STATUS_SUCCESS)
		goto fail_blas;
	what = "softmax kernel";
	if ((err = cuk_attn_softmax(sc, B * H * L, L, n->causal, l->stream)) !=
	    cudaSuccess)
		goto fail_kernel;
	/* o[bh] = P V; column-major O^T = V^T P^T. */
	bs = cublasSgemmStridedBatched(l->blas, CUBLAS_OP_N, CUBLAS_OP_N,
	    (int)hd, (int)L, (int)L, &one, v, (int)hd, L * hd, sc, (int)L,
	    L * L, &zero, o, (int)hd, L * hd, (int)(B * H));
	if (bs != CUBLAS_STATUS_SUCCESS)
		goto fail_blas;
	what = "merge kernel";
	if ((err = cuk_mha_merge(merged, o, B, L, H, hd, l->stream)) !=
	    cudaSuccess)
		goto fail_kernel;
out_proj:
	return cuda_linear(l, m, n, B * L, B * L, d, d, merged, out_w, out_b,
	    cuda_arena_ptr(l, m, n->out), y, 0, cause);

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
cuda_node(struct cuda_lane *l, struct cuda_model *m, uint32_t idx,
    const struct graph_shape *shapes, char **cause)
{
	const struct graph_node *n = &m->g->nodes[idx];
	const struct graph_shape *so = &shapes[n->out];
	const struct graph_shape *s0 = &shapes[n->in[0]];
	float *y = cuda_ptr(l, m, n->out);
	const float *x = cuda_ptr(l, m, n->in[0]);
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

		/* Fused with the ReLU after it: the ReLU's output. */
		uint32_t ov = m->fused[idx] >= 0 ?
		    m->g->nodes[m->fused[idx]].out : n->out;

		b = n->nin >= 3 ? cuda_ptr(l, m, n->in[2]) : NULL;
		return cuda_linear(l, m, n, rows, cuda_gemm_rows(m->st, rows), in,
		    out, x, cuda_ptr(l, m, n->in[1]), b,
		    cuda_arena_ptr(l, m, ov), cuda_ptr(l, m, ov),
		    m->fused[idx] >= 0, cause);
	}
	case GRAPH_OP_MATMUL:
		return cuda_matmul(l, n, s0, &shapes[n->in[1]], so, x,
		    cuda_ptr(l, m, n->in[1]), y, cause);
	case GRAPH_OP_ADD:
	case GRAPH_OP_MUL:
		cuda_bcast(s0, &shapes[n->in[1]], so, &bc);
		err = cuk_binary(n->op == GRAPH_OP_ADD ? CUK_ADD : CUK_MUL, y, x,
		    cuda_ptr(l, m, n->in[1]), &bc, nelem, l->stream);
		break;
	case GRAPH_OP_RELU:
		err = cuk_unary(CUK_RELU, y, x, nelem, l->stream);
		break;
	case GRAPH_OP_GELU:
		err = cuk_unary(n->gelu_tanh ? CUK_GELU_TANH : CUK_GELU_ERF, y, x,
		    nelem, l->stream);
		break;
	case GRAPH_OP_SILU:
		err = cuk_unary(CUK_SILU, y, x, nelem, l->stream);
		break;
	case GRAPH_OP_SOFTMAX:
		outer = 1;
		inner = 1;
		for (i = 0; i < n->axis; i++)
			outer *= s0->dim[i];
		for (i = n->axis + 1; i < s0->ndim; i++)
			inner *= s0->dim[i];
		err = cuk_softmax(y, x, outer, s0->ndim > 0 ? s0->dim[n->axis] : 1,
		    inner, l->stream);
		break;
	case GRAPH_OP_LAYER_NORM:
		i = 1;
		w = n->has_weight ? cuda_ptr(l, m, n->in[i++]) : NULL;
		b = n->has_bias ? cuda_ptr(l, m, n->in[i++]) : NULL;
		cols = s0->ndim > 0 ? s0->dim[s0->ndim - 1] : 1;
		if (m->fused[idx] >= 0) {
			/* x is the sum of the add skipped before. */
			const struct graph_node *a = &m->g->nodes[m->fused[idx]];

			if (cuda_same_shape(&shapes[a->in[0]], s0) &&
			    cuda_same_shape(&shapes[a->in[1]], s0)) {
				err = cuk_add_layer_norm(y, cuda_ptr(l, m,
				    a->in[0]), cuda_ptr(l, m, a->in[1]), w, b,
				    cols > 0 ? nelem / cols : 0, cols, n->eps,
				    l->stream);
				break;
			}
			if (cuda_node(l, m, (uint32_t)m->fused[idx], shapes,
			    cause) != 0)
				return -1;
		}
		err = cuk_layer_norm(y, x, w, b, cols > 0 ? nelem / cols : 0, cols,
		    n->eps, l->stream);
		break;
	case GRAPH_OP_MHA:
		return cuda_mha(l, m, n, s0, cause);
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
cuda_enqueue(struct cuda_lane *l, struct cuda_model *m,
    const struct graph_shape *shapes, char **cause)
{
	const struct graph *g = m->g;
	cudaError_t err;
	size_t bytes;

	for (uint32_t i = 0; i < g->ninputs && !l->zc_in && !l->dma_in; i++) {
		bytes = graph_shape_nelem(&shapes[i]) * sizeof(float);
		if (bytes == 0)
			continue;
		if (m->st->copy_kernel) {
			err = cuk_copy(cuda_arena_ptr(l, m, i),
			    (const float *)(l->pinned_dev + m->pin_in[i]),
			    (int64_t)(bytes / sizeof(float)), l->stream);
			if (err != cudaSuccess)
				return cuda_err(cause, "cuk_copy (input)", err);
		} else if ((err = cudaMemcpyAsync(l->arena + m->val_off[i],
		    l->pinned + m->pin_in[i], bytes, cudaMemcpyHostToDevice,
		    l->stream)) != cudaSuccess)
			return cuda_err(cause, "cudaMemcpyAsync (input)", err);
	}
	for (uint32_t i = 0; i < g->nnodes; i++)
		if (!m->skip[i] && cuda_node(l, m, i, shapes, cause) != 0)
			return -1;
	if (l->answer) {
		err = cuk_answer((struct cuk_answers *)(void *)(l->pinned_dev +
		    m->pin_ans), (uint32_t)shapes[0].dim[0], l->stream);
		if (err != cudaSuccess)
			return cuda_err(cause, "cuk_answer", err);
	}
	for (uint32_t j = 0; j < g->noutputs && !l->dma_out && !l->answer;
	    j++) {
		bytes = graph_shape_nelem(&shapes[g->outputs[j]]) * sizeof(float);
		if (bytes == 0 || m->zc_out[g->outputs[j]] == j + 1)
			continue;   /* written straight into mapped memory */
		if ((err = cudaMemcpyAsync(l->pinned + m->pin_out[j],
		    cuda_ptr(l, m, g->outputs[j]), bytes, cudaMemcpyDeviceToHost,
		    l->stream)) != cudaSuccess)
			return cuda_err(cause, "cudaMemcpyAsync (output)", err);
	}
	return 0;
}

/*
 * Finds lane k's graph slot for these input shapes and mode, or takes the
 * LRU one.
 */
static struct cuda_graph_slot *
cuda_slot_find(struct cuda_model *m, int k, const struct graph_shape *shapes,
    int mode, int *found)
{
	struct cuda_graph_slot *s, *lru = NULL;
	size_t sz = m->g->ninputs * sizeof *shapes;

	for (int i = 0; i < CUDA_GRAPH_SLOTS; i++) {
		s = &m->slot[k][i];
		if (s->used && s->mode == mode &&
		    memcmp(s->shapes, shapes, sz) == 0) {
			*found = 1;
			s->last = ++m->tick;
			return s;
		}
		if (lru == NULL || !s->used || (lru->used && s->last < lru->last))
			lru = s;
	}
	cuda_slot_clear(lru);
	memcpy(lru->shapes, shapes, sz);
	lru->mode = mode;
	lru->used = 1;
	lru->last = ++m->tick;
	*found = 0;
	return lru;
}

/*
 * Captures the run on lane l into a CUDA graph. Returns 0 with s->exec set,
 * or 1 when capture is not possible (s->failed set; the caller runs
 * eagerly).
 */
static int
cuda_capture(struct cuda_lane *l, struct cuda_model *m,
    struct cuda_graph_slot *s, const struct graph_shape *shapes, char **cause)
{
	cudaGraph_t graph = NULL;
	cudaError_t err;

	if (cudaStreamBeginCapture(l->stream,
	    cudaStreamCaptureModeThreadLocal) != cudaSuccess)
		goto fail_no_graph;
	/* A failure while capturing: run eagerly, which reports a real error. */
	if (cuda_enqueue(l, m, shapes, cause) != 0) {
		if (cause != NULL) {
			free(*cause);
			*cause = NULL;
		}
		cudaStreamEndCapture(l->stream, &graph);
		if (graph != NULL)
			cudaGraphDestroy(graph);
		goto fail_no_graph;
	}
	if ((err = cudaStreamEndCapture(l->stream, &graph)) != cudaSuccess ||
	    graph == NULL)
		goto fail_no_graph;
	err = cudaGraphInstantiate(&s->exec, graph, 0);
	cudaGraphDestroy(graph);
	if (err != cudaSuccess) {
		s->exec = NULL;
		goto fail_no_graph;
	}
	s->gen = l->gen;
	return 0;

fail_no_graph:
	(void)cudaGetLastError();
	s->failed = 1;
	return 1;
}

/* Remembers where lane l's outputs go and how much of each to copy. */
static int
cuda_lane_outputs(struct cuda_lane *l, struct cuda_model *m,
    const struct graph_shape *shapes, float *const *out, char **cause)
{
	const struct graph *g = m->g;
	uint32_t n = g->noutputs;
	void *p;

	if (n > l->out_cap) {
		if ((p = reallocarray(l->out, n, sizeof *l->out)) == NULL)
			goto fail_nomem;
		l->out = p;
		if ((p = reallocarray(l->out_off, n, sizeof *l->out_off)) == NULL)
			goto fail_nomem;
		l->out_off = p;
		if ((p = reallocarray(l->out_bytes, n,
		    sizeof *l->out_bytes)) == NULL)
			goto fail_nomem;
		l->out_bytes = p;
		l->out_cap = n;
	}
	for (uint32_t j = 0; j < n; j++) {
		l->out[j] = out[j];
		l->out_off[j] = m->pin_out[j];
		l->out_bytes[j] = graph_shape_nelem(&shapes[g->outputs[j]]) *
		    sizeof(float);
	}
	l->nout = n;
	return 0;

fail_nomem:
	cuda_cause(cause, "cuda: out of memory");
	return -1;
}

/* Whether [p, p + len) lies in host memory registered by host_register. */
static int
cuda_hostreg_has(const struct cuda_state *st, const void *p, size_t len)
{
	const char *c = p;

	for (uint32_t i = 0; i < st->nhreg; i++) {
		const struct cuda_hostreg *r = &st->hreg[i];

		if (c >= r->p && len <= r->len && (size_t)(c - r->p) <= r->len - len)
			return 1;
	}
	return 0;
}

/*
 * Decides how a run moves its data; *dma_in and *dma_out as for the lane
 * fields. Inputs that all lie in registered host memory come by DMA
 * straight from there (unless the kernels read them mapped, zc_in), and
 * outputs that all do go back there by DMA, sparing the copies through the
 * pinned staging on the calling thread. The run is nparts requests of
 * rows[k] rows each, part k's input i at in[k * ninputs + i] and output j
 * at out[k * noutputs + j].
 */
static void
cuda_dma_modes(const struct cuda_state *st, const struct cuda_model *m,
    const struct graph_shape *shapes, int zc_in, uint32_t nparts,
    const uint32_t *rows, const float *const *in, float *const *out,
    int *dma_in, int *dma_out)
{
	const struct graph *g = m->g;
	const struct graph_shape *sh;
	size_t row;

	*dma_in = st->nhreg > 0 && !zc_in;
	*dma_out = st->nhreg > 0 && g->noutputs > 0;
	for (uint32_t k = 0; k < nparts; k++) {
		for (uint32_t i = 0; i < g->ninputs && *dma_in; i++) {
			sh = &shapes[i];
			row = sh->dim[0] > 0 ? graph_shape_nelem(sh) /
			    (size_t)sh->dim[0] * sizeof(float) : 0;
			if (row > 0 && !cuda_hostreg_has(st,
			    in[k * g->ninputs + i], row * rows[k]))
				*dma_in = 0;
		}
		for (uint32_t j = 0; j < g->noutputs && *dma_out; j++) {
			sh = &shapes[g->outputs[j]];
			row = sh->dim[0] > 0 ? graph_shape_nelem(sh) /
			    (size_t)sh->dim[0] * sizeof(float) : 0;
			if (row > 0 && (out[k * g->noutputs + j] == NULL ||
			    !cuda_hostreg_has(st, out[k * g->noutputs + j],
			    row * rows[k])))
				*dma_out = 0;
		}
	}
}

/*
 * Queues the copies of a run's inputs from registered host memory (each
 * part's rows to their place in the batch) or its outputs to it.
 */
static int
cuda_dma_copy(struct cuda_lane *l, struct cuda_model *m,
    const struct graph_shape *shapes, uint32_t nparts, const uint32_t *rows,
    const float *const *in, float *const *out, int outputs, char **cause)
{
	const struct graph *g = m->g;
	uint32_t nv = outputs ? g->noutputs : g->ninputs;
	const struct graph_shape *sh;
	cudaError_t err;
	size_t row, off;
	char *dev;

	for (uint32_t v = 0; v < nv; v++) {
		sh = outputs ? &shapes[g->outputs[v]] : &shapes[v];
		if (sh->dim[0] <= 0 || graph_shape_nelem(sh) == 0)
			continue;
		row = graph_shape_nelem(sh) / (size_t)sh->dim[0] * sizeof(float);
		dev = outputs ? (char *)cuda_ptr(l, m, g->outputs[v]) :
		    l->arena + m->val_off[v];
		off = 0;
		for (uint32_t k = 0; k < nparts; k++) {
			err = outputs ? cudaMemcpyAsync(out[k * nv + v],
			    dev + off, row * rows[k], cudaMemcpyDeviceToHost,
			    l->stream) : cudaMemcpyAsync(dev + off,
			    in[k * nv + v], row * rows[k],
			    cudaMemcpyHostToDevice, l->stream);
			if (err != cudaSuccess)
				return cuda_err(cause, outputs ?
				    "cudaMemcpyAsync (registered output)" :
				    "cudaMemcpyAsync (registered input)", err);
			off += row * rows[k];
		}
	}
	return 0;
}

/* The lane the next run goes to, or NULL with *cause (broken, or all busy). */
static struct cuda_lane *
cuda_next_lane(struct cuda_state *st, char **cause)
{
	if (cuda_check_broken(st, cause) != 0)
		return NULL;
	if (st->inflight >= CUDA_SLOTS) {
		cuda_cause(cause, "cuda: all %d slots are in flight",
		    CUDA_SLOTS);
		return NULL;
	}
	return &st->lane[(st->head + st->inflight) % CUDA_SLOTS];
}

/*
 * Whether every answer of a run lies in registered host memory: its
 * outputs' rows, its exec_us and its mark.
 */
static int
cuda_answers_registered(const struct cuda_state *st, const struct cuda_model *m,
    const struct graph_shape *shapes, uint32_t n,
    const struct backend_answer *ans)
{
	const struct graph *g = m->g;
	const struct graph_shape *sh;
	size_t row;

	for (uint32_t k = 0; k < n; k++) {
		if (!cuda_hostreg_has(st, ans[k].mark, sizeof *ans[k].mark) ||
		    !cuda_hostreg_has(st, ans[k].exec_us,
		    sizeof *ans[k].exec_us))
			return 0;
		for (uint32_t j = 0; j < g->noutputs; j++) {
			sh = &shapes[g->outputs[j]];
			row = sh->dim[0] > 0 ? graph_shape_nelem(sh) /
			    (size_t)sh->dim[0] * sizeof(float) : 0;
			if (row > 0 && !cuda_hostreg_has(st, ans[k].dst[j],
			    row * ans[k].rows))
				return 0;
		}
	}
	return 1;
}

/*
 * Fills lane l's answer table (its staging, read by cuk_answer when the run
 * gets there) for n answers to a run started at t0_ns.
 */
static void
cuda_answer_table(struct cuda_state *st, struct cuda_lane *l,
    struct cuda_model *m, const struct graph_shape *shapes, uint32_t n,
    const struct backend_answer *ans, uint64_t t0_ns)
{
	const struct graph *g = m->g;
	struct cuk_answers *t = (struct cuk_answers *)(void *)(l->pinned +
	    m->pin_ans);
	struct cuk_answer *a = (struct cuk_answer *)(t + 1);
	const struct graph_shape *sh;
	size_t per_row, row = 0;

	t->n = n;
	t->nout = g->noutputs;
	t->end = 0;
	for (uint32_t k = 0; k < n; k++, a++) {
		for (uint32_t j = 0; j < g->noutputs; j++) {
			sh = &shapes[g->outputs[j]];
			per_row = sh->dim[0] > 0 ? graph_shape_nelem(sh) /
			    (size_t)sh->dim[0] : 0;
			a->src[j] = cuda_ptr(l, m, g->outputs[j]) +
			    row * per_row;
			a->dst[j] = ans[k].dst[j];
			a->n[j] = per_row * ans[k].rows;
		}
		a->exec_us = (unsigned long long *)ans[k].exec_us;
		a->mark = (unsigned long long *)ans[k].mark;
		a->id = ans[k].id;
		a->t0 = (unsigned long long)((int64_t)t0_ns + st->clock_off);
		row += ans[k].rows;
	}
	l->answers = t;
}

/*
 * After an answered run: the global timer at its end, seen at now, gives
 * a bound of the clocks' offset (the end was before now); the best bound
 * of each second becomes the offset for the next.
 */
static void
cuda_clock_learn(struct cuda_state *st, const struct cuda_lane *l)
{
	uint64_t end = __atomic_load_n(&l->answers->end, __ATOMIC_ACQUIRE);
	uint64_t now = cuda_now_ns();
	int64_t off;

	if (end == 0)
		return;
	off = (int64_t)(end - now);
	if (off > st->clock_best)
		st->clock_best = off;
	if (now >= st->clock_window) {
		st->clock_off = st->clock_best;
		st->clock_best = INT64_MIN;
		st->clock_window = now + 1000000000u;
	}
}

/*
 * Starts a run of nparts requests on the next free lane (see
 * cuda_dma_modes for in and out), or of nans answered requests (ans,
 * started at t0_ns; out unused): stages the inputs, launches the graph
 * (or the nodes), records the lane's event. Several parts need DMA both
 * ways, answers registered memory: without, returns 1 having done
 * nothing. Returns 0 and *ticket (the lane), or -1 with *cause and no
 * ticket outstanding.
 */
static int
cuda_start(struct cuda_state *st, struct cuda_model *m,
    const struct graph_shape *shapes, uint32_t nparts, const uint32_t *rows,
    const float *const *in, float *const *out, uint32_t nans,
    const struct backend_answer *ans, uint64_t t0_ns, void **ticket,
    char **cause)
{
	const struct graph *g = m->g;
	struct cuda_lane *l;
	struct cuda_graph_slot *s;
	size_t arena_need, pinned_need, bytes;
	cublasStatus_t bs;
	cudaError_t err;
	int found, zc_in, dma_in = 0, dma_out = 0;

	/*
	 * Small inputs are read by the kernels straight from mapped memory,
	 * sparing a copy per run (AGXQ_CUDA_ZC_IN_MAX bytes, all inputs;
	 * AGXQ_CUDA_ZC_NARROW_MAX for a model whose inputs narrow linears
	 * read).
	 * The decision follows from the shapes, so graphs captured for these
	 * shapes stay right.
	 */
	bytes = 0;
	for (uint32_t i = 0; i < g->ninputs; i++)
		bytes += graph_shape_nelem(&shapes[i]) * sizeof(float);
	zc_in = bytes <= m->zc_in_max;
	if (nans > 0) {
		if (!st->answers || g->noutputs > CUK_ANSWER_MAX_OUT ||
		    shapes[0].dim[0] <= 0 ||
		    nans > (uint64_t)shapes[0].dim[0] ||
		    !cuda_answers_registered(st, m, shapes, nans, ans))
			return 1;
	} else
		cuda_dma_modes(st, m, shapes, zc_in, nparts, rows, in, out,
		    &dma_in, &dma_out);
	if (nparts > 1 && (!st->parts || !dma_in || !dma_out))
		return 1;
	if ((l = cuda_next_lane(st, cause)) == NULL)
		return -1;
	l->run = ++st->runs;
	l->fault = 0;
	l->seen_done = 0;
	l->polls = 0;
	l->nout = 0;
	l->zc_in = zc_in;
	l->dma_in = 0;
	l->dma_out = 0;
	l->answer = 0;
	l->answers = NULL;
	if (st->fault_every != 0 && l->run % st->fault_every == 0) {
		if (st->fault_kind == CUDA_FAULT_FAIL) {
			l->fault = 1;   /* nothing launched; finish fails */
			goto submitted;
		}
		err = st->fault_kind == CUDA_FAULT_TRAP ? cuk_trap(l->stream) :
		    cuk_hang(l->stream);
		if (err != cudaSuccess || (l->flag == NULL &&
		    (err = cudaEventRecord(l->done, l->stream)) != cudaSuccess)) {
			cuda_err(cause, "injected fault kernel", err);
			goto fail;
		}
		goto submitted;
	}
	cuda_layout(m, shapes, &arena_need, &pinned_need);
	if (cuda_reserve(l, arena_need, pinned_need, cause) != 0)
		goto fail;
	if (nans == 0 && cuda_lane_outputs(l, m, shapes, out, cause) != 0)
		return -1;
	l->dma_in = dma_in;
	l->dma_out = dma_out;
	if (nans > 0) {
		l->answer = 1;
		cuda_answer_table(st, l, m, shapes, nans, ans, t0_ns);
	}
	bs = cublasSetMathMode(l->blas, g->precision == GRAPH_TF32 ?
	    CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
	if (bs != CUBLAS_STATUS_SUCCESS) {
		cuda_blas_err(cause, "cublasSetMathMode", bs);
		goto fail;
	}
	/* One part here unless dma_in. */
	for (uint32_t i = 0; i < g->ninputs && !l->dma_in; i++) {
		bytes = graph_shape_nelem(&shapes[i]) * sizeof(float);
		/* Gathered there already when the caller used cuda_stage. */
		if (bytes > 0 && (const char *)in[i] != l->pinned + m->pin_in[i])
			memcpy(l->pinned + m->pin_in[i], in[i], bytes);
	}
	if (l->dma_in && cuda_dma_copy(l, m, shapes, nparts, rows, in, out, 0,
	    cause) != 0)
		goto fail;

	s = NULL;
	if (st->use_graphs) {
		s = cuda_slot_find(m, l->index, shapes,
		    (l->dma_in ? CUDA_MODE_DMA_IN : 0) |
		    (l->dma_out ? CUDA_MODE_DMA_OUT : 0) |
		    (l->answer ? CUDA_MODE_ANSWER : 0), &found);
		if (s->exec != NULL && s->gen != l->gen) {
			cudaGraphExecDestroy(s->exec);
			s->exec = NULL;
		}
		/* Capture on the second run with these shapes, not the first. */
		if (found && s->exec == NULL && !s->failed)
			(void)cuda_capture(l, m, s, shapes, cause);
		s->hits++;
	}
	if (s != NULL && s->exec != NULL) {
		if ((err = cudaGraphLaunch(s->exec, l->stream)) != cudaSuccess) {
			cuda_err(cause, "cudaGraphLaunch", err);
			goto fail;
		}
	} else if (cuda_enqueue(l, m, shapes, cause) != 0)
		goto fail;
	if (l->dma_out && cuda_dma_copy(l, m, shapes, nparts, rows, in, out, 1,
	    cause) != 0)
		goto fail;
	/*
	 * After everything of the run, with a fence before (the default).
	 * The lane's stream holds this run alone: with a flag, the stream
	 * itself stands for the event (cuda_lane_done, cuda_wait).
	 */
	if (l->flag != NULL) {
		if (st->write_value((CUstream)l->stream, l->flag_dev,
		    (cuuint32_t)l->run, 0) != CUDA_SUCCESS) {
			cuda_cause(cause, "cuda: cuStreamWriteValue32 failed");
			goto fail;
		}
	} else if ((err = cudaEventRecord(l->done, l->stream)) !=
	    cudaSuccess) {
		cuda_err(cause, "cudaEventRecord", err);
		goto fail;
	}

submitted:
	st->inflight++;
	*ticket = l;
	return 0;

fail:
	l->nout = 0;
	l->answer = 0;
	l->answers = NULL;
	cuda_after_failure(st, l, cause);
	return -1;
}

/* Starts a run of nparts requests: cuda_start. */
static int
cuda_submit_rows(void *state, void *bmodel, const struct graph_shape *shapes,
    uint32_t nparts, const uint32_t *rows, const float *const *in,
    float *const *out, void **ticket, char **cause)
{
	return cuda_start(state, bmodel, shapes, nparts, rows, in, out, 0,
	    NULL, 0, ticket, cause);
}

/* Starts a run whose outputs go to n answers: cuda_start. */
static int
cuda_submit_answers(void *state, void *bmodel,
    const struct graph_shape *shapes, const float *const *in, uint32_t n,
    const struct backend_answer *ans, uint64_t t0_ns, void **ticket,
    char **cause)
{
	uint32_t rows = shapes[0].dim[0] > 0 ? (uint32_t)shapes[0].dim[0] : 0;

	if (n == 0)
		return 1;
	return cuda_start(state, bmodel, shapes, 1, &rows, in, NULL, n, ans,
	    t0_ns, ticket, cause);
}

/* Starts one run (one part of all its rows): cuda_submit_rows. */
static int
cuda_submit(void *state, void *bmodel, const struct graph_shape *shapes,
    const float *const *in, float *const *out, void **ticket, char **cause)
{
	uint32_t rows = shapes[0].dim[0] > 0 ? (uint32_t)shapes[0].dim[0] : 0;

	return cuda_submit_rows(state, bmodel, shapes, 1, &rows, in, out,
	    ticket, cause);
}

/*
 * Whether lane l's run is over: its flag says so (the run's number, stored
 * after everything else of it); without flags its event does, asked every
 * time; with them its stream is asked every CUDA_FLAG_QUERY_EVERY calls,
 * since a failed run never writes its flag. 1 done, 0 not yet, -1 with
 * *err on an error.
 */
static int
cuda_lane_done(struct cuda_lane *l, cudaError_t *err)
{
	if (l->seen_done)
		return 1;
	if (l->flag != NULL) {
		if (__atomic_load_n(l->flag, __ATOMIC_ACQUIRE) ==
		    (uint32_t)l->run) {
			l->seen_done = 1;
			return 1;
		}
		if (++l->polls % CUDA_FLAG_QUERY_EVERY != 0)
			return 0;
	}
	*err = l->flag != NULL ? cudaStreamQuery(l->stream) :
	    cudaEventQuery(l->done);
	if (*err == cudaErrorNotReady)
		return 0;
	if (*err != cudaSuccess)
		return -1;
	l->seen_done = 1;
	return 1;
}

/*
 * Waits for lane l's run: polls for CUDA_SPIN_NS, then blocks on its event
 * (its stream, with flags).
 * Not at all when a poll saw it done: each query costs about 1 us under
 * load.
 */
static cudaError_t
cuda_wait(struct cuda_lane *l)
{
	cudaError_t err = cudaSuccess;
	uint64_t t0 = 0;
	unsigned n = 0;
	int d;

	while ((d = cuda_lane_done(l, &err)) == 0) {
		if (++n % 16 != 0)
			continue;
		if (t0 == 0)
			t0 = cuda_now_ns();
		else if (cuda_now_ns() - t0 > CUDA_SPIN_NS)
			return l->flag != NULL ?
			    cudaStreamSynchronize(l->stream) :
			    cudaEventSynchronize(l->done);
	}
	return d > 0 ? cudaSuccess : err;
}

/* Whether the run of ticket is over (finish would not wait). */
static int
cuda_poll(void *state, void *ticket)
{
	struct cuda_lane *l = ticket;
	cudaError_t err;

	(void)state;
	return l->fault || cuda_lane_done(l, &err) != 0;
}

/*
 * Finishes the oldest run in flight, which must be ticket: waits for it and
 * copies its outputs to the caller's buffers. The lane is free afterwards,
 * failed or not.
 */
static int
cuda_finish(void *state, void *ticket, char **cause)
{
	struct cuda_state *st = state;
	struct cuda_lane *l = ticket;
	cudaError_t err;

	if (st->inflight == 0 || l != &st->lane[st->head]) {
		cuda_cause(cause, "cuda: finish of a run that is not the oldest "
		    "in flight");
		return -1;
	}
	st->head = (st->head + 1) % CUDA_SLOTS;
	st->inflight--;
	if (l->fault) {
		cuda_cause(cause, "cuda: injected fault (AGXQ_CUDA_FAULT_EVERY=%lu, "
		    "run %llu)", st->fault_every, (unsigned long long)l->run);
		return -1;
	}
	if ((err = cuda_wait(l)) != cudaSuccess) {
		cuda_err(cause, l->flag != NULL ? "waiting for the run (stream)" :
		    "waiting for the run (event)", err);
		cuda_after_failure(st, l, cause);
		return -1;
	}
	if (st->broken)
		return cuda_check_broken(st, cause);
	if (l->answer)
		cuda_clock_learn(st, l);
	for (uint32_t j = 0; j < l->nout && !l->dma_out; j++)
		if (l->out_bytes[j] > 0 && l->out[j] != NULL)
			memcpy(l->out[j], l->pinned + l->out_off[j],
			    l->out_bytes[j]);
	return 0;
}

/*
 * Where the next submit of m with these shapes stages its inputs: the next
 * lane's mapped pinned buffer, grown now if it must be.
 */
static int
cuda_stage(void *state, void *bmodel, const struct graph_shape *shapes,
    float **in, char **cause)
{
	struct cuda_state *st = state;
	struct cuda_model *m = bmodel;
	struct cuda_lane *l;
	size_t arena_need, pinned_need;

	if ((l = cuda_next_lane(st, cause)) == NULL)
		return -1;
	cuda_layout(m, shapes, &arena_need, &pinned_need);
	if (cuda_reserve(l, arena_need, pinned_need, cause) != 0)
		return -1;
	for (uint32_t i = 0; i < m->g->ninputs; i++)
		in[i] = (float *)(void *)(l->pinned + m->pin_in[i]);
	return 0;
}

/* Output j of a finished run that was submitted with out[j] NULL. */
static const float *
cuda_result(void *state, void *ticket, uint32_t j)
{
	struct cuda_lane *l = ticket;

	(void)state;
	return (const float *)(const void *)(l->pinned + l->out_off[j]);
}

/* Runs the model once: submit, then finish. Nothing else may be in flight. */
static int
cuda_run(void *state, void *bmodel, const struct graph_shape *shapes,
    const float *const *in, float *const *out, char **cause)
{
	struct cuda_state *st = state;
	void *ticket;

	if (st->inflight != 0) {
		cuda_cause(cause, "cuda: run while %u runs are in flight",
		    st->inflight);
		return -1;
	}
	if (cuda_submit(state, bmodel, shapes, in, out, &ticket, cause) != 0)
		return -1;
	return cuda_finish(state, ticket, cause);
}

/*
 * Page-locks host memory [p, p + len) (a client's shared memory region) so
 * that runs whose inputs or outputs lie in it move them by DMA.
 */
static int
cuda_host_register(void *state, void *p, size_t len, char **cause)
{
	struct cuda_state *st = state;
	struct cuda_hostreg *n;
	cudaError_t err;

	if (cuda_check_broken(st, cause) != 0)
		return -1;
	if (!st->hostreg) {
		cuda_cause(cause, "cuda: registering host memory is off "
		    "(AGXQ_CUDA_HOSTREG=0)");
		return -1;
	}
	if (st->nhreg == st->hreg_cap) {
		uint32_t cap = st->hreg_cap ? st->hreg_cap * 2 : 8;

		if ((n = reallocarray(st->hreg, cap, sizeof *n)) == NULL) {
			cuda_cause(cause, "cuda: out of memory");
			return -1;
		}
		st->hreg = n;
		st->hreg_cap = cap;
	}
	/* Mapped: cuk_answer writes answers into it at its host addresses. */
	if ((err = cudaHostRegister(p, len, cudaHostRegisterMapped)) !=
	    cudaSuccess) {
		(void)cudaGetLastError();
		return cuda_err(cause, "cudaHostRegister", err);
	}
	st->hreg[st->nhreg].p = p;
	st->hreg[st->nhreg].len = len;
	st->nhreg++;
	return 0;
}

/* Undoes cuda_host_register(p) before the memory is unmapped. */
static void
cuda_host_unregister(void *state, void *p)
{
	struct cuda_state *st = state;

	for (uint32_t i = 0; i < st->nhreg; i++) {
		if (st->hreg[i].p != p)
			continue;
		if (!st->broken)
			(void)cudaHostUnregister(p);
		(void)cudaGetLastError();
		st->hreg[i] = st->hreg[--st->nhreg];
		return;
	}
}

const struct backend_ops backend_cuda_ops = {
	.name = "cuda",
	.env_prefix = "AGXQ_CUDA_",
	.open = cuda_open,
	.close = cuda_close,
	.model_load = cuda_model_load,
	.model_free = cuda_model_free,
	.run = cuda_run,
	.slots = CUDA_SLOTS,
	.warm = 1,
	.healthy = cuda_healthy,
	.stage = cuda_stage,
	.result = cuda_result,
	.host_register = cuda_host_register,
	.host_unregister = cuda_host_unregister,
	.submit = cuda_submit,
	.submit_parts = cuda_submit_rows,
	.submit_answers = cuda_submit_answers,
	.finish = cuda_finish,
	.poll = cuda_poll,
};
