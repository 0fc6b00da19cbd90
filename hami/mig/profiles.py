"""The MIG profile table of one GPU as NVML reports it, read so that one failed call cannot
shorten it, and keyed by (compute slices, memory slices, flags); names are display only.

Why: NVML's enumeration contract says "NOT_SUPPORTED / INVALID_ARGUMENT = this profile does not
exist", but the same codes also come back from a call that failed. A table read once and cached
for the lifetime of the MIG mode then hides every instance of the dropped profile, forever. So:

* every row NVML denies is asked a second time before it is believed absent;
* any other error fails the whole read (nothing is cached; the caller retries);
* rows the catalog lists for the model but NVML denied twice (an older driver, or two transient
  errors in a row) stay `doubtful` and are asked again at every refresh.

Keys: drivers rename profiles (`3g.40gb` → `3g.39gb`, mig-parted #31) and round sizes
differently, so a profile is identified by its compute slices, memory slices and attribute
flags (`+me`, `-me`, `+me.all`, `+gfx`), as go-nvlib does. A requested name resolves by: the
driver's name; else the catalog profile of that name (or alias) → its key; else the same compute
slices and flags at about the same size (the catalog's alias tolerance), for models the catalog
lacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from hami.devices import GpuModel, parse_profile_name, resolve_profile
from hami.devices import UnknownProfileError as CatalogUnknownProfile
from hami.devices.naming import alias_tolerance_gb
from hami.nvml import Nvml, results, structs
from hami.nvml import errors as nvml_errors

ProfileKey = tuple[int, int, tuple[str, ...]]
"""(compute slices, memory slices, flags): what identifies a GPU-instance profile."""


@dataclass(frozen=True)
class ProfileInfo:
    """One GPU-instance profile as this GPU's driver reports it."""

    name: str  # display: the driver's ("3g.39gb"), else the catalog's, else built from the key
    nvml_constant: int  # NVML_GPU_INSTANCE_PROFILE_*
    profile_id: int  # the device-specific id every other GI call takes
    compute_slices: int
    memory_slices: int
    flags: tuple[str, ...]  # "+me", "-me", "+me.all", "+gfx"
    memory_mib: int  # NVML's memorySizeMB (reported, never matched)
    instance_count: int  # how many can exist at once
    placements: tuple[int, ...]  # legal first memory slices
    catalog_name: str | None = None  # the catalog's name for this key on this model, if any

    @property
    def key(self) -> ProfileKey:
        return (self.compute_slices, self.memory_slices, self.flags)

    @property
    def nominal_gb(self) -> int:
        """The GB of the display name (the driver's rounding), else the memory rounded to GB."""
        try:
            return parse_profile_name(self.name)[1]
        except ValueError:
            return (self.memory_mib + 512) // 1024


@dataclass(frozen=True)
class ProfileTable:
    profiles: tuple[ProfileInfo, ...]
    doubtful: frozenset[int] = frozenset()  # catalog constants NVML denied twice: asked again

    def by_key(self, key: ProfileKey) -> ProfileInfo | None:
        return next((p for p in self.profiles if p.key == key), None)

    def names(self) -> str:
        return ", ".join(p.name for p in self.profiles) or "none"

    def resolve(self, model: GpuModel | None, requested: str) -> ProfileInfo | None:
        """The profile `requested` denotes here (module docstring), or None."""
        text = requested.strip().casefold()
        for p in self.profiles:
            if p.name.casefold() == text:
                return p
        try:
            g, gb, flags = parse_profile_name(text)
        except ValueError:
            return None
        if model is not None and model.mig is not None:
            try:
                wanted = resolve_profile(model, text)[0]
            except CatalogUnknownProfile:
                wanted = None
            if wanted is not None:
                hit = self.by_key((wanted.compute_slices, wanted.memory_slices, wanted.attributes))
                if hit is not None:
                    return hit
        near = sorted(
            (abs(p.nominal_gb - gb), p.profile_id, p)
            for p in self.profiles
            if p.compute_slices == g and p.flags == flags and abs(p.nominal_gb - gb) <= alias_tolerance_gb(p.nominal_gb)
        )
        if near and (len(near) == 1 or near[0][0] < near[1][0]):
            return near[0][2]
        return None


