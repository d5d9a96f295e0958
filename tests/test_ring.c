/*
 * test_ring: the request ring (proto/ringfmt.h), the shared memory path of
 * synchronous agxq_infer, against the real agxqd. Results through the ring
 * match the direct engine, with clients polling their slot and sleeping on
 * the socket, more threads than slots and replies too big for a slot;
 * agxqd counts the requests it took from rings and takes none when it
 * never polls or the client turns the ring off. Raw connections check
 * AttachRing's validation, the answers to garbage posted in slots, and
 * replies the executor writes into the slot before the loop has freed it
 * in its books; a client waiting on a slot when agxqd dies gets an error,
 * not a hang.
 */
#include <sys/mman.h>
#include <sys/socket.h>

#include <ctype.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agxq.h"
#include "agxq_direct.h"
#include "codec.h"
#include "daemon_util.h"
#include "rawinfer.h"
#include "ringfmt.h"
#include "tgraph.h"
#include "testlib.h"

#define RT_TOL 1e-4
#define RT_SEED 42              /* the reference models' weights */
#define RT_MEMFD "agxqt-ring"   /* this test's own ring memfds */
#define RT_RAW_N 16             /* floats per row of the raw relu model */

static struct du_daemon daemon_; /* rt_polling; most cases share it */

/* ---- Helpers ------------------------------------------------------------- */

/*
 * The extra options of a polling daemon: its loops poll for 20 ms after
 * the last request, longer than a round trip takes in sanitizer builds on
 * a loaded 2-core machine. With 2 ms they went to sleep between requests
 * there, rings read not awake, and cases expecting ring traffic saw none.
 */
static const char *const rt_polling[] = { "--spin-us", "20000", NULL };

/*
 * Connects a client to sock with the environment variables ring
 * (AGXQ_RING), spin (AGXQ_SPIN_US) and reconnect (AGXQ_RECONNECT) set
 * where not NULL, unsetting them afterwards. 0 or an AGXQ_E* code.
 */
static int
rt_connect(const char *sock, const char *ring, const char *spin,
    const char *reconnect, agxq_client **c)
{
	int rc;

	if (ring != NULL)
		setenv("AGXQ_RING", ring, 1);
	if (spin != NULL)
		setenv("AGXQ_SPIN_US", spin, 1);
	if (reconnect != NULL)
		setenv("AGXQ_RECONNECT", reconnect, 1);
	rc = agxq_connect(sock, c);
	unsetenv("AGXQ_RING");
	unsetenv("AGXQ_SPIN_US");
	unsetenv("AGXQ_RECONNECT");
	return rc;
}

/*
 * Stats.ring_requests of the daemon on sock (what 0), Stats.ring_raw (1)
 * or Stats.ring_answered_early (2), by a raw connection; or -1.
 */
static long long
rt_ring_stat(const char *sock, int what)
{
	Agxq__Envelope *rep = du_raw_stats(sock);
	long long n = -1;

	if (rep != NULL)
		n = (long long)(what == 2 ? rep->stats->ring_answered_early :
		    what == 1 ? rep->stats->ring_raw :
		    rep->stats->ring_requests);
	codec_envelope_free(rep);
	return n;
}

/* Stats.ring_requests of the daemon on sock; or -1. */
static long long
rt_ring_requests(const char *sock)
{
	return rt_ring_stat(sock, 0);
}

/* Stats.ring_raw of the daemon on sock; or -1. */
static long long
rt_ring_raw(const char *sock)
{
	return rt_ring_stat(sock, 1);
}

/* "ring_requests" of c's agxq_stats_json; -1 when absent or on failure. */
static long long
rt_json_ring(agxq_client *c)
{
	char *json = NULL;
	long long n;

	if (agxq_stats_json(c, &json) != 0)
		return -1;
	n = du_json_num(json, "ring_requests");
	if (n < 0)
		printf("  no \"ring_requests\" in the stats JSON: %s", json);
	free(json);
	return n;
}

/*
 * Makes nio requests of reference model which (rows 1..max_rows, seq for
 * the transformer, 0: default) and their results in direct mode, into
 * *out (free with rt_ios_free). 0 or -1.
 */
static int
rt_ios_make(agxq_reference which, int nio, int max_rows, int64_t seq,
    struct du_io **out)
{
	agxq_direct *d = NULL;
	agxq_direct_model *dm = NULL;
	struct du_io *io;
	int rc = -1;

	if ((io = calloc((size_t)nio, sizeof *io)) == NULL)
		return -1;
	if (agxq_direct_open("cpu", 0, &d) != 0 ||
	    du_load_ref(NULL, d, which, RT_SEED, NULL, &dm) != 0)
		goto out;
	for (int i = 0; i < nio; i++) {
		if (du_io_make(&io[i], which, 1 + i % max_rows, seq,
		    (uint64_t)(1000 + 17 * i + (int)which), dm) != 0)
			goto out;
	}
	rc = 0;
out:
	agxq_direct_unload(dm);
	agxq_direct_close(d);
	if (rc != 0) {
		for (int i = 0; i < nio; i++)
			du_io_free(&io[i]);
		free(io);
		io = NULL;
	}
	*out = io;
	return rc;
}

/* Frees what rt_ios_make made; accepts NULL. */
static void
rt_ios_free(struct du_io *io, int nio)
{
	if (io == NULL)
		return;
	for (int i = 0; i < nio; i++)
		du_io_free(&io[i]);
	free(io);
}

/* One sync request of m with io: 0 with a right result, else the code. */
static int
rt_infer(agxq_model *m, const struct du_io *io)
{
	agxq_result *r = NULL;
	int rc;

	rc = agxq_infer(m, &io->in, 1, NULL, &r);
	if (rc == 0 && du_io_check(io, r, RT_TOL, RT_TOL) != 0)
		rc = AGXQ_EINTERNAL; /* a wrong answer */
	agxq_result_free(r);
	return rc;
}

/* A thread of sync requests on a model handle shared with other threads. */
struct rt_thread {
	agxq_model *m;
	const struct du_io *io;  /* nio requests with their results */
	int nio;
	int reqs;
	int idx;
	int ok;
	int failed;
};

/* Runs t->reqs requests, each checked against its direct result. */
static void *
rt_thread_main(void *arg)
{
	struct rt_thread *t = arg;
	int rc;

	for (int i = 0; i < t->reqs; i++) {
		rc = rt_infer(t->m, &t->io[(i + 7 * t->idx) % t->nio]);
		if (rc == 0) {
			t->ok++;
			continue;
		}
		if (t->failed++ < 3)
			printf("  thread %d request %d: %s\n", t->idx, i,
			    agxq_strerror(rc));
	}
	return NULL;
}

/* n threads of reqs requests each on m; 0 when every result is right. */
static int
rt_run_threads(agxq_model *m, const struct du_io *io, int nio, int n,
    int reqs)
{
	struct rt_thread *th;
	pthread_t *tid;
	int started = 0, ok = 0, rc = -1;

	th = calloc((size_t)n, sizeof *th);
	tid = calloc((size_t)n, sizeof *tid);
	if (th == NULL || tid == NULL)
		goto out;
	for (; started < n; started++) {
		th[started].m = m;
		th[started].io = io;
		th[started].nio = nio;
		th[started].reqs = reqs;
		th[started].idx = started;
		if (pthread_create(&tid[started], NULL, rt_thread_main,
		    &th[started]) != 0) {
			printf("  pthread_create failed\n");
			break;
		}
	}
	for (int i = 0; i < started; i++) {
		pthread_join(tid[i], NULL);
		ok += th[i].ok;
	}
	printf("  %d of %d right results from %d threads\n", ok, n * reqs, n);
	if (started == n && ok == n * reqs)
		rc = 0;
out:
	free(th);
	free(tid);
	return rc;
}

/*
 * Connects to sock as rt_connect (ring, spin), loads reference model which
 * and runs threads threads of reqs requests each over io (nio of them);
 * *delta is how many requests agxqd took from rings meanwhile. 0 or -1;
 * *cp and *mp are the caller's to free either way.
 */
static int
rt_ring_run(const char *sock, const char *ring, const char *spin,
    agxq_reference which, const struct du_io *io, int nio, int threads,
    int reqs, agxq_client **cp, agxq_model **mp, long long *delta)
{
	long long before, after;
	int rc;

	if ((before = rt_ring_requests(sock)) < 0)
		return -1;
	if ((rc = rt_connect(sock, ring, spin, NULL, cp)) != 0 ||
	    (rc = du_load_ref(*cp, NULL, which, RT_SEED, mp, NULL)) != 0) {
		printf("  connect and load: %s\n", agxq_strerror(rc));
		return -1;
	}
	if (rt_run_threads(*mp, io, nio, threads, reqs) != 0 ||
	    (after = rt_ring_requests(sock)) < 0)
		return -1;
	*delta = after - before;
	printf("  %lld of %d requests through the ring\n", *delta,
	    threads * reqs);
	return 0;
}

/* ---- Raw rings ----------------------------------------------------------- */

/* A ring area made by the test: its memfd and its mapping here. */
struct rt_ring {
	int fd;                  /* the memfd; -1 once closed */
	uint8_t *base;           /* MAP_FAILED when not mapped */
	size_t size;
	uint32_t slots;          /* the geometry, as attached */
	uint32_t slot_size;
};

/* Sets r up empty, so that rt_ring_free accepts it. */
static void
rt_ring_init(struct rt_ring *r)
{
	memset(r, 0, sizeof *r);
	r->fd = -1;
	r->base = MAP_FAILED;
}

/* Unmaps and closes r; accepts an empty one. */
static void
rt_ring_free(struct rt_ring *r)
{
	if (r->base != MAP_FAILED)
		munmap(r->base, r->size);
	if (r->fd >= 0)
		close(r->fd);
	rt_ring_init(r);
}

/*
 * Makes a memfd of size bytes, sealed against shrinking when sealed,
 * mapped, with a header of magic and geometry slots x slot_size. 0 or -1.
 */
static int
rt_ring_make(struct rt_ring *r, size_t size, int sealed, uint32_t magic,
    uint32_t slots, uint32_t slot_size)
{
	struct ring_header *h;

	rt_ring_init(r);
	r->size = size;
	r->slots = slots;
	r->slot_size = slot_size;
	if ((r->fd = memfd_create(RT_MEMFD, MFD_CLOEXEC |
	    MFD_ALLOW_SEALING)) < 0 || ftruncate(r->fd, (off_t)size) != 0)
		goto fail;
	r->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd,
	    0);
	if (r->base == MAP_FAILED)
		goto fail;
	h = (struct ring_header *)r->base;
	h->magic = magic;
	h->version = RING_VERSION;
	h->slots = slots;
	h->slot_size = slot_size;
	if (sealed && fcntl(r->fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0)
		goto fail;
	return 0;
fail:
	printf("  cannot make a ring memfd of %zu bytes\n", size);
	rt_ring_free(r);
	return -1;
}

/* Makes a valid ring of slots x slot_size (sealed, exact size). */
static int
rt_ring_valid(struct rt_ring *r, uint32_t slots, uint32_t slot_size)
{
	return rt_ring_make(r, ring_area_size(slots, slot_size), 1,
	    RING_MAGIC, slots, slot_size);
}

/* The header of r. */
static struct ring_header *
rt_ring_header(struct rt_ring *r)
{
	return (struct ring_header *)r->base;
}

/* Sends AttachRing{id, slots, slot_size} with descriptor pass (-1: none). */
static int
rt_send_attach(int fd, uint64_t id, uint32_t slots, uint32_t slot_size,
    int pass)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__AttachRing ar = AGXQ__ATTACH_RING__INIT;

	ar.request_id = id;
	ar.slots = slots;
	ar.slot_size = slot_size;
	env.body_case = AGXQ__ENVELOPE__BODY_ATTACH_RING;
	env.attach_ring = &ar;
	return du_send_env_fd(fd, &env, pass);
}

