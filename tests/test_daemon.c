/*
 * test_daemon: the real agxqd on a private socket. The command line (start,
 * stop, status, stale sockets, socket mode), SIGTERM with requests in
 * flight, 8 threads and 4 processes against all three reference models
 * checked against direct mode, clients that vanish with requests in flight,
 * model sharing, settings in the environment that are logged as unused, and
 * the stats of where a request's time goes.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agxq.h"
#include "agxq_direct.h"
#include "daemon_util.h"
#include "testlib.h"

#define TOL 1e-4

/* Returns the permission bits of path, or -1. */
static int
file_mode(const char *path)
{
	struct stat sb;

	if (stat(path, &sb) != 0 || !S_ISSOCK(sb.st_mode))
		return -1;
	return (int)(sb.st_mode & 0777);
}

/* start returns once the socket accepts; second start; status; stop. */
static void
t_cli_basic(void)
{
	struct du_daemon d;
	char out[8192];
	int fd, rc;

	memset(&d, 0, sizeof d);
	CHECK(du_init(&d) == 0);
	{
		const char *a[] = { "start", "--socket", d.sock, NULL };

		rc = du_run(a, 20000, out, sizeof out);
		CHECK(rc == 0);
	}
	/* Connect immediately: start must only return once it accepts. */
	CHECK((fd = du_connect(d.sock)) >= 0);
	close(fd);
	CHECK((d.pid = du_daemon_pid(d.sock)) > 0);
	CHECK(file_mode(d.sock) == 0600);
	{
		const char *a[] = { "start", "--socket", d.sock, NULL };

		rc = du_run(a, 20000, out, sizeof out);
		CHECK(rc != 0);
		CHECK(strstr(out, "already running") != NULL);
		CHECK(du_alive(d.pid));
	}
	{
		const char *a[] = { "status", "--socket", d.sock, NULL };

		CHECK(du_run(a, 10000, out, sizeof out) == 0);
		CHECK(strstr(out, "cpu") != NULL);
	}
	{
		const char *a[] = { "status", "--socket", d.sock, "--json",
		    NULL };

		CHECK(du_run(a, 10000, out, sizeof out) == 0);
		CHECK(strstr(out, "\"backend\": \"cpu\"") != NULL);
		CHECK(du_json_num(out, "pid") == (long long)d.pid);
	}
	{
		const char *a[] = { "stop", "--socket", d.sock, NULL };

		CHECK(du_run(a, 15000, out, sizeof out) == 0);
		CHECK(du_wait_gone(d.pid, 10000) == 0);
		CHECK(access(d.sock, F_OK) != 0 && errno == ENOENT);
	}
	{
		const char *a[] = { "status", "--socket", d.sock, NULL };

		CHECK(du_run(a, 10000, out, sizeof out) != 0);
	}
out:
	du_cleanup(&d);
}

/*
 * --version, unknown options and commands, and option values refused:
 * each command's exit status and a phrase its output must hold.
 */
static void
t_cli_usage(void)
{
	static const struct {
		const char *argv[4];
		int status;
		const char *says;
	} runs[] = {
		{ { "--version" }, 0, AGXQ_VERSION },
		{ { "start", "--no-such-option" }, 2, "usage" },
		{ { "frobnicate" }, 2, "unknown command" },
		{ { "start", "--max-batch", "0" }, 2, "max-batch" },
		{ { "start", "--max-restarts", "999" }, 2,
		    "bad value for --max-restarts" },
		{ { "start", "--stall-ms", "86400001" }, 2,
		    "bad value for --stall-ms" },
		{ { "start", "--stall-ms", "1s" }, 2, "bad value for --stall-ms" },
		{ { "start", "--stall-ms", "99" }, 2,
		    "--stall-ms must be 0 (never) or 100 to 86400000" },
		{ { "start", "--backend", "abacus" }, 2, "unknown backend" },
	};
	char out[4096];
	int rc;

	for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
		rc = du_run(runs[i].argv, 10000, out, sizeof out);
		if (rc != runs[i].status || strstr(out, runs[i].says) == NULL) {
			printf("  agxqd %s %s %s: status %d, wanted %d and "
			    "\"%s\" in: %s\n", runs[i].argv[0],
			    runs[i].argv[1] != NULL ? runs[i].argv[1] : "",
			    runs[i].argv[2] != NULL ? runs[i].argv[2] : "", rc,
			    runs[i].status, runs[i].says, out);
			testlib_failed = 1;
		}
	}
}

/* --socket-mode 0660. */
static void
t_cli_socket_mode(void)
{
	static const char *const extra[] = { "--socket-mode", "0660", NULL };
	struct du_daemon d;

	memset(&d, 0, sizeof d);
	CHECK(du_start(&d, extra) == 0);
	CHECK(file_mode(d.sock) == 0660);
	CHECK(du_stop(&d) == 0);
out:
	du_cleanup(&d);
}

