/*
 * client: libagxq's connection to agxqd.
 *
 * One Unix stream socket per agxq_client, one reader thread that decodes
 * every reply and completes the request it names, and a table of pending
 * requests keyed by request id. Sends are whole frames written under one
 * mutex; replies may arrive in any order. Synchronous calls wait on their
 * own condition variable, so a reply wakes exactly one thread. Asynchronous
 * callbacks run on the reader thread with no lock held.
 *
 * Shared memory: requests whose inputs reach shm_threshold bytes
 * (AGXQ_SHM_THRESHOLD, default 64 KiB, 0: never) are copied once into a
 * slice of the connection's pool of registered memfd regions and named by
 * ShmRef; their outputs are written by agxqd into the same slice (sized from
 * what earlier replies of the model returned), and the result's tensors
 * point into it: the slice stays pinned until agxq_result_free. When memfd
 * or registration is unavailable, requests go inline.
 *
 * Reconnecting: a lost connection fails everything pending once (the
 * reader's last act is to set dead). The next call joins that reader,
 * connects again, sends each open model's saved LoadModel frame with a new
 * request id, swaps in the new ids and socket and bumps gen, the
 * connection number. Every request reads gen before its model id and is
 * sent only while gen is unchanged, so an old id never reaches the new
 * daemon. Shared memory stays off afterwards: the pool's regions were
 * registered with the old connection. Lock order: conn_mu, mu, send_mu.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agxq.h"
#include "builder.h"
#include "codec.h"
#include "envset.h"
#include "stats_json.h"
#include "rawinfer.h"
#include "result.h"
#include "ringfmt.h"
#include "shmpool.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* SO_NOSIGPIPE is set on the socket instead */
#endif

#define CLIENT_HANDSHAKE_MS 5000
#define CLIENT_READ_SIZE (64u << 10)
#define CLIENT_MAX_INPUTS 1024
#define CLIENT_MIN_BUCKETS 64
#define CLIENT_SHM_THRESHOLD (64u << 10)
#define CLIENT_SHM_MAX_IN 8         /* inputs of a request that can use shm */
#define CLIENT_SHM_MAX_OUT 8        /* outputs of a model that can use shm */
#define CLIENT_SHM_MIN_REGION (8u << 20)
#define CLIENT_SHM_POOL_MAX ((size_t)4 << 30)
#define CLIENT_OUTINFO 32           /* models whose output sizes are known */
#define CLIENT_SHM_ALIGN 64u
#define CLIENT_RECONNECT_MS 100      /* least time between reconnects */
#define CLIENT_RETRY_MS 10000        /* AGXQ_RETRY_MS default */
#define CLIENT_RETRY_PAUSE_MS 100    /* longest pause between retries */
#define CLIENT_BROKEN 1              /* client_send: the write failed */
#define CLIENT_NO_RING 2             /* client_ring_call: use the socket */
#define CLIENT_RING_SLOTS 32
/*
 * Default polling of sync callers on hosts with more than 4 cores, for
 * replies on the socket and in the ring. A ring request whose caller
 * stops polling costs the socket round trip after all: in one call on an
 * H200, 8 clients of linear ran 77.6k requests/s polling 50 us and 144.9k
 * polling 150 us (docs/gpu-results/h200-ring/steps/3-retire-first).
 */
#define CLIENT_SPIN_US 50
#define CLIENT_RING_SPIN_US 200
#define CLIENT_SPIN_MAX_US 100000    /* AGXQ_SPIN_US at most */
#define CLIENT_RETRY_MAX_MS 86400000 /* AGXQ_RETRY_MS at most: a day */
#define CLIENT_RING_PAUSE_US 20      /* then a ring waiter polls between yields */

enum client_wait {
	CLIENT_SYNC,
	CLIENT_ASYNC
};

/* A request's slice of shared memory, pinned until its result is freed. */
struct client_hold {
	struct agxq_client *c;        /* for learning output sizes */
	struct shmpool *pool;
	struct shmpool_slice slice;
	uint64_t model_id;
	int64_t rows;
	int nin, nout;
	uint64_t in_off[CLIENT_SHM_MAX_IN], in_len[CLIENT_SHM_MAX_IN];
	uint64_t out_off[CLIENT_SHM_MAX_OUT], out_len[CLIENT_SHM_MAX_OUT];
};

/* Output bytes per row a model returned, to size output slices. */
struct client_outinfo {
	uint64_t model_id;            /* 0: free */
	int nout;
	uint64_t row_bytes[CLIENT_SHM_MAX_OUT];
};

/* A request waiting for its reply. */
struct client_pending {
	uint64_t id;
	int expect;                   /* body case of the reply */
	enum client_wait kind;
	struct client_pending *next;  /* bucket chain, or a local list */

	/* CLIENT_SYNC: lives on the waiter's stack. */
	pthread_cond_t cv;
	int done;
	int status;
	Agxq__Envelope *reply;

	/* CLIENT_ASYNC: malloc'd, freed by whoever completes it. */
	agxq_infer_cb cb;
	void *arg;
	struct client_hold *hold;     /* shared memory, or NULL */
};

/*
 * The request ring (proto/ringfmt.h), attached on the first connection by
 * the first synchronous infer. A set bit of free_mask is a free slot.
 */
struct client_ring {
	void *base;
	size_t size;
	uint32_t slots;
	uint32_t slot_size;
	unsigned gen;                 /* the connection it is attached to */
	atomic_uint_fast64_t free_mask;
	atomic_uint next;             /* where client_ring_get looks first */
	uint8_t *kick;                /* an encoded RingKick frame */
	size_t kick_len;
};

/* The frame reader's buffer: data[off..len) is unparsed. */
struct client_rbuf {
	uint8_t *data;
	size_t off;
	size_t len;
	size_t cap;
};

struct agxq_client {
	int fd;
	atomic_int dead;               /* connection lost or closing */
	atomic_uint_fast64_t next_id;
	struct codec_limits lim;
	char *backend;
	char *server_version;

	pthread_mutex_t send_mu;       /* held while a whole frame is written */

	int spin_us;                   /* sync callers poll this long before sleeping */
	int ring_spin_us;              /* the same for a request in the ring */
	pthread_mutex_t mu;            /* protects the pending table and models */
	struct agxq_model *models;     /* open model handles, freed by agxq_close */
	struct client_pending **buckets;
	size_t nbuckets;               /* power of two */
	size_t npending;

	pthread_t reader;
	atomic_int reader_started;     /* reader runs or awaits a join */
	struct client_rbuf rb;

	size_t compress_threshold;     /* AGXQ_COMPRESS_THRESHOLD */
	size_t shm_threshold;          /* AGXQ_SHM_THRESHOLD; 0: off */
	atomic_int shm_off;            /* unavailable: inline only */
	struct shmpool *pool;
	pthread_mutex_t grow_mu;       /* one registration at a time */
	pthread_mutex_t info_mu;       /* outinfo */
	atomic_int ring_off;           /* AGXQ_RING=0, refused, or reconnected */
	atomic_int ring_ready;         /* ring is attached (set under grow_mu) */
	struct client_ring *ring;
	int ring_raw_on;               /* AGXQ_RING_RAW is not 0 */
	atomic_int ring_raw;           /* and agxqd reads raw Infers (rawinfer.h);
	                                  set again by each handshake */
	struct client_outinfo outinfo[CLIENT_OUTINFO];
	uint32_t outinfo_next;

	/* Reconnecting (see agxq_connect in agxq.h). */
	char *path;                    /* the socket path */
	int reconnect;                 /* AGXQ_RECONNECT is not 0 */
	int64_t retry_ms;              /* AGXQ_RETRY_MS: resend AGXQ_EAGAIN this long */
	atomic_int goaway;             /* the daemon said nothing more will run */
	atomic_uint goaway_gen;        /* the last connection that said so */
	atomic_uint gen;               /* connection number; mu and send_mu */
	pthread_mutex_t conn_mu;       /* one reconnect at a time */
	int64_t last_try_ms;           /* last attempt; conn_mu */
};

struct agxq_model {
	agxq_client *client;
	atomic_uint_fast64_t model_id; /* changes when reconnected */
	uint8_t *load_frame;           /* its LoadModel, to send again */
	size_t load_len;
	uint64_t new_id;               /* while reconnecting */
	struct agxq_model *prev, *next; /* the client's open handles */
	atomic_int rtt_us;             /* running mean of its sync round trips */
};

/* Returns the monotonic clock in milliseconds. */
static int64_t
client_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Returns a malloc'd copy of s (NULL stays NULL). */
static char *
client_strdup(const char *s)
{
	return s == NULL ? NULL : strdup(s);
}

/* Whether the calling thread is c's reader thread (a callback). */
static int
client_on_reader(const agxq_client *c)
{
	return atomic_load(&c->reader_started) &&
	    pthread_equal(pthread_self(), c->reader);
}

/*
 * Adds p to the pending table, growing it; fails once the client is dead:
 * AGXQ_EAGAIN when the daemon said it would run nothing more (dead and
 * goaway change together under c->mu), else AGXQ_EDISCONNECTED.
 */
static int
client_pending_add(agxq_client *c, struct client_pending *p)
{
	struct client_pending **nb, *q, *next;
	size_t n, h;
	int rc;

	pthread_mutex_lock(&c->mu);
	if (atomic_load(&c->dead)) {
		rc = atomic_load(&c->goaway) ? AGXQ_EAGAIN :
		    AGXQ_EDISCONNECTED;
		pthread_mutex_unlock(&c->mu);
		return rc;
	}
	if (c->npending >= c->nbuckets) {
		n = c->nbuckets * 2;
		if ((nb = calloc(n, sizeof *nb)) == NULL) {
			pthread_mutex_unlock(&c->mu);
			return AGXQ_ENOMEM;
		}
		for (size_t i = 0; i < c->nbuckets; i++) {
			for (q = c->buckets[i]; q != NULL; q = next) {
				next = q->next;
				h = q->id & (n - 1);
				q->next = nb[h];
				nb[h] = q;
			}
		}
		free(c->buckets);
		c->buckets = nb;
		c->nbuckets = n;
	}
	h = p->id & (c->nbuckets - 1);
	p->next = c->buckets[h];
	c->buckets[h] = p;
	c->npending++;
	pthread_mutex_unlock(&c->mu);
	return 0;
}

