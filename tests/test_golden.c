/*
 * test_golden: models built with the graph builder and run in direct mode
 * against PyTorch's numbers.
 *
 * tests/golden/make_golden.py (run where PyTorch is installed) writes the
 * fixtures: tests/golden/transformer_small.txt (a d_model=32 encoder layer,
 * post-norm and pre-norm) and tests/golden/reference_models.txt (the three
 * reference models at their real size). A missing fixture is a failure.
 * The direct_* cases check the direct-mode API itself and need no fixture.
 *
 * Fixture format, text: '#' starts a comment that runs to the end of the
 * line; otherwise whitespace-separated tokens forming blocks
 *
 *	tensor NAME NDIM D0 ... D(NDIM-1)
 *	V0 V1 ... (D0*...*D(NDIM-1) float32 values, written with %.9g)
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agxq.h"
#include "agxq_direct.h"
#include "testlib.h"

#define FIXTURE_MAX_BYTES (64u << 20)
#define FIXTURE_MAX_TENSORS 256

/*
 * Largest absolute difference accepted against PyTorch. Both sides compute
 * in float32, but the order of accumulation differs (BLAS blocking, the
 * softmax and layer-norm reductions), so results agree to about 1e-6
 * relative; 1e-4 absolute leaves room for that on outputs of size O(1)
 * while catching any real mistake (a wrong weight or op moves outputs by
 * far more).
 */
#define GOLDEN_TOLERANCE 1e-4

struct ftensor {
	char name[64];
	int ndim;
	int64_t shape[AGXQ_MAX_DIMS];
	size_t nelem;
	float *data;
};

struct fixture {
	int n;
	struct ftensor t[FIXTURE_MAX_TENSORS];
};

/* Frees a fixture; accepts NULL. */
static void
fixture_free(struct fixture *fx)
{
	if (fx == NULL)
		return;
	for (int i = 0; i < fx->n; i++)
		free(fx->t[i].data);
	free(fx);
}

/* Parses fixture text (modified in place); prints why on failure. */
static struct fixture *
fixture_parse(char *text, const char *what)
{
	struct fixture *fx;
	char *p, *tok, *save = NULL, *end;

	if ((fx = calloc(1, sizeof *fx)) == NULL)
		abort();
	/* Blank out comments. */
	for (p = text; *p != '\0'; p++) {
		if (*p == '#') {
			while (*p != '\0' && *p != '\n')
				*p++ = ' ';
			if (*p == '\0')
				break;
		}
	}
	tok = strtok_r(text, " \t\r\n", &save);
	while (tok != NULL) {
		struct ftensor *t;
		uint64_t n = 1;
		long v;

		if (strcmp(tok, "tensor") != 0) {
			printf("  %s: %s: expected 'tensor', got '%.20s'\n",
			    testlib_current, what, tok);
			goto fail;
		}
		if (fx->n == FIXTURE_MAX_TENSORS) {
			printf("  %s: %s: too many tensors\n", testlib_current,
			    what);
			goto fail;
		}
		t = &fx->t[fx->n];
		if ((tok = strtok_r(NULL, " \t\r\n", &save)) == NULL ||
		    strlen(tok) >= sizeof t->name) {
			printf("  %s: %s: bad tensor name\n", testlib_current,
			    what);
			goto fail;
		}
		strcpy(t->name, tok);
		tok = strtok_r(NULL, " \t\r\n", &save);
		v = tok == NULL ? -1 : strtol(tok, &end, 10);
		if (tok == NULL || *end != '\0' || v < 1 || v > AGXQ_MAX_DIMS) {
			printf("  %s: %s: %s: bad ndim\n", testlib_current,
			    what, t->name);
			goto fail;
		}
		t->ndim = (int)v;
		for (int i = 0; i < t->ndim; i++) {
			tok = strtok_r(NULL, " \t\r\n", &save);
			v = tok == NULL ? -1 : strtol(tok, &end, 10);
			if (tok == NULL || *end != '\0' || v < 1 ||
			    v > (1L << 24)) {
				printf("  %s: %s: %s: bad dim\n",
				    testlib_current, what,
				    t->name);
				goto fail;
			}
			t->shape[i] = v;
			n *= (uint64_t)v;
			if (n > (1u << 26)) {
				printf("  %s: %s: %s: too big\n",
				    testlib_current,
				    what, t->name);
				goto fail;
			}
		}
		t->nelem = (size_t)n;
		if ((t->data = malloc(t->nelem * sizeof(float))) == NULL)
			abort();
		fx->n++;
		for (size_t i = 0; i < t->nelem; i++) {
			tok = strtok_r(NULL, " \t\r\n", &save);
			if (tok == NULL) {
				printf("  %s: %s: %s: %zu of %zu values\n",
				    testlib_current, what, t->name, i,
				    t->nelem);
				goto fail;
			}
			t->data[i] = strtof(tok, &end);
			if (*end != '\0' || end == tok) {
				printf("  %s: %s: %s: bad value '%.20s'\n",
				    testlib_current, what, t->name, tok);
				goto fail;
			}
		}
		tok = strtok_r(NULL, " \t\r\n", &save);
	}
	return fx;

fail:
	fixture_free(fx);
	return NULL;
}