/* A socket left by a dead process (bound, never unlinked) is removed. */
static void
t_cli_stale_socket(void)
{
	struct du_daemon d;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char out[2048];
	pid_t pid, worker;
	int status, fd;

	memset(&d, 0, sizeof d);
	CHECK(du_init(&d) == 0);
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", d.sock);
	if ((pid = fork()) == 0) {
		int s = socket(AF_UNIX, SOCK_STREAM, 0);

		if (s < 0 || bind(s, (struct sockaddr *)&sun, sizeof sun) != 0 ||
		    listen(s, 1) != 0)
			_exit(1);
		_exit(0);
	}
	CHECK(pid > 0);
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 0);
	CHECK(file_mode(d.sock) >= 0);
	{
		const char *a[] = { "start", "--socket", d.sock, NULL };

		CHECK(du_run(a, 20000, out, sizeof out) == 0);
	}
	CHECK((d.pid = du_daemon_pid(d.sock)) > 0);
	CHECK((worker = du_worker_pid(d.sock)) > 0);

	/*
	 * kill -9: socket and lock file stay behind; start again. The worker
	 * dies with its supervisor, a moment later.
	 */
	kill(d.pid, SIGKILL);
	CHECK(du_wait_gone(d.pid, 5000) == 0);
	CHECK(du_wait_gone(worker, 5000) == 0);
	CHECK(file_mode(d.sock) >= 0);
	CHECK((fd = du_connect(d.sock)) < 0);
	{
		const char *a[] = { "start", "--socket", d.sock, NULL };

		CHECK(du_run(a, 20000, out, sizeof out) == 0);
	}
	CHECK((d.pid = du_daemon_pid(d.sock)) > 0);
	CHECK(du_stop(&d) == 0);
out:
	du_cleanup(&d);
}

/*
 * --backend cuda on a machine without an NVIDIA GPU: start fails at once
 * and says why (no GPU; or, built without cuda, the backends it has),
 * leaving no daemon and no socket. Skipped where a GPU is.
 */
static void
t_cli_cuda_no_gpu(void)
{
	struct du_daemon d;
	char out[2048];
	int rc;

	memset(&d, 0, sizeof d);
	if (access("/dev/nvidiactl", F_OK) == 0) {
		printf("  skipped: this machine has an NVIDIA GPU\n");
		return;
	}
	CHECK(du_init(&d) == 0);
	{
		const char *a[] = { "start", "--socket", d.sock, "--backend",
		    "cuda", NULL };

		rc = du_run(a, 20000, out, sizeof out);
	}
	if (strstr(out, "unknown backend cuda (built with: cpu") != NULL)
		CHECK(rc == 2);
	else {
		if (strstr(out, "no usable NVIDIA GPU") == NULL ||
		    strstr(out, "--backend cpu") == NULL)
			printf("  start --backend cuda said: %s\n", out);
		CHECK(rc == 1);
		CHECK(strstr(out, "no usable NVIDIA GPU") != NULL);
		CHECK(strstr(out, "--backend cpu") != NULL);
	}
	CHECK(access(d.sock, F_OK) != 0 && errno == ENOENT);
	CHECK(du_daemon_pid(d.sock) < 0);
out:
	du_cleanup(&d);
}

/* SIGTERM with requests queued: every callback fires once; clean exit. */
static void
t_sigterm_inflight(void)
{
	static const char *const extra[] = { "--max-batch", "1", NULL };
	enum { N = 64 };
	struct du_daemon d;
	struct du_track t;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_tensor in;
	float *data = NULL;
	int other;

	memset(&d, 0, sizeof d);
	memset(&t, 0, sizeof t);
	CHECK(du_track_init(&t, N, TOL, TOL) == 0);
	CHECK(du_start(&d, extra) == 0);
	CHECK(agxq_connect(d.sock, &c) == 0);
	CHECK(du_load_ref(c, NULL, AGXQ_REF_TRANSFORMER, 42, &m, NULL) == 0);
	CHECK(agxq_reference_input_shape(AGXQ_REF_TRANSFORMER, 4, &in) == 0);
	CHECK((data = malloc(agxq_tensor_nelem(&in) * sizeof *data)) != NULL);
	agxq_reference_weights(7, 1.0f, data, agxq_tensor_nelem(&in));
	in.data = data;
	for (int i = 0; i < N; i++) {
		CHECK_OK(agxq_infer_async(m, &in, 1, NULL, du_track_cb,
		    du_track_arg(&t, i, NULL)));
	}
	CHECK(kill(d.pid, SIGTERM) == 0);
	CHECK(du_track_wait(&t, N, 15000) == 0);
	CHECK(t.dup == 0);
	other = t.done - t.ok - t.count[-AGXQ_ESHUTDOWN] -
	    t.count[-AGXQ_EDISCONNECTED];
	if (other != 0)
		printf("  %d callbacks with an unexpected status\n", other);
	CHECK(other == 0);
	CHECK(t.ok < N); /* some were cut short: the test saw a shutdown */
	CHECK(du_wait_gone(d.pid, 10000) == 0);
	CHECK(access(d.sock, F_OK) != 0);
out:
	agxq_model_unload(m);
	agxq_close(c); /* fires any callbacks still pending */
	free(data);
	du_track_free(&t);
	du_cleanup(&d);
}

