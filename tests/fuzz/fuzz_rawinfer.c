/*
 * fuzz_rawinfer: libFuzzer target for the ring's raw Infer and InferReply
 * readers (proto/rawinfer.c). Input is one raw payload, copied to an
 * 8-aligned buffer of its exact size and read as both. Reading must never
 * crash; a view that reads must lie in the buffer, and must re-encode to a
 * raw frame that reads back to the same fields, shapes and data. A reply
 * that reads must also pack for the socket (rawinfer_reply_pack) into an
 * Envelope frame that decodes to the same.
 *
 *	clang -fsanitize=fuzzer,address -Iproto -I<build>/proto \
 *	    tests/fuzz/fuzz_rawinfer.c proto/rawinfer.c proto/codec.c \
 *	    <build>/proto/agxq.pb-c.c -lprotobuf-c -lzstd
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "rawinfer.h"

/* Re-encoded frames above this are not built (aliased data can add up). */
#define FUZZ_MAX_FRAME (64u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts unless p, n bytes, lies in the size bytes at buf. */
static void
fuzz_inside(const void *p, size_t n, const uint8_t *buf, size_t size)
{
	uintptr_t a = (uintptr_t)p, lo = (uintptr_t)buf;

	if (p == NULL || a < lo || a - lo > size || n > size - (a - lo))
		abort();
}

/*
 * Aborts unless the n tensors t of view v have their shapes in the view's
 * copy of the table and their data in the size bytes at buf.
 */
static void
fuzz_check_tensors(Agxq__Tensor *const *t, size_t n,
    const struct rawinfer_view *v, const uint8_t *buf, size_t size)
{
	if (n > RAWINFER_MAX_TENSORS || t == NULL)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (t[i] == NULL || t[i]->dtype != AGXQ__DTYPE__DTYPE_FLOAT32 ||
		    t[i]->shm != NULL || t[i]->n_shape < 1 ||
		    t[i]->n_shape > RAWINFER_MAX_DIMS)
			abort();
		fuzz_inside(t[i]->shape, t[i]->n_shape * sizeof(int64_t),
		    (const uint8_t *)v->rt, n * sizeof *v->rt);
		fuzz_inside(t[i]->data.data, t[i]->data.len, buf, size);
		if ((uintptr_t)t[i]->data.data % RAWINFER_ALIGN != 0)
			abort();
	}
}

/* Aborts unless the n tensors a and b have the same shapes and data. */
static void
fuzz_same_tensors(Agxq__Tensor *const *a, Agxq__Tensor *const *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (a[i]->dtype != b[i]->dtype ||
		    a[i]->n_shape != b[i]->n_shape ||
		    a[i]->data.len != b[i]->data.len)
			abort();
		if (memcmp(a[i]->shape, b[i]->shape,
		    a[i]->n_shape * sizeof(int64_t)) != 0)
			abort();
		if (a[i]->data.len > 0 && memcmp(a[i]->data.data,
		    b[i]->data.data, a[i]->data.len) != 0)
			abort();
	}
}

/*
 * Parses a raw frame of size bytes as a ring slot's; aborts unless it is
 * raw and whole. Returns its payload's length.
 */
static size_t
fuzz_frame(const uint8_t *frame, size_t size)
{
	struct codec_limits lim;
	uint32_t plen = 0, flags = 0;
	int code = 0;
	char *cause = NULL;

	lim.max_frame = UINT32_MAX;
	lim.max_message = UINT32_MAX;
	if (codec_ring_header_parse(frame, size, &lim, &plen, &flags, &code,
	    &cause) != CODEC_OK || flags != CODEC_FLAG_RAW ||
	    (size_t)plen != size - CODEC_HEADER_SIZE)
		abort();
	return plen;
}

/* Re-encodes inf, reads the frame back and checks it is the same. */
static void
fuzz_infer_again(const Agxq__Infer *inf)
{
	struct rawinfer_view v;
	const Agxq__Infer *again = NULL;
	uint8_t *frame;
	size_t fsize, plen;
	char *cause = NULL;

	if ((fsize = rawinfer_infer_frame_size(inf)) == 0)
		abort();
	if (fsize > FUZZ_MAX_FRAME)
		return;
	if ((frame = malloc(fsize)) == NULL)
		abort();
	rawinfer_infer_frame_write(inf, frame);
	plen = fuzz_frame(frame, fsize);
	if (rawinfer_infer_read(frame + CODEC_HEADER_SIZE, plen, &v, &again,
	    &cause) != 0)
		abort();
	if (again->request_id != inf->request_id ||
	    again->model_id != inf->model_id ||
	    again->timeout_us != inf->timeout_us ||
	    again->priority != inf->priority ||
	    again->n_inputs != inf->n_inputs || again->n_output_refs != 0)
		abort();
	fuzz_check_tensors(again->inputs, again->n_inputs, &v,
	    frame + CODEC_HEADER_SIZE, plen);
	fuzz_same_tensors(inf->inputs, again->inputs, inf->n_inputs);
	rawinfer_view_free(&v);
	free(frame);
}

