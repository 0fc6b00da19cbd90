"""hami.io/mutex.lock: `<RFC3339>,<ns>,<pod>` and the legacy bare timestamp."""

import pickle
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.api import AnnotationError, NodeLock, names
from hami.api.codecs import decode_node_lock, encode_node_lock

T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_current_form():
    lock = decode_node_lock("2024-05-01T12:00:00Z,default,train-0")
    assert lock == NodeLock(T, "default", "train-0")
    assert lock.owner == "default/train-0"
    assert lock.owned_by("default", "train-0")
    assert not lock.owned_by("default", "train-1")
    assert encode_node_lock(lock) == "2024-05-01T12:00:00Z,default,train-0"


def test_legacy_bare_timestamp():
    lock = decode_node_lock("2024-05-01T20:00:00+08:00")
    assert lock == NodeLock(T)  # same instant
    assert lock.owner is None
    assert encode_node_lock(lock) == "2024-05-01T20:00:00+08:00"  # the offset is kept


def test_empty_owner_reads_as_legacy():
    assert decode_node_lock("2024-05-01T12:00:00Z,,") == NodeLock(T)


def test_fractional_seconds_are_read_and_written_whole():
    lock = decode_node_lock("2024-05-01T12:00:00.987654321Z,ns,p")
    assert lock.time == T.replace(microsecond=987654)
    assert encode_node_lock(lock) == "2024-05-01T12:00:00Z,ns,p"


def test_expiry_is_strictly_older_than_ttl():
    lock = NodeLock(T, "ns", "p")
    assert not lock.expired(T + timedelta(seconds=60), timedelta(seconds=60))
    assert lock.expired(T + timedelta(seconds=61), timedelta(seconds=60))
    assert not lock.expired(T - timedelta(hours=1), timedelta(seconds=60))


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1),
        max_value=datetime(9000, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=45)), timezone(timedelta(hours=-8))]
        ),
    ),
    st.one_of(
        st.none(),
        st.tuples(st.text("abc-019", min_size=1, max_size=20), st.text("xyz.-789", min_size=1, max_size=30)),
    ),
)
def test_round_trip(moment, owner):
    lock = NodeLock(moment.replace(microsecond=0), *(owner or (None, None)))
    encoded = encode_node_lock(lock)
    assert decode_node_lock(encoded) == lock
    assert encode_node_lock(decode_node_lock(encoded)) == encoded


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "is not an RFC3339 time"),
        ("2024-05-01 12:00:00", "is not an RFC3339 time"),
        ("2024-05-01T12:00:00", "is not an RFC3339 time"),  # no zone
        ("2024-13-01T12:00:00Z,ns,p", "is not an RFC3339 time"),
        ("2024-05-01T12:00:00Z,ns", "has 2 comma-separated parts"),
        ("2024-05-01T12:00:00Z,ns,p,x", "has 4 comma-separated parts"),
        ("2024-05-01T12:00:00Z,,p", "names only half an owner"),
    ],
)
def test_errors(value, needle):
    with pytest.raises(AnnotationError) as info:
        decode_node_lock(value)
    assert info.value.annotation == names.NODE_LOCK
    assert needle in str(info.value)


def test_value_rules():
    with pytest.raises(ValueError, match="timezone"):
        NodeLock(datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="both"):
        NodeLock(T, "ns", None)
    with pytest.raises(ValueError, match="without commas"):
        NodeLock(T, "ns", "a,b")
    with pytest.raises(ValueError, match="timezone"):
        NodeLock(T).expired(datetime(2024, 5, 1), timedelta(seconds=1))


def test_annotation_error_pickles():
    try:
        decode_node_lock("nope")
    except AnnotationError as err:
        again = pickle.loads(pickle.dumps(err))
        assert (again.annotation, again.part, again.problem, str(again)) == (
            err.annotation,
            err.part,
            err.problem,
            str(err),
        )
