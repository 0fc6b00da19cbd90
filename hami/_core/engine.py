"""The placement engine's API (ARCHITECTURE §4): state bookkeeping around the kernels.

``Engine`` owns the arrays (``state.State``), the policy's tables (``tables.PolicyTables``)
and the maps from names to row ids; the kernels (``_kernels`` compiled, or ``reference``)
only read them. Mutations take one lock; read-only calls do not.

Reservations are remembered per pod as the exact picks applied, so ``release`` restores
the exact prior state of the in-use layouts and shares; a released MIG instance becomes
idle (it still exists on the node until the agent destroys it, and the next
``set_realised`` corrects any drift).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hami._core import state as S
from hami._core.results import (
    RESOLVABLE,
    Code,
    Conflict,
    CorePick,
    Decision,
    Features,
    FitResult,
    GpuMode,
    GpuSpec,
    MigPick,
    Pick,
    RealisedInstance,
    Rejection,
    describe,
)
from hami._core.tables import HAMI_POLICIES, PolicyTables
from hami.api.codecs import Placement
from hami.api.requests import GpuPolicy, Mode, NodePolicy, Request
from hami.devices import naming
from hami.devices.config import NvidiaConfig
from hami.devices.models import GpuModel

log = logging.getLogger(__name__)

EMPTY_NODE = 0  # node id 0 has no GPUs: unknown names map to it
SYNTH_MEMO = 8192  # expected idle instances kept for reuse across decisions (Engine._synth)


class _Mutation:
    """``with engine._mutation:`` — the engine lock, and on the way out the nodes whose rows
    changed get a new version (after every write, so a lock-free reader that raced the
    change never files a stale result under the new version)."""

    __slots__ = ("engine",)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __enter__(self) -> None:
        self.engine._lock.acquire()

    def __exit__(self, *exc) -> None:
        engine = self.engine
        try:
            if engine._dirty:
                versions = engine.state.n_version
                for node in engine._dirty:
                    versions[node] += 1
                engine._dirty.clear()
        finally:
            engine._lock.release()


@dataclass
class _Held:
    """A pod's reservation: the picks as applied."""

    node: str
    decision: Decision
    picks: list[tuple[int, int, int, int, int]]  # (container, row, slot, mem, cores)


