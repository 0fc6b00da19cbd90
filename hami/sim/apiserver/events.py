"""core/v1 Events written by the simulated components (scheduler driver, kubelet), as theirs do.

Like client-go's event recorder (its EventCorrelator), a repeat of an identical event (same
source, involved object, type, reason and message) does not create a new Event: the existing
one is patched with `count` + 1 and a new `lastTimestamp`, so `kubectl describe` shows
"(x5 over 2m)". The correlation cache is per store, bounded like client-go's LRU (4096); an
event deleted meanwhile is created afresh. Similar-but-different messages are not combined
(client-go's EventAggregator is not modelled).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

from hami.sim.apiserver import errors
from hami.sim.apiserver.store import Store, rfc3339

log = logging.getLogger(__name__)

CACHE_SIZE = 4096
_Key = tuple[str, ...]
_caches: weakref.WeakKeyDictionary[Store, OrderedDict[_Key, tuple[str, str, int]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _key(involved: dict[str, Any], kind: str, reason: str, message: str, component: str, host: str | None) -> _Key:
    meta = involved.get("metadata") or {}
    return (component, host or "", str(involved.get("kind", "")), str(involved.get("apiVersion", "v1")),
            str(meta.get("namespace", "")), str(meta.get("name", "")), str(meta.get("uid", "")), kind, reason,
            message)


def record(store: Store, involved: dict[str, Any], kind: str, reason: str, message: str, component: str,
           host: str | None = None) -> None:
    """Record an Event about `involved` (an object dict), or count a repeat; failures are logged, never raised."""
    meta = involved.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    key = _key(involved, kind, reason, message, component, host)
    now = time.time()
    with _lock:
        cache = _caches.setdefault(store, OrderedDict())
        seen = cache.get(key)
    if seen is not None:
        ns, name, count = seen
        try:
            store.patch("events", ns, name, {"count": count + 1, "lastTimestamp": rfc3339(now), "message": message},
                        "application/strategic-merge-patch+json")
            _remember(store, key, (ns, name, count + 1))
            return
        except errors.StatusError as exc:
            if exc.code != 404:
                log.warning("could not update event reason=%s object=%s/%s", reason, namespace, meta.get("name"),
                            exc_info=True)
                return
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
        created = store.create("events", namespace, event)
    except errors.StatusError:
        log.warning("could not record event reason=%s object=%s/%s", reason, namespace, meta.get("name"),
                    exc_info=True)
        return
    _remember(store, key, (namespace, created["metadata"]["name"], 1))


def _remember(store: Store, key: _Key, value: tuple[str, str, int]) -> None:
    with _lock:
        cache = _caches.setdefault(store, OrderedDict())
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
