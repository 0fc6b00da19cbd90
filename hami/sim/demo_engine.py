"""`hami demo --engine-only`: the placement engine alone on an embedded default cluster, compared with HAMi.

A deterministic stream of pods (MIG-sized requests, whole GPUs, multi-GPU pods, explicit
`nvidia.com/vgpu-mode`) arrives at a small mixed cluster; each pod is scheduled as
kube-scheduler would with our extender (fits, scores, pick the best node, decide and
reserve), some pods finish and free their instances (kept idle for reuse; HAMi v2.10 destroys
them). The same stream is replayed under HAMi's placements for comparison: with HAMi's memory
rule (a request is matched against NVML's profile sizes and a whole GPU against the card's
memory, so a 10 GB pod gets a 2g and a whole-GPU pod no MIG instance at all), and with ours
(``/nominal``), which isolates placement.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from hami._core import Code, CorePick, Decision, Engine, Features, GpuMode, GpuSpec, MigPick, Reason, describe
from hami.api.requests import ContainerRequest, Mode, Request
from hami.devices import naming
from hami.sim.runner import policy_label

CLUSTER = (
    ("mig-a100-0", "NVIDIA A100-SXM4-80GB", GpuMode.MIG, 81920, 4),
    ("mig-a100-1", "NVIDIA A100-SXM4-80GB", GpuMode.MIG, 81920, 4),
    ("mig-h100-0", "NVIDIA H100 80GB HBM3", GpuMode.MIG, 81559, 4),
    ("core-a10-0", "NVIDIA A10", GpuMode.HAMI_CORE, 23028, 4),
)

# (label, gpumem MiB per device or 0 for a whole GPU, devices, mode, weight)
MIX = (
    ("5 GB", 5000, 1, Mode.ANY, 6),
    ("10 GB", 10240, 1, Mode.ANY, 8),
    ("20 GB", 20000, 1, Mode.ANY, 5),
    ("40 GB", 40000, 1, Mode.MIG, 3),
    ("2 × 10 GB", 10240, 2, Mode.MIG, 2),
    ("whole GPU", 0, 1, Mode.MIG, 1),
    ("8 GB shared", 8000, 1, Mode.HAMI_CORE, 3),
)


@dataclass
class Outcome:
    policy: str
    placed: int = 0
    rejected: int = 0
    too_big: int = 0  # rejections where no MIG profile holds the request under the policy's memory rule
    creates: int = 0
    reuses: int = 0
    destroys: int = 0
    rejections: Counter = field(default_factory=Counter)
    log: list = field(default_factory=list)


def build(policy: str) -> Engine:
    engine_policy, hami_memory = policy_label(policy)
    engine = Engine(policy=engine_policy, features=Features(hami_memory=hami_memory))
    for name, model, mode, memory, n in CLUSTER:
        engine.upsert_node(name, [GpuSpec(f"GPU-{name}-{i}", model, mode, memory, index=i) for i in range(n)])
    return engine


def workload(pods: int, seed: int) -> list[tuple[str, Request, int]]:
    """(label, request, lifetime in arrivals) per pod, deterministic for a seed."""
    rng = random.Random(seed)
    weights = [m[4] for m in MIX]
    out = []
    for _ in range(pods):
        label, mem, count, mode, _w = rng.choices(MIX, weights)[0]
        container = ContainerRequest("main", 0, False, count, mem, 0 if mem else 100)
        out.append((label, Request((container,), mode=mode), rng.randint(30, 120)))
    return out


def run(policy: str, pods: int = 200, seed: int = 7) -> tuple[Outcome, Engine]:
    engine = build(policy)
    names = engine.node_names
    ids = engine.node_ids(names)
    outcome = Outcome(policy)
    eager = policy_label(policy)[0] == "hami-v2.10"
    ends: dict[int, list[str]] = {}
    for t, (label, request, life) in enumerate(workload(pods, seed)):
        for uid in ends.pop(t, []):
            decision = engine.reservation(uid)
            engine.release(uid)
            if eager and decision is not None:  # HAMi v2.10 destroys on pod exit
                for _c, pick in decision.picks():
                    if isinstance(pick, MigPick) and engine.forget_idle(pick.gpu_uuid, pick.profile, pick.start):
                        outcome.destroys += 1
        uid = f"pod-{t}"
        fit, scores = engine.fit_and_score(request, ids)
        ok = np.flatnonzero(fit.codes == Code.SUCCESS)
        if len(ok) == 0:
            outcome.rejected += 1
            reasons = int(np.bitwise_or.reduce(fit.reasons))
            outcome.too_big += bool(reasons & Reason.MIG_PROFILE_TOO_SMALL)
            outcome.rejections[describe(reasons)] += 1
            outcome.log.append((t, label, "—", "rejected: " + describe(reasons)))
            continue
        best = ok[np.argmax(scores[ok])]  # kube-scheduler: highest score, first on ties
        node = names[int(best)]
        decision = engine.decide_and_reserve(uid, request, node)
        assert isinstance(decision, Decision), decision
        outcome.placed += 1
        ends.setdefault(t + life, []).append(uid)
        outcome.log.append((t, label, node, _devices(decision, outcome)))
    return outcome, engine


def _devices(decision: Decision, outcome: Outcome) -> str:
    parts = []
    for _c, pick in decision.picks():
        gpu = pick.gpu_uuid.rsplit("-", 1)[-1]
        if isinstance(pick, MigPick):
            if pick.reuse is not None:
                outcome.reuses += 1
                how = "reuse"
            else:
                outcome.creates += 1
                how = "create"
            outcome.destroys += len(pick.destroy)
            extra = f", destroy {len(pick.destroy)} idle" if pick.destroy else ""
            parts.append(f"GPU {gpu}: {pick.profile}@{pick.start} ({how}{extra})")
        elif isinstance(pick, CorePick):
            parts.append(f"GPU {gpu}: share {pick.memory_mib} MiB")
    return "; ".join(parts)


def header() -> str:
    """The cluster as users name its GPUs: `4×A100-SXM4-80GB mig, …` (catalog keys, not NVML's words)."""
    return ", ".join(f"{n}×{naming.find_model(model).key} {'mig' if mode == GpuMode.MIG else 'hami-core'}"
                     for _, model, mode, _, n in CLUSTER)


def main(pods: int = 200, seed: int = 7, show: int = 25) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(f"[bold]hami demo --engine-only[/]: {pods} pods on an embedded cluster ({header()})")
    ours, engine = run("fragmentation-aware", pods, seed)
    table = Table(title=f"first {show} scheduling decisions (fragmentation-aware)")
    for col in ("#", "request", "node", "devices"):
        table.add_column(col)
    for t, label, node, what in ours.log[:show]:
        table.add_row(str(t), label, node, what)
    console.print(table)

    layout = Table(title="MIG layouts at the end (in use | idle)")
    layout.add_column("GPU")
    layout.add_column("in use")
    layout.add_column("idle")
    for uuid, info in engine.snapshot().items():
        if info["kind"] == "mig":
            fmt = lambda items: " ".join(f"{p}@{s}" for p, s in sorted(items, key=lambda x: x[1]))  # noqa: E731
            layout.add_row(uuid, fmt(info["in_use"]), fmt(info["idle"]))
    console.print(layout)

    summary = Table(title="same pods, same order: our default vs HAMi's placement (v2.10 and legacy)")
    for col in ("policy", "placed", "rejected", "no profile holds it", "instances created", "reused",
                "destroyed"):
        summary.add_column(col)
    others = ("hami-v2.10", "hami-legacy", "hami-v2.10/nominal", "hami-legacy/nominal")
    for outcome in (ours, *(run(p, pods, seed)[0] for p in others)):
        summary.add_row(outcome.policy, str(outcome.placed), str(outcome.rejected), str(outcome.too_big),
                        str(outcome.creates), str(outcome.reuses), str(outcome.destroys))
    summary.caption = ("hami-*: HAMi's memory rule (NVML's profile sizes; a whole GPU is the card's memory, "
                       "more than any profile); /nominal: the same placement on our memory rule")
    console.print(summary)
    return 0
