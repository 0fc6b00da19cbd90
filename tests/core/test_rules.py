"""One test per placement rule, on both kernel implementations."""

import pytest

from hami._core import Code, CorePick, Decision, Features, MigPick, Reason, Rejection
from hami.api.requests import ContainerRequest, GpuPolicy, Mode, NodePolicy, Request
from hami.devices.config import load_device_config
from tests.core.helpers import core_node, mig_node, realised, req


def in_use(engine, uuid):
    return sorted(engine.snapshot()[uuid]["in_use"])


def idle(engine, uuid):
    return sorted(engine.snapshot()[uuid]["idle"])


def only_pick(decision):
    assert isinstance(decision, Decision), decision
    (devices,) = decision.containers
    (pick,) = devices
    return pick


# -- memory rule (ARCHITECTURE §7) -------------------------------------------------------


def test_mig_memory_rule_picks_a_profile_at_least_as_large(make_engine):
    e = make_engine()
    (_gpu,) = mig_node(e, "n")
    pick = only_pick(e.decide_and_reserve("p", req(mem=20480), "n"))
    assert pick.profile in ("1g.20gb", "2g.20gb")  # nominal 20480 >= 20480
    pick = only_pick(e.decide_and_reserve("q", req(mem=20481), "n"))
    assert pick.profile in ("3g.40gb", "4g.40gb")


def test_whole_gpu_and_percentages_resolve_against_the_largest_profile(make_engine):
    e = make_engine()
    mig_node(e, "n", 3)
    assert only_pick(e.decide_and_reserve("full", req(pct=100), "n")).profile == "7g.80gb"
    assert only_pick(e.decide_and_reserve("half", req(pct=50), "n")).profile in ("3g.40gb", "4g.40gb")
    # 10 % of 81920 = 8192 MiB -> the 1g.10gb class
    assert only_pick(e.decide_and_reserve("tenth", req(pct=10), "n")).profile.startswith("1g.")


def test_more_memory_than_any_profile_is_unresolvable(make_engine):
    e = make_engine()
    mig_node(e, "n")
    out = e.decide_and_reserve("p", req(mem=90000), "n")
    assert isinstance(out, Rejection)
    assert out.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert out.reasons & Reason.MIG_PROFILE_TOO_SMALL


def test_config_memory_overrides_the_name(make_engine):
    seed = load_device_config({"nvidia": {"knownMigGeometries": [
        {"models": ["A100-SXM4-80GB"], "allowedGeometries": [[{"name": "7g.79gb", "memory": 80896, "count": 1}]]},
    ]}})
    e = make_engine(config=seed.nvidia)
    mig_node(e, "n")
    # 80896 (config memory of 7g via the 7g.79gb alias) holds 80000 but not 81000
    assert only_pick(e.decide_and_reserve("p", req(mem=80000), "n")).profile == "7g.80gb"
    e.release("p")
    assert isinstance(e.decide_and_reserve("q", req(mem=81000), "n"), Rejection)


# -- hami-core fit --------------------------------------------------------------------------


def test_core_split_count_limits_tasks(make_engine):
    e = make_engine()
    core_node(e, "n", 1, split=2)
    assert isinstance(e.decide_and_reserve("a", req(mem=1000, mode=Mode.HAMI_CORE), "n"), Decision)
    assert isinstance(e.decide_and_reserve("b", req(mem=1000, mode=Mode.HAMI_CORE), "n"), Decision)
    out = e.decide_and_reserve("c", req(mem=1000, mode=Mode.HAMI_CORE), "n")
    assert isinstance(out, Rejection) and out.reasons & Reason.SLOTS_EXHAUSTED
    assert out.code == Code.UNSCHEDULABLE


