/*
 * The state file: parsing, writing, locking, and the per-call frame (fk_begin / fk_end).
 *
 * Every API call that needs state takes an exclusive flock() on "<state>.lock", re-reads and
 * parses the state file, counts the call against armed faults, does its work, and — only if
 * something changed — writes the state to "<state>.tmp.<pid>.<tid>" and rename()s it over the
 * state file before unlocking. Concurrent processes therefore see one truth, and a process that
 * starts later finds what existed before. The format is documented in README.md.
 */
#define _GNU_SOURCE
#include "fakenvml.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FK_MAX_FILE (4 << 20)

static pthread_mutex_t fk_init_lock = PTHREAD_MUTEX_INITIALIZER;
static int fk_refcount = 0;
static unsigned fk_epoch = 0;
static char fk_path[PATH_MAX];

static void fk_warn(const char *what, const char *detail)
{
    fprintf(stderr, "fakenvml: %s: %s (state file %s)\n", what, detail, fk_path);
}

/* ---- parsing ------------------------------------------------------------------------------ */

static unsigned attrs_of(const char *name)
{
    unsigned a = 0;
    if (strstr(name, "+me.all"))
        a |= FK_ATTR_ME_ALL;
    else if (strstr(name, "+me"))
        a |= FK_ATTR_ME;
    if (strstr(name, "-me"))
        a |= FK_ATTR_NO_ME;
    if (strstr(name, "+gfx"))
        a |= FK_ATTR_GFX;
    return a;
}

static const char *rest_of(const char *line, const char *key)
{
    const char *p = line + strlen(key);
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static void copy_str(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src);
}

#define FAIL(...)                                 \
    do {                                          \
        snprintf(err, errlen, __VA_ARGS__);       \
        return -1;                                \
    } while (0)

