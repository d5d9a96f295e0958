/*
 * request: allocation and error helpers for units of work passed between the
 * loop thread and the executor.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "codec.h"
#include "request.h"

/*
 * Allocates a request with room for ninputs inputs: one allocation, the
 * input shapes and pointers after the request (one per request served, so
 * it counts).
 */
struct request *
request_new(enum request_kind kind, uint32_t ninputs)
{
	size_t shapes = (sizeof(struct request) + _Alignof(struct graph_shape) -
	    1) / _Alignof(struct graph_shape) * _Alignof(struct graph_shape);
	size_t ptrs = shapes + (size_t)ninputs * sizeof(struct graph_shape);
	struct request *r;

	ptrs = (ptrs + _Alignof(const float *) - 1) /
	    _Alignof(const float *) * _Alignof(const float *);
	if ((r = calloc(1, ptrs + (size_t)ninputs * sizeof(const float *))) ==
	    NULL)
		return NULL;
	r->kind = kind;
	r->ninputs = ninputs;
	r->ring_slot = -1;
	if (ninputs > 0) {
		r->in_shapes = (struct graph_shape *)(void *)((char *)r +
		    shapes);
		r->in = (const float **)(void *)((char *)r + ptrs);
	}
	return r;
}

/* Frees a request and what it owns. */
void
request_free(struct request *r)
{
	if (r == NULL)
		return;
	codec_envelope_free(r->env);
	free(r->regions);
	free(r->outs);
	free(r->cause);
	free(r->reply);
	free(r);
}

/* Sets r's error status and message. */
void
request_fail(struct request *r, int code, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	free(r->cause);
	r->cause = msg;
	r->status = code;
}

/* Monotonic clock in nanoseconds. */
uint64_t
request_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Encodes an Error frame. */
int
request_error_frame(uint64_t id, int code, const char *msg, uint8_t **frame,
    size_t *len)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__Error err = AGXQ__ERROR__INIT;
	struct codec_limits lim;

	codec_limits_default(&lim);
	err.request_id = id;
	err.code = (Agxq__ErrorCode)code;
	err.message = (char *)(msg != NULL ? msg : "");
	env.body_case = AGXQ__ENVELOPE__BODY_ERROR;
	env.error = &err;
	return codec_encode(&env, 0, &lim, frame, len, NULL);
}

/* Encodes r's status and cause as its reply frame. */
int
request_encode_error(struct request *r)
{
	free(r->reply);
	r->reply = NULL;
	r->reply_len = 0;
	r->slot_reply = NULL;
	r->slot_reply_len = 0;
	return request_error_frame(r->id, r->status, r->cause, &r->reply,
	    &r->reply_len);
}
