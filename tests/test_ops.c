/*
 * test_ops: every op through engine_open("cpu") + engine_model_load +
 * engine_run, checked against naive double-accumulating references written
 * here; broadcasting, softmax axes, both gelus, layer_norm variants, matmul
 * ranks, mha heads/causal, a transformer layer, batch == row-by-row, and the
 * owner-thread check.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "graph.h"
#include "tgraph.h"

#define TOL 1e-5

static struct engine *eng; /* opened by main, owner = main thread */
static uint64_t seed = 0x1234567;

/* A float array of n random values in [-scale, scale). */
static float *
rnd(size_t n, float scale)
{
	float *p = malloc((n ? n : 1) * sizeof *p);

	if (p == NULL)
		abort();
	tg_rand_fill(p, n, scale, &seed);
	return p;
}

/* Zeroed float array. */
static float *
zeros(size_t n)
{
	float *p = calloc(n ? n : 1, sizeof *p);

	if (p == NULL)
		abort();
	return p;
}

/* Compares got with want (n floats) to tol absolute + relative. */
static int
close_to(const char *what, const float *got, const float *want, size_t n,
    double tol)
{
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - (double)want[i]);

		if (!(d <= tol + tol * fabs((double)want[i]))) {
			printf("  %s[%zu]: got %.9g want %.9g\n", what, i,
			    (double)got[i], (double)want[i]);
			return 0;
		}
	}
	return 1;
}

/* A shape from dims. */
static struct graph_shape
shp(const int64_t *d, int ndim)
{
	struct graph_shape s = { ndim, { 0 } };

	for (int i = 0; i < ndim; i++)
		s.dim[i] = d[i];
	return s;
}
#define SHP(...) shp(TG_DIMS(__VA_ARGS__))

/*
 * Loads t (consumed) on eng, runs inputs in[], and returns the outputs in
 * out[] (malloc'd, caller frees) with their shapes in os[]. Returns 1 on
 * success.
 */
static int
run_graph(struct tgraph *t, const struct graph_shape *is, float **in,
    float **out, struct graph_shape *os)
{
	struct graph *g = NULL;
	struct engine_model *m = NULL;
	char *cause = NULL;
	int ok = 0;

	if (graph_from_proto(tg_graph(t), NULL, &g, &cause) != 0)
		goto fail;
	if (engine_model_load(eng, g, &m, &cause) != 0)
		goto fail;
	if (engine_output_shapes(g, is, os, &cause) != 0)
		goto fail;
	for (uint32_t j = 0; j < g->noutputs; j++)
		out[j] = zeros(graph_shape_nelem(&os[j]));
	if (engine_run(eng, m, is, (const float *const *)in, out, &cause) != 0)
		goto fail;
	ok = 1;
fail:
	if (!ok)
		printf("  %s\n", cause ? cause : "?");
	free(cause);
	engine_model_free(eng, m);
	graph_free(g);
	tg_free(t);
	return ok;
}

/* Reference y[rows, out] = x[rows, in] W^T + b. */
static void
ref_linear(const float *x, const float *w, const float *b, float *y,
    size_t rows, size_t in, size_t out)
{
	for (size_t r = 0; r < rows; r++)
		for (size_t o = 0; o < out; o++) {
			double s = b ? b[o] : 0.0;

			for (size_t i = 0; i < in; i++)
				s += (double)x[r * in + i] * w[o * in + i];
			y[r * out + o] = (float)s;
		}
}

/* Reference batched matmul: nb times [m,k] @ [k,n] (b shared when bstride 0). */
static void
ref_matmul(const float *a, const float *b, float *y, size_t nb, size_t m,
    size_t k, size_t n, size_t bstride)
{
	for (size_t p = 0; p < nb; p++)
		for (size_t i = 0; i < m; i++)
			for (size_t j = 0; j < n; j++) {
				double s = 0;

				for (size_t q = 0; q < k; q++)
					s += (double)a[p * m * k + i * k + q] *
					    b[p * bstride + q * n + j];
				y[p * m * n + i * n + j] = (float)s;
			}
}

/* Reference broadcasting add/mul. */
static void
ref_binary(int mul, const float *a, struct graph_shape sa, const float *b,
    struct graph_shape sb, float *y, struct graph_shape so)
{
	size_t n = graph_shape_nelem(&so);

	for (size_t f = 0; f < n; f++) {
		size_t rem = f, ia = 0, ib = 0, ma = 1, mb = 1;

		for (int k = so.ndim - 1; k >= 0; k--) {
			size_t idx = rem % (size_t)so.dim[k];
			int ka = k - (so.ndim - sa.ndim);
			int kb = k - (so.ndim - sb.ndim);

			rem /= (size_t)so.dim[k];
			if (ka >= 0) {
				if (sa.dim[ka] != 1)
					ia += idx * ma;
				ma *= (size_t)sa.dim[ka];
			}
			if (kb >= 0) {
				if (sb.dim[kb] != 1)
					ib += idx * mb;
				mb *= (size_t)sb.dim[kb];
			}
		}
		y[f] = mul ? a[ia] * b[ib] : a[ia] + b[ib];
	}
}

