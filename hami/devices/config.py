"""HAMi's device config (`device-config.yaml`, its `nvidia:` block) as frozen, validated values.

The same file HAMi mounts into its scheduler and device plugin (reference hami-behaviour §2.1),
so a HAMi user can keep theirs. Keys are HAMi's camelCase (`deviceSplitCount`,
`knownMigGeometries`, `allowedGeometries`, `migProfileAllowlist`); snake_case spellings of our
field names are accepted too. Keys HAMi defines but we do not use are logged at INFO; keys
nobody defines are logged as warnings (a typo should be visible, but HAMi configs carry many
vendor-specific keys and must not stop the scheduler). Other top-level blocks (other vendors)
are ignored.

Validation happens once, at load, with messages that name the config path, the model, the
1-based rule and geometry index and the profile, and say what to change:
* structure and ranges: counts ≥ 1, memory ≥ 0, core 0..100, profile names `<N>g.<X>gb[+attr]`;
* against the catalog (`validate_nvidia_config`): for every MIG model a rule governs (the first
  rule whose `models` select it — later rules never apply to it), each profile must exist on the
  model or be an alias of one (`naming.resolve_profile`; aliases are accepted with a warning
  naming both), and each geometry must be a legal whole-GPU layout (`layouts.is_valid`). A models
  string that selects no catalog model only warns: it may be a GPU we do not know yet.

`None` for `known_mig_geometries` / `mig_profile_allowlist` means "not given": `hami.devices.geometry`
then supplies the built-in defaults.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from hami.devices import catalog, errors, layouts, naming
from hami.devices.models import GpuModel, MigProfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeometryEntry:
    """One line of an allowed geometry: `count` instances of profile `name`."""

    name: str
    """MIG profile name as written (lower-cased), e.g. `1g.10gb`; resolved per model, so a
    HAMi-era alias such as `7g.79gb` is fine."""
    memory: int | None = None
    """MiB one instance counts as when matching `nvidia.com/gpumem` requests. None: the GB in the
    hardware profile's name × 1024 (ARCHITECTURE §7); HAMi configs give it, so we honour it."""
    count: int = 1
    """Instances of this profile in the geometry (≥ 1)."""
    core: int | None = None
    """HAMi v2.8's per-instance core percentage. Kept for round-tripping; `gpucores` does not
    apply to MIG, so the scheduler does not use it."""


@dataclass(frozen=True)
class MigGeometryRule:
    """One `knownMigGeometries` entry: the geometries allowed on the GPUs `models` select."""

    models: tuple[str, ...]
    """Model strings (`naming.model_matches`): exact names first, else HAMi's case-insensitive
    substring of the GPU's name."""
    allowed_geometries: tuple[tuple[GeometryEntry, ...], ...]
    """Whole-GPU layouts, in search order: a GPU's instances must always fit inside one of them,
    and a new instance goes where the first geometry that can hold it puts it."""


@dataclass(frozen=True)
class AllowlistRule:
    """One `migProfileAllowlist` entry (HAMi v2.10): the profiles the scheduler may create."""

    models: tuple[str, ...]
    """Model strings, matched as in `MigGeometryRule.models`."""
    profiles: tuple[str, ...]
    """Profile names (lower-cased), resolved per model; aliases allowed."""


