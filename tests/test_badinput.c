/*
 * test_badinput: bad input to the real agxqd gets a clear error, never a
 * crash or a hang, and a client connected before the bad one keeps getting
 * correct results after every case.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agxq.h"
#include "agxq_direct.h"
#include "codec.h"
#include "daemon_util.h"
#include "tgraph.h"
#include "testlib.h"

#define TOL 1e-4

/* The daemon and the well-behaved client every case checks afterwards. */
static struct du_daemon daemon_;
static pid_t worker_;            /* the serving process; must not change */
static agxq_client *good;
static agxq_model *good_model;
static struct du_io good_io;

/* Returns 0 when the good client still gets a correct result. */
static int
good_check(void)
{
	agxq_result *r = NULL;
	int rc;

	if ((rc = agxq_infer(good_model, &good_io.in, 1, NULL, &r)) != 0) {
		printf("  good client: %s\n", agxq_strerror(rc));
		return -1;
	}
	rc = du_io_check(&good_io, r, TOL, TOL);
	agxq_result_free(r);
	return rc;
}

/* Returns 0 when fd still answers a StatsRequest. */
static int
raw_usable(int fd)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep = NULL;
	Agxq__StatsRequest sr = AGXQ__STATS_REQUEST__INIT;
	int ok = -1;

	sr.request_id = 77;
	env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
	env.stats_request = &sr;
	if (du_send_env(fd, &env) == 0 && du_recv(fd, 5000, &rep) == 1 &&
	    rep->body_case == AGXQ__ENVELOPE__BODY_STATS &&
	    rep->stats->request_id == 77)
		ok = 0;
	else
		printf("  the connection no longer answers\n");
	codec_envelope_free(rep);
	return ok;
}

/* Builds a raw linear model [256] -> [128] into a new tgraph. */
static struct tgraph *
raw_linear(void)
{
	struct tgraph *t = tg_new();
	uint64_t seed = 99;
	uint32_t x, w, b;

	x = tg_input(t, TG_DIMS(256));
	w = tg_const_rand(t, TG_DIMS(128, 256), 0.1f, &seed);
	b = tg_const_rand(t, TG_DIMS(128), 0.1f, &seed);
	tg_output(t, tg_linear(t, x, w, b));
	return t;
}

/* Connects, says hello and loads the raw linear model; fd or -1. */
static int
raw_with_model(uint64_t *model_id)
{
	struct tgraph *t = raw_linear();
	char msg[256];
	int fd;

	if ((fd = du_connect_hello(daemon_.sock)) < 0) {
		tg_free(t);
		return -1;
	}
	if (du_load(fd, 1, tg_graph(t), model_id, msg, sizeof msg) != 0) {
		printf("  raw load failed: %s\n", msg);
		close(fd);
		fd = -1;
	}
	tg_free(t);
	return fd;
}

/* Sends a raw Infer of one tensor. */
static int
raw_infer(int fd, uint64_t id, uint64_t model, int dtype,
    const int64_t *shape, int ndim, const void *data, size_t len)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__Infer in = AGXQ__INFER__INIT;
	Agxq__Tensor t = AGXQ__TENSOR__INIT, *tp = &t;

	t.dtype = (Agxq__DType)dtype;
	t.n_shape = (size_t)ndim;
	t.shape = (int64_t *)shape;
	t.data.data = (uint8_t *)data;
	t.data.len = len;
	in.request_id = id;
	in.model_id = model;
	in.n_inputs = 1;
	in.inputs = &tp;
	env.body_case = AGXQ__ENVELOPE__BODY_INFER;
	env.infer = &in;
	return du_send_env(fd, &env);
}

