/*
 * agxq-bench: the throughput comparison of issue 3. For each reference model,
 * client count and mode (threads or processes) it measures three kinds of
 * client: direct-naive (own in-process engine, library defaults),
 * direct-tuned (own engine, max(1, cores / N) BLAS threads) and proxy (own
 * connection to a private agxqd that the bench starts itself). One op is a
 * synchronous batch-4 request. It also runs a round-trip probe (trivial
 * model through agxqd against a raw Unix-socket ping-pong).
 *
 *   agxq-bench [--models linear,mlp,transformer] [--clients 1,2,4,8]
 *       [--modes threads,processes] [--backend cpu|cuda] [--agxqd PATH]
 *       [--window-ms N] [--warmup-ms N] [--max-windows N] [--csv FILE]
 *       [--svg FILE] [--md FILE] [--quick] [--probe-only] [--no-probe]
 *       [--max-batch N] [--max-delay-us N] [--kinds naive,tuned,proxy]
 *
 * Progress goes to stderr, the markdown table to stdout. Exits 1 when any
 * request failed or agxqd could not be started.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agxq.h"
#include "bench.h"

#define BENCH_MAX_RESULTS 1024

/* The command line. */
struct bench_opts {
	int models[3], nmodels;
	int clients[BENCH_MAX_CLIENTS], nclients;
	int modes[BENCH_NMODES], nmodes;
	int kinds[BENCH_NKINDS], nkinds;
	const char *backend;
	char *agxqd;
	struct bench_timing tm;
	const char *csv, *svg, *md;
	int quick, probe_only, no_probe;
	int max_batch, max_delay_us;
};

/* Monotonic time in seconds. */
double
bench_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleeps for ms milliseconds (fractions allowed). */
void
bench_sleep_ms(double ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000) * 1e6);
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Name of a kind as the table and CSV show it. */
const char *
bench_kind_name(enum bench_kind k)
{
	switch (k) {
	case BENCH_NAIVE:
		return "direct-naive";
	case BENCH_TUNED:
		return "direct-tuned";
	case BENCH_PROXY:
		return "proxy";
	default:
		return "?";
	}
}

/* Name of a mode. */
const char *
bench_mode_name(enum bench_mode m)
{
	return m == BENCH_THREADS ? "threads" : "processes";
}

/* Prints the usage to f. */
static void
bench_usage(FILE *f)
{
	fprintf(f,
"usage: agxq-bench [--models linear,mlp,transformer] [--clients 1,2,4,8]\n"
"                  [--modes threads,processes] [--backend cpu|cuda]\n"
"                  [--agxqd PATH] [--window-ms N] [--warmup-ms N]\n"
"                  [--max-windows N] [--csv FILE] [--svg FILE] [--md FILE]\n"
"                  [--quick] [--probe-only] [--no-probe] [--max-batch N]\n"
"                  [--max-delay-us N] [--kinds naive,tuned,proxy]\n");
}

/* Parses a decimal in [lo, hi]; -1 when invalid. */
static int
bench_parse_int(const char *s, int lo, int hi, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

/* Parses a comma-separated list with parse_one; returns the count or -1. */
static int
bench_parse_list(const char *arg, int *out, int max,
    int (*parse_one)(const char *))
{
	char *copy, *tok, *save = NULL;
	int n = 0;

	if ((copy = strdup(arg)) == NULL)
		return -1;
	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		int v = parse_one(tok);

		if (v < 0 || n == max) {
			free(copy);
			return -1;
		}
		out[n++] = v;
	}
	free(copy);
	return n > 0 ? n : -1;
}

/* One element of --models. */
static int
bench_parse_model(const char *s)
{
	int v = agxq_reference_parse(s);

	return v > 0 ? v : -1;
}

/* One element of --clients. */
static int
bench_parse_clients(const char *s)
{
	int v;

	return bench_parse_int(s, 1, BENCH_MAX_CLIENTS, &v) == 0 ? v : -1;
}

/* One element of --modes. */
static int
bench_parse_mode(const char *s)
{
	if (strcmp(s, "threads") == 0)
		return BENCH_THREADS;
	if (strcmp(s, "processes") == 0)
		return BENCH_PROCESSES;
	return -1;
}

/* One element of --kinds. */
static int
bench_parse_kind(const char *s)
{
	if (strcmp(s, "naive") == 0)
		return BENCH_NAIVE;
	if (strcmp(s, "tuned") == 0)
		return BENCH_TUNED;
	if (strcmp(s, "proxy") == 0)
		return BENCH_PROXY;
	return -1;
}

