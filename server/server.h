/*
 * server: the daemon's top level. Owns the listening socket, the I/O loops
 * and their connections, the model registry and the executor; dispatches decoded
 * messages; delivers finished requests; shuts down cleanly on SIGTERM/SIGINT.
 */
#ifndef AGXQ_SERVER_H
#define AGXQ_SERVER_H

#include <stdatomic.h>
#include <stdint.h>

#include <event2/event.h>

#include "agxq.pb-c.h"

struct server;
struct conn;

/* Updated by every I/O loop, hence atomic. */
struct server_counters {
	atomic_uint_fast64_t frames_in, frames_out;
	atomic_uint_fast64_t bytes_in, bytes_out;
	atomic_uint_fast64_t bytes_in_raw, bytes_out_raw;
	atomic_uint_fast64_t busy_ns; /* loop time reading and replying */
	atomic_uint_fast64_t ring_requests; /* Infers taken from rings */
	atomic_uint_fast64_t ring_answered; /* of those, answered in the slot
	                                       by the executor */
	atomic_uint_fast64_t ring_raw; /* of those, raw frames (rawinfer.h) */
};

/*
 * Serves the listening socket listen_fd (the supervisor's; see supervise.h):
 * starts the executor and the signal handlers. Returns 0 and *out, or -1
 * with *cause.
 */
int server_new(struct event_base *base, int listen_fd, struct server **out,
    char **cause);

/* Runs the event loop until the server stops (polling briefly when idle). */
void server_run(struct server *srv);

/*
 * After the loop has exited: 0 when stopped, SUPERVISE_EXIT_LOST when the
 * device was lost and a new worker must take over.
 */
int server_exit_code(const struct server *srv);

/* Frees the server after the loop has exited; accepts NULL. */
void server_free(struct server *srv);

/* Begins a clean shutdown (as SIGTERM does). */
void server_shutdown(struct server *srv, const char *why);

/* Handles one decoded message from c; takes ownership of env. */
void server_dispatch(struct server *srv, struct conn *c, Agxq__Envelope *env);

/* Told by conn when c's socket has closed: releases what c holds. */
void server_conn_closed(struct server *srv, struct conn *c);

/* Counts a frame in or out on loop i (that loop's thread; for polling). */
void server_traffic(struct server *srv, uint32_t i);

/* Traffic counters (any loop). */
struct server_counters *server_counters(struct server *srv);

#endif