/* Reference softmax over axis. */
static void
ref_softmax(const float *x, struct graph_shape s, int axis, float *y)
{
	size_t outer = 1, inner = 1, n = (size_t)s.dim[axis];

	for (int k = 0; k < axis; k++)
		outer *= (size_t)s.dim[k];
	for (int k = axis + 1; k < s.ndim; k++)
		inner *= (size_t)s.dim[k];
	for (size_t o = 0; o < outer; o++)
		for (size_t j = 0; j < inner; j++) {
			double mx = -INFINITY, sum = 0;

			for (size_t i = 0; i < n; i++)
				mx = fmax(mx, x[(o * n + i) * inner + j]);
			for (size_t i = 0; i < n; i++)
				sum += exp(x[(o * n + i) * inner + j] - mx);
			for (size_t i = 0; i < n; i++)
				y[(o * n + i) * inner + j] = (float)(exp(
				    x[(o * n + i) * inner + j] - mx) / sum);
		}
}

/* Reference layer norm over the last dim. */
static void
ref_layer_norm(const float *x, const float *w, const float *b, float *y,
    size_t rows, size_t n, double eps)
{
	for (size_t r = 0; r < rows; r++) {
		double mean = 0, var = 0;

		for (size_t i = 0; i < n; i++)
			mean += x[r * n + i];
		mean /= (double)n;
		for (size_t i = 0; i < n; i++)
			var += (x[r * n + i] - mean) * (x[r * n + i] - mean);
		var /= (double)n;
		for (size_t i = 0; i < n; i++) {
			double v = (x[r * n + i] - mean) / sqrt(var + eps);

			y[r * n + i] = (float)(v * (w ? w[i] : 1.0) +
			    (b ? b[i] : 0.0));
		}
	}
}

/* Reference nn.MultiheadAttention self-attention (batch_first, eval). */
static void
ref_mha(const float *x, size_t bs, size_t seq, size_t d, const float *inw,
    const float *inb, const float *ow, const float *ob, size_t heads,
    int causal, float *y)
{
	size_t hd = d / heads;
	float *qkv = zeros(bs * seq * 3 * d), *ctx = zeros(bs * seq * d);
	double *p = malloc(seq * sizeof *p);

	ref_linear(x, inw, inb, qkv, bs * seq, d, 3 * d);
	for (size_t b = 0; b < bs; b++)
		for (size_t h = 0; h < heads; h++)
			for (size_t i = 0; i < seq; i++) {
				const float *q = qkv + (b * seq + i) * 3 * d +
				    h * hd;
				double mx = -INFINITY, sum = 0;
				size_t nj = causal ? i + 1 : seq;

				for (size_t j = 0; j < nj; j++) {
					const float *k = qkv + (b * seq + j) *
					    3 * d + d + h * hd;
					double s = 0;

					for (size_t e = 0; e < hd; e++)
						s += (double)q[e] * k[e];
					p[j] = s / sqrt((double)hd);
					mx = fmax(mx, p[j]);
				}
				for (size_t j = 0; j < nj; j++) {
					p[j] = exp(p[j] - mx);
					sum += p[j];
				}
				for (size_t e = 0; e < hd; e++) {
					double s = 0;

					for (size_t j = 0; j < nj; j++)
						s += p[j] / sum * qkv[(b * seq +
						    j) * 3 * d + 2 * d + h * hd +
						    e];
					ctx[(b * seq + i) * d + h * hd + e] =
					    (float)s;
				}
			}
	ref_linear(ctx, ow, ob, y, bs * seq, d, d);
	free(p);
	free(ctx);
	free(qkv);
}

static int
test_linear(void)
{
	int ok = 1;

	for (int bias = 0; bias <= 1; bias++) {
		struct tgraph *t = tg_new();
		float *x = rnd(3 * 5 * 37, 1), *w = rnd(19 * 37, 0.5f);
		float *b = rnd(19, 0.5f), *want = zeros(3 * 5 * 19), *out[1];
		struct graph_shape is = SHP(3, 5, 37), os[1];
		uint32_t vw, vb;

		tg_input(t, TG_DIMS(5, 37));
		vw = tg_const(t, TG_DIMS(19, 37), w);
		vb = tg_const(t, TG_DIMS(19), b);
		tg_output(t, tg_linear(t, 0, vw, bias ? vb : TG_NONE));
		ref_linear(x, w, bias ? b : NULL, want, 15, 37, 19);
		if (run_graph(t, &is, &x, out, os)) {
			ok &= os[0].ndim == 3 && os[0].dim[2] == 19 &&
			    close_to("linear", out[0], want, 15 * 19, TOL);
			free(out[0]);
		} else
			ok = 0;
		free(x);
		free(w);
		free(b);
		free(want);
	}
	return ok;
}

