"""Allocate through the real gRPC path: the simulated kubelet admits decided pods, our agent
realises the decision; assertions on what kubelet received, the instances NVML has afterwards
and the annotations written."""

from __future__ import annotations

import os
import stat
import time

import pytest

from hami.api import names
from hami.api.codecs import decode_mig_allocations, decode_node_mig_instances
from hami.deviceplugin.allocate import AllocateError
from hami.sim import fakenvml
from tests.deviceplugin.conftest import NODE, Dev, wait_for


def instances(node, gpu: int = 0) -> list[tuple[int, int, int]]:
    """(profile id, start, size) of every GPU instance on a GPU."""
    return sorted((gi.profile_id, gi.start, gi.size) for i, gi in node.fake.instances() if i == gpu)


def lock_value(node) -> str | None:
    return node.node_annotations().get(names.NODE_LOCK)


# -- MIG --------------------------------------------------------------------------------------------


def test_mig_allocate_creates_the_decided_instance_and_records_it(mig_node) -> None:
    node = mig_node
    node.start_agent()
    node.decided_pod("p", [[Dev(0, 40192, 100, "3g.40gb", 4, 4)]])
    assert node.wait_phase("p", "Running", "Failed") == "Running"
    assert instances(node) == [(9, 4, 4)]  # 3g.40gb's profile id on A100-80GB, exactly at slice 4
    [allocation] = decode_mig_allocations(node.annotations("p")[names.VGPU_MIG_ALLOCATIONS])
    gi = next(gi for _, gi in node.fake.instances())
    assert allocation.mig_uuid == gi.cis[0].uuid and allocation.gpu_instance_id == gi.id
    assert allocation.compute_instance_id == gi.cis[0].id
    env = node.runtime("p").containers["c0"].envs
    assert env == {"NVIDIA_VISIBLE_DEVICES": allocation.mig_uuid}  # no hami-core env or mounts on MIG
    assert node.runtime("p").containers["c0"].mounts == []
    ann = node.annotations("p")
    assert ann[names.VGPU_DEVICES_TO_ALLOCATE] == ";" and ann[names.BIND_PHASE] == "success"
    assert lock_value(node) is None
    [published] = decode_node_mig_instances(node.node_annotations()[names.NODE_MIG_INSTANCES])
    assert (published.mig_uuid, published.state.value, published.pod) == (allocation.mig_uuid, "in-use", "default/p")
    assert published.pod_uid == node.pod("p")["metadata"]["uid"]  # the identity the scheduler matches on


def test_allocate_writes_the_node_once_republishing_and_releasing_the_lock_together(mig_node) -> None:
    """A bind waiting for the node lock watches the node: two writes (lock released, then
    instances republished) would make its conditional lock patch lose to the second one."""
    node = mig_node
    node.start_agent(sync_interval=3600.0, handshake_interval=3600.0)  # no periodic writes meanwhile
    wait_for(lambda: names.NODE_MIG_INSTANCES in node.node_annotations(), what="the first publish")
    time.sleep(0.2)  # the server records a request after answering it
    start = len(node.api.requests)
    node.decided_pod("once", [[Dev(0, 40192, 100, "3g.40gb", 4, 4)]])
    assert node.wait_phase("once", "Running", "Failed") == "Running"
    time.sleep(0.2)
    node_writes = [r for r in list(node.api.requests)[start:] if r[0] == "PATCH" and r[1].endswith("/nodes/" + NODE)]
    assert [code for _m, _p, code in node_writes] == [200]
    assert lock_value(node) is None
    [published] = decode_node_mig_instances(node.node_annotations()[names.NODE_MIG_INSTANCES])
    assert published.pod == "default/once"


