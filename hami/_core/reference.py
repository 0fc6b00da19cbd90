"""The engine's kernels in plain Python: the readable spec and the differential-test oracle.

``_kernels.pyx`` implements exactly this over typed memoryviews; hypothesis drives engines
built on either through random sequences and demands identical results
(tests/core/test_differential.py). Keep the two in step: same loops, same integer
arithmetic, same tie-breaks.

How one node is planned (``Kernels.plan``):

1. Each GPU is eligible or not for this request, independent of its usage (health, cordon,
   mode, type and uuid filters).
2. Containers are placed in order. A container first tries MIG (when its mode allows):
   each of its devices, one after the other, takes the best candidate
   (GPU, slot) on the node under the key ``(cost, reuse, gpu order, row, slot rank)``; a
   GPU may host several devices of one container. If any device fails, the container's
   MIG devices are undone and it tries hami-core: the best ``count`` distinct GPUs by
   ``(gpu order, row)`` that pass HAMi's fit checks.
3. ``cost`` is the policy's: the fragmentation loss (weighted future capacity destroyed,
   then two tie-breaks: the GPU already running more instances, then the one left with
   fewer free slices) for ``fragmentation-aware``, the smallest adequate profile then the
   compute and memory slices left free on the GPU for ``best-fit``,
   0 otherwise (order alone decides). ``reuse`` prefers an idle instance at exactly that
   slot (0), then free slices (1), then slices that need idle instances destroyed (2);
   ``fits``/``scores`` ignore idle instances and take the tables' best slot.
4. The node's score ranks placements. Cost-based policies: the cost first; then, under the
   spread node policy, the emptiest node; under binpack, nothing more, so equal placements
   go to the lowest node id: nodes fill one after another in a fixed order, which keeps
   whole nodes free without the churn of "fullest node first" as pods come and go. The
   other policies rank by fullness after the placement (binpack, HAMi's rule) or emptiness
   (spread). For a request that may take either kind, nodes where it gets MIG instances
   rank above nodes where it gets hami-core shares: the within-node preference (MIG first)
   holds across nodes too, and hami-core capacity stays for what MIG cannot serve.
   ``fit_score`` then normalises over the call's fitting candidates: the engine's first
   choice (ties to the lowest node id) 100, every other fitting node below 90 in
   proportion. kube-scheduler sees our scores on its 0–10 extender scale,
   ``(score * 10 + 50) // 100``: the first choice alone keeps 10, so kube-scheduler's pick
   is the engine's, to the exact cost, whatever the rounding and its random tie-break.
"""

from __future__ import annotations

from hami._core import state as S
from hami._core.results import Reason
from hami._core.tables import PolicyTables


def _bits(mask: int):
    k = 0
    while mask:
        if mask & 1:
            yield k
        mask >>= 1
        k += 1