/* Whether s contains needle, ignoring case. */
static int
rt_has(const char *s, const char *needle)
{
	size_t n = strlen(needle);

	for (; s != NULL && *s != '\0'; s++) {
		size_t i;

		for (i = 0; i < n && s[i] != '\0' &&
		    tolower((unsigned char)s[i]) ==
		    tolower((unsigned char)needle[i]); i++)
			;
		if (i == n)
			return 1;
	}
	return 0;
}

/*
 * Checks that env is an Error of code for request id whose message holds
 * kw1 or kw2 (kw2 may be NULL), ignoring case; what is the attempt's name
 * for the failure message. 0 or -1.
 */
static int
rt_check_error(const Agxq__Envelope *env, const char *what, uint64_t id,
    int code, const char *kw1, const char *kw2)
{
	const Agxq__Error *e;

	if (env->body_case != AGXQ__ENVELOPE__BODY_ERROR) {
		printf("  %s: got %s, want an error\n", what,
		    codec_body_name(env->body_case));
		return -1;
	}
	e = env->error;
	if (e->request_id != id || (int)e->code != code ||
	    e->message == NULL || !(rt_has(e->message, kw1) ||
	    (kw2 != NULL && rt_has(e->message, kw2)))) {
		printf("  %s: error %d \"%s\" for request %llu; want error "
		    "%d naming \"%s\"%s%s%s for request %llu\n", what,
		    (int)e->code, e->message != NULL ? e->message : "",
		    (unsigned long long)e->request_id, code, kw1,
		    kw2 != NULL ? " or \"" : "", kw2 != NULL ? kw2 : "",
		    kw2 != NULL ? "\"" : "", (unsigned long long)id);
		return -1;
	}
	return 0;
}

/* Receives one frame on fd and checks it with rt_check_error. */
static int
rt_expect_error(int fd, const char *what, uint64_t id, int code,
    const char *kw1, const char *kw2)
{
	Agxq__Envelope *env = NULL;
	int rc;

	if ((rc = du_recv(fd, 3000, &env)) != 1) {
		printf("  %s: %s instead of an error\n", what,
		    rc == 0 ? "the connection closed" : "nothing");
		return -1;
	}
	rc = rt_check_error(env, what, id, code, kw1, kw2);
	codec_envelope_free(env);
	return rc;
}

/* Attaches r on fd as request id and expects the AttachRingReply. 0 or -1. */
static int
rt_attach(int fd, uint64_t id, const struct rt_ring *r)
{
	Agxq__Envelope *rep = NULL;
	int rc = -1;

	if (rt_send_attach(fd, id, r->slots, r->slot_size, r->fd) != 0 ||
	    du_recv(fd, 3000, &rep) != 1) {
		printf("  attach: no reply\n");
		goto out;
	}
	if (rep->body_case != AGXQ__ENVELOPE__BODY_ATTACH_RING_REPLY ||
	    rep->attach_ring_reply->request_id != id) {
		printf("  attach: got %s%s%s\n",
		    codec_body_name(rep->body_case),
		    rep->body_case == AGXQ__ENVELOPE__BODY_ERROR ? ": " : "",
		    rep->body_case == AGXQ__ENVELOPE__BODY_ERROR ?
		    rep->error->message : "");
		goto out;
	}
	rc = 0;
out:
	codec_envelope_free(rep);
	return rc;
}

/*
 * Connects raw, says hello and checks the HelloReply offers rings. The fd
 * or -1.
 */
static int
rt_raw_hello(const char *sock)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep = NULL;
	Agxq__Hello h = AGXQ__HELLO__INIT;
	int fd, ok = 0;

	if ((fd = du_connect(sock)) < 0)
		return -1;
	h.protocol_version = CODEC_PROTOCOL_VERSION;
	h.client_name = (char *)"test_ring";
	env.body_case = AGXQ__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	if (du_send_env(fd, &env) == 0 && du_recv(fd, 5000, &rep) == 1 &&
	    rep->body_case == AGXQ__ENVELOPE__BODY_HELLO_REPLY) {
		if (rep->hello_reply->ring)
			ok = 1;
		else
			printf("  HelloReply.ring is false\n");
	}
	codec_envelope_free(rep);
	if (!ok) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Sends StatsRequest id on fd; the next frame must be its Stats. 0 or -1. */
static int
rt_raw_stats(int fd, uint64_t id)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep = NULL;
	Agxq__StatsRequest sr = AGXQ__STATS_REQUEST__INIT;
	int rc = -1;

	sr.request_id = id;
	env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
	env.stats_request = &sr;
	if (du_send_env(fd, &env) != 0 || du_recv(fd, 5000, &rep) != 1) {
		printf("  stats: no reply\n");
		return -1;
	}
	if (rep->body_case == AGXQ__ENVELOPE__BODY_STATS &&
	    rep->stats->request_id == id)
		rc = 0;
	else
		printf("  stats: got %s%s%s\n", codec_body_name(rep->body_case),
		    rep->body_case == AGXQ__ENVELOPE__BODY_ERROR ? ": " : "",
		    rep->body_case == AGXQ__ENVELOPE__BODY_ERROR ?
		    rep->error->message : "");
	codec_envelope_free(rep);
	return rc;
}

/*
 * worker's descriptor count once it has not changed for 100 ms (the
 * connections of earlier requests closing), within 2 s; -1 on failure.
 */
static int
rt_fd_base(pid_t worker)
{
	uint64_t deadline = du_now_ms() + 2000, since = du_now_ms();
	int last = du_fd_count(worker), n;

	while (last >= 0 && du_now_ms() < deadline) {
		usleep(20000);
		if ((n = du_fd_count(worker)) != last) {
			last = n;
			since = du_now_ms();
		} else if (du_now_ms() - since >= 100)
			break;
	}
	return last;
}

/*
 * Waits up to 3 s for worker's descriptors to come back to base and for
 * no mapping of this test's ring memfds to be left. 0 or -1.
 */
static int
rt_leak_check(pid_t worker, int base)
{
	uint64_t deadline = du_now_ms() + 3000;
	char path[64], line[512];
	int fds, maps;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/maps", (int)worker);
	do {
		fds = du_fd_count(worker);
		maps = 0;
		if ((f = fopen(path, "r")) == NULL)
			return -1;
		while (fgets(line, sizeof line, f) != NULL)
			maps += strstr(line, "memfd:" RT_MEMFD) != NULL;
		fclose(f);
		if (fds == base && maps == 0)
			return 0;
		usleep(10000);
	} while (du_now_ms() < deadline);
	printf("  agxqd holds %d descriptors (%d before) and %d mappings of "
	    "the test's rings\n", fds, base, maps);
	return -1;
}

/* Encodes env as a frame (malloc'd *frame, *len). 0 or -1. */
static int
rt_encode(const Agxq__Envelope *env, uint8_t **frame, size_t *len)
{
	struct codec_limits lim;

	codec_limits_default(&lim);
	return codec_encode(env, 0, &lim, frame, len, NULL);
}

/* Encodes Infer{id, model, x [rows, RT_RAW_N] inline}. 0 or -1. */
static int
rt_infer_frame(uint64_t id, uint64_t model, const float *x, int rows,
    uint8_t **frame, size_t *len)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__Infer inf = AGXQ__INFER__INIT;
	Agxq__Tensor t = AGXQ__TENSOR__INIT, *tp = &t;
	int64_t shape[2] = { rows, RT_RAW_N };

	t.dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	t.n_shape = 2;
	t.shape = shape;
	t.data.data = (uint8_t *)x;
	t.data.len = (size_t)rows * RT_RAW_N * sizeof(float);
	inf.request_id = id;
	inf.model_id = model;
	inf.n_inputs = 1;
	inf.inputs = &tp;
	env.body_case = AGXQ__ENVELOPE__BODY_INFER;
	env.infer = &inf;
	return rt_encode(&env, frame, len);
}

/*
 * Posts copy bytes of frame (at most the slot's data size) in slot i of r
 * with the length word set to len and the slot's request_id to id, and
 * kicks agxqd on fd when the ring then reads not awake, as
 * proto/ringfmt.h says; the slot's state becomes state (RING_POSTED, with
 * RING_WAITER or not). 0 or -1.
 */
static int
rt_post_as(int fd, struct rt_ring *r, uint32_t i, uint64_t id,
    const uint8_t *frame, size_t copy, uint32_t len, uint32_t state)
{
	struct ring_slot *s = ring_slot_at(r->base, r->slot_size, i);
	struct ring_header *h = rt_ring_header(r);
	size_t room = r->slot_size - RING_SLOT_HEADER;
	uint32_t st;

	st = RING_PHASE(__atomic_load_n(&s->state, __ATOMIC_ACQUIRE));
	if (st == RING_POSTED) {
		printf("  slot %u is still posted\n", i);
		return -1;
	}
	memcpy(ring_slot_data(s), frame, copy < room ? copy : room);
	__atomic_store_n(&s->len, len, __ATOMIC_RELAXED);
	__atomic_store_n(&s->request_id, id, __ATOMIC_RELAXED);
	__atomic_store_n(&s->state, state, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&h->posted, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&h->awake, __ATOMIC_SEQ_CST) == 0) {
		Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
		Agxq__RingKick rk = AGXQ__RING_KICK__INIT;

		env.body_case = AGXQ__ENVELOPE__BODY_RING_KICK;
		env.ring_kick = &rk;
		if (du_send_env(fd, &env) != 0)
			return -1;
	}
	return 0;
}

/* rt_post_as storing plain RING_POSTED. */
static int
rt_post(int fd, struct rt_ring *r, uint32_t i, uint64_t id,
    const uint8_t *frame, size_t copy, uint32_t len)
{
	return rt_post_as(fd, r, i, id, frame, copy, len, RING_POSTED);
}

/* Waits up to 3 s for slot i of r to leave POSTED for DONE. 0 or -1. */
static int
rt_slot_done(struct rt_ring *r, uint32_t i)
{
	struct ring_slot *s = ring_slot_at(r->base, r->slot_size, i);
	uint64_t deadline = du_now_ms() + 3000;
	uint32_t st;

	/* Polled closely at first, as the library does, then at leisure. */
	for (int k = 0; (st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE)) ==
	    RING_POSTED && du_now_ms() < deadline; k++) {
		if (k > 100000)
			usleep(200);
	}
	if (RING_PHASE(st) != RING_DONE) {
		printf("  slot %u: state %#x after 3 s, want DONE (%u)\n", i,
		    st, RING_DONE);
		return -1;
	}
	return 0;
}

/*
 * Waits up to 3 s for slot i of r to leave POSTED and decodes the reply
 * frame there into *out (free with codec_envelope_free). 0, or -1 on a
 * timeout, a reply not in the slot, or a frame that does not decode.
 */
static int
rt_slot_reply(struct rt_ring *r, uint32_t i, Agxq__Envelope **out)
{
	struct ring_slot *s = ring_slot_at(r->base, r->slot_size, i);
	struct codec_limits lim;
	uint32_t len, plen, flags;
	char *cause = NULL;
	int code;

	*out = NULL;
	if (rt_slot_done(r, i) != 0)
		return -1;
	len = __atomic_load_n(&s->len, __ATOMIC_RELAXED);
	codec_limits_default(&lim);
	if (len < CODEC_HEADER_SIZE || len > r->slot_size - RING_SLOT_HEADER ||
	    codec_header_parse(ring_slot_data(s), len, &lim, &plen, &flags,
	    &code, &cause) != CODEC_OK || plen != len - CODEC_HEADER_SIZE) {
		printf("  slot %u: reply of %u bytes has a bad frame "
		    "header%s%s\n", i, len, cause != NULL ? ": " : "",
		    cause != NULL ? cause : "");
		free(cause);
		return -1;
	}
	if (codec_decode(ring_slot_data(s) + CODEC_HEADER_SIZE, plen, flags,
	    &lim, out, &code, &cause) != 0) {
		printf("  slot %u: reply does not decode: %s\n", i, cause);
		free(cause);
		return -1;
	}
	return 0;
}

