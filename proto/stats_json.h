/*
 * stats_json: renders a Stats message as JSON. Pure; shared by the client
 * library (agxq_stats_json) and `agxqd status --json`.
 */
#ifndef AGXQ_STATS_JSON_H
#define AGXQ_STATS_JSON_H

#include "agxq.pb-c.h"

/* Returns a malloc'd JSON document for st, or NULL on out-of-memory. */
char *stats_json_render(const Agxq__Stats *st);

#endif
