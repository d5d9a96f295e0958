/*
 * test_codec: the wire codec, frame headers, compression and every way a
 * frame can be wrong.
 *
 * With AGXQ_CODEC_CORPUS=DIR set, every frame the round-trip cases encode is
 * also written to DIR (seeds for tests/fuzz/fuzz_codec.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "codec.h"
#include "testlib.h"

static unsigned int corpus_seq;

/* Writes frame to $AGXQ_CODEC_CORPUS when set. */
static void
corpus_save(const uint8_t *frame, size_t len)
{
	const char *dir = getenv("AGXQ_CODEC_CORPUS");
	char path[4096];
	FILE *f;

	if (dir == NULL || *dir == '\0' || len > (64u << 10))
		return;
	snprintf(path, sizeof path, "%s/seed-%02u-%s", dir, corpus_seq++,
	    testlib_current);
	if ((f = fopen(path, "wb")) == NULL)
		return;
	fwrite(frame, 1, len, f);
	fclose(f);
}

/* Packs env into a malloc'd buffer (for byte comparisons). */
static uint8_t *
pack(const Agxq__Envelope *env, size_t *len)
{
	uint8_t *buf;

	*len = agxq__envelope__get_packed_size(env);
	if ((buf = malloc(*len + 1)) == NULL)
		abort();
	agxq__envelope__pack(env, buf);
	return buf;
}

/*
 * Encodes env, parses and decodes the frame, and checks that the result
 * packs to the same bytes. Returns the decoded envelope (caller frees) or
 * NULL; *flags_out gets the frame flags, *frame_len_out the frame size.
 */
static Agxq__Envelope *
round_trip(const Agxq__Envelope *env, size_t threshold, uint32_t *flags_out,
    size_t *frame_len_out)
{
	struct codec_limits lim;
	Agxq__Envelope *dec = NULL;
	uint8_t *frame = NULL, *a = NULL, *b = NULL;
	size_t frame_len, raw_len, alen, blen;
	uint32_t plen, flags;
	int code = 0;
	char *cause = NULL;

	codec_limits_default(&lim);
	if (codec_encode(env, threshold, &lim, &frame, &frame_len,
	    &raw_len) != 0) {
		printf("  %s: encode failed\n", testlib_current);
		return NULL;
	}
	corpus_save(frame, frame_len);
	if (codec_header_parse(frame, frame_len, &lim, &plen, &flags, &code,
	    &cause) != CODEC_OK || plen + CODEC_HEADER_SIZE != frame_len) {
		printf("  %s: header: %s\n", testlib_current,
		    cause ? cause : "?");
		goto out;
	}
	if (codec_decode(frame + CODEC_HEADER_SIZE, plen, flags, &lim, &dec,
	    &code, &cause) != 0) {
		printf("  %s: decode: %d %s\n", testlib_current, code, cause);
		goto out;
	}
	a = pack(env, &alen);
	b = pack(dec, &blen);
	if (alen != raw_len || alen != blen || memcmp(a, b, alen) != 0) {
		printf("  %s: round trip differs\n", testlib_current);
		codec_envelope_free(dec);
		dec = NULL;
		goto out;
	}
	if (flags_out != NULL)
		*flags_out = flags;
	if (frame_len_out != NULL)
		*frame_len_out = frame_len;
out:
	free(cause);
	free(frame);
	free(a);
	free(b);
	return dec;
}

/* Round-trips env and checks the body case survived. */
static int
simple_round_trip(const Agxq__Envelope *env)
{
	Agxq__Envelope *dec;
	int ok;

	if ((dec = round_trip(env, CODEC_DEFAULT_COMPRESS_THRESHOLD, NULL,
	    NULL)) == NULL)
		return 0;
	ok = dec->body_case == env->body_case;
	codec_envelope_free(dec);
	return ok;
}

