/*
 * test_rawinfer: the ring's raw Infer and InferReply (proto/rawinfer.c).
 * Views built by hand go through raw frames and come back the same; what
 * cannot be raw is refused; every way a raw payload can be wrong is
 * rejected with a cause that says so; and only the ring's header parser
 * knows the raw frame flag.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "rawinfer.h"
#include "testlib.h"

#define HEAD_INFER sizeof(struct rawinfer_infer)
#define HEAD_REPLY sizeof(struct rawinfer_reply)
#define TENSOR_SIZE sizeof(struct rawinfer_tensor)

/* Hand-built inline float32 tensors, up to FX_MAX of FX_FLOATS floats. */
#define FX_MAX 12
#define FX_FLOATS 64
struct fixture {
	Agxq__Tensor t[FX_MAX];
	Agxq__Tensor *tp[FX_MAX];
	int64_t shape[FX_MAX][RAWINFER_MAX_DIMS + 1];
	float data[FX_MAX][FX_FLOATS];
};

/* Makes tensor i of fx: ndim dims from dims, data counting up from base. */
static void
fx_tensor(struct fixture *fx, size_t i, const int64_t *dims, size_t ndim,
    float base)
{
	Agxq__Tensor *t = &fx->t[i];
	size_t ne = 1;

	if (i >= FX_MAX || ndim > RAWINFER_MAX_DIMS + 1)
		abort();
	agxq__tensor__init(t);
	memset(fx->shape[i], 0, sizeof fx->shape[i]);
	for (size_t d = 0; d < ndim; d++) {
		fx->shape[i][d] = dims[d];
		ne *= (size_t)dims[d];
	}
	if (ne > FX_FLOATS)
		abort();
	for (size_t k = 0; k < ne; k++)
		fx->data[i][k] = base + (float)k * 0.25f;
	t->dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	t->n_shape = ndim;
	t->shape = fx->shape[i];
	t->data.len = ne * sizeof(float);
	t->data.data = ne > 0 ? (uint8_t *)fx->data[i] : NULL;
	fx->tp[i] = t;
}

/* Makes n tensors of ranks 1 to 6 in turn; every fifth is zero-length. */
static void
fx_many(struct fixture *fx, size_t n)
{
	static const int64_t dims[RAWINFER_MAX_DIMS] = { 3, 1, 2, 1, 2, 1 };
	static const int64_t empty[2] = { 4, 0 };

	for (size_t i = 0; i < n; i++) {
		if (i % 5 == 4)
			fx_tensor(fx, i, empty, 2, 0.0f);
		else
			fx_tensor(fx, i, dims, i % RAWINFER_MAX_DIMS + 1,
			    (float)i * 100.0f);
	}
}

/* The three tensors of ranks 1, 6 and 3 (the last zero-length). */
static void
fx_three(struct fixture *fx)
{
	static const int64_t d0[1] = { 3 };
	static const int64_t d1[6] = { 1, 2, 1, 3, 1, 2 };
	static const int64_t d2[3] = { 2, 0, 4 };

	fx_tensor(fx, 0, d0, 1, 1.0f);
	fx_tensor(fx, 1, d1, 6, -7.5f);
	fx_tensor(fx, 2, d2, 3, 0.0f);
}

/* Fills inf with distinctive fields and the n inputs tp. */
static void
infer_fill(Agxq__Infer *inf, Agxq__Tensor **tp, size_t n)
{
	agxq__infer__init(inf);
	inf->request_id = 0x0102030405060708ull;
	inf->model_id = UINT64_MAX - 1;
	inf->timeout_us = 250000;
	inf->priority = -7;
	inf->n_inputs = n;
	inf->inputs = tp;
}

/* Fills rep with distinctive fields and the n outputs tp. */
static void
reply_fill(Agxq__InferReply *rep, Agxq__Tensor **tp, size_t n)
{
	agxq__infer_reply__init(rep);
	rep->request_id = 0x8070605040302010ull;
	rep->queue_us = 17;
	rep->exec_us = UINT64_MAX;
	rep->batch_rows = 33;
	rep->n_outputs = n;
	rep->outputs = n > 0 ? tp : NULL;
}

/*
 * Checks that got's n tensors (of view v) equal want's, their shapes in the
 * view's copy of the table and their data 8-aligned after the table at
 * hsize, in the len bytes of payload. Returns 1 when they do.
 */
static int
tensors_match(Agxq__Tensor *const *want, Agxq__Tensor *const *got, size_t n,
    const struct rawinfer_view *v, const uint8_t *payload, size_t len,
    size_t hsize)
{
	const uint8_t *table = (const uint8_t *)v->rt;
	const uint8_t *tend = table + n * TENSOR_SIZE, *end = payload + len;
	const uint8_t *d, *s;
	size_t i = 0;

	CHECK(n == 0 || got != NULL);
	for (i = 0; i < n; i++) {
		CHECK(got[i] != NULL);
		d = got[i]->data.data;
		s = (const uint8_t *)got[i]->shape;
		CHECK(got[i]->base.descriptor == &agxq__tensor__descriptor);
		CHECK(got[i]->dtype == AGXQ__DTYPE__DTYPE_FLOAT32);
		CHECK(got[i]->shm == NULL);
		CHECK(got[i]->n_shape == want[i]->n_shape);
		CHECK(s >= table &&
		    s + got[i]->n_shape * sizeof(int64_t) <= tend);
		CHECK(memcmp(got[i]->shape, want[i]->shape,
		    want[i]->n_shape * sizeof(int64_t)) == 0);
		CHECK(got[i]->data.len == want[i]->data.len);
		CHECK(d != NULL && (uintptr_t)d % RAWINFER_ALIGN == 0);
		CHECK(d >= payload + hsize + n * TENSOR_SIZE && d <= end &&
		    got[i]->data.len <= (size_t)(end - d));
		if (want[i]->data.len > 0)
			CHECK(memcmp(d, want[i]->data.data,
			    want[i]->data.len) == 0);
	}
	return 1;
out:
	printf("  %s: tensor %zu of %zu\n", testlib_current, i, n);
	return 0;
}

