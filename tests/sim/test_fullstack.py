"""`hami simulate online --full-stack`: the online protocol through the API server, `hami scheduler`
and a node agent per node makes the same decision as the engine-level run, pod by pod."""

from __future__ import annotations

import numpy as np
import pytest

from hami import cli
from hami.api.requests import ContainerRequest, Mode, Request
from hami.sim import fullstack
from hami.sim.fullstack import Arrival, ReplayedTieBreak, compare_online, engine_run, events


def test_a_small_full_stack_run_agrees_with_the_engine_level_run_pod_by_pod(tmp_path) -> None:
    result = compare_online(mix="uniform", load=1.6, seed=2, arrivals=50, nodes=2, gpus_per_node=2,
                            workdir=tmp_path / "stack")
    assert len(result.stack) == len(result.engine) == 50
    assert result.mismatches == [], [(e.text(), s.text()) for e, s in result.mismatches[:5]]
    accepted = result.accepted
    assert 0 < accepted < 50  # the load rejects some: both runs reject the same ones
    profiles = {d for o in result.stack for _g, d in o.devices}
    assert len({p.split("@")[0] for p in profiles}) >= 3  # several profiles, not one size
    assert sorted(result.node_order) == ["node-0", "node-1"]
    binds = result.calls[("POST", "pods/binding")]
    assert binds == accepted  # one Binding per placed pod, written by our scheduler
    assert not (tmp_path / "stack").exists()


def test_departures_come_in_batches_before_the_next_arrival() -> None:
    rq = Request((ContainerRequest("main", 0, False, 1, memory_mib=10240),), mode=Mode.MIG)
    arrivals = [Arrival(t, f"p{i}", rq, life) for i, (t, life) in enumerate([(0, 5), (1, 1.5), (2, 0.1), (10, 1)])]
    got = list(events(arrivals, lambda pod: pod != "p2"))
    assert [(k, v if k == "depart" else v.pod) for k, v in got] == [
        ("arrive", "p0"), ("arrive", "p1"), ("arrive", "p2"), ("depart", ["p1", "p0"]), ("arrive", "p3")]


def test_the_replayed_tie_break_is_kube_schedulers_seeded_choice() -> None:
    import random

    names = ["node-0", "node-1", "node-2", "node-3"]
    tie = ReplayedTieBreak(5)
    rng = random.Random(5)
    ok = np.array([True, True, False, True])
    scores = np.array([90, 94, 100, 86])  # extender scale: 9, 9, -, 9: three tied
    assert tie.choose(names, ok, scores) == rng.choice(["node-0", "node-1", "node-3"])
    assert tie.choose(names, np.array([False, False, True, False]), scores) == "node-2"  # no prioritize, no draw
    assert tie.choose(names, ok, np.array([100, 90, 0, 90])) == rng.choice(["node-0"])


def test_engine_run_keeps_released_instances_for_reuse() -> None:
    rq = Request((ContainerRequest("main", 0, False, 1, memory_mib=40960),), mode=Mode.MIG)
    arrivals = [Arrival(0, "a", rq, 1.0), Arrival(2, "b", rq, 1.0)]
    a, b = engine_run(arrivals, ["node-0"], 1, "A100-SXM4-80GB", "fragmentation-aware", 1)
    assert a.accepted and b.accepted and a.devices == b.devices  # b reuses a's idle instance


@pytest.mark.parametrize(("argv", "message"), [
    (["--seeds", "abc"], "abc"),
    (["--load", "-1"], "-1"),
    (["--model", "A10"], "A10"),
    (["--policies", "nope"], "nope"),
])
def test_cli_full_stack_rejects_bad_arguments_before_starting(capsys, argv, message) -> None:
    assert cli.main(["simulate", "online", "--full-stack", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hami simulate:") and message in err and err.count("\n") == 1


def test_full_stack_defaults_are_small() -> None:
    assert (fullstack.FULL_STACK_ARRIVALS, fullstack.FULL_STACK_NODES) == (300, 4)


def test_api_calls_are_counted_by_method_and_resource() -> None:
    calls = fullstack.ApiCalls()
    for method, path, code in [
        ("POST", "/api/v1/namespaces/default/pods", 201),
        ("POST", "/api/v1/namespaces/default/pods/p/binding", 201),
        ("PATCH", "/api/v1/namespaces/default/pods/p", 200),
        ("PATCH", "/api/v1/nodes/node-0", 409),
        ("GET", "/api/v1/nodes/node-0", 200),
        ("GET", "/api/v1/pods?watch=true&resourceVersion=5", 200),
        ("PATCH", "/api/v1/namespaces/default/pods/p/status", 200),
    ]:
        calls.record(method, path, code)
    assert calls.snapshot() == {("POST", "pods"): 1, ("POST", "pods/binding"): 1, ("PATCH", "pods"): 1,
                                ("PATCH", "nodes"): 1, ("PATCH", "nodes (409 conflict)"): 1, ("GET", "nodes"): 1,
                                ("WATCH", "pods"): 1, ("PATCH", "pods/status"): 1}
    assert calls.total() == 7
