"""Value types of the MIG manager: realised instances, desired instances, reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hami.mig.errors import MigError


@dataclass(frozen=True)
class MigInstance:
    """One GPU instance as it exists on the node, with the compute instance that makes it a MIG
    device. `compute_instance_id` / `mig_uuid` are None for a GPU instance without any compute
    instance (left behind by a crash between the two creates); such a leftover is never in use."""

    gpu_uuid: str
    gpu_index: int
    profile: str  # the profile's display name (the driver's, e.g. "3g.40gb"; see ProfileInfo)
    profile_id: int  # the device-specific GPU-instance profile id
    placement: int  # first memory slice
    size: int  # memory slices
    gpu_instance_id: int
    compute_instance_id: int | None
    mig_uuid: str | None

    @property
    def slot(self) -> tuple[str, int, int]:
        """(GPU, profile id, placement): what the scheduler names; unique on a GPU."""
        return (self.gpu_uuid, self.profile_id, self.placement)

    def describe(self) -> str:
        where = f"{self.profile} at placement {self.placement} on GPU {self.gpu_uuid}"
        ids = f"GI {self.gpu_instance_id}" + (
            f"/CI {self.compute_instance_id}" if self.compute_instance_id is not None else ""
        )
        return f"{where} ({ids}, {self.mig_uuid or 'no MIG device'})"


@dataclass(frozen=True)
class Desired:
    """An instance that should exist: profile name (the driver's, the catalog's, or an alias
    with the same compute slices, flags and about the same size) at a placement on a GPU."""

    gpu_uuid: str
    profile: str
    placement: int


@dataclass(frozen=True)
class Discovery:
    """What `MigManager.discover` found. A GPU NVML could not be read (after retries) is in
    `unknown`, with its error in `unknown_errors` (same order): its instances are in neither
    `instances` nor `lost` — a failed call is never a loss; a later discover compares again."""

    instances: tuple[MigInstance, ...]
    lost: tuple[MigInstance, ...]  # known before (this manager's memory or `previous`), gone now
    mig_mode_lost: tuple[str, ...]  # GPUs (UUIDs) whose MIG mode was on before and is off now
    mig_enabled: tuple[str, ...]  # GPUs with MIG mode on now
    unknown: tuple[str, ...] = ()  # GPUs (UUIDs) whose state could not be read
    unknown_errors: tuple[MigError, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every GPU was read."""
        return not self.unknown


@dataclass(frozen=True)
class StuckInstance:
    """An idle, undesired instance NVML refused to destroy (IN_USE with no process listed: another
    NVML client such as DCGM holds it), or could not destroy; reconcile went on without it."""

    instance: MigInstance
    error: MigError


@dataclass(frozen=True)
class GpuFailure:
    """A GPU reconcile could not complete (its own creations were rolled back)."""

    gpu_uuid: str
    error: MigError


@dataclass(frozen=True)
class ReconcileResult:
    created: tuple[MigInstance, ...]
    destroyed: tuple[MigInstance, ...]
    kept: tuple[MigInstance, ...]  # desired and already there
    kept_in_use: tuple[MigInstance, ...]  # not desired, but in use: left alone
    stuck: tuple[StuckInstance, ...] = ()  # not desired, idle, but NVML would not destroy them
    failed: tuple[GpuFailure, ...] = ()  # GPUs not reconciled (reconcile raises ReconcileError then)

    @property
    def ok(self) -> bool:
        return not self.failed
