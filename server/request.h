/*
 * request: one unit of work handed from the loop thread to the executor and
 * back: an inference request, or a model to load or free.
 */
#ifndef AGXQ_REQUEST_H
#define AGXQ_REQUEST_H

#include <stdint.h>
#include <sys/queue.h>

#include "agxq.pb-c.h"
#include "graph.h"

struct conn;
struct model;
struct region;

/* Where the daemon writes output j of an Infer that named output regions. */
struct request_out {
	float *dst;                   /* in a mapped region; NULL: inline */
	uint64_t cap;                 /* bytes at dst */
	uint64_t region_id;
	uint64_t offset;
};

enum request_kind {
	REQUEST_INFER,
	REQUEST_LOAD,  /* load request->model on the backend */
	REQUEST_FREE,  /* free request->model on the backend, then the model */
	REQUEST_UNMAP  /* unregister request->region from the device, then unmap it */
};

struct ring;

struct request {
	TAILQ_ENTRY(request) entry;
	enum request_kind kind;
	uint64_t id;                  /* the client's request id */
	struct conn *conn;            /* loop thread only; holds a reference */
	struct model *model;          /* holds a reference (loop thread count) */
	int32_t priority;
	uint64_t t_in_ns;             /* the loop took its frame, to decode */
	uint64_t t_enqueue_ns;        /* decoded and checked, queued */
	uint64_t deadline_ns;         /* 0: none */
	uint32_t rows;                /* batch rows of this request */
	uint32_t ninputs;
	struct graph_shape *in_shapes; /* ninputs concrete shapes (in r's block) */
	const float **in;             /* ninputs, into env, a region or the
	                                 ring slot (in r's block) */
	Agxq__Envelope *env;          /* the decoded Infer; owns the input data */
	int raw;                      /* or it came raw (rawinfer.h), its input
	                                 data in its ring slot until answered;
	                                 the reply is raw too */
	struct region **regions;      /* loop thread: one reference to each */
	struct region *region;        /* REQUEST_UNMAP's */
	uint32_t nregions;
	uint32_t nouts;               /* output regions named (0: all inline) */
	struct request_out *outs;     /* nouts */
	int32_t ring_slot;            /* the conn's ring slot it came in; -1: socket */
	struct ring *ring;            /* the conn's ring, if ring_slot >= 0 */
	int answered;                 /* its reply is in the slot (ring_answer) */

	/* Set by the executor. */
	int status;                   /* 0 or an AGXQ__ERROR_CODE__* */
	char *cause;                  /* error message, malloc'd */
	uint8_t *reply;               /* encoded reply frame, malloc'd */
	size_t reply_len;
	size_t reply_raw_len;
	uint8_t *slot_reply;          /* or a raw one written in its ring slot,
	                                 not yet answered (ring_reply_at) */
	size_t slot_reply_len;
	uint64_t queue_us;
	uint64_t exec_us;
	uint64_t t_reply_ns;          /* when its reply was encoded */
	uint32_t batch_rows;
};
TAILQ_HEAD(request_list, request);

/* Allocates a zeroed request of kind with room for ninputs inputs; NULL on OOM. */
struct request *request_new(enum request_kind kind, uint32_t ninputs);

/*
 * Frees a request and what it owns (env, reply, cause); accepts NULL. Does
 * not drop conn/model/region references (the regions array itself is freed).
 */
void request_free(struct request *r);

/* Sets r's error status and message (printf format). */
void request_fail(struct request *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Encodes an Error{id, code, msg} frame into a malloc'd buffer. Returns 0, or
 * -1 on out-of-memory.
 */
int request_error_frame(uint64_t id, int code, const char *msg,
    uint8_t **frame, size_t *len);

/* Encodes r's status and cause as its reply frame (replacing any reply). */
int request_encode_error(struct request *r);

/* Monotonic clock in nanoseconds. */
uint64_t request_now_ns(void);

#endif
