"""Resource and annotation names: HAMi's exact strings, plus the one annotation of ours.

Everything that crosses a process boundary is named here, once, so that the scheduler, the node
agent and the simulator can never disagree on a spelling.
"""

from __future__ import annotations

from typing import Final

# --- resources (hami-scheduler-device ConfigMap `nvidia:` defaults; configurable there) ---------

RESOURCE_COUNT: Final = "nvidia.com/gpu"
RESOURCE_MEMORY: Final = "nvidia.com/gpumem"
RESOURCE_MEMORY_PERCENTAGE: Final = "nvidia.com/gpumem-percentage"
RESOURCE_CORES: Final = "nvidia.com/gpucores"
RESOURCE_PRIORITY: Final = "nvidia.com/priority"

SCHEDULER_NAME: Final = "hami-scheduler"

# --- node annotations ---------------------------------------------------------------------------

NODE_REGISTER: Final = "hami.io/node-nvidia-register"
"""The agent's device list (HAMi v2.8+ JSON; the v2.5-v2.7 colon form is still decoded)."""
NODE_HANDSHAKE: Final = "hami.io/node-handshake"
"""Liveness: `Reported <time>` (agent), `Requesting_<time>` / `Deleted_<time>` (scheduler)."""
NODE_MIG_INSTANCES: Final = "hami.io/node-mig-instances"
"""Ours: the MIG instances that exist on the node, in use or idle (written by the agent)."""
DEVICE_CORDON: Final = "hami.io/device-cordon"
"""Operator-written comma list of GPU uuids the scheduler must skip."""
NODE_LOCK: Final = "hami.io/mutex.lock"
"""`<RFC3339>,<namespace>,<pod>`: one in-flight bind per node."""

# --- pod annotations written by the scheduler and the agent --------------------------------------

VGPU_NODE: Final = "hami.io/vgpu-node"
"""Chosen node name; also set as a label of the same key."""
VGPU_TIME: Final = "hami.io/vgpu-time"
"""Unix seconds of the scheduling decision."""
VGPU_DEVICES_ALLOCATED: Final = "hami.io/vgpu-devices-allocated"
"""The permanent record of the decision (HAMi device string)."""
VGPU_DEVICES_TO_ALLOCATE: Final = "hami.io/vgpu-devices-to-allocate"
"""Same encoding; the agent empties each container's entry as it allocates it."""
VGPU_MIG_ALLOCATIONS: Final = "hami.io/vgpu-mig-allocations"
"""HAMi v2.10 JSON MIG reservations (profile + placement per device)."""
BIND_PHASE: Final = "hami.io/bind-phase"
BIND_TIME: Final = "hami.io/bind-time"

BIND_PHASE_ALLOCATING: Final = "allocating"
BIND_PHASE_SUCCESS: Final = "success"
BIND_PHASE_FAILED: Final = "failed"

# --- user-facing pod annotations -----------------------------------------------------------------

VGPU_MODE: Final = "nvidia.com/vgpu-mode"
USE_GPU_TYPE: Final = "nvidia.com/use-gputype"
NOUSE_GPU_TYPE: Final = "nvidia.com/nouse-gputype"
USE_GPU_UUID: Final = "nvidia.com/use-gpuuuid"
NOUSE_GPU_UUID: Final = "nvidia.com/nouse-gpuuuid"
NUMA_BIND: Final = "nvidia.com/numa-bind"
NODE_SCHEDULER_POLICY: Final = "hami.io/node-scheduler-policy"
GPU_SCHEDULER_POLICY: Final = "hami.io/gpu-scheduler-policy"

# --- values --------------------------------------------------------------------------------------

MODE_HAMI_CORE: Final = "hami-core"
"""`mode` of a software-shared GPU in the register annotation, and a `vgpu-mode` value."""
MODE_MIG: Final = "mig"
"""`mode` of a MIG-enabled GPU in the register annotation, and a `vgpu-mode` value."""

DEVICE_TYPE_NVIDIA: Final = "NVIDIA"
"""The literal device type written in every device-string entry."""

POLICY_BINPACK: Final = "binpack"
POLICY_SPREAD: Final = "spread"

__all__ = [
    "BIND_PHASE",
    "BIND_PHASE_ALLOCATING",
    "BIND_PHASE_FAILED",
    "BIND_PHASE_SUCCESS",
    "BIND_TIME",
    "DEVICE_CORDON",
    "DEVICE_TYPE_NVIDIA",
    "GPU_SCHEDULER_POLICY",
    "MODE_HAMI_CORE",
    "MODE_MIG",
    "NODE_HANDSHAKE",
    "NODE_LOCK",
    "NODE_MIG_INSTANCES",
    "NODE_REGISTER",
    "NODE_SCHEDULER_POLICY",
    "NOUSE_GPU_TYPE",
    "NOUSE_GPU_UUID",
    "NUMA_BIND",
    "POLICY_BINPACK",
    "POLICY_SPREAD",
    "RESOURCE_CORES",
    "RESOURCE_COUNT",
    "RESOURCE_MEMORY",
    "RESOURCE_MEMORY_PERCENTAGE",
    "RESOURCE_PRIORITY",
    "SCHEDULER_NAME",
    "USE_GPU_TYPE",
    "USE_GPU_UUID",
    "VGPU_DEVICES_ALLOCATED",
    "VGPU_DEVICES_TO_ALLOCATE",
    "VGPU_MIG_ALLOCATIONS",
    "VGPU_MODE",
    "VGPU_NODE",
    "VGPU_TIME",
]
