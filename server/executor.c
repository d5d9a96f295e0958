/*
 * executor: the device-owning thread. Control work (model loads and frees)
 * runs first, in order; otherwise the batcher supplies the next batch, which
 * runs as one launch and is split back into one encoded reply per request.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "envset.h"
#include "executor.h"
#include "log.h"
#include "rawinfer.h"
#include "region.h"
#include "ring.h"
#include "supervise.h"

/*
 * One batch in flight: its requests, its staging buffers and the backend's
 * ticket. Synchronous backends use one slot; overlapping ones several.
 */
struct xslot {
	struct batch batch;
	struct model *model;
	void *ticket;
	int failed;                  /* the batch already has its error replies */
	uint64_t t0;                 /* started */
	uint64_t t_sub;              /* staged and launched */
	uint32_t nin_cap, nout_cap;
	struct graph_shape *in_shapes, *out_shapes;
	const float **in;
	float **stage_in, **out;
	size_t *stage_in_cap, *out_cap;
	float **stage_at;            /* the backend's staging, for gathering */
	float **dst;                 /* where output j is written: out[j], or
				        a lone request's shared memory */
	int parts;                   /* submitted as parts: every tensor is in
				        its request's shared memory */
	uint32_t part_rows_cap, part_in_cap, part_out_cap; /* elements */
	uint32_t *part_rows;
	const float **part_in;      /* request k's input i at k * ninputs + i */
	float **part_out;           /* its output j at k * noutputs + j */
	int answered;               /* submitted with answers: the engine
				       writes each reply in its ring slot */
	uint32_t ans_cap;
	struct backend_answer *ans; /* request k's at k */
};

/* Longest the executor polls a running batch before it blocks on it. */
#define EXECUTOR_AWAIT_NS 200000
/* cpu backend batches above this many flops use every BLAS thread. */
#define EXECUTOR_THREADED_FLOPS 50e6

struct executor {
	struct executor_config cfg;
	char backend[16];

	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct batcher *batcher;     /* under lock */
	struct request_list control; /* under lock: LOAD and FREE, in order */
	int stopping;                /* under lock: no new inference work */
	int quiet;                   /* under lock: stopping seen, no batch running */
	int exiting;                 /* under lock: finish control work and exit */
	int started;                 /* under lock: 1 opened, -1 failed */
	int waiting;                 /* under lock: the executor sleeps on cond */
	int lost;                    /* under lock: the device is gone for good */
	atomic_uint work_seq;        /* bumped (under lock) by each submission */
	atomic_uint_fast64_t busy_ns; /* staging, launching, encoding, posting */
	atomic_uint_fast64_t wait_ns; /* in engine_finish: waiting for the device */
	atomic_uint_fast64_t answered_early; /* engine_submit_answers' */
	char *start_cause;

	struct event *lost_ev;       /* main loop: calls cfg.lost */
	executor_deliver_fn deliver;
	void *deliver_arg;

	/* Executor thread only. */
	struct engine *engine;
	struct xslot *slots;         /* nslots, used as a ring */
	uint32_t nslots, head, inflight;
	int check_health;            /* a batch failed: is the device still there? */
	uint64_t finish_ns;          /* time the last engine_finish took */
	int cpu_cap;                 /* cpu backend: most BLAS threads; 0: not cpu */
	int cpu_now;                 /* cpu backend: BLAS threads set now */
	int answers;                 /* raw ring requests answered by the engine
				        (engine_submit_answers; AGXQ_ANSWER) */
	int warm;                    /* models warmed at load (AGXQ_WARM) */
	uint32_t nout_cap;           /* reply encoding scratch */
	Agxq__Tensor *tens;
	Agxq__Tensor **tensp;
	Agxq__ShmRef *trefs;
	int64_t (*tshape)[GRAPH_MAX_DIMS];
};

static void executor_batch_threads(struct executor *ex,
    const struct xslot *x);

/* Hands finished requests to the server, which routes them to their loops. */
static void
executor_post(struct executor *ex, struct request_list *list)
{
	if (!TAILQ_EMPTY(list))
		ex->deliver(list, ex->deliver_arg);
}

/* Main loop thread: tells the server the device is lost. */
static void
executor_lost_cb(evutil_socket_t fd, short what, void *arg)
{
	struct executor *ex = arg;

	(void)fd;
	(void)what;
	ex->cfg.lost(ex->deliver_arg);
}

/* Grows array *p of *cap elements of size sz to n; 0 or -1 on OOM. */
static int
executor_array(void *p, uint32_t cap, uint32_t n, size_t sz)
{
	void **pp = p, *q;

	if (n <= cap)
		return 0;
	if ((q = realloc(*pp, n * sz)) == NULL)
		return -1;
	memset((char *)q + cap * sz, 0, (n - cap) * sz);
	*pp = q;
	return 0;
}

/* Grows slot x's per-input and per-output arrays to nin and nout. */
static int
executor_reserve(struct xslot *x, uint32_t nin, uint32_t nout)
{
	if (executor_array(&x->in_shapes, x->nin_cap, nin, sizeof *x->in_shapes) ||
	    executor_array(&x->in, x->nin_cap, nin, sizeof *x->in) ||
	    executor_array(&x->stage_in, x->nin_cap, nin, sizeof *x->stage_in) ||
	    executor_array(&x->stage_in_cap, x->nin_cap, nin,
	    sizeof *x->stage_in_cap) ||
	    executor_array(&x->stage_at, x->nin_cap, nin, sizeof *x->stage_at))
		return -1;
	if (nin > x->nin_cap)
		x->nin_cap = nin;
	if (executor_array(&x->out_shapes, x->nout_cap, nout,
	    sizeof *x->out_shapes) ||
	    executor_array(&x->out, x->nout_cap, nout, sizeof *x->out) ||
	    executor_array(&x->dst, x->nout_cap, nout, sizeof *x->dst) ||
	    executor_array(&x->out_cap, x->nout_cap, nout, sizeof *x->out_cap))
		return -1;
	if (nout > x->nout_cap)
		x->nout_cap = nout;
	return 0;
}

/* Grows the reply encoding scratch to nout outputs. */
static int
executor_reserve_tensors(struct executor *ex, uint32_t nout)
{
	if (executor_array(&ex->tens, ex->nout_cap, nout, sizeof *ex->tens) ||
	    executor_array(&ex->tensp, ex->nout_cap, nout, sizeof *ex->tensp) ||
	    executor_array(&ex->trefs, ex->nout_cap, nout, sizeof *ex->trefs) ||
	    executor_array(&ex->tshape, ex->nout_cap, nout, sizeof *ex->tshape))
		return -1;
	if (nout > ex->nout_cap)
		ex->nout_cap = nout;
	return 0;
}

