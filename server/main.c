/*
 * agxqd: the command line. `start` runs the daemon (in the background unless
 * --foreground) and returns once its socket accepts connections; `stop` and
 * `status` talk to a running daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "ctl.h"
#include "engine.h"
#include "log.h"
#include "server.h"
#include "supervise.h"

/* Prints usage to f. */
static void
usage(FILE *f)
{
	fprintf(f,
"usage: agxqd start [--socket PATH] [--backend cpu|cuda] [--device N]\n"
"                   [--cpu-threads N] [--spin-us N] [--io-threads N]\n"
"                   [--conns-per-io-thread N] [--ring-clients N]\n"
"                   [--idle-timeout-s N]\n"
"                   [--max-batch N] [--max-delay-us N] [--max-queue N]\n"
"                   [--max-inflight N] [--max-connections N]\n"
"                   [--socket-mode OCTAL] [--frame-timeout-ms N]\n"
"                   [--allow-uid LIST] [--allow-gid LIST]\n"
"                   [--share-models-across-users] [--max-models N]\n"
"                   [--max-models-per-conn N] [--max-weight-bytes N[KMG]]\n"
"                   [--max-weight-bytes-per-conn N[KMG]] [--foreground]\n"
"                   [--max-restarts N] [--stall-ms N]\n"
"                   [--log-level error|warn|info|debug] [--log-file PATH]\n"
"       agxqd stop [--socket PATH] [--timeout S]\n"
"       agxqd status [--socket PATH] [--json]\n"
"       agxqd --version | --help\n"
"The socket defaults to $AGXQ_SOCKET, else %s.\n", CONFIG_DEFAULT_SOCKET);
}

/* Parses a non-negative integer option no larger than max, or exits. */
static unsigned long
parse_num(const char *opt, const char *s, unsigned long max, int base)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, base);
	if (errno != 0 || *s == '\0' || *end != '\0' || *s == '-' || v > max) {
		fprintf(stderr, "agxqd: bad value for %s: %s\n", opt, s);
		exit(2);
	}
	return v;
}

/* Parses an integer option from 1 to max, or exits. */
static unsigned long
parse_pos(const char *opt, const char *s, unsigned long max)
{
	unsigned long v = parse_num(opt, s, max, 10);

	if (v == 0) {
		fprintf(stderr, "agxqd: %s must be 1 to %lu\n", opt, max);
		exit(2);
	}
	return v;
}

/* Parses a byte count with an optional K, M or G suffix, or exits. */
static uint64_t
parse_bytes(const char *opt, const char *s)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift != 0)
		end++;
	if (errno != 0 || end == s || *end != '\0' || *s == '-' ||
	    v > (UINT64_MAX >> shift)) {
		fprintf(stderr, "agxqd: bad value for %s: %s\n", opt, s);
		exit(2);
	}
	return (uint64_t)v << shift;
}

/* Adds a comma-separated list of users (uids) or groups (gids) to allow. */
static int
parse_ids(int users, const char *list)
{
	char *copy, *tok, *save = NULL;

	if ((copy = strdup(list)) == NULL)
		return -1;
	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		char *end;
		unsigned long id = strtoul(tok, &end, 10);

		if (*tok == '\0' || *end != '\0') {
			struct passwd *pw = users ? getpwnam(tok) : NULL;
			struct group *gr = users ? NULL : getgrnam(tok);

			if (pw == NULL && gr == NULL) {
				fprintf(stderr, "agxqd: unknown %s %s\n",
				    users ? "user" : "group", tok);
				free(copy);
				return -1;
			}
			id = pw != NULL ? pw->pw_uid : gr->gr_gid;
		}
		if ((users ? config.nallow_uids : config.nallow_gids) >=
		    CONFIG_MAX_ALLOW) {
			fprintf(stderr, "agxqd: at most %d entries in --allow-%s\n",
			    CONFIG_MAX_ALLOW, users ? "uid" : "gid");
			free(copy);
			return -1;
		}
		if (users)
			config.allow_uids[config.nallow_uids++] = (uid_t)id;
		else
			config.allow_gids[config.nallow_gids++] = (gid_t)id;
	}
	free(copy);
	return 0;
}

