"""The placement engine: cluster state as arrays, fit and score kernels, atomic decisions.

May import numpy, ``hami.devices`` and ``hami.api``; never the scheduler, the agent,
Kubernetes or NVML. ``Engine`` uses the compiled kernels (``_kernels``, Cython) unless
``HAMI_NO_EXTENSIONS=1`` is set when this package is first imported, in which case it uses
the plain-Python twin in ``reference.py`` (same results, slower).
"""

from __future__ import annotations

import logging
import os

from hami._core import engine as _engine
from hami._core import reference
from hami._core.results import (
    Code,
    Conflict,
    CorePick,
    Decision,
    Features,
    FitResult,
    GpuMode,
    GpuSpec,
    MigPick,
    RealisedInstance,
    Reason,
    Rejection,
    describe,
)
from hami._core.tables import POLICIES

log = logging.getLogger(__name__)

if os.environ.get("HAMI_NO_EXTENSIONS") == "1":
    KERNELS = reference
else:
    try:
        from hami._core import _kernels as KERNELS
    except ImportError:  # pragma: no cover - a source checkout without a build
        log.warning("compiled engine kernels not built; using the pure-Python twin (slow)")
        KERNELS = reference

COMPILED = KERNELS is not reference


class Engine(_engine.Engine):
    """The engine with the best available kernels (see the package docstring)."""

    def __init__(self, config=None, policy: str = "fragmentation-aware", features=None, *, kernels=None):
        super().__init__(config, policy, features, kernels=kernels or KERNELS)


class ReferenceEngine(_engine.Engine):
    """The engine on the plain-Python kernels (the differential-test oracle)."""

    def __init__(self, config=None, policy: str = "fragmentation-aware", features=None):
        super().__init__(config, policy, features, kernels=reference)


__all__ = [
    "COMPILED",
    "POLICIES",
    "Code",
    "Conflict",
    "CorePick",
    "Decision",
    "Engine",
    "Features",
    "FitResult",
    "GpuMode",
    "GpuSpec",
    "MigPick",
    "RealisedInstance",
    "Reason",
    "ReferenceEngine",
    "Rejection",
    "describe",
]
