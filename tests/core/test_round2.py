"""Engine round 2: the defects an independent check found, one test each (both kernels).

1. GPUs whose running instances lie outside every allowed geometry took nothing.
2. Multi-container pods were planned greedily, container by container, and refused when
   they fit.
3. ``fits`` and ``decide_and_reserve`` ran different searches and disagreed.
4. An agent report scanned every reservation of the cluster.
5. Out-of-range node ids crashed the compiled kernel.
"""

import itertools

import numpy as np
import pytest

from hami._core import Decision, Engine, GpuMode, GpuSpec, Rejection
from hami._core import state as S
from hami._core.tables import GEOMETRY_POLICIES, PolicyTables
from hami.api.requests import ContainerRequest, Request
from hami.devices import naming
from tests.core.helpers import mig_node, realised, req

A100 = "NVIDIA A100-SXM4-80GB"


def busy(gpu, *placed):
    return [realised(gpu, p, s, in_use=True, pod_uid=f"other-{p}-{s}") for p, s in placed]


def pod(*containers):
    """containers: (count, MiB) per container."""
    return Request(tuple(ContainerRequest(f"c{i}", i, False, n, mem) for i, (n, mem) in enumerate(containers)))


def placements(decision):
    return [sorted((p.gpu_uuid, p.profile, p.start) for p in devices) for devices in decision.containers]


# -- 1. adopted layouts outside every allowed geometry -------------------------------


@pytest.mark.parametrize("policy", GEOMETRY_POLICIES)
def test_the_issue_example_takes_legal_placements_next_to_adopted_instances(make_engine, policy):
    e = make_engine(policy)
    (gpu,) = mig_node(e, "n")
    assert e.set_realised("n", busy(gpu, ("1g.10gb", 6), ("3g.40gb", 0))) == []
    small = e.decide_and_reserve("ten", req(mem=10240), "n")
    assert isinstance(small, Decision), small
    (pick,) = small.containers[0]
    assert (pick.profile, pick.start) in {("1g.10gb", 4), ("1g.10gb", 5), ("1g.20gb", 4), ("2g.20gb", 4)}
    e.release("ten")
    twenty = e.decide_and_reserve("twenty", req(mem=20480), "n")
    assert isinstance(twenty, Decision), twenty
    (pick,) = twenty.containers[0]
    assert (pick.profile, pick.start) in {("1g.20gb", 4), ("2g.20gb", 4)}


@pytest.mark.parametrize("policy", GEOMETRY_POLICIES)
def test_every_legal_layout_takes_every_profile_that_still_fits(policy):
    """Over all 723 positioned layouts of an A100-80GB: a request of memory class c has a
    candidate exactly when some legal free placement of a profile >= c exists."""
    pt = PolicyTables(None, policy)
    m = pt.add_model(naming.find_model(A100))
    t = pt.models[m]
    assert t.n_layouts == 723
    n_s, n_p = len(t.slots), len(t.profiles)
    outside = 0
    for local in range(t.n_layouts):
        layout = int(pt.offset[m]) + local
        outside += int(pt.geo_ok[layout]) == 0
        legal = sum(1 << k for k in range(n_s) if pt.add[layout, k] >= 0)
        for c in range(n_p):
            acceptable = sum(1 << k for k in range(n_s) if t.slots[k][0] >= c)
            assert bool(pt.cand[layout, c]) == bool(legal & acceptable), (t.layouts[local], c)
            assert int(pt.cand[layout, c]) & ~(legal & acceptable) == 0
    assert outside == 98  # the independent check's count: all hold 1g.10gb at start 6