/* ---- Integration: threads and processes, three models -------------------- */

#define IO_PER_MODEL 12
#define IO_TRANSFORMER 3

struct world {
	const char *sock;
	struct du_io io[3][IO_PER_MODEL];
	int nio[3];
};

struct worker {
	struct world *w;
	agxq_client *c;          /* shared, or NULL: connect a fresh one */
	agxq_model *m[3];
	int id;
	int nreq;
	int errors;
	int checked;
};

/* The model of request i of worker id: transformer rarely. */
static int
pick_model(int id, int i)
{
	if ((i + id) % 16 == 5)
		return 2;
	return (i + id) % 2;
}

/* Runs one worker's interleaved requests: sync and async in turn. */
static void *
worker_main(void *arg)
{
	struct worker *wk = arg;
	struct world *w = wk->w;
	struct du_track t;
	int nasync = 0;

	if (du_track_init(&t, wk->nreq, TOL, TOL) != 0) {
		wk->errors++;
		return NULL;
	}
	for (int i = 0; i < wk->nreq; i++) {
		int k = pick_model(wk->id, i);
		const struct du_io *io = &w->io[k][(i * 7 + wk->id) % w->nio[k]];
		agxq_result *r = NULL;
		int rc;

		if (i % 3 == 0) {
			rc = agxq_infer(wk->m[k], &io->in, 1, NULL, &r);
			if (rc != 0 || du_io_check(io, r, TOL, TOL) != 0) {
				if (rc != 0)
					printf("  worker %d: %s\n", wk->id,
					    agxq_strerror(rc));
				wk->errors++;
			}
			agxq_result_free(r);
			wk->checked++;
			continue;
		}
		rc = agxq_infer_async(wk->m[k], &io->in, 1, NULL, du_track_cb,
		    du_track_arg(&t, nasync, io));
		if (rc != 0) {
			printf("  worker %d: async: %s\n", wk->id,
			    agxq_strerror(rc));
			wk->errors++;
			continue;
		}
		nasync++;
	}
	if (du_track_wait(&t, nasync, 20000) != 0)
		wk->errors++;
	else {
		wk->errors += t.mismatch + (t.done - t.ok) + t.dup;
		if (t.done != t.ok)
			printf("  worker %d: %d async requests failed\n",
			    wk->id, t.done - t.ok);
		wk->checked += t.ok;
	}
	du_track_free(&t);
	return NULL;
}

/* A child process: its own client and models, then a worker. */
static int
child_main(struct world *w, int id)
{
	struct worker wk;
	int rc = 1;

	memset(&wk, 0, sizeof wk);
	wk.w = w;
	wk.id = id;
	wk.nreq = 48;
	if (agxq_connect(w->sock, &wk.c) != 0)
		return 1;
	for (int k = 0; k < 3; k++) {
		if (du_load_ref(wk.c, NULL, (agxq_reference)(k + 1), 42,
		    &wk.m[k],
		    NULL) != 0)
			goto out;
	}
	worker_main(&wk);
	rc = wk.errors != 0 || wk.checked != wk.nreq;
out:
	for (int k = 0; k < 3; k++)
		agxq_model_unload(wk.m[k]);
	agxq_close(wk.c);
	return rc;
}

/* Makes every model's inputs and expected outputs in direct mode. */
static int
world_make(struct world *w, const char *sock)
{
	agxq_direct *d = NULL;
	agxq_direct_model *dm[3] = { NULL, NULL, NULL };
	int rc = -1;

	memset(w, 0, sizeof *w);
	w->sock = sock;
	if (agxq_direct_open("cpu", 0, &d) != 0)
		return -1;
	for (int k = 0; k < 3; k++) {
		if (du_load_ref(NULL, d, (agxq_reference)(k + 1), 42, NULL,
		    &dm[k]) != 0)
			goto out;
		w->nio[k] = k == 2 ? IO_TRANSFORMER : IO_PER_MODEL;
		for (int i = 0; i < w->nio[k]; i++) {
			if (du_io_make(&w->io[k][i], (agxq_reference)(k + 1),
			    1 + i % 4, k == 2 ? 8 + 4 * i : 0,
			    (uint64_t)(1000 + 100 * k + i), dm[k]) != 0)
				goto out;
		}
	}
	rc = 0;
out:
	for (int k = 0; k < 3; k++)
		agxq_direct_unload(dm[k]);
	agxq_direct_close(d);
	return rc;
}

