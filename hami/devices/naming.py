"""From the strings people and programs write to catalog models and profiles.

GPU names reach us in several spellings: NVML's (`NVIDIA A100-SXM4-80GB`; older drivers without
the `NVIDIA ` prefix), HAMi's registered `type` (`NVIDIA-NVIDIA H100 NVL` from v2.5, which
prefixed `NVIDIA-` to every name; `NVIDIA-A100-SXM4-40GB`), and the strings users write in
`knownMigGeometries` / `migProfileAllowlist` (`A100-40GB-PCIe`, `H200-SXM5`, `B200`).

Model names — `find_model(name)`:
1. Normalise: case-fold; drop leading `NVIDIA-`, `NVIDIA `, `Tesla ` (any number, any order);
   treat runs of spaces, `-` and `_` as one separator; drop a trailing MIG device suffix
   (`… MIG 1g.10gb`), so `NVIDIA-NVIDIA H100 NVL`, `nvidia h100-nvl` and `H100_NVL` are equal.
2. Look the result up among every model's key, NVML name and aliases, normalised the same way.
   The catalog guarantees that no two models share a normalised name.
3. Nothing found → `UnknownModelError` listing the closest known names.
There is no fuzzy or substring fallback here: an NVML name either is a model we know or is not.

Config model strings — `model_matches(s, model)`: how an entry of a config `models:` list selects
GPUs. First the string is resolved as in `find_model`; if it names a model exactly, it selects
that model only. This is why `H20` selects the H20 but not the H200, and `H200` (NVML's name of
the SXM part) the H200 SXM but not the H200 NVL: list both `H200` and `H200 NVL` to get both.
Otherwise HAMi's rule applies: a case-insensitive substring of the model's NVML name, HAMi's type
form of it, its key or an alias (compared in the normalised form), so `A100` selects every A100
and `80GB` every 80GB part.

Profile names — `resolve_profile(model, name)`: an exact profile name of the model, or an
*alias*: a name with the same compute-slice count and attributes whose GB differs slightly from
the hardware's (HAMi's default config says `7g.79gb` for A100-80GB's `7g.80gb`; drivers renamed
`3g.40gb` to `3g.39gb`; GB200 boards print `1g.24gb` for `1g.23gb`). "Slightly" is at most 1 GB
or 5 % of the hardware's GB, whichever is larger; the nearest profile wins, ties are errors.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable

from hami.devices import catalog, errors
from hami.devices.models import PROFILE_NAME_RE, GpuModel, MigProfile

_SEPARATORS = re.compile(r"[\s_\-]+")
_PREFIX = re.compile(r"^(?:nvidia-|tesla-)+")
_MIG_SUFFIX = re.compile(r"-mig-(?:\d+c\.)?\d+g\.\d+gb\S*$")


def _separated(text: str) -> str:
    return _SEPARATORS.sub("-", text.strip().casefold()).strip("-")


def normalize_name(name: str) -> str:
    """The comparison form of a GPU name (rule 1 of the module docstring)."""
    return _MIG_SUFFIX.sub("", _PREFIX.sub("", _separated(name)))


def model_names(model: GpuModel) -> tuple[str, ...]:
    """Every spelling the catalog knows for `model`: key, NVML name, aliases (not normalised)."""
    return (model.key, model.nvml_name, *model.aliases)


def _index(models: tuple[GpuModel, ...] | None) -> dict[str, GpuModel]:
    return _builtin_index() if models is None or models is catalog.MODELS else _build_index(models)


@functools.cache
def _builtin_index() -> dict[str, GpuModel]:
    return _build_index(catalog.MODELS)


def _build_index(models: tuple[GpuModel, ...]) -> dict[str, GpuModel]:
    index: dict[str, GpuModel] = {}
    for model in models:
        for spelling in model_names(model):
            normal = normalize_name(spelling)
            other = index.setdefault(normal, model)
            if other.key != model.key:
                raise ValueError(f"catalog names {other.key} and {model.key} both as {spelling!r}")
    return index


def find_model(name: str, models: tuple[GpuModel, ...] | None = None) -> GpuModel:
    """The catalog model `name` denotes (NVML name, HAMi type, key or alias; see module doc).

    `models` replaces the built-in catalog (tests, simulators with invented parts).
    """
    index = _index(models)
    normal = normalize_name(name)
    model = index.get(normal)
    if model is None:
        raise errors.UnknownModelError(name, _suggest(normal, index))
    return model


def _suggest(normal: str, index: dict[str, GpuModel]) -> tuple[str, ...]:
    close = difflib.get_close_matches(normal, list(index), n=5, cutoff=0.6)
    # Report each model once, by its NVML name, in closeness order.
    seen: dict[str, str] = {}
    for candidate in close:
        model = index[candidate]
        seen.setdefault(model.key, model.nvml_name)
    if not seen and normal:
        seen = {m.key: m.nvml_name for m in index.values() if normal in normalize_name(m.nvml_name)}
    return tuple(seen.values())[:5]


def model_matches(config_model: str, model: GpuModel, models: tuple[GpuModel, ...] | None = None) -> bool:
    """Whether the config `models:` entry `config_model` selects `model` (module docstring)."""
    if not config_model.strip():
        return False
    try:
        return find_model(config_model, models).key == model.key
    except errors.UnknownModelError:
        pass
    raw_needle, needle = _separated(config_model), normalize_name(config_model)
    for spelling in (*model_names(model), "NVIDIA-" + model.nvml_name):
        if raw_needle in _separated(spelling) or (needle and needle in normalize_name(spelling)):
            return True
    return False


def selected_models(
    config_models: Iterable[str], models: tuple[GpuModel, ...] | None = None
) -> tuple[GpuModel, ...]:
    """The catalog models any of `config_models` selects, in catalog order."""
    strings = tuple(config_models)
    pool = catalog.MODELS if models is None else models
    return tuple(m for m in pool if any(model_matches(s, m, models) for s in strings))


# ----------------------------------------------------------------------------------------------
# Profile names


def parse_profile_name(name: str) -> tuple[int, int, tuple[str, ...]]:
    """(compute slices, GB, attributes) of `<N>g.<X>gb[+attr…]`; ValueError when malformed."""
    match = PROFILE_NAME_RE.match(name)
    if not match:
        raise ValueError(
            f"malformed MIG profile name {name!r}: expected <N>g.<X>gb with optional attributes, "
            "e.g. 1g.10gb, 3g.40gb, 1g.10gb+me"
        )
    return (
        int(match.group("g")),
        int(match.group("gb")),
        tuple(re.findall(r"[+-][a-z.]+", match.group("attrs"))),
    )


def alias_tolerance_gb(hardware_gb: int) -> int:
    """How far (in GB) an alias's name may be from the hardware profile's: max(1, 5 %)."""
    return max(1, round(hardware_gb * 0.05))


def resolve_profile(model: GpuModel, name: str) -> tuple[MigProfile, bool]:
    """(the hardware profile `name` denotes on `model`, whether `name` was an alias).

    Raises UnknownProfileError (with the model's profile list) when `name` is neither.
    """
    if model.mig is None:
        raise errors.UnknownProfileError(f"{model.key} is not MIG-capable; it has no profile {name!r}")
    text = name.strip().casefold()
    for profile in model.mig.profiles:
        if profile.name == text:
            return profile, False
    try:
        g, gb, attrs = parse_profile_name(text)
    except ValueError as exc:
        raise errors.UnknownProfileError(str(exc)) from None
    candidates = []
    for profile in model.mig.profiles:
        if profile.compute_slices != g or profile.attributes != attrs:
            continue
        distance = abs(profile.nominal_gb - gb)
        if distance <= alias_tolerance_gb(profile.nominal_gb):
            candidates.append((distance, profile))
    candidates.sort(key=lambda c: c[0])
    if candidates and (len(candidates) == 1 or candidates[0][0] < candidates[1][0]):
        return candidates[0][1], True
    known = ", ".join(p.name for p in model.mig.profiles)
    why = "it is ambiguous between " + " and ".join(c[1].name for c in candidates) if candidates else ""
    raise errors.UnknownProfileError(
        f"{model.key} ({model.nvml_name}) has no MIG profile {name!r}"
        + (f" ({why})" if why else "")
        + f"; its profiles are {known}"
    )
