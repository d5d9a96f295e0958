/*
 * shmpool: a client connection's shared memory regions and the slices cut
 * from them for requests. Regions are memfds (shm_open objects where memfd
 * does not exist) mapped here and registered once with agxqd; each request
 * takes one slice for its inputs and outputs and gives it back when its
 * result is freed. Thread-safe; the pool is reference counted so that a
 * result may outlive its client.
 */
#ifndef AGXQ_SHMPOOL_H
#define AGXQ_SHMPOOL_H

#include <stddef.h>
#include <stdint.h>

struct shmpool;

struct shmpool_slice {
	uint64_t region_id;   /* the daemon's id of the region */
	uint64_t offset;      /* bytes from the region's start */
	uint64_t len;
	uint8_t *p;           /* our mapping of it */
	uint32_t idx;         /* region index in the pool */
};

/* Creates an empty pool (one reference); NULL on OOM. */
struct shmpool *shmpool_new(void);

/* Takes and drops a reference; the last drop unmaps every region. */
void shmpool_ref(struct shmpool *p);
void shmpool_unref(struct shmpool *p);

/*
 * Creates a sealed memfd called name of size bytes (F_SEAL_SHRINK,
 * F_SEAL_GROW, F_SEAL_SEAL) and maps it read-write. Returns 0 with *fd and
 * *base, or -1 (errno set).
 */
int shmpool_create(const char *name, size_t size, int *fd, void **base);

/* Adds a mapped region the daemon registered as region_id; 0 or -1. */
int shmpool_add(struct shmpool *p, uint64_t region_id, void *base,
    size_t size);

/* Bytes mapped in all regions. */
size_t shmpool_size(struct shmpool *p);

/*
 * Cuts a slice of len bytes (64-byte aligned) and takes a pool reference
 * for it. Returns 0, or -1 when no region has room.
 */
int shmpool_alloc(struct shmpool *p, size_t len, struct shmpool_slice *s);

/* Gives a slice back and drops its pool reference. */
void shmpool_free(struct shmpool *p, const struct shmpool_slice *s);

#endif