def test_out_of_geometry_gpus_are_served_through_the_engine_on_both_kernels(make_engine):
    """Every out-of-geometry layout, realised as busy instances, takes a request of every
    class that still has a legal placement; the decision is that legal placement."""
    e = make_engine()
    (gpu,) = mig_node(e, "n")
    pt = e.tables
    t = pt.models[0]
    for local, slotset in enumerate(t.layouts):
        if int(pt.geo_ok[local]) != 0:
            continue
        placed = [(t.profiles[t.slots[k][0]].name, t.slots[k][1]) for k in range(len(t.slots)) if slotset >> k & 1]
        assert e.set_realised("n", busy(gpu, *placed)) == []
        legal = sum(1 << k for k in range(len(t.slots)) if pt.add[local, k] >= 0)
        for c, prof in enumerate(t.profiles):
            acceptable = sum(1 << k for k in range(len(t.slots)) if t.slots[k][0] >= c)
            out = e.decide_and_reserve("probe", req(mem=t.nominal[c]), "n")
            assert isinstance(out, Decision) == bool(legal & acceptable), (placed, prof.name, out)
            if isinstance(out, Decision):
                (pick,) = out.containers[0]
                assert legal >> t.slot_of(pick.profile, pick.start) & 1
                e.release("probe")


def test_an_adopted_gpu_drains_back_into_the_geometries(make_engine):
    e = make_engine()
    (gpu,) = mig_node(e, "n")
    e.set_realised("n", busy(gpu, ("1g.10gb", 6), ("3g.40gb", 0)))
    row = e._rows[gpu]
    assert int(e.tables.geo_ok[int(e.state.g_inuse[row])]) == 0
    assert isinstance(e.decide_and_reserve("p", req(mem=20480), "n"), Decision)
    # the HAMi pod on 1g.10gb@6 ends and the agent destroys its instance
    e.set_realised("n", busy(gpu, ("3g.40gb", 0)))
    assert int(e.tables.geo_ok[int(e.state.g_inuse[row])]) != 0
    # from here on new instances keep the GPU inside an allowed geometry
    for i in range(3):
        if isinstance(e.decide_and_reserve(f"q{i}", req(mem=10240), "n"), Rejection):
            break
        assert int(e.tables.geo_ok[int(e.state.g_inuse[row])]) != 0


# -- 2. whole-pod planning -------------------------------------------------------------


@pytest.mark.parametrize("policy", GEOMETRY_POLICIES)
@pytest.mark.parametrize("containers", [[(4, 10240), (1, 40960)], [(1, 40960), (4, 10240)]])
def test_a_pod_that_fits_is_planned_whole_whatever_the_container_order(make_engine, policy, containers):
    e = make_engine(policy)
    mig_node(e, "n")
    request = pod(*containers)
    fit = e.fits(request, e.node_ids(["n"]))
    assert fit.codes.tolist() == [0]
    out = e.decide_and_reserve("p", request, "n")
    assert isinstance(out, Decision), out
    profiles = sorted(p.profile for _c, p in out.picks())
    assert profiles.count("3g.40gb") + profiles.count("4g.40gb") == 1
    assert len(profiles) == 5


@pytest.mark.parametrize("policy", GEOMETRY_POLICIES)
def test_the_answer_does_not_depend_on_container_order(make_engine, policy):
    shapes = [(2, 10240), (1, 20480), (1, 40960)]
    answers = set()
    for perm in itertools.permutations(shapes):
        e = make_engine(policy)
        mig_node(e, "n", 2)
        out = e.decide_and_reserve("p", pod(*perm), "n")
        assert isinstance(out, Decision), out
        by_shape = dict(zip(perm, placements(out), strict=True))
        answers.add(tuple(tuple(by_shape[s]) for s in shapes))
    assert len(answers) == 1


def test_infeasible_pods_are_still_refused_with_a_reason(make_engine):
    e = make_engine()
    mig_node(e, "n")
    out = e.decide_and_reserve("p", pod((5, 10240), (1, 40960)), "n")  # 5 + 3 compute slices > 7
    assert isinstance(out, Rejection)
    assert out.reasons
    assert e.fits(pod((5, 10240), (1, 40960)), e.node_ids(["n"])).codes.tolist() != [0]


