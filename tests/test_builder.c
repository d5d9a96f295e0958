/*
 * test_builder: the graph builder (wire numbering, optional inputs, sticky
 * errors), the seeded weight stream and the reference model builders.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agxq.h"
#include "builder.h"
#include "testlib.h"

/* Packs pb, unpacks it and checks it packs to the same bytes again. */
static int
pack_round_trip(const Agxq__Graph *pb)
{
	Agxq__Graph *dec = NULL;
	uint8_t *a = NULL, *b = NULL;
	size_t alen, blen;
	int ok = 0;

	alen = agxq__graph__get_packed_size(pb);
	if ((a = malloc(alen + 1)) == NULL)
		goto out;
	agxq__graph__pack(pb, a);
	if ((dec = agxq__graph__unpack(NULL, alen, a)) == NULL)
		goto out;
	blen = agxq__graph__get_packed_size(dec);
	if ((b = malloc(blen + 1)) == NULL)
		goto out;
	agxq__graph__pack(dec, b);
	ok = alen == blen && memcmp(a, b, alen) == 0;
out:
	if (dec != NULL)
		agxq__graph__free_unpacked(dec, NULL);
	free(a);
	free(b);
	return ok;
}

/* Returns 1 when node n has exactly the wire inputs in[0..nin). */
static int
node_inputs_are(const Agxq__Node *n, const uint32_t *in, size_t nin)
{
	if (n->n_inputs != nin)
		return 0;
	for (size_t i = 0; i < nin; i++) {
		if (n->inputs[i] != in[i])
			return 0;
	}
	return 1;
}

/* The splitmix64 stream written out again, independently of builder.c. */
static void
stream_by_hand(uint64_t seed, float scale, float *dst, size_t n)
{
	uint64_t s = seed;

	for (size_t i = 0; i < n; i++) {
		uint64_t z;
		double u;

		s += 0x9E3779B97F4A7C15ULL;
		z = s;
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
		z ^= z >> 31;
		/* Exact in double and in float: a 25-bit integer over 2^24. */
		u = ((double)(z >> 40) * 2.0 - 16777216.0) / 16777216.0;
		dst[i] = (float)u * scale;
	}
}

