/*
 * test_restart: agxqd's replaceable worker. `agxqd start` runs a supervisor
 * (Stats pid) that forks the worker serving requests (Stats worker_pid).
 * A device that cannot be reopened in-process (the CPU backend's injected
 * "sticky" fault, see server/backend_cpu.c), or a worker killed by a
 * signal, makes the supervisor start a new worker on the same socket: sync
 * clients see only right results or AGXQ_EBACKEND for the faulted batch,
 * async callbacks also AGXQ_EAGAIN, and nothing is lost. A worker whose
 * run never returns is killed after --stall-ms and replaced. Too many
 * restarts make it give up; a killed supervisor takes its worker with it;
 * stop ends both, also when it comes just as a killed worker is being
 * replaced.
 */
#include <sys/prctl.h>
#include <sys/wait.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agxq.h"
#include "agxq_direct.h"
#include "codec.h"
#include "daemon_util.h"
#include "testlib.h"

#define RS_NIO 4              /* inputs per model */
#define RS_THREADS 4          /* sync load threads in device_lost */
#define RS_FAULT_EVERY "150"  /* runs per worker before its sticky fault */
#define RS_SLOTS 50000        /* async requests in async_during_loss at most */
#define RS_WINDOW 32          /* async requests in flight */
#define RS_TOL_R 1e-5
#define RS_TOL_A 1e-6
#define RS_TERM_ROUNDS 24     /* daemons in term_right_after_crash */
#define RS_TERM_WAIT_MS 5000  /* for agxqd to go after SIGTERM */

/* The daemon and the expected results of linear and mlp. */
struct rs_env {
	struct du_daemon d;
	agxq_direct *dh;
	agxq_direct_model *dm[2];
	struct du_io io[2][RS_NIO];
};

/* What the daemon's Stats say about its processes. */
struct rs_stats {
	pid_t pid;
	pid_t worker_pid;
	uint32_t worker_restarts;
};

/* One sync load thread: its own client, both models, counts by outcome. */
struct rs_load {
	struct rs_env *e;
	int idx;
	atomic_int *phase;     /* 0: before, 1: after the event, 2: stop */
	agxq_client *c;
	agxq_model *m[2];
	int ok, wrong, backend, disc, again, other;
	int first_other;       /* the first unexpected code */
	atomic_int ok_after;   /* successes in phase 1 */
};

/*
 * Starts a daemon with extra options, its backend faulting (AGXQ_CPU_FAULT_
 * KIND=kind) every fault_every runs (NULL: no faults), and makes the
 * expected results.
 */
static int
rs_setup_kind(struct rs_env *e, const char *fault_every, const char *kind,
    const char *const *extra)
{
	static const agxq_reference which[2] = { AGXQ_REF_LINEAR,
	    AGXQ_REF_MLP };
	int rc;

	memset(e, 0, sizeof *e);
	e->d.pid = -1;
	if (fault_every != NULL) {
		setenv("AGXQ_CPU_FAULT_EVERY", fault_every, 1);
		setenv("AGXQ_CPU_FAULT_KIND", kind, 1);
	}
	rc = du_start(&e->d, extra);
	unsetenv("AGXQ_CPU_FAULT_EVERY");
	unsetenv("AGXQ_CPU_FAULT_KIND");
	CHECK(rc == 0);
	CHECK_OK(agxq_direct_open("cpu", 0, &e->dh));
	for (int k = 0; k < 2; k++) {
		CHECK_OK(du_load_ref(NULL, e->dh, which[k], 7 + k, NULL,
		    &e->dm[k]));
		for (int i = 0; i < RS_NIO; i++)
			CHECK(du_io_make(&e->io[k][i], which[k], 1 + i, 0,
			    100 * k + i, e->dm[k]) == 0);
	}
	return 0;
out:
	return -1;
}

/* rs_setup_kind with sticky faults, as a lost GPU gives. */
static int
rs_setup(struct rs_env *e, const char *fault_every, const char *const *extra)
{
	return rs_setup_kind(e, fault_every, "sticky", extra);
}

