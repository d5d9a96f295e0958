/*
 * engine: runs validated graphs on one backend and enforces that every
 * backend call happens on the thread that opened the engine (its owner).
 * Every backend call goes through engine_enter, which counts it and counts
 * (and in AGXQ_OWNER_CHECK builds with ENGINE_OWNER_ABORT, aborts on) calls
 * made off the owner thread.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "engine.h"
#include "envset.h"

struct engine {
	const struct backend_ops *ops;
	void *state;                /* NULL after a failed reset */
	int device;
	struct engine_model *models; /* loaded models, for engine_reset */
	uint64_t opens;             /* backend opens: host registrations die with one */
	pthread_t owner;
	enum engine_owner_mode mode;
	atomic_uint_fast64_t calls;
	atomic_uint_fast64_t foreign;
};

struct engine_model {
	const struct graph *g;
	void *bmodel;               /* NULL when a reset could not reload it */
	struct engine_model *prev, *next;
	struct graph_shape *shapes; /* g->nvalues, reused by every run */
	int shapes_ok;              /* shapes: inferred from their inputs */
};

static const struct backend_ops *const engine_table[] = {
	&backend_cpu_ops,
#ifdef AGXQ_HAVE_CUDA
	&backend_cuda_ops,
#endif
	NULL
};

static const char *const engine_names[] = {
	"cpu",
#ifdef AGXQ_HAVE_CUDA
	"cuda",
#endif
	NULL
};

/* Names of backends compiled in, NULL-terminated. */
const char *const *
engine_backends(void)
{
	return engine_names;
}

/*
 * Counts a backend call and checks it runs on the owner thread. Returns 0
 * on the owner; off it, counts the call as foreign, aborts when built with
 * AGXQ_OWNER_CHECK and the engine is in ENGINE_OWNER_ABORT mode, and
 * otherwise returns -1 (the caller decides whether to go on).
 */
static int
engine_enter(struct engine *e, const char *what)
{
	atomic_fetch_add(&e->calls, 1);
	if (pthread_equal(pthread_self(), e->owner))
		return 0;
	atomic_fetch_add(&e->foreign, 1);
#ifdef AGXQ_OWNER_CHECK
	if (e->mode == ENGINE_OWNER_ABORT) {
		fprintf(stderr, "agxq engine: %s called off the owner thread "
		    "(backend %s); aborting\n", what, e->ops->name);
		abort();
	}
#else
	(void)what;
#endif
	return -1;
}

/* Returns 1 (with *cause) when the device or m's copy on it is gone. */
static int
engine_lost(const struct engine *e, const struct engine_model *m,
    char **cause)
{
	if (e->state != NULL && m->bmodel != NULL)
		return 0;
	if (cause != NULL)
		*cause = strdup("the device was lost and could not be reopened; "
		    "restart agxqd");
	return 1;
}

/* Opens backend `name` on device `device`; the calling thread becomes owner. */
int
engine_open(const char *name, int device, enum engine_owner_mode mode,
    struct engine **out, char **cause)
{
	const struct backend_ops *ops = NULL;
	struct engine *e;

	*out = NULL;
	for (size_t i = 0; engine_table[i] != NULL; i++) {
		if (strcmp(engine_table[i]->name, name) == 0)
			ops = engine_table[i];
	}
	if (ops == NULL) {
		if (cause != NULL && asprintf(cause,
		    "backend \"%s\" is not compiled in", name) == -1)
			*cause = NULL;
		return -1;
	}
	if ((e = calloc(1, sizeof *e)) == NULL) {
		if (cause != NULL)
			*cause = strdup("out of memory");
		return -1;
	}
	e->ops = ops;
	e->device = device;
	e->owner = pthread_self();
	e->mode = mode;
	atomic_init(&e->calls, 0);
	atomic_init(&e->foreign, 0);
	engine_enter(e, "open");
	if (ops->open(device, &e->state, cause) != 0) {
		free(e);
		return -1;
	}
	/* The backend has read its settings: the others are misspelt. */
	if (ops->env_prefix != NULL)
		envset_check_prefix(ops->env_prefix);
	*out = e;
	return 0;
}

