/*
 * models: the registry of loaded models. Identical models (same graph and
 * weights: hash, then byte compare) share one entry and one copy on the
 * device. The registry and reference counts belong to the loop thread; a
 * model's stats are guarded by the executor's lock.
 */
#ifndef AGXQ_MODELS_H
#define AGXQ_MODELS_H

#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "graph.h"
#include "request.h"

struct engine_model;

enum model_state { MODEL_LOADING, MODEL_READY, MODEL_FAILED };

#define MODEL_SAMPLES 1024 /* recent latency samples kept for percentiles */

/* The stages of a request's time in agxqd (ModelStats in agxq.proto). */
enum model_time {
	MODEL_T_IN,        /* frame taken -> decoded, checked, queued */
	MODEL_T_QUEUE,     /* queued -> its batch starts */
	MODEL_T_STAGE,     /* batch start -> staged and launched */
	MODEL_T_DEVICE,    /* launched -> finished */
	MODEL_T_REPLY,     /* finished -> its reply encoded */
	MODEL_T_EXEC,      /* batch start -> finished */
	MODEL_T_COUNT
};

/*
 * Recent times of one kind kept by one thread and read by any (relaxed
 * atomics: a reader may see a sample being replaced, never a torn one).
 */
struct tsamples {
	uint64_t n;                        /* recorded so far */
	uint32_t us[MODEL_SAMPLES];
};

struct model_stats {
	uint64_t requests, batches, rows, errors, timeouts, rejected_busy;
	uint32_t queued;
	uint64_t nt;                       /* samples recorded so far */
	uint32_t t_us[MODEL_T_COUNT][MODEL_SAMPLES]; /* rings of recent times */
};

struct model {
	uint64_t id;
	char name[64];
	struct graph *graph;             /* immutable once loaded */
	struct engine_model *emodel;     /* executor thread only */
	enum model_state state;
	uint32_t refs;                   /* connections' references + requests holding it */
	uid_t owner;                     /* uid of the peer that loaded it */
	struct request_list waiters;     /* LOAD requests waiting for it to load */
	TAILQ_ENTRY(model) entry;
	struct model_stats stats;        /* under the executor's lock */
};

struct models;

/* Creates an empty registry; NULL on OOM. */
struct models *models_new(void);

/* Frees the registry; models still in it are freed too (graph included). */
void models_free(struct models *reg);

/*
 * Finds a model identical to g (loading or ready) loaded by owner (or by
 * anyone when any_owner), or NULL. Does not take a reference.
 */
struct model *models_find_equal(struct models *reg, const struct graph *g,
    int any_owner, uid_t owner);

/* Creates a model for g (takes ownership of g) in state LOADING and adds it. */
struct model *models_add(struct models *reg, struct graph *g, const char *name,
    uid_t owner);

/* Weight bytes of every model in the registry. */
uint64_t models_weight_bytes(const struct models *reg);

/* Removes m from the registry (it is freed by whoever holds it last). */
void models_remove(struct models *reg, struct model *m);

/* Frees a model that is not in the registry; accepts NULL. */
void models_destroy(struct model *m);

/* Iteration over the registry, for stats. */
struct model *models_first(struct models *reg);
struct model *models_next(struct model *m);
uint32_t models_count(const struct models *reg);

/* Records the stage times of one request (executor's lock held). */
void models_record(struct model *m, const uint64_t us[MODEL_T_COUNT]);

/* Adds a time to t (its one writer). */
void models_sample(struct tsamples *t, uint64_t us);

/* The p50 and p99 of the recent times in the n sample sets at t. */
void models_samples_pcts(struct tsamples *const *t, uint32_t n,
    uint64_t *p50, uint64_t *p99);

/* The p50 and p99 of the recent samples in ring (n recorded so far). */
void models_pcts(const uint32_t *ring, uint64_t n, uint64_t *p50,
    uint64_t *p99);

#endif
