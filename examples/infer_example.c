/*
 * agxq-example: a small inference app. It loads the three reference models
 * into agxqd, sends requests to them from several threads over one shared
 * client, and checks every linear and mlp result against a plain C
 * computation of the same model (same seeded weights).
 *
 *   agxq-example [--socket PATH] [--threads N] [--requests N]
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agxq.h"

#define SEED 42
#define BATCH 4
#define DIM 256

struct example {
	agxq_client *client;
	agxq_model *models[3];      /* linear, mlp, transformer */
	int requests;               /* per thread */
	/* Reference weights: linear, then the three mlp layers. */
	float *w[4], *b[4];
	int in[4], out[4];
};

struct worker {
	pthread_t thread;
	struct example *ex;
	int index;
	int checked, wrong, failed;
	double *lat_us;
	int nlat;
};

/* Monotonic time in seconds. */
static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* y[rows, out] = x[rows, in] W^T + b, optionally followed by ReLU. */
static void
ref_linear(const float *x, int rows, const float *w, const float *b, int in,
    int out, int relu, float *y)
{
	for (int r = 0; r < rows; r++) {
		for (int o = 0; o < out; o++) {
			double acc = b[o];

			for (int i = 0; i < in; i++)
				acc += (double)x[r * in + i] * w[o * in + i];
			y[r * out + o] = relu && acc < 0 ? 0.0f : (float)acc;
		}
	}
}

/* Computes the expected output of model (0 linear, 1 mlp) for x. */
static void
ref_model(const struct example *ex, int model, const float *x, float *y)
{
	static _Thread_local float h1[BATCH * 512], h2[BATCH * 256];

	if (model == 0) {
		ref_linear(x, BATCH, ex->w[0], ex->b[0], 256, 128, 0, y);
		return;
	}
	ref_linear(x, BATCH, ex->w[1], ex->b[1], 256, 512, 1, h1);
	ref_linear(h1, BATCH, ex->w[2], ex->b[2], 512, 256, 1, h2);
	ref_linear(h2, BATCH, ex->w[3], ex->b[3], 256, 128, 0, y);
}

/* Orders doubles. */
static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* One app thread: requests round-robin over the three models. */
static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct example *ex = w->ex;
	float x[BATCH * 32 * DIM], want[BATCH * 128];
	agxq_tensor t;

	for (int i = 0; i < ex->requests; i++) {
		int model = (w->index + i) % 3;
		agxq_result *res;
		const agxq_tensor *out;
		double t0;
		int rc;

		agxq_reference_input_shape((agxq_reference)(model + 1), BATCH, &t);
		t.data = x;
		agxq_reference_weights((uint64_t)(w->index * 100000 + i), 1.0f,
		    x, agxq_tensor_nelem(&t));
		t0 = now_s();
		rc = agxq_infer(ex->models[model], &t, 1, NULL, &res);
		w->lat_us[w->nlat++] = (now_s() - t0) * 1e6;
		if (rc != 0) {
			fprintf(stderr, "request failed: %s\n", agxq_strerror(rc));
			w->failed++;
			continue;
		}
		out = agxq_result_output(res, 0);
		if (model < 2) {
			const float *y = out->data;
			int bad = 0;

			ref_model(ex, model, x, want);
			for (int k = 0; k < BATCH * 128; k++) {
				if (fabsf(y[k] - want[k]) >
				    1e-4f * (1.0f + fabsf(want[k])))
					bad = 1;
			}
			w->checked++;
			w->wrong += bad;
		} else if (out->ndim != 3 || out->shape[0] != BATCH ||
		    out->shape[1] != 32 || out->shape[2] != DIM) {
			w->wrong++;
		}
		agxq_result_free(res);
	}
	return NULL;
}

