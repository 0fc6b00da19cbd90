"""Handshake, device cordon and our hami.io/node-mig-instances."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.api import (
    AnnotationError,
    Handshake,
    HandshakeKind,
    InstanceState,
    Placement,
    RealisedInstance,
    names,
)
from hami.api.codecs import (
    decode_device_cordon,
    decode_handshake,
    decode_node_mig_instances,
    encode_device_cordon,
    encode_handshake,
    encode_node_mig_instances,
)

# --- handshake -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "stamp"),
    [
        (
            "Reported 2024-01-02 15:04:05.123456789 +0800 CST m=+12.345",
            HandshakeKind.REPORTED,
            "2024-01-02 15:04:05.123456789 +0800 CST m=+12.345",
        ),
        ("Requesting_2024-01-02 15:04:05", HandshakeKind.REQUESTING, "2024-01-02 15:04:05"),
        ("Deleted_2024-01-02 15:04:05", HandshakeKind.DELETED, "2024-01-02 15:04:05"),
    ],
)
def test_handshake_forms_round_trip(value, kind, stamp):
    handshake = decode_handshake(value)
    assert handshake == Handshake(kind, stamp)
    assert encode_handshake(handshake) == value


def test_handshake_times():
    reported = decode_handshake("Reported 2024-01-02 15:04:05.123456789 +0800 CST m=+12.345")
    assert reported.time() == datetime(2024, 1, 2, 15, 4, 5, 123456, timezone(timedelta(hours=8)))
    requesting = decode_handshake("Requesting_2024-01-02 15:04:05")
    assert requesting.time() == datetime(2024, 1, 2, 15, 4, 5)  # naive: HAMi reads it in local time
    assert Handshake(HandshakeKind.REQUESTING, "soon").time() is None
    assert Handshake(HandshakeKind.REPORTED, "whenever").time() is None


def test_handshake_builders():
    now = datetime(2024, 1, 2, 15, 4, 5, 120000, UTC)
    assert encode_handshake(Handshake.reported(now)) == "Reported 2024-01-02 15:04:05.12 +0000 UTC"
    assert Handshake.reported(now).time() == now
    assert (
        encode_handshake(Handshake.reported(now.replace(microsecond=0)))
        == "Reported 2024-01-02 15:04:05 +0000 UTC"
    )
    assert encode_handshake(Handshake.requesting(now)) == "Requesting_2024-01-02 15:04:05"
    assert encode_handshake(Handshake.deleted(now)) == "Deleted_2024-01-02 15:04:05"


@pytest.mark.parametrize("value", ["", "Alive", "Requesting 2024", "reported 2024-01-02"])
def test_handshake_rejects_unknown_forms(value):
    with pytest.raises(AnnotationError, match=r"^hami\.io/node-handshake: .*expected 'Reported <time>'"):
        decode_handshake(value)


# --- device cordon -------------------------------------------------------------------------------


def test_cordon_list():
    assert decode_device_cordon("GPU-a, GPU-b ,,GPU-a") == ("GPU-a", "GPU-b")
    assert decode_device_cordon("") == ()
    assert encode_device_cordon(["GPU-a", "GPU-b"]) == "GPU-a,GPU-b"
    with pytest.raises(ValueError, match="without commas"):
        encode_device_cordon(["GPU-a,GPU-b"])


@given(st.lists(st.uuids().map(lambda u: f"GPU-{u}"), max_size=5, unique=True))
def test_cordon_round_trip(uuids):
    assert decode_device_cordon(encode_device_cordon(uuids)) == tuple(uuids)


# --- hami.io/node-mig-instances ------------------------------------------------------------------

MIG_A = "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f"
MIG_B = "MIG-0b2c3d4e-aaaa-bbbb-cccc-0123456789ab"
SINCE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def in_use(**kw):
    base = dict(
        gpu_uuid="GPU-a",
        profile="3g.40gb",
        placement=Placement(4, 4),
        gpu_instance_id=2,
        compute_instance_id=0,
        mig_uuid=MIG_A,
        state=InstanceState.IN_USE,
        pod="default/train-0",
    )
    return RealisedInstance(**(base | kw))


def idle(**kw):
    base = dict(
        gpu_uuid="GPU-a",
        profile="1g.10gb",
        placement=Placement(0, 1),
        gpu_instance_id=9,
        compute_instance_id=0,
        mig_uuid=MIG_B,
        state=InstanceState.IDLE,
        since=SINCE,
    )
    return RealisedInstance(**(base | kw))


def test_instances_format_is_the_documented_one():
    encoded = encode_node_mig_instances([in_use(), idle()])
    assert encoded == (
        '[{"gpuUUID":"GPU-a","profile":"3g.40gb","placement":{"start":4,"size":4},"gpuInstanceID":2,'
        f'"computeInstanceID":0,"migUUID":"{MIG_A}","state":"in-use","pod":"default/train-0"}},'
        '{"gpuUUID":"GPU-a","profile":"1g.10gb","placement":{"start":0,"size":1},"gpuInstanceID":9,'
        f'"computeInstanceID":0,"migUUID":"{MIG_B}","state":"idle","since":"2024-05-01T12:00:00Z"}}]'
    )
    assert decode_node_mig_instances(encoded) == (in_use(), idle())
    assert decode_node_mig_instances("") == ()
    assert decode_node_mig_instances("[]") == ()


@st.composite
def realised(draw):
    gpu = draw(st.sampled_from(["GPU-a", "GPU-b", "GPU-c"]))
    state = draw(st.sampled_from(InstanceState))
    uuid = draw(st.uuids()).hex
    mig = f"MIG-{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
    since = draw(
        st.datetimes(
            min_value=datetime(1971, 1, 1),
            max_value=datetime(2200, 1, 1),
            timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))]),
        )
    )
    return RealisedInstance(
        gpu_uuid=gpu,
        profile=draw(st.sampled_from(["1g.10gb", "2g.20gb", "7g.80gb"])),
        placement=Placement(draw(st.integers(0, 7)), draw(st.integers(1, 8))),
        gpu_instance_id=draw(st.integers(0, 2**32 - 1)),
        compute_instance_id=draw(st.integers(0, 2**32 - 1)),
        mig_uuid=mig,
        state=state,
        pod=f"ns-{draw(st.integers(0, 9))}/pod-{draw(st.integers(0, 99))}"
        if state is InstanceState.IN_USE
        else None,
        since=since.replace(microsecond=0) if state is InstanceState.IDLE else None,
    )


@given(st.lists(realised(), max_size=6))
def test_instances_round_trip(instances):
    # keep one instance per GPU so generated placements never overlap
    instances = tuple({i.gpu_uuid: i for i in instances}.values())
    encoded = encode_node_mig_instances(instances)
    assert decode_node_mig_instances(encoded) == instances
    assert encode_node_mig_instances(decode_node_mig_instances(encoded)) == encoded


def _one(**changes):
    raw = json.loads(encode_node_mig_instances([in_use()]))[0]
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return json.dumps([raw])


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (_one(state="busy"), "state 'busy' is not 'in-use' or 'idle'"),
        (_one(state=None), "'state' is missing"),
        (_one(pod=None), "an in-use instance needs pod"),
        (_one(pod="train-0"), "pod 'train-0' is not '<namespace>/<name>'"),
        (_one(pod="a/b/c"), "is not '<namespace>/<name>'"),
        (_one(since="2024-05-01T12:00:00Z"), "since is only written for idle instances"),
        (_one(state="idle", pod=None), "an idle instance needs since"),
        (_one(state="idle", since="2024-05-01T12:00:00Z"), "pod is only written for in-use instances"),
        (
            _one(state="idle", pod=None, since="2024-05-01 12:00"),
            "since '2024-05-01 12:00' is not an RFC3339 time",
        ),
        (_one(migUUID="GPU-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f"), "is not 'MIG-' followed by a uuid"),
        (_one(migUUID="MIG-GPU-abc/1/0"), "is not 'MIG-' followed by a uuid"),
        (_one(gpuInstanceID=None), "'gpuInstanceID' is missing"),
        (_one(computeInstanceID=-1), "'computeInstanceID' -1 is out of range"),
        (_one(placement={"start": 0, "size": 0}), "placement must be a Placement of size >= 1"),
        (_one(placement=None), "'placement' is missing"),
        (_one(profile=""), "'profile' is empty"),
        (_one(gpuUUID=None), "'gpuUUID' is missing"),
    ],
)
def test_instance_validation(value, needle):
    with pytest.raises(AnnotationError) as info:
        decode_node_mig_instances(value)
    assert info.value.annotation == names.NODE_MIG_INSTANCES
    assert info.value.part.startswith("instance 0")
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("second", "needle"),
    [
        (idle(mig_uuid=MIG_A), "migUUID " + MIG_A + " repeats instance 0"),
        (idle(gpu_instance_id=2, placement=Placement(4, 4)), "GPU GPU-a GI 2 CI 0 repeats instance 0"),
        (idle(placement=Placement(5, 1)), "overlaps instance 0"),
    ],
)
def test_instance_conflicts(second, needle):
    with pytest.raises(ValueError, match=r"repeats|overlaps"):
        encode_node_mig_instances([in_use(), second])
    raw = json.dumps([in_use().to_json(), second.to_json()])
    with pytest.raises(AnnotationError, match="instance 1") as info:
        decode_node_mig_instances(raw)
    assert needle in str(info.value)


def test_two_compute_instances_of_one_gpu_instance_may_share_slices():
    other = in_use(compute_instance_id=1, mig_uuid=MIG_B, pod="default/train-1")
    assert decode_node_mig_instances(encode_node_mig_instances([in_use(), other])) == (in_use(), other)


def test_naive_since_is_refused():
    with pytest.raises(ValueError, match="timezone"):
        idle(since=datetime(2024, 5, 1))
