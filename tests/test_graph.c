/*
 * test_graph: graph_from_proto validation (every rejection names the node or
 * value), the row-independence rules, limits, hashing and equality, and
 * shape inference.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "tgraph.h"

/* Loads t with lim (NULL: defaults); expects failure with every needle in the message. */
static int
expect_reject(struct tgraph *t, const struct graph_limits *lim,
    const char *needle1, const char *needle2)
{
	struct graph *g = NULL;
	char *cause = NULL;
	int ok = 1;

	if (graph_from_proto(tg_graph(t), lim, &g, &cause) == 0) {
		printf("  expected rejection (%s), graph loaded\n", needle1);
		graph_free(g);
		ok = 0;
	} else if (cause == NULL) {
		printf("  no cause\n");
		ok = 0;
	} else if (getenv("AGXQ_TEST_VERBOSE") != NULL &&
	    printf("  cause: %s\n", cause) < 0) {
		ok = 0;
	} else if (strstr(cause, needle1) == NULL ||
	    (needle2 != NULL && strstr(cause, needle2) == NULL)) {
		printf("  cause \"%s\" lacks \"%s\"%s%s\n", cause, needle1,
		    needle2 ? " / " : "", needle2 ? needle2 : "");
		ok = 0;
	}
	free(cause);
	tg_free(t);
	return ok;
}

/* Loads t; expects success. Returns the graph (caller frees) or NULL. */
static struct graph *
expect_load(struct tgraph *t)
{
	struct graph *g = NULL;
	char *cause = NULL;

	if (graph_from_proto(tg_graph(t), NULL, &g, &cause) != 0) {
		printf("  unexpected rejection: %s\n", cause ? cause : "?");
		free(cause);
		g = NULL;
	}
	tg_free(t);
	return g;
}

/* Compares a shape with the given dims. */
static int
shape_is(const struct graph_shape *s, int ndim, const int64_t *d)
{
	if (s->ndim != ndim)
		return 0;
	for (int i = 0; i < ndim; i++)
		if (s->dim[i] != d[i])
			return 0;
	return 1;
}

static int
test_valid_linear(void)
{
	struct tgraph *t = tg_new();
	uint64_t seed = 1;
	struct graph *g;
	uint32_t x, w, b, y;
	int ok;

	x = tg_input(t, TG_DIMS(256));
	w = tg_const_rand(t, TG_DIMS(128, 256), 0.1f, &seed);
	b = tg_const_rand(t, TG_DIMS(128), 0.1f, &seed);
	y = tg_linear(t, x, w, b);
	tg_output(t, y);
	if ((g = expect_load(t)) == NULL)
		return 0;
	ok = g->nvalues == 4 && g->nnodes == 1 && g->values[y].batched &&
	    !g->values[w].batched &&
	    shape_is(&g->values[y].shape, 2, (int64_t[]){ -1, 128 }) &&
	    g->weight_bytes == (128 * 256 + 128) * 4 &&
	    strcmp(g->nodes[0].name, "node 0 (linear)") == 0;
	graph_free(g);
	return ok;
}

static int
test_forward_ref(void)
{
	struct tgraph *t = tg_new();
	uint32_t x, w, v, in[2];

	x = tg_input(t, TG_DIMS(256));
	w = tg_const(t, TG_DIMS(128, 256), NULL);
	v = tg_relu(t, x);
	v = tg_relu(t, v);
	v = tg_relu(t, v);
	in[0] = 9;
	in[1] = w;
	tg_node(t, AGXQ__OP__OP_LINEAR, in, 2);
	tg_name(t, "fc1");
	tg_output(t, v);
	return expect_reject(t, NULL, "node 3 (linear \"fc1\")",
	    "input 9 is not defined before it (forward reference or cycle)");
}

