/*
 * backend: the interface every device backend implements. A backend owns one
 * device handle; all its functions are called only from the engine's owner
 * thread (engine.c checks). Nothing outside server/engine.c and the backends
 * themselves includes a backend's own headers.
 */
#ifndef AGXQ_BACKEND_H
#define AGXQ_BACKEND_H

#include <stdint.h>

#include "graph.h"

/* Outputs a run can write straight to the requests that wait for them. */
#define BACKEND_ANSWER_MAX_OUT 4

/*
 * One request of a batch answered where its client reads the reply
 * (submit_answers): its rows of output j go to dst[j] (host memory
 * registered with host_register), then the microseconds since the batch
 * started to *exec_us, then id to *mark, last and once all else is
 * visible to other processes.
 */
struct backend_answer {
	uint32_t rows;
	float *dst[BACKEND_ANSWER_MAX_OUT];
	uint64_t *exec_us;
	uint64_t *mark;
	uint64_t id;
};

struct backend_ops {
	const char *name;
	const char *env_prefix;     /* of its settings (see envset.h) */

	/* Opens device number `device`. Returns 0 and *state, or -1 with *cause. */
	int (*open)(int device, void **state, char **cause);

	/* Releases everything the backend holds; accepts NULL state. */
	void (*close)(void *state);

	/*
	 * Prepares graph g for running: uploads its constants once. g outlives
	 * the backend model. Returns 0 and *bmodel, or -1 with *cause.
	 */
	int (*model_load)(void *state, const struct graph *g, void **bmodel,
	    char **cause);

	/* Frees a backend model; accepts NULL. */
	void (*model_free)(void *state, void *bmodel);

	/*
	 * Runs the model once. shapes[] holds the concrete shape of every value
	 * (from graph_infer); in[i] points to host data of graph input i and
	 * out[j] to host memory for graph output j, sized from shapes. Returns
	 * when out[] is written: 0, or -1 with *cause.
	 */
	int (*run)(void *state, void *bmodel, const struct graph_shape *shapes,
	    const float *const *in, float *const *out, char **cause);

	/*
	 * Optional overlapped runs, for devices that can work on one batch
	 * while the executor prepares the next (NULL for backends that only
	 * run synchronously). submit starts a run like run() and returns at
	 * once with *ticket; shapes are only valid during the call, but in[]
	 * and out[] stay valid until the ticket is finished. finish waits for
	 * a ticket and returns when its out[] is written: 0, or -1 with
	 * *cause. At most `slots` tickets are outstanding, finished oldest
	 * first.
	 */
	int slots;

	/*
	 * 1 when the first pass of a new batch size costs far more than the
	 * next (cuda: it times the linears' GEMM algorithms), so models are
	 * warmed when they load (engine_model_warm) unless AGXQ_WARM=0.
	 */
	int warm;

	/*
	 * Optional: 0 when the device hit a fault that only closing and
	 * reopening the backend can clear (engine_reset does that).
	 */
	int (*healthy)(void *state);

	int (*submit)(void *state, void *bmodel,
	    const struct graph_shape *shapes, const float *const *in,
	    float *const *out, void **ticket, char **cause);
	int (*finish)(void *state, void *ticket, char **cause);

	/*
	 * Optional with submit: 1 when finish(ticket) would not wait (the
	 * run is over, or failed), 0 while the device still works on it.
	 */
	int (*poll)(void *state, void *ticket);

	/*
	 * Optional with submit, to move each byte once: stage fills in[]
	 * with the host buffers the next submit of bmodel with these shapes
	 * reads its inputs from; a caller that gathers a batch there and
	 * passes the same pointers to submit spares submit its copy (valid
	 * until that submit). 0, or -1 with *cause. result, after
	 * finish(ticket), tells where output j of that run lies when submit
	 * was given out[j] == NULL (finish then copies nothing for it);
	 * valid until the next submit.
	 */
	int (*stage)(void *state, void *bmodel, const struct graph_shape *shapes,
	    float **in, char **cause);
	const float *(*result)(void *state, void *ticket, uint32_t j);

	/*
	 * Optional: host_register page-locks host memory [p, p + len) for the
	 * device, so that runs whose inputs or outputs lie inside it move
	 * them directly (no copy on the calling thread); 0, or -1 with
	 * *cause. host_unregister(p) undoes it before the memory is unmapped.
	 * close undoes what is left.
	 */
	int (*host_register)(void *state, void *p, size_t len, char **cause);
	void (*host_unregister)(void *state, void *p);

	/*
	 * Optional, with host_register: submit for a batch of nparts
	 * requests whose tensors stay where they are, in registered memory:
	 * part k has rows[k] rows (in batch order), its input i at
	 * in[k * ninputs + i] and its output j written to
	 * out[k * noutputs + j]. Returns 1, having done nothing, when that
	 * memory is not all registered (the caller gathers the batch instead).
	 */
	int (*submit_parts)(void *state, void *bmodel,
	    const struct graph_shape *shapes, uint32_t nparts,
	    const uint32_t *rows, const float *const *in, float *const *out,
	    void **ticket, char **cause);

	/*
	 * Optional, with host_register: submit for a batch of n requests
	 * (their rows in batch order) whose outputs the device writes to
	 * each request's answer (struct backend_answer; at most
	 * BACKEND_ANSWER_MAX_OUT outputs) as soon as the run has made them;
	 * the batch started at t0_ns (CLOCK_MONOTONIC). finish then copies
	 * nothing. Returns 1, having done nothing, when the backend cannot
	 * answer this run so (the caller submits it plainly).
	 */
	int (*submit_answers)(void *state, void *bmodel,
	    const struct graph_shape *shapes, const float *const *in,
	    uint32_t n, const struct backend_answer *ans, uint64_t t0_ns,
	    void **ticket, char **cause);
};

extern const struct backend_ops backend_cpu_ops;
#ifdef AGXQ_HAVE_CUDA
extern const struct backend_ops backend_cuda_ops;
#endif

#endif
