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
#define CONFIG_MAX_ALLOW 64     /* entries in --allow-uid / --allow-gid */
#define CONFIG_MAX_IO_THREADS 64 /* --io-threads */

struct config {
	char socket_path[108];      /* sun_path size */
	char backend[16];
	int device;
	int cpu_threads;             /* BLAS threads of the cpu backend; 0: automatic */
	int spin_us;                 /* executor polls for work before sleeping; -1: automatic */
	uint32_t io_threads;         /* event loops serving connections; 0: automatic */
	uint32_t conns_per_io_thread; /* connections a loop takes before the next gets any */
	int ring_clients;            /* request rings served at once; -1: one a core */
	uint32_t max_batch;         /* rows per launch */
	uint32_t max_delay_us;      /* wait for a fuller batch at most this long */
	uint32_t max_queue;         /* queued requests, all models together */
	uint32_t max_inflight;      /* requests in flight per connection */
	uint32_t max_connections;
	size_t max_outbuf;          /* unsent reply bytes before a connection's reads pause */
	uint32_t frame_timeout_ms;  /* time allowed to finish a partial frame */
	uint32_t idle_timeout_s;    /* close connections idle this long; 0: never */
	size_t compress_threshold;  /* compress reply payloads at least this big */
	uint32_t max_regions;       /* shared memory regions per connection; 0: none */
	uint64_t max_shm_bytes;     /* bytes mapped for all regions together */
	mode_t socket_mode;
	int log_level;
	int foreground;
	char log_path[PATH_MAX];    /* empty: stderr */
	uint32_t max_models;         /* distinct models loaded, in total */
	uint32_t max_models_per_conn;
	uint64_t max_weight_bytes;   /* weights of all models, in total */
	uint64_t max_weight_bytes_per_conn;
	uid_t allow_uids[CONFIG_MAX_ALLOW];
	uint32_t nallow_uids;
	gid_t allow_gids[CONFIG_MAX_ALLOW];
	uint32_t nallow_gids;
	int share_across_uids;       /* share identical models between users */
	struct codec_limits limits;
	struct graph_limits glimits;
	uint32_t max_restarts;       /* worker starts allowed within a minute */
	uint32_t stall_ms;           /* device work unfinished this long: the
					worker is killed and replaced; 0: never */
	pid_t supervisor_pid;        /* set by supervise_run; inherited */
	uint32_t worker_restarts;    /* workers started after the first */
};

extern struct config config;

/* Fills c with the defaults. */
void config_defaults(struct config *c);

/*
 * Whether a peer with uid/gid may connect: always the daemon's own user;
 * others only when --allow-uid or --allow-gid lists them.
 */
int config_peer_allowed(uid_t uid, gid_t gid);

#endif
