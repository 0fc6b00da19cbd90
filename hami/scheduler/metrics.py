"""Scheduler metrics on their own port (default 9395): HAMi's names, the seed's legacy form, ours.

Collected at scrape time from the engine and the cache (prometheus-client custom collectors), so
scraping costs nothing between scrapes and never disagrees with what the engine holds.

HAMi v2.9+ names (every sample with `zone="vGPU"`): `hami_gpu_memory_limit_bytes`,
`hami_gpu_core_limit_ratio`, `hami_gpu_memory_allocated_bytes`, `hami_gpu_shared_count`,
`hami_gpu_core_allocated_ratio`, `hami_node_gpu_memory_allocated_ratio`,
`hami_node_gpu_mig_instance_info`. Legacy names (flag `--legacy-metrics`, on by default):
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
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client import Counter as PCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hami._core import Engine, MigPick
from hami._core.introspect import geometry_slots
from hami._core.results import REASON_TEXT
from hami.api import codecs
from hami.scheduler.annotations import profile_identity
from hami.scheduler.cache import ClusterCache

MIB = 1 << 20
SEED_MIG_HELP = "GPU Sharing mode. 0 for hami-core, 1 for mig, 2 for mps"
HAMI_LABELS = ["node", "device_uuid", "device_index", "device_type", "zone"]
LEGACY_LABELS = ["nodeid", "deviceuuid", "deviceidx", "devicetype", "zone"]
ZONE = "vGPU"




class _GpuRow:
    __slots__ = ("core_limit", "cores_used", "index", "mem_limit", "mem_used", "node", "shared", "type", "uuid")

    def __init__(self, node, uuid, index, type_, mem_limit, core_limit, mem_used, cores_used, shared) -> None:
        self.node, self.uuid, self.index, self.type = node, uuid, index, type_
        self.mem_limit, self.core_limit, self.mem_used = mem_limit, core_limit, mem_used
        self.cores_used, self.shared = cores_used, shared


class SchedulerCollector(Collector):
    def __init__(self, engine: Engine, cache: ClusterCache, legacy: bool = True) -> None:
        self.engine, self.cache, self.legacy = engine, cache, legacy

    def describe(self) -> Iterable[Any]:
        return []  # cheap registration; names are unique by construction

    def _rows(self) -> tuple[list[_GpuRow], list[tuple[str, Any, codecs.RealisedInstance]]]:
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

    def collect(self) -> Iterable[Any]:
        rows, instances = self._rows()

        def family(name: str, help_: str, labels: list[str], value_of, extra=None) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, help_, labels=labels + (extra or []))
            for r in rows:
                base = [r.node, r.uuid, str(r.index), r.type, ZONE]
                g.add_metric(base + ([str(r.core_limit)] if extra else []), float(value_of(r)))
            return g

        yield family("hami_gpu_memory_limit_bytes", "Device memory limit for a certain GPU", HAMI_LABELS,
                     lambda r: r.mem_limit * MIB)
        yield family("hami_gpu_core_limit_ratio", "Device core limit for a certain GPU", HAMI_LABELS,
                     lambda r: r.core_limit)
        yield family("hami_gpu_memory_allocated_bytes", "Device memory allocated for a certain GPU", HAMI_LABELS,
                     lambda r: r.mem_used * MIB, ["device_cores"])
        yield family("hami_gpu_shared_count", "Number of containers sharing this GPU", HAMI_LABELS,
                     lambda r: r.shared)
        yield family("hami_gpu_core_allocated_ratio", "Device core allocated for a certain GPU", HAMI_LABELS,
                     lambda r: r.cores_used)
        yield family("hami_node_gpu_memory_allocated_ratio", "GPU Memory Allocated Percentage on a certain GPU",
                     HAMI_LABELS, lambda r: r.mem_used / r.mem_limit if r.mem_limit else 0.0)
        info = GaugeMetricFamily("hami_node_gpu_mig_instance_info",
                                 "Realized MIG instance identity and scheduler placement",
                                 labels=["node", "device_uuid", "device_index", "mig_uuid", "profile",
                                         "gpu_instance_id", "compute_instance_id", "placement_start",
                                         "placement_size", "zone"])
        states: Counter[tuple[str, str, str]] = Counter()
        for node, device, inst in instances:
            info.add_metric([node, inst.gpu_uuid, str(device.index if device else ""), inst.mig_uuid, inst.profile,
                             str(inst.gpu_instance_id), str(inst.compute_instance_id), str(inst.placement.start),
                             str(inst.placement.size), ZONE], 1.0)
            states[(node, inst.profile, inst.state.value)] += 1
        yield info
        mig = GaugeMetricFamily("hami_mig_instances", "MIG instances that exist, by node, profile and state",
                                labels=["node", "profile", "state"])
        for (node, profile, state), n in sorted(states.items()):
            mig.add_metric([node, profile, state], float(n))
        yield mig
        pending = GaugeMetricFamily("hami_scheduler_pending_gpu_pods",
                                    "GPU pods whose bind is in flight (decided, not yet bound to a node)")
        pending.add_metric([], float(self.cache.pending_gpu_pods()))
        yield pending
        if self.legacy:
            yield from self._legacy(rows, instances)

    def _legacy(self, rows: list[_GpuRow], instances) -> Iterable[Any]:
        def family(name: str, help_: str, value_of) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, help_, labels=LEGACY_LABELS)
            for r in rows:
                g.add_metric([r.node, r.uuid, str(r.index), r.type, ZONE], float(value_of(r)))
            return g

        yield family("GPUDeviceMemoryLimit", "Device memory limit for a certain GPU", lambda r: r.mem_limit * MIB)
        yield family("GPUDeviceCoreLimit", "Device core limit for a certain GPU", lambda r: r.core_limit)
        yield family("GPUDeviceMemoryAllocated", "Device memory allocated for a certain GPU",
                     lambda r: r.mem_used * MIB)
        yield family("GPUDeviceSharedNum", "Number of containers sharing this GPU", lambda r: r.shared)
        yield family("GPUDeviceCoreAllocated", "Device core allocated for a certain GPU", lambda r: r.cores_used)
        yield family("nodeGPUMemoryPercentage", "GPU Memory Allocated Percentage on a certain GPU",
                     lambda r: r.mem_used / r.mem_limit if r.mem_limit else 0.0)
        seed = GaugeMetricFamily("nodeGPUMigInstance", SEED_MIG_HELP,
                                 labels=["deviceidx", "deviceuuid", "migname", "nodeid", "zone"])
        realised_by_gpu: dict[str, list[codecs.RealisedInstance]] = {}
        for _node, _device, inst in instances:
            realised_by_gpu.setdefault(inst.gpu_uuid, []).append(inst)
        for r in rows:
            slots = geometry_slots(self.engine, r.uuid)
            if slots is not None:
                for name, used in slots:
                    seed.add_metric([str(r.index), r.uuid, name, r.node, ZONE], 1.0 if used else 0.0)
                continue
            for inst in sorted(realised_by_gpu.get(r.uuid, ()), key=lambda i: i.placement.start):
                used = inst.state is codecs.InstanceState.IN_USE
                seed.add_metric([str(r.index), r.uuid, f"{inst.profile}-{inst.placement.start}", r.node, ZONE],
                                1.0 if used else 0.0)
        yield seed


class SchedulerMetrics:
    """The registry, our event counters, and the listener."""

    def __init__(self, engine: Engine, cache: ClusterCache, legacy: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(SchedulerCollector(engine, cache, legacy))
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

    def serve(self, host: str, port: int):
        return start_http_server(port, addr=host, registry=self.registry)
