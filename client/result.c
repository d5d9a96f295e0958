/*
 * result: agxq_result objects and error codes, shared by the daemon client
 * and the direct mode.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "result.h"

static const char *const error_names[AGXQ_ERRNO_MAX + 1] = {
	[0] = "success",
	[1] = "invalid argument",
	[2] = "out of memory",
	[3] = "cannot connect to agxqd",
	[4] = "connection to agxqd lost",
	[5] = "protocol error: malformed frame or message",
	[6] = "protocol version mismatch",
	[7] = "message over the size limit",
	[8] = "corrupt compressed data",
	[9] = "unknown model",
	[10] = "invalid graph",
	[11] = "tensor shape does not fit the model",
	[12] = "unsupported dtype",
	[13] = "agxqd is busy: queue full",
	[14] = "request timed out",
	[15] = "agxqd is shutting down",
	[16] = "device or backend failure",
	[17] = "resource limit reached",
	[18] = "not supported",
	[19] = "internal error",
	[20] = "permission denied",
	[21] = "not run: agxqd is resetting its device; safe to retry",
};

/* Returns a static description of an AGXQ_E* code. */
const char *
agxq_strerror(int code)
{
	if (code > 0 || -code > AGXQ_ERRNO_MAX)
		return "unknown error";
	return error_names[-code];
}

/* Maps a wire ErrorCode to an AGXQ_E* code. */
int
result_error_from_wire(int code)
{
	if (code <= 0 || code > AGXQ_ERRNO_MAX)
		return AGXQ_EINTERNAL;
	return -code;
}

/* Maps an AGXQ_E* code to a wire ErrorCode. */
int
result_error_to_wire(int err)
{
	if (err >= 0 || -err > AGXQ_ERRNO_MAX)
		return AGXQ__ERROR_CODE__ERR_INTERNAL;
	return -err;
}

/* Number of elements of t. */
size_t
agxq_tensor_nelem(const agxq_tensor *t)
{
	size_t n = 1;

	for (int i = 0; i < t->ndim; i++)
		n *= (size_t)t->shape[i];
	return n;
}

/* Makes a result of n outputs. */
agxq_result *
result_new(int n)
{
	agxq_result *r;

	if ((r = calloc(1, sizeof *r)) == NULL)
		return NULL;
	r->n = n;
	if (n > 0) {
		r->out = calloc((size_t)n, sizeof *r->out);
		r->owned = calloc((size_t)n, sizeof *r->owned);
		if (r->out == NULL || r->owned == NULL) {
			agxq_result_free(r);
			return NULL;
		}
	}
	return r;
}

/* Gives output i to r, taking ownership of data. */
void
result_take_output(agxq_result *r, int i, const int64_t *shape, int ndim,
    void *data)
{
	agxq_tensor *t = &r->out[i];

	t->dtype = AGXQ_FLOAT32;
	t->ndim = ndim;
	memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
	t->data = data;
	r->owned[i] = data;
}

/* Makes a result from a decoded InferReply, taking ownership of env. */
int
result_from_envelope(Agxq__Envelope *env, agxq_result **out)
{
	return result_from_envelope_shm(env, NULL, NULL, out);
}

/* As result_from_envelope, resolving shared memory outputs through shm. */
int
result_from_envelope_shm(Agxq__Envelope *env, result_shm_fn shm, void *arg,
    agxq_result **out)
{
	int rc;

	if (env->body_case != AGXQ__ENVELOPE__BODY_INFER_REPLY) {
		codec_envelope_free(env);
		return AGXQ_EPROTO;
	}
	if ((rc = result_from_reply(env->infer_reply, shm, arg, out)) != 0) {
		codec_envelope_free(env);
		return rc;
	}
	(*out)->env = env;
	return 0;
}

/* Makes a result whose outputs point into rep's data (see result.h). */
int
result_from_reply(const Agxq__InferReply *rep, result_shm_fn shm, void *arg,
    agxq_result **out)
{
	agxq_result *r;

	if (rep->n_outputs > 1024)
		return AGXQ_EPROTO;
	if ((r = result_new((int)rep->n_outputs)) == NULL)
		return AGXQ_ENOMEM;
	r->queue_us = rep->queue_us;
	r->exec_us = rep->exec_us;
	r->batch_rows = rep->batch_rows;
	for (size_t i = 0; i < rep->n_outputs; i++) {
		Agxq__Tensor *pt = rep->outputs[i];
		agxq_tensor *t = &r->out[i];
		uint64_t n = 1;

		if (pt->dtype != AGXQ__DTYPE__DTYPE_FLOAT32 ||
		    pt->n_shape > AGXQ_MAX_DIMS)
			goto fail_proto;
		for (size_t d = 0; d < pt->n_shape; d++) {
			if (pt->shape[d] < 0 || pt->shape[d] > (1LL << 40))
				goto fail_proto;
			n *= (uint64_t)pt->shape[d];
			if (n > (1ULL << 40))
				goto fail_proto;
			t->shape[d] = pt->shape[d];
		}
		t->dtype = AGXQ_FLOAT32;
		t->ndim = (int)pt->n_shape;
		if (pt->shm != NULL) {
			const void *p;

			if (shm == NULL || pt->data.len != 0 ||
			    pt->shm->length != n * sizeof(float) ||
			    (p = shm(arg, pt->shm)) == NULL)
				goto fail_proto;
			t->data = (void *)(uintptr_t)p;
			continue;
		}
		if (n * sizeof(float) != pt->data.len)
			goto fail_proto;
		t->data = pt->data.data;
	}
	*out = r;
	return 0;

fail_proto:
	agxq_result_free(r);
	return AGXQ_EPROTO;
}

/* Number of outputs. */
int
agxq_result_noutputs(const agxq_result *r)
{
	return r->n;
}

/* Output i, or NULL when out of range. */
const agxq_tensor *
agxq_result_output(const agxq_result *r, int i)
{
	if (r == NULL || i < 0 || i >= r->n)
		return NULL;
	return &r->out[i];
}

/* Time queued and executing, and rows in the launch. */
void
agxq_result_info(const agxq_result *r, uint64_t *queue_us, uint64_t *exec_us,
    uint32_t *batch_rows)
{
	if (queue_us != NULL)
		*queue_us = r->queue_us;
	if (exec_us != NULL)
		*exec_us = r->exec_us;
	if (batch_rows != NULL)
		*batch_rows = r->batch_rows;
}

/* Frees a result; accepts NULL. */
void
agxq_result_free(agxq_result *r)
{
	if (r == NULL)
		return;
	if (r->owned != NULL) {
		for (int i = 0; i < r->n; i++)
			free(r->owned[i]);
	}
	free(r->owned);
	free(r->out);
	codec_envelope_free(r->env);
	if (r->release != NULL)
		r->release(r->release_arg);
	free(r);
}
