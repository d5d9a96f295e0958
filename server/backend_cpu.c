/*
 * backend_cpu: runs graphs on the host in float32. Matrix products go to
 * OpenBLAS sgemm; everything else is plain C. This is the hot path of the
 * throughput benchmark, so a run allocates nothing once its model's scratch
 * arena has grown to the largest batch seen, and graph outputs are written
 * straight into the caller's buffers.
 */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "engine.h"
#include "envset.h"

#define CPU_ALIGN_FLOATS 16 /* 64-byte alignment of every arena slice */

/*
 * Fault injection for tests of the daemon's error paths:
 * AGXQ_CPU_FAULT_EVERY=N makes every Nth run fail with "injected fault";
 * with AGXQ_CPU_FAULT_KIND=lost the backend also reports itself unhealthy
 * until it is closed and reopened. AGXQ_CPU_FAULT_KIND=sticky is `lost`
 * plus what a sticky GPU fault does to the CUDA driver: once it has fired,
 * every later open in this process fails, so only a new process (a new
 * agxqd worker) gets a working device again. AGXQ_CPU_FAULT_KIND=hang
 * makes the Nth run never return, as a GPU kernel that never ends keeps
 * its stream: only the end of the process (agxqd's --stall-ms) ends it.
 */
enum cpu_fault_kind {
	CPU_FAULT_ERROR,	/* the run fails, the device stays healthy */
	CPU_FAULT_LOST,		/* unhealthy until closed and reopened */
	CPU_FAULT_STICKY,	/* lost, and no reopen in this process */
	CPU_FAULT_HANG		/* the run never returns */
};

struct cpu_state {
	int device;
	unsigned long fault_every;
	unsigned long runs;
	enum cpu_fault_kind fault_kind;
	int lost;
};

/*
 * Set by an injected sticky fault, read by every later cpu_open: it stands
 * for the driver's per-process state, so it is process-global by design
 * (the only such flag in the backend; runs and opens may be on different
 * threads, hence atomic).
 */
static atomic_int cpu_sticky_fault;

struct cpu_model {
	const struct graph *g;
	int32_t *out_of;   /* nvalues: first graph output listing the value, or -1 */
	float **val;       /* nvalues: where each value lives during a run */
	float *arena;      /* intermediates and attention scratch */
	size_t arena_cap;  /* in floats */
};

/* Rounds n floats up to the arena alignment. */
static size_t
cpu_round(size_t n)
{
	return (n + CPU_ALIGN_FLOATS - 1) / CPU_ALIGN_FLOATS * CPU_ALIGN_FLOATS;
}

/* Opens the CPU "device" (there is one; any device number is accepted). */
static int
cpu_open(int device, void **state, char **cause)
{
	/* In the order of enum cpu_fault_kind. */
	static const char *const kinds[] = { "error", "lost", "sticky", "hang",
	    NULL };
	struct cpu_state *s;

	if (atomic_load(&cpu_sticky_fault)) {
		if (cause != NULL)
			*cause = strdup("injected fault: the device cannot be "
			    "reopened in this process");
		return -1;
	}
	if ((s = calloc(1, sizeof *s)) == NULL) {
		if (cause != NULL)
			*cause = strdup("out of memory");
		return -1;
	}
	s->device = device;
	s->fault_every = envset_ulong("AGXQ_CPU_FAULT_EVERY", 0, 0, ULONG_MAX);
	s->fault_kind = envset_choice("AGXQ_CPU_FAULT_KIND", CPU_FAULT_ERROR,
	    kinds);
	*state = s;
	return 0;
}

/* 0 after an injected "lost" or "sticky" fault, until reopened. */
static int
cpu_healthy(void *state)
{
	return !((struct cpu_state *)state)->lost;
}

/* Releases the backend state; accepts NULL. */
static void
cpu_close(void *state)
{
	free(state);
}

/* Prepares graph g: constants are used in place, so only tables are made. */
static int
cpu_model_load(void *state, const struct graph *g, void **bmodel, char **cause)
{
	struct cpu_model *m;
	uint32_t i;

	(void)state;
	if ((m = calloc(1, sizeof *m)) == NULL)
		goto fail_nomem;
	m->g = g;
	m->out_of = malloc(g->nvalues * sizeof *m->out_of);
	m->val = calloc(g->nvalues, sizeof *m->val);
	if (m->out_of == NULL || m->val == NULL)
		goto fail_free_model;
	for (i = 0; i < g->nvalues; i++)
		m->out_of[i] = -1;
	for (i = 0; i < g->noutputs; i++) {
		if (m->out_of[g->outputs[i]] == -1)
			m->out_of[g->outputs[i]] = (int32_t)i;
	}
	*bmodel = m;
	return 0;

fail_free_model:
	free(m->val);
	free(m->out_of);
	free(m);
fail_nomem:
	if (cause != NULL)
		*cause = strdup("out of memory");
	return -1;
}

