/*
 * region: validation and mapping of shared memory regions sent by clients.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "region.h"

static void region_fail(int *code, char **cause, int value, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));

/* Sets *code and a malloc'd *cause. */
static void
region_fail(int *code, char **cause, int value, const char *fmt, ...)
{
	va_list ap;

	*code = value;
	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) < 0)
		*cause = NULL;
	va_end(ap);
}

/* Checks fd's seals: a memfd sealed against shrinking (Linux only). */
static int
region_check_seals(int fd, int *code, char **cause)
{
#if defined(__linux__) && defined(F_GET_SEALS)
	int seals;

	if ((seals = fcntl(fd, F_GET_SEALS)) == -1) {
		region_fail(code, cause, AGXQ__ERROR_CODE__ERR_INVAL,
		    "region descriptor is not a memfd (F_GET_SEALS: %s)",
		    strerror(errno));
		return -1;
	}
	if ((seals & F_SEAL_SHRINK) == 0) {
		region_fail(code, cause, AGXQ__ERROR_CODE__ERR_INVAL,
		    "region must be sealed against shrinking (F_SEAL_SHRINK)");
		return -1;
	}
#else
	/* shm_open objects have no seals: accepted as they are. */
	(void)fd;
	(void)code;
	(void)cause;
#endif
	return 0;
}

/* Checks and maps size bytes of fd. */
int
region_map(int fd, uint64_t size, uint64_t id, struct region **out,
    int *code, char **cause)
{
	struct region *rg;
	struct stat sb;
	void *p;

	if (size == 0) {
		region_fail(code, cause, AGXQ__ERROR_CODE__ERR_INVAL,
		    "region size must not be 0");
		return -1;
	}
	if (fstat(fd, &sb) != 0) {
		region_fail(code, cause, AGXQ__ERROR_CODE__ERR_INVAL,
		    "cannot stat the region descriptor: %s", strerror(errno));
		return -1;
	}
	if (!S_ISREG(sb.st_mode)) {
		region_fail(code, cause, AGXQ__ERROR_CODE__ERR_INVAL,
		    "region descriptor is not a memfd (not a regular file)");
		return -1;
	}
	if (region_check_seals(fd, code, cause) != 0)
		return -1;
	if (sb.st_size < 0 || (uint64_t)sb.st_size < size) {
		region_fail(code, cause, AGXQ__ERROR_CODE__ERR_INVAL,
		    "region is %lld bytes, smaller than the %" PRIu64
		    " bytes registered", (long long)sb.st_size, size);
		return -1;
	}
	if (size > SIZE_MAX) {
		region_fail(code, cause, AGXQ__ERROR_CODE__ERR_LIMIT,
		    "region of %" PRIu64 " bytes cannot be mapped", size);
		return -1;
	}
	p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		region_fail(code, cause, errno == ENOMEM ?
		    AGXQ__ERROR_CODE__ERR_NOMEM : AGXQ__ERROR_CODE__ERR_INVAL,
		    "cannot map the region read-write: %s", strerror(errno));
		return -1;
	}
	if ((rg = calloc(1, sizeof *rg)) == NULL) {
		munmap(p, (size_t)size);
		region_fail(code, cause, AGXQ__ERROR_CODE__ERR_NOMEM,
		    "out of memory");
		return -1;
	}
	rg->id = id;
	rg->base = p;
	rg->size = size;
	rg->refs = 1;
	*out = rg;
	return 0;
}

/* Unmaps and frees rg. */
void
region_free(struct region *rg)
{
	if (rg == NULL)
		return;
	munmap(rg->base, (size_t)rg->size);
	free(rg);
}

/* Checks a ShmRef against rg. */
int
region_check_ref(const struct region *rg, const Agxq__ShmRef *ref,
    uint64_t want, const char *what, char **cause)
{
	int code;

	if (ref->offset > rg->size || ref->length > rg->size - ref->offset) {
		region_fail(&code, cause, AGXQ__ERROR_CODE__ERR_INVAL,
		    "%s: shared memory slice [%" PRIu64 ", +%" PRIu64 ") is "
		    "outside region %" PRIu64 " of %" PRIu64 " bytes", what,
		    ref->offset, ref->length, rg->id, rg->size);
		return code;
	}
	if (ref->offset % sizeof(float) != 0) {
		region_fail(&code, cause, AGXQ__ERROR_CODE__ERR_INVAL,
		    "%s: shared memory offset %" PRIu64 " is not 4-byte "
		    "aligned", what, ref->offset);
		return code;
	}
	if (want != 0 && ref->length != want) {
		region_fail(&code, cause, AGXQ__ERROR_CODE__ERR_SHAPE,
		    "%s: shared memory slice of %" PRIu64 " bytes for a tensor "
		    "of %" PRIu64 " bytes", what, ref->length, want);
		return code;
	}
	return 0;
}