/* Prints the last lines of the daemon's log, to show why a case failed. */
static void
rs_log_dump(const struct rs_env *e, int nlines)
{
	char *text, *p;
	int n = 0;

	if ((text = du_log(&e->d)) == NULL)
		return;
	p = text + strlen(text);
	while (p > text && n <= nlines) {
		if (*--p == '\n')
			n++;
	}
	if (*p == '\n')
		p++;
	printf("  --- the daemon's log (end) ---\n%s  ---\n", p);
	free(text);
}

/*
 * Frees what rs_setup made and kills what is left of the daemon; after a
 * failure, shows the end of the daemon's log first.
 */
static void
rs_teardown(struct rs_env *e)
{
	if (testlib_failed && e->d.dir[0] != '\0')
		rs_log_dump(e, 30);
	for (int k = 0; k < 2; k++) {
		agxq_direct_unload(e->dm[k]);
		for (int i = 0; i < RS_NIO; i++)
			du_io_free(&e->io[k][i]);
	}
	agxq_direct_close(e->dh);
	du_cleanup(&e->d);
}

/*
 * Reads the daemon's Stats over a raw connection, trying again for up to
 * timeout_ms while a worker is being replaced. 0 or -1.
 */
static int
rs_stats(const char *sock, struct rs_stats *st, int timeout_ms)
{
	uint64_t end = du_now_ms() + (uint64_t)timeout_ms;
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep;
	Agxq__StatsRequest sr = AGXQ__STATS_REQUEST__INIT;
	int fd, got = 0;

	sr.request_id = 1;
	env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
	env.stats_request = &sr;
	for (;;) {
		rep = NULL;
		if ((fd = du_connect_hello(sock)) >= 0) {
			if (du_send_env(fd, &env) == 0 &&
			    du_recv(fd, 3000, &rep) == 1 &&
			    rep->body_case == AGXQ__ENVELOPE__BODY_STATS) {
				st->pid = (pid_t)rep->stats->pid;
				st->worker_pid = (pid_t)rep->stats->worker_pid;
				st->worker_restarts =
				    rep->stats->worker_restarts;
				got = 1;
			}
			codec_envelope_free(rep);
			close(fd);
		}
		if (got)
			return 0;
		if (du_now_ms() >= end) {
			printf("  no Stats from %s\n", sock);
			return -1;
		}
		usleep(20000);
	}
}

/* Connects l's client and loads linear and mlp into it. */
static int
rs_load_init(struct rs_load *l, struct rs_env *e, int idx, atomic_int *phase)
{
	static const agxq_reference which[2] = { AGXQ_REF_LINEAR,
	    AGXQ_REF_MLP };

	memset(l, 0, sizeof *l);
	l->e = e;
	l->idx = idx;
	l->phase = phase;
	CHECK_OK(agxq_connect(e->d.sock, &l->c));
	for (int k = 0; k < 2; k++)
		CHECK_OK(du_load_ref(l->c, NULL, which[k], 7 + k, &l->m[k],
		    NULL));
	return 0;
out:
	return -1;
}

/* Frees l's models and client. */
static void
rs_load_free(struct rs_load *l)
{
	for (int k = 0; k < 2; k++)
		agxq_model_unload(l->m[k]);
	agxq_close(l->c);
	l->c = NULL;
}

/* Sends sync requests, alternating the models, until told to stop. */
static void *
rs_load_main(void *arg)
{
	struct rs_load *l = arg;
	struct rs_env *e = l->e;
	agxq_result *r;
	int ph, rc, k, i;

	for (int n = 0; (ph = atomic_load(l->phase)) != 2; n++) {
		k = (n + l->idx) & 1;
		i = (n / 2 + l->idx) % RS_NIO;
		r = NULL;
		rc = agxq_infer(l->m[k], &e->io[k][i].in, 1, NULL, &r);
		if (rc == 0 && du_io_check(&e->io[k][i], r, RS_TOL_R,
		    RS_TOL_A) != 0)
			l->wrong++;
		else if (rc == 0) {
			l->ok++;
			atomic_fetch_add(&l->ok_after, ph == 1);
		} else if (rc == AGXQ_EBACKEND)
			l->backend++;
		else if (rc == AGXQ_EDISCONNECTED)
			l->disc++;
		else if (rc == AGXQ_EAGAIN)
			l->again++;
		else if (l->other++ == 0)
			l->first_other = rc;
		agxq_result_free(r);
		if (rc != 0)
			usleep(2000); /* don't spin while the daemon is away */
	}
	return NULL;
}

