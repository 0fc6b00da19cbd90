"""The scheduler on a control plane: `hami scheduler` (extender, and webhook over TLS registered as a
MutatingWebhookConfiguration whose caBundle is the plane's CA), kube-scheduler calling our
filter/prioritize/bind through the chart's extender stanza (`hami_extender`), and a scripted agent
standing in for the node agent (it answers every bind as Allocate would: bind-phase success, the
consumed entry erased, the node lock released; and it keeps its nodes' handshakes fresh).

The `plane` fixture is our embedded control plane by default. Parametrised indirectly with
`both_planes` it is also the real one (etcd, kube-apiserver, kube-scheduler built by `make kube`;
tests/realkube/session.py): the same test, the same assertions. The real plane is shared by the
session, so each test starts from an empty cluster and leaves one (pods deleted at once, its
nodes deleted, the webhook configuration removed); our scheduler listens on one port for the
whole session, the one the real kube-scheduler's extender stanza names.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import random
import shutil
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from kubernetes import client

from hami.api import codecs, names
from hami.k8s import Kube
from hami.k8s.informer import Informer
from hami.scheduler.app import Scheduler, SchedulerConfig
from hami.sim.apiserver import ApiServer
from hami.sim.cluster import SimNode, fakenvml_attacher, fakenvml_state, hami_extender, node_agent, parse_nodes
from hami.sim.kubelet import Kubelet, short_socket_dir
from hami.sim.kubescheduler import KubeScheduler
from hami.sim.kubescheduler import SchedulerConfig as KubeSchedulerConfig
from hami.sim.realkube import RealPlane
from hami.sim.realkube.process import free_port
from hami.sim.realkube.store import RemoteStore
from tests.realkube import session

log = logging.getLogger(__name__)

A100 = "NVIDIA A100-SXM4-80GB"
A10 = "NVIDIA A10"
E2E_LABEL = "hami.io/e2e-test"  # on every node a test adds: the real plane's teardown deletes by it
WEBHOOK = "vgpu.hami.io"

# `@both_planes` runs a test on our embedded plane and on the real one (marked realkube, one xdist group)
PLANES = ("embedded", pytest.param("real", marks=session.REAL_MARKS))
both_planes = pytest.mark.parametrize("plane", PLANES, indirect=True)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.03)
    raise AssertionError(f"{what} not reached within {timeout}s")


def devices(prefix: str, count: int, gpu_type: str = A100) -> list[codecs.NodeDevice]:
    mig = gpu_type == A100
    return [codecs.NodeDevice(f"GPU-{prefix}-{i}", i, 7 if mig else 10, 81920 if mig else 23028, 100, gpu_type,
                              mode=names.MODE_MIG if mig else names.MODE_HAMI_CORE, health=True)
            for i in range(count)]


def handshake_now() -> str:
    return codecs.encode_handshake(codecs.Handshake.reported(datetime.now(UTC)))


def node_body(name: str, devs: Sequence[codecs.NodeDevice], *, labels: dict[str, str] | None = None,
              **annotations: str) -> dict[str, Any]:
    ann = {names.NODE_REGISTER: codecs.encode_node_register(devs), names.NODE_HANDSHAKE: handshake_now(),
           **annotations}
    allocatable = {"cpu": "64", "memory": "512Gi", "pods": "250", "nvidia.com/gpu": str(10 * len(devs))}
    return {"metadata": {"name": name, "annotations": ann,
                         "labels": {"kubernetes.io/hostname": name, E2E_LABEL: "true", **(labels or {})}},
            "status": {"capacity": allocatable, "allocatable": allocatable,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def gpu_pod(name: str, *containers: dict[str, str], annotations: dict[str, str] | None = None,
            init: Sequence[dict[str, str]] = (), labels: dict[str, str] | None = None,
            **spec_fields: Any) -> dict[str, Any]:
    """A pod with one container per `containers` entry (its limits); `spec_fields` go into the spec
    as they are (nodeSelector, affinity, topologySpreadConstraints …)."""
    def ctr(i: int, limits: dict[str, str], prefix: str) -> dict[str, Any]:
        return {"name": f"{prefix}{i}", "image": "cuda", "resources": {"limits": dict(limits)}}

    spec: dict[str, Any] = {"containers": [ctr(i, c, "c") for i, c in enumerate(containers)], **spec_fields}
    if init:
        spec["initContainers"] = [ctr(i, c, "init") for i, c in enumerate(init)]
    meta: dict[str, Any] = {"name": name, "annotations": dict(annotations or {})}
    if labels:
        meta["labels"] = dict(labels)
    return {"metadata": meta, "spec": spec}


@dataclass
class Plane:
    """What a test drives, on either plane. `api`/`kube_scheduler` are the embedded plane's parts,
    `real` the real plane; everything else works the same on both."""

    kind: str  # "embedded" | "real"
    kube: Kube  # admin client
    scheduler: Scheduler
    agent: ScriptedAgent
    kubeconfig: Path  # our scheduler's
    ca: trustme.CA  # signs our serving certificate; the webhook's caBundle
    tmp: Path
    api: ApiServer | None = None
    kube_scheduler: KubeScheduler | None = None
    real: RealPlane | None = None
    sim_nodes: list[SimNode] = field(default_factory=list)
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def add_node(self, name: str, devs: Sequence[codecs.NodeDevice], labels: dict[str, str] | None = None,
                 **annotations: str) -> None:
        """Register a node as its agent would (the scripted agent then keeps its handshake fresh),
        and wait until the scheduler's cache has it (a pod filtered before that is parked by
        kube-scheduler until the next cluster event)."""
        self.kube.create("nodes", node_body(name, devs, labels=labels, **annotations))
        self.agent.serve(name)
        wait_for(lambda: self.scheduler.cache.has_gpus(name), what=f"node {name} in the scheduler's cache")

    def add_sim_node(self, spec: str) -> SimNode:
        """A simulated node with our real node agent instead of the scripted one: a kubelet
        (hami.sim.kubelet; on the real plane through RemoteStore with the node's own client
        certificate), its simulated NVML, and `hami device-plugin` as a subprocess on it. `spec` is
        one group of `hami sim up`'s grammar, e.g. "(1 x A100-SXM4-80GB, mode=mig, name=gpu)"."""
        (node_spec,) = parse_nodes(spec)
        folder = self.tmp / "nodes" / node_spec.name
        folder.mkdir(parents=True)
        state = folder / "fakenvml-state.json"
        fakenvml_state(node_spec, state)
        if self.real is not None:
            store: Any = RemoteStore(self.real.api_client(self.real.node_kubeconfig(node_spec.name)))
            self._cleanups.append(store.close)
        else:
            assert self.api is not None
            store = self.api.store
        kubelet = Kubelet(node_spec.name, store, short_socket_dir("hk-e2e-"),
                          labels={**node_spec.labels(), E2E_LABEL: "true"}, node_ip=f"10.0.9.{len(self.sim_nodes) + 1}")
        node = SimNode(node_spec, state, kubelet.plugin_dir, kubelet)
        kubelet.attacher = fakenvml_attacher(node)
        kubelet.start()
        self._cleanups.append(lambda: (kubelet.stop(), shutil.rmtree(kubelet.plugin_dir, ignore_errors=True)))
        node.plugin = node_agent(node, self.kubeconfig)
        self._cleanups.append(node.plugin.stop)
        self.sim_nodes.append(node)
        wait_for(lambda: self.scheduler.cache.has_gpus(node_spec.name), 60,
                 f"the node agent of {node_spec.name} registered its GPUs (log: {folder / 'agent.log'})")
        return node

    def close(self) -> None:
        """Stop what the test added (node agents before their kubelets), newest first."""
        while self._cleanups:
            with contextlib.suppress(Exception):
                self._cleanups.pop()()

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """A namespace pods can be created in: on the real plane with the `default` ServiceAccount the
        ServiceAccount admission plugin requires (no controller-manager creates it)."""
        body = {"metadata": {"name": name, "labels": dict(labels or {})}}
        core = client.CoreV1Api(self.kube.api_client)
        if self.real is not None:  # namespaces outlive a test there (deleted ones stay Terminating)
            self.real.namespace(name)
            core.patch_namespace(name, body)
        else:
            core.create_namespace(body)

    def create(self, pod: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
        return self.kube.create("pods", pod, namespace)

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.kube.get("pods", name, namespace)

    def bound(self, name: str, namespace: str = "default") -> str:
        return (self.pod(name, namespace).get("spec") or {}).get("nodeName") or ""

    def wait_bound(self, *pods: str, timeout: float = 30.0) -> None:
        wait_for(lambda: all(self.bound(p) for p in pods), timeout, f"pods {pods} bound")

    def unschedulable(self, name: str, namespace: str = "default") -> str:
        """The PodScheduled=False/Unschedulable message kube-scheduler wrote ("" until it has)."""
        for cond in (self.pod(name, namespace).get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return cond.get("message") or ""
        return ""

    def filter(self, pod: dict[str, Any], *nodes: str) -> dict[str, Any]:
        """POST /filter as kube-scheduler does (over TLS, not verified, as the chart's stanza says)."""
        args = {"Pod": {**pod, "metadata": {"namespace": "default", "uid": f"probe-{time.monotonic_ns()}",
                                            **pod["metadata"]}}, "NodeNames": list(nodes)}
        request = urllib.request.Request(f"{self.scheduler.server.url}/filter", json.dumps(args).encode(),
                                         {"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10, context=ssl._create_unverified_context()) as answer:
            return json.loads(answer.read())

    def restart_scheduler(self, **options: Any) -> None:
        """Stop our scheduler and start a new one on the same port (the extender URL kube-scheduler
        knows), with `options` for SchedulerConfig; returns once it is ready."""
        old = self.scheduler
        old.stop()
        self.scheduler = start_scheduler(self.kubeconfig, self.tmp, self.ca, port=old.server.server_address[1],
                                         **options)


class ScriptedAgent:
    """Stands in for the node agents: after a bind it marks bind-phase success, empties the consumed
    to-allocate entries and releases the node lock; every `handshake_every` seconds it writes a fresh
    handshake on each node it serves. `stop_node` is a node agent dying; `paused` holds allocations."""

    def __init__(self, kube: Kube, handshake_every: float = 10.0) -> None:
        self.kube = kube
        self.handshake_every = handshake_every
        self.paused = False
        self.done: set[str] = set()
        self.serving: set[str] = set()
        self._pending: dict[str, dict[str, Any]] = {}  # uid -> pod waiting for Allocate
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._informer = Informer(kube, "pods", self._on_pod)
        self._thread = threading.Thread(target=self._loop, name="scripted-agent", daemon=True)

    def start(self) -> ScriptedAgent:
        self._informer.start()
        wait_for(self._informer.synced.is_set, what="the scripted agent's pod informer synced")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._informer.stop()
        self._thread.join(timeout=5)

    def serve(self, node: str) -> None:
        with self._lock:
            self.serving.add(node)

    def stop_node(self, node: str) -> None:
        """The node's agent stops: no more handshakes, no more allocations there."""
        with self._lock:
            self.serving.discard(node)

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        waiting = (kind != "deleted" and spec.get("nodeName")
                   and (meta.get("annotations") or {}).get(names.BIND_PHASE) == names.BIND_PHASE_ALLOCATING)
        with self._lock:
            if waiting and meta.get("uid") not in self.done:
                self._pending[meta["uid"]] = pod
            else:
                self._pending.pop(meta.get("uid"), None)

    def _loop(self) -> None:
        next_handshake = time.monotonic() + self.handshake_every
        while not self._stop.wait(0.05):
            if time.monotonic() >= next_handshake:
                next_handshake = time.monotonic() + self.handshake_every
                with self._lock:
                    nodes = sorted(self.serving)
                for node in nodes:
                    with contextlib.suppress(Exception):  # the node may be gone
                        self.kube.annotate("nodes", node, {names.NODE_HANDSHAKE: handshake_now()})
            if self.paused:
                continue
            with self._lock:
                todo = [p for p in self._pending.values() if p["spec"]["nodeName"] in self.serving]
            for pod in todo:
                try:
                    self.allocate(pod)
                except Exception as exc:  # the API server may be stopping; retried next round
                    log.info("scripted agent: %s/%s not allocated yet: %s", pod["metadata"]["namespace"],
                             pod["metadata"]["name"], exc)

    def allocate(self, pod: dict[str, Any]) -> None:
        meta, node = pod["metadata"], pod["spec"]["nodeName"]
        entries = codecs.decode_pod_devices(meta["annotations"][names.VGPU_DEVICES_TO_ALLOCATE],
                                            names.VGPU_DEVICES_TO_ALLOCATE)
        emptied = codecs.encode_pod_devices([() for _ in entries])
        self.kube.annotate("pods", meta["name"], {names.BIND_PHASE: names.BIND_PHASE_SUCCESS,
                                                  names.VGPU_DEVICES_TO_ALLOCATE: emptied}, meta["namespace"])

        def release(current: dict[str, Any]) -> dict[str, Any] | None:
            lock = (current["metadata"].get("annotations") or {}).get(names.NODE_LOCK)
            if lock and codecs.decode_node_lock(lock).owned_by(meta["namespace"], meta["name"]):
                return {"metadata": {"annotations": {names.NODE_LOCK: None}}}
            return None

        self.kube.modify("nodes", node, release)
        with self._lock:
            self.done.add(meta["uid"])
            self._pending.pop(meta["uid"], None)


def start_scheduler(kubeconfig: Path, tmp: Path, ca: trustme.CA, port: int = 0, **options: Any) -> Scheduler:
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp / "tls.crt", tmp / "tls.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    config = SchedulerConfig(kubeconfig=str(kubeconfig), http_bind=f"127.0.0.1:{port}", metrics_bind="127.0.0.1:0",
                             cert_file=str(cert_file), key_file=str(key_file), lock_wait_s=10.0, **options)
    scheduler = Scheduler(config).start()
    wait_for(lambda: scheduler.ready()[0], 15, "scheduler ready")
    return scheduler


def register_webhook(api_client: client.ApiClient, url: str, ca: trustme.CA) -> None:
    body = {"metadata": {"name": WEBHOOK}, "webhooks": [{
        "name": WEBHOOK, "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "failurePolicy": "Fail", "timeoutSeconds": 10,
        "clientConfig": {"url": f"{url}/webhook", "caBundle": base64.b64encode(ca.cert_pem.bytes()).decode()},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "namespaceSelector": {"matchExpressions": [{"key": "hami.io/webhook", "operator": "NotIn",
                                                    "values": ["ignore"]}]},
    }]}
    client.AdmissionregistrationV1Api(api_client).create_mutating_webhook_configuration(body)


def kube_scheduler_config(url: str) -> KubeSchedulerConfig:
    """The chart's extender stanza for our URL; short backoffs (the real plane rounds them up to 1 s)."""
    return KubeSchedulerConfig(extenders=(hami_extender(url),), initial_backoff=0.2, max_backoff=1.0)


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.failed and "realkube" in item.keywords:
        session.note_failure(item.config, item.nodeid)
    return report


@pytest.fixture(scope="session")
def _real_session(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealPlane, int]]:
    """The session's real plane and the port our scheduler listens on for the whole session."""
    real = session.acquire(request.config, tmp_path_factory)
    try:
        yield real, _listening_port()
    finally:
        session.release(request.config)


def _listening_port() -> int:
    """A free port below the kernel's ephemeral range: our scheduler re-binds it for every test,
    and between tests an outgoing connection could take a port from that range."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return free_port()
    for port in random.sample(range(max(1024, low - 8000), low), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


@pytest.fixture
def plane(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Plane]:
    if getattr(request, "param", "embedded") == "real":
        yield from _real_plane(request, tmp_path)
    else:
        yield from _embedded_plane(tmp_path)


def _embedded_plane(tmp_path: Path) -> Iterator[Plane]:
    api = ApiServer().start()
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    kube = Kube.connect(kubeconfig)
    ca = trustme.CA()
    scheduler = start_scheduler(kubeconfig, tmp_path, ca)
    register_webhook(kube.api_client, scheduler.server.url, ca)
    kube_scheduler = KubeScheduler(api.store, kube_scheduler_config(scheduler.server.url)).start()
    agent = ScriptedAgent(kube).start()
    p = Plane("embedded", kube, scheduler, agent, kubeconfig, ca, tmp_path, api=api, kube_scheduler=kube_scheduler)
    try:
        yield p
    finally:
        p.close()
        agent.stop()
        kube_scheduler.stop()
        p.scheduler.stop()
        kube.close()
        api.stop()


def _real_plane(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Plane]:
    real, port = request.getfixturevalue("_real_session")
    url = f"https://127.0.0.1:{port}"
    kube = Kube.connect(real.kubeconfig())
    _empty_cluster(kube)  # before kube-scheduler calls us: another suite's pending pods are not ours
    real.use_scheduler(dataclasses.replace(kube_scheduler_config(url), scheduler_name=real.scheduler.scheduler_name,
                                           default_profile=real.scheduler.default_profile))
    assert real.pki is not None
    kubeconfig = real.kubeconfig("hami")
    scheduler = start_scheduler(kubeconfig, tmp_path, real.pki.ca, port=port)
    agent: ScriptedAgent | None = None
    p: Plane | None = None
    try:
        register_webhook(kube.api_client, url, real.pki.ca)
        agent = ScriptedAgent(kube).start()
        p = Plane("real", kube, scheduler, agent, kubeconfig, real.pki.ca, tmp_path, real=real)
        yield p
    finally:
        if p is not None:
            p.close()
        if agent is not None:
            agent.stop()
        (p.scheduler if p is not None else scheduler).stop()
        with contextlib.suppress(client.ApiException):
            client.AdmissionregistrationV1Api(kube.api_client).delete_mutating_webhook_configuration(WEBHOOK)
        _empty_cluster(kube)
        kube.close()


def _empty_cluster(kube: Kube) -> None:
    """Every pod deleted at once (no kubelet would confirm a graceful deletion), the test nodes deleted."""
    core = client.CoreV1Api(kube.api_client)
    for namespace in sorted({pod["metadata"]["namespace"] for pod in kube.list("pods")}):
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    core.delete_collection_node(label_selector=E2E_LABEL)
    wait_for(lambda: not kube.list("pods") and not kube.list("nodes", label_selector=E2E_LABEL), 30,
             "the real plane emptied")


RUNNER_MIG_UUID = "MIG-00000000-0000-0000-0000-000000000002"


@contextlib.contextmanager
def local_scheduler(tmp: Path, **config: Any) -> Iterator[Scheduler]:
    """Our API server holding two nodes (mig-a: 2 A100s, one running a 3g.40gb@4 instance for
    default/runner; core-a: 2 A10s) and a started, synced `hami scheduler` over plain HTTP."""
    api = ApiServer().start()
    kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")
    kube = Kube.connect(kubeconfig)
    report = [codecs.RealisedInstance("GPU-a-0", "3g.40gb", codecs.Placement(4, 4), 2, 0, RUNNER_MIG_UUID,
                                      codecs.InstanceState.IN_USE, pod="default/runner")]
    kube.create("nodes", node_body("mig-a", devices("a", 2),
                                   **{names.NODE_MIG_INSTANCES: codecs.encode_node_mig_instances(report)}))
    kube.create("nodes", node_body("core-a", devices("c", 2, A10)))
    options = {"http_bind": "127.0.0.1:0", "metrics_bind": "127.0.0.1:0", **config}
    scheduler = Scheduler(SchedulerConfig(kubeconfig=str(kubeconfig), **options)).start()
    try:
        wait_for(lambda: scheduler.ready()[0] and scheduler.cache.has_gpus("core-a")
                 and scheduler.cache.has_gpus("mig-a"), what="scheduler ready")
        yield scheduler
    finally:
        scheduler.stop()
        kube.close()
        api.stop()
