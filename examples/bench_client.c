/*
 * bench_client: one measuring client of agxq-bench. It opens its own direct
 * handle or its own agxqd connection, loads the model, reports ready, waits
 * at the barrier and then runs synchronous batch-4 requests until told to
 * stop, counting them in its slot of the control block and timing each one.
 * It runs as a thread of the bench or as a worker process (`--worker`), which
 * maps the control block from an inherited memfd and sends its latency
 * samples back through a pipe.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "agxq.h"
#include "agxq_direct.h"
#include "bench.h"

/* A client's open handles and its request. */
struct bench_client {
	const struct bench_client_spec *spec;
	agxq_direct *direct;
	agxq_direct_model *dmodel;
	agxq_client *client;
	agxq_model *pmodel;
	agxq_tensor input;
	float *buf;
	int64_t want[AGXQ_MAX_DIMS]; /* expected output shape */
	int want_ndim;
};

/* Adds one latency sample tagged with phase; 0 or -1 when out of memory. */
int
bench_samples_add(struct bench_samples *s, float us, int phase)
{
	if (s->n == s->cap) {
		size_t cap = s->cap == 0 ? 4096 : s->cap * 2;
		float *u;
		int *p;

		if ((u = realloc(s->us, cap * sizeof *u)) == NULL)
			return -1;
		s->us = u;
		if ((p = realloc(s->phase, cap * sizeof *p)) == NULL)
			return -1;
		s->phase = p;
		s->cap = cap;
	}
	s->us[s->n] = us;
	s->phase[s->n] = phase;
	s->n++;
	return 0;
}

/* Drops the samples of phases before from. */
void
bench_samples_keep(struct bench_samples *s, int from)
{
	size_t k = 0;

	for (size_t i = 0; i < s->n; i++) {
		if (s->phase[i] >= from) {
			s->us[k] = s->us[i];
			s->phase[k] = s->phase[i];
			k++;
		}
	}
	s->n = k;
}

/* Frees the samples' memory; the struct may be reused. */
void
bench_samples_free(struct bench_samples *s)
{
	free(s->us);
	free(s->phase);
	memset(s, 0, sizeof *s);
}

/* Sets the output shape a request of c's model must give. */
static void
bench_client_want(struct bench_client *c)
{
	if (c->spec->model == AGXQ_REF_TRANSFORMER) {
		c->want_ndim = 3;
		c->want[0] = BENCH_BATCH;
		c->want[1] = 32;
		c->want[2] = 256;
	} else {
		c->want_ndim = 2;
		c->want[0] = BENCH_BATCH;
		c->want[1] = 128;
	}
}

/* Opens c's handle and loads its model; 0 or an AGXQ_E* code. */
static int
bench_client_open(struct bench_client *c, int slot)
{
	agxq_graph *g = NULL;
	int rc;

	if ((rc = agxq_reference_input_shape(c->spec->model, BENCH_BATCH,
	    &c->input)) != 0)
		return rc;
	if ((c->buf = malloc(agxq_tensor_nelem(&c->input) *
	    sizeof *c->buf)) == NULL)
		return AGXQ_ENOMEM;
	agxq_reference_weights(1000 + (uint64_t)slot, 1.0f, c->buf,
	    agxq_tensor_nelem(&c->input));
	c->input.data = c->buf;
	bench_client_want(c);

	if ((rc = agxq_reference_build(c->spec->model, BENCH_SEED, &g)) != 0)
		return rc;
	if (c->spec->kind == BENCH_PROXY) {
		if ((rc = agxq_connect(c->spec->socket, &c->client)) == 0)
			rc = agxq_model_load(c->client, g,
			    agxq_reference_name(c->spec->model), &c->pmodel);
	} else {
		if ((rc = agxq_direct_open(c->spec->backend, 0,
		    &c->direct)) == 0)
			rc = agxq_direct_load(c->direct, g, &c->dmodel);
	}
	agxq_graph_free(g);
	return rc;
}

/* Closes c's handles; accepts a partly opened client. */
static void
bench_client_close(struct bench_client *c)
{
	if (c->pmodel != NULL)
		agxq_model_unload(c->pmodel);
	agxq_close(c->client);
	agxq_direct_unload(c->dmodel);
	agxq_direct_close(c->direct);
	free(c->buf);
}

/* Runs one request and checks its shape; 0 or an AGXQ_E* code. */
static int
bench_client_op(struct bench_client *c)
{
	const agxq_tensor *y;
	agxq_result *r;
	int rc;

	if (c->spec->kind == BENCH_PROXY)
		rc = agxq_infer(c->pmodel, &c->input, 1, NULL, &r);
	else
		rc = agxq_direct_infer(c->dmodel, &c->input, 1, &r);
	if (rc != 0)
		return rc;
	rc = AGXQ_ESHAPE;
	if (agxq_result_noutputs(r) == 1 &&
	    (y = agxq_result_output(r, 0)) != NULL && y->data != NULL &&
	    y->dtype == AGXQ_FLOAT32 && y->ndim == c->want_ndim) {
		rc = 0;
		for (int i = 0; i < y->ndim; i++) {
			if (y->shape[i] != c->want[i])
				rc = AGXQ_ESHAPE;
		}
	}
	agxq_result_free(r);
	return rc;
}

