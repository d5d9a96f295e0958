/*
 * rawinfer: the ring's raw Infer and InferReply (layout in rawinfer.h).
 * Written by hand, not by protobuf-c: it is our own fixed layout, read in
 * place, and the point is to do without unpacking.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rawinfer.h"

static int rawinfer_fail(char **cause, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Sets a malloc'd *cause; returns -1. */
static int
rawinfer_fail(char **cause, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) == -1)
		*cause = NULL;
	va_end(ap);
	return -1;
}

/* n rounded up to RAWINFER_ALIGN. */
static size_t
rawinfer_align(size_t n)
{
	return (n + RAWINFER_ALIGN - 1) & ~(size_t)(RAWINFER_ALIGN - 1);
}

/* Whether t can be a raw tensor: inline float32 of 1..MAX_DIMS dims. */
static int
rawinfer_tensor_ok(const Agxq__Tensor *t)
{
	return t != NULL && t->shm == NULL &&
	    t->dtype == AGXQ__DTYPE__DTYPE_FLOAT32 && t->n_shape >= 1 &&
	    t->n_shape <= RAWINFER_MAX_DIMS;
}

/* Bytes of a payload with a head of hsize and tensors t (0: not raw). */
static size_t
rawinfer_size(size_t hsize, Agxq__Tensor *const *t, size_t n, size_t min)
{
	size_t bytes;

	if (n < min || n > RAWINFER_MAX_TENSORS)
		return 0;
	bytes = hsize + n * sizeof(struct rawinfer_tensor);
	for (size_t i = 0; i < n; i++) {
		if (!rawinfer_tensor_ok(t[i]))
			return 0;
		bytes = rawinfer_align(bytes) + t[i]->data.len;
	}
	if (bytes > UINT32_MAX - CODEC_HEADER_SIZE)
		return 0;
	return CODEC_HEADER_SIZE + bytes;
}

/*
 * Writes the tensor table and the data of tensors t after a head of hsize
 * bytes (the caller's), then the frame header, into frame (of the size
 * rawinfer_size gives: the layout is the same).
 */
static void
rawinfer_write(uint8_t *frame, size_t hsize, Agxq__Tensor *const *t,
    size_t n)
{
	uint8_t *p = frame + CODEC_HEADER_SIZE;
	size_t off = hsize + n * sizeof(struct rawinfer_tensor);

	for (size_t i = 0; i < n; i++) {
		struct rawinfer_tensor rt;
		size_t pad = rawinfer_align(off) - off;

		memset(&rt, 0, sizeof rt);
		rt.dtype = (uint32_t)t[i]->dtype;
		rt.ndim = (uint32_t)t[i]->n_shape;
		memcpy(rt.shape, t[i]->shape, t[i]->n_shape * sizeof(int64_t));
		memset(p + off, 0, pad);
		off += pad;
		rt.offset = off;
		rt.length = t[i]->data.len;
		memcpy(p + hsize + i * sizeof rt, &rt, sizeof rt);
		if (t[i]->data.len > 0 && t[i]->data.data != NULL)
			memcpy(p + off, t[i]->data.data, t[i]->data.len);
		off += t[i]->data.len;
	}
	codec_header_write(frame, (uint32_t)off, CODEC_FLAG_RAW);
}

/* Bytes of inf as a raw Infer frame; 0 when it cannot be raw. */
size_t
rawinfer_infer_frame_size(const Agxq__Infer *inf)
{
	if (inf->n_output_refs > 0)
		return 0;
	return rawinfer_size(sizeof(struct rawinfer_infer), inf->inputs,
	    inf->n_inputs, 1);
}

/* Writes inf as a raw Infer frame of rawinfer_infer_frame_size bytes. */
void
rawinfer_infer_frame_write(const Agxq__Infer *inf, uint8_t *frame)
{
	struct rawinfer_infer h;

	memset(&h, 0, sizeof h);
	h.magic = RAWINFER_MAGIC_INFER;
	h.ntensors = (uint32_t)inf->n_inputs;
	h.request_id = inf->request_id;
	h.model_id = inf->model_id;
	h.timeout_us = inf->timeout_us;
	h.priority = inf->priority;
	memcpy(frame + CODEC_HEADER_SIZE, &h, sizeof h);
	rawinfer_write(frame, sizeof h, inf->inputs, inf->n_inputs);
}

/* Bytes of rep as a raw InferReply frame; 0 when it cannot be raw. */
size_t
rawinfer_reply_frame_size(const Agxq__InferReply *rep)
{
	return rawinfer_size(sizeof(struct rawinfer_reply), rep->outputs,
	    rep->n_outputs, 0);
}