/* Sums the counts of n load threads into sum and prints them. */
static void
rs_load_sum(const struct rs_load *l, int n, struct rs_load *sum)
{
	memset(sum, 0, sizeof *sum);
	for (int j = 0; j < n; j++) {
		sum->ok += l[j].ok;
		sum->wrong += l[j].wrong;
		sum->backend += l[j].backend;
		sum->disc += l[j].disc;
		sum->again += l[j].again;
		sum->other += l[j].other;
		if (l[j].other > 0)
			printf("  thread %d: unexpected %s\n", j,
			    agxq_strerror(l[j].first_other));
	}
	printf("  sync: %d right, %d wrong, %d EBACKEND, %d EDISCONNECTED, "
	    "%d EAGAIN, %d other\n", sum->ok, sum->wrong, sum->backend,
	    sum->disc, sum->again, sum->other);
}

/* Polls Stats until worker_restarts >= want or ms pass; the last Stats. */
static int
rs_wait_restarts(struct rs_env *e, uint32_t want, int ms, struct rs_stats *st)
{
	uint64_t end = du_now_ms() + (uint64_t)ms;

	do {
		usleep(100000);
		if (rs_stats(e->d.sock, st, 3000) != 0)
			return -1;
	} while (st->worker_restarts < want && du_now_ms() < end);
	return 0;
}

/*
 * Sticky device faults under sync load from 4 clients: the faulted batches
 * fail with AGXQ_EBACKEND, every other request gives the right result (the
 * library retries what the resetting worker answered AGXQ_EAGAIN), and the
 * supervisor replaces the worker each time.
 */
static void
case_device_lost(void)
{
	static const char *const extra[] = { "--max-batch", "8", NULL };
	struct rs_env e;
	struct rs_load l[RS_THREADS], sum;
	struct rs_stats st0, st;
	pthread_t tid[RS_THREADS];
	atomic_int phase;
	int started = 0, setup;

	atomic_init(&phase, 0);
	memset(l, 0, sizeof l);
	memset(&st, 0, sizeof st);
	setup = rs_setup(&e, RS_FAULT_EVERY, extra);
	CHECK(setup == 0);
	CHECK(rs_stats(e.d.sock, &st0, 3000) == 0);
	CHECK(st0.pid == e.d.pid && st0.worker_pid > 0);
	CHECK(st0.worker_pid != st0.pid && st0.worker_restarts == 0);
	for (int j = 0; j < RS_THREADS; j++)
		CHECK(rs_load_init(&l[j], &e, j, &phase) == 0);
	for (; started < RS_THREADS; started++)
		CHECK(pthread_create(&tid[started], NULL, rs_load_main,
		    &l[started]) == 0);
	CHECK(rs_wait_restarts(&e, 2, 8000, &st) == 0);
out:
	atomic_store(&phase, 2);
	for (int j = 0; j < started; j++)
		pthread_join(tid[j], NULL);
	if (started == RS_THREADS) {
		rs_load_sum(l, RS_THREADS, &sum);
		EXPECT(rs_stats(e.d.sock, &st, 3000) == 0);
		printf("  worker %d -> %d, %u restarts\n", (int)st0.worker_pid,
		    (int)st.worker_pid, st.worker_restarts);
		EXPECT(sum.wrong == 0);
		EXPECT(sum.disc == 0 && sum.again == 0 && sum.other == 0);
		EXPECT(sum.ok > 0);
		for (int j = 0; j < RS_THREADS; j++)
			EXPECT(l[j].ok > 0);
		/* At most RS_THREADS sync requests are in flight per fault. */
		EXPECT(sum.backend >= 1);
		EXPECT(sum.backend <= ((int)st.worker_restarts + 1) *
		    RS_THREADS);
		EXPECT(st.pid == e.d.pid);
		EXPECT(st.worker_pid > 0 && st.worker_pid != st0.worker_pid);
		EXPECT(st.worker_restarts >= 1);
		EXPECT(du_wait_gone(st0.worker_pid, 2000) == 0);
		EXPECT(du_log_has(&e.d, "starting a new worker", 2000));
	}
	for (int j = 0; j < RS_THREADS; j++)
		rs_load_free(&l[j]);
	if (setup == 0)
		EXPECT(du_stop(&e.d) == 0);
	rs_teardown(&e);
}