static int
test_self_cycle(void)
{
	struct tgraph *t = tg_new();
	uint32_t x, in[1];

	x = tg_input(t, TG_DIMS(4));
	in[0] = x + 1; /* its own output */
	tg_node(t, AGXQ__OP__OP_RELU, in, 1);
	tg_output(t, x + 1);
	return expect_reject(t, NULL, "node 0 (relu)", "input 1 is not defined");
}

static int
test_unknown_op(void)
{
	struct tgraph *t = tg_new();
	uint32_t x, in[1];

	x = tg_input(t, TG_DIMS(4));
	x = tg_relu(t, x);
	x = tg_relu(t, x);
	in[0] = x;
	tg_node(t, 99, in, 1);
	tg_output(t, x);
	return expect_reject(t, NULL, "node 2: unknown op 99", NULL);
}

static int
test_arity_relu(void)
{
	struct tgraph *t = tg_new();
	uint32_t x, in[2];

	x = tg_input(t, TG_DIMS(4));
	x = tg_relu(t, x);
	in[0] = in[1] = x;
	x = tg_node(t, AGXQ__OP__OP_RELU, in, 2);
	tg_output(t, x);
	return expect_reject(t, NULL, "node 1 (relu): expects 1 input, got 2",
	    NULL);
}

static int
test_arity_flags(void)
{
	struct tgraph *t = tg_new();
	uint32_t x, w, y;
	int ok;

	/* linear says has_bias but lists only x and W. */
	x = tg_input(t, TG_DIMS(4));
	w = tg_const(t, TG_DIMS(3, 4), NULL);
	y = tg_linear(t, x, w, TG_NONE);
	tg_last_node(t)->has_bias = 1;
	tg_output(t, y);
	ok = expect_reject(t, NULL, "node 0 (linear): expects 3 inputs, got 2",
	    NULL);

	/* layer_norm with weight only but three inputs listed. */
	t = tg_new();
	x = tg_input(t, TG_DIMS(4));
	w = tg_const(t, TG_DIMS(4), NULL);
	y = tg_layer_norm(t, x, w, w, 1e-5f);
	tg_last_node(t)->has_bias = 0;
	tg_output(t, y);
	return expect_reject(t, NULL, "node 0 (layer_norm): expects 2 inputs",
	    NULL) && ok;
}

static int
test_const_size(void)
{
	struct tgraph *t = tg_new();
	uint32_t x;

	x = tg_input(t, TG_DIMS(16));
	tg_const(t, TG_DIMS(16, 16), NULL);
	tg_const(t, TG_DIMS(16, 16), NULL);
	tg_const(t, TG_DIMS(16, 16), NULL);
	tg_last_const(t)->data.len = 1000;
	tg_output(t, tg_relu(t, x));
	return expect_reject(t, NULL,
	    "constant 2: data is 1000 bytes, shape [16, 16] needs 1024", NULL);
}

static int
test_linear_mismatch(void)
{
	struct tgraph *t = tg_new();
	uint32_t x, w, b;
	int ok;

	x = tg_input(t, TG_DIMS(256));
	w = tg_const(t, TG_DIMS(128, 300), NULL);
	x = tg_relu(t, x);
	x = tg_linear(t, x, w, TG_NONE);
	tg_output(t, x);
	ok = expect_reject(t, NULL,
	    "node 1 (linear): weight [128, 300] does not match input features "
	    "256", NULL);

	t = tg_new();
	x = tg_input(t, TG_DIMS(256));
	w = tg_const(t, TG_DIMS(128, 256), NULL);
	b = tg_const(t, TG_DIMS(127), NULL);
	tg_output(t, tg_linear(t, x, w, b));
	return expect_reject(t, NULL, "node 0 (linear): bias [127]", NULL) &&
	    ok;
}