/* ---- used ---------------------------------------------------------------- */

#define US_THREADS 4
#define US_REQS 200
#define US_NIO 40

/*
 * 4 threads share one client (polling its slots: AGXQ_SPIN_US 20000) and
 * make 200 sync mlp requests each, all right; agxqd took some from the
 * ring, and the stats JSON says the same as the raw Stats.
 */
static void
t_used(void)
{
	struct du_io *io = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	long long delta, after, json, raw;

	CHECK(rt_ios_make(AGXQ_REF_MLP, US_NIO, 4, 0, &io) == 0);
	CHECK((raw = rt_ring_raw(daemon_.sock)) >= 0);
	CHECK(rt_ring_run(daemon_.sock, NULL, "20000", AGXQ_REF_MLP, io,
	    US_NIO, US_THREADS, US_REQS, &c, &m, &delta) == 0);
	CHECK(delta > 0);
	CHECK(delta <= US_THREADS * US_REQS);
	/* Inline inputs, so every one went raw (rawinfer.h). */
	raw = rt_ring_raw(daemon_.sock) - raw;
	printf("  %lld of them raw\n", raw);
	CHECK(raw == delta);
	after = rt_ring_requests(daemon_.sock);
	json = rt_json_ring(c);
	if (json != after) {
		printf("  stats JSON ring_requests %lld, Stats %lld\n", json,
		    after);
		CHECK(0);
	}
out:
	agxq_model_unload(m);
	agxq_close(c);
	rt_ios_free(io, US_NIO);
}

/* ---- off_without_polling ------------------------------------------------- */

/* agxqd with --spin-us 0 never polls: right results, none through a ring. */
static void
t_off_without_polling(void)
{
	static const char *const extra[] = { "--spin-us", "0", NULL };
	struct du_daemon d;
	struct du_io *io = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	long long n;

	memset(&d, 0, sizeof d);
	d.pid = -1;
	CHECK(rt_ios_make(AGXQ_REF_MLP, 16, 4, 0, &io) == 0);
	CHECK(du_start(&d, extra) == 0);
	CHECK(rt_ring_run(d.sock, NULL, "500", AGXQ_REF_MLP, io, 16, 2, 50,
	    &c, &m, &n) == 0);
	n = rt_ring_requests(d.sock);
	if (n != 0) {
		printf("  ring_requests %lld, want 0\n", n);
		CHECK(0);
	}
	CHECK(rt_json_ring(c) == 0);
out:
	agxq_model_unload(m);
	agxq_close(c);
	if (d.pid > 0 && du_stop(&d) != 0)
		testlib_failed = 1;
	du_cleanup(&d);
	rt_ios_free(io, 16);
}

/* ---- ring_clients ---------------------------------------------------------- */

/* Ring requests of n sync requests of m (one thread), or -1 on a failure. */
static long long
rl_ring_share(const char *sock, agxq_model *m, const struct du_io *io, int n)
{
	long long before = rt_ring_requests(sock), after;

	for (int i = 0; i < n; i++) {
		if (rt_infer(m, &io[i % 4]) != 0) {
			printf("  request %d failed\n", i);
			return -1;
		}
	}
	after = rt_ring_requests(sock);
	return before < 0 || after < 0 ? -1 : after - before;
}

/*
 * --ring-clients 1: one client's ring is used; with a second client's ring
 * attached, both clients go by the socket (every result still right); once
 * the second has gone, the first uses its ring again. Bad values for the
 * option are refused.
 */
static void
t_ring_clients(void)
{
	static const char *const extra[] = { "--spin-us", "20000",
	    "--ring-clients", "1", NULL };
	static const char *const bad[] = { "x", "-1", "65537", "" };
	struct du_daemon d;
	struct du_io *io = NULL;
	agxq_client *a = NULL, *b = NULL;
	agxq_model *ma = NULL, *mb = NULL;
	long long n;
	char out[4096];

	memset(&d, 0, sizeof d);
	d.pid = -1;
	CHECK(rt_ios_make(AGXQ_REF_LINEAR, 4, 4, 0, &io) == 0);
	CHECK(du_start(&d, extra) == 0);
	CHECK_OK(rt_connect(d.sock, NULL, "20000", NULL, &a));
	CHECK_OK(du_load_ref(a, NULL, AGXQ_REF_LINEAR, RT_SEED, &ma, NULL));
	n = rl_ring_share(d.sock, ma, io, 50);
	printf("  one client: %lld of 50 through its ring\n", n);
	CHECK(n > 0);
	CHECK_OK(rt_connect(d.sock, NULL, "20000", NULL, &b));
	CHECK_OK(du_load_ref(b, NULL, AGXQ_REF_LINEAR, RT_SEED, &mb, NULL));
	CHECK(rt_infer(mb, &io[0]) == 0); /* attaches b's ring: 2 of 1 */
	n = rl_ring_share(d.sock, ma, io, 50);
	CHECK(n >= 0);
	printf("  two clients: %lld of 50 through a ring\n", n);
	CHECK(n == 0);
	CHECK(rl_ring_share(d.sock, mb, io, 50) == 0);
	agxq_model_unload(mb);
	mb = NULL;
	agxq_close(b);
	b = NULL;
	/* The close reaches agxqd a moment later. */
	for (int i = 0; i < 100 && (n = rl_ring_share(d.sock, ma, io, 20)) == 0;
	    i++)
		usleep(10000);
	printf("  one client again: %lld of 20 through its ring\n", n);
	CHECK(n > 0);
	for (size_t i = 0; i < TESTLIB_N(bad); i++) {
		const char *args[] = { "start", "--socket", "/tmp/agxq-rc-bad.s",
		    "--ring-clients", bad[i], NULL };
		int rc = du_run(args, 20000, out, sizeof out);

		if (rc != 2 || strstr(out, "ring-clients") == NULL) {
			printf("  --ring-clients '%s': exit %d: %s\n", bad[i],
			    rc, out);
			CHECK(0);
		}
	}
out:
	agxq_model_unload(ma);
	agxq_model_unload(mb);
	agxq_close(a);
	agxq_close(b);
	if (d.pid > 0 && du_stop(&d) != 0)
		testlib_failed = 1;
	du_cleanup(&d);
	rt_ios_free(io, 4);
}

/* ---- env_off ------------------------------------------------------------- */

/* A client connected with AGXQ_RING=0 never uses a ring, on a polling agxqd. */
static void
t_env_off(void)
{
	struct du_io *io = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	long long delta;

	CHECK(rt_ios_make(AGXQ_REF_LINEAR, 16, 4, 0, &io) == 0);
	CHECK(rt_ring_run(daemon_.sock, "0", "500", AGXQ_REF_LINEAR, io, 16,
	    2, 100, &c, &m, &delta) == 0);
	CHECK(getenv("AGXQ_RING") == NULL);
	CHECK(delta == 0);
out:
	agxq_model_unload(m);
	agxq_close(c);
	rt_ios_free(io, 16);
}

/*
 * With AGXQ_RING_RAW=0 a client posts packed Infers in its ring: agxqd
 * serves them there (results right), and counts none raw.
 */
static void
t_raw_off(void)
{
	struct du_io *io = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	long long delta, raw;

	CHECK(rt_ios_make(AGXQ_REF_LINEAR, 16, 4, 0, &io) == 0);
	CHECK((raw = rt_ring_raw(daemon_.sock)) >= 0);
	setenv("AGXQ_RING_RAW", "0", 1);
	CHECK(rt_ring_run(daemon_.sock, NULL, "20000", AGXQ_REF_LINEAR, io,
	    16, 2, 100, &c, &m, &delta) == 0);
	unsetenv("AGXQ_RING_RAW");
	CHECK(delta > 0);
	CHECK(rt_ring_raw(daemon_.sock) == raw);
out:
	unsetenv("AGXQ_RING_RAW");
	agxq_model_unload(m);
	agxq_close(c);
	rt_ios_free(io, 16);
}

/* ---- more_threads_than_slots --------------------------------------------- */

#define MT_THREADS 48         /* more than the ring's 32 slots */
#define MT_REQS 50
#define MT_NIO 32

/* 48 threads on one client (32 slots) and linear: every result right. */
static void
t_more_threads_than_slots(void)
{
	struct du_io *io = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	long long delta;

	CHECK(rt_ios_make(AGXQ_REF_LINEAR, MT_NIO, 4, 0, &io) == 0);
	CHECK(rt_ring_run(daemon_.sock, NULL, "20000", AGXQ_REF_LINEAR, io,
	    MT_NIO, MT_THREADS, MT_REQS, &c, &m, &delta) == 0);
	CHECK(delta > 0);
out:
	agxq_model_unload(m);
	agxq_close(c);
	rt_ios_free(io, MT_NIO);
}

/* Keeps agxqd's loop polling with socket traffic until *stop is set. */
struct br_keeper {
	agxq_client *c;
	agxq_model *m;
	atomic_int stop;
	int failed;
};

/* The keeper thread: small requests on the socket, back to back. */
static void *
br_keeper_main(void *arg)
{
	struct br_keeper *k = arg;
	float x[4 * 256] = { 0 };
	agxq_tensor in = { .dtype = AGXQ_FLOAT32, .ndim = 2,
	    .shape = { 4, 256 }, .data = x };
	agxq_result *r;

	while (!atomic_load(&k->stop)) {
		if (agxq_infer(k->m, &in, 1, NULL, &r) != 0) {
			k->failed = 1;
			break;
		}
		agxq_result_free(r);
	}
	return NULL;
}

/* ---- waiter -------------------------------------------------------------- */

#define WT_NIO 8

/*
 * A client that polls its slot for 1 us (AGXQ_SPIN_US=1) sets RING_WAITER
 * and sleeps on the socket: transformer results right. Only the first
 * requests go by the ring (none of the model's round trips is known yet);
 * then they take longer than the polling and go by the socket.
 */
static void
t_waiter(void)
{
	struct du_io *io = NULL;
	struct br_keeper keep = { 0 };
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_graph *kg = NULL;
	pthread_t keeper;
	long long delta;
	int keeper_on = 0;

	CHECK(rt_ios_make(AGXQ_REF_TRANSFORMER, WT_NIO, 2, 0, &io) == 0);
	/* As in big_reply: the loop must be polling when they post. */
	CHECK_OK(rt_connect(daemon_.sock, "0", NULL, NULL, &keep.c));
	CHECK_OK(agxq_reference_build(AGXQ_REF_LINEAR, 1, &kg));
	CHECK_OK(agxq_model_load(keep.c, kg, "keeper", &keep.m));
	CHECK(pthread_create(&keeper, NULL, br_keeper_main, &keep) == 0);
	keeper_on = 1;
	CHECK(rt_ring_run(daemon_.sock, NULL, "1", AGXQ_REF_TRANSFORMER, io,
	    WT_NIO, 2, 12, &c, &m, &delta) == 0);
	CHECK(delta > 0);
out:
	if (keeper_on) {
		atomic_store(&keep.stop, 1);
		pthread_join(keeper, NULL);
	}
	agxq_model_unload(keep.m);
	agxq_close(keep.c);
	agxq_graph_free(kg);
	agxq_model_unload(m);
	agxq_close(c);
	rt_ios_free(io, WT_NIO);
}

/* ---- big_reply ----------------------------------------------------------- */

#define BR_IN 16
#define BR_OUT 65536            /* 256 KiB of output a row: over a slot */
#define BR_CLIENTS 3

/* Builds x [batch, 16] -> linear to 65536 outputs. */
static agxq_graph *
br_graph(void)
{
	agxq_graph *g = agxq_graph_new();
	int64_t shape[1] = { BR_IN };
	int x;

	if (g == NULL)
		return NULL;
	x = agxq_graph_input(g, shape, 1);
	agxq_graph_output(g, agxq_build_linear(g, x, BR_IN, BR_OUT, 7));
	return g;
}