/* Decodes payload with flags under lim; returns the error code or 0. */
static int
decode_code(const uint8_t *payload, size_t len, uint32_t flags,
    const struct codec_limits *lim, char **cause)
{
	Agxq__Envelope *env = NULL;
	int code = -1;

	*cause = NULL;
	if (codec_decode(payload, len, flags, lim, &env, &code, cause) == 0) {
		codec_envelope_free(env);
		return 0;
	}
	if (*cause == NULL)
		return -2;
	return code;
}

static int
t_hello(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__Hello h = AGXQ__HELLO__INIT;
	Agxq__HelloReply hr = AGXQ__HELLO_REPLY__INIT;

	h.protocol_version = CODEC_PROTOCOL_VERSION;
	h.client_name = "test_codec";
	env.body_case = AGXQ__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	CHECK(simple_round_trip(&env));

	hr.protocol_version = CODEC_PROTOCOL_VERSION;
	hr.server_version = "0.1.0";
	hr.backend = "cpu";
	hr.max_frame = 1234;
	hr.max_batch = 64;
	hr.pid = 42;
	env.body_case = AGXQ__ENVELOPE__BODY_HELLO_REPLY;
	env.hello_reply = &hr;
	CHECK(simple_round_trip(&env));
	return 0;
out:
	return -1;
}

static int
t_load_model(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *dec = NULL;
	Agxq__LoadModel lm = AGXQ__LOAD_MODEL__INIT;
	Agxq__LoadModelReply lr = AGXQ__LOAD_MODEL_REPLY__INIT;
	Agxq__Graph g = AGXQ__GRAPH__INIT;
	Agxq__ValueInfo vi = AGXQ__VALUE_INFO__INIT, *vis[1] = { &vi };
	Agxq__Tensor w = AGXQ__TENSOR__INIT, b = AGXQ__TENSOR__INIT;
	Agxq__Tensor *consts[2] = { &w, &b };
	Agxq__Node n0 = AGXQ__NODE__INIT, n1 = AGXQ__NODE__INIT;
	Agxq__Node *nodes[2] = { &n0, &n1 };
	int64_t sshape[1] = { 8 }, wshape[2] = { 4, 8 }, bshape[1] = { 4 };
	uint32_t in0[3] = { 0, 1, 2 }, in1[1] = { 3 }, outs[1] = { 4 };
	float wdata[32], bdata[4];
	int rc = -1;

	for (int i = 0; i < 32; i++)
		wdata[i] = (float)i * 0.25f - 3.0f;
	for (int i = 0; i < 4; i++)
		bdata[i] = (float)i;
	vi.n_sample_shape = 1;
	vi.sample_shape = sshape;
	vi.dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	w.dtype = b.dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	w.n_shape = 2;
	w.shape = wshape;
	w.data.len = sizeof wdata;
	w.data.data = (uint8_t *)wdata;
	b.n_shape = 1;
	b.shape = bshape;
	b.data.len = sizeof bdata;
	b.data.data = (uint8_t *)bdata;
	n0.op = AGXQ__OP__OP_LINEAR;
	n0.n_inputs = 3;
	n0.inputs = in0;
	n0.has_bias = 1;
	n0.name = "fc";
	n1.op = AGXQ__OP__OP_GELU;
	n1.n_inputs = 1;
	n1.inputs = in1;
	n1.gelu_tanh = 1;
	g.n_inputs = 1;
	g.inputs = vis;
	g.n_constants = 2;
	g.constants = consts;
	g.n_nodes = 2;
	g.nodes = nodes;
	g.n_outputs = 1;
	g.outputs = outs;
	g.precision = AGXQ__PRECISION__PRECISION_TF32;
	lm.request_id = 7;
	lm.graph = &g;
	lm.name = "tiny";
	env.body_case = AGXQ__ENVELOPE__BODY_LOAD_MODEL;
	env.load_model = &lm;
	dec = round_trip(&env, CODEC_DEFAULT_COMPRESS_THRESHOLD, NULL, NULL);
	CHECK(dec != NULL);
	CHECK(dec->body_case == AGXQ__ENVELOPE__BODY_LOAD_MODEL);
	CHECK(dec->load_model->graph != NULL);
	CHECK(dec->load_model->graph->n_constants == 2);
	CHECK(dec->load_model->graph->constants[0]->data.len == sizeof wdata);
	CHECK(memcmp(dec->load_model->graph->constants[0]->data.data, wdata,
	    sizeof wdata) == 0);
	CHECK(dec->load_model->graph->nodes[0]->has_bias);
	CHECK(strcmp(dec->load_model->name, "tiny") == 0);

	lr.request_id = 7;
	lr.model_id = 99;
	lr.shared = 1;
	env.body_case = AGXQ__ENVELOPE__BODY_LOAD_MODEL_REPLY;
	env.load_model_reply = &lr;
	CHECK(simple_round_trip(&env));
	rc = 0;
out:
	codec_envelope_free(dec);
	return rc;
}

