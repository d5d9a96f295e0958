/*
 * result: agxq_result objects, and the mapping between AGXQ_E* codes and the
 * wire's ErrorCode. Internal to the client libraries.
 */
#ifndef AGXQ_RESULT_H
#define AGXQ_RESULT_H

#include "agxq.h"
#include "agxq.pb-c.h"

struct agxq_result {
	int n;
	agxq_tensor *out;      /* n tensors */
	uint64_t queue_us;
	uint64_t exec_us;
	uint32_t batch_rows;
	Agxq__Envelope *env;   /* when out[] points into a decoded reply */
	void **owned;          /* otherwise: n buffers the result frees */
	void (*release)(void *); /* called by agxq_result_free, when set */
	void *release_arg;
};

/*
 * Resolves a shared memory output to a pointer into the caller's mapping,
 * or NULL when ref does not lie inside what the request handed out.
 */
typedef const void *(*result_shm_fn)(void *arg, const Agxq__ShmRef *ref);

/*
 * Makes a result from a decoded InferReply envelope, taking ownership of env
 * (freed with the result, or at once on failure). Output data points into
 * env. Returns 0, AGXQ_EPROTO when an output is malformed (dtype, shape and
 * data length disagree) or AGXQ_ENOMEM.
 */
int result_from_envelope(Agxq__Envelope *env, agxq_result **out);

/*
 * As result_from_envelope, but outputs that name shared memory are resolved
 * through shm(arg, ref) (NULL: such outputs are AGXQ_EPROTO).
 */
int result_from_envelope_shm(Agxq__Envelope *env, result_shm_fn shm,
    void *arg, agxq_result **out);

/*
 * Makes a result from an InferReply (not taken): output data points into
 * rep's, which must outlive the result (the caller sets env or release to
 * free it with the result). Shared memory outputs resolve as in
 * result_from_envelope_shm. Returns 0, AGXQ_EPROTO or AGXQ_ENOMEM.
 */
int result_from_reply(const Agxq__InferReply *rep, result_shm_fn shm,
    void *arg, agxq_result **out);

/* Makes a result of n outputs whose buffers the caller will give it. */
agxq_result *result_new(int n);

/* Gives output i to r: takes ownership of data (malloc'd). */
void result_take_output(agxq_result *r, int i, const int64_t *shape, int ndim,
    void *data);

/* Maps a wire ErrorCode to an AGXQ_E* code (AGXQ_EINTERNAL when unknown). */
int result_error_from_wire(int code);

/* Maps an AGXQ_E* code to a wire ErrorCode. */
int result_error_to_wire(int err);

#endif