/* Frees a slot's buffers. */
static void
executor_slot_free(struct xslot *x)
{
	for (uint32_t i = 0; i < x->nin_cap; i++)
		free(x->stage_in[i]);
	for (uint32_t j = 0; j < x->nout_cap; j++)
		free(x->out[j]);
	free(x->in_shapes);
	free(x->out_shapes);
	free(x->in);
	free(x->stage_in);
	free(x->stage_in_cap);
	free(x->stage_at);
	free(x->out);
	free(x->dst);
	free(x->out_cap);
	free(x->part_rows);
	free(x->part_in);
	free(x->part_out);
	free(x->ans);
	free(x->batch.reqs);
}

/* Makes *buf hold at least n floats. */
static int
executor_grow(float **buf, size_t *cap, size_t n)
{
	float *p;

	if (n <= *cap)
		return 0;
	if ((p = realloc(*buf, n * sizeof *p)) == NULL)
		return -1;
	*buf = p;
	*cap = n;
	return 0;
}

/*
 * Writes rep as r's raw reply frame (r came raw, so it names no regions),
 * under the limit of a packed one: straight into the ring slot it is
 * answered in when it fits there (its inputs were read already), else
 * into a buffer of its own.
 */
static int
executor_encode_raw(struct executor *ex, const Agxq__InferReply *rep,
    struct request *r)
{
	size_t len = rawinfer_reply_frame_size(rep);
	uint8_t *at;

	if (len == 0 || len - CODEC_HEADER_SIZE > ex->cfg.limits.max_message)
		return -1;
	if (r->ring != NULL && (at = ring_reply_at(r->ring,
	    (uint32_t)r->ring_slot, len)) != NULL) {
		rawinfer_reply_frame_write(rep, at);
		r->slot_reply = at;
		r->slot_reply_len = len;
		return 0;
	}
	if ((r->reply = malloc(len)) == NULL)
		return -1;
	rawinfer_reply_frame_write(rep, r->reply);
	r->reply_len = len;
	r->reply_raw_len = len - CODEC_HEADER_SIZE;
	return 0;
}

/*
 * Fills rep (its tensors in ex's scratch) with r's slice [row, row +
 * r->rows) of the batch outputs, or with NULL data of that length when
 * layout (a reply the device fills in). The scratch holds g->noutputs.
 */
static void
executor_reply(struct executor *ex, const struct xslot *x,
    const struct graph *g, struct request *r, uint32_t row, int layout,
    Agxq__InferReply *rep)
{
	agxq__infer_reply__init(rep);
	for (uint32_t j = 0; j < g->noutputs; j++) {
		const struct graph_shape *s = &x->out_shapes[j];
		size_t per_row = graph_shape_nelem(s) / (size_t)s->dim[0];
		Agxq__Tensor *t = &ex->tens[j];

		agxq__tensor__init(t);
		t->dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
		memcpy(ex->tshape[j], s->dim, sizeof ex->tshape[j]);
		ex->tshape[j][0] = r->rows;
		t->n_shape = (size_t)s->ndim;
		t->shape = ex->tshape[j];
		/* Parts were written straight to each request's region. */
		if (layout)
			t->data.data = NULL;
		else if (x->parts)
			t->data.data = (uint8_t *)r->outs[j].dst;
		else
			t->data.data = (uint8_t *)(x->dst[j] +
			    (size_t)row * per_row);
		t->data.len = (size_t)r->rows * per_row * sizeof(float);
		ex->tensp[j] = t;
		if (!layout && j < r->nouts && r->outs[j].cap >= t->data.len) {
			/* Into the client's region: the reply only names it. */
			if (r->outs[j].dst != (float *)(void *)t->data.data)
				memcpy(r->outs[j].dst, t->data.data,
				    t->data.len);
			agxq__shm_ref__init(&ex->trefs[j]);
			ex->trefs[j].region_id = r->outs[j].region_id;
			ex->trefs[j].offset = r->outs[j].offset;
			ex->trefs[j].length = t->data.len;
			t->shm = &ex->trefs[j];
			t->data.data = NULL;
			t->data.len = 0;
		}
	}
	rep->request_id = r->id;
	rep->n_outputs = g->noutputs;
	rep->outputs = ex->tensp;
	rep->queue_us = r->queue_us;
	rep->exec_us = r->exec_us;
	rep->batch_rows = r->batch_rows;
}

/* Encodes r's slice [row, row + r->rows) of the batch outputs as its reply. */
static int
executor_encode(struct executor *ex, const struct xslot *x,
    const struct graph *g, struct request *r, uint32_t row)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__InferReply rep;

	executor_reply(ex, x, g, r, row, 0, &rep);
	if (r->raw)
		return executor_encode_raw(ex, &rep, r);
	env.body_case = AGXQ__ENVELOPE__BODY_INFER_REPLY;
	env.infer_reply = &rep;
	return codec_encode(&env, ex->cfg.compress_threshold, &ex->cfg.limits,
	    &r->reply, &r->reply_len, &r->reply_raw_len);
}

/*
 * Fails every request of the batch with code and message (a reply laid
 * out in its slot for the device is dropped: the error is answered).
 */
static void
executor_fail_batch(struct batch *b, int code, const char *msg)
{
	for (uint32_t k = 0; k < b->n; k++) {
		b->reqs[k]->slot_reply = NULL;
		b->reqs[k]->slot_reply_len = 0;
		request_fail(b->reqs[k], code, "%s", msg);
		request_encode_error(b->reqs[k]);
	}
}

/* Fails slot x's batch with the backend's cause (freed); checks the device. */
static void
executor_backend_failed(struct executor *ex, struct xslot *x, char *cause)
{
	log_warn("model %s: batch of %u rows failed: %s", x->model->name,
	    x->batch.rows, cause != NULL ? cause : "backend failure");
	executor_fail_batch(&x->batch, AGXQ__ERROR_CODE__ERR_BACKEND,
	    cause != NULL ? cause : "backend failure");
	x->failed = 1;
	ex->check_health = 1;
	free(cause);
}

/* Locks region rg for the device (again after a reset), where it can. */
static void
executor_pin_region(struct executor *ex, struct region *rg)
{
	uint64_t gen = engine_generation(ex->engine);
	char *cause = NULL;
	int rc;

	if (rg->dev < 0 || (rg->dev == 1 && rg->dev_gen == gen))
		return;
	rc = engine_host_register(ex->engine, rg->base, rg->size,
	    &rg->dev_gen, &cause);
	if (rc < 0) {
		log_info("region of %llu bytes not locked for the device: %s",
		    (unsigned long long)rg->size, cause);
		free(cause);
	}
	rg->dev = rc == 1 ? 1 : -1;
}

/*
 * Page-locks the shared memory regions request r reads and writes, once
 * each (again after a device reset): the backend then moves a lone
 * request's tensors by DMA, sparing the executor two copies of them. A
 * region that cannot be locked is left to the copies.
 */
