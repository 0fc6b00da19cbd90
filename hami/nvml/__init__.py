"""ctypes binding over NVML's MIG subset; the only package that loads libnvidia-ml.

Responsibility: load one NVML library per `Nvml` object (path `libnvidia-ml.so.1`, or the
`HAMI_NVML_LIBRARY` environment variable read by `Nvml.from_environment()` — by the caller, never
at import), declare every function it calls in one signature table (`signatures`), map each
`nvmlReturn_t` to an exception class carrying NVML's own message (`errors`), and return typed,
frozen results (`results`); C out-parameters never reach callers.

Prohibitions: standard library only (the `smoke` tool alone also reads `hami.devices` to diff
what a real GPU reports against the catalog); no module-global library state; nothing from the
scheduler, the agent, Kubernetes or the simulator. Tests load the simulated library
(`native/fakenvml`, built into `hami/sim/_lib`) through the same `Nvml` class.

Modules: `library` (`Nvml`), `signatures`, `structs` (ctypes mirrors, version words),
`results`, `errors`, `smoke` (`python -m hami.nvml.smoke`: the read-only GPU smoke check).
Older drivers: symbol and struct-version fallbacks; MIG management needs `MINIMUM_DRIVER` (R470).
"""

from hami.nvml import errors
from hami.nvml.errors import NvmlError, Return
from hami.nvml.library import DEFAULT_LIBRARY, LIBRARY_ENV, MINIMUM_DRIVER, Nvml
from hami.nvml.results import (
    ComputeInstance,
    ComputeInstanceInfo,
    ComputeInstanceProfileInfo,
    Device,
    GpuInstance,
    GpuInstanceInfo,
    GpuInstanceProfileInfo,
    Memory,
    MigMode,
    MigModeChange,
    PciInfo,
    Placement,
    ProcessInfo,
)

__all__ = [
    "DEFAULT_LIBRARY",
    "LIBRARY_ENV",
    "MINIMUM_DRIVER",
    "ComputeInstance",
    "ComputeInstanceInfo",
    "ComputeInstanceProfileInfo",
    "Device",
    "GpuInstance",
    "GpuInstanceInfo",
    "GpuInstanceProfileInfo",
    "Memory",
    "MigMode",
    "MigModeChange",
    "Nvml",
    "NvmlError",
    "PciInfo",
    "Placement",
    "ProcessInfo",
    "Return",
    "errors",
]