/* Frees the world's inputs. */
static void
world_free(struct world *w)
{
	for (int k = 0; k < 3; k++)
		for (int i = 0; i < IO_PER_MODEL; i++)
			du_io_free(&w->io[k][i]);
}

/* 8 threads sharing one client and 4 processes, all three models. */
static void
t_threads_and_processes(void)
{
	enum { NTHREADS = 8, NPROCS = 4 };
	struct du_daemon d;
	struct world w;
	struct worker wk[NTHREADS];
	pthread_t th[NTHREADS];
	pid_t kids[NPROCS];
	agxq_client *c = NULL;
	agxq_model *m[3] = { NULL, NULL, NULL };
	int nth = 0, nkids = 0, status, errors = 0, checked = 0;
	char *json = NULL;

	memset(&d, 0, sizeof d);
	memset(&w, 0, sizeof w);
	CHECK(du_start(&d, NULL) == 0);
	CHECK(world_make(&w, d.sock) == 0);
	/* Fork before this process has a client or reader thread. */
	fflush(stdout);
	for (int p = 0; p < NPROCS; p++) {
		pid_t pid = fork();

		if (pid == 0)
			_exit(child_main(&w, 100 + p));
		CHECK(pid > 0);
		kids[nkids++] = pid;
	}
	CHECK(agxq_connect(d.sock, &c) == 0);
	CHECK(strcmp(agxq_server_backend(c), "cpu") == 0);
	for (int k = 0; k < 3; k++)
		CHECK(du_load_ref(c, NULL, (agxq_reference)(k + 1), 42, &m[k],
		    NULL) == 0);
	for (int i = 0; i < NTHREADS; i++) {
		memset(&wk[i], 0, sizeof wk[i]);
		wk[i].w = &w;
		wk[i].c = c;
		memcpy(wk[i].m, m, sizeof m);
		wk[i].id = i;
		wk[i].nreq = 48;
		CHECK(pthread_create(&th[i], NULL, worker_main, &wk[i]) == 0);
		nth++;
	}
out:
	for (int i = 0; i < nth; i++) {
		pthread_join(th[i], NULL);
		errors += wk[i].errors;
		checked += wk[i].checked;
	}
	for (int p = 0; p < nkids; p++) {
		if (waitpid(kids[p], &status, 0) != kids[p] ||
		    !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			printf("  %s: child process %d failed\n",
			    testlib_current, p);
			testlib_failed = 1;
		}
	}
	if (nth == NTHREADS) {
		if (errors != 0 || checked != NTHREADS * 48) {
			printf("  %s: %d errors, %d of %d results checked\n",
			    testlib_current, errors, checked, NTHREADS * 48);
			testlib_failed = 1;
		}
	}
	if (c != NULL && agxq_stats_json(c, &json) == 0) {
		if (du_json_num(json, "backend_foreign_calls") != 0) {
			printf("  %s: backend calls off the executor thread\n",
			    testlib_current);
			testlib_failed = 1;
		}
		free(json);
	}
	for (int k = 0; k < 3; k++)
		agxq_model_unload(m[k]);
	agxq_close(c);
	if (d.pid > 0 && du_stop(&d) != 0)
		testlib_failed = 1;
	du_cleanup(&d);
	world_free(&w);
}

