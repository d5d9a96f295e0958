/*
 * test_access: who may connect. The socket is created 0600 by default; a
 * peer of another user is refused at accept (peer credentials) unless
 * --allow-uid or --allow-gid lists it, and models are shared only between
 * peers of the same user unless --share-models-across-users. Needs root to
 * act as another user; prints "skipped" for those cases otherwise.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agxq.h"
#include "daemon_util.h"
#include "testlib.h"

#define NOBODY 65534

/*
 * In a child running as uid NOBODY: connects to sock and returns the
 * agxq_connect result (0 or AGXQ_E*), or 100 when the child failed.
 */
static int
connect_as_nobody(const char *sock)
{
	pid_t pid;
	int status;

	if ((pid = fork()) == 0) {
		agxq_client *c;
		int rc;

		if (setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
			_exit(100);
		rc = agxq_connect(sock, &c);
		if (rc == 0)
			agxq_close(c);
		_exit(-rc);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return 100;
	return WEXITSTATUS(status) == 100 ? 100 : -WEXITSTATUS(status);
}

/* The socket is 0600 unless --socket-mode says otherwise. */
static void
case_socket_mode(void)
{
	static const char *const extra[] = { "--socket-mode", "0660", NULL };
	struct du_daemon d;
	struct stat sb;

	memset(&d, 0, sizeof d);
	EXPECT(du_start(&d, NULL) == 0);
	EXPECT(stat(d.sock, &sb) == 0 && (sb.st_mode & 0777) == 0600);
	EXPECT(du_stop(&d) == 0);
	du_cleanup(&d);
	memset(&d, 0, sizeof d);
	EXPECT(du_start(&d, extra) == 0);
	EXPECT(stat(d.sock, &sb) == 0 && (sb.st_mode & 0777) == 0660);
	EXPECT(du_stop(&d) == 0);
	du_cleanup(&d);
}

/* Another user is refused with AGXQ_EPERM, and allowed once listed. */
static void
case_allow_uid(void)
{
	static const char *const open_mode[] = { "--socket-mode", "0666", NULL };
	static const char *const allowed[] = { "--socket-mode", "0666",
	    "--allow-uid", "65534", NULL };
	static const char *const allowed_gid[] = { "--socket-mode", "0666",
	    "--allow-gid", "65534", NULL };
	struct du_daemon d;
	agxq_client *c;

	if (geteuid() != 0) {
		printf("  skipped: needs root to connect as another user\n");
		return;
	}
	memset(&d, 0, sizeof d);
	EXPECT(du_start(&d, open_mode) == 0);
	chmod(d.dir, 0711);
	EXPECT(connect_as_nobody(d.sock) == AGXQ_EPERM);
	/* The daemon's own user still gets in, and the daemon still serves. */
	EXPECT(agxq_connect(d.sock, &c) == 0);
	agxq_close(c);
	EXPECT(du_stop(&d) == 0);
	du_cleanup(&d);

	memset(&d, 0, sizeof d);
	EXPECT(du_start(&d, allowed) == 0);
	chmod(d.dir, 0711);
	EXPECT(connect_as_nobody(d.sock) == 0);
	EXPECT(du_stop(&d) == 0);
	du_cleanup(&d);

	memset(&d, 0, sizeof d);
	EXPECT(du_start(&d, allowed_gid) == 0);
	chmod(d.dir, 0711);
	EXPECT(connect_as_nobody(d.sock) == 0);
	EXPECT(du_stop(&d) == 0);
	du_cleanup(&d);
}

/* Bad --allow-uid values are refused at the command line. */
static void
case_bad_options(void)
{
	static const char *const bad_user[] = { "start", "--socket",
	    "/tmp/agxq-unused.sock", "--allow-uid", "no-such-user-xyz", NULL };
	static const char *const bad_bytes[] = { "start", "--socket",
	    "/tmp/agxq-unused.sock", "--max-weight-bytes", "12Q", NULL };
	char out[512];

	EXPECT(du_run(bad_user, 5000, out, sizeof out) == 2);
	EXPECT(strstr(out, "unknown user no-such-user-xyz") != NULL);
	EXPECT(du_run(bad_bytes, 5000, out, sizeof out) == 2);
	EXPECT(strstr(out, "bad value for --max-weight-bytes") != NULL);
}

/* Model limits: per connection and in total, each a clear error. */
static void
case_model_limits(void)
{
	static const char *const extra[] = { "--max-models-per-conn", "2",
	    "--max-weight-bytes", "300K", NULL };
	struct du_daemon d;
	agxq_client *c = NULL;
	agxq_model *m[3] = { NULL, NULL, NULL };
	agxq_graph *g;

	memset(&d, 0, sizeof d);
	EXPECT(du_start(&d, extra) == 0);
	EXPECT(agxq_connect(d.sock, &c) == 0);
	if (c == NULL)
		goto out;
	/* linear: 131 KB of weights; two fit in 300K, a third model does not. */
	for (int i = 0; i < 3; i++) {
		EXPECT(agxq_reference_build(AGXQ_REF_LINEAR, 100 + i, &g) == 0);
		EXPECT(agxq_model_load(c, g, "lin", &m[i]) ==
		    (i < 2 ? 0 : AGXQ_ELIMIT));
		agxq_graph_free(g);
	}
	/* The mlp alone is over the total weight limit. */
	EXPECT(agxq_reference_build(AGXQ_REF_MLP, 1, &g) == 0);
	agxq_model_unload(m[1]);
	m[1] = NULL;
	EXPECT(agxq_model_load(c, g, "mlp", &m[2]) == AGXQ_ELIMIT);
	agxq_graph_free(g);
out:
	for (int i = 0; i < 3; i++)
		agxq_model_unload(m[i]);
	agxq_close(c);
	EXPECT(du_stop(&d) == 0);
	du_cleanup(&d);
}

/*
 * --idle-timeout-s: a connection with nothing in flight that sends nothing
 * is closed with a clear error; a busy or chatty one is not.
 */
static void
case_idle_timeout(void)
{
	static const char *const extra[] = { "--idle-timeout-s", "1", NULL };
	struct du_daemon d;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	agxq_graph *g = NULL;
	int fd;

	memset(&d, 0, sizeof d);
	EXPECT(du_start(&d, extra) == 0);
	if ((fd = du_connect_hello(d.sock)) >= 0) {
		EXPECT(du_expect_error(fd, 3000, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "idle for 1 s") == 0);
		EXPECT(du_expect_closed(fd, 3000) == 0);
		close(fd);
	} else
		EXPECT(fd >= 0);
	/* A client that keeps sending stays connected past the timeout. */
	EXPECT(agxq_connect(d.sock, &c) == 0);
	EXPECT(agxq_reference_build(AGXQ_REF_LINEAR, 1, &g) == 0);
	EXPECT(c != NULL && agxq_model_load(c, g, "lin", &m) == 0);
	for (int i = 0; i < 6 && m != NULL; i++) {
		char *json = NULL;

		usleep(400 * 1000);
		EXPECT(agxq_stats_json(c, &json) == 0);
		free(json);
	}
	agxq_graph_free(g);
	agxq_model_unload(m);
	agxq_close(c);
	EXPECT(du_stop(&d) == 0);
	du_cleanup(&d);
}

static const struct testlib_case cases[] = {
	{ "socket_mode", case_socket_mode },
	{ "allow_uid", case_allow_uid },
	{ "bad_options", case_bad_options },
	{ "model_limits", case_model_limits },
	{ "idle_timeout", case_idle_timeout },
};

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	du_watchdog(100);
	return testlib_run(cases, TESTLIB_N(cases), argc, argv);
}
