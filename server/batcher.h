/*
 * batcher: per-model request queues and batch formation (DESIGN.md,
 * Batching). Requests for the same model whose per-sample shapes match are
 * taken together, up to max_batch rows. Fair across models: each model with
 * queued work gets one batch per turn (higher head priority first). Not
 * thread-safe on its own: the executor's lock guards it.
 */
#ifndef AGXQ_BATCHER_H
#define AGXQ_BATCHER_H

#include <stdint.h>

#include "request.h"

struct batcher_config {
	uint32_t max_batch;    /* rows per launch (a larger single request runs alone) */
	uint32_t max_delay_us; /* wait for a fuller batch at most this long; 0: never wait */
	uint32_t max_queue;    /* queued requests, all models together */
};

struct batch {
	struct request **reqs; /* cap entries */
	uint32_t n;
	uint32_t cap;          /* >= max_batch */
	uint32_t rows;
};

struct batcher;

/* Creates a batcher; NULL on OOM. */
struct batcher *batcher_new(const struct batcher_config *cfg);

/* Frees the batcher; it must be empty (batcher_drain first). Accepts NULL. */
void batcher_free(struct batcher *b);

/* Queues r (keyed by r->model). Returns 0, or -1 when the queue is full. */
int batcher_push(struct batcher *b, struct request *r);

/*
 * Moves requests whose deadline has passed to *expired, then forms the next
 * batch into *out (whose reqs array has room for max_batch requests).
 * Returns 1 when a batch was formed; 0 when none is ready, with *wait_ns the
 * time until a delayed batch becomes ready, or 0 when nothing is queued.
 */
int batcher_next(struct batcher *b, uint64_t now_ns, struct batch *out,
    struct request_list *expired, uint64_t *wait_ns);

/* Moves every queued request of connection conn to *out. */
void batcher_remove_conn(struct batcher *b, const struct conn *conn,
    struct request_list *out);

/* Moves every queued request to *out. */
void batcher_drain(struct batcher *b, struct request_list *out);

/* Requests queued now. */
uint32_t batcher_queued(const struct batcher *b);

#endif
