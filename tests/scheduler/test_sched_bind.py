"""Bind: atomic, idempotent, bounded lock waits, and every failure path cleans up."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from hami.api import codecs, names
from hami.scheduler.binder import BindError
from tests.scheduler.conftest import Plane, both_planes, devices, gpu_pod, wait_for

pytestmark = both_planes


def _created(plane: Plane, name: str, mem: str = "10000") -> dict:
    pod = gpu_pod(name, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": mem})
    pod["spec"]["schedulerName"] = "nobody"  # keep kube-scheduler out: the test binds by hand
    return plane.create(pod)


def _bind(plane: Plane, pod: dict, node: str) -> None:
    meta = pod["metadata"]
    plane.scheduler.binder.bind("default", meta["name"], meta["uid"], node, pod)


def _lock(plane: Plane, node: str) -> codecs.NodeLock | None:
    value = (plane.kube.get("nodes", node)["metadata"].get("annotations") or {}).get(names.NODE_LOCK)
    return codecs.decode_node_lock(value) if value else None


def test_a_pod_bound_twice_gets_its_first_decision(plane: Plane) -> None:
    plane.agent.paused = True
    plane.add_node("mig-a", devices("a", 2))
    pod = _created(plane, "twice")
    wait_for(lambda: plane.scheduler.cache.pod(pod["metadata"]["uid"]))
    _bind(plane, pod, "mig-a")
    first = plane.pod("twice")["metadata"]["annotations"][names.VGPU_MIG_ALLOCATIONS]
    _bind(plane, pod, "mig-a")  # kube-scheduler retries after a lost reply: same devices, still bound
    assert plane.pod("twice")["metadata"]["annotations"][names.VGPU_MIG_ALLOCATIONS] == first
    assert plane.bound("twice") == "mig-a"


def test_a_locked_node_makes_a_bind_wait_then_proceed_when_released(plane: Plane) -> None:
    plane.agent.paused = True
    plane.add_node("mig-a", devices("a", 2))
    first, second = _created(plane, "first"), _created(plane, "second")
    wait_for(lambda: plane.scheduler.cache.pod(second["metadata"]["uid"]))
    _bind(plane, first, "mig-a")
    assert _lock(plane, "mig-a").owned_by("default", "first")
    done = threading.Event()
    threading.Thread(target=lambda: (_bind(plane, second, "mig-a"), done.set()), daemon=True).start()
    time.sleep(0.5)
    assert not done.is_set()  # waiting in-process, not failing back to kube-scheduler
    plane.agent.paused = False  # the agent allocates "first" and releases the lock
    assert done.wait(10)
    assert plane.bound("second") == "mig-a"


def test_binds_queued_on_one_node_take_turns_instead_of_racing_for_each_release(plane: Plane) -> None:
    """Six binds to one node while its lock is held: each release lets one of them patch. Were
    they all to wake and patch, every release would cost the losers a 409 and a re-read
    (the full stack's bench measured 12 of each per pod)."""
    plane.agent.paused = True
    plane.add_node("mig-a", devices("a", 2))
    pods = [_created(plane, f"q{i}") for i in range(6)]
    wait_for(lambda: all(plane.scheduler.cache.pod(p["metadata"]["uid"]) for p in pods))
    binder = plane.scheduler.binder
    before = binder.lock_conflicts
    errors: list[Exception] = []

    def bind(pod: dict) -> None:
        try:
            _bind(plane, pod, "mig-a")
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=bind, args=(p,), daemon=True) for p in pods]
    for t in threads:
        t.start()
    wait_for(lambda: _lock(plane, "mig-a") is not None)
    time.sleep(0.5)  # the other five are queued
    plane.agent.paused = False
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert all(plane.bound(p["metadata"]["name"]) == "mig-a" for p in pods)
    assert binder.lock_conflicts - before <= 1, binder.lock_conflicts - before


def test_a_lock_whose_owner_is_gone_or_done_is_taken_at_once(plane: Plane) -> None:
    plane.agent.paused = True
    plane.add_node("mig-a", devices("a", 2))
    stale = codecs.encode_node_lock(codecs.NodeLock(datetime.now(UTC).replace(microsecond=0), "default", "ghost"))
    plane.kube.annotate("nodes", "mig-a", {names.NODE_LOCK: stale})
    pod = _created(plane, "next")
    wait_for(lambda: plane.scheduler.cache.pod(pod["metadata"]["uid"]))
    wait_for(lambda: plane.scheduler.cache.node_lock("mig-a")[0] == stale)
    started = time.monotonic()
    _bind(plane, pod, "mig-a")
    assert time.monotonic() - started < 2
    assert _lock(plane, "mig-a").owned_by("default", "next")


