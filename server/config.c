/*
 * config: the daemon's one global, its configuration, and its defaults.
 */
#include <string.h>

#include "config.h"
#include "log.h"

struct config config;

/* Fills c with the defaults. */
void
config_defaults(struct config *c)
{
	memset(c, 0, sizeof *c);
	strcpy(c->socket_path, CONFIG_DEFAULT_SOCKET);
	strcpy(c->backend, "cpu");
	c->max_batch = 64;
	c->max_delay_us = 0;
	c->max_queue = 4096;
	c->max_inflight = 1024;
	c->max_connections = 1024;
	c->max_outbuf = 64u << 20;
	c->frame_timeout_ms = 30000;
	c->compress_threshold = CODEC_DEFAULT_COMPRESS_THRESHOLD;
	c->socket_mode = 0600;
	c->log_level = LOG_INFO;
	codec_limits_default(&c->limits);
	graph_limits_default(&c->glimits);
}
