/*
 * engine: runs validated graphs on one backend. The thread that opens an
 * engine is its owner; every backend call goes through here and is checked
 * to run on the owner (a violation is counted, and aborts in debug builds
 * unless the engine was opened with ENGINE_OWNER_COUNT). Used by agxqd's
 * executor thread and by the client library's in-process direct mode.
 */
#ifndef AGXQ_ENGINE_H
#define AGXQ_ENGINE_H

#include <stdint.h>

#include "backend.h"
#include "graph.h"

struct engine;
struct engine_model;

enum engine_owner_mode {
	ENGINE_OWNER_ABORT, /* debug builds abort on a call off the owner thread */
	ENGINE_OWNER_COUNT  /* count only (tests that prove the check works) */
};

/* Names of backends compiled in, NULL-terminated. */
const char *const *engine_backends(void);

/*
 * Opens backend `name` ("cpu", "cuda") on device `device`; the calling thread
 * becomes the owner. Returns 0 and *out, or -1 with *cause (caller frees).
 */
int engine_open(const char *name, int device, enum engine_owner_mode mode,
    struct engine **out, char **cause);

/* Closes the engine and its backend; accepts NULL. Owner thread only. */
void engine_close(struct engine *e);

/* Whether the backend still works; 0 after a fault that needs engine_reset. */
int engine_healthy(struct engine *e);

/*
 * Recovers from a lost device: closes the backend, opens it again and
 * reloads every loaded model; engine_model handles stay valid (the
 * models are not warmed again). Returns 0, or -1 with *cause (the engine
 * then fails every run with a clear error).
 */
int engine_reset(struct engine *e, char **cause);

/* Backend name of an open engine. */
const char *engine_backend_name(const struct engine *e);

/*
 * Loads graph g on the backend. g must outlive the model. Returns 0 and
 * *out, or -1 with *cause.
 */
int engine_model_load(struct engine *e, const struct graph *g,
    struct engine_model **out, char **cause);

/* Frees a model; accepts NULL. */
void engine_model_free(struct engine *e, struct engine_model *m);

/* 1 when the backend wants its models warmed at load (backend_ops.warm). */
int engine_warms(const struct engine *e);

/*
 * Runs m once at each power-of-two batch below max_rows and at max_rows,
 * with zeroed inputs, the outputs thrown away, so that what a backend
 * does on the first pass of a new batch size (cuda: time the linears'
 * GEMM algorithms, one timing for each power-of-two range of rows) is
 * done now and not in the batches served. A model with an input
 * dimension other than the batch left open is not warmed: the sizes its
 * requests will have are unknown (warming it before its first batch of
 * each new sample shape was measured: one long stall that did more work
 * than the batches' own timings; docs/GPU.md, 2026-12-08). Returns 0 with
 * *passes run (0 when there was nothing to do), or -1 with *cause naming
 * the batch that failed (*passes: those before it).
 */
int engine_model_warm(struct engine *e, struct engine_model *m,
    int64_t max_rows, uint32_t *passes, char **cause);

/*
 * Runs one batch. in_shapes[i]/in[i] describe graph input i (concrete,
 * batch first). Output j is written to out[j], which the caller sized from
 * out_shapes[j] as computed by graph_infer (engine_output_shapes helps).
 * Returns 0, or -1 with *cause.
 */
int engine_run(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, const float *const *in,
    float *const *out, char **cause);

/* Runs that may be in flight at once: 1 unless the backend overlaps them. */
int engine_slots(const struct engine *e);

/*
 * Starts one batch like engine_run and returns 0 with *ticket, or -1 with
 * *cause. in[] and out[] must stay valid until engine_finish(*ticket). On a
 * backend without overlapped runs this runs the batch to completion.
 */
int engine_submit(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, const float *const *in,
    float *const *out, void **ticket, char **cause);

/*
 * Where the next engine_submit of m with in_shapes reads input i: fills
 * in[] and returns 1 (gather the inputs there and pass in[] to submit to
 * spare a copy), 0 when the backend cannot say (in[] untouched), -1 with
 * *cause.
 */
int engine_stage(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, float **in, char **cause);

