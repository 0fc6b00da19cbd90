"""Every function of the binding against the simulated library, with its error paths.

Node (conftest): GPU 0 A100-SXM4-40GB MIG on (Ampere), 1 H100 MIG off (Hopper), 2 T4 (no MIG),
3 A30 MIG on. A100 ids: 1g.5gb 19, 1g.5gb+me 20, 1g.10gb 15, 2g.10gb 14, 3g.20gb 9, 4g.20gb 5,
7g.40gb 0.
"""

from __future__ import annotations

import ctypes
import pickle

import pytest

from hami.nvml import Nvml, Placement, errors, structs
from hami.nvml.library import LIBRARY_ENV
from hami.sim import fakenvml

GI_3G, GI_1G, GI_1G_ME, GI_2G, GI_7G, GI_1G_DOUBLE = 9, 19, 20, 14, 0, 15
CI_FULL_3G = 2  # NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE


def make_instance(nvml, dev, profile_id=GI_3G, start=0, size=4, ci_profile=CI_FULL_3G):
    gi = nvml.create_gpu_instance(dev, profile_id, Placement(start, size))
    ci = nvml.create_compute_instance(gi, ci_profile)
    return gi, ci, nvml.compute_instance_info(ci)


# -- loading, init, errors ---------------------------------------------------------------------


def test_versions_words_match_nvml():
    assert structs.VERSION_GPU_INSTANCE_PROFILE_INFO_V2 == 0x02000098
    assert structs.VERSION_GPU_INSTANCE_PROFILE_INFO_V3 == 0x03000098
    assert structs.VERSION_COMPUTE_INSTANCE_PROFILE_INFO_V2 == 0x02000088
    assert structs.VERSION_COMPUTE_INSTANCE_PROFILE_INFO_V3 == 0x0300008C
    assert structs.VERSION_MEMORY_V2 == 0x02000028
    assert ctypes.sizeof(structs.GpuInstanceInfo) == 24
    assert ctypes.sizeof(structs.ComputeInstanceInfo) == 32
    assert ctypes.sizeof(structs.PciInfo) == 68
    assert ctypes.sizeof(structs.ProcessInfo) == 24
    assert structs.GpuInstanceProfileInfoV3.capabilities.offset == 144
    assert structs.GpuInstanceProfileInfoV2.memorySizeMB.offset == 48


def test_library_path_from_environment(libpath):
    assert Nvml.from_environment({}).path == "libnvidia-ml.so.1"
    assert Nvml.from_environment({LIBRARY_ENV: libpath}).path == libpath


def test_missing_library_raises_library_not_found(tmp_path):
    with pytest.raises(errors.LibraryNotFound, match="HAMI_NVML_LIBRARY"):
        Nvml(tmp_path / "nope.so").init()


def test_init_without_state_is_driver_not_loaded(libpath, monkeypatch, tmp_path):
    monkeypatch.delenv(fakenvml.STATE_ENV, raising=False)
    with pytest.raises(errors.DriverNotLoaded):
        Nvml(libpath).init()
    monkeypatch.setenv(fakenvml.STATE_ENV, str(tmp_path / "missing.state"))
    with pytest.raises(errors.DriverNotLoaded) as info:
        Nvml(libpath).init()
    assert info.value.nvml_message == "Driver Not Loaded" and info.value.function == "nvmlInit_v2"


def test_calls_before_init_are_uninitialized(node, libpath):
    nvml = Nvml(libpath)
    with pytest.raises(errors.Uninitialized):
        nvml.device_count()
    nvml.shutdown()  # an extra shutdown is not an error


def test_init_with_flags_and_refcount(node, libpath):
    a, b = Nvml(libpath), Nvml(libpath)
    a.init(flags=1)
    b.init()
    b.shutdown()
    assert a.device_count() == 4  # still initialised: NVML counts references
    a.shutdown()
    with pytest.raises(errors.Uninitialized):
        a.device_count()


