/*
 * test_batcher: unit tests of server/batcher.c. Model and connection
 * pointers are distinct dummy addresses: the batcher only uses them as keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batcher.h"
#include "request.h"
#include "testlib.h"

static char dummy_models[4];
static char dummy_conns[2];
#define MODEL(i) ((struct model *)(void *)&dummy_models[i])
#define CONN(i) ((struct conn *)(void *)&dummy_conns[i])

#define MS 1000000ull /* nanoseconds */

/* A test fixture: a batcher, a batch buffer and every request made. */
struct fix {
	struct batcher *b;
	struct batch batch;
	struct request *all[64];
	int nall;
	struct request_list expired;
	uint64_t wait;
};

/* Sets up a batcher with the given limits. */
static int
fix_init(struct fix *f, uint32_t max_batch, uint32_t max_delay_us,
    uint32_t max_queue)
{
	struct batcher_config cfg = { max_batch, max_delay_us, max_queue };

	memset(f, 0, sizeof *f);
	TAILQ_INIT(&f->expired);
	f->batch.cap = max_batch < 64 ? 64 : max_batch;
	if ((f->batch.reqs = calloc(f->batch.cap, sizeof *f->batch.reqs)) ==
	    NULL || (f->b = batcher_new(&cfg)) == NULL)
		return -1;
	return 0;
}

/* Drains and frees everything. */
static void
fix_free(struct fix *f)
{
	struct request_list rest;

	TAILQ_INIT(&rest);
	if (f->b != NULL)
		batcher_drain(f->b, &rest);
	batcher_free(f->b);
	for (int i = 0; i < f->nall; i++)
		request_free(f->all[i]);
	free(f->batch.reqs);
}

/*
 * Makes request id for model m with rows rows of sample [seq, 4], priority
 * prio, enqueued at t_ns, and pushes it. Returns the push result.
 */
static int
push(struct fix *f, uint64_t id, int m, uint32_t rows, int64_t seq,
    int32_t prio, uint64_t t_ns, uint64_t deadline_ns, int conn)
{
	struct request *r = request_new(REQUEST_INFER, 1);

	if (r == NULL || f->nall == 64)
		abort();
	f->all[f->nall++] = r;
	r->id = id;
	r->model = MODEL(m);
	r->conn = CONN(conn);
	r->rows = rows;
	r->priority = prio;
	r->t_enqueue_ns = t_ns;
	r->deadline_ns = deadline_ns;
	r->in_shapes[0].ndim = 3;
	r->in_shapes[0].dim[0] = rows;
	r->in_shapes[0].dim[1] = seq;
	r->in_shapes[0].dim[2] = 4;
	return batcher_push(f->b, r);
}

/* Forms the next batch at now; returns batcher_next's result. */
static int
next(struct fix *f, uint64_t now)
{
	return batcher_next(f->b, now, &f->batch, &f->expired, &f->wait);
}

/* Returns 1 when the batch holds exactly the request ids ids[0..n). */
static int
batch_is(const struct fix *f, const uint64_t *ids, uint32_t n)
{
	if (f->batch.n != n)
		return 0;
	for (uint32_t i = 0; i < n; i++)
		if (f->batch.reqs[i]->id != ids[i])
			return 0;
	return 1;
}

/* Only requests with the same per-sample shape share a batch. */
static void
t_shape_grouping(void)
{
	struct fix f;

	CHECK(fix_init(&f, 64, 0, 100) == 0);
	CHECK(push(&f, 1, 0, 2, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 2, 0, 2, 16, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 3, 0, 2, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 4, 0, 2, 16, 0, 0, 0, 0) == 0);
	CHECK(next(&f, 1) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 1, 3 }, 2) && f.batch.rows == 4);
	CHECK(next(&f, 1) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 2, 4 }, 2) && f.batch.rows == 4);
	CHECK(next(&f, 1) == 0 && f.wait == 0);
	CHECK(batcher_queued(f.b) == 0);
out:
	fix_free(&f);
}

