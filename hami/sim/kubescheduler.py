"""A kube-scheduler stand-in that drives scheduler extenders exactly as kube-scheduler's HTTPExtender does.

It runs two profiles, as a cluster has two schedulers: ours (`scheduler_name`, with the
extenders) and `default-scheduler` (in-tree filters only, no extender), which every cluster
runs for pods that name no scheduler. Pods naming any other scheduler stay Pending, untouched.

Per pending pod whose `schedulerName` is one of ours (reference §1.3–1.4):
1. in-tree filters first: node `spec.unschedulable` (unless tolerated), NoSchedule/NoExecute taints
   vs tolerations, `nodeSelector` and required node affinity, and the NodeResourcesFit check for
   extended resources that are not `ignoredByScheduler` (requests of assigned pods vs node
   allocatable), and PodTopologySpread's `DoNotSchedule` constraints (skew over the domains of
   the nodes that pass the pod's node affinity; `minDomains`, `matchLabelKeys`). CPU, memory and
   pod-count fit, inter-pod affinity and every score plugin are not modelled;
2. each interested extender's `filter` (POST `<urlPrefix>/<filterVerb>`, PascalCase ExtenderArgs,
   `NodeNames` when nodeCacheCapable else a full `Nodes` NodeList), survivors feed the next; an
   `Error` field, a non-200 status or a timeout is a scheduling error (skipped when `ignorable`);
   names outside the input are an error; a null `NodeNames` means none survived;
3. exactly one feasible node: chosen without prioritize; several: each interested extender's
   `prioritize` (errors ignored), combined as score × weight × (MaxNodeScore 100 / MaxExtenderPriority
   10); the highest total wins, ties broken at random (kube-scheduler's own score plugins are not
   modelled, they add 0);
4. the first interested extender with a `bindVerb` binds (else a Binding is posted directly); a
   failed bind puts the pod back unless it got bound anyway.
An unschedulable pod gets `PodScheduled=False/Unschedulable` and a FailedScheduling event and waits
for a cluster change (a node added or changed, an assigned pod changed or deleted), or
`max_unschedulable_seconds`; a scheduling error gets `PodScheduled=False/SchedulerError` and retries
with exponential backoff (`initial_backoff` doubling up to `max_backoff`). Success: a Scheduled event.
Queue order is kube-scheduler's PrioritySort (priority, then arrival). Pods are scheduled one at a time.

As kube-scheduler, the driver keeps its own cache, fed by its watches (no list per attempt: nodes
and assigned pods are held as the watch delivered them, never copied), and binds asynchronously:
the scheduling cycle *assumes* the pod on the chosen node (its requests count there at once) and
moves on to the next pod while the binding cycle (extender bind or Binding) runs on a worker
thread; a failed bind un-assumes the pod and requeues it with backoff. `observer`, when set, is
called with (phase, seconds) for "filter" (each extender filter call), "prioritize", "bind",
"cycle" (a whole scheduling cycle) and "node-busy" (0: a bind dispatched to a node another bind in
flight is binding to, so it waits on that node's lock) — what `hami.sim.soak` records.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import json
import logging
import queue
import random
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hami.k8s import Conflict, KubeError
from hami.k8s.leases import LeaderElector
from hami.sim.apiserver import errors, events, quantities
from hami.sim.apiserver.store import Store, set_condition
from hami.sim.apiserver.watch import Watcher

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER = "default-scheduler"
MAX_NODE_SCORE = 100
MAX_EXTENDER_PRIORITY = 10
DEFAULT_EXTENDER_TIMEOUT = 5.0
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


@dataclass(frozen=True)
class ManagedResource:
    name: str
    ignored_by_scheduler: bool = False


@dataclass(frozen=True)
class ExtenderConfig:
    """One `extenders[]` entry of KubeSchedulerConfiguration (reference §1.5)."""

    url_prefix: str
    filter_verb: str = "filter"
    prioritize_verb: str = ""
    bind_verb: str = "bind"
    weight: int = 1
    http_timeout: float = DEFAULT_EXTENDER_TIMEOUT  # seconds; 0 means kube-scheduler's 5 s default
    node_cache_capable: bool = True
    managed_resources: tuple[ManagedResource, ...] = ()
    ignorable: bool = False
    tls_insecure: bool = True  # https without a CA: kube-scheduler does not verify

    def __post_init__(self) -> None:
        if self.prioritize_verb and self.weight <= 0:
            raise ValueError(f"extender {self.url_prefix}: weight must be positive when prioritizeVerb is set")

    def interested(self, pod: dict[str, Any]) -> bool:
        """IsInterested: no managed resources = every pod; else a container or init container asks for one."""
        if not self.managed_resources:
            return True
        names = {m.name for m in self.managed_resources}
        spec = pod.get("spec") or {}
        for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
            res = container.get("resources") or {}
            if names & (set(res.get("requests") or {}) | set(res.get("limits") or {})):
                return True
        return False


@dataclass(frozen=True)
class SchedulerConfig:
    scheduler_name: str = "hami-scheduler"
    extenders: tuple[ExtenderConfig, ...] = ()
    initial_backoff: float = 1.0  # podInitialBackoffSeconds
    max_backoff: float = 10.0  # podMaxBackoffSeconds
    max_unschedulable_seconds: float = 300.0  # podMaxInUnschedulablePodsDuration
    seed: int | None = None
    default_profile: bool = True  # also schedule `default-scheduler` pods (in-tree filters only)

    def __post_init__(self) -> None:
        if sum(1 for e in self.extenders if e.bind_verb) > 1:
            raise ValueError("only one extender can implement bind")


class ExtenderError(Exception):
    """A failed extender call, worded as kube-scheduler words it."""


def _field(obj: Any, name: str) -> Any:
    """Go's case-insensitive JSON field match."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    lowered = name.lower()
    return next((v for k, v in obj.items() if k.lower() == lowered), None)


