/*
 * server: listening socket, connections, message dispatch, model sharing,
 * completions from the executor and clean shutdown.
 *
 * Threads: the main loop (main thread) accepts, and runs the signals, the
 * timers and shutdown; every connection is served by one of the I/O loops
 * (ioloop.h; loop 0 is the main loop) and only ever touched on that loop's
 * thread, which also gets its finished requests. What the loops share is
 * under srv->lock: the model registry and each model's refs, state and
 * waiters; the connection count; the mapped region totals; the shutdown
 * flags. Nothing is sent while the lock is held.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "codec.h"
#include "config.h"
#include "conn.h"
#include "executor.h"
#include "ioloop.h"
#include "log.h"
#include "models.h"
#include "rawinfer.h"
#include "region.h"
#include "ring.h"
#include "ringfmt.h"
#include "request.h"
#include "server.h"
#include "supervise.h"

/* One I/O loop and the connections it serves (its thread only). */
struct server_loop {
	struct ioloop *io;
	struct conn_list conns;
	atomic_uint nconns;           /* given to it and not closed yet */
	uint64_t frames;              /* its frames in and out (its thread) */
	struct request_list taken;    /* taken from rings, not submitted yet */
	uint32_t ring_inflight;       /* taken from rings, not answered yet */
	int rings_on;                 /* its rings' awake says it polls */
	struct tsamples ring_wait;    /* posted in a ring -> taken (us) */
	struct tsamples out;          /* reply encoded -> handed out */
	struct server *srv;
};

struct server {
	/* Main thread. */
	struct event_base *base;
	struct evconnlistener *listener;
	struct event *ev_term;
	struct event *ev_int;
	struct event *ev_deadline;    /* shutdown: forced close of stragglers */
	struct event *ev_idle;        /* once a second: give memory back when idle */
	uint64_t idle_frames;         /* frames_in at the last idle check */
	int trimmed;                  /* memory given back since the last frame */
	int exit_code;                /* 0, or SUPERVISE_EXIT_LOST */
	int wind_code;                /* shutdown: what connections are told */
	const char *wind_msg;
	int wind_notice;

	struct server_loop *loops;    /* [0]: the main loop */
	uint32_t nloops;
	struct executor *ex;
	struct server_counters ctr;   /* atomic */
	atomic_uint nrings;           /* connections with a request ring */
	uint32_t ring_limit;          /* rings served at most, all loops */
	atomic_uint_fast64_t next_conn_id;
	uint64_t started_ns;

	pthread_mutex_t lock;
	struct models *models;        /* locked, with each model's refs and state */
	uint32_t nconns;              /* locked */
	uint32_t shm_regions;         /* locked: regions mapped, all connections */
	uint64_t shm_bytes;           /* locked: and their bytes */
	int shutting_down;            /* locked */
	int finished;                 /* locked */
};

static void server_finish(struct server *srv);
static void server_finish_task(void *arg, intptr_t val);
static void server_device_lost(void *arg);
static void server_deliver(struct request_list *list, void *arg);
static void server_loop_submit(struct server *srv, struct server_loop *sl);
static void server_loop_awake(void *arg, int on);

/* Aborts: the daemon may die on its own out-of-memory (STYLE.md rule 5). */
static void
server_oom(void)
{
	log_error("out of memory");
	abort();
}

/* Traffic counters. */
struct server_counters *
server_counters(struct server *srv)
{
	return &srv->ctr;
}

/* Takes one more reference to m, which the caller already holds one of. */
static void
server_model_ref(struct server *srv, struct model *m)
{
	pthread_mutex_lock(&srv->lock);
	m->refs++;
	pthread_mutex_unlock(&srv->lock);
}

/*
 * Any thread: drops n references to m (none for NULL) under one lock; the
 * last one frees it on the executor (or here once the executor is gone).
 */
static void
server_model_drop(struct server *srv, struct model *m, uint32_t n)
{
	struct request *r;
	int ready;

	if (m == NULL || n == 0)
		return;
	pthread_mutex_lock(&srv->lock);
	m->refs -= n;
	if (m->refs > 0) {
		pthread_mutex_unlock(&srv->lock);
		return;
	}
	/* Not READY: FAILED, already out of the registry. */
	if ((ready = m->state == MODEL_READY))
		models_remove(srv->models, m);
	pthread_mutex_unlock(&srv->lock);
	if (!ready || srv->ex == NULL) {
		models_destroy(m);
		return;
	}
	log_info("model %llu (%s) released", (unsigned long long)m->id,
	    m->name);
	if ((r = request_new(REQUEST_FREE, 0)) == NULL)
		server_oom();
	r->model = m;
	executor_control(srv->ex, r);
}

/* Any thread: drops one reference to m (server_model_drop). */
static void
server_model_unref(struct server *srv, struct model *m)
{
	server_model_drop(srv, m, 1);
}

/* Encodes and sends env to c. */
static void
server_reply(struct conn *c, Agxq__Envelope *env)
{
	uint8_t *frame;
	size_t len;

	if (codec_encode(env, 0, &config.limits, &frame, &len, NULL) != 0)
		server_oom();
	conn_send(c, frame, len, 0);
}

/* Answers a Hello: checks the protocol version. */
static void
server_hello(struct server *srv, struct conn *c, const Agxq__Hello *h)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__HelloReply rep = AGXQ__HELLO_REPLY__INIT;

	if (c->state != CONN_HANDSHAKE) {
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_PROTO,
		    "hello sent twice");
		return;
	}
	if (h->protocol_version != CODEC_PROTOCOL_VERSION) {
		log_info("conn %llu: refused protocol version %u",
		    (unsigned long long)c->id, h->protocol_version);
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_VERSION,
		    "protocol version %u is not supported: agxqd %s speaks "
		    "version %u", h->protocol_version, AGXQ_VERSION_STRING,
		    CODEC_PROTOCOL_VERSION);
		conn_drain(c);
		return;
	}
	rep.protocol_version = CODEC_PROTOCOL_VERSION;
	rep.server_version = (char *)AGXQ_VERSION_STRING;
	rep.backend = (char *)executor_backend(srv->ex);
	rep.max_frame = config.limits.max_frame;
	rep.max_batch = config.max_batch;
	rep.pid = config.supervisor_pid;
	rep.shm = config.max_regions > 0;
	rep.ring = config.max_regions > 0;
	rep.ring_raw = rep.ring;
	env.body_case = AGXQ__ENVELOPE__BODY_HELLO_REPLY;
	env.hello_reply = &rep;
	conn_set_state(c, CONN_READY);
	log_debug("conn %llu: hello from \"%s\" (pid %d, uid %d)",
	    (unsigned long long)c->id, h->client_name, (int)c->pid,
	    (int)c->uid);
	server_reply(c, &env);
}

/* Sends a LoadModelReply for waiter r. */
static void
server_load_reply(struct conn *c, uint64_t id, const struct model *m,
    int shared)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__LoadModelReply rep = AGXQ__LOAD_MODEL_REPLY__INIT;

	rep.request_id = id;
	rep.model_id = m->id;
	rep.shared = shared;
	env.body_case = AGXQ__ENVELOPE__BODY_LOAD_MODEL_REPLY;
	env.load_model_reply = &rep;
	server_reply(c, &env);
}

/*
 * Completes load waiter r of a model now ready (status 0) or failed: the
 * waiter's model reference passes to its connection, or is dropped.
 */
static void
server_load_finish(struct server *srv, struct request *r, int status,
    const char *cause, int shared)
{
	struct conn *c = r->conn;
	struct model *m = r->model;

	if (c->state == CONN_READY && status == 0) {
		if (conn_add_model(c, m) != 0)
			server_oom();
		server_load_reply(c, r->id, m, shared);
	} else {
		if (c->state == CONN_READY)
			conn_send_error(c, r->id, status, "%s", cause);
		server_model_unref(srv, m);
	}
	conn_unref(c);
	request_free(r);
}

/*
 * Checks the model limits for a new model g loaded by c (lock held).
 * Returns 0, or -1 with *msg set to the refusal.
 */
static int
server_load_limits(struct server *srv, struct conn *c, const struct graph *g,
    char **msg)
{
	uint64_t conn_bytes = g->weight_bytes;
	int n = 0;

	for (uint32_t i = 0; i < c->nmodels; i++)
		conn_bytes += c->models[i].model->graph->weight_bytes;
	if (c->nmodels >= config.max_models_per_conn)
		n = asprintf(msg, "this connection already holds %u models "
		    "(limit)", c->nmodels);
	else if (conn_bytes > config.max_weight_bytes_per_conn)
		n = asprintf(msg, "model weights of this connection would reach "
		    "%" PRIu64 " bytes (limit %" PRIu64 ")", conn_bytes,
		    config.max_weight_bytes_per_conn);
	else if (models_count(srv->models) >= config.max_models)
		n = asprintf(msg, "agxqd already holds %u models (limit)",
		    models_count(srv->models));
	else if (models_weight_bytes(srv->models) + g->weight_bytes >
	    config.max_weight_bytes)
		n = asprintf(msg, "model weights would exceed agxqd's limit of "
		    "%" PRIu64 " bytes", config.max_weight_bytes);
	else
		return 0;
	if (n < 0)
		server_oom();
	return -1;
}

