/*
 * fuzz_message: libFuzzer target for message handling short of a running
 * daemon. Input is one uncompressed envelope payload. It is decoded
 * (codec_decode), and then checked the way agxqd checks it before queueing:
 * a LoadModel's graph is validated (graph_from_proto, default limits) and
 * its shapes inferred for a batch and free dims taken from the input; an
 * Infer's inputs are checked against one of two fixed models (dtype, rank,
 * dims, graph_check_input, data length, equal batches, as server.c's
 * server_check_input does) and the output shapes computed. Nothing may
 * crash, and every rejection must carry a cause.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "engine.h"
#include "graph.h"
#include "tgraph.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Two fixed models an Infer is checked against (model_id % 2). */
static struct graph *fuzz_models[2];

/* Builds the fixed models: a linear layer, and a two-input attention block. */
static void
fuzz_models_make(void)
{
	struct tgraph *t;
	uint64_t seed = 1;
	uint32_t x, y, w, b, m, iw, ib, ow, ob;
	char *cause = NULL;

	t = tg_new();
	x = tg_input(t, TG_DIMS(8));
	w = tg_const_rand(t, TG_DIMS(4, 8), 0.5f, &seed);
	b = tg_const_rand(t, TG_DIMS(4), 0.5f, &seed);
	tg_output(t, tg_relu(t, tg_linear(t, x, w, b)));
	if (graph_from_proto(tg_graph(t), NULL, &fuzz_models[0], &cause) != 0)
		abort();
	tg_free(t);

	t = tg_new();
	x = tg_input(t, TG_DIMS(-1, 8));
	y = tg_input(t, TG_DIMS(1, 8));
	iw = tg_const_rand(t, TG_DIMS(24, 8), 0.5f, &seed);
	ib = tg_const_rand(t, TG_DIMS(24), 0.5f, &seed);
	ow = tg_const_rand(t, TG_DIMS(8, 8), 0.5f, &seed);
	ob = tg_const_rand(t, TG_DIMS(8), 0.5f, &seed);
	m = tg_mha(t, tg_add(t, x, y), iw, ib, ow, ob, 2, 1);
	tg_output(t, tg_softmax(t, m, -1));
	if (graph_from_proto(tg_graph(t), NULL, &fuzz_models[1], &cause) != 0)
		abort();
	tg_free(t);
}

/* Whether shape s holds more than max elements. */
static int
over_limit(const struct graph_shape *s, uint64_t max)
{
	uint64_t n = 1;

	for (int d = 0; d < s->ndim; d++) {
		if (n > max / (uint64_t)s->dim[d])
			return 1;
		n *= (uint64_t)s->dim[d];
	}
	return 0;
}

/* Validates a LoadModel's graph and infers its shapes. */
static void
fuzz_load(const Agxq__LoadModel *lm, const uint8_t *data, size_t size)
{
	struct graph_shape *in = NULL, *shapes = NULL;
	struct graph *g = NULL;
	char *cause = NULL;
	size_t k = 0;

	if (lm->graph == NULL)
		return;
	if (graph_from_proto(lm->graph, NULL, &g, &cause) != 0) {
		if (cause == NULL)
			abort();
		free(cause);
		return;
	}
	in = calloc(g->ninputs + 1, sizeof *in);
	shapes = calloc(g->nvalues + 1, sizeof *shapes);
	if (in == NULL || shapes == NULL)
		abort();
	for (uint32_t i = 0; i < g->ninputs; i++) {
		in[i] = g->values[i].shape;
		for (int d = 0; d < in[i].ndim; d++, k++) {
			uint8_t v = size > 0 ? data[k % size] : 0;

			if (d == 0 || in[i].dim[d] < 0)
				in[i].dim[d] = 1 + v % 5;
		}
		in[i].dim[0] = in[0].dim[0];
		/*
		 * Built from the declared shape, so it fits unless the batch
		 * takes it over the element limit (a sample may be as large
		 * as the limit).
		 */
		if (graph_check_input(g, i, &in[i], &cause) != 0) {
			if (cause == NULL || !over_limit(&in[i], g->max_elements))
				abort();
			free(cause);
			goto out;
		}
	}
	if (graph_infer(g, in, shapes, &cause) != 0) {
		if (cause == NULL)
			abort();
		free(cause);
	}
out:
	free(in);
	free(shapes);
	graph_free(g);
}

/* Checks an Infer's inputs against a fixed model, as agxqd does. */
static void
fuzz_infer(const Agxq__Infer *inf)
{
	const struct graph *g = fuzz_models[inf->model_id % 2];
	struct graph_shape in[2], *os;
	char *cause = NULL;

	if (inf->n_inputs != g->ninputs)
		return;
	for (uint32_t i = 0; i < g->ninputs; i++) {
		const Agxq__Tensor *t = inf->inputs[i];
		uint64_t n = 1;

		if (t->dtype != AGXQ__DTYPE__DTYPE_FLOAT32)
			return;
		if (t->n_shape < 1 || t->n_shape > GRAPH_MAX_DIMS)
			return;
		in[i].ndim = (int)t->n_shape;
		for (size_t d = 0; d < t->n_shape; d++) {
			if (t->shape[d] < 1 || t->shape[d] > (1 << 24))
				return;
			in[i].dim[d] = t->shape[d];
			n *= (uint64_t)t->shape[d];
			if (n > (1u << 31))
				return;
		}
		if (graph_check_input(g, i, &in[i], &cause) != 0) {
			if (cause == NULL)
				abort();
			free(cause);
			return;
		}
		if (t->shm == NULL && n * sizeof(float) != t->data.len)
			return;
		if (i > 0 && in[i].dim[0] != in[0].dim[0])
			return;
	}
	if ((os = calloc(g->noutputs, sizeof *os)) == NULL)
		abort();
	if (engine_output_shapes(g, in, os, &cause) != 0) {
		if (cause == NULL)
			abort();
		free(cause);
	}
	free(os);
}

/* Decodes one payload and checks what it carries. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct codec_limits lim;
	Agxq__Envelope *env = NULL;
	int code = 0;
	char *cause = NULL;

	if (fuzz_models[0] == NULL)
		fuzz_models_make();
	lim.max_frame = 1u << 20;
	lim.max_message = 4u << 20;
	if (codec_decode(data, size, 0, &lim, &env, &code, &cause) != 0) {
		if (cause == NULL || code <= 0)
			abort();
		free(cause);
		return 0;
	}
	switch (env->body_case) {
	case AGXQ__ENVELOPE__BODY_LOAD_MODEL:
		fuzz_load(env->load_model, data, size);
		break;
	case AGXQ__ENVELOPE__BODY_INFER:
		fuzz_infer(env->infer);
		break;
	default:
		break;
	}
	codec_envelope_free(env);
	return 0;
}