def test_allocate_reuses_what_get_preferred_allocation_read_moments_before(mig_node) -> None:
    """kubelet asks for the preferred allocation, then allocates: the pods and the node read for
    the first answer serve the second, so an admission reads the API once (every bind queued on
    the node waits for this path)."""
    node = mig_node
    node.start_agent(sync_interval=3600.0, handshake_interval=3600.0)
    wait_for(lambda: names.NODE_MIG_INSTANCES in node.node_annotations(), what="the first publish")
    time.sleep(0.2)
    start = len(node.api.requests)
    node.decided_pod("pre", [[Dev(0, 19968, 28, "2g.20gb", 0, 2)]])
    assert node.wait_phase("pre", "Running", "Failed") == "Running"
    time.sleep(0.2)
    calls = list(node.api.requests)[start:]
    reads = [c for c in calls if c[0] == "GET"]
    assert len(reads) == 2, calls  # one list of the node's pods and one node, for both calls
    assert node.annotations("pre")[names.BIND_PHASE] == "success" and lock_value(node) is None


def test_multi_instance_and_multi_container_pods(mig_node) -> None:
    node = mig_node
    node.start_agent()
    node.decided_pod("multi", [
        [Dev(0, 9728, 100, "1g.10gb", 0, 1), Dev(1, 19968, 100, "2g.20gb", 2, 2)],
        [Dev(0, 19968, 100, "2g.20gb", 4, 2)],
    ], init=[[Dev(1, 9728, 100, "1g.10gb", 6, 1)]])
    assert node.wait_phase("multi", "Running", "Failed") == "Running"
    assert instances(node, 0) == [(14, 4, 2), (19, 0, 1)]
    assert instances(node, 1) == [(14, 2, 2), (19, 6, 1)]
    allocations = decode_mig_allocations(node.annotations("multi")[names.VGPU_MIG_ALLOCATIONS])
    assert all(a.realised for a in allocations) and len(allocations) == 4
    by_slot = {(a.container_index, a.device_index): a.mig_uuid for a in allocations}
    containers = node.runtime("multi").containers
    assert containers["init0"].envs["NVIDIA_VISIBLE_DEVICES"] == by_slot[(0, 0)]
    assert containers["c0"].envs["NVIDIA_VISIBLE_DEVICES"] == f"{by_slot[(1, 0)]},{by_slot[(1, 1)]}"
    assert containers["c1"].envs["NVIDIA_VISIBLE_DEVICES"] == by_slot[(2, 0)]
    assert node.annotations("multi")[names.VGPU_DEVICES_TO_ALLOCATE] == ";;;"
    assert lock_value(node) is None


def test_running_1g_instances_are_untouched_by_a_3g_in_free_slices(mig_node) -> None:
    node = mig_node
    node.start_agent()
    for i, start in enumerate((0, 1, 2)):
        node.decided_pod(f"small{i}", [[Dev(0, 9728, 100, "1g.10gb", start, 1)]])
        assert node.wait_phase(f"small{i}", "Running", "Failed") == "Running"
    before = {gi.id: gi.cis[0].uuid for _, gi in node.fake.instances()}
    node.decided_pod("big", [[Dev(0, 40192, 100, "3g.40gb", 4, 4)]])
    assert node.wait_phase("big", "Running", "Failed") == "Running"
    after = {gi.id: gi.cis[0].uuid for _, gi in node.fake.instances()}
    assert {k: after[k] for k in before} == before  # same GI ids, same MIG uuids
    assert instances(node) == [(9, 4, 4), (19, 0, 1), (19, 1, 1), (19, 2, 1)]


def test_idle_instances_blocking_the_decided_placement_are_destroyed_first(mig_node) -> None:
    node = mig_node
    agent = node.start_agent()
    for i, start in enumerate((4, 5)):
        node.decided_pod(f"old{i}", [[Dev(0, 9728, 100, "1g.10gb", start, 1)]])
        node.wait_phase(f"old{i}", "Running")
    node.delete_pod("old0")
    node.delete_pod("old1")
    agent.sync()
    idle = decode_node_mig_instances(node.node_annotations()[names.NODE_MIG_INSTANCES])
    assert [i.state.value for i in idle] == ["idle", "idle"]  # idle, still there (lazy)
    node.decided_pod("big", [[Dev(0, 40192, 100, "3g.40gb", 4, 4)]])
    assert node.wait_phase("big", "Running", "Failed") == "Running"
    assert instances(node) == [(9, 4, 4)]


