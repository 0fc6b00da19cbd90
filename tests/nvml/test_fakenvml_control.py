"""The control interface and the state file: format round trip, reboot and reset semantics,
fault injection, call tracing, and one truth across processes."""

from __future__ import annotations

import multiprocessing

import pytest

from hami.nvml import Placement, errors
from hami.sim import fakenvml
from tests.nvml.helpers import make_node, mig, opened


def test_render_parse_round_trip(nvml, node):
    gi = nvml.create_gpu_instance(nvml.device_by_index(0), 9, Placement(0, 4))
    ci = nvml.create_compute_instance(gi, 2)
    node.attach(nvml.uuid(nvml.compute_instance_info(ci).device), pid=3, used_mib=7)
    node.attach_gpu(2, pid=4)
    node.inject_fault("nvmlDeviceGetCount_v2", errors.Return.TIMEOUT, nth=5)
    text = node.path.read_text()
    assert fakenvml.render(fakenvml.parse(text)) == text


def test_parse_rejects_garbage():
    with pytest.raises(fakenvml.StateFormatError):
        fakenvml.parse("something else\n")
    with pytest.raises(fakenvml.StateFormatError):
        fakenvml.parse("fakenvml-state 1\ngpu\nbogus 1\nend\n")


def test_corrupt_state_is_unknown_error(nvml, node):
    node.path.write_text("fakenvml-state 1\ngpu\nbogus 1\nend\n")
    with pytest.raises(errors.Unknown):
        nvml.device_count()


def test_library_path_error_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setattr(fakenvml, "__file__", str(tmp_path / "fakenvml.py"))
    with pytest.raises(fakenvml.FakeNvmlNotBuilt, match=r"pip install -e \."):
        fakenvml.library_path()


def test_reboot_loses_instances_and_volatile_modes(tmp_path):
    node = make_node(tmp_path, [mig("A100-SXM4-80GB"), mig("H100-SXM5-80GB"), "A30"])
    with opened(node) as nvml:
        for i in (0, 1):
            gi = nvml.create_gpu_instance(nvml.device_by_index(i), 19, Placement(0, 1))
            ci = nvml.create_compute_instance(gi, 0)
            before = nvml.uuid(nvml.compute_instance_info(ci).device)
        assert nvml.set_mig_mode(nvml.device_by_index(2), True).activation == errors.Return.RESET_REQUIRED
        node.attach(before, pid=1)
        node.reboot()
        assert nvml.mig_mode(nvml.device_by_index(0)).current  # Ampere: kept in the InfoROM
        assert not nvml.mig_mode(nvml.device_by_index(1)).current  # Hopper: lost
        assert nvml.mig_mode(nvml.device_by_index(2)).current  # Ampere: the pending mode applied
        assert nvml.gpu_instances(nvml.device_by_index(0), 19) == ()
        assert nvml.compute_running_processes(nvml.device_by_index(0)) == ()
        with pytest.raises(errors.NotFound):
            nvml.device_by_uuid(before)
        node.reload_driver()
        assert node.read().boot == 3


def test_fault_fires_on_the_nth_call_once(nvml, node):
    node.inject_fault("nvmlDeviceGetCount_v2", errors.Return.GPU_IS_LOST, nth=3)
    assert nvml.device_count() == 4
    assert nvml.device_count() == 4
    with pytest.raises(errors.GpuIsLost):
        nvml.device_count()
    assert nvml.device_count() == 4
    assert node.pending_faults() == []


def test_wildcard_fault_counts_every_call(nvml, node):
    node.inject_fault("*", errors.Return.UNKNOWN, nth=2)
    dev = nvml.device_by_index(0)
    with pytest.raises(errors.Unknown) as err:
        nvml.name(dev)
    assert err.value.function == "nvmlDeviceGetName"
    node.inject_fault("nvmlInit_v2", errors.Return.NO_PERMISSION)
    with pytest.raises(errors.NoPermission):
        nvml.init()
    node.inject_fault("nvmlDeviceGetName", 1)
    node.clear_faults()
    assert nvml.name(dev)


