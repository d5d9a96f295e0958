/*
 * agxq.h — client library for agxqd, the GPU command-queue proxy.
 *
 * An app describes a model once as a small graph (agxq_graph_*), loads it into
 * the daemon (agxq_model_load) and sends inference requests from as many
 * threads as it likes. One agxq_client is safe to share between threads.
 *
 * Every function that can fail returns 0 (or a non-negative value) on success
 * and a negative AGXQ_E* code on failure; agxq_strerror() names the code. The
 * library never prints, never aborts, and leaves signal handling alone.
 */
#ifndef AGXQ_H
#define AGXQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(AGXQ_BUILDING) && defined(__GNUC__)
#define AGXQ_EXTERN __attribute__((visibility("default")))
#else
#define AGXQ_EXTERN
#endif

#define AGXQ_VERSION "0.1.0"
#define AGXQ_MAX_DIMS 6
#define AGXQ_DEFAULT_SOCKET "/tmp/agxqd.sock"
#define AGXQ_NONE (-1) /* an absent optional value in the graph builder */

/* Error codes (negative). Keep in step with agxq.proto's ErrorCode. */
#define AGXQ_EINVAL (-1)        /* invalid argument */
#define AGXQ_ENOMEM (-2)        /* out of memory */
#define AGXQ_ECONNECT (-3)      /* cannot connect to agxqd */
#define AGXQ_EDISCONNECTED (-4) /* connection to agxqd lost */
#define AGXQ_EPROTO (-5)        /* malformed frame or message */
#define AGXQ_EVERSION (-6)      /* protocol version mismatch */
#define AGXQ_ETOOBIG (-7)       /* message over the size limit */
#define AGXQ_ECORRUPT (-8)      /* corrupt compressed data */
#define AGXQ_ENOMODEL (-9)      /* unknown model */
#define AGXQ_EGRAPH (-10)       /* invalid graph */
#define AGXQ_ESHAPE (-11)       /* tensor shape does not fit the model */
#define AGXQ_EDTYPE (-12)       /* unsupported dtype */
#define AGXQ_EBUSY (-13)        /* queue full, try again later */
#define AGXQ_ETIMEDOUT (-14)    /* request timed out */
#define AGXQ_ESHUTDOWN (-15)    /* daemon is shutting down */
#define AGXQ_EBACKEND (-16)     /* device or backend failure */
#define AGXQ_ELIMIT (-17)       /* resource limit reached */
#define AGXQ_EUNSUPPORTED (-18) /* not supported here */
#define AGXQ_EINTERNAL (-19)    /* internal error */
#define AGXQ_EPERM (-20)        /* not allowed to connect or to use this */
#define AGXQ_EAGAIN (-21)       /* not run: agxqd is resetting its device; safe to retry */
#define AGXQ_ERRNO_MAX 21

/* Returns a static description of an AGXQ_E* code. */
AGXQ_EXTERN const char *agxq_strerror(int code);

typedef enum agxq_dtype { AGXQ_FLOAT32 = 1 } agxq_dtype;

/* A tensor: row-major, little-endian. data is borrowed, never freed by the library. */
typedef struct agxq_tensor {
	agxq_dtype dtype;
	int ndim;
	int64_t shape[AGXQ_MAX_DIMS];
	void *data;
} agxq_tensor;

/* Number of elements of t (product of its shape). */
AGXQ_EXTERN size_t agxq_tensor_nelem(const agxq_tensor *t);

/* ---- Graph builder -------------------------------------------------------
 * Each function returns the number of the value it defines (>= 0) or a
 * negative AGXQ_E* code. The first error sticks: later calls return it too,
 * and loading the graph fails with it. A graph is not thread-safe.
 */
typedef struct agxq_graph agxq_graph;

typedef enum agxq_precision {
	AGXQ_PRECISION_FP32 = 0, /* default, as PyTorch */
	AGXQ_PRECISION_TF32 = 1,
	AGXQ_PRECISION_FP16 = 2,
	AGXQ_PRECISION_BF16 = 3
} agxq_precision;