static void
executor_pin_regions(struct executor *ex, struct request *r)
{
	for (uint32_t i = 0; i < r->nregions; i++)
		executor_pin_region(ex, r->regions[i]);
}

/*
 * Whether slot x's batch may be answered in its ring slots by the engine:
 * every request raw in a ring (inline tensors, no regions), as the models'
 * outputs allow. The rings are locked for the device on the way.
 */
static int
executor_answerable(struct executor *ex, const struct xslot *x)
{
	const struct batch *b = &x->batch;

	if (!ex->answers ||
	    x->model->graph->noutputs > BACKEND_ANSWER_MAX_OUT)
		return 0;
	for (uint32_t k = 0; k < b->n; k++) {
		const struct request *r = b->reqs[k];

		if (!r->raw || r->ring == NULL || r->nregions > 0 ||
		    r->nouts > 0)
			return 0;
	}
	for (uint32_t k = 0; k < b->n; k++)
		executor_pin_region(ex, ring_region(b->reqs[k]->ring));
	return 1;
}

/*
 * Lays out the reply of each request of slot x's batch in its ring slot
 * (the engine writes the outputs and exec_us there, then the mark) and
 * fills x->ans. Returns 1, or 0 having laid out none when a reply does not
 * fit its slot or a client waits on the socket already.
 */
static int
executor_answer_layout(struct executor *ex, struct xslot *x)
{
	struct batch *b = &x->batch;
	const struct graph *g = x->model->graph;
	Agxq__InferReply rep;
	struct backend_answer *a;
	uint32_t row = 0, k;
	uint8_t *at;
	size_t len;

	if (executor_reserve_tensors(ex, g->noutputs) != 0 ||
	    executor_array(&x->ans, x->ans_cap, b->n, sizeof *x->ans) != 0)
		return 0;
	if (b->n > x->ans_cap)
		x->ans_cap = b->n;
	for (k = 0; k < b->n; k++) {
		struct request *r = b->reqs[k];

		executor_reply(ex, x, g, r, row, 1, &rep);
		len = rawinfer_reply_frame_size(&rep);
		if (len == 0 ||
		    len - CODEC_HEADER_SIZE > ex->cfg.limits.max_message ||
		    (at = ring_reply_at(r->ring, (uint32_t)r->ring_slot,
		    len)) == NULL)
			goto undo;
		rawinfer_reply_frame_write(&rep, at);
		a = &x->ans[k];
		a->rows = r->rows;
		for (uint32_t j = 0; j < g->noutputs; j++)
			a->dst[j] = (float *)(void *)rawinfer_frame_data(at,
			    sizeof(struct rawinfer_reply), j);
		a->exec_us = (uint64_t *)(void *)(at + CODEC_HEADER_SIZE +
		    offsetof(struct rawinfer_reply, exec_us));
		a->mark = ring_answer_mark(r->ring, (uint32_t)r->ring_slot,
		    len);
		a->id = r->id;
		r->slot_reply = at;
		r->slot_reply_len = len;
		row += r->rows;
	}
	return 1;

undo:
	while (k-- > 0) {
		b->reqs[k]->slot_reply = NULL;
		b->reqs[k]->slot_reply_len = 0;
	}
	return 0;
}

/*
 * For a batch of several requests whose every input and output lies in
 * their shared memory regions: submits it as parts, so the backend moves
 * each request's rows by DMA where it can. Returns 0 (submitted), 1 (not
 * possible: gather the batch instead) or -1 with *cause.
 */
static int
executor_submit_parts(struct executor *ex, struct xslot *x, char **cause)
{
	struct batch *b = &x->batch;
	const struct graph *g = x->model->graph;
	uint32_t nin = g->ninputs, nout = g->noutputs;

	for (uint32_t k = 0; k < b->n; k++) {
		struct request *r = b->reqs[k];

		if (r->nregions == 0 || r->nouts < nout)
			return 1;
		for (uint32_t j = 0; j < nout; j++) {
			const struct graph_shape *s = &x->out_shapes[j];
			size_t bytes = graph_shape_nelem(s) / (size_t)s->dim[0] *
			    r->rows * sizeof(float);

			if (r->outs[j].cap < bytes)
				return 1;
		}
	}
	/* Models differ in their numbers of inputs and outputs. */
	if (executor_array(&x->part_rows, x->part_rows_cap, b->n,
	    sizeof *x->part_rows) != 0)
		return 1;
	if (b->n > x->part_rows_cap)
		x->part_rows_cap = b->n;
	if (executor_array(&x->part_in, x->part_in_cap, b->n * nin,
	    sizeof *x->part_in) != 0)
		return 1;
	if (b->n * nin > x->part_in_cap)
		x->part_in_cap = b->n * nin;
	if (executor_array(&x->part_out, x->part_out_cap, b->n * nout,
	    sizeof *x->part_out) != 0)
		return 1;
	if (b->n * nout > x->part_out_cap)
		x->part_out_cap = b->n * nout;
	for (uint32_t k = 0; k < b->n; k++) {
		struct request *r = b->reqs[k];

		executor_pin_regions(ex, r);
		x->part_rows[k] = r->rows;
		for (uint32_t i = 0; i < nin; i++)
			x->part_in[k * nin + i] = r->in[i];
		for (uint32_t j = 0; j < nout; j++)
			x->part_out[k * nout + j] = r->outs[j].dst;
	}
	return engine_submit_parts(ex->engine, x->model->emodel,
	    x->in_shapes, b->n, x->part_rows, x->part_in, x->part_out,
	    &x->ticket, cause);
}

/*
 * Stages slot x's batch (concatenating inputs along dim 0 when it has
 * several requests) and submits it to the backend. On failure the batch's
 * replies are errors and x->failed is set.
 */
