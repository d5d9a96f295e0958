/*
 * tgraph: builds Agxq__Graph wire structs for tests (see tgraph.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tgraph.h"

struct tgraph {
	Agxq__Graph g;
	Agxq__ValueInfo **inputs;
	Agxq__Tensor **consts;
	Agxq__Node **nodes;
	uint32_t *outputs;
	size_t ninputs, nconsts, nnodes, noutputs;
	size_t capin, capconst, capnode, capout;
};

/* Aborts the test with a message. */
static void
tg_die(const char *what)
{
	fprintf(stderr, "tgraph: %s\n", what);
	abort();
}

/* Grows a pointer or value array so it holds one more element. */
static void *
tg_grow(void *p, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return p;
	*cap = *cap ? *cap * 2 : 8;
	if ((p = realloc(p, *cap * size)) == NULL)
		tg_die("out of memory");
	return p;
}

/* calloc that aborts on failure. */
static void *
tg_zalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (p == NULL)
		tg_die("out of memory");
	return p;
}

/* Makes an empty graph builder. */
struct tgraph *
tg_new(void)
{
	struct tgraph *t = tg_zalloc(1, sizeof *t);
	Agxq__Graph init = AGXQ__GRAPH__INIT;

	t->g = init;
	return t;
}

/* Frees the builder and every struct it made; accepts NULL. */
void
tg_free(struct tgraph *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->ninputs; i++) {
		free(t->inputs[i]->sample_shape);
		free(t->inputs[i]);
	}
	for (i = 0; i < t->nconsts; i++) {
		free(t->consts[i]->shape);
		free(t->consts[i]->data.data);
		free(t->consts[i]);
	}
	for (i = 0; i < t->nnodes; i++) {
		if (t->nodes[i]->name != (char *)protobuf_c_empty_string)
			free(t->nodes[i]->name);
		free(t->nodes[i]->inputs);
		free(t->nodes[i]);
	}
	free(t->inputs);
	free(t->consts);
	free(t->nodes);
	free(t->outputs);
	free(t);
}

/* The wire graph, valid until the next tg_* call on t or tg_free. */
Agxq__Graph *
tg_graph(struct tgraph *t)
{
	t->g.n_inputs = t->ninputs;
	t->g.inputs = t->inputs;
	t->g.n_constants = t->nconsts;
	t->g.constants = t->consts;
	t->g.n_nodes = t->nnodes;
	t->g.nodes = t->nodes;
	t->g.n_outputs = t->noutputs;
	t->g.outputs = t->outputs;
	return &t->g;
}

/* Adds a float32 graph input of sample shape dims. */
uint32_t
tg_input(struct tgraph *t, const int64_t *dims, int ndim)
{
	Agxq__ValueInfo init = AGXQ__VALUE_INFO__INIT, *vi;

	if (t->nconsts > 0 || t->nnodes > 0)
		tg_die("tg_input after a constant or node");
	vi = tg_zalloc(1, sizeof *vi);
	*vi = init;
	vi->dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	vi->n_sample_shape = (size_t)ndim;
	vi->sample_shape = tg_zalloc((size_t)ndim, sizeof(int64_t));
	if (ndim > 0)
		memcpy(vi->sample_shape, dims, (size_t)ndim * sizeof(int64_t));
	t->inputs = tg_grow(t->inputs, &t->capin, t->ninputs, sizeof *t->inputs);
	t->inputs[t->ninputs++] = vi;
	return (uint32_t)(t->ninputs - 1);
}

