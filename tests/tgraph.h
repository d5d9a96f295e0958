/*
 * tgraph: a test helper that builds Agxq__Graph wire structs. Add inputs,
 * then constants, then nodes (in that order, so value numbers are known as
 * they are returned), name outputs, and take the graph with tg_graph(). The
 * builder owns everything it returns; tg_free() releases it all. Aborts on
 * out of memory or misuse: it is for tests only.
 *
 *	struct tgraph *t = tg_new();
 *	uint32_t x = tg_input(t, TG_DIMS(256));            // [batch, 256]
 *	uint32_t w = tg_const_rand(t, TG_DIMS(128, 256), 0.1f, &seed);
 *	uint32_t y = tg_linear(t, x, w, TG_NONE);
 *	tg_output(t, y);
 *	graph_from_proto(tg_graph(t), NULL, &g, &cause);
 *	tg_free(t);
 */
#ifndef AGXQ_TGRAPH_H
#define AGXQ_TGRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "agxq.pb-c.h"

/* A dims list argument pair: TG_DIMS(2, 3) is `(int64_t[]){2, 3}, 2`. */
#define TG_DIMS(...) \
	(const int64_t[]){ __VA_ARGS__ }, \
	(int)(sizeof((const int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t))

/* "No optional input" for tg_linear and tg_layer_norm. */
#define TG_NONE UINT32_MAX

struct tgraph;

/* Makes an empty graph builder. */
struct tgraph *tg_new(void);

/* Frees the builder and every struct it made; accepts NULL. */
void tg_free(struct tgraph *t);

/*
 * The wire graph, valid until the next tg_* call on t or tg_free. Mutable,
 * so tests may break it on purpose (dtype, shapes, counts).
 */
Agxq__Graph *tg_graph(struct tgraph *t);

/* Adds a float32 graph input of sample shape dims (-1 = free). Returns its value number. */
uint32_t tg_input(struct tgraph *t, const int64_t *dims, int ndim);

/* Adds a float32 constant, copying nelem(dims) floats from data (NULL: zeros). */
uint32_t tg_const(struct tgraph *t, const int64_t *dims, int ndim,
    const float *data);

/* Adds a constant of uniform random values in [-scale, scale). */
uint32_t tg_const_rand(struct tgraph *t, const int64_t *dims, int ndim,
    float scale, uint64_t *seed);

/* Adds a constant filled with the value v. */
uint32_t tg_const_fill(struct tgraph *t, const int64_t *dims, int ndim,
    float v);

/* The last constant's wire tensor, e.g. to corrupt its data or dtype. */
Agxq__Tensor *tg_last_const(struct tgraph *t);

/* Adds a node of op reading in[0..nin) (no arity checks). Returns its value number. */
uint32_t tg_node(struct tgraph *t, Agxq__Op op, const uint32_t *in, int nin);

/* The last node's wire struct, to set attributes or break it. */
Agxq__Node *tg_last_node(struct tgraph *t);

/* Sets the last node's name (copied). */
void tg_name(struct tgraph *t, const char *name);

/* Op helpers; each returns the node's value number. */
uint32_t tg_linear(struct tgraph *t, uint32_t x, uint32_t w, uint32_t b);
uint32_t tg_matmul(struct tgraph *t, uint32_t a, uint32_t b);
uint32_t tg_add(struct tgraph *t, uint32_t a, uint32_t b);
uint32_t tg_mul(struct tgraph *t, uint32_t a, uint32_t b);
uint32_t tg_relu(struct tgraph *t, uint32_t x);
uint32_t tg_gelu(struct tgraph *t, uint32_t x, int tanh_approx);
uint32_t tg_silu(struct tgraph *t, uint32_t x);
uint32_t tg_softmax(struct tgraph *t, uint32_t x, int axis);
uint32_t tg_layer_norm(struct tgraph *t, uint32_t x, uint32_t w, uint32_t b,
    float eps);
uint32_t tg_mha(struct tgraph *t, uint32_t x, uint32_t in_w, uint32_t in_b,
    uint32_t out_w, uint32_t out_b, unsigned heads, int causal);

/* Marks value v as the next graph output. */
void tg_output(struct tgraph *t, uint32_t v);

/* Sets the graph's precision. */
void tg_precision(struct tgraph *t, Agxq__Precision p);

/* Uniform random float in [-scale, scale) from a xorshift state (nonzero). */
float tg_randf(uint64_t *seed, float scale);

/* Fills p[0..n) with tg_randf values. */
void tg_rand_fill(float *p, size_t n, float scale, uint64_t *seed);

#endif
