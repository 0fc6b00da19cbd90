"""Hollow nodes (hami.sim.hollow): registration as the real agent writes it over the simulated NVML,
Allocate refusing what NVML or the agent would refuse, and pods run through the real scheduler."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hami.api import codecs, names
from hami.api.codecs import MigAllocation, Placement
from hami.deviceplugin.inventory import Inventory
from hami.deviceplugin.register import node_devices, plan
from hami.mig import MigManager
from hami.scheduler.app import Scheduler, SchedulerConfig
from hami.sim import fakenvml
from hami.sim.apiserver import ApiServer
from hami.sim.cluster import hami_extender
from hami.sim.hollow import AllocateRefused, HollowFleet, HollowNode, hollow_specs
from hami.sim.kubescheduler import KubeScheduler
from hami.sim.kubescheduler import SchedulerConfig as KubeSchedulerConfig
from hami.sim.soak import check_invariants
from tests.nvml.helpers import opened

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


@pytest.mark.parametrize(("model", "mode"), [("A100-SXM4-80GB", "mig"), ("H800-SXM5-80GB", "mig"),
                                             ("A10", "hami-core")])
def test_registration_is_what_the_real_agent_publishes_over_the_simulated_nvml(tmp_path: Path, model: str,
                                                                              mode: str) -> None:
    (spec,) = hollow_specs([(1, model, 2, mode)])
    hollow = HollowNode(spec, 0)
    fake = fakenvml.FakeNode.create(tmp_path / "state", [fakenvml.GpuSpec(model, mig=mode == "mig")] * 2,
                                    node=spec.name)
    with opened(fake) as nvml:
        real_gpus = Inventory(nvml, MigManager(nvml)).read()
        real = node_devices(plan(real_gpus, hollow.config, ()), hollow.config)
    ours = codecs.decode_node_register(hollow.register_annotation())
    # the same devices but for identity (uuids come from the state file) and the PCI-derived NUMA node
    assert [dataclasses.replace(d, id="GPU-x", numa=0) for d in ours] == \
        [dataclasses.replace(d, id="GPU-x", numa=0) for d in real]
    assert all(d.mig_profiles for d in ours) == (mode == "mig")


def _decision(node: HollowNode, *mig: tuple[int, str, int, int], core: tuple[int, int, int] | None = None,
              name: str = "p") -> dict[str, Any]:
    """A bound pod carrying a binder's decision: MIG (gpu index, profile, start, size) or a hami-core share."""
    devices, allocations = [], []
    for di, (gpu, profile, start, size) in enumerate(mig):
        uuid = node.gpus[gpu].uuid
        devices.append(codecs.ContainerDevice(uuid, "NVIDIA", 10_000, 0))
        allocations.append(MigAllocation(0, di, uuid, profile, Placement(start, size)))
    if core is not None:
        gpu, memory, cores = core
        devices.append(codecs.ContainerDevice(node.gpus[gpu].uuid, "NVIDIA", memory, cores))
    ann = {names.VGPU_DEVICES_TO_ALLOCATE: codecs.encode_pod_devices([devices]),
           names.VGPU_DEVICES_ALLOCATED: codecs.encode_pod_devices([devices]),
           names.BIND_PHASE: names.BIND_PHASE_ALLOCATING}
    if allocations:
        ann[names.VGPU_MIG_ALLOCATIONS] = codecs.encode_mig_allocations(allocations)
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "annotations": ann},
            "spec": {"nodeName": node.name, "containers": [{"name": "c", "image": "cuda"}]},
            "status": {"phase": "Pending"}}


