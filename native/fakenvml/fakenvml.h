/*
 * fakenvml: a simulated libnvidia-ml.so.1 over a state file (see README.md in this folder).
 *
 * This header holds (1) the NVML ABI subset the library exports — return codes, opaque handles
 * and the structs, laid out as NVML lays them out on x86-64 — and (2) the simulator's internal
 * model of a node (GPUs, profiles, GPU/compute instances, processes, armed faults) plus the
 * helpers the API files share. Only libc and pthread are used.
 */
#ifndef HAMI_FAKENVML_H
#define HAMI_FAKENVML_H

#include <stddef.h>
#include <stdint.h>

#define FK_EXPORT __attribute__((visibility("default")))
#define FK_INTERNAL __attribute__((visibility("hidden")))

/* ---- NVML ABI: return codes ------------------------------------------------------------ */

typedef int nvmlReturn_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_INSUFFICIENT_POWER = 8,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_IRQ_ISSUE = 11,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_CORRUPTED_INFOROM = 14,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_NO_DATA = 21,
    NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22,
    NVML_ERROR_INSUFFICIENT_RESOURCES = 23,
    NVML_ERROR_FREQ_NOT_SUPPORTED = 24,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_DEPRECATED = 26,
    NVML_ERROR_NOT_READY = 27,
    NVML_ERROR_GPU_NOT_FOUND = 28,
    NVML_ERROR_INVALID_STATE = 29,
    NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30,
    NVML_ERROR_UNKNOWN = 999,
};

/* ---- NVML ABI: handles and structs ---------------------------------------------------------- */

struct fk_handle;
typedef struct fk_handle *nvmlDevice_t;
typedef struct fk_handle *nvmlGpuInstance_t;
typedef struct fk_handle *nvmlComputeInstance_t;

#define FK_STRUCT_VERSION(type, v) ((unsigned int)(sizeof(type) | ((v) << 24)))

typedef struct {
    unsigned int start;
    unsigned int size;
} nvmlGpuInstancePlacement_t, nvmlComputeInstancePlacement_t;

typedef struct {
    unsigned int id, isP2pSupported, sliceCount, instanceCount, multiprocessorCount;
    unsigned int copyEngineCount, decoderCount, encoderCount, jpegCount, ofaCount;
    unsigned long long memorySizeMB;
} nvmlGpuInstanceProfileInfo_t;

typedef struct {
    unsigned int version;
    unsigned int id, isP2pSupported, sliceCount, instanceCount, multiprocessorCount;
    unsigned int copyEngineCount, decoderCount, encoderCount, jpegCount, ofaCount;
    unsigned long long memorySizeMB;
    char name[96];
} nvmlGpuInstanceProfileInfo_v2_t;

typedef struct {
    unsigned int version;
    unsigned int id, sliceCount, instanceCount, multiprocessorCount;
    unsigned int copyEngineCount, decoderCount, encoderCount, jpegCount, ofaCount;
    unsigned long long memorySizeMB;
    char name[96];
    unsigned int capabilities;
} nvmlGpuInstanceProfileInfo_v3_t;

typedef struct {
    nvmlDevice_t device;
    unsigned int id;
    unsigned int profileId;
    nvmlGpuInstancePlacement_t placement;
} nvmlGpuInstanceInfo_t;

typedef struct {
    unsigned int id, sliceCount, instanceCount, multiprocessorCount;
    unsigned int sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount, sharedJpegCount, sharedOfaCount;
} nvmlComputeInstanceProfileInfo_t;

typedef struct {
    unsigned int version;
    unsigned int id, sliceCount, instanceCount, multiprocessorCount;
    unsigned int sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount, sharedJpegCount, sharedOfaCount;
    char name[96];
} nvmlComputeInstanceProfileInfo_v2_t;

typedef struct {
    unsigned int version;
    unsigned int id, sliceCount, instanceCount, multiprocessorCount;
    unsigned int sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount, sharedJpegCount, sharedOfaCount;
    char name[96];
    unsigned int capabilities;
} nvmlComputeInstanceProfileInfo_v3_t;

typedef struct {
    nvmlDevice_t device;
    nvmlGpuInstance_t gpuInstance;
    unsigned int id;
    unsigned int profileId;
    nvmlComputeInstancePlacement_t placement;
} nvmlComputeInstanceInfo_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} nvmlProcessInfo_v1_t;

#define NVML_DEVICE_MIG_DISABLE 0
#define NVML_DEVICE_MIG_ENABLE 1
#define NVML_GPU_INSTANCE_PROFILE_COUNT 0x12
#define NVML_COMPUTE_INSTANCE_PROFILE_COUNT 0x9
#define NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT 0x1
#define NVML_GPU_INSTANCE_PROFILE_CAPS_GFX 0x2
#define NVML_COMPUTE_INSTANCE_PROFILE_CAPS_GFX 0x1
#define FK_NO_INSTANCE 0xFFFFFFFFu

/* ---- The simulated node ------------------------------------------------------------------ */

#define FK_MAX_GPUS 16
#define FK_MAX_PROFILES 24
#define FK_MAX_PLACEMENTS 8
#define FK_MAX_GIS 16
#define FK_MAX_CIS 8
#define FK_MAX_PROCS 64
#define FK_MAX_HOLDS 16
#define FK_MAX_FAULTS 64
#define FK_MAX_COUNTS 128
#define FK_STR 96
#define FK_FN 64

