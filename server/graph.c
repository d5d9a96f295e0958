/*
 * graph: builds a validated struct graph from the wire form, infers shapes
 * (statically at load with -1 for unknown dims, concretely per run), checks
 * that every op keeps the rows of a batch independent, and hashes and
 * compares graphs so identical models can be shared.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"

#define GRAPH_FLOAT_BYTES 4

/* Fills lim with the default limits. */
void
graph_limits_default(struct graph_limits *lim)
{
	lim->max_nodes = 4096;
	lim->max_values = 16384;
	lim->max_weight_bytes = (uint64_t)1 << 30;
	lim->max_dim = (int64_t)1 << 24;
	lim->max_elements = (uint64_t)1 << 31;
}

/* Returns the op's name ("linear"), or "unknown". */
const char *
graph_op_name(enum graph_op op)
{
	switch (op) {
	case GRAPH_OP_LINEAR:
		return "linear";
	case GRAPH_OP_MATMUL:
		return "matmul";
	case GRAPH_OP_ADD:
		return "add";
	case GRAPH_OP_MUL:
		return "mul";
	case GRAPH_OP_RELU:
		return "relu";
	case GRAPH_OP_GELU:
		return "gelu";
	case GRAPH_OP_SILU:
		return "silu";
	case GRAPH_OP_SOFTMAX:
		return "softmax";
	case GRAPH_OP_LAYER_NORM:
		return "layer_norm";
	case GRAPH_OP_MHA:
		return "mha";
	}
	return "unknown";
}

/* Number of elements in a concrete shape. */
size_t
graph_shape_nelem(const struct graph_shape *s)
{
	size_t n = 1;

	for (int i = 0; i < s->ndim; i++)
		n *= (size_t)s->dim[i];
	return n;
}

/* Sets *cause (when wanted) to a formatted message; returns -1. */
static int __attribute__((format(printf, 2, 3)))
graph_fail(char **cause, const char *fmt, ...)
{
	va_list ap;

	if (cause == NULL)
		return -1;
	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) == -1)
		*cause = NULL;
	va_end(ap);
	return -1;
}

/* Writes a shape as "[4, ?, 256]" (? for an unknown dim) into buf. */
static const char *
graph_shape_str(const struct graph_shape *s, char *buf, size_t len)
{
	size_t off = 0;
	int n;

	buf[0] = '\0';
	n = snprintf(buf, len, "[");
	for (int i = 0; i < s->ndim && n >= 0 && (size_t)n < len - off; i++) {
		off += (size_t)n;
		if (s->dim[i] < 0)
			n = snprintf(buf + off, len - off, "%s?", i ? ", " : "");
		else
			n = snprintf(buf + off, len - off, "%s%lld", i ? ", " : "",
			    (long long)s->dim[i]);
	}
	if (n >= 0 && (size_t)n < len - off) {
		off += (size_t)n;
		snprintf(buf + off, len - off, "]");
	}
	return buf;
}

/* Writes a node's label, `node 3 (linear "fc1")`, into buf. */
static const char *
graph_node_label(const struct graph *g, uint32_t i, char *buf, size_t len)
{
	const struct graph_node *n = &g->nodes[i];
	const char *op = graph_op_name(n->op);
	char dflt[sizeof n->name];

	snprintf(dflt, sizeof dflt, "node %u (%s)", i, op);
	if (n->name[0] == '\0' || strcmp(n->name, dflt) == 0)
		snprintf(buf, len, "%s", dflt);
	else
		snprintf(buf, len, "node %u (%s \"%s\")", i, op, n->name);
	return buf;
}

/* Fails with a message prefixed by node i's label; returns -1. */
static int __attribute__((format(printf, 4, 5)))
graph_node_fail(const struct graph *g, uint32_t i, char **cause,
    const char *fmt, ...)
{
	char label[128], *msg;
	va_list ap;
	int rc;

	if (cause == NULL)
		return -1;
	va_start(ap, fmt);
	rc = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (rc == -1) {
		*cause = NULL;
		return -1;
	}
	graph_node_label(g, i, label, sizeof label);
	graph_fail(cause, "%s: %s", label, msg);
	free(msg);
	return -1;
}

/* Whether two dims can be equal (an unknown dim fits anything). */
static int
graph_dim_fits(int64_t a, int64_t b)
{
	return a < 0 || b < 0 || a == b;
}

/* The known one of two dims that must be equal. */
static int64_t
graph_dim_pick(int64_t a, int64_t b)
{
	return a >= 0 ? a : b;
}

