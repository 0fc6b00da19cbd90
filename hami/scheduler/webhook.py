"""The mutating admission webhook (AdmissionReview v1; v1beta1 answered in kind).

For pods that ask for our resources (HAMi §1.4): route them to our scheduler, add
`nvidia.com/gpu: 1` when only memory or cores are given, `gpucores: 100` for an exclusive ask,
`CUDA_TASK_PRIORITY` from the priority resource, `NVIDIA_VISIBLE_DEVICES=none` in containers
without GPUs when `overwriteEnv` is set, and the configured runtime class. Denials say what to
do: a malformed ask (the same parser the scheduler uses), a gpumem no GPU or MIG profile of the
catalog and the device config can hold (judged against the catalog, not today's nodes: clusters
scale from zero), a privileged GPU container, a preset `nodeName`, an unknown
`nvidia.com/numa-bind` value. The reply carries a JSONPatch.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hami.api import names
from hami.api.errors import RequestError
from hami.api.pods import RequestDefaults, parse_pod
from hami.devices import catalog, geometry
from hami.devices.config import NvidiaConfig

_TRUTHY = {"true", "false", "1", "0", "yes", "no", ""}


@dataclass(frozen=True)
class WebhookSettings:
    config: NvidiaConfig
    scheduler_name: str = names.SCHEDULER_NAME
    force_overwrite_default_scheduler: bool = True
    runtime_class_name: str = ""

    @property
    def defaults(self) -> RequestDefaults:
        return RequestDefaults.from_config(self.config)


class Denied(Exception):
    pass


def largest_memory(config: NvidiaConfig | None) -> tuple[int, str]:
    """The most MiB one device can hold anywhere: the largest GPU of the catalog (hami-core) or
    MIG profile (nominal size, as the memory rule matches), with the model that has it."""
    best, where = 0, ""
    for model in catalog.MODELS:
        if model.memory_mib > best:
            best, where = model.memory_mib, model.key
        if model.mig is not None:
            for name, mib in geometry.nominal_memory(model, config).items():
                if mib > best:
                    best, where = mib, f"{model.key} {name}"
    return best, where


def _resource_names(c: NvidiaConfig) -> tuple[str, ...]:
    return (c.resource_count_name, c.resource_memory_name, c.resource_memory_percentage_name,
            c.resource_core_name, c.resource_priority_name)


def _asks(container: Mapping[str, Any], ours: tuple[str, ...]) -> bool:
    res = container.get("resources") or {}
    return any(r in (res.get("limits") or {}) or r in (res.get("requests") or {}) for r in ours)


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    env = [e for e in (container.get("env") or []) if e.get("name") != name]
    env.append({"name": name, "value": value})
    container["env"] = env


def mutate(pod: Mapping[str, Any], s: WebhookSettings) -> list[dict[str, Any]]:
    """The JSONPatch for `pod`, or Denied with the reason. Pods not asking for our resources
    get no patch (and are never denied)."""
    c = s.config
    ours = _resource_names(c)
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    groups = [(k, spec.get(k) or []) for k in ("initContainers", "containers")]
    if not isinstance(groups[1][1], list) or not isinstance(groups[0][1], list):
        raise Denied("spec.containers and spec.initContainers must be lists of containers")
    if not any(isinstance(x, dict) and _asks(x, ours) for _k, group in groups for x in group):
        return []
    if spec.get("nodeName"):
        raise Denied(f"spec.nodeName is set ({spec['nodeName']}), which bypasses the scheduler; GPU pods are placed "
                     f"by {s.scheduler_name}: use a nodeSelector or node affinity instead")
    numa = (meta.get("annotations") or {}).get(names.NUMA_BIND)
    if numa is not None and str(numa).strip().lower() not in _TRUTHY:
        raise Denied(f'annotation {names.NUMA_BIND}={numa!r}: write "true" or "false"')
    ops: list[dict[str, Any]] = []
    mutated = copy.deepcopy(dict(pod))
    for key, group in groups:
        for i, container in enumerate(group):
            if not isinstance(container, dict):
                raise Denied(f"spec.{key}[{i}] is not a container object")
            name = container.get("name") or f"#{i}"
            if not _asks(container, ours):
                if c.overwrite_env and key == "containers":
                    new = copy.deepcopy(container)
                    _set_env(new, "NVIDIA_VISIBLE_DEVICES", "none")
                    ops.append({"op": "add", "path": f"/spec/{key}/{i}/env", "value": new["env"]})
                    mutated["spec"][key][i] = new
                continue
            if (container.get("securityContext") or {}).get("privileged"):
                raise Denied(f"container {name} asks for GPUs and is privileged: a privileged container sees every "
                             "GPU of the node, which defeats sharing; drop securityContext.privileged")
            new = copy.deepcopy(container)
            resources = new.setdefault("resources", {})
            limits = resources.setdefault("limits", {})
            requests = resources.get("requests") or {}

            def given(resource: str, limits=limits, requests=requests) -> Any:
                return limits.get(resource, requests.get(resource))

            if given(c.resource_count_name) is None and c.default_gpu_num > 0 and any(
                    given(r) is not None for r in (c.resource_memory_name, c.resource_memory_percentage_name,
                                                   c.resource_core_name)):
                limits[c.resource_count_name] = str(c.default_gpu_num)
            pct = given(c.resource_memory_percentage_name)
            exclusive = (given(c.resource_memory_name) is None and pct is None) or str(pct) == "100"
            if given(c.resource_count_name) is not None and given(c.resource_core_name) is None and exclusive:
                limits[c.resource_core_name] = "100"
            priority = given(c.resource_priority_name)
            if priority is not None:
                _set_env(new, "CUDA_TASK_PRIORITY", str(priority))
            if new != container:
                if new.get("resources") != container.get("resources"):
                    ops.append({"op": "add", "path": f"/spec/{key}/{i}/resources", "value": new["resources"]})
                if new.get("env") != container.get("env"):
                    ops.append({"op": "add", "path": f"/spec/{key}/{i}/env", "value": new["env"]})
                mutated["spec"][key][i] = new
    try:
        request = parse_pod(mutated, s.defaults)
    except RequestError as err:
        raise Denied(str(err)) from None
    largest, where = largest_memory(c)
    for ctr in request.containers:
        if ctr.count and ctr.memory_mib > largest:
            raise Denied(f"container {ctr.name}: gpumem {ctr.memory_mib} MiB exceeds every GPU and MIG profile hami "
                         f"knows (the largest is {where}, {largest} MiB); ask for at most {largest} MiB per GPU, or "
                         "more GPUs")
    current = spec.get("schedulerName") or ""
    if not current or (current == "default-scheduler" and s.force_overwrite_default_scheduler):
        ops.append({"op": "add", "path": "/spec/schedulerName", "value": s.scheduler_name})
    if s.runtime_class_name and not spec.get("runtimeClassName"):
        ops.append({"op": "add", "path": "/spec/runtimeClassName", "value": s.runtime_class_name})
    return ops


def review(body: Any, s: WebhookSettings) -> dict[str, Any]:
    """An AdmissionReview reply for `body` (never raises)."""
    if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": "", "allowed": False,
                             "status": {"code": 400, "message": "not an AdmissionReview with a request"}}}
    api_version = body.get("apiVersion") if body.get("apiVersion") in (
        "admission.k8s.io/v1", "admission.k8s.io/v1beta1") else "admission.k8s.io/v1"
    request = body["request"]
    response: dict[str, Any] = {"uid": str(request.get("uid", "")), "allowed": True}
    kind = (request.get("kind") or {}).get("kind")
    pod = request.get("object")
    if kind == "Pod" and request.get("operation", "CREATE") == "CREATE" and isinstance(pod, dict):
        try:
            ops = mutate(pod, s)
        except Denied as err:
            response["allowed"] = False
            response["status"] = {"code": 403, "reason": "Forbidden", "message": f"hami: {err}"}
        except (AttributeError, TypeError, KeyError, ValueError, IndexError) as err:
            # admission runs before validation: a malformed pod reaches us; say so, never crash
            response["allowed"] = False
            response["status"] = {"code": 400, "reason": "BadRequest",
                                  "message": f"hami: the pod is malformed ({type(err).__name__}: {err})"}
        else:
            if ops:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}