/* Handles LoadModel: validate, share an identical model or load a new one. */
static void
server_load(struct server *srv, struct conn *c, const Agxq__LoadModel *lm)
{
	struct graph *g = NULL;
	struct model *m;
	struct request *w, *load;
	char *cause = NULL;
	int shared = 0;

	if (lm->graph == NULL) {
		conn_send_error(c, lm->request_id, AGXQ__ERROR_CODE__ERR_GRAPH,
		    "load model: no graph");
		return;
	}
	if (graph_from_proto(lm->graph, &config.glimits, &g, &cause) != 0) {
		log_info("conn %llu: model rejected: %s",
		    (unsigned long long)c->id, cause);
		conn_send_error(c, lm->request_id, AGXQ__ERROR_CODE__ERR_GRAPH,
		    "invalid graph: %s", cause);
		free(cause);
		return;
	}
	if ((w = request_new(REQUEST_LOAD, 0)) == NULL ||
	    (load = request_new(REQUEST_LOAD, 0)) == NULL)
		server_oom();
	pthread_mutex_lock(&srv->lock);
	if ((m = models_find_equal(srv->models, g, config.share_across_uids,
	    c->uid)) != NULL) {
		graph_free(g);
		shared = 1;
	} else if (server_load_limits(srv, c, g, &cause) != 0) {
		pthread_mutex_unlock(&srv->lock);
		graph_free(g);
		request_free(w);
		request_free(load);
		conn_send_error(c, lm->request_id, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "%s", cause);
		free(cause);
		return;
	} else {
		if ((m = models_add(srv->models, g, lm->name, c->uid)) == NULL)
			server_oom();
		log_info("model %llu (%s): %u nodes, %zu weight bytes, loading",
		    (unsigned long long)m->id, m->name, g->nnodes,
		    g->weight_bytes);
	}
	w->id = lm->request_id;
	w->conn = c;
	conn_ref(c);
	w->model = m;
	m->refs++;
	if (m->state == MODEL_READY) {
		pthread_mutex_unlock(&srv->lock);
		request_free(load);
		server_load_finish(srv, w, 0, NULL, 1);
		return;
	}
	w->rows = (uint32_t)shared; /* remembered for the reply */
	TAILQ_INSERT_TAIL(&m->waiters, w, entry);
	if (shared) {
		pthread_mutex_unlock(&srv->lock);
		request_free(load);
		return;
	}
	load->model = m;
	m->refs++;
	pthread_mutex_unlock(&srv->lock);
	executor_control(srv->ex, load);
}

/*
 * A model finished loading on the executor (or failed to): its waiters go
 * to the loops of their connections (server_done finishes them there).
 */
static void
server_load_done(struct server *srv, struct request *load)
{
	struct model *m = load->model;
	struct request_list waiters;
	struct request *w;

	if (load->status == 0)
		log_info("model %llu (%s) ready", (unsigned long long)m->id,
		    m->name);
	else
		log_warn("model %llu (%s) failed to load: %s",
		    (unsigned long long)m->id, m->name, load->cause);
	TAILQ_INIT(&waiters);
	pthread_mutex_lock(&srv->lock);
	if (load->status == 0)
		m->state = MODEL_READY;
	else {
		models_remove(srv->models, m);
		m->state = MODEL_FAILED;
	}
	TAILQ_CONCAT(&waiters, &m->waiters, entry);
	pthread_mutex_unlock(&srv->lock);
	TAILQ_FOREACH(w, &waiters, entry) {
		if (load->status != 0)
			request_fail(w, load->status, "%s", load->cause);
	}
	server_deliver(&waiters, srv);
	server_model_unref(srv, m);
	request_free(load);
}

/* Handles UnloadModel. */
static void
server_unload(struct server *srv, struct conn *c, const Agxq__UnloadModel *um)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__UnloadModelReply rep = AGXQ__UNLOAD_MODEL_REPLY__INIT;
	struct model *m;

	if ((m = conn_remove_model(c, um->model_id)) == NULL) {
		conn_send_error(c, um->request_id, AGXQ__ERROR_CODE__ERR_NOMODEL,
		    "unload: model %" PRIu64 " is not loaded on this connection",
		    um->model_id);
		return;
	}
	server_model_unref(srv, m);
	rep.request_id = um->request_id;
	env.body_case = AGXQ__ENVELOPE__BODY_UNLOAD_MODEL_REPLY;
	env.unload_model_reply = &rep;
	server_reply(c, &env);
}

/* Writes shape s as "[4, 256]" into buf. */
static const char *
server_shape_str(const int64_t *dims, size_t n, char *buf, size_t len)
{
	size_t off = 0;

	off += (size_t)snprintf(buf + off, len - off, "[");
	for (size_t i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%" PRId64,
		    i ? ", " : "", dims[i]);
	if (off < len)
		snprintf(buf + off, len - off, "]");
	return buf;
}

/*
 * Counts a mapping of size bytes (a region or a ring) against
 * --max-shm-bytes before it is made, so loops cannot overshoot. Returns 0,
 * or -1 having sent c an Error for request id.
 */
static int
server_shm_reserve(struct server *srv, struct conn *c, uint64_t id,
    uint64_t size, const char *what)
{
	pthread_mutex_lock(&srv->lock);
	if (size > config.max_shm_bytes - srv->shm_bytes) {
		pthread_mutex_unlock(&srv->lock);
		conn_send_error(c, id, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "a %s of %" PRIu64 " bytes would exceed agxqd's limit "
		    "of %" PRIu64 " mapped bytes", what, size,
		    config.max_shm_bytes);
		return -1;
	}
	srv->shm_regions++;
	srv->shm_bytes += size;
	pthread_mutex_unlock(&srv->lock);
	return 0;
}

/* Uncounts a mapping of size bytes (server_shm_reserve). */
static void
server_shm_release(struct server *srv, uint64_t size)
{
	pthread_mutex_lock(&srv->lock);
	srv->shm_regions--;
	srv->shm_bytes -= size;
	pthread_mutex_unlock(&srv->lock);
}

/*
 * Any thread: unmaps rg, through the executor when it is page-locked for
 * the device (unlocked there first). Also a ring's release hook.
 */
static void
server_region_unmap(struct region *rg, void *arg)
{
	struct server *srv = arg;
	struct request *r;

	if (rg->dev != 1 || srv->ex == NULL) {
		region_free(rg);
		return;
	}
	if ((r = request_new(REQUEST_UNMAP, 0)) == NULL)
		server_oom();
	r->region = rg;
	executor_control(srv->ex, r);
}

/* Drops one reference to rg; the last one unmaps it. */
static void
server_region_unref(struct server *srv, struct region *rg)
{
	if (--rg->refs > 0)
		return;
	server_shm_release(srv, rg->size);
	log_debug("region %llu unmapped (%llu bytes)",
	    (unsigned long long)rg->id, (unsigned long long)rg->size);
	server_region_unmap(rg, srv);
}

/* Drops the region references r holds. */
static void
server_request_unref_regions(struct server *srv, struct request *r)
{
	while (r->nregions > 0)
		server_region_unref(srv, r->regions[--r->nregions]);
}

/*
 * Finds the region ref names on c, checks the slice (exactly want bytes
 * unless want is 0) and takes a reference for r. Returns 0 with *out, or an
 * error code with *msg set.
 */
static int
server_ref_region(struct conn *c, struct request *r, const Agxq__ShmRef *ref,
    uint64_t want, const char *what, struct region **out, char **msg)
{
	struct region *rg;
	int code;

	if ((rg = conn_find_region(c, ref->region_id)) == NULL) {
		if (asprintf(msg, "%s: shared memory region %" PRIu64 " %s",
		    what, ref->region_id, ref->region_id != 0 &&
		    ref->region_id < c->next_region_id ? "was released" :
		    "is not registered on this connection") < 0)
			*msg = NULL;
		return AGXQ__ERROR_CODE__ERR_INVAL;
	}
	if ((code = region_check_ref(rg, ref, want, what, msg)) != 0)
		return code;
	/* server_infer made room for every input and output. */
	rg->refs++;
	r->regions[r->nregions++] = rg;
	*out = rg;
	return 0;
}

/*
 * Checks input i of an Infer against model m and fills r's shape and data
 * pointer. Returns 0, or an error code with *msg set.
 */