/*
 * A worker process (supervise.c): serves listen_fd until it is stopped or
 * its device is lost. notify_fd receives "OK" once it serves, or the error
 * message. Returns the exit status.
 */
static int
run_worker(int listen_fd, int notify_fd)
{
	struct event_base *base;
	struct server *srv = NULL;
	char *cause = NULL;
	int rc = 1;

	if (evthread_use_pthreads() != 0 || (base = event_base_new()) == NULL) {
		cause = strdup("cannot initialise libevent");
		goto out_report;
	}
	if (server_new(base, listen_fd, &srv, &cause) != 0) {
		event_base_free(base);
		goto out_report;
	}
	(void)!write(notify_fd, "OK", 2);
	close(notify_fd);
	server_run(srv);
	rc = server_exit_code(srv);
	server_free(srv);
	event_base_free(base);
	log_close();
	return rc;

out_report:
	log_error("cannot start: %s", cause != NULL ? cause : "out of memory");
	(void)!write(notify_fd, cause != NULL ? cause : "out of memory",
	    strlen(cause != NULL ? cause : "out of memory"));
	close(notify_fd);
	free(cause);
	log_close();
	return rc;
}

/*
 * Runs the daemon until it is stopped: a supervisor and its worker (see
 * supervise.h). ready_fd, when >= 0, receives "OK" once the socket accepts
 * connections, or the error message.
 */
static int
run_daemon(int ready_fd)
{
	int rc;

	signal(SIGPIPE, SIG_IGN);
	rc = supervise_run(ready_fd, run_worker);
	log_close();
	return rc;
}

/* Detaches into the background; the parent exits once the daemon is ready. */
static int
start_background(void)
{
	int pfd[2], devnull;
	pid_t pid;
	char msg[512];
	ssize_t n;

	if (pipe2(pfd, O_CLOEXEC) != 0) {
		perror("agxqd: pipe");
		return 1;
	}
	if ((pid = fork()) < 0) {
		perror("agxqd: fork");
		return 1;
	}
	if (pid > 0) {
		close(pfd[1]);
		do
			n = read(pfd[0], msg, sizeof msg - 1);
		while (n < 0 && errno == EINTR);
		close(pfd[0]);
		if (n == 2 && memcmp(msg, "OK", 2) == 0) {
			printf("agxqd started on %s (backend %s)\n",
			    config.socket_path, config.backend);
			return 0;
		}
		if (n > 0) {
			msg[n] = '\0';
			fprintf(stderr, "agxqd: %s\n", msg);
		} else
			fprintf(stderr, "agxqd: the daemon exited during start-up"
			    " (see %s)\n", config.log_path);
		return 1;
	}
	/* Child: new session, second fork so it can never regain a tty. */
	close(pfd[0]);
	if (setsid() < 0 || (pid = fork()) < 0)
		_exit(1);
	if (pid > 0)
		_exit(0);
	if (chdir("/") != 0)
		_exit(1);
	if ((devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) >= 0) {
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(devnull, 2);
		close(devnull);
	}
	if (log_open(config.log_path, config.log_level) != 0)
		log_open(NULL, config.log_level);
	_exit(run_daemon(pfd[1]));
}

