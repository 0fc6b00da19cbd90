"""Scheduler metrics on their own port (default 9395): HAMi's names, the seed's legacy form, ours.

Read at scrape time from the engine and the cache, so scraping costs nothing between scrapes and
never disagrees with what the engine holds. The per-GPU families are written as exposition text
directly (`GpuExposition`) and streamed family by family; our event metrics are prometheus-client
counters and histograms.

HAMi v2.9+ names (every sample with `zone="vGPU"`): `hami_gpu_memory_limit_bytes`,
`hami_gpu_core_limit_ratio`, `hami_gpu_memory_allocated_bytes`, `hami_gpu_shared_count`,
`hami_gpu_core_allocated_ratio`, `hami_node_gpu_memory_allocated_ratio`,
`hami_node_gpu_mig_instance_info`. Legacy names (on unless `--no-legacy-metrics`):
`GPUDeviceMemoryLimit`, `GPUDeviceCoreLimit`, `GPUDeviceMemoryAllocated`, `GPUDeviceSharedNum`,
`GPUDeviceCoreAllocated`, `nodeGPUMemoryPercentage` and `nodeGPUMigInstance` in the seed's form:
one sample per instance slot of the GPU's current geometry, `migname="<profile>-<slot>"`, 1 when a
pod uses the slot, 0 when it is free (HELP text kept as HAMi wrote it). Ours: request latency per
verb, decisions and node rejections by reason, pods pending for GPUs, MIG instances by profile and
state, MIG instances created / reused / destroyed by decisions, bind failures.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PCounter

from hami._core import Engine, MigPick
from hami._core.introspect import geometry_slots
from hami._core.results import REASON_TEXT
from hami.api import codecs
from hami.scheduler.annotations import profile_identity
from hami.scheduler.cache import ClusterCache

MIB = 1 << 20
SEED_MIG_HELP = "GPU Sharing mode. 0 for hami-core, 1 for mig, 2 for mps"
ZONE = "vGPU"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _esc(value: str) -> str:
    """A label value as the text format wants it (backslash, quote and newline escaped)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _num(value: float) -> str:
    return repr(float(value))


BATCH_LINES = 512  # lines per piece of text handed to the socket (some 60 KB)


def _family(name: str, help_: str, lines: list[str]) -> list[str]:
    """One gauge family, HELP, TYPE and its sample lines (each ending in a newline), in pieces of
    BATCH_LINES lines: no allocation of megabytes per scrape, which the C allocator keeps (in
    one arena per thread) long after the scrape."""
    help_ = help_.replace("\\", "\\\\").replace("\n", "\\n")
    head = f"# HELP {name} {help_}\n# TYPE {name} gauge\n"
    pieces = ["".join(lines[i:i + BATCH_LINES]) for i in range(0, len(lines), BATCH_LINES)] or [""]
    pieces[0] = head + pieces[0]
    return pieces


class _GpuRow:
    __slots__ = ("core_limit", "cores_used", "hami", "index", "legacy", "mem_limit", "mem_used", "node", "shared",
                 "type", "uuid")

    def __init__(self, node, uuid, index, type_, mem_limit, core_limit, mem_used, cores_used, shared) -> None:
        self.node, self.uuid, self.index, self.type = node, uuid, index, type_
        self.mem_limit, self.core_limit, self.mem_used = mem_limit, core_limit, mem_used
        self.cores_used, self.shared = cores_used, shared
        node, uuid, type_ = _esc(node), _esc(uuid), _esc(type_)
        # label sets, names sorted as prometheus_client writes them
        self.hami = f'device_index="{index}",device_type="{type_}",device_uuid="{uuid}",node="{node}",zone="{ZONE}"'
        self.legacy = f'deviceidx="{index}",deviceuuid="{uuid}",devicetype="{type_}",nodeid="{node}",zone="{ZONE}"'


