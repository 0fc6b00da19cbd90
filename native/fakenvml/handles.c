/*
 * Opaque handles. A handle is a pointer into a process-local pool; it names a GPU by index, or a
 * GPU instance / compute instance / MIG device by the serial number the instance got when it was
 * created. Every call re-resolves the handle against the freshly loaded state, so a handle to a
 * destroyed instance (or to one that vanished in a simulated reboot) is stale: the call returns
 * NVML_ERROR_INVALID_ARGUMENT. The same instance always yields the same pointer within one
 * nvmlInit/nvmlShutdown epoch; the pool is recycled when the reference count returns from zero,
 * so handles do not survive a full shutdown (as with NVML).
 */
#include "fakenvml.h"

#include <pthread.h>
#include <string.h>

#define FK_MAGIC 0x4e564d4cu /* "NVML" */
#define FK_POOL (1u << 16)
#define FK_HASH (1u << 17)

static struct fk_handle pool[FK_POOL];
static unsigned pool_used;
static int hash_slot[FK_HASH]; /* pool index + 1; 0 = empty */
static unsigned current_epoch;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

FK_INTERNAL void fk_handles_reset(unsigned epoch)
{
    pthread_mutex_lock(&pool_lock);
    memset(pool, 0, sizeof(struct fk_handle) * pool_used);
    memset(hash_slot, 0, sizeof(hash_slot));
    pool_used = 0;
    current_epoch = epoch;
    pthread_mutex_unlock(&pool_lock);
}

static unsigned mix(int kind, int gpu, unsigned long long a, unsigned long long b)
{
    unsigned long long h = 1469598103934665603ull;
    unsigned long long parts[4] = {(unsigned long long)kind, (unsigned long long)gpu, a, b};
    for (int i = 0; i < 4; i++) {
        h ^= parts[i];
        h *= 1099511628211ull;
        h ^= h >> 29;
    }
    return (unsigned)(h & (FK_HASH - 1));
}

FK_INTERNAL struct fk_handle *fk_handle_get(int kind, int gpu, unsigned long long gi_serial,
                                            unsigned long long ci_serial)
{
    struct fk_handle *found = NULL;
    pthread_mutex_lock(&pool_lock);
    unsigned slot = mix(kind, gpu, gi_serial, ci_serial);
    for (unsigned probe = 0; probe < FK_HASH; probe++, slot = (slot + 1) & (FK_HASH - 1)) {
        int idx = hash_slot[slot];
        if (idx == 0) {
            if (pool_used >= FK_POOL)
                break; /* pool exhausted: the caller reports NVML_ERROR_MEMORY */
            struct fk_handle *h = &pool[pool_used];
            h->magic = FK_MAGIC;
            h->kind = kind;
            h->epoch = current_epoch;
            h->gpu = gpu;
            h->gi_serial = gi_serial;
            h->ci_serial = ci_serial;
            hash_slot[slot] = (int)(++pool_used);
            found = h;
            break;
        }
        struct fk_handle *h = &pool[idx - 1];
        if (h->kind == kind && h->gpu == gpu && h->gi_serial == gi_serial && h->ci_serial == ci_serial) {
            found = h;
            break;
        }
    }
    pthread_mutex_unlock(&pool_lock);
    return found;
}

static int valid_pointer(const struct fk_handle *h)
{
    if (!h || h < pool || h >= pool + FK_POOL)
        return 0;
    if (((const char *)h - (const char *)pool) % sizeof(struct fk_handle))
        return 0;
    return h->magic == FK_MAGIC && h->epoch == current_epoch;
}

/*
 * Resolve `h` against the loaded state. want_kind: FK_KIND_GPU accepts a physical GPU handle
 * only; FK_KIND_MIG a MIG device handle only; 0 any device handle (physical or MIG);
 * FK_KIND_GI / FK_KIND_CI the instance handles. Outputs may be NULL.
 */
FK_INTERNAL nvmlReturn_t fk_resolve(const struct fk_state *st, const struct fk_handle *h, int want_kind,
                                    struct fk_gpu **gpu, struct fk_gi **gi, struct fk_ci **ci)
{
    if (gpu)
        *gpu = NULL;
    if (gi)
        *gi = NULL;
    if (ci)
        *ci = NULL;
    if (!valid_pointer(h))
        return NVML_ERROR_INVALID_ARGUMENT;
    if (want_kind == 0) {
        if (h->kind != FK_KIND_GPU && h->kind != FK_KIND_MIG)
            return NVML_ERROR_INVALID_ARGUMENT;
    } else if (h->kind != want_kind) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (h->gpu < 0 || h->gpu >= st->ngpu)
        return NVML_ERROR_INVALID_ARGUMENT;
    struct fk_gpu *g = (struct fk_gpu *)&st->gpu[h->gpu];
    if (gpu)
        *gpu = g;
    if (h->kind == FK_KIND_GPU)
        return NVML_SUCCESS;
    for (int i = 0; i < g->ngi; i++) {
        struct fk_gi *x = &g->gi[i];
        if (x->serial != h->gi_serial)
            continue;
        if (gi)
            *gi = x;
        if (h->kind == FK_KIND_GI)
            return NVML_SUCCESS;
        for (int j = 0; j < x->nci; j++) {
            if (x->ci[j].serial == h->ci_serial) {
                if (ci)
                    *ci = &x->ci[j];
                return NVML_SUCCESS;
            }
        }
        break;
    }
    if (gi)
        *gi = NULL;
    return NVML_ERROR_INVALID_ARGUMENT; /* stale: the instance no longer exists */
}
