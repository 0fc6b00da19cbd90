"""The embedded API server's Store interface, answered by a real API server over HTTPS.

hami.sim.kubelet talks to a Store in-process (get/create/update/patch/delete/watch on plain
dicts, StatusError on failure). `RemoteStore` offers the same calls through the official
client's request path, so the simulated kubelet (and anything else written against the
Store) runs unchanged against a real kube-apiserver, with whatever identity its kubeconfig
carries (a node's client certificate: the Node authorizer and NodeRestriction then judge it).

Only the kinds the simulated nodes use are mapped (`RESOURCES`); others raise ValueError.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections import deque
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from hami.sim.apiserver import errors
from hami.sim.apiserver.watch import Watcher

log = logging.getLogger(__name__)

MERGE = "application/merge-patch+json"
RESOURCES: dict[str, tuple[str, bool]] = {  # plural -> (API prefix, namespaced)
    "pods": ("/api/v1", True),
    "nodes": ("/api/v1", False),
    "events": ("/api/v1", True),
    "namespaces": ("/api/v1", False),
    "configmaps": ("/api/v1", True),
    "leases": ("/apis/coordination.k8s.io/v1", True),
}
WATCH_SECONDS = 300


def _path(plural: str, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
    try:
        prefix, namespaced = RESOURCES[plural]
    except KeyError:
        raise ValueError(f"RemoteStore maps {sorted(RESOURCES)}, not {plural!r}; add it to RESOURCES") from None
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced and namespace else f"{prefix}/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def _status_error(exc: ApiException) -> errors.StatusError:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return errors.StatusError(int(body.get("code") or exc.status or 0), body.get("reason") or exc.reason or "",
                              body.get("message") or str(exc.body or exc.reason), body.get("details"))


class RemoteStore:
    """Store calls over HTTP; `close()` ends open watches and the client."""

    def __init__(self, api_client: k8s.ApiClient, *, timeout: float = 10.0) -> None:
        self.api = api_client
        self.timeout = timeout
        self._watchers: set[RemoteWatcher] = set()
        self._lock = threading.Lock()

    def request(self, method: str, path: str, *, body: Any = None, query: list[tuple[str, Any]] | None = None,
                content_type: str = "application/json", stream: bool = False, timeout: float | None = None) -> Any:
        """One call; the decoded JSON (or, with `stream`, the open urllib3 response). StatusError on failure.

        Uses the client's own request path (`param_serialize` + `call_api`, kubernetes >= 36), so
        authentication, TLS and proxies are exactly what the kubeconfig says."""
        if not hasattr(self.api, "param_serialize"):
            raise RuntimeError("RemoteStore needs the official client's kubernetes>=36 request API (param_serialize)")
        try:
            request = self.api.param_serialize(
                method, path, query_params=query or [], body=body,
                header_params={"Accept": "application/json", "Content-Type": content_type},
                auth_settings=["BearerToken"])
            answer = self.api.call_api(*request, _request_timeout=None if stream else (timeout or self.timeout))
        except ApiException as exc:
            raise _status_error(exc) from None
        if not 200 <= answer.status <= 299:
            raise _status_error(ApiException(status=answer.status, reason=answer.reason,
                                             body=answer.read().decode(errors="replace")))
        if stream:
            return answer.response
        return json.loads(answer.read() or b"{}")

    # -- the Store calls hami.sim uses

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        return self.request("GET", _path(plural, namespace, name))

    def list(self, plural: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None) -> dict[str, Any]:
        query = [(k, v) for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v]
        return self.request("GET", _path(plural, namespace), query=query)

    def create(self, plural: str, namespace: str | None, body: Any, **_: Any) -> dict[str, Any]:
        return self.request("POST", _path(plural, namespace), body=body)

    def update(self, plural: str, namespace: str | None, name: str, body: Any, subresource: str | None = None,
               **_: Any) -> dict[str, Any]:
        return self.request("PUT", _path(plural, namespace, name, subresource), body=body)

    def patch(self, plural: str, namespace: str | None, name: str, body: Any, content_type: str = MERGE,
              subresource: str | None = None, **_: Any) -> dict[str, Any]:
        return self.request("PATCH", _path(plural, namespace, name, subresource), body=body,
                            content_type=content_type)

    def delete(self, plural: str, namespace: str | None, name: str, *, grace_period_seconds: int | None = None,
               preconditions: dict[str, Any] | None = None, propagation_policy: str | None = None,
               **_: Any) -> dict[str, Any]:
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            options["preconditions"] = preconditions
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        return self.request("DELETE", _path(plural, namespace, name), body=options)

    def watch(self, plural: str, namespace: str | None = None, *, resource_version: str | None = None,
              label_selector: str | None = None, field_selector: str | None = None,
              send_initial_events: bool | None = None) -> RemoteWatcher:
        """As Store.watch: without a version, an ADDED for every current object first."""
        _path(plural, namespace)  # unknown kinds fail here, not in the thread
        watcher = RemoteWatcher(self, plural, namespace, label_selector, field_selector,
                                None if send_initial_events else resource_version)
        with self._lock:
            self._watchers.add(watcher)
        watcher.start()
        return watcher

    def close(self) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.close()
        self.api.close()

    def _forget(self, watcher: RemoteWatcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)


class RemoteWatcher:
    """A list-then-watch loop in a thread, read like hami.sim's Watcher (`next_event`, `close`).

    It resumes from the last resourceVersion when the server ends the stream, and relists on
    410 Gone, reporting objects that vanished meanwhile as DELETED, as an informer does."""

    CLOSED = Watcher.CLOSED

    def __init__(self, store: RemoteStore, plural: str, namespace: str | None, label_selector: str | None,
                 field_selector: str | None, resource_version: str | None) -> None:
        self.store = store
        self.path = _path(plural, namespace)
        self.selectors = [(k, v) for k, v in (("labelSelector", label_selector),
                                              ("fieldSelector", field_selector)) if v]
        self.rv = resource_version
        self._known: dict[str, dict[str, Any]] = {}
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch {self.path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._closed:
                if self.rv is None:
                    self._relist()
                self._stream()
        except errors.StatusError as exc:
            if not self._closed:
                self._put(("ERROR", {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": exc.code,
                                     "reason": exc.reason, "message": exc.message}))
        except Exception:
            if not self._closed:
                log.exception("watch %s failed", self.path)
        finally:
            self.close()

    def _relist(self) -> None:
        listed = self.store.request("GET", self.path, query=self.selectors)
        # list items come without kind and apiVersion; watch events and the embedded Store carry them
        kind = {"kind": str(listed.get("kind", "")).removesuffix("List"), "apiVersion": listed.get("apiVersion", "")}
        seen = {}
        for item in listed.get("items") or []:
            item = {**kind, **item}
            key = _key(item)
            seen[key] = item
            self._put(("MODIFIED" if key in self._known else "ADDED", item))
        for key, gone in self._known.items():
            if key not in seen:
                self._put(("DELETED", gone))
        self._known = seen
        self.rv = (listed.get("metadata") or {}).get("resourceVersion")

    def _stream(self) -> None:
        query = [*self.selectors, ("watch", "true"), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", WATCH_SECONDS), ("resourceVersion", self.rv)]
        self._response = self.store.request("GET", self.path, query=query, stream=True)
        try:
            for line in self._response:
                if self._closed:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        self.rv = None  # expired: relist
                        return
                    raise errors.StatusError(obj.get("code") or 0, obj.get("reason", ""), obj.get("message", ""))
                self.rv = (obj.get("metadata") or {}).get("resourceVersion") or self.rv
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self._known.pop(_key(obj), None)
                else:
                    self._known[_key(obj)] = obj
                self._put((kind, obj))
        finally:
            with contextlib.suppress(Exception):
                self._response.release_conn()

    def _put(self, item: tuple[str, dict[str, Any]]) -> None:
        with self._cond:
            if not self._closed:
                self._queue.append(item)
                self._cond.notify()

    def next_event(self, timeout: float | None, copy: bool = True) -> tuple[str, dict[str, Any]] | object | None:
        """The next (type, object), None on timeout, or CLOSED once closed and drained."""
        with self._cond:
            if not self._queue and not self._closed:
                self._cond.wait(timeout)
            if self._queue:
                return self._queue.popleft()
            return Watcher.CLOSED if self._closed else None

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
        self.store._forget(self)

    @property
    def closed(self) -> bool:
        return self._closed


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name')}"
