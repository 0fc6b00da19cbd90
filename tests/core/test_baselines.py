"""Packing round 2: the HAMi baselines behave as HAMi does, best-fit takes the smallest adequate
profile, and node scores keep the engine's first choice on kube-scheduler's 0–10 scale.

Each case is checked by hand against hami-behaviour.md (§2.3, §3.3, §3.4, §3.5) and failed
before the change it guards (both kernels).
"""

import numpy as np
import pytest

from hami._core import Decision, Features, Rejection
from hami._core.tables import PolicyTables
from hami.api.requests import GpuPolicy, Mode
from hami.devices import geometry, naming
from hami.devices.config import load_device_config
from tests.core.helpers import mig_node, realised, req

A100 = naming.find_model("A100-SXM4-80GB")


def pick(decision):
    assert isinstance(decision, Decision), decision
    ((p,),) = [d for d in decision.containers if d]
    return p


def in_use(engine, uuid):
    return sorted(engine.snapshot()[uuid]["in_use"])


def mig(mem=0, pct=0):
    return req(mem=mem, pct=pct, mode=Mode.MIG)


# -- hami-legacy: the template a GPU was cut to, walked in template order --------------------


def test_legacy_defaults_are_hamis_v28_templates_in_order():
    templates = geometry.hami_templates(A100)
    assert [t.entries for t in templates] == [
        (("1g.10gb", 7, 9728),),
        (("1g.10gb", 1, 9728), ("2g.20gb", 3, 19968)),
        (("3g.40gb", 2, 40192),),
        (("7g.80gb", 1, 80640),),
    ]


def test_legacy_keeps_the_template_a_busy_gpu_was_cut_to(make_engine):
    """The issue's case: a GPU cut 1g + 2g×3 whose 2g pods ended runs only 1g@6. HAMi keeps
    the template until the GPU is idle, so a 15 GB pod still gets a 2g; re-deriving the
    template from the busy instances (1g×7, the first holding 1g@6) refused it."""
    e = make_engine("hami-legacy")
    (gpu,) = mig_node(e, "n")
    assert pick(e.decide_and_reserve("a", mig(15000), "n")).profile == "2g.20gb"
    one = pick(e.decide_and_reserve("b", mig(5000), "n"))
    assert (one.profile, one.start) == ("1g.10gb", 6)  # the template's 1g
    e.release("a")
    assert in_use(e, gpu) == [("1g.10gb", 6)]
    again = pick(e.decide_and_reserve("c", mig(15000), "n"))
    assert again.profile == "2g.20gb"
    # and once the GPU is idle it takes the first template that holds the next request
    e.release("b")
    e.release("c")
    assert pick(e.decide_and_reserve("d", mig(5000), "n")).profile == "1g.10gb"
    assert isinstance(e.decide_and_reserve("e", mig(15000), "n"), Rejection)  # cut to 1g×7 now


def test_legacy_takes_the_first_free_slot_in_template_order(make_engine):
    """Within the template HAMi walks the entries as written: with a config listing 2g×3 before
    the 1g, a 5 GB pod on a GPU cut to that template takes a 2g first (the smallest profile
    first took the 1g)."""
    config = load_device_config({"nvidia": {"knownMigGeometries": [
        {"models": ["A100-SXM4-80GB"], "allowedGeometries": [
            [{"name": "2g.20gb", "memory": 19968, "count": 3}, {"name": "1g.10gb", "memory": 9728, "count": 1}],
            [{"name": "7g.79gb", "memory": 80896, "count": 1}],
        ]},
    ]}}).nvidia
    e = make_engine("hami-legacy", config=config)
    mig_node(e, "n")
    first = pick(e.decide_and_reserve("a", mig(5000), "n"))
    second = pick(e.decide_and_reserve("b", mig(5000), "n"))
    assert [(p.profile, p.start) for p in (first, second)] == [("2g.20gb", 0), ("2g.20gb", 2)]


def test_a_ten_gb_pod_goes_past_hamis_1g(make_engine):
    """HAMi matches 10240 MiB against 1g.10gb's 9728 MiB (NVML's size): it does not fit, so on
    a GPU cut 1g + 2g×3 the pod takes a 2g; with the nominal rule it took the 1g."""
    e = make_engine("hami-legacy")
    mig_node(e, "n")
    pick(e.decide_and_reserve("a", mig(15000), "n"))  # cuts the GPU 1g + 2g×3
    ten = pick(e.decide_and_reserve("b", mig(10240), "n"))
    assert ten.profile == "2g.20gb"


# -- HAMi's memory rule -------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["hami-v2.10", "hami-legacy"])
def test_hami_baselines_match_nvml_memory(make_engine, policy):
    e = make_engine(policy)
    for name in ("a", "b", "c"):
        mig_node(e, name)
    assert pick(e.decide_and_reserve("a", mig(9728), "a")).profile == "1g.10gb"
    assert pick(e.decide_and_reserve("b", mig(10240), "b")).profile == "2g.20gb"
    # a whole GPU resolves to 100 % of the card's 81920 MiB: more than 7g's 80640
    whole = e.decide_and_reserve("c", mig(pct=100), "c")
    assert isinstance(whole, Rejection) and "largest MIG profile" in whole.message


