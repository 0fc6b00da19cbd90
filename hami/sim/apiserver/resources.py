"""The resource types the simulated API server serves, and the discovery documents naming them.

One table drives routing, discovery (`/api/v1`, `/apis/...`) and which field selectors each
type accepts (unknown field labels are rejected with 400, as the real server does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SERVER_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-hami-sim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_META_FIELDS = ("metadata.name", "metadata.namespace")
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    """One served resource type (plural name within its group/version)."""

    plural: str
    kind: str
    group: str  # "" for the core group
    version: str
    namespaced: bool
    subresources: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = _META_FIELDS
    singular: str = ""
    # Pods: DELETE sets deletionTimestamp and waits for the kubelet (or grace 0).
    graceful_delete: bool = False
    # The real registries for these return the deleted object; the others a Status.
    returns_deleted_object: bool = False
    # the official client's model class (hami.sim.apiserver.schema reads the type from it)
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


RESOURCES: tuple[Resource, ...] = (
    Resource("namespaces", "Namespace", "", "v1", False, ("status",), ("ns",),
             ("metadata.name", "status.phase"), "namespace", model="V1Namespace"),
    Resource("nodes", "Node", "", "v1", False, ("status",), ("no",),
             ("metadata.name", "spec.unschedulable"), "node", model="V1Node"),
    Resource("pods", "Pod", "", "v1", True, ("status", "binding"), ("po",),
             (*_META_FIELDS, "spec.nodeName", "spec.schedulerName", "spec.restartPolicy",
              "spec.serviceAccountName", "status.phase", "status.podIP", "status.nominatedNodeName"),
             "pod", graceful_delete=True, returns_deleted_object=True, model="V1Pod"),
    Resource("configmaps", "ConfigMap", "", "v1", True, (), ("cm",), _META_FIELDS, "configmap", model="V1ConfigMap"),
    Resource("events", "Event", "", "v1", True, (), ("ev",),
             (*_META_FIELDS, "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
              "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
              "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"), "event",
             model="CoreV1Event"),
    Resource("bindings", "Binding", "", "v1", True, (), (), _META_FIELDS, "binding", model="V1Binding"),
    Resource("leases", "Lease", "coordination.k8s.io", "v1", True, (), (), _META_FIELDS, "lease", model="V1Lease"),
    Resource("mutatingwebhookconfigurations", "MutatingWebhookConfiguration", "admissionregistration.k8s.io", "v1",
             False, (), (), ("metadata.name",), "mutatingwebhookconfiguration",
             model="V1MutatingWebhookConfiguration"),
)

BY_PATH: dict[tuple[str, str], Resource] = {(r.api_version, r.plural): r for r in RESOURCES}
STORED: tuple[Resource, ...] = tuple(r for r in RESOURCES if r.plural != "bindings")


def lookup(api_version: str, plural: str) -> Resource | None:
    return BY_PATH.get((api_version, plural))


def by_plural(plural: str) -> Resource:
    """The stored resource named `plural` (in-process callers; plurals are unique here)."""
    for resource in STORED:
        if resource.plural == plural:
            return resource
    raise KeyError(plural)


def api_versions() -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}


def _groups() -> list[str]:
    return sorted({r.group for r in RESOURCES if r.group})


def _group_doc(group: str) -> dict[str, Any]:
    gv = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {"name": group, "versions": [gv], "preferredVersion": gv}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group_doc(g) for g in _groups()]}


def api_group(group: str) -> dict[str, Any] | None:
    if group not in _groups():
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group)}


def resource_list(api_version: str) -> dict[str, Any] | None:
    """The APIResourceList of one group version (what `kubectl api-resources` reads)."""
    entries: list[dict[str, Any]] = []
    for r in RESOURCES:
        if r.api_version != api_version:
            continue
        verbs = ["create"] if r.plural == "bindings" else list(_VERBS)
        entry = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                 "verbs": verbs}
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        entries.append(entry)
        for sub in r.subresources:
            sub_kind = "Binding" if sub == "binding" else r.kind
            sub_verbs = ["create"] if sub == "binding" else ["get", "patch", "update"]
            entries.append({"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                            "kind": sub_kind, "verbs": sub_verbs})
    if not entries:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": entries}