/* Removes and returns the pending request id; c->mu held. */
static struct client_pending *
client_pending_take(agxq_client *c, uint64_t id)
{
	struct client_pending **pp, *p;

	for (pp = &c->buckets[id & (c->nbuckets - 1)]; (p = *pp) != NULL;
	    pp = &p->next) {
		if (p->id == id) {
			*pp = p->next;
			p->next = NULL;
			c->npending--;
			return p;
		}
	}
	return NULL;
}

/* Removes p if it is still pending; returns whether it was. */
static int
client_pending_cancel(agxq_client *c, struct client_pending *p)
{
	struct client_pending *q;

	pthread_mutex_lock(&c->mu);
	q = client_pending_take(c, p->id);
	pthread_mutex_unlock(&c->mu);
	return q != NULL;
}

/* Writes a whole frame to fd, looping on partial writes; 0 or -1. */
static int
client_write(int fd, const uint8_t *frame, size_t len, int pass_fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct msghdr msg;
	struct iovec iov;
	ssize_t n;

	while (len > 0) {
		if (pass_fd >= 0) {
			/* The descriptor rides on the frame's first byte. */
			memset(&msg, 0, sizeof msg);
			memset(&cbuf, 0, sizeof cbuf);
			iov.iov_base = (void *)(uintptr_t)frame;
			iov.iov_len = len;
			msg.msg_iov = &iov;
			msg.msg_iovlen = 1;
			msg.msg_control = cbuf.buf;
			msg.msg_controllen = sizeof cbuf.buf;
			CMSG_FIRSTHDR(&msg)->cmsg_level = SOL_SOCKET;
			CMSG_FIRSTHDR(&msg)->cmsg_type = SCM_RIGHTS;
			CMSG_FIRSTHDR(&msg)->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(CMSG_FIRSTHDR(&msg)), &pass_fd,
			    sizeof pass_fd);
			n = sendmsg(fd, &msg, MSG_NOSIGNAL);
			if (n > 0)
				pass_fd = -1;
		} else
			n = send(fd, frame, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		frame += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Writes a whole frame under the send mutex, if the connection is still
 * number gen: a frame made for an earlier connection (its model ids and
 * shared memory belong to that one) is never sent on a later one: that
 * returns AGXQ_EDISCONNECTED, or AGXQ_EAGAIN when the daemon said it would
 * run nothing more on it. A failed write returns CLIENT_BROKEN: the request
 * stays pending: the write left the stream broken mid-frame, so the
 * socket is shut down and the reader, at the end of the stream, fails
 * everything pending.
 */
static int
client_send(agxq_client *c, unsigned gen, const uint8_t *frame, size_t len,
    int pass_fd)
{
	int rc = 0;

	if (atomic_load(&c->dead))
		return atomic_load(&c->goaway_gen) == gen ? AGXQ_EAGAIN :
		    AGXQ_EDISCONNECTED;
	pthread_mutex_lock(&c->send_mu);
	if (atomic_load(&c->gen) != gen || c->fd < 0)
		rc = atomic_load(&c->goaway_gen) == gen ? AGXQ_EAGAIN :
		    AGXQ_EDISCONNECTED;
	else if (client_write(c->fd, frame, len, pass_fd) != 0) {
		shutdown(c->fd, SHUT_RDWR);
		rc = CLIENT_BROKEN;
	}
	pthread_mutex_unlock(&c->send_mu);
	return rc;
}

/* Encodes env into a frame for c; maps failures to AGXQ_E*. */
static int
client_encode(agxq_client *c, const Agxq__Envelope *env, uint8_t **frame,
    size_t *len)
{
	if (codec_encode(env, c->compress_threshold, &c->lim, frame,
	    len, NULL) != 0) {
		if (agxq__envelope__get_packed_size(env) > c->lim.max_message)
			return AGXQ_ETOOBIG;
		return AGXQ_ENOMEM;
	}
	if (*len - CODEC_HEADER_SIZE > c->lim.max_frame) {
		free(*frame);
		return AGXQ_ETOOBIG;
	}
	return 0;
}

/* Writes a note about a setting c cannot use as given to stderr. */
static void
client_env_note(const char *note, void *arg)
{
	(void)arg;
	fprintf(stderr, "agxq: %s\n", note);
}

/*
 * Reads c's settings from the environment (see agxq_connect); a value that
 * cannot be used keeps the default and is reported on stderr, once per
 * process. Sync callers poll for their reply before sleeping for
 * $AGXQ_SPIN_US, else CLIENT_SPIN_US (socket) and CLIENT_RING_SPIN_US
 * (ring) on machines with more than 4 cores and 0 on smaller ones, where
 * the polling thread would take the core the daemon needs.
 */
static void
client_settings(agxq_client *c)
{
	int many = sysconf(_SC_NPROCESSORS_ONLN) > 4;
	unsigned long spin;

	if (envset_ulong_opt("AGXQ_SPIN_US", 0, CLIENT_SPIN_MAX_US, &spin,
	    "the defaults") == 1)
		c->spin_us = c->ring_spin_us = (int)spin;
	else {
		c->spin_us = many ? CLIENT_SPIN_US : 0;
		c->ring_spin_us = many ? CLIENT_RING_SPIN_US : 0;
	}
	c->reconnect = envset_bool("AGXQ_RECONNECT", 1);
	c->retry_ms = (int64_t)envset_ulong("AGXQ_RETRY_MS", CLIENT_RETRY_MS,
	    0, CLIENT_RETRY_MAX_MS);
	c->compress_threshold = envset_ulong("AGXQ_COMPRESS_THRESHOLD",
	    CODEC_DEFAULT_COMPRESS_THRESHOLD, 0, SIZE_MAX);
	c->shm_threshold = envset_ulong("AGXQ_SHM_THRESHOLD",
	    CLIENT_SHM_THRESHOLD, 0, SIZE_MAX);
	atomic_init(&c->ring_off, !envset_bool("AGXQ_RING", 1));
	c->ring_raw_on = envset_bool("AGXQ_RING_RAW", 1);
	envset_take_notes(client_env_note, NULL);
}

/*
 * Polls p->done for up to c->spin_us before the caller sleeps: with cores
 * to spare, a reply that lands meanwhile costs no sleep and wake-up of the
 * calling thread. The caller still takes c->mu afterwards, which orders
 * the reply and keeps p alive until the reader has let go of it.
 */
static void
client_spin(const agxq_client *c, const struct client_pending *p)
{
	struct timespec ts;
	int64_t end;

	if (c->spin_us == 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	end = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 + c->spin_us;
	while (!__atomic_load_n(&p->done, __ATOMIC_ACQUIRE)) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if ((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 >= end)
			return;
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	}
}

/*
 * Sends frame (taken) for request id and waits for the reply of body case
 * expect. On success *reply holds it (caller frees); an Error reply returns
 * its code.
 */
static int
client_call_frame(agxq_client *c, unsigned gen, uint8_t *frame, size_t len,
    uint64_t id, int expect, Agxq__Envelope **reply, int pass_fd)
{
	struct client_pending p;
	int rc;

	memset(&p, 0, sizeof p);
	p.id = id;
	p.expect = expect;
	p.kind = CLIENT_SYNC;
	pthread_cond_init(&p.cv, NULL);
	if ((rc = client_pending_add(c, &p)) != 0) {
		free(frame);
		goto out;
	}
	rc = client_send(c, gen, frame, len, pass_fd);
	free(frame);

	if (rc == CLIENT_BROKEN)
		rc = 0;           /* the reader fails it at the end of the stream */
	else if (rc == 0)
		client_spin(c, &p);
	pthread_mutex_lock(&c->mu);
	if (rc != 0 && client_pending_take(c, id) != NULL) {
		pthread_mutex_unlock(&c->mu);
		goto out;
	}
	while (!p.done)
		pthread_cond_wait(&p.cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
	if ((rc = p.status) == 0)
		*reply = p.reply;
	else
		codec_envelope_free(p.reply);
out:
	pthread_cond_destroy(&p.cv);
	return rc;
}

/* Encodes env (request id id), sends it on connection gen and waits. */
static int
client_call(agxq_client *c, unsigned gen, const Agxq__Envelope *env,
    uint64_t id, int expect, Agxq__Envelope **reply)
{
	uint8_t *frame;
	size_t len;
	int rc;

	if (client_on_reader(c))
		return AGXQ_EINVAL;
	if ((rc = client_encode(c, env, &frame, &len)) != 0)
		return rc;
	return client_call_frame(c, gen, frame, len, id, expect, reply, -1);
}

/* Rounds n up to the slice alignment. */
static uint64_t
client_align(uint64_t n)
{
	return (n + CLIENT_SHM_ALIGN - 1) & ~(uint64_t)(CLIENT_SHM_ALIGN - 1);
}

/* Gives a hold's slice back to the pool and frees it (a result release). */
static void
client_hold_release(void *arg)
{
	struct client_hold *h = arg;

	if (h == NULL)
		return;
	shmpool_free(h->pool, &h->slice);
	free(h);
}

/* Maps an output ShmRef of a reply to our mapping, inside h's slice only. */
static const void *
client_hold_resolve(void *arg, const Agxq__ShmRef *ref)
{
	struct client_hold *h = arg;
	const struct shmpool_slice *sl = &h->slice;

	if (ref->region_id != sl->region_id || ref->offset < sl->offset ||
	    ref->offset - sl->offset > sl->len ||
	    ref->length > sl->len - (ref->offset - sl->offset) ||
	    ref->offset % sizeof(float) != 0)
		return NULL;
	return sl->p + (ref->offset - sl->offset);
}

/* Finds (or with create, makes) model_id's output info; info_mu held. */
static struct client_outinfo *
client_outinfo(agxq_client *c, uint64_t model_id, int create)
{
	struct client_outinfo *o;

	for (uint32_t i = 0; i < CLIENT_OUTINFO; i++) {
		if (c->outinfo[i].model_id == model_id)
			return &c->outinfo[i];
	}
	if (!create)
		return NULL;
	o = &c->outinfo[c->outinfo_next++ % CLIENT_OUTINFO];
	memset(o, 0, sizeof *o);
	o->model_id = model_id;
	return o;
}

/* Records the output sizes of a result of model_id for rows rows. */
static void
client_learn(agxq_client *c, uint64_t model_id, int64_t rows,
    const agxq_result *r)
{
	struct client_outinfo *o;

	if (r->n < 1 || r->n > CLIENT_SHM_MAX_OUT || rows < 1)
		return;
	pthread_mutex_lock(&c->info_mu);
	o = client_outinfo(c, model_id, 1);
	if (o->nout != r->n) {
		memset(o->row_bytes, 0, sizeof o->row_bytes);
		o->nout = r->n;
	}
	for (int j = 0; j < r->n; j++) {
		uint64_t b = agxq_tensor_nelem(&r->out[j]) * sizeof(float);

		b = (b + (uint64_t)rows - 1) / (uint64_t)rows;
		if (b > o->row_bytes[j])
			o->row_bytes[j] = b;
	}
	pthread_mutex_unlock(&c->info_mu);
}

/*
 * Makes a result from an InferReply of a shared memory request, taking env;
 * on success the result pins h's slice, otherwise h is released.
 */
static int
client_hold_result(struct client_hold *h, Agxq__Envelope *env,
    agxq_result **out)
{
	int rc;

	rc = result_from_envelope_shm(env, client_hold_resolve, h, out);
	if (rc != 0) {
		client_hold_release(h);
		return rc;
	}
	client_learn(h->c, h->model_id, h->rows, *out);
	(*out)->release = client_hold_release;
	(*out)->release_arg = h;
	return 0;
}

/*
 * Registers a new region big enough for len more bytes. Any failure turns
 * shared memory off for the connection. Returns 0 or -1.
 */
static int
client_shm_grow(agxq_client *c, unsigned gen, size_t len)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *reply = NULL;
	Agxq__RegisterRegion rr = AGXQ__REGISTER_REGION__INIT;
	size_t have, size;
	uint8_t *frame;
	size_t flen;
	void *base;
	int fd, rc;

	have = shmpool_size(c->pool);
	size = 2 * (size_t)client_align(len);
	size = (size + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
	if (size < CLIENT_SHM_MIN_REGION)
		size = CLIENT_SHM_MIN_REGION;
	if (size < have)
		size = have;
	if (size > CLIENT_SHM_POOL_MAX - have)
		size = CLIENT_SHM_POOL_MAX - have;
	if (size < len)
		return -1; /* pool full: this request goes inline */
	if (shmpool_create("agxq-shm", size, &fd, &base) != 0) {
		atomic_store(&c->shm_off, 1);
		return -1;
	}
	rr.request_id = atomic_fetch_add(&c->next_id, 1);
	rr.size = size;
	env.body_case = AGXQ__ENVELOPE__BODY_REGISTER_REGION;
	env.register_region = &rr;
	if ((rc = client_encode(c, &env, &frame, &flen)) == 0)
		rc = client_call_frame(c, gen, frame, flen, rr.request_id,
		    AGXQ__ENVELOPE__BODY_REGISTER_REGION_REPLY, &reply, fd);
	close(fd);
	if (rc == 0 && shmpool_add(c->pool,
	    reply->register_region_reply->region_id, base, size) != 0)
		rc = AGXQ_ENOMEM;
	codec_envelope_free(reply);
	if (rc != 0) {
		/* The daemon keeps an unused mapping until we disconnect. */
		munmap(base, size);
		atomic_store(&c->shm_off, 1);
		return -1;
	}
	return 0;
}

/*
 * Decides whether a request goes through shared memory; if so copies its
 * inputs into a new slice and returns 1 with *out (the hold), else 0 (send
 * inline: below the threshold, shared memory off, or no room).
 */
static int
client_shm_prepare(agxq_model *m, unsigned gen, const agxq_tensor *inputs,
    int ninputs, struct client_hold **out)
{
	agxq_client *c = m->client;
	struct client_hold *h;
	struct client_outinfo *o;
	uint64_t total = 0, len = 0;

	*out = NULL;
	if (c->shm_threshold == 0 || atomic_load(&c->shm_off) ||
	    inputs == NULL || ninputs < 1 || ninputs > CLIENT_SHM_MAX_IN)
		return 0;
	for (int i = 0; i < ninputs; i++) {
		const agxq_tensor *t = &inputs[i];
		uint64_t n = 1;

		if (t->dtype != AGXQ_FLOAT32 || t->ndim < 1 ||
		    t->ndim > AGXQ_MAX_DIMS || t->data == NULL)
			return 0; /* the inline path reports it */
		for (int d = 0; d < t->ndim; d++) {
			if (t->shape[d] <= 0 || t->shape[d] > (1LL << 32))
				return 0;
			n *= (uint64_t)t->shape[d];
			if (n > ((uint64_t)UINT32_MAX >> 2))
				return 0;
		}
		total += n * sizeof(float);
	}
	if (total < c->shm_threshold)
		return 0;
	if ((h = calloc(1, sizeof *h)) == NULL)
		return 0;
	h->c = c;
	h->pool = c->pool;
	h->model_id = atomic_load(&m->model_id);
	h->rows = inputs[0].shape[0];
	h->nin = ninputs;
	for (int i = 0; i < ninputs; i++) {
		h->in_off[i] = len;
		h->in_len[i] = agxq_tensor_nelem(&inputs[i]) * sizeof(float);
		len += client_align(h->in_len[i]);
	}
	pthread_mutex_lock(&c->info_mu);
	if ((o = client_outinfo(c, h->model_id, 0)) != NULL) {
		h->nout = o->nout;
		for (int j = 0; j < o->nout; j++) {
			h->out_off[j] = len;
			h->out_len[j] = o->row_bytes[j] * (uint64_t)h->rows;
			len += client_align(h->out_len[j]);
		}
	}
	pthread_mutex_unlock(&c->info_mu);
	if (len > SIZE_MAX / 2)
		goto fail_free;
	if (shmpool_alloc(c->pool, (size_t)len, &h->slice) != 0) {
		/* Growing waits for a reply: not on the reader thread. */
		if (client_on_reader(c))
			goto fail_free;
		pthread_mutex_lock(&c->grow_mu);
		if (shmpool_alloc(c->pool, (size_t)len, &h->slice) != 0 &&
		    (client_shm_grow(c, gen, (size_t)len) != 0 ||
		    shmpool_alloc(c->pool, (size_t)len, &h->slice) != 0)) {
			pthread_mutex_unlock(&c->grow_mu);
			goto fail_free;
		}
		pthread_mutex_unlock(&c->grow_mu);
	}
	for (int i = 0; i < ninputs; i++)
		memcpy(h->slice.p + h->in_off[i], inputs[i].data,
		    (size_t)h->in_len[i]);
	*out = h;
	return 1;

fail_free:
	free(h);
	return 0;
}

/* Maps a reply to a status: 0, the Error's code, or AGXQ_EPROTO. */
static int
client_reply_status(const Agxq__Envelope *env, int expect)
{
	if ((int)env->body_case == expect)
		return 0;
	if (env->body_case == AGXQ__ENVELOPE__BODY_ERROR)
		return result_error_from_wire(env->error->code);
	return AGXQ_EPROTO;
}

/* Completes one pending request with env (taken) or status; no lock held. */
static void
client_complete_async(struct client_pending *p, Agxq__Envelope *env,
    int status)
{
	agxq_result *r = NULL;

	if (env != NULL) {
		status = client_reply_status(env, p->expect);
		if (status == 0 && p->hold != NULL) {
			status = client_hold_result(p->hold, env, &r);
			p->hold = NULL;
		} else if (status == 0)
			status = result_from_envelope(env, &r);
		else
			codec_envelope_free(env);
	}
	client_hold_release(p->hold);
	p->cb(p->arg, status, status == 0 ? r : NULL);
	agxq_result_free(r);
	free(p);
}

/* Returns the request id a reply names, or 0. */
static uint64_t
client_reply_id(const Agxq__Envelope *env)
{
	switch (env->body_case) {
	case AGXQ__ENVELOPE__BODY_INFER_REPLY:
		return env->infer_reply->request_id;
	case AGXQ__ENVELOPE__BODY_LOAD_MODEL_REPLY:
		return env->load_model_reply->request_id;
	case AGXQ__ENVELOPE__BODY_UNLOAD_MODEL_REPLY:
		return env->unload_model_reply->request_id;
	case AGXQ__ENVELOPE__BODY_STATS:
		return env->stats->request_id;
	case AGXQ__ENVELOPE__BODY_REGISTER_REGION_REPLY:
		return env->register_region_reply->request_id;
	case AGXQ__ENVELOPE__BODY_RELEASE_REGION_REPLY:
		return env->release_region_reply->request_id;
	case AGXQ__ENVELOPE__BODY_ATTACH_RING_REPLY:
		return env->attach_ring_reply->request_id;
	case AGXQ__ENVELOPE__BODY_ERROR:
		return env->error->request_id;
	default:
		return 0;
	}
}

/* Hands a decoded reply (taken) to the request it names. */
static void
client_dispatch(agxq_client *c, Agxq__Envelope *env)
{
	struct client_pending *p;
	uint64_t id;

	/*
	 * Connection-level errors (id 0) are followed by EOF; drop them, but
	 * remember ERR_AGAIN: what is unanswered at EOF was not run.
	 */
	if ((id = client_reply_id(env)) == 0) {
		if (env->body_case == AGXQ__ENVELOPE__BODY_ERROR &&
		    env->error->code == AGXQ__ERROR_CODE__ERR_AGAIN) {
			atomic_store(&c->goaway_gen, atomic_load(&c->gen));
			atomic_store(&c->goaway, 1);
		}
		codec_envelope_free(env);
		return;
	}
	pthread_mutex_lock(&c->mu);
	if ((p = client_pending_take(c, id)) == NULL) {
		pthread_mutex_unlock(&c->mu);
		codec_envelope_free(env);
		return;
	}
	if (p->kind == CLIENT_SYNC) {
		p->status = client_reply_status(env, p->expect);
		p->reply = env;
		__atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
		/* Signalled under the lock: p lives on the waiter's stack. */
		pthread_cond_signal(&p->cv);
		pthread_mutex_unlock(&c->mu);
		return;
	}
	pthread_mutex_unlock(&c->mu);
	client_complete_async(p, env, 0);
}

/*
 * Marks c dead and completes every pending request with AGXQ_EDISCONNECTED,
 * or AGXQ_EAGAIN after the daemon said it runs nothing more: waiters are
 * woken under the lock, callbacks fire after it is dropped.
 */
static void
client_fail_all(agxq_client *c)
{
	struct client_pending *p, *next, *async = NULL;
	int code = atomic_load(&c->goaway) ? AGXQ_EAGAIN : AGXQ_EDISCONNECTED;

	pthread_mutex_lock(&c->mu);
	atomic_store(&c->dead, 1);
	for (size_t i = 0; i < c->nbuckets; i++) {
		for (p = c->buckets[i]; p != NULL; p = next) {
			next = p->next;
			if (p->kind == CLIENT_SYNC) {
				p->status = code;
				__atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
				pthread_cond_signal(&p->cv);
			} else {
				p->next = async;
				async = p;
			}
		}
		c->buckets[i] = NULL;
	}
	c->npending = 0;
	pthread_mutex_unlock(&c->mu);
	for (p = async; p != NULL; p = next) {
		next = p->next;
		client_complete_async(p, NULL, code);
	}
}

/* Makes room for need more bytes after rb->len. */
static int
client_rbuf_reserve(struct client_rbuf *rb, size_t need)
{
	size_t cap;
	uint8_t *d;

	if (rb->off > 0 && (rb->len == rb->off || rb->cap - rb->len < need)) {
		memmove(rb->data, rb->data + rb->off, rb->len - rb->off);
		rb->len -= rb->off;
		rb->off = 0;
	}
	/*
	 * Give back a buffer that grew for a very big frame; keep one of up
	 * to 16 MiB, since freeing and growing it again for every large reply
	 * costs a page fault per 4 KiB of it.
	 */
	if (rb->len == 0 && rb->cap > (16u << 20) &&
	    need <= CLIENT_READ_SIZE) {
		free(rb->data);
		rb->data = NULL;
		rb->cap = 0;
	}
	if (rb->cap - rb->len >= need)
		return 0;
	cap = rb->cap == 0 ? CLIENT_READ_SIZE : rb->cap;
	while (cap - rb->len < need)
		cap *= 2;
	if ((d = realloc(rb->data, cap)) == NULL)
		return -1;
	rb->data = d;
	rb->cap = cap;
	return 0;
}

/*
 * Decodes the next whole frame in rb into *env. Returns 1 with a frame, 0
 * when more bytes are needed (*want: bytes the frame needs in all), -1 on a
 * bad frame.
 */
static int
client_next_frame(const struct codec_limits *lim, struct client_rbuf *rb,
    Agxq__Envelope **env, size_t *want)
{
	const uint8_t *p = rb->data + rb->off;
	size_t avail = rb->len - rb->off;
	uint32_t plen, flags;
	int code;
	char *cause = NULL;

	*want = CODEC_HEADER_SIZE;
	switch (codec_header_parse(p, avail, lim, &plen, &flags, &code,
	    &cause)) {
	case CODEC_NEED_MORE:
		return 0;
	case CODEC_ERROR:
		free(cause);
		return -1;
	case CODEC_OK:
		break;
	}
	*want = CODEC_HEADER_SIZE + (size_t)plen;
	if (avail < *want)
		return 0;
	if (codec_decode(p + CODEC_HEADER_SIZE, plen, flags, lim, env, &code,
	    &cause) != 0) {
		free(cause);
		return -1;
	}
	rb->off += *want;
	return 1;
}

/* Reads more bytes into rb (at least want in all); -1 on EOF or error. */
static int
client_fill(int fd, struct client_rbuf *rb, size_t want)
{
	size_t room;
	ssize_t n;

	room = want > rb->len - rb->off ? want - (rb->len - rb->off) : 1;
	if (room < CLIENT_READ_SIZE / 2)
		room = CLIENT_READ_SIZE / 2;
	if (client_rbuf_reserve(rb, room) != 0)
		return -1;
	for (;;) {
		n = recv(fd, rb->data + rb->len, rb->cap - rb->len, 0);
		if (n > 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		return -1;
	}
	rb->len += (size_t)n;
	return 0;
}

/* The reader thread: decodes frames and completes requests until EOF. */
static void *
client_reader_main(void *arg)
{
	agxq_client *c = arg;
	Agxq__Envelope *env;
	size_t want = CODEC_HEADER_SIZE;
	int rc;

	for (;;) {
		while ((rc = client_next_frame(&c->lim, &c->rb, &env,
		    &want)) == 1)
			client_dispatch(c, env);
		if (rc < 0)
			break;
		if (client_fill(c->fd, &c->rb, want) != 0)
			break;
	}
	shutdown(c->fd, SHUT_RDWR);
	client_fail_all(c);
	return NULL;
}

/* Opens and connects the socket at path. */
static int
client_open(const char *path, int *fdp)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun.sun_path)
		return AGXQ_EINVAL;
	memcpy(sun.sun_path, path, strlen(path) + 1);

#ifdef SOCK_CLOEXEC
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
#else
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) != -1)
		fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
	if (fd == -1)
		return errno == ENOMEM || errno == ENOBUFS ? AGXQ_ENOMEM :
		    AGXQ_ECONNECT;
#ifdef SO_NOSIGPIPE
	{
		int one = 1;

		setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
	}
#endif
	while (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		if (errno == EINTR)
			continue;
		close(fd);
		return AGXQ_ECONNECT;
	}
	*fdp = fd;
	return 0;
}

/* Returns the name this process gives in its Hello. */
static const char *
client_progname(void)
{
#if defined(__GLIBC__)
	return program_invocation_short_name;
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__)
	return getprogname();
#else
	return "libagxq";
#endif
}