/* Loads tests/golden/<file>; prints a clear message when it cannot. */
static struct fixture *
fixture_load(const char *file)
{
	const char *dir = getenv("AGXQ_TEST_DATA");
	struct fixture *fx = NULL;
	char path[4096], *text = NULL;
	FILE *f;
	long len;

	if (dir == NULL || *dir == '\0') {
		printf("  %s: AGXQ_TEST_DATA is not set (run through ctest, or "
		    "set it to the tests/ source directory)\n",
		    testlib_current);
		return NULL;
	}
	snprintf(path, sizeof path, "%s/golden/%s", dir, file);
	if ((f = fopen(path, "rb")) == NULL) {
		printf("  %s: golden fixture %s is missing (%s): generate it "
		    "with 'python3 tests/golden/make_golden.py tests/golden' "
		    "where PyTorch is installed\n", testlib_current, path,
		    strerror(errno));
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
	    (unsigned long)len > FIXTURE_MAX_BYTES || fseek(f, 0, SEEK_SET) != 0) {
		printf("  %s: %s: unreadable or too big\n", testlib_current,
		    path);
		goto out;
	}
	if ((text = malloc((size_t)len + 1)) == NULL)
		abort();
	if (fread(text, 1, (size_t)len, f) != (size_t)len) {
		printf("  %s: %s: short read\n", testlib_current, path);
		goto out;
	}
	text[len] = '\0';
	fx = fixture_parse(text, file);
out:
	free(text);
	fclose(f);
	return fx;
}

/* Returns fixture tensor `name`, or NULL with a message. */
static const struct ftensor *
fixture_get(const struct fixture *fx, const char *name)
{
	for (int i = 0; i < fx->n; i++) {
		if (strcmp(fx->t[i].name, name) == 0)
			return &fx->t[i];
	}
	printf("  %s: fixture has no tensor '%s'\n", testlib_current, name);
	return NULL;
}

/* Returns 1 when t has shape shape[0..ndim). */
static int
shape_is(const struct ftensor *t, const int64_t *shape, int ndim)
{
	if (t->ndim != ndim)
		return 0;
	for (int i = 0; i < ndim; i++) {
		if (t->shape[i] != shape[i])
			return 0;
	}
	return 1;
}

/*
 * Loads g in direct mode, runs input x (shape shape[0..ndim)) and compares
 * output 0 with want. Returns 1 on a match.
 */