/* Adds a float32 constant of shape dims, filled by copy, zeros or a value. */
static uint32_t
tg_const_make(struct tgraph *t, const int64_t *dims, int ndim,
    const float *data, float v)
{
	Agxq__Tensor init = AGXQ__TENSOR__INIT, *c;
	size_t n = 1;
	float *p;

	if (t->nnodes > 0)
		tg_die("tg_const after a node");
	for (int i = 0; i < ndim; i++)
		n *= (size_t)(dims[i] > 0 ? dims[i] : 0);
	c = tg_zalloc(1, sizeof *c);
	*c = init;
	c->dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	c->n_shape = (size_t)ndim;
	c->shape = tg_zalloc((size_t)ndim, sizeof(int64_t));
	if (ndim > 0)
		memcpy(c->shape, dims, (size_t)ndim * sizeof(int64_t));
	p = tg_zalloc(n, sizeof(float));
	if (data != NULL)
		memcpy(p, data, n * sizeof(float));
	else
		for (size_t i = 0; i < n; i++)
			p[i] = v;
	c->data.data = (uint8_t *)p;
	c->data.len = n * sizeof(float);
	t->consts = tg_grow(t->consts, &t->capconst, t->nconsts,
	    sizeof *t->consts);
	t->consts[t->nconsts++] = c;
	return (uint32_t)(t->ninputs + t->nconsts - 1);
}

/* Adds a float32 constant, copying from data (NULL: zeros). */
uint32_t
tg_const(struct tgraph *t, const int64_t *dims, int ndim, const float *data)
{
	return tg_const_make(t, dims, ndim, data, 0.0f);
}

/* Adds a constant filled with the value v. */
uint32_t
tg_const_fill(struct tgraph *t, const int64_t *dims, int ndim, float v)
{
	return tg_const_make(t, dims, ndim, NULL, v);
}

/* Adds a constant of uniform random values in [-scale, scale). */
uint32_t
tg_const_rand(struct tgraph *t, const int64_t *dims, int ndim, float scale,
    uint64_t *seed)
{
	uint32_t v = tg_const_make(t, dims, ndim, NULL, 0.0f);
	Agxq__Tensor *c = t->consts[t->nconsts - 1];

	tg_rand_fill((float *)c->data.data, c->data.len / sizeof(float), scale,
	    seed);
	return v;
}

/* The last constant's wire tensor. */
Agxq__Tensor *
tg_last_const(struct tgraph *t)
{
	if (t->nconsts == 0)
		tg_die("tg_last_const with no constants");
	return t->consts[t->nconsts - 1];
}

/* Adds a node of op reading in[0..nin). */
uint32_t
tg_node(struct tgraph *t, Agxq__Op op, const uint32_t *in, int nin)
{
	Agxq__Node init = AGXQ__NODE__INIT, *n;

	n = tg_zalloc(1, sizeof *n);
	*n = init;
	n->op = op;
	n->n_inputs = (size_t)nin;
	n->inputs = tg_zalloc((size_t)nin, sizeof(uint32_t));
	if (nin > 0)
		memcpy(n->inputs, in, (size_t)nin * sizeof(uint32_t));
	t->nodes = tg_grow(t->nodes, &t->capnode, t->nnodes, sizeof *t->nodes);
	t->nodes[t->nnodes++] = n;
	return (uint32_t)(t->ninputs + t->nconsts + t->nnodes - 1);
}

/* The last node's wire struct. */
Agxq__Node *
tg_last_node(struct tgraph *t)
{
	if (t->nnodes == 0)
		tg_die("tg_last_node with no nodes");
	return t->nodes[t->nnodes - 1];
}

/* Sets the last node's name (copied). */
void
tg_name(struct tgraph *t, const char *name)
{
	Agxq__Node *n = tg_last_node(t);

	if (n->name != (char *)protobuf_c_empty_string)
		free(n->name);
	if ((n->name = strdup(name)) == NULL)
		tg_die("out of memory");
}

/* Adds linear(x, w[, b]). */
uint32_t
tg_linear(struct tgraph *t, uint32_t x, uint32_t w, uint32_t b)
{
	uint32_t in[3] = { x, w, b }, v;

	v = tg_node(t, AGXQ__OP__OP_LINEAR, in, b == TG_NONE ? 2 : 3);
	tg_last_node(t)->has_bias = b != TG_NONE;
	return v;
}

/* Adds a node with two inputs. */
static uint32_t
tg_node2(struct tgraph *t, Agxq__Op op, uint32_t a, uint32_t b)
{
	uint32_t in[2] = { a, b };

	return tg_node(t, op, in, 2);
}