/*
 * Waits until deadline for the next frame on fd (nothing else reads it yet:
 * no reader thread) and decodes it into *reply. Leftover bytes stay in c->rb.
 */
static int
client_wait_frame(agxq_client *c, int fd, int64_t deadline,
    Agxq__Envelope **reply)
{
	struct pollfd pfd;
	int64_t left;
	size_t want;
	int rc;

	while ((rc = client_next_frame(&c->lim, &c->rb, reply, &want)) == 0) {
		if ((left = deadline - client_now_ms()) <= 0)
			return AGXQ_ETIMEDOUT;
		pfd.fd = fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		rc = poll(&pfd, 1, (int)left);
		if (rc < 0 && errno != EINTR)
			return AGXQ_ECONNECT;
		if (rc <= 0)
			continue;
		if (client_fill(fd, &c->rb, want) != 0)
			return AGXQ_ECONNECT;
	}
	return rc < 0 ? AGXQ_EPROTO : 0;
}

/*
 * Sends Hello on fd and waits up to CLIENT_HANDSHAKE_MS for the reply, so
 * that a wrong or stuck server never hangs the app. On success *backend
 * and *version hold the server's names (caller frees).
 */
static int
client_handshake(agxq_client *c, int fd, char **backend, char **version)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *reply = NULL;
	Agxq__Hello hello = AGXQ__HELLO__INIT;
	Agxq__HelloReply *hr;
	uint8_t *frame;
	size_t len;
	int rc;

	*backend = *version = NULL;
	hello.protocol_version = CODEC_PROTOCOL_VERSION;
	hello.client_name = (char *)client_progname();
	env.body_case = AGXQ__ENVELOPE__BODY_HELLO;
	env.hello = &hello;
	if ((rc = client_encode(c, &env, &frame, &len)) != 0)
		return rc;
	rc = client_write(fd, frame, len, -1);
	free(frame);
	if (rc != 0)
		return AGXQ_ECONNECT;
	if ((rc = client_wait_frame(c, fd, client_now_ms() +
	    CLIENT_HANDSHAKE_MS, &reply)) != 0)
		return rc;

	switch (reply->body_case) {
	case AGXQ__ENVELOPE__BODY_HELLO_REPLY:
		hr = reply->hello_reply;
		if (hr->protocol_version != CODEC_PROTOCOL_VERSION) {
			rc = AGXQ_EVERSION;
			break;
		}
		if (hr->max_frame != 0 && hr->max_frame != c->lim.max_frame)
			c->lim.max_frame = hr->max_frame;
		if (!hr->shm)
			atomic_store(&c->shm_off, 1);
		if (!hr->ring)
			atomic_store(&c->ring_off, 1);
		atomic_store(&c->ring_raw, hr->ring_raw && c->ring_raw_on);
		*backend = client_strdup(hr->backend);
		*version = client_strdup(hr->server_version);
		rc = *backend == NULL || *version == NULL ? AGXQ_ENOMEM : 0;
		break;
	case AGXQ__ENVELOPE__BODY_ERROR:
		rc = result_error_from_wire(reply->error->code);
		break;
	default:
		rc = AGXQ_EPROTO;
		break;
	}
	codec_envelope_free(reply);
	if (rc != 0) {
		free(*backend);
		free(*version);
		*backend = *version = NULL;
	}
	return rc;
}