/* Frees a backend model; accepts NULL. */
static void
cpu_model_free(void *state, void *bmodel)
{
	struct cpu_model *m = bmodel;

	(void)state;
	if (m == NULL)
		return;
	free(m->arena);
	free(m->val);
	free(m->out_of);
	free(m);
}

/* y = x W^T (+ b): x is [rows, in], W [out, in]. */
static void
cpu_linear(const float *x, const float *w, const float *b, float *y,
    size_t rows, size_t in, size_t out)
{
	float beta = 0.0f;

	if (b != NULL) {
		for (size_t r = 0; r < rows; r++)
			memcpy(y + r * out, b, out * sizeof *y);
		beta = 1.0f;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows,
	    (int)out, (int)in, 1.0f, x, (int)in, w, (int)in, beta, y, (int)out);
}

/* Matrix product a[..., m, k] @ b[k, n] or b[..., k, n]. */
static void
cpu_matmul(const float *a, const float *b, float *y,
    const struct graph_shape *sa, const struct graph_shape *sb)
{
	size_t k = (size_t)sa->dim[sa->ndim - 1];
	size_t n = (size_t)sb->dim[sb->ndim - 1];
	size_t m = (size_t)sa->dim[sa->ndim - 2], nb = 1;

	if (sb->ndim == 2) {
		size_t rows = graph_shape_nelem(sa) / k;

		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows,
		    (int)n, (int)k, 1.0f, a, (int)k, b, (int)n, 0.0f, y, (int)n);
		return;
	}
	for (int d = 0; d < sa->ndim - 2; d++)
		nb *= (size_t)sa->dim[d];
	for (size_t i = 0; i < nb; i++) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m,
		    (int)n, (int)k, 1.0f, a + i * m * k, (int)k, b + i * k * n,
		    (int)n, 0.0f, y + i * m * n, (int)n);
	}
}

/*
 * Elementwise add or mul with broadcasting. Dims are right-aligned, given
 * element strides (0 where broadcast), and adjacent dims that walk both
 * operands contiguously are merged, so the common cases become one flat
 * loop or a [rows, cols] loop with one operand repeated.
 */
static void
cpu_binary(int mul, const float *a, const float *b, float *y,
    const struct graph_shape *sa, const struct graph_shape *sb,
    const struct graph_shape *so)
{
	int64_t od[GRAPH_MAX_DIMS], as[GRAPH_MAX_DIMS], bs[GRAPH_MAX_DIMS];
	int64_t idx[GRAPH_MAX_DIMS], ast = 1, bst = 1;
	size_t ia, ib, inner, total, done;
	int r = so->ndim, nd = 0, k;

	/* Strides of a and b per output dim, innermost first. */
	for (k = r - 1; k >= 0; k--) {
		int ka = k - (r - sa->ndim), kb = k - (r - sb->ndim);
		int64_t da = ka >= 0 ? sa->dim[ka] : 1;
		int64_t db = kb >= 0 ? sb->dim[kb] : 1;
		int64_t sta = da == 1 ? 0 : ast, stb = db == 1 ? 0 : bst;

		ast *= da;
		bst *= db;
		if (so->dim[k] == 1)
			continue;
		if (nd > 0 && as[nd - 1] * od[nd - 1] == sta &&
		    bs[nd - 1] * od[nd - 1] == stb) {
			od[nd - 1] *= so->dim[k];
			continue;
		}
		od[nd] = so->dim[k];
		as[nd] = sta;
		bs[nd] = stb;
		nd++;
	}
	total = graph_shape_nelem(so);
	if (nd == 0) {
		y[0] = mul ? a[0] * b[0] : a[0] + b[0];
		return;
	}
	inner = (size_t)od[0];
	memset(idx, 0, sizeof idx);
	ia = ib = 0;
	for (done = 0; done < total; done += inner) {
		const float *pa = a + ia, *pb = b + ib;
		float *py = y + done;
		size_t i;

		if (as[0] == 1 && bs[0] == 1) {
			if (mul)
				for (i = 0; i < inner; i++)
					py[i] = pa[i] * pb[i];
			else
				for (i = 0; i < inner; i++)
					py[i] = pa[i] + pb[i];
		} else if (as[0] == 1) {
			if (mul)
				for (i = 0; i < inner; i++)
					py[i] = pa[i] * pb[0];
			else
				for (i = 0; i < inner; i++)
					py[i] = pa[i] + pb[0];
		} else {
			for (i = 0; i < inner; i++) {
				float va = pa[i * (size_t)as[0]];

				py[i] = mul ? va * pb[i * (size_t)bs[0]] :
				    va + pb[i * (size_t)bs[0]];
			}
		}
		/* Advance the odometer over the outer dims. */
		for (k = 1; k < nd; k++) {
			idx[k]++;
			ia += (size_t)as[k];
			ib += (size_t)bs[k];
			if (idx[k] < od[k])
				break;
			ia -= (size_t)(as[k] * od[k]);
			ib -= (size_t)(bs[k] * od[k]);
			idx[k] = 0;
		}
	}
}

