/*
 * test_shm: shared memory tensors against the real agxqd. Registration,
 * bounds, seals and descriptor checks each give a clear error and leak
 * nothing (the daemon's descriptors and mappings return to their baseline);
 * other clients are unaffected; the library's transparent shared memory
 * path gives the same results as inline frames; compression is counted in
 * the stats.
 */
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agxq.h"
#include "codec.h"
#include "daemon_util.h"
#include "testlib.h"

#define N 4096                   /* floats per row of the test model */
#define MEMFD_NAME "agxq-test"

static struct du_daemon daemon_;
static pid_t worker_;            /* the process that maps and serves */
static agxq_client *good;        /* an unrelated client, checked after each case */
static agxq_model *good_model;

/* Counts the daemon's open descriptors. */
static int
daemon_fds(void)
{
	return du_fd_count(worker_);
}

/* Counts the daemon's mappings whose line contains needle. */
static int
daemon_maps(const char *needle)
{
	char path[64], line[512];
	FILE *f;
	int n = 0;

	snprintf(path, sizeof path, "/proc/%d/maps", (int)worker_);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL) {
		if (strstr(line, needle) != NULL)
			n++;
	}
	fclose(f);
	return n;
}

/* Waits up to 3 s for the daemon's fds and test maps to reach the baseline. */
static int
leak_check(int base_fds)
{
	uint64_t deadline = du_now_ms() + 3000;
	int fds, maps;

	do {
		fds = daemon_fds();
		maps = daemon_maps("memfd:" MEMFD_NAME);
		if (fds == base_fds && maps == 0)
			return 0;
		usleep(10000);
	} while (du_now_ms() < deadline);
	printf("  %s: daemon holds %d descriptors (baseline %d) and %d test "
	    "mappings\n", testlib_current, fds, base_fds, maps);
	return -1;
}

/* Builds relu(x) (and x + x when two) for x [batch, N]. */
static agxq_graph *
model_graph(int two)
{
	agxq_graph *g = agxq_graph_new();
	int64_t shape[1] = { N };
	int x;

	x = agxq_graph_input(g, shape, 1);
	agxq_graph_output(g, agxq_graph_relu(g, x));
	if (two)
		agxq_graph_output(g, agxq_graph_add(g, x, x));
	return g;
}

/* The same model as a wire Graph (relu only), for raw connections. */
static void
model_proto(Agxq__Graph *g, Agxq__ValueInfo *vi, Agxq__ValueInfo **vip,
    Agxq__Node *nd, Agxq__Node **ndp, int64_t *ss, uint32_t *in0,
    uint32_t *out1)
{
	agxq__graph__init(g);
	agxq__value_info__init(vi);
	agxq__node__init(nd);
	*ss = N;
	vi->n_sample_shape = 1;
	vi->sample_shape = ss;
	vi->dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	*vip = vi;
	*in0 = 0;
	nd->op = AGXQ__OP__OP_RELU;
	nd->n_inputs = 1;
	nd->inputs = in0;
	*ndp = nd;
	*out1 = 1;
	g->n_inputs = 1;
	g->inputs = vip;
	g->n_nodes = 1;
	g->nodes = ndp;
	g->n_outputs = 1;
	g->outputs = out1;
}

/* Connects raw, says hello and loads the relu model; fd or -1. */
static int
raw_open(uint64_t *model_id)
{
	Agxq__Graph g;
	Agxq__ValueInfo vi, *vip;
	Agxq__Node nd, *ndp;
	int64_t ss;
	uint32_t in0, out1;
	char msg[256];
	int fd;

	if ((fd = du_connect_hello(daemon_.sock)) < 0)
		return -1;
	model_proto(&g, &vi, &vip, &nd, &ndp, &ss, &in0, &out1);
	if (du_load(fd, 1, &g, model_id, msg, sizeof msg) != 0) {
		printf("  load: %s\n", msg);
		close(fd);
		return -1;
	}
	return fd;
}

