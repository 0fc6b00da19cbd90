"""The object store behind the simulated API server: one lock, one global resourceVersion.

Semantics follow the real API server where our components or the official client can tell:
- every write takes the next global resourceVersion; a no-op update keeps the old one and emits
  no event;
- UPDATE (and a PATCH whose body carries `metadata.resourceVersion`) with a stale version is
  409 Conflict; an update without a version is unconditional;
- the main resource ignores `status` and the `status` subresource ignores `spec` (pods, nodes,
  namespaces); pod spec is immutable except images, tolerations (additions) and
  activeDeadlineSeconds; `spec.nodeName` is set only through a Binding;
- pods are deleted gracefully: a pod bound to a node gets `deletionTimestamp` and
  `deletionGracePeriodSeconds` and stays until its kubelet deletes it with grace 0; an unbound or
  finished pod goes at once; finalizers hold any object until they are removed;
- objects handed out are copies; stored objects are never mutated in place (watch events share them).

In-process callers (the kubelet and scheduler simulators) use this class directly; HTTP clients
reach it through `hami.sim.apiserver.http`.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from hami.sim.apiserver import errors, patching, resources, selectors, watch
from hami.sim.apiserver.resources import Resource

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_STATUS_SUBRESOURCE = {"pods", "nodes", "namespaces"}
_POD_MUTABLE_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")

Key = tuple[str, str]  # (namespace or "", name)


def rfc3339(when: float | None = None) -> str:
    """Seconds-precision UTC time as the API server writes metadata timestamps."""
    moment = dt.datetime.fromtimestamp(time.time() if when is None else when, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _qos_class(pod: dict[str, Any]) -> str:
    containers = [*(pod.get("spec", {}).get("containers") or []), *(pod.get("spec", {}).get("initContainers") or [])]
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


class Store:
    """Thread-safe objects of every served resource, with history for watches."""

    def __init__(self, history: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._rv = 0
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {r.plural: {} for r in resources.STORED}
        self._logs: dict[str, watch.EventLog] = {r.plural: watch.EventLog(history) for r in resources.STORED}
        self._watchers: dict[str, set[watch.Watcher]] = {r.plural: set() for r in resources.STORED}
        self._closed = False
        for name in INITIAL_NAMESPACES:
            self.create("namespaces", None, {"metadata": {"name": name}})

    # ------------------------------------------------------------------------------------------
    # reads

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        res = resources.by_plural(plural)
        with self._lock:
            return copy.deepcopy(self._current(res, namespace, name))

    def list(self, plural: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None, limit: int | None = None,
             continue_token: str | None = None) -> dict[str, Any]:
        """A List object; `limit`/`continue` page through the current state (not a snapshot)."""
        res = resources.by_plural(plural)
        matches = selectors.predicate(label_selector, field_selector, res.field_labels)
        start: Key | None = None
        if continue_token:
            try:
                start = tuple(json.loads(base64.urlsafe_b64decode(continue_token.encode())))  # type: ignore[assignment]
            except (ValueError, TypeError) as exc:
                raise errors.bad_request(f"invalid continue token: {exc}") from exc
        with self._lock:
            rv = self._rv
            keys = sorted(k for k in self._objects[plural] if namespace is None or k[0] == namespace)
            items = []
            for key in keys:
                if start is not None and key <= start:
                    continue
                obj = self._objects[plural][key]
                if matches(obj):
                    items.append((key, obj))
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if limit and limit > 0 and len(items) > limit:
                meta["continue"] = base64.urlsafe_b64encode(json.dumps(list(items[limit - 1][0])).encode()).decode()
                meta["remainingItemCount"] = len(items) - limit
                items = items[:limit]
            out = []
            for _, obj in items:
                item = copy.deepcopy(obj)
                item.pop("kind", None)
                item.pop("apiVersion", None)
                out.append(item)
        return {"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta, "items": out}

    def watch(self, plural: str, namespace: str | None = None, *, resource_version: str | None = None,
              label_selector: str | None = None, field_selector: str | None = None) -> watch.Watcher:
        """Subscribe to changes. No version (or "0"): synthetic ADDED for current objects first."""
        res = resources.by_plural(plural)
        matches = selectors.predicate(label_selector, field_selector, res.field_labels)
        start: int | None = None
        if resource_version not in (None, "", "0"):
            try:
                start = int(str(resource_version))
            except ValueError as exc:
                raise errors.bad_request(f"invalid resource version {resource_version!r}") from exc
        with self._lock:
            watcher = watch.Watcher(namespace, matches, self._forget_watcher)
            if self._closed:
                watcher.close()
                return watcher
            log = self._logs[plural]
            if start is None:
                for key in sorted(self._objects[plural]):
                    obj = self._objects[plural][key]
                    watcher.offer(watch.Event(int(obj["metadata"]["resourceVersion"]), watch.ADDED, obj))
            elif start < log.compacted:
                watcher.offer_error(errors.gone(f"too old resource version: {start} ({log.compacted + 1})").status())
                return watcher
            else:
                for event in log.since(start):
                    watcher.offer(event)
            self._watchers[plural].add(watcher)
            return watcher

    def bookmark(self, watcher: watch.Watcher) -> int | None:
        """The version a BOOKMARK may carry now: the current one if nothing is queued for `watcher`."""
        with self._lock:
            if watcher.pending():
                return None
            return self._rv

    def _forget_watcher(self, watcher: watch.Watcher) -> None:
        with self._lock:
            for group in self._watchers.values():
                group.discard(watcher)

    def close(self) -> None:
        """End every watch (server shutdown); later watches close at once."""
        with self._lock:
            self._closed = True
            watchers = [w for group in self._watchers.values() for w in group]
        for watcher in watchers:
            watcher.close()

    # ------------------------------------------------------------------------------------------
    # writes

    def create(self, plural: str, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        res = resources.by_plural(plural)
        obj = copy.deepcopy(body) if isinstance(body, dict) else None
        if obj is None:
            raise errors.bad_request("the body of the request must be a JSON object")
        self._check_type(res, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        with self._lock:
            ns = self._scope(res, namespace, meta)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices(_GENERATE_ALPHABET, k=5))
            name = meta.get("name") or ""
            self._validate_name(res, name)
            if res.namespaced and ("", ns) not in self._objects["namespaces"]:
                raise errors.not_found("", "namespaces", ns)
            key = (ns, name)
            if key in self._objects[plural]:
                raise errors.already_exists(res.group, plural, name)
            for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink"):
                meta.pop(field, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = rfc3339(self._clock())
            self._defaults(res, obj)
            self._validate(res, obj)
            self._commit(res, key, obj, None)
            return copy.deepcopy(obj)

    def update(self, plural: str, namespace: str | None, name: str, body: dict[str, Any],
               subresource: str | None = None) -> dict[str, Any]:
        res = resources.by_plural(plural)
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        with self._lock:
            current = self._current(res, namespace, name)
            return copy.deepcopy(self._update_locked(res, current, copy.deepcopy(body), subresource))

    def patch(self, plural: str, namespace: str | None, name: str, body: Any,
              content_type: str = patching.MERGE, subresource: str | None = None) -> dict[str, Any]:
        """Apply a patch atomically; a `metadata.resourceVersion` it carries is a precondition."""
        res = resources.by_plural(plural)
        with self._lock:
            current = self._current(res, namespace, name)
            patched = copy.deepcopy(patching.apply(content_type, current, body))
            return copy.deepcopy(self._update_locked(res, current, patched, subresource))

    def delete(self, plural: str, namespace: str | None, name: str, *, grace_period_seconds: int | None = None,
               preconditions: dict[str, Any] | None = None) -> dict[str, Any]:
        """Delete (or start deleting); returns the object or a Success Status, as the real registry does."""
        res = resources.by_plural(plural)
        with self._lock:
            current = self._current(res, namespace, name)
            meta = current["metadata"]
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise errors.conflict(res.group, plural, name, f"Precondition failed: UID in precondition: "
                                      f"{pre['uid']}, UID in object meta: {meta['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise errors.conflict(res.group, plural, name, f"Precondition failed: ResourceVersion in "
                                      f"precondition: {pre['resourceVersion']}, ResourceVersion in object meta: "
                                      f"{meta['resourceVersion']}")
            grace = 0
            if res.graceful_delete:
                spec, phase = current.get("spec") or {}, (current.get("status") or {}).get("phase")
                grace = grace_period_seconds if grace_period_seconds is not None else \
                    int(spec.get("terminationGracePeriodSeconds", 30))
                if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
                    grace = 0
            if grace > 0 or meta.get("finalizers"):
                if meta.get("deletionTimestamp") and int(meta.get("deletionGracePeriodSeconds", 0)) <= grace:
                    return copy.deepcopy(current)  # already terminating, no shorter grace asked
                updated = copy.deepcopy(current)
                updated["metadata"]["deletionTimestamp"] = rfc3339(self._clock() + grace)
                updated["metadata"]["deletionGracePeriodSeconds"] = grace
                self._commit(res, self._key(current), updated, current)
                return copy.deepcopy(updated)
            removed = self._remove(res, current)
            if res.plural == "namespaces":
                for other in resources.STORED:
                    if other.namespaced:
                        for key in [k for k in self._objects[other.plural] if k[0] == name]:
                            self._remove(other, self._objects[other.plural][key])
            if res.returns_deleted_object:
                return copy.deepcopy(removed)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": res.group, "kind": plural, "uid": meta["uid"]}}

    def bind(self, namespace: str, name: str, binding: dict[str, Any]) -> dict[str, Any]:
        """POST pods/{name}/binding: set spec.nodeName once, mark PodScheduled; Status 201 back."""
        target = (binding or {}).get("target") or {}
        node = target.get("name")
        if not node:
            raise errors.invalid("Binding", name, [("target.name", "Required value")])
        if target.get("kind", "Node") not in ("Node", ""):
            raise errors.invalid("Binding", name, [("target.kind", f"Unsupported value: {target.get('kind')!r}")])
        res = resources.by_plural("pods")
        with self._lock:
            pod = self._current(res, namespace, name)
            meta = pod["metadata"]
            want_uid = ((binding.get("metadata") or {}).get("uid"))
            if want_uid and want_uid != meta["uid"]:
                raise errors.conflict("", "pods/binding", name, f"Precondition failed: UID in precondition: "
                                      f"{want_uid}, UID in object meta: {meta['uid']}")
            if meta.get("deletionTimestamp"):
                raise errors.conflict("", "pods/binding", name,
                                      f"pod {name} is being deleted, cannot be assigned to a host")
            if (pod.get("spec") or {}).get("nodeName"):
                raise errors.conflict("", "pods/binding", name,
                                      f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"')
            updated = copy.deepcopy(pod)
            updated["spec"]["nodeName"] = node
            extra = (binding.get("metadata") or {}).get("annotations") or {}
            if extra:
                updated["metadata"].setdefault("annotations", {}).update(extra)
            set_condition(updated, "PodScheduled", "True", now=self._clock())
            self._commit(res, self._key(pod), updated, pod)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # ------------------------------------------------------------------------------------------
    # internals (call with the lock held)

    def _key(self, obj: dict[str, Any]) -> Key:
        meta = obj["metadata"]
        return meta.get("namespace") or "", meta["name"]

    def _current(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        key = ((namespace or "") if res.namespaced else "", name)
        obj = self._objects[res.plural].get(key)
        if obj is None:
            raise errors.not_found(res.group, res.plural, name)
        return obj

    def _scope(self, res: Resource, namespace: str | None, meta: dict[str, Any]) -> str:
        if not res.namespaced:
            meta.pop("namespace", None)
            return ""
        given = meta.get("namespace")
        ns = namespace or given or "default"
        if given and given != ns:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent "
                                     "on the request")
        meta["namespace"] = ns
        return ns

    def _check_type(self, res: Resource, obj: dict[str, Any]) -> None:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind and kind != res.kind:
            raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                                     f"version ({res.api_version})" if api_version != res.api_version
                                     else f"kind {kind!r} does not match the resource {res.plural!r}")
        if api_version and api_version != res.api_version:
            raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                                     f"version ({res.api_version})")
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version

    def _validate_name(self, res: Resource, name: str) -> None:
        if not name:
            raise errors.invalid(res.kind, "", [("metadata.name", "Required value: name or generateName is required")])
        pattern, limit = (_LABEL, 63) if res.plural == "namespaces" else (_SUBDOMAIN, 253)
        if res.plural == "events":
            return  # event names embed a dot-separated hex timestamp; the real check is looser too
        if len(name) > limit or not pattern.match(name):
            raise errors.invalid(res.kind, name, [("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 '
                                                   f"name must consist of lower case alphanumeric characters, '-' "
                                                   f"or '.', and must start and end with an alphanumeric character")])

    def _defaults(self, res: Resource, obj: dict[str, Any]) -> None:
        if res.plural == "pods":
            spec = obj.setdefault("spec", {})
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("priority", 0)
            spec.setdefault("securityContext", {})
            spec.setdefault("enableServiceLinks", True)
            for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
                if isinstance(container, dict):
                    container.setdefault("resources", {})
                    container.setdefault("terminationMessagePath", "/dev/termination-log")
                    container.setdefault("terminationMessagePolicy", "File")
                    container.setdefault("imagePullPolicy", "IfNotPresent")
                    res_ = container["resources"]
                    if isinstance(res_, dict) and res_.get("limits") and not res_.get("requests"):
                        res_["requests"] = dict(res_["limits"])  # requests default to limits
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj)}
        elif res.plural == "namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif res.plural == "nodes":
            obj.setdefault("spec", {})
            obj.setdefault("status", {})

    def _validate(self, res: Resource, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        for field in ("labels", "annotations"):
            value = meta.get(field)
            if value is not None and (not isinstance(value, dict)
                                      or not all(isinstance(v, str) for v in value.values())):
                raise errors.invalid(res.kind, meta.get("name", ""), [(f"metadata.{field}",
                                                                       "Invalid value: values must be strings")])
        if meta.get("labels"):
            try:
                selectors.parse_label_selector(",".join(f"{k}={v}" for k, v in meta["labels"].items()))
            except errors.StatusError as exc:
                raise errors.invalid(res.kind, meta.get("name", ""), [("metadata.labels", exc.message)]) from exc
        if res.plural == "pods":
            containers = (obj.get("spec") or {}).get("containers")
            causes = []
            if not containers or not isinstance(containers, list):
                causes.append(("spec.containers", "Required value"))
            else:
                for i, container in enumerate(containers):
                    if not isinstance(container, dict) or not container.get("name"):
                        causes.append((f"spec.containers[{i}].name", "Required value"))
                    elif not container.get("image"):
                        causes.append((f"spec.containers[{i}].image", "Required value"))
            if causes:
                raise errors.invalid(res.kind, meta.get("name", ""), causes)

    def _update_locked(self, res: Resource, current: dict[str, Any], new: dict[str, Any],
                       subresource: str | None) -> dict[str, Any]:
        name = current["metadata"]["name"]
        if subresource not in (None, "status") or (subresource == "status" and res.plural not in _STATUS_SUBRESOURCE):
            raise errors.path_not_found(f"{res.plural}/{name}/{subresource}")
        self._check_type(res, new)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if meta.get("name", name) != name:
            raise errors.bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the "
                                     f"URL ({name})")
        if res.namespaced and meta.get("namespace", current["metadata"]["namespace"]) != \
                current["metadata"]["namespace"]:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on "
                                     "the request")
        wanted = meta.get("resourceVersion")
        if wanted and str(wanted) != current["metadata"]["resourceVersion"]:
            raise errors.conflict(res.group, res.plural, name, errors.STALE)
        old_meta = current["metadata"]
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace",
                      "name", "generateName"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if res.plural in _STATUS_SUBRESOURCE:
            if subresource == "status":
                if "spec" in current:
                    new["spec"] = copy.deepcopy(current["spec"])
                else:
                    new.pop("spec", None)
            elif "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        if res.plural == "pods" and subresource is None:
            self._check_pod_spec_update(current, new)
        self._validate(res, new)
        if new == current:
            return current  # a no-op write: same version, no event
        if old_meta.get("deletionTimestamp") and not meta.get("finalizers") and \
                not int(old_meta.get("deletionGracePeriodSeconds") or 0):
            return self._remove(res, new)
        self._commit(res, self._key(current), new, current)
        return new

    def _check_pod_spec_update(self, current: dict[str, Any], new: dict[str, Any]) -> None:
        def comparable(spec: dict[str, Any]) -> dict[str, Any]:
            spec = copy.deepcopy(spec or {})
            for field in _POD_MUTABLE_SPEC:
                spec.pop(field, None)
            for group in ("containers", "initContainers"):
                for container in spec.get(group) or []:
                    if isinstance(container, dict):
                        container.pop("image", None)
            return spec

        if comparable(current.get("spec")) != comparable(new.get("spec")):
            raise errors.invalid("Pod", current["metadata"]["name"], [(
                "spec", "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
                "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions "
                "to existing tolerations) or `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it "
                "was previously negative)")])

    def _commit(self, res: Resource, key: Key, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[res.plural][key] = obj
        self._publish(res, watch.Event(self._rv, watch.ADDED if old is None else watch.MODIFIED, obj, old))

    def _remove(self, res: Resource, current: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        del self._objects[res.plural][self._key(current)]
        self._publish(res, watch.Event(self._rv, watch.DELETED, gone, current))
        return gone

    def _publish(self, res: Resource, event: watch.Event) -> None:
        self._logs[res.plural].append(event)
        for watcher in list(self._watchers[res.plural]):
            watcher.offer(event)


def set_condition(obj: dict[str, Any], kind: str, status: str, reason: str | None = None,
                  message: str | None = None, now: float | None = None) -> bool:
    """Upsert a status condition in place; the transition time moves only when the status does."""
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    stamp = rfc3339(now)
    for condition in conditions:
        if condition.get("type") == kind:
            changed = condition.get("status") != status
            if not changed and condition.get("reason") == reason and condition.get("message") == message:
                return False
            if changed:
                condition["lastTransitionTime"] = stamp
            condition.update({"status": status, "lastProbeTime": None})
            for field, value in (("reason", reason), ("message", message)):
                if value is None:
                    condition.pop(field, None)
                else:
                    condition[field] = value
            return True
    condition = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": stamp}
    if reason is not None:
        condition["reason"] = reason
    if message is not None:
        condition["message"] = message
    conditions.append(condition)
    return True