static int
test_matmul(void)
{
	int ok = 1;

	/* 2-D: [B, k] @ [k, n]; 3-D: [B, m, k] @ [k, n]. */
	for (int three = 0; three <= 1; three++) {
		struct tgraph *t = tg_new();
		size_t m = three ? 6 : 1, rows = 4 * m;
		float *a = rnd(rows * 9, 1), *b = rnd(9 * 7, 1);
		float *want = zeros(rows * 7), *out[1];
		struct graph_shape is = three ? SHP(4, 6, 9) : SHP(4, 9), os[1];
		uint32_t vb;

		if (three)
			tg_input(t, TG_DIMS(6, 9));
		else
			tg_input(t, TG_DIMS(9));
		vb = tg_const(t, TG_DIMS(9, 7), b);
		tg_output(t, tg_matmul(t, 0, vb));
		ref_matmul(a, b, want, 1, rows, 9, 7, 0);
		if (run_graph(t, &is, &a, out, os)) {
			ok &= close_to("matmul", out[0], want, rows * 7, TOL);
			free(out[0]);
		} else
			ok = 0;
		free(a);
		free(b);
		free(want);
	}
	{
		/* Batched: both operands carry the batch: [B,m,k] @ [B,k,n]. */
		struct tgraph *t = tg_new();
		float *in[2] = { rnd(3 * 5 * 8, 1), rnd(3 * 8 * 4, 1) };
		float *want = zeros(3 * 5 * 4), *out[1];
		struct graph_shape is[2] = { SHP(3, 5, 8), SHP(3, 8, 4) }, os[1];

		tg_input(t, TG_DIMS(5, 8));
		tg_input(t, TG_DIMS(8, -1));
		tg_output(t, tg_matmul(t, 0, 1));
		ref_matmul(in[0], in[1], want, 3, 5, 8, 4, 8 * 4);
		if (run_graph(t, is, in, out, os)) {
			ok &= close_to("bmm", out[0], want, 3 * 5 * 4, TOL);
			free(out[0]);
		} else
			ok = 0;
		free(in[0]);
		free(in[1]);
		free(want);
	}
	return ok;
}

/* Runs a op b for one broadcasting case; b is a constant or a second input. */
static int
binary_case(int mul, struct graph_shape sa, struct graph_shape sb,
    int b_is_input, struct graph_shape so)
{
	struct tgraph *t = tg_new();
	size_t na = graph_shape_nelem(&sa), nb = graph_shape_nelem(&sb);
	size_t no = graph_shape_nelem(&so);
	float *in[2] = { rnd(na, 1), rnd(nb, 1) }, *want = zeros(no), *out[1];
	struct graph_shape is[2] = { sa, sb }, os[1];
	uint32_t vb;
	int ok;

	tg_input(t, sa.dim + 1, sa.ndim - 1);
	if (b_is_input) {
		vb = tg_input(t, sb.dim + 1, sb.ndim - 1);
	} else
		vb = tg_const(t, sb.dim, sb.ndim, in[1]);
	tg_output(t, mul ? tg_mul(t, 0, vb) : tg_add(t, vb, 0));
	if (mul)
		ref_binary(mul, in[0], sa, in[1], sb, want, so);
	else
		ref_binary(mul, in[1], sb, in[0], sa, want, so);
	ok = run_graph(t, is, in, out, os);
	if (ok) {
		ok = os[0].ndim == so.ndim && close_to(mul ? "mul" : "add",
		    out[0], want, no, 0);
		free(out[0]);
	}
	free(in[0]);
	free(in[1]);
	free(want);
	return ok;
}

static int
test_broadcast(void)
{
	int ok = 1;

	for (int mul = 0; mul <= 1; mul++) {
		ok &= binary_case(mul, SHP(2, 3, 4), SHP(4), 0, SHP(2, 3, 4));
		ok &= binary_case(mul, SHP(2, 3, 4), SHP(3, 1), 0,
		    SHP(2, 3, 4));
		ok &= binary_case(mul, SHP(2, 3, 1), SHP(1, 1, 5), 0,
		    SHP(2, 3, 5));
		ok &= binary_case(mul, SHP(2, 3, 4), shp(NULL, 0), 0,
		    SHP(2, 3, 4));
		ok &= binary_case(mul, SHP(2, 3, 4), SHP(2, 3, 4), 1,
		    SHP(2, 3, 4));
		ok &= binary_case(mul, SHP(2, 1, 4), SHP(2, 3, 1), 1,
		    SHP(2, 3, 4));
		ok &= binary_case(mul, SHP(3, 2, 1, 5), SHP(4, 1), 0,
		    SHP(3, 2, 4, 5));
	}
	return ok;
}

/* Runs one unary op over a [3, 7, 11] input against ref. */
static int
unary_case(const char *what, Agxq__Op op, int tanh_approx,
    double (*ref)(double))
{
	struct tgraph *t = tg_new();
	size_t n = 3 * 7 * 11;
	float *x = rnd(n, 4), *want = zeros(n), *out[1];
	struct graph_shape is = SHP(3, 7, 11), os[1];
	int ok;

	tg_input(t, TG_DIMS(7, 11));
	tg_output(t, tg_node(t, op, (uint32_t[]){ 0 }, 1));
	tg_last_node(t)->gelu_tanh = tanh_approx;
	for (size_t i = 0; i < n; i++)
		want[i] = (float)ref(x[i]);
	ok = run_graph(t, &is, &x, out, os);
	if (ok) {
		ok = close_to(what, out[0], want, n, TOL);
		free(out[0]);
	}
	free(x);
	free(want);
	return ok;
}

