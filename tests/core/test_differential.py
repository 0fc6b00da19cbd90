"""Differential + invariant tests: the compiled engine and reference.py, driven through the
same random clusters and operation sequences, must agree on every result."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from hami._core import COMPILED, POLICIES, Engine, GpuMode, GpuSpec, ReferenceEngine
from hami._core import state as S
from hami.api.codecs import Placement, RealisedInstance
from hami.api.requests import ContainerRequest, GpuPolicy, Mode, NodePolicy, Request

MIG_MODELS = ["NVIDIA A100-SXM4-80GB", "NVIDIA A30", "NVIDIA H100 NVL", "NVIDIA A100-SXM4-40GB"]
CORE_MODELS = [("NVIDIA A10", 23028), ("Tesla T4", 15360)]


@st.composite
def clusters(draw):
    nodes = []
    for n in range(draw(st.integers(1, 4))):
        gpus = []
        for i in range(draw(st.integers(1, 4))):
            uuid = f"GPU-n{n}-{i}"
            if draw(st.booleans()):
                gpus.append(GpuSpec(uuid, draw(st.sampled_from(MIG_MODELS)), GpuMode.MIG, 81920, index=i))
            else:
                model, mem = draw(st.sampled_from(CORE_MODELS))
                split = draw(st.sampled_from([1, 2, 10]))
                gpus.append(GpuSpec(uuid, model, GpuMode.HAMI_CORE, mem, split, index=i))
        nodes.append((f"node-{n}", gpus))
    return nodes


@st.composite
def requests(draw):
    containers = []
    for index in range(draw(st.integers(1, 2))):
        count = draw(st.integers(0, 3))
        if draw(st.booleans()):
            mem, pct = draw(st.sampled_from([3000, 5000, 10240, 12000, 20000, 40000, 80000, 90000])), 0
        else:
            mem, pct = 0, draw(st.sampled_from([10, 25, 50, 100]))
        cores = draw(st.sampled_from([0, 0, 30, 100]))
        containers.append(ContainerRequest(f"c{index}", index, False, count, mem, pct, cores))
    return Request(
        tuple(containers),
        mode=draw(st.sampled_from(list(Mode))),
        use_gpu_types=draw(st.sampled_from([(), (), ("A100",), ("T4", "A30")])),
        nouse_gpu_uuids=draw(st.sampled_from([(), (), ("GPU-n0-0",)])),
        node_policy=draw(st.sampled_from([None, NodePolicy.BINPACK, NodePolicy.SPREAD])),
        gpu_policy=draw(st.sampled_from([None, GpuPolicy.BINPACK, GpuPolicy.SPREAD])),
    )


operations = st.lists(
    st.one_of(
        st.tuples(st.just("decide"), st.integers(0, 3), requests()),
        st.tuples(st.just("release"), st.integers(0, 30)),
        st.tuples(st.just("realise"), st.integers(0, 3), st.integers(0, 2**16)),
        st.tuples(st.just("adopt"), st.integers(0, 15), st.integers(0, 10**6)),
        st.tuples(st.just("cordon"), st.integers(0, 3), st.integers(0, 15)),
        st.tuples(st.just("forget"), st.integers(0, 15), st.integers(0, 7)),
        st.tuples(st.just("reshape"), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("health"), st.integers(0, 15), st.booleans()),
        st.tuples(st.just("fits"), requests()),
    ),
    max_size=25,
)


def check_invariants(engine):
    st_, tb = engine.state, engine.tables
    for row in range(st_.rows):
        if st_.g_kind[row] == S.MIG:
            inuse, idle = int(st_.g_inuse[row]), int(st_.g_idle[row])
            m = int(st_.g_model[row])
            assert int(tb.layout_model[inuse]) == m and int(tb.layout_model[idle]) == m
            assert int(tb.occupied[inuse]) & int(tb.occupied[idle]) == 0, "in-use and idle overlap"
            union = int(tb.slotset[inuse]) | int(tb.slotset[idle])
            assert union in tb.models[m].index, "realised layout breaks an instance cap"
            if engine.policy_name in ("fragmentation-aware", "first-fit", "best-fit", "static", "hami-legacy"):
                # placements keep a GPU inside an allowed geometry; only instances the agent
                # found there (adopted, placed by HAMi or by hand) may lie outside every one
                adopted = sum(1 << k for k in engine._pinned.get(row, {}))
                if int(tb.geo_ok[inuse]) == 0:
                    assert int(tb.geo_ok[tb.layout_id(m, adopted)]) == 0, "placements left every geometry"
        if st_.g_kind[row] != S.DEAD:  # the derived columns equal their formulas
            kernels = engine.kernels if engine.implementation == "reference" else None
            if kernels is not None:
                assert int(st_.g_usage[row]) == kernels._usage_pm(row, int(st_.g_inuse[row]),
                                                                   int(st_.g_used_mem[row]))
                if st_.g_kind[row] == S.CORE:
                    expected = (int(st_.g_slots[row]) * 1000 // max(int(st_.g_split[row]), 1)
                                + int(st_.g_used_mem[row]) * 1000 // max(int(st_.g_mem[row]), 1)
                                + int(st_.g_used_cores[row]) * 1000 // max(int(st_.g_cores[row]), 1))
                    assert int(st_.g_order[row]) == expected
        if st_.g_kind[row] == S.CORE:
            assert st_.g_slots[row] <= st_.g_split[row]
            assert st_.g_used_mem[row] <= st_.g_mem[row]
            assert st_.g_used_cores[row] <= st_.g_cores[row]


def realised(engine, gpu_uuid, profile, start, in_use=False, pod_uid=None):
    """An instance known by its placement, sized from the engine's table of the GPU's model."""
    t = engine.tables.models[int(engine.state.g_model[engine._rows[gpu_uuid]])]
    size = t.profiles[t.slots[t.slot_of(profile, start)][0]].memory_slices
    return RealisedInstance.expected(gpu_uuid, profile, Placement(start, size), in_use=in_use, pod_uid=pod_uid)


def adoption(engine, cluster, gpu_pick, layout_pick):
    """A node report: one MIG GPU holds busy instances at a legal layout of its model."""
    mig = [(name, g) for name, gpus in cluster for g in gpus if g.mode == GpuMode.MIG]
    if not mig:
        return cluster[0][0], []
    node, gpu = mig[gpu_pick % len(mig)]
    snap = engine.snapshot()
    t = engine.tables.models[int(engine.state.g_model[engine._rows[gpu.uuid]])]
    slotset = t.layouts[layout_pick % t.n_layouts]
    report = [realised(engine, gpu.uuid, t.profiles[t.slots[k][0]].name, t.slots[k][1], in_use=True,
                               pod_uid=f"adopted-{k}") for k in range(len(t.slots)) if slotset >> k & 1]
    for _name, gpus in cluster:
        if _name != node:
            continue
        for g in gpus:
            for profile, start in snap.get(g.uuid, {}).get("idle", []):
                report.append(realised(engine, g.uuid, profile, start, in_use=False))
    return node, report


def usage(engine):
    return {u: (v.get("in_use"), v.get("tasks"), v.get("used_mem"), v.get("used_cores"))
            for u, v in engine.snapshot().items()}


@given(cluster=clusters(), ops=operations, policy=st.sampled_from(POLICIES))
def test_compiled_and_reference_agree(cluster, ops, policy):
    engines = [Engine(policy=policy), ReferenceEngine(policy=policy)]
    assert engines[0].implementation == ("_kernels" if COMPILED else "reference")
    names = [name for name, _ in cluster]
    for engine in engines:
        for name, gpus in cluster:
            engine.upsert_node(name, gpus)
    pods: list[str] = []
    for step, op in enumerate(ops):
        results = []
        for engine in engines:
            if op[0] == "decide":
                node = names[op[1] % len(names)]
                before = usage(engine)
                uid = f"pod-{step}"
                out = engine.decide_and_reserve(uid, op[2], node)
                # release restores the exact prior in-use state, and re-deciding is identical
                if hasattr(out, "containers"):
                    engine.release(uid)
                    assert usage(engine) == before
                    again = engine.decide_and_reserve(uid, op[2], node)
                    assert engine.decide_and_reserve(uid, op[2], node) == again  # idempotent
                    out = again
                results.append(out)
            elif op[0] == "release":
                uid = pods[op[1] % len(pods)] if pods else "nobody"
                results.append(engine.release(uid))
            elif op[0] == "realise":
                # the agent destroys some idle instances and reports the rest
                node = names[op[1] % len(names)]
                snap = engine.snapshot()
                report = []
                bit = 0
                for _name, gpus in cluster:
                    if _name != node:
                        continue
                    for g in gpus:
                        for profile, start in snap.get(g.uuid, {}).get("idle", []):
                            if op[2] >> bit & 1:
                                report.append(realised(engine, g.uuid, profile, start, in_use=False))
                            bit += 1
                results.append(engine.set_realised(node, report))
            elif op[0] == "adopt":
                # the agent reports busy instances it found (any legal layout, often outside
                # every allowed geometry) on one GPU, plus the idle ones it still has
                results.append(engine.set_realised(*adoption(engine, cluster, op[1], op[2])))
            elif op[0] == "cordon":
                name, gpus = cluster[op[1] % len(cluster)]
                engine.set_cordoned(name, [g.uuid for i, g in enumerate(gpus) if op[2] >> i & 1])
                results.append(None)
            elif op[0] == "forget":  # the agent destroyed one idle instance
                all_gpus = [g.uuid for _n, gs in cluster for g in gs] or ["none"]
                uuid = all_gpus[op[1] % len(all_gpus)]
                idle = engine.snapshot().get(uuid, {}).get("idle", [])
                results.append(engine.forget_idle(uuid, *idle[op[2] % len(idle)]) if idle else None)
            elif op[0] == "reshape":  # a node's GPU list changes (one GPU replaced), or it leaves
                index = op[1] % len(cluster)
                name, gpus = cluster[index]
                if op[2] or len(gpus) <= 1:
                    engine.remove_node(name)
                    results.append(None)
                else:
                    replaced = [*gpus[:-1], GpuSpec(gpus[-1].uuid + "-r", gpus[-1].type, gpus[-1].mode,
                                                    gpus[-1].memory_mib, gpus[-1].split_count, index=gpus[-1].index)]
                    engine.upsert_node(name, replaced)
                    results.append(None)
            elif op[0] == "health":
                all_gpus = [g.uuid for _n, gs in cluster for g in gs]
                if all_gpus:
                    engine.set_health(all_gpus[op[1] % len(all_gpus)], op[2])
                results.append(None)
            else:
                ids = engine.node_ids([*names, "unknown-node"])
                fit, scores = engine.fit_and_score(op[1], ids)
                results.append((fit.codes.tolist(), fit.reasons.tolist(), scores.tolist()))
                # fits says yes exactly where a decision succeeds (checked on the reference only)
            check_invariants(engine)
        if op[0] == "reshape":
            index = op[1] % len(cluster)
            name, gpus = cluster[index]
            if op[2] or len(gpus) <= 1:
                cluster = [*cluster[:index], (name, []), *cluster[index + 1:]]
            else:
                last = gpus[-1]
                cluster = [*cluster[:index], (name, [*gpus[:-1], GpuSpec(last.uuid + "-r", last.type, last.mode,
                                                                      last.memory_mib, last.split_count,
                                                                      index=last.index)]),
                           *cluster[index + 1:]]
        assert results[0] == results[1], f"step {step} {op[0]}: {results[0]!r} != {results[1]!r}"
        assert engines[0].snapshot() == engines[1].snapshot()
        if op[0] == "decide" and hasattr(results[0], "containers"):
            pods.append(f"pod-{step}")


@given(cluster=clusters(), warm=st.lists(requests(), max_size=6), release=st.integers(0, 2**6),
       adopt=st.tuples(st.integers(0, 15), st.integers(0, 10**6)), request=requests(),
       policy=st.sampled_from(POLICIES), compiled=st.booleans())
def test_fits_agrees_with_decide(cluster, warm, release, adopt, request, policy, compiled):
    """fits says yes exactly where a decision succeeds, with idle instances (released pods),
    adopted out-of-geometry layouts and multi-container pods, under every policy."""
    engine = Engine(policy=policy) if compiled else ReferenceEngine(policy=policy)
    for name, gpus in cluster:
        engine.upsert_node(name, gpus)
    names = [name for name, _ in cluster]
    engine.set_realised(*adoption(engine, cluster, *adopt))
    for i, r in enumerate(warm):
        engine.decide_and_reserve(f"warm-{i}", r, names[i % len(names)])
    for i in range(len(warm)):
        if release >> i & 1:
            engine.release(f"warm-{i}")  # their MIG instances stay, idle
    fit = engine.fits(request, engine.node_ids(names))
    for j, name in enumerate(names):
        out = engine.decide_and_reserve("probe", request, name)
        assert hasattr(out, "containers") == bool(fit.codes[j] == 0) or not request.wants_gpus
        if hasattr(out, "containers"):
            engine.release("probe")
        else:
            assert int(out.reasons) != 0
            assert np.uint32(out.reasons) == fit.reasons[j]