/* Clients vanish with requests in flight; the daemon keeps serving. */
static void
t_disconnect_inflight(void)
{
	enum { N = 200 };
	struct du_daemon d;
	struct world w;
	struct du_track t;
	agxq_client *c = NULL, *c2 = NULL;
	agxq_model *m = NULL, *m2 = NULL;
	agxq_result *r = NULL;
	char out[8192];
	pid_t pid;
	int status;

	memset(&d, 0, sizeof d);
	memset(&w, 0, sizeof w);
	memset(&t, 0, sizeof t);
	CHECK(du_start(&d, NULL) == 0);
	CHECK(world_make(&w, d.sock) == 0);
	CHECK(du_track_init(&t, N, TOL, TOL) == 0);

	/* A child sends 200 requests and exits without closing. */
	fflush(stdout);
	if ((pid = fork()) == 0) {
		agxq_client *cc;
		agxq_model *cm;

		if (agxq_connect(d.sock, &cc) != 0 ||
		    du_load_ref(cc, NULL, AGXQ_REF_MLP, 42, &cm, NULL) != 0)
			_exit(1);
		for (int i = 0; i < N; i++)
			if (agxq_infer_async(cm, &w.io[1][i % IO_PER_MODEL].in,
			    1, NULL, du_track_cb, du_track_arg(&t, i,
			    NULL)) != 0)
				_exit(1);
		_exit(0);
	}
	CHECK(pid > 0);
	CHECK(agxq_connect(d.sock, &c) == 0);
	CHECK(du_load_ref(c, NULL, AGXQ_REF_MLP, 42, &m, NULL) == 0);
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 0);
	CHECK(agxq_infer(m, &w.io[1][0].in, 1, NULL, &r) == 0);
	CHECK(du_io_check(&w.io[1][0], r, TOL, TOL) == 0);
	agxq_result_free(r);
	r = NULL;

	/* In this process: 200 transformer requests, then agxq_close. */
	CHECK(agxq_connect(d.sock, &c2) == 0);
	CHECK(du_load_ref(c2, NULL, AGXQ_REF_TRANSFORMER, 42, &m2, NULL) == 0);
	for (int i = 0; i < N; i++) {
		CHECK_OK(agxq_infer_async(m2, &w.io[2][i % IO_TRANSFORMER].in, 1,
		    NULL, du_track_cb, du_track_arg(&t, i,
		    &w.io[2][i % IO_TRANSFORMER])));
	}
	/* The unload reply comes at once; the requests stay in flight. */
	agxq_model_unload(m2);
	m2 = NULL;
	agxq_close(c2);
	c2 = NULL;
	/* Every callback fired before agxq_close returned. */
	CHECK(t.done == N);
	CHECK(t.dup == 0 && t.mismatch == 0);
	CHECK(t.ok + t.count[-AGXQ_EDISCONNECTED] == N);

	for (int i = 0; i < IO_PER_MODEL; i++) {
		CHECK(agxq_infer(m, &w.io[1][i].in, 1, NULL, &r) == 0);
		CHECK(du_io_check(&w.io[1][i], r, TOL, TOL) == 0);
		agxq_result_free(r);
		r = NULL;
	}
	{
		const char *a[] = { "status", "--socket", d.sock, "--json",
		    NULL };

		CHECK(du_run(a, 10000, out, sizeof out) == 0);
		CHECK(du_json_num(out, "backend_foreign_calls") == 0);
		CHECK(du_json_num(out, "backend_calls") > 0);
	}
out:
	agxq_result_free(r);
	agxq_model_unload(m2);
	agxq_close(c2); /* fires any callbacks still pending */
	agxq_model_unload(m);
	agxq_close(c);
	if (d.pid > 0 && du_stop(&d) != 0)
		testlib_failed = 1;
	du_cleanup(&d);
	du_track_free(&t);
	world_free(&w);
}

/* Two clients loading the same model share it; unloading both frees it. */
static void
t_shared_models(void)
{
	struct du_daemon d;
	agxq_client *a = NULL, *b = NULL;
	agxq_model *ma = NULL, *mb = NULL, *mc = NULL;
	char *json = NULL;

	memset(&d, 0, sizeof d);
	CHECK(du_start(&d, NULL) == 0);
	CHECK(agxq_connect(d.sock, &a) == 0);
	CHECK(agxq_connect(d.sock, &b) == 0);
	CHECK(du_load_ref(a, NULL, AGXQ_REF_MLP, 42, &ma, NULL) == 0);
	CHECK(du_load_ref(b, NULL, AGXQ_REF_MLP, 42, &mb, NULL) == 0);
	CHECK(agxq_stats_json(a, &json) == 0);
	CHECK(du_count(json, "\"model_id\"") == 1);
	CHECK(du_json_num(json, "refs") == 2);
	free(json);
	json = NULL;

	/* A different seed is a different model. */
	{
		agxq_graph *g = NULL;

		CHECK(agxq_reference_build(AGXQ_REF_MLP, 43, &g) == 0);
		if (agxq_model_load(b, g, "mlp43", &mc) != 0)
			mc = NULL;
		agxq_graph_free(g);
		CHECK(mc != NULL);
	}
	CHECK(agxq_stats_json(a, &json) == 0);
	CHECK(du_count(json, "\"model_id\"") == 2);
	free(json);
	json = NULL;

	CHECK(agxq_model_unload(ma) == 0);
	ma = NULL;
	CHECK(agxq_stats_json(a, &json) == 0);
	CHECK(du_count(json, "\"model_id\"") == 2);
	CHECK(strstr(json, "\"refs\": 1") != NULL);
	CHECK(strstr(json, "\"refs\": 2") == NULL);
	free(json);
	json = NULL;
	CHECK(agxq_model_unload(mb) == 0);
	mb = NULL;
	CHECK(agxq_model_unload(mc) == 0);
	mc = NULL;
	CHECK(agxq_stats_json(a, &json) == 0);
	CHECK(du_count(json, "\"model_id\"") == 0);
out:
	free(json);
	agxq_model_unload(ma);
	agxq_model_unload(mb);
	agxq_model_unload(mc);
	agxq_close(a);
	agxq_close(b);
	if (d.pid > 0 && du_stop(&d) != 0)
		testlib_failed = 1;
	du_cleanup(&d);
}

