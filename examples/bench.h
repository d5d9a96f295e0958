/*
 * bench.h — shared types of agxq-bench, the throughput comparison between
 * direct in-process execution and agxqd (DESIGN.md: Workloads and the
 * comparison). Modules: bench.c (command line, plan, main), bench_daemon.c
 * (the private agxqd), bench_client.c (one measuring client, in a thread or
 * a worker process), bench_run.c (one measurement: clients, barrier,
 * windows), bench_probe.c (round-trip probe), bench_report.c (table, CSV,
 * SVG).
 */
#ifndef BENCH_H
#define BENCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "agxq.h"

#define BENCH_BATCH 4           /* rows per request, as the reference */
#define BENCH_MAX_CLIENTS 64
#define BENCH_MAX_WINDOWS 32
#define BENCH_STABLE_WINDOWS 3  /* windows that must agree */
#define BENCH_STABLE_SPREAD 0.10
#define BENCH_SEED 42

enum bench_kind {
	BENCH_NAIVE,   /* direct, library defaults */
	BENCH_TUNED,   /* direct, max(1, cores / N) BLAS threads */
	BENCH_PROXY,   /* through agxqd */
	BENCH_NKINDS
};

enum bench_mode {
	BENCH_THREADS,
	BENCH_PROCESSES,
	BENCH_NMODES
};

/* Phases of the control block: clients run while phase >= BENCH_WARMUP. */
#define BENCH_STOP (-1)
#define BENCH_WAIT 0
#define BENCH_WARMUP 1
#define BENCH_WINDOW(w) (2 + (w))  /* window w = 0, 1, ... */

/* One client's counter on its own cache line. */
struct bench_slot {
	_Atomic uint64_t ops;
	char pad[56];
};

/*
 * The control block of one measurement, shared by the controller and its
 * clients: plain memory for threads, a shared memfd mapping for processes.
 */
struct bench_ctl {
	_Atomic int phase;
	_Atomic int measure_from;   /* first phase whose latencies count */
	_Atomic int ready;          /* clients set up */
	_Atomic int setup_failed;
	_Atomic uint64_t failures;  /* failed or malformed requests */
	struct bench_slot slots[BENCH_MAX_CLIENTS];
};

/* What one client runs. */
struct bench_client_spec {
	enum bench_kind kind;
	agxq_reference model;
	const char *backend;
	const char *socket;      /* agxqd socket, for BENCH_PROXY */
	int blas_threads;        /* BENCH_TUNED: threads per client */
};

/* Latency samples (µs), each tagged with the phase it started in. */
struct bench_samples {
	float *us;
	int *phase;
	size_t n, cap;
};

/* One measurement: a model, a mode, a kind and a client count. */
struct bench_result {
	agxq_reference model;
	enum bench_mode mode;
	enum bench_kind kind;
	int clients;
	int done;               /* measured (else the cell is empty) */
	double ops_s;           /* median of the last 3 windows */
	double efficiency;      /* < 0: no 1-client figure */
	double p50_us, p99_us;
	int windows;
	double spread;          /* max/min - 1 of the last 3 windows */
	int stable;
	uint64_t failures;
};

/* Figures of the round-trip probe. */
struct bench_probe {
	int done;
	size_t msg_bytes;
	double daemon_us;       /* (a) trivial model through agxqd, 1 client */
	double daemon_p99_us;
	double raw_us;          /* (b) raw socket ping-pong, 1 pair */
	double raw1_rt_s;       /* round trips/s, 1 pair */
	double raw8_rt_s;       /* round trips/s, 8 pairs together */
	uint64_t failures;
};

/* Timing of a measurement. */
struct bench_timing {
	int window_ms, warmup_ms, max_windows;
};

/* bench.c */
double bench_now_s(void);
void bench_sleep_ms(double ms);
const char *bench_kind_name(enum bench_kind k);
const char *bench_mode_name(enum bench_mode m);

/* bench_daemon.c */
struct bench_daemon;
int bench_daemon_start(const char *agxqd, const char *backend, int max_batch,
    int max_delay_us, struct bench_daemon **out);
const char *bench_daemon_socket(const struct bench_daemon *d);
void bench_daemon_stop(struct bench_daemon *d);
char *bench_find_agxqd(void);

/* bench_client.c */
int bench_client_run(const struct bench_client_spec *spec,
    struct bench_ctl *ctl, int slot, struct bench_samples *samples);
int bench_samples_add(struct bench_samples *s, float us, int phase);
void bench_samples_keep(struct bench_samples *s, int from);
void bench_samples_free(struct bench_samples *s);
int bench_worker_main(int argc, char **argv);

/* bench_run.c */
int bench_measure(const struct bench_client_spec *spec, enum bench_mode mode,
    int clients, const struct bench_timing *tm, const char *self,
    struct bench_result *r);
void bench_percentiles(float *v, size_t n, double *p50, double *p99);

/* bench_probe.c */
int bench_probe_run(const char *socket, double seconds, struct bench_probe *p);

/* bench_report.c */
void bench_report_md(FILE *f, const struct bench_result *r, size_t n,
    const struct bench_probe *p, const char *header);
int bench_report_csv(const char *path, const struct bench_result *r, size_t n);
int bench_report_svg(const char *path, const struct bench_result *r, size_t n);

#endif
