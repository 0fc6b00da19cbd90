"""Decoding and validation as kube-apiserver does them: canonical quantities the official client can read back,
422 for what validation refuses, 400 naming the field for what decoding refuses, fieldValidation, bad
query parameters."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from hami.sim.apiserver import ApiServer, quantities
from tests.sim.cp_support import Raw, server

__all__ = ["server"]


@pytest.fixture
def core(server: ApiServer, tmp_path: Path) -> Iterator[client.CoreV1Api]:
    api = config.new_client_from_config(config_file=str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    yield client.CoreV1Api(api)
    api.close()


def _post(server: ApiServer, path: str, body: object, query: str = "") -> tuple[int, dict, str]:
    with Raw(server.port) as raw:
        raw.request("POST", path + query, json.dumps(body).encode(), {"Content-Type": "application/json"})
        resp = raw.response()
    assert resp is not None
    return resp.status, resp.json(), resp.headers.get_all("Warning") or []


def _gpu_pod(name: str, limits: dict, requests: dict | None = None, **container: object) -> dict:
    resources: dict = {"limits": limits}
    if requests is not None:
        resources["requests"] = requests
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": "ubuntu", "resources": resources, **container}]}}


# ------------------------------------------------------------------------------------------------
# quantities


@pytest.mark.parametrize(("given_", "canonical"), [
    (1, "1"), ("1", "1"), (20000, "20k"), (0.5, "500m"), ("1.5Gi", "1536Mi"), ("1024Mi", "1Gi"), ("0.5Gi", "512Mi"),
    ("1.5Ki", "1536"), ("100m", "100m"), ("0.1", "100m"), ("1500", "1500"), ("1e3", "1e3"), ("12e-1", "1200e-3"),
    ("1E", "1E"), ("0.0000000001", "1n"), ("-500m", "-500m"), ("+5", "5"), (".5", "500m"), ("0", "0"),
])
def test_quantities_take_their_canonical_form(given_: object, canonical: str) -> None:
    assert quantities.canonical(given_) == canonical


@pytest.mark.parametrize(("bad", "message"), [
    ("abc", "quantities must match the regular expression"), ("1.5.5", "must match"), ("", "must match"),
    (" 1", "must match"), ("1e", "unable to parse quantity's suffix"), ("1ki", "suffix"), (True, "must match"),
])
def test_malformed_quantities_are_refused(bad: object, message: str) -> None:
    with pytest.raises(quantities.QuantityError, match=message):
        quantities.canonical(bad)


@given(st.integers(-10**20, 10**20), st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "e3", "n", "u"]))
def test_canonical_form_is_stable_and_keeps_the_value(number: int, suffix: str) -> None:
    text = f"{number}{suffix}"
    once = quantities.canonical(text)
    assert quantities.canonical(once) == once
    assert quantities.parse(once).nanos == quantities.parse(text).nanos


def test_integer_quantities_are_stored_as_strings_and_the_client_reads_them(server: ApiServer,
                                                                            core: client.CoreV1Api) -> None:
    # what kubectl sends for `nvidia.com/gpu: 1` in YAML: a JSON number
    status, created, _ = _post(server, "/api/v1/namespaces/default/pods",
                               _gpu_pod("gpu", {"nvidia.com/gpu": 1, "memory": 1073741824, "cpu": 0.5}))
    assert status == 201
    assert created["spec"]["containers"][0]["resources"] == {
        "limits": {"nvidia.com/gpu": "1", "memory": "1073741824", "cpu": "500m"},
        "requests": {"nvidia.com/gpu": "1", "memory": "1073741824", "cpu": "500m"}}
    server.store.create("nodes", None, {"metadata": {"name": "n"}, "status": {
        "capacity": {"nvidia.com/gpu": 8, "memory": "512Gi"}, "allocatable": {"nvidia.com/gpu": 20000}}})
    # every read path of the official client (pydantic models typed `str`) accepts them
    pod = core.read_namespaced_pod("gpu", "default")
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces().items] == ["gpu"]
    assert core.read_node("n").status.allocatable == {"nvidia.com/gpu": "20k"}
    events = list(watch.Watch().stream(core.list_namespaced_pod, "default", timeout_seconds=1))
    assert [e["object"].metadata.name for e in events] == ["gpu"]


@pytest.mark.parametrize(("pod", "field", "message"), [
    (_gpu_pod("frac", {"nvidia.com/gpu": "500m"}), "spec.containers[0].resources.limits[nvidia.com/gpu]",
     "must be an integer"),
    (_gpu_pod("neg", {"cpu": "-1"}), "spec.containers[0].resources.limits[cpu]", "must be greater than or equal to 0"),
    (_gpu_pod("uneq", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "2"}), "spec.containers[0].resources.requests",
     "must be equal to nvidia.com/gpu limit of 1"),
    (_gpu_pod("over", {"cpu": "1"}, {"cpu": "2"}), "spec.containers[0].resources.requests",
     "must be less than or equal to cpu limit of 1"),
    (_gpu_pod("nolimit", {}, {"nvidia.com/gpu": "1"}), "spec.containers[0].resources.limits",
     "Limit must be set for non overcommitable resources"),
    (_gpu_pod("name", {"gpu": "1"}), "spec.containers[0].resources.limits[gpu]",
     "must be a standard resource for containers"),
    ({"metadata": {"name": "dup"}, "spec": {"containers": [{"name": "a", "image": "i"}, {"name": "a", "image": "i"}]}},
     "spec.containers[1].name", 'Duplicate value: "a"'),
    ({"metadata": {"name": "dup2"}, "spec": {"initContainers": [{"name": "a", "image": "i"}],
                                              "containers": [{"name": "a", "image": "i"}]}},
     "spec.containers[0].name", 'Duplicate value: "a"'),
    ({"metadata": {"name": "upper"}, "spec": {"containers": [{"name": "Main", "image": "i"}]}},
     "spec.containers[0].name", "a lowercase RFC 1123 label"),
])
def test_validation_refuses_what_kube_apiserver_refuses(server: ApiServer, pod: dict, field: str,
                                                        message: str) -> None:
    status, body, _ = _post(server, "/api/v1/namespaces/default/pods", pod)
    assert status == 422 and body["reason"] == "Invalid"
    assert any(c["field"] == field and message in c["message"] for c in body["details"]["causes"]), body
    assert server.store.list("pods")["items"] == []


@pytest.mark.parametrize(("pod", "words"), [
    ({"metadata": {"name": "obj"}, "spec": {"containers": {"name": "main", "image": "i"}}},
     "cannot unmarshal object into Go struct field PodSpec.spec.containers of type []v1.Container"),
    ({"metadata": {"name": "num"}, "spec": {"containers": [{"name": 7, "image": "i"}]}},
     "cannot unmarshal number into Go struct field Container.spec.containers.name of type string"),
    (_gpu_pod("abc", {"nvidia.com/gpu": "abc"}), "quantities must match the regular expression"),
    ({"metadata": {"name": "time", "creationTimestamp": "yesterday"}, "spec": {"containers": []}},
     'parsing time "yesterday"'),
    ({"metadata": {"name": "labels", "labels": {"a": 1}}, "spec": {"containers": []}},
     "cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string"),
])
def test_malformed_bodies_are_400_naming_the_field(server: ApiServer, pod: dict, words: str) -> None:
    status, body, _ = _post(server, "/api/v1/namespaces/default/pods", pod)
    assert status == 400 and body["reason"] == "BadRequest"
    assert body["message"].startswith('Pod in version "v1" cannot be handled as a Pod: ')
    assert words in body["message"]


def test_field_validation_strict_warn_and_ignore(server: ApiServer) -> None:
    pod = {"metadata": {"name": "p", "bogus": 1},
           "spec": {"containers": [{"name": "c", "image": "i", "colour": "red"}]}}
    status, body, _ = _post(server, "/api/v1/namespaces/default/pods", pod, "?fieldValidation=Strict")
    assert status == 400
    assert body["message"] == ('Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field '
                               '"metadata.bogus", unknown field "spec.containers[0].colour"')
    status, body, warnings = _post(server, "/api/v1/namespaces/default/pods", pod)  # Warn is the default
    assert status == 201 and "colour" not in body["spec"]["containers"][0] and "bogus" not in body["metadata"]
    assert warnings == ['299 - "unknown field \\"metadata.bogus\\""',
                        '299 - "unknown field \\"spec.containers[0].colour\\""']
    status, _, warnings = _post(server, "/api/v1/namespaces/default/pods", {**pod, "metadata": {"name": "q"}},
                                "?fieldValidation=Ignore")
    assert status == 201 and warnings == []


@pytest.mark.parametrize("query", [
    "/api/v1/pods?limit=abc", "/api/v1/pods?resourceVersion=abc", "/api/v1/pods?watch=1&timeoutSeconds=abc",
    "/api/v1/pods?watch=maybe", "/api/v1/namespaces/default/pods/p?resourceVersion=-1",
])
def test_bad_query_parameters_are_400(server: ApiServer, query: str) -> None:
    with Raw(server.port) as raw:
        raw.request("GET", query)
        resp = raw.response()
    assert resp is not None and resp.status == 400 and resp.json()["reason"] == "BadRequest"


def test_bad_grace_period_is_400_and_deletes_nothing(server: ApiServer) -> None:
    server.store.create("configmaps", "default", {"metadata": {"name": "cm"}})
    with Raw(server.port) as raw:
        raw.request("DELETE", "/api/v1/namespaces/default/configmaps/cm?gracePeriodSeconds=abc")
        resp = raw.response()
        assert resp is not None and resp.status == 400
        raw.request("DELETE", "/api/v1/namespaces/default/configmaps/cm", json.dumps(
            {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": "soon"}).encode())
        resp = raw.response()
        assert resp is not None and resp.status == 400 and "DeleteOptions" in resp.json()["message"]
    assert server.store.get("configmaps", "default", "cm")


def test_concurrent_updates_still_serialise(server: ApiServer, core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", {"metadata": {"name": "n"}, "data": {"n": "0"}})

    def bump() -> None:
        for _ in range(10):
            while True:
                cm = core.read_namespaced_config_map("n", "default")
                cm.data["n"] = str(int(cm.data["n"]) + 1)
                try:
                    core.replace_namespaced_config_map("n", "default", cm)
                    break
                except ApiException as exc:
                    assert exc.status == 409

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert core.read_namespaced_config_map("n", "default").data == {"n": "40"}
