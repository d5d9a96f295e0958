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
#include "region.h"
#include "request.h"
#include "ring.h"
#include "server.h"

#define CONN_LINGER_MS 1000 /* how long a refused client may take to close */

static const char *const state_names[] = {
	[CONN_HANDSHAKE] = "handshake",
	[CONN_READY] = "ready",
	[CONN_DRAINING] = "draining",
	[CONN_CLOSED] = "closed",
};

/* Bytes read per callback at most, so one client cannot starve the rest. */
#define CONN_READ_BUDGET (16u << 20)
#define CONN_READ_MIN (64u << 10)
#define CONN_READ_MAX (16u << 20)

static void conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

/* Returns the state's name. */
const char *
conn_state_name(enum conn_state s)
{
	if ((unsigned)s >= sizeof state_names / sizeof state_names[0])
		return "invalid";
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
		    (unsigned long long)c->id, conn_state_name(c->state),
		    conn_state_name(to));
		abort();
	}
	log_debug("conn %llu: %s -> %s", (unsigned long long)c->id,
	    conn_state_name(c->state), conn_state_name(to));
	c->state = to;
}

/* Records the peer's credentials (pid where the system tells it). */
static void
conn_peer(struct conn *c, int fd)
{
#ifdef SO_PEERCRED
	struct ucred cred;
	socklen_t len = sizeof cred;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		c->pid = cred.pid;
		c->uid = cred.uid;
		c->gid = cred.gid;
	}
#else
	uid_t uid;
	gid_t gid;

	if (getpeereid(fd, &uid, &gid) == 0) {
		c->uid = uid;
		c->gid = gid;
	}
#endif
}

/* Wraps an accepted socket in a connection. */
struct conn *
conn_new(struct server *srv, struct event_base *base, int fd, uint64_t id,
    uint32_t loop)
{
	struct conn *c;

	if ((c = calloc(1, sizeof *c)) == NULL) {
		close(fd);
		return NULL;
	}
	c->id = id;
	c->loop = loop;
	c->srv = srv;
	c->state = CONN_HANDSHAKE;
	c->refs = 1;
	atomic_init(&c->answered, 0);
	c->pid = -1;
	c->uid = (uid_t)-1;
	c->gid = (gid_t)-1;
	conn_peer(c, fd);
	evutil_make_socket_nonblocking(fd);
	c->fd = fd;
	c->next_region_id = 1;
	if ((c->in = evbuffer_new()) == NULL)
		goto fail_close_fd;
	c->ev_read = event_new(base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
	if (c->ev_read == NULL)
		goto fail_free_in;
	c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL)
		goto fail_free_event;
	bufferevent_setcb(c->bev, NULL, conn_write_cb, conn_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, config.max_outbuf / 2, 0);
	bufferevent_enable(c->bev, EV_WRITE);
	bufferevent_disable(c->bev, EV_READ);
	if (event_add(c->ev_read, NULL) != 0) {
		bufferevent_free(c->bev); /* closes fd */
		event_free(c->ev_read);
		evbuffer_free(c->in);
		free(c);
		return NULL;
	}
	return c;

fail_free_event:
	event_free(c->ev_read);
fail_free_in:
	evbuffer_free(c->in);
fail_close_fd:
	close(fd);
	free(c);
	return NULL;
}

/* Stops reading from c's socket. */
static void
conn_read_stop(struct conn *c)
{
	if (c->ev_read != NULL)
		event_del(c->ev_read);
}

/*
 * (Re)starts reading; a partial frame in the input must complete within
 * frame_timeout_ms, and with --idle-timeout-s a connection with nothing in
 * flight must send something within that time.
 */
static void
conn_read_start(struct conn *c)
{
	struct timeval tv = {
		.tv_sec = config.frame_timeout_ms / 1000,
		.tv_usec = (config.frame_timeout_ms % 1000) * 1000,
	};
	struct timeval idle = { .tv_sec = config.idle_timeout_s };

	if (c->ev_read == NULL || c->reads_paused ||
	    (c->state != CONN_HANDSHAKE && c->state != CONN_READY))
		return;
	if (evbuffer_get_length(c->in) > 0)
		event_add(c->ev_read, &tv);
	else if (config.idle_timeout_s > 0 && c->inflight == 0)
		event_add(c->ev_read, &idle);
	else
		event_add(c->ev_read, NULL);
}