static double ref_relu(double v) { return v > 0 ? v : 0; }
static double ref_silu(double v) { return v / (1 + exp(-v)); }
static double ref_gelu(double v) { return 0.5 * v * (1 + erf(v / sqrt(2))); }
static double
ref_gelu_tanh(double v)
{
	return 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
}

static int
test_unary(void)
{
	return unary_case("relu", AGXQ__OP__OP_RELU, 0, ref_relu) &
	    unary_case("silu", AGXQ__OP__OP_SILU, 0, ref_silu) &
	    unary_case("gelu", AGXQ__OP__OP_GELU, 0, ref_gelu) &
	    unary_case("gelu_tanh", AGXQ__OP__OP_GELU, 1, ref_gelu_tanh);
}

static int
test_softmax(void)
{
	static const int axes[] = { 1, 2, 3, -1, -2, -3 };
	int ok = 1;

	for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++) {
		struct tgraph *t = tg_new();
		struct graph_shape is = SHP(2, 3, 5, 7), os[1];
		size_t n = 2 * 3 * 5 * 7;
		float *x = rnd(n, 5), *want = zeros(n), *out[1];

		tg_input(t, TG_DIMS(3, 5, 7));
		tg_output(t, tg_softmax(t, 0, axes[a]));
		ref_softmax(x, is, axes[a] < 0 ? axes[a] + 4 : axes[a], want);
		if (run_graph(t, &is, &x, out, os)) {
			ok &= close_to("softmax", out[0], want, n, TOL);
			free(out[0]);
		} else
			ok = 0;
		free(x);
		free(want);
	}
	return ok;
}

static int
test_layer_norm(void)
{
	int ok = 1;

	for (int v = 0; v < 4; v++) {
		struct tgraph *t = tg_new();
		struct graph_shape is = SHP(4, 3, 33), os[1];
		size_t n = 4 * 3 * 33;
		float *x = rnd(n, 3), *w = rnd(33, 1), *b = rnd(33, 1);
		float *want = zeros(n), *out[1];
		uint32_t vw, vb;
		int hw = v & 1, hb = (v >> 1) & 1;

		for (size_t i = 0; i < n; i++)
			x[i] += 2.0f; /* a mean far from 0 */
		tg_input(t, TG_DIMS(3, 33));
		vw = tg_const(t, TG_DIMS(33), w);
		vb = tg_const(t, TG_DIMS(33), b);
		tg_output(t, tg_layer_norm(t, 0, hw ? vw : TG_NONE,
		    hb ? vb : TG_NONE, 1e-5f));
		ref_layer_norm(x, hw ? w : NULL, hb ? b : NULL, want, 12, 33,
		    1e-5f);
		if (run_graph(t, &is, &x, out, os)) {
			ok &= close_to("layer_norm", out[0], want, n, TOL);
			free(out[0]);
		} else
			ok = 0;
		free(x);
		free(w);
		free(b);
		free(want);
	}
	return ok;
}

static int
test_mha(void)
{
	static const int heads[] = { 1, 4 };
	int ok = 1;

	for (int h = 0; h < 2; h++)
		for (int causal = 0; causal <= 1; causal++) {
			struct tgraph *t = tg_new();
			size_t bs = 3, seq = 7, d = 16, n = bs * seq * d;
			struct graph_shape is = SHP(3, 7, 16), os[1];
			float *x = rnd(n, 1), *inw = rnd(3 * d * d, 0.4f);
			float *inb = rnd(3 * d, 0.2f), *ow = rnd(d * d, 0.4f);
			float *ob = rnd(d, 0.2f), *want = zeros(n), *out[1];
			uint32_t c[4];

			tg_input(t, TG_DIMS(7, 16));
			c[0] = tg_const(t, TG_DIMS(48, 16), inw);
			c[1] = tg_const(t, TG_DIMS(48), inb);
			c[2] = tg_const(t, TG_DIMS(16, 16), ow);
			c[3] = tg_const(t, TG_DIMS(16), ob);
			tg_output(t, tg_mha(t, 0, c[0], c[1], c[2], c[3],
			    (unsigned)heads[h], causal));
			ref_mha(x, bs, seq, d, inw, inb, ow, ob,
			    (size_t)heads[h], causal, want);
			if (run_graph(t, &is, &x, out, os)) {
				if (!close_to("mha", out[0], want, n, TOL)) {
					printf("  heads %d causal %d\n",
					    heads[h], causal);
					ok = 0;
				}
				free(out[0]);
			} else
				ok = 0;
			free(x);
			free(inw);
			free(inb);
			free(ow);
			free(ob);
			free(want);
		}
	return ok;
}

/* Weights of a small pre-norm-free (post-norm) encoder layer, d=32, ff=64. */
struct enc {
	float *inw, *inb, *ow, *ob, *w1, *b1, *w2, *b2, *g1, *g2, *be1, *be2;
};

static void
enc_make(struct enc *e)
{
	e->inw = rnd(96 * 32, 0.3f);
	e->inb = rnd(96, 0.1f);
	e->ow = rnd(32 * 32, 0.3f);
	e->ob = rnd(32, 0.1f);
	e->w1 = rnd(64 * 32, 0.3f);
	e->b1 = rnd(64, 0.1f);
	e->w2 = rnd(32 * 64, 0.3f);
	e->b2 = rnd(32, 0.1f);
	e->g1 = rnd(32, 1);
	e->g2 = rnd(32, 1);
	e->be1 = rnd(32, 1);
	e->be2 = rnd(32, 1);
}