/* Softmax over n contiguous floats, x to y (may be the same buffer). */
static void
cpu_softmax_row(const float *x, float *y, size_t n)
{
	float mx = x[0];
	double sum = 0;
	float inv;

	for (size_t i = 1; i < n; i++)
		if (x[i] > mx)
			mx = x[i];
	for (size_t i = 0; i < n; i++) {
		y[i] = expf(x[i] - mx);
		sum += y[i];
	}
	inv = (float)(1.0 / sum);
	for (size_t i = 0; i < n; i++)
		y[i] *= inv;
}

/* Softmax of x over `axis`. */
static void
cpu_softmax(const float *x, float *y, const struct graph_shape *s, int axis)
{
	size_t outer = 1, inner = 1, n = (size_t)s->dim[axis];

	for (int k = 0; k < axis; k++)
		outer *= (size_t)s->dim[k];
	for (int k = axis + 1; k < s->ndim; k++)
		inner *= (size_t)s->dim[k];
	for (size_t o = 0; o < outer; o++) {
		const float *px = x + o * n * inner;
		float *py = y + o * n * inner;

		if (inner == 1) {
			cpu_softmax_row(px, py, n);
			continue;
		}
		for (size_t j = 0; j < inner; j++) {
			float mx = px[j], inv;
			double sum = 0;

			for (size_t i = 1; i < n; i++)
				if (px[i * inner + j] > mx)
					mx = px[i * inner + j];
			for (size_t i = 0; i < n; i++) {
				py[i * inner + j] = expf(px[i * inner + j] - mx);
				sum += py[i * inner + j];
			}
			inv = (float)(1.0 / sum);
			for (size_t i = 0; i < n; i++)
				py[i * inner + j] *= inv;
		}
	}
}

/* Layer norm over the last dim (biased variance, like PyTorch). */
static void
cpu_layer_norm(const float *x, const float *w, const float *b, float *y,
    size_t rows, size_t n, float eps)
{
	for (size_t r = 0; r < rows; r++) {
		const float *px = x + r * n;
		float *py = y + r * n;
		double mean = 0, var = 0;
		float fm, inv;

		for (size_t i = 0; i < n; i++)
			mean += px[i];
		mean /= (double)n;
		for (size_t i = 0; i < n; i++) {
			double d = px[i] - mean;

			var += d * d;
		}
		var /= (double)n;
		fm = (float)mean;
		inv = (float)(1.0 / sqrt(var + (double)eps));
		for (size_t i = 0; i < n; i++) {
			float v = (px[i] - fm) * inv;

			if (w != NULL)
				v *= w[i];
			if (b != NULL)
				v += b[i];
			py[i] = v;
		}
	}
}

/* Floats of scratch an mha node needs for input shape s. */
static size_t
cpu_mha_scratch(const struct graph_shape *s)
{
	size_t bsz = (size_t)s->dim[0], seq = (size_t)s->dim[1];
	size_t d = (size_t)s->dim[2];

	return cpu_round(3 * bsz * seq * d) + cpu_round(bsz * seq * d) +
	    cpu_round(seq * seq);
}

/*
 * Self-attention as nn.MultiheadAttention(batch_first=True) in eval mode:
 * qkv = x in_w^T + in_b; per batch and head, scores = q k^T / sqrt(hd)
 * (upper triangle -inf when causal), softmax, context = scores v; then
 * y = context out_w^T + out_b. q, k and v are read in place from qkv with
 * leading dimension 3d, and each head's context is written in place.
 */
