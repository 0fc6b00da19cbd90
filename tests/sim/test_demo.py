"""The engine-level demo: deterministic, and our default packs at least as well as HAMi's."""

from hami import cli
from hami.sim import demo


def test_demo_is_deterministic():
    a, _ = demo.run("fragmentation-aware", pods=80, seed=3)
    b, _ = demo.run("fragmentation-aware", pods=80, seed=3)
    assert a.log == b.log


def test_default_policy_places_at_least_as_many_as_hami_under_pressure():
    ours, _ = demo.run("fragmentation-aware")
    for baseline in ("hami-legacy", "static"):
        assert ours.placed > demo.run(baseline)[0].placed, baseline
    v210, _ = demo.run("hami-v2.10")
    assert ours.placed >= v210.placed
    assert ours.creates < v210.creates and v210.reuses == 0  # v2.10 destroys on exit, we reuse
    assert ours.placed + ours.rejected == 200


def test_cli_demo_runs(capsys):
    assert cli.main(["demo", "--pods", "30", "--show", "5"]) == 0
    out = capsys.readouterr().out
    assert "fragmentation-aware" in out and "hami-v2.10" in out


def test_cli_rejects_bad_arguments(capsys):
    assert cli.main(["demo", "--pods", "0"]) == 2
    assert "--pods must be at least 1" in capsys.readouterr().err


def test_cli_sim_up_rejects_a_bad_spec(capsys, tmp_path):
    assert cli.main(["sim", "up", "--nodes", "2 x (8 x NoSuchGPU, mode=mig)", "--workdir", str(tmp_path)]) == 2
    assert "NoSuchGPU" in capsys.readouterr().err
