/*
 * conn: one client connection, served by one I/O loop and touched only on
 * that loop's thread: reads and decodes frames,
 * writes reply frames, tracks the models the client holds, and owns its
 * state machine. Decoded messages go to server_dispatch.
 */
#ifndef AGXQ_CONN_H
#define AGXQ_CONN_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

struct server;
struct model;
struct region;
struct ring;

/* Received descriptors waiting for their RegisterRegion, per connection. */
#define CONN_MAX_FDS 16

/*
 * A descriptor received with the stream bytes [from, to): it belongs to the
 * frame that starts in that range (the sender attaches it to its frame's
 * first byte).
 */
struct conn_fd {
	int fd;
	uint64_t from, to;
};

enum conn_state {
	CONN_HANDSHAKE, /* waiting for Hello */
	CONN_READY,     /* serving requests */
	CONN_DRAINING,  /* sending what is queued, then closing */
	CONN_CLOSED     /* socket gone; freed when the last reference drops */
};

struct conn_model {
	struct model *model;
	uint32_t count;                /* loads minus unloads by this client */
};

struct conn {
	TAILQ_ENTRY(conn) entry;
	uint64_t id;
	uint32_t loop;                 /* the I/O loop serving it (server.c) */
	struct server *srv;
	struct bufferevent *bev;
	enum conn_state state;
	uint32_t refs;                 /* the server's list + requests in flight */
	uint32_t inflight;             /* requests in flight */
	atomic_uint answered;          /* any thread: of those, answered in
	                                  their ring slot (server_answer_early) */
	pid_t pid;                     /* peer credentials */
	uid_t uid;
	gid_t gid;
	struct conn_model *models;
	uint32_t nmodels;
	uint32_t models_cap;
	int reads_paused;              /* output over max_outbuf */
	int lingering;                 /* draining done: write side shut, reading to EOF */
	uint64_t linger_until_ns;      /* then closed regardless */
	uint64_t t_frame_ns;           /* when the frame being decoded was taken */

	/*
	 * Input: read with recvmsg by our own event (a bufferevent cannot
	 * deliver SCM_RIGHTS); the bufferevent only writes.
	 */
	int fd;
	struct event *ev_read;
	struct evbuffer *in;
	uint64_t rx_bytes;             /* stream bytes received */
	uint64_t rx_used;              /* stream bytes consumed as frames */
	uint64_t frame_start;          /* offset of the frame being dispatched */
	struct conn_fd fds[CONN_MAX_FDS]; /* FIFO of unclaimed descriptors */
	uint32_t nfds;
	uint32_t fds_dropped;          /* closed for want of room; not reported */

	/* Shared memory regions registered on this connection. */
	struct region **regions;
	uint32_t nregions;
	uint32_t regions_cap;
	uint64_t next_region_id;

	/* The request ring (AttachRing), polled by the loop; or NULL. */
	struct ring *ring;
};
TAILQ_HEAD(conn_list, conn);

/*
 * Wraps accepted socket fd in a connection served by loop number loop over
 * base, on that loop's thread (takes ownership of fd). Returns NULL when
 * out of memory (fd is closed).
 */
struct conn *conn_new(struct server *srv, struct event_base *base, int fd,
    uint64_t id, uint32_t loop);

/* Changes state, checking and logging the transition. */
void conn_set_state(struct conn *c, enum conn_state to);

/*
 * Queues a frame for sending; takes ownership of frame (malloc'd). raw_len
 * is its payload's size before compression, or 0 when it is not compressed.
 */
void conn_send(struct conn *c, uint8_t *frame, size_t len, size_t raw_len);

/* Sends an Error for request id (0: the connection). */
void conn_send_error(struct conn *c, uint64_t id, int code, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));

/*
 * Formats and logs an Error for request id on c and encodes it into a new
 * frame (*frame, *len) for the caller to send; 0, or -1 out of memory.
 */
int conn_error_framev(struct conn *c, uint64_t id, int code, const char *fmt,
    va_list ap, uint8_t **frame, size_t *len)
    __attribute__((format(printf, 4, 0)));

/*
 * Takes the descriptor that came with the frame being dispatched (request
 * id, a `what` message: RegisterRegion, AttachRing); the caller owns it.
 * Without one, answers the request with an Error and returns -1.
 */
int conn_take_request_fd(struct conn *c, uint64_t id, const char *what);

/* Tells c its last request in flight finished (restarts the idle timeout). */
void conn_idle(struct conn *c);

/* Stops reading, sends what is queued, then closes. */
void conn_drain(struct conn *c);

/* Closes the socket now; the server is told through server_conn_closed. */
void conn_close(struct conn *c, const char *why);

/* Takes and drops a reference; the last drop frees a closed connection. */
void conn_ref(struct conn *c);
void conn_unref(struct conn *c);

/* Finds the model with id that c holds, or NULL. */
struct model *conn_find_model(struct conn *c, uint64_t id);

/* Records that c holds one more reference to m. Returns 0 or -1 on OOM. */
int conn_add_model(struct conn *c, struct model *m);

/*
 * Drops one of c's references to model id. Returns the model (whose
 * reference the caller must release), or NULL when c holds none.
 */
struct model *conn_remove_model(struct conn *c, uint64_t id);

/* Returns the state's name. */
const char *conn_state_name(enum conn_state s);

/* Finds region id on c, or NULL. */
struct region *conn_find_region(struct conn *c, uint64_t id);

/* Adds rg to c's table (taking its reference). Returns 0 or -1 on OOM. */
int conn_add_region(struct conn *c, struct region *rg);

/* Removes region id from c's table; returns it (reference and all) or NULL. */
struct region *conn_remove_region(struct conn *c, uint64_t id);

#endif
