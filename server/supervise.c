/*
 * supervise: takes the lock file and the listening socket, then keeps one
 * worker process serving on them (see supervise.h). The supervisor starts
 * no thread and touches neither libevent nor the device: it forks, forwards
 * SIGTERM and SIGINT, and waits, so it cannot be caught by what kills a
 * worker. Signals reach its poll loop through a self-pipe.
 */
#include <sys/types.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "supervise.h"

#define SUPERVISE_LOCK_WAIT_MS 3000  /* for a daemon that is exiting */
#define SUPERVISE_QUICK_MS 1000      /* a worker that failed to start this */
#define SUPERVISE_PAUSE_MS 200       /* quickly is replaced after a pause */

struct supervisor {
	int listen_fd;
	int lock_fd;
	char lock_path[sizeof config.socket_path + 8];
	int ready_fd;                 /* until the first worker serves */
	char msg[512];                /* what the worker said at start-up */
	time_t starts[SUPERVISE_MAX_RESTARTS * 4 + 1]; /* ring of start times */
	uint32_t nstarts;
	int stalled;                  /* the worker was killed for a stall */
};

static int supervise_pipe[2] = { -1, -1 };
static volatile sig_atomic_t supervise_term; /* signal to forward; 0: none */

/*
 * Since when the worker's oldest unfinished device work started
 * (CLOCK_MONOTONIC ns), 0 when none: a shared page the worker inherits and
 * writes, the supervisor reads. NULL in a process that is no supervisor's.
 */
static _Atomic uint64_t *supervise_beat;

/* Signal handler: notes SIGTERM/SIGINT and wakes the poll loop. */
static void
supervise_signal(int sig)
{
	int saved = errno;

	if (sig != SIGCHLD)
		supervise_term = sig;
	(void)!write(supervise_pipe[1], "", 1);
	errno = saved;
}

/* Monotonic nanoseconds (the clock of request_now_ns). */
static uint64_t
supervise_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Monotonic milliseconds. */
static int64_t
supervise_now_ms(void)
{
	return (int64_t)(supervise_now_ns() / 1000000);
}

/* In the worker: since when its oldest unfinished device work started. */
void
supervise_busy_since(uint64_t ns)
{
	if (supervise_beat != NULL)
		atomic_store_explicit(supervise_beat, ns, memory_order_relaxed);
}

/* How often the supervisor looks for a stall, in ms; -1: never. */
static int
supervise_stall_poll_ms(void)
{
	uint32_t ms = config.stall_ms / 4;

	if (supervise_beat == NULL || config.stall_ms == 0)
		return -1;
	return ms < 10 ? 10 : ms > 1000 ? 1000 : (int)ms;
}

/*
 * Kills worker pid when its oldest device work has been unfinished for
 * longer than --stall-ms: it cannot end by itself (its executor waits in
 * the backend for good), and its death also ends what it left running on
 * the device.
 */
static void
supervise_check_stall(struct supervisor *sv, pid_t pid)
{
	uint64_t since, now;

	if (sv->stalled || supervise_stall_poll_ms() < 0)
		return;
	since = atomic_load_explicit(supervise_beat, memory_order_relaxed);
	now = supervise_now_ns();
	if (since == 0 || now < since ||
	    now - since <= (uint64_t)config.stall_ms * 1000000)
		return;
	log_error("worker %d stalled: its device work has been unfinished for "
	    "%llu ms (--stall-ms %u); killing it", (int)pid,
	    (unsigned long long)((now - since) / 1000000), config.stall_ms);
	kill(pid, SIGKILL);
	sv->stalled = 1;
}

/* Sleeps ms milliseconds unless a signal comes first. */
static void
supervise_pause(int ms)
{
	struct pollfd pfd = { .fd = supervise_pipe[0], .events = POLLIN };

	if (supervise_term == 0)
		(void)poll(&pfd, 1, ms);
}

/* Whether something accepts connections at path. */
static int
supervise_live(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd, rc;

	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return 0;
	rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
	close(fd);
	return rc == 0;
}

/*
 * Takes the lock file beside the socket. A daemon that serves the socket
 * holds it; one that is exiting (its worker may outlive it by a moment)
 * is waited for.
 */
