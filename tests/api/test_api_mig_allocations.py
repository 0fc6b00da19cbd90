"""hami.io/vgpu-mig-allocations: HAMi v2.10 JSON, one test per HAMi validation rule."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.api import AnnotationError, MigAllocation, Placement, names
from hami.api.codecs import decode_mig_allocations, encode_mig_allocations

MIG = "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f"

# What the scheduler writes at bind, then what the agent writes after realising the instance.
RESERVED = (
    '[{"containerIndex":1,"deviceIndex":0,"gpuUUID":"GPU-a","profile":"2g.20gb",'
    '"placement":{"start":4,"size":2}}]'
)
REALISED = (
    '[{"containerIndex":1,"deviceIndex":0,"gpuUUID":"GPU-a","profile":"2g.20gb","placement":{"start":4,"size":2},'
    f'"migUUID":"{MIG}","gpuInstanceID":0,"computeInstanceID":0}}]'
)


def test_reservation_then_runtime_identity():
    (reserved,) = decode_mig_allocations(RESERVED)
    assert reserved == MigAllocation(1, 0, "GPU-a", "2g.20gb", Placement(4, 2))
    assert not reserved.realised
    assert encode_mig_allocations([reserved]) == RESERVED
    realised = reserved.with_runtime(MIG, 0, 0)
    assert realised.realised
    assert encode_mig_allocations([realised]) == REALISED  # GI/CI id 0 is written: it is a real id
    assert decode_mig_allocations(REALISED) == (realised,)


def test_empty_value_and_empty_mig_uuid_mean_absent():
    assert decode_mig_allocations("") == ()
    assert decode_mig_allocations("[]") == ()
    raw = json.loads(RESERVED)
    raw[0]["migUUID"] = ""
    assert decode_mig_allocations(json.dumps(raw))[0].mig_uuid is None


allocations = st.builds(
    MigAllocation,
    container_index=st.integers(0, 2**63 - 1),
    device_index=st.integers(0, 2**63 - 1),
    gpu_uuid=st.uuids().map(lambda u: f"GPU-{u}"),
    profile=st.sampled_from(["1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.10gb+me"]),
    placement=st.builds(Placement, st.integers(0, 2**32 - 1), st.integers(1, 2**32 - 1)),
)


@st.composite
def allocation_lists(draw):
    out = draw(st.lists(allocations, max_size=6, unique_by=lambda a: (a.container_index, a.device_index)))
    realised = []
    for a in out:
        if draw(st.booleans()):
            a = a.with_runtime(
                f"MIG-{draw(st.uuids())}", draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
            )
        realised.append(a)
    return tuple(realised)


@given(allocation_lists())
def test_round_trip(value):
    encoded = encode_mig_allocations(value)
    assert decode_mig_allocations(encoded) == value
    assert encode_mig_allocations(decode_mig_allocations(encoded)) == encoded


def _with(**changes):
    raw = json.loads(REALISED)[0]
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    return json.dumps([raw])


def _reject(value, needle, part="allocation 0"):
    with pytest.raises(AnnotationError) as info:
        decode_mig_allocations(value)
    assert info.value.annotation == names.VGPU_MIG_ALLOCATIONS
    assert info.value.part == part
    assert needle in str(info.value)


def test_rule_negative_container_index():
    _reject(_with(containerIndex=-1), "containerIndex -1 is negative")


def test_rule_negative_device_index():
    _reject(_with(deviceIndex=-2), "deviceIndex -2 is negative")


def test_rule_empty_gpu_uuid():
    _reject(_with(gpuUUID=""), "gpuUUID is empty")
    _reject(_with(gpuUUID=None), "gpuUUID is empty")


def test_rule_empty_profile():
    _reject(_with(profile=""), "profile is empty")


def test_rule_zero_size_placement():
    _reject(_with(placement={"start": 3, "size": 0}), "placement size is 0")
    _reject(_with(placement=None), "placement size is 0")  # Go's zero value


@pytest.mark.parametrize(
    "missing",
    [
        ("migUUID",),
        ("gpuInstanceID",),
        ("computeInstanceID",),
        ("migUUID", "gpuInstanceID"),
        ("gpuInstanceID", "computeInstanceID"),
    ],
)
def test_rule_partial_runtime_identity(missing):
    _reject(_with(**dict.fromkeys(missing)), "partial runtime identity")


def test_rule_duplicate_container_device():
    first = json.loads(RESERVED)[0]
    second = first | {"gpuUUID": "GPU-b"}
    _reject(
        json.dumps([first, second]), "duplicate reservation for container 1 device 0", part="allocation 1"
    )


def test_json_shape_errors():
    _reject("{}", "expected a JSON array", part="top level")
    _reject('[{"containerIndex":"1"}]', "'containerIndex' is a string")
    _reject(_with(gpuInstanceID=-1), "'gpuInstanceID' -1 is out of range")
    _reject(_with(placement={"start": "0", "size": 2}), "'start' is a string", part="allocation 0 placement")


def test_writers_cannot_build_what_hami_would_reject():
    with pytest.raises(ValueError, match="negative"):
        MigAllocation(-1, 0, "GPU-a", "1g.10gb", Placement(0, 1))
    with pytest.raises(ValueError, match="partial runtime identity"):
        MigAllocation(0, 0, "GPU-a", "1g.10gb", Placement(0, 1), mig_uuid=MIG)
    with pytest.raises(ValueError, match="migUUID is empty"):
        MigAllocation(0, 0, "GPU-a", "1g.10gb", Placement(0, 1), "", 1, 1)
    a = MigAllocation(0, 0, "GPU-a", "1g.10gb", Placement(0, 1))
    with pytest.raises(ValueError, match="duplicate"):
        encode_mig_allocations([a, a])
