"""Hollow nodes: many simulated GPU nodes behind one light agent, as kubemark's hollow nodes are for
Kubernetes — no kubelet, no device-plugin process, no simulated-NVML state file per node.

One `HollowFleet` registers every node and plays, for all of them, the part the kubelet and our
node agent play on a real node:

- **registration** (real code): each GPU is described as `hami.deviceplugin.inventory` would read
  it from NVML (identity, memory, MIG mode, every profile with its legal placements — taken from
  the `hami.devices` catalog, which is also what the simulated NVML serves), then planned and
  encoded by the agent's own `register.plan` / `register.node_devices` and the `hami.api` codecs
  into `hami.io/node-nvidia-register`; the handshake is refreshed every `handshake_every` seconds,
  spread over the fleet.
- **Allocate** (simulated, same contract): for a pod bound to one of its nodes with
  bind-phase `allocating`, every container's decision is read with the real codecs
  (`hami.io/vgpu-devices-to-allocate`, `hami.io/vgpu-mig-allocations`) and realised on an
  in-memory model of the node's GPUs that enforces what NVML enforces: a MIG instance only at a
  legal placement of its profile, never over an instance in use, within the GPU's compute slices;
  idle instances in the way destroyed, an idle one at the exact placement reused (as
  `hami.deviceplugin.allocate` does; the MIG manager itself and NVML calls are not run). A
  hami-core share is checked against the GPU's memory, split count and cores. Then, as the agent
  does: the runtime ids recorded, the entries erased, bind-phase `success`, the node lock
  released, `hami.io/node-mig-instances` republished (`register.realised`, the agent's encoder) —
  the lock release and the republish in one node write. A decision the model refuses (a stale or
  over-committed one) fails the pod as kubelet does (`UnexpectedAdmissionError`, bind-phase
  failed, lock released) and is counted in `violations`.
- **pod lifecycle**: an allocated pod goes Running; `finish()` ends it (Succeeded: its instances
  become idle, kept for reuse as the agent with `--idle-destroy-after 0` keeps them; its shares
  freed) and deletes it; a pod deleted by someone else is confirmed (grace 0) the same way.

Writes go to the in-process API server's store directly (no HTTP), one worker thread drives all
nodes, so 1,250 nodes x 8 GPUs cost a few hundred MB and a fraction of a core.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from hami.api import AnnotationError, names
from hami.api.codecs import (
    Handshake,
    MigAllocation,
    decode_mig_allocations,
    decode_node_lock,
    decode_pod_devices,
    encode_handshake,
    encode_mig_allocations,
    encode_node_mig_instances,
    encode_node_register,
    encode_pod_devices,
    next_pending_container,
)
from hami.deviceplugin import pods as podlib
from hami.deviceplugin.allocate import same_profile
from hami.deviceplugin.config import NodeConfig, defaults_from
from hami.deviceplugin.inventory import Gpu, Profile
from hami.deviceplugin.register import node_devices, plan, realised, replicas
from hami.devices import NvidiaConfig
from hami.devices.models import GpuModel, MigProfile
from hami.mig import MigInstance
from hami.sim.apiserver import errors
from hami.sim.apiserver.store import Store
from hami.sim.apiserver.watch import Watcher
from hami.sim.cluster import NodeSpec

log = logging.getLogger(__name__)

HOLLOW_LABEL = "hami.io/hollow-node"
_UUIDS = uuidlib.UUID("5f3c1d2e-9b7a-4c41-8e0f-6a2b9d7c3e15")
MERGE = "application/merge-patch+json"


def _now() -> datetime:
    return datetime.now(UTC)


class AllocateRefused(Exception):
    """The node model refuses a decision (what NVML or the agent would refuse)."""


# ----------------------------------------------------------------------------------------------
# one GPU, one node


@dataclass
class HollowGpu:
    """One GPU: its realised MIG instances (by GPU-instance id) or its hami-core shares."""

    index: int
    uuid: str
    model: GpuModel
    mode: str  # names.MODE_MIG | names.MODE_HAMI_CORE
    instances: dict[int, MigInstance] = field(default_factory=dict)
    shares: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # pod key -> (MiB, cores) each

    def gpu(self) -> Gpu:
        """What `Inventory.read()` reports for this GPU over NVML (the catalog is what NVML serves)."""
        mig = self.model.mig
        enabled = self.mode == names.MODE_MIG and mig is not None
        profiles = tuple(sorted(
            (Profile(p.name, p.profile_id, p.compute_slices, p.memory_slices, p.memory_mib, p.instance_cap,
                     tuple(p.placements), p.attributes) for p in mig.profiles),
            key=lambda p: (p.compute_slices, p.memory_slices, p.profile_id))) if enabled and mig else ()
        return Gpu(self.index, self.uuid, self.model.nvml_name, self.model.memory_mib, "", 0,
                   mig is not None, enabled, enabled, profiles)

    def profile(self, name: str, size: int) -> MigProfile | None:
        """The GPU's profile a reservation names (drivers spell memory differently: 3g.39gb / 3g.40gb)."""
        assert self.model.mig is not None
        return next((p for p in self.model.mig.profiles
                     if p.memory_slices == size and same_profile(p.name, name)), None)


