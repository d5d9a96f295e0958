/*
 * ring: polling a client's request ring and answering in its slots.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agxq.pb-c.h"
#include "region.h"
#include "ring.h"
#include "ringfmt.h"

/* Checks and maps the ring in fd. */
int
ring_attach(int fd, uint32_t slots, uint32_t slot_size, struct ring **out,
    int *code, char **cause)
{
	const struct ring_header *h;
	struct ring *r;

	*code = AGXQ__ERROR_CODE__ERR_INVAL;
	if (slots < 1 || slots > RING_MAX_SLOTS) {
		if (asprintf(cause, "ring slots must be 1 to %u, not %u",
		    RING_MAX_SLOTS, slots) < 0)
			*cause = NULL;
		return -1;
	}
	if (slot_size < RING_MIN_SLOT_SIZE || slot_size > RING_MAX_SLOT_SIZE ||
	    slot_size % 64 != 0) {
		if (asprintf(cause, "ring slot_size must be a multiple of 64 "
		    "from %u to %u, not %u", RING_MIN_SLOT_SIZE,
		    RING_MAX_SLOT_SIZE, slot_size) < 0)
			*cause = NULL;
		return -1;
	}
	if ((r = calloc(1, sizeof *r)) == NULL ||
	    (r->busy = calloc(slots, 1)) == NULL) {
		free(r);
		*code = AGXQ__ERROR_CODE__ERR_NOMEM;
		*cause = strdup("out of memory");
		return -1;
	}
	if (region_map(fd, ring_area_size(slots, slot_size), 0, &r->rg, code,
	    cause) != 0)
		goto fail;
	h = (const struct ring_header *)r->rg->base;
	if (h->magic != RING_MAGIC || h->version != RING_VERSION ||
	    h->slots != slots || h->slot_size != slot_size) {
		*code = AGXQ__ERROR_CODE__ERR_INVAL;
		if (asprintf(cause, "ring header does not match AttachRing "
		    "(magic %#x version %u slots %u slot_size %u; want magic "
		    "%#x version %u slots %u slot_size %u)", h->magic,
		    h->version, h->slots, h->slot_size, RING_MAGIC,
		    RING_VERSION, slots, slot_size) < 0)
			*cause = NULL;
		goto fail;
	}
	r->slots = slots;
	r->slot_size = slot_size;
	r->seen = __atomic_load_n(&((struct ring_header *)r->rg->base)->posted,
	    __ATOMIC_SEQ_CST) - 1; /* differs: the first poll scans */
	*out = r;
	return 0;

fail:
	region_free(r->rg);
	free(r->busy);
	free(r);
	return -1;
}

/*
 * Unmaps and frees the ring; its mapping goes to the release hook instead
 * when it is locked for the device.
 */
void
ring_free(struct ring *r)
{
	if (r == NULL)
		return;
	if (r->rg->dev == 1 && r->release != NULL)
		r->release(r->rg, r->release_arg);
	else
		region_free(r->rg);
	free(r->busy);
	free(r);
}

/* Bytes mapped for the ring. */
uint64_t
ring_bytes(const struct ring *r)
{
	return r->rg->size;
}

/* Tells the client whether the loop polls the ring now. */
void
ring_set_awake(struct ring *r, int on)
{
	struct ring_header *h = (struct ring_header *)r->rg->base;

	__atomic_store_n(&h->awake, on ? 1u : 0u, __ATOMIC_SEQ_CST);
}

/* Whether the client posted since the last ring_poll. */
int
ring_pending(const struct ring *r)
{
	const struct ring_header *h = (const struct ring_header *)r->rg->base;

	return r->rescan ||
	    __atomic_load_n(&h->posted, __ATOMIC_SEQ_CST) != r->seen;
}

