/*
 * codec: the agxq wire format, pure (bytes in, messages out, no I/O).
 *
 * Frames are an 8-byte little-endian header (payload length, flags) and one
 * packed Envelope, zstd-compressed when that saves bytes. Every length read
 * from the wire is checked against the limits before it is used.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "codec.h"

/*
 * Payloads above CODEC_SAMPLE_ABOVE are compressed whole only when a
 * CODEC_SAMPLE_SIZE sample from their middle (tensor data, past the message
 * fields) looks compressible: its order-0 entropy is at most
 * CODEC_SAMPLE_BITS bits a byte. Float tensors come out near 7.3 and zstd
 * saves less than 1/8 on them; zeros, small integers and other repetitive
 * data come out far lower. The estimate costs ~2 us; compressing an 8 KiB
 * sample to decide cost 16-32 us on the executor for every large reply,
 * and compressing a 128 KiB tensor only to throw the result away ~0.2 ms.
 * It misses data whose only redundancy is long repeats of high-entropy
 * bytes, which zstd's matching would find.
 */
#define CODEC_SAMPLE_SIZE 4096u
#define CODEC_SAMPLE_ABOVE (32u << 10)
#define CODEC_SAMPLE_BITS 6.5
#define CODEC_ZSTD_LEVEL 1

static const char *const codec_body_names[] = {
	[AGXQ__ENVELOPE__BODY__NOT_SET] = "none",
	[AGXQ__ENVELOPE__BODY_HELLO] = "hello",
	[AGXQ__ENVELOPE__BODY_HELLO_REPLY] = "hello_reply",
	[AGXQ__ENVELOPE__BODY_LOAD_MODEL] = "load_model",
	[AGXQ__ENVELOPE__BODY_LOAD_MODEL_REPLY] = "load_model_reply",
	[AGXQ__ENVELOPE__BODY_UNLOAD_MODEL] = "unload_model",
	[AGXQ__ENVELOPE__BODY_UNLOAD_MODEL_REPLY] = "unload_model_reply",
	[AGXQ__ENVELOPE__BODY_INFER] = "infer",
	[AGXQ__ENVELOPE__BODY_INFER_REPLY] = "infer_reply",
	[AGXQ__ENVELOPE__BODY_STATS_REQUEST] = "stats_request",
	[AGXQ__ENVELOPE__BODY_STATS] = "stats",
	[AGXQ__ENVELOPE__BODY_ERROR] = "error",
	[AGXQ__ENVELOPE__BODY_REGISTER_REGION] = "register_region",
	[AGXQ__ENVELOPE__BODY_REGISTER_REGION_REPLY] = "register_region_reply",
	[AGXQ__ENVELOPE__BODY_RELEASE_REGION] = "release_region",
	[AGXQ__ENVELOPE__BODY_RELEASE_REGION_REPLY] = "release_region_reply",
	[AGXQ__ENVELOPE__BODY_ATTACH_RING] = "attach_ring",
	[AGXQ__ENVELOPE__BODY_ATTACH_RING_REPLY] = "attach_ring_reply",
	[AGXQ__ENVELOPE__BODY_RING_KICK] = "ring_kick",
};

static void codec_fail(int *code, char **cause, int value, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));

/* Sets *code and a malloc'd *cause (either pointer may be NULL). */
static void
codec_fail(int *code, char **cause, int value, const char *fmt, ...)
{
	va_list ap;

	if (code != NULL)
		*code = value;
	if (cause == NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) == -1)
		*cause = NULL;
	va_end(ap);
}

/* Reads a little-endian u32. */
static uint32_t
codec_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

/* Writes a little-endian u32. */
static void
codec_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* Fills lim with the default limits. */
void
codec_limits_default(struct codec_limits *lim)
{
	lim->max_frame = CODEC_DEFAULT_MAX_FRAME;
	lim->max_message = CODEC_DEFAULT_MAX_MESSAGE;
}

/*
 * Parses a frame header, checking flags (known: those in known) and length
 * against the limits.
 */
