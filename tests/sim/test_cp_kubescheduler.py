"""The kube-scheduler driver against a tiny HTTP extender: wire format, errors, retries, requeue, in-tree filters
(reference §1.2–1.4)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hami.sim.apiserver import Store
from hami.sim.kubescheduler import ExtenderConfig, KubeScheduler, ManagedResource, SchedulerConfig

GPU = "example.com/gpu"


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


class TinyExtender:
    """Records every request; answers from plain attributes the test sets."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.peers: list[tuple[str, int]] = []  # (verb, client port) per call
        self.allowed: set[str] | None = None  # None: every node passes
        self.scores: dict[str, int] = {}
        self.errors: list[str] = []  # consumed one per filter call: "" means answer normally
        self.delay = 0.0
        self.bind_delay = 0.0  # seconds each bind takes (after `delay`)
        self.bind_error = ""
        ext = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as our extender's server

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                verb = self.path.strip("/")
                ext.calls.append((verb, body))
                ext.peers.append((verb, self.client_address[1]))
                if ext.delay:
                    time.sleep(ext.delay)
                if verb == "bind" and ext.bind_delay:
                    time.sleep(ext.bind_delay)
                answer = ext.answer(verb, body)
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def answer(self, verb: str, body: dict[str, Any]) -> Any:
        if verb == "filter":
            error = self.errors.pop(0) if self.errors else ""
            if error:
                return {"Nodes": None, "NodeNames": None, "FailedNodes": None, "FailedAndUnresolvableNodes": None,
                        "Error": error}
            names = body["NodeNames"]
            keep = [n for n in names if self.allowed is None or n in self.allowed]
            failed = {n: "no free GPU" for n in names if n not in keep}
            return {"Nodes": None, "NodeNames": keep, "FailedNodes": failed, "FailedAndUnresolvableNodes": None,
                    "Error": ""}
        if verb == "prioritize":
            return [{"Host": n, "Score": self.scores.get(n, 0)} for n in body["NodeNames"]]
        if verb == "bind":
            if self.bind_error:
                return {"Error": self.bind_error}
            self.store.bind(body["PodNamespace"], body["PodName"], {
                "metadata": {"name": body["PodName"], "uid": body["PodUID"]},
                "target": {"kind": "Node", "name": body["Node"]}})
            return {"Error": ""}
        return {"Error": f"unknown verb {verb}"}

    def verbs(self) -> list[str]:
        return [v for v, _ in self.calls]

    def __enter__(self) -> TinyExtender:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def store() -> Iterator[Store]:
    before = set(threading.enumerate())
    s = Store()
    yield s
    s.close()
    wait_for(lambda: not set(threading.enumerate()) - before)


def _node(store: Store, name: str, labels: dict[str, str] | None = None, unschedulable: bool = False,
          taints: list[dict[str, str]] | None = None, gpus: int = 4) -> None:
    spec: dict[str, Any] = {}
    if unschedulable:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = taints
    store.create("nodes", None, {"metadata": {"name": name, "labels": labels or {}}, "spec": spec,
                                 "status": {"allocatable": {GPU: str(gpus)}, "capacity": {GPU: str(gpus)}}})


def _pod(store: Store, name: str, gpus: int = 1, scheduler: str = "hami-scheduler", **spec: Any) -> None:
    limits = {GPU: str(gpus)} if gpus else {}
    store.create("pods", "default", {"metadata": {"name": name}, "spec": {
        "schedulerName": scheduler, "containers": [{"name": "c", "image": "x", "resources": {"limits": limits}}],
        **spec}})


def _node_of(store: Store, name: str) -> str | None:
    return store.get("pods", "default", name)["spec"].get("nodeName")


def _condition(store: Store, name: str) -> dict[str, Any] | None:
    conditions = store.get("pods", "default", name).get("status", {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "PodScheduled"), None)


def _scheduler(store: Store, *extenders: ExtenderConfig, **options: Any) -> KubeScheduler:
    config = SchedulerConfig(extenders=extenders, initial_backoff=options.pop("initial_backoff", 0.1),
                             max_backoff=options.pop("max_backoff", 0.4), seed=1, **options)
    return KubeScheduler(store, config)


def _config(ext: TinyExtender, **kwargs: Any) -> ExtenderConfig:
    kwargs.setdefault("managed_resources", (ManagedResource(GPU, ignored_by_scheduler=True),))
    return ExtenderConfig(url_prefix=ext.url, **kwargs)