/* A batch never exceeds max_batch rows; a bigger request runs alone. */
static void
t_max_batch_rows(void)
{
	struct fix f;

	CHECK(fix_init(&f, 8, 0, 100) == 0);
	for (int i = 0; i < 5; i++)
		CHECK(push(&f, (uint64_t)i + 1, 0, 3, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 6, 0, 2, 8, 0, 0, 0, 0) == 0);
	CHECK(next(&f, 1) == 1);
	/* 3 + 3, then 2 more fits: 8 rows. */
	CHECK(batch_is(&f, (uint64_t[]){ 1, 2, 6 }, 3) && f.batch.rows == 8);
	CHECK(next(&f, 1) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 3, 4 }, 2) && f.batch.rows == 6);
	CHECK(next(&f, 1) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 5 }, 1));
	CHECK(push(&f, 7, 0, 20, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 8, 0, 1, 8, 0, 0, 0, 0) == 0);
	CHECK(next(&f, 1) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 7 }, 1) && f.batch.rows == 20);
	CHECK(next(&f, 1) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 8 }, 1));
out:
	fix_free(&f);
}

/* Three busy models take turns. */
static void
t_round_robin(void)
{
	struct fix f;
	int seen[3][3];

	memset(seen, 0, sizeof seen);
	CHECK(fix_init(&f, 1, 0, 100) == 0);
	/* Model 0 queues everything first: it must not run three times in a row. */
	for (int m = 0; m < 3; m++)
		for (int i = 0; i < 3; i++)
			CHECK(push(&f, (uint64_t)(m * 10 + i), m, 1, 8, 0, 0, 0,
			    0) == 0);
	for (int k = 0; k < 9; k++) {
		CHECK(next(&f, 1) == 1);
		CHECK(f.batch.n == 1);
		CHECK(f.batch.reqs[0]->model == MODEL(k % 3));
		CHECK(f.batch.reqs[0]->id == (uint64_t)((k % 3) * 10 + k / 3));
	}
	CHECK(next(&f, 1) == 0);
out:
	fix_free(&f);
}

/* Higher priority first within a model (FIFO among equals) and across models. */
static void
t_priority(void)
{
	static const uint64_t want[] = { 4, 3, 5, 1, 2 };
	struct fix f;

	CHECK(fix_init(&f, 1, 0, 100) == 0);
	CHECK(push(&f, 1, 0, 1, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 2, 0, 1, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 3, 0, 1, 8, 5, 0, 0, 0) == 0);
	CHECK(push(&f, 4, 0, 1, 8, 10, 0, 0, 0) == 0);
	CHECK(push(&f, 5, 0, 1, 8, 5, 0, 0, 0) == 0);
	for (int k = 0; k < 5; k++) {
		CHECK(next(&f, 1) == 1);
		CHECK(batch_is(&f, &want[k], 1));
	}
	/* Across models: model 1's head has priority 3, model 0's 0. */
	CHECK(push(&f, 6, 0, 1, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 7, 1, 1, 8, 3, 0, 0, 0) == 0);
	CHECK(next(&f, 1) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 7 }, 1));
	CHECK(next(&f, 1) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 6 }, 1));
out:
	fix_free(&f);
}

/* Expired requests move to the expired list and never into a batch. */
static void
t_deadline_sweep(void)
{
	struct fix f;
	struct request *r;
	int n = 0;

	CHECK(fix_init(&f, 64, 0, 100) == 0);
	CHECK(push(&f, 1, 0, 1, 8, 0, 0, 100 * MS, 0) == 0);
	CHECK(push(&f, 2, 0, 1, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 3, 1, 1, 8, 0, 0, 150 * MS, 0) == 0);
	CHECK(push(&f, 4, 0, 1, 8, 0, 0, 500 * MS, 0) == 0);
	CHECK(next(&f, 200 * MS) == 1);
	TAILQ_FOREACH(r, &f.expired, entry) {
		CHECK(r->id == 1 || r->id == 3);
		n++;
	}
	CHECK(n == 2);
	CHECK(batch_is(&f, (uint64_t[]){ 2, 4 }, 2));
	CHECK(batcher_queued(f.b) == 0);
	/* Only model 0 existed for the batch: model 1's queue is gone. */
	CHECK(next(&f, 200 * MS) == 0 && f.wait == 0);
out:
	fix_free(&f);
}