static enum codec_result
codec_header_check(const uint8_t *buf, size_t len, uint32_t known,
    const struct codec_limits *lim, uint32_t *payload_len, uint32_t *flags,
    int *code, char **cause)
{
	uint32_t n, f;

	if (len < CODEC_HEADER_SIZE)
		return CODEC_NEED_MORE;
	n = codec_get_u32(buf);
	f = codec_get_u32(buf + 4);
	if (f & ~known) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_PROTO,
		    "unknown frame flags 0x%x", f);
		return CODEC_ERROR;
	}
	if ((f & CODEC_FLAG_RAW) && f != CODEC_FLAG_RAW) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_PROTO,
		    "frame flags 0x%x: a raw frame is not compressed", f);
		return CODEC_ERROR;
	}
	if (n > lim->max_frame) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_TOOBIG,
		    "frame of %u bytes over the limit of %u", n, lim->max_frame);
		return CODEC_ERROR;
	}
	if (n == 0) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_PROTO,
		    "empty frame");
		return CODEC_ERROR;
	}
	*payload_len = n;
	*flags = f;
	return CODEC_OK;
}

/* Parses a frame header, checking flags and length against the limits. */
enum codec_result
codec_header_parse(const uint8_t *buf, size_t len,
    const struct codec_limits *lim, uint32_t *payload_len, uint32_t *flags,
    int *code, char **cause)
{
	return codec_header_check(buf, len, CODEC_FLAGS_KNOWN, lim,
	    payload_len, flags, code, cause);
}

/* The same for a ring slot's frame, which may be raw. */
enum codec_result
codec_ring_header_parse(const uint8_t *buf, size_t len,
    const struct codec_limits *lim, uint32_t *payload_len, uint32_t *flags,
    int *code, char **cause)
{
	return codec_header_check(buf, len, CODEC_FLAGS_KNOWN | CODEC_FLAG_RAW,
	    lim, payload_len, flags, code, cause);
}

/* Writes a frame header. */
void
codec_header_write(uint8_t out[CODEC_HEADER_SIZE], uint32_t len,
    uint32_t flags)
{
	codec_put_u32(out, len);
	codec_put_u32(out + 4, flags);
}

/*
 * Decompresses a zstd payload into a malloc'd buffer (*out, *out_len) after
 * checking its declared size against max_message.
 */
static int
codec_inflate(const uint8_t *payload, size_t len,
    const struct codec_limits *lim, uint8_t **out, size_t *out_len, int *code,
    char **cause)
{
	unsigned long long size;
	uint8_t *buf;
	size_t got;

	size = ZSTD_getFrameContentSize(payload, len);
	if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_CORRUPT,
		    "compressed frame has no content size");
		return -1;
	}
	if (size > lim->max_message) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_TOOBIG,
		    "compressed message of %llu bytes over the limit of %u",
		    size, lim->max_message);
		return -1;
	}
	if (size == 0) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_PROTO,
		    "empty message");
		return -1;
	}
	if ((buf = malloc((size_t)size)) == NULL) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_NOMEM,
		    "out of memory decompressing %llu bytes", size);
		return -1;
	}
	got = ZSTD_decompress(buf, (size_t)size, payload, len);
	if (ZSTD_isError(got)) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_CORRUPT,
		    "corrupt compressed frame: %s", ZSTD_getErrorName(got));
		goto fail_free_buf;
	}
	if (got != size) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_CORRUPT,
		    "compressed frame gave %zu bytes, declared %llu", got, size);
		goto fail_free_buf;
	}
	*out = buf;
	*out_len = (size_t)size;
	return 0;

fail_free_buf:
	free(buf);
	return -1;
}

/* Size of a payload once decompressed. */
uint64_t
codec_raw_size(const uint8_t *payload, size_t len, uint32_t flags)
{
	unsigned long long size;

	if ((flags & CODEC_FLAG_ZSTD) == 0)
		return len;
	size = ZSTD_getFrameContentSize(payload, len);
	if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR)
		return 0;
	return size;
}

/* Decodes one payload into an envelope. */
int
codec_decode(const uint8_t *payload, size_t len, uint32_t flags,
    const struct codec_limits *lim, Agxq__Envelope **out, int *code,
    char **cause)
{
	Agxq__Envelope *env;
	uint8_t *inflated = NULL;
	size_t n = len;
	const uint8_t *p = payload;

	if (flags & ~CODEC_FLAGS_KNOWN) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_PROTO,
		    "unknown frame flags 0x%x", flags);
		return -1;
	}
	if (len == 0) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_PROTO,
		    "empty frame");
		return -1;
	}
	if (flags & CODEC_FLAG_ZSTD) {
		if (codec_inflate(payload, len, lim, &inflated, &n, code,
		    cause) != 0)
			return -1;
		p = inflated;
	} else if (len > lim->max_message) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_TOOBIG,
		    "message of %zu bytes over the limit of %u", len,
		    lim->max_message);
		return -1;
	}

	env = agxq__envelope__unpack(NULL, n, p);
	free(inflated);
	if (env == NULL) {
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_PROTO,
		    "malformed message");
		return -1;
	}
	if (env->body_case == AGXQ__ENVELOPE__BODY__NOT_SET) {
		agxq__envelope__free_unpacked(env, NULL);
		codec_fail(code, cause, AGXQ__ERROR_CODE__ERR_PROTO,
		    "unknown message");
		return -1;
	}
	*out = env;
	return 0;
}