/* profile attribute flags, derived from the name's suffixes */
#define FK_ATTR_ME 0x1     /* +me */
#define FK_ATTR_ME_ALL 0x2 /* +me.all: only -me profiles may share the GPU */
#define FK_ATTR_NO_ME 0x4  /* -me */
#define FK_ATTR_GFX 0x8    /* +gfx */

struct fk_profile {
    unsigned constant, id, slices, mem_slices, cap, sm, ce, dec, enc, jpeg, ofa;
    unsigned long long mib;
    unsigned nplace;
    unsigned place[FK_MAX_PLACEMENTS];
    unsigned attrs;
    char name[FK_STR];
};

struct fk_ci {
    unsigned id, profile_id, start, size, slot;
    unsigned long long serial;
    char uuid[FK_STR];
};

struct fk_gi {
    unsigned id, profile_id, start, size;
    unsigned long long serial;
    int nci;
    struct fk_ci ci[FK_MAX_CIS];
};

struct fk_proc {
    unsigned pid, gi, ci; /* gi/ci = FK_NO_INSTANCE when not on a MIG device */
    unsigned long long used_mib;
};

/* Another NVML client (DCGM, a leaked handle) holding an instance open: destroy answers IN_USE
 * although no process is listed. ci = FK_NO_INSTANCE holds the GPU instance itself. */
struct fk_hold {
    unsigned gi, ci;
};

struct fk_gpu {
    char uuid[FK_STR], name[FK_STR], model[FK_STR];
    unsigned long long memory_mib;
    unsigned arch, cc_major, cc_minor, pci_device_id, pci_subsystem_id, pci_bus;
    int mig_capable, mig_volatile, mig_reset_required;
    unsigned mig_current, mig_pending;
    unsigned mem_slices, compute_slices, max_gis;
    int nprof;
    struct fk_profile prof[FK_MAX_PROFILES];
    int ngi;
    struct fk_gi gi[FK_MAX_GIS];
    int nproc;
    struct fk_proc proc[FK_MAX_PROCS];
    int nhold;
    struct fk_hold hold[FK_MAX_HOLDS];
};

struct fk_fault {
    char fn[FK_FN];
    unsigned countdown;
    int code;
};

struct fk_count {
    char fn[FK_FN];
    unsigned long long n;
};

struct fk_state {
    char driver[80];
    unsigned long long serial;
    unsigned boot;
    int trace;
    unsigned profile_info_version; /* newest profile-info struct the driver knows (2 or 3) */
    int ngpu;
    struct fk_gpu gpu[FK_MAX_GPUS];
    int nfault;
    struct fk_fault fault[FK_MAX_FAULTS];
    int ncount;
    struct fk_count count[FK_MAX_COUNTS];
};

/* ---- One API call: lock, load, fault check, work, save, unlock ------------------------------- */

typedef struct {
    struct fk_state *st;
    int lockfd;
    int dirty;
} fk_call;

FK_INTERNAL nvmlReturn_t fk_begin(fk_call *c, const char *fn);
FK_INTERNAL nvmlReturn_t fk_end(fk_call *c, nvmlReturn_t rc);
FK_INTERNAL nvmlReturn_t fk_init(const char *fn);
FK_INTERNAL nvmlReturn_t fk_shutdown(void);

#define FK_BEGIN(name)                                       \
    fk_call fk_c_;                                           \
    do {                                                     \
        nvmlReturn_t fk_rc_ = fk_begin(&fk_c_, (name));      \
        if (fk_rc_ != NVML_SUCCESS)                          \
            return fk_rc_;                                   \
    } while (0)
#define ST (fk_c_.st)
#define FK_DIRTY() (fk_c_.dirty = 1)
#define FK_RETURN(rc) return fk_end(&fk_c_, (rc))

/* state.c: the file format */
FK_INTERNAL int fk_parse(const char *text, struct fk_state *st, char *err, size_t errlen);
FK_INTERNAL int fk_write(const struct fk_state *st, const char *path);

/* handles.c */
enum fk_kind { FK_KIND_GPU = 1, FK_KIND_MIG = 2, FK_KIND_GI = 3, FK_KIND_CI = 4 };

struct fk_handle {
    unsigned magic;
    int kind;
    unsigned epoch;
    int gpu;
    unsigned long long gi_serial, ci_serial;
};

FK_INTERNAL void fk_handles_reset(unsigned epoch);
FK_INTERNAL struct fk_handle *fk_handle_get(int kind, int gpu, unsigned long long gi_serial,
                                            unsigned long long ci_serial);
FK_INTERNAL nvmlReturn_t fk_resolve(const struct fk_state *st, const struct fk_handle *h, int want_kind,
                                    struct fk_gpu **gpu, struct fk_gi **gi, struct fk_ci **ci);

/* mig helpers shared by the device and MIG files */
FK_INTERNAL struct fk_profile *fk_profile_by_id(struct fk_gpu *g, unsigned id);
FK_INTERNAL void fk_mig_device_name(const struct fk_gpu *g, const struct fk_gi *gi, const struct fk_ci *ci,
                                    char *out, size_t len);

#endif