/* Starts the reader thread with every signal blocked in it. */
static int
client_start_reader(agxq_client *c)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&c->reader, NULL, client_reader_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return AGXQ_ENOMEM;
	atomic_store(&c->reader_started, 1);
	return 0;
}

/*
 * Loads m again on fd, a new connection with no reader yet: its LoadModel
 * frame is decoded, given a new request id and sent. Sets m->new_id (0
 * when the daemon refuses it: the handle then gets AGXQ_ENOMODEL). Returns
 * 0, or AGXQ_EDISCONNECTED when the connection failed.
 */
static int
client_reload(agxq_client *c, int fd, agxq_model *m)
{
	Agxq__Envelope *env = NULL, *reply = NULL;
	uint32_t plen, flags;
	uint8_t *frame;
	size_t len;
	uint64_t id;
	char *cause = NULL;
	int code, rc;

	m->new_id = 0;
	if (m->load_frame == NULL ||
	    codec_header_parse(m->load_frame, m->load_len, &c->lim, &plen,
	    &flags, &code, &cause) != CODEC_OK ||
	    (size_t)plen > m->load_len - CODEC_HEADER_SIZE ||
	    codec_decode(m->load_frame + CODEC_HEADER_SIZE, plen, flags,
	    &c->lim, &env, &code, &cause) != 0 ||
	    env->body_case != AGXQ__ENVELOPE__BODY_LOAD_MODEL) {
		free(cause);
		codec_envelope_free(env);
		return 0;
	}
	id = atomic_fetch_add(&c->next_id, 1);
	env->load_model->request_id = id;
	rc = client_encode(c, env, &frame, &len);
	codec_envelope_free(env);
	if (rc != 0)
		return 0;
	rc = client_write(fd, frame, len, -1);
	free(frame);
	if (rc != 0)
		return AGXQ_EDISCONNECTED;
	if (client_wait_frame(c, fd, client_now_ms() + CLIENT_HANDSHAKE_MS,
	    &reply) != 0)
		return AGXQ_EDISCONNECTED;
	if (client_reply_id(reply) != id) {
		codec_envelope_free(reply);
		return AGXQ_EDISCONNECTED;
	}
	if (reply->body_case == AGXQ__ENVELOPE__BODY_LOAD_MODEL_REPLY)
		m->new_id = reply->load_model_reply->model_id;
	codec_envelope_free(reply);
	return 0;
}

