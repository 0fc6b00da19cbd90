"""Per-type defaulting and validation, after kube-apiserver's (`pkg/apis/core/validation` and friends).

Three steps, in the real server's order around mutating admission:
- `defaults()`: what decoding defaults (pod scheduler name, restart policy, requests from limits
  per resource, webhook failure policy, ...); admission webhooks see defaulted objects;
- `prepare_for_create()`: what the registry resets on create (a new pod's status);
- `validate()`: names, labels, annotations; pods: container names (DNS labels, unique across
  init and app containers), images, resource names and quantities (non-negative; extended
  resources whole numbers, with requests equal to limits); mutating webhook configurations.
Errors are 422 `Invalid` with one cause per field, worded as the real server words them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from hami.sim.apiserver import errors, quantities, selectors
from hami.sim.apiserver.resources import Resource

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                      "must start and end with an alphanumeric character")
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                          "'.', and must start and end with an alphanumeric character")
_STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_CONTAINER_GROUPS = ("initContainers", "containers", "ephemeralContainers")

Causes = list[tuple[str, str]]


# ----------------------------------------------------------------------------------------------
# defaulting


def _default_requests(container: dict[str, Any]) -> None:
    """Requests default to limits, resource by resource (SetDefaults_Pod)."""
    res = container.get("resources")
    if not isinstance(res, dict) or not isinstance(res.get("limits"), dict) or not res["limits"]:
        return
    requests = res.get("requests") if isinstance(res.get("requests"), dict) else {}
    res["requests"] = {**res["limits"], **requests}


def defaults(res: Resource, obj: dict[str, Any]) -> None:
    """Defaulting applied when a body is decoded (before admission)."""
    if res.plural == "pods":
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        for key, value in (("schedulerName", "default-scheduler"), ("restartPolicy", "Always"),
                           ("terminationGracePeriodSeconds", 30), ("dnsPolicy", "ClusterFirst"),
                           ("securityContext", {}), ("enableServiceLinks", True)):
            if spec.get(key) is None:
                spec[key] = value
        for group in _CONTAINER_GROUPS:
            for container in spec.get(group) or []:
                if isinstance(container, dict):
                    container.setdefault("resources", {})
                    container.setdefault("terminationMessagePath", "/dev/termination-log")
                    container.setdefault("terminationMessagePolicy", "File")
                    container.setdefault("imagePullPolicy", "IfNotPresent")
                    _default_requests(container)
    elif res.plural == "namespaces":
        if obj.get("spec") is None:
            obj["spec"] = {"finalizers": ["kubernetes"]}
    elif res.plural == "nodes":
        obj.setdefault("spec", {})
        obj.setdefault("status", {})
    elif res.plural == "mutatingwebhookconfigurations":
        for hook in obj.get("webhooks") or []:
            if not isinstance(hook, dict):
                continue
            for key, value in (("failurePolicy", "Fail"), ("matchPolicy", "Equivalent"),
                               ("namespaceSelector", {}), ("objectSelector", {}), ("timeoutSeconds", 10),
                               ("reinvocationPolicy", "Never")):
                if hook.get(key) is None:
                    hook[key] = value
            for rule in hook.get("rules") or []:
                if isinstance(rule, dict) and rule.get("scope") is None:
                    rule["scope"] = "*"
            service = (hook.get("clientConfig") or {}).get("service")
            if isinstance(service, dict) and service.get("port") is None:
                service["port"] = 443


def _qos_class(pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    any_set, guaranteed = False, True
    for container in containers:
        res = container.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        for name in ("cpu", "memory"):
            if name in requests or name in limits:
                any_set = True
            if name not in limits or requests.get(name, limits.get(name)) != limits.get(name):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def prepare_for_create(res: Resource, obj: dict[str, Any]) -> None:
    """What the registry's create strategy resets (after admission, before validation)."""
    if res.plural == "pods":
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj)}
    elif res.plural == "namespaces":
        obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]


# ----------------------------------------------------------------------------------------------
# validation


def name_causes(res: Resource, name: str) -> Causes:
    if not name:
        return [("metadata.name", "Required value: name or generateName is required")]
    if res.plural == "events":
        return []  # event names embed a dot-separated hex timestamp; the real check is looser too
    if res.plural == "namespaces":
        if len(name) > 63 or not _LABEL.match(name):
            return [("metadata.name", f'Invalid value: "{name}": {_DNS1123_LABEL_MSG}')]
    elif len(name) > 253 or not _SUBDOMAIN.match(name):
        return [("metadata.name", f'Invalid value: "{name}": {_DNS1123_SUBDOMAIN_MSG}')]
    return []