/* Whether --kinds asks for kind k (all kinds when not given). */
static int
bench_wants_kind(const struct bench_opts *o, int k)
{
	if (o->nkinds == 0)
		return 1;
	for (int i = 0; i < o->nkinds; i++) {
		if (o->kinds[i] == k)
			return 1;
	}
	return 0;
}

/* Parses argv into o; 0, or -1 after printing why. */
static int
bench_parse(int argc, char **argv, struct bench_opts *o)
{
	int models_set = 0, clients_set = 0, modes_set = 0, window = -1;
	int warmup = -1, maxwin = -1;

	o->backend = "cpu";
	o->max_batch = 0;
	o->max_delay_us = -1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int takes = 1, bad = 0;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			bench_usage(stdout);
			exit(0);
		} else if (strcmp(a, "--quick") == 0) {
			o->quick = 1;
			takes = 0;
		} else if (strcmp(a, "--probe-only") == 0) {
			o->probe_only = 1;
			takes = 0;
		} else if (strcmp(a, "--no-probe") == 0) {
			o->no_probe = 1;
			takes = 0;
		} else if (v == NULL) {
			bad = 1;
		} else if (strcmp(a, "--models") == 0) {
			bad = (o->nmodels = bench_parse_list(v, o->models, 3,
			    bench_parse_model)) < 0;
			models_set = 1;
		} else if (strcmp(a, "--clients") == 0) {
			bad = (o->nclients = bench_parse_list(v, o->clients,
			    BENCH_MAX_CLIENTS, bench_parse_clients)) < 0;
			clients_set = 1;
		} else if (strcmp(a, "--modes") == 0) {
			bad = (o->nmodes = bench_parse_list(v, o->modes,
			    BENCH_NMODES, bench_parse_mode)) < 0;
			modes_set = 1;
		} else if (strcmp(a, "--kinds") == 0) {
			bad = (o->nkinds = bench_parse_list(v, o->kinds,
			    BENCH_NKINDS, bench_parse_kind)) < 0;
		} else if (strcmp(a, "--backend") == 0) {
			o->backend = v;
			bad = strcmp(v, "cpu") != 0 && strcmp(v, "cuda") != 0;
		} else if (strcmp(a, "--agxqd") == 0) {
			free(o->agxqd);
			o->agxqd = strdup(v);
		} else if (strcmp(a, "--window-ms") == 0)
			bad = bench_parse_int(v, 10, 600000, &window);
		else if (strcmp(a, "--warmup-ms") == 0)
			bad = bench_parse_int(v, 0, 600000, &warmup);
		else if (strcmp(a, "--max-windows") == 0)
			bad = bench_parse_int(v, 1, BENCH_MAX_WINDOWS, &maxwin);
		else if (strcmp(a, "--csv") == 0)
			o->csv = v;
		else if (strcmp(a, "--svg") == 0)
			o->svg = v;
		else if (strcmp(a, "--md") == 0)
			o->md = v;
		else if (strcmp(a, "--max-batch") == 0)
			bad = bench_parse_int(v, 1, 1 << 20, &o->max_batch);
		else if (strcmp(a, "--max-delay-us") == 0)
			bad = bench_parse_int(v, 0, 10000000, &o->max_delay_us);
		else
			bad = 1;
		if (bad) {
			fprintf(stderr, "agxq-bench: bad argument: %s%s%s\n", a,
			    takes && v != NULL ? " " : "",
			    takes && v != NULL ? v : "");
			bench_usage(stderr);
			return -1;
		}
		i += takes;
	}
	if (!models_set) {
		o->nmodels = o->quick ? 2 : 3;
		for (int i = 0; i < o->nmodels; i++)
			o->models[i] = AGXQ_REF_LINEAR + i;
	}
	if (!clients_set) {
		static const int def[4] = { 1, 2, 4, 8 };

		o->nclients = o->quick ? 2 : 4;
		memcpy(o->clients, def, sizeof def);
	}
	if (!modes_set) {
		o->nmodes = o->quick ? 1 : 2;
		o->modes[0] = BENCH_THREADS;
		o->modes[1] = BENCH_PROCESSES;
	}
	o->tm.window_ms = window >= 0 ? window : o->quick ? 200 : 1000;
	o->tm.warmup_ms = warmup >= 0 ? warmup : o->quick ? 100 : 500;
	o->tm.max_windows = maxwin >= 0 ? maxwin : o->quick ? 3 : 6;
	if (o->agxqd == NULL && (o->agxqd = bench_find_agxqd()) == NULL)
		return -1;
	return 0;
}