def read_table(nvml: Nvml, device: results.Device, model: GpuModel | None) -> ProfileTable:
    """The GPU's profile table (MIG mode on). Raises the NVML error of any failed call."""
    rows: dict[int, results.GpuInstanceProfileInfo] = {}
    denied = []
    for constant in range(structs.GPU_INSTANCE_PROFILE_COUNT):
        info = _ask(nvml, device, constant)
        if info is None:
            denied.append(constant)
        else:
            rows[constant] = info
    for constant in denied:  # believe "does not exist" only when NVML says it twice
        info = _ask(nvml, device, constant)
        if info is not None:
            rows[constant] = info
    expected = {p.nvml_constant for p in model.mig.profiles} if model is not None and model.mig is not None else set()
    profiles = [_profile(nvml, device, model, c, info) for c, info in sorted(rows.items())]
    return ProfileTable(_unique_keys(profiles), frozenset(expected - rows.keys()))


def recheck(nvml: Nvml, device: results.Device, model: GpuModel | None, table: ProfileTable) -> ProfileTable:
    """`table` with the doubtful rows NVML now reports added (one call per doubtful row)."""
    found = {}
    for constant in sorted(table.doubtful):
        info = _ask(nvml, device, constant)
        if info is not None:
            found[constant] = _profile(nvml, device, model, constant, info)
    if not found:
        return table
    profiles = sorted((*table.profiles, *found.values()), key=lambda p: p.nvml_constant)
    return ProfileTable(_unique_keys(profiles), table.doubtful - found.keys())


def _ask(nvml: Nvml, device: results.Device, constant: int) -> results.GpuInstanceProfileInfo | None:
    try:
        return nvml.gpu_instance_profile_info(device, constant)
    except (nvml_errors.NotSupported, nvml_errors.InvalidArgument):
        return None


def _profile(
    nvml: Nvml, device: results.Device, model: GpuModel | None, constant: int, info: results.GpuInstanceProfileInfo
) -> ProfileInfo:
    starts = nvml.gpu_instance_possible_placements(device, info.id)
    catalog = None
    if model is not None and model.mig is not None:
        catalog = next((p for p in model.mig.profiles if p.nvml_constant == constant), None)
    driver_name = info.profile_name
    try:
        flags = parse_profile_name(driver_name)[2]
    except ValueError:  # no name (the v1 struct) or one we cannot read: the catalog, else the caps
        gfx = ("+gfx",) if info.capabilities and info.capabilities & structs.GPU_INSTANCE_PROFILE_CAPS_GFX else ()
        flags = catalog.attributes if catalog is not None else gfx
    if starts:
        memory_slices = starts[0].size
    else:
        memory_slices = catalog.memory_slices if catalog is not None else 0
    key = (info.slice_count, memory_slices, tuple(flags))
    catalog_key = (catalog.compute_slices, catalog.memory_slices, catalog.attributes) if catalog else None
    catalog_name = catalog.name if catalog is not None and catalog_key == key else None
    built = f"{info.slice_count}g.{(info.memory_mib + 512) // 1024}gb{''.join(flags)}"
    name = driver_name or (catalog.name if catalog is not None else built)
    return ProfileInfo(
        name=name,
        nvml_constant=constant,
        profile_id=info.id,
        compute_slices=info.slice_count,
        memory_slices=memory_slices,
        flags=tuple(flags),
        memory_mib=info.memory_mib,
        instance_count=info.instance_count,
        placements=tuple(p.start for p in starts),
        catalog_name=catalog_name,
    )


def _unique_keys(profiles: Iterable[ProfileInfo]) -> tuple[ProfileInfo, ...]:
    """Keys must identify rows; a clash (a driver we cannot read flags from) gets the constant as a flag."""
    out: list[ProfileInfo] = []
    seen: set[ProfileKey] = set()
    for p in profiles:
        if p.key in seen:
            p = dataclasses.replace(p, flags=(*p.flags, f"#{p.nvml_constant}"))
        seen.add(p.key)
        out.append(p)
    return tuple(out)