/* Takes the posted slots. */
uint32_t
ring_poll(struct ring *r, int force, ring_take_fn fn, void *arg)
{
	struct ring_header *h = (struct ring_header *)r->rg->base;
	uint64_t posted = __atomic_load_n(&h->posted, __ATOMIC_SEQ_CST);
	uint32_t n = 0, cap = r->slot_size - RING_SLOT_HEADER;

	if (!force && !r->rescan && posted == r->seen)
		return 0;
	r->seen = posted;
	r->rescan = 0;
	for (uint32_t i = 0; i < r->slots && r->nbusy < r->slots; i++) {
		struct ring_slot *s = ring_slot_at(r->rg->base, r->slot_size, i);
		uint32_t st, len;
		uint64_t id, posted_ns;

		if (r->busy[i])
			continue;
		st = __atomic_load_n(&s->state, __ATOMIC_SEQ_CST);
		if (RING_PHASE(st) != RING_POSTED)
			continue;
		len = __atomic_load_n(&s->len, __ATOMIC_RELAXED);
		id = __atomic_load_n(&s->request_id, __ATOMIC_RELAXED);
		posted_ns = __atomic_load_n(&s->posted_ns, __ATOMIC_RELAXED);
		r->busy[i] = 1;
		r->nbusy++;
		n++;
		fn(arg, i, id, posted_ns, len <= cap && len > 0 ?
		    ring_slot_data(s) : NULL, len);
	}
	return n;
}

/* Answers slot with frame. */
int
ring_complete(struct ring *r, uint32_t slot, const uint8_t *frame,
    size_t len)
{
	struct ring_slot *s = ring_slot_at(r->rg->base, r->slot_size, slot);
	uint32_t old;

	r->busy[slot] = 0;
	r->nbusy--;
	if (len > r->slot_size - RING_SLOT_HEADER) {
		__atomic_exchange_n(&s->state, RING_SOCKET, __ATOMIC_SEQ_CST);
		return 1;
	}
	memcpy(ring_slot_data(s), frame, len);
	__atomic_store_n(&s->len, (uint32_t)len, __ATOMIC_RELAXED);
	old = __atomic_exchange_n(&s->state, RING_DONE, __ATOMIC_SEQ_CST);
	return (old & RING_WAITER) != 0;
}

/*
 * Any thread: answers slot, which the loop took and still counts busy, with
 * frame, unless the frame does not fit or the state is not plain POSTED (a
 * waiter, or a client that broke the protocol), when the loop must answer.
 */
int
ring_answer(struct ring *r, uint32_t slot, const uint8_t *frame, size_t len)
{
	uint8_t *at;

	if ((at = ring_reply_at(r, slot, len)) == NULL)
		return -1;
	memcpy(at, frame, len);
	return ring_answer_written(r, slot, len);
}

/* Where slot's reply can go, unless it does not fit or a waiter waits. */
uint8_t *
ring_reply_at(struct ring *r, uint32_t slot, size_t len)
{
	struct ring_slot *s = ring_slot_at(r->rg->base, r->slot_size, slot);

	if (len > r->slot_size - RING_SLOT_HEADER ||
	    __atomic_load_n(&s->state, __ATOMIC_SEQ_CST) != RING_POSTED)
		return NULL;
	return ring_slot_data(s);
}

/*
 * Where the device stores the id of the reply of len bytes written at
 * ring_reply_at in slot, once it is all there (proto/ringfmt.h): records
 * len for the client first.
 */
uint64_t *
ring_answer_mark(struct ring *r, uint32_t slot, size_t len)
{
	struct ring_slot *s = ring_slot_at(r->rg->base, r->slot_size, slot);

	__atomic_store_n(&s->answer_len, (uint32_t)len, __ATOMIC_RELAXED);
	return &s->answer_id;
}

/* The shared memory region the ring lies in. */
struct region *
ring_region(const struct ring *r)
{
	return r->rg;
}

/* Stores DONE for a reply written in place, unless a waiter was flagged. */
int
ring_answer_written(struct ring *r, uint32_t slot, size_t len)
{
	struct ring_slot *s = ring_slot_at(r->rg->base, r->slot_size, slot);
	uint32_t st = RING_POSTED;

	__atomic_store_n(&s->len, (uint32_t)len, __ATOMIC_RELAXED);
	/* A waiter flagged meanwhile: the loop answers in both places. */
	if (!__atomic_compare_exchange_n(&s->state, &st, RING_DONE, 0,
	    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		return -1;
	return 0;
}

/*
 * Puts slot, answered by ring_answer, back in the loop's books. A post to
 * it before now found it busy, and the scan it set off passed it by: scan
 * again. A post after now sets off a scan of its own.
 */
void
ring_release(struct ring *r, uint32_t slot)
{
	struct ring_slot *s = ring_slot_at(r->rg->base, r->slot_size, slot);

	r->busy[slot] = 0;
	r->nbusy--;
	if (RING_PHASE(__atomic_load_n(&s->state, __ATOMIC_SEQ_CST)) ==
	    RING_POSTED)
		r->rescan = 1;
}
