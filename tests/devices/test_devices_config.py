"""HAMi's device config: loading (YAML, JSON, mappings), defaults, and precise validation."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import yaml

from hami.devices import catalog, config, errors

FIXTURES = Path(__file__).parent / "fixtures"
SEED = (FIXTURES / "seed-device-config.yaml").read_text()
LOGGER = "hami.devices.config"


def _load(nvidia: dict) -> config.DeviceConfig:
    return config.load_device_config({"nvidia": nvidia})


def _geometries(models: list[str], *geometries: list[dict]) -> dict:
    return {"knownMigGeometries": [{"models": models, "allowedGeometries": list(geometries)}]}


def test_defaults_are_hamis_chart_defaults():
    nvidia = config.default_device_config().nvidia
    assert nvidia == config.NvidiaConfig()
    assert (nvidia.resource_count_name, nvidia.resource_memory_name) == (
        "nvidia.com/gpu",
        "nvidia.com/gpumem",
    )
    assert nvidia.resource_memory_percentage_name == "nvidia.com/gpumem-percentage"
    assert (nvidia.resource_core_name, nvidia.resource_priority_name) == (
        "nvidia.com/gpucores",
        "nvidia.com/priority",
    )
    assert (nvidia.overwrite_env, nvidia.default_memory, nvidia.default_cores, nvidia.default_gpu_num) == (
        False,
        0,
        0,
        1,
    )
    assert (nvidia.memory_factor, nvidia.device_split_count) == (1, 10)
    assert (nvidia.device_memory_scaling, nvidia.device_core_scaling) == (1.0, 1.0)
    assert nvidia.known_mig_geometries is None and nvidia.mig_profile_allowlist is None


def test_config_values_are_frozen():
    nvidia = config.NvidiaConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        nvidia.device_split_count = 3  # type: ignore[misc]


@pytest.mark.parametrize("source", ["", "nvidia:\n", "{}", "other-vendor: {x: 1}\n"])
def test_empty_sources_give_defaults(source):
    assert config.load_device_config(source) == config.default_device_config()


def test_seed_config_loads_with_the_alias_warning(caplog):
    with caplog.at_level(logging.WARNING, LOGGER):
        loaded = config.load_device_config(SEED)
    nvidia = loaded.nvidia
    assert nvidia.device_split_count == 10 and nvidia.overwrite_env is False
    rules = nvidia.known_mig_geometries
    assert rules[0].models == ("A30",)
    assert len(rules) == 3 and all(len(r.allowed_geometries) in (3, 4) for r in rules)
    assert rules[2].allowed_geometries[3] == (config.GeometryEntry("7g.79gb", 80896, 1, None),)
    assert rules[1].allowed_geometries[1] == (
        config.GeometryEntry("2g.10gb", 10240, 3),
        config.GeometryEntry("1g.5gb", 5120, 1),
    )
    alias = [r.getMessage() for r in caplog.records if "7g.79gb" in r.getMessage()]
    assert alias and all("7g.80gb" in m for m in alias)
    assert any("A100-SXM4-80GB" in m for m in alias)
    assert all("7g.79gb" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_json_text_and_parsed_mapping_load_the_same():
    parsed = yaml.safe_load(SEED)
    assert config.load_device_config(json.dumps(parsed)) == config.load_device_config(parsed)
    assert config.load_device_config(SEED.encode()) == config.load_device_config(parsed)


def test_snake_case_keys_are_accepted():
    loaded = _load({"device_split_count": 4, "resource_count_name": "example.com/gpu"}).nvidia
    assert (loaded.device_split_count, loaded.resource_count_name) == (4, "example.com/gpu")


def test_template_style_strings_are_coerced():
    loaded = _load({"overwriteEnv": "true", "deviceSplitCount": "5", "deviceMemoryScaling": "1.5"}).nvidia
    assert (loaded.overwrite_env, loaded.device_split_count, loaded.device_memory_scaling) == (True, 5, 1.5)


def test_unknown_keys_warn_and_hami_keys_do_not(caplog):
    with caplog.at_level(logging.INFO, LOGGER):
        _load({"deviceSplitCont": 3, "libCudaLogLevel": 1, "gpuCorePolicy": "default"})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "deviceSplitCont" in warnings[0]
    assert any("libCudaLogLevel" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_top_level_keys_outside_nvidia_warn(caplog):
    with caplog.at_level(logging.WARNING, LOGGER):
        config.load_device_config({"deviceSplitCount": 3})
    assert "nvidia:" in caplog.text


def test_model_string_selecting_nothing_only_warns(caplog):
    nvidia = _geometries(["MI300X"], [{"name": "1g.24gb", "count": 8}])
    with caplog.at_level(logging.WARNING, LOGGER):
        loaded = _load(nvidia)
    assert loaded.nvidia.known_mig_geometries[0].models == ("MI300X",)
    assert "'MI300X' matches no GPU model" in caplog.text and "catalog.py" in caplog.text


def test_shadowed_rule_warns(caplog):
    nvidia = {
        "knownMigGeometries": [
            {"models": ["A30"], "allowedGeometries": [[{"name": "4g.24gb", "count": 1}]]},
            {"models": ["A30"], "allowedGeometries": [[{"name": "1g.6gb", "count": 4}]]},
        ]
    }
    with caplog.at_level(logging.WARNING, LOGGER):
        _load(nvidia)
    assert "knownMigGeometries[2]" in caplog.text and "never applies" in caplog.text


def test_rule_for_picks_the_first_selecting_rule():
    rules = config.load_device_config(SEED).nvidia.known_mig_geometries
    assert config.rule_for(catalog.BY_KEY["A100-PCIE-40GB"], rules)[0] == 2
    assert config.rule_for(catalog.BY_KEY["A100-PCIE-80GB"], rules)[0] == 3
    assert config.rule_for(catalog.BY_KEY["H100-NVL"], rules) is None


def _error(nvidia: dict) -> str:
    with pytest.raises(errors.ConfigError) as info:
        _load(nvidia)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_unknown_profile_names_model_geometry_and_profile():
    message = _error(
        _geometries(["A100-SXM4-80GB"], [{"name": "1g.10gb", "count": 7}], [{"name": "2g.30gb", "count": 3}])
    )
    assert "A100-SXM4-80GB" in message
    assert "geometry 2" in message
    assert "2g.30gb" in message
    assert "1g.10gb, 1g.10gb+me" in message  # what the model does have


def test_illegal_layout_names_model_geometry_and_reason():
    message = _error(
        _geometries(["A100-SXM4-80GB"], [{"name": "7g.80gb", "count": 1}], [{"name": "2g.20gb", "count": 4}])
    )
    assert "A100-SXM4-80GB" in message and "geometry 2" in message and "2g.20gb" in message
    assert "at most 3 × 2g.20gb" in message


def test_overlapping_layout_is_rejected():
    message = _error(
        _geometries(
            ["H100-SXM5-80GB"],
            [
                {"name": "4g.40gb", "count": 1},
                {"name": "3g.40gb", "count": 1},
                {"name": "1g.10gb", "count": 1},
            ],
        )
    )
    assert "geometry 1" in message and "H100-SXM5-80GB" in message and "not a legal MIG layout" in message


def test_a_geometry_must_fit_every_model_its_rule_selects():
    # 1g.5gb exists on the 40GB parts only: "A100" also selects the 80GB ones.
    message = _error(_geometries(["A100"], [{"name": "1g.5gb", "count": 7}]))
    assert "A100-SXM4-80GB" in message and "1g.5gb" in message and "narrow `models`" in message


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"name": "1g.10gb", "count": 0}, "count: must be ≥ 1"),
        ({"name": "1g.10gb", "count": -2}, "count: must be ≥ 1"),
        ({"name": "1g.10gb", "count": 1, "memory": -1}, "memory: must be ≥ 0"),
        ({"name": "1g.10gb", "count": 1, "core": 101}, "core: must be 0..100"),
        ({"name": "1g-10gb", "count": 1}, "malformed MIG profile name"),
        ({"name": "1g.10gb"}, "missing `count`"),
        ({"count": 1}, "missing `name`"),
        ({"name": "1g.10gb", "count": "many"}, "expected an integer"),
        ({"name": "1g.10gb", "count": True}, "expected an integer"),
    ],
)
def test_bad_geometry_lines(entry, fragment):
    message = _error(_geometries(["A100-SXM4-80GB"], [{"name": "7g.80gb", "count": 1}], [entry]))
    assert fragment in message
    assert "knownMigGeometries[1]" in message and "geometry 2" in message


def test_duplicate_profile_in_a_geometry():
    message = _error(_geometries(["A30"], [{"name": "1g.6gb", "count": 1}, {"name": "1g.6gb", "count": 1}]))
    assert "listed twice" in message and "geometry 1" in message


def test_alias_and_canonical_name_in_one_geometry():
    message = _error(
        _geometries(["A100-SXM4-80GB"], [{"name": "3g.40gb", "count": 1}, {"name": "3g.39gb", "count": 1}])
    )
    assert "both denote 3g.40gb" in message


@pytest.mark.parametrize(
    ("nvidia", "fragment"),
    [
        (
            {"knownMigGeometries": [{"allowedGeometries": [[{"name": "1g.6gb", "count": 1}]]}]},
            "missing `models`",
        ),
        ({"knownMigGeometries": [{"models": [], "allowedGeometries": [[]]}]}, "models list is empty"),
        ({"knownMigGeometries": [{"models": ["A30"]}]}, "missing `allowedGeometries`"),
        (
            {"knownMigGeometries": [{"models": ["A30"], "allowedGeometries": []}]},
            "allowedGeometries: is empty",
        ),
        ({"knownMigGeometries": [{"models": ["A30"], "allowedGeometries": [[]]}]}, "geometry 1: is empty"),
        ({"knownMigGeometries": {"models": ["A30"]}}, "expected a list"),
        ({"deviceSplitCount": 0}, "nvidia.deviceSplitCount: must be ≥ 1"),
        ({"defaultCores": 150}, "nvidia.defaultCores: must be ≥ 0 and ≤ 100"),
        ({"deviceMemoryScaling": 0}, "nvidia.deviceMemoryScaling: must be > 0"),
        ({"memoryFactor": "x"}, "nvidia.memoryFactor: expected an integer"),
        ({"overwriteEnv": "maybe"}, "write true or false"),
        ({"resourceCountName": ""}, "expected a resource name"),
        ({"migProfileAllowlist": [{"models": ["A30"]}]}, "missing `profiles`"),
        ({"migProfileAllowlist": [{"models": ["A30"], "profiles": ["1g6gb"]}]}, "malformed MIG profile name"),
    ],
)
def test_bad_configs(nvidia, fragment):
    assert fragment in _error(nvidia)


def test_allowlist_profile_unknown_on_model():
    message = _error({"migProfileAllowlist": [{"models": ["A30"], "profiles": ["1g.6gb", "3g.18gb"]}]})
    assert "migProfileAllowlist[1]" in message and "A30" in message and "3g.18gb" in message


def test_allowlist_alias_warns(caplog):
    with caplog.at_level(logging.WARNING, LOGGER):
        loaded = _load(
            {"migProfileAllowlist": [{"models": ["A100-SXM4-80GB"], "profiles": ["1g.10gb", "7g.79gb"]}]}
        )
    assert loaded.nvidia.mig_profile_allowlist[0].profiles == ("1g.10gb", "7g.79gb")
    assert "7g.79gb" in caplog.text and "7g.80gb" in caplog.text


def test_invalid_yaml_and_wrong_top_level():
    with pytest.raises(errors.ConfigError, match="not valid YAML"):
        config.load_device_config("nvidia: [unclosed")
    with pytest.raises(errors.ConfigError, match="expected a mapping"):
        config.load_device_config("- a\n- b\n")
    with pytest.raises(errors.ConfigError, match="nvidia"):
        config.load_device_config({"nvidia": ["x"]})


def test_custom_catalog_for_validation():
    only_a30 = (catalog.BY_KEY["A30"],)
    nvidia = config.NvidiaConfig(
        known_mig_geometries=(
            config.MigGeometryRule(("A30",), ((config.GeometryEntry("2g.12gb", None, 3),),)),
        )
    )
    with pytest.raises(errors.ConfigError, match="at most 2"):
        config.validate_nvidia_config(nvidia, only_a30)
