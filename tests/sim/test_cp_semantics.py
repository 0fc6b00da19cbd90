"""API semantics a client can observe: dryRun on every mutating verb, owner-reference garbage collection by
propagationPolicy, lists at a past resourceVersion and consistent pages, watches as Tables and with initial
events, and the OpenAPI documents."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from hami.sim.apiserver import ApiServer
from tests.sim.cp_support import Raw, server

__all__ = ["server"]


@pytest.fixture
def core(server: ApiServer, tmp_path: Path) -> Iterator[client.CoreV1Api]:
    api = config.new_client_from_config(config_file=str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    yield client.CoreV1Api(api)
    api.close()


def _pod(name: str, node: str | None = None, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                    "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": meta, "spec": spec}


def _call(server: ApiServer, method: str, path: str, body: Any = None,
          content_type: str = "application/json", accept: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    with Raw(server.port) as raw:
        raw.request(method, path, json.dumps(body).encode() if body is not None else b"", headers)
        resp = raw.response()
    assert resp is not None
    text = resp.body.decode()
    if resp.headers.get("Transfer-Encoding") == "chunked":
        return resp.status, [json.loads(line) for line in text.splitlines() if line]
    return resp.status, json.loads(text) if text else None


# ------------------------------------------------------------------------------------------------
# dryRun


def test_dry_run_on_every_mutating_verb_changes_nothing(server: ApiServer) -> None:
    store = server.store
    base = "/api/v1/namespaces/default"
    status, created = _call(server, "POST", f"{base}/pods?dryRun=All", _pod("p"))
    assert status == 201 and created["metadata"]["uid"] and not created["metadata"].get("resourceVersion")
    assert store.list("pods")["items"] == []
    status, _invalid = _call(server, "POST", f"{base}/pods?dryRun=All", {"metadata": {"name": "x"}, "spec": {}})
    assert status == 422  # a dry run still validates
    store.create("pods", "default", _pod("p"))
    store.create("pods", "default", _pod("bound", node="n1"))
    rv = store.resource_version
    status, patched = _call(server, "PATCH", f"{base}/pods/p?dryRun=All", {"metadata": {"labels": {"a": "b"}}},
                            "application/merge-patch+json")
    assert status == 200 and patched["metadata"]["labels"] == {"a": "b"}
    current = store.get("pods", "default", "p")
    current["metadata"]["labels"] = {"x": "y"}
    status, updated = _call(server, "PUT", f"{base}/pods/p?dryRun=All", current)
    assert status == 200 and updated["metadata"]["labels"] == {"x": "y"}
    status, _binding = _call(server, "POST", f"{base}/pods/p/binding?dryRun=All",
                            {"metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n9"}})
    assert status == 201
    # kubectl delete --dry-run=server sends DeleteOptions{dryRun: [All]} in the body
    status, deleting = _call(server, "DELETE", f"{base}/pods/bound",
                             {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]})
    assert status == 200 and deleting["metadata"]["deletionTimestamp"]
    status, _ = _call(server, "DELETE", f"{base}/pods/p?dryRun=All")
    assert status == 200
    status, _ = _call(server, "DELETE", f"{base}/pods?dryRun=All")
    assert status == 200
    status, _ = _call(server, "DELETE", "/api/v1/namespaces/default?dryRun=All")
    assert status == 200
    assert store.resource_version == rv  # nothing was written
    pods = {p["metadata"]["name"]: p for p in store.list("pods", "default")["items"]}
    assert set(pods) == {"p", "bound"}
    assert not pods["bound"]["metadata"].get("deletionTimestamp") and not pods["p"]["spec"].get("nodeName")
    assert not pods["p"]["metadata"].get("labels")


def test_dry_run_values_other_than_all_are_refused(server: ApiServer) -> None:
    status, body = _call(server, "POST", "/api/v1/namespaces/default/configmaps?dryRun=Yes",
                         {"metadata": {"name": "cm"}})
    assert status == 422 and 'supported values: "All"' in body["message"]
    assert server.store.list("configmaps")["items"] == []


# ------------------------------------------------------------------------------------------------
# garbage collection


def test_background_propagation_deletes_dependents(server: ApiServer, core: client.CoreV1Api) -> None:
    owner = server.store.create("configmaps", "default", {"metadata": {"name": "owner"}})
    server.store.create("pods", "default", _pod("child", owner=owner))
    server.store.create("pods", "default", _pod("other"))
    core.delete_namespaced_config_map("owner", "default")  # no policy: Background
    assert [p.metadata.name for p in core.list_namespaced_pod("default").items] == ["other"]


def test_orphan_propagation_strips_owner_references(server: ApiServer, core: client.CoreV1Api) -> None:
    owner = server.store.create("configmaps", "default", {"metadata": {"name": "owner"}})
    server.store.create("pods", "default", _pod("child", owner=owner))
    core.delete_namespaced_config_map("owner", "default", propagation_policy="Orphan")
    child = core.read_namespaced_pod("child", "default")
    assert child.metadata.owner_references is None


def test_foreground_propagation_holds_the_owner_until_dependents_are_gone(server: ApiServer,
                                                                          core: client.CoreV1Api) -> None:
    owner = server.store.create("configmaps", "default", {"metadata": {"name": "owner"}})
    server.store.create("pods", "default", _pod("child", node="n1", owner=owner))  # bound: graceful delete
    core.delete_namespaced_config_map("owner", "default", propagation_policy="Foreground")
    held = core.read_namespaced_config_map("owner", "default")
    assert held.metadata.deletion_timestamp and held.metadata.finalizers == ["foregroundDeletion"]
    assert core.read_namespaced_pod("child", "default").metadata.deletion_timestamp
    core.delete_namespaced_pod("child", "default", grace_period_seconds=0)  # what the kubelet does
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("owner", "default")
    assert gone.value.status == 404


def test_unknown_propagation_policy_is_refused(server: ApiServer) -> None:
    server.store.create("configmaps", "default", {"metadata": {"name": "cm"}})
    status, body = _call(server, "DELETE", "/api/v1/namespaces/default/configmaps/cm?propagationPolicy=Sideways")
    assert status == 422 and "propagationPolicy" in body["message"]
    assert server.store.get("configmaps", "default", "cm")


# ------------------------------------------------------------------------------------------------
# lists in the past


def test_list_at_an_exact_resource_version_reads_the_past(server: ApiServer, core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}, "data": {"v": "1"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}, "data": {"v": "1"}})
    then = core.list_namespaced_config_map("default").metadata.resource_version
    core.delete_namespaced_config_map("a", "default")
    core.patch_namespaced_config_map("b", "default", {"data": {"v": "2"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    past = core.list_namespaced_config_map("default", resource_version=then, resource_version_match="Exact")
    assert past.metadata.resource_version == then
    assert [(c.metadata.name, c.data) for c in past.items] == [("a", {"v": "1"}), ("b", {"v": "1"})]
    now = core.list_namespaced_config_map("default", resource_version=then, resource_version_match="NotOlderThan")
    assert [c.metadata.name for c in now.items] == ["b", "c"]
    with pytest.raises(ApiException) as too_new:
        core.list_namespaced_config_map("default", resource_version="999999", resource_version_match="Exact")
    assert too_new.value.status == 504 and "Too large resource version" in too_new.value.body
    with pytest.raises(ApiException) as forbidden:
        core.list_namespaced_config_map("default", resource_version_match="Exact")
    assert forbidden.value.status == 422


@pytest.mark.parametrize("server", [{"history": 3}], indirect=True)
def test_list_at_a_compacted_resource_version_is_410(server: ApiServer, core: client.CoreV1Api) -> None:
    old = core.list_namespaced_config_map("default").metadata.resource_version
    for i in range(6):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
    with pytest.raises(ApiException) as gone:
        core.list_namespaced_config_map("default", resource_version=old, resource_version_match="Exact")
    assert gone.value.status == 410 and "too old" in gone.value.body


def test_pages_are_a_consistent_snapshot(server: ApiServer, core: client.CoreV1Api) -> None:
    for name in ("a", "b", "c", "d"):
        core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    first = core.list_namespaced_config_map("default", limit=2)
    core.delete_namespaced_config_map("c", "default")
    core.create_namespaced_config_map("default", {"metadata": {"name": "bb"}})
    rest = core.list_namespaced_config_map("default", limit=5, _continue=first.metadata._continue)
    assert [c.metadata.name for c in first.items] == ["a", "b"]
    assert [c.metadata.name for c in rest.items] == ["c", "d"]  # as of the first page
    assert rest.metadata.resource_version == first.metadata.resource_version


# ------------------------------------------------------------------------------------------------
# watches


TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def test_watch_sends_tables_when_asked(server: ApiServer) -> None:
    server.store.create("pods", "default", _pod("a"))
    server.store.create("pods", "default", _pod("b", node="n1"))
    status, events = _call(server, "GET", "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1", accept=TABLE)
    assert status == 200 and [e["type"] for e in events] == ["ADDED", "ADDED"]
    first, second = (e["object"] for e in events)
    assert first["kind"] == second["kind"] == "Table"
    assert [c["name"] for c in first["columnDefinitions"]] == ["Name", "Ready", "Status", "Restarts", "Age", "IP",
                                                               "Node"]
    assert second["columnDefinitions"] == []  # sent once, as kube-apiserver does
    assert second["rows"][0]["cells"][0] == "b" and second["rows"][0]["cells"][6] == "n1"
    assert second["rows"][0]["object"]["metadata"]["name"] == "b"


def test_watch_with_initial_events_ends_them_with_a_bookmark(server: ApiServer) -> None:
    server.store.create("configmaps", "default", {"metadata": {"name": "a"}})
    path = "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&sendInitialEvents=true"
    status, events = _call(server, "GET", path + "&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan")
    assert status == 200
    assert [e["type"] for e in events][:2] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    status, body = _call(server, "GET", path)
    assert status == 422 and "sendInitialEvents requires" in body["message"]


# ------------------------------------------------------------------------------------------------
# OpenAPI


def test_openapi_v3_describes_the_served_types_for_kubectl(server: ApiServer) -> None:
    status, index = _call(server, "GET", "/openapi/v3")
    assert status == 200 and set(index["paths"]) == {"api/v1", "apis/coordination.k8s.io/v1",
                                                     "apis/admissionregistration.k8s.io/v1"}
    url = index["paths"]["api/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/api/v1?hash=")
    status, doc = _call(server, "GET", url)
    assert status == 200 and doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "version": "v1", "kind": "Pod"}]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name" and containers["x-kubernetes-patch-strategy"] == "merge"
    assert "name" in schemas["io.k8s.api.core.v1.Container"]["required"]
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert {"name": "fieldValidation", "in": "query"}.items() <= next(
        p for p in patch["parameters"] if p["name"] == "fieldValidation").items()
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    status, v2 = _call(server, "GET", "/openapi/v2")
    assert status == 200 and v2["swagger"] == "2.0"
    assert v2["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"]["$ref"] == \
        "#/definitions/io.k8s.api.core.v1.PodSpec"
