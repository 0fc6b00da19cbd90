"""nvidia-ml-py (`pynvml`) loaded on the simulated library reads what our binding reads.

This checks the simulator's ABI, not just its agreement with our reader: pynvml declares no
argtypes, calls `nvmlInitWithFlags`, the legacy `nvmlDeviceGetMemoryInfo` and the v2 profile
struct, and passes its own ctypes structs. It loads through the pre-set `pynvml.nvmlLib`
(reference §B.6), whose function-pointer cache must be cleared around the test.
"""

from __future__ import annotations

import ctypes

import pynvml
import pytest

from hami.nvml import Placement, structs


@pytest.fixture
def pynvml_on_fake(node, libpath):
    pynvml.nvmlLib = ctypes.CDLL(libpath)
    pynvml._nvmlGetFunctionPointer_cache.clear()
    pynvml.nvmlInit()
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()
        pynvml.nvmlLib = None
        pynvml._nvmlGetFunctionPointer_cache.clear()


def test_pynvml_reads_what_we_read(pynvml_on_fake, nvml):
    p = pynvml_on_fake
    nvml.create_gpu_instance(nvml.device_by_index(0), 9, Placement(4, 4))  # something to count
    assert p.nvmlDeviceGetCount() == nvml.device_count() == 4
    assert p.nvmlSystemGetDriverVersion() == nvml.driver_version()
    for index in range(4):
        theirs, ours = p.nvmlDeviceGetHandleByIndex(index), nvml.device_by_index(index)
        assert p.nvmlDeviceGetName(theirs) == nvml.name(ours)
        assert p.nvmlDeviceGetUUID(theirs) == nvml.uuid(ours)
        mem, our_mem = p.nvmlDeviceGetMemoryInfo(theirs), nvml.memory(ours)
        assert (mem.total, mem.free, mem.used) == (our_mem.total_bytes, our_mem.free_bytes, our_mem.used_bytes)
        mem2 = p.nvmlDeviceGetMemoryInfo(theirs, version=p.nvmlMemory_v2)
        assert mem2.total == our_mem.total_bytes
        assert p.nvmlDeviceGetPciInfo(theirs).pciDeviceId == nvml.pci_info(ours).pci_device_id
        assert p.nvmlDeviceGetArchitecture(theirs) == nvml.architecture(ours)
        assert tuple(p.nvmlDeviceGetCudaComputeCapability(theirs)) == nvml.cuda_compute_capability(ours)
        try:
            mode = p.nvmlDeviceGetMigMode(theirs)
        except p.NVMLError_NotSupported:
            assert index == 2
            continue
        our_mode = nvml.mig_mode(ours)
        assert mode == [int(our_mode.current), int(our_mode.pending)]
        if not our_mode.current:
            continue
        for constant in range(structs.GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = p.nvmlDeviceGetGpuInstanceProfileInfo(theirs, constant)
            except (p.NVMLError_NotSupported, p.NVMLError_InvalidArgument):
                continue
            mine = nvml.gpu_instance_profile_info(ours, constant, version=2)
            assert info.version == p.nvmlGpuInstanceProfileInfo_v2
            assert (info.id, info.sliceCount, info.instanceCount, info.multiprocessorCount, info.memorySizeMB) == (
                mine.id,
                mine.slice_count,
                mine.instance_count,
                mine.multiprocessor_count,
                mine.memory_mib,
            )
            assert (info.copyEngineCount, info.decoderCount, info.jpegCount, info.ofaCount) == (
                mine.copy_engine_count,
                mine.decoder_count,
                mine.jpeg_count,
                mine.ofa_count,
            )
            name = info.name.decode() if isinstance(info.name, bytes) else info.name
            assert name == mine.name
            v1 = p.nvmlDeviceGetGpuInstanceProfileInfo(theirs, constant, version=1)
            assert (v1.id, v1.memorySizeMB) == (mine.id, mine.memory_mib)
            count = ctypes.c_uint(0)
            p.nvmlDeviceGetGpuInstancePossiblePlacements(theirs, info.id, None, ctypes.byref(count))
            buf = (p.c_nvmlGpuInstancePlacement_t * count.value)()
            p.nvmlDeviceGetGpuInstancePossiblePlacements(theirs, info.id, buf, ctypes.byref(count))
            assert [(b.start, b.size) for b in buf] == [
                (x.start, x.size) for x in nvml.gpu_instance_possible_placements(ours, info.id)
            ]
            assert p.nvmlDeviceGetGpuInstanceRemainingCapacity(theirs, info.id) == (
                nvml.gpu_instance_remaining_capacity(ours, info.id)
            )


def test_pynvml_creates_what_we_see_and_vice_versa(pynvml_on_fake, nvml, node):
    p = pynvml_on_fake
    dev = p.nvmlDeviceGetHandleByIndex(0)
    placement = p.c_nvmlGpuInstancePlacement_t()
    placement.start, placement.size = 0, 2
    gi = p.nvmlDeviceCreateGpuInstanceWithPlacement(dev, 14, ctypes.byref(placement))  # pynvml passes it through
    ci = p.nvmlGpuInstanceCreateComputeInstance(gi, 1)
    info = p.nvmlComputeInstanceGetInfo(ci)
    mig_uuid = p.nvmlDeviceGetUUID(info.device)
    assert p.nvmlDeviceIsMigDeviceHandle(info.device)
    with pytest.raises(p.NVMLError_InsufficientResources):
        p.nvmlDeviceCreateGpuInstanceWithPlacement(dev, 14, ctypes.byref(placement))

    ours = nvml.device_by_uuid(mig_uuid)
    assert nvml.is_mig_device(ours) and nvml.parent_device(ours) == nvml.device_by_index(0)
    (gi_ours,) = nvml.gpu_instances(nvml.device_by_index(0), 14)
    assert nvml.gpu_instance_info(gi_ours).placement == Placement(0, 2)

    node.attach(mig_uuid, pid=31, used_mib=64)
    (proc,) = p.nvmlDeviceGetComputeRunningProcesses(info.device)
    assert (proc.pid, proc.usedGpuMemory, proc.gpuInstanceId) == (31, 64 * 2**20, nvml.gpu_instance_id(ours))
    with pytest.raises(p.NVMLError_InUse):
        p.nvmlComputeInstanceDestroy(ci)
    assert str(p.NVMLError(19)) == "In use by another client"  # pynvml asks nvmlErrorString
    node.detach(31)
    p.nvmlComputeInstanceDestroy(ci)
    p.nvmlGpuInstanceDestroy(gi)
    assert nvml.gpu_instances(nvml.device_by_index(0), 14) == ()
