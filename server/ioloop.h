/*
 * ioloop: one event loop that serves connections, with its mailbox. The
 * main loop runs on the main thread over the main event base; every other
 * loop runs on a thread of its own (agxqd --io-threads). Any thread may
 * hand a loop finished requests or a task; the loop runs them on its own
 * thread, the requests first, so whatever a loop owns (its connections)
 * is only ever touched by that thread.
 */
#ifndef AGXQ_IOLOOP_H
#define AGXQ_IOLOOP_H

#include <stdint.h>

#include <event2/event.h>

#include "request.h"

struct ioloop;

/* Runs on the loop's thread with each finished request; takes ownership. */
typedef void (*ioloop_done_fn)(struct request *r, void *arg);

/* A task handed to a loop: runs on the loop's thread. */
typedef void (*ioloop_task_fn)(void *arg, intptr_t val);

struct ioloop_config {
	uint32_t index;             /* 0: the main loop */
	uint32_t spin_us;           /* poll this long after traffic; 0: never */
	uint64_t (*activity)(void *arg); /* grows with this loop's traffic */
	void *activity_arg;
	/*
	 * Optional, with activity_arg: poll takes work that arrives without
	 * an event (request rings) and returns how much it took; it runs on
	 * every turn while the loop polls, and once more before the loop
	 * blocks. awake says when the loop starts and stops polling.
	 */
	uint32_t (*poll)(void *arg);
	void (*awake)(void *arg, int on);
	/*
	 * Optional, with activity_arg: nonzero while work the loop polls for
	 * is still out (ring requests in flight, whose clients post again
	 * as soon as they are answered): the loop polls on meanwhile.
	 */
	int (*hold)(void *arg);
	ioloop_done_fn done;
	void *arg;                  /* for done */
};

/*
 * Makes a loop over base, or over a base of its own when base is NULL
 * (created after evthread_use_pthreads). Returns 0 and *out, or -1 with
 * *cause.
 */
int ioloop_new(struct event_base *base, const struct ioloop_config *cfg,
    struct ioloop **out, char **cause);

/* The loop's event base. */
struct event_base *ioloop_base(struct ioloop *l);

/* The loop's index (0: the main loop). */
uint32_t ioloop_index(const struct ioloop *l);

/* Loop thread: whether the loop is polling now (not blocked in the kernel). */
int ioloop_polling(struct ioloop *l);

/* Runs the loop on this thread until it is told to exit. */
void ioloop_run(struct ioloop *l);

/* Runs the loop on a new thread. Returns 0, or -1 with *cause. */
int ioloop_start(struct ioloop *l, char **cause);

/* Any thread: hands the loop the requests of list (left empty). */
void ioloop_deliver(struct ioloop *l, struct request_list *list);

/* Any thread: runs fn(arg, val) on the loop's thread soon. */
void ioloop_post(struct ioloop *l, ioloop_task_fn fn, void *arg,
    intptr_t val);

/* Any thread: ends the loop once its current callbacks return. */
void ioloop_exit(struct ioloop *l);

/* Waits for a loop started with ioloop_start to end. */
void ioloop_join(struct ioloop *l);

/*
 * After the loop has ended: runs what is still in its mailbox on this
 * thread, then frees the loop (and its base, if its own). Accepts NULL.
 */
void ioloop_free(struct ioloop *l);

#endif