static int
run_and_compare(const agxq_graph *g, const float *x, const int64_t *shape,
    int ndim, const struct ftensor *want)
{
	agxq_direct *d = NULL;
	agxq_direct_model *m = NULL;
	agxq_result *r = NULL;
	const agxq_tensor *o;
	agxq_tensor in;
	double maxerr = 0;
	size_t worst = 0;
	int err, ok = 0;

	if ((err = agxq_direct_open("cpu", 0, &d)) != 0) {
		printf("  %s: direct open: %s\n", testlib_current,
		    agxq_strerror(err));
		goto out;
	}
	if ((err = agxq_direct_load(d, g, &m)) != 0) {
		printf("  %s: direct load: %s\n", testlib_current,
		    agxq_strerror(err));
		goto out;
	}
	memset(&in, 0, sizeof in);
	in.dtype = AGXQ_FLOAT32;
	in.ndim = ndim;
	memcpy(in.shape, shape, (size_t)ndim * sizeof *shape);
	in.data = (void *)x;
	if ((err = agxq_direct_infer(m, &in, 1, &r)) != 0) {
		printf("  %s: direct infer: %s\n", testlib_current,
		    agxq_strerror(err));
		goto out;
	}
	if (agxq_result_noutputs(r) != 1 || (o = agxq_result_output(r, 0)) == NULL) {
		printf("  %s: expected one output\n", testlib_current);
		goto out;
	}
	if (o->dtype != AGXQ_FLOAT32 || o->ndim != want->ndim ||
	    memcmp(o->shape, want->shape, (size_t)o->ndim * sizeof o->shape[0]) != 0) {
		printf("  %s: output shape differs from %s\n", testlib_current,
		    want->name);
		goto out;
	}
	for (size_t i = 0; i < want->nelem; i++) {
		double e = fabs((double)((const float *)o->data)[i] -
		    (double)want->data[i]);

		/* NaN compares false: count it as the worst error. */
		if (!(e <= maxerr)) {
			maxerr = isnan(e) ? INFINITY : e;
			worst = i;
		}
	}
	printf("  %s: %s: %zu values, max abs error %.3g (at %zu: %.9g vs %.9g)\n",
	    testlib_current, want->name, want->nelem, maxerr, worst,
	    (double)((const float *)o->data)[worst], (double)want->data[worst]);
	ok = maxerr <= GOLDEN_TOLERANCE;
out:
	agxq_result_free(r);
	agxq_direct_unload(m);
	agxq_direct_close(d);
	return ok;
}

/* A [-1, 4] -> relu graph for the direct-mode API cases. */
static agxq_graph *
tiny_graph(void)
{
	int64_t s[1] = { 4 };
	agxq_graph *g;
	int v;

	if ((g = agxq_graph_new()) == NULL)
		abort();
	v = agxq_graph_input(g, s, 1);
	v = agxq_graph_relu(g, v);
	agxq_graph_output(g, v);
	return g;
}

