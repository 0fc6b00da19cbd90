"""`hami simulate`: trace loading and mapping, metrics, baselines on hand-checked cases,
determinism, and the CLI end to end on a small fixture."""

import math
from pathlib import Path

import numpy as np
import pytest

from hami import cli
from hami.sim import fillup, online, runner, simulate, traces
from hami.sim.runner import Cluster, Counters

FIX = Path(__file__).parent / "fixtures"


# -- traces --------------------------------------------------------------------------------


def test_loader_skips_cpu_only_pods_and_gpu_less_nodes():
    assert traces.load_nodes(FIX / "nodes.csv") == [traces.TraceNode("n0", 2), traces.TraceNode("n1", 1)]
    pods = traces.load_pods(FIX / "pods.csv")
    assert [p.name for p in pods] == ["p0", "p1", "p3", "p4"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad-milli.csv", "bad-milli.csv:3: column 'gpu_milli' must be an integer, got 'abc'"),
        ("bad-columns.csv", "bad-columns.csv:1: missing column(s) gpu_milli"),
        ("bad-multi.csv", "bad-multi.csv:2: a 2-GPU pod must ask for whole GPUs"),
        ("missing.csv", "missing.csv: no such trace file"),
    ],
)
def test_malformed_traces_name_file_and_line(name, message):
    with pytest.raises(traces.TraceError) as err:
        traces.load_pods(FIX / name)
    assert message in str(err.value)


def test_memory_ceil_mapping():
    half = traces.to_request(traces.TracePod("p", 1, 500), 81920)
    assert half.containers[0].memory_mib == 40960 and half.containers[0].count == 1
    odd = traces.to_request(traces.TracePod("p", 1, 123), 81920)
    assert odd.containers[0].memory_mib == math.ceil(123 * 81920 / 1000)
    multi = traces.to_request(traces.TracePod("p", 4, 1000), 81920)
    assert multi.containers[0].count == 4 and multi.containers[0].memory_percent == 100


def test_demand_in_compute_slices_follows_the_memory_rule():
    cluster = Cluster("fragmentation-aware", [1], "A100-SXM4-80GB", seed=1)
    slices = {milli: cluster.slices(traces.to_request(traces.TracePod("p", 1, milli), 81920))
              for milli in (100, 200, 400, 500, 600, 1000)}
    # 8 GB → 1g.10gb, 16 GB → 1g.20gb, 32/40 GB → 3g.40gb, 48 GB and whole → 7g
    assert slices == {100: 1, 200: 1, 400: 3, 500: 3, 600: 7, 1000: 7}
    assert cluster.slices(traces.to_request(traces.TracePod("p", 2, 1000), 81920)) == 14


# -- metrics -----------------------------------------------------------------------------------


def test_allocation_at_and_first_failure_point():
    r = fillup.FillupResult("x", 1, 100, np.array([10, 50, 90, 100, 120]), np.array([10, 50, 88, 88, 95]),
                            2, Counters())
    assert r.allocation_at(50) == 50.0
    assert r.allocation_at(95) == 88.0  # first arrival at or past 95 %
    assert r.allocation_at(130) == 95.0  # past the end: the last point
    assert r.first_failure_point() == 90.0


def test_best_is_within_the_larger_of_02_and_one_sd():
    assert simulate.best_policies({"a": 98.0, "b": 97.85, "c": 97.7}, {"a": 0.05}) == {"a", "b"}
    assert simulate.best_policies({"a": 98.0, "b": 97.5}, {"a": 0.6}) == {"a", "b"}


def test_seed_and_policy_parsing():
    assert simulate.parse_seeds("42-44,50") == [42, 43, 44, 50]
    with pytest.raises(ValueError, match="unknown policy"):
        simulate.parse_policies("first-fit,magic")
    assert simulate.parse_policies("all")[0] == "fragmentation-aware"


# -- protocols on hand-checked cases --------------------------------------------------------------


