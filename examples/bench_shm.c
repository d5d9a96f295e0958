/*
 * agxq-bench-shm: inline frames against shared memory tensors, and model
 * load time with and without compression, in one run.
 *
 *   agxq-bench-shm [--agxqd PATH] [--seconds S] [--max-mib N]
 *
 * Starts its own agxqd (cpu backend) on a private socket. For tensor sizes
 * from 4 KiB to 64 MiB it runs relu on one [1, N] input from one client
 * thread, synchronously, once with inline frames (AGXQ_SHM_THRESHOLD=0) and
 * once through shared memory (AGXQ_SHM_THRESHOLD=1), and prints requests/s,
 * MiB/s of input, p50/p99 latency and the shm/inline ratio. Then it loads a
 * 64 MiB model of compressible and of random weights with compression on
 * (default threshold) and off (AGXQ_COMPRESS_THRESHOLD=0).
 */
#include <sys/wait.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agxq.h"

/* Monotonic seconds. */
static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs agxqd with args; returns its exit status or -1. */
static int
run_agxqd(const char *agxqd, const char *const *args)
{
	const char *argv[16];
	int n = 0, st;
	pid_t pid;

	argv[n++] = agxqd;
	while (*args != NULL && n < 15)
		argv[n++] = *args++;
	argv[n] = NULL;
	if ((pid = fork()) == -1)
		return -1;
	if (pid == 0) {
		execvp(agxqd, (char *const *)argv);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* Connects with AGXQ_SHM_THRESHOLD and AGXQ_COMPRESS_THRESHOLD set. */
static agxq_client *
connect_with(const char *sock, const char *shm, const char *compress)
{
	agxq_client *c = NULL;

	setenv("AGXQ_SHM_THRESHOLD", shm, 1);
	setenv("AGXQ_COMPRESS_THRESHOLD", compress, 1);
	if (agxq_connect(sock, &c) != 0)
		c = NULL;
	unsetenv("AGXQ_SHM_THRESHOLD");
	unsetenv("AGXQ_COMPRESS_THRESHOLD");
	return c;
}

/* Sorts doubles. */
static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct run {
	double rps, p50_us, p99_us;
};

/* Runs relu on [1, n] from c for about seconds; 0 or -1. */
static int
bench_one(agxq_client *c, int64_t n, double seconds, struct run *out)
{
	agxq_graph *g = agxq_graph_new();
	agxq_model *m = NULL;
	int64_t shape[1] = { n };
	float *in = malloc((size_t)n * sizeof(float));
	agxq_tensor t = { .dtype = AGXQ_FLOAT32, .ndim = 2,
	    .shape = { 1, n }, .data = in };
	size_t cap = 1 << 16, k = 0;
	double *lat = malloc(cap * sizeof *lat), t0, t1, start;
	int rc = -1;

	if (g == NULL || in == NULL || lat == NULL)
		goto out;
	agxq_graph_output(g, agxq_graph_relu(g, agxq_graph_input(g, shape, 1)));
	if (agxq_model_load(c, g, "relu", &m) != 0)
		goto out;
	for (int64_t i = 0; i < n; i++)
		in[i] = (float)(i % 17) - 8.0f;
	for (int w = 0; w < 3; w++) {
		agxq_result *r = NULL;

		if (agxq_infer(m, &t, 1, NULL, &r) != 0)
			goto out;
		agxq_result_free(r);
	}
	start = now_s();
	do {
		agxq_result *r = NULL;

		t0 = now_s();
		if (agxq_infer(m, &t, 1, NULL, &r) != 0)
			goto out;
		/* Touch the output as an app would. */
		if (((const float *)agxq_result_output(r, 0)->data)[n - 1] < 0)
			goto out;
		agxq_result_free(r);
		t1 = now_s();
		if (k < cap)
			lat[k++] = (t1 - t0) * 1e6;
	} while (t1 - start < seconds || k < 5);
	qsort(lat, k, sizeof *lat, cmp_double);
	out->rps = (double)k / (t1 - start);
	out->p50_us = lat[k / 2];
	out->p99_us = lat[(size_t)((double)(k - 1) * 0.99)];
	rc = 0;
out:
	agxq_model_unload(m);
	agxq_graph_free(g);
	free(in);
	free(lat);
	return rc;
}

/* Loads an add-constant model of n weights (pattern or random) 3 times; median ms. */
static double
bench_load(agxq_client *c, int64_t n, int random)
{
	agxq_graph *g = agxq_graph_new();
	int64_t shape[1] = { n }, wshape[2] = { 1, n };
	float *w = malloc((size_t)n * sizeof(float));
	double ms[3], t0;
	int x;

	if (g == NULL || w == NULL)
		return -1;
	if (random)
		agxq_reference_weights(7, 1.0f, w, (size_t)n);
	else
		for (int64_t i = 0; i < n; i++)
			w[i] = (float)(i % 16) * 0.25f;
	x = agxq_graph_input(g, shape, 1);
	agxq_graph_output(g, agxq_graph_add(g, x,
	    agxq_graph_const(g, wshape, 2, w)));
	free(w);
	for (int k = 0; k < 3; k++) {
		agxq_model *m = NULL;

		t0 = now_s();
		if (agxq_model_load(c, g, "weights", &m) != 0) {
			agxq_graph_free(g);
			return -1;
		}
		ms[k] = (now_s() - t0) * 1e3;
		agxq_model_unload(m);
	}
	agxq_graph_free(g);
	qsort(ms, 3, sizeof ms[0], cmp_double);
	return ms[1];
}

int
main(int argc, char **argv)
{
	const char *agxqd = getenv("AGXQD") != NULL ? getenv("AGXQD") : "agxqd";
	char dir[] = "/tmp/agxq-bench-shm-XXXXXX", sock[96];
	agxq_client *inl = NULL, *shm = NULL, *zon = NULL, *zoff = NULL;
	double seconds = 1.0;
	int max_mib = 64, rc = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--agxqd") == 0 && i + 1 < argc)
			agxqd = argv[++i];
		else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (strcmp(argv[i], "--max-mib") == 0 && i + 1 < argc)
			max_mib = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: agxq-bench-shm [--agxqd PATH] "
			    "[--seconds S] [--max-mib N]\n");
			return 2;
		}
	}
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(sock, sizeof sock, "%s/s", dir);
	{
		const char *args[] = { "start", "--socket", sock, NULL };

		if (run_agxqd(agxqd, args) != 0) {
			fprintf(stderr, "agxq-bench-shm: cannot start %s\n",
			    agxqd);
			rmdir(dir);
			return 1;
		}
	}
	inl = connect_with(sock, "0", "65536");
	shm = connect_with(sock, "1", "65536");
	if (inl == NULL || shm == NULL)
		goto out;

	printf("tensor relu [1, N], 1 client thread, synchronous, %.1f s per "
	    "point\n", seconds);
	printf("%10s | %10s %9s %9s %9s | %10s %9s %9s %9s | %6s\n", "size",
	    "inline/s", "MiB/s", "p50 us", "p99 us", "shm/s", "MiB/s",
	    "p50 us", "p99 us", "ratio");
	for (int64_t bytes = 4096; bytes <= ((int64_t)max_mib << 20);
	    bytes *= 4) {
		struct run a, b;
		char label[32];

		if (bench_one(inl, bytes / 4, seconds, &a) != 0 ||
		    bench_one(shm, bytes / 4, seconds, &b) != 0) {
			fprintf(stderr, "agxq-bench-shm: a request failed\n");
			goto out;
		}
		if (bytes >= (1 << 20))
			snprintf(label, sizeof label, "%lld MiB",
			    (long long)(bytes >> 20));
		else
			snprintf(label, sizeof label, "%lld KiB",
			    (long long)(bytes >> 10));
		printf("%10s | %10.0f %9.0f %9.0f %9.0f | %10.0f %9.0f %9.0f "
		    "%9.0f | %5.2fx\n", label, a.rps,
		    a.rps * (double)bytes / 1048576.0, a.p50_us, a.p99_us,
		    b.rps, b.rps * (double)bytes / 1048576.0, b.p50_us,
		    b.p99_us, b.rps / a.rps);
	}

	zon = connect_with(sock, "0", "65536");
	zoff = connect_with(sock, "0", "0");
	if (zon == NULL || zoff == NULL)
		goto out;
	printf("\nmodel load, 64 MiB of weights (median of 3)\n");
	printf("%14s | %14s %14s\n", "weights", "zstd on ms", "zstd off ms");
	for (int random = 0; random < 2; random++) {
		double on = bench_load(zon, 16 << 20, random);
		double off = bench_load(zoff, 16 << 20, random);

		printf("%14s | %14.1f %14.1f\n", random ? "random" :
		    "compressible", on, off);
	}
	rc = 0;
out:
	agxq_close(inl);
	agxq_close(shm);
	agxq_close(zon);
	agxq_close(zoff);
	{
		const char *args[] = { "stop", "--socket", sock, NULL };

		run_agxqd(agxqd, args);
	}
	rmdir(dir);
	return rc;
}
