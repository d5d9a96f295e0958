/*
 * models: registry of loaded models, shared between connections when their
 * graphs are identical.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models.h"

struct models {
	TAILQ_HEAD(, model) list;
	uint32_t count;
	uint64_t next_id;
};

/* Creates an empty registry. */
struct models *
models_new(void)
{
	struct models *reg;

	if ((reg = calloc(1, sizeof *reg)) == NULL)
		return NULL;
	TAILQ_INIT(&reg->list);
	reg->next_id = 1;
	return reg;
}

/* Frees the registry and the models in it. */
void
models_free(struct models *reg)
{
	struct model *m;

	if (reg == NULL)
		return;
	while ((m = TAILQ_FIRST(&reg->list)) != NULL) {
		TAILQ_REMOVE(&reg->list, m, entry);
		models_destroy(m);
	}
	free(reg);
}

/* Finds a model identical to g. */
struct model *
models_find_equal(struct models *reg, const struct graph *g, int any_owner,
    uid_t owner)
{
	struct model *m;

	TAILQ_FOREACH(m, &reg->list, entry) {
		if (m->state != MODEL_FAILED && (any_owner || m->owner == owner) &&
		    m->graph->hash == g->hash &&
		    graph_equal(m->graph, g))
			return m;
	}
	return NULL;
}

/* Creates a model for g and adds it to the registry. */
struct model *
models_add(struct models *reg, struct graph *g, const char *name, uid_t owner)
{
	struct model *m;

	if ((m = calloc(1, sizeof *m)) == NULL)
		return NULL;
	m->id = reg->next_id++;
	m->graph = g;
	m->state = MODEL_LOADING;
	m->owner = owner;
	TAILQ_INIT(&m->waiters);
	if (name != NULL && *name != '\0')
		snprintf(m->name, sizeof m->name, "%s", name);
	else
		snprintf(m->name, sizeof m->name, "model-%llu",
		    (unsigned long long)m->id);
	TAILQ_INSERT_TAIL(&reg->list, m, entry);
	reg->count++;
	return m;
}

/* Removes m from the registry. */
void
models_remove(struct models *reg, struct model *m)
{
	TAILQ_REMOVE(&reg->list, m, entry);
	reg->count--;
}

/* Frees a model outside the registry. */
void
models_destroy(struct model *m)
{
	if (m == NULL)
		return;
	graph_free(m->graph);
	free(m);
}

/* Weight bytes of every model in the registry. */
uint64_t
models_weight_bytes(const struct models *reg)
{
	const struct model *m;
	uint64_t n = 0;

	TAILQ_FOREACH(m, &reg->list, entry)
		n += m->graph->weight_bytes;
	return n;
}

/* First model in the registry. */
struct model *
models_first(struct models *reg)
{
	return TAILQ_FIRST(&reg->list);
}

/* Next model after m. */
struct model *
models_next(struct model *m)
{
	return TAILQ_NEXT(m, entry);
}

/* Number of models in the registry. */
uint32_t
models_count(const struct models *reg)
{
	return reg->count;
}

/* Records the times of one request (microseconds, by enum model_time). */
void
models_record(struct model *m, const uint64_t us[MODEL_T_COUNT])
{
	struct model_stats *s = &m->stats;
	size_t at = (size_t)(s->nt++ % MODEL_SAMPLES);

	for (int k = 0; k < MODEL_T_COUNT; k++)
		s->t_us[k][at] = us[k] > UINT32_MAX ? UINT32_MAX :
		    (uint32_t)us[k];
}

/* Orders two u32 samples. */
static int
models_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Percentile p of the k sorted times at v. */
static uint64_t
models_pick(const uint32_t *v, size_t k, double p)
{
	size_t idx;

	if (k == 0)
		return 0;
	idx = (size_t)(p / 100.0 * (double)(k - 1) + 0.5);
	return v[idx < k ? idx : k - 1];
}

/* The p50 and p99 of the recent samples in ring (n recorded so far). */
void
models_pcts(const uint32_t *ring, uint64_t n, uint64_t *p50, uint64_t *p99)
{
	uint32_t tmp[MODEL_SAMPLES];
	size_t k = n < MODEL_SAMPLES ? (size_t)n : MODEL_SAMPLES;

	memcpy(tmp, ring, k * sizeof *tmp);
	qsort(tmp, k, sizeof *tmp, models_cmp_u32);
	*p50 = models_pick(tmp, k, 50);
	*p99 = models_pick(tmp, k, 99);
}

/* Adds a time to t (its one writer). */
void
models_sample(struct tsamples *t, uint64_t us)
{
	uint64_t n = __atomic_load_n(&t->n, __ATOMIC_RELAXED);

	__atomic_store_n(&t->us[n % MODEL_SAMPLES], us > UINT32_MAX ?
	    UINT32_MAX : (uint32_t)us, __ATOMIC_RELAXED);
	__atomic_store_n(&t->n, n + 1, __ATOMIC_RELEASE);
}

/* The p50 and p99 of the recent times in the n sets at t; 0 on OOM. */
void
models_samples_pcts(struct tsamples *const *t, uint32_t n, uint64_t *p50,
    uint64_t *p99)
{
	uint32_t *v;
	size_t k = 0;

	*p50 = *p99 = 0;
	if (n == 0 || (v = calloc(n, sizeof t[0]->us)) == NULL)
		return;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t have = __atomic_load_n(&t[i]->n, __ATOMIC_ACQUIRE);

		if (have > MODEL_SAMPLES)
			have = MODEL_SAMPLES;
		for (uint64_t j = 0; j < have; j++)
			v[k++] = __atomic_load_n(&t[i]->us[j],
			    __ATOMIC_RELAXED);
	}
	qsort(v, k, sizeof *v, models_cmp_u32);
	*p50 = models_pick(v, k, 50);
	*p99 = models_pick(v, k, 99);
	free(v);
}