class Extender:
    """The HTTP client side of one extender. Connections are kept alive, one per calling thread (the
    scheduling loop, each bind worker), as kube-scheduler's HTTP transport keeps them; the TLS context
    is made once."""

    def __init__(self, config: ExtenderConfig) -> None:
        self.config = config
        self._ssl = ssl._create_unverified_context() if config.tls_insecure else ssl.create_default_context()
        self._url = urllib.parse.urlsplit(config.url_prefix)
        self._local = threading.local()

    def interested(self, pod: dict[str, Any]) -> bool:
        return self.config.interested(pod)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            host, port = self._url.hostname or "127.0.0.1", self._url.port
            conn = (http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
                    if self._url.scheme == "https" else http.client.HTTPConnection(host, port, timeout=timeout))
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _send(self, verb: str, args: Any) -> Any:
        url = self.config.url_prefix.rstrip("/") + "/" + verb
        path = (self._url.path.rstrip("/") + "/" + verb) or "/"
        data = json.dumps(args, separators=(",", ":")).encode()
        timeout = self.config.http_timeout or DEFAULT_EXTENDER_TIMEOUT
        for attempt in (1, 2):
            conn = self._connection(timeout)
            reused = conn.sock is not None
            try:
                conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = resp.read()
                code = resp.status
                if resp.will_close:
                    self._drop()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop()
                if reused and attempt == 1:
                    continue  # the server closed an idle kept-alive connection: once more on a new one
                raise ExtenderError(f'Post "{url}": {exc}') from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise ExtenderError(f'Post "{url}": {exc}') from exc
        if code != 200:
            raise ExtenderError(f"failed {verb} with extender at URL {url}, code {code}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ExtenderError(f"failed {verb} with extender at URL {url}: invalid JSON: {exc}") from exc

    def _args(self, pod: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, Any]:
        if self.config.node_cache_capable:
            return {"Pod": pod, "Nodes": None, "NodeNames": [n["metadata"]["name"] for n in nodes]}
        return {"Pod": pod, "Nodes": {"metadata": {}, "items": nodes}, "NodeNames": None}

    def filter(self, pod: dict[str, Any], nodes: list[dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, str]]:
        """(survivors, failed, failed-and-unresolvable)."""
        result = self._send(self.config.filter_verb, self._args(pod, nodes))
        if _field(result, "Error"):
            raise ExtenderError(str(_field(result, "Error")))
        by_name = {n["metadata"]["name"]: n for n in nodes}
        survivors: list[dict[str, Any]] = []
        if self.config.node_cache_capable:
            for name in _field(result, "NodeNames") or []:
                if name not in by_name:
                    raise ExtenderError(f'extender "{self.config.url_prefix}" claims a filtered node "{name}" '
                                        f"which is not found in the input node list")
                survivors.append(by_name[name])
        else:
            for node in (_field(result, "Nodes") or {}).get("items") or []:
                name = (node.get("metadata") or {}).get("name")
                if name not in by_name:
                    raise ExtenderError(f'extender "{self.config.url_prefix}" claims a filtered node "{name}" '
                                        f"which is not found in the input node list")
                survivors.append(by_name[name])
        failed = dict(_field(result, "FailedNodes") or {})
        unresolvable = dict(_field(result, "FailedAndUnresolvableNodes") or {})
        return survivors, failed, unresolvable

    def prioritize(self, pod: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, int]:
        result = self._send(self.config.prioritize_verb, self._args(pod, nodes))
        if not isinstance(result, list):
            raise ExtenderError(f"prioritize with extender at URL {self.config.url_prefix}: not a HostPriorityList")
        scores = {}
        for entry in result:
            score = _field(entry, "Score")
            if not isinstance(score, int) or isinstance(score, bool):
                raise ExtenderError(f"prioritize: score {score!r} is not an integer")
            scores[str(_field(entry, "Host"))] = score
        return scores

    def bind(self, pod: dict[str, Any], node: str) -> None:
        meta = pod["metadata"]
        result = self._send(self.config.bind_verb, {"PodName": meta["name"], "PodNamespace": meta["namespace"],
                                                     "PodUID": meta["uid"], "Node": node})
        if _field(result, "Error"):
            raise ExtenderError(str(_field(result, "Error")))


# ----------------------------------------------------------------------------------------------
# in-tree filters


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator", "Equal") == "Exists":
            if not tol.get("key") or tol.get("key") == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _expression_matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _affinity_matches(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    spec, meta = pod.get("spec") or {}, node.get("metadata") or {}
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    fields = {"metadata.name": meta.get("name", "")}
    return any(
        (t.get("matchExpressions") or t.get("matchFields"))
        and all(_expression_matches(e, labels) for e in t.get("matchExpressions") or [])
        and all(_expression_matches(e, fields) for e in t.get("matchFields") or [])
        for t in terms)


def _selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector; a missing one matches nothing (as PodTopologySpread reads it)."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    return all(_expression_matches(e, labels) for e in selector.get("matchExpressions") or [])


class _TopologySpread:
    """PodTopologySpread's filter for the pod's `DoNotSchedule` constraints: a node passes when, for
    each constraint, placing the pod there keeps (matching pods in its domain + the pod itself) −
    (the least such count over all domains) within `maxSkew`. Domains are the values of the
    topology key on the nodes that pass the pod's node affinity and carry every constraint's key;
    pods counted are the pod's namespace's, bound there, neither terminating nor finished."""

    def __init__(self, pod: dict[str, Any], nodes: list[dict[str, Any]], assigned: list[dict[str, Any]]) -> None:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        self.constraints = []
        for c in (pod.get("spec") or {}).get("topologySpreadConstraints") or []:
            if c.get("whenUnsatisfiable", "DoNotSchedule") != "DoNotSchedule":
                continue
            selector = dict(c.get("labelSelector") or {}) if c.get("labelSelector") is not None else None
            if selector is not None and c.get("matchLabelKeys"):
                extra = [{"key": k, "operator": "In", "values": [labels[k]]}
                         for k in c["matchLabelKeys"] if k in labels]
                selector["matchExpressions"] = [*(selector.get("matchExpressions") or []), *extra]
            self.constraints.append((c["topologyKey"], int(c.get("maxSkew", 1)), int(c.get("minDomains") or 1),
                                     selector, _selector_matches(selector, labels)))
        keys = {key for key, *_ in self.constraints}
        eligible = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in nodes
                    if _affinity_matches(pod, n) and keys <= set(n["metadata"].get("labels") or {})}
        self.counts: list[Counter[str]] = []
        for key, _skew, _min, selector, _self in self.constraints:
            counts = Counter({labels_[key]: 0 for labels_ in eligible.values()})
            for other in assigned:
                other_meta = other.get("metadata") or {}
                if (other_meta.get("namespace") != meta.get("namespace") or other_meta.get("deletionTimestamp")
                        or (other.get("status") or {}).get("phase") in ("Succeeded", "Failed")):
                    continue
                node_labels = eligible.get((other.get("spec") or {}).get("nodeName", ""))
                if node_labels is not None and _selector_matches(selector, other_meta.get("labels") or {}):
                    counts[node_labels[key]] += 1
            self.counts.append(counts)

    def reason(self, node: dict[str, Any]) -> str | None:
        labels = node["metadata"].get("labels") or {}
        for (key, max_skew, min_domains, _selector, self_match), counts in zip(self.constraints, self.counts,
                                                                              strict=True):
            if key not in labels:
                return "node(s) didn't match pod topology spread constraints (missing required label)"
            least = min(counts.values()) if len(counts) >= min_domains else 0
            if counts[labels[key]] + int(self_match) - least > max_skew:
                return "node(s) didn't match pod topology spread constraints"
        return None


def pod_requests(pod: dict[str, Any]) -> dict[str, int]:
    """Effective integer requests: max(sum over containers, max over init containers), per resource."""
    spec = pod.get("spec") or {}

    def of(container: dict[str, Any]) -> dict[str, int]:
        res = container.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        out = {}
        for name, value in merged.items():
            if _is_extended(name):  # cpu/memory: not modelled
                out[name] = quantity_value(value)
        return out

    total: Counter[str] = Counter()
    for container in spec.get("containers") or []:
        total.update(of(container))
    for container in spec.get("initContainers") or []:
        for name, value in of(container).items():
            total[name] = max(total[name], value)
    return dict(total)


def quantity_value(value: Any) -> int:
    """A whole-number quantity as stored ("2", "1k"); 0 for anything unreadable."""
    try:
        return quantities.parse(value).value()
    except quantities.QuantityError:
        return 0


def _is_extended(name: str) -> bool:
    return "/" in name and not name.split("/", 1)[0].endswith("kubernetes.io")


# ----------------------------------------------------------------------------------------------
# the scheduler


@dataclass(order=True)
class _Entry:
    sort: tuple[int, float, int]
    key: str = field(compare=False)


class KubeScheduler:
    """Schedules our pods through the configured extenders, and default-scheduler pods without them
    (module docstring). `start()`/`stop()`."""

    BIND_WORKERS = 64  # binding cycles in flight at once (kube-scheduler: a goroutine each)

    def __init__(self, store: Store, config: SchedulerConfig | None = None, *,
                 leader: LeaderElector | None = None) -> None:
        self.store = store
        # leader election (docs/ha.md): schedule only while `leader` holds its Lease; stop when it is lost
        self.leader = leader
        self.config = config or SchedulerConfig()
        self.extenders = [Extender(e) for e in self.config.extenders]
        # ignorable extenders run after the others, as kube-scheduler orders them
        self.extenders.sort(key=lambda e: e.config.ignorable)
        self.profiles = {self.config.scheduler_name}
        if self.config.default_profile:
            self.profiles.add(DEFAULT_SCHEDULER)
        self._rng = random.Random(self.config.seed)
        self._inbox: queue.Queue[tuple[str, str, dict[str, Any]] | None] = queue.Queue()
        self._active: list[_Entry] = []
        self._queued: set[str] = set()
        self._backoff: dict[str, float] = {}  # key -> ready time
        self._unschedulable: dict[str, float] = {}  # key -> since
        self._attempts: Counter[str] = Counter()
        self._last_failure: dict[str, float] = {}
        self._seen: dict[str, dict[str, Any]] = {}
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watchers: list[Watcher] = []
        self.attempts_total = 0
        # the cache (loop thread only): objects as the watch delivered them, never mutated
        self._nodes: dict[str, dict[str, Any]] = {}
        self._node_order: list[str] | None = None  # sorted names, rebuilt when the set changes
        self._assigned: dict[str, dict[str, Any]] = {}  # key -> pod with a nodeName (or assumed there)
        self._used: dict[str, Counter[str]] = {}  # node -> extended requests of its unfinished pods
        self._binding: dict[str, dict[str, Any]] = {}  # key -> the assumed pod, while its bind is in flight
        self._binder = ThreadPoolExecutor(self.BIND_WORKERS, thread_name_prefix="kube-scheduler-bind")
        self.observer: Callable[[str, float], None] | None = None

    # -- lifecycle

    def start(self) -> KubeScheduler:
        for plural in ("nodes", "pods"):
            watcher = self.store.watch(plural)
            self._watchers.append(watcher)
            for obj in self.store.list(plural)["items"]:  # the cache primed before the first cycle
                self._cache(plural, "ADDED", obj)
            self._threads.append(threading.Thread(target=self._pump, args=(plural, watcher),
                                                  name=f"kube-scheduler-watch-{plural}", daemon=True))
        self._threads.append(threading.Thread(target=self._loop, name="kube-scheduler", daemon=True))
        if self.leader is not None:
            self._threads.append(threading.Thread(target=self._lead, name="kube-scheduler-leader", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def _lead(self) -> None:
        leader = self.leader
        if leader is None:
            return
        leader.run()
        if not self._stop.is_set():  # kube-scheduler exits when it loses the lease
            log.error("leaderelection lost identity=%s: this kube-scheduler stops", leader.identity)
            self._stop.set()
            self._inbox.put(None)

    def stop(self) -> None:
        self._stop.set()
        if self.leader is not None:
            self.leader.stop()  # releases the Lease unless leader.release_on_cancel is False (a crash)
        for watcher in self._watchers:
            watcher.close()
        self._inbox.put(None)
        for thread in self._threads:
            thread.join(10)
        self._binder.shutdown(wait=True)  # binding cycles in flight finish (their outcome is in the API)
        self._threads, self._watchers = [], []

    def __enter__(self) -> KubeScheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pump(self, plural: str, watcher: Watcher) -> None:
        while True:
            item = watcher.next_event(None, copy=False)  # read-only: the store never mutates what it stored
            if item is Watcher.CLOSED or item is None:
                return
            kind, obj = item  # type: ignore[misc]
            self._inbox.put((plural, kind, obj))

    # -- queueing

    def _ours(self, pod: dict[str, Any]) -> bool:
        spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
        return (spec.get("schedulerName") in self.profiles and not spec.get("nodeName")
                and not meta.get("deletionTimestamp")
                and (pod.get("status") or {}).get("phase", "Pending") == "Pending")

    def _enqueue(self, key: str, pod: dict[str, Any] | None = None) -> None:
        if key in self._queued:
            return
        pod = pod or self._seen.get(key) or {}
        priority = int((pod.get("spec") or {}).get("priority") or 0)
        heapq.heappush(self._active, _Entry((-priority, time.monotonic(), next(self._seq)), key))
        self._queued.add(key)

    def _backoff_for(self, key: str) -> float:
        attempts = max(1, self._attempts[key])
        return min(self.config.initial_backoff * (2 ** (attempts - 1)), self.config.max_backoff)

    def _move_all(self, why: str) -> None:
        """A cluster change: unschedulable pods go to active, or to backoff if theirs has not expired."""
        if not self._unschedulable:
            return
        log.debug("requeue unschedulable pods count=%d event=%s", len(self._unschedulable), why)
        now = time.monotonic()
        for key in list(self._unschedulable):
            del self._unschedulable[key]
            ready = self._last_failure.get(key, 0.0) + self._backoff_for(key)
            if ready > now:
                self._backoff[key] = ready
            else:
                self._enqueue(key)

    def _forget(self, key: str) -> None:
        self._unschedulable.pop(key, None)
        self._backoff.pop(key, None)
        self._seen.pop(key, None)
        self._attempts.pop(key, None)
        self._last_failure.pop(key, None)
        # an entry left in the heap is skipped when popped (the pod is re-read then)

    # -- the cache

    def _cache(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        """Fold one watched object into the cache; an object older than the cached one is ignored
        (the priming list and the watch's initial events overlap)."""
        meta = obj.get("metadata") or {}
        if plural == "nodes":
            name = meta.get("name", "")
            current = self._nodes.get(name)
            if kind == "DELETED":
                if self._nodes.pop(name, None) is not None:
                    self._node_order = None
            elif current is None or _rv(current) <= _rv(obj):
                if current is None:
                    self._node_order = None
                self._nodes[name] = obj
            return
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        current = self._assigned.get(key)
        if current is not None and kind != "DELETED" and _rv(current) > _rv(obj):
            return
        if kind == "DELETED" or not (obj.get("spec") or {}).get("nodeName"):
            if key not in self._binding:  # an assumed pod stays counted until its bind resolves
                self._assign(key, None)
        else:
            self._assign(key, obj)

    def _assign(self, key: str, pod: dict[str, Any] | None) -> None:
        """Set (or clear) the pod counted on a node, keeping the per-node requests in step."""
        old = self._assigned.pop(key, None)
        if old is not None and _counts(old):
            used = self._used.get(old["spec"]["nodeName"])
            if used is not None:
                used.subtract(pod_requests(old))
        if pod is None:
            return
        self._assigned[key] = pod
        if _counts(pod):
            self._used.setdefault(pod["spec"]["nodeName"], Counter()).update(pod_requests(pod))

    def _node_list(self) -> list[dict[str, Any]]:
        if self._node_order is None:
            self._node_order = sorted(self._nodes)
        return [self._nodes[name] for name in self._node_order]

    def _on_event(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        if plural == "bind":
            self._bind_done(kind, obj)
            return
        self._cache(plural, kind, obj)
        if plural == "nodes":
            self._move_all(f"Node{kind.capitalize()}")
            return
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if key in self._binding:
            return  # assumed: its binding cycle decides what happens next
        if kind != "DELETED" and self._ours(obj):
            previous = self._seen.get(key)
            self._seen[key] = obj
            if key in self._unschedulable:
                if previous is not None and (previous.get("spec") != obj.get("spec")
                                             or previous["metadata"].get("labels") != meta.get("labels")):
                    del self._unschedulable[key]
                    self._enqueue(key)
            elif key not in self._backoff:
                self._enqueue(key, obj)
            return
        was_ours = key in self._seen
        self._forget(key)
        if (obj.get("spec") or {}).get("nodeName") and not was_ours:
            self._move_all(f"AssignedPod{kind.capitalize()}")  # e.g. a pod freed its devices

    # -- the loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for key, ready in list(self._backoff.items()):
                if ready <= now:
                    del self._backoff[key]
                    self._enqueue(key)
            for key, since in list(self._unschedulable.items()):
                if now - since >= self.config.max_unschedulable_seconds:
                    del self._unschedulable[key]
                    self._enqueue(key)
            if self.leader is not None and not self.leader.is_leader():
                if not self._drain(block=False, now=now):
                    return
                self._stop.wait(0.05)  # not leading (yet): the queue fills, nothing is scheduled
                continue
            if not self._drain(block=not self._active, now=now):
                return
            if self._active and not self._inbox.qsize():
                entry = heapq.heappop(self._active)
                self._queued.discard(entry.key)
                try:
                    self.schedule_one(entry.key)
                except Exception:
                    log.exception("scheduling cycle crashed pod=%s", entry.key)
                    self._failed(entry.key, None, "SchedulerError", "internal error in the scheduler simulator")

    def _drain(self, block: bool, now: float) -> bool:
        timeout = 0.0
        if block:
            upcoming = [*self._backoff.values(), *(s + self.config.max_unschedulable_seconds
                                                    for s in self._unschedulable.values())]
            timeout = max(0.0, min([now + 0.5, *upcoming]) - now)
        try:
            item = self._inbox.get(timeout=timeout) if block else self._inbox.get_nowait()
        except queue.Empty:
            return True
        while True:
            if item is None:
                return False
            self._on_event(*item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return True

    # -- one scheduling cycle

    def schedule_one(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        try:
            pod = self.store.get("pods", namespace, name)
        except errors.StatusError:
            self._forget(key)
            return
        if not self._ours(pod):
            self._forget(key)
            return
        self._attempts[key] += 1
        self.attempts_total += 1
        started = time.perf_counter()
        try:
            self._cycle(key, pod)
        finally:
            self._observe("cycle", time.perf_counter() - started)

    def _observe(self, phase: str, seconds: float) -> None:
        if self.observer is not None:
            self.observer(phase, seconds)

    def _cycle(self, key: str, pod: dict[str, Any]) -> None:
        nodes = self._node_list()
        extenders = self._extenders_for(pod)
        feasible, reasons = self._in_tree_filter(pod, nodes, extenders)
        for extender in extenders:
            if not feasible:
                break
            if not extender.config.filter_verb or not extender.interested(pod):
                continue
            try:
                began = time.perf_counter()
                survivors, failed, unresolvable = extender.filter(pod, feasible)
                self._observe("filter", time.perf_counter() - began)
            except ExtenderError as exc:
                if extender.config.ignorable:
                    log.info("ignorable extender failed, skipping url=%s error=%s", extender.config.url_prefix, exc)
                    continue
                self._failed(key, pod, "SchedulerError", str(exc))
                return
            for node_name, reason in {**failed, **unresolvable}.items():
                reasons[node_name] = reason
            kept = {n["metadata"]["name"] for n in survivors}
            for node in feasible:
                if node["metadata"]["name"] not in kept:
                    reasons.setdefault(node["metadata"]["name"], "node(s) were rejected by an extender")
            feasible = survivors
        if not feasible:
            counts = Counter(reasons.values())
            detail = ", ".join(f"{n} {r}" for r, n in sorted(counts.items(), key=lambda x: x[0]))
            message = f"0/{len(nodes)} nodes are available" + (f": {detail}." if detail else ".")
            self._failed(key, pod, "Unschedulable", message)
            return
        if len(feasible) == 1:
            host = feasible[0]["metadata"]["name"]
        else:
            began = time.perf_counter()
            host = self._prioritize(pod, feasible, extenders)
            self._observe("prioritize", time.perf_counter() - began)
        self._assume(key, pod, host)
        self._binder.submit(self._bind, key, pod, host, extenders)

    def _extenders_for(self, pod: dict[str, Any]) -> list[Extender]:
        """The pod's profile's extenders: ours for our scheduler name, none for default-scheduler."""
        name = (pod.get("spec") or {}).get("schedulerName")
        return self.extenders if name == self.config.scheduler_name else []

    def _in_tree_filter(self, pod: dict[str, Any], nodes: list[dict[str, Any]], extenders: list[Extender]
                        ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        spec = pod.get("spec") or {}
        tolerations = spec.get("tolerations") or []
        ignored = {m.name for e in extenders for m in e.config.managed_resources if m.ignored_by_scheduler}
        wanted = {r: n for r, n in pod_requests(pod).items() if _is_extended(r) and r not in ignored and n > 0}
        spreads = any((c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule")
                      for c in spec.get("topologySpreadConstraints") or [])
        used = self._used
        spread = _TopologySpread(pod, nodes, list(self._assigned.values())) if spreads else None
        feasible, reasons = [], {}
        for node in nodes:
            name = node["metadata"]["name"]
            node_spec = node.get("spec") or {}
            if node_spec.get("unschedulable") and not _tolerates(
                    tolerations, {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}):
                reasons[name] = "node(s) were unschedulable"
                continue
            blocking = [t for t in node_spec.get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")
                        and not _tolerates(tolerations, t)]
            if blocking:
                taint = blocking[0]
                reasons[name] = f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
                continue
            if not _affinity_matches(pod, node):
                reasons[name] = "node(s) didn't match Pod's node affinity/selector"
                continue
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            short = [r for r, n in wanted.items()
                     if n + used.get(name, Counter())[r] > quantity_value(allocatable.get(r, "0"))]
            if short:
                reasons[name] = f"Insufficient {sorted(short)[0]}"
                continue
            skewed = spread.reason(node) if spread is not None else None
            if skewed:
                reasons[name] = skewed
                continue
            feasible.append(node)
        return feasible, reasons

    def _prioritize(self, pod: dict[str, Any], nodes: list[dict[str, Any]], extenders: list[Extender]) -> str:
        totals = {n["metadata"]["name"]: 0 for n in nodes}
        for extender in extenders:
            if not extender.config.prioritize_verb or not extender.interested(pod):
                continue
            try:
                scores = extender.prioritize(pod, nodes)
            except ExtenderError as exc:
                log.info("prioritize failed, ignored url=%s error=%s", extender.config.url_prefix, exc)
                continue
            for host, score in scores.items():
                if host in totals:
                    totals[host] += score * extender.config.weight * (MAX_NODE_SCORE // MAX_EXTENDER_PRIORITY)
        best = max(totals.values())
        return self._rng.choice(sorted(h for h, s in totals.items() if s == best))

    # -- the binding cycle

    def _assume(self, key: str, pod: dict[str, Any], host: str) -> None:
        """The pod counts on `host` from now on, as kube-scheduler's assume; its bind runs apart."""
        assumed = {**pod, "spec": {**(pod.get("spec") or {}), "nodeName": host}}
        if any(other["spec"]["nodeName"] == host for other in self._binding.values()):
            self._observe("node-busy", 0.0)  # another bind to this node is in flight: ours waits on its node lock
        self._binding[key] = assumed
        self._assign(key, assumed)

    def _bind_done(self, outcome: str, result: dict[str, Any]) -> None:
        """A binding cycle's outcome, back on the loop thread: forget the pod, or un-assume and requeue."""
        key = result["key"]
        assumed = self._binding.pop(key, None)
        if outcome == "bound":
            self._forget(key)
            return
        if assumed is not None and self._assigned.get(key) is assumed:
            self._assign(key, None)  # still the assumed copy: nothing bound it meanwhile
            self._move_all("AssignedPodDelete")  # what it held is free again, as kube-scheduler requeues
        self._failed(key, result["pod"], "SchedulerError", result["message"])

    def _bind(self, key: str, pod: dict[str, Any], host: str, extenders: list[Extender]) -> None:
        """The binding cycle (a worker thread): bind, record the event, report back to the loop."""
        began = time.perf_counter()
        try:
            message = self._bind_call(key, pod, host, extenders)
        except Exception as exc:  # a bug must not lose the pod: it is requeued as a failed bind
            log.exception("binding cycle crashed pod=%s", key)
            message = f"binding rejected: internal error in the scheduler simulator: {exc}"
        self._observe("bind", time.perf_counter() - began)
        if message is None:
            self._inbox.put(("bind", "bound", {"key": key}))
        else:
            self._inbox.put(("bind", "failed", {"key": key, "pod": pod, "message": message}))

    def _bind_call(self, key: str, pod: dict[str, Any], host: str, extenders: list[Extender]) -> str | None:
        """Bind the pod; None when it is bound, else why not."""
        meta = pod["metadata"]
        binder = next((e for e in extenders if e.config.bind_verb and e.interested(pod)), None)
        try:
            if binder is not None:
                binder.bind(pod, host)
            else:
                self.store.bind(meta["namespace"], meta["name"], {"metadata": {"name": meta["name"],
                                                                               "uid": meta["uid"]},
                                                                  "target": {"kind": "Node", "name": host}})
        except (ExtenderError, errors.StatusError) as exc:
            try:
                bound = (self.store.get("pods", meta["namespace"], meta["name"]).get("spec") or {}).get("nodeName")
            except errors.StatusError:
                bound = None
            if bound:
                log.info("bind reported an error but the pod is bound pod=%s node=%s", key, bound)
            else:
                text = exc.message if isinstance(exc, errors.StatusError) else str(exc)
                return f"binding rejected: {text}"
        events.record(self.store, pod, "Normal", "Scheduled",
                      f"Successfully assigned {meta['namespace']}/{meta['name']} to {host}", _profile(pod))
        return None

    def _failed(self, key: str, pod: dict[str, Any] | None, reason: str, message: str) -> None:
        now = time.monotonic()
        self._last_failure[key] = now
        if reason == "Unschedulable":
            self._unschedulable[key] = now
        else:
            self._backoff[key] = now + self._backoff_for(key)
        if pod is None:
            return
        meta = pod["metadata"]
        log.info("pod not scheduled pod=%s reason=%s message=%s", key, reason, message)
        updated = {"status": {}}
        set_condition(updated, "PodScheduled", "False", reason, message)
        try:
            self.store.patch("pods", meta["namespace"], meta["name"], updated,
                             "application/strategic-merge-patch+json", "status")
        except errors.StatusError:
            return
        events.record(self.store, pod, "Warning", "FailedScheduling", message, _profile(pod))


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _counts(pod: dict[str, Any]) -> bool:
    """Whether a pod's requests count on its node (NodeResourcesFit skips finished pods)."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _profile(pod: dict[str, Any]) -> str:
    """The scheduler name a pod's events are reported under (its profile)."""
    return str((pod.get("spec") or {}).get("schedulerName") or DEFAULT_SCHEDULER)


# ----------------------------------------------------------------------------------------------
# leader election over the in-process store


class StoreLeaseClient:
    """One Lease in the simulator's store, for `hami.k8s.leases.LeaderElector`."""

    def __init__(self, store: Store, namespace: str, name: str) -> None:
        self.store, self.namespace, self.name = store, namespace, name

    def _call(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return fn()
        except errors.StatusError as err:
            cls = Conflict if err.code == 409 else KubeError
            raise cls(f"lease {self.namespace}/{self.name}", err.code, err.reason, err.message) from None

    def get(self) -> dict[str, Any] | None:
        try:
            return self.store.get("leases", self.namespace, self.name)
        except errors.StatusError as err:
            if err.code == 404:
                return None
            raise KubeError(f"lease {self.namespace}/{self.name}", err.code, err.reason, err.message) from None

    def create(self, lease: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda: self.store.create("leases", self.namespace, lease))

    def update(self, lease: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda: self.store.update("leases", self.namespace, self.name, lease))