def test_wire_format_of_filter_prioritize_and_bind(store: Store) -> None:
    for name in ("n1", "n2", "n3"):
        _node(store, name)
    with TinyExtender(store) as ext, _scheduler(store, _config(ext, prioritize_verb="prioritize", weight=2)):
        ext.allowed = {"n1", "n2"}
        ext.scores = {"n1": 3, "n2": 7}
        _pod(store, "p")
        wait_for(lambda: _node_of(store, "p"))
    assert _node_of(store, "p") == "n2"
    assert ext.verbs() == ["filter", "prioritize", "bind"]
    filter_args = ext.calls[0][1]
    assert set(filter_args) == {"Pod", "Nodes", "NodeNames"}
    assert filter_args["Nodes"] is None and filter_args["NodeNames"] == ["n1", "n2", "n3"]
    assert filter_args["Pod"]["metadata"]["name"] == "p" and filter_args["Pod"]["spec"]["containers"]
    prioritize_args = ext.calls[1][1]
    assert prioritize_args["NodeNames"] == ["n1", "n2"] and prioritize_args["Nodes"] is None
    pod = store.get("pods", "default", "p")
    assert ext.calls[2][1] == {"PodName": "p", "PodNamespace": "default", "PodUID": pod["metadata"]["uid"],
                               "Node": "n2"}
    assert _condition(store, "p")["status"] == "True"
    scheduled = [e for e in store.list("events", "default")["items"] if e["reason"] == "Scheduled"]
    assert scheduled[0]["message"] == "Successfully assigned default/p to n2"


def test_single_feasible_node_skips_prioritize(store: Store) -> None:
    _node(store, "n1")
    _node(store, "n2")
    with TinyExtender(store) as ext, _scheduler(store, _config(ext, prioritize_verb="prioritize")):
        ext.allowed = {"n1"}
        _pod(store, "p")
        wait_for(lambda: _node_of(store, "p"))
    assert ext.verbs() == ["filter", "bind"] and _node_of(store, "p") == "n1"


def test_prioritize_scores_are_weighted_across_extenders(store: Store) -> None:
    _node(store, "n1")
    _node(store, "n2")
    with TinyExtender(store) as heavy, TinyExtender(store) as light, _scheduler(
            store, _config(heavy, prioritize_verb="prioritize", weight=5, bind_verb=""),
            _config(light, prioritize_verb="prioritize", weight=1)):
        heavy.scores, light.scores = {"n1": 3, "n2": 0}, {"n1": 0, "n2": 10}  # 3*5*10=150 > 10*1*10=100
        _pod(store, "p")
        wait_for(lambda: _node_of(store, "p"))
    assert _node_of(store, "p") == "n1"
    assert light.verbs() == ["filter", "prioritize", "bind"] and heavy.verbs() == ["filter", "prioritize"]


def test_extender_error_leaves_pod_pending_and_it_is_retried(store: Store) -> None:
    _node(store, "n1")
    with TinyExtender(store) as ext, _scheduler(store, _config(ext)) as scheduler:
        ext.errors = ["cache not synced", "cache not synced"]
        _pod(store, "p")
        wait_for(lambda: (_condition(store, "p") or {}).get("reason") == "SchedulerError")
        assert _condition(store, "p")["message"] == "cache not synced" and _node_of(store, "p") is None
        wait_for(lambda: _node_of(store, "p") == "n1")
    assert ext.verbs().count("filter") == 3 and scheduler.attempts_total == 3
    failures = [e for e in store.list("events", "default")["items"] if e["reason"] == "FailedScheduling"]
    # the two identical failures are one Event counted twice, as client-go's event recorder does it
    assert [(e["type"], e["count"], e["message"]) for e in failures] == [("Warning", 2, "cache not synced")]
    assert failures[0]["firstTimestamp"] <= failures[0]["lastTimestamp"]


def test_extender_timeout_is_an_error(store: Store) -> None:
    _node(store, "n1")
    with TinyExtender(store) as ext, _scheduler(store, _config(ext, http_timeout=0.2)):
        ext.delay = 0.5
        _pod(store, "p")
        wait_for(lambda: (_condition(store, "p") or {}).get("reason") == "SchedulerError")
        assert "timed out" in _condition(store, "p")["message"]
        ext.delay = 0.0
        wait_for(lambda: _node_of(store, "p") == "n1")