def test_core_memory_and_percentage(make_engine):
    e = make_engine()
    (gpu,) = core_node(e, "n", 1, memory=20000)
    pick = only_pick(e.decide_and_reserve("a", req(pct=25, mode=Mode.HAMI_CORE), "n"))
    assert pick == CorePick(gpu, 5000, 0)
    assert isinstance(e.decide_and_reserve("b", req(mem=15000, mode=Mode.HAMI_CORE), "n"), Decision)
    out = e.decide_and_reserve("c", req(mem=1, mode=Mode.HAMI_CORE), "n")
    assert out.reasons & Reason.INSUFFICIENT_MEMORY
    big = e.decide_and_reserve("d", req(mem=30000, mode=Mode.HAMI_CORE), "n")
    assert big.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE and big.reasons & Reason.MEMORY_EXCEEDS_GPU


def test_core_cores_and_exclusive(make_engine):
    e = make_engine()
    core_node(e, "n", 1)
    assert isinstance(e.decide_and_reserve("a", req(mem=100, cores=60, mode=Mode.HAMI_CORE), "n"), Decision)
    out = e.decide_and_reserve("b", req(mem=100, cores=50, mode=Mode.HAMI_CORE), "n")
    assert out.reasons & Reason.INSUFFICIENT_CORES
    out = e.decide_and_reserve("x", req(mem=100, cores=100, mode=Mode.HAMI_CORE), "n")
    assert isinstance(out, Rejection)  # exclusive needs an idle GPU
    e.release("a")
    assert isinstance(e.decide_and_reserve("x", req(mem=100, cores=100, mode=Mode.HAMI_CORE), "n"), Decision)
    out = e.decide_and_reserve("y", req(mem=100, mode=Mode.HAMI_CORE), "n")
    assert out.reasons & Reason.EXCLUSIVE_CONFLICT  # all cores taken by the exclusive task


def test_core_devices_of_one_container_are_distinct_gpus(make_engine):
    e = make_engine()
    gpus = core_node(e, "n", 2)
    d = e.decide_and_reserve("p", req(mem=1000, count=2, mode=Mode.HAMI_CORE), "n")
    assert sorted(p.gpu_uuid for p in d.containers[0]) == gpus
    out = e.decide_and_reserve("q", req(mem=1000, count=3, mode=Mode.HAMI_CORE), "n")
    assert out.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE and out.reasons & Reason.NODE_TOO_SMALL


# -- MIG fit --------------------------------------------------------------------------------


def test_several_instances_of_one_container_share_a_gpu(make_engine):
    e = make_engine()
    (gpu,) = mig_node(e, "n", 1)
    d = e.decide_and_reserve("p", req(mem=10240, count=2), "n")
    picks = d.containers[0]
    assert len(picks) == 2 and all(p.gpu_uuid == gpu for p in picks)
    assert len({p.start for p in picks}) == 2


def test_instances_spill_to_other_gpus(make_engine):
    e = make_engine()
    gpus = mig_node(e, "n", 2)
    d = e.decide_and_reserve("p", req(pct=100, count=2), "n")
    assert sorted(p.gpu_uuid for p in d.containers[0]) == gpus
    assert all(p.profile == "7g.80gb" for p in d.containers[0])


def test_release_makes_the_instance_idle_and_it_is_reused(make_engine):
    e = make_engine()
    (gpu,) = mig_node(e, "n")
    first = only_pick(e.decide_and_reserve("p", req(mem=20000), "n"))
    e.release("p")
    assert in_use(e, gpu) == [] and idle(e, gpu) == [(first.profile, first.start)]
    again = only_pick(e.decide_and_reserve("q", req(mem=20000), "n"))
    assert (again.profile, again.start) == (first.profile, first.start)
    assert again.reuse is not None and again.destroy == ()


MIG_A = "MIG-00000000-0000-0000-0000-00000000000a"
MIG_B = "MIG-00000000-0000-0000-0000-00000000000b"


