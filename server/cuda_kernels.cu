/*
 * cuda_kernels: elementwise, broadcasting, softmax, layer norm and attention
 * reshaping kernels for the cuda backend, a fused attention for short
 * sequences and a fused residual add + layer norm. Plain FP32 arithmetic that
 * follows PyTorch's definitions of each op; row reductions use one warp per
 * row.
 */
#include <math.h>
#include <stdint.h>

#include "cuda_kernels.h"

#define CUK_THREADS 256
#define CUK_ROWS_PER_BLOCK 4 /* warps per block in the row kernels */
#define CUK_MAX_BLOCKS 65535

#define CUK_ATTN_WARPS 8	/* warps per attention block */
#define CUK_ATTN_ROWS 8		/* query rows per attention block: one a warp */
#define CUK_ATTN_MAX_L 64	/* keys per query: two per lane */
#define CUK_ATTN_MAX_HD 128	/* head size: one float4 per lane */
#define CUK_ATTN_SMEM (48 * 1024) /* default shared memory per block */
#define CUK_ATTN_MAX_GRID (1 << 30) /* heads in one grid before striding */

/* Blocks for a grid-stride loop over n elements. */
static unsigned int
cuk_blocks(int64_t n)
{
	int64_t b = (n + CUK_THREADS - 1) / CUK_THREADS;

	if (b < 1)
		b = 1;
	if (b > CUK_MAX_BLOCKS * 16)
		b = CUK_MAX_BLOCKS * 16;
	return (unsigned int)b;
}

/* Sum of v across the warp, result in every lane. */
static __device__ __forceinline__ float
cuk_warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* Maximum of v across the warp, result in every lane. */
static __device__ __forceinline__ float
cuk_warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* Applies one unary op to x. */
static __device__ __forceinline__ float
cuk_apply_unary(int op, float x)
{
	switch (op) {
	case CUK_RELU:
		return x > 0.0f ? x : 0.0f;
	case CUK_GELU_ERF:
		return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
	case CUK_GELU_TANH: {
		float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
		return 0.5f * x * (1.0f + tanhf(inner));
	}
	case CUK_SILU:
		return x / (1.0f + expf(-x));
	}
	return x;
}

/* Elementwise unary op. */
static __global__ void
cuk_unary_kernel(int op, float *out, const float *in, int64_t n)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	int64_t step = (int64_t)gridDim.x * blockDim.x;

	for (; i < n; i += step)
		out[i] = cuk_apply_unary(op, in[i]);
}

/* Binary op on operands of the output's shape. */
static __global__ void
cuk_binary_same_kernel(int op, float *out, const float *a, const float *b,
    int64_t n)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	int64_t step = (int64_t)gridDim.x * blockDim.x;

	for (; i < n; i += step)
		out[i] = op == CUK_ADD ? a[i] + b[i] : a[i] * b[i];
}

/* Binary op with general broadcasting. */
static __global__ void
cuk_binary_bcast_kernel(int op, float *out, const float *a, const float *b,
    struct cuk_bcast bc, int64_t n)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	int64_t step = (int64_t)gridDim.x * blockDim.x;

	for (; i < n; i += step) {
		int64_t rem = i, ia = 0, ib = 0;

		for (int d = bc.ndim - 1; d >= 0; d--) {
			int64_t c = rem % bc.dim[d];

			rem /= bc.dim[d];
			ia += c * bc.a_stride[d];
			ib += c * bc.b_stride[d];
		}
		out[i] = op == CUK_ADD ? a[ia] + b[ib] : a[ia] * b[ib];
	}
}

/* y[r, c] += bias[c]. */
static __global__ void
cuk_bias_add_kernel(float *y, const float *bias, int64_t n, int64_t cols)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	int64_t step = (int64_t)gridDim.x * blockDim.x;

	for (; i < n; i += step)
		y[i] += bias[i % cols];
}

/* Softmax along the last axis, one warp per row. */
static __global__ void
cuk_softmax_last_kernel(float *out, const float *in, int64_t rows, int64_t n)
{
	int64_t row = (int64_t)blockIdx.x * CUK_ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	const float *x;
	float *y, m = -INFINITY, sum = 0.0f, inv;

	if (row >= rows)
		return;
	x = in + row * n;
	y = out + row * n;
	for (int64_t j = lane; j < n; j += 32)
		m = fmaxf(m, x[j]);
	m = cuk_warp_max(m);
	for (int64_t j = lane; j < n; j += 32)
		sum += expf(x[j] - m);
	sum = cuk_warp_sum(sum);
	inv = 1.0f / sum;
	for (int64_t j = lane; j < n; j += 32)
		y[j] = expf(x[j] - m) * inv;
}

