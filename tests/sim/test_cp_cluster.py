"""The simulated cluster: node spec parsing, the ControlPlane end to end, and `sim_up` (hami sim up)."""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client, config

from hami.sim.cluster import ClusterSpecError, ControlPlane, NodeSpec, SimNode, parse_nodes, sim_up
from tests.sim.test_cp_kubelet import RESOURCE, RecordingAttacher, TinyPlugin, wait_for


def test_parse_the_issue_example() -> None:
    nodes = parse_nodes("2 x (8 x A100-SXM4-80GB, mode=mig), 1 x (4 x A10, mode=hami-core)")
    assert [(n.name, n.model.key, n.gpus, n.mode) for n in nodes] == [
        ("node-0", "A100-SXM4-80GB", 8, "mig"), ("node-1", "A100-SXM4-80GB", 8, "mig"),
        ("node-2", "A10", 4, "hami-core")]


def test_parse_defaults_names_and_spellings() -> None:
    nodes = parse_nodes("(2 × H100-SXM5-80GB), 2 X (1 * A10, name=edge)")
    assert [(n.name, n.mode, n.gpus) for n in nodes] == [("node-0", "mig", 2), ("edge-0", "hami-core", 1),
                                                         ("edge-1", "hami-core", 1)]
    assert nodes[0].labels()["hami.io/sim-mode"] == "mig"


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty node spec"),
    ("2 x 8 x A10", "write '<nodes> x (<gpus> x <model>"),
    ("2 x (8 x A100-SXM4-81GB)", "closest known names: NVIDIA A100-SXM4-80GB"),
    ("(4 x A10, mode=mig)", "A10 is not MIG-capable; use mode=hami-core"),
    ("(4 x A10, mode=vgpu)", "mode 'vgpu' is not one of mig, hami-core"),
    ("(4 x A10, colour=red)", "unknown option 'colour=red'"),
    ("(0 x A10)", "at least 1"),
    ("(4 x A10", "unbalanced '('"),
    ("(4 x A10),", "empty group"),
])
def test_parse_errors_say_what_to_write(spec: str, message: str) -> None:
    with pytest.raises(ClusterSpecError, match=None) as failed:
        parse_nodes(spec)
    assert message in str(failed.value)


def test_control_plane_end_to_end(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    states: list[tuple[str, Path]] = []
    plugins: list[TinyPlugin] = []
    attachers: dict[str, RecordingAttacher] = {}

    def create_state(spec: NodeSpec, path: Path) -> None:
        states.append((spec.name, path))
        path.write_text("{}")

    def start_plugin(node: SimNode, kubeconfig: Path) -> TinyPlugin:
        assert kubeconfig.exists() and node.state_path.exists()
        plugin = TinyPlugin(node.plugin_dir, devices=node.spec.gpus).start()
        plugins.append(plugin)
        return plugin

    def attacher(node: SimNode) -> RecordingAttacher:
        return attachers.setdefault(node.name, RecordingAttacher())

    plane = ControlPlane(parse_nodes("2 x (2 x A100-SXM4-80GB)"), tmp_path, create_state=create_state,
                         start_plugin=start_plugin, attacher=attacher)
    with plane:
        assert [name for name, _ in states] == ["node-0", "node-1"]
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        core = client.CoreV1Api(api)
        wait_for(lambda: all((n.status.allocatable or {}).get(RESOURCE) == "2" for n in core.list_node().items))
        assert sorted(n.metadata.name for n in core.list_node().items) == ["node-0", "node-1"]
        for i in range(4):
            core.create_namespaced_pod("default", {"metadata": {"name": f"p{i}"}, "spec": {
                "schedulerName": "hami-scheduler",
                "containers": [{"name": "c", "image": "x", "resources": {"limits": {RESOURCE: "1"}}}]}})
        wait_for(lambda: all(p.status.phase == "Running" for p in core.list_namespaced_pod("default").items))
        per_node = sorted(p.spec.node_name for p in core.list_namespaced_pod("default").items)
        assert per_node == ["node-0", "node-0", "node-1", "node-1"]  # NodeResourcesFit on allocatable
        core.create_namespaced_pod("default", {"metadata": {"name": "extra"}, "spec": {
            "schedulerName": "hami-scheduler",
            "containers": [{"name": "c", "image": "x", "resources": {"limits": {RESOURCE: "1"}}}]}})
        wait_for(lambda: any(c.reason == "Unschedulable" for c in
                             core.read_namespaced_pod("extra", "default").status.conditions or []))
        core.delete_namespaced_pod("p0", "default")
        wait_for(lambda: core.read_namespaced_pod("extra", "default").status.phase == "Running")
        assert sum(len(a.calls) for a in attachers.values()) >= 5
        if shutil.which("kubectl"):
            shown = subprocess.run(["kubectl", "--kubeconfig", str(plane.kubeconfig), "get", "nodes,pods", "-A"],
                                   capture_output=True, text=True, timeout=30)
            assert shown.returncode == 0, shown.stderr
            assert "node/node-0" in shown.stdout and "pod/extra" in shown.stdout
        api.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and set(threading.enumerate()) - before:
        time.sleep(0.02)
    assert not set(threading.enumerate()) - before


def test_sim_up_prints_the_kubeconfig_and_stops(tmp_path: Path) -> None:
    out, stop = io.StringIO(), threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(
        sim_up("1 x (1 x A10)", workdir=tmp_path, out=out, stop=stop)))
    thread.start()
    wait_for(lambda: "try: kubectl" in out.getvalue())
    assert f"kubeconfig: {tmp_path / 'kubeconfig'}" in out.getvalue()
    assert "node node-0: 1 x A10, mode=hami-core" in out.getvalue()
    state = tmp_path / "nodes" / "node-0" / "fakenvml-state.json"
    assert state.exists()  # the default StateFactory wrote the node's fakenvml state
    stop.set()
    thread.join(10)
    assert result == [0]
    err = io.StringIO()
    assert sim_up("1 x (1 x Z9000)", workdir=tmp_path, out=io.StringIO(), err=err) == 2
    assert "hami sim up:" in err.getvalue() and "unknown GPU model" in err.getvalue()


def test_fakenvml_hooks_attach_and_detach(tmp_path: Path) -> None:
    from hami.sim import fakenvml
    from hami.sim.cluster import FakeNvmlAttacher, fakenvml_state

    spec = parse_nodes("(2 x A10)")[0]
    path = tmp_path / "state"
    fakenvml_state(spec, path)
    node = fakenvml.FakeNode(path)
    uuid = node.read().gpus[1].uuid
    attacher = FakeNvmlAttacher(path)
    attacher.attach(spec.name, uuid, 4242)
    assert [p.pid for p in node.read().gpus[1].procs] == [4242]
    attacher.detach(spec.name, uuid, 4242)
    assert node.read().gpus[1].procs == []
    with pytest.raises(KeyError):
        attacher.attach(spec.name, "GPU-nope", 1)