def test_trace_counts_calls(nvml, node):
    node.set_trace(True)
    nvml.device_count()
    nvml.name(nvml.device_by_index(0))
    nvml.device_count()
    assert node.calls() == {"nvmlDeviceGetCount_v2": 2, "nvmlDeviceGetHandleByIndex_v2": 1, "nvmlDeviceGetName": 1}


def test_attach_unknown_mig_device(node):
    with pytest.raises(KeyError):
        node.attach("MIG-nope", pid=1)
    with pytest.raises(ValueError):
        node.set_mig_mode(2, True)
    with pytest.raises(ValueError):
        node.inject_fault("x", 1, nth=0)


def _create_ones(state: str, lib: str, starts: list[int]) -> list[tuple[int, int]]:
    """Worker: raw NVML creates of 1g/2g instances; returns (start, gi id) of the ones that worked."""
    import os

    from hami.nvml import Nvml, Placement, errors

    os.environ[fakenvml.STATE_ENV] = state
    made = []
    with Nvml(lib) as nvml:
        dev = nvml.device_by_index(0)
        for start in starts:
            profile, size = (14, 2) if start % 2 == 0 and start < 6 else (19, 1)
            try:
                gi = nvml.create_gpu_instance(dev, profile, Placement(start, size))
            except errors.InsufficientResources:
                continue
            made.append((start, nvml.gpu_instance_info(gi).id))
            if len(made) % 3 == 0:  # give some back, so that the two keep racing for slices
                nvml.destroy_gpu_instance(gi)
                made.pop()
    return made


def test_two_processes_share_one_truth(tmp_path, libpath):
    node = make_node(tmp_path, [mig("H100-SXM5-80GB")])
    ctx = multiprocessing.get_context("spawn")
    plans = [[(i * 5 + k) % 7 for i in range(40)] for k in (0, 3)]
    with ctx.Pool(2) as pool:
        made = pool.starmap(_create_ones, [(str(node.path), libpath, plan) for plan in plans])
    state = node.read().gpus[0]
    masks = [((1 << gi.size) - 1) << gi.start for gi in state.gis]
    assert sum(bin(m).count("1") for m in masks) == bin(sum(masks)).count("1")  # no two overlap
    assert sorted(made[0] + made[1]) == sorted((gi.start, gi.id) for gi in state.gis)  # no lost update


def test_an_instance_held_by_another_client_refuses_destroy_without_a_listed_process(nvml, node):
    """DCGM or a leaked handle: IN_USE on destroy, yet no process on the MIG device."""
    dev = nvml.device_by_index(0)
    gi = nvml.create_gpu_instance(dev, 19, Placement(0, 1))
    ci = nvml.create_compute_instance(gi, 0)
    mig = nvml.compute_instance_info(ci).device
    node.hold(nvml.uuid(mig))
    assert nvml.compute_running_processes(mig) == ()
    with pytest.raises(errors.InUse):
        nvml.destroy_compute_instance(ci)
    text = node.path.read_text()
    assert "hold " in text and fakenvml.render(fakenvml.parse(text)) == text
    node.release(nvml.uuid(mig))
    nvml.destroy_compute_instance(ci)
    node.hold_gpu_instance(0, nvml.gpu_instance_info(gi).id)  # a GI without CI held open
    with pytest.raises(errors.InUse):
        nvml.destroy_gpu_instance(gi)
    node.reset_gpu(0)  # a reset drops every handle, and the instances with them
    assert node.read().gpus[0].holds == [] and node.instances() == []
    with pytest.raises(KeyError, match="no MIG device"):
        node.hold("MIG-nope")


def test_profile_info_version_round_trips(node):
    node.set_profile_info_version(2)
    text = node.path.read_text()
    assert "profile_info_version 2" in text and fakenvml.parse(text).profile_info_version == 2
    assert fakenvml.render(fakenvml.parse(text)) == text
