/*
 * ioloop: an event loop serving connections, on the main thread or on one
 * of its own, and the mailbox through which other threads hand it work.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "ioloop.h"
#include "log.h"
#include "request.h"

struct ioloop_task {
	TAILQ_ENTRY(ioloop_task) entry;
	ioloop_task_fn fn;
	void *arg;
	intptr_t val;
};
TAILQ_HEAD(ioloop_task_list, ioloop_task);

struct ioloop {
	struct ioloop_config cfg;
	struct event_base *base;
	int own_base;
	pthread_t thread;
	int threaded;

	pthread_mutex_t lock;
	struct request_list done;       /* under lock */
	struct ioloop_task_list tasks;  /* under lock */
	int pending;                    /* under lock: ev_mail is active */
	struct event *ev_mail;

	/*
	 * While the loop polls (ioloop_run), it empties the mailbox itself
	 * whenever has_mail is set, and posters skip the wake-up through
	 * ev_mail, which costs a write and a read of the base's notification
	 * descriptor per completion. Before it may block it sets sleeping
	 * and looks at has_mail once more; a poster sets has_mail and then
	 * looks at sleeping. Both sequentially consistent: one of the two
	 * sees the other, so no mail waits for a wake-up that never comes.
	 */
	atomic_int sleeping;
	atomic_int has_mail;
};

/* Empties the mailbox on the loop's thread: the requests, then the tasks. */
static void
ioloop_mail_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ioloop *l = arg;
	struct request_list done;
	struct ioloop_task_list tasks;
	struct request *r;
	struct ioloop_task *t;

	(void)fd;
	(void)what;
	TAILQ_INIT(&done);
	TAILQ_INIT(&tasks);
	pthread_mutex_lock(&l->lock);
	TAILQ_CONCAT(&done, &l->done, entry);
	TAILQ_CONCAT(&tasks, &l->tasks, entry);
	l->pending = 0;
	atomic_store(&l->has_mail, 0);
	pthread_mutex_unlock(&l->lock);
	while ((r = TAILQ_FIRST(&done)) != NULL) {
		TAILQ_REMOVE(&done, r, entry);
		l->cfg.done(r, l->cfg.arg);
	}
	while ((t = TAILQ_FIRST(&tasks)) != NULL) {
		TAILQ_REMOVE(&tasks, t, entry);
		t->fn(t->arg, t->val);
		free(t);
	}
}

/* Makes a loop over base, or over a base of its own. */
int
ioloop_new(struct event_base *base, const struct ioloop_config *cfg,
    struct ioloop **out, char **cause)
{
	struct ioloop *l;

	if ((l = calloc(1, sizeof *l)) == NULL)
		goto fail_nomem;
	l->cfg = *cfg;
	atomic_init(&l->sleeping, 1);
	atomic_init(&l->has_mail, 0);
	TAILQ_INIT(&l->done);
	TAILQ_INIT(&l->tasks);
	pthread_mutex_init(&l->lock, NULL);
	if (base == NULL) {
		if ((base = event_base_new()) == NULL)
			goto fail_free;
		l->own_base = 1;
	}
	l->base = base;
	if ((l->ev_mail = event_new(base, -1, 0, ioloop_mail_cb, l)) == NULL)
		goto fail_base;
	*out = l;
	return 0;

fail_base:
	if (l->own_base)
		event_base_free(l->base);
fail_free:
	pthread_mutex_destroy(&l->lock);
	free(l);
fail_nomem:
	if (asprintf(cause, "cannot make an event loop: out of memory") < 0)
		*cause = NULL;
	return -1;
}

/* The loop's event base. */
struct event_base *
ioloop_base(struct ioloop *l)
{
	return l->base;
}

/* The loop's index. */
uint32_t
ioloop_index(const struct ioloop *l)
{
	return l->cfg.index;
}

/* Whether the loop polls now. */
int
ioloop_polling(struct ioloop *l)
{
	return l->cfg.spin_us > 0 && !atomic_load(&l->sleeping);
}

/* Tells the poll hook's owner that the loop starts or stops polling. */
static void
ioloop_set_awake(struct ioloop *l, int on)
{
	if (l->cfg.awake != NULL)
		l->cfg.awake(l->cfg.activity_arg, on);
}

/*
 * Runs the loop until it exits. With spin_us set (cores to spare), after
 * traffic it polls for events without sleeping for spin_us, so the next
 * request, or the executor's next completion, is taken without a wake-up
 * from the kernel (10-20 us on a VM; measured in docs/GPU.md).
 */
