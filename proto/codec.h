/*
 * codec: the agxq wire format, pure (bytes in, messages out, no I/O).
 *
 * A frame is an 8-byte little-endian header, u32 payload length then u32
 * flags, followed by the payload: one packed agxq.Envelope, zstd-compressed
 * when CODEC_FLAG_ZSTD is set. Every length is checked against the limits
 * before it is used to allocate, decompress or unpack.
 */
#ifndef AGXQ_CODEC_H
#define AGXQ_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "agxq.pb-c.h"

#define CODEC_PROTOCOL_VERSION 1
#define CODEC_HEADER_SIZE 8
#define CODEC_FLAG_ZSTD 0x1u
/* Ring slots only: the payload is a raw Infer or InferReply (rawinfer.h). */
#define CODEC_FLAG_RAW 0x2u
#define CODEC_FLAGS_KNOWN CODEC_FLAG_ZSTD

/* Default limits: payload on the wire and message after decompression. */
#define CODEC_DEFAULT_MAX_FRAME (256u << 20)
#define CODEC_DEFAULT_MAX_MESSAGE (256u << 20)
/* Payloads at least this large are compressed when that saves bytes. */
#define CODEC_DEFAULT_COMPRESS_THRESHOLD (64u << 10)

struct codec_limits {
	uint32_t max_frame;   /* largest payload accepted on the wire */
	uint32_t max_message; /* largest envelope after decompression */
};

enum codec_result {
	CODEC_OK,
	CODEC_NEED_MORE, /* not enough bytes yet */
	CODEC_ERROR
};

/* Fills lim with the default limits. */
void codec_limits_default(struct codec_limits *lim);

/*
 * Parses the frame header at buf[0..len). On CODEC_OK sets *payload_len and
 * *flags; on CODEC_ERROR sets *code (an AGXQ__ERROR_CODE__*) and *cause
 * (malloc'd, caller frees). Rejects unknown flags and lengths over the limit.
 */
enum codec_result codec_header_parse(const uint8_t *buf, size_t len,
    const struct codec_limits *lim, uint32_t *payload_len, uint32_t *flags,
    int *code, char **cause);

/*
 * The same for a frame in a ring slot, where CODEC_FLAG_RAW is known too
 * (alone: a raw payload is not compressed).
 */
enum codec_result codec_ring_header_parse(const uint8_t *buf, size_t len,
    const struct codec_limits *lim, uint32_t *payload_len, uint32_t *flags,
    int *code, char **cause);

/* Writes a frame header for a payload of len bytes with flags into out. */
void codec_header_write(uint8_t out[CODEC_HEADER_SIZE], uint32_t len,
    uint32_t flags);

/*
 * Decodes one payload (the bytes after a header) into *out, decompressing
 * when flags say so. The caller frees *out with codec_envelope_free. On
 * failure returns -1 with *code (AGXQ__ERROR_CODE__*) and *cause set (caller
 * frees *cause). An envelope with no known body is an error (unknown message).
 */
int codec_decode(const uint8_t *payload, size_t len, uint32_t flags,
    const struct codec_limits *lim, Agxq__Envelope **out, int *code,
    char **cause);

/*
 * Size of a payload once decompressed: len itself when flags has no
 * compression, else the content size the zstd frame declares (0 when it
 * declares none). For statistics; codec_decode does the checking.
 */
uint64_t codec_raw_size(const uint8_t *payload, size_t len, uint32_t flags);

/* Frees an envelope returned by codec_decode; accepts NULL. */
void codec_envelope_free(Agxq__Envelope *env);

/*
 * Encodes env into one frame (header + payload) in a malloc'd buffer that
 * the caller owns. Payloads of at least compress_threshold bytes (0: never)
 * are zstd-compressed when that saves at least 1/8 of them. Sets *raw_len
 * (uncompressed payload size) when raw_len is not NULL. Returns 0, or -1 on
 * out-of-memory or an envelope over max_message.
 */
int codec_encode(const Agxq__Envelope *env, size_t compress_threshold,
    const struct codec_limits *lim, uint8_t **frame, size_t *frame_len,
    size_t *raw_len);

/* Returns the name of an Envelope body case, for logs. */
const char *codec_body_name(int body_case);

#endif
