/*
 * fuzz_seeds: writes the seed corpora of fuzz_graph (packed Graphs) and
 * fuzz_message (uncompressed envelope payloads) from small graphs built
 * with tgraph, one per op family plus a small transformer block; and, given
 * a third directory, that of fuzz_rawinfer (raw Infer and InferReply
 * payloads, proto/rawinfer.h).
 *
 *	fuzz_seeds tests/fuzz/corpus_graph tests/fuzz/corpus_message \
 *	    tests/fuzz/corpus_rawinfer
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agxq.pb-c.h"
#include "codec.h"
#include "rawinfer.h"
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

/*
 * Fills the n tensors tens (pointers in tp) with the given shapes and
 * random floats in malloc'd bufs.
 */
static void
seed_tensors(Agxq__Tensor *tens, Agxq__Tensor **tp, float **bufs,
    const int64_t *const *shapes, const int *ndims, int n, uint64_t *seed)
{
	for (int i = 0; i < n; i++) {
		size_t ne = 1;

		agxq__tensor__init(&tens[i]);
		for (int d = 0; d < ndims[i]; d++)
			ne *= (size_t)shapes[i][d];
		if ((bufs[i] = malloc(ne * sizeof(float) + 1)) == NULL)
			exit(1);
		tg_rand_fill(bufs[i], ne, 1.0f, seed);
		tens[i].dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
		tens[i].n_shape = (size_t)ndims[i];
		tens[i].shape = (int64_t *)shapes[i];
		tens[i].data.len = ne * sizeof(float);
		tens[i].data.data = (uint8_t *)bufs[i];
		tp[i] = &tens[i];
	}
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

	if (n > 4)
		exit(1);
	seed_tensors(tens, tp, bufs, shapes, ndims, n, &seed);
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

/* Writes the payload of a raw frame of size bytes to dir/name. */
static void
seed_raw_write(const char *dir, const char *name, const uint8_t *frame,
    size_t size)
{
	if (size <= CODEC_HEADER_SIZE) {
		fprintf(stderr, "fuzz_seeds: %s cannot be raw\n", name);
		exit(1);
	}
	seed_write(dir, name, frame + CODEC_HEADER_SIZE,
	    size - CODEC_HEADER_SIZE);
}

/* Writes a raw Infer (reply 0) or InferReply (1) of n tensors to dir/name. */
static void
seed_raw(const char *rdir, const char *name, int reply,
    const int64_t *const *shapes, const int *ndims, int n)
{
	Agxq__Infer inf = AGXQ__INFER__INIT;
	Agxq__InferReply rep = AGXQ__INFER_REPLY__INIT;
	Agxq__Tensor tens[16], *tp[16];
	float *bufs[16];
	uint8_t *frame;
	size_t size;
	uint64_t seed = 11;

	if (n > 16)
		exit(1);
	seed_tensors(tens, tp, bufs, shapes, ndims, n, &seed);
	if (reply) {
		rep.request_id = 7;
		rep.n_outputs = (size_t)n;
		rep.outputs = tp;
		rep.queue_us = 120;
		rep.exec_us = 45;
		rep.batch_rows = 2;
		size = rawinfer_reply_frame_size(&rep);
	} else {
		inf.request_id = 7;
		inf.model_id = 2;
		inf.n_inputs = (size_t)n;
		inf.inputs = tp;
		inf.timeout_us = 100000;
		inf.priority = 1;
		size = rawinfer_infer_frame_size(&inf);
	}
	if ((frame = malloc(size + 1)) == NULL)
		exit(1);
	if (size > 0 && reply)
		rawinfer_reply_frame_write(&rep, frame);
	else if (size > 0)
		rawinfer_infer_frame_write(&inf, frame);
	seed_raw_write(rdir, name, frame, size);
	free(frame);
	for (int i = 0; i < n; i++)
		free(bufs[i]);
}

/* Writes the raw Infer and InferReply seeds to rdir. */
static void
seed_raw_all(const char *rdir)
{
	const int64_t s0[] = { 2, 8 }, s1[] = { 3 }, s2[] = { 2, 1, 3 },
	    s3[] = { 1, 2, 1, 1, 2, 1 }, s4[] = { 2, 0 }, s5[] = { 2, 4 };
	const int64_t *a1[] = { s0 }, *a3[] = { s1, s2, s3 };
	const int64_t *a9[] = { s1, s2, s3, s4, s5, s1, s2, s3, s4 };
	const int64_t *r2[] = { s5, s1 };
	const int n1[] = { 2 }, n3[] = { 1, 3, 6 };
	const int n9[] = { 1, 3, 6, 2, 2, 1, 3, 6, 2 }, nr2[] = { 2, 1 };

	seed_raw(rdir, "infer-1", 0, a1, n1, 1);
	seed_raw(rdir, "infer-3", 0, a3, n3, 3);
	seed_raw(rdir, "infer-9", 0, a9, n9, 9);
	seed_raw(rdir, "reply-0", 1, NULL, NULL, 0);
	seed_raw(rdir, "reply-2", 1, r2, nr2, 2);
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

	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: fuzz_seeds graph-dir message-dir "
		    "[rawinfer-dir]\n");
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
	if (argc == 4)
		seed_raw_all(argv[3]);
	return 0;
}
