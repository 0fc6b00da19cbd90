"""Typed results of the binding: opaque handles and frozen dataclasses, no ctypes outside.

Handles wrap the pointer value NVML returned and pass straight back into ctypes through
`_as_parameter_`. A handle of a destroyed instance is stale: NVML answers INVALID_ARGUMENT
(re-query after any destroy or reset). Units are in the field names (`_bytes`, `_mib`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    """nvmlDevice_t: a physical GPU or a MIG device."""

    handle: int

    @property
    def _as_parameter_(self) -> int:
        return self.handle


@dataclass(frozen=True)
class GpuInstance:
    """nvmlGpuInstance_t."""

    handle: int

    @property
    def _as_parameter_(self) -> int:
        return self.handle


@dataclass(frozen=True)
class ComputeInstance:
    """nvmlComputeInstance_t."""

    handle: int

    @property
    def _as_parameter_(self) -> int:
        return self.handle


@dataclass(frozen=True)
class Memory:
    """Device memory in bytes (`reserved` is 0 from the unversioned call)."""

    total_bytes: int
    free_bytes: int
    used_bytes: int
    reserved_bytes: int = 0

    @property
    def total_mib(self) -> int:
        return self.total_bytes // (1024 * 1024)


@dataclass(frozen=True)
class PciInfo:
    bus_id: str  # "00000000:07:00.0"
    domain: int
    bus: int
    device: int
    pci_device_id: int  # device << 16 | vendor (0x10DE)
    pci_subsystem_id: int


@dataclass(frozen=True)
class MigMode:
    """Current and pending MIG mode; they differ while a change waits for a reset."""

    current: bool
    pending: bool


@dataclass(frozen=True)
class MigModeChange:
    """What nvmlDeviceSetMigMode reported: the call succeeded; `activation` says whether the mode
    changed (SUCCESS), stays pending (RESET_REQUIRED) or was refused (IN_USE: processes or
    instances). Read `mode` to see where the GPU stands now."""

    activation: int  # nvmlReturn_t
    activation_message: str
    mode: MigMode

    @property
    def activated(self) -> bool:
        return self.activation == 0


@dataclass(frozen=True)
class Placement:
    """{start, size}: memory slices for a GPU instance, compute slices inside a GPU instance
    for a compute instance."""

    start: int
    size: int


@dataclass(frozen=True)
class GpuInstanceProfileInfo:
    """A GPU-instance profile as the device reports it; `id` keys every other GI call."""

    id: int
    slice_count: int  # compute slices (the g of 3g.40gb)
    instance_count: int  # how many can exist at once
    multiprocessor_count: int
    copy_engine_count: int
    decoder_count: int
    encoder_count: int
    jpeg_count: int
    ofa_count: int
    memory_mib: int  # NVML's memorySizeMB (MiB)
    name: str  # the driver's name ("MIG 1g.10gb"); "" from the v1 struct
    p2p_supported: bool | None  # v1/v2 only
    capabilities: int | None  # v3 only (NVML_GPU_INSTANCE_PROFILE_CAPS_*)
    version: int  # 1, 2 or 3: the struct the driver filled

    @property
    def profile_name(self) -> str:
        """The name without NVML's "MIG " prefix: "1g.10gb"."""
        return self.name.removeprefix("MIG ").strip()


@dataclass(frozen=True)
class GpuInstanceInfo:
    device: Device  # the parent GPU
    id: int
    profile_id: int
    placement: Placement


@dataclass(frozen=True)
class ComputeInstanceProfileInfo:
    id: int
    slice_count: int
    instance_count: int
    multiprocessor_count: int
    shared_copy_engine_count: int
    shared_decoder_count: int
    shared_encoder_count: int
    shared_jpeg_count: int
    shared_ofa_count: int
    name: str  # "" from the v1 struct
    capabilities: int | None  # v3 only
    version: int


@dataclass(frozen=True)
class ComputeInstanceInfo:
    """From nvmlComputeInstanceGetInfo_v2: `device` is the MIG device of this compute instance."""

    device: Device
    gpu_instance: GpuInstance
    id: int
    profile_id: int
    placement: Placement


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    used_memory_bytes: int | None  # None when NVML cannot tell
    gpu_instance_id: int | None  # None when MIG is off
    compute_instance_id: int | None
