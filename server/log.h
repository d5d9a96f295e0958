/*
 * log: the daemon's one logging module. Thread-safe; each message is one
 * line with a timestamp, level and thread tag. libevent's own messages are
 * routed here.
 */
#ifndef AGXQ_LOG_H
#define AGXQ_LOG_H

#include <stdio.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Opens the log: path NULL means stderr. Returns 0 or -1 with errno set. */
int log_open(const char *path, enum log_level level);

/* Closes the log file (stderr stays). */
void log_close(void);

/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int log_level_parse(const char *s);

/* Current level. */
enum log_level log_get_level(void);

void log_write_level(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
