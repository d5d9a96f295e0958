/*
 * ctl: the control side of the agxqd command: `stop` and `status` talk to a
 * running daemon over its socket with blocking, one-at-a-time exchanges.
 */
#ifndef AGXQ_CTL_H
#define AGXQ_CTL_H

/* `agxqd stop`: asks the daemon on path to exit and waits. Returns an exit status. */
int ctl_stop(const char *path, int timeout_s);

/* `agxqd status`: prints the daemon's stats as a table or JSON. Returns an exit status. */
int ctl_status(const char *path, int json);

#endif
