"""Every real component on one machine: the local control plane (API server, kube-scheduler driver,
kubelets), `hami scheduler` as its own process (webhook over TLS, extender, metrics) and one
`hami device-plugin` process per node over its simulated NVML — the stack `hami demo` runs.

Also `hami simulate online --full-stack`: the online protocol (hami/sim/online.py) at small scale
through that stack, next to the engine-level run of the same sequence, pod by pod. To make the two
comparable the stack runs as the engine-level run assumes: pods submitted one at a time (each
one's outcome and every departure before it settled before the next arrives), idle instances kept
until a decision needs their slices (the agents' idle timeout is off), and kube-scheduler's ties
broken by its seeded random choice among the best nodes, which the engine-level side replays with
the same seed (`ReplayedTieBreak`), on an engine whose nodes are in the scheduler's own order
(`scheduler_node_order`: the engine ranks equal nodes by it). A rejection is a pod kube-scheduler
marks Unschedulable; it is deleted at once (the protocol rejects on arrival).
"""

from __future__ import annotations

import functools
import heapq
import json
import random
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hami._core import Code, CorePick, Decision, Engine, Features, GpuMode, GpuSpec, MigPick
from hami.api import codecs, names
from hami.api.requests import Request
from hami.devices import naming
from hami.k8s import Kube
from hami.sim.apiserver.watch import Watcher
from hami.sim.cluster import (
    ControlPlane,
    NodeSpec,
    fakenvml_attacher,
    fakenvml_state,
    hami_extender,
    make_workdir,
    node_agent,
    parse_nodes,
    remove_workdir,
)
from hami.sim.kubescheduler import SchedulerConfig as KubeSchedulerConfig
from hami.sim.online import MEAN_LIFETIME, MIXES, mix_requests
from hami.sim.runner import Cluster, extender_score, policy_label
from hami.sim.traces import TracePod

WEBHOOK = "vgpu.hami.io"
NAMESPACE = "default"


class StackError(RuntimeError):
    """The stack did not come up (the message names the log to read)."""


def _free_port() -> int:
    from hami.sim.realkube.process import free_port

    return free_port()


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


@dataclass
class ApiCalls:
    """Requests the local API server answered, by method and resource (watches counted once each)."""

    counts: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, path: str, code: int) -> None:
        parts = [p for p in path.split("?", 1)[0].split("/") if p]
        kind = "watch" if "watch=" in path else ""
        resource = parts[-1]
        if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
            i = parts.index("namespaces") + 2
            resource = "/".join(parts[i:i + 1] + parts[i + 2:])  # pods, pods/binding, pods/status …
        elif len(parts) >= 3 and parts[-2] in ("nodes", "pods"):
            resource = parts[-2]
        with self._lock:
            self.counts[(method if not kind else "WATCH", resource)] += 1
            if code == 409:
                self.counts[(method, f"{resource} (409 conflict)")] += 1

    def total(self) -> int:
        """Requests answered (a conflict is counted once, under its request)."""
        with self._lock:
            return sum(n for (_m, r), n in self.counts.items() if not r.endswith("(409 conflict)"))

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self.counts)


