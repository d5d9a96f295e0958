/*
 * cuda_kernels: elementwise, broadcasting, softmax, layer norm and attention
 * reshaping kernels for the cuda backend. Plain FP32 arithmetic that follows
 * PyTorch's definitions of each op; row reductions use one warp per row.
 */
#include <math.h>

#include "cuda_kernels.h"

#define CUK_THREADS 256
#define CUK_ROWS_PER_BLOCK 4 /* warps per block in the row kernels */
#define CUK_MAX_BLOCKS 65535

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

/* Layer norm over the last axis, one warp per row, two passes. */
static __global__ void
cuk_layer_norm_kernel(float *out, const float *in, const float *w,
    const float *b, int64_t rows, int64_t cols, float eps)
{
	int64_t row = (int64_t)blockIdx.x * CUK_ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	const float *x;
	float *y, sum = 0.0f, mean, var = 0.0f, rstd;

	if (row >= rows)
		return;
	x = in + row * cols;
	y = out + row * cols;
	for (int64_t j = lane; j < cols; j += 32)
		sum += x[j];
	mean = cuk_warp_sum(sum) / (float)cols;
	for (int64_t j = lane; j < cols; j += 32) {
		float d = x[j] - mean;

		var += d * d;
	}
	var = cuk_warp_sum(var) / (float)cols;
	rstd = rsqrtf(var + eps);
	for (int64_t j = lane; j < cols; j += 32) {
		float v = (x[j] - mean) * rstd;

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

/* Traps: a fault that breaks the context. */
static __global__ void
cuk_trap_kernel(void)
{
	__trap();
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
	    0, s>>>(out, in, w, b, rows, cols, eps);
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

extern "C" cudaError_t
cuk_trap(cudaStream_t s)
{
	cuk_trap_kernel<<<1, 1, 0, s>>>();
	return cudaGetLastError();
}
