"""Names → models (NVML, HAMi type, config spellings) and names → profiles (aliases)."""

from __future__ import annotations

import pytest

from hami.devices import catalog, errors, naming

M = catalog.BY_KEY


@pytest.mark.parametrize(
    ("name", "key"),
    [
        # NVML names, with and without the NVIDIA prefix (older drivers), any case
        ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB"),
        ("A100-SXM4-40GB", "A100-SXM4-40GB"),
        ("nvidia a100-sxm4-40gb", "A100-SXM4-40GB"),
        ("NVIDIA A100 80GB PCIe", "A100-PCIE-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-SXM5-80GB"),
        ("NVIDIA H100 PCIe", "H100-PCIE-80GB"),
        ("NVIDIA H100 NVL", "H100-NVL"),
        ("NVIDIA H200", "H200-SXM"),
        ("NVIDIA H200 NVL", "H200-NVL"),
        ("NVIDIA GH200 480GB", "GH200-96GB"),
        ("NVIDIA GH200 120GB", "GH200-96GB"),
        ("NVIDIA GH200 144G HBM3e", "GH200-144GB"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA GB200", "GB200"),
        ("NVIDIA H20", "H20"),
        ("NVIDIA H800", "H800-SXM5-80GB"),
        ("NVIDIA A800-SXM4-80GB", "A800-SXM4-80GB"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX-PRO-6000-SERVER"),
        ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", "RTX-PRO-6000-MAXQ"),
        ("Tesla T4", "T4"),
        ("Tesla V100-SXM2-16GB", "V100-SXM2-16GB"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA A10", "A10"),
        # HAMi's registered `type` forms
        ("NVIDIA-NVIDIA H100 NVL", "H100-NVL"),
        ("NVIDIA-A100-SXM4-40GB", "A100-SXM4-40GB"),
        ("NVIDIA-Tesla T4", "T4"),
        # strings users write in config
        ("A100-40GB-PCIe", "A100-PCIE-40GB"),
        ("A100-PCIE-40GB", "A100-PCIE-40GB"),
        ("A100-80GB-PCIe", "A100-PCIE-80GB"),
        ("A100-PCIE-80GB", "A100-PCIE-80GB"),
        ("A100-SXM4-80GB", "A100-SXM4-80GB"),
        ("H100-SXM5-80GB", "H100-SXM5-80GB"),
        ("H100-PCIE-80GB", "H100-PCIE-80GB"),
        ("H100-SXM5-94GB", "H100-NVL"),
        ("H200-SXM5", "H200-SXM"),
        ("H200 NVL", "H200-NVL"),
        ("h200_nvl", "H200-NVL"),
        ("A30", "A30"),
        ("B200", "B200"),
        ("T4", "T4"),
        ("RTX PRO 6000 Blackwell Server Edition", "RTX-PRO-6000-SERVER"),
        ("  RTX-PRO-6000-server  ", "RTX-PRO-6000-SERVER"),
        # a MIG device's name resolves to its parent model
        ("NVIDIA H200 MIG 1g.18gb", "H200-SXM"),
    ],
)
def test_find_model(name, key):
    assert naming.find_model(name).key == key


@pytest.mark.parametrize("model", catalog.MODELS, ids=lambda m: m.key)
def test_every_spelling_finds_its_model(model):
    for spelling in (*naming.model_names(model), "NVIDIA-" + model.nvml_name, model.nvml_name.upper()):
        assert naming.find_model(spelling) is model


def test_unknown_model_lists_close_matches_and_how_to_add():
    with pytest.raises(errors.UnknownModelError) as info:
        naming.find_model("NVIDIA H100 SXM 80GB")
    message = str(info.value)
    assert "NVIDIA H100 80GB HBM3" in message
    assert "catalog.py" in message and "lgip" in message
    assert info.value.suggestions and info.value.name == "NVIDIA H100 SXM 80GB"
    assert isinstance(info.value, LookupError)


def test_unknown_model_without_close_matches():
    with pytest.raises(errors.UnknownModelError) as info:
        naming.find_model("Radeon Instinct MI300X")
    assert "catalog.py" in str(info.value)


def test_find_model_with_a_custom_catalog():
    only = (M["A30"],)
    assert naming.find_model("A30", only) is M["A30"]
    with pytest.raises(errors.UnknownModelError):
        naming.find_model("B200", only)


@pytest.mark.parametrize(
    ("text", "key", "selected"),
    [
        ("A100-SXM4-80GB", "A100-SXM4-80GB", True),
        ("A100-SXM4-80GB", "A100-PCIE-80GB", False),
        ("A100-80GB-PCIe", "A100-PCIE-80GB", True),
        # exact names select only their model: H20 is not a prefix match of H200
        ("H20", "H20", True),
        ("H20", "H200-SXM", False),
        ("H20", "H200-NVL", False),
        ("H200", "H200-SXM", True),
        ("H200", "H200-NVL", False),
        # otherwise HAMi's case-insensitive substring rule
        ("A100", "A100-SXM4-40GB", True),
        ("a100", "A100-PCIE-80GB", True),
        ("A100", "A800-SXM4-80GB", False),
        ("H200", "H200-NVL", False),
        ("80GB", "H100-SXM5-80GB", True),
        ("NVIDIA-NVIDIA H100", "H100-NVL", True),
        ("NVL", "H100-NVL", True),
        ("NVL", "H100-SXM5-80GB", False),
        ("RTX PRO 6000", "RTX-PRO-6000-WS", True),
        ("", "A30", False),
        ("   ", "A30", False),
    ],
)
def test_model_matches(text, key, selected):
    assert naming.model_matches(text, M[key]) is selected


def test_selected_models_in_catalog_order():
    keys = [m.key for m in naming.selected_models(["A100"])]
    assert keys == ["A100-SXM4-40GB", "A100-PCIE-40GB", "A100-SXM4-80GB", "A100-PCIE-80GB"]
    assert naming.selected_models(["no-such-gpu"]) == ()


@pytest.mark.parametrize(
    ("key", "name", "canonical", "alias"),
    [
        ("A100-SXM4-80GB", "7g.80gb", "7g.80gb", False),
        ("A100-SXM4-80GB", "7g.79gb", "7g.80gb", True),  # HAMi's default name
        ("A100-SXM4-80GB", "3g.39gb", "3g.40gb", True),  # driver 535/545 naming
        ("A100-SXM4-80GB", "1g.10gb", "1g.10gb", False),
        ("A100-SXM4-80GB", "1g.20gb", "1g.20gb", False),  # the double-memory 1g, not a plain one
        ("A100-SXM4-80GB", "1G.10GB", "1g.10gb", False),
        ("GB200", "1g.24gb", "1g.23gb", True),  # HGX GB200 boards
        ("GB200", "7g.189gb", "7g.186gb", True),
        ("A100-SXM4-40GB", "1g.5gb+me", "1g.5gb+me", False),
        ("A100-SXM4-40GB", "1g.6gb", "1g.5gb", True),
    ],
)
def test_resolve_profile(key, name, canonical, alias):
    profile, was_alias = naming.resolve_profile(M[key], name)
    assert (profile.name, was_alias) == (canonical, alias)


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("A100-SXM4-80GB", "2g.30gb"),  # too far from 2g.20gb
        ("A100-SXM4-80GB", "5g.50gb"),  # no 5g profile
        ("A100-SXM4-80GB", "1g.10gb+gfx"),  # attributes must match
        ("A100-SXM4-80GB", "1g-10gb"),  # malformed
        ("A30", "3g.18gb"),
        ("T4", "1g.4gb"),  # no MIG at all
    ],
)
def test_resolve_profile_rejects(key, name):
    with pytest.raises(errors.UnknownProfileError) as info:
        naming.resolve_profile(M[key], name)
    assert name in str(info.value) or "malformed" in str(info.value)


def test_resolve_profile_error_lists_the_models_profiles():
    with pytest.raises(errors.UnknownProfileError) as info:
        naming.resolve_profile(M["A30"], "2g.20gb")
    assert "1g.6gb, 1g.6gb+me, 2g.12gb" in str(info.value)


def test_parse_profile_name():
    assert naming.parse_profile_name("1g.24gb+me.all") == (1, 24, ("+me.all",))
    assert naming.parse_profile_name("2g.48gb-me") == (2, 48, ("-me",))
    with pytest.raises(ValueError, match="malformed"):
        naming.parse_profile_name("1g.5")


@pytest.mark.parametrize(("gb", "tolerance"), [(5, 1), (10, 1), (40, 2), (80, 4), (186, 9)])
def test_alias_tolerance(gb, tolerance):
    assert naming.alias_tolerance_gb(gb) == tolerance