@dataclass(frozen=True)
class NvidiaConfig:
    """The `nvidia:` block. Defaults are HAMi's chart defaults, so an empty file behaves as HAMi."""

    resource_count_name: str = "nvidia.com/gpu"
    """Extended resource: number of GPUs (shares or MIG instances) per container."""
    resource_memory_name: str = "nvidia.com/gpumem"
    """Extended resource: MiB of GPU memory per device (× `memory_factor`)."""
    resource_memory_percentage_name: str = "nvidia.com/gpumem-percentage"
    """Extended resource: percent (1..100) of a device's memory."""
    resource_core_name: str = "nvidia.com/gpucores"
    """Extended resource: percent (0..100) of a device's SMs; 100 = exclusive (hami-core only)."""
    resource_priority_name: str = "nvidia.com/priority"
    """Extended resource that becomes CUDA_TASK_PRIORITY in the container."""
    overwrite_env: bool = False
    """Inject NVIDIA_VISIBLE_DEVICES=none into containers that ask for no GPU. Off by default,
    as in HAMi: it changes containers that did not ask for anything."""
    default_memory: int = 0
    """MiB per device when a container gives none; 0 = the whole device (HAMi's meaning)."""
    default_cores: int = 0
    """Core percent per device when a container gives none; 0 = no core limit."""
    default_gpu_num: int = 1
    """Devices added when a container gives memory, cores or percentage but no count."""
    memory_factor: int = 1
    """Multiplier applied to the `gpumem` value (lets users request in larger units); 1 = MiB."""
    device_split_count: int = 10
    """Maximum tasks sharing one hami-core GPU; HAMi's default, overridable per node."""
    device_memory_scaling: float = 1.0
    """Advertised hami-core memory = real × this; > 1 oversubscribes (HAMi then sets
    CUDA_OVERSUBSCRIBE). Ignored on MIG GPUs, whose memory is partitioned by hardware."""
    device_core_scaling: float = 1.0
    """Advertised hami-core cores = 100 × this."""
    known_mig_geometries: tuple[MigGeometryRule, ...] | None = None
    """HAMi v2.5–v2.9 `knownMigGeometries`; None = not given → built-in defaults per model."""
    mig_profile_allowlist: tuple[AllowlistRule, ...] | None = None
    """HAMi v2.10 `migProfileAllowlist`; None = not given → built-in defaults per model."""


@dataclass(frozen=True)
class DeviceConfig:
    """The whole device config; only the NVIDIA block is ours."""

    nvidia: NvidiaConfig = field(default_factory=NvidiaConfig)


def default_device_config() -> DeviceConfig:
    """HAMi's chart defaults; MIG geometries and allowlist come from the built-in defaults."""
    return DeviceConfig()


# ----------------------------------------------------------------------------------------------
# Parsing

_CAMEL = {
    "resourceCountName": "resource_count_name",
    "resourceMemoryName": "resource_memory_name",
    "resourceMemoryPercentageName": "resource_memory_percentage_name",
    "resourceCoreName": "resource_core_name",
    "resourcePriorityName": "resource_priority_name",
    "overwriteEnv": "overwrite_env",
    "defaultMemory": "default_memory",
    "defaultCores": "default_cores",
    "defaultGPUNum": "default_gpu_num",
    "memoryFactor": "memory_factor",
    "deviceSplitCount": "device_split_count",
    "deviceMemoryScaling": "device_memory_scaling",
    "deviceCoreScaling": "device_core_scaling",
    "knownMigGeometries": "known_mig_geometries",
    "migProfileAllowlist": "mig_profile_allowlist",
}
_FIELD_NAMES = {f.name for f in dataclasses.fields(NvidiaConfig)}
# HAMi keys that configure hami-core or the device plugin's node behaviour, not this scheduler.
_HAMI_UNUSED = frozenset(
    {
        "preConfiguredDeviceMemory",
        "enableNumaTopology",
        "libCudaLogLevel",
        "gpuCorePolicy",
        "runtimeClassName",
        "disableCoreLimit",
        "migStrategy",
    }
)
# (field, minimum, maximum, what it is) for numeric fields; None = unbounded.
_RANGES: dict[str, tuple[float | None, float | None, bool, str]] = {
    "default_memory": (0, None, False, "MiB per device when none is requested; 0 = whole device"),
    "default_cores": (0, 100, False, "percent of a GPU's cores"),
    "default_gpu_num": (1, None, False, "GPUs added when only memory or cores are requested"),
    "memory_factor": (1, None, False, "multiplier of the gpumem value"),
    "device_split_count": (1, None, False, "maximum tasks per GPU"),
    "device_memory_scaling": (0, None, True, "memory oversubscription factor"),
    "device_core_scaling": (0, None, True, "core scaling factor"),
}


def _fail(where: str, problem: str, fix: str) -> errors.ConfigError:
    return errors.ConfigError(f"device config: {where}: {problem}; {fix}")


