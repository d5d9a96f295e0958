/*
 * builder: the graph builder behind agxq_graph_*, the seeded weight stream
 * and the reference models.
 *
 * The builder numbers values in the order the app defines them, whatever
 * their kind, so inputs, constants and nodes may be interleaved freely.
 * builder_to_proto renumbers into wire order: graph inputs first, then
 * constants, then node outputs. A node can only name values that already
 * exist, so the wire graph never has a forward reference.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "builder.h"

#define BUILDER_NAME_MAX 48
#define BUILDER_MAX_NODE_INPUTS 5
#define BUILDER_MAX_ELEMENTS (1ULL << 40)

enum builder_kind { BUILDER_INPUT, BUILDER_CONST, BUILDER_NODE };

/* A value as the app numbers it: its kind and index among its kind. */
struct builder_value {
	enum builder_kind kind;
	uint32_t index;
};

struct builder_input {
	int ndim;
	int64_t shape[AGXQ_MAX_DIMS]; /* sample shape, without the batch dim */
};

struct builder_const {
	int ndim;
	int64_t shape[AGXQ_MAX_DIMS];
	size_t nelem;
	float *data;
};

struct builder_node {
	Agxq__Op op;
	int nin;
	int in[BUILDER_MAX_NODE_INPUTS]; /* builder value ids; absent ones left out */
	float eps;
	int axis;
	int heads;
	int causal;
	int gelu_tanh;
	int has_bias;
	int has_weight;
	char name[BUILDER_NAME_MAX];
};

struct agxq_graph {
	int error; /* first error, sticky */
	agxq_precision precision;

	struct builder_value *values;
	uint32_t nvalues, values_cap;
	struct builder_input *inputs;
	uint32_t ninputs, inputs_cap;
	struct builder_const *consts;
	uint32_t nconsts, consts_cap;
	struct builder_node *nodes;
	uint32_t nnodes, nodes_cap;
	int *outputs;
	uint32_t noutputs, outputs_cap;
};

/* What builder_to_proto allocates; pb comes first so a Graph pointer is one. */
struct builder_pb {
	Agxq__Graph pb;
	Agxq__ValueInfo *vi;
	Agxq__ValueInfo **vip;
	Agxq__Tensor *t;
	Agxq__Tensor **tp;
	Agxq__Node *n;
	Agxq__Node **np;
	uint32_t *node_inputs;
	uint32_t *outputs;
};

/* Records err as the graph's error unless one is already set; returns it. */
static int
builder_fail(agxq_graph *g, int err)
{
	if (g->error == 0)
		g->error = err;
	return g->error;
}

