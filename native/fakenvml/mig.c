/*
 * GPU instances and compute instances: profiles, placements, capacity, create, list, info,
 * destroy. The rules enforced are the hardware's (reference §A.1, §B.5, §C):
 *   - a GPU instance sits at one of its profile's placements (else INVALID_ARGUMENT);
 *   - overlapping memory slices, a profile's instance cap, the GPU's instance or compute-slice
 *     limit, or the media-engine rules (one +me/+me.all instance per GPU; +me.all shares the
 *     GPU only with -me instances) -> INSUFFICIENT_RESOURCES, also for an identical instance;
 *   - destroying a GPU instance that still has compute instances, or any instance with attached
 *     processes -> IN_USE;
 *   - MIG calls on a GPU that is not MIG-capable, or whose MIG mode is off -> NOT_SUPPORTED
 *     (possible placements answer regardless of the mode, as NVML documents).
 * Profile ids the GPU does not know are INVALID_ARGUMENT; profile *constants* it does not support
 * are NOT_SUPPORTED and constants past the enumeration bound INVALID_ARGUMENT (the loop contract).
 */
#define _GNU_SOURCE
#include "fakenvml.h"

#include <stdio.h>
#include <string.h>

/* compute-slice count of each NVML_COMPUTE_INSTANCE_PROFILE_* constant */
static const unsigned ci_slices_of[NVML_COMPUTE_INSTANCE_PROFILE_COUNT] = {1, 2, 3, 4, 7, 8, 6, 1, 7};

