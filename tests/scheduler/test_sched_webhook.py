"""The admission webhook: every denial with its message, the patches HAMi's webhook makes, and
malformed AdmissionReviews answered (never a crash)."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.api import names
from hami.devices.config import NvidiaConfig
from hami.scheduler.webhook import WebhookSettings, largest_memory, review

SETTINGS = WebhookSettings(NvidiaConfig())


def apply(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 `add` (the only op the webhook writes), enough to check the patches."""
    out = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add"
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target = out
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[parts[-1]] = op["value"]
    return out


def admit(pod: dict[str, Any], settings: WebhookSettings = SETTINGS, version: str = "admission.k8s.io/v1"):
    reply = review({"apiVersion": version, "kind": "AdmissionReview",
                    "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                                "operation": "CREATE", "object": pod}}, settings)
    assert reply["apiVersion"] == version and reply["response"]["uid"] == "u-1"
    return reply["response"]


def patched(pod: dict[str, Any], settings: WebhookSettings = SETTINGS) -> dict[str, Any]:
    response = admit(pod, settings)
    assert response["allowed"], response
    if "patch" not in response:
        return pod
    assert response["patchType"] == "JSONPatch"
    return apply(pod, json.loads(base64.b64decode(response["patch"])))


def pod(*limits: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "default"},
            "spec": {"schedulerName": "default-scheduler",
                     "containers": [{"name": f"c{i}", "image": "cuda", "resources": {"limits": dict(lim)}}
                                    for i, lim in enumerate(limits)], **spec}}


def test_gpu_pods_are_routed_to_our_scheduler_and_others_left_alone() -> None:
    out = patched(pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "4000"}))
    assert out["spec"]["schedulerName"] == names.SCHEDULER_NAME
    plain = pod({"cpu": "1"})
    assert "patch" not in admit(plain)
    other = pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "4000"})
    other["spec"]["schedulerName"] = "volcano"
    assert patched(other)["spec"]["schedulerName"] == "volcano"  # an explicit other scheduler is respected


def test_memory_only_asks_get_one_gpu_and_exclusive_asks_get_all_cores() -> None:
    out = patched(pod({"nvidia.com/gpumem": "8000"}, {"nvidia.com/gpu": "2"},
                      {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "100"},
                      {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50"}))
    limits = [c["resources"]["limits"] for c in out["spec"]["containers"]]
    assert limits[0]["nvidia.com/gpu"] == "1" and "nvidia.com/gpucores" not in limits[0]
    assert limits[1]["nvidia.com/gpucores"] == "100"  # no memory given: the whole GPU
    assert limits[2]["nvidia.com/gpucores"] == "100"
    assert "nvidia.com/gpucores" not in limits[3]


def test_priority_env_overwrite_env_and_runtime_class() -> None:
    settings = WebhookSettings(NvidiaConfig(overwrite_env=True), runtime_class_name="nvidia")
    out = patched(pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000", "nvidia.com/priority": "1"},
                      {"cpu": "1"}), settings)
    gpu, plain = out["spec"]["containers"]
    assert {"name": "CUDA_TASK_PRIORITY", "value": "1"} in gpu["env"]
    assert plain["env"] == [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "none"}]
    assert out["spec"]["runtimeClassName"] == "nvidia"


@pytest.mark.parametrize(("pod_", "words"), [
    (pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "-5"}), "gpumem"),
    (pod({"nvidia.com/gpu": "0.5"}), "whole number"),
    (pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "900000"}), "exceeds every GPU and MIG profile"),
    (pod({"nvidia.com/gpu": "1"}, nodeName="n1"), "nodeName"),
])
def test_denials_say_what_to_do(pod_: dict[str, Any], words: str) -> None:
    response = admit(pod_)
    assert not response["allowed"]
    assert words in response["status"]["message"], response["status"]["message"]
    assert response["status"]["code"] == 403


def test_unknown_mode_privileged_and_numa_bind_are_denied() -> None:
    bad_mode = pod({"nvidia.com/gpu": "1"})
    bad_mode["metadata"]["annotations"] = {names.VGPU_MODE: "mps"}
    assert "vgpu-mode" in admit(bad_mode)["status"]["message"]
    privileged = pod({"nvidia.com/gpu": "1"})
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    assert "privileged" in admit(privileged)["status"]["message"]
    numa = pod({"nvidia.com/gpu": "1"})
    numa["metadata"]["annotations"] = {names.NUMA_BIND: "maybe"}
    assert "numa-bind" in admit(numa)["status"]["message"]


def test_the_largest_ask_is_judged_against_the_catalog_not_todays_nodes() -> None:
    mib, where = largest_memory(None)
    assert mib >= 143771 and where  # an H200-class part exists in the catalog
    assert admit(pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": str(mib)}))["allowed"]
    assert not admit(pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": str(mib + 1)}))["allowed"]


def test_v1beta1_is_answered_in_kind() -> None:
    response = admit(pod({"nvidia.com/gpu": "1"}), version="admission.k8s.io/v1beta1")
    assert response["allowed"]


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20))
def test_any_json_gets_an_admission_review_back(body: Any) -> None:
    reply = review(body, SETTINGS)
    assert reply["kind"] == "AdmissionReview" and "allowed" in reply["response"]


@given(st.one_of(st.just("pod"), st.dictionaries(st.sampled_from(["metadata", "spec"]), st.one_of(
    st.text(max_size=3), st.lists(st.integers(), max_size=2), st.dictionaries(
        st.sampled_from(["containers", "annotations"]), st.one_of(st.text(max_size=2), st.dictionaries(
            st.sampled_from(["nvidia.com/vgpu-mode", "x"]), st.integers()))))))
       | st.dictionaries(st.sampled_from(["metadata", "spec", "status"]),
                       st.dictionaries(st.sampled_from(["containers", "initContainers", "nodeName", "annotations",
                                                        "name"]),
                                       st.one_of(st.none(), st.text(max_size=3), st.integers(),
                                                 st.lists(st.dictionaries(st.sampled_from(["name", "resources"]),
                                                                          st.one_of(st.text(max_size=3),
                                                                                    st.dictionaries(
                                                                                        st.sampled_from(
                                                                                            ["limits", "requests"]),
                                                                                        st.dictionaries(
                                                                                            st.sampled_from(
                                                                                                ["nvidia.com/gpu",
                                                                                                 "nvidia.com/gpumem"]),
                                                                                            st.text(max_size=4))))),
                                                          max_size=2)))))
def test_malformed_pods_are_answered_not_crashed(obj: Any) -> None:
    reply = review({"apiVersion": "admission.k8s.io/v1", "request": {"uid": "x", "kind": {"kind": "Pod"},
                                                                     "operation": "CREATE", "object": obj}},
                   SETTINGS)
    assert reply["response"]["uid"] == "x"