def test_a_burst_of_same_size_pods_reuses_idle_instances(mig_node) -> None:
    node = mig_node
    agent = node.start_agent()
    for i in range(3):
        node.decided_pod(f"a{i}", [[Dev(0, 9728, 100, "1g.10gb", i, 1)]])
        node.wait_phase(f"a{i}", "Running")
    first = {gi.start: (gi.id, gi.cis[0].uuid) for _, gi in node.fake.instances()}
    for i in range(3):
        node.delete_pod(f"a{i}")
    agent.sync()
    for i in range(3):
        node.decided_pod(f"b{i}", [[Dev(0, 9728, 100, "1g.10gb", i, 1)]])
        assert node.wait_phase(f"b{i}", "Running", "Failed") == "Running"
    second = {gi.start: (gi.id, gi.cis[0].uuid) for _, gi in node.fake.instances()}
    assert second == first  # reused: no instance destroyed or created
    uuids = [decode_mig_allocations(node.annotations(f"b{i}")[names.VGPU_MIG_ALLOCATIONS])[0].mig_uuid
             for i in range(3)]
    assert uuids == [first[i][1] for i in range(3)]


def test_an_instance_a_live_pod_uses_is_never_taken(mig_node) -> None:
    node = mig_node
    node.start_agent()
    node.decided_pod("holder", [[Dev(0, 40192, 100, "3g.40gb", 0, 4)]])
    node.wait_phase("holder", "Running")
    node.decided_pod("stale", [[Dev(0, 9728, 100, "1g.10gb", 1, 1)]])  # overlaps the holder's slices
    assert node.wait_phase("stale", "Running", "Failed") == "Failed"
    assert "which pod default/holder uses" in node.pod("stale")["status"]["message"]
    assert instances(node) == [(9, 0, 4)]
    assert node.annotations("stale")[names.BIND_PHASE] == "failed" and lock_value(node) is None


def test_an_idle_instance_with_a_foreign_process_is_not_reused_or_destroyed(mig_node) -> None:
    node = mig_node
    agent = node.start_agent()
    node.decided_pod("a", [[Dev(0, 9728, 100, "1g.10gb", 3, 1)]])
    node.wait_phase("a", "Running")
    mig_uuid = decode_mig_allocations(node.annotations("a")[names.VGPU_MIG_ALLOCATIONS])[0].mig_uuid
    node.delete_pod("a")
    agent.sync()
    node.fake.attach(mig_uuid, pid=4242)  # someone outside Kubernetes runs on it
    node.decided_pod("b", [[Dev(0, 9728, 100, "1g.10gb", 3, 1)]])
    assert node.wait_phase("b", "Running", "Failed") == "Failed"
    assert "4242" in node.pod("b")["status"]["message"]
    node.decided_pod("c", [[Dev(0, 19968, 100, "2g.20gb", 2, 2)]])
    assert node.wait_phase("c", "Running", "Failed") == "Failed"
    assert any(gi.cis and gi.cis[0].uuid == mig_uuid for _, gi in node.fake.instances())


# -- hami-core ----------------------------------------------------------------------------------------


