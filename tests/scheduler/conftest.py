"""The scheduler on the local control plane: our API server, `hami scheduler` (extender, webhook over
TLS from a trustme CA, registered as a MutatingWebhookConfiguration), the kube-scheduler driver calling
our filter/prioritize/bind, and a scripted agent standing in for the node agent (it answers every
bind as Allocate would: bind-phase success, the consumed entry erased, the node lock released).
"""

from __future__ import annotations

import threading
import time
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
from hami.scheduler.app import Scheduler, SchedulerConfig
from hami.sim.apiserver import ApiServer
from hami.sim.kubescheduler import ExtenderConfig, KubeScheduler, ManagedResource
from hami.sim.kubescheduler import SchedulerConfig as KubeSchedulerConfig

A100 = "NVIDIA A100-SXM4-80GB"
A10 = "NVIDIA A10"
MANAGED = ("nvidia.com/gpu", "nvidia.com/gpumem", "nvidia.com/gpucores", "nvidia.com/gpumem-percentage",
           "nvidia.com/priority")


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


def node_body(name: str, devs: Sequence[codecs.NodeDevice], **annotations: str) -> dict[str, Any]:
    ann = {names.NODE_REGISTER: codecs.encode_node_register(devs),
           names.NODE_HANDSHAKE: codecs.encode_handshake(codecs.Handshake.reported(datetime.now(UTC))),
           **annotations}
    allocatable = {"cpu": "64", "memory": "512Gi", "pods": "250", "nvidia.com/gpu": str(10 * len(devs))}
    return {"metadata": {"name": name, "annotations": ann, "labels": {"kubernetes.io/hostname": name}},
            "status": {"capacity": allocatable, "allocatable": allocatable,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def gpu_pod(name: str, *containers: dict[str, str], annotations: dict[str, str] | None = None,
            init: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    def ctr(i: int, limits: dict[str, str], prefix: str) -> dict[str, Any]:
        return {"name": f"{prefix}{i}", "image": "cuda", "resources": {"limits": dict(limits)}}

    spec: dict[str, Any] = {"containers": [ctr(i, c, "c") for i, c in enumerate(containers)]}
    if init:
        spec["initContainers"] = [ctr(i, c, "init") for i, c in enumerate(init)]
    return {"metadata": {"name": name, "annotations": dict(annotations or {})}, "spec": spec}


@dataclass
class Plane:
    api: ApiServer
    kube: Kube
    scheduler: Scheduler
    kube_scheduler: KubeScheduler
    core: client.CoreV1Api
    agent: ScriptedAgent
    kubeconfig: Path
    ca: trustme.CA
    tmp: Path
    extra: list[Any] = field(default_factory=list)

    def add_node(self, name: str, devs: Sequence[codecs.NodeDevice], **annotations: str) -> None:
        """Register a node as its agent would, and wait until the scheduler's cache has it (a pod
        filtered before that is parked by kube-scheduler until the next cluster event)."""
        self.kube.create("nodes", node_body(name, devs, **annotations))
        wait_for(lambda: self.scheduler.cache.has_gpus(name), what=f"node {name} in the scheduler's cache")

    def create(self, pod: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
        return self.kube.create("pods", pod, namespace)

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.kube.get("pods", name, namespace)

    def bound(self, name: str, namespace: str = "default") -> str:
        return (self.pod(name, namespace).get("spec") or {}).get("nodeName") or ""

    def wait_bound(self, *pods: str, timeout: float = 30.0) -> None:
        wait_for(lambda: all(self.bound(p) for p in pods), timeout, f"pods {pods} bound")

    def restart_scheduler(self) -> None:
        old = self.scheduler
        old.stop()
        self.scheduler = start_scheduler(self.kubeconfig, self.tmp, self.ca, port=old.server.server_address[1])


class ScriptedAgent:
    """Stands in for the node agent after a bind: bind-phase success, to-allocate emptied, lock released."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.stop_event = threading.Event()
        self.done: set[str] = set()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.paused = False

    def _loop(self) -> None:
        while not self.stop_event.wait(0.05):
            if self.paused:
                continue
            try:
                self.step()
            except Exception:  # the API server may be stopping
                continue

    def step(self) -> None:
        for pod in self.kube.list("pods"):
            meta, spec = pod["metadata"], pod.get("spec") or {}
            ann = meta.get("annotations") or {}
            if not spec.get("nodeName") or ann.get(names.BIND_PHASE) != names.BIND_PHASE_ALLOCATING:
                continue
            entries = codecs.decode_pod_devices(ann[names.VGPU_DEVICES_TO_ALLOCATE],
                                                names.VGPU_DEVICES_TO_ALLOCATE)
            emptied = codecs.encode_pod_devices([() for _ in entries])
            self.kube.annotate("pods", meta["name"], {names.BIND_PHASE: names.BIND_PHASE_SUCCESS,
                                                      names.VGPU_DEVICES_TO_ALLOCATE: emptied}, meta["namespace"])
            node = self.kube.get("nodes", spec["nodeName"])
            lock = ((node["metadata"].get("annotations") or {}).get(names.NODE_LOCK))
            if lock and codecs.decode_node_lock(lock).owned_by(meta["namespace"], meta["name"]):
                self.kube.patch("nodes", spec["nodeName"], {"metadata": {
                    "annotations": {names.NODE_LOCK: None},
                    "resourceVersion": node["metadata"]["resourceVersion"]}})
            self.done.add(meta["uid"])


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
    import base64

    body = {"metadata": {"name": "vgpu.hami.io"}, "webhooks": [{
        "name": "vgpu.hami.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "failurePolicy": "Fail", "timeoutSeconds": 10,
        "clientConfig": {"url": f"{url}/webhook", "caBundle": base64.b64encode(ca.cert_pem.bytes()).decode()},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "namespaceSelector": {"matchExpressions": [{"key": "hami.io/webhook", "operator": "NotIn",
                                                    "values": ["ignore"]}]},
    }]}
    client.AdmissionregistrationV1Api(api_client).create_mutating_webhook_configuration(body)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    api = ApiServer().start()
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    kube = Kube.connect(kubeconfig)
    ca = trustme.CA()
    scheduler = start_scheduler(kubeconfig, tmp_path, ca)
    register_webhook(kube.api_client, scheduler.server.url, ca)
    ext = ExtenderConfig(scheduler.server.url, "filter", "prioritize", "bind", weight=10, http_timeout=30,
                         node_cache_capable=True,
                         managed_resources=tuple(ManagedResource(n, True) for n in MANAGED), tls_insecure=True)
    kube_scheduler = KubeScheduler(api.store, KubeSchedulerConfig(extenders=(ext,), initial_backoff=0.2,
                                                                  max_backoff=1.0)).start()
    agent = ScriptedAgent(kube)
    agent.thread.start()
    p = Plane(api, kube, scheduler, kube_scheduler, client.CoreV1Api(kube.api_client), agent, kubeconfig, ca,
              tmp_path)
    yield p
    agent.stop_event.set()
    agent.thread.join(timeout=5)
    kube_scheduler.stop()
    p.scheduler.stop()
    kube.close()
    api.stop()
