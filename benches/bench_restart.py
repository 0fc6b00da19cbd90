"""Large-cluster bookkeeping: a scheduler's restart, an agent's report, and memory.

The cluster: 10,000 GPUs (the node cycle of ``bench_engine``) holding 50,000 running pods,
small requests placed round-robin over the nodes (``1g`` instances on MIG nodes, 2 GiB shares
on hami-core nodes). Cases:

- ``restart``: a fresh engine is fed every node and every pod's recorded decision
  (``upsert_node`` per node, then ``assume_many``), as ``hami scheduler`` does at start;
- ``set_realised 8x7``: one 8-GPU A100 node reports 8 × 7 instances (its pods' instances in
  use and idle ones beside them) while the other 50,000 reservations exist;
- memory (tracemalloc, reported in the summary): engine bytes per GPU and per pod.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

import pytest

from benches.bench_engine import GPUS_PER_NODE, NODE_CYCLE, request
from hami._core import Decision, Engine, GpuMode, GpuSpec
from hami.api.codecs import Placement, RealisedInstance

GPUS = 10_000
PODS = 50_000
MIG_REQUEST = request(mem=5120)
CORE_REQUEST = request(mem=2048)
REPORT_NODE = "report-node"


def _nodes() -> list[tuple[str, list[GpuSpec]]]:
    out = []
    for i in range(GPUS // GPUS_PER_NODE):
        model, mode, mem = NODE_CYCLE[i % len(NODE_CYCLE)]
        out.append((f"node-{i:06d}", [GpuSpec(f"GPU-{i:06d}-{j}", model, mode, mem, index=j)
                                      for j in range(GPUS_PER_NODE)]))
    return out


def _feed(engine, nodes) -> None:
    for name, gpus in nodes:
        engine.upsert_node(name, gpus)


def _dense() -> tuple[Engine, list, list[tuple[str, Decision]]]:
    engine = Engine()
    nodes = _nodes()
    _feed(engine, nodes)
    open_nodes = [(name, MIG_REQUEST if gpus[0].mode == GpuMode.MIG else CORE_REQUEST) for name, gpus in nodes]
    placed = 0
    while placed < PODS and open_nodes:
        still = []
        for name, req in open_nodes:
            if placed == PODS:
                break
            out = engine.decide_and_reserve(f"pod-{placed:06d}", req, name)
            if isinstance(out, Decision):
                placed += 1
                still.append((name, req))
        open_nodes = still
    assert placed == PODS, f"only {placed} pods fit"
    decisions = [(f"pod-{i:06d}", engine.reservation(f"pod-{i:06d}")) for i in range(PODS)]
    return engine, nodes, decisions


@pytest.fixture(scope="module")
def dense():
    engine, nodes, decisions = _dense()
    info = {"impl": "compiled", "gpus": GPUS, "pods": PODS, "kernels": engine.implementation}
    # memory: a fresh engine's growth under tracemalloc, nodes first, then the pods
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fresh = Engine()
    _feed(fresh, nodes)
    with_nodes = tracemalloc.get_traced_memory()[0]
    fresh.assume_many(decisions)
    with_pods = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    info["bytes_per_gpu"] = round((with_nodes - base) / GPUS)
    info["bytes_per_pod"] = round((with_pods - with_nodes) / PODS)
    del fresh
    gc.collect()
    yield engine, nodes, decisions, info
    del engine
    gc.collect()


def _record(benchmark, info: dict, case: str) -> None:
    benchmark.group = f"{case} @ {GPUS:,} GPUs, {PODS:,} pods"
    benchmark.extra_info.update(info, case=case)


def test_restart(benchmark, dense):
    """A scheduler's start: every node, then every bound pod's decision."""
    _engine, nodes, decisions, info = dense
    _record(benchmark, info, "restart (nodes + assume_many)")
    split: dict[str, float] = {}

    def restart():
        t0 = time.perf_counter()
        fresh = Engine()
        _feed(fresh, nodes)
        t1 = time.perf_counter()
        conflicts = fresh.assume_many(decisions)
        split["nodes_s"], split["assume_s"] = t1 - t0, time.perf_counter() - t1
        return fresh, conflicts

    fresh, conflicts = benchmark.pedantic(restart, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update({k: round(v, 3) for k, v in split.items()})
    assert conflicts == []
    assert fresh.snapshot() == _engine.snapshot()


def test_set_realised_one_node(benchmark, dense):
    """One 8-GPU node reports 8 × 7 instances: 4 in use by its pods and 3 idle per GPU."""
    engine, _, _, info = dense
    _record(benchmark, info, "set_realised 8x7")
    gpus = [GpuSpec(f"GPU-report-{j}", "NVIDIA A100-SXM4-80GB", GpuMode.MIG, 81920, index=j) for j in range(8)]
    engine.upsert_node(REPORT_NODE, gpus)
    for i in range(32):
        assert isinstance(engine.decide_and_reserve(f"report-pod-{i}", MIG_REQUEST, REPORT_NODE), Decision)
    report = []
    for g in gpus:
        row = engine._rows[g.uuid]
        owners = engine._owner.get(row, {})
        used = set()
        for profile, start in engine.snapshot()[g.uuid]["in_use"]:
            t = engine.tables.models[int(engine.state.g_model[row])]
            k = t.slot_of(profile, start)
            size = t.profiles[t.slots[k][0]].memory_slices
            report.append(RealisedInstance.expected(g.uuid, profile, Placement(start, size), in_use=True,
                                                    pod_uid=owners[k]))
            used.add(start)
        report += [RealisedInstance.expected(g.uuid, "1g.10gb", Placement(s, 1)) for s in range(7) if s not in used]
    assert len(report) == 56
    assert engine.set_realised(REPORT_NODE, report) == []
    conflicts = benchmark(engine.set_realised, REPORT_NODE, report)
    assert conflicts == []
