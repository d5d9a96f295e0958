/*
 * rawinfer: the ring's raw format for Infer and InferReply, read in place.
 *
 * In a ring slot (proto/ringfmt.h) a client that agxqd told so
 * (HelloReply.ring_raw) may post a frame whose header flags are
 * CODEC_FLAG_RAW: its payload is then not a packed Envelope but a raw
 * Infer, laid out as below, which agxqd reads where it lies, with no
 * unpacking and no allocation per tensor. agxqd answers a raw Infer with a
 * raw InferReply frame in the slot; an Error stays a packed Envelope, and
 * a reply that goes on the socket (the client waits there, or it does not
 * fit the slot) is a packed Envelope too: raw frames never travel on the
 * socket, where CODEC_FLAG_RAW is an unknown flag.
 *
 * Payload of a raw Infer:      struct rawinfer_infer, then ntensors
 *                              struct rawinfer_tensor (the inputs), then data.
 * Payload of a raw InferReply: struct rawinfer_reply, then ntensors
 *                              struct rawinfer_tensor (the outputs), then data.
 *
 * Little-endian, as both ends share the machine. A tensor's data lies
 * offset bytes from the payload's start, 8-aligned and inside the
 * payload; only inline float32 tensors (no shared memory) are raw. Reserved
 * words are 0. The payload itself must be 8-aligned in memory (a ring slot's
 * data is 64-aligned, its payload 8 bytes on).
 *
 * The readers fill views: protobuf-c message structs whose tensors' data
 * point into the payload, so that agxqd and the client handle a raw
 * message with the code that handles an unpacked one. The head and the
 * table of tensors are copied into the view before they are checked, each
 * word read once: the payload may lie in memory another process writes
 * meanwhile (agxqd reads a ring slot in place), and then only the tensors'
 * data can change under the reader, never a shape, offset or length. A
 * view lives as long as the payload and its rawinfer_view.
 */
#ifndef AGXQ_RAWINFER_H
#define AGXQ_RAWINFER_H

#include <stddef.h>
#include <stdint.h>

#include "agxq.pb-c.h"
#include "codec.h"

#define RAWINFER_MAGIC_INFER 0x49515841u  /* "AXQI" */
#define RAWINFER_MAGIC_REPLY 0x4f515841u  /* "AXQO" */
#define RAWINFER_MAX_DIMS 6
#define RAWINFER_MAX_TENSORS 1024
#define RAWINFER_ALIGN 8u

struct rawinfer_infer {
	uint32_t magic;                 /* RAWINFER_MAGIC_INFER */
	uint32_t ntensors;              /* inputs, 1..RAWINFER_MAX_TENSORS */
	uint64_t request_id;
	uint64_t model_id;
	uint64_t timeout_us;            /* 0: none */
	int32_t priority;               /* higher runs first */
	uint32_t reserved;
};

struct rawinfer_reply {
	uint32_t magic;                 /* RAWINFER_MAGIC_REPLY */
	uint32_t ntensors;              /* outputs, 0..RAWINFER_MAX_TENSORS */
	uint64_t request_id;
	uint64_t queue_us;
	uint64_t exec_us;
	uint32_t batch_rows;
	uint32_t reserved;
};

struct rawinfer_tensor {
	uint32_t dtype;                 /* AGXQ__DTYPE__DTYPE_FLOAT32 */
	uint32_t ndim;                  /* 1..RAWINFER_MAX_DIMS */
	int64_t shape[RAWINFER_MAX_DIMS]; /* ndim used, the rest 0 */
	uint64_t offset;                /* of the data, from the payload */
	uint64_t length;                /* bytes of data */
};

/*
 * Storage behind a view: the tensors and the copy of their table, in the
 * view for a few, else malloc'd.
 */
#define RAWINFER_VIEW_STACK 8
struct rawinfer_view {
	Agxq__Tensor tstack[RAWINFER_VIEW_STACK];
	Agxq__Tensor *pstack[RAWINFER_VIEW_STACK];
	struct rawinfer_tensor rstack[RAWINFER_VIEW_STACK];
	Agxq__Tensor *t;
	Agxq__Tensor **tp;
	struct rawinfer_tensor *rt;
	union {
		Agxq__Infer infer;
		Agxq__InferReply reply;
	} u;
};

/*
 * Bytes of inf as a raw Infer frame (header included), or 0 when it cannot
 * be raw: a tensor not inline float32, a shape over RAWINFER_MAX_DIMS,
 * output regions, no inputs or too many.
 */
size_t rawinfer_infer_frame_size(const Agxq__Infer *inf);

/* Writes inf as a raw Infer frame of rawinfer_infer_frame_size bytes. */
void rawinfer_infer_frame_write(const Agxq__Infer *inf, uint8_t *frame);

/*
 * The same for an InferReply whose outputs are all inline float32. An
 * output whose data is NULL (with its length set) is laid out but not
 * written: the caller writes its bytes at rawinfer_frame_data.
 */
size_t rawinfer_reply_frame_size(const Agxq__InferReply *rep);
void rawinfer_reply_frame_write(const Agxq__InferReply *rep, uint8_t *frame);

/*
 * Where tensor i's data lies in a frame written above, whose head is hsize
 * bytes (sizeof struct rawinfer_reply or rawinfer_infer).
 */
uint8_t *rawinfer_frame_data(uint8_t *frame, size_t hsize, uint32_t i);

/*
 * Reads the raw Infer payload of len bytes into view v: *out points into v
 * and the payload. Returns 0, or -1 with a malloc'd *cause (why it is not a
 * raw Infer; the caller answers ERR_PROTO). Shapes and lengths are only
 * checked to lie in the payload; whether they fit the model is the
 * caller's check, as for an unpacked Infer. rawinfer_view_free afterwards,
 * either way.
 */
int rawinfer_infer_read(const uint8_t *payload, size_t len,
    struct rawinfer_view *v, const Agxq__Infer **out, char **cause);

/* The same for a raw InferReply payload. */
int rawinfer_reply_read(const uint8_t *payload, size_t len,
    struct rawinfer_view *v, const Agxq__InferReply **out, char **cause);

/*
 * For the socket: when frame (len bytes) is a raw InferReply frame, packs
 * it as an Envelope frame into *out (malloc'd, *out_len bytes, *raw_len
 * before compression; codec_encode's compression and limits) and returns
 * 0. Returns 1, doing nothing, when frame is not raw; -1 when it cannot be
 * packed (not a valid raw reply, over the limits, out of memory), with *id
 * its request id (0 when unknown).
 */
int rawinfer_reply_pack(const uint8_t *frame, size_t len,
    size_t compress_threshold, const struct codec_limits *lim, uint8_t **out,
    size_t *out_len, size_t *raw_len, uint64_t *id);

/*
 * Points v at its own storage, as the readers do first: for a view that
 * rawinfer_view_free may see before any read.
 */
void rawinfer_view_init(struct rawinfer_view *v);

/* Frees what a view allocated (not the view itself). */
void rawinfer_view_free(struct rawinfer_view *v);

#endif
