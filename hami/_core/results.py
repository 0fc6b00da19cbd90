"""Engine inputs and results: plain frozen dataclasses and integer codes.

Rejections are small integer reason bits (STYLE §6.12); text is made only at the edge,
from the constant table here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from hami.api.codecs import RealisedInstance


class Code(enum.IntEnum):
    """Outcome per node, mapped 1:1 onto the extender reply (STYLE §6.10)."""

    SUCCESS = 0
    UNSCHEDULABLE = 1  # FailedNodes: may fit later (capacity in use)
    UNSCHEDULABLE_AND_UNRESOLVABLE = 2  # FailedAndUnresolvableNodes: never on this node as it is
    ERROR = 3  # internal fault: never reported as "does not fit"


class Reason(enum.IntFlag):
    """Why GPUs of a node were rejected; several may be set."""

    NO_GPUS = 1 << 0  # the node registered no GPU
    UNHEALTHY = 1 << 1
    CORDONED = 1 << 2  # hami.io/device-cordon
    MODE_MISMATCH = 1 << 3  # nvidia.com/vgpu-mode
    TYPE_MISMATCH = 1 << 4  # use-gputype / nouse-gputype
    UUID_MISMATCH = 1 << 5  # use-gpuuuid / nouse-gpuuuid
    SLOTS_EXHAUSTED = 1 << 6  # deviceSplitCount tasks already on the GPU
    INSUFFICIENT_MEMORY = 1 << 7
    INSUFFICIENT_CORES = 1 << 8
    EXCLUSIVE_CONFLICT = 1 << 9  # gpucores: 100 on a shared GPU, or a shared task on an exclusive one
    MEMORY_EXCEEDS_GPU = 1 << 10  # more than the GPU has at all
    MIG_PROFILE_TOO_SMALL = 1 << 11  # more memory than the model's largest MIG profile
    MIG_NO_PLACEMENT = 1 << 12  # no free placement inside an allowed geometry
    TOO_FEW_GPUS = 1 << 13  # fewer GPUs have room than the container asks for
    NODE_TOO_SMALL = 1 << 14  # the node has fewer usable GPUs than the container asks for


RESOLVABLE = (
    Reason.UNHEALTHY
    | Reason.SLOTS_EXHAUSTED
    | Reason.INSUFFICIENT_MEMORY
    | Reason.INSUFFICIENT_CORES
    | Reason.EXCLUSIVE_CONFLICT
    | Reason.MIG_NO_PLACEMENT
    | Reason.TOO_FEW_GPUS
)

REASON_TEXT = {
    Reason.NO_GPUS: "node registered no GPU",
    Reason.UNHEALTHY: "GPU unhealthy",
    Reason.CORDONED: "GPU cordoned (hami.io/device-cordon)",
    Reason.MODE_MISMATCH: "GPU mode does not match nvidia.com/vgpu-mode",
    Reason.TYPE_MISMATCH: "GPU type excluded by use-gputype/nouse-gputype",
    Reason.UUID_MISMATCH: "GPU excluded by use-gpuuuid/nouse-gpuuuid",
    Reason.SLOTS_EXHAUSTED: "GPU already runs deviceSplitCount tasks",
    Reason.INSUFFICIENT_MEMORY: "not enough free GPU memory",
    Reason.INSUFFICIENT_CORES: "not enough free GPU cores",
    Reason.EXCLUSIVE_CONFLICT: "exclusive use (gpucores 100) conflicts with sharing",
    Reason.MEMORY_EXCEEDS_GPU: "requested memory exceeds the GPU's total memory",
    Reason.MIG_PROFILE_TOO_SMALL: "requested memory exceeds the largest MIG profile",
    Reason.MIG_NO_PLACEMENT: "no free MIG placement inside an allowed geometry",
    Reason.TOO_FEW_GPUS: "fewer GPUs with room than requested",
    Reason.NODE_TOO_SMALL: "the node has fewer usable GPUs than requested",
}


def describe(reasons: int) -> str:
    """Readable text for a reason bitmask (the edge's job; kept beside the table)."""
    if not reasons:
        return "fits"
    return "; ".join(text for bit, text in REASON_TEXT.items() if reasons & bit)


class GpuMode(enum.StrEnum):
    HAMI_CORE = "hami-core"
    MIG = "mig"


@dataclass(frozen=True)
class GpuSpec:
    """One GPU as a node registers it (decoded from hami.io/node-nvidia-register)."""

    uuid: str
    type: str  # NVML name, e.g. 'NVIDIA A100-SXM4-80GB'
    mode: GpuMode = GpuMode.HAMI_CORE
    memory_mib: int = 0  # devmem (after deviceMemoryScaling) for hami-core
    split_count: int = 10  # deviceSplitCount
    cores: int = 100  # devcore (deviceCoreScaling × 100)
    healthy: bool = True
    index: int = 0


@dataclass(frozen=True)
class MigPick:
    """One MIG instance for one device of a container."""

    gpu_uuid: str
    profile: str
    start: int
    size: int
    reuse: RealisedInstance | None = None  # an idle instance already at this placement
    destroy: tuple[RealisedInstance, ...] = ()  # idle instances to destroy first


@dataclass(frozen=True)
class CorePick:
    """One hami-core share for one device of a container."""

    gpu_uuid: str
    memory_mib: int
    cores: int


Pick = MigPick | CorePick


@dataclass(frozen=True)
class Decision:
    """The exact devices for every container (indexed like Request.containers)."""

    pod_uid: str
    node: str
    containers: tuple[tuple[Pick, ...], ...]

    def picks(self):
        for index, devices in enumerate(self.containers):
            for pick in devices:
                yield index, pick


@dataclass(frozen=True)
class Rejection:
    node: str
    code: Code
    reasons: int
    message: str


@dataclass(frozen=True)
class Conflict:
    """A recorded decision or realised instance that could not be applied as it is."""

    pod_uid: str | None
    gpu_uuid: str
    detail: str


@dataclass(frozen=True)
class FitResult:
    """Per candidate node (same order as the ids passed in)."""

    node_ids: np.ndarray
    codes: np.ndarray  # uint8 Code
    reasons: np.ndarray  # uint32 Reason bits

    def ok(self) -> np.ndarray:
        return self.codes == Code.SUCCESS


@dataclass(frozen=True)
class Features:
    """Engine switches, passed in (never read from globals or env inside the engine)."""

    default_node_policy: str = "binpack"
    """Node policy when the pod does not name one: fill nodes so whole nodes stay free."""
    default_gpu_policy: str | None = None
    """GPU policy when the pod does not name one. None: the policy's own default — binpack for
    ours (fill GPUs so whole GPUs stay free), spread for the HAMi baselines (HAMi's
    ``--gpu-scheduler-policy`` default)."""
    histogram_decay: float = 0.995
    """Per observed request; ~200 requests of memory for the fragmentation-aware mix."""
    prior_strength: float = 20.0
    """Weight of the prior (uniform over base profiles) against the observed histogram."""
    refresh_every: int = 64
    """Decisions between checks of the profile mix (the tables use a snapshot of it)."""
    refresh_threshold: float = 0.02
    """Recompute the fragmentation tables when a profile's share of the mix moved this much."""
    prior: dict[str, float] = field(default_factory=dict)
    """Optional prior per profile name (e.g. {'1g.10gb': 3}); missing names weigh 1."""
    hami_memory: bool = True
    """The HAMi baselines match requests as HAMi does (NVML's profile sizes, percentages of the
    GPU's memory). False gives them our nominal rule, so a comparison isolates placement."""