/*
 * Computes node i's output shape o from the shapes of its inputs vs[0..nin)
 * (static shapes with -1 for unknown dims, or concrete ones). Shared by the
 * load-time and the per-run inference so both check the same rules.
 */
static int
graph_node_shape(const struct graph *g, uint32_t i,
    const struct graph_shape *const *vs, struct graph_shape *o, char **cause)
{
	const struct graph_node *n = &g->nodes[i];
	const struct graph_shape *x = vs[0], *w, *b;
	char s1[96], s2[96];
	int64_t d;
	int r, k;

	switch (n->op) {
	case GRAPH_OP_LINEAR:
		w = vs[1];
		if (x->ndim < 1)
			return graph_node_fail(g, i, cause,
			    "input must have at least 1 dim");
		if (w->ndim != 2)
			return graph_node_fail(g, i, cause,
			    "weight must be 2-D, got %s",
			    graph_shape_str(w, s1, sizeof s1));
		if (!graph_dim_fits(x->dim[x->ndim - 1], w->dim[1]))
			return graph_node_fail(g, i, cause,
			    "weight %s does not match input features %lld",
			    graph_shape_str(w, s1, sizeof s1),
			    (long long)x->dim[x->ndim - 1]);
		if (n->has_bias) {
			b = vs[2];
			if (b->ndim != 1 || !graph_dim_fits(b->dim[0], w->dim[0]))
				return graph_node_fail(g, i, cause,
				    "bias %s does not match weight %s",
				    graph_shape_str(b, s1, sizeof s1),
				    graph_shape_str(w, s2, sizeof s2));
		}
		*o = *x;
		o->dim[o->ndim - 1] = w->dim[0];
		return 0;
	case GRAPH_OP_MATMUL:
		w = vs[1];
		if (x->ndim < 2 || w->ndim < 2)
			return graph_node_fail(g, i, cause,
			    "operands must be at least 2-D, got %s and %s",
			    graph_shape_str(x, s1, sizeof s1),
			    graph_shape_str(w, s2, sizeof s2));
		if (w->ndim > 2 && w->ndim != x->ndim)
			return graph_node_fail(g, i, cause,
			    "b %s must be 2-D or have the rank of a %s",
			    graph_shape_str(w, s1, sizeof s1),
			    graph_shape_str(x, s2, sizeof s2));
		*o = *x;
		if (w->ndim > 2) {
			for (k = 0; k < x->ndim - 2; k++) {
				if (!graph_dim_fits(x->dim[k], w->dim[k]))
					return graph_node_fail(g, i, cause,
					    "leading dims of a %s and b %s differ",
					    graph_shape_str(x, s1, sizeof s1),
					    graph_shape_str(w, s2, sizeof s2));
				o->dim[k] = graph_dim_pick(x->dim[k], w->dim[k]);
			}
		}
		if (!graph_dim_fits(x->dim[x->ndim - 1], w->dim[w->ndim - 2]))
			return graph_node_fail(g, i, cause,
			    "inner dims of a %s and b %s differ",
			    graph_shape_str(x, s1, sizeof s1),
			    graph_shape_str(w, s2, sizeof s2));
		o->dim[o->ndim - 1] = w->dim[w->ndim - 1];
		return 0;
	case GRAPH_OP_ADD:
	case GRAPH_OP_MUL:
		w = vs[1];
		r = x->ndim > w->ndim ? x->ndim : w->ndim;
		o->ndim = r;
		for (k = 0; k < r; k++) {
			int ka = k - (r - x->ndim), kb = k - (r - w->ndim);
			int64_t da = ka >= 0 ? x->dim[ka] : 1;
			int64_t db = kb >= 0 ? w->dim[kb] : 1;

			if (da == db)
				d = da;
			else if (da == 1)
				d = db;
			else if (db == 1)
				d = da;
			else if (da < 0)
				d = db;
			else if (db < 0)
				d = da;
			else
				return graph_node_fail(g, i, cause,
				    "cannot broadcast %s with %s",
				    graph_shape_str(x, s1, sizeof s1),
				    graph_shape_str(w, s2, sizeof s2));
			o->dim[k] = d;
		}
		return 0;
	case GRAPH_OP_RELU:
	case GRAPH_OP_GELU:
	case GRAPH_OP_SILU:
		*o = *x;
		return 0;
	case GRAPH_OP_SOFTMAX:
		if (n->axis >= x->ndim)
			return graph_node_fail(g, i, cause,
			    "axis %d out of range for %s", n->axis,
			    graph_shape_str(x, s1, sizeof s1));
		*o = *x;
		return 0;
	case GRAPH_OP_LAYER_NORM:
		if (x->ndim < 1)
			return graph_node_fail(g, i, cause,
			    "input must have at least 1 dim");
		*o = *x;
		d = x->dim[x->ndim - 1];
		for (k = 1; k < n->nin; k++) {
			w = vs[k];
			if (w->ndim != 1 || !graph_dim_fits(w->dim[0], d))
				return graph_node_fail(g, i, cause,
				    "%s %s does not match normalised dim %lld",
				    (k == 1 && n->has_weight) ? "weight" : "bias",
				    graph_shape_str(w, s1, sizeof s1),
				    (long long)d);
			d = graph_dim_pick(d, w->dim[0]);
		}
		o->dim[o->ndim - 1] = d;
		return 0;
	case GRAPH_OP_MHA: {
		const struct graph_shape *inw = vs[1],
		    *inb = vs[2], *ow = vs[3],
		    *ob = vs[4];

		if (x->ndim != 3)
			return graph_node_fail(g, i, cause,
			    "input must be [batch, seq, embed], got %s",
			    graph_shape_str(x, s1, sizeof s1));
		if (inw->ndim != 2 || inw->dim[1] < 0 ||
		    inw->dim[0] != 3 * inw->dim[1])
			return graph_node_fail(g, i, cause,
			    "in_proj weight %s is not [3d, d]",
			    graph_shape_str(inw, s1, sizeof s1));
		d = inw->dim[1];
		if (!graph_dim_fits(x->dim[2], d))
			return graph_node_fail(g, i, cause,
			    "in_proj weight %s does not match embed dim %lld",
			    graph_shape_str(inw, s1, sizeof s1),
			    (long long)x->dim[2]);
		if (inb->ndim != 1 || inb->dim[0] != 3 * d)
			return graph_node_fail(g, i, cause,
			    "in_proj bias %s is not [%lld]",
			    graph_shape_str(inb, s1, sizeof s1),
			    (long long)(3 * d));
		if (ow->ndim != 2 || ow->dim[0] != d || ow->dim[1] != d)
			return graph_node_fail(g, i, cause,
			    "out_proj weight %s is not [%lld, %lld]",
			    graph_shape_str(ow, s1, sizeof s1), (long long)d,
			    (long long)d);
		if (ob->ndim != 1 || ob->dim[0] != d)
			return graph_node_fail(g, i, cause,
			    "out_proj bias %s is not [%lld]",
			    graph_shape_str(ob, s1, sizeof s1), (long long)d);
		if (n->heads < 1 || d % n->heads != 0)
			return graph_node_fail(g, i, cause,
			    "embed dim %lld is not divisible by %d heads",
			    (long long)d, n->heads);
		*o = *x;
		o->dim[2] = d;
		return 0;
	}
	}
	return graph_node_fail(g, i, cause, "unknown op %d", (int)n->op);
}

