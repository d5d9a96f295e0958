/*
 * bench_run: one measurement of agxq-bench. It starts N clients as threads
 * or as worker processes (fork + exec of the bench itself), waits until all
 * are set up, starts them together, runs a warm-up and then fixed windows
 * until 3 consecutive windows agree within 10% or --max-windows is reached,
 * and reports the median of the last 3 windows, their spread and the
 * latency percentiles over them.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agxq_direct.h"
#include "bench.h"

#define BENCH_SETUP_S 120.0        /* longest client set-up */
#define BENCH_MAX_SAMPLES 100000000u

/* A client of the measurement: a thread or a worker process. */
struct bench_member {
	const struct bench_client_spec *spec;
	struct bench_ctl *ctl;
	int slot;
	pthread_t thread;
	pid_t pid;
	int rfd;                   /* worker's sample pipe, read end */
	int exited;
	struct bench_samples samples;
};

/* Orders floats. */
static int
bench_cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? -1 : x > y;
}

/* Orders doubles. */
static int
bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Sorts v and sets its 50th and 99th percentiles (0 when empty). */
void
bench_percentiles(float *v, size_t n, double *p50, double *p99)
{
	size_t i99;

	*p50 = *p99 = 0;
	if (n == 0)
		return;
	qsort(v, n, sizeof *v, bench_cmp_float);
	i99 = (size_t)((double)n * 0.99);
	if (i99 >= n)
		i99 = n - 1;
	*p50 = v[n / 2];
	*p99 = v[i99];
}

/* Thread body of a client. */
static void *
bench_member_main(void *arg)
{
	struct bench_member *m = arg;

	bench_client_run(m->spec, m->ctl, m->slot, &m->samples);
	return NULL;
}

/* Sum of all clients' completed requests. */
static uint64_t
bench_total_ops(struct bench_ctl *ctl, int clients)
{
	uint64_t sum = 0;

	for (int i = 0; i < clients; i++)
		sum += atomic_load_explicit(&ctl->slots[i].ops,
		    memory_order_relaxed);
	return sum;
}

