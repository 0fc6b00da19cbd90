"""Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for in its Accept header.

Columns follow the real printers for the types kubectl users look at (pods: Name, Ready, Status,
Restarts, Age, IP, Node; nodes: Name, Status, Roles, Age, Version); other types get Name and Age.
A client that does not ask for a Table gets the plain object or list.
"""

from __future__ import annotations

import calendar
import time
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
    if not stamp:
        return "<unknown>"
    seconds = max(0, int(time.time() - calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))))
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


def table(res: Resource, listed: dict[str, Any], version: str) -> dict[str, Any]:
    if res.plural == "pods":
        columns = [_column("Name", fmt="name"), _column("Ready"), _column("Status"), _column("Restarts", "integer"),
                   _column("Age"), _column("IP", priority=1), _column("Node", priority=1)]
        row = _pod_row
    elif res.plural == "nodes":
        columns = [_column("Name", fmt="name"), _column("Status"), _column("Roles"), _column("Age"),
                   _column("Version")]
        row = _node_row
    else:
        columns = [_column("Name", fmt="name"), _column("Age")]

        def row(obj: dict[str, Any]) -> list[Any]:
            return [obj["metadata"]["name"], _age(obj["metadata"].get("creationTimestamp"))]

    rows = [{"cells": row(obj), "object": {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}",
                                            "metadata": obj["metadata"]}} for obj in listed["items"]]
    return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}",
            "metadata": {"resourceVersion": listed["metadata"].get("resourceVersion", "")},
            "columnDefinitions": columns, "rows": rows}