/* Closes the engine and its backend; accepts NULL. Owner thread only. */
void
engine_close(struct engine *e)
{
	if (e == NULL)
		return;
	engine_enter(e, "close");
	if (e->state != NULL)
		e->ops->close(e->state);
	free(e);
}

/* Whether the backend still works (0 after a fault that needs engine_reset). */
int
engine_healthy(struct engine *e)
{
	if (e->state == NULL)
		return 0;
	if (e->ops->healthy == NULL)
		return 1;
	engine_enter(e, "healthy");
	return e->ops->healthy(e->state);
}

/*
 * Recovers from a lost device: closes the backend, opens it again and
 * reloads every model (their engine_model handles stay valid).
 */
int
engine_reset(struct engine *e, char **cause)
{
	struct engine_model *m;

	engine_enter(e, "reset");
	if (e->state != NULL) {
		for (m = e->models; m != NULL; m = m->next) {
			if (m->bmodel != NULL)
				e->ops->model_free(e->state, m->bmodel);
			m->bmodel = NULL;
		}
		e->ops->close(e->state);
		e->state = NULL;
	}
	e->opens++;
	if (e->ops->open(e->device, &e->state, cause) != 0) {
		e->state = NULL;
		return -1;
	}
	for (m = e->models; m != NULL; m = m->next) {
		if (e->ops->model_load(e->state, m->g, &m->bmodel, cause) != 0) {
			m->bmodel = NULL;
			return -1;
		}
	}
	return 0;
}

/* Backend name of an open engine. */
const char *
engine_backend_name(const struct engine *e)
{
	return e->ops->name;
}

/* Loads graph g on the backend; g must outlive the model. */
int
engine_model_load(struct engine *e, const struct graph *g,
    struct engine_model **out, char **cause)
{
	struct engine_model *m;

	*out = NULL;
	if ((m = calloc(1, sizeof *m)) == NULL)
		goto fail_nomem;
	m->g = g;
	if ((m->shapes = calloc(g->nvalues, sizeof *m->shapes)) == NULL)
		goto fail_free_model;
	engine_enter(e, "model_load");
	if (e->state == NULL) {
		if (cause != NULL)
			*cause = strdup("the device was lost and could not be "
			    "reopened; restart agxqd");
		goto fail_free_shapes;
	}
	if (e->ops->model_load(e->state, g, &m->bmodel, cause) != 0)
		goto fail_free_shapes;
	m->next = e->models;
	if (e->models != NULL)
		e->models->prev = m;
	e->models = m;
	*out = m;
	return 0;

fail_free_shapes:
	free(m->shapes);
	free(m);
	return -1;

fail_free_model:
	free(m);
fail_nomem:
	if (cause != NULL)
		*cause = strdup("out of memory");
	return -1;
}

/* 1 when the backend wants its models warmed at load. */
int
engine_warms(const struct engine *e)
{
	return e->ops->warm;
}