/* Softmax along a middle axis: one thread per (outer, inner) pair. */
static __global__ void
cuk_softmax_mid_kernel(float *out, const float *in, int64_t outer, int64_t n,
    int64_t inner)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	int64_t step = (int64_t)gridDim.x * blockDim.x;

	for (; i < outer * inner; i += step) {
		int64_t o = i / inner, k = i % inner;
		const float *x = in + o * n * inner + k;
		float *y = out + o * n * inner + k;
		float m = -INFINITY, sum = 0.0f, inv;

		for (int64_t j = 0; j < n; j++)
			m = fmaxf(m, x[j * inner]);
		for (int64_t j = 0; j < n; j++)
			sum += expf(x[j * inner] - m);
		inv = 1.0f / sum;
		for (int64_t j = 0; j < n; j++)
			y[j * inner] = expf(x[j * inner] - m) * inv;
	}
}

/* In-place attention softmax with an optional causal mask, one warp per row. */
static __global__ void
cuk_attn_softmax_kernel(float *x, int64_t rows, int64_t n, int causal)
{
	int64_t row = (int64_t)blockIdx.x * CUK_ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	int64_t last;
	float *p, m = -INFINITY, sum = 0.0f, inv;

	if (row >= rows)
		return;
	p = x + row * n;
	last = causal ? row % n : n - 1; /* last key this query sees */
	for (int64_t j = lane; j <= last; j += 32)
		m = fmaxf(m, p[j]);
	m = cuk_warp_max(m);
	for (int64_t j = lane; j <= last; j += 32)
		sum += expf(p[j] - m);
	sum = cuk_warp_sum(sum);
	inv = 1.0f / sum;
	for (int64_t j = lane; j < n; j += 32)
		p[j] = j <= last ? expf(p[j] - m) * inv : 0.0f;
}

/* Element j of the row: in[j], plus in2[j] when there is a second input. */
static __device__ __forceinline__ float
cuk_ln_in(const float *in, const float *in2, int64_t j)
{
	return in2 != NULL ? in[j] + in2[j] : in[j];
}

/*
 * Layer norm over the last axis of in (+ in2, when not NULL: a residual
 * add), one warp per row, two passes; the sum is recomputed on each.
 */
static __global__ void
cuk_layer_norm_kernel(float *out, const float *in, const float *in2,
    const float *w, const float *b, int64_t rows, int64_t cols, float eps)
{
	int64_t row = (int64_t)blockIdx.x * CUK_ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	float *y, sum = 0.0f, mean, var = 0.0f, rstd;

	if (row >= rows)
		return;
	in += row * cols;
	if (in2 != NULL)
		in2 += row * cols;
	y = out + row * cols;
	for (int64_t j = lane; j < cols; j += 32)
		sum += cuk_ln_in(in, in2, j);
	mean = cuk_warp_sum(sum) / (float)cols;
	for (int64_t j = lane; j < cols; j += 32) {
		float d = cuk_ln_in(in, in2, j) - mean;

		var += d * d;
	}
	var = cuk_warp_sum(var) / (float)cols;
	rstd = rsqrtf(var + eps);
	for (int64_t j = lane; j < cols; j += 32) {
		float v = (cuk_ln_in(in, in2, j) - mean) * rstd;

		if (w != NULL)
			v *= w[j];
		if (b != NULL)
			v += b[j];
		y[j] = v;
	}
}

/* qkv [B, L, 3, H, hd] -> qkvh [3, B, H, L, hd]. */
static __global__ void
cuk_mha_split_kernel(float *qkvh, const float *qkv, int64_t B, int64_t L,
    int64_t H, int64_t hd)
{
	int64_t n = 3 * B * L * H * hd;
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	int64_t step = (int64_t)gridDim.x * blockDim.x;

	for (; i < n; i += step) {
		/* i indexes the source: b, l, t, h, c */
		int64_t c = i % hd, r = i / hd;
		int64_t h = r % H;
		int64_t t, l, bb;

		r /= H;
		t = r % 3;
		r /= 3;
		l = r % L;
		bb = r / L;
		qkvh[(((t * B + bb) * H + h) * L + l) * hd + c] = qkv[i];
	}
}

