/*
 * cuda_kernels: the CUDA kernels of the cuda backend (everything that is not
 * a cuBLAS matrix product), callable from C. Each function launches on the
 * given stream and returns the launch status (cudaGetLastError); it never
 * synchronizes, so it may be recorded into a CUDA graph. All tensors are
 * FP32, row-major, in device memory.
 */
#ifndef AGXQ_CUDA_KERNELS_H
#define AGXQ_CUDA_KERNELS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CUK_MAX_DIMS 6

enum cuk_unary { CUK_RELU, CUK_GELU_ERF, CUK_GELU_TANH, CUK_SILU };
enum cuk_binary { CUK_ADD, CUK_MUL };

/*
 * Broadcasting binary op: out = a op b over an output of ndim dims. a_stride
 * and b_stride give each operand's element stride per output dim, 0 where
 * the operand is broadcast along it.
 */
struct cuk_bcast {
	int ndim;
	int64_t dim[CUK_MAX_DIMS];
	int64_t a_stride[CUK_MAX_DIMS];
	int64_t b_stride[CUK_MAX_DIMS];
};

/* out[i] = op(in[i]) for n elements; out may equal in. */
cudaError_t cuk_unary(enum cuk_unary op, float *out, const float *in,
    int64_t n, cudaStream_t s);

/* out = a op b with broadcasting as described by bc (nelem output elements). */
cudaError_t cuk_binary(enum cuk_binary op, float *out, const float *a,
    const float *b, const struct cuk_bcast *bc, int64_t nelem, cudaStream_t s);

/* y[r, c] += bias[c] for a rows x cols matrix. */
cudaError_t cuk_bias_add(float *y, const float *bias, int64_t rows,
    int64_t cols, cudaStream_t s);

/*
 * Softmax of in viewed as [outer, n, inner] along the middle axis. out may
 * equal in.
 */
cudaError_t cuk_softmax(float *out, const float *in, int64_t outer,
    int64_t n, int64_t inner, cudaStream_t s);

/*
 * Attention softmax in place over the last axis of x [rows, n]. When causal,
 * row r is query r % n and keys after it are masked out.
 */
cudaError_t cuk_attn_softmax(float *x, int64_t rows, int64_t n, int causal,
    cudaStream_t s);

/*
 * Layer norm over the last axis of in [rows, cols]: (x - mean) / sqrt(var +
 * eps) * w + b, biased variance; w and b may be NULL.
 */
cudaError_t cuk_layer_norm(float *out, const float *in, const float *w,
    const float *b, int64_t rows, int64_t cols, float eps, cudaStream_t s);

/*
 * Splits qkv [B, L, 3, H, hd] into q, k, v, each [B, H, L, hd] (stored one
 * after another at qkvh).
 */
cudaError_t cuk_mha_split(float *qkvh, const float *qkv, int64_t B,
    int64_t L, int64_t H, int64_t hd, cudaStream_t s);

/* Merges o [B, H, L, hd] into out [B, L, H * hd]. */
cudaError_t cuk_mha_merge(float *out, const float *o, int64_t B, int64_t L,
    int64_t H, int64_t hd, cudaStream_t s);

/*
 * 1 when cuk_attention handles sequence length L and head size hd: 1 <= L <=
 * 64, 4 <= hd <= 128, hd % 4 == 0 (its shared memory then fits the default
 * 48 KiB per block); else 0.
 */
int cuk_attention_fits(int64_t L, int64_t hd);

/*
 * Fused self-attention for small sequences: qkv [B, L, 3, H, hd] (the
 * in-projection's output: q, k and v of every head in each row) ->
 * out [B, L, H, hd]. For each (b, h): softmax(scale * Q K^T) V, where with
 * causal set query i sees keys j <= i only. Sizes must satisfy
 * cuk_attention_fits; qkv and out must be 16-byte aligned and must not
 * overlap. Returns cudaErrorInvalidValue without launching otherwise;
 * cudaSuccess without launching when B * L * H is 0.
 */
cudaError_t cuk_attention(float *out, const float *qkv, int64_t B, int64_t L,
    int64_t H, int64_t hd, float scale, int causal, cudaStream_t s);

/*
 * out = layer_norm(a + b) over the last axis of [rows, cols] (a and b of the
 * same shape, no broadcasting), with the formula of cuk_layer_norm; w and
 * bias may be NULL. out must not overlap a or b.
 */
cudaError_t cuk_add_layer_norm(float *out, const float *a, const float *b,
    const float *w, const float *bias, int64_t rows, int64_t cols, float eps,
    cudaStream_t s);

/*
 * dst[0, n) = src[0, n) (n floats, not overlapping) by a kernel, so that a
 * CUDA graph copying inputs from mapped host memory holds kernel nodes
 * only: on an H100 a graph with copy nodes took 5-9 us to launch, one
 * with a kernel alone 1.4-2.3 (docs/GPU.md).
 */
cudaError_t cuk_copy(float *dst, const float *src, int64_t n, cudaStream_t s);

/* Outputs one answer takes (BACKEND_ANSWER_MAX_OUT). */
#define CUK_ANSWER_MAX_OUT 4

/*
 * One request answered by cuk_answer, as it lies in mapped host memory the
 * kernel reads: n[j] floats of output j from src[j] (device) to dst[j]
 * (registered host memory), then the microseconds from t0 to the kernel's
 * end to *exec_us, then id to *mark.
 */
struct cuk_answer {
	const float *src[CUK_ANSWER_MAX_OUT];
	float *dst[CUK_ANSWER_MAX_OUT];
	uint64_t n[CUK_ANSWER_MAX_OUT];
	unsigned long long *exec_us;
	unsigned long long *mark;
	unsigned long long id;
	unsigned long long t0;      /* the batch's start, global timer ns */
};

/* A table of answers: this head, then n struct cuk_answer. */
struct cuk_answers {
	uint32_t n;
	uint32_t nout;              /* outputs each answer copies */
	unsigned long long end;     /* the kernel's: the global timer at the
				       first answer's end, ns */
};

/*
 * Writes the answers of table t (in mapped host memory, read when the
 * kernel runs; at most max of them): one block each, which copies its
 * outputs, waits until they are visible to the host, then stores exec_us
 * and, last, the mark; the first block also stores t->end. max is fixed
 * when a graph is captured; t->n may be any count up to it.
 */
cudaError_t cuk_answer(struct cuk_answers *t, uint32_t max,
    cudaStream_t s);

/* Writes the GPU's global timer (ns) to *out (mapped host memory) once. */
cudaError_t cuk_clock(unsigned long long *out, cudaStream_t s);

/* Launches a kernel that traps, for fault tests: the context becomes unusable. */
cudaError_t cuk_trap(cudaStream_t s);

/* Launches a kernel that never ends, for stall tests. */
cudaError_t cuk_hang(cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