/* Frees a decoded envelope; accepts NULL. */
void
codec_envelope_free(Agxq__Envelope *env)
{
	if (env != NULL)
		agxq__envelope__free_unpacked(env, NULL);
}

/*
 * Returns whether CODEC_SAMPLE_SIZE bytes from the middle of payload (size
 * bytes, more than CODEC_SAMPLE_ABOVE) look compressible: order-0 entropy
 * H = log2(n) - sum(c log2 c) / n over the byte counts c.
 */
static int
codec_sample_shrinks(const uint8_t *payload, size_t size)
{
	const uint8_t *p = payload + size / 2 - CODEC_SAMPLE_SIZE / 2;
	uint32_t count[256] = { 0 };
	double sum = 0;

	for (size_t i = 0; i < CODEC_SAMPLE_SIZE; i++)
		count[p[i]]++;
	for (int i = 0; i < 256; i++) {
		if (count[i] > 1)
			sum += count[i] * log2((double)count[i]);
	}
	return log2((double)CODEC_SAMPLE_SIZE) - sum / CODEC_SAMPLE_SIZE <=
	    CODEC_SAMPLE_BITS;
}

/*
 * Tries to compress raw (a whole frame, header included) into a new frame
 * that saves at least 1/8 of the payload. Returns the new frame or NULL
 * (keep raw).
 */
static uint8_t *
codec_deflate(const uint8_t *raw, size_t size, size_t *frame_len)
{
	size_t cap, got;
	uint8_t *frame;

	if (size > CODEC_SAMPLE_ABOVE &&
	    !codec_sample_shrinks(raw + CODEC_HEADER_SIZE, size))
		return NULL;
	/*
	 * Capacity is the largest size worth sending: zstd fails with
	 * dstSize_tooSmall when it cannot fit, which means keep it raw.
	 */
	cap = size - size / 8;
	if ((frame = malloc(CODEC_HEADER_SIZE + cap)) == NULL)
		return NULL;
	got = ZSTD_compress(frame + CODEC_HEADER_SIZE, cap,
	    raw + CODEC_HEADER_SIZE, size, CODEC_ZSTD_LEVEL);
	if (ZSTD_isError(got) || got == 0 || got > cap) {
		free(frame);
		return NULL;
	}
	codec_header_write(frame, (uint32_t)got, CODEC_FLAG_ZSTD);
	*frame_len = CODEC_HEADER_SIZE + got;
	return frame;
}

/* Encodes env into one malloc'd frame, compressed when that pays. */
int
codec_encode(const Agxq__Envelope *env, size_t compress_threshold,
    const struct codec_limits *lim, uint8_t **frame, size_t *frame_len,
    size_t *raw_len)
{
	uint8_t *raw, *z;
	size_t size, packed, zlen;

	size = agxq__envelope__get_packed_size(env);
	if (size > lim->max_message || size > UINT32_MAX - CODEC_HEADER_SIZE)
		return -1;
	if ((raw = malloc(CODEC_HEADER_SIZE + size)) == NULL)
		return -1;
	packed = agxq__envelope__pack(env, raw + CODEC_HEADER_SIZE);
	if (packed != size) {
		free(raw);
		return -1;
	}
	if (raw_len != NULL)
		*raw_len = size;

	if (compress_threshold != 0 && size >= compress_threshold) {
		z = codec_deflate(raw, size, &zlen);
		if (z != NULL) {
			free(raw);
			*frame = z;
			*frame_len = zlen;
			return 0;
		}
	}
	codec_header_write(raw, (uint32_t)size, 0);
	*frame = raw;
	*frame_len = CODEC_HEADER_SIZE + size;
	return 0;
}

/* Returns the name of an Envelope body case. */
const char *
codec_body_name(int body_case)
{
	if (body_case < 0 || (size_t)body_case >=
	    sizeof codec_body_names / sizeof codec_body_names[0] ||
	    codec_body_names[body_case] == NULL)
		return "unknown";
	return codec_body_names[body_case];
}