static void
enc_free(struct enc *e)
{
	free(e->inw); free(e->inb); free(e->ow); free(e->ob);
	free(e->w1); free(e->b1); free(e->w2); free(e->b2);
	free(e->g1); free(e->g2); free(e->be1); free(e->be2);
}

/* The encoder as a graph; outputs the layer output and the attention. */
static struct tgraph *
enc_graph(const struct enc *e)
{
	struct tgraph *t = tg_new();
	uint32_t c[12], a, h, x;

	x = tg_input(t, TG_DIMS(-1, 32));
	c[0] = tg_const(t, TG_DIMS(96, 32), e->inw);
	c[1] = tg_const(t, TG_DIMS(96), e->inb);
	c[2] = tg_const(t, TG_DIMS(32, 32), e->ow);
	c[3] = tg_const(t, TG_DIMS(32), e->ob);
	c[4] = tg_const(t, TG_DIMS(64, 32), e->w1);
	c[5] = tg_const(t, TG_DIMS(64), e->b1);
	c[6] = tg_const(t, TG_DIMS(32, 64), e->w2);
	c[7] = tg_const(t, TG_DIMS(32), e->b2);
	c[8] = tg_const(t, TG_DIMS(32), e->g1);
	c[9] = tg_const(t, TG_DIMS(32), e->be1);
	c[10] = tg_const(t, TG_DIMS(32), e->g2);
	c[11] = tg_const(t, TG_DIMS(32), e->be2);
	a = tg_mha(t, x, c[0], c[1], c[2], c[3], 4, 1);
	a = tg_layer_norm(t, tg_add(t, x, a), c[8], c[9], 1e-5f);
	h = tg_gelu(t, tg_linear(t, a, c[4], c[5]), 0);
	h = tg_linear(t, h, c[6], c[7]);
	tg_output(t, tg_layer_norm(t, tg_add(t, a, h), c[10], c[11], 1e-5f));
	tg_output(t, a);
	return t;
}

static int
test_encoder(void)
{
	struct enc e;
	size_t bs = 2, seq = 9, n = bs * seq * 32, rows = bs * seq;
	struct graph_shape is = SHP(2, 9, 32), os[2];
	float *x = rnd(n, 1), *a = zeros(n), *a2 = zeros(n), *h = zeros(rows * 64);
	float *h2 = zeros(n), *want = zeros(n), *out[2];
	int ok;

	enc_make(&e);
	ref_mha(x, bs, seq, 32, e.inw, e.inb, e.ow, e.ob, 4, 1, a);
	for (size_t i = 0; i < n; i++)
		a[i] += x[i];
	ref_layer_norm(a, e.g1, e.be1, a2, rows, 32, 1e-5f);
	ref_linear(a2, e.w1, e.b1, h, rows, 32, 64);
	for (size_t i = 0; i < rows * 64; i++)
		h[i] = (float)ref_gelu(h[i]);
	ref_linear(h, e.w2, e.b2, h2, rows, 64, 32);
	for (size_t i = 0; i < n; i++)
		h2[i] += a2[i];
	ref_layer_norm(h2, e.g2, e.be2, want, rows, 32, 1e-5f);
	ok = run_graph(enc_graph(&e), &is, &x, out, os);
	if (ok) {
		ok = close_to("encoder", out[0], want, n, TOL) &&
		    close_to("encoder.attn", out[1], a2, n, TOL);
		free(out[0]);
		free(out[1]);
	}
	enc_free(&e);
	free(x); free(a); free(a2); free(h); free(h2); free(want);
	return ok;
}

static int
test_batch_rows(void)
{
	struct enc e;
	struct graph *g = NULL;
	struct engine_model *m = NULL;
	struct tgraph *t;
	size_t seq = 6, row = seq * 32, bs = 5;
	struct graph_shape is = SHP(5, 6, 32), one = SHP(1, 6, 32);
	float *x = rnd(bs * row, 1), *ob[2], *orow[2];
	char *cause = NULL;
	int ok = 0;

	enc_make(&e);
	t = enc_graph(&e);
	if (graph_from_proto(tg_graph(t), NULL, &g, &cause) != 0 ||
	    engine_model_load(eng, g, &m, &cause) != 0)
		goto out;
	ob[0] = zeros(bs * row);
	ob[1] = zeros(bs * row);
	orow[0] = zeros(row);
	orow[1] = zeros(row);
	ok = engine_run(eng, m, &is, (const float *const *)&x, ob, &cause) == 0;
	for (size_t r = 0; ok && r < bs; r++) {
		const float *xr = x + r * row;

		/* Run twice: the second run reuses the grown scratch. */
		ok = engine_run(eng, m, &one, &xr, orow, &cause) == 0 &&
		    engine_run(eng, m, &one, &xr, orow, &cause) == 0 &&
		    close_to("row", orow[0], ob[0] + r * row, row, 1e-6) &&
		    close_to("row.attn", orow[1], ob[1] + r * row, row, 1e-6);
	}
	free(ob[0]); free(ob[1]); free(orow[0]); free(orow[1]);
out:
	if (cause != NULL)
		printf("  %s\n", cause);
	free(cause);
	engine_model_free(eng, m);
	graph_free(g);
	tg_free(t);
	enc_free(&e);
	free(x);
	return ok;
}