/* Checks r against the direct engine's result for the same input. 0 or -1. */
static int
br_compare(const agxq_result *r, agxq_direct_model *dm, const agxq_tensor *in)
{
	agxq_result *want = NULL;
	const agxq_tensor *a, *b;
	size_t n;
	int rc = -1;

	if (agxq_direct_infer(dm, in, 1, &want) != 0) {
		printf("  direct infer failed\n");
		return -1;
	}
	a = agxq_result_output(r, 0);
	b = agxq_result_output(want, 0);
	if (agxq_result_noutputs(r) != 1 || a == NULL || b == NULL ||
	    a->ndim != 2 || a->shape[0] != in->shape[0] ||
	    a->shape[1] != BR_OUT) {
		printf("  the reply has the wrong outputs\n");
		goto out;
	}
	n = agxq_tensor_nelem(b);
	for (size_t i = 0; i < n; i++) {
		float x = ((const float *)a->data)[i];
		float y = ((const float *)b->data)[i];
		float d = x > y ? x - y : y - x;

		if (!(d <= RT_TOL + RT_TOL * (y < 0 ? -y : y))) {
			printf("  value %zu is %.9g, want %.9g\n", i,
			    (double)x, (double)y);
			goto out;
		}
	}
	rc = 0;
out:
	agxq_result_free(want);
	return rc;
}

/*
 * A reply larger than a slot (256 KiB a row; 128 KiB slots) to a client's
 * first request, which the client cannot size, comes back whole by the
 * socket (state SOCKET); then a batch of 2. The last client has shared
 * memory off, so every reply it gets is inline and over its slots.
 */
static void
t_big_reply(void)
{
	float x[2 * BR_IN];
	agxq_tensor in = { .dtype = AGXQ_FLOAT32, .ndim = 2,
	    .shape = { 1, BR_IN }, .data = x };
	agxq_graph *g = NULL;
	agxq_direct *d = NULL;
	agxq_direct_model *dm = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_result *r = NULL;
	long long before, after, raw;
	struct br_keeper keep = { 0 };
	agxq_graph *kg = NULL;
	pthread_t keeper;
	int rc, keeper_on = 0;

	agxq_reference_weights(5, 1.0f, x, 2 * BR_IN);
	/*
	 * The loop polls its rings only for a while after traffic, and big
	 * replies take long to move: a keeper on the socket (not counted in
	 * ring_requests) keeps it polling, so the clients below post.
	 */
	CHECK_OK(rt_connect(daemon_.sock, "0", NULL, NULL, &keep.c));
	CHECK_OK(agxq_reference_build(AGXQ_REF_LINEAR, 1, &kg));
	CHECK_OK(agxq_model_load(keep.c, kg, "keeper", &keep.m));
	CHECK(pthread_create(&keeper, NULL, br_keeper_main, &keep) == 0);
	keeper_on = 1;
	CHECK((g = br_graph()) != NULL);
	CHECK_OK(agxq_direct_open("cpu", 0, &d));
	CHECK_OK(agxq_direct_load(d, g, &dm));
	CHECK((before = rt_ring_requests(daemon_.sock)) >= 0);
	CHECK((raw = rt_ring_raw(daemon_.sock)) >= 0);
	for (int k = 0; k < BR_CLIENTS; k++) {
		/* The last client sends everything inline: 64 KiB slots. */
		if (k == BR_CLIENTS - 1)
			setenv("AGXQ_SHM_THRESHOLD", "0", 1);
		rc = rt_connect(daemon_.sock, NULL, "20000", NULL, &c);
		unsetenv("AGXQ_SHM_THRESHOLD");
		CHECK_OK(rc);
		CHECK_OK(agxq_model_load(c, g, "big", &m));
		for (int rows = 1; rows <= 2; rows++) {
			in.shape[0] = rows;
			CHECK_OK(agxq_infer(m, &in, 1, NULL, &r));
			CHECK(br_compare(r, dm, &in) == 0);
			agxq_result_free(r);
			r = NULL;
		}
		agxq_model_unload(m);
		m = NULL;
		agxq_close(c);
		c = NULL;
	}
	after = rt_ring_requests(daemon_.sock);
	raw = rt_ring_raw(daemon_.sock) - raw;
	printf("  %lld of %d requests through the ring, %lld raw (their "
	    "replies packed on the socket)\n", after - before, 2 * BR_CLIENTS,
	    raw);
	CHECK(after > before);
	CHECK(raw > 0);
	atomic_store(&keep.stop, 1);
	pthread_join(keeper, NULL);
	keeper_on = 0;
	CHECK(keep.failed == 0);
out:
	if (keeper_on) {
		atomic_store(&keep.stop, 1);
		pthread_join(keeper, NULL);
	}
	agxq_model_unload(keep.m);
	agxq_close(keep.c);
	agxq_graph_free(kg);
	agxq_result_free(r);
	agxq_model_unload(m);
	agxq_close(c);
	agxq_direct_unload(dm);
	agxq_direct_close(d);
	agxq_graph_free(g);
}

/* ---- bad_attach ---------------------------------------------------------- */

#define BA_SLOTS 8
#define BA_SLOT_SIZE 8192
#define BA_AREA(n, size) ((size_t)RING_HEADER_SIZE + (size_t)(n) * (size))

/*
 * AttachRing refusals on a raw connection, each an Error for its request
 * with a message naming the fault: no descriptor; slots 0 and 65;
 * slot_size 100, 4100 and 2 MiB; a memfd too small; an unsealed one; a
 * wrong magic; a header whose geometry differs. Then a valid ring is
 * attached, a second is refused, Stats still answers, and agxqd keeps
 * none of the descriptors.
 */
static void
t_bad_attach(void)
{
	static const struct {
		const char *what;
		size_t size;            /* memfd bytes; 0: the valid size */
		int unsealed;
		uint32_t magic;         /* 0: RING_MAGIC */
		uint32_t slots, slot_size;      /* AttachRing */
		uint32_t h_slots;       /* header; 0: as AttachRing */
		const char *kw1, *kw2;
	} bad[] = {
		{ "slots 0", 0, 0, 0, 0, BA_SLOT_SIZE, 0, "slots", NULL },
		{ "slots 65", BA_AREA(65, BA_SLOT_SIZE), 0, 0, 65,
		    BA_SLOT_SIZE, 0, "slots", NULL },
		{ "slot_size 100", 0, 0, 0, BA_SLOTS, 100, 0, "slot_size",
		    "slot size" },
		{ "slot_size 4100", BA_AREA(BA_SLOTS, 4100), 0, 0,
		    BA_SLOTS, 4100, 0, "64", NULL },
		{ "slot_size 2 MiB", BA_AREA(1, 2u << 20), 0, 0, 1,
		    2u << 20, 0, "slot_size", "slot size" },
		{ "memfd too small", BA_AREA(BA_SLOTS, BA_SLOT_SIZE) -
		    4096, 0, 0, BA_SLOTS, BA_SLOT_SIZE, 0, "small",
		    "at least" },
		{ "unsealed memfd", 0, 1, 0, BA_SLOTS, BA_SLOT_SIZE, 0, "seal",
		    NULL },
		{ "wrong magic", 0, 0, 0x12345678u, BA_SLOTS, BA_SLOT_SIZE, 0,
		    "magic", NULL },
		{ "header slots differ", 0, 0, 0, BA_SLOTS, BA_SLOT_SIZE, 4,
		    "header", "slots" },
	};
	struct rt_ring r, r2;
	pid_t worker;
	uint64_t id = 10;
	int fd = -1, base;

	rt_ring_init(&r);
	rt_ring_init(&r2);
	CHECK((worker = du_worker_pid(daemon_.sock)) > 0);
	CHECK((base = rt_fd_base(worker)) > 0);
	CHECK((fd = rt_raw_hello(daemon_.sock)) >= 0);

	/* No descriptor. */
	CHECK(rt_send_attach(fd, id, BA_SLOTS, BA_SLOT_SIZE, -1) == 0);
	CHECK(rt_expect_error(fd, "no descriptor", id,
	    AGXQ__ERROR_CODE__ERR_INVAL, "descriptor", "fd") == 0);
	for (size_t k = 0; k < TESTLIB_N(bad); k++) {
		size_t size = bad[k].size != 0 ? bad[k].size :
		    ring_area_size(BA_SLOTS, BA_SLOT_SIZE);

		id++;
		CHECK(rt_ring_make(&r, size, !bad[k].unsealed, bad[k].magic ?
		    bad[k].magic : RING_MAGIC, bad[k].h_slots ? bad[k].h_slots :
		    bad[k].slots, bad[k].slot_size) == 0);
		CHECK(rt_send_attach(fd, id, bad[k].slots, bad[k].slot_size,
		    r.fd) == 0);
		rt_ring_free(&r);
		CHECK(rt_expect_error(fd, bad[k].what, id,
		    AGXQ__ERROR_CODE__ERR_INVAL, bad[k].kw1, bad[k].kw2) == 0);
	}

	/* A valid one, then a second. */
	CHECK(rt_ring_valid(&r, BA_SLOTS, BA_SLOT_SIZE) == 0);
	CHECK(rt_attach(fd, ++id, &r) == 0);
	CHECK(rt_ring_valid(&r2, BA_SLOTS, BA_SLOT_SIZE) == 0);
	CHECK(rt_send_attach(fd, ++id, BA_SLOTS, BA_SLOT_SIZE, r2.fd) == 0);
	CHECK(rt_expect_error(fd, "second ring", id,
	    AGXQ__ERROR_CODE__ERR_INVAL, "already has a ring", NULL) == 0);
	rt_ring_free(&r2);
	CHECK(rt_raw_stats(fd, ++id) == 0);

	/* The connection gone, agxqd keeps no descriptor or mapping of ours. */
	close(fd);
	fd = -1;
	rt_ring_free(&r);
	CHECK(rt_leak_check(worker, base) == 0);
out:
	if (fd >= 0)
		close(fd);
	rt_ring_free(&r);
	rt_ring_free(&r2);
}

/* ---- bad_slot ------------------------------------------------------------ */

#define BS_SLOTS 8
#define BS_SLOT_SIZE 4096

/* Builds relu(x) for x [batch, RT_RAW_N] as a wire graph. */
static struct tgraph *
bs_graph(void)
{
	struct tgraph *t = tg_new();

	tg_output(t, tg_relu(t, tg_input(t, TG_DIMS(RT_RAW_N))));
	return t;
}

/*
 * A raw connection to sock with bs_graph loaded (its id in *model, the
 * graph in *tg) and a ring of BS_SLOTS slots attached (r, whose
 * descriptor is closed: agxqd has its own). The descriptor, or -1.
 */
static int
bs_raw_ring(const char *sock, struct rt_ring *r, struct tgraph **tg,
    uint64_t *model)
{
	char msg[256];
	int fd;

	if ((fd = rt_raw_hello(sock)) < 0)
		return -1;
	*tg = bs_graph();
	if (du_load(fd, 1, tg_graph(*tg), model, msg, sizeof msg) != 0) {
		printf("  load: %s\n", msg);
		goto fail;
	}
	if (rt_ring_valid(r, BS_SLOTS, BS_SLOT_SIZE) != 0 ||
	    rt_attach(fd, 2, r) != 0)
		goto fail;
	close(r->fd);
	r->fd = -1;
	return fd;

fail:
	close(fd);
	return -1;
}

/*
 * A raw connection to the shared daemon with bs_graph loaded and a ring
 * attached (bs_raw_ring), for the cases that write its slots themselves.
 */
struct raw_conn {
	struct rt_ring r;
	struct tgraph *tg;
	uint64_t model;
	int fd;
};

/* Empties w, so that raw_conn_close may follow whatever happens. */
static void
raw_conn_init(struct raw_conn *w)
{
	rt_ring_init(&w->r);
	w->tg = NULL;
	w->model = 0;
	w->fd = -1;
}

