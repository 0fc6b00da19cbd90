"""The engine's MIG inputs per GPU model: allowed geometries, nominal memory, allowlist, balanced.

Geometry semantics (ARCHITECTURE §4): instances the scheduler places keep a GPU inside at least
one allowed geometry of its model; a new instance goes where the earliest allowed geometry (in
order) that can hold the running instances plus the new one puts it. The order of the geometries
is therefore a preference order, and this module fixes it. Geometries guide, they never strand:
a GPU whose running instances lie inside no allowed geometry (placed by HAMi, by hand, or by
NVML's automatic placement, which puts the first 1g at start 6 on the 8-slice parts) takes any
legal free placement next to them and drains back into the geometries as pods end
(``hami._core.tables``: ``cand`` of such a layout is every legal slot).

Allowed geometries of a model (`allowed_geometries`):
* the config's `knownMigGeometries`, when it has a rule selecting the model (the first such rule,
  HAMi's rule): its geometries exactly as written, in order, aliases resolved to the hardware's
  canonical profile names (source "config");
* otherwise the built-in default:
  1. the seed's geometries (the user's spec, `dynamic-mig.en.md`), in the seed's order (source
     "seed-default"). 8-slice parts: 1g×7 | 2g×3 + 1g×1 | 3g×2 | 7g×1; 4-slice parts: 1g×4 | 2g×2 |
     4g×1 — with the model's own plain profile names (the seed writes A100-80GB's 7g as 7g.79gb;
     the hardware calls it 7g.80gb);
  2. then every other maximal legal layout of the model's base profiles (source
     "maximal-default"), ordered by: most compute slices used (idle SMs are wasted GPU), then most
     memory slices used, then fewest instances (larger instances fragment less), then more
     instances of the larger profiles first (profiles compared from 7g down to 1g).
  Step 2 is what lets different sizes share a GPU out of the box: on an A100-80GB a 1g.10gb and
  a 3g.40gb job coexist through 3g + 2g + 1g + 1g, which none of the seed's four geometries holds.
  Every legal layout of base profiles is inside some maximal one, so with the default no such
  placement is refused for want of a geometry; the seed's four still win whenever they can hold
  the GPU's instances. (`+me` and other variants are in no default geometry: they are placed only
  when a config geometry names them.)

Nominal memory (`nominal_memory`, ARCHITECTURE §7): a profile's size for matching requests is the
config's `memory` for it in the rule that governs the model (first value wins), else the GB in
its canonical name × 1024. NVML's `memory_mib` is reported, never matched.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from hami.devices import config as config_mod
from hami.devices import errors, layouts, naming
from hami.devices.models import GpuModel, MigProfile, MigSpec

SOURCE_CONFIG = "config"
SOURCE_SEED = "seed-default"
SOURCE_MAXIMAL = "maximal-default"
SOURCE_BALANCED = "balanced"


@dataclass(frozen=True)
class Geometry:
    """A whole-GPU layout as a multiset: (canonical profile name, count) in the model's profile
    order, plus where it came from ("config" | "seed-default" | "maximal-default" | "balanced")."""

    counts: tuple[tuple[str, int], ...]
    source: str

    def as_dict(self) -> dict[str, int]:
        """{profile name: count}, in the model's profile order."""
        return dict(self.counts)

    @property
    def instances(self) -> int:
        """Number of GPU instances in the geometry."""
        return sum(c for _, c in self.counts)


def _mig_spec(model: GpuModel) -> MigSpec:
    if model.mig is None:
        raise errors.ConfigError(
            f"{model.key} ({model.nvml_name}) is not MIG-capable: it has no MIG geometries; "
            "serve it in hami-core mode (set the node's operatingmode to hami-core)"
        )
    return model.mig


def _geometry(spec: MigSpec, counts: Mapping[str, int], source: str) -> Geometry:
    order = [p.name for p in spec.profiles]
    return Geometry(tuple((n, counts[n]) for n in order if counts.get(n)), source)