/*
 * Writes a frame of size bytes with write over a buffer of 0x00s and one of
 * 0xffs: both must come out the same, every byte written. Returns the
 * first (caller frees) or NULL.
 */
static uint8_t *
frame_twice(size_t size, void (*fn)(const void *, uint8_t *),
    const void *msg)
{
	uint8_t *a, *b;
	int same;

	if ((a = malloc(size)) == NULL || (b = malloc(size)) == NULL)
		abort();
	memset(a, 0, size);
	memset(b, 0xff, size);
	fn(msg, a);
	fn(msg, b);
	same = memcmp(a, b, size) == 0;
	free(b);
	if (!same) {
		printf("  %s: frame bytes left unwritten\n", testlib_current);
		free(a);
		return NULL;
	}
	return a;
}

/* rawinfer_infer_frame_write for frame_twice. */
static void
write_infer(const void *msg, uint8_t *frame)
{
	rawinfer_infer_frame_write(msg, frame);
}

/* rawinfer_reply_frame_write for frame_twice. */
static void
write_reply(const void *msg, uint8_t *frame)
{
	rawinfer_reply_frame_write(msg, frame);
}

/*
 * Writes inf as a raw frame, parses its header as a ring slot's and reads
 * the payload back; checks every field. Returns 0 or -1.
 */
static int
infer_round_trip(const Agxq__Infer *inf)
{
	struct rawinfer_view v;
	struct codec_limits lim;
	const Agxq__Infer *got = NULL;
	const struct rawinfer_infer *h;
	uint8_t *frame = NULL, *payload;
	size_t size;
	uint32_t plen = 0, flags = 0;
	int code = 0, rc = -1;
	char *cause = NULL;

	rawinfer_view_init(&v);
	codec_limits_default(&lim);
	size = rawinfer_infer_frame_size(inf);
	CHECK(size >= CODEC_HEADER_SIZE + HEAD_INFER + TENSOR_SIZE);
	CHECK((frame = frame_twice(size, write_infer, inf)) != NULL);
	CHECK(codec_ring_header_parse(frame, size, &lim, &plen, &flags, &code,
	    &cause) == CODEC_OK);
	CHECK(flags == CODEC_FLAG_RAW);
	CHECK(plen == size - CODEC_HEADER_SIZE);
	payload = frame + CODEC_HEADER_SIZE;
	h = (const struct rawinfer_infer *)(const void *)payload;
	CHECK(h->magic == RAWINFER_MAGIC_INFER && h->reserved == 0);
	CHECK(h->ntensors == inf->n_inputs);

	CHECK(rawinfer_infer_read(payload, plen, &v, &got, &cause) == 0);
	CHECK(cause == NULL && got == &v.u.infer);
	CHECK(got->base.descriptor == &agxq__infer__descriptor);
	CHECK(got->request_id == inf->request_id);
	CHECK(got->model_id == inf->model_id);
	CHECK(got->timeout_us == inf->timeout_us);
	CHECK(got->priority == inf->priority);
	CHECK(got->n_output_refs == 0 && got->output_refs == NULL);
	CHECK(got->n_inputs == inf->n_inputs);
	/* A few tensors on the view's stack, more on the heap. */
	if (inf->n_inputs <= RAWINFER_VIEW_STACK)
		CHECK(v.t == v.tstack && v.tp == v.pstack &&
		    v.rt == v.rstack);
	else
		CHECK(v.t != v.tstack && v.tp != v.pstack &&
		    v.rt != v.rstack);
	CHECK(tensors_match(inf->inputs, got->inputs, inf->n_inputs, &v,
	    payload, plen, HEAD_INFER));
	/* Read once: a client writing its slot now changes no shape. */
	memset(payload, 0xff, HEAD_INFER + inf->n_inputs * TENSOR_SIZE);
	CHECK(got->request_id == inf->request_id);
	CHECK(tensors_match(inf->inputs, got->inputs, inf->n_inputs, &v,
	    payload, plen, HEAD_INFER));
	rc = 0;
out:
	rawinfer_view_free(&v);
	EXPECT(v.t == v.tstack && v.tp == v.pstack && v.rt == v.rstack);
	free(cause);
	free(frame);
	return rc;
}

/* The same for an InferReply. */
static int
reply_round_trip(const Agxq__InferReply *rep)
{
	struct rawinfer_view v;
	struct codec_limits lim;
	const Agxq__InferReply *got = NULL;
	const struct rawinfer_reply *h;
	uint8_t *frame = NULL, *payload;
	size_t size;
	uint32_t plen = 0, flags = 0;
	int code = 0, rc = -1;
	char *cause = NULL;

	rawinfer_view_init(&v);
	codec_limits_default(&lim);
	size = rawinfer_reply_frame_size(rep);
	CHECK(size >= CODEC_HEADER_SIZE + HEAD_REPLY);
	CHECK((frame = frame_twice(size, write_reply, rep)) != NULL);
	CHECK(codec_ring_header_parse(frame, size, &lim, &plen, &flags, &code,
	    &cause) == CODEC_OK);
	CHECK(flags == CODEC_FLAG_RAW);
	CHECK(plen == size - CODEC_HEADER_SIZE);
	payload = frame + CODEC_HEADER_SIZE;
	h = (const struct rawinfer_reply *)(const void *)payload;
	CHECK(h->magic == RAWINFER_MAGIC_REPLY && h->reserved == 0);
	CHECK(h->ntensors == rep->n_outputs);

	CHECK(rawinfer_reply_read(payload, plen, &v, &got, &cause) == 0);
	CHECK(cause == NULL && got == &v.u.reply);
	CHECK(got->base.descriptor == &agxq__infer_reply__descriptor);
	CHECK(got->request_id == rep->request_id);
	CHECK(got->queue_us == rep->queue_us);
	CHECK(got->exec_us == rep->exec_us);
	CHECK(got->batch_rows == rep->batch_rows);
	CHECK(got->n_outputs == rep->n_outputs);
	if (rep->n_outputs <= RAWINFER_VIEW_STACK)
		CHECK(v.t == v.tstack && v.tp == v.pstack &&
		    v.rt == v.rstack);
	else
		CHECK(v.t != v.tstack && v.tp != v.pstack &&
		    v.rt != v.rstack);
	CHECK(tensors_match(rep->outputs, got->outputs, rep->n_outputs, &v,
	    payload, plen, HEAD_REPLY));
	memset(payload, 0xff, HEAD_REPLY + rep->n_outputs * TENSOR_SIZE);
	CHECK(got->request_id == rep->request_id);
	CHECK(tensors_match(rep->outputs, got->outputs, rep->n_outputs, &v,
	    payload, plen, HEAD_REPLY));
	rc = 0;
out:
	rawinfer_view_free(&v);
	EXPECT(v.t == v.tstack && v.tp == v.pstack && v.rt == v.rstack);
	free(cause);
	free(frame);
	return rc;
}