/* The same for an InferReply. */
static void
fuzz_reply_again(const Agxq__InferReply *rep)
{
	struct rawinfer_view v;
	const Agxq__InferReply *again = NULL;
	uint8_t *frame;
	size_t fsize, plen;
	char *cause = NULL;

	if ((fsize = rawinfer_reply_frame_size(rep)) == 0)
		abort();
	if (fsize > FUZZ_MAX_FRAME)
		return;
	if ((frame = malloc(fsize)) == NULL)
		abort();
	rawinfer_reply_frame_write(rep, frame);
	plen = fuzz_frame(frame, fsize);
	if (rawinfer_reply_read(frame + CODEC_HEADER_SIZE, plen, &v, &again,
	    &cause) != 0)
		abort();
	if (again->request_id != rep->request_id ||
	    again->queue_us != rep->queue_us ||
	    again->exec_us != rep->exec_us ||
	    again->batch_rows != rep->batch_rows ||
	    again->n_outputs != rep->n_outputs)
		abort();
	fuzz_check_tensors(again->outputs, again->n_outputs, &v,
	    frame + CODEC_HEADER_SIZE, plen);
	fuzz_same_tensors(rep->outputs, again->outputs, rep->n_outputs);
	rawinfer_view_free(&v);
	free(frame);
}

/*
 * Puts the size bytes of payload, which read as rep, in a raw frame and
 * packs that for the socket; aborts unless the Envelope frame decodes to
 * the same reply.
 */
static void
fuzz_reply_pack(const uint8_t *payload, size_t size,
    const Agxq__InferReply *rep)
{
	struct codec_limits lim;
	Agxq__Envelope *env = NULL;
	const Agxq__InferReply *got;
	uint8_t *frame, *out = NULL;
	size_t out_len, raw_len;
	uint32_t plen, flags;
	uint64_t id = 0;
	int code = 0;
	char *cause = NULL;

	codec_limits_default(&lim);
	if (size > lim.max_frame)
		return;
	if ((frame = malloc(CODEC_HEADER_SIZE + size)) == NULL)
		abort();
	codec_header_write(frame, (uint32_t)size, CODEC_FLAG_RAW);
	memcpy(frame + CODEC_HEADER_SIZE, payload, size);
	if (rawinfer_reply_pack(frame, CODEC_HEADER_SIZE + size, 64, &lim,
	    &out, &out_len, &raw_len, &id) != 0 || id != rep->request_id)
		abort();
	if (codec_header_parse(out, out_len, &lim, &plen, &flags, &code,
	    &cause) != CODEC_OK ||
	    (size_t)plen != out_len - CODEC_HEADER_SIZE ||
	    codec_decode(out + CODEC_HEADER_SIZE, plen, flags, &lim, &env,
	    &code, &cause) != 0 ||
	    env->body_case != AGXQ__ENVELOPE__BODY_INFER_REPLY)
		abort();
	got = env->infer_reply;
	if (got->request_id != rep->request_id ||
	    got->queue_us != rep->queue_us || got->exec_us != rep->exec_us ||
	    got->batch_rows != rep->batch_rows ||
	    got->n_outputs != rep->n_outputs)
		abort();
	fuzz_same_tensors(rep->outputs, got->outputs, rep->n_outputs);
	codec_envelope_free(env);
	free(out);
	free(frame);
}

/* Reads one payload as a raw Infer and as a raw InferReply. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rawinfer_view v;
	struct rawinfer_infer ih;
	struct rawinfer_reply rh;
	const Agxq__Infer *inf = NULL;
	const Agxq__InferReply *rep = NULL;
	uint8_t *buf;
	char *cause = NULL;

	/* malloc is 8-aligned, and ASan sees any read past size. */
	if ((buf = malloc(size > 0 ? size : 1)) == NULL)
		abort();
	if (size > 0)
		memcpy(buf, data, size);

	if (rawinfer_infer_read(buf, size, &v, &inf, &cause) == 0) {
		memcpy(&ih, buf, sizeof ih);
		if (cause != NULL || inf == NULL || inf->n_inputs < 1 ||
		    inf->n_inputs != ih.ntensors ||
		    inf->request_id != ih.request_id ||
		    inf->model_id != ih.model_id ||
		    inf->timeout_us != ih.timeout_us ||
		    inf->priority != ih.priority || inf->n_output_refs != 0)
			abort();
		fuzz_check_tensors(inf->inputs, inf->n_inputs, &v, buf, size);
		/*
		 * Read once: with the head and table overwritten, as a client
		 * may write its slot, the view still encodes to the same.
		 */
		memset(buf, 0xff, sizeof ih + inf->n_inputs *
		    sizeof(struct rawinfer_tensor));
		fuzz_infer_again(inf);
		memcpy(buf, data, size);
	} else {
		if (cause == NULL)
			abort();
		free(cause);
		cause = NULL;
	}
	rawinfer_view_free(&v);

	if (rawinfer_reply_read(buf, size, &v, &rep, &cause) == 0) {
		memcpy(&rh, buf, sizeof rh);
		if (cause != NULL || rep == NULL ||
		    rep->n_outputs != rh.ntensors ||
		    rep->request_id != rh.request_id ||
		    rep->queue_us != rh.queue_us ||
		    rep->exec_us != rh.exec_us ||
		    rep->batch_rows != rh.batch_rows)
			abort();
		fuzz_check_tensors(rep->outputs, rep->n_outputs, &v, buf, size);
		fuzz_reply_again(rep);
		fuzz_reply_pack(buf, size, rep);
	} else {
		if (cause == NULL)
			abort();
		free(cause);
	}
	rawinfer_view_free(&v);
	free(buf);
	return 0;
}