static void
executor_start_batch(struct executor *ex, struct xslot *x)
{
	struct batch *b = &x->batch;
	struct request *r0 = b->reqs[0];
	const struct graph *g;
	char *cause = NULL;
	int staged, rc, answer, gather;

	x->model = r0->model;
	g = x->model->graph;
	x->failed = 0;
	x->parts = 0;
	x->answered = 0;
	x->ticket = NULL;
	x->t0 = request_now_ns();
	if (x == &ex->slots[ex->head])
		supervise_busy_since(x->t0);
	for (uint32_t k = 0; k < b->n; k++) {
		b->reqs[k]->queue_us = (x->t0 - b->reqs[k]->t_enqueue_ns) / 1000;
		b->reqs[k]->batch_rows = b->rows;
	}
	if (executor_reserve(x, g->ninputs, g->noutputs) != 0) {
		cause = strdup("out of memory");
		goto fail;
	}
	for (uint32_t i = 0; i < g->ninputs; i++) {
		x->in_shapes[i] = r0->in_shapes[i];
		x->in_shapes[i].dim[0] = b->rows;
		x->in[i] = r0->in[i];
	}
	if (engine_model_output_shapes(ex->engine, x->model->emodel,
	    x->in_shapes, x->out_shapes, &cause) != 0) {
		executor_fail_batch(b, AGXQ__ERROR_CODE__ERR_SHAPE, cause);
		x->failed = 1;
		free(cause);
		return;
	}
	/* A backend without parts (cpu) is spared the per-request walk. */
	answer = executor_answerable(ex, x);
	if (!answer && b->n == 1)
		executor_pin_regions(ex, r0);
	else if (!answer && b->n > 1 && engine_has_parts(ex->engine) &&
	    (rc = executor_submit_parts(ex, x, &cause)) <= 0) {
		if (rc < 0)
			executor_backend_failed(ex, x, cause);
		else
			x->parts = 1;
		return;
	}
	/*
	 * A batch of several requests is gathered where the backend reads it
	 * (its pinned staging) when it says where; else into our buffers. So
	 * is a lone request answered in its slot, where its reply goes.
	 */
	gather = b->n > 1 || answer;
	staged = gather ? engine_stage(ex->engine, x->model->emodel,
	    x->in_shapes, x->stage_at, &cause) : 0;
	if (staged < 0) {
		executor_backend_failed(ex, x, cause);
		return;
	}
	for (uint32_t i = 0; i < g->ninputs && gather; i++) {
		size_t per_row, off = 0;
		float *dst;

		per_row = graph_shape_nelem(&r0->in_shapes[i]) / r0->rows;
		if (staged)
			dst = x->stage_at[i];
		else if (executor_grow(&x->stage_in[i], &x->stage_in_cap[i],
		    per_row * b->rows) != 0) {
			cause = strdup("out of memory");
			goto fail;
		} else
			dst = x->stage_in[i];
		for (uint32_t k = 0; k < b->n; k++) {
			size_t n = per_row * b->reqs[k]->rows;

			memcpy(dst + off, b->reqs[k]->in[i], n * sizeof(float));
			off += n;
		}
		x->in[i] = dst;
	}
	for (uint32_t j = 0; j < g->noutputs; j++) {
		size_t nelem = graph_shape_nelem(&x->out_shapes[j]);

		/* A lone request with an output region gets it written there. */
		if (b->n == 1 && j < r0->nouts &&
		    r0->outs[j].cap >= nelem * sizeof(float)) {
			x->dst[j] = r0->outs[j].dst;
			continue;
		}
		/* Left in the backend's staging: encoded from there. */
		if (engine_has_result(ex->engine)) {
			x->dst[j] = NULL;
			continue;
		}
		if (executor_grow(&x->out[j], &x->out_cap[j], nelem) != 0) {
			cause = strdup("out of memory");
			goto fail;
		}
		x->dst[j] = x->out[j];
	}
	executor_batch_threads(ex, x);
	if (answer && executor_answer_layout(ex, x)) {
		rc = engine_submit_answers(ex->engine, x->model->emodel,
		    x->in_shapes, x->in, x->dst, b->n, x->ans, x->t0,
		    &x->ticket, &cause);
		if (rc < 0)
			executor_backend_failed(ex, x, cause);
		if (rc <= 0) {
			x->answered = rc == 0;
			return;
		}
		/* Not so after all: the replies are encoded at the end. */
		for (uint32_t k = 0; k < b->n; k++) {
			b->reqs[k]->slot_reply = NULL;
			b->reqs[k]->slot_reply_len = 0;
		}
	}
	if (engine_submit(ex->engine, x->model->emodel, x->in_shapes, x->in,
	    x->dst, &x->ticket, &cause) != 0)
		executor_backend_failed(ex, x, cause);
	return;

fail:
	executor_fail_batch(b, AGXQ__ERROR_CODE__ERR_NOMEM,
	    cause != NULL ? cause : "out of memory");
	x->failed = 1;
	free(cause);
}

/* The microseconds from t0 to t1, 0 when either is unknown (0) or t1 < t0. */
static uint64_t
executor_us(uint64_t t0, uint64_t t1)
{
	return t0 != 0 && t1 > t0 ? (t1 - t0) / 1000 : 0;
}

/*
 * Records where request r of slot x's batch (finished at t1) spent its
 * time in agxqd. Under the lock.
 */
static void
executor_record(struct model *m, const struct xslot *x,
    const struct request *r, uint64_t t1)
{
	uint64_t us[MODEL_T_COUNT];

	us[MODEL_T_IN] = executor_us(r->t_in_ns, r->t_enqueue_ns);
	us[MODEL_T_QUEUE] = r->queue_us;
	us[MODEL_T_STAGE] = executor_us(x->t0, x->t_sub);
	us[MODEL_T_DEVICE] = executor_us(x->t_sub, t1);
	us[MODEL_T_REPLY] = executor_us(t1, r->t_reply_ns);
	us[MODEL_T_EXEC] = executor_us(x->t0, t1);
	models_record(m, us);
}

/* Waits for slot x's batch, then encodes every reply and records stats. */
static void
executor_end_batch(struct executor *ex, struct xslot *x)
{
	struct batch *b = &x->batch;
	struct model *m = x->model;
	const struct graph *g = m->graph;
	uint32_t row = 0, timeouts = 0, errors = 0;
	uint64_t t1, exec_us;
	char *cause = NULL;
	uint64_t tf = request_now_ns();
	int frc = x->failed ? 0 : engine_finish(ex->engine, x->ticket, &cause);

	ex->finish_ns = request_now_ns() - tf;
	for (uint32_t j = 0; frc == 0 && !x->failed && !x->parts &&
	    !x->answered && j < g->noutputs; j++) {
		if (x->dst[j] == NULL)
			x->dst[j] = (float *)(uintptr_t)engine_result(ex->engine,
			    x->ticket, j);
	}
	if (frc != 0) {
		log_warn("model %s: batch of %u rows failed: %s", m->name,
		    b->rows, cause);
		executor_fail_batch(b, AGXQ__ERROR_CODE__ERR_BACKEND,
		    cause != NULL ? cause : "backend failure");
		x->failed = 1;
		ex->check_health = 1;
		free(cause);
	}
	t1 = request_now_ns();
	exec_us = (t1 - x->t0) / 1000;
	if (x->answered && !x->failed)
		atomic_fetch_add_explicit(&ex->answered_early, b->n,
		    memory_order_relaxed);
	if (!x->failed && !x->answered &&
	    executor_reserve_tensors(ex, g->noutputs) != 0) {
		executor_fail_batch(b, AGXQ__ERROR_CODE__ERR_NOMEM,
		    "out of memory");
		x->failed = 1;
	}
	for (uint32_t k = 0; k < b->n && !x->failed; k++) {
		struct request *r = b->reqs[k];

		r->exec_us = exec_us;
		/* Answered: its reply is in the slot, maybe taken already. */
		if (!x->answered && r->deadline_ns != 0 &&
		    t1 > r->deadline_ns) {
			request_fail(r, AGXQ__ERROR_CODE__ERR_TIMEDOUT,
			    "request timed out: finished %llu us after its deadline",
			    (unsigned long long)((t1 - r->deadline_ns) / 1000));
			request_encode_error(r);
		} else if (!x->answered &&
		    executor_encode(ex, x, g, r, row) != 0) {
			request_fail(r, AGXQ__ERROR_CODE__ERR_TOOBIG,
			    "reply does not fit in one frame");
			request_encode_error(r);
		}
		r->t_reply_ns = request_now_ns();
		row += r->rows;
	}
	for (uint32_t k = 0; k < b->n; k++) {
		if (b->reqs[k]->status == AGXQ__ERROR_CODE__ERR_TIMEDOUT)
			timeouts++;
		else if (b->reqs[k]->status != 0)
			errors++;
	}
	pthread_mutex_lock(&ex->lock);
	m->stats.batches++;
	m->stats.rows += b->rows;
	m->stats.timeouts += timeouts;
	m->stats.errors += errors;
	for (uint32_t k = 0; k < b->n; k++)
		executor_record(m, x, b->reqs[k], t1);
	pthread_mutex_unlock(&ex->lock);
}

