/*
 * bench_report: agxq-bench's output. A markdown table per model (rows:
 * clients x threads/processes; columns: direct-naive, direct-tuned and proxy
 * ops/s, proxy efficiency, latencies and ratios) plus the round-trip probe;
 * a CSV line per measurement; and a hand-written SVG chart, one panel per
 * model, of ops/s against clients for every mode and kind.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define SVG_PANEL_W 420
#define SVG_PANEL_H 300
#define SVG_LEFT 70
#define SVG_RIGHT 20
#define SVG_TOP 40
#define SVG_BOTTOM 50
#define SVG_LEGEND_H 60

static const char *const bench_kind_colors[BENCH_NKINDS] = {
	"#d62728", "#ff7f0e", "#1f77b4"
};

/* The measurement of (model, mode, kind, clients), or NULL. */
static const struct bench_result *
bench_find(const struct bench_result *r, size_t n, agxq_reference model,
    enum bench_mode mode, enum bench_kind kind, int clients)
{
	for (size_t i = 0; i < n; i++) {
		if (r[i].done && r[i].model == model && r[i].mode == mode &&
		    r[i].kind == kind && r[i].clients == clients)
			return &r[i];
	}
	return NULL;
}

/* Writes r's ops/s to buf, with its spread when not stable. */
static const char *
bench_fmt_ops(char *buf, size_t len, const struct bench_result *r)
{
	if (r == NULL)
		snprintf(buf, len, "–");
	else if (r->stable)
		snprintf(buf, len, "%.0f", r->ops_s);
	else
		snprintf(buf, len, "%.0f (±%.0f%%)", r->ops_s,
		    r->spread * 100);
	return buf;
}

/* Writes r's p50/p99 latency to buf. */
static const char *
bench_fmt_lat(char *buf, size_t len, const struct bench_result *r)
{
	if (r == NULL)
		snprintf(buf, len, "–");
	else
		snprintf(buf, len, "%.0f / %.0f", r->p50_us, r->p99_us);
	return buf;
}

/* Writes a / b to buf as a ratio. */
static const char *
bench_fmt_ratio(char *buf, size_t len, const struct bench_result *a,
    const struct bench_result *b)
{
	if (a == NULL || b == NULL || b->ops_s <= 0)
		snprintf(buf, len, "–");
	else
		snprintf(buf, len, "%.2f", a->ops_s / b->ops_s);
	return buf;
}

/* Collects the distinct client counts of r in order of appearance. */
static int
bench_client_counts(const struct bench_result *r, size_t n, int *out, int max)
{
	int k = 0;

	for (size_t i = 0; i < n; i++) {
		int seen = 0;

		for (int j = 0; j < k; j++)
			seen |= out[j] == r[i].clients;
		if (!seen && k < max)
			out[k++] = r[i].clients;
	}
	return k;
}

/* Prints the round-trip probe section. */
static void
bench_report_probe(FILE *f, const struct bench_result *r, size_t n,
    const struct bench_probe *p)
{
	static const int counts[2] = { 1, 8 };

	fprintf(f, "### Round-trip probe (%zu-byte payload each way)\n\n",
	    p->msg_bytes);
	fprintf(f, "| path | µs per round trip | round trips/s |\n");
	fprintf(f, "|---|---:|---:|\n");
	if (p->daemon_us > 0)
		fprintf(f, "| (a) trivial model (ReLU on [1, 256]) through agxqd,"
		    " 1 client | %.1f (p99 %.0f) | %.0f |\n", p->daemon_us,
		    p->daemon_p99_us, 1e6 / p->daemon_us);
	fprintf(f, "| (b) raw Unix-socket ping-pong, 1 pair | %.1f | %.0f |\n",
	    p->raw_us, p->raw1_rt_s);
	fprintf(f, "| (c) raw Unix-socket ping-pong, %d pairs together | "
	    "%.1f per pair | %.0f |\n\n", 8,
	    p->raw8_rt_s > 0 ? 8e6 / p->raw8_rt_s : 0, p->raw8_rt_s);
	if (p->daemon_us > 0 && p->raw_us > 0)
		fprintf(f, "Trivial-model round trip / raw ping-pong: "
		    "**%.2fx** (target <= 1.5x).\n\n", p->daemon_us / p->raw_us);

	for (int m = 0; m < BENCH_NMODES; m++) {
		for (int i = 0; i < 2; i++) {
			const struct bench_result *x = bench_find(r, n,
			    AGXQ_REF_LINEAR, (enum bench_mode)m, BENCH_PROXY,
			    counts[i]);
			double ceil = i == 0 ? p->raw1_rt_s : p->raw8_rt_s;

			if (x == NULL || ceil <= 0)
				continue;
			fprintf(f, "- linear proxy, %d client%s (%s): %.0f ops/s "
			    "= **%.0f%%** of the raw ceiling with %d pair%s "
			    "(%.0f round trips/s; target >= 70%%)\n",
			    counts[i], counts[i] > 1 ? "s" : "",
			    bench_mode_name((enum bench_mode)m), x->ops_s,
			    100 * x->ops_s / ceil, counts[i],
			    counts[i] > 1 ? "s" : "", ceil);
		}
	}
	fprintf(f, "\n");
}

