/*
 * bench_probe: the round-trip probe of agxq-bench (issue 3, item 4). It
 * measures (a) synchronous requests of a trivial model (one input [256], a
 * ReLU) through agxqd from one client, against (b) a raw Unix-socket
 * ping-pong of the same payload (1 KiB each way) between two threads, and
 * (c) the raw ping-pong ceiling of 8 pairs at once.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agxq.h"
#include "bench.h"

#define BENCH_PROBE_DIM 256
#define BENCH_PROBE_PAIRS 8

/* One ping-pong pair: a pinger and an echo thread on a socketpair. */
struct bench_pair {
	int fd[2];
	size_t bytes;
	_Atomic int *stop;
	_Atomic uint64_t count;
	_Atomic uint64_t failures;
	pthread_t ping, echo;
};

/* Transfers exactly len bytes (send or recv); 0 or -1. */
static int
bench_xfer(int fd, char *buf, size_t len, int sending)
{
	while (len > 0) {
		ssize_t n = sending ? send(fd, buf, len, MSG_NOSIGNAL) :
		    recv(fd, buf, len, 0);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Echo side: returns each message until the peer shuts down. */
static void *
bench_pair_echo(void *arg)
{
	struct bench_pair *p = arg;
	char *buf = malloc(p->bytes);

	while (buf != NULL && bench_xfer(p->fd[1], buf, p->bytes, 0) == 0) {
		if (bench_xfer(p->fd[1], buf, p->bytes, 1) != 0)
			break;
	}
	free(buf);
	return NULL;
}

/* Pinger side: sends a message and waits for it back, until stopped. */
static void *
bench_pair_ping(void *arg)
{
	struct bench_pair *p = arg;
	char *buf = calloc(1, p->bytes);

	if (buf == NULL) {
		atomic_fetch_add(&p->failures, 1);
		return NULL;
	}
	while (!atomic_load_explicit(p->stop, memory_order_relaxed)) {
		if (bench_xfer(p->fd[0], buf, p->bytes, 1) != 0 ||
		    bench_xfer(p->fd[0], buf, p->bytes, 0) != 0) {
			atomic_fetch_add(&p->failures, 1);
			break;
		}
		atomic_fetch_add_explicit(&p->count, 1, memory_order_relaxed);
	}
	shutdown(p->fd[0], SHUT_WR);
	free(buf);
	return NULL;
}

/*
 * Runs npairs raw ping-pong pairs of bytes-sized messages for seconds after
 * a short warm-up; returns round trips per second (0 on failure).
 */
static double
bench_raw(int npairs, size_t bytes, double seconds, uint64_t *failures)
{
	struct bench_pair pairs[BENCH_PROBE_PAIRS];
	_Atomic int stop = 0;
	uint64_t c0 = 0, c1 = 0;
	double t0, t1;
	int n;

	memset(pairs, 0, sizeof pairs);
	for (n = 0; n < npairs; n++) {
		struct bench_pair *p = &pairs[n];

		p->bytes = bytes;
		p->stop = &stop;
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
		    p->fd) == -1)
			break;
		if (pthread_create(&p->echo, NULL, bench_pair_echo, p) != 0) {
			close(p->fd[0]);
			close(p->fd[1]);
			break;
		}
		if (pthread_create(&p->ping, NULL, bench_pair_ping, p) != 0) {
			shutdown(p->fd[0], SHUT_WR);
			pthread_join(p->echo, NULL);
			close(p->fd[0]);
			close(p->fd[1]);
			break;
		}
	}
	bench_sleep_ms(seconds * 100);   /* warm-up: a tenth */
	for (int i = 0; i < n; i++)
		c0 += atomic_load(&pairs[i].count);
	t0 = bench_now_s();
	bench_sleep_ms(seconds * 1000);
	for (int i = 0; i < n; i++)
		c1 += atomic_load(&pairs[i].count);
	t1 = bench_now_s();
	atomic_store(&stop, 1);
	for (int i = 0; i < n; i++) {
		pthread_join(pairs[i].ping, NULL);
		pthread_join(pairs[i].echo, NULL);
		close(pairs[i].fd[0]);
		close(pairs[i].fd[1]);
		*failures += atomic_load(&pairs[i].failures);
	}
	if (n != npairs) {
		(*failures)++;
		return 0;
	}
	return (double)(c1 - c0) / (t1 - t0);
}