static int
t_unload(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__UnloadModel u = AGXQ__UNLOAD_MODEL__INIT;
	Agxq__UnloadModelReply ur = AGXQ__UNLOAD_MODEL_REPLY__INIT;

	u.request_id = 3;
	u.model_id = 5;
	env.body_case = AGXQ__ENVELOPE__BODY_UNLOAD_MODEL;
	env.unload_model = &u;
	CHECK(simple_round_trip(&env));
	ur.request_id = 3;
	env.body_case = AGXQ__ENVELOPE__BODY_UNLOAD_MODEL_REPLY;
	env.unload_model_reply = &ur;
	CHECK(simple_round_trip(&env));
	return 0;
out:
	return -1;
}

static int
t_infer(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *dec = NULL;
	Agxq__Infer inf = AGXQ__INFER__INIT;
	Agxq__InferReply rep = AGXQ__INFER_REPLY__INIT;
	Agxq__Tensor t0 = AGXQ__TENSOR__INIT, t1 = AGXQ__TENSOR__INIT;
	Agxq__Tensor *ts[2] = { &t0, &t1 };
	int64_t s0[2] = { 4, 16 }, s1[3] = { 2, 3, 1 };
	float d0[64], d1[6];
	int rc = -1;

	for (int i = 0; i < 64; i++)
		d0[i] = (float)i / 7.0f;
	for (int i = 0; i < 6; i++)
		d1[i] = -(float)i;
	t0.dtype = t1.dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	t0.n_shape = 2;
	t0.shape = s0;
	t0.data.len = sizeof d0;
	t0.data.data = (uint8_t *)d0;
	t1.n_shape = 3;
	t1.shape = s1;
	t1.data.len = sizeof d1;
	t1.data.data = (uint8_t *)d1;
	inf.request_id = UINT64_MAX - 1;
	inf.model_id = 12;
	inf.n_inputs = 2;
	inf.inputs = ts;
	inf.timeout_us = 5000;
	inf.priority = -3;
	env.body_case = AGXQ__ENVELOPE__BODY_INFER;
	env.infer = &inf;
	dec = round_trip(&env, CODEC_DEFAULT_COMPRESS_THRESHOLD, NULL, NULL);
	CHECK(dec != NULL);
	CHECK(dec->infer->request_id == UINT64_MAX - 1);
	CHECK(dec->infer->priority == -3);
	CHECK(dec->infer->n_inputs == 2);
	CHECK(dec->infer->inputs[1]->n_shape == 3);
	CHECK(memcmp(dec->infer->inputs[0]->data.data, d0, sizeof d0) == 0);

	rep.request_id = 9;
	rep.n_outputs = 2;
	rep.outputs = ts;
	rep.queue_us = 11;
	rep.exec_us = 22;
	rep.batch_rows = 16;
	env.body_case = AGXQ__ENVELOPE__BODY_INFER_REPLY;
	env.infer_reply = &rep;
	CHECK(simple_round_trip(&env));
	rc = 0;
out:
	codec_envelope_free(dec);
	return rc;
}

