"""The HAMi device string (vgpu-devices-allocated / -to-allocate), bind phase and unix times."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.api import AnnotationError, BindPhase, ContainerDevice, names
from hami.api.codecs import (
    decode_bind_phase,
    decode_pod_devices,
    decode_unix_time,
    encode_pod_devices,
    encode_unix_time,
    erase_container,
    next_pending_container,
)

# hami-behaviour §1.6 examples (uuids abbreviated there as in HAMi's docs)
TWO_CONTAINERS = "GPU-0fc3..,NVIDIA,3000,0:;GPU-0fc3..,NVIDIA,5000,0:;"
ERASED = ";"
LEGACY_MIG = "GPU-08d63fe8-...[2-0],NVIDIA,20480,0:;"


def test_hami_two_container_example():
    devices = decode_pod_devices(TWO_CONTAINERS)
    assert devices == (
        (ContainerDevice("GPU-0fc3..", "NVIDIA", 3000, 0),),
        (ContainerDevice("GPU-0fc3..", "NVIDIA", 5000, 0),),
    )
    assert encode_pod_devices(devices) == TWO_CONTAINERS


def test_hami_erased_example():
    assert decode_pod_devices(ERASED, names.VGPU_DEVICES_TO_ALLOCATE) == ((),)
    assert encode_pod_devices(((),)) == ERASED


def test_hami_legacy_mig_example():
    (container,) = decode_pod_devices(LEGACY_MIG)
    assert container == (ContainerDevice("GPU-08d63fe8-...", "NVIDIA", 20480, 0, legacy_mig=(2, 0)),)
    # the current form is written: the suffix is gone, the parent uuid stays
    assert encode_pod_devices(((container[0],),)) == "GPU-08d63fe8-...,NVIDIA,20480,0:;"


def test_empty_entries_keep_container_indices():
    value = ";GPU-a,NVIDIA,0,100:GPU-b,NVIDIA,0,100:;;GPU-c,NVIDIA,1024,10:;"
    devices = decode_pod_devices(value)
    assert [len(c) for c in devices] == [0, 2, 0, 1]
    assert encode_pod_devices(devices) == value


def test_boundary_values():
    assert decode_pod_devices("") == ()
    assert encode_pod_devices(()) == ""
    assert decode_pod_devices("GPU-a,NVIDIA,1,2:") == ((ContainerDevice("GPU-a", "NVIDIA", 1, 2),),)
    # HAMi ignores fields after the fourth
    assert decode_pod_devices("GPU-a,NVIDIA,1,2,extra:;") == ((ContainerDevice("GPU-a", "NVIDIA", 1, 2),),)


uuids = st.uuids().map(lambda u: f"GPU-{u}")
devices = st.builds(
    ContainerDevice, uuids, st.just("NVIDIA"), st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)
)
pod_devices = st.lists(st.lists(devices, max_size=3).map(tuple), max_size=5).map(tuple)


@given(pod_devices)
def test_round_trip(value):
    encoded = encode_pod_devices(value)
    assert decode_pod_devices(encoded) == value
    assert encode_pod_devices(decode_pod_devices(encoded)) == encoded


@given(pod_devices)
def test_erase_walks_containers_in_order(value):
    seen = []
    while (index := next_pending_container(value)) is not None:
        seen.append(index)
        value = erase_container(value, index)
    assert all(not c for c in value)
    assert seen == sorted(seen)


def test_erase_bounds():
    with pytest.raises(IndexError):
        erase_container(((),), 1)


@pytest.mark.parametrize(
    ("value", "part", "needle"),
    [
        (
            "GPU-x,NVIDIA,0,0:;GPU-x,NVIDIA,abc,0:;",
            "container 1 device 0 'GPU-x,NVIDIA,abc,0'",
            "memory 'abc' is not an integer",
        ),
        (
            "GPU-x,NVIDIA,-1,0:;",
            "container 0 device 0 'GPU-x,NVIDIA,-1,0'",
            "memory '-1' is not an integer 0..",
        ),
        ("GPU-x,NVIDIA,2147483648,0:;", "container 0 device 0", "memory '2147483648' is not an integer 0.."),
        ("GPU-x,NVIDIA,1, 5:;", "container 0 device 0", "cores ' 5' is not an integer"),
        ("GPU-x,NVIDIA,1,-5:;", "container 0 device 0", "cores '-5' is not an integer"),
        ("GPU-x,NVIDIA,1:;", "container 0 device 0 'GPU-x,NVIDIA,1'", "has 3 fields"),
        ("GPU-a,NVIDIA,1,1:GPU-x:;", "container 0 device 1 'GPU-x'", "has 1 fields"),
        (",NVIDIA,1,1:;", "container 0 device 0", "uuid is empty"),
        ("GPU-x,,1,1:;", "container 0 device 0", "type is empty"),
        ("GPU-x[2],NVIDIA,1,1:;", "container 0 device 0", "neither a uuid nor legacy"),
        ("GPU-x[a-0],NVIDIA,1,1:;", "container 0 device 0", "neither a uuid nor legacy"),
    ],
)
def test_errors_name_container_device_and_entry(value, part, needle):
    with pytest.raises(AnnotationError) as info:
        decode_pod_devices(value, names.VGPU_DEVICES_TO_ALLOCATE)
    assert info.value.annotation == names.VGPU_DEVICES_TO_ALLOCATE
    assert info.value.part.startswith(part)
    assert needle in str(info.value)


def test_the_brief_example_message():
    with pytest.raises(AnnotationError) as info:
        decode_pod_devices("GPU-y,NVIDIA,1,0:;GPU-x,NVIDIA,abc,0:;")
    assert str(info.value).startswith(
        "hami.io/vgpu-devices-allocated: container 1 device 0 'GPU-x,NVIDIA,abc,0': "
        "memory 'abc' is not an integer"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(uuid=""),
        dict(uuid="GPU-a:b"),
        dict(uuid="GPU-a;"),
        dict(uuid="GPU-a[1-0]"),
        dict(type="NV,IDIA"),
        dict(memory_mib=-1),
        dict(cores=2**31),
        dict(legacy_mig=(1,)),
        dict(legacy_mig=(-1, 0)),
    ],
)
def test_container_device_refuses_unencodable_values(kwargs):
    with pytest.raises(ValueError):
        ContainerDevice(**({"uuid": "GPU-a"} | kwargs))


def test_bind_phase():
    assert [decode_bind_phase(v) for v in ("allocating", "success", "failed")] == list(BindPhase)
    assert BindPhase.SUCCESS == "success"
    with pytest.raises(AnnotationError, match=r"^hami\.io/bind-phase: 'Success': expected 'allocating'"):
        decode_bind_phase("Success")


def test_unix_time():
    moment = datetime(2024, 5, 1, 12, 0, 0, 900000, tzinfo=UTC)
    assert encode_unix_time(moment) == "1714564800"
    assert encode_unix_time(1714564800) == "1714564800"
    assert decode_unix_time("1714564800") == 1714564800
    with pytest.raises(AnnotationError, match=r"^hami\.io/vgpu-time: '1\.5e9': is not unix seconds"):
        decode_unix_time("1.5e9", names.VGPU_TIME)
    with pytest.raises(AnnotationError, match=r"hami\.io/bind-time"):
        decode_unix_time("-1")
    with pytest.raises(ValueError, match="timezone"):
        encode_unix_time(datetime(2024, 5, 1))


@given(st.integers(0, 2**63 - 1))
def test_unix_time_round_trip(seconds):
    assert decode_unix_time(encode_unix_time(seconds)) == seconds


def test_decode_memos_stay_small_under_churn():
    """Values of pods long gone are unique (MIG uuids): a large memo only holds memory (a
    65,536-entry one grew a soak's scheduler by 0.5 MiB a minute of churn)."""
    from hami.api.allocations import decode_mig_allocations, decode_pod_devices

    for memo in (decode_pod_devices, decode_mig_allocations):
        assert memo.cache_info().maxsize <= 4096