/* Creates an empty graph, or NULL when out of memory. */
AGXQ_EXTERN agxq_graph *agxq_graph_new(void);
/* Frees a graph; accepts NULL. Models loaded from it are unaffected. */
AGXQ_EXTERN void agxq_graph_free(agxq_graph *g);
/* Sets the precision the backend may use for matmuls (default FP32). */
AGXQ_EXTERN int agxq_graph_set_precision(agxq_graph *g, agxq_precision p);
/* Declares a graph input [batch, sample_shape...]; -1 in sample_shape marks a free dim. */
AGXQ_EXTERN int agxq_graph_input(agxq_graph *g, const int64_t *sample_shape, int ndim);
/* Adds a float32 constant; copies data (nelem = product of shape). */
AGXQ_EXTERN int agxq_graph_const(agxq_graph *g, const int64_t *shape, int ndim, const float *data);
/* y = x W^T + b (nn.Linear); b may be AGXQ_NONE. */
AGXQ_EXTERN int agxq_graph_linear(agxq_graph *g, int x, int w, int b);
/* torch.matmul(a, b) for a [..., m, k] and b [k, n] or [..., k, n] with equal leading dims. */
AGXQ_EXTERN int agxq_graph_matmul(agxq_graph *g, int a, int b);
/* Elementwise a + b, a * b with broadcasting. */
AGXQ_EXTERN int agxq_graph_add(agxq_graph *g, int a, int b);
AGXQ_EXTERN int agxq_graph_mul(agxq_graph *g, int a, int b);
AGXQ_EXTERN int agxq_graph_relu(agxq_graph *g, int x);
/* GELU, exact (erf) or with approximate='tanh'. */
AGXQ_EXTERN int agxq_graph_gelu(agxq_graph *g, int x, int tanh_approx);
AGXQ_EXTERN int agxq_graph_silu(agxq_graph *g, int x);
/* Softmax along axis (negative counts from the end). */
AGXQ_EXTERN int agxq_graph_softmax(agxq_graph *g, int x, int axis);
/* LayerNorm over the last dim; weight and bias may be AGXQ_NONE. */
AGXQ_EXTERN int agxq_graph_layer_norm(agxq_graph *g, int x, int weight, int bias, float eps);
/* Self-attention as nn.MultiheadAttention(batch_first=True) on x [B, S, d]. */
AGXQ_EXTERN int agxq_graph_mha(agxq_graph *g, int x, int in_w, int in_b,
    int out_w, int out_b, int heads, int causal);
/* Marks value v as a graph output (in call order). */
AGXQ_EXTERN int agxq_graph_output(agxq_graph *g, int v);
/* Names the last node added (for error messages); copies name. */
AGXQ_EXTERN int agxq_graph_name(agxq_graph *g, const char *name);

/* ---- Reference models (DESIGN.md: Workloads) ------------------------------
 * Deterministic weights drawn from `seed` as agxq_reference_weights()
 * describes, so a PyTorch module given the same numbers matches exactly.
 */
typedef enum agxq_reference {
	AGXQ_REF_LINEAR = 1,      /* nn.Linear(256, 128), input [4, 256] */
	AGXQ_REF_MLP = 2,         /* 256-512-256-128 with ReLU, input [4, 256] */
	AGXQ_REF_TRANSFORMER = 3  /* TransformerEncoderLayer(256, 4), input [4, 32, 256] */
} agxq_reference;

/* Builds reference model `which` into a new graph (*out). */
AGXQ_EXTERN int agxq_reference_build(agxq_reference which, uint64_t seed, agxq_graph **out);
/* Fills in the reference request input shape for `which` with batch rows. */
AGXQ_EXTERN int agxq_reference_input_shape(agxq_reference which, int64_t batch, agxq_tensor *t);
/* Returns "linear", "mlp", "transformer", or NULL. */
AGXQ_EXTERN const char *agxq_reference_name(agxq_reference which);
/* Parses a reference name; returns the agxq_reference or AGXQ_EINVAL. */
AGXQ_EXTERN int agxq_reference_parse(const char *name);