static int
server_check_input(struct conn *c, const struct model *m, uint32_t i,
    const Agxq__Tensor *t, struct request *r, char **msg)
{
	struct graph_shape *s = &r->in_shapes[i];
	char sbuf[128];
	uint64_t n = 1;
	char *cause = NULL;

	if (t->dtype != AGXQ__DTYPE__DTYPE_FLOAT32) {
		if (asprintf(msg, "input %u: dtype %d is not supported "
		    "(float32 only)", i, (int)t->dtype) < 0)
			*msg = NULL;
		return AGXQ__ERROR_CODE__ERR_DTYPE;
	}
	if (t->n_shape < 1 || t->n_shape > GRAPH_MAX_DIMS) {
		if (asprintf(msg, "input %u: %zu dimensions (1 to %d allowed)",
		    i, t->n_shape, GRAPH_MAX_DIMS) < 0)
			*msg = NULL;
		return AGXQ__ERROR_CODE__ERR_SHAPE;
	}
	s->ndim = (int)t->n_shape;
	for (size_t d = 0; d < t->n_shape; d++) {
		if (t->shape[d] < 1 || t->shape[d] > config.glimits.max_dim) {
			if (asprintf(msg, "input %u: shape %s has a dimension "
			    "out of range", i, server_shape_str(t->shape,
			    t->n_shape, sbuf, sizeof sbuf)) < 0)
				*msg = NULL;
			return AGXQ__ERROR_CODE__ERR_SHAPE;
		}
		s->dim[d] = t->shape[d];
		n *= (uint64_t)t->shape[d];
		if (n > config.glimits.max_elements) {
			if (asprintf(msg, "input %u: shape %s is over the size "
			    "limit", i, server_shape_str(t->shape, t->n_shape,
			    sbuf, sizeof sbuf)) < 0)
				*msg = NULL;
			return AGXQ__ERROR_CODE__ERR_LIMIT;
		}
	}
	if (graph_check_input(m->graph, i, s, &cause) != 0) {
		*msg = cause;
		return AGXQ__ERROR_CODE__ERR_SHAPE;
	}
	if (t->shm != NULL && t->data.len != 0) {
		if (asprintf(msg, "input %u: both inline data and a shared "
		    "memory slice", i) < 0)
			*msg = NULL;
		return AGXQ__ERROR_CODE__ERR_INVAL;
	}
	if (t->shm == NULL && n * sizeof(float) != t->data.len) {
		if (asprintf(msg, "input %u: %zu bytes of data for shape %s "
		    "(%" PRIu64 " expected)", i, t->data.len,
		    server_shape_str(t->shape, t->n_shape, sbuf, sizeof sbuf),
		    n * sizeof(float)) < 0)
			*msg = NULL;
		return AGXQ__ERROR_CODE__ERR_SHAPE;
	}
	if (i > 0 && s->dim[0] != r->in_shapes[0].dim[0]) {
		if (asprintf(msg, "input %u: batch of %" PRId64 " rows, input 0 "
		    "has %" PRId64, i, s->dim[0], r->in_shapes[0].dim[0]) < 0)
			*msg = NULL;
		return AGXQ__ERROR_CODE__ERR_SHAPE;
	}
	if (t->shm != NULL) {
		struct region *rg;
		char what[32];
		int code;

		snprintf(what, sizeof what, "input %u", i);
		if ((code = server_ref_region(c, r, t->shm, n * sizeof(float),
		    what, &rg, msg)) != 0)
			return code;
		r->in[i] = (const float *)(const void *)(rg->base +
		    t->shm->offset);
		return 0;
	}
	r->in[i] = (const float *)(const void *)t->data.data;
	return 0;
}

/*
 * Checks Infer's output regions, one per output of m, and fills r->outs.
 * Returns 0, or an error code with *msg set.
 */
static int
server_check_outputs(struct conn *c, const struct model *m,
    const Agxq__Infer *in, struct request *r, char **msg)
{
	struct region *rg;
	char what[32];
	int code;

	if (in->n_output_refs == 0)
		return 0;
	if (in->n_output_refs != m->graph->noutputs) {
		if (asprintf(msg, "model %s has %u outputs, the request names "
		    "%zu output regions", m->name, m->graph->noutputs,
		    in->n_output_refs) < 0)
			*msg = NULL;
		return AGXQ__ERROR_CODE__ERR_INVAL;
	}
	if ((r->outs = calloc(in->n_output_refs, sizeof *r->outs)) == NULL)
		server_oom();
	r->nouts = (uint32_t)in->n_output_refs;
	for (uint32_t j = 0; j < r->nouts; j++) {
		const Agxq__ShmRef *o = in->output_refs[j];

		snprintf(what, sizeof what, "output %u", j);
		if ((code = server_ref_region(c, r, o, 0, what, &rg, msg)) != 0)
			return code;
		/* Writing over an input would corrupt the request itself. */
		for (uint32_t i = 0; i < r->ninputs; i++) {
			const Agxq__ShmRef *s = in->inputs[i]->shm;

			if (s == NULL || s->region_id != o->region_id ||
			    o->length == 0 || s->length == 0 ||
			    o->offset >= s->offset + s->length ||
			    s->offset >= o->offset + o->length)
				continue;
			if (asprintf(msg, "output %u: shared memory slice "
			    "overlaps input %u", j, i) < 0)
				*msg = NULL;
			return AGXQ__ERROR_CODE__ERR_INVAL;
		}
		r->outs[j].dst = (float *)(void *)(rg->base + o->offset);
		r->outs[j].cap = o->length;
		r->outs[j].region_id = o->region_id;
		r->outs[j].offset = o->offset;
	}
	return 0;
}

/* Whether an Infer names any shared memory. */
static int
server_infer_uses_shm(const Agxq__Infer *in)
{
	if (in->n_output_refs > 0)
		return 1;
	for (size_t i = 0; i < in->n_inputs; i++) {
		if (in->inputs[i]->shm != NULL)
			return 1;
	}
	return 0;
}

/*
 * Answers ring slot of c with frame (taken); also sends it on the socket
 * when it does not fit the slot or the client waits there.
 */
static void
server_ring_reply(struct conn *c, int32_t slot, uint8_t *frame, size_t len,
    size_t raw_len)
{
	uint8_t *packed;
	uint64_t id;

	server_traffic(c->srv, c->loop);
	c->srv->loops[c->loop].ring_inflight--;
	if (!ring_complete(c->ring, (uint32_t)slot, frame, len)) {
		free(frame);
		return;
	}
	/* A raw reply goes on the socket packed, as every frame there. */
	switch (rawinfer_reply_pack(frame, len, config.compress_threshold,
	    &config.limits, &packed, &len, &raw_len, &id)) {
	case 0:
		free(frame);
		frame = packed;
		break;
	case -1:
		free(frame);
		conn_send_error(c, id, AGXQ__ERROR_CODE__ERR_TOOBIG,
		    "reply does not fit in one frame");
		return;
	}
	conn_send(c, frame, len, raw_len);
}

/* Sends an Error for request id, in ring slot slot unless it is -1. */
static void __attribute__((format(printf, 5, 6)))
server_infer_error(struct conn *c, int32_t slot, uint64_t id, int code,
    const char *fmt, ...)
{
	va_list ap;
	uint8_t *frame;
	size_t len;
	int rc;

	va_start(ap, fmt);
	rc = conn_error_framev(c, id, code, fmt, ap, &frame, &len);
	va_end(ap);
	if (rc != 0) {
		/* A slot must get its reply; the socket can do without. */
		if (slot >= 0)
			server_oom();
		return;
	}
	if (slot < 0)
		conn_send(c, frame, len, 0);
	else
		server_ring_reply(c, slot, frame, len, 0);
}

/* Answers request r, which the executor refused, and frees it. */
static void
server_infer_refused(struct server *srv, struct request *r)
{
	struct conn *c = r->conn;
	int stopping;

	c->inflight--;
	server_model_unref(srv, r->model);
	server_request_unref_regions(srv, r);
	pthread_mutex_lock(&srv->lock);
	stopping = srv->shutting_down;
	pthread_mutex_unlock(&srv->lock);
	/* Come in on another loop while the executor winds down. */
	if (stopping)
		server_infer_error(c, r->ring_slot, r->id, srv->wind_code, "%s",
		    srv->wind_msg);
	else
		server_infer_error(c, r->ring_slot, r->id,
		    AGXQ__ERROR_CODE__ERR_BUSY,
		    "agxqd is busy: %u requests queued (limit)",
		    config.max_queue);
	conn_unref(c);
	request_free(r);
}

/*
 * Handles Infer in: validates and queues. in lies in env (an unpacked
 * Envelope, whose ownership it takes), or, with raw set and env NULL, is
 * the view of a raw Infer in its ring slot, where its inputs stay. slot is
 * the ring slot it came in, or -1 for the socket: the reply goes back the
 * same way, raw for a raw Infer.
 * With defer set, a valid request goes there instead of to the executor,
 * for the caller to submit with others (server_loop_submit).
 */
static void
server_infer(struct server *srv, struct conn *c, const Agxq__Infer *in,
    Agxq__Envelope *env, int raw, int32_t slot,
    struct request_list *defer)
{
	struct model *m;
	struct request *r;
	char *msg = NULL;
	uint32_t busy;
	int code;

