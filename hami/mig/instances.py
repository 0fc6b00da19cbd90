"""Value types of the MIG manager: realised instances, desired instances, reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MigInstance:
    """One GPU instance as it exists on the node, with the compute instance that makes it a MIG
    device. `compute_instance_id` / `mig_uuid` are None for a GPU instance without any compute
    instance (left behind by a crash between the two creates); such a leftover is never in use."""

    gpu_uuid: str
    gpu_index: int
    profile: str  # the device's profile name, e.g. "3g.40gb"
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
    """An instance that should exist: profile name (the device's, or an alias the catalog
    resolves) at a placement on a GPU."""

    gpu_uuid: str
    profile: str
    placement: int


@dataclass(frozen=True)
class Discovery:
    """What `MigManager.discover` found."""

    instances: tuple[MigInstance, ...]
    lost: tuple[MigInstance, ...]  # known before (this manager's memory or `previous`), gone now
    mig_mode_lost: tuple[str, ...]  # GPUs (UUIDs) whose MIG mode was on before and is off now
    mig_enabled: tuple[str, ...]  # GPUs with MIG mode on now


@dataclass(frozen=True)
class ReconcileResult:
    created: tuple[MigInstance, ...]
    destroyed: tuple[MigInstance, ...]
    kept: tuple[MigInstance, ...]  # desired and already there
    kept_in_use: tuple[MigInstance, ...]  # not desired, but in use: left alone