/*
 * Reads len bytes at p as a raw Infer, or a reply; 1 when that fails with
 * a cause holding want.
 */
static int
rejects(int reply, const uint8_t *p, size_t len, const char *want)
{
	struct rawinfer_view v;
	const Agxq__Infer *inf = NULL;
	const Agxq__InferReply *rep = NULL;
	char *cause = NULL;
	int rc, ok;

	rawinfer_view_init(&v);
	rc = reply ? rawinfer_reply_read(p, len, &v, &rep, &cause) :
	    rawinfer_infer_read(p, len, &v, &inf, &cause);
	rawinfer_view_free(&v);
	ok = rc == -1 && cause != NULL && strstr(cause, want) != NULL;
	if (!ok)
		printf("  %s: %zu bytes: %d \"%s\", want \"%s\"\n",
		    testlib_current, len, rc, cause != NULL ? cause : "(null)",
		    want);
	free(cause);
	return ok;
}

/* rejects for a raw Infer. */
static int
infer_rejects(const uint8_t *p, size_t len, const char *want)
{
	return rejects(0, p, len, want);
}

/* rejects for a raw InferReply. */
static int
reply_rejects(const uint8_t *p, size_t len, const char *want)
{
	return rejects(1, p, len, want);
}

/* Reads len bytes at p as a raw Infer, or a reply; 1 when that works. */
static int
reads(int reply, const uint8_t *p, size_t len)
{
	struct rawinfer_view v;
	const Agxq__Infer *inf = NULL;
	const Agxq__InferReply *rep = NULL;
	char *cause = NULL;
	int rc;

	rawinfer_view_init(&v);
	if (reply)
		rc = rawinfer_reply_read(p, len, &v, &rep, &cause);
	else
		rc = rawinfer_infer_read(p, len, &v, &inf, &cause);
	rawinfer_view_free(&v);
	if (rc != 0)
		printf("  %s: %zu bytes: %s\n", testlib_current, len,
		    cause != NULL ? cause : "(null)");
	free(cause);
	return rc == 0;
}

/*
 * The payload of a raw Infer with the three inputs of fx_three, malloc'd
 * (so 8-aligned); *len gets its size.
 */
static uint8_t *
payload_infer3(size_t *len)
{
	struct fixture fx;
	Agxq__Infer inf;
	uint8_t *frame, *p;
	size_t size;

	fx_three(&fx);
	infer_fill(&inf, fx.tp, 3);
	if ((size = rawinfer_infer_frame_size(&inf)) == 0 ||
	    (frame = malloc(size)) == NULL)
		abort();
	rawinfer_infer_frame_write(&inf, frame);
	*len = size - CODEC_HEADER_SIZE;
	if ((p = malloc(*len)) == NULL)
		abort();
	memcpy(p, frame + CODEC_HEADER_SIZE, *len);
	free(frame);
	return p;
}

/* The payload of a raw InferReply with two outputs (see payload_infer3). */
static uint8_t *
payload_reply2(size_t *len)
{
	struct fixture fx;
	Agxq__InferReply rep;
	uint8_t *frame, *p;
	size_t size;

	fx_three(&fx);
	reply_fill(&rep, fx.tp, 2);
	if ((size = rawinfer_reply_frame_size(&rep)) == 0 ||
	    (frame = malloc(size)) == NULL)
		abort();
	rawinfer_reply_frame_write(&rep, frame);
	*len = size - CODEC_HEADER_SIZE;
	if ((p = malloc(*len)) == NULL)
		abort();
	memcpy(p, frame + CODEC_HEADER_SIZE, *len);
	free(frame);
	return p;
}

/* One input of rank 2. */
static int
t_infer_one(void)
{
	static const int64_t dims[2] = { 2, 3 };
	struct fixture fx;
	Agxq__Infer inf;

	fx_tensor(&fx, 0, dims, 2, 0.5f);
	infer_fill(&inf, fx.tp, 1);
	CHECK(infer_round_trip(&inf) == 0);
	/* The plainest fields too. */
	inf.request_id = 0;
	inf.model_id = 0;
	inf.timeout_us = 0;
	inf.priority = INT32_MIN;
	CHECK(infer_round_trip(&inf) == 0);
	return 0;
out:
	return -1;
}

/* Three inputs of ranks 1, 6 and 3, the last zero-length. */
static int
t_infer_three(void)
{
	struct fixture fx;
	Agxq__Infer inf;

	fx_three(&fx);
	infer_fill(&inf, fx.tp, 3);
	CHECK(infer_round_trip(&inf) == 0);
	/* The zero-length one first, and in the middle. */
	fx.tp[0] = &fx.t[2];
	fx.tp[2] = &fx.t[0];
	CHECK(infer_round_trip(&inf) == 0);
	fx.tp[1] = &fx.t[0];
	fx.tp[2] = &fx.t[1];
	fx.tp[0] = &fx.t[2];
	CHECK(infer_round_trip(&inf) == 0);
	return 0;
out:
	return -1;
}