/*
 * Sticky device faults under an async flood: every callback fires once,
 * with a right result, AGXQ_EBACKEND or AGXQ_EAGAIN; never
 * AGXQ_EDISCONNECTED.
 */
static void
case_async_during_loss(void)
{
	static const char *const extra[] = { "--max-batch", "8", NULL };
	struct rs_env e;
	struct rs_load l;
	struct rs_stats st0, st;
	struct du_track t;
	atomic_int phase;
	uint64_t end, next_poll;
	int setup, sent = 0, fired, rc, k, i, imm_disc = 0, imm_again = 0;
	int imm_other = 0, first_other = 0;

	atomic_init(&phase, 0);
	memset(&l, 0, sizeof l);
	memset(&t, 0, sizeof t);
	memset(&st, 0, sizeof st);
	setup = rs_setup(&e, RS_FAULT_EVERY, extra);
	CHECK(setup == 0);
	CHECK(rs_stats(e.d.sock, &st0, 3000) == 0);
	CHECK(rs_load_init(&l, &e, 0, &phase) == 0);
	CHECK(du_track_init(&t, RS_SLOTS, RS_TOL_R, RS_TOL_A) == 0);
	end = du_now_ms() + 8000;
	next_poll = du_now_ms() + 100;
	while (sent < RS_SLOTS && du_now_ms() < end) {
		if (du_now_ms() >= next_poll) {
			CHECK(rs_stats(e.d.sock, &st, 3000) == 0);
			if (st.worker_restarts >= 2)
				break;
			next_poll = du_now_ms() + 100;
		}
		pthread_mutex_lock(&t.mu);
		fired = t.done;
		pthread_mutex_unlock(&t.mu);
		if (sent - fired >= RS_WINDOW &&
		    du_track_wait(&t, sent - RS_WINDOW / 2, 10000) != 0)
			break;
		k = sent & 1;
		i = (sent / 2) % RS_NIO;
		rc = agxq_infer_async(l.m[k], &e.io[k][i].in, 1, NULL,
		    du_track_cb, du_track_arg(&t, sent, &e.io[k][i]));
		if (rc == 0) {
			sent++;
			continue;
		}
		/* Failed at once: no callback. Allowed while reconnecting. */
		if (rc == AGXQ_EDISCONNECTED)
			imm_disc++;
		else if (rc == AGXQ_EAGAIN)
			imm_again++;
		else if (imm_other++ == 0)
			first_other = rc;
		usleep(2000);
	}
out:
	if (t.slots != NULL) {
		EXPECT(du_track_wait(&t, sent, 10000) == 0);
		pthread_mutex_lock(&t.mu);
		printf("  async: %d sent, %d fired, %d right, %d wrong, "
		    "%d EBACKEND, %d EAGAIN, %d EDISCONNECTED; failed at "
		    "once: %d EDISCONNECTED, %d EAGAIN, %d other (%s)\n", sent,
		    t.done, t.ok, t.mismatch, t.count[-AGXQ_EBACKEND],
		    t.count[-AGXQ_EAGAIN], t.count[-AGXQ_EDISCONNECTED],
		    imm_disc, imm_again, imm_other,
		    imm_other > 0 ? agxq_strerror(first_other) : "-");
		EXPECT(t.done == sent && t.dup == 0 && t.mismatch == 0);
		EXPECT(t.ok > 0);
		EXPECT(t.count[-AGXQ_EDISCONNECTED] == 0);
		EXPECT(t.ok + t.count[-AGXQ_EBACKEND] + t.count[-AGXQ_EAGAIN] ==
		    t.done);
		EXPECT(imm_other == 0);
		pthread_mutex_unlock(&t.mu);
		EXPECT(rs_stats(e.d.sock, &st, 3000) == 0);
		printf("  worker %d -> %d, %u restarts\n", (int)st0.worker_pid,
		    (int)st.worker_pid, st.worker_restarts);
		EXPECT(st.worker_restarts >= 1 && st.pid == e.d.pid);
	}
	rs_load_free(&l);
	du_track_free(&t);
	if (setup == 0)
		EXPECT(du_stop(&e.d) == 0);
	rs_teardown(&e);
}

