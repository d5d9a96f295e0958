/*
 * graph: the model IR ("encoded workload"). Converts a wire Graph into a
 * validated, self-contained struct graph, infers concrete shapes for a
 * batch, hashes and compares graphs so identical models can be shared.
 *
 * Values are numbered: graph inputs, then constants, then one output per
 * node in order. A node may only read values numbered below its own output,
 * so a valid graph has no forward references and no cycles.
 */
#ifndef AGXQ_GRAPH_H
#define AGXQ_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "agxq.pb-c.h"

#define GRAPH_MAX_DIMS 6
#define GRAPH_MAX_NODE_INPUTS 5

enum graph_op {
	GRAPH_OP_LINEAR = AGXQ__OP__OP_LINEAR,
	GRAPH_OP_MATMUL = AGXQ__OP__OP_MATMUL,
	GRAPH_OP_ADD = AGXQ__OP__OP_ADD,
	GRAPH_OP_MUL = AGXQ__OP__OP_MUL,
	GRAPH_OP_RELU = AGXQ__OP__OP_RELU,
	GRAPH_OP_GELU = AGXQ__OP__OP_GELU,
	GRAPH_OP_SILU = AGXQ__OP__OP_SILU,
	GRAPH_OP_SOFTMAX = AGXQ__OP__OP_SOFTMAX,
	GRAPH_OP_LAYER_NORM = AGXQ__OP__OP_LAYER_NORM,
	GRAPH_OP_MHA = AGXQ__OP__OP_MHA
};

enum graph_precision {
	GRAPH_FP32 = AGXQ__PRECISION__PRECISION_FP32,
	GRAPH_TF32 = AGXQ__PRECISION__PRECISION_TF32,
	GRAPH_FP16 = AGXQ__PRECISION__PRECISION_FP16,
	GRAPH_BF16 = AGXQ__PRECISION__PRECISION_BF16
};

/* A shape. In a static shape -1 marks a dim known only at run time. */
struct graph_shape {
	int ndim;
	int64_t dim[GRAPH_MAX_DIMS];
};

enum graph_value_kind { GRAPH_VALUE_INPUT, GRAPH_VALUE_CONST, GRAPH_VALUE_NODE };

struct graph_value {
	enum graph_value_kind kind;
	struct graph_shape shape; /* static; inputs and node outputs have dim[0] = -1 (batch) */
	const float *data;        /* constants: nelem floats, owned by the graph */
	size_t nelem;             /* constants only */
	int batched;              /* carries the batch at dim 0 (depends on a graph input) */
};

struct graph_node {
	enum graph_op op;
	int nin;
	uint32_t in[GRAPH_MAX_NODE_INPUTS]; /* absent optional inputs are not listed */
	uint32_t out;                       /* value number this node defines */
	int has_weight;                     /* layer_norm */
	int has_bias;                       /* linear, layer_norm */
	float eps;                          /* layer_norm */
	int axis;                           /* softmax, normalised to 0..ndim-1 */
	int heads;                          /* mha */
	int causal;                         /* mha */
	int gelu_tanh;                      /* gelu */
	char name[48];                      /* for messages: given name or "node N (op)" */
};

struct graph {
	uint32_t ninputs, nconsts, nnodes, nvalues, noutputs;
	struct graph_value *values; /* nvalues */
	struct graph_node *nodes;   /* nnodes */
	uint32_t *outputs;          /* noutputs value numbers */
	enum graph_precision precision;
	uint64_t hash;
	size_t weight_bytes;        /* sum of constant sizes */
	float *const_storage;       /* one block holding every constant */
	uint64_t max_elements;      /* per-tensor limit graph_infer enforces */
};

struct graph_limits {
	uint32_t max_nodes;
	uint32_t max_values;
	uint64_t max_weight_bytes;
	int64_t max_dim;           /* largest single dimension */
	uint64_t max_elements;     /* largest single tensor, in elements */
};

/* Fills lim with the default limits. */
void graph_limits_default(struct graph_limits *lim);

/*
 * Builds and validates a graph from its wire form; copies every constant so
 * pb may be freed afterwards. Returns 0 and *out (free with graph_free), or
 * -1 with *cause (malloc'd, caller frees) naming the offending node or value.
 */
int graph_from_proto(const Agxq__Graph *pb, const struct graph_limits *lim,
    struct graph **out, char **cause);

/* Frees a graph; accepts NULL. */
void graph_free(struct graph *g);

/* Returns 1 when a and b are the same model (same structure and weights, byte for byte). */
int graph_equal(const struct graph *a, const struct graph *b);

/*
 * Infers the concrete shape of every value for one run. in[i] is the
 * concrete shape of graph input i (batch dim first). Fills shapes[0..nvalues).
 * Returns 0, or -1 with *cause naming the node whose shapes do not fit.
 */
int graph_infer(const struct graph *g, const struct graph_shape *in,
    struct graph_shape *shapes, char **cause);

/* Checks a request input shape against graph input i's declared shape. */
int graph_check_input(const struct graph *g, uint32_t i,
    const struct graph_shape *s, char **cause);

/* Number of elements in a concrete shape. */
size_t graph_shape_nelem(const struct graph_shape *s);

/* Returns the op's name ("linear"), or "unknown". */
const char *graph_op_name(enum graph_op op);

#endif