static void
cpu_mha(const struct graph_node *n, const float *const *in,
    const struct graph_shape *s, float *y, float *scratch)
{
	size_t bsz = (size_t)s->dim[0], seq = (size_t)s->dim[1];
	size_t d = (size_t)s->dim[2], hd = d / (size_t)n->heads;
	float *qkv = scratch, *ctx = qkv + cpu_round(3 * bsz * seq * d);
	float *sc = ctx + cpu_round(bsz * seq * d);
	float scale = (float)(1.0 / sqrt((double)hd));

	cpu_linear(in[0], in[1], in[2], qkv, bsz * seq, d, 3 * d);
	for (size_t bi = 0; bi < bsz; bi++) {
		const float *base = qkv + bi * seq * 3 * d;

		for (size_t h = 0; h < (size_t)n->heads; h++) {
			const float *q = base + h * hd, *k = base + d + h * hd;
			const float *v = base + 2 * d + h * hd;

			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans,
			    (int)seq, (int)seq, (int)hd, scale, q, (int)(3 * d),
			    k, (int)(3 * d), 0.0f, sc, (int)seq);
			for (size_t i = 0; i < seq; i++) {
				float *row = sc + i * seq;

				/* Causal: row i sees keys 0..i; the rest weigh 0. */
				if (n->causal) {
					cpu_softmax_row(row, row, i + 1);
					memset(row + i + 1, 0,
					    (seq - i - 1) * sizeof *row);
				} else
					cpu_softmax_row(row, row, seq);
			}
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
			    (int)seq, (int)hd, (int)seq, 1.0f, sc, (int)seq,
			    v, (int)(3 * d), 0.0f, ctx + bi * seq * d + h * hd,
			    (int)d);
		}
	}
	cpu_linear(ctx, in[3], in[4], y, bsz * seq, d, d);
}

/* Makes sure the model's arena holds n floats; keeps it when large enough. */
static int
cpu_arena(struct cpu_model *m, size_t n, char **cause)
{
	float *p;

	if (n <= m->arena_cap)
		return 0;
	if (n > SIZE_MAX / sizeof(float) - CPU_ALIGN_FLOATS)
		goto fail_nomem;
	n = cpu_round(n + n / 4);
	p = aligned_alloc(CPU_ALIGN_FLOATS * sizeof(float), n * sizeof(float));
	if (p == NULL)
		goto fail_nomem;
	free(m->arena);
	m->arena = p;
	m->arena_cap = n;
	return 0;

fail_nomem:
	if (cause != NULL)
		*cause = strdup("out of memory for CPU scratch");
	return -1;
}

/* Runs one node; inputs and output already placed in m->val. */
static void
cpu_node(struct cpu_model *m, const struct graph_node *n,
    const struct graph_shape *shapes, float *scratch)
{
	const float *in[GRAPH_MAX_NODE_INPUTS];
	const struct graph_shape *sx = &shapes[n->in[0]];
	const struct graph_shape *so = &shapes[n->out];
	float *y = m->val[n->out];
	size_t cnt = graph_shape_nelem(so), last, i;

	for (int k = 0; k < n->nin; k++)
		in[k] = m->val[n->in[k]];
	last = (size_t)sx->dim[sx->ndim - 1];
	switch (n->op) {
	case GRAPH_OP_LINEAR:
		cpu_linear(in[0], in[1], n->has_bias ? in[2] : NULL, y,
		    graph_shape_nelem(sx) / last, last,
		    (size_t)so->dim[so->ndim - 1]);
		break;
	case GRAPH_OP_MATMUL:
		cpu_matmul(in[0], in[1], y, sx, &shapes[n->in[1]]);
		break;
	case GRAPH_OP_ADD:
	case GRAPH_OP_MUL:
		cpu_binary(n->op == GRAPH_OP_MUL, in[0], in[1], y, sx,
		    &shapes[n->in[1]], so);
		break;
	case GRAPH_OP_RELU:
		for (i = 0; i < cnt; i++)
			y[i] = in[0][i] > 0.0f ? in[0][i] : 0.0f;
		break;
	case GRAPH_OP_GELU:
		if (n->gelu_tanh) {
			const float c = 0.7978845608028654f; /* sqrt(2/pi) */

			for (i = 0; i < cnt; i++) {
				float v = in[0][i];

				y[i] = 0.5f * v * (1.0f + tanhf(c * (v +
				    0.044715f * v * v * v)));
			}
		} else {
			for (i = 0; i < cnt; i++)
				y[i] = 0.5f * in[0][i] * (1.0f +
				    erff(in[0][i] * 0.70710678118654752f));
		}
		break;
	case GRAPH_OP_SILU:
		for (i = 0; i < cnt; i++)
			y[i] = in[0][i] / (1.0f + expf(-in[0][i]));
		break;
	case GRAPH_OP_SOFTMAX:
		cpu_softmax(in[0], y, sx, n->axis);
		break;
	case GRAPH_OP_LAYER_NORM:
		cpu_layer_norm(in[0], n->has_weight ? in[1] : NULL,
		    n->has_bias ? in[n->has_weight ? 2 : 1] : NULL, y,
		    cnt / last, last, n->eps);
		break;
	case GRAPH_OP_MHA:
		cpu_mha(n, in, sx, y, scratch);
		break;
	}
}