/*
 * Page-locks host memory [p, p + len) for the device where the backend can
 * (cuda): runs whose inputs or outputs lie inside it then move them by DMA
 * instead of copying them on the calling thread. Returns 1 with *gen (for
 * engine_host_unregister), 0 when the backend has no use for it, or -1
 * with *cause.
 */
int engine_host_register(struct engine *e, void *p, size_t len,
    uint64_t *gen, char **cause);

/*
 * Like engine_submit for a batch of nparts requests (rows[k] rows each, in
 * batch order) whose inputs and outputs stay in memory registered with
 * engine_host_register: part k's input i is in[k * ninputs + i], its output
 * j goes to out[k * noutputs + j]. Returns 0 with *ticket, 1 (nothing
 * done) when the backend cannot (the caller gathers the batch), or -1 with
 * *cause.
 */
int engine_submit_parts(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, uint32_t nparts, const uint32_t *rows,
    const float *const *in, float *const *out, void **ticket, char **cause);

/* Whether the backend takes engine_submit_parts at all. */
int engine_has_parts(const struct engine *e);

/*
 * Like engine_submit for a batch of n requests (ans[k].rows rows each, in
 * batch order) whose outputs go to their answers (struct backend_answer:
 * each request's rows, then its exec_us and, last, its mark) as soon as
 * the device has them; the batch started at t0_ns. A synchronous backend
 * runs the batch into out[] (sized as for engine_submit) and answers from
 * there before it returns; an overlapping one leaves out[] alone and
 * answers on the device, and engine_finish copies nothing. Returns 0 with
 * *ticket, 1 (nothing done) when this run cannot be answered so (more
 * than BACKEND_ANSWER_MAX_OUT outputs, a backend without answers), or -1
 * with *cause.
 */
int engine_submit_answers(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, const float *const *in,
    float *const *out, uint32_t n, const struct backend_answer *ans,
    uint64_t t0_ns, void **ticket, char **cause);

/* Whether engine_submit_answers can answer any run of this engine. */
int engine_has_answers(const struct engine *e);

/* Backend opens so far (a reset is one): what engine_host_register's gen names. */
uint64_t engine_generation(const struct engine *e);

/*
 * Before [p, ...) is unmapped: undoes engine_host_register(p) made under
 * generation gen (nothing to undo after a reset since).
 */
void engine_host_unregister(struct engine *e, void *p, uint64_t gen);

/*
 * Whether submit takes out[j] == NULL, leaving output j where
 * engine_result says after engine_finish.
 */
int engine_has_result(const struct engine *e);

/* After engine_finish(ticket): output j of a run submitted with out[j] NULL. */
const float *engine_result(struct engine *e, void *ticket, uint32_t j);

/* 1 when engine_finish(ticket) would not wait; 0 while the device works. */
int engine_poll(struct engine *e, void *ticket);

/*
 * Waits for a ticket of engine_submit (oldest first) and returns 0 when its
 * outputs are written, or -1 with *cause.
 */
int engine_finish(struct engine *e, void *ticket, char **cause);

/*
 * Computes the shapes of the outputs of g for inputs in_shapes; out_shapes
 * has g->noutputs entries. Pure; callable from any thread.
 */
int engine_output_shapes(const struct graph *g,
    const struct graph_shape *in_shapes, struct graph_shape *out_shapes,
    char **cause);

/*
 * The same for model m on the owner thread, inferred once for each new
 * set of input shapes: the run of m that follows with the same shapes
 * does not infer them again. 0, or -1 with *cause (bad shapes, or called
 * off the owner thread; not counted as a backend call).
 */
int engine_model_output_shapes(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, struct graph_shape *out_shapes,
    char **cause);

/*
 * Sets the number of threads the CPU backend's BLAS uses (process-wide);
 * n <= 0 restores the library default. Returns 0, or -1 when unsupported.
 */
int engine_set_cpu_threads(int n);

/* Backend calls made so far, and how many were off the owner thread. */
uint64_t engine_backend_calls(const struct engine *e);
uint64_t engine_foreign_calls(const struct engine *e);

#endif