/*
 * Reconnects a client whose connection was lost: joins the old reader,
 * connects and shakes hands again, loads every open model handle again and
 * gives it its new id, turns shared memory off (the pool's regions were
 * registered with the old connection) and starts a new reader. At most one
 * attempt per CLIENT_RECONNECT_MS. Returns 0 or AGXQ_EDISCONNECTED; after
 * the daemon's ERR_AGAIN notice (goaway), AGXQ_EAGAIN while it is not back
 * yet, or AGXQ_ECONNECT when nothing listens any more.
 */
static int
client_reconnect(agxq_client *c)
{
	char *backend = NULL, *version = NULL;
	agxq_model *m;
	int64_t now;
	int fd = -1, goaway = atomic_load(&c->goaway);
	int rc = goaway ? AGXQ_EAGAIN : AGXQ_EDISCONNECTED;

	pthread_mutex_lock(&c->conn_mu);
	if (!atomic_load(&c->dead)) {
		rc = 0; /* another thread did it */
		goto out;
	}
	if (client_on_reader(c))
		goto out; /* a callback: cannot join ourselves */
	now = client_now_ms();
	if (c->last_try_ms != 0 && now - c->last_try_ms < CLIENT_RECONNECT_MS)
		goto out;
	c->last_try_ms = now;

	/* dead is set last thing in the reader: this join is quick. */
	if (atomic_load(&c->reader_started)) {
		pthread_join(c->reader, NULL);
		atomic_store(&c->reader_started, 0);
	}
	pthread_mutex_lock(&c->send_mu);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	pthread_mutex_unlock(&c->send_mu);

	c->rb.off = c->rb.len = 0;
	if (client_open(c->path, &fd) != 0) {
		/* Told to retry, but nothing listens: agxqd gave up. */
		if (goaway)
			rc = AGXQ_ECONNECT;
		goto out;
	}
	if (client_handshake(c, fd, &backend, &version) != 0)
		goto fail_close;
	free(backend);
	free(version);

	pthread_mutex_lock(&c->mu);
	for (m = c->models; m != NULL; m = m->next) {
		if (client_reload(c, fd, m) != 0) {
			pthread_mutex_unlock(&c->mu);
			goto fail_close;
		}
	}
	/* Requests read gen before model ids: they see old or new of both. */
	atomic_store(&c->shm_off, 1);
	atomic_store(&c->ring_off, 1);
	pthread_mutex_lock(&c->info_mu);
	memset(c->outinfo, 0, sizeof c->outinfo);
	pthread_mutex_unlock(&c->info_mu);
	for (m = c->models; m != NULL; m = m->next)
		atomic_store(&m->model_id, m->new_id);
	pthread_mutex_lock(&c->send_mu);
	c->fd = fd;
	atomic_fetch_add(&c->gen, 1);
	atomic_store(&c->goaway, 0);
	atomic_store(&c->dead, 0);
	pthread_mutex_unlock(&c->send_mu);
	pthread_mutex_unlock(&c->mu);

	if (client_start_reader(c) != 0) {
		/* As a lost connection: fail what was sent meanwhile. */
		shutdown(fd, SHUT_RDWR);
		client_fail_all(c);
	}
	rc = 0;
	goto out;

fail_close:
	close(fd);
out:
	pthread_mutex_unlock(&c->conn_mu);
	return rc;
}

/*
 * Makes sure c is connected, reconnecting if it was lost and allowed, and
 * returns in *gen the connection number a request must be sent on. Read
 * before the model id that goes into the request.
 */
static int
client_ready(agxq_client *c, unsigned *gen)
{
	int rc;

	if (atomic_load(&c->dead)) {
		if (!c->reconnect || client_on_reader(c))
			return AGXQ_EDISCONNECTED;
		if ((rc = client_reconnect(c)) != 0)
			return rc;
	}
	*gen = atomic_load(&c->gen);
	return 0;
}

/* Connects to agxqd, performs the handshake and starts the reader. */
int
agxq_connect(const char *socket_path, agxq_client **out)
{
	agxq_client *c;
	int rc;

	if (out == NULL)
		return AGXQ_EINVAL;
	*out = NULL;
	if (socket_path == NULL)
		socket_path = getenv("AGXQ_SOCKET");
	if (socket_path == NULL || *socket_path == '\0')
		socket_path = AGXQ_DEFAULT_SOCKET;
	if ((c = calloc(1, sizeof *c)) == NULL)
		return AGXQ_ENOMEM;
	c->fd = -1;
	atomic_init(&c->dead, 0);
	atomic_init(&c->next_id, 1);
	atomic_init(&c->gen, 1);
	atomic_init(&c->goaway_gen, 0); /* gen starts at 1: matches none */
	atomic_init(&c->reader_started, 0);
	client_settings(c);
	if ((c->path = strdup(socket_path)) == NULL) {
		free(c);
		return AGXQ_ENOMEM;
	}
	codec_limits_default(&c->lim);
	c->nbuckets = CLIENT_MIN_BUCKETS;
	if ((c->buckets = calloc(c->nbuckets, sizeof *c->buckets)) == NULL) {
		rc = AGXQ_ENOMEM;
		goto fail_free_client;
	}
	pthread_mutex_init(&c->send_mu, NULL);
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->grow_mu, NULL);
	pthread_mutex_init(&c->info_mu, NULL);
	pthread_mutex_init(&c->conn_mu, NULL);
	atomic_init(&c->shm_off, 0);
	atomic_init(&c->ring_ready, 0);
	atomic_init(&c->ring_raw, 0);
	if ((c->pool = shmpool_new()) == NULL) {
		rc = AGXQ_ENOMEM;
		goto fail_destroy_locks;
	}

	if ((rc = client_open(c->path, &c->fd)) != 0)
		goto fail_destroy_locks;
	if ((rc = client_handshake(c, c->fd, &c->backend,
	    &c->server_version)) != 0)
		goto fail_close_socket;
	if ((rc = client_start_reader(c)) != 0)
		goto fail_close_socket;
	*out = c;
	return 0;

fail_close_socket:
	close(c->fd);
fail_destroy_locks:
	shmpool_unref(c->pool);
	pthread_mutex_destroy(&c->conn_mu);
	pthread_mutex_destroy(&c->info_mu);
	pthread_mutex_destroy(&c->grow_mu);
	pthread_mutex_destroy(&c->mu);
	pthread_mutex_destroy(&c->send_mu);
	free(c->backend);
	free(c->server_version);
	free(c->rb.data);
fail_free_client:
	free(c->buckets);
	free(c->path);
	free(c);
	return rc;
}

/* Closes the connection, failing what is still in flight, and frees c. */
void
agxq_close(agxq_client *c)
{
	if (c == NULL)
		return;
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
	if (client_on_reader(c))
		return; /* misuse: cannot join ourselves; the reader winds down */
	if (atomic_load(&c->reader_started))
		pthread_join(c->reader, NULL);
	if (c->fd >= 0)
		close(c->fd);
	/* The daemon released their models with the connection. */
	while (c->models != NULL) {
		agxq_model *m = c->models;

		c->models = m->next;
		free(m->load_frame);
		free(m);
	}
	/* Results still alive keep the pool's mappings until freed. */
	shmpool_unref(c->pool);
	if (c->ring != NULL) {
		munmap(c->ring->base, c->ring->size);
		free(c->ring->kick);
		free(c->ring);
	}
	pthread_mutex_destroy(&c->conn_mu);
	pthread_mutex_destroy(&c->info_mu);
	pthread_mutex_destroy(&c->grow_mu);
	pthread_mutex_destroy(&c->mu);
	pthread_mutex_destroy(&c->send_mu);
	free(c->buckets);
	free(c->backend);
	free(c->server_version);
	free(c->rb.data);
	free(c->path);
	free(c);
}

