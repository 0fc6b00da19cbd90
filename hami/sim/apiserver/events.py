"""core/v1 Events written by the simulated components (scheduler driver, kubelet), as theirs do."""

from __future__ import annotations

import logging
import time
from typing import Any

from hami.sim.apiserver import errors
from hami.sim.apiserver.store import Store, rfc3339

log = logging.getLogger(__name__)


def record(store: Store, involved: dict[str, Any], kind: str, reason: str, message: str, component: str,
           host: str | None = None) -> None:
    """Create an Event about `involved` (an object dict); failures are logged, never raised."""
    meta = involved.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    now = time.time()
    source = {"component": component}
    if host:
        source["host"] = host
    event = {
        "metadata": {"name": f"{meta.get('name', 'unknown')}.{time.time_ns():x}", "namespace": namespace},
        "involvedObject": {"kind": involved.get("kind", ""), "apiVersion": involved.get("apiVersion", "v1"),
                           "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
                           "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", "")},
        "reason": reason,
        "message": message,
        "type": kind,
        "source": source,
        "firstTimestamp": rfc3339(now),
        "lastTimestamp": rfc3339(now),
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": host or "",
    }
    try:
        store.create("events", namespace, event)
    except errors.StatusError:
        log.warning("could not record event reason=%s object=%s/%s", reason, namespace, meta.get("name"),
                    exc_info=True)