static unsigned long long hash64(const char *s, unsigned long long seed, const unsigned long long *vals, int n)
{
    unsigned long long h = 1469598103934665603ull ^ seed;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    for (int i = 0; i < n; i++) {
        h ^= vals[i] + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* A MIG UUID in the version-5 layout every published example shows (third group starts with 5). */
static void make_mig_uuid(const struct fk_state *st, const struct fk_gpu *g, unsigned gi, unsigned ci,
                          unsigned long long serial, char *out)
{
    unsigned long long vals[4] = {st->boot, gi, ci, serial};
    unsigned long long a = hash64(g->uuid, 1, vals, 4), b = hash64(g->uuid, 2, vals, 4);
    snprintf(out, FK_STR, "MIG-%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32), (unsigned)((a >> 16) & 0xffff),
             (unsigned)((a & 0x0fff) | 0x5000), (unsigned)(((b >> 48) & 0x3fff) | 0x8000), b & 0xffffffffffffull);
}

static struct fk_profile *profile_by_constant(struct fk_gpu *g, unsigned constant)
{
    for (int i = 0; i < g->nprof; i++)
        if (g->prof[i].constant == constant)
            return &g->prof[i];
    return NULL;
}

/* Resolve a physical GPU handle for a MIG call: NOT_SUPPORTED unless MIG is on (or `any_mode`). */
static nvmlReturn_t mig_gpu(const struct fk_state *st, nvmlDevice_t device, int any_mode, struct fk_gpu **g)
{
    nvmlReturn_t rc = fk_resolve(st, device, FK_KIND_GPU, g, NULL, NULL);
    if (rc)
        return rc;
    if (!(*g)->mig_capable || (!any_mode && !(*g)->mig_current))
        return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

/* ---- GPU-instance profiles --------------------------------------------------------------------- */

static void fill_gi_v1(const struct fk_profile *p, nvmlGpuInstanceProfileInfo_t *o)
{
    memset(o, 0, sizeof(*o));
    o->id = p->id;
    o->isP2pSupported = 0;
    o->sliceCount = p->slices;
    o->instanceCount = p->cap;
    o->multiprocessorCount = p->sm;
    o->copyEngineCount = p->ce;
    o->decoderCount = p->dec;
    o->encoderCount = p->enc;
    o->jpegCount = p->jpeg;
    o->ofaCount = p->ofa;
    o->memorySizeMB = p->mib;
}

/* The header documents INVALID_ARGUMENT (not ARGUMENT_VERSION_MISMATCH) for a struct version
 * the three profile-info `V` calls do not know; a driver older than the v3 structs knows v2 only. */
static int known_version(const struct fk_state *st, unsigned version, unsigned v2, unsigned v3)
{
    return version == v2 || (version == v3 && st->profile_info_version >= 3);
}

static nvmlReturn_t fill_gi_versioned(const struct fk_state *st, const struct fk_profile *p, void *info)
{
    unsigned version = *(unsigned *)info;
    if (!known_version(st, version, FK_STRUCT_VERSION(nvmlGpuInstanceProfileInfo_v2_t, 2),
                       FK_STRUCT_VERSION(nvmlGpuInstanceProfileInfo_v3_t, 3)))
        return NVML_ERROR_INVALID_ARGUMENT;
    if (version == FK_STRUCT_VERSION(nvmlGpuInstanceProfileInfo_v2_t, 2)) {
        nvmlGpuInstanceProfileInfo_v2_t *o = info;
        memset(o, 0, sizeof(*o));
        o->version = version;
        o->id = p->id;
        o->sliceCount = p->slices;
        o->instanceCount = p->cap;
        o->multiprocessorCount = p->sm;
        o->copyEngineCount = p->ce;
        o->decoderCount = p->dec;
        o->encoderCount = p->enc;
        o->jpegCount = p->jpeg;
        o->ofaCount = p->ofa;
        o->memorySizeMB = p->mib;
        snprintf(o->name, sizeof(o->name), "MIG %.80s", p->name);
        return NVML_SUCCESS;
    }
    if (version == FK_STRUCT_VERSION(nvmlGpuInstanceProfileInfo_v3_t, 3)) {
        nvmlGpuInstanceProfileInfo_v3_t *o = info;
        memset(o, 0, sizeof(*o));
        o->version = version;
        o->id = p->id;
        o->sliceCount = p->slices;
        o->instanceCount = p->cap;
        o->multiprocessorCount = p->sm;
        o->copyEngineCount = p->ce;
        o->decoderCount = p->dec;
        o->encoderCount = p->enc;
        o->jpegCount = p->jpeg;
        o->ofaCount = p->ofa;
        o->memorySizeMB = p->mib;
        snprintf(o->name, sizeof(o->name), "MIG %.80s", p->name);
        o->capabilities = (p->attrs & FK_ATTR_GFX) ? NVML_GPU_INSTANCE_PROFILE_CAPS_GFX : 0;
        return NVML_SUCCESS;
    }
    return NVML_ERROR_INVALID_ARGUMENT;
}

static nvmlReturn_t profile_for_constant(const struct fk_state *st, nvmlDevice_t device, unsigned profile,
                                         struct fk_profile **p)
{
    struct fk_gpu *g;
    nvmlReturn_t rc = mig_gpu(st, device, 0, &g);
    if (rc)
        return rc;
    if (profile >= NVML_GPU_INSTANCE_PROFILE_COUNT)
        return NVML_ERROR_INVALID_ARGUMENT;
    *p = profile_by_constant(g, profile);
    return *p ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t device, unsigned int profile,
                                                           nvmlGpuInstanceProfileInfo_t *info)
{
    FK_BEGIN("nvmlDeviceGetGpuInstanceProfileInfo");
    struct fk_profile *p;
    nvmlReturn_t rc = profile_for_constant(ST, device, profile, &p);
    if (rc)
        FK_RETURN(rc);
    if (!info)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    fill_gi_v1(p, info);
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoV(nvmlDevice_t device, unsigned int profile,
                                                            nvmlGpuInstanceProfileInfo_v2_t *info)
{
    FK_BEGIN("nvmlDeviceGetGpuInstanceProfileInfoV");
    struct fk_profile *p;
    nvmlReturn_t rc = profile_for_constant(ST, device, profile, &p);
    if (rc)
        FK_RETURN(rc);
    if (!info)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    FK_RETURN(fill_gi_versioned(ST, p, info));
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoByIdV(nvmlDevice_t device, unsigned int profileId,
                                                                nvmlGpuInstanceProfileInfo_v2_t *info)
{
    FK_BEGIN("nvmlDeviceGetGpuInstanceProfileInfoByIdV");
    struct fk_gpu *g;
    nvmlReturn_t rc = mig_gpu(ST, device, 0, &g);
    if (rc)
        FK_RETURN(rc);
    struct fk_profile *p = fk_profile_by_id(g, profileId);
    if (!p || !info)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    FK_RETURN(fill_gi_versioned(ST, p, info));
}

static nvmlReturn_t placements_impl(const char *fn, nvmlDevice_t device, unsigned int profileId,
                                    nvmlGpuInstancePlacement_t *placements, unsigned int *count)
{
    FK_BEGIN(fn);
    struct fk_gpu *g;
    nvmlReturn_t rc = mig_gpu(ST, device, 1, &g);
    if (rc)
        FK_RETURN(rc);
    struct fk_profile *p = fk_profile_by_id(g, profileId);
    if (!p || !count)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (!placements) {
        *count = p->nplace;
        FK_RETURN(NVML_SUCCESS);
    }
    if (*count < p->nplace) {
        *count = p->nplace;
        FK_RETURN(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    for (unsigned i = 0; i < p->nplace; i++) {
        placements[i].start = p->place[i];
        placements[i].size = p->mem_slices;
    }
    *count = p->nplace;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetGpuInstancePossiblePlacements_v2(nvmlDevice_t device, unsigned int profileId,
                                                                     nvmlGpuInstancePlacement_t *placements,
                                                                     unsigned int *count)
{
    return placements_impl("nvmlDeviceGetGpuInstancePossiblePlacements_v2", device, profileId, placements, count);
}
FK_EXPORT nvmlReturn_t nvmlDeviceGetGpuInstancePossiblePlacements(nvmlDevice_t device, unsigned int profileId,
                                                                  nvmlGpuInstancePlacement_t *placements,
                                                                  unsigned int *count)
{
    return placements_impl("nvmlDeviceGetGpuInstancePossiblePlacements", device, profileId, placements, count);
}

/* ---- GPU-instance placement rules ---------------------------------------------------------------- */

static nvmlReturn_t gi_can_place(struct fk_gpu *g, const struct fk_profile *p, unsigned start)
{
    if ((unsigned)g->ngi >= g->max_gis || g->ngi >= FK_MAX_GIS)
        return NVML_ERROR_INSUFFICIENT_RESOURCES;
    unsigned same = 0, compute = 0;
    unsigned long long mask = ((1ull << p->mem_slices) - 1) << start, used = 0;
    for (int i = 0; i < g->ngi; i++) {
        const struct fk_gi *x = &g->gi[i];
        const struct fk_profile *xp = fk_profile_by_id(g, x->profile_id);
        used |= ((1ull << x->size) - 1) << x->start;
        if (x->profile_id == p->id)
            same++;
        if (!xp)
            continue;
        compute += xp->slices;
        if ((p->attrs & (FK_ATTR_ME | FK_ATTR_ME_ALL)) && (xp->attrs & (FK_ATTR_ME | FK_ATTR_ME_ALL)))
            return NVML_ERROR_INSUFFICIENT_RESOURCES;
        if ((p->attrs & FK_ATTR_ME_ALL) && !(xp->attrs & FK_ATTR_NO_ME))
            return NVML_ERROR_INSUFFICIENT_RESOURCES;
        if ((xp->attrs & FK_ATTR_ME_ALL) && !(p->attrs & FK_ATTR_NO_ME))
            return NVML_ERROR_INSUFFICIENT_RESOURCES;
    }
    if (mask & used || same >= p->cap || compute + p->slices > g->compute_slices)
        return NVML_ERROR_INSUFFICIENT_RESOURCES;
    return NVML_SUCCESS;
}

static int legal_start(const struct fk_profile *p, unsigned start)
{
    for (unsigned i = 0; i < p->nplace; i++)
        if (p->place[i] == start)
            return 1;
    return 0;
}

static unsigned new_gi_id(const struct fk_gpu *g, unsigned start, unsigned size)
{
    /* Observed ids: 7g -> 0, 3g at 0/4 -> 1/2, 2g at 0/2/4 -> 3/4/5, 1g at s -> 7+s (A100/H100),
     * i.e. slices/size - 1 + start/size; the lowest free id if that one is taken. */
    unsigned want = (size && g->mem_slices % size == 0) ? g->mem_slices / size - 1 + start / size : 0;
    for (unsigned id = want, tries = 0; tries < 64; tries++, id = tries - 1) {
        int taken = 0;
        for (int i = 0; i < g->ngi; i++)
            taken |= g->gi[i].id == id;
        if (!taken)
            return id;
    }
    return 63;
}

static struct fk_gi *add_gi(struct fk_state *st, struct fk_gpu *g, const struct fk_profile *p, unsigned start)
{
    struct fk_gi *gi = &g->gi[g->ngi];
    memset(gi, 0, sizeof(*gi));
    gi->id = new_gi_id(g, start, p->mem_slices);
    gi->profile_id = p->id;
    gi->start = start;
    gi->size = p->mem_slices;
    gi->serial = ++st->serial;
    g->ngi++;
    return gi;
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceRemainingCapacity(nvmlDevice_t device, unsigned int profileId,
                                                                 unsigned int *count)
{
    FK_BEGIN("nvmlDeviceGetGpuInstanceRemainingCapacity");
    struct fk_gpu *g;
    nvmlReturn_t rc = mig_gpu(ST, device, 0, &g);
    if (rc)
        FK_RETURN(rc);
    struct fk_profile *p = fk_profile_by_id(g, profileId);
    if (!p || !count)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    /* Greedy by start: optimal for equal-size intervals. The added instances are scratch only:
     * the state is not marked dirty, so nothing is written back. */
    int saved = g->ngi;
    unsigned n = 0;
    for (unsigned i = 0; i < p->nplace; i++) {
        if (gi_can_place(g, p, p->place[i]) == NVML_SUCCESS) {
            add_gi(ST, g, p, p->place[i]);
            n++;
        }
    }
    g->ngi = saved;
    *count = n;
    FK_RETURN(NVML_SUCCESS);
}

static nvmlReturn_t create_gi(fk_call *c, nvmlDevice_t device, unsigned profileId,
                              const nvmlGpuInstancePlacement_t *placement, nvmlGpuInstance_t *out)
{
    struct fk_gpu *g;
    nvmlReturn_t rc = mig_gpu(c->st, device, 0, &g);
    if (rc)
        return rc;
    struct fk_profile *p = fk_profile_by_id(g, profileId);
    if (!p || !out)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned start;
    if (placement) {
        if (!legal_start(p, placement->start) || placement->size != p->mem_slices)
            return NVML_ERROR_INVALID_ARGUMENT;
        rc = gi_can_place(g, p, placement->start);
        if (rc)
            return rc;
        start = placement->start;
    } else {
        /* The driver's own choice: the highest legal free start (a first 1g lands on slice 6). */
        int found = 0;
        for (int i = (int)p->nplace - 1; i >= 0 && !found; i--)
            if (gi_can_place(g, p, p->place[i]) == NVML_SUCCESS) {
                start = p->place[i];
                found = 1;
            }
        if (!found)
            return NVML_ERROR_INSUFFICIENT_RESOURCES;
    }
    struct fk_gi *gi = add_gi(c->st, g, p, start);
    c->dirty = 1;
    *out = fk_handle_get(FK_KIND_GI, device->gpu, gi->serial, 0);
    return *out ? NVML_SUCCESS : NVML_ERROR_MEMORY;
}

FK_EXPORT nvmlReturn_t nvmlDeviceCreateGpuInstance(nvmlDevice_t device, unsigned int profileId,
                                                   nvmlGpuInstance_t *gpuInstance)
{
    FK_BEGIN("nvmlDeviceCreateGpuInstance");
    FK_RETURN(create_gi(&fk_c_, device, profileId, NULL, gpuInstance));
}

FK_EXPORT nvmlReturn_t nvmlDeviceCreateGpuInstanceWithPlacement(nvmlDevice_t device, unsigned int profileId,
                                                                const nvmlGpuInstancePlacement_t *placement,
                                                                nvmlGpuInstance_t *gpuInstance)
{
    FK_BEGIN("nvmlDeviceCreateGpuInstanceWithPlacement");
    if (!placement)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    FK_RETURN(create_gi(&fk_c_, device, profileId, placement, gpuInstance));
}

/* A process on the instance, or another client holding it (ci = FK_NO_INSTANCE: any of the GI). */
static int procs_on(const struct fk_gpu *g, unsigned gi, unsigned ci)
{
    for (int i = 0; i < g->nproc; i++)
        if (g->proc[i].gi == gi && (ci == FK_NO_INSTANCE || g->proc[i].ci == ci))
            return 1;
    for (int i = 0; i < g->nhold; i++)
        if (g->hold[i].gi == gi && (ci == FK_NO_INSTANCE || g->hold[i].ci == ci))
            return 1;
    return 0;
}

FK_EXPORT nvmlReturn_t nvmlGpuInstanceDestroy(nvmlGpuInstance_t gpuInstance)
{
    FK_BEGIN("nvmlGpuInstanceDestroy");
    struct fk_gpu *g;
    struct fk_gi *gi;
    nvmlReturn_t rc = fk_resolve(ST, gpuInstance, FK_KIND_GI, &g, &gi, NULL);
    if (rc)
        FK_RETURN(rc);
    if (gi->nci > 0 || procs_on(g, gi->id, FK_NO_INSTANCE))
        FK_RETURN(NVML_ERROR_IN_USE);
    int idx = (int)(gi - g->gi);
    memmove(gi, gi + 1, (size_t)(g->ngi - idx - 1) * sizeof(*gi));
    g->ngi--;
    FK_DIRTY();
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetGpuInstances(nvmlDevice_t device, unsigned int profileId,
                                                 nvmlGpuInstance_t *gpuInstances, unsigned int *count)
{
    FK_BEGIN("nvmlDeviceGetGpuInstances");
    struct fk_gpu *g;
    nvmlReturn_t rc = mig_gpu(ST, device, 0, &g);
    if (rc)
        FK_RETURN(rc);
    if (!fk_profile_by_id(g, profileId) || !count || !gpuInstances)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    unsigned n = 0;
    for (int i = 0; i < g->ngi; i++) {
        if (g->gi[i].profile_id != profileId)
            continue;
        gpuInstances[n] = fk_handle_get(FK_KIND_GI, device->gpu, g->gi[i].serial, 0);
        if (!gpuInstances[n])
            FK_RETURN(NVML_ERROR_MEMORY);
        n++;
    }
    *count = n;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceById(nvmlDevice_t device, unsigned int id,
                                                    nvmlGpuInstance_t *gpuInstance)
{
    FK_BEGIN("nvmlDeviceGetGpuInstanceById");
    struct fk_gpu *g;
    nvmlReturn_t rc = mig_gpu(ST, device, 0, &g);
    if (rc)
        FK_RETURN(rc);
    if (!gpuInstance)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    for (int i = 0; i < g->ngi; i++)
        if (g->gi[i].id == id) {
            *gpuInstance = fk_handle_get(FK_KIND_GI, device->gpu, g->gi[i].serial, 0);
            FK_RETURN(*gpuInstance ? NVML_SUCCESS : NVML_ERROR_MEMORY);
        }
    FK_RETURN(NVML_ERROR_NOT_FOUND);
}

FK_EXPORT nvmlReturn_t nvmlGpuInstanceGetInfo(nvmlGpuInstance_t gpuInstance, nvmlGpuInstanceInfo_t *info)
{
    FK_BEGIN("nvmlGpuInstanceGetInfo");
    struct fk_gi *gi;
    nvmlReturn_t rc = fk_resolve(ST, gpuInstance, FK_KIND_GI, NULL, &gi, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!info)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    info->device = fk_handle_get(FK_KIND_GPU, gpuInstance->gpu, 0, 0);
    info->id = gi->id;
    info->profileId = gi->profile_id;
    info->placement.start = gi->start;
    info->placement.size = gi->size;
    FK_RETURN(info->device ? NVML_SUCCESS : NVML_ERROR_MEMORY);
}

/* ---- compute instances --------------------------------------------------------------------------- */

/* Compute-instance profiles of a GI with `g` compute slices: constants 0..4 (1, 2, 3, 4, 7 slices)
 * no larger than the GI; placements at multiples of the size; instanceCount = placements. */
static int ci_supported(unsigned constant, unsigned g)
{
    return constant <= 4 && ci_slices_of[constant] <= g;
}

static unsigned ci_starts(unsigned c, unsigned g, unsigned *starts)
{
    unsigned n = 0;
    for (unsigned s = 0; s + c <= g; s += c)
        starts[n++] = s;
    return n;
}

static nvmlReturn_t ci_gi(const struct fk_state *st, nvmlGpuInstance_t h, struct fk_gpu **g, struct fk_gi **gi,
                          struct fk_profile **gp)
{
    nvmlReturn_t rc = fk_resolve(st, h, FK_KIND_GI, g, gi, NULL);
    if (rc)
        return rc;
    *gp = fk_profile_by_id(*g, (*gi)->profile_id);
    return *gp ? NVML_SUCCESS : NVML_ERROR_UNKNOWN;
}

static void ci_name(const struct fk_profile *gp, unsigned c, char *out, size_t len)
{
    if (c >= gp->slices)
        snprintf(out, len, "MIG %.80s", gp->name);
    else
        snprintf(out, len, "MIG %uc.%.64s", c, gp->name);
}

static nvmlReturn_t ci_profile_impl(const char *fn, nvmlGpuInstance_t gpuInstance, unsigned profile,
                                    unsigned engProfile, void *info, int versioned)
{
    FK_BEGIN(fn);
    struct fk_gpu *g;
    struct fk_gi *gi;
    struct fk_profile *gp;
    nvmlReturn_t rc = ci_gi(ST, gpuInstance, &g, &gi, &gp);
    if (rc)
        FK_RETURN(rc);
    if (!info || profile >= NVML_COMPUTE_INSTANCE_PROFILE_COUNT ||
        engProfile >= NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (!ci_supported(profile, gp->slices))
        FK_RETURN(NVML_ERROR_NOT_SUPPORTED);
    unsigned c = ci_slices_of[profile], starts[8];
    nvmlComputeInstanceProfileInfo_t base = {
        .id = profile,
        .sliceCount = c,
        .instanceCount = ci_starts(c, gp->slices, starts),
        .multiprocessorCount = gp->sm * c / gp->slices,
        .sharedCopyEngineCount = gp->ce,
        .sharedDecoderCount = gp->dec,
        .sharedEncoderCount = gp->enc,
        .sharedJpegCount = gp->jpeg,
        .sharedOfaCount = gp->ofa,
    };
    if (!versioned) {
        *(nvmlComputeInstanceProfileInfo_t *)info = base;
        FK_RETURN(NVML_SUCCESS);
    }
    unsigned version = *(unsigned *)info;
    int v3 = version == FK_STRUCT_VERSION(nvmlComputeInstanceProfileInfo_v3_t, 3);
    if (!known_version(ST, version, FK_STRUCT_VERSION(nvmlComputeInstanceProfileInfo_v2_t, 2),
                       FK_STRUCT_VERSION(nvmlComputeInstanceProfileInfo_v3_t, 3)))
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    nvmlComputeInstanceProfileInfo_v3_t out;
    memset(&out, 0, sizeof(out));
    out.version = version;
    memcpy(&out.id, &base, sizeof(base));
    ci_name(gp, c, out.name, sizeof(out.name));
    out.capabilities = (gp->attrs & FK_ATTR_GFX) ? NVML_COMPUTE_INSTANCE_PROFILE_CAPS_GFX : 0;
    memcpy(info, &out, v3 ? sizeof(nvmlComputeInstanceProfileInfo_v3_t) : sizeof(nvmlComputeInstanceProfileInfo_v2_t));
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfo(nvmlGpuInstance_t gpuInstance, unsigned int profile,
                                                                    unsigned int engProfile,
                                                                    nvmlComputeInstanceProfileInfo_t *info)
{
    return ci_profile_impl("nvmlGpuInstanceGetComputeInstanceProfileInfo", gpuInstance, profile, engProfile, info, 0);
}

FK_EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfoV(nvmlGpuInstance_t gpuInstance,
                                                                     unsigned int profile, unsigned int engProfile,
                                                                     nvmlComputeInstanceProfileInfo_v2_t *info)
{
    return ci_profile_impl("nvmlGpuInstanceGetComputeInstanceProfileInfoV", gpuInstance, profile, engProfile, info, 1);
}

static unsigned ci_used_mask(const struct fk_gi *gi)
{
    unsigned used = 0;
    for (int i = 0; i < gi->nci; i++)
        used |= ((1u << gi->ci[i].size) - 1) << gi->ci[i].start;
    return used;
}

FK_EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstancePossiblePlacements(nvmlGpuInstance_t gpuInstance,
                                                                           unsigned int profileId,
                                                                           nvmlComputeInstancePlacement_t *placements,
                                                                           unsigned int *count)
{
    FK_BEGIN("nvmlGpuInstanceGetComputeInstancePossiblePlacements");
    struct fk_gpu *g;
    struct fk_gi *gi;
    struct fk_profile *gp;
    nvmlReturn_t rc = ci_gi(ST, gpuInstance, &g, &gi, &gp);
    if (rc)
        FK_RETURN(rc);
    if (!count || !ci_supported(profileId, gp->slices))
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    unsigned starts[8], n = ci_starts(ci_slices_of[profileId], gp->slices, starts);
    if (!placements) {
        *count = n;
        FK_RETURN(NVML_SUCCESS);
    }
    if (*count < n) {
        *count = n;
        FK_RETURN(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    for (unsigned i = 0; i < n; i++) {
        placements[i].start = starts[i];
        placements[i].size = ci_slices_of[profileId];
    }
    *count = n;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceRemainingCapacity(nvmlGpuInstance_t gpuInstance,
                                                                          unsigned int profileId, unsigned int *count)
{
    FK_BEGIN("nvmlGpuInstanceGetComputeInstanceRemainingCapacity");
    struct fk_gpu *g;
    struct fk_gi *gi;
    struct fk_profile *gp;
    nvmlReturn_t rc = ci_gi(ST, gpuInstance, &g, &gi, &gp);
    if (rc)
        FK_RETURN(rc);
    if (!count || !ci_supported(profileId, gp->slices))
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    unsigned c = ci_slices_of[profileId], starts[8], n = ci_starts(c, gp->slices, starts), used = ci_used_mask(gi);
    unsigned free = 0;
    for (unsigned i = 0; i < n; i++) {
        unsigned mask = ((1u << c) - 1) << starts[i];
        if (!(mask & used) && gi->nci + (int)free < FK_MAX_CIS) {
            used |= mask;
            free++;
        }
    }
    *count = free;
    FK_RETURN(NVML_SUCCESS);
}

static nvmlReturn_t create_ci(fk_call *c, nvmlGpuInstance_t gpuInstance, unsigned profileId,
                              const nvmlComputeInstancePlacement_t *placement, nvmlComputeInstance_t *out)
{
    struct fk_gpu *g;
    struct fk_gi *gi;
    struct fk_profile *gp;
    nvmlReturn_t rc = ci_gi(c->st, gpuInstance, &g, &gi, &gp);
    if (rc)
        return rc;
    if (!out || !ci_supported(profileId, gp->slices))
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned size = ci_slices_of[profileId], starts[8], n = ci_starts(size, gp->slices, starts);
    unsigned used = ci_used_mask(gi), start = 0;
    int found = 0;
    if (placement) {
        for (unsigned i = 0; i < n; i++)
            found |= starts[i] == placement->start;
        if (!found || placement->size != size)
            return NVML_ERROR_INVALID_ARGUMENT;
        start = placement->start;
        found = !((((1u << size) - 1) << start) & used);
    } else {
        for (unsigned i = 0; i < n && !found; i++)
            if (!((((1u << size) - 1) << starts[i]) & used)) {
                start = starts[i];
                found = 1;
            }
    }
    if (!found || gi->nci >= FK_MAX_CIS)
        return NVML_ERROR_INSUFFICIENT_RESOURCES;
    unsigned id = 0, slot = 0;
    for (;; id++) {
        int taken = 0;
        for (int i = 0; i < gi->nci; i++)
            taken |= gi->ci[i].id == id;
        if (!taken)
            break;
    }
    for (;; slot++) {
        int taken = 0;
        for (int i = 0; i < g->ngi; i++)
            for (int j = 0; j < g->gi[i].nci; j++)
                taken |= g->gi[i].ci[j].slot == slot;
        if (!taken)
            break;
    }
    if (slot >= g->compute_slices)
        return NVML_ERROR_INSUFFICIENT_RESOURCES;
    struct fk_ci *ci = &gi->ci[gi->nci++];
    memset(ci, 0, sizeof(*ci));
    ci->id = id;
    ci->profile_id = profileId;
    ci->start = start;
    ci->size = size;
    ci->slot = slot;
    ci->serial = ++c->st->serial;
    make_mig_uuid(c->st, g, gi->id, id, ci->serial, ci->uuid);
    c->dirty = 1;
    *out = fk_handle_get(FK_KIND_CI, gpuInstance->gpu, gi->serial, ci->serial);
    return *out ? NVML_SUCCESS : NVML_ERROR_MEMORY;
}

FK_EXPORT nvmlReturn_t nvmlGpuInstanceCreateComputeInstance(nvmlGpuInstance_t gpuInstance, unsigned int profileId,
                                                            nvmlComputeInstance_t *computeInstance)
{
    FK_BEGIN("nvmlGpuInstanceCreateComputeInstance");
    FK_RETURN(create_ci(&fk_c_, gpuInstance, profileId, NULL, computeInstance));
}

FK_EXPORT nvmlReturn_t nvmlGpuInstanceCreateComputeInstanceWithPlacement(
    nvmlGpuInstance_t gpuInstance, unsigned int profileId, const nvmlComputeInstancePlacement_t *placement,
    nvmlComputeInstance_t *computeInstance)
{
    FK_BEGIN("nvmlGpuInstanceCreateComputeInstanceWithPlacement");
    if (!placement)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    FK_RETURN(create_ci(&fk_c_, gpuInstance, profileId, placement, computeInstance));
}

FK_EXPORT nvmlReturn_t nvmlComputeInstanceDestroy(nvmlComputeInstance_t computeInstance)
{
    FK_BEGIN("nvmlComputeInstanceDestroy");
    struct fk_gpu *g;
    struct fk_gi *gi;
    struct fk_ci *ci;
    nvmlReturn_t rc = fk_resolve(ST, computeInstance, FK_KIND_CI, &g, &gi, &ci);
    if (rc)
        FK_RETURN(rc);
    if (procs_on(g, gi->id, ci->id))
        FK_RETURN(NVML_ERROR_IN_USE);
    int idx = (int)(ci - gi->ci);
    memmove(ci, ci + 1, (size_t)(gi->nci - idx - 1) * sizeof(*ci));
    gi->nci--;
    FK_DIRTY();
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstances(nvmlGpuInstance_t gpuInstance, unsigned int profileId,
                                                          nvmlComputeInstance_t *computeInstances,
                                                          unsigned int *count)
{
    FK_BEGIN("nvmlGpuInstanceGetComputeInstances");
    struct fk_gpu *g;
    struct fk_gi *gi;
    struct fk_profile *gp;
    nvmlReturn_t rc = ci_gi(ST, gpuInstance, &g, &gi, &gp);
    if (rc)
        FK_RETURN(rc);
    if (!count || !computeInstances || !ci_supported(profileId, gp->slices))
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    unsigned n = 0;
    for (int i = 0; i < gi->nci; i++) {
        if (gi->ci[i].profile_id != profileId)
            continue;
        computeInstances[n] = fk_handle_get(FK_KIND_CI, gpuInstance->gpu, gi->serial, gi->ci[i].serial);
        if (!computeInstances[n])
            FK_RETURN(NVML_ERROR_MEMORY);
        n++;
    }
    *count = n;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceById(nvmlGpuInstance_t gpuInstance, unsigned int id,
                                                             nvmlComputeInstance_t *computeInstance)
{
    FK_BEGIN("nvmlGpuInstanceGetComputeInstanceById");
    struct fk_gi *gi;
    nvmlReturn_t rc = fk_resolve(ST, gpuInstance, FK_KIND_GI, NULL, &gi, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!computeInstance)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    for (int i = 0; i < gi->nci; i++)
        if (gi->ci[i].id == id) {
            *computeInstance = fk_handle_get(FK_KIND_CI, gpuInstance->gpu, gi->serial, gi->ci[i].serial);
            FK_RETURN(*computeInstance ? NVML_SUCCESS : NVML_ERROR_MEMORY);
        }
    FK_RETURN(NVML_ERROR_NOT_FOUND);
}

/* v1 reports the parent GPU in info->device; _v2 the MIG device of this compute instance. */
static nvmlReturn_t ci_info_impl(const char *fn, nvmlComputeInstance_t computeInstance,
                                 nvmlComputeInstanceInfo_t *info, int mig_device)
{
    FK_BEGIN(fn);
    struct fk_gi *gi;
    struct fk_ci *ci;
    nvmlReturn_t rc = fk_resolve(ST, computeInstance, FK_KIND_CI, NULL, &gi, &ci);
    if (rc)
        FK_RETURN(rc);
    if (!info)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    int gpu = computeInstance->gpu;
    info->device = mig_device ? fk_handle_get(FK_KIND_MIG, gpu, gi->serial, ci->serial)
                              : fk_handle_get(FK_KIND_GPU, gpu, 0, 0);
    info->gpuInstance = fk_handle_get(FK_KIND_GI, gpu, gi->serial, 0);
    info->id = ci->id;
    info->profileId = ci->profile_id;
    info->placement.start = ci->start;
    info->placement.size = ci->size;
    FK_RETURN(info->device && info->gpuInstance ? NVML_SUCCESS : NVML_ERROR_MEMORY);
}

FK_EXPORT nvmlReturn_t nvmlComputeInstanceGetInfo_v2(nvmlComputeInstance_t computeInstance,
                                                     nvmlComputeInstanceInfo_t *info)
{
    return ci_info_impl("nvmlComputeInstanceGetInfo_v2", computeInstance, info, 1);
}

FK_EXPORT nvmlReturn_t nvmlComputeInstanceGetInfo(nvmlComputeInstance_t computeInstance,
                                                  nvmlComputeInstanceInfo_t *info)
{
    return ci_info_impl("nvmlComputeInstanceGetInfo", computeInstance, info, 0);
}