static int
test_outputs(void)
{
	/* Outputs: the input itself, an intermediate that is used again, and a repeat. */
	struct tgraph *t = tg_new();
	struct graph_shape is = SHP(2, 5), os[4];
	float *x = rnd(10, 1), *out[4];
	uint32_t r, s;
	int ok;

	tg_input(t, TG_DIMS(5));
	r = tg_relu(t, 0);
	s = tg_add(t, r, 0);
	tg_output(t, 0);
	tg_output(t, r);
	tg_output(t, s);
	tg_output(t, r);
	ok = run_graph(t, &is, &x, out, os);
	if (!ok)
		return 0;
	for (int i = 0; i < 10; i++) {
		float rv = x[i] > 0 ? x[i] : 0;

		ok &= out[0][i] == x[i] && out[1][i] == rv &&
		    out[2][i] == rv + x[i] && out[3][i] == rv;
	}
	for (int j = 0; j < 4; j++)
		free(out[j]);
	free(x);
	return ok;
}

/*
 * Every node an output, so the CPU backend needs no scratch arena: found
 * by fuzz_graph (clang UBSan: NULL + 0 in cpu_run); the input is
 * tests/fuzz/corpus_graph/layer_norm_softmax.
 */
static int
test_no_scratch(void)
{
	struct tgraph *t = tg_new();
	struct graph_shape is = SHP(1, 3, 5), os[2];
	float *x = rnd(15, 3), *out[2];
	uint32_t w, v;
	int ok;

	tg_input(t, TG_DIMS(3, 5));
	w = tg_const_fill(t, TG_DIMS(5), 2.0f);
	v = tg_layer_norm(t, 0, w, TG_NONE, 1e-3f);
	tg_output(t, tg_softmax(t, v, -2));
	tg_output(t, v);
	ok = run_graph(t, &is, &x, out, os);
	if (!ok)
		return 0;
	for (int r = 0; r < 3; r++) {
		double mean = 0, var = 0;

		for (int i = 0; i < 5; i++)
			mean += x[r * 5 + i] / 5.0;
		for (int i = 0; i < 5; i++)
			var += (x[r * 5 + i] - mean) * (x[r * 5 + i] - mean) / 5.0;
		for (int i = 0; i < 5; i++) {
			double want = 2.0 * (x[r * 5 + i] - mean) /
			    sqrt(var + 1e-3);

			ok &= fabs(out[1][r * 5 + i] - want) < 1e-4;
		}
	}
	for (int i = 0; i < 5; i++) {
		double sum = 0;

		for (int r = 0; r < 3; r++)
			sum += out[0][r * 5 + i];
		ok &= fabs(sum - 1.0) < 1e-5;
	}
	free(out[0]);
	free(out[1]);
	free(x);
	return ok;
}

static int
test_run_errors(void)
{
	struct tgraph *t = tg_new();
	struct graph *g = NULL;
	struct engine_model *m = NULL;
	struct graph_shape is = SHP(2, 6);
	float *x = zeros(12), *y = zeros(12);
	char *cause = NULL;
	int ok;

	tg_input(t, TG_DIMS(5));
	tg_output(t, tg_relu(t, 0));
	ok = graph_from_proto(tg_graph(t), NULL, &g, &cause) == 0 &&
	    engine_model_load(eng, g, &m, &cause) == 0;
	ok = ok && engine_run(eng, m, &is, (const float *const *)&x, &y,
	    &cause) == -1 && strstr(cause, "input 0: shape [2, 6]") != NULL;
	free(cause);
	cause = NULL;
	ok = ok && engine_open("nosuch", 0, ENGINE_OWNER_ABORT, &(struct
	    engine *){ NULL }, &cause) == -1 && strstr(cause, "nosuch") != NULL;
	free(cause);
	engine_model_free(eng, m);
	graph_free(g);
	tg_free(t);
	free(x);
	free(y);
	return ok;
}

/* Loads a ReLU on [batch, dims...] (t consumed) with limits lim (or NULL). */
static struct engine_model *
load_relu(const int64_t *dims, int ndim, const struct graph_limits *lim,
    struct graph **g)
{
	struct tgraph *t = tg_new();
	struct engine_model *m = NULL;
	char *cause = NULL;

	tg_output(t, tg_relu(t, tg_input(t, dims, ndim)));
	if (graph_from_proto(tg_graph(t), lim, g, &cause) != 0 ||
	    engine_model_load(eng, *g, &m, &cause) != 0) {
		printf("  %s\n", cause);
		m = NULL;
	}
	free(cause);
	tg_free(t);
	return m;
}

/*
 * engine_model_warm: a pass at each power-of-two batch below the largest
 * and at the largest (1, 2, 4, ..., 32, 40; 64; 1), the model right
 * afterwards; none for a largest batch of 0, nor for an input with an
 * open dimension. A pass that fails (batch 32 over the graph's element
 * limit) stops it with an error naming the batch, the passes before it
 * counted. The cpu backend does not ask for warming (engine_warms).
 */