def test_allocate_realises_reuses_and_refuses_as_the_agent_and_nvml_would() -> None:
    (spec,) = hollow_specs([(1, "A100-SXM4-80GB", 2, "mig")])
    node = HollowNode(spec, 0)
    done = node.allocate(_decision(node, (0, "3g.40gb", 0, 4), name="a"), NOW)
    assert done[names.BIND_PHASE] == names.BIND_PHASE_SUCCESS
    assert codecs.decode_pod_devices(done[names.VGPU_DEVICES_TO_ALLOCATE]) == ((),)
    (a,) = codecs.decode_mig_allocations(done[names.VGPU_MIG_ALLOCATIONS])
    assert a.realised and a.gpu_instance_id == 1
    before = node.instances_annotation()
    for bad, why in [((0, "1g.10gb", 0, 1), "which pod default/a uses"),  # over an instance in use
                     ((0, "3g.40gb", 2, 4), "cannot start at memory slice 2"),  # not a legal placement
                     ((0, "9g.90gb", 0, 8), "has no profile")]:
        with pytest.raises(AllocateRefused, match=why):
            node.allocate(_decision(node, (1, "1g.10gb", 0, 1), bad, name="b"), NOW)
        assert node.instances_annotation() == before  # GPU 1's instance was rolled back
    node.release("default/a", NOW)
    (idle,) = codecs.decode_node_mig_instances(node.instances_annotation())
    assert idle.state == codecs.InstanceState.IDLE and idle.mig_uuid == a.mig_uuid
    again = node.allocate(_decision(node, (0, "3g.40gb", 0, 4), name="c"), NOW)  # the idle one, reused
    assert codecs.decode_mig_allocations(again[names.VGPU_MIG_ALLOCATIONS])[0].mig_uuid == a.mig_uuid
    node.release("default/c", NOW)
    node.allocate(_decision(node, (0, "1g.10gb", 2, 1), name="d"), NOW)  # the idle 3g is in the way: destroyed
    assert [(i.profile, i.placement.start) for i in codecs.decode_node_mig_instances(node.instances_annotation())] \
        == [("1g.10gb", 2)]
    assert node.check() == []


def test_hami_core_shares_are_held_to_the_gpu() -> None:
    (spec,) = hollow_specs([(1, "A10", 1, "hami-core")])
    node = HollowNode(spec, 0)
    node.allocate(_decision(node, core=(0, 20_000, 50), name="a"), NOW)
    with pytest.raises(AllocateRefused, match="MiB free"):
        node.allocate(_decision(node, core=(0, 4_000, 10), name="b"), NOW)
    with pytest.raises(AllocateRefused, match="% free"):
        node.allocate(_decision(node, core=(0, 1_000, 60), name="c"), NOW)
    assert node.truth()[node.gpus[0].uuid] == {"kind": "hami-core", "tasks": 1, "used_mem": 20_000, "used_cores": 50}
    with pytest.raises(AllocateRefused, match="is not in MIG mode"):
        node.allocate(_decision(node, (0, "1g.10gb", 0, 1), name="e"), NOW)


@contextlib.contextmanager
def _plane(tmp_path: Path, groups) -> Iterator[tuple[ApiServer, Scheduler, HollowFleet]]:
    api = ApiServer().start()
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    fleet = HollowFleet(api.store, hollow_specs(groups), handshake_every=5.0).start()
    scheduler = Scheduler(SchedulerConfig(kubeconfig=str(kubeconfig), http_bind="127.0.0.1:0",
                                          metrics_bind="127.0.0.1:0", lock_wait_s=10.0)).start()
    kube_scheduler: KubeScheduler | None = None
    try:
        wait_for(lambda: scheduler.ready()[0] and all(scheduler.cache.has_gpus(n) for n in fleet.nodes),
                 what="the scheduler synced with every hollow node's GPUs")
        kube_scheduler = KubeScheduler(api.store, KubeSchedulerConfig(
            extenders=(hami_extender(scheduler.server.url),), initial_backoff=0.2, max_backoff=1.0)).start()
        yield api, scheduler, fleet
    finally:
        if kube_scheduler is not None:
            kube_scheduler.stop()
        fleet.stop()
        scheduler.stop()
        api.stop()


def _pod(name: str, mode: str, **limits: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {names.VGPU_MODE: mode}},
            "spec": {"schedulerName": names.SCHEDULER_NAME,
                     "containers": [{"name": "c", "image": "cuda", "resources": {"limits": dict(limits)}}]}}