def test_error_strings_are_nvmls_own(nvml):
    assert nvml.error_string(errors.Return.IN_USE) == "In use by another client"
    assert nvml.error_string(errors.Return.INSUFFICIENT_RESOURCES) == "Insufficient Resources"
    assert nvml.error_string(0) == "Success"


def test_error_classes():
    err = errors.from_code(23, "Insufficient Resources", function="f")
    assert isinstance(err, errors.InsufficientResources) and err.code == 23
    assert str(err) == "f: Insufficient Resources (NVML_ERROR_INSUFFICIENT_RESOURCES = 23)"
    assert {err} and pickle.loads(pickle.dumps(err)).code == 23  # hashable and picklable
    odd = errors.from_code(77)
    assert type(odd) is errors.NvmlError and odd.code == 77 and "77" in str(odd)
    assert all(cls.code == code for code, cls in errors.BY_CODE.items())
    assert set(errors.BY_CODE) == {r.value for r in errors.Return} - {0}


def test_missing_symbol_names_the_driver(node, libpath):
    class Hiding:
        def __init__(self, path):
            self._lib = ctypes.CDLL(path)

        def __getattr__(self, name):
            if name == "nvmlDeviceGetMaxMigDeviceCount":
                raise AttributeError(name)
            return getattr(self._lib, name)

    with Nvml(libpath, loader=Hiding) as nvml, pytest.raises(errors.FunctionNotFound, match=r"driver 580\.65\.06"):
        nvml.max_mig_device_count(nvml.device_by_index(0))


# -- enumeration and identity --------------------------------------------------------------------


def test_enumeration_and_identity(nvml, node):
    state = node.read()
    assert nvml.driver_version() == "580.65.06"
    assert nvml.device_count() == 4
    for i, gpu in enumerate(state.gpus):
        dev = nvml.device_by_index(i)
        assert nvml.name(dev) == gpu.name
        assert nvml.uuid(dev) == gpu.uuid
        assert nvml.device_by_uuid(gpu.uuid) == dev
        assert nvml.architecture(dev) == gpu.arch
        assert nvml.cuda_compute_capability(dev) == gpu.cc
        pci = nvml.pci_info(dev)
        assert pci.pci_device_id == gpu.pci_device_id and pci.bus == gpu.pci_bus
        assert pci.bus_id == f"00000000:{gpu.pci_bus:02X}:00.0"
        assert not nvml.is_mig_device(dev)
    assert nvml.name(nvml.device_by_index(0)) == "NVIDIA A100-SXM4-40GB"
    assert nvml.architecture(nvml.device_by_index(1)) == 9
    with pytest.raises(errors.InvalidArgument):
        nvml.device_by_index(4)
    with pytest.raises(errors.NotFound):
        nvml.device_by_uuid("GPU-00000000-0000-0000-0000-000000000000")


def test_memory_of_gpu_and_mig_device(nvml, node):
    dev = nvml.device_by_index(0)
    mem = nvml.memory(dev)
    assert mem.total_mib == 40537 and mem.used_bytes == 0 and mem.free_bytes == mem.total_bytes
    _, _, info = make_instance(nvml, dev)
    node.attach(nvml.uuid(info.device), pid=42, used_mib=1000)
    mig_mem = nvml.memory(info.device, version=2)
    assert mig_mem.total_bytes == 19968 * 2**20 and mig_mem.used_bytes == 1000 * 2**20
    assert mig_mem.reserved_bytes == 0
    assert nvml.memory(dev).used_bytes == 1000 * 2**20


def test_memory_v2_rejects_a_wrong_version_word(nvml):
    lib = ctypes.CDLL(nvml.path)
    m = structs.MemoryV2()
    m.version = 0x01000028
    dev = ctypes.c_void_p(nvml.device_by_index(0).handle)
    assert lib.nvmlDeviceGetMemoryInfo_v2(dev, ctypes.byref(m)) == errors.Return.ARGUMENT_VERSION_MISMATCH


