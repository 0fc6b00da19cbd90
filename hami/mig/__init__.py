"""MIG instance lifecycle on one node: ensure, adopt, reclaim, reconcile.

Responsibility: make the instances the scheduler decided exist on this node's GPUs, at exactly
the decided placement, idempotently; adopt what already exists at start; destroy idle instances
on request; never destroy an instance in use (processes attached, or assigned to a live pod);
roll back what a failed attempt created; report instances lost to a reboot — and never mistake
a failed NVML call for a fact about what exists. Also: recognise another MIG manager on the node
(`foreign_mig_manager`).

Prohibitions: imports `hami.nvml` and `hami.devices` only (import-linter checks it); no
Kubernetes, no scheduler, no simulator; the caller owns the `Nvml` object and its init/shutdown.

Modules: `manager` (`MigManager`), `profiles` (the per-GPU profile table, keyed by compute
slices, memory slices and flags), `instances` (value types), `errors`, `foreign`.
"""

from hami.mig.errors import (
    MigDisabledError,
    MigError,
    MigInUseError,
    NvmlCallError,
    ReconcileError,
    UnknownGpuError,
    UnknownProfileError,
)
from hami.mig.foreign import foreign_mig_manager
from hami.mig.instances import (
    Desired,
    Discovery,
    GpuFailure,
    MigInstance,
    ReconcileResult,
    StuckInstance,
)
from hami.mig.manager import MigManager
from hami.mig.profiles import ProfileInfo, ProfileKey

__all__ = [
    "Desired",
    "Discovery",
    "GpuFailure",
    "MigDisabledError",
    "MigError",
    "MigInUseError",
    "MigInstance",
    "MigManager",
    "NvmlCallError",
    "ProfileInfo",
    "ProfileKey",
    "ReconcileError",
    "ReconcileResult",
    "StuckInstance",
    "UnknownGpuError",
    "UnknownProfileError",
    "foreign_mig_manager",
]