static int
t_stats(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *dec = NULL;
	Agxq__StatsRequest sr = AGXQ__STATS_REQUEST__INIT;
	Agxq__Stats st = AGXQ__STATS__INIT;
	Agxq__ModelStats m0 = AGXQ__MODEL_STATS__INIT, m1 = AGXQ__MODEL_STATS__INIT;
	Agxq__ModelStats *ms[2] = { &m0, &m1 };
	int rc = -1;

	sr.request_id = 1;
	env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
	env.stats_request = &sr;
	CHECK(simple_round_trip(&env));

	m0.model_id = 1;
	m0.name = "mlp";
	m0.requests = 1000;
	m0.exec_p99_us = 77;
	m1.model_id = 2;
	m1.name = "linear";
	m1.queued = 3;
	st.request_id = 2;
	st.server_version = "0.1.0";
	st.backend = "cpu";
	st.pid = 1234;
	st.frames_in = 5;
	st.bytes_out_raw = 1ULL << 40;
	st.n_models = 2;
	st.models = ms;
	env.body_case = AGXQ__ENVELOPE__BODY_STATS;
	env.stats = &st;
	dec = round_trip(&env, CODEC_DEFAULT_COMPRESS_THRESHOLD, NULL, NULL);
	CHECK(dec != NULL);
	CHECK(dec->stats->n_models == 2);
	CHECK(strcmp(dec->stats->models[1]->name, "linear") == 0);
	CHECK(dec->stats->bytes_out_raw == 1ULL << 40);
	rc = 0;
out:
	codec_envelope_free(dec);
	return rc;
}

static int
t_error(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *dec = NULL;
	Agxq__Error e = AGXQ__ERROR__INIT;
	int rc = -1;

	e.request_id = 17;
	e.code = AGXQ__ERROR_CODE__ERR_SHAPE;
	e.message = "input 0: expected [*, 256], got [4, 255]";
	env.body_case = AGXQ__ENVELOPE__BODY_ERROR;
	env.error = &e;
	dec = round_trip(&env, CODEC_DEFAULT_COMPRESS_THRESHOLD, NULL, NULL);
	CHECK(dec != NULL);
	CHECK(dec->error->code == AGXQ__ERROR_CODE__ERR_SHAPE);
	CHECK(strcmp(dec->error->message, e.message) == 0);
	rc = 0;
out:
	codec_envelope_free(dec);
	return rc;
}

/* An Infer envelope around one tensor of n bytes (data borrowed). */
static void
big_infer(Agxq__Envelope *env, Agxq__Infer *inf, Agxq__Tensor *t,
    Agxq__Tensor **ts, int64_t *shape, uint8_t *data, size_t n)
{
	t->dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	shape[0] = (int64_t)(n / 4);
	t->n_shape = 1;
	t->shape = shape;
	t->data.len = n;
	t->data.data = data;
	ts[0] = t;
	inf->request_id = 1;
	inf->n_inputs = 1;
	inf->inputs = ts;
	env->body_case = AGXQ__ENVELOPE__BODY_INFER;
	env->infer = inf;
}

static int
t_big_compressible(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *dec = NULL;
	Agxq__Infer inf = AGXQ__INFER__INIT;
	Agxq__Tensor t = AGXQ__TENSOR__INIT, *ts[1];
	int64_t shape[1];
	size_t n = 4u << 20, flen = 0;
	float *data;
	uint32_t flags = 0;
	int rc = -1;

	if ((data = malloc(n)) == NULL)
		abort();
	for (size_t i = 0; i < n / 4; i++)
		data[i] = (float)(i % 17);
	big_infer(&env, &inf, &t, ts, shape, (uint8_t *)data, n);
	dec = round_trip(&env, CODEC_DEFAULT_COMPRESS_THRESHOLD, &flags, &flen);
	CHECK(dec != NULL);
	CHECK(flags == CODEC_FLAG_ZSTD);
	CHECK(flen < n / 4);
	CHECK(memcmp(dec->infer->inputs[0]->data.data, data, n) == 0);
	codec_envelope_free(dec);

	/* Threshold 0 never compresses. */
	dec = round_trip(&env, 0, &flags, &flen);
	CHECK(dec != NULL);
	CHECK(flags == 0);
	CHECK(flen > n);
	codec_envelope_free(dec);

	/* Just above the threshold (no sampling) still compresses. */
	t.data.len = CODEC_DEFAULT_COMPRESS_THRESHOLD + 64;
	dec = round_trip(&env, CODEC_DEFAULT_COMPRESS_THRESHOLD, &flags, &flen);
	CHECK(dec != NULL);
	CHECK(flags == CODEC_FLAG_ZSTD);
	codec_envelope_free(dec);

	/* Below the threshold stays raw. */
	t.data.len = 1024;
	dec = round_trip(&env, CODEC_DEFAULT_COMPRESS_THRESHOLD, &flags, &flen);
	CHECK(dec != NULL);
	CHECK(flags == 0);
	rc = 0;
out:
	codec_envelope_free(dec);
	free(data);
	return rc;
}

