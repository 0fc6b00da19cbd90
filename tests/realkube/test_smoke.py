"""Smoke tests of the real control plane with the pieces that exist today: the official client
against kube-apiserver, kube-scheduler driving an extender through the chart's configuration,
and the simulated kubelet (hami.sim.kubelet, unchanged) as a node of the real API server."""

from __future__ import annotations

import contextlib
import shutil
import threading
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

from hami.sim.apiserver import errors
from hami.sim.apiserver.watch import Watcher
from hami.sim.kubelet import Kubelet, short_socket_dir
from hami.sim.realkube import RealPlane
from hami.sim.realkube.store import RemoteStore
from tests.realkube.conftest import SCHEDULER_NAME
from tests.realkube.extender import TestExtender


def _pod(name: str, *, scheduler: str = SCHEDULER_NAME, resources: dict[str, str] | None = None,
         node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox"}
    if resources:
        container["resources"] = {"limits": resources}
    spec: dict[str, Any] = {"schedulerName": scheduler, "containers": [container]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _node(name: str, gpus: int) -> dict[str, Any]:
    capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"capacity": capacity, "allocatable": capacity,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


@contextlib.contextmanager
def _nodes(core: k8s.CoreV1Api, *names: str, gpus: int = 4) -> Any:
    for name in names:
        core.create_node(_node(name, gpus))
    try:
        yield
    finally:
        for name in names:
            with contextlib.suppress(ApiException):
                core.delete_node(name)


def _node_of(core: k8s.CoreV1Api, namespace: str, name: str) -> str | None:
    return core.read_namespaced_pod(name, namespace).spec.node_name


def _unschedulable(core: k8s.CoreV1Api, namespace: str, name: str) -> str | None:
    """The PodScheduled=False message kube-scheduler wrote, once it has."""
    for cond in core.read_namespaced_pod(name, namespace).status.conditions or []:
        if cond.type == "PodScheduled" and cond.reason == "Unschedulable":
            return cond.message
    return None


def test_official_client_creates_lists_and_watches_a_pod(plane: RealPlane, namespace: str) -> None:
    core = k8s.CoreV1Api(plane.admin())
    events: list[tuple[str, str]] = []
    started = threading.Event()

    def watch() -> None:
        stream = k8s_watch.Watch()
        for event in stream.stream(core.list_namespaced_pod, namespace, timeout_seconds=30,
                                   _request_timeout=35):
            started.set()
            events.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                stream.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    created = core.create_namespaced_pod(namespace, _pod("watched", scheduler="nobody"))

    # the admission chain a cluster has ran: ServiceAccount assigned the default account and
    # mounted its projected token; DefaultTolerationSeconds added the not-ready/unreachable ones
    assert created.spec.service_account_name == "default"
    assert any(v.name.startswith("kube-api-access-") for v in created.spec.volumes)
    assert {t.key for t in created.spec.tolerations} >= {"node.kubernetes.io/not-ready",
                                                         "node.kubernetes.io/unreachable"}
    listed = core.list_namespaced_pod(namespace)
    assert [p.metadata.name for p in listed.items] == ["watched"]
    assert created.status.phase == "Pending"

    plane.wait_for("the watch to see the pod", started.is_set)
    core.delete_namespaced_pod("watched", namespace)  # never bound: deleted at once
    watcher.join(30)
    assert events[0] == ("ADDED", "watched")
    assert events[-1] == ("DELETED", "watched")


def test_real_scheduler_filters_prioritizes_and_binds_through_the_extender(
        plane: RealPlane, extender: TestExtender, namespace: str) -> None:
    core = k8s.CoreV1Api(plane.admin())
    with _nodes(core, "ext-a", "ext-b", "ext-c"):
        extender.reject = {"ext-a": "test extender says no"}
        extender.scores = {"ext-b": 0, "ext-c": 10}
        # nvidia.com/gpumem is advertised by no node: only ignoredByScheduler lets this pod fit
        pod = _pod("gpu-pod", resources={"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"})
        core.create_namespaced_pod(namespace, pod)
        node = plane.wait_for("gpu-pod bound", lambda: _node_of(core, namespace, "gpu-pod"))

        assert node == "ext-c"  # ext-a filtered out, ext-c preferred by prioritize
        verbs = extender.verbs_for("gpu-pod")
        assert verbs[:1] == ["filter"] and verbs[-1] == "bind" and "prioritize" in verbs
        filter_args = extender.args_for("gpu-pod", "filter")[0]
        assert filter_args.get("Nodes") is None  # nodeCacheCapable: names only
        assert sorted(filter_args["NodeNames"]) == ["ext-a", "ext-b", "ext-c"]
        assert sorted(extender.args_for("gpu-pod", "prioritize")[0]["NodeNames"]) == ["ext-b", "ext-c"]
        bind = extender.args_for("gpu-pod", "bind")[0]
        assert (bind["PodNamespace"], bind["Node"]) == (namespace, "ext-c")

        # no managed resource: the extender is not interested, kube-scheduler binds by itself
        core.create_namespaced_pod(namespace, _pod("plain-pod", node_selector={"kubernetes.io/hostname": "ext-a"}))
        assert plane.wait_for("plain-pod bound", lambda: _node_of(core, namespace, "plain-pod")) == "ext-a"
        assert extender.verbs_for("plain-pod") == []


def test_real_scheduler_reports_what_the_extender_rejected(
        plane: RealPlane, extender: TestExtender, namespace: str) -> None:
    core = k8s.CoreV1Api(plane.admin())
    with _nodes(core, "rej-a"):
        extender.reject = {"rej-a": "no GPU fits"}
        core.create_namespaced_pod(namespace, _pod("stuck", resources={"nvidia.com/gpu": "1"}))
        message = plane.wait_for("PodScheduled=False", lambda: _unschedulable(core, namespace, "stuck"))
        assert "no GPU fits" in message
        assert _node_of(core, namespace, "stuck") is None


def test_simulated_kubelet_runs_a_pod_against_the_real_apiserver(plane: RealPlane, namespace: str) -> None:
    """hami.sim.kubelet, unchanged, as node `sim-0` with a node's own client certificate."""
    core = k8s.CoreV1Api(plane.admin())
    store = RemoteStore(plane.api_client(plane.node_kubeconfig("sim-0")))
    with pytest.raises(errors.StatusError) as missing:
        store.get("nodes", None, "sim-0")
    assert (missing.value.code, missing.value.reason) == (404, "NotFound")
    with pytest.raises(errors.StatusError) as denied:  # the Node authorizer: only pods bound to it
        store.get("pods", namespace, "someone-elses")
    assert (denied.value.code, denied.value.reason) == (403, "Forbidden")

    plugin_dir = short_socket_dir()
    kubelet = Kubelet("sim-0", store, plugin_dir, node_ip="10.0.0.9", lease_renew_interval=1.0)
    kubelet.start()
    try:
        node = core.read_node("sim-0")
        assert node.status.node_info.kubelet_version.startswith("v1.")
        lease = k8s.CoordinationV1Api(plane.admin()).read_namespaced_lease("sim-0", "kube-node-lease")
        assert lease.spec.holder_identity == "sim-0"

        core.create_namespaced_pod(namespace, _pod("runs", node_selector={"kubernetes.io/hostname": "sim-0"}))
        pod = plane.wait_for("pod Running", lambda: (p := core.read_namespaced_pod("runs", namespace))
                             .status.phase == "Running" and p)
        assert pod.spec.node_name == "sim-0"
        assert pod.status.host_ip == "10.0.0.9"
        assert kubelet.admitted == [f"{namespace}/runs"]
        started = plane.wait_for("the kubelet's Started event", lambda: [
            e for e in core.list_namespaced_event(namespace).items if e.reason == "Started"])
        assert (started[0].involved_object.kind, started[0].involved_object.name) == ("Pod", "runs")
        assert started[0].source.host == "sim-0"

        # NodeRestriction admission: a node may not modify another Node
        with _nodes(core, "other"), pytest.raises(errors.StatusError) as denied:
            store.patch("nodes", None, "other", {"metadata": {"labels": {"x": "y"}}})
        assert denied.value.code == 403 and "sim-0" in denied.value.message

        # graceful deletion: the API server marks it, the kubelet stops it and removes it
        core.delete_namespaced_pod("runs", namespace)

        def gone() -> bool:
            try:
                core.read_namespaced_pod("runs", namespace)
            except ApiException as exc:
                return exc.status == 404
            return False

        plane.wait_for("pod deleted by the kubelet", gone)
    finally:
        kubelet.stop()
        store.close()
        shutil.rmtree(plugin_dir, ignore_errors=True)
        with contextlib.suppress(ApiException):
            core.delete_node("sim-0")


def test_scheduler_restart_takes_over_its_lease_and_schedules(
        plane: RealPlane, extender: TestExtender, namespace: str) -> None:
    core = k8s.CoreV1Api(plane.admin())
    before = plane.processes["kube-scheduler"].pid
    plane.restart_scheduler()  # start() returns once the new process holds the Lease
    assert plane.processes["kube-scheduler"].pid != before
    with _nodes(core, "again-a"):
        extender.reject, extender.scores = {}, {}
        core.create_namespaced_pod(namespace, _pod("after-restart", resources={"nvidia.com/gpu": "1"}))
        assert plane.wait_for("bound after restart", lambda: _node_of(core, namespace, "after-restart")) == "again-a"
        assert extender.verbs_for("after-restart") == ["filter", "bind"]  # one node left: no prioritize


def test_remote_store_watch_lists_first_then_streams_and_closes(plane: RealPlane, namespace: str) -> None:
    """The Store watch contract the kubelet relies on, over the real API server."""
    store = RemoteStore(plane.api_client())
    try:
        store.create("configmaps", namespace, {"metadata": {"name": "before"}, "data": {"a": "1"}})
        watcher = store.watch("configmaps", namespace)
        assert watcher.next_event(10) == ("ADDED", store.get("configmaps", namespace, "before"))
        store.patch("configmaps", namespace, "before", {"data": {"a": "2"}})
        store.create("configmaps", namespace, {"metadata": {"name": "after"}})
        store.delete("configmaps", namespace, "before")
        seen = [watcher.next_event(10) for _ in range(3)]
        assert [(kind, obj["metadata"]["name"]) for kind, obj in seen] == [
            ("MODIFIED", "before"), ("ADDED", "after"), ("DELETED", "before")]
        assert seen[0][1]["data"] == {"a": "2"}
        assert watcher.next_event(0.2) is None  # nothing more: a timeout, not the end
        watcher.close()
        assert watcher.next_event(1) is Watcher.CLOSED
        watcher._thread.join(5)
        assert not watcher._thread.is_alive()
    finally:
        store.close()


def test_default_scheduler_serves_its_pods_without_the_extender(
        plane: RealPlane, extender: TestExtender, namespace: str) -> None:
    """ignoredByScheduler belongs to hami-scheduler's configuration: the cluster's own scheduler
    counts nvidia.com/gpu against allocatable and finds no node advertising nvidia.com/gpumem."""
    core = k8s.CoreV1Api(plane.admin())
    with _nodes(core, "dflt-a", gpus=2):
        core.create_namespaced_pod(namespace, _pod("counted", scheduler="default-scheduler",
                                                   resources={"nvidia.com/gpu": "2"}))
        assert plane.wait_for("counted bound", lambda: _node_of(core, namespace, "counted")) == "dflt-a"
        core.create_namespaced_pod(namespace, _pod("gpumem", scheduler="default-scheduler",
                                                   resources={"nvidia.com/gpumem": "1000"}))
        message = plane.wait_for("gpumem unschedulable", lambda: _unschedulable(core, namespace, "gpumem"))
        assert "Insufficient nvidia.com/gpumem" in message
        assert extender.verbs_for("counted") == [] and extender.verbs_for("gpumem") == []
