"""The object store behind the simulated API server: one lock, one global resourceVersion.

Semantics follow the real API server where our components or the official client can tell:
- a body is decoded against the served type first (`schema`): malformed input is a 400 naming
  the field, unknown fields are dropped (or refused/warned per `fieldValidation`), quantities
  and times are stored in canonical form; then defaulting, mutating admission (`admission`
  hook), the create/update strategy and validation (`validation`) run, in kube-apiserver's order;
- every write takes the next global resourceVersion; a no-op update keeps the old one and emits
  no event; `dry_run` runs every step and stores nothing;
- UPDATE (and a PATCH whose body carries `metadata.resourceVersion`) with a stale version is
  409 Conflict; an update without a version is unconditional (retried if admission raced);
- the main resource ignores `status` and the `status` subresource ignores `spec` (pods, nodes,
  namespaces); pod spec is immutable except images, tolerations (additions) and
  activeDeadlineSeconds; `spec.nodeName` is set only through a Binding;
- pods are deleted gracefully: a pod bound to a node gets `deletionTimestamp` and
  `deletionGracePeriodSeconds` and stays until its kubelet deletes it with grace 0; an unbound or
  finished pod goes at once; finalizers hold any object until they are removed;
- owner references are garbage-collected as the propagation policy says: Background (the
  default) deletes dependents once their last owner is gone, Foreground holds the owner until
  its dependents are gone, Orphan strips the references;
- a LIST may read the past: `resourceVersionMatch=Exact` and `continue` tokens serve the state
  at that version, rebuilt from the watch log (410 once the log no longer reaches back);
- objects handed out are copies; stored objects are never mutated in place (watch events share them).

In-process callers (the kubelet and scheduler simulators) use this class directly; HTTP clients
reach it through `hami.sim.apiserver.server`.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hami.sim.apiserver import errors, patching, resources, schema, selectors, validation, watch
from hami.sim.apiserver.resources import Resource

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_STATUS_SUBRESOURCE = {"pods", "nodes", "namespaces"}
_POD_MUTABLE_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")
FIELD_VALIDATION = ("Ignore", "Warn", "Strict")
PROPAGATION = ("Orphan", "Background", "Foreground")
FOREGROUND = "foregroundDeletion"
_UPDATE_RETRIES = 5

Key = tuple[str, str]  # (namespace or "", name)


def rfc3339(when: float | None = None) -> str:
    """Seconds-precision UTC time as the API server writes metadata timestamps."""
    moment = dt.datetime.fromtimestamp(time.time() if when is None else when, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(when: float | None = None) -> str:
    """Microsecond-precision UTC time (metav1.MicroTime: lease renewals, event times)."""
    moment = dt.datetime.fromtimestamp(time.time() if when is None else when, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class AdmissionAttributes:
    """What mutating admission is told about one write (admission.Attributes)."""

    operation: str  # CREATE, UPDATE, DELETE
    resource: Resource
    subresource: str  # "" for the main resource
    namespace: str
    name: str
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool
    options: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # webhook warnings, for the Warning headers


class Admission:
    """The admission hook the store calls outside its lock; the default admits everything unchanged."""

    def wants(self, operation: str, res: Resource, subresource: str) -> bool:
        del operation, res, subresource
        return False

    def admit(self, attributes: AdmissionAttributes) -> dict[str, Any] | None:
        return attributes.object

    def close(self) -> None:
        """Release what admission holds (connections); the server is stopping."""


def _owner_uids(obj: dict[str, Any] | None) -> set[str]:
    if obj is None:
        return set()
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return {r["uid"] for r in refs if isinstance(r, dict) and r.get("uid")}


class Store:
    """Thread-safe objects of every served resource, with history for watches."""

    def __init__(self, history: int = 1000, clock: Callable[[], float] = time.time,
                 admission: Admission | None = None) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._rv = 0
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {r.plural: {} for r in resources.STORED}
        self._logs: dict[str, watch.EventLog] = {r.plural: watch.EventLog(history) for r in resources.STORED}
        self._watchers: dict[str, set[watch.Watcher]] = {r.plural: set() for r in resources.STORED}
        self._uids: dict[str, tuple[str, Key]] = {}  # uid -> (plural, key), for owner references
        self._dependents: dict[str, set[tuple[str, Key]]] = {}  # owner uid -> dependents
        self._closed = False
        self.admission = admission or Admission()
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
             field_selector: str | None = None, limit: int | None = None, continue_token: str | None = None,
             resource_version: str | None = None, resource_version_match: str | None = None) -> dict[str, Any]:
        """A List object. Pages (`limit`/`continue`) and `resourceVersionMatch=Exact` read one consistent past state."""
        res = resources.by_plural(plural)
        matches = selectors.predicate(label_selector, field_selector, res.field_labels)
        _check_list_options(resource_version, resource_version_match, continue_token)
        wanted = _parse_rv(resource_version) if resource_version not in (None, "") else None
        start: Key | None = None
        at: int | None = None
        if continue_token:
            at, start = _decode_continue(continue_token)
        elif resource_version_match == "Exact":
            at = wanted
        with self._lock:
            if wanted is not None and wanted > self._rv:
                raise errors.StatusError(504, "Timeout", f"Timeout: Too large resource version: {wanted}, current: "
                                         f"{self._rv}", {"causes": [{"reason": "ResourceVersionTooLarge",
                                                                     "message": "Too large resource version"}],
                                                         "retryAfterSeconds": 1})
            if at is None and limit and limit > 0:
                at = self._rv  # the first page fixes the snapshot the continue token refers to
            objects = self._state_at(res, at, bool(continue_token)) if at is not None and at != self._rv \
                else self._objects[plural]
            rv = self._rv if at is None else at
            items = []
            for key in sorted(k for k in objects if namespace is None or k[0] == namespace):
                if start is not None and key <= start:
                    continue
                obj = objects[key]
                if matches(obj):
                    items.append((key, obj))
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if limit and limit > 0 and len(items) > limit:
                last = items[limit - 1][0]
                meta["continue"] = base64.urlsafe_b64encode(json.dumps([rv, *last]).encode()).decode()
                meta["remainingItemCount"] = len(items) - limit
                items = items[:limit]
            out = []
            for _, obj in items:
                item = copy.deepcopy(obj)
                item.pop("kind", None)
                item.pop("apiVersion", None)
                out.append(item)
        return {"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta, "items": out}

    def _state_at(self, res: Resource, rv: int, continuing: bool) -> dict[Key, dict[str, Any]]:
        """The objects of `res` as they were at version `rv`: the live ones with later events undone."""
        log = self._logs[res.plural]
        if rv < log.compacted:
            if continuing:
                raise errors.gone("The provided continue parameter is too old to display a consistent list "
                                  "result. You can start a new list without the continue parameter.")
            raise errors.gone("The resourceVersion for the provided list is too old.")
        state = dict(self._objects[res.plural])
        for event in reversed(log.since(rv)):
            key = self._key(event.obj)
            if event.old is None:
                state.pop(key, None)
            else:
                state[key] = event.old
        return state

    def watch(self, plural: str, namespace: str | None = None, *, resource_version: str | None = None,
              label_selector: str | None = None, field_selector: str | None = None,
              send_initial_events: bool | None = None) -> watch.Watcher:
        """Subscribe to changes. No version (or "0"), or `send_initial_events`: synthetic ADDED for current
        objects first (then, with `send_initial_events`, a BOOKMARK marking their end)."""
        res = resources.by_plural(plural)
        matches = selectors.predicate(label_selector, field_selector, res.field_labels)
        start: int | None = None
        if resource_version not in (None, "", "0"):
            start = _parse_rv(str(resource_version))
        with self._lock:
            watcher = watch.Watcher(namespace, matches, self._forget_watcher)
            if self._closed:
                watcher.close()
                return watcher
            log = self._logs[plural]
            if send_initial_events or (start is None and send_initial_events is None):
                for key in sorted(self._objects[plural]):
                    obj = self._objects[plural][key]
                    watcher.offer(watch.Event(int(obj["metadata"]["resourceVersion"]), watch.ADDED, obj))
                if send_initial_events:
                    watcher.offer_line(watch.initial_events_end(res.kind, res.api_version, self._rv))
            elif start is not None and start < log.compacted:
                watcher.offer_error(errors.gone(f"too old resource version: {start} ({log.compacted + 1})").status())
                return watcher
            elif start is not None:
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

    def create(self, plural: str, namespace: str | None, body: Any, *, dry_run: bool = False,
               field_validation: str = "Warn", warnings: list[str] | None = None) -> dict[str, Any]:
        """Decode, default, admit, validate and store a new object; `warnings` collects what the client hears."""
        res = resources.by_plural(plural)
        obj = self._decode(res, body, field_validation, warnings)
        meta = obj["metadata"]
        ns = self._scope(res, namespace, meta)
        validation.defaults(res, obj)
        if res.namespaced:
            with self._lock:
                if ("", ns) not in self._objects["namespaces"]:
                    raise errors.not_found("", "namespaces", ns)
        if self.admission.wants("CREATE", res, ""):
            obj = self._admitted(res, AdmissionAttributes(
                "CREATE", res, "", ns, meta.get("name") or "", obj, None, dry_run,
                _options("CreateOptions", dry_run, field_validation), _sink(warnings)), field_validation, warnings)
            meta = obj["metadata"]
            self._scope(res, ns or None, meta)
        with self._lock:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices(_GENERATE_ALPHABET, k=5))
            name = meta.get("name") or ""
            causes = validation.name_causes(res, name)
            if causes:
                raise errors.invalid(res.kind, name, causes)
            if res.namespaced and ("", ns) not in self._objects["namespaces"]:
                raise errors.not_found("", "namespaces", ns)
            key = (ns, name)
            if key in self._objects[plural]:
                raise errors.already_exists(res.group, plural, name)
            for stale in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink", "uid"):
                meta.pop(stale, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = rfc3339(self._clock())
            validation.prepare_for_create(res, obj)
            validation.validate(res, obj)
            if not dry_run:
                self._commit(res, key, obj, None)
            return copy.deepcopy(obj)

    def update(self, plural: str, namespace: str | None, name: str, body: Any, subresource: str | None = None, *,
               dry_run: bool = False, field_validation: str = "Warn",
               warnings: list[str] | None = None) -> dict[str, Any]:
        """PUT: replace an object (its `metadata.resourceVersion`, if any, must be current)."""
        res = resources.by_plural(plural)
        new = self._decode(res, body, field_validation, warnings)
        return self._guaranteed_update(res, namespace, name, lambda current: copy.deepcopy(new), subresource,
                                       dry_run, field_validation, warnings)

    def patch(self, plural: str, namespace: str | None, name: str, body: Any,
              content_type: str = patching.MERGE, subresource: str | None = None, *, dry_run: bool = False,
              field_validation: str = "Warn", warnings: list[str] | None = None) -> dict[str, Any]:
        """Apply a patch atomically; a `metadata.resourceVersion` it carries is a precondition."""
        res = resources.by_plural(plural)

        def compute(current: dict[str, Any]) -> dict[str, Any]:
            return self._decode(res, patching.apply(content_type, current, body), field_validation, warnings)

        return self._guaranteed_update(res, namespace, name, compute, subresource, dry_run, field_validation,
                                       warnings)

    def delete(self, plural: str, namespace: str | None, name: str, *, grace_period_seconds: int | None = None,
               preconditions: dict[str, Any] | None = None, dry_run: bool = False,
               propagation_policy: str | None = None) -> dict[str, Any]:
        """Delete (or start deleting); returns the object or a Success Status, as the real registry does."""
        res = resources.by_plural(plural)
        if propagation_policy not in (None, *PROPAGATION):
            raise errors.invalid("DeleteOptions", "", [("propagationPolicy", f'Unsupported value: '
                                 f'"{propagation_policy}": supported values: "Foreground", "Background", "Orphan", '
                                 f'"nil"')])
        if grace_period_seconds is not None and grace_period_seconds < 0:
            grace_period_seconds = 1  # the real server turns a negative grace into the minimum
        if self.admission.wants("DELETE", res, ""):
            with self._lock:
                current = copy.deepcopy(self._current(res, namespace, name))
            self.admission.admit(AdmissionAttributes(
                "DELETE", res, "", current["metadata"].get("namespace", ""), name, None, current, dry_run,
                _options("DeleteOptions", dry_run, None)))
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
            if dry_run:
                return self._delete_result(res, current, self._grace(res, current, grace_period_seconds))
            if propagation_policy == "Orphan":
                self._orphan(meta["uid"])
                current = self._objects[plural][self._key(current)]
            return self._delete_locked(res, current, grace_period_seconds, propagation_policy)

    def _grace(self, res: Resource, obj: dict[str, Any], grace_period_seconds: int | None) -> int:
        """The grace a delete gets: pods bound to a node and still running wait; everything else goes at once."""
        if not res.graceful_delete:
            return 0
        spec, phase = obj.get("spec") or {}, (obj.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        return grace_period_seconds if grace_period_seconds is not None else \
            int(spec.get("terminationGracePeriodSeconds", 30))

    def _delete_locked(self, res: Resource, current: dict[str, Any], grace_period_seconds: int | None,
                       propagation_policy: str | None) -> dict[str, Any]:
        meta = current["metadata"]
        grace = self._grace(res, current, grace_period_seconds)
        foreground = propagation_policy == "Foreground" and bool(self._dependents.get(meta["uid"]))
        finalizers = list(meta.get("finalizers") or [])
        if foreground and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        if grace > 0 or finalizers:
            terminating = meta.get("deletionTimestamp") and int(meta.get("deletionGracePeriodSeconds", 0)) <= grace
            if terminating and finalizers == (meta.get("finalizers") or []):
                return copy.deepcopy(current)  # already terminating, no shorter grace asked
            updated = copy.deepcopy(current)
            if finalizers:
                updated["metadata"]["finalizers"] = finalizers
            if not terminating:
                updated["metadata"]["deletionTimestamp"] = rfc3339(self._clock() + grace)
                updated["metadata"]["deletionGracePeriodSeconds"] = grace
            self._commit(res, self._key(current), updated, current)
            if foreground:
                for dep_plural, dep_key in sorted(self._dependents.get(meta["uid"], ())):
                    dependent = self._objects[dep_plural].get(dep_key)
                    if dependent is not None and not dependent["metadata"].get("deletionTimestamp"):
                        self._delete_locked(resources.by_plural(dep_plural), dependent, None, "Foreground")
            return copy.deepcopy(updated)
        removed = self._remove(res, current)
        if res.plural == "namespaces":
            for other in resources.STORED:
                if other.namespaced:
                    for key in [k for k in self._objects[other.plural] if k[0] == meta["name"]]:
                        self._remove(other, self._objects[other.plural][key])
        return self._delete_result(res, removed, 0)

    def _delete_result(self, res: Resource, obj: dict[str, Any], grace: int) -> dict[str, Any]:
        """What DELETE answers: the terminating object, or the deleted one (pods) or a Success Status."""
        meta = obj["metadata"]
        if grace > 0 or meta.get("finalizers"):
            held = copy.deepcopy(obj)
            held["metadata"].setdefault("deletionTimestamp", rfc3339(self._clock() + grace))
            held["metadata"].setdefault("deletionGracePeriodSeconds", grace)
            return held
        if res.returns_deleted_object:
            return copy.deepcopy(obj)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": meta["name"], "group": res.group, "kind": res.plural, "uid": meta["uid"]}}

    def bind(self, namespace: str, name: str, binding: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """POST pods/{name}/binding: set spec.nodeName once, mark PodScheduled; Status 201 back."""
        res = resources.by_plural("pods")
        binding = self._decode(resources.lookup("v1", "bindings"), binding or {}, "Warn", None)  # type: ignore[arg-type]
        if self.admission.wants("CREATE", res, "binding"):
            binding = self.admission.admit(AdmissionAttributes(
                "CREATE", res, "binding", namespace, name, binding, None, dry_run,
                _options("CreateOptions", dry_run, None))) or binding
        target = binding.get("target") or {}
        node = target.get("name")
        if not node:
            raise errors.invalid("Binding", name, [("target.name", "Required value")])
        if target.get("kind", "Node") not in ("Node", ""):
            raise errors.invalid("Binding", name, [("target.kind", f"Unsupported value: {target.get('kind')!r}")])
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
            if not dry_run:
                self._commit(res, self._key(pod), updated, pod)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # ------------------------------------------------------------------------------------------
    # update machinery

    def _guaranteed_update(self, res: Resource, namespace: str | None, name: str,
                           compute: Callable[[dict[str, Any]], dict[str, Any]], subresource: str | None,
                           dry_run: bool, field_validation: str, warnings: list[str] | None) -> dict[str, Any]:
        """Read, compute the new object, admit it (outside the lock), and write it if nothing moved meanwhile.

        A `metadata.resourceVersion` in the new object is a precondition (409 when stale); without one the
        update is unconditional and is recomputed from the latest object if admission raced another write."""
        if subresource not in (None, "status") or (subresource == "status" and res.plural not in _STATUS_SUBRESOURCE):
            raise errors.path_not_found(f"{res.plural}/{name}/{subresource}")
        admit = self.admission.wants("UPDATE", res, subresource or "")
        for _ in range(_UPDATE_RETRIES):
            with self._lock:
                current = self._current(res, namespace, name)
                new = compute(current)
                self._check_identity(res, current, new)
                if not admit:
                    return copy.deepcopy(self._finish_update(res, current, new, subresource, dry_run))
            new = self._admitted(res, AdmissionAttributes(
                "UPDATE", res, subresource or "", current["metadata"].get("namespace", ""), name, new,
                copy.deepcopy(current), dry_run, _options("UpdateOptions", dry_run, field_validation),
                _sink(warnings)), field_validation, warnings)
            with self._lock:
                if self._current(res, namespace, name) is not current:
                    continue  # moved meanwhile: recompute (a stale precondition then gets its 409)
                self._check_identity(res, current, new)
                return copy.deepcopy(self._finish_update(res, current, new, subresource, dry_run))
        raise errors.conflict(res.group, res.plural, name, errors.STALE)

    def _check_identity(self, res: Resource, current: dict[str, Any], new: dict[str, Any]) -> None:
        name = current["metadata"]["name"]
        meta = new["metadata"]
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

    def _finish_update(self, res: Resource, current: dict[str, Any], new: dict[str, Any], subresource: str | None,
                       dry_run: bool) -> dict[str, Any]:
        """The update strategy (carry identity, split spec/status), validation and the write (lock held)."""
        meta = new["metadata"]
        old_meta = current["metadata"]
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace",
                    "name", "generateName"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
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
        validation.validate(res, new)
        if new == current or dry_run:
            return new if dry_run else current  # a no-op write: same version, no event
        if old_meta.get("deletionTimestamp") and not meta.get("finalizers") and \
                not int(old_meta.get("deletionGracePeriodSeconds") or 0):
            return self._remove(res, new)
        self._commit(res, self._key(current), new, current)
        return new

    def _check_pod_spec_update(self, current: dict[str, Any], new: dict[str, Any]) -> None:
        def comparable(spec: dict[str, Any]) -> dict[str, Any]:
            spec = copy.deepcopy(spec or {})
            for key in _POD_MUTABLE_SPEC:
                spec.pop(key, None)
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

    def _admitted(self, res: Resource, attributes: AdmissionAttributes, field_validation: str,
                  warnings: list[str] | None) -> dict[str, Any]:
        """The object after mutating admission, decoded and defaulted again as the real server does."""
        before = attributes.object
        after = self.admission.admit(attributes)
        if after is None or after is before:
            return before  # type: ignore[return-value]
        obj = self._decode(res, after, field_validation, warnings)
        validation.defaults(res, obj)
        return obj

    # ------------------------------------------------------------------------------------------
    # internals (call with the lock held unless said otherwise)

    def _decode(self, res: Resource, body: Any, field_validation: str, warnings: list[str] | None) -> dict[str, Any]:
        """Decode a body as kube-apiserver does (any thread): 400 on malformed input, unknown fields per mode."""
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of the request must be a {res.kind} object, got "
                                     f"{_json_kind(body)}")
        self._check_type(res, body)
        try:
            obj, unknown = schema.decode(res.model, body)
        except schema.DecodeError as exc:
            raise errors.cannot_handle(res.kind, res.api_version, str(exc)) from exc
        if unknown:
            if field_validation == "Strict":
                raise errors.cannot_handle(res.kind, res.api_version, "strict decoding error: " + ", ".join(
                    f'unknown field "{path}"' for path in unknown))
            if field_validation == "Warn" and warnings is not None:
                warnings.extend(f'unknown field "{path}"' for path in unknown)
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        if not isinstance(obj.get("metadata"), dict):
            obj["metadata"] = {}
        return obj

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

    def _commit(self, res: Resource, key: Key, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[res.plural][key] = obj
        self._index(res.plural, key, old, obj)
        self._publish(res, watch.Event(self._rv, watch.ADDED if old is None else watch.MODIFIED, obj, old))

    def _remove(self, res: Resource, current: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        key = self._key(current)
        del self._objects[res.plural][key]
        self._index(res.plural, key, current, None)
        self._publish(res, watch.Event(self._rv, watch.DELETED, gone, current))
        self._collect(current)
        return gone

    def _index(self, plural: str, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Keep the uid and owner-reference indexes in step with a write."""
        if new is None and old is not None:
            self._uids.pop(old["metadata"]["uid"], None)
        elif new is not None:
            self._uids[new["metadata"]["uid"]] = (plural, key)
        before, after = _owner_uids(old), _owner_uids(new)
        for uid in before - after:
            deps = self._dependents.get(uid)
            if deps is not None:
                deps.discard((plural, key))
                if not deps:
                    del self._dependents[uid]
        for uid in after - before:
            self._dependents.setdefault(uid, set()).add((plural, key))

    def _collect(self, removed: dict[str, Any]) -> None:
        """Garbage collection after `removed` is gone: its dependents, then owners waiting in foreground."""
        uid = removed["metadata"]["uid"]
        for dep_plural, dep_key in sorted(self._dependents.pop(uid, set())):
            dependent = self._objects[dep_plural].get(dep_key)
            if dependent is None:
                continue
            dep_res = resources.by_plural(dep_plural)
            remaining = [r for r in dependent["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if any(r.get("uid") in self._uids for r in remaining):
                stripped = copy.deepcopy(dependent)
                stripped["metadata"]["ownerReferences"] = remaining
                self._commit(dep_res, dep_key, stripped, dependent)
            elif not dependent["metadata"].get("deletionTimestamp"):
                self._delete_locked(dep_res, dependent, None, None)
        for owner_uid in _owner_uids(removed):
            where = self._uids.get(owner_uid)
            if where is None or self._dependents.get(owner_uid):
                continue
            owner = self._objects[where[0]][where[1]]
            finalizers = owner["metadata"].get("finalizers") or []
            if FOREGROUND in finalizers and owner["metadata"].get("deletionTimestamp"):
                released = copy.deepcopy(owner)
                released["metadata"]["finalizers"] = [f for f in finalizers if f != FOREGROUND]
                owner_res = resources.by_plural(where[0])
                if released["metadata"]["finalizers"] or int(owner["metadata"].get("deletionGracePeriodSeconds") or 0):
                    self._commit(owner_res, where[1], released, owner)
                else:
                    self._remove(owner_res, owner)

    def _orphan(self, uid: str) -> None:
        for dep_plural, dep_key in sorted(self._dependents.get(uid, set())):
            dependent = self._objects[dep_plural][dep_key]
            stripped = copy.deepcopy(dependent)
            stripped["metadata"]["ownerReferences"] = [r for r in dependent["metadata"].get("ownerReferences") or []
                                                       if r.get("uid") != uid]
            if not stripped["metadata"]["ownerReferences"]:
                del stripped["metadata"]["ownerReferences"]
            self._commit(resources.by_plural(dep_plural), dep_key, stripped, dependent)

    def _publish(self, res: Resource, event: watch.Event) -> None:
        self._logs[res.plural].append(event)
        for watcher in list(self._watchers[res.plural]):
            watcher.offer(event)


def _sink(warnings: list[str] | None) -> list[str]:
    """Where admission warnings go: the caller's list, or a throwaway one."""
    return warnings if warnings is not None else []


def _json_kind(value: Any) -> str:
    return {list: "a JSON array", str: "a JSON string", bool: "a JSON boolean", int: "a JSON number",
            float: "a JSON number", type(None): "an empty body"}.get(type(value), "something else")


def _options(kind: str, dry_run: bool, field_validation: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
    if dry_run:
        options["dryRun"] = ["All"]
    if field_validation and kind != "DeleteOptions":
        options["fieldValidation"] = field_validation
    return options


def _parse_rv(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or not text.isdigit():
        raise errors.bad_request(f'invalid resource version "{text}": expected a non-negative integer, such as '
                                 f"the metadata.resourceVersion of a list or an object")
    return value


def _check_list_options(rv: str | None, match: str | None, continue_token: str | None) -> None:
    """ValidateListOptions: the combinations kube-apiserver refuses with 422."""
    causes: list[tuple[str, str]] = []
    if match not in (None, "", "Exact", "NotOlderThan"):
        causes.append(("resourceVersionMatch", f'Unsupported value: "{match}": supported values: "Exact", '
                                               f'"NotOlderThan", ""'))
    elif match and not rv:
        causes.append(("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden unless resourceVersion "
                                               "is provided"))
    elif match == "Exact" and rv == "0":
        causes.append(("resourceVersionMatch", 'Forbidden: resourceVersionMatch "exact" is forbidden for '
                                               'resourceVersion "0"'))
    if continue_token and rv not in (None, "", "0"):
        causes.append(("resourceVersion", "Forbidden: specifying resource version is not allowed when using "
                                          "continue"))
    if causes:
        raise errors.invalid("ListOptions.meta.k8s.io", "", causes)


def _decode_continue(token: str) -> tuple[int, Key]:
    try:
        rv, namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(rv, int) or not isinstance(namespace, str) or not isinstance(name, str):
            raise TypeError("unexpected continue token contents")
    except (ValueError, TypeError) as exc:
        raise errors.bad_request(f"invalid continue token: {exc}") from exc
    return rv, (namespace, name)


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
            for key, value in (("reason", reason), ("message", message)):
                if value is None:
                    condition.pop(key, None)
                else:
                    condition[key] = value
            return True
    condition = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": stamp}
    if reason is not None:
        condition["reason"] = reason
    if message is not None:
        condition["message"] = message
    conditions.append(condition)
    return True