static int
t_big_random(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *dec = NULL;
	Agxq__Infer inf = AGXQ__INFER__INIT;
	Agxq__Tensor t = AGXQ__TENSOR__INIT, *ts[1];
	int64_t shape[1];
	size_t n = 2u << 20, flen = 0;
	uint8_t *data;
	uint32_t flags = 1, x = 2463534242u;
	int rc = -1;

	if ((data = malloc(n)) == NULL)
		abort();
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		data[i] = (uint8_t)(x >> 11);
	}
	big_infer(&env, &inf, &t, ts, shape, data, n);
	dec = round_trip(&env, CODEC_DEFAULT_COMPRESS_THRESHOLD, &flags, &flen);
	CHECK(dec != NULL);
	CHECK(flags == 0);
	CHECK(flen > n);
	codec_envelope_free(dec);

	/* Small enough to skip sampling: still raw. */
	t.data.len = 100000;
	dec = round_trip(&env, CODEC_DEFAULT_COMPRESS_THRESHOLD, &flags, &flen);
	CHECK(dec != NULL);
	CHECK(flags == 0);
	rc = 0;
out:
	codec_envelope_free(dec);
	free(data);
	return rc;
}

/*
 * Float tensors as models make them: 128 KiB of values spread like
 * activations stay raw (zstd would save less than 1/8); the same values
 * with every other one zeroed, as after a ReLU, are compressed.
 */
static int
t_float_tensors(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *dec = NULL;
	Agxq__Infer inf = AGXQ__INFER__INIT;
	Agxq__Tensor t = AGXQ__TENSOR__INIT, *ts[1];
	int64_t shape[1];
	size_t n = 128u << 10, flen = 0;
	float *data;
	uint32_t flags = 1, x = 88172645u;
	int rc = -1;

	if ((data = malloc(n)) == NULL)
		abort();
	for (size_t i = 0; i < n / 4; i++) {
		float u = 0;

		/* Sum of 4 uniforms: roughly normal, in (-2, 2). */
		for (int k = 0; k < 4; k++) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			u += (float)(x >> 8) / 16777216.0f - 0.5f;
		}
		data[i] = u;
	}
	big_infer(&env, &inf, &t, ts, shape, (uint8_t *)data, n);
	dec = round_trip(&env, CODEC_DEFAULT_COMPRESS_THRESHOLD, &flags, &flen);
	CHECK(dec != NULL);
	CHECK(flags == 0);
	CHECK(memcmp(dec->infer->inputs[0]->data.data, data, n) == 0);
	codec_envelope_free(dec);

	for (size_t i = 0; i < n / 4; i += 2)
		data[i] = 0;
	dec = round_trip(&env, CODEC_DEFAULT_COMPRESS_THRESHOLD, &flags, &flen);
	CHECK(dec != NULL);
	CHECK(flags == CODEC_FLAG_ZSTD);
	CHECK(flen < n - n / 8);
	CHECK(memcmp(dec->infer->inputs[0]->data.data, data, n) == 0);
	rc = 0;
out:
	codec_envelope_free(dec);
	free(data);
	return rc;
}