/* Returns the backend name the daemon reported at connect. */
const char *
agxq_server_backend(const agxq_client *c)
{
	return c == NULL ? NULL : c->backend;
}

/* Loads graph g into the daemon. */
int
agxq_model_load(agxq_client *c, const agxq_graph *g, const char *name,
    agxq_model **out)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *reply = NULL;
	Agxq__LoadModel lm = AGXQ__LOAD_MODEL__INIT;
	Agxq__Graph *pg = NULL;
	agxq_model *m;
	uint8_t *frame;
	size_t len;
	unsigned gen;
	int rc;

	if (c == NULL || g == NULL || out == NULL)
		return AGXQ_EINVAL;
	*out = NULL;
	if (client_on_reader(c))
		return AGXQ_EINVAL;
	if ((rc = client_ready(c, &gen)) != 0)
		return rc;
	if ((m = calloc(1, sizeof *m)) == NULL)
		return AGXQ_ENOMEM;
	atomic_init(&m->model_id, 0);
	if ((rc = builder_to_proto(g, &pg)) != 0)
		goto fail_free_model;
	lm.request_id = atomic_fetch_add(&c->next_id, 1);
	lm.graph = pg;
	lm.name = (char *)(name != NULL ? name : "");
	env.body_case = AGXQ__ENVELOPE__BODY_LOAD_MODEL;
	env.load_model = &lm;
	rc = client_encode(c, &env, &frame, &len);
	builder_proto_free(pg);
	if (rc != 0)
		goto fail_free_model;
	/* Kept to load the model again after a reconnect. */
	if (c->reconnect) {
		if ((m->load_frame = malloc(len)) == NULL) {
			free(frame);
			rc = AGXQ_ENOMEM;
			goto fail_free_model;
		}
		memcpy(m->load_frame, frame, len);
		m->load_len = len;
	}
	if ((rc = client_call_frame(c, gen, frame, len, lm.request_id,
	    AGXQ__ENVELOPE__BODY_LOAD_MODEL_REPLY, &reply, -1)) != 0)
		goto fail_free_model;
	m->client = c;
	atomic_store(&m->model_id, reply->load_model_reply->model_id);
	codec_envelope_free(reply);
	pthread_mutex_lock(&c->mu);
	if (atomic_load(&c->gen) != gen) {
		/* Reconnected since: the id is the old daemon's. */
		pthread_mutex_unlock(&c->mu);
		rc = AGXQ_EDISCONNECTED;
		goto fail_free_model;
	}
	m->next = c->models;
	if (c->models != NULL)
		c->models->prev = m;
	c->models = m;
	pthread_mutex_unlock(&c->mu);
	*out = m;
	return 0;

fail_free_model:
	free(m->load_frame);
	free(m);
	return rc;
}

/* Unloads a model and frees its handle. */
int
agxq_model_unload(agxq_model *m)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *reply = NULL;
	Agxq__UnloadModel um = AGXQ__UNLOAD_MODEL__INIT;
	unsigned gen;
	int rc;

	if (m == NULL)
		return 0;
	/* Not connected: the daemon holds nothing of it to unload. */
	if ((rc = client_ready(m->client, &gen)) == 0) {
		um.request_id = atomic_fetch_add(&m->client->next_id, 1);
		um.model_id = atomic_load(&m->model_id);
		env.body_case = AGXQ__ENVELOPE__BODY_UNLOAD_MODEL;
		env.unload_model = &um;
		rc = client_call(m->client, gen, &env, um.request_id,
		    AGXQ__ENVELOPE__BODY_UNLOAD_MODEL_REPLY, &reply);
		codec_envelope_free(reply);
	}
	pthread_mutex_lock(&m->client->mu);
	if (m->prev != NULL)
		m->prev->next = m->next;
	else
		m->client->models = m->next;
	if (m->next != NULL)
		m->next->prev = m->prev;
	pthread_mutex_unlock(&m->client->mu);
	free(m->load_frame);
	free(m);
	return rc;
}

/*
 * An Infer as protobuf-c structs over the caller's buffers (no copies),
 * ready to pack or to write raw. Up to 8 tensors live inside it.
 */
struct client_infer_msg {
	Agxq__Infer inf;
	Agxq__ShmRef inref[CLIENT_SHM_MAX_IN], outref[CLIENT_SHM_MAX_OUT];
	Agxq__ShmRef *outrefp[CLIENT_SHM_MAX_OUT];
	Agxq__Tensor tstack[8], *tps_stack[8], *ts, **tps;
};

/* Frees what client_infer_build allocated. */
static void
client_infer_msg_free(struct client_infer_msg *q)
{
	if (q->ts != q->tstack)
		free(q->ts);
	if (q->tps != q->tps_stack)
		free(q->tps);
	q->ts = q->tstack;
	q->tps = q->tps_stack;
}

/*
 * Checks the inputs and builds an Infer for them in q (client_infer_msg_free
 * afterwards, either way). The tensors point at the caller's buffers, or
 * are named in h's shared memory slice when h is not NULL.
 */
static int
client_infer_build(agxq_model *m, const agxq_tensor *inputs, int ninputs,
    const agxq_infer_opts *opts, uint64_t id, const struct client_hold *h,
    struct client_infer_msg *q)
{
	Agxq__Tensor *ts;

	q->ts = q->tstack;
	q->tps = q->tps_stack;
	if (m == NULL || m->client == NULL || inputs == NULL || ninputs < 1 ||
	    ninputs > CLIENT_MAX_INPUTS)
		return AGXQ_EINVAL;
	if (ninputs > 8) {
		q->ts = calloc((size_t)ninputs, sizeof *q->ts);
		q->tps = calloc((size_t)ninputs, sizeof *q->tps);
		if (q->ts == NULL || q->tps == NULL)
			return AGXQ_ENOMEM;
	}
	ts = q->ts;
	for (int i = 0; i < ninputs; i++) {
		const agxq_tensor *t = &inputs[i];
		uint64_t n = 1;

		if (t->dtype != AGXQ_FLOAT32 || t->ndim < 1 ||
		    t->ndim > AGXQ_MAX_DIMS || t->data == NULL)
			return AGXQ_EINVAL;
		for (int d = 0; d < t->ndim; d++) {
			if (t->shape[d] <= 0 || t->shape[d] > (1LL << 32))
				return AGXQ_EINVAL;
			n *= (uint64_t)t->shape[d];
			if (n > ((uint64_t)UINT32_MAX >> 2))
				return AGXQ_EINVAL;
		}
		ts[i] = (Agxq__Tensor)AGXQ__TENSOR__INIT;
		ts[i].dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
		ts[i].n_shape = (size_t)t->ndim;
		ts[i].shape = (int64_t *)t->shape;
		ts[i].data.len = (size_t)n * sizeof(float);
		ts[i].data.data = t->data;
		q->tps[i] = &ts[i];
		if (h != NULL && i < h->nin) {
			agxq__shm_ref__init(&q->inref[i]);
			q->inref[i].region_id = h->slice.region_id;
			q->inref[i].offset = h->slice.offset + h->in_off[i];
			q->inref[i].length = h->in_len[i];
			ts[i].shm = &q->inref[i];
			ts[i].data.len = 0;
			ts[i].data.data = NULL;
		}
	}
	agxq__infer__init(&q->inf);
	for (int j = 0; h != NULL && j < h->nout; j++) {
		agxq__shm_ref__init(&q->outref[j]);
		q->outref[j].region_id = h->slice.region_id;
		q->outref[j].offset = h->slice.offset + h->out_off[j];
		q->outref[j].length = h->out_len[j];
		q->outrefp[j] = &q->outref[j];
	}
	if (h != NULL && h->nout > 0) {
		q->inf.n_output_refs = (size_t)h->nout;
		q->inf.output_refs = q->outrefp;
	}
	q->inf.request_id = id;
	q->inf.model_id = atomic_load(&m->model_id);
	q->inf.n_inputs = (size_t)ninputs;
	q->inf.inputs = q->tps;
	if (opts != NULL) {
		q->inf.timeout_us = opts->timeout_us;
		q->inf.priority = opts->priority;
	}
	return 0;
}

/* Packs q's Infer into one frame (*frame, *len; caller frees). */
static int
client_infer_pack(agxq_client *c, struct client_infer_msg *q,
    uint8_t **frame, size_t *len)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;

	env.body_case = AGXQ__ENVELOPE__BODY_INFER;
	env.infer = &q->inf;
	return client_encode(c, &env, frame, len);
}

/*
 * Checks the inputs and encodes an Infer for them into one frame (*frame,
 * *len; caller frees): client_infer_build, then client_infer_pack.
 */
static int
client_infer_encode(agxq_model *m, const agxq_tensor *inputs, int ninputs,
    const agxq_infer_opts *opts, uint64_t id, const struct client_hold *h,
    uint8_t **frame, size_t *len)
{
	struct client_infer_msg q;
	int rc;

	if ((rc = client_infer_build(m, inputs, ninputs, opts, id, h, &q)) == 0)
		rc = client_infer_pack(m->client, &q, frame, len);
	client_infer_msg_free(&q);
	return rc;
}

/*
 * Makes and attaches the request ring for connection gen, once; any
 * failure turns the ring off for the client (requests use the socket).
 */