/*
 * Runs client slot of a measurement: set-up, barrier, requests until the
 * phase is BENCH_STOP. Keeps the latencies of phases >= ctl->measure_from in
 * samples. Returns 0, or -1 when set-up failed (counted in ctl).
 */
int
bench_client_run(const struct bench_client_spec *spec, struct bench_ctl *ctl,
    int slot, struct bench_samples *samples)
{
	struct bench_client c = { .spec = spec };
	int rc, phase, reported = 0;

	if ((rc = bench_client_open(&c, slot)) != 0) {
		fprintf(stderr, "agxq-bench: %s %s client %d: set-up failed: "
		    "%s\n", agxq_reference_name(spec->model),
		    bench_kind_name(spec->kind), slot, agxq_strerror(rc));
		bench_client_close(&c);
		atomic_fetch_add(&ctl->setup_failed, 1);
		return -1;
	}
	atomic_fetch_add(&ctl->ready, 1);
	while (atomic_load(&ctl->phase) == BENCH_WAIT)
		bench_sleep_ms(0.1);

	while ((phase = atomic_load_explicit(&ctl->phase,
	    memory_order_relaxed)) != BENCH_STOP) {
		double t0 = bench_now_s();

		rc = bench_client_op(&c);
		if (rc != 0) {
			if (reported++ < 3)
				fprintf(stderr, "agxq-bench: %s %s client %d: "
				    "request failed: %s\n",
				    agxq_reference_name(spec->model),
				    bench_kind_name(spec->kind), slot,
				    agxq_strerror(rc));
			atomic_fetch_add(&ctl->failures, 1);
			bench_sleep_ms(1);
			continue;
		}
		atomic_fetch_add_explicit(&ctl->slots[slot].ops, 1,
		    memory_order_relaxed);
		if (phase >= BENCH_WINDOW(0) &&
		    bench_samples_add(samples,
		    (float)((bench_now_s() - t0) * 1e6), phase) != 0)
			atomic_fetch_add(&ctl->failures, 1);
	}
	bench_samples_keep(samples, atomic_load(&ctl->measure_from));
	bench_client_close(&c);
	return 0;
}

/* Writes all of buf to fd; 0 or -1. */
static int
bench_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * The hidden worker mode: argv is `--worker CTLFD OUTFD SLOT KIND MODEL
 * BACKEND SOCKET BLASTHREADS`. Maps the control block from CTLFD, runs one
 * client, writes the sample count (uint64) and the samples (float µs) to
 * OUTFD. Returns the process exit status.
 */
int
bench_worker_main(int argc, char **argv)
{
	struct bench_client_spec spec;
	struct bench_samples samples = { 0 };
	struct bench_ctl *ctl;
	uint64_t n;
	int ctlfd, outfd, slot, rc;

	if (argc != 10) {
		fprintf(stderr, "agxq-bench: bad worker arguments\n");
		return 2;
	}
	ctlfd = atoi(argv[2]);
	outfd = atoi(argv[3]);
	slot = atoi(argv[4]);
	spec.kind = (enum bench_kind)atoi(argv[5]);
	spec.model = (agxq_reference)agxq_reference_parse(argv[6]);
	spec.backend = argv[7];
	spec.socket = argv[8];
	spec.blas_threads = atoi(argv[9]);
	if (slot < 0 || slot >= BENCH_MAX_CLIENTS || (int)spec.model < 0 ||
	    spec.kind < 0 || spec.kind >= BENCH_NKINDS)
		return 2;
	ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED,
	    ctlfd, 0);
	if (ctl == MAP_FAILED) {
		fprintf(stderr, "agxq-bench: worker mmap: %s\n",
		    strerror(errno));
		return 1;
	}
	close(ctlfd);
	/* Before any handle opens, so BLAS starts with this many threads. */
	if (spec.kind == BENCH_TUNED)
		agxq_direct_set_cpu_threads(spec.blas_threads);

	rc = bench_client_run(&spec, ctl, slot, &samples);
	n = samples.n;
	if (bench_write_all(outfd, &n, sizeof n) != 0 ||
	    bench_write_all(outfd, samples.us, n * sizeof *samples.us) != 0)
		rc = -1;
	close(outfd);
	bench_samples_free(&samples);
	munmap(ctl, sizeof *ctl);
	return rc == 0 ? 0 : 1;
}
