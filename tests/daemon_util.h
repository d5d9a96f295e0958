/*
 * daemon_util: helpers for tests against the real agxqd binary ($AGXQD).
 *
 * du_start runs `agxqd start --socket DIR/s EXTRA...` in a private mkdtemp
 * directory and returns once start has returned (the socket accepts
 * connections); du_stop stops it with SIGTERM; du_cleanup kills what is left
 * and removes the directory. du_watchdog arms an alarm that SIGKILLs every
 * daemon started so far and exits the test, so no failure can hang or leak
 * a daemon.
 *
 * The raw frame client (du_connect, du_send*, du_recv) speaks the wire
 * protocol by hand so tests can send malformed frames. Every wait has a
 * timeout. Test helper only: it prints its failures to stdout.
 */
#ifndef AGXQ_DAEMON_UTIL_H
#define AGXQ_DAEMON_UTIL_H

#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agxq.pb-c.h"
#include "agxq_direct.h"

struct du_daemon {
	char dir[64];         /* private temporary directory */
	char sock[80];        /* dir/s */
	pid_t pid;            /* the daemon's pid (from its stats), or -1 */
};

/* Path of the agxqd binary ($AGXQD, else "agxqd"). */
const char *du_agxqd(void);

/*
 * Arms a watchdog: after seconds, every daemon started with du_start is
 * killed and the process exits with status 3.
 */
void du_watchdog(unsigned int seconds);

/*
 * Runs agxqd with args (NULL-terminated, without argv[0]), capturing its
 * stdout and stderr together into out (NUL-terminated; may be NULL).
 * Returns its exit status, 128+signal when killed, or -1 when it did not
 * finish within timeout_ms (it is killed then).
 */
int du_run(const char *const *args, int timeout_ms, char *out, size_t outlen);

/* Makes a private directory for d (d->sock set, no daemon). Returns 0 or -1. */
int du_init(struct du_daemon *d);

/*
 * Initialises d and starts a daemon on d->sock with extra options
 * (NULL-terminated, may be NULL); finds its pid. Returns 0 or -1 (and
 * cleans up after itself).
 */
int du_start(struct du_daemon *d, const char *const *extra);

/*
 * Starts a daemon again on d->sock (set up by du_start; the last daemon
 * gone) with extra options; finds its pid. Returns 0 or -1.
 */
int du_restart(struct du_daemon *d, const char *const *extra);

/*
 * Reads the daemon's pid (the supervisor: the process `agxqd stop`
 * signals) through a Stats request; -1 on failure.
 */
pid_t du_daemon_pid(const char *sock);

/*
 * Reads the pid of the daemon's serving worker (Stats worker_pid: the
 * process that holds the device, connections and models); -1 on failure.
 */
pid_t du_worker_pid(const char *sock);

/* The daemon's log (d->sock with .log: start's) as a malloc'd string, or NULL. */
char *du_log(const struct du_daemon *d);

/*
 * Waits up to timeout_ms for d's log to contain needle: 1 when it does,
 * else 0 (saying so on stdout).
 */
int du_log_has(const struct du_daemon *d, const char *needle, int timeout_ms);

/* Returns 1 when pid runs: exists, and is not a zombie with all its threads gone. */
int du_alive(pid_t pid);

/* Waits up to timeout_ms for pid to exit; returns 0 once it is gone. */
int du_wait_gone(pid_t pid, int timeout_ms);

/* SIGTERM, then waits for the process to go and checks the socket is gone. 0 or -1. */
int du_stop(struct du_daemon *d);

/* Kills the daemon if it still runs, removes the directory. Accepts an uninitialised (zeroed) d. */
void du_cleanup(struct du_daemon *d);

/* Monotonic milliseconds. */
uint64_t du_now_ms(void);

/* Monotonic nanoseconds (CLOCK_MONOTONIC, agxqd's clock). */
uint64_t du_now_ns(void);

/* Connects to a Unix socket; returns the fd or -1. */
int du_connect(const char *path);

/* Sends all of buf; 0 or -1. */
int du_send(int fd, const void *buf, size_t len);

/* Sends a header (len, flags) followed by payload[0..plen). */
int du_send_frame(int fd, uint32_t len, uint32_t flags, const void *payload,
    size_t plen);

/* Encodes env with codec_encode (no compression) and sends it. */
int du_send_env(int fd, const Agxq__Envelope *env);

/* Encodes and sends env with descriptor pass (-1: none); 0 or -1. */
int du_send_env_fd(int fd, const Agxq__Envelope *env, int pass);

/* The daemon's Stats (a raw connection of its own); NULL on failure. */
Agxq__Envelope *du_raw_stats(const char *sock);

/*
 * Receives and decodes one frame within timeout_ms. Returns 1 with *out
 * (free with codec_envelope_free), 0 when the peer closed the connection
 * before a whole frame, -1 on timeout or a frame that does not decode.
 */
int du_recv(int fd, int timeout_ms, Agxq__Envelope **out);

