/*
 * System and device functions: driver version, enumeration, identity, memory, PCI, architecture,
 * MIG mode, MIG device handles and running processes. MIG device handles are accepted wherever
 * NVML accepts them (name, UUID, memory, processes, PCI/architecture of the parent); functions
 * that only make sense on a physical GPU return NVML_ERROR_INVALID_ARGUMENT for a MIG handle.
 */
#define _GNU_SOURCE
#include "fakenvml.h"

#include <stdio.h>
#include <string.h>

#define MIB (1024ull * 1024ull)

static nvmlReturn_t put_str(char *buf, unsigned int len, const char *s)
{
    if (!buf)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > len)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buf, s, strlen(s) + 1);
    return NVML_SUCCESS;
}

static struct fk_profile *gi_profile(struct fk_gpu *g, const struct fk_gi *gi)
{
    return fk_profile_by_id(g, gi->profile_id);
}

FK_INTERNAL struct fk_profile *fk_profile_by_id(struct fk_gpu *g, unsigned id)
{
    for (int i = 0; i < g->nprof; i++)
        if (g->prof[i].id == id)
            return &g->prof[i];
    return NULL;
}

FK_INTERNAL void fk_mig_device_name(const struct fk_gpu *g, const struct fk_gi *gi, const struct fk_ci *ci,
                                    char *out, size_t len)
{
    const char *profile = "?";
    unsigned slices = 0;
    for (int i = 0; i < g->nprof; i++)
        if (g->prof[i].id == gi->profile_id) {
            profile = g->prof[i].name;
            slices = g->prof[i].slices;
        }
    if (ci->size >= slices)
        snprintf(out, len, "%s MIG %s", g->name, profile);
    else
        snprintf(out, len, "%s MIG %uc.%s", g->name, ci->size, profile);
}

/* ---- system ---------------------------------------------------------------------------------- */

FK_EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    FK_BEGIN("nvmlSystemGetDriverVersion");
    FK_RETURN(put_str(version, length, ST->driver));
}

FK_EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    FK_BEGIN("nvmlSystemGetNVMLVersion");
    char text[96];
    snprintf(text, sizeof(text), "12.%s", ST->driver);
    FK_RETURN(put_str(version, length, text));
}

/* ---- enumeration ------------------------------------------------------------------------------ */

static nvmlReturn_t count_impl(const char *fn, unsigned int *count)
{
    FK_BEGIN(fn);
    if (!count)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *count = (unsigned)ST->ngpu;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) { return count_impl("nvmlDeviceGetCount_v2", count); }
FK_EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return count_impl("nvmlDeviceGetCount", count); }

static nvmlReturn_t by_index_impl(const char *fn, unsigned int index, nvmlDevice_t *device)
{
    FK_BEGIN(fn);
    if (!device || index >= (unsigned)ST->ngpu)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *device = fk_handle_get(FK_KIND_GPU, (int)index, 0, 0);
    FK_RETURN(*device ? NVML_SUCCESS : NVML_ERROR_MEMORY);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    return by_index_impl("nvmlDeviceGetHandleByIndex_v2", index, device);
}
FK_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return by_index_impl("nvmlDeviceGetHandleByIndex", index, device);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    FK_BEGIN("nvmlDeviceGetHandleByUUID");
    if (!uuid || !device)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    for (int i = 0; i < ST->ngpu; i++) {
        struct fk_gpu *g = &ST->gpu[i];
        if (!strcmp(g->uuid, uuid)) {
            *device = fk_handle_get(FK_KIND_GPU, i, 0, 0);
            FK_RETURN(*device ? NVML_SUCCESS : NVML_ERROR_MEMORY);
        }
        for (int j = 0; j < g->ngi; j++)
            for (int k = 0; k < g->gi[j].nci; k++)
                if (!strcmp(g->gi[j].ci[k].uuid, uuid)) {
                    *device = fk_handle_get(FK_KIND_MIG, i, g->gi[j].serial, g->gi[j].ci[k].serial);
                    FK_RETURN(*device ? NVML_SUCCESS : NVML_ERROR_MEMORY);
                }
    }
    FK_RETURN(NVML_ERROR_NOT_FOUND);
}

