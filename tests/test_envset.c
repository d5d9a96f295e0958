/*
 * test_envset: settings read from the environment. Good values are used;
 * unset and empty ones give the default silently; values that do not parse,
 * are negative, overflow or lie out of range give the default and a note
 * naming the variable, the value and what is allowed; a variable with a
 * backend's prefix that nothing reads is noted as misspelt; each note is
 * made once, handed out once, and their number is bounded. Switches take
 * 0 or 1; the optional form tells whether a valid value was set; text
 * settings (paths) are taken as they are.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envset.h"
#include "testlib.h"

/* The notes handed out by the last es_take. */
static char es_text[8192];
static int es_count;

/* envset_take_notes' callback: appends the note and a newline. */
static void
es_add(const char *note, void *arg)
{
	size_t len = strlen(es_text);

	(void)arg;
	es_count++;
	snprintf(es_text + len, sizeof es_text - len, "%s\n", note);
}

/* Takes the notes made since the last call; how many. */
static int
es_take(void)
{
	es_text[0] = '\0';
	es_count = 0;
	envset_take_notes(es_add, NULL);
	return es_count;
}

/* Whole numbers: used when valid, else the default and one note each. */
static void
t_ulong(void)
{
	static const char *const bad[] = { "abc", "12x", "-1", " 5", "0x10",
	    "99999999999999999999999", "101", "1" };

	(void)es_take();
	unsetenv("AGXQ_TESTU_N");
	CHECK(envset_ulong("AGXQ_TESTU_N", 7, 2, 100) == 7);
	setenv("AGXQ_TESTU_N", "", 1);
	CHECK(envset_ulong("AGXQ_TESTU_N", 7, 2, 100) == 7);
	setenv("AGXQ_TESTU_N", "100", 1);
	CHECK(envset_ulong("AGXQ_TESTU_N", 7, 2, 100) == 100);
	setenv("AGXQ_TESTU_N", "2", 1);
	CHECK(envset_ulong("AGXQ_TESTU_N", 7, 2, 100) == 2);
	CHECK(es_take() == 0);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		setenv("AGXQ_TESTU_N", bad[i], 1);
		CHECK(envset_ulong("AGXQ_TESTU_N", 7, 2, 100) == 7);
		CHECK(es_take() == 1);
		CHECK(strstr(es_text, "AGXQ_TESTU_N=\"") != NULL);
		CHECK(strstr(es_text, bad[i]) != NULL);
		CHECK(strstr(es_text, "from 2 to 100: using 7") != NULL);
	}
	/* The same value again: noted once only. */
	setenv("AGXQ_TESTU_N", "abc", 1);
	CHECK(envset_ulong("AGXQ_TESTU_N", 7, 2, 100) == 7);
	CHECK(es_take() == 0);
out:
	unsetenv("AGXQ_TESTU_N");
}

/* Words: the index of a valid one, else the default and a note. */
static void
t_choice(void)
{
	static const char *const kinds[] = { "error", "lost", "sticky", NULL };

	(void)es_take();
	unsetenv("AGXQ_TESTC_KIND");
	CHECK(envset_choice("AGXQ_TESTC_KIND", 0, kinds) == 0);
	setenv("AGXQ_TESTC_KIND", "sticky", 1);
	CHECK(envset_choice("AGXQ_TESTC_KIND", 0, kinds) == 2);
	CHECK(es_take() == 0);
	setenv("AGXQ_TESTC_KIND", "Sticky", 1);
	CHECK(envset_choice("AGXQ_TESTC_KIND", 1, kinds) == 1);
	CHECK(es_take() == 1);
	CHECK(strstr(es_text, "AGXQ_TESTC_KIND=\"Sticky\" is not one of "
	    "error, lost, sticky: using lost") != NULL);
out:
	unsetenv("AGXQ_TESTC_KIND");
}

/*
 * Switches take 0 or 1; the optional form says whether a valid value was
 * set, and its note names what is used instead.
 */