/* RAWINFER_VIEW_STACK inputs, one more (the view's heap) and more still. */
static int
t_infer_many(void)
{
	struct fixture fx;
	Agxq__Infer inf;
	size_t counts[] = { RAWINFER_VIEW_STACK, RAWINFER_VIEW_STACK + 1,
	    FX_MAX };

	for (size_t c = 0; c < TESTLIB_N(counts); c++) {
		fx_many(&fx, counts[c]);
		infer_fill(&inf, fx.tp, counts[c]);
		CHECK(infer_round_trip(&inf) == 0);
	}
	return 0;
out:
	return -1;
}

/* RAWINFER_MAX_TENSORS inputs, all the same tensor. */
static int
t_infer_max(void)
{
	static const int64_t dims[1] = { 3 };
	struct fixture fx;
	Agxq__Infer inf;
	Agxq__Tensor **tp;
	int rc = -1;

	if ((tp = calloc(RAWINFER_MAX_TENSORS, sizeof *tp)) == NULL)
		abort();
	fx_tensor(&fx, 0, dims, 1, 2.0f);
	for (size_t i = 0; i < RAWINFER_MAX_TENSORS; i++)
		tp[i] = &fx.t[0];
	infer_fill(&inf, tp, RAWINFER_MAX_TENSORS);
	CHECK(infer_round_trip(&inf) == 0);
	rc = 0;
out:
	free(tp);
	return rc;
}

/* A reply without outputs: the head alone. */
static int
t_reply_empty(void)
{
	Agxq__InferReply rep;

	reply_fill(&rep, NULL, 0);
	CHECK(rawinfer_reply_frame_size(&rep) == CODEC_HEADER_SIZE +
	    HEAD_REPLY);
	CHECK(reply_round_trip(&rep) == 0);
	rep.batch_rows = 0;
	rep.exec_us = 0;
	CHECK(reply_round_trip(&rep) == 0);
	return 0;
out:
	return -1;
}

/* Replies with one, two, three and more outputs than the view's stack. */
static int
t_reply_outputs(void)
{
	struct fixture fx;
	Agxq__InferReply rep;

	fx_three(&fx);
	for (size_t n = 1; n <= 3; n++) {
		reply_fill(&rep, fx.tp, n);
		CHECK(reply_round_trip(&rep) == 0);
	}
	fx_many(&fx, FX_MAX);
	reply_fill(&rep, fx.tp, FX_MAX);
	CHECK(reply_round_trip(&rep) == 0);
	return 0;
out:
	return -1;
}

/* An Infer that cannot be raw has a frame size of 0. */
static int
t_infer_not_raw(void)
{
	static const int64_t dims[RAWINFER_MAX_DIMS + 1] = { 1, 2, 1, 1, 1, 1,
	    1 };
	struct fixture fx;
	Agxq__Infer inf;
	Agxq__ShmRef ref = AGXQ__SHM_REF__INIT, *refs[1] = { &ref };
	Agxq__Tensor **tp = NULL;
	int rc = -1;

	fx_tensor(&fx, 0, dims, 2, 1.0f);
	fx_tensor(&fx, 1, dims, 3, 1.0f);
	infer_fill(&inf, fx.tp, 2);
	CHECK(rawinfer_infer_frame_size(&inf) != 0);

	/* Data in shared memory. */
	ref.region_id = 1;
	ref.length = 8;
	fx.t[1].shm = &ref;
	CHECK(rawinfer_infer_frame_size(&inf) == 0);
	fx.t[1].shm = NULL;

	/* Output regions. */
	inf.n_output_refs = 1;
	inf.output_refs = refs;
	CHECK(rawinfer_infer_frame_size(&inf) == 0);
	inf.n_output_refs = 0;
	inf.output_refs = NULL;

	/* Not float32. */
	fx.t[0].dtype = AGXQ__DTYPE__DTYPE_INVALID;
	CHECK(rawinfer_infer_frame_size(&inf) == 0);
	fx.t[0].dtype = (Agxq__DType)2;
	CHECK(rawinfer_infer_frame_size(&inf) == 0);
	fx.t[0].dtype = AGXQ__DTYPE__DTYPE_FLOAT32;

	/* No dimensions, or too many. */
	fx.t[1].n_shape = 0;
	CHECK(rawinfer_infer_frame_size(&inf) == 0);
	fx.t[1].n_shape = RAWINFER_MAX_DIMS + 1;
	CHECK(rawinfer_infer_frame_size(&inf) == 0);
	fx.t[1].n_shape = RAWINFER_MAX_DIMS;
	CHECK(rawinfer_infer_frame_size(&inf) != 0);
	fx.t[1].n_shape = 3;

	/* No inputs, or too many. */
	inf.n_inputs = 0;
	CHECK(rawinfer_infer_frame_size(&inf) == 0);
	if ((tp = calloc(RAWINFER_MAX_TENSORS + 1, sizeof *tp)) == NULL)
		abort();
	for (size_t i = 0; i <= RAWINFER_MAX_TENSORS; i++)
		tp[i] = &fx.t[0];
	inf.inputs = tp;
	inf.n_inputs = RAWINFER_MAX_TENSORS + 1;
	CHECK(rawinfer_infer_frame_size(&inf) == 0);
	inf.n_inputs = RAWINFER_MAX_TENSORS;
	CHECK(rawinfer_infer_frame_size(&inf) != 0);
	rc = 0;
out:
	free(tp);
	return rc;
}