/* Appends the measurement (model, mode, kind, clients) to the plan. */
static void
bench_plan_add(struct bench_result *r, size_t *n, int model, int mode,
    int kind, int clients)
{
	if (*n == BENCH_MAX_RESULTS)
		return;
	memset(&r[*n], 0, sizeof r[*n]);
	r[*n].model = (agxq_reference)model;
	r[*n].mode = (enum bench_mode)mode;
	r[*n].kind = (enum bench_kind)kind;
	r[*n].clients = clients;
	r[*n].efficiency = -1;
	(*n)++;
}

/*
 * Fills the plan: per model, mode and client count the three kinds. --quick
 * adds one processes row (mlp, 2 clients) to its threads-only plan.
 */
static size_t
bench_plan(const struct bench_opts *o, struct bench_result *r)
{
	size_t n = 0;

	if (o->probe_only)
		return 0;
	for (int mi = 0; mi < o->nmodels; mi++) {
		for (int m = 0; m < o->nmodes; m++) {
			for (int c = 0; c < o->nclients; c++) {
				for (int k = 0; k < BENCH_NKINDS; k++) {
					/* BLAS threads only tune the cpu backend */
					if ((k == BENCH_TUNED &&
					    strcmp(o->backend, "cpu") != 0) ||
					    !bench_wants_kind(o, k))
						continue;
					bench_plan_add(r, &n, o->models[mi],
					    o->modes[m], k, o->clients[c]);
				}
			}
		}
		if (o->quick && o->nmodes == 1 &&
		    o->models[mi] == AGXQ_REF_MLP) {
			for (int k = 0; k < BENCH_NKINDS; k++) {
				if (bench_wants_kind(o, k))
					bench_plan_add(r, &n, o->models[mi],
					    BENCH_PROCESSES, k, 2);
			}
		}
	}
	return n;
}

/* Sets every result's efficiency from the 1-client result of its series. */
static void
bench_efficiency(struct bench_result *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		r[i].efficiency = -1;
		for (size_t j = 0; j < n && r[i].done; j++) {
			if (r[j].done && r[j].clients == 1 &&
			    r[j].model == r[i].model &&
			    r[j].mode == r[i].mode && r[j].kind == r[i].kind &&
			    r[j].ops_s > 0)
				r[i].efficiency = r[i].ops_s /
				    ((double)r[i].clients * r[j].ops_s);
		}
	}
}

/* Writes the run's header (command, machine, date) into a new string. */
static char *
bench_header(int argc, char **argv, const struct bench_opts *o, int ncpu)
{
	char cpu[256] = "unknown", line[512], date[64], *buf = NULL;
	size_t len = 0;
	time_t now = time(NULL);
	FILE *f, *out;

	if ((f = fopen("/proc/cpuinfo", "r")) != NULL) {
		while (fgets(line, sizeof line, f) != NULL) {
			char *colon = strchr(line, ':');

			if (strncmp(line, "model name", 10) == 0 &&
			    colon != NULL) {
				snprintf(cpu, sizeof cpu, "%s", colon + 2);
				cpu[strcspn(cpu, "\n")] = '\0';
				break;
			}
		}
		fclose(f);
	}
	strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
	if ((out = open_memstream(&buf, &len)) == NULL)
		return NULL;
	fprintf(out, "## agxq-bench results\n\n- Command: `agxq-bench");
	for (int i = 1; i < argc; i++)
		fprintf(out, " %s", argv[i]);
	fprintf(out, "`\n- Machine: %d CPUs (%s), backend %s\n- Date: %s\n"
	    "- Windows: %d ms after a %d ms warm-up, up to %d windows\n",
	    ncpu, cpu, o->backend, date, o->tm.window_ms, o->tm.warmup_ms,
	    o->tm.max_windows);
	fclose(out);
	return buf;
}