/* o [B, H, L, hd] -> out [B, L, H, hd]. */
static __global__ void
cuk_mha_merge_kernel(float *out, const float *o, int64_t B, int64_t L,
    int64_t H, int64_t hd)
{
	int64_t n = B * L * H * hd;
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	int64_t step = (int64_t)gridDim.x * blockDim.x;

	for (; i < n; i += step) {
		/* i indexes the destination: b, l, h, c */
		int64_t c = i % hd, r = i / hd;
		int64_t h = r % H, l, bb;

		r /= H;
		l = r % L;
		bb = r / L;
		out[i] = o[((bb * H + h) * L + l) * hd + c];
	}
}

/*
 * K's row stride in shared memory, in floats: hd padded to an odd number of
 * float4s, so that the lanes of a quarter warp, each reading its own key's
 * row, hit different banks.
 */
static __host__ __device__ __forceinline__ int64_t
cuk_attn_kstride(int64_t hd)
{
	return (hd / 4) % 2 == 0 ? hd + 4 : hd;
}

/*
 * Bytes of shared memory of an attention block: K, V beside it when split
 * (else V is loaded over K once the scores are done), the block's query rows
 * and their probabilities.
 */
static size_t
cuk_attn_smem(int64_t L, int64_t hd, int split)
{
	int64_t rows = L < CUK_ATTN_ROWS ? L : CUK_ATTN_ROWS;
	int64_t n = L * cuk_attn_kstride(hd) + (split ? L * hd : 0) +
	    rows * hd + rows * L;

	return (size_t)n * sizeof(float);
}

/* Loads four floats of read-only data (16-byte aligned). */
static __device__ __forceinline__ float4
cuk_ld4(const float *p)
{
	return __ldg((const float4 *)p);
}

/* Dot product of n4 float4s of q and k, in four partial sums. */
static __device__ __forceinline__ float
cuk_dot4(const float4 *q, const float4 *k, int n4)
{
	float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);

#pragma unroll 4
	for (int c = 0; c < n4; c++) {
		float4 x = q[c], y = k[c];

		acc.x = fmaf(x.x, y.x, acc.x);
		acc.y = fmaf(x.y, y.y, acc.y);
		acc.z = fmaf(x.z, y.z, acc.z);
		acc.w = fmaf(x.w, y.w, acc.w);
	}
	return (acc.x + acc.y) + (acc.z + acc.w);
}

/*
 * Fused attention. Block (x, y) serves heads bh = x, x + gridDim.x, ... and
 * query rows [y * CUK_ATTN_ROWS, + CUK_ATTN_ROWS); warp w takes rows w, w +
 * CUK_ATTN_WARPS, ... of those. The head's K (and V) rows the block needs and
 * its query rows are staged in shared memory, all loads issued before one
 * wait (the kernel is bound by their latency, not by its arithmetic).
 * Scores: lane j takes keys j and j + 32, then the row's softmax is two warp
 * reductions. P V: lanes form groups of gw (a power of two >= hd / 4) owning
 * one float4 column each; group g sums keys g, g + 32 / gw, ..., and the
 * groups are added with shuffles.
 */