/*
 * A transformer encoder layer (nn.TransformerEncoderLayer, batch_first, relu,
 * dropout off) of any size. norm_first selects pre-norm.
 */
AGXQ_EXTERN int agxq_build_transformer(agxq_graph *g, int x, int d_model, int nhead,
    int dim_ff, float eps, int norm_first, uint64_t seed);
/* nn.Linear(in, out) with seeded weights, applied to x. */
AGXQ_EXTERN int agxq_build_linear(agxq_graph *g, int x, int in, int out, uint64_t seed);

/*
 * Fills dst[0..n) with the deterministic stream the reference builders use:
 * value i of stream `seed` is uniform in [-scale, scale). Exposed so tests and
 * scripts can reproduce weights (tests/golden/make_golden.py mirrors it).
 */
AGXQ_EXTERN void agxq_reference_weights(uint64_t seed, float scale, float *dst, size_t n);

/* ---- Results ------------------------------------------------------------- */
typedef struct agxq_result agxq_result;

AGXQ_EXTERN int agxq_result_noutputs(const agxq_result *r);
/* Output i; valid until agxq_result_free(r). NULL when i is out of range. */
AGXQ_EXTERN const agxq_tensor *agxq_result_output(const agxq_result *r, int i);
/* Time queued and executing in the daemon, and rows in the launch it ran in. */
AGXQ_EXTERN void agxq_result_info(const agxq_result *r, uint64_t *queue_us,
    uint64_t *exec_us, uint32_t *batch_rows);
/* Frees a result; accepts NULL. */
AGXQ_EXTERN void agxq_result_free(agxq_result *r);

/* ---- Client -------------------------------------------------------------- */
typedef struct agxq_client agxq_client;
typedef struct agxq_model agxq_model;

/*
 * Connects to agxqd at socket_path (NULL: $AGXQ_SOCKET, else
 * AGXQ_DEFAULT_SOCKET) and performs the handshake. Starts one reader thread.
 *
 * Environment, read here: AGXQ_SHM_THRESHOLD (bytes of input from which a
 * request's tensors go through shared memory; default 65536, 0: never);
 * AGXQ_RING=0 (no request ring: every request goes by the socket);
 * AGXQ_RING_RAW=0 (requests in the ring go as packed frames, not in the
 * raw layout agxqd reads in place, proto/rawinfer.h);
 * AGXQ_SPIN_US (how long a synchronous caller polls for its reply before
 * it sleeps; default 50 us for the socket and 200 us for the ring on
 * hosts with more than 4 cores, 0 on smaller ones). The ring is a shared
 * memory area through which synchronous requests and their replies pass
 * without a system call while agxqd polls it; it is made on the first
 * synchronous agxq_infer (docs/SHM.md). AGXQ_COMPRESS_THRESHOLD: frames
 * of at least this many bytes (default 65536) are sent zstd-compressed
 * when that pays (0: never). A value of these, or of AGXQ_RECONNECT and
 * AGXQ_RETRY_MS below, that cannot be used, such as a word where a number
 * goes, keeps the default and is reported on stderr once per process
 * ("agxq: AGXQ_SPIN_US=..."). Switches take 0 or 1.
 *
 * Reconnecting: when the connection is lost (agxqd killed or restarted),
 * every request in flight completes exactly once with AGXQ_EDISCONNECTED
 * (sync calls return it, async callbacks fire with it); none is resent. The
 * next agxq_model_load, agxq_model_unload, agxq_infer, agxq_infer_async or
 * agxq_stats_json on the client, from any thread but not from an async
 * callback, reconnects to the same socket path (one thread does it, the
 * others wait for it), shakes hands again and loads every model handle
 * still open again, so the handles stay valid (a model the new daemon
 * refuses gets AGXQ_ENOMODEL). Each handle keeps a copy of its encoded
 * LoadModel for this. If the daemon is not back, the call returns
 * AGXQ_EDISCONNECTED at once; a later call tries again, at most every
 * 100 ms. A request prepared for the old connection is never sent on the
 * new one (it fails with AGXQ_EDISCONNECTED). After a reconnect, shared
 * memory is off for the client (requests go inline); results still alive
 * keep their mappings. AGXQ_RECONNECT=0 in the environment at connect time
 * turns reconnecting off: once lost, every call fails with
 * AGXQ_EDISCONNECTED.
 *
 * Device resets: when agxqd's device fails beyond repair in its process (a
 * sticky GPU fault), agxqd replaces the process that drives it. Requests in
 * the batches that hit the fault fail with AGXQ_EBACKEND; every other
 * request that was sent but not run completes with AGXQ_EAGAIN, also those
 * the daemon had not read yet when it closed the connection. agxq_infer
 * sends such a request again by itself (after reconnecting as above) for
 * up to $AGXQ_RETRY_MS milliseconds (default 10000; 0: never), so a
 * synchronous caller sees a result or AGXQ_EBACKEND; async callbacks get
 * AGXQ_EAGAIN and may resubmit. Calls made while the new daemon process is
 * not serving yet return AGXQ_EAGAIN; if agxqd gives up (more device resets
 * than its --max-restarts), they return AGXQ_ECONNECT.
 */
