"""Placement-engine benchmarks: fit/score, name mapping, reserve/release, bytes per GPU.

The cluster: N GPUs, 8 a node, nodes homogeneous in model, about half the GPUs MIG
(A100-SXM4-80GB, H100 80GB HBM3, H200, A30) and half hami-core (A10, T4, L4, L40S),
filled deterministically (seed 42) by ``decide_and_reserve`` of a request mix until 60 % of
the MIG compute slices and 60 % of the hami-core memory are in use. Building is not
measured; each (implementation, N) cluster is built once, by a module-scoped fixture, and
dropped before the next one is built.

Run with ``make bench`` (see ``benches/README.md``); the summary table with medians,
speed-ups and the targets is printed at the end by ``benches/conftest.py``.
"""

from __future__ import annotations

import gc
import hashlib
import random
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

import hami._core as core
from hami._core import CorePick, Decision, Engine, GpuMode, GpuSpec, MigPick, ReferenceEngine, Rejection
from hami._core import state as S
from hami.api.requests import ContainerRequest, Mode, Request

GPUS_PER_NODE = 8
SEED = 42
FILL = 0.60

# One cycle of node kinds; consecutive nodes alternate MIG / hami-core so both halves
# spread over the whole id range.
NODE_CYCLE = (
    ("NVIDIA A100-SXM4-80GB", GpuMode.MIG, 81920),
    ("NVIDIA A10", GpuMode.HAMI_CORE, 23028),
    ("NVIDIA H100 80GB HBM3", GpuMode.MIG, 81559),
    ("Tesla T4", GpuMode.HAMI_CORE, 15360),
    ("NVIDIA H200", GpuMode.MIG, 143771),
    ("NVIDIA L4", GpuMode.HAMI_CORE, 23034),
    ("NVIDIA A30", GpuMode.MIG, 24576),
    ("NVIDIA L40S", GpuMode.HAMI_CORE, 46068),
)

# (implementation, GPUs): compiled first, so the twin's state can be checked against it.
CLUSTERS = [("compiled", 1_000), ("compiled", 10_000), ("compiled", 100_000), ("twin", 1_000), ("twin", 10_000)]
ENGINES = {"compiled": Engine, "twin": ReferenceEngine}


def request(mem=0, pct=0, count=1, cores=0, mode=Mode.ANY) -> Request:
    return Request((ContainerRequest("main", 0, False, count, mem, pct, cores),), mode=mode)


# The measured requests.
SHAPES = {
    "1gpu": request(mem=10240),
    "4gpu": request(mem=10240, count=4),
}

# The fill mix, per node kind: (request, weight).
MIG_MIX = (
    (request(mem=5120), 3),
    (request(mem=10240), 4),
    (request(mem=20480), 2),
    (request(pct=50), 1),
    (request(pct=100), 1),
    (request(mem=10240, count=2), 1),
)
CORE_MIX = (
    (request(mem=2048), 2),
    (request(mem=4096), 3),
    (request(mem=8192), 2),
    (request(mem=10240), 2),
    (request(mem=4096, count=2), 1),
    (request(mem=4096, cores=30), 1),
    (request(pct=50), 1),
)

# Rounds for the slow cases (the twin's whole-cluster calls), per GPUs.
TWIN_SCAN_ROUNDS = {1_000: 20, 10_000: 5}
PEDANTIC_ROUNDS = 1_000  # reserve alone / release alone (setup each round)

DIGESTS: dict[int, str] = {}  # GPUs -> compiled state digest after the fill


@dataclass
class Cluster:
    impl: str
    gpus: int
    engine: object
    names: list[str]
    ids: np.ndarray
    kind_names: dict[str, list[str]]
    info: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)  # (shape, kind) -> node name

    def target(self, shape: str, kind: str) -> str:
        """The first node of ``kind`` where the ``shape`` request fits."""
        key = (shape, kind)
        if key not in self.targets:
            names = self.kind_names[kind]
            res = self.engine.fits(SHAPES[shape], self.engine.node_ids(names))
            ok = np.flatnonzero(res.ok())
            if not len(ok):
                pytest.fail(f"{self.impl}@{self.gpus}: no {kind} node fits the {shape} request")
            self.targets[key] = names[int(ok[0])]
        return self.targets[key]


def _slices(profile: str) -> int:
    return int(profile.split("g.", 1)[0])


def _digest(engine) -> str:
    st = engine.state
    h = hashlib.sha256()
    for name in S.GPU_FIELDS:
        h.update(getattr(st, name)[: st.rows].tobytes())
    return h.hexdigest()