/* A reply that cannot be raw has a frame size of 0. */
static int
t_reply_not_raw(void)
{
	static const int64_t dims[RAWINFER_MAX_DIMS + 1] = { 2, 2, 1, 1, 1, 1,
	    1 };
	struct fixture fx;
	Agxq__InferReply rep;
	Agxq__ShmRef ref = AGXQ__SHM_REF__INIT;
	Agxq__Tensor **tp = NULL;
	int rc = -1;

	fx_tensor(&fx, 0, dims, 2, 1.0f);
	fx_tensor(&fx, 1, dims, 1, 1.0f);
	reply_fill(&rep, fx.tp, 2);
	CHECK(rawinfer_reply_frame_size(&rep) != 0);

	fx.t[0].shm = &ref;
	CHECK(rawinfer_reply_frame_size(&rep) == 0);
	fx.t[0].shm = NULL;
	fx.t[1].dtype = AGXQ__DTYPE__DTYPE_INVALID;
	CHECK(rawinfer_reply_frame_size(&rep) == 0);
	fx.t[1].dtype = (Agxq__DType)2;
	CHECK(rawinfer_reply_frame_size(&rep) == 0);
	fx.t[1].dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	fx.t[1].n_shape = 0;
	CHECK(rawinfer_reply_frame_size(&rep) == 0);
	fx.t[1].n_shape = RAWINFER_MAX_DIMS + 1;
	CHECK(rawinfer_reply_frame_size(&rep) == 0);
	fx.t[1].n_shape = 1;
	CHECK(rawinfer_reply_frame_size(&rep) != 0);

	if ((tp = calloc(RAWINFER_MAX_TENSORS + 1, sizeof *tp)) == NULL)
		abort();
	for (size_t i = 0; i <= RAWINFER_MAX_TENSORS; i++)
		tp[i] = &fx.t[1];
	rep.outputs = tp;
	rep.n_outputs = RAWINFER_MAX_TENSORS + 1;
	CHECK(rawinfer_reply_frame_size(&rep) == 0);
	rep.n_outputs = RAWINFER_MAX_TENSORS;
	CHECK(rawinfer_reply_frame_size(&rep) != 0);
	rc = 0;
out:
	free(tp);
	return rc;
}

/*
 * Every truncation of a valid raw Infer is rejected, each in an exactly
 * sized buffer so that ASan sees any read past its end.
 */
static int
t_infer_truncated(void)
{
	uint8_t *good, *p = NULL;
	size_t len, cut = 0;
	const char *want;
	int rc = -1;

	good = payload_infer3(&len);
	CHECK(reads(0, good, len));
	for (cut = 0; cut < len; cut++) {
		if ((p = malloc(cut)) == NULL && cut > 0)
			abort();
		if (cut > 0)
			memcpy(p, good, cut);
		if (cut < HEAD_INFER)
			want = "shorter than its head";
		else if (cut < HEAD_INFER + 3 * TENSOR_SIZE)
			want = "too short for its table of 3 tensors";
		else
			want = "data at";
		CHECK(infer_rejects(p, cut, want));
		free(p);
		p = NULL;
	}
	rc = 0;
out:
	if (rc != 0)
		printf("  %s: cut at %zu of %zu\n", testlib_current, cut, len);
	free(p);
	free(good);
	return rc;
}

/* A raw Infer's head: magic, reserved word and input count. */
static int
t_infer_bad_head(void)
{
	struct rawinfer_infer *h;
	uint8_t *good, *p;
	size_t len;
	int rc = -1;

	good = payload_infer3(&len);
	if ((p = malloc(len)) == NULL)
		abort();
	h = (struct rawinfer_infer *)(void *)p;

	memcpy(p, good, len);
	h->magic = RAWINFER_MAGIC_REPLY;
	CHECK(infer_rejects(p, len, "magic 0x4f515841, not 0x49515841"));
	h->magic = 0;
	CHECK(infer_rejects(p, len, "magic"));

	memcpy(p, good, len);
	h->reserved = 1;
	CHECK(infer_rejects(p, len, "reserved word is 1"));

	memcpy(p, good, len);
	h->ntensors = 0;
	CHECK(infer_rejects(p, len, "raw infer with 0 inputs"));
	h->ntensors = RAWINFER_MAX_TENSORS + 1;
	CHECK(infer_rejects(p, len, "raw infer with 1025 inputs (1 to 1024)"));
	h->ntensors = UINT32_MAX;
	CHECK(infer_rejects(p, len, "inputs (1 to 1024)"));
	/* More inputs than the payload has room for in its table. */
	h->ntensors = RAWINFER_MAX_TENSORS;
	CHECK(infer_rejects(p, len, "too short for its table of 1024"));
	h->ntensors = 4;
	CHECK(infer_rejects(p, len, "too short for its table of 4"));

	/* A reply is not an Infer, nor the other way round. */
	memcpy(p, good, len);
	CHECK(reply_rejects(p, len, "magic 0x49515841, not 0x4f515841"));
	rc = 0;
out:
	free(p);
	free(good);
	return rc;
}