/* Finishes the oldest batch in flight and hands its replies to the loop. */
static void
executor_retire_oldest(struct executor *ex)
{
	struct xslot *x = &ex->slots[ex->head];
	struct request_list out;
	uint64_t t0 = request_now_ns();

	TAILQ_INIT(&out);
	executor_end_batch(ex, x);
	for (uint32_t k = 0; k < x->batch.n; k++)
		TAILQ_INSERT_TAIL(&out, x->batch.reqs[k], entry);
	x->batch.n = 0;
	ex->head = (ex->head + 1) % ex->nslots;
	ex->inflight--;
	supervise_busy_since(ex->inflight > 0 ? ex->slots[ex->head].t0 : 0);
	executor_post(ex, &out);
	/* Busy, not waiting: what finish spent on the device is left out. */
	atomic_fetch_add_explicit(&ex->busy_ns, request_now_ns() - t0 -
	    ex->finish_ns, memory_order_relaxed);
	atomic_fetch_add_explicit(&ex->wait_ns, ex->finish_ns,
	    memory_order_relaxed);
}

/*
 * Warms model m just loaded (engine_model_warm): a pass at each
 * power-of-two batch up to the largest, so that the device's first-pass
 * work for those sizes (cuda: GEMM timing, milliseconds each, during
 * which every client waits) is done before its requests come. A failed
 * pass leaves the model loaded: its batches of new sizes do that work
 * when they first run, and the device is checked as after a failed batch.
 */
static void
executor_warm(struct executor *ex, struct model *m)
{
	uint64_t t0 = request_now_ns();
	uint32_t passes = 0;
	char *cause = NULL;

	if (engine_model_warm(ex->engine, m->emodel, ex->cfg.batch.max_batch,
	    &passes, &cause) != 0) {
		log_warn("model %s: %s; it stays loaded, and its first batch "
		    "of each new size does that work when it comes", m->name,
		    cause != NULL ? cause : "warming failed");
		free(cause);
		ex->check_health = 1;
		return;
	}
	if (passes > 0)
		log_info("model %s: warmed at load at batches up to %u: %u "
		    "passes in %.1f ms", m->name, ex->cfg.batch.max_batch,
		    passes, (double)(request_now_ns() - t0) / 1e6);
}

/* Runs a LOAD or FREE request; returns 1 when r must go back to the loop. */
static int
executor_run_control(struct executor *ex, struct request *r, int stopping)
{
	struct model *m = r->model;
	char *cause = NULL;

	if (r->kind == REQUEST_UNMAP) {
		if (r->region->dev == 1)
			engine_host_unregister(ex->engine, r->region->base,
			    r->region->dev_gen);
		region_free(r->region);
		request_free(r);
		return 0;
	}
	if (r->kind == REQUEST_FREE) {
		engine_model_free(ex->engine, m->emodel);
		models_destroy(m);
		request_free(r);
		return 0;
	}
	if (stopping) {
		request_fail(r, AGXQ__ERROR_CODE__ERR_SHUTDOWN,
		    "agxqd is shutting down");
		return 1;
	}
	if (engine_model_load(ex->engine, m->graph, &m->emodel, &cause) != 0) {
		request_fail(r, AGXQ__ERROR_CODE__ERR_BACKEND,
		    "loading the model on the %s backend failed: %s",
		    ex->backend, cause);
		free(cause);
	} else if (ex->warm)
		executor_warm(ex, m);
	return 1;
}

/* Finishes expired requests with ERR_TIMEDOUT. */
static void
executor_expire(struct executor *ex, struct request_list *expired)
{
	struct request *r;

	TAILQ_FOREACH(r, expired, entry) {
		request_fail(r, AGXQ__ERROR_CODE__ERR_TIMEDOUT,
		    "request timed out after %llu us in the queue",
		    (unsigned long long)((request_now_ns() - r->t_enqueue_ns) /
		    1000));
		request_encode_error(r);
	}
	pthread_mutex_lock(&ex->lock);
	TAILQ_FOREACH(r, expired, entry) {
		r->model->stats.timeouts++;
		r->model->stats.queued--;
	}
	pthread_mutex_unlock(&ex->lock);
	executor_post(ex, expired);
}

/* Sleeps on the condition for at most wait_ns (0: until signalled). */
static void
executor_wait(struct executor *ex, uint64_t wait_ns)
{
	struct timespec ts;

	ex->waiting = 1;
	if (wait_ns == 0) {
		pthread_cond_wait(&ex->cond, &ex->lock);
		ex->waiting = 0;
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(wait_ns / 1000000000ull);
	ts.tv_nsec += (long)(wait_ns % 1000000000ull);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&ex->cond, &ex->lock, &ts);
	ex->waiting = 0;
}

/*
 * Before sleeping with nothing queued, polls for new work for spin_us
 * (lock released): a request arriving meanwhile starts without the wake-up
 * of a sleeping thread, which costs more than a small model's batch. Only
 * worth a core on machines that have cores to spare (see config.h).
 * Returns 1 when work arrived. Whoever changes what the executor waits for
 * (work, control, stopping) bumps work_seq under the lock, since a
 * broadcast while the executor spins would otherwise be missed and the
 * executor would then sleep through it.
 */
