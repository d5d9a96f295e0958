/*
 * direct: agxq models run in-process on the engine, without a daemon (the
 * "direct" baseline of the comparison). A graph goes the daemon's way:
 * builder_to_proto, graph_from_proto (the same validation), then
 * engine_model_load. The thread that opens a handle owns it; every call
 * checks that first and refuses other threads with AGXQ_EINVAL, so the
 * engine itself is opened in ENGINE_OWNER_COUNT mode.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agxq_direct.h"
#include "builder.h"
#include "engine.h"
#include "envset.h"
#include "graph.h"
#include "result.h"

/* Largest batch warmed at load: agxqd's default --max-batch. */
#define DIRECT_WARM_ROWS 64

struct agxq_direct {
	pthread_t owner;
	struct engine *engine;
	int warm;                   /* models warmed (AGXQ_WARM) */
	struct graph_limits limits;
	struct agxq_direct_model *models; /* loaded models, to free at close */
};

struct agxq_direct_model {
	agxq_direct *d;
	struct graph *graph;
	struct engine_model *em;
	struct agxq_direct_model *prev, *next;
};

/* Returns 1 when the calling thread opened d. */
static int
direct_owner(const agxq_direct *d)
{
	return pthread_equal(d->owner, pthread_self());
}

/*
 * Warms m at load as agxqd warms a model (engine_model_warm, up to
 * agxqd's default largest batch). A failed pass is not the load's
 * failure: the run of that size does the work, or reports the fault,
 * when it comes.
 */
static void
direct_warm(agxq_direct *d, agxq_direct_model *m)
{
	uint32_t passes;
	char *cause = NULL;

	if (d->warm && engine_model_warm(d->engine, m->em, DIRECT_WARM_ROWS,
	    &passes, &cause) != 0)
		free(cause);
}

/* Microseconds on the monotonic clock. */
static uint64_t
direct_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Returns 1 when backend is compiled into the engine. */
static int
direct_known_backend(const char *name)
{
	const char *const *b;

	for (b = engine_backends(); b != NULL && *b != NULL; b++) {
		if (strcmp(*b, name) == 0)
			return 1;
	}
	return 0;
}

/* Opens backend on device for the calling thread. */
int
agxq_direct_open(const char *backend, int device, agxq_direct **out)
{
	agxq_direct *d;
	char *cause = NULL;

	if (out == NULL || device < 0)
		return AGXQ_EINVAL;
	if (backend == NULL)
		backend = "cpu";
	if (!direct_known_backend(backend))
		return AGXQ_EINVAL;
	if ((d = calloc(1, sizeof *d)) == NULL)
		return AGXQ_ENOMEM;
	d->owner = pthread_self();
	graph_limits_default(&d->limits);
	if (engine_open(backend, device, ENGINE_OWNER_COUNT, &d->engine,
	    &cause) != 0) {
		free(cause);
		free(d);
		return AGXQ_EBACKEND;
	}
	d->warm = envset_bool("AGXQ_WARM", engine_warms(d->engine));
	*out = d;
	return 0;
}

/* Frees m's engine model and graph and unlinks it from its handle. */
static void
direct_model_free(agxq_direct_model *m)
{
	agxq_direct *d = m->d;

	if (m->prev != NULL)
		m->prev->next = m->next;
	else
		d->models = m->next;
	if (m->next != NULL)
		m->next->prev = m->prev;
	engine_model_free(d->engine, m->em);
	graph_free(m->graph);
	free(m);
}

/*
 * Closes d and every model still loaded through it; accepts NULL. A call
 * from a thread other than the owner does nothing (the engine must not be
 * touched off its owner thread).
 */
void
agxq_direct_close(agxq_direct *d)
{
	if (d == NULL || !direct_owner(d))
		return;
	while (d->models != NULL)
		direct_model_free(d->models);
	engine_close(d->engine);
	free(d);
}

/* Sets the CPU backend's BLAS threads, process-wide. */
int
agxq_direct_set_cpu_threads(int n)
{
	if (engine_set_cpu_threads(n) != 0)
		return AGXQ_EUNSUPPORTED;
	return 0;
}

/* Validates g as the daemon does and loads it on d's engine. */
int
agxq_direct_load(agxq_direct *d, const agxq_graph *g, agxq_direct_model **out)
{
	agxq_direct_model *m;
	Agxq__Graph *pb = NULL;
	char *cause = NULL;
	int error;

	if (d == NULL || g == NULL || out == NULL || !direct_owner(d))
		return AGXQ_EINVAL;
	if ((m = calloc(1, sizeof *m)) == NULL)
		return AGXQ_ENOMEM;
	m->d = d;
	if ((error = builder_to_proto(g, &pb)) != 0)
		goto fail_free_model;
	if (graph_from_proto(pb, &d->limits, &m->graph, &cause) != 0) {
		error = AGXQ_EGRAPH;
		goto fail_free_proto;
	}
	builder_proto_free(pb);
	pb = NULL;
	if (engine_model_load(d->engine, m->graph, &m->em, &cause) != 0) {
		error = AGXQ_EBACKEND;
		goto fail_free_graph;
	}
	direct_warm(d, m);
	m->next = d->models;
	if (d->models != NULL)
		d->models->prev = m;
	d->models = m;
	*out = m;
	return 0;

fail_free_graph:
	graph_free(m->graph);
fail_free_proto:
	builder_proto_free(pb);
	free(cause);
fail_free_model:
	free(m);
	return error;
}