static void
t_bool_opt(void)
{
	unsigned long v = 42;

	(void)es_take();
	unsetenv("AGXQ_TESTO_SW");
	CHECK(envset_bool("AGXQ_TESTO_SW", 1) == 1);
	setenv("AGXQ_TESTO_SW", "0", 1);
	CHECK(envset_bool("AGXQ_TESTO_SW", 1) == 0);
	CHECK(es_take() == 0);
	setenv("AGXQ_TESTO_SW", "on", 1);
	CHECK(envset_bool("AGXQ_TESTO_SW", 0) == 0);
	CHECK(es_take() == 1);
	CHECK(strstr(es_text, "AGXQ_TESTO_SW=\"on\" is not one of 0, 1: "
	    "using 0") != NULL);
	unsetenv("AGXQ_TESTO_N");
	CHECK(envset_ulong_opt("AGXQ_TESTO_N", 1, 9, &v, "x") == 0 && v == 42);
	setenv("AGXQ_TESTO_N", "7", 1);
	CHECK(envset_ulong_opt("AGXQ_TESTO_N", 1, 9, &v, "x") == 1 && v == 7);
	setenv("AGXQ_TESTO_N", "70", 1);
	CHECK(envset_ulong_opt("AGXQ_TESTO_N", 1, 9, &v, "the old way") == 0);
	CHECK(v == 7 && es_take() == 1);
	CHECK(strstr(es_text, "from 1 to 9: using the old way") != NULL);
out:
	unsetenv("AGXQ_TESTO_SW");
	unsetenv("AGXQ_TESTO_N");
}

/* A prefix's variables that nothing read are noted; read ones are not. */
static void
t_prefix(void)
{
	(void)es_take();
	setenv("AGXQ_TESTP_GOOD", "3", 1);
	setenv("AGXQ_TESTP_GODO", "3", 1);
	setenv("AGXQ_TESTPX", "1", 1);
	CHECK(envset_ulong("AGXQ_TESTP_GOOD", 1, 0, 9) == 3);
	envset_check_prefix("AGXQ_TESTP_");
	CHECK(es_take() == 1);
	CHECK(strstr(es_text, "AGXQ_TESTP_GODO is set but is no setting") !=
	    NULL);
	/* Checked again (a backend reopened): not noted twice. */
	envset_check_prefix("AGXQ_TESTP_");
	CHECK(es_take() == 0);
out:
	unsetenv("AGXQ_TESTP_GOOD");
	unsetenv("AGXQ_TESTP_GODO");
	unsetenv("AGXQ_TESTPX");
}

/*
 * Text settings: the value as set; NULL when unset or empty; never a
 * note; and a name read so is a known setting, not a misspelt one.
 */
static void
t_string(void)
{
	const char *v;

	(void)es_take();
	unsetenv("AGXQ_TESTS_PATH");
	CHECK(envset_string("AGXQ_TESTS_PATH") == NULL);
	setenv("AGXQ_TESTS_PATH", "", 1);
	CHECK(envset_string("AGXQ_TESTS_PATH") == NULL);
	setenv("AGXQ_TESTS_PATH", "/tmp/a b=c", 1);
	v = envset_string("AGXQ_TESTS_PATH");
	CHECK(v != NULL && strcmp(v, "/tmp/a b=c") == 0);
	setenv("AGXQ_TESTS_PATO", "x", 1);
	envset_check_prefix("AGXQ_TESTS_");
	CHECK(es_take() == 1);
	CHECK(strstr(es_text, "AGXQ_TESTS_PATO is set but is no setting") !=
	    NULL);
out:
	unsetenv("AGXQ_TESTS_PATH");
	unsetenv("AGXQ_TESTS_PATO");
}

/* More distinct bad values than notes are kept: the rest are dropped. */
static void
t_bounded(void)
{
	char value[32];
	int n = 0;

	(void)es_take();
	for (int i = 0; i < 2 * ENVSET_MAX_NOTES; i++) {
		snprintf(value, sizeof value, "bad%d", i);
		setenv("AGXQ_TESTB_N", value, 1);
		CHECK(envset_ulong("AGXQ_TESTB_N", 1, 0, 9) == 1);
		n += es_take();
	}
	CHECK(n > 0 && n <= ENVSET_MAX_NOTES);
	printf("  %d bad values, %d notes\n", 2 * ENVSET_MAX_NOTES, n);
out:
	unsetenv("AGXQ_TESTB_N");
}

static const struct testlib_case cases[] = {
	{ "ulong", t_ulong },
	{ "choice", t_choice },
	{ "bool_opt", t_bool_opt },
	{ "prefix", t_prefix },
	{ "string", t_string },
	{ "bounded", t_bounded },   /* last: it uses up the notes kept */
};

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	return testlib_run(cases, TESTLIB_N(cases), argc, argv);
}