/* `agxqd start`. */
static int
cmd_start(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "backend", required_argument, NULL, 'b' },
		{ "device", required_argument, NULL, 'd' },
		{ "cpu-threads", required_argument, NULL, 'T' },
		{ "idle-timeout-s", required_argument, NULL, 'i' },
		{ "spin-us", required_argument, NULL, 'P' },
		{ "io-threads", required_argument, NULL, 'O' },
		{ "conns-per-io-thread", required_argument, NULL, 'K' },
		{ "ring-clients", required_argument, NULL, 'r' },
		{ "max-restarts", required_argument, NULL, 'R' },
		{ "stall-ms", required_argument, NULL, 'Z' },
		{ "max-batch", required_argument, NULL, 'B' },
		{ "max-delay-us", required_argument, NULL, 'D' },
		{ "max-queue", required_argument, NULL, 'Q' },
		{ "max-inflight", required_argument, NULL, 'I' },
		{ "max-connections", required_argument, NULL, 'C' },
		{ "socket-mode", required_argument, NULL, 'm' },
		{ "allow-uid", required_argument, NULL, 'u' },
		{ "allow-gid", required_argument, NULL, 'g' },
		{ "share-models-across-users", no_argument, NULL, 'S' },
		{ "max-models", required_argument, NULL, 'M' },
		{ "max-models-per-conn", required_argument, NULL, 'N' },
		{ "max-weight-bytes", required_argument, NULL, 'W' },
		{ "max-weight-bytes-per-conn", required_argument, NULL, 'X' },
		{ "frame-timeout-ms", required_argument, NULL, 'F' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "log-file", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const char *const *names;
	int ch, level, found = 0;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if (strlen(optarg) >= sizeof config.socket_path) {
				fprintf(stderr, "agxqd: socket path too long "
				    "(at most %zu bytes)\n",
				    sizeof config.socket_path - 1);
				return 2;
			}
			strcpy(config.socket_path, optarg);
			break;
		case 'b':
			snprintf(config.backend, sizeof config.backend, "%s",
			    optarg);
			break;
		case 'd':
			config.device = (int)parse_num("--device", optarg, 64, 10);
			break;
		case 'T':
			config.cpu_threads = (int)parse_num("--cpu-threads",
			    optarg, 1024, 10);
			break;
		case 'i':
			config.idle_timeout_s = (uint32_t)parse_num(
			    "--idle-timeout-s", optarg, 86400 * 365, 10);
			break;
		case 'P':
			config.spin_us = (int)parse_num("--spin-us", optarg,
			    100000, 10);
			break;
		case 'O':
			config.io_threads = (uint32_t)parse_pos("--io-threads",
			    optarg, CONFIG_MAX_IO_THREADS);
			break;
		case 'K':
			config.conns_per_io_thread = (uint32_t)parse_pos(
			    "--conns-per-io-thread", optarg, 65536);
			break;
		case 'r':
			config.ring_clients = (int)parse_num("--ring-clients",
			    optarg, 65536, 10);
			break;
		case 'R':
			config.max_restarts = (uint32_t)parse_num(
			    "--max-restarts", optarg, SUPERVISE_MAX_RESTARTS * 4,
			    10);
			break;
		case 'Z':
			config.stall_ms = (uint32_t)parse_num("--stall-ms",
			    optarg, SUPERVISE_STALL_MS_MAX, 10);
			if (config.stall_ms != 0 &&
			    config.stall_ms < SUPERVISE_STALL_MS_MIN) {
				fprintf(stderr, "agxqd: --stall-ms must be 0 "
				    "(never) or %u to %u\n",
				    SUPERVISE_STALL_MS_MIN,
				    SUPERVISE_STALL_MS_MAX);
				exit(2);
			}
			break;
		case 'B':
			config.max_batch = (uint32_t)parse_pos("--max-batch",
			    optarg, 65536);
			break;
		case 'D':
			config.max_delay_us = (uint32_t)parse_num(
			    "--max-delay-us", optarg, 10000000, 10);
			break;
		case 'Q':
			config.max_queue = (uint32_t)parse_num("--max-queue",
			    optarg, 1u << 24, 10);
			break;
		case 'I':
			config.max_inflight = (uint32_t)parse_num(
			    "--max-inflight", optarg, 1u << 24, 10);
			break;
		case 'C':
			config.max_connections = (uint32_t)parse_num(
			    "--max-connections", optarg, 1u << 20, 10);
			break;
		case 'm':
			config.socket_mode = (mode_t)parse_num("--socket-mode",
			    optarg, 0777, 8);
			break;
		case 'F':
			config.frame_timeout_ms = (uint32_t)parse_pos(
			    "--frame-timeout-ms", optarg, 3600000);
			break;
		case 'f':
			config.foreground = 1;
			break;
		case 'u':
		case 'g':
			if (parse_ids(ch == 'u', optarg) != 0)
				return 2;
			break;
		case 'S':
			config.share_across_uids = 1;
			break;
		case 'M':
			config.max_models = (uint32_t)parse_num("--max-models",
			    optarg, 1u << 20, 10);
			break;
		case 'N':
			config.max_models_per_conn = (uint32_t)parse_num(
			    "--max-models-per-conn", optarg, 1u << 20, 10);
			break;
		case 'W':
			config.max_weight_bytes = parse_bytes("--max-weight-bytes",
			    optarg);
			break;
		case 'X':
			config.max_weight_bytes_per_conn = parse_bytes(
			    "--max-weight-bytes-per-conn", optarg);
			break;
		case 'l':
			if ((level = log_level_parse(optarg)) < 0) {
				fprintf(stderr, "agxqd: unknown log level %s "
				    "(error, warn, info, debug)\n", optarg);
				return 2;
			}
			config.log_level = level;
			break;
		case 'L':
			snprintf(config.log_path, sizeof config.log_path, "%s",
			    optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "agxqd: unexpected argument %s\n", argv[optind]);
		return 2;
	}
	for (names = engine_backends(); *names != NULL; names++)
		found |= strcmp(*names, config.backend) == 0;
	if (!found) {
		fprintf(stderr, "agxqd: unknown backend %s (built with:",
		    config.backend);
		for (names = engine_backends(); *names != NULL; names++)
			fprintf(stderr, " %s", *names);
		fprintf(stderr, ")\n");
		return 2;
	}
	if (config.foreground) {
		if (config.log_path[0] != '\0' &&
		    log_open(config.log_path, config.log_level) != 0) {
			fprintf(stderr, "agxqd: cannot open log %s: %s\n",
			    config.log_path, strerror(errno));
			return 1;
		}
		if (config.log_path[0] == '\0')
			log_open(NULL, config.log_level);
		return run_daemon(-1);
	}
	if (config.log_path[0] == '\0')
		snprintf(config.log_path, sizeof config.log_path, "%s.log",
		    config.socket_path);
	return start_background();
}

