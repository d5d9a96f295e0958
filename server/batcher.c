/*
 * batcher: per-model FIFO queues (ordered by priority), deadline sweeps and
 * batch formation with Triton-like dynamic batching semantics.
 */
#include <stdlib.h>
#include <string.h>

#include "batcher.h"

/* The queue of one model. */
struct bqueue {
	const struct model *key;
	struct request_list reqs; /* priority order, FIFO within a priority */
	uint32_t n;
	uint32_t rows;
	TAILQ_ENTRY(bqueue) entry;
};

struct batcher {
	struct batcher_config cfg;
	TAILQ_HEAD(, bqueue) active; /* models with queued requests, turn order */
	TAILQ_HEAD(, bqueue) spare;  /* emptied queues, kept for reuse */
	uint32_t queued;
	uint64_t next_deadline;      /* earliest deadline queued; 0: none */
};

/* Creates a batcher. */
struct batcher *
batcher_new(const struct batcher_config *cfg)
{
	struct batcher *b;

	if ((b = calloc(1, sizeof *b)) == NULL)
		return NULL;
	b->cfg = *cfg;
	if (b->cfg.max_batch == 0)
		b->cfg.max_batch = 1;
	TAILQ_INIT(&b->active);
	TAILQ_INIT(&b->spare);
	return b;
}

/* Frees the batcher and its (empty) queues. */
void
batcher_free(struct batcher *b)
{
	struct bqueue *q;

	if (b == NULL)
		return;
	while ((q = TAILQ_FIRST(&b->active)) != NULL) {
		TAILQ_REMOVE(&b->active, q, entry);
		free(q);
	}
	while ((q = TAILQ_FIRST(&b->spare)) != NULL) {
		TAILQ_REMOVE(&b->spare, q, entry);
		free(q);
	}
	free(b);
}

/* Finds the queue of model key, or NULL. */
static struct bqueue *
batcher_find(struct batcher *b, const struct model *key)
{
	struct bqueue *q;

	TAILQ_FOREACH(q, &b->active, entry) {
		if (q->key == key)
			return q;
	}
	return NULL;
}

/* Takes r out of queue q. */
static void
batcher_unlink(struct batcher *b, struct bqueue *q, struct request *r)
{
	TAILQ_REMOVE(&q->reqs, r, entry);
	q->n--;
	q->rows -= r->rows;
	b->queued--;
}

/*
 * Puts q aside when it is empty: a model's queue empties and fills again
 * with nearly every request, and allocating it each time cost as much as
 * queueing the request (callgrind).
 */
static void
batcher_retire(struct batcher *b, struct bqueue *q)
{
	if (q->n == 0) {
		TAILQ_REMOVE(&b->active, q, entry);
		TAILQ_INSERT_HEAD(&b->spare, q, entry);
	}
}

/* Queues r. */
int
batcher_push(struct batcher *b, struct request *r)
{
	struct bqueue *q;
	struct request *at;

	if (b->queued >= b->cfg.max_queue)
		return -1;
	if ((q = batcher_find(b, r->model)) == NULL) {
		if ((q = TAILQ_FIRST(&b->spare)) != NULL)
			TAILQ_REMOVE(&b->spare, q, entry);
		else if ((q = calloc(1, sizeof *q)) == NULL)
			return -1;
		memset(q, 0, sizeof *q);
		q->key = r->model;
		TAILQ_INIT(&q->reqs);
		TAILQ_INSERT_TAIL(&b->active, q, entry);
	}
	/* Behind every request of the same or higher priority. */
	at = TAILQ_LAST(&q->reqs, request_list);
	while (at != NULL && at->priority < r->priority)
		at = TAILQ_PREV(at, request_list, entry);
	if (at == NULL)
		TAILQ_INSERT_HEAD(&q->reqs, r, entry);
	else
		TAILQ_INSERT_AFTER(&q->reqs, at, r, entry);
	q->n++;
	q->rows += r->rows;
	b->queued++;
	if (r->deadline_ns != 0 &&
	    (b->next_deadline == 0 || r->deadline_ns < b->next_deadline))
		b->next_deadline = r->deadline_ns;
	return 0;
}

/* Moves requests past their deadline to *expired; recomputes next_deadline. */
static void
batcher_sweep(struct batcher *b, uint64_t now, struct request_list *expired)
{
	struct bqueue *q, *qnext;
	struct request *r, *rnext;
	uint64_t next = 0;

	if (b->next_deadline == 0 || now < b->next_deadline)
		return;
	for (q = TAILQ_FIRST(&b->active); q != NULL; q = qnext) {
		qnext = TAILQ_NEXT(q, entry);
		for (r = TAILQ_FIRST(&q->reqs); r != NULL; r = rnext) {
			rnext = TAILQ_NEXT(r, entry);
			if (r->deadline_ns == 0)
				continue;
			if (r->deadline_ns <= now) {
				batcher_unlink(b, q, r);
				TAILQ_INSERT_TAIL(expired, r, entry);
			} else if (next == 0 || r->deadline_ns < next)
				next = r->deadline_ns;
		}
		batcher_retire(b, q);
	}
	b->next_deadline = next;
}

