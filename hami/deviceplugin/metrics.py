"""The agent's HTTP endpoint (default port 9394): `/metrics`, `/healthz`, `/readyz`.

Metrics are built at scrape time from the agent's view and NVML (a custom collector on a
private registry, so no process-global state):

| name | labels | value |
|---|---|---|
| `hami_host_gpu_memory_used_bytes` (HAMi's) | node, device_index, device_uuid, device_type | NVML used |
| `hami_host_gpu_memory_total_bytes` | same | NVML total |
| `hami_gpu_mig_mode` | same | 1 MIG on, 0 off |
| `hami_gpu_health` | same | 1 offered to kubelet as Healthy, 0 not |
| `hami_mig_instances` | node, device_uuid, profile, state | realised instances (in-use / idle) |
| `hami_mig_device_info` (HAMi's) | namespace, pod, container, vdevice_index, device_uuid, mig_uuid, |
|   | profile, gpu_instance_id, compute_instance_id | 1 per realised device of a live pod |
| `hami_nvml_errors_total` | function, code | NVML errors the agent met |
| `hami_allocations_total` | result | Allocate calls (success / failed) |
| `hami_mig_instances_lost_total` | node | instances found gone (reboot, driver reload) |

Per-container usage from HAMi-core's shared regions (HAMi's vGPU monitor) is not exported.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from hami.api import AnnotationError, container_names
from hami.deviceplugin import pods as podlib
from hami.deviceplugin.inventory import device_type
from hami.deviceplugin.state import AgentState
from hami.k8s import Kube, KubeError
from hami.nvml import Nvml, NvmlError

log = logging.getLogger(__name__)

_GPU_LABELS = ["node", "device_index", "device_uuid", "device_type"]
_MIG_INFO_LABELS = ["namespace", "pod", "container", "vdevice_index", "device_uuid", "mig_uuid", "profile",
                    "gpu_instance_id", "compute_instance_id"]


class AgentCollector(Collector):
    """Builds every family from the agent's state at scrape time."""

    def __init__(self, state: AgentState, nvml: Nvml, pods: Callable[[], list[dict[str, Any]]]) -> None:
        self.state = state
        self.nvml = nvml
        self.pods = pods

    def describe(self) -> Iterable[Any]:
        return []  # cheap registration: no NVML or API call

    def collect(self) -> Iterator[Any]:
        node = self.state.node_name
        with self.state.lock:
            plans = sorted(self.state.plans.values(), key=lambda p: p.gpu.index)
            instances = list(self.state.instances)
            owners = dict(self.state.owners)
            errors = Counter(self.state.nvml_errors)
            allocations = Counter(self.state.allocations)
            lost = self.state.lost
        used = GaugeMetricFamily("hami_host_gpu_memory_used_bytes", "GPU device memory usage in bytes",
                                 labels=_GPU_LABELS)
        total = GaugeMetricFamily("hami_host_gpu_memory_total_bytes", "GPU device memory in bytes",
                                  labels=_GPU_LABELS)
        mode = GaugeMetricFamily("hami_gpu_mig_mode", "MIG mode of a GPU (1 on, 0 off)", labels=_GPU_LABELS)
        health = GaugeMetricFamily("hami_gpu_health", "1 when the GPU is offered to kubelet as Healthy",
                                   labels=_GPU_LABELS)
        for p in plans:
            labels = [node, str(p.gpu.index), p.uuid, device_type(p.gpu.name)]
            mode.add_metric(labels, 1.0 if p.gpu.mig_enabled else 0.0)
            health.add_metric(labels, 1.0 if p.available else 0.0)
            try:
                memory = self.nvml.memory(self.nvml.device_by_uuid(p.uuid))
            except NvmlError as exc:
                self.state.count_nvml_error(exc)
                continue
            used.add_metric(labels, float(memory.used_bytes))
            total.add_metric(labels, float(memory.total_bytes))
        yield from (used, total, mode, health)

        by_state = GaugeMetricFamily("hami_mig_instances", "Realised MIG instances by profile and state",
                                     labels=["node", "device_uuid", "profile", "state"])
        counts = Counter((i.gpu_uuid, i.profile, "in-use" if i.mig_uuid in owners else "idle")
                         for i in instances if i.mig_uuid)
        for (gpu, profile, st), n in sorted(counts.items()):
            by_state.add_metric([node, gpu, profile, st], float(n))
        yield by_state

        info = GaugeMetricFamily("hami_mig_device_info", "MIG runtime identity for a container allocation",
                                 labels=_MIG_INFO_LABELS)
        try:
            for pod in self.pods():
                if not podlib.live(pod):
                    continue
                try:
                    allocations_ = podlib.mig_allocations(pod)
                except AnnotationError:
                    continue
                meta = pod.get("metadata") or {}
                names_ = container_names(pod)
                for a in allocations_:
                    if not a.realised:
                        continue
                    container = names_[a.container_index] if a.container_index < len(names_) else ""
                    info.add_metric([meta.get("namespace", ""), meta.get("name", ""), container, str(a.device_index),
                                     a.gpu_uuid, a.mig_uuid or "", a.profile, str(a.gpu_instance_id),
                                     str(a.compute_instance_id)], 1.0)
        except KubeError as exc:
            log.warning("metrics: cannot list pods: %s", exc)
        yield info

        nvml_errors = CounterMetricFamily("hami_nvml_errors", "NVML errors the agent met, by function and code",
                                          labels=["function", "code"])
        for (function, code), n in sorted(errors.items()):
            nvml_errors.add_metric([function, code], float(n))
        yield nvml_errors
        allocs = CounterMetricFamily("hami_allocations", "Allocate calls by result", labels=["result"])
        for result in ("success", "failed"):
            allocs.add_metric([result], float(allocations.get(result, 0)))
        yield allocs
        yield _lost(node, lost)


def _lost(node: str, lost: int) -> CounterMetricFamily:
    family = CounterMetricFamily("hami_mig_instances_lost", "MIG instances found gone (reboot, driver reload)",
                                 labels=["node"])
    family.add_metric([node], float(lost))
    return family


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http " + format, *args)


class HttpEndpoint:
    """/metrics, /healthz (alive), /readyz (registered with kubelet and reconciled) on one port."""

    def __init__(self, state: AgentState, registry: CollectorRegistry, address: str, port: int) -> None:
        self.state = state
        metrics = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ok\n"]
            if path == "/readyz":
                if state.ready:
                    start_response("200 OK", [("Content-Type", "text/plain")])
                    return [b"ready\n"]
                why = "not registered with kubelet" if not state.registered else "first reconciliation pending"
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [f"not ready: {why}\n".encode()]
            if path == "/metrics":
                return metrics(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics, /healthz or /readyz\n"]

        self._server = make_server(address, port, app, ThreadingWSGIServer, handler_class=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="agent-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> HttpEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def registry_for(state: AgentState, nvml: Nvml, kube: Kube) -> CollectorRegistry:
    registry = CollectorRegistry()
    field = f"spec.nodeName={state.node_name}"
    registry.register(AgentCollector(state, nvml, lambda: kube.list("pods", field_selector=field)))
    return registry


__all__ = ["AgentCollector", "HttpEndpoint", "registry_for"]