def test_bind_error_requeues_the_pod(store: Store) -> None:
    _node(store, "n1")
    with TinyExtender(store) as ext, _scheduler(store, _config(ext)):
        ext.bind_error = "node n1 is locked"
        _pod(store, "p")
        wait_for(lambda: "node n1 is locked" in ((_condition(store, "p") or {}).get("message") or ""))
        ext.bind_error = ""
        wait_for(lambda: _node_of(store, "p") == "n1")


def test_unschedulable_pod_waits_for_a_cluster_change(store: Store) -> None:
    _node(store, "n1")
    _node(store, "n2")
    with TinyExtender(store) as ext, _scheduler(store, _config(ext)):
        ext.allowed = set()
        _pod(store, "p")
        wait_for(lambda: (_condition(store, "p") or {}).get("reason") == "Unschedulable")
        assert _condition(store, "p")["message"] == "0/2 nodes are available: 2 no free GPU."
        time.sleep(0.5)
        assert ext.verbs().count("filter") == 1  # nothing changed: no retry
        ext.allowed = {"n3"}
        _node(store, "n3")  # a node added
        wait_for(lambda: _node_of(store, "p") == "n3")
        # a pod freed on a node moves the waiting pods as well
        ext.allowed = set()
        _pod(store, "q")
        wait_for(lambda: (_condition(store, "q") or {}).get("reason") == "Unschedulable")
        ext.allowed = {"n3"}
        store.delete("pods", "default", "p", grace_period_seconds=0)
        wait_for(lambda: _node_of(store, "q") == "n3")