/* `agxqd stop` and `agxqd status`. */
static int
cmd_ctl(int stop, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int ch, json = 0, timeout = 10;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			snprintf(config.socket_path, sizeof config.socket_path,
			    "%s", optarg);
			break;
		case 't':
			timeout = (int)parse_num("--timeout", optarg, 3600, 10);
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if ((stop && json) || (!stop && timeout != 10) || optind != argc) {
		usage(stderr);
		return 2;
	}
	return stop ? ctl_stop(config.socket_path, timeout) :
	    ctl_status(config.socket_path, json);
}

int
main(int argc, char **argv)
{
	const char *env;

	/*
	 * Keep freed large blocks for reuse: by default glibc maps and unmaps
	 * (or trims) buffers of a few hundred KiB on every request, and each
	 * page of them faults again when the next frame is read. Measured:
	 * 1 MiB inline requests 17.5 ms -> 6.7 ms each with only the daemon
	 * tuned (docs/SHM.md). Costs at most this much retained free memory.
	 */
#ifdef __GLIBC__
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
	config_defaults(&config);
	if ((env = getenv("AGXQ_SOCKET")) != NULL && *env != '\0')
		snprintf(config.socket_path, sizeof config.socket_path, "%s",
		    env);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("agxqd %s (protocol %d; backends:", AGXQ_VERSION_STRING,
		    CODEC_PROTOCOL_VERSION);
		for (const char *const *n = engine_backends(); *n != NULL; n++)
			printf(" %s", *n);
		printf(")\n");
		return 0;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "start") == 0)
		return cmd_start(argc - 1, argv + 1);
	if (strcmp(argv[1], "stop") == 0)
		return cmd_ctl(1, argc - 1, argv + 1);
	if (strcmp(argv[1], "status") == 0)
		return cmd_ctl(0, argc - 1, argv + 1);
	fprintf(stderr, "agxqd: unknown command %s\n", argv[1]);
	usage(stderr);
	return 2;
}