static int
test_dtype(void)
{
	struct tgraph *t = tg_new();
	int ok;

	tg_input(t, TG_DIMS(4));
	tg_output(t, tg_relu(t, 0));
	tg_graph(t)->inputs[0]->dtype = AGXQ__DTYPE__DTYPE_INVALID;
	ok = expect_reject(t, NULL, "input 0: dtype 0", "float32");

	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_const(t, TG_DIMS(4), NULL);
	tg_last_const(t)->dtype = 7;
	tg_output(t, tg_relu(t, 0));
	return expect_reject(t, NULL, "constant 0: dtype 7", "float32") && ok;
}

static int
test_counts_outputs(void)
{
	struct tgraph *t;
	uint32_t c;
	int ok = 1;

	t = tg_new();
	tg_const(t, TG_DIMS(4), NULL);
	tg_output(t, 0);
	ok &= expect_reject(t, NULL, "no inputs", NULL);

	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_relu(t, 0);
	ok &= expect_reject(t, NULL, "no outputs", NULL);

	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_relu(t, 0);
	tg_output(t, 7);
	ok &= expect_reject(t, NULL, "output 0: value 7 does not exist", NULL);

	t = tg_new();
	tg_input(t, TG_DIMS(4));
	c = tg_const(t, TG_DIMS(4), NULL);
	tg_relu(t, 0);
	tg_output(t, 2);
	tg_output(t, tg_relu(t, c));
	ok &= expect_reject(t, NULL,
	    "output 1 (value 3) does not depend on a graph input", NULL);

	/* A graph input may be an output as it is. */
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_output(t, 0);
	{
		struct graph *g = expect_load(t);

		ok &= g != NULL;
		graph_free(g);
	}
	return ok;
}

static int
test_input_dims(void)
{
	struct tgraph *t;
	int ok = 1;

	t = tg_new();
	tg_input(t, TG_DIMS(4, 0));
	tg_output(t, 0);
	ok &= expect_reject(t, NULL, "input 0: dim 1 is 0", NULL);

	t = tg_new();
	tg_input(t, TG_DIMS(-2));
	tg_output(t, 0);
	ok &= expect_reject(t, NULL, "input 0: dim 0 is -2", NULL);

	t = tg_new();
	tg_input(t, TG_DIMS(1, 2, 3, 4, 5, 6));
	tg_output(t, 0);
	ok &= expect_reject(t, NULL, "input 0: 6 dims, at most 5", NULL);

	t = tg_new();
	tg_input(t, TG_DIMS(2));
	tg_const(t, TG_DIMS(1, 1, 1, 1, 1, 1, 1), NULL);
	tg_output(t, 0);
	ok &= expect_reject(t, NULL, "constant 0: 7 dims", NULL);
	return ok;
}

static int
test_limits(void)
{
	struct graph_limits lim;
	struct tgraph *t;
	int ok = 1;

	/* A huge constant is rejected from its shape alone (no data sent). */
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_const(t, TG_DIMS(1, 1), NULL);
	tg_last_const(t)->shape[0] = (int64_t)1 << 40;
	tg_output(t, 0);
	ok &= expect_reject(t, NULL, "constant 0: dim 0 is 1099511627776", NULL);

	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_const(t, TG_DIMS(1, 1, 1), NULL);
	tg_last_const(t)->shape[0] = (int64_t)1 << 24;
	tg_last_const(t)->shape[1] = (int64_t)1 << 24;
	tg_last_const(t)->shape[2] = (int64_t)1 << 24;
	tg_output(t, 0);
	ok &= expect_reject(t, NULL, "constant 0: more than 2147483648 elements",
	    NULL);

	t = tg_new();
	tg_input(t, TG_DIMS((int64_t)1 << 25));
	tg_output(t, 0);
	ok &= expect_reject(t, NULL, "input 0: dim 0 is 33554432", NULL);

	graph_limits_default(&lim);
	lim.max_nodes = 2;
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_output(t, tg_relu(t, tg_relu(t, tg_relu(t, 0))));
	ok &= expect_reject(t, &lim, "3 nodes, limit is 2", NULL);

	graph_limits_default(&lim);
	lim.max_weight_bytes = 100;
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_const(t, TG_DIMS(16), NULL);
	tg_const(t, TG_DIMS(16), NULL);
	tg_output(t, 0);
	ok &= expect_reject(t, &lim, "weight limit of 100 bytes", NULL);

	graph_limits_default(&lim);
	lim.max_values = 3;
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_const(t, TG_DIMS(4), NULL);
	tg_output(t, tg_relu(t, tg_relu(t, 0)));
	ok &= expect_reject(t, &lim, "too many values", NULL);
	return ok;
}

