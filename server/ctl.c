/*
 * ctl: `agxqd stop` and `agxqd status`. A tiny blocking client: connect,
 * hello, one request, one reply, with a receive timeout so a wedged daemon
 * cannot hang the command.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "ctl.h"
#include "stats_json.h"

/* Connects to path with a 5 s receive timeout; returns the fd or -1. */
static int
ctl_connect(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { 5, 0 };
	int fd;

	if (strlen(path) >= sizeof sun.sun_path) {
		fprintf(stderr, "agxqd: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		fprintf(stderr, "agxqd: no daemon on %s: %s\n", path,
		    strerror(errno));
		close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	return fd;
}

/* Sends env as one frame. */
static int
ctl_send(int fd, const Agxq__Envelope *env)
{
	struct codec_limits lim;
	uint8_t *frame;
	size_t len, off = 0;

	codec_limits_default(&lim);
	if (codec_encode(env, 0, &lim, &frame, &len, NULL) != 0)
		return -1;
	while (off < len) {
		ssize_t n = send(fd, frame + off, len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(frame);
			return -1;
		}
		off += (size_t)n;
	}
	free(frame);
	return 0;
}

/* Reads exactly len bytes. */
static int
ctl_read_full(int fd, uint8_t *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = recv(fd, buf + off, len - off, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	return 0;
}

/* Receives one message; prints the daemon's error and returns NULL on one. */
static Agxq__Envelope *
ctl_recv(int fd)
{
	struct codec_limits lim;
	uint8_t hdr[CODEC_HEADER_SIZE], *payload;
	uint32_t plen, flags;
	Agxq__Envelope *env = NULL;
	char *cause = NULL;
	int code;

	codec_limits_default(&lim);
	if (ctl_read_full(fd, hdr, sizeof hdr) != 0 ||
	    codec_header_parse(hdr, sizeof hdr, &lim, &plen, &flags, &code,
	    &cause) != CODEC_OK) {
		fprintf(stderr, "agxqd: no reply from the daemon%s%s\n",
		    cause ? ": " : "", cause ? cause : "");
		free(cause);
		return NULL;
	}
	if ((payload = malloc(plen)) == NULL)
		return NULL;
	if (ctl_read_full(fd, payload, plen) != 0 ||
	    codec_decode(payload, plen, flags, &lim, &env, &code, &cause) != 0) {
		fprintf(stderr, "agxqd: bad reply from the daemon%s%s\n",
		    cause ? ": " : "", cause ? cause : "");
		free(cause);
		free(payload);
		return NULL;
	}
	free(payload);
	if (env->body_case == AGXQ__ENVELOPE__BODY_ERROR) {
		fprintf(stderr, "agxqd: daemon error: %s\n",
		    env->error->message);
		codec_envelope_free(env);
		return NULL;
	}
	return env;
}

/* Connects and says hello; returns the fd and the daemon's pid, or -1. */
static int
ctl_hello(const char *path, int64_t *pid)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep;
	Agxq__Hello h = AGXQ__HELLO__INIT;
	int fd;

	if ((fd = ctl_connect(path)) < 0)
		return -1;
	h.protocol_version = CODEC_PROTOCOL_VERSION;
	h.client_name = (char *)"agxqd-ctl";
	env.body_case = AGXQ__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	if (ctl_send(fd, &env) != 0 || (rep = ctl_recv(fd)) == NULL) {
		close(fd);
		return -1;
	}
	if (rep->body_case != AGXQ__ENVELOPE__BODY_HELLO_REPLY) {
		fprintf(stderr, "agxqd: unexpected reply %s\n",
		    codec_body_name(rep->body_case));
		codec_envelope_free(rep);
		close(fd);
		return -1;
	}
	*pid = rep->hello_reply->pid;
	codec_envelope_free(rep);
	return fd;
}

/*
 * Whether process pid has exited: gone, or a zombie waiting for its parent
 * (which may never reap it when that is an init that does not).
 */
static int
ctl_exited(int64_t pid)
{
	char path[64], buf[256], *p;
	FILE *f;
	size_t n;

	if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
		return 1;
	snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
	if ((f = fopen(path, "re")) == NULL)
		return 0;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* "pid (comm) S ...": the state follows the last ')'. */
	if ((p = strrchr(buf, ')')) == NULL || p[1] != ' ')
		return 0;
	return p[2] == 'Z' || p[2] == 'X';
}

/* Stops the daemon on path. */
int
ctl_stop(const char *path, int timeout_s)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	struct stat sb;
	int64_t pid;
	int fd;

	if ((fd = ctl_hello(path, &pid)) < 0)
		return 1;
	close(fd);
	if (pid <= 0 || kill((pid_t)pid, SIGTERM) != 0) {
		fprintf(stderr, "agxqd: cannot signal pid %" PRId64 ": %s\n",
		    pid, strerror(errno));
		return 1;
	}
	for (int i = 0; i < timeout_s * 50; i++) {
		if (ctl_exited(pid)) {
			printf("agxqd (pid %" PRId64 ") stopped\n", pid);
			return 0;
		}
		nanosleep(&ts, NULL);
	}
	if (stat(path, &sb) != 0) {
		printf("agxqd (pid %" PRId64 ") stopped serving %s\n", pid,
		    path);
		return 0;
	}
	fprintf(stderr, "agxqd: pid %" PRId64 " did not stop within %d s\n",
	    pid, timeout_s);
	return 1;
}