/*
 * kill -9 of the worker under sync load from 2 clients: a new worker takes
 * over the socket, both clients get right results again within seconds.
 */
static void
case_worker_killed(void)
{
	struct rs_env e;
	struct rs_load l[2], sum;
	struct rs_stats st0, st;
	pthread_t tid[2];
	atomic_int phase;
	uint64_t t_kill = 0, end;
	int started = 0, setup, all = 0;

	atomic_init(&phase, 0);
	memset(l, 0, sizeof l);
	memset(&st, 0, sizeof st);
	setup = rs_setup(&e, NULL, NULL);
	CHECK(setup == 0);
	CHECK(rs_stats(e.d.sock, &st0, 3000) == 0);
	CHECK(st0.worker_pid > 0 && st0.worker_pid != e.d.pid);
	for (int j = 0; j < 2; j++)
		CHECK(rs_load_init(&l[j], &e, j, &phase) == 0);
	for (; started < 2; started++)
		CHECK(pthread_create(&tid[started], NULL, rs_load_main,
		    &l[started]) == 0);
	usleep(300000);
	t_kill = du_now_ms();
	CHECK(kill(st0.worker_pid, SIGKILL) == 0);
	CHECK(du_wait_gone(st0.worker_pid, 2000) == 0);
	atomic_store(&phase, 1);
	end = du_now_ms() + 5000;
	do {
		usleep(20000);
		all = atomic_load(&l[0].ok_after) >= 3 &&
		    atomic_load(&l[1].ok_after) >= 3;
	} while (!all && du_now_ms() < end);
	printf("  both clients right again %llu ms after the kill\n",
	    (unsigned long long)(du_now_ms() - t_kill));
out:
	atomic_store(&phase, 2);
	for (int j = 0; j < started; j++)
		pthread_join(tid[j], NULL);
	if (started == 2) {
		rs_load_sum(l, 2, &sum);
		EXPECT(all);
		EXPECT(sum.wrong == 0 && sum.backend == 0 && sum.again == 0 &&
		    sum.other == 0);
		EXPECT(rs_stats(e.d.sock, &st, 3000) == 0);
		printf("  worker %d -> %d, %u restarts\n", (int)st0.worker_pid,
		    (int)st.worker_pid, st.worker_restarts);
		EXPECT(st.pid == e.d.pid);
		EXPECT(st.worker_restarts == 1);
		EXPECT(st.worker_pid > 0 && st.worker_pid != st0.worker_pid);
		EXPECT(du_alive(st.worker_pid));
		EXPECT(du_log_has(&e.d, "starting a new worker", 2000));
	}
	for (int j = 0; j < 2; j++)
		rs_load_free(&l[j]);
	if (setup == 0)
		EXPECT(du_stop(&e.d) == 0);
	rs_teardown(&e);
}

/*
 * A run that never returns (AGXQ_CPU_FAULT_KIND=hang: the 12th of each
 * worker, as a GPU kernel that never ends) under --stall-ms 1000: the
 * supervisor kills the stuck worker and starts another, and a sync
 * client's 16 requests all come back within seconds, right, but for the
 * hung one, which may fail (it died with its worker) and is never wrong.
 * The log says what happened. Without the watchdog the 12th request never
 * returns and the case fails on its time limit.
 */
