"""The rendered MutatingWebhookConfiguration on the real kube-apiserver (tests/realkube): its
matchConditions (CEL, evaluated by the API server) send GPU pods to our webhook and no other pod,
and its failurePolicy refuses GPU pods, and only them, while no scheduler answers. Only the
clientConfig is changed: a URL to this test's scheduler instead of the in-cluster Service."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from kubernetes import client

from hami.api import names
from tests.chart.conftest import find, render, strip
from tests.chart.pods import free_port
from tests.realkube import session
from tests.scheduler.conftest import WEBHOOK, Plane

REAL = pytest.mark.parametrize("plane", [pytest.param("real", marks=session.REAL_MARKS)], indirect=True)


def install_rendered_webhook(p: Plane, url: str) -> None:
    body = copy.deepcopy(strip(find(render(), "MutatingWebhookConfiguration", "vgpu.hami.io")))
    (hook,) = body["webhooks"]
    hook["clientConfig"] = {"url": f"{url}/webhook", "caBundle": base64.b64encode(p.ca.cert_pem.bytes()).decode()}
    api = client.AdmissionregistrationV1Api(p.kube.api_client)
    api.delete_mutating_webhook_configuration(WEBHOOK)  # the fixture's own registration
    api.create_mutating_webhook_configuration(body)


def pod(name: str, limits: dict[str, str] | None = None, init: dict[str, str] | None = None) -> dict[str, Any]:
    def ctr(n: str, lim: dict[str, str] | None) -> dict[str, Any]:
        return {"name": n, "image": "cuda", **({"resources": {"limits": lim}} if lim else {})}

    spec: dict[str, Any] = {"containers": [ctr("c", limits)]}
    if init:
        spec["initContainers"] = [ctr("i", init)]
    return {"metadata": {"name": name}, "spec": spec}


@REAL
def test_the_rendered_webhook_mutates_gpu_pods_only(plane: Plane) -> None:
    install_rendered_webhook(plane, plane.scheduler.server.url)
    cpu = plane.create(pod("cpu-only", {"cpu": "1"}))
    assert cpu["spec"]["schedulerName"] == "default-scheduler"
    gpu = plane.create(pod("gpumem-only", {"nvidia.com/gpumem": "8000"}))
    assert gpu["spec"]["schedulerName"] == names.SCHEDULER_NAME
    assert gpu["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"  # the webhook's default
    init = plane.create(pod("init-gpu", {"cpu": "1"}, init={"nvidia.com/gpu": "1"}))
    assert init["spec"]["schedulerName"] == names.SCHEDULER_NAME


@REAL
def test_with_no_scheduler_answering_gpu_pods_are_refused_and_others_are_not(plane: Plane) -> None:
    install_rendered_webhook(plane, f"https://127.0.0.1:{free_port()}")  # nobody listens there
    assert plane.create(pod("cpu-while-down", {"cpu": "1"}))["metadata"]["name"] == "cpu-while-down"
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(plane.kube.api_client).create_namespaced_pod(
            "default", pod("gpu-while-down", {"nvidia.com/gpu": "1"}))
    assert "vgpu.hami.io" in err.value.body and "failed calling webhook" in err.value.body