/* Prints stats as a table. */
static void
ctl_print_table(const Agxq__Stats *st)
{
	printf("agxqd %s  pid %" PRId64 " (worker %" PRId64 ", %u restarts)"
	    "  backend %s  up %.1f s  connections %u\n", st->server_version,
	    st->pid, st->worker_pid, st->worker_restarts, st->backend,
	    (double)st->uptime_us / 1e6, st->connections);
	printf("max batch %u rows, max delay %u us; frames in %" PRIu64
	    ", out %" PRIu64 ", ring requests %" PRIu64 " (%" PRIu64
	    " raw, %" PRIu64 " answered in the slot by the executor, %" PRIu64
	    " of them early by the device); backend "
	    "calls %" PRIu64 " (%" PRIu64 " off the executor thread)\n",
	    st->max_batch, st->max_delay_us, st->frames_in, st->frames_out,
	    st->ring_requests, st->ring_raw, st->ring_answered,
	    st->ring_answered_early,
	    st->backend_calls, st->backend_foreign_calls);
	if (st->uptime_us > 0)
		printf("busy since the worker started: %u I/O thread%s %.1f%% "
		    "(of one core), executor %.1f%%\n", st->io_threads,
		    st->io_threads == 1 ? "" : "s", 100.0 *
		    (double)st->loop_busy_us / (double)st->uptime_us, 100.0 *
		    (double)st->executor_busy_us / (double)st->uptime_us);
	printf("p50/p99 us: posted in a ring until taken %" PRIu64 "/%" PRIu64
	    ", reply encoded until handed out %" PRIu64 "/%" PRIu64 "\n",
	    st->ring_wait_p50_us, st->ring_wait_p99_us, st->out_p50_us,
	    st->out_p99_us);
	if (st->n_models == 0) {
		printf("no models loaded\n");
		return;
	}
	printf("%-4s %-16s %4s %10s %9s %7s %9s %9s %9s %9s %6s %6s %6s\n",
	    "id", "model", "refs", "requests", "batches", "rows/b",
	    "queue p50", "queue p99", "exec p50", "exec p99", "errors",
	    "tmouts", "busy");
	for (size_t i = 0; i < st->n_models; i++) {
		const Agxq__ModelStats *m = st->models[i];

		printf("%-4" PRIu64 " %-16.16s %4u %10" PRIu64 " %9" PRIu64
		    " %7.2f %7" PRIu64 "us %7" PRIu64 "us %7" PRIu64 "us %7"
		    PRIu64 "us %6" PRIu64 " %6" PRIu64 " %6" PRIu64 "\n",
		    m->model_id, m->name, m->refs, m->requests, m->batches,
		    m->batches ? (double)m->rows / (double)m->batches : 0.0,
		    m->queue_p50_us, m->queue_p99_us, m->exec_p50_us,
		    m->exec_p99_us, m->errors, m->timeouts, m->rejected_busy);
	}
	printf("where the time goes, p50/p99 us: in (frame decoded and "
	    "checked), queue,\nstage (staged and launched), device (until "
	    "finished), reply (encoded)\n");
	printf("%-4s %-16s %13s %13s %13s %13s %13s\n", "id", "model", "in",
	    "queue", "stage", "device", "reply");
	for (size_t i = 0; i < st->n_models; i++) {
		const Agxq__ModelStats *m = st->models[i];

		printf("%-4" PRIu64 " %-16.16s %6" PRIu64 "/%-6" PRIu64
		    " %6" PRIu64 "/%-6" PRIu64 " %6" PRIu64 "/%-6" PRIu64
		    " %6" PRIu64 "/%-6" PRIu64 " %6" PRIu64 "/%-6" PRIu64 "\n",
		    m->model_id, m->name, m->in_p50_us, m->in_p99_us,
		    m->queue_p50_us, m->queue_p99_us, m->stage_p50_us,
		    m->stage_p99_us, m->device_p50_us, m->device_p99_us,
		    m->reply_p50_us, m->reply_p99_us);
	}
}

/* Prints the daemon's stats. */
int
ctl_status(const char *path, int json)
{
	Agxq__Envelope env = AGXQ__ENVELOPE__INIT, *rep;
	Agxq__StatsRequest sr = AGXQ__STATS_REQUEST__INIT;
	int64_t pid;
	char *text;
	int fd, rc = 1;

	if ((fd = ctl_hello(path, &pid)) < 0)
		return 1;
	sr.request_id = 1;
	env.body_case = AGXQ__ENVELOPE__BODY_STATS_REQUEST;
	env.stats_request = &sr;
	if (ctl_send(fd, &env) != 0 || (rep = ctl_recv(fd)) == NULL)
		goto out_close;
	if (rep->body_case != AGXQ__ENVELOPE__BODY_STATS) {
		fprintf(stderr, "agxqd: unexpected reply %s\n",
		    codec_body_name(rep->body_case));
	} else if (json) {
		if ((text = stats_json_render(rep->stats)) != NULL) {
			fputs(text, stdout);
			free(text);
			rc = 0;
		}
	} else {
		ctl_print_table(rep->stats);
		rc = 0;
	}
	codec_envelope_free(rep);
out_close:
	close(fd);
	return rc;
}