def test_in_tree_filters_run_before_the_extender(store: Store) -> None:
    _node(store, "cordoned", unschedulable=True)
    _node(store, "tainted", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}])
    _node(store, "zone-a", labels={"zone": "a"})
    _node(store, "plain")
    _node(store, "small", gpus=0)
    with TinyExtender(store) as ext, _scheduler(
            store, _config(ext, managed_resources=(ManagedResource(GPU, ignored_by_scheduler=False),))):
        _pod(store, "selector", nodeSelector={"zone": "a"})
        wait_for(lambda: _node_of(store, "selector"))
        _pod(store, "tolerant", tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
             affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                 {"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}]}}})
        wait_for(lambda: _node_of(store, "tolerant"))
        _pod(store, "nowhere", nodeSelector={"zone": "b"})
        wait_for(lambda: (_condition(store, "nowhere") or {}).get("reason") == "Unschedulable")
    filters = [body["NodeNames"] for verb, body in ext.calls if verb == "filter"]
    assert filters[0] == ["zone-a"] and _node_of(store, "selector") == "zone-a"
    assert filters[1] == ["plain", "tainted"]  # cordoned, zone-a (affinity) and small (Insufficient) filtered
    assert len(filters) == 2  # nothing feasible: the extender is not called
    assert _condition(store, "nowhere")["message"] == (
        "0/5 nodes are available: 3 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint {gpu: yes}, 1 node(s) were unschedulable.")


def test_uninterested_and_foreign_pods(store: Store) -> None:
    _node(store, "n1")
    with TinyExtender(store) as ext, _scheduler(store, _config(ext)):
        _pod(store, "cpu-only", gpus=0)
        _pod(store, "foreign", scheduler="other-scheduler")
        wait_for(lambda: _node_of(store, "cpu-only") == "n1")
        time.sleep(0.2)
    assert ext.calls == []  # not interested: kube-scheduler binds it itself
    assert _node_of(store, "foreign") is None  # a scheduler nobody runs: Pending, as in a real cluster
    assert _condition(store, "foreign") is None
    assert not [e for e in store.list("events", "default")["items"] if e["involvedObject"]["name"] == "foreign"]


def test_default_scheduler_schedules_ordinary_pods_without_extenders(store: Store) -> None:
    _node(store, "n1", gpus=1)
    with TinyExtender(store) as ext, _scheduler(store, _config(ext)):
        store.create("pods", "default", {"metadata": {"name": "plain"}, "spec": {  # no schedulerName at all
            "containers": [{"name": "c", "image": "x"}]}})
        _pod(store, "gpu", gpus=1, scheduler="default-scheduler")
        _pod(store, "too-big", gpus=2, scheduler="default-scheduler")
        wait_for(lambda: _node_of(store, "plain") == "n1" and _node_of(store, "gpu") == "n1")
        wait_for(lambda: (_condition(store, "too-big") or {}).get("reason") == "Unschedulable")
    assert ext.calls == []  # the default profile has no extender
    assert _condition(store, "too-big")["message"] == "0/1 nodes are available: 1 Insufficient example.com/gpu."
    scheduled = {e["involvedObject"]["name"]: e["source"]["component"]
                 for e in store.list("events", "default")["items"] if e["reason"] == "Scheduled"}
    assert scheduled == {"plain": "default-scheduler", "gpu": "default-scheduler"}


def test_the_driver_keeps_a_cache_instead_of_listing_per_attempt(store: Store) -> None:
    for name in ("n1", "n2", "n3"):
        _node(store, name)
    listed: list[str] = []
    original = store.list

    def counting(plural: str, *args: Any, **kwargs: Any) -> Any:
        listed.append(plural)
        return original(plural, *args, **kwargs)

    store.list = counting  # type: ignore[method-assign]
    fit = (ManagedResource(GPU, ignored_by_scheduler=False),)  # the in-tree fit counts assigned pods
    with TinyExtender(store) as ext, _scheduler(store, _config(ext, managed_resources=fit)):
        for i in range(12):
            _pod(store, f"p{i}")
        wait_for(lambda: all(_node_of(store, f"p{i}") for i in range(12)))
    assert listed == ["nodes", "pods"]  # primed once at start; every attempt then reads the cache
    assert sorted(Counter(_node_of(store, f"p{i}") for i in range(12)).values()) == [4, 4, 4]  # 4 GPUs each


def test_binding_runs_apart_from_the_scheduling_cycle_and_the_assumed_pod_counts(store: Store) -> None:
    _node(store, "n1", gpus=1)
    fit = (ManagedResource(GPU, ignored_by_scheduler=False),)
    with TinyExtender(store) as ext, _scheduler(store, _config(ext, managed_resources=fit)):
        ext.bind_delay = 1.0
        _pod(store, "a")
        wait_for(lambda: "bind" in ext.verbs())
        _pod(store, "b")
        wait_for(lambda: (_condition(store, "b") or {}).get("reason") == "Unschedulable")
        assert _node_of(store, "a") is None  # b was judged while a's bind was still running
        assert _condition(store, "b")["message"] == f"0/1 nodes are available: 1 Insufficient {GPU}."
        wait_for(lambda: _node_of(store, "a") == "n1")


def test_a_failed_bind_forgets_the_assumed_pod_and_requeues_the_waiting_ones(store: Store) -> None:
    _node(store, "n1", gpus=1)
    fit = (ManagedResource(GPU, ignored_by_scheduler=False),)
    with TinyExtender(store) as ext, _scheduler(store, _config(ext, managed_resources=fit)):
        ext.bind_error, ext.bind_delay = "node n1 is locked", 0.5
        _pod(store, "a")
        wait_for(lambda: "bind" in ext.verbs())
        _pod(store, "b")
        wait_for(lambda: (_condition(store, "b") or {}).get("reason") == "Unschedulable")  # a is assumed on n1
        wait_for(lambda: "node n1 is locked" in ((_condition(store, "a") or {}).get("message") or ""))
        ext.bind_error, ext.bind_delay = "", 0.0
        # un-assumed: the GPU is free again for whichever comes first; a leaked assume would block both
        wait_for(lambda: "n1" in (_node_of(store, "a"), _node_of(store, "b")))


def test_extender_connections_are_kept_alive(store: Store) -> None:
    for name in ("n1", "n2"):
        _node(store, name)
    with TinyExtender(store) as ext, _scheduler(store, _config(ext, prioritize_verb="prioritize")):
        for i in range(6):
            _pod(store, f"p{i}")
        wait_for(lambda: all(_node_of(store, f"p{i}") for i in range(6)))
    cycle = {port for verb, port in ext.peers if verb in ("filter", "prioritize")}
    assert len([v for v, _ in ext.peers if v == "filter"]) == 6 and len(cycle) == 1  # the loop's one connection
    assert len({port for verb, port in ext.peers if verb == "bind"}) <= KubeScheduler.BIND_WORKERS