/* ---- identity --------------------------------------------------------------------------------- */

FK_EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    FK_BEGIN("nvmlDeviceGetName");
    struct fk_gpu *g;
    struct fk_gi *gi;
    struct fk_ci *ci;
    nvmlReturn_t rc = fk_resolve(ST, device, 0, &g, &gi, &ci);
    if (rc)
        FK_RETURN(rc);
    if (!ci)
        FK_RETURN(put_str(name, length, g->name));
    char text[256];
    fk_mig_device_name(g, gi, ci, text, sizeof(text));
    FK_RETURN(put_str(name, length, text));
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    FK_BEGIN("nvmlDeviceGetUUID");
    struct fk_gpu *g;
    struct fk_ci *ci;
    nvmlReturn_t rc = fk_resolve(ST, device, 0, &g, NULL, &ci);
    if (rc)
        FK_RETURN(rc);
    FK_RETURN(put_str(uuid, length, ci ? ci->uuid : g->uuid));
}

static void memory_of(struct fk_gpu *g, struct fk_gi *gi, struct fk_ci *ci, unsigned long long *total,
                      unsigned long long *used)
{
    unsigned long long busy = 0;
    for (int i = 0; i < g->nproc; i++) {
        const struct fk_proc *p = &g->proc[i];
        if (!ci || (p->gi == gi->id && p->ci == ci->id))
            busy += p->used_mib;
    }
    if (ci) {
        struct fk_profile *pr = gi_profile(g, gi);
        *total = (pr ? pr->mib : 0) * MIB;
    } else {
        *total = g->memory_mib * MIB;
    }
    *used = busy * MIB > *total ? *total : busy * MIB;
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    FK_BEGIN("nvmlDeviceGetMemoryInfo");
    struct fk_gpu *g;
    struct fk_gi *gi;
    struct fk_ci *ci;
    nvmlReturn_t rc = fk_resolve(ST, device, 0, &g, &gi, &ci);
    if (rc)
        FK_RETURN(rc);
    if (!memory)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    memory_of(g, gi, ci, &memory->total, &memory->used);
    memory->free = memory->total - memory->used;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    FK_BEGIN("nvmlDeviceGetMemoryInfo_v2");
    struct fk_gpu *g;
    struct fk_gi *gi;
    struct fk_ci *ci;
    nvmlReturn_t rc = fk_resolve(ST, device, 0, &g, &gi, &ci);
    if (rc)
        FK_RETURN(rc);
    if (!memory)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (memory->version != FK_STRUCT_VERSION(nvmlMemory_v2_t, 2))
        FK_RETURN(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    memory_of(g, gi, ci, &memory->total, &memory->used);
    memory->reserved = 0;
    memory->free = memory->total - memory->used;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    FK_BEGIN("nvmlDeviceGetPciInfo_v3");
    struct fk_gpu *g;
    nvmlReturn_t rc = fk_resolve(ST, device, 0, &g, NULL, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!pci)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    memset(pci, 0, sizeof(*pci));
    pci->domain = 0;
    pci->bus = g->pci_bus;
    pci->device = 0;
    pci->pciDeviceId = g->pci_device_id;
    pci->pciSubSystemId = g->pci_subsystem_id;
    snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), "%04X:%02X:%02X.0", 0, g->pci_bus & 0xff, 0);
    snprintf(pci->busId, sizeof(pci->busId), "%08X:%02X:%02X.0", 0, g->pci_bus & 0xff, 0);
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, unsigned int *arch)
{
    FK_BEGIN("nvmlDeviceGetArchitecture");
    struct fk_gpu *g;
    nvmlReturn_t rc = fk_resolve(ST, device, 0, &g, NULL, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!arch)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *arch = g->arch;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor)
{
    FK_BEGIN("nvmlDeviceGetCudaComputeCapability");
    struct fk_gpu *g;
    nvmlReturn_t rc = fk_resolve(ST, device, 0, &g, NULL, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!major || !minor)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *major = (int)g->cc_major;
    *minor = (int)g->cc_minor;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minor)
{
    FK_BEGIN("nvmlDeviceGetMinorNumber");
    nvmlReturn_t rc = fk_resolve(ST, device, FK_KIND_GPU, NULL, NULL, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!minor)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *minor = (unsigned)device->gpu;
    FK_RETURN(NVML_SUCCESS);
}

