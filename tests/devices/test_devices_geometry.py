"""The engine's per-model inputs: allowed geometries, nominal memory, allowlist, balanced layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from hami.devices import catalog, config, errors, geometry, layouts

M = catalog.BY_KEY
SEED = config.load_device_config(
    (Path(__file__).parent / "fixtures" / "seed-device-config.yaml").read_text()
).nvidia


def _dicts(geoms) -> list[dict[str, int]]:
    return [g.as_dict() for g in geoms]


@pytest.mark.parametrize(
    ("key", "seed"),
    [
        ("A30", [{"1g.6gb": 4}, {"2g.12gb": 2}, {"4g.24gb": 1}]),
        ("A100-SXM4-40GB", [{"1g.5gb": 7}, {"1g.5gb": 1, "2g.10gb": 3}, {"3g.20gb": 2}, {"7g.40gb": 1}]),
        ("A100-PCIE-80GB", [{"1g.10gb": 7}, {"1g.10gb": 1, "2g.20gb": 3}, {"3g.40gb": 2}, {"7g.80gb": 1}]),
        ("H200-NVL", [{"1g.18gb": 7}, {"1g.18gb": 1, "2g.35gb": 3}, {"3g.71gb": 2}, {"7g.141gb": 1}]),
        ("RTX-PRO-6000-SERVER", [{"1g.24gb": 4}, {"2g.48gb": 2}, {"4g.96gb": 1}]),
    ],
)
def test_default_starts_with_the_seed_geometries(key, seed):
    geoms = geometry.allowed_geometries(M[key])
    assert _dicts(geoms[: len(seed)]) == seed
    assert all(g.source == geometry.SOURCE_SEED for g in geoms[: len(seed)])
    assert all(g.source == geometry.SOURCE_MAXIMAL for g in geoms[len(seed) :])
    assert _dicts(geometry.seed_geometries(M[key])) == seed


@pytest.mark.parametrize("model", catalog.MIG_MODELS, ids=lambda m: m.key)
def test_default_is_seed_then_every_other_maximal_layout(model):
    spec = model.mig
    geoms = geometry.allowed_geometries(model)
    as_sets = [frozenset(g.counts) for g in geoms]
    assert len(as_sets) == len(set(as_sets)), "no geometry listed twice"
    maximal = {frozenset(c.items()) for c in layouts.maximal_layouts(spec)}
    seeds = {frozenset(g.counts) for g in geometry.seed_geometries(model)}
    assert set(as_sets) == maximal | seeds
    for g in geoms:
        assert layouts.is_valid(spec, g.as_dict())
        order = [p.name for p in spec.profiles]
        assert [n for n, _ in g.counts] == sorted((n for n, _ in g.counts), key=order.index)


def test_maximal_tail_order():
    spec = M["A100-SXM4-80GB"].mig
    tail = [
        g.as_dict() for g in geometry.allowed_geometries(M["A100-SXM4-80GB"]) if g.source == "maximal-default"
    ]
    keys = [
        (-layouts.compute_slices_used(spec, c), -layouts.memory_slices_used(spec, c), sum(c.values()))
        for c in tail
    ]
    assert keys == sorted(keys)
    assert tail[0] == {"3g.40gb": 1, "4g.40gb": 1}  # all compute, all memory, two instances


def test_default_lets_1g_and_3g_share_an_a100_80gb():
    geoms = geometry.allowed_geometries(M["A100-SXM4-80GB"])
    assert not any({"1g.10gb", "3g.40gb"} <= g.as_dict().keys() for g in geoms if g.source == "seed-default")
    mixed = [g for g in geoms if {"1g.10gb", "3g.40gb"} <= g.as_dict().keys()]
    assert mixed and mixed[0].as_dict() == {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}


def test_config_geometries_are_used_as_written_with_aliases_resolved():
    geoms = geometry.allowed_geometries(M["A100-SXM4-80GB"], SEED)
    assert _dicts(geoms) == [{"1g.10gb": 7}, {"1g.10gb": 1, "2g.20gb": 3}, {"3g.40gb": 2}, {"7g.80gb": 1}]
    assert {g.source for g in geoms} == {geometry.SOURCE_CONFIG}
    assert _dicts(geometry.allowed_geometries(M["A30"], SEED)) == [
        {"1g.6gb": 4},
        {"2g.12gb": 2},
        {"4g.24gb": 1},
    ]


def test_models_without_a_config_rule_get_the_default():
    assert geometry.allowed_geometries(M["H100-NVL"], SEED) == geometry.allowed_geometries(M["H100-NVL"])
    empty = config.NvidiaConfig(known_mig_geometries=())
    assert geometry.allowed_geometries(M["A30"], empty) == geometry.default_geometries(M["A30"])


def test_non_mig_models_are_refused():
    for call in (
        geometry.allowed_geometries,
        geometry.nominal_memory,
        geometry.allowlisted_profiles,
        geometry.balanced_layout,
    ):
        with pytest.raises(errors.ConfigError, match="not MIG-capable"):
            call(M["T4"])


def test_nominal_memory_from_config_or_name():
    model = M["A100-SXM4-80GB"]
    assert geometry.nominal_memory(model, SEED)["7g.80gb"] == 80896  # via the 7g.79gb alias
    assert geometry.nominal_memory(model)["7g.80gb"] == 80 * 1024
    assert geometry.nominal_memory(model, SEED)["1g.20gb"] == 20 * 1024  # not in the config
    assert list(geometry.nominal_memory(model)) == [
        "1g.10gb",
        "1g.20gb",
        "2g.20gb",
        "3g.40gb",
        "4g.40gb",
        "7g.80gb",
    ]
    assert "1g.10gb+me" in geometry.nominal_memory(model, include_variants=True)
    assert geometry.nominal_memory(M["A100-SXM4-40GB"], SEED)["1g.5gb"] == 5120


def test_nominal_memory_first_value_wins():
    entry = config.GeometryEntry
    nvidia = config.NvidiaConfig(
        known_mig_geometries=(
            config.MigGeometryRule(
                ("A30",), ((entry("1g.6gb", 6000, 4),), (entry("1g.6gb", 6100, 2), entry("2g.12gb", None, 1)))
            ),
        )
    )
    assert geometry.nominal_memory(M["A30"], nvidia) == {"1g.6gb": 6000, "2g.12gb": 12288, "4g.24gb": 24576}


def test_allowlist_defaults():
    assert geometry.allowlisted_profiles(M["A100-PCIE-80GB"]) == ("1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb")
    assert geometry.allowlisted_profiles(M["H100-NVL"]) == (
        "1g.12gb",
        "2g.24gb",
        "3g.47gb",
        "7g.94gb",
    )  # HAMi #1014
    assert geometry.allowlisted_profiles(M["GH200-96GB"]) == ("1g.12gb", "2g.24gb", "3g.48gb", "7g.96gb")
    assert geometry.allowlisted_profiles(M["RTX-PRO-6000-SERVER"]) == ("1g.24gb", "2g.48gb", "4g.96gb")
    # Not in the chart's list: every base profile instead of HAMi's "no MIG at all".
    base = tuple(p.name for p in M["GB200"].mig.base_profiles)
    assert geometry.allowlisted_profiles(M["GB200"]) == base


def test_allowlist_from_config_resolves_exact_profiles():
    nvidia = config.load_device_config(
        {
            "nvidia": {
                "migProfileAllowlist": [{"models": ["H100-SXM5-80GB"], "profiles": ["7g.80gb", "1g.20gb"]}]
            }
        }
    ).nvidia
    # 1g.20gb is the double-memory profile, not a plain 1g as in HAMi v2.10.
    assert geometry.allowlisted_profiles(M["H100-SXM5-80GB"], nvidia) == ("1g.20gb", "7g.80gb")
    assert geometry.allowlisted_profiles(M["A30"], nvidia) == ("1g.6gb", "2g.12gb", "4g.24gb")


@pytest.mark.parametrize(
    ("key", "balanced"),
    [
        ("A100-SXM4-40GB", {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}),
        ("H100-SXM5-80GB", {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}),
        ("H100-NVL", {"1g.12gb": 2, "2g.24gb": 1, "3g.47gb": 1}),
        ("H20", {"1g.12gb": 2, "2g.24gb": 1, "3g.48gb": 1}),
        ("H200-SXM", {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1}),
        ("GH200-144GB", {"1g.18gb": 2, "2g.36gb": 1, "3g.72gb": 1}),
        ("B200", {"1g.23gb": 2, "2g.45gb": 1, "3g.90gb": 1}),
        ("GB200", {"1g.23gb": 2, "2g.47gb": 1, "3g.93gb": 1}),
        ("A30", {"1g.6gb": 2, "2g.12gb": 1}),
        ("RTX-PRO-6000-SERVER", {"1g.24gb": 2, "2g.48gb": 1}),
    ],
)
def test_balanced_layout_matches_mig_parted(key, balanced):
    result = geometry.balanced_layout(M[key])
    assert result.as_dict() == balanced
    assert result.source == geometry.SOURCE_BALANCED


def test_geometry_value():
    g = geometry.Geometry((("1g.10gb", 2), ("3g.40gb", 1)), "config")
    assert g.as_dict() == {"1g.10gb": 2, "3g.40gb": 1}
    assert g.instances == 3
    assert hash(g) == hash(geometry.Geometry((("1g.10gb", 2), ("3g.40gb", 1)), "config"))