/* The last request in flight finished: the idle timeout starts again. */
void
conn_idle(struct conn *c)
{
	if (config.idle_timeout_s > 0 && c->inflight == 0)
		conn_read_start(c);
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
	free(c->regions);
	ring_free(c->ring);
	free(c);
}

/* Frees a frame evbuffer no longer needs. */
static void
conn_free_frame(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	free(arg);
}

/* Queues a frame for sending; takes ownership of frame. */
void
conn_send(struct conn *c, uint8_t *frame, size_t len, size_t raw_len)
{
	struct evbuffer *out;
	struct server_counters *ctr = server_counters(c->srv);
	size_t off = 0;

	if (c->state == CONN_CLOSED || c->bev == NULL) {
		free(frame);
		return;
	}
	ctr->frames_out++;
	server_traffic(c->srv, c->loop);
	ctr->bytes_out += len;
	ctr->bytes_out_raw += raw_len != 0 ? raw_len + CODEC_HEADER_SIZE : len;
	out = bufferevent_get_output(c->bev);
	/*
	 * Nothing queued: write at once, which spares the write event's
	 * arming and a loop iteration per reply. Errors are left to the
	 * bufferevent, which reports them through conn_event_cb. A draining
	 * connection always queues, so its write callback closes it.
	 */
	if (c->state != CONN_DRAINING && evbuffer_get_length(out) == 0) {
		ssize_t n = send(bufferevent_getfd(c->bev), frame, len,
		    MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n == (ssize_t)len) {
			free(frame);
			return;
		}
		if (n > 0)
			off = (size_t)n;
	}
	if (evbuffer_add_reference(out, frame + off, len - off,
	    conn_free_frame, frame) != 0) {
		free(frame);
		conn_close(c, "out of memory queueing a reply");
		return;
	}
	/* A client that does not read its replies cannot grow the daemon. */
	if (!c->reads_paused && evbuffer_get_length(out) > config.max_outbuf) {
		c->reads_paused = 1;
		conn_read_stop(c);
		log_debug("conn %llu: %zu bytes unsent, reads paused",
		    (unsigned long long)c->id, evbuffer_get_length(out));
	}
}

/* Formats, logs and encodes an Error for request id into a new frame. */
int
conn_error_framev(struct conn *c, uint64_t id, int code, const char *fmt,
    va_list ap, uint8_t **frame, size_t *len)
{
	char *msg = NULL;
	int rc;

	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	log_debug("conn %llu: request %llu: error %d: %s",
	    (unsigned long long)c->id, (unsigned long long)id, code,
	    msg != NULL ? msg : "");
	rc = request_error_frame(id, code, msg, frame, len);
	free(msg);
	return rc;
}

/* Sends an Error for request id. */
void
conn_send_error(struct conn *c, uint64_t id, int code, const char *fmt, ...)
{
	va_list ap;
	uint8_t *frame;
	size_t len;
	int rc;

	va_start(ap, fmt);
	rc = conn_error_framev(c, id, code, fmt, ap, &frame, &len);
	va_end(ap);
	if (rc == 0)
		conn_send(c, frame, len, 0);
}

/*
 * The last reply is sent: shuts the write side (the client sees the end of
 * the stream after our error) and reads, discarding, until the client
 * closes or CONN_LINGER_MS passes. Closing at once with the client's unread
 * request still in our receive queue would reset the connection, and the
 * client could lose the error we just sent.
 */
static void
conn_linger(struct conn *c)
{
	struct timeval tv = { CONN_LINGER_MS / 1000,
	    (CONN_LINGER_MS % 1000) * 1000 };

	if (c->lingering)
		return;
	c->lingering = 1;
	c->linger_until_ns = request_now_ns() + CONN_LINGER_MS * 1000000ull;
	shutdown(c->fd, SHUT_WR);
	evbuffer_drain(c->in, evbuffer_get_length(c->in));
	event_add(c->ev_read, &tv);
}

