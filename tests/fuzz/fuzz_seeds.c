/*
 * fuzz_seeds: writes the seed corpora of fuzz_graph (packed Graphs) and
 * fuzz_message (uncompressed envelope payloads) from small graphs built
 * with tgraph, one per op family plus a small transformer block.
 *
 *	fuzz_seeds tests/fuzz/corpus_graph tests/fuzz/corpus_message
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agxq.pb-c.h"
#include "tgraph.h"

/* Writes len bytes to dir/name; exits on failure. */
static void
seed_write(const char *dir, const char *name, const uint8_t *buf, size_t len)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if ((f = fopen(path, "wb")) == NULL ||
	    fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* Writes env packed to dir/name. */
static void
seed_env(const char *dir, const char *name, const Agxq__Envelope *env)
{
	size_t len = agxq__envelope__get_packed_size(env);
	uint8_t *buf = malloc(len + 1);

	if (buf == NULL)
		exit(1);
	agxq__envelope__pack(env, buf);
	seed_write(dir, name, buf, len);
	free(buf);
}

/* Writes graph t to the graph corpus and as a LoadModel to the message one. */
static void
seed_graph(const char *gdir, const char *mdir, const char *name,
    struct tgraph *t)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__LoadModel lm = AGXQ__LOAD_MODEL__INIT;
	Agxq__Graph *g = tg_graph(t);
	size_t len = agxq__graph__get_packed_size(g);
	uint8_t *buf = malloc(len + 1);
	char mname[128];

	if (buf == NULL)
		exit(1);
	agxq__graph__pack(g, buf);
	seed_write(gdir, name, buf, len);
	free(buf);
	lm.request_id = 1;
	lm.graph = g;
	lm.name = (char *)name;
	env.body_case = AGXQ__ENVELOPE__BODY_LOAD_MODEL;
	env.load_model = &lm;
	snprintf(mname, sizeof mname, "load-%s", name);
	seed_env(mdir, mname, &env);
	tg_free(t);
}

/* Writes an Infer for model_id with inputs of the given shapes. */
static void
seed_infer(const char *mdir, const char *name, uint64_t model_id,
    const int64_t *const *shapes, const int *ndims, int n)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__Infer inf = AGXQ__INFER__INIT;
	Agxq__Tensor tens[4], *tp[4];
	float *bufs[4];
	uint64_t seed = 9;

	for (int i = 0; i < n; i++) {
		size_t ne = 1;

		agxq__tensor__init(&tens[i]);
		for (int d = 0; d < ndims[i]; d++)
			ne *= (size_t)shapes[i][d];
		if ((bufs[i] = malloc(ne * sizeof(float))) == NULL)
			exit(1);
		tg_rand_fill(bufs[i], ne, 1.0f, &seed);
		tens[i].dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
		tens[i].n_shape = (size_t)ndims[i];
		tens[i].shape = (int64_t *)shapes[i];
		tens[i].data.len = ne * sizeof(float);
		tens[i].data.data = (uint8_t *)bufs[i];
		tp[i] = &tens[i];
	}
	inf.request_id = 7;
	inf.model_id = model_id;
	inf.n_inputs = (size_t)n;
	inf.inputs = tp;
	inf.priority = 1;
	env.body_case = AGXQ__ENVELOPE__BODY_INFER;
	env.infer = &inf;
	seed_env(mdir, name, &env);
	for (int i = 0; i < n; i++)
		free(bufs[i]);
}

/* A small post-norm transformer encoder block, d_model 8, 2 heads. */
static struct tgraph *
seed_transformer(uint64_t *seed)
{
	struct tgraph *t = tg_new();
	uint32_t x, iw, ib, ow, ob, w1, b1, w2, b2, g1, be1, g2, be2, a, h;

	x = tg_input(t, TG_DIMS(-1, 8));
	iw = tg_const_rand(t, TG_DIMS(24, 8), 0.3f, seed);
	ib = tg_const_rand(t, TG_DIMS(24), 0.3f, seed);
	ow = tg_const_rand(t, TG_DIMS(8, 8), 0.3f, seed);
	ob = tg_const_rand(t, TG_DIMS(8), 0.3f, seed);
	w1 = tg_const_rand(t, TG_DIMS(16, 8), 0.3f, seed);
	b1 = tg_const_rand(t, TG_DIMS(16), 0.3f, seed);
	w2 = tg_const_rand(t, TG_DIMS(8, 16), 0.3f, seed);
	b2 = tg_const_rand(t, TG_DIMS(8), 0.3f, seed);
	g1 = tg_const_fill(t, TG_DIMS(8), 1.0f);
	be1 = tg_const_fill(t, TG_DIMS(8), 0.0f);
	g2 = tg_const_fill(t, TG_DIMS(8), 1.0f);
	be2 = tg_const_fill(t, TG_DIMS(8), 0.0f);
	a = tg_mha(t, x, iw, ib, ow, ob, 2, 0);
	a = tg_layer_norm(t, tg_add(t, x, a), g1, be1, 1e-5f);
	h = tg_linear(t, tg_relu(t, tg_linear(t, a, w1, b1)), w2, b2);
	tg_output(t, tg_layer_norm(t, tg_add(t, a, h), g2, be2, 1e-5f));
	return t;
}