static int
test_batch_softmax(void)
{
	struct tgraph *t;
	int ok = 1;

	t = tg_new();
	tg_input(t, TG_DIMS(8, 4));
	tg_output(t, tg_softmax(t, 0, 0));
	tg_name(t, "sm");
	ok &= expect_reject(t, NULL, "node 0 (softmax \"sm\")", "axis 0");

	t = tg_new();
	tg_input(t, TG_DIMS(8, 4));
	tg_output(t, tg_softmax(t, 0, -3));
	ok &= expect_reject(t, NULL, "node 0 (softmax)", "axis 0");

	t = tg_new();
	tg_input(t, TG_DIMS(8, 4));
	tg_output(t, tg_softmax(t, 0, 3));
	ok &= expect_reject(t, NULL, "node 0 (softmax): axis 3 out of range",
	    NULL);

	t = tg_new();
	tg_input(t, TG_DIMS(8, 4));
	tg_output(t, tg_softmax(t, 0, -4));
	ok &= expect_reject(t, NULL, "node 0 (softmax): axis -4 out of range",
	    NULL);
	return ok;
}

static int
test_batch_layer_norm(void)
{
	struct tgraph *t;
	uint32_t w;
	int ok = 1;

	t = tg_new();
	tg_input(t, NULL, 0);
	tg_output(t, tg_layer_norm(t, 0, TG_NONE, TG_NONE, 1e-5f));
	ok &= expect_reject(t, NULL, "node 0 (layer_norm)", "batch");

	t = tg_new();
	tg_input(t, TG_DIMS(4));
	w = tg_const(t, TG_DIMS(5), NULL);
	tg_output(t, tg_layer_norm(t, 0, w, TG_NONE, 1e-5f));
	ok &= expect_reject(t, NULL, "node 0 (layer_norm): weight [5]", NULL);

	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_output(t, tg_layer_norm(t, 0, TG_NONE, TG_NONE, -1.0f));
	ok &= expect_reject(t, NULL, "node 0 (layer_norm): eps", NULL);
	return ok;
}

static int
test_batch_add(void)
{
	struct tgraph *t;
	uint32_t c;
	struct graph *g;
	int ok = 1;

	/* Batched operand of lower rank than the constant. */
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	c = tg_const(t, TG_DIMS(2, 3, 4), NULL);
	tg_output(t, tg_add(t, 0, c));
	ok &= expect_reject(t, NULL, "node 0 (add)", "rank 2, below");

	/* Both batched with different ranks. */
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_input(t, TG_DIMS(3, 4));
	tg_output(t, tg_mul(t, 1, 0));
	ok &= expect_reject(t, NULL, "node 0 (mul)", "ranks differ");

	/* Unbatched operand of equal rank pairs its dim 0 with the batch. */
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	c = tg_const(t, TG_DIMS(3, 4), NULL);
	tg_output(t, tg_add(t, c, 0));
	ok &= expect_reject(t, NULL, "node 0 (add)", "dim 0 (3)");

	/* ... but dim 0 of 1 broadcasts and is fine; so is a lower rank. */
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	c = tg_const(t, TG_DIMS(1, 4), NULL);
	tg_output(t, tg_add(t, tg_add(t, c, 0), 1));
	g = expect_load(t);
	ok &= g != NULL && shape_is(&g->values[3].shape, 2,
	    (int64_t[]){ -1, 4 });
	graph_free(g);

	/* Broadcast mismatch. */
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	c = tg_const(t, TG_DIMS(3), NULL);
	tg_output(t, tg_add(t, 0, c));
	ok &= expect_reject(t, NULL, "node 0 (add): cannot broadcast [?, 4] "
	    "with [3]", NULL);
	return ok;
}

