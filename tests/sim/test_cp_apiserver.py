"""The simulated API server driven by the official `kubernetes` client, pinned to the real server's
behaviour as the reference describes it (shared/reference/kubernetes-interfaces.md §4)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from hami.sim.apiserver import ApiServer


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ApiServer]:
    before = _threads()
    options = getattr(request, "param", {})
    srv = ApiServer(**options).start()
    yield srv
    srv.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _threads() - before:
        time.sleep(0.02)
    assert not (_threads() - before), f"leaked threads: {_threads() - before}"


@pytest.fixture
def kubeconfig(server: ApiServer, tmp_path: Path) -> Path:
    return server.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield api
    api.close()


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


def _pod(name: str, labels: dict[str, str] | None = None, node: str | None = None) -> dict:
    spec: dict = {"containers": [{"name": "main", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def _status(exc: ApiException) -> dict:
    return json.loads(exc.body)


def _bind(core: client.CoreV1Api, name: str, node: str, namespace: str = "default") -> int:
    # The client cannot parse the Status a binding returns (kubernetes-client/python #547): read it raw.
    body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
    resp = core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)
    return resp.status


# ------------------------------------------------------------------------------------------------
# discovery, kubeconfig


def test_kubeconfig_and_discovery(api_client: client.ApiClient, kubeconfig: Path) -> None:
    assert "server: http://127.0.0.1:" in kubeconfig.read_text()
    version = client.VersionApi(api_client).get_code()
    assert version.major == "1" and version.git_version.startswith("v1.")
    assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]
    groups = {g.name for g in client.ApisApi(api_client).get_api_versions().groups}
    assert "coordination.k8s.io" in groups
    resources = {r.name for r in client.CoreV1Api(api_client).get_api_resources().resources}
    assert {"pods", "pods/status", "pods/binding", "nodes", "nodes/status", "configmaps", "events",
            "namespaces"} <= resources


# ------------------------------------------------------------------------------------------------
# create / get / update


def test_create_assigns_identity_and_pod_defaults(core: client.CoreV1Api) -> None:
    pod = core.create_namespaced_pod("default", _pod("p1"))
    assert pod.metadata.uid and pod.metadata.creation_timestamp and int(pod.metadata.resource_version) > 0
    assert pod.status.phase == "Pending"
    assert pod.spec.scheduler_name == "default-scheduler"
    generated = core.create_namespaced_pod("default", {"metadata": {"generateName": "gen-"},
                                                       "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert generated.metadata.name.startswith("gen-") and len(generated.metadata.name) == 9
    assert core.read_namespaced_pod("p1", "default").metadata.uid == pod.metadata.uid


def test_errors_are_status_objects_with_the_right_codes(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("nope", "default")
    assert missing.value.status == 404
    body = _status(missing.value)
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["message"] == 'pods "nope" not found'
    core.create_namespaced_pod("default", _pod("dup"))
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_pod("default", _pod("dup"))
    assert exists.value.status == 409 and _status(exists.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_pod("default", {"metadata": {"name": "bad"}, "spec": {"containers": []}})
    assert invalid.value.status == 422 and _status(invalid.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as bad_name:
        core.create_namespaced_config_map("default", {"metadata": {"name": "Not_Valid"}})
    assert bad_name.value.status == 422
    with pytest.raises(ApiException) as no_ns:
        core.create_namespaced_config_map("missing", {"metadata": {"name": "cm"}})
    assert no_ns.value.status == 404 and "namespaces" in _status(no_ns.value)["message"]
    with pytest.raises(ApiException) as bad_field:
        core.list_namespaced_pod("default", field_selector="spec.bogus=x")
    assert bad_field.value.status == 400 and "field label not supported" in _status(bad_field.value)["message"]


def test_update_uses_optimistic_concurrency(core: client.CoreV1Api) -> None:
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"k": "1"}})
    first_rv = cm.metadata.resource_version
    cm.data["k"] = "2"
    updated = core.replace_namespaced_config_map("cm", "default", cm)
    assert updated.data == {"k": "2"} and int(updated.metadata.resource_version) > int(first_rv)
    cm.data["k"] = "3"  # still carries first_rv: stale
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_config_map("cm", "default", cm)
    status = _status(stale.value)
    assert stale.value.status == 409 and status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]
    # a no-op update keeps the version (and emits no event)
    same = core.replace_namespaced_config_map("cm", "default", updated)
    assert same.metadata.resource_version == updated.metadata.resource_version
    # an update without a resourceVersion is unconditional
    updated.metadata.resource_version = None
    updated.data["k"] = "4"
    assert core.replace_namespaced_config_map("cm", "default", updated).data == {"k": "4"}


def test_status_subresource_and_spec_immutability(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", _pod("p"))
    core.patch_namespaced_pod_status("p", "default", {"status": {"phase": "Running"}, "spec": {"nodeName": "x"}})
    pod = core.read_namespaced_pod("p", "default")
    assert pod.status.phase == "Running" and pod.spec.node_name is None  # status ignores spec
    core.patch_namespaced_pod("p", "default", {"status": {"phase": "Failed"}, "metadata": {"labels": {"a": "b"}}})
    pod = core.read_namespaced_pod("p", "default")
    assert pod.status.phase == "Running" and pod.metadata.labels == {"a": "b"}  # main ignores status
    with pytest.raises(ApiException) as forbidden:
        core.patch_namespaced_pod("p", "default", {"spec": {"nodeName": "elsewhere"}})
    assert forbidden.value.status == 422 and "pod updates may not change fields" in _status(forbidden.value)["message"]


# ------------------------------------------------------------------------------------------------
# selectors


def test_label_and_field_selectors(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_pod("default", _pod("a", {"app": "x", "tier": "db"}, node="n1"))
    core.create_namespaced_pod("default", _pod("b", {"app": "y"}, node="n2"))
    core.create_namespaced_pod("default", _pod("c", {"app": "x"}))
    core.create_namespaced_pod("other", _pod("d", {"app": "x"}, node="n1"))

    def names(**kwargs: str) -> list[str]:
        return sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(**kwargs).items)

    assert names(label_selector="app=x") == ["a", "c", "d"]
    assert names(label_selector="app!=x") == ["b"]
    assert names(label_selector="app in (x,y),tier") == ["a"]
    assert names(label_selector="app notin (x)") == ["b"]
    assert names(label_selector="!tier") == ["b", "c", "d"]
    assert names(field_selector="spec.nodeName=n1") == ["a", "d"]
    assert names(field_selector="spec.nodeName=") == ["c"]
    assert names(field_selector="metadata.namespace=other") == ["d"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="status.phase=Pending,spec.nodeName!=n1") == ["b", "c"]
    assert names(field_selector="spec.nodeName=n1", label_selector="app=x") == ["a", "d"]
    assert sorted(p.metadata.name for p in core.list_namespaced_pod("other").items) == ["d"]
    with pytest.raises(ApiException) as bad:
        core.list_namespaced_pod("default", label_selector="app in (x")
    assert bad.value.status == 400


def test_list_pages_with_limit_and_continue(core: client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
    first = core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in first.items] == ["cm-0", "cm-1"] and first.metadata._continue
    rest = core.list_namespaced_config_map("default", limit=10, _continue=first.metadata._continue)
    assert [c.metadata.name for c in rest.items] == ["cm-2", "cm-3", "cm-4"] and not rest.metadata._continue


# ------------------------------------------------------------------------------------------------
# patch types


def test_strategic_merge_patch_merges_keyed_lists(core: client.CoreV1Api) -> None:
    pod = _pod("p")
    pod["spec"]["containers"].append({"name": "side", "image": "b", "env": [{"name": "A", "value": "1"}]})
    core.create_namespaced_pod("default", pod)
    # dict body -> strategic merge (the client picks the content type)
    patched = core.patch_namespaced_pod("p", "default", {"spec": {"containers": [{"name": "side", "image": "c"}]}})
    main, side = patched.spec.containers
    assert (main.name, main.image) == ("main", "busybox")
    assert side.image == "c" and [(e.name, e.value) for e in side.env] == [("A", "1")]
    core.patch_namespaced_pod_status("p", "default", {"status": {"conditions": [
        {"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}})
    status = core.patch_namespaced_pod_status("p", "default", {"status": {"conditions": [
        {"type": "Ready", "status": "True"}]}}).status
    assert {c.type: c.status for c in status.conditions} == {"Ready": "True", "PodScheduled": "True"}
    removed = core.patch_namespaced_pod_status("p", "default", {"status": {"conditions": [
        {"type": "Ready", "$patch": "delete"}]}}).status
    assert [c.type for c in removed.conditions] == ["PodScheduled"]


def test_merge_patch_and_json_patch(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm", "annotations": {"a": "1", "b": "2"}},
                                                  "data": {"x": "1"}})
    merged = core.patch_namespaced_config_map("cm", "default", {"metadata": {"annotations": {"a": None, "c": "3"}}},
                                              _content_type="application/merge-patch+json")
    assert merged.metadata.annotations == {"b": "2", "c": "3"}
    patched = core.patch_namespaced_config_map("cm", "default", [
        {"op": "add", "path": "/metadata/annotations/hami.io~1node", "value": "n1"},
        {"op": "replace", "path": "/data/x", "value": "2"},
        {"op": "test", "path": "/data/x", "value": "2"},
    ])
    assert patched.metadata.annotations["hami.io/node"] == "n1" and patched.data == {"x": "2"}
    with pytest.raises(ApiException) as failed:
        core.patch_namespaced_config_map("cm", "default", [{"op": "test", "path": "/data/x", "value": "9"}])
    assert failed.value.status == 422
    with pytest.raises(ApiException) as missing:
        core.patch_namespaced_config_map("cm", "default", [{"op": "remove", "path": "/data/nope"}])
    assert missing.value.status == 422


def test_patch_carrying_a_stale_resource_version_conflicts(core: client.CoreV1Api) -> None:
    # HAMi's node lock: a merge patch with metadata.resourceVersion is a compare-and-swap.
    node = core.create_node({"metadata": {"name": "n1"}})
    rv = node.metadata.resource_version
    lock = {"metadata": {"annotations": {"hami.io/mutex.lock": "t,default,p"}, "resourceVersion": rv}}
    core.patch_node("n1", lock, _content_type="application/merge-patch+json")
    with pytest.raises(ApiException) as racing:
        core.patch_node("n1", lock, _content_type="application/merge-patch+json")
    assert racing.value.status == 409 and _status(racing.value)["reason"] == "Conflict"


# ------------------------------------------------------------------------------------------------
# binding, graceful deletion


def test_binding_sets_node_once(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", _pod("p"))
    assert _bind(core, "p", "n1") == 201
    pod = core.read_namespaced_pod("p", "default")
    assert pod.spec.node_name == "n1"
    assert [(c.type, c.status) for c in pod.status.conditions] == [("PodScheduled", "True")]
    with pytest.raises(ApiException) as again:
        _bind(core, "p", "n2")
    assert again.value.status == 409 and "already assigned" in _status(again.value)["message"]


def test_pod_deletion_is_graceful_when_bound(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", _pod("bound", node="n1"))
    deleting = core.delete_namespaced_pod("bound", "default")
    assert deleting.metadata.deletion_timestamp is not None and deleting.metadata.deletion_grace_period_seconds == 30
    assert core.read_namespaced_pod("bound", "default").metadata.deletion_timestamp is not None
    core.delete_namespaced_pod("bound", "default", grace_period_seconds=0)
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_pod("bound", "default")
    assert gone.value.status == 404
    core.create_namespaced_pod("default", _pod("unbound"))
    core.delete_namespaced_pod("unbound", "default")  # no node: immediate
    assert core.list_namespaced_pod("default").items == []
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    status = core.delete_namespaced_config_map("cm", "default")
    assert status["kind"] == "Status" and status["status"] == "Success"
    with pytest.raises(ApiException) as missing:
        core.delete_namespaced_config_map("cm", "default")
    assert missing.value.status == 404


def test_finalizers_hold_deletion(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm", "finalizers": ["x/y"]}})
    core.delete_namespaced_config_map("cm", "default")
    held = core.read_namespaced_config_map("cm", "default")
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("cm", "default", {"metadata": {"finalizers": None}},
                                     _content_type="application/merge-patch+json")
    assert core.list_namespaced_config_map("default").items == []


# ------------------------------------------------------------------------------------------------
# watch


def test_watch_streams_events_in_order_and_resumes(core: client.CoreV1Api) -> None:
    start = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "w"}, "data": {"v": "1"}})
    core.patch_namespaced_config_map("w", "default", {"data": {"v": "2"}})
    core.delete_namespaced_config_map("w", "default")
    w = watch.Watch()
    events = [(e["type"], e["object"].data, e["object"].metadata.resource_version)
              for e in w.stream(core.list_namespaced_config_map, "default", resource_version=start,
                                timeout_seconds=1)]
    assert [(t, d) for t, d, _ in events] == [("ADDED", {"v": "1"}), ("MODIFIED", {"v": "2"}),
                                              ("DELETED", {"v": "2"})]
    versions = [int(rv) for _, _, rv in events]
    assert versions == sorted(versions)
    # resuming from the middle replays only what came after
    resumed = [e["type"] for e in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                                          resource_version=str(versions[0]), timeout_seconds=1)]
    assert resumed == ["MODIFIED", "DELETED"]


def test_watch_without_version_starts_with_current_state(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    got: list[tuple[str, str]] = []
    w = watch.Watch()

    def later() -> None:
        time.sleep(0.3)
        core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})

    thread = threading.Thread(target=later)
    thread.start()
    for event in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=2):
        got.append((event["type"], event["object"].metadata.name))
        if len(got) == 2:
            w.stop()
    thread.join()
    assert got == [("ADDED", "a"), ("ADDED", "b")]


@pytest.mark.parametrize("server", [{"history": 5}], indirect=True)
def test_watch_from_a_compacted_version_gets_410(server: ApiServer, core: client.CoreV1Api) -> None:
    old = core.list_namespaced_config_map("default").metadata.resource_version
    for i in range(10):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
    # raw stream: HTTP 200, then one ERROR event carrying a 410 Expired Status
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={old}")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
    event = json.loads(resp.readline())
    conn.close()
    assert event["type"] == "ERROR"
    assert event["object"]["kind"] == "Status" and event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired" and "too old resource version" in event["object"]["message"]
    # the client turns it into ApiException(410)
    with pytest.raises(ApiException) as gone:
        list(watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=old,
                                  timeout_seconds=1))
    assert gone.value.status == 410
    # a recent version still works
    recent = core.list_namespaced_config_map("default").metadata.resource_version
    assert list(watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=recent,
                                     timeout_seconds=1)) == []


@pytest.mark.parametrize("server", [{"bookmark_interval": 0.2}], indirect=True)
def test_watch_bookmarks_carry_progress(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespace({"metadata": {"name": "elsewhere"}})  # moves the global version
    w = watch.Watch()
    kinds = [e["type"] for e in w.stream(core.list_namespaced_config_map, "default", resource_version=rv,
                                         allow_watch_bookmarks=True, timeout_seconds=1)]
    assert kinds and set(kinds) == {"BOOKMARK"}
    assert int(w.resource_version) > int(rv)
    # without allowWatchBookmarks: none
    assert list(watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv,
                                     timeout_seconds=1)) == []


def test_watch_with_selector_sees_objects_enter_and_leave(core: client.CoreV1Api) -> None:
    rv = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", _pod("p"))
    _bind(core, "p", "n1")
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"x": "y"}}})
    core.delete_namespaced_pod("p", "default", grace_period_seconds=0)
    by_node = [e["type"] for e in watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=rv,
                                                          field_selector="spec.nodeName=n1", timeout_seconds=1)]
    assert by_node == ["ADDED", "MODIFIED", "DELETED"]  # the binding is the ADDED
    unbound = [e["type"] for e in watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=rv,
                                                          field_selector="spec.nodeName=", timeout_seconds=1)]
    assert unbound == ["ADDED", "DELETED"]  # leaving the selector reads as DELETED


def test_watch_stream_is_chunked_json_lines(server: ApiServer, core: client.CoreV1Api) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/api/v1/nodes?watch=1&timeoutSeconds=1")
    core.create_node({"metadata": {"name": "n9"}})
    resp = conn.getresponse()
    assert resp.getheader("Content-Type") == "application/json"
    assert resp.getheader("Transfer-Encoding") == "chunked"
    lines = [json.loads(line) for line in resp.read().splitlines() if line]
    conn.close()
    assert [(e["type"], e["object"]["kind"], e["object"]["metadata"]["name"]) for e in lines] == \
        [("ADDED", "Node", "n9")]


# ------------------------------------------------------------------------------------------------
# other resources


def test_leases_events_namespaces(api_client: client.ApiClient, core: client.CoreV1Api) -> None:
    coordination = client.CoordinationV1Api(api_client)
    lease = coordination.create_namespaced_lease("kube-system", {
        "metadata": {"name": "hami-scheduler"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    lease.spec.holder_identity = "b"
    coordination.replace_namespaced_lease("hami-scheduler", "kube-system", lease)
    with pytest.raises(ApiException) as stale:
        coordination.replace_namespaced_lease("hami-scheduler", "kube-system", lease)
    assert stale.value.status == 409
    core.create_namespaced_event("default", {
        "metadata": {"name": "p.1"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Scheduled", "message": "ok", "type": "Normal"})
    found = core.list_namespaced_event("default", field_selector="involvedObject.name=p,reason=Scheduled")
    assert [e.message for e in found.items] == ["ok"]
    core.create_namespace({"metadata": {"name": "gone"}})
    core.create_namespaced_config_map("gone", {"metadata": {"name": "cm"}})
    core.delete_namespace("gone")
    assert core.list_namespaced_config_map("gone").items == []
