"""Faults: NVML failures at every call of Allocate, the agent dying mid-Allocate, a node reboot,
a burst of admissions, and transient errors during reconciliation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hami.api import names
from hami.api.codecs import decode_mig_allocations, decode_node_mig_instances
from hami.nvml import Return
from hami.sim import fakenvml
from tests.deviceplugin.conftest import Dev, Node, make_node, nodeconfig, wait_for


def gi_count(node: Node) -> int:
    return len(node.fake.instances())


def clear_gpu(node: Node) -> None:
    """Destroy every instance the agent can see (test reset between iterations)."""
    agent = node.agent
    assert agent is not None
    agent.state.note_destroyed(agent.mig.destroy(agent.mig.instances()))
    agent.sync()


def test_an_nvml_failure_at_each_call_of_allocate_leaves_nothing_behind(mig_node: Node) -> None:
    node = mig_node
    agent = node.start_agent()
    node.fake.set_trace(True)
    decision = [[Dev(0, 19968, 100, "2g.20gb", 2, 2), Dev(0, 9728, 100, "1g.10gb", 6, 1)]]
    node.decided_pod("probe", decision)
    assert node.wait_phase("probe", "Running", "Failed") == "Running"
    total = sum(node.fake.calls().values())
    node.fake.set_trace(False)
    assert total > 10, "a MIG Allocate makes many NVML calls"
    node.delete_pod("probe")
    clear_gpu(node)
    failed = 0
    for k in range(1, total + 1):
        name = f"f{k}"
        node.fake.inject_fault("*", Return.UNKNOWN, nth=k)
        node.decided_pod(name, decision)
        phase = node.wait_phase(name, "Running", "Failed")
        node.fake.clear_faults()
        if phase == "Failed":
            failed += 1
            assert gi_count(node) == 0, f"call {k}: a failed Allocate leaked an instance"
            ann = node.annotations(name)
            assert ann[names.BIND_PHASE] == "failed"
            assert names.NODE_LOCK not in node.node_annotations(), f"call {k}: lock kept"
            assert "Unknown Error" in node.pod(name)["status"]["message"]
        else:  # a call whose failure the agent tolerates (retried or not needed): the pod is served
            [allocation, _] = decode_mig_allocations(node.annotations(name)[names.VGPU_MIG_ALLOCATIONS])
            assert allocation.realised
        node.delete_pod(name)
        clear_gpu(node)
    assert failed > 0, "no injected failure reached Allocate"  # reads are retried; creates are not
    assert agent.state.allocations["failed"] == failed


class _Killed(BaseException):
    """Stands for the process dying: nothing after it runs (no rollback, no annotation)."""


def test_the_agent_killed_mid_allocate_rolls_back_after_restart(mig_node: Node) -> None:
    node = mig_node
    agent = node.start_agent()
    node.kubelet.rpc_timeout = 2.0  # the RPC of a dead agent times out

    def die(instance) -> None:
        raise _Killed

    agent.allocator.after_realise = die
    node.decided_pod("doomed", [[Dev(0, 40192, 100, "3g.40gb", 0, 4)]])
    assert node.wait_phase("doomed", "Running", "Failed") == "Failed"
    assert gi_count(node) == 1  # the instance it got, left behind by the "crash"
    assert node.annotations("doomed")[names.BIND_PHASE] == "allocating"
    assert names.NODE_LOCK in node.node_annotations()
    node.stop_agent()
    node.start_agent()  # the restarted agent reconciles at start
    assert gi_count(node) == 0
    assert node.annotations("doomed")[names.BIND_PHASE] == "failed"
    assert names.NODE_LOCK not in node.node_annotations()
    events = node.store.list("events", "default")["items"]
    assert any(e["reason"] == "AllocateRolledBack" for e in events)


@pytest.fixture
def hopper_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    """GPU 0: H100 (Hopper: MIG mode lost on reboot), GPU 1: A100 (Ampere: MIG mode kept); mode mig."""
    config = nodeconfig(operatingmode="mig")
    yield from make_node(tmp_path, monkeypatch, [fakenvml.GpuSpec("H100-SXM5-80GB", mig=True),
                                                 fakenvml.GpuSpec("A100-SXM4-80GB", mig=True)], config)


def test_a_reboot_is_detected_reconciled_and_reported(hopper_node: Node) -> None:
    node = hopper_node
    node.start_agent()
    node.decided_pod("h", [[Dev(0, 40192, 100, "3g.40gb", 4, 4)]])
    node.wait_phase("h", "Running")
    node.decided_pod("a", [[Dev(1, 9728, 100, "1g.10gb", 0, 1)]])
    node.wait_phase("a", "Running")
    node.stop_agent()
    node.fake.reboot()
    state = node.fake.read()
    assert state.gpus[0].mig_current == 0 and state.gpus[1].mig_current == 1
    agent = node.start_agent()
    state = node.fake.read()
    assert state.gpus[0].mig_current == 1, "MIG mode re-enabled on the Hopper GPU"
    assert agent.state.lost == 2
    assert decode_node_mig_instances(node.node_annotations()[names.NODE_MIG_INSTANCES]) == ()
    events = node.store.list("events", "default")["items"]
    lost = {e["involvedObject"]["name"] for e in events if e["reason"] == "MigInstanceLost"}
    assert {"h", "a"} <= lost
    summary = [e["message"] for e in events
               if e["reason"] == "MigInstanceLost" and e["involvedObject"]["kind"] == "Node"]
    assert summary and "default/a" in summary[0] and "default/h" in summary[0]
    node.delete_pod("h")
    node.decided_pod("again", [[Dev(0, 40192, 100, "3g.40gb", 4, 4)]])
    assert node.wait_phase("again", "Running", "Failed") == "Running"


def test_thirty_pods_back_to_back_get_their_decided_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = nodeconfig(operatingmode="mig", devicemodes=[{"index": [3], "operatingmode": "hami-core"}])
    specs = [fakenvml.GpuSpec("A100-SXM4-80GB", mig=True) for _ in range(3)] + ["A10"]
    gen = make_node(tmp_path, monkeypatch, specs, config)
    node = next(gen)
    try:
        node.start_agent()
        decisions = {f"m{g}-{s}": [[Dev(g, 9728, 100, "1g.10gb", s, 1)]] for g in range(3) for s in range(7)}
        decisions |= {f"h{i}": [[Dev(3, 2000, 10)]] for i in range(9)}
        errors: list[str] = []

        def scheduler() -> None:  # binds one pod at a time under the node lock, as the binder does
            for name, decision in decisions.items():
                try:
                    wait_for(lambda: names.NODE_LOCK not in node.node_annotations(), 20, "lock free")
                    node.decided_pod(name, decision)
                except AssertionError as exc:
                    errors.append(f"{name}: {exc}")

        thread = threading.Thread(target=scheduler)
        thread.start()
        thread.join(120)
        assert not errors
        for name in decisions:
            assert node.wait_phase(name, "Running", "Failed") == "Running", node.pod(name)["status"]
        uuids = {gi.cis[0].uuid: (g, gi.start) for g, gi in node.fake.instances()}
        for name, [[dev]] in decisions.items():
            env = node.runtime(name).containers["c0"].envs["NVIDIA_VISIBLE_DEVICES"]
            if dev.profile:
                assert uuids[env] == (dev.gpu, dev.start)
            else:
                assert env == node.uuid(3)
        assert len(uuids) == 21
    finally:
        gen.close()


@pytest.mark.parametrize("code", [Return.UNKNOWN, Return.NOT_SUPPORTED])
def test_a_transient_error_at_any_call_never_hides_an_instance(mig_node: Node, code: Return) -> None:
    node = mig_node
    agent = node.start_agent()
    node.decided_pod("busy", [[Dev(0, 19968, 100, "2g.20gb", 0, 2)]])
    node.wait_phase("busy", "Running")
    node.decided_pod("gone", [[Dev(1, 9728, 100, "1g.10gb", 3, 1)]])
    node.wait_phase("gone", "Running")
    node.delete_pod("gone")
    agent.sync()
    published = decode_node_mig_instances(node.node_annotations()[names.NODE_MIG_INSTANCES])
    assert sorted(i.state.value for i in published) == ["idle", "in-use"]
    node.fake.set_trace(True)
    agent.sync()
    total = sum(node.fake.calls().values())
    node.fake.set_trace(False)
    for k in range(1, total + 1):
        node.fake.inject_fault("*", code, nth=k)
        agent.sync()
        node.fake.clear_faults()
        now = decode_node_mig_instances(node.node_annotations()[names.NODE_MIG_INSTANCES])
        assert {i.mig_uuid for i in now} == {i.mig_uuid for i in published}, f"call {k} hid an instance"
        assert agent.state.lost == 0, f"call {k} reported an instance lost"
        assert gi_count(node) == 2
    agent.sync()
    assert decode_node_mig_instances(node.node_annotations()[names.NODE_MIG_INSTANCES]) == published