static int
supervise_lock(struct supervisor *sv, char **cause)
{
	int64_t end = supervise_now_ms() + SUPERVISE_LOCK_WAIT_MS;

	snprintf(sv->lock_path, sizeof sv->lock_path, "%s.lock",
	    config.socket_path);
	sv->lock_fd = open(sv->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (sv->lock_fd < 0) {
		if (asprintf(cause, "cannot open %s: %s", sv->lock_path,
		    strerror(errno)) < 0)
			*cause = NULL;
		return -1;
	}
	while (flock(sv->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		if (supervise_live(config.socket_path) ||
		    supervise_now_ms() >= end) {
			if (asprintf(cause, "agxqd is already running on %s",
			    config.socket_path) < 0)
				*cause = NULL;
			close(sv->lock_fd);
			sv->lock_fd = -1;
			return -1;
		}
		usleep(20000);
	}
	return 0;
}

/*
 * Removes a stale socket at path; refuses a non-socket, and a live one that
 * stays live (with the lock held, only an exiting daemon can still be
 * answering, for a moment).
 */
static int
supervise_clear_stale(const char *path, char **cause)
{
	int64_t end = supervise_now_ms() + SUPERVISE_LOCK_WAIT_MS;
	struct stat sb;

	if (lstat(path, &sb) != 0)
		return 0;
	if (!S_ISSOCK(sb.st_mode)) {
		if (asprintf(cause, "%s exists and is not a socket", path) < 0)
			*cause = NULL;
		return -1;
	}
	while (supervise_live(path)) {
		if (supervise_now_ms() >= end) {
			if (asprintf(cause, "agxqd is already running on %s",
			    path) < 0)
				*cause = NULL;
			return -1;
		}
		usleep(20000);
	}
	log_info("removing stale socket %s", path);
	unlink(path);
	return 0;
}

/* Creates, binds and listens on the socket with the configured mode. */
static int
supervise_listen(struct supervisor *sv, char **cause)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	mode_t old;
	int fd;

	if (strlen(config.socket_path) >= sizeof sun.sun_path) {
		if (asprintf(cause, "socket path too long: %s",
		    config.socket_path) < 0)
			*cause = NULL;
		return -1;
	}
	if (supervise_lock(sv, cause) != 0)
		return -1;
	if (supervise_clear_stale(config.socket_path, cause) != 0)
		return -1;
	strcpy(sun.sun_path, config.socket_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		goto fail_errno;
	/* Never let the socket exist with a wider mode than configured. */
	old = umask(~config.socket_mode & 0777);
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		umask(old);
		goto fail_close;
	}
	umask(old);
	if (chmod(config.socket_path, config.socket_mode) != 0 ||
	    listen(fd, 511) != 0)
		goto fail_unlink;
	sv->listen_fd = fd;
	return 0;

fail_unlink:
	unlink(config.socket_path);
fail_close:
	close(fd);
fail_errno:
	if (asprintf(cause, "cannot listen on %s: %s", config.socket_path,
	    strerror(errno)) < 0)
		*cause = NULL;
	return -1;
}

/* Sends the start-up outcome to whoever ran `agxqd start`, once. */
static void
supervise_report(struct supervisor *sv, const char *msg)
{
	if (sv->ready_fd < 0)
		return;
	(void)!write(sv->ready_fd, msg, strlen(msg));
	close(sv->ready_fd);
	sv->ready_fd = -1;
}

/* Installs handler for the signals the supervisor cares about. */
static void
supervise_handlers(void (*handler)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
}

/*
 * Forks a worker; returns its pid and the read end of its notify pipe. The
 * supervisor's signals are blocked across the fork: one arriving while the
 * child still has the supervisor's handler (and has closed its pipe)
 * would be lost to both, and agxqd would not stop; blocked, it reaches
 * the supervisor once fork returns, and the child with default handlers.
 */
static pid_t
supervise_spawn(struct supervisor *sv, supervise_worker_fn worker,
    int *notify)
{
	pid_t pid, parent = getpid();
	sigset_t block, old;
	int nfd[2], saved;

	if (pipe(nfd) != 0)
		return -1;
	(void)fcntl(nfd[0], F_SETFD, FD_CLOEXEC);
	(void)fcntl(nfd[1], F_SETFD, FD_CLOEXEC);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, &old);
	if ((pid = fork()) < 0) {
		saved = errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		close(nfd[0]);
		close(nfd[1]);
		errno = saved;
		return -1;
	}
	if (pid == 0) {
		close(nfd[0]);
		close(supervise_pipe[0]);
		close(supervise_pipe[1]);
		if (sv->ready_fd >= 0)
			close(sv->ready_fd);
		supervise_handlers(SIG_DFL);
		sigprocmask(SIG_SETMASK, &old, NULL);
#ifdef __linux__
		/* Dies with the supervisor (elsewhere: server_idle_cb checks). */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
		if (getppid() != parent)
			_exit(1);
		_exit(worker(sv->listen_fd, nfd[1]));
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(nfd[1]);
	*notify = nfd[0];
	return pid;
}

/* Reads what a worker wrote to its notify pipe; closes it. */
static void
supervise_read_notify(struct supervisor *sv, int *notify, int *ready)
{
	ssize_t n;

	do
		n = read(*notify, sv->msg, sizeof sv->msg - 1);
	while (n < 0 && errno == EINTR);
	sv->msg[n > 0 ? n : 0] = '\0';
	close(*notify);
	*notify = -1;
	if (n == 2 && memcmp(sv->msg, "OK", 2) == 0) {
		*ready = 1;
		supervise_report(sv, "OK");
	}
}

/*
 * Waits for worker pid to exit, forwarding SIGTERM/SIGINT to it and
 * reporting its start-up. Returns its wait status; *ready tells whether it
 * said it was serving.
 */
static int
supervise_wait(struct supervisor *sv, pid_t pid, int notify, int *ready)
{
	struct pollfd pfd[2];
	int status, forwarded = 0;
	char buf[64];

	*ready = 0;
	sv->msg[0] = '\0';
	sv->stalled = 0;
	for (;;) {
		if (supervise_term != 0 && !forwarded) {
			kill(pid, supervise_term);
			forwarded = 1;
		}
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		/* A signal after this point writes to the pipe: no miss. */
		pfd[0].fd = supervise_pipe[0];
		pfd[0].events = POLLIN;
		pfd[1].fd = notify;       /* ignored by poll once -1 */
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		if (poll(pfd, 2, supervise_stall_poll_ms()) < 0 &&
		    errno != EINTR)
			continue;
		supervise_check_stall(sv, pid);
		if (notify >= 0 && pfd[1].revents != 0)
			supervise_read_notify(sv, &notify, ready);
		while (read(supervise_pipe[0], buf, sizeof buf) > 0)
			;
	}
	if (notify >= 0)
		supervise_read_notify(sv, &notify, ready);
	return status;
}

/* Whether another worker may start now; records the start. */
static int
supervise_may_start(struct supervisor *sv)
{
	uint32_t cap = sizeof sv->starts / sizeof sv->starts[0];
	uint32_t max = config.max_restarts + 1, recent = 0;
	time_t now = time(NULL);

	if (max > cap)
		max = cap;
	for (uint32_t i = 0; i < sv->nstarts && i < cap; i++) {
		if (now - sv->starts[i] < SUPERVISE_WINDOW_S)
			recent++;
	}
	if (recent >= max)
		return 0;
	sv->starts[sv->nstarts++ % cap] = now;
	return 1;
}

/* Describes how a worker ended, for the log. */
static void
supervise_describe(int status, char *buf, size_t len)
{
	if (WIFEXITED(status) && WEXITSTATUS(status) == SUPERVISE_EXIT_LOST)
		snprintf(buf, len, "exited: its device was lost");
	else if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "was killed by signal %d (%s)",
		    WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "ended (status %#x)", status);
}

