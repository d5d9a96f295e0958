/*
 * agxq-bench-rows: how long one pass of each reference model takes on the
 * direct engine at several batch sizes, one run after another on one
 * thread (a pass: inputs in, the graph, outputs out, waited for). Shows
 * where a backend's cost jumps with the rows of a batch, and what the
 * first pass of a new batch size costs, and what loading the model took.
 * On cuda a model of fixed sample shapes (linear, mlp) is warmed at load
 * (engine_model_warm; AGXQ_WARM=0 turns it off), so the load holds the
 * GEMM timings of every size; the transformer's sequence is left open,
 * so its first pass of each new range of rows times them.
 *
 *   agxq-bench-rows [--backend cpu|cuda] [--rows 4,8,16,32,64]
 *                   [--models linear,mlp,transformer] [--runs N]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agxq.h"
#include "agxq_direct.h"

#define BR_MAX_ROWS 16

/* Monotonic clock in microseconds. */
static double
br_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Parses a comma list of row counts into rows; returns how many, or -1. */
static int
br_parse_rows(const char *s, int64_t *rows)
{
	int n = 0;
	char *end;

	while (*s != '\0') {
		long v = strtol(s, &end, 10);

		if (end == s || v < 1 || v > 4096 || n == BR_MAX_ROWS ||
		    (*end != ',' && *end != '\0'))
			return -1;
		rows[n++] = v;
		s = *end == ',' ? end + 1 : end;
	}
	return n > 0 ? n : -1;
}

/* Times runs passes of model which at each batch size; 0 or -1. */
static int
br_model(agxq_direct *d, int which, const int64_t *rows, int nrows, int runs)
{
	agxq_direct_model *m = NULL;
	agxq_graph *g = NULL;
	agxq_result *r;
	agxq_tensor t;
	double t_load;
	int rc = -1;

	t_load = br_now_us();
	if (agxq_reference_build(which, 1, &g) != 0 ||
	    agxq_direct_load(d, g, &m) != 0) {
		fprintf(stderr, "agxq-bench-rows: cannot load %s\n",
		    agxq_reference_name(which));
		goto out;
	}
	printf("%-12s load: %.1f us\n", agxq_reference_name(which),
	    br_now_us() - t_load);
	for (int b = 0; b < nrows; b++) {
		double sum = 0, best = 1e30, first = 0, t0, dt;
		float *x;

		if (agxq_reference_input_shape(which, rows[b], &t) != 0 ||
		    (x = calloc(agxq_tensor_nelem(&t), sizeof *x)) == NULL)
			goto out;
		for (size_t i = 0; i < agxq_tensor_nelem(&t); i++)
			x[i] = (float)(i % 97) / 97.0f;
		t.data = x;
		/* Warm-up; the first pass of a size also plans it. */
		for (int i = 0; i < runs / 10 + 10; i++) {
			t0 = br_now_us();
			if (agxq_direct_infer(m, &t, 1, &r) != 0) {
				free(x);
				goto out;
			}
			if (i == 0)
				first = br_now_us() - t0;
			agxq_result_free(r);
		}
		for (int i = 0; i < runs; i++) {
			t0 = br_now_us();
			if (agxq_direct_infer(m, &t, 1, &r) != 0) {
				free(x);
				goto out;
			}
			dt = br_now_us() - t0;
			agxq_result_free(r);
			sum += dt;
			if (dt < best)
				best = dt;
		}
		printf("%-12s %5lld rows: mean %8.1f us, min %8.1f us, "
		    "first %8.1f us\n", agxq_reference_name(which),
		    (long long)rows[b], sum / runs, best, first);
		free(x);
	}
	rc = 0;
out:
	agxq_direct_unload(m);
	agxq_graph_free(g);
	return rc;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "rows", required_argument, NULL, 'r' },
		{ "models", required_argument, NULL, 'm' },
		{ "runs", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 }
	};
	const char *backend = "cpu", *models = "linear,mlp,transformer";
	int64_t rows[BR_MAX_ROWS] = { 4, 8, 16, 32, 64 };
	int nrows = 5, runs = 1000, ch, rc = 0;
	char *list, *name, *save = NULL;
	agxq_direct *d;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'b':
			backend = optarg;
			break;
		case 'r':
			if ((nrows = br_parse_rows(optarg, rows)) < 0) {
				fprintf(stderr, "agxq-bench-rows: --rows wants "
				    "a list of 1 to %d row counts from 1 to "
				    "4096, e.g. 4,8,16\n", BR_MAX_ROWS);
				return 2;
			}
			break;
		case 'm':
			models = optarg;
			break;
		case 'n':
			runs = atoi(optarg);
			if (runs < 1 || runs > 1000000) {
				fprintf(stderr, "agxq-bench-rows: --runs must "
				    "be 1 to 1000000\n");
				return 2;
			}
			break;
		default:
			fprintf(stderr, "usage: agxq-bench-rows [--backend "
			    "cpu|cuda] [--rows 4,8,16] [--models "
			    "linear,mlp,transformer] [--runs N]\n");
			return 2;
		}
	}
	if (agxq_direct_open(backend, 0, &d) != 0) {
		fprintf(stderr, "agxq-bench-rows: cannot open the %s backend\n",
		    backend);
		return 1;
	}
	if ((list = strdup(models)) == NULL)
		return 1;
	for (name = strtok_r(list, ",", &save); name != NULL;
	    name = strtok_r(NULL, ",", &save)) {
		int which = agxq_reference_parse(name);

		if (which < 0) {
			fprintf(stderr, "agxq-bench-rows: unknown model %s\n",
			    name);
			rc = 2;
			break;
		}
		if (br_model(d, which, rows, nrows, runs) != 0) {
			rc = 1;
			break;
		}
	}
	free(list);
	agxq_direct_close(d);
	return rc;
}