static int
test_warm(void)
{
	struct graph *g = NULL, *go = NULL, *gl = NULL;
	struct engine_model *m, *mo, *ml;
	struct graph_limits lim;
	struct graph_shape is = SHP(3, 6);
	float x[18], y[18];
	uint32_t passes = 99;
	char *cause = NULL;
	int ok = 1;

	graph_limits_default(&lim);
	lim.max_elements = 6 * 20;
	m = load_relu(TG_DIMS(6), NULL, &g);
	mo = load_relu(TG_DIMS(-1), NULL, &go);
	ml = load_relu(TG_DIMS(6), &lim, &gl);
	if (m == NULL || mo == NULL || ml == NULL)
		ok = 0;
	if (ok && (engine_warms(eng) != 0 ||
	    engine_model_warm(eng, m, 40, &passes, &cause) != 0 ||
	    passes != 7)) {
		printf("  warm to 40: %u passes (%s)\n", passes, cause);
		ok = 0;
	}
	for (int i = 0; i < 18; i++)
		x[i] = (float)(i - 9);
	if (ok && (engine_run(eng, m, &is, (const float *const *)&(float *){
	    x }, (float *const *)&(float *){ y }, &cause) != 0)) {
		printf("  run after warming: %s\n", cause);
		ok = 0;
	}
	for (int i = 0; ok && i < 18; i++)
		if (y[i] != (x[i] > 0 ? x[i] : 0.0f)) {
			printf("  y[%d] = %g after warming\n", i, (double)y[i]);
			ok = 0;
		}
	if (ok && (engine_model_warm(eng, m, 64, &passes, &cause) != 0 ||
	    passes != 7 || engine_model_warm(eng, m, 1, &passes, &cause) !=
	    0 || passes != 1 || engine_model_warm(eng, m, 0, &passes,
	    &cause) != 0 || passes != 0)) {
		printf("  warm to 64, 1, 0: %u passes at the first wrong\n",
		    passes);
		ok = 0;
	}
	if (ok && (engine_model_warm(eng, mo, 64, &passes, &cause) != 0 ||
	    passes != 0)) {
		printf("  an open dimension warmed: %u passes\n", passes);
		ok = 0;
	}
	if (ok && (engine_model_warm(eng, ml, 64, &passes, &cause) != -1 ||
	    passes != 5 || cause == NULL ||
	    strstr(cause, "warm-up pass of batch 32 failed") == NULL)) {
		printf("  over the limit: %u passes, %s\n", passes,
		    cause != NULL ? cause : "no error");
		ok = 0;
	}
	if (cause != NULL)
		printf("  %s\n", cause);
	free(cause);
	engine_model_free(eng, m);
	engine_model_free(eng, mo);
	engine_model_free(eng, ml);
	graph_free(g);
	graph_free(go);
	graph_free(gl);
	return ok;
}

struct foreign_arg {
	struct engine *e;
	struct engine_model *m;
	const struct graph_shape *is;
	float *x, *y;
	int rc;
	char *cause;
};

/* engine_model_output_shapes from a thread that does not own the engine. */
static void *
foreign_shapes(void *p)
{
	struct foreign_arg *a = p;
	struct graph_shape os;

	a->rc = engine_model_output_shapes(a->e, a->m, a->is, &os, &a->cause);
	return NULL;
}

/*
 * engine_model_output_shapes infers once per new input shape and the run
 * reuses it: shapes and results stay right as the batch size goes 4, 7,
 * 4, then a bad shape (refused, naming it), then 2; off the owner thread
 * it is refused and not counted as a backend call.
 */
static int
test_shape_memo(void)
{
	struct tgraph *t = tg_new();
	struct graph *g = NULL;
	struct engine_model *m = NULL;
	const int64_t rows[] = { 4, 7, 4, 0, 2 };
	float *w = rnd(3 * 5, 1), *b = rnd(3, 1), *x = rnd(7 * 5, 1);
	float y[7 * 3], want[7 * 3];
	struct foreign_arg a = { 0 };
	struct graph_shape is, os;
	uint64_t calls;
	uint32_t in, wv;
	char *cause = NULL;
	pthread_t th;
	int ok;

	in = tg_input(t, TG_DIMS(5));
	wv = tg_const(t, TG_DIMS(3, 5), w);
	tg_output(t, tg_linear(t, in, wv, tg_const(t, TG_DIMS(3), b)));
	ok = graph_from_proto(tg_graph(t), NULL, &g, &cause) == 0 &&
	    engine_model_load(eng, g, &m, &cause) == 0;
	for (size_t k = 0; ok && k < sizeof rows / sizeof rows[0]; k++) {
		if (rows[k] == 0) {
			is = SHP(2, 6);
			ok = engine_model_output_shapes(eng, m, &is, &os,
			    &cause) == -1 && cause != NULL &&
			    strstr(cause, "input 0: shape [2, 6]") != NULL;
			free(cause);
			cause = NULL;
			continue;
		}
		is = SHP(rows[k], 5);
		ok = engine_model_output_shapes(eng, m, &is, &os,
		    &cause) == 0 &&
		    os.ndim == 2 && os.dim[0] == rows[k] && os.dim[1] == 3 &&
		    engine_run(eng, m, &is, (const float *const *)&x,
		    (float *const[]){ y }, &cause) == 0;
		ref_linear(x, w, b, want, (size_t)rows[k], 5, 3);
		ok = ok && close_to("y", y, want, (size_t)rows[k] * 3, 1e-5);
		if (!ok)
			printf("  %lld rows: shape [%lld, %lld]\n",
			    (long long)rows[k], (long long)os.dim[0],
			    (long long)os.dim[1]);
	}
	calls = engine_backend_calls(eng);
	a.e = eng;
	a.m = m;
	a.is = &is;
	ok = ok && pthread_create(&th, NULL, foreign_shapes, &a) == 0 &&
	    pthread_join(th, NULL) == 0 && a.rc == -1 && a.cause != NULL &&
	    strstr(a.cause, "off the owner thread") != NULL &&
	    engine_backend_calls(eng) == calls;
	if (cause != NULL)
		printf("  %s\n", cause);
	free(cause);
	free(a.cause);
	engine_model_free(eng, m);
	graph_free(g);
	tg_free(t);
	free(w);
	free(b);
	free(x);
	return ok;
}

