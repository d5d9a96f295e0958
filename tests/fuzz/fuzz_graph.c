/*
 * fuzz_graph: libFuzzer target for graph validation. Input is a packed
 * agxq.Graph. It is unpacked, validated (graph_from_proto) under tight
 * limits, and when valid its shapes are inferred for a batch and free dims
 * taken from the input's last bytes; graphs whose every value is small are
 * then loaded and run once on the CPU backend. Nothing may crash, and
 * graph_infer must agree with engine_output_shapes.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "graph.h"

/* Largest tensor and total elements the engine run is allowed (keeps each exec fast). */
#define FUZZ_RUN_MAX_ELEMENTS 4096u
#define FUZZ_RUN_MAX_TOTAL 65536u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The engine every run uses, opened once by this (the fuzzing) thread. */
static struct engine *fuzz_engine;

/*
 * Makes concrete input shapes for g: batch and free dims from the bytes at
 * the end of the input (1 to 4). Returns 0, or -1 when g has no inputs.
 */
static int
fuzz_shapes(const struct graph *g, const uint8_t *data, size_t size,
    struct graph_shape *in)
{
	size_t k = 0;

	if (g->ninputs == 0)
		return -1;
	for (uint32_t i = 0; i < g->ninputs; i++) {
		const struct graph_shape *s = &g->values[i].shape;

		in[i] = *s;
		for (int d = 0; d < s->ndim; d++) {
			uint8_t b = size > 0 ? data[size - 1 - (k % size)] : 0;

			k++;
			if (d == 0)
				in[i].dim[0] = 1 + b % 3;
			else if (s->dim[d] < 0)
				in[i].dim[d] = 1 + b % 4;
		}
		/* Every input has the same batch. */
		in[i].dim[0] = in[0].dim[0];
	}
	return 0;
}

/* Runs g once on the CPU backend when every value is small. */
static void
fuzz_run(const struct graph *g, const struct graph_shape *in,
    const struct graph_shape *shapes)
{
	struct engine_model *m = NULL;
	struct graph_shape *os;
	float **ibuf, **obuf;
	uint64_t total = 0;
	char *cause = NULL;

	for (uint32_t v = 0; v < g->nvalues; v++) {
		size_t n = graph_shape_nelem(&shapes[v]);

		if (n > FUZZ_RUN_MAX_ELEMENTS)
			return;
		total += n;
	}
	if (total > FUZZ_RUN_MAX_TOTAL)
		return;
	os = calloc(g->noutputs, sizeof *os);
	ibuf = calloc(g->ninputs, sizeof *ibuf);
	obuf = calloc(g->noutputs, sizeof *obuf);
	if (os == NULL || ibuf == NULL || obuf == NULL)
		abort();
	if (engine_output_shapes(g, in, os, &cause) != 0)
		abort(); /* graph_infer accepted these shapes */
	for (uint32_t j = 0; j < g->noutputs; j++) {
		const struct graph_shape *want = &shapes[g->outputs[j]];

		if (os[j].ndim != want->ndim || memcmp(os[j].dim, want->dim,
		    (size_t)want->ndim * sizeof want->dim[0]) != 0)
			abort();
		obuf[j] = calloc(graph_shape_nelem(&os[j]) + 1, sizeof(float));
		if (obuf[j] == NULL)
			abort();
	}
	for (uint32_t i = 0; i < g->ninputs; i++) {
		size_t n = graph_shape_nelem(&in[i]);

		if ((ibuf[i] = malloc((n + 1) * sizeof(float))) == NULL)
			abort();
		for (size_t e = 0; e < n; e++)
			ibuf[i][e] = (float)((int)(e % 7) - 3) * 0.25f;
	}
	if (engine_model_load(fuzz_engine, g, &m, &cause) != 0) {
		free(cause);
		cause = NULL;
		goto out;
	}
	if (engine_run(fuzz_engine, m, in, (const float *const *)ibuf, obuf,
	    &cause) != 0) {
		free(cause);
		cause = NULL;
	}
	engine_model_free(fuzz_engine, m);
out:
	for (uint32_t i = 0; i < g->ninputs; i++)
		free(ibuf[i]);
	for (uint32_t j = 0; j < g->noutputs; j++)
		free(obuf[j]);
	free(ibuf);
	free(obuf);
	free(os);
}

/* Unpacks, validates, infers and maybe runs one graph. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct graph_limits lim;
	struct graph_shape *in = NULL, *shapes = NULL;
	Agxq__Graph *pb;
	struct graph *g = NULL;
	char *cause = NULL;

	if (fuzz_engine == NULL) {
		engine_set_cpu_threads(1);
		if (engine_open("cpu", 0, ENGINE_OWNER_ABORT, &fuzz_engine,
		    &cause) != 0)
			abort();
	}
	if ((pb = agxq__graph__unpack(NULL, size, data)) == NULL)
		return 0;
	graph_limits_default(&lim);
	lim.max_nodes = 64;
	lim.max_values = 256;
	lim.max_weight_bytes = 1u << 20;
	lim.max_dim = 4096;
	lim.max_elements = 1u << 18;
	if (graph_from_proto(pb, &lim, &g, &cause) != 0) {
		if (cause == NULL)
			abort();
		free(cause);
		goto out;
	}
	in = calloc(g->ninputs + 1, sizeof *in);
	shapes = calloc(g->nvalues + 1, sizeof *shapes);
	if (in == NULL || shapes == NULL)
		abort();
	if (fuzz_shapes(g, data, size, in) != 0)
		goto out;
	if (graph_infer(g, in, shapes, &cause) != 0) {
		if (cause == NULL)
			abort();
		free(cause);
		goto out;
	}
	fuzz_run(g, in, shapes);
out:
	free(in);
	free(shapes);
	graph_free(g);
	agxq__graph__free_unpacked(pb, NULL);
	return 0;
}
