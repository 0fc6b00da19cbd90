"""From the API's Nodes and Pods to a plain model of every GPU (`ClusterView`).

The objects are folded into a fresh engine through the scheduler's own cache
(`hami.scheduler.cache.ClusterCache`): the same decoding, the same rules for stale agents, ended
pods and binds in flight, so what the view calls in use or free is what the scheduler would. Free
slices and the profiles that still fit are lookups in the engine's layout tables (`occupied`,
`cand`, `cnt`), never a second geometry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hami._core import CorePick, Engine, Features, MigPick
from hami.api import codecs, names
from hami.api.errors import AnnotationError
from hami.devices import naming
from hami.devices.config import NvidiaConfig, default_device_config
from hami.devices.errors import UnknownModelError
from hami.k8s import Kube
from hami.scheduler import annotations as A
from hami.scheduler.cache import ClusterCache

CACHE_LOGGER = "hami.scheduler.cache"  # where the fold reports what it could not use

MODE_MIG = "mig"
MODE_HAMI_CORE = "hami-core"
MODE_LESS = "mode-less"  # registered without a mode (HAMi v2.8+ JSON without `mode`): scheduled as hami-core


@dataclass(frozen=True)
class Instance:
    """A MIG instance on a GPU: realised (`in-use` / `idle`) or only `reserved` by a bind whose
    Allocate has not created it yet."""

    profile: str
    start: int
    size: int
    state: str  # "in-use" | "idle" | "reserved"
    pod: str | None = None  # "<namespace>/<name>" for in-use and reserved
    pod_phase: str | None = None  # the pod's phase or Terminating; None when no such pod exists (any more)
    since: datetime | None = None  # idle since
    mig_uuid: str | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


@dataclass(frozen=True)
class Fit:
    """How many more instances of `profile` fit (inside an allowed geometry), and where the next
    one may start: each start `free`, `reuse` (an idle instance already there) or `reclaim`
    (idle instances in the way are destroyed first)."""

    profile: str
    more: int
    starts: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Share:
    """A hami-core share of a GPU held by one pod's container."""

    pod: str
    container: int
    memory_mib: int
    cores: int


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    type: str  # as registered (NVML's name)
    model: str  # as people know it (the catalog key), else the registered type
    mode: str  # mig | hami-core | mode-less | anything else registered (verbatim)
    healthy: bool
    cordoned: bool
    memory_mib: int
    cores: int
    split_count: int
    scheduled: bool  # the scheduler registers it (False: see the node's problems)
    # MIG
    memory_slices: int = 0
    slices: str = ""  # one character per memory slice: # in use, r reserved, ~ idle, . free
    free_slices: tuple[int, ...] = ()
    instances: tuple[Instance, ...] = ()
    fits: tuple[Fit, ...] = ()
    # hami-core
    shares: tuple[Share, ...] = ()
    used_memory_mib: int = 0
    used_cores: int = 0
    tasks: int = 0


@dataclass(frozen=True)
class Node:
    name: str
    gpus: tuple[Gpu, ...]
    handshake_age_s: float | None  # seconds since the agent last reported; None: no handshake of ours
    stale: bool  # the scheduler treats its GPUs as unhealthy until the agent reports again
    lock: str | None = None  # "<namespace>/<pod> since <time>" while a bind holds the node
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterView:
    server: str
    taken_at: datetime
    policy: str
    nodes: tuple[Node, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)


# -- the fold ----------------------------------------------------------------------------------------


class _Collector(logging.Handler):
    """The cache's warnings raised by this thread's fold (another thread's are not ours)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.records.append(record)


@contextmanager
def _collecting() -> Iterator[_Collector]:
    logger = logging.getLogger(CACHE_LOGGER)
    collector = _Collector()
    logger.addHandler(collector)
    try:
        yield collector
    finally:
        logger.removeHandler(collector)


def build_view(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    server: str = "",
    config: NvidiaConfig | None = None,
    policy: str = "fragmentation-aware",
    handshake_timeout_s: float = 90.0,
    now: datetime | None = None,
) -> ClusterView:
    """The view of `nodes` (Node objects as dicts) with `pods` (all the cluster's, or those bound
    or binding to these nodes). Pure: no I/O."""
    now = now or datetime.now(UTC)
    nvidia = config if config is not None else default_device_config().nvidia
    engine = Engine(nvidia, policy, Features())
    cache = ClusterCache(engine, handshake_timeout_s=handshake_timeout_s, clock=now.timestamp)
    nodes = sorted(nodes, key=lambda n: (n.get("metadata") or {}).get("name", ""))
    names_ = {(n.get("metadata") or {}).get("name") for n in nodes}
    pods = [p for p in pods if _pod_node(p) in names_]
    with _collecting() as collector:
        for node in nodes:
            cache.node_event("added", dict(node))
        cache.nodes_synced.set()
        for pod in pods:
            cache.pod_event("added", dict(pod))
        cache.pods_synced.set()
    problems = _problems_by_node(collector.records, pods)

    phases = {_key(p): _phase(p) for p in pods}
    reserved: dict[tuple[str, str, int], str] = {}  # (gpu, profile, start) -> pod
    shares: dict[str, list[Share]] = {}
    for pod in pods:
        record = cache.pod((pod.get("metadata") or {}).get("uid", ""))
        if record is None or not record.holds:
            continue
        decision = engine.reservation(record.uid)
        if decision is None:
            continue
        for container, pick in decision.picks():
            if isinstance(pick, MigPick):
                reserved[(pick.gpu_uuid, pick.profile, pick.start)] = _key(pod)
            elif isinstance(pick, CorePick):
                shares.setdefault(pick.gpu_uuid, []).append(
                    Share(_key(pod), container, pick.memory_mib, pick.cores))

    snapshot = engine.snapshot()
    inventory = {name: (devices, realised) for name, devices, realised in cache.inventory()}
    out = []
    for node in nodes:
        name = node["metadata"]["name"]
        out.append(_node(engine, node, inventory, snapshot, reserved, shares, phases, now, handshake_timeout_s,
                         problems.get(name, [])))
    return ClusterView(server, now, policy, tuple(out), tuple(problems.get("", ())))


def _key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _phase(pod: Mapping[str, Any]) -> str:
    """The pod's phase, or `Terminating` once it is being deleted (as kubectl prints it)."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    return (pod.get("status") or {}).get("phase") or "Pending"