static __global__ void __launch_bounds__(32 * CUK_ATTN_WARPS)
cuk_attention_kernel(float *out, const float *qkv, int64_t BH, int L,
    int64_t H, int hd, float scale, int causal, int split)
{
	extern __shared__ float4 cuk_attn_sm[];
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	const int hd4 = hd / 4, ks4 = (int)cuk_attn_kstride(hd) / 4;
	const int row0 = blockIdx.y * CUK_ATTN_ROWS;
	const int nrows = min(CUK_ATTN_ROWS, L - row0);
	const int nk = causal ? row0 + nrows : L; /* keys the rows see */
	const int64_t ld = 3 * H * hd; /* qkv row length */
	float4 *ksh = cuk_attn_sm;
	float4 *vsh = split ? ksh + L * ks4 : ksh;
	float4 *qall = split ? vsh + L * hd4 : ksh + L * ks4;
	float *psh = (float *)(qall + nrows * hd4);
	int gw = 1;

	while (gw < hd4)
		gw <<= 1;
	for (int64_t bh = blockIdx.x; bh < BH; bh += gridDim.x) {
		const int64_t b = bh / H, h = bh % H;
		const float *base = qkv + b * L * ld + h * hd;
		const int ng = 32 / gw, grp = lane / gw, c4 = lane % gw;

		__syncthreads(); /* the previous head is done with it */
#pragma unroll 4
		for (int idx = threadIdx.x; idx < nk * hd4; idx += blockDim.x) {
			int j = idx / hd4, c = idx % hd4;
			const float *row = base + j * ld + 4 * c;

			ksh[j * ks4 + c] = cuk_ld4(row + H * hd);
			if (split)
				vsh[j * hd4 + c] = cuk_ld4(row + 2 * H * hd);
		}
		for (int idx = threadIdx.x; idx < nrows * hd4;
		    idx += blockDim.x) {
			int r = idx / hd4, c = idx % hd4;

			qall[idx] = cuk_ld4(base + (row0 + r) * ld + 4 * c);
		}
		__syncthreads();

		/* P = softmax(scale * Q K^T) for the block's rows. */
		for (int r = warp; r < nrows; r += CUK_ATTN_WARPS) {
			const int i = row0 + r, last = causal ? i : L - 1;
			const float4 *qsh = qall + r * hd4;
			float s0 = -INFINITY, s1 = -INFINITY, m, inv;
			float e0 = 0.0f, e1 = 0.0f;

			if (lane <= last)
				s0 = scale * cuk_dot4(qsh, ksh + lane * ks4,
				    hd4);
			if (lane + 32 <= last)
				s1 = scale * cuk_dot4(qsh,
				    ksh + (lane + 32) * ks4, hd4);
			m = cuk_warp_max(fmaxf(s0, s1));
			if (lane <= last)
				e0 = expf(s0 - m);
			if (lane + 32 <= last)
				e1 = expf(s1 - m);
			inv = 1.0f / cuk_warp_sum(e0 + e1);
			if (lane < L)
				psh[r * L + lane] = e0 * inv;
			if (lane + 32 < L)
				psh[r * L + lane + 32] = e1 * inv;
			__syncwarp(); /* the warp's lanes read psh below */
		}

		if (!split) {
			__syncthreads(); /* every warp is done with K */
#pragma unroll 4
			for (int idx = threadIdx.x; idx < nk * hd4;
			    idx += blockDim.x) {
				int j = idx / hd4, c = idx % hd4;

				vsh[j * hd4 + c] = cuk_ld4(base + j * ld +
				    2 * H * hd + 4 * c);
			}
			__syncthreads();
		}

		/* O = P V, the row written as [B, L, H, hd]. */
		for (int r = warp; r < nrows; r += CUK_ATTN_WARPS) {
			const int i = row0 + r, last = causal ? i : L - 1;
			const float *p = psh + r * L;
			float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);

			if (c4 < hd4) {
				for (int j = grp; j <= last; j += ng) {
					float pj = p[j];
					float4 v = vsh[j * hd4 + c4];

					acc.x = fmaf(pj, v.x, acc.x);
					acc.y = fmaf(pj, v.y, acc.y);
					acc.z = fmaf(pj, v.z, acc.z);
					acc.w = fmaf(pj, v.w, acc.w);
				}
			}
			for (int o = gw; o < 32; o <<= 1) {
				acc.x += __shfl_xor_sync(0xffffffffu, acc.x, o);
				acc.y += __shfl_xor_sync(0xffffffffu, acc.y, o);
				acc.z += __shfl_xor_sync(0xffffffffu, acc.z, o);
				acc.w += __shfl_xor_sync(0xffffffffu, acc.w, o);
			}
			if (grp == 0 && c4 < hd4)
				*(float4 *)(out + ((b * L + i) * H + h) * hd +
				    4 * c4) = acc;
		}
	}
}

/*
 * Residual add + layer norm with the row in registers: one warp per row, NV
 * values per lane (cols <= 32 * NV), so a and b are read once. Sums in the
 * order of cuk_layer_norm_kernel.
 */