/* Header promising 100 bytes, 10 sent, then end of file. */
static void
t_truncated_frame(void)
{
	char junk[10] = { 0 };
	int fd;

	CHECK((fd = du_connect_hello(daemon_.sock)) >= 0);
	CHECK(du_send_frame(fd, 100, 0, junk, sizeof junk) == 0);
	shutdown(fd, SHUT_WR);
	CHECK(du_expect_closed(fd, 5000) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* A length over the limit: ERR_TOOBIG, then the daemon closes. */
static void
t_too_big(void)
{
	int fd;

	CHECK((fd = du_connect_hello(daemon_.sock)) >= 0);
	CHECK(du_send_frame(fd, 0xFFFFFFF0u, 0, NULL, 0) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_TOOBIG,
	    "over the limit") == 0);
	CHECK(du_expect_closed(fd, 5000) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* A zero-length frame. */
static void
t_empty_frame(void)
{
	int fd;

	CHECK((fd = du_connect_hello(daemon_.sock)) >= 0);
	CHECK(du_send_frame(fd, 0, 0, NULL, 0) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_PROTO,
	    "empty") == 0);
	CHECK(du_expect_closed(fd, 5000) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* An envelope whose only field is number 99: the connection survives. */
static void
t_unknown_message(void)
{
	static const uint8_t payload[] = { 0x98, 0x06, 0x01 }; /* field 99 = 1 */
	int fd;

	CHECK((fd = du_connect_hello(daemon_.sock)) >= 0);
	CHECK(du_send_frame(fd, sizeof payload, 0, payload,
	    sizeof payload) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_PROTO,
	    "unknown message") == 0);
	CHECK(raw_usable(fd) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* Bytes that are not a protobuf message at all. */
static void
t_garbage_message(void)
{
	static const uint8_t payload[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f };
	int fd;

	CHECK((fd = du_connect_hello(daemon_.sock)) >= 0);
	CHECK(du_send_frame(fd, sizeof payload, 0, payload,
	    sizeof payload) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_PROTO,
	    "malformed") == 0);
	CHECK(raw_usable(fd) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* Hello with protocol version 999. */
static void
t_wrong_version(void)
{
	int fd;

	CHECK((fd = du_connect(daemon_.sock)) >= 0);
	CHECK(du_hello(fd, 999) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_VERSION,
	    "999") == 0);
	CHECK(du_expect_closed(fd, 5000) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* A request before hello. */
static void
t_before_hello(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__StatsRequest sr = AGXQ__STATS_REQUEST__INIT;
	int fd;

	CHECK((fd = du_connect(daemon_.sock)) >= 0);
	env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
	env.stats_request = &sr;
	CHECK(du_send_env(fd, &env) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_PROTO,
	    "expected hello") == 0);
	CHECK(du_expect_closed(fd, 5000) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* Hello twice. */
static void
t_hello_twice(void)
{
	int fd;

	CHECK((fd = du_connect_hello(daemon_.sock)) >= 0);
	CHECK(du_hello(fd, 999) == 0); /* sends, expects nothing */
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_PROTO,
	    "hello") == 0);
	CHECK(raw_usable(fd) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* The zstd flag with garbage behind it. */
static void
t_corrupt_zstd(void)
{
	uint8_t junk[64];
	int fd;

	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	CHECK((fd = du_connect_hello(daemon_.sock)) >= 0);
	CHECK(du_send_frame(fd, sizeof junk, CODEC_FLAG_ZSTD, junk,
	    sizeof junk) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_CORRUPT,
	    NULL) == 0);
	CHECK(raw_usable(fd) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* Unknown flag bits in the header. */
static void
t_unknown_flags(void)
{
	static const uint8_t payload[] = { 0x4a, 0x00 };
	int fd;

	CHECK((fd = du_connect_hello(daemon_.sock)) >= 0);
	CHECK(du_send_frame(fd, sizeof payload, 0x80, payload,
	    sizeof payload) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_PROTO,
	    "flags") == 0);
	CHECK(du_expect_closed(fd, 5000) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* Infer for a model id never loaded, or loaded by another connection. */
static void
t_unknown_model(void)
{
	static const int64_t shape[] = { 1, 256 };
	float x[256] = { 0 };
	uint64_t id, other;
	int fd = -1, fd2 = -1;

	CHECK((fd = raw_with_model(&id)) >= 0);
	CHECK(raw_infer(fd, 5, id + 1000, AGXQ__DTYPE__DTYPE_FLOAT32, shape, 2,
	    x, sizeof x) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_NOMODEL,
	    "not loaded") == 0);
	CHECK((fd2 = raw_with_model(&other)) >= 0);
	CHECK(other == id); /* shared */
	close(fd2);
	fd2 = du_connect_hello(daemon_.sock);
	CHECK(fd2 >= 0);
	CHECK(raw_infer(fd2, 6, id, AGXQ__DTYPE__DTYPE_FLOAT32, shape, 2,
	    x, sizeof x) == 0);
	CHECK(du_expect_error(fd2, 5000, AGXQ__ERROR_CODE__ERR_NOMODEL,
	    NULL) == 0);
	CHECK(raw_usable(fd) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
	if (fd2 >= 0)
		close(fd2);
}

/* A tensor of dtype 7. */
static void
t_wrong_dtype(void)
{
	static const int64_t shape[] = { 1, 256 };
	float x[256] = { 0 };
	uint64_t id;
	int fd;

	CHECK((fd = raw_with_model(&id)) >= 0);
	CHECK(raw_infer(fd, 5, id, 7, shape, 2, x, sizeof x) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_DTYPE,
	    "dtype") == 0);
	CHECK(raw_usable(fd) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* [4, 300] for the linear model, through the client API and raw. */
static void
t_wrong_shape(void)
{
	static const int64_t shape[] = { 4, 300 };
	static float x[4 * 300];
	agxq_tensor t;
	agxq_result *r = NULL;
	uint64_t id;
	int fd = -1;

	memset(&t, 0, sizeof t);
	t.dtype = AGXQ_FLOAT32;
	t.ndim = 2;
	t.shape[0] = 4;
	t.shape[1] = 300;
	t.data = x;
	CHECK(agxq_infer(good_model, &t, 1, NULL, &r) == AGXQ_ESHAPE);
	CHECK(r == NULL);
	CHECK((fd = raw_with_model(&id)) >= 0);
	CHECK(raw_infer(fd, 5, id, AGXQ__DTYPE__DTYPE_FLOAT32, shape, 2, x,
	    sizeof x) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_SHAPE,
	    "300") == 0);
	CHECK(raw_usable(fd) == 0);
	CHECK(good_check() == 0);
out:
	agxq_result_free(r);
	if (fd >= 0)
		close(fd);
}

/* Data length that does not match the shape. */
static void
t_data_length(void)
{
	static const int64_t shape[] = { 4, 256 };
	static float x[4 * 256];
	uint64_t id;
	int fd;

	CHECK((fd = raw_with_model(&id)) >= 0);
	CHECK(raw_infer(fd, 5, id, AGXQ__DTYPE__DTYPE_FLOAT32, shape, 2, x,
	    100) == 0);
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_SHAPE,
	    "bytes") == 0);
	CHECK(raw_usable(fd) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

/* Loads t on a fresh connection; expects ERR_GRAPH with each key word. */
static int
expect_graph_error(struct tgraph *t, const char *w1, const char *w2)
{
	char msg[512];
	uint64_t id;
	int fd, rc, ok = -1;

	if ((fd = du_connect_hello(daemon_.sock)) < 0)
		return -1;
	rc = du_load(fd, 3, tg_graph(t), &id, msg, sizeof msg);
	if (rc != AGXQ__ERROR_CODE__ERR_GRAPH)
		printf("  load gave %d (%s), want ERR_GRAPH\n", rc, msg);
	else if (w1 != NULL && strstr(msg, w1) == NULL)
		printf("  message \"%s\" lacks \"%s\"\n", msg, w1);
	else if (w2 != NULL && strstr(msg, w2) == NULL)
		printf("  message \"%s\" lacks \"%s\"\n", msg, w2);
	else
		ok = raw_usable(fd);
	close(fd);
	return ok;
}

/* A node with an op the daemon does not know. */
static void
t_unknown_op(void)
{
	struct tgraph *t = raw_linear();
	uint32_t y = 3, z;

	z = tg_node(t, (Agxq__Op)77, &y, 1);
	tg_name(t, "bogus_node");
	tg_output(t, z);
	CHECK(expect_graph_error(t, "unknown op", "node 1") == 0);
	CHECK(good_check() == 0);
out:
	tg_free(t);
}

/* A node reading its own output, and one reading a later value. */
static void
t_forward_reference(void)
{
	struct tgraph *t = tg_new();
	uint32_t x, y1, y2;

	x = tg_input(t, TG_DIMS(16));
	y1 = tg_relu(t, x);
	tg_last_node(t)->inputs[0] = y1; /* itself */
	tg_output(t, y1);
	CHECK(expect_graph_error(t, "forward reference", "node 0") == 0);
	tg_free(t);

	t = tg_new();
	x = tg_input(t, TG_DIMS(16));
	y1 = tg_relu(t, x);
	tg_name(t, "first");
	y2 = tg_relu(t, y1);
	tg_graph(t)->nodes[0]->inputs[0] = y2; /* a cycle: 0 <- 1 <- 0 */
	tg_output(t, y2);
	CHECK(expect_graph_error(t, "forward reference", "node 0") == 0);
	CHECK(good_check() == 0);
out:
	tg_free(t);
}

/* Weights shorter than their shape. */
static void
t_weights_size(void)
{
	struct tgraph *t = tg_new();
	uint64_t seed = 5;
	uint32_t x, w;

	x = tg_input(t, TG_DIMS(256));
	w = tg_const_rand(t, TG_DIMS(128, 256), 0.1f, &seed);
	tg_last_const(t)->data.len -= 4;
	tg_output(t, tg_linear(t, x, w, TG_NONE));
	CHECK(expect_graph_error(t, "constant", NULL) == 0);
	CHECK(good_check() == 0);
out:
	tg_free(t);
}

/* A linear whose weight does not fit its input. */
static void
t_shape_mismatch(void)
{
	struct tgraph *t = tg_new();
	uint64_t seed = 5;
	uint32_t x, w;

	x = tg_input(t, TG_DIMS(256));
	w = tg_const_rand(t, TG_DIMS(128, 255), 0.1f, &seed);
	tg_output(t, tg_linear(t, x, w, TG_NONE));
	tg_name(t, "fc_bad");
	CHECK(expect_graph_error(t, "fc_bad", NULL) == 0);
	CHECK(good_check() == 0);
out:
	tg_free(t);
}

/* A partial frame that never completes: the frame timeout closes it. */
static void
t_partial_frame_timeout(void)
{
	char junk[10] = { 0 };
	uint64_t t0;
	int fd;

	CHECK((fd = du_connect_hello(daemon_.sock)) >= 0);
	t0 = du_now_ms();
	CHECK(du_send_frame(fd, 100, 0, junk, sizeof junk) == 0);
	CHECK(good_check() == 0); /* served while fd dangles */
	CHECK(du_expect_error(fd, 5000, AGXQ__ERROR_CODE__ERR_PROTO,
	    "partial frame") == 0);
	CHECK(du_now_ms() - t0 >= 250);
	CHECK(du_expect_closed(fd, 5000) == 0);
	CHECK(good_check() == 0);
out:
	if (fd >= 0)
		close(fd);
}

static const struct testlib_case cases[] = {
	{ "truncated_frame", t_truncated_frame },
	{ "too_big", t_too_big },
	{ "empty_frame", t_empty_frame },
	{ "unknown_message", t_unknown_message },
	{ "garbage_message", t_garbage_message },
	{ "wrong_version", t_wrong_version },
	{ "before_hello", t_before_hello },
	{ "hello_twice", t_hello_twice },
	{ "corrupt_zstd", t_corrupt_zstd },
	{ "unknown_flags", t_unknown_flags },
	{ "unknown_model", t_unknown_model },
	{ "wrong_dtype", t_wrong_dtype },
	{ "wrong_shape", t_wrong_shape },
	{ "data_length", t_data_length },
	{ "unknown_op", t_unknown_op },
	{ "forward_reference", t_forward_reference },
	{ "weights_size", t_weights_size },
	{ "shape_mismatch", t_shape_mismatch },
	{ "partial_frame_timeout", t_partial_frame_timeout },
};

/* Starts the daemon and the good client. */
static int
setup(void)
{
	static const char *const extra[] = { "--frame-timeout-ms", "300", NULL };
	agxq_direct *d = NULL;
	agxq_direct_model *dm = NULL;
	agxq_graph *g = NULL;
	int rc = -1;

	if (du_start(&daemon_, extra) != 0 ||
	    (worker_ = du_worker_pid(daemon_.sock)) <= 0)
		return -1;
	if (agxq_reference_build(AGXQ_REF_LINEAR, 42, &g) != 0 ||
	    agxq_direct_open("cpu", 0, &d) != 0 ||
	    agxq_direct_load(d, g, &dm) != 0 ||
	    du_io_make(&good_io, AGXQ_REF_LINEAR, 4, 0, 1234, dm) != 0)
		goto out;
	if (agxq_connect(daemon_.sock, &good) != 0 ||
	    agxq_model_load(good, g, "linear", &good_model) != 0)
		goto out;
	rc = good_check();
out:
	agxq_graph_free(g);
	agxq_direct_unload(dm);
	agxq_direct_close(d);
	return rc;
}

/*
 * After each case: fails it, and stops the run, when the daemon died (or
 * its worker did: the supervisor would replace a crashed one).
 */
static int
daemon_check(void)
{
	if (du_alive(daemon_.pid) && du_alive(worker_))
		return 0;
	printf("  %s: the daemon died\n", testlib_current);
	testlib_failed = 1;
	return -1;
}

int
main(int argc, char **argv)
{
	int any = 0;
	char *json = NULL;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	du_watchdog(100);
	testlib_current = "setup";
	if (setup() != 0) {
		printf("FAIL setup\n");
		any = 1;
		goto out;
	}
	any = testlib_run_table(cases, NULL, TESTLIB_N(cases), argc, argv,
	    daemon_check);
	testlib_current = "stats";
	if (agxq_stats_json(good, &json) != 0 ||
	    du_json_num(json, "backend_foreign_calls") != 0) {
		printf("FAIL stats\n");
		any = 1;
	}
	free(json);
out:
	agxq_model_unload(good_model);
	agxq_close(good);
	du_io_free(&good_io);
	if (daemon_.pid > 0 && du_stop(&daemon_) != 0)
		any = 1;
	du_cleanup(&daemon_);
	return any ? 1 : 0;
}
