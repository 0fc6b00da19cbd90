"""The MIG lifecycle and the node view, reconciled in rounds (ARCHITECTURE §5).

Each round (at start, then every `sync_interval` seconds):

1. node config (ConfigMap or file) and NVML inventory; the operator's device cordon;
2. MIG mode per GPU (unless another MIG manager is on the node — NVIDIA's device plugin or the
   GPU Operator's MIG manager: then MIG GPUs are refused, with the reason, and nothing is
   created or destroyed): enable it where the config asks and the GPU is idle (Hopper and later switch
   at once; Ampere reports "reset required", said clearly and the GPU offered to nobody);
   switching a GPU back to hami-core destroys its idle instances and disables MIG once nothing
   uses it (HAMi #1116), meanwhile the GPU is draining;
3. instances: adopt every one NVML lists, wherever it was placed; who uses each (live pods'
   reservations); idle since when;
4. lost instances (reboot, driver reload: known before, gone now) are reported on the node and
   on the pods that used them;
5. Allocates that never finished (the pod failed while bind-phase was still `allocating`, e.g.
   the agent died mid-Allocate) are rolled back: the instances at their reservations are
   destroyed when idle, bind-phase=failed, their lock released; a node lock whose owner is gone
   or finished is released;
6. idle instances older than `idle_destroy_after` are destroyed (never one in use);
7. the device list kubelet sees and the node annotations are updated when they changed.

Nothing is destroyed in a round where a live pod's reservations cannot be read (fail closed).
A failed NVML call skips what depends on it until the next round; it never counts as a loss.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hami.api import AnnotationError, names
from hami.api.codecs import decode_device_cordon, decode_node_lock, decode_node_mig_instances
from hami.deviceplugin import pods as podlib
from hami.deviceplugin.allocate import Allocator
from hami.deviceplugin.config import DeviceSelector, NodeConfig, NodeConfigError, defaults_from, load_node_config
from hami.deviceplugin.inventory import Gpu, Inventory
from hami.deviceplugin.options import AgentOptions
from hami.deviceplugin.register import GpuPlan, Publisher, node_devices, plan, realised, replica_ids
from hami.deviceplugin.state import AgentState
from hami.devices import NvidiaConfig
from hami.k8s import Kube, KubeError
from hami.mig import MigError, MigInstance, MigInUseError, MigManager, foreign_mig_manager
from hami.nvml import Nvml, NvmlError

log = logging.getLogger(__name__)

LOST_REASON = "MigInstanceLost"
MODE_REASON = "MigModeChange"


def _now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    """One node's reconciliation rounds (module docstring). Call `round()`; thread-safe."""

    def __init__(self, kube: Kube, mig: MigManager, nvml: Nvml, inventory: Inventory, state: AgentState,
                 options: AgentOptions, allocator: Allocator, publisher: Publisher, nvidia: NvidiaConfig,
                 clock: Any = _now) -> None:
        self.kube = kube
        self.mig = mig
        self.nvml = nvml
        self.inventory = inventory
        self.state = state
        self.options = options
        self.allocator = allocator
        self.publisher = publisher
        self.base = defaults_from(nvidia, options.node_name)
        self.clock = clock
        self._first = True
        self._said: set[str] = set()  # node events already recorded (each said once)
        self._device_list: list[tuple[str, bool]] = []
        self._config_ok = False  # a node config was read once: later failures keep it

    # -- config ---------------------------------------------------------------------------------

    def load_config(self) -> NodeConfig | None:
        """The node config; on an unusable one, the previous config stays (and the error is
        reported); None while no config could be read yet."""
        try:
            if self.options.config_file is not None:
                text: str | None = (self.options.config_file.read_text()
                                    if self.options.config_file.exists() else None)
            else:
                cm = self.kube.find("configmaps", self.options.config_map, self.options.config_namespace)
                text = ((cm or {}).get("data") or {}).get("config.json")
            config = load_node_config(text, self.options.node_name, self.base)
        except (NodeConfigError, OSError) as exc:
            kept = "the previous one stays" if self._config_ok else "MIG modes are left as they are until it is fixed"
            self._say_once(f"config:{exc}", "Warning", "InvalidNodeConfig", f"node config not applied, {kept}: {exc}")
            return self.state.config if self._config_ok else None
        except KubeError as exc:
            log.warning("cannot read the node config: %s", exc)
            return self.state.config if self._config_ok else None
        self._config_ok = True
        return config

    def _observed(self, gpus: Sequence[Gpu]) -> NodeConfig:
        """Before any config could be read: each GPU keeps the mode it is in (nothing is switched)."""
        mig = frozenset(g.uuid for g in gpus if g.mig_enabled or g.mig_pending)
        return replace(self.base, operating_mode=names.MODE_HAMI_CORE,
                       device_modes=((DeviceSelector(uuids=mig), names.MODE_MIG),) if mig else ())

    # -- one round ------------------------------------------------------------------------------

    def round(self) -> None:
        """Reconcile once (module docstring). Raises nothing: every failure is logged and retried."""
        with self.state.lock:
            try:
                self._round()
            except (KubeError, NvmlError, MigError) as exc:
                if isinstance(exc, NvmlError):
                    self.state.count_nvml_error(exc)
                elif isinstance(exc, MigError) and exc.nvml_error is not None:
                    self.state.count_nvml_error(exc.nvml_error)
                log.warning("reconcile round failed node=%s error=%s; retrying next round",
                            self.options.node_name, exc)
                self.publisher.forget()

    def _round(self) -> None:
        loaded = self.load_config()
        gpus = self.inventory.read()
        config = loaded if loaded is not None else self._observed(gpus)
        node = self.kube.get("nodes", self.options.node_name)
        annotations = (node.get("metadata") or {}).get("annotations") or {}
        cordoned = decode_device_cordon(annotations.get(names.DEVICE_CORDON, ""))
        pods = self.kube.list("pods", field_selector=f"spec.nodeName={self.options.node_name}")
        blocked = podlib.unreadable(pods)
        owners = podlib.instance_owners(pods)
        foreign = self._foreign(node, gpus, config)
        if foreign:
            notes = {g.uuid: foreign for g in gpus if config.mode_of(g.uuid, g.index) == names.MODE_MIG}
        elif loaded is None:
            notes = {}
        else:
            notes, changed = self._modes(gpus, config, owners, blocked)
            if changed:
                gpus = self.inventory.read()
        instances = self._instances()
        if instances is not None:
            previous = self._previous(annotations) if self._first else {
                i.mig_uuid: i for i in self.state.instances if i.mig_uuid}
            self._report_lost(previous, instances, pods, annotations)
            self._idle(instances, owners, annotations)
            if not blocked and not foreign:
                instances = self._rollback_unfinished(pods, instances, owners)
                instances = self._destroy_expired(instances, owners)
            self.state.instances = instances
        self.state.owners = owners
        self.state.owner_uids = podlib.instance_owner_uids(pods)
        self._release_stale_lock(annotations, pods)
        plans = plan(gpus, config, cordoned, notes)
        self.state.config = config
        self.state.plans = {p.uuid: p for p in plans}
        listed = [(d, p.available) for p in plans for d in replica_ids(p, config)]
        if listed != self._device_list:
            self._device_list = listed
            self.state.bump()
        self._publish(plans, config)
        self._first = False
        self.state.reconciled = True

    def _foreign(self, node: Mapping[str, Any], gpus: Sequence[Gpu], config: NodeConfig) -> str | None:
        """Another MIG manager's evidence (NVIDIA's device plugin socket, GPU Operator labels), when
        this node would run MIG: then the agent neither changes MIG modes nor creates or destroys."""
        if not any(config.mode_of(g.uuid, g.index) == names.MODE_MIG and g.mig_capable for g in gpus):
            return None
        try:
            sockets = [p.name for p in self.options.plugin_dir.iterdir()]
        except OSError:
            sockets = []
        labels = (node.get("metadata") or {}).get("labels") or {}
        reason = foreign_mig_manager(sockets, labels, own_sockets=[self.options.socket_name])
        if reason:
            self._say_once(f"foreign:{reason}", "Warning", "ForeignMigManager", reason)
        return reason

    def _instances(self) -> tuple[MigInstance, ...] | None:
        try:
            return self.mig.instances()
        except MigError as exc:
            if exc.nvml_error is not None:
                self.state.count_nvml_error(exc.nvml_error)
            log.warning("cannot list MIG instances node=%s error=%s; keeping the last view", self.options.node_name,
                        exc)
            return None

    def _publish(self, plans: Sequence[GpuPlan], config: NodeConfig, *, release: str | None = None,
                 node: Mapping[str, Any] | None = None) -> bool:
        """False when the write failed (logged; the next round writes again)."""
        with self.state.lock:
            inst = realised(self.state.instances, self.state.owners, self.state.idle_since, self.state.owner_uids)
        try:
            self.publisher.publish(node_devices(plans, config), inst, release=release, node=node)
        except KubeError as exc:
            log.warning("cannot write the node annotations node=%s error=%s", self.options.node_name, exc)
            self.publisher.forget()
            return False
        return True

    def publish_now(self, release: str | None = None, node: Mapping[str, Any] | None = None) -> bool:
        """Write the annotations from the current view (after an Allocate changed instances) and,
        with `release`, drop that pod's node lock in the same write; False when the write failed."""
        with self.state.lock:
            plans = list(self.state.plans.values())
            config = self.state.config
        return self._publish(plans, config, release=release, node=node)

    # -- MIG mode -------------------------------------------------------------------------------

    def _modes(self, gpus: Sequence[Gpu], config: NodeConfig, owners: Mapping[str, str],
               blocked: Sequence[str]) -> tuple[dict[str, str], bool]:
        """MIG mode changes the config asks for; (notes per GPU that cannot be offered, changed)."""
        notes: dict[str, str] = {}
        changed = False
        for gpu in gpus:
            if config.filtered(gpu.uuid, gpu.index) or not gpu.mig_capable or not gpu.healthy:
                continue
            wanted = config.mode_of(gpu.uuid, gpu.index)
            if wanted == names.MODE_MIG and not gpu.mig_enabled:
                note, did = self._enable(gpu)
            elif wanted == names.MODE_HAMI_CORE and gpu.mig_enabled:
                note, did = self._disable(gpu, owners, blocked)
            else:
                continue
            changed |= did
            if note:
                notes[gpu.uuid] = note
        return notes, changed

    def _enable(self, gpu: Gpu) -> tuple[str, bool]:
        if gpu.mig_pending:
            return self._reset_required(gpu, "enabled"), False
        busy = self._processes(gpu)
        if busy:
            return (f"MIG mode cannot be enabled while process(es) {busy} run on the GPU; it is enabled once they "
                    "end"), False
        try:
            change = self.mig.set_mig_mode(gpu.uuid, True)
        except MigError as exc:
            return f"cannot enable MIG mode: {exc}", False
        if change.mode.current:
            self._say_once(f"enabled:{gpu.uuid}:{self.state.generation}", "Normal", MODE_REASON,
                           f"MIG mode enabled on GPU {gpu.uuid} (index {gpu.index})")
            return "", True
        return self._reset_required(gpu, "enabled"), True

    def _disable(self, gpu: Gpu, owners: Mapping[str, str], blocked: Sequence[str]) -> tuple[str, bool]:
        if not gpu.mig_pending:
            return self._reset_required(gpu, "disabled"), False
        try:
            mine = list(self.mig.instances(gpu.uuid))
        except MigError as exc:
            return f"draining to hami-core; cannot list its MIG instances: {exc}", False
        used = sorted({owners[i.mig_uuid] for i in mine if i.mig_uuid in owners})
        if used or blocked:
            return (f"draining to hami-core: MIG instances in use by {', '.join(used or blocked)}; MIG is disabled "
                    "once they are idle"), False
        try:
            if mine:
                self.state.note_destroyed(self.mig.destroy(mine))
            change = self.mig.set_mig_mode(gpu.uuid, False)
        except MigInUseError as exc:
            return f"draining to hami-core: {exc}", False
        except MigError as exc:
            return f"cannot disable MIG mode: {exc}", False
        if not change.mode.current:
            self._say_once(f"disabled:{gpu.uuid}:{self.state.generation}", "Normal", MODE_REASON,
                           f"MIG mode disabled on GPU {gpu.uuid} (index {gpu.index}): it now runs hami-core")
            return "", True
        return self._reset_required(gpu, "disabled"), True

    def _reset_required(self, gpu: Gpu, what: str) -> str:
        note = (f"MIG mode is {what} but only takes effect after a GPU reset (nvidia-smi -r -i {gpu.index}) or a "
                "reboot; the GPU is offered to nobody until then")
        self._say_once(f"reset:{gpu.uuid}:{what}", "Warning", "GpuResetRequired", f"GPU {gpu.uuid}: {note}")
        return note

    def _processes(self, gpu: Gpu) -> str:
        try:
            found = self.nvml.compute_running_processes(self.nvml.device_by_index(gpu.index))
        except NvmlError as exc:
            self.state.count_nvml_error(exc)
            return "(unknown: NVML cannot list them)"
        return ", ".join(str(p.pid) for p in found)

    # -- instances ------------------------------------------------------------------------------

    def _previous(self, annotations: Mapping[str, str]) -> dict[str, Any]:
        """The instances the last agent published (start-up: the memory of the previous life)."""
        try:
            return {i.mig_uuid: i for i in decode_node_mig_instances(annotations.get(names.NODE_MIG_INSTANCES, ""))}
        except AnnotationError as exc:
            log.warning("unreadable %s on node %s: %s", names.NODE_MIG_INSTANCES, self.options.node_name, exc)
            return {}

    def _idle(self, instances: Sequence[MigInstance], owners: Mapping[str, str],
              annotations: Mapping[str, str]) -> None:
        published = self._previous(annotations) if self._first else {}
        now = self.clock()
        since: dict[str, datetime] = {}
        for inst in instances:
            if inst.mig_uuid is None or inst.mig_uuid in owners:
                continue
            before = self.state.idle_since.get(inst.mig_uuid)
            if before is None:
                old = published.get(inst.mig_uuid)
                before = old.since if old is not None and old.since is not None else now
            since[inst.mig_uuid] = before
        self.state.idle_since = since

    def _report_lost(self, previous: Mapping[str, Any], instances: Sequence[MigInstance],
                     pods: Sequence[Mapping[str, Any]], annotations: Mapping[str, str]) -> None:
        present = {i.mig_uuid for i in instances if i.mig_uuid}
        lost = [u for u in previous if u not in present]
        if not lost:
            return
        users: dict[str, list[str]] = {}
        by_key = {podlib.key(p): p for p in pods}
        owners = podlib.instance_owners(pods)
        for uuid in lost:
            old = previous[uuid]
            owner = owners.get(uuid) or getattr(old, "pod", None)
            what = (f"MIG instance {uuid} ({old.profile} at placement {_start(old)} on GPU {old.gpu_uuid}) no "
                    "longer exists: "
                    "the node rebooted or the driver was reloaded")
            log.warning("%s node=%s pod=%s", what, self.options.node_name, owner or "-")
            if owner:
                users.setdefault(owner, []).append(uuid)
                pod = by_key.get(owner)
                if pod is not None and podlib.live(pod):
                    self.kube.event(pod, "Warning", LOST_REASON, f"{what}; the pod lost its GPU: delete it so it is "
                                    "scheduled again", self.options.component)
        summary = (f"{len(lost)} MIG instance(s) lost (reboot or driver reload)"
                   + (f"; affected pods: {', '.join(sorted(users))}" if users else "; none was in use"))
        self._event("Warning", LOST_REASON, summary)
        self.state.lost += len(lost)

    def _rollback_unfinished(self, pods: Sequence[Mapping[str, Any]], instances: tuple[MigInstance, ...],
                             owners: Mapping[str, str]) -> tuple[MigInstance, ...]:
        """Undo Allocates that never finished (module docstring, step 5)."""
        doomed: list[MigInstance] = [i for i in instances if i.mig_uuid is None]  # GI without CI: a crash leftover
        for pod in pods:
            ann = podlib.annotations(pod)
            if not podlib.finished(pod) or ann.get(names.BIND_PHASE) != names.BIND_PHASE_ALLOCATING:
                continue
            try:
                allocations = podlib.mig_allocations(pod)
            except AnnotationError:
                allocations = ()
            for a in allocations:
                for inst in instances:
                    if (inst.gpu_uuid == a.gpu_uuid and inst.placement == a.placement.start
                            and inst.size == a.placement.size and inst.mig_uuid not in owners
                            and inst not in doomed):
                        doomed.append(inst)
            meta = pod.get("metadata") or {}
            log.info("rolling back an unfinished Allocate pod=%s instances=%s", podlib.key(pod),
                     [i.describe() for i in doomed])
            try:
                self.kube.annotate("pods", meta["name"], {names.BIND_PHASE: names.BIND_PHASE_FAILED},
                                   meta["namespace"])
            except KubeError as exc:
                log.warning("cannot mark pod %s failed: %s", podlib.key(pod), exc)
                continue
            self.kube.event(pod, "Warning", "AllocateRolledBack", "Allocate did not finish (the node agent "
                            "restarted or kubelet gave up); the MIG instances it created were removed",
                            self.options.component)
            self.allocator.release_lock(pod)
        if not doomed:
            return instances
        gone: list[MigInstance] = []
        for inst in doomed:  # one by one: one in use must not keep the others
            try:
                gone.extend(self.mig.destroy([inst], live=set(owners)))
            except MigError as exc:
                log.warning("cannot roll back %s: %s", inst.describe(), exc)
        self.state.note_destroyed(gone)
        slots = {i.slot for i in gone}
        return tuple(i for i in instances if i.slot not in slots)

    def _destroy_expired(self, instances: tuple[MigInstance, ...],
                         owners: Mapping[str, str]) -> tuple[MigInstance, ...]:
        limit = self.options.idle_destroy_after
        if limit <= 0:
            return instances
        now = self.clock()
        expired = [i for i in instances if i.mig_uuid in self.state.idle_since
                   and (now - self.state.idle_since[i.mig_uuid]).total_seconds() >= limit]
        gone: list[MigInstance] = []
        for inst in expired:
            try:
                gone.extend(self.mig.destroy([inst], live=set(owners)))
                log.info("destroyed an idle instance %s (idle %.0f s)", inst.describe(), limit)
            except MigInUseError as exc:
                log.info("idle instance has processes, kept: %s", exc)
            except MigError as exc:
                log.warning("cannot destroy idle instance %s: %s", inst.describe(), exc)
        self.state.note_destroyed(gone)
        slots = {i.slot for i in gone}
        return tuple(i for i in instances if i.slot not in slots)

    def _release_stale_lock(self, annotations: Mapping[str, str], pods: Sequence[Mapping[str, Any]]) -> None:
        """A node lock whose owner is gone or finished is dropped at once (ARCHITECTURE §3)."""
        value = annotations.get(names.NODE_LOCK)
        if not value:
            return
        try:
            lock = decode_node_lock(value)
        except AnnotationError:
            return
        if lock.owner is None:
            return
        owner = next((p for p in pods if podlib.key(p) == lock.owner), None)
        if owner is None:
            assert lock.namespace is not None and lock.name is not None
            owner = self.kube.find("pods", lock.name, lock.namespace)
        if owner is None or podlib.finished(owner) or podlib.deleting(owner):
            stub = owner or {"metadata": {"namespace": lock.namespace, "name": lock.name}}
            self.allocator.release_lock(stub)

    # -- events -----------------------------------------------------------------------------------

    def _node_ref(self) -> dict[str, Any]:
        return {"kind": "Node", "metadata": {"name": self.options.node_name, "uid": self.options.node_name}}

    def _event(self, type_: str, reason: str, message: str) -> None:
        self.kube.event(self._node_ref(), type_, reason, message, self.options.component)

    def _say_once(self, key: str, type_: str, reason: str, message: str) -> None:
        log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "%s node=%s", message,
                self.options.node_name)
        if key not in self._said:
            self._said.add(key)
            self._event(type_, reason, message)


def _start(old: Any) -> int:
    placement = old.placement
    return placement if isinstance(placement, int) else placement.start


__all__ = ["Reconciler"]
