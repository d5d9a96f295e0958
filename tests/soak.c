/*
 * agxq-soak: a bounded soak of agxqd. N clients (each its own connection;
 * threads spread over several processes) send requests to all three
 * reference models for a given time, sync and async, and check every result
 * against direct mode. Meanwhile the resident memory of the daemon's
 * serving worker is sampled every second. Prints a summary; exits 1 on any
 * lost request (a callback that never fired), wrong result, failed request,
 * a replaced worker, or RSS growth after the warm-up beyond the threshold.
 *
 *	agxq-soak [--seconds 60] [--clients 64] [--procs 4] [--warmup s]
 *	    [--rss-growth-mb 32] [--transformer-every 100]
 *	    [--agxqd PATH | --socket PATH]
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agxq.h"
#include "agxq_direct.h"
#include "daemon_util.h"

/* Sanitizers keep freed memory (ASan's quarantine) and add their own: no RSS check. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SOAK_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SOAK_SANITIZED 1
#endif
#endif
#ifndef SOAK_SANITIZED
#define SOAK_SANITIZED 0
#endif

#define SOAK_TOL 1e-4
#define SOAK_NIO 8
#define SOAK_WINDOW 4        /* async requests in flight per client */
#define SOAK_GRACE_MS 30000  /* wait for callbacks after the deadline */
#define SOAK_MAX_PROCS 64

struct soak_opts {
	int seconds;
	int clients;
	int procs;
	int warmup;
	long rss_growth_mb;
	int transformer_every;
	const char *agxqd;
	const char *socket;
};

/* What one client (or a sum of them) saw. */
struct soak_counts {
	long sent;
	long ok;
	long wrong;    /* results that differ from direct mode */
	long failed;   /* requests that returned an error */
	long lost;     /* async callbacks that never fired */
	long connect_failed;
};

/* Inputs and expected outputs, made in direct mode before forking. */
struct soak_world {
	const char *sock;
	struct du_io io[3][SOAK_NIO];
	int nio[3];
	uint64_t deadline_ms;
	int transformer_every;
};

/* One async request slot of a client. */
struct soak_slot {
	struct soak_client *cl;
	const struct du_io *io;
	int busy;       /* sent, callback not yet fired */
};

struct soak_client {
	struct soak_world *w;
	int id;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct soak_slot slot[SOAK_WINDOW];
	struct soak_counts n;
};

/* Makes the inputs and expected outputs of the three models. */
static int
soak_world_make(struct soak_world *w)
{
	agxq_direct *d = NULL;
	agxq_direct_model *dm[3] = { NULL, NULL, NULL };
	int rc = -1;

	if (agxq_direct_open("cpu", 0, &d) != 0)
		return -1;
	for (int k = 0; k < 3; k++) {
		if (du_load_ref(NULL, d, (agxq_reference)(k + 1), 42, NULL,
		    &dm[k]) != 0)
			goto out;
		w->nio[k] = k == 2 ? 2 : SOAK_NIO;
		for (int i = 0; i < w->nio[k]; i++) {
			if (du_io_make(&w->io[k][i], (agxq_reference)(k + 1),
			    1 + i % 4, k == 2 ? 8 + 8 * i : 0,
			    (uint64_t)(5000 + 100 * k + i), dm[k]) != 0)
				goto out;
		}
	}
	rc = 0;
out:
	for (int k = 0; k < 3; k++)
		agxq_direct_unload(dm[k]);
	agxq_direct_close(d);
	return rc;
}

/* Completion of an async request: check it, free its slot. */
static void
soak_cb(void *arg, int status, agxq_result *r)
{
	struct soak_slot *s = arg;
	struct soak_client *cl = s->cl;

	pthread_mutex_lock(&cl->mu);
	if (s->io == NULL) {
		/* Given up for lost; agxq_close fires it now. */
		pthread_mutex_unlock(&cl->mu);
		return;
	}
	if (status != 0)
		cl->n.failed++;
	else if (du_io_check(s->io, r, SOAK_TOL, SOAK_TOL) != 0)
		cl->n.wrong++;
	else
		cl->n.ok++;
	s->busy = 0;
	pthread_cond_broadcast(&cl->cv);
	pthread_mutex_unlock(&cl->mu);
}

/* Waits for slot s to be free until deadline; 0, or -1 on timeout. */
static int
soak_slot_wait(struct soak_client *cl, struct soak_slot *s, uint64_t until)
{
	int rc = 0;

	pthread_mutex_lock(&cl->mu);
	while (s->busy && rc == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&cl->cv, &cl->mu, &ts);
		if (s->busy && du_now_ms() > until)
			rc = -1;
	}
	pthread_mutex_unlock(&cl->mu);
	return rc;
}