/* Stops serving, sends what is queued, then closes. */
void
conn_drain(struct conn *c)
{
	if (c->state == CONN_CLOSED || c->state == CONN_DRAINING)
		return;
	conn_set_state(c, CONN_DRAINING);
	conn_read_stop(c);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_linger(c);
}

/* Closes the socket now. */
void
conn_close(struct conn *c, const char *why)
{
	if (c->state == CONN_CLOSED)
		return;
	log_debug("conn %llu: closing: %s", (unsigned long long)c->id, why);
	conn_set_state(c, CONN_CLOSED);
	/* Freeing an event or bufferevent inside its own callback is safe. */
	event_free(c->ev_read);
	c->ev_read = NULL;
	evbuffer_free(c->in);
	c->in = NULL;
	while (c->nfds > 0)
		close(c->fds[--c->nfds].fd);
	bufferevent_free(c->bev); /* closes the socket */
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

/* Queues a received descriptor, or closes it when it cannot be kept. */
static void
conn_push_fd(struct conn *c, int fd, uint64_t from, uint64_t to)
{
	if (c->nfds == CONN_MAX_FDS ||
	    (c->state != CONN_HANDSHAKE && c->state != CONN_READY)) {
		log_info("conn %llu: descriptor dropped (%u waiting, limit %d)",
		    (unsigned long long)c->id, c->nfds, CONN_MAX_FDS);
		close(fd);
		c->fds_dropped++;
		return;
	}
	c->fds[c->nfds].fd = fd;
	c->fds[c->nfds].from = from;
	c->fds[c->nfds].to = to;
	c->nfds++;
}

/* Removes the oldest queued descriptor and returns it. */
static int
conn_pop_fd(struct conn *c)
{
	int fd = c->fds[0].fd;

	memmove(&c->fds[0], &c->fds[1], (c->nfds - 1) * sizeof c->fds[0]);
	c->nfds--;
	return fd;
}

/* Takes the descriptor that came with the frame being dispatched. */
static int
conn_take_fd(struct conn *c)
{
	if (c->nfds == 0 || c->fds[0].from > c->frame_start ||
	    c->fds[0].to <= c->frame_start)
		return -1;
	return conn_pop_fd(c);
}

/* The descriptor of request id's frame, or -1 after answering an Error. */
int
conn_take_request_fd(struct conn *c, uint64_t id, const char *what)
{
	int fd;

	if ((fd = conn_take_fd(c)) == -1)
		conn_send_error(c, id, AGXQ__ERROR_CODE__ERR_INVAL, "%s without "
		    "a file descriptor (send the memfd as SCM_RIGHTS with the "
		    "frame)", what);
	return fd;
}

/*
 * Closes descriptors whose frames have all been dispatched without a
 * RegisterRegion claiming them, and reports them.
 */
static void
conn_close_stray_fds(struct conn *c)
{
	while (c->nfds > 0 && c->fds[0].to <= c->rx_used) {
		close(conn_pop_fd(c));
		log_info("conn %llu: descriptor received without a "
		    "RegisterRegion message; closed", (unsigned long long)c->id);
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_PROTO,
		    "file descriptor received without a RegisterRegion "
		    "message; closed");
	}
}

/* Collects the descriptors of one recvmsg (stream bytes [from, to)). */
static void
conn_take_cmsgs(struct conn *c, struct msghdr *msg, uint64_t from,
    uint64_t to)
{
	struct cmsghdr *cm;
	size_t n;
	int fd;

	for (cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR(msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
		    cm->cmsg_len < CMSG_LEN(0))
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t k = 0; k < n; k++) {
			memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof fd);
			conn_push_fd(c, fd, from, to);
		}
	}
	if (msg->msg_flags & MSG_CTRUNC)
		log_info("conn %llu: too many descriptors in one message; "
		    "the rest were dropped", (unsigned long long)c->id);
}