def _as_int(value: Any, where: str, fix: str) -> int:
    if isinstance(value, bool):
        raise _fail(where, f"expected an integer, got {value!r}", fix)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise _fail(where, f"expected an integer, got {value!r}", fix)


def _as_float(value: Any, where: str, fix: str) -> float:
    if isinstance(value, bool):
        raise _fail(where, f"expected a number, got {value!r}", fix)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _fail(where, f"expected a number, got {value!r}", fix)


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _fail(where, f"expected true or false, got {value!r}", "write true or false")


def _as_list(value: Any, where: str, fix: str) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    raise _fail(where, f"expected a list, got {type(value).__name__} {value!r}", fix)


def _as_mapping(value: Any, where: str, fix: str) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    raise _fail(where, f"expected a mapping, got {type(value).__name__} {value!r}", fix)


def _models(value: Any, where: str) -> tuple[str, ...]:
    fix = 'list GPU model names, e.g. models: ["A100-SXM4-80GB", "A100-80GB-PCIe"]'
    if isinstance(value, str):
        value = [value]
    items = _as_list(value, where, fix)
    if not items:
        raise _fail(where, "the models list is empty", fix)
    out = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, str) or not item.strip():
            raise _fail(f"{where}[{i}]", f"expected a non-empty model name, got {item!r}", fix)
        out.append(item.strip())
    return tuple(out)


def _profile_name(value: Any, where: str) -> str:
    fix = "write a MIG profile name like 1g.10gb, 3g.40gb or 1g.10gb+me"
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"expected a MIG profile name, got {value!r}", fix)
    name = value.strip().casefold()
    try:
        naming.parse_profile_name(name)
    except ValueError:
        raise _fail(
            where, f"malformed MIG profile name {value!r} (expected <N>g.<X>gb[+attr])", fix
        ) from None
    return name


