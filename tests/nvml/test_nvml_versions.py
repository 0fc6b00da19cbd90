"""Versioned structs and versioned symbols: what the binding does on a driver older than the
header it was written against (issue 11, "versioned calls").

NVML's header documents INVALID_ARGUMENT (not ARGUMENT_VERSION_MISMATCH) for a struct version it
does not know in the three profile-info `V` calls; a driver with those calls but without the v3
structs must still answer with v2. A symbol the library does not export falls back to the older
one with the same meaning (as go-nvml's versioned-symbol table does).

Node (conftest): GPU 0 A100-SXM4-40GB MIG on, 1 H100 MIG off, 2 T4, 3 A30 MIG on.
"""

from __future__ import annotations

import ctypes

import pytest

from hami.mig import MigManager
from hami.nvml import Nvml, Placement, errors, structs
from tests.nvml.helpers import hiding

GI_3G, GI_1G = 9, 19
CI_1SLICE, CI_3SLICE = 0, 2


# -- the simulated driver answers as the header documents ------------------------------------------


@pytest.mark.parametrize("symbol", ["nvmlDeviceGetGpuInstanceProfileInfoV", "nvmlDeviceGetGpuInstanceProfileInfoByIdV"])
def test_unknown_gi_profile_struct_version_is_invalid_argument(nvml, libpath, symbol):
    lib = ctypes.CDLL(libpath)
    info = structs.GpuInstanceProfileInfoV3()
    info.version = 0x07000098  # a version this driver does not know
    key = 2 if symbol.endswith("InfoV") else GI_3G
    dev = ctypes.c_void_p(nvml.device_by_index(0).handle)
    assert getattr(lib, symbol)(dev, key, ctypes.byref(info)) == errors.Return.INVALID_ARGUMENT


def test_unknown_ci_profile_struct_version_is_invalid_argument(nvml, libpath):
    gi = nvml.create_gpu_instance(nvml.device_by_index(0), GI_3G, Placement(0, 4))
    info = structs.ComputeInstanceProfileInfoV3()
    info.version = 0x0700008C
    lib = ctypes.CDLL(libpath)
    rc = lib.nvmlGpuInstanceGetComputeInstanceProfileInfoV(ctypes.c_void_p(gi.handle), CI_3SLICE, 0, ctypes.byref(info))
    assert rc == errors.Return.INVALID_ARGUMENT


def test_a_driver_without_v3_structs_refuses_them(nvml, node):
    node.set_profile_info_version(2)
    dev = nvml.device_by_index(0)
    with pytest.raises(errors.InvalidArgument):
        nvml.gpu_instance_profile_info(dev, 2, version=3)
    assert nvml.gpu_instance_profile_info(dev, 2, version=2).id == GI_3G
    with pytest.raises(ValueError, match="2 or 3"):
        node.set_profile_info_version(1)


# -- struct fallback: v3 → v2 on either code ---------------------------------------------------------


def test_profile_info_falls_back_to_v2_on_a_driver_without_v3(nvml, node):
    node.set_profile_info_version(2)
    dev = nvml.device_by_index(0)
    info = nvml.gpu_instance_profile_info(dev, 2)
    assert (info.version, info.id, info.profile_name) == (2, GI_3G, "3g.20gb")
    assert nvml.gpu_instance_profile_info_by_id(dev, GI_3G).version == 2
    gi = nvml.create_gpu_instance(dev, GI_3G, Placement(4, 4))
    ci = nvml.compute_instance_profile_info(gi, CI_3SLICE)
    assert (ci.version, ci.slice_count, ci.name) == (2, 3, "MIG 3g.20gb")


def test_a_real_invalid_argument_is_still_raised(nvml, node):
    node.set_profile_info_version(2)
    with pytest.raises(errors.InvalidArgument):  # past the enumeration bound: no version fixes that
        nvml.gpu_instance_profile_info(nvml.device_by_index(0), structs.GPU_INSTANCE_PROFILE_COUNT)


def test_mig_manager_sees_instances_on_a_driver_without_v3(nvml, node):
    node.set_profile_info_version(2)
    a100 = nvml.device_by_index(0)
    gi = nvml.create_gpu_instance(a100, GI_3G, Placement(4, 4))
    nvml.create_compute_instance(gi, CI_3SLICE)
    manager = MigManager(nvml)
    (inst,) = manager.instances()
    assert (inst.profile, inst.placement) == ("3g.20gb", 4)
    assert manager.ensure(inst.gpu_uuid, "1g.5gb", 0).placement == 0


# -- symbol fallback: older symbols when the newer one is missing ------------------------------------


def test_init_count_and_handles_fall_back_to_unversioned_symbols(node, libpath):
    old = hiding("nvmlInit_v2", "nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex_v2")
    with Nvml(libpath, loader=old) as nvml:
        assert nvml.device_count() == 4
        assert nvml.uuid(nvml.device_by_index(3)) == node.read().gpus[3].uuid