class GpuExposition:
    """HAMi's per-GPU families, the legacy names and the MIG families, read from the engine and the
    cache at scrape time and written straight as exposition text, one family at a time.

    At 10,000 GPUs this is some 150,000 samples (20 MB). prometheus_client's collectors build a
    sample object per line and validate every label name, which cost the scheduler seconds of CPU
    and tens of MB per scrape; here a GPU's label set is formatted once per scrape and each family
    is handed to the socket as soon as it is written, so a scrape holds one family in memory."""

    def __init__(self, engine: Engine, cache: ClusterCache, legacy: bool = True) -> None:
        self.engine, self.cache, self.legacy = engine, cache, legacy

    def _rows(self) -> tuple[list[_GpuRow], list[tuple[str, codecs.NodeDevice | None, codecs.RealisedInstance]]]:
        snap = self.engine.snapshot()
        rows, instances = [], []
        for node, devices, realised in self.cache.inventory():
            for d in devices:
                use = snap.get(d.id)
                if use is None:
                    continue
                if use["kind"] == "mig":
                    used = [profile_identity(d.type, p, self.cache.learned) for p, _start in use["in_use"]]
                    mem_used, shared = sum(m for m, _c in used), len(used)
                    cores_used = min(100, sum(c for _m, c in used))
                else:
                    mem_used, shared, cores_used = use["used_mem"], use["tasks"], use["used_cores"]
                rows.append(_GpuRow(node, d.id, d.index, d.type, d.devmem, d.devcore, mem_used, cores_used, shared))
            by_uuid = {d.id: d for d in devices}
            for inst in realised:
                instances.append((node, by_uuid.get(inst.gpu_uuid), inst))
        return rows, instances

    def chunks(self) -> Iterator[str]:
        """The families in a fixed order, in pieces of at most BATCH_LINES lines."""
        rows, instances = self._rows()

        def per_gpu(name: str, help_: str, value_of, labels: str = "hami") -> list[str]:
            return _family(name, help_, [f"{name}{{{getattr(r, labels)}}} {_num(value_of(r))}\n" for r in rows])

        yield from per_gpu("hami_gpu_memory_limit_bytes", "Device memory limit for a certain GPU",
                      lambda r: r.mem_limit * MIB)
        yield from per_gpu("hami_gpu_core_limit_ratio", "Device core limit for a certain GPU", lambda r: r.core_limit)
        name = "hami_gpu_memory_allocated_bytes"
        yield from _family(name, "Device memory allocated for a certain GPU",
                      [f'{name}{{device_cores="{r.core_limit}",{r.hami}}} {_num(r.mem_used * MIB)}\n' for r in rows])
        yield from per_gpu("hami_gpu_shared_count", "Number of containers sharing this GPU", lambda r: r.shared)
        yield from per_gpu("hami_gpu_core_allocated_ratio", "Device core allocated for a certain GPU",
                      lambda r: r.cores_used)
        yield from per_gpu("hami_node_gpu_memory_allocated_ratio", "GPU Memory Allocated Percentage on a certain GPU",
                      lambda r: r.mem_used / r.mem_limit if r.mem_limit else 0.0)
        name = "hami_node_gpu_mig_instance_info"
        lines, states = [], Counter()
        for node, device, inst in instances:
            lines.append(
                f'{name}{{compute_instance_id="{inst.compute_instance_id}",'
                f'device_index="{device.index if device else ""}",device_uuid="{_esc(inst.gpu_uuid)}",'
                f'gpu_instance_id="{inst.gpu_instance_id}",mig_uuid="{_esc(inst.mig_uuid)}",node="{_esc(node)}",'
                f'placement_size="{inst.placement.size}",placement_start="{inst.placement.start}",'
                f'profile="{_esc(inst.profile)}",zone="{ZONE}"}} 1.0\n')
            states[(node, inst.profile, inst.state.value)] += 1
        yield from _family(name, "Realized MIG instance identity and scheduler placement", lines)
        name = "hami_mig_instances"
        yield from _family(name, "MIG instances that exist, by node, profile and state",
                      [f'{name}{{node="{_esc(node)}",profile="{_esc(profile)}",state="{state}"}} {_num(n)}\n'
                       for (node, profile, state), n in sorted(states.items())])
        name = "hami_scheduler_pending_gpu_pods"
        yield from _family(name, "GPU pods whose bind is in flight (decided, not yet bound to a node)",
                      [f"{name} {_num(self.cache.pending_gpu_pods())}\n"])
        if self.legacy:
            yield from self._legacy(rows, instances)

    def _legacy(self, rows: list[_GpuRow], instances) -> Iterator[str]:
        def per_gpu(name: str, help_: str, value_of) -> list[str]:
            return _family(name, help_, [f"{name}{{{r.legacy}}} {_num(value_of(r))}\n" for r in rows])

        yield from per_gpu("GPUDeviceMemoryLimit", "Device memory limit for a certain GPU", lambda r: r.mem_limit * MIB)
        yield from per_gpu("GPUDeviceCoreLimit", "Device core limit for a certain GPU", lambda r: r.core_limit)
        yield from per_gpu("GPUDeviceMemoryAllocated", "Device memory allocated for a certain GPU",
                      lambda r: r.mem_used * MIB)
        yield from per_gpu("GPUDeviceSharedNum", "Number of containers sharing this GPU", lambda r: r.shared)
        yield from per_gpu("GPUDeviceCoreAllocated", "Device core allocated for a certain GPU", lambda r: r.cores_used)
        yield from per_gpu("nodeGPUMemoryPercentage", "GPU Memory Allocated Percentage on a certain GPU",
                      lambda r: r.mem_used / r.mem_limit if r.mem_limit else 0.0)
        realised_by_gpu: dict[str, list[codecs.RealisedInstance]] = {}
        for _node, _device, inst in instances:
            realised_by_gpu.setdefault(inst.gpu_uuid, []).append(inst)
        name, lines = "nodeGPUMigInstance", []
        for r in rows:
            head = f'{name}{{deviceidx="{r.index}",deviceuuid="{_esc(r.uuid)}",migname="'
            tail = f'",nodeid="{_esc(r.node)}",zone="{ZONE}"}} '
            slots = geometry_slots(self.engine, r.uuid)
            if slots is None:
                slots = [(f"{inst.profile}-{inst.placement.start}", inst.state is codecs.InstanceState.IN_USE)
                         for inst in sorted(realised_by_gpu.get(r.uuid, ()), key=lambda i: i.placement.start)]
            lines.extend(f"{head}{_esc(slot)}{tail}{'1.0' if used else '0.0'}\n" for slot, used in slots)
        yield from _family(name, SEED_MIG_HELP, lines)