class HollowNode:
    """One node's GPUs and agent memory (who uses which instance, idle since when)."""

    def __init__(self, spec: NodeSpec, index: int, split_count: int = 10) -> None:
        self.spec = spec
        self.index = index
        self.gpus = [HollowGpu(i, "GPU-" + str(uuidlib.uuid5(_UUIDS, f"{spec.name}/{i}")), spec.model, spec.mode)
                     for i in range(spec.gpus)]
        self.by_uuid = {g.uuid: g for g in self.gpus}
        self.config: NodeConfig = replace(defaults_from(NvidiaConfig(), spec.name), operating_mode=spec.mode,
                                          device_split_count=split_count)
        self.owners: dict[str, str] = {}  # MIG uuid -> pod key
        self.owner_uids: dict[str, str] = {}
        self.idle_since: dict[str, datetime] = {}
        self.published = ""  # the last hami.io/node-mig-instances written
        self._serial = 0

    @property
    def name(self) -> str:
        return self.spec.name

    # -- registration

    def plans(self):
        return plan([g.gpu() for g in self.gpus], self.config, ())

    def register_annotation(self) -> str:
        return encode_node_register(node_devices(self.plans(), self.config))

    def instances_annotation(self) -> str:
        every = [i for g in self.gpus for i in g.instances.values()]
        return encode_node_mig_instances(realised(every, self.owners, self.idle_since, self.owner_uids))

    def node_object(self, now: datetime) -> dict[str, Any]:
        """The Node as kubelet registers it, with the agent's annotations already written."""
        devices = str(sum(replicas(p, self.config) for p in self.plans()))
        resources = {"cpu": "128", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": devices}
        self.published = self.instances_annotation()
        ip = f"10.{self.index // 62500 % 250}.{self.index // 250 % 250}.{self.index % 250 + 1}"
        return {"metadata": {"name": self.name,
                             "labels": {**self.spec.labels(), "kubernetes.io/hostname": self.name,
                                        "kubernetes.io/os": "linux", HOLLOW_LABEL: "true"},
                             "annotations": {names.NODE_REGISTER: self.register_annotation(),
                                             names.NODE_HANDSHAKE: encode_handshake(Handshake.reported(now)),
                                             names.NODE_MIG_INSTANCES: self.published}},
                "status": {"capacity": dict(resources), "allocatable": dict(resources),
                           "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                           "message": "hollow node"}],
                           "addresses": [{"type": "InternalIP", "address": ip},
                                         {"type": "Hostname", "address": self.name}]}}

    # -- Allocate

    def allocate(self, pod: dict[str, Any], now: datetime) -> dict[str, str]:
        """Realise every pending container of the pod; the annotations to write. Raises
        AllocateRefused (nothing changed) when the model refuses a decision."""
        key, uid = podlib.key(pod), (pod.get("metadata") or {}).get("uid", "")
        ann = podlib.annotations(pod)
        try:
            devices = decode_pod_devices(ann.get(names.VGPU_DEVICES_TO_ALLOCATE, ""), names.VGPU_DEVICES_TO_ALLOCATE)
            reservations = decode_mig_allocations(ann.get(names.VGPU_MIG_ALLOCATIONS, ""))
        except AnnotationError as exc:
            raise AllocateRefused(f"unreadable decision: {exc}") from exc
        by_slot = {(a.container_index, a.device_index): a for a in reservations}
        undo: list[tuple[str, Any]] = []
        runtime: dict[tuple[int, int], MigInstance] = {}
        try:
            for ci, entry in enumerate(devices):
                for di, device in enumerate(entry):
                    gpu = self.by_uuid.get(device.uuid)
                    if gpu is None:
                        raise AllocateRefused(f"container {ci}: GPU {device.uuid} is not on node {self.name}")
                    reservation = by_slot.get((ci, di))
                    if reservation is not None:
                        runtime[(ci, di)] = self._realise(gpu, reservation, key, uid, now, undo)
                    else:
                        self._share(gpu, device.memory_mib, device.cores, key, undo)
        except AllocateRefused:
            self._undo(undo)
            raise
        updated = [a.with_runtime(runtime[(a.container_index, a.device_index)].mig_uuid or "",
                                  runtime[(a.container_index, a.device_index)].gpu_instance_id,
                                  runtime[(a.container_index, a.device_index)].compute_instance_id or 0)
                   if (a.container_index, a.device_index) in runtime else a for a in reservations]
        out = {names.VGPU_DEVICES_TO_ALLOCATE: encode_pod_devices([() for _ in devices]),
               names.BIND_PHASE: names.BIND_PHASE_SUCCESS}
        if reservations:
            out[names.VGPU_MIG_ALLOCATIONS] = encode_mig_allocations(updated)
        return out

    def _realise(self, gpu: HollowGpu, a: MigAllocation, key: str, uid: str, now: datetime,
                 undo: list[tuple[str, Any]]) -> MigInstance:
        if gpu.mode != names.MODE_MIG or gpu.model.mig is None:
            raise AllocateRefused(f"GPU {gpu.uuid} is not in MIG mode; cannot create {a.profile}")
        start, size = a.placement.start, a.placement.size
        prof = gpu.profile(a.profile, size)
        if prof is None:
            raise AllocateRefused(f"GPU {gpu.uuid} ({gpu.model.key}) has no profile {a.profile} of {size} slices")
        if start not in prof.placements:
            raise AllocateRefused(f"{a.profile} cannot start at memory slice {start} on {gpu.model.key} "
                                  f"(legal: {list(prof.placements)})")
        reuse: MigInstance | None = None
        doomed: list[MigInstance] = []
        for inst in gpu.instances.values():
            if not (inst.placement < start + size and start < inst.placement + inst.size):
                continue
            owner = self.owners.get(inst.mig_uuid or "")
            if owner is not None and owner != key:
                raise AllocateRefused(f"the decided {a.profile} at placement {start} on GPU {gpu.uuid} overlaps "
                                      f"{inst.describe()}, which pod {owner} uses")
            if owner is None and reuse is None and inst.placement == start and inst.size == size \
                    and inst.profile_id == prof.profile_id:
                reuse = inst
            elif owner is None:
                doomed.append(inst)
        for inst in doomed:
            self._destroy(gpu, inst, undo)
        if reuse is None:
            slices = {p.profile_id: p.compute_slices for p in gpu.model.mig.profiles}
            used = sum(slices.get(i.profile_id, 0) for i in gpu.instances.values())
            if used + prof.compute_slices > gpu.model.mig.compute_slices:
                raise AllocateRefused(f"GPU {gpu.uuid}: {a.profile} needs {prof.compute_slices} compute slices, "
                                      f"{gpu.model.mig.compute_slices - used} are free")
            if sum(1 for i in gpu.instances.values() if i.profile_id == prof.profile_id) >= prof.instance_cap:
                raise AllocateRefused(f"GPU {gpu.uuid}: at most {prof.instance_cap} {prof.name} instances")
            gi = next(n for n in range(1, 64) if n not in gpu.instances)
            self._serial += 1
            mig_uuid = "MIG-" + str(uuidlib.uuid5(_UUIDS, f"{gpu.uuid}/{gi}/{self._serial}"))
            reuse = MigInstance(gpu.uuid, gpu.index, prof.name, prof.profile_id, start, size, gi, 0, mig_uuid)
            gpu.instances[gi] = reuse
            undo.append(("created", (gpu, reuse)))
        assert reuse.mig_uuid is not None
        undo.append(("owned", (reuse.mig_uuid, self.idle_since.get(reuse.mig_uuid))))
        self.owners[reuse.mig_uuid] = key
        self.owner_uids[reuse.mig_uuid] = uid
        self.idle_since.pop(reuse.mig_uuid, None)
        return reuse

    def _destroy(self, gpu: HollowGpu, inst: MigInstance, undo: list[tuple[str, Any]]) -> None:
        gpu.instances.pop(inst.gpu_instance_id, None)
        since = self.idle_since.pop(inst.mig_uuid or "", None)
        undo.append(("destroyed", (gpu, inst, since)))

    def _share(self, gpu: HollowGpu, memory: int, cores: int, key: str, undo: list[tuple[str, Any]]) -> None:
        if gpu.mode != names.MODE_HAMI_CORE:
            raise AllocateRefused(f"GPU {gpu.uuid} is in MIG mode; a hami-core share needs a MIG reservation")
        shares = [s for held in gpu.shares.values() for s in held]
        devmem = int(gpu.model.memory_mib * self.config.device_memory_scaling)
        if sum(m for m, _ in shares) + memory > devmem:
            raise AllocateRefused(f"GPU {gpu.uuid}: {memory} MiB asked, "
                                  f"{devmem - sum(m for m, _ in shares)} of {devmem} MiB free")
        if len(shares) + 1 > self.config.device_split_count:
            raise AllocateRefused(f"GPU {gpu.uuid}: already shared by {len(shares)} containers (split count "
                                  f"{self.config.device_split_count})")
        if sum(c for _, c in shares) + cores > 100:
            raise AllocateRefused(f"GPU {gpu.uuid}: {cores} % cores asked, {100 - sum(c for _, c in shares)} % free")
        gpu.shares.setdefault(key, []).append((memory, cores))
        undo.append(("shared", (gpu, key)))

    def _undo(self, undo: list[tuple[str, Any]]) -> None:
        for what, data in reversed(undo):
            if what == "created":
                gpu, inst = data
                gpu.instances.pop(inst.gpu_instance_id, None)
            elif what == "destroyed":
                gpu, inst, since = data
                gpu.instances[inst.gpu_instance_id] = inst
                if since is not None:
                    self.idle_since[inst.mig_uuid] = since
            elif what == "owned":
                mig_uuid, since = data
                self.owners.pop(mig_uuid, None)
                self.owner_uids.pop(mig_uuid, None)
                if since is not None:
                    self.idle_since[mig_uuid] = since
            elif what == "shared":
                gpu, key = data
                held = gpu.shares.get(key)
                if held:
                    held.pop()
                    if not held:
                        del gpu.shares[key]

    def release(self, key: str, now: datetime) -> bool:
        """The pod's containers are gone: its instances turn idle, its shares are freed; True if it held any."""
        held = False
        for mig_uuid in [u for u, owner in self.owners.items() if owner == key]:
            del self.owners[mig_uuid]
            self.owner_uids.pop(mig_uuid, None)
            self.idle_since[mig_uuid] = now
            held = True
        for gpu in self.gpus:
            held |= gpu.shares.pop(key, None) is not None
        return held

    # -- the truth, for invariant checks

    def check(self) -> list[str]:
        """What must hold on the node whatever the scheduler did: no overlapping instances, compute
        slices within the GPU, hami-core memory / split count / cores within the GPU."""
        problems = []
        for gpu in self.gpus:
            if gpu.mode == names.MODE_MIG and gpu.model.mig is not None:
                used = [0] * gpu.model.mig.memory_slices
                for inst in gpu.instances.values():
                    for s in range(inst.placement, inst.placement + inst.size):
                        used[s] += 1
                if max(used, default=0) > 1:
                    problems.append(f"{self.name} {gpu.uuid}: overlapping MIG instances "
                                    f"{sorted((i.profile, i.placement) for i in gpu.instances.values())}")
            else:
                shares = [s for held in gpu.shares.values() for s in held]
                if sum(m for m, _ in shares) > gpu.model.memory_mib * self.config.device_memory_scaling \
                        or len(shares) > self.config.device_split_count or sum(c for _, c in shares) > 100:
                    problems.append(f"{self.name} {gpu.uuid}: over-committed hami-core shares {shares}")
        return problems

    def truth(self) -> dict[str, dict[str, Any]]:
        """Per GPU, what is really in use, in the engine snapshot's terms (`Engine.snapshot()`)."""
        out: dict[str, dict[str, Any]] = {}
        for gpu in self.gpus:
            if gpu.mode == names.MODE_MIG:
                insts = sorted(gpu.instances.values(), key=lambda i: i.placement)
                out[gpu.uuid] = {"kind": "mig",
                                 "in_use": sorted((i.profile, i.placement) for i in insts if i.mig_uuid in self.owners),
                                 "idle": sorted((i.profile, i.placement) for i in insts
                                                if i.mig_uuid not in self.owners)}
            else:
                shares = [s for held in gpu.shares.values() for s in held]
                out[gpu.uuid] = {"kind": "hami-core", "tasks": len(shares), "used_mem": sum(m for m, _ in shares),
                                 "used_cores": sum(c for _, c in shares)}
        return out


# ----------------------------------------------------------------------------------------------
# the fleet


@dataclass
class FleetStats:
    allocated: int = 0
    refused: int = 0
    finished: int = 0
    handshakes: int = 0
    api_writes: int = 0
    lock_hold_s: list[float] = field(default_factory=list)  # bound seen -> lock released (drained by readers)


class HollowFleet:
    """Registers the nodes and runs their agents on one worker thread (module docstring).
    `start()` / `stop()`, or a `with` block."""

    def __init__(self, store: Store, specs: Sequence[NodeSpec], *, handshake_every: float = 30.0,
                 split_count: int = 10) -> None:
        self.store = store
        self.nodes = {spec.name: HollowNode(spec, i, split_count) for i, spec in enumerate(specs)}
        self.handshake_every = handshake_every
        self.stats = FleetStats()
        self.violations: list[str] = []  # decisions the node model refused, with why
        self._inbox: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._done: set[str] = set()  # uids allocated (or refused)
        self._bound_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watcher: Watcher | None = None
        self.on_running: Callable[[str, str], None] | None = None  # (namespace, name) of a pod now Running
        self._failed: list[tuple[str, str]] = []  # pods the nodes rejected, until taken
        self._lock = threading.Lock()

    # -- lifecycle

    def start(self) -> HollowFleet:
        now = _now()
        for node in self.nodes.values():
            with contextlib.suppress(errors.StatusError):  # already registered (a restarted fleet)
                self.store.create("nodes", None, node.node_object(now))
                self.stats.api_writes += 1
        self._watcher = self.store.watch("pods")
        self._threads = [threading.Thread(target=self._pump, name="hollow-watch", daemon=True),
                         threading.Thread(target=self._work, name="hollow-agent", daemon=True),
                         threading.Thread(target=self._handshakes, name="hollow-handshake", daemon=True)]
        for thread in self._threads:
            thread.start()
        log.info("hollow nodes registered nodes=%d gpus=%d", len(self.nodes),
                 sum(len(n.gpus) for n in self.nodes.values()))
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.close()
        self._inbox.put(None)
        for thread in self._threads:
            thread.join(10)
        self._threads = []

    def __enter__(self) -> HollowFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def finish(self, namespace: str, name: str) -> None:
        """The pod's work is done: Succeeded, its devices freed, then deleted (asynchronous)."""
        self._inbox.put(("finish", (namespace, name)))

    def take_failed(self) -> list[tuple[str, str]]:
        """(namespace, name) of the pods rejected since the last call."""
        with self._lock:
            out, self._failed = self._failed, []
        return out

    def take_lock_holds(self) -> list[float]:
        """Seconds from each pod's Binding seen to its node lock released, since the last call."""
        with self._lock:
            out, self.stats.lock_hold_s = self.stats.lock_hold_s, []
        return out

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued action is done (tests, the soak's final check)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            marker = threading.Event()
            self._inbox.put(("mark", marker))
            if marker.wait(max(0.0, deadline - time.monotonic())) and self._inbox.empty():
                return True
        return False

    # -- threads

    def _pump(self) -> None:
        assert self._watcher is not None
        while True:
            item = self._watcher.next_event(None, copy=False)  # read-only: stored objects are never mutated
            if item is Watcher.CLOSED or item is None:
                return
            self._inbox.put(("pod", item))

    def _work(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            what, data = item
            try:
                if what == "pod":
                    self._on_pod(*data)
                elif what == "finish":
                    self._finish(*data)
                elif what == "mark":
                    data.set()
            except Exception:  # a bug must not stop every node
                log.exception("hollow agent action failed action=%s", what)

    def _handshakes(self) -> None:
        """Each node reports every `handshake_every` seconds, the writes spread evenly over the period."""
        names_ = sorted(self.nodes)
        gap = self.handshake_every / max(1, len(names_))
        i = 0
        while not self._stop.wait(gap if i else min(gap, self.handshake_every)):
            node = names_[i % len(names_)]
            i += 1
            value = encode_handshake(Handshake.reported(_now()))
            with contextlib.suppress(errors.StatusError):
                self.store.patch("nodes", None, node, {"metadata": {"annotations": {names.NODE_HANDSHAKE: value}}},
                                 MERGE)
                self.stats.handshakes += 1
                self.stats.api_writes += 1

    # -- pods

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        node = self.nodes.get(spec.get("nodeName") or "")
        if node is None:
            return
        uid = meta.get("uid", "")
        key = podlib.key(pod)
        if kind == "DELETED":
            self._done.discard(uid)
            self._bound_at.pop(uid, None)
            if node.release(key, _now()):
                self._publish(node)
            return
        if meta.get("deletionTimestamp"):  # kubelet stops the containers, then confirms the deletion
            if node.release(key, _now()):
                self._publish(node)
            with contextlib.suppress(errors.StatusError):
                self.store.delete("pods", meta["namespace"], meta["name"], grace_period_seconds=0)
                self.stats.api_writes += 1
            return
        if uid in self._done or podlib.phase(pod) != "Pending":
            return
        self._bound_at.setdefault(uid, time.monotonic())
        if podlib.undecided(pod):
            if not podlib.requests_resource(pod, "nvidia.com/gpu"):
                self._done.add(uid)
                self._running(pod, node)
            return  # a GPU pod without a decision yet: the binder writes it before the Binding
        if not podlib.bind_phase_ok(pod):
            return
        try:
            pending = next_pending_container(podlib.to_allocate(pod))
        except AnnotationError:
            pending = 0
        if pending is None:
            return
        self._done.add(uid)
        self._allocate(pod, node)

    def _allocate(self, pod: dict[str, Any], node: HollowNode) -> None:
        meta = pod["metadata"]
        now = _now()
        try:
            patch = node.allocate(pod, now)
        except AllocateRefused as exc:
            self.stats.refused += 1
            self.violations.append(f"{podlib.key(pod)} on {node.name}: {exc}")
            log.warning("hollow allocate refused node=%s pod=%s reason=%s", node.name, podlib.key(pod), exc)
            self._reject(pod, node, str(exc))
            return
        try:
            self.store.patch("pods", meta["namespace"], meta["name"],
                             {"metadata": {"annotations": patch}}, MERGE)
            self.stats.api_writes += 1
        except errors.StatusError:  # deleted meanwhile: its devices go back
            node.release(podlib.key(pod), now)
            self._publish(node, unlock=podlib.key(pod))
            return
        self._publish(node, unlock=podlib.key(pod))
        held = self._bound_at.pop(meta["uid"], None)
        if held is not None:
            with self._lock:
                self.stats.lock_hold_s.append(time.monotonic() - held)
        self.stats.allocated += 1
        self._running(pod, node)

    def _reject(self, pod: dict[str, Any], node: HollowNode, message: str) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(errors.StatusError):
            self.store.patch("pods", meta["namespace"], meta["name"],
                             {"metadata": {"annotations": {names.BIND_PHASE: names.BIND_PHASE_FAILED}}}, MERGE)
            self.store.patch("pods", meta["namespace"], meta["name"], {"status": {
                "phase": "Failed", "reason": "UnexpectedAdmissionError",
                "message": f"Pod was rejected: Allocate failed: {message}"}}, MERGE, "status")
            self.stats.api_writes += 2
        self._publish(node, unlock=podlib.key(pod))
        with self._lock:
            self._failed.append((meta["namespace"], meta["name"]))

    def _running(self, pod: dict[str, Any], node: HollowNode) -> None:
        meta = pod["metadata"]
        now = _rfc3339()
        conditions = [{"type": t, "status": "True", "lastTransitionTime": now}
                      for t in ("Initialized", "Ready", "ContainersReady")]
        with contextlib.suppress(errors.StatusError):
            self.store.patch("pods", meta["namespace"], meta["name"], {"status": {
                "phase": "Running", "startTime": now, "conditions": conditions,
                "hostIP": f"10.{node.index // 62500 % 250}.{node.index // 250 % 250}.{node.index % 250 + 1}"}},
                "application/strategic-merge-patch+json", "status")
            self.stats.api_writes += 1
            if self.on_running is not None:
                self.on_running(meta["namespace"], meta["name"])

    def _finish(self, namespace: str, name: str) -> None:
        try:
            pod = self.store.get("pods", namespace, name)
        except errors.StatusError:
            return
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is not None and podlib.phase(pod) == "Running":
            with contextlib.suppress(errors.StatusError):
                self.store.patch("pods", namespace, name, {"status": {"phase": "Succeeded", "conditions": [
                    {"type": "Ready", "status": "False", "reason": "PodCompleted",
                     "lastTransitionTime": _rfc3339()}]}}, "application/strategic-merge-patch+json", "status")
                self.stats.api_writes += 1
            if node.release(podlib.key(pod), _now()):
                self._publish(node)
        with contextlib.suppress(errors.StatusError):
            self.store.delete("pods", namespace, name, grace_period_seconds=0)
            self.stats.api_writes += 1
        self.stats.finished += 1

    def _publish(self, node: HollowNode, unlock: str | None = None) -> None:
        """One node write: the realised instances when they changed, and the node lock when `unlock` holds it."""
        for _ in range(5):
            changes: dict[str, str | None] = {}
            value = node.instances_annotation()
            if value != node.published:
                changes[names.NODE_MIG_INSTANCES] = value
            version = None
            if unlock is not None:
                try:
                    current = self.store.get("nodes", None, node.name)
                except errors.StatusError:
                    return
                meta = current["metadata"]
                lock = (meta.get("annotations") or {}).get(names.NODE_LOCK)
                with contextlib.suppress(AnnotationError):
                    if lock and decode_node_lock(lock).owner == unlock:
                        changes[names.NODE_LOCK] = None
                        version = meta["resourceVersion"]
            if not changes:
                return
            body: dict[str, Any] = {"metadata": {"annotations": changes}}
            if version is not None:
                body["metadata"]["resourceVersion"] = version
            try:
                self.store.patch("nodes", None, node.name, body, MERGE)
                self.stats.api_writes += 1
            except errors.StatusError as exc:
                if exc.code == 409:
                    continue  # the lock moved meanwhile (a handshake): read again
                log.warning("hollow node write failed node=%s error=%s", node.name, exc.message)
                return
            if names.NODE_MIG_INSTANCES in changes:
                node.published = value
            return

    # -- checks

    def check(self) -> list[str]:
        """Every node's own invariants (HollowNode.check) plus the refused decisions."""
        return [*self.violations, *(p for n in self.nodes.values() for p in n.check())]

    def truth(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for node in self.nodes.values():
            out.update(node.truth())
        return out

    def gpu_counts(self) -> Counter[str]:
        return Counter(g.model.key + (" MIG" if g.mode == names.MODE_MIG else " hami-core")
                       for n in self.nodes.values() for g in n.gpus)


def _rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hollow_specs(groups: Iterable[tuple[int, str, int, str]], prefix: str = "hollow") -> list[NodeSpec]:
    """NodeSpecs for (nodes, model key, GPUs per node, mode) groups, named `<prefix>-<n>` in order."""
    from hami.devices import naming

    out: list[NodeSpec] = []
    for count, model_name, gpus, mode in groups:
        model = naming.find_model(model_name)
        if mode == names.MODE_MIG and not model.mig_capable:
            raise ValueError(f"{model.key} is not MIG-capable; use mode hami-core")
        base = len(out)
        out.extend(NodeSpec(f"{prefix}-{base + i:05d}", model, gpus, mode) for i in range(count))
    return out


__all__ = ["HOLLOW_LABEL", "AllocateRefused", "FleetStats", "HollowFleet", "HollowGpu", "HollowNode", "hollow_specs"]
