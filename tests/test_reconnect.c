/*
 * test_reconnect: agxqd killed (SIGKILL) and started again on the same
 * socket. In-flight requests fail with AGXQ_EDISCONNECTED exactly once,
 * the same client and model handles then work again (libagxq reconnects
 * and loads the models again), no result is ever wrong, and
 * AGXQ_RECONNECT=0 keeps a lost client lost.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agxq.h"
#include "agxq_direct.h"
#include "daemon_util.h"
#include "testlib.h"

#define RC_NIO 4              /* inputs per model */
#define RC_THREADS 4
#define RC_SLOTS 20000        /* async requests per thread at most */
#define RC_WINDOW 16          /* async requests in flight per thread */

/* The daemon, a client with linear and mlp loaded, and expected results. */
struct rc_env {
	struct du_daemon d;
	agxq_direct *dh;
	agxq_direct_model *dm[2];
	agxq_client *c;
	agxq_model *m[2];
	struct du_io io[2][RC_NIO];
};

/* Starts a daemon, connects and loads linear and mlp (both ways). */
static int
rc_setup(struct rc_env *e)
{
	static const agxq_reference which[2] = { AGXQ_REF_LINEAR,
	    AGXQ_REF_MLP };

	memset(e, 0, sizeof *e);
	e->d.pid = -1;
	CHECK(du_start(&e->d, NULL) == 0);
	CHECK_OK(agxq_direct_open("cpu", 0, &e->dh));
	CHECK_OK(agxq_connect(e->d.sock, &e->c));
	for (int k = 0; k < 2; k++) {
		CHECK_OK(du_load_ref(e->c, e->dh, which[k], 7 + k, &e->m[k],
		    &e->dm[k]));
		for (int i = 0; i < RC_NIO; i++)
			CHECK(du_io_make(&e->io[k][i], which[k], 2 + i, 0,
			    100 * k + i, e->dm[k]) == 0);
	}
	return 0;
out:
	return -1;
}

/* Frees everything rc_setup made and stops the daemon. */
static void
rc_teardown(struct rc_env *e)
{
	for (int k = 0; k < 2; k++) {
		agxq_model_unload(e->m[k]);
		agxq_direct_unload(e->dm[k]);
		for (int i = 0; i < RC_NIO; i++)
			du_io_free(&e->io[k][i]);
	}
	agxq_close(e->c);
	agxq_direct_close(e->dh);
	du_cleanup(&e->d);
}

/* SIGKILLs the daemon and waits until it and its worker are gone. */
static int
rc_kill(struct rc_env *e)
{
	pid_t worker = du_worker_pid(e->d.sock);

	if (e->d.pid <= 0 || kill(e->d.pid, SIGKILL) != 0)
		return -1;
	if (du_wait_gone(e->d.pid, 5000) != 0)
		return -1;
	return worker > 0 ? du_wait_gone(worker, 5000) : 0;
}

/* One sync request of model k, input i: 0 with a right result, else rc. */
static int
rc_infer(struct rc_env *e, int k, int i)
{
	agxq_result *r = NULL;
	int rc;

	rc = agxq_infer(e->m[k], &e->io[k][i].in, 1, NULL, &r);
	if (rc == 0 && du_io_check(&e->io[k][i], r, 1e-5, 1e-6) != 0)
		rc = AGXQ_EINTERNAL; /* a wrong answer */
	agxq_result_free(r);
	return rc;
}

/* Requests of both models until one succeeds or ms pass; 0 or last rc. */
static int
rc_until_ok(struct rc_env *e, int ms)
{
	uint64_t end = du_now_ms() + (uint64_t)ms;
	int rc;

	for (;;) {
		if ((rc = rc_infer(e, 0, 0)) == 0 || rc != AGXQ_EDISCONNECTED ||
		    du_now_ms() >= end)
			return rc;
		usleep(10000);
	}
}

/*
 * Kill and restart with no traffic: the call after the kill fails with
 * AGXQ_EDISCONNECTED, and after the restart the same handles give right
 * results again, sync and async, through shared memory before and inline
 * after.
 */
