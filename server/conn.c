/*
 * conn: framing, writing and lifetime of one client connection.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "codec.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "models.h"
#include "request.h"
#include "server.h"

static const char *const state_names[] = {
	[CONN_HANDSHAKE] = "handshake",
	[CONN_READY] = "ready",
	[CONN_DRAINING] = "draining",
	[CONN_CLOSED] = "closed",
};

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

/* Returns the state's name. */
const char *
conn_state_name(enum conn_state s)
{
	return state_names[s];
}

/* Changes state, checking and logging the transition. */
void
conn_set_state(struct conn *c, enum conn_state to)
{
	int ok;

	switch (to) {
	case CONN_READY:
		ok = c->state == CONN_HANDSHAKE;
		break;
	case CONN_DRAINING:
		ok = c->state == CONN_HANDSHAKE || c->state == CONN_READY;
		break;
	case CONN_CLOSED:
		ok = c->state != CONN_CLOSED;
		break;
	default:
		ok = 0;
		break;
	}
	if (!ok) {
		log_error("conn %llu: bad state change %s -> %s",
		    (unsigned long long)c->id, state_names[c->state],
		    state_names[to]);
		abort();
	}
	log_debug("conn %llu: %s -> %s", (unsigned long long)c->id,
	    state_names[c->state], state_names[to]);
	c->state = to;
}

/* Wraps an accepted socket in a connection. */
struct conn *
conn_new(struct server *srv, struct event_base *base, int fd, uint64_t id)
{
	struct conn *c;
	struct ucred cred;
	socklen_t len = sizeof cred;

	if ((c = calloc(1, sizeof *c)) == NULL) {
		close(fd);
		return NULL;
	}
	c->id = id;
	c->srv = srv;
	c->state = CONN_HANDSHAKE;
	c->refs = 1;
	c->pid = -1;
	c->uid = (uid_t)-1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		c->pid = cred.pid;
		c->uid = cred.uid;
	}
	evutil_make_socket_nonblocking(fd);
	c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		close(fd);
		free(c);
		return NULL;
	}
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, config.max_outbuf / 2, 0);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	return c;
}

/* Takes a reference. */
void
conn_ref(struct conn *c)
{
	c->refs++;
}

/* Drops a reference; frees a closed connection with none left. */
void
conn_unref(struct conn *c)
{
	if (--c->refs > 0)
		return;
	free(c->models);
	free(c);
}

/* Frees a frame evbuffer no longer needs. */
static void
conn_free_frame(const void *data, size_t len, void *arg)
{
	(void)len;
	(void)arg;
	free((void *)data);
}

/* Queues a frame for sending; takes ownership of frame. */
void
conn_send(struct conn *c, uint8_t *frame, size_t len, size_t raw_len)
{
	struct evbuffer *out;
	struct server_counters *ctr = server_counters(c->srv);

	if (c->state == CONN_CLOSED || c->bev == NULL) {
		free(frame);
		return;
	}
	out = bufferevent_get_output(c->bev);
	if (evbuffer_add_reference(out, frame, len, conn_free_frame, NULL) != 0) {
		free(frame);
		conn_close(c, "out of memory queueing a reply");
		return;
	}
	ctr->frames_out++;
	ctr->bytes_out += len;
	ctr->bytes_out_raw += raw_len != 0 ? raw_len + CODEC_HEADER_SIZE : len;
	/* A client that does not read its replies cannot grow the daemon. */
	if (!c->reads_paused && evbuffer_get_length(out) > config.max_outbuf) {
		c->reads_paused = 1;
		bufferevent_disable(c->bev, EV_READ);
		log_debug("conn %llu: %zu bytes unsent, reads paused",
		    (unsigned long long)c->id, evbuffer_get_length(out));
	}
}

/* Sends an Error for request id. */
void
conn_send_error(struct conn *c, uint64_t id, int code, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;
	uint8_t *frame;
	size_t len;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	log_debug("conn %llu: request %llu: error %d: %s",
	    (unsigned long long)c->id, (unsigned long long)id, code,
	    msg != NULL ? msg : "");
	if (request_error_frame(id, code, msg, &frame, &len) == 0)
		conn_send(c, frame, len, 0);
	free(msg);
}

/* Stops reading, sends what is queued, then closes. */
void
conn_drain(struct conn *c)
{
	if (c->state == CONN_CLOSED || c->state == CONN_DRAINING)
		return;
	conn_set_state(c, CONN_DRAINING);
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_close(c, "drained");
}

/* Closes the socket now. */
void
conn_close(struct conn *c, const char *why)
{
	if (c->state == CONN_CLOSED)
		return;
	log_debug("conn %llu: closing: %s", (unsigned long long)c->id, why);
	conn_set_state(c, CONN_CLOSED);
	/* bufferevent_free is safe inside the bufferevent's own callbacks. */
	bufferevent_free(c->bev);
	c->bev = NULL;
	server_conn_closed(c->srv, c);
}

/* Handles a frame error: report it, then close once the report is sent. */
static void
conn_frame_error(struct conn *c, int code, char *cause)
{
	log_info("conn %llu: %s; closing", (unsigned long long)c->id,
	    cause != NULL ? cause : "frame error");
	conn_send_error(c, 0, code, "%s", cause != NULL ? cause : "frame error");
	free(cause);
	conn_drain(c);
}