/* Writes rep as a raw InferReply frame of rawinfer_reply_frame_size bytes. */
void
rawinfer_reply_frame_write(const Agxq__InferReply *rep, uint8_t *frame)
{
	struct rawinfer_reply h;

	memset(&h, 0, sizeof h);
	h.magic = RAWINFER_MAGIC_REPLY;
	h.ntensors = (uint32_t)rep->n_outputs;
	h.request_id = rep->request_id;
	h.queue_us = rep->queue_us;
	h.exec_us = rep->exec_us;
	h.batch_rows = rep->batch_rows;
	memcpy(frame + CODEC_HEADER_SIZE, &h, sizeof h);
	rawinfer_write(frame, sizeof h, rep->outputs, rep->n_outputs);
}

/*
 * Where the data of tensor i of a raw frame written by this module lies (a
 * tensor written with NULL data has its bytes there for the caller).
 */
uint8_t *
rawinfer_frame_data(uint8_t *frame, size_t hsize, uint32_t i)
{
	struct rawinfer_tensor rt;

	memcpy(&rt, frame + CODEC_HEADER_SIZE + hsize + i * sizeof rt,
	    sizeof rt);
	return frame + CODEC_HEADER_SIZE + rt.offset;
}

/*
 * Reads the n tensors of a payload of len bytes whose table starts at
 * hsize into v's tensors, from v's copy of the table. Returns 0, or -1
 * with *cause.
 */
static int
rawinfer_read_tensors(const uint8_t *payload, size_t len, size_t hsize,
    uint32_t n, struct rawinfer_view *v, char **cause)
{
	const struct rawinfer_tensor *rt;

	if ((len - hsize) / sizeof *rt < n)
		return rawinfer_fail(cause, "raw frame of %zu bytes too short "
		    "for its table of %u tensors", len, n);
	if (n > RAWINFER_VIEW_STACK &&
	    ((v->t = calloc(n, sizeof *v->t)) == NULL ||
	    (v->tp = calloc(n, sizeof *v->tp)) == NULL ||
	    (v->rt = calloc(n, sizeof *v->rt)) == NULL))
		return rawinfer_fail(cause, "out of memory");
	memcpy(v->rt, payload + hsize, n * sizeof *rt);
	rt = v->rt;
	for (uint32_t i = 0; i < n; i++, rt++) {
		Agxq__Tensor *t = &v->t[i];

		if (rt->dtype != AGXQ__DTYPE__DTYPE_FLOAT32)
			return rawinfer_fail(cause, "raw tensor %u: dtype %u, "
			    "only float32 (%d) is raw", i, rt->dtype,
			    AGXQ__DTYPE__DTYPE_FLOAT32);
		if (rt->ndim < 1 || rt->ndim > RAWINFER_MAX_DIMS)
			return rawinfer_fail(cause, "raw tensor %u: %u "
			    "dimensions (1 to %d)", i, rt->ndim,
			    RAWINFER_MAX_DIMS);
		for (uint32_t d = rt->ndim; d < RAWINFER_MAX_DIMS; d++) {
			if (rt->shape[d] != 0)
				return rawinfer_fail(cause, "raw tensor %u: "
				    "unused dimension %u is not 0", i, d);
		}
		if (rt->offset % RAWINFER_ALIGN != 0)
			return rawinfer_fail(cause, "raw tensor %u: data offset "
			    "%llu is not 8-aligned", i,
			    (unsigned long long)rt->offset);
		if (rt->offset > len || rt->length > len - rt->offset ||
		    rt->offset < hsize + (uint64_t)n * sizeof *rt)
			return rawinfer_fail(cause, "raw tensor %u: data at "
			    "%llu, %llu bytes, lies outside the payload after "
			    "the table (%zu to %zu)", i,
			    (unsigned long long)rt->offset,
			    (unsigned long long)rt->length,
			    hsize + (size_t)n * sizeof *rt, len);
		agxq__tensor__init(t);
		t->dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
		t->n_shape = rt->ndim;
		t->shape = (int64_t *)(uintptr_t)rt->shape;
		t->data.len = (size_t)rt->length;
		t->data.data = (uint8_t *)(uintptr_t)(payload + rt->offset);
		v->tp[i] = t;
	}
	return 0;
}

/* Points v at its own storage. */
void
rawinfer_view_init(struct rawinfer_view *v)
{
	v->t = v->tstack;
	v->tp = v->pstack;
	v->rt = v->rstack;
}

/* Checks that a head of hsize bytes fits the payload, 8-aligned. */
static int
rawinfer_check_head(const uint8_t *payload, size_t len, size_t hsize,
    const char *what, char **cause)
{
	if (((uintptr_t)payload % RAWINFER_ALIGN) != 0)
		return rawinfer_fail(cause, "raw %s not 8-aligned in memory",
		    what);
	if (len < hsize)
		return rawinfer_fail(cause, "raw %s of %zu bytes, shorter than "
		    "its head (%zu)", what, len, hsize);
	return 0;
}

