"""`hami inspect` against a small control plane: what it shows per GPU, `--node`, `--watch`, and its
errors (one line, exit 2, no traceback).

Expected layouts are A100-80GB facts (NVIDIA MIG user guide): 8 memory slices; 3g.40gb starts at 0
or 4; 4g.40gb and 7g.80gb only at 0; so a 3g.40gb at 4 leaves slices 0-3, where 4g.40gb still fits and
7g.80gb does not.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hami._core import CorePick, MigPick
from hami.api import codecs, names
from hami.cli import main
from hami.sim.apiserver import ApiServer
from tests.inspect.conftest import Cluster, core_devices, idle, in_use, mig_devices
from tests.scheduler.conftest import A10, gpu_pod, wait_for


def populate(cluster: Cluster) -> datetime:
    """mig-a: GPU 0 runs default/runner on 3g.40gb@4 beside a 1g.10gb@0 idle for ten minutes (the
    time it became idle is returned); GPU 1 has a 2g.20gb@0 decided for default/fresh and not
    created yet. core-a: two hami-core shares on GPU 0, GPU 1 registered without a mode. mig-b:
    one empty A100."""
    ten_minutes_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    cluster.add_node("mig-a", mig_devices("a", 2), [
        in_use("GPU-a-0", "3g.40gb", 4, 4, "default/runner", gi=2),
        idle("GPU-a-0", "1g.10gb", 0, 1, ten_minutes_ago, gi=9),
    ])
    cluster.add_node("core-a", [*core_devices("c", 1), *core_devices("m", 1, mode="")])
    cluster.add_node("mig-b", mig_devices("b", 1))
    cluster.add_pod("runner", "mig-a", MigPick("GPU-a-0", "3g.40gb", 4, 4))
    cluster.add_pod("fresh", "mig-a", MigPick("GPU-a-1", "2g.20gb", 0, 2), phase="Pending")
    cluster.add_pod("train", "core-a", CorePick("GPU-c-0", 3000, 30))
    cluster.add_pod("serve", "core-a", CorePick("GPU-c-0", 5000, 20), namespace="kube-system")
    return ten_minutes_ago


def inspect_json(cluster_or_kubeconfig: Any, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    kubeconfig = getattr(cluster_or_kubeconfig, "kubeconfig", cluster_or_kubeconfig)
    assert main(["inspect", "--kubeconfig", str(kubeconfig), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def gpu(view: dict[str, Any], node: str, uuid: str) -> dict[str, Any]:
    (found,) = [g for n in view["nodes"] if n["name"] == node for g in n["gpus"] if g["uuid"] == uuid]
    return found


def fits(g: dict[str, Any]) -> dict[str, tuple[int, list[tuple[int, str]]]]:
    return {f["profile"]: (f["more"], [tuple(s) for s in f["starts"]]) for f in g["fits"]}


def test_mig_instances_their_pods_idle_since_free_slices_and_fits(cluster: Cluster, capsys) -> None:
    idle_since = populate(cluster)
    view = inspect_json(cluster, capsys)
    assert [n["name"] for n in view["nodes"]] == ["core-a", "mig-a", "mig-b"]

    busy = gpu(view, "mig-a", "GPU-a-0")
    assert (busy["mode"], busy["model"], busy["memory_slices"]) == ("mig", "A100-SXM4-80GB", 8)
    got = [(i["profile"], i["start"], i["size"], i["state"], i["pod"], i["pod_phase"]) for i in busy["instances"]]
    assert got == [("1g.10gb", 0, 1, "idle", None, None), ("3g.40gb", 4, 4, "in-use", "default/runner", "Running")]
    assert datetime.fromisoformat(busy["instances"][0]["since"]) == idle_since
    assert busy["free_slices"] == [1, 2, 3]
    assert busy["slices"] == "~...####"
    room = fits(busy)
    assert "7g.80gb" not in room and "3g.40gb" in room
    assert room["4g.40gb"] == (1, [(0, "reclaim")])  # only after the idle 1g.10gb@0 is destroyed
    assert (0, "reuse") in room["1g.10gb"][1]  # the idle instance itself serves a 1g.10gb request

    pending = gpu(view, "mig-a", "GPU-a-1")
    assert [(i["profile"], i["start"], i["state"], i["pod"], i["pod_phase"]) for i in pending["instances"]] == [
        ("2g.20gb", 0, "reserved", "default/fresh", "Pending")]
    assert pending["free_slices"] == [2, 3, 4, 5, 6, 7]
    assert "7g.80gb" not in fits(pending)

    empty = gpu(view, "mig-b", "GPU-b-0")
    assert empty["instances"] == [] and empty["free_slices"] == list(range(8))
    assert fits(empty)["7g.80gb"] == (1, [(0, "free")])

    shared = gpu(view, "core-a", "GPU-c-0")
    assert shared["mode"] == "hami-core"
    assert sorted((s["pod"], s["memory_mib"], s["cores"]) for s in shared["shares"]) == [
        ("default/train", 3000, 30), ("kube-system/serve", 5000, 20)]
    assert (shared["used_memory_mib"], shared["used_cores"], shared["tasks"]) == (8000, 50, 2)
    modeless = gpu(view, "core-a", "GPU-m-0")
    assert (modeless["mode"], modeless["shares"], modeless["scheduled"]) == ("mode-less", [], True)


def test_the_table_names_the_pod_of_each_instance(cluster: Cluster, capsys) -> None:
    populate(cluster)
    assert main(["inspect", "--kubeconfig", str(cluster.kubeconfig)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any("3g.40gb @4" in line and "default/runner" in line for line in lines), out
    assert any(re.search(r"1g\.10gb @0\s+idle 10m0\ds", line) for line in lines), out
    assert any("2g.20gb @0" in line and "default/fresh" in line and "being created" in line for line in lines), out
    assert any("kube-system/serve" in line and "5000 MiB" in line and "20% cores" in line for line in lines), out
    assert any("1g.10gb ×4 @1-3 · reuse @0" in line for line in lines), out
    assert any("4g.40gb ×1 reclaim @0" in line for line in lines), out
    assert any("empty: any profile" in line for line in lines), out  # the empty A100
    assert "node mig-a" in out and "node core-a" in out and "mode-less" in out
    assert "3 nodes, 5 GPUs (3 MIG, 2 shared)" in out
    assert "1 in use, 1 idle, 1 reserved" in out and "2 hami-core shares" in out
    assert "MIG-" not in out  # uuids only with --wide

    runner = next(i for i in gpu(inspect_json(cluster, capsys), "mig-a", "GPU-a-0")["instances"] if i["pod"])
    assert main(["inspect", "--kubeconfig", str(cluster.kubeconfig), "--wide", "--node", "mig-a"]) == 0
    wide = capsys.readouterr().out
    assert f"{runner['mig_uuid']} GI 2 CI 0" in wide, wide


def test_a_gone_pod_a_terminating_one_a_silent_agent_a_lock_and_a_cordon_are_flagged(cluster: Cluster, capsys) -> None:
    old = "Reported 2020-01-01 00:00:00 +0000 UTC"
    cluster.add_node("mig-a", mig_devices("a", 1), [in_use("GPU-a-0", "1g.10gb", 6, 1, "default/left", gi=13),
                                                    in_use("GPU-a-0", "3g.40gb", 0, 4, "default/ending", gi=1)],
                     **{names.NODE_HANDSHAKE: old, names.NODE_LOCK: "2026-01-01T00:00:00Z,default,binding",
                        names.DEVICE_CORDON: "GPU-a-0"})
    cluster.add_pod("ending", "mig-a", MigPick("GPU-a-0", "3g.40gb", 0, 4))
    cluster.kube.delete("pods", "ending", "default")  # graceful: it stays until its kubelet confirms
    view = inspect_json(cluster, capsys)
    (node,) = view["nodes"]
    assert node["stale"] is True and node["handshake_age_s"] > 3600
    assert node["lock"].startswith("default/binding since 2026-01-01")
    assert gpu(view, "mig-a", "GPU-a-0")["cordoned"] is True
    got = [(i["pod"], i["pod_phase"]) for i in gpu(view, "mig-a", "GPU-a-0")["instances"]]
    assert got == [("default/ending", "Terminating"), ("default/left", None)]
    assert main(["inspect", "--kubeconfig", str(cluster.kubeconfig)]) == 0
    out = capsys.readouterr().out
    assert "(pod gone)" in out and "(Terminating)" in out and "cordoned" in out
    assert "agent silent for" in out and "bind lock: default/binding" in out


def test_annotations_the_scheduler_cannot_use_are_reported_on_their_node(cluster: Cluster, capsys) -> None:
    cluster.add_node("broken", mig_devices("x", 1), **{names.NODE_MIG_INSTANCES: "[{not json"})
    cluster.kube.create("nodes", {"metadata": {"name": "bare"}})
    cluster.add_node("odd", mig_devices("z", 1, gpu_type="NVIDIA Z9000"))  # neither catalogued nor described
    view = inspect_json(cluster, capsys)
    problems = {n["name"]: n["problems"] for n in view["nodes"]}
    assert any(names.NODE_MIG_INSTANCES in p for p in problems["broken"]), problems
    assert any("no GPUs registered" in p for p in problems["bare"]), problems
    assert any(p.startswith("GPUs not registered: unknown GPU model 'NVIDIA Z9000'") for p in problems["odd"]), problems
    odd = gpu(view, "odd", "GPU-z-0")
    assert (odd["scheduled"], odd["model"], odd["mode"]) == (False, "Z9000", "mig")
    assert main(["inspect", "--kubeconfig", str(cluster.kubeconfig), "--node", "odd"]) == 0
    out = capsys.readouterr().out
    assert "not scheduled" in out and "Z9000" in out


def test_node_filter(cluster: Cluster, capsys) -> None:
    populate(cluster)
    view = inspect_json(cluster, capsys, "--node", "core-a", "--node", "mig-b")
    assert [n["name"] for n in view["nodes"]] == ["core-a", "mig-b"]
    assert main(["inspect", "--kubeconfig", str(cluster.kubeconfig), "--node", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hami inspect: no node named nope (nodes: core-a, mig-a, mig-b)"]


def test_watch_refreshes_a_bounded_number_of_times(cluster: Cluster, capsys) -> None:
    populate(cluster)
    assert main(["inspect", "--kubeconfig", str(cluster.kubeconfig), "--json", "--watch", "0.05", "--count", "3"]) == 0
    frames = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(frames) == 3
    stamps = [datetime.fromisoformat(f["taken_at"]) for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3  # each frame is a fresh read
    assert main(["inspect", "--kubeconfig", str(cluster.kubeconfig), "--watch", "0.05", "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("every 0.05s, Ctrl-C to stop") == 2 and out.count("node mig-a") == 2


def test_watch_on_a_terminal_redraws_in_place(cluster: Cluster, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(cluster)
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats the captured stdout as a terminal
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("LINES", "200")
    assert main(["inspect", "--kubeconfig", str(cluster.kubeconfig), "--watch", "0.05", "--count", "3"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[1A" in out  # the cursor goes back up: each view is drawn over the previous one
    assert out.count("every 0.05s, Ctrl-C to stop") >= 3 and "default/runner" in out
    assert out.rstrip().endswith("\x1b[?25h")  # the cursor is given back when the watch ends
    assert "node mig-b" in out and "below the screen" not in out

    monkeypatch.setenv("LINES", "20")  # a short terminal: nodes that would start below it are not drawn
    assert main(["inspect", "--kubeconfig", str(cluster.kubeconfig), "--watch", "0.05", "--count", "1"]) == 0
    out = capsys.readouterr().out
    assert "node core-a" in out and "node mig-b" not in out
    assert "more node below the screen (choose with --node)" in out


def _subprocess(*args: str, **kw: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-m", "hami.cli", "inspect", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def test_watch_in_a_subprocess_shows_changes_survives_the_server_and_stops_on_ctrl_c(cluster: Cluster) -> None:
    idle_since = populate(cluster)
    proc = _subprocess("--kubeconfig", str(cluster.kubeconfig), "--node", "mig-a", "--watch", "0.2", "--json")
    try:
        first = json.loads(proc.stdout.readline())
        (runner,) = [i for i in gpu(first, "mig-a", "GPU-a-0")["instances"] if i["state"] == "in-use"]
        assert runner["pod"] == "default/runner"
        # default/runner ends: the agent reports its instance idle; the next refresh shows it
        cluster.set_instances("mig-a", [idle("GPU-a-0", "3g.40gb", 4, 4, datetime.now(UTC), gi=2),
                                        idle("GPU-a-0", "1g.10gb", 0, 1, idle_since, gi=9)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            frame = json.loads(proc.stdout.readline())
            states = {(i["profile"], i["state"]) for i in gpu(frame, "mig-a", "GPU-a-0")["instances"]}
            if states == {("3g.40gb", "idle"), ("1g.10gb", "idle")}:
                break
        else:
            pytest.fail("the watch never showed the instance idle")
        assert frame["error"] is None
        # the API server goes away: the last good view stays, with the reason beside it
        cluster.api.stop()
        failed = json.loads(proc.stdout.readline())
        assert failed["error"].startswith("cannot reach the API server at http://127.0.0.1:"), failed["error"]
        assert failed["nodes"] == frame["nodes"] and failed["taken_at"] == frame["taken_at"]
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and err.strip() == "", err


# -- errors: one line, exit 2 ----------------------------------------------------------------------


def one_error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["inspect", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hami inspect: "), captured.err
    assert captured.out == ""
    return lines[0]


def test_no_kubeconfig(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert "no kubeconfig: pass --kubeconfig, set KUBECONFIG" in one_error_line(capsys)
    assert "does not exist" in one_error_line(capsys, "--kubeconfig", str(tmp_path / "missing"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert "$KUBECONFIG names no existing file" in one_error_line(capsys)


@pytest.mark.parametrize(("content", "why"), [
    (b"apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n", "Invalid kube-config"),
    (b"", "is empty"),
    (b"clusters: [a", "not valid YAML (line 1, column 13)"),
    (b"hello", "not a kubeconfig"),
    (b"\x00\xff\xfe", "not a text file"),
])
def test_a_kubeconfig_that_is_not_one(tmp_path: Path, capsys, content: bytes, why: str) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_bytes(content)
    line = one_error_line(capsys, "--kubeconfig", str(bad))
    assert line.startswith(f"hami inspect: cannot use kubeconfig {bad}: ") and why in line, line
    assert "is a folder" in one_error_line(capsys, "--kubeconfig", str(tmp_path))


def test_kubeconfig_from_the_environment(cluster: Cluster, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.add_node("mig-b", mig_devices("b", 1))
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    assert main(["inspect", "--json"]) == 0
    assert [n["name"] for n in json.loads(capsys.readouterr().out)["nodes"]] == ["mig-b"]


def test_server_down(tmp_path: Path, capsys) -> None:
    api = ApiServer().start()
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    url = api.url
    api.stop()
    line = one_error_line(capsys, "--kubeconfig", str(kubeconfig))
    assert line == f"hami inspect: cannot reach the API server at {url}: Connection refused"


def test_server_down_in_a_subprocess(tmp_path: Path) -> None:
    api = ApiServer().start()
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    api.stop()
    proc = _subprocess("--kubeconfig", str(kubeconfig))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "cannot reach the API server" in err, err


class _Refusing(http.server.BaseHTTPRequestHandler):
    """An API server that answers every request with one Status (401 or 403), as RBAC would."""

    status = 403

    def do_GET(self) -> None:
        reason = "Forbidden" if self.status == 403 else "Unauthorized"
        message = ('nodes is forbidden: User "viewer" cannot list resource "nodes" in API group "" at the '
                   'cluster scope') if self.status == 403 else "Unauthorized"
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                           "reason": reason, "code": self.status}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("status", [403, 401])
def test_credentials_refused(tmp_path: Path, capsys, status: int) -> None:
    handler = type("Handler", (_Refusing,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        url = f"http://127.0.0.1:{server.server_address[1]}"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
        line = one_error_line(capsys, "--kubeconfig", str(kubeconfig))
    finally:
        server.shutdown()
        server.server_close()
    if status == 403:
        assert line == ('hami inspect: forbidden: nodes is forbidden: User "viewer" cannot list resource "nodes" in '
                        'API group "" at the cluster scope (hami inspect needs list on nodes and pods)')
    else:
        assert line == f"hami inspect: the API server at {url} refused the kubeconfig's credentials (401 Unauthorized)"


@pytest.mark.parametrize(("argv", "message"), [
    (["--watch", "0"], "--watch 0: the interval must be more than 0 seconds"),
    (["--count", "3"], "--count N takes N >= 1 and goes with --watch"),
    (["--device-config-file", "/nonexistent/device-config.yaml"], "--device-config-file: No such file"),
])
def test_bad_options(cluster: Cluster, capsys, argv: list[str], message: str) -> None:
    assert message in one_error_line(capsys, "--kubeconfig", str(cluster.kubeconfig), *argv)


def test_the_real_scheduler_and_node_agent(plane, capsys) -> None:
    """End to end: our scheduler decides, our node agent (over the simulated NVML) creates the
    instance and reports it; inspect shows the instance with its pod and MIG uuid, the hami-core
    share, and the instance idle once its pod is gone."""
    plane.add_sim_node("(1 x A100-SXM4-80GB, mode=mig, name=gpu)")
    plane.add_sim_node("(1 x A10, mode=hami-core, name=core)")
    plane.create(gpu_pod("mig", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "20000"},
                         annotations={names.VGPU_MODE: "mig"}))
    plane.create(gpu_pod("shared", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"},
                         annotations={names.VGPU_MODE: "hami-core"}))
    wait_for(lambda: all((plane.pod(p).get("status") or {}).get("phase") == "Running" for p in ("mig", "shared")),
             60, "the pods running")
    annotations = plane.pod("mig")["metadata"]["annotations"]
    (allocation,) = codecs.decode_mig_allocations(annotations[names.VGPU_MIG_ALLOCATIONS])

    def instances() -> list[dict[str, Any]]:
        view = inspect_json(plane.kubeconfig, capsys, "--node", "gpu-0")
        return gpu(view, "gpu-0", allocation.gpu_uuid)["instances"]

    (inst,) = wait_for(lambda: [i for i in instances() if i["state"] == "in-use"], 30, "the instance reported")
    assert (inst["profile"], inst["start"], inst["pod"], inst["pod_phase"]) == (
        allocation.profile, allocation.placement.start, "default/mig", "Running")
    assert inst["mig_uuid"] == allocation.mig_uuid
    view = inspect_json(plane.kubeconfig, capsys, "--node", "core-0")
    ((share,),) = [g["shares"] for n in view["nodes"] for g in n["gpus"] if g["shares"]]
    assert (share["pod"], share["memory_mib"], share["cores"]) == ("default/shared", 3000, 30)
    assert [g["model"] for n in view["nodes"] for g in n["gpus"]] == [A10.removeprefix("NVIDIA ")]

    plane.kube.delete("pods", "mig", "default")
    (gone,) = wait_for(lambda: [i for i in instances() if i["state"] == "idle"], 60, "the instance idle")
    assert (gone["profile"], gone["start"], gone["pod"]) == (allocation.profile, allocation.placement.start, None)
    assert gone["since"] is not None