/* Reads as many whole frames as have arrived and dispatches them. */
static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct server_counters *ctr = server_counters(c->srv);

	conn_ref(c);
	while (c->state == CONN_HANDSHAKE || c->state == CONN_READY) {
		size_t avail = evbuffer_get_length(in);
		uint32_t plen, flags;
		int code = 0;
		char *cause = NULL;
		unsigned char *p;
		Agxq__Envelope *env;
		enum codec_result cr;

		if (avail < CODEC_HEADER_SIZE)
			break;
		p = evbuffer_pullup(in, CODEC_HEADER_SIZE);
		cr = codec_header_parse(p, avail, &config.limits, &plen, &flags,
		    &code, &cause);
		if (cr == CODEC_ERROR) {
			conn_frame_error(c, code, cause);
			break;
		}
		if (avail < CODEC_HEADER_SIZE + (size_t)plen)
			break;
		p = evbuffer_pullup(in, (ev_ssize_t)(CODEC_HEADER_SIZE + plen));
		if (p == NULL) {
			conn_close(c, "out of memory reading a frame");
			break;
		}
		ctr->frames_in++;
		ctr->bytes_in += CODEC_HEADER_SIZE + plen;
		ctr->bytes_in_raw += CODEC_HEADER_SIZE +
		    codec_raw_size(p + CODEC_HEADER_SIZE, plen, flags);
		if (codec_decode(p + CODEC_HEADER_SIZE, plen, flags,
		    &config.limits, &env, &code, &cause) != 0) {
			evbuffer_drain(in, CODEC_HEADER_SIZE + plen);
			/* The framing is intact: report and go on. */
			log_info("conn %llu: bad message: %s",
			    (unsigned long long)c->id, cause);
			conn_send_error(c, 0, code, "%s", cause);
			free(cause);
			continue;
		}
		evbuffer_drain(in, CODEC_HEADER_SIZE + plen);
		server_dispatch(c->srv, c, env);
	}
	/* A partial frame must complete within frame_timeout_ms. */
	if (c->state != CONN_CLOSED) {
		struct timeval tv = {
			.tv_sec = config.frame_timeout_ms / 1000,
			.tv_usec = (config.frame_timeout_ms % 1000) * 1000,
		};

		bufferevent_set_timeouts(bev,
		    evbuffer_get_length(in) > 0 ? &tv : NULL, NULL);
	}
	conn_unref(c);
}

/* Output drained below the low watermark. */
static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	size_t left = evbuffer_get_length(bufferevent_get_output(bev));

	if (c->state == CONN_DRAINING) {
		if (left == 0)
			conn_close(c, "drained");
		return;
	}
	if (c->reads_paused && left <= config.max_outbuf / 2) {
		c->reads_paused = 0;
		bufferevent_enable(bev, EV_READ);
		log_debug("conn %llu: reads resumed", (unsigned long long)c->id);
	}
}

/* End of file, error or timeout on the socket. */
static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	size_t partial = evbuffer_get_length(bufferevent_get_input(bev));

	if (what & BEV_EVENT_TIMEOUT) {
		log_info("conn %llu: partial frame (%zu bytes) not completed "
		    "within %u ms", (unsigned long long)c->id, partial,
		    config.frame_timeout_ms);
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_PROTO,
		    "partial frame not completed within %u ms",
		    config.frame_timeout_ms);
		conn_drain(c);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		if (partial > 0)
			log_info("conn %llu: closed in the middle of a frame "
			    "(%zu bytes of it received)",
			    (unsigned long long)c->id, partial);
		conn_close(c, "peer closed");
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		conn_close(c, strerror(EVUTIL_SOCKET_ERROR()));
		return;
	}
}

/* Finds the model with id that c holds. */
struct model *
conn_find_model(struct conn *c, uint64_t id)
{
	for (uint32_t i = 0; i < c->nmodels; i++) {
		if (c->models[i].model->id == id)
			return c->models[i].model;
	}
	return NULL;
}

/* Records one more reference of c to m. */
int
conn_add_model(struct conn *c, struct model *m)
{
	struct conn_model *cm;

	for (uint32_t i = 0; i < c->nmodels; i++) {
		if (c->models[i].model == m) {
			c->models[i].count++;
			return 0;
		}
	}
	if (c->nmodels == c->models_cap) {
		uint32_t cap = c->models_cap ? c->models_cap * 2 : 4;

		if ((cm = realloc(c->models, cap * sizeof *cm)) == NULL)
			return -1;
		c->models = cm;
		c->models_cap = cap;
	}
	c->models[c->nmodels].model = m;
	c->models[c->nmodels].count = 1;
	c->nmodels++;
	return 0;
}

/* Drops one of c's references to model id. */
struct model *
conn_remove_model(struct conn *c, uint64_t id)
{
	for (uint32_t i = 0; i < c->nmodels; i++) {
		struct model *m = c->models[i].model;

		if (m->id != id)
			continue;
		if (--c->models[i].count == 0)
			c->models[i] = c->models[--c->nmodels];
		return m;
	}
	return NULL;
}