@dataclass
class Stack:
    """The full stack on `nodes` (module docstring). `start()`/`stop()` or a `with` block."""

    nodes: Sequence[NodeSpec]
    workdir: Path | None = None
    policy: str = "fragmentation-aware"
    seed: int | None = None
    """kube-scheduler's tie-break seed (None: unseeded, as a real one)."""
    api_port: int = 0
    metrics_port: int = 0
    """The scheduler's metrics port on 127.0.0.1 (0: a free one)."""
    agent_sync_interval: float = 5.0
    """Seconds between the agents' reconciliations (how soon an agent reports a pod's instance idle)."""
    plane: ControlPlane | None = None
    kube: Kube | None = None
    calls: ApiCalls = field(default_factory=ApiCalls)
    scheduler_url: str = ""
    metrics_url: str = ""
    _scheduler: subprocess.Popen | None = None
    _made: bool = False

    @property
    def kubeconfig(self) -> Path:
        assert self.plane is not None and self.plane.kubeconfig is not None
        return self.plane.kubeconfig

    @property
    def scheduler_log(self) -> Path:
        return Path(self.workdir or ".") / "scheduler" / "scheduler.log"

    def start(self, timeout: float = 120.0, progress: Callable[[str], None] | None = None) -> Stack:
        say = progress or (lambda _text: None)
        self.workdir, self._made = make_workdir(self.workdir)
        try:
            self._start(timeout, say)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float, say: Callable[[str], None]) -> None:
        assert self.workdir is not None
        http_port = _free_port()
        metrics_port = self.metrics_port or _free_port()
        self.scheduler_url = f"https://127.0.0.1:{http_port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        ks = KubeSchedulerConfig(extenders=(hami_extender(self.scheduler_url),), seed=self.seed,
                                 initial_backoff=0.2, max_backoff=1.0)
        say("starting the API server, kubelets and node agents")
        self.plane = ControlPlane(self.nodes, self.workdir, port=self.api_port, scheduler=ks,
                                  create_state=fakenvml_state, attacher=fakenvml_attacher,
                                  start_plugin=functools.partial(node_agent, sync_interval=self.agent_sync_interval))
        self.plane.start()
        assert self.plane.api is not None
        remember = self.plane.api.record

        def record(method: str, path: str, code: int) -> None:
            remember(method, path, code)
            self.calls.record(method, path, code)

        self.plane.api.record = record  # type: ignore[method-assign]
        ca_pem = self._start_scheduler(http_port, metrics_port)
        self.kube = Kube.connect(self.kubeconfig)
        say("waiting for the scheduler and every node agent")
        deadline = time.monotonic() + timeout
        self._wait(lambda: _get(f"{self.scheduler_url}/readyz")[0] == 200, deadline,
                   f"the scheduler is not ready (log: {self.scheduler_log})")
        self.plane.api.store.create("mutatingwebhookconfigurations", None, _webhook(self.scheduler_url, ca_pem))
        expected = sum(n.gpus for n in self.nodes)
        self._wait(lambda: self._registered() >= expected and self._advertised(), deadline,
                   "the node agents did not register every GPU (logs: "
                   f"{self.workdir / 'nodes' / '<node>' / 'agent.log'})")

    def _start_scheduler(self, http_port: int, metrics_port: int) -> str:
        """`hami scheduler` as its own process, serving TLS with a certificate of a fresh CA."""
        import trustme

        assert self.workdir is not None
        folder = self.workdir / "scheduler"
        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(folder / "tls.crt"))
        cert.private_key_pem.write_to_path(str(folder / "tls.key"))
        command = [sys.executable, "-m", "hami.cli", "scheduler", "--kubeconfig", str(self.kubeconfig),
                   "--http-bind", f"127.0.0.1:{http_port}", "--metrics-bind", f"127.0.0.1:{metrics_port}",
                   "--cert-file", str(folder / "tls.crt"), "--key-file", str(folder / "tls.key"),
                   "--policy", self.policy, "--lock-wait", "10"]
        with open(self.scheduler_log, "ab") as out:
            self._scheduler = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return ca.cert_pem.bytes().decode()

    def _wait(self, predicate: Callable[[], bool], deadline: float, what: str) -> None:
        while not predicate():
            if self._scheduler is not None and self._scheduler.poll() is not None:
                raise StackError(f"the scheduler exited with status {self._scheduler.returncode} "
                                 f"(log: {self.scheduler_log})")
            if time.monotonic() > deadline:
                raise StackError(what)
            time.sleep(0.1)

    def _registered(self) -> int:
        """GPUs the scheduler holds (its metrics list one row per registered GPU)."""
        status, text = _get(self.metrics_url)
        return text.count("\nhami_gpu_memory_limit_bytes{") if status == 200 else 0

    def _advertised(self) -> bool:
        """Every kubelet has our device plugin's devices (else a bound pod would fail admission)."""
        assert self.plane is not None
        return all(node.kubelet.devices(names.RESOURCE_COUNT) for node in self.plane.sim_nodes)

    def metrics(self) -> str:
        return _get(self.metrics_url)[1]

    def stop(self) -> None:
        if self._scheduler is not None and self._scheduler.poll() is None:
            self._scheduler.terminate()
        if self.kube is not None:
            self.kube.close()
            self.kube = None
        if self.plane is not None:
            self.plane.stop()
            self.plane = None
        if self._scheduler is not None:
            try:
                self._scheduler.wait(10)
            except subprocess.TimeoutExpired:
                self._scheduler.kill()
                self._scheduler.wait(5)
            self._scheduler = None
        if self.workdir is not None:
            remove_workdir(self.workdir, self._made)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _webhook(url: str, ca_pem: str) -> dict[str, Any]:
    """The chart's MutatingWebhookConfiguration, pointing at `url`, trusting `ca_pem`."""
    import base64

    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK}, "webhooks": [{
                "name": WEBHOOK, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": 10,
                "clientConfig": {"url": f"{url}/webhook", "caBundle": base64.b64encode(ca_pem.encode()).decode()},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods"]}]}]}


# -- watching what happens ------------------------------------------------------------------------


@dataclass
class Device:
    """One device a container got: a MIG instance (profile at placement) or a hami-core share."""

    gpu: str
    profile: str = ""  # "" for a hami-core share
    start: int = -1
    mig_uuid: str = ""
    memory_mib: int = 0

    @property
    def mig(self) -> bool:
        return bool(self.profile)


@dataclass
class PodRecord:
    name: str
    created: float
    node: str = ""
    bound: float | None = None
    running: float | None = None
    gone: float | None = None
    failed: str = ""
    unschedulable: str = ""
    devices: list[list[Device]] = field(default_factory=list)  # per container

    @property
    def wait(self) -> float | None:
        return None if self.running is None else self.running - self.created


def _devices(annotations: dict[str, str]) -> list[list[Device]]:
    allocated = annotations.get(names.VGPU_DEVICES_ALLOCATED)
    if not allocated:
        return []
    out = [[Device(d.uuid, memory_mib=d.memory_mib) for d in ctr]
           for ctr in codecs.decode_pod_devices(allocated, names.VGPU_DEVICES_ALLOCATED)]
    mig = annotations.get(names.VGPU_MIG_ALLOCATIONS)
    for a in codecs.decode_mig_allocations(mig) if mig else ():
        if a.container_index < len(out) and a.device_index < len(out[a.container_index]):
            device = out[a.container_index][a.device_index]
            device.profile, device.start, device.mig_uuid = a.profile, a.placement.start, a.mig_uuid or ""
    return out


class Observer:
    """Follows pods and nodes through in-process watches of the local API server (no API calls):
    each pod's bind, start, devices, failure or Unschedulable condition; each node's realised MIG
    instances over time. Thread-safe readers; `changed` is notified on every event."""

    def __init__(self, stack: Stack) -> None:
        assert stack.plane is not None and stack.plane.api is not None
        self.store = stack.plane.api.store
        self.pods: dict[str, PodRecord] = {}
        self.instances: dict[str, tuple[codecs.RealisedInstance, ...]] = {}  # node -> latest
        self.registered: dict[str, tuple[codecs.NodeDevice, ...]] = {}
        self.created_uuids: set[str] = set()
        self.destroyed_uuids: set[str] = set()
        self.new_next_to_running: list[tuple[str, str, str, list[str]]] = []  # node, gpu, new, running
        self.peak_in_use = 0
        self.changed = threading.Condition()
        self._watchers = [self.store.watch("pods"), self.store.watch("nodes")]
        self._threads = [threading.Thread(target=self._pump, args=(w, h), daemon=True, name=f"observer-{p}")
                         for w, h, p in zip(self._watchers, (self._on_pod, self._on_node), ("pods", "nodes"))]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        for watcher in self._watchers:
            watcher.close()
        for thread in self._threads:
            thread.join(5)

    def _pump(self, watcher: Watcher, handle: Callable[[str, dict[str, Any]], None]) -> None:
        while True:
            item = watcher.next_event(None)
            if item is Watcher.CLOSED or item is None:
                return
            kind, obj = item  # type: ignore[misc]
            with self.changed:
                handle(kind, obj)
                self.changed.notify_all()

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        now = time.monotonic()
        record = self.pods.get(meta["name"])
        if record is None:
            record = self.pods[meta["name"]] = PodRecord(meta["name"], now)
        if kind == "DELETED":
            record.gone = now
            return
        annotations = meta.get("annotations") or {}
        if spec.get("nodeName") and record.bound is None:
            record.node, record.bound = spec["nodeName"], now
        if status.get("phase") == "Running" and record.running is None:
            record.running = now
            record.devices = _devices(annotations)
        if status.get("phase") == "Failed" and not record.failed:
            record.failed = f"{status.get('reason', 'Failed')}: {status.get('message', '')}"
        if annotations.get(names.BIND_PHASE) == names.BIND_PHASE_FAILED and not record.failed:
            record.failed = "bind-phase failed"
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                record.unschedulable = cond.get("message") or "Unschedulable"

    def _on_node(self, kind: str, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        annotations = node["metadata"].get("annotations") or {}
        if annotations.get(names.NODE_REGISTER):
            self.registered[name] = codecs.decode_node_register(annotations[names.NODE_REGISTER])
        text = annotations.get(names.NODE_MIG_INSTANCES)
        if text is None:
            return
        new = codecs.decode_node_mig_instances(text)
        old = {i.mig_uuid for i in self.instances.get(name, ())}
        now = {i.mig_uuid for i in new}
        self.destroyed_uuids |= old - now
        for inst in new:
            if inst.mig_uuid in self.created_uuids or inst.mig_uuid in old:
                continue
            self.created_uuids.add(inst.mig_uuid)  # type: ignore[arg-type]
            running = [f"{i.profile}@{i.placement.start}" for i in new
                       if i.gpu_uuid == inst.gpu_uuid and i.mig_uuid != inst.mig_uuid
                       and i.state is codecs.InstanceState.IN_USE]
            if running:
                self.new_next_to_running.append((name, inst.gpu_uuid, f"{inst.profile}@{inst.placement.start}",
                                                 running))
        self.instances[name] = new
        in_use = sum(1 for insts in self.instances.values() for i in insts
                     if i.state is codecs.InstanceState.IN_USE)
        self.peak_in_use = max(self.peak_in_use, in_use)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` (evaluated under the observer's lock) holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.2))
            return True

    def gpu_index(self, uuid: str) -> int:
        for devices in self.registered.values():
            for d in devices:
                if d.id == uuid:
                    return d.index
        return -1


def pod_body(name: str, containers: Sequence[dict[str, str]], mode: str | None = None,
             labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A GPU pod as a user writes it: limits per container, optionally `nvidia.com/vgpu-mode`; no
    schedulerName (the webhook sets it)."""
    annotations = {names.VGPU_MODE: mode} if mode else {}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations, "labels": dict(labels or {})},
            "spec": {"containers": [{"name": f"c{i}", "image": "cuda", "resources": {"limits": dict(limits)}}
                                    for i, limits in enumerate(containers)]}}


def request_limits(request: Request) -> list[dict[str, str]]:
    """A `hami.api` Request (the simulator's) as the pod limits that parse back to it."""
    out = []
    for c in request.containers:
        limits = {names.RESOURCE_COUNT: str(c.count)}
        if c.memory_mib:
            limits[names.RESOURCE_MEMORY] = str(c.memory_mib)
        elif c.memory_percent:
            limits[names.RESOURCE_MEMORY_PERCENTAGE] = str(c.memory_percent)
        out.append(limits)
    return out


# -- hami simulate online --full-stack ---------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One pod's fate: rejected, or the node and each device's GPU index and profile@start."""

    pod: str
    accepted: bool
    node: str = ""
    devices: tuple[tuple[int, str], ...] = ()  # (GPU index, "profile@start") in container, device order

    def text(self) -> str:
        if not self.accepted:
            return "rejected"
        return f"{self.node}: " + ", ".join(f"GPU {g} {p}" for g, p in self.devices)


@dataclass(frozen=True)
class Arrival:
    time: float
    pod: str
    request: Request
    life: float


def online_sequence(mix: str, load: float, seed: int, arrivals: int, cluster: Cluster,
                    openb_pods: list[TracePod]) -> list[Arrival]:
    """The online protocol's arrivals (online.run_online's draws, in its order) for one seed."""
    pool = mix_requests(mix, openb_pods)
    slices = np.array([cluster.slices(r) for r in pool], dtype=np.float64)
    rate = load * cluster.capacity / (MEAN_LIFETIME * float(slices.mean()))
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, arrivals)
    lives = rng.lognormal(0.0, 1.0, arrivals)
    picks = rng.integers(len(pool), size=arrivals)
    out, now = [], 0.0
    for i in range(arrivals):
        now += float(gaps[i])
        out.append(Arrival(now, f"pod-{i}", pool[int(picks[i])], float(lives[i])))
    return out


def events(arrivals: Sequence[Arrival], accepted: Callable[[str], bool]):
    """Yield ("depart", [pods]) — the pods ending before the next arrival, in end order — and
    ("arrive", arrival); a departure is only scheduled for an arrival `accepted` says was placed
    (asked right after it is yielded). Releases commute, so a batch equals one at a time."""
    departures: list[tuple[float, str]] = []
    for arrival in arrivals:
        batch = []
        while departures and departures[0][0] <= arrival.time:
            batch.append(heapq.heappop(departures)[1])
        if batch:
            yield "depart", batch
        yield "arrive", arrival
        if accepted(arrival.pod):
            heapq.heappush(departures, (arrival.time + arrival.life, arrival.pod))


class ReplayedTieBreak:
    """kube-scheduler's node choice as the local driver makes it: a single feasible node without
    prioritize; else the highest extender total, ties by `random.Random(seed).choice` over the
    sorted names (hami/sim/kubescheduler.py)."""

    def __init__(self, seed: int | None) -> None:
        self.rng = random.Random(seed)

    def choose(self, names_: Sequence[str], ok: np.ndarray, scores: np.ndarray) -> str:
        feasible = np.flatnonzero(ok)
        if len(feasible) == 1:
            return names_[int(feasible[0])]
        totals = extender_score(scores[feasible])
        best = totals.max()
        return self.rng.choice(sorted(names_[int(i)] for i, t in zip(feasible, totals) if t == best))


def scheduler_node_order(stack: Stack, nodes: Sequence[str]) -> list[str]:
    """The scheduler's engine order of `nodes` (the order its agents registered: a race). On an
    empty cluster every node ranks alike and the engine gives 100 to the first in its order
    (hami/_core/reference.py `normalise`), so asking /prioritize about the nodes not yet placed
    reveals the order one node at a time."""
    left, order = list(nodes), []
    probe = pod_body("order-probe", [{names.RESOURCE_COUNT: "1", names.RESOURCE_MEMORY: "10240"}], "mig")
    probe["metadata"].update(namespace=NAMESPACE, uid="order-probe")
    probe["spec"]["schedulerName"] = names.SCHEDULER_NAME
    context = ssl._create_unverified_context()
    while len(left) > 1:
        body = json.dumps({"Pod": probe, "NodeNames": left}).encode()
        request = urllib.request.Request(f"{stack.scheduler_url}/prioritize", body,
                                         {"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            scores = {h["Host"]: h["Score"] for h in json.loads(answer.read())}
        first = max(left, key=lambda n: scores.get(n, -1))
        order.append(first)
        left.remove(first)
    return order + left


def engine_run(arrivals: Sequence[Arrival], node_order: Sequence[str], gpus_per_node: int, model: str,
               policy: str, seed: int) -> list[Outcome]:
    """The engine-level run of the sequence: an engine with the nodes registered in `node_order`
    (the scheduler's), each pod's fit and scores as the extender computes them, the node chosen as
    the local kube-scheduler chooses it, departures released (instances kept idle)."""
    engine_policy, hami_memory = policy_label(policy)
    engine = Engine(policy=engine_policy, features=Features(hami_memory=hami_memory))
    gpu_model = naming.find_model(model)
    for node in node_order:
        engine.upsert_node(node, [GpuSpec(f"GPU-{node}-{i}", gpu_model.nvml_name, GpuMode.MIG,
                                          gpu_model.memory_mib, index=i) for i in range(gpus_per_node)])
    node_names = sorted(node_order)
    ids = engine.node_ids(node_names)
    tie = ReplayedTieBreak(seed)
    outcomes: dict[str, Outcome] = {}
    for kind, batch in events(arrivals, lambda pod: outcomes[pod].accepted):
        if kind == "depart":
            for pod in batch:
                engine.release(pod)
            continue
        item = batch
        fit, scores = engine.fit_and_score(item.request, ids)
        ok = fit.codes == Code.SUCCESS
        if not ok.any():
            outcomes[item.pod] = Outcome(item.pod, False)
            continue
        node = tie.choose(node_names, ok, np.asarray(scores))
        decision = engine.decide_and_reserve(item.pod, item.request, node)
        assert isinstance(decision, Decision), decision
        devices = []
        for _c, pick in decision.picks():
            index = int(pick.gpu_uuid.rsplit("-", 1)[-1])
            if isinstance(pick, MigPick):
                devices.append((index, f"{pick.profile}@{pick.start}"))
            elif isinstance(pick, CorePick):
                devices.append((index, f"share {pick.memory_mib} MiB"))
        outcomes[item.pod] = Outcome(item.pod, True, node, tuple(devices))
    return [outcomes[a.pod] for a in arrivals]


def stack_run(stack: Stack, arrivals: Sequence[Arrival], progress: Callable[[int], None] | None = None,
              timeout: float = 30.0) -> list[Outcome]:
    """The same sequence through the running stack, one pod at a time (module docstring)."""
    assert stack.kube is not None
    observer = Observer(stack)
    outcomes: dict[str, Outcome] = {}
    try:
        for kind, batch in events(arrivals, lambda pod: outcomes[pod].accepted):
            if kind == "depart":
                for pod in batch:
                    stack.kube.delete("pods", pod, NAMESPACE)
                if not observer.wait_for(lambda b=batch: all(observer.pods[p].gone is not None for p in b), timeout):
                    raise StackError(f"pods {', '.join(batch)} were not deleted within {timeout}s")
                _wait_released(stack, observer, timeout)
                continue
            item = batch
            stack.kube.create("pods", pod_body(item.pod, request_limits(item.request), "mig"), NAMESPACE)

            def settled(p: str = item.pod) -> bool:
                r = observer.pods.get(p)
                return r is not None and bool(r.running is not None or r.unschedulable or r.failed)

            if not observer.wait_for(settled, timeout):
                raise StackError(f"pod {item.pod} neither ran nor was found unschedulable within {timeout}s")
            record = observer.pods[item.pod]
            if record.failed:
                raise StackError(f"pod {item.pod} failed: {record.failed}")
            if record.running is None:
                stack.kube.delete("pods", item.pod, NAMESPACE)
                observer.wait_for(lambda p=item.pod: observer.pods[p].gone is not None, timeout)
                outcomes[item.pod] = Outcome(item.pod, False)
            else:
                devices = tuple((observer.gpu_index(d.gpu), f"{d.profile}@{d.start}" if d.mig
                                 else f"share {d.memory_mib} MiB") for ctr in record.devices for d in ctr)
                outcomes[item.pod] = Outcome(item.pod, True, record.node, devices)
            if progress is not None:
                progress(len(outcomes))
    finally:
        observer.close()
    return [outcomes[a.pod] for a in arrivals]


def _wait_released(stack: Stack, observer: Observer, timeout: float) -> None:
    """Until every agent reports the departed pods' instances idle (a publish that still names
    one in use would make the scheduler hold it again), and the scheduler holds exactly the live
    pods' devices (its metrics' shared counts)."""
    def live() -> set[str]:
        return {f"{NAMESPACE}/{n}" for n, r in observer.pods.items() if r.gone is None}

    def agents_caught_up() -> bool:
        alive = live()
        return all(i.pod in alive for insts in observer.instances.values() for i in insts
                   if i.state is codecs.InstanceState.IN_USE)

    def expected() -> int:
        with observer.changed:
            return sum(len(ctr) for r in observer.pods.values() if r.gone is None and r.running is not None
                       for ctr in r.devices)

    if not observer.wait_for(agents_caught_up, timeout):
        raise StackError("a node agent did not report a departed pod's instance idle in time")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = stack.metrics()
        held = sum(float(v) for v in re.findall(r"^hami_gpu_shared_count\{[^}]*\} (\S+)$", text, re.M))
        if text and held == expected():
            return
        time.sleep(0.02)
    raise StackError("the scheduler did not release a deleted pod's devices in time")


@dataclass
class Comparison:
    engine: list[Outcome]
    stack: list[Outcome]
    seconds: float
    node_order: list[str] = field(default_factory=list)
    calls: Counter = field(default_factory=Counter)  # API requests our scheduler and agents made, by kind

    @property
    def mismatches(self) -> list[tuple[Outcome, Outcome]]:
        return [(e, s) for e, s in zip(self.engine, self.stack) if e != s]

    @property
    def accepted(self) -> int:
        return sum(o.accepted for o in self.stack)


def compare_online(*, mix: str = "uniform", load: float = 1.3, seed: int = 1, arrivals: int = 300,
                   nodes: int = 4, gpus_per_node: int = 8, model: str = "A100-SXM4-80GB",
                   policy: str = "fragmentation-aware", openb_pods: list[TracePod] | None = None,
                   workdir: Path | None = None, progress: Callable[[int], None] | None = None) -> Comparison:
    """Run the online sequence at engine level and through the full stack; both outcome lists."""
    cluster = Cluster(policy, [gpus_per_node] * nodes, model, seed)  # the protocol's demand and rate
    sequence = online_sequence(mix, load, seed, arrivals, cluster, openb_pods or [])
    spec = parse_nodes(f"{nodes} x ({gpus_per_node} x {model}, mode=mig)")
    with Stack(spec, workdir, policy=policy, seed=seed, agent_sync_interval=0.25) as stack:
        order = scheduler_node_order(stack, [n.name for n in spec])
        before = stack.calls.snapshot()
        started = time.monotonic()
        got = stack_run(stack, sequence, progress)
        seconds = time.monotonic() - started
        calls = stack.calls.snapshot() - before
    expected = engine_run(sequence, order, gpus_per_node, model, policy, seed)
    return Comparison(expected, got, seconds, order, calls)


FULL_STACK_ARRIVALS, FULL_STACK_NODES = 300, 4  # what --arrivals / --nodes at their engine-level defaults mean


def run_cli(args: Any) -> int:
    """`hami simulate online --full-stack`: the first policy, mix, load and seed given (defaults
    fragmentation-aware, uniform, 1.3, 1: the engine-level defaults name several); --arrivals and
    --nodes left at their engine-level defaults mean 300 and 4. Exit status 0 when every pod
    agrees, 1 when one differs, 2 on bad arguments."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from hami.sim import simulate, traces

    try:
        policy = args.policies.split(",")[0].strip() if args.policies != "all" else simulate.DEFAULT_POLICY
        simulate.parse_policies(policy)
        mix = "uniform" if args.mix == ",".join(MIXES) else simulate.parse_mixes(args.mix)[0]
        load = simulate.parse_loads(args.load)[0] if args.load != "0.9,1.3" else 1.3
        seed = simulate.parse_seeds(args.seeds)[0]
        model = simulate.check_model(args.model)
        arrivals = FULL_STACK_ARRIVALS if args.arrivals == 20_000 else args.arrivals
        nodes = FULL_STACK_NODES if args.nodes == 30 else args.nodes
        if arrivals < 10 or nodes < 1 or args.gpus_per_node < 1:
            raise ValueError("--arrivals must be at least 10, --nodes and --gpus-per-node at least 1")
        openb: list[TracePod] = []
        if mix != "uniform":
            trace_dir = Path(args.trace_dir) if args.trace_dir else traces.default_trace_dir()
            traces.require(trace_dir, simulate.trace_files("online", trace_dir, "default", [mix]))
            openb = traces.load_pods(traces.pod_list_path(trace_dir, "default"))
    except (ValueError, LookupError) as err:
        print(f"hami simulate: {err}", file=sys.stderr)
        return 2
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(f"[bold]full stack[/]: {arrivals} pods ({mix} mix, load {load}, seed {seed}, {policy}) on "
                  f"{nodes} × {args.gpus_per_node} × {model}, one at a time, through the API server, "
                  "hami scheduler and a node agent per node; then the engine-level run of the same sequence")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("pods", total=arrivals)
        try:
            result = compare_online(mix=mix, load=load, seed=seed, arrivals=arrivals, nodes=nodes,
                                    gpus_per_node=args.gpus_per_node, model=model, policy=policy,
                                    openb_pods=openb, progress=lambda n: bar.update(task, completed=n))
        except StackError as err:
            print(f"hami simulate: {err}", file=sys.stderr)
            return 1
    table = Table(title="the same sequence at engine level and through the full stack")
    for col in ("run", "accepted", "rejected", "seconds"):
        table.add_column(col, justify="right" if col != "run" else "left")
    for label, outcomes, seconds in (("engine level", result.engine, ""),
                                     ("full stack", result.stack, f"{result.seconds:.1f}")):
        accepted = sum(o.accepted for o in outcomes)
        table.add_row(label, str(accepted), str(len(outcomes) - accepted), seconds)
    console.print(table)
    if result.mismatches:
        for e, s in result.mismatches[:10]:
            console.print(f"[red]{e.pod}[/]: engine {e.text()} | full stack {s.text()}")
        console.print(f"[red]{len(result.mismatches)} of {arrivals} pods differ[/]")
        return 1
    console.print(f"[green]all {arrivals} pods agree[/]: the same accept or reject, node, GPU and profile@placement")
    return 0


__all__ = ["Comparison", "Observer", "Outcome", "Stack", "StackError", "compare_online", "engine_run",
           "pod_body", "run_cli", "stack_run"]