static void
case_restart(void)
{
	struct rc_env e;
	struct du_track t;
	char *json = NULL;
	int rc, n = 0;

	memset(&t, 0, sizeof t);
	setenv("AGXQ_SHM_THRESHOLD", "1", 1);
	rc = rc_setup(&e);
	unsetenv("AGXQ_SHM_THRESHOLD");
	CHECK(rc == 0);
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < RC_NIO; i++)
			EXPECT(rc_infer(&e, k, i) == 0);
	CHECK_OK(agxq_stats_json(e.c, &json));
	EXPECT(du_json_num(json, "shm_regions") >= 1); /* shm was used */
	free(json);
	json = NULL;
	CHECK(rc_kill(&e) == 0);
	EXPECT(rc_infer(&e, 1, 0) == AGXQ_EDISCONNECTED);
	EXPECT(agxq_stats_json(e.c, &json) == AGXQ_EDISCONNECTED);
	CHECK(du_restart(&e.d, NULL) == 0);
	CHECK_OK(rc_until_ok(&e, 3000));
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < RC_NIO; i++)
			EXPECT(rc_infer(&e, k, i) == 0);
	CHECK(du_track_init(&t, 2 * RC_NIO, 1e-5, 1e-6) == 0);
	for (int k = 0; k < 2; k++) {
		for (int i = 0; i < RC_NIO; i++, n++)
			CHECK_OK(agxq_infer_async(e.m[k], &e.io[k][i].in, 1,
			    NULL, du_track_cb, du_track_arg(&t, n,
			    &e.io[k][i])));
	}
	EXPECT(du_track_wait(&t, n, 10000) == 0);
	EXPECT(t.ok == n && t.mismatch == 0 && t.dup == 0);
	CHECK_OK(agxq_stats_json(e.c, &json));
	/* Both models again in the new daemon, once each; no shm. */
	EXPECT(du_count(json, "\"model_id\"") == 2);
	EXPECT(du_count(json, "\"refs\": 1,") == 2);
	EXPECT(du_json_num(json, "shm_regions") == 0);

	/* And a second time. */
	CHECK(rc_kill(&e) == 0);
	CHECK(du_restart(&e.d, NULL) == 0);
	CHECK_OK(rc_until_ok(&e, 3000));
	EXPECT(rc_infer(&e, 1, 3) == 0);
out:
	free(json);
	du_track_free(&t);
	rc_teardown(&e);
}

/* One load thread's state. */
struct rc_worker {
	struct rc_env *e;
	int idx;
	atomic_int *phase;       /* 0: before the kill, 1: after, 2: stop */
	struct du_track t;
	int sent;                /* async requests whose callback will fire */
	int sync_ok, sync_bad, sync_disc;
	int async_bad;           /* async calls failing at once, not EDISC */
	atomic_int ok_after;     /* successes after the restart */
};

/* Sends sync and async requests until told to stop. */
static void *
rc_worker_main(void *arg)
{
	struct rc_worker *w = arg;
	struct rc_env *e = w->e;
	int ph, rc, k, i, fired;

	for (int n = 0; (ph = atomic_load(w->phase)) != 2; n++) {
		rc = 0;
		k = (n + w->idx) & 1;
		i = (n / 2 + w->idx) % RC_NIO;
		if (n % 3 == 0) {
			rc = rc_infer(e, k, i);
			if (rc == 0) {
				w->sync_ok++;
				atomic_fetch_add(&w->ok_after, ph == 1);
			} else if (rc == AGXQ_EDISCONNECTED)
				w->sync_disc++;
			else {
				printf("  thread %d: sync: %s\n", w->idx,
				    agxq_strerror(rc));
				w->sync_bad++;
			}
		} else if (w->sent < RC_SLOTS) {
			pthread_mutex_lock(&w->t.mu);
			fired = w->t.done;
			pthread_mutex_unlock(&w->t.mu);
			if (w->sent - fired >= RC_WINDOW &&
			    du_track_wait(&w->t, w->sent - RC_WINDOW / 2,
			    10000) != 0) {
				w->async_bad++;
				break;
			}
			rc = agxq_infer_async(e->m[k], &e->io[k][i].in, 1, NULL,
			    du_track_cb, du_track_arg(&w->t, w->sent,
			    &e->io[k][i]));
			if (rc == 0)
				w->sent++;
			else if (rc != AGXQ_EDISCONNECTED) {
				printf("  thread %d: async: %s\n", w->idx,
				    agxq_strerror(rc));
				w->async_bad++;
			}
		}
		if (rc != 0)
			usleep(2000); /* the daemon is down: don't spin */
	}
	return NULL;
}

