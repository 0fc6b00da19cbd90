"""Allocate: make the scheduler's decision for one container real, and record it.

kubelet calls Allocate once per container with device IDs of its own choosing; the decision in
the pod's annotations is what counts (reference kubernetes-interfaces §2.6). The steps:

1. The pod: the node lock's owner when it awaits Allocate on this node; without a lock, the one
   pending pod whose next container entry matches the request (count, then GPUs); otherwise
   fail, naming the candidates. A GPU pod with no decision at all fails with a message saying so.
2. The container's devices: the first non-empty entry of `hami.io/vgpu-devices-to-allocate`,
   and its MIG reservations from `hami.io/vgpu-mig-allocations`.
3. MIG devices: destroy the idle instances overlapping the decided placement, reuse an idle
   instance of that profile already there, else create it at exactly that placement. Never
   touch an instance a live pod or a process uses (the decision was stale: fail).
4. The response: NVIDIA_VISIBLE_DEVICES (MIG or GPU uuids), plus HAMi-core's env and mounts for
   shared GPUs (reference hami-behaviour §6).
5. Record: the runtime identity into the reservations, the consumed entry erased, bind-phase
   success once no entry is left — one conditional patch, retried on conflict.

Any failure destroys what this call created, sets bind-phase=failed with a Warning event that
says why, and raises AllocateError. The node lock is released whenever the pod is done or failed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hami.api import AnnotationError, container_names, names
from hami.api.codecs import (
    ContainerDevice,
    MigAllocation,
    decode_mig_allocations,
    decode_node_lock,
    decode_pod_devices,
    encode_mig_allocations,
    encode_pod_devices,
    erase_container,
    next_pending_container,
)
from hami.deviceplugin import pods as podlib
from hami.deviceplugin.options import AgentOptions
from hami.deviceplugin.register import gpu_of
from hami.deviceplugin.state import AgentState
from hami.devices import parse_profile_name
from hami.k8s import Kube, KubeError, NotFound
from hami.mig import MigError, MigInstance, MigManager
from hami.nvml import Nvml, NvmlError

log = logging.getLogger(__name__)

FAILED_REASON = "AllocateFailed"
PREREAD_TTL_S = 0.5  # how long GetPreferredAllocation's reads may serve the Allocate that follows
CONTAINER_VGPU_DIR = "/usr/local/vgpu"


class AllocateError(Exception):
    """Allocate refused or failed; `precondition` is True when the decision (not the node) is at fault."""

    def __init__(self, message: str, *, precondition: bool = True) -> None:
        super().__init__(message)
        self.precondition = precondition


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool


@dataclass(frozen=True)
class ContainerResponse:
    """What kubelet applies to the container."""

    envs: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class _Decision:
    pod: Mapping[str, Any]
    index: int  # HAMi's container index (init containers first)
    container: Mapping[str, Any]  # the container's spec
    devices: tuple[ContainerDevice, ...]
    mig: Mapping[int, MigAllocation]  # device index → reservation

    @property
    def pod_key(self) -> str:
        return podlib.key(self.pod)


class Allocator:
    """Allocate and GetPreferredAllocation for one node."""

    def __init__(self, kube: Kube, mig: MigManager, nvml: Nvml, state: AgentState, options: AgentOptions) -> None:
        self.kube = kube
        self.mig = mig
        self.nvml = nvml
        self.state = state
        self.options = options
        self.after_realise: Any = None  # test hook: called after each MIG device is realised
        # after instances changed: the agent republishes them, dropping a finished pod's node lock in
        # the same write: on_changed(release="ns/name" or None, node=the node as read) -> written ok
        self.on_changed: Any = None
        # what GetPreferredAllocation read (time, the node's pods, the node), for the Allocate
        # kubelet sends right after it: one-shot, and only while younger than PREREAD_TTL_S
        self._preread: tuple[float, list[Mapping[str, Any]], Mapping[str, Any]] | None = None
        self._preread_lock = threading.Lock()

    # -- the pod being admitted ------------------------------------------------------------------

    def _read(self) -> tuple[list[Mapping[str, Any]], Mapping[str, Any]]:
        """The node's pods and the node (its lock), as the API server has them now."""
        return self._node_pods(), self.kube.get("nodes", self.options.node_name)

    def _take_preread(self) -> tuple[list[Mapping[str, Any]], Mapping[str, Any]] | None:
        with self._preread_lock:
            pre, self._preread = self._preread, None
        if pre is None or time.monotonic() - pre[0] > PREREAD_TTL_S:
            return None
        return pre[1], pre[2]

    def _node_pods(self) -> list[Mapping[str, Any]]:
        return self.kube.list("pods", field_selector=f"spec.nodeName={self.options.node_name}")

    def _find(self, pods: Sequence[Mapping[str, Any]], node_obj: Mapping[str, Any], count: int,
              gpus: Sequence[str] = ()) -> Mapping[str, Any]:
        """The pod kubelet is admitting (module docstring, step 1); `gpus` (those of kubelet's IDs)
        only narrow several candidates of the right size."""
        node = self.options.node_name
        awaiting = [p for p in pods if podlib.awaiting(p)]
        owner = self._lock_owner(node_obj)
        if owner is not None:
            for p in awaiting:
                if podlib.key(p) == owner:
                    return p
        matching = [p for p in awaiting if self._entry_size(p) == count]
        if len(matching) > 1 and gpus:
            wanted = Counter(gpus)
            narrowed = [p for p in matching if Counter(d.uuid for d in self._entry(p)) == wanted]
            matching = narrowed or matching
        if len(matching) == 1:
            return matching[0]
        if matching:
            raise AllocateError(
                f"{len(matching)} pending pods on node {node} match a request for {count} device(s) and no node "
                f"lock names one of them: {', '.join(sorted(podlib.key(p) for p in matching))}; cannot tell which "
                "pod kubelet is admitting (the scheduler holds the node lock from bind to Allocate)"
            )
        bare = [p for p in pods if podlib.phase(p) == "Pending" and not podlib.deleting(p)
                and podlib.undecided(p) and podlib.requests_resource(p, self.options.resource_name)]
        if bare:
            raise AllocateError(
                f"pod {', '.join(sorted(podlib.key(p) for p in bare))} requests {self.options.resource_name} but "
                f"carries no scheduling decision ({names.VGPU_DEVICES_TO_ALLOCATE} is missing): it was not placed "
                f"by {names.SCHEDULER_NAME} (the admission webhook was bypassed, e.g. failurePolicy: Ignore, or "
                "another scheduler bound it); delete it and create it again once the webhook is reachable"
            )
        others = sorted(f"{podlib.key(p)} ({self._entry_size(p)} device(s))" for p in awaiting)
        raise AllocateError(
            f"no pending pod on node {node} awaits {count} device(s) of {self.options.resource_name}"
            + (f"; pods awaiting Allocate: {', '.join(others)}" if others else "; no pod awaits Allocate")
        )

    def _admitting(self, count: int, gpus: Sequence[str]) -> tuple[list[Mapping[str, Any]], Mapping[str, Any],
                                                                     Mapping[str, Any]]:
        """(the node's pods, the node, the pod kubelet is admitting). Kubelet asks for the
        preferred allocation right before Allocate, so the reads made for that answer moments ago
        serve again (two API calls fewer in the path every bind on this node waits for); when
        they do not name the pod, a fresh read decides."""
        pre = self._take_preread()
        if pre is not None:
            with contextlib.suppress(AllocateError):
                return pre[0], pre[1], self._find(pre[0], pre[1], count, gpus)
        pods, node = self._read()
        return pods, node, self._find(pods, node, count, gpus)

    def _lock_owner(self, node: Mapping[str, Any]) -> str | None:
        value = ((node.get("metadata") or {}).get("annotations") or {}).get(names.NODE_LOCK)
        if not value:
            return None
        try:
            return decode_node_lock(value).owner
        except AnnotationError as exc:
            log.warning("unreadable node lock node=%s error=%s", self.options.node_name, exc)
            return None

    @staticmethod
    def _entry(pod: Mapping[str, Any]) -> tuple[ContainerDevice, ...]:
        devices = podlib.to_allocate(pod)
        index = next_pending_container(devices)
        return devices[index] if index is not None else ()

    def _entry_size(self, pod: Mapping[str, Any]) -> int:
        try:
            return len(self._entry(pod))
        except AnnotationError:
            return -1

    # -- the decision -------------------------------------------------------------------------

    def _decision(self, pod: Mapping[str, Any], count: int) -> _Decision:
        key = podlib.key(pod)
        try:
            devices = podlib.to_allocate(pod)
            allocations = podlib.mig_allocations(pod)
        except AnnotationError as exc:
            raise AllocateError(f"pod {key}: {exc}") from exc
        index = next_pending_container(devices)
        if index is None:
            raise AllocateError(f"pod {key} has no container left to allocate")
        spec = pod.get("spec") or {}
        containers = [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]
        if index >= len(containers):
            raise AllocateError(
                f"pod {key}: {names.VGPU_DEVICES_TO_ALLOCATE} has an entry for container {index} but the pod has "
                f"{len(containers)} container(s)"
            )
        name = container_names(pod)[index]
        entry = devices[index]
        if len(entry) != count:
            raise AllocateError(
                f"pod {key} container {name}: the scheduler decided {len(entry)} device(s) but kubelet asks for "
                f"{count}"
            )
        mine = {a.device_index: a for a in allocations if a.container_index == index}
        with self.state.lock:
            plans = dict(self.state.plans)
        for di, device in enumerate(entry):
            p = plans.get(device.uuid)
            if p is None:
                raise AllocateError(
                    f"pod {key} container {name}: GPU {device.uuid} is not registered on node "
                    f"{self.options.node_name} (GPUs: {', '.join(sorted(plans)) or 'none'})"
                )
            reservation = mine.get(di)
            if reservation is not None:
                if reservation.gpu_uuid != device.uuid:
                    raise AllocateError(
                        f"pod {key} container {name} device {di}: the MIG reservation names GPU "
                        f"{reservation.gpu_uuid} but the device entry names {device.uuid}"
                    )
                if not p.is_mig:
                    raise AllocateError(
                        f"pod {key} container {name}: the decision places a MIG {reservation.profile} on GPU "
                        f"{device.uuid}, which runs in {p.mode} mode on this node"
                    )
                if p.note:
                    raise AllocateError(f"pod {key} container {name}: GPU {device.uuid} takes no MIG instance now: "
                                        f"{p.note}")
            elif p.is_mig:
                raise AllocateError(
                    f"pod {key} container {name} device {di}: GPU {device.uuid} is a MIG GPU but "
                    f"{names.VGPU_MIG_ALLOCATIONS} has no reservation for it"
                )
        stray = sorted(set(mine) - set(range(len(entry))))
        if stray:
            raise AllocateError(f"pod {key} container {name}: MIG reservations for devices {stray} that the "
                                f"device entry does not list")
        return _Decision(pod, index, containers[index], entry, mine)

    # -- GetPreferredAllocation ---------------------------------------------------------------------

    def preferred(self, available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]:
        """Device IDs of the decided GPUs (kubelet intersects them with what it allows). Never
        fails: without a decision it answers kubelet's own order."""
        chosen = list(must_include)[:size]
        try:
            pods, node = self._read()
            with self._preread_lock:
                self._preread = (time.monotonic(), pods, node)
            pod = self._find(pods, node, size)
            wanted = [d.uuid for d in self._entry(pod)]
        except (AllocateError, KubeError, AnnotationError) as exc:
            log.debug("no preference node=%s reason=%s", self.options.node_name, exc)
            wanted = []
        pool = [d for d in available if d not in chosen]
        need = Counter(wanted)
        for d in chosen:
            if need[gpu_of(d)] > 0:
                need[gpu_of(d)] -= 1
        for gpu in wanted:
            if len(chosen) >= size or need[gpu] <= 0:
                continue
            pick = next((d for d in pool if gpu_of(d) == gpu), None)
            if pick is not None:
                chosen.append(pick)
                pool.remove(pick)
                need[gpu] -= 1
        for d in pool:
            if len(chosen) >= size:
                break
            chosen.append(d)
        return chosen

    # -- Allocate ---------------------------------------------------------------------------------

    def allocate(self, device_ids: Sequence[str]) -> ContainerResponse:
        """One container's Allocate (module docstring). Raises AllocateError."""
        with self.state.lock:
            pod: Mapping[str, Any] | None = None
            created: list[MigInstance] = []
            done = False
            try:
                pods, node, pod = self._admitting(len(device_ids), [gpu_of(d) for d in device_ids])
                decision = self._decision(pod, len(device_ids))
                runtime: dict[int, MigInstance] = {}
                visible: list[str] = []
                taken = podlib.instance_owners(pods)  # live pods' instances, this pod's earlier ones too
                for di, device in enumerate(decision.devices):
                    reservation = decision.mig.get(di)
                    if reservation is None:
                        visible.append(device.uuid)
                        continue
                    instance, fresh = self._realise(reservation, pods, decision, taken)
                    if fresh:
                        created.append(instance)
                    runtime[di] = instance
                    assert instance.mig_uuid is not None
                    taken[instance.mig_uuid] = decision.pod_key
                    visible.append(instance.mig_uuid)
                    if self.after_realise is not None:
                        self.after_realise(instance)
                response = self._response(decision, visible)
                done = self._record(decision, runtime)
            except AllocateError as exc:
                self._fail(pod, created, str(exc))
                raise
            except Exception as exc:  # NVML, MIG, API, file system, or a bug: roll back all the same
                if not isinstance(exc, (MigError, NvmlError, KubeError, AnnotationError, OSError, ValueError)):
                    log.exception("unexpected error in Allocate")
                message = _describe(exc)
                self._fail(pod, created, message)
                raise AllocateError(message, precondition=False) from exc
            self._settle(decision, runtime)
            self.state.allocations["success"] += 1
            self._publish_and_release(decision.pod if done else None, node)
            return response

    def _publish_and_release(self, finished: Mapping[str, Any] | None, node: Mapping[str, Any]) -> None:
        """Republish the instances and, once the pod is done, drop its node lock: one node write
        when the agent's publisher is wired (`on_changed`), else (or when that write failed) the
        lock on its own."""
        owner = podlib.key(finished) if finished is not None else None
        if self.on_changed is not None:
            try:
                if self.on_changed(release=owner, node=node):
                    return
            except Exception:  # publishing is retried by the reconciler; Allocate's outcome stands
                log.exception("publishing after Allocate failed")
        if finished is not None:
            self.release_lock(finished)

    def _changed(self) -> None:
        if self.on_changed is not None:
            try:
                self.on_changed()
            except Exception:  # publishing is retried by the reconciler; Allocate's outcome stands
                log.exception("publishing after Allocate failed")

    def _realise(self, reservation: MigAllocation, pods: Sequence[Mapping[str, Any]], decision: _Decision,
                 taken: Mapping[str, str]) -> tuple[MigInstance, bool]:
        """The decided instance, existing or created; True when this call created it. `taken`:
        MIG uuid → pod of every instance in use (only this reservation's own earlier
        realisation may be reused)."""
        gpu, start, size = reservation.gpu_uuid, reservation.placement.start, reservation.placement.size
        others = {u: o for u, o in taken.items() if u != reservation.mig_uuid}
        blocked = podlib.unreadable(p for p in pods if podlib.key(p) != decision.pod_key)
        existing = list(self.mig.instances(gpu))
        reuse: MigInstance | None = None
        doomed: list[MigInstance] = []
        for inst in existing:
            if not (inst.placement < start + size and start < inst.placement + inst.size):
                continue
            if inst.mig_uuid is not None and inst.mig_uuid in others:
                raise AllocateError(
                    f"the decided {reservation.profile} at placement {start} on GPU {gpu} overlaps "
                    f"{inst.describe()}, which pod {others[inst.mig_uuid]} uses; the scheduler's view of this "
                    "node was stale"
                )
            exact = inst.placement == start and inst.size == size and same_profile(inst.profile, reservation.profile)
            if exact and inst.mig_uuid is not None and reuse is None:
                reuse = inst
            else:
                doomed.append(inst)
        if doomed:
            if blocked:
                raise AllocateError(
                    f"cannot free placement {start} on GPU {gpu}: the MIG reservations of pod(s) "
                    f"{', '.join(blocked)} are unreadable, so the agent cannot tell which instances they use"
                )
            log.info("destroying idle instances for a decision pod=%s instances=%s", decision.pod_key,
                     [i.describe() for i in doomed])
            self.state.note_destroyed(self.mig.destroy(doomed, live=set(others)))
        if reuse is not None:
            self._check_idle(reuse)
        profile = self._driver_profile(gpu, reservation)
        instance = self.mig.ensure(gpu, profile, start)
        fresh = reuse is None or instance.mig_uuid != reuse.mig_uuid
        self.state.note_created(instance)
        if instance.placement != start or instance.size != size:
            if fresh:
                self._rollback([instance])
            raise AllocateError(
                f"the instance NVML reports ({instance.describe()}) is not at the decided placement {start}+{size}",
                precondition=False,
            )
        log.info("mig device ready pod=%s container=%d %s reused=%s", decision.pod_key, decision.index,
                 instance.describe(), not fresh)
        return instance, fresh

    def _check_idle(self, inst: MigInstance) -> None:
        """An idle instance is reused only when no process runs on it (one outside Kubernetes may)."""
        assert inst.mig_uuid is not None
        processes = self.nvml.compute_running_processes(self.nvml.device_by_uuid(inst.mig_uuid))
        if processes:
            raise AllocateError(
                f"the decided {inst.describe()} has process(es) {', '.join(str(p.pid) for p in processes)} that no "
                "pod accounts for; stop them or let the scheduler pick another placement",
                precondition=False,
            )

    def _driver_profile(self, gpu: str, reservation: MigAllocation) -> str:
        """The GPU's own name for the reserved profile (drivers differ: 3g.39gb vs 3g.40gb)."""
        with self.state.lock:
            p = self.state.plans.get(gpu)
        if p is None:
            return reservation.profile
        exact = p.gpu.profile(reservation.profile)
        if exact is not None:
            return exact.name
        for prof in p.gpu.profiles:
            if prof.memory_slices == reservation.placement.size and same_profile(prof.name, reservation.profile):
                return prof.name
        return reservation.profile

    def _response(self, decision: _Decision, visible: list[str]) -> ContainerResponse:
        envs = {"NVIDIA_VISIBLE_DEVICES": ",".join(visible)}
        shared = [(i, d) for i, d in enumerate(decision.devices) if i not in decision.mig]
        if not shared:
            return ContainerResponse(envs)
        config = self.state.config
        for i, device in shared:
            if device.memory_mib:
                envs[f"CUDA_DEVICE_MEMORY_LIMIT_{i}"] = f"{device.memory_mib}m"
        envs["CUDA_DEVICE_SM_LIMIT"] = str(shared[0][1].cores)
        envs["CUDA_DEVICE_MEMORY_SHARED_CACHE"] = f"{CONTAINER_VGPU_DIR}/{uuidlib.uuid4()}.cache"
        if config.device_memory_scaling > 1:
            envs["CUDA_OVERSUBSCRIBE"] = "true"
        if config.libcuda_log_level is not None:
            envs["LIBCUDA_LOG_LEVEL"] = str(config.libcuda_log_level)
        if config.disable_core_limit:
            envs["GPU_CORE_UTILIZATION_POLICY"] = "disable"
        vgpu = self.options.hook_path / "vgpu"
        meta = decision.pod.get("metadata") or {}
        cache_dir = vgpu / "containers" / f"{meta.get('uid')}_{decision.container.get('name')}"
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(cache_dir, 0o777)  # the container's user writes its shared region here
        self.options.vgpu_lock_dir.mkdir(parents=True, exist_ok=True)
        mounts = [
            Mount(f"{CONTAINER_VGPU_DIR}/libvgpu.so", str(vgpu / "libvgpu.so"), True),
            Mount(CONTAINER_VGPU_DIR, str(cache_dir), False),
            Mount("/tmp/vgpulock", str(self.options.vgpu_lock_dir), False),
        ]
        env = {e.get("name"): e.get("value") for e in decision.container.get("env") or () if isinstance(e, dict)}
        if str(env.get("CUDA_DISABLE_CONTROL", "")).lower() != "true":
            mounts.append(Mount("/etc/ld.so.preload", str(vgpu / "ld.so.preload"), True))
        for host, container in (("license", "/tmp/license"), ("vgpuvalidator", "/usr/bin/vgpuvalidator")):
            if (vgpu / host).exists():
                mounts.append(Mount(container, str(vgpu / host), True))
        return ContainerResponse(envs, tuple(mounts))

    # -- recording ----------------------------------------------------------------------------------

    def _record(self, decision: _Decision, runtime: Mapping[int, MigInstance]) -> bool:
        """Patch the pod (module docstring, step 5); True when no container is left to allocate."""
        uid = (decision.pod.get("metadata") or {}).get("uid")
        finished = False

        def change(current: dict[str, Any]) -> dict[str, Any]:
            nonlocal finished
            if (current.get("metadata") or {}).get("uid") != uid:
                raise AllocateError(f"pod {decision.pod_key} was deleted and re-created during Allocate")
            ann = podlib.annotations(current)
            devices = decode_pod_devices(ann.get(names.VGPU_DEVICES_TO_ALLOCATE, ""), names.VGPU_DEVICES_TO_ALLOCATE)
            if decision.index < len(devices):
                devices = erase_container(devices, decision.index)
            patch = {names.VGPU_DEVICES_TO_ALLOCATE: encode_pod_devices(devices)}
            if runtime:
                allocations = decode_mig_allocations(ann.get(names.VGPU_MIG_ALLOCATIONS, ""))
                updated = []
                for a in allocations:
                    inst = runtime.get(a.device_index) if a.container_index == decision.index else None
                    if inst is not None:
                        assert inst.mig_uuid is not None and inst.compute_instance_id is not None
                        a = a.with_runtime(inst.mig_uuid, inst.gpu_instance_id, inst.compute_instance_id)
                    updated.append(a)
                patch[names.VGPU_MIG_ALLOCATIONS] = encode_mig_allocations(updated)
            finished = next_pending_container(devices) is None
            if finished:
                patch[names.BIND_PHASE] = names.BIND_PHASE_SUCCESS
            return {"metadata": {"annotations": patch}}

        meta = decision.pod.get("metadata") or {}
        self.kube.modify("pods", meta["name"], change, meta["namespace"], current=dict(decision.pod))
        return finished

    def _settle(self, decision: _Decision, runtime: Mapping[int, MigInstance]) -> None:
        """After success: the view knows who uses the instances."""
        with self.state.lock:
            for inst in runtime.values():
                assert inst.mig_uuid is not None
                self.state.owners[inst.mig_uuid] = decision.pod_key
                uid = (decision.pod.get("metadata") or {}).get("uid")
                if uid:
                    self.state.owner_uids[inst.mig_uuid] = uid
                self.state.idle_since.pop(inst.mig_uuid, None)

    def _fail(self, pod: Mapping[str, Any] | None, created: list[MigInstance], message: str) -> None:
        self.state.allocations["failed"] += 1
        note = self._rollback(created)
        self._changed()
        log.warning("allocate failed node=%s pod=%s reason=%s%s", self.options.node_name,
                    podlib.key(pod) if pod else "-", message, note)
        if pod is None:
            return
        meta = pod.get("metadata") or {}
        try:
            self.kube.annotate("pods", meta["name"], {names.BIND_PHASE: names.BIND_PHASE_FAILED}, meta["namespace"])
        except KubeError as exc:
            log.warning("cannot mark pod %s failed: %s", podlib.key(pod), exc)
        self.kube.event(pod, "Warning", FAILED_REASON, f"Allocate on node {self.options.node_name} failed: "
                        f"{message}{note}", self.options.component)
        self.release_lock(pod)

    def _rollback(self, created: list[MigInstance]) -> str:
        if not created:
            return ""
        try:
            self.state.note_destroyed(self.mig.destroy(created))
        except MigError as exc:
            log.error("rollback failed instances=%s error=%s", [i.describe() for i in created], exc)
            return f"; rolling back failed ({exc}): the reconciler retries"
        log.info("rolled back instances=%s", [i.describe() for i in created])
        return ""

    def release_lock(self, pod: Mapping[str, Any]) -> None:
        """Remove the node lock if this pod holds it (HAMi's owner check); errors are logged."""
        owner = podlib.key(pod)

        def change(node: dict[str, Any]) -> dict[str, Any] | None:
            value = ((node.get("metadata") or {}).get("annotations") or {}).get(names.NODE_LOCK)
            if not value:
                return None
            try:
                lock = decode_node_lock(value)
            except AnnotationError:
                return None
            if lock.owner != owner:
                return None
            return {"metadata": {"annotations": {names.NODE_LOCK: None}}}

        try:
            if self.kube.modify("nodes", self.options.node_name, change) is not None:
                log.info("node lock released node=%s owner=%s", self.options.node_name, owner)
        except (KubeError, NotFound) as exc:
            log.warning("cannot release the node lock node=%s owner=%s error=%s", self.options.node_name, owner, exc)


def same_profile(a: str, b: str) -> bool:
    """Two names of one hardware profile: equal, or the same compute slices and attributes
    (drivers name the memory differently: 3g.39gb / 3g.40gb); the caller checks the memory slices."""
    if a.strip().casefold() == b.strip().casefold():
        return True
    try:
        ga, _, attrs_a = parse_profile_name(a.strip().casefold())
        gb, _, attrs_b = parse_profile_name(b.strip().casefold())
    except ValueError:
        return False
    return ga == gb and attrs_a == attrs_b


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


__all__ = ["AllocateError", "Allocator", "ContainerResponse", "Mount", "same_profile"]