def qualified_name_error(name: str) -> str | None:
    """What is wrong with a qualified name (`prefix/name`), or None (IsQualifiedName)."""
    prefix, _, short = name.rpartition("/")
    if "/" in prefix:
        return "a qualified name must consist of alphanumeric characters, '-', '_' or '.', with an optional DNS " \
               "subdomain prefix and '/'"
    if not short:
        return "name part must be non-empty"
    if len(short) > 63 or not _QUALIFIED.match(short):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                "alphanumeric character")
    if "/" in name and (not prefix or len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        return "prefix part " + _DNS1123_SUBDOMAIN_MSG
    return None


def is_native_resource(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def is_extended_resource(name: str) -> bool:
    return not is_native_resource(name) and not name.startswith("requests.") and \
        qualified_name_error("requests." + name) is None


def _overcommit_allowed(name: str) -> bool:
    return is_native_resource(name) and not name.startswith("hugepages-")


def _resource_name_causes(name: str, path: str) -> Causes:
    problem = qualified_name_error(name)
    if problem:
        return [(path, f'Invalid value: "{name}": {problem}')]
    if "/" not in name:
        if name not in _STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
            return [(path, f'Invalid value: "{name}": must be a standard resource for containers')]
    elif not is_native_resource(name) and not is_extended_resource(name):
        return [(path, f'Invalid value: "{name}": doesn\'t follow extended resource name standard')]
    return []


def _quantity_causes(name: str, value: Any, path: str) -> Causes:
    try:
        q = quantities.parse(value)
    except quantities.QuantityError as exc:  # decoding rejects these first; kept for in-process callers
        return [(path, f'Invalid value: "{value}": {exc}')]
    causes = []
    if q.nanos < 0:
        causes.append((path, f'Invalid value: "{q}": must be greater than or equal to 0'))
    if is_extended_resource(name) and not q.is_integer:
        causes.append((path, f'Invalid value: "{q}": must be an integer'))
    return causes


def resource_causes(resources: Any, path: str) -> Causes:
    """ValidateResourceRequirements for one container's `resources`."""
    if not isinstance(resources, dict):
        return []
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    causes: Causes = []
    for name, value in limits.items():
        causes += _resource_name_causes(name, f"{path}.limits[{name}]")
        causes += _quantity_causes(name, value, f"{path}.limits[{name}]")
    for name, value in requests.items():
        causes += _resource_name_causes(name, f"{path}.requests[{name}]")
        causes += _quantity_causes(name, value, f"{path}.requests[{name}]")
        try:
            want = quantities.parse(value)
            limit = quantities.parse(limits[name]) if name in limits else None
        except quantities.QuantityError:
            continue
        if limit is None:
            if not _overcommit_allowed(name):
                causes.append((f"{path}.limits", "Required value: Limit must be set for non overcommitable "
                                                 "resources"))
        elif want.nanos != limit.nanos and not _overcommit_allowed(name):
            causes.append((f"{path}.requests", f'Invalid value: "{want}": must be equal to {name} limit of {limit}'))
        elif want.nanos > limit.nanos:
            causes.append((f"{path}.requests", f'Invalid value: "{want}": must be less than or equal to {name} '
                                               f"limit of {limit}"))
    return causes


def _pod_causes(obj: dict[str, Any]) -> Causes:
    spec = obj.get("spec") or {}
    causes: Causes = []
    containers = spec.get("containers")
    if not containers:
        causes.append(("spec.containers", "Required value"))
    seen: set[str] = set()
    for group in _CONTAINER_GROUPS:
        for i, container in enumerate(spec.get(group) or []):
            path = f"spec.{group}[{i}]"
            name = container.get("name")
            if not name:
                causes.append((f"{path}.name", "Required value"))
            elif len(name) > 63 or not _LABEL.match(name):
                causes.append((f"{path}.name", f'Invalid value: "{name}": {_DNS1123_LABEL_MSG}'))
            elif name in seen:
                causes.append((f"{path}.name", f'Duplicate value: "{name}"'))
            else:
                seen.add(name)
            if not container.get("image") and group != "ephemeralContainers":
                causes.append((f"{path}.image", "Required value"))
            if group != "ephemeralContainers":
                causes += resource_causes(container.get("resources"), f"{path}.resources")
    return causes


def _webhook_causes(obj: dict[str, Any]) -> Causes:
    causes: Causes = []
    names: set[str] = set()
    for i, hook in enumerate(obj.get("webhooks") or []):
        path = f"webhooks[{i}]"
        name = hook.get("name") or ""
        if not name:
            causes.append((f"{path}.name", "Required value"))
        elif name.count(".") < 2 or not _SUBDOMAIN.match(name):
            causes.append((f"{path}.name", f'Invalid value: "{name}": should be a domain with at least three '
                                           f"segments separated by dots"))
        elif name in names:
            causes.append((f"{path}.name", f'Duplicate value: "{name}"'))
        names.add(name)
        versions = hook.get("admissionReviewVersions") or []
        if not versions:
            causes.append((f"{path}.admissionReviewVersions", "Required value: must specify one of v1, v1beta1"))
        elif not {"v1", "v1beta1"} & set(versions):
            causes.append((f"{path}.admissionReviewVersions", f"Invalid value: {versions}: must include at least "
                                                              f"one of v1, v1beta1"))
        if hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
            causes.append((f"{path}.sideEffects", f'Unsupported value: "{hook.get("sideEffects") or ""}": '
                                                  f'supported values: "None", "NoneOnDryRun"'))
        if hook.get("failurePolicy") not in ("Ignore", "Fail"):
            causes.append((f"{path}.failurePolicy", f'Unsupported value: "{hook.get("failurePolicy")}": '
                                                    f'supported values: "Fail", "Ignore"'))
        if hook.get("matchPolicy") not in ("Exact", "Equivalent"):
            causes.append((f"{path}.matchPolicy", f'Unsupported value: "{hook.get("matchPolicy")}": '
                                                  f'supported values: "Equivalent", "Exact"'))
        if hook.get("reinvocationPolicy") not in ("Never", "IfNeeded"):
            causes.append((f"{path}.reinvocationPolicy", f'Unsupported value: "{hook.get("reinvocationPolicy")}": '
                                                         f'supported values: "IfNeeded", "Never"'))
        timeout = hook.get("timeoutSeconds")
        if not isinstance(timeout, int) or not 1 <= timeout <= 30:
            causes.append((f"{path}.timeoutSeconds", f"Invalid value: {timeout}: the timeout value must be between "
                                                     f"1 and 30 seconds"))
        config = hook.get("clientConfig") or {}
        if bool(config.get("url")) == bool(config.get("service")):
            causes.append((f"{path}.clientConfig", "Required value: exactly one of url or service is required"))
        elif config.get("url"):
            url = urlsplit(config["url"])
            if url.scheme != "https":
                causes.append((f"{path}.clientConfig.url", f'Invalid value: "{config["url"]}": \'https\' is the '
                                                           f"only allowed URL scheme"))
            elif not url.hostname:
                causes.append((f"{path}.clientConfig.url", f'Invalid value: "{config["url"]}": host must be '
                                                           f"specified"))
            elif url.query or url.fragment:
                causes.append((f"{path}.clientConfig.url", f'Invalid value: "{config["url"]}": query and '
                                                           f"fragment parameters are not allowed"))
        for j, rule in enumerate(hook.get("rules") or []):
            for op in rule.get("operations") or []:
                if op not in ("*", "CREATE", "UPDATE", "DELETE", "CONNECT"):
                    causes.append((f"{path}.rules[{j}].operations", f'Unsupported value: "{op}": supported values: '
                                                                    f'"*", "CONNECT", "CREATE", "DELETE", "UPDATE"'))
            if rule.get("scope") not in ("*", "Cluster", "Namespaced"):
                causes.append((f"{path}.rules[{j}].scope", f'Unsupported value: "{rule.get("scope")}": supported '
                                                           f'values: "*", "Cluster", "Namespaced"'))
        for key in ("namespaceSelector", "objectSelector"):
            try:
                selectors.from_label_selector(hook.get(key))
            except errors.StatusError as exc:
                causes.append((f"{path}.{key}", f"Invalid value: {exc.message}"))
    return causes


def validate(res: Resource, obj: dict[str, Any]) -> None:
    """Raise 422 Invalid listing every problem of `obj` (a decoded, defaulted object)."""
    meta = obj["metadata"]
    causes: Causes = []
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is not None and (not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())):
            causes.append((f"metadata.{field}", "Invalid value: values must be strings"))
    if isinstance(meta.get("labels"), dict) and meta["labels"]:
        try:
            selectors.parse_label_selector(",".join(f"{k}={v}" for k, v in meta["labels"].items()))
        except errors.StatusError as exc:
            causes.append(("metadata.labels", exc.message))
    if res.plural == "pods":
        causes += _pod_causes(obj)
    elif res.plural == "mutatingwebhookconfigurations":
        causes += _webhook_causes(obj)
    if causes:
        raise errors.invalid(res.kind, meta.get("name", ""), causes)
