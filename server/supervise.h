/*
 * supervise: agxqd's outer process. It takes the lock file and the listening
 * socket, then keeps one worker process serving on that socket and replaces
 * it when it ends abnormally: a worker whose device was lost beyond repair
 * in its own process (a sticky GPU fault) exits with SUPERVISE_EXIT_LOST,
 * and one that crashes dies of a signal. A worker whose device work has
 * not returned for --stall-ms (a GPU kernel that never ends, a backend
 * call stuck) cannot end by itself: the supervisor kills it and starts
 * another. The socket stays open throughout, so clients reconnect to the
 * same path and the daemon's pid never changes.
 */
#ifndef AGXQ_SUPERVISE_H
#define AGXQ_SUPERVISE_H

#include <sys/types.h>

#include <stdint.h>

/* A worker's exit status after its device was lost. */
#define SUPERVISE_EXIT_LOST 75

/* Worker starts allowed within SUPERVISE_WINDOW_S seconds by default. */
#define SUPERVISE_MAX_RESTARTS 10
#define SUPERVISE_WINDOW_S 60

/* Device work unfinished this long stalls a worker, by default. */
#define SUPERVISE_STALL_MS 60000u
#define SUPERVISE_STALL_MS_MIN 100u  /* below, healthy work would be killed */
#define SUPERVISE_STALL_MS_MAX 86400000u

/*
 * Runs a worker in the child: serve on listen_fd and write "OK" to
 * notify_fd once serving (or the reason it cannot); returns the exit
 * status (0 when stopped, SUPERVISE_EXIT_LOST).
 */
typedef int (*supervise_worker_fn)(int listen_fd, int notify_fd);

/*
 * Takes the lock and the socket at config.socket_path, then runs workers
 * until one stops cleanly, SIGTERM/SIGINT arrive (they are forwarded), or
 * more than config.max_restarts workers start within SUPERVISE_WINDOW_S.
 * ready_fd, when >= 0, receives "OK" once the first worker serves, or the
 * error. Returns the exit status for the process: 0 once stopped cleanly;
 * 1 after giving up, a start-up error, or a worker that crashed or failed
 * while stopping.
 */
int supervise_run(int ready_fd, supervise_worker_fn worker);

/*
 * In the worker: tells the supervisor since when (request_now_ns) the
 * oldest device work still unfinished started; 0 when none is.
 */
void supervise_busy_since(uint64_t ns);

#endif
