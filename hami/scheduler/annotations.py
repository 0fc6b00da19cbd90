"""The engine's values to and from HAMi's annotations (ARCHITECTURE §3).

`hami.api` holds the codecs (strings ↔ wire values) and `hami._core` the engine's types; this
module is the one place that maps between them, so the scheduler's binder (decision → pod
annotations) and its cache (pod and node annotations → engine) can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from hami._core import CorePick, Decision, GpuMode, GpuSpec, MigPick
from hami.api import codecs, names
from hami.api.errors import AnnotationError
from hami.devices import naming
from hami.devices.errors import UnknownModelError, UnknownProfileError
from hami.devices.models import GpuModel


def profile_identity(gpu_type: str, profile: str, learned: Mapping[str, GpuModel] | None = None) -> tuple[int, int]:
    """(memory MiB as NVML reports it, core percent) of a MIG profile, as HAMi v2.10 writes
    them in the device string, from the catalog or a model learned from a registration;
    (0, 0) when neither knows it."""
    model = (learned or {}).get(gpu_type)
    try:
        model = model or naming.find_model(gpu_type)
        prof = model.mig.profile(profile) if model.mig is not None else None
    except (UnknownModelError, UnknownProfileError, KeyError):
        return 0, 0
    if prof is None:
        return 0, 0
    return prof.memory_mib, -(-prof.compute_slices * 100 // model.mig.compute_slices)


def decision_annotations(decision: Decision, gpu_types: Mapping[str, str], now: datetime,
                         learned: Mapping[str, GpuModel] | None = None) -> dict[str, str]:
    """The pod annotations of a bind (ARCHITECTURE §3): the device string (allocated and
    to-allocate), the MIG reservations, the chosen node and times, and `bind-phase=allocating`."""
    containers: list[list[codecs.ContainerDevice]] = []
    mig: list[codecs.MigAllocation] = []
    for ci, devices in enumerate(decision.containers):
        entry = []
        for di, pick in enumerate(devices):
            if isinstance(pick, MigPick):
                mem, cores = profile_identity(gpu_types.get(pick.gpu_uuid, ""), pick.profile, learned)
                entry.append(codecs.ContainerDevice(pick.gpu_uuid, names.DEVICE_TYPE_NVIDIA, mem, cores))
                mig.append(codecs.MigAllocation(ci, di, pick.gpu_uuid, pick.profile,
                                                codecs.Placement(pick.start, pick.size)))
            else:
                entry.append(codecs.ContainerDevice(pick.gpu_uuid, names.DEVICE_TYPE_NVIDIA,
                                                    pick.memory_mib, pick.cores))
        containers.append(entry)
    devices = codecs.encode_pod_devices(containers)
    out = {
        names.VGPU_NODE: decision.node,
        names.VGPU_TIME: codecs.encode_unix_time(now),
        names.VGPU_DEVICES_ALLOCATED: devices,
        names.VGPU_DEVICES_TO_ALLOCATE: devices,
        names.BIND_PHASE: names.BIND_PHASE_ALLOCATING,
        names.BIND_TIME: codecs.encode_unix_time(now),
    }
    if mig:
        out[names.VGPU_MIG_ALLOCATIONS] = codecs.encode_mig_allocations(mig)
    return out


@dataclass(frozen=True)
class RecordedDecision:
    """What a pod's annotations say was decided for it."""

    node: str
    decision: Decision
    legacy_mig: tuple[str, ...]  # GPUs holding a HAMi v2.5–v2.9 instance (placement from the agent)
    phase: str | None  # hami.io/bind-phase
    bind_time: int | None


def recorded_decision(pod: Mapping[str, Any]) -> RecordedDecision | None:
    """The decision recorded on `pod`, or None when it has none (not ours, or not bound yet).

    Raises `AnnotationError` for annotations that do not decode (the cache logs and skips them).
    """
    meta = pod.get("metadata") or {}
    ann: Mapping[str, str] = meta.get("annotations") or {}
    node = ann.get(names.VGPU_NODE)
    allocated = ann.get(names.VGPU_DEVICES_ALLOCATED)
    if not node or allocated is None:
        return None
    devices = codecs.decode_pod_devices(allocated)
    mig_text = ann.get(names.VGPU_MIG_ALLOCATIONS)
    mig = {(a.container_index, a.device_index): a for a in codecs.decode_mig_allocations(mig_text)} if mig_text else {}
    containers = []
    legacy = []
    for ci, entry in enumerate(devices):
        picks = []
        for di, device in enumerate(entry):
            allocation = mig.get((ci, di))
            if allocation is not None:
                picks.append(MigPick(allocation.gpu_uuid, allocation.profile, allocation.placement.start,
                                     allocation.placement.size))
            elif device.legacy_mig is not None:
                legacy.append(device.uuid)  # a HAMi v2.5–v2.9 instance: the agent reports where
            else:
                picks.append(CorePick(device.uuid, device.memory_mib, device.cores))
        containers.append(tuple(picks))
    phase = ann.get(names.BIND_PHASE)
    bind_time = None
    if ann.get(names.BIND_TIME):
        try:
            bind_time = codecs.decode_unix_time(ann[names.BIND_TIME])
        except AnnotationError:
            bind_time = None
    return RecordedDecision(node, Decision(meta.get("uid", ""), node, tuple(containers)), tuple(legacy),
                            phase, bind_time)


def same_devices(a: Decision, b: Decision) -> bool:
    """Two decisions hold the same devices (the engine's carries reuse/destroy details the
    annotations do not)."""
    if a.node != b.node or len(a.containers) != len(b.containers):
        return False

    def key(pick) -> tuple:
        if isinstance(pick, MigPick):
            return ("mig", pick.gpu_uuid, pick.profile, pick.start)
        return ("core", pick.gpu_uuid, pick.memory_mib, pick.cores)

    return all(sorted(map(key, x)) == sorted(map(key, y)) for x, y in zip(a.containers, b.containers, strict=True))


# -- nodes -----------------------------------------------------------------------------------


def gpu_specs(devices: tuple[codecs.NodeDevice, ...], healthy: bool = True) -> list[GpuSpec]:
    """The engine's GPU list of a node from `hami.io/node-nvidia-register`."""
    out = []
    for d in devices:
        mode = GpuMode.MIG if d.is_mig else GpuMode.HAMI_CORE
        out.append(GpuSpec(d.id, d.type, mode, d.devmem, d.count, d.devcore, d.health and healthy, d.index))
    return out


def with_pod_uids(instances: tuple[codecs.RealisedInstance, ...],
                  pod_uids: Mapping[str, str]) -> tuple[codecs.RealisedInstance, ...]:
    """`hami.io/node-mig-instances` as the engine folds it: an in-use instance is matched to its
    pod by `podUID`; one from an agent that writes none (older ones) gets the uid the cache knows
    for its `<namespace>/<name>` through `pod_uids` (none for a pod the cache has not seen)."""
    return tuple(
        replace(inst, pod_uid=pod_uids.get(inst.pod or "")) if inst.in_use and not inst.pod_uid else inst
        for inst in instances
    )


def handshake_age(value: str | None, now: datetime) -> float | None:
    """Seconds since the agent last reported (`Reported <time>`), None when the node carries no
    handshake of the agent's (HAMi v2.8+ agents write none) or it does not decode."""
    if not value:
        return None
    try:
        handshake = codecs.decode_handshake(value)
    except AnnotationError:
        return None
    moment = handshake.time() if handshake.kind is codecs.HandshakeKind.REPORTED else None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (now - moment).total_seconds()