/*
 * Closing a client with model handles still open frees the handles and the
 * daemon releases the models (leaks would show under ASan in CI).
 */
static void
t_close_with_models(void)
{
	struct du_daemon d;
	agxq_client *a = NULL, *b = NULL;
	agxq_model *ma = NULL, *mb = NULL;
	char *json = NULL;

	memset(&d, 0, sizeof d);
	CHECK(du_start(&d, NULL) == 0);
	CHECK(agxq_connect(d.sock, &a) == 0);
	CHECK(agxq_connect(d.sock, &b) == 0);
	if (a == NULL || b == NULL)
		goto out;
	CHECK(du_load_ref(a, NULL, AGXQ_REF_LINEAR, 42, &ma, NULL) == 0);
	CHECK(du_load_ref(a, NULL, AGXQ_REF_MLP, 42, &mb, NULL) == 0);
	agxq_close(a);
	a = NULL;
	/* The daemon notices the close on its next loop turn. */
	for (int i = 0; i < 100; i++) {
		free(json);
		json = NULL;
		CHECK(agxq_stats_json(b, &json) == 0);
		if (json == NULL || du_count(json, "\"model_id\"") == 0)
			break;
		usleep(10000);
	}
	CHECK(json != NULL && du_count(json, "\"model_id\"") == 0);
out:
	free(json);
	agxq_close(a);
	agxq_close(b);
	if (d.pid > 0 && du_stop(&d) != 0)
		testlib_failed = 1;
	du_cleanup(&d);
}

/*
 * The polling paths (agxqd --spin-us, AGXQ_SPIN_US in the client) are on by
 * default only on machines with more than 4 cores: force them here so they
 * run in CI too (and under TSan), with every result checked.
 */
static void
t_spin_paths(void)
{
	static const char *const extra[] = { "--spin-us", "200", NULL };
	enum { N = 60 };
	struct du_daemon d;
	struct du_io io[N];
	struct du_track t;
	agxq_direct *dh = NULL;
	agxq_direct_model *dm = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_result *r = NULL;

	memset(&d, 0, sizeof d);
	memset(io, 0, sizeof io);
	memset(&t, 0, sizeof t);
	setenv("AGXQ_SPIN_US", "200", 1);
	CHECK(du_start(&d, extra) == 0);
	CHECK(agxq_direct_open("cpu", 0, &dh) == 0);
	CHECK(du_load_ref(NULL, dh, AGXQ_REF_MLP, 42, NULL, &dm) == 0);
	CHECK(agxq_connect(d.sock, &c) == 0);
	CHECK(du_load_ref(c, NULL, AGXQ_REF_MLP, 42, &m, NULL) == 0);
	for (int i = 0; i < N; i++)
		CHECK(du_io_make(&io[i], AGXQ_REF_MLP, 4, 0, 900 + (uint64_t)i,
		    dm) == 0);
	/* Synchronous: the client polls for each reply. */
	for (int i = 0; i < N; i++) {
		CHECK(agxq_infer(m, &io[i].in, 1, NULL, &r) == 0);
		CHECK(du_io_check(&io[i], r, 1e-4, 1e-5) == 0);
		agxq_result_free(r);
		r = NULL;
	}
	/* Asynchronous bursts: the executor polls between them. */
	CHECK(du_track_init(&t, N, 1e-4, 1e-5) == 0);
	for (int i = 0; i < N; i++) {
		CHECK(agxq_infer_async(m, &io[i].in, 1, NULL, du_track_cb,
		    du_track_arg(&t, i, &io[i])) == 0);
		if (i % 10 == 9)
			usleep(300);
	}
	CHECK(du_track_wait(&t, N, 20000) == 0);
	CHECK(t.ok == N && t.mismatch == 0 && t.dup == 0);
out:
	unsetenv("AGXQ_SPIN_US");
	agxq_result_free(r);
	agxq_model_unload(m);
	agxq_close(c);
	du_track_free(&t);
	for (int i = 0; i < N; i++)
		du_io_free(&io[i]);
	agxq_direct_unload(dm);
	agxq_direct_close(dh);
	if (d.pid > 0 && du_stop(&d) != 0)
		testlib_failed = 1;
	du_cleanup(&d);
}

/*
 * Settings in the environment that agxqd cannot use as given are logged as
 * warnings naming them, and the daemon runs with the defaults: a word that
 * is not a fault kind, a lane count that is no number, and a misspelt
 * variable with the cpu backend's prefix. A valid one is not mentioned.
 */
