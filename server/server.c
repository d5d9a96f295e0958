/*
 * server: listening socket, connections, message dispatch, model sharing,
 * completions from the executor and clean shutdown, all on the loop thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
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
#include "log.h"
#include "models.h"
#include "region.h"
#include "request.h"
#include "server.h"
#include "supervise.h"

struct server {
	struct event_base *base;
	struct evconnlistener *listener;
	struct event *ev_term;
	struct event *ev_int;
	struct event *ev_deadline;    /* shutdown: forced close of stragglers */
	struct event *ev_idle;        /* once a second: give memory back when idle */
	uint64_t idle_frames;         /* frames_in at the last idle check */
	int trimmed;                  /* memory given back since the last frame */
	struct executor *ex;
	struct models *models;
	struct conn_list conns;
	uint32_t nconns;
	uint64_t next_conn_id;
	struct server_counters ctr;
	uint32_t shm_regions;         /* regions mapped, all connections */
	uint64_t shm_bytes;           /* and their bytes */
	uint64_t started_ns;
	uint32_t spin_us;             /* the loop polls this long after traffic */
	int shutting_down;
	int exit_code;                /* 0, or SUPERVISE_EXIT_LOST */
	int finished;
};

static void server_finish_cb(evutil_socket_t fd, short what, void *arg);
static void server_device_lost(void *arg);

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

