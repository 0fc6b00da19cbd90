"""The cluster `hami demo` and `hami sim up` start: per-GPU modes in the node spec (and a real node
agent registering them), and `hami sim up`'s error paths and clean-up on every exit."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hami import cli
from hami.api import codecs, names
from hami.sim.cluster import (
    ClusterSpecError,
    ControlPlane,
    fakenvml_attacher,
    fakenvml_state,
    node_agent,
    parse_nodes,
    sim_up,
)

ROOT = Path(__file__).resolve().parents[2]


def test_per_gpu_modes_split_a_node_in_index_order() -> None:
    (node,) = parse_nodes("1 x (4 x A100-SXM4-80GB, mode=mig:2+hami-core:2, name=mixed)")
    assert node.mode == "mig" and node.mixed
    assert node.gpu_modes == ("mig", "mig", "hami-core", "hami-core")
    assert [node.mode_of(i) for i in range(4)] == ["mig", "mig", "hami-core", "hami-core"]
    assert node.describe() == "mig:2+hami-core:2"
    assert node.labels()["hami.io/sim-mode"] == "mixed"
    assert node.node_config() == {"name": "mixed-0", "operatingmode": "mig",
                                  "devicemodes": [{"index": [2, 3], "operatingmode": "hami-core"}]}


def test_one_mode_for_every_gpu_stays_a_node_mode() -> None:
    a, b = parse_nodes("(2 x A100-SXM4-80GB, mode=hami-core:2), (2 x A10)")
    assert (a.mode, a.gpu_modes, a.mixed, a.describe()) == ("hami-core", (), False, "hami-core")
    assert a.node_config() == {"name": "node-0", "operatingmode": "hami-core"}
    assert (b.mode, b.gpu_modes) == ("hami-core", ())


@pytest.mark.parametrize(("spec", "message"), [
    ("(4 x A100-SXM4-80GB, mode=mig:2+hami-core:1)", "cover 3 GPU(s), the node has 4"),
    ("(4 x A100-SXM4-80GB, mode=mig:2+vgpu:2)", "cannot read the per-GPU modes 'mig:2+vgpu:2'"),
    ("(4 x A100-SXM4-80GB, mode=mig:x+hami-core:2)", "write <mode>:<count> joined by '+'"),
    ("(2 x A100-SXM4-80GB, mode=mig:0+hami-core:2)", "e.g. mode=mig:2+hami-core:2"),
    ("(2 x A10, mode=hami-core:1+mig:1)", "A10 is not MIG-capable"),
])
def test_per_gpu_mode_errors_say_what_to_write(spec: str, message: str) -> None:
    with pytest.raises(ClusterSpecError) as failed:
        parse_nodes(spec)
    assert message in str(failed.value)


def test_a_node_agent_registers_mixed_modes(tmp_path: Path) -> None:
    """Our agent, given the node config the spec makes, registers each GPU in its own mode and
    offers MIG profiles only on the MIG one."""
    specs = parse_nodes("(2 x A100-SXM4-80GB, mode=mig:1+hami-core:1, name=mixed)")
    with ControlPlane(specs, tmp_path, create_state=fakenvml_state, start_plugin=node_agent,
                      attacher=fakenvml_attacher) as plane:
        assert plane.api is not None
        deadline = time.monotonic() + 60
        register = None
        while register is None and time.monotonic() < deadline:
            node = plane.api.store.get("nodes", None, "mixed-0")
            register = (node["metadata"].get("annotations") or {}).get(names.NODE_REGISTER)
            time.sleep(0.1)
        assert register, (tmp_path / "nodes" / "mixed-0" / "agent.log").read_text()[-2000:]
    devices = sorted(codecs.decode_node_register(register), key=lambda d: d.index)
    assert [(d.index, d.mode) for d in devices] == [(0, "mig"), (1, "hami-core")]
    assert devices[0].mig_profiles and not devices[1].mig_profiles
    config = json.loads((tmp_path / "nodes" / "mixed-0" / "node-config.json").read_text())
    assert config["nodeconfig"][0]["devicemodes"] == [{"index": [1], "operatingmode": "hami-core"}]


# -- hami sim up: one clear line and exit 2, nothing left behind --------------------------------------


def test_sim_up_rejects_a_port_out_of_range(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    work = tmp_path / "w"
    assert cli.main(["sim", "up", "--nodes", "(1 x A10)", "--port", "99999", "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--port 99999 is not a TCP port" in err and "Traceback" not in err
    assert not work.exists()


def test_sim_up_reports_a_port_in_use_and_cleans_up(tmp_path: Path) -> None:
    work = tmp_path / "w"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = io.StringIO()
        started: list[str] = []
        status = sim_up("(1 x A10)", workdir=work, port=port, out=io.StringIO(), err=err,
                        start_plugin=lambda node, kubeconfig: started.append(node.name))
    assert status == 2
    assert err.getvalue().count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err.getvalue() and "choose another --port" in err.getvalue()
    assert not work.exists() and not started


def test_sim_up_reports_a_work_folder_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    err = io.StringIO()
    assert sim_up("(1 x A10)", workdir=blocker / "sub", out=io.StringIO(), err=err) == 2
    assert err.getvalue().count("\n") == 1
    assert "cannot create the work folder" in err.getvalue() and "writable --workdir" in err.getvalue()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_sim_up_cleans_up_on_sigterm(tmp_path: Path, stop: signal.Signals) -> None:
    """As a user runs it: a subprocess with a real node agent, stopped by SIGTERM (handled as Ctrl-C
    is) or by SIGINT although it started with SIGINT ignored (a script's background job, where
    Python installs no Ctrl-C handler); exit 0, and the work folder it made and the kubelet's
    socket folder are gone."""
    work = tmp_path / "work"
    process = subprocess.Popen([sys.executable, "-m", "hami.cli", "sim", "up", "--nodes", "(1 x A10)",
                                "--workdir", str(work)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        lines = []
        while not lines or not lines[-1].startswith("try:"):
            line = process.stdout.readline()  # type: ignore[union-attr]
            assert line, process.stderr.read()  # type: ignore[union-attr]
            lines.append(line)
        plugin_dir = Path(re.search(r"device plugins in (\S+)", "".join(lines)).group(1))  # type: ignore[union-attr]
        assert work.is_dir() and plugin_dir.is_dir()
        agent_log = work / "nodes" / "node-0" / "agent.log"
        deadline = time.monotonic() + 60
        while "registered with kubelet" not in (agent_log.read_text() if agent_log.exists() else ""):
            assert time.monotonic() < deadline, agent_log.read_text() if agent_log.exists() else "no agent log"
            time.sleep(0.1)
        process.send_signal(stop)
        assert process.wait(30) == 0, process.stderr.read()  # type: ignore[union-attr]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not work.exists() and not plugin_dir.exists()
    assert "Traceback" not in process.stderr.read()  # type: ignore[union-attr]