def build(impl: str, gpus: int) -> Cluster:
    t0 = time.perf_counter()
    engine = ENGINES[impl]()
    names, kind_names = [], {"mig": [], "core": []}
    for i in range(gpus // GPUS_PER_NODE):
        model, mode, mem = NODE_CYCLE[i % len(NODE_CYCLE)]
        name = f"node-{i:06d}"
        engine.upsert_node(name, [GpuSpec(f"GPU-{i:06d}-{j}", model, mode, mem, index=j) for j in range(GPUS_PER_NODE)])
        names.append(name)
        kind_names["mig" if mode == GpuMode.MIG else "core"].append(name)
    st, tb = engine.state, engine.tables
    rows = np.arange(st.rows)
    mig_rows = rows[st.g_kind[: st.rows] == S.MIG]
    core_rows = rows[st.g_kind[: st.rows] == S.CORE]
    mig_cap = int(tb.compute_slices[st.g_model[mig_rows]].sum())
    core_cap = int(st.g_mem[core_rows].sum())

    rng = random.Random(SEED)
    mixes = {kind: ([r for r, _ in mix], [w for _, w in mix]) for kind, mix in (("mig", MIG_MIX), ("core", CORE_MIX))}
    used = {"mig": 0, "core": 0}
    cap = {"mig": mig_cap, "core": core_cap}
    reserved = rejected = streak = 0
    errors: list[str] = []
    while True:
        short = [k for k in ("mig", "core") if used[k] < FILL * cap[k]]
        if not short:
            break
        kind = short[0] if len(short) == 1 else rng.choice(short)
        node = rng.choice(kind_names[kind])
        req = rng.choices(*mixes[kind])[0]
        uid = f"fill-{reserved + rejected + len(errors)}"
        try:
            out = engine.decide_and_reserve(uid, req, node)
        except Exception as err:  # an engine fault: recorded, reported in the summary
            errors.append(f"{node}: {type(err).__name__}: {err}")
            if len(errors) > 100:
                break
            continue
        if isinstance(out, Rejection):
            rejected += 1
            streak += 1
            if streak > 5_000:
                break  # cannot reach the fill target; the summary shows the level reached
            continue
        assert isinstance(out, Decision), out
        streak = 0
        reserved += 1
        for _c, pick in out.picks():
            if isinstance(pick, MigPick):
                used["mig"] += _slices(pick.profile)
            else:
                assert isinstance(pick, CorePick)
                used["core"] += pick.memory_mib
    # Usage read back from the arrays (checks the bookkeeping above as well).
    mig_used = int(tb.used_compute[st.g_inuse[mig_rows]].astype(np.int64).sum())
    core_used = int(st.g_used_mem[core_rows].astype(np.int64).sum())
    digest = _digest(engine)
    if impl == "compiled":
        DIGESTS[gpus] = digest
    info = {
        "impl": impl,
        "kernels": engine.implementation,
        "compiled_available": core.COMPILED,
        "gpus": int(st.rows),
        "nodes": len(names),
        "mig_gpus": len(mig_rows),
        "core_gpus": len(core_rows),
        "mig_occupancy": round(mig_used / mig_cap, 4),
        "core_occupancy": round(core_used / core_cap, 4),
        "bookkeeping_matches_arrays": mig_used == used["mig"] and core_used == used["core"],
        "fill_reserved": reserved,
        "fill_rejected": rejected,
        "fill_errors": len(errors),
        "fill_error_samples": errors[:5],
        "build_s": round(time.perf_counter() - t0, 2),
        "engine_bytes_per_gpu": engine.gpu_array_bytes() / st.rows,
        "state_bytes_per_gpu": S.bytes_per_gpu(),
        "same_state_as_compiled": (digest == DIGESTS[gpus]) if impl == "twin" and gpus in DIGESTS else None,
    }
    return Cluster(impl, gpus, engine, names, engine.node_ids(names), kind_names, info)


@pytest.fixture(scope="module")
def cluster(request):
    impl, gpus = request.param
    c = build(impl, gpus)
    yield c
    del c
    gc.collect()


def pytest_generate_tests(metafunc):
    if "cluster" in metafunc.fixturenames:
        # Every benchmark gets every cluster (so pytest keeps one cluster alive at a time);
        # ``only_gpus`` marks are deselected in conftest.py.
        ids = [f"{i}-{n}" for i, n in CLUSTERS]
        metafunc.parametrize("cluster", CLUSTERS, ids=ids, indirect=True, scope="module")


def _record(benchmark, cluster: Cluster, case: str, **extra) -> None:
    """Name the group and attach the cluster's facts (before the run: the group is read then)."""
    benchmark.group = f"{case} @ {cluster.gpus:,} GPUs"
    benchmark.extra_info.update(cluster.info, case=case, **extra)


def _scan(benchmark, cluster: Cluster, fn, *args):
    """A whole-cluster call: auto-calibrated for the compiled engine, few rounds for the twin."""
    if cluster.impl == "twin":
        return benchmark.pedantic(fn, args, rounds=TWIN_SCAN_ROUNDS[cluster.gpus], iterations=1, warmup_rounds=1)
    for _ in range(3):  # warm caches and pages first (the first calls after a build are slower)
        fn(*args)
    return benchmark(fn, *args)


# -- 1. fit and score over every node ---------------------------------------------------


SCAN_ROUNDS = {1_000: 3_000, 10_000: 2_000, 100_000: 300}
COLD_ROUNDS = {1_000: 300, 10_000: 100, 100_000: 10}


@pytest.mark.parametrize("shape", ["1gpu", "4gpu"])
def test_fit_and_score(benchmark, cluster, shape):
    """The scheduler's filter: between two calls one node changed (a bind, an agent report),
    so the compiled engine plans that node again and answers the rest from its memo."""
    _record(benchmark, cluster, f"fit_and_score {shape}")
    engine = cluster.engine
    if cluster.impl == "twin":
        res, scores = _scan(benchmark, cluster, engine.fit_and_score, SHAPES[shape], cluster.ids)
    else:
        rng = random.Random(SEED)
        engine.fit_and_score(SHAPES[shape], cluster.ids)

        def one_node_changed():
            engine.state.n_version[rng.randrange(1, engine.state.nodes)] += 1

        res, scores = benchmark.pedantic(engine.fit_and_score, (SHAPES[shape], cluster.ids), setup=one_node_changed,
                                         rounds=SCAN_ROUNDS[cluster.gpus], iterations=1, warmup_rounds=5)
    benchmark.extra_info["fitting_nodes"] = int(res.ok().sum())
    assert res.ok().any() and len(scores) == len(cluster.ids)


@pytest.mark.parametrize("shape", ["1gpu", "4gpu"])
def test_fit_and_score_cold(benchmark, cluster, shape):
    """Every node planned again (the first filter of a request shape, or after the cost tables
    were refreshed): the kernels' full speed."""
    if cluster.impl == "twin":
        pytest.skip("the twin has no memo: its fit_and_score is always cold")
    _record(benchmark, cluster, f"fit_and_score cold {shape}")
    engine = cluster.engine

    def everything_changed():
        engine.state.epoch += 1

    res, _scores = benchmark.pedantic(engine.fit_and_score, (SHAPES[shape], cluster.ids), setup=everything_changed,
                                      rounds=COLD_ROUNDS[cluster.gpus], iterations=1, warmup_rounds=1)
    assert res.ok().any()


@pytest.mark.only_gpus(10_000)
def test_fits_alone(benchmark, cluster):
    _record(benchmark, cluster, "fits 1gpu")
    res = _scan(benchmark, cluster, cluster.engine.fits, SHAPES["1gpu"], cluster.ids)
    benchmark.extra_info["fitting_nodes"] = int(res.ok().sum())


@pytest.mark.only_gpus(10_000)
def test_scores_alone(benchmark, cluster):
    _record(benchmark, cluster, "scores 1gpu")
    scores = _scan(benchmark, cluster, cluster.engine.scores, SHAPES["1gpu"], cluster.ids)
    benchmark.extra_info["scoring_nodes"] = int((scores > 0).sum())


# -- 2. name mapping ----------------------------------------------------------------------


def test_node_ids(benchmark, cluster):
    _record(benchmark, cluster, "node_ids(all names)")
    ids = _scan(benchmark, cluster, cluster.engine.node_ids, cluster.names)
    assert np.array_equal(ids, cluster.ids)


# -- 3. reserve and release on one node ---------------------------------------------------
# Medians exclude the fragmentation-table refresh that every 64th decision runs (see the
# max and mean columns of pytest-benchmark's table for it).

UID = "bench-pod"


def _prepare(benchmark, cluster: Cluster, case: str, shape: str, kind: str):
    """The engine, request and node; checks the request is placed there, leaves it released."""
    engine, req, node = cluster.engine, SHAPES[shape], cluster.target(shape, kind)
    _record(benchmark, cluster, case, node=node)
    engine.release(UID)
    out = engine.decide_and_reserve(UID, req, node)
    assert isinstance(out, Decision), out
    engine.release(UID)
    return engine, req, node


@pytest.mark.parametrize("kind", ["mig", "core"])
@pytest.mark.parametrize("shape", ["1gpu", "4gpu"])
def test_reserve_release_pair(benchmark, cluster, shape, kind):
    engine, req, node = _prepare(benchmark, cluster, f"reserve+release {shape} {kind}", shape, kind)

    def pair():
        engine.decide_and_reserve(UID, req, node)
        engine.release(UID)

    benchmark(pair)


@pytest.mark.parametrize("kind", ["mig", "core"])
@pytest.mark.parametrize("shape", ["1gpu", "4gpu"])
def test_reserve_alone(benchmark, cluster, shape, kind):
    engine, req, node = _prepare(benchmark, cluster, f"reserve {shape} {kind}", shape, kind)

    def setup():
        engine.release(UID)

    benchmark.pedantic(
        engine.decide_and_reserve, (UID, req, node), setup=setup, rounds=PEDANTIC_ROUNDS, iterations=1, warmup_rounds=5
    )
    engine.release(UID)


@pytest.mark.parametrize("kind", ["mig", "core"])
@pytest.mark.parametrize("shape", ["1gpu", "4gpu"])
def test_release_alone(benchmark, cluster, shape, kind):
    engine, req, node = _prepare(benchmark, cluster, f"release {shape} {kind}", shape, kind)

    def setup():
        engine.decide_and_reserve(UID, req, node)

    benchmark.pedantic(engine.release, (UID,), setup=setup, rounds=PEDANTIC_ROUNDS, iterations=1, warmup_rounds=5)