/* Connects w (raw_conn_init first) to sock. 0 or -1. */
static int
raw_conn_open(struct raw_conn *w, const char *sock)
{
	w->fd = bs_raw_ring(sock, &w->r, &w->tg, &w->model);
	return w->fd >= 0 ? 0 : -1;
}

/* Closes w; accepts an empty one. */
static void
raw_conn_close(struct raw_conn *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	rt_ring_free(&w->r);
	tg_free(w->tg);
	w->tg = NULL;
}

/* Whether code is a sensible answer to a frame that is not an Infer. */
static int
bs_sensible(int code)
{
	return code == AGXQ__ERROR_CODE__ERR_PROTO ||
	    code == AGXQ__ERROR_CODE__ERR_INVAL ||
	    code == AGXQ__ERROR_CODE__ERR_TOOBIG ||
	    code == AGXQ__ERROR_CODE__ERR_CORRUPT ||
	    code == AGXQ__ERROR_CODE__ERR_UNSUPPORTED;
}

/*
 * Posts one frame in slot i as request id and checks the slot's answer is
 * an Error for id. 0 or -1.
 */
static int
bs_expect_slot_error(int fd, struct rt_ring *r, uint32_t i, uint64_t id,
    const char *what, const uint8_t *frame, size_t copy, uint32_t len)
{
	Agxq__Envelope *rep = NULL;
	int rc = -1;

	if (rt_post(fd, r, i, id, frame, copy, len) != 0 ||
	    rt_slot_reply(r, i, &rep) != 0) {
		printf("  %s: no reply in slot %u\n", what, i);
		goto out;
	}
	if (rep->body_case != AGXQ__ENVELOPE__BODY_ERROR) {
		printf("  %s: got %s, want an error\n", what,
		    codec_body_name(rep->body_case));
		goto out;
	}
	if (!bs_sensible((int)rep->error->code) || rep->error->message ==
	    NULL || rep->error->message[0] == '\0' ||
	    rep->error->request_id != id) {
		printf("  %s: error %d \"%s\" for request %llu, want a "
		    "protocol error for %llu\n", what, (int)rep->error->code,
		    rep->error->message != NULL ? rep->error->message : "",
		    (unsigned long long)rep->error->request_id,
		    (unsigned long long)id);
		goto out;
	}
	printf("  %s: error %d \"%s\"\n", what, (int)rep->error->code,
	    rep->error->message);
	rc = 0;
out:
	codec_envelope_free(rep);
	return rc;
}

/* Posts a valid Infer of rows rows in slot i and checks its InferReply. */
static int
bs_expect_slot_infer(int fd, struct rt_ring *r, uint32_t i, uint64_t id,
    uint64_t model, int rows)
{
	float x[4 * RT_RAW_N];
	Agxq__Envelope *rep = NULL;
	const Agxq__Tensor *t;
	uint8_t *frame = NULL;
	size_t len;
	int rc = -1;

	for (int k = 0; k < rows * RT_RAW_N; k++)
		x[k] = (float)((k * 5 + (int)id) % 11) - 5.0f;
	if (rt_infer_frame(id, model, x, rows, &frame, &len) != 0 ||
	    rt_post(fd, r, i, id, frame, len, (uint32_t)len) != 0 ||
	    rt_slot_reply(r, i, &rep) != 0) {
		printf("  infer %llu: no reply in slot %u\n",
		    (unsigned long long)id, i);
		goto out;
	}
	if (rep->body_case != AGXQ__ENVELOPE__BODY_INFER_REPLY) {
		printf("  infer %llu: got %s%s%s\n", (unsigned long long)id,
		    codec_body_name(rep->body_case),
		    rep->body_case == AGXQ__ENVELOPE__BODY_ERROR ? ": " : "",
		    rep->body_case == AGXQ__ENVELOPE__BODY_ERROR ?
		    rep->error->message : "");
		goto out;
	}
	if (rep->infer_reply->request_id != id ||
	    rep->infer_reply->n_outputs != 1) {
		printf("  infer %llu: reply for %llu with %zu outputs\n",
		    (unsigned long long)id,
		    (unsigned long long)rep->infer_reply->request_id,
		    rep->infer_reply->n_outputs);
		goto out;
	}
	t = rep->infer_reply->outputs[0];
	if (t->shm != NULL || t->n_shape != 2 || t->shape[0] != rows ||
	    t->shape[1] != RT_RAW_N ||
	    t->data.len != (size_t)rows * RT_RAW_N * sizeof(float)) {
		printf("  infer %llu: output of the wrong shape\n",
		    (unsigned long long)id);
		goto out;
	}
	for (int k = 0; k < rows * RT_RAW_N; k++) {
		float got, want = x[k] > 0 ? x[k] : 0.0f;

		memcpy(&got, t->data.data + (size_t)k * sizeof got, sizeof got);
		if (got != want) {
			printf("  infer %llu: value %d is %g, want %g\n",
			    (unsigned long long)id, k, (double)got,
			    (double)want);
			goto out;
		}
	}
	rc = 0;
out:
	free(frame);
	codec_envelope_free(rep);
	return rc;
}

/*
 * Garbage posted in slots of a raw connection's ring: a length over the
 * slot, unknown header flags, a header longer than the frame, an
 * undecodable payload, a StatsRequest and an Infer of an unknown model are
 * each answered in their slot with an Error; a valid Infer then gets its
 * InferReply there (also in a reused slot); nothing strays onto the
 * socket; agxqd serves another client as before.
 */
static void
t_bad_slot(void)
{
	struct raw_conn w;
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep = NULL;
	Agxq__StatsRequest sr = AGXQ__STATS_REQUEST__INIT;
	struct du_io *io = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	uint8_t *frame = NULL, junk[256];
	float x[RT_RAW_N];
	size_t len;
	long long before, after;
	pid_t worker;

	raw_conn_init(&w);
	CHECK(rt_ios_make(AGXQ_REF_LINEAR, 4, 4, 0, &io) == 0);
	CHECK((worker = du_worker_pid(daemon_.sock)) > 0);
	CHECK((before = rt_ring_requests(daemon_.sock)) >= 0);
	CHECK(raw_conn_open(&w, daemon_.sock) == 0);
	for (int k = 0; k < RT_RAW_N; k++)
		x[k] = (float)k - 8.0f;

	/* Slot 0: a length over the slot's data, around a valid Infer. */
	CHECK(rt_infer_frame(10, w.model, x, 1, &frame, &len) == 0);
	CHECK(bs_expect_slot_error(w.fd, &w.r, 0, 20, "len over the slot",
	    frame, len, BS_SLOT_SIZE - RING_SLOT_HEADER + 1) == 0);
	/* Slot 1: unknown frame flags. */
	CHECK(len <= sizeof junk);
	memcpy(junk, frame, len);
	codec_header_write(junk, (uint32_t)(len - CODEC_HEADER_SIZE), 0x80);
	CHECK(bs_expect_slot_error(w.fd, &w.r, 1, 21, "unknown flags", junk,
	    len, (uint32_t)len) == 0);
	/* Slot 2: a header announcing more bytes than the slot holds. */
	codec_header_write(junk, 1000, 0);
	CHECK(bs_expect_slot_error(w.fd, &w.r, 2, 22, "header longer than len",
	    junk, len, (uint32_t)len) == 0);
	/* Slot 3: a payload that does not decode. */
	memset(junk, 0xff, sizeof junk);
	codec_header_write(junk, 40, 0);
	CHECK(bs_expect_slot_error(w.fd, &w.r, 3, 23, "garbage payload", junk,
	    CODEC_HEADER_SIZE + 40, CODEC_HEADER_SIZE + 40) == 0);
	free(frame);
	frame = NULL;
	/* Slot 4: a message that is not an Infer. */
	sr.request_id = 11;
	env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
	env.stats_request = &sr;
	CHECK(rt_encode(&env, &frame, &len) == 0);
	CHECK(bs_expect_slot_error(w.fd, &w.r, 4, 11, "StatsRequest", frame,
	    len, (uint32_t)len) == 0);
	free(frame);
	frame = NULL;
	/* Slot 5: an Infer of a model this connection does not have. */
	CHECK(rt_infer_frame(12, w.model + 1000, x, 1, &frame, &len) == 0);
	CHECK(rt_post(w.fd, &w.r, 5, 12, frame, len, (uint32_t)len) == 0);
	CHECK(rt_slot_reply(&w.r, 5, &rep) == 0);
	CHECK(rt_check_error(rep, "unknown model", 12,
	    AGXQ__ERROR_CODE__ERR_NOMODEL, "model", NULL) == 0);
	codec_envelope_free(rep);
	rep = NULL;

	/* Valid Infers: a fresh slot, then slot 0 again. */
	CHECK(bs_expect_slot_infer(w.fd, &w.r, 6, 13, w.model, 1) == 0);
	CHECK(bs_expect_slot_infer(w.fd, &w.r, 0, 14, w.model, 3) == 0);

	/* Nothing came on the socket: the next frame is the Stats asked for. */
	CHECK(rt_raw_stats(w.fd, 15) == 0);
	after = rt_ring_requests(daemon_.sock);
	printf("  ring_requests %lld -> %lld\n", before, after);
	CHECK(after >= before + 2);

	/* agxqd serves another client; the worker is the same. */
	CHECK_OK(rt_connect(daemon_.sock, NULL, NULL, NULL, &c));
	CHECK_OK(du_load_ref(c, NULL, AGXQ_REF_LINEAR, RT_SEED, &m, NULL));
	for (int k = 0; k < 4; k++)
		CHECK_OK(rt_infer(m, &io[k]));
	CHECK(du_worker_pid(daemon_.sock) == worker);
out:
	agxq_model_unload(m);
	agxq_close(c);
	codec_envelope_free(rep);
	free(frame);
	raw_conn_close(&w);
	rt_ios_free(io, 4);
}

/*
 * Writes Infer{id, model, x [rows, cols] inline} as a raw frame (malloc'd
 * *frame, *len). 0 or -1.
 */
static int
rw_frame(uint64_t id, uint64_t model, const float *x, int64_t rows,
    int64_t cols, uint8_t **frame, size_t *len)
{
	Agxq__Infer inf = AGXQ__INFER__INIT;
	Agxq__Tensor t = AGXQ__TENSOR__INIT, *tp = &t;
	int64_t shape[2] = { rows, cols };

	t.dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	t.n_shape = 2;
	t.shape = shape;
	t.data.data = (uint8_t *)(uintptr_t)x;
	t.data.len = (size_t)(rows * cols) * sizeof(float);
	inf.request_id = id;
	inf.model_id = model;
	inf.n_inputs = 1;
	inf.inputs = &tp;
	*frame = NULL;
	if ((*len = rawinfer_infer_frame_size(&inf)) == 0 ||
	    (*frame = malloc(*len)) == NULL)
		return -1;
	rawinfer_infer_frame_write(&inf, *frame);
	return 0;
}

/*
 * Waits up to 3 s for agxqd to answer request id in slot i of r early
 * (proto/ringfmt.h: answer_id says id, the state POSTED or already DONE);
 * *len is the reply's length then. 0 or -1.
 */
static int
rt_slot_early(struct rt_ring *r, uint32_t i, uint64_t id, uint32_t *len)
{
	struct ring_slot *s = ring_slot_at(r->base, r->slot_size, i);
	uint64_t deadline = du_now_ms() + 3000;

	for (int k = 0; __atomic_load_n(&s->answer_id, __ATOMIC_ACQUIRE) != id;
	    k++) {
		if (du_now_ms() >= deadline) {
			printf("  slot %u: no early answer to %llu after 3 s "
			    "(state %#x)\n", i, (unsigned long long)id,
			    __atomic_load_n(&s->state, __ATOMIC_ACQUIRE));
			return -1;
		}
		if (k > 100000)
			usleep(200);
	}
	*len = __atomic_load_n(&s->answer_len, __ATOMIC_RELAXED);
	return 0;
}

