# The engine's kernels over typed memoryviews: the same loops, integer arithmetic and
# tie-breaks as hami/_core/reference.py (read that first: it is the spec). Python objects
# appear only at the entry points; the per-node planning runs without the GIL.

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort

import numpy as np

from hami._core import state as _S
from hami._core.results import RESOLVABLE as _RESOLVABLE

cdef enum:
    DEAD = 0
    CORE = 1
    MIG = 2
    F_UNHEALTHY = 1
    F_CORDONED = 2
    MAX_NODE_GPUS = 64
    MAX_SLOTS = 32
    FRAGMENTATION_AWARE = 0
    HAMI_LEGACY = 1
    HAMI_V210 = 2
    FIRST_FIT = 3
    BEST_FIT = 4

cdef enum:
    R_NO_GPUS = 1 << 0
    R_UNHEALTHY = 1 << 1
    R_CORDONED = 1 << 2
    R_MODE_MISMATCH = 1 << 3
    R_TYPE_MISMATCH = 1 << 4
    R_UUID_MISMATCH = 1 << 5
    R_SLOTS_EXHAUSTED = 1 << 6
    R_INSUFFICIENT_MEMORY = 1 << 7
    R_INSUFFICIENT_CORES = 1 << 8
    R_EXCLUSIVE_CONFLICT = 1 << 9
    R_MEMORY_EXCEEDS_GPU = 1 << 10
    R_MIG_PROFILE_TOO_SMALL = 1 << 11
    R_MIG_NO_PLACEMENT = 1 << 12
    R_TOO_FEW_GPUS = 1 << 13
    R_NODE_TOO_SMALL = 1 << 14

cdef int64_t WEIGHT_SCALE = _S.WEIGHT_SCALE
cdef int64_t COST_CAP = _S.COST_CAP
cdef int64_t TIE = _S.TIE
cdef int TIE_BITS = _S.TIE_BITS
cdef int64_t MIG_FIRST = _S.MIG_FIRST
cdef int SEARCH_BUDGET = _S.SEARCH_BUDGET
cdef uint32_t RESOLVABLE_BITS = <uint32_t>int(_RESOLVABLE)

assert _S.MAX_NODE_GPUS == MAX_NODE_GPUS
assert _S.POLICY_IDS["fragmentation-aware"] == FRAGMENTATION_AWARE
assert _S.POLICY_IDS["first-fit"] == FIRST_FIT and _S.POLICY_IDS["best-fit"] == BEST_FIT
assert _S.POLICY_IDS["hami-legacy"] == HAMI_LEGACY and _S.POLICY_IDS["hami-v2.10"] == HAMI_V210
assert set(_S.IDLE_BLIND) == {FIRST_FIT, HAMI_LEGACY, HAMI_V210}
assert set(_S.JOINT_POLICIES) == {FRAGMENTATION_AWARE, FIRST_FIT, BEST_FIT}


cdef struct Req:
    int n_ctr
    int n_models
    const int32_t* ctr_order
    const int32_t* ctr_count
    const int32_t* ctr_mem
    const int32_t* ctr_pct
    const int32_t* ctr_cores
    const int8_t* ctr_cls
    const uint8_t* type_ok
    const uint8_t* row_ok
    bint allow_mig
    bint allow_core
    bint gpu_binpack
    bint node_binpack
    bint single  # one container asking for one device: the one-pass path


cdef struct Plan:
    bint ok
    bint on_core
    uint32_t reasons
    int64_t cost
    int64_t pack


cdef struct Key:
    int64_t cost
    int64_t reuse
    int64_t order
    int64_t row
    int64_t rank


cdef struct Cand:
    Key key
    int i
    int k


cdef struct Search:
    # one joint search over a pod's MIG devices on one node (see reference.Kernels._search)
    Req* rq
    int first
    int count
    uint32_t* elig
    int* inuse
    int* idle
    int* devices  # container per device, largest first
    int64_t* need_c  # least compute slices the devices from d on take (n_dev + 1 entries)
    int64_t* need_m  # least memory slices, likewise
    int n_dev
    int budget
    uint32_t reasons
    Cand* buf  # n_dev * count * MAX_SLOTS candidates, one block per depth
    int32_t* picks
    int* n_picks
    int max_picks


cdef inline bint key_less(Key* a, Key* b) noexcept nogil:
    if a.cost != b.cost:
        return a.cost < b.cost
    if a.reuse != b.reuse:
        return a.reuse < b.reuse
    if a.order != b.order:
        return a.order < b.order
    if a.row != b.row:
        return a.row < b.row
    return a.rank < b.rank


cdef int cand_cmp(const void* a, const void* b) noexcept nogil:
    cdef Cand* x = <Cand*>a
    cdef Cand* y = <Cand*>b
    if key_less(&x.key, &y.key):
        return -1
    if key_less(&y.key, &x.key):
        return 1
    return 0