static int
executor_spin(struct executor *ex)
{
	unsigned int seq = atomic_load(&ex->work_seq);
	uint64_t end;

	if (ex->cfg.spin_us == 0)
		return 0;
	pthread_mutex_unlock(&ex->lock);
	end = request_now_ns() + (uint64_t)ex->cfg.spin_us * 1000;
	while (atomic_load_explicit(&ex->work_seq, memory_order_relaxed) ==
	    seq && request_now_ns() < end)
		__builtin_ia32_pause();
	pthread_mutex_lock(&ex->lock);
	return atomic_load(&ex->work_seq) != seq;
}

/*
 * After a failed batch: when the device needs it, reopens the backend and
 * reloads every model (nothing may be in flight), so only the batches that
 * hit the fault fail.
 */
static void
executor_recover(struct executor *ex)
{
	char *cause = NULL;

	ex->check_health = 0;
	if (engine_healthy(ex->engine))
		return;
	log_warn("the %s device needs a reset; reopening it and reloading "
	    "the models", ex->backend);
	if (engine_reset(ex->engine, &cause) != 0) {
		if (ex->cfg.lost == NULL) {
			log_error("the %s device could not be reopened: %s; "
			    "every request will fail until agxqd is restarted",
			    ex->backend, cause != NULL ? cause : "unknown error");
			free(cause);
			return;
		}
		/* Only a new process can open it again: stop taking work. */
		log_error("the %s device could not be reopened in this process: "
		    "%s", ex->backend, cause != NULL ? cause : "unknown error");
		free(cause);
		pthread_mutex_lock(&ex->lock);
		ex->lost = 1;
		pthread_mutex_unlock(&ex->lock);
		event_active(ex->lost_ev, EV_READ, 0);
		return;
	}
	log_info("the %s device was reopened and its models reloaded",
	    ex->backend);
}

/*
 * Decides the cpu backend's BLAS threads: at most --cpu-threads, else
 * $OPENBLAS_NUM_THREADS, else every core; each batch then uses them all
 * only when it is big enough to gain (executor_batch_threads). The daemon
 * shares the machine with its clients, and BLAS workers woken for a small
 * GEMM spin (sched_yield) in the way of the loop thread and the clients.
 */
static void
executor_cpu_threads(struct executor *ex)
{
	const char *env = getenv("OPENBLAS_NUM_THREADS");
	int n = ex->cfg.cpu_threads;

	if (n <= 0 && env != NULL)
		n = atoi(env);
	if (n <= 0)
		n = (int)sysconf(_SC_NPROCESSORS_ONLN);
	ex->cpu_cap = n > 0 ? n : 1;
	ex->cpu_now = 1;
	engine_set_cpu_threads(1);
	log_info("cpu backend: up to %d BLAS thread%s, for batches of more "
	    "than %d MFLOP", ex->cpu_cap, ex->cpu_cap == 1 ? "" : "s",
	    (int)(EXECUTOR_THREADED_FLOPS / 1000000));
}

/*
 * Gives batch x every BLAS thread when its work is large enough to gain
 * from them, else one. The work is estimated as two flops per weight per
 * token (a token: one position of input 0 along its last dim), which is
 * what matmul-dominated models cost.
 */
static void
executor_batch_threads(struct executor *ex, const struct xslot *x)
{
	const struct graph *g = x->model->graph;
	const struct graph_shape *s = &x->in_shapes[0];
	double tokens, flops;
	int want;

	if (ex->cpu_cap <= 1 || s->ndim < 1 || s->dim[s->ndim - 1] <= 0)
		return;
	tokens = (double)graph_shape_nelem(s) / (double)s->dim[s->ndim - 1];
	flops = 2.0 * tokens * (double)(g->weight_bytes / sizeof(float));
	want = flops > EXECUTOR_THREADED_FLOPS ? ex->cpu_cap : 1;
	if (want != ex->cpu_now) {
		engine_set_cpu_threads(want);
		ex->cpu_now = want;
	}
}

/* Whether the oldest batch in flight is done (or failed to start). */
static int
executor_head_done(struct executor *ex)
{
	const struct xslot *x = &ex->slots[ex->head];

	return x->failed || engine_poll(ex->engine, x->ticket);
}

/*
 * Polls the oldest batch in flight until it is done (returns 1) or new
 * work is submitted (returns 0), for at most EXECUTOR_AWAIT_NS; then
 * returns 1 and finish blocks. Called without the lock.
 */
static int
executor_await(struct executor *ex)
{
	unsigned int seq = atomic_load(&ex->work_seq);
	void *ticket = ex->slots[ex->head].ticket;
	uint64_t end = 0;

	if (ex->slots[ex->head].failed)
		return 1;
	for (;;) {
		if (engine_poll(ex->engine, ticket))
			return 1;
		if (atomic_load_explicit(&ex->work_seq, memory_order_relaxed) !=
		    seq)
			return 0;
		if (end == 0)
			end = request_now_ns() + EXECUTOR_AWAIT_NS;
		else if (request_now_ns() >= end)
			return 1;
		__builtin_ia32_pause();
	}
}

/* Logs a setting of the environment that is not used as given. */
static void
executor_env_note(const char *note, void *arg)
{
	(void)arg;
	log_warn("%s", note);
}

/* Allocates the in-flight slots once the backend says how many it takes. */
static int
executor_make_slots(struct executor *ex)
{
	uint32_t cap = ex->cfg.batch.max_batch > 0 ? ex->cfg.batch.max_batch : 1;
	unsigned long lanes;

	ex->nslots = (uint32_t)engine_slots(ex->engine);
	/*
	 * AGXQ_LANES=N runs at most N batches at once (fewer, bigger
	 * batches); for measuring, see docs/GPU.md.
	 */
	lanes = envset_ulong("AGXQ_LANES", ex->nslots, 1, ULONG_MAX);
	if (lanes < ex->nslots)
		ex->nslots = (uint32_t)lanes;
	if ((ex->slots = calloc(ex->nslots, sizeof *ex->slots)) == NULL)
		return -1;
	for (uint32_t i = 0; i < ex->nslots; i++) {
		ex->slots[i].batch.cap = cap;
		ex->slots[i].batch.reqs = calloc(cap, sizeof(struct request *));
		if (ex->slots[i].batch.reqs == NULL)
			return -1;
	}
	return 0;
}

/*
 * The executor thread. Control work runs first, once nothing is in flight.
 * Otherwise, while a slot is free, the next batch is staged and submitted;
 * with every slot busy (or nothing queued) the oldest batch is finished.
 */
