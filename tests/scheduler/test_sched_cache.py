"""The cache folding node and pod objects into the engine (no API server: objects as dicts)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hami._core import Engine
from hami.api import codecs, names
from hami.api.errors import AnnotationError
from hami.scheduler.cache import ClusterCache
from tests.scheduler.conftest import devices, node_body

MIG_UUID = "MIG-00000000-0000-0000-0000-0000000000b1"


def _instance(**kw) -> codecs.RealisedInstance:
    base = dict(gpu_uuid="GPU-a-0", profile="3g.40gb", placement=codecs.Placement(4, 4), gpu_instance_id=2,
                compute_instance_id=0, mig_uuid=MIG_UUID, state=codecs.InstanceState.IN_USE, pod="ns/job")
    return codecs.RealisedInstance(**{**base, **kw})


def _pod(uid: str, name: str = "job") -> dict:
    allocation = codecs.MigAllocation(0, 0, "GPU-a-0", "3g.40gb", codecs.Placement(4, 4))
    ann = {names.VGPU_NODE: "mig-a", names.BIND_PHASE: "success",
           names.VGPU_DEVICES_ALLOCATED: "GPU-a-0,NVIDIA,40192,43:;",
           names.VGPU_MIG_ALLOCATIONS: codecs.encode_mig_allocations([allocation]),
           names.BIND_TIME: codecs.encode_unix_time(datetime.now(UTC))}
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid, "annotations": ann},
            "spec": {"nodeName": "mig-a"}, "status": {"phase": "Running"}}


def test_pod_uid_round_trips_and_older_agents_still_decode() -> None:
    value = codecs.encode_node_mig_instances([_instance(pod_uid="uid-1")])
    assert '"podUID":"uid-1"' in value.replace(" ", "")
    assert codecs.decode_node_mig_instances(value)[0].pod_uid == "uid-1"
    old = codecs.encode_node_mig_instances([_instance()])  # an agent that writes no podUID
    assert "podUID" not in old and codecs.decode_node_mig_instances(old)[0].pod_uid is None
    with pytest.raises(ValueError, match="podUID"):
        _instance(state=codecs.InstanceState.IDLE, pod=None, since=datetime.now(UTC), pod_uid="x")
    bad = old.replace('"pod":', '"podUID":"","pod":')
    assert codecs.decode_node_mig_instances(bad)[0].pod_uid is None  # empty reads as absent
    with pytest.raises(AnnotationError):
        codecs.decode_node_mig_instances(old.replace('"in-use"', '"busy"'))


def test_an_instance_is_matched_to_its_pod_by_uid_not_by_name() -> None:
    engine = Engine()
    cache = ClusterCache(engine)
    report = codecs.encode_node_mig_instances([_instance(pod_uid="uid-new")])
    cache.node_event("upsert", node_body("mig-a", devices("a", 1), **{names.NODE_MIG_INSTANCES: report}))
    # an old pod of the same name still in the cache: matching by name would give the instance to it
    cache.pod_event("upsert", {"metadata": {"name": "job", "namespace": "ns", "uid": "uid-old"},
                               "spec": {}, "status": {"phase": "Pending"}})
    cache.node_event("upsert", node_body("mig-a", devices("a", 1),
                                         **{names.NODE_MIG_INSTANCES: report, "touch": "1"}))
    row = engine._rows["GPU-a-0"]
    (pinned,) = engine._pinned[row].values()
    assert pinned.pod_uid == "uid-new"
    # the new pod's recorded decision takes the instance over as its own: no conflict, one instance in use
    cache.pod_event("upsert", _pod("uid-new"))
    assert engine.reservation("uid-new") is not None
    assert engine.snapshot()["GPU-a-0"]["in_use"] == [("3g.40gb", 4)]
