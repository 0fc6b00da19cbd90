"""Value types for hardware facts: GPU models and their MIG profiles.

Pure data, no I/O. Every fact carries its provenance so that readers know what was
documented by NVIDIA, observed on real hardware, or inferred by us.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field


class Provenance(enum.StrEnum):
    """Where a fact comes from (reference/mig-hardware-and-nvml.md tags [D], [O], [C], [I])."""

    DOCUMENTED = "documented"  # NVIDIA documentation, NVML header, NVIDIA source code
    OBSERVED = "observed"  # nvidia-smi / NVML output from real hardware
    INFERRED = "inferred"  # derived by us (memory fractions, same-family placements)


class Architecture(enum.IntEnum):
    """NVML's nvmlDeviceArchitecture_t values."""

    VOLTA = 5
    TURING = 6
    AMPERE = 7
    ADA = 8
    HOPPER = 9
    BLACKWELL = 10


_PROFILE_NAME = re.compile(r"^(?P<g>\d+)g\.(?P<gb>\d+)gb(?P<attrs>(?:[+-][a-z.]+)*)$")
PROFILE_NAME_RE = _PROFILE_NAME
"""`<N>g.<X>gb[+attr…]` with groups g, gb, attrs; the one grammar of MIG profile names."""


@dataclass(frozen=True)
class MigProfile:
    """One GPU-instance profile of one GPU model, as NVML describes it.

    `placements` are the legal start memory slices; every placement is
    `memory_slices` wide. `memory_mib` is NVML's memorySizeMB (reported, never matched:
    it moves between drivers); matching uses the nominal size (see `nominal_mib`).
    """

    name: str
    nvml_constant: int  # NVML_GPU_INSTANCE_PROFILE_* (the index passed to GetGpuInstanceProfileInfo)
    profile_id: int  # device-specific id returned in info.id and used by every other GI call
    compute_slices: int
    memory_slices: int
    instance_cap: int
    memory_mib: int
    multiprocessors: int
    placements: tuple[int, ...]
    provenance: Provenance = Provenance.OBSERVED
    copy_engines: int = 0
    decoders: int = 0
    encoders: int = 0
    jpegs: int = 0
    ofas: int = 0
    # Per-field exceptions to `provenance` (e.g. {"profile_id": INFERRED} when NVML's id for this
    # profile was never seen in public output). Read it through `provenance_of`.
    field_provenance: dict[str, Provenance] = field(default_factory=dict, compare=False, hash=False)

    def provenance_of(self, field_name: str) -> Provenance:
        """Where the value of `field_name` comes from (the profile's default unless overridden)."""
        return self.field_provenance.get(field_name, self.provenance)

    @property
    def attributes(self) -> tuple[str, ...]:
        """'+me', '-me', '+gfx', '+me.all' suffixes, in name order."""
        match = _PROFILE_NAME.match(self.name)
        if not match or not match.group("attrs"):
            return ()
        return tuple(re.findall(r"[+-][a-z.]+", match.group("attrs")))

    @property
    def is_base(self) -> bool:
        """True for the profiles the scheduler places for memory requests (no attributes)."""
        return not self.attributes

    @property
    def nominal_gb(self) -> int:
        """The GB in the profile's name: 10 for 1g.10gb."""
        match = _PROFILE_NAME.match(self.name)
        if not match:
            raise ValueError(f"malformed MIG profile name {self.name!r}")
        return int(match.group("gb"))

    @property
    def nominal_mib(self) -> int:
        """The nominal size in MiB (GB in the name × 1024), used by the memory rule."""
        return self.nominal_gb * 1024

    def mask(self, start: int) -> int:
        """The memory-slice bitmask occupied by this profile placed at `start`."""
        return ((1 << self.memory_slices) - 1) << start


@dataclass(frozen=True)
class MigSpec:
    """The MIG geometry of a model: slice counts and the profile table."""

    memory_slices: int  # 8 on the 7-way parts, 4 on A30 / RTX PRO 6000
    compute_slices: int  # 7 or 4
    max_instances: int  # max GPU instances (7 or 4)
    profiles: tuple[MigProfile, ...]

    def profile(self, name: str) -> MigProfile:
        for candidate in self.profiles:
            if candidate.name == name:
                return candidate
        known = ", ".join(p.name for p in self.profiles)
        raise KeyError(f"unknown MIG profile {name!r}; this model has {known}")

    @property
    def base_profiles(self) -> tuple[MigProfile, ...]:
        return tuple(p for p in self.profiles if p.is_base)


@dataclass(frozen=True)
class GpuModel:
    """A GPU product. `key` is our canonical name (e.g. 'A100-SXM4-80GB')."""

    key: str
    nvml_name: str  # what nvmlDeviceGetName returns, e.g. 'NVIDIA A100-SXM4-80GB'
    memory_mib: int  # total memory as NVML reports it (MIG off)
    architecture: Architecture
    compute_capability: tuple[int, int]
    pci_device_id: int  # nvmlPciInfo_t.pciDeviceId (device << 16 | 0x10DE)
    mig: MigSpec | None = None
    aliases: tuple[str, ...] = ()  # other strings users write in config
    provenance: dict[str, Provenance] = field(default_factory=dict, compare=False, hash=False)

    @property
    def mig_capable(self) -> bool:
        return self.mig is not None