def _plain(spec: MigSpec, compute_slices: int) -> MigProfile | None:
    """The base profile with `compute_slices` that most instances can use (1g.10gb, not 1g.20gb)."""
    candidates = [p for p in spec.base_profiles if p.compute_slices == compute_slices]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (-p.instance_cap, p.memory_slices))


def seed_geometries(model: GpuModel) -> tuple[Geometry, ...]:
    """The seed's geometries for `model`, with the hardware's names (see module docstring)."""
    spec = _mig_spec(model)
    if spec.compute_slices == 7:
        pattern: tuple[dict[int, int], ...] = ({1: 7}, {2: 3, 1: 1}, {3: 2}, {7: 1})
    elif spec.compute_slices == 4:
        pattern = ({1: 4}, {2: 2}, {4: 1})
    else:
        return ()
    out = []
    for shape in pattern:
        plain = {g: _plain(spec, g) for g in shape}
        if any(p is None for p in plain.values()):
            continue
        counts = {p.name: shape[g] for g, p in plain.items() if p is not None}
        if layouts.is_valid(spec, counts):
            out.append(_geometry(spec, counts, SOURCE_SEED))
    return tuple(out)


def _maximal_key(spec: MigSpec, counts: Mapping[str, int]) -> tuple:
    larger_first = tuple(-counts.get(p.name, 0) for p in reversed(spec.base_profiles))
    return (
        -layouts.compute_slices_used(spec, counts),
        -layouts.memory_slices_used(spec, counts),
        sum(counts.values()),
        larger_first,
    )


@functools.cache
def default_geometries(model: GpuModel) -> tuple[Geometry, ...]:
    """The built-in default: the seed's geometries, then the other maximal layouts (docstring)."""
    spec = _mig_spec(model)
    seeds = seed_geometries(model)
    listed = {g.counts for g in seeds}
    rest = sorted(layouts.maximal_layouts(spec), key=lambda c: _maximal_key(spec, c))
    tail = [_geometry(spec, c, SOURCE_MAXIMAL) for c in rest]
    return seeds + tuple(g for g in tail if g.counts not in listed)


def _config_rule(
    model: GpuModel, config: config_mod.NvidiaConfig | None
) -> config_mod.MigGeometryRule | None:
    if config is None or not config.known_mig_geometries:
        return None
    found = config_mod.rule_for(model, config.known_mig_geometries)
    return None if found is None else found[1]


def _resolve(model: GpuModel, name: str) -> str:
    try:
        return naming.resolve_profile(model, name)[0].name
    except errors.UnknownProfileError as exc:
        raise errors.ConfigError(
            f"device config: {exc}; fix knownMigGeometries / migProfileAllowlist"
        ) from None


def allowed_geometries(
    model: GpuModel, config: config_mod.NvidiaConfig | None = None
) -> tuple[Geometry, ...]:
    """The geometries a GPU of `model` may take, in preference order (module docstring).

    Raises ConfigError for a model without MIG, or for a config rule naming a profile the model
    lacks (`load_device_config` reports that earlier, with more context).
    """
    spec = _mig_spec(model)
    rule = _config_rule(model, config)
    if rule is None:
        return default_geometries(model)
    out = []
    for geometry in rule.allowed_geometries:
        counts: dict[str, int] = {}
        for entry in geometry:
            name = _resolve(model, entry.name)
            counts[name] = counts.get(name, 0) + entry.count
        out.append(_geometry(spec, counts, SOURCE_CONFIG))
    return tuple(out)


