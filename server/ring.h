/*
 * ring: agxqd's side of a client's request ring (layout in proto/ringfmt.h).
 * One per connection, touched only on the thread of the loop serving it,
 * but for ring_answer, ring_reply_at and ring_answer_written: the loop
 * polls it for posted Infer frames and writes each reply into the slot the
 * request came from, unless the executor answered there first and left
 * the loop only its books.
 */
#ifndef AGXQ_SERVER_RING_H
#define AGXQ_SERVER_RING_H

#include <stddef.h>
#include <stdint.h>

struct region;

struct ring {
	struct region *rg;              /* the mapping */
	uint32_t slots;
	uint32_t slot_size;
	uint64_t seen;                  /* header's posted at the last scan */
	int rescan;                     /* scan even if nothing was posted */
	uint8_t *busy;                  /* per slot: taken, not answered yet */
	uint32_t nbusy;
	/* Takes the mapping at ring_free when it is locked for the device. */
	void (*release)(struct region *, void *);
	void *release_arg;
};

/*
 * Called with each posted frame where it lies in its slot, or NULL when its
 * length (read once, len) is out of range (0 or over the slot), and the
 * time the client says it posted it (0: not given; not to be trusted). The
 * client can write the slot meanwhile: the callee copies what it checks
 * before checking it, reads nothing else twice, and is left only the data
 * of a request it took, which stays in the slot until the slot is answered
 * (the loop's books say busy until then).
 */
typedef void (*ring_take_fn)(void *arg, uint32_t slot, uint64_t id,
    uint64_t posted_ns, uint8_t *frame, size_t len);

/*
 * Checks and maps the ring in fd (not taken) as AttachRing describes it.
 * Returns 0 and *out, or -1 with *code (an AGXQ__ERROR_CODE__*) and *cause.
 */
int ring_attach(int fd, uint32_t slots, uint32_t slot_size,
    struct ring **out, int *code, char **cause);

/*
 * Unmaps and frees the ring; accepts NULL. A mapping locked for the device
 * (its region's dev is 1) goes to r->release when set, which must unlock
 * it before it unmaps it.
 */
void ring_free(struct ring *r);

/* Bytes mapped for the ring. */
uint64_t ring_bytes(const struct ring *r);

/* Tells the client whether the loop polls the ring now. */
void ring_set_awake(struct ring *r, int on);

/*
 * Takes every newly posted slot (all posted slots when force is set) and
 * hands its frame to fn, which must answer it (ring_complete). Returns the
 * number of slots taken.
 */
uint32_t ring_poll(struct ring *r, int force, ring_take_fn fn, void *arg);

/*
 * Answers slot with frame. Returns 1 when the reply must also be sent on
 * the socket (it did not fit, or the client waits there), else 0.
 */
int ring_complete(struct ring *r, uint32_t slot, const uint8_t *frame,
    size_t len);

/*
 * Any thread, while the loop counts slot busy: writes frame into slot and
 * stores DONE. Returns 0, or -1 without storing a state when the frame does
 * not fit or the slot's state is not plain POSTED (the client waits on the
 * socket); the loop must then answer with ring_complete.
 */
int ring_answer(struct ring *r, uint32_t slot, const uint8_t *frame,
    size_t len);

/*
 * Any thread, while the loop counts slot busy: where a reply frame of len
 * bytes can be written in slot, or NULL when it does not fit or the
 * client waits on the socket. What is written there is the client's once
 * ring_answer_written says so.
 */
uint8_t *ring_reply_at(struct ring *r, uint32_t slot, size_t len);

/*
 * Any thread: the reply frame of len bytes written at ring_reply_at is
 * ready: stores DONE. Returns 0, or -1 without storing a state when the
 * client flagged a waiter meanwhile; the loop must then answer with
 * ring_complete.
 */
int ring_answer_written(struct ring *r, uint32_t slot, size_t len);

/*
 * Executor, while the loop counts slot busy: records that the reply of
 * len bytes at ring_reply_at may be answered early, and returns where the
 * device stores the request's id when it is all there (answer_len and
 * answer_id in proto/ringfmt.h).
 */
uint64_t *ring_answer_mark(struct ring *r, uint32_t slot, size_t len);

/* The shared memory region the ring lies in. */
struct region *ring_region(const struct ring *r);

/* Loop thread: frees slot, answered by ring_answer, for the next post. */
void ring_release(struct ring *r, uint32_t slot);

/* Whether the client posted since the last ring_poll (a cheap look). */
int ring_pending(const struct ring *r);

#endif