int
main(int argc, char **argv)
{
	const char *gd, *md;
	struct tgraph *t;
	uint64_t seed = 1;
	uint32_t x, y, w, b, v;

	if (argc != 3) {
		fprintf(stderr, "usage: fuzz_seeds graph-dir message-dir\n");
		return 2;
	}
	gd = argv[1];
	md = argv[2];

	t = tg_new();
	x = tg_input(t, TG_DIMS(8));
	w = tg_const_rand(t, TG_DIMS(4, 8), 0.5f, &seed);
	b = tg_const_rand(t, TG_DIMS(4), 0.5f, &seed);
	tg_output(t, tg_relu(t, tg_linear(t, x, w, b)));
	seed_graph(gd, md, "linear_relu", t);

	t = tg_new();
	x = tg_input(t, TG_DIMS(6));
	w = tg_const_rand(t, TG_DIMS(6, 6), 0.5f, &seed);
	v = tg_gelu(t, tg_linear(t, x, w, TG_NONE), 0);
	v = tg_gelu(t, tg_linear(t, v, w, TG_NONE), 1);
	tg_output(t, tg_silu(t, v));
	tg_precision(t, AGXQ__PRECISION__PRECISION_TF32);
	seed_graph(gd, md, "mlp_gelu_silu", t);

	t = tg_new();
	x = tg_input(t, TG_DIMS(-1, 4));
	y = tg_input(t, TG_DIMS(-1, 4));
	w = tg_const_rand(t, TG_DIMS(4, 3), 0.5f, &seed);
	b = tg_const_rand(t, TG_DIMS(1, 4), 0.5f, &seed);
	v = tg_mul(t, tg_add(t, x, y), b);
	tg_output(t, tg_matmul(t, v, w));
	tg_output(t, tg_softmax(t, v, 1));
	seed_graph(gd, md, "two_inputs_matmul", t);

	t = tg_new();
	x = tg_input(t, TG_DIMS(3, 5));
	w = tg_const_fill(t, TG_DIMS(5), 2.0f);
	v = tg_layer_norm(t, x, w, TG_NONE, 1e-3f);
	tg_name(t, "norm");
	tg_output(t, tg_softmax(t, v, -2));
	tg_output(t, v);
	seed_graph(gd, md, "layer_norm_softmax", t);

	t = tg_new();
	x = tg_input(t, TG_DIMS(-1, 4));
	w = tg_const_rand(t, TG_DIMS(12, 4), 0.5f, &seed);
	b = tg_const_rand(t, TG_DIMS(4, 4), 0.5f, &seed);
	tg_output(t, tg_mha(t, x, w, TG_NONE, b, TG_NONE, 1, 1));
	seed_graph(gd, md, "mha_causal", t);

	seed_graph(gd, md, "transformer_block", seed_transformer(&seed));

	{
		const int64_t s0[] = { 2, 8 }, s1[] = { 2, 3, 8 },
		    s2[] = { 2, 1, 8 };
		const int64_t *a0[] = { s0 }, *a1[] = { s1, s2 };
		const int n0[] = { 2 }, n1[] = { 3, 3 };

		seed_infer(md, "infer-linear", 2, a0, n0, 1);
		seed_infer(md, "infer-mha", 3, a1, n1, 2);
	}
	{
		Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
		Agxq__Hello h = AGXQ__HELLO__INIT;
		Agxq__UnloadModel u = AGXQ__UNLOAD_MODEL__INIT;
		Agxq__StatsRequest s = AGXQ__STATS_REQUEST__INIT;

		h.protocol_version = 1;
		h.client_name = "fuzz";
		env.body_case = AGXQ__ENVELOPE__BODY_HELLO;
		env.hello = &h;
		seed_env(md, "hello", &env);
		u.request_id = 3;
		u.model_id = 2;
		env.body_case = AGXQ__ENVELOPE__BODY_UNLOAD_MODEL;
		env.unload_model = &u;
		seed_env(md, "unload", &env);
		s.request_id = 4;
		env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
		env.stats_request = &s;
		seed_env(md, "stats", &env);
	}
	return 0;
}