/*
 * Kill and restart under load from 4 threads: every callback fires exactly
 * once, right or AGXQ_EDISCONNECTED, no sync call returns anything else,
 * and every thread succeeds again after the restart.
 */
static void
case_under_load(void)
{
	struct rc_env e;
	struct rc_worker w[RC_THREADS];
	pthread_t tid[RC_THREADS];
	atomic_int phase;
	uint64_t end;
	int started = 0, rc, all, disc = 0, ok = 0;

	atomic_init(&phase, 0);
	memset(w, 0, sizeof w);
	rc = rc_setup(&e);
	CHECK(rc == 0);
	for (; started < RC_THREADS; started++) {
		w[started].e = &e;
		w[started].idx = started;
		w[started].phase = &phase;
		CHECK(du_track_init(&w[started].t, RC_SLOTS, 1e-5, 1e-6) == 0);
		CHECK(pthread_create(&tid[started], NULL, rc_worker_main,
		    &w[started]) == 0);
	}
	usleep(400000);
	CHECK(rc_kill(&e) == 0);
	usleep(200000);
	CHECK(du_restart(&e.d, NULL) == 0);
	atomic_store(&phase, 1);
	end = du_now_ms() + 5000;
	do {
		usleep(20000);
		all = 1;
		for (int j = 0; j < RC_THREADS; j++)
			all &= atomic_load(&w[j].ok_after) >= 3;
	} while (!all && du_now_ms() < end);
	usleep(100000);
out:
	atomic_store(&phase, 2);
	for (int j = 0; j < started; j++) {
		pthread_join(tid[j], NULL);
		EXPECT(du_track_wait(&w[j].t, w[j].sent, 10000) == 0);
		pthread_mutex_lock(&w[j].t.mu);
		EXPECT(w[j].t.done == w[j].sent);
		EXPECT(w[j].t.dup == 0);
		EXPECT(w[j].t.mismatch == 0);
		EXPECT(w[j].t.ok + w[j].t.count[-AGXQ_EDISCONNECTED] ==
		    w[j].t.done);
		EXPECT(w[j].sync_bad == 0 && w[j].async_bad == 0);
		EXPECT(atomic_load(&w[j].ok_after) >= 3);
		disc += w[j].t.count[-AGXQ_EDISCONNECTED] + w[j].sync_disc;
		ok += w[j].t.ok + w[j].sync_ok;
		pthread_mutex_unlock(&w[j].t.mu);
	}
	if (rc == 0) {
		printf("  %d right, %d disconnected\n", ok, disc);
		EXPECT(disc > 0);
	}
	rc_teardown(&e);
	for (int j = 0; j < RC_THREADS; j++)
		du_track_free(&w[j].t);
}

/* AGXQ_RECONNECT=0: once lost, every call fails at once, as before. */
static void
case_disabled(void)
{
	struct rc_env e;
	struct du_track t;
	uint64_t end;
	int rc;

	memset(&t, 0, sizeof t);
	setenv("AGXQ_RECONNECT", "0", 1);
	rc = rc_setup(&e);
	unsetenv("AGXQ_RECONNECT");
	CHECK(rc == 0);
	EXPECT(rc_infer(&e, 0, 0) == 0);
	CHECK(rc_kill(&e) == 0);
	CHECK(du_restart(&e.d, NULL) == 0);
	CHECK(du_track_init(&t, 1, 0, 0) == 0);
	end = du_now_ms() + 400;
	while (du_now_ms() < end) {
		EXPECT(rc_infer(&e, 1, 1) == AGXQ_EDISCONNECTED);
		usleep(20000);
	}
	EXPECT(agxq_infer_async(e.m[0], &e.io[0][0].in, 1, NULL, du_track_cb,
	    du_track_arg(&t, 0, &e.io[0][0])) == AGXQ_EDISCONNECTED);
	EXPECT(t.done == 0);
out:
	du_track_free(&t);
	rc_teardown(&e);
}

static const struct testlib_case cases[] = {
	{ "restart", case_restart },
	{ "under_load", case_under_load },
	{ "disabled", case_disabled },
};

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	du_watchdog(100);
	return testlib_run(cases, TESTLIB_N(cases), argc, argv);
}