template <int NV>
static __global__ void
cuk_add_layer_norm_reg_kernel(float *out, const float *a, const float *b,
    const float *w, const float *bias, int64_t rows, int cols, float eps)
{
	int64_t row = (int64_t)blockIdx.x * CUK_ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	float x[NV], sum = 0.0f, mean, var = 0.0f, rstd;

	if (row >= rows)
		return;
	a += row * cols;
	b += row * cols;
	out += row * cols;
#pragma unroll
	for (int k = 0; k < NV; k++) {
		int j = lane + 32 * k;

		x[k] = j < cols ? a[j] + b[j] : 0.0f;
	}
#pragma unroll
	for (int k = 0; k < NV; k++)
		if (lane + 32 * k < cols)
			sum += x[k];
	mean = cuk_warp_sum(sum) / (float)cols;
#pragma unroll
	for (int k = 0; k < NV; k++)
		if (lane + 32 * k < cols) {
			float d = x[k] - mean;

			var += d * d;
		}
	var = cuk_warp_sum(var) / (float)cols;
	rstd = rsqrtf(var + eps);
#pragma unroll
	for (int k = 0; k < NV; k++) {
		int j = lane + 32 * k;
		float v;

		if (j >= cols)
			continue;
		v = (x[k] - mean) * rstd;
		if (w != NULL)
			v *= w[j];
		if (bias != NULL)
			v += bias[j];
		out[j] = v;
	}
}

/*
 * dst[0, n) = src[0, n), by float4 when vec (both 16-byte aligned), the
 * rest by float. src may be mapped host memory: each byte crosses the bus
 * once.
 */
static __global__ void
cuk_copy_kernel(float *dst, const float *src, int64_t n, int vec)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	int64_t step = (int64_t)gridDim.x * blockDim.x;
	int64_t n4 = vec ? n / 4 : 0;

	for (int64_t k = i; k < n4; k += step)
		((float4 *)dst)[k] = ((const float4 *)src)[k];
	for (int64_t k = 4 * n4 + i; k < n; k += step)
		dst[k] = src[k];
}

/* The GPU's global timer, in nanoseconds. */
static __device__ unsigned long long
cuk_globaltimer(void)
{
	unsigned long long t;

	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	return t;
}

/* Words of a table's head and of one answer, read into shared memory. */
#define CUK_ANSWER_HEAD_WORDS (sizeof(struct cuk_answers) / 8)
#define CUK_ANSWER_WORDS (sizeof(struct cuk_answer) / 8)
static_assert(sizeof(struct cuk_answers) % 8 == 0 &&
    sizeof(struct cuk_answer) % 8 == 0 &&
    CUK_ANSWER_HEAD_WORDS + CUK_ANSWER_WORDS <= CUK_THREADS,
    "a table's head and an answer are whole words a thread each reads");

/*
 * Block k writes answer k of t (see cuk_answer). The table lies in host
 * memory: its head and the block's answer are read once, side by side,
 * into shared memory, rather than by every thread.
 */
static __global__ void
cuk_answer_kernel(struct cuk_answers *t)
{
	__shared__ unsigned long long w[CUK_ANSWER_HEAD_WORDS +
	    CUK_ANSWER_WORDS];
	const struct cuk_answers *h = (const struct cuk_answers *)w;
	const struct cuk_answer *a = (const struct cuk_answer *)
	    (w + CUK_ANSWER_HEAD_WORDS);
	const volatile unsigned long long *from =
	    (const volatile unsigned long long *)((const struct cuk_answer *)
	    (t + 1) + blockIdx.x);
	unsigned long long now;

	if (threadIdx.x < CUK_ANSWER_HEAD_WORDS)
		w[threadIdx.x] =
		    ((const volatile unsigned long long *)t)[threadIdx.x];
	else if (threadIdx.x < CUK_ANSWER_HEAD_WORDS + CUK_ANSWER_WORDS)
		w[threadIdx.x] = from[threadIdx.x - CUK_ANSWER_HEAD_WORDS];
	__syncthreads();
	if (blockIdx.x >= h->n)
		return;
	for (uint32_t j = 0; j < h->nout; j++) {
		const float *src = a->src[j];
		float *dst = a->dst[j];
		uint64_t n = a->n[j];

		for (uint64_t i = threadIdx.x; i < n; i += blockDim.x)
			dst[i] = src[i];
	}
	/* Every thread's writes reach the host before the mark does. */
	__threadfence_system();
	__syncthreads();
	if (threadIdx.x != 0)
		return;
	now = cuk_globaltimer();
	*(volatile unsigned long long *)a->exec_us = now > a->t0 ?
	    (now - a->t0) / 1000 : 0;
	if (blockIdx.x == 0)
		((volatile struct cuk_answers *)t)->end = now;
	__threadfence_system();
	*(volatile unsigned long long *)a->mark = a->id;
}