/*
 * Prints the results as markdown to f: header (may be NULL), a table per
 * model, then the probe (p may be NULL or not done).
 */
void
bench_report_md(FILE *f, const struct bench_result *r, size_t n,
    const struct bench_probe *p, const char *header)
{
	static const agxq_reference models[3] = {
		AGXQ_REF_LINEAR, AGXQ_REF_MLP, AGXQ_REF_TRANSFORMER
	};
	int counts[BENCH_MAX_CLIENTS], ncounts;
	char a[64], b[64], c[64], d[64], e[64], g[64], h[64], k[64];

	if (header != NULL)
		fprintf(f, "%s\n", header);
	ncounts = bench_client_counts(r, n, counts, BENCH_MAX_CLIENTS);
	for (int mi = 0; mi < 3; mi++) {
		int any = 0;

		for (size_t i = 0; i < n; i++)
			any |= r[i].done && r[i].model == models[mi];
		if (!any)
			continue;
		fprintf(f, "### %s (ops/s, one op = one batch-4 request)\n\n",
		    agxq_reference_name(models[mi]));
		fprintf(f, "| clients | mode | direct-naive | direct-tuned | "
		    "proxy | proxy eff. | proxy p50 / p99 µs | "
		    "tuned p50 / p99 µs | proxy/naive | proxy/tuned |\n");
		fprintf(f, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
		for (int ci = 0; ci < ncounts; ci++) {
			for (int m = 0; m < BENCH_NMODES; m++) {
				const struct bench_result *rn, *rt, *rp;

				rn = bench_find(r, n, models[mi],
				    (enum bench_mode)m, BENCH_NAIVE, counts[ci]);
				rt = bench_find(r, n, models[mi],
				    (enum bench_mode)m, BENCH_TUNED, counts[ci]);
				rp = bench_find(r, n, models[mi],
				    (enum bench_mode)m, BENCH_PROXY, counts[ci]);
				if (rn == NULL && rt == NULL && rp == NULL)
					continue;
				if (rp != NULL && rp->efficiency >= 0)
					snprintf(d, sizeof d, "%.0f%%",
					    rp->efficiency * 100);
				else
					snprintf(d, sizeof d, "–");
				fprintf(f, "| %d | %s | %s | %s | %s | %s | %s | "
				    "%s | %s | %s |\n", counts[ci],
				    bench_mode_name((enum bench_mode)m),
				    bench_fmt_ops(a, sizeof a, rn),
				    bench_fmt_ops(b, sizeof b, rt),
				    bench_fmt_ops(c, sizeof c, rp), d,
				    bench_fmt_lat(e, sizeof e, rp),
				    bench_fmt_lat(g, sizeof g, rt),
				    bench_fmt_ratio(h, sizeof h, rp, rn),
				    bench_fmt_ratio(k, sizeof k, rp, rt));
			}
		}
		fprintf(f, "\n");
	}
	fprintf(f, "Figures are the median of the last 3 windows; "
	    "\"(±x%%)\" marks a result whose last 3 windows did not agree "
	    "within 10%% (x = max/min - 1).\n\n");
	if (p != NULL && p->done)
		bench_report_probe(f, r, n, p);
}

/* Writes one CSV line per measurement to path; 0 or -1. */
int
bench_report_csv(const char *path, const struct bench_result *r, size_t n)
{
	FILE *f;

	if ((f = fopen(path, "w")) == NULL)
		return -1;
	fprintf(f, "model,mode,kind,clients,ops_s,efficiency,p50_us,p99_us,"
	    "windows,spread,stable\n");
	for (size_t i = 0; i < n; i++) {
		if (!r[i].done)
			continue;
		fprintf(f, "%s,%s,%s,%d,%.1f,", agxq_reference_name(r[i].model),
		    bench_mode_name(r[i].mode), bench_kind_name(r[i].kind),
		    r[i].clients, r[i].ops_s);
		if (r[i].efficiency >= 0)
			fprintf(f, "%.3f", r[i].efficiency);
		fprintf(f, ",%.1f,%.1f,%d,%.3f,%d\n", r[i].p50_us, r[i].p99_us,
		    r[i].windows, r[i].spread, r[i].stable);
	}
	return fclose(f) == 0 ? 0 : -1;
}

/* A "nice" tick step (1, 2 or 5 x 10^k) for about 5 ticks up to max. */
static double
bench_tick_step(double max)
{
	double raw = max / 5, mag;

	if (raw <= 0)
		return 1;
	mag = pow(10, floor(log10(raw)));
	if (raw / mag <= 1)
		return mag;
	if (raw / mag <= 2)
		return 2 * mag;
	if (raw / mag <= 5)
		return 5 * mag;
	return 10 * mag;
}

/* Writes a tick label for v ("950", "12k", "1.5M"). */
static const char *
bench_fmt_tick(char *buf, size_t len, double v)
{
	if (v >= 1e6)
		snprintf(buf, len, "%gM", v / 1e6);
	else if (v >= 1e3)
		snprintf(buf, len, "%gk", v / 1e3);
	else
		snprintf(buf, len, "%g", v);
	return buf;
}

/* Draws the panel of model at offset ox. */
static void
bench_svg_panel(FILE *f, const struct bench_result *r, size_t n,
    agxq_reference model, int ox, const int *counts, int ncounts, int xmax)
{
	double ymax = 0, step, pw, ph, lx;
	char label[32];
	int x0 = ox + SVG_LEFT, y0 = SVG_TOP;

	pw = SVG_PANEL_W - SVG_LEFT - SVG_RIGHT;
	ph = SVG_PANEL_H - SVG_TOP - SVG_BOTTOM;
	lx = log2((double)xmax);
	for (size_t i = 0; i < n; i++) {
		if (r[i].done && r[i].model == model && r[i].ops_s > ymax)
			ymax = r[i].ops_s;
	}
	step = bench_tick_step(ymax > 0 ? ymax : 1);
	ymax = ceil((ymax > 0 ? ymax : 1) / step) * step;

	fprintf(f, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\" "
	    "font-weight=\"bold\">%s</text>\n", x0 + pw / 2, y0 - 15,
	    agxq_reference_name(model));
	/* Y grid, ticks and labels. */
	for (double v = 0; v <= ymax + step / 2; v += step) {
		double y = y0 + ph - v / ymax * ph;

		fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
		    "stroke=\"#ddd\"/>\n", x0, y, x0 + pw, y);
		fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" "
		    "stroke=\"#000\"/>\n", x0 - 5, y, x0, y);
		fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">"
		    "%s</text>\n", x0 - 8, y + 4,
		    bench_fmt_tick(label, sizeof label, v));
	}
	/* X ticks at each client count (log2 scale). */
	for (int i = 0; i < ncounts; i++) {
		double x = x0 + (lx > 0 ? log2((double)counts[i]) / lx : 0) * pw;

		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
		    "y2=\"%.1f\" stroke=\"#000\"/>\n", x, y0 + ph, x,
		    y0 + ph + 5);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">"
		    "%d</text>\n", x, y0 + ph + 20, counts[i]);
	}
	/* Axes and their titles. */
	fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%.1f\" "
	    "stroke=\"#000\"/>\n", x0, y0, x0, y0 + ph);
	fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
	    "stroke=\"#000\"/>\n", x0, y0 + ph, x0 + pw, y0 + ph);
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">"
	    "clients</text>\n", x0 + pw / 2, y0 + ph + 40);
	fprintf(f, "<text transform=\"translate(%d,%.1f) rotate(-90)\" "
	    "text-anchor=\"middle\">ops/s</text>\n", ox + 18, y0 + ph / 2);

	/* One polyline per mode x kind. */
	for (int m = 0; m < BENCH_NMODES; m++) {
		for (int k = 0; k < BENCH_NKINDS; k++) {
			int npts = 0;

			for (int i = 0; i < ncounts; i++) {
				const struct bench_result *x = bench_find(r, n,
				    model, (enum bench_mode)m,
				    (enum bench_kind)k, counts[i]);
				double px, py;

				if (x == NULL)
					continue;
				px = x0 + (lx > 0 ?
				    log2((double)counts[i]) / lx : 0) * pw;
				py = y0 + ph - x->ops_s / ymax * ph;
				if (npts++ == 0)
					fprintf(f, "<polyline fill=\"none\" "
					    "stroke=\"%s\" stroke-width=\"2\"%s "
					    "points=\"", bench_kind_colors[k],
					    m == BENCH_PROCESSES ?
					    " stroke-dasharray=\"6,4\"" : "");
				fprintf(f, "%.1f,%.1f ", px, py);
			}
			if (npts > 0)
				fprintf(f, "\"/>\n");
			for (int i = 0; i < ncounts; i++) {
				const struct bench_result *x = bench_find(r, n,
				    model, (enum bench_mode)m,
				    (enum bench_kind)k, counts[i]);

				if (x == NULL)
					continue;
				fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" "
				    "r=\"3\" fill=\"%s\"/>\n", x0 + (lx > 0 ?
				    log2((double)counts[i]) / lx : 0) * pw,
				    y0 + ph - x->ops_s / ymax * ph,
				    m == BENCH_PROCESSES ? "#fff" :
				    bench_kind_colors[k]);
			}
		}
	}
}