def test_profile_info_without_the_v_calls_uses_the_v1_struct(node, libpath):
    old = hiding("nvmlDeviceGetGpuInstanceProfileInfoV", "nvmlDeviceGetGpuInstanceProfileInfoByIdV",
                 "nvmlGpuInstanceGetComputeInstanceProfileInfoV")  # fmt: skip
    with Nvml(libpath, loader=old) as nvml:
        dev = nvml.device_by_index(0)
        info = nvml.gpu_instance_profile_info(dev, 2)
        assert (info.version, info.id, info.slice_count, info.name) == (1, GI_3G, 3, "")
        assert nvml.gpu_instance_profile_info_by_id(dev, GI_3G) == info  # found by walking the constants
        with pytest.raises(errors.InvalidArgument):
            nvml.gpu_instance_profile_info_by_id(dev, 77)
        gi = nvml.create_gpu_instance(dev, GI_3G, Placement(0, 4))
        assert nvml.compute_instance_profile_info(gi, CI_1SLICE).version == 1
        with pytest.raises(errors.FunctionNotFound, match="nvmlDeviceGetGpuInstanceProfileInfoV"):
            nvml.gpu_instance_profile_info(dev, 2, version=3)  # an explicit version is not substituted


def test_compute_instance_info_v1_still_yields_the_mig_device(nvml, node, libpath):
    with Nvml(libpath, loader=hiding("nvmlComputeInstanceGetInfo_v2")) as old:
        dev = old.device_by_index(0)
        gi = old.create_gpu_instance(dev, GI_1G, Placement(3, 1))
        ci = old.create_compute_instance(gi, CI_1SLICE)
        info = old.compute_instance_info(ci)
        assert old.is_mig_device(info.device) and old.uuid(info.device).startswith("MIG-")
        assert (info.id, info.gpu_instance, old.parent_device(info.device)) == (0, gi, dev)
        assert old.uuid(info.device) == node.read().gpus[0].gis[0].cis[0].uuid


@pytest.mark.parametrize(
    ("hidden", "ids"),
    [
        (("nvmlDeviceGetComputeRunningProcesses_v3",), True),
        (("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"), False),
    ],
)
def test_running_processes_fall_back(nvml, node, libpath, hidden, ids):
    gi = nvml.create_gpu_instance(nvml.device_by_index(0), GI_1G, Placement(2, 1))
    mig = nvml.compute_instance_info(nvml.create_compute_instance(gi, CI_1SLICE)).device
    node.attach(nvml.uuid(mig), pid=42, used_mib=100)
    with Nvml(libpath, loader=hiding(*hidden)) as old:
        (proc,) = old.compute_running_processes(mig)
    assert (proc.pid, proc.used_memory_bytes) == (42, 100 * 2**20)
    # the v1 struct carries no instance ids
    assert (proc.gpu_instance_id, proc.compute_instance_id) == ((9, 0) if ids else (None, None))


def test_possible_placements_fall_back_to_v1(node, libpath):
    with Nvml(libpath, loader=hiding("nvmlDeviceGetGpuInstancePossiblePlacements_v2")) as nvml:
        assert nvml.gpu_instance_possible_placements(nvml.device_by_index(0), GI_3G) == (
            Placement(0, 4), Placement(4, 4),
        )  # fmt: skip


def test_mig_manager_works_on_a_driver_with_only_the_oldest_symbols(node, libpath):
    old = hiding(
        "nvmlDeviceGetGpuInstanceProfileInfoV", "nvmlDeviceGetGpuInstanceProfileInfoByIdV",
        "nvmlGpuInstanceGetComputeInstanceProfileInfoV", "nvmlComputeInstanceGetInfo_v2",
        "nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2",
        "nvmlDeviceGetGpuInstancePossiblePlacements_v2",
    )  # fmt: skip
    with Nvml(libpath, loader=old) as nvml:
        manager = MigManager(nvml)
        a100 = manager.gpu_uuids()[0]
        inst = manager.ensure(a100, "3g.20gb", 4)
        assert inst.profile == "3g.20gb" and inst.mig_uuid.startswith("MIG-")
        node.attach(inst.mig_uuid, pid=5)
        assert MigManager(nvml).discover().instances == (inst,)
        assert manager.reconcile([]).kept_in_use == (inst,)


def test_a_missing_placement_call_says_which_driver_is_needed(node, libpath):
    loader = hiding("nvmlDeviceCreateGpuInstanceWithPlacement")
    with Nvml(libpath, loader=loader) as nvml, pytest.raises(errors.FunctionNotFound, match=r"R470"):
        nvml.create_gpu_instance(nvml.device_by_index(0), GI_1G, Placement(0, 1))


def test_missing_symbol_message_does_not_recurse_when_the_driver_version_is_missing_too(node, libpath):
    loader = hiding("nvmlSystemGetDriverVersion", "nvmlDeviceGetMaxMigDeviceCount")
    with Nvml(libpath, loader=loader) as nvml:
        with pytest.raises(errors.FunctionNotFound, match=r"driver unknown") as err:
            nvml.max_mig_device_count(nvml.device_by_index(0))
        assert err.value.function == "nvmlDeviceGetMaxMigDeviceCount"
        with pytest.raises(errors.FunctionNotFound, match="nvmlSystemGetDriverVersion"):
            nvml.driver_version()
