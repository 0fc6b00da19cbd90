"""Whole-GPU MIG layouts: which sets of GPU instances can coexist on one GPU.

Pure geometry over a `MigSpec` (reference §A.1): a set of placed instances is legal iff each sits
at one of its profile's placements, no two overlap in memory slices, each profile stays within its
instance cap, and the totals stay within the GPU's compute slices and instance count. (The last
two are implied by the placement tables on every known part; checking them costs nothing and
keeps an invented test part honest.) Exclusivity rules beyond caps — `+me.all` forbidding other
media-engine profiles on RTX PRO 6000 — are not modelled; the scheduler places base profiles.

Three views, all deterministic and cached per (spec, profile set):
* `positioned_layouts` — every legal set of `(profile name, start)` pairs, the empty set included.
  This is the engine's state space for one GPU.
* `valid_layouts` — the distinct multisets `{profile: count}` of those (what a geometry is).
* `maximal_layouts` — the multisets to which no further instance can be added.

Checks (reference §A.6): base profiles of the 8-slice family give 77 non-empty valid multisets
and 28 maximal ones; A30's give 9 and 4. Enumeration walks the memory slices left to right and,
at each free slice, either leaves it empty or starts one profile there, so every positioned layout
is produced exactly once; on an 8-slice part that is a few thousand layouts — milliseconds.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

from hami.devices.models import MigProfile, MigSpec

Placed = tuple[str, int]
"""One instance: (profile name, start memory slice)."""

PositionedLayout = tuple[Placed, ...]
"""Instances of one GPU, sorted by start slice."""

ProfileSelection = Iterable[MigProfile | str] | None


def _select(spec: MigSpec, profiles: ProfileSelection) -> tuple[str, ...]:
    """Profile names in the spec's order; default = the base profiles (no attributes)."""
    if profiles is None:
        return tuple(p.name for p in spec.base_profiles)
    wanted = {p.name if isinstance(p, MigProfile) else p for p in profiles}
    names = tuple(p.name for p in spec.profiles if p.name in wanted)
    missing = wanted.difference(names)
    if missing:
        spec.profile(sorted(missing)[0])  # raises KeyError naming the spec's profiles
    return names


@functools.lru_cache(maxsize=1024)
def _positioned(spec: MigSpec, names: tuple[str, ...]) -> tuple[PositionedLayout, ...]:
    profiles = [spec.profile(n) for n in names]
    for p in profiles:
        if any(s < 0 or s + p.memory_slices > spec.memory_slices for s in p.placements):
            raise ValueError(
                f"profile {p.name} has a placement outside the GPU's {spec.memory_slices} slices"
            )
    by_start: list[list[MigProfile]] = [
        [p for p in profiles if s in p.placements] for s in range(spec.memory_slices)
    ]
    counts = dict.fromkeys(names, 0)
    placed: list[Placed] = []
    found: list[PositionedLayout] = []

    def walk(slot: int, occupied: int, compute: int) -> None:
        while slot < spec.memory_slices and occupied >> slot & 1:
            slot += 1
        if slot >= spec.memory_slices:
            found.append(tuple(placed))
            return
        walk(slot + 1, occupied, compute)  # leave this slice empty
        if len(placed) >= spec.max_instances:
            return
        for p in by_start[slot]:
            mask = p.mask(slot)
            if (
                mask & occupied
                or counts[p.name] >= p.instance_cap
                or compute + p.compute_slices > spec.compute_slices
            ):
                continue
            counts[p.name] += 1
            placed.append((p.name, slot))
            walk(slot + p.memory_slices, occupied | mask, compute + p.compute_slices)
            placed.pop()
            counts[p.name] -= 1

    walk(0, 0, 0)
    rank = {n: i for i, n in enumerate(names)}
    found.sort(key=lambda layout: (len(layout), [(start, rank[n]) for n, start in layout]))
    return tuple(found)