/* Adds matmul(a, b). */
uint32_t
tg_matmul(struct tgraph *t, uint32_t a, uint32_t b)
{
	return tg_node2(t, AGXQ__OP__OP_MATMUL, a, b);
}

/* Adds add(a, b). */
uint32_t
tg_add(struct tgraph *t, uint32_t a, uint32_t b)
{
	return tg_node2(t, AGXQ__OP__OP_ADD, a, b);
}

/* Adds mul(a, b). */
uint32_t
tg_mul(struct tgraph *t, uint32_t a, uint32_t b)
{
	return tg_node2(t, AGXQ__OP__OP_MUL, a, b);
}

/* Adds relu(x). */
uint32_t
tg_relu(struct tgraph *t, uint32_t x)
{
	return tg_node(t, AGXQ__OP__OP_RELU, &x, 1);
}

/* Adds gelu(x), exact or tanh-approximated. */
uint32_t
tg_gelu(struct tgraph *t, uint32_t x, int tanh_approx)
{
	uint32_t v = tg_node(t, AGXQ__OP__OP_GELU, &x, 1);

	tg_last_node(t)->gelu_tanh = tanh_approx != 0;
	return v;
}

/* Adds silu(x). */
uint32_t
tg_silu(struct tgraph *t, uint32_t x)
{
	return tg_node(t, AGXQ__OP__OP_SILU, &x, 1);
}

/* Adds softmax(x, axis). */
uint32_t
tg_softmax(struct tgraph *t, uint32_t x, int axis)
{
	uint32_t v = tg_node(t, AGXQ__OP__OP_SOFTMAX, &x, 1);

	tg_last_node(t)->axis = axis;
	return v;
}

/* Adds layer_norm(x[, w][, b]) over the last dim. */
uint32_t
tg_layer_norm(struct tgraph *t, uint32_t x, uint32_t w, uint32_t b, float eps)
{
	uint32_t in[3], v;
	int nin = 0;
	Agxq__Node *n;

	in[nin++] = x;
	if (w != TG_NONE)
		in[nin++] = w;
	if (b != TG_NONE)
		in[nin++] = b;
	v = tg_node(t, AGXQ__OP__OP_LAYER_NORM, in, nin);
	n = tg_last_node(t);
	n->has_weight = w != TG_NONE;
	n->has_bias = b != TG_NONE;
	n->eps = eps;
	return v;
}

/* Adds mha(x, in_w, in_b, out_w, out_b). */
uint32_t
tg_mha(struct tgraph *t, uint32_t x, uint32_t in_w, uint32_t in_b,
    uint32_t out_w, uint32_t out_b, unsigned heads, int causal)
{
	uint32_t in[5] = { x, in_w, in_b, out_w, out_b }, v;
	Agxq__Node *n;

	v = tg_node(t, AGXQ__OP__OP_MHA, in, 5);
	n = tg_last_node(t);
	n->heads = heads;
	n->causal = causal != 0;
	return v;
}

/* Marks value v as the next graph output. */
void
tg_output(struct tgraph *t, uint32_t v)
{
	t->outputs = tg_grow(t->outputs, &t->capout, t->noutputs,
	    sizeof *t->outputs);
	t->outputs[t->noutputs++] = v;
}

/* Sets the graph's precision. */
void
tg_precision(struct tgraph *t, Agxq__Precision p)
{
	t->g.precision = p;
}

/* Uniform random float in [-scale, scale) from a xorshift64 state. */
float
tg_randf(uint64_t *seed, float scale)
{
	uint64_t x = *seed ? *seed : 0x9e3779b97f4a7c15ULL;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*seed = x;
	return scale * ((float)(x >> 40) / (float)(1 << 23) - 1.0f);
}

/* Fills p[0..n) with tg_randf values. */
void
tg_rand_fill(float *p, size_t n, float scale, uint64_t *seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = tg_randf(seed, scale);
}
