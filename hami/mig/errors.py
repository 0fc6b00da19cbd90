"""Errors of the MIG manager: every one names the GPU, the profile, the placement and the NVML
error behind it, so that a failed Allocate tells the operator what to look at.

Two kinds are kept apart on purpose: a request that cannot be met (`UnknownProfileError`,
`MigDisabledError`, `MigInUseError`) and an NVML call that failed (`NvmlCallError`, which says
nothing about what exists: a transient error must never read as "no such profile" or "gone").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hami.nvml import errors as nvml_errors

if TYPE_CHECKING:
    from hami.mig.instances import MigInstance, ReconcileResult


class MigError(Exception):
    """A MIG operation failed. Attributes: gpu (UUID), profile, placement, nvml_error, and
    `destroyed`: the instances an interrupted destroy had already removed (else empty)."""

    def __init__(
        self,
        message: str,
        *,
        gpu: str = "",
        profile: str = "",
        placement: int | None = None,
        nvml_error: nvml_errors.NvmlError | None = None,
        destroyed: tuple[MigInstance, ...] = (),
    ) -> None:
        self.gpu = gpu
        self.profile = profile
        self.placement = placement
        self.nvml_error = nvml_error
        self.destroyed = tuple(destroyed)
        super().__init__(message)


class NvmlCallError(MigError):
    """An NVML call failed (`.nvml_error` says how). Nothing follows from it about what exists:
    the profile may exist, the instance may be there. Reads were retried before this was raised;
    retry later."""


class UnknownGpuError(MigError):
    """No GPU with that UUID on this node."""


class UnknownProfileError(MigError):
    """The GPU has no such MIG profile (its profile table was read completely), or the placement
    is not one of the profile's."""


class MigDisabledError(MigError):
    """The GPU is not MIG-capable or its MIG mode is off."""


class MigInUseError(MigError):
    """Refused: the instance has processes attached, is assigned to a live pod, or NVML refuses
    to destroy it (another NVML client such as DCGM holds it)."""


class ReconcileError(MigError):
    """reconcile() could not complete: invalid desires (nothing changed, `result` is None), or
    one or more GPUs failed (`result` is the partial outcome: what other GPUs got stays, each
    failed GPU's own creations were rolled back). `destroyed` lists the idle, undesired instances
    destroyed (those are not re-created)."""

    def __init__(
        self,
        message: str,
        *,
        destroyed: tuple = (),
        cause: MigError | None = None,
        result: ReconcileResult | None = None,
        **kw,
    ) -> None:
        if cause is not None:
            kw = {"gpu": cause.gpu, "profile": cause.profile, "placement": cause.placement,
                  "nvml_error": cause.nvml_error, **kw}  # fmt: skip
        super().__init__(message, destroyed=destroyed, **kw)
        self.result = result
