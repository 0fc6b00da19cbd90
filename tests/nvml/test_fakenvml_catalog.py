"""The simulated GPUs report exactly the catalog's profiles and placements, for every model."""

from __future__ import annotations

import pytest

from hami.devices import MIG_MODELS, NON_MIG_MODELS
from hami.nvml import errors
from hami.sim import fakenvml
from tests.nvml.helpers import make_node, mig, opened


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.key)
def test_profiles_and_placements_equal_the_catalog(model, tmp_path):
    node = make_node(tmp_path, [mig(model.key)])
    with opened(node) as nvml:
        dev = nvml.device_by_index(0)
        assert nvml.name(dev) == model.nvml_name
        assert nvml.memory(dev).total_mib == model.memory_mib
        assert nvml.pci_info(dev).pci_device_id == model.pci_device_id
        assert nvml.architecture(dev) == model.architecture
        assert nvml.cuda_compute_capability(dev) == model.compute_capability
        assert nvml.max_mig_device_count(dev) == model.mig.compute_slices
        reported = nvml.gpu_instance_profiles(dev)
        assert sorted(reported) == sorted(p.nvml_constant for p in model.mig.profiles)
        for p in model.mig.profiles:
            info = reported[p.nvml_constant]
            assert info.profile_name == p.name
            assert (info.id, info.slice_count, info.instance_count) == (p.profile_id, p.compute_slices, p.instance_cap)
            assert (info.memory_mib, info.multiprocessor_count) == (p.memory_mib, p.multiprocessors)
            assert (
                info.copy_engine_count,
                info.decoder_count,
                info.encoder_count,
                info.jpeg_count,
                info.ofa_count,
            ) == (p.copy_engines, p.decoders, p.encoders, p.jpegs, p.ofas)
            placements = nvml.gpu_instance_possible_placements(dev, info.id)
            assert tuple(x.start for x in placements) == p.placements
            assert {x.size for x in placements} == {p.memory_slices}


@pytest.mark.parametrize("model", NON_MIG_MODELS[:3], ids=lambda m: m.key)
def test_non_mig_models_say_not_supported(model, tmp_path):
    node = make_node(tmp_path, [model.key])
    with opened(node) as nvml:
        dev = nvml.device_by_index(0)
        assert nvml.name(dev) == model.nvml_name
        with pytest.raises(errors.NotSupported):
            nvml.mig_mode(dev)
        assert nvml.max_mig_device_count(dev) == 0


def test_gpu_spec_defaults_follow_the_architecture():
    a100 = fakenvml.gpu_from_model("A100-SXM4-80GB", 0)
    h100 = fakenvml.gpu_from_model(fakenvml.GpuSpec("H100-SXM5-80GB", mig=True), 1)
    assert a100.mig_reset_required and not a100.mig_volatile and a100.mig_current == 0
    assert not h100.mig_reset_required and h100.mig_volatile and h100.mig_current == 1
    assert a100.uuid != h100.uuid and a100.uuid.startswith("GPU-")