class _MetricsHandler(BaseHTTPRequestHandler):
    """GET /metrics: our event metrics (prometheus_client), then the GPU families as they are
    written. HTTP/1.0, the body ends with the connection: no need to hold 20 MB to know its length."""

    protocol_version = "HTTP/1.0"
    timeout = 30  # seconds a stalled scraper may hold the (single) metrics thread
    server: _MetricsServer

    def do_GET(self) -> None:
        if urlsplit(self.path).path not in ("/", "/metrics"):
            self.send_error(404, "metrics are at /metrics")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.end_headers()
        try:
            for chunk in self.server.metrics.chunks():
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the scraper gave up (its timeout); nothing to clean

    def log_message(self, *args) -> None:
        pass


class _MetricsServer(HTTPServer):
    """One scrape at a time, on one thread: scrapes are seconds apart, and a thread per scrape
    leaves each its own C-allocator arena to grow (a soak's scheduler RSS crept with scrapes).
    A scraper that stops reading is dropped after `_MetricsHandler.timeout`."""

    def __init__(self, address: tuple[str, int], metrics: SchedulerMetrics) -> None:
        self.metrics = metrics
        super().__init__(address, _MetricsHandler)


class SchedulerMetrics:
    """The registry, our event counters, and the listener."""

    def __init__(self, engine: Engine, cache: ClusterCache, legacy: bool = True) -> None:
        self.registry = CollectorRegistry()  # the event metrics; the GPU families are `gpus`
        self.gpus = GpuExposition(engine, cache, legacy)
        self.latency = Histogram("hami_scheduler_request_duration_seconds", "Extender and webhook request latency",
                                 ["path"], registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0))
        self.filters = PCounter("hami_scheduler_filter_nodes", "Nodes judged by filter, by outcome",
                                ["outcome"], registry=self.registry)
        self.rejections = PCounter("hami_scheduler_node_rejections", "Nodes a filter rejected, by reason",
                                   ["reason"], registry=self.registry)
        self.bind_failures = PCounter("hami_scheduler_bind_failures", "Binds that failed (see events for why)",
                                      registry=self.registry)
        self.decisions = PCounter("hami_scheduler_decisions", "Pods bound with devices, by device kind",
                                  ["kind"], registry=self.registry)
        self.instances = PCounter("hami_scheduler_mig_instances_decided",
                                  "MIG instances in bound decisions: created, reused (an idle one at the placement), "
                                  "destroyed (idle ones in the way)", ["action"], registry=self.registry)
        self._lock = threading.Lock()

    def observe(self, path: str, seconds: float) -> None:
        self.latency.labels(path).observe(seconds)

    def observe_filter(self, fitting: int, failed: int, unresolvable: int, rejected: Mapping[int, int]) -> None:
        """One filter call: nodes by outcome, and `rejected` (reason mask -> nodes) by reason,
        labelled with the reasons' fixed texts (never the per-pod numbers: bounded labels)."""
        self.filters.labels("fit").inc(fitting)
        if failed:
            self.filters.labels("unschedulable").inc(failed)
        if unresolvable:
            self.filters.labels("unresolvable").inc(unresolvable)
        for mask, nodes in rejected.items():
            for bit, text in REASON_TEXT.items():
                if mask & bit:
                    self.rejections.labels(text).inc(nodes)

    def bind_failed(self) -> None:
        self.bind_failures.inc()

    def bound(self, decision) -> None:
        mig = [p for _c, p in decision.picks() if isinstance(p, MigPick)]
        self.decisions.labels("mig" if mig else "hami-core").inc()
        for pick in mig:
            self.instances.labels("reused" if pick.reuse is not None else "created").inc()
            if pick.destroy:
                self.instances.labels("destroyed").inc(len(pick.destroy))

    def chunks(self) -> Iterator[bytes]:
        yield generate_latest(self.registry)
        for text in self.gpus.chunks():
            yield text.encode()

    def render(self) -> str:
        """The whole exposition as one string (tests, the simulator); the server streams `chunks`."""
        return b"".join(self.chunks()).decode()

    def serve(self, host: str, port: int) -> tuple[HTTPServer, threading.Thread]:
        server = _MetricsServer((host, port), self)
        thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        thread.start()
        return server, thread