/* Runs m at every warm-up batch up to max_rows; see engine.h. */
int
engine_model_warm(struct engine *e, struct engine_model *m, int64_t max_rows,
    uint32_t *passes, char **cause)
{
	const struct graph *g = m->g;
	struct graph_shape *is, *os;
	float **in, **out;
	int64_t b = 1;
	int rc = -1;

	*passes = 0;
	for (uint32_t i = 0; i < g->ninputs; i++)
		for (int k = 1; k < g->values[i].shape.ndim; k++)
			if (g->values[i].shape.dim[k] < 0)
				return 0;
	is = calloc(g->ninputs + 1, sizeof *is);
	os = calloc(g->noutputs + 1, sizeof *os);
	in = calloc(g->ninputs + 1, sizeof *in);
	out = calloc(g->noutputs + 1, sizeof *out);
	if (is == NULL || os == NULL || in == NULL || out == NULL) {
		if (cause != NULL)
			*cause = strdup("out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < g->ninputs; i++)
		is[i] = g->values[i].shape;
	rc = 0;
	while (rc == 0 && b <= max_rows) {
		for (uint32_t i = 0; i < g->ninputs; i++)
			is[i].dim[0] = b;
		if (engine_output_shapes(g, is, os, cause) != 0)
			rc = -1;
		/* Zeroed inputs of this size; the outputs are not read. */
		for (uint32_t i = 0; rc == 0 && i < g->ninputs; i++) {
			free(in[i]);
			if ((in[i] = calloc(graph_shape_nelem(&is[i]) + 1,
			    sizeof(float))) == NULL)
				rc = -1;
		}
		for (uint32_t j = 0; rc == 0 && j < g->noutputs; j++) {
			free(out[j]);
			if ((out[j] = malloc((graph_shape_nelem(&os[j]) + 1) *
			    sizeof(float))) == NULL)
				rc = -1;
		}
		if (rc == 0 && engine_run(e, m, is, (const float *const *)in,
		    out, cause) != 0)
			rc = -1;
		if (rc != 0) {
			char *why = cause != NULL ? *cause : NULL;

			if (cause != NULL && asprintf(cause, "the warm-up pass "
			    "of batch %lld failed: %s", (long long)b,
			    why != NULL ? why : "out of memory") == -1)
				*cause = NULL;
			free(why);
			break;
		}
		(*passes)++;
		b = b == max_rows ? max_rows + 1 : b * 2 > max_rows ?
		    max_rows : b * 2;
	}
out:
	for (uint32_t i = 0; in != NULL && i < g->ninputs; i++)
		free(in[i]);
	for (uint32_t j = 0; out != NULL && j < g->noutputs; j++)
		free(out[j]);
	free(is);
	free(os);
	free(in);
	free(out);
	return rc;
}

/* Frees a model; accepts NULL. */
void
engine_model_free(struct engine *e, struct engine_model *m)
{
	if (m == NULL)
		return;
	engine_enter(e, "model_free");
	if (e->state != NULL && m->bmodel != NULL)
		e->ops->model_free(e->state, m->bmodel);
	if (m->prev != NULL)
		m->prev->next = m->next;
	else
		e->models = m->next;
	if (m->next != NULL)
		m->next->prev = m->prev;
	free(m->shapes);
	free(m);
}

/*
 * Infers m's shapes for inputs in_shapes into m->shapes, unless they are
 * already the inference for the same input shapes (a batch size seen
 * last time: the common case). Owner thread.
 */
static int
engine_infer(struct engine_model *m, const struct graph_shape *in_shapes,
    char **cause)
{
	uint32_t i;

	for (i = 0; m->shapes_ok && i < m->g->ninputs; i++) {
		const struct graph_shape *a = &m->shapes[i], *b = &in_shapes[i];

		if (a->ndim != b->ndim || memcmp(a->dim, b->dim,
		    (size_t)a->ndim * sizeof a->dim[0]) != 0)
			break;
	}
	if (m->shapes_ok && i == m->g->ninputs)
		return 0;
	m->shapes_ok = 0;
	if (graph_infer(m->g, in_shapes, m->shapes, cause) != 0)
		return -1;
	m->shapes_ok = 1;
	return 0;
}

/*
 * Checks a run of m may start (on the owner thread, device and model
 * present) and infers every value's shape into m->shapes. 0, or -1 with
 * *cause.
 */
static int
engine_prepare(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, const char *what, char **cause)
{
	if (engine_enter(e, what) != 0) {
		if (cause != NULL && asprintf(cause,
		    "%s called off the owner thread", what) == -1)
			*cause = NULL;
		return -1;
	}
	if (engine_lost(e, m, cause))
		return -1;
	return engine_infer(m, in_shapes, cause);
}

/*
 * Runs one batch. Off the owner thread (possible only in ENGINE_OWNER_COUNT
 * mode or builds without AGXQ_OWNER_CHECK) the call is counted and refused
 * with -1 "called off the owner thread": the backend is never entered.
 */
int
engine_run(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, const float *const *in,
    float *const *out, char **cause)
{
	if (engine_prepare(e, m, in_shapes, "engine_run", cause) != 0)
		return -1;
	return e->ops->run(e->state, m->bmodel, m->shapes, in, out, cause);
}

/* Runs that may be in flight at once. */
int
engine_slots(const struct engine *e)
{
	return e->ops->submit != NULL && e->ops->slots > 1 ? e->ops->slots : 1;
}

/* Starts one batch; synchronous backends run it to completion here. */
int
engine_submit(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, const float *const *in,
    float *const *out, void **ticket, char **cause)
{
	if (e->ops->submit == NULL) {
		*ticket = NULL;
		return engine_run(e, m, in_shapes, in, out, cause);
	}
	if (engine_prepare(e, m, in_shapes, "engine_submit", cause) != 0)
		return -1;
	return e->ops->submit(e->state, m->bmodel, m->shapes, in, out, ticket,
	    cause);
}

/* Starts a batch of requests whose tensors stay in registered memory. */
int
engine_submit_parts(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, uint32_t nparts, const uint32_t *rows,
    const float *const *in, float *const *out, void **ticket, char **cause)
{
	if (e->ops->submit_parts == NULL || e->state == NULL)
		return 1;
	if (engine_prepare(e, m, in_shapes, "engine_submit_parts", cause) != 0)
		return -1;
	return e->ops->submit_parts(e->state, m->bmodel, m->shapes, nparts,
	    rows, in, out, ticket, cause);
}

/* Monotonic nanoseconds, as the executor's t0_ns. */
static uint64_t
engine_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Copies each answer's rows of out[] to it and marks it, on this thread
 * (a synchronous backend's run is over).
 */
static void
engine_answer_host(const struct engine_model *m, float *const *out,
    uint32_t n, const struct backend_answer *ans, uint64_t t0_ns)
{
	const struct graph *g = m->g;
	uint64_t row = 0, now = engine_now_ns();

	for (uint32_t k = 0; k < n; k++) {
		for (uint32_t j = 0; j < g->noutputs; j++) {
			const struct graph_shape *s = &m->shapes[g->outputs[j]];
			size_t per_row = s->dim[0] > 0 ?
			    graph_shape_nelem(s) / (size_t)s->dim[0] : 0;

			memcpy(ans[k].dst[j], out[j] + row * per_row,
			    ans[k].rows * per_row * sizeof(float));
		}
		*ans[k].exec_us = now > t0_ns ? (now - t0_ns) / 1000 : 0;
		__atomic_store_n(ans[k].mark, ans[k].id, __ATOMIC_RELEASE);
		row += ans[k].rows;
	}
}

/* Starts a batch whose outputs go straight to its requests' answers. */
int
engine_submit_answers(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, const float *const *in,
    float *const *out, uint32_t n, const struct backend_answer *ans,
    uint64_t t0_ns, void **ticket, char **cause)
{
	uint64_t rows = 0;

	if (m->g->noutputs > BACKEND_ANSWER_MAX_OUT || n == 0)
		return 1;
	for (uint32_t k = 0; k < n; k++)
		rows += ans[k].rows;
	if (m->g->ninputs == 0 || in_shapes[0].dim[0] < 0 ||
	    rows != (uint64_t)in_shapes[0].dim[0]) {
		if (cause != NULL && asprintf(cause, "engine_submit_answers: "
		    "%u answers of %llu rows in all for a batch of %lld rows",
		    n, (unsigned long long)rows, m->g->ninputs > 0 ?
		    (long long)in_shapes[0].dim[0] : 0LL) == -1)
			*cause = NULL;
		return -1;
	}
	if (e->ops->submit == NULL) {
		if (engine_run(e, m, in_shapes, in, out, cause) != 0)
			return -1;
		*ticket = NULL;
		engine_answer_host(m, out, n, ans, t0_ns);
		return 0;
	}
	if (e->ops->submit_answers == NULL || e->state == NULL)
		return 1;
	if (engine_prepare(e, m, in_shapes, "engine_submit_answers",
	    cause) != 0)
		return -1;
	return e->ops->submit_answers(e->state, m->bmodel, m->shapes, in, n,
	    ans, t0_ns, ticket, cause);
}

/* Whether engine_submit_answers may answer runs of this engine. */
int
engine_has_answers(const struct engine *e)
{
	return e->ops->submit == NULL || e->ops->submit_answers != NULL;
}

/* Whether the backend takes engine_submit_parts at all. */
int
engine_has_parts(const struct engine *e)
{
	return e->ops->submit_parts != NULL;
}

/* Where the next submit of m reads its inputs, when the backend says. */
int
engine_stage(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, float **in, char **cause)
{
	if (e->ops->submit == NULL || e->ops->stage == NULL ||
	    e->state == NULL)
		return 0;
	if (engine_prepare(e, m, in_shapes, "engine_stage", cause) != 0)
		return -1;
	return e->ops->stage(e->state, m->bmodel, m->shapes, in, cause) == 0 ?
	    1 : -1;
}

/* Page-locks host memory for direct transfers, where the backend can. */
int
engine_host_register(struct engine *e, void *p, size_t len, uint64_t *gen,
    char **cause)
{
	if (e->ops->host_register == NULL)
		return 0;
	engine_enter(e, "host_register");
	if (e->state == NULL) {
		if (cause != NULL)
			*cause = strdup("the device was lost");
		return -1;
	}
	if (e->ops->host_register(e->state, p, len, cause) != 0)
		return -1;
	*gen = e->opens;
	return 1;
}

/* Backend opens so far. */
uint64_t
engine_generation(const struct engine *e)
{
	return e->opens;
}

/* Undoes engine_host_register(p) made under generation gen. */
void
engine_host_unregister(struct engine *e, void *p, uint64_t gen)
{
	if (e->ops->host_unregister == NULL)
		return;
	engine_enter(e, "host_unregister");
	/* A reset since then closed the backend, and the pinning with it. */
	if (e->state != NULL && gen == e->opens)
		e->ops->host_unregister(e->state, p);
}

/* Whether submit may leave outputs in the backend's staging. */
int
engine_has_result(const struct engine *e)
{
	return e->ops->submit != NULL && e->ops->result != NULL;
}

/* Output j of a finished run submitted with out[j] NULL. */
const float *
engine_result(struct engine *e, void *ticket, uint32_t j)
{
	engine_enter(e, "result");
	return e->ops->result(e->state, ticket, j);
}

/* Whether engine_finish(ticket) would return without waiting. */
int
engine_poll(struct engine *e, void *ticket)
{
	if (e->ops->finish == NULL || e->ops->poll == NULL || e->state == NULL)
		return 1;
	engine_enter(e, "poll");
	return e->ops->poll(e->state, ticket);
}

/* Waits for a ticket of engine_submit. */
int
engine_finish(struct engine *e, void *ticket, char **cause)
{
	if (e->ops->finish == NULL)
		return 0; /* engine_submit already ran it */
	if (engine_enter(e, "finish") != 0) {
		if (cause != NULL)
			*cause = strdup("engine_finish called off the owner thread");
		return -1;
	}
	return e->ops->finish(e->state, ticket, cause);
}

/* Computes the shapes of the outputs of g for inputs in_shapes. */
int
engine_output_shapes(const struct graph *g,
    const struct graph_shape *in_shapes, struct graph_shape *out_shapes,
    char **cause)
{
	struct graph_shape *shapes;

	if ((shapes = calloc(g->nvalues, sizeof *shapes)) == NULL) {
		if (cause != NULL)
			*cause = strdup("out of memory");
		return -1;
	}
	if (graph_infer(g, in_shapes, shapes, cause) != 0) {
		free(shapes);
		return -1;
	}
	for (uint32_t j = 0; j < g->noutputs; j++)
		out_shapes[j] = shapes[g->outputs[j]];
	free(shapes);
	return 0;
}

/* The shapes of m's outputs for inputs in_shapes (engine.h). */
int
engine_model_output_shapes(struct engine *e, struct engine_model *m,
    const struct graph_shape *in_shapes, struct graph_shape *out_shapes,
    char **cause)
{
	if (!pthread_equal(pthread_self(), e->owner)) {
		if (cause != NULL)
			*cause = strdup("engine_model_output_shapes called off "
			    "the owner thread");
		return -1;
	}
	if (engine_infer(m, in_shapes, cause) != 0)
		return -1;
	for (uint32_t j = 0; j < m->g->noutputs; j++)
		out_shapes[j] = m->shapes[m->g->outputs[j]];
	return 0;
}

/* Backend calls made so far. */
uint64_t
engine_backend_calls(const struct engine *e)
{
	return atomic_load(&e->calls);
}

/* Backend calls made off the owner thread. */
uint64_t
engine_foreign_calls(const struct engine *e)
{
	return atomic_load(&e->foreign);
}