	if ((m = conn_find_model(c, in->model_id)) == NULL) {
		server_infer_error(c, slot, in->request_id, AGXQ__ERROR_CODE__ERR_NOMODEL,
		    "model %" PRIu64 " is not loaded on this connection",
		    in->model_id);
		goto out_free;
	}
	/* Those answered in their slots are the client's already. */
	if ((busy = c->inflight - atomic_load(&c->answered)) >=
	    config.max_inflight) {
		executor_count_busy(srv->ex, m);
		server_infer_error(c, slot, in->request_id, AGXQ__ERROR_CODE__ERR_BUSY,
		    "%u requests already in flight on this connection (limit)",
		    busy);
		goto out_free;
	}
	if (in->n_inputs != m->graph->ninputs) {
		server_infer_error(c, slot, in->request_id, AGXQ__ERROR_CODE__ERR_SHAPE,
		    "model %s takes %u inputs, request has %zu", m->name,
		    m->graph->ninputs, in->n_inputs);
		goto out_free;
	}
	if ((r = request_new(REQUEST_INFER, m->graph->ninputs)) == NULL)
		server_oom();
	if (server_infer_uses_shm(in)) {
		r->regions = calloc(m->graph->ninputs + m->graph->noutputs,
		    sizeof *r->regions);
		if (r->regions == NULL)
			server_oom();
	}
	for (uint32_t i = 0; i < m->graph->ninputs; i++) {
		if ((code = server_check_input(c, m, i, in->inputs[i], r,
		    &msg)) != 0)
			goto fail_request;
	}
	if ((code = server_check_outputs(c, m, in, r, &msg)) != 0)
		goto fail_request;
	r->id = in->request_id;
	r->priority = in->priority;
	r->rows = (uint32_t)r->in_shapes[0].dim[0];
	r->t_in_ns = c->t_frame_ns;
	r->t_enqueue_ns = request_now_ns();
	if (in->timeout_us != 0)
		r->deadline_ns = r->t_enqueue_ns + in->timeout_us * 1000;
	r->env = env;
	r->raw = raw;
	r->conn = c;
	r->ring_slot = slot;
	r->ring = slot >= 0 ? c->ring : NULL;
	r->model = m;
	/* Before the submission: the executor may finish r at once. */
	conn_ref(c);
	server_model_ref(srv, m);
	c->inflight++;
	if (defer != NULL)
		TAILQ_INSERT_TAIL(defer, r, entry);
	else if (executor_submit(srv->ex, r) != 0)
		server_infer_refused(srv, r);
	return;

fail_request:
	server_infer_error(c, slot, in->request_id, code, "%s",
	    msg != NULL ? msg : "bad input");
	free(msg);
	server_request_unref_regions(srv, r);
	request_free(r);
out_free:
	codec_envelope_free(env);
}

/* Handles RegisterRegion: maps the descriptor that came with the frame. */
static void
server_register_region(struct server *srv, struct conn *c,
    const Agxq__RegisterRegion *rr)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__RegisterRegionReply rep = AGXQ__REGISTER_REGION_REPLY__INIT;
	struct region *rg;
	char *cause = NULL;
	int fd, code;

	if ((fd = conn_take_request_fd(c, rr->request_id,
	    "RegisterRegion")) == -1)
		return;
	if (c->nregions >= config.max_regions) {
		conn_send_error(c, rr->request_id, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "this connection already has %u shared memory regions "
		    "(limit %u)", c->nregions, config.max_regions);
		goto out_close;
	}
	if (server_shm_reserve(srv, c, rr->request_id, rr->size,
	    "region") != 0)
		goto out_close;
	if (region_map(fd, rr->size, c->next_region_id, &rg, &code,
	    &cause) != 0) {
		server_shm_release(srv, rr->size);
		log_info("conn %llu: region refused: %s",
		    (unsigned long long)c->id, cause);
		conn_send_error(c, rr->request_id, code, "%s",
		    cause != NULL ? cause : "region refused");
		free(cause);
		goto out_close;
	}
	if (conn_add_region(c, rg) != 0)
		server_oom();
	c->next_region_id++;
	log_debug("conn %llu: region %llu mapped (%llu bytes)",
	    (unsigned long long)c->id, (unsigned long long)rg->id,
	    (unsigned long long)rg->size);
	rep.request_id = rr->request_id;
	rep.region_id = rg->id;
	env.body_case = AGXQ__ENVELOPE__BODY_REGISTER_REGION_REPLY;
	env.register_region_reply = &rep;
	server_reply(c, &env);
out_close:
	close(fd);
}

/* Handles ReleaseRegion: unmaps once the requests using it finish. */
static void
server_release_region(struct server *srv, struct conn *c,
    const Agxq__ReleaseRegion *rr)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__ReleaseRegionReply rep = AGXQ__RELEASE_REGION_REPLY__INIT;
	struct region *rg;

	if ((rg = conn_remove_region(c, rr->region_id)) == NULL) {
		conn_send_error(c, rr->request_id, AGXQ__ERROR_CODE__ERR_INVAL,
		    "release: shared memory region %" PRIu64 " %s",
		    rr->region_id, rr->region_id != 0 &&
		    rr->region_id < c->next_region_id ? "was released" :
		    "is not registered on this connection");
		return;
	}
	server_region_unref(srv, rg);
	rep.request_id = rr->request_id;
	env.body_case = AGXQ__ENVELOPE__BODY_RELEASE_REGION_REPLY;
	env.release_region_reply = &rep;
	server_reply(c, &env);
}

/*
 * A raw Infer frame in ring slot of c, its payload plen bytes: read in
 * place (rawinfer_infer_read copies what it checks) and run, its inputs
 * left in the slot.
 */
static void
server_ring_take_raw(struct conn *c, uint32_t slot, uint64_t id,
    const uint8_t *frame, uint32_t plen)
{
	struct server *srv = c->srv;
	struct rawinfer_view v;
	const Agxq__Infer *in;
	char *cause = NULL;

	if (rawinfer_infer_read(frame + CODEC_HEADER_SIZE, plen, &v, &in,
	    &cause) != 0) {
		server_infer_error(c, (int32_t)slot, id,
		    AGXQ__ERROR_CODE__ERR_PROTO, "ring slot %u: %s", slot,
		    cause != NULL ? cause : "out of memory");
		free(cause);
	} else {
		srv->ctr.ring_requests++;
		srv->ctr.ring_raw++;
		server_infer(srv, c, in, NULL, 1, (int32_t)slot,
		    &srv->loops[c->loop].taken);
	}
	rawinfer_view_free(&v);
}

/*
 * Ring slot frame taken by ring_poll, where it lies in the slot: runs it
 * as an Infer, read in place when raw, else copied out and decoded.
 */
static void
server_ring_take(void *arg, uint32_t slot, uint64_t id, uint64_t posted_ns,
    uint8_t *frame, size_t len)
{
	struct conn *c = arg;
	struct server *srv = c->srv;
	Agxq__Envelope *env = NULL;
	uint8_t head[CODEC_HEADER_SIZE], *copy = NULL;
	uint32_t plen, flags;
	char *cause = NULL;
	int code = AGXQ__ERROR_CODE__ERR_PROTO;

	server_traffic(srv, c->loop);
	srv->loops[c->loop].ring_inflight++; /* until server_ring_reply */
	if (frame == NULL) {
		server_infer_error(c, (int32_t)slot, id,
		    AGXQ__ERROR_CODE__ERR_PROTO, "ring slot %u: frame length %zu "
		    "out of range (1 to %u)", slot, len,
		    c->ring->slot_size - RING_SLOT_HEADER);
		return;
	}
	srv->ctr.bytes_in += len;
	c->t_frame_ns = request_now_ns();
	/* The client's clock is ours (CLOCK_MONOTONIC); a minute is a lie. */
	if (posted_ns != 0 && posted_ns <= c->t_frame_ns &&
	    c->t_frame_ns - posted_ns < 60000000000ull)
		models_sample(&srv->loops[c->loop].ring_wait,
		    (c->t_frame_ns - posted_ns) / 1000);
	/* The client can write the slot meanwhile: each word read once. */
	memcpy(head, frame, len < sizeof head ? len : sizeof head);
	if (codec_ring_header_parse(head, len, &config.limits, &plen, &flags,
	    &code, &cause) != CODEC_OK || len != CODEC_HEADER_SIZE + plen) {
		server_infer_error(c, (int32_t)slot, id, code, "ring slot %u: %s",
		    slot, cause != NULL ? cause : "frame length does not match "
		    "its header");
		goto out;
	}
	if (flags & CODEC_FLAG_RAW) {
		server_ring_take_raw(c, slot, id, frame, plen);
		return;
	}
	if ((copy = malloc(len)) == NULL)
		server_oom();
	memcpy(copy, frame, len);
	if (codec_decode(copy + CODEC_HEADER_SIZE, plen, flags,
	    &config.limits, &env, &code, &cause) != 0) {
		server_infer_error(c, (int32_t)slot, id, code, "ring slot %u: %s",
		    slot, cause);
		goto out;
	}
	if (env->body_case != AGXQ__ENVELOPE__BODY_INFER) {
		server_infer_error(c, (int32_t)slot, id,
		    AGXQ__ERROR_CODE__ERR_PROTO, "ring slot %u: only an infer "
		    "may be posted to a ring, not %s", slot,
		    codec_body_name(env->body_case));
		codec_envelope_free(env);
		goto out;
	}
	srv->ctr.ring_requests++;
	server_infer(srv, c, env->infer, env, 0, (int32_t)slot,
	    &srv->loops[c->loop].taken);
out:
	free(cause);
	free(copy);
}