/* Interleaved input/const/op calls renumber into wire order. */
static int
t_numbering(void)
{
	static const float wdata[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
	static const float bdata[4] = { .5f, -.5f, .25f, -.25f };
	int64_t wshape[2] = { 4, 3 }, bshape[1] = { 4 }, s3[1] = { 3 };
	int64_t s2[2] = { -1, 2 };
	agxq_graph *g;
	Agxq__Graph *pb = NULL;
	int w, x, y, b, z, x2, r;

	g = agxq_graph_new();
	CHECK(g != NULL);
	CHECK((w = agxq_graph_const(g, wshape, 2, wdata)) == 0);
	CHECK((x = agxq_graph_input(g, s3, 1)) == 1);
	CHECK((y = agxq_graph_linear(g, x, w, AGXQ_NONE)) == 2);
	CHECK(agxq_graph_name(g, "proj") == 0);
	CHECK((b = agxq_graph_const(g, bshape, 1, bdata)) == 3);
	CHECK((z = agxq_graph_add(g, y, b)) == 4);
	CHECK((x2 = agxq_graph_input(g, s2, 2)) == 5);
	CHECK((r = agxq_graph_relu(g, x2)) == 6);
	CHECK(agxq_graph_output(g, z) == 0);
	CHECK(agxq_graph_output(g, r) == 1);
	CHECK(agxq_graph_output(g, x) == 2);
	CHECK(agxq_graph_set_precision(g, AGXQ_PRECISION_TF32) == 0);
	CHECK(builder_to_proto(g, &pb) == 0);

	/* Wire: inputs x=0 x2=1; consts w=2 b=3; nodes y=4 z=5 r=6. */
	CHECK(pb->n_inputs == 2);
	CHECK(pb->inputs[0]->n_sample_shape == 1);
	CHECK(pb->inputs[0]->sample_shape[0] == 3);
	CHECK(pb->inputs[0]->dtype == AGXQ__DTYPE__DTYPE_FLOAT32);
	CHECK(pb->inputs[1]->n_sample_shape == 2);
	CHECK(pb->inputs[1]->sample_shape[0] == -1);
	CHECK(pb->inputs[1]->sample_shape[1] == 2);
	CHECK(pb->n_constants == 2);
	CHECK(pb->constants[0]->n_shape == 2);
	CHECK(pb->constants[0]->shape[0] == 4 && pb->constants[0]->shape[1] == 3);
	CHECK(pb->constants[0]->dtype == AGXQ__DTYPE__DTYPE_FLOAT32);
	CHECK(pb->constants[0]->data.len == sizeof wdata);
	CHECK(memcmp(pb->constants[0]->data.data, wdata, sizeof wdata) == 0);
	CHECK(pb->constants[0]->data.data != (const uint8_t *)wdata);
	CHECK(pb->constants[1]->n_shape == 1 && pb->constants[1]->shape[0] == 4);
	CHECK(memcmp(pb->constants[1]->data.data, bdata, sizeof bdata) == 0);
	CHECK(pb->n_nodes == 3);
	CHECK(pb->nodes[0]->op == AGXQ__OP__OP_LINEAR);
	CHECK(node_inputs_are(pb->nodes[0], (uint32_t[]){ 0, 2 }, 2));
	CHECK(!pb->nodes[0]->has_bias);
	CHECK(strcmp(pb->nodes[0]->name, "proj") == 0);
	CHECK(pb->nodes[1]->op == AGXQ__OP__OP_ADD);
	CHECK(node_inputs_are(pb->nodes[1], (uint32_t[]){ 4, 3 }, 2));
	CHECK(strcmp(pb->nodes[1]->name, "") == 0);
	CHECK(pb->nodes[2]->op == AGXQ__OP__OP_RELU);
	CHECK(node_inputs_are(pb->nodes[2], (uint32_t[]){ 1 }, 1));
	CHECK(pb->n_outputs == 3);
	CHECK(pb->outputs[0] == 5 && pb->outputs[1] == 6 && pb->outputs[2] == 0);
	CHECK(pb->precision == AGXQ__PRECISION__PRECISION_TF32);
	CHECK(pack_round_trip(pb));
out:
	builder_proto_free(pb);
	agxq_graph_free(g);
	return 0;
}

/* Every wire input of every node names a lower value (no forward refs). */
static int
t_no_forward_refs(void)
{
	int64_t s[1] = { 8 }, ws[2] = { 8, 8 };
	float wd[64] = { 0 };
	agxq_graph *g;
	Agxq__Graph *pb = NULL;
	int v, w;

	g = agxq_graph_new();
	CHECK(g != NULL);
	v = agxq_graph_input(g, s, 1);
	for (int i = 0; i < 5; i++) {
		w = agxq_graph_const(g, ws, 2, wd);
		v = agxq_graph_linear(g, v, w, AGXQ_NONE);
		v = agxq_graph_relu(g, v);
		(void)agxq_graph_input(g, s, 1);
	}
	CHECK(agxq_graph_output(g, v) == 0);
	CHECK(builder_to_proto(g, &pb) == 0);
	CHECK(pb->n_inputs == 6 && pb->n_constants == 5 && pb->n_nodes == 10);
	for (size_t i = 0; i < pb->n_nodes; i++) {
		uint32_t self = (uint32_t)(pb->n_inputs + pb->n_constants + i);

		for (size_t j = 0; j < pb->nodes[i]->n_inputs; j++)
			CHECK(pb->nodes[i]->inputs[j] < self);
	}
	/* The first linear reads input 0 and constant 0 (wire 6). */
	CHECK(node_inputs_are(pb->nodes[0], (uint32_t[]){ 0, 6 }, 2));
	/* The second reads relu 1 (wire 12) and constant 1 (wire 7). */
	CHECK(node_inputs_are(pb->nodes[2], (uint32_t[]){ 12, 7 }, 2));
	CHECK(pb->outputs[0] == 6 + 5 + 9);
out:
	builder_proto_free(pb);
	agxq_graph_free(g);
	return 0;
}

/* Optional inputs are left out and flagged; attributes reach the wire. */
static int
t_ops(void)
{
	int64_t s[2] = { -1, 8 }, d[1] = { 8 }, inw[2] = { 24, 8 };
	int64_t inb[1] = { 24 }, ow[2] = { 8, 8 };
	static float buf[24 * 8];
	char longname[100];
	agxq_graph *g;
	Agxq__Graph *pb = NULL;
	int x, lw, lb, a, b, c, e, f, h, k, m, wi, bi, wo, bo;

	memset(longname, 'n', sizeof longname);
	longname[sizeof longname - 1] = '\0';
	g = agxq_graph_new();
	CHECK(g != NULL);
	x = agxq_graph_input(g, s, 2);
	lw = agxq_graph_const(g, d, 1, buf);
	lb = agxq_graph_const(g, d, 1, buf);
	a = agxq_graph_layer_norm(g, x, AGXQ_NONE, lb, 1e-5f);
	b = agxq_graph_layer_norm(g, a, lw, AGXQ_NONE, 1e-6f);
	c = agxq_graph_layer_norm(g, b, AGXQ_NONE, AGXQ_NONE, 1e-3f);
	e = agxq_graph_layer_norm(g, c, lw, lb, 1e-5f);
	CHECK(agxq_graph_name(g, longname) == 0);
	f = agxq_graph_gelu(g, e, 1);
	h = agxq_graph_softmax(g, f, -1);
	k = agxq_graph_silu(g, h);
	m = agxq_graph_mul(g, k, lw);
	wi = agxq_graph_const(g, inw, 2, buf);
	bi = agxq_graph_const(g, inb, 1, buf);
	wo = agxq_graph_const(g, ow, 2, buf);
	bo = agxq_graph_const(g, d, 1, buf);
	m = agxq_graph_mha(g, m, wi, bi, wo, bo, 2, 1);
	m = agxq_graph_matmul(g, m, wo);
	m = agxq_graph_linear(g, m, wo, bo);
	CHECK(m >= 0);
	CHECK(agxq_graph_output(g, m) == 0);
	CHECK(builder_to_proto(g, &pb) == 0);
	/* Wire: x=0, lw=1, lb=2, wi=3, bi=4, wo=5, bo=6, nodes from 7. */
	CHECK(pb->n_nodes == 11);
	CHECK(node_inputs_are(pb->nodes[0], (uint32_t[]){ 0, 2 }, 2));
	CHECK(!pb->nodes[0]->has_weight && pb->nodes[0]->has_bias);
	CHECK(pb->nodes[0]->eps == 1e-5f);
	CHECK(node_inputs_are(pb->nodes[1], (uint32_t[]){ 7, 1 }, 2));
	CHECK(pb->nodes[1]->has_weight && !pb->nodes[1]->has_bias);
	CHECK(pb->nodes[1]->eps == 1e-6f);
	CHECK(node_inputs_are(pb->nodes[2], (uint32_t[]){ 8 }, 1));
	CHECK(!pb->nodes[2]->has_weight && !pb->nodes[2]->has_bias);
	CHECK(node_inputs_are(pb->nodes[3], (uint32_t[]){ 9, 1, 2 }, 3));
	CHECK(pb->nodes[3]->has_weight && pb->nodes[3]->has_bias);
	CHECK(strlen(pb->nodes[3]->name) == 47);
	CHECK(strncmp(pb->nodes[3]->name, longname, 47) == 0);
	CHECK(pb->nodes[4]->op == AGXQ__OP__OP_GELU && pb->nodes[4]->gelu_tanh);
	CHECK(pb->nodes[5]->op == AGXQ__OP__OP_SOFTMAX);
	CHECK(pb->nodes[5]->axis == -1);
	CHECK(pb->nodes[6]->op == AGXQ__OP__OP_SILU);
	CHECK(pb->nodes[7]->op == AGXQ__OP__OP_MUL);
	CHECK(node_inputs_are(pb->nodes[7], (uint32_t[]){ 13, 1 }, 2));
	CHECK(pb->nodes[8]->op == AGXQ__OP__OP_MHA);
	CHECK(node_inputs_are(pb->nodes[8], (uint32_t[]){ 14, 3, 4, 5, 6 }, 5));
	CHECK(pb->nodes[8]->heads == 2 && pb->nodes[8]->causal);
	CHECK(pb->nodes[9]->op == AGXQ__OP__OP_MATMUL);
	CHECK(pb->nodes[10]->op == AGXQ__OP__OP_LINEAR);
	CHECK(node_inputs_are(pb->nodes[10], (uint32_t[]){ 16, 5, 6 }, 3));
	CHECK(pb->nodes[10]->has_bias);
	CHECK(pb->outputs[0] == 17);
	CHECK(pb->precision == AGXQ__PRECISION__PRECISION_FP32);
	CHECK(pack_round_trip(pb));
out:
	builder_proto_free(pb);
	agxq_graph_free(g);
	return 0;
}

/* The first error sticks: later calls and builder_to_proto return it. */
static int
t_sticky(void)
{
	int64_t s[1] = { 4 };
	agxq_graph *g;
	Agxq__Graph *pb = NULL;
	int x;

	g = agxq_graph_new();
	CHECK(g != NULL);
	CHECK((x = agxq_graph_input(g, s, 1)) == 0);
	CHECK(agxq_graph_relu(g, 5) == AGXQ_EINVAL);
	CHECK(agxq_graph_relu(g, x) == AGXQ_EINVAL);
	CHECK(agxq_graph_input(g, s, 1) == AGXQ_EINVAL);
	CHECK(agxq_graph_output(g, x) == AGXQ_EINVAL);
	CHECK(agxq_graph_name(g, "x") == AGXQ_EINVAL);
	CHECK(agxq_graph_set_precision(g, AGXQ_PRECISION_FP16) == AGXQ_EINVAL);
	CHECK(agxq_build_linear(g, x, 4, 4, 1) == AGXQ_EINVAL);
	CHECK(builder_to_proto(g, &pb) == AGXQ_EINVAL);
	CHECK(pb == NULL);
	/* NULL graph: an error, nothing to stick to. */
	CHECK(agxq_graph_input(NULL, s, 1) == AGXQ_EINVAL);
	CHECK(agxq_graph_relu(NULL, 0) == AGXQ_EINVAL);
	CHECK(builder_to_proto(NULL, &pb) == AGXQ_EINVAL);
	agxq_graph_free(NULL);
out:
	builder_proto_free(pb);
	agxq_graph_free(g);
	return 0;
}

/* Runs one bad call on a fresh graph with an input (0) and a const (1). */
static int
bad_call(int which)
{
	int64_t ok[1] = { 4 }, zero[1] = { 0 }, neg[1] = { -2 }, free1[1] = { -1 };
	int64_t seven[7] = { 1, 1, 1, 1, 1, 1, 1 }, six[6] = { 1, 1, 1, 1, 1, 1 };
	float data[4] = { 0 };
	agxq_graph *g;
	Agxq__Graph *pb = NULL;
	int r, r2, r3;

	if ((g = agxq_graph_new()) == NULL)
		return 1;
	agxq_graph_input(g, ok, 1);
	agxq_graph_const(g, ok, 1, data);
	switch (which) {
	case 0: r = agxq_graph_input(g, ok, 0); break;
	case 1: r = agxq_graph_input(g, six, 6); break;
	case 2: r = agxq_graph_input(g, zero, 1); break;
	case 3: r = agxq_graph_input(g, neg, 1); break;
	case 4: r = agxq_graph_input(g, NULL, 1); break;
	case 5: r = agxq_graph_const(g, ok, 1, NULL); break;
	case 6: r = agxq_graph_const(g, free1, 1, data); break;
	case 7: r = agxq_graph_const(g, zero, 1, data); break;
	case 8: r = agxq_graph_const(g, seven, 7, data); break;
	case 9: r = agxq_graph_const(g, ok, 0, data); break;
	case 10: r = agxq_graph_linear(g, 0, AGXQ_NONE, AGXQ_NONE); break;
	case 11: r = agxq_graph_linear(g, 0, 1, 2); break;
	case 12: r = agxq_graph_add(g, -5, 1); break;
	case 13: r = agxq_graph_mha(g, 0, 1, 1, 1, AGXQ_NONE, 1, 0); break;
	case 14: r = agxq_graph_mha(g, 0, 1, 1, 1, 1, 0, 0); break;
	case 15: r = agxq_graph_name(g, "no node yet"); break;
	case 16: r = agxq_graph_name(g, NULL); break;
	case 17: r = agxq_graph_output(g, 2); break;
	case 18: r = agxq_graph_set_precision(g, (agxq_precision)9); break;
	case 19: r = agxq_graph_layer_norm(g, 0, 7, AGXQ_NONE, 1e-5f); break;
	case 20: r = agxq_graph_layer_norm(g, 0, AGXQ_NONE, AGXQ_NONE, NAN); break;
	case 21: r = agxq_build_linear(g, 0, 0, 4, 1); break;
	case 22: r = agxq_build_transformer(g, 0, 6, 4, 8, 1e-5f, 0, 1); break;
	case 23: r = agxq_build_transformer(g, 9, 8, 4, 8, 1e-5f, 0, 1); break;
	default: r = agxq_graph_softmax(g, 0, 99); break;
	}
	r2 = agxq_graph_relu(g, 0);
	r3 = builder_to_proto(g, &pb);
	builder_proto_free(pb);
	agxq_graph_free(g);
	if (r != AGXQ_EINVAL || r2 != AGXQ_EINVAL || r3 != AGXQ_EINVAL) {
		printf("  %s: bad call %d: %d %d %d\n", testlib_current, which,
		    r, r2, r3);
		return 1;
	}
	return 0;
}

/* Bad shapes, ids and arguments give AGXQ_EINVAL, stickily. */
static int
t_bad_args(void)
{
	for (int i = 0; i <= 24; i++)
		CHECK(bad_call(i) == 0);
	/* The limits themselves are fine: 5 sample dims, a free dim, 6-d const. */
	{
		int64_t five[5] = { 1, -1, 2, 1, 1 }, six[6] = { 1, 1, 1, 1, 1, 2 };
		float data[2] = { 1, 2 };
		agxq_graph *g = agxq_graph_new();
		int r1, r2;

		CHECK(g != NULL);
		r1 = agxq_graph_input(g, five, 5);
		r2 = agxq_graph_const(g, six, 6, data);
		agxq_graph_free(g);
		CHECK(r1 == 0 && r2 == 1);
	}
out:
	return 0;
}

/* Known values of the stream, worked out from the formula. */
static int
t_weights_known(void)
{
	/* splitmix64 from seed 0 gives 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f. */
	static const uint32_t k[3] = { 0xe220a8, 0x6e789e, 0x06c45d };
	float v[3], h[3];

	agxq_reference_weights(0, 1.0f, v, 3);
	for (int i = 0; i < 3; i++)
		CHECK(v[i] == (float)((2.0 * k[i] - 16777216.0) / 16777216.0));
	CHECK(v[0] == 0.7666215896606445f);
	CHECK(v[1] == -0.13694405555725098f);
	CHECK(v[2] == -0.9471324682235718f);
	agxq_reference_weights(0, 0.5f, h, 3);
	for (int i = 0; i < 3; i++)
		CHECK(h[i] == v[i] * 0.5f);
	agxq_reference_weights(0, 0.1f, h, 3);
	for (int i = 0; i < 3; i++)
		CHECK(h[i] == v[i] * 0.1f);
out:
	return 0;
}

/* The stream matches an independent implementation, is deterministic and in range. */
static int
t_weights_stream(void)
{
	enum { N = 4096 };
	static const uint64_t seeds[] = { 0, 1, 7, 42, 1000, 2000,
	    0xFFFFFFFFFFFFFFFFULL, 0x9E3779B97F4A7C15ULL };
	static const float scales[] = { 1.0f, 0.1f, 0.0625f, 0.0441941738f, 3.0f };
	static float a[N], b[N], c[N];
	int differs;

	for (size_t si = 0; si < sizeof seeds / sizeof seeds[0]; si++) {
		for (size_t ci = 0; ci < sizeof scales / sizeof scales[0]; ci++) {
			float sc = scales[ci];

			agxq_reference_weights(seeds[si], sc, a, N);
			agxq_reference_weights(seeds[si], sc, b, N);
			stream_by_hand(seeds[si], sc, c, N);
			CHECK(memcmp(a, b, sizeof a) == 0);
			CHECK(memcmp(a, c, sizeof a) == 0);
			for (int i = 0; i < N; i++)
				CHECK(a[i] >= -sc && a[i] < sc);
		}
	}
	/* A prefix of a longer stream is the shorter stream. */
	agxq_reference_weights(5, 1.0f, a, N);
	agxq_reference_weights(5, 1.0f, b, 10);
	CHECK(memcmp(a, b, 10 * sizeof(float)) == 0);
	/* Neighbouring seeds give different streams. */
	agxq_reference_weights(6, 1.0f, b, N);
	differs = 0;
	for (int i = 0; i < N; i++)
		differs += a[i] != b[i];
	CHECK(differs > N - 10);
	/* Mean near 0: uniform in [-1, 1). */
	{
		double sum = 0;

		for (int i = 0; i < N; i++)
			sum += a[i];
		CHECK(fabs(sum / N) < 0.05);
	}
out:
	return 0;
}

/* build_linear draws W from seed and b from seed+1 at scale 1/sqrt(in). */
static int
t_build_linear(void)
{
	static const int ins[] = { 1, 2, 3, 4, 5, 7, 32, 64, 100, 256, 512,
	    1000, 2048, 4095, 4096, 12345, 65536, 99991, 1 << 20 };
	int64_t s[1];
	float *ref = NULL;
	agxq_graph *g = NULL;
	Agxq__Graph *pb = NULL;
	int x, y;

	if ((ref = malloc((2 << 20) * sizeof(float))) == NULL)
		abort();
	/* Every n up to 3000 and a few large ones, with out = 2. */
	for (int i = 1; i < 3000 + (int)(sizeof ins / sizeof ins[0]); i++) {
		int in = i < 3000 ? i : ins[i - 3000];
		float scale = (float)(1.0 / sqrt((double)in));

		s[0] = in;
		g = agxq_graph_new();
		CHECK(g != NULL);
		x = agxq_graph_input(g, s, 1);
		CHECK((y = agxq_build_linear(g, x, in, 2, 77)) == 3);
		CHECK(agxq_graph_output(g, y) == 0);
		CHECK(builder_to_proto(g, &pb) == 0);
		CHECK(pb->n_constants == 2 && pb->n_nodes == 1);
		CHECK(pb->constants[0]->n_shape == 2);
		CHECK(pb->constants[0]->shape[0] == 2);
		CHECK(pb->constants[0]->shape[1] == in);
		CHECK(pb->constants[1]->n_shape == 1);
		CHECK(pb->constants[1]->shape[0] == 2);
		agxq_reference_weights(77, scale, ref, (size_t)in * 2);
		CHECK(memcmp(pb->constants[0]->data.data, ref,
		    (size_t)in * 2 * sizeof(float)) == 0);
		agxq_reference_weights(78, scale, ref, 2);
		CHECK(memcmp(pb->constants[1]->data.data, ref,
		    2 * sizeof(float)) == 0);
		CHECK(pb->nodes[0]->op == AGXQ__OP__OP_LINEAR);
		CHECK(pb->nodes[0]->has_bias);
		CHECK(node_inputs_are(pb->nodes[0], (uint32_t[]){ 0, 1, 2 }, 3));
		builder_proto_free(pb);
		pb = NULL;
		agxq_graph_free(g);
		g = NULL;
	}
out:
	builder_proto_free(pb);
	agxq_graph_free(g);
	free(ref);
	return 0;
}

/* Checks constant c of pb: shape [d0] or [d0, d1], stream seed at scale, plus add. */
static int
const_is(const Agxq__Graph *pb, size_t c, int64_t d0, int64_t d1,
    uint64_t seed, float scale, float add)
{
	const Agxq__Tensor *t;
	size_t n;
	float *ref;
	int ok;

	if (c >= pb->n_constants)
		return 0;
	t = pb->constants[c];
	n = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
	if (t->n_shape != (d1 > 0 ? 2u : 1u) || t->shape[0] != d0 ||
	    (d1 > 0 && t->shape[1] != d1) || t->data.len != n * sizeof(float))
		return 0;
	if ((ref = malloc(n * sizeof(float))) == NULL)
		abort();
	agxq_reference_weights(seed, scale, ref, n);
	for (size_t i = 0; i < n; i++)
		ref[i] = add + ref[i];
	ok = memcmp(t->data.data, ref, n * sizeof(float)) == 0;
	free(ref);
	return ok;
}

/* The transformer's parameters, in order, and its two graph forms. */
static int
t_build_transformer(void)
{
	static const Agxq__Op post[] = { AGXQ__OP__OP_MHA, AGXQ__OP__OP_ADD,
	    AGXQ__OP__OP_LAYER_NORM, AGXQ__OP__OP_LINEAR, AGXQ__OP__OP_RELU,
	    AGXQ__OP__OP_LINEAR, AGXQ__OP__OP_ADD, AGXQ__OP__OP_LAYER_NORM };
	static const Agxq__Op pre[] = { AGXQ__OP__OP_LAYER_NORM,
	    AGXQ__OP__OP_MHA, AGXQ__OP__OP_ADD, AGXQ__OP__OP_LAYER_NORM,
	    AGXQ__OP__OP_LINEAR, AGXQ__OP__OP_RELU, AGXQ__OP__OP_LINEAR,
	    AGXQ__OP__OP_ADD };
	int64_t s[2] = { 5, 32 };
	float sd = (float)(1.0 / sqrt(32.0)), sf = (float)(1.0 / sqrt(64.0));
	agxq_graph *g = NULL;
	Agxq__Graph *pb = NULL;
	int x, y;

	for (int nf = 0; nf < 2; nf++) {
		const Agxq__Op *ops = nf ? pre : post;

		g = agxq_graph_new();
		CHECK(g != NULL);
		x = agxq_graph_input(g, s, 2);
		y = agxq_build_transformer(g, x, 32, 4, 64, 1e-5f, nf, 7);
		CHECK(y == 1 + 12 + 7);
		CHECK(agxq_graph_output(g, y) == 0);
		CHECK(builder_to_proto(g, &pb) == 0);
		CHECK(pb->n_inputs == 1 && pb->n_constants == 12);
		CHECK(pb->n_nodes == 8 && pb->n_outputs == 1);
		CHECK(pb->outputs[0] == 20);
		CHECK(const_is(pb, 0, 96, 32, 7, sd, 0));
		CHECK(const_is(pb, 1, 96, 0, 8, 0.1f, 0));
		CHECK(const_is(pb, 2, 32, 32, 9, sd, 0));
		CHECK(const_is(pb, 3, 32, 0, 10, 0.1f, 0));
		CHECK(const_is(pb, 4, 64, 32, 11, sd, 0));
		CHECK(const_is(pb, 5, 64, 0, 12, sd, 0));
		CHECK(const_is(pb, 6, 32, 64, 13, sf, 0));
		CHECK(const_is(pb, 7, 32, 0, 14, sf, 0));
		CHECK(const_is(pb, 8, 32, 0, 15, 0.1f, 1.0f));
		CHECK(const_is(pb, 9, 32, 0, 16, 0.1f, 0));
		CHECK(const_is(pb, 10, 32, 0, 17, 0.1f, 1.0f));
		CHECK(const_is(pb, 11, 32, 0, 18, 0.1f, 0));
		for (int i = 0; i < 8; i++)
			CHECK(pb->nodes[i]->op == ops[i]);
		/* Values: x=0, params 1..12, nodes 13..20. */
		if (!nf) {
			CHECK(node_inputs_are(pb->nodes[0], (uint32_t[]){ 0, 1, 2, 3, 4 }, 5));
			CHECK(pb->nodes[0]->heads == 4 && !pb->nodes[0]->causal);
			CHECK(node_inputs_are(pb->nodes[1], (uint32_t[]){ 0, 13 }, 2));
			CHECK(node_inputs_are(pb->nodes[2], (uint32_t[]){ 14, 9, 10 }, 3));
			CHECK(node_inputs_are(pb->nodes[3], (uint32_t[]){ 15, 5, 6 }, 3));
			CHECK(node_inputs_are(pb->nodes[4], (uint32_t[]){ 16 }, 1));
			CHECK(node_inputs_are(pb->nodes[5], (uint32_t[]){ 17, 7, 8 }, 3));
			CHECK(node_inputs_are(pb->nodes[6], (uint32_t[]){ 15, 18 }, 2));
			CHECK(node_inputs_are(pb->nodes[7], (uint32_t[]){ 19, 11, 12 }, 3));
		} else {
			CHECK(node_inputs_are(pb->nodes[0], (uint32_t[]){ 0, 9, 10 }, 3));
			CHECK(node_inputs_are(pb->nodes[1], (uint32_t[]){ 13, 1, 2, 3, 4 }, 5));
			CHECK(node_inputs_are(pb->nodes[2], (uint32_t[]){ 0, 14 }, 2));
			CHECK(node_inputs_are(pb->nodes[3], (uint32_t[]){ 15, 11, 12 }, 3));
			CHECK(node_inputs_are(pb->nodes[4], (uint32_t[]){ 16, 5, 6 }, 3));
			CHECK(node_inputs_are(pb->nodes[5], (uint32_t[]){ 17 }, 1));
			CHECK(node_inputs_are(pb->nodes[6], (uint32_t[]){ 18, 7, 8 }, 3));
			CHECK(node_inputs_are(pb->nodes[7], (uint32_t[]){ 15, 19 }, 2));
		}
		for (int i = 0; i < 8; i++) {
			if (pb->nodes[i]->op == AGXQ__OP__OP_LAYER_NORM) {
				CHECK(pb->nodes[i]->eps == 1e-5f);
				CHECK(pb->nodes[i]->has_weight);
				CHECK(pb->nodes[i]->has_bias);
			}
			if (pb->nodes[i]->op == AGXQ__OP__OP_LINEAR)
				CHECK(pb->nodes[i]->has_bias);
		}
		CHECK(pack_round_trip(pb));
		builder_proto_free(pb);
		pb = NULL;
		agxq_graph_free(g);
		g = NULL;
	}
out:
	builder_proto_free(pb);
	agxq_graph_free(g);
	return 0;
}

/* The three reference models: sizes, seeds, inputs, names. */
static int
t_reference(void)
{
	agxq_graph *g = NULL;
	Agxq__Graph *pb = NULL;
	agxq_tensor t;
	float s256 = (float)(1.0 / sqrt(256.0)), s512 = (float)(1.0 / sqrt(512.0));

	/* linear */
	CHECK(agxq_reference_build(AGXQ_REF_LINEAR, 42, &g) == 0);
	CHECK(builder_to_proto(g, &pb) == 0);
	CHECK(pb->n_inputs == 1 && pb->n_constants == 2 && pb->n_nodes == 1);
	CHECK(pb->inputs[0]->n_sample_shape == 1);
	CHECK(pb->inputs[0]->sample_shape[0] == 256);
	CHECK(const_is(pb, 0, 128, 256, 42, s256, 0));
	CHECK(const_is(pb, 1, 128, 0, 43, s256, 0));
	CHECK(pb->n_outputs == 1 && pb->outputs[0] == 3);
	builder_proto_free(pb);
	pb = NULL;
	agxq_graph_free(g);
	g = NULL;

	/* mlp */
	CHECK(agxq_reference_build(AGXQ_REF_MLP, 42, &g) == 0);
	CHECK(builder_to_proto(g, &pb) == 0);
	CHECK(pb->n_inputs == 1 && pb->n_constants == 6 && pb->n_nodes == 5);
	CHECK(const_is(pb, 0, 512, 256, 42, s256, 0));
	CHECK(const_is(pb, 1, 512, 0, 43, s256, 0));
	CHECK(const_is(pb, 2, 256, 512, 44, s512, 0));
	CHECK(const_is(pb, 3, 256, 0, 45, s512, 0));
	CHECK(const_is(pb, 4, 128, 256, 46, s256, 0));
	CHECK(const_is(pb, 5, 128, 0, 47, s256, 0));
	CHECK(pb->nodes[0]->op == AGXQ__OP__OP_LINEAR);
	CHECK(pb->nodes[1]->op == AGXQ__OP__OP_RELU);
	CHECK(pb->nodes[2]->op == AGXQ__OP__OP_LINEAR);
	CHECK(pb->nodes[3]->op == AGXQ__OP__OP_RELU);
	CHECK(pb->nodes[4]->op == AGXQ__OP__OP_LINEAR);
	CHECK(node_inputs_are(pb->nodes[4], (uint32_t[]){ 10, 5, 6 }, 3));
	CHECK(pb->n_outputs == 1 && pb->outputs[0] == 11);
	builder_proto_free(pb);
	pb = NULL;
	agxq_graph_free(g);
	g = NULL;

	/* transformer */
	CHECK(agxq_reference_build(AGXQ_REF_TRANSFORMER, 42, &g) == 0);
	CHECK(builder_to_proto(g, &pb) == 0);
	CHECK(pb->n_inputs == 1 && pb->n_constants == 12 && pb->n_nodes == 8);
	CHECK(pb->inputs[0]->n_sample_shape == 2);
	CHECK(pb->inputs[0]->sample_shape[0] == -1);
	CHECK(pb->inputs[0]->sample_shape[1] == 256);
	CHECK(const_is(pb, 0, 768, 256, 42, 1.0f / 16, 0));
	CHECK(const_is(pb, 4, 2048, 256, 46, 1.0f / 16, 0));
	CHECK(const_is(pb, 6, 256, 2048, 48,
	    (float)(1.0 / sqrt(2048.0)), 0));
	CHECK(const_is(pb, 10, 256, 0, 52, 0.1f, 1.0f));
	CHECK(pb->nodes[0]->op == AGXQ__OP__OP_MHA && pb->nodes[0]->heads == 4);
	CHECK(pb->nodes[7]->op == AGXQ__OP__OP_LAYER_NORM);
	CHECK(pb->n_outputs == 1 && pb->outputs[0] == 20);
	builder_proto_free(pb);
	pb = NULL;
	agxq_graph_free(g);
	g = NULL;

	CHECK(agxq_reference_build((agxq_reference)0, 42, &g) == AGXQ_EINVAL);
	CHECK(agxq_reference_build((agxq_reference)4, 42, &g) == AGXQ_EINVAL);
	CHECK(agxq_reference_build(AGXQ_REF_MLP, 42, NULL) == AGXQ_EINVAL);
	CHECK(g == NULL);

	memset(&t, 0, sizeof t);
	CHECK(agxq_reference_input_shape(AGXQ_REF_LINEAR, 4, &t) == 0);
	CHECK(t.dtype == AGXQ_FLOAT32 && t.ndim == 2);
	CHECK(t.shape[0] == 4 && t.shape[1] == 256);
	CHECK(agxq_reference_input_shape(AGXQ_REF_MLP, 7, &t) == 0);
	CHECK(t.ndim == 2 && t.shape[0] == 7 && t.shape[1] == 256);
	CHECK(agxq_reference_input_shape(AGXQ_REF_TRANSFORMER, 4, &t) == 0);
	CHECK(t.ndim == 3 && t.shape[0] == 4 && t.shape[1] == 32);
	CHECK(t.shape[2] == 256);
	CHECK(agxq_reference_input_shape(AGXQ_REF_LINEAR, 0, &t) == AGXQ_EINVAL);
	CHECK(agxq_reference_input_shape((agxq_reference)9, 4, &t) == AGXQ_EINVAL);
	CHECK(agxq_reference_input_shape(AGXQ_REF_LINEAR, 4, NULL) == AGXQ_EINVAL);

	CHECK(strcmp(agxq_reference_name(AGXQ_REF_LINEAR), "linear") == 0);
	CHECK(strcmp(agxq_reference_name(AGXQ_REF_MLP), "mlp") == 0);
	CHECK(strcmp(agxq_reference_name(AGXQ_REF_TRANSFORMER), "transformer") == 0);
	CHECK(agxq_reference_name((agxq_reference)0) == NULL);
	CHECK(agxq_reference_parse("linear") == AGXQ_REF_LINEAR);
	CHECK(agxq_reference_parse("mlp") == AGXQ_REF_MLP);
	CHECK(agxq_reference_parse("transformer") == AGXQ_REF_TRANSFORMER);
	CHECK(agxq_reference_parse("Linear") == AGXQ_EINVAL);
	CHECK(agxq_reference_parse("") == AGXQ_EINVAL);
	CHECK(agxq_reference_parse(NULL) == AGXQ_EINVAL);
out:
	builder_proto_free(pb);
	agxq_graph_free(g);
	return 0;
}

static const struct testlib_icase cases[] = {
	{ "numbering", t_numbering },
	{ "no_forward_refs", t_no_forward_refs },
	{ "ops", t_ops },
	{ "sticky", t_sticky },
	{ "bad_args", t_bad_args },
	{ "weights_known", t_weights_known },
	{ "weights_stream", t_weights_stream },
	{ "build_linear", t_build_linear },
	{ "build_transformer", t_build_transformer },
	{ "reference", t_reference },
};

int
main(int argc, char **argv)
{
	return testlib_run_int(cases, TESTLIB_N(cases), argc, argv);
}
