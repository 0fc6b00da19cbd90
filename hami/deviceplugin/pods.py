"""Reading the node's pods: which are live, which await Allocate, who uses which MIG instance.

Pods are plain dicts as the API server returns them. A pod is *live* until it has finished
(Succeeded/Failed) or is gone: a pod being deleted may still run its containers, and an
instance it uses must not be reused or destroyed before kubelet has stopped it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from hami.api import AnnotationError, names
from hami.api.codecs import (
    MigAllocation,
    PodDevices,
    decode_bind_phase,
    decode_mig_allocations,
    decode_pod_devices,
    next_pending_container,
)

log = logging.getLogger(__name__)

Pod = Mapping[str, Any]


def key(pod: Pod) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def annotations(pod: Pod) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("annotations") or {}


def phase(pod: Pod) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def finished(pod: Pod) -> bool:
    return phase(pod) in ("Succeeded", "Failed")


def live(pod: Pod) -> bool:
    return not finished(pod)


def deleting(pod: Pod) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def to_allocate(pod: Pod) -> PodDevices:
    """The pod's remaining devices (AnnotationError when unreadable; () when absent)."""
    return decode_pod_devices(annotations(pod).get(names.VGPU_DEVICES_TO_ALLOCATE, ""),
                              names.VGPU_DEVICES_TO_ALLOCATE)


def mig_allocations(pod: Pod) -> tuple[MigAllocation, ...]:
    return decode_mig_allocations(annotations(pod).get(names.VGPU_MIG_ALLOCATIONS, ""))


def bind_phase_ok(pod: Pod) -> bool:
    """HAMi's rule: a pod awaits Allocate only in bind-phase allocating (or success between containers)."""
    value = annotations(pod).get(names.BIND_PHASE)
    if value is None:
        return False
    try:
        return decode_bind_phase(value).value in (names.BIND_PHASE_ALLOCATING, names.BIND_PHASE_SUCCESS)
    except AnnotationError:
        return False


def awaiting(pod: Pod) -> bool:
    """Pending, not being deleted, decided (bind-phase allocating) with a container left to allocate."""
    if phase(pod) != "Pending" or deleting(pod) or not bind_phase_ok(pod):
        return False
    try:
        return next_pending_container(to_allocate(pod)) is not None
    except AnnotationError as exc:
        log.warning("pod %s has an unreadable %s: %s", key(pod), names.VGPU_DEVICES_TO_ALLOCATE, exc)
        return False


def requests_resource(pod: Pod, resource: str) -> bool:
    spec = pod.get("spec") or {}
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or ():
            res = container.get("resources") or {}
            for part in ("limits", "requests"):
                if str((res.get(part) or {}).get(resource, "0")) not in ("0", ""):
                    return True
    return False


def undecided(pod: Pod) -> bool:
    """A GPU pod with no decision at all (no devices annotations)."""
    ann = annotations(pod)
    return names.VGPU_DEVICES_TO_ALLOCATE not in ann and names.VGPU_DEVICES_ALLOCATED not in ann


def instance_owners(pods: Iterable[Pod]) -> dict[str, str]:
    """MIG uuid → `<ns>/<name>` of the live pod its realised reservation belongs to."""
    owners: dict[str, str] = {}
    for pod in pods:
        if not live(pod):
            continue
        try:
            allocations = mig_allocations(pod)
        except AnnotationError as exc:
            log.warning("pod %s has an unreadable %s: %s", key(pod), names.VGPU_MIG_ALLOCATIONS, exc)
            continue
        for allocation in allocations:
            if allocation.mig_uuid:
                owners[allocation.mig_uuid] = key(pod)
    return owners


def instance_owner_uids(pods: Iterable[Pod]) -> dict[str, str]:
    """MIG uuid → uid of the live pod its realised reservation belongs to."""
    out: dict[str, str] = {}
    for pod in pods:
        uid = (pod.get("metadata") or {}).get("uid")
        if not uid or not live(pod):
            continue
        try:
            allocations = mig_allocations(pod)
        except AnnotationError:
            continue
        for allocation in allocations:
            if allocation.mig_uuid:
                out[allocation.mig_uuid] = uid
    return out


def unreadable(pods: Iterable[Pod]) -> list[str]:
    """Live pods whose MIG reservations cannot be decoded: the agent must not destroy anything
    while it cannot tell what they use (fail closed, as HAMi's reconciler does)."""
    out = []
    for pod in pods:
        if live(pod) and names.VGPU_MIG_ALLOCATIONS in annotations(pod):
            try:
                mig_allocations(pod)
            except AnnotationError:
                out.append(key(pod))
    return out


__all__ = [
    "Pod",
    "annotations",
    "awaiting",
    "bind_phase_ok",
    "deleting",
    "finished",
    "instance_owners",
    "key",
    "live",
    "mig_allocations",
    "phase",
    "requests_resource",
    "to_allocate",
    "undecided",
    "unreadable",
]