/* A raw Infer's tensor table: dtype, dimensions and where the data lies. */
static int
t_infer_bad_tensor(void)
{
	struct rawinfer_tensor *rt;
	uint8_t *good, *p;
	size_t len, table;
	char want[128];
	int rc = -1;

	good = payload_infer3(&len);
	if ((p = malloc(len)) == NULL)
		abort();
	rt = (struct rawinfer_tensor *)(void *)(p + HEAD_INFER);
	table = HEAD_INFER + 3 * TENSOR_SIZE;

	memcpy(p, good, len);
	rt[1].dtype = 2;
	CHECK(infer_rejects(p, len, "raw tensor 1: dtype 2, only float32"));
	rt[1].dtype = AGXQ__DTYPE__DTYPE_INVALID;
	CHECK(infer_rejects(p, len, "raw tensor 1: dtype 0"));

	memcpy(p, good, len);
	rt[0].ndim = 0;
	CHECK(infer_rejects(p, len, "raw tensor 0: 0 dimensions (1 to 6)"));
	rt[0].ndim = RAWINFER_MAX_DIMS + 1;
	CHECK(infer_rejects(p, len, "raw tensor 0: 7 dimensions"));
	rt[0].ndim = UINT32_MAX;
	CHECK(infer_rejects(p, len, "dimensions (1 to 6)"));

	/* Tensor 0 has rank 1: dimensions 1 to 5 are unused. */
	memcpy(p, good, len);
	rt[0].shape[1] = 3;
	CHECK(infer_rejects(p, len, "raw tensor 0: unused dimension 1 is not"));
	memcpy(p, good, len);
	rt[2].shape[RAWINFER_MAX_DIMS - 1] = -1;
	CHECK(infer_rejects(p, len, "raw tensor 2: unused dimension 5"));

	/* Data offsets: tensor 0's 12 bytes fit 4 or 1 bytes on, unaligned. */
	memcpy(p, good, len);
	rt[0].offset += 4;
	snprintf(want, sizeof want, "raw tensor 0: data offset %llu is not "
	    "8-aligned", (unsigned long long)rt[0].offset);
	CHECK(infer_rejects(p, len, want));
	rt[0].offset -= 3;
	CHECK(infer_rejects(p, len, "is not 8-aligned"));
	rt[0].offset += 3 + RAWINFER_ALIGN - 4;
	CHECK(reads(0, p, len));

	memcpy(p, good, len);
	rt[0].offset = 0;
	snprintf(want, sizeof want, "raw tensor 0: data at 0, 12 bytes, lies "
	    "outside the payload after the table (%zu to %zu)", table, len);
	CHECK(infer_rejects(p, len, want));
	rt[0].offset = HEAD_INFER;
	CHECK(infer_rejects(p, len, "raw tensor 0: data at 40,"));
	rt[0].offset = table - RAWINFER_ALIGN;
	CHECK(infer_rejects(p, len, "raw tensor 0: data at"));

	memcpy(p, good, len);
	rt[1].length += 1;
	CHECK(infer_rejects(p, len, "raw tensor 1: data at"));
	CHECK(infer_rejects(p, len, "outside the payload"));
	memcpy(p, good, len);
	rt[1].offset = len & ~(size_t)(RAWINFER_ALIGN - 1);
	CHECK(infer_rejects(p, len, "raw tensor 1: data at"));
	rt[1].offset = (len + RAWINFER_ALIGN) & ~(size_t)(RAWINFER_ALIGN - 1);
	rt[1].length = 0;
	CHECK(infer_rejects(p, len, "raw tensor 1: data at"));
	/* Zero bytes at the very end are in the payload. */
	CHECK(len % RAWINFER_ALIGN == 0);
	rt[1].offset = len;
	CHECK(reads(0, p, len));

	/* Sums that overflow. */
	memcpy(p, good, len);
	rt[1].length = UINT64_MAX;
	snprintf(want, sizeof want, "%llu bytes",
	    (unsigned long long)UINT64_MAX);
	CHECK(infer_rejects(p, len, want));
	rt[1].length = UINT64_MAX - rt[1].offset + 1;
	CHECK(infer_rejects(p, len, "raw tensor 1: data at"));
	memcpy(p, good, len);
	rt[2].offset = UINT64_MAX & ~(uint64_t)(RAWINFER_ALIGN - 1);
	CHECK(infer_rejects(p, len, "raw tensor 2: data at"));
	rt[2].length = RAWINFER_ALIGN;
	CHECK(infer_rejects(p, len, "raw tensor 2: data at"));
	rc = 0;
out:
	free(p);
	free(good);
	return rc;
}

/* A payload that is not 8-aligned in memory is refused, however good. */
static int
t_unaligned(void)
{
	uint64_t *words = NULL;
	uint8_t *good, *rgood;
	size_t len, rlen;
	int rc = -1;

	good = payload_infer3(&len);
	rgood = payload_reply2(&rlen);
	if ((words = malloc(len + rlen + 2 * RAWINFER_ALIGN)) == NULL)
		abort();
	for (size_t off = 1; off < RAWINFER_ALIGN; off++) {
		memcpy((uint8_t *)words + off, good, len);
		CHECK(infer_rejects((uint8_t *)words + off, len,
		    "raw infer not 8-aligned in memory"));
		memcpy((uint8_t *)words + off, rgood, rlen);
		CHECK(reply_rejects((uint8_t *)words + off, rlen,
		    "raw infer reply not 8-aligned in memory"));
	}
	memcpy(words, good, len);
	CHECK(reads(0, (uint8_t *)words, len));
	rc = 0;
out:
	free(words);
	free(rgood);
	free(good);
	return rc;
}

/* A raw InferReply: magic, reserved word, count, tensors, truncations. */
static int
t_reply_bad(void)
{
	struct rawinfer_reply *h;
	struct rawinfer_tensor *rt;
	uint8_t *good, *p, *q = NULL;
	size_t len, cut = 0;
	const char *want;
	int rc = -1;

	good = payload_reply2(&len);
	if ((p = malloc(len)) == NULL)
		abort();
	h = (struct rawinfer_reply *)(void *)p;
	rt = (struct rawinfer_tensor *)(void *)(p + HEAD_REPLY);
	CHECK(reads(1, good, len));

	memcpy(p, good, len);
	h->magic = RAWINFER_MAGIC_INFER;
	CHECK(reply_rejects(p, len, "raw infer reply: magic 0x49515841"));
	CHECK(infer_rejects(good, len, "raw infer: magic 0x4f515841"));

	memcpy(p, good, len);
	h->reserved = 0x80000000u;
	CHECK(reply_rejects(p, len, "reserved word is 2147483648, not 0"));

	memcpy(p, good, len);
	h->ntensors = RAWINFER_MAX_TENSORS + 1;
	CHECK(reply_rejects(p, len,
	    "raw infer reply with 1025 outputs (at most 1024)"));
	h->ntensors = UINT32_MAX;
	CHECK(reply_rejects(p, len, "outputs (at most 1024)"));
	h->ntensors = RAWINFER_MAX_TENSORS;
	CHECK(reply_rejects(p, len, "too short for its table of 1024"));
	/* No outputs is a reply; the table and data are then just bytes. */
	h->ntensors = 0;
	CHECK(reads(1, p, len));

	memcpy(p, good, len);
	rt[1].dtype = 2;
	CHECK(reply_rejects(p, len, "raw tensor 1: dtype 2"));
	memcpy(p, good, len);
	rt[0].ndim = RAWINFER_MAX_DIMS + 1;
	CHECK(reply_rejects(p, len, "raw tensor 0: 7 dimensions"));
	memcpy(p, good, len);
	rt[1].length = UINT64_MAX;
	CHECK(reply_rejects(p, len, "raw tensor 1: data at"));
	memcpy(p, good, len);
	rt[0].offset = HEAD_REPLY;
	CHECK(reply_rejects(p, len, "raw tensor 0: data at 40,"));

	for (cut = 0; cut < len; cut++) {
		if ((q = malloc(cut)) == NULL && cut > 0)
			abort();
		if (cut > 0)
			memcpy(q, good, cut);
		if (cut < HEAD_REPLY)
			want = "shorter than its head";
		else if (cut < HEAD_REPLY + 2 * TENSOR_SIZE)
			want = "too short for its table of 2 tensors";
		else
			want = "data at";
		CHECK(reply_rejects(q, cut, want));
		free(q);
		q = NULL;
	}
	rc = 0;
out:
	if (rc != 0 && cut > 0)
		printf("  %s: cut at %zu of %zu\n", testlib_current, cut, len);
	free(q);
	free(p);
	free(good);
	return rc;
}

