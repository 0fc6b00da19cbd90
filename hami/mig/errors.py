"""Errors of the MIG manager: every one names the GPU, the profile, the placement and the NVML
error behind it, so that a failed Allocate tells the operator what to look at."""

from __future__ import annotations

from hami.nvml import errors as nvml_errors


class MigError(Exception):
    """A MIG operation failed. Attributes: gpu (UUID), profile, placement, nvml_error."""

    def __init__(
        self,
        message: str,
        *,
        gpu: str = "",
        profile: str = "",
        placement: int | None = None,
        nvml_error: nvml_errors.NvmlError | None = None,
    ) -> None:
        self.gpu = gpu
        self.profile = profile
        self.placement = placement
        self.nvml_error = nvml_error
        super().__init__(message)


class UnknownGpuError(MigError):
    """No GPU with that UUID on this node."""


class UnknownProfileError(MigError):
    """The GPU has no MIG profile by that name, or the placement is not one of the profile's."""


class MigDisabledError(MigError):
    """The GPU is not MIG-capable or its MIG mode is off."""


class MigInUseError(MigError):
    """Refused: the instance has processes attached or is assigned to a live pod."""


class ReconcileError(MigError):
    """reconcile() failed; what it created was rolled back. `destroyed` lists the idle, undesired
    instances it had already destroyed (those are not re-created)."""

    def __init__(self, message: str, *, destroyed: tuple = (), cause: MigError | None = None, **kw) -> None:
        if cause is not None:
            kw = {"gpu": cause.gpu, "profile": cause.profile, "placement": cause.placement,
                  "nvml_error": cause.nvml_error, **kw}  # fmt: skip
        super().__init__(message, **kw)
        self.destroyed = destroyed