/*
 * Whether clients should post to their rings now. Each client posting
 * polls its slot; with more such clients than cores, they took the cores
 * agxqd needs, and 32 client processes on a 16-core host ran slower
 * through rings than through the socket (docs/GPU.md). Beyond the limit
 * every ring says agxqd is not polling, so clients use the socket.
 */
static int
server_rings_allowed(struct server *srv)
{
	return atomic_load(&srv->nrings) <= srv->ring_limit;
}

/* Handles AttachRing: maps the ring that came with the frame. */
static void
server_attach_ring(struct server *srv, struct conn *c,
    const Agxq__AttachRing *ar)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__AttachRingReply rep = AGXQ__ATTACH_RING_REPLY__INIT;
	struct ring *ring;
	uint64_t size = ring_area_size(ar->slots, ar->slot_size);
	char *cause = NULL;
	int fd, code;

	if ((fd = conn_take_request_fd(c, ar->request_id, "AttachRing")) ==
	    -1)
		return;
	if (c->ring != NULL) {
		conn_send_error(c, ar->request_id, AGXQ__ERROR_CODE__ERR_INVAL,
		    "this connection already has a ring");
		goto out_close;
	}
	if (config.max_regions == 0) {
		conn_send_error(c, ar->request_id,
		    AGXQ__ERROR_CODE__ERR_UNSUPPORTED,
		    "shared memory is off (--max-regions 0)");
		goto out_close;
	}
	if (server_shm_reserve(srv, c, ar->request_id, size, "ring") != 0)
		goto out_close;
	if (ring_attach(fd, ar->slots, ar->slot_size, &ring, &code,
	    &cause) != 0) {
		server_shm_release(srv, size);
		log_info("conn %llu: ring refused: %s",
		    (unsigned long long)c->id, cause);
		conn_send_error(c, ar->request_id, code, "%s",
		    cause != NULL ? cause : "ring refused");
		free(cause);
		goto out_close;
	}
	/* The executor may lock it for the device, to answer in it. */
	ring->release = server_region_unmap;
	ring->release_arg = srv;
	c->ring = ring;
	atomic_fetch_add(&srv->nrings, 1);
	ring_set_awake(ring, ioloop_polling(srv->loops[c->loop].io) &&
	    server_rings_allowed(srv));
	log_debug("conn %llu: ring of %u slots of %u bytes attached",
	    (unsigned long long)c->id, ar->slots, ar->slot_size);
	rep.request_id = ar->request_id;
	env.body_case = AGXQ__ENVELOPE__BODY_ATTACH_RING_REPLY;
	env.attach_ring_reply = &rep;
	server_reply(c, &env);
out_close:
	close(fd);
}

/* p50 and p99 of the samples at offset off of every loop. */
static void
server_loop_pcts(struct server *srv, size_t off, uint64_t *p50,
    uint64_t *p99)
{
	struct tsamples **t;

	if ((t = calloc(srv->nloops, sizeof *t)) == NULL)
		server_oom();
	for (uint32_t i = 0; i < srv->nloops; i++)
		t[i] = (struct tsamples *)((char *)&srv->loops[i] + off);
	models_samples_pcts(t, srv->nloops, p50, p99);
	free(t);
}

/* Answers a StatsRequest. */
static void
server_stats(struct server *srv, struct conn *c, const Agxq__StatsRequest *sr)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__Stats st = AGXQ__STATS__INIT;
	Agxq__ModelStats *ms = NULL, **msp = NULL;
	struct model_stats snap;
	struct model *m;
	uint8_t *frame;
	size_t len;
	uint32_t n, k = 0;

	/* Held until encoded: the reply points into the models. */
	pthread_mutex_lock(&srv->lock);
	n = models_count(srv->models);
	if (n > 0) {
		ms = calloc(n, sizeof *ms);
		msp = calloc(n, sizeof *msp);
		if (ms == NULL || msp == NULL)
			server_oom();
	}
	for (m = models_first(srv->models); m != NULL; m = models_next(m)) {
		Agxq__ModelStats *o = &ms[k];

		agxq__model_stats__init(o);
		executor_model_stats(srv->ex, m, &snap);
		o->model_id = m->id;
		o->name = m->name;
		o->refs = m->refs;
		o->requests = snap.requests;
		o->batches = snap.batches;
		o->rows = snap.rows;
		o->errors = snap.errors;
		o->timeouts = snap.timeouts;
		o->rejected_busy = snap.rejected_busy;
#define P(k, f) models_pcts(snap.t_us[k], snap.nt, &o->f##_p50_us, \
    &o->f##_p99_us)
		P(MODEL_T_QUEUE, queue);
		P(MODEL_T_EXEC, exec);
		P(MODEL_T_IN, in);
		P(MODEL_T_STAGE, stage);
		P(MODEL_T_DEVICE, device);
		P(MODEL_T_REPLY, reply);
#undef P
		o->weight_bytes = m->graph->weight_bytes;
		o->queued = snap.queued;
		msp[k++] = o;
	}
	st.request_id = sr->request_id;
	st.server_version = (char *)AGXQ_VERSION_STRING;
	st.backend = (char *)executor_backend(srv->ex);
	st.pid = config.supervisor_pid;
	st.worker_pid = getpid();
	st.loop_busy_us = srv->ctr.busy_ns / 1000;
	st.io_threads = srv->nloops;
	st.ring_requests = srv->ctr.ring_requests;
	st.ring_answered = srv->ctr.ring_answered;
	st.ring_raw = srv->ctr.ring_raw;
	st.ring_answered_early = executor_answered_early(srv->ex);
	/* The loops' times: ring waits and replies handed out. */
	server_loop_pcts(srv, offsetof(struct server_loop, ring_wait),
	    &st.ring_wait_p50_us, &st.ring_wait_p99_us);
	server_loop_pcts(srv, offsetof(struct server_loop, out),
	    &st.out_p50_us, &st.out_p99_us);
	st.executor_busy_us = executor_busy_ns(srv->ex) / 1000;
	st.executor_wait_us = executor_wait_ns(srv->ex) / 1000;
	st.worker_restarts = config.worker_restarts;
	st.uptime_us = (request_now_ns() - srv->started_ns) / 1000;
	st.connections = srv->nconns;
	st.frames_in = srv->ctr.frames_in;
	st.frames_out = srv->ctr.frames_out;
	st.bytes_in = srv->ctr.bytes_in;
	st.bytes_out = srv->ctr.bytes_out;
	st.bytes_in_raw = srv->ctr.bytes_in_raw;
	st.bytes_out_raw = srv->ctr.bytes_out_raw;
	st.shm_regions = srv->shm_regions;
	st.shm_bytes = srv->shm_bytes;
	st.backend_calls = executor_backend_calls(srv->ex);
	st.backend_foreign_calls = executor_foreign_calls(srv->ex);
	st.max_batch = config.max_batch;
	st.max_delay_us = config.max_delay_us;
	st.n_models = k;
	st.models = msp;
	env.body_case = AGXQ__ENVELOPE__BODY_STATS;
	env.stats = &st;
	if (codec_encode(&env, 0, &config.limits, &frame, &len, NULL) != 0)
		server_oom();
	pthread_mutex_unlock(&srv->lock);
	conn_send(c, frame, len, 0);
	free(ms);
	free(msp);
}

/* Handles one decoded message from c. */
void
server_dispatch(struct server *srv, struct conn *c, Agxq__Envelope *env)
{
	if (c->state == CONN_HANDSHAKE &&
	    env->body_case != AGXQ__ENVELOPE__BODY_HELLO) {
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_PROTO,
		    "expected hello first, got %s",
		    codec_body_name(env->body_case));
		conn_drain(c);
		codec_envelope_free(env);
		return;
	}
	switch (env->body_case) {
	case AGXQ__ENVELOPE__BODY_HELLO:
		server_hello(srv, c, env->hello);
		break;
	case AGXQ__ENVELOPE__BODY_LOAD_MODEL:
		server_load(srv, c, env->load_model);
		break;
	case AGXQ__ENVELOPE__BODY_UNLOAD_MODEL:
		server_unload(srv, c, env->unload_model);
		break;
	case AGXQ__ENVELOPE__BODY_INFER:
		server_infer(srv, c, env->infer, env, 0, -1, NULL);
		return; /* env is the request's now, or freed */
	case AGXQ__ENVELOPE__BODY_ATTACH_RING:
		server_attach_ring(srv, c, env->attach_ring);
		break;
	case AGXQ__ENVELOPE__BODY_RING_KICK:
		if (c->ring != NULL) {
			(void)ring_poll(c->ring, 1, server_ring_take, c);
			server_loop_submit(srv, &srv->loops[c->loop]);
		}
		break;
	case AGXQ__ENVELOPE__BODY_REGISTER_REGION:
		server_register_region(srv, c, env->register_region);
		break;
	case AGXQ__ENVELOPE__BODY_RELEASE_REGION:
		server_release_region(srv, c, env->release_region);
		break;
	case AGXQ__ENVELOPE__BODY_STATS_REQUEST:
		server_stats(srv, c, env->stats_request);
		break;
	default:
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_PROTO,
		    "unexpected message %s from a client",
		    codec_body_name(env->body_case));
		break;
	}
	codec_envelope_free(env);
}