/* Draws the reference weights the daemon's models use (see agxq.h). */
static int
make_reference(struct example *ex)
{
	static const int dims[4][2] = {
		{ 256, 128 }, { 256, 512 }, { 512, 256 }, { 256, 128 }
	};
	static const uint64_t seeds[4] = { SEED, SEED, SEED + 2, SEED + 4 };

	for (int l = 0; l < 4; l++) {
		int in = dims[l][0], out = dims[l][1];
		float scale = (float)(1.0 / sqrt((double)in));

		ex->in[l] = in;
		ex->out[l] = out;
		ex->w[l] = malloc((size_t)in * out * sizeof(float));
		ex->b[l] = malloc((size_t)out * sizeof(float));
		if (ex->w[l] == NULL || ex->b[l] == NULL)
			return -1;
		agxq_reference_weights(seeds[l], scale, ex->w[l],
		    (size_t)in * out);
		agxq_reference_weights(seeds[l] + 1, scale, ex->b[l],
		    (size_t)out);
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct example ex = { .requests = 300 };
	struct worker *workers;
	const char *socket_path = NULL;
	int nthreads = 8, checked = 0, wrong = 0, failed = 0, n = 0, rc;
	double t0, elapsed, *lat;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
			socket_path = argv[++i];
		else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
			nthreads = atoi(argv[++i]);
		else if (strcmp(argv[i], "--requests") == 0 && i + 1 < argc)
			ex.requests = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: agxq-example [--socket PATH] "
			    "[--threads N] [--requests N]\n");
			return 2;
		}
	}
	if (nthreads < 1 || nthreads > 256 || ex.requests < 1) {
		fprintf(stderr, "agxq-example: --threads 1..256, --requests >= 1\n");
		return 2;
	}
	if ((rc = agxq_connect(socket_path, &ex.client)) != 0) {
		fprintf(stderr, "agxq-example: cannot connect to agxqd: %s\n",
		    agxq_strerror(rc));
		return 1;
	}
	printf("connected to agxqd (backend %s)\n",
	    agxq_server_backend(ex.client));
	for (int m = 0; m < 3; m++) {
		agxq_graph *g;

		if ((rc = agxq_reference_build((agxq_reference)(m + 1), SEED,
		    &g)) != 0 ||
		    (rc = agxq_model_load(ex.client, g,
		    agxq_reference_name((agxq_reference)(m + 1)),
		    &ex.models[m])) != 0) {
			fprintf(stderr, "agxq-example: loading %s: %s\n",
			    agxq_reference_name((agxq_reference)(m + 1)),
			    agxq_strerror(rc));
			return 1;
		}
		agxq_graph_free(g);
	}
	if (make_reference(&ex) != 0) {
		fprintf(stderr, "agxq-example: out of memory\n");
		return 1;
	}
	printf("loaded linear, mlp and transformer; %d threads x %d requests\n",
	    nthreads, ex.requests);

	workers = calloc((size_t)nthreads, sizeof *workers);
	lat = calloc((size_t)nthreads * ex.requests, sizeof *lat);
	if (workers == NULL || lat == NULL)
		return 1;
	t0 = now_s();
	for (int i = 0; i < nthreads; i++) {
		workers[i].ex = &ex;
		workers[i].index = i;
		workers[i].lat_us = lat + (size_t)i * ex.requests;
		pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
	}
	for (int i = 0; i < nthreads; i++) {
		pthread_join(workers[i].thread, NULL);
		checked += workers[i].checked;
		wrong += workers[i].wrong;
		failed += workers[i].failed;
		n += workers[i].nlat;
	}
	elapsed = now_s() - t0;
	/* Compact the latencies of all threads and take percentiles. */
	for (int i = 1, k = workers[0].nlat; i < nthreads; i++) {
		memmove(lat + k, workers[i].lat_us,
		    (size_t)workers[i].nlat * sizeof *lat);
		k += workers[i].nlat;
	}
	qsort(lat, (size_t)n, sizeof *lat, cmp_double);
	printf("%d requests in %.2f s: %.0f requests/s, latency p50 %.0f us, "
	    "p99 %.0f us\n", n, elapsed, n / elapsed, lat[n / 2],
	    lat[(size_t)(n * 0.99)]);
	printf("%d linear/mlp results checked against a plain C reference: "
	    "%d wrong; %d requests failed\n", checked, wrong, failed);
	for (int m = 0; m < 3; m++)
		agxq_model_unload(ex.models[m]);
	agxq_close(ex.client);
	for (int l = 0; l < 4; l++) {
		free(ex.w[l]);
		free(ex.b[l]);
	}
	free(workers);
	free(lat);
	if (wrong != 0 || failed != 0) {
		printf("FAILED\n");
		return 1;
	}
	printf("OK\n");
	return 0;
}