/* Runs every measurement of the plan, printing progress; returns failures. */
static uint64_t
bench_run_plan(const struct bench_opts *o, struct bench_result *r, size_t n,
    const char *socket, const char *self, int ncpu)
{
	uint64_t failures = 0;

	for (size_t i = 0; i < n; i++) {
		struct bench_client_spec spec = {
			.kind = r[i].kind, .model = r[i].model,
			.backend = o->backend, .socket = socket,
			.blas_threads = ncpu / r[i].clients > 1 ?
			    ncpu / r[i].clients : 1
		};

		bench_measure(&spec, r[i].mode, r[i].clients, &o->tm, self,
		    &r[i]);
		failures += r[i].failures;
		if (!r[i].done)
			fprintf(stderr, "[%zu/%zu] %s %s %s x%d: FAILED\n",
			    i + 1, n, agxq_reference_name(r[i].model),
			    bench_kind_name(r[i].kind),
			    bench_mode_name(r[i].mode), r[i].clients);
		else
			fprintf(stderr, "[%zu/%zu] %s %s %s x%d: %.0f ops/s "
			    "(%s%.0f%%, %d windows)%s\n", i + 1, n,
			    agxq_reference_name(r[i].model),
			    bench_kind_name(r[i].kind),
			    bench_mode_name(r[i].mode), r[i].clients,
			    r[i].ops_s, r[i].stable ? "stable, spread " :
			    "UNSTABLE, spread ", r[i].spread * 100,
			    r[i].windows, r[i].failures ? ", FAILURES" : "");
	}
	return failures;
}

int
main(int argc, char **argv)
{
	static struct bench_result results[BENCH_MAX_RESULTS];
	struct bench_opts o = { 0 };
	struct bench_probe probe = { 0 };
	struct bench_daemon *daemon = NULL;
	char self[PATH_MAX], *header = NULL;
	uint64_t failures = 0;
	ssize_t len;
	size_t n;
	int ncpu, status = 1;
	FILE *md;

	if (argc > 1 && strcmp(argv[1], "--worker") == 0)
		return bench_worker_main(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	if (bench_parse(argc, argv, &o) != 0)
		return 2;
	if ((len = readlink("/proc/self/exe", self, sizeof self - 1)) <= 0) {
		fprintf(stderr, "agxq-bench: cannot find own binary\n");
		goto out;
	}
	self[len] = '\0';
	if ((ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN)) < 1)
		ncpu = 1;
	n = bench_plan(&o, results);

	if (bench_daemon_start(o.agxqd, o.backend, o.max_batch,
	    o.max_delay_us, &daemon) != 0) {
		fprintf(stderr, "agxq-bench: cannot start agxqd (%s)\n",
		    o.agxqd);
		goto out;
	}
	fprintf(stderr, "agxq-bench: agxqd (%s backend) on %s; %zu "
	    "measurements\n", o.backend, bench_daemon_socket(daemon), n);
	if (!o.no_probe) {
		fprintf(stderr, "agxq-bench: round-trip probe\n");
		if (bench_probe_run(bench_daemon_socket(daemon),
		    o.quick ? 0.2 : 1.0, &probe) != 0)
			fprintf(stderr, "agxq-bench: probe: %llu failures\n",
			    (unsigned long long)probe.failures);
		failures += probe.failures;
		fprintf(stderr, "agxq-bench: probe: daemon %.1f us, raw %.1f "
		    "us, raw 8 pairs %.0f rt/s\n", probe.daemon_us,
		    probe.raw_us, probe.raw8_rt_s);
	}
	failures += bench_run_plan(&o, results, n,
	    bench_daemon_socket(daemon), self, ncpu);
	bench_daemon_stop(daemon);
	bench_efficiency(results, n);

	header = bench_header(argc, argv, &o, ncpu);
	bench_report_md(stdout, results, n, &probe, header);
	if (o.md != NULL) {
		if ((md = fopen(o.md, "w")) == NULL) {
			fprintf(stderr, "agxq-bench: %s: %s\n", o.md,
			    strerror(errno));
			goto out;
		}
		bench_report_md(md, results, n, &probe, header);
		fclose(md);
	}
	if (o.csv != NULL && bench_report_csv(o.csv, results, n) != 0) {
		fprintf(stderr, "agxq-bench: cannot write %s\n", o.csv);
		goto out;
	}
	if (o.svg != NULL && bench_report_svg(o.svg, results, n) != 0) {
		fprintf(stderr, "agxq-bench: cannot write %s\n", o.svg);
		goto out;
	}
	if (failures != 0)
		fprintf(stderr, "agxq-bench: %llu failed requests\n",
		    (unsigned long long)failures);
	status = failures == 0 ? 0 : 1;
out:
	free(header);
	free(o.agxqd);
	return status;
}