def test_idle_instances_are_destroyed_only_when_their_slices_are_needed(make_engine):
    e = make_engine()
    (gpu,) = mig_node(e, "n")
    e.set_realised("n", [realised(gpu, "1g.10gb", 0, in_use=False, mig_uuid=MIG_A),
                         realised(gpu, "1g.10gb", 1, in_use=False, mig_uuid=MIG_B)])
    small = only_pick(e.decide_and_reserve("s", req(mem=20000), "n"))
    assert small.destroy == ()  # placed on free slices, idle ones kept
    assert len(idle(e, gpu)) == 2
    whole = e.decide_and_reserve("w", req(pct=100), "n")
    assert isinstance(whole, Rejection)  # the 20 GB instance is in use
    e.release("s")
    whole = only_pick(e.decide_and_reserve("w", req(pct=100), "n"))
    assert {i.mig_uuid for i in whole.destroy} >= {MIG_A, MIG_B}
    assert idle(e, gpu) == []


def test_layouts_change_around_running_instances(make_engine):
    """1g and 3g tasks share a GPU out of the box (default geometries include 3g+1g×4)."""
    e = make_engine()
    (gpu,) = mig_node(e, "n")
    one = only_pick(e.decide_and_reserve("one", req(mem=10240), "n"))
    three = only_pick(e.decide_and_reserve("three", req(mem=40000), "n"))
    assert three.gpu_uuid == gpu and three.profile == "3g.40gb"
    assert (one.profile, one.start) in [(p, s) for p, s in in_use(e, gpu)]  # never moved


def test_seed_geometries_alone_forbid_mixing(make_engine):
    seed = load_device_config({"nvidia": {"knownMigGeometries": [
        {"models": ["A100-SXM4-80GB"], "allowedGeometries": [
            [{"name": "1g.10gb", "memory": 10240, "count": 7}],
            [{"name": "3g.40gb", "memory": 40960, "count": 2}],
        ]},
    ]}})
    e = make_engine(config=seed.nvidia)
    mig_node(e, "n")
    assert only_pick(e.decide_and_reserve("one", req(mem=10240), "n")).profile == "1g.10gb"
    out = e.decide_and_reserve("three", req(mem=40000), "n")
    assert isinstance(out, Rejection) and out.reasons & Reason.MIG_NO_PLACEMENT


# -- unified pool, filters, health ----------------------------------------------------------


def test_modeless_request_prefers_mig_within_a_node(make_engine):
    e = make_engine()
    e.upsert_node("n", [])
    from hami._core import GpuMode, GpuSpec

    e.upsert_node("n", [GpuSpec("GPU-c", "NVIDIA A10", GpuMode.HAMI_CORE, 23028, index=0),
                        GpuSpec("GPU-m", "NVIDIA A100-SXM4-80GB", GpuMode.MIG, 81920, index=1)])
    assert isinstance(only_pick(e.decide_and_reserve("p", req(mem=5000), "n")), MigPick)
    assert isinstance(only_pick(e.decide_and_reserve("q", req(mem=5000, mode=Mode.HAMI_CORE), "n")), CorePick)
    assert isinstance(only_pick(e.decide_and_reserve("r", req(mem=5000, mode=Mode.MIG), "n")), MigPick)


def test_mode_type_uuid_filters(make_engine):
    e = make_engine()
    mig_node(e, "m")
    (core,) = core_node(e, "c")
    ids = e.node_ids(["m", "c"])
    fit = e.fits(req(mem=1000, mode=Mode.HAMI_CORE), ids)
    assert fit.codes.tolist() == [Code.UNSCHEDULABLE_AND_UNRESOLVABLE, Code.SUCCESS]
    assert fit.reasons[0] & Reason.MODE_MISMATCH
    fit = e.fits(req(mem=1000, use_gpu_types=("a100",)), ids)
    assert fit.codes.tolist() == [Code.SUCCESS, Code.UNSCHEDULABLE_AND_UNRESOLVABLE]
    assert fit.reasons[1] & Reason.TYPE_MISMATCH
    fit = e.fits(req(mem=1000, nouse_gpu_uuids=(core,)), ids)
    assert fit.codes[1] == Code.UNSCHEDULABLE_AND_UNRESOLVABLE and fit.reasons[1] & Reason.UUID_MISMATCH


