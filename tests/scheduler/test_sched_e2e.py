"""The full path through the local control plane: pod → our webhook (over TLS, called by the API
server) → kube-scheduler → our /filter, /prioritize, /bind → annotations a node agent can act on."""

from __future__ import annotations

import threading

from kubernetes import client

from hami.api import codecs, names
from tests.scheduler.conftest import A10, Plane, devices, gpu_pod, wait_for


def _ann(plane: Plane, name: str) -> dict[str, str]:
    return plane.pod(name)["metadata"].get("annotations") or {}


def test_a_mig_pod_goes_through_webhook_filter_prioritize_and_bind(plane: Plane) -> None:
    plane.add_node("mig-a", devices("a", 2))
    plane.add_node("core-a", devices("c", 2, A10))
    pod = plane.create(gpu_pod("trainer", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "20000"},
                               annotations={names.VGPU_MODE: "mig"}))
    assert pod["spec"]["schedulerName"] == "hami-scheduler"  # the webhook routed it
    plane.wait_bound("trainer")
    ann = _ann(plane, "trainer")
    assert plane.bound("trainer") == "mig-a" == ann[names.VGPU_NODE]
    (allocation,) = codecs.decode_mig_allocations(ann[names.VGPU_MIG_ALLOCATIONS])
    assert allocation.profile in ("1g.20gb", "2g.20gb") and allocation.gpu_uuid.startswith("GPU-a-")
    (entry,) = codecs.decode_pod_devices(ann[names.VGPU_DEVICES_ALLOCATED])
    assert entry[0].uuid == allocation.gpu_uuid and entry[0].memory_mib > 19000
    assert plane.pod("trainer")["metadata"]["labels"][names.VGPU_NODE] == "mig-a"
    wait_for(lambda: _ann(plane, "trainer").get(names.BIND_PHASE) == names.BIND_PHASE_SUCCESS)


def test_hami_core_mode_less_and_multi_container_pods(plane: Plane) -> None:
    plane.add_node("mig-a", devices("a", 2))
    plane.add_node("core-a", devices("c", 2, A10))
    plane.create(gpu_pod("shared", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"},
                         annotations={names.VGPU_MODE: "hami-core"}))
    plane.create(gpu_pod("any", {"nvidia.com/gpumem": "10000"}))  # the webhook adds nvidia.com/gpu: 1
    plane.create(gpu_pod("multi", {"nvidia.com/gpu": "4", "nvidia.com/gpumem": "10240"},
                         {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "40000"},
                         init=[{"nvidia.com/gpu": "1", "nvidia.com/gpumem": "5000"}]))
    plane.wait_bound("shared", "any", "multi")
    shared = codecs.decode_pod_devices(_ann(plane, "shared")[names.VGPU_DEVICES_ALLOCATED])
    assert shared[0][0].uuid.startswith("GPU-c-") and shared[0][0].memory_mib == 3000 and shared[0][0].cores == 30
    assert plane.bound("any") == "mig-a"  # mode-less: MIG first
    multi = _ann(plane, "multi")
    entries = codecs.decode_pod_devices(multi[names.VGPU_DEVICES_ALLOCATED])
    assert [len(e) for e in entries] == [1, 4, 1]  # init container first, then the two app containers
    mig = codecs.decode_mig_allocations(multi[names.VGPU_MIG_ALLOCATIONS])
    assert sorted(a.container_index for a in mig) == [0, 1, 1, 1, 1, 2]


def test_filter_says_why_a_node_does_not_fit_and_the_pod_waits(plane: Plane) -> None:
    plane.add_node("core-a", devices("c", 1, A10))
    plane.create(gpu_pod("big", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "40000"}))
    wait_for(lambda: any("exceeds" in (c.get("message") or "")
                         for c in (plane.pod("big").get("status") or {}).get("conditions") or []),
             what="an unschedulable condition naming the reason")
    assert not plane.bound("big")


