"""A thin adapter over the official `kubernetes` client: plain-dict objects, typed errors, merge
patches with optimistic concurrency and conflict retry, events, leases.

Objects are the wire JSON as dicts (camelCase), never the client's pydantic models: our codecs
read annotations from dicts, and converting every object to models and back costs more than the
requests themselves. The kinds are those the scheduler and the node agent use; each maps to the
generated client's read/list/patch/create/delete calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
Obj = dict[str, Any]


class KubeError(Exception):
    """A request to the API server failed. `status` is the HTTP code (0: no answer), `reason`
    the Status reason (NotFound, Conflict, …), `message` the server's message."""

    def __init__(self, what: str, status: int = 0, reason: str = "", message: str = "") -> None:
        self.status, self.reason, self.message = status, reason, message
        super().__init__(f"{what}: {status or 'no answer'} {reason}: {message}".rstrip(": "))


class CredentialsError(KubeError):
    """No usable kubeconfig or in-cluster service account."""


class NotFound(KubeError):
    """404."""


class Conflict(KubeError):
    """409: a stale resourceVersion (or an object that already exists)."""


def _error(what: str, exc: Exception) -> KubeError:
    if not isinstance(exc, ApiException):
        return KubeError(what, 0, type(exc).__name__, str(exc))
    reason, message = exc.reason or "", ""
    try:
        body = json.loads(exc.body or "{}")
        reason, message = body.get("reason") or reason, body.get("message") or ""
    except (ValueError, TypeError, AttributeError):
        message = str(exc.body or "")
    cls = {404: NotFound, 409: Conflict}.get(exc.status or 0, KubeError)
    return cls(what, exc.status or 0, reason, message)


@dataclass(frozen=True)
class _Kind:
    api: str  # "core" or "coordination"
    suffix: str  # the generated method suffix, e.g. "node" / "namespaced_pod"
    namespaced: bool
    list_all: str = ""  # the all-namespaces list method suffix


_KINDS: dict[str, _Kind] = {
    "nodes": _Kind("core", "node", False),
    "pods": _Kind("core", "namespaced_pod", True, "pod_for_all_namespaces"),
    "configmaps": _Kind("core", "namespaced_config_map", True, "config_map_for_all_namespaces"),
    "events": _Kind("core", "namespaced_event", True, "event_for_all_namespaces"),
    "leases": _Kind("coordination", "namespaced_lease", True, "lease_for_all_namespaces"),
}


def _unreadable(err: Exception) -> str:
    """Why a kubeconfig file could not be loaded, in one line."""
    if isinstance(err, yaml.YAMLError):
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"not valid YAML{where}"
    if isinstance(err, UnicodeError):
        return "not a text file"
    if isinstance(err, OSError):
        return f"{err.strerror or err}"
    return "not a kubeconfig (expected a mapping with clusters, users and contexts)"