/*
 * Waits for slot i's reply to raw Infer id of x [rows, RT_RAW_N] and checks
 * it is a raw InferReply holding relu(x): once the slot says DONE or, when
 * early, as soon as answer_id says id (the slot must then go DONE with the
 * same length). 0 or -1.
 */
static int
rw_expect_relu_as(struct rt_ring *r, uint32_t i, uint64_t id, const float *x,
    int rows, int early)
{
	struct ring_slot *s = ring_slot_at(r->base, r->slot_size, i);
	const Agxq__InferReply *rep;
	const Agxq__Tensor *t;
	struct rawinfer_view v;
	struct codec_limits lim;
	uint32_t len, plen, flags;
	char *cause = NULL;
	int code, rc = -1;

	if (early ? rt_slot_early(r, i, id, &len) != 0 :
	    rt_slot_done(r, i) != 0)
		return -1;
	if (!early)
		len = __atomic_load_n(&s->len, __ATOMIC_RELAXED);
	codec_limits_default(&lim);
	if (len > r->slot_size - RING_SLOT_HEADER ||
	    codec_ring_header_parse(ring_slot_data(s), len, &lim, &plen, &flags,
	    &code, &cause) != CODEC_OK || plen != len - CODEC_HEADER_SIZE ||
	    flags != CODEC_FLAG_RAW) {
		printf("  slot %u: reply of %u bytes is not a raw frame%s%s\n",
		    i, len, cause != NULL ? ": " : "", cause != NULL ? cause : "");
		free(cause);
		return -1;
	}
	if (rawinfer_reply_read(ring_slot_data(s) + CODEC_HEADER_SIZE, plen,
	    &v, &rep, &cause) != 0) {
		printf("  slot %u: raw reply does not read: %s\n", i, cause);
		goto out;
	}
	t = rep->outputs[0];
	if (rep->request_id != id || rep->n_outputs != 1 ||
	    rep->batch_rows < (uint32_t)rows || t->n_shape != 2 ||
	    t->shape[0] != rows || t->shape[1] != RT_RAW_N ||
	    t->data.len != (size_t)rows * RT_RAW_N * sizeof(float)) {
		printf("  slot %u: raw reply for %llu, %zu outputs, want one "
		    "[%d, %d] for %llu\n", i,
		    (unsigned long long)rep->request_id, rep->n_outputs, rows,
		    RT_RAW_N, (unsigned long long)id);
		goto out;
	}
	for (int k = 0; k < rows * RT_RAW_N; k++) {
		float got, want = x[k] > 0 ? x[k] : 0.0f;

		memcpy(&got, t->data.data + (size_t)k * sizeof got, sizeof got);
		if (got != want) {
			printf("  slot %u: value %d is %g, want %g\n", i, k,
			    (double)got, (double)want);
			goto out;
		}
	}
	if (early && (rt_slot_done(r, i) != 0 ||
	    __atomic_load_n(&s->len, __ATOMIC_RELAXED) != len)) {
		printf("  slot %u: answered early with %u bytes, then DONE "
		    "with %u\n", i, len,
		    __atomic_load_n(&s->len, __ATOMIC_RELAXED));
		goto out;
	}
	rc = 0;
out:
	free(cause);
	rawinfer_view_free(&v);
	return rc;
}

/* rw_expect_relu_as once the slot says DONE. */
static int
rw_expect_relu(struct rt_ring *r, uint32_t i, uint64_t id, const float *x,
    int rows)
{
	return rw_expect_relu_as(r, i, id, x, rows, 0);
}

/* Checks env is the InferReply to id holding relu(x), x [rows, RT_RAW_N]. */
static int
rw_check_relu(const Agxq__Envelope *env, uint64_t id, const float *x,
    int rows)
{
	const Agxq__Tensor *t;

	if (env->body_case != AGXQ__ENVELOPE__BODY_INFER_REPLY ||
	    env->infer_reply->request_id != id ||
	    env->infer_reply->n_outputs != 1) {
		printf("  reply %llu: got %s\n", (unsigned long long)id,
		    codec_body_name(env->body_case));
		return -1;
	}
	t = env->infer_reply->outputs[0];
	if (t->data.len != (size_t)rows * RT_RAW_N * sizeof(float))
		return -1;
	for (int k = 0; k < rows * RT_RAW_N; k++) {
		float got;

		memcpy(&got, t->data.data + (size_t)k * sizeof got, sizeof got);
		if (got != (x[k] > 0 ? x[k] : 0.0f)) {
			printf("  reply %llu: value %d is %g\n",
			    (unsigned long long)id, k, (double)got);
			return -1;
		}
	}
	return 0;
}

/*
 * Posts the first copy bytes of frame (length len) in slot i as request id
 * and checks the slot's answer is Error code for id naming kw. 0 or -1.
 */
static int
rw_expect_error(int fd, struct rt_ring *r, uint32_t i, uint64_t id,
    const char *what, const uint8_t *frame, size_t copy, uint32_t len,
    int code, const char *kw)
{
	Agxq__Envelope *rep = NULL;
	int rc = -1;

	if (rt_post(fd, r, i, id, frame, copy, len) != 0 ||
	    rt_slot_reply(r, i, &rep) != 0)
		printf("  %s: no reply in slot %u\n", what, i);
	else if (rt_check_error(rep, what, id, code, kw, NULL) == 0) {
		printf("  %s: \"%s\"\n", what, rep->error->message);
		rc = 0;
	}
	codec_envelope_free(rep);
	return rc;
}

/*
 * Raw Infers (proto/rawinfer.h) in the slots of a raw client: a valid one
 * gets a raw reply with the right values; malformed ones (wrong magic, cut
 * short, compressed, data past the end, a shape or model that does not
 * fit) each get an Error in their slot naming what is wrong, and agxqd
 * goes on serving. On the socket a raw frame is a protocol error.
 */
static void
t_raw_frames(void)
{
	struct raw_conn w;
	Agxq__Envelope *rep = NULL;
	uint8_t *frame = NULL;
	float x[4 * RT_RAW_N], y[3 * (RT_RAW_N + 1)];
	long long raw0, raw1;
	size_t len;

	raw_conn_init(&w);
	for (int k = 0; k < 4 * RT_RAW_N; k++)
		x[k] = (float)((k * 7) % 13) - 6.0f;
	memset(y, 0, sizeof y);
	CHECK((raw0 = rt_ring_raw(daemon_.sock)) >= 0);
	CHECK(raw_conn_open(&w, daemon_.sock) == 0);

	CHECK(rw_frame(40, w.model, x, 3, RT_RAW_N, &frame, &len) == 0);
	CHECK(rt_post(w.fd, &w.r, 0, 40, frame, len, (uint32_t)len) == 0);
	CHECK(rw_expect_relu(&w.r, 0, 40, x, 3) == 0);
	frame[CODEC_HEADER_SIZE] ^= 0xff;
	CHECK(rw_expect_error(w.fd, &w.r, 1, 41, "raw, wrong magic", frame, len,
	    (uint32_t)len, AGXQ__ERROR_CODE__ERR_PROTO, "magic") == 0);
	frame[CODEC_HEADER_SIZE] ^= 0xff;
	codec_header_write(frame, 20, CODEC_FLAG_RAW);
	CHECK(rw_expect_error(w.fd, &w.r, 2, 42, "raw, cut short", frame,
	    CODEC_HEADER_SIZE + 20, CODEC_HEADER_SIZE + 20,
	    AGXQ__ERROR_CODE__ERR_PROTO, "shorter than its head") == 0);
	codec_header_write(frame, (uint32_t)(len - CODEC_HEADER_SIZE),
	    CODEC_FLAG_RAW | CODEC_FLAG_ZSTD);
	CHECK(rw_expect_error(w.fd, &w.r, 3, 43, "raw and compressed", frame,
	    len, (uint32_t)len, AGXQ__ERROR_CODE__ERR_PROTO,
	    "not compressed") == 0);
	/* The last row's data cut off: the length stays in the frame. */
	codec_header_write(frame, (uint32_t)(len - CODEC_HEADER_SIZE - 4),
	    CODEC_FLAG_RAW);
	CHECK(rw_expect_error(w.fd, &w.r, 4, 44, "raw, data past the end",
	    frame, len - 4, (uint32_t)len - 4, AGXQ__ERROR_CODE__ERR_PROTO,
	    "lies outside the payload") == 0);
	free(frame);
	CHECK(rw_frame(45, w.model, y, 3, RT_RAW_N + 1, &frame, &len) == 0);
	CHECK(rw_expect_error(w.fd, &w.r, 5, 45, "raw, wrong shape", frame, len,
	    (uint32_t)len, AGXQ__ERROR_CODE__ERR_SHAPE, "input 0") == 0);
	free(frame);
	CHECK(rw_frame(46, w.model + 1000, x, 1, RT_RAW_N, &frame, &len) == 0);
	CHECK(rw_expect_error(w.fd, &w.r, 6, 46, "raw, unknown model", frame,
	    len, (uint32_t)len, AGXQ__ERROR_CODE__ERR_NOMODEL, "model") == 0);
	free(frame);
	/* Served as before, in a slot used already. */
	CHECK(rw_frame(47, w.model, x, 4, RT_RAW_N, &frame, &len) == 0);
	CHECK(rt_post(w.fd, &w.r, 0, 47, frame, len, (uint32_t)len) == 0);
	CHECK(rw_expect_relu(&w.r, 0, 47, x, 4) == 0);
	/* A waiter gets the reply on the socket, packed as every frame there. */
	free(frame);
	CHECK(rw_frame(48, w.model, x, 4, RT_RAW_N, &frame, &len) == 0);
	CHECK(rt_post_as(w.fd, &w.r, 7, 48, frame, len, (uint32_t)len,
	    RING_POSTED | RING_WAITER) == 0);
	CHECK(du_recv(w.fd, 3000, &rep) == 1);
	CHECK(rw_check_relu(rep, 48, x, 4) == 0);
	CHECK(rt_slot_done(&w.r, 7) == 0);
	/* Read raw: 40, 45, 46, 47 and 48; the others failed before. */
	raw1 = rt_ring_raw(daemon_.sock);
	printf("  ring_raw %lld -> %lld\n", raw0, raw1);
	CHECK(raw1 == raw0 + 5);
	/* The socket knows no raw frames. */
	CHECK(du_send(w.fd, frame, len) == 0);
	CHECK(du_expect_error(w.fd, 3000, AGXQ__ERROR_CODE__ERR_PROTO,
	    "unknown frame flags 0x2") == 0);
out:
	codec_envelope_free(rep);
	free(frame);
	raw_conn_close(&w);
}

/*
 * agxqd reads a raw Infer where it lies in the slot, and a client may write
 * its slot meanwhile: 300 valid raw Infers, each overwritten with random
 * bytes (head, table and data) from the moment it is posted until agxqd
 * answers it, every 8th with the header's length too. Whatever it read,
 * agxqd answers each in its slot (a reply or an Error) and goes on
 * serving: a clean request afterwards gets the right values.
 */