static void
t_env_settings(void)
{
	static const char *const vars[][2] = {
	    { "AGXQ_CPU_FAULT_KIND", "bogus" }, { "AGXQ_LANES", "two" },
	    { "AGXQ_CPU_FAULT_EVRY", "3" }, { "AGXQ_CPU_FAULT_EVERY", "0" } };
	struct du_daemon d;
	char *text = NULL;
	int rc;

	memset(&d, 0, sizeof d);
	d.pid = -1;
	for (size_t i = 0; i < TESTLIB_N(vars); i++)
		setenv(vars[i][0], vars[i][1], 1);
	rc = du_start(&d, NULL);
	for (size_t i = 0; i < TESTLIB_N(vars); i++)
		unsetenv(vars[i][0]);
	CHECK(rc == 0);
	CHECK(du_log_has(&d, "AGXQ_CPU_FAULT_KIND=\"bogus\" is not one of "
	    "error, lost, sticky, hang: using error", 5000));
	CHECK(du_log_has(&d, "AGXQ_LANES=\"two\" is not a whole number", 1000));
	CHECK(du_log_has(&d, "AGXQ_CPU_FAULT_EVRY is set but is no setting",
	    1000));
	CHECK((text = du_log(&d)) != NULL);
	CHECK(strstr(text, "AGXQ_CPU_FAULT_EVERY") == NULL);
	CHECK(du_stop(&d) == 0);
out:
	free(text);
	du_cleanup(&d);
}

/*
 * AGXQ_WARM=1 (for the cpu backend, which does not warm by default):
 * loading a model of fixed sample shapes (mlp) runs a pass at each
 * power-of-two batch up to --max-batch (1, 2, 4, 8, 16 and 20 for 20),
 * logged; one with an open dimension (the transformer's sequence) is not
 * warmed; requests are right throughout. A value that is no 0 or 1 is a warning,
 * and the backend's default (cpu: none) stands.
 */
static void
t_warm_at_load(void)
{
	static const char *const extra[] = { "--max-batch", "20", NULL };
	struct du_daemon d;
	struct du_io io, t8, t4;
	agxq_direct *dh = NULL;
	agxq_direct_model *dm = NULL, *dt = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL, *mt = NULL;
	agxq_result *r = NULL;
	char *text = NULL;
	const char *p;
	int rc, n;

	memset(&d, 0, sizeof d);
	memset(&io, 0, sizeof io);
	memset(&t8, 0, sizeof t8);
	memset(&t4, 0, sizeof t4);
	d.pid = -1;
	/* The direct engine warms on AGXQ_WARM=1 too: results stay right. */
	setenv("AGXQ_WARM", "1", 1);
	rc = agxq_direct_open("cpu", 0, &dh);
	CHECK(rc == 0);
	CHECK(du_load_ref(NULL, dh, AGXQ_REF_MLP, 7, NULL, &dm) == 0);
	CHECK(du_load_ref(NULL, dh, AGXQ_REF_TRANSFORMER, 7, NULL, &dt) == 0);
	CHECK(du_io_make(&io, AGXQ_REF_MLP, 3, 0, 8, dm) == 0);
	CHECK(du_io_make(&t8, AGXQ_REF_TRANSFORMER, 2, 8, 9, dt) == 0);
	CHECK(du_io_make(&t4, AGXQ_REF_TRANSFORMER, 3, 4, 10, dt) == 0);
	rc = du_start(&d, extra);
	unsetenv("AGXQ_WARM");
	CHECK(rc == 0);
	CHECK(agxq_connect(d.sock, &c) == 0);
	CHECK(du_load_ref(c, NULL, AGXQ_REF_MLP, 7, &m, NULL) == 0);
	CHECK(du_log_has(&d, "warmed at load at batches up to 20: 6 passes",
	    5000));
	CHECK(agxq_infer(m, &io.in, 1, NULL, &r) == 0);
	CHECK(du_io_check(&io, r, TOL, TOL) == 0);
	agxq_result_free(r);
	r = NULL;
	CHECK(du_load_ref(c, NULL, AGXQ_REF_TRANSFORMER, 7, &mt, NULL) == 0);
	for (int i = 0; i < 3; i++) {
		const struct du_io *t = i == 1 ? &t4 : &t8;

		CHECK(agxq_infer(mt, &t->in, 1, NULL, &r) == 0);
		CHECK(du_io_check(t, r, TOL, TOL) == 0);
		agxq_result_free(r);
		r = NULL;
	}
	CHECK((text = du_log(&d)) != NULL);
	for (n = 0, p = strstr(text, ": warmed"); p != NULL;
	    p = strstr(p + 1, ": warmed"))
		n++;
	if (n != 1)
		printf("  %d warm-ups logged, not 1:\n%s", n, text);
	CHECK(n == 1);
	free(text);
	text = NULL;
	agxq_model_unload(mt);
	mt = NULL;
	agxq_model_unload(m);
	m = NULL;
	agxq_close(c);
	c = NULL;
	CHECK(du_stop(&d) == 0);
	du_cleanup(&d);

	memset(&d, 0, sizeof d);
	d.pid = -1;
	setenv("AGXQ_WARM", "yes", 1);
	rc = du_start(&d, extra);
	unsetenv("AGXQ_WARM");
	CHECK(rc == 0);
	CHECK(du_log_has(&d, "AGXQ_WARM=\"yes\" is not one of 0, 1", 5000));
	CHECK(agxq_connect(d.sock, &c) == 0);
	CHECK(du_load_ref(c, NULL, AGXQ_REF_MLP, 7, &m, NULL) == 0);
	CHECK(agxq_infer(m, &io.in, 1, NULL, &r) == 0);
	CHECK(du_io_check(&io, r, TOL, TOL) == 0);
	CHECK((text = du_log(&d)) != NULL);
	CHECK(strstr(text, "warmed") == NULL);
	CHECK(du_stop(&d) == 0);
out:
	unsetenv("AGXQ_WARM");
	free(text);
	agxq_result_free(r);
	agxq_model_unload(mt);
	agxq_model_unload(m);
	agxq_close(c);
	du_io_free(&io);
	du_io_free(&t8);
	du_io_free(&t4);
	agxq_direct_unload(dm);
	agxq_direct_unload(dt);
	agxq_direct_close(dh);
	du_cleanup(&d);
}