/* Runs the model once; outputs are written into out[] directly. */
static int
cpu_run(void *state, void *bmodel, const struct graph_shape *shapes,
    const float *const *in, float *const *out, char **cause)
{
	struct cpu_model *m = bmodel;
	const struct graph *g = m->g;
	size_t need = 0, scratch = 0, off = 0;
	struct cpu_state *s = state;
	uint32_t i;

	if (s->lost || (s->fault_every != 0 &&
	    ++s->runs % s->fault_every == 0)) {
		while (s->fault_kind == CPU_FAULT_HANG)
			pause();
		if (s->fault_kind != CPU_FAULT_ERROR)
			s->lost = 1;
		if (s->fault_kind == CPU_FAULT_STICKY)
			atomic_store(&cpu_sticky_fault, 1);
		if (cause != NULL)
			*cause = strdup(s->lost ? "injected fault: device lost" :
			    "injected fault");
		return -1;
	}
	for (i = 0; i < g->nnodes; i++) {
		const struct graph_node *n = &g->nodes[i];

		if (m->out_of[n->out] < 0)
			need += cpu_round(graph_shape_nelem(&shapes[n->out]));
		if (n->op == GRAPH_OP_MHA) {
			size_t sz = cpu_mha_scratch(&shapes[n->in[0]]);

			if (sz > scratch)
				scratch = sz;
		}
	}
	/* One float more, so the arena is never NULL (NULL + 0 is undefined). */
	if (cpu_arena(m, need + scratch + 1, cause) != 0)
		return -1;

	for (i = 0; i < g->ninputs; i++)
		m->val[i] = (float *)(uintptr_t)in[i];
	for (i = g->ninputs; i < g->ninputs + g->nconsts; i++)
		m->val[i] = (float *)(uintptr_t)g->values[i].data;
	for (i = 0; i < g->nnodes; i++) {
		uint32_t v = g->nodes[i].out;

		if (m->out_of[v] >= 0) {
			m->val[v] = out[m->out_of[v]];
		} else {
			m->val[v] = m->arena + off;
			off += cpu_round(graph_shape_nelem(&shapes[v]));
		}
	}
	for (i = 0; i < g->nnodes; i++)
		cpu_node(m, &g->nodes[i], shapes, m->arena + need);

	/* Outputs that are inputs, or listed twice, still need a copy. */
	for (i = 0; i < g->noutputs; i++) {
		uint32_t v = g->outputs[i];

		if (m->val[v] != out[i])
			memcpy(out[i], m->val[v],
			    graph_shape_nelem(&shapes[v]) * sizeof(float));
	}
	return 0;
}

/* Sets OpenBLAS's thread count; n <= 0 restores the default. */
int
engine_set_cpu_threads(int n)
{
	const char *env;

	if (n <= 0) {
		if ((env = getenv("OPENBLAS_NUM_THREADS")) == NULL)
			env = getenv("OMP_NUM_THREADS");
		n = env != NULL ? atoi(env) : 0;
		if (n <= 0)
			n = openblas_get_num_procs();
	}
	openblas_set_num_threads(n);
	return 0;
}

const struct backend_ops backend_cpu_ops = {
	.name = "cpu",
	.env_prefix = "AGXQ_CPU_",
	.open = cpu_open,
	.close = cpu_close,
	.model_load = cpu_model_load,
	.model_free = cpu_model_free,
	.run = cpu_run,
	.healthy = cpu_healthy,
};
