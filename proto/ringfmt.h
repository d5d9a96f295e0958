/*
 * ringfmt: the layout of a request ring, a shared memory area through which a
 * client hands agxqd Infer frames and takes the replies without a system
 * call on either side while agxqd polls (AttachRing in agxq.proto).
 *
 * The area is RING_HEADER_SIZE bytes of header, then `slots` slots of
 * `slot_size` bytes each. Every word below is read and written with atomic
 * operations (__atomic builtins; both sides are C11 on one machine).
 *
 * A slot's state word: the client owns a FREE or DONE or SOCKET slot; it
 * writes one frame (header and payload, as on the socket) at data, its
 * length at len and the time at posted_ns (for agxqd's stats only: how long
 * a posted request waited to be taken), then stores POSTED and bumps
 * `posted` in the header. agxqd copies the frame out (with request_id,
 * which it names in an Error when the frame cannot be read), runs it and
 * either writes the reply frame at data and stores DONE, or, when the
 * reply does not fit, stores SOCKET and sends the reply on the
 * connection's socket. A client that stops polling sets
 * RING_WAITER on a POSTED slot first; agxqd then sends a DONE reply on the
 * socket as well, so the waiter sleeps on its socket as for any request.
 *
 * agxqd may answer a raw Infer before it stores DONE (the device writes
 * the reply where it computes it): it writes the reply frame at data, its
 * length at answer_len and then the request's id at answer_id, with the
 * state still POSTED. A client that reads its request's id at answer_id
 * may take the reply (answer_len bytes at data) at once, but the slot
 * stays agxqd's until the state leaves POSTED (DONE, or SOCKET with the
 * reply on the socket as well): the client posts to another slot
 * meanwhile, and never flags a waiter on a slot it took an answer from.
 * A client that does not look at answer_id waits for DONE as before.
 *
 * `awake` is agxqd's: 1 while the loop serving the connection polls the
 * ring. A client posts only when it reads 1, and sends a RingKick after
 * posting when it then reads 0: agxqd stores 0 before its last look at the
 * ring, the client stores POSTED before it looks at awake (both
 * sequentially consistent), so one of the two sees the other.
 */
#ifndef AGXQ_RINGFMT_H
#define AGXQ_RINGFMT_H

#include <stddef.h>
#include <stdint.h>

#define RING_MAGIC 0x52515841u          /* "AXQR" */
#define RING_VERSION 1u
#define RING_HEADER_SIZE 128u
#define RING_SLOT_HEADER 64u
#define RING_MAX_SLOTS 64u
#define RING_MIN_SLOT_SIZE 4096u
#define RING_MAX_SLOT_SIZE (1u << 20)

/* Slot states (low byte) and the waiter flag. */
#define RING_FREE 0u
#define RING_POSTED 1u
#define RING_DONE 2u
#define RING_SOCKET 3u                  /* the reply went to the socket */
#define RING_PHASE(s) ((s) & 0xffu)
#define RING_WAITER 0x100u

struct ring_header {
	uint32_t magic;
	uint32_t version;
	uint32_t slots;
	uint32_t slot_size;
	uint32_t awake;                 /* agxqd: 1 while it polls */
	uint32_t pad0[11];
	uint64_t posted;                /* client: bumped after each post */
	uint64_t pad1[7];
};

struct ring_slot {
	uint32_t state;
	uint32_t len;                   /* frame bytes at data */
	uint64_t request_id;            /* the frame's, for errors about it */
	uint64_t posted_ns;             /* CLOCK_MONOTONIC posted; 0: none */
	uint64_t answer_id;             /* agxqd: the id answered at data */
	uint32_t answer_len;            /* agxqd: that reply's frame bytes */
	uint32_t pad0;
	uint64_t pad[3];
	/* slot_size - RING_SLOT_HEADER bytes of frame follow */
};

_Static_assert(sizeof(struct ring_slot) == RING_SLOT_HEADER,
    "a slot's header is RING_SLOT_HEADER bytes");

/* Bytes of an area with slots slots of slot_size bytes. */
static inline uint64_t
ring_area_size(uint32_t slots, uint32_t slot_size)
{
	return RING_HEADER_SIZE + (uint64_t)slots * slot_size;
}

/* Slot i of the area at base. */
static inline struct ring_slot *
ring_slot_at(void *base, uint32_t slot_size, uint32_t i)
{
	return (struct ring_slot *)((uint8_t *)base + RING_HEADER_SIZE +
	    (size_t)i * slot_size);
}

/* The frame bytes of slot s. */
static inline uint8_t *
ring_slot_data(struct ring_slot *s)
{
	return (uint8_t *)s + RING_SLOT_HEADER;
}

#endif