static int
t_header(void)
{
	struct codec_limits lim;
	uint8_t buf[CODEC_HEADER_SIZE];
	uint32_t plen = 0, flags = 99;
	int code = 0;
	char *cause = NULL;

	codec_limits_default(&lim);
	codec_header_write(buf, 0x01020304u, CODEC_FLAG_ZSTD);
	CHECK(buf[0] == 4 && buf[3] == 1 && buf[4] == 1 && buf[7] == 0);
	for (size_t i = 0; i < CODEC_HEADER_SIZE; i++)
		CHECK(codec_header_parse(buf, i, &lim, &plen, &flags, &code,
		    &cause) == CODEC_NEED_MORE);
	CHECK(codec_header_parse(buf, sizeof buf, &lim, &plen, &flags, &code,
	    &cause) == CODEC_OK);
	CHECK(plen == 0x01020304u && flags == CODEC_FLAG_ZSTD);
	return 0;
out:
	free(cause);
	return -1;
}

static int
t_header_errors(void)
{
	struct codec_limits lim;
	uint8_t buf[CODEC_HEADER_SIZE];
	uint32_t plen, flags;
	int code;
	char *cause = NULL;

	codec_limits_default(&lim);
	lim.max_frame = 1000;

	codec_header_write(buf, 10, 0x2);
	code = 0;
	CHECK(codec_header_parse(buf, sizeof buf, &lim, &plen, &flags, &code,
	    &cause) == CODEC_ERROR);
	CHECK(code == AGXQ__ERROR_CODE__ERR_PROTO && cause != NULL);
	free(cause);
	cause = NULL;

	codec_header_write(buf, 10, 0x80000001u);
	CHECK(codec_header_parse(buf, sizeof buf, &lim, &plen, &flags, &code,
	    &cause) == CODEC_ERROR);
	CHECK(code == AGXQ__ERROR_CODE__ERR_PROTO);
	free(cause);
	cause = NULL;

	codec_header_write(buf, 1001, 0);
	CHECK(codec_header_parse(buf, sizeof buf, &lim, &plen, &flags, &code,
	    &cause) == CODEC_ERROR);
	CHECK(code == AGXQ__ERROR_CODE__ERR_TOOBIG && cause != NULL);
	free(cause);
	cause = NULL;

	codec_header_write(buf, 1000, 0);
	CHECK(codec_header_parse(buf, sizeof buf, &lim, &plen, &flags, &code,
	    &cause) == CODEC_OK);

	codec_header_write(buf, 0, 0);
	CHECK(codec_header_parse(buf, sizeof buf, &lim, &plen, &flags, &code,
	    &cause) == CODEC_ERROR);
	CHECK(code == AGXQ__ERROR_CODE__ERR_PROTO);
	CHECK(cause != NULL && strstr(cause, "empty") != NULL);
	free(cause);
	return 0;
out:
	free(cause);
	return -1;
}

/* Encodes a compressible Infer of n bytes of data into a zstd frame. */
static uint8_t *
compressed_frame(size_t n, size_t *frame_len)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__Infer inf = AGXQ__INFER__INIT;
	Agxq__Tensor t = AGXQ__TENSOR__INIT, *ts[1];
	struct codec_limits lim;
	int64_t shape[1];
	uint8_t *data, *frame;

	if ((data = calloc(1, n)) == NULL)
		abort();
	big_infer(&env, &inf, &t, ts, shape, data, n);
	codec_limits_default(&lim);
	if (codec_encode(&env, 1, &lim, &frame, frame_len, NULL) != 0)
		abort();
	free(data);
	if ((frame[4] & CODEC_FLAG_ZSTD) == 0)
		abort();
	return frame;
}

