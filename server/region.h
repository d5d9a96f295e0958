/*
 * region: shared memory regions a client registers on its connection (a
 * memfd received with SCM_RIGHTS), mapped once and named by ShmRef{region,
 * offset, length} in Infer messages. Loop thread only: references are
 * counted there (the connection's table holds one, every request using the
 * region another) and the mapping goes when the last one drops, so a region
 * released while requests use it stays mapped until they finish.
 */
#ifndef AGXQ_REGION_H
#define AGXQ_REGION_H

#include <stddef.h>
#include <stdint.h>

#include "agxq.pb-c.h"

struct region {
	uint64_t id;             /* unique on its connection, from 1 */
	uint8_t *base;           /* MAP_SHARED mapping of size bytes */
	uint64_t size;
	uint32_t refs;

	/*
	 * Page-locked for the device (engine_host_register): 0 not tried, 1
	 * done under engine generation dev_gen, -1 not possible. Set on the
	 * executor thread while a request holds a reference; read by the
	 * loop once the last reference is gone.
	 */
	int dev;
	uint64_t dev_gen;
};

/*
 * Checks descriptor fd (not taken: the caller closes it) and maps size bytes
 * of it read-write. On Linux fd must be a memfd sealed with F_SEAL_SHRINK;
 * elsewhere (shm_open objects) seals are not required. fd must be at least
 * size bytes long. Returns 0 with *out (refs 1), or -1 with *code (an
 * AGXQ__ERROR_CODE__*) and *cause (malloc'd).
 */
int region_map(int fd, uint64_t size, uint64_t id, struct region **out,
    int *code, char **cause);

/* Unmaps and frees rg; accepts NULL. */
void region_free(struct region *rg);

/*
 * Checks that ref lies inside rg (overflow-safe), starts 4-byte aligned and,
 * when want is not 0, is exactly want bytes long. Returns 0, or an
 * AGXQ__ERROR_CODE__* with *cause (malloc'd) naming what (e.g. "input 0").
 */
int region_check_ref(const struct region *rg, const Agxq__ShmRef *ref,
    uint64_t want, const char *what, char **cause);

#endif
