/*
 * test_recovery: a backend fault fails only the batch that hit it, with a
 * clear error, and agxqd recovers without a restart. The CPU backend's
 * fault injection (AGXQ_CPU_FAULT_EVERY / AGXQ_CPU_FAULT_KIND, see
 * server/backend_cpu.c) stands in for a GPU fault, so this runs in CI; the
 * CUDA backend's own injection is tested by test_cuda on a GPU.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agxq.h"
#include "agxq_direct.h"
#include "daemon_util.h"
#include "testlib.h"

/*
 * Starts a daemon whose backend fails every `every` runs (lost: as a sticky
 * device fault that needs a reopen), sends 12 sequential mlp requests and
 * checks exactly every `every`-th fails with AGXQ_EBACKEND while every
 * other result is right; then checks the stats and the log.
 */
static void
fault_case(int every, int lost)
{
	static const char *const extra[] = { "--max-batch", "1", NULL };
	struct du_daemon d;
	agxq_direct *dh = NULL;
	agxq_direct_model *dm = NULL;
	agxq_graph *g = NULL;
	agxq_client *c = NULL;
	agxq_model *m = NULL;
	struct du_io io[12];
	char buf[32], *json = NULL, log[256], *text = NULL;
	int nfail = 0;
	FILE *f;

	memset(&d, 0, sizeof d);
	memset(io, 0, sizeof io);
	snprintf(buf, sizeof buf, "%d", every);
	setenv("AGXQ_CPU_FAULT_EVERY", buf, 1);
	setenv("AGXQ_CPU_FAULT_KIND", lost ? "lost" : "error", 1);
	EXPECT(du_start(&d, extra) == 0);
	unsetenv("AGXQ_CPU_FAULT_EVERY");
	unsetenv("AGXQ_CPU_FAULT_KIND");
	if (testlib_failed)
		goto out;
	EXPECT(agxq_reference_build(AGXQ_REF_MLP, 42, &g) == 0);
	EXPECT(agxq_direct_open("cpu", 0, &dh) == 0);
	EXPECT(agxq_direct_load(dh, g, &dm) == 0);
	EXPECT(agxq_connect(d.sock, &c) == 0);
	EXPECT(agxq_model_load(c, g, "mlp", &m) == 0);
	if (testlib_failed)
		goto out;
	for (int i = 0; i < 12; i++) {
		agxq_result *r = NULL;
		int rc;

		EXPECT(du_io_make(&io[i], AGXQ_REF_MLP, 4, 0, 500 + i,
		    dm) == 0);
		rc = agxq_infer(m, &io[i].in, 1, NULL, &r);
		if ((i + 1) % every == 0) {
			EXPECT(rc == AGXQ_EBACKEND);
			nfail++;
		} else {
			EXPECT(rc == 0);
			if (rc == 0)
				EXPECT(du_io_check(&io[i], r, 1e-5, 1e-6) == 0);
		}
		agxq_result_free(r);
	}
	EXPECT(agxq_stats_json(c, &json) == 0);
	if (json != NULL) {
		EXPECT(du_json_num(json, "errors") == nfail);
		EXPECT(du_json_num(json, "backend_foreign_calls") == 0);
	}
	/*
	 * The daemon logged the reset (lost) or nothing of the kind. The
	 * executor reopens the device after the failed reply is on its way,
	 * so the last reopen's line may come a moment after that reply: read
	 * the log until it has every line expected, for up to 3 s.
	 */
	snprintf(log, sizeof log, "%s.log", d.sock);
	for (int tries = 0; tries < 30; tries++) {
		free(text);
		text = NULL;
		if ((f = fopen(log, "r")) != NULL) {
			size_t len = 0;

			text = calloc(1, 1 << 16);
			if (text != NULL)
				len = fread(text, 1, (1 << 16) - 1, f);
			fclose(f);
			(void)len;
		}
		if (text == NULL || !lost ||
		    du_count(text, "models reloaded") >= nfail)
			break;
		usleep(100000);
	}
	EXPECT(text != NULL);
	if (text != NULL) {
		EXPECT(strstr(text, "injected fault") != NULL);
		EXPECT((du_count(text, "models reloaded") == nfail) == !!lost);
		EXPECT(lost || strstr(text, "needs a reset") == NULL);
	}
out:
	free(text);
	free(json);
	agxq_model_unload(m);
	agxq_close(c);
	agxq_direct_unload(dm);
	agxq_direct_close(dh);
	agxq_graph_free(g);
	for (int i = 0; i < 12; i++)
		du_io_free(&io[i]);
	if (d.sock[0] != '\0')
		EXPECT(du_stop(&d) == 0);
	du_cleanup(&d);
}

/* A plain error in one batch: that batch fails, the device is not reset. */
static void
case_batch_error(void)
{
	fault_case(3, 0);
}

/* A lost device: the batch fails, the backend is reopened, models reloaded. */
static void
case_device_lost(void)
{
	fault_case(4, 1);
}

static const struct testlib_case cases[] = {
	{ "batch_error", case_batch_error },
	{ "device_lost", case_device_lost },
};

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	du_watchdog(100);
	return testlib_run(cases, TESTLIB_N(cases), argc, argv);
}