/* Writes the global timer to *out. */
static __global__ void
cuk_clock_kernel(unsigned long long *out)
{
	*(volatile unsigned long long *)out = cuk_globaltimer();
}

/* Traps: a fault that breaks the context. */
static __global__ void
cuk_trap_kernel(void)
{
	__trap();
}

/*
 * Never ends (a volatile flag that nothing clears), for stall tests: only
 * the end of the process or a device reset stops it.
 */
static __global__ void
cuk_hang_kernel(void)
{
	volatile int spin = 1;

	while (spin)
		__nanosleep(1000);
}

extern "C" cudaError_t
cuk_unary(enum cuk_unary op, float *out, const float *in, int64_t n,
    cudaStream_t s)
{
	if (n <= 0)
		return cudaSuccess;
	cuk_unary_kernel<<<cuk_blocks(n), CUK_THREADS, 0, s>>>((int)op, out,
	    in, n);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_binary(enum cuk_binary op, float *out, const float *a, const float *b,
    const struct cuk_bcast *bc, int64_t nelem, cudaStream_t s)
{
	int same = 1;
	int64_t stride = 1;

	if (nelem <= 0)
		return cudaSuccess;
	for (int d = bc->ndim - 1; d >= 0; d--) {
		if (bc->dim[d] != 1 && (bc->a_stride[d] != stride ||
		    bc->b_stride[d] != stride))
			same = 0;
		stride *= bc->dim[d];
	}
	if (same)
		cuk_binary_same_kernel<<<cuk_blocks(nelem), CUK_THREADS, 0, s>>>(
		    (int)op, out, a, b, nelem);
	else
		cuk_binary_bcast_kernel<<<cuk_blocks(nelem), CUK_THREADS, 0, s>>>(
		    (int)op, out, a, b, *bc, nelem);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_bias_add(float *y, const float *bias, int64_t rows, int64_t cols,
    cudaStream_t s)
{
	int64_t n = rows * cols;

	if (n <= 0)
		return cudaSuccess;
	cuk_bias_add_kernel<<<cuk_blocks(n), CUK_THREADS, 0, s>>>(y, bias, n,
	    cols);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_softmax(float *out, const float *in, int64_t outer, int64_t n,
    int64_t inner, cudaStream_t s)
{
	if (outer <= 0 || n <= 0 || inner <= 0)
		return cudaSuccess;
	if (inner == 1) {
		int64_t blocks = (outer + CUK_ROWS_PER_BLOCK - 1) /
		    CUK_ROWS_PER_BLOCK;

		cuk_softmax_last_kernel<<<(unsigned int)blocks,
		    32 * CUK_ROWS_PER_BLOCK, 0, s>>>(out, in, outer, n);
	} else
		cuk_softmax_mid_kernel<<<cuk_blocks(outer * inner), CUK_THREADS,
		    0, s>>>(out, in, outer, n, inner);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_attn_softmax(float *x, int64_t rows, int64_t n, int causal,
    cudaStream_t s)
{
	int64_t blocks = (rows + CUK_ROWS_PER_BLOCK - 1) / CUK_ROWS_PER_BLOCK;

	if (rows <= 0 || n <= 0)
		return cudaSuccess;
	cuk_attn_softmax_kernel<<<(unsigned int)blocks, 32 * CUK_ROWS_PER_BLOCK,
	    0, s>>>(x, rows, n, causal);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_layer_norm(float *out, const float *in, const float *w, const float *b,
    int64_t rows, int64_t cols, float eps, cudaStream_t s)
{
	int64_t blocks = (rows + CUK_ROWS_PER_BLOCK - 1) / CUK_ROWS_PER_BLOCK;

	if (rows <= 0 || cols <= 0)
		return cudaSuccess;
	cuk_layer_norm_kernel<<<(unsigned int)blocks, 32 * CUK_ROWS_PER_BLOCK,
	    0, s>>>(out, in, NULL, w, b, rows, cols, eps);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_mha_split(float *qkvh, const float *qkv, int64_t B, int64_t L, int64_t H,
    int64_t hd, cudaStream_t s)
{
	int64_t n = 3 * B * L * H * hd;

	if (n <= 0)
		return cudaSuccess;
	cuk_mha_split_kernel<<<cuk_blocks(n), CUK_THREADS, 0, s>>>(qkvh, qkv, B,
	    L, H, hd);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_mha_merge(float *out, const float *o, int64_t B, int64_t L, int64_t H,
    int64_t hd, cudaStream_t s)
{
	int64_t n = B * L * H * hd;

	if (n <= 0)
		return cudaSuccess;
	cuk_mha_merge_kernel<<<cuk_blocks(n), CUK_THREADS, 0, s>>>(out, o, B, L,
	    H, hd);
	return cudaGetLastError();
}

extern "C" int
cuk_attention_fits(int64_t L, int64_t hd)
{
	if (L < 1 || L > CUK_ATTN_MAX_L || hd < 4 || hd > CUK_ATTN_MAX_HD ||
	    hd % 4 != 0)
		return 0;
	return cuk_attn_smem(L, hd, 0) <= CUK_ATTN_SMEM;
}

extern "C" cudaError_t
cuk_attention(float *out, const float *qkv, int64_t B, int64_t L, int64_t H,
    int64_t hd, float scale, int causal, cudaStream_t s)
{
	int64_t BH = B * H;
	size_t smem;
	dim3 grid;
	int split;

	if (B == 0 || L == 0 || H == 0)
		return cudaSuccess;
	if (B < 0 || H < 0 || !cuk_attention_fits(L, hd) ||
	    ((uintptr_t)out | (uintptr_t)qkv) % 16 != 0)
		return cudaErrorInvalidValue;
	split = cuk_attn_smem(L, hd, 1) <= CUK_ATTN_SMEM;
	smem = cuk_attn_smem(L, hd, split);
	grid.x = (unsigned int)(BH < CUK_ATTN_MAX_GRID ? BH :
	    CUK_ATTN_MAX_GRID);
	grid.y = (unsigned int)((L + CUK_ATTN_ROWS - 1) / CUK_ATTN_ROWS);
	cuk_attention_kernel<<<grid, 32 * CUK_ATTN_WARPS, smem, s>>>(out, qkv,
	    BH, (int)L, H, (int)hd, scale, causal != 0, split);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_add_layer_norm(float *out, const float *a, const float *b,
    const float *w, const float *bias, int64_t rows, int64_t cols, float eps,
    cudaStream_t s)
{
	unsigned int blocks;
	const unsigned int threads = 32 * CUK_ROWS_PER_BLOCK;

	if (rows <= 0 || cols <= 0)
		return cudaSuccess;
	blocks = (unsigned int)((rows + CUK_ROWS_PER_BLOCK - 1) /
	    CUK_ROWS_PER_BLOCK);
	if (cols <= 128)
		cuk_add_layer_norm_reg_kernel<4><<<blocks, threads, 0, s>>>(out,
		    a, b, w, bias, rows, (int)cols, eps);
	else if (cols <= 256)
		cuk_add_layer_norm_reg_kernel<8><<<blocks, threads, 0, s>>>(out,
		    a, b, w, bias, rows, (int)cols, eps);
	else if (cols <= 512)
		cuk_add_layer_norm_reg_kernel<16><<<blocks, threads, 0, s>>>(
		    out, a, b, w, bias, rows, (int)cols, eps);
	else if (cols <= 1024)
		cuk_add_layer_norm_reg_kernel<32><<<blocks, threads, 0, s>>>(
		    out, a, b, w, bias, rows, (int)cols, eps);
	else
		cuk_layer_norm_kernel<<<blocks, threads, 0, s>>>(out, a, b,
		    w, bias, rows, cols, eps);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_copy(float *dst, const float *src, int64_t n, cudaStream_t s)
{
	int vec = ((uintptr_t)dst | (uintptr_t)src) % 16 == 0;

	if (n <= 0)
		return cudaSuccess;
	cuk_copy_kernel<<<cuk_blocks(vec ? (n + 3) / 4 : n), CUK_THREADS, 0,
	    s>>>(dst, src, n, vec);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_trap(cudaStream_t s)
{
	cuk_trap_kernel<<<1, 1, 0, s>>>();
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_answer(struct cuk_answers *t, uint32_t max, cudaStream_t s)
{
	if (max == 0)
		return cudaSuccess;
	cuk_answer_kernel<<<max, CUK_THREADS, 0, s>>>(t);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_clock(unsigned long long *out, cudaStream_t s)
{
	cuk_clock_kernel<<<1, 1, 0, s>>>(out);
	return cudaGetLastError();
}

extern "C" cudaError_t
cuk_hang(cudaStream_t s)
{
	cuk_hang_kernel<<<1, 1, 0, s>>>();
	return cudaGetLastError();
}