static int
t_corrupt_zstd(void)
{
	struct codec_limits lim;
	uint8_t *frame = NULL, junk[64];
	size_t flen;
	char *cause = NULL;
	int rc = -1;

	codec_limits_default(&lim);
	/* Not zstd at all. */
	memset(junk, 0x5a, sizeof junk);
	CHECK(decode_code(junk, sizeof junk, CODEC_FLAG_ZSTD, &lim, &cause) ==
	    AGXQ__ERROR_CODE__ERR_CORRUPT);
	free(cause);

	/* A real frame cut short. */
	frame = compressed_frame(1 << 20, &flen);
	CHECK(decode_code(frame + CODEC_HEADER_SIZE, flen - CODEC_HEADER_SIZE - 5,
	    CODEC_FLAG_ZSTD, &lim, &cause) == AGXQ__ERROR_CODE__ERR_CORRUPT);
	free(cause);

	/* A real frame with its blocks scribbled on. */
	memset(frame + CODEC_HEADER_SIZE + 12, 0xff, flen - CODEC_HEADER_SIZE - 12);
	CHECK(decode_code(frame + CODEC_HEADER_SIZE, flen - CODEC_HEADER_SIZE,
	    CODEC_FLAG_ZSTD, &lim, &cause) == AGXQ__ERROR_CODE__ERR_CORRUPT);
	free(cause);
	cause = NULL;
	rc = 0;
out:
	free(cause);
	free(frame);
	return rc;
}

static int
t_zstd_too_big(void)
{
	struct codec_limits lim;
	/*
	 * A zstd frame header: magic, descriptor 0xe0 (single segment,
	 * 8-byte content size), content size 2^40, then one raw last block.
	 */
	uint8_t hdr[] = { 0x28, 0xb5, 0x2f, 0xfd, 0xe0,
	    0, 0, 0, 0, 0, 1, 0, 0, 0x09, 0, 0, 'x' };
	uint8_t *frame = NULL;
	size_t flen;
	char *cause = NULL;
	int rc = -1;

	codec_limits_default(&lim);
	CHECK(ZSTD_getFrameContentSize(hdr, sizeof hdr) == 1ULL << 40);
	/* 1 TiB would fail with NOMEM if it were allocated first. */
	CHECK(decode_code(hdr, sizeof hdr, CODEC_FLAG_ZSTD, &lim, &cause) ==
	    AGXQ__ERROR_CODE__ERR_TOOBIG);
	free(cause);

	/* A real 2 MiB message under a 1 MiB limit. */
	frame = compressed_frame(2 << 20, &flen);
	lim.max_message = 1 << 20;
	CHECK(decode_code(frame + CODEC_HEADER_SIZE, flen - CODEC_HEADER_SIZE,
	    CODEC_FLAG_ZSTD, &lim, &cause) == AGXQ__ERROR_CODE__ERR_TOOBIG);
	free(cause);

	/* Declared size larger than what the blocks hold. */
	memset(hdr + 5, 0, 8);
	hdr[5] = 100;
	codec_limits_default(&lim);
	CHECK(decode_code(hdr, sizeof hdr, CODEC_FLAG_ZSTD, &lim, &cause) ==
	    AGXQ__ERROR_CODE__ERR_CORRUPT);
	free(cause);
	cause = NULL;
	rc = 0;
out:
	free(cause);
	free(frame);
	return rc;
}

static int
t_raw_too_big(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__Infer inf = AGXQ__INFER__INIT;
	Agxq__Tensor t = AGXQ__TENSOR__INIT, *ts[1];
	struct codec_limits lim;
	int64_t shape[1];
	uint8_t data[4096] = { 0 }, *frame = NULL;
	size_t flen;
	char *cause = NULL;
	int rc = -1;

	big_infer(&env, &inf, &t, ts, shape, data, sizeof data);
	codec_limits_default(&lim);
	lim.max_message = 1024;
	CHECK(codec_encode(&env, 0, &lim, &frame, &flen, NULL) == -1);
	codec_limits_default(&lim);
	CHECK(codec_encode(&env, 0, &lim, &frame, &flen, NULL) == 0);
	lim.max_message = 1024;
	CHECK(decode_code(frame + CODEC_HEADER_SIZE, flen - CODEC_HEADER_SIZE,
	    0, &lim, &cause) == AGXQ__ERROR_CODE__ERR_TOOBIG);
	free(cause);
	cause = NULL;
	rc = 0;
out:
	free(cause);
	free(frame);
	return rc;
}

