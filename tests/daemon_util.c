/*
 * daemon_util: start, stop and kill the real agxqd for tests, and a raw
 * frame client for the wire protocol (see daemon_util.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "daemon_util.h"

#define DU_MAX_DAEMONS 32

/*
 * What the watchdog cleans up: daemon pids and the files of their
 * directories, prepared outside the signal handler.
 */
static struct {
	volatile pid_t pid;
	char files[4][96];
	char dir[64];
} du_reg[DU_MAX_DAEMONS];
static volatile int du_nreg;

/* Path of the agxqd binary. */
const char *
du_agxqd(void)
{
	const char *p = getenv("AGXQD");

	return p != NULL && *p != '\0' ? p : "agxqd";
}

/* Monotonic nanoseconds (CLOCK_MONOTONIC, agxqd's clock). */
uint64_t
du_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Monotonic milliseconds. */
uint64_t
du_now_ms(void)
{
	return du_now_ns() / 1000000;
}

/* Sleeps ms milliseconds. */
static void
du_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* SIGALRM: kill every registered daemon, remove its files, exit. */
static void
du_watchdog_fire(int sig)
{
	static const char msg[] = "watchdog: test took too long; killing "
	    "its daemons\n";

	(void)sig;
	(void)!write(1, msg, sizeof msg - 1);
	for (int i = 0; i < du_nreg; i++) {
		if (du_reg[i].pid > 0)
			kill(du_reg[i].pid, SIGKILL);
		for (int f = 0; f < 4; f++)
			unlink(du_reg[i].files[f]);
		rmdir(du_reg[i].dir);
	}
	_exit(3);
}

/* Arms the watchdog. */
void
du_watchdog(unsigned int seconds)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = du_watchdog_fire;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	alarm(seconds);
}

/* Records d's directory (and later pid) for the watchdog. */
static void
du_register(struct du_daemon *d)
{
	static const char *const names[4] = { "s", "s.lock", "s.log", "x" };
	int i = du_nreg;

	if (i >= DU_MAX_DAEMONS)
		return;
	du_reg[i].pid = -1;
	snprintf(du_reg[i].dir, sizeof du_reg[i].dir, "%s", d->dir);
	for (int f = 0; f < 4; f++)
		snprintf(du_reg[i].files[f], sizeof du_reg[i].files[f], "%s/%s",
		    d->dir, names[f]);
	du_nreg = i + 1;
}

/* Records d's pid for the watchdog. */
static void
du_register_pid(const struct du_daemon *d)
{
	for (int i = 0; i < du_nreg; i++) {
		if (strcmp(du_reg[i].dir, d->dir) == 0)
			du_reg[i].pid = d->pid;
	}
}

