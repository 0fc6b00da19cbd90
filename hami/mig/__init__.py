"""MIG instance lifecycle on one node: ensure, adopt, reclaim, reconcile.

Responsibility: make the instances the scheduler decided exist on this node's GPUs, at exactly
the decided placement, idempotently; adopt what already exists at start; destroy idle instances
on request; never destroy an instance in use (processes attached, or assigned to a live pod);
roll back what a failed attempt created; report instances lost to a reboot.

Prohibitions: imports `hami.nvml` and `hami.devices` only (import-linter checks it); no
Kubernetes, no scheduler, no simulator; the caller owns the `Nvml` object and its init/shutdown.
"""

from hami.mig.errors import (
    MigDisabledError,
    MigError,
    MigInUseError,
    ReconcileError,
    UnknownGpuError,
    UnknownProfileError,
)
from hami.mig.instances import Desired, Discovery, MigInstance, ReconcileResult
from hami.mig.manager import MigManager

__all__ = [
    "Desired",
    "Discovery",
    "MigDisabledError",
    "MigError",
    "MigInUseError",
    "MigInstance",
    "MigManager",
    "ReconcileError",
    "ReconcileResult",
    "UnknownGpuError",
    "UnknownProfileError",
]