static void
client_ring_attach(agxq_client *c, unsigned gen)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *reply = NULL;
	Agxq__AttachRing ar = AGXQ__ATTACH_RING__INIT;
	Agxq__RingKick kick = AGXQ__RING_KICK__INIT;
	struct client_ring *rg;
	struct ring_header *h;
	uint8_t *frame;
	size_t flen, slot_size;
	int fd = -1, rc;

	pthread_mutex_lock(&c->grow_mu);
	if (atomic_load(&c->ring_ready) || atomic_load(&c->ring_off))
		goto out;
	if ((rg = calloc(1, sizeof *rg)) == NULL)
		goto fail;
	/* Room for an inline request or reply up to the shm threshold. */
	slot_size = c->shm_threshold + (64u << 10);
	slot_size = (slot_size + 4095) & ~(size_t)4095;
	if (slot_size > RING_MAX_SLOT_SIZE)
		slot_size = RING_MAX_SLOT_SIZE;
	rg->slots = CLIENT_RING_SLOTS;
	rg->slot_size = (uint32_t)slot_size;
	rg->gen = gen;
	rg->size = (size_t)ring_area_size(rg->slots, rg->slot_size);
	atomic_init(&rg->free_mask, (CLIENT_RING_SLOTS == 64 ? ~(uint64_t)0 :
	    ((uint64_t)1 << CLIENT_RING_SLOTS) - 1));
	atomic_init(&rg->next, 0);
	env.body_case = AGXQ__ENVELOPE__BODY_RING_KICK;
	env.ring_kick = &kick;
	if (client_encode(c, &env, &rg->kick, &rg->kick_len) != 0)
		goto fail_free;
	if (shmpool_create("agxq-ring", rg->size, &fd, &rg->base) != 0)
		goto fail_free;
	h = rg->base;
	h->magic = RING_MAGIC;
	h->version = RING_VERSION;
	h->slots = rg->slots;
	h->slot_size = rg->slot_size;
	ar.request_id = atomic_fetch_add(&c->next_id, 1);
	ar.slots = rg->slots;
	ar.slot_size = rg->slot_size;
	env.body_case = AGXQ__ENVELOPE__BODY_ATTACH_RING;
	env.attach_ring = &ar;
	if ((rc = client_encode(c, &env, &frame, &flen)) == 0)
		rc = client_call_frame(c, gen, frame, flen, ar.request_id,
		    AGXQ__ENVELOPE__BODY_ATTACH_RING_REPLY, &reply, fd);
	codec_envelope_free(reply);
	close(fd);
	if (rc != 0)
		goto fail_unmap;
	c->ring = rg;
	atomic_store(&c->ring_ready, 1);
	goto out;

fail_unmap:
	munmap(rg->base, rg->size);
fail_free:
	free(rg->kick);
	free(rg);
fail:
	atomic_store(&c->ring_off, 1);
out:
	pthread_mutex_unlock(&c->grow_mu);
}

/* Whether requests on connection gen may use the ring; attaches it first. */
static int
client_ring_ready(agxq_client *c, unsigned gen)
{
	if (atomic_load(&c->ring_off))
		return 0;
	if (!atomic_load(&c->ring_ready))
		client_ring_attach(c, gen);
	return atomic_load(&c->ring_ready) && c->ring->gen == gen;
}

/* Monotonic clock in nanoseconds (agxqd's clock too). */
static uint64_t
client_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Monotonic clock in microseconds. */
static int64_t
client_now_us(void)
{
	return (int64_t)(client_now_ns() / 1000);
}

/* Folds one sync round trip of us microseconds into m's running mean. */
static void
client_rtt_learn(agxq_model *m, int64_t us)
{
	int mean = atomic_load_explicit(&m->rtt_us, memory_order_relaxed);
	int64_t v = us > 1000000 ? 1000000 : us;

	/* Races between threads lose a sample, no more. */
	mean = mean == 0 ? (int)v + 1 : (int)((7 * (int64_t)mean + v) / 8) + 1;
	atomic_store_explicit(&m->rtt_us, mean, memory_order_relaxed);
}

/*
 * Takes a free slot of rg, the first at or after the one after the last
 * taken; -1 when every slot is in use. agxqd may answer a slot before its
 * loop has counted it free again (ring_answer), and a post to the slot
 * just answered would wait for that; going round, the next post goes to a
 * slot it counts free.
 */
static int
client_ring_get(struct client_ring *rg)
{
	uint64_t m = atomic_load(&rg->free_mask), skip = 0, can, rot;
	unsigned start = atomic_load_explicit(&rg->next, memory_order_relaxed) %
	    rg->slots;
	int i;

	while ((can = m & ~skip) != 0) {
		/* Bit j of rot is bit (start + j) % 64 of can. */
		rot = start == 0 ? can : (can >> start) | (can << (64 - start));
		i = (int)((start + (unsigned)__builtin_ctzll(rot)) % 64);

		/* Answered early, still agxqd's (proto/ringfmt.h): skip it. */
		if (RING_PHASE(__atomic_load_n(&ring_slot_at(rg->base,
		    rg->slot_size, (uint32_t)i)->state, __ATOMIC_ACQUIRE)) ==
		    RING_POSTED) {
			skip |= (uint64_t)1 << i;
			continue;
		}
		if (atomic_compare_exchange_weak(&rg->free_mask, &m,
		    m & ~((uint64_t)1 << i))) {
			atomic_store_explicit(&rg->next, (unsigned)i + 1,
			    memory_order_relaxed);
			return i;
		}
	}
	return -1;
}

/* Gives slot i back. */
static void
client_ring_put(struct client_ring *rg, int i)
{
	atomic_fetch_or(&rg->free_mask, (uint64_t)1 << i);
}

/*
 * A raw InferReply of plen bytes at payload, in the slot: copied out (the
 * slot is posted to again) and made into *res, which owns the copy.
 */
static int
client_ring_reply_raw(const uint8_t *payload, uint32_t plen,
    agxq_result **res)
{
	const Agxq__InferReply *rep;
	struct rawinfer_view v;
	char *cause = NULL;
	uint8_t *buf;
	int rc = AGXQ_EPROTO;

	if ((buf = malloc(plen > 0 ? plen : 1)) == NULL)
		return AGXQ_ENOMEM;
	memcpy(buf, payload, plen);
	if (rawinfer_reply_read(buf, plen, &v, &rep, &cause) == 0 &&
	    (rc = result_from_reply(rep, NULL, NULL, res)) == 0) {
		(*res)->release = free;
		(*res)->release_arg = buf;
		buf = NULL;
	}
	free(cause);
	rawinfer_view_free(&v);
	free(buf);
	return rc;
}

/*
 * Decodes the reply of len bytes agxqd left in slot s into *reply, or a
 * raw one into *res (an Error's code is returned, as for a reply from the
 * socket). Returns the status.
 */
static int
client_ring_reply(agxq_client *c, struct client_ring *rg,
    struct ring_slot *s, uint32_t len, Agxq__Envelope **reply,
    agxq_result **res)
{
	const uint8_t *data = ring_slot_data(s);
	uint32_t plen, flags;
	Agxq__Envelope *env;
	char *cause = NULL;
	int code, rc;

	if (len > rg->slot_size - RING_SLOT_HEADER ||
	    codec_ring_header_parse(data, len, &c->lim, &plen, &flags, &code,
	    &cause) != CODEC_OK || len != CODEC_HEADER_SIZE + plen) {
		free(cause);
		return AGXQ_EPROTO;
	}
	if (flags & CODEC_FLAG_RAW)
		return client_ring_reply_raw(data + CODEC_HEADER_SIZE, plen, res);
	if (codec_decode(data + CODEC_HEADER_SIZE, plen, flags, &c->lim, &env,
	    &code, &cause) != 0) {
		free(cause);
		return AGXQ_EPROTO;
	}
	if ((rc = client_reply_status(env, AGXQ__ENVELOPE__BODY_INFER_REPLY))
	    == 0)
		*reply = env;
	else
		codec_envelope_free(env);
	return rc;
}

/*
 * Waits for request p posted in slot s: polls the slot for up to
 * c->ring_spin_us, then flags it RING_WAITER and sleeps until the reader
 * hands over the reply, which agxqd then also sends on the socket (as it
 * does a reply too big for the slot). A reply answered early (answer_id
 * says p, proto/ringfmt.h) is taken at once, the slot left to agxqd. A
 * reply left only in the slot is taken out of the pending table here.
 * Returns the status, with *reply on success, or *res for a raw reply in
 * the slot.
 */
static int
client_ring_wait(agxq_client *c, struct client_ring *rg, struct ring_slot *s,
    struct client_pending *p, Agxq__Envelope **reply, agxq_result **res)
{
	struct timespec ts;
	int64_t end = 0, yield_at = 0, now;
	uint32_t st;
	int rc;