/*
 * Checks that node i treats dim 0 of batch-carrying values as independent
 * rows: the batcher concatenates requests along dim 0 and splits the result
 * back, so no op may mix rows or pair the batch with a fixed dim.
 */
static int
graph_node_batch(const struct graph *g, uint32_t i, char **cause)
{
	const struct graph_node *n = &g->nodes[i];
	const struct graph_value *v = g->values;
	const struct graph_value *x = &v[n->in[0]], *y;
	int k;

	switch (n->op) {
	case GRAPH_OP_LINEAR:
	case GRAPH_OP_MHA:
	case GRAPH_OP_LAYER_NORM:
		for (k = 1; k < n->nin; k++) {
			if (v[n->in[k]].batched)
				return graph_node_fail(g, i, cause,
				    "parameter input %u depends on a graph input "
				    "(it would change with the batch)", n->in[k]);
		}
		if (n->op == GRAPH_OP_LAYER_NORM && x->batched &&
		    x->shape.ndim < 2)
			return graph_node_fail(g, i, cause,
			    "layer_norm over a batched 1-D value would "
			    "normalise across the batch");
		return 0;
	case GRAPH_OP_MATMUL:
		y = &v[n->in[1]];
		if (y->batched && !x->batched)
			return graph_node_fail(g, i, cause,
			    "b carries the batch but a does not");
		if (x->batched && y->batched &&
		    (x->shape.ndim != y->shape.ndim || x->shape.ndim < 3))
			return graph_node_fail(g, i, cause,
			    "a and b both carry the batch: they must have equal "
			    "rank >= 3 (batched matmul)");
		if (x->batched && !y->batched && y->shape.ndim > 2)
			return graph_node_fail(g, i, cause,
			    "b of rank %d would pair its dim 0 with the batch",
			    y->shape.ndim);
		return 0;
	case GRAPH_OP_ADD:
	case GRAPH_OP_MUL:
		y = &v[n->in[1]];
		if (x->batched && y->batched) {
			if (x->shape.ndim != y->shape.ndim)
				return graph_node_fail(g, i, cause,
				    "both operands carry the batch but their "
				    "ranks differ (%d and %d)", x->shape.ndim,
				    y->shape.ndim);
			return 0;
		}
		if (y->batched) {
			const struct graph_value *t = x;

			x = y;
			y = t;
		}
		if (!x->batched)
			return 0;
		if (x->shape.ndim < y->shape.ndim)
			return graph_node_fail(g, i, cause,
			    "the batched operand has rank %d, below the other's "
			    "%d: the batch would not stay at dim 0",
			    x->shape.ndim, y->shape.ndim);
		if (x->shape.ndim == y->shape.ndim && y->shape.dim[0] != 1)
			return graph_node_fail(g, i, cause,
			    "the unbatched operand's dim 0 (%lld) would pair "
			    "with the batch", (long long)y->shape.dim[0]);
		return 0;
	case GRAPH_OP_SOFTMAX:
		if (x->batched && n->axis == 0)
			return graph_node_fail(g, i, cause,
			    "softmax over axis 0 would mix the rows of a batch");
		return 0;
	case GRAPH_OP_RELU:
	case GRAPH_OP_GELU:
	case GRAPH_OP_SILU:
		return 0;
	}
	return 0;
}

