"""The built-in catalog: every fact is well-formed, tagged, and consistent with reference §A."""

from __future__ import annotations

import pytest

from hami.devices import catalog, naming
from hami.devices.models import Architecture, Provenance

MIG = catalog.MIG_MODELS
PLAIN_8 = {1: (0, 1, 2, 3, 4, 5, 6), 2: (0, 2, 4), 3: (0, 4), 4: (0,), 7: (0,)}
PLAIN_4 = {1: (0, 1, 2, 3), 2: (0, 2), 4: (0,)}
MODEL_FIELDS = {"nvml_name", "pci_device_id", "memory_mib", "architecture", "compute_capability"}


def test_keys_are_unique_and_indexed():
    keys = [m.key for m in catalog.MODELS]
    assert len(keys) == len(set(keys))
    assert catalog.BY_KEY.keys() == set(keys)
    assert catalog.MODELS == catalog.MIG_MODELS + catalog.NON_MIG_MODELS


def test_no_two_models_share_a_spelling():
    seen: dict[str, str] = {}
    for model in catalog.MODELS:
        for spelling in naming.model_names(model):
            other = seen.setdefault(naming.normalize_name(spelling), model.key)
            assert other == model.key, spelling


@pytest.mark.parametrize(
    "key",
    [
        "A30",
        "A100-SXM4-40GB",
        "A100-PCIE-40GB",
        "A100-SXM4-80GB",
        "A100-PCIE-80GB",
        "A800-SXM4-40GB",
        "A800-SXM4-80GB",
        "A800-PCIE-80GB",
        "H100-SXM5-80GB",
        "H100-PCIE-80GB",
        "H100-NVL",
        "H800-SXM5-80GB",
        "H800-PCIE-80GB",
        "H20",
        "GH200-96GB",
        "GH200-144GB",
        "H200-SXM",
        "H200-NVL",
        "B200",
        "GB200",
        "RTX-PRO-6000-SERVER",
        "RTX-PRO-6000-WS",
        "RTX-PRO-6000-MAXQ",
    ],
)
def test_required_mig_models_exist(key):
    assert catalog.BY_KEY[key].mig_capable


@pytest.mark.parametrize(
    "key", ["A10", "T4", "L4", "L40S", "V100-SXM2-16GB", "V100-SXM2-32GB", "V100-PCIE-16GB", "V100-PCIE-32GB"]
)
def test_required_non_mig_models_exist(key):
    model = catalog.BY_KEY[key]
    assert not model.mig_capable
    assert model.memory_mib > 10_000


@pytest.mark.parametrize("model", catalog.MODELS, ids=lambda m: m.key)
def test_model_identity_and_provenance(model):
    assert model.provenance.keys() >= MODEL_FIELDS
    assert all(isinstance(v, Provenance) for v in model.provenance.values())
    assert model.pci_device_id & 0xFFFF == 0x10DE
    assert model.nvml_name.startswith(("NVIDIA ", "Tesla "))
    assert isinstance(model.architecture, Architecture)
    if model.mig_capable:
        assert {"profiles", "placements"} <= model.provenance.keys()
        assert model.architecture >= Architecture.AMPERE  # MIG needs Ampere or later


@pytest.mark.parametrize("model", MIG, ids=lambda m: m.key)
def test_profiles_fit_their_gpu(model):
    spec = model.mig
    names = [p.name for p in spec.profiles]
    assert len(names) == len(set(names))
    ids = [p.profile_id for p in spec.profiles]
    assert len(ids) == len(set(ids)), "NVML profile ids are unique per device"
    for p in spec.profiles:
        assert p.placements, p.name
        assert all(s >= 0 and s + p.memory_slices <= spec.memory_slices for s in p.placements), p.name
        assert 1 <= p.instance_cap <= spec.max_instances
        assert p.instance_cap <= len(p.placements) or p.memory_slices == 1
        assert p.compute_slices <= spec.compute_slices
        assert 0 <= p.nvml_constant < catalog.GI_PROFILE_COUNT
        assert 0 < p.memory_mib < model.memory_mib, p.name
        assert p.multiprocessors > 0
        assert p.nominal_gb > 0
        assert isinstance(p.provenance_of("placements"), Provenance)
    # Memory grows with memory slices: NVML sizes are (close to) proportional.
    per_slice = {p.memory_mib / p.memory_slices for p in spec.base_profiles}
    assert max(per_slice) / min(per_slice) < 1.1