/* Forks and execs worker m of spec; 0 or -1. */
static int
bench_member_spawn(struct bench_member *m, int ctlfd, const char *self)
{
	char sctl[16], sout[16], sslot[16], skind[16], sthreads[16];
	const struct bench_client_spec *spec = m->spec;
	const char *argv[11];
	int p[2];

	if (pipe2(p, O_CLOEXEC) == -1)
		return -1;
	snprintf(sctl, sizeof sctl, "%d", ctlfd);
	snprintf(sout, sizeof sout, "%d", p[1]);
	snprintf(sslot, sizeof sslot, "%d", m->slot);
	snprintf(skind, sizeof skind, "%d", (int)spec->kind);
	snprintf(sthreads, sizeof sthreads, "%d", spec->blas_threads);
	argv[0] = self;
	argv[1] = "--worker";
	argv[2] = sctl;
	argv[3] = sout;
	argv[4] = sslot;
	argv[5] = skind;
	argv[6] = agxq_reference_name(spec->model);
	argv[7] = spec->backend;
	argv[8] = spec->socket != NULL ? spec->socket : "-";
	argv[9] = sthreads;
	argv[10] = NULL;

	fflush(NULL);
	if ((m->pid = fork()) == -1) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (m->pid == 0) {
		/* Only these two descriptors survive the exec. */
		fcntl(ctlfd, F_SETFD, 0);
		fcntl(p[1], F_SETFD, 0);
		execv(self, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	m->rfd = p[0];
	return 0;
}

/* Reads all of len bytes from fd; 0 or -1. */
static int
bench_read_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads a worker's samples, reaps it; 0 or -1 when it failed. */
static int
bench_member_collect(struct bench_member *m)
{
	uint64_t n;
	int status, rc = 0;

	if (bench_read_all(m->rfd, &n, sizeof n) != 0 ||
	    n > BENCH_MAX_SAMPLES)
		rc = -1;
	else if (n > 0) {
		m->samples.us = malloc(n * sizeof *m->samples.us);
		if (m->samples.us == NULL ||
		    bench_read_all(m->rfd, m->samples.us,
		    n * sizeof *m->samples.us) != 0)
			rc = -1;
		else
			m->samples.n = m->samples.cap = n;
	}
	close(m->rfd);
	if (!m->exited) {
		while (waitpid(m->pid, &status, 0) == -1 && errno == EINTR)
			;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			rc = -1;
	}
	return rc;
}

/* Waits until every client is set up; 0, or -1 on a failure or timeout. */
static int
bench_barrier(struct bench_ctl *ctl, struct bench_member *mem, int clients,
    enum bench_mode mode)
{
	double end = bench_now_s() + BENCH_SETUP_S;
	int status;

	for (;;) {
		int ready = atomic_load(&ctl->ready);
		int failed = atomic_load(&ctl->setup_failed);

		if (failed > 0)
			return -1;
		if (ready == clients)
			return 0;
		if (bench_now_s() > end) {
			fprintf(stderr, "agxq-bench: clients not ready after "
			    "%.0f s\n", BENCH_SETUP_S);
			return -1;
		}
		/* A worker never exits before the stop. */
		for (int i = 0; mode == BENCH_PROCESSES && i < clients; i++) {
			if (waitpid(mem[i].pid, &status, WNOHANG) ==
			    mem[i].pid) {
				mem[i].exited = 1;
				fprintf(stderr, "agxq-bench: worker %d exited "
				    "during set-up\n", i);
				return -1;
			}
		}
		bench_sleep_ms(1);
	}
}

/* Median, spread and stability of the last (up to 3) windows. */
static void
bench_windows_result(const double *rate, int nwin, struct bench_result *r)
{
	double last[BENCH_STABLE_WINDOWS];
	int k = nwin < BENCH_STABLE_WINDOWS ? nwin : BENCH_STABLE_WINDOWS;

	r->windows = nwin;
	if (k == 0)
		return;
	memcpy(last, rate + nwin - k, (size_t)k * sizeof *last);
	qsort(last, (size_t)k, sizeof *last, bench_cmp_double);
	r->ops_s = last[k / 2];
	r->spread = last[0] > 0 ? last[k - 1] / last[0] - 1 : 1e9;
	r->stable = k == BENCH_STABLE_WINDOWS &&
	    r->spread <= BENCH_STABLE_SPREAD + 1e-12;
}

/* Runs the warm-up and the windows; returns the number of windows run. */
static int
bench_windows(struct bench_ctl *ctl, int clients, const struct bench_timing *tm,
    double *rate)
{
	int w;

	atomic_store(&ctl->phase, BENCH_WARMUP);
	bench_sleep_ms(tm->warmup_ms);
	for (w = 0; w < tm->max_windows && w < BENCH_MAX_WINDOWS; w++) {
		uint64_t c0, c1;
		double t0, t1, spread, lo, hi;

		c0 = bench_total_ops(ctl, clients);
		t0 = bench_now_s();
		atomic_store(&ctl->phase, BENCH_WINDOW(w));
		bench_sleep_ms(tm->window_ms);
		c1 = bench_total_ops(ctl, clients);
		t1 = bench_now_s();
		rate[w] = (double)(c1 - c0) / (t1 - t0);
		if (w + 1 < BENCH_STABLE_WINDOWS)
			continue;
		lo = hi = rate[w];
		for (int i = w - BENCH_STABLE_WINDOWS + 1; i < w; i++) {
			lo = rate[i] < lo ? rate[i] : lo;
			hi = rate[i] > hi ? rate[i] : hi;
		}
		spread = lo > 0 ? hi / lo - 1 : 1e9;
		if (spread <= BENCH_STABLE_SPREAD) {
			w++;
			break;
		}
	}
	return w;
}

/*
 * Measures spec with clients clients as threads or processes (self: the
 * bench binary, for workers). Fills r (ops_s, spread, latencies, failures);
 * returns 0, or -1 when the clients could not be set up.
 */
int
bench_measure(const struct bench_client_spec *spec, enum bench_mode mode,
    int clients, const struct bench_timing *tm, const char *self,
    struct bench_result *r)
{
	struct bench_member *mem;
	struct bench_ctl *ctl;
	double rate[BENCH_MAX_WINDOWS];
	float *all = NULL;
	size_t nall = 0;
	uint64_t lost = 0;
	int ctlfd, nwin = 0, ran = 0, started = 0;

	if (clients < 1 || clients > BENCH_MAX_CLIENTS)
		return -1;
	if ((mem = calloc((size_t)clients, sizeof *mem)) == NULL)
		return -1;
	if ((ctlfd = memfd_create("agxq-bench", MFD_CLOEXEC)) == -1 ||
	    ftruncate(ctlfd, sizeof *ctl) == -1) {
		fprintf(stderr, "agxq-bench: memfd: %s\n", strerror(errno));
		goto fail_free_members;
	}
	ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED,
	    ctlfd, 0);
	if (ctl == MAP_FAILED) {
		fprintf(stderr, "agxq-bench: mmap: %s\n", strerror(errno));
		goto fail_close_memfd;
	}

	if (mode == BENCH_THREADS && spec->kind != BENCH_PROXY)
		agxq_direct_set_cpu_threads(spec->kind == BENCH_TUNED ?
		    spec->blas_threads : 0);
	for (started = 0; started < clients; started++) {
		struct bench_member *m = &mem[started];

		m->spec = spec;
		m->ctl = ctl;
		m->slot = started;
		m->rfd = -1;
		if (mode == BENCH_THREADS) {
			if (pthread_create(&m->thread, NULL, bench_member_main,
			    m) != 0)
				break;
		} else if (bench_member_spawn(m, ctlfd, self) != 0) {
			fprintf(stderr, "agxq-bench: cannot start worker: "
			    "%s\n", strerror(errno));
			break;
		}
	}
	if (started == clients && bench_barrier(ctl, mem, clients, mode) == 0) {
		nwin = bench_windows(ctl, clients, tm, rate);
		ran = 1;
	}
	atomic_store(&ctl->measure_from, nwin >= BENCH_STABLE_WINDOWS ?
	    BENCH_WINDOW(nwin - BENCH_STABLE_WINDOWS) : BENCH_WINDOW(0));
	atomic_store(&ctl->phase, BENCH_STOP);

	for (int i = 0; i < started; i++) {
		struct bench_member *m = &mem[i];
		float *grown;

		if (mode == BENCH_THREADS)
			pthread_join(m->thread, NULL);
		else if (bench_member_collect(m) != 0)
			lost++;
		if (m->samples.n > 0) {
			grown = realloc(all, (nall + m->samples.n) *
			    sizeof *all);
			if (grown != NULL) {
				all = grown;
				memcpy(all + nall, m->samples.us,
				    m->samples.n * sizeof *all);
				nall += m->samples.n;
			}
		}
		bench_samples_free(&m->samples);
	}

	r->failures += atomic_load(&ctl->failures) + lost +
	    (uint64_t)atomic_load(&ctl->setup_failed);
	if (ran) {
		bench_windows_result(rate, nwin, r);
		bench_percentiles(all, nall, &r->p50_us, &r->p99_us);
		r->done = 1;
	} else if (r->failures == 0)
		r->failures = 1;
	free(all);
	munmap(ctl, sizeof *ctl);
	close(ctlfd);
	free(mem);
	return ran && r->failures == 0 ? 0 : -1;

fail_close_memfd:
	if (ctlfd != -1)
		close(ctlfd);
fail_free_members:
	free(mem);
	r->failures++;
	return -1;
}