/* ---- processes -------------------------------------------------------------------------------- */

static nvmlReturn_t processes_impl(const char *fn, nvmlDevice_t device, unsigned int *count, void *infos,
                                   int legacy)
{
    FK_BEGIN(fn);
    struct fk_gpu *g;
    struct fk_gi *gi;
    struct fk_ci *ci;
    nvmlReturn_t rc = fk_resolve(ST, device, 0, &g, &gi, &ci);
    if (rc)
        FK_RETURN(rc);
    if (!count)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    unsigned n = 0;
    for (int i = 0; i < g->nproc; i++)
        if (!ci || (g->proc[i].gi == gi->id && g->proc[i].ci == ci->id))
            n++;
    if (n == 0) {
        *count = 0;
        FK_RETURN(NVML_SUCCESS);
    }
    if (*count < n || !infos) {
        *count = n;
        FK_RETURN(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    unsigned k = 0;
    for (int i = 0; i < g->nproc; i++) {
        const struct fk_proc *p = &g->proc[i];
        if (ci && !(p->gi == gi->id && p->ci == ci->id))
            continue;
        if (legacy) {
            nvmlProcessInfo_v1_t *out = (nvmlProcessInfo_v1_t *)infos + k;
            out->pid = p->pid;
            out->usedGpuMemory = p->used_mib * MIB;
        } else {
            nvmlProcessInfo_t *out = (nvmlProcessInfo_t *)infos + k;
            out->pid = p->pid;
            out->usedGpuMemory = p->used_mib * MIB;
            out->gpuInstanceId = p->gi;
            out->computeInstanceId = p->ci;
        }
        k++;
    }
    *count = n;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count,
                                                               nvmlProcessInfo_t *infos)
{
    return processes_impl("nvmlDeviceGetComputeRunningProcesses_v3", device, count, infos, 0);
}
FK_EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *count,
                                                               nvmlProcessInfo_t *infos)
{
    return processes_impl("nvmlDeviceGetComputeRunningProcesses_v2", device, count, infos, 0);
}
FK_EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *count,
                                                            nvmlProcessInfo_v1_t *infos)
{
    return processes_impl("nvmlDeviceGetComputeRunningProcesses", device, count, infos, 1);
}

/* ---- MIG mode --------------------------------------------------------------------------------- */

FK_EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current, unsigned int *pending)
{
    FK_BEGIN("nvmlDeviceGetMigMode");
    struct fk_gpu *g;
    nvmlReturn_t rc = fk_resolve(ST, device, FK_KIND_GPU, &g, NULL, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!current || !pending)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable)
        FK_RETURN(NVML_ERROR_NOT_SUPPORTED);
    *current = g->mig_current;
    *pending = g->mig_pending;
    FK_RETURN(NVML_SUCCESS);
}

/*
 * Returns SUCCESS whenever the request itself is valid; whether the mode actually changed comes
 * back in *activationStatus (NVML's convention): IN_USE if processes run on the GPU (the new mode
 * stays pending) or instances still exist when disabling (nothing changes); RESET_REQUIRED on
 * GPUs whose mode changes only at the next reset (Ampere in this simulator); SUCCESS otherwise.
 */