/* Picks the model of request i: the transformer one in transformer_every. */
static int
soak_pick(const struct soak_world *w, int id, long i)
{
	if (w->transformer_every > 0 &&
	    (i + id) % w->transformer_every == w->transformer_every - 1)
		return 2;
	return (int)((i + id) % 2);
}

/* One client: its own connection; sync and async requests until the deadline. */
static void *
soak_client_main(void *arg)
{
	struct soak_client *cl = arg;
	struct soak_world *w = cl->w;
	agxq_client *c = NULL;
	agxq_model *m[3] = { NULL, NULL, NULL };
	long i;

	if (agxq_connect(w->sock, &c) != 0) {
		cl->n.connect_failed++;
		return NULL;
	}
	for (int k = 0; k < 3; k++) {
		if (du_load_ref(c, NULL, (agxq_reference)(k + 1), 42, &m[k],
		    NULL) != 0) {
			cl->n.connect_failed++;
			goto out;
		}
	}
	for (i = 0; du_now_ms() < w->deadline_ms; i++) {
		int k = soak_pick(w, cl->id, i);
		const struct du_io *io = &w->io[k][(i * 5 + cl->id) %
		    w->nio[k]];
		struct soak_slot *s;
		agxq_result *r = NULL;
		int rc;

		pthread_mutex_lock(&cl->mu);
		cl->n.sent++;
		pthread_mutex_unlock(&cl->mu);
		if (i % (SOAK_WINDOW + 1) == 0) {
			rc = agxq_infer(m[k], &io->in, 1, NULL, &r);
			pthread_mutex_lock(&cl->mu);
			if (rc != 0)
				cl->n.failed++;
			else if (du_io_check(io, r, SOAK_TOL, SOAK_TOL) != 0)
				cl->n.wrong++;
			else
				cl->n.ok++;
			pthread_mutex_unlock(&cl->mu);
			agxq_result_free(r);
			continue;
		}
		s = &cl->slot[i % SOAK_WINDOW];
		if (soak_slot_wait(cl, s, w->deadline_ms + SOAK_GRACE_MS) != 0)
			break;
		s->cl = cl;
		s->io = io;
		pthread_mutex_lock(&cl->mu);
		s->busy = 1;
		pthread_mutex_unlock(&cl->mu);
		if (agxq_infer_async(m[k], &io->in, 1, NULL, soak_cb, s) != 0) {
			pthread_mutex_lock(&cl->mu);
			s->busy = 0;
			cl->n.failed++;
			pthread_mutex_unlock(&cl->mu);
		}
	}
	/* Every callback must fire before the grace period ends. */
	for (int j = 0; j < SOAK_WINDOW; j++) {
		if (soak_slot_wait(cl, &cl->slot[j],
		    w->deadline_ms + SOAK_GRACE_MS) != 0) {
			pthread_mutex_lock(&cl->mu);
			cl->n.lost++;
			cl->slot[j].io = NULL; /* agxq_close fires it: ignored */
			pthread_mutex_unlock(&cl->mu);
		}
	}
out:
	for (int k = 0; k < 3; k++)
		agxq_model_unload(m[k]);
	/* Callbacks that fire only now were lost: they are counted. */
	pthread_mutex_lock(&cl->mu);
	for (int j = 0; j < SOAK_WINDOW; j++)
		cl->slot[j].io = NULL;
	pthread_mutex_unlock(&cl->mu);
	agxq_close(c);
	return NULL;
}

/* Adds b to a. */
static void
soak_add(struct soak_counts *a, const struct soak_counts *b)
{
	a->sent += b->sent;
	a->ok += b->ok;
	a->wrong += b->wrong;
	a->failed += b->failed;
	a->lost += b->lost;
	a->connect_failed += b->connect_failed;
}