def test_fillup_on_two_gpus_places_what_fits_and_drops_the_rest():
    nodes = [traces.TraceNode("n", 2)]
    pods = [traces.TracePod("half", 1, 500)]  # 40 GB → 3g.40gb: two per GPU
    result = fillup.run_fillup("fragmentation-aware", nodes, pods, seed=1)
    assert result.capacity == 14
    assert result.counters.placed == 4 and result.allocated[-1] == 12  # 6 of 7 slices a GPU
    assert result.share_allocated == 100.0  # four half-GPU pods on two GPUs
    assert result.counters.rejected >= 1 and result.counters.causes["capacity"] >= 1
    assert result.counters.moves == 0


def test_static_cannot_host_whole_gpus():
    nodes = [traces.TraceNode("n", 1)]
    result = fillup.run_fillup("static", nodes, [traces.TracePod("whole", 1, 1000)], seed=1)
    assert result.counters.placed == 0 and result.counters.causes["geometry"] >= 1


def test_fillup_is_deterministic_per_seed():
    nodes = traces.load_nodes(FIX / "nodes.csv")
    pods = traces.load_pods(FIX / "pods.csv")
    a = fillup.run_fillup("fragmentation-aware", nodes, pods, seed=7)
    b = fillup.run_fillup("fragmentation-aware", nodes, pods, seed=7)
    assert a.arrived.tolist() == b.arrived.tolist() and a.allocated.tolist() == b.allocated.tolist()


def test_online_is_deterministic_and_paired():
    a = online.run_online("fragmentation-aware", "uniform", 1.3, 3, [], nodes=2, arrivals=400)
    b = online.run_online("fragmentation-aware", "uniform", 1.3, 3, [], nodes=2, arrivals=400)
    c = online.run_online("first-fit", "uniform", 1.3, 3, [], nodes=2, arrivals=400)
    assert (a.accepted, a.accepted_slices, a.utilisation) == (b.accepted, b.accepted_slices, b.utilisation)
    assert a.arrived_slices == c.arrived_slices  # the same sequence for every policy
    assert a.measured == 320 and 0 < a.accepted <= a.measured
    assert a.counters.moves == 0 and c.counters.moves == 0


def test_hami_v210_destroys_instances_when_pods_end():
    r = online.run_online("hami-v2.10", "uniform", 0.9, 2, [], nodes=1, arrivals=300)
    assert r.counters.reuses == 0 and r.counters.destroys > 0


def test_mixes():
    pods = traces.load_pods(FIX / "pods.csv")
    openb = online.mix_requests("openb", pods)
    small = online.mix_requests("small", pods)
    assert len(openb) == 3  # single-GPU pods only
    assert small[1].containers[0].memory_mib == math.ceil(500 * 32 * 1024 / 1000)
    with pytest.raises(ValueError, match="unknown request mix"):
        online.mix_requests("huge", pods)


def test_small_mix_keeps_whole_gpus_whole():
    """scheduling-quality §6: only fractional shares scale to 32 GB; num_gpu=1, gpu_milli=1000
    stays a whole GPU (it became a 32 GB request, a 3g.40gb)."""
    pods = [traces.TracePod("whole", 1, 1000), traces.TracePod("half", 1, 500)]
    whole, half = online.mix_requests("small", pods)
    assert whole.containers[0].memory_percent == 100 and whole.containers[0].memory_mib == 0
    assert half.containers[0].memory_mib == 16384
    cluster = Cluster("fragmentation-aware", [1], "A100-SXM4-80GB", seed=1)
    assert cluster.slices(whole) == 7 and cluster.slices(half) == 1


def test_demand_is_the_nominal_rule_for_every_policy():
    """HAMi's baselines match NVML's sizes, but every policy is measured on the same demand."""
    whole = traces.to_request(traces.TracePod("w", 1, 1000), 81920)
    ten = online._request(10240)
    for policy in ("fragmentation-aware", "hami-v2.10", "hami-legacy", "hami-v2.10/nominal"):
        cluster = Cluster(policy, [1], "A100-SXM4-80GB", seed=1)
        assert (cluster.slices(whole), cluster.slices(ten)) == (7, 1), policy


