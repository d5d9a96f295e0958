/*
 * agxq_direct.h — run agxq models in-process, without a daemon.
 *
 * The same engine and backends agxqd uses, owned by the calling thread. This
 * is the "direct" baseline of the comparison: each client thread opens its
 * own handle (its own device context). A handle must only be used by the
 * thread that opened it; other threads get AGXQ_EINVAL.
 */
#ifndef AGXQ_DIRECT_H
#define AGXQ_DIRECT_H

#include "agxq.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct agxq_direct agxq_direct;
typedef struct agxq_direct_model agxq_direct_model;

/* Opens backend ("cpu", "cuda"; NULL: "cpu") on device. */
AGXQ_EXTERN int agxq_direct_open(const char *backend, int device, agxq_direct **out);
/* Closes the handle and every model loaded through it; accepts NULL. */
AGXQ_EXTERN void agxq_direct_close(agxq_direct *d);
/*
 * Sets the threads the CPU backend's BLAS uses, process-wide (n <= 0: the
 * library default, every core). For benchmarks of many direct clients.
 */
AGXQ_EXTERN int agxq_direct_set_cpu_threads(int n);
/* Validates and loads graph g (not consumed). */
AGXQ_EXTERN int agxq_direct_load(agxq_direct *d, const agxq_graph *g, agxq_direct_model **out);
/* Frees a model; accepts NULL. */
AGXQ_EXTERN void agxq_direct_unload(agxq_direct_model *m);
/* Runs one request synchronously; *out as agxq_infer. */
AGXQ_EXTERN int agxq_direct_infer(agxq_direct_model *m, const agxq_tensor *inputs,
    int ninputs, agxq_result **out);

#ifdef __cplusplus
}
#endif
#endif