/* Whether finished request r may be answered in its ring slot at once. */
static int
server_answerable(const struct request *r)
{
	return r->kind == REQUEST_INFER && r->ring != NULL &&
	    r->nregions == 0 && (r->reply != NULL || r->slot_reply != NULL);
}

/*
 * Any thread: answers finished ring request r (server_answerable, its
 * model let go already) in its slot now, rather than once its loop takes
 * it from the mailbox (the loop then only does the books, in server_done).
 */
static void
server_answer_early(struct server *srv, struct request *r)
{
	/*
	 * Counted before the client can see the reply, and its next request
	 * or Stats; taken back if the slot is the loop's to answer after all.
	 * r holds its conn; the count is atomic, the conn's other fields are
	 * its loop's.
	 */
	atomic_fetch_add(&r->conn->answered, 1);
	srv->ctr.ring_answered++;
	if (r->slot_reply != NULL ? ring_answer_written(r->ring,
	    (uint32_t)r->ring_slot, r->slot_reply_len) == 0 :
	    ring_answer(r->ring, (uint32_t)r->ring_slot, r->reply,
	    r->reply_len) == 0) {
		r->answered = 1;
		return;
	}
	srv->ctr.ring_answered--;
	atomic_fetch_sub(&r->conn->answered, 1);
	/*
	 * The client waits on the socket now: the loop answers there (and in
	 * the slot) from a copy. It leaves the slot alone until then.
	 */
	if (r->slot_reply != NULL) {
		if ((r->reply = malloc(r->slot_reply_len)) == NULL)
			server_oom();
		memcpy(r->reply, r->slot_reply, r->slot_reply_len);
		r->reply_len = r->slot_reply_len;
		r->reply_raw_len = r->reply_len - CODEC_HEADER_SIZE;
		r->slot_reply = NULL;
		r->slot_reply_len = 0;
	}
}

/*
 * Any thread (the executor's mostly): answers what it can in ring slots,
 * and hands each finished request to the loop of its connection; the
 * executor's own loads go to the main loop. As server_done does, a
 * request lets go of its model before its client can see the reply; the
 * requests of a batch share one, dropped under one lock.
 */
static void
server_deliver(struct request_list *list, void *arg)
{
	struct server *srv = arg;
	struct request_list each[CONFIG_MAX_IO_THREADS];
	struct request *r;
	struct model *m = NULL;
	uint32_t n = 0;

	TAILQ_FOREACH(r, list, entry) {
		if (!server_answerable(r))
			continue;
		if (r->model != m) {
			server_model_drop(srv, m, n);
			m = r->model;
			n = 0;
		}
		n++;
		r->model = NULL;
	}
	server_model_drop(srv, m, n);
	for (uint32_t i = 0; i < srv->nloops; i++)
		TAILQ_INIT(&each[i]);
	while ((r = TAILQ_FIRST(list)) != NULL) {
		TAILQ_REMOVE(list, r, entry);
		if (server_answerable(r))
			server_answer_early(srv, r);
		TAILQ_INSERT_TAIL(&each[r->conn != NULL ? r->conn->loop : 0], r,
		    entry);
	}
	for (uint32_t i = 0; i < srv->nloops; i++)
		ioloop_deliver(srv->loops[i].io, &each[i]);
}

/* Loop thread of r's connection: sends a finished request's reply. */
static void
server_done(struct request *r, void *arg)
{
	struct server *srv = arg;
	struct conn *c = r->conn;
	uint64_t t0 = request_now_ns();

	if (r->kind == REQUEST_LOAD) {
		if (c == NULL)
			server_load_done(srv, r);
		else
			server_load_finish(srv, r, r->status, r->cause,
			    (int)r->rows);
		return;
	}
	/* Answered in its slot: the client waited for no loop. */
	if (r->answered)
		models_sample(&srv->loops[c->loop].out, 0);
	else if (r->t_reply_ns != 0 && t0 > r->t_reply_ns)
		models_sample(&srv->loops[c->loop].out,
		    (t0 - r->t_reply_ns) / 1000);
	/*
	 * The request lets go of its model and regions before its client
	 * can see the reply: stats read on another loop right after it
	 * count only what is still held.
	 */
	server_request_unref_regions(srv, r);
	server_model_unref(srv, r->model);
	r->model = NULL;
	if (r->answered) {
		server_traffic(srv, c->loop);
		srv->loops[c->loop].ring_inflight--;
		ring_release(c->ring, (uint32_t)r->ring_slot);
		atomic_fetch_sub(&c->answered, 1);
	} else if (r->ring_slot >= 0) {
		server_ring_reply(c, r->ring_slot, r->reply, r->reply_len,
		    r->reply_len != r->reply_raw_len + CODEC_HEADER_SIZE ?
		    r->reply_raw_len : 0);
		r->reply = NULL;
	} else if (c->state == CONN_READY || c->state == CONN_DRAINING) {
		conn_send(c, r->reply, r->reply_len,
		    r->reply_len != r->reply_raw_len + CODEC_HEADER_SIZE ?
		    r->reply_raw_len : 0);
		r->reply = NULL;
	}
	if (--c->inflight == 0 && c->state == CONN_READY)
		conn_idle(c);
	conn_unref(c);
	request_free(r);
	srv->ctr.busy_ns += request_now_ns() - t0;
}

/* Told by conn when c's socket has closed: releases what c holds. */
void
server_conn_closed(struct server *srv, struct conn *c)
{
	uint32_t left;
	int finish;

	TAILQ_REMOVE(&srv->loops[c->loop].conns, c, entry);
	atomic_fetch_sub(&srv->loops[c->loop].nconns, 1);
	pthread_mutex_lock(&srv->lock);
	left = --srv->nconns;
	finish = srv->shutting_down && left == 0 && !srv->finished;
	pthread_mutex_unlock(&srv->lock);
	log_debug("conn %llu closed; %u connections", (unsigned long long)c->id,
	    left);
	if (srv->ex != NULL)
		executor_cancel_conn(srv->ex, c);
	while (c->nmodels > 0) {
		/* The last unref may free m (on the executor): no m->id after it. */
		struct conn_model cm = c->models[--c->nmodels];

		while (cm.count-- > 0)
			server_model_unref(srv, cm.model);
	}
	/* Requests still running keep their regions mapped until done. */
	if (c->ring != NULL) {
		server_shm_release(srv, ring_bytes(c->ring));
		atomic_fetch_sub(&srv->nrings, 1);
	}
	while (c->nregions > 0)
		server_region_unref(srv, c->regions[--c->nregions]);
	conn_unref(c); /* the list's reference */
	if (finish)
		ioloop_post(srv->loops[0].io, server_finish_task, srv, 0);
}

/*
 * On the loop chosen for it: serves an accepted socket, or refuses it (not
 * allowed, too many connections, shutting down) with an error.
 */
static void
server_adopt_task(void *arg, intptr_t val)
{
	struct server *srv = arg;
	struct server_loop *sl;
	struct conn *c;
	uint32_t n, i = (uint32_t)(val >> 32);
	int fd = (int)(val & 0xffffffff), stopping;

	sl = &srv->loops[i];
	pthread_mutex_lock(&srv->lock);
	if (srv->finished) {
		pthread_mutex_unlock(&srv->lock);
		atomic_fetch_sub(&sl->nconns, 1);
		close(fd);
		return;
	}
	n = ++srv->nconns;
	stopping = srv->shutting_down;
	pthread_mutex_unlock(&srv->lock);
	if ((c = conn_new(srv, ioloop_base(sl->io), fd,
	    atomic_fetch_add(&srv->next_conn_id, 1), i)) == NULL) {
		log_warn("out of memory accepting a connection");
		atomic_fetch_sub(&sl->nconns, 1);
		pthread_mutex_lock(&srv->lock);
		srv->nconns--;
		pthread_mutex_unlock(&srv->lock);
		return;
	}
	TAILQ_INSERT_TAIL(&sl->conns, c, entry);
	if (!config_peer_allowed(c->uid, c->gid)) {
		log_warn("connection from pid %d refused: uid %d gid %d is not "
		    "allowed (--allow-uid, --allow-gid)", (int)c->pid,
		    (int)c->uid, (int)c->gid);
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_PERM,
		    "uid %d is not allowed to use this agxqd", (int)c->uid);
		conn_drain(c);
		return;
	}
	if (n > config.max_connections) {
		log_warn("connection from pid %d refused: %u connections "
		    "(limit)", (int)c->pid, config.max_connections);
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "too many connections (limit %u)", config.max_connections);
		conn_drain(c);
		return;
	}
	if (stopping) {
		conn_send_error(c, 0, srv->wind_code, "%s", srv->wind_msg);
		conn_drain(c);
		return;
	}
	log_debug("conn %llu: accepted on loop %u (pid %d, uid %d)",
	    (unsigned long long)c->id, i, (int)c->pid, (int)c->uid);
}

