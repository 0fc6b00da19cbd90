"""The cache folding node and pod objects into the engine (no API server: objects as dicts)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hami._core import Engine
from hami.api import codecs, names
from hami.api.errors import AnnotationError
from hami.api.requests import ContainerRequest, Request
from hami.scheduler.cache import ClusterCache
from tests.scheduler.conftest import devices, node_body

MIG_UUID = "MIG-00000000-0000-0000-0000-0000000000b1"
A_40GB = Request((ContainerRequest("c", 0, False, 1, 40000),))


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


def test_a_gpu_model_missing_from_the_catalog_is_built_from_its_registration() -> None:
    """An invented 4-slice part ('NVIDIA Z9 Hypothetical'): its profiles, slices and placements come
    only from the agent's migProfiles, and the engine places instances on it."""
    def prof(name, mib, g, m, starts, flags=()):
        return codecs.MigProfileInfo(name, mib, -(-g * 100 // 4), g, tuple(codecs.Placement(s, m) for s in starts),
                                     compute_slices=g, memory_slices=m, flags=flags)

    profiles = (prof("1g.12gb", 12000, 1, 1, (0, 1, 2, 3)), prof("1g.12gb+me", 12000, 1, 1, (0, 1, 2, 3), ("+me",)),
                prof("2g.24gb", 24000, 2, 2, (0, 2)), prof("4g.48gb", 48000, 4, 4, (0,)))
    device = codecs.NodeDevice("GPU-z-0", 0, 4, 49152, 100, "NVIDIA Z9 Hypothetical", mode=names.MODE_MIG,
                               health=True, mig_profiles=profiles)
    engine = Engine()
    cache = ClusterCache(engine)
    cache.node_event("upsert", node_body("z9", [device]))
    assert cache.has_gpus("z9") and engine.node_names == ["z9"]
    from hami.api.requests import ContainerRequest, Request

    picks = []
    for i, mem in enumerate((20000, 12000, 12000)):
        out = engine.decide_and_reserve(f"p{i}", Request((ContainerRequest("c", 0, False, 1, mem),)), "z9")
        assert hasattr(out, "containers"), out
        picks += [(p.profile, p.start) for _c, p in out.picks()]
    assert picks == [("2g.24gb", 0), ("1g.12gb", 2), ("1g.12gb", 3)]  # 2g x 2 then 1g x 4: the seed's rule
    full = engine.decide_and_reserve("p9", Request((ContainerRequest("c", 0, False, 1, 12000),)), "z9")
    assert not hasattr(full, "containers")  # 4 memory slices, all taken
    # the device string of a learned model carries its registered memory and core share, not 0
    from hami.scheduler.annotations import decision_annotations

    written = decision_annotations(engine.reservation("p0"), {"GPU-z-0": device.type}, datetime.now(UTC),
                                   cache.learned)
    (entry,) = codecs.decode_pod_devices(written[names.VGPU_DEVICES_ALLOCATED])
    assert (entry[0].memory_mib, entry[0].cores) == (24000, 50)


def test_a_registration_without_our_fields_is_reported_not_guessed() -> None:
    old = codecs.MigProfileInfo("1g.12gb", 12000, 25, 1, (codecs.Placement(0, 1),))  # an older agent
    device = codecs.NodeDevice("GPU-y-0", 0, 4, 49152, 100, "NVIDIA Y1 Unknown", mode=names.MODE_MIG, health=True,
                               mig_profiles=(old,))
    engine = Engine()
    cache = ClusterCache(engine)
    cache.node_event("upsert", node_body("y1", [device]))
    assert not cache.has_gpus("y1")  # refused with a logged reason; the node takes no MIG pod
    assert cache.annotation_errors == 1


def test_the_engine_holds_the_wire_instance_itself() -> None:
    """One RealisedInstance type: what the cache decodes is what the engine folds, ids included."""
    engine = Engine()
    cache = ClusterCache(engine)
    report = codecs.encode_node_mig_instances([_instance(pod_uid="uid-1")])
    cache.node_event("upsert", node_body("mig-a", devices("a", 1), **{names.NODE_MIG_INSTANCES: report}))
    (pinned,) = engine._pinned[engine._rows["GPU-a-0"]].values()
    assert pinned == codecs.decode_node_mig_instances(report)[0]
    assert (pinned.mig_uuid, pinned.gpu_instance_id, pinned.compute_instance_id) == (MIG_UUID, 2, 0)


def test_an_older_agents_instance_gets_the_uid_the_cache_knows_by_name() -> None:
    engine = Engine()
    cache = ClusterCache(engine)
    cache.pod_event("upsert", {"metadata": {"name": "job", "namespace": "ns", "uid": "uid-9"},
                               "spec": {}, "status": {"phase": "Running"}})
    report = codecs.encode_node_mig_instances([_instance()])  # no podUID
    cache.node_event("upsert", node_body("mig-a", devices("a", 1), **{names.NODE_MIG_INSTANCES: report}))
    (pinned,) = engine._pinned[engine._rows["GPU-a-0"]].values()
    assert pinned.pod_uid == "uid-9" and pinned.pod == "ns/job"


def test_an_instance_without_nvml_ids_is_never_written() -> None:
    expected = codecs.RealisedInstance.expected("GPU-a-0", "3g.40gb", codecs.Placement(4, 4))
    assert expected.start == 4 and not expected.in_use
    with pytest.raises(ValueError, match="gpuInstanceID and computeInstanceID and migUUID missing"):
        codecs.encode_node_mig_instances([expected])
    wire = codecs.encode_node_mig_instances([_instance(state=codecs.InstanceState.IDLE, pod=None,
                                                       since=datetime(2024, 5, 1, tzinfo=UTC))])
    with pytest.raises(AnnotationError, match="since"):
        codecs.decode_node_mig_instances(wire.replace(',"since":"2024-05-01T12:00:00Z"', "")
                                         .replace(',"since":"2024-05-01T00:00:00Z"', ""))
    with pytest.raises(AnnotationError, match="in-use instance needs pod"):
        codecs.decode_node_mig_instances(codecs.encode_node_mig_instances([_instance()]).replace(',"pod":"ns/job"', ""))


def test_a_reported_placement_of_the_wrong_width_is_a_conflict() -> None:
    engine = Engine()
    cache = ClusterCache(engine)
    cache.node_event("upsert", node_body("mig-a", devices("a", 1)))
    wrong = codecs.RealisedInstance.expected("GPU-a-0", "3g.40gb", codecs.Placement(4, 2), in_use=True, pod_uid="x")
    (conflict,) = engine.set_realised("mig-a", [wrong])
    assert "4 memory slices wide, not 2" in conflict.detail
    assert engine.snapshot()["GPU-a-0"]["in_use"] == []


def test_a_stale_failed_mark_does_not_drop_a_bind_in_flight() -> None:
    """A re-bind of a pod whose earlier attempt was marked failed: the old mark arriving while our
    binder holds the new reservation must not release it (the next pod could take the devices)."""
    engine = Engine()
    cache = ClusterCache(engine)
    cache.node_event("upsert", node_body("mig-a", devices("a", 1)))
    stale = _pod("uid-r")
    stale["metadata"]["annotations"][names.BIND_PHASE] = "failed"
    stale["spec"] = {}
    stale["status"] = {"phase": "Pending"}
    cache.begin_bind("uid-r")
    decision = engine.decide_and_reserve("uid-r", A_40GB, "mig-a")
    assert engine.reservation("uid-r") == decision
    cache.pod_event("upsert", stale)
    assert engine.reservation("uid-r") == decision
    cache.end_bind("uid-r")
    cache.pod_event("upsert", {**stale, "metadata": {**stale["metadata"], "resourceVersion": "2"}})
    assert engine.reservation("uid-r") is None  # once no bind is in flight, failed releases