@pytest.mark.parametrize("policy", ["hami-legacy", "hami-v2.10", "static"])
def test_the_hami_baselines_keep_container_order(make_engine, policy):
    """They model HAMi, which places containers one by one: the first container's choice
    is the one it would make alone."""
    e = make_engine(policy)
    mig_node(e, "n")
    alone = make_engine(policy)
    mig_node(alone, "n")
    first = alone.decide_and_reserve("a", pod((1, 10240)), "n")
    out = e.decide_and_reserve("p", pod((1, 10240), (1, 20480)), "n")
    if isinstance(out, Decision):
        assert placements(out)[0] == placements(first)[0]


# -- 3. fits and decide run one search ---------------------------------------------------


def test_fits_agrees_with_decide_on_idle_instances_under_hami_v210(make_engine):
    e = make_engine("hami-v2.10")
    gpus = [GpuSpec("GPU-a100", A100, GpuMode.MIG, 81920, index=0),
            GpuSpec("GPU-h200", "NVIDIA H200", GpuMode.MIG, 143771, index=1),
            GpuSpec("GPU-a30", "NVIDIA A30", GpuMode.MIG, 24576, index=2)]
    e.upsert_node("n", gpus)
    report = [realised("GPU-a100", "3g.40gb", 4, in_use=True, pod_uid="x"),
              realised("GPU-a100", "2g.20gb", 0, in_use=False),
              realised("GPU-a100", "2g.20gb", 2, in_use=False),
              realised("GPU-h200", "1g.18gb", 6, in_use=False, model="H200"),
              realised("GPU-h200", "2g.35gb", 0, in_use=False, model="H200")]
    report += [realised("GPU-a30", "1g.6gb", s, in_use=False, model="A30") for s in (1, 2, 3)]
    assert e.set_realised("n", report) == []
    request = pod((2, 30000), (2, 36000))
    fit = e.fits(request, e.node_ids(["n"]))
    out = e.decide_and_reserve("p", request, "n")
    assert (fit.codes.tolist() == [0]) == isinstance(out, Decision)


# -- 4. agent reports cost O(instances on the node) ------------------------------------


class CountingDict(dict):
    """A dict that counts whole-dict iterations (the shape of per-event work that grows)."""

    scans = 0

    def __iter__(self):
        CountingDict.scans += 1
        return super().__iter__()

    def items(self):
        CountingDict.scans += 1
        return super().items()

    def values(self):
        CountingDict.scans += 1
        return super().values()

    def keys(self):
        CountingDict.scans += 1
        return super().keys()


def test_a_node_report_does_not_scan_the_clusters_reservations(make_engine):
    e = make_engine()
    for n in range(30):
        mig_node(e, f"n{n}", 2)
        for i in range(4):
            assert isinstance(e.decide_and_reserve(f"p{n}-{i}", req(mem=10240), f"n{n}"), Decision)
    big = [name for name, value in vars(e).items() if isinstance(value, dict) and len(value) >= 100]
    assert big, "expected the engine to hold per-reservation maps"
    for name in big:
        setattr(e, name, CountingDict(getattr(e, name)))
    CountingDict.scans = 0
    gpu = "GPU-n7-0"
    e.set_realised("n7", busy(gpu, ("3g.40gb", 4)))
    # the node changes shape: a GPU moves rows, its reservations follow
    e.upsert_node("n7", [GpuSpec("GPU-n7-new", A100, GpuMode.MIG, 81920, index=0),
                         GpuSpec("GPU-n7-1", A100, GpuMode.MIG, 81920, index=1)])
    assert CountingDict.scans == 0, f"cluster-wide scans of {big}"


# -- 5. node ids are validated at the API boundary ----------------------------------------


@pytest.mark.parametrize("bad", [[100000], [-5], [0, 1, 2**31 - 1]])
def test_out_of_range_node_ids_are_a_clear_error(make_engine, bad):
    e = make_engine()
    mig_node(e, "n")
    with pytest.raises(ValueError, match="node id"):
        e.fit_and_score(req(mem=10240), np.array(bad, np.int64))
    with pytest.raises(ValueError, match="node id"):
        e.fits(req(mem=10240), np.array(bad))


def test_valid_ids_still_work_after_the_check(make_engine):
    e = make_engine()
    mig_node(e, "n")
    fit = e.fits(req(mem=10240), e.node_ids(["n", "unknown"]))
    assert fit.codes.tolist()[0] == 0