def positioned_layouts(
    spec: MigSpec, profiles: ProfileSelection = None, *, include_empty: bool = True
) -> list[PositionedLayout]:
    """Every legal set of placed instances of `profiles` (default: the base profiles).

    Each layout is a tuple of (profile name, start) sorted by start. The list is sorted by
    instance count, then by (start, profile order) of each instance; the empty layout comes first.
    """
    layouts = _positioned(spec, _select(spec, profiles))
    return list(layouts if include_empty else layouts[1:])


@functools.lru_cache(maxsize=1024)
def _multisets(spec: MigSpec, names: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    rank = {n: i for i, n in enumerate(names)}
    seen: set[tuple[int, ...]] = set()
    for layout in _positioned(spec, names):
        vector = [0] * len(names)
        for name, _ in layout:
            vector[rank[name]] += 1
        seen.add(tuple(vector))
    return tuple(sorted(seen, key=lambda v: (sum(v), v)))


def _as_dict(names: tuple[str, ...], vector: tuple[int, ...]) -> dict[str, int]:
    return {n: c for n, c in zip(names, vector, strict=True) if c}


def valid_layouts(
    spec: MigSpec, profiles: ProfileSelection = None, *, include_empty: bool = True
) -> list[dict[str, int]]:
    """The distinct multisets {profile name: count} of `positioned_layouts`.

    Keys follow the spec's profile order. Sorted by instance count, then by the count vector in
    profile order; the empty multiset comes first unless `include_empty` is false.
    """
    names = _select(spec, profiles)
    vectors = _multisets(spec, names)
    return [_as_dict(names, v) for v in vectors if include_empty or any(v)]


@functools.lru_cache(maxsize=1024)
def _maximal(spec: MigSpec, names: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    vectors = _multisets(spec, names)
    valid = set(vectors)

    def grows(v: tuple[int, ...]) -> bool:
        return any((*v[:i], v[i] + 1, *v[i + 1 :]) in valid for i in range(len(v)))

    return tuple(v for v in vectors if not grows(v))


def maximal_layouts(spec: MigSpec, profiles: ProfileSelection = None) -> list[dict[str, int]]:
    """The valid multisets to which no instance of `profiles` can be added, in `valid_layouts`
    order. (An empty profile selection gives [{}]: nothing can be added to nothing.)"""
    names = _select(spec, profiles)
    return [_as_dict(names, v) for v in _maximal(spec, names)]


def arrange(spec: MigSpec, counts: Mapping[str, int]) -> PositionedLayout | None:
    """One positioned layout realising `counts` (any of the spec's profiles), or None if none
    exists. The first in `positioned_layouts` order, i.e. instances packed towards slice 0."""
    wanted = {n: c for n, c in counts.items() if c}
    if any(c < 0 for c in wanted.values()):
        return None
    names = _select(spec, wanted)
    total = sum(wanted.values())
    for layout in _positioned(spec, names):
        if len(layout) < total:
            continue
        if len(layout) > total:
            break
        got: dict[str, int] = {}
        for name, _ in layout:
            got[name] = got.get(name, 0) + 1
        if got == wanted:
            return layout
    return None


def is_valid(spec: MigSpec, counts: Mapping[str, int]) -> bool:
    """Whether the multiset `counts` fits on one GPU of this spec."""
    return arrange(spec, counts) is not None


def layout_mask(spec: MigSpec, layout: Iterable[Placed]) -> int:
    """The memory-slice bitmask a positioned layout occupies."""
    mask = 0
    for name, start in layout:
        mask |= spec.profile(name).mask(start)
    return mask


def compute_slices_used(spec: MigSpec, counts: Mapping[str, int]) -> int:
    """Total compute slices of a multiset."""
    return sum(spec.profile(n).compute_slices * c for n, c in counts.items())


def memory_slices_used(spec: MigSpec, counts: Mapping[str, int]) -> int:
    """Total memory slices of a multiset."""
    return sum(spec.profile(n).memory_slices * c for n, c in counts.items())
