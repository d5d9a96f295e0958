/*
 * config: the daemon's one global, its configuration, and its defaults.
 */
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "supervise.h"

struct config config;

/* Fills c with the defaults. */
void
config_defaults(struct config *c)
{
	memset(c, 0, sizeof *c);
	strcpy(c->socket_path, CONFIG_DEFAULT_SOCKET);
	strcpy(c->backend, "cpu");
	c->spin_us = -1;
	c->conns_per_io_thread = 4;
	c->ring_clients = -1;
	c->max_batch = 64;
	c->max_delay_us = 0;
	c->max_queue = 4096;
	c->max_inflight = 1024;
	c->max_connections = 1024;
	c->max_outbuf = 64u << 20;
	c->frame_timeout_ms = 30000;
	c->compress_threshold = CODEC_DEFAULT_COMPRESS_THRESHOLD;
	c->max_regions = 64;
	c->max_restarts = SUPERVISE_MAX_RESTARTS;
	c->stall_ms = SUPERVISE_STALL_MS;
	c->max_shm_bytes = 64ull << 30;
	c->socket_mode = 0600;
	c->log_level = LOG_INFO;
	c->max_models = 1024;
	c->max_models_per_conn = 64;
	c->max_weight_bytes = 16ull << 30;
	c->max_weight_bytes_per_conn = 4ull << 30;
	codec_limits_default(&c->limits);
	graph_limits_default(&c->glimits);
}

/* Whether a peer may connect. */
int
config_peer_allowed(uid_t uid, gid_t gid)
{
	if (uid == geteuid())
		return 1;
	for (uint32_t i = 0; i < config.nallow_uids; i++) {
		if (config.allow_uids[i] == uid)
			return 1;
	}
	for (uint32_t i = 0; i < config.nallow_gids; i++) {
		if (config.allow_gids[i] == gid)
			return 1;
	}
	return 0;
}