static int
test_batch_matmul(void)
{
	struct tgraph *t;
	uint32_t c;
	struct graph *g;
	int ok = 1;

	t = tg_new();
	tg_input(t, TG_DIMS(5));
	c = tg_const(t, TG_DIMS(3, 4), NULL);
	tg_output(t, tg_matmul(t, c, 0));
	ok &= expect_reject(t, NULL, "node 0 (matmul)", "b carries the batch");

	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_input(t, TG_DIMS(4));
	tg_output(t, tg_matmul(t, 0, 1));
	ok &= expect_reject(t, NULL, "node 0 (matmul)", "equal rank >= 3");

	t = tg_new();
	tg_input(t, TG_DIMS(3, 4));
	tg_input(t, TG_DIMS(4, 5, 6));
	tg_output(t, tg_matmul(t, 0, 1));
	ok &= expect_reject(t, NULL, "node 0 (matmul)", "equal rank >= 3");

	t = tg_new();
	tg_input(t, TG_DIMS(3, 4));
	c = tg_const(t, TG_DIMS(2, 4, 5), NULL);
	tg_output(t, tg_matmul(t, 0, c));
	ok &= expect_reject(t, NULL, "node 0 (matmul)", "pair its dim 0");

	t = tg_new();
	tg_input(t, TG_DIMS(3, 4));
	c = tg_const(t, TG_DIMS(5, 6), NULL);
	tg_output(t, tg_matmul(t, 0, c));
	ok &= expect_reject(t, NULL, "node 0 (matmul): inner dims of a "
	    "[?, 3, 4] and b [5, 6] differ", NULL);

	/* Batched matmul of two batched rank-3 values is fine. */
	t = tg_new();
	tg_input(t, TG_DIMS(3, 4));
	tg_input(t, TG_DIMS(4, -1));
	tg_output(t, tg_matmul(t, 0, 1));
	g = expect_load(t);
	ok &= g != NULL && shape_is(&g->values[2].shape, 3,
	    (int64_t[]){ -1, 3, -1 });
	graph_free(g);
	return ok;
}