/*
 * Stats say where a request's time goes: after 60 mlp requests on the cpu
 * backend (which computes while the executor stages the batch), stage is
 * above 0 and within exec, every p99 is at least its p50, and `agxqd
 * status` prints the breakdown.
 */
static void
t_stage_times(void)
{
	static const char *const keys[] = { "in", "queue", "stage", "device",
	    "reply", "exec" };
	static float x[4 * 256];
	struct du_daemon d;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_result *r = NULL;
	agxq_tensor t;
	char *json = NULL, key[32], out[8192];
	long long p50, p99;

	memset(&d, 0, sizeof d);
	d.pid = -1;
	CHECK(agxq_reference_input_shape(AGXQ_REF_MLP, 4, &t) == 0);
	CHECK(agxq_tensor_nelem(&t) == 4 * 256);
	agxq_reference_weights(7, 1.0f, x, 4 * 256);
	t.data = x;
	CHECK(du_start(&d, NULL) == 0);
	CHECK(agxq_connect(d.sock, &c) == 0);
	CHECK(du_load_ref(c, NULL, AGXQ_REF_MLP, 42, &m, NULL) == 0);
	for (int i = 0; i < 60; i++) {
		CHECK(agxq_infer(m, &t, 1, NULL, &r) == 0);
		agxq_result_free(r);
		r = NULL;
	}
	CHECK(agxq_stats_json(c, &json) == 0);
	for (size_t k = 0; k < TESTLIB_N(keys); k++) {
		snprintf(key, sizeof key, "%s_p50_us", keys[k]);
		p50 = du_json_num(json, key);
		snprintf(key, sizeof key, "%s_p99_us", keys[k]);
		p99 = du_json_num(json, key);
		printf("  %s: p50 %lld us, p99 %lld us\n", keys[k], p50, p99);
		CHECK(p50 >= 0 && p99 >= p50);
	}
	CHECK(du_json_num(json, "stage_p50_us") > 0);
	CHECK(du_json_num(json, "stage_p50_us") <=
	    du_json_num(json, "exec_p50_us"));
	{
		const char *a[] = { "status", "--socket", d.sock, NULL };

		CHECK(du_run(a, 10000, out, sizeof out) == 0);
		CHECK(strstr(out, "where the time goes") != NULL);
	}
out:
	free(json);
	agxq_result_free(r);
	agxq_model_unload(m);
	agxq_close(c);
	if (d.pid > 0 && du_stop(&d) != 0)
		testlib_failed = 1;
	du_cleanup(&d);
}

static const struct testlib_case cases[] = {
	{ "cli_basic", t_cli_basic },
	{ "cli_usage", t_cli_usage },
	{ "cli_socket_mode", t_cli_socket_mode },
	{ "cli_stale_socket", t_cli_stale_socket },
	{ "cli_cuda_no_gpu", t_cli_cuda_no_gpu },
	{ "sigterm_inflight", t_sigterm_inflight },
	{ "threads_and_processes", t_threads_and_processes },
	{ "disconnect_inflight", t_disconnect_inflight },
	{ "shared_models", t_shared_models },
	{ "close_with_models", t_close_with_models },
	{ "spin_paths", t_spin_paths },
	{ "env_settings", t_env_settings },
	{ "warm_at_load", t_warm_at_load },
	{ "stage_times", t_stage_times },
};

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	du_watchdog(110);
	return testlib_run(cases, TESTLIB_N(cases), argc, argv);
}
