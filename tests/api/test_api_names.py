"""The names are HAMi's exact strings: a typo here breaks wire compatibility silently."""

import hami.api
from hami.api import names


def test_hami_annotation_names_are_exact():
    assert names.NODE_REGISTER == "hami.io/node-nvidia-register"
    assert names.NODE_HANDSHAKE == "hami.io/node-handshake"
    assert names.DEVICE_CORDON == "hami.io/device-cordon"
    assert names.NODE_LOCK == "hami.io/mutex.lock"
    assert names.VGPU_NODE == "hami.io/vgpu-node"
    assert names.VGPU_TIME == "hami.io/vgpu-time"
    assert names.VGPU_DEVICES_ALLOCATED == "hami.io/vgpu-devices-allocated"
    assert names.VGPU_DEVICES_TO_ALLOCATE == "hami.io/vgpu-devices-to-allocate"
    assert names.VGPU_MIG_ALLOCATIONS == "hami.io/vgpu-mig-allocations"
    assert names.BIND_PHASE == "hami.io/bind-phase"
    assert names.BIND_TIME == "hami.io/bind-time"
    assert (names.BIND_PHASE_ALLOCATING, names.BIND_PHASE_SUCCESS, names.BIND_PHASE_FAILED) == (
        "allocating",
        "success",
        "failed",
    )


def test_user_facing_names_are_exact():
    assert names.VGPU_MODE == "nvidia.com/vgpu-mode"
    assert names.USE_GPU_TYPE == "nvidia.com/use-gputype"
    assert names.NOUSE_GPU_TYPE == "nvidia.com/nouse-gputype"
    assert names.USE_GPU_UUID == "nvidia.com/use-gpuuuid"
    assert names.NOUSE_GPU_UUID == "nvidia.com/nouse-gpuuuid"
    assert names.NUMA_BIND == "nvidia.com/numa-bind"
    assert names.NODE_SCHEDULER_POLICY == "hami.io/node-scheduler-policy"
    assert names.GPU_SCHEDULER_POLICY == "hami.io/gpu-scheduler-policy"
    assert names.SCHEDULER_NAME == "hami-scheduler"


def test_resource_defaults_match_the_chart():
    assert names.RESOURCE_COUNT == "nvidia.com/gpu"
    assert names.RESOURCE_MEMORY == "nvidia.com/gpumem"
    assert names.RESOURCE_MEMORY_PERCENTAGE == "nvidia.com/gpumem-percentage"
    assert names.RESOURCE_CORES == "nvidia.com/gpucores"


def test_our_annotation_lives_in_hamis_namespace():
    assert names.NODE_MIG_INSTANCES == "hami.io/node-mig-instances"


def test_every_public_name_is_exported():
    for name in hami.api.__all__:
        assert hasattr(hami.api, name), name
    for name in names.__all__:
        assert hasattr(names, name), name
    public = {n for n in vars(names) if n.isupper() and not n.startswith("_")}
    assert public == set(names.__all__)
