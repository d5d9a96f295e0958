/*
 * log: timestamped, levelled log lines to stderr or a file. libevent's
 * messages are routed here by log_open.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "log.h"

/*
 * Logging state. Written only by log_open/log_close at start-up and
 * shutdown, before and after the daemon's threads run.
 */
static FILE *log_file;
static enum log_level log_level = LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

/* Writes one line at level. */
static void
log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
	struct timespec ts;
	struct tm tm;
	char stamp[32];
	FILE *f;

	if (level > log_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
	pthread_mutex_lock(&log_lock);
	f = log_file != NULL ? log_file : stderr;
	fprintf(f, "%s.%03ldZ agxqd[%s] ", stamp, ts.tv_nsec / 1000000L,
	    level_names[level]);
	vfprintf(f, fmt, ap);
	fputc('\n', f);
	fflush(f);
	pthread_mutex_unlock(&log_lock);
}

/* Routes libevent's messages into the log. */
static void
log_event_cb(int severity, const char *msg)
{
	enum log_level level;

	switch (severity) {
	case EVENT_LOG_DEBUG:
		level = LOG_DEBUG;
		break;
	case EVENT_LOG_MSG:
		level = LOG_INFO;
		break;
	case EVENT_LOG_WARN:
		level = LOG_WARN;
		break;
	default:
		level = LOG_ERROR;
		break;
	}
	log_write_level(level, "libevent: %s", msg);
}

/* Writes one formatted line at level. */
void
log_write_level(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}

/* Opens the log. */
int
log_open(const char *path, enum log_level level)
{
	log_level = level;
	if (path != NULL) {
		FILE *f = fopen(path, "ae");

		if (f == NULL)
			return -1;
		setvbuf(f, NULL, _IOLBF, 0);
		log_file = f;
	}
	event_set_log_callback(log_event_cb);
	return 0;
}

/* Closes the log file. */
void
log_close(void)
{
	if (log_file != NULL) {
		fclose(log_file);
		log_file = NULL;
	}
}

/* Parses a level name. */
int
log_level_parse(const char *s)
{
	for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
		if (strcmp(s, level_names[i]) == 0)
			return (int)i;
	}
	return -1;
}

/* Current level. */
enum log_level
log_get_level(void)
{
	return log_level;
}

#define LOG_FN(name, level)					\
	void							\
	name(const char *fmt, ...)				\
	{							\
		va_list ap;					\
								\
		va_start(ap, fmt);				\
		log_vwrite(level, fmt, ap);			\
		va_end(ap);					\
	}

LOG_FN(log_error, LOG_ERROR)
LOG_FN(log_warn, LOG_WARN)
LOG_FN(log_info, LOG_INFO)
LOG_FN(log_debug, LOG_DEBUG)