/* Sends RegisterRegion{id, size} with descriptor pass (-1: none). */
static int
send_register(int fd, uint64_t id, uint64_t size, int pass)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__RegisterRegion rr = AGXQ__REGISTER_REGION__INIT;

	rr.request_id = id;
	rr.size = size;
	env.body_case = AGXQ__ENVELOPE__BODY_REGISTER_REGION;
	env.register_region = &rr;
	return du_send_env_fd(fd, &env, pass);
}

/* Registers pass as a region of size bytes; region id, or 0 on failure. */
static uint64_t
do_register(int fd, uint64_t id, uint64_t size, int pass)
{
	Agxq__Envelope *rep = NULL;
	uint64_t region = 0;

	if (send_register(fd, id, size, pass) != 0 ||
	    du_recv(fd, 2000, &rep) != 1)
		return 0;
	if (rep->body_case == AGXQ__ENVELOPE__BODY_REGISTER_REGION_REPLY &&
	    rep->register_region_reply->request_id == id)
		region = rep->register_region_reply->region_id;
	else if (rep->body_case == AGXQ__ENVELOPE__BODY_ERROR)
		printf("  register: %s\n", rep->error->message);
	codec_envelope_free(rep);
	return region;
}

/* A memfd of size bytes, sealed with seals (0: none). */
static int
make_memfd(size_t size, int seals)
{
	int fd;

	if ((fd = memfd_create(MEMFD_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0)
		return -1;
	if (ftruncate(fd, (off_t)size) != 0 ||
	    (seals != 0 && fcntl(fd, F_ADD_SEALS, seals) != 0)) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Sends Infer{id, model, input [1, N] at in_ref, output at out_ref (or
 * none)}.
 */
static int
send_infer(int fd, uint64_t id, uint64_t model, const Agxq__ShmRef *in_ref,
    const Agxq__ShmRef *out_ref)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT;
	Agxq__Infer inf = AGXQ__INFER__INIT;
	Agxq__Tensor t = AGXQ__TENSOR__INIT, *tp = &t;
	Agxq__ShmRef *outp = (Agxq__ShmRef *)out_ref;
	int64_t shape[2] = { 1, N };

	t.dtype = AGXQ__DTYPE__DTYPE_FLOAT32;
	t.n_shape = 2;
	t.shape = shape;
	t.shm = (Agxq__ShmRef *)in_ref;
	inf.request_id = id;
	inf.model_id = model;
	inf.n_inputs = 1;
	inf.inputs = &tp;
	if (out_ref != NULL) {
		inf.n_output_refs = 1;
		inf.output_refs = &outp;
	}
	env.body_case = AGXQ__ENVELOPE__BODY_INFER;
	env.infer = &inf;
	return du_send_env_fd(fd, &env, -1);
}

/* Returns 0 when the unrelated client still gets correct results. */
static int
good_check(void)
{
	static float in[2 * N];
	agxq_tensor t = { .dtype = AGXQ_FLOAT32, .ndim = 2,
	    .shape = { 2, N }, .data = in };
	agxq_result *r = NULL;
	const agxq_tensor *o;
	int rc = -1;

	for (int i = 0; i < 2 * N; i++)
		in[i] = (float)(i % 7) - 3.0f;
	if (agxq_infer(good_model, &t, 1, NULL, &r) != 0)
		goto done;
	o = agxq_result_output(r, 0);
	for (int i = 0; i < 2 * N; i++) {
		if (((float *)o->data)[i] != (in[i] > 0 ? in[i] : 0.0f))
			goto done;
	}
	rc = 0;
done:
	agxq_result_free(r);
	if (rc != 0)
		printf("  %s: the unrelated client got a wrong result\n",
		    testlib_current);
	return rc;
}

/* Raw happy path: input and output in a region, written by the daemon. */
static int
t_raw_roundtrip(void)
{
	Agxq__ShmRef in = AGXQ__SHM_REF__INIT, out = AGXQ__SHM_REF__INIT;
	Agxq__Envelope *rep = NULL;
	size_t size = 4 * N * sizeof(float);
	uint64_t model, region;
	float *p = MAP_FAILED;
	int fd = -1, mfd = -1, base = daemon_fds(), rc = -1;

	CHECK((fd = raw_open(&model)) >= 0);
	CHECK((mfd = make_memfd(size, F_SEAL_SHRINK | F_SEAL_GROW)) >= 0);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	CHECK(p != MAP_FAILED);
	for (int i = 0; i < N; i++)
		p[i] = (float)(i % 5) - 2.0f;
	CHECK((region = do_register(fd, 2, size, mfd)) != 0);
	close(mfd);
	mfd = -1;
	CHECK(daemon_maps("memfd:" MEMFD_NAME) == 1);
	in.region_id = out.region_id = region;
	in.length = out.length = N * sizeof(float);
	out.offset = 2 * N * sizeof(float);
	CHECK(send_infer(fd, 3, model, &in, &out) == 0);
	CHECK(du_recv(fd, 3000, &rep) == 1);
	CHECK(rep->body_case == AGXQ__ENVELOPE__BODY_INFER_REPLY);
	CHECK(rep->infer_reply->n_outputs == 1);
	CHECK(rep->infer_reply->outputs[0]->shm != NULL);
	CHECK(rep->infer_reply->outputs[0]->data.len == 0);
	CHECK(rep->infer_reply->outputs[0]->shm->offset == out.offset);
	CHECK(rep->infer_reply->outputs[0]->shm->length == out.length);
	for (int i = 0; i < N; i++)
		CHECK(p[2 * N + i] == (p[i] > 0 ? p[i] : 0.0f));
	codec_envelope_free(rep);
	rep = NULL;

	/* An output slice too small comes back inline. */
	out.length = 16;
	CHECK(send_infer(fd, 4, model, &in, &out) == 0);
	CHECK(du_recv(fd, 3000, &rep) == 1);
	CHECK(rep->body_case == AGXQ__ENVELOPE__BODY_INFER_REPLY);
	CHECK(rep->infer_reply->outputs[0]->shm == NULL);
	CHECK(rep->infer_reply->outputs[0]->data.len == N * sizeof(float));
	close(fd);
	fd = -1;
	CHECK(leak_check(base) == 0);
	rc = 0;
out:
	codec_envelope_free(rep);
	if (p != MAP_FAILED)
		munmap(p, size);
	if (mfd >= 0)
		close(mfd);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Every bad ShmRef gets a clear error and the connection goes on. */
static int
t_bad_refs(void)
{
	static const struct {
		uint64_t offset, length;
		int out;               /* put the bad ref on the output */
		int code;
		const char *msg;
	} cases[] = {
		{ 8192 * 4, N * 4, 0, AGXQ__ERROR_CODE__ERR_INVAL, "outside region" },
		{ UINT64_MAX - 3, N * 4, 0, AGXQ__ERROR_CODE__ERR_INVAL, "outside region" },
		{ 0, UINT64_MAX, 0, AGXQ__ERROR_CODE__ERR_INVAL, "outside region" },
		{ 2, N * 4, 0, AGXQ__ERROR_CODE__ERR_INVAL, "not 4-byte aligned" },
		{ 0, N * 4 - 4, 0, AGXQ__ERROR_CODE__ERR_SHAPE, "bytes for a tensor of" },
		{ 8192 * 4 - 4, 8, 1, AGXQ__ERROR_CODE__ERR_INVAL, "outside region" },
		{ 100, N * 4, 1, AGXQ__ERROR_CODE__ERR_INVAL, "overlaps input 0" },
	};
	Agxq__ShmRef in = AGXQ__SHM_REF__INIT, o = AGXQ__SHM_REF__INIT;
	size_t size = 8192 * sizeof(float);
	uint64_t model, region;
	int fd = -1, mfd = -1, base = daemon_fds(), rc = -1;

	CHECK((fd = raw_open(&model)) >= 0);
	CHECK((mfd = make_memfd(size, F_SEAL_SHRINK)) >= 0);
	CHECK((region = do_register(fd, 2, size, mfd)) != 0);
	close(mfd);
	mfd = -1;
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		in.region_id = o.region_id = region;
		in.offset = 0;
		in.length = N * 4;
		o.offset = N * 4;
		o.length = N * 4;
		if (cases[k].out) {
			o.offset = cases[k].offset;
			o.length = cases[k].length;
		} else {
			in.offset = cases[k].offset;
			in.length = cases[k].length;
		}
		CHECK(send_infer(fd, 10 + k, model, &in, &o) == 0);
		if (du_expect_error(fd, 2000, cases[k].code, cases[k].msg) != 0) {
			printf("  %s: case %zu\n", testlib_current, k);
			CHECK(0);
		}
	}
	/* Unknown region. */
	in.region_id = region + 100;
	in.offset = 0;
	in.length = N * 4;
	CHECK(send_infer(fd, 30, model, &in, NULL) == 0);
	CHECK(du_expect_error(fd, 2000, AGXQ__ERROR_CODE__ERR_INVAL,
	    "is not registered on this connection") == 0);
	/* Another connection's region is not this one's. */
	CHECK(good_check() == 0);
	close(fd);
	fd = -1;
	CHECK(leak_check(base) == 0);
	rc = 0;
out:
	if (mfd >= 0)
		close(mfd);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Registrations that must fail: each a clear error, nothing kept. */
static int
t_bad_register(void)
{
	char tmpl[] = "/var/tmp/agxq-shm-XXXXXX";
	int fd = -1, mfd = -1, pfd[2] = { -1, -1 }, ffd = -1;
	int base = daemon_fds(), rc = -1;
	uint64_t model;

	CHECK((fd = raw_open(&model)) >= 0);
	/* Too small. */
	CHECK((mfd = make_memfd(4096, F_SEAL_SHRINK)) >= 0);
	CHECK(send_register(fd, 2, 8192, mfd) == 0);
	CHECK(du_expect_error(fd, 2000, AGXQ__ERROR_CODE__ERR_INVAL,
	    "smaller than the 8192 bytes registered") == 0);
	close(mfd);
	/* Unsealed. */
	CHECK((mfd = make_memfd(4096, 0)) >= 0);
	CHECK(send_register(fd, 3, 4096, mfd) == 0);
	CHECK(du_expect_error(fd, 2000, AGXQ__ERROR_CODE__ERR_INVAL,
	    "region must be sealed against shrinking (F_SEAL_SHRINK)") == 0);
	close(mfd);
	mfd = -1;
	/* Not a memfd: a pipe, and a regular file. */
	CHECK(pipe(pfd) == 0);
	CHECK(send_register(fd, 4, 4096, pfd[0]) == 0);
	CHECK(du_expect_error(fd, 2000, AGXQ__ERROR_CODE__ERR_INVAL,
	    "not a memfd") == 0);
	CHECK((ffd = mkstemp(tmpl)) >= 0);
	unlink(tmpl);
	CHECK(ftruncate(ffd, 8192) == 0);
	CHECK(send_register(fd, 5, 4096, ffd) == 0);
	/* On tmpfs a plain file reports seals but not F_SEAL_SHRINK. */
	CHECK(du_expect_error(fd, 2000, AGXQ__ERROR_CODE__ERR_INVAL,
	    "region") == 0);
	/* No descriptor at all. */
	CHECK(send_register(fd, 6, 4096, -1) == 0);
	CHECK(du_expect_error(fd, 2000, AGXQ__ERROR_CODE__ERR_INVAL,
	    "RegisterRegion without a file descriptor") == 0);
	/* Size 0. */
	CHECK((mfd = make_memfd(4096, F_SEAL_SHRINK)) >= 0);
	CHECK(send_register(fd, 7, 0, mfd) == 0);
	CHECK(du_expect_error(fd, 2000, AGXQ__ERROR_CODE__ERR_INVAL,
	    "must not be 0") == 0);
	CHECK(leak_check(base + 1) == 0); /* + our raw connection */
	CHECK(good_check() == 0);
	rc = 0;
out:
	if (mfd >= 0)
		close(mfd);
	if (pfd[0] >= 0) {
		close(pfd[0]);
		close(pfd[1]);
	}
	if (ffd >= 0)
		close(ffd);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* A descriptor with a message that is not RegisterRegion is closed. */
static int
t_stray_fd(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep = NULL;
	Agxq__StatsRequest sr = AGXQ__STATS_REQUEST__INIT;
	int fd = -1, mfd = -1, base = daemon_fds(), rc = -1;
	int got_stats = 0, got_error = 0;
	uint64_t model;

	CHECK((fd = raw_open(&model)) >= 0);
	CHECK((mfd = make_memfd(4096, F_SEAL_SHRINK)) >= 0);
	sr.request_id = 9;
	env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
	env.stats_request = &sr;
	CHECK(du_send_env_fd(fd, &env, mfd) == 0);
	for (int k = 0; k < 2; k++) {
		CHECK(du_recv(fd, 2000, &rep) == 1);
		if (rep->body_case == AGXQ__ENVELOPE__BODY_STATS)
			got_stats = 1;
		else if (rep->body_case == AGXQ__ENVELOPE__BODY_ERROR &&
		    strstr(rep->error->message, "without a RegisterRegion") !=
		    NULL)
			got_error = 1;
		codec_envelope_free(rep);
		rep = NULL;
	}
	CHECK(got_stats && got_error);
	/* The stray descriptor is not taken by a later registration. */
	CHECK(send_register(fd, 10, 4096, -1) == 0);
	CHECK(du_expect_error(fd, 2000, AGXQ__ERROR_CODE__ERR_INVAL,
	    "without a file descriptor") == 0);
	CHECK(leak_check(base + 1) == 0);
	rc = 0;
out:
	codec_envelope_free(rep);
	if (mfd >= 0)
		close(mfd);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* A released region is unknown afterwards and unmapped. */
static int
t_released(void)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep = NULL;
	Agxq__ReleaseRegion rr = AGXQ__RELEASE_REGION__INIT;
	Agxq__ShmRef in = AGXQ__SHM_REF__INIT, o = AGXQ__SHM_REF__INIT;
	int fd = -1, mfd = -1, base = daemon_fds(), rc = -1;
	uint64_t model, region;

	CHECK((fd = raw_open(&model)) >= 0);
	CHECK((mfd = make_memfd(2 * N * 4, F_SEAL_SHRINK)) >= 0);
	CHECK((region = do_register(fd, 2, 2 * N * 4, mfd)) != 0);
	close(mfd);
	mfd = -1;
	/* In flight, then released: the request still completes. */
	in.region_id = o.region_id = region;
	in.length = o.length = N * 4;
	o.offset = N * 4;
	CHECK(send_infer(fd, 3, model, &in, &o) == 0);
	rr.request_id = 4;
	rr.region_id = region;
	env.body_case = AGXQ__ENVELOPE__BODY_RELEASE_REGION;
	env.release_region = &rr;
	CHECK(du_send_env_fd(fd, &env, -1) == 0);
	for (int k = 0; k < 2; k++) {
		CHECK(du_recv(fd, 2000, &rep) == 1);
		CHECK(rep->body_case == AGXQ__ENVELOPE__BODY_INFER_REPLY ||
		    rep->body_case == AGXQ__ENVELOPE__BODY_RELEASE_REGION_REPLY);
		codec_envelope_free(rep);
		rep = NULL;
	}
	CHECK(send_infer(fd, 5, model, &in, NULL) == 0);
	CHECK(du_expect_error(fd, 2000, AGXQ__ERROR_CODE__ERR_INVAL,
	    "was released") == 0);
	CHECK(du_send_env_fd(fd, &env, -1) == 0);
	CHECK(du_expect_error(fd, 2000, AGXQ__ERROR_CODE__ERR_INVAL,
	    "was released") == 0);
	CHECK(leak_check(base + 1) == 0);
	rc = 0;
out:
	codec_envelope_free(rep);
	if (mfd >= 0)
		close(mfd);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Compares results of c (shm) against inline for the one/two-output model. */
static int
lib_compare(agxq_client *shm, agxq_client *inl, int two, int async_too)
{
	agxq_graph *g = model_graph(two);
	agxq_model *ms = NULL, *mi = NULL;
	agxq_result *rs = NULL, *ri = NULL;
	int rows = 16, rc = -1;
	float *in = malloc((size_t)rows * N * sizeof(float));
	agxq_tensor t = { .dtype = AGXQ_FLOAT32, .ndim = 2,
	    .shape = { rows, N }, .data = in };

	CHECK(in != NULL && g != NULL);
	CHECK(agxq_model_load(shm, g, "shm", &ms) == 0);
	CHECK(agxq_model_load(inl, g, "inline", &mi) == 0);
	for (int iter = 0; iter < 4; iter++) {
		for (int i = 0; i < rows * N; i++)
			in[i] = (float)((i * 31 + iter) % 13) - 6.0f;
		CHECK(agxq_infer(ms, &t, 1, NULL, &rs) == 0);
		CHECK(agxq_infer(mi, &t, 1, NULL, &ri) == 0);
		CHECK(agxq_result_noutputs(rs) == agxq_result_noutputs(ri));
		for (int j = 0; j < agxq_result_noutputs(rs); j++) {
			const agxq_tensor *a = agxq_result_output(rs, j);
			const agxq_tensor *b = agxq_result_output(ri, j);

			CHECK(a->ndim == b->ndim && a->shape[0] == rows);
			CHECK(memcmp(a->data, b->data,
			    (size_t)rows * N * sizeof(float)) == 0);
		}
		agxq_result_free(rs);
		agxq_result_free(ri);
		rs = ri = NULL;
	}
	if (async_too) {
		struct du_track tr;
		int n = 32;

		CHECK(du_track_init(&tr, n, 0, 0) == 0);
		for (int k = 0; k < n; k++)
			if (agxq_infer_async(ms, &t, 1, NULL, du_track_cb,
			    du_track_arg(&tr, k, NULL)) != 0)
				du_track_unsent(&tr, k);
		rc = du_track_wait(&tr, n, 10000);
		if (rc != 0 || tr.ok != n)
			printf("  async: %d of %d ok\n", tr.ok, n);
		rc = rc == 0 && tr.ok == n ? 0 : -1;
		du_track_free(&tr);
		CHECK(rc == 0);
		rc = -1;
	}
	rc = 0;
out:
	agxq_result_free(rs);
	agxq_result_free(ri);
	agxq_model_unload(ms);
	agxq_model_unload(mi);
	agxq_graph_free(g);
	free(in);
	return rc;
}

/* The library's transparent path: same results as inline; stats show it. */
static int
t_library(void)
{
	agxq_client *shm = NULL, *inl = NULL;
	agxq_result *kept = NULL;
	char *json = NULL;
	int rc = -1, base = daemon_fds();

	setenv("AGXQ_SHM_THRESHOLD", "0", 1);
	CHECK(agxq_connect(daemon_.sock, &inl) == 0);
	setenv("AGXQ_SHM_THRESHOLD", "1", 1);
	CHECK(agxq_connect(daemon_.sock, &shm) == 0);
	unsetenv("AGXQ_SHM_THRESHOLD");
	CHECK(lib_compare(shm, inl, 0, 1) == 0);
	CHECK(lib_compare(shm, inl, 1, 0) == 0);
	CHECK(agxq_stats_json(inl, &json) == 0);
	CHECK(du_json_num(json, "shm_regions") >= 1);
	CHECK(daemon_maps("memfd:agxq-shm") >= 1);
	free(json);
	json = NULL;
	/* A result outlives its client: its slice stays mapped here. */
	{
		agxq_graph *g = model_graph(0);
		agxq_model *m = NULL;
		static float in[N];
		agxq_tensor t = { .dtype = AGXQ_FLOAT32, .ndim = 2,
		    .shape = { 1, N }, .data = in };

		for (int i = 0; i < N; i++)
			in[i] = (float)i;
		CHECK(agxq_model_load(shm, g, "keep", &m) == 0);
		agxq_graph_free(g);
		CHECK(agxq_infer(m, &t, 1, NULL, &kept) == 0);
		agxq_model_unload(m);
	}
	agxq_close(shm);
	shm = NULL;
	CHECK(((float *)agxq_result_output(kept, 0)->data)[N - 1] ==
	    (float)(N - 1));
	agxq_result_free(kept);
	kept = NULL;
	/* The daemon unmaps the closed client's regions. */
	{
		uint64_t deadline = du_now_ms() + 3000;

		while (daemon_maps("memfd:agxq-shm") != 0 &&
		    du_now_ms() < deadline)
			usleep(10000);
	}
	CHECK(daemon_maps("memfd:agxq-shm") == 0);
	agxq_close(inl);
	inl = NULL;
	CHECK(leak_check(base) == 0);
	rc = 0;
out:
	agxq_result_free(kept);
	free(json);
	agxq_close(shm);
	agxq_close(inl);
	return rc;
}

/* Compressible weights travel compressed; stats count both sizes. */
static int
t_compress_stats(void)
{
	agxq_client *c = NULL;
	agxq_graph *g = NULL;
	agxq_model *m = NULL;
	char *j0 = NULL, *j1 = NULL;
	int64_t shape[1] = { 1 << 18 }, wshape[2] = { 1, 1 << 18 };
	float *w = calloc((size_t)1 << 18, sizeof(float));
	long long in0, raw0, in1, raw1;
	int x, rc = -1;

	CHECK(w != NULL);
	for (int i = 0; i < (1 << 18); i++)
		w[i] = (float)(i % 4);
	CHECK(agxq_connect(daemon_.sock, &c) == 0);
	CHECK(agxq_stats_json(c, &j0) == 0);
	CHECK((g = agxq_graph_new()) != NULL);
	x = agxq_graph_input(g, shape, 1);
	agxq_graph_output(g, agxq_graph_add(g, x,
	    agxq_graph_const(g, wshape, 2, w)));
	CHECK(agxq_model_load(c, g, "compressible", &m) == 0);
	CHECK(agxq_stats_json(c, &j1) == 0);
	in0 = du_json_num(j0, "bytes_in");
	raw0 = du_json_num(j0, "bytes_in_raw");
	in1 = du_json_num(j1, "bytes_in");
	raw1 = du_json_num(j1, "bytes_in_raw");
	/* 1 MiB of weights: raw grows by at least that, the wire by far less. */
	CHECK(raw1 - raw0 >= (1 << 20));
	CHECK(in1 - in0 < (raw1 - raw0) / 4);
	rc = 0;
out:
	agxq_model_unload(m);
	agxq_graph_free(g);
	agxq_close(c);
	free(j0);
	free(j1);
	free(w);
	return rc;
}

static const struct testlib_icase tests[] = {
	{ "raw_roundtrip", t_raw_roundtrip },
	{ "bad_refs", t_bad_refs },
	{ "bad_register", t_bad_register },
	{ "stray_fd", t_stray_fd },
	{ "released", t_released },
	{ "library", t_library },
	{ "compress_stats", t_compress_stats },
};

/* After each case: fails it when the unrelated client got a wrong result. */
static int
good_after(void)
{
	if (!testlib_failed && good_check() != 0)
		testlib_failed = 1;
	return 0;
}

int
main(int argc, char **argv)
{
	agxq_graph *g = NULL;
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	du_watchdog(90);
	if (du_start(&daemon_, NULL) != 0 ||
	    (worker_ = du_worker_pid(daemon_.sock)) <= 0) {
		printf("FAIL cannot start agxqd\n");
		du_cleanup(&daemon_);
		return 1;
	}
	setenv("AGXQ_SHM_THRESHOLD", "0", 1);
	rc = agxq_connect(daemon_.sock, &good);
	unsetenv("AGXQ_SHM_THRESHOLD");
	if (rc != 0 || (g = model_graph(0)) == NULL ||
	    agxq_model_load(good, g, "good", &good_model) != 0) {
		printf("FAIL cannot set up the unrelated client\n");
		du_cleanup(&daemon_);
		return 1;
	}
	agxq_graph_free(g);
	rc = testlib_run_table(NULL, tests, TESTLIB_N(tests), argc, argv,
	    good_after) != 0 ? -1 : 0;
	agxq_model_unload(good_model);
	agxq_close(good);
	if (du_stop(&daemon_) != 0)
		rc = -1;
	du_cleanup(&daemon_);
	return rc != 0 ? 1 : 0;
}
