"""Node registration: what each GPU is offered as (its plan), the annotations that tell the
scheduler (`hami.io/node-nvidia-register`, `hami.io/node-mig-instances`, the handshake), and the
device IDs kubelet sees.

A GPU's plan combines NVML (identity, health, MIG mode, profiles), the node config (mode,
filter, split count, scaling) and the operator (`hami.io/device-cordon`). Annotations are
written only when their content changes; the handshake is refreshed on its own timer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hami.api import AnnotationError, names
from hami.api.codecs import (
    Handshake,
    InstanceState,
    MigProfileInfo,
    NodeDevice,
    Placement,
    RealisedInstance,
    decode_node_lock,
    encode_handshake,
    encode_node_mig_instances,
    encode_node_register,
)
from hami.deviceplugin.config import NodeConfig
from hami.deviceplugin.inventory import Gpu, device_type
from hami.k8s import Kube
from hami.mig import MigInstance

log = logging.getLogger(__name__)

HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"


@dataclass(frozen=True)
class GpuPlan:
    """What the agent offers a GPU as. `note` says why it is unavailable ("" when it is not)."""

    gpu: Gpu
    mode: str
    cordoned: bool = False
    note: str = ""

    @property
    def uuid(self) -> str:
        return self.gpu.uuid

    @property
    def available(self) -> bool:
        return self.gpu.healthy and not self.cordoned and not self.note

    @property
    def is_mig(self) -> bool:
        return self.mode == names.MODE_MIG

    def reason(self) -> str:
        """Why the GPU is not offered, for logs and events."""
        if not self.gpu.healthy:
            return self.gpu.problem or "NVML reports it unhealthy"
        if self.cordoned:
            return f"cordoned by {names.DEVICE_CORDON}"
        return self.note


def plan(gpus: Iterable[Gpu], config: NodeConfig, cordoned: Iterable[str],
         notes: Mapping[str, str] | None = None) -> tuple[GpuPlan, ...]:
    """The registered GPUs (filtered ones left out), each with its effective mode. A GPU the
    config puts in MIG mode but that cannot do MIG is registered as hami-core (logged)."""
    cordon, notes = set(cordoned), notes or {}
    out = []
    for gpu in gpus:
        if config.filtered(gpu.uuid, gpu.index):
            continue
        mode = config.mode_of(gpu.uuid, gpu.index)
        if mode == names.MODE_MIG and not gpu.mig_capable:
            log.warning("gpu %s (%s) is not MIG-capable; registered as hami-core", gpu.uuid, gpu.name)
            mode = names.MODE_HAMI_CORE
        out.append(GpuPlan(gpu, mode, gpu.uuid in cordon, notes.get(gpu.uuid, "")))
    return tuple(out)


def replicas(p: GpuPlan, config: NodeConfig) -> int:
    """Device IDs kubelet sees for the GPU: the split count (hami-core); the most instances one
    profile allows (MIG; HAMi's count), at least 1 so the GPU stays visible."""
    if p.is_mig:
        return max(p.gpu.max_instances, 1)
    return config.device_split_count


def replica_ids(p: GpuPlan, config: NodeConfig) -> list[str]:
    return [f"{p.uuid}-{i}" for i in range(replicas(p, config))]


def gpu_of(device_id: str) -> str:
    """The GPU uuid of a kubelet device ID (`<uuid>-<n>`); the ID itself if it has no suffix."""
    head, sep, tail = device_id.rpartition("-")
    return head if sep and tail.isdigit() and head.startswith("GPU-") else device_id


def node_devices(plans: Iterable[GpuPlan], config: NodeConfig) -> tuple[NodeDevice, ...]:
    """The `hami.io/node-nvidia-register` device list (HAMi v2.10 fields, reference §1.5)."""
    out = []
    for p in plans:
        gpu = p.gpu
        if p.is_mig:
            total = gpu.compute_slices or 1
            profiles = tuple(
                MigProfileInfo(
                    name=prof.name,
                    memory_mb=prof.memory_mib,
                    core=-(-prof.compute_slices * 100 // total),  # HAMi: ceil, as the device string writes it
                    slice_count=prof.compute_slices,
                    placements=tuple(Placement(s, prof.memory_slices) for s in prof.placements),
                    compute_slices=prof.compute_slices,
                    memory_slices=prof.memory_slices,
                    flags=prof.flags,
                )
                for prof in gpu.profiles
            ) if gpu.mig_enabled else ()
            count, devmem, devcore = (gpu.max_instances if gpu.mig_enabled else 0), gpu.memory_mib, 100
        else:
            profiles = ()
            memory = gpu.memory_mib or config.preconfigured_device_memory
            count = config.device_split_count
            devmem = int(memory * config.device_memory_scaling)
            devcore = round(config.device_core_scaling * 100)
        out.append(NodeDevice(id=gpu.uuid, index=gpu.index, count=count, devmem=devmem, devcore=devcore,
                              type=device_type(gpu.name), numa=gpu.numa, mode=p.mode, health=p.available,
                              mig_profiles=profiles))
    return tuple(out)


def realised(instances: Iterable[MigInstance], owners: Mapping[str, str],
             idle_since: Mapping[str, datetime],
             owner_uids: Mapping[str, str] | None = None) -> tuple[RealisedInstance, ...]:
    """The `hami.io/node-mig-instances` list: every MIG device, in use by which pod or idle since
    when. A GPU instance without a compute instance is not a MIG device and is left out."""
    out = []
    for inst in instances:
        if inst.mig_uuid is None or inst.compute_instance_id is None:
            continue
        owner = owners.get(inst.mig_uuid)
        common = dict(gpu_uuid=inst.gpu_uuid, profile=inst.profile, placement=Placement(inst.placement, inst.size),
                      gpu_instance_id=inst.gpu_instance_id, compute_instance_id=inst.compute_instance_id,
                      mig_uuid=inst.mig_uuid)
        if owner is not None:
            out.append(RealisedInstance(**common, state=InstanceState.IN_USE, pod=owner,
                                        pod_uid=(owner_uids or {}).get(inst.mig_uuid)))
        else:
            out.append(RealisedInstance(**common, state=InstanceState.IDLE, since=idle_since[inst.mig_uuid]))
    return tuple(sorted(out, key=lambda i: (i.gpu_uuid, i.placement.start, i.gpu_instance_id)))


def _locked_by(value: str | None, owner: str) -> bool:
    if not value:
        return False
    try:
        return decode_node_lock(value).owner == owner
    except AnnotationError:
        return False


class Publisher:
    """Writes the node annotations, each only when its value differs from what the node carries."""

    def __init__(self, kube: Kube, node_name: str) -> None:
        self.kube = kube
        self.node_name = node_name
        self._written: dict[str, str] = {}

    def publish(self, devices: Iterable[NodeDevice], instances: Iterable[RealisedInstance], *,
                release: str | None = None, node: Mapping[str, Any] | None = None) -> bool:
        """Write register and realised instances where they differ from the node's; True when
        something was written. `release`: also drop the node lock if this pod (namespace/name)
        holds it, in the same write — after an Allocate, a bind waiting for the lock then sees
        one node change, not two (the second would fail its conditional lock patch). `node`: the
        node as the caller just read it (saves a read when still current). Raises KubeError
        (the caller retries on its next round)."""
        wanted = {names.NODE_REGISTER: encode_node_register(devices),
                  names.NODE_MIG_INSTANCES: encode_node_mig_instances(instances)}
        if release is None and all(self._written.get(k) == v for k, v in wanted.items()):
            return False

        patch: dict[str, str | None] = {}

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal patch
            annotations = (current.get("metadata") or {}).get("annotations") or {}
            patch = {k: v for k, v in wanted.items() if annotations.get(k) != v}
            if release is not None and _locked_by(annotations.get(names.NODE_LOCK), release):
                patch[names.NODE_LOCK] = None
            return {"metadata": {"annotations": patch}} if patch else None

        written = self.kube.modify("nodes", self.node_name, change,
                                   current=dict(node) if node is not None else None)
        self._written.update(wanted)
        if written is not None:
            log.info("node annotations written node=%s keys=%s", self.node_name, sorted(patch))
        return written is not None

    def forget(self) -> None:
        """Compare with the node again on the next publish (after an error or a restart)."""
        self._written.clear()

    def handshake(self, now: datetime) -> None:
        self.kube.annotate("nodes", self.node_name, {names.NODE_HANDSHAKE: encode_handshake(Handshake.reported(now))})


__all__ = ["HEALTHY", "UNHEALTHY", "GpuPlan", "Publisher", "gpu_of", "node_devices", "plan", "realised",
           "replica_ids", "replicas"]