FK_INTERNAL int fk_parse(const char *text, struct fk_state *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    st->profile_info_version = 3;
    struct fk_gpu *g = NULL;
    struct fk_gi *gi = NULL;
    int lineno = 0, header = 0;
    const char *p = text;
    char line[1024];
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        lineno++;
        if (n >= sizeof(line))
            FAIL("line %d too long", lineno);
        memcpy(line, p, n);
        line[n] = 0;
        p = nl ? nl + 1 : p + n;
        while (n && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
            line[--n] = 0;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#')
            continue;
        char key[32] = {0};
        sscanf(s, "%31s", key);
        if (!header) {
            int version = 0;
            if (strcmp(key, "fakenvml-state") || sscanf(s, "%*s %d", &version) != 1 || version != 1)
                FAIL("line %d: expected 'fakenvml-state 1'", lineno);
            header = 1;
            continue;
        }
        if (!strcmp(key, "driver")) {
            copy_str(st->driver, sizeof(st->driver), rest_of(s, key));
        } else if (!strcmp(key, "serial")) {
            st->serial = strtoull(rest_of(s, key), NULL, 10);
        } else if (!strcmp(key, "boot")) {
            st->boot = (unsigned)strtoul(rest_of(s, key), NULL, 10);
        } else if (!strcmp(key, "trace")) {
            st->trace = atoi(rest_of(s, key));
        } else if (!strcmp(key, "profile_info_version")) {
            st->profile_info_version = (unsigned)strtoul(rest_of(s, key), NULL, 10);
            if (st->profile_info_version < 2 || st->profile_info_version > 3)
                FAIL("line %d: profile_info_version must be 2 or 3", lineno);
        } else if (!strcmp(key, "fault")) {
            if (st->nfault >= FK_MAX_FAULTS)
                FAIL("line %d: too many faults", lineno);
            struct fk_fault *f = &st->fault[st->nfault];
            if (sscanf(s, "%*s %63s %u %d", f->fn, &f->countdown, &f->code) != 3)
                FAIL("line %d: expected 'fault <function> <countdown> <code>'", lineno);
            st->nfault++;
        } else if (!strcmp(key, "count")) {
            if (st->ncount >= FK_MAX_COUNTS)
                FAIL("line %d: too many counters", lineno);
            struct fk_count *c = &st->count[st->ncount];
            if (sscanf(s, "%*s %63s %llu", c->fn, &c->n) != 2)
                FAIL("line %d: expected 'count <function> <n>'", lineno);
            st->ncount++;
        } else if (!strcmp(key, "gpu")) {
            if (g)
                FAIL("line %d: 'gpu' inside a gpu block (missing 'end')", lineno);
            if (st->ngpu >= FK_MAX_GPUS)
                FAIL("line %d: more than %d GPUs", lineno, FK_MAX_GPUS);
            g = &st->gpu[st->ngpu++];
            gi = NULL;
            g->cc_major = 8;
            g->mig_current = g->mig_pending = 0;
        } else if (!g) {
            FAIL("line %d: unknown top-level key '%s'", lineno, key);
        } else if (!strcmp(key, "end")) {
            g = NULL;
            gi = NULL;
        } else if (!strcmp(key, "uuid")) {
            copy_str(g->uuid, sizeof(g->uuid), rest_of(s, key));
        } else if (!strcmp(key, "name")) {
            copy_str(g->name, sizeof(g->name), rest_of(s, key));
        } else if (!strcmp(key, "model")) {
            copy_str(g->model, sizeof(g->model), rest_of(s, key));
        } else if (!strcmp(key, "memory_mib")) {
            g->memory_mib = strtoull(rest_of(s, key), NULL, 10);
        } else if (!strcmp(key, "arch")) {
            g->arch = (unsigned)strtoul(rest_of(s, key), NULL, 0);
        } else if (!strcmp(key, "cc")) {
            if (sscanf(s, "%*s %u %u", &g->cc_major, &g->cc_minor) != 2)
                FAIL("line %d: expected 'cc <major> <minor>'", lineno);
        } else if (!strcmp(key, "pci")) {
            char a[32], b[32], c[32];
            if (sscanf(s, "%*s %31s %31s %31s", a, b, c) != 3)
                FAIL("line %d: expected 'pci <device id> <subsystem id> <bus>'", lineno);
            g->pci_device_id = (unsigned)strtoul(a, NULL, 0);
            g->pci_subsystem_id = (unsigned)strtoul(b, NULL, 0);
            g->pci_bus = (unsigned)strtoul(c, NULL, 0);
        } else if (!strcmp(key, "mig_capable")) {
            g->mig_capable = atoi(rest_of(s, key));
        } else if (!strcmp(key, "mig_mode")) {
            if (sscanf(s, "%*s %u %u", &g->mig_current, &g->mig_pending) != 2)
                FAIL("line %d: expected 'mig_mode <current> <pending>'", lineno);
        } else if (!strcmp(key, "mig_volatile")) {
            g->mig_volatile = atoi(rest_of(s, key));
        } else if (!strcmp(key, "mig_reset_required")) {
            g->mig_reset_required = atoi(rest_of(s, key));
        } else if (!strcmp(key, "slices")) {
            if (sscanf(s, "%*s %u %u %u", &g->mem_slices, &g->compute_slices, &g->max_gis) != 3)
                FAIL("line %d: expected 'slices <memory> <compute> <max GIs>'", lineno);
        } else if (!strcmp(key, "profile")) {
            if (g->nprof >= FK_MAX_PROFILES)
                FAIL("line %d: too many profiles", lineno);
            struct fk_profile *pr = &g->prof[g->nprof];
            char places[64];
            if (sscanf(s, "%*s %u %u %u %u %u %llu %u %u %u %u %u %u %63s %95s", &pr->constant, &pr->id,
                       &pr->slices, &pr->mem_slices, &pr->cap, &pr->mib, &pr->sm, &pr->ce, &pr->dec, &pr->enc,
                       &pr->jpeg, &pr->ofa, places, pr->name) != 14)
                FAIL("line %d: expected 'profile <const> <id> <g> <mem> <cap> <mib> <sm> <ce> <dec> <enc> "
                     "<jpeg> <ofa> <starts,…> <name>'", lineno);
            char *save = NULL;
            for (char *tok = strtok_r(places, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (pr->nplace >= FK_MAX_PLACEMENTS)
                    FAIL("line %d: too many placements", lineno);
                pr->place[pr->nplace++] = (unsigned)strtoul(tok, NULL, 10);
            }
            pr->attrs = attrs_of(pr->name);
            g->nprof++;
        } else if (!strcmp(key, "gi")) {
            if (g->ngi >= FK_MAX_GIS)
                FAIL("line %d: too many GPU instances", lineno);
            gi = &g->gi[g->ngi];
            if (sscanf(s, "%*s %u %u %u %u %llu", &gi->id, &gi->profile_id, &gi->start, &gi->size, &gi->serial) != 5)
                FAIL("line %d: expected 'gi <id> <profile id> <start> <size> <serial>'", lineno);
            g->ngi++;
        } else if (!strcmp(key, "ci")) {
            unsigned giid;
            struct fk_ci ci = {0};
            if (sscanf(s, "%*s %u %u %u %u %u %u %llu %95s", &giid, &ci.id, &ci.profile_id, &ci.start, &ci.size,
                       &ci.slot, &ci.serial, ci.uuid) != 8)
                FAIL("line %d: expected 'ci <gi id> <id> <profile id> <start> <size> <slot> <serial> <uuid>'",
                     lineno);
            struct fk_gi *owner = NULL;
            for (int i = 0; i < g->ngi; i++)
                if (g->gi[i].id == giid)
                    owner = &g->gi[i];
            if (!owner)
                FAIL("line %d: compute instance of unknown GPU instance %u", lineno, giid);
            if (owner->nci >= FK_MAX_CIS)
                FAIL("line %d: too many compute instances", lineno);
            owner->ci[owner->nci++] = ci;
        } else if (!strcmp(key, "proc")) {
            if (g->nproc >= FK_MAX_PROCS)
                FAIL("line %d: too many processes", lineno);
            struct fk_proc *pr = &g->proc[g->nproc];
            long long gid, cid;
            if (sscanf(s, "%*s %u %lld %lld %llu", &pr->pid, &gid, &cid, &pr->used_mib) != 4)
                FAIL("line %d: expected 'proc <pid> <gi id|-1> <ci id|-1> <used MiB>'", lineno);
            pr->gi = gid < 0 ? FK_NO_INSTANCE : (unsigned)gid;
            pr->ci = cid < 0 ? FK_NO_INSTANCE : (unsigned)cid;
            g->nproc++;
        } else if (!strcmp(key, "hold")) {
            if (g->nhold >= FK_MAX_HOLDS)
                FAIL("line %d: too many holds", lineno);
            long long gid, cid;
            if (sscanf(s, "%*s %lld %lld", &gid, &cid) != 2 || gid < 0)
                FAIL("line %d: expected 'hold <gi id> <ci id|-1>'", lineno);
            g->hold[g->nhold].gi = (unsigned)gid;
            g->hold[g->nhold].ci = cid < 0 ? FK_NO_INSTANCE : (unsigned)cid;
            g->nhold++;
        } else {
            FAIL("line %d: unknown key '%s' in a gpu block", lineno, key);
        }
    }
    (void)gi;
    if (!header)
        FAIL("empty state file");
    if (g)
        FAIL("unterminated gpu block (missing 'end')");
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

FK_INTERNAL int fk_write(const struct fk_state *st, const char *path)
{
    char tmp[PATH_MAX + 64];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d.%ld", path, (int)getpid(), (long)syscall(SYS_gettid));
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "fakenvml-state 1\n");
    fprintf(f, "driver %s\nserial %llu\nboot %u\ntrace %d\nprofile_info_version %u\n", st->driver, st->serial,
            st->boot, st->trace, st->profile_info_version);
    for (int i = 0; i < st->ngpu; i++) {
        const struct fk_gpu *g = &st->gpu[i];
        fprintf(f, "gpu\nuuid %s\nname %s\nmodel %s\nmemory_mib %llu\narch %u\ncc %u %u\n", g->uuid, g->name,
                g->model, g->memory_mib, g->arch, g->cc_major, g->cc_minor);
        fprintf(f, "pci 0x%08x 0x%08x 0x%02x\n", g->pci_device_id, g->pci_subsystem_id, g->pci_bus);
        fprintf(f, "mig_capable %d\nmig_mode %u %u\nmig_volatile %d\nmig_reset_required %d\nslices %u %u %u\n",
                g->mig_capable, g->mig_current, g->mig_pending, g->mig_volatile, g->mig_reset_required,
                g->mem_slices, g->compute_slices, g->max_gis);
        for (int j = 0; j < g->nprof; j++) {
            const struct fk_profile *p = &g->prof[j];
            fprintf(f, "profile %u %u %u %u %u %llu %u %u %u %u %u %u ", p->constant, p->id, p->slices,
                    p->mem_slices, p->cap, p->mib, p->sm, p->ce, p->dec, p->enc, p->jpeg, p->ofa);
            for (unsigned k = 0; k < p->nplace; k++)
                fprintf(f, k ? ",%u" : "%u", p->place[k]);
            fprintf(f, " %s\n", p->name);
        }
        for (int j = 0; j < g->ngi; j++) {
            const struct fk_gi *gi = &g->gi[j];
            fprintf(f, "gi %u %u %u %u %llu\n", gi->id, gi->profile_id, gi->start, gi->size, gi->serial);
            for (int k = 0; k < gi->nci; k++) {
                const struct fk_ci *ci = &gi->ci[k];
                fprintf(f, "ci %u %u %u %u %u %u %llu %s\n", gi->id, ci->id, ci->profile_id, ci->start, ci->size,
                        ci->slot, ci->serial, ci->uuid);
            }
        }
        for (int j = 0; j < g->nproc; j++) {
            const struct fk_proc *pr = &g->proc[j];
            fprintf(f, "proc %u %lld %lld %llu\n", pr->pid, pr->gi == FK_NO_INSTANCE ? -1LL : (long long)pr->gi,
                    pr->ci == FK_NO_INSTANCE ? -1LL : (long long)pr->ci, pr->used_mib);
        }
        for (int j = 0; j < g->nhold; j++)
            fprintf(f, "hold %u %lld\n", g->hold[j].gi,
                    g->hold[j].ci == FK_NO_INSTANCE ? -1LL : (long long)g->hold[j].ci);
        fprintf(f, "end\n");
    }
    for (int i = 0; i < st->nfault; i++)
        fprintf(f, "fault %s %u %d\n", st->fault[i].fn, st->fault[i].countdown, st->fault[i].code);
    for (int i = 0; i < st->ncount; i++)
        fprintf(f, "count %s %llu\n", st->count[i].fn, st->count[i].n);
    if (fflush(f) || ferror(f)) {
        fclose(f);
        unlink(tmp);
        return -1;
    }
    fclose(f);
    if (rename(tmp, path)) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- locking and loading --------------------------------------------------------------------- */

static int lock_state(void)
{
    char lock[PATH_MAX + 8];
    snprintf(lock, sizeof(lock), "%s.lock", fk_path);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return -1;
    while (flock(fd, LOCK_EX)) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

static void unlock_state(int fd)
{
    if (fd >= 0) {
        flock(fd, LOCK_UN);
        close(fd);
    }
}

static nvmlReturn_t load_state(struct fk_state *st, nvmlReturn_t missing)
{
    FILE *f = fopen(fk_path, "r");
    if (!f)
        return missing;
    char *buf = malloc(FK_MAX_FILE + 1);
    if (!buf) {
        fclose(f);
        return NVML_ERROR_MEMORY;
    }
    size_t n = fread(buf, 1, FK_MAX_FILE, f);
    fclose(f);
    buf[n] = 0;
    char err[256];
    int bad = fk_parse(buf, st, err, sizeof(err));
    free(buf);
    if (bad) {
        fk_warn("cannot parse", err);
        return NVML_ERROR_UNKNOWN;
    }
    return NVML_SUCCESS;
}

/* Count the call (when tracing) and fire the first armed fault whose countdown reaches zero. */
static nvmlReturn_t account(struct fk_state *st, const char *fn, int *dirty)
{
    if (st->trace) {
        int i;
        for (i = 0; i < st->ncount; i++)
            if (!strcmp(st->count[i].fn, fn))
                break;
        if (i == st->ncount && st->ncount < FK_MAX_COUNTS) {
            copy_str(st->count[i].fn, FK_FN, fn);
            st->count[i].n = 0;
            st->ncount++;
        }
        if (i < st->ncount)
            st->count[i].n++;
        *dirty = 1;
    }
    nvmlReturn_t fired = NVML_SUCCESS;
    for (int i = 0; i < st->nfault; i++) {
        struct fk_fault *f = &st->fault[i];
        if (strcmp(f->fn, fn) && strcmp(f->fn, "*"))
            continue;
        *dirty = 1;
        if (f->countdown > 1) {
            f->countdown--;
            continue;
        }
        if (fired == NVML_SUCCESS) {
            fired = f->code;
            memmove(f, f + 1, (size_t)(st->nfault - i - 1) * sizeof(*f));
            st->nfault--;
            i--;
        } else {
            f->countdown = 1; /* another fault fired on this call; this one fires on the next */
        }
    }
    return fired;
}

FK_INTERNAL nvmlReturn_t fk_begin(fk_call *c, const char *fn)
{
    c->st = NULL;
    c->lockfd = -1;
    c->dirty = 0;
    pthread_mutex_lock(&fk_init_lock);
    int live = fk_refcount > 0;
    pthread_mutex_unlock(&fk_init_lock);
    if (!live)
        return NVML_ERROR_UNINITIALIZED;
    c->st = malloc(sizeof(*c->st));
    if (!c->st)
        return NVML_ERROR_MEMORY;
    c->lockfd = lock_state();
    if (c->lockfd < 0) {
        free(c->st);
        c->st = NULL;
        return NVML_ERROR_GPU_IS_LOST;
    }
    nvmlReturn_t rc = load_state(c->st, NVML_ERROR_GPU_IS_LOST);
    if (rc == NVML_SUCCESS) {
        rc = account(c->st, fn, &c->dirty);
        if (rc != NVML_SUCCESS)
            return fk_end(c, rc);
        return NVML_SUCCESS;
    }
    unlock_state(c->lockfd);
    free(c->st);
    c->st = NULL;
    return rc;
}

FK_INTERNAL nvmlReturn_t fk_end(fk_call *c, nvmlReturn_t rc)
{
    if (c->st && c->dirty && fk_write(c->st, fk_path)) {
        fk_warn("cannot write", strerror(errno));
        if (rc == NVML_SUCCESS)
            rc = NVML_ERROR_UNKNOWN;
    }
    unlock_state(c->lockfd);
    free(c->st);
    c->st = NULL;
    return rc;
}

/* ---- init / shutdown ------------------------------------------------------------------------- */

FK_INTERNAL nvmlReturn_t fk_init(const char *fn)
{
    pthread_mutex_lock(&fk_init_lock);
    if (fk_refcount == 0) {
        const char *env = getenv("HAMI_FAKENVML_STATE");
        if (!env || !*env || strlen(env) >= sizeof(fk_path) - 64) {
            pthread_mutex_unlock(&fk_init_lock);
            return NVML_ERROR_DRIVER_NOT_LOADED;
        }
        copy_str(fk_path, sizeof(fk_path), env);
    }
    struct fk_state *st = malloc(sizeof(*st));
    if (!st) {
        pthread_mutex_unlock(&fk_init_lock);
        return NVML_ERROR_MEMORY;
    }
    int fd = lock_state();
    nvmlReturn_t rc = fd < 0 ? NVML_ERROR_DRIVER_NOT_LOADED : load_state(st, NVML_ERROR_DRIVER_NOT_LOADED);
    if (rc == NVML_SUCCESS) {
        int dirty = 0;
        rc = account(st, fn, &dirty);
        if (dirty && fk_write(st, fk_path) && rc == NVML_SUCCESS)
            rc = NVML_ERROR_UNKNOWN;
    }
    unlock_state(fd);
    free(st);
    if (rc == NVML_SUCCESS) {
        if (fk_refcount == 0)
            fk_handles_reset(++fk_epoch);
        fk_refcount++;
    }
    pthread_mutex_unlock(&fk_init_lock);
    return rc;
}

FK_INTERNAL nvmlReturn_t fk_shutdown(void)
{
    pthread_mutex_lock(&fk_init_lock);
    if (fk_refcount > 0)
        fk_refcount--;
    pthread_mutex_unlock(&fk_init_lock);
    return NVML_SUCCESS;
}

FK_EXPORT nvmlReturn_t nvmlInit_v2(void) { return fk_init("nvmlInit_v2"); }
FK_EXPORT nvmlReturn_t nvmlInit(void) { return fk_init("nvmlInit"); }
FK_EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags; /* NO_GPUS / NO_ATTACH / FORCE_INIT change nothing for simulated GPUs */
    return fk_init("nvmlInitWithFlags");
}
FK_EXPORT nvmlReturn_t nvmlShutdown(void) { return fk_shutdown(); }

FK_EXPORT const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt Request Issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    case NVML_ERROR_VGPU_ECC_NOT_SUPPORTED: return "vGPU operation not available while ECC is enabled";
    case NVML_ERROR_INSUFFICIENT_RESOURCES: return "Insufficient Resources";
    case NVML_ERROR_FREQ_NOT_SUPPORTED: return "Frequency not supported";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    case NVML_ERROR_DEPRECATED: return "Deprecated";
    case NVML_ERROR_NOT_READY: return "Not Ready";
    case NVML_ERROR_GPU_NOT_FOUND: return "GPU not found";
    case NVML_ERROR_INVALID_STATE: return "Invalid state";
    case NVML_ERROR_RESET_TYPE_NOT_SUPPORTED: return "Reset type not supported";
    case NVML_ERROR_UNKNOWN: return "Unknown Error";
    default: return "Unknown Error";
    }
}
