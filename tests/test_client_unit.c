/*
 * test_client_unit: libagxq's connection code against a fake server thread
 * in this process (a Unix socket in a private temporary directory; the fake
 * decodes with the codec and answers as each case asks). Covers the
 * handshake, out-of-order replies, disconnects with requests in flight,
 * argument checks and error replies.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agxq.h"
#include "codec.h"
#include "testlib.h"

enum fake_mode {
	FAKE_ECHO,          /* every infer: output = 2 * input 0, at once */
	FAKE_HOLD,          /* hold `hold` infers, answer them in reverse */
	FAKE_DROP,          /* read `hold` infers, then hang up */
	FAKE_ERROR,         /* every infer: Error ERR_SHAPE */
	FAKE_VERSION_ERROR, /* handshake: Error ERR_VERSION */
	FAKE_VERSION_BAD,   /* handshake: HelloReply with version 99 */
	FAKE_SILENT         /* handshake: never answer */
};

struct fake {
	char dir[64];
	char path[128];
	int lfd;
	int cfd;
	pthread_t thread;
	enum fake_mode mode;
	int hold;
	atomic_int infers;     /* Infer frames read */
	atomic_int zstd_in;    /* frames read with the zstd flag */
	atomic_int loads;
	int hello_version;
};

/* Reads exactly n bytes; -1 on EOF or error. */
static int
read_full(int fd, void *buf, size_t n)
{
	uint8_t *p = buf;
	ssize_t r;

	while (n > 0) {
		r = read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Writes exactly n bytes; -1 on error. */
static int
write_full(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	ssize_t r;

	while (n > 0) {
		r = send(fd, p, n, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Reads and decodes one frame; NULL on EOF or a bad frame. */
static Agxq__Envelope *
fake_read(struct fake *f)
{
	struct codec_limits lim;
	uint8_t hdr[CODEC_HEADER_SIZE], *payload;
	Agxq__Envelope *env = NULL;
	uint32_t plen, flags;
	int code;
	char *cause = NULL;

	codec_limits_default(&lim);
	if (read_full(f->cfd, hdr, sizeof hdr) != 0)
		return NULL;
	if (codec_header_parse(hdr, sizeof hdr, &lim, &plen, &flags, &code,
	    &cause) != CODEC_OK) {
		free(cause);
		return NULL;
	}
	if (flags & CODEC_FLAG_ZSTD)
		atomic_fetch_add(&f->zstd_in, 1);
	if ((payload = malloc(plen)) == NULL)
		abort();
	if (read_full(f->cfd, payload, plen) == 0 &&
	    codec_decode(payload, plen, flags, &lim, &env, &code, &cause) != 0)
		env = NULL;
	free(cause);
	free(payload);
	return env;
}

/* Encodes and sends env. */
static int
fake_send(struct fake *f, const Agxq__Envelope *env)
{
	struct codec_limits lim;
	uint8_t *frame;
	size_t len;
	int rc;

	codec_limits_default(&lim);
	if (codec_encode(env, CODEC_DEFAULT_COMPRESS_THRESHOLD, &lim, &frame,
	    &len, NULL) != 0)
		abort();
	rc = write_full(f->cfd, frame, len);
	free(frame);
	return rc;
}

/* Sends Error{id, code, msg}. */
static int
fake_send_error(struct fake *f, uint64_t id, int code, const char *msg)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__Error e = AGXQ__ERROR__INIT;

	e.request_id = id;
	e.code = code;
	e.message = (char *)msg;
	env.body_case = AGXQ__ENVELOPE__BODY_ERROR;
	env.error = &e;
	return fake_send(f, &env);
}

/* Answers an Infer with output = 2 * input 0. */
static int
fake_reply_infer(struct fake *f, const Agxq__Infer *inf)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__InferReply rep = AGXQ__INFER_REPLY__INIT;
	Agxq__Tensor t = AGXQ__TENSOR__INIT, *tp = &t;
	const Agxq__Tensor *in;
	float *out;
	size_t n;
	int rc;

	if (inf->n_inputs < 1)
		return fake_send_error(f, inf->request_id,
		    AGXQ__ERROR_CODE__ERR_INVAL, "no inputs");
	in = inf->inputs[0];
	n = in->data.len / sizeof(float);
	if ((out = malloc(in->data.len + 1)) == NULL)
		abort();
	for (size_t i = 0; i < n; i++) {
		float v;

		memcpy(&v, in->data.data + i * sizeof v, sizeof v);
		out[i] = 2.0f * v;
	}
	t.dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	t.n_shape = in->n_shape;
	t.shape = in->shape;
	t.data.len = in->data.len;
	t.data.data = (uint8_t *)out;
	rep.request_id = inf->request_id;
	rep.n_outputs = 1;
	rep.outputs = &tp;
	rep.queue_us = 5;
	rep.exec_us = 7;
	rep.batch_rows = (uint32_t)inf->model_id;
	env.body_case = AGXQ__ENVELOPE__BODY_INFER_REPLY;
	env.infer_reply = &rep;
	rc = fake_send(f, &env);
	free(out);
	return rc;
}

/* Answers the handshake as the mode says; -1 ends the connection. */
static int
fake_handshake(struct fake *f)
{
	Agxq__Envelope *env, rep = AGXQ__ENVELOPE__INIT;
	Agxq__HelloReply hr = AGXQ__HELLO_REPLY__INIT;
	char buf[1];

	if ((env = fake_read(f)) == NULL)
		return -1;
	if (env->body_case != AGXQ__ENVELOPE__BODY_HELLO) {
		codec_envelope_free(env);
		return -1;
	}
	f->hello_version = (int)env->hello->protocol_version;
	codec_envelope_free(env);
	switch (f->mode) {
	case FAKE_SILENT:
		/* Wait for the client to give up. */
		while (read(f->cfd, buf, 1) > 0)
			;
		return -1;
	case FAKE_VERSION_ERROR:
		fake_send_error(f, 0, AGXQ__ERROR_CODE__ERR_VERSION,
		    "protocol version 1 not supported");
		return -1;
	default:
		break;
	}
	hr.protocol_version = f->mode == FAKE_VERSION_BAD ? 99 :
	    CODEC_PROTOCOL_VERSION;
	hr.server_version = "fake-0";
	hr.backend = "fake";
	hr.max_frame = 64u << 20;
	hr.max_batch = 8;
	hr.pid = getpid();
	rep.body_case = AGXQ__ENVELOPE__BODY_HELLO_REPLY;
	rep.hello_reply = &hr;
	if (fake_send(f, &rep) != 0 || f->mode == FAKE_VERSION_BAD)
		return -1;
	return 0;
}

/* Answers one non-infer request. */
static int
fake_reply_other(struct fake *f, const Agxq__Envelope *env)
{
	Agxq__Envelope rep = AGXQ__ENVELOPE__INIT;
	Agxq__LoadModelReply lr = AGXQ__LOAD_MODEL_REPLY__INIT;
	Agxq__UnloadModelReply ur = AGXQ__UNLOAD_MODEL_REPLY__INIT;
	Agxq__Stats st = AGXQ__STATS__INIT;
	Agxq__ModelStats ms = AGXQ__MODEL_STATS__INIT, *msp = &ms;

	switch (env->body_case) {
	case AGXQ__ENVELOPE__BODY_LOAD_MODEL:
		atomic_fetch_add(&f->loads, 1);
		if (env->load_model->graph == NULL ||
		    env->load_model->graph->n_inputs != 1)
			return fake_send_error(f, env->load_model->request_id,
			    AGXQ__ERROR_CODE__ERR_GRAPH, "bad graph");
		lr.request_id = env->load_model->request_id;
		lr.model_id = 42;
		rep.body_case = AGXQ__ENVELOPE__BODY_LOAD_MODEL_REPLY;
		rep.load_model_reply = &lr;
		break;
	case AGXQ__ENVELOPE__BODY_UNLOAD_MODEL:
		if (env->unload_model->model_id != 42)
			return fake_send_error(f, env->unload_model->request_id,
			    AGXQ__ERROR_CODE__ERR_NOMODEL, "no such model");
		ur.request_id = env->unload_model->request_id;
		rep.body_case = AGXQ__ENVELOPE__BODY_UNLOAD_MODEL_REPLY;
		rep.unload_model_reply = &ur;
		break;
	case AGXQ__ENVELOPE__BODY_STATS_REQUEST:
		ms.model_id = 42;
		ms.name = "tiny \"q\"";
		ms.requests = 12345;
		ms.queued = 3;
		st.request_id = env->stats_request->request_id;
		st.server_version = "fake-0";
		st.backend = "fake";
		st.pid = 77;
		st.frames_in = 9;
		st.bytes_out_raw = 1ULL << 40;
		st.max_batch = 8;
		st.n_models = 1;
		st.models = &msp;
		rep.body_case = AGXQ__ENVELOPE__BODY_STATS;
		rep.stats = &st;
		break;
	default:
		return fake_send_error(f, 0, AGXQ__ERROR_CODE__ERR_PROTO,
		    "unexpected message");
	}
	return fake_send(f, &rep);
}

/* The fake server: one connection, answered as f->mode says. */
static void *
fake_main(void *arg)
{
	struct fake *f = arg;
	Agxq__Envelope *env, **held;
	int nheld = 0, rc = 0;

	if ((held = calloc((size_t)f->hold + 1, sizeof *held)) == NULL)
		abort();
	if ((f->cfd = accept(f->lfd, NULL, NULL)) == -1)
		goto out;
	if (fake_handshake(f) != 0)
		goto out_close;
	while (rc == 0 && (env = fake_read(f)) != NULL) {
		if (env->body_case != AGXQ__ENVELOPE__BODY_INFER) {
			rc = fake_reply_other(f, env);
			codec_envelope_free(env);
			continue;
		}
		atomic_fetch_add(&f->infers, 1);
		switch (f->mode) {
		case FAKE_HOLD:
			held[nheld++] = env;
			if (nheld < f->hold)
				continue;
			while (nheld > 0 && rc == 0) {
				nheld--;
				rc = fake_reply_infer(f, held[nheld]->infer);
				codec_envelope_free(held[nheld]);
			}
			continue;
		case FAKE_DROP:
			codec_envelope_free(env);
			if (atomic_load(&f->infers) >= f->hold)
				goto out_close;
			continue;
		case FAKE_ERROR:
			rc = fake_send_error(f, env->infer->request_id,
			    AGXQ__ERROR_CODE__ERR_SHAPE, "input 0: bad shape");
			break;
		default:
			rc = fake_reply_infer(f, env->infer);
			break;
		}
		codec_envelope_free(env);
	}
out_close:
	close(f->cfd);
out:
	while (nheld > 0)
		codec_envelope_free(held[--nheld]);
	free(held);
	return NULL;
}

/* Starts a fake server on a fresh socket in a private directory. */
static struct fake *
fake_start(enum fake_mode mode, int hold)
{
	struct sockaddr_un sun;
	struct fake *f;

	if ((f = calloc(1, sizeof *f)) == NULL)
		abort();
	f->mode = mode;
	f->hold = hold;
	snprintf(f->dir, sizeof f->dir, "/tmp/agxq-client-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		abort();
	snprintf(f->path, sizeof f->path, "%s/sock", f->dir);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, f->path);
	if ((f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    bind(f->lfd, (struct sockaddr *)&sun, sizeof sun) != 0 ||
	    listen(f->lfd, 4) != 0)
		abort();
	if (pthread_create(&f->thread, NULL, fake_main, f) != 0)
		abort();
	return f;
}

/* Waits for the fake server to finish and removes its socket. */
static void
fake_stop(struct fake *f)
{
	if (f == NULL)
		return;
	pthread_join(f->thread, NULL);
	close(f->lfd);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
}

/* Loads a tiny model (input [4] -> relu) through c. */
static int
load_tiny(agxq_client *c, agxq_model **m)
{
	int64_t shape[1] = { 4 };
	agxq_graph *g;
	int x, rc;

	if ((g = agxq_graph_new()) == NULL)
		return AGXQ_ENOMEM;
	x = agxq_graph_input(g, shape, 1);
	agxq_graph_output(g, agxq_graph_relu(g, x));
	rc = agxq_model_load(c, g, "tiny", m);
	agxq_graph_free(g);
	return rc;
}

/* Fills a [rows, 4] tensor with base + i. */
static void
make_input(agxq_tensor *t, float *buf, int rows, float base)
{
	memset(t, 0, sizeof *t);
	t->dtype = AGXQ_FLOAT32;
	t->ndim = 2;
	t->shape[0] = rows;
	t->shape[1] = 4;
	t->data = buf;
	for (int i = 0; i < rows * 4; i++)
		buf[i] = base + (float)i;
}

/* Whether r holds 2 * (base + i) for a [rows, 4] input. */
static int
result_ok(const agxq_result *r, int rows, float base)
{
	const agxq_tensor *o;
	const float *d;

	if (r == NULL || agxq_result_noutputs(r) != 1 ||
	    (o = agxq_result_output(r, 0)) == NULL)
		return 0;
	if (o->ndim != 2 || o->shape[0] != rows || o->shape[1] != 4)
		return 0;
	d = o->data;
	for (int i = 0; i < rows * 4; i++) {
		if (d[i] != 2.0f * (base + (float)i))
			return 0;
	}
	return 1;
}

/* Completion bookkeeping for async requests. */
struct done_set {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int total;
	int wrong;
	int counts[256];
	int status[256];
};

struct done_arg {
	struct done_set *set;
	int slot;
	float base;
	agxq_model *m;
};

/* Async callback: records status and checks the result. */
static void
done_cb(void *arg, int status, agxq_result *r)
{
	struct done_arg *a = arg;
	struct done_set *s = a->set;
	int good = status == 0 ? result_ok(r, 1, a->base) : r == NULL;

	pthread_mutex_lock(&s->mu);
	s->counts[a->slot]++;
	s->status[a->slot] = status;
	if (!good)
		s->wrong++;
	s->total++;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* Waits up to 10 s for n completions; returns whether they came. */
static int
done_wait(struct done_set *s, int n)
{
	struct timespec ts;
	int ok;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	pthread_mutex_lock(&s->mu);
	while (s->total < n) {
		if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) != 0)
			break;
	}
	ok = s->total >= n;
	pthread_mutex_unlock(&s->mu);
	return ok;
}

static void
done_init(struct done_set *s)
{
	memset(s, 0, sizeof *s);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
}

static void
done_destroy(struct done_set *s)
{
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
}

static int
t_handshake_ok(void)
{
	struct fake *f = fake_start(FAKE_ECHO, 0);
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_result *r = NULL;
	agxq_tensor t;
	float buf[8];
	char *json = NULL;
	uint64_t q, e;
	uint32_t rows;
	int rc = -1;

	setenv("AGXQ_SOCKET", f->path, 1);
	CHECK(agxq_connect(NULL, &c) == 0);
	unsetenv("AGXQ_SOCKET");
	CHECK(f->hello_version == CODEC_PROTOCOL_VERSION);
	CHECK(strcmp(agxq_server_backend(c), "fake") == 0);
	CHECK(load_tiny(c, &m) == 0);
	make_input(&t, buf, 2, 1.5f);
	CHECK(agxq_infer(m, &t, 1, NULL, &r) == 0);
	CHECK(result_ok(r, 2, 1.5f));
	agxq_result_info(r, &q, &e, &rows);
	CHECK(q == 5 && e == 7 && rows == 42);
	CHECK(agxq_stats_json(c, &json) == 0);
	CHECK(strstr(json, "\"backend\": \"fake\"") != NULL);
	CHECK(strstr(json, "\"name\": \"tiny \\\"q\\\"\"") != NULL);
	CHECK(strstr(json, "\"requests\": 12345") != NULL);
	CHECK(strstr(json, "\"bytes_out_raw\": 1099511627776") != NULL);
	CHECK(strstr(json, "\"models\": [{") != NULL);
	rc = agxq_model_unload(m);
	m = NULL;
	CHECK(rc == 0);
out:
	if (testlib_failed)
		rc = -1;
	free(json);
	agxq_result_free(r);
	agxq_model_unload(m);
	agxq_close(c);
	fake_stop(f);
	return rc;
}

/*
 * agxq_connect(path) with stderr sent to a temporary file, whose text ends
 * in out. Returns agxq_connect's code, or -1 when stderr could not be
 * redirected.
 */
static int
connect_quoting_stderr(const char *path, agxq_client **c, char *out,
    size_t outlen)
{
	FILE *tmp = tmpfile();
	int saved = dup(2), rc;
	size_t n;

	out[0] = '\0';
	if (tmp == NULL || saved < 0 || (fflush(stderr), dup2(fileno(tmp),
	    2)) < 0) {
		if (tmp != NULL)
			fclose(tmp);
		if (saved >= 0)
			close(saved);
		return -1;
	}
	rc = agxq_connect(path, c);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	n = fread(out, 1, outlen - 1, tmp);
	out[n] = '\0';
	fclose(tmp);
	return rc;
}

/*
 * Settings in the environment the library cannot use are reported on
 * stderr, once per process, naming each, and the client works with the
 * defaults: a spin time that is no number, a retry time that is negative,
 * ring switches that are neither 0 nor 1. A valid one is not mentioned; a
 * second connect with the same settings reports nothing.
 */
static int
t_bad_settings(void)
{
	static const char *const vars[][2] = {
	    { "AGXQ_SPIN_US", "fast" }, { "AGXQ_RETRY_MS", "-5" },
	    { "AGXQ_RING", "yes" }, { "AGXQ_RING_RAW", "2" },
	    { "AGXQ_SHM_THRESHOLD", "4096" } };
	struct fake *f = fake_start(FAKE_ECHO, 0), *f2 = NULL;
	agxq_client *c = NULL, *c2 = NULL;
	agxq_model *m = NULL;
	agxq_result *r = NULL;
	agxq_tensor t;
	float buf[8];
	char err[4096];
	int rc = -1, rc1, rc2;

	for (size_t i = 0; i < TESTLIB_N(vars); i++)
		setenv(vars[i][0], vars[i][1], 1);
	rc1 = connect_quoting_stderr(f->path, &c, err, sizeof err);
	printf("%s", err);
	CHECK(rc1 == 0);
	CHECK(strstr(err, "agxq: AGXQ_SPIN_US=\"fast\" is not a whole number "
	    "from 0 to 100000: using the defaults\n") != NULL);
	CHECK(strstr(err, "agxq: AGXQ_RETRY_MS=\"-5\" is not a whole number "
	    "from 0 to 86400000: using 10000\n") != NULL);
	CHECK(strstr(err, "agxq: AGXQ_RING=\"yes\" is not one of 0, 1: "
	    "using 1\n") != NULL);
	CHECK(strstr(err, "agxq: AGXQ_RING_RAW=\"2\" is not one of 0, 1: "
	    "using 1\n") != NULL);
	CHECK(strstr(err, "AGXQ_SHM_THRESHOLD") == NULL);
	CHECK(load_tiny(c, &m) == 0);
	make_input(&t, buf, 2, 1.5f);
	CHECK(agxq_infer(m, &t, 1, NULL, &r) == 0);
	CHECK(result_ok(r, 2, 1.5f));
	/* The fake serves one connection: a second one for the second. */
	f2 = fake_start(FAKE_ECHO, 0);
	rc2 = connect_quoting_stderr(f2->path, &c2, err, sizeof err);
	CHECK(rc2 == 0);
	CHECK(err[0] == '\0');
	rc = 0;
out:
	for (size_t i = 0; i < TESTLIB_N(vars); i++)
		unsetenv(vars[i][0]);
	if (testlib_failed)
		rc = -1;
	agxq_result_free(r);
	agxq_model_unload(m);
	agxq_close(c2);
	agxq_close(c);
	if (f2 != NULL)
		fake_stop(f2);
	fake_stop(f);
	return rc;
}

static int
t_version_mismatch(void)
{
	struct fake *f = fake_start(FAKE_VERSION_ERROR, 0);
	agxq_client *c = NULL;
	int rc = -1;

	CHECK(agxq_connect(f->path, &c) == AGXQ_EVERSION);
	CHECK(c == NULL);
	fake_stop(f);
	f = fake_start(FAKE_VERSION_BAD, 0);
	CHECK(agxq_connect(f->path, &c) == AGXQ_EVERSION);
	CHECK(c == NULL);
	rc = 0;
out:
	agxq_close(c);
	fake_stop(f);
	return rc;
}

static int
t_handshake_timeout(void)
{
	struct fake *f = fake_start(FAKE_SILENT, 0);
	agxq_client *c = NULL;
	time_t t0 = time(NULL);
	int rc = -1;

	CHECK(agxq_connect(f->path, &c) == AGXQ_ETIMEDOUT);
	CHECK(time(NULL) - t0 <= 8);
	rc = 0;
out:
	agxq_close(c);
	fake_stop(f);
	return rc;
}

struct sync_arg {
	agxq_model *m;
	int thread;
	int iters;
	int bad;
};

/* Runs iters sync requests with distinct inputs. */
static void *
sync_worker(void *arg)
{
	struct sync_arg *a = arg;
	agxq_result *r;
	agxq_tensor t;
	float buf[12];

	for (int i = 0; i < a->iters; i++) {
		float base = (float)(a->thread * 1000 + i);

		make_input(&t, buf, 3, base);
		if (agxq_infer(a->m, &t, 1, NULL, &r) != 0) {
			a->bad++;
			continue;
		}
		if (!result_ok(r, 3, base))
			a->bad++;
		agxq_result_free(r);
	}
	return NULL;
}

static int
t_sync_out_of_order(void)
{
	struct fake *f = fake_start(FAKE_HOLD, 4);
	struct sync_arg args[4];
	pthread_t th[4];
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	int rc = -1;

	CHECK(agxq_connect(f->path, &c) == 0);
	CHECK(load_tiny(c, &m) == 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct sync_arg){ m, i, 50, 0 };
		pthread_create(&th[i], NULL, sync_worker, &args[i]);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 4; i++)
		CHECK(args[i].bad == 0);
	CHECK(atomic_load(&f->infers) == 200);
	rc = 0;
out:
	agxq_model_unload(m);
	agxq_close(c);
	fake_stop(f);
	return rc;
}

struct async_arg {
	agxq_model *m;
	struct done_arg *args; /* this thread's slots */
	int n;
	int bad;
};

/* Sends n async requests. */
static void *
async_worker(void *arg)
{
	struct async_arg *a = arg;
	agxq_tensor t;
	float buf[4];

	for (int i = 0; i < a->n; i++) {
		make_input(&t, buf, 1, a->args[i].base);
		if (agxq_infer_async(a->m, &t, 1, NULL, done_cb,
		    &a->args[i]) != 0)
			a->bad++;
		/* The input is copied: scribbling on it must not matter. */
		memset(buf, 0xff, sizeof buf);
	}
	return NULL;
}

/* Runs 4 threads x per async requests; fills set. */
static int
run_async(agxq_model *m, struct done_set *set, struct done_arg *dargs,
    int per)
{
	struct async_arg aa[4];
	pthread_t th[4];
	int bad = 0;

	for (int i = 0; i < 4 * per; i++)
		dargs[i] = (struct done_arg){ set, i, (float)(i * 10), m };
	for (int i = 0; i < 4; i++) {
		aa[i] = (struct async_arg){ m, &dargs[i * per], per, 0 };
		pthread_create(&th[i], NULL, async_worker, &aa[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		bad += aa[i].bad;
	}
	return bad;
}

static int
t_async_out_of_order(void)
{
	struct fake *f = fake_start(FAKE_HOLD, 64);
	struct done_set set;
	struct done_arg dargs[64];
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	int rc = -1;

	done_init(&set);
	CHECK(agxq_connect(f->path, &c) == 0);
	CHECK(load_tiny(c, &m) == 0);
	CHECK(run_async(m, &set, dargs, 16) == 0);
	CHECK(done_wait(&set, 64));
	CHECK(set.wrong == 0);
	for (int i = 0; i < 64; i++)
		CHECK(set.counts[i] == 1 && set.status[i] == 0);
	rc = 0;
out:
	agxq_model_unload(m);
	agxq_close(c);
	fake_stop(f);
	done_destroy(&set);
	return rc;
}

struct blocked_arg {
	agxq_model *m;
	int status;
};

/* One sync request that the fake never answers. */
static void *
blocked_worker(void *arg)
{
	struct blocked_arg *a = arg;
	agxq_result *r = NULL;
	agxq_tensor t;
	float buf[4];

	make_input(&t, buf, 1, 0.0f);
	a->status = agxq_infer(a->m, &t, 1, NULL, &r);
	agxq_result_free(r);
	return NULL;
}

static int
t_disconnect_inflight(void)
{
	struct fake *f = fake_start(FAKE_DROP, 33);
	struct done_set set;
	struct done_arg dargs[32], extra;
	struct blocked_arg ba;
	pthread_t bt;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_result *r = NULL;
	agxq_tensor t;
	float buf[4];
	int rc = -1, started = 0;

	done_init(&set);
	CHECK(agxq_connect(f->path, &c) == 0);
	CHECK(load_tiny(c, &m) == 0);
	ba.m = m;
	ba.status = 1;
	pthread_create(&bt, NULL, blocked_worker, &ba);
	started = 1;
	CHECK(run_async(m, &set, dargs, 8) == 0);
	CHECK(done_wait(&set, 32));
	pthread_join(bt, NULL);
	started = 0;
	CHECK(ba.status == AGXQ_EDISCONNECTED);
	usleep(100000);
	for (int i = 0; i < 32; i++)
		CHECK(set.counts[i] == 1 &&
		    set.status[i] == AGXQ_EDISCONNECTED);
	CHECK(set.wrong == 0);

	/* Later calls fail at once and never call back. */
	make_input(&t, buf, 1, 0.0f);
	extra = (struct done_arg){ &set, 40, 0.0f, m };
	CHECK(agxq_infer_async(m, &t, 1, NULL, done_cb, &extra) ==
	    AGXQ_EDISCONNECTED);
	CHECK(agxq_infer(m, &t, 1, NULL, &r) == AGXQ_EDISCONNECTED);
	CHECK(set.total == 32);
	rc = agxq_model_unload(m);
	m = NULL;
	CHECK(rc == AGXQ_EDISCONNECTED);
	rc = 0;
out:
	if (started)
		pthread_join(bt, NULL);
	agxq_model_unload(m);
	agxq_close(c);
	fake_stop(f);
	done_destroy(&set);
	return rc;
}

static int
t_bad_inputs(void)
{
	struct fake *f = fake_start(FAKE_ECHO, 0);
	struct done_set set;
	struct done_arg da;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_result *r = NULL;
	agxq_model *m2 = NULL;
	agxq_tensor t, good;
	float buf[4], gbuf[4];
	int rc = -1;

	done_init(&set);
	da = (struct done_arg){ &set, 0, 0.0f, NULL };
	CHECK(agxq_connect(f->path, &c) == 0);
	CHECK(load_tiny(c, &m) == 0);
	make_input(&good, gbuf, 1, 0.0f);

#define BAD(setup) do {							\
	make_input(&t, buf, 1, 0.0f);					\
	setup;								\
	CHECK(agxq_infer_async(m, &t, 1, NULL, done_cb, &da) ==		\
	    AGXQ_EINVAL);						\
	CHECK(agxq_infer(m, &t, 1, NULL, &r) == AGXQ_EINVAL);		\
	CHECK(r == NULL);						\
} while (0)
	BAD(t.data = NULL);
	BAD(t.dtype = 0);
	BAD(t.ndim = 0);
	BAD(t.ndim = 7);
	BAD(t.shape[1] = 0);
	BAD(t.shape[0] = -4);
#undef BAD
	CHECK(agxq_infer_async(m, &good, 0, NULL, done_cb, &da) ==
	    AGXQ_EINVAL);
	CHECK(agxq_infer_async(m, NULL, 1, NULL, done_cb, &da) ==
	    AGXQ_EINVAL);
	CHECK(agxq_infer_async(m, &good, 1, NULL, NULL, &da) == AGXQ_EINVAL);
	CHECK(agxq_infer_async(NULL, &good, 1, NULL, done_cb, &da) ==
	    AGXQ_EINVAL);
	CHECK(agxq_infer(m, &good, 1, NULL, NULL) == AGXQ_EINVAL);
	CHECK(agxq_infer(NULL, &good, 1, NULL, &r) == AGXQ_EINVAL);
	CHECK(agxq_stats_json(c, NULL) == AGXQ_EINVAL);
	CHECK(agxq_model_load(c, NULL, "x", &m2) == AGXQ_EINVAL);
	CHECK(m2 == NULL);
	/* The connection still works, and nothing called back. */
	CHECK(agxq_infer(m, &good, 1, NULL, &r) == 0);
	CHECK(result_ok(r, 1, 0.0f));
	usleep(50000);
	CHECK(set.total == 0);
	CHECK(atomic_load(&f->infers) == 1);
	rc = 0;
out:
	agxq_result_free(r);
	agxq_model_unload(m);
	agxq_close(c);
	fake_stop(f);
	done_destroy(&set);
	return rc;
}

static int
t_error_reply(void)
{
	struct fake *f = fake_start(FAKE_ERROR, 0);
	struct done_set set;
	struct done_arg da;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_result *r = NULL;
	agxq_tensor t;
	float buf[4];
	int rc = -1;

	done_init(&set);
	da = (struct done_arg){ &set, 0, 0.0f, NULL };
	CHECK(agxq_connect(f->path, &c) == 0);
	CHECK(load_tiny(c, &m) == 0);
	make_input(&t, buf, 1, 0.0f);
	CHECK(agxq_infer(m, &t, 1, NULL, &r) == AGXQ_ESHAPE);
	CHECK(r == NULL);
	CHECK(agxq_infer_async(m, &t, 1, NULL, done_cb, &da) == 0);
	CHECK(done_wait(&set, 1));
	CHECK(set.status[0] == AGXQ_ESHAPE && set.wrong == 0);
	rc = 0;
out:
	agxq_model_unload(m);
	agxq_close(c);
	fake_stop(f);
	done_destroy(&set);
	return rc;
}

struct nested {
	agxq_model *m;
	agxq_client *c;
	atomic_int infer_rc;
	atomic_int stats_rc;
	atomic_int async_rc;
	struct done_set *set;
	struct done_arg inner;
};

/* Callback that tries blocking calls (refused) and one async call. */
static void
nested_cb(void *arg, int status, agxq_result *r)
{
	struct nested *n = arg;
	agxq_result *r2 = NULL;
	agxq_tensor t;
	float buf[4];
	char *json = NULL;

	(void)status;
	(void)r;
	make_input(&t, buf, 1, 3.0f);
	atomic_store(&n->infer_rc, agxq_infer(n->m, &t, 1, NULL, &r2));
	agxq_result_free(r2);
	atomic_store(&n->stats_rc, agxq_stats_json(n->c, &json));
	free(json);
	n->inner = (struct done_arg){ n->set, 1, 3.0f, n->m };
	atomic_store(&n->async_rc, agxq_infer_async(n->m, &t, 1, NULL,
	    done_cb, &n->inner));
	pthread_mutex_lock(&n->set->mu);
	n->set->counts[0]++;
	n->set->total++;
	pthread_cond_broadcast(&n->set->cv);
	pthread_mutex_unlock(&n->set->mu);
}

static int
t_infer_from_callback(void)
{
	struct fake *f = fake_start(FAKE_ECHO, 0);
	struct done_set set;
	struct nested n;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_tensor t;
	float buf[4];
	int rc = -1;

	done_init(&set);
	CHECK(agxq_connect(f->path, &c) == 0);
	CHECK(load_tiny(c, &m) == 0);
	memset(&n, 0, sizeof n);
	n.m = m;
	n.c = c;
	n.set = &set;
	atomic_store(&n.infer_rc, 1);
	make_input(&t, buf, 1, 0.0f);
	CHECK(agxq_infer_async(m, &t, 1, NULL, nested_cb, &n) == 0);
	CHECK(done_wait(&set, 2));
	CHECK(atomic_load(&n.infer_rc) == AGXQ_EINVAL);
	CHECK(atomic_load(&n.stats_rc) == AGXQ_EINVAL);
	CHECK(atomic_load(&n.async_rc) == 0);
	CHECK(set.counts[1] == 1 && set.status[1] == 0 && set.wrong == 0);
	rc = 0;
out:
	agxq_model_unload(m);
	agxq_close(c);
	fake_stop(f);
	done_destroy(&set);
	return rc;
}

static int
t_big_payloads(void)
{
	struct fake *f = fake_start(FAKE_ECHO, 0);
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_result *r = NULL;
	agxq_tensor t;
	const agxq_tensor *o;
	const int rows = 1 << 16; /* [65536, 4] floats: 1 MiB */
	float *buf = NULL;
	uint32_t x = 12345, bits;
	int rc = -1;

	CHECK(agxq_connect(f->path, &c) == 0);
	CHECK(load_tiny(c, &m) == 0);
	if ((buf = malloc((size_t)rows * 4 * sizeof *buf)) == NULL)
		abort();
	/* Compressible: sent zstd, answered zstd. */
	make_input(&t, buf, rows, 0.0f);
	for (int i = 0; i < rows * 4; i++)
		buf[i] = (float)(i % 8);
	CHECK(agxq_infer(m, &t, 1, NULL, &r) == 0);
	CHECK(atomic_load(&f->zstd_in) == 1);
	o = agxq_result_output(r, 0);
	CHECK(o != NULL && o->shape[0] == rows);
	for (int i = 0; i < rows * 4; i++)
		CHECK(((const float *)o->data)[i] == 2.0f * (float)(i % 8));
	agxq_result_free(r);
	r = NULL;

	/* Incompressible: raw both ways, the reader's buffer grows. */
	for (int i = 0; i < rows * 4; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		/* Random sign and mantissa, exponent in [100, 164): finite. */
		bits = (x & 0x807fffffu) | ((100u + ((x >> 23) & 63u)) << 23);
		memcpy(&buf[i], &bits, sizeof bits);
	}
	CHECK(agxq_infer(m, &t, 1, NULL, &r) == 0);
	CHECK(atomic_load(&f->zstd_in) == 1);
	o = agxq_result_output(r, 0);
	CHECK(o != NULL && o->shape[0] == rows);
	for (int i = 0; i < rows * 4; i++)
		CHECK(((const float *)o->data)[i] == 2.0f * buf[i]);
	agxq_result_free(r);
	r = NULL;

	/* And small ones still work after. */
	make_input(&t, buf, 1, 9.0f);
	CHECK(agxq_infer(m, &t, 1, NULL, &r) == 0);
	CHECK(result_ok(r, 1, 9.0f));
	rc = 0;
out:
	agxq_result_free(r);
	free(buf);
	agxq_model_unload(m);
	agxq_close(c);
	fake_stop(f);
	return rc;
}

static int
t_connect_errors(void)
{
	char dir[] = "/tmp/agxq-client-XXXXXX", path[256], longp[200];
	agxq_client *c = NULL;
	FILE *fp;
	int rc = -1;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof path, "%s/missing.sock", dir);
	CHECK(agxq_connect(path, &c) == AGXQ_ECONNECT);
	CHECK(c == NULL);
	setenv("AGXQ_SOCKET", path, 1);
	CHECK(agxq_connect(NULL, &c) == AGXQ_ECONNECT);
	unsetenv("AGXQ_SOCKET");
	/* A file that is not a socket. */
	snprintf(path, sizeof path, "%s/file", dir);
	CHECK((fp = fopen(path, "w")) != NULL);
	fclose(fp);
	CHECK(agxq_connect(path, &c) == AGXQ_ECONNECT);
	unlink(path);
	memset(longp, 'a', sizeof longp - 1);
	longp[0] = '/';
	longp[sizeof longp - 1] = '\0';
	CHECK(agxq_connect(longp, &c) == AGXQ_EINVAL);
	CHECK(agxq_connect(path, NULL) == AGXQ_EINVAL);
	agxq_close(NULL);
	rc = 0;
out:
	rmdir(dir);
	return rc;
}

static const struct testlib_icase cases[] = {
	{ "handshake_ok", t_handshake_ok },
	{ "version_mismatch", t_version_mismatch },
	{ "sync_out_of_order", t_sync_out_of_order },
	{ "async_out_of_order", t_async_out_of_order },
	{ "disconnect_inflight", t_disconnect_inflight },
	{ "bad_inputs", t_bad_inputs },
	{ "error_reply", t_error_reply },
	{ "infer_from_callback", t_infer_from_callback },
	{ "big_payloads", t_big_payloads },
	{ "connect_errors", t_connect_errors },
	{ "handshake_timeout", t_handshake_timeout },
	{ "bad_settings", t_bad_settings },
};

int
main(int argc, char **argv)
{
	alarm(90); /* a hang fails the test instead of stalling ctest */
	return testlib_run_int(cases, TESTLIB_N(cases), argc, argv);
}
