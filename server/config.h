/*
 * config: the daemon's configuration, the only global. Filled in by main
 * from the command line before any thread starts; read-only afterwards.
 */
#ifndef AGXQ_CONFIG_H
#define AGXQ_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec.h"
#include "graph.h"

#define CONFIG_DEFAULT_SOCKET "/tmp/agxqd.sock"

struct config {
	char socket_path[108];      /* sun_path size */
	char backend[16];
	int device;
	int cpu_threads;             /* BLAS threads of the cpu backend; 0: library default */
	uint32_t max_batch;         /* rows per launch */
	uint32_t max_delay_us;      /* wait for a fuller batch at most this long */
	uint32_t max_queue;         /* queued requests, all models together */
	uint32_t max_inflight;      /* requests in flight per connection */
	uint32_t max_connections;
	size_t max_outbuf;          /* unsent reply bytes before a connection's reads pause */
	uint32_t frame_timeout_ms;  /* time allowed to finish a partial frame */
	size_t compress_threshold;  /* compress reply payloads at least this big */
	mode_t socket_mode;
	int log_level;
	int foreground;
	char log_path[PATH_MAX];    /* empty: stderr */
	struct codec_limits limits;
	struct graph_limits glimits;
};

extern struct config config;

/* Fills c with the defaults. */
void config_defaults(struct config *c);

#endif