def test_a_pod_placed_by_hami_v29_is_accounted(plane: Plane) -> None:
    """A legacy `[tidx-slot]` entry holds a busy instance whose placement comes from the agent's report."""
    devs = devices("a", 1)
    report = [codecs.RealisedInstance("GPU-a-0", "7g.80gb", codecs.Placement(0, 8), 1, 0,
                                      "MIG-00000000-0000-0000-0000-000000000001", codecs.InstanceState.IN_USE,
                                      pod="legacy-ns/legacy")]
    plane.add_node("mig-a", devs, **{names.NODE_MIG_INSTANCES: codecs.encode_node_mig_instances(report)})
    # it was running before the switch: created where our webhook does not look (it would deny a preset nodeName)
    client.CoreV1Api(plane.kube.api_client).create_namespace(
        {"metadata": {"name": "legacy-ns", "labels": {"hami.io/webhook": "ignore"}}})
    legacy = gpu_pod("legacy", {"nvidia.com/gpu": "1"})
    legacy["metadata"]["annotations"] = {names.VGPU_NODE: "mig-a", names.BIND_PHASE: "success",
                                         names.VGPU_DEVICES_ALLOCATED: "GPU-a-0[3-0],NVIDIA,81920,100:;"}
    legacy["spec"]["nodeName"] = "mig-a"
    plane.create(legacy, "legacy-ns")
    wait_for(lambda: plane.scheduler.engine.snapshot()["GPU-a-0"]["in_use"] == [("7g.80gb", 0)],
             what="the legacy pod's instance in use")
    plane.create(gpu_pod("new", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000"}))
    wait_for(lambda: "MIG" in str((plane.pod("new").get("status") or {}).get("conditions")),
             what="the new pod reported unschedulable for want of a MIG placement")
    assert not plane.bound("new")


def test_two_hundred_pods_at_once_never_overcommit_and_survive_a_restart(plane: Plane) -> None:
    for n in range(2):
        plane.add_node(f"mig-{n}", devices(f"m{n}", 2))
        plane.add_node(f"core-{n}", devices(f"c{n}", 2, A10))
    sizes = ["5000", "10240", "20000", "3000"]
    pods = [f"p{i:03d}" for i in range(200)]

    def submit(chunk: list[str]) -> None:
        for name in chunk:
            i = int(name[1:])
            plane.create(gpu_pod(name, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": sizes[i % 4]}))

    threads = [threading.Thread(target=submit, args=(pods[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: sum(1 for p in pods if plane.bound(p)) >= 20, 60, "a first batch bound")
    plane.restart_scheduler()  # mid-burst: the new one rebuilds from annotations before answering
    wait_for(lambda: _settled(plane, pods), 120, "every pod bound or waiting with a reason")
    _check_no_overcommit(plane, pods)


def _settled(plane: Plane, pods: list[str]) -> bool:
    for name in pods:
        pod = plane.pod(name)
        if (pod.get("spec") or {}).get("nodeName"):
            continue
        if not any(c.get("reason") == "Unschedulable" for c in (pod.get("status") or {}).get("conditions") or []):
            return False
    return True


def _check_no_overcommit(plane: Plane, pods: list[str]) -> None:
    mig: dict[str, list[tuple[int, int]]] = {}
    core_mem: dict[str, int] = {}
    core_tasks: dict[str, int] = {}
    bound = 0
    for name in pods:
        pod = plane.pod(name)
        if not (pod.get("spec") or {}).get("nodeName"):
            continue
        bound += 1
        ann = pod["metadata"]["annotations"]
        if names.VGPU_MIG_ALLOCATIONS in ann:
            for a in codecs.decode_mig_allocations(ann[names.VGPU_MIG_ALLOCATIONS]):
                mig.setdefault(a.gpu_uuid, []).append((a.placement.start, a.placement.size))
        else:
            for entry in codecs.decode_pod_devices(ann[names.VGPU_DEVICES_ALLOCATED]):
                for d in entry:
                    core_mem[d.uuid] = core_mem.get(d.uuid, 0) + d.memory_mib
                    core_tasks[d.uuid] = core_tasks.get(d.uuid, 0) + 1
    assert bound >= 30  # 4 MIG GPUs and 4 A10s hold about 36 of these pods; the rest wait with a reason
    snap = plane.scheduler.engine.snapshot()
    in_use = sum(len(v["in_use"]) for v in snap.values() if v["kind"] == "mig")
    assert in_use == sum(len(spans) for spans in mig.values())  # the restarted engine holds exactly these
    for gpu, spans in mig.items():
        used = [0] * 8
        for start, size in spans:
            for s in range(start, start + size):
                used[s] += 1
        assert max(used) <= 1, f"{gpu}: overlapping MIG placements {sorted(spans)}"
    for gpu, mem in core_mem.items():
        assert mem <= 23028, f"{gpu}: {mem} MiB over-committed"
        assert core_tasks[gpu] <= 10