/* Bytes to ask for next: the rest of a big frame in progress, or a chunk. */
static size_t
conn_read_size(struct conn *c)
{
	size_t avail = evbuffer_get_length(c->in), want = CONN_READ_MIN;
	unsigned char *p;
	uint32_t plen;

	if (avail >= CODEC_HEADER_SIZE &&
	    (p = evbuffer_pullup(c->in, CODEC_HEADER_SIZE)) != NULL) {
		plen = (uint32_t)p[0] | (uint32_t)p[1] << 8 |
		    (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
		if (plen <= config.limits.max_frame &&
		    CODEC_HEADER_SIZE + (size_t)plen > avail)
			want = CODEC_HEADER_SIZE + (size_t)plen - avail;
	}
	if (want < CONN_READ_MIN)
		want = CONN_READ_MIN;
	return want;
}

/*
 * Reads what the socket has (up to CONN_READ_BUDGET) into c->in, collecting
 * descriptors. Returns 1 when the socket is still open, 0 at end of file, -1
 * on an error (*err set).
 */
static int
conn_recv(struct conn *c, int *err)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(CONN_MAX_FDS * sizeof(int))];
	} cbuf;
	struct evbuffer_iovec v;
	struct msghdr msg;
	struct iovec iov;
	size_t total = 0;
	ssize_t n;

	for (;;) {
		size_t want = conn_read_size(c);

		/*
		 * Room for the whole rest of a big frame in one chain, made
		 * once: reserving a fresh chain per read would allocate it
		 * again and again.
		 */
		if (want > CONN_READ_MIN && evbuffer_expand(c->in, want) != 0) {
			*err = ENOMEM;
			return -1;
		}
		if (want > CONN_READ_MAX)
			want = CONN_READ_MAX;
		if (evbuffer_reserve_space(c->in, (ev_ssize_t)want, &v, 1) < 1) {
			*err = ENOMEM;
			return -1;
		}
		iov.iov_base = v.iov_base;
		iov.iov_len = v.iov_len;
		memset(&msg, 0, sizeof msg);
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = cbuf.buf;
		msg.msg_controllen = sizeof cbuf.buf;
		n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 1;
			*err = errno;
			return -1;
		}
		conn_take_cmsgs(c, &msg, c->rx_bytes, c->rx_bytes + (size_t)n);
		if (n == 0)
			return 0;
		v.iov_len = (size_t)n;
		if (evbuffer_commit_space(c->in, &v, 1) != 0) {
			*err = ENOMEM;
			return -1;
		}
		c->rx_bytes += (size_t)n;
		total += (size_t)n;
		if ((size_t)n < iov.iov_len || total >= CONN_READ_BUDGET)
			return 1;
	}
}

/* Decodes as many whole frames as have arrived and dispatches them. */
static void
conn_parse(struct conn *c)
{
	struct evbuffer *in = c->in;
	struct server_counters *ctr = server_counters(c->srv);

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
		server_traffic(c->srv, c->loop);
		ctr->bytes_in += CODEC_HEADER_SIZE + plen;
		ctr->bytes_in_raw += CODEC_HEADER_SIZE +
		    codec_raw_size(p + CODEC_HEADER_SIZE, plen, flags);
		c->frame_start = c->rx_used;
		c->rx_used += CODEC_HEADER_SIZE + (uint64_t)plen;
		c->t_frame_ns = request_now_ns();
		if (codec_decode(p + CODEC_HEADER_SIZE, plen, flags,
		    &config.limits, &env, &code, &cause) != 0) {
			evbuffer_drain(in, CODEC_HEADER_SIZE + plen);
			/* The framing is intact: report and go on. */
			log_info("conn %llu: bad message: %s",
			    (unsigned long long)c->id, cause);
			conn_send_error(c, 0, code, "%s", cause);
			free(cause);
			conn_close_stray_fds(c);
			continue;
		}
		evbuffer_drain(in, CODEC_HEADER_SIZE + plen);
		server_dispatch(c->srv, c, env);
		if (c->state != CONN_CLOSED)
			conn_close_stray_fds(c);
	}
}