def test_name_and_uuid_buffers_too_small(nvml):
    lib = ctypes.CDLL(nvml.path)
    dev = ctypes.c_void_p(nvml.device_by_index(0).handle)
    buf = ctypes.create_string_buffer(8)
    assert lib.nvmlDeviceGetName(dev, buf, 8) == errors.Return.INSUFFICIENT_SIZE
    assert lib.nvmlDeviceGetUUID(dev, buf, 8) == errors.Return.INSUFFICIENT_SIZE


def test_running_processes(nvml, node):
    dev = nvml.device_by_index(0)
    assert nvml.compute_running_processes(dev) == ()
    _, _, info = make_instance(nvml, dev)
    mig_uuid = nvml.uuid(info.device)
    for pid in range(100, 120):  # more than the first probe's guess
        node.attach(mig_uuid, pid=pid, used_mib=10)
    procs = nvml.compute_running_processes(info.device)
    assert [p.pid for p in procs] == list(range(100, 120))
    assert {(p.gpu_instance_id, p.compute_instance_id) for p in procs} == {(info_gi(nvml, info), info.id)}
    assert procs[0].used_memory_bytes == 10 * 2**20
    t4 = nvml.device_by_index(2)
    node.attach_gpu(2, pid=7, used_mib=5)
    (proc,) = nvml.compute_running_processes(t4)
    assert proc.pid == 7 and proc.gpu_instance_id is None and proc.compute_instance_id is None


def info_gi(nvml, ci_info):
    return nvml.gpu_instance_info(ci_info.gpu_instance).id


# -- MIG mode --------------------------------------------------------------------------------------


def test_mig_mode_get(nvml):
    mode = nvml.mig_mode(nvml.device_by_index(0))
    assert mode.current and mode.pending and nvml.mig_mode(nvml.device_by_index(3)) == mode
    assert not nvml.mig_mode(nvml.device_by_index(1)).current
    with pytest.raises(errors.NotSupported):
        nvml.mig_mode(nvml.device_by_index(2))


def test_hopper_mode_change_is_immediate(nvml, node):
    h100 = nvml.device_by_index(1)
    change = nvml.set_mig_mode(h100, True)
    assert change.activated and change.mode.current and change.mode.pending
    assert nvml.set_mig_mode(h100, False).mode.current is False


def test_ampere_mode_change_pends_until_reset(nvml, node):
    a30 = nvml.device_by_index(3)
    change = nvml.set_mig_mode(a30, False)
    assert change.activation == errors.Return.RESET_REQUIRED and not change.activated
    assert change.activation_message == "GPU requires restart"
    assert change.mode.current and not change.mode.pending
    node.reset_gpu(3)
    assert not nvml.mig_mode(a30).current


def test_mode_change_refused_while_in_use(nvml, node):
    h100 = nvml.device_by_index(1)
    node.attach_gpu(1, pid=9)
    change = nvml.set_mig_mode(h100, True)  # the call succeeds, the activation does not
    assert change.activation == errors.Return.IN_USE and not change.mode.current and change.mode.pending
    a100 = nvml.device_by_index(0)
    make_instance(nvml, a100)
    refused = nvml.set_mig_mode(a100, False)
    assert refused.activation == errors.Return.IN_USE and refused.mode.current and refused.mode.pending


def test_set_mig_mode_on_non_mig_gpu(nvml):
    with pytest.raises(errors.NotSupported):
        nvml.set_mig_mode(nvml.device_by_index(2), True)


# -- GPU-instance profiles and placements ----------------------------------------------------------------


def test_profile_info_versions(nvml):
    dev = nvml.device_by_index(0)
    v3 = nvml.gpu_instance_profile_info(dev, 2)  # NVML_GPU_INSTANCE_PROFILE_3_SLICE
    assert v3.version == 3 and v3.id == GI_3G and v3.name == "MIG 3g.20gb" and v3.profile_name == "3g.20gb"
    assert (v3.slice_count, v3.instance_count, v3.memory_mib, v3.multiprocessor_count) == (3, 2, 19968, 42)
    assert v3.capabilities == 0 and v3.p2p_supported is None
    v2 = nvml.gpu_instance_profile_info(dev, 2, version=2)
    assert v2.version == 2 and v2.p2p_supported is False and v2.capabilities is None and v2.id == GI_3G
    v1 = nvml.gpu_instance_profile_info(dev, 2, version=1)
    assert v1.version == 1 and v1.name == "" and v1.memory_mib == 19968
    assert nvml.gpu_instance_profile_info_by_id(dev, GI_3G) == v3
    with pytest.raises(ValueError):
        nvml.gpu_instance_profile_info_by_id(dev, GI_3G, version=1)


