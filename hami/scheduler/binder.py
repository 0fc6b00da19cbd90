"""Bind: decide the exact devices, record them on the pod, take the node lock, post the Binding.

The engine reserves atomically first, so two binds racing for one GPU can never both get it.
Then, on the common path, three API calls: the pod's annotations and label (one merge patch),
the node lock (a merge patch conditional on the node's resourceVersion as the cache last saw it:
a racing writer gets 409 and we re-read), the Binding. HAMi makes five or more.

The node lock (ARCHITECTURE §3) is held from here to the end of the pod's Allocate; the agent
releases it. Binds to one node take turns in-process (one waiter per node: when the lock is
released, one bind tries the conditional patch, not every bind queued there, all but one of which
would lose with 409 and re-read the node). A bind that finds the node locked waits on the cache's
node events, bounded well inside kube-scheduler's extender timeout, instead of failing the pod back into
kube-scheduler's backoff (HAMi #1367). The lock is free when it is absent, ours, older than
`lock_timeout_s`, or held by a pod that no longer needs it (gone, ended, its Allocate finished, or its
bind never reached a Binding: `ClusterCache.lock_owner_done`).

Any failure after the reservation marks the pod's `bind-phase` failed when its annotations were
written, then releases the reservation, releases the lock if we took it, records an event and
returns the reason. When that mark cannot be written, the reservation stays until the bind TTL
(the annotations still claim the devices; see `_bind_gpu_pod`).

With several replicas (docs/ha.md) every API write first asks `leader.check()` — a replica that
is not acting, or stopped acting mid-bind, writes nothing more — and tells `leader.record_write()`
whether the API took it, so that a leader whose writes keep failing steps down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hami._core import Decision, Engine, Rejection
from hami.api import codecs, names
from hami.api.errors import AnnotationError, RequestError
from hami.api.pods import RequestDefaults, parse_pod
from hami.k8s import Conflict, Kube, KubeError, NotFound
from hami.k8s.binding import bind_pod
from hami.scheduler import annotations as A
from hami.scheduler.cache import ClusterCache
from hami.scheduler.leader import Leadership, NotActing, SoleReplica, write_failed

log = logging.getLogger(__name__)

COMPONENT = "hami-scheduler"


class BindError(Exception):
    """A bind that did not happen; the message is what kube-scheduler shows on the pod."""


class Binder:
    def __init__(self, engine: Engine, cache: ClusterCache, kube: Kube, defaults: RequestDefaults, *,
                 lock_timeout_s: float = 300.0, lock_wait_s: float = 20.0,
                 clock: Callable[[], float] = time.time, on_bound: Callable[[Decision], None] | None = None,
                 leader: Leadership | SoleReplica | None = None) -> None:
        self.engine = engine
        self.cache = cache
        self.kube = kube
        self.defaults = defaults
        self.lock_timeout = timedelta(seconds=lock_timeout_s)
        self.lock_wait_s = lock_wait_s
        self.clock = clock
        self.on_bound = on_bound
        self.leader = leader if leader is not None else SoleReplica()
        self.api_calls = 0  # API requests made by binds (the bench reports calls per bind)
        self.lock_conflicts = 0  # node-lock patches another writer beat (409): each costs a re-read
        self._calls_lock = threading.Lock()
        self._turns: dict[str, threading.Lock] = {}  # node -> the in-process turn of binds to it

    def _count(self, n: int = 1) -> None:
        with self._calls_lock:
            self.api_calls += n

    def _write(self, call: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """One API write, only while this replica acts (NotActing otherwise); its outcome counted."""
        return self._guarded(False, call, *args, **kw)

    def _guarded(self, takeover: bool, call: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        self.leader.check(takeover=takeover)
        self._count()
        try:
            out = call(*args, **kw)
        except KubeError as err:
            self.leader.record_write(not write_failed(err))
            raise
        self.leader.record_write(True)
        return out

    # -- the verb -------------------------------------------------------------------------------
    def bind(self, namespace: str, name: str, uid: str, node: str, pod: Mapping[str, Any] | None) -> None:
        """Raises BindError with the reason; returns when the Binding exists."""
        try:
            self.leader.check()
            self._bind(namespace, name, uid, node, pod)
        except NotActing as err:
            raise BindError(str(err)) from None

    def _bind(self, namespace: str, name: str, uid: str, node: str, pod: Mapping[str, Any] | None) -> None:
        if pod is None or (pod.get("metadata") or {}).get("uid") != uid:
            try:
                self._count()
                pod = self.kube.get("pods", name, namespace)
            except NotFound:
                raise BindError(f"pod {namespace}/{name} no longer exists") from None
            except KubeError as err:
                raise BindError(f"cannot read pod {namespace}/{name}: {err}") from None
            if (pod.get("metadata") or {}).get("uid") != uid:
                raise BindError(f"pod {namespace}/{name} was recreated (uid differs); kube-scheduler will retry")
        try:
            request = parse_pod(pod, self.defaults)
        except RequestError as err:
            raise BindError(str(err)) from None
        if not request.wants_gpus:
            self._post_binding(namespace, name, uid, node)
            return
        self.cache.begin_bind(uid)
        try:
            self._bind_gpu_pod(namespace, name, uid, node, request, pod)
        finally:
            self.cache.end_bind(uid)

    def _bind_gpu_pod(self, namespace, name, uid, node, request, pod) -> None:
        out = self.engine.decide_and_reserve(uid, request, node)
        if isinstance(out, Rejection):
            raise BindError(f"node {node} no longer fits pod {namespace}/{name}: {out.message}")
        locked = annotated = False
        try:
            # the decision first, then the node lock: the lock is held from its patch to the end of
            # the pod's Allocate, and every bind queued on the node waits that long, so one API
            # call fewer inside it is a burst's throughput (the agent looks only at bound pods)
            now = datetime.fromtimestamp(self.clock(), UTC)
            values: dict[str, str | None] = {**A.decision_annotations(out, self.cache.gpu_types(node), now,
                                                                    self.cache.learned)}
            # a merge patch keeps what it does not name: an earlier failed MIG bind's reservations
            # must not outlive it on a pod now bound to hami-core devices
            values.setdefault(names.VGPU_MIG_ALLOCATIONS, None)
            self._write(self.kube.patch, "pods", name,
                        {"metadata": {"annotations": values, "labels": {names.VGPU_NODE: node}}}, namespace)
            annotated = True
            self._take_lock(node, namespace, name)
            locked = True
            self._post_binding(namespace, name, uid, node)
        except (BindError, KubeError, AnnotationError, ValueError, NotActing) as err:
            marked = not annotated
            if annotated:
                try:
                    self._write(self.kube.annotate, "pods", name, {names.BIND_PHASE: names.BIND_PHASE_FAILED},
                                namespace)
                    marked = True
                except (KubeError, NotActing) as mark_err:
                    log.warning("pod=%s/%s bind failed and its failed mark was not written (%s): its devices stay "
                                "reserved until the bind TTL", namespace, name, mark_err)
            if marked:
                self.engine.release(uid)
            # else the pod's annotations still claim the devices: freeing them now would let another
            # pod take them while the cache may fold this claim back (a double booking); the cache's
            # sweep frees them once the claim is older than the bind TTL
            if locked:
                self.release_lock(node, namespace, name)
            if self.leader.acting()[0]:
                self.kube.event(pod, "Warning", "BindingFailed", f"hami: {err}", COMPONENT)
            raise BindError(str(err)) from None
        log.info("bound pod=%s/%s node=%s devices=%d", namespace, name, node, sum(1 for _ in out.picks()))
        if self.on_bound is not None:
            self.on_bound(out)

    def _post_binding(self, namespace: str, name: str, uid: str, node: str) -> None:
        try:
            self._write(bind_pod, self.kube, namespace, name, uid, node)
        except Conflict as err:
            # already bound: by an earlier try of this bind (its reply was lost) or elsewhere
            self._count()
            current = self.kube.find("pods", name, namespace)
            if current is not None and (current.get("spec") or {}).get("nodeName") == node:
                return
            raise BindError(f"pod {namespace}/{name} is already bound or changed: {err.message}") from None
        except KubeError as err:
            raise BindError(f"binding pod {namespace}/{name} to {node} failed: {err}") from None

    # -- a takeover -----------------------------------------------------------------------------
    def take_over(self) -> int:
        """What a new leader cleans up after the old one before its first bind (docs/ha.md); how
        many pods it marked (their marks must reach our cache before we bind)."""
        marked = self.fail_orphans()
        self.free_orphan_locks()
        return marked

    def free_orphan_locks(self) -> int:
        """Node locks the old leader took for a pod it never annotated (it died in between): nobody
        will release them (no agent Allocate follows) and, the pod showing no decision, they would
        otherwise block the node until the lock timeout. Only called once our cache has every pod
        write of the old leader, and with no bind of ours in flight."""
        freed = 0
        for node in self.cache.node_names():
            value, _version = self.cache.node_lock(node)
            if not value:
                continue
            try:
                lock = codecs.decode_node_lock(value)
            except AnnotationError:
                continue
            if lock.name is None:
                continue
            owner = self.cache.pod_by_key(lock.namespace or "", lock.name)
            if owner is None or owner.node or owner.bind_phase is not None:
                continue  # gone (free already), bound (its Allocate releases it) or decided (failed above)
            self.release_lock(node, lock.namespace or "", lock.name, takeover=True)
            freed += 1
        if freed:
            log.info("takeover: %d node locks of pods the old leader never annotated released", freed)
        return freed

    def fail_orphans(self) -> int:
        """At a takeover, before the first bind: mark failed the old leader's binds that recorded a
        decision but never reached a Binding (it died between the two), so every replica frees their
        devices and node locks now instead of after the bind TTL; kube-scheduler binds them again.
        The list is a consistent read made after our cache caught up, each patch is conditional on
        the pod being unchanged; a pod bound meanwhile is left alone. Returns how many were marked."""
        try:
            self._count()
            pods = self.kube.list("pods", label_selector=names.VGPU_NODE, field_selector="spec.nodeName=")
        except KubeError as err:
            log.warning("takeover: unbound decisions not listed (%s); they free their devices after the bind TTL",
                        err)
            return 0
        marked = 0
        for pod in pods:
            meta = pod.get("metadata") or {}
            if (meta.get("annotations") or {}).get(names.BIND_PHASE) != names.BIND_PHASE_ALLOCATING:
                continue
            uid = meta.get("uid")

            def change(current: dict[str, Any], uid: Any = uid) -> dict[str, Any] | None:
                cur = current.get("metadata") or {}
                if (cur.get("uid") != uid or (current.get("spec") or {}).get("nodeName")
                        or (cur.get("annotations") or {}).get(names.BIND_PHASE) != names.BIND_PHASE_ALLOCATING):
                    return None
                return {"metadata": {"annotations": {names.BIND_PHASE: names.BIND_PHASE_FAILED}}}

            try:
                if self._guarded(True, self.kube.modify, "pods", meta.get("name", ""), change,
                                 meta.get("namespace")) is not None:
                    marked += 1
            except NotFound:
                continue
            except KubeError as err:
                log.warning("takeover: pod %s/%s not marked failed: %s", meta.get("namespace"), meta.get("name"), err)
            except NotActing:
                break
        if marked:
            log.info("takeover: %d binds the old leader left without a Binding marked failed", marked)
        return marked

    # -- the node lock --------------------------------------------------------------------------
    def _lock_free(self, value: str | None, namespace: str, name: str, now: datetime) -> tuple[bool, str]:
        if not value:
            return True, ""
        try:
            lock = codecs.decode_node_lock(value)
        except AnnotationError:
            return True, ""  # unreadable: ours to overwrite (HAMi would too after its timeout)
        if lock.owned_by(namespace, name) or lock.expired(now, self.lock_timeout):
            return True, ""
        if lock.name is not None and self.cache.synced and self.cache.lock_owner_done(lock.namespace or "", lock.name):
            return True, ""  # the owner is gone, ended, allocated, or never bound: free at once
        return False, f"{lock.owner or 'a legacy lock'} since {codecs.format_rfc3339(lock.time)}"

    def _turn(self, node: str) -> threading.Lock:
        with self._calls_lock:
            return self._turns.setdefault(node, threading.Lock())

    def _take_lock(self, node: str, namespace: str, name: str) -> None:
        deadline = time.monotonic() + self.lock_wait_s  # the turn and the lock share one bound
        turn = self._turn(node)
        if not turn.acquire(timeout=self.lock_wait_s):
            raise BindError(f"node {node} is locked and {self.lock_wait_s:.0f}s were not enough for the binds queued "
                            "before this one (one bind at a time per node until the agent allocates); "
                            "kube-scheduler will retry")
        try:
            self._take_lock_in_turn(node, namespace, name, deadline)
        finally:
            turn.release()

    def _take_lock_in_turn(self, node: str, namespace: str, name: str, deadline: float) -> None:
        holder = ""
        while True:
            value, version = self.cache.node_lock(node)
            now = datetime.fromtimestamp(self.clock(), UTC)
            free, holder = self._lock_free(value, namespace, name, now)
            if free:
                lock = codecs.encode_node_lock(codecs.NodeLock(now.replace(microsecond=0), namespace, name))
                meta: dict[str, Any] = {"annotations": {names.NODE_LOCK: lock}}
                if version:
                    meta["resourceVersion"] = version
                try:
                    fresh = self._write(self.kube.patch, "nodes", node, {"metadata": meta})
                    self.cache.node_event("upsert", fresh)
                    return
                except Conflict:
                    self._count()
                    with self._calls_lock:
                        self.lock_conflicts += 1
                    self.cache.node_event("upsert", self.kube.get("nodes", node))  # someone wrote first: re-read
                    continue
                except NotFound:
                    raise BindError(f"node {node} no longer exists") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BindError(f"node {node} is locked by {holder} (one bind at a time per node until the agent "
                                f"allocates); waited {self.lock_wait_s:.0f}s, kube-scheduler will retry")
            with self.cache.node_changed:
                self.cache.node_changed.wait(min(remaining, 0.5))

    def release_lock(self, node: str, namespace: str, name: str, *, takeover: bool = False) -> None:
        """Drop the node lock if this pod holds it (best effort; the agent or expiry otherwise)."""
        def change(current: dict[str, Any]):
            value = ((current.get("metadata") or {}).get("annotations") or {}).get(names.NODE_LOCK)
            try:
                if value and codecs.decode_node_lock(value).owned_by(namespace, name):
                    return {"metadata": {"annotations": {names.NODE_LOCK: None}}}
            except AnnotationError:
                return None
            return None

        try:
            self._guarded(takeover, self.kube.modify, "nodes", node, change)
        except (KubeError, NotActing) as err:
            log.warning("node=%s lock of pod %s/%s not released: %s", node, namespace, name, err)