class Kube:
    """One API client; every method takes and returns plain dicts. Thread-safe (urllib3 pool)."""

    def __init__(self, api_client: client.ApiClient, *, timeout: float = 10.0, retries: int = 5) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.retries = retries
        self._apis = {"core": client.CoreV1Api(api_client), "coordination": client.CoordinationV1Api(api_client)}

    @classmethod
    def connect(cls, kubeconfig: str | os.PathLike[str] | None = None, **kw: Any) -> Kube:
        """From `kubeconfig` (or $KUBECONFIG), else the in-cluster service account."""
        path = kubeconfig or os.environ.get("KUBECONFIG")
        try:
            if path:
                return cls(config.new_client_from_config(config_file=os.fspath(path)), **kw)
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as exc:
            where = f"kubeconfig {path}" if path else "the in-cluster service account (no $KUBECONFIG)"
            raise CredentialsError(f"cannot use {where}", 0, "Credentials", str(exc)) from exc
        except (yaml.YAMLError, UnicodeError, TypeError, AttributeError, KeyError, OSError) as exc:
            # the client's loader lets these through: a file that is not a kubeconfig at all
            raise CredentialsError(f"cannot use kubeconfig {path}", 0, "Credentials", _unreadable(exc)) from exc
        return cls(client.ApiClient(configuration), **kw)

    def close(self) -> None:
        self.api_client.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _call(self, kind: str, verb: str, what: str, *args: Any, all_namespaces: bool = False, **kw: Any) -> Obj:
        spec = _KINDS[kind]
        suffix = spec.list_all if all_namespaces else spec.suffix
        method = getattr(self._apis[spec.api], f"{verb}_{suffix}")
        try:
            response = method(*args, _preload_content=False, _request_timeout=self.timeout, **kw)
            data = response.data
        except Exception as exc:  # ApiException, or the transport's (connection refused, timeout)
            raise _error(what, exc) from exc
        return json.loads(data) if data else {}

    def _args(self, kind: str, name: str | None, namespace: str | None) -> tuple[Any, ...]:
        spec = _KINDS[kind]
        if spec.namespaced and not namespace:
            raise ValueError(f"{kind} are namespaced: give a namespace")
        return tuple(a for a in (name, namespace if spec.namespaced else None) if a is not None)

    # -- verbs ---------------------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        return self._call(kind, "read", f"get {kind} {_ref(namespace, name)}", *self._args(kind, name, namespace))

    def find(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """`get`, or None when it does not exist."""
        try:
            return self.get(kind, name, namespace)
        except NotFound:
            return None

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> list[Obj]:
        """Items of `kind` (every namespace when `namespace` is None for namespaced kinds)."""
        spec = _KINDS[kind]
        kw = {k: v for k, v in (("field_selector", field_selector), ("label_selector", label_selector)) if v}
        what = f"list {kind}" + (f" in {namespace}" if namespace else "")
        if spec.namespaced and namespace is None:
            body = self._call(kind, "list", what, all_namespaces=True, **kw)
        else:
            body = self._call(kind, "list", what, *self._args(kind, None, namespace), **kw)
        return list(body.get("items") or [])

    def patch(self, kind: str, name: str, body: Mapping[str, Any], namespace: str | None = None) -> Obj:
        """RFC 7386 merge patch (null deletes a key). A `metadata.resourceVersion` in `body`
        makes it conditional: a stale one raises Conflict."""
        return self._call(kind, "patch", f"patch {kind} {_ref(namespace, name)}",
                          *self._args(kind, name, namespace), dict(body), _content_type=MERGE_PATCH)

    def create(self, kind: str, body: Mapping[str, Any], namespace: str | None = None) -> Obj:
        name = (body.get("metadata") or {}).get("name") or (body.get("metadata") or {}).get("generateName", "")
        return self._call(kind, "create", f"create {kind} {_ref(namespace, name)}",
                          *self._args(kind, None, namespace), dict(body))

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        with contextlib.suppress(NotFound):
            self._call(kind, "delete", f"delete {kind} {_ref(namespace, name)}", *self._args(kind, name, namespace))

    def modify(
        self,
        kind: str,
        name: str,
        change: Callable[[Obj], Mapping[str, Any] | None],
        namespace: str | None = None,
        *,
        current: Obj | None = None,
    ) -> Obj | None:
        """Read-decide-patch with optimistic concurrency: `change(current)` returns the merge
        patch to apply (None: nothing to do); the patch carries the object's resourceVersion and
        is recomputed from a fresh read on each conflict (up to `retries` times, jittered
        exponential backoff from 50 ms). Returns the patched object, or None when unchanged.

        `current`: a copy of the object the caller read moments ago (a list item, say); the first
        try decides on it instead of reading again, and a conflict means it was stale."""
        delay, attempt = 0.05, 1
        fresh = current is None
        while True:
            if current is None:
                current, fresh = self.get(kind, name, namespace), True
            body = change(current)
            if body is None:
                if fresh:
                    return None
                current = None  # "nothing to do" on the caller's copy, which may be stale: read and decide again
                continue
            body = dict(body)
            meta = dict(body.get("metadata") or {})
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            body["metadata"] = meta
            try:
                return self.patch(kind, name, body, namespace)
            except Conflict:
                current = None
                if not fresh:
                    continue  # the caller's copy was stale: read now, no backoff, no attempt spent
                if attempt == self.retries:
                    raise
                log.debug("conflict on %s %s attempt=%d; retrying", kind, _ref(namespace, name), attempt)
                time.sleep(delay * (0.5 + random.random()))
                delay *= 2
                attempt += 1

    def annotate(
        self, kind: str, name: str, annotations: Mapping[str, str | None], namespace: str | None = None
    ) -> Obj:
        """Set (or, with None, remove) annotations; unconditional merge patch."""
        return self.patch(kind, name, {"metadata": {"annotations": dict(annotations)}}, namespace)

    # -- events --------------------------------------------------------------------------------

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str, component: str) -> None:
        """Record a core/v1 Event about `obj` (a Pod or a Node dict); failures are logged, not raised:
        an event is a courtesy to the operator, never a reason to fail the operation."""
        meta = obj.get("metadata") or {}
        kind = obj.get("kind") or ("Pod" if meta.get("namespace") else "Node")
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"name": f"{meta.get('name', 'object')}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {"kind": kind, "name": meta.get("name"), "namespace": meta.get("namespace"),
                               "uid": meta.get("uid"), "apiVersion": "v1",
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message[:1024], "type": type_,
            "source": {"component": component, "host": socket.gethostname()},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1, "reportingComponent": component,
        }  # fmt: skip
        try:
            self.create("events", body, namespace)
        except KubeError as exc:
            log.warning("cannot record event reason=%s object=%s error=%s", reason, meta.get("name"), exc)

    # -- leases --------------------------------------------------------------------------------

    def hold_lease(self, name: str, namespace: str, holder: str, duration_s: int) -> bool:
        """Take or renew a coordination.k8s.io Lease for `holder`; False while another holder's
        lease is still valid. Conflicts (a concurrent taker) count as not taken."""
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": holder, "leaseDurationSeconds": duration_s, "renewTime": stamp}
        lease = self.find("leases", name, namespace)
        if lease is None:
            try:
                self.create("leases", {"metadata": {"name": name, "namespace": namespace},
                                       "spec": {**spec, "acquireTime": stamp}}, namespace)
                return True
            except Conflict:
                return False
        current = lease.get("spec") or {}
        if current.get("holderIdentity") not in (None, "", holder):
            renewed = _parse_time(current.get("renewTime"))
            ttl = int(current.get("leaseDurationSeconds") or 0)
            if renewed is not None and (now - renewed).total_seconds() < ttl:
                return False
            spec["acquireTime"] = stamp
        try:
            self.patch("leases", name, {"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                                        "spec": spec}, namespace)
        except Conflict:
            return False
        return True


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _ref(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


__all__ = ["Conflict", "Kube", "KubeError", "NotFound", "Obj"]