FK_EXPORT nvmlReturn_t nvmlDeviceSetMigMode(nvmlDevice_t device, unsigned int mode, nvmlReturn_t *activationStatus)
{
    FK_BEGIN("nvmlDeviceSetMigMode");
    struct fk_gpu *g;
    nvmlReturn_t rc = fk_resolve(ST, device, FK_KIND_GPU, &g, NULL, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!activationStatus || mode > NVML_DEVICE_MIG_ENABLE)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable)
        FK_RETURN(NVML_ERROR_NOT_SUPPORTED);
    if (g->mig_current == mode && g->mig_pending == mode) {
        *activationStatus = NVML_SUCCESS;
        FK_RETURN(NVML_SUCCESS);
    }
    if (mode == NVML_DEVICE_MIG_DISABLE && g->ngi > 0) {
        *activationStatus = NVML_ERROR_IN_USE;
        FK_RETURN(NVML_SUCCESS);
    }
    FK_DIRTY();
    g->mig_pending = mode;
    if (g->nproc > 0)
        *activationStatus = NVML_ERROR_IN_USE;
    else if (g->mig_reset_required && g->mig_current != mode)
        *activationStatus = NVML_ERROR_RESET_REQUIRED;
    else {
        g->mig_current = mode;
        *activationStatus = NVML_SUCCESS;
    }
    FK_RETURN(NVML_SUCCESS);
}

/* ---- MIG device handles ----------------------------------------------------------------------- */

FK_EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count)
{
    FK_BEGIN("nvmlDeviceGetMaxMigDeviceCount");
    struct fk_gpu *g;
    nvmlReturn_t rc = fk_resolve(ST, device, FK_KIND_GPU, &g, NULL, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!count)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *count = (g->mig_capable && g->mig_current) ? g->compute_slices : 0;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                           nvmlDevice_t *migDevice)
{
    FK_BEGIN("nvmlDeviceGetMigDeviceHandleByIndex");
    struct fk_gpu *g;
    nvmlReturn_t rc = fk_resolve(ST, device, FK_KIND_GPU, &g, NULL, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!migDevice)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable || !g->mig_current)
        FK_RETURN(NVML_ERROR_NOT_SUPPORTED);
    if (index >= g->compute_slices)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    for (int i = 0; i < g->ngi; i++)
        for (int j = 0; j < g->gi[i].nci; j++)
            if (g->gi[i].ci[j].slot == index) {
                *migDevice = fk_handle_get(FK_KIND_MIG, device->gpu, g->gi[i].serial, g->gi[i].ci[j].serial);
                FK_RETURN(*migDevice ? NVML_SUCCESS : NVML_ERROR_MEMORY);
            }
    FK_RETURN(NVML_ERROR_NOT_FOUND);
}

FK_EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice)
{
    FK_BEGIN("nvmlDeviceIsMigDeviceHandle");
    nvmlReturn_t rc = fk_resolve(ST, device, 0, NULL, NULL, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!isMigDevice)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *isMigDevice = device->kind == FK_KIND_MIG;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice, nvmlDevice_t *device)
{
    FK_BEGIN("nvmlDeviceGetDeviceHandleFromMigDeviceHandle");
    nvmlReturn_t rc = fk_resolve(ST, migDevice, FK_KIND_MIG, NULL, NULL, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!device)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *device = fk_handle_get(FK_KIND_GPU, migDevice->gpu, 0, 0);
    FK_RETURN(*device ? NVML_SUCCESS : NVML_ERROR_MEMORY);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id)
{
    FK_BEGIN("nvmlDeviceGetGpuInstanceId");
    struct fk_gi *gi;
    nvmlReturn_t rc = fk_resolve(ST, device, FK_KIND_MIG, NULL, &gi, NULL);
    if (rc)
        FK_RETURN(rc);
    if (!id)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *id = gi->id;
    FK_RETURN(NVML_SUCCESS);
}

FK_EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id)
{
    FK_BEGIN("nvmlDeviceGetComputeInstanceId");
    struct fk_ci *ci;
    nvmlReturn_t rc = fk_resolve(ST, device, FK_KIND_MIG, NULL, NULL, &ci);
    if (rc)
        FK_RETURN(rc);
    if (!id)
        FK_RETURN(NVML_ERROR_INVALID_ARGUMENT);
    *id = ci->id;
    FK_RETURN(NVML_SUCCESS);
}