/* Orders ints. */
static int
bench_cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return x < y ? -1 : x > y;
}

/* Writes the SVG chart to path; 0 or -1. */
int
bench_report_svg(const char *path, const struct bench_result *r, size_t n)
{
	static const agxq_reference models[3] = {
		AGXQ_REF_LINEAR, AGXQ_REF_MLP, AGXQ_REF_TRANSFORMER
	};
	int counts[BENCH_MAX_CLIENTS], ncounts, npanels = 0, xmax = 2, w, h;
	int present[3] = { 0 }, lx, ly;
	FILE *f;

	ncounts = bench_client_counts(r, n, counts, BENCH_MAX_CLIENTS);
	qsort(counts, (size_t)ncounts, sizeof *counts, bench_cmp_int);
	for (int i = 0; i < ncounts; i++)
		xmax = counts[i] > xmax ? counts[i] : xmax;
	for (int mi = 0; mi < 3; mi++) {
		for (size_t i = 0; i < n; i++)
			present[mi] |= r[i].done && r[i].model == models[mi];
		npanels += present[mi];
	}
	if (npanels == 0)
		npanels = 1;
	w = npanels * SVG_PANEL_W;
	h = SVG_PANEL_H + SVG_LEGEND_H;

	if ((f = fopen(path, "w")) == NULL)
		return -1;
	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
	    "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" "
	    "font-size=\"12\">\n", w, h, w, h);
	fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", w, h);
	for (int mi = 0, p = 0; mi < 3; mi++) {
		if (present[mi])
			bench_svg_panel(f, r, n, models[mi], SVG_PANEL_W * p++,
			    counts, ncounts, xmax);
	}
	/* Legend: colour = kind, solid = threads, dashed = processes. */
	ly = SVG_PANEL_H + 10;
	lx = SVG_LEFT;
	for (int m = 0; m < BENCH_NMODES; m++) {
		for (int k = 0; k < BENCH_NKINDS; k++) {
			int x = lx + k * 200, y = ly + m * 22;

			fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" "
			    "stroke=\"%s\" stroke-width=\"2\"%s/>\n", x, y,
			    x + 30, y, bench_kind_colors[k],
			    m == BENCH_PROCESSES ?
			    " stroke-dasharray=\"6,4\"" : "");
			fprintf(f, "<text x=\"%d\" y=\"%d\">%s, %s</text>\n",
			    x + 36, y + 4, bench_kind_name((enum bench_kind)k),
			    bench_mode_name((enum bench_mode)m));
		}
	}
	fprintf(f, "</svg>\n");
	return fclose(f) == 0 ? 0 : -1;
}