/* The socket is readable (or a partial frame timed out). */
static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct server_counters *ctr = server_counters(c->srv);
	uint64_t t0 = request_now_ns();
	size_t partial;
	int rc, err = 0;

	(void)fd;
	conn_ref(c);
	if (c->state == CONN_DRAINING) {
		/* Lingering: discard input until the client closes. */
		rc = (what & EV_TIMEOUT) ? 0 : conn_recv(c, &err);
		evbuffer_drain(c->in, evbuffer_get_length(c->in));
		if (rc <= 0 || request_now_ns() >= c->linger_until_ns) {
			conn_close(c, "drained");
		} else {
			uint64_t left = c->linger_until_ns - request_now_ns();
			struct timeval tv = { (time_t)(left / 1000000000ull),
			    (suseconds_t)(left % 1000000000ull / 1000) };

			event_add(c->ev_read, &tv);
		}
		goto out;
	}
	if ((what & EV_TIMEOUT) && evbuffer_get_length(c->in) == 0) {
		if (c->inflight > 0) {
			conn_read_start(c); /* busy, not idle: wait on */
			goto out;
		}
		log_info("conn %llu: idle for %u s; closing",
		    (unsigned long long)c->id, config.idle_timeout_s);
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "connection idle for %u s (--idle-timeout-s); closing",
		    config.idle_timeout_s);
		conn_drain(c);
		goto out;
	}
	if (what & EV_TIMEOUT) {
		partial = evbuffer_get_length(c->in);
		log_info("conn %llu: partial frame (%zu bytes) not completed "
		    "within %u ms", (unsigned long long)c->id, partial,
		    config.frame_timeout_ms);
		conn_send_error(c, 0, AGXQ__ERROR_CODE__ERR_PROTO,
		    "partial frame not completed within %u ms",
		    config.frame_timeout_ms);
		conn_drain(c);
		goto out;
	}
	rc = conn_recv(c, &err);
	conn_parse(c);
	if (c->state == CONN_CLOSED)
		goto out;
	if (rc == 0) {
		partial = evbuffer_get_length(c->in);
		if (partial > 0)
			log_info("conn %llu: closed in the middle of a frame "
			    "(%zu bytes of it received)",
			    (unsigned long long)c->id, partial);
		conn_close(c, "peer closed");
		goto out;
	}
	if (rc < 0) {
		conn_close(c, strerror(err));
		goto out;
	}
	conn_read_start(c);
out:
	conn_unref(c);
	ctr->busy_ns += request_now_ns() - t0;
}

/* Output drained below the low watermark. */
static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	size_t left = evbuffer_get_length(bufferevent_get_output(bev));

	if (c->state == CONN_DRAINING) {
		if (left == 0)
			conn_linger(c);
		return;
	}
	if (c->reads_paused && left <= config.max_outbuf / 2) {
		c->reads_paused = 0;
		conn_read_start(c);
		log_debug("conn %llu: reads resumed", (unsigned long long)c->id);
	}
}

/* An error writing to the socket (reads are conn_read_cb's). */
static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (what & BEV_EVENT_EOF) {
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

/* Finds region id on c. */
struct region *
conn_find_region(struct conn *c, uint64_t id)
{
	for (uint32_t i = 0; i < c->nregions; i++) {
		if (c->regions[i]->id == id)
			return c->regions[i];
	}
	return NULL;
}

/* Adds rg to c's table. */
int
conn_add_region(struct conn *c, struct region *rg)
{
	struct region **p;

	if (c->nregions == c->regions_cap) {
		uint32_t cap = c->regions_cap ? c->regions_cap * 2 : 4;

		if ((p = realloc(c->regions, cap * sizeof *p)) == NULL)
			return -1;
		c->regions = p;
		c->regions_cap = cap;
	}
	c->regions[c->nregions++] = rg;
	return 0;
}

/* Removes region id from c's table. */
struct region *
conn_remove_region(struct conn *c, uint64_t id)
{
	for (uint32_t i = 0; i < c->nregions; i++) {
		struct region *rg = c->regions[i];

		if (rg->id != id)
			continue;
		c->regions[i] = c->regions[--c->nregions];
		return rg;
	}
	return NULL;
}