static void *
executor_main(void *arg)
{
	struct executor *ex = arg;
	struct request_list out, expired;
	struct request *r;
	char *cause = NULL;
	int rc;

#ifdef __linux__
	pthread_setname_np(pthread_self(), "agxqd-exec"); /* for top -H */
#endif
	supervise_busy_since(request_now_ns());
	rc = engine_open(ex->cfg.backend, ex->cfg.device, ENGINE_OWNER_ABORT,
	    &ex->engine, &cause);
	supervise_busy_since(0);
	if (rc == 0 && executor_make_slots(ex) != 0) {
		cause = strdup("out of memory");
		rc = -1;
	}
	/* AGXQ_ANSWER=0: replies always encoded after the batch. */
	if (rc == 0)
		ex->answers = engine_has_answers(ex->engine) &&
		    envset_bool("AGXQ_ANSWER", 1);
	/* AGXQ_WARM=1 warms models on any backend, 0 on none. */
	if (rc == 0)
		ex->warm = envset_bool("AGXQ_WARM", engine_warms(ex->engine));
	envset_take_notes(executor_env_note, NULL);
	if (rc == 0) {
		snprintf(ex->backend, sizeof ex->backend, "%s",
		    engine_backend_name(ex->engine));
		if (strcmp(ex->backend, "cpu") == 0)
			executor_cpu_threads(ex);
	}
	pthread_mutex_lock(&ex->lock);
	ex->started = rc == 0 ? 1 : -1;
	ex->start_cause = cause;
	pthread_cond_broadcast(&ex->cond);
	if (rc != 0) {
		pthread_mutex_unlock(&ex->lock);
		return NULL;
	}
	TAILQ_INIT(&out);
	TAILQ_INIT(&expired);
	for (;;) {
		uint64_t wait_ns = 0;

		if ((r = TAILQ_FIRST(&ex->control)) != NULL) {
			int stopping = ex->stopping;

			pthread_mutex_unlock(&ex->lock);
			if (ex->inflight > 0) {
				executor_retire_oldest(ex);
				pthread_mutex_lock(&ex->lock);
				continue;
			}
			pthread_mutex_lock(&ex->lock);
			TAILQ_REMOVE(&ex->control, r, entry);
			pthread_mutex_unlock(&ex->lock);
			supervise_busy_since(request_now_ns());
			rc = executor_run_control(ex, r, stopping);
			supervise_busy_since(0);
			if (rc) {
				TAILQ_INSERT_TAIL(&out, r, entry);
				executor_post(ex, &out);
			}
			pthread_mutex_lock(&ex->lock);
			continue;
		}
		if (ex->check_health) {
			pthread_mutex_unlock(&ex->lock);
			if (ex->inflight > 0)
				executor_retire_oldest(ex);
			else {
				supervise_busy_since(request_now_ns());
				executor_recover(ex);
				supervise_busy_since(0);
			}
			pthread_mutex_lock(&ex->lock);
			continue;
		}
		/*
		 * A finished batch is retired before more work starts: with
		 * work arriving all the time, it would otherwise wait for
		 * every lane to fill, and its clients with it.
		 */
		if (ex->inflight > 0) {
			int done;

			pthread_mutex_unlock(&ex->lock);
			if ((done = executor_head_done(ex)))
				executor_retire_oldest(ex);
			pthread_mutex_lock(&ex->lock);
			if (done)
				continue;
		}
		rc = 0;
		if (!ex->stopping && !ex->lost && ex->inflight < ex->nslots) {
			struct xslot *x = &ex->slots[(ex->head + ex->inflight) %
			    ex->nslots];

			rc = batcher_next(ex->batcher, request_now_ns(),
			    &x->batch, &expired, &wait_ns);
			if (rc == 1)
				x->batch.reqs[0]->model->stats.queued -=
				    x->batch.n;
		}
		if (!TAILQ_EMPTY(&expired)) {
			pthread_mutex_unlock(&ex->lock);
			executor_expire(ex, &expired);
			pthread_mutex_lock(&ex->lock);
		}
		if (rc == 1) {
			struct xslot *x = &ex->slots[(ex->head + ex->inflight) %
			    ex->nslots];
			uint64_t t0;

			ex->inflight++;
			pthread_mutex_unlock(&ex->lock);
			t0 = request_now_ns();
			executor_start_batch(ex, x);
			x->t_sub = request_now_ns();
			atomic_fetch_add_explicit(&ex->busy_ns, x->t_sub - t0,
			    memory_order_relaxed);
			pthread_mutex_lock(&ex->lock);
			continue;
		}
		if (ex->inflight > 0) {
			pthread_mutex_unlock(&ex->lock);
			/*
			 * With a slot free, wait for the oldest batch by
			 * polling, so work that arrives meanwhile is submitted
			 * at once and overlaps it on the device.
			 */
			if (ex->inflight == ex->nslots ||
			    executor_await(ex))
				executor_retire_oldest(ex);
			pthread_mutex_lock(&ex->lock);
			continue;
		}
		if (ex->exiting)
			break;
		if (ex->stopping) {
			if (!ex->quiet) {
				ex->quiet = 1;
				pthread_cond_broadcast(&ex->cond);
			}
			pthread_cond_wait(&ex->cond, &ex->lock);
			continue;
		}
		if (wait_ns == 0 && executor_spin(ex))
			continue;
		if (TAILQ_EMPTY(&expired))
			executor_wait(ex, wait_ns);
	}
	pthread_mutex_unlock(&ex->lock);
	supervise_busy_since(request_now_ns());
	engine_close(ex->engine);
	supervise_busy_since(0);
	ex->engine = NULL;
	return NULL;
}

/* Starts the executor thread. */
int
executor_start(struct event_base *base, const struct executor_config *cfg,
    executor_deliver_fn deliver, void *arg, struct executor **out,
    char **cause)
{
	struct executor *ex;
	pthread_condattr_t ca;

	if ((ex = calloc(1, sizeof *ex)) == NULL)
		goto fail_nomem;
	ex->cfg = *cfg;
	snprintf(ex->backend, sizeof ex->backend, "%s", cfg->backend);
	ex->deliver = deliver;
	ex->deliver_arg = arg;
	TAILQ_INIT(&ex->control);
	if ((ex->batcher = batcher_new(&cfg->batch)) == NULL)
		goto fail_free;
	if (cfg->lost != NULL && (ex->lost_ev = event_new(base, -1, 0,
	    executor_lost_cb, ex)) == NULL)
		goto fail_free;
	pthread_mutex_init(&ex->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ex->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&ex->thread, NULL, executor_main, ex) != 0) {
		if (asprintf(cause, "cannot start the executor thread") < 0)
			*cause = NULL;
		goto fail_destroy;
	}
	pthread_mutex_lock(&ex->lock);
	while (ex->started == 0)
		pthread_cond_wait(&ex->cond, &ex->lock);
	pthread_mutex_unlock(&ex->lock);
	if (ex->started < 0) {
		pthread_join(ex->thread, NULL);
		*cause = ex->start_cause;
		ex->start_cause = NULL;
		goto fail_destroy;
	}
	*out = ex;
	return 0;

fail_destroy:
	pthread_cond_destroy(&ex->cond);
	pthread_mutex_destroy(&ex->lock);
