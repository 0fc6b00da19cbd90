"""Mutating admission: MutatingWebhookConfigurations stored in the API server are called over TLS for the writes
they match, their JSON patches applied before validation, their failurePolicy followed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from hami.sim.apiserver import ApiServer
from tests.sim.cp_support import Raw, server
from tests.sim.webhook_support import TinyWebhook, add_label

__all__ = ["server"]


@pytest.fixture
def api(server: ApiServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    yield api_client
    api_client.close()


def _register(api: client.ApiClient, configuration: dict) -> None:
    client.AdmissionregistrationV1Api(api).create_mutating_webhook_configuration(configuration)


def _pod(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}}


def test_a_registered_webhook_mutates_pods_created_through_the_api(server: ApiServer, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)

    def decide(request: dict) -> dict:
        ops = [{"op": "replace", "path": "/spec/schedulerName", "value": "hami-scheduler"},
               {"op": "add", "path": "/metadata/annotations", "value": {"hami.io/mutated": "yes"}}]
        return {"allowed": True, "patch": ops, "warnings": ["mutated by the test"]}

    with TinyWebhook(decide) as hook:
        _register(api, hook.configuration())
        pod = core.create_namespaced_pod("default", _pod("p"))
        core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})  # not in the rules
        with Raw(server.port) as raw:  # the webhook's warnings reach the client
            raw.request("POST", "/api/v1/namespaces/default/pods?dryRun=All", json.dumps(_pod("q")).encode())
            answer = raw.response()
        assert answer is not None and answer.status == 201
        assert answer.headers.get_all("Warning") == ['299 - "mutated by the test"']
        hook.reviews.pop()
    assert pod.spec.scheduler_name == "hami-scheduler"
    assert pod.metadata.annotations == {"hami.io/mutated": "yes"}
    assert core.read_namespaced_pod("p", "default").spec.scheduler_name == "hami-scheduler"
    assert len(hook.reviews) == 1
    review = hook.reviews[0]
    assert review["apiVersion"] == "admission.k8s.io/v1" and review["path"] == "/mutate?timeout=10s"
    request = review["request"]
    assert request["operation"] == "CREATE" and request["namespace"] == "default" and request["name"] == "p"
    assert request["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert request["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert request["object"]["spec"]["schedulerName"] == "default-scheduler"  # defaulted before admission
    assert "uid" not in request["object"]["metadata"] and request["dryRun"] is False


def test_update_reviews_carry_the_old_object_and_v1beta1_is_spoken(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with TinyWebhook(add_label("seen", "yes")) as hook:
        core.create_namespaced_pod("default", _pod("p"))
        _register(api, hook.configuration(operations=("UPDATE",), admissionReviewVersions=["v1beta1"]))
        patched = core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"a": "b"}}})
    assert patched.metadata.labels == {"a": "b", "seen": "yes"}
    (review,) = hook.reviews
    assert review["apiVersion"] == "admission.k8s.io/v1beta1"
    assert review["request"]["operation"] == "UPDATE" and review["request"]["oldObject"]["metadata"]["uid"]
    assert review["request"]["object"]["metadata"]["labels"] == {"a": "b"}


@pytest.mark.parametrize(("policy", "created"), [("Ignore", True), ("Fail", False)])
def test_a_webhook_that_times_out_follows_its_failure_policy(api: client.ApiClient, policy: str,
                                                             created: bool) -> None:
    core = client.CoreV1Api(api)
    with TinyWebhook(add_label("slow", "yes"), delay=1.5) as hook:
        _register(api, hook.configuration(failure_policy=policy, timeout=1))
        if created:
            pod = core.create_namespaced_pod("default", _pod("p"))
            assert not pod.metadata.labels  # the webhook was skipped
        else:
            with pytest.raises(ApiException) as failed:
                core.create_namespaced_pod("default", _pod("p"))
            body = json.loads(failed.value.body)
            assert failed.value.status == 500 and body["reason"] == "InternalError"
            assert 'failed calling webhook "mutate.hami.io"' in body["message"]
            assert "context deadline exceeded" in body["message"]
            assert core.list_namespaced_pod("default").items == []


def test_an_untrusted_certificate_is_a_call_failure(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    other_ca = trustme.CA()
    with TinyWebhook(add_label("a", "b")) as hook:
        bundle = TinyWebhook(add_label("x", "y"), ca=other_ca).ca_bundle
        _register(api, hook.configuration(ca_bundle=bundle))
        with pytest.raises(ApiException) as failed:
            core.create_namespaced_pod("default", _pod("p"))
    assert failed.value.status == 500 and "tls" in json.loads(failed.value.body)["message"]
    assert hook.reviews == []


def test_a_denial_carries_the_webhooks_status(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)

    def deny(request: dict) -> dict:
        return {"allowed": False, "status": {"code": 403, "reason": "Forbidden", "message": "no GPUs on Sunday"}}

    with TinyWebhook(deny) as hook:
        _register(api, hook.configuration())
        with pytest.raises(ApiException) as denied:
            core.create_namespaced_pod("default", _pod("p"))
    body = json.loads(denied.value.body)
    assert denied.value.status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == 'admission webhook "mutate.hami.io" denied the request: no GPUs on Sunday'


def test_namespace_and_object_selectors_choose_what_is_sent(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "quiet", "labels": {"hami.io/webhook": "ignore"}}})
    ignore = {"matchExpressions": [{"key": "hami.io/webhook", "operator": "NotIn", "values": ["ignore"]}]}
    with TinyWebhook(add_label("m", "yes")) as hook:
        _register(api, hook.configuration(namespaceSelector=ignore, objectSelector=ignore))
        assert not core.create_namespaced_pod("quiet", _pod("in-quiet-ns")).metadata.labels
        assert core.create_namespaced_pod("default", _pod("opted-out", **{"hami.io/webhook": "ignore"})) \
            .metadata.labels == {"hami.io/webhook": "ignore"}
        assert core.create_namespaced_pod("default", _pod("sent")).metadata.labels == {"m": "yes"}
    assert [r["request"]["name"] for r in hook.reviews] == ["sent"]


def test_dry_run_requests_reach_the_webhook_as_dry_runs(server: ApiServer, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with TinyWebhook(add_label("m", "yes")) as hook:
        _register(api, hook.configuration())
        pod = core.create_namespaced_pod("default", _pod("p"), dry_run="All")
    assert pod.metadata.labels == {"m": "yes"} and server.store.list("pods")["items"] == []
    assert hook.reviews[0]["request"]["dryRun"] is True
    assert hook.reviews[0]["request"]["options"]["dryRun"] == ["All"]


@pytest.mark.parametrize(("change", "field"), [
    ({"clientConfig": {"url": "http://127.0.0.1:1/x"}}, "webhooks[0].clientConfig.url"),
    ({"name": "short"}, "webhooks[0].name"),
    ({"sideEffects": "Some"}, "webhooks[0].sideEffects"),
    ({"timeoutSeconds": 31}, "webhooks[0].timeoutSeconds"),
    ({"failurePolicy": "Sometimes"}, "webhooks[0].failurePolicy"),
])
def test_webhook_configurations_are_validated(api: client.ApiClient, change: dict, field: str) -> None:
    with TinyWebhook(add_label("a", "b")) as hook:
        configuration = hook.configuration()
        configuration["webhooks"][0].update(change)
        with pytest.raises(ApiException) as invalid:
            _register(api, configuration)
    assert invalid.value.status == 422
    assert field in [c["field"] for c in json.loads(invalid.value.body)["details"]["causes"]]
