"""What the node's GPUs are, read from NVML: identity, memory, NUMA node, MIG mode, and each MIG
profile with its legal placements, as the driver reports them.

NVML takes precedence over the built-in catalog: a model the catalog lacks still registers with
the profiles NVML lists (the MIG manager's table: keyed by slices and flags, names as the driver
gives them). Hardware profiles never disappear, so each GPU's table is the union of every read:
a transient error that hides a profile in one read cannot shrink what is published.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from hami.mig import MigError, MigManager
from hami.nvml import Nvml, NvmlError
from hami.nvml import errors as nvml_errors

log = logging.getLogger(__name__)

# Codes that say the GPU itself is failing (an XID-class event), not that one call went wrong.
_UNHEALTHY_CODES = frozenset({
    nvml_errors.Return.GPU_IS_LOST, nvml_errors.Return.DRIVER_NOT_LOADED, nvml_errors.Return.CORRUPTED_INFOROM,
    nvml_errors.Return.IRQ_ISSUE, nvml_errors.Return.RESET_REQUIRED, nvml_errors.Return.GPU_NOT_FOUND,
})  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """One MIG profile of a GPU, as NVML reports it."""

    name: str  # the driver's name without "MIG ", e.g. "3g.40gb"
    profile_id: int
    compute_slices: int
    memory_slices: int
    memory_mib: int  # NVML's memorySizeMB
    instance_count: int
    placements: tuple[int, ...]  # legal starts (memory slices)
    flags: tuple[str, ...] = ()  # "+me", "-me", "+me.all", "+gfx"


@dataclass(frozen=True)
class Gpu:
    """One physical GPU of the node."""

    index: int
    uuid: str
    name: str
    memory_mib: int  # 0 when NVML cannot tell
    bus_id: str
    numa: int
    mig_capable: bool
    mig_enabled: bool
    mig_pending: bool  # the mode after the next reset
    profiles: tuple[Profile, ...] = ()
    healthy: bool = True
    problem: str = ""  # why unhealthy

    @property
    def compute_slices(self) -> int:
        """The GPU's compute slices (7 on A100/H100, 4 on A30), from its largest profile."""
        return max((p.compute_slices for p in self.profiles), default=0)

    @property
    def max_instances(self) -> int:
        return max((p.instance_count for p in self.profiles), default=0)

    def profile(self, name: str) -> Profile | None:
        wanted = name.strip().casefold()
        return next((p for p in self.profiles if p.name.casefold() == wanted), None)


def device_type(name: str) -> str:
    """HAMi's `type`: the NVML name, prefixed `NVIDIA-` unless it already starts with NVIDIA."""
    return name if name.upper().startswith("NVIDIA") else f"NVIDIA-{name}"


class Inventory:
    """Reads the GPUs through one initialised `Nvml`; `read()` is safe to call from any thread."""

    def __init__(self, nvml: Nvml, mig: MigManager, *, sysfs: str | Path = "/sys", on_error: object = None) -> None:
        self.nvml = nvml
        self.mig = mig
        self.sysfs = Path(sysfs)
        self._profiles: dict[str, dict[int, Profile]] = {}
        self._lock = threading.Lock()
        self._on_error = on_error  # callable(NvmlError) counting errors for the metrics
        self._last: dict[str, Gpu] = {}

    def _seen(self, exc: NvmlError) -> None:
        if callable(self._on_error):
            self._on_error(exc)

    def read(self) -> tuple[Gpu, ...]:
        """Every GPU, by index. Raises NvmlError only when the GPUs cannot be enumerated; a GPU
        that fails a call is returned unhealthy with the reason."""
        count = self.nvml.device_count()
        return tuple(self._gpu(i) for i in range(count))

    def _gpu(self, index: int) -> Gpu:
        device = self.nvml.device_by_index(index)
        uuid, name = self.nvml.uuid(device), self.nvml.name(device)
        last = self._last.get(uuid)
        healthy, problem = True, ""
        memory = last.memory_mib if last else 0
        try:
            memory = self.nvml.memory(device).total_mib
        except nvml_errors.NotSupported:
            memory = 0
        except NvmlError as exc:  # a lost GPU is unhealthy; a transient error keeps the last value
            self._seen(exc)
            if exc.code in _UNHEALTHY_CODES:
                healthy, problem = False, f"NVML reports the GPU failing: {exc}"
        bus_id = last.bus_id if last else ""
        try:
            bus_id = self.nvml.pci_info(device).bus_id
        except NvmlError as exc:
            self._seen(exc)
        capable, enabled, pending = (last.mig_capable, last.mig_enabled, last.mig_pending) if last else (
            True, False, False)
        try:
            mode = self.nvml.mig_mode(device)
            capable, enabled, pending = True, mode.current, mode.pending
        except nvml_errors.NotSupported:
            capable, enabled, pending = False, False, False
        except NvmlError as exc:
            self._seen(exc)
            if last is None:
                healthy, problem = False, f"cannot read the MIG mode yet: {exc}"
        profiles: tuple[Profile, ...] = ()
        if capable and enabled:  # NVML lists profiles only while MIG mode is on
            profiles = self._read_profiles(uuid)
        gpu = Gpu(index, uuid, name, memory, bus_id, self._numa(bus_id), capable, enabled, pending, profiles,
                  healthy, problem)
        self._last[uuid] = gpu
        return gpu

    def _numa(self, bus_id: str) -> int:
        if not bus_id:
            return 0
        # NVML writes an 8-digit PCI domain; sysfs uses 4 (0000:07:00.0), lower case.
        short = bus_id.lower()
        if len(short.split(":")[0]) == 8:
            short = short[4:]
        try:
            value = int((self.sysfs / "bus" / "pci" / "devices" / short / "numa_node").read_text().strip())
        except (OSError, ValueError):
            return 0
        return max(value, 0)

    def _read_profiles(self, uuid: str) -> tuple[Profile, ...]:
        """The GPU's profiles from the MIG manager's table (keyed by slices and flags, robust to
        transient errors), merged with what earlier reads found."""
        with self._lock:
            known = dict(self._profiles.get(uuid, {}))
        try:
            for info in self.mig.profiles(uuid):
                known[info.profile_id] = Profile(info.name, info.profile_id, info.compute_slices, info.memory_slices,
                                                 info.memory_mib, info.instance_count, tuple(info.placements),
                                                 tuple(info.flags))
        except MigError as exc:
            if exc.nvml_error is not None:
                self._seen(exc.nvml_error)
            log.warning("cannot read MIG profiles gpu=%s error=%s; keeping %d known", uuid, exc, len(known))
        with self._lock:
            self._profiles[uuid] = known
        return tuple(sorted(known.values(), key=lambda p: (p.compute_slices, p.memory_slices, p.profile_id)))


def with_health(gpu: Gpu, healthy: bool, problem: str) -> Gpu:
    return replace(gpu, healthy=healthy, problem=problem)


__all__ = ["Gpu", "Inventory", "Profile", "device_type", "with_health"]