static void
case_stall(void)
{
	static const char *const extra[] = { "--stall-ms", "1000", NULL };
	struct rs_env e;
	struct rs_load l;
	struct rs_stats st0, st;
	atomic_int phase;
	agxq_result *r;
	uint64_t t0 = 0, took = 0;
	int setup, rc, k, i, ok = 0, wrong = 0, failed = 0, first_fail = 0;

	atomic_init(&phase, 0);
	memset(&l, 0, sizeof l);
	setup = rs_setup_kind(&e, "12", "hang", extra);
	CHECK(setup == 0);
	CHECK(rs_stats(e.d.sock, &st0, 3000) == 0);
	CHECK(rs_load_init(&l, &e, 0, &phase) == 0);
	t0 = du_now_ms();
	for (int n = 0; n < 16; n++) {
		k = n & 1;
		i = (n / 2) % RS_NIO;
		r = NULL;
		rc = agxq_infer(l.m[k], &e.io[k][i].in, 1, NULL, &r);
		if (rc == 0 && du_io_check(&e.io[k][i], r, RS_TOL_R,
		    RS_TOL_A) != 0)
			wrong++;
		else if (rc == 0)
			ok++;
		else if (failed++ == 0)
			first_fail = rc;
		agxq_result_free(r);
	}
	took = du_now_ms() - t0;
	printf("  16 requests in %llu ms: %d right, %d wrong, %d failed "
	    "(%s)\n", (unsigned long long)took, ok, wrong, failed,
	    failed > 0 ? agxq_strerror(first_fail) : "-");
	CHECK(rs_stats(e.d.sock, &st, 3000) == 0);
	printf("  worker %d -> %d, %u restarts\n", (int)st0.worker_pid,
	    (int)st.worker_pid, st.worker_restarts);
	EXPECT(wrong == 0);
	EXPECT(ok >= 15 && failed <= 1);
	EXPECT(took < 10000);
	EXPECT(st.pid == e.d.pid && st.worker_restarts == 1);
	EXPECT(st.worker_pid > 0 && st.worker_pid != st0.worker_pid);
	EXPECT(du_wait_gone(st0.worker_pid, 2000) == 0);
	EXPECT(du_log_has(&e.d, "(--stall-ms 1000); killing it", 2000));
	EXPECT(du_log_has(&e.d, "stalled on its device and was killed; "
	    "starting a new worker", 2000));
out:
	rs_load_free(&l);
	if (setup == 0)
		EXPECT(du_stop(&e.d) == 0);
	rs_teardown(&e);
}

/*
 * kill -9 of the supervisor: its worker follows within 2 s, and a new
 * agxqd starts on the same socket and serves the old client again.
 */
static void
case_supervisor_killed(void)
{
	struct rs_env e;
	struct rs_load l;
	struct rs_stats st0, st;
	atomic_int phase;
	agxq_result *r = NULL;
	uint64_t end;
	int setup, rc, restarted = 0;

	atomic_init(&phase, 0);
	memset(&l, 0, sizeof l);
	setup = rs_setup(&e, NULL, NULL);
	CHECK(setup == 0);
	CHECK(rs_stats(e.d.sock, &st0, 3000) == 0);
	CHECK(st0.worker_pid > 0 && st0.worker_pid != e.d.pid);
	CHECK(rs_load_init(&l, &e, 0, &phase) == 0);
	CHECK_OK(agxq_infer(l.m[1], &e.io[1][0].in, 1, NULL, &r));
	agxq_result_free(r);
	r = NULL;
	CHECK(kill(e.d.pid, SIGKILL) == 0);
	CHECK(du_wait_gone(e.d.pid, 2000) == 0);
	if (du_wait_gone(st0.worker_pid, 2000) != 0) {
		printf("  worker %d still runs 2 s after its supervisor "
		    "died\n", (int)st0.worker_pid);
		kill(st0.worker_pid, SIGKILL);
		testlib_failed = 1;
		goto out;
	}
	CHECK(du_restart(&e.d, NULL) == 0);
	restarted = 1;
	CHECK(rs_stats(e.d.sock, &st, 3000) == 0);
	EXPECT(st.pid == e.d.pid && st.pid != st0.pid);
	EXPECT(st.worker_pid > 0 && st.worker_pid != st0.worker_pid);
	EXPECT(st.worker_restarts == 0);
	/* The old client reconnects to the new daemon. */
	end = du_now_ms() + 3000;
	do {
		agxq_result_free(r);
		r = NULL;
		if ((rc = agxq_infer(l.m[1], &e.io[1][0].in, 1, NULL,
		    &r)) != AGXQ_EDISCONNECTED)
			break;
		usleep(20000);
	} while (du_now_ms() < end);
	EXPECT(rc == 0);
	if (rc == 0)
		EXPECT(du_io_check(&e.io[1][0], r, RS_TOL_R, RS_TOL_A) == 0);
	else
		printf("  after the restart: %s\n", agxq_strerror(rc));
out:
	agxq_result_free(r);
	rs_load_free(&l);
	if (restarted)
		EXPECT(du_stop(&e.d) == 0);
	rs_teardown(&e);
}

/*
 * A device that faults on every run, --max-restarts 3: each request fails
 * with AGXQ_EBACKEND until the supervisor gives up, removes its socket and
 * exits; then requests fail to connect.
 */