/* Drops one reference to m; the last one frees it on the executor. */
static void
server_model_unref(struct server *srv, struct model *m)
{
	struct request *r;

	if (--m->refs > 0)
		return;
	if (m->state != MODEL_READY) {
		models_destroy(m); /* FAILED: already out of the registry */
		return;
	}
	log_info("model %llu (%s) released", (unsigned long long)m->id,
	    m->name);
	models_remove(srv->models, m);
	if ((r = request_new(REQUEST_FREE, 0)) == NULL)
		server_oom();
	r->model = m;
	executor_control(srv->ex, r);
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
 * Checks the model limits for a new model g loaded by c; on a refusal
 * sends the error and returns -1.
 */
static int
server_load_limits(struct server *srv, struct conn *c, uint64_t id,
    const struct graph *g)
{
	uint64_t conn_bytes = g->weight_bytes;

	for (uint32_t i = 0; i < c->nmodels; i++)
		conn_bytes += c->models[i].model->graph->weight_bytes;
	if (c->nmodels >= config.max_models_per_conn) {
		conn_send_error(c, id, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "this connection already holds %u models (limit)",
		    c->nmodels);
		return -1;
	}
	if (conn_bytes > config.max_weight_bytes_per_conn) {
		conn_send_error(c, id, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "model weights of this connection would reach %" PRIu64
		    " bytes (limit %" PRIu64 ")", conn_bytes,
		    config.max_weight_bytes_per_conn);
		return -1;
	}
	if (models_count(srv->models) >= config.max_models) {
		conn_send_error(c, id, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "agxqd already holds %u models (limit)",
		    models_count(srv->models));
		return -1;
	}
	if (models_weight_bytes(srv->models) + g->weight_bytes >
	    config.max_weight_bytes) {
		conn_send_error(c, id, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "model weights would exceed agxqd's limit of %" PRIu64
		    " bytes", config.max_weight_bytes);
		return -1;
	}
	return 0;
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
	if ((m = models_find_equal(srv->models, g, config.share_across_uids,
	    c->uid)) != NULL) {
		graph_free(g);
		shared = 1;
	} else if (server_load_limits(srv, c, lm->request_id, g) != 0) {
		graph_free(g);
		return;
	} else {
		if ((m = models_add(srv->models, g, lm->name, c->uid)) == NULL)
			server_oom();
		log_info("model %llu (%s): %u nodes, %zu weight bytes, loading",
		    (unsigned long long)m->id, m->name, g->nnodes,
		    g->weight_bytes);
	}
	if ((w = request_new(REQUEST_LOAD, 0)) == NULL)
		server_oom();
	w->id = lm->request_id;
	w->conn = c;
	conn_ref(c);
	w->model = m;
	m->refs++;
	if (m->state == MODEL_READY) {
		server_load_finish(srv, w, 0, NULL, 1);
		return;
	}
	w->rows = (uint32_t)shared; /* remembered for the reply */
	TAILQ_INSERT_TAIL(&m->waiters, w, entry);
	if (shared)
		return;
	if ((load = request_new(REQUEST_LOAD, 0)) == NULL)
		server_oom();
	load->model = m;
	m->refs++;
	executor_control(srv->ex, load);
}

/* A model finished loading on the executor (or failed to). */
static void
server_load_done(struct server *srv, struct request *load)
{
	struct model *m = load->model;
	struct request *w;

	if (load->status == 0) {
		m->state = MODEL_READY;
		log_info("model %llu (%s) ready", (unsigned long long)m->id,
		    m->name);
	} else {
		log_warn("model %llu (%s) failed to load: %s",
		    (unsigned long long)m->id, m->name, load->cause);
		models_remove(srv->models, m);
		m->state = MODEL_FAILED;
	}
	while ((w = TAILQ_FIRST(&m->waiters)) != NULL) {
		TAILQ_REMOVE(&m->waiters, w, entry);
		server_load_finish(srv, w, load->status, load->cause,
		    (int)w->rows);
	}
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

/* Drops one reference to rg; the last one unmaps it. */
static void
server_region_unref(struct server *srv, struct region *rg)
{
	if (--rg->refs > 0)
		return;
	srv->shm_regions--;
	srv->shm_bytes -= rg->size;
	log_debug("region %llu unmapped (%llu bytes)",
	    (unsigned long long)rg->id, (unsigned long long)rg->size);
	region_free(rg);
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

/* Handles Infer: validates and queues; takes ownership of env. */
static void
server_infer(struct server *srv, struct conn *c, Agxq__Envelope *env)
{
	const Agxq__Infer *in = env->infer;
	struct model *m;
	struct request *r;
	char *msg = NULL;
	int code;

	if ((m = conn_find_model(c, in->model_id)) == NULL) {
		conn_send_error(c, in->request_id, AGXQ__ERROR_CODE__ERR_NOMODEL,
		    "model %" PRIu64 " is not loaded on this connection",
		    in->model_id);
		goto out_free;
	}
	if (c->inflight >= config.max_inflight) {
		executor_count_busy(srv->ex, m);
		conn_send_error(c, in->request_id, AGXQ__ERROR_CODE__ERR_BUSY,
		    "%u requests already in flight on this connection (limit)",
		    c->inflight);
		goto out_free;
	}
	if (in->n_inputs != m->graph->ninputs) {
		conn_send_error(c, in->request_id, AGXQ__ERROR_CODE__ERR_SHAPE,
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
	r->t_enqueue_ns = request_now_ns();
	if (in->timeout_us != 0)
		r->deadline_ns = r->t_enqueue_ns + in->timeout_us * 1000;
	r->env = env;
	r->conn = c;
	r->model = m;
	if (executor_submit(srv->ex, r) != 0) {
		r->env = NULL;
		server_request_unref_regions(srv, r);
		request_free(r);
		if (srv->shutting_down)
			conn_send_error(c, in->request_id,
			    AGXQ__ERROR_CODE__ERR_SHUTDOWN,
			    "agxqd is shutting down");
		else
			conn_send_error(c, in->request_id,
			    AGXQ__ERROR_CODE__ERR_BUSY,
			    "agxqd is busy: %u requests queued (limit)",
			    config.max_queue);
		goto out_free;
	}
	conn_ref(c);
	m->refs++;
	c->inflight++;
	return;

fail_request:
	conn_send_error(c, in->request_id, code, "%s",
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

	if ((fd = conn_take_fd(c)) == -1) {
		conn_send_error(c, rr->request_id, AGXQ__ERROR_CODE__ERR_INVAL,
		    "RegisterRegion without a file descriptor (send the memfd "
		    "as SCM_RIGHTS with the frame)");
		return;
	}
	if (c->nregions >= config.max_regions) {
		conn_send_error(c, rr->request_id, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "this connection already has %u shared memory regions "
		    "(limit %u)", c->nregions, config.max_regions);
		goto out_close;
	}
	if (rr->size > config.max_shm_bytes - srv->shm_bytes) {
		conn_send_error(c, rr->request_id, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "a region of %" PRIu64 " bytes would exceed agxqd's limit "
		    "of %" PRIu64 " mapped bytes", rr->size,
		    config.max_shm_bytes);
		goto out_close;
	}
	if (region_map(fd, rr->size, c->next_region_id, &rg, &code,
	    &cause) != 0) {
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
	srv->shm_regions++;
	srv->shm_bytes += rg->size;
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

/* Answers a StatsRequest. */
static void
server_stats(struct server *srv, struct conn *c, const Agxq__StatsRequest *sr)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__Stats st = AGXQ__STATS__INIT;
	Agxq__ModelStats *ms = NULL, **msp = NULL;
	struct model_stats snap;
	struct model *m;
	uint32_t n = models_count(srv->models), k = 0;

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
		o->queue_p50_us = models_percentile(snap.queue_us, snap.nq, 50);
		o->queue_p99_us = models_percentile(snap.queue_us, snap.nq, 99);
		o->exec_p50_us = models_percentile(snap.exec_us, snap.ne, 50);
		o->exec_p99_us = models_percentile(snap.exec_us, snap.ne, 99);
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
	server_reply(c, &env);
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
		server_infer(srv, c, env);
		return; /* env is the request's now, or freed */
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

/* Delivers a finished request (loop thread; called by the executor). */
static void
server_done(struct request *r, void *arg)
{
	struct server *srv = arg;
	struct conn *c = r->conn;
	uint64_t t0 = request_now_ns();

	if (r->kind == REQUEST_LOAD) {
		server_load_done(srv, r);
		return;
	}
	if (c->state == CONN_READY || c->state == CONN_DRAINING) {
		conn_send(c, r->reply, r->reply_len,
		    r->reply_len != r->reply_raw_len + CODEC_HEADER_SIZE ?
		    r->reply_raw_len : 0);
		r->reply = NULL;
	}
	if (--c->inflight == 0 && c->state == CONN_READY)
		conn_idle(c);
	server_request_unref_regions(srv, r);
	server_model_unref(srv, r->model);
	conn_unref(c);
	request_free(r);
	srv->ctr.busy_ns += request_now_ns() - t0;
}

/* Told by conn when c's socket has closed: releases what c holds. */
void
server_conn_closed(struct server *srv, struct conn *c)
{
	static const struct timeval now = { 0, 0 };

	TAILQ_REMOVE(&srv->conns, c, entry);
	srv->nconns--;
	log_debug("conn %llu closed; %u connections", (unsigned long long)c->id,
	    srv->nconns);
	if (srv->ex != NULL)
		executor_cancel_conn(srv->ex, c);
	while (c->nmodels > 0) {
		/* The last unref may free m (on the executor): no m->id after it. */
		struct conn_model cm = c->models[--c->nmodels];

		while (cm.count-- > 0)
			server_model_unref(srv, cm.model);
	}
	/* Requests still running keep their regions mapped until done. */
	while (c->nregions > 0)
		server_region_unref(srv, c->regions[--c->nregions]);
	conn_unref(c); /* the list's reference */
	if (srv->shutting_down && srv->nconns == 0 && !srv->finished)
		event_base_once(srv->base, -1, EV_TIMEOUT, server_finish_cb,
		    srv, &now);
}

/* Accepts a connection. */
static void
server_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct server *srv = arg;
	struct conn *c;

	(void)l;
	(void)sa;
	(void)salen;
	if ((c = conn_new(srv, srv->base, fd, srv->next_conn_id++)) == NULL) {
		log_warn("out of memory accepting a connection");
		return;
	}
	TAILQ_INSERT_TAIL(&srv->conns, c, entry);
	srv->nconns++;
	if (!config_peer_allowed(c->uid, c->gid)) {
		log_warn("connection from pid %d refused: uid %d gid %d is not "
		    "allowed (--allow-uid, --allow-gid)", (int)c->pid,
		    (int)c->uid, (int)c->gid);
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_PERM,
		    "uid %d is not allowed to use this agxqd", (int)c->uid);
		conn_drain(c);
		return;
	}
	if (srv->nconns > config.max_connections) {
		log_warn("connection from pid %d refused: %u connections "
		    "(limit)", (int)c->pid, config.max_connections);
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "too many connections (limit %u)", config.max_connections);
		conn_drain(c);
		return;
	}
	log_debug("conn %llu: accepted (pid %d, uid %d)",
	    (unsigned long long)c->id, (int)c->pid, (int)c->uid);
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

	(void)fd;
	(void)what;
	/* Where the kernel cannot kill us with the supervisor (supervise.c). */
	if (getppid() != config.supervisor_pid && !srv->shutting_down) {
		server_shutdown(srv, "the supervisor is gone");
		return;
	}
	if (srv->ctr.frames_in != srv->idle_frames) {
		srv->idle_frames = srv->ctr.frames_in;
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

/* Last step of shutdown: close stragglers, stop the executor, exit the loop. */
static void
server_finish_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	struct conn *c;

	(void)fd;
	(void)what;
	if (srv->finished)
		return;
	srv->finished = 1;
	while ((c = TAILQ_FIRST(&srv->conns)) != NULL)
		conn_close(c, "shutdown");
	executor_free(srv->ex);
	srv->ex = NULL;
	if (srv->exit_code == 0)
		log_info("agxqd stopped");
	else
		log_info("worker %d exiting for a new one", (int)getpid());
	event_base_loopexit(srv->base, NULL);
}

/*
 * Stops serving: no new connections, queued requests answered with code and
 * msg, connections drained (each first told code and msg as a connection
 * error when notice is set), then the loop exits.
 */
static void
server_wind_down(struct server *srv, int code, const char *msg, int notice)
{
	struct conn *c, *next;
	struct timeval tv = { 2, 0 };

	srv->shutting_down = 1;
	evconnlistener_free(srv->listener);
	srv->listener = NULL;
	executor_quiesce(srv->ex, code, msg);
	for (c = TAILQ_FIRST(&srv->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (notice && c->state == CONN_READY)
			conn_send_error(c, 0, code, "%s", msg);
		conn_drain(c);
	}
	if (srv->nconns == 0) {
		tv.tv_sec = 0;
	}
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

/*
 * Runs the loop until it exits. With spin_us set (cores to spare), after
 * each frame in or out it polls for events without sleeping for spin_us,
 * so the next request, or the executor's next completion, is taken without
 * a wake-up from the kernel (10-20 us on a VM; measured in docs/GPU.md).
 */
void
server_run(struct server *srv)
{
	struct event_base *base = srv->base;
	uint64_t seen = 0, now, until = 0;

	if (srv->spin_us == 0) {
		event_base_dispatch(base);
		return;
	}
	while (!event_base_got_exit(base) && !event_base_got_break(base)) {
		now = request_now_ns();
		if (event_base_loop(base, now < until ? EVLOOP_NONBLOCK :
		    EVLOOP_ONCE) != 0)
			break;
		if (srv->ctr.frames_in + srv->ctr.frames_out != seen) {
			seen = srv->ctr.frames_in + srv->ctr.frames_out;
			until = request_now_ns() + (uint64_t)srv->spin_us * 1000;
		}
	}
}

/* The worker's exit status once the loop has exited. */
int
server_exit_code(const struct server *srv)
{
	return srv->exit_code;
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

/* Serves listen_fd: starts the executor and the signal handlers. */
int
server_new(struct event_base *base, int listen_fd, struct server **out,
    char **cause)
{
	struct server *srv;
	struct executor_config xc;

	if ((srv = calloc(1, sizeof *srv)) == NULL)
		server_oom();
	srv->base = base;
	srv->next_conn_id = 1;
	srv->started_ns = request_now_ns();
	TAILQ_INIT(&srv->conns);
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
	srv->spin_us = xc.spin_us;
	xc.batch.max_batch = config.max_batch;
	xc.batch.max_delay_us = config.max_delay_us;
	xc.batch.max_queue = config.max_queue;
	xc.compress_threshold = config.compress_threshold;
	xc.limits = config.limits;
	xc.lost = server_device_lost;
	if (server_listen(srv, listen_fd, cause) != 0)
		goto fail_free;
	evconnlistener_disable(srv->listener);
	if (executor_start(base, &xc, server_done, srv, &srv->ex, cause) != 0)
		goto fail_unlisten;
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
	    "max delay %u us)", AGXQ_VERSION_STRING, config.socket_path,
	    executor_backend(srv->ex), config.max_batch, config.max_delay_us);
	*out = srv;
	return 0;

fail_unlisten:
	evconnlistener_free(srv->listener);
	srv->listener = NULL;
fail_free:
	server_free(srv);
	return -1;
}

/* Frees the server after the loop has exited. */
void
server_free(struct server *srv)
{
	struct conn *c;

	if (srv == NULL)
		return;
	if (srv->listener != NULL)
		evconnlistener_free(srv->listener);
	while ((c = TAILQ_FIRST(&srv->conns)) != NULL)
		conn_close(c, "server freed");
	executor_free(srv->ex);
	if (srv->ev_term != NULL)
		event_free(srv->ev_term);
	if (srv->ev_int != NULL)
		event_free(srv->ev_int);
	if (srv->ev_deadline != NULL)
		event_free(srv->ev_deadline);
	if (srv->ev_idle != NULL)
		event_free(srv->ev_idle);
	models_free(srv->models);
	free(srv);
}