/*
 * The loop for a new connection: the first with fewer than
 * --conns-per-io-thread, else the one with the fewest. A few busy clients
 * are served best by one loop (the others would only take cores polling);
 * more would keep it busy and their posted requests would wait for it
 * (docs/GPU.md).
 */
static uint32_t
server_pick_loop(struct server *srv)
{
	uint32_t best = 0, least = UINT32_MAX, n;

	for (uint32_t i = 0; i < srv->nloops; i++) {
		n = atomic_load(&srv->loops[i].nconns);
		if (n < config.conns_per_io_thread)
			return i;
		if (n < least) {
			least = n;
			best = i;
		}
	}
	return best;
}

/* Accepts a connection and hands it to a loop. */
static void
server_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct server *srv = arg;
	uint32_t i = server_pick_loop(srv);

	(void)l;
	(void)sa;
	(void)salen;
	atomic_fetch_add(&srv->loops[i].nconns, 1);
	ioloop_post(srv->loops[i].io, server_adopt_task, srv,
	    (intptr_t)((uint64_t)i << 32 | (uint32_t)fd));
}

/* Listener failure (out of descriptors and the like). */
static void
server_accept_error_cb(struct evconnlistener *l, void *arg)
{
	(void)l;
	(void)arg;
	log_warn("accept: %s", strerror(EVUTIL_SOCKET_ERROR()));
}

/*
 * Once a second: ends the worker if its supervisor is gone; after a second
 * without a frame, gives the memory freed
 * since the last burst back to the system. agxqd keeps freed large blocks
 * while it is busy (main.c: mallopt), so its resident size would otherwise
 * stay at its high-water mark after a burst of large requests.
 */
static void
server_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	uint64_t frames = srv->ctr.frames_in;

	(void)fd;
	(void)what;
	/* Where the kernel cannot kill us with the supervisor (supervise.c). */
	if (getppid() != config.supervisor_pid && !srv->shutting_down) {
		server_shutdown(srv, "the supervisor is gone");
		return;
	}
	if (frames != srv->idle_frames) {
		srv->idle_frames = frames;
		srv->trimmed = 0;
		return;
	}
	if (srv->trimmed)
		return;
	srv->trimmed = 1;
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

/* SIGTERM or SIGINT. */
static void
server_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	server_shutdown(arg, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* Closes every connection of the loop it runs on. */
static void
server_close_loop(struct server *srv, uint32_t i, const char *why)
{
	struct conn *c;

	while ((c = TAILQ_FIRST(&srv->loops[i].conns)) != NULL)
		conn_close(c, why);
}

/* On an I/O thread at the end: closes its connections and ends its loop. */
static void
server_close_task(void *arg, intptr_t val)
{
	struct server *srv = arg;

	server_close_loop(srv, (uint32_t)val, "shutdown");
	ioloop_exit(srv->loops[val].io);
}

/*
 * Last step of shutdown (main loop): closes the stragglers on every loop,
 * stops the I/O threads and the executor, and ends the main loop.
 */
static void
server_finish(struct server *srv)
{
	pthread_mutex_lock(&srv->lock);
	if (srv->finished) {
		pthread_mutex_unlock(&srv->lock);
		return;
	}
	srv->finished = 1;
	pthread_mutex_unlock(&srv->lock);
	for (uint32_t i = 1; i < srv->nloops; i++)
		ioloop_post(srv->loops[i].io, server_close_task, srv, i);
	for (uint32_t i = 1; i < srv->nloops; i++)
		ioloop_join(srv->loops[i].io);
	server_close_loop(srv, 0, "shutdown");
	executor_free(srv->ex);
	srv->ex = NULL;
	if (srv->exit_code == 0)
		log_info("agxqd stopped");
	else
		log_info("worker %d exiting for a new one", (int)getpid());
	event_base_loopexit(srv->base, NULL);
}

/* The shutdown deadline passed, or the last connection closed. */
static void
server_finish_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	server_finish(arg);
}

/* Posted to the main loop when the last connection has closed. */
static void
server_finish_task(void *arg, intptr_t val)
{
	(void)val;
	server_finish(arg);
}