/* Runs agxqd with args and captures its output. */
int
du_run(const char *const *args, int timeout_ms, char *out, size_t outlen)
{
	const char *argv[32];
	int pfd[2], status, n = 0;
	size_t used = 0;
	uint64_t deadline = du_now_ms() + (uint64_t)timeout_ms;
	char sink[512];
	pid_t pid;

	argv[n++] = du_agxqd();
	for (; args != NULL && *args != NULL && n < 31; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	if (out != NULL && outlen > 0)
		out[0] = '\0';
	if (pipe2(pfd, O_CLOEXEC) != 0)
		return -1;
	if ((pid = fork()) < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		alarm(0);
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		struct pollfd p = { .fd = pfd[0], .events = POLLIN };
		int64_t left = (int64_t)deadline - (int64_t)du_now_ms();
		ssize_t r;

		if (left <= 0 || poll(&p, 1, (int)left) == 0)
			break;
		if (out != NULL && used + 1 < outlen)
			r = read(pfd[0], out + used, outlen - used - 1);
		else
			r = read(pfd[0], sink, sizeof sink);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (out != NULL && used + 1 < outlen) {
			used += (size_t)r;
			out[used] = '\0';
		}
	}
	close(pfd[0]);
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			return -1;
		if (du_now_ms() >= deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		du_sleep_ms(5);
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

/* Makes d's private directory. */
int
du_init(struct du_daemon *d)
{
	const char *tmp = getenv("TMPDIR");

	memset(d, 0, sizeof *d);
	d->pid = -1;
	if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 40)
		tmp = "/tmp";
	snprintf(d->dir, sizeof d->dir, "%s/agxqt.XXXXXX", tmp);
	if (mkdtemp(d->dir) == NULL) {
		printf("  mkdtemp %s: %s\n", d->dir, strerror(errno));
		d->dir[0] = '\0';
		return -1;
	}
	snprintf(d->sock, sizeof d->sock, "%s/s", d->dir);
	du_register(d);
	return 0;
}

/* Starts a daemon on a private socket. */
int
du_start(struct du_daemon *d, const char *const *extra)
{
	const char *args[32];
	char out[1024];
	int n = 0, rc;

	if (du_init(d) != 0)
		return -1;
	args[n++] = "start";
	args[n++] = "--socket";
	args[n++] = d->sock;
	for (; extra != NULL && *extra != NULL && n < 30; extra++)
		args[n++] = *extra;
	args[n] = NULL;
	if ((rc = du_run(args, 20000, out, sizeof out)) != 0) {
		printf("  agxqd start failed (%d): %s\n", rc, out);
		du_cleanup(d);
		return -1;
	}
	if ((d->pid = du_daemon_pid(d->sock)) <= 0) {
		printf("  cannot read the daemon's pid\n");
		du_cleanup(d);
		return -1;
	}
	du_register_pid(d);
	return 0;
}

/* Starts a daemon again on d->sock, where the last one is gone. */
int
du_restart(struct du_daemon *d, const char *const *extra)
{
	const char *args[32];
	char out[1024];
	int n = 0, rc;

	args[n++] = "start";
	args[n++] = "--socket";
	args[n++] = d->sock;
	for (; extra != NULL && *extra != NULL && n < 30; extra++)
		args[n++] = *extra;
	args[n] = NULL;
	d->pid = -1;
	if ((rc = du_run(args, 20000, out, sizeof out)) != 0) {
		printf("  agxqd restart failed (%d): %s\n", rc, out);
		return -1;
	}
	if ((d->pid = du_daemon_pid(d->sock)) <= 0) {
		printf("  cannot read the restarted daemon's pid\n");
		return -1;
	}
	du_register_pid(d);
	return 0;
}

/* The daemon's Stats on a raw connection of its own, or NULL. */
Agxq__Envelope *
du_raw_stats(const char *sock)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep = NULL;
	Agxq__StatsRequest sr = AGXQ__STATS_REQUEST__INIT;
	int fd;

	if ((fd = du_connect_hello(sock)) < 0)
		return NULL;
	sr.request_id = 1;
	env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
	env.stats_request = &sr;
	if (du_send_env(fd, &env) != 0 || du_recv(fd, 5000, &rep) != 1 ||
	    rep->body_case != AGXQ__ENVELOPE__BODY_STATS) {
		codec_envelope_free(rep);
		rep = NULL;
	}
	close(fd);
	return rep;
}

/*
 * Asks the daemon for a pid through Stats: the supervisor's (pid) or,
 * when worker is set, the serving worker's (worker_pid).
 */
static pid_t
du_stats_pid(const char *sock, int worker)
{
	Agxq__Envelope *rep = du_raw_stats(sock);
	pid_t pid = -1;

	if (rep != NULL)
		pid = (pid_t)(worker ? rep->stats->worker_pid :
		    rep->stats->pid);
	codec_envelope_free(rep);
	return pid > 0 ? pid : -1;
}

/* Asks the daemon for its (supervisor's) pid through Stats. */
pid_t
du_daemon_pid(const char *sock)
{
	return du_stats_pid(sock, 0);
}

/* Asks the daemon for its serving worker's pid through Stats. */
pid_t
du_worker_pid(const char *sock)
{
	return du_stats_pid(sock, 1);
}

/* Counts the threads listed in /proc/pid/task. */
static int
du_task_count(pid_t pid)
{
	char path[64];
	DIR *dp;
	struct dirent *de;
	int n = 0;

	snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
	if ((dp = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(dp)) != NULL)
		n += de->d_name[0] != '.';
	closedir(dp);
	return n;
}

/* Returns 1 when pid exists and is not a zombie. */
int
du_alive(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	if (pid <= 0)
		return 0;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return kill(pid, 0) == 0;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if ((p = strrchr(buf, ')')) == NULL || p[1] == '\0' || p[2] == '\0')
		return 1;
	if (p[2] != 'Z' && p[2] != 'X')
		return 1;
	/*
	 * A zombie leader whose other threads are still exiting still holds
	 * the process's files (its listening socket): alive until they go.
	 */
	return du_task_count(pid) > 1;
}

/* Waits for pid to exit. */
int
du_wait_gone(pid_t pid, int timeout_ms)
{
	uint64_t deadline = du_now_ms() + (uint64_t)timeout_ms;

	while (du_alive(pid)) {
		if (du_now_ms() >= deadline)
			return -1;
		du_sleep_ms(10);
	}
	return 0;
}

/*
 * Stops the daemon as `agxqd stop` does (SIGTERM), and waits for it to go.
 * Not through the command itself: it counts a zombie as running, and
 * reaping can be slow where init is not a real init (test_daemon covers
 * the command).
 */
int
du_stop(struct du_daemon *d)
{
	if (d->pid <= 0 || kill(d->pid, SIGTERM) != 0) {
		printf("  cannot signal the daemon (pid %d)\n", (int)d->pid);
		return -1;
	}
	if (du_wait_gone(d->pid, 10000) != 0) {
		printf("  daemon %d still running 10 s after SIGTERM\n",
		    (int)d->pid);
		return -1;
	}
	if (access(d->sock, F_OK) == 0) {
		printf("  the daemon left its socket behind\n");
		return -1;
	}
	return 0;
}

/* Kills what is left and removes the directory. */
void
du_cleanup(struct du_daemon *d)
{
	DIR *dp;
	struct dirent *de;
	char path[PATH_MAX + 300];

	if (d->pid > 0 && du_alive(d->pid)) {
		kill(d->pid, SIGKILL);
		du_wait_gone(d->pid, 5000);
	}
	d->pid = -1;
	if (d->dir[0] == '\0')
		return;
	if ((dp = opendir(d->dir)) != NULL) {
		while ((de = readdir(dp)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(path, sizeof path, "%s/%s", d->dir, de->d_name);
			unlink(path);
		}
		closedir(dp);
	}
	if (rmdir(d->dir) != 0)
		printf("  cannot remove %s: %s\n", d->dir, strerror(errno));
	d->dir[0] = '\0';
}

/* Connects to a Unix socket. */
int
du_connect(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof sun.sun_path)
		return -1;
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Sends all of buf. */
int
du_send(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t off = 0;

	while (off < len) {
		ssize_t n = send(fd, p + off, len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	return 0;
}

/* Sends a hand-made frame. */
int
du_send_frame(int fd, uint32_t len, uint32_t flags, const void *payload,
    size_t plen)
{
	uint8_t *buf;
	int rc;

	/* One send, so a daemon that rejects the header cannot fail it. */
	if ((buf = malloc(CODEC_HEADER_SIZE + plen)) == NULL)
		return -1;
	codec_header_write(buf, len, flags);
	if (plen > 0)
		memcpy(buf + CODEC_HEADER_SIZE, payload, plen);
	rc = du_send(fd, buf, CODEC_HEADER_SIZE + plen);
	free(buf);
	return rc;
}

/* Encodes and sends env. */
int
du_send_env(int fd, const Agxq__Envelope *env)
{
	struct codec_limits lim;
	uint8_t *frame;
	size_t len;
	int rc;

	codec_limits_default(&lim);
	if (codec_encode(env, 0, &lim, &frame, &len, NULL) != 0)
		return -1;
	rc = du_send(fd, frame, len);
	free(frame);
	return rc;
}

/* Encodes and sends env with descriptor pass (-1: none) on its first byte. */
int
du_send_env_fd(int fd, const Agxq__Envelope *env, int pass)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct codec_limits lim;
	struct msghdr msg;
	struct iovec iov;
	uint8_t *frame;
	size_t len;
	ssize_t n;

	codec_limits_default(&lim);
	if (codec_encode(env, 0, &lim, &frame, &len, NULL) != 0)
		return -1;
	memset(&msg, 0, sizeof msg);
	memset(&cbuf, 0, sizeof cbuf);
	iov.iov_base = frame;
	iov.iov_len = len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (pass >= 0) {
		msg.msg_control = cbuf.buf;
		msg.msg_controllen = sizeof cbuf.buf;
		CMSG_FIRSTHDR(&msg)->cmsg_level = SOL_SOCKET;
		CMSG_FIRSTHDR(&msg)->cmsg_type = SCM_RIGHTS;
		CMSG_FIRSTHDR(&msg)->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(CMSG_FIRSTHDR(&msg)), &pass, sizeof pass);
	}
	n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	free(frame);
	return n == (ssize_t)len ? 0 : -1;
}

/*
 * Reads exactly len bytes before deadline. Returns 1, 0 on end of file,
 * -1 on timeout or error.
 */
static int
du_read_full(int fd, uint8_t *buf, size_t len, uint64_t deadline)
{
	size_t off = 0;

	while (off < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = (int64_t)deadline - (int64_t)du_now_ms();
		ssize_t n;
		int pr;

		if (left <= 0)
			return -1;
		if ((pr = poll(&p, 1, (int)left)) < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			return -1;
		n = recv(fd, buf + off, len - off, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return 0;
		if (n < 0)
			return -1;
		off += (size_t)n;
	}
	return 1;
}

/* Receives and decodes one frame. */
int
du_recv(int fd, int timeout_ms, Agxq__Envelope **out)
{
	uint64_t deadline = du_now_ms() + (uint64_t)timeout_ms;
	struct codec_limits lim;
	uint8_t hdr[CODEC_HEADER_SIZE], *payload;
	uint32_t plen, flags;
	char *cause = NULL;
	int rc, code;

	*out = NULL;
	codec_limits_default(&lim);
	if ((rc = du_read_full(fd, hdr, sizeof hdr, deadline)) != 1)
		return rc;
	if (codec_header_parse(hdr, sizeof hdr, &lim, &plen, &flags, &code,
	    &cause) != CODEC_OK) {
		printf("  bad frame header from the daemon: %s\n", cause);
		free(cause);
		return -1;
	}
	if ((payload = malloc(plen > 0 ? plen : 1)) == NULL)
		return -1;
	if ((rc = du_read_full(fd, payload, plen, deadline)) != 1) {
		free(payload);
		return rc;
	}
	if (codec_decode(payload, plen, flags, &lim, out, &code, &cause) != 0) {
		printf("  bad frame from the daemon: %s\n", cause);
		free(cause);
		free(payload);
		return -1;
	}
	free(payload);
	return 1;
}

/* Expects an Error frame with code and a message containing substr. */
int
du_expect_error(int fd, int timeout_ms, int code, const char *substr)
{
	Agxq__Envelope *env;
	int rc, ok = -1;

	if ((rc = du_recv(fd, timeout_ms, &env)) != 1) {
		printf("  expected error %d, got %s\n", code,
		    rc == 0 ? "the connection closed" : "nothing (timeout)");
		return -1;
	}
	if (env->body_case != AGXQ__ENVELOPE__BODY_ERROR)
		printf("  expected error %d, got %s\n", code,
		    codec_body_name(env->body_case));
	else if ((int)env->error->code != code)
		printf("  expected error %d, got %d: %s\n", code,
		    (int)env->error->code, env->error->message);
	else if (substr != NULL && (env->error->message == NULL ||
	    strstr(env->error->message, substr) == NULL))
		printf("  error %d message \"%s\" lacks \"%s\"\n", code,
		    env->error->message, substr);
	else
		ok = 0;
	codec_envelope_free(env);
	return ok;
}

/* Waits for the peer to close. */
int
du_expect_closed(int fd, int timeout_ms)
{
	uint64_t deadline = du_now_ms() + (uint64_t)timeout_ms;
	Agxq__Envelope *env;
	int rc;

	for (;;) {
		int64_t left = (int64_t)deadline - (int64_t)du_now_ms();

		if (left <= 0)
			break;
		rc = du_recv(fd, (int)left, &env);
		codec_envelope_free(env);
		if (rc == 0)
			return 0;
		if (rc < 0)
			break;
	}
	printf("  the daemon did not close the connection\n");
	return -1;
}

/* Says hello. */
int
du_hello(int fd, uint32_t version)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep = NULL;
	Agxq__Hello h = AGXQ__HELLO__INIT;
	int ok = -1;

	h.protocol_version = version;
	h.client_name = (char *)"daemon_util";
	env.body_case = AGXQ__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	if (du_send_env(fd, &env) != 0)
		return -1;
	if (version != CODEC_PROTOCOL_VERSION)
		return 0;
	if (du_recv(fd, 5000, &rep) == 1 &&
	    rep->body_case == AGXQ__ENVELOPE__BODY_HELLO_REPLY)
		ok = 0;
	codec_envelope_free(rep);
	return ok;
}

/* Connects and says hello. */
int
du_connect_hello(const char *path)
{
	int fd;

	if ((fd = du_connect(path)) < 0)
		return -1;
	if (du_hello(fd, CODEC_PROTOCOL_VERSION) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Loads a raw graph. */
int
du_load(int fd, uint64_t req_id, const Agxq__Graph *g, uint64_t *model_id,
    char *msg, size_t msglen)
{
	int shared;

	return du_load_shared(fd, req_id, g, model_id, &shared, msg, msglen);
}

/* Loads a raw graph; *shared is the reply's flag. */
int
du_load_shared(int fd, uint64_t req_id, const Agxq__Graph *g,
    uint64_t *model_id, int *shared, char *msg, size_t msglen)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep = NULL;
	Agxq__LoadModel lm = AGXQ__LOAD_MODEL__INIT;
	int rc = -1;

	lm.request_id = req_id;
	lm.graph = (Agxq__Graph *)g;
	lm.name = (char *)"raw";
	env.body_case = AGXQ__ENVELOPE__BODY_LOAD_MODEL;
	env.load_model = &lm;
	if (msg != NULL && msglen > 0)
		msg[0] = '\0';
	if (du_send_env(fd, &env) != 0 || du_recv(fd, 10000, &rep) != 1)
		return -1;
	if (rep->body_case == AGXQ__ENVELOPE__BODY_LOAD_MODEL_REPLY) {
		*model_id = rep->load_model_reply->model_id;
		*shared = rep->load_model_reply->shared;
		rc = 0;
	} else if (rep->body_case == AGXQ__ENVELOPE__BODY_ERROR) {
		rc = (int)rep->error->code;
		if (msg != NULL && msglen > 0)
			snprintf(msg, msglen, "%s", rep->error->message);
	}
	codec_envelope_free(rep);
	return rc;
}

/* Finds "key": NUMBER in json. */
long long
du_json_num(const char *json, const char *key)
{
	char pat[128];
	const char *p;

	snprintf(pat, sizeof pat, "\"%s\":", key);
	if ((p = strstr(json, pat)) == NULL)
		return -1;
	p += strlen(pat);
	while (*p == ' ')
		p++;
	return strtoll(p, NULL, 10);
}

/* Counts occurrences of needle. */
int
du_count(const char *s, const char *needle)
{
	int n = 0;

	while ((s = strstr(s, needle)) != NULL) {
		n++;
		s += strlen(needle);
	}
	return n;
}

/* Makes a reference request and its expected output. */
int
du_io_make(struct du_io *io, agxq_reference which, int64_t batch,
    int64_t seq, uint64_t seed, agxq_direct_model *dm)
{
	agxq_result *r = NULL;
	const agxq_tensor *o;
	size_t n;
	int rc;

	memset(io, 0, sizeof *io);
	io->which = which;
	if (agxq_reference_input_shape(which, batch, &io->in) != 0)
		return -1;
	if (seq > 0 && which == AGXQ_REF_TRANSFORMER)
		io->in.shape[1] = seq;
	n = agxq_tensor_nelem(&io->in);
	if ((io->in.data = malloc(n * sizeof(float))) == NULL)
		return -1;
	agxq_reference_weights(seed, 1.0f, io->in.data, n);
	if ((rc = agxq_direct_infer(dm, &io->in, 1, &r)) != 0) {
		printf("  direct infer: %s\n", agxq_strerror(rc));
		goto fail;
	}
	if (agxq_result_noutputs(r) != 1 ||
	    (o = agxq_result_output(r, 0)) == NULL) {
		printf("  direct infer: no output\n");
		goto fail;
	}
	io->nwant = agxq_tensor_nelem(o);
	io->want_ndim = o->ndim;
	memcpy(io->want_shape, o->shape, sizeof io->want_shape);
	if ((io->want = malloc(io->nwant * sizeof(float))) == NULL)
		goto fail;
	memcpy(io->want, o->data, io->nwant * sizeof(float));
	agxq_result_free(r);
	return 0;

fail:
	agxq_result_free(r);
	du_io_free(io);
	return -1;
}

/* Frees an io. */
void
du_io_free(struct du_io *io)
{
	free(io->in.data);
	free(io->want);
	io->in.data = NULL;
	io->want = NULL;
}

/* Checks a result against io. */
int
du_io_check(const struct du_io *io, const agxq_result *r, double rtol,
    double atol)
{
	const agxq_tensor *o;
	const float *got;

	if (r == NULL || agxq_result_noutputs(r) != 1 ||
	    (o = agxq_result_output(r, 0)) == NULL) {
		printf("  %s: result has no single output\n",
		    agxq_reference_name(io->which));
		return -1;
	}
	if (o->ndim != io->want_ndim || memcmp(o->shape, io->want_shape,
	    (size_t)o->ndim * sizeof o->shape[0]) != 0 ||
	    agxq_tensor_nelem(o) != io->nwant) {
		printf("  %s: output shape differs (ndim %d, dim0 %lld)\n",
		    agxq_reference_name(io->which), o->ndim,
		    (long long)o->shape[0]);
		return -1;
	}
	got = o->data;
	for (size_t i = 0; i < io->nwant; i++) {
		double d = (double)got[i] - (double)io->want[i];
		double w = io->want[i] < 0 ? -(double)io->want[i] :
		    (double)io->want[i];

		if (d < 0)
			d = -d;
		if (!(d <= atol + rtol * w)) {
			printf("  %s: value %zu is %.9g, want %.9g\n",
			    agxq_reference_name(io->which), i, (double)got[i],
			    (double)io->want[i]);
			return -1;
		}
	}
	return 0;
}

/* Sets up a tracker. */
int
du_track_init(struct du_track *t, int n, double rtol, double atol)
{
	memset(t, 0, sizeof *t);
	if ((t->slots = calloc((size_t)n, sizeof *t->slots)) == NULL)
		return -1;
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	t->n = n;
	t->rtol = rtol;
	t->atol = atol;
	return 0;
}

/* Frees a tracker. */
void
du_track_free(struct du_track *t)
{
	if (t->slots == NULL)
		return;
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
	free(t->slots);
	t->slots = NULL;
}

/* The callback argument of request idx. */
void *
du_track_arg(struct du_track *t, int idx, const struct du_io *io)
{
	struct du_track_slot *s = &t->slots[idx];

	s->t = t;
	s->idx = idx;
	s->io = io;
	return s;
}

/* Records one completion. */
void
du_track_cb(void *arg, int status, agxq_result *r)
{
	struct du_track_slot *s = arg;
	struct du_track *t = s->t;
	int bad = 0;
	uint64_t q, e;
	uint32_t rows = 0;

	if (status == 0 && s->io != NULL)
		bad = du_io_check(s->io, r, t->rtol, t->atol) != 0;
	if (status == 0 && r != NULL)
		agxq_result_info(r, &q, &e, &rows);
	pthread_mutex_lock(&t->mu);
	if (s->fired++ > 0)
		t->dup++;
	s->status = status;
	s->batch_rows = rows;
	s->order = t->done;
	s->t_done_ms = du_now_ms();
	if (status == 0) {
		t->ok++;
		t->mismatch += bad;
	} else if (status < 0 && -status <= AGXQ_ERRNO_MAX)
		t->count[-status]++;
	t->done++;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

/* Marks a request whose async call failed. */
void
du_track_unsent(struct du_track *t, int idx)
{
	pthread_mutex_lock(&t->mu);
	t->slots[idx].status = 1;
	pthread_mutex_unlock(&t->mu);
}

/* Waits for n callbacks. */
int
du_track_wait(struct du_track *t, int n, int timeout_ms)
{
	struct timespec ts;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&t->mu);
	while (t->done < n && rc == 0)
		rc = pthread_cond_timedwait(&t->cv, &t->mu, &ts);
	rc = t->done >= n ? 0 : -1;
	pthread_mutex_unlock(&t->mu);
	if (rc != 0)
		printf("  only %d of %d callbacks fired in %d ms\n", t->done, n,
		    timeout_ms);
	return rc;
}

/* Builds reference model which (seed) and loads it into c and/or d. */
int
du_load_ref(agxq_client *c, agxq_direct *d, agxq_reference which,
    uint64_t seed, agxq_model **m, agxq_direct_model **dm)
{
	agxq_graph *g = NULL;
	int rc;

	if ((rc = agxq_reference_build(which, seed, &g)) != 0)
		return rc;
	if (c != NULL && (rc = agxq_model_load(c, g,
	    agxq_reference_name(which), m)) != 0)
		goto out;
	if (d != NULL && (rc = agxq_direct_load(d, g, dm)) != 0)
		goto out;
out:
	agxq_graph_free(g);
	return rc;
}

/* VmRSS of pid in kB, or -1. */
long
du_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* Number of open descriptors of pid, or -1. */
int
du_fd_count(pid_t pid)
{
	char path[64];
	struct dirent *de;
	DIR *dp;
	int n = 0;

	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	if ((dp = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(dp)) != NULL)
		n += de->d_name[0] != '.';
	closedir(dp);
	return n;
}

/* Reads the daemon's log (<socket>.log) into a malloc'd string, or NULL. */
char *
du_log(const struct du_daemon *d)
{
	char path[128], *text;
	size_t len;
	FILE *f;

	snprintf(path, sizeof path, "%s.log", d->sock);
	if ((f = fopen(path, "r")) == NULL)
		return NULL;
	if ((text = calloc(1, 1 << 20)) != NULL) {
		len = fread(text, 1, (1 << 20) - 1, f);
		text[len] = '\0';
	}
	fclose(f);
	return text;
}

/* Waits up to timeout_ms for the log to contain needle; 1 when it does. */
int
du_log_has(const struct du_daemon *d, const char *needle, int timeout_ms)
{
	uint64_t end = du_now_ms() + (uint64_t)timeout_ms;
	char *text;
	int found;

	for (;;) {
		text = du_log(d);
		found = text != NULL && strstr(text, needle) != NULL;
		free(text);
		if (found || du_now_ms() >= end)
			break;
		usleep(50000);
	}
	if (!found)
		printf("  the log lacks \"%s\"\n", needle);
	return found;
}