class Kernels:
    """Read-only views over state and tables; the engine rebuilds it when arrays move."""

    def __init__(self, st: S.State, tb: PolicyTables, dyn: S.Dynamic, policy: int) -> None:
        self.st, self.tb, self.dyn, self.policy = st, tb, dyn, policy

    # -- per-GPU helpers -------------------------------------------------------------
    def _eligible(self, rq: S.RequestArrays, r: int) -> int:
        st = self.st
        kind = int(st.g_kind[r])
        if st.g_flags[r] & S.UNHEALTHY:
            return Reason.UNHEALTHY
        if st.g_flags[r] & S.CORDONED:
            return Reason.CORDONED
        if not rq.type_ok[st.g_type[r]]:
            return Reason.TYPE_MISMATCH
        if len(rq.row_ok) and not rq.row_ok[r]:
            return Reason.UUID_MISMATCH
        if (kind == S.MIG and not rq.allow_mig) or (kind == S.CORE and not rq.allow_core):
            return Reason.MODE_MISMATCH
        return 0

    def _mig_order(self, rq: S.RequestArrays, m: int, layout: int) -> int:
        if self.policy == S.FIRST_FIT:
            return 0
        used = int(self.tb.used_compute[layout]) * 1000 // int(self.tb.compute_slices[m])
        return -used if rq.gpu_binpack else used

    def _core_order(self, rq: S.RequestArrays, r: int, slots: int, used_mem: int, used_cores: int) -> int:
        if self.policy == S.FIRST_FIT:
            return 0
        st = self.st
        score = slots * 1000 // max(int(st.g_split[r]), 1) + used_mem * 1000 // max(int(st.g_mem[r]), 1)
        score += used_cores * 1000 // max(int(st.g_cores[r]), 1)
        return -score if rq.gpu_binpack else score

    def _slot_cost(self, m: int, layout: int, k: int) -> int:
        tb = self.tb
        after = int(tb.add[layout, k])
        if self.policy == S.FRAGMENTATION_AWARE:
            # the weighted future capacity lost; on a tie, the GPU already running more
            # instances (GPUs with few instances are the ones likely to drain and serve a
            # large instance later), then the smaller profile, then the GPU left with fewer
            # free slices
            # (tables.tie[L, k] = 128 × (15 − instances in L) + 16 × profile + slices left free)
            loss = 0
            for p in range(int(tb.n_profiles[m])):
                loss += int(self.dyn.wg[m, p]) * (int(tb.cnt[layout, p]) - int(tb.cnt[after, p]))
            return loss * S.TIE + int(tb.tie[layout, k])
        if self.policy == S.BEST_FIT:
            # the smallest adequate profile (memory, then compute), then the tightest GPU
            return (int(tb.slot_profile[m, k]) * 32 + int(tb.compute_slices[m]) - int(tb.used_compute[after])
                    + int(tb.memory_slices[m]) - int(tb.used_memory[after]))
        return 0

    def _usage_pm(self, r: int, inuse: int, used_mem: int) -> int:
        st, tb = self.st, self.tb
        if st.g_kind[r] == S.MIG:
            m = int(st.g_model[r])
            return int(tb.used_compute[inuse]) * 1000 // int(tb.compute_slices[m])
        return used_mem * 1000 // max(int(st.g_mem[r]), 1)

    # -- planning --------------------------------------------------------------------
    def plan(self, rq: S.RequestArrays, node: int, use_idle: bool, picks: list | None):
        """Plan the whole request on one node without changing state.

        ``use_idle=False`` is the lookup mode (``fits``/``scores`` of a one-device request,
        where the tables' best slot is exact). Returns ``(ok, reasons, cost, pack_pm,
        on_core)`` (``on_core``: some container got hami-core shares); appends ``(ctr, row,
        slot, mem, cores)`` to ``picks`` when given (slot -1 for a hami-core share).
        """
        st = self.st
        first, count = int(st.n_first[node]), int(st.n_count[node])
        live = [i for i in range(count) if st.g_kind[first + i] != S.DEAD]
        if not live:
            return False, int(Reason.NO_GPUS), 0, 0, False
        inuse = [int(st.g_inuse[first + i]) for i in range(count)]
        idle = [int(st.g_idle[first + i]) for i in range(count)]
        slots = [int(st.g_slots[first + i]) for i in range(count)]
        umem = [int(st.g_used_mem[first + i]) for i in range(count)]
        ucores = [int(st.g_used_cores[first + i]) for i in range(count)]
        elig = [self._eligible(rq, first + i) for i in range(count)]
        reasons = 0
        for i in live:
            reasons |= elig[i]
        joint = self.policy in S.JOINT_POLICIES
        total_cost = 0
        on_core = False
        done = False
        if joint and rq.allow_mig and rq.n_ctr >= 2:
            ok, cost, why = self._search(rq, first, live, elig, inuse, idle, picks)
            reasons |= why
            if ok:
                total_cost, done = cost, True
            elif not rq.allow_core:
                return False, reasons, 0, 0, False
        for ci in [] if done else [int(x) for x in rq.ctr_order]:
            n = int(rq.ctr_count[ci])
            placed = False
            if rq.allow_mig:
                placed, cost, why = self._mig_container(rq, ci, n, first, live, elig, inuse, idle,
                                                        use_idle, joint, picks)
                reasons |= why
                total_cost += cost
            if not placed and rq.allow_core:
                placed, why = self._place_core(rq, ci, n, first, live, elig, slots, umem, ucores, picks)
                reasons |= why
                on_core = on_core or placed
            if not placed:
                return False, reasons, 0, 0, False
        pack = 0
        for i in live:
            pack += self._usage_pm(first + i, inuse[i], umem[i])
        return True, 0, total_cost, pack // len(live), on_core

    def _mig_container(self, rq, ci, n, first, live, elig, inuse, idle, use_idle, lookahead, picks):
        """One container's ``n`` MIG devices, one after the other, each taking the best
        candidate (GPU, slot). With ``lookahead`` (our policies) a candidate is taken only if
        the node can still hold the container's remaining devices (the ``chain`` table), which
        makes the greedy walk exact; the HAMi baselines walk without it, as HAMi does.
        Returns ``(placed, cost, reasons)``; on failure the scratch state is unchanged."""
        st, tb = self.st, self.tb
        saved = (list(inuse), list(idle))
        mark = len(picks) if picks is not None else 0
        reasons = 0
        cost = 0
        for step in range(n):
            total = 0
            if lookahead:
                for i in live:
                    r = first + i
                    if not elig[i] and st.g_kind[r] == S.MIG:
                        m = int(st.g_model[r])
                        c = int(rq.ctr_cls[ci, m])
                        if c < tb.n_profiles[m]:
                            total += int(tb.chain[inuse[i], c])
            best = None
            for i in live:
                r = first + i
                if elig[i] or st.g_kind[r] != S.MIG:
                    continue
                m = int(st.g_model[r])
                c = int(rq.ctr_cls[ci, m])
                if c >= tb.n_profiles[m]:
                    reasons |= Reason.MIG_PROFILE_TOO_SMALL
                    continue
                layout = inuse[i]
                cm = int(tb.cand[layout, c])
                if cm == 0:
                    reasons |= Reason.MIG_NO_PLACEMENT
                    continue
                # devices this GPU must still take after this one, the others being full
                need = (n - step - 1) - (total - int(tb.chain[layout, c])) if lookahead else 0
                order = self._mig_order(rq, m, layout)
                if use_idle:
                    for k in _bits(cm):
                        if need > 0 and int(tb.chain[int(tb.add[layout, k]), c]) < need:
                            continue
                        key = (self._slot_cost(m, layout, k), self._reuse(m, idle[i], k), order, i,
                               int(tb.slot_rank[m, k]))
                        if best is None or key < best[0]:
                            best = (key, i, k)
                else:  # the lookup mode serves one device only, where need <= 0
                    key = (int(self.dyn.bcost[layout, c]), 0, order, i, 0)
                    if best is None or key < best[0]:
                        best = (key, i, int(self.dyn.bslot[layout, c]))
            if lookahead and 0 < total < n - step:
                best = None  # room for some of the devices, not for all of them
                reasons |= Reason.MIG_NO_PLACEMENT
            if best is None:
                inuse[:], idle[:] = saved
                if picks is not None:
                    del picks[mark:]
                return False, 0, reasons
            key, i, k = best
            m = int(st.g_model[first + i])
            inuse[i], idle[i] = self._take(m, inuse[i], idle[i], k)
            cost += key[0]
            if picks is not None:
                picks.append((ci, first + i, k, 0, 0))
        return True, cost, reasons

    def _reuse(self, m: int, idle: int, k: int) -> int:
        """0: an idle instance sits exactly at slot k (first-fit and HAMi's baselines: always
        0, they never seek one); 1: free slices; 2: idle instances must be destroyed first."""
        tb = self.tb
        if self.policy in S.IDLE_BLIND or int(tb.slotset[idle]) >> k & 1:
            return 0
        if int(tb.occupied[idle]) & int(tb.slot_mask[m, k]):
            return 2
        return 1

    def _search(self, rq, first, live, elig, inuse, idle, picks):
        """Every MIG device of the pod as one placement problem (our policies, two or more
        containers): devices largest first, each trying its candidates in key order,
        backtracking on a dead end. Bounded by ``S.SEARCH_BUDGET`` visits; GPUs in the same
        state are tried once per step (swapping them changes nothing), and a branch stops as
        soon as some remaining container has no candidate anywhere (candidates only shrink
        as instances are added). Returns ``(ok, cost, reasons)``; on success ``inuse``,
        ``idle`` and ``picks`` hold the plan, otherwise they are unchanged."""
        st, tb = self.st, self.tb
        order = [int(x) for x in rq.ctr_order]
        devices = [ci for ci in order for _ in range(int(rq.ctr_count[ci]))]
        mig = [i for i in live if not elig[i] and st.g_kind[first + i] == S.MIG]
        budget = [S.SEARCH_BUDGET]
        reasons = [0]
        # the least compute and memory slices each device can take, summed from device d on:
        # a branch whose GPUs have fewer free slices than that cannot finish
        need_c, need_m = [0] * (len(devices) + 1), [0] * (len(devices) + 1)
        for d in range(len(devices) - 1, -1, -1):
            least_c = least_m = 0
            for i in mig:
                m = int(st.g_model[first + i])
                c = int(rq.ctr_cls[devices[d], m])
                if c < tb.n_profiles[m]:
                    pc, pm = int(tb.profile_compute[m, c]), int(tb.profile_memory[m, c])
                    least_c = pc if least_c == 0 else min(least_c, pc)
                    least_m = pm if least_m == 0 else min(least_m, pm)
            need_c[d], need_m[d] = need_c[d + 1] + least_c, need_m[d + 1] + least_m

        def room(d: int) -> bool:
            free_c = free_m = 0
            for i in mig:
                m = int(st.g_model[first + i])
                free_c += int(tb.compute_slices[m]) - int(tb.used_compute[inuse[i]])
                free_m += int(tb.memory_slices[m]) - int(tb.used_memory[inuse[i]])
            return free_c >= need_c[d] and free_m >= need_m[d]

        def reachable(ci: int) -> bool:
            for i in mig:
                m = int(st.g_model[first + i])
                c = int(rq.ctr_cls[ci, m])
                if c < tb.n_profiles[m] and int(tb.cand[inuse[i], c]):
                    return True
            return False

        def dfs(d: int, cost: int):
            if d == len(devices):
                return cost
            if budget[0] == 0:
                return None
            budget[0] -= 1
            if not room(d):
                return None
            for j in range(d, len(devices)):
                if (j == d or devices[j] != devices[j - 1]) and not reachable(devices[j]):
                    return None
            ci = devices[d]
            cands = []
            seen = set()
            for i in mig:
                m = int(st.g_model[first + i])
                if (m, inuse[i], idle[i]) in seen:
                    continue
                seen.add((m, inuse[i], idle[i]))
                c = int(rq.ctr_cls[ci, m])
                if c >= tb.n_profiles[m]:
                    reasons[0] |= Reason.MIG_PROFILE_TOO_SMALL
                    continue
                layout = inuse[i]
                cm = int(tb.cand[layout, c])
                if cm == 0:
                    reasons[0] |= Reason.MIG_NO_PLACEMENT
                    continue
                order_key = self._mig_order(rq, m, layout)
                for k in _bits(cm):
                    cands.append(((self._slot_cost(m, layout, k), self._reuse(m, idle[i], k), order_key, i,
                                   int(tb.slot_rank[m, k])), i, k))
            cands.sort()
            for key, i, k in cands:
                saved = inuse[i], idle[i]
                m = int(st.g_model[first + i])
                inuse[i], idle[i] = self._take(m, inuse[i], idle[i], k)
                if picks is not None:
                    picks.append((ci, first + i, k, 0, 0))
                found = dfs(d + 1, cost + key[0])
                if found is not None:
                    return found
                inuse[i], idle[i] = saved
                if picks is not None:
                    picks.pop()
            return None

        found = dfs(0, 0)
        if found is None and mig:
            reasons[0] |= Reason.MIG_NO_PLACEMENT
        return found is not None, found or 0, reasons[0]

    def _take(self, m: int, layout: int, idle: int, k: int) -> tuple[int, int]:
        """Slot k goes in use; idle instances it reuses or overlaps leave the idle layout."""
        tb = self.tb
        after = int(tb.add[layout, k])
        mask = int(tb.slot_mask[m, k])
        for j in _bits(int(tb.slotset[idle])):
            if int(tb.slot_mask[m, j]) & mask:
                idle = int(tb.remove[idle, j])
        return after, idle

    def _place_core(self, rq, ci, n, first, live, elig, slots, umem, ucores, picks):
        st = self.st
        reasons = 0
        fitting = []
        usable = considered = 0
        for i in live:
            r = first + i
            if elig[i] or st.g_kind[r] != S.CORE:
                continue
            total_mem = int(st.g_mem[r])
            memreq = int(rq.ctr_mem[ci]) if rq.ctr_mem[ci] > 0 else total_mem * int(rq.ctr_pct[ci]) // 100
            creq = int(rq.ctr_cores[ci])
            total_cores = int(st.g_cores[r])
            considered += 1
            if memreq > total_mem:
                reasons |= Reason.MEMORY_EXCEEDS_GPU
                continue
            usable += 1
            if slots[i] >= int(st.g_split[r]):
                reasons |= Reason.SLOTS_EXHAUSTED
            elif total_cores - ucores[i] < creq:
                reasons |= Reason.INSUFFICIENT_CORES
            elif (creq >= 100 and slots[i] > 0) or (total_cores and ucores[i] >= total_cores):
                # exclusive wants an empty GPU; a GPU whose cores are all taken (an exclusive
                # task) takes no share
                reasons |= Reason.EXCLUSIVE_CONFLICT
            elif total_mem - umem[i] < memreq:
                reasons |= Reason.INSUFFICIENT_MEMORY
            else:
                fitting.append((self._core_order(rq, r, slots[i], umem[i], ucores[i]), i, memreq, creq))
        if considered == 0:  # no hami-core GPU may serve this request: nothing to add
            return False, reasons
        if usable < n:
            return False, reasons | Reason.NODE_TOO_SMALL
        if len(fitting) < n:
            return False, reasons | Reason.TOO_FEW_GPUS
        fitting.sort()
        for _order, i, memreq, creq in fitting[:n]:
            slots[i] += 1
            umem[i] += memreq
            ucores[i] += creq
            if picks is not None:
                picks.append((ci, first + i, -1, memreq, creq))
        return True, 0

    # -- state updates (the engine's reserve and release, per pick) ---------------------
    def take_slot(self, row: int, k: int) -> tuple[bool, int]:
        """Slot ``k`` of a MIG GPU goes in use. Returns whether an idle instance sat exactly
        there (reused) and the bitmask of idle slots overlapping it (to destroy first); both
        leave the idle layout. Keeps the derived usage columns."""
        st, tb = self.st, self.tb
        m = int(st.g_model[row])
        idle = int(st.g_idle[row])
        mask = int(tb.slot_mask[m, k])
        reused, destroyed = False, 0
        for j in _bits(int(tb.slotset[idle])):
            if j == k:
                reused = True
            elif int(tb.slot_mask[m, j]) & mask:
                destroyed |= 1 << j
            else:
                continue
            idle = int(tb.remove[idle, j])
        after = int(tb.add[int(st.g_inuse[row]), k])
        if after < 0:
            raise ValueError(f"slot {k} is not free on GPU row {row}")
        st.g_idle[row] = idle
        st.g_inuse[row] = after
        st.g_usage[row] = self._usage_pm(row, after, 0)
        st.g_order[row] = 0
        return reused, destroyed

    def set_layouts(self, row: int, inuse: int, idle: int) -> None:
        """A MIG GPU's layouts as the agent reported them."""
        st = self.st
        st.g_inuse[row], st.g_idle[row] = inuse, idle
        st.g_usage[row] = self._usage_pm(row, inuse, 0)
        st.g_order[row] = 0

    def give_back_slot(self, row: int, k: int) -> bool:
        """Slot ``k`` leaves the in-use layout; its instance stays on the node, idle (False
        when the idle layout cannot hold it: an instance cap)."""
        st, tb = self.st, self.tb
        inuse = int(tb.remove[int(st.g_inuse[row]), k])
        st.g_inuse[row] = inuse
        st.g_usage[row] = self._usage_pm(row, inuse, 0)
        idle_after = int(tb.add[int(st.g_idle[row]), k])
        if idle_after >= 0:
            st.g_idle[row] = idle_after
        return idle_after >= 0

    def add_share(self, row: int, sign: int, mem: int, cores: int) -> None:
        """A hami-core share comes (sign 1) or goes (sign -1); keeps the derived columns."""
        st = self.st
        slots = int(st.g_slots[row]) + sign
        used_mem = int(st.g_used_mem[row]) + sign * mem
        used_cores = int(st.g_used_cores[row]) + sign * cores
        st.g_slots[row], st.g_used_mem[row], st.g_used_cores[row] = slots, used_mem, used_cores
        st.g_usage[row] = self._usage_pm(row, 0, used_mem)
        st.g_order[row] = (slots * 1000 // max(int(st.g_split[row]), 1) + used_mem * 1000 // max(int(st.g_mem[row]), 1)
                           + used_cores * 1000 // max(int(st.g_cores[row]), 1))

    # -- many nodes --------------------------------------------------------------------
    def fit_score(self, rq: S.RequestArrays, nodes, out_code, out_reason, out_score) -> None:
        """Per node: code 0 fits / 1 unschedulable / 2 unresolvable, reason bits, score 0..100."""
        from hami._core.results import RESOLVABLE

        lookup = rq.n_ctr == 1 and int(rq.ctr_count[0]) == 1  # the tables' best slot is exact
        for j in range(len(nodes)):
            ok, reasons, cost, pack, on_core = self.plan(rq, int(nodes[j]), not lookup, None)
            if not ok:
                out_code[j] = 1 if reasons & RESOLVABLE else 2
                out_reason[j] = reasons
                out_score[j] = 0
                continue
            out_code[j] = 0
            out_reason[j] = 0
            out_score[j] = self._score(rq, cost, pack, on_core)
        normalise(nodes, out_code, out_score)

    def _score(self, rq: S.RequestArrays, cost: int, pack: int, on_core: bool) -> int:
        """The placement's fine rank (higher is better; normalised by ``normalise``)."""
        score = self._placement_score(rq, cost, pack)
        if rq.allow_mig and rq.allow_core and not on_core:  # the unified pool: MIG above shares
            score += S.MIG_FIRST
        return score

    def _placement_score(self, rq: S.RequestArrays, cost: int, pack: int) -> int:
        if self.policy == S.FIRST_FIT:
            return 0
        if self.policy not in (S.FRAGMENTATION_AWARE, S.BEST_FIT):
            return pack if rq.node_binpack else 1000 - pack  # 0..1000
        spread = 0 if rq.node_binpack else 10 - pack // 100  # 0..10
        if self.policy == S.BEST_FIT:
            return (S.COST_CAP - max(0, min(S.COST_CAP, cost))) * S.TIE * 11 + spread
        # the loss in ‰ of a GPU's weighted capacity, then the slot cost's tie-breaks
        if cost < 0:
            loss, tie = 0, 0
        else:
            loss, tie = min(S.COST_CAP, cost // S.TIE * 1000 // (S.WEIGHT_SCALE * 16)), cost % S.TIE
        return ((S.COST_CAP - loss) * S.TIE + S.TIE - 1 - tie) * 11 + spread


def normalise(nodes, codes, scores) -> None:
    """Fine ranks to 0..100 over the fitting candidates, in place: the best 100 (one node: on
    a tie the lowest node id), every other fitting node about ``90 × (rank − worst) / (best −
    worst)`` (a multiply and a shift, not a division per node; 90 when all rank alike), so on
    kube-scheduler's 0–10 scale the engine's first choice alone rounds to 10. Non-fitting
    candidates keep 0."""
    best = worst = top = None
    for j in range(len(codes)):
        if codes[j] == 0:
            v, node = int(scores[j]), int(nodes[j])
            if best is None or v > best or (v == best and node < top):
                best, top = v, node
            worst = v if worst is None or v < worst else worst
    if best is None:
        return
    scale = (90 << 32) // (best - worst) if best > worst else 0
    for j in range(len(codes)):
        if codes[j] == 0:
            v = int(scores[j])
            if v == best and int(nodes[j]) == top:
                scores[j] = 100
            else:
                scores[j] = (v - worst) * scale >> 32 if scale else 90