static void
case_give_up(void)
{
	static const char *const extra[] = { "--max-restarts", "3", NULL };
	struct rs_env e;
	struct rs_load l;
	struct rs_stats st0;
	atomic_int phase;
	agxq_result *r;
	uint64_t t0, end, t1, slowest = 0;
	int setup, rc, backend = 0, gone_err = 0, ok = 0, other = 0;
	int first_other = 0, calls = 0, sup_gone = 0;

	atomic_init(&phase, 0);
	memset(&l, 0, sizeof l);
	setup = rs_setup(&e, "1", extra);
	CHECK(setup == 0);
	CHECK(rs_stats(e.d.sock, &st0, 3000) == 0);
	CHECK(rs_load_init(&l, &e, 0, &phase) == 0);
	t0 = du_now_ms();
	end = t0 + 6000;
	/* Requests until the daemon is gone and one has failed to connect. */
	while (du_now_ms() < end) {
		r = NULL;
		t1 = du_now_ms();
		rc = agxq_infer(l.m[0], &e.io[0][0].in, 1, NULL, &r);
		agxq_result_free(r);
		if (du_now_ms() - t1 > slowest)
			slowest = du_now_ms() - t1;
		calls++;
		if (rc == AGXQ_EBACKEND)
			backend++;
		else if (rc == AGXQ_ECONNECT || rc == AGXQ_EDISCONNECTED)
			gone_err++;
		else if (rc == 0)
			ok++;
		else if (other++ == 0)
			first_other = rc;
		if (!du_alive(e.d.pid)) {
			sup_gone = 1;
			if (rc == AGXQ_ECONNECT || rc == AGXQ_EDISCONNECTED)
				break;
		}
		if (rc != AGXQ_EBACKEND)
			usleep(20000);
	}
	printf("  %d calls in %llu ms (slowest %llu ms): %d EBACKEND, %d "
	    "connect/disconnect, %d right, %d other (%s)\n", calls,
	    (unsigned long long)(du_now_ms() - t0),
	    (unsigned long long)slowest, backend, gone_err, ok, other,
	    other > 0 ? agxq_strerror(first_other) : "-");
	EXPECT(ok == 0 && other == 0);
	EXPECT(backend >= 1 && backend <= 3 + 2);
	EXPECT(gone_err >= 1);
	EXPECT(sup_gone || du_wait_gone(e.d.pid, 500) == 0);
	EXPECT(du_wait_gone(st0.worker_pid, 2000) == 0);
	if (access(e.d.sock, F_OK) == 0 || errno != ENOENT) {
		printf("  the socket is still there after giving up\n");
		testlib_failed = 1;
	}
	EXPECT(du_log_has(&e.d, "giving up", 1000));
out:
	rs_load_free(&l);
	rs_teardown(&e);
}

/* agxqd stop ends the supervisor and its worker, removes socket and lock. */
static void
case_stop(void)
{
	struct rs_env e;
	struct rs_stats st0;
	char lock[128];
	int setup;

	setup = rs_setup(&e, NULL, NULL);
	CHECK(setup == 0);
	CHECK(rs_stats(e.d.sock, &st0, 3000) == 0);
	CHECK(st0.worker_pid > 0 && du_alive(st0.worker_pid));
	snprintf(lock, sizeof lock, "%s.lock", e.d.sock);
	CHECK(access(lock, F_OK) == 0);
	EXPECT(du_stop(&e.d) == 0);
	EXPECT(du_wait_gone(st0.worker_pid, 2000) == 0);
	EXPECT(access(e.d.sock, F_OK) != 0);
	if (access(lock, F_OK) == 0) {
		printf("  %s left behind\n", lock);
		testlib_failed = 1;
	}
out:
	rs_teardown(&e);
}

/*
 * A worker that dies badly while agxqd stops makes agxqd exit non-zero and
 * say so: the worker is held stopped (SIGSTOP) while the supervisor gets
 * SIGTERM, then killed.
 */