	for (;;) {
		st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
		/* DONE, or answered early: the reply is in the slot. */
		if ((st & RING_WAITER) == 0 && (RING_PHASE(st) == RING_DONE ||
		    __atomic_load_n(&s->answer_id, __ATOMIC_ACQUIRE) == p->id)) {
			pthread_mutex_lock(&c->mu);
			(void)client_pending_take(c, p->id);
			pthread_mutex_unlock(&c->mu);
			return client_ring_reply(c, rg, s, RING_PHASE(st) ==
			    RING_DONE ? __atomic_load_n(&s->len,
			    __ATOMIC_RELAXED) : __atomic_load_n(&s->answer_len,
			    __ATOMIC_RELAXED), reply, res);
		}
		/* The reply comes on the socket, or the reader failed p. */
		if (RING_PHASE(st) != RING_POSTED || (st & RING_WAITER) ||
		    __atomic_load_n(&p->done, __ATOMIC_ACQUIRE))
			break;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
		if (end == 0) {
			yield_at = now + CLIENT_RING_PAUSE_US;
			end = now + c->ring_spin_us;
		}
		if (now >= end) {
			/* Fails when agxqd answered meanwhile: look again. */
			(void)__atomic_compare_exchange_n(&s->state, &st,
			    st | RING_WAITER, 0, __ATOMIC_SEQ_CST,
			    __ATOMIC_SEQ_CST);
			continue;
		}
		/*
		 * Past the first microseconds, poll between yields: with more
		 * pollers than cores, agxqd's threads get the cores they need
		 * to answer (an idle core makes sched_yield return at once).
		 */
		if (now >= yield_at)
			sched_yield();
#if defined(__x86_64__) || defined(__i386__)
		else
			__builtin_ia32_pause();
#endif
	}
	pthread_mutex_lock(&c->mu);
	while (!p->done)
		pthread_cond_wait(&p->cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
	if ((rc = p->status) == 0)
		*reply = p->reply;
	else
		codec_envelope_free(p->reply);
	return rc;
}

/*
 * Runs request id through the ring of connection gen: inf written raw
 * when it is not NULL, else frame (not taken). Returns CLIENT_NO_RING,
 * having done nothing, when agxqd does not poll the ring now, no slot is
 * free or the frame does not fit one; else the status, with *reply or
 * (raw) *res on success.
 */
static int
client_ring_call(agxq_client *c, unsigned gen, const Agxq__Infer *inf,
    const uint8_t *frame, size_t len, uint64_t id, Agxq__Envelope **reply,
    agxq_result **res)
{
	struct client_ring *rg = c->ring;
	struct ring_header *h = rg->base;
	struct client_pending p;
	struct ring_slot *s;
	int slot, rc;

	if (len > rg->slot_size - RING_SLOT_HEADER ||
	    !__atomic_load_n(&h->awake, __ATOMIC_SEQ_CST) ||
	    (slot = client_ring_get(rg)) < 0)
		return CLIENT_NO_RING;
	memset(&p, 0, sizeof p);
	p.id = id;
	p.expect = AGXQ__ENVELOPE__BODY_INFER_REPLY;
	p.kind = CLIENT_SYNC;
	pthread_cond_init(&p.cv, NULL);
	if ((rc = client_pending_add(c, &p)) != 0)
		goto out;
	/*
	 * Connection gen was lost and replaced before p went in: nothing
	 * will answer it there (the reader of gen failed what it had).
	 */
	if (atomic_load(&c->gen) != gen) {
		(void)client_pending_cancel(c, &p);
		rc = atomic_load(&c->goaway_gen) == gen ? AGXQ_EAGAIN :
		    AGXQ_EDISCONNECTED;
		goto out;
	}
	s = ring_slot_at(rg->base, rg->slot_size, (uint32_t)slot);
	if (inf != NULL)
		rawinfer_infer_frame_write(inf, ring_slot_data(s));
	else
		memcpy(ring_slot_data(s), frame, len);
	__atomic_store_n(&s->len, (uint32_t)len, __ATOMIC_RELAXED);
	__atomic_store_n(&s->request_id, id, __ATOMIC_RELAXED);
	__atomic_store_n(&s->posted_ns, client_now_ns(), __ATOMIC_RELAXED);
	__atomic_store_n(&s->state, RING_POSTED, __ATOMIC_SEQ_CST);
	__atomic_fetch_add(&h->posted, 1, __ATOMIC_SEQ_CST);
	/* agxqd stopped polling meanwhile: tell it (see proto/ringfmt.h). */
	if (!__atomic_load_n(&h->awake, __ATOMIC_SEQ_CST))
		(void)client_send(c, gen, rg->kick, rg->kick_len, -1);
	rc = client_ring_wait(c, rg, s, &p, reply, res);
out:
	pthread_cond_destroy(&p.cv);
	client_ring_put(rg, slot);
	return rc;
}

/* Runs one request and waits for it, once. */
static int
client_infer_once(agxq_model *m, const agxq_tensor *inputs, int ninputs,
    const agxq_infer_opts *opts, agxq_result **out)
{
	Agxq__Envelope *reply = NULL;
	struct client_infer_msg q;
	struct client_hold *h;
	agxq_result *res = NULL;
	agxq_client *c;
	uint8_t *frame = NULL;
	uint64_t id;
	int64_t t0;
	size_t len;
	unsigned gen;
	int rc;

	if (m == NULL || m->client == NULL || out == NULL)
		return AGXQ_EINVAL;
	*out = NULL;
	c = m->client;
	if (client_on_reader(c))
		return AGXQ_EINVAL;
	if ((rc = client_ready(c, &gen)) != 0)
		return rc;
	id = atomic_fetch_add(&c->next_id, 1);
	client_shm_prepare(m, gen, inputs, ninputs, &h);
	if ((rc = client_infer_build(m, inputs, ninputs, opts, id, h, &q)) != 0)
		goto fail_free;
	/*
	 * The ring only for a model whose round trips have been shorter than
	 * the polling: a caller that would sleep anyway does better on the
	 * socket (on an H200, transformer through the ring with its replies
	 * on the socket ran 8% slower than all on the socket). There, the
	 * Infer goes raw when agxqd reads raw frames and its inputs are all
	 * inline.
	 */
	rc = CLIENT_NO_RING;
	t0 = client_now_us();
	if (atomic_load_explicit(&m->rtt_us, memory_order_relaxed) <
	    c->ring_spin_us && client_ring_ready(c, gen)) {
		if (atomic_load_explicit(&c->ring_raw, memory_order_relaxed) &&
		    (len = rawinfer_infer_frame_size(&q.inf)) != 0)
			rc = client_ring_call(c, gen, &q.inf, NULL, len, id,
			    &reply, &res);
		else if ((rc = client_infer_pack(c, &q, &frame, &len)) == 0)
			rc = client_ring_call(c, gen, NULL, frame, len, id,
			    &reply, &res);
	}
	if (rc == CLIENT_NO_RING) {
		if (frame == NULL &&
		    (rc = client_infer_pack(c, &q, &frame, &len)) != 0)
			goto fail_free;
		rc = client_call_frame(c, gen, frame, len, id,
		    AGXQ__ENVELOPE__BODY_INFER_REPLY, &reply, -1);
		frame = NULL;
	}
	if (rc != 0)
		goto fail_free;
	free(frame);
	client_infer_msg_free(&q);
	client_rtt_learn(m, client_now_us() - t0);
	if (res != NULL) {
		client_hold_release(h);
		*out = res;
		return 0;
	}
	if (h != NULL)
		return client_hold_result(h, reply, out);
	return result_from_envelope(reply, out);

fail_free:
	free(frame);
	client_infer_msg_free(&q);
	client_hold_release(h);
	return rc;
}

/*
 * Runs one request and waits for it. A request the daemon did not run
 * because it was resetting its device (AGXQ_EAGAIN) is sent again, on the
 * new connection once there is one, until c->retry_ms have passed (and
 * never past the request's own timeout).
 */
int
agxq_infer(agxq_model *m, const agxq_tensor *inputs, int ninputs,
    const agxq_infer_opts *opts, agxq_result **out)
{
	int64_t end = 0, budget;
	int rc, pause_ms = 1;

	for (;;) {
		rc = client_infer_once(m, inputs, ninputs, opts, out);
		/* After AGXQ_EAGAIN, the new daemon may not be back yet. */
		if (rc != AGXQ_EAGAIN && (rc != AGXQ_EDISCONNECTED || end == 0))
			return rc;
		if (!m->client->reconnect || m->client->retry_ms == 0)
			return rc;
		if (end == 0) {
			budget = m->client->retry_ms;
			if (opts != NULL && opts->timeout_us != 0 &&
			    (int64_t)(opts->timeout_us / 1000) < budget)
				budget = (int64_t)(opts->timeout_us / 1000);
			end = client_now_ms() + budget;
		}
		if (client_now_ms() >= end)
			return AGXQ_EAGAIN;
		usleep((useconds_t)pause_ms * 1000);
		if ((pause_ms *= 2) > CLIENT_RETRY_PAUSE_MS)
			pause_ms = CLIENT_RETRY_PAUSE_MS;
	}
}

/* Sends one request; cb fires exactly once unless this fails. */
int
agxq_infer_async(agxq_model *m, const agxq_tensor *inputs, int ninputs,
    const agxq_infer_opts *opts, agxq_infer_cb cb, void *arg)
{
	struct client_pending *p;
	agxq_client *c;
	uint8_t *frame;
	size_t len;
	unsigned gen;
	int rc;

	if (m == NULL || m->client == NULL || cb == NULL)
		return AGXQ_EINVAL;
	c = m->client;
	if ((rc = client_ready(c, &gen)) != 0)
		return rc;
	if ((p = calloc(1, sizeof *p)) == NULL)
		return AGXQ_ENOMEM;
	p->id = atomic_fetch_add(&c->next_id, 1);
	p->expect = AGXQ__ENVELOPE__BODY_INFER_REPLY;
	p->kind = CLIENT_ASYNC;
	p->cb = cb;
	p->arg = arg;
	client_shm_prepare(m, gen, inputs, ninputs, &p->hold);
	if ((rc = client_infer_encode(m, inputs, ninputs, opts, p->id,
	    p->hold, &frame, &len)) != 0)
		goto fail_free_pending;
	if ((rc = client_pending_add(c, p)) != 0) {
		free(frame);
		goto fail_free_pending;
	}
	rc = client_send(c, gen, frame, len, -1);
	free(frame);
	/*
	 * If the send failed but the reader already took p (it saw the
	 * connection drop), the callback has fired or will: report success
	 * so that it fires exactly once. A broken write leaves p to the
	 * reader, which completes it at the end of the stream.
	 */
	if (rc != 0 && rc != CLIENT_BROKEN && client_pending_cancel(c, p))
		goto fail_free_pending;
	return 0;

fail_free_pending:
	client_hold_release(p->hold);
	free(p);
	return rc;
}

/* Fetches the daemon's statistics as JSON. */
int
agxq_stats_json(agxq_client *c, char **json)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *reply = NULL;
	Agxq__StatsRequest sr = AGXQ__STATS_REQUEST__INIT;
	unsigned gen;
	int rc;

	if (c == NULL || json == NULL)
		return AGXQ_EINVAL;
	*json = NULL;
	if (client_on_reader(c))
		return AGXQ_EINVAL;
	if ((rc = client_ready(c, &gen)) != 0)
		return rc;
	sr.request_id = atomic_fetch_add(&c->next_id, 1);
	env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
	env.stats_request = &sr;
	if ((rc = client_call(c, gen, &env, sr.request_id,
	    AGXQ__ENVELOPE__BODY_STATS, &reply)) != 0)
		return rc;
	*json = stats_json_render(reply->stats);
	codec_envelope_free(reply);
	return *json != NULL ? 0 : AGXQ_ENOMEM;
}
