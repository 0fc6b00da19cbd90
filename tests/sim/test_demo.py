"""`hami demo`: the full-stack demo (shortened: a small cluster, a few pods), its summary checked
against what the API server and the scheduler hold; the engine-only demo stays deterministic."""

from __future__ import annotations

import io
import threading
from collections import Counter
from pathlib import Path

from rich.console import Console

from hami import cli
from hami.api import codecs, names
from hami.sim import demo, demo_engine

SMALL = "(2 x A100-SXM4-80GB, name=mig), (2 x A100-SXM4-80GB, mode=mig:1+hami-core:1, name=mixed)"


def test_full_stack_demo_summary_matches_the_api_server(tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    def inspect(stack, summary: demo.Summary) -> None:
        store = stack.plane.api.store
        pods = store.list("pods", "default")["items"]
        seen["pods"] = {p["metadata"]["name"]: p for p in pods}
        seen["nodes"] = {n["metadata"]["name"]: n for n in store.list("nodes")["items"]}
        seen["scheduled"] = Counter(e["involvedObject"]["name"] for e in store.list("events", "default")["items"]
                                    if e.get("reason") == "Scheduled")
        seen["metrics"] = stack.metrics()

    out = io.StringIO()
    kept = threading.Event()
    kept.set()  # --keep-running: prints how to reach the cluster, then stops at once
    summary = demo.run(keep_running=True, stop=kept, pods=10, seed=3, interval=0.2, lifetime=(1.0, 3.0),
                       nodes=SMALL, workdir=tmp_path / "demo",
                       console=Console(file=out, width=150), inspect=inspect)
    text = out.getvalue()
    assert summary.ok, (summary.unexpected, text)
    planned = demo.plan(10, 3, 0.2, lifetime=(1.0, 3.0))
    services = {p.name for p in planned if p.life is None}
    # every pod ran once: one Scheduled event each; only the services are left, Running
    assert summary.ran == summary.pods == 10
    assert set(seen["scheduled"]) == {p.name for p in planned} and set(seen["scheduled"].values()) == {1}
    assert set(seen["pods"]) == services
    assert all(p["status"]["phase"] == "Running" for p in seen["pods"].values())
    assert summary.on_mig + summary.on_core <= summary.ran and summary.on_mig > 0
    # every MIG device a pod got was created or reused, in the agents' record and in the scheduler's
    mig_devices = summary.mig_devices
    assert mig_devices > 0
    assert summary.created + summary.reused == mig_devices
    assert summary.decided["created"] + summary.decided["reused"] == mig_devices
    # the final layout is the nodes' annotations: every MIG instance, in use by a service or idle
    realised = {}
    for name, node in seen["nodes"].items():
        ann = node["metadata"]["annotations"]
        for inst in codecs.decode_node_mig_instances(ann.get(names.NODE_MIG_INSTANCES, "[]")):
            realised.setdefault(name, []).append(inst)
    assert sum(map(len, realised.values())) == summary.created - summary.destroyed
    in_use = {i.pod.split("/")[1] for insts in realised.values() for i in insts
              if i.state is codecs.InstanceState.IN_USE}
    assert in_use <= services
    shown = {(node, index): what for node, index, _model, _mode, what in summary.layout}
    assert len(shown) == 4 and [m for _n, _i, _m, m, _w in summary.layout].count("hami-core") == 1
    for name, insts in realised.items():
        for inst in insts:
            gpu = next(d.index for d in codecs.decode_node_register(
                seen["nodes"][name]["metadata"]["annotations"][names.NODE_REGISTER]) if d.id == inst.gpu_uuid)
            assert f"{inst.profile}@{inst.placement.start}" in shown[(name, gpu)]
    assert f"{summary.ran} of 10 pods ran" in text and "every GPU at the end" in text and "ok in" in text
    assert "export KUBECONFIG=" in text and "hami inspect" in text and "/metrics" in text
    assert not (tmp_path / "demo").exists()  # the work folder the demo made is gone


def test_engine_demo_is_deterministic():
    a, _ = demo_engine.run("fragmentation-aware", pods=80, seed=3)
    b, _ = demo_engine.run("fragmentation-aware", pods=80, seed=3)
    assert a.log == b.log


def test_default_policy_places_at_least_as_many_as_hami_under_pressure():
    ours, _ = demo_engine.run("fragmentation-aware")
    for baseline in ("hami-legacy", "static"):
        assert ours.placed > demo_engine.run(baseline)[0].placed, baseline
    v210, _ = demo_engine.run("hami-v2.10")
    assert ours.placed >= v210.placed
    assert ours.creates < v210.creates and v210.reuses == 0  # v2.10 destroys on exit, we reuse
    assert ours.placed + ours.rejected == 200


def test_cli_engine_only_demo_names_models_as_users_do(capsys):
    assert cli.main(["demo", "--engine-only", "--pods", "30", "--show", "5"]) == 0
    out = capsys.readouterr().out
    assert "fragmentation-aware" in out and "hami-v2.10" in out
    assert "4×H100-SXM5-80GB mig" in out and "HBM3" not in out


def test_engine_demo_header_uses_catalog_names():
    assert demo_engine.header() == ("4×A100-SXM4-80GB mig, 4×A100-SXM4-80GB mig, 4×H100-SXM5-80GB mig, "
                                    "4×A10 hami-core")


def test_demo_plan_is_deterministic_and_drifts_to_larger_pods():
    a, b = demo.plan(90, 7, 0.2), demo.plan(90, 7, 0.2)
    assert a == b and [p.life for p in a[-3:]] == [None] * 3
    big = {"training 40 GB, mig", "2 × 20 GB instances, mig", "whole GPU, mig"}
    assert sum(p.kind.label in big for p in a[45:]) > 2 * sum(p.kind.label in big for p in a[:45])
    assert {p.kind.mode for p in a} == {None, "mig", "hami-core"}
    assert any(len(p.kind.containers) == 2 for p in a) and any(p.kind.containers[0].get(names.RESOURCE_COUNT) == "2"
                                                                for p in a)


def test_cli_rejects_bad_arguments(capsys):
    assert cli.main(["demo", "--pods", "0"]) == 2
    assert "--pods must be at least 1" in capsys.readouterr().err
    assert cli.main(["demo", "--nodes", "(2 x NoSuchGPU)"]) == 2
    assert "NoSuchGPU" in capsys.readouterr().err


def test_cli_sim_up_rejects_a_bad_spec(capsys, tmp_path):
    assert cli.main(["sim", "up", "--nodes", "2 x (8 x NoSuchGPU, mode=mig)", "--workdir", str(tmp_path)]) == 2
    assert "NoSuchGPU" in capsys.readouterr().err


def test_a_pod_that_failed_or_never_ran_makes_the_demo_fail():
    """summarise() over a record where one pod failed admission and one never ran: not ok (exit 1)."""
    from types import SimpleNamespace

    from hami.sim.fullstack import Device, PodRecord

    planned = demo.plan(4, 1, 0.1, services=1)
    ok, failed, never, service = (PodRecord(p.name, created=0.0) for p in planned)
    for r in (ok, failed, service):
        r.running, r.node = 0.5, "n"
        r.devices = [[Device("GPU-1", "1g.10gb", 0, "MIG-x")]]
    ok.gone = 9.0
    failed.failed = "UnexpectedAdmissionError: Allocate failed"
    never.unschedulable = "0/2 nodes are available"
    observer = SimpleNamespace(pods={r.name: r for r in (ok, failed, never, service)}, created_uuids={"MIG-x"},
                               destroyed_uuids=set(), new_next_to_running=[], registered={}, instances={})
    summary = demo.summarise(observer, planned, "")
    assert not summary.ok and summary.ran == 2
    assert summary.unexpected == {failed.name: failed.failed, never.name: never.unschedulable}
    assert (summary.mig_devices, summary.created, summary.reused) == (2, 1, 1)