@pytest.mark.parametrize("model", MIG, ids=lambda m: m.key)
def test_placement_tables_follow_reference_a5(model):
    spec = model.mig
    table = PLAIN_8 if spec.memory_slices == 8 else PLAIN_4
    for p in spec.profiles:
        if p.compute_slices == 1 and p.memory_slices == 2:  # the double-memory 1g
            assert p.placements == (0, 2, 4, 6)
            assert p.nvml_constant == catalog.GI_1_SLICE_REV2
        else:
            assert p.placements == table[p.compute_slices], p.name


@pytest.mark.parametrize(
    ("key", "double"),
    [
        ("A100-SXM4-40GB", "1g.10gb"),
        ("A100-PCIE-80GB", "1g.20gb"),
        ("H100-SXM5-80GB", "1g.20gb"),
        ("H100-NVL", "1g.24gb"),
        ("H20", "1g.24gb"),
        ("H200-NVL", "1g.35gb"),
        ("GH200-144GB", "1g.36gb"),
        ("B200", "1g.45gb"),
        ("GB200", "1g.47gb"),
    ],
)
def test_double_memory_1g_profile(key, double):
    profile = catalog.BY_KEY[key].mig.profile(double)
    assert (profile.compute_slices, profile.memory_slices, profile.instance_cap) == (1, 2, 4)


@pytest.mark.parametrize("model", [m for m in MIG if m.mig.memory_slices == 8], ids=lambda m: m.key)
def test_eight_slice_family_has_the_seven_rows(model):
    spec = model.mig
    shapes = sorted((p.compute_slices, p.memory_slices, p.instance_cap, p.profile_id) for p in spec.profiles)
    assert shapes == [
        (1, 1, 1, 20),
        (1, 1, 7, 19),
        (1, 2, 4, 15),
        (2, 2, 3, 14),
        (3, 4, 2, 9),
        (4, 4, 1, 5),
        (7, 8, 1, 0),
    ]
    me = [p for p in spec.profiles if p.attributes == ("+me",)]
    assert len(me) == 1 and me[0].nvml_constant == catalog.GI_1_SLICE_REV1


def test_a30_rows_match_reference():
    spec = catalog.BY_KEY["A30"].mig
    rows = {p.name: (p.profile_id, p.compute_slices, p.memory_slices, p.instance_cap) for p in spec.profiles}
    assert rows == {
        "1g.6gb": (14, 1, 1, 4),
        "1g.6gb+me": (21, 1, 1, 1),
        "2g.12gb": (5, 2, 2, 2),
        "2g.12gb+me": (6, 2, 2, 1),
        "4g.24gb": (0, 4, 4, 1),
    }


def test_rtx_pro_6000_variants_and_inferred_ids():
    spec = catalog.BY_KEY["RTX-PRO-6000-SERVER"].mig
    names = {p.name for p in spec.profiles}
    assert {
        "1g.24gb+gfx",
        "1g.24gb-me",
        "1g.24gb+me.all",
        "2g.48gb+gfx",
        "2g.48gb-me",
        "4g.96gb+gfx",
    } <= names
    assert [p.name for p in spec.base_profiles] == ["1g.24gb", "2g.48gb", "4g.96gb"]
    assert spec.profile("1g.24gb").provenance_of("profile_id") is not Provenance.INFERRED
    assert spec.profile("2g.48gb").provenance_of("profile_id") is Provenance.INFERRED
    assert spec.profile("2g.48gb").nvml_constant == catalog.GI_2_SLICE


def test_observed_values_are_tagged_observed_and_guesses_inferred():
    a100 = catalog.BY_KEY["A100-SXM4-40GB"]
    assert a100.provenance["memory_mib"] is Provenance.OBSERVED
    assert a100.mig.profile("7g.40gb").memory_mib == 40192
    b200 = catalog.BY_KEY["B200"].mig
    assert b200.profile("3g.90gb").provenance_of("memory_mib") is Provenance.INFERRED
    assert b200.profile("1g.23gb").provenance_of("memory_mib") is Provenance.OBSERVED
    assert catalog.BY_KEY["H200-SXM"].provenance["placements"] is Provenance.INFERRED
    assert catalog.BY_KEY["A800-SXM4-80GB"].provenance["profiles"] is Provenance.INFERRED


def test_memory_fraction_names():
    """The GB in each name is the profile's fraction of the card (reference §A.7), within a GB."""
    for model in MIG:
        spec = model.mig
        full = max(p.nominal_gb for p in spec.base_profiles)
        for p in spec.base_profiles:
            expected = full * p.memory_slices / spec.memory_slices
            assert abs(p.nominal_gb - expected) <= 1.0 + 0.02 * full, (model.key, p.name)


def test_package_facade_exports_what_it_lists():
    import hami.devices as devices

    assert len(devices.__all__) == len(set(devices.__all__))
    for name in devices.__all__:
        assert hasattr(devices, name), name
    assert devices.MODELS is catalog.MODELS
