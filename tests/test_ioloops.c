/*
 * test_ioloops: agxqd serving its connections on several I/O loop threads
 * (--io-threads) while one executor thread owns the device. Many clients on
 * one shared model get right results; clients that come and go abruptly
 * while others infer leave the daemon healthy and release their models;
 * stats and `agxqd status` work during traffic and report the loop count;
 * SIGTERM under load ends every call and the daemon exits 0; bad option
 * values are refused.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agxq.h"
#include "agxq_direct.h"
#include "codec.h"
#include "daemon_util.h"
#include "tgraph.h"
#include "testlib.h"

#define IOT_TOL 1e-4
#define IOT_SEED_A 42         /* model A: linear, shared by everyone */
#define IOT_SEED_B 43         /* model B: a second, distinct model */
#define IOT_REF_B AGXQ_REF_LINEAR
#define IOT_NIO 8             /* expected results per model (churn, stop) */

/* ---- Helpers ------------------------------------------------------------- */

/*
 * Starts a daemon on d with --io-threads n (and extra, NULL-terminated),
 * two connections a loop before the next gets any, so that every loop
 * serves some of the cases' clients.
 */
static int
iot_start(struct du_daemon *d, const char *n, const char *const *extra)
{
	const char *args[18];
	int k = 0;

	args[k++] = "--io-threads";
	args[k++] = n;
	args[k++] = "--conns-per-io-thread";
	args[k++] = "2";
	for (; extra != NULL && *extra != NULL && k < 17; extra++)
		args[k++] = *extra;
	args[k] = NULL;
	return du_start(d, args);
}

/* Stops d (when it runs) and cleans up; a failed stop fails the case. */
static void
iot_finish(struct du_daemon *d)
{
	if (d->pid > 0 && du_stop(d) != 0)
		testlib_failed = 1;
	du_cleanup(d);
}

/*
 * Sends a StatsRequest on raw connection fd and reads the reply: 0 with
 * *out (free with codec_envelope_free), or -1.
 */
static int
iot_raw_stats_fd(int fd, uint64_t req_id, Agxq__Envelope **out)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep = NULL;
	Agxq__StatsRequest sr = AGXQ__STATS_REQUEST__INIT;

	*out = NULL;
	sr.request_id = req_id;
	env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
	env.stats_request = &sr;
	if (du_send_env(fd, &env) != 0 || du_recv(fd, 10000, &rep) != 1)
		return -1;
	if (rep->body_case != AGXQ__ENVELOPE__BODY_STATS ||
	    rep->stats == NULL || rep->stats->request_id != req_id) {
		printf("  stats: unexpected reply %s\n",
		    codec_body_name(rep->body_case));
		codec_envelope_free(rep);
		return -1;
	}
	*out = rep;
	return 0;
}

/* The io_threads figure of the daemon on sock (a raw Stats request), or -1. */
static long long
iot_io_threads(const char *sock)
{
	Agxq__Envelope *rep;
	long long n = -1;
	int fd;

	if ((fd = du_connect_hello(sock)) < 0)
		return -1;
	if (iot_raw_stats_fd(fd, 1, &rep) == 0) {
		n = rep->stats->io_threads;
		codec_envelope_free(rep);
	}
	close(fd);
	return n;
}

/*
 * Polls the daemon's stats through c until it holds nmodels models (and,
 * when conns >= 0, that many connections), for up to ms. Returns 0, or -1
 * printing the last stats.
 */
static int
iot_wait_models(agxq_client *c, int nmodels, long long conns, int ms)
{
	uint64_t end = du_now_ms() + (uint64_t)ms;
	char *json = NULL;
	int rc;

	for (;;) {
		free(json);
		json = NULL;
		if ((rc = agxq_stats_json(c, &json)) != 0) {
			printf("  stats: %s\n", agxq_strerror(rc));
			return -1;
		}
		if (du_count(json, "\"model_id\"") == nmodels && (conns < 0 ||
		    du_json_num(json, "connections") == conns)) {
			free(json);
			return 0;
		}
		if (du_now_ms() >= end)
			break;
		usleep(20000);
	}
	printf("  want %d models, %lld connections; stats: %s", nmodels, conns,
	    json);
	free(json);
	return -1;
}