def nominal_memory(
    model: GpuModel, config: config_mod.NvidiaConfig | None = None, *, include_variants: bool = False
) -> dict[str, int]:
    """{profile: MiB used to match requests} for each base profile (all profiles with
    `include_variants`), in the model's profile order (module docstring)."""
    spec = _mig_spec(model)
    chosen = spec.profiles if include_variants else spec.base_profiles
    result = {p.name: p.nominal_mib for p in chosen}
    rule = _config_rule(model, config)
    if rule is not None:
        from_config: set[str] = set()
        for geometry in rule.allowed_geometries:
            for entry in geometry:
                if entry.memory is None:
                    continue
                name = _resolve(model, entry.name)
                if name in result and name not in from_config:
                    result[name] = entry.memory
                    from_config.add(name)
    return result


CHART_DEFAULT_ALLOWLIST: tuple[config_mod.AllowlistRule, ...] = tuple(
    config_mod.AllowlistRule(models=models, profiles=profiles)
    for models, profiles in (
        (("A30",), ("1g.6gb", "2g.12gb", "4g.24gb")),
        (("A100-SXM4-40GB", "A100-40GB-PCIe", "A100-PCIE-40GB"), ("1g.5gb", "2g.10gb", "3g.20gb", "7g.40gb")),
        (
            ("A100-SXM4-80GB", "A100-80GB-PCIe", "A100-PCIE-80GB"),
            ("1g.10gb", "2g.20gb", "3g.40gb", "7g.79gb"),
        ),
        (("H100-PCIE-80GB", "H100-SXM5-80GB"), ("1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb")),
        (("H100-SXM5-94GB", "H100-PCIE-94GB"), ("1g.12gb", "2g.24gb", "3g.47gb", "7g.94gb")),
        (("H20", "H100-96GB"), ("1g.12gb", "2g.24gb", "3g.48gb", "7g.96gb")),
        (("H200 NVL", "H200-SXM5"), ("1g.18gb", "2g.35gb", "3g.71gb", "7g.141gb")),
        (("B200",), ("1g.23gb", "2g.45gb", "3g.90gb", "7g.180gb")),
        (("RTX PRO 6000 Blackwell Server Edition",), ("1g.24gb", "2g.48gb", "4g.96gb")),
    )
)
"""HAMi v2.10's chart default `migProfileAllowlist` (hami-behaviour §2.3), HAMi's strings kept.
Here the strings resolve through `naming` (so `H100-*-94GB` reaches the H100 NVL, #1014) and the
profiles through aliases (`7g.79gb` is the A100-80GB's `7g.80gb`)."""


def allowlisted_profiles(model: GpuModel, config: config_mod.NvidiaConfig | None = None) -> tuple[str, ...]:
    """Canonical profiles the scheduler may create on `model`, in the model's profile order.

    HAMi v2.10's `migProfileAllowlist` semantics (first rule selecting the model), except that each
    name resolves to the exact hardware profile (HAMi kept only the slice-count prefix, so
    `1g.20gb` meant a plain 1g). No rule given or none selecting the model: the chart's default
    for the models it lists, else every base profile (HAMi refused MIG on unlisted models).
    """
    spec = _mig_spec(model)
    rules = config.mig_profile_allowlist if config is not None else None
    found = config_mod.rule_for(model, rules) if rules else None
    if found is None:
        found = config_mod.rule_for(model, CHART_DEFAULT_ALLOWLIST)
    if found is None:
        return tuple(p.name for p in spec.base_profiles)
    wanted = {_resolve(model, name) for name in found[1].profiles}
    return tuple(p.name for p in spec.profiles if p.name in wanted)


def balanced_layout(model: GpuModel) -> Geometry:
    """mig-parted's `all-balanced`: {1g: 2, 2g: 1, 3g: 1} on 7-slot GPUs, {1g: 2, 2g: 1} on 4-slot
    ones, using for each size the base profile with the highest instance cap (reference §A.6).
    The `static` baseline partitions every GPU this way."""
    spec = _mig_spec(model)
    if spec.compute_slices >= 7:
        shape = {1: 2, 2: 1, 3: 1}
    elif spec.compute_slices >= 4:
        shape = {1: 2, 2: 1}
    else:
        shape = {1: spec.compute_slices}
    counts: dict[str, int] = {}
    for g, count in shape.items():
        profile = _plain(spec, g)
        if profile is None:
            raise errors.ConfigError(f"{model.key} has no {g}g base profile for the balanced layout")
        counts[profile.name] = count
    if not layouts.is_valid(spec, counts):
        raise errors.ConfigError(f"the balanced layout {counts} does not fit on {model.key}")
    return _geometry(spec, counts, SOURCE_BALANCED)