static void
t_raw_scribble(void)
{
	struct raw_conn w;
	uint8_t *frame = NULL;
	float x[4 * RT_RAW_N];
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	size_t len;
	long scribbled = 0;

	raw_conn_init(&w);
	for (int k = 0; k < 4 * RT_RAW_N; k++)
		x[k] = (float)((k * 5) % 11) - 5.0f;
	CHECK(raw_conn_open(&w, daemon_.sock) == 0);
	CHECK(rw_frame(60, w.model, x, 4, RT_RAW_N, &frame, &len) == 0);
	for (uint64_t n = 0; n < 300; n++) {
		uint32_t i = (uint32_t)(n % 4);
		struct ring_slot *sl = ring_slot_at(w.r.base, w.r.slot_size, i);
		uint8_t *d = ring_slot_data(sl);
		size_t from = n % 8 == 0 ? 0 : CODEC_HEADER_SIZE;

		CHECK(rt_post(w.fd, &w.r, i, 100 + n, frame, len,
		    (uint32_t)len) == 0);
		while (__atomic_load_n(&sl->state, __ATOMIC_ACQUIRE) ==
		    RING_POSTED) {
			rng = rng * 6364136223846793005ull + 1442695040888963407ull;
			d[from + (rng >> 33) % (len - from)] = (uint8_t)(rng >> 56);
			scribbled++;
		}
		CHECK(rt_slot_done(&w.r, i) == 0);
	}
	printf("  300 raw Infers written over while in flight (%ld bytes), "
	    "each answered\n", scribbled);
	free(frame);
	CHECK(rw_frame(61, w.model, x, 4, RT_RAW_N, &frame, &len) == 0);
	CHECK(rt_post(w.fd, &w.r, 5, 61, frame, len, (uint32_t)len) == 0);
	CHECK(rw_expect_relu(&w.r, 5, 61, x, 4) == 0);
out:
	free(frame);
	raw_conn_close(&w);
}

/*
 * agxqd writes a raw reply straight into its slot, then stores DONE; a
 * client that flags RING_WAITER in between (it stopped polling just then)
 * must still get the reply on the socket, and in the slot. 200 raw
 * Infers, each watched until agxqd writes into the slot: caught while the
 * slot still says POSTED, the client flags a waiter and reads the socket;
 * otherwise the slot's reply is checked. Every reply must hold relu(x);
 * how many were caught between the two depends on timing, and is printed.
 */
static void
t_raw_late_waiter(void)
{
	struct raw_conn w;
	Agxq__Envelope *rep = NULL;
	uint8_t *frame = NULL, head[24];
	float x[4 * RT_RAW_N];
	size_t len;
	int caught = 0;

	raw_conn_init(&w);
	for (int k = 0; k < 4 * RT_RAW_N; k++)
		x[k] = (float)((k * 3) % 7) - 3.0f;
	CHECK(raw_conn_open(&w, daemon_.sock) == 0);
	for (uint64_t n = 0; n < 200; n++) {
		uint32_t i = (uint32_t)(n % 4), st = RING_POSTED;
		struct ring_slot *sl = ring_slot_at(w.r.base, w.r.slot_size, i);
		uint64_t id = 1000 + n;
		int waiter = 0;

		free(frame);
		CHECK(rw_frame(id, w.model, x, 4, RT_RAW_N, &frame, &len) == 0);
		CHECK(len >= sizeof head);
		memcpy(head, frame, sizeof head);
		/* The slot holds the request until agxqd writes the reply. */
		CHECK(rt_post(w.fd, &w.r, i, id, frame, len,
		    (uint32_t)len) == 0);
		while (__atomic_load_n(&sl->state, __ATOMIC_ACQUIRE) ==
		    RING_POSTED) {
			/* Yields: agxqd may need this core (CI has two). */
			if (memcmp(ring_slot_data(sl), head,
			    sizeof head) == 0) {
				sched_yield();
				continue;
			}
			waiter = __atomic_compare_exchange_n(&sl->state, &st,
			    RING_POSTED | RING_WAITER, 0, __ATOMIC_SEQ_CST,
			    __ATOMIC_SEQ_CST);
			break;
		}
		if (waiter) {
			caught++;
			CHECK(du_recv(w.fd, 3000, &rep) == 1);
			CHECK(rw_check_relu(rep, id, x, 4) == 0);
			codec_envelope_free(rep);
			rep = NULL;
		}
		CHECK(rw_expect_relu(&w.r, i, id, x, 4) == 0);
	}
	printf("  200 raw replies right; %d caught written but not yet "
	    "answered, then answered on the socket\n", caught);
out:
	codec_envelope_free(rep);
	free(frame);
	raw_conn_close(&w);
}

/* Stats.ring_answered_early of the daemon on sock; or -1. */
static long long
rt_answered_early(const char *sock)
{
	return rt_ring_stat(sock, 2);
}

#define AE_REQS 200

/*
 * The engine answers a raw Infer in its slot as it finishes it, before the
 * executor retires the batch (answer_id and answer_len, proto/ringfmt.h):
 * a raw client posts 200 raw Infers of 1-4 rows going round 4 slots and
 * takes each reply as soon as answer_id says its id, with the state still
 * POSTED or not; each is right, the slot then goes DONE with the same
 * length, and the stats count 200 more answered early. On an agxqd with
 * AGXQ_ANSWER=0 answer_id stays 0, the replies come with DONE and none is
 * counted early.
 */
static void
t_raw_answered_early(void)
{
	struct raw_conn w;
	struct du_daemon d, da;
	uint8_t *frame = NULL;
	float x[4 * RT_RAW_N];
	long long early0, early1;
	size_t len;

	raw_conn_init(&w);
	memset(&d, 0, sizeof d);
	memset(&da, 0, sizeof da);
	d.pid = da.pid = -1;
	for (int k = 0; k < 4 * RT_RAW_N; k++)
		x[k] = (float)((k * 5) % 9) - 4.0f;
	/* On by default on cpu; on cuda only when asked. */
	setenv("AGXQ_CUDA_ANSWER", "1", 1);
	CHECK(du_start(&da, rt_polling) == 0);
	unsetenv("AGXQ_CUDA_ANSWER");
	CHECK((early0 = rt_answered_early(da.sock)) >= 0);
	CHECK(raw_conn_open(&w, da.sock) == 0);
	for (uint64_t n = 0; n < AE_REQS; n++) {
		uint32_t i = (uint32_t)(n % 4);
		int rows = 1 + (int)(n % 4);

		free(frame);
		CHECK(rw_frame(3000 + n, w.model, x, rows, RT_RAW_N, &frame,
		    &len) == 0);
		CHECK(rt_post(w.fd, &w.r, i, 3000 + n, frame, len,
		    (uint32_t)len) == 0);
		CHECK(rw_expect_relu_as(&w.r, i, 3000 + n, x, rows, 1) == 0);
	}
	early1 = rt_answered_early(da.sock);
	printf("  answered early: %lld -> %lld\n", early0, early1);
	CHECK(early1 - early0 == AE_REQS);
	raw_conn_close(&w);
	raw_conn_init(&w);

	setenv("AGXQ_ANSWER", "0", 1);
	CHECK(du_start(&d, rt_polling) == 0);
	unsetenv("AGXQ_ANSWER");
	CHECK(raw_conn_open(&w, d.sock) == 0);
	for (uint64_t n = 0; n < AE_REQS / 4; n++) {
		uint32_t i = (uint32_t)(n % 4);

		free(frame);
		CHECK(rw_frame(4000 + n, w.model, x, 4, RT_RAW_N, &frame,
		    &len) == 0);
		CHECK(rt_post(w.fd, &w.r, i, 4000 + n, frame, len,
		    (uint32_t)len) == 0);
		CHECK(rw_expect_relu(&w.r, i, 4000 + n, x, 4) == 0);
	}
	for (uint32_t i = 0; i < 4; i++)
		CHECK(__atomic_load_n(&ring_slot_at(w.r.base, w.r.slot_size,
		    i)->answer_id, __ATOMIC_ACQUIRE) == 0);
	CHECK(rt_answered_early(d.sock) == 0);
out:
	unsetenv("AGXQ_ANSWER");
	unsetenv("AGXQ_CUDA_ANSWER");
	if (da.pid > 0 && du_stop(&da) != 0)
		testlib_failed = 1;
	du_cleanup(&da);
	free(frame);
	raw_conn_close(&w);
	if (d.pid > 0 && du_stop(&d) != 0)
		testlib_failed = 1;
	du_cleanup(&d);
}

#define AF_REQS 30

/*
 * A batch that fails after its replies were laid out in their slots (every
 * third run fails: AGXQ_CPU_FAULT_EVERY=3, AGXQ_CUDA_FAULT_EVERY=3 on
 * cuda) is answered with an Error in the
 * slot, never marked answered: a raw client posts 30 raw Infers going round
 * 4 slots and waits for DONE on each. Each reply is either the right raw
 * InferReply, with answer_id naming it, or an Error for its id naming the
 * fault, with answer_id not naming it; about a third fail, and the stats
 * count the others, exactly, as answered early.
 */
static void
t_raw_answer_fault(void)
{
	struct raw_conn w;
	struct du_daemon d;
	Agxq__Envelope *rep = NULL;
	struct ring_slot *s;
	uint8_t *frame = NULL;
	float x[4 * RT_RAW_N];
	long long failed = 0;
	uint32_t flags;
	size_t len;

	raw_conn_init(&w);
	memset(&d, 0, sizeof d);
	d.pid = -1;
	for (int k = 0; k < 4 * RT_RAW_N; k++)
		x[k] = (float)((k * 7) % 9) - 4.0f;
	setenv("AGXQ_CPU_FAULT_EVERY", "3", 1);
	setenv("AGXQ_CPU_FAULT_KIND", "error", 1);
	setenv("AGXQ_CUDA_FAULT_EVERY", "3", 1);
	setenv("AGXQ_CUDA_ANSWER", "1", 1);
	CHECK(du_start(&d, rt_polling) == 0);
	unsetenv("AGXQ_CUDA_ANSWER");
	unsetenv("AGXQ_CPU_FAULT_EVERY");
	unsetenv("AGXQ_CPU_FAULT_KIND");
	unsetenv("AGXQ_CUDA_FAULT_EVERY");
	CHECK(raw_conn_open(&w, d.sock) == 0);
	for (uint64_t n = 0; n < AF_REQS; n++) {
		uint32_t i = (uint32_t)(n % 4);
		uint64_t id = 5000 + n;
		int rows = 1 + (int)(n % 4);

		s = ring_slot_at(w.r.base, w.r.slot_size, i);
		free(frame);
		CHECK(rw_frame(id, w.model, x, rows, RT_RAW_N, &frame,
		    &len) == 0);
		CHECK(rt_post(w.fd, &w.r, i, id, frame, len,
		    (uint32_t)len) == 0);
		CHECK(rt_slot_done(&w.r, i) == 0);
		/* The frame header's flags, a little-endian word at 4. */
		flags = (uint32_t)ring_slot_data(s)[4] |
		    (uint32_t)ring_slot_data(s)[5] << 8 |
		    (uint32_t)ring_slot_data(s)[6] << 16 |
		    (uint32_t)ring_slot_data(s)[7] << 24;
		if (flags == CODEC_FLAG_RAW) {
			CHECK(__atomic_load_n(&s->answer_id,
			    __ATOMIC_ACQUIRE) == id);
			CHECK(rw_expect_relu(&w.r, i, id, x, rows) == 0);
			continue;
		}
		CHECK(__atomic_load_n(&s->answer_id, __ATOMIC_ACQUIRE) != id);
		codec_envelope_free(rep);
		CHECK(rt_slot_reply(&w.r, i, &rep) == 0);
		if (rep->body_case != AGXQ__ENVELOPE__BODY_ERROR ||
		    rep->error->request_id != id || rep->error->message ==
		    NULL || strstr(rep->error->message, "injected fault") ==
		    NULL) {
			printf("  request %llu: got %s, want the injected "
			    "fault\n", (unsigned long long)id,
			    codec_body_name(rep->body_case));
			CHECK(0);
		}
		failed++;
	}
	printf("  %lld of %d failed\n", failed, AF_REQS);
	CHECK(failed >= AF_REQS / 3 - 1 && failed <= AF_REQS / 3 + 1);
	CHECK(rt_answered_early(d.sock) == AF_REQS - failed);
out:
	unsetenv("AGXQ_CPU_FAULT_EVERY");
	unsetenv("AGXQ_CPU_FAULT_KIND");
	unsetenv("AGXQ_CUDA_FAULT_EVERY");
	unsetenv("AGXQ_CUDA_ANSWER");
	codec_envelope_free(rep);
	free(frame);
	raw_conn_close(&w);
	if (d.pid > 0 && du_stop(&d) != 0)
		testlib_failed = 1;
	du_cleanup(&d);
}