/* Direct mode maps each failure to its AGXQ_E* code. */
static int
t_direct_errors(void)
{
	int64_t s4[1] = { 4 }, s5[1] = { 5 };
	float x[8] = { -1, 2, -3, 4, 5, -6, 7, -8 };
	agxq_direct *d = NULL;
	agxq_direct_model *m = NULL, *m2 = NULL;
	agxq_graph *g = NULL, *bad = NULL;
	agxq_result *r = NULL;
	const agxq_tensor *o;
	agxq_tensor in;
	uint32_t rows;
	int a, b;

	CHECK(agxq_direct_open("no-such-backend", 0, &d) == AGXQ_EINVAL);
	CHECK(agxq_direct_open("cpu", 0, NULL) == AGXQ_EINVAL);
	CHECK(agxq_direct_open(NULL, 0, &d) == 0);
	g = tiny_graph();
	CHECK(agxq_direct_load(d, NULL, &m) == AGXQ_EINVAL);
	CHECK(agxq_direct_load(NULL, g, &m) == AGXQ_EINVAL);

	/* A sticky builder error comes back as it is. */
	CHECK((bad = agxq_graph_new()) != NULL);
	CHECK(agxq_graph_relu(bad, 3) == AGXQ_EINVAL);
	CHECK(agxq_direct_load(d, bad, &m) == AGXQ_EINVAL);
	agxq_graph_free(bad);
	/* A graph the validator rejects: [4] + [5]. */
	CHECK((bad = agxq_graph_new()) != NULL);
	a = agxq_graph_input(bad, s4, 1);
	b = agxq_graph_input(bad, s5, 1);
	CHECK(agxq_graph_output(bad, agxq_graph_add(bad, a, b)) == 0);
	CHECK(agxq_direct_load(d, bad, &m) == AGXQ_EGRAPH);
	agxq_graph_free(bad);
	bad = NULL;

	CHECK(agxq_direct_load(d, g, &m) == 0);
	CHECK(agxq_direct_load(d, g, &m2) == 0); /* left for close to free */
	memset(&in, 0, sizeof in);
	in.dtype = AGXQ_FLOAT32;
	in.ndim = 2;
	in.shape[0] = 2;
	in.shape[1] = 4;
	in.data = x;
	CHECK(agxq_direct_infer(m, &in, 0, &r) == AGXQ_EINVAL);
	CHECK(agxq_direct_infer(m, &in, 2, &r) == AGXQ_EINVAL);
	CHECK(agxq_direct_infer(m, NULL, 1, &r) == AGXQ_EINVAL);
	CHECK(agxq_direct_infer(m, &in, 1, NULL) == AGXQ_EINVAL);
	in.dtype = (agxq_dtype)7;
	CHECK(agxq_direct_infer(m, &in, 1, &r) == AGXQ_EDTYPE);
	in.dtype = AGXQ_FLOAT32;
	in.shape[1] = 5;
	CHECK(agxq_direct_infer(m, &in, 1, &r) == AGXQ_ESHAPE);
	in.shape[1] = 4;
	in.ndim = 3;
	in.shape[2] = 1;
	CHECK(agxq_direct_infer(m, &in, 1, &r) == AGXQ_ESHAPE);
	in.ndim = 2;
	in.shape[0] = 0;
	CHECK(agxq_direct_infer(m, &in, 1, &r) == AGXQ_ESHAPE);
	in.shape[0] = 2;
	in.data = NULL;
	CHECK(agxq_direct_infer(m, &in, 1, &r) == AGXQ_EINVAL);
	in.data = x;
	CHECK(r == NULL);

	CHECK(agxq_direct_infer(m, &in, 1, &r) == 0);
	CHECK(agxq_result_noutputs(r) == 1);
	CHECK((o = agxq_result_output(r, 0)) != NULL);
	CHECK(o->dtype == AGXQ_FLOAT32 && o->ndim == 2);
	CHECK(o->shape[0] == 2 && o->shape[1] == 4);
	for (int i = 0; i < 8; i++)
		CHECK(((const float *)o->data)[i] == (x[i] > 0 ? x[i] : 0));
	agxq_result_info(r, NULL, NULL, &rows);
	CHECK(rows == 2);
	CHECK(agxq_result_output(r, 1) == NULL);
	agxq_direct_unload(m);
	m = NULL;
	agxq_direct_unload(NULL);
	CHECK(agxq_direct_set_cpu_threads(1) == 0 ||
	    agxq_direct_set_cpu_threads(1) == AGXQ_EUNSUPPORTED);
	CHECK(agxq_direct_set_cpu_threads(0) == 0 ||
	    agxq_direct_set_cpu_threads(0) == AGXQ_EUNSUPPORTED);
out:
	agxq_result_free(r);
	agxq_direct_unload(m);
	agxq_direct_close(d); /* frees m2 */
	agxq_direct_close(NULL);
	agxq_graph_free(bad);
	agxq_graph_free(g);
	return 0;
}

struct foreign {
	agxq_direct *d;
	agxq_direct_model *m;
	const agxq_graph *g;
	int load, infer;
};

/* Uses another thread's handle: every call must be refused. */
static void *
foreign_thread(void *arg)
{
	struct foreign *f = arg;
	float x[4] = { 1, 2, 3, 4 };
	agxq_direct_model *m = NULL;
	agxq_result *r = NULL;
	agxq_tensor in;

	memset(&in, 0, sizeof in);
	in.dtype = AGXQ_FLOAT32;
	in.ndim = 2;
	in.shape[0] = 1;
	in.shape[1] = 4;
	in.data = x;
	f->load = agxq_direct_load(f->d, f->g, &m);
	f->infer = agxq_direct_infer(f->m, &in, 1, &r);
	agxq_result_free(r);
	/* Neither frees anything off the owner thread. */
	agxq_direct_unload(f->m);
	agxq_direct_close(f->d);
	return NULL;
}