static int
test_batch_params(void)
{
	struct tgraph *t;
	uint32_t c, w[4];
	uint64_t seed = 3;
	int ok = 1;

	/* linear whose weight comes from the batch. */
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_input(t, TG_DIMS(4));
	tg_output(t, tg_linear(t, 0, 1, TG_NONE));
	ok &= expect_reject(t, NULL, "node 0 (linear)", "depends on a graph");

	/* linear whose bias comes from the batch. */
	t = tg_new();
	tg_input(t, TG_DIMS(4));
	tg_input(t, NULL, 0);
	c = tg_const(t, TG_DIMS(4, 4), NULL);
	tg_output(t, tg_linear(t, 0, c, 1));
	ok &= expect_reject(t, NULL, "node 0 (linear)", "input 1 depends");

	/* mha whose out_proj weight is batched (via a node). */
	t = tg_new();
	tg_input(t, TG_DIMS(3, 8));
	tg_input(t, TG_DIMS(8));
	w[0] = tg_const_rand(t, TG_DIMS(24, 8), 0.1f, &seed);
	w[1] = tg_const_rand(t, TG_DIMS(24), 0.1f, &seed);
	w[2] = tg_const_rand(t, TG_DIMS(8), 0.1f, &seed);
	c = tg_relu(t, 1);
	tg_output(t, tg_mha(t, 0, w[0], w[1], c, w[2], 2, 0));
	tg_name(t, "attn");
	ok &= expect_reject(t, NULL, "node 1 (mha \"attn\")", "depends");

	/* mha with heads not dividing the embed dim. */
	t = tg_new();
	tg_input(t, TG_DIMS(3, 8));
	w[0] = tg_const_rand(t, TG_DIMS(24, 8), 0.1f, &seed);
	w[1] = tg_const_rand(t, TG_DIMS(24), 0.1f, &seed);
	w[2] = tg_const_rand(t, TG_DIMS(8, 8), 0.1f, &seed);
	w[3] = tg_const_rand(t, TG_DIMS(8), 0.1f, &seed);
	tg_output(t, tg_mha(t, 0, w[0], w[1], w[2], w[3], 3, 0));
	ok &= expect_reject(t, NULL, "node 0 (mha)", "not divisible by 3 heads");

	/* mha with a wrong embed dim. */
	t = tg_new();
	tg_input(t, TG_DIMS(3, 16));
	w[0] = tg_const_rand(t, TG_DIMS(24, 8), 0.1f, &seed);
	w[1] = tg_const_rand(t, TG_DIMS(24), 0.1f, &seed);
	w[2] = tg_const_rand(t, TG_DIMS(8, 8), 0.1f, &seed);
	w[3] = tg_const_rand(t, TG_DIMS(8), 0.1f, &seed);
	tg_output(t, tg_mha(t, 0, w[0], w[1], w[2], w[3], 2, 0));
	ok &= expect_reject(t, NULL, "node 0 (mha)", "embed dim 16");
	return ok;
}

/* Builds a small MLP with weights from seed; optionally names its nodes. */
static struct graph *
build_mlp(uint64_t seed, int named, int poke)
{
	struct tgraph *t = tg_new();
	uint32_t x, w1, b1, w2;

	x = tg_input(t, TG_DIMS(16));
	w1 = tg_const_rand(t, TG_DIMS(32, 16), 0.5f, &seed);
	b1 = tg_const_rand(t, TG_DIMS(32), 0.5f, &seed);
	w2 = tg_const_rand(t, TG_DIMS(8, 32), 0.5f, &seed);
	if (poke)
		((uint8_t *)tg_graph(t)->constants[1]->data.data)[5] ^= 1;
	x = tg_linear(t, x, w1, b1);
	if (named)
		tg_name(t, "fc1");
	x = tg_gelu(t, x, 0);
	x = tg_linear(t, x, w2, TG_NONE);
	tg_output(t, x);
	return expect_load(t);
}

static int
test_hash_equal(void)
{
	struct graph *a = build_mlp(7, 0, 0), *b = build_mlp(7, 0, 0);
	struct graph *c = build_mlp(7, 0, 1), *d = build_mlp(7, 1, 0);
	struct graph *e = build_mlp(8, 0, 0);
	int ok;

	ok = a && b && c && d && e;
	ok = ok && a->hash == b->hash && graph_equal(a, b) &&
	    a->hash != c->hash && !graph_equal(a, c) &&
	    a->hash != e->hash && !graph_equal(a, e) &&
	    /* Node names are labels, not part of the model. */
	    a->hash == d->hash && graph_equal(a, d);
	if (ok) {
		/* Equal hashes must still compare bytes. */
		uint64_t h = c->hash;

		c->hash = a->hash;
		ok = !graph_equal(a, c);
		c->hash = h;
	}
	graph_free(a);
	graph_free(b);
	graph_free(c);
	graph_free(d);
	graph_free(e);
	return ok;
}