def test_unhealthy_and_cordoned_gpus_are_skipped(make_engine):
    e = make_engine()
    a, b = core_node(e, "n", 2)
    e.set_health(a, False)
    e.set_cordoned("n", [b])
    fit = e.fits(req(mem=1000), e.node_ids(["n"]))
    assert fit.codes[0] == Code.UNSCHEDULABLE
    assert fit.reasons[0] & Reason.UNHEALTHY and fit.reasons[0] & Reason.CORDONED
    e.set_cordoned("n", [])
    assert only_pick(e.decide_and_reserve("p", req(mem=1000), "n")).gpu_uuid == b


def test_unknown_node_has_no_gpus(make_engine):
    e = make_engine()
    fit = e.fits(req(mem=1), e.node_ids(["ghost"]))
    assert fit.codes[0] == Code.UNSCHEDULABLE_AND_UNRESOLVABLE and fit.reasons[0] == Reason.NO_GPUS


# -- binpack / spread -------------------------------------------------------------------------


def test_gpu_binpack_and_spread(make_engine):
    e = make_engine()
    _a, _b = core_node(e, "n", 2)
    e.decide_and_reserve("first", req(mem=1000, mode=Mode.HAMI_CORE), "n")
    used = only_pick(e.reservation("first")).gpu_uuid
    packed = only_pick(e.decide_and_reserve("pack", req(mem=1000, gpu_policy=GpuPolicy.BINPACK), "n"))
    spread = only_pick(e.decide_and_reserve("spread", req(mem=1000, gpu_policy=GpuPolicy.SPREAD), "n"))
    assert packed.gpu_uuid == used
    assert spread.gpu_uuid != used


def test_node_binpack_and_spread(make_engine):
    e = make_engine()
    core_node(e, "busy", 1)
    core_node(e, "empty", 1)
    e.decide_and_reserve("x", req(mem=10000, mode=Mode.HAMI_CORE), "busy")
    ids = e.node_ids(["busy", "empty"])
    pack = e.scores(req(mem=1000, node_policy=NodePolicy.BINPACK), ids)
    spread = e.scores(req(mem=1000, node_policy=NodePolicy.SPREAD), ids)
    assert pack[0] > pack[1] and spread[0] < spread[1]
    assert all(0 <= s <= 100 for s in [*pack, *spread])


# -- policies -----------------------------------------------------------------------------------


def test_fragmentation_aware_keeps_room_for_big_instances(make_engine):
    """After a 3g, a 1g goes beside it rather than breaking the other half."""
    e = make_engine()
    (_gpu,) = mig_node(e, "n")
    three = only_pick(e.decide_and_reserve("3", req(mem=40000), "n"))
    one = only_pick(e.decide_and_reserve("1", req(mem=10240), "n"))
    half = range(three.start, three.start + 4)
    assert one.start not in half
    # the 1g did not land where it blocks the second 3g slot when a smaller hole exists
    assert isinstance(e.decide_and_reserve("2g", req(mem=20480), "n"), Decision)


def test_hami_v210_places_1g_from_the_high_end(make_engine):
    e = make_engine(policy="hami-v2.10")
    mig_node(e, "n")
    pick = only_pick(e.decide_and_reserve("p", req(mem=9000), "n"))
    assert (pick.profile, pick.start) == ("1g.10gb", 6)
    pick = only_pick(e.decide_and_reserve("q", req(mem=19000), "n"))
    assert (pick.profile, pick.start) == ("2g.20gb", 0)


def test_hami_legacy_freezes_a_busy_gpu_in_its_geometry(make_engine):
    e = make_engine(policy="hami-legacy")
    mig_node(e, "n")
    assert only_pick(e.decide_and_reserve("p", req(mem=9000), "n")).profile == "1g.10gb"
    out = e.decide_and_reserve("q", req(mem=40000), "n")
    assert isinstance(out, Rejection)  # locked in 7×1g while the 1g runs
    e.release("p")
    assert only_pick(e.decide_and_reserve("q", req(mem=40000), "n")).profile == "3g.40gb"