/*
 * CODEC_FLAG_RAW is unknown on the socket, known in a ring slot, and never
 * with CODEC_FLAG_ZSTD.
 */
static int
t_codec_raw_flag(void)
{
	struct codec_limits lim;
	uint8_t buf[CODEC_HEADER_SIZE];
	uint32_t plen, flags;
	int code;
	char *cause = NULL;

	codec_limits_default(&lim);
	codec_header_write(buf, 40, CODEC_FLAG_RAW);
	code = 0;
	CHECK(codec_header_parse(buf, sizeof buf, &lim, &plen, &flags, &code,
	    &cause) == CODEC_ERROR);
	CHECK(code == AGXQ__ERROR_CODE__ERR_PROTO);
	CHECK(cause != NULL && strstr(cause, "unknown frame flags") != NULL);
	free(cause);
	cause = NULL;

	plen = flags = 0;
	CHECK(codec_ring_header_parse(buf, sizeof buf, &lim, &plen, &flags,
	    &code, &cause) == CODEC_OK);
	CHECK(cause == NULL && plen == 40 && flags == CODEC_FLAG_RAW);
	CHECK(codec_ring_header_parse(buf, sizeof buf - 1, &lim, &plen,
	    &flags, &code, &cause) == CODEC_NEED_MORE);

	codec_header_write(buf, 40, CODEC_FLAG_RAW | CODEC_FLAG_ZSTD);
	code = 0;
	CHECK(codec_ring_header_parse(buf, sizeof buf, &lim, &plen, &flags,
	    &code, &cause) == CODEC_ERROR);
	CHECK(code == AGXQ__ERROR_CODE__ERR_PROTO);
	CHECK(cause != NULL &&
	    strstr(cause, "a raw frame is not compressed") != NULL);
	free(cause);
	cause = NULL;
	CHECK(codec_header_parse(buf, sizeof buf, &lim, &plen, &flags, &code,
	    &cause) == CODEC_ERROR);
	CHECK(cause != NULL && strstr(cause, "unknown frame flags") != NULL);
	free(cause);
	cause = NULL;

	/* The ring knows no more than that. */
	codec_header_write(buf, 40, CODEC_FLAG_RAW | 0x4u);
	CHECK(codec_ring_header_parse(buf, sizeof buf, &lim, &plen, &flags,
	    &code, &cause) == CODEC_ERROR);
	CHECK(cause != NULL && strstr(cause, "unknown frame flags") != NULL);
	free(cause);
	cause = NULL;
	codec_header_write(buf, 40, CODEC_FLAG_ZSTD);
	CHECK(codec_ring_header_parse(buf, sizeof buf, &lim, &plen, &flags,
	    &code, &cause) == CODEC_OK);
	CHECK(flags == CODEC_FLAG_ZSTD);
	codec_header_write(buf, 40, 0);
	CHECK(codec_ring_header_parse(buf, sizeof buf, &lim, &plen, &flags,
	    &code, &cause) == CODEC_OK);
	CHECK(flags == 0);

	/* The limits hold for raw frames as for any. */
	lim.max_frame = 39;
	codec_header_write(buf, 40, CODEC_FLAG_RAW);
	CHECK(codec_ring_header_parse(buf, sizeof buf, &lim, &plen, &flags,
	    &code, &cause) == CODEC_ERROR);
	CHECK(code == AGXQ__ERROR_CODE__ERR_TOOBIG && cause != NULL);
	free(cause);
	cause = NULL;
	codec_header_write(buf, 0, CODEC_FLAG_RAW);
	CHECK(codec_ring_header_parse(buf, sizeof buf, &lim, &plen, &flags,
	    &code, &cause) == CODEC_ERROR);
	CHECK(cause != NULL && strstr(cause, "empty") != NULL);
	free(cause);
	return 0;
out:
	free(cause);
	return -1;
}

/* Checks that the n tensors got have want's shapes and data; 1 if so. */
static int
same_tensors(Agxq__Tensor *const *want, Agxq__Tensor *const *got, size_t n)
{
	size_t i = 0;

	for (i = 0; i < n; i++) {
		CHECK(got[i]->dtype == want[i]->dtype);
		CHECK(got[i]->shm == NULL);
		CHECK(got[i]->n_shape == want[i]->n_shape);
		CHECK(memcmp(got[i]->shape, want[i]->shape,
		    want[i]->n_shape * sizeof(int64_t)) == 0);
		CHECK(got[i]->data.len == want[i]->data.len);
		if (want[i]->data.len > 0)
			CHECK(memcmp(got[i]->data.data, want[i]->data.data,
			    want[i]->data.len) == 0);
	}
	return 1;
out:
	printf("  %s: tensor %zu of %zu\n", testlib_current, i, n);
	return 0;
}

/*
 * rawinfer_reply_pack: a raw reply frame goes on the socket as an Envelope
 * frame; any other frame is left alone; a bad one or one over the limits
 * is refused.
 */