/* Builds a post-norm transformer encoder layer over [batch, seq, 64]. */
static struct graph *
build_encoder(int64_t seq)
{
	struct tgraph *t = tg_new();
	uint64_t seed = 11;
	uint32_t x, inw, inb, ow, ob, g1, b1, w1, c1, w2, c2, g2, b2, a, h;

	x = tg_input(t, TG_DIMS(seq, 64));
	inw = tg_const_rand(t, TG_DIMS(192, 64), 0.1f, &seed);
	inb = tg_const_rand(t, TG_DIMS(192), 0.1f, &seed);
	ow = tg_const_rand(t, TG_DIMS(64, 64), 0.1f, &seed);
	ob = tg_const_rand(t, TG_DIMS(64), 0.1f, &seed);
	g1 = tg_const_fill(t, TG_DIMS(64), 1.0f);
	b1 = tg_const_fill(t, TG_DIMS(64), 0.0f);
	w1 = tg_const_rand(t, TG_DIMS(256, 64), 0.1f, &seed);
	c1 = tg_const_rand(t, TG_DIMS(256), 0.1f, &seed);
	w2 = tg_const_rand(t, TG_DIMS(64, 256), 0.1f, &seed);
	c2 = tg_const_rand(t, TG_DIMS(64), 0.1f, &seed);
	g2 = tg_const_fill(t, TG_DIMS(64), 1.0f);
	b2 = tg_const_fill(t, TG_DIMS(64), 0.0f);
	a = tg_mha(t, x, inw, inb, ow, ob, 4, 0);
	a = tg_layer_norm(t, tg_add(t, x, a), g1, b1, 1e-5f);
	h = tg_relu(t, tg_linear(t, a, w1, c1));
	tg_name(t, "ff_act");
	h = tg_linear(t, h, w2, c2);
	tg_output(t, tg_layer_norm(t, tg_add(t, a, h), g2, b2, 1e-5f));
	return expect_load(t);
}

static int
test_infer_transformer(void)
{
	struct graph *g = build_encoder(32), *f = build_encoder(-1);
	struct graph_shape in = { 3, { 4, 32, 64 } }, *s = NULL;
	char *cause = NULL;
	int ok = 0;

	if (g == NULL || f == NULL)
		goto out;
	s = calloc(g->nvalues, sizeof *s);
	if (graph_infer(g, &in, s, &cause) != 0) {
		printf("  infer: %s\n", cause);
		goto out;
	}
	/* Values: 1 input, 12 constants, then mha (13) ... ff linear (16), relu (17). */
	if (!shape_is(&s[13], 3, (int64_t[]){ 4, 32, 64 }) ||
	    !shape_is(&s[17], 3, (int64_t[]){ 4, 32, 256 }) ||
	    !shape_is(&s[g->outputs[0]], 3, (int64_t[]){ 4, 32, 64 }) ||
	    !shape_is(&g->values[17].shape, 3, (int64_t[]){ -1, 32, 256 }))
		goto out;

	/* A wrong feature size is named against the declared shape. */
	in.dim[2] = 65;
	if (graph_infer(g, &in, s, &cause) == 0 || strstr(cause,
	    "input 0: shape [4, 32, 65] does not fit [batch, 32, 64]") == NULL)
		goto out;
	free(cause);
	cause = NULL;

	/* A free sequence dim takes any length. */
	in.dim[1] = 7;
	in.dim[2] = 64;
	if (graph_infer(f, &in, s, &cause) != 0 ||
	    !shape_is(&s[f->outputs[0]], 3, (int64_t[]){ 4, 7, 64 }) ||
	    !shape_is(&f->values[17].shape, 3, (int64_t[]){ -1, -1, 256 }))
		goto out;
	ok = 1;
out:
	free(cause);
	free(s);
	graph_free(g);
	graph_free(f);
	return ok;
}