AGXQ_EXTERN int agxq_connect(const char *socket_path, agxq_client **out);
/*
 * Closes the connection; requests still in flight complete with
 * AGXQ_EDISCONNECTED (async callbacks fire before this returns). Model
 * handles still open are freed (the daemon releases their models with the
 * connection): do not use them afterwards. Accepts NULL. Must not be called
 * from a callback.
 */
AGXQ_EXTERN void agxq_close(agxq_client *c);

/* Loads graph g (not consumed) into the daemon; identical models are shared. */
AGXQ_EXTERN int agxq_model_load(agxq_client *c, const agxq_graph *g, const char *name, agxq_model **out);
/* Unloads a model and frees its handle; accepts NULL. */
AGXQ_EXTERN int agxq_model_unload(agxq_model *m);

typedef struct agxq_infer_opts {
	uint64_t timeout_us; /* 0: no timeout */
	int32_t priority;    /* higher runs first; default 0 */
} agxq_infer_opts;

/*
 * Runs one request and waits for it. inputs are borrowed for the call.
 * On success *out holds the result (free with agxq_result_free).
 * opts may be NULL. Must not be called from an async callback.
 */
AGXQ_EXTERN int agxq_infer(agxq_model *m, const agxq_tensor *inputs, int ninputs,
    const agxq_infer_opts *opts, agxq_result **out);

/*
 * Completion of an async request, on the library's reader thread. status is
 * 0 or AGXQ_E*; r is NULL on error and otherwise valid only until the
 * callback returns (the library frees it). Callbacks may start more async
 * requests but must not block.
 */
typedef void (*agxq_infer_cb)(void *arg, int status, agxq_result *r);

/*
 * Sends one request and returns without waiting; inputs are copied before
 * it returns. cb fires exactly once, unless this returns an error, in which
 * case it never fires.
 */
AGXQ_EXTERN int agxq_infer_async(agxq_model *m, const agxq_tensor *inputs, int ninputs,
    const agxq_infer_opts *opts, agxq_infer_cb cb, void *arg);

/* Protocol version and backend name the daemon reported at connect. */
AGXQ_EXTERN const char *agxq_server_backend(const agxq_client *c);

/*
 * Fetches the daemon's statistics as a JSON document in a malloc'd string
 * (*json, caller frees).
 */
AGXQ_EXTERN int agxq_stats_json(agxq_client *c, char **json);

#ifdef __cplusplus
}
#endif
#endif