def test_an_expired_lock_is_broken_and_a_live_one_times_out_with_a_reason(plane: Plane) -> None:
    plane.agent.paused = True
    plane.add_node("mig-a", devices("a", 2))
    holder = _created(plane, "holder")
    wait_for(lambda: plane.scheduler.cache.pod(holder["metadata"]["uid"]))
    _bind(plane, holder, "mig-a")  # holds the lock, bind-phase allocating, agent paused
    plane.scheduler.binder.lock_wait_s = 1.0
    waiting = _created(plane, "waiting")
    wait_for(lambda: plane.scheduler.cache.pod(waiting["metadata"]["uid"]))
    try:
        _bind(plane, waiting, "mig-a")
        raise AssertionError("bind should have timed out on the lock")
    except BindError as err:
        assert "locked by default/holder" in str(err) and "kube-scheduler will retry" in str(err)
    assert not plane.bound("waiting")
    assert plane.scheduler.engine.reservation(waiting["metadata"]["uid"]) is None  # released on failure
    old = codecs.NodeLock(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10), "default", "holder")
    plane.kube.annotate("nodes", "mig-a", {names.NODE_LOCK: codecs.encode_node_lock(old)})
    wait_for(lambda: plane.scheduler.cache.node_lock("mig-a")[0] == codecs.encode_node_lock(old))
    _bind(plane, waiting, "mig-a")
    assert plane.bound("waiting") == "mig-a"


def test_a_node_that_no_longer_fits_fails_the_bind_and_keeps_nothing(plane: Plane) -> None:
    plane.agent.paused = True
    plane.add_node("mig-a", devices("a", 1))
    big = [_created(plane, f"big{i}", "40000") for i in range(3)]
    wait_for(lambda: all(plane.scheduler.cache.pod(p["metadata"]["uid"]) for p in big))
    plane.agent.paused = False
    _bind(plane, big[0], "mig-a")
    wait_for(lambda: _lock(plane, "mig-a") is None, what="the agent released the lock")
    _bind(plane, big[1], "mig-a")
    wait_for(lambda: _lock(plane, "mig-a") is None, what="the agent released the lock")
    try:
        _bind(plane, big[2], "mig-a")
        raise AssertionError("a third 3g.40gb cannot fit one A100")
    except BindError as err:
        assert "no longer fits" in str(err)
    assert not plane.bound("big2")
    assert names.VGPU_NODE not in (plane.pod("big2")["metadata"].get("annotations") or {})


def test_a_failed_bind_whose_failed_mark_cannot_be_written_keeps_its_devices_until_the_bind_ttl(
        plane: Plane, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Binding fails and so does the `failed` mark: the pod still claims its devices in its
    annotations, so releasing them at once would let another pod take them while the cache can
    fold the claim back in. They stay reserved until the claim is older than the bind TTL."""
    from hami.k8s import KubeError
    from hami.scheduler import binder as binder_module

    plane.agent.paused = True
    plane.add_node("mig-a", devices("a", 1))
    pod = _created(plane, "unmarked", "40000")
    uid = pod["metadata"]["uid"]
    wait_for(lambda: plane.scheduler.cache.pod(uid))

    def refuse(*_args, **_kw):
        raise KubeError("test", 500, "InternalError", "the API server is failing")

    monkeypatch.setattr(binder_module, "bind_pod", refuse)
    monkeypatch.setattr(plane.scheduler.binder.kube, "annotate", refuse)
    with pytest.raises(BindError, match="the API server is failing"):
        _bind(plane, pod, "mig-a")
    monkeypatch.undo()
    assert plane.pod("unmarked")["metadata"]["annotations"][names.BIND_PHASE] == names.BIND_PHASE_ALLOCATING
    assert plane.scheduler.engine.reservation(uid) is not None  # kept while the annotations claim it
    wait_for(lambda: _lock(plane, "mig-a") is None, what="the bind's node lock released")
    plane.scheduler.cache.bind_ttl_s = 0.0
    plane.scheduler.cache.sweep()
    assert plane.scheduler.engine.reservation(uid) is None  # the claim expired: the sweep frees it