static int
t_reply_pack(void)
{
	struct fixture fx;
	struct codec_limits lim;
	Agxq__InferReply rep;
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *dec = NULL;
	const Agxq__InferReply *got;
	uint8_t *frame = NULL, *out = NULL, *sock = NULL;
	size_t size, slen, out_len = 0, raw_len = 0;
	uint32_t plen = 0, flags = 0;
	uint64_t id;
	int code = 0, rc = -1;
	char *cause = NULL;

	codec_limits_default(&lim);
	fx_three(&fx);
	reply_fill(&rep, fx.tp, 3);
	CHECK((size = rawinfer_reply_frame_size(&rep)) != 0);
	CHECK((frame = malloc(size)) != NULL);
	rawinfer_reply_frame_write(&rep, frame);

	id = 1;
	CHECK(rawinfer_reply_pack(frame, size, 0, &lim, &out, &out_len,
	    &raw_len, &id) == 0);
	CHECK(id == rep.request_id && out != NULL);
	CHECK(codec_header_parse(out, out_len, &lim, &plen, &flags, &code,
	    &cause) == CODEC_OK);
	CHECK(flags == 0 && plen == out_len - CODEC_HEADER_SIZE);
	CHECK(raw_len == plen);
	CHECK(codec_decode(out + CODEC_HEADER_SIZE, plen, flags, &lim, &dec,
	    &code, &cause) == 0);
	CHECK(dec->body_case == AGXQ__ENVELOPE__BODY_INFER_REPLY);
	got = dec->infer_reply;
	CHECK(got->request_id == rep.request_id);
	CHECK(got->queue_us == rep.queue_us && got->exec_us == rep.exec_us);
	CHECK(got->batch_rows == rep.batch_rows);
	CHECK(got->n_outputs == 3);
	CHECK(same_tensors(rep.outputs, got->outputs, 3));
	codec_envelope_free(dec);
	dec = NULL;
	free(out);
	out = NULL;

	/* A reply with no outputs. */
	reply_fill(&rep, NULL, 0);
	free(frame);
	CHECK((frame = malloc(CODEC_HEADER_SIZE + HEAD_REPLY)) != NULL);
	rawinfer_reply_frame_write(&rep, frame);
	CHECK(rawinfer_reply_pack(frame, CODEC_HEADER_SIZE + HEAD_REPLY, 0,
	    &lim, &out, &out_len, &raw_len, &id) == 0);
	CHECK(codec_header_parse(out, out_len, &lim, &plen, &flags, &code,
	    &cause) == CODEC_OK);
	CHECK(codec_decode(out + CODEC_HEADER_SIZE, plen, flags, &lim, &dec,
	    &code, &cause) == 0);
	CHECK(dec->body_case == AGXQ__ENVELOPE__BODY_INFER_REPLY);
	CHECK(dec->infer_reply->n_outputs == 0);
	CHECK(dec->infer_reply->request_id == rep.request_id);
	codec_envelope_free(dec);
	dec = NULL;
	free(out);
	out = NULL;

	/* An Envelope frame is not raw: 1, nothing done. */
	reply_fill(&rep, fx.tp, 3);
	env.body_case = AGXQ__ENVELOPE__BODY_INFER_REPLY;
	env.infer_reply = &rep;
	CHECK(codec_encode(&env, 0, &lim, &sock, &slen, NULL) == 0);
	CHECK(rawinfer_reply_pack(sock, slen, 0, &lim, &out, &out_len,
	    &raw_len, &id) == 1);
	CHECK(out == NULL);

	/* Raw, but not a reply, or not whole: -1, the id unknown. */
	free(frame);
	CHECK((frame = malloc(size)) != NULL);
	rawinfer_reply_frame_write(&rep, frame);
	frame[CODEC_HEADER_SIZE] ^= 1;
	id = 1;
	CHECK(rawinfer_reply_pack(frame, size, 0, &lim, &out, &out_len,
	    &raw_len, &id) == -1);
	CHECK(out == NULL && id == 0);
	frame[CODEC_HEADER_SIZE] ^= 1;
	CHECK(rawinfer_reply_pack(frame, size - 1, 0, &lim, &out, &out_len,
	    &raw_len, &id) == -1);
	CHECK(out == NULL);

	/* A raw header over the frame limit is raw still: -1, not 1. */
	lim.max_frame = 64;
	CHECK(rawinfer_reply_pack(frame, size, 0, &lim, &out, &out_len,
	    &raw_len, &id) == -1);
	CHECK(out == NULL);
	codec_limits_default(&lim);

	/* Over the limit on a message: -1, with the id to answer. */
	lim.max_message = 64;
	CHECK(rawinfer_reply_pack(frame, size, 0, &lim, &out, &out_len,
	    &raw_len, &id) == -1);
	CHECK(out == NULL && id == rep.request_id);
	rc = 0;
out:
	codec_envelope_free(dec);
	free(cause);
	free(sock);
	free(out);
	free(frame);
	return rc;
}

static const struct testlib_icase cases[] = {
	{ "infer_one", t_infer_one },
	{ "infer_three", t_infer_three },
	{ "infer_many", t_infer_many },
	{ "infer_max", t_infer_max },
	{ "reply_empty", t_reply_empty },
	{ "reply_outputs", t_reply_outputs },
	{ "infer_not_raw", t_infer_not_raw },
	{ "reply_not_raw", t_reply_not_raw },
	{ "infer_truncated", t_infer_truncated },
	{ "infer_bad_head", t_infer_bad_head },
	{ "infer_bad_tensor", t_infer_bad_tensor },
	{ "unaligned", t_unaligned },
	{ "reply_bad", t_reply_bad },
	{ "codec_raw_flag", t_codec_raw_flag },
	{ "reply_pack", t_reply_pack },
};

/* Runs every case, or the one named in argv[1]. */
int
main(int argc, char **argv)
{
	return testlib_run_int(cases, TESTLIB_N(cases), argc, argv);
}
