/*
 * envset: settings read from the environment, with a note for each value
 * that is not used as given (see envset.h).
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envset.h"

#define ENVSET_MAX_NAMES 64     /* names read, for envset_check_prefix */

extern char **environ;

static pthread_mutex_t envset_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *envset_names[ENVSET_MAX_NAMES];   /* under the lock */
static unsigned envset_nnames;
static char *envset_notes[ENVSET_MAX_NOTES];       /* every note made */
static unsigned envset_nnotes;
static unsigned envset_ntaken;                      /* handed out so far */

/* Remembers that name is a setting (name: a string constant). */
static void
envset_known(const char *name)
{
	pthread_mutex_lock(&envset_lock);
	for (unsigned i = 0; i < envset_nnames; i++) {
		if (strcmp(envset_names[i], name) == 0) {
			pthread_mutex_unlock(&envset_lock);
			return;
		}
	}
	if (envset_nnames < ENVSET_MAX_NAMES)
		envset_names[envset_nnames++] = name;
	pthread_mutex_unlock(&envset_lock);
}

/*
 * Adds a formatted note, unless the same was noted before (a backend
 * reopened reads its settings again) or as many as are kept were made.
 */
static void __attribute__((format(printf, 1, 2)))
envset_note(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	pthread_mutex_lock(&envset_lock);
	for (unsigned i = 0; i < envset_nnotes && s != NULL; i++) {
		if (strcmp(envset_notes[i], s) == 0) {
			free(s);
			s = NULL;
		}
	}
	if (s != NULL && envset_nnotes < ENVSET_MAX_NOTES) {
		envset_notes[envset_nnotes++] = s;
		s = NULL;
	}
	pthread_mutex_unlock(&envset_lock);
	free(s);
}

/* Reads an unsigned whole number setting in [min, max], if set and valid. */
int
envset_ulong_opt(const char *name, unsigned long min, unsigned long max,
    unsigned long *v, const char *instead)
{
	const char *s = getenv(name);
	unsigned long n;
	char *end;

	envset_known(name);
	if (s == NULL || *s == '\0')
		return 0;
	errno = 0;
	n = strtoul(s, &end, 10);
	if (*s < '0' || *s > '9' || *end != '\0' || errno != 0 || n < min ||
	    n > max) {
		if (max != ULONG_MAX)
			envset_note("%s=\"%s\" is not a whole number from %lu "
			    "to %lu: using %s", name, s, min, max, instead);
		else
			envset_note("%s=\"%s\" is not a whole number of at "
			    "least %lu: using %s", name, s, min, instead);
		return 0;
	}
	*v = n;
	return 1;
}

/* Reads an unsigned whole number setting in [min, max], or def. */
unsigned long
envset_ulong(const char *name, unsigned long def, unsigned long min,
    unsigned long max)
{
	char instead[24];
	unsigned long v;

	snprintf(instead, sizeof instead, "%lu", def);
	return envset_ulong_opt(name, min, max, &v, instead) ? v : def;
}

/* Reads a setting that is one of a list of words. */
int
envset_choice(const char *name, int def, const char *const *choices)
{
	const char *s = getenv(name);
	char list[256];
	size_t len = 0;

	envset_known(name);
	if (s == NULL || *s == '\0')
		return def;
	list[0] = '\0';
	for (int i = 0; choices[i] != NULL; i++) {
		if (strcmp(s, choices[i]) == 0)
			return i;
		if (len < sizeof list)
			len += (size_t)snprintf(list + len, sizeof list - len,
			    "%s%s", i > 0 ? ", " : "", choices[i]);
	}
	envset_note("%s=\"%s\" is not one of %s: using %s", name, s, list,
	    choices[def]);
	return def;
}

/* Reads an off/on setting: 0 or 1. */
int
envset_bool(const char *name, int def)
{
	static const char *const words[] = { "0", "1", NULL };

	return envset_choice(name, def != 0, words);
}

/* Reads a setting whose value is any text. */
const char *
envset_string(const char *name)
{
	const char *s = getenv(name);

	envset_known(name);
	return s != NULL && *s != '\0' ? s : NULL;
}

/* Notes the variables with prefix that are no known setting. */
void
envset_check_prefix(const char *prefix)
{
	size_t plen = strlen(prefix), nlen;
	const char *eq;
	int known;

	for (char **e = environ; e != NULL && *e != NULL; e++) {
		if (strncmp(*e, prefix, plen) != 0 ||
		    (eq = strchr(*e, '=')) == NULL)
			continue;
		nlen = (size_t)(eq - *e);
		known = 0;
		pthread_mutex_lock(&envset_lock);
		for (unsigned i = 0; i < envset_nnames && !known; i++)
			known = strlen(envset_names[i]) == nlen &&
			    strncmp(envset_names[i], *e, nlen) == 0;
		pthread_mutex_unlock(&envset_lock);
		if (!known)
			envset_note("%.*s is set but is no setting (misspelt?); "
			    "ignored", (int)nlen, *e);
	}
}

/* Hands each note not taken yet to fn; notes stay, to be made once. */
void
envset_take_notes(void (*fn)(const char *note, void *arg), void *arg)
{
	unsigned from, to;

	pthread_mutex_lock(&envset_lock);
	from = envset_ntaken;
	to = envset_ntaken = envset_nnotes;
	pthread_mutex_unlock(&envset_lock);
	/* Entries below nnotes never change: read without the lock. */
	for (unsigned i = from; i < to; i++)
		fn(envset_notes[i], arg);
}
