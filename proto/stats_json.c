/*
 * stats_json: Stats message to JSON text.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "stats_json.h"

/* Writes s as a JSON string (escaping quotes, backslashes and controls). */
static void
stats_json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s != NULL && *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

/* Renders st as JSON. */
char *
stats_json_render(const Agxq__Stats *st)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	if ((f = open_memstream(&buf, &len)) == NULL)
		return NULL;
	fprintf(f, "{\"server_version\": ");
	stats_json_string(f, st->server_version);
	fprintf(f, ", \"backend\": ");
	stats_json_string(f, st->backend);
	fprintf(f, ", \"pid\": %" PRId64 ", \"uptime_us\": %" PRIu64
	    ", \"connections\": %u, \"frames_in\": %" PRIu64
	    ", \"frames_out\": %" PRIu64 ", \"bytes_in\": %" PRIu64
	    ", \"bytes_out\": %" PRIu64 ", \"bytes_in_raw\": %" PRIu64
	    ", \"bytes_out_raw\": %" PRIu64 ", \"backend_calls\": %" PRIu64
	    ", \"backend_foreign_calls\": %" PRIu64 ", \"max_batch\": %u"
	    ", \"max_delay_us\": %u, \"shm_regions\": %u"
	    ", \"shm_bytes\": %" PRIu64 ", \"worker_pid\": %" PRId64
	    ", \"worker_restarts\": %u, \"loop_busy_us\": %" PRIu64
	    ", \"executor_busy_us\": %" PRIu64
	    ", \"executor_wait_us\": %" PRIu64 ", \"io_threads\": %u"
	    ", \"ring_requests\": %" PRIu64 ", \"ring_answered\": %" PRIu64
	    ", \"ring_raw\": %" PRIu64 ", \"ring_answered_early\": %" PRIu64,
	    st->pid, st->uptime_us, st->connections, st->frames_in,
	    st->frames_out, st->bytes_in, st->bytes_out, st->bytes_in_raw,
	    st->bytes_out_raw, st->backend_calls, st->backend_foreign_calls,
	    st->max_batch, st->max_delay_us, st->shm_regions, st->shm_bytes,
	    st->worker_pid, st->worker_restarts, st->loop_busy_us,
	    st->executor_busy_us, st->executor_wait_us, st->io_threads,
	    st->ring_requests, st->ring_answered, st->ring_raw,
	    st->ring_answered_early);
	fprintf(f, ", \"ring_wait_p50_us\": %" PRIu64
	    ", \"ring_wait_p99_us\": %" PRIu64 ", \"out_p50_us\": %" PRIu64
	    ", \"out_p99_us\": %" PRIu64 ", \"models\": [",
	    st->ring_wait_p50_us, st->ring_wait_p99_us, st->out_p50_us,
	    st->out_p99_us);
	for (size_t i = 0; i < st->n_models; i++) {
		const Agxq__ModelStats *m = st->models[i];
		double mean = m->batches ? (double)m->rows / (double)m->batches : 0;

		fprintf(f, "%s{\"model_id\": %" PRIu64 ", \"name\": ",
		    i ? ", " : "", m->model_id);
		stats_json_string(f, m->name);
		fprintf(f, ", \"refs\": %u, \"requests\": %" PRIu64
		    ", \"batches\": %" PRIu64 ", \"rows\": %" PRIu64
		    ", \"mean_batch_rows\": %.2f, \"errors\": %" PRIu64
		    ", \"timeouts\": %" PRIu64 ", \"rejected_busy\": %" PRIu64
		    ", \"queue_p50_us\": %" PRIu64 ", \"queue_p99_us\": %" PRIu64
		    ", \"exec_p50_us\": %" PRIu64 ", \"exec_p99_us\": %" PRIu64
		    ", \"weight_bytes\": %" PRIu64 ", \"queued\": %u",
		    m->refs, m->requests, m->batches, m->rows, mean, m->errors,
		    m->timeouts, m->rejected_busy, m->queue_p50_us,
		    m->queue_p99_us, m->exec_p50_us, m->exec_p99_us,
		    m->weight_bytes, m->queued);
		fprintf(f, ", \"in_p50_us\": %" PRIu64 ", \"in_p99_us\": %" PRIu64
		    ", \"stage_p50_us\": %" PRIu64 ", \"stage_p99_us\": %" PRIu64
		    ", \"device_p50_us\": %" PRIu64 ", \"device_p99_us\": %"
		    PRIu64 ", \"reply_p50_us\": %" PRIu64 ", \"reply_p99_us\": %"
		    PRIu64 "}", m->in_p50_us, m->in_p99_us, m->stage_p50_us,
		    m->stage_p99_us, m->device_p50_us, m->device_p99_us,
		    m->reply_p50_us, m->reply_p99_us);
	}
	fprintf(f, "]}\n");
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}