cdef class Kernels:
    """Typed views over the engine's arrays; rebuilt by the engine when arrays move."""

    cdef object _keep
    cdef int policy
    cdef int32_t[::1] g_node
    cdef uint8_t[::1] g_kind
    cdef uint8_t[::1] g_flags
    cdef int16_t[::1] g_type
    cdef int16_t[::1] g_model
    cdef int32_t[::1] g_inuse
    cdef int32_t[::1] g_idle
    cdef uint16_t[::1] g_split
    cdef uint16_t[::1] g_slots
    cdef int32_t[::1] g_mem
    cdef int32_t[::1] g_used_mem
    cdef uint16_t[::1] g_cores
    cdef uint16_t[::1] g_used_cores
    cdef uint16_t[::1] g_usage
    cdef int32_t[::1] g_order
    cdef int32_t[::1] n_first
    cdef int32_t[::1] n_count
    cdef int64_t[::1] n_version
    cdef int32_t[::1] n_profiles
    cdef int32_t[::1] compute_slices
    cdef int32_t[::1] memory_slices
    cdef int64_t[:, ::1] profile_compute
    cdef int64_t[:, ::1] profile_memory
    cdef int8_t[::1] used_memory
    cdef uint32_t[:, ::1] slot_mask
    cdef int8_t[:, ::1] slot_compute
    cdef int8_t[:, ::1] slot_profile
    cdef int16_t[:, ::1] slot_rank
    cdef int32_t[:, ::1] add
    cdef int32_t[:, ::1] remove
    cdef uint32_t[:, ::1] cand
    cdef int8_t[:, ::1] cnt
    cdef int8_t[:, ::1] chain
    cdef bint joint
    cdef uint32_t[::1] slotset
    cdef uint32_t[::1] occupied
    cdef int8_t[::1] used_compute
    cdef int16_t[:, ::1] tie
    cdef int16_t[::1] usage_pm_of
    cdef int64_t[:, ::1] wg
    cdef int64_t[:, ::1] bcost
    cdef int8_t[:, ::1] bslot

    def __init__(self, st, tb, dyn, int policy):
        self._keep = (st, tb, dyn)
        self.policy = policy
        self.g_node = st.g_node
        self.g_kind = st.g_kind
        self.g_flags = st.g_flags
        self.g_type = st.g_type
        self.g_model = st.g_model
        self.g_inuse = st.g_inuse
        self.g_idle = st.g_idle
        self.g_split = st.g_split
        self.g_slots = st.g_slots
        self.g_mem = st.g_mem
        self.g_used_mem = st.g_used_mem
        self.g_cores = st.g_cores
        self.g_used_cores = st.g_used_cores
        self.g_usage = st.g_usage
        self.g_order = st.g_order
        self.n_first = st.n_first
        self.n_count = st.n_count
        self.n_version = st.n_version
        self.n_profiles = tb.n_profiles
        self.compute_slices = tb.compute_slices
        self.memory_slices = tb.memory_slices
        self.profile_compute = tb.profile_compute
        self.profile_memory = tb.profile_memory
        self.used_memory = tb.used_memory
        self.slot_mask = tb.slot_mask
        self.slot_compute = tb.slot_compute
        self.slot_profile = tb.slot_profile
        self.slot_rank = tb.slot_rank
        self.add = tb.add
        self.remove = tb.remove
        self.cand = tb.cand
        self.cnt = tb.cnt
        self.chain = tb.chain
        self.joint = policy in _S.JOINT_POLICIES
        self.slotset = tb.slotset
        self.occupied = tb.occupied
        self.used_compute = tb.used_compute
        self.tie = tb.tie
        self.usage_pm_of = tb.usage_pm
        self.wg = dyn.wg
        self.bcost = dyn.bcost
        self.bslot = dyn.bslot

    # -- per-GPU helpers ---------------------------------------------------------------
    cdef inline uint32_t eligible(self, Req* rq, int r) noexcept nogil:
        cdef int kind = self.g_kind[r]
        if self.g_flags[r] & F_UNHEALTHY:
            return R_UNHEALTHY
        if self.g_flags[r] & F_CORDONED:
            return R_CORDONED
        if not rq.type_ok[self.g_type[r]]:
            return R_TYPE_MISMATCH
        if rq.row_ok != NULL and not rq.row_ok[r]:
            return R_UUID_MISMATCH
        if (kind == MIG and not rq.allow_mig) or (kind == CORE and not rq.allow_core):
            return R_MODE_MISMATCH
        return 0

    cdef inline int64_t mig_order(self, Req* rq, int m, int layout) noexcept nogil:
        if self.policy == FIRST_FIT:
            return 0
        cdef int64_t used = self.usage_pm_of[layout]  # used_compute * 1000 // compute slices
        return -used if rq.gpu_binpack else used

    cdef inline int64_t core_order(self, Req* rq, int r, int64_t slots, int64_t used_mem,
                                   int64_t used_cores) noexcept nogil:
        if self.policy == FIRST_FIT:
            return 0
        cdef int64_t split = self.g_split[r]
        cdef int64_t mem = self.g_mem[r]
        cdef int64_t cores = self.g_cores[r]
        cdef int64_t score = slots * 1000 // (split if split > 1 else 1) + used_mem * 1000 // (mem if mem > 1 else 1)
        score += used_cores * 1000 // (cores if cores > 1 else 1)
        return -score if rq.gpu_binpack else score

    cdef inline int64_t slot_cost(self, int m, int layout, int k) noexcept nogil:
        cdef int after = self.add[layout, k]
        cdef int64_t loss = 0
        cdef int p
        if self.policy == FRAGMENTATION_AWARE:
            for p in range(self.n_profiles[m]):
                loss += self.wg[m, p] * (<int64_t>self.cnt[layout, p] - <int64_t>self.cnt[after, p])
            return (loss << TIE_BITS) + self.tie[layout, k]
        if self.policy == BEST_FIT:
            return (<int64_t>self.slot_profile[m, k] * 32 + <int64_t>self.compute_slices[m]
                    - <int64_t>self.used_compute[after] + <int64_t>self.memory_slices[m]
                    - <int64_t>self.used_memory[after])
        return 0

    cdef inline int64_t usage_pm(self, int r, int inuse, int64_t used_mem) noexcept nogil:
        cdef int64_t mem
        if self.g_kind[r] == MIG:
            return self.usage_pm_of[inuse]
        mem = self.g_mem[r]
        return used_mem * 1000 // (mem if mem > 1 else 1)

    cdef inline void take(self, int m, int* inuse, int* idle, int k) noexcept nogil:
        cdef uint32_t mask = self.slot_mask[m, k]
        cdef uint32_t present = self.slotset[idle[0]]
        cdef int j = 0
        inuse[0] = self.add[inuse[0], k]
        while present:
            if present & 1 and self.slot_mask[m, j] & mask:
                idle[0] = self.remove[idle[0], j]
            present >>= 1
            j += 1

    cdef inline uint32_t core_misfit(self, Req* rq, int ci, int r, int64_t slots, int64_t umem, int64_t ucores,
                                     int64_t* memreq) noexcept nogil:
        """HAMi's Fit checks for one hami-core GPU, in order: the reason bit, 0 when it fits.
        Writes the memory the container takes on this GPU to ``memreq``."""
        cdef int64_t total_mem = self.g_mem[r]
        cdef int64_t total_cores = self.g_cores[r]
        cdef int64_t creq = rq.ctr_cores[ci]
        memreq[0] = rq.ctr_mem[ci] if rq.ctr_mem[ci] > 0 else total_mem * rq.ctr_pct[ci] // 100
        if memreq[0] > total_mem:
            return R_MEMORY_EXCEEDS_GPU
        if slots >= self.g_split[r]:
            return R_SLOTS_EXHAUSTED
        if total_cores - ucores < creq:
            return R_INSUFFICIENT_CORES
        if (creq >= 100 and slots > 0) or (total_cores and ucores >= total_cores):
            return R_EXCLUSIVE_CONFLICT
        if total_mem - umem < memreq[0]:
            return R_INSUFFICIENT_MEMORY
        return 0

    cdef inline int64_t reuse(self, int m, int idle, int k) noexcept nogil:
        if (self.policy == FIRST_FIT or self.policy == HAMI_LEGACY or self.policy == HAMI_V210
                or (self.slotset[idle] >> k) & 1):
            return 0  # first-fit and HAMi's baselines: their own slot, reuse or not
        if self.occupied[idle] & self.slot_mask[m, k]:
            return 2
        return 1

    cdef uint32_t best_on_gpu(self, Req* rq, int ci, int r, uint32_t elig, int layout, int idle, bint use_idle,
                              int need, bint* valid, Key* best, int* slot) noexcept nogil:
        """The best candidate slot for container ``ci`` on one MIG GPU (``valid``, ``best``,
        ``slot`` are OUT), among slots after which the GPU can still take ``need`` more
        devices; returns the reason bit when the GPU has no candidate at all."""
        cdef int m, c, k
        cdef uint32_t cm, bits
        cdef Key key
        valid[0] = False
        if self.g_kind[r] != MIG or elig:
            return 0
        m = self.g_model[r]
        c = rq.ctr_cls[ci * rq.n_models + m]
        if c >= self.n_profiles[m]:
            return R_MIG_PROFILE_TOO_SMALL
        cm = self.cand[layout, c]
        if cm == 0:
            return R_MIG_NO_PLACEMENT
        key.order = self.mig_order(rq, m, layout)
        key.row = r - self.n_first[self.g_node[r]]
        if not use_idle:
            key.cost = self.bcost[layout, c]
            key.reuse = 0
            key.rank = 0
            best[0] = key
            slot[0] = self.bslot[layout, c]
            valid[0] = True
            return 0
        bits = cm
        k = 0
        while bits:
            if bits & 1 and (need <= 0 or self.chain[self.add[layout, k], c] >= need):
                key.cost = self.slot_cost(m, layout, k)
                key.reuse = self.reuse(m, idle, k)
                key.rank = self.slot_rank[m, k]
                if not valid[0] or key_less(&key, best):
                    best[0] = key
                    slot[0] = k
                    valid[0] = True
            bits >>= 1
            k += 1
        return 0

    cdef inline void push_pick(self, int32_t* picks, int* n_picks, int max_picks, int ci, int r, int k,
                               int64_t mem, int64_t cores) noexcept nogil:
        if n_picks != NULL and n_picks[0] < max_picks:
            picks[n_picks[0] * 5 + 0] = ci
            picks[n_picks[0] * 5 + 1] = r
            picks[n_picks[0] * 5 + 2] = k
            picks[n_picks[0] * 5 + 3] = <int32_t>mem
            picks[n_picks[0] * 5 + 4] = <int32_t>cores
            n_picks[0] += 1

    # -- planning ----------------------------------------------------------------------
    cdef bint mig_container(self, Req* rq, int ci, int n, int first, int count, uint32_t* elig, int* inuse,
                            int* idle, bint use_idle, bint lookahead, int64_t* cost, uint32_t* reasons,
                            int32_t* picks, int* n_picks, int max_picks) noexcept nogil:
        """reference.Kernels._mig_container: one container's devices one after the other,
        with the chain lookahead for our policies. Only the GPU that took the last device, or
        whose lookahead bound moved, is re-evaluated."""
        cdef int saved_inuse[MAX_NODE_GPUS]
        cdef int saved_idle[MAX_NODE_GPUS]
        cdef bint cvalid[MAX_NODE_GPUS]
        cdef Key ckey[MAX_NODE_GPUS]
        cdef int cslot[MAX_NODE_GPUS]
        cdef int cneed[MAX_NODE_GPUS]
        cdef uint32_t cwhy[MAX_NODE_GPUS]
        cdef int cls[MAX_NODE_GPUS]
        cdef int i, r, m, step, need, best_i = -1, best_k = -1, mark
        cdef int64_t total, added = 0
        cdef bint found
        cdef Key best
        mark = n_picks[0] if n_picks != NULL else 0
        for i in range(count):
            saved_inuse[i] = inuse[i]
            saved_idle[i] = idle[i]
            r = first + i
            cls[i] = -1
            if not elig[i] and self.g_kind[r] == MIG:
                m = self.g_model[r]
                if rq.ctr_cls[ci * rq.n_models + m] < self.n_profiles[m]:
                    cls[i] = rq.ctr_cls[ci * rq.n_models + m]
        for step in range(n):
            total = 0
            if lookahead:
                for i in range(count):
                    if cls[i] >= 0:
                        total += self.chain[inuse[i], cls[i]]
            for i in range(count):
                need = 0
                if lookahead and cls[i] >= 0:
                    need = <int>((n - step - 1) - (total - self.chain[inuse[i], cls[i]]))
                    if need < 0:
                        need = 0
                if step == 0 or i == best_i or need != cneed[i]:
                    cwhy[i] = self.best_on_gpu(rq, ci, first + i, elig[i], inuse[i], idle[i], use_idle, need,
                                               &cvalid[i], &ckey[i], &cslot[i])
                    cneed[i] = need
                reasons[0] |= cwhy[i]
            found = False
            best_i = -1
            for i in range(count):
                if cvalid[i] and (not found or key_less(&ckey[i], &best)):
                    best = ckey[i]
                    best_i = i
                    best_k = cslot[i]
                    found = True
            if lookahead and 0 < total < n - step:
                found = False  # room for some of the devices, not for all of them
                reasons[0] |= R_MIG_NO_PLACEMENT
            if not found:
                for i in range(count):
                    inuse[i] = saved_inuse[i]
                    idle[i] = saved_idle[i]
                if n_picks != NULL:
                    n_picks[0] = mark
                return False
            m = self.g_model[first + best_i]
            self.take(m, &inuse[best_i], &idle[best_i], best_k)
            added += best.cost
            self.push_pick(picks, n_picks, max_picks, ci, first + best_i, best_k, 0, 0)
        cost[0] += added
        return True

    cdef bint reachable(self, Search* s, int ci) noexcept nogil:
        cdef int i, r, m, c
        for i in range(s.count):
            r = s.first + i
            if s.elig[i] or self.g_kind[r] != MIG:
                continue
            m = self.g_model[r]
            c = s.rq.ctr_cls[ci * s.rq.n_models + m]
            if c < self.n_profiles[m] and self.cand[s.inuse[i], c]:
                return True
        return False

    cdef bint room(self, Search* s, int d) noexcept nogil:
        cdef int i, r, m
        cdef int64_t free_c = 0, free_m = 0
        for i in range(s.count):
            r = s.first + i
            if s.elig[i] or self.g_kind[r] != MIG:
                continue
            m = self.g_model[r]
            free_c += self.compute_slices[m] - self.used_compute[s.inuse[i]]
            free_m += self.memory_slices[m] - self.used_memory[s.inuse[i]]
        return free_c >= s.need_c[d] and free_m >= s.need_m[d]

    cdef bint dfs(self, Search* s, int d, int64_t cost, int64_t* out_cost) noexcept nogil:
        """reference.Kernels._search's dfs, step for step (same visits, same order)."""
        cdef int j, i, r, m, c, k, nc = 0, ci, saved_inuse, saved_idle
        cdef uint32_t cm, bits
        cdef bint dup
        cdef int64_t order
        cdef Cand* cands
        if d == s.n_dev:
            out_cost[0] = cost
            return True
        if s.budget == 0:
            return False
        s.budget -= 1
        if not self.room(s, d):
            return False
        for j in range(d, s.n_dev):
            if (j == d or s.devices[j] != s.devices[j - 1]) and not self.reachable(s, s.devices[j]):
                return False
        ci = s.devices[d]
        cands = s.buf + <Py_ssize_t>d * s.count * MAX_SLOTS
        for i in range(s.count):
            r = s.first + i
            if s.elig[i] or self.g_kind[r] != MIG:
                continue
            m = self.g_model[r]
            dup = False
            for j in range(i):
                if (not s.elig[j] and self.g_kind[s.first + j] == MIG and self.g_model[s.first + j] == m
                        and s.inuse[j] == s.inuse[i] and s.idle[j] == s.idle[i]):
                    dup = True
                    break
            if dup:
                continue
            c = s.rq.ctr_cls[ci * s.rq.n_models + m]
            if c >= self.n_profiles[m]:
                s.reasons |= R_MIG_PROFILE_TOO_SMALL
                continue
            cm = self.cand[s.inuse[i], c]
            if cm == 0:
                s.reasons |= R_MIG_NO_PLACEMENT
                continue
            order = self.mig_order(s.rq, m, s.inuse[i])
            bits = cm
            k = 0
            while bits:
                if bits & 1:
                    cands[nc].key.cost = self.slot_cost(m, s.inuse[i], k)
                    cands[nc].key.reuse = self.reuse(m, s.idle[i], k)
                    cands[nc].key.order = order
                    cands[nc].key.row = i
                    cands[nc].key.rank = self.slot_rank[m, k]
                    cands[nc].i = i
                    cands[nc].k = k
                    nc += 1
                bits >>= 1
                k += 1
        qsort(cands, nc, sizeof(Cand), cand_cmp)
        for j in range(nc):
            i = cands[j].i
            k = cands[j].k
            m = self.g_model[s.first + i]
            saved_inuse = s.inuse[i]
            saved_idle = s.idle[i]
            self.take(m, &s.inuse[i], &s.idle[i], k)
            self.push_pick(s.picks, s.n_picks, s.max_picks, ci, s.first + i, k, 0, 0)
            if self.dfs(s, d + 1, cost + cands[j].key.cost, out_cost):
                return True
            s.inuse[i] = saved_inuse
            s.idle[i] = saved_idle
            if s.n_picks != NULL:
                s.n_picks[0] -= 1
        return False

    cdef bint search(self, Req* rq, int first, int count, uint32_t* elig, int* inuse, int* idle, int64_t* cost,
                     uint32_t* reasons, int32_t* picks, int* n_picks, int max_picks) noexcept nogil:
        """reference.Kernels._search: the pod's MIG devices as one placement problem."""
        cdef Search s
        cdef int ci, j, n_dev = 0, i, mark, m, c
        cdef int64_t least_c, least_m
        cdef bint ok, any_mig = False
        for j in range(rq.n_ctr):
            n_dev += rq.ctr_count[j]
        s.devices = <int*>malloc(max(n_dev, 1) * sizeof(int))
        s.buf = <Cand*>malloc(max(n_dev, 1) * max(count, 1) * MAX_SLOTS * sizeof(Cand))
        s.need_c = <int64_t*>malloc((n_dev + 1) * sizeof(int64_t))
        s.need_m = <int64_t*>malloc((n_dev + 1) * sizeof(int64_t))
        if s.devices == NULL or s.buf == NULL or s.need_c == NULL or s.need_m == NULL:
            free(s.devices)
            free(s.buf)
            free(s.need_c)
            free(s.need_m)
            reasons[0] |= R_MIG_NO_PLACEMENT
            return False
        n_dev = 0
        for j in range(rq.n_ctr):
            ci = rq.ctr_order[j]
            for i in range(rq.ctr_count[ci]):
                s.devices[n_dev] = ci
                n_dev += 1
        for i in range(count):
            if not elig[i] and self.g_kind[first + i] == MIG:
                any_mig = True
        s.need_c[n_dev] = 0
        s.need_m[n_dev] = 0
        for j in range(n_dev - 1, -1, -1):
            least_c = 0
            least_m = 0
            for i in range(count):
                if elig[i] or self.g_kind[first + i] != MIG:
                    continue
                m = self.g_model[first + i]
                c = rq.ctr_cls[s.devices[j] * rq.n_models + m]
                if c < self.n_profiles[m]:
                    if least_c == 0 or self.profile_compute[m, c] < least_c:
                        least_c = self.profile_compute[m, c]
                    if least_m == 0 or self.profile_memory[m, c] < least_m:
                        least_m = self.profile_memory[m, c]
            s.need_c[j] = s.need_c[j + 1] + least_c
            s.need_m[j] = s.need_m[j + 1] + least_m
        s.rq = rq
        s.first = first
        s.count = count
        s.elig = elig
        s.inuse = inuse
        s.idle = idle
        s.n_dev = n_dev
        s.budget = SEARCH_BUDGET
        s.reasons = 0
        s.picks = picks
        s.n_picks = n_picks
        s.max_picks = max_picks
        mark = n_picks[0] if n_picks != NULL else 0
        ok = self.dfs(&s, 0, 0, cost)
        free(s.devices)
        free(s.buf)
        free(s.need_c)
        free(s.need_m)
        if not ok:
            if n_picks != NULL:
                n_picks[0] = mark
            if any_mig:
                s.reasons |= R_MIG_NO_PLACEMENT
        reasons[0] |= s.reasons
        return ok

    cdef Plan plan_node(self, Req* rq, int node, bint use_idle, int32_t* picks, int* n_picks,
                        int max_picks) noexcept nogil:
        """reference.Kernels.plan."""
        cdef Plan out
        cdef int first = self.n_first[node]
        cdef int count = self.n_count[node]
        cdef int inuse[MAX_NODE_GPUS]
        cdef int idle[MAX_NODE_GPUS]
        cdef int64_t slots[MAX_NODE_GPUS]
        cdef int64_t umem[MAX_NODE_GPUS]
        cdef int64_t ucores[MAX_NODE_GPUS]
        cdef uint32_t elig[MAX_NODE_GPUS]
        cdef int i, r, j, ci, n, live = 0
        cdef int64_t pack
        cdef bint placed, done = False
        out.ok = False
        out.on_core = False
        out.reasons = 0
        out.cost = 0
        out.pack = 0
        for i in range(count):
            r = first + i
            inuse[i] = self.g_inuse[r]
            idle[i] = self.g_idle[r]
            slots[i] = self.g_slots[r]
            umem[i] = self.g_used_mem[r]
            ucores[i] = self.g_used_cores[r]
            if self.g_kind[r] != DEAD:
                live += 1
                elig[i] = self.eligible(rq, r)
                out.reasons |= elig[i]
            else:
                elig[i] = R_NO_GPUS
        if live == 0:
            out.reasons = R_NO_GPUS
            return out
        if self.joint and rq.allow_mig and rq.n_ctr >= 2:
            if self.search(rq, first, count, elig, inuse, idle, &out.cost, &out.reasons, picks, n_picks,
                           max_picks):
                done = True
            elif not rq.allow_core:
                out.cost = 0
                return out
        if not done:
            for j in range(rq.n_ctr):
                ci = rq.ctr_order[j]
                n = rq.ctr_count[ci]
                placed = False
                if rq.allow_mig:
                    placed = self.mig_container(rq, ci, n, first, count, elig, inuse, idle, use_idle, self.joint,
                                                &out.cost, &out.reasons, picks, n_picks, max_picks)
                if not placed and rq.allow_core:
                    placed = self.place_core(rq, ci, n, first, count, elig, slots, umem, ucores,
                                             &out.reasons, picks, n_picks, max_picks)
                    if placed:
                        out.on_core = True
                if not placed:
                    out.cost = 0
                    out.on_core = False
                    return out
        pack = 0
        for i in range(count):
            if self.g_kind[first + i] != DEAD:
                pack += self.usage_pm(first + i, inuse[i], umem[i])
        out.ok = True
        out.reasons = 0
        out.pack = pack // live
        return out

    cdef Plan plan_single(self, Req* rq, int node) noexcept nogil:
        """plan_node(use_idle=False) for one container asking for one device, in one pass
        over the node's GPUs without scratch copies (the common case; same results)."""
        cdef Plan out
        cdef int first = self.n_first[node]
        cdef int count = self.n_count[node]
        cdef int i, r, m, c, layout, kind, live = 0
        cdef uint32_t e, mig_why = 0, core_why = 0
        cdef int considered = 0, usable = 0
        cdef int64_t pack = 0, order, memreq = 0, umem
        cdef bint found_mig = False, found_core = False
        cdef Key key, best
        cdef int best_i = -1, best_k = -1, core_i = -1
        cdef int64_t core_order = 0, core_mem = 0
        out.ok = False
        out.on_core = False
        out.reasons = 0
        out.cost = 0
        out.pack = 0
        for i in range(count):
            r = first + i
            kind = self.g_kind[r]
            if kind == DEAD:
                continue
            live += 1
            e = self.eligible(rq, r)
            out.reasons |= e
            pack += self.g_usage[r]
            if e:
                continue
            if kind == MIG:
                m = self.g_model[r]
                c = rq.ctr_cls[m]
                if c >= self.n_profiles[m]:
                    mig_why |= R_MIG_PROFILE_TOO_SMALL
                    continue
                layout = self.g_inuse[r]
                if self.cand[layout, c] == 0:
                    mig_why |= R_MIG_NO_PLACEMENT
                    continue
                key.cost = self.bcost[layout, c]
                key.reuse = 0
                if self.policy == FIRST_FIT:
                    key.order = 0
                else:
                    key.order = -<int64_t>self.g_usage[r] if rq.gpu_binpack else <int64_t>self.g_usage[r]
                key.row = i
                key.rank = 0
                if not found_mig or key_less(&key, &best):
                    best = key
                    best_i = i
                    best_k = self.bslot[layout, c]
                    found_mig = True
            else:
                considered += 1
                e = self.core_misfit(rq, 0, r, self.g_slots[r], self.g_used_mem[r], self.g_used_cores[r], &memreq)
                if e != R_MEMORY_EXCEEDS_GPU:
                    usable += 1
                if e:
                    core_why |= e
                else:
                    if self.policy == FIRST_FIT:
                        order = 0
                    else:
                        order = -<int64_t>self.g_order[r] if rq.gpu_binpack else <int64_t>self.g_order[r]
                    if not found_core or order < core_order:
                        core_order = order
                        core_i = i
                        core_mem = memreq
                        found_core = True
        if live == 0:
            out.reasons = R_NO_GPUS
            return out
        if rq.allow_mig:
            if found_mig:
                r = first + best_i
                layout = self.g_inuse[r]
                pack += self.usage_pm(r, self.add[layout, best_k], 0) - self.usage_pm(r, layout, 0)
                out.ok = True
                out.reasons = 0
                out.cost = best.cost
                out.pack = pack // live
                return out
            out.reasons |= mig_why
        if rq.allow_core:
            if considered == 0:
                out.reasons |= core_why
                return out
            if usable < 1:
                out.reasons |= core_why | R_NODE_TOO_SMALL
                return out
            if not found_core:
                out.reasons |= core_why | R_TOO_FEW_GPUS
                return out
            r = first + core_i
            umem = self.g_used_mem[r]
            pack += self.usage_pm(r, 0, umem + core_mem) - self.usage_pm(r, 0, umem)
            out.ok = True
            out.on_core = True
            out.reasons = 0
            out.pack = pack // live
        return out

    cdef bint place_core(self, Req* rq, int ci, int n, int first, int count, uint32_t* elig,
                         int64_t* slots, int64_t* umem, int64_t* ucores, uint32_t* reasons,
                         int32_t* picks, int* n_picks, int max_picks) noexcept nogil:
        cdef int fit_i[MAX_NODE_GPUS]
        cdef int64_t fit_order[MAX_NODE_GPUS]
        cdef int64_t fit_mem[MAX_NODE_GPUS]
        cdef int64_t fit_cores[MAX_NODE_GPUS]
        cdef bint used[MAX_NODE_GPUS]
        cdef int n_fit = 0, usable = 0, considered = 0, i, r, j, pick, taken
        cdef int64_t memreq = 0
        cdef uint32_t why = 0, e
        for i in range(count):
            r = first + i
            if self.g_kind[r] != CORE or elig[i]:
                continue
            considered += 1
            e = self.core_misfit(rq, ci, r, slots[i], umem[i], ucores[i], &memreq)
            if e != R_MEMORY_EXCEEDS_GPU:
                usable += 1
            if e:
                why |= e
            else:
                fit_i[n_fit] = i
                fit_order[n_fit] = self.core_order(rq, r, slots[i], umem[i], ucores[i])
                fit_mem[n_fit] = memreq
                fit_cores[n_fit] = rq.ctr_cores[ci]
                used[n_fit] = False
                n_fit += 1
        if considered == 0:
            reasons[0] |= why
            return False
        if usable < n:
            reasons[0] |= why | R_NODE_TOO_SMALL
            return False
        if n_fit < n:
            reasons[0] |= why | R_TOO_FEW_GPUS
            return False
        for taken in range(n):
            pick = -1
            for j in range(n_fit):
                if used[j]:
                    continue
                if pick < 0 or fit_order[j] < fit_order[pick] or (
                        fit_order[j] == fit_order[pick] and fit_i[j] < fit_i[pick]):
                    pick = j
            used[pick] = True
            i = fit_i[pick]
            slots[i] += 1
            umem[i] += fit_mem[pick]
            ucores[i] += fit_cores[pick]
            if n_picks != NULL and n_picks[0] < max_picks:
                picks[n_picks[0] * 5 + 0] = ci
                picks[n_picks[0] * 5 + 1] = first + i
                picks[n_picks[0] * 5 + 2] = -1
                picks[n_picks[0] * 5 + 3] = <int32_t>fit_mem[pick]
                picks[n_picks[0] * 5 + 4] = <int32_t>fit_cores[pick]
                n_picks[0] += 1
        return True

    cdef inline int64_t score(self, Req* rq, int64_t cost, int64_t pack, bint on_core) noexcept nogil:
        """reference.Kernels._score: the placement's fine rank."""
        cdef int64_t s = self.placement_score(rq, cost, pack)
        if rq.allow_mig and rq.allow_core and not on_core:
            s += MIG_FIRST
        return s

    cdef inline int64_t placement_score(self, Req* rq, int64_t cost, int64_t pack) noexcept nogil:
        """reference.Kernels._placement_score."""
        cdef int64_t spread, loss, tie
        if self.policy == FIRST_FIT:
            return 0
        if self.policy != FRAGMENTATION_AWARE and self.policy != BEST_FIT:
            return pack if rq.node_binpack else 1000 - pack
        spread = 0 if rq.node_binpack else 10 - pack // 100
        if self.policy == BEST_FIT:
            loss = cost if cost > 0 else 0
            return (COST_CAP - (loss if loss < COST_CAP else COST_CAP)) * TIE * 11 + spread
        if cost < 0:
            loss = 0
            tie = 0
        else:
            loss = (cost >> TIE_BITS) * 1000 // (WEIGHT_SCALE * 16)
            tie = cost & (TIE - 1)
            if loss > COST_CAP:
                loss = COST_CAP
        return ((COST_CAP - loss) * TIE + TIE - 1 - tie) * 11 + spread

    # -- state updates (reference.Kernels.take_slot and friends) -----------------------
    def take_slot(self, int row, int k):
        cdef int m = self.g_model[row]
        cdef int idle = self.g_idle[row]
        cdef uint32_t present = self.slotset[idle]
        cdef uint32_t mask = self.slot_mask[m, k]
        cdef uint32_t destroyed = 0
        cdef bint reused = False
        cdef int j = 0
        cdef int after = self.add[self.g_inuse[row], k]
        if after < 0:
            raise ValueError(f"slot {k} is not free on GPU row {row}")
        while present:
            if present & 1:
                if j == k:
                    reused = True
                    idle = self.remove[idle, j]
                elif self.slot_mask[m, j] & mask:
                    destroyed |= 1u << j
                    idle = self.remove[idle, j]
            present >>= 1
            j += 1
        self.g_idle[row] = idle
        self.g_inuse[row] = after
        self.g_usage[row] = self.usage_pm_of[after]
        self.g_order[row] = 0
        return reused, destroyed

    def set_layouts(self, int row, int inuse, int idle):
        self.g_inuse[row] = inuse
        self.g_idle[row] = idle
        self.g_usage[row] = self.usage_pm_of[inuse]
        self.g_order[row] = 0

    def give_back_slot(self, int row, int k):
        cdef int inuse = self.remove[self.g_inuse[row], k]
        cdef int idle_after = self.add[self.g_idle[row], k]
        self.g_inuse[row] = inuse
        self.g_usage[row] = self.usage_pm_of[inuse]
        if idle_after >= 0:
            self.g_idle[row] = idle_after
        return idle_after >= 0

    def add_share(self, int row, int sign, int64_t mem, int64_t cores):
        cdef int64_t slots = self.g_slots[row] + sign
        cdef int64_t used_mem = self.g_used_mem[row] + sign * mem
        cdef int64_t used_cores = self.g_used_cores[row] + sign * cores
        cdef int64_t split = self.g_split[row]
        cdef int64_t total_mem = self.g_mem[row]
        cdef int64_t total_cores = self.g_cores[row]
        self.g_slots[row] = <uint16_t>slots
        self.g_used_mem[row] = <int32_t>used_mem
        self.g_used_cores[row] = <uint16_t>used_cores
        self.g_usage[row] = <uint16_t>self.usage_pm(row, 0, used_mem)
        self.g_order[row] = <int32_t>(slots * 1000 // (split if split > 1 else 1)
                                      + used_mem * 1000 // (total_mem if total_mem > 1 else 1)
                                      + used_cores * 1000 // (total_cores if total_cores > 1 else 1))

    # -- entry points ------------------------------------------------------------------
    def fit_score(self, rq, int32_t[::1] nodes, uint8_t[::1] out_code, uint32_t[::1] out_reason,
                  int32_t[::1] out_score):
        """Per node: code 0 fits, 1 unschedulable, 2 unresolvable, reason bits, score 0..100."""
        cdef ReqView view = _view(rq)
        cdef Py_ssize_t j
        cdef int node, top = 0
        cdef int64_t version, v, best = 0, worst = 0, scale
        cdef bint any_fit = False
        cdef Plan p
        st = self._keep[0]
        memo = rq.memo(st.nodes, st.epoch)
        cdef int64_t[::1] memo_ver = memo[0]
        cdef uint8_t[::1] memo_code = memo[1]
        cdef uint32_t[::1] memo_reason = memo[2]
        cdef int32_t[::1] memo_score = memo[3]
        with nogil:
            for j in range(nodes.shape[0]):
                node = nodes[j]
                version = self.n_version[node]
                if memo_ver[node] == version:  # the node has not changed since it was planned
                    out_code[j] = memo_code[node]
                    out_reason[j] = memo_reason[node]
                    out_score[j] = memo_score[node]
                else:
                    if view.req.single:
                        p = self.plan_single(&view.req, node)
                    else:
                        p = self.plan_node(&view.req, node, True, NULL, NULL, 0)
                    if not p.ok:
                        out_code[j] = 1 if p.reasons & RESOLVABLE_BITS else 2
                        out_reason[j] = p.reasons
                        out_score[j] = 0
                    else:
                        out_code[j] = 0
                        out_reason[j] = 0
                        out_score[j] = <int32_t>self.score(&view.req, p.cost, p.pack, p.on_core)
                    memo_code[node] = out_code[j]
                    memo_reason[node] = out_reason[j]
                    memo_score[node] = out_score[j]
                    memo_ver[node] = version
                if out_code[j] == 0:  # reference.normalise's first pass, folded in
                    v = out_score[j]
                    if not any_fit or v > best or (v == best and node < top):
                        best = v
                        top = node
                    if not any_fit or v < worst:
                        worst = v
                    any_fit = True
            if any_fit:  # reference.normalise's second pass
                scale = (<int64_t>90 << 32) // (best - worst) if best > worst else 0
                for j in range(nodes.shape[0]):
                    if out_code[j] == 0:
                        v = out_score[j]
                        if v == best and nodes[j] == top:
                            out_score[j] = 100
                        elif scale == 0:
                            out_score[j] = 90
                        else:
                            out_score[j] = <int32_t>(((v - worst) * scale) >> 32)

    def plan(self, rq, int node, bint use_idle, list picks):
        """Plan the whole request on one node; see reference.Kernels.plan."""
        cdef ReqView view = _view(rq)
        cdef int total = 0, n_picks = 0, i
        cdef Plan p
        cdef int32_t small[64 * 5]
        cdef int32_t* buf = small
        for i in range(view.count.shape[0]):
            total += view.count[i]
        if picks is None:
            p = self.plan_node(&view.req, node, use_idle, NULL, NULL, 0)
        else:
            if total > 64:
                buf = <int32_t*>malloc(total * 5 * sizeof(int32_t))
                if buf == NULL:
                    raise MemoryError()
            try:
                p = self.plan_node(&view.req, node, use_idle, buf, &n_picks, total)
                for i in range(n_picks):
                    picks.append((buf[i * 5], buf[i * 5 + 1], buf[i * 5 + 2], buf[i * 5 + 3], buf[i * 5 + 4]))
            finally:
                if buf != small:
                    free(buf)
        return bool(p.ok), int(p.reasons), int(p.cost), int(p.pack), bool(p.on_core)


cdef ReqView _view(rq):
    """The request's C view, made once per RequestArrays (they never change once built)."""
    view = rq.view
    if view is None:
        view = rq.view = ReqView(rq)
    return <ReqView>view


cdef class ReqView:
    """A request's arrays as one C struct; holds the memoryviews the struct points into."""

    cdef Req req
    cdef int32_t[::1] order
    cdef int32_t[::1] count
    cdef int32_t[::1] mem
    cdef int32_t[::1] pct
    cdef int32_t[::1] cores
    cdef int8_t[:, ::1] cls
    cdef uint8_t[::1] type_ok
    cdef uint8_t[::1] row_ok

    def __init__(self, rq):
        self.order = rq.ctr_order
        self.count = rq.ctr_count
        self.mem = rq.ctr_mem
        self.pct = rq.ctr_pct
        self.cores = rq.ctr_cores
        self.cls = rq.ctr_cls
        self.type_ok = rq.type_ok
        self.row_ok = rq.row_ok
        self.req.n_ctr = rq.n_ctr
        self.req.n_models = self.cls.shape[1]
        self.req.ctr_order = &self.order[0] if self.order.shape[0] else NULL
        self.req.ctr_count = &self.count[0] if self.count.shape[0] else NULL
        self.req.ctr_mem = &self.mem[0] if self.mem.shape[0] else NULL
        self.req.ctr_pct = &self.pct[0] if self.pct.shape[0] else NULL
        self.req.ctr_cores = &self.cores[0] if self.cores.shape[0] else NULL
        self.req.ctr_cls = &self.cls[0, 0] if self.cls.shape[0] else NULL
        self.req.type_ok = &self.type_ok[0]
        self.req.row_ok = &self.row_ok[0] if self.row_ok.shape[0] else NULL
        self.req.allow_mig = rq.allow_mig
        self.req.allow_core = rq.allow_core
        self.req.gpu_binpack = rq.gpu_binpack
        self.req.node_binpack = rq.node_binpack
        self.req.single = rq.n_ctr == 1 and rq.ctr_count[0] == 1