static int
test_check_input(void)
{
	struct tgraph *t = tg_new();
	struct graph *g;
	struct graph_shape s;
	char *cause = NULL;
	int ok = 1;

	tg_input(t, TG_DIMS(-1, 256));
	tg_input(t, TG_DIMS(3));
	tg_output(t, 0);
	tg_output(t, 1);
	if ((g = expect_load(t)) == NULL)
		return 0;
	s = (struct graph_shape){ 3, { 2, 9, 256 } };
	ok &= graph_check_input(g, 0, &s, NULL) == 0;
	s = (struct graph_shape){ 2, { 4, 256 } };
	ok &= graph_check_input(g, 0, &s, &cause) == -1 && strstr(cause,
	    "input 0: shape [4, 256] does not fit [batch, any, 256]") != NULL;
	free(cause);
	s = (struct graph_shape){ 2, { 0, 3 } };
	ok &= graph_check_input(g, 1, &s, &cause) == -1 &&
	    strstr(cause, "input 1: shape [0, 3]") != NULL;
	free(cause);
	ok &= graph_check_input(g, 2, &s, &cause) == -1 &&
	    strstr(cause, "input 2") != NULL;
	free(cause);
	{
		/* Inputs of one run must share the batch size. */
		struct graph_shape in[2] = { { 3, { 2, 9, 256 } },
		    { 2, { 3, 3 } } }, out[4];

		ok &= graph_infer(g, in, out, &cause) == -1 &&
		    strstr(cause, "input 1: batch 3 differs") != NULL;
		free(cause);
		in[1].dim[0] = 2;
		ok &= graph_infer(g, in, out, NULL) == 0;
	}
	graph_free(g);
	return ok;
}

static int
test_infer_limit(void)
{
	struct graph_limits lim;
	struct tgraph *t = tg_new();
	struct graph *g = NULL;
	struct graph_shape in = { 2, { 1000, 64 } }, s[3];
	char *cause = NULL;
	uint32_t w;
	int ok;

	graph_limits_default(&lim);
	lim.max_elements = 100000;
	tg_input(t, TG_DIMS(64));
	w = tg_const(t, TG_DIMS(1000, 64), NULL);
	tg_output(t, tg_linear(t, 0, w, TG_NONE));
	tg_name(t, "big");
	ok = graph_from_proto(tg_graph(t), &lim, &g, &cause) == 0;
	tg_free(t);
	if (!ok) {
		printf("  load: %s\n", cause);
		free(cause);
		return 0;
	}
	ok = graph_infer(g, &in, s, &cause) == -1 &&
	    strstr(cause, "node 0 (linear \"big\"): output has more than") != NULL;
	free(cause);
	in.dim[0] = 1;
	ok = ok && graph_infer(g, &in, s, NULL) == 0 && s[2].dim[1] == 1000;
	graph_free(g);
	return ok;
}

static const struct {
	const char *name;
	int (*fn)(void);
} cases[] = {
	{ "valid_linear", test_valid_linear },
	{ "forward_ref", test_forward_ref },
	{ "self_cycle", test_self_cycle },
	{ "unknown_op", test_unknown_op },
	{ "arity_relu", test_arity_relu },
	{ "arity_flags", test_arity_flags },
	{ "const_size", test_const_size },
	{ "linear_mismatch", test_linear_mismatch },
	{ "dtype", test_dtype },
	{ "counts_outputs", test_counts_outputs },
	{ "input_dims", test_input_dims },
	{ "limits", test_limits },
	{ "batch_softmax", test_batch_softmax },
	{ "batch_layer_norm", test_batch_layer_norm },
	{ "batch_add", test_batch_add },
	{ "batch_matmul", test_batch_matmul },
	{ "batch_params", test_batch_params },
	{ "hash_equal", test_hash_equal },
	{ "infer_transformer", test_infer_transformer },
	{ "check_input", test_check_input },
	{ "infer_limit", test_infer_limit },
};

int
main(void)
{
	int failed = 0;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int ok = cases[i].fn();

		printf("%s %s\n", ok ? "ok  " : "FAIL", cases[i].name);
		failed += !ok;
	}
	printf("%d failed\n", failed);
	return failed != 0;
}
