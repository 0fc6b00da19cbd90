"""Engine-level scheduling for the simulations: a cluster of MIG nodes, kube-scheduler's
choice (best score, ties by a per-seed node order), and the counters every protocol reports.

Demand and allocation are in compute slices under our (nominal) memory rule, whatever the
policy: a request costs the compute slices of the smallest profile whose nominal size holds it
(a whole GPU costs all of them), so every policy is measured against the same demand even when
its own rule gives the pod a larger instance (HAMi's) or none.

Node choice. kube-scheduler calls our extender's ``prioritize``, which maps the engine's 0–100
score onto its 0–10 scale as ``(score * 10 + 50) // 100``; the best of those wins, ties by the
per-seed node order (``node_choice="extender"``, the default). ``"exact"`` compares the 0–100
scores themselves. HAMi's baselines are not affected: HAMi's filter answers with the one node
it chose, by its own score, so kube-scheduler has nothing left to rank.

A policy name may carry ``/nominal`` (``hami-v2.10/nominal``): the HAMi baseline on our
nominal memory rule, so that a comparison isolates placement (``Features.hami_memory``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hami._core import Code, Decision, Engine, Features, GpuMode, GpuSpec, MigPick
from hami._core import state as S
from hami._core.tables import HAMI_POLICIES, POLICIES, build_model_tables
from hami.api.requests import Request
from hami.devices import naming

CAUSES = ("capacity", "fragmentation", "geometry", "memory")
NODE_CHOICES = ("extender", "exact")
NOMINAL = "/nominal"


def policy_label(name: str) -> tuple[str, bool]:
    """(engine policy, HAMi memory rule) of a simulation policy name (module docstring)."""
    if name.endswith(NOMINAL) and name.removesuffix(NOMINAL) in HAMI_POLICIES:
        return name.removesuffix(NOMINAL), False
    if name not in POLICIES:
        variants = ", ".join(p + NOMINAL for p in HAMI_POLICIES)
        raise ValueError(f"unknown policy {name}; choose from {', '.join(POLICIES)}, {variants} or 'all'")
    return name, True


def extender_score(score: np.ndarray) -> np.ndarray:
    """The engine's 0–100 score on kube-scheduler's 0–10 extender scale, rounded to nearest."""
    return (score * 10 + 50) // 100


@dataclass
class Counters:
    placed: int = 0
    rejected: int = 0
    creates: int = 0
    reuses: int = 0
    destroys: int = 0
    geometry_changes: int = 0  # decisions that re-cut a GPU (destroy idle instances first)
    moves: int = 0  # running instances destroyed or moved: must stay 0
    causes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CAUSES, 0))


class Cluster:
    """An engine over ``nodes`` MIG nodes of one model, with the simulator's bookkeeping."""

    def __init__(self, policy: str, gpus_per_node: list[int], model: str, seed: int,
                 node_choice: str = "extender") -> None:
        self.model = naming.find_model(model)
        if not self.model.mig_capable:
            raise ValueError(f"{model} is not MIG-capable; choose a MIG model for the simulation")
        if node_choice not in NODE_CHOICES:
            raise ValueError(f"unknown node choice {node_choice!r}; choose one of {', '.join(NODE_CHOICES)}")
        self.policy = policy
        engine_policy, hami_memory = policy_label(policy)
        self.engine = Engine(policy=engine_policy, features=Features(hami_memory=hami_memory))
        self.rounded = node_choice == "extender" and engine_policy not in HAMI_POLICIES
        memory = self.model.memory_mib
        self.names = [f"node-{n:05d}" for n in range(len(gpus_per_node))]
        self.gpus = {f"node-{n:05d}": [f"GPU-{n:05d}-{i}" for i in range(count)]
                     for n, count in enumerate(gpus_per_node)}
        order = np.random.default_rng(seed).permutation(len(self.names))
        self.order_names = [self.names[i] for i in order]  # tie-break order (FGD permutes names)
        for n in order:  # registered in that order too: the engine breaks ties by node id
            self.engine.upsert_node(
                self.names[n],
                [GpuSpec(f"GPU-{n:05d}-{i}", self.model.nvml_name, GpuMode.MIG, memory, index=i)
                 for i in range(gpus_per_node[n])],
            )
        self.ids = self.engine.node_ids(self.order_names)
        self.tables = self.engine.tables.models[self.engine.tables.model_id(self.model.key)]  # the policy's rule
        self.demand = build_model_tables(self.model, None)  # the nominal rule: demand for every policy
        self.slices_per_gpu = self.model.mig.compute_slices
        self.capacity = self.slices_per_gpu * sum(gpus_per_node)
        self.allocated = 0
        self.counters = Counters()
        self.active: dict[str, int] = {}  # pod -> slices held
        self.in_use: dict[tuple[str, str, int], str] = {}  # (gpu, profile, start) -> pod
        if policy == "static":
            self._precreate_static()

    # -- demand ----------------------------------------------------------------------------
    @property
    def gpu_memory(self) -> int:
        """The memory a share is of: the largest profile's nominal size (80 GB → 81920)."""
        return max(self.demand.nominal)

    def slices(self, request: Request) -> int:
        """The request's demand in compute slices, under the nominal rule (module docstring)."""
        total = 0
        for c in request.containers:
            if c.count == 0:
                continue
            cls = self.demand.class_of(c.memory_mib, c.memory_percent)
            if cls >= len(self.demand.profiles):
                return 0
            total += c.count * self.demand.profiles[cls].compute_slices
        return total

    # -- scheduling -------------------------------------------------------------------------
    def schedule(self, uid: str, request: Request) -> bool:
        fit, scores = self.engine.fit_and_score(request, self.ids)
        ok = fit.codes == Code.SUCCESS
        if not ok.any():
            self.counters.rejected += 1
            self.counters.causes[self.cause(request)] += 1
            return False
        if self.rounded:
            scores = extender_score(scores)
        masked = np.where(ok, scores, -1)
        node = self.order_names[int(np.argmax(masked))]
        decision = self.engine.decide_and_reserve(uid, request, node)
        assert isinstance(decision, Decision), decision
        self._count(uid, decision)
        slices = self.slices(request)
        self.active[uid] = slices
        self.allocated += slices
        self.counters.placed += 1
        return True

    def _count(self, uid: str, decision: Decision) -> None:
        c = self.counters
        changed = False
        for _i, pick in decision.picks():
            assert isinstance(pick, MigPick)
            for gone in pick.destroy:
                c.destroys += 1
                changed = True
                if (gone.gpu_uuid, gone.profile, gone.start) in self.in_use:
                    c.moves += 1
            if pick.reuse is not None:
                c.reuses += 1
            else:
                c.creates += 1
            self.in_use[(pick.gpu_uuid, pick.profile, pick.start)] = uid
        if changed:
            c.geometry_changes += 1

    def finish(self, uid: str, destroy_idle: bool = False) -> None:
        """The pod ends; its instances go idle (or are destroyed at once: HAMi v2.10)."""
        decision = self.engine.reservation(uid)
        self.engine.release(uid)
        self.allocated -= self.active.pop(uid, 0)
        if decision is None:
            return
        for _i, pick in decision.picks():
            self.in_use.pop((pick.gpu_uuid, pick.profile, pick.start), None)
            if destroy_idle and self.engine.forget_idle(pick.gpu_uuid, pick.profile, pick.start):
                self.counters.destroys += 1

    def cause(self, request: Request) -> str:
        """Why nothing fits: memory (the policy's memory rule admits no profile: HAMi's, for
        requests at or above the largest profile's NVML size), capacity (too few free slices in
        the cluster), geometry (a free legal placement exists but the policy's geometry rules
        forbid it), fragmentation (enough free slices, no legal placement)."""
        st, tb = self.engine.state, self.engine.tables
        t = self.tables
        classes = [t.class_of(c.memory_mib, c.memory_percent) for c in request.containers if c.count > 0]
        if classes and max(classes) >= len(t.profiles):
            return "memory"
        rows = np.flatnonzero(st.g_kind[: st.rows] == S.MIG)
        inuse = st.g_inuse[rows]
        free = int(self.slices_per_gpu * len(rows) - tb.used_compute[inuse].astype(np.int64).sum())
        need = self.slices(request)
        if need == 0 or free < need:
            return "capacity"
        cls = min(classes)
        count = max(c.count for c in request.containers)
        n_s = len(t.slots)
        acceptable = np.array([t.slots[k][0] >= cls for k in range(n_s)])
        legal = (tb.add[inuse, :n_s] >= 0) & acceptable
        fits_gpu = legal.any(axis=1)
        node_of = st.g_node[rows]
        per_node = np.bincount(node_of[fits_gpu], minlength=st.nodes)
        return "geometry" if (per_node >= count).any() else "fragmentation"

    def _precreate_static(self) -> None:
        """mig-parted's all-balanced layout exists (idle) on every GPU before any pod."""
        from hami.api.codecs import Placement, RealisedInstance

        t = self.tables
        reals = t.realisations[0] if t.realisations else []
        slotset = reals[0] if reals else 0
        layout = [(t.profiles[t.slots[k][0]], t.slots[k][1]) for k in range(len(t.slots)) if slotset >> k & 1]
        for name in self.names:
            instances = [RealisedInstance.expected(gpu, p.name, Placement(s, p.memory_slices))
                         for gpu in self.gpus[name] for p, s in layout]
            self.engine.set_realised(name, instances)