/*
 * agxqd's exit status once its worker has ended while stopping (or on its
 * own, with status 0): 0 when the worker stopped cleanly, or was ending
 * for a new one; 1, logged, when it crashed or failed on the way down,
 * so that whoever started agxqd learns of it.
 */
static int
supervise_stopped(pid_t pid, int status)
{
	char how[96];

	if (WIFEXITED(status) && (WEXITSTATUS(status) == 0 ||
	    WEXITSTATUS(status) == SUPERVISE_EXIT_LOST))
		return 0;
	supervise_describe(status, how, sizeof how);
	log_error("worker %d %s while stopping", (int)pid, how);
	return 1;
}

/* Runs agxqd: the lock, the socket, then one worker at a time. */
int
supervise_run(int ready_fd, supervise_worker_fn worker)
{
	struct supervisor sv;
	char *cause = NULL, how[128];
	int rc = 1, status, ready, ever_ready = 0, notify;
	int64_t t0;
	pid_t pid;

	memset(&sv, 0, sizeof sv);
	sv.listen_fd = sv.lock_fd = -1;
	sv.ready_fd = ready_fd;
	if (supervise_listen(&sv, &cause) != 0) {
		log_error("cannot start: %s",
		    cause != NULL ? cause : "out of memory");
		supervise_report(&sv, cause != NULL ? cause : "out of memory");
		free(cause);
		goto out;
	}
	if (pipe(supervise_pipe) != 0) {
		supervise_report(&sv, "cannot create a pipe");
		goto out_unlink;
	}
	for (int i = 0; i < 2; i++) {
		(void)fcntl(supervise_pipe[i], F_SETFD, FD_CLOEXEC);
		(void)fcntl(supervise_pipe[i], F_SETFL, O_NONBLOCK);
	}
	supervise_handlers(supervise_signal);
	config.supervisor_pid = getpid();
	supervise_beat = mmap(NULL, sizeof *supervise_beat, PROT_READ |
	    PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (supervise_beat == MAP_FAILED) {
		log_warn("no stall watchdog (--stall-ms): mmap: %s",
		    strerror(errno));
		supervise_beat = NULL;
	}
	for (;;) {
		if (!supervise_may_start(&sv)) {
			log_error("giving up: more than %u worker restarts "
			    "within %d s", config.max_restarts,
			    SUPERVISE_WINDOW_S);
			break;
		}
		t0 = supervise_now_ms();
		supervise_busy_since(0);    /* not the last worker's */
		if ((pid = supervise_spawn(&sv, worker, &notify)) < 0) {
			log_error("cannot start a worker: %s", strerror(errno));
			supervise_report(&sv, "cannot start a worker process");
			break;
		}
		log_info("worker %d started", (int)pid);
		status = supervise_wait(&sv, pid, notify, &ready);
		ever_ready |= ready;
		if (supervise_term != 0 || (WIFEXITED(status) &&
		    WEXITSTATUS(status) == 0)) {
			rc = supervise_stopped(pid, status);
			break;
		}
		if (sv.stalled)
			snprintf(how, sizeof how, "stalled on its device and "
			    "was killed");
		else
			supervise_describe(status, how, sizeof how);
		if (!ever_ready) {
			/* The first worker never served: a start-up error. */
			supervise_report(&sv, sv.msg[0] != '\0' ? sv.msg :
			    "the daemon exited during start-up");
			log_error("worker %d %s before it served", (int)pid, how);
			break;
		}
		config.worker_restarts++;
		log_warn("worker %d %s; starting a new worker (restart %u)",
		    (int)pid, how, config.worker_restarts);
		/* One that failed to start would fail again at once. */
		if (!ready && supervise_now_ms() - t0 < SUPERVISE_QUICK_MS)
			supervise_pause(SUPERVISE_PAUSE_MS);
		if (supervise_term != 0) {
			rc = 0;
			break;
		}
	}
	supervise_handlers(SIG_DFL);
	if (supervise_beat != NULL) {
		munmap((void *)supervise_beat, sizeof *supervise_beat);
		supervise_beat = NULL;
	}
out_unlink:
	unlink(config.socket_path);
	unlink(sv.lock_path);
out:
	if (sv.listen_fd >= 0)
		close(sv.listen_fd);
	if (sv.lock_fd >= 0)
		close(sv.lock_fd);
	return rc;
}
