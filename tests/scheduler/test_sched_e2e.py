"""The full path, on our embedded control plane and on the real one (the same tests, `both_planes`):
pod → our webhook (over TLS, called by the API server through a MutatingWebhookConfiguration) →
kube-scheduler → our /filter, /prioritize, /bind → annotations a node agent acts on → the scripted
agent's Allocate. Where the planes disagree, the embedded one is wrong (docs/local-control-plane.md)."""

from __future__ import annotations

import threading

from hami.api import codecs, names
from tests.scheduler.conftest import A10, Plane, both_planes, devices, gpu_pod, wait_for

pytestmark = both_planes


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
    registry = plane.scheduler.metrics.registry
    assert registry.get_sample_value("hami_scheduler_mig_instances_decided_total", {"action": "created"}) == 1
    assert registry.get_sample_value("hami_scheduler_decisions_total", {"kind": "mig"}) == 1


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
    plane.namespace("legacy-ns", {"hami.io/webhook": "ignore"})
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


def _zone(zone: str) -> dict[str, str]:
    return {"topology.kubernetes.io/zone": zone}


def test_required_node_affinity_and_our_filter_agree(plane: Plane) -> None:
    """kube-scheduler's NodeAffinity filters before us; we pick among what is left."""
    plane.add_node("mig-a", devices("a", 1), labels=_zone("a"))
    plane.add_node("mig-b", devices("b", 1), labels=_zone("b"))
    plane.add_node("core-b", devices("c", 1, A10), labels=_zone("b"))
    mig = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000"}
    plane.create(gpu_pod("first", mig, annotations={names.VGPU_MODE: "mig"},
                         nodeSelector={"kubernetes.io/hostname": "mig-a"}))
    plane.wait_bound("first")
    # binpack alone would put the next MIG pod beside `first`, on mig-a
    plane.create(gpu_pod("packed", mig, annotations={names.VGPU_MODE: "mig"}))
    plane.wait_bound("packed")
    assert plane.bound("packed") == "mig-a"
    # zone b only: core-b passes kube-scheduler's affinity but not our MIG filter; mig-b passes both
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["b"]}]}]}}}
    plane.create(gpu_pod("pinned", mig, annotations={names.VGPU_MODE: "mig"}, affinity=affinity))
    plane.wait_bound("pinned")
    assert plane.bound("pinned") == "mig-b"
    # and where they cannot agree the pod waits, saying why on each side
    plane.create(gpu_pod("nowhere", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"},
                         annotations={names.VGPU_MODE: "hami-core"}, affinity={"nodeAffinity": {
                             "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                                 {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                                        "values": ["mig-a", "mig-b"]}]}]}}}))
    message = wait_for(lambda: plane.unschedulable("nowhere"), what="nowhere unschedulable")
    assert "affinity" in message and "GPU mode does not match" in message, message
    assert not plane.bound("nowhere")


def test_topology_spread_and_binpack_agree(plane: Plane) -> None:
    """A DoNotSchedule zone spread outvotes our binpack preference; unconstrained pods still pack."""
    plane.add_node("mig-a", devices("a", 1), labels=_zone("a"))
    plane.add_node("mig-b", devices("b", 1), labels=_zone("b"))
    small = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000"}
    for i in range(2):
        plane.create(gpu_pod(f"packed-{i}", small))
        plane.wait_bound(f"packed-{i}")
    assert plane.bound("packed-0") == plane.bound("packed-1")  # binpack: together
    spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "spread"}}}]
    pods = [f"spread-{i}" for i in range(4)]
    for name in pods:
        plane.create(gpu_pod(name, small, labels={"app": "spread"}, topologySpreadConstraints=spread))
    plane.wait_bound(*pods)
    zones = sorted(plane.bound(p)[-1] for p in pods)
    assert zones == ["a", "a", "b", "b"], {p: plane.bound(p) for p in pods}


def test_a_node_whose_agent_stops_gets_no_new_pods_until_it_reports_again(plane: Plane) -> None:
    plane.restart_scheduler(handshake_timeout_s=2.0)
    plane.agent.handshake_every = 0.3
    plane.add_node("mig-a", devices("a", 1))
    plane.add_node("mig-b", devices("b", 1))
    small = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000"}
    plane.create(gpu_pod("before", small, nodeSelector={"kubernetes.io/hostname": "mig-a"}))
    plane.wait_bound("before")
    wait_for(lambda: plane.pod("before")["metadata"]["annotations"].get(names.BIND_PHASE) == names.BIND_PHASE_SUCCESS,
             what="`before` allocated")

    plane.agent.stop_node("mig-a")  # its handshake ages past 2 s: the scheduler marks its GPUs unhealthy
    probe = gpu_pod("probe", small)
    wait_for(lambda: "mig-a" in (plane.filter(probe, "mig-a")["FailedNodes"] or {}), 20,
             "mig-a rejected by /filter")
    plane.create(gpu_pod("after", small))  # binpack would choose mig-a, beside `before`
    plane.wait_bound("after")
    assert plane.bound("after") == "mig-b"
    plane.create(gpu_pod("pinned", small, nodeSelector={"kubernetes.io/hostname": "mig-a"}))
    message = wait_for(lambda: plane.unschedulable("pinned"), what="pinned unschedulable")
    assert "unhealthy" in message, message
    assert plane.pod("before")["spec"]["nodeName"] == "mig-a"  # running pods are not touched

    plane.agent.serve("mig-a")  # the agent is back: the next handshake makes the node usable again
    plane.wait_bound("pinned", timeout=30)
    assert plane.bound("pinned") == "mig-a"


def test_the_real_node_agent_runs_mig_hami_core_and_mode_less_pods(plane: Plane) -> None:
    """Our node agent (`hami device-plugin` over the simulated NVML) behind a simulated kubelet, in
    place of the scripted one: registration, Allocate in bind order, the MIG instance created, Running."""
    plane.add_sim_node("(1 x A100-SXM4-80GB, mode=mig, name=gpu)")
    plane.add_sim_node("(1 x A10, mode=hami-core, name=core)")
    plane.create(gpu_pod("mig", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "20000"},
                         annotations={names.VGPU_MODE: "mig"}))
    plane.create(gpu_pod("shared", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"},
                         annotations={names.VGPU_MODE: "hami-core"}))
    plane.create(gpu_pod("any", {"nvidia.com/gpumem": "10000"}))
    pods = ("mig", "shared", "any")
    wait_for(lambda: all((plane.pod(p).get("status") or {}).get("phase") in ("Running", "Failed") for p in pods),
             60, "the pods started by their kubelets")
    for name in pods:
        pod = plane.pod(name)
        assert pod["status"]["phase"] == "Running", (name, pod["status"].get("message"))
        assert pod["metadata"]["annotations"][names.BIND_PHASE] == names.BIND_PHASE_SUCCESS
    assert (plane.bound("mig"), plane.bound("shared"), plane.bound("any")) == ("gpu-0", "core-0", "gpu-0")
    for name in ("mig", "any"):
        (allocation,) = codecs.decode_mig_allocations(_ann(plane, name)[names.VGPU_MIG_ALLOCATIONS])
        assert allocation.realised, (name, allocation)
    node = plane.kube.get("nodes", "gpu-0")["metadata"]["annotations"]
    realised = codecs.decode_node_mig_instances(node[names.NODE_MIG_INSTANCES])
    assert sorted(i.pod for i in realised if i.state == codecs.InstanceState.IN_USE) == ["default/any", "default/mig"]
    assert names.NODE_LOCK not in node  # the agent released it after Allocate
