/* lock: agxqd's hot mutexes (lock.h). */
#include <pthread.h>

#include "lock.h"

/* Adaptive on glibc (spins up to its mutex_spin_count); plain elsewhere. */
void
lock_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;

	pthread_mutexattr_init(&a);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
	pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
}