@pytest.mark.parametrize(("policy", "features"), [
    ("hami-v2.10", Features(hami_memory=False)),  # HAMi's placement on our rule: isolates placement
    ("first-fit", None),
])
def test_the_nominal_rule(make_engine, policy, features):
    e = make_engine(policy, features=features)
    mig_node(e, "a")
    mig_node(e, "b")
    assert pick(e.decide_and_reserve("a", mig(10240), "a")).profile == "1g.10gb"
    assert pick(e.decide_and_reserve("b", mig(pct=100), "b")).profile == "7g.80gb"


# -- HAMi's default GPU policy is spread ----------------------------------------------------------


@pytest.mark.parametrize("policy", ["hami-v2.10", "hami-legacy"])
def test_hami_baselines_spread_over_gpus_by_default(make_engine, policy):
    e = make_engine(policy)
    a, b = mig_node(e, "n", 2)
    first = pick(e.decide_and_reserve("a", mig(5000), "n")).gpu_uuid
    second = pick(e.decide_and_reserve("b", mig(5000), "n")).gpu_uuid
    assert {first, second} == {a, b}  # the least-used GPU first
    # binpack stays selectable: as the engine's default, or per pod
    e2 = make_engine(policy, features=Features(default_gpu_policy="binpack"))
    mig_node(e2, "n", 2)
    one = pick(e2.decide_and_reserve("a", mig(5000), "n")).gpu_uuid
    assert pick(e2.decide_and_reserve("b", mig(5000), "n")).gpu_uuid == one
    e3 = make_engine(policy)
    mig_node(e3, "n", 2)
    bp = req(mem=5000, mode=Mode.MIG, gpu_policy=GpuPolicy.BINPACK)
    one = pick(e3.decide_and_reserve("a", bp, "n")).gpu_uuid
    assert pick(e3.decide_and_reserve("b", bp, "n")).gpu_uuid == one


def test_our_default_still_fills_gpus(make_engine):
    e = make_engine()
    mig_node(e, "n", 2)
    one = pick(e.decide_and_reserve("a", mig(5000), "n")).gpu_uuid
    assert pick(e.decide_and_reserve("b", mig(5000), "n")).gpu_uuid == one


# -- best-fit: the smallest adequate profile, then the tightest GPU ---------------------------------


def test_best_fit_does_not_upsize_to_the_tighter_gpu(make_engine):
    """GPU A runs 3g@0 + 1g.20gb@4, where a 10 GB request can only take 1g.20gb@6; GPU B is
    empty. Compute cost tied (1 slice either way) and the tighter GPU won, so the 10 GB pod
    got a 1g.20gb; best-fit means the smallest adequate profile first: 1g.10gb on B."""
    e = make_engine("best-fit")
    a, b = mig_node(e, "n", 2)
    e.set_realised("n", [realised(a, "3g.40gb", 0, True, "x"), realised(a, "1g.20gb", 4, True, "y")])
    ten = pick(e.decide_and_reserve("p", mig(10240), "n"))
    assert (ten.gpu_uuid, ten.profile) == (b, "1g.10gb")


# -- node scores on kube-scheduler's 0–10 scale ---------------------------------------------------


@pytest.mark.parametrize("policy", ["fragmentation-aware", "best-fit", "first-fit", "hami-v2.10"])
def test_the_engines_first_choice_alone_keeps_10_on_the_extender_scale(make_engine, policy):
    e = make_engine(policy)
    names = [f"n{i}" for i in range(6)]
    for name in names:
        mig_node(e, name)
    e.decide_and_reserve("busy", mig(40000), "n3")
    ids = e.node_ids(names)
    fit, scores = e.fit_and_score(mig(10240), ids)
    assert fit.ok().all()
    ten = (scores * 10 + 50) // 100
    assert (ten == 10).sum() == 1
    assert scores.max() == 100 and np.sort(scores)[-2] <= 90
    chosen = names[int(np.argmax(scores))]
    # the choice is the engine's: deciding there places the request where fits planned it
    assert isinstance(e.decide_and_reserve("p", mig(10240), chosen), Decision)


def test_fragmentation_aware_prefers_the_hole_beside_running_instances_across_nodes(make_engine):
    e = make_engine()
    for name in ("a", "b"):
        mig_node(e, name)
    e.decide_and_reserve("three", mig(40000), "b")  # b's GPU runs a 3g: a 1g fits beside it
    scores = e.scores(mig(10240), e.node_ids(["a", "b"]))
    assert scores[1] == 100 and scores[0] < 90  # breaking a's empty GPU costs its 7g


def test_legacy_tables_cover_every_tagged_layout():
    """Every template-tagged id has its slots, and add/remove keep the template until idle."""
    pt = PolicyTables(None, "hami-legacy")
    m = pt.add_model(A100)
    t = pt.models[m]
    assert t.n_ids == t.n_layouts + len(t.tagged) and t.tagged
    for i, (g, slotset) in enumerate(t.tagged):
        tagged = int(pt.offset[m]) + t.n_layouts + i
        assert int(pt.slotset[tagged]) == slotset
        for k in range(len(t.slots)):
            if slotset >> k & 1:
                rest = int(pt.remove[tagged, k])
                assert int(pt.slotset[rest]) == slotset & ~(1 << k)
                if rest != int(pt.offset[m]):  # still busy: still template g
                    assert int(pt.cand[rest, 0]) & ~t.realisations[g][0] == 0