/* A child process: nthreads clients; writes the summed counts to fd. */
static int
soak_child(struct soak_world *w, int first_id, int nthreads, int fd)
{
	struct soak_client *cl;
	pthread_t *th;
	struct soak_counts sum;
	int started = 0;

	memset(&sum, 0, sizeof sum);
	cl = calloc((size_t)nthreads, sizeof *cl);
	th = calloc((size_t)nthreads, sizeof *th);
	if (cl == NULL || th == NULL)
		return 1;
	for (int i = 0; i < nthreads; i++) {
		cl[i].w = w;
		cl[i].id = first_id + i;
		pthread_mutex_init(&cl[i].mu, NULL);
		pthread_cond_init(&cl[i].cv, NULL);
		if (pthread_create(&th[i], NULL, soak_client_main, &cl[i]) != 0)
			break;
		started++;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		soak_add(&sum, &cl[i].n);
	}
	sum.connect_failed += nthreads - started;
	if (write(fd, &sum, sizeof sum) != (ssize_t)sizeof sum)
		return 1;
	for (int i = 0; i < nthreads; i++) {
		pthread_mutex_destroy(&cl[i].mu);
		pthread_cond_destroy(&cl[i].cv);
	}
	free(cl);
	free(th);
	return 0;
}

/* Prints usage and exits 2. */
static void __attribute__((noreturn))
soak_usage(void)
{
	fprintf(stderr, "usage: agxq-soak [--seconds N] [--clients N] "
	    "[--procs N] [--warmup S]\n\t[--rss-growth-mb M] "
	    "[--transformer-every N] [--agxqd PATH | --socket PATH]\n");
	exit(2);
}

/* Parses a positive integer option or exits. */
static long
soak_num(const char *name, const char *s, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0 || v > max) {
		fprintf(stderr, "agxq-soak: bad %s: %s\n", name, s);
		exit(2);
	}
	return v;
}

/* Parses the command line into o. */
static void
soak_args(int argc, char **argv, struct soak_opts *o)
{
	static const struct option longopts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "clients", required_argument, NULL, 'c' },
		{ "procs", required_argument, NULL, 'p' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "rss-growth-mb", required_argument, NULL, 'r' },
		{ "transformer-every", required_argument, NULL, 't' },
		{ "agxqd", required_argument, NULL, 'a' },
		{ "socket", required_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;

	memset(o, 0, sizeof *o);
	o->seconds = 60;
	o->clients = 64;
	o->procs = 4;
	o->warmup = -1;
	o->rss_growth_mb = 32;
	o->transformer_every = 100;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			o->seconds = (int)soak_num("--seconds", optarg, 86400);
			break;
		case 'c':
			o->clients = (int)soak_num("--clients", optarg, 1024);
			break;
		case 'p':
			o->procs = (int)soak_num("--procs", optarg,
			    SOAK_MAX_PROCS);
			break;
		case 'w':
			o->warmup = (int)soak_num("--warmup", optarg, 86400);
			break;
		case 'r':
			o->rss_growth_mb = soak_num("--rss-growth-mb", optarg,
			    1 << 20);
			break;
		case 't':
			o->transformer_every = (int)soak_num(
			    "--transformer-every", optarg, 1 << 20);
			break;
		case 'a':
			o->agxqd = optarg;
			break;
		case 'S':
			o->socket = optarg;
			break;
		default:
			soak_usage();
		}
	}
	if (optind != argc || o->clients < 1 || o->procs < 1 ||
	    o->seconds < 1)
		soak_usage();
	if (o->procs > o->clients)
		o->procs = o->clients;
	if (o->warmup < 0)
		o->warmup = o->seconds / 10 > 5 ? o->seconds / 10 : 5;
	if (o->warmup >= o->seconds)
		o->warmup = o->seconds / 2;
	if (o->agxqd != NULL)
		setenv("AGXQD", o->agxqd, 1);
}