def test_hami_baselines_reject_whole_gpus_by_their_memory_rule():
    result = fillup.run_fillup("hami-v2.10", [traces.TraceNode("n", 2)], [traces.TracePod("w", 1, 1000)], seed=1)
    assert result.counters.placed == 0 and result.counters.causes["memory"] == result.counters.rejected
    nominal = fillup.run_fillup("hami-v2.10/nominal", [traces.TraceNode("n", 2)], [traces.TracePod("w", 1, 1000)],
                                seed=1)
    assert nominal.counters.placed == 2


def test_policy_labels():
    assert simulate.parse_policies("hami-v2.10/nominal,first-fit") == ["hami-v2.10/nominal", "first-fit"]
    with pytest.raises(ValueError, match="unknown policy first-fit/nominal"):
        simulate.parse_policies("first-fit/nominal")


def test_extender_scale_rounds_to_nearest():
    scores = np.array([0, 4, 5, 14, 15, 89, 90, 94, 95, 100])
    assert runner.extender_score(scores).tolist() == [0, 0, 1, 1, 2, 9, 9, 9, 10, 10]
    with pytest.raises(ValueError, match="unknown node choice"):
        Cluster("first-fit", [1], "A100-SXM4-80GB", seed=1, node_choice="magic")


@pytest.mark.parametrize("policy", ["fragmentation-aware", "best-fit", "first-fit"])
def test_node_choice_through_the_extender_scale_is_the_engines_choice(policy):
    """The engine gives its first choice alone 100, so rounding to 0-10 keeps kube-scheduler's
    pick: the same run either way."""
    runs = [online.run_online(policy, "uniform", 1.3, 4, [], nodes=3, gpus_per_node=2, arrivals=400,
                              node_choice=nc) for nc in ("extender", "exact")]
    assert runs[0].accepted_slices == runs[1].accepted_slices and runs[0].utilisation == runs[1].utilisation


# -- CLI --------------------------------------------------------------------------------------


def _trace_dir(tmp_path):
    d = tmp_path / "trace"
    d.mkdir()
    (d / traces.NODE_LIST).write_text((FIX / "nodes.csv").read_text())
    (d / "openb_pod_list_default.csv").write_text((FIX / "pods.csv").read_text())
    return d


def test_cli_fillup_writes_table_csv_and_png(tmp_path, capsys):
    rc = cli.main(["simulate", "fillup", "--trace-dir", str(_trace_dir(tmp_path)), "--trace", "default",
                   "--seeds", "1-2", "--policies", "fragmentation-aware,hami-v2.10", "--workers", "1",
                   "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "fragmentation-aware" in out and "hami-v2.10" in out
    assert (tmp_path / "fillup-default-summary.csv").read_text().count("\n") == 3
    assert (tmp_path / "fillup-default.png").stat().st_size > 1000


def test_cli_online_with_two_workers(tmp_path, capsys):
    rc = cli.main(["simulate", "online", "--mix", "uniform", "--load", "1.3", "--seeds", "1-2",
                   "--policies", "fragmentation-aware,first-fit,hami-v2.10/nominal", "--arrivals", "300",
                   "--nodes", "2", "--workers", "2", "--node-choice", "exact", "--out", str(tmp_path)])
    assert rc == 0
    assert (tmp_path / "online-summary.csv").read_text().count("\n") == 4
    assert (tmp_path / "online.png").stat().st_size > 1000


def test_cli_reports_bad_input(capsys, tmp_path):
    assert cli.main(["simulate", "fillup", "--trace-dir", str(_trace_dir(tmp_path)), "--trace",
                     str(FIX / "bad-milli.csv"),
                     "--out", str(tmp_path)]) == 2
    assert "bad-milli.csv:3" in capsys.readouterr().err
    assert cli.main(["simulate", "online", "--policies", "magic", "--out", str(tmp_path)]) == 2
    assert "unknown policy" in capsys.readouterr().err