/* Checks a head's magic and reserved word. */
static int
rawinfer_check_words(uint32_t magic, uint32_t want, uint32_t reserved,
    const char *what, char **cause)
{
	if (magic != want)
		return rawinfer_fail(cause, "raw %s: magic %#x, not %#x", what,
		    magic, want);
	if (reserved != 0)
		return rawinfer_fail(cause, "raw %s: reserved word is %u, not 0",
		    what, reserved);
	return 0;
}

/* Reads a raw Infer payload into view v (see rawinfer.h). */
int
rawinfer_infer_read(const uint8_t *payload, size_t len,
    struct rawinfer_view *v, const Agxq__Infer **out, char **cause)
{
	struct rawinfer_infer h;
	Agxq__Infer *inf = &v->u.infer;

	rawinfer_view_init(v);
	if (rawinfer_check_head(payload, len, sizeof h, "infer", cause) != 0)
		return -1;
	memcpy(&h, payload, sizeof h);
	if (rawinfer_check_words(h.magic, RAWINFER_MAGIC_INFER, h.reserved,
	    "infer", cause) != 0)
		return -1;
	if (h.ntensors < 1 || h.ntensors > RAWINFER_MAX_TENSORS)
		return rawinfer_fail(cause, "raw infer with %u inputs (1 to %d)",
		    h.ntensors, RAWINFER_MAX_TENSORS);
	if (rawinfer_read_tensors(payload, len, sizeof h, h.ntensors, v,
	    cause) != 0)
		return -1;
	agxq__infer__init(inf);
	inf->request_id = h.request_id;
	inf->model_id = h.model_id;
	inf->timeout_us = h.timeout_us;
	inf->priority = h.priority;
	inf->n_inputs = h.ntensors;
	inf->inputs = v->tp;
	*out = inf;
	return 0;
}

/* Reads a raw InferReply payload into view v (see rawinfer.h). */
int
rawinfer_reply_read(const uint8_t *payload, size_t len,
    struct rawinfer_view *v, const Agxq__InferReply **out, char **cause)
{
	struct rawinfer_reply h;
	Agxq__InferReply *rep = &v->u.reply;

	rawinfer_view_init(v);
	if (rawinfer_check_head(payload, len, sizeof h, "infer reply",
	    cause) != 0)
		return -1;
	memcpy(&h, payload, sizeof h);
	if (rawinfer_check_words(h.magic, RAWINFER_MAGIC_REPLY, h.reserved,
	    "infer reply", cause) != 0)
		return -1;
	if (h.ntensors > RAWINFER_MAX_TENSORS)
		return rawinfer_fail(cause, "raw infer reply with %u outputs "
		    "(at most %d)", h.ntensors, RAWINFER_MAX_TENSORS);
	if (rawinfer_read_tensors(payload, len, sizeof h, h.ntensors, v,
	    cause) != 0)
		return -1;
	agxq__infer_reply__init(rep);
	rep->request_id = h.request_id;
	rep->queue_us = h.queue_us;
	rep->exec_us = h.exec_us;
	rep->batch_rows = h.batch_rows;
	rep->n_outputs = h.ntensors;
	rep->outputs = v->tp;
	*out = rep;
	return 0;
}

/* Packs a raw InferReply frame for the socket (see rawinfer.h). */
int
rawinfer_reply_pack(const uint8_t *frame, size_t len,
    size_t compress_threshold, const struct codec_limits *lim, uint8_t **out,
    size_t *out_len, size_t *raw_len, uint64_t *id)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	const Agxq__InferReply *rep;
	struct rawinfer_view v;
	uint32_t plen, flags;
	char *cause = NULL;
	int rc = -1;

	*id = 0;
	rawinfer_view_init(&v);
	/* The header's flags word, little-endian (codec.h). */
	if (len < CODEC_HEADER_SIZE || !(frame[4] & CODEC_FLAG_RAW))
		return 1;
	if (codec_ring_header_parse(frame, len, lim, &plen, &flags, NULL,
	    &cause) != CODEC_OK || len != CODEC_HEADER_SIZE + (size_t)plen ||
	    rawinfer_reply_read(frame + CODEC_HEADER_SIZE, plen, &v, &rep,
	    &cause) != 0)
		goto out;
	*id = rep->request_id;
	env.body_case = AGXQ__ENVELOPE__BODY_INFER_REPLY;
	env.infer_reply = (Agxq__InferReply *)(uintptr_t)rep;
	if (codec_encode(&env, compress_threshold, lim, out, out_len,
	    raw_len) == 0)
		rc = 0;
out:
	free(cause);
	rawinfer_view_free(&v);
	return rc;
}

/* Frees what a view allocated. */
void
rawinfer_view_free(struct rawinfer_view *v)
{
	if (v->t != v->tstack)
		free(v->t);
	if (v->tp != v->pstack)
		free(v->tp);
	if (v->rt != v->rstack)
		free(v->rt);
	rawinfer_view_init(v);
}