def test_profile_info_falls_back_to_v2(nvml, node):
    node.inject_fault("nvmlDeviceGetGpuInstanceProfileInfoV", errors.Return.ARGUMENT_VERSION_MISMATCH)
    assert nvml.gpu_instance_profile_info(nvml.device_by_index(0), 0).version == 2


def test_profile_info_errors(nvml):
    a100 = nvml.device_by_index(0)
    with pytest.raises(errors.InvalidArgument):
        nvml.gpu_instance_profile_info(a100, structs.GPU_INSTANCE_PROFILE_COUNT)  # past the loop bound
    with pytest.raises(errors.NotSupported):
        nvml.gpu_instance_profile_info(a100, 0x5)  # 8_SLICE: no such profile on A100
    with pytest.raises(errors.NotSupported):
        nvml.gpu_instance_profile_info(nvml.device_by_index(1), 0)  # MIG off
    with pytest.raises(errors.NotSupported):
        nvml.gpu_instance_profile_info(nvml.device_by_index(2), 0)  # not MIG-capable
    with pytest.raises(errors.InvalidArgument):
        nvml.gpu_instance_profile_info_by_id(a100, 99)


def test_profile_enumeration(nvml):
    names = {c: p.profile_name for c, p in nvml.gpu_instance_profiles(nvml.device_by_index(3)).items()}
    assert names == {0: "1g.6gb", 7: "1g.6gb+me", 1: "2g.12gb", 8: "2g.12gb+me", 3: "4g.24gb"}


def test_possible_placements(nvml):
    a100 = nvml.device_by_index(0)
    assert nvml.gpu_instance_possible_placements(a100, GI_3G) == (Placement(0, 4), Placement(4, 4))
    assert [p.start for p in nvml.gpu_instance_possible_placements(a100, GI_1G)] == list(range(7))
    # answered with MIG off too (H100 ids are the A100's)
    assert nvml.gpu_instance_possible_placements(nvml.device_by_index(1), GI_2G) == tuple(
        Placement(s, 2) for s in (0, 2, 4)
    )
    with pytest.raises(errors.InvalidArgument):
        nvml.gpu_instance_possible_placements(a100, 99)
    with pytest.raises(errors.NotSupported):
        nvml.gpu_instance_possible_placements(nvml.device_by_index(2), GI_1G)


def test_placements_count_probe_and_short_buffer(nvml):
    lib = ctypes.CDLL(nvml.path)
    dev = ctypes.c_void_p(nvml.device_by_index(0).handle)
    count = ctypes.c_uint(0)
    assert lib.nvmlDeviceGetGpuInstancePossiblePlacements_v2(dev, GI_1G, None, ctypes.byref(count)) == 0
    assert count.value == 7
    buf = (structs.GpuInstancePlacement * 2)()
    count.value = 2
    rc = lib.nvmlDeviceGetGpuInstancePossiblePlacements_v2(dev, GI_1G, buf, ctypes.byref(count))
    assert rc == errors.Return.INSUFFICIENT_SIZE and count.value == 7


def test_remaining_capacity(nvml):
    a100 = nvml.device_by_index(0)
    assert nvml.gpu_instance_remaining_capacity(a100, GI_1G) == 7
    nvml.create_gpu_instance(a100, GI_3G, Placement(0, 4))
    assert nvml.gpu_instance_remaining_capacity(a100, GI_1G) == 3  # as nvidia-smi shows after a 3g at 0
    assert nvml.gpu_instance_remaining_capacity(a100, GI_3G) == 1
    assert nvml.gpu_instance_remaining_capacity(a100, GI_7G) == 0
    with pytest.raises(errors.NotSupported):
        nvml.gpu_instance_remaining_capacity(nvml.device_by_index(1), GI_1G)


