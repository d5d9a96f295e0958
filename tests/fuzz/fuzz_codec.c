/*
 * fuzz_codec: libFuzzer target for the wire codec. Input is one frame
 * (header then payload). Parsing and decoding must never crash, and a frame
 * that decodes must re-encode to a frame that decodes to the same bytes.
 * (protobuf-c keeps unknown fields as it read them, including malformed
 * ones such as a field number 0 written in a long varint, and packs them
 * back verbatim; so a re-encoded frame may fail to decode, cleanly.)
 *
 *	clang -fsanitize=fuzzer,address -Iproto -I<build>/proto \
 *	    tests/fuzz/fuzz_codec.c proto/codec.c <build>/proto/agxq.pb-c.c \
 *	    -lprotobuf-c -lzstd
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Re-encodes env and checks the new frame decodes to the same packing. */
static void
fuzz_reencode(const Agxq__Envelope *env, const struct codec_limits *lim)
{
	Agxq__Envelope *again = NULL;
	uint8_t *frame, *a, *b;
	size_t flen, alen, blen;
	uint32_t plen, flags;
	int code;
	char *cause = NULL;

	if (codec_encode(env, 64, lim, &frame, &flen, NULL) != 0)
		return;
	if (codec_header_parse(frame, flen, lim, &plen, &flags, &code,
	    &cause) != CODEC_OK)
		abort();
	if (codec_decode(frame + CODEC_HEADER_SIZE, plen, flags, lim, &again,
	    &code, &cause) != 0) {
		if (cause == NULL)
			abort();
		free(cause);
		free(frame);
		return;
	}
	alen = agxq__envelope__get_packed_size(env);
	blen = agxq__envelope__get_packed_size(again);
	if (alen != blen)
		abort();
	a = malloc(alen + 1);
	b = malloc(blen + 1);
	if (a == NULL || b == NULL)
		abort();
	agxq__envelope__pack(env, a);
	agxq__envelope__pack(again, b);
	if (memcmp(a, b, alen) != 0)
		abort();
	free(a);
	free(b);
	codec_envelope_free(again);
	free(frame);
}

/* Parses and decodes one frame. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct codec_limits lim;
	Agxq__Envelope *env = NULL;
	uint32_t plen, flags;
	int code = 0;
	char *cause = NULL;

	lim.max_frame = 1u << 20;
	lim.max_message = 4u << 20;
	if (codec_header_parse(data, size, &lim, &plen, &flags, &code,
	    &cause) != CODEC_OK) {
		free(cause);
		return 0;
	}
	if (size - CODEC_HEADER_SIZE < plen)
		return 0;
	if (codec_decode(data + CODEC_HEADER_SIZE, plen, flags, &lim, &env,
	    &code, &cause) != 0) {
		if (cause == NULL || code <= 0)
			abort();
		free(cause);
		return 0;
	}
	(void)codec_body_name((int)env->body_case);
	fuzz_reencode(env, &lim);
	codec_envelope_free(env);
	return 0;
}