/* Builds the trivial model: x [batch, 256] -> relu(x). */
static int
bench_trivial_graph(agxq_graph **out)
{
	const int64_t shape[1] = { BENCH_PROBE_DIM };
	agxq_graph *g;
	int x, rc;

	if ((g = agxq_graph_new()) == NULL)
		return AGXQ_ENOMEM;
	x = agxq_graph_input(g, shape, 1);
	rc = agxq_graph_output(g, agxq_graph_relu(g, x));
	if (rc < 0) {
		agxq_graph_free(g);
		return rc;
	}
	*out = g;
	return 0;
}

/*
 * Runs synchronous trivial-model requests through agxqd at socket for
 * seconds after a warm-up; sets the mean and p99 µs per round trip.
 */
static int
bench_daemon_rt(const char *socket, double seconds, struct bench_probe *p)
{
	static float x[BENCH_PROBE_DIM];
	struct bench_samples s = { 0 };
	agxq_tensor in = { .dtype = AGXQ_FLOAT32, .ndim = 2,
	    .shape = { 1, BENCH_PROBE_DIM }, .data = x };
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_graph *g = NULL;
	double start, t0, end;
	uint64_t n = 0;
	int rc;

	agxq_reference_weights(7, 1.0f, x, BENCH_PROBE_DIM);
	if ((rc = bench_trivial_graph(&g)) != 0 ||
	    (rc = agxq_connect(socket, &c)) != 0 ||
	    (rc = agxq_model_load(c, g, "trivial", &m)) != 0) {
		fprintf(stderr, "agxq-bench: probe set-up: %s\n",
		    agxq_strerror(rc));
		p->failures++;
		goto out;
	}
	start = bench_now_s();
	t0 = start + seconds * 0.1;
	end = t0 + seconds;
	for (;;) {
		double a = bench_now_s(), b;
		const agxq_tensor *y;
		agxq_result *r;

		if (a >= end)
			break;
		if ((rc = agxq_infer(m, &in, 1, NULL, &r)) != 0) {
			p->failures++;
			if (p->failures > 100)
				break;
			continue;
		}
		b = bench_now_s();
		y = agxq_result_output(r, 0);
		if (y == NULL || y->ndim != 2 || y->shape[0] != 1 ||
		    y->shape[1] != BENCH_PROBE_DIM)
			p->failures++;
		agxq_result_free(r);
		if (a >= t0) {
			n++;
			if (bench_samples_add(&s, (float)((b - a) * 1e6),
			    0) != 0)
				p->failures++;
		}
	}
	if (n > 0) {
		double p50;

		p->daemon_us = (bench_now_s() - t0) * 1e6 / (double)n;
		bench_percentiles(s.us, s.n, &p50, &p->daemon_p99_us);
	}
out:
	bench_samples_free(&s);
	if (m != NULL)
		agxq_model_unload(m);
	agxq_close(c);
	agxq_graph_free(g);
	return p->failures == 0 ? 0 : -1;
}

/*
 * Runs the probe (each part for seconds) against agxqd at socket (NULL:
 * raw parts only). Returns 0, or -1 when anything failed.
 */
int
bench_probe_run(const char *socket, double seconds, struct bench_probe *p)
{
	memset(p, 0, sizeof *p);
	p->msg_bytes = BENCH_PROBE_DIM * sizeof(float);
	if (socket != NULL)
		bench_daemon_rt(socket, seconds, p);
	p->raw1_rt_s = bench_raw(1, p->msg_bytes, seconds, &p->failures);
	p->raw_us = p->raw1_rt_s > 0 ? 1e6 / p->raw1_rt_s : 0;
	p->raw8_rt_s = bench_raw(BENCH_PROBE_PAIRS, p->msg_bytes, seconds,
	    &p->failures);
	p->done = 1;
	return p->failures == 0 ? 0 : -1;
}