/* The queue is bounded. */
static void
t_max_queue(void)
{
	struct fix f;

	CHECK(fix_init(&f, 64, 0, 3) == 0);
	CHECK(push(&f, 1, 0, 1, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 2, 1, 1, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 3, 0, 1, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 4, 2, 1, 8, 0, 0, 0, 0) == -1);
	CHECK(batcher_queued(f.b) == 3);
	CHECK(next(&f, 1) == 1);
	CHECK(batcher_queued(f.b) == 1);
	CHECK(push(&f, 5, 2, 1, 8, 0, 0, 0, 0) == 0);
out:
	fix_free(&f);
}

/* max_delay: a non-full batch waits, a full one goes at once. */
static void
t_max_delay(void)
{
	struct fix f;

	CHECK(fix_init(&f, 4, 1000, 100) == 0); /* 1 ms */
	CHECK(push(&f, 1, 0, 1, 8, 0, 10 * MS, 0, 0) == 0);
	CHECK(next(&f, 10 * MS + 100000) == 0);
	CHECK(f.wait == 900000);
	CHECK(push(&f, 2, 0, 1, 8, 0, 10 * MS + 200000, 0, 0) == 0);
	CHECK(push(&f, 3, 0, 2, 8, 0, 10 * MS + 300000, 0, 0) == 0);
	/* Full (4 rows): at once. */
	CHECK(next(&f, 10 * MS + 300000) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 1, 2, 3 }, 3) && f.batch.rows == 4);
	/* Not full: waits until the oldest has waited 1 ms. */
	CHECK(push(&f, 4, 0, 1, 8, 0, 20 * MS, 0, 0) == 0);
	CHECK(next(&f, 20 * MS + 999999) == 0 && f.wait == 1);
	CHECK(next(&f, 21 * MS) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 4 }, 1));
	CHECK(next(&f, 21 * MS) == 0 && f.wait == 0);
out:
	fix_free(&f);
}

/* max_delay 0: whatever is queued runs at once. */
static void
t_no_delay(void)
{
	struct fix f;

	CHECK(fix_init(&f, 64, 0, 100) == 0);
	CHECK(push(&f, 1, 0, 1, 8, 0, 10 * MS, 0, 0) == 0);
	CHECK(next(&f, 10 * MS) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 1 }, 1));
out:
	fix_free(&f);
}

/* batcher_remove_conn takes exactly one connection's requests. */
static void
t_remove_conn(void)
{
	struct fix f;
	struct request_list gone;
	struct request *r;
	int n = 0;

	TAILQ_INIT(&gone);
	CHECK(fix_init(&f, 64, 0, 100) == 0);
	CHECK(push(&f, 1, 0, 1, 8, 0, 0, 0, 0) == 0);
	CHECK(push(&f, 2, 0, 1, 8, 0, 0, 0, 1) == 0);
	CHECK(push(&f, 3, 1, 1, 8, 0, 0, 0, 1) == 0);
	CHECK(push(&f, 4, 1, 1, 8, 0, 0, 0, 0) == 0);
	batcher_remove_conn(f.b, CONN(1), &gone);
	TAILQ_FOREACH(r, &gone, entry) {
		CHECK(r->conn == CONN(1));
		n++;
	}
	CHECK(n == 2);
	CHECK(batcher_queued(f.b) == 2);
	CHECK(next(&f, 1) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 1 }, 1));
	CHECK(next(&f, 1) == 1);
	CHECK(batch_is(&f, (uint64_t[]){ 4 }, 1));
	CHECK(next(&f, 1) == 0);
out:
	fix_free(&f);
}

static const struct testlib_case cases[] = {
	{ "shape_grouping", t_shape_grouping },
	{ "max_batch_rows", t_max_batch_rows },
	{ "round_robin", t_round_robin },
	{ "priority", t_priority },
	{ "deadline_sweep", t_deadline_sweep },
	{ "max_queue", t_max_queue },
	{ "max_delay", t_max_delay },
	{ "no_delay", t_no_delay },
	{ "remove_conn", t_remove_conn },
};

int
main(int argc, char **argv)
{
	return testlib_run(cases, TESTLIB_N(cases), argc, argv);
}