# -- GPU instances ----------------------------------------------------------------------------------------


def test_create_list_info_destroy_gpu_instance(nvml):
    a100 = nvml.device_by_index(0)
    gi = nvml.create_gpu_instance(a100, GI_2G, Placement(2, 2))
    info = nvml.gpu_instance_info(gi)
    assert info.device == a100 and info.profile_id == GI_2G and info.placement == Placement(2, 2)
    assert info.id == 4  # observed ids: 2g at 0/2/4 -> 3/4/5
    assert nvml.gpu_instances(a100, GI_2G) == (gi,)
    assert nvml.gpu_instances(a100, GI_3G) == ()
    assert nvml.gpu_instance_by_id(a100, 4) == gi
    with pytest.raises(errors.NotFound):
        nvml.gpu_instance_by_id(a100, 5)
    nvml.destroy_gpu_instance(gi)
    assert nvml.gpu_instances(a100, GI_2G) == ()


def test_driver_chooses_a_placement(nvml):
    a100 = nvml.device_by_index(0)
    first = nvml.gpu_instance_info(nvml.create_gpu_instance(a100, GI_1G))
    assert first.placement == Placement(6, 1) and first.id == 13  # a first 1g lands on slice 6


def test_illegal_placement_is_invalid_argument(nvml):
    a100 = nvml.device_by_index(0)
    with pytest.raises(errors.InvalidArgument):
        nvml.create_gpu_instance(a100, GI_3G, Placement(2, 4))  # 3g starts at 0 or 4
    with pytest.raises(errors.InvalidArgument):
        nvml.create_gpu_instance(a100, GI_3G, Placement(0, 3))  # size is in memory slices: 4
    with pytest.raises(errors.InvalidArgument):
        nvml.create_gpu_instance(a100, 77, Placement(0, 1))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((GI_3G, 0, 4), (GI_3G, 0, 4)),  # the identical instance: no "already exists" code
        ((GI_3G, 0, 4), (GI_2G, 2, 2)),  # overlap
        ((GI_7G, 0, 8), (GI_1G, 6, 1)),  # overlap with the whole GPU
        ((GI_1G_ME, 0, 1), (GI_1G_ME, 3, 1)),  # cap: one +me instance
    ],
)
def test_overlap_or_cap_is_insufficient_resources(nvml, first, second):
    a100 = nvml.device_by_index(0)
    nvml.create_gpu_instance(a100, first[0], Placement(first[1], first[2]))
    with pytest.raises(errors.InsufficientResources) as info:
        nvml.create_gpu_instance(a100, second[0], Placement(second[1], second[2]))
    assert info.value.nvml_message == "Insufficient Resources"


def test_instance_count_cap_and_compute_limit(nvml):
    a100 = nvml.device_by_index(0)
    for start in (0, 2, 4):
        nvml.create_gpu_instance(a100, GI_2G, Placement(start, 2))
    nvml.create_gpu_instance(a100, GI_1G_DOUBLE, Placement(6, 2))
    with pytest.raises(errors.InsufficientResources):
        nvml.create_gpu_instance(a100, GI_1G, Placement(6, 1))


def test_create_needs_mig_on(nvml):
    with pytest.raises(errors.NotSupported):
        nvml.create_gpu_instance(nvml.device_by_index(1), GI_1G, Placement(0, 1))
    with pytest.raises(errors.NotSupported):
        nvml.create_gpu_instance(nvml.device_by_index(2), GI_1G, Placement(0, 1))
    with pytest.raises(errors.NotSupported):
        nvml.gpu_instances(nvml.device_by_index(1), GI_1G)


def test_destroy_gpu_instance_in_use(nvml, node):
    a100 = nvml.device_by_index(0)
    gi, ci, info = make_instance(nvml, a100)
    with pytest.raises(errors.InUse):
        nvml.destroy_gpu_instance(gi)  # it still has a compute instance
    node.attach(nvml.uuid(info.device), pid=5)
    with pytest.raises(errors.InUse) as err:
        nvml.destroy_compute_instance(ci)  # a process runs on it
    assert err.value.nvml_message == "In use by another client"
    node.detach(5)
    nvml.destroy_compute_instance(ci)
    nvml.destroy_gpu_instance(gi)