/* A handle belongs to the thread that opened it. */
static int
t_direct_thread(void)
{
	float x[4] = { -1, 2, -3, 4 };
	struct foreign f;
	agxq_direct *d = NULL;
	agxq_direct_model *m = NULL;
	agxq_graph *g = tiny_graph();
	agxq_result *r = NULL;
	agxq_tensor in;
	pthread_t t;

	CHECK(agxq_direct_open("cpu", 0, &d) == 0);
	CHECK(agxq_direct_load(d, g, &m) == 0);
	memset(&f, 0, sizeof f);
	f.d = d;
	f.m = m;
	f.g = g;
	CHECK(pthread_create(&t, NULL, foreign_thread, &f) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(f.load == AGXQ_EINVAL);
	CHECK(f.infer == AGXQ_EINVAL);
	/* Still usable by its owner. */
	memset(&in, 0, sizeof in);
	in.dtype = AGXQ_FLOAT32;
	in.ndim = 2;
	in.shape[0] = 1;
	in.shape[1] = 4;
	in.data = x;
	CHECK(agxq_direct_infer(m, &in, 1, &r) == 0);
	CHECK(((const float *)agxq_result_output(r, 0)->data)[1] == 2.0f);
out:
	agxq_result_free(r);
	agxq_direct_close(d);
	agxq_graph_free(g);
	return 0;
}

/* One graph loaded once runs any sequence length (a free sample dim). */
static int
t_direct_free_dim(void)
{
	int64_t sample[2] = { -1, 32 };
	agxq_direct *d = NULL;
	agxq_direct_model *m = NULL;
	agxq_graph *g = NULL;
	agxq_result *r = NULL;
	agxq_tensor in;
	float *x = NULL;
	int v;

	CHECK((g = agxq_graph_new()) != NULL);
	v = agxq_graph_input(g, sample, 2);
	v = agxq_build_transformer(g, v, 32, 4, 64, 1e-5f, 0, 7);
	CHECK(agxq_graph_output(g, v) == 0);
	CHECK(agxq_direct_open("cpu", 0, &d) == 0);
	CHECK(agxq_direct_load(d, g, &m) == 0);
	if ((x = malloc(2 * 9 * 32 * sizeof(float))) == NULL)
		abort();
	agxq_reference_weights(3, 1.0f, x, 2 * 9 * 32);
	for (int s = 1; s <= 9; s += 4) {
		const agxq_tensor *o;

		memset(&in, 0, sizeof in);
		in.dtype = AGXQ_FLOAT32;
		in.ndim = 3;
		in.shape[0] = 2;
		in.shape[1] = s;
		in.shape[2] = 32;
		in.data = x;
		CHECK(agxq_direct_infer(m, &in, 1, &r) == 0);
		CHECK((o = agxq_result_output(r, 0)) != NULL);
		CHECK(o->ndim == 3 && o->shape[0] == 2 && o->shape[1] == s);
		CHECK(o->shape[2] == 32);
		for (int i = 0; i < 2 * s * 32; i++)
			CHECK(isfinite(((const float *)o->data)[i]));
		agxq_result_free(r);
		r = NULL;
	}
out:
	free(x);
	agxq_result_free(r);
	agxq_direct_close(d);
	agxq_graph_free(g);
	return 0;
}

/* The small transformer's parameters: stream seed+off, scale, "1 +". */
enum scale_kind { SCALE_D, SCALE_FF, SCALE_TENTH };
static const struct {
	int off;
	enum scale_kind scale;
	float add;
	size_t n;
} small_params[12] = {
	{ 0, SCALE_D, 0, 96 * 32 }, { 1, SCALE_TENTH, 0, 96 },
	{ 2, SCALE_D, 0, 32 * 32 }, { 3, SCALE_TENTH, 0, 32 },
	{ 4, SCALE_D, 0, 64 * 32 }, { 5, SCALE_D, 0, 64 },
	{ 6, SCALE_FF, 0, 32 * 64 }, { 7, SCALE_FF, 0, 32 },
	{ 8, SCALE_TENTH, 1, 32 }, { 9, SCALE_TENTH, 0, 32 },
	{ 10, SCALE_TENTH, 1, 32 }, { 11, SCALE_TENTH, 0, 32 },
};

/* The loader reads the format and rejects broken files. */
static int
t_loader(void)
{
	char good[] = "# header\n# more\ntensor a 2 2 3 # trailing\n"
	    "1 2.5 -3e-2\n4 5 6\ntensor b 1 1\n0.100000001\n";
	char short_[] = "tensor a 1 3\n1 2\n";
	char junk[] = "tensor a 1 2\n1 x\n";
	char nottensor[] = "tensors a 1 1 1\n";
	char baddim[] = "tensor a 2 0 1\n";
	char badndim[] = "tensor a 7 1 1 1 1 1 1 1 1\n";
	char empty[] = "# nothing\n";
	struct fixture *fx = NULL;
	const struct ftensor *t;

	fx = fixture_parse(good, "good");
	CHECK(fx != NULL && fx->n == 2);
	CHECK((t = fixture_get(fx, "a")) != NULL);
	CHECK(t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
	CHECK(t->nelem == 6);
	CHECK(t->data[1] == 2.5f && t->data[2] == -3e-2f && t->data[5] == 6.0f);
	CHECK((t = fixture_get(fx, "b")) != NULL);
	CHECK(t->nelem == 1 && t->data[0] == 0.1f);
	fixture_free(fx);
	fx = NULL;
	CHECK((fx = fixture_parse(empty, "empty")) != NULL && fx->n == 0);
	fixture_free(fx);
	fx = NULL;
	printf("  %s: (the next five messages are expected)\n",
	    testlib_current);
	CHECK(fixture_parse(short_, "short") == NULL);
	CHECK(fixture_parse(junk, "junk") == NULL);
	CHECK(fixture_parse(nottensor, "nottensor") == NULL);
	CHECK(fixture_parse(baddim, "baddim") == NULL);
	CHECK(fixture_parse(badndim, "badndim") == NULL);
out:
	fixture_free(fx);
	return 0;
}

/* The fixture's input and weight prefixes match our stream bit for bit. */
static int
t_small_streams(void)
{
	static const int64_t ishape[3] = { 3, 5, 32 };
	struct fixture *fx;
	const struct ftensor *t;
	float *ref = NULL;
	char name[32];

	CHECK((fx = fixture_load("transformer_small.txt")) != NULL);
	CHECK((t = fixture_get(fx, "input")) != NULL);
	CHECK(shape_is(t, ishape, 3));
	if ((ref = malloc(t->nelem * sizeof(float))) == NULL)
		abort();
	agxq_reference_weights(1000, 1.0f, ref, t->nelem);
	CHECK(memcmp(ref, t->data, t->nelem * sizeof(float)) == 0);
	free(ref);
	ref = NULL;
	for (int i = 0; i < 12; i++) {
		float scale;

		switch (small_params[i].scale) {
		case SCALE_D:
			scale = (float)(1.0 / sqrt(32.0));
			break;
		case SCALE_FF:
			scale = (float)(1.0 / sqrt(64.0));
			break;
		default:
			scale = 0.1f;
			break;
		}
		snprintf(name, sizeof name, "param_%d", i);
		CHECK((t = fixture_get(fx, name)) != NULL);
		CHECK(t->nelem <= small_params[i].n);
		if ((ref = malloc(t->nelem * sizeof(float))) == NULL)
			abort();
		agxq_reference_weights(7 + (uint64_t)small_params[i].off, scale,
		    ref, t->nelem);
		for (size_t j = 0; j < t->nelem; j++)
			ref[j] = small_params[i].add + ref[j];
		if (memcmp(ref, t->data, t->nelem * sizeof(float)) != 0)
			printf("  %s: %s differs\n", testlib_current, name);
		CHECK(memcmp(ref, t->data, t->nelem * sizeof(float)) == 0);
		free(ref);
		ref = NULL;
	}
out:
	free(ref);
	fixture_free(fx);
	return 0;
}

/* The d_model=32 layer, post-norm or pre-norm, against PyTorch. */
static int
small_transformer(int norm_first)
{
	static const int64_t ishape[3] = { 3, 5, 32 };
	int64_t sample[2] = { -1, 32 };
	struct fixture *fx;
	const struct ftensor *x, *want;
	agxq_graph *g = NULL;
	int v;

	CHECK((fx = fixture_load("transformer_small.txt")) != NULL);
	CHECK((x = fixture_get(fx, "input")) != NULL);
	CHECK(shape_is(x, ishape, 3));
	CHECK((want = fixture_get(fx, norm_first ? "pre_norm" : "post_norm")) != NULL);
	CHECK(shape_is(want, ishape, 3));
	CHECK((g = agxq_graph_new()) != NULL);
	v = agxq_graph_input(g, sample, 2);
	v = agxq_build_transformer(g, v, 32, 4, 64, 1e-5f, norm_first, 7);
	CHECK(agxq_graph_output(g, v) == 0);
	CHECK(run_and_compare(g, x->data, ishape, 3, want));
out:
	agxq_graph_free(g);
	fixture_free(fx);
	return 0;
}

/* The small layer, post-norm. */
static int
t_small_post_norm(void)
{
	return small_transformer(0);
}

/* The small layer, pre-norm. */
static int
t_small_pre_norm(void)
{
	return small_transformer(1);
}

/* Reference model `which` (seed 42, batch 4, input stream 2000) against PyTorch. */
static int
reference(agxq_reference which)
{
	struct fixture *fx;
	const struct ftensor *want;
	agxq_graph *g = NULL;
	agxq_tensor t;
	float *x = NULL;
	char name[64];

	CHECK((fx = fixture_load("reference_models.txt")) != NULL);
	snprintf(name, sizeof name, "%s_output", agxq_reference_name(which));
	CHECK((want = fixture_get(fx, name)) != NULL);
	CHECK(agxq_reference_build(which, 42, &g) == 0);
	CHECK(agxq_reference_input_shape(which, 4, &t) == 0);
	if ((x = malloc(agxq_tensor_nelem(&t) * sizeof(float))) == NULL)
		abort();
	agxq_reference_weights(2000, 1.0f, x, agxq_tensor_nelem(&t));
	CHECK(want->shape[0] == 4);
	CHECK(run_and_compare(g, x, t.shape, t.ndim, want));
out:
	free(x);
	agxq_graph_free(g);
	fixture_free(fx);
	return 0;
}

/* nn.Linear(256, 128). */
static int
t_ref_linear(void)
{
	return reference(AGXQ_REF_LINEAR);
}

/* The 256-512-256-128 MLP. */
static int
t_ref_mlp(void)
{
	return reference(AGXQ_REF_MLP);
}

/* The d_model=256 encoder layer. */
static int
t_ref_transformer(void)
{
	return reference(AGXQ_REF_TRANSFORMER);
}

static const struct testlib_icase cases[] = {
	{ "loader", t_loader },
	{ "direct_errors", t_direct_errors },
	{ "direct_thread", t_direct_thread },
	{ "direct_free_dim", t_direct_free_dim },
	{ "small_streams", t_small_streams },
	{ "small_post_norm", t_small_post_norm },
	{ "small_pre_norm", t_small_pre_norm },
	{ "ref_linear", t_ref_linear },
	{ "ref_mlp", t_ref_mlp },
	{ "ref_transformer", t_ref_transformer },
};

int
main(int argc, char **argv)
{
	return testlib_run_int(cases, TESTLIB_N(cases), argc, argv);
}
