/*
 * builder: the graph builder behind agxq_graph_* and the reference models.
 * Internal to the client libraries.
 */
#ifndef AGXQ_BUILDER_H
#define AGXQ_BUILDER_H

#include "agxq.h"
#include "agxq.pb-c.h"

/*
 * Converts g into its wire form. Returns 0 and *out (free with
 * builder_proto_free), or the graph's sticky AGXQ_E* error (or AGXQ_ENOMEM).
 * Constant data in *out points into g: g must outlive *out.
 */
int builder_to_proto(const agxq_graph *g, Agxq__Graph **out);

/* Frees what builder_to_proto made; accepts NULL. */
void builder_proto_free(Agxq__Graph *pb);

#endif