/*
 * Receives one frame and checks it is an Error with code; when substr is not
 * NULL its message must contain substr. Returns 0 or -1 (printing why).
 */
int du_expect_error(int fd, int timeout_ms, int code, const char *substr);

/* Waits up to timeout_ms for the peer to close; 0 when it did (frames before are skipped). */
int du_expect_closed(int fd, int timeout_ms);

/* Sends Hello with version and expects a HelloReply when version is current. */
int du_hello(int fd, uint32_t version);

/* Connects and says hello; the fd or -1. */
int du_connect_hello(const char *path);

/*
 * Sends LoadModel of graph g and waits for the reply: 0 with *model_id, or
 * the Error's code (> 0) with its message copied to msg. -1 on I/O failure.
 */
int du_load(int fd, uint64_t req_id, const Agxq__Graph *g, uint64_t *model_id,
    char *msg, size_t msglen);

/* du_load that also tells the reply's shared flag in *shared. */
int du_load_shared(int fd, uint64_t req_id, const Agxq__Graph *g,
    uint64_t *model_id, int *shared, char *msg, size_t msglen);

/* Finds "key": NUMBER in a JSON document; -1 when absent. */
long long du_json_num(const char *json, const char *key);

/* Counts the occurrences of needle in s. */
int du_count(const char *s, const char *needle);

/*
 * One request to a reference model and its expected output, computed in
 * direct mode: the test's yardstick for every result from the daemon.
 */
struct du_io {
	agxq_reference which;
	agxq_tensor in;         /* in.data is malloc'd */
	float *want;            /* expected output 0 */
	size_t nwant;
	int want_ndim;
	int64_t want_shape[AGXQ_MAX_DIMS];
};

/*
 * Makes an input of batch rows (seq: the transformer's sequence length, 0
 * for its default) filled from agxq_reference_weights(seed), and its
 * expected output from direct model dm (opened by this thread). 0 or -1.
 */
int du_io_make(struct du_io *io, agxq_reference which, int64_t batch,
    int64_t seq, uint64_t seed, agxq_direct_model *dm);

/* Frees what du_io_make allocated; accepts a zeroed io. */
void du_io_free(struct du_io *io);

/*
 * Builds reference model which from seed and loads it into client c as
 * *m when c is not NULL and into direct handle d as *dm when d is not
 * NULL. 0 or an AGXQ_E* code.
 */
int du_load_ref(agxq_client *c, agxq_direct *d, agxq_reference which,
    uint64_t seed, agxq_model **m, agxq_direct_model **dm);

/* VmRSS of pid in kB, or -1. */
long du_rss_kb(pid_t pid);

/* Number of open descriptors of pid, or -1. */
int du_fd_count(pid_t pid);

/*
 * Checks result r against io: one output of the expected shape, each value
 * within atol + rtol * |want|. 0 or -1 (printing the first mismatch).
 */
int du_io_check(const struct du_io *io, const agxq_result *r, double rtol,
    double atol);

/*
 * Tracks async requests: which callbacks fired (and how often), their
 * status, batch rows and completion order, and whether results matched.
 */
struct du_track {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int n;
	struct du_track_slot *slots;
	int done;                        /* callbacks fired */
	int dup;                         /* callbacks that fired twice */
	int ok;                          /* successes */
	int mismatch;                    /* successes with a wrong result */
	int count[AGXQ_ERRNO_MAX + 1];   /* by -status */
	double rtol, atol;
};

struct du_track_slot {
	struct du_track *t;
	int idx;
	const struct du_io *io;  /* expected result, or NULL */
	int fired;
	int status;
	int order;               /* completion order, from 0 */
	uint32_t batch_rows;
	uint64_t t_done_ms;
};

/* Sets t up for n requests with tolerance rtol/atol; 0 or -1. */
int du_track_init(struct du_track *t, int n, double rtol, double atol);

/* Frees t. */
void du_track_free(struct du_track *t);

/* The callback argument for request idx expecting io (may be NULL). */
void *du_track_arg(struct du_track *t, int idx, const struct du_io *io);

/* An agxq_infer_cb recording into the slot arg. */
void du_track_cb(void *arg, int status, agxq_result *r);

/* Marks request idx as never sent (its async call failed at once). */
void du_track_unsent(struct du_track *t, int idx);

/* Waits until n callbacks have fired; 0, or -1 after timeout_ms. */
int du_track_wait(struct du_track *t, int n, int timeout_ms);

/*
 * CHECK (testlib.h) for a call returning an AGXQ_E* code: prints the code's
 * name. Only for files that include testlib.h.
 */
#define CHECK_OK(call) do {						\
	int rc_ = (call);						\
									\
	if (rc_ != 0) {							\
		printf("  %s: %s:%d: %s: %s\n", testlib_current,	\
		    __FILE__, __LINE__, #call, agxq_strerror(rc_));	\
		testlib_failed = 1;					\
		goto out;						\
	}								\
} while (0)

#endif