static int
t_garbage(void)
{
	struct codec_limits lim;
	uint8_t junk[32];
	/* Field 7 (infer), length-delimited, length running past the end. */
	uint8_t short_msg[] = { 0x3a, 0x10, 0x08, 0x01 };
	char *cause = NULL;
	int rc = -1;

	codec_limits_default(&lim);
	memset(junk, 0xff, sizeof junk);
	CHECK(decode_code(junk, sizeof junk, 0, &lim, &cause) ==
	    AGXQ__ERROR_CODE__ERR_PROTO);
	CHECK(strcmp(cause, "malformed message") == 0);
	free(cause);
	CHECK(decode_code(short_msg, sizeof short_msg, 0, &lim, &cause) ==
	    AGXQ__ERROR_CODE__ERR_PROTO);
	free(cause);
	CHECK(decode_code(junk, sizeof junk, 0x4, &lim, &cause) ==
	    AGXQ__ERROR_CODE__ERR_PROTO);
	free(cause);
	CHECK(decode_code(junk, 0, 0, &lim, &cause) ==
	    AGXQ__ERROR_CODE__ERR_PROTO);
	free(cause);
	cause = NULL;
	rc = 0;
out:
	free(cause);
	return rc;
}

static int
t_unknown_field(void)
{
	struct codec_limits lim;
	/* Field 99, varint: tag (99 << 3) = 792 = 0x98 0x06, value 1. */
	uint8_t msg[] = { 0x98, 0x06, 0x01 };
	/* Field 99, length-delimited, 2 bytes. */
	uint8_t msg2[] = { 0x9a, 0x06, 0x02, 0x08, 0x01 };
	char *cause = NULL;
	int rc = -1;

	codec_limits_default(&lim);
	CHECK(decode_code(msg, sizeof msg, 0, &lim, &cause) ==
	    AGXQ__ERROR_CODE__ERR_PROTO);
	CHECK(strcmp(cause, "unknown message") == 0);
	free(cause);
	CHECK(decode_code(msg2, sizeof msg2, 0, &lim, &cause) ==
	    AGXQ__ERROR_CODE__ERR_PROTO);
	CHECK(strcmp(cause, "unknown message") == 0);
	free(cause);
	cause = NULL;
	rc = 0;
out:
	free(cause);
	return rc;
}

static int
t_body_name(void)
{
	CHECK(strcmp(codec_body_name(AGXQ__ENVELOPE__BODY_INFER), "infer") == 0);
	CHECK(strcmp(codec_body_name(AGXQ__ENVELOPE__BODY_ERROR), "error") == 0);
	CHECK(strcmp(codec_body_name(-1), "unknown") == 0);
	CHECK(strcmp(codec_body_name(99), "unknown") == 0);
	CHECK(strcmp(codec_body_name(AGXQ__ENVELOPE__BODY_REGISTER_REGION),
	    "register_region") == 0);
	return 0;
out:
	return -1;
}

static const struct testlib_icase cases[] = {
	{ "hello", t_hello },
	{ "load_model", t_load_model },
	{ "unload", t_unload },
	{ "infer", t_infer },
	{ "stats", t_stats },
	{ "error", t_error },
	{ "big_compressible", t_big_compressible },
	{ "big_random", t_big_random },
	{ "float_tensors", t_float_tensors },
	{ "header", t_header },
	{ "header_errors", t_header_errors },
	{ "corrupt_zstd", t_corrupt_zstd },
	{ "zstd_too_big", t_zstd_too_big },
	{ "raw_too_big", t_raw_too_big },
	{ "garbage", t_garbage },
	{ "unknown_field", t_unknown_field },
	{ "body_name", t_body_name },
};

int
main(int argc, char **argv)
{
	return testlib_run_int(cases, TESTLIB_N(cases), argc, argv);
}
