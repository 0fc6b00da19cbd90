"""The scheduler's view of the cluster: node and pod events folded into the engine.

Every change is incremental (ARCHITECTURE §4): a node event re-registers that node's GPUs only
when its register annotation (or its health) changed, and folds its realised instances and cordon
list only when those changed; a pod event assumes or releases that pod's devices. Nothing is
rebuilt per request.

Rules:

- A pod holds its devices from the decision recorded in its annotations until it is gone, or its
  phase is Succeeded or Failed, or its `bind-phase` is `failed`. A terminating pod keeps them (its
  containers may still run).
- A pod with a decision but no `spec.nodeName` is a bind in flight: it holds its devices while its
  `bind-time` is recent (`bind_ttl_s`), and the sweep releases them after (the Binding was never
  created: the scheduler died between the annotations and the Binding, or kube-scheduler gave up).
- A HAMi v2.5–v2.9 MIG entry (`GPU-…[tidx-slot]`) holds a busy instance whose placement comes from
  the agent's `hami.io/node-mig-instances` report, so pods placed by HAMi stay accounted after a
  migration.
- A node whose agent handshake (`Reported <time>`) is older than `handshake_timeout_s` has all its
  GPUs unhealthy until it reports again; a node without our handshake (HAMi v2.8+ agents write
  none) is judged by its register annotation alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hami._core import Engine
from hami.api import codecs, names
from hami.api.errors import AnnotationError
from hami.devices.models import GpuModel
from hami.scheduler import annotations as A
from hami.scheduler import models

log = logging.getLogger(__name__)

TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass
class _Node:
    register: str | None = None
    instances: str | None = None
    cordon: str | None = None
    stale: bool = False
    has_gpus: bool = False
    gpu_types: dict[str, str] = field(default_factory=dict)
    devices: tuple[codecs.NodeDevice, ...] = ()
    realised: tuple[codecs.RealisedInstance, ...] = ()
    lock: str | None = None
    resource_version: str = ""


@dataclass
class PodRecord:
    """What the cache keeps of a pod: enough to answer 'who is it, where, is it alive'."""

    uid: str
    namespace: str
    name: str
    node: str  # spec.nodeName ("" when unbound)
    phase: str
    bind_time: int | None = None
    bind_phase: str | None = None
    holds: bool = False  # the engine holds devices for it from its annotations


class ClusterCache:
    """Thread-safe; the informers call `node_event` / `pod_event` from their threads."""

    def __init__(self, engine: Engine, *, handshake_timeout_s: float = 90.0, bind_ttl_s: float = 120.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.handshake_timeout_s = handshake_timeout_s
        self.bind_ttl_s = bind_ttl_s
        self.clock = clock
        self._lock = threading.RLock()
        self.node_changed = threading.Condition(self._lock)  # the binder waits on node locks here
        self._nodes: dict[str, _Node] = {}
        self._node_objects: dict[str, dict[str, Any]] = {}
        self._pods: dict[str, PodRecord] = {}  # uid -> record
        self._by_key: dict[str, str] = {}  # "<namespace>/<name>" -> uid
        self._in_flight: set[str] = set()  # pod uids our binder is binding right now
        self.nodes_synced = threading.Event()
        self.pods_synced = threading.Event()
        self.annotation_errors = 0
        self.learned: dict[str, GpuModel] = {}  # GPU type -> model built from a registration

    # -- readiness ------------------------------------------------------------------------------
    @property
    def synced(self) -> bool:
        return self.nodes_synced.is_set() and self.pods_synced.is_set()

    # -- lookups --------------------------------------------------------------------------------
    def node(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._node_objects.get(name)

    def node_names(self) -> list[str]:
        with self._lock:
            return list(self._node_objects)

    def gpu_types(self, node: str) -> dict[str, str]:
        with self._lock:
            state = self._nodes.get(node)
            return dict(state.gpu_types) if state else {}

    def pod(self, uid: str) -> PodRecord | None:
        with self._lock:
            return self._pods.get(uid)

    def pod_by_key(self, namespace: str, name: str) -> PodRecord | None:
        with self._lock:
            uid = self._by_key.get(f"{namespace}/{name}")
            return self._pods.get(uid) if uid else None

    def inventory(self) -> list[tuple[str, tuple[codecs.NodeDevice, ...], tuple[codecs.RealisedInstance, ...]]]:
        """(node, registered GPUs, realised MIG instances) per node, for metrics."""
        with self._lock:
            return [(name, st.devices, st.realised) for name, st in self._nodes.items()]

    def has_gpus(self, node: str) -> bool:
        with self._lock:
            state = self._nodes.get(node)
            return bool(state and state.has_gpus)

    def pending_gpu_pods(self) -> int:
        with self._lock:
            return sum(1 for p in self._pods.values() if not p.node and p.phase == "Pending" and p.holds)

    # -- the binder's in-flight marks ------------------------------------------------------------
    def begin_bind(self, uid: str) -> None:
        with self._lock:
            self._in_flight.add(uid)

    def end_bind(self, uid: str) -> None:
        with self._lock:
            self._in_flight.discard(uid)

    # -- nodes ----------------------------------------------------------------------------------
    def node_event(self, kind: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            return
        with self._lock:
            if kind == "deleted":
                self._node_objects.pop(name, None)
                self._nodes.pop(name, None)
                self.engine.remove_node(name)
            else:
                self._node_objects[name] = obj
                self._fold_node(name, obj)
            self.node_changed.notify_all()

    def _fold_node(self, name: str, obj: dict[str, Any], force: bool = False) -> None:
        meta = obj.get("metadata") or {}
        ann: Mapping[str, str] = meta.get("annotations") or {}
        state = self._nodes.setdefault(name, _Node())
        state.lock = ann.get(names.NODE_LOCK)
        state.resource_version = meta.get("resourceVersion", "")
        register = ann.get(names.NODE_REGISTER)
        age = A.handshake_age(ann.get(names.NODE_HANDSHAKE), datetime.fromtimestamp(self.clock(), UTC))
        stale = age is not None and age > self.handshake_timeout_s
        registered = False
        if force or register != state.register or stale != state.stale:
            devices: tuple[codecs.NodeDevice, ...] = ()
            if register:
                try:
                    devices = codecs.decode_node_register(register)
                except AnnotationError as err:
                    self.annotation_errors += 1
                    log.warning("node=%s register annotation ignored: %s", name, err)
                    devices = ()
            self._learn_models(name, devices)
            try:
                self.engine.upsert_node(name, A.gpu_specs(devices, healthy=not stale))
            except (ValueError, LookupError) as err:
                self.annotation_errors += 1
                log.warning("node=%s GPUs not registered: %s", name, err)
                self.engine.upsert_node(name, [])
                devices = ()
            if stale and not state.stale:
                log.warning("node=%s agent handshake is %.0fs old: its GPUs are unhealthy", name, age)
            state.register, state.stale = register, stale
            state.has_gpus = bool(devices)
            state.gpu_types = {d.id: d.type for d in devices}
            state.devices = devices
            registered = True
        cordon = ann.get(names.DEVICE_CORDON)
        if registered or cordon != state.cordon:
            try:
                uuids = codecs.decode_device_cordon(cordon) if cordon else ()
            except AnnotationError as err:
                log.warning("node=%s cordon annotation ignored: %s", name, err)
                uuids = ()
            self.engine.set_cordoned(name, uuids)
            state.cordon = cordon
        instances = ann.get(names.NODE_MIG_INSTANCES)
        if registered or instances != state.instances:
            self._fold_instances(name, instances)
            state.instances = instances

    def _learn_models(self, name: str, devices: tuple[codecs.NodeDevice, ...]) -> None:
        """MIG GPUs of a type the catalog lacks: build the model from what the agent registered."""
        for d in devices:
            if d.is_mig and d.type not in self.learned and not models.is_known(d.type):
                try:
                    model = models.model_from_register(d)
                except models.UnusableRegistration as err:
                    log.warning("node=%s: %s", name, err)
                    continue
                self.engine.register_model(model)
                self.learned[d.type] = model
                log.info("node=%s: GPU model %s learned from its registration", name, d.type)

    def _fold_instances(self, name: str, value: str | None) -> None:
        try:
            realised = codecs.decode_node_mig_instances(value) if value else ()
        except AnnotationError as err:
            self.annotation_errors += 1
            log.warning("node=%s mig-instances annotation ignored: %s", name, err)
            return
        self._nodes[name].realised = realised
        conflicts = self.engine.set_realised(name, A.with_pod_uids(realised, self._by_key))
        for c in conflicts:
            log.warning("node=%s realised instance conflict gpu=%s pod=%s: %s", name, c.gpu_uuid, c.pod_uid, c.detail)

    # -- pods -----------------------------------------------------------------------------------
    def pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        with self._lock:
            if kind == "deleted":
                record = self._pods.pop(uid, None)
                if record is not None:
                    self._by_key.pop(f"{record.namespace}/{record.name}", None)
                self.engine.release(uid)
                return
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            record = PodRecord(uid, meta.get("namespace", ""), meta.get("name", ""), spec.get("nodeName") or "",
                               status.get("phase") or "Pending")
            previous = self._pods.get(uid)
            self._pods[uid] = record
            key = f"{record.namespace}/{record.name}"
            new_key = self._by_key.get(key) != uid
            self._by_key[key] = uid
            self._fold_pod(record, obj, previous)
            if new_key and record.node:
                # an in-use instance the agent reported before we knew this pod: match it now
                state = self._nodes.get(record.node)
                if state is not None and state.instances and key in state.instances:
                    self._fold_instances(record.node, state.instances)

    def _fold_pod(self, record: PodRecord, obj: dict[str, Any], previous: PodRecord | None) -> None:
        uid = record.uid
        if record.phase in TERMINAL_PHASES:
            self.engine.release(uid)
            return
        try:
            recorded = A.recorded_decision(obj)
        except AnnotationError as err:
            self.annotation_errors += 1
            log.warning("pod=%s/%s decision annotations ignored: %s", record.namespace, record.name, err)
            return
        if recorded is None:
            return
        record.bind_time = recorded.bind_time
        record.bind_phase = recorded.phase
        if uid in self._in_flight:
            # our binder holds the reservation and writes these annotations; a `failed` mark seen
            # now is a stale one from an earlier attempt (the binder releases its own failures)
            record.holds = True
            return
        if recorded.phase == names.BIND_PHASE_FAILED:
            self.engine.release(uid)
            return
        if not record.node and not self._bind_recent(recorded.bind_time):
            self.engine.release(uid)
            return  # an old bind that never reached a Binding
        held = self.engine.reservation(uid)
        if held is not None and A.same_devices(held, recorded.decision):
            record.holds = True
            return
        for conflict in self.engine.assume(uid, recorded.decision):
            log.warning("pod=%s/%s recorded decision conflicts gpu=%s: %s", record.namespace, record.name,
                        conflict.gpu_uuid, conflict.detail)
        record.holds = True

    def _bind_recent(self, bind_time: int | None) -> bool:
        return bind_time is not None and self.clock() - bind_time <= self.bind_ttl_s

    # -- periodic -------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Handshake staleness and binds that never reached a Binding (call every few seconds)."""
        with self._lock:
            for name, obj in list(self._node_objects.items()):
                self._fold_node(name, obj)
            for record in list(self._pods.values()):
                if (record.holds and not record.node and record.uid not in self._in_flight
                        and not self._bind_recent(record.bind_time)):
                    log.info("pod=%s/%s bind never completed: releasing its devices", record.namespace, record.name)
                    self.engine.release(record.uid)
                    record.holds = False

    def lock_owner_done(self, namespace: str, name: str) -> bool:
        """The node lock's owner no longer needs it: gone, ended, its Allocate finished
        (bind-phase success or failed), or its bind never reached a Binding (not ours in flight,
        unbound, and its bind-time older than the bind TTL)."""
        with self._lock:
            uid = self._by_key.get(f"{namespace}/{name}")
            record = self._pods.get(uid) if uid else None
            if record is None or record.phase in TERMINAL_PHASES:
                return True
            if record.bind_phase in ("success", "failed"):
                return True
            if record.uid in self._in_flight:
                return False
            return not record.node and record.bind_time is not None and not self._bind_recent(record.bind_time)

    # -- node locks -----------------------------------------------------------------------------
    def node_lock(self, node: str) -> tuple[str | None, str]:
        """The node's `hami.io/mutex.lock` value and resourceVersion as last seen."""
        with self._lock:
            state = self._nodes.get(node)
            return (state.lock, state.resource_version) if state else (None, "")