def test_stale_handles_after_destroy(nvml):
    a100 = nvml.device_by_index(0)
    gi, ci, info = make_instance(nvml, a100)
    mig_device = info.device
    nvml.destroy_compute_instance(ci)
    for call in (
        lambda: nvml.compute_instance_info(ci),
        lambda: nvml.uuid(mig_device),
        lambda: nvml.destroy_compute_instance(ci),
    ):
        with pytest.raises(errors.InvalidArgument):
            call()
    nvml.destroy_gpu_instance(gi)
    with pytest.raises(errors.InvalidArgument):
        nvml.gpu_instance_info(gi)
    with pytest.raises(errors.InvalidArgument):
        nvml.destroy_gpu_instance(gi)


def test_handles_do_not_survive_shutdown(node, libpath):
    with Nvml(libpath) as nvml:
        dev = nvml.device_by_index(0)
    with Nvml(libpath) as nvml, pytest.raises(errors.InvalidArgument):
        nvml.name(dev)


def test_instances_persist_across_processes_view(nvml, node):
    a100 = nvml.device_by_index(0)
    make_instance(nvml, a100, GI_1G, 3, 1, 0)
    ((gpu_index, gi),) = node.instances()
    assert (gpu_index, gi.profile_id, gi.start, gi.id, len(gi.cis)) == (0, GI_1G, 3, 10, 1)


# -- compute instances --------------------------------------------------------------------------------


def test_compute_instance_profiles(nvml):
    gi = nvml.create_gpu_instance(nvml.device_by_index(0), GI_3G, Placement(4, 4))
    full = nvml.compute_instance_profile_info(gi, CI_FULL_3G)
    assert (full.id, full.slice_count, full.instance_count, full.multiprocessor_count) == (2, 3, 1, 42)
    assert full.name == "MIG 3g.20gb" and full.version == 3 and full.capabilities == 0
    one = nvml.compute_instance_profile_info(gi, 0, version=2)
    assert (one.slice_count, one.instance_count, one.multiprocessor_count, one.name) == (1, 3, 14, "MIG 1c.3g.20gb")
    assert one.capabilities is None and one.shared_copy_engine_count == 3
    v1 = nvml.compute_instance_profile_info(gi, 1, version=1)
    assert v1.slice_count == 2 and v1.name == "" and v1.version == 1
    with pytest.raises(errors.NotSupported):
        nvml.compute_instance_profile_info(gi, 4)  # a 7-slice CI does not fit a 3g GI
    with pytest.raises(errors.InvalidArgument):
        nvml.compute_instance_profile_info(gi, 0, eng_profile=1)
    with pytest.raises(errors.InvalidArgument):
        nvml.compute_instance_profile_info(gi, structs.COMPUTE_INSTANCE_PROFILE_COUNT)