static void
case_crash_while_stopping(void)
{
	struct rs_env e;
	struct rs_stats st0;
	pid_t sup = -1;
	uint64_t end;
	int setup, status = 0, got = 0;

	memset(&e, 0, sizeof e);
	/* The daemon detaches: as subreaper we become its parent. */
	CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0);
	setup = rs_setup(&e, NULL, NULL);
	CHECK(setup == 0);
	sup = e.d.pid;
	CHECK(rs_stats(e.d.sock, &st0, 3000) == 0);
	CHECK(st0.worker_pid > 0 && st0.worker_pid != sup);
	CHECK(kill(st0.worker_pid, SIGSTOP) == 0);
	CHECK(kill(sup, SIGTERM) == 0);
	usleep(300000); /* the supervisor has the signal and forwarded it */
	CHECK(kill(st0.worker_pid, SIGKILL) == 0);
	end = du_now_ms() + 5000;
	while (got == 0 && du_now_ms() < end) {
		if ((got = waitpid(sup, &status, WNOHANG)) == 0)
			usleep(20000);
	}
	CHECK(got == sup);
	e.d.pid = -1;
	printf("  agxqd exit status %d\n", WIFEXITED(status) ?
	    WEXITSTATUS(status) : -1);
	EXPECT(WIFEXITED(status) && WEXITSTATUS(status) != 0);
	EXPECT(du_log_has(&e.d, "while stopping", 2000));
	EXPECT(access(e.d.sock, F_OK) != 0);
out:
	if (got != sup && sup > 0)
		kill(sup, SIGKILL);
	rs_teardown(&e);
	prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

/*
 * SIGTERM 0 to 20 ms after the worker's SIGKILL, while the supervisor may
 * be forking the next worker, still stops agxqd within RS_TERM_WAIT_MS: a
 * signal that reaches the fresh child before it has dropped the
 * supervisor's handler must not be lost. A fresh daemon each round.
 */
static void
case_term_right_after_crash(void)
{
	static const int gap_us[] = { 0, 1000, 2000, 5000, 10000, 20000 };
	struct rs_env e;
	pid_t worker;
	uint64_t t0, took, slowest = 0;
	char *text;
	int round, gap, forked = 0;

	memset(&e, 0, sizeof e);
	e.d.pid = -1;
	for (round = 0; round < RS_TERM_ROUNDS; round++) {
		gap = gap_us[round % TESTLIB_N(gap_us)];
		CHECK(du_start(&e.d, NULL) == 0);
		worker = du_worker_pid(e.d.sock);
		CHECK(worker > 0 && worker != e.d.pid);
		CHECK(kill(worker, SIGKILL) == 0);
		if (gap > 0)
			usleep((useconds_t)gap);
		CHECK(kill(e.d.pid, SIGTERM) == 0);
		t0 = du_now_ms();
		if (du_wait_gone(e.d.pid, RS_TERM_WAIT_MS) != 0) {
			printf("  round %d (SIGTERM %d us after the worker's "
			    "SIGKILL): agxqd %d still runs after %d ms\n",
			    round, gap, (int)e.d.pid, RS_TERM_WAIT_MS);
			kill(e.d.pid, SIGKILL);
			testlib_failed = 1;
			goto out;
		}
		if ((took = du_now_ms() - t0) > slowest)
			slowest = took;
		if (access(e.d.sock, F_OK) == 0) {
			printf("  round %d: the socket is still there\n", round);
			testlib_failed = 1;
			goto out;
		}
		/* Whether the supervisor was replacing the worker by then. */
		if ((text = du_log(&e.d)) != NULL) {
			forked += du_count(text, "starting a new worker") > 0;
			free(text);
		}
		du_cleanup(&e.d);
	}
	printf("  %d rounds: agxqd gone within %llu ms of SIGTERM; %d rounds "
	    "had started a new worker\n", round, (unsigned long long)slowest,
	    forked);
out:
	rs_teardown(&e);
}

static const struct testlib_case cases[] = {
	{ "device_lost", case_device_lost },
	{ "async_during_loss", case_async_during_loss },
	{ "worker_killed", case_worker_killed },
	{ "stall", case_stall },
	{ "supervisor_killed", case_supervisor_killed },
	{ "give_up", case_give_up },
	{ "stop", case_stop },
	{ "crash_while_stopping", case_crash_while_stopping },
	{ "term_right_after_crash", case_term_right_after_crash },
};

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	du_watchdog(110);
	return testlib_run(cases, TESTLIB_N(cases), argc, argv);
}