def _warn_unknown_keys(block: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in block:
        if key not in known:
            log.warning(
                "device config: %s: unknown key %r ignored (known: %s)", where, key, ", ".join(sorted(known))
            )


def _parse_entry(raw: Any, where: str) -> GeometryEntry:
    entry = _as_mapping(raw, where, "write each geometry line as {name: 1g.10gb, memory: 10240, count: 7}")
    _warn_unknown_keys(entry, {"name", "memory", "count", "core"}, where)
    if "name" not in entry:
        raise _fail(where, "missing `name`", "give the MIG profile name, e.g. name: 1g.10gb")
    name = _profile_name(entry["name"], f"{where}.name")
    where = f"{where} ({name})"
    memory = entry.get("memory")
    if memory is not None:
        memory = _as_int(memory, f"{where}.memory", "give the profile's memory in MiB, e.g. 10240")
        if memory < 0:
            raise _fail(
                f"{where}.memory", f"must be ≥ 0 MiB, got {memory}", "give the profile's memory in MiB"
            )
    if "count" not in entry:
        raise _fail(where, "missing `count`", "give how many instances of the profile the geometry holds")
    count = _as_int(entry["count"], f"{where}.count", "give a whole number of instances ≥ 1")
    if count < 1:
        raise _fail(f"{where}.count", f"must be ≥ 1, got {count}", "remove the line or give a count ≥ 1")
    core = entry.get("core")
    if core is not None:
        core = _as_int(core, f"{where}.core", "give a percentage 0..100")
        if not 0 <= core <= 100:
            raise _fail(f"{where}.core", f"must be 0..100, got {core}", "give a percentage 0..100")
    return GeometryEntry(name=name, memory=memory, count=count, core=core)


def _parse_geometry_rules(raw: Any) -> tuple[MigGeometryRule, ...]:
    where = "nvidia.knownMigGeometries"
    rules = []
    for r, raw_rule in enumerate(_as_list(raw, where, "give a list of {models, allowedGeometries}"), 1):
        rw = f"{where}[{r}]"
        rule = _as_mapping(raw_rule, rw, "give {models: [...], allowedGeometries: [[...], ...]}")
        _warn_unknown_keys(rule, {"models", "allowedGeometries", "allowed_geometries"}, rw)
        if "models" not in rule:
            raise _fail(rw, "missing `models`", "list the GPU models this rule applies to")
        models = _models(rule["models"], f"{rw}.models")
        raw_geoms = rule.get("allowedGeometries", rule.get("allowed_geometries"))
        fix = "give at least one geometry: a list of {name, memory, count} lines"
        if raw_geoms is None:
            raise _fail(f"{rw} (models {', '.join(models)})", "missing `allowedGeometries`", fix)
        geoms_list = _as_list(raw_geoms, f"{rw}.allowedGeometries", fix)
        if not geoms_list:
            raise _fail(f"{rw}.allowedGeometries", "is empty", fix)
        geometries = []
        for g, raw_geom in enumerate(geoms_list, 1):
            gw = f"{rw} (models {', '.join(models)}) geometry {g}"
            lines = _as_list(raw_geom, gw, "write each geometry as a list of {name, memory, count} lines")
            if not lines:
                raise _fail(gw, "is empty", "remove it or list at least one profile")
            entries = tuple(_parse_entry(line, f"{gw} line {i}") for i, line in enumerate(lines, 1))
            seen: set[str] = set()
            for e in entries:
                if e.name in seen:
                    raise _fail(
                        gw,
                        f"profile {e.name} is listed twice",
                        "merge the lines into one with the total count",
                    )
                seen.add(e.name)
            geometries.append(entries)
        rules.append(MigGeometryRule(models=models, allowed_geometries=tuple(geometries)))
    return tuple(rules)


def _parse_allowlist(raw: Any) -> tuple[AllowlistRule, ...]:
    where = "nvidia.migProfileAllowlist"
    rules = []
    for r, raw_rule in enumerate(_as_list(raw, where, "give a list of {models, profiles}"), 1):
        rw = f"{where}[{r}]"
        rule = _as_mapping(raw_rule, rw, "give {models: [...], profiles: [...]}")
        _warn_unknown_keys(rule, {"models", "profiles"}, rw)
        if "models" not in rule:
            raise _fail(rw, "missing `models`", "list the GPU models this entry applies to")
        models = _models(rule["models"], f"{rw}.models")
        fix = "list the MIG profiles the scheduler may create, e.g. profiles: [1g.10gb, 3g.40gb]"
        if "profiles" not in rule:
            raise _fail(f"{rw} (models {', '.join(models)})", "missing `profiles`", fix)
        items = _as_list(rule["profiles"], f"{rw}.profiles", fix)
        if not items:
            raise _fail(f"{rw}.profiles", "is empty", fix)
        profiles = tuple(_profile_name(p, f"{rw}.profiles[{i}]") for i, p in enumerate(items, 1))
        rules.append(AllowlistRule(models=models, profiles=tuple(dict.fromkeys(profiles))))
    return tuple(rules)


def _parse_nvidia(block: Mapping[str, Any]) -> NvidiaConfig:
    values: dict[str, Any] = {}
    for key, value in block.items():
        name = _CAMEL.get(key, key if key in _FIELD_NAMES else None)
        if name is None:
            if key in _HAMI_UNUSED:
                log.info("device config: nvidia.%s is a HAMi node/hami-core setting; not used here", key)
            else:
                log.warning("device config: unknown key nvidia.%s ignored", key)
            continue
        where = f"nvidia.{key}"
        if value is None and name in ("known_mig_geometries", "mig_profile_allowlist"):
            continue
        if name == "known_mig_geometries":
            values[name] = _parse_geometry_rules(value)
        elif name == "mig_profile_allowlist":
            values[name] = _parse_allowlist(value)
        elif name == "overwrite_env":
            values[name] = _as_bool(value, where)
        elif name.startswith("resource_"):
            if not isinstance(value, str) or not value.strip():
                raise _fail(where, f"expected a resource name, got {value!r}", "write e.g. nvidia.com/gpu")
            values[name] = value.strip()
        else:
            low, high, is_float, what = _RANGES[name]
            fix = f"give the {what}"
            number = _as_float(value, where, fix) if is_float else _as_int(value, where, fix)
            too_low = low is not None and (number <= low if is_float else number < low)
            if too_low or (high is not None and number > high):
                bound = (
                    f"> {low:g}"
                    if is_float
                    else f"≥ {low:g}" + (f" and ≤ {high:g}" if high is not None else "")
                )
                raise _fail(where, f"must be {bound}, got {value!r}", fix)
            values[name] = number
    return NvidiaConfig(**values)


def _parse_source(source: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    if isinstance(source, bytes):
        source = source.decode("utf-8")
    try:
        data = yaml.safe_load(source)  # YAML is a superset of JSON: both formats load here
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"device config is not valid YAML or JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise errors.ConfigError(
            f"device config: expected a mapping with an `nvidia:` block at the top, got {type(data).__name__}"
        )
    return data


def load_device_config(
    source: str | bytes | Mapping[str, Any], models: tuple[GpuModel, ...] | None = None
) -> DeviceConfig:
    """Parse and validate HAMi's device config (YAML or JSON text, or an already parsed mapping).

    `models` replaces the built-in catalog for validation. Raises `errors.ConfigError`.
    """
    data = _parse_source(source)
    block = data.get("nvidia")
    if block is None:
        stray = sorted(k for k in data if k in _CAMEL)
        if stray:
            log.warning(
                "device config: %s found at the top level; they belong under `nvidia:`", ", ".join(stray)
            )
        nvidia = NvidiaConfig()
    else:
        nvidia = _parse_nvidia(_as_mapping(block, "nvidia", "put the NVIDIA settings in a mapping"))
    validate_nvidia_config(nvidia, models)
    return DeviceConfig(nvidia=nvidia)


# ----------------------------------------------------------------------------------------------
# Validation against the catalog


def rule_for(
    model: GpuModel, rules: Sequence[Any] | None, models: tuple[GpuModel, ...] | None = None
) -> tuple[int, Any] | None:
    """(1-based index, rule) of the first rule whose `models` select `model`, or None.

    Works for `MigGeometryRule` and `AllowlistRule` (both have `models`)."""
    for index, rule in enumerate(rules or (), 1):
        if any(naming.model_matches(s, model, models) for s in rule.models):
            return index, rule
    return None


def _resolve(model: GpuModel, name: str, where: str) -> tuple[MigProfile, bool]:
    try:
        return naming.resolve_profile(model, name)
    except errors.UnknownProfileError as exc:
        raise _fail(
            where, str(exc), "use one of the model's profile names, or narrow `models` so this rule skips it"
        ) from None


def _misfit_reason(model: GpuModel, counts: dict[str, int]) -> str:
    spec = model.mig
    assert spec is not None
    for name, count in counts.items():
        cap = spec.profile(name).instance_cap
        if count > cap:
            return f"{model.key} allows at most {cap} × {name}"
    mem = layouts.memory_slices_used(spec, counts)
    if mem > spec.memory_slices:
        return f"it needs {mem} memory slices and {model.key} has {spec.memory_slices}"
    compute = layouts.compute_slices_used(spec, counts)
    if compute > spec.compute_slices:
        return f"it needs {compute} compute slices and {model.key} has {spec.compute_slices}"
    return f"no arrangement at {model.key}'s legal start slices avoids overlap"


def _show(counts: Mapping[str, int]) -> str:
    return " + ".join(f"{c}×{n}" for n, c in counts.items())


def _legal_examples(model: GpuModel, counts: Mapping[str, int]) -> str:
    """Up to three full legal layouts that use the same profiles, as a hint."""
    spec = model.mig
    assert spec is not None
    names = set(counts)
    pool = layouts.maximal_layouts(spec, [p for p in spec.profiles if p.is_base or p.name in names])
    fitting = [c for c in pool if names <= set(c)][:3]
    return f", e.g. {' or '.join(_show(c) for c in fitting)}" if fitting else ""


def _check_geometry_rule(rule: MigGeometryRule, r: int, model: GpuModel) -> None:
    spec = model.mig
    assert spec is not None
    memory_of: dict[str, tuple[int, int]] = {}
    for g, geometry in enumerate(rule.allowed_geometries, 1):
        where = f"nvidia.knownMigGeometries[{r}] geometry {g} on {model.key} ({model.nvml_name})"
        counts: dict[str, int] = {}
        for entry in geometry:
            profile, alias = _resolve(model, entry.name, f"{where}, profile {entry.name}")
            if alias:
                log.warning(
                    "device config: knownMigGeometries[%d] geometry %d: profile %s is taken as %s's %s "
                    "(alias; write %s to silence this)",
                    r,
                    g,
                    entry.name,
                    model.key,
                    profile.name,
                    profile.name,
                )
            if profile.name in counts:
                raise _fail(
                    where,
                    f"{entry.name} and another line both denote {profile.name}",
                    "merge them into one line",
                )
            counts[profile.name] = entry.count
            if entry.memory is not None:
                first = memory_of.setdefault(profile.name, (entry.memory, g))
                if first[0] != entry.memory:
                    log.warning(
                        "device config: knownMigGeometries[%d]: %s on %s has memory %d MiB in geometry %d "
                        "but %d MiB in geometry %d; using %d",
                        r,
                        profile.name,
                        model.key,
                        first[0],
                        first[1],
                        entry.memory,
                        g,
                        first[0],
                    )
        if not layouts.is_valid(spec, counts):
            raise _fail(
                where,
                f"{_show(counts)} is not a legal MIG layout ({_misfit_reason(model, counts)})",
                "change the counts so the instances fit on one GPU" + _legal_examples(model, counts),
            )


def _check_allowlist_rule(rule: AllowlistRule, r: int, model: GpuModel) -> None:
    for name in rule.profiles:
        where = f"nvidia.migProfileAllowlist[{r}] on {model.key} ({model.nvml_name}), profile {name}"
        profile, alias = _resolve(model, name, where)
        if alias:
            log.warning(
                "device config: migProfileAllowlist[%d]: profile %s is taken as %s's %s (alias; write %s to "
                "silence this)",
                r,
                name,
                model.key,
                profile.name,
                profile.name,
            )


def _check_rule_models(kind: str, rules: Sequence[Any], models: tuple[GpuModel, ...] | None) -> None:
    pool = catalog.MODELS if models is None else models
    owner: dict[str, int] = {}
    for model in pool:
        found = rule_for(model, rules, models)
        if found is not None:
            owner[model.key] = found[0]
    for r, rule in enumerate(rules, 1):
        for text in rule.models:
            selected = [m for m in pool if naming.model_matches(text, m, models)]
            if not selected:
                log.warning(
                    "device config: %s[%d]: model %r matches no GPU model we know; the rule cannot apply "
                    "until the model is added to hami/devices/catalog.py",
                    kind,
                    r,
                    text,
                )
            elif not any(m.mig_capable for m in selected):
                log.warning(
                    "device config: %s[%d]: model %r selects only GPUs without MIG (%s)",
                    kind,
                    r,
                    text,
                    ", ".join(m.key for m in selected),
                )
        chosen = [
            m for m in pool if m.mig_capable and any(naming.model_matches(s, m, models) for s in rule.models)
        ]
        if chosen and all(owner[m.key] != r for m in chosen):
            log.warning(
                "device config: %s[%d]: every model it selects (%s) is governed by an earlier rule; it never "
                "applies",
                kind,
                r,
                ", ".join(m.key for m in chosen),
            )


def validate_nvidia_config(config: NvidiaConfig, models: tuple[GpuModel, ...] | None = None) -> None:
    """Check the MIG rules against the catalog (see module docstring); raise ConfigError."""
    pool = catalog.MODELS if models is None else models
    if config.known_mig_geometries:
        _check_rule_models("knownMigGeometries", config.known_mig_geometries, models)
        for model in pool:
            found = rule_for(model, config.known_mig_geometries, models) if model.mig_capable else None
            if found is not None:
                _check_geometry_rule(found[1], found[0], model)
    if config.mig_profile_allowlist:
        _check_rule_models("migProfileAllowlist", config.mig_profile_allowlist, models)
        for model in pool:
            found = rule_for(model, config.mig_profile_allowlist, models) if model.mig_capable else None
            if found is not None:
                _check_allowlist_rule(found[1], found[0], model)
