/*
 * cuda_gemm: the cuda backend's linear layers on cuBLASLt. The bias, and a
 * ReLU that follows the linear, run in the product's epilogue, so a linear
 * is one kernel (two with split-K) instead of two or three. The algorithm
 * for each shape is the fastest of cuBLASLt's candidates, timed once on the
 * device the first time the shape runs outside a CUDA graph capture, with
 * several products at once as agxqd's lanes run them, writing where the
 * run writes, and shared by the shapes of a power-of-two range of rows
 * (3-4, 5-8, 9-16, ...); a report file, when asked for, gets each timing's
 * figures.
 */
#ifndef AGXQ_CUDA_GEMM_H
#define AGXQ_CUDA_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

struct cuda_gemm;

/* One linear: y[rows, out] = act(x[rows, in] w[out, in]^T + bias). */
struct cuda_gemm_linear {
	cudaStream_t stream;
	void *ws;                   /* workspace (ws_size bytes), used in
				       stream order */
	size_t ws_size;
	int tf32;                   /* the model allows TF32 */
	int relu;                   /* ReLU in the epilogue */
	int64_t rows, in, out;
	const float *x, *w, *bias;  /* bias may be NULL */
	float *y;
};

#define CUDA_GEMM_CANDIDATES 8      /* algorithms timed, by default */
#define CUDA_GEMM_CANDIDATES_MAX 16
#define CUDA_GEMM_OVERLAP 8         /* streams each is timed on, by default */
#define CUDA_GEMM_OVERLAP_MAX 16

int	 cuda_gemm_open(struct cuda_gemm **, int, int, int, const char *,
	    char **);
void	 cuda_gemm_close(struct cuda_gemm *);
int	 cuda_gemm_run(struct cuda_gemm *, const struct cuda_gemm_linear *,
	    char **);

#endif