/* On each loop at shutdown: tells its connections and drains them. */
static void
server_wind_task(void *arg, intptr_t val)
{
	struct server *srv = arg;
	struct conn *c, *next;

	for (c = TAILQ_FIRST(&srv->loops[val].conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (srv->wind_notice && c->state == CONN_READY)
			conn_send_error(c, 0, srv->wind_code, "%s",
			    srv->wind_msg);
		conn_drain(c);
	}
}

/*
 * Stops serving: no new connections, queued requests answered with code and
 * msg, connections drained (each first told code and msg as a connection
 * error when notice is set), then the loops exit.
 */
static void
server_wind_down(struct server *srv, int code, const char *msg, int notice)
{
	struct timeval tv = { 2, 0 };
	uint32_t n;

	srv->wind_code = code;
	srv->wind_msg = msg;
	srv->wind_notice = notice;
	pthread_mutex_lock(&srv->lock);
	srv->shutting_down = 1;
	n = srv->nconns;
	pthread_mutex_unlock(&srv->lock);
	evconnlistener_free(srv->listener);
	srv->listener = NULL;
	/* Their replies reach each loop's mailbox before its wind task. */
	executor_quiesce(srv->ex, code, msg);
	for (uint32_t i = 0; i < srv->nloops; i++)
		ioloop_post(srv->loops[i].io, server_wind_task, srv, i);
	if (n == 0)
		tv.tv_sec = 0;
	srv->ev_deadline = evtimer_new(srv->base, server_finish_cb, srv);
	if (srv->ev_deadline == NULL)
		server_oom();
	evtimer_add(srv->ev_deadline, &tv);
}

/* Begins a clean shutdown. */
void
server_shutdown(struct server *srv, const char *why)
{
	if (srv->shutting_down)
		return;
	log_info("shutting down (%s)", why);
	/* New connections fail at once while the old ones drain. */
	unlink(config.socket_path);
	server_wind_down(srv, AGXQ__ERROR_CODE__ERR_SHUTDOWN,
	    "agxqd is shutting down", 0);
}

/*
 * The executor's device is lost beyond repair in this process: ends the
 * worker so that the supervisor starts a new one on the same socket. What
 * has not run is answered ERR_AGAIN (clients may send it again), and every
 * connection is told so before it closes.
 */
static void
server_device_lost(void *arg)
{
	struct server *srv = arg;

	if (srv->shutting_down)
		return;
	log_warn("the device is lost: ending worker %d; the supervisor starts "
	    "a new one", (int)getpid());
	srv->exit_code = SUPERVISE_EXIT_LOST;
	server_wind_down(srv, AGXQ__ERROR_CODE__ERR_AGAIN,
	    "not run: agxqd is resetting the device; safe to retry", 1);
}

/* Runs the main loop until it exits; the I/O threads run their own. */
void
server_run(struct server *srv)
{
	ioloop_run(srv->loops[0].io);
}

/* The worker's exit status once the loop has exited. */
int
server_exit_code(const struct server *srv)
{
	return srv->exit_code;
}

/* Counts a frame in or out on loop i (that loop's thread). */
void
server_traffic(struct server *srv, uint32_t i)
{
	srv->loops[i].frames++;
}

/*
 * A loop's frames so far: what its polling watches, so that a loop polls
 * after its own traffic only, not whenever another loop is busy.
 */
static uint64_t
server_loop_activity(void *arg)
{
	struct server_loop *sl = arg;

	return sl->frames;
}

/* Loop thread: hands the executor the requests sl took, together. */
static void
server_loop_submit(struct server *srv, struct server_loop *sl)
{
	struct request_list refused;
	struct request *r;

	if (TAILQ_EMPTY(&sl->taken))
		return;
	TAILQ_INIT(&refused);
	executor_submit_list(srv->ex, &sl->taken, &refused);
	while ((r = TAILQ_FIRST(&refused)) != NULL) {
		TAILQ_REMOVE(&refused, r, entry);
		server_infer_refused(srv, r);
	}
}

/*
 * Loop thread: takes what the rings of the loop's connections hold and
 * submits it as one group, so that requests posted together can run as
 * one batch.
 */
static uint32_t
server_loop_poll(void *arg)
{
	struct server_loop *sl = arg;
	struct server *srv = sl->srv;
	struct conn *c, *next;
	uint64_t t0 = 0;
	uint32_t n = 0;

	/* Rings attached or gone elsewhere: tell ours, while polling. */
	if (server_rings_allowed(srv) != sl->rings_on &&
	    ioloop_polling(sl->io))
		server_loop_awake(sl, 1);

	for (c = TAILQ_FIRST(&sl->conns); c != NULL; c = next) {
		/* Taking a request may close c (and only c). */
		next = TAILQ_NEXT(c, entry);
		if (c->ring == NULL || c->state != CONN_READY ||
		    !ring_pending(c->ring))
			continue;
		if (t0 == 0)
			t0 = request_now_ns();
		conn_ref(c);
		n += ring_poll(c->ring, 0, server_ring_take, c);
		conn_unref(c);
	}
	if (n > 0) {
		server_loop_submit(srv, sl);
		srv->ctr.busy_ns += request_now_ns() - t0;
	}
	return n;
}

/*
 * Loop thread: whether requests taken from its rings are still out; their
 * clients post again the moment they are answered, so the loop polls on
 * rather than make them wait for a wake-up through the socket.
 */
static int
server_loop_hold(void *arg)
{
	const struct server_loop *sl = arg;

	return sl->ring_inflight > 0;
}

/*
 * Loop thread: tells the rings of its connections whether it polls (and
 * whether rings are to be used at all: server_rings_allowed).
 */
static void
server_loop_awake(void *arg, int on)
{
	struct server_loop *sl = arg;
	struct conn *c;

	sl->rings_on = server_rings_allowed(sl->srv);
	on = on && sl->rings_on;
	TAILQ_FOREACH(c, &sl->conns, entry) {
		if (c->ring != NULL)
			ring_set_awake(c->ring, on);
	}
}

/* Serves connections on listen_fd (the supervisor's socket). */
static int
server_listen(struct server *srv, int listen_fd, char **cause)
{
	/* Closing our copy on free leaves the supervisor's open. */
	srv->listener = evconnlistener_new(srv->base, server_accept_cb, srv,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, listen_fd);
	if (srv->listener == NULL) {
		if (asprintf(cause, "cannot serve %s: %s", config.socket_path,
		    strerror(errno)) < 0)
			*cause = NULL;
		return -1;
	}
	evconnlistener_set_error_cb(srv->listener, server_accept_error_cb);
	return 0;
}

/*
 * How many I/O loops serve connections: --io-threads, else two on hosts
 * with 8 cores or more, one on smaller ones. Measured on an H200 host with
 * 16 cores (docs/GPU.md): 32 client processes ran 34-41% faster on two
 * loops than on one and no faster on four. With request rings, 8 ran
 * faster on two loops than on one (H100: linear +16%, mlp +10%), which
 * server_pick_loop gives them (--conns-per-io-thread, default 4).
 */
static uint32_t
server_nloops(void)
{
	if (config.io_threads > 0)
		return config.io_threads;
	return sysconf(_SC_NPROCESSORS_ONLN) >= 8 ? 2 : 1;
}

/* Makes the loops: the main loop over base, the others on threads. */
static int
server_make_loops(struct server *srv, uint32_t spin_us, char **cause)
{
	struct ioloop_config lc;

	srv->nloops = server_nloops();
	if ((srv->loops = calloc(srv->nloops, sizeof *srv->loops)) == NULL)
		server_oom();
	for (uint32_t i = 0; i < srv->nloops; i++) {
		memset(&lc, 0, sizeof lc);
		lc.index = i;
		lc.spin_us = spin_us;
		lc.activity = server_loop_activity;
		lc.activity_arg = &srv->loops[i];
		lc.poll = server_loop_poll;
		lc.awake = server_loop_awake;
		lc.hold = server_loop_hold;
		lc.done = server_done;
		lc.arg = srv;
		TAILQ_INIT(&srv->loops[i].conns);
		TAILQ_INIT(&srv->loops[i].taken);
		srv->loops[i].srv = srv;
		if (ioloop_new(i == 0 ? srv->base : NULL, &lc,
		    &srv->loops[i].io, cause) != 0)
			return -1;
	}
	return 0;
}

/* Starts the I/O threads (the loops after the main one). */
static int
server_start_loops(struct server *srv, char **cause)
{
	for (uint32_t i = 1; i < srv->nloops; i++) {
		if (ioloop_start(srv->loops[i].io, cause) != 0)
			return -1;
	}
	return 0;
}

/* Serves listen_fd: starts the executor, the I/O threads and the signals. */
int
server_new(struct event_base *base, int listen_fd, struct server **out,
    char **cause)
{
	struct server *srv;
	struct executor_config xc;

	if ((srv = calloc(1, sizeof *srv)) == NULL)
		server_oom();
	srv->base = base;
	atomic_init(&srv->next_conn_id, 1);
	srv->started_ns = request_now_ns();
	/* --ring-clients, else one polling client a core at most. */
	if (config.ring_clients >= 0)
		srv->ring_limit = (uint32_t)config.ring_clients;
	else
		srv->ring_limit = sysconf(_SC_NPROCESSORS_ONLN) > 1 ?
		    (uint32_t)sysconf(_SC_NPROCESSORS_ONLN) : 1;
	pthread_mutex_init(&srv->lock, NULL);
	if ((srv->models = models_new()) == NULL)
		server_oom();

	memset(&xc, 0, sizeof xc);
	xc.backend = config.backend;
	xc.device = config.device;
	xc.cpu_threads = config.cpu_threads;
	/*
	 * Spinning pays only with cores to spare: on a small machine the
	 * polling executor takes the core its clients need.
	 */
	if (config.spin_us >= 0)
		xc.spin_us = (uint32_t)config.spin_us;
	else
		xc.spin_us = sysconf(_SC_NPROCESSORS_ONLN) > 4 ? 50 : 0;
	xc.batch.max_batch = config.max_batch;
	xc.batch.max_delay_us = config.max_delay_us;
	xc.batch.max_queue = config.max_queue;
	xc.compress_threshold = config.compress_threshold;
	xc.limits = config.limits;
	xc.lost = server_device_lost;
	if (server_make_loops(srv, xc.spin_us, cause) != 0)
		goto fail_free;
	if (server_listen(srv, listen_fd, cause) != 0)
		goto fail_free;
	evconnlistener_disable(srv->listener);
	if (executor_start(base, &xc, server_deliver, srv, &srv->ex,
	    cause) != 0)
		goto fail_free;
	if (server_start_loops(srv, cause) != 0)
		goto fail_free;
	srv->ev_term = evsignal_new(base, SIGTERM, server_signal_cb, srv);
	srv->ev_int = evsignal_new(base, SIGINT, server_signal_cb, srv);
	if (srv->ev_term == NULL || srv->ev_int == NULL ||
	    evsignal_add(srv->ev_term, NULL) != 0 ||
	    evsignal_add(srv->ev_int, NULL) != 0)
		server_oom();
	{
		static const struct timeval second = { 1, 0 };

		srv->ev_idle = event_new(base, -1, EV_PERSIST, server_idle_cb,
		    srv);
		if (srv->ev_idle == NULL || event_add(srv->ev_idle, &second) != 0)
			server_oom();
	}
	evconnlistener_enable(srv->listener);
	log_info("agxqd %s listening on %s (backend %s, max batch %u, "
	    "max delay %u us, %u I/O thread%s)", AGXQ_VERSION_STRING,
	    config.socket_path, executor_backend(srv->ex), config.max_batch,
	    config.max_delay_us, srv->nloops, srv->nloops == 1 ? "" : "s");
	*out = srv;
	return 0;

fail_free:
	server_free(srv);
	return -1;
}

/*
 * Frees the server after the main loop has exited (or when server_new
 * failed): the I/O threads are stopped first, then everything is torn
 * down on this thread.
 */
void
server_free(struct server *srv)
{
	if (srv == NULL)
		return;
	if (srv->listener != NULL)
		evconnlistener_free(srv->listener);
	for (uint32_t i = 1; i < srv->nloops; i++) {
		if (srv->loops[i].io != NULL) {
			ioloop_exit(srv->loops[i].io);
			ioloop_join(srv->loops[i].io);
		}
	}
	pthread_mutex_lock(&srv->lock);
	srv->finished = 1;
	pthread_mutex_unlock(&srv->lock);
	for (uint32_t i = 0; i < srv->nloops; i++)
		server_close_loop(srv, i, "server freed");
	executor_free(srv->ex);
	srv->ex = NULL;
	/* What is still in the mailboxes: replies to closed connections. */
	for (uint32_t i = 0; i < srv->nloops; i++)
		ioloop_free(srv->loops[i].io);
	free(srv->loops);
	if (srv->ev_term != NULL)
		event_free(srv->ev_term);
	if (srv->ev_int != NULL)
		event_free(srv->ev_int);
	if (srv->ev_deadline != NULL)
		event_free(srv->ev_deadline);
	if (srv->ev_idle != NULL)
		event_free(srv->ev_idle);
	models_free(srv->models);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}
