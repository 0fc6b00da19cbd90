"""Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for in its Accept header.

Columns follow the real printers for the types kubectl users look at (pods: Name, Ready, Status,
Restarts, Age, IP, Node; nodes: Name, Status, Roles, Age, Version; events: Last Seen, Type,
Reason, Object, Message, ...; namespaces, configmaps, leases, webhook configurations); other
types get Name and Age.
A client that does not ask for a Table gets the plain object or list.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import Any

from hami.sim.apiserver.resources import Resource


def wants_table(accept: str | None) -> str | None:
    """The Table version the Accept header asks for, if any."""
    if not accept or "as=Table" not in accept:
        return None
    for option in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in option.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return params["v"]
    return None


def _age(stamp: str | None) -> str:
    try:
        then = calendar.timegm(time.strptime(str(stamp).split(".")[0].rstrip("Z") + "Z", "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<unknown>"
    seconds = max(0, int(time.time() - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= 120):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _column(name: str, kind: str = "string", priority: int = 0, fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": kind, "format": fmt, "description": name, "priority": priority}


def _pod_row(pod: dict[str, Any]) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    phase = status.get("reason") or status.get("phase") or "Unknown"
    if pod["metadata"].get("deletionTimestamp"):
        phase = "Terminating"
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    return [pod["metadata"]["name"], f"{ready}/{len(spec.get('containers') or [])}", phase, restarts,
            _age(pod["metadata"].get("creationTimestamp")), status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>"]


def _node_row(node: dict[str, Any]) -> list[Any]:
    conditions = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    state = "Ready" if conditions.get("Ready") == "True" else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = node["metadata"].get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    version = ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
    return [node["metadata"]["name"], state, ",".join(roles) or "<none>",
            _age(node["metadata"].get("creationTimestamp")), version]


def _event_row(event: dict[str, Any]) -> list[Any]:
    involved = event.get("involvedObject") or {}
    source = event.get("source") or {}
    last = event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp")
    return [_age(last), event.get("type", ""), event.get("reason", ""),
            f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}", involved.get("fieldPath", ""),
            ", ".join(v for v in (source.get("component"), source.get("host")) if v),
            event.get("message", ""), _age(event.get("firstTimestamp") or last), str(event.get("count", 1)),
            event["metadata"]["name"]]


def _name_age(obj: dict[str, Any]) -> list[Any]:
    return [obj["metadata"]["name"], _age(obj["metadata"].get("creationTimestamp"))]


_PRINTERS: dict[str, tuple[list[dict[str, Any]], Callable[[dict[str, Any]], list[Any]]]] = {
    "pods": ([_column("Name", fmt="name"), _column("Ready"), _column("Status"), _column("Restarts", "integer"),
              _column("Age"), _column("IP", priority=1), _column("Node", priority=1)], _pod_row),
    "nodes": ([_column("Name", fmt="name"), _column("Status"), _column("Roles"), _column("Age"), _column("Version")],
              _node_row),
    "events": ([_column("Last Seen"), _column("Type"), _column("Reason"), _column("Object"),
                _column("Subobject", priority=1), _column("Source", priority=1), _column("Message"),
                _column("First Seen", priority=1), _column("Count", priority=1),
                _column("Name", fmt="name", priority=1)], _event_row),
    "namespaces": ([_column("Name", fmt="name"), _column("Status"), _column("Age")],
                   lambda o: [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""),
                              _age(o["metadata"].get("creationTimestamp"))]),
    "configmaps": ([_column("Name", fmt="name"), _column("Data", "integer"), _column("Age")],
                   lambda o: [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                              _age(o["metadata"].get("creationTimestamp"))]),
    "leases": ([_column("Name", fmt="name"), _column("Holder"), _column("Age")],
               lambda o: [o["metadata"]["name"], (o.get("spec") or {}).get("holderIdentity") or "",
                          _age(o["metadata"].get("creationTimestamp"))]),
    "mutatingwebhookconfigurations": ([_column("Name", fmt="name"), _column("Webhooks", "integer"), _column("Age")],
                                      lambda o: [o["metadata"]["name"], len(o.get("webhooks") or []),
                                                 _age(o["metadata"].get("creationTimestamp"))]),
}


def table(res: Resource, listed: dict[str, Any], version: str, columns: bool = True) -> dict[str, Any]:
    """A Table of `listed`'s items; `columns=False` leaves out the column definitions (later watch events)."""
    definitions, row = _PRINTERS.get(res.plural, ([_column("Name", fmt="name"), _column("Age")], _name_age))
    rows = [{"cells": row(obj), "object": {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}",
                                            "metadata": obj["metadata"]}} for obj in listed["items"]]
    return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}",
            "metadata": {"resourceVersion": listed["metadata"].get("resourceVersion", "")},
            "columnDefinitions": definitions if columns else [], "rows": rows}