int
main(int argc, char **argv)
{
	struct soak_opts o;
	struct soak_world w;
	struct du_daemon d;
	struct soak_counts sum;
	pid_t kids[SOAK_MAX_PROCS], dpid, wpid = -1;
	int pipes[SOAK_MAX_PROCS][2], nkids = 0, id = 0, bad = 0;
	long rss_first = -1, rss_warm = -1, rss_last = -1, rss_max = -1;
	uint64_t t0, next;

	setvbuf(stdout, NULL, _IOLBF, 0);
	soak_args(argc, argv, &o);
	memset(&d, 0, sizeof d);
	memset(&w, 0, sizeof w);
	memset(&sum, 0, sizeof sum);
	du_watchdog((unsigned int)o.seconds + SOAK_GRACE_MS / 1000 + 120);
	if (o.socket == NULL) {
		if (du_start(&d, NULL) != 0)
			return 1;
		w.sock = d.sock;
		dpid = d.pid;
	} else {
		w.sock = o.socket;
		dpid = du_daemon_pid(o.socket);
	}
	/* RSS is the serving worker's; dpid (the supervisor) only watches it. */
	if (dpid <= 0 || (wpid = du_worker_pid(w.sock)) <= 0) {
		printf("agxq-soak: cannot find the daemon\n");
		bad = 1;
		goto out;
	}
	if (soak_world_make(&w) != 0) {
		printf("agxq-soak: cannot make the expected results\n");
		bad = 1;
		goto out;
	}
	w.transformer_every = o.transformer_every;
	printf("agxq-soak: %d clients in %d processes for %d s (warm-up %d s), "
	    "daemon pid %d, worker pid %d\n", o.clients, o.procs, o.seconds,
	    o.warmup, (int)dpid, (int)wpid);
	t0 = du_now_ms();
	w.deadline_ms = t0 + (uint64_t)o.seconds * 1000;
	fflush(stdout);
	for (int p = 0; p < o.procs; p++) {
		int n = o.clients / o.procs + (p < o.clients % o.procs);
		pid_t pid;

		if (pipe(pipes[p]) != 0)
			break;
		if ((pid = fork()) == 0) {
			close(pipes[p][0]);
			_exit(soak_child(&w, id, n, pipes[p][1]));
		}
		close(pipes[p][1]);
		if (pid < 0) {
			close(pipes[p][0]);
			break;
		}
		kids[nkids++] = pid;
		id += n;
	}
	if (nkids != o.procs) {
		printf("agxq-soak: fork failed\n");
		bad = 1;
	}

	/* Sample the daemon's RSS every second until the clients are done. */
	next = t0;
	for (int done = 0; done < nkids;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		uint64_t now = du_now_ms();

		if (pid > 0) {
			for (int p = 0; p < nkids; p++) {
				struct soak_counts c;

				if (kids[p] != pid)
					continue;
				if (!WIFEXITED(status) ||
				    WEXITSTATUS(status) != 0 ||
				    read(pipes[p][0], &c, sizeof c) !=
				    (ssize_t)sizeof c) {
					printf("agxq-soak: process %d failed\n",
					    p);
					bad = 1;
				} else
					soak_add(&sum, &c);
				close(pipes[p][0]);
				done++;
			}
			continue;
		}
		if (now >= next) {
			long rss = du_rss_kb(wpid);
			uint64_t s = (now - t0) / 1000;

			if (rss_first < 0)
				rss_first = rss;
			if (rss_warm < 0 && s >= (uint64_t)o.warmup)
				rss_warm = rss;
			if (rss_warm >= 0 && rss > rss_max)
				rss_max = rss;
			if (now <= w.deadline_ms)
				rss_last = rss;
			if (s % 10 == 0)
				printf("  t=%3llus daemon RSS %ld kB\n",
				    (unsigned long long)s, rss);
			next += 1000;
		}
		usleep(20000);
	}
	if (rss_warm < 0)
		rss_warm = rss_last;

	printf("agxq-soak: %ld sent, %ld ok, %ld wrong, %ld failed, %ld lost, "
	    "%ld clients could not start\n", sum.sent, sum.ok, sum.wrong,
	    sum.failed, sum.lost, sum.connect_failed);
	printf("agxq-soak: daemon RSS first %ld kB, after warm-up %ld kB, "
	    "last %ld kB, max after warm-up %ld kB (growth %+ld kB, "
	    "limit %ld kB)\n", rss_first, rss_warm, rss_last, rss_max,
	    rss_last - rss_warm, o.rss_growth_mb * 1024);
	if (sum.wrong != 0 || sum.failed != 0 || sum.lost != 0 ||
	    sum.connect_failed != 0 || sum.ok != sum.sent || sum.sent == 0)
		bad = 1;
	if (rss_last < 0 || (!SOAK_SANITIZED &&
	    rss_last - rss_warm > o.rss_growth_mb * 1024))
		bad = 1;
	if (o.socket == NULL && !du_alive(dpid)) {
		printf("agxq-soak: the daemon died\n");
		bad = 1;
	}
	if (!du_alive(wpid) || du_worker_pid(w.sock) != wpid) {
		printf("agxq-soak: the daemon's worker %d died and was "
		    "replaced\n", (int)wpid);
		bad = 1;
	}
out:
	if (o.socket == NULL) {
		if (d.pid > 0 && du_stop(&d) != 0)
			bad = 1;
		du_cleanup(&d);
	}
	for (int k = 0; k < 3; k++)
		for (int i = 0; i < SOAK_NIO; i++)
			du_io_free(&w.io[k][i]);
	printf("agxq-soak: %s\n", bad ? "FAIL" : "ok");
	return bad;
}