/* Calls engine_run from a thread that does not own the engine. */
static void *
foreign_run(void *p)
{
	struct foreign_arg *a = p;

	a->rc = engine_run(a->e, a->m, a->is, (const float *const *)&a->x,
	    &a->y, &a->cause);
	return NULL;
}

static int
test_owner(void)
{
	struct engine *e = NULL;
	struct tgraph *t = tg_new();
	struct graph *g = NULL;
	struct engine_model *m = NULL;
	struct graph_shape is = SHP(2, 4);
	struct foreign_arg a = { 0 };
	float x[8] = { -1, 2, -3, 4, 5, -6, 7, -8 }, y[8] = { 0 };
	float *px = x, *py = y;
	char *cause = NULL;
	uint64_t calls;
	pthread_t th;
	int ok = 0;

	tg_input(t, TG_DIMS(4));
	tg_output(t, tg_relu(t, 0));
	if (engine_open("cpu", 0, ENGINE_OWNER_COUNT, &e, &cause) != 0 ||
	    graph_from_proto(tg_graph(t), NULL, &g, &cause) != 0 ||
	    engine_model_load(e, g, &m, &cause) != 0)
		goto out;
	calls = engine_backend_calls(e);
	if (calls < 2 || engine_foreign_calls(e) != 0 ||
	    engine_run(e, m, &is, (const float *const *)&px, &py, &cause) != 0 ||
	    engine_backend_calls(e) != calls + 1 || y[1] != 2 || y[0] != 0)
		goto out;
	memset(y, 0, sizeof y);
	a = (struct foreign_arg){ e, m, &is, x, y, 0, NULL };
	if (pthread_create(&th, NULL, foreign_run, &a) != 0)
		goto out;
	pthread_join(th, NULL);
	ok = a.rc == -1 && a.cause != NULL &&
	    strstr(a.cause, "off the owner thread") != NULL &&
	    engine_foreign_calls(e) == 1 &&
	    engine_backend_calls(e) == calls + 2 && y[1] == 0;
	if (!ok)
		printf("  rc %d cause %s foreign %llu\n", a.rc,
		    a.cause ? a.cause : "-",
		    (unsigned long long)engine_foreign_calls(e));
out:
	if (cause != NULL)
		printf("  %s\n", cause);
	free(cause);
	free(a.cause);
	engine_model_free(e, m);
	engine_close(e);
	graph_free(g);
	tg_free(t);
	return ok;
}

static int
test_threads(void)
{
	/* engine_set_cpu_threads accepts a count and the default. */
	return engine_set_cpu_threads(1) == 0 && engine_set_cpu_threads(0) == 0 &&
	    engine_set_cpu_threads(1) == 0;
}

static const struct {
	const char *name;
	int (*fn)(void);
} cases[] = {
	{ "linear", test_linear },
	{ "matmul", test_matmul },
	{ "broadcast", test_broadcast },
	{ "unary", test_unary },
	{ "softmax", test_softmax },
	{ "layer_norm", test_layer_norm },
	{ "mha", test_mha },
	{ "encoder", test_encoder },
	{ "batch_rows", test_batch_rows },
	{ "outputs", test_outputs },
	{ "no_scratch", test_no_scratch },
	{ "run_errors", test_run_errors },
	{ "warm", test_warm },
	{ "owner", test_owner },
	{ "shape_memo", test_shape_memo },
	{ "threads", test_threads },
};

int
main(void)
{
	const char *const *names = engine_backends();
	char *cause = NULL;
	int failed = 0;

	if (names[0] == NULL || strcmp(names[0], "cpu") != 0) {
		printf("FAIL backends\n");
		return 1;
	}
	if (engine_open("cpu", 0, ENGINE_OWNER_ABORT, &eng, &cause) != 0) {
		printf("FAIL open: %s\n", cause);
		free(cause);
		return 1;
	}
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int ok = cases[i].fn();

		printf("%s %s\n", ok ? "ok  " : "FAIL", cases[i].name);
		failed += !ok;
	}
	engine_close(eng);
	printf("%d failed\n", failed);
	return failed != 0;
}