def test_hami_core_env_and_mounts(core_node) -> None:
    node = core_node
    node.start_agent()
    node.decided_pod("share", [[Dev(0, 3000, 30), Dev(1, 5000, 30)]])
    assert node.wait_phase("share", "Running", "Failed") == "Running"
    c = node.runtime("share").containers["c0"]
    uuids = [node.uuid(0), node.uuid(1)]
    assert c.envs["NVIDIA_VISIBLE_DEVICES"] == ",".join(uuids)
    assert c.envs["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m" and c.envs["CUDA_DEVICE_MEMORY_LIMIT_1"] == "5000m"
    assert c.envs["CUDA_DEVICE_SM_LIMIT"] == "30"
    assert c.envs["CUDA_DEVICE_MEMORY_SHARED_CACHE"].startswith("/usr/local/vgpu/")
    assert c.envs["CUDA_DEVICE_MEMORY_SHARED_CACHE"].endswith(".cache")
    assert "CUDA_OVERSUBSCRIBE" not in c.envs
    hook = node.options.hook_path / "vgpu"
    uid = node.pod("share")["metadata"]["uid"]
    mounts = {m["containerPath"]: (m["hostPath"], m["readOnly"]) for m in c.mounts}
    assert mounts == {
        "/usr/local/vgpu/libvgpu.so": (str(hook / "libvgpu.so"), True),
        "/usr/local/vgpu": (str(hook / "containers" / f"{uid}_c0"), False),
        "/tmp/vgpulock": (str(node.options.vgpu_lock_dir), False),
        "/etc/ld.so.preload": (str(hook / "ld.so.preload"), True),
    }
    cache = hook / "containers" / f"{uid}_c0"
    assert cache.is_dir() and stat.S_IMODE(os.stat(cache).st_mode) == 0o777
    assert node.annotations("share")[names.BIND_PHASE] == "success"
    assert node.fake.instances() == []


def test_hami_core_oversubscription_and_disabled_control(tmp_path, monkeypatch) -> None:
    from tests.deviceplugin.conftest import make_node, nodeconfig

    config = nodeconfig(devicememoryscaling=2, libcudaloglevel=3, disablecorelimit=True)
    gen = make_node(tmp_path, monkeypatch, ["A10"], config)
    node = next(gen)
    try:
        node.start_agent()
        node.decided_pod("over", [[Dev(0, 30000, 0)]], env={"CUDA_DISABLE_CONTROL": "true"})
        assert node.wait_phase("over", "Running", "Failed") == "Running"
        c = node.runtime("over").containers["c0"]
        assert c.envs["CUDA_OVERSUBSCRIBE"] == "true" and c.envs["LIBCUDA_LOG_LEVEL"] == "3"
        assert c.envs["GPU_CORE_UTILIZATION_POLICY"] == "disable"
        assert "/etc/ld.so.preload" not in {m["containerPath"] for m in c.mounts}
    finally:
        gen.close()


def test_mixed_node_serves_mig_and_hami_core_pods(mig_node) -> None:
    node = mig_node
    node.start_agent()
    node.decided_pod("m", [[Dev(0, 19968, 100, "2g.20gb", 0, 2)]])
    node.decided_pod("h", [[Dev(2, 8000, 50)]], lock=False)
    assert node.wait_phase("m", "Running", "Failed") == "Running"
    assert node.wait_phase("h", "Running", "Failed") == "Running"
    assert node.runtime("h").containers["c0"].envs["CUDA_DEVICE_MEMORY_LIMIT_0"] == "8000m"
    assert node.runtime("m").containers["c0"].envs["NVIDIA_VISIBLE_DEVICES"].startswith("MIG-")


# -- which pod -------------------------------------------------------------------------------------


def test_without_a_lock_two_matching_pods_fail_naming_both(core_node) -> None:
    node = core_node
    agent = node.start_agent()
    node.kubelet.stop()  # both pods bound before any admission: call Allocate as kubelet would
    node.decided_pod("x", [[Dev(0, 1000, 10)]], lock=False)
    node.decided_pod("y", [[Dev(0, 1000, 10)]], lock=False)
    with pytest.raises(AllocateError) as failed:
        agent.allocator.allocate([f"{node.uuid(0)}-3"])
    message = str(failed.value)
    assert "default/x" in message and "default/y" in message and "node lock" in message
    node.lock("y")  # with the lock, the owner is the pod
    response = agent.allocator.allocate([f"{node.uuid(0)}-3"])
    assert response.envs["NVIDIA_VISIBLE_DEVICES"] == node.uuid(0)
    assert node.annotations("y")[names.BIND_PHASE] == "success" and lock_value(node) is None


def test_without_a_lock_the_one_matching_pod_is_allocated(core_node) -> None:
    node = core_node
    node.start_agent()
    node.decided_pod("solo", [[Dev(1, 2000, 20)]], lock=False)
    assert node.wait_phase("solo", "Running", "Failed") == "Running"
    assert node.runtime("solo").containers["c0"].envs["NVIDIA_VISIBLE_DEVICES"] == node.uuid(1)


def test_a_gpu_pod_without_a_decision_fails_saying_so(core_node) -> None:
    node = core_node
    node.start_agent()
    node.store.create("pods", "default", {"metadata": {"name": "bare"}, "spec": {
        "nodeName": "gpu-node", "containers": [{"name": "c", "image": "x",
                                               "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}})
    assert node.wait_phase("bare", "Running", "Failed") == "Failed"
    message = node.pod("bare")["status"]["message"]
    assert "default/bare" in message and "no scheduling decision" in message and "webhook" in message


def test_a_decision_that_disagrees_with_the_request_fails_and_releases_the_lock(core_node) -> None:
    node = core_node
    node.start_agent()
    node.decided_pod("odd", [[Dev(0, 1000, 10), Dev(1, 1000, 10)]], counts=[1])  # kubelet asks for 1
    assert node.wait_phase("odd", "Running", "Failed") == "Failed"
    assert "decided 2 device(s) but kubelet asks for 1" in node.pod("odd")["status"]["message"]
    assert node.annotations("odd")[names.BIND_PHASE] == "failed" and lock_value(node) is None
    events = node.store.list("events", "default")["items"]
    assert any(e["reason"] == "AllocateFailed" and "kubelet asks for 1" in e["message"] for e in events)


def test_preferred_allocation_steers_kubelet_to_the_decided_gpu(core_node) -> None:
    node = core_node
    node.start_agent()
    node.decided_pod("steer", [[Dev(1, 1000, 10)]])
    node.wait_phase("steer", "Running")
    ids = node.runtime("steer").containers["c0"].device_ids["nvidia.com/gpu"]
    assert ids and all(i.startswith(node.uuid(1)) for i in ids)


def test_node_filterdevices_and_unknown_gpu(tmp_path, monkeypatch) -> None:
    from tests.deviceplugin.conftest import make_node, nodeconfig

    gen = make_node(tmp_path, monkeypatch, ["A10", "A10"],
                    nodeconfig(filterdevices={"index": [1]}))
    node = next(gen)
    try:
        node.start_agent()
        wait_for(lambda: node.kubelet.devices("nvidia.com/gpu"))
        assert all(d.startswith(node.uuid(0)) for d in node.kubelet.devices("nvidia.com/gpu"))
        node.decided_pod("filtered", [[Dev(1, 1000, 10)]])
        assert node.wait_phase("filtered", "Running", "Failed") == "Failed"
        assert f"GPU {node.uuid(1)} is not registered" in node.pod("filtered")["status"]["message"]
    finally:
        gen.close()


def test_nvml_processes_attach_to_the_allocated_mig_device(mig_node) -> None:
    node = mig_node
    node.start_agent()
    node.decided_pod("p", [[Dev(1, 9728, 100, "1g.10gb", 5, 1)]])
    node.wait_phase("p", "Running")
    state = node.fake.read()
    [proc] = state.gpus[1].procs
    gi = state.gpus[1].gis[0]
    assert (proc.gi, proc.ci) == (gi.id, gi.cis[0].id)
    assert fakenvml.NO_INSTANCE not in (proc.gi, proc.ci)


def test_a_lock_whose_owner_is_gone_or_finished_is_released(core_node) -> None:
    node = core_node
    agent = node.start_agent()
    node.lock("ghost")  # the pod was deleted after the scheduler took the lock
    agent.sync()
    assert lock_value(node) is None
    node.decided_pod("done", [[Dev(0, 1000, 10)]])
    node.wait_phase("done", "Running")
    node.lock("done")  # a lock left behind by a finished pod
    node.store.patch("pods", "default", "done", {"status": {"phase": "Succeeded"}}, "application/merge-patch+json",
                     "status")
    node.lock("other")
    node.decided_pod("other", [[Dev(1, 1000, 10)]], lock=False, bind=False)
    agent.sync()
    assert "other" in lock_value(node)  # a lock whose owner still awaits binding stays
    node.lock("done")
    agent.sync()
    assert lock_value(node) is None