/* Returns 1 when a and b have the same per-sample shapes. */
static int
batcher_same_sample(const struct request *a, const struct request *b)
{
	if (a->ninputs != b->ninputs)
		return 0;
	for (uint32_t i = 0; i < a->ninputs; i++) {
		const struct graph_shape *x = &a->in_shapes[i];
		const struct graph_shape *y = &b->in_shapes[i];

		if (x->ndim != y->ndim ||
		    memcmp(&x->dim[1], &y->dim[1],
		    (size_t)(x->ndim - 1) * sizeof x->dim[0]) != 0)
			return 0;
	}
	return 1;
}

/*
 * Collects into *out the batch queue q would run now: its head and the
 * requests behind it with the same per-sample shapes, up to max_batch rows.
 */
static void
batcher_collect(struct batcher *b, struct bqueue *q, struct batch *out)
{
	struct request *head = TAILQ_FIRST(&q->reqs), *r;

	out->n = 0;
	out->rows = 0;
	for (r = head; r != NULL && out->n < out->cap; r = TAILQ_NEXT(r, entry)) {
		if (r != head && (out->rows + r->rows > b->cfg.max_batch ||
		    !batcher_same_sample(head, r)))
			continue;
		out->reqs[out->n++] = r;
		out->rows += r->rows;
		if (out->rows >= b->cfg.max_batch)
			break;
	}
}

/* Forms the next batch. */
int
batcher_next(struct batcher *b, uint64_t now_ns, struct batch *out,
    struct request_list *expired, uint64_t *wait_ns)
{
	struct bqueue *q, *best = NULL;
	uint64_t delay = (uint64_t)b->cfg.max_delay_us * 1000, wait = 0;
	int32_t best_prio = 0;

	batcher_sweep(b, now_ns, expired);
	*wait_ns = 0;
	if (b->queued == 0)
		return 0;

	/*
	 * The first model in turn order among those whose head has the highest
	 * priority and whose batch is ready: full, or the oldest request has
	 * waited max_delay. With max_delay 0 every queued batch is ready.
	 */
	TAILQ_FOREACH(q, &b->active, entry) {
		struct request *head = TAILQ_FIRST(&q->reqs);

		if (best != NULL && head->priority <= best_prio)
			continue;
		if (delay != 0 && q->rows < b->cfg.max_batch &&
		    now_ns - head->t_enqueue_ns < delay) {
			uint64_t left = head->t_enqueue_ns + delay - now_ns;

			if (wait == 0 || left < wait)
				wait = left;
			continue;
		}
		best = q;
		best_prio = head->priority;
	}
	if (best == NULL) {
		*wait_ns = wait;
		return 0;
	}
	batcher_collect(b, best, out);
	for (uint32_t i = 0; i < out->n; i++)
		batcher_unlink(b, best, out->reqs[i]);
	/* Its turn is over: to the back of the line. */
	TAILQ_REMOVE(&b->active, best, entry);
	TAILQ_INSERT_TAIL(&b->active, best, entry);
	batcher_retire(b, best);
	return 1;
}

/* Moves every queued request of conn to *out. */
void
batcher_remove_conn(struct batcher *b, const struct conn *conn,
    struct request_list *out)
{
	struct bqueue *q, *qnext;
	struct request *r, *rnext;

	for (q = TAILQ_FIRST(&b->active); q != NULL; q = qnext) {
		qnext = TAILQ_NEXT(q, entry);
		for (r = TAILQ_FIRST(&q->reqs); r != NULL; r = rnext) {
			rnext = TAILQ_NEXT(r, entry);
			if (r->conn == conn) {
				batcher_unlink(b, q, r);
				TAILQ_INSERT_TAIL(out, r, entry);
			}
		}
		batcher_retire(b, q);
	}
}

/* Moves every queued request to *out. */
void
batcher_drain(struct batcher *b, struct request_list *out)
{
	struct bqueue *q;
	struct request *r;

	while ((q = TAILQ_FIRST(&b->active)) != NULL) {
		while ((r = TAILQ_FIRST(&q->reqs)) != NULL) {
			batcher_unlink(b, q, r);
			TAILQ_INSERT_TAIL(out, r, entry);
		}
		batcher_retire(b, q);
	}
}

/* Requests queued now. */
uint32_t
batcher_queued(const struct batcher *b)
{
	return b->queued;
}