/* Frees a model; accepts NULL. Off the owner thread it does nothing. */
void
agxq_direct_unload(agxq_direct_model *m)
{
	if (m == NULL || !direct_owner(m->d))
		return;
	direct_model_free(m);
}

/* Checks inputs against graph gr and fills shapes and data pointers. */
static int
direct_check_inputs(const struct graph *gr, const agxq_tensor *inputs,
    int ninputs, struct graph_shape *shapes, const float **in)
{
	char *cause = NULL;

	if (ninputs < 0 || (uint32_t)ninputs != gr->ninputs ||
	    (ninputs > 0 && inputs == NULL))
		return AGXQ_EINVAL;
	for (int i = 0; i < ninputs; i++) {
		const agxq_tensor *t = &inputs[i];
		struct graph_shape *s = &shapes[i];

		if (t->dtype != AGXQ_FLOAT32)
			return AGXQ_EDTYPE;
		if (t->ndim < 1 || t->ndim > GRAPH_MAX_DIMS)
			return AGXQ_ESHAPE;
		if (t->data == NULL)
			return AGXQ_EINVAL;
		memset(s, 0, sizeof *s);
		s->ndim = t->ndim;
		for (int j = 0; j < t->ndim; j++) {
			if (t->shape[j] <= 0)
				return AGXQ_ESHAPE;
			s->dim[j] = t->shape[j];
		}
		if (graph_check_input(gr, (uint32_t)i, s, &cause) != 0) {
			free(cause);
			return AGXQ_ESHAPE;
		}
		in[i] = t->data;
	}
	return 0;
}

/* Runs one request synchronously on the owner thread. */
int
agxq_direct_infer(agxq_direct_model *m, const agxq_tensor *inputs,
    int ninputs, agxq_result **out)
{
	const struct graph *gr;
	struct graph_shape *shapes = NULL, *oshapes = NULL;
	const float **in = NULL;
	float **outs = NULL;
	agxq_result *r = NULL;
	char *cause = NULL;
	uint64_t start;
	uint32_t nout;
	int error;

	if (m == NULL || out == NULL || !direct_owner(m->d))
		return AGXQ_EINVAL;
	gr = m->graph;
	nout = gr->noutputs;
	shapes = calloc(gr->ninputs + 1, sizeof *shapes);
	in = calloc(gr->ninputs + 1, sizeof *in);
	oshapes = calloc(nout + 1, sizeof *oshapes);
	outs = calloc(nout + 1, sizeof *outs);
	if (shapes == NULL || in == NULL || oshapes == NULL || outs == NULL) {
		error = AGXQ_ENOMEM;
		goto out;
	}
	if ((error = direct_check_inputs(gr, inputs, ninputs, shapes,
	    in)) != 0)
		goto out;
	if (engine_output_shapes(gr, shapes, oshapes, &cause) != 0) {
		error = AGXQ_ESHAPE;
		goto out;
	}
	for (uint32_t j = 0; j < nout; j++) {
		size_t n = graph_shape_nelem(&oshapes[j]);

		if (oshapes[j].ndim > AGXQ_MAX_DIMS) {
			error = AGXQ_EINTERNAL;
			goto out;
		}
		if ((outs[j] = malloc(n == 0 ? 1 : n * sizeof(float))) == NULL) {
			error = AGXQ_ENOMEM;
			goto out;
		}
	}
	start = direct_now_us();
	if (engine_run(m->d->engine, m->em, shapes, in, outs, &cause) != 0) {
		error = AGXQ_EBACKEND;
		goto out;
	}
	if ((r = result_new((int)nout)) == NULL) {
		error = AGXQ_ENOMEM;
		goto out;
	}
	r->exec_us = direct_now_us() - start;
	r->batch_rows = ninputs > 0 ? (uint32_t)shapes[0].dim[0] : 0;
	for (uint32_t j = 0; j < nout; j++) {
		result_take_output(r, (int)j, oshapes[j].dim, oshapes[j].ndim,
		    outs[j]);
		outs[j] = NULL;
	}
	*out = r;
	error = 0;
out:
	if (outs != NULL) {
		for (uint32_t j = 0; j < nout; j++)
			free(outs[j]);
	}
	free(outs);
	free(oshapes);
	free(in);
	free(shapes);
	free(cause);
	return error;
}