/*
 * A fresh agxqd (started with extra) and a raw connection to it with a ring
 * (bs_raw_ring), for the cases that watch one client's slots and the stats.
 */
struct rd {
	struct du_daemon d;
	struct rt_ring r;
	struct tgraph *tg;
	uint64_t model;
	int fd;
};

/* Starts rd's daemon and connects; 0 or -1 (rd_close still needed). */
static int
rd_open(struct rd *rd, const char *const *extra)
{
	memset(rd, 0, sizeof *rd);
	rd->d.pid = -1;
	rd->fd = -1;
	rt_ring_init(&rd->r);
	if (du_start(&rd->d, extra) != 0)
		return -1;
	rd->fd = bs_raw_ring(rd->d.sock, &rd->r, &rd->tg, &rd->model);
	return rd->fd >= 0 ? 0 : -1;
}

/* Closes what rd_open made, and stops its daemon (a failure fails the case). */
static void
rd_close(struct rd *rd)
{
	if (rd->fd >= 0)
		close(rd->fd);
	rt_ring_free(&rd->r);
	tg_free(rd->tg);
	if (rd->d.pid > 0 && du_stop(&rd->d) != 0)
		testlib_failed = 1;
	du_cleanup(&rd->d);
}

/* ---- wait_times ---------------------------------------------------------- */

#define WT_STAMP_NS 40000000ull /* the one stamped post: 40 ms before */

/*
 * Stats' ring wait comes from the posting time the client writes in the
 * slot. On a fresh agxqd, a raw client posts an Infer stamped 40 ms ago,
 * one stamped 10 s ahead and one unstamped (0): only the first makes a
 * sample, so p50 and p99 are its 40+ ms (the other two would be a wait
 * of 0 or of the whole uptime). The replies handed out have times too, no
 * longer than the test took; `agxqd status` prints both.
 */
static void
t_wait_times(void)
{
	struct rd rd;
	Agxq__Envelope *st = NULL;
	char out[4096];
	uint64_t t0 = du_now_ms();

	CHECK(rd_open(&rd, rt_polling) == 0);
	for (uint32_t i = 0; i < 3; i++) {
		struct ring_slot *s = ring_slot_at(rd.r.base, rd.r.slot_size,
		    i);
		uint64_t now = du_now_ns();

		s->posted_ns = i == 0 ? now - WT_STAMP_NS : i == 1 ?
		    now + 10000000000ull : 0;
		CHECK(bs_expect_slot_infer(rd.fd, &rd.r, i, 10 + i, rd.model,
		    1) == 0);
	}
	CHECK((st = du_raw_stats(rd.d.sock)) != NULL);
	printf("  ring wait p50 %llu p99 %llu us; out p50 %llu p99 %llu us\n",
	    (unsigned long long)st->stats->ring_wait_p50_us,
	    (unsigned long long)st->stats->ring_wait_p99_us,
	    (unsigned long long)st->stats->out_p50_us,
	    (unsigned long long)st->stats->out_p99_us);
	CHECK(st->stats->ring_wait_p50_us >= WT_STAMP_NS / 1000);
	CHECK(st->stats->ring_wait_p99_us == st->stats->ring_wait_p50_us);
	CHECK(st->stats->ring_wait_p99_us < (du_now_ms() - t0 + 40) * 1000);
	CHECK(st->stats->out_p50_us <= st->stats->out_p99_us);
	CHECK(st->stats->out_p99_us < (du_now_ms() - t0) * 1000);
	{
		const char *a[] = { "status", "--socket", rd.d.sock, NULL };

		CHECK(du_run(a, 10000, out, sizeof out) == 0);
		CHECK(rt_has(out, "posted in a ring until taken"));
	}
out:
	codec_envelope_free(st);
	rd_close(&rd);
}

/* ---- answered ------------------------------------------------------------ */

#define AN_REQS 300

/*
 * The executor answers a ring request in its slot before the request's loop
 * has put the slot back in its books. On agxqd with --max-inflight 1, a raw
 * client posts 300 Infers in slot 0, each the moment the last was answered
 * (the loop must look at the slot again once its books have it free), then
 * 300 going round 4 slots (the request just answered must not count against
 * the limit). Every reply is right, none is refused, and the stats count
 * each one as answered in its slot.
 */
static void
t_answered(void)
{
	static const char *const extra[] = { "--spin-us", "20000",
	    "--max-inflight", "1", NULL };
	struct rd rd;
	Agxq__Envelope *st = NULL;

	CHECK(rd_open(&rd, extra) == 0);
	for (int k = 0; k < AN_REQS; k++)
		CHECK(bs_expect_slot_infer(rd.fd, &rd.r, 0, 100 + (uint64_t)k,
		    rd.model, 1 + k % 4) == 0);
	for (int k = 0; k < AN_REQS; k++)
		CHECK(bs_expect_slot_infer(rd.fd, &rd.r, (uint32_t)k % 4,
		    1000 + (uint64_t)k, rd.model, 1 + k % 4) == 0);
	CHECK((st = du_raw_stats(rd.d.sock)) != NULL);
	printf("  ring requests %llu, answered in the slot %llu\n",
	    (unsigned long long)st->stats->ring_requests,
	    (unsigned long long)st->stats->ring_answered);
	CHECK(st->stats->ring_requests == 2 * AN_REQS);
	CHECK(st->stats->ring_answered == 2 * AN_REQS);
out:
	codec_envelope_free(st);
	rd_close(&rd);
}

/* ---- daemon_dies --------------------------------------------------------- */

#define DD_NIO 4
#define DD_GIVE_MS 3000       /* a call must end this soon after the kill */

/* The client thread of daemon_dies. */
struct dd_thread {
	agxq_model *m;
	const struct du_io *io;
	atomic_int ok;           /* right results */
	atomic_int done;         /* set when the loop has ended */
	atomic_int stop;         /* set by the case to end the loop */
	int rc;                  /* the call that failed */
	int after;               /* the call made after that */
	uint64_t t_fail;         /* when the failed call returned */
};

/* Infers (polling the slot: AGXQ_SPIN_US 20000) until a call fails. */
static void *
dd_main(void *arg)
{
	struct dd_thread *t = arg;
	agxq_result *r = NULL;
	int rc;

	for (int i = 0; !atomic_load(&t->stop); i++) {
		rc = rt_infer(t->m, &t->io[i % DD_NIO]);
		if (rc == 0) {
			atomic_fetch_add(&t->ok, 1);
			continue;
		}
		t->t_fail = du_now_ms();
		t->rc = rc;
		/* No reconnect: the next call fails at once too. */
		t->after = agxq_infer(t->m, &t->io[0].in, 1, NULL, &r);
		agxq_result_free(r);
		break;
	}
	atomic_store(&t->done, 1);
	return NULL;
}

/*
 * A client (AGXQ_RECONNECT=0) inferring through the ring when agxqd's
 * worker is SIGKILLed: its call returns AGXQ_EDISCONNECTED or AGXQ_EAGAIN
 * within a few seconds, and so does the next. The model is mlp, whose
 * round trips stay well under the 20 ms of polling that keep a client on
 * its ring even in sanitizer builds on a loaded machine (a transformer's
 * did not, and the case then saw no ring request).
 */
static void
t_daemon_dies(void)
{
	struct du_daemon d;
	struct dd_thread th;
	struct du_io *io = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	pthread_t tid;
	uint64_t t_kill = 0, end;
	pid_t worker = -1;
	int started = 0;

	memset(&d, 0, sizeof d);
	d.pid = -1;
	memset(&th, 0, sizeof th);
	CHECK(rt_ios_make(AGXQ_REF_MLP, DD_NIO, 4, 0, &io) == 0);
	CHECK(du_start(&d, rt_polling) == 0);
	CHECK((worker = du_worker_pid(d.sock)) > 0);
	CHECK_OK(rt_connect(d.sock, NULL, "20000", "0", &c));
	CHECK_OK(du_load_ref(c, NULL, AGXQ_REF_MLP, RT_SEED, &m,
	    NULL));
	th.m = m;
	th.io = io;
	CHECK(pthread_create(&tid, NULL, dd_main, &th) == 0);
	started = 1;
	/* Requests go through the ring before the kill. */
	end = du_now_ms() + 5000;
	while ((atomic_load(&th.ok) < 3 || rt_ring_requests(d.sock) <= 0) &&
	    !atomic_load(&th.done) && du_now_ms() < end)
		usleep(10000);
	CHECK(!atomic_load(&th.done));
	CHECK(atomic_load(&th.ok) >= 3);
	CHECK(rt_ring_requests(d.sock) > 0);
	usleep(3000);
	t_kill = du_now_ms();
	CHECK(kill(worker, SIGKILL) == 0);
out:
	if (started) {
		end = du_now_ms() + 10000;
		if (t_kill == 0)
			atomic_store(&th.stop, 1);
		while (!atomic_load(&th.done) && du_now_ms() < end)
			usleep(5000);
		if (!atomic_load(&th.done)) {
			printf("  the client still waits 10 s after the kill; "
			    "the watchdog will end the test\n");
			testlib_failed = 1;
			du_cleanup(&d);
		}
		pthread_join(tid, NULL);
		if (t_kill != 0) {
			printf("  %d right results; after the kill: %s in %llu "
			    "ms, then %s\n", atomic_load(&th.ok),
			    agxq_strerror(th.rc),
			    (unsigned long long)(th.t_fail - t_kill),
			    agxq_strerror(th.after));
			EXPECT(th.rc == AGXQ_EDISCONNECTED ||
			    th.rc == AGXQ_EAGAIN);
			EXPECT(th.t_fail - t_kill < DD_GIVE_MS);
			EXPECT(th.after == AGXQ_EDISCONNECTED ||
			    th.after == AGXQ_EAGAIN);
		}
	}
	agxq_model_unload(m);
	agxq_close(c);
	/*
	 * Stop agxqd once its new worker serves: a SIGTERM that reaches the
	 * supervisor while it forks the new worker can be lost (seen under
	 * TSan), and that race is not what this case is about.
	 */
	end = du_now_ms() + 10000;
	while (t_kill != 0 && d.pid > 0 && du_now_ms() < end) {
		pid_t now = du_worker_pid(d.sock);

		if (now > 0 && now != worker)
			break;
		usleep(20000);
	}
	if (d.pid > 0 && du_alive(d.pid) && du_stop(&d) != 0)
		testlib_failed = 1;
	du_cleanup(&d);
	rt_ios_free(io, DD_NIO);
}

static const struct testlib_case cases[] = {
	{ "used", t_used },
	{ "off_without_polling", t_off_without_polling },
	{ "ring_clients", t_ring_clients },
	{ "env_off", t_env_off },
	{ "raw_off", t_raw_off },
	{ "more_threads_than_slots", t_more_threads_than_slots },
	{ "waiter", t_waiter },
	{ "big_reply", t_big_reply },
	{ "bad_attach", t_bad_attach },
	{ "bad_slot", t_bad_slot },
	{ "raw_frames", t_raw_frames },
	{ "raw_scribble", t_raw_scribble },
	{ "raw_late_waiter", t_raw_late_waiter },
	{ "raw_answered_early", t_raw_answered_early },
	{ "raw_answer_fault", t_raw_answer_fault },
	{ "daemon_dies", t_daemon_dies },
	{ "wait_times", t_wait_times },
	{ "answered", t_answered },
};

int
main(int argc, char **argv)
{
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	du_watchdog(100);
	if (du_start(&daemon_, rt_polling) != 0) {
		printf("FAIL cannot start agxqd\n");
		du_cleanup(&daemon_);
		return 1;
	}
	rc = testlib_run(cases, TESTLIB_N(cases), argc, argv);
	if (du_stop(&daemon_) != 0)
		rc = 1;
	du_cleanup(&daemon_);
	return rc;
}
