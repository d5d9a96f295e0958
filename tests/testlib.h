/*
 * testlib: the harness every test shares. CHECK records a failure with
 * file:line and the expression and jumps to the case's out: label; EXPECT
 * records it and goes on. testlib_run runs the case table (all cases, or the
 * one named in argv[1]: a name no case has is an error, exit status 2, so
 * that a misspelt case never passes by running nothing), prints "ok   name
 * (N ms)" or "FAIL name (N ms)" per case and returns the exit status.
 * Header-only: include it from one file.
 */
#ifndef TESTLIB_H
#define TESTLIB_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct testlib_case {
	const char *name;
	void (*fn)(void);
};

/* Cases that report failure by returning non-zero as well as by CHECK. */
struct testlib_icase {
	const char *name;
	int (*fn)(void);
};

static int testlib_failed;		/* the current case failed */
static const char *testlib_current = "";	/* the current case's name */

/* Records a failure of the current case at file:line. */
static inline void
testlib_fail(const char *file, int line, const char *what)
{
	printf("  %s: %s:%d: %s\n", testlib_current, file, line, what);
	testlib_failed = 1;
}

#define CHECK(cond) do {						\
	if (!(cond)) {							\
		testlib_fail(__FILE__, __LINE__, #cond);		\
		goto out;						\
	}								\
} while (0)

#define EXPECT(cond) do {						\
	if (!(cond))							\
		testlib_fail(__FILE__, __LINE__, #cond);		\
} while (0)

/* Returns a monotonic clock in milliseconds. */
static inline uint64_t
testlib_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Returns 1 when the case called name is not to run. */
static inline int
testlib_skip(const char *name, int argc, char **argv)
{
	return argc > 1 && strcmp(argv[1], name) != 0;
}

/* Prints the case's result line; returns 1 when it failed. */
static inline int
testlib_report(const char *name, uint64_t t0)
{
	printf("%s %s (%llu ms)\n", testlib_failed ? "FAIL" : "ok  ", name,
	    (unsigned long long)(testlib_now_ms() - t0));
	fflush(stdout);
	return testlib_failed;
}

/*
 * Runs one table: cases (void cases) or icases (cases that also fail by
 * returning non-zero), n entries, all or the one named in argv[1]. After,
 * when not NULL, is called after each case (it may record a failure) and
 * stops the run by returning non-zero. Returns the exit status.
 */
static inline int
testlib_run_table(const struct testlib_case *cases,
    const struct testlib_icase *icases, size_t n, int argc, char **argv,
    int (*after)(void))
{
	const char *name;
	int any = 0, stop, known = argc <= 1;
	uint64_t t0;

	for (size_t i = 0; i < n && !known; i++) {
		name = cases != NULL ? cases[i].name : icases[i].name;
		known = strcmp(argv[1], name) == 0;
	}
	if (!known) {
		printf("%s: no case named '%s'; the cases:", argv[0], argv[1]);
		for (size_t i = 0; i < n; i++)
			printf(" %s", cases != NULL ? cases[i].name :
			    icases[i].name);
		printf("\n");
		return 2;
	}
	for (size_t i = 0; i < n; i++) {
		name = cases != NULL ? cases[i].name : icases[i].name;
		if (testlib_skip(name, argc, argv))
			continue;
		testlib_current = name;
		testlib_failed = 0;
		t0 = testlib_now_ms();
		if (cases != NULL)
			cases[i].fn();
		else if (icases[i].fn() != 0)
			testlib_failed = 1;
		stop = after != NULL && after() != 0;
		any |= testlib_report(name, t0);
		if (stop)
			break;
	}
	testlib_current = "";
	return any ? 1 : 0;
}

/* Runs every case, or the one named in argv[1]; returns the exit status. */
static inline int
testlib_run(const struct testlib_case *cases, size_t n, int argc, char **argv)
{
	return testlib_run_table(cases, NULL, n, argc, argv, NULL);
}

/* testlib_run for cases that also fail by returning non-zero. */
static inline int
testlib_run_int(const struct testlib_icase *cases, size_t n, int argc,
    char **argv)
{
	return testlib_run_table(NULL, cases, n, argc, argv, NULL);
}

#define TESTLIB_N(a) (sizeof (a) / sizeof (a)[0])

#endif