void
ioloop_run(struct ioloop *l)
{
	struct event_base *base = l->base;
	uint64_t seen = 0, now, until = 0, a;

	/* An I/O thread may have no connection, hence no event, for a while. */
	if (l->cfg.spin_us == 0) {
		event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
		return;
	}
	atomic_store(&l->sleeping, 0);
	ioloop_set_awake(l, 1);
	while (!event_base_got_exit(base) && !event_base_got_break(base)) {
		now = request_now_ns();
		if (now < until) {
			if (event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY |
			    EVLOOP_NONBLOCK) != 0)
				break;
		} else if (l->cfg.hold != NULL &&
		    l->cfg.hold(l->cfg.activity_arg)) {
			until = now + (uint64_t)l->cfg.spin_us * 1000;
			continue;
		} else {
			/* The last look at the rings comes after awake is 0. */
			atomic_store(&l->sleeping, 1);
			ioloop_set_awake(l, 0);
			if (atomic_load(&l->has_mail) == 0 &&
			    (l->cfg.poll == NULL ||
			    l->cfg.poll(l->cfg.activity_arg) == 0) &&
			    event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY |
			    EVLOOP_ONCE) != 0)
				break;
			atomic_store(&l->sleeping, 0);
			ioloop_set_awake(l, 1);
		}
		if (atomic_load(&l->has_mail))
			ioloop_mail_cb(-1, 0, l);
		if (l->cfg.poll != NULL)
			(void)l->cfg.poll(l->cfg.activity_arg);
		if ((a = l->cfg.activity(l->cfg.activity_arg)) != seen) {
			seen = a;
			until = request_now_ns() + (uint64_t)l->cfg.spin_us * 1000;
		}
	}
}

/* Thread body of a loop of its own. */
static void *
ioloop_main(void *arg)
{
	struct ioloop *l = arg;

#ifdef __linux__
	char name[16];

	snprintf(name, sizeof name, "agxqd-io%u", l->cfg.index);
	pthread_setname_np(pthread_self(), name); /* for top -H */
#endif
	ioloop_run(l);
	return NULL;
}

/* Runs the loop on a new thread. */
int
ioloop_start(struct ioloop *l, char **cause)
{
	if (pthread_create(&l->thread, NULL, ioloop_main, l) != 0) {
		if (asprintf(cause, "cannot start I/O thread %u",
		    l->cfg.index) < 0)
			*cause = NULL;
		return -1;
	}
	l->threaded = 1;
	return 0;
}

/*
 * Lock held, mail just added: flags it, and wakes the loop through ev_mail
 * when it may be blocked (see struct ioloop) and is not woken already.
 */
static void
ioloop_wake(struct ioloop *l)
{
	atomic_store(&l->has_mail, 1);
	if (!l->pending && atomic_load(&l->sleeping)) {
		l->pending = 1;
		event_active(l->ev_mail, EV_READ, 0);
	}
}

/* Hands the loop finished requests. */
void
ioloop_deliver(struct ioloop *l, struct request_list *list)
{
	if (TAILQ_EMPTY(list))
		return;
	pthread_mutex_lock(&l->lock);
	TAILQ_CONCAT(&l->done, list, entry);
	ioloop_wake(l);
	pthread_mutex_unlock(&l->lock);
}

/* Hands the loop a task; the daemon dies on its own out-of-memory. */
void
ioloop_post(struct ioloop *l, ioloop_task_fn fn, void *arg, intptr_t val)
{
	struct ioloop_task *t;

	if ((t = malloc(sizeof *t)) == NULL) {
		log_error("out of memory");
		abort();
	}
	t->fn = fn;
	t->arg = arg;
	t->val = val;
	pthread_mutex_lock(&l->lock);
	TAILQ_INSERT_TAIL(&l->tasks, t, entry);
	ioloop_wake(l);
	pthread_mutex_unlock(&l->lock);
}

/* Ends the loop once its current callbacks return. */
void
ioloop_exit(struct ioloop *l)
{
	event_base_loopexit(l->base, NULL);
}

/* Waits for the loop's thread. */
void
ioloop_join(struct ioloop *l)
{
	if (l->threaded) {
		pthread_join(l->thread, NULL);
		l->threaded = 0;
	}
}

/* Runs what is left in the mailbox, then frees the loop. */
void
ioloop_free(struct ioloop *l)
{
	if (l == NULL)
		return;
	ioloop_join(l);
	ioloop_mail_cb(-1, 0, l);
	event_free(l->ev_mail);
	if (l->own_base)
		event_base_free(l->base);
	pthread_mutex_destroy(&l->lock);
	free(l);
}