fail_free:
	if (ex != NULL) {
		if (ex->lost_ev != NULL)
			event_free(ex->lost_ev);
		batcher_free(ex->batcher);
		free(ex);
	}
	return -1;
fail_nomem:
	if (asprintf(cause, "out of memory") < 0)
		*cause = NULL;
	return -1;
}

/* Counts the requests of list out of their models' queues (lock held). */
static void
executor_unqueue(struct request_list *list)
{
	struct request *r;

	TAILQ_FOREACH(r, list, entry)
		r->model->stats.queued--;
}

/* Finishes each request of list with code and message and delivers it. */
static void
executor_finish_all(struct executor *ex, struct request_list *list, int code,
    const char *msg)
{
	struct request *r;

	TAILQ_FOREACH(r, list, entry) {
		request_fail(r, code, "%s", msg);
		request_encode_error(r);
	}
	executor_post(ex, list);
}

/* Stops inference work and waits for the running batch. */
void
executor_quiesce(struct executor *ex, int code, const char *msg)
{
	struct request_list list;

	TAILQ_INIT(&list);
	pthread_mutex_lock(&ex->lock);
	batcher_drain(ex->batcher, &list);
	executor_unqueue(&list);
	ex->stopping = 1;
	atomic_fetch_add(&ex->work_seq, 1); /* ends a spin, see executor_spin */
	pthread_cond_broadcast(&ex->cond);
	pthread_mutex_unlock(&ex->lock);
	executor_finish_all(ex, &list, code, msg);
	pthread_mutex_lock(&ex->lock);
	while (!ex->quiet)
		pthread_cond_wait(&ex->cond, &ex->lock);
	pthread_mutex_unlock(&ex->lock);
}

/* Runs the remaining control work, closes the backend, joins, frees. */
void
executor_free(struct executor *ex)
{
	if (ex == NULL)
		return;
	pthread_mutex_lock(&ex->lock);
	ex->stopping = 1;
	ex->exiting = 1;
	atomic_fetch_add(&ex->work_seq, 1);
	pthread_cond_broadcast(&ex->cond);
	pthread_mutex_unlock(&ex->lock);
	pthread_join(ex->thread, NULL);
	if (ex->lost_ev != NULL)
		event_free(ex->lost_ev);
	batcher_free(ex->batcher);
	pthread_cond_destroy(&ex->cond);
	pthread_mutex_destroy(&ex->lock);
	for (uint32_t i = 0; i < ex->nslots; i++)
		executor_slot_free(&ex->slots[i]);
	free(ex->slots);
	free(ex->tens);
	free(ex->tensp);
	free(ex->trefs);
	free(ex->tshape);
	free(ex->start_cause);
	free(ex);
}

/* Queues r (lock held); 0, or -1 when refused. */
static int
executor_push(struct executor *ex, struct request *r)
{
	if (ex->stopping || batcher_push(ex->batcher, r) != 0) {
		r->model->stats.rejected_busy++;
		return -1;
	}
	r->model->stats.requests++;
	r->model->stats.queued++;
	return 0;
}

/* Wakes the executor for new work (lock held). */
static void
executor_kick(struct executor *ex)
{
	atomic_fetch_add(&ex->work_seq, 1);
	if (ex->waiting)
		pthread_cond_broadcast(&ex->cond);
}

/* Queues an inference request. */
int
executor_submit(struct executor *ex, struct request *r)
{
	int rc;

	pthread_mutex_lock(&ex->lock);
	if ((rc = executor_push(ex, r)) == 0)
		executor_kick(ex);
	pthread_mutex_unlock(&ex->lock);
	return rc;
}

/* Queues the requests of list at once; those refused go to refused. */
void
executor_submit_list(struct executor *ex, struct request_list *list,
    struct request_list *refused)
{
	struct request *r;
	int queued = 0;

	pthread_mutex_lock(&ex->lock);
	while ((r = TAILQ_FIRST(list)) != NULL) {
		TAILQ_REMOVE(list, r, entry);
		if (executor_push(ex, r) == 0)
			queued = 1;
		else
			TAILQ_INSERT_TAIL(refused, r, entry);
	}
	if (queued)
		executor_kick(ex);
	pthread_mutex_unlock(&ex->lock);
}

/* Queues a LOAD, FREE or UNMAP request. */
void
executor_control(struct executor *ex, struct request *r)
{
	pthread_mutex_lock(&ex->lock);
	TAILQ_INSERT_TAIL(&ex->control, r, entry);
	atomic_fetch_add(&ex->work_seq, 1);
	pthread_cond_broadcast(&ex->cond);
	pthread_mutex_unlock(&ex->lock);
}

/* Finishes the queued requests of conn with ERR_DISCONNECTED. */
void
executor_cancel_conn(struct executor *ex, const struct conn *conn)
{
	struct request_list list;

	TAILQ_INIT(&list);
	pthread_mutex_lock(&ex->lock);
	batcher_remove_conn(ex->batcher, conn, &list);
	executor_unqueue(&list);
	pthread_mutex_unlock(&ex->lock);
	executor_finish_all(ex, &list, AGXQ__ERROR_CODE__ERR_DISCONNECTED,
	    "client disconnected");
}

/* Counts a busy rejection for m. */
void
executor_count_busy(struct executor *ex, struct model *m)
{
	pthread_mutex_lock(&ex->lock);
	m->stats.rejected_busy++;
	pthread_mutex_unlock(&ex->lock);
}

/* Copies m's stats. */
void
executor_model_stats(struct executor *ex, struct model *m,
    struct model_stats *out)
{
	pthread_mutex_lock(&ex->lock);
	*out = m->stats;
	pthread_mutex_unlock(&ex->lock);
}

/* Backend name. */
const char *
executor_backend(const struct executor *ex)
{
	return ex->backend;
}

/* Time the executor spent working rather than waiting, in nanoseconds. */
uint64_t
executor_busy_ns(struct executor *ex)
{
	return atomic_load_explicit(&ex->busy_ns, memory_order_relaxed);
}

/* Requests answered in their slots by the engine. */
uint64_t
executor_answered_early(struct executor *ex)
{
	return atomic_load_explicit(&ex->answered_early,
	    memory_order_relaxed);
}

/* Time the executor spent in finish waiting for the device, in ns. */
uint64_t
executor_wait_ns(struct executor *ex)
{
	return atomic_load_explicit(&ex->wait_ns, memory_order_relaxed);
}

/* Backend calls made on the executor thread. */
uint64_t
executor_backend_calls(const struct executor *ex)
{
	return ex->engine != NULL ? engine_backend_calls(ex->engine) : 0;
}

/* Backend calls made off the executor thread. */
uint64_t
executor_foreign_calls(const struct executor *ex)
{
	return ex->engine != NULL ? engine_foreign_calls(ex->engine) : 0;
}
