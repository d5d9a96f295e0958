/*
 * envset: settings read from the environment (agxqd's AGXQ_CUDA_*,
 * AGXQ_CPU_* and AGXQ_LANES; the client library's AGXQ_SPIN_US and the
 * others agxq_connect reads). A value that does not parse or is out of
 * range leaves the default, and a variable with a backend's prefix that
 * nothing reads (misspelt) is ignored; each makes a note, once per
 * process, instead of failing silently. The engine never prints: agxqd
 * takes the notes and logs them, the client library writes them to
 * stderr. Thread-safe. Names are kept: pass string constants.
 */
#ifndef AGXQ_ENVSET_H
#define AGXQ_ENVSET_H

#define ENVSET_MAX_NOTES 32     /* notes made at most; later ones dropped */

/* Setting name, a whole number from min to max; def when unset or invalid. */
unsigned long envset_ulong(const char *name, unsigned long def,
    unsigned long min, unsigned long max);

/*
 * Setting name, a whole number from min to max: 1 and *v when it is set to
 * one; 0 when unset or invalid (the note of an invalid one says what is
 * used instead: instead).
 */
int envset_ulong_opt(const char *name, unsigned long min, unsigned long max,
    unsigned long *v, const char *instead);

/*
 * Setting name, one of the words of choices (NULL-terminated): its index;
 * def when unset or not one of them.
 */
int envset_choice(const char *name, int def, const char *const *choices);

/* Setting name, 0 or 1 (off or on); def when unset or neither. */
int envset_bool(const char *name, int def);

/* Setting name, any text (a path): its value; NULL when unset or empty. */
const char *envset_string(const char *name);

/* Notes each variable named prefix... that no envset call has read. */
void envset_check_prefix(const char *prefix);

/* Calls fn with each note made since the last call, oldest first. */
void envset_take_notes(void (*fn)(const char *note, void *arg), void *arg);

#endif