# -- HAMi's own rules, for the engine's HAMi baselines (`hami-legacy`, `hami-v2.10`) ---------


@dataclass(frozen=True)
class Template:
    """One legacy HAMi geometry as HAMi's scheduler walks it: (canonical profile name, count,
    MiB one instance matches as) entries in the order written — HAMi flattens them in this
    order and takes the first free slot that holds a request (hami-behaviour §3.3)."""

    entries: tuple[tuple[str, int, int], ...]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, count, _mib in self.entries:
            out[name] = out.get(name, 0) + count
        return out


def hami_templates(model: GpuModel, config: config_mod.NvidiaConfig | None = None) -> tuple[Template, ...]:
    """The geometries HAMi v2.5–v2.9 walks for `model`, in its search order.

    The config's `knownMigGeometries` rule for the model as written (entries in written order;
    an entry without `memory` matches as NVML's size of the profile). Otherwise HAMi v2.8–v2.9's
    built-in default shape (#1519): 7×1g | 1g + 3×2g | 2×3g | 7g on 7-slice parts and
    4×1g | 2×2g | 4g on 4-slice ones, plain profiles, each matching as NVML reports its memory
    (HAMi's built-in A100-80GB values 9728, 19968 and 40192 MiB are exactly NVML's; its 7g's
    80896 is 256 MiB above NVML's 80640, and both are below the card's 81920, so a whole-GPU
    request fits neither). Unlike HAMi we apply the shape to every MIG model, not only the ones
    its table lists."""
    spec = _mig_spec(model)
    nvml = {p.name: p.memory_mib for p in spec.profiles}
    rule = _config_rule(model, config)
    if rule is not None:
        out = []
        for geom in rule.allowed_geometries:
            entries = []
            for entry in geom:
                name = _resolve(model, entry.name)
                entries.append((name, entry.count, entry.memory if entry.memory is not None else nvml[name]))
            out.append(Template(tuple(entries)))
        return tuple(out)
    if spec.compute_slices == 7:
        pattern: tuple[tuple[tuple[int, int], ...], ...] = (((1, 7),), ((1, 1), (2, 3)), ((3, 2),), ((7, 1),))
    elif spec.compute_slices == 4:
        pattern = (((1, 4),), ((2, 2),), ((4, 1),))
    else:
        return ()
    out = []
    for shape in pattern:
        plain = [(_plain(spec, g), count) for g, count in shape]
        if any(p is None for p, _count in plain):
            continue
        entries = tuple((p.name, count, nvml[p.name]) for p, count in plain if p is not None)
        if layouts.is_valid(spec, Template(entries).counts()):
            out.append(Template(entries))
    return tuple(out)


def hami_matching_memory(
    model: GpuModel, config: config_mod.NvidiaConfig | None = None, *, legacy: bool = False
) -> dict[str, int]:
    """{base profile: MiB HAMi compares a request with}: NVML's `MemoryMB` for v2.10 (§2.3,
    §3.4: the node annotation carries NVML's sizes, below the names' nominal ones); for the
    legacy scheduler the templates' `memory` (first value wins), NVML's size for a profile no
    template names."""
    spec = _mig_spec(model)
    result = {p.name: p.memory_mib for p in spec.base_profiles}
    if legacy:
        seen: set[str] = set()
        for template in hami_templates(model, config):
            for name, _count, mib in template.entries:
                if name in result and name not in seen:
                    result[name] = mib
                    seen.add(name)
    return result