def test_pods_run_on_hollow_nodes_through_the_real_scheduler_and_every_view_agrees(tmp_path: Path) -> None:
    groups = [(2, "A100-SXM4-80GB", 2, "mig"), (1, "H800-SXM5-80GB", 2, "mig"), (1, "A10", 2, "hami-core")]
    with _plane(tmp_path, groups) as (api, scheduler, fleet):
        store = api.store
        pods = {"small-0": _pod("small-0", "mig", **{"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000"}),
                "small-1": _pod("small-1", "mig", **{"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000"}),
                "half": _pod("half", "mig", **{"nvidia.com/gpu": "1", "nvidia.com/gpumem": "40000"}),
                "pair": _pod("pair", "mig", **{"nvidia.com/gpu": "2", "nvidia.com/gpumem": "80000"}),
                "share-0": _pod("share-0", "hami-core", **{"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8000",
                                                           "nvidia.com/gpucores": "30"}),
                "share-1": _pod("share-1", "hami-core", **{"nvidia.com/gpu": "2", "nvidia.com/gpumem": "6000",
                                                           "nvidia.com/gpucores": "20"})}
        for body in pods.values():
            store.create("pods", "default", body)

        def phases() -> dict[str, str]:
            return {n: (store.get("pods", "default", n).get("status") or {}).get("phase", "") for n in pods}

        wait_for(lambda: set(phases().values()) == {"Running"}, 60, "every pod Running")
        assert fleet.stats.allocated == len(pods) and fleet.violations == []
        for name in pods:
            ann = store.get("pods", "default", name)["metadata"]["annotations"]
            assert ann[names.BIND_PHASE] == names.BIND_PHASE_SUCCESS
            assert all(a.realised for a in codecs.decode_mig_allocations(ann.get(names.VGPU_MIG_ALLOCATIONS, "")))
        in_use = [i for n in store.list("nodes")["items"] for i in codecs.decode_node_mig_instances(
            n["metadata"]["annotations"].get(names.NODE_MIG_INSTANCES, ""))]
        assert sorted(i.pod for i in in_use) == ["default/half", "default/pair", "default/pair", "default/small-0",
                                                 "default/small-1"]
        assert not any(names.NODE_LOCK in n["metadata"]["annotations"] for n in store.list("nodes")["items"])

        fleet.finish("default", "half")  # its instance turns idle, the pod is gone
        wait_for(lambda: not any(p["metadata"]["name"] == "half" for p in store.list("pods", "default")["items"]))
        assert fleet.drain()
        idle = [i for n in store.list("nodes")["items"] for i in codecs.decode_node_mig_instances(
            n["metadata"]["annotations"].get(names.NODE_MIG_INSTANCES, "")) if i.state == codecs.InstanceState.IDLE]
        assert [i.profile for i in idle] in (["3g.40gb"], ["4g.40gb"])

        def metrics() -> str:
            return scheduler.metrics.render()

        wait_for(lambda: not check_invariants(store, fleet, metrics)["violations"], 15,
                 "the live scheduler caught up with the nodes")
        report = check_invariants(store, fleet, metrics)
        assert report["mig_in_use"] == 4 and report["mig_idle"] == 1 and report["core_shares"] == 3
        assert report["gpus_checked_against_live_scheduler"] == 8


def test_a_refused_decision_fails_the_pod_as_kubelet_does_and_releases_the_lock(tmp_path: Path) -> None:
    api = ApiServer().start()
    try:
        fleet = HollowFleet(api.store, hollow_specs([(1, "A100-SXM4-80GB", 1, "mig")])).start()
        node = next(iter(fleet.nodes.values()))
        lock = codecs.encode_node_lock(codecs.NodeLock(NOW, "default", "bad"))
        api.store.patch("nodes", None, node.name, {"metadata": {"annotations": {names.NODE_LOCK: lock}}})
        body = _decision(node, (0, "3g.40gb", 1, 4), name="bad")  # 3g.40gb starts at 0 or 4 only
        del body["metadata"]["uid"], body["status"]
        api.store.create("pods", "default", body)
        wait_for(lambda: (api.store.get("pods", "default", "bad").get("status") or {}).get("phase") == "Failed")
        pod = api.store.get("pods", "default", "bad")
        assert pod["status"]["reason"] == "UnexpectedAdmissionError" and "memory slice 1" in pod["status"]["message"]
        assert pod["metadata"]["annotations"][names.BIND_PHASE] == names.BIND_PHASE_FAILED
        wait_for(lambda: names.NODE_LOCK not in api.store.get("nodes", None, node.name)["metadata"]["annotations"])
        assert fleet.take_failed() == [("default", "bad")] and len(fleet.check()) == 1
        fleet.stop()
    finally:
        api.stop()
