/*
 * shmpool: shared memory regions of a client connection, cut into slices
 * first-fit from a sorted list of free extents per region.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmpool.h"

#define SHMPOOL_ALIGN 64u

struct shmpool_extent {
	uint64_t off, len;
};

struct shmpool_region {
	uint64_t id;
	uint8_t *base;
	size_t size;
	struct shmpool_extent *free;  /* sorted by offset, coalesced */
	uint32_t nfree, free_cap;
};

struct shmpool {
	atomic_uint refs;
	pthread_mutex_t mu;
	struct shmpool_region *regions;
	uint32_t nregions;
	size_t size;
};

/* Creates an empty pool. */
struct shmpool *
shmpool_new(void)
{
	struct shmpool *p;

	if ((p = calloc(1, sizeof *p)) == NULL)
		return NULL;
	atomic_init(&p->refs, 1);
	pthread_mutex_init(&p->mu, NULL);
	return p;
}

/* Takes a reference. */
void
shmpool_ref(struct shmpool *p)
{
	atomic_fetch_add(&p->refs, 1);
}

/* Drops a reference; the last unmaps everything. */
void
shmpool_unref(struct shmpool *p)
{
	if (p == NULL || atomic_fetch_sub(&p->refs, 1) != 1)
		return;
	for (uint32_t i = 0; i < p->nregions; i++) {
		munmap(p->regions[i].base, p->regions[i].size);
		free(p->regions[i].free);
	}
	free(p->regions);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/*
 * Opens an anonymous shared memory object: a memfd called name (as
 * /proc/PID/maps shows it), else shm_open.
 */
static int
shmpool_open(const char *name)
{
#if defined(__linux__) && defined(MFD_ALLOW_SEALING)
	return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
#else
	static atomic_uint seq;
	char path[64];
	int fd;

	for (int tries = 0; tries < 16; tries++) {
		snprintf(path, sizeof path, "/%s-%ld-%u-%ld", name,
		    (long)getpid(), atomic_fetch_add(&seq, 1), (long)time(NULL));
		fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
		if (fd != -1) {
			shm_unlink(path);
			fcntl(fd, F_SETFD, FD_CLOEXEC);
			return fd;
		}
		if (errno != EEXIST)
			return -1;
	}
	return -1;
#endif
}

/* Creates a sealed memfd of size bytes and maps it. */
int
shmpool_create(const char *name, size_t size, int *fdp, void **base)
{
	void *m;
	int fd, saved;

	if ((fd = shmpool_open(name)) == -1)
		return -1;
	if (ftruncate(fd, (off_t)size) != 0)
		goto fail_close;
#if defined(__linux__) && defined(F_ADD_SEALS)
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW |
	    F_SEAL_SEAL) != 0)
		goto fail_close;
#endif
	m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		goto fail_close;
	*fdp = fd;
	*base = m;
	return 0;

fail_close:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* Adds a registered region to the pool. */
int
shmpool_add(struct shmpool *p, uint64_t region_id, void *base, size_t size)
{
	struct shmpool_region *r;
	int rc = -1;

	pthread_mutex_lock(&p->mu);
	r = realloc(p->regions, (p->nregions + 1) * sizeof *r);
	if (r == NULL)
		goto out;
	p->regions = r;
	r = &p->regions[p->nregions];
	memset(r, 0, sizeof *r);
	if ((r->free = malloc(4 * sizeof *r->free)) == NULL)
		goto out;
	r->id = region_id;
	r->base = base;
	r->size = size;
	r->free_cap = 4;
	r->nfree = 1;
	r->free[0].off = 0;
	r->free[0].len = size;
	p->nregions++;
	p->size += size;
	rc = 0;
out:
	pthread_mutex_unlock(&p->mu);
	return rc;
}

/* Bytes mapped. */
size_t
shmpool_size(struct shmpool *p)
{
	size_t n;

	pthread_mutex_lock(&p->mu);
	n = p->size;
	pthread_mutex_unlock(&p->mu);
	return n;
}

/* Cuts a slice first-fit. */
int
shmpool_alloc(struct shmpool *p, size_t len, struct shmpool_slice *s)
{
	len = (len + SHMPOOL_ALIGN - 1) & ~(size_t)(SHMPOOL_ALIGN - 1);
	if (len == 0)
		len = SHMPOOL_ALIGN;
	pthread_mutex_lock(&p->mu);
	for (uint32_t i = 0; i < p->nregions; i++) {
		struct shmpool_region *r = &p->regions[i];

		for (uint32_t k = 0; k < r->nfree; k++) {
			struct shmpool_extent *e = &r->free[k];

			if (e->len < len)
				continue;
			s->region_id = r->id;
			s->offset = e->off;
			s->len = len;
			s->p = r->base + e->off;
			s->idx = i;
			e->off += len;
			e->len -= len;
			if (e->len == 0) {
				memmove(e, e + 1, (r->nfree - k - 1) *
				    sizeof *e);
				r->nfree--;
			}
			atomic_fetch_add(&p->refs, 1);
			pthread_mutex_unlock(&p->mu);
			return 0;
		}
	}
	pthread_mutex_unlock(&p->mu);
	return -1;
}

/* Gives a slice back, coalescing with its neighbours. */
void
shmpool_free(struct shmpool *p, const struct shmpool_slice *s)
{
	struct shmpool_region *r;
	struct shmpool_extent *e;
	uint32_t k;

	pthread_mutex_lock(&p->mu);
	r = &p->regions[s->idx];
	for (k = 0; k < r->nfree && r->free[k].off < s->offset; k++)
		;
	e = r->free;
	if (k > 0 && e[k - 1].off + e[k - 1].len == s->offset) {
		e[k - 1].len += s->len;
		if (k < r->nfree && e[k - 1].off + e[k - 1].len == e[k].off) {
			e[k - 1].len += e[k].len;
			memmove(&e[k], &e[k + 1], (r->nfree - k - 1) *
			    sizeof *e);
			r->nfree--;
		}
	} else if (k < r->nfree && s->offset + s->len == e[k].off) {
		e[k].off = s->offset;
		e[k].len += s->len;
	} else {
		if (r->nfree == r->free_cap) {
			e = realloc(r->free, 2 * r->free_cap * sizeof *e);
			if (e == NULL) {
				/* Leak the slice rather than fail. */
				pthread_mutex_unlock(&p->mu);
				shmpool_unref(p);
				return;
			}
			r->free = e;
			r->free_cap *= 2;
		}
		memmove(&e[k + 1], &e[k], (r->nfree - k) * sizeof *e);
		e[k].off = s->offset;
		e[k].len = s->len;
		r->nfree++;
	}
	pthread_mutex_unlock(&p->mu);
	shmpool_unref(p);
}
