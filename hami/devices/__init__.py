"""Hardware knowledge as data: GPU models, MIG profiles, placements, legal layouts, and the
device config (`knownMigGeometries`, `migProfileAllowlist`) that narrows them.

Responsibility and prohibitions: stdlib + yaml only; no I/O except loading config text handed to
it; no NVML, no Kubernetes, nothing from the scheduler or the agent. Every hardware fact carries
its provenance (documented / observed / inferred) so readers know what to verify on hardware.

Modules: `models` (value types), `catalog` (the built-in table), `naming` (names → models and
profiles), `layouts` (legal whole-GPU layouts), `config` (HAMi's device config), `geometry` (the
engine's per-model inputs), `errors`. This facade re-exports their public names.
"""

from hami.devices.catalog import BY_KEY, MIG_MODELS, MODELS, NON_MIG_MODELS
from hami.devices.config import (
    AllowlistRule,
    DeviceConfig,
    GeometryEntry,
    MigGeometryRule,
    NvidiaConfig,
    default_device_config,
    load_device_config,
    rule_for,
    validate_nvidia_config,
)
from hami.devices.errors import ConfigError, DevicesError, UnknownModelError, UnknownProfileError
from hami.devices.geometry import (
    CHART_DEFAULT_ALLOWLIST,
    Geometry,
    allowed_geometries,
    allowlisted_profiles,
    balanced_layout,
    default_geometries,
    nominal_memory,
    seed_geometries,
)
from hami.devices.layouts import (
    arrange,
    is_valid,
    layout_mask,
    maximal_layouts,
    positioned_layouts,
    valid_layouts,
)
from hami.devices.models import Architecture, GpuModel, MigProfile, MigSpec, Provenance
from hami.devices.naming import (
    find_model,
    model_matches,
    normalize_name,
    parse_profile_name,
    resolve_profile,
    selected_models,
)

__all__ = [
    "BY_KEY",
    "CHART_DEFAULT_ALLOWLIST",
    "MIG_MODELS",
    "MODELS",
    "NON_MIG_MODELS",
    "AllowlistRule",
    "Architecture",
    "ConfigError",
    "DeviceConfig",
    "DevicesError",
    "Geometry",
    "GeometryEntry",
    "GpuModel",
    "MigGeometryRule",
    "MigProfile",
    "MigSpec",
    "NvidiaConfig",
    "Provenance",
    "UnknownModelError",
    "UnknownProfileError",
    "allowed_geometries",
    "allowlisted_profiles",
    "arrange",
    "balanced_layout",
    "default_device_config",
    "default_geometries",
    "find_model",
    "is_valid",
    "layout_mask",
    "load_device_config",
    "maximal_layouts",
    "model_matches",
    "nominal_memory",
    "normalize_name",
    "parse_profile_name",
    "positioned_layouts",
    "resolve_profile",
    "rule_for",
    "seed_geometries",
    "selected_models",
    "valid_layouts",
    "validate_nvidia_config",
]