def test_first_fit_takes_the_first_gpu(make_engine):
    e = make_engine(policy="first-fit")
    a, _b = mig_node(e, "n", 2)
    e.decide_and_reserve("x", req(mem=40000), "n")
    assert only_pick(e.reservation("x")).gpu_uuid == a
    assert only_pick(e.decide_and_reserve("y", req(mem=10240, gpu_policy=GpuPolicy.SPREAD), "n")).gpu_uuid == a


def test_best_fit_takes_the_tightest_gpu(make_engine):
    e = make_engine(policy="best-fit")
    _a, _b = mig_node(e, "n", 2)
    e.decide_and_reserve("x", req(mem=40000), "n")  # one GPU has 3 free compute slices left... or 4
    busy = only_pick(e.reservation("x")).gpu_uuid
    pick = only_pick(e.decide_and_reserve("y", req(mem=10240), "n"))
    assert pick.gpu_uuid == busy


def test_static_uses_only_the_balanced_layout(make_engine):
    e = make_engine(policy="static")
    mig_node(e, "n")
    profiles = [only_pick(e.decide_and_reserve(f"p{i}", req(mem=10240), "n")).profile for i in range(4)]
    assert sorted(profiles) == ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"]
    assert isinstance(e.decide_and_reserve("p5", req(mem=10240), "n"), Rejection)


def test_unknown_policy_is_a_startup_error(make_engine):
    with pytest.raises(ValueError, match="unknown placement policy"):
        make_engine(policy="magic")


# -- decisions: idempotence, assume, realised ----------------------------------------------------


def test_decide_is_idempotent_and_release_is_safe(make_engine):
    e = make_engine()
    mig_node(e, "n")
    d1 = e.decide_and_reserve("p", req(mem=10240), "n")
    assert e.decide_and_reserve("p", req(mem=10240), "n") == d1
    assert e.release("p") is True
    assert e.release("p") is False
    assert e.release("never") is False


def test_assume_loads_decisions_and_reports_conflicts(make_engine):
    e = make_engine()
    (gpu,) = mig_node(e, "n")
    d = Decision("p", "n", ((MigPick(gpu, "3g.40gb", 0, 4),),))
    assert e.assume("p", d) == []
    assert in_use(e, gpu) == [("3g.40gb", 0)]
    clash = Decision("q", "n", ((MigPick(gpu, "4g.40gb", 0, 4),),))
    conflicts = e.assume("q", clash)
    assert len(conflicts) == 1 and "overlaps" in conflicts[0].detail
    assert in_use(e, gpu) == [("3g.40gb", 0)]  # nothing double-booked


def test_realised_busy_instances_block_and_are_adopted(make_engine):
    e = make_engine()
    (gpu,) = mig_node(e, "n")
    e.set_realised("n", [realised(gpu, "3g.40gb", 4, in_use=True, pod_uid="old")])
    assert in_use(e, gpu) == [("3g.40gb", 4)]
    assert isinstance(e.decide_and_reserve("big", req(pct=100), "n"), Rejection)
    # the decision for that pod arrives later: the pinned instance becomes its reservation
    assert e.assume("old", Decision("old", "n", ((MigPick(gpu, "3g.40gb", 4, 4),),))) == []
    e.release("old")
    assert in_use(e, gpu) == []


def test_features_are_validated(make_engine):
    with pytest.raises(ValueError):
        make_engine(features=Features(default_gpu_policy="mutex"))


def test_request_without_gpus_reserves_nothing(make_engine):
    e = make_engine()
    mig_node(e, "n")
    d = e.decide_and_reserve("p", Request((ContainerRequest("c", 0, False, 0),)), "n")
    assert d.containers == ((),)


def test_compiled_kernels_are_loaded_in_ci():
    """CI must exercise the Cython engine, not silently fall back to the twin."""
    import os

    from hami._core import COMPILED, Engine

    if os.environ.get("CI") or os.environ.get("HAMI_REQUIRE_COMPILED"):
        assert COMPILED, "the compiled kernels did not import; run `pip install -e .` to build them"
    assert Engine().implementation == ("_kernels" if COMPILED else "reference")