/* Number of inputs node op takes given its flags, or -1 for an unknown op. */
static int
graph_op_arity(const Agxq__Node *pn)
{
	switch (pn->op) {
	case AGXQ__OP__OP_LINEAR:
		return 2 + (pn->has_bias ? 1 : 0);
	case AGXQ__OP__OP_MATMUL:
	case AGXQ__OP__OP_ADD:
	case AGXQ__OP__OP_MUL:
		return 2;
	case AGXQ__OP__OP_RELU:
	case AGXQ__OP__OP_GELU:
	case AGXQ__OP__OP_SILU:
	case AGXQ__OP__OP_SOFTMAX:
		return 1;
	case AGXQ__OP__OP_LAYER_NORM:
		return 1 + (pn->has_weight ? 1 : 0) + (pn->has_bias ? 1 : 0);
	case AGXQ__OP__OP_MHA:
		return 5;
	default:
		return -1;
	}
}

/*
 * Checks a wire shape (dims > 0, or -1 where allow_free) against the limits
 * and copies it into s after `skip` leading dims. *nelem gets the element
 * count (known dims only). what names the value for messages.
 */
static int
graph_wire_shape(const int64_t *dims, size_t ndims, int skip, int allow_free,
    const struct graph_limits *lim, struct graph_shape *s, uint64_t *nelem,
    const char *what, char **cause)
{
	uint64_t n = 1;

	if (ndims > (size_t)(GRAPH_MAX_DIMS - skip))
		return graph_fail(cause, "%s: %zu dims, at most %d allowed",
		    what, ndims, GRAPH_MAX_DIMS - skip);
	s->ndim = (int)ndims + skip;
	for (int k = 0; k < skip; k++)
		s->dim[k] = -1;
	for (size_t k = 0; k < ndims; k++) {
		int64_t d = dims[k];

		if (d == -1 && allow_free) {
			s->dim[skip + k] = -1;
			continue;
		}
		if (d <= 0 || d > lim->max_dim)
			return graph_fail(cause,
			    "%s: dim %zu is %lld, must be 1..%lld%s", what, k,
			    (long long)d, (long long)lim->max_dim,
			    allow_free ? " or -1" : "");
		if (n > lim->max_elements / (uint64_t)d)
			return graph_fail(cause,
			    "%s: more than %llu elements", what,
			    (unsigned long long)lim->max_elements);
		n *= (uint64_t)d;
		s->dim[skip + k] = d;
	}
	*nelem = n;
	return 0;
}

/* Checks the known part of a node output's static shape against the limits. */
static int
graph_check_static(const struct graph *g, uint32_t i,
    const struct graph_shape *s, const struct graph_limits *lim, char **cause)
{
	uint64_t n = 1;

	for (int k = 0; k < s->ndim; k++) {
		if (s->dim[k] < 0)
			continue;
		if (s->dim[k] > lim->max_dim ||
		    n > lim->max_elements / (uint64_t)s->dim[k])
			return graph_node_fail(g, i, cause,
			    "output is over the size limits");
		n *= (uint64_t)s->dim[k];
	}
	return 0;
}

/* FNV-1a step over one 64-bit word. */
static uint64_t
graph_hash_word(uint64_t h, uint64_t w)
{
	h ^= w;
	return h * 0x100000001b3ULL;
}