def _pod_node(pod: Mapping[str, Any]) -> str | None:
    """The node a pod runs on or is being bound to."""
    node = (pod.get("spec") or {}).get("nodeName")
    return node or ((pod.get("metadata") or {}).get("annotations") or {}).get(names.VGPU_NODE)


def _problems_by_node(records: list[logging.LogRecord], pods: list[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The cache's warnings as lines for people, filed under the node they concern ("" when none)."""
    node_of_pod = {_key(p): _pod_node(p) or "" for p in pods}
    out: dict[str, list[str]] = {}
    for record in records:
        message = record.getMessage()
        head = message.split(" ", 1)[0]
        node = ""
        if head.startswith("node="):
            node = head[len("node="):]
            message = message[len(head):].lstrip(" :")  # printed under that node already
        elif head.startswith("pod="):
            node = node_of_pod.get(head[len("pod="):], "")
        out.setdefault(node, []).append(message)
    return out


# -- one node ----------------------------------------------------------------------------------------


def _node(engine: Engine, obj: Mapping[str, Any], inventory, snapshot: dict[str, dict], reserved, shares, phases,
          now: datetime, handshake_timeout_s: float, problems: list[str]) -> Node:
    meta = obj.get("metadata") or {}
    ann: Mapping[str, str] = meta.get("annotations") or {}
    name = meta.get("name", "")
    devices, realised = inventory.get(name, ((), ()))
    if not devices and ann.get(names.NODE_REGISTER):  # decoded, but the scheduler could not use them
        with suppress(AnnotationError):
            devices = codecs.decode_node_register(ann[names.NODE_REGISTER])
    cordoned = codecs.decode_device_cordon(ann.get(names.DEVICE_CORDON) or "")
    age = A.handshake_age(ann.get(names.NODE_HANDSHAKE), now)
    lock = None
    if ann.get(names.NODE_LOCK):
        try:
            held = codecs.decode_node_lock(ann[names.NODE_LOCK])
            lock = f"{held.owner or 'a HAMi scheduler'} since {held.time.isoformat()}"
        except AnnotationError as err:
            problems = [*problems, str(err)]
    if not devices and not ann.get(names.NODE_REGISTER):
        problems = [*problems, "no GPUs registered (no hami.io/node-nvidia-register: is the node agent running?)"]
    gpus = tuple(_gpu(engine, d, snapshot.get(d.id), [i for i in realised if i.gpu_uuid == d.id], reserved,
                      shares.get(d.id, []), phases, d.id in cordoned) for d in devices)
    stale = age is not None and age > handshake_timeout_s
    return Node(name, gpus, age, stale, lock, tuple(problems))


def _model_name(gpu_type: str) -> str:
    try:
        return naming.find_model(gpu_type).key
    except UnknownModelError:
        return gpu_type.removeprefix("NVIDIA ").removeprefix("NVIDIA-")


def _mode(device: codecs.NodeDevice) -> str:
    return device.mode or MODE_LESS


def _gpu(engine: Engine, device: codecs.NodeDevice, snap: dict | None, realised: list[codecs.RealisedInstance],
         reserved: Mapping[tuple[str, str, int], str], shares: list[Share], phases: Mapping[str, str],
         cordoned: bool) -> Gpu:
    base = dict(index=device.index, uuid=device.id, type=device.type, model=_model_name(device.type),
                mode=_mode(device), healthy=device.health, cordoned=cordoned, memory_mib=device.devmem,
                cores=device.devcore, split_count=device.count, scheduled=snap is not None)
    if snap is None:
        instances = tuple(_realised(i, phases) for i in realised)
        return Gpu(**base, instances=instances, shares=tuple(shares))
    if snap["kind"] == MODE_HAMI_CORE:
        return Gpu(**base, shares=tuple(shares), used_memory_mib=snap["used_mem"], used_cores=snap["used_cores"],
                   tasks=snap["tasks"])
    return Gpu(**base, **_mig(engine, device.id, snap, realised, reserved, phases))


def _realised(inst: codecs.RealisedInstance, phases: Mapping[str, str]) -> Instance:
    in_use = inst.state is codecs.InstanceState.IN_USE
    return Instance(inst.profile, inst.placement.start, inst.placement.size, inst.state.value,
                    inst.pod, phases.get(inst.pod or "") if in_use else None, inst.since, inst.mig_uuid,
                    inst.gpu_instance_id, inst.compute_instance_id)


def _mig(engine: Engine, uuid: str, snap: dict, realised: list[codecs.RealisedInstance],
         reserved: Mapping[tuple[str, str, int], str], phases: Mapping[str, str]) -> dict[str, Any]:
    """Instances, slice map, free slices and fits of one MIG GPU, from the engine's tables."""
    tb = engine.tables
    m = tb.model_id(snap["model"])
    t = tb.models[m]
    in_use = sum(1 << t.slot_of(p, s) for p, s in snap["in_use"])
    idle = sum(1 << t.slot_of(p, s) for p, s in snap["idle"])
    layout = tb.layout_id(m, in_use)
    busy_mask = int(tb.occupied[layout])
    idle_mask = int(tb.occupied[tb.layout_id(m, idle)])
    n_slices = t.model.mig.memory_slices

    instances = [_realised(i, phases) for i in realised]
    shown = {(t.slot_of(i.profile, i.placement.start)) for i in realised if _known_slot(t, i)}
    reserved_mask = 0
    for k in range(len(t.slots)):
        if in_use >> k & 1 and k not in shown:  # decided and held, not created yet
            p, start = t.slots[k]
            prof = t.profiles[p]
            pod = next((pod for (g, name, s), pod in reserved.items()
                        if g == uuid and s == start and _same_slot(t, name, s, k)), None)
            instances.append(Instance(prof.name, start, prof.memory_slices, "reserved", pod,
                                      phases.get(pod or "")))
            reserved_mask |= t.slot_mask[k]
    instances.sort(key=lambda i: (i.start, i.size))

    chars = []
    for s in range(n_slices):
        bit = 1 << s
        chars.append("r" if reserved_mask & bit else "#" if busy_mask & bit else "~" if idle_mask & bit else ".")
    free = tuple(s for s in range(n_slices) if not (busy_mask | idle_mask) >> s & 1)

    fits = []
    for p, prof in enumerate(t.profiles):
        mine = sum(1 << k for k, (q, _s) in enumerate(t.slots) if q == p)
        allowed = int(tb.cand[layout, p]) & mine
        starts = []
        for k in range(len(t.slots)):
            if allowed >> k & 1:
                how = "reuse" if idle >> k & 1 else "reclaim" if idle_mask & t.slot_mask[k] else "free"
                starts.append((t.slots[k][1], how))
        more = int(tb.cnt[layout, p])
        if starts and more > 0:
            fits.append(Fit(prof.name, more, tuple(starts)))
    return dict(memory_slices=n_slices, slices="".join(chars), free_slices=free, instances=tuple(instances),
                fits=tuple(fits))


def _known_slot(t, inst: codecs.RealisedInstance) -> bool:
    try:
        t.slot_of(inst.profile, inst.placement.start)
    except (KeyError, LookupError, ValueError):
        return False
    return True


def _same_slot(t, profile: str, start: int, k: int) -> bool:
    try:
        return t.slot_of(profile, start) == k
    except (KeyError, LookupError, ValueError):
        return False


# -- from the API server -----------------------------------------------------------------------------


class UnknownNode(LookupError):
    """`--node` names a node the cluster does not have."""


def collect(kube: Kube, *, only: Iterable[str] = (), config: NvidiaConfig | None = None,
            policy: str = "fragmentation-aware", handshake_timeout_s: float = 90.0) -> ClusterView:
    """List the cluster's nodes (those named in `only`, else all) and pods, and build the view.
    Raises `hami.k8s.KubeError` when the API server does not answer or refuses, `UnknownNode`."""
    wanted = list(dict.fromkeys(only))
    nodes = kube.list("nodes")
    if wanted:
        have = {(n.get("metadata") or {}).get("name") for n in nodes}
        missing = [n for n in wanted if n not in have]
        if missing:
            known = ", ".join(sorted(h for h in have if h)[:10]) or "none"
            raise UnknownNode(f"no node named {', '.join(missing)} (nodes: {known})")
        nodes = [n for n in nodes if n["metadata"]["name"] in wanted]
    pods = kube.list("pods")
    return build_view(nodes, pods, server=kube.api_client.configuration.host, config=config, policy=policy,
                      handshake_timeout_s=handshake_timeout_s)
