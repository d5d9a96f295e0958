/*
 * executor: the one thread that owns the device. It opens the backend, loads
 * and frees models, forms batches from the batcher, runs them, splits the
 * results and encodes each reply frame. Finished work goes back through the
 * server's deliver function, which hands each request to the loop thread of
 * its connection: the executor never writes to a socket and no loop thread
 * calls the backend.
 */
#ifndef AGXQ_EXECUTOR_H
#define AGXQ_EXECUTOR_H

#include <stdint.h>

#include <event2/event.h>

#include "batcher.h"
#include "codec.h"
#include "models.h"
#include "request.h"

struct executor;
struct model;

/*
 * Takes the finished requests of list (left empty) from any thread: the
 * executor's, or a loop thread in executor_cancel_conn or executor_quiesce.
 */
typedef void (*executor_deliver_fn)(struct request_list *list, void *arg);

/*
 * Called on the main loop thread once the device is lost beyond what reopening
 * it in this process can mend; arg is the deliver function's. The executor
 * takes no more batches; the server should quiesce and end the process.
 */
typedef void (*executor_lost_fn)(void *arg);

struct executor_config {
	const char *backend;
	int device;
	int cpu_threads;       /* cpu backend BLAS threads; 0: default */
	uint32_t spin_us;      /* poll for work this long before sleeping */
	struct batcher_config batch;
	size_t compress_threshold;
	struct codec_limits limits;
	executor_lost_fn lost;  /* NULL: a lost device fails every request */
};

/*
 * Starts the executor thread and waits until it has opened the backend.
 * Returns 0 and *out, or -1 with *cause (caller frees). base must have been
 * created after evthread_use_pthreads().
 */
int executor_start(struct event_base *base, const struct executor_config *cfg,
    executor_deliver_fn deliver, void *arg, struct executor **out,
    char **cause);

/*
 * Stops inference work: queued requests finish with code and msg, later
 * submissions are refused, and this waits for the batch running now, whose
 * results are handed to deliver before it returns. Loads and frees
 * still run until executor_free. Main loop thread only.
 */
void executor_quiesce(struct executor *ex, int code, const char *msg);

/*
 * Runs the remaining loads (which fail with ERR_SHUTDOWN) and frees, closes
 * the backend, joins the thread and frees the executor. Everything finished
 * has been handed to deliver when it returns. Accepts NULL.
 */
void executor_free(struct executor *ex);

/*
 * Queues an inference request. Returns 0, or -1 when the queue is full (the
 * request is untouched and still the caller's).
 */
int executor_submit(struct executor *ex, struct request *r);

/*
 * Queues the requests of list (left empty) under one lock, so the executor
 * sees them together and can run them as one batch. Those refused (queue
 * full, stopping) are moved to refused, untouched.
 */
void executor_submit_list(struct executor *ex, struct request_list *list,
    struct request_list *refused);

/*
 * Queues a LOAD, FREE or UNMAP request ahead of inference work (it runs
 * once nothing is in flight).
 */
void executor_control(struct executor *ex, struct request *r);

/* Finishes every queued request of conn with ERR_DISCONNECTED, through deliver. */
void executor_cancel_conn(struct executor *ex, const struct conn *conn);

/* Counts a request rejected as busy in m's stats. */
void executor_count_busy(struct executor *ex, struct model *m);

/* Copies m's stats under the executor's lock. */
void executor_model_stats(struct executor *ex, struct model *m,
    struct model_stats *out);

/* Backend name, and backend calls made on / off the executor thread. */
const char *executor_backend(const struct executor *ex);
uint64_t executor_backend_calls(const struct executor *ex);
uint64_t executor_foreign_calls(const struct executor *ex);

/*
 * Requests the engine answered in their ring slots before their batch was
 * retired (engine_submit_answers).
 */
uint64_t executor_answered_early(struct executor *ex);

/* Time the executor spent staging, launching, encoding and posting (ns). */
uint64_t executor_busy_ns(struct executor *ex);

/* Time the executor spent in finish, waiting for the device (ns). */
uint64_t executor_wait_ns(struct executor *ex);

#endif