def test_compute_instances_create_list_info_destroy(nvml):
    a100 = nvml.device_by_index(0)
    gi = nvml.create_gpu_instance(a100, GI_3G, Placement(0, 4))
    assert nvml.compute_instance_possible_placements(gi, 0) == tuple(Placement(s, 1) for s in range(3))
    assert nvml.compute_instance_remaining_capacity(gi, 0) == 3
    a = nvml.create_compute_instance(gi, 0, Placement(1, 1))
    b = nvml.create_compute_instance(gi, 0)
    assert nvml.compute_instance_remaining_capacity(gi, 0) == 1
    assert nvml.compute_instance_remaining_capacity(gi, CI_FULL_3G) == 0
    with pytest.raises(errors.InsufficientResources):
        nvml.create_compute_instance(gi, 0, Placement(1, 1))
    with pytest.raises(errors.InvalidArgument):
        nvml.create_compute_instance(gi, 0, Placement(5, 1))
    with pytest.raises(errors.InsufficientResources):
        nvml.create_compute_instance(gi, CI_FULL_3G)
    assert set(nvml.compute_instances(gi, 0)) == {a, b}
    ia, ib = nvml.compute_instance_info(a), nvml.compute_instance_info(b)
    assert (ia.id, ia.placement, ib.id, ib.placement) == (0, Placement(1, 1), 1, Placement(0, 1))
    assert ia.gpu_instance == gi and nvml.is_mig_device(ia.device)
    assert nvml.compute_instance_by_id(gi, 1) == b
    with pytest.raises(errors.NotFound):
        nvml.compute_instance_by_id(gi, 5)
    uuid = nvml.uuid(ia.device)
    assert uuid.startswith("MIG-") and len(uuid) == 40 and uuid[18] == "5"  # version-5 layout
    assert nvml.device_by_uuid(uuid) == ia.device
    assert nvml.name(ia.device) == "NVIDIA A100-SXM4-40GB MIG 1c.3g.20gb"
    nvml.destroy_compute_instance(a)
    assert nvml.compute_instances(gi, 0) == (b,)


# -- MIG device handles ----------------------------------------------------------------------------------


def test_mig_device_handles(nvml):
    a100 = nvml.device_by_index(0)
    assert nvml.max_mig_device_count(a100) == 7
    assert nvml.max_mig_device_count(nvml.device_by_index(1)) == 0  # MIG off
    assert nvml.max_mig_device_count(nvml.device_by_index(2)) == 0  # not MIG-capable
    _, ci0, _ = make_instance(nvml, a100, GI_1G, 0, 1, 0)
    _, _, info1 = make_instance(nvml, a100, GI_1G, 1, 1, 0)
    nvml.destroy_compute_instance(ci0)  # leaves a hole at index 0
    with pytest.raises(errors.NotFound):
        nvml.mig_device_by_index(a100, 0)
    assert nvml.mig_device_by_index(a100, 1) == info1.device
    assert nvml.mig_devices(a100) == [info1.device]
    with pytest.raises(errors.InvalidArgument):
        nvml.mig_device_by_index(a100, 7)
    with pytest.raises(errors.NotSupported):
        nvml.mig_device_by_index(nvml.device_by_index(1), 0)
    mig = info1.device
    assert nvml.is_mig_device(mig) and nvml.parent_device(mig) == a100
    assert nvml.gpu_instance_id(mig) == 8 and nvml.compute_instance_id(mig) == 0
    assert nvml.memory(mig).total_bytes == 4864 * 2**20
    with pytest.raises(errors.InvalidArgument):
        nvml.parent_device(a100)
    with pytest.raises(errors.InvalidArgument):
        nvml.gpu_instance_id(a100)
    with pytest.raises(errors.InvalidArgument):
        nvml.compute_instance_id(a100)
    with pytest.raises(errors.InvalidArgument):
        nvml.mig_mode(mig)  # physical-only calls refuse MIG handles


def test_media_engine_exclusivity_on_rtx_pro(tmp_path, monkeypatch, libpath):
    from tests.nvml.helpers import make_node, mig

    fake = make_node(tmp_path, [mig("RTX-PRO-6000-SERVER")], "rtx")
    monkeypatch.setenv(fakenvml.STATE_ENV, str(fake.path))
    with Nvml(libpath) as nvml:
        dev = nvml.device_by_index(0)
        ids = {p.profile_name: p.id for p in nvml.gpu_instance_profiles(dev).values()}
        nvml.create_gpu_instance(dev, ids["1g.24gb+me.all"], Placement(0, 1))
        with pytest.raises(errors.InsufficientResources):  # +me.all shares the GPU only with -me
            nvml.create_gpu_instance(dev, ids["1g.24gb"], Placement(1, 1))
        nvml.create_gpu_instance(dev, ids["1g.24gb-me"], Placement(1, 1))
        caps = nvml.gpu_instance_profile_info_by_id(dev, ids["1g.24gb+gfx"]).capabilities
        assert caps == structs.GPU_INSTANCE_PROFILE_CAPS_GFX
