"""What a Pod asks for, parsed once from its spec and annotations (HAMi semantics).

`Request` is the one shape the engine consumes. Parsing lives in `hami.api.pods`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields


class Mode(enum.IntEnum):
    """`nvidia.com/vgpu-mode`: which kind of GPU may serve the request."""

    ANY = 0  # no annotation: a MIG instance or a hami-core share
    HAMI_CORE = 1
    MIG = 2


class NodePolicy(enum.StrEnum):
    BINPACK = "binpack"
    SPREAD = "spread"


class GpuPolicy(enum.StrEnum):
    BINPACK = "binpack"
    SPREAD = "spread"


@dataclass(frozen=True)
class ContainerRequest:
    """One container's GPU ask. Exactly one of memory_mib / memory_percent is non-zero
    when count > 0 (the config defaults are already applied)."""

    name: str
    index: int  # HAMi's container index: init containers first, then app containers
    init: bool
    count: int  # nvidia.com/gpu: devices (MIG instances or hami-core shares)
    memory_mib: int = 0  # nvidia.com/gpumem × memoryFactor, per device
    memory_percent: int = 0  # nvidia.com/gpumem-percentage (1..100), per device
    cores: int = 0  # nvidia.com/gpucores (0..100); 100 = an exclusive hami-core GPU


@dataclass(frozen=True)
class Request:
    """A Pod's whole ask. `containers` holds every container (count 0 for those without GPUs)
    so container indices match HAMi's device-string positions."""

    containers: tuple[ContainerRequest, ...]
    mode: Mode = Mode.ANY
    use_gpu_types: tuple[str, ...] = ()  # case-insensitive substrings of the GPU type
    nouse_gpu_types: tuple[str, ...] = ()
    use_gpu_uuids: tuple[str, ...] = ()  # exact GPU uuids
    nouse_gpu_uuids: tuple[str, ...] = ()
    node_policy: NodePolicy | None = None  # hami.io/node-scheduler-policy (None: scheduler default)
    gpu_policy: GpuPolicy | None = None  # hami.io/gpu-scheduler-policy (None: scheduler default)
    # The engine looks a request up by value on every filter, prioritize and bind: hash once.
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def wants_gpus(self) -> bool:
        return any(c.count > 0 for c in self.containers)
