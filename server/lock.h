/*
 * lock: how agxqd's hot mutexes are made. They are held for well under a
 * microsecond, by threads that each have a core, so a thread that finds
 * one held spins a little before it sleeps: a futex sleep and wake-up
 * costs the waiter several microseconds (more on a VM) and the holder a
 * system call to wake it.
 */
#ifndef AGXQ_SERVER_LOCK_H
#define AGXQ_SERVER_LOCK_H

#include <pthread.h>

/* Initialises m as a mutex that spins briefly before sleeping. */
void lock_init(pthread_mutex_t *m);

#endif
