/*
 * bench_daemon: the benchmark's own agxqd. It runs `agxqd start --foreground`
 * as a child on a private socket in a fresh temporary directory, waits until
 * the socket accepts, and stops it (SIGTERM, then SIGKILL) at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "bench.h"

#define BENCH_DAEMON_START_S 15.0
#define BENCH_DAEMON_STOP_S 10.0

struct bench_daemon {
	pid_t pid;
	char dir[64];
	char socket[128];
};

/*
 * Returns the agxqd next to this binary's build tree (../server/agxqd from
 * /proc/self/exe), else "agxqd" to be found on PATH; caller frees.
 */
char *
bench_find_agxqd(void)
{
	char exe[PATH_MAX], *slash, *path;
	ssize_t len;

	len = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (len > 0) {
		exe[len] = '\0';
		if ((slash = strrchr(exe, '/')) != NULL) {
			*slash = '\0';
			if (asprintf(&path, "%s/../server/agxqd", exe) < 0)
				return NULL;
			if (access(path, X_OK) == 0)
				return path;
			free(path);
			if (asprintf(&path, "%s/agxqd", exe) < 0)
				return NULL;
			if (access(path, X_OK) == 0)
				return path;
			free(path);
		}
	}
	return strdup("agxqd");
}

/* Returns 1 once a connection to path succeeds. */
static int
bench_daemon_accepts(const char *path)
{
	struct sockaddr_un sun;
	int fd, ok;

	if (strlen(path) >= sizeof sun.sun_path)
		return 0;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return 0;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	ok = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
	close(fd);
	return ok;
}

/* Waits up to seconds for pid to exit; returns 1 when it did. */
static int
bench_daemon_reap(pid_t pid, double seconds)
{
	double end = bench_now_s() + seconds;
	int status;

	while (bench_now_s() < end) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid || (r == -1 && errno == ECHILD))
			return 1;
		bench_sleep_ms(10);
	}
	return 0;
}

/* Starts agxqd (path agxqd) in the foreground as a child; 0 or -1. */
int
bench_daemon_start(const char *agxqd, const char *backend, int max_batch,
    int max_delay_us, struct bench_daemon **out)
{
	struct bench_daemon *d;
	char batch[32], delay[32];
	const char *argv[16];
	double end;
	int argc = 0, status;

	if ((d = calloc(1, sizeof *d)) == NULL)
		return -1;
	snprintf(d->dir, sizeof d->dir, "/tmp/agxq-bench.XXXXXX");
	if (mkdtemp(d->dir) == NULL) {
		fprintf(stderr, "agxq-bench: mkdtemp: %s\n", strerror(errno));
		goto fail_free;
	}
	snprintf(d->socket, sizeof d->socket, "%s/agxqd.sock", d->dir);

	argv[argc++] = agxqd;
	argv[argc++] = "start";
	argv[argc++] = "--foreground";
	argv[argc++] = "--socket";
	argv[argc++] = d->socket;
	argv[argc++] = "--backend";
	argv[argc++] = backend;
	argv[argc++] = "--log-level";
	argv[argc++] = "warn";
	if (max_batch > 0) {
		snprintf(batch, sizeof batch, "%d", max_batch);
		argv[argc++] = "--max-batch";
		argv[argc++] = batch;
	}
	if (max_delay_us >= 0) {
		snprintf(delay, sizeof delay, "%d", max_delay_us);
		argv[argc++] = "--max-delay-us";
		argv[argc++] = delay;
	}
	argv[argc] = NULL;

	fflush(NULL);
	if ((d->pid = fork()) == -1) {
		fprintf(stderr, "agxq-bench: fork: %s\n", strerror(errno));
		goto fail_rmdir;
	}
	if (d->pid == 0) {
#ifdef __linux__
		prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
		execvp(agxqd, (char *const *)argv);
		fprintf(stderr, "agxq-bench: exec %s: %s\n", agxqd,
		    strerror(errno));
		_exit(127);
	}

	end = bench_now_s() + BENCH_DAEMON_START_S;
	while (!bench_daemon_accepts(d->socket)) {
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			fprintf(stderr, "agxq-bench: agxqd (%s) exited before "
			    "accepting connections\n", agxqd);
			d->pid = 0;
			goto fail_rmdir;
		}
		if (bench_now_s() > end) {
			fprintf(stderr, "agxq-bench: agxqd did not accept on %s "
			    "within %.0f s\n", d->socket, BENCH_DAEMON_START_S);
			goto fail_kill;
		}
		bench_sleep_ms(5);
	}
	*out = d;
	return 0;

fail_kill:
	kill(d->pid, SIGKILL);
	bench_daemon_reap(d->pid, BENCH_DAEMON_STOP_S);
fail_rmdir:
	unlink(d->socket);
	rmdir(d->dir);
fail_free:
	free(d);
	return -1;
}

/* The socket the daemon serves. */
const char *
bench_daemon_socket(const struct bench_daemon *d)
{
	return d->socket;
}

/* Stops the daemon and removes its directory; accepts NULL. */
void
bench_daemon_stop(struct bench_daemon *d)
{
	if (d == NULL)
		return;
	if (d->pid > 0) {
		kill(d->pid, SIGTERM);
		if (!bench_daemon_reap(d->pid, BENCH_DAEMON_STOP_S)) {
			fprintf(stderr, "agxq-bench: agxqd did not stop; "
			    "killing it\n");
			kill(d->pid, SIGKILL);
			bench_daemon_reap(d->pid, BENCH_DAEMON_STOP_S);
		}
	}
	unlink(d->socket);
	rmdir(d->dir);
	free(d);
}