def test_engine_is_the_compiled_one_here():
    assert Engine().implementation in ("_kernels", "reference")
    assert S.MAX_NODE_GPUS == 64


def test_a_pod_too_big_for_the_nodes_free_slices_is_refused_at_once(make_engine):
    """Eight GPUs with two free 1g slots each; two containers asking 8 + 9 devices. Every
    container alone has candidates, so only the capacity bound stops the joint search before
    it enumerates the ways of placing 16 devices (the twin would take minutes)."""
    e = make_engine()
    gpus = mig_node(e, "n", 8)
    report = []
    for g in gpus:
        report += busy(g, *[("1g.10gb", s) for s in range(5)])
    assert e.set_realised("n", report) == []
    out = e.decide_and_reserve("p", pod((8, 10240), (9, 10240)), "n")
    assert isinstance(out, Rejection)
    ok = e.decide_and_reserve("q", pod((8, 10240), (8, 10240)), "n")
    assert isinstance(ok, Decision), ok


def test_expected_idle_instances_memo_is_bounded(monkeypatch):
    """Released instances the agent has not reported yet are memoised per (GPU, slot); at
    10,000 MIG GPUs churn would fill that towards every pair, so it is cleared when full."""
    import hami._core.engine as E
    from hami._core import Engine, GpuSpec
    from hami.api.pods import RequestDefaults, parse_pod

    monkeypatch.setattr(E, "SYNTH_MEMO", 2)
    engine = Engine()
    engine.upsert_node("n", [GpuSpec(f"GPU-{i}", "NVIDIA A100-SXM4-80GB", E.GpuMode.MIG) for i in range(4)])
    pod = {"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": [{"name": "c", "resources": {
        "limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10240"}}}]}}
    request = parse_pod(pod, RequestDefaults())
    for i in range(8):
        assert not hasattr(engine.decide_and_reserve(f"a{i}", request, "n"), "message")
    for i in range(8):
        engine.release(f"a{i}")  # idle, not reported: the next decisions name them by placement
    reused = set()
    for i in range(8):
        decision = engine.decide_and_reserve(f"b{i}", request, "n")
        [(_c, pick)] = decision.picks()
        reused.add((pick.gpu_uuid, pick.start))
        assert pick.reuse is not None and len(engine._synthesised) <= 2
    assert len(reused) > 2  # more distinct expected instances than the memo may hold


def test_seed_geometry_slots_never_name_instances_that_do_not_exist():
    """`nodeGPUMigInstance` in the seed's form lists a geometry's slots. A GPU holding four
    1g.20gb (one in use) lies in no geometry with its idle ones: its slots would name a 4g.40gb
    that does not exist, so it reports its real instances instead (the metric's fallback)."""
    import uuid
    from datetime import UTC, datetime

    from hami._core import Engine, GpuMode, GpuSpec
    from hami._core.introspect import geometry_slots
    from hami.api.codecs import InstanceState, Placement, RealisedInstance

    engine = Engine()
    engine.upsert_node("n", [GpuSpec("GPU-0", "NVIDIA A100-SXM4-80GB", GpuMode.MIG)])
    now = datetime.now(UTC).replace(microsecond=0)

    def inst(profile: str, start: int, size: int, used: bool) -> RealisedInstance:
        return RealisedInstance("GPU-0", profile, Placement(start, size), start + 1, 0, f"MIG-{uuid.UUID(int=start)}",
                                InstanceState.IN_USE if used else InstanceState.IDLE, "default/p" if used else None,
                                None if used else now, "uid-p" if used else None)

    assert not engine.set_realised("n", [inst("1g.20gb", s, 2, s == 4) for s in (0, 2, 4, 6)])
    assert geometry_slots(engine, "GPU-0") is None
    assert not engine.set_realised("n", [inst("3g.40gb", 4, 4, True)])  # inside 3g x 2: its slots
    assert geometry_slots(engine, "GPU-0") == [("3g.40gb-0", False), ("3g.40gb-1", True)]