/* Whether d's log file contains needle (1), not (0), or cannot be read (-1). */
static int
iot_log_has(const struct du_daemon *d, const char *needle)
{
	char path[160], *buf;
	size_t len = 0, cap = 1 << 20;
	ssize_t n;
	int fd, found;

	snprintf(path, sizeof path, "%s.log", d->sock);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	if ((buf = malloc(cap + 1)) == NULL) {
		close(fd);
		return -1;
	}
	while (len < cap && (n = read(fd, buf + len, cap - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';
	found = strstr(buf, needle) != NULL;
	free(buf);
	return found;
}

/*
 * Checks the daemon's worker is still the one it started with (no crash, no
 * restart): 0 or -1.
 */
static int
iot_same_worker(const struct du_daemon *d, pid_t worker)
{
	pid_t now = du_worker_pid(d->sock);

	if (now != worker) {
		printf("  worker %d replaced by %d\n", (int)worker, (int)now);
		return -1;
	}
	return 0;
}

/* One sync request of m with io: 0 with a right result, else the code. */
static int
iot_infer(agxq_model *m, const struct du_io *io)
{
	agxq_result *r = NULL;
	int rc;

	rc = agxq_infer(m, &io->in, 1, NULL, &r);
	if (rc == 0 && du_io_check(io, r, IOT_TOL, IOT_TOL) != 0)
		rc = AGXQ_EINTERNAL; /* a wrong answer */
	agxq_result_free(r);
	return rc;
}

/* Expected results of models A and B, made in direct mode. */
struct iot_world {
	struct du_io a[IOT_NIO];
	struct du_io b[IOT_NIO];
};

/* Makes the world's inputs (rows 1..4) and expected outputs. 0 or -1. */
static int
iot_world_make(struct iot_world *w)
{
	agxq_direct *d = NULL;
	agxq_direct_model *da = NULL, *db = NULL;
	int rc = -1;

	memset(w, 0, sizeof *w);
	if (agxq_direct_open("cpu", 0, &d) != 0)
		return -1;
	if (du_load_ref(NULL, d, AGXQ_REF_LINEAR, IOT_SEED_A, NULL, &da) != 0 ||
	    du_load_ref(NULL, d, IOT_REF_B, IOT_SEED_B, NULL, &db) != 0)
		goto out;
	for (int i = 0; i < IOT_NIO; i++) {
		if (du_io_make(&w->a[i], AGXQ_REF_LINEAR, 1 + i % 4, 0,
		    (uint64_t)(2000 + i), da) != 0 ||
		    du_io_make(&w->b[i], IOT_REF_B, 1 + i % 4, 0,
		    (uint64_t)(3000 + i), db) != 0)
			goto out;
	}
	rc = 0;
out:
	agxq_direct_unload(da);
	agxq_direct_unload(db);
	agxq_direct_close(d);
	return rc;
}

/* Frees the world; accepts a zeroed one. */
static void
iot_world_free(struct iot_world *w)
{
	for (int i = 0; i < IOT_NIO; i++) {
		du_io_free(&w->a[i]);
		du_io_free(&w->b[i]);
	}
}

/* ---- many_clients_correct ------------------------------------------------ */

#define MC_THREADS 12
#define MC_REQS 200

/* One client thread: its own connection, model A, MC_REQS checked results. */
struct mc_thread {
	const char *sock;
	struct du_io *io;        /* MC_REQS distinct inputs and results */
	agxq_client *c;          /* left open for the main thread's checks */
	agxq_model *m;
	int ok;
	int failed;
};

/* Connects, loads model A and runs every request synchronously. */
static void *
mc_main(void *arg)
{
	struct mc_thread *t = arg;
	int rc;

	if ((rc = agxq_connect(t->sock, &t->c)) != 0 ||
	    (rc = du_load_ref(t->c, NULL, AGXQ_REF_LINEAR, IOT_SEED_A, &t->m,
	    NULL)) != 0) {
		printf("  client: connect/load: %s\n", agxq_strerror(rc));
		t->failed++;
		return NULL;
	}
	for (int i = 0; i < MC_REQS; i++) {
		if ((rc = iot_infer(t->m, &t->io[i])) == 0)
			t->ok++;
		else {
			printf("  client: request %d: %s\n", i,
			    agxq_strerror(rc));
			t->failed++;
		}
	}
	return NULL;
}

/* Builds a small linear graph for raw loads (not any reference model). */
static struct tgraph *
mc_raw_graph(void)
{
	struct tgraph *t = tg_new();
	uint64_t seed = 99;
	uint32_t x, w;

	x = tg_input(t, TG_DIMS(64));
	w = tg_const_rand(t, TG_DIMS(32, 64), 0.1f, &seed);
	tg_output(t, tg_linear(t, x, w, TG_NONE));
	return t;
}

/*
 * 12 clients, one connection each (spread over 3 loops), load the same
 * model and check 200 distinct requests each. The model is shared (one
 * model, every reference counted), stats count every request and report
 * 3 I/O threads.
 */
static void
t_many_clients_correct(void)
{
	enum { NRAW = 4 };
	struct du_daemon d;
	struct mc_thread th[MC_THREADS];
	pthread_t tid[MC_THREADS];
	struct du_io *io = NULL;
	struct tgraph *tg = NULL;
	agxq_direct *dh = NULL;
	agxq_direct_model *dm = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	char *json = NULL;
	uint64_t id[NRAW];
	int fd[NRAW], shared[NRAW], started = 0, ok = 0;
	pid_t worker = -1;

	memset(&d, 0, sizeof d);
	memset(th, 0, sizeof th);
	for (int i = 0; i < NRAW; i++)
		fd[i] = -1;
	CHECK((io = calloc(MC_THREADS * MC_REQS, sizeof *io)) != NULL);
	CHECK_OK(agxq_direct_open("cpu", 0, &dh));
	CHECK_OK(du_load_ref(NULL, dh, AGXQ_REF_LINEAR, IOT_SEED_A, NULL, &dm));
	for (int i = 0; i < MC_THREADS * MC_REQS; i++)
		CHECK(du_io_make(&io[i], AGXQ_REF_LINEAR, 1 + i % 4, 0,
		    (uint64_t)(10000 + i), dm) == 0);
	CHECK(iot_start(&d, "3", NULL) == 0);
	CHECK((worker = du_worker_pid(d.sock)) > 0);

	/*
	 * Raw connections (round robin: on every loop) load one graph: the
	 * first load makes it, the others share it.
	 */
	tg = mc_raw_graph();
	for (int i = 0; i < NRAW; i++) {
		CHECK((fd[i] = du_connect_hello(d.sock)) >= 0);
		CHECK(du_load_shared(fd[i], 1, tg_graph(tg), &id[i],
		    &shared[i], NULL, 0) == 0);
		CHECK(id[i] == id[0]);
		CHECK(shared[i] == (i > 0));
	}
	for (int i = 0; i < NRAW; i++) {
		close(fd[i]);
		fd[i] = -1;
	}

	CHECK_OK(agxq_connect(d.sock, &c));
	CHECK(iot_wait_models(c, 0, 1, 3000) == 0); /* raw model released */
	CHECK_OK(du_load_ref(c, NULL, AGXQ_REF_LINEAR, IOT_SEED_A, &m, NULL));
	for (; started < MC_THREADS; started++) {
		th[started].sock = d.sock;
		th[started].io = &io[started * MC_REQS];
		CHECK(pthread_create(&tid[started], NULL, mc_main,
		    &th[started]) == 0);
	}
out:
	for (int i = 0; i < started; i++) {
		pthread_join(tid[i], NULL);
		ok += th[i].ok;
		if (th[i].failed != 0 || th[i].ok != MC_REQS) {
			printf("  thread %d: %d right, %d failed\n", i,
			    th[i].ok, th[i].failed);
			testlib_failed = 1;
		}
	}
	if (started == MC_THREADS && c != NULL && !testlib_failed) {
		/* One model, every client's reference, every request. */
		if (agxq_stats_json(c, &json) != 0) {
			printf("  no stats\n");
			testlib_failed = 1;
		} else if (du_count(json, "\"model_id\"") != 1 ||
		    du_json_num(json, "refs") != MC_THREADS + 1 ||
		    du_json_num(json, "requests") != MC_THREADS * MC_REQS ||
		    du_json_num(json, "connections") != MC_THREADS + 1 ||
		    du_json_num(json, "backend_foreign_calls") != 0) {
			printf("  want 1 model, %d refs, %d requests, %d "
			    "connections; stats: %s", MC_THREADS + 1,
			    MC_THREADS * MC_REQS, MC_THREADS + 1, json);
			testlib_failed = 1;
		}
		if (iot_io_threads(d.sock) != 3) {
			printf("  io_threads %lld, want 3\n",
			    iot_io_threads(d.sock));
			testlib_failed = 1;
		}
		printf("  %d right results from %d clients\n", ok, MC_THREADS);
	}
	for (int i = 0; i < started; i++)
		agxq_close(th[i].c); /* frees th[i].m */
	if (c != NULL && !testlib_failed && started == MC_THREADS) {
		/* The clients' references go with them; the main one stays. */
		if (iot_wait_models(c, 1, 1, 3000) != 0)
			testlib_failed = 1;
		else {
			free(json);
			json = NULL;
			if (agxq_stats_json(c, &json) != 0 ||
			    du_json_num(json, "refs") != 1) {
				printf("  refs not back to 1: %s",
				    json != NULL ? json : "no stats\n");
				testlib_failed = 1;
			}
		}
	}
	if (worker > 0 && d.pid > 0 && iot_same_worker(&d, worker) != 0)
		testlib_failed = 1;
	for (int i = 0; i < NRAW; i++)
		if (fd[i] >= 0)
			close(fd[i]);
	free(json);
	tg_free(tg);
	agxq_model_unload(m);
	agxq_close(c);
	iot_finish(&d);
	if (io != NULL)
		for (int i = 0; i < MC_THREADS * MC_REQS; i++)
			du_io_free(&io[i]);
	free(io);
	agxq_direct_unload(dm);
	agxq_direct_close(dh);
}

/* ---- churn --------------------------------------------------------------- */

#define CH_STEADY 3           /* threads that keep inferring */
#define CH_CHURN 4            /* threads that come and go */
#define CH_ROUNDS 16          /* connections per churn thread */
#define CH_ASYNC 4            /* async requests per round */

/* A thread of the churn case. */
struct ch_thread {
	const char *sock;
	const struct iot_world *w;
	atomic_int *stop;        /* steady threads: set when churn is over */
	int idx;
	int ok;                  /* right results (sync and async) */
	int cut;                 /* async requests cut by the close */
	int failed;
};

/* Keeps one connection on model A, checking every result, until stopped. */
static void *
ch_steady_main(void *arg)
{
	struct ch_thread *t = arg;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	int rc;

	if ((rc = agxq_connect(t->sock, &c)) != 0 ||
	    (rc = du_load_ref(c, NULL, AGXQ_REF_LINEAR, IOT_SEED_A, &m,
	    NULL)) != 0) {
		printf("  steady %d: connect/load: %s\n", t->idx,
		    agxq_strerror(rc));
		t->failed++;
		goto out;
	}
	for (int n = 0; !atomic_load(t->stop); n++) {
		if ((rc = iot_infer(m, &t->w->a[(n + t->idx) % IOT_NIO])) == 0)
			t->ok++;
		else {
			printf("  steady %d: %s\n", t->idx, agxq_strerror(rc));
			t->failed++;
			break;
		}
	}
out:
	agxq_model_unload(m);
	agxq_close(c);
	return NULL;
}

/* One churn round: connect, load A and B, infer, close with work left. */
static int
ch_round(struct ch_thread *t, int round)
{
	const struct iot_world *w = t->w;
	struct du_track tr;
	agxq_client *c = NULL;
	agxq_model *ma = NULL, *mb = NULL;
	int rc, sent = 0, k = t->idx * CH_ROUNDS + round;

	if (du_track_init(&tr, CH_ASYNC, IOT_TOL, IOT_TOL) != 0)
		return -1;
	if ((rc = agxq_connect(t->sock, &c)) != 0 ||
	    (rc = du_load_ref(c, NULL, AGXQ_REF_LINEAR, IOT_SEED_A, &ma,
	    NULL)) != 0 ||
	    (rc = du_load_ref(c, NULL, IOT_REF_B, IOT_SEED_B, &mb,
	    NULL)) != 0) {
		printf("  churn %d: connect/load: %s\n", t->idx,
		    agxq_strerror(rc));
		goto fail;
	}
	for (int i = 0; i < 3; i++) {
		rc = iot_infer(i == 1 ? mb : ma, i == 1 ? &w->b[(k + i) %
		    IOT_NIO] : &w->a[(k + i) % IOT_NIO]);
		if (rc != 0) {
			printf("  churn %d: sync: %s\n", t->idx,
			    agxq_strerror(rc));
			goto fail;
		}
		t->ok++;
	}
	for (; sent < CH_ASYNC; sent++) {
		const struct du_io *io = sent % 2 ?
		    &w->b[(k + sent) % IOT_NIO] : &w->a[(k + sent) % IOT_NIO];

		rc = agxq_infer_async(sent % 2 ? mb : ma, &io->in, 1, NULL,
		    du_track_cb, du_track_arg(&tr, sent, io));
		if (rc != 0) {
			printf("  churn %d: async: %s\n", t->idx,
			    agxq_strerror(rc));
			goto fail;
		}
	}
	/* Every third round lets its requests finish; one in four unloads B. */
	if (round % 3 == 2 && du_track_wait(&tr, sent, 10000) != 0) {
		printf("  churn %d: async requests never finished\n", t->idx);
		goto fail;
	}
	if (round % 4 == 1) {
		if ((rc = agxq_model_unload(mb)) != 0) {
			printf("  churn %d: unload: %s\n", t->idx,
			    agxq_strerror(rc));
			mb = NULL;
			goto fail;
		}
		mb = NULL;
	}
	agxq_close(c); /* fires the callbacks still pending, then returns */
	c = NULL;
	pthread_mutex_lock(&tr.mu);
	if (tr.done != sent || tr.dup != 0 || tr.mismatch != 0 ||
	    tr.ok + tr.count[-AGXQ_EDISCONNECTED] != sent) {
		printf("  churn %d: %d of %d callbacks, %d twice, %d wrong, "
		    "%d right\n", t->idx, tr.done, sent, tr.dup, tr.mismatch,
		    tr.ok);
		pthread_mutex_unlock(&tr.mu);
		goto fail;
	}
	t->ok += tr.ok;
	t->cut += tr.count[-AGXQ_EDISCONNECTED];
	pthread_mutex_unlock(&tr.mu);
	du_track_free(&tr);
	return 0;

fail:
	agxq_close(c); /* frees ma and mb */
	du_track_free(&tr);
	return -1;
}

/* Runs CH_ROUNDS churn rounds. */
static void *
ch_churn_main(void *arg)
{
	struct ch_thread *t = arg;

	for (int round = 0; round < CH_ROUNDS; round++) {
		if (ch_round(t, round) != 0) {
			t->failed++;
			break;
		}
	}
	return NULL;
}

/*
 * Churn threads connect, load A and B, infer (leaving async requests in
 * flight) and close without unloading, over and over, while steady
 * threads check every result. Afterwards a fresh client works and every
 * model is released once its last user has gone.
 */
static void
t_churn(void)
{
	struct du_daemon d;
	struct iot_world w;
	struct ch_thread st[CH_STEADY], ch[CH_CHURN];
	pthread_t tst[CH_STEADY], tch[CH_CHURN];
	atomic_int stop;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	int nst = 0, nch = 0, ok = 0, cut = 0;
	pid_t worker = -1;

	atomic_init(&stop, 0);
	memset(&d, 0, sizeof d);
	memset(st, 0, sizeof st);
	memset(ch, 0, sizeof ch);
	CHECK(iot_world_make(&w) == 0);
	CHECK(iot_start(&d, "3", NULL) == 0);
	CHECK((worker = du_worker_pid(d.sock)) > 0);
	for (; nst < CH_STEADY; nst++) {
		st[nst].sock = d.sock;
		st[nst].w = &w;
		st[nst].stop = &stop;
		st[nst].idx = nst;
		CHECK(pthread_create(&tst[nst], NULL, ch_steady_main,
		    &st[nst]) == 0);
	}
	for (; nch < CH_CHURN; nch++) {
		ch[nch].sock = d.sock;
		ch[nch].w = &w;
		ch[nch].idx = nch;
		CHECK(pthread_create(&tch[nch], NULL, ch_churn_main,
		    &ch[nch]) == 0);
	}
out:
	for (int i = 0; i < nch; i++) {
		pthread_join(tch[i], NULL);
		ok += ch[i].ok;
		cut += ch[i].cut;
		EXPECT(ch[i].failed == 0);
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < nst; i++) {
		pthread_join(tst[i], NULL);
		ok += st[i].ok;
		EXPECT(st[i].failed == 0);
		EXPECT(st[i].ok > 0);
	}
	if (nch == CH_CHURN && nst == CH_STEADY && !testlib_failed) {
		printf("  %d right results, %d async requests cut by a close\n",
		    ok, cut);
		/* A fresh client works; alone, it holds the only model. */
		if (agxq_connect(d.sock, &c) != 0 ||
		    du_load_ref(c, NULL, AGXQ_REF_LINEAR, IOT_SEED_A, &m,
		    NULL) != 0 || iot_infer(m, &w.a[3]) != 0) {
			printf("  a fresh client fails\n");
			testlib_failed = 1;
		} else if (iot_wait_models(c, 1, 1, 3000) != 0)
			testlib_failed = 1;
		else {
			char *json = NULL;

			if (agxq_stats_json(c, &json) != 0 ||
			    du_json_num(json, "refs") != 1 ||
			    du_json_num(json, "backend_foreign_calls") != 0) {
				printf("  want refs 1: %s",
				    json != NULL ? json : "no stats\n");
				testlib_failed = 1;
			}
			free(json);
			if (agxq_model_unload(m) != 0 ||
			    iot_wait_models(c, 0, 1, 3000) != 0)
				testlib_failed = 1;
			m = NULL;
		}
	}
	if (worker > 0 && d.pid > 0 && iot_same_worker(&d, worker) != 0)
		testlib_failed = 1;
	agxq_model_unload(m);
	agxq_close(c);
	iot_finish(&d);
	iot_world_free(&w);
}

/* ---- stats_and_status_concurrent ----------------------------------------- */

#define SS_INFER 4
#define SS_STATS 3

/* A thread of the stats case: inferring or asking for stats. */
struct ss_thread {
	const char *sock;
	const struct iot_world *w;
	atomic_int *stop;
	int idx;
	int n;                   /* right results or good stats */
	int failed;
};

/* Infers on model A (sync, and async in bursts) until stopped. */
static void *
ss_infer_main(void *arg)
{
	struct ss_thread *t = arg;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	int rc;

	if ((rc = agxq_connect(t->sock, &c)) != 0 ||
	    (rc = du_load_ref(c, NULL, AGXQ_REF_LINEAR, IOT_SEED_A, &m,
	    NULL)) != 0) {
		printf("  infer %d: connect/load: %s\n", t->idx,
		    agxq_strerror(rc));
		t->failed++;
		goto out;
	}
	while (!atomic_load(t->stop)) {
		struct du_track tr;

		for (int i = 0; i < 4; i++) {
			if ((rc = iot_infer(m, &t->w->a[(i + t->idx) %
			    IOT_NIO])) != 0) {
				printf("  infer %d: %s\n", t->idx,
				    agxq_strerror(rc));
				t->failed++;
				goto out;
			}
			t->n++;
		}
		if (du_track_init(&tr, 4, IOT_TOL, IOT_TOL) != 0) {
			t->failed++;
			goto out;
		}
		for (int i = 0; i < 4; i++) {
			const struct du_io *io = &t->w->a[(i + 4) % IOT_NIO];

			if (agxq_infer_async(m, &io->in, 1, NULL, du_track_cb,
			    du_track_arg(&tr, i, io)) != 0)
				du_track_unsent(&tr, i);
		}
		if (du_track_wait(&tr, 4, 10000) != 0 || tr.ok != 4 ||
		    tr.mismatch != 0 || tr.dup != 0) {
			printf("  infer %d: async: %d right of %d\n", t->idx,
			    tr.ok, tr.done);
			t->failed++;
			du_track_free(&tr);
			goto out;
		}
		t->n += tr.ok;
		du_track_free(&tr);
	}
out:
	agxq_model_unload(m);
	agxq_close(c);
	return NULL;
}

/*
 * Asks for stats until stopped: thread 0 through its own client (JSON),
 * thread 1 on one raw connection, thread 2 on a fresh raw connection each
 * time. Each answer must make sense: the 3 loops, one model, connections.
 */
static void *
ss_stats_main(void *arg)
{
	struct ss_thread *t = arg;
	agxq_client *c = NULL;
	Agxq__Envelope *rep;
	char *json;
	uint64_t req = 0;
	int fd = -1, rc;

	if (t->idx == 0 && (rc = agxq_connect(t->sock, &c)) != 0) {
		printf("  stats %d: connect: %s\n", t->idx, agxq_strerror(rc));
		t->failed++;
		return NULL;
	}
	if (t->idx == 1 && (fd = du_connect_hello(t->sock)) < 0) {
		printf("  stats %d: cannot connect\n", t->idx);
		t->failed++;
		return NULL;
	}
	while (!atomic_load(t->stop)) {
		if (t->idx == 0) {
			if ((rc = agxq_stats_json(c, &json)) != 0) {
				printf("  stats %d: %s\n", t->idx,
				    agxq_strerror(rc));
				t->failed++;
				break;
			}
			if (du_json_num(json, "connections") < 1 ||
			    du_count(json, "\"model_id\"") > 1 ||
			    du_json_num(json, "backend_foreign_calls") != 0) {
				printf("  stats %d: odd stats: %s", t->idx,
				    json);
				t->failed++;
				free(json);
				break;
			}
			free(json);
		} else {
			int rfd = fd >= 0 ? fd : du_connect_hello(t->sock);

			rc = rfd >= 0 ? iot_raw_stats_fd(rfd, ++req, &rep) : -1;
			if (rfd != fd && rfd >= 0)
				close(rfd);
			if (rc != 0) {
				printf("  stats %d: no stats\n", t->idx);
				t->failed++;
				break;
			}
			if (rep->stats->io_threads != 3 ||
			    rep->stats->connections < 1 ||
			    rep->stats->n_models > 1) {
				printf("  stats %d: io_threads %u, "
				    "connections %u, %zu models\n", t->idx,
				    rep->stats->io_threads,
				    rep->stats->connections,
				    rep->stats->n_models);
				t->failed++;
				codec_envelope_free(rep);
				break;
			}
			codec_envelope_free(rep);
		}
		t->n++;
	}
	if (fd >= 0)
		close(fd);
	agxq_close(c);
	return NULL;
}

/*
 * Finds the I/O thread figure in `agxqd status` text: a number right after
 * (or, with a colon or "=", after) "io threads", "io_threads", "io-threads"
 * or "I/O threads", any case, or right before " io thread"/" I/O thread".
 * Returns it, or -1.
 */
static long
ss_status_figure(const char *text)
{
	static const char *const names[] = { "io threads", "io_threads",
	    "io-threads", "i/o threads", "io thread", "i/o thread" };
	char *low, *p, *end;
	long v = -1;

	if ((low = strdup(text)) == NULL)
		return -1;
	for (p = low; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	for (size_t i = 0; i < TESTLIB_N(names) && v < 0; i++) {
		if ((p = strstr(low, names[i])) == NULL)
			continue;
		/* "3 io threads" */
		for (end = p; end > low && end[-1] == ' '; end--)
			;
		if (end > low && end[-1] >= '0' && end[-1] <= '9') {
			while (end > low && end[-1] >= '0' && end[-1] <= '9')
				end--;
			v = strtol(end, NULL, 10);
			break;
		}
		/* "io threads 3", "io_threads: 3", "io threads = 3" */
		p += strlen(names[i]);
		if (*p == 's')
			p++;
		while (*p == ' ' || *p == ':' || *p == '=')
			p++;
		if (*p >= '0' && *p <= '9')
			v = strtol(p, NULL, 10);
	}
	free(low);
	return v;
}

/*
 * While 4 clients infer, 3 threads ask for stats over and over (through
 * the library and raw connections) and `agxqd status` runs: all answer,
 * and status prints the io-threads figure.
 */
static void
t_stats_and_status_concurrent(void)
{
	struct du_daemon d;
	struct iot_world w;
	struct ss_thread ti[SS_INFER], ts[SS_STATS];
	pthread_t tid_i[SS_INFER], tid_s[SS_STATS];
	atomic_int stop;
	char out[8192];
	int ni = 0, ns = 0, nstatus = 0, results = 0, stats = 0;
	long fig;
	pid_t worker = -1;

	atomic_init(&stop, 0);
	memset(&d, 0, sizeof d);
	memset(ti, 0, sizeof ti);
	memset(ts, 0, sizeof ts);
	CHECK(iot_world_make(&w) == 0);
	CHECK(iot_start(&d, "3", NULL) == 0);
	CHECK((worker = du_worker_pid(d.sock)) > 0);
	for (; ni < SS_INFER; ni++) {
		ti[ni].sock = d.sock;
		ti[ni].w = &w;
		ti[ni].stop = &stop;
		ti[ni].idx = ni;
		CHECK(pthread_create(&tid_i[ni], NULL, ss_infer_main,
		    &ti[ni]) == 0);
	}
	for (; ns < SS_STATS; ns++) {
		ts[ns].sock = d.sock;
		ts[ns].w = &w;
		ts[ns].stop = &stop;
		ts[ns].idx = ns;
		CHECK(pthread_create(&tid_s[ns], NULL, ss_stats_main,
		    &ts[ns]) == 0);
	}
	for (; nstatus < 6; nstatus++) {
		const char *text[] = { "status", "--socket", d.sock, NULL };
		const char *json[] = { "status", "--socket", d.sock, "--json",
		    NULL };
		int rc;

		rc = du_run(nstatus % 2 ? json : text, 20000, out, sizeof out);
		if (rc != 0) {
			printf("  agxqd status exited %d: %s\n", rc, out);
			CHECK(0);
		}
		if (nstatus % 2 == 0) {
			if ((fig = ss_status_figure(out)) != 3) {
				printf("  io threads figure %ld in:\n%s", fig,
				    out);
				CHECK(0);
			}
		} else if (du_json_num(out, "io_threads") != 3) {
			printf("  io_threads not 3 in: %s", out);
			CHECK(0);
		}
		usleep(50000);
	}
out:
	atomic_store(&stop, 1);
	for (int i = 0; i < ni; i++) {
		pthread_join(tid_i[i], NULL);
		results += ti[i].n;
		EXPECT(ti[i].failed == 0);
		EXPECT(ti[i].n > 0);
	}
	for (int i = 0; i < ns; i++) {
		pthread_join(tid_s[i], NULL);
		stats += ts[i].n;
		EXPECT(ts[i].failed == 0);
		EXPECT(ts[i].n > 0);
	}
	if (ni == SS_INFER && ns == SS_STATS)
		printf("  %d right results, %d stats, %d status runs\n",
		    results, stats, nstatus);
	if (worker > 0 && d.pid > 0 && iot_same_worker(&d, worker) != 0)
		testlib_failed = 1;
	iot_finish(&d);
	iot_world_free(&w);
}

/* ---- stop_under_load ----------------------------------------------------- */

#define SU_THREADS 8
#define SU_SLOTS 4096         /* async requests per thread at most */
#define SU_HANG_MS 5000       /* a call longer than this hangs */

/* A client thread of the stop case. */
struct su_thread {
	const char *sock;
	const struct iot_world *w;
	int idx;
	atomic_int ok;           /* right sync results */
	int ended;               /* calls that failed as a shutdown may */
	int failed;
	uint64_t worst_ms;       /* the longest call */
	struct du_track tr;
	int sent;
	atomic_int done;
};

/* Whether rc is what a call may get when the daemon stops. */
static int
su_stop_code(int rc)
{
	return rc == AGXQ_ESHUTDOWN || rc == AGXQ_EDISCONNECTED ||
	    rc == AGXQ_ECONNECT;
}

/*
 * Infers on models A and B (sync, one async request in three) until calls
 * fail as the shutdown makes them, then makes two more calls.
 */
static void *
su_main(void *arg)
{
	struct su_thread *t = arg;
	agxq_client *c = NULL;
	agxq_model *m[2] = { NULL, NULL };
	uint64_t t0, dt, give_up = du_now_ms() + 40000;
	int rc, after = -1;

	if ((rc = agxq_connect(t->sock, &c)) != 0 ||
	    (rc = du_load_ref(c, NULL, AGXQ_REF_LINEAR, IOT_SEED_A, &m[0],
	    NULL)) != 0 ||
	    (rc = du_load_ref(c, NULL, IOT_REF_B, IOT_SEED_B, &m[1],
	    NULL)) != 0) {
		printf("  client %d: connect/load: %s\n", t->idx,
		    agxq_strerror(rc));
		t->failed++;
		goto out;
	}
	for (int n = 0; after != 0; n++) {
		int k = (n + t->idx) % 2, i = (n / 2 + t->idx) % IOT_NIO;
		const struct du_io *io = k ? &t->w->b[i] : &t->w->a[i];

		if (du_now_ms() > give_up) {
			printf("  client %d: never saw the shutdown\n", t->idx);
			t->failed++;
			break;
		}
		t0 = du_now_ms();
		if (n % 3 == 2 && t->sent < SU_SLOTS) {
			rc = agxq_infer_async(m[k], &io->in, 1, NULL,
			    du_track_cb, du_track_arg(&t->tr, t->sent, io));
			if (rc == 0)
				t->sent++;
		} else {
			rc = iot_infer(m[k], io);
			if (rc == 0)
				atomic_fetch_add(&t->ok, 1);
		}
		dt = du_now_ms() - t0;
		if (dt > t->worst_ms)
			t->worst_ms = dt;
		if (rc == 0)
			continue;
		if (!su_stop_code(rc)) {
			printf("  client %d: %s\n", t->idx, agxq_strerror(rc));
			t->failed++;
			break;
		}
		t->ended++;
		after = after < 0 ? 2 : after - 1;
		usleep(5000);
	}
	/* The callbacks of requests in flight all fire, right or cut short. */
	if (du_track_wait(&t->tr, t->sent, 10000) != 0) {
		printf("  client %d: %d of %d callbacks fired\n", t->idx,
		    t->tr.done, t->sent);
		t->failed++;
	}
out:
	agxq_model_unload(m[0]);
	agxq_model_unload(m[1]);
	agxq_close(c);
	atomic_store(&t->done, 1);
	return NULL;
}

/*
 * 8 clients infer on 4 loops when SIGTERM arrives: every call returns
 * (right, or a shutdown or connection error), every callback fires once,
 * and the daemon exits 0 within a few seconds. The test process becomes a
 * subreaper so that it can read the daemon's exit status.
 */
static void
t_stop_under_load(void)
{
	struct du_daemon d;
	struct iot_world w;
	struct su_thread th[SU_THREADS];
	pthread_t tid[SU_THREADS];
	uint64_t t0, stop_ms = 0, end;
	int started = 0, all, status, ok = 0, ended = 0, hung = 0;
	pid_t pid = -1;

	memset(&d, 0, sizeof d);
	memset(th, 0, sizeof th);
	CHECK(iot_world_make(&w) == 0);
	CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0);
	CHECK(iot_start(&d, "4", NULL) == 0);
	pid = d.pid;
	for (; started < SU_THREADS; started++) {
		th[started].sock = d.sock;
		th[started].w = &w;
		th[started].idx = started;
		CHECK(du_track_init(&th[started].tr, SU_SLOTS, IOT_TOL,
		    IOT_TOL) == 0);
		CHECK(pthread_create(&tid[started], NULL, su_main,
		    &th[started]) == 0);
	}
	/* Load first: every client has right results. */
	end = du_now_ms() + 15000;
	do {
		usleep(20000);
		all = 1;
		for (int i = 0; i < SU_THREADS; i++)
			all &= atomic_load(&th[i].ok) >= 3;
	} while (!all && du_now_ms() < end);
	CHECK(all);
	t0 = du_now_ms();
	CHECK(du_stop(&d) == 0); /* SIGTERM; gone, socket removed */
	stop_ms = du_now_ms() - t0;
	printf("  daemon gone %llu ms after SIGTERM\n",
	    (unsigned long long)stop_ms);
	CHECK(stop_ms < 5000);
	CHECK(waitpid(pid, &status, 0) == pid);
	d.pid = -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		printf("  daemon exit status %#x\n", status);
		CHECK(0);
	}
	/* The worker served to the end and stopped cleanly. */
	if (iot_log_has(&d, "agxqd stopped") != 1) {
		printf("  no \"agxqd stopped\" in the daemon's log\n");
		CHECK(0);
	}
out:
	/* Not stopped (a failure above): kill it so the clients end. */
	if (d.pid > 0 && du_alive(d.pid))
		du_cleanup(&d);
	/* No call may hang: every thread ends soon after the stop. */
	end = du_now_ms() + 15000;
	for (int i = 0; i < started; i++) {
		while (!atomic_load(&th[i].done) && du_now_ms() < end)
			usleep(10000);
		if (!atomic_load(&th[i].done)) {
			printf("  client %d hangs; the watchdog will end the "
			    "test\n", i);
			hung = 1;
		}
	}
	if (hung) {
		/* Kill the daemon so nothing outlives the test, then wait. */
		du_cleanup(&d);
		testlib_failed = 1;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(tid[i], NULL);
		ok += atomic_load(&th[i].ok) + th[i].tr.ok;
		ended += th[i].ended + th[i].tr.done - th[i].tr.ok;
		EXPECT(th[i].failed == 0);
		EXPECT(th[i].ended > 0);
		EXPECT(th[i].worst_ms < SU_HANG_MS);
		EXPECT(th[i].tr.dup == 0 && th[i].tr.mismatch == 0);
		EXPECT(th[i].tr.done == th[i].sent);
		EXPECT(th[i].tr.ok + th[i].tr.count[-AGXQ_ESHUTDOWN] +
		    th[i].tr.count[-AGXQ_EDISCONNECTED] == th[i].tr.done);
		if (th[i].worst_ms >= SU_HANG_MS)
			printf("  client %d: a call took %llu ms\n", i,
			    (unsigned long long)th[i].worst_ms);
	}
	if (started == SU_THREADS)
		printf("  %d right results, %d calls ended by the stop\n", ok,
		    ended);
	for (int i = 0; i < started; i++)
		du_track_free(&th[i].tr);
	iot_finish(&d);
	/* Leave subreaping; reap what was handed to us (start's helpers). */
	prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	iot_world_free(&w);
}

/* ---- bad_option ---------------------------------------------------------- */

/*
 * --io-threads 0, 65, x, -1 and "" are refused, and --conns-per-io-thread
 * 0, x and 65537, each naming its option.
 */
static void
t_bad_option(void)
{
	static const struct {
		const char *opt, *val;
	} bad[] = {
		{ "--io-threads", "0" }, { "--io-threads", "65" },
		{ "--io-threads", "x" }, { "--io-threads", "-1" },
		{ "--io-threads", "" }, { "--conns-per-io-thread", "0" },
		{ "--conns-per-io-thread", "x" },
		{ "--conns-per-io-thread", "65537" },
	};
	struct du_daemon d;
	char out[4096];

	memset(&d, 0, sizeof d);
	CHECK(du_init(&d) == 0);
	for (size_t i = 0; i < TESTLIB_N(bad); i++) {
		const char *a[] = { "start", "--socket", d.sock, bad[i].opt,
		    bad[i].val, NULL };
		int rc = du_run(a, 20000, out, sizeof out);

		if (rc == 0 || rc == -1 ||
		    strstr(out, bad[i].opt + 2) == NULL) {
			printf("  %s '%s': exit %d: %s\n", bad[i].opt,
			    bad[i].val, rc, out);
			/* A daemon that started anyway must not outlive us. */
			if (rc == 0 && (d.pid = du_daemon_pid(d.sock)) > 0)
				du_stop(&d);
			d.pid = -1;
			CHECK(0);
		}
		CHECK(access(d.sock, F_OK) != 0);
	}
out:
	du_cleanup(&d);
}

/*
 * The bounds are accepted (1 and 64, each serving a request) and the
 * default is 1 loop on a machine of at most 4 cores.
 */
static void
t_bounds_and_default(void)
{
	static const char *const n[] = { "1", "64", NULL };
	struct du_daemon d;
	struct iot_world w;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	long long got;

	memset(&d, 0, sizeof d);
	CHECK(iot_world_make(&w) == 0);
	for (int i = 0; i < 3; i++) {
		if (n[i] != NULL)
			CHECK(iot_start(&d, n[i], NULL) == 0);
		else
			CHECK(du_start(&d, NULL) == 0);
		got = iot_io_threads(d.sock);
		if (n[i] != NULL)
			EXPECT(got == strtol(n[i], NULL, 10));
		else if (cores <= 4)
			EXPECT(got == 1);
		else
			EXPECT(got >= 1 && got <= 64);
		printf("  --io-threads %s: %lld loops (%ld cores)\n",
		    n[i] != NULL ? n[i] : "(default)", got, cores);
		/* Two clients: on different loops where there are two. */
		for (int k = 0; k < 2; k++) {
			CHECK_OK(agxq_connect(d.sock, &c));
			CHECK_OK(du_load_ref(c, NULL, AGXQ_REF_LINEAR,
			    IOT_SEED_A, &m, NULL));
			CHECK_OK(iot_infer(m, &w.a[k]));
			agxq_close(c);
			c = NULL;
			m = NULL;
		}
		CHECK(du_stop(&d) == 0);
		du_cleanup(&d);
	}
out:
	agxq_close(c);
	iot_finish(&d);
	iot_world_free(&w);
}

/* ---- fill_first ---------------------------------------------------------- */

/*
 * Reads d's log: the loop each connection of ids [first, first + n) was
 * accepted on (-1 where the log has no line for it), and in *last the id
 * of the last connection accepted so far (0: none). 0, or -1 when the log
 * cannot be read.
 */
static int
ff_scan(const struct du_daemon *d, unsigned long long first, int n, int *loop,
    unsigned long long *last)
{
	char path[160], line[512];
	unsigned long long id;
	unsigned l;
	FILE *f;

	for (int i = 0; i < n; i++)
		loop[i] = -1;
	*last = 0;
	snprintf(path, sizeof path, "%s.log", d->sock);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL) {
		const char *p = strstr(line, "] conn ");

		if (p == NULL || sscanf(p, "] conn %llu: accepted on loop %u",
		    &id, &l) != 2)
			continue;
		if (id > *last)
			*last = id;
		if (id >= first && id < first + (unsigned long long)n)
			loop[id - first] = (int)l;
	}
	fclose(f);
	return 0;
}

#define FF_CLIENTS 12

/*
 * With two loops and 8 connections a loop, the first 8
 * clients are served by loop 0 and the next 4 by loop 1; once 4 of loop
 * 0's leave, the next 2 go back to loop 0, which has room again.
 */
static void
t_fill_first(void)
{
	static const char *const extra[] = { "--io-threads", "2",
	    "--conns-per-io-thread", "8", "--log-level", "debug", NULL };
	struct du_daemon d;
	struct iot_world w;
	agxq_client *c[FF_CLIENTS + 2];
	agxq_model *m = NULL;
	unsigned long long first, last;
	int loop[FF_CLIENTS + 2], i;

	memset(&d, 0, sizeof d);
	memset(c, 0, sizeof c);
	CHECK(iot_world_make(&w) == 0);
	CHECK(du_start(&d, extra) == 0);
	usleep(300000); /* the start's own connections are closed by then */
	CHECK(ff_scan(&d, 0, 0, loop, &first) == 0);
	first++;
	for (i = 0; i < FF_CLIENTS; i++)
		CHECK_OK(agxq_connect(d.sock, &c[i]));
	CHECK(ff_scan(&d, first, FF_CLIENTS, loop, &last) == 0);
	for (i = 0; i < FF_CLIENTS; i++) {
		if (loop[i] != (i < 8 ? 0 : 1)) {
			printf("  client %d (conn %llu) on loop %d\n", i,
			    first + (unsigned long long)i, loop[i]);
			EXPECT(0);
		}
	}
	/* Every client works, whichever loop serves it. */
	for (i = 0; i < FF_CLIENTS; i++) {
		CHECK_OK(du_load_ref(c[i], NULL, AGXQ_REF_LINEAR, IOT_SEED_A,
		    &m, NULL));
		CHECK_OK(iot_infer(m, &w.a[i % IOT_NIO]));
	}
	for (i = 0; i < 4; i++) {
		agxq_close(c[i]);
		c[i] = NULL;
	}
	usleep(300000);
	for (i = FF_CLIENTS; i < FF_CLIENTS + 2; i++)
		CHECK_OK(agxq_connect(d.sock, &c[i]));
	CHECK(ff_scan(&d, first + FF_CLIENTS, 2, loop, &last) == 0);
	EXPECT(loop[0] == 0 && loop[1] == 0);
out:
	for (i = 0; i < FF_CLIENTS + 2; i++)
		agxq_close(c[i]);
	iot_finish(&d);
	iot_world_free(&w);
}

static const struct testlib_case cases[] = {
	{ "many_clients_correct", t_many_clients_correct },
	{ "churn", t_churn },
	{ "stats_and_status_concurrent", t_stats_and_status_concurrent },
	{ "stop_under_load", t_stop_under_load },
	{ "bad_option", t_bad_option },
	{ "bounds_and_default", t_bounds_and_default },
	{ "fill_first", t_fill_first },
};

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	du_watchdog(110);
	return testlib_run(cases, TESTLIB_N(cases), argc, argv);
}