class Engine:
    """Cluster state + placement decisions for one policy.

    ``kernels`` is the module providing ``Kernels`` (``hami._core._kernels`` or
    ``hami._core.reference``); ``hami._core.Engine`` picks it for you.
    """

    def __init__(
        self,
        config: NvidiaConfig | None = None,
        policy: str = "fragmentation-aware",
        features: Features | None = None,
        *,
        kernels=None,
    ) -> None:
        if kernels is None:
            from hami._core import reference as kernels
        self.config = config
        self.policy_name = policy
        self.features = features or Features()
        if self.features.default_node_policy not in ("binpack", "spread"):
            raise ValueError("default_node_policy must be binpack or spread")
        if self.features.default_gpu_policy not in (None, "binpack", "spread"):
            raise ValueError("default_gpu_policy must be binpack, spread or None (the policy's default)")
        self.tables = PolicyTables(config, policy, self.features.hami_memory)
        self.policy = S.POLICY_IDS[policy]
        # HAMi's baselines spread over GPUs by default, as HAMi does; ours fill GPUs
        self._gpu_policy = GpuPolicy(self.features.default_gpu_policy or (
            "spread" if policy in HAMI_POLICIES else "binpack"))
        self.state = S.State()
        self.dyn = S.Dynamic(self.tables)
        self._kernel_module = kernels
        self._kernels = None
        self._lock = threading.RLock()
        self._mutation = _Mutation(self)
        self._dirty: set[int] = set()  # nodes changed under the current mutation
        self._synthesised: dict[tuple[str, str, int], RealisedInstance] = {}
        self._node_ids: dict[str, int] = {}
        self._node_names: list[str] = [""]
        self.state.nodes = 1  # EMPTY_NODE
        self._models: dict[str, GpuModel] = {}  # registered models the catalog lacks, by type
        self._rows: dict[str, int] = {}  # gpu uuid -> row
        self._row_spec: list[GpuSpec | None] = []
        self._row_node: list[int] = []  # row -> node id (g_node as a list: no numpy scalar per pick)
        self._types: list[str] = []
        self._type_ids: dict[str, int] = {}
        self._held: dict[str, _Held] = {}
        # reservations indexed by GPU row, so a node's report or reshape costs O(its instances)
        self._owner: dict[int, dict[int, str]] = {}  # row -> slot -> pod uid (MIG)
        self._row_pods: dict[int, set[str]] = {}  # row -> pods with a pick there (MIG or share)
        self._pinned: dict[int, dict[int, RealisedInstance]] = {}  # busy, not ours
        self._idle: dict[int, dict[int, RealisedInstance | None]] = {}  # idle realised instances
        self._lazy: list[list[float]] = []  # per model: histogram × boost (lazy decay)
        self._boost = 1.0
        self._applied: list[list[int]] = []  # weights behind the current tables
        self._since_refresh = 0
        self._rq_cache: dict[Request, tuple[tuple[int, int, int], S.RequestArrays]] = {}

    # -- kernels -----------------------------------------------------------------------
    @property
    def kernels(self):
        if self._kernels is None:
            self._kernels = self._kernel_module.Kernels(self.state, self.tables, self.dyn, self.policy)
        return self._kernels

    @property
    def implementation(self) -> str:
        return self._kernel_module.__name__.rsplit(".", 1)[-1]

    # -- nodes and GPUs ----------------------------------------------------------------
    def node_ids(self, names: Iterable[str]) -> np.ndarray:
        """Row ids for node names (unknown names map to a node without GPUs)."""
        get = self._node_ids.get
        return np.fromiter((get(n, EMPTY_NODE) for n in names), np.int32)

    def node_name(self, node_id: int) -> str:
        return self._node_names[node_id]

    @property
    def registered_nodes(self) -> int:
        """How many node names map to ids now (with ``state.nodes``, a key for caches of ``node_ids``)."""
        return len(self._node_ids)

    @property
    def node_names(self) -> list[str]:
        return [n for n in self._node_names[1:] if n in self._node_ids]

    def _type_id(self, gpu_type: str) -> int:
        tid = self._type_ids.get(gpu_type)
        if tid is None:
            tid = self._type_ids[gpu_type] = len(self._types)
            self._types.append(gpu_type)
        return tid

    def upsert_node(self, name: str, gpus: Sequence[GpuSpec]) -> None:
        """Register or update a node's GPUs; usage of GPUs that stay (same uuid and kind) is kept."""
        if len(gpus) > S.MAX_NODE_GPUS:
            raise ValueError(f"node {name}: {len(gpus)} GPUs; at most {S.MAX_NODE_GPUS} are supported a node")
        resolved = [self._resolve_gpu(name, g) for g in gpus]
        with self._mutation:
            for g in gpus:
                row = self._rows.get(g.uuid)
                if row is not None and self._node_names[int(self.state.g_node[row])] != name:
                    other = self._node_names[int(self.state.g_node[row])]
                    raise ValueError(f"GPU {g.uuid} of node {name} is already registered by node {other}")
            st = self.state
            node = self._node_ids.get(name)
            if node is None:
                if st.grow_nodes(1):
                    self._kernels = None
                node = st.nodes
                st.nodes += 1
                self._node_ids[name] = node
                self._node_names.append(name)
            self._dirty.add(node)
            old_first, old_count = int(st.n_first[node]), int(st.n_count[node])
            old_rows = {self._row_spec[r].uuid: r for r in range(old_first, old_first + old_count)
                        if self._row_spec[r] is not None}
            same_shape = old_count == len(gpus) and all(
                old_rows.get(g.uuid) == old_first + i and self._same_kind(old_first + i, m)
                for i, (g, m) in enumerate(zip(gpus, resolved, strict=True))
            )
            if same_shape:
                for i, (g, m) in enumerate(zip(gpus, resolved, strict=True)):
                    self._write_gpu(old_first + i, node, g, m, keep_usage=True)
                return
            if st.grow_rows(len(gpus)):
                self._kernels = None
            first = st.rows
            st.rows += len(gpus)
            self._row_spec.extend([None] * len(gpus))
            self._row_node.extend([node] * len(gpus))
            for i, (g, m) in enumerate(zip(gpus, resolved, strict=True)):
                row = first + i
                prev = old_rows.pop(g.uuid, None)
                self._write_gpu(row, node, g, m, keep_usage=False)
                if prev is not None and self._same_kind(prev, m):
                    self._move_row(prev, row)
            for prev in old_rows.values():
                self._retire_row(prev)
            for r in range(old_first, old_first + old_count):
                st.g_kind[r] = S.DEAD
            st.n_first[node], st.n_count[node] = first, len(gpus)

    def register_model(self, model: GpuModel) -> None:
        """A MIG model the built-in catalog lacks (built from what a node registers): GPUs whose
        type is its ``nvml_name`` resolve to it from now on."""
        with self._lock:
            self._models[model.nvml_name] = model

    def _resolve_gpu(self, node: str, g: GpuSpec) -> int:
        """The MIG table model id for a MIG GPU, -1 for hami-core (validates the spec)."""
        if g.mode == GpuMode.MIG:
            model = self._models.get(g.type) or naming.find_model(g.type)
            if not model.mig_capable:
                raise ValueError(
                    f"node {node}: GPU {g.uuid} ({g.type}) cannot run MIG; "
                    "set the node's operatingmode to hami-core"
                )
            with self._lock:
                m = self.tables.add_model(model)
                if m >= len(self._lazy):
                    self._grow_models()
            return m
        if g.memory_mib <= 0:
            raise ValueError(f"node {node}: GPU {g.uuid} ({g.type}) reports no memory (devmem)")
        return -1

    def _grow_models(self) -> None:
        for t in self.tables.models[len(self._lazy):]:
            self._lazy.append([0.0] * len(t.profiles))
        self.dyn = S.Dynamic(self.tables)
        self._kernels = None
        self._refresh()

    def _same_kind(self, row: int, model: int) -> bool:
        st = self.state
        kind = S.MIG if model >= 0 else S.CORE
        return int(st.g_kind[row]) == kind and int(st.g_model[row]) == model

    def _write_gpu(self, row: int, node: int, g: GpuSpec, model: int, keep_usage: bool) -> None:
        st = self.state
        st.g_node[row] = node
        st.g_kind[row] = S.MIG if model >= 0 else S.CORE
        st.g_flags[row] = (st.g_flags[row] & S.CORDONED) | (0 if g.healthy else S.UNHEALTHY)
        st.g_type[row] = self._type_id(g.type)
        st.g_model[row] = model
        st.g_split[row] = max(g.split_count, 0)
        st.g_mem[row] = g.memory_mib
        st.g_cores[row] = g.cores
        if not keep_usage:
            st.g_flags[row] = 0 if g.healthy else S.UNHEALTHY
            empty = int(self.tables.offset[model]) if model >= 0 else 0
            st.g_inuse[row] = st.g_idle[row] = empty
            st.g_slots[row] = st.g_used_mem[row] = st.g_used_cores[row] = 0
        self._rows[g.uuid] = row
        self._row_spec[row] = g
        self._row_node[row] = node
        self._touch(row)

    def _touch(self, row: int) -> None:
        """Recompute a GPU's derived columns after its usage changed (same formulas as the
        reference kernels' ``_usage_pm`` and ``_core_order``)."""
        st = self.state
        self._dirty.add(self._row_node[row])
        if st.g_kind[row] == S.MIG:
            m = int(st.g_model[row])
            st.g_usage[row] = int(self.tables.used_compute[int(st.g_inuse[row])]) * 1000 // int(
                self.tables.compute_slices[m])
            st.g_order[row] = 0
        elif st.g_kind[row] == S.CORE:
            used_mem = int(st.g_used_mem[row])
            st.g_usage[row] = used_mem * 1000 // max(int(st.g_mem[row]), 1)
            st.g_order[row] = (int(st.g_slots[row]) * 1000 // max(int(st.g_split[row]), 1)
                               + used_mem * 1000 // max(int(st.g_mem[row]), 1)
                               + int(st.g_used_cores[row]) * 1000 // max(int(st.g_cores[row]), 1))

    def _move_row(self, old: int, new: int) -> None:
        st = self.state
        for name in ("g_flags", "g_inuse", "g_idle", "g_slots", "g_used_mem", "g_used_cores"):
            getattr(st, name)[new] = getattr(st, name)[old]
        self._touch(new)
        for uid in self._row_pods.get(old, ()):
            held = self._held[uid]
            held.picks = [(c, new if r == old else r, k, mem, cores) for c, r, k, mem, cores in held.picks]
        for table in (self._owner, self._row_pods, self._pinned, self._idle):
            if old in table:
                table[new] = table.pop(old)
        self._row_spec[old] = None

    def _retire_row(self, row: int) -> None:
        spec = self._row_spec[row]
        if spec is not None and self._rows.get(spec.uuid) == row:
            del self._rows[spec.uuid]
        self._row_spec[row] = None
        self._pinned.pop(row, None)
        self._idle.pop(row, None)

    def remove_node(self, name: str) -> None:
        """Forget a node's GPUs. Reservations on it stay until released (release is safe)."""
        with self._mutation:
            node = self._node_ids.pop(name, None)
            if node is None:
                return
            st = self.state
            self._dirty.add(node)
            first, count = int(st.n_first[node]), int(st.n_count[node])
            for r in range(first, first + count):
                st.g_kind[r] = S.DEAD
                self._retire_row(r)
            st.n_count[node] = 0

    def set_health(self, gpu_uuid: str, ok: bool) -> None:
        with self._mutation:
            row = self._row(gpu_uuid)
            self._dirty.add(int(self.state.g_node[row]))
            if ok:
                self.state.g_flags[row] &= ~np.uint8(S.UNHEALTHY)
            else:
                self.state.g_flags[row] |= S.UNHEALTHY

    def set_cordoned(self, node: str, gpu_uuids: Iterable[str]) -> None:
        """hami.io/device-cordon: exactly these GPUs of the node are skipped."""
        cordoned = set(gpu_uuids)
        with self._mutation:
            node_id = self._node_ids.get(node)
            if node_id is None:
                return
            st = self.state
            self._dirty.add(node_id)
            for r in range(int(st.n_first[node_id]), int(st.n_first[node_id] + st.n_count[node_id])):
                spec = self._row_spec[r]
                if spec is not None and spec.uuid in cordoned:
                    st.g_flags[r] |= S.CORDONED
                else:
                    st.g_flags[r] &= ~np.uint8(S.CORDONED)

    def _row(self, gpu_uuid: str) -> int:
        try:
            return self._rows[gpu_uuid]
        except KeyError:
            raise KeyError(f"unknown GPU {gpu_uuid}: no registered node reports it") from None

    # -- realised instances ------------------------------------------------------------
    def set_realised(self, node: str, instances: Sequence[RealisedInstance]) -> list[Conflict]:
        """Fold the agent's report of existing MIG instances into the node's layouts.

        Costs O(instances on the node): the node's rows are read once, and reservations are
        found through the per-row index."""
        conflicts: list[Conflict] = []
        with self._mutation:
            node_id = self._node_ids.get(node)
            if node_id is None:
                return [Conflict(None, i.gpu_uuid, f"node {node} is not registered") for i in instances]
            st = self.state
            first, count = int(st.n_first[node_id]), int(st.n_count[node_id])
            kinds = st.g_kind[first:first + count].tolist()
            models = st.g_model[first:first + count].tolist()
            rows = self._rows
            by_row: dict[int, list[RealisedInstance]] = {}
            for inst in instances:
                row = rows.get(inst.gpu_uuid)
                if row is None or not first <= row < first + count or kinds[row - first] != S.MIG:
                    conflicts.append(Conflict(inst.pod_uid, inst.gpu_uuid, "not a MIG GPU of this node"))
                    continue
                by_row.setdefault(row, []).append(inst)
            for i in range(count):
                if kinds[i] == S.MIG:
                    conflicts += self._fold_row(first + i, models[i], by_row.get(first + i, ()))
        return conflicts

    def _fold_row(self, row: int, m: int, instances) -> list[Conflict]:
        tb = self.tables
        t = tb.models[m]
        uuid = self._row_spec[row].uuid
        conflicts = []
        owners = self._owner.get(row, {})
        reserved = occupied = 0
        for k in owners:
            reserved |= 1 << k
            occupied |= t.slot_mask[k]
        pinned: dict[int, RealisedInstance] = {}
        idle: dict[int, RealisedInstance] = {}
        for inst in instances:
            try:
                k = t.slot_of(inst.profile, inst.start)
            except KeyError as err:
                conflicts.append(Conflict(inst.pod_uid, uuid, str(err)))
                continue
            size = t.profiles[t.slots[k][0]].memory_slices
            if inst.placement.size != size:
                conflicts.append(Conflict(inst.pod_uid, uuid, f"{inst.profile}@{inst.start} is {size} memory slices "
                                          f"wide, not {inst.placement.size}"))
                continue
            mask = t.slot_mask[k]
            if reserved >> k & 1:
                owner = owners[k]
                if inst.in_use and inst.pod_uid and inst.pod_uid != owner:
                    conflicts.append(Conflict(inst.pod_uid, uuid,
                                              f"{inst.profile}@{inst.start} is reserved for pod {owner}"))
                continue  # the reservation, realised
            if occupied & mask:
                if inst.in_use:
                    conflicts.append(Conflict(inst.pod_uid, uuid,
                                              f"busy {inst.profile}@{inst.start} overlaps a reservation"))
                continue  # an idle instance in the way of a reservation: it will be destroyed
            occupied |= mask
            (pinned if inst.in_use else idle)[k] = inst
        inuse_set = reserved
        for k in pinned:
            inuse_set |= 1 << k
        idle_set = 0
        for k in idle:
            idle_set |= 1 << k
        index = t.index
        if inuse_set not in index or idle_set not in index or (inuse_set | idle_set) not in index:
            conflicts.append(Conflict(None, uuid, "reported instances break a profile's instance cap"))
            return conflicts
        base = tb.base[m]
        self.kernels.set_layouts(row, base + index[inuse_set], base + index[idle_set])
        self._dirty.add(self._row_node[row])
        self._pinned[row] = pinned
        self._idle[row] = idle
        return conflicts

    def forget_idle(self, gpu_uuid: str, profile: str, start: int) -> bool:
        """The agent destroyed an idle instance: drop it from the idle layout."""
        with self._mutation:
            row = self._row(gpu_uuid)
            st, tb = self.state, self.tables
            if st.g_kind[row] != S.MIG:
                return False
            m = int(st.g_model[row])
            k = tb.models[m].slot_of(profile, start)
            idle = int(st.g_idle[row])
            if not int(tb.slotset[idle]) >> k & 1:
                return False
            st.g_idle[row] = tb.remove[idle, k]
            self._dirty.add(self._row_node[row])
            self._idle.get(row, {}).pop(k, None)
            return True


    # -- requests ----------------------------------------------------------------------
    def _request_arrays(self, request: Request) -> S.RequestArrays:
        """The request as arrays, converted once and reused while the cluster's shape holds
        (the same pod goes through fits, scores and bind; simulations repeat shapes)."""
        shape = (len(self.tables.models), len(self._types), self.state.rows)
        hit = self._rq_cache.get(request)
        if hit is not None and hit[0] == shape:
            return hit[1]
        rq = self._convert(request)
        if len(self._rq_cache) >= 1024:
            self._rq_cache.clear()
        self._rq_cache[request] = (shape, rq)
        return rq

    def _convert(self, request: Request) -> S.RequestArrays:
        ctrs = [c for c in request.containers if c.count > 0]
        tb = self.tables
        rq = S.RequestArrays(len(ctrs), len(tb.models), len(self._types))
        for i, c in enumerate(ctrs):
            rq.ctr_index[i] = c.index
            rq.ctr_count[i] = c.count
            rq.ctr_mem[i] = c.memory_mib
            rq.ctr_pct[i] = c.memory_percent if c.memory_mib <= 0 else 0
            rq.ctr_cores[i] = min(c.cores, 100)
            for m, t in enumerate(tb.models):
                rq.ctr_cls[i, m] = t.class_of(c.memory_mib, c.memory_percent)
        if self.policy in S.JOINT_POLICIES and len(ctrs) > 1:
            # largest first, ties by the request itself: the plan never depends on the order
            # containers are written in (identical containers are interchangeable)
            def size(i: int) -> tuple:
                return (tuple(-int(x) for x in rq.ctr_cls[i]), -int(rq.ctr_mem[i]), -int(rq.ctr_pct[i]),
                        -int(rq.ctr_cores[i]), -int(rq.ctr_count[i]), i)

            rq.ctr_order[:] = sorted(range(len(ctrs)), key=size)
        rq.index = [int(x) for x in rq.ctr_index]
        rq.observe = [(int(rq.ctr_count[i]), rq.ctr_cls[i].tolist()[: len(self._lazy)]) for i in range(len(ctrs))]
        rq.allow_mig = request.mode in (Mode.ANY, Mode.MIG)
        rq.allow_core = request.mode in (Mode.ANY, Mode.HAMI_CORE)
        if request.use_gpu_types or request.nouse_gpu_types:
            use = [u.lower() for u in request.use_gpu_types]
            nouse = [u.lower() for u in request.nouse_gpu_types]
            for tid, gpu_type in enumerate(self._types):
                low = gpu_type.lower()
                ok = (not use or any(u in low for u in use)) and not any(u in low for u in nouse)
                rq.type_ok[tid] = ok
        if request.use_gpu_uuids or request.nouse_gpu_uuids:
            rq.row_ok = np.ones(max(self.state.rows, 1), np.uint8)
            if request.use_gpu_uuids:
                rq.row_ok[:] = 0
                for u in request.use_gpu_uuids:
                    if u in self._rows:
                        rq.row_ok[self._rows[u]] = 1
            for u in request.nouse_gpu_uuids:
                if u in self._rows:
                    rq.row_ok[self._rows[u]] = 0
        gpu_policy = request.gpu_policy or self._gpu_policy
        node_policy = request.node_policy or NodePolicy(self.features.default_node_policy)
        rq.gpu_binpack = gpu_policy == GpuPolicy.BINPACK
        rq.node_binpack = node_policy == NodePolicy.BINPACK
        return rq

    # -- read-only calls ---------------------------------------------------------------
    def fits(self, request: Request, candidate_ids: np.ndarray) -> FitResult:
        return self.fit_and_score(request, candidate_ids)[0]

    def scores(self, request: Request, candidate_ids: np.ndarray) -> np.ndarray:
        """0..100 per node, relative to the fitting candidates of the call: the engine's first
        choice 100 (ties to the lowest node id), every other fitting node below 90 in
        proportion, 0 where the request does not fit (reference.normalise)."""
        return self.fit_and_score(request, candidate_ids)[1]

    def fit_and_score(self, request: Request, candidate_ids: np.ndarray) -> tuple[FitResult, np.ndarray]:
        """Both in one pass over the candidates (read-only)."""
        ids = self._checked_ids(candidate_ids)
        codes = np.zeros(len(ids), np.uint8)
        reasons = np.zeros(len(ids), np.uint32)
        scores = np.zeros(len(ids), np.int32)
        if request.wants_gpus:
            rq = self._request_arrays(request)
            with rq.lock:  # the request's memo is filled in place
                self.kernels.fit_score(rq, ids, codes, reasons, scores)
        return FitResult(ids, codes, reasons), scores

    def gpu_counts(self, candidate_ids: np.ndarray) -> np.ndarray:
        """GPUs each node registered (any mode, health or cordon), for reasons with numbers."""
        return self.state.n_count[self._checked_ids(candidate_ids)]

    def _checked_ids(self, candidate_ids) -> np.ndarray:
        """Node ids as the kernels take them, bounds-checked once: ids come from HTTP input
        through ``node_ids``, and an id the state does not have would read past its arrays."""
        ids = np.asarray(candidate_ids)
        if ids.dtype.kind not in "iu":
            raise ValueError(f"node ids must be integers (got {ids.dtype}); map node names with Engine.node_ids()")
        if ids.size:
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.state.nodes:
                bad = low if low < 0 else high
                raise ValueError(f"node id {bad} is out of range 0..{self.state.nodes - 1}; "
                                 "map node names with Engine.node_ids()")
        return np.ascontiguousarray(ids, np.int32)

    # -- decisions ---------------------------------------------------------------------
    def decide_and_reserve(self, pod_uid: str, request: Request, node: str) -> Decision | Rejection:
        """Choose exact devices on ``node`` and reserve them atomically; idempotent per pod."""
        with self._mutation:
            held = self._held.get(pod_uid)
            if held is not None:
                if held.node == node:
                    return held.decision
                self.release(pod_uid)
            node_id = self._node_ids.get(node, EMPTY_NODE)
            rq = self._request_arrays(request)
            if not rq.n_ctr:  # no container asks for a GPU
                decision = Decision(pod_uid, node, tuple(() for _ in request.containers))
                self._held[pod_uid] = _Held(node, decision, [])
                return decision
            picks: list[tuple[int, int, int, int, int]] = []
            ok, reasons, _cost, _pack, _core = self.kernels.plan(rq, node_id, True, picks)
            if not ok:
                code = Code.UNSCHEDULABLE if reasons & RESOLVABLE else Code.UNSCHEDULABLE_AND_UNRESOLVABLE
                return Rejection(node, code, int(reasons), f"node {node}: {describe(int(reasons))}")
            index = rq.index
            picks = [(index[c], r, k, mem, cores) for c, r, k, mem, cores in picks]
            decision = self._apply(pod_uid, node, len(request.containers), picks)
            self._observe(rq)
            return decision

    def _apply(self, pod_uid: str, node: str, n_containers: int, picks) -> Decision:
        """Reserve the picks (the kernels update the arrays) and build the Decision."""
        kernels, tb, st = self.kernels, self.tables, self.state
        per_ctr: list[list[Pick]] = [[] for _ in range(n_containers)]
        owner, row_pods, idle_map, dirty = self._owner, self._row_pods, self._idle, self._dirty
        for c, row, k, mem, cores in picks:
            spec = self._row_spec[row]
            dirty.add(self._row_node[row])
            row_pods.setdefault(row, set()).add(pod_uid)
            if k < 0:
                kernels.add_share(row, 1, mem, cores)
                per_ctr[c].append(CorePick(spec.uuid, mem, cores))
                continue
            reused, destroyed = kernels.take_slot(row, k)
            t = tb.models[int(st.g_model[row])]
            reuse, destroy = None, ()
            if reused or destroyed:
                info = idle_map.setdefault(row, {})
                if reused:
                    reuse = info.pop(k, None) or self._synth(spec.uuid, t, k)
                if destroyed:
                    destroy = tuple(info.pop(j, None) or self._synth(spec.uuid, t, j)
                                    for j in range(len(t.slots)) if destroyed >> j & 1)
            owner.setdefault(row, {})[k] = pod_uid
            p, start = t.slots[k]
            prof = t.profiles[p]
            per_ctr[c].append(MigPick(spec.uuid, prof.name, start, prof.memory_slices, reuse, destroy))
        decision = Decision(pod_uid, node, tuple(tuple(d) for d in per_ctr))
        self._held[pod_uid] = _Held(node, decision, list(picks))
        return decision

    def _synth(self, gpu_uuid: str, t, slot: int) -> RealisedInstance:
        """An idle instance known only by its placement (released by a pod, not reported yet);
        values, so one per (GPU, model, slot) serves every decision that names it. The memo is
        cleared at SYNTH_MEMO entries: at 10,000 MIG GPUs it would otherwise grow towards every
        (GPU, slot) pair churn ever met (some 140,000 instances)."""
        key = (gpu_uuid, t.model.key, slot)
        inst = self._synthesised.get(key)
        if inst is None:
            if len(self._synthesised) >= SYNTH_MEMO:  # (GPU, slot) pairs met over hours of churn: bounded
                self._synthesised.clear()
            p, start = t.slots[slot]
            prof = t.profiles[p]
            inst = self._synthesised[key] = RealisedInstance.expected(gpu_uuid, prof.name,
                                                                      Placement(start, prof.memory_slices))
        return inst

    def release(self, pod_uid: str) -> bool:
        """Undo a pod's reservation; idempotent and safe without a prior reserve."""
        with self._mutation:
            held = self._held.pop(pod_uid, None)
            if held is None:
                return False
            st, kernels = self.state, self.kernels
            for _c, row, k, mem, cores in held.picks:
                pods = self._row_pods.get(row)
                if pods is not None:
                    pods.discard(pod_uid)
                if k >= 0:
                    owners = self._owner.get(row)
                    if owners is None or owners.get(k) != pod_uid:
                        continue
                    del owners[k]
                if self._row_spec[row] is None or st.g_kind[row] == S.DEAD:
                    continue
                self._dirty.add(self._row_node[row])
                if k < 0:
                    kernels.add_share(row, -1, mem, cores)
                elif kernels.give_back_slot(row, k):
                    # the instance stays on the node, idle, until destroyed; its details
                    # come with the agent's next report
                    self._idle.setdefault(row, {})[k] = None
            return True

    def assume(self, pod_uid: str, decision: Decision) -> list[Conflict]:
        """Load a decision recorded in annotations (scheduler start, another replica's bind)."""
        with self._mutation:
            return self._assume(pod_uid, decision)

    def assume_many(self, decisions: Iterable[tuple[str, Decision]]) -> list[Conflict]:
        """``assume`` for many pods under one lock (a scheduler's start: every bound pod)."""
        conflicts: list[Conflict] = []
        with self._mutation:
            for pod_uid, decision in decisions:
                conflicts += self._assume(pod_uid, decision)
        return conflicts

    def _assume(self, pod_uid: str, decision: Decision) -> list[Conflict]:
        held = self._held.get(pod_uid)
        if held is not None:
            if held.decision == decision:
                return []
            self.release(pod_uid)
        st, tb, kernels = self.state, self.tables, self.kernels
        rows, owner, row_pods, dirty = self._rows, self._owner, self._row_pods, self._dirty
        picks = []
        conflicts: list[Conflict] = []
        node = ""
        for c, pick in decision.picks():
            row = rows.get(pick.gpu_uuid)
            if row is None:
                conflicts.append(Conflict(pod_uid, pick.gpu_uuid, "GPU not registered"))
                continue
            kind = st.g_kind[row]
            if isinstance(pick, CorePick):
                if kind != S.CORE:
                    conflicts.append(Conflict(pod_uid, pick.gpu_uuid, "a hami-core share on a MIG GPU"))
                    continue
                kernels.add_share(row, 1, pick.memory_mib, pick.cores)
                picks.append((c, row, -1, pick.memory_mib, pick.cores))
            else:
                if kind != S.MIG:
                    conflicts.append(Conflict(pod_uid, pick.gpu_uuid, "a MIG instance on a hami-core GPU"))
                    continue
                m = int(st.g_model[row])
                try:
                    k = tb.models[m].slot_of(pick.profile, pick.start)
                except KeyError as err:
                    conflicts.append(Conflict(pod_uid, pick.gpu_uuid, str(err)))
                    continue
                pinned = self._pinned.get(row)
                if pinned and k in pinned:  # realised before we knew the decision: it is this pod's
                    pinned.pop(k)
                    st.g_inuse[row] = tb.remove[int(st.g_inuse[row]), k]
                    self._touch(row)
                try:
                    _reused, destroyed = kernels.take_slot(row, k)
                except ValueError:
                    holder = owner.get(row, {}).get(k)
                    conflicts.append(Conflict(pod_uid, pick.gpu_uuid,
                                              f"{pick.profile}@{pick.start} overlaps instances in use"
                                              + (f" (pod {holder})" if holder else "")))
                    continue
                idle = self._idle.get(row)
                if idle:  # the instance and the idle ones it overlaps are no longer idle
                    idle.pop(k, None)
                    for j in range(destroyed.bit_length()):
                        if destroyed >> j & 1:
                            idle.pop(j, None)
                owner.setdefault(row, {})[k] = pod_uid
                picks.append((c, row, k, 0, 0))
            dirty.add(self._row_node[row])
            row_pods.setdefault(row, set()).add(pod_uid)
            node = node or self._node_names[int(st.g_node[row])]
        self._held[pod_uid] = _Held(node, decision, picks)
        return conflicts

    def reservation(self, pod_uid: str) -> Decision | None:
        held = self._held.get(pod_uid)
        return held.decision if held else None

    # -- the fragmentation-aware mix ---------------------------------------------------
    def _observe(self, rq: S.RequestArrays) -> None:
        """Count each decided device's smallest fitting profile, per model, decayed per
        device (lazily: each new observation weighs 1/decay more than the previous one)."""
        if self.policy != S.FRAGMENTATION_AWARE:
            return  # only this policy's tables depend on the mix
        step = 1.0 / self.features.histogram_decay
        lazy = self._lazy
        for count, classes in rq.observe:
            for _ in range(count):
                self._boost *= step
                for m, c in enumerate(classes):
                    if c < len(lazy[m]):
                        lazy[m][c] += self._boost
        if self._boost > 1e100:
            self._fold()
        self._since_refresh += 1
        if self._since_refresh >= self.features.refresh_every:
            self._since_refresh = 0
            if self._mix_moved():
                self._refresh()

    def _fold(self) -> None:
        boost = self._boost
        self._lazy = [[v / boost for v in row] for row in self._lazy]
        self._boost = 1.0

    def _weights(self, m: int) -> list[int]:
        """Model m's profile mix as integers summing to about WEIGHT_SCALE: the prior
        (uniform unless configured) plus the decayed histogram."""
        t = self.tables.models[m]
        prior = [float(self.features.prior.get(p.name, 1.0)) for p in t.profiles]
        total_prior = sum(prior) or 1.0
        hist = [v / self._boost for v in self._lazy[m]]
        w = [self.features.prior_strength * prior[p] / total_prior + hist[p] for p in range(len(t.profiles))]
        total = sum(w) or 1.0
        return [int(S.WEIGHT_SCALE * x / total) for x in w]

    def _mix_moved(self) -> bool:
        limit = self.features.refresh_threshold * S.WEIGHT_SCALE
        for m in range(len(self.tables.models)):
            old = self._applied[m] if m < len(self._applied) else None
            if old is None or max(abs(a - b) for a, b in zip(self._weights(m), old, strict=True)) > limit:
                return True
        return False

    def _refresh(self) -> None:
        """Snapshot the profile mix into integer weights and best candidates per layout."""
        self._since_refresh = 0
        self._fold()
        tb, dyn = self.tables, self.dyn
        self._applied = []
        for m, t in enumerate(tb.models):
            n_p, n_s = len(t.profiles), len(t.slots)
            weights = self._weights(m)
            self._applied.append(weights)
            for p in range(n_p):  # a profile's worth: the compute and memory slices it holds
                dyn.wg[m, p] = weights[p] * (int(tb.profile_compute[m, p]) + t.profiles[p].memory_slices)
            lo, hi = int(tb.offset[m]), int(tb.offset[m]) + t.n_ids
            add = tb.add[lo:hi, :n_s]
            valid = add >= 0
            safe = np.where(valid, add, lo)
            if self.policy == S.FRAGMENTATION_AWARE:  # reference.Kernels._slot_cost, as arrays
                diff = tb.cnt[lo:hi, None, :n_p].astype(np.int64) - tb.cnt[safe, :n_p].astype(np.int64)
                cost = (diff @ dyn.wg[m, :n_p]) * S.TIE + tb.tie[lo:hi, :n_s]
            elif self.policy == S.BEST_FIT:
                cost = (tb.slot_profile[m, :n_s].astype(np.int64) * 32
                        + int(tb.compute_slices[m]) - tb.used_compute[safe].astype(np.int64)
                        + int(tb.memory_slices[m]) - tb.used_memory[safe].astype(np.int64))
            else:
                cost = np.zeros((hi - lo, n_s), np.int64)
            key = cost * 64 + tb.slot_rank[m, :n_s].astype(np.int64)
            shifts = np.arange(n_s, dtype=np.uint32)
            rows = np.arange(hi - lo)
            for c in range(n_p):
                mask = ((tb.cand[lo:hi, c][:, None] >> shifts) & 1).astype(bool) & valid
                best = np.where(mask, key, np.iinfo(np.int64).max).argmin(axis=1)
                has = mask.any(axis=1)
                dyn.bslot[lo:hi, c] = np.where(has, best, -1)
                dyn.bcost[lo:hi, c] = np.where(has, cost[rows, best], S.NO_COST)
        self.state.epoch += 1  # every memoised fit and score used the old costs

    # -- introspection -----------------------------------------------------------------
    def gpu_array_bytes(self) -> int:
        return self.state.gpu_array_bytes()

    def snapshot(self) -> dict[str, dict]:
        """Per GPU uuid: kind, in-use and idle instances or shares (tests, inspect, metrics)."""
        st, tb = self.state, self.tables
        out = {}
        for uuid, row in self._rows.items():
            if st.g_kind[row] == S.MIG:
                m = int(st.g_model[row])
                t = tb.models[m]

                def names(layout: int, t=t) -> list[tuple[str, int]]:
                    s = int(tb.slotset[layout])
                    return [(t.profiles[t.slots[k][0]].name, t.slots[k][1])
                            for k in range(len(t.slots)) if s >> k & 1]

                out[uuid] = {"kind": "mig", "model": t.model.key,
                             "in_use": names(int(st.g_inuse[row])), "idle": names(int(st.g_idle[row]))}
            elif st.g_kind[row] == S.CORE:
                out[uuid] = {"kind": "hami-core", "tasks": int(st.g_slots[row]),
                             "used_mem": int(st.g_used_mem[row]), "used_cores": int(st.g_used_cores[row])}
        return out