/* Hashes structure, attributes, shapes and constant bytes of g. */
static uint64_t
graph_hash(const struct graph *g)
{
	uint64_t h = 0xcbf29ce484222325ULL, w;
	uint32_t i, bits;
	size_t k;

	h = graph_hash_word(h, g->ninputs);
	h = graph_hash_word(h, ((uint64_t)g->nconsts << 32) | g->nnodes);
	h = graph_hash_word(h, ((uint64_t)g->noutputs << 32) | g->precision);
	for (i = 0; i < g->nvalues; i++) {
		const struct graph_value *v = &g->values[i];

		if (v->kind == GRAPH_VALUE_NODE)
			continue;
		h = graph_hash_word(h, (uint64_t)v->shape.ndim);
		for (int d = 0; d < v->shape.ndim; d++)
			h = graph_hash_word(h, (uint64_t)v->shape.dim[d]);
		if (v->kind != GRAPH_VALUE_CONST)
			continue;
		for (k = 0; k + 2 <= v->nelem; k += 2) {
			memcpy(&w, v->data + k, sizeof w);
			h = graph_hash_word(h, w);
		}
		if (k < v->nelem) {
			memcpy(&bits, v->data + k, sizeof bits);
			h = graph_hash_word(h, bits);
		}
	}
	for (i = 0; i < g->nnodes; i++) {
		const struct graph_node *n = &g->nodes[i];

		memcpy(&bits, &n->eps, sizeof bits);
		h = graph_hash_word(h, ((uint64_t)n->op << 32) | (uint32_t)n->nin);
		for (int j = 0; j < n->nin; j++)
			h = graph_hash_word(h, n->in[j]);
		h = graph_hash_word(h, ((uint64_t)bits << 32) |
		    (uint32_t)n->axis);
		h = graph_hash_word(h, ((uint64_t)(uint32_t)n->heads << 32) |
		    (uint64_t)(n->has_weight | n->has_bias << 1 |
		    n->causal << 2 | n->gelu_tanh << 3));
	}
	for (i = 0; i < g->noutputs; i++)
		h = graph_hash_word(h, g->outputs[i]);
	/* Final avalanche (the murmur3 fmix64 constants). */
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* Frees a graph; accepts NULL. */
void
graph_free(struct graph *g)
{
	if (g == NULL)
		return;
	free(g->const_storage);
	free(g->outputs);
	free(g->nodes);
	free(g->values);
	free(g);
}

/* Checks counts, inputs and constants of pb; sums the constant bytes. */
static int
graph_check_wire(const Agxq__Graph *pb, const struct graph_limits *lim,
    uint64_t *weight_bytes, char **cause)
{
	struct graph_shape s;
	uint64_t total = 0, nelem;
	char what[64];
	size_t i;

	if (pb->n_inputs == 0)
		return graph_fail(cause, "graph has no inputs");
	if (pb->n_outputs == 0)
		return graph_fail(cause, "graph has no outputs");
	if (pb->n_nodes > lim->max_nodes)
		return graph_fail(cause, "graph has %zu nodes, limit is %u",
		    pb->n_nodes, lim->max_nodes);
	if (pb->n_inputs > lim->max_values || pb->n_constants > lim->max_values ||
	    pb->n_outputs > lim->max_values ||
	    pb->n_inputs + pb->n_constants + pb->n_nodes > lim->max_values)
		return graph_fail(cause,
		    "graph has too many values (%zu inputs, %zu constants, "
		    "%zu nodes, %zu outputs; limit %u values)", pb->n_inputs,
		    pb->n_constants, pb->n_nodes, pb->n_outputs,
		    lim->max_values);
	if (pb->precision < AGXQ__PRECISION__PRECISION_FP32 ||
	    pb->precision > AGXQ__PRECISION__PRECISION_BF16)
		return graph_fail(cause, "unknown precision %d",
		    (int)pb->precision);
	for (i = 0; i < pb->n_inputs; i++) {
		const Agxq__ValueInfo *vi = pb->inputs[i];

		snprintf(what, sizeof what, "input %zu", i);
		if (vi->dtype != AGXQ__DTYPE__DTYPE_FLOAT32)
			return graph_fail(cause,
			    "%s: dtype %d is not supported (only float32)", what,
			    (int)vi->dtype);
		if (graph_wire_shape(vi->sample_shape, vi->n_sample_shape, 1, 1,
		    lim, &s, &nelem, what, cause) != 0)
			return -1;
	}
	for (i = 0; i < pb->n_constants; i++) {
		const Agxq__Tensor *t = pb->constants[i];

		snprintf(what, sizeof what, "constant %zu", i);
		if (t->dtype != AGXQ__DTYPE__DTYPE_FLOAT32)
			return graph_fail(cause,
			    "%s: dtype %d is not supported (only float32)", what,
			    (int)t->dtype);
		if (graph_wire_shape(t->shape, t->n_shape, 0, 0, lim, &s,
		    &nelem, what, cause) != 0)
			return -1;
		if (t->data.len / GRAPH_FLOAT_BYTES != nelem ||
		    t->data.len % GRAPH_FLOAT_BYTES != 0) {
			char sb[96];

			return graph_fail(cause,
			    "%s: data is %zu bytes, shape %s needs %llu", what,
			    t->data.len, graph_shape_str(&s, sb, sizeof sb),
			    (unsigned long long)(nelem * GRAPH_FLOAT_BYTES));
		}
		if (nelem * GRAPH_FLOAT_BYTES > lim->max_weight_bytes - total)
			return graph_fail(cause,
			    "constants exceed the weight limit of %llu bytes",
			    (unsigned long long)lim->max_weight_bytes);
		total += nelem * GRAPH_FLOAT_BYTES;
	}
	*weight_bytes = total;
	return 0;
}

/* Fills the input and constant values of g from pb (already checked). */
static void
graph_fill_values(struct graph *g, const Agxq__Graph *pb,
    const struct graph_limits *lim)
{
	uint64_t nelem;
	size_t off = 0;
	uint32_t i;

	for (i = 0; i < g->ninputs; i++) {
		struct graph_value *v = &g->values[i];
		const Agxq__ValueInfo *vi = pb->inputs[i];

		v->kind = GRAPH_VALUE_INPUT;
		v->batched = 1;
		graph_wire_shape(vi->sample_shape, vi->n_sample_shape, 1, 1,
		    lim, &v->shape, &nelem, "input", NULL);
	}
	for (i = 0; i < g->nconsts; i++) {
		struct graph_value *v = &g->values[g->ninputs + i];
		const Agxq__Tensor *t = pb->constants[i];

		v->kind = GRAPH_VALUE_CONST;
		graph_wire_shape(t->shape, t->n_shape, 0, 0, lim, &v->shape,
		    &nelem, "constant", NULL);
		v->nelem = (size_t)nelem;
		v->data = g->const_storage + off;
		/* The wire is little-endian, as is every host agxq runs on. */
		memcpy(g->const_storage + off, t->data.data, t->data.len);
		off += v->nelem;
	}
}

/* Builds node i of g from its wire form, validating it. */
static int
graph_build_node(struct graph *g, uint32_t i, const Agxq__Node *pn,
    const struct graph_limits *lim, char **cause)
{
	const struct graph_shape *vs[GRAPH_MAX_NODE_INPUTS];
	struct graph_node *n = &g->nodes[i];
	struct graph_value *o;
	uint32_t self = g->ninputs + g->nconsts + i;
	int arity, k;

	arity = graph_op_arity(pn);
	if (arity < 0)
		return graph_fail(cause, "node %u: unknown op %d", i, (int)pn->op);
	n->op = (enum graph_op)pn->op;
	n->out = self;
	if (pn->name != NULL && pn->name[0] != '\0')
		snprintf(n->name, sizeof n->name, "%s", pn->name);
	else
		snprintf(n->name, sizeof n->name, "node %u (%s)", i,
		    graph_op_name(n->op));
	if (pn->n_inputs != (size_t)arity)
		return graph_node_fail(g, i, cause,
		    "expects %d input%s, got %zu", arity, arity == 1 ? "" : "s",
		    pn->n_inputs);
	n->nin = arity;
	for (k = 0; k < arity; k++) {
		if (pn->inputs[k] >= self)
			return graph_node_fail(g, i, cause,
			    "input %u is not defined before it (forward "
			    "reference or cycle)", pn->inputs[k]);
		n->in[k] = pn->inputs[k];
	}

	/* Keep only the attributes the op uses, so hash and equal ignore the rest. */
	switch (n->op) {
	case GRAPH_OP_LINEAR:
		n->has_bias = pn->has_bias;
		break;
	case GRAPH_OP_LAYER_NORM:
		n->has_bias = pn->has_bias;
		n->has_weight = pn->has_weight;
		if (!isfinite(pn->eps) || pn->eps < 0)
			return graph_node_fail(g, i, cause,
			    "eps %g must be finite and >= 0", (double)pn->eps);
		n->eps = pn->eps;
		break;
	case GRAPH_OP_SOFTMAX: {
		int nd = g->values[n->in[0]].shape.ndim;
		int ax = pn->axis < 0 ? pn->axis + nd : pn->axis;

		if (ax < 0 || ax >= nd)
			return graph_node_fail(g, i, cause,
			    "axis %d out of range for a %d-D input", pn->axis, nd);
		n->axis = ax;
		break;
	}
	case GRAPH_OP_MHA:
		if (pn->heads < 1 || pn->heads > 65536)
			return graph_node_fail(g, i, cause,
			    "heads must be 1..65536, got %u", pn->heads);
		n->heads = (int)pn->heads;
		n->causal = pn->causal;
		break;
	case GRAPH_OP_GELU:
		n->gelu_tanh = pn->gelu_tanh;
		break;
	default:
		break;
	}

	if (graph_node_batch(g, i, cause) != 0)
		return -1;
	o = &g->values[self];
	o->kind = GRAPH_VALUE_NODE;
	for (k = 0; k < n->nin; k++) {
		if (g->values[n->in[k]].batched)
			o->batched = 1;
	}
	for (k = 0; k < n->nin; k++)
		vs[k] = &g->values[n->in[k]].shape;
	if (graph_node_shape(g, i, vs, &o->shape, cause) != 0)
		return -1;
	return graph_check_static(g, i, &o->shape, lim, cause);
}

/* Builds and validates a graph from its wire form. */
int
graph_from_proto(const Agxq__Graph *pb, const struct graph_limits *lim,
    struct graph **out, char **cause)
{
	struct graph_limits dflt;
	struct graph *g;
	uint64_t wbytes = 0;
	uint32_t i;

	*out = NULL;
	if (lim == NULL) {
		graph_limits_default(&dflt);
		lim = &dflt;
	}
	if (graph_check_wire(pb, lim, &wbytes, cause) != 0)
		return -1;

	if ((g = calloc(1, sizeof *g)) == NULL)
		return graph_fail(cause, "out of memory");
	g->ninputs = (uint32_t)pb->n_inputs;
	g->nconsts = (uint32_t)pb->n_constants;
	g->nnodes = (uint32_t)pb->n_nodes;
	g->noutputs = (uint32_t)pb->n_outputs;
	g->nvalues = g->ninputs + g->nconsts + g->nnodes;
	g->precision = (enum graph_precision)pb->precision;
	g->weight_bytes = (size_t)wbytes;
	g->max_elements = lim->max_elements;
	g->values = calloc(g->nvalues, sizeof *g->values);
	g->nodes = calloc(g->nnodes ? g->nnodes : 1, sizeof *g->nodes);
	g->outputs = calloc(g->noutputs, sizeof *g->outputs);
	if (wbytes > 0)
		g->const_storage = malloc((size_t)wbytes);
	if (g->values == NULL || g->nodes == NULL || g->outputs == NULL ||
	    (wbytes > 0 && g->const_storage == NULL)) {
		graph_fail(cause, "out of memory (%llu bytes of constants)",
		    (unsigned long long)wbytes);
		goto fail_free_graph;
	}
	graph_fill_values(g, pb, lim);

	for (i = 0; i < g->nnodes; i++) {
		if (graph_build_node(g, i, pb->nodes[i], lim, cause) != 0)
			goto fail_free_graph;
	}
	for (i = 0; i < g->noutputs; i++) {
		uint32_t v = pb->outputs[i];

		if (v >= g->nvalues) {
			graph_fail(cause, "output %u: value %u does not exist "
			    "(graph has %u values)", i, v, g->nvalues);
			goto fail_free_graph;
		}
		if (!g->values[v].batched) {
			graph_fail(cause, "output %u (value %u) does not depend "
			    "on a graph input", i, v);
			goto fail_free_graph;
		}
		g->outputs[i] = v;
	}
	g->hash = graph_hash(g);
	*out = g;
	return 0;

fail_free_graph:
	graph_free(g);
	return -1;
}

/* Returns 1 when a and b are the same model (same structure and weights). */
int
graph_equal(const struct graph *a, const struct graph *b)
{
	uint32_t i;

	if (a == b)
		return 1;
	if (a->hash != b->hash || a->ninputs != b->ninputs ||
	    a->nconsts != b->nconsts || a->nnodes != b->nnodes ||
	    a->noutputs != b->noutputs || a->precision != b->precision ||
	    a->weight_bytes != b->weight_bytes)
		return 0;
	for (i = 0; i < a->nvalues; i++) {
		const struct graph_value *va = &a->values[i], *vb = &b->values[i];

		if (va->kind != vb->kind || va->batched != vb->batched ||
		    va->nelem != vb->nelem || va->shape.ndim != vb->shape.ndim)
			return 0;
		for (int d = 0; d < va->shape.ndim; d++) {
			if (va->shape.dim[d] != vb->shape.dim[d])
				return 0;
		}
	}
	if (a->weight_bytes > 0 && memcmp(a->const_storage, b->const_storage,
	    a->weight_bytes) != 0)
		return 0;
	for (i = 0; i < a->nnodes; i++) {
		const struct graph_node *na = &a->nodes[i], *nb = &b->nodes[i];

		if (na->op != nb->op || na->nin != nb->nin ||
		    na->has_weight != nb->has_weight ||
		    na->has_bias != nb->has_bias ||
		    memcmp(&na->eps, &nb->eps, sizeof na->eps) != 0 ||
		    na->axis != nb->axis || na->heads != nb->heads ||
		    na->causal != nb->causal || na->gelu_tanh != nb->gelu_tanh ||
		    memcmp(na->in, nb->in, (size_t)na->nin * sizeof na->in[0]) != 0)
			return 0;
	}
	return memcmp(a->outputs, b->outputs,
	    a->noutputs * sizeof a->outputs[0]) == 0;
}

/* Checks a request input shape against graph input i's declared shape. */
int
graph_check_input(const struct graph *g, uint32_t i,
    const struct graph_shape *s, char **cause)
{
	const struct graph_shape *d;
	char have[128], want[160];
	uint64_t n = 1;
	size_t off;
	int k, ok;

	if (i >= g->ninputs)
		return graph_fail(cause, "input %u: graph has %u inputs", i,
		    g->ninputs);
	d = &g->values[i].shape;
	ok = s->ndim == d->ndim && s->ndim >= 1 && s->dim[0] >= 1;
	for (k = 0; ok && k < s->ndim; k++) {
		if (s->dim[k] < 1 || (d->dim[k] >= 0 && s->dim[k] != d->dim[k]))
			ok = 0;
	}
	if (!ok) {
		if (s->ndim < 0 || s->ndim > GRAPH_MAX_DIMS)
			snprintf(have, sizeof have, "of %d dims", s->ndim);
		else
			graph_shape_str(s, have, sizeof have);
		off = (size_t)snprintf(want, sizeof want, "[batch");
		for (k = 1; k < d->ndim && off < sizeof want; k++) {
			if (d->dim[k] < 0)
				off += (size_t)snprintf(want + off,
				    sizeof want - off, ", any");
			else
				off += (size_t)snprintf(want + off,
				    sizeof want - off, ", %lld",
				    (long long)d->dim[k]);
		}
		if (off < sizeof want)
			snprintf(want + off, sizeof want - off, "]");
		return graph_fail(cause, "input %u: shape %s does not fit %s", i,
		    have, want);
	}
	for (k = 0; k < s->ndim; k++) {
		if (n > g->max_elements / (uint64_t)s->dim[k])
			return graph_fail(cause,
			    "input %u: more than %llu elements", i,
			    (unsigned long long)g->max_elements);
		n *= (uint64_t)s->dim[k];
	}
	return 0;
}

/* Infers the concrete shape of every value for one run. */
int
graph_infer(const struct graph *g, const struct graph_shape *in,
    struct graph_shape *shapes, char **cause)
{
	uint32_t i;

	for (i = 0; i < g->ninputs; i++) {
		if (graph_check_input(g, i, &in[i], cause) != 0)
			return -1;
		if (in[i].dim[0] != in[0].dim[0])
			return graph_fail(cause,
			    "input %u: batch %lld differs from input 0's %lld",
			    i, (long long)in[i].dim[0], (long long)in[0].dim[0]);
		shapes[i] = in[i];
	}
	for (i = g->ninputs; i < g->ninputs + g->nconsts; i++)
		shapes[i] = g->values[i].shape;
	for (i = 0; i < g->nnodes; i++) {
		const struct graph_shape *vs[GRAPH_MAX_NODE_INPUTS];
		struct graph_shape *o = &shapes[g->nodes[i].out];
		uint64_t n = 1;

		for (int k = 0; k < g->nodes[i].nin; k++)
			vs[k] = &shapes[g->nodes[i].in[k]];
		if (graph_node_shape(g, i, vs, o, cause) != 0)
			return -1;
		for (int k = 0; k < o->ndim; k++) {
			if (o->dim[k] < 1 ||
			    n > g->max_elements / (uint64_t)o->dim[k])
				return graph_node_fail(g, i, cause,
				    "output has more than %llu elements",
				    (unsigned long long)g->max_elements);
			n *= (uint64_t)o->dim[k];
		}
	}
	return 0;
}