/* Grows *arr (of *cap elements of size sz) to hold at least need elements. */
static int
builder_grow(void **arr, uint32_t *cap, uint32_t need, size_t sz)
{
	uint32_t ncap;
	void *p;

	if (need <= *cap)
		return 0;
	if (need > INT32_MAX)
		return AGXQ_ELIMIT;
	ncap = *cap == 0 ? 8 : *cap;
	while (ncap < need)
		ncap *= 2;
	if ((p = realloc(*arr, (size_t)ncap * sz)) == NULL)
		return AGXQ_ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

/* Appends a value of kind/index; returns its id or an error. */
static int
builder_value_add(agxq_graph *g, enum builder_kind kind, uint32_t index)
{
	int error;

	error = builder_grow((void **)&g->values, &g->values_cap,
	    g->nvalues + 1, sizeof *g->values);
	if (error != 0)
		return builder_fail(g, error);
	g->values[g->nvalues].kind = kind;
	g->values[g->nvalues].index = index;
	return (int)g->nvalues++;
}

/* Returns 1 when v names an existing value. */
static int
builder_valid(const agxq_graph *g, int v)
{
	return v >= 0 && (uint32_t)v < g->nvalues;
}

/* Creates an empty graph. */
agxq_graph *
agxq_graph_new(void)
{
	return calloc(1, sizeof(agxq_graph));
}

/* Frees a graph; accepts NULL. */
void
agxq_graph_free(agxq_graph *g)
{
	if (g == NULL)
		return;
	for (uint32_t i = 0; i < g->nconsts; i++)
		free(g->consts[i].data);
	free(g->consts);
	free(g->inputs);
	free(g->nodes);
	free(g->outputs);
	free(g->values);
	free(g);
}

/* Sets the precision the backend may use for matmuls. */
int
agxq_graph_set_precision(agxq_graph *g, agxq_precision p)
{
	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	if (p != AGXQ_PRECISION_FP32 && p != AGXQ_PRECISION_TF32 &&
	    p != AGXQ_PRECISION_FP16 && p != AGXQ_PRECISION_BF16)
		return builder_fail(g, AGXQ_EINVAL);
	g->precision = p;
	return 0;
}

/* Declares a graph input with sample shape (batch dim not included). */
int
agxq_graph_input(agxq_graph *g, const int64_t *sample_shape, int ndim)
{
	struct builder_input *in;
	int error;

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	/* The batch dimension takes one of the AGXQ_MAX_DIMS. */
	if (sample_shape == NULL || ndim < 1 || ndim > AGXQ_MAX_DIMS - 1)
		return builder_fail(g, AGXQ_EINVAL);
	for (int i = 0; i < ndim; i++) {
		if (sample_shape[i] <= 0 && sample_shape[i] != -1)
			return builder_fail(g, AGXQ_EINVAL);
		if (sample_shape[i] > (int64_t)BUILDER_MAX_ELEMENTS)
			return builder_fail(g, AGXQ_EINVAL);
	}
	error = builder_grow((void **)&g->inputs, &g->inputs_cap,
	    g->ninputs + 1, sizeof *g->inputs);
	if (error != 0)
		return builder_fail(g, error);
	in = &g->inputs[g->ninputs];
	memset(in, 0, sizeof *in);
	in->ndim = ndim;
	memcpy(in->shape, sample_shape, (size_t)ndim * sizeof *sample_shape);
	g->ninputs++;
	return builder_value_add(g, BUILDER_INPUT, g->ninputs - 1);
}

/*
 * Adds a constant of the given shape with uninitialised storage that the
 * builder owns; *data points at it for the caller to fill. Returns its id.
 */
static int
builder_const_new(agxq_graph *g, const int64_t *shape, int ndim, float **data)
{
	struct builder_const *c;
	uint64_t nelem = 1;
	float *buf;
	int error, id;

	if (g->error != 0)
		return g->error;
	if (shape == NULL || ndim < 1 || ndim > AGXQ_MAX_DIMS)
		return builder_fail(g, AGXQ_EINVAL);
	for (int i = 0; i < ndim; i++) {
		if (shape[i] <= 0 || (uint64_t)shape[i] > BUILDER_MAX_ELEMENTS)
			return builder_fail(g, AGXQ_EINVAL);
		nelem *= (uint64_t)shape[i];
		if (nelem > BUILDER_MAX_ELEMENTS)
			return builder_fail(g, AGXQ_EINVAL);
	}
	if (nelem > SIZE_MAX / sizeof(float))
		return builder_fail(g, AGXQ_ENOMEM);
	error = builder_grow((void **)&g->consts, &g->consts_cap,
	    g->nconsts + 1, sizeof *g->consts);
	if (error != 0)
		return builder_fail(g, error);
	if ((buf = malloc((size_t)nelem * sizeof(float))) == NULL)
		return builder_fail(g, AGXQ_ENOMEM);
	c = &g->consts[g->nconsts];
	memset(c, 0, sizeof *c);
	c->ndim = ndim;
	memcpy(c->shape, shape, (size_t)ndim * sizeof *shape);
	c->nelem = (size_t)nelem;
	c->data = buf;
	g->nconsts++;
	if ((id = builder_value_add(g, BUILDER_CONST, g->nconsts - 1)) < 0) {
		/* Keep the constant: agxq_graph_free releases it. */
		return id;
	}
	*data = buf;
	return id;
}

/* Adds a float32 constant, copying data. */
int
agxq_graph_const(agxq_graph *g, const int64_t *shape, int ndim,
    const float *data)
{
	float *buf = NULL;
	int id;

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	if (data == NULL)
		return builder_fail(g, AGXQ_EINVAL);
	if ((id = builder_const_new(g, shape, ndim, &buf)) < 0)
		return id;
	memcpy(buf, data, g->consts[g->nconsts - 1].nelem * sizeof(float));
	return id;
}

/*
 * Adds a node reading in[0..nin) (AGXQ_NONE entries are optional inputs
 * left out) with the attributes in tmpl; returns the id of its output.
 */
static int
builder_node_add(agxq_graph *g, const struct builder_node *tmpl,
    const int *in, int nin)
{
	struct builder_node *n;
	int error;

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	for (int i = 0; i < nin; i++) {
		if (in[i] != AGXQ_NONE && !builder_valid(g, in[i]))
			return builder_fail(g, AGXQ_EINVAL);
	}
	error = builder_grow((void **)&g->nodes, &g->nodes_cap,
	    g->nnodes + 1, sizeof *g->nodes);
	if (error != 0)
		return builder_fail(g, error);
	n = &g->nodes[g->nnodes];
	*n = *tmpl;
	n->nin = 0;
	for (int i = 0; i < nin; i++) {
		if (in[i] != AGXQ_NONE)
			n->in[n->nin++] = in[i];
	}
	n->name[0] = '\0';
	g->nnodes++;
	return builder_value_add(g, BUILDER_NODE, g->nnodes - 1);
}

/* Adds a node of op with required inputs only and no attributes. */
static int
builder_simple(agxq_graph *g, Agxq__Op op, const int *in, int nin)
{
	struct builder_node tmpl;

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	for (int i = 0; i < nin; i++) {
		if (!builder_valid(g, in[i]))
			return builder_fail(g, AGXQ_EINVAL);
	}
	memset(&tmpl, 0, sizeof tmpl);
	tmpl.op = op;
	return builder_node_add(g, &tmpl, in, nin);
}

/* y = x W^T + b; b may be AGXQ_NONE. */
int
agxq_graph_linear(agxq_graph *g, int x, int w, int b)
{
	struct builder_node tmpl;
	int in[3] = { x, w, b };

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	if (!builder_valid(g, x) || !builder_valid(g, w))
		return builder_fail(g, AGXQ_EINVAL);
	memset(&tmpl, 0, sizeof tmpl);
	tmpl.op = AGXQ__OP__OP_LINEAR;
	tmpl.has_bias = b != AGXQ_NONE;
	return builder_node_add(g, &tmpl, in, 3);
}

/* torch.matmul(a, b). */
int
agxq_graph_matmul(agxq_graph *g, int a, int b)
{
	int in[2] = { a, b };

	return builder_simple(g, AGXQ__OP__OP_MATMUL, in, 2);
}

/* Elementwise a + b. */
int
agxq_graph_add(agxq_graph *g, int a, int b)
{
	int in[2] = { a, b };

	return builder_simple(g, AGXQ__OP__OP_ADD, in, 2);
}

/* Elementwise a * b. */
int
agxq_graph_mul(agxq_graph *g, int a, int b)
{
	int in[2] = { a, b };

	return builder_simple(g, AGXQ__OP__OP_MUL, in, 2);
}

/* max(x, 0). */
int
agxq_graph_relu(agxq_graph *g, int x)
{
	return builder_simple(g, AGXQ__OP__OP_RELU, &x, 1);
}

/* GELU, exact or tanh approximation. */
int
agxq_graph_gelu(agxq_graph *g, int x, int tanh_approx)
{
	struct builder_node tmpl;

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	if (!builder_valid(g, x))
		return builder_fail(g, AGXQ_EINVAL);
	memset(&tmpl, 0, sizeof tmpl);
	tmpl.op = AGXQ__OP__OP_GELU;
	tmpl.gelu_tanh = tanh_approx != 0;
	return builder_node_add(g, &tmpl, &x, 1);
}

/* x * sigmoid(x). */
int
agxq_graph_silu(agxq_graph *g, int x)
{
	return builder_simple(g, AGXQ__OP__OP_SILU, &x, 1);
}

/* Softmax along axis. */
int
agxq_graph_softmax(agxq_graph *g, int x, int axis)
{
	struct builder_node tmpl;

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	if (!builder_valid(g, x) || axis < -AGXQ_MAX_DIMS ||
	    axis >= AGXQ_MAX_DIMS)
		return builder_fail(g, AGXQ_EINVAL);
	memset(&tmpl, 0, sizeof tmpl);
	tmpl.op = AGXQ__OP__OP_SOFTMAX;
	tmpl.axis = axis;
	return builder_node_add(g, &tmpl, &x, 1);
}

/* LayerNorm over the last dim; weight and bias may be AGXQ_NONE. */
int
agxq_graph_layer_norm(agxq_graph *g, int x, int weight, int bias, float eps)
{
	struct builder_node tmpl;
	int in[3] = { x, weight, bias };

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	if (!builder_valid(g, x) || !(eps >= 0.0f))
		return builder_fail(g, AGXQ_EINVAL);
	memset(&tmpl, 0, sizeof tmpl);
	tmpl.op = AGXQ__OP__OP_LAYER_NORM;
	tmpl.eps = eps;
	tmpl.has_weight = weight != AGXQ_NONE;
	tmpl.has_bias = bias != AGXQ_NONE;
	return builder_node_add(g, &tmpl, in, 3);
}

/* Self-attention as nn.MultiheadAttention(batch_first=True). */
int
agxq_graph_mha(agxq_graph *g, int x, int in_w, int in_b, int out_w,
    int out_b, int heads, int causal)
{
	struct builder_node tmpl;
	int in[5] = { x, in_w, in_b, out_w, out_b };

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	for (int i = 0; i < 5; i++) {
		if (!builder_valid(g, in[i]))
			return builder_fail(g, AGXQ_EINVAL);
	}
	if (heads <= 0)
		return builder_fail(g, AGXQ_EINVAL);
	memset(&tmpl, 0, sizeof tmpl);
	tmpl.op = AGXQ__OP__OP_MHA;
	tmpl.heads = heads;
	tmpl.causal = causal != 0;
	return builder_node_add(g, &tmpl, in, 5);
}

/* Marks v as a graph output; returns its output index. */
int
agxq_graph_output(agxq_graph *g, int v)
{
	int error;

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	if (!builder_valid(g, v))
		return builder_fail(g, AGXQ_EINVAL);
	error = builder_grow((void **)&g->outputs, &g->outputs_cap,
	    g->noutputs + 1, sizeof *g->outputs);
	if (error != 0)
		return builder_fail(g, error);
	g->outputs[g->noutputs] = v;
	return (int)g->noutputs++;
}

/* Names the last node added; the name is truncated to 47 bytes. */
int
agxq_graph_name(agxq_graph *g, const char *name)
{
	struct builder_node *n;
	size_t len;

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	if (name == NULL || g->nnodes == 0)
		return builder_fail(g, AGXQ_EINVAL);
	n = &g->nodes[g->nnodes - 1];
	len = strnlen(name, BUILDER_NAME_MAX - 1);
	memcpy(n->name, name, len);
	n->name[len] = '\0';
	return 0;
}

/* Wire number of builder value v. */
static uint32_t
builder_wire_id(const agxq_graph *g, int v)
{
	const struct builder_value *bv = &g->values[v];

	switch (bv->kind) {
	case BUILDER_INPUT:
		return bv->index;
	case BUILDER_CONST:
		return g->ninputs + bv->index;
	case BUILDER_NODE:
		break;
	}
	return g->ninputs + g->nconsts + bv->index;
}

/* Converts g into its wire form; constant data points into g. */
int
builder_to_proto(const agxq_graph *g, Agxq__Graph **out)
{
	struct builder_pb *bp;
	size_t total_in = 0, k = 0;

	if (g == NULL || out == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	for (uint32_t i = 0; i < g->nnodes; i++)
		total_in += (size_t)g->nodes[i].nin;

	if ((bp = calloc(1, sizeof *bp)) == NULL)
		return AGXQ_ENOMEM;
	agxq__graph__init(&bp->pb);
	/* calloc(0) may return NULL: ask for at least one element. */
	bp->vi = calloc(g->ninputs + 1, sizeof *bp->vi);
	bp->vip = calloc(g->ninputs + 1, sizeof *bp->vip);
	bp->t = calloc(g->nconsts + 1, sizeof *bp->t);
	bp->tp = calloc(g->nconsts + 1, sizeof *bp->tp);
	bp->n = calloc(g->nnodes + 1, sizeof *bp->n);
	bp->np = calloc(g->nnodes + 1, sizeof *bp->np);
	bp->node_inputs = calloc(total_in + 1, sizeof *bp->node_inputs);
	bp->outputs = calloc(g->noutputs + 1, sizeof *bp->outputs);
	if (bp->vi == NULL || bp->vip == NULL || bp->t == NULL ||
	    bp->tp == NULL || bp->n == NULL || bp->np == NULL ||
	    bp->node_inputs == NULL || bp->outputs == NULL) {
		builder_proto_free(&bp->pb);
		return AGXQ_ENOMEM;
	}

	for (uint32_t i = 0; i < g->ninputs; i++) {
		Agxq__ValueInfo *vi = &bp->vi[i];

		agxq__value_info__init(vi);
		vi->n_sample_shape = (size_t)g->inputs[i].ndim;
		vi->sample_shape = (int64_t *)g->inputs[i].shape;
		vi->dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
		bp->vip[i] = vi;
	}
	for (uint32_t i = 0; i < g->nconsts; i++) {
		Agxq__Tensor *t = &bp->t[i];

		agxq__tensor__init(t);
		t->dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
		t->n_shape = (size_t)g->consts[i].ndim;
		t->shape = (int64_t *)g->consts[i].shape;
		t->data.len = g->consts[i].nelem * sizeof(float);
		t->data.data = (uint8_t *)g->consts[i].data;
		bp->tp[i] = t;
	}
	for (uint32_t i = 0; i < g->nnodes; i++) {
		const struct builder_node *bn = &g->nodes[i];
		Agxq__Node *n = &bp->n[i];

		agxq__node__init(n);
		n->op = bn->op;
		n->n_inputs = (size_t)bn->nin;
		n->inputs = bp->node_inputs + k;
		for (int j = 0; j < bn->nin; j++)
			bp->node_inputs[k++] = builder_wire_id(g, bn->in[j]);
		n->eps = bn->eps;
		n->axis = bn->axis;
		n->heads = (uint32_t)bn->heads;
		n->causal = bn->causal;
		n->gelu_tanh = bn->gelu_tanh;
		n->name = (char *)bn->name;
		n->has_bias = bn->has_bias;
		n->has_weight = bn->has_weight;
		bp->np[i] = n;
	}
	for (uint32_t i = 0; i < g->noutputs; i++)
		bp->outputs[i] = builder_wire_id(g, g->outputs[i]);

	bp->pb.n_inputs = g->ninputs;
	bp->pb.inputs = bp->vip;
	bp->pb.n_constants = g->nconsts;
	bp->pb.constants = bp->tp;
	bp->pb.n_nodes = g->nnodes;
	bp->pb.nodes = bp->np;
	bp->pb.n_outputs = g->noutputs;
	bp->pb.outputs = bp->outputs;
	bp->pb.precision = (Agxq__Precision)g->precision;
	*out = &bp->pb;
	return 0;
}

/* Frees what builder_to_proto made; accepts NULL. */
void
builder_proto_free(Agxq__Graph *pb)
{
	struct builder_pb *bp = (struct builder_pb *)pb;

	if (bp == NULL)
		return;
	free(bp->vi);
	free(bp->vip);
	free(bp->t);
	free(bp->tp);
	free(bp->n);
	free(bp->np);
	free(bp->node_inputs);
	free(bp->outputs);
	free(bp);
}

/*
 * The weight stream: splitmix64, 24 bits per value.
 *
 *	state = seed
 *	for each i:
 *		state += 0x9E3779B97F4A7C15             (mod 2^64)
 *		z = state
 *		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9  (mod 2^64)
 *		z = (z ^ (z >> 27)) * 0x94D049BB133111EB  (mod 2^64)
 *		z ^= z >> 31
 *		k = z >> 40                             (0 <= k < 2^24)
 *		dst[i] = ((2k - 2^24) / 2^24) * scale    (float32)
 *
 * (2k - 2^24) / 2^24 lies in [-1, 1) and is exact in float32; the only
 * rounding is the one float32 multiply by scale. make_golden.py does the
 * same with numpy uint64 (wrapping) and float32, so the two agree bit for
 * bit.
 */
void
agxq_reference_weights(uint64_t seed, float scale, float *dst, size_t n)
{
	uint64_t state = seed, z;
	float u;

	for (size_t i = 0; i < n; i++) {
		state += UINT64_C(0x9E3779B97F4A7C15);
		z = state;
		z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
		z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
		z ^= z >> 31;
		u = (2.0f * (float)(z >> 40) - 16777216.0f) / 16777216.0f;
		dst[i] = u * scale;
	}
}

/* The float32 scale 1/sqrt(n), rounded from double as make_golden.py does. */
static float
builder_inv_sqrt(int n)
{
	return (float)(1.0 / sqrt((double)n)); /* IEEE sqrt is correctly rounded */
}

/* Adds a constant of shape filled from stream seed at scale, plus `add`. */
static int
builder_seeded(agxq_graph *g, const int64_t *shape, int ndim, uint64_t seed,
    float scale, float add)
{
	float *data = NULL;
	size_t nelem;
	int id;

	if ((id = builder_const_new(g, shape, ndim, &data)) < 0)
		return id;
	nelem = g->consts[g->nconsts - 1].nelem;
	agxq_reference_weights(seed, scale, data, nelem);
	if (add != 0.0f) {
		for (size_t i = 0; i < nelem; i++)
			data[i] = add + data[i];
	}
	return id;
}

/* nn.Linear(in, out) with seeded weights applied to x. */
int
agxq_build_linear(agxq_graph *g, int x, int in, int out, uint64_t seed)
{
	int64_t wshape[2], bshape[1];
	float scale;
	int w, b;

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	if (in <= 0 || out <= 0 || !builder_valid(g, x))
		return builder_fail(g, AGXQ_EINVAL);
	scale = builder_inv_sqrt(in);
	wshape[0] = out;
	wshape[1] = in;
	bshape[0] = out;
	if ((w = builder_seeded(g, wshape, 2, seed, scale, 0.0f)) < 0)
		return w;
	if ((b = builder_seeded(g, bshape, 1, seed + 1, scale, 0.0f)) < 0)
		return b;
	return agxq_graph_linear(g, x, w, b);
}

/* nn.TransformerEncoderLayer (batch_first, relu, no dropout) applied to x. */
int
agxq_build_transformer(agxq_graph *g, int x, int d_model, int nhead,
    int dim_ff, float eps, int norm_first, uint64_t seed)
{
	int64_t d = d_model, ff = dim_ff;
	int64_t s_inw[2] = { 3 * d, d }, s_inb[1] = { 3 * d };
	int64_t s_dd[2] = { d, d }, s_d[1] = { d };
	int64_t s_w1[2] = { ff, d }, s_b1[1] = { ff }, s_w2[2] = { d, ff };
	float sd, sff;
	int inw, inb, outw, outb, w1, b1, w2, b2, n1w, n1b, n2w, n2b;
	int h, v;

	if (g == NULL)
		return AGXQ_EINVAL;
	if (g->error != 0)
		return g->error;
	if (d_model <= 0 || nhead <= 0 || dim_ff <= 0 ||
	    d_model % nhead != 0 || !builder_valid(g, x))
		return builder_fail(g, AGXQ_EINVAL);
	sd = builder_inv_sqrt(d_model);
	sff = builder_inv_sqrt(dim_ff);

	/* Parameters in a fixed order, from streams seed, seed+1, ... */
	inw = builder_seeded(g, s_inw, 2, seed + 0, sd, 0.0f);
	inb = builder_seeded(g, s_inb, 1, seed + 1, 0.1f, 0.0f);
	outw = builder_seeded(g, s_dd, 2, seed + 2, sd, 0.0f);
	outb = builder_seeded(g, s_d, 1, seed + 3, 0.1f, 0.0f);
	w1 = builder_seeded(g, s_w1, 2, seed + 4, sd, 0.0f);
	b1 = builder_seeded(g, s_b1, 1, seed + 5, sd, 0.0f);
	w2 = builder_seeded(g, s_w2, 2, seed + 6, sff, 0.0f);
	b2 = builder_seeded(g, s_d, 1, seed + 7, sff, 0.0f);
	n1w = builder_seeded(g, s_d, 1, seed + 8, 0.1f, 1.0f);
	n1b = builder_seeded(g, s_d, 1, seed + 9, 0.1f, 0.0f);
	n2w = builder_seeded(g, s_d, 1, seed + 10, 0.1f, 1.0f);
	n2b = builder_seeded(g, s_d, 1, seed + 11, 0.1f, 0.0f);
	if (g->error != 0)
		return g->error;

	if (norm_first) {
		/* h = x + mha(norm1(x)); y = h + ff(norm2(h)) */
		v = agxq_graph_layer_norm(g, x, n1w, n1b, eps);
		v = agxq_graph_mha(g, v, inw, inb, outw, outb, nhead, 0);
		h = agxq_graph_add(g, x, v);
		v = agxq_graph_layer_norm(g, h, n2w, n2b, eps);
		v = agxq_graph_linear(g, v, w1, b1);
		v = agxq_graph_relu(g, v);
		v = agxq_graph_linear(g, v, w2, b2);
		return agxq_graph_add(g, h, v);
	}
	/* h = norm1(x + mha(x)); y = norm2(h + ff(h)) */
	v = agxq_graph_mha(g, x, inw, inb, outw, outb, nhead, 0);
	v = agxq_graph_add(g, x, v);
	h = agxq_graph_layer_norm(g, v, n1w, n1b, eps);
	v = agxq_graph_linear(g, h, w1, b1);
	v = agxq_graph_relu(g, v);
	v = agxq_graph_linear(g, v, w2, b2);
	v = agxq_graph_add(g, h, v);
	return agxq_graph_layer_norm(g, v, n2w, n2b, eps);
}

/* Builds reference model `which` into a new graph. */
int
agxq_reference_build(agxq_reference which, uint64_t seed, agxq_graph **out)
{
	int64_t flat[1] = { 256 }, seq[2] = { -1, 256 };
	agxq_graph *g;
	int v;

	if (out == NULL || agxq_reference_name(which) == NULL)
		return AGXQ_EINVAL;
	if ((g = agxq_graph_new()) == NULL)
		return AGXQ_ENOMEM;
	switch (which) {
	case AGXQ_REF_LINEAR:
		v = agxq_graph_input(g, flat, 1);
		v = agxq_build_linear(g, v, 256, 128, seed);
		break;
	case AGXQ_REF_MLP:
		v = agxq_graph_input(g, flat, 1);
		v = agxq_build_linear(g, v, 256, 512, seed);
		v = agxq_graph_relu(g, v);
		v = agxq_build_linear(g, v, 512, 256, seed + 2);
		v = agxq_graph_relu(g, v);
		v = agxq_build_linear(g, v, 256, 128, seed + 4);
		break;
	case AGXQ_REF_TRANSFORMER:
	default:
		v = agxq_graph_input(g, seq, 2);
		v = agxq_build_transformer(g, v, 256, 4, 2048, 1e-5f, 0, seed);
		break;
	}
	if ((v = agxq_graph_output(g, v)) < 0) {
		agxq_graph_free(g);
		return v;
	}
	*out = g;
	return 0;
}

/* Fills in the request input shape (dtype, ndim, shape; not data). */
int
agxq_reference_input_shape(agxq_reference which, int64_t batch,
    agxq_tensor *t)
{
	if (t == NULL || batch <= 0)
		return AGXQ_EINVAL;
	switch (which) {
	case AGXQ_REF_LINEAR:
	case AGXQ_REF_MLP:
		t->ndim = 2;
		t->shape[0] = batch;
		t->shape[1] = 256;
		break;
	case AGXQ_REF_TRANSFORMER:
		t->ndim = 3;
		t->shape[0] = batch;
		t->shape[1] = 32;
		t->shape[2] = 256;
		break;
	default:
		return AGXQ_EINVAL;
	}
	t->dtype = AGXQ_FLOAT32;
	return 0;
}

/* Returns the reference model's name, or NULL. */
const char *
agxq_reference_name(agxq_reference which)
{
	switch (which) {
	case AGXQ_REF_LINEAR:
		return "linear";
	case AGXQ_REF_MLP:
		return "mlp";
	case AGXQ_REF_TRANSFORMER:
		return "transformer";
	}
	return NULL;
}

/* Parses a reference model name. */
int
agxq_reference_parse(const char *name)
{
	if (name == NULL)
		return AGXQ_EINVAL;
	if (strcmp(name, "linear") == 0)
		return AGXQ_REF_LINEAR;
	if (strcmp(name, "mlp") == 0)
		return AGXQ_REF_MLP;
	if (strcmp(name, "transformer") == 0)
		return AGXQ_REF_TRANSFORMER;
	return AGXQ_EINVAL;
}
